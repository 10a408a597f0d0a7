/* test_list.c -- px/list.h: the intrusive list the data path keeps its
 * connections, streams, tunnels and parked requests on. */
#include <stdlib.h>
#include <string.h>

#include "px/list.h"
#include "unit.h"

struct item {
    int v;
    struct px_list_node link;
    struct px_list_node other; /* a second list, as px_uconn's pool and LRU lists */
};

#define ITEM(n) px_list_entry(n, struct item, link)

/* The values of l first to last into out, walking back from the last too:
 * both directions must agree. Returns the count, -1 when they do not. */
static int values(const struct px_list *l, int *out, int max)
{
    int n = 0;
    const struct px_list_node *x;
    for (x = l->first; x != NULL && n < max; x = x->next) {
        if (x->next == NULL && l->last != x)
            return -1;
        if (x->next && x->next->prev != x)
            return -1;
        out[n++] = ITEM(x)->v;
    }
    int m = n;
    for (x = l->last; x != NULL; x = x->prev)
        if (m <= 0 || out[--m] != ITEM(x)->v)
            return -1;
    return m == 0 ? n : -1;
}

#define CHECK_LIST(l, ...)                                                                              \
    do {                                                                                                \
        const int want_[] = {__VA_ARGS__};                                                              \
        int got_[16];                                                                                   \
        int n_ = values((l), got_, 16);                                                                 \
        CHECK_INT(n_, (int)(sizeof(want_) / sizeof(want_[0])));                                         \
        CHECK(n_ >= 0 && memcmp(got_, want_, (size_t)n_ * sizeof(int)) == 0);                           \
    } while (0)

/* Zeroed memory is an empty list and an unlinked node (calloc'd objects). */
static void test_zeroed_is_empty(void)
{
    struct px_list l;
    memset(&l, 0, sizeof(l));
    CHECK(px_list_empty(&l));
    CHECK(px_list_first(&l) == NULL);
    CHECK(px_list_last(&l) == NULL);
    CHECK(ITEM(px_list_first(&l)) == NULL);
    struct px_list m = {(struct px_list_node *)&l, (struct px_list_node *)&l};
    px_list_init(&m);
    CHECK(px_list_empty(&m) && m.last == NULL);
}

static void test_insert_head_tail(void)
{
    struct item it[4] = {{.v = 0}, {.v = 1}, {.v = 2}, {.v = 3}};
    struct px_list l = {0};
    px_list_insert_head(&l, &it[1].link);
    CHECK(!px_list_empty(&l));
    CHECK(ITEM(px_list_first(&l)) == &it[1] && ITEM(px_list_last(&l)) == &it[1]);
    px_list_insert_head(&l, &it[0].link);
    px_list_insert_tail(&l, &it[2].link);
    px_list_insert_tail(&l, &it[3].link);
    CHECK_LIST(&l, 0, 1, 2, 3);
    CHECK(ITEM(px_list_first(&l)) == &it[0]);
    CHECK(ITEM(px_list_last(&l)) == &it[3]);
    /* container_of from the second member lands on the same object */
    px_list_init(&l);
    struct px_list o = {0};
    px_list_insert_tail(&o, &it[2].other);
    CHECK(px_container_of(px_list_first(&o), struct item, other) == &it[2]);
}

static void test_tail_into_empty(void)
{
    struct item a = {.v = 7};
    struct px_list l = {0};
    px_list_insert_tail(&l, &a.link);
    CHECK(px_list_first(&l) == &a.link && px_list_last(&l) == &a.link);
    CHECK_LIST(&l, 7);
}

static void test_remove_everywhere(void)
{
    struct item it[5];
    struct px_list l = {0};
    for (int i = 0; i < 5; i++) {
        it[i].v = i;
        px_list_insert_tail(&l, &it[i].link);
    }
    px_list_remove(&l, &it[2].link); /* middle */
    CHECK(it[2].link.next == NULL && it[2].link.prev == NULL);
    CHECK_LIST(&l, 0, 1, 3, 4);
    px_list_remove(&l, &it[0].link); /* first */
    CHECK_LIST(&l, 1, 3, 4);
    px_list_remove(&l, &it[4].link); /* last */
    CHECK_LIST(&l, 1, 3);
    CHECK(ITEM(px_list_last(&l)) == &it[3]);
    px_list_remove(&l, &it[1].link);
    px_list_remove(&l, &it[3].link); /* the only one */
    CHECK(px_list_empty(&l));
    CHECK(l.last == NULL);
    /* removed nodes go on another list as new */
    px_list_insert_head(&l, &it[4].link);
    px_list_insert_head(&l, &it[2].link);
    CHECK_LIST(&l, 2, 4);
}

/* foreach_safe: the body may remove the node it is on (closing a
 * connection takes it off the list being walked). */
static void test_foreach_safe_removal(void)
{
    struct item it[6];
    struct px_list l = {0}, dead = {0};
    for (int i = 0; i < 6; i++) {
        it[i].v = i;
        px_list_insert_tail(&l, &it[i].link);
    }
    struct px_list_node *n, *next;
    int seen = 0;
    px_list_foreach_safe(&l, n, next) {
        CHECK_INT(ITEM(n)->v, seen);
        seen++;
        if (ITEM(n)->v % 2 == 0) {
            px_list_remove(&l, n);
            px_list_insert_head(&dead, n); /* as px_conn_close does */
        }
    }
    CHECK_INT(seen, 6);
    CHECK_LIST(&l, 1, 3, 5);
    CHECK_LIST(&dead, 4, 2, 0);
    /* removing everything */
    seen = 0;
    px_list_foreach_safe(&l, n, next) {
        px_list_remove(&l, n);
        seen++;
    }
    CHECK_INT(seen, 3);
    CHECK(px_list_empty(&l) && l.last == NULL);
    /* an empty list runs no body */
    px_list_foreach_safe(&l, n, next) CHECK(0);
    px_list_foreach(&l, n) CHECK(0);
    int sum = 0;
    px_list_foreach(&dead, n) sum += ITEM(n)->v;
    CHECK_INT(sum, 6);
}

/* No node points at the head: a table of lists may be realloc'd (the
 * upstream pool table grows so). */
static void test_head_moves(void)
{
    struct item it[3] = {{.v = 0}, {.v = 1}, {.v = 2}};
    struct px_list *t = calloc(1, sizeof(*t));
    REQUIRE(t != NULL);
    for (int i = 0; i < 3; i++)
        px_list_insert_tail(&t[0], &it[i].link);
    struct px_list *bigger = realloc(t, 64 * sizeof(*t));
    REQUIRE_ELSE(bigger != NULL, free(t));
    t = bigger;
    memset(t + 1, 0, 63 * sizeof(*t));
    CHECK_LIST(&t[0], 0, 1, 2);
    px_list_remove(&t[0], &it[0].link);
    px_list_remove(&t[0], &it[2].link);
    CHECK_LIST(&t[0], 1);
    CHECK(px_list_empty(&t[63]));
    px_list_insert_head(&t[63], &it[0].link);
    CHECK_LIST(&t[63], 0);
    free(t);
}

int main(void)
{
    UNIT_RUN(test_zeroed_is_empty);
    UNIT_RUN(test_insert_head_tail);
    UNIT_RUN(test_tail_into_empty);
    UNIT_RUN(test_remove_everywhere);
    UNIT_RUN(test_foreach_safe_removal);
    UNIT_RUN(test_head_moves);
    return unit_report();
}
