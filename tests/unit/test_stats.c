/* test_stats.c -- the per-worker counters (px/stats.h): two writer threads,
 * each on its own block, and a reader summing while they run; the sums are
 * exact once they stop and never go backwards or past the truth before. */
#include <pthread.h>
#include <stdint.h>

#include "px/request.h"
#include "px/stats.h"
#include "unit.h"

#define ROUNDS 2000000u /* per writer; enough that two writers sharing one block lose updates */

struct writer {
    int wid;
    pthread_barrier_t *go;
};

/* One round: what a worker records for a few requests and a connection. */
static void round_of(struct px_stats *s, unsigned i)
{
    px_stats_conn_open(s, (int)(i & 1));
    px_stats_tls(s, (i % 3) != 0, (i % 3) == 1);
    px_stats_request(s, PX_PROTO_HTTP11, 200, 10, 0);
    px_stats_request(s, PX_PROTO_HTTP2, 404, 1, 0);
    px_stats_request(s, PX_PROTO_HTTP11, 429, 0, 1);
    px_stats_request(s, PX_PROTO_HTTP2, 499, 0, 0);
    px_stats_request(s, PX_PROTO_HTTP10, 0, 0, 0); /* nothing answered: not counted */
    px_stats_add(&s->bytes_in, 3);
    px_stats_inc(&s->parked);
    px_stats_inc(&s->upstream_errors[i % PX_STATS_UP_NKINDS]);
    px_stats_conn_closed(s);
}

static void *writer_main(void *arg)
{
    struct writer *wr = arg;
    struct px_stats *s = px_stats_block(wr->wid);
    pthread_barrier_wait(wr->go);
    for (unsigned i = 0; i < ROUNDS; i++)
        round_of(s, i);
    px_stats_conn_open(s, 0); /* one left open per writer */
    return NULL;
}

static void test_two_workers_exact(void)
{
    px_stats_reset();
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 3);
    struct writer w[2] = {{0, &go}, {1, &go}};
    pthread_t t[2];
    int started = 0;
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, writer_main, &w[i]) == 0)
            started++;
    /* with one writer only the barrier would never open: cancel it */
    REQUIRE_ELSE(started == 2, (started ? (void)pthread_cancel(t[0]) : (void)0));
    pthread_barrier_wait(&go);
    /* read while they write: bounded in count, no timing decides anything */
    uint64_t last = 0;
    int backwards = 0, over = 0;
    for (int n = 0; n < 2000; n++) {
        struct px_stats_snapshot st;
        px_stats_sum(&st);
        if (st.requests_total < last)
            backwards++;
        if (st.requests_total > 2ull * 4 * ROUNDS || st.bytes_out > 2ull * 11 * ROUNDS)
            over++;
        last = st.requests_total;
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    CHECK_INT(backwards, 0);
    CHECK_INT(over, 0);

    struct px_stats_snapshot st;
    px_stats_sum(&st);
    const uint64_t n = 2ull * ROUNDS;
    CHECK_INT(st.requests_total, 4 * n);
    CHECK_INT(st.requests[PX_STATS_PROTO_H11][2], n);
    CHECK_INT(st.requests[PX_STATS_PROTO_H11][4], n);
    CHECK_INT(st.requests[PX_STATS_PROTO_H2][4], 2 * n);
    CHECK_INT(st.requests[PX_STATS_PROTO_H10][0], 0);
    CHECK_INT(st.bytes_out, 11 * n);
    CHECK_INT(st.bytes_in, 3 * n);
    CHECK_INT(st.limited, n);
    CHECK_INT(st.closed_early, n);
    CHECK_INT(st.parked, n);
    CHECK_INT(st.accepted[PX_STATS_LISTEN_HTTP] + st.accepted[PX_STATS_LISTEN_HTTPS], n + 2);
    CHECK_INT(st.accepted[PX_STATS_LISTEN_HTTPS], n / 2);
    CHECK_INT(st.open_conns, 2);
    CHECK_INT(px_stats_open_conns(), 2);
    uint64_t third = ROUNDS / 3; /* i % 3 over 0..ROUNDS-1, ROUNDS = 3 * 666666 + 2 */
    CHECK_INT(st.tls_failed, 2 * (third + 1));
    CHECK_INT(st.tls_resumed, 2 * (third + 1));
    CHECK_INT(st.tls_new, 2 * third);
    for (int k = 0; k < PX_STATS_UP_NKINDS; k++)
        CHECK_INT(st.upstream_errors[k], n / PX_STATS_UP_NKINDS);
}

/* Writers never share a cache line: one block per worker, aligned. */
static void test_blocks_apart(void)
{
    struct px_stats *a = px_stats_block(0), *b = px_stats_block(1);
    CHECK((uintptr_t)a % PX_STATS_ALIGN == 0);
    CHECK((uintptr_t)b % PX_STATS_ALIGN == 0);
    CHECK((char *)b - (char *)a == (ptrdiff_t)sizeof(struct px_stats));
    CHECK(sizeof(struct px_stats) % PX_STATS_ALIGN == 0);
    /* the accept/close line is not the per-request one */
    CHECK((uintptr_t)&a->open_conns / PX_STATS_ALIGN != (uintptr_t)&a->requests[0][0] / PX_STATS_ALIGN);
    CHECK(px_stats_block(PX_MAX_WORKERS - 1) == a + (PX_MAX_WORKERS - 1));
}

/* Status classes, the protocol index and what does not count. */
static void test_request_classes(void)
{
    px_stats_reset();
    struct px_stats *s = px_stats_block(3);
    px_stats_request(s, PX_PROTO_HTTP10, 101, 0, 0);
    px_stats_request(s, PX_PROTO_HTTP11, 301, 5, 0);
    px_stats_request(s, PX_PROTO_HTTP11, 503, 0, 1); /* a zone with status = 503 */
    px_stats_request(s, PX_PROTO_HTTP2, 502, 7, 0);
    px_stats_request(s, 9, 200, 1, 0);               /* unknown protocol: counted as HTTP/1.1 */
    px_stats_request(s, PX_PROTO_HTTP11, 700, 0, 0); /* outside 100..599: class 0 */
    px_stats_request(s, PX_PROTO_HTTP11, 0, 99, 1);  /* no status: nothing at all */
    struct px_stats_snapshot st;
    px_stats_sum(&st);
    CHECK_INT(st.requests_total, 6);
    CHECK_INT(st.requests[PX_STATS_PROTO_H10][1], 1);
    CHECK_INT(st.requests[PX_STATS_PROTO_H11][3], 1);
    CHECK_INT(st.requests[PX_STATS_PROTO_H11][5], 1);
    CHECK_INT(st.requests[PX_STATS_PROTO_H2][5], 1);
    CHECK_INT(st.requests[PX_STATS_PROTO_H11][2], 1);
    CHECK_INT(st.requests[PX_STATS_PROTO_H11][0], 1);
    CHECK_INT(st.bytes_out, 13);
    CHECK_INT(st.limited, 1);
    CHECK_INT(st.closed_early, 0);
    CHECK_INT(st.open_conns, 0);
    CHECK_STR(px_stats_proto_names[PX_STATS_PROTO_H2], "http2");
    CHECK_STR(px_stats_upstream_err_names[PX_STATS_UP_BAD_RESPONSE], "bad_response");
    CHECK_STR(px_stats_listen_names[PX_STATS_LISTEN_HTTPS], "https");
    px_stats_reset();
}

/* The labelled families: ids stable by name, exact codes (registered,
 * overflow, class fallback), the histogram's buckets, pairs. */
static void test_labelled(void)
{
    px_stats_set_nworkers(2);
    uint32_t none, a, b, a2, ta, tb, ta2, l1, l2, l1b;
    REQUIRE(px_stats_service_id("web", &a) == 0);
    REQUIRE(px_stats_service_id("", &none) == 0);
    REQUIRE(px_stats_service_id("api", &b) == 0);
    REQUIRE(px_stats_service_id("web", &a2) == 0);
    CHECK_INT(none, 0);
    CHECK(a != 0 && b != 0 && a != b);
    CHECK_INT(a2, a);
    CHECK_STR(px_stats_service_name(a), "web");
    CHECK_INT(px_stats_nservices(), 3);
    REQUIRE(px_stats_target_id(a, "127.0.0.1:1", &ta) == 0);
    REQUIRE(px_stats_target_id(b, "127.0.0.1:1", &tb) == 0);
    REQUIRE(px_stats_target_id(a, "127.0.0.1:1", &ta2) == 0);
    CHECK(ta != tb);
    CHECK_INT(ta2, ta);
    REQUIRE(px_stats_limit_id("z", "/api/", &l1) == 0);
    REQUIRE(px_stats_limit_id("z", "example.com/api/", &l2) == 0);
    REQUIRE(px_stats_limit_id("z", "/api/", &l1b) == 0);
    CHECK(l1 != l2);
    CHECK_INT(l1b, l1);

    /* worker 0 and worker 1 both count for "web" */
    px_stats_service(0, a, PX_PROTO_HTTP11, 200, 4000, 10);    /* bucket .005 */
    px_stats_service(1, a, PX_PROTO_HTTP11, 200, 5000, 10);    /* .005 (le is inclusive) */
    px_stats_service(1, a, PX_PROTO_HTTP2, 404, 5001, 1);      /* .01 */
    px_stats_service(0, a, PX_PROTO_HTTP10, 218, 20000000, 0); /* overflow code, +Inf */
    for (int c = 590; c < 596; c++)                            /* 4 overflow slots, then "5xx" */
        px_stats_service(0, a, PX_PROTO_HTTP11, c, 1, 0);
    px_stats_service(0, a, PX_PROTO_HTTP11, 0, 1, 1000);       /* no status: nothing */
    px_stats_service(0, none, PX_PROTO_HTTP11, 429, 1, 5);
    px_stats_service_bytes_in(1, a, 77);
    px_stats_target_error(0, ta, PX_STATS_UP_RESET);
    px_stats_target_error(1, ta, PX_STATS_UP_RESET);
    px_stats_target_error(1, tb, PX_STATS_UP_CONNECT);
    px_stats_limited(0, l1);
    px_stats_limited(1, l1);

    struct px_stats_svc_sum s;
    px_stats_service_sum(a, &s);
    CHECK_INT(s.requests, 10);
    CHECK_INT(s.bytes_out, 21);
    CHECK_INT(s.bytes_in, 77);
    CHECK_INT(s.duration_sum_us, 4000 + 5000 + 5001 + 20000000 + 6);
    CHECK_INT(s.duration[0], 8); /* <= 5 ms: 2 + the six 1 us ones */
    CHECK_INT(s.duration[1], 9);
    CHECK_INT(s.duration[PX_STATS_NBUCKETS - 2], 9);
    CHECK_INT(s.duration[PX_STATS_NBUCKETS - 1], 10);
    /* 200, 404 (registered), 218, 590..592 (overflow: worker 0 has 4 slots), 5xx */
    REQUIRE(s.ncodes == 7);
    char buf[8];
    CHECK_STR(px_stats_code_label(&s.codes[0], buf), "200");
    CHECK_INT(s.codes[0].n[PX_STATS_PROTO_H11], 2);
    CHECK_STR(px_stats_code_label(&s.codes[1], buf), "404");
    CHECK_INT(s.codes[1].n[PX_STATS_PROTO_H2], 1);
    CHECK_STR(px_stats_code_label(&s.codes[2], buf), "218");
    CHECK_INT(s.codes[2].n[PX_STATS_PROTO_H10], 1);
    CHECK_STR(px_stats_code_label(&s.codes[5], buf), "592");
    CHECK_STR(px_stats_code_label(&s.codes[6], buf), "5xx");
    CHECK_INT(s.codes[6].n[PX_STATS_PROTO_H11], 3);
    px_stats_service_sum(none, &s);
    CHECK_INT(s.requests, 1);
    CHECK_STR(px_stats_code_label(&s.codes[0], buf), "429");
    px_stats_service_sum(b, &s);
    CHECK_INT(s.requests, 0);
    CHECK_INT(s.ncodes, 0);

    uint64_t e[PX_STATS_UP_NKINDS];
    px_stats_target_sum(ta, e);
    CHECK_INT(e[PX_STATS_UP_RESET], 2);
    CHECK_INT(e[PX_STATS_UP_CONNECT], 0);
    px_stats_target_sum(tb, e);
    CHECK_INT(e[PX_STATS_UP_CONNECT], 1);
    CHECK_INT(px_stats_limit_sum(l1), 2);
    CHECK_INT(px_stats_limit_sum(l2), 0);
    const char *zone, *route;
    uint32_t sid;
    const char *target;
    px_stats_limit_label(l2, &zone, &route);
    CHECK_STR(zone, "z");
    CHECK_STR(route, "example.com/api/");
    px_stats_target_label(tb, &sid, &target);
    CHECK_INT(sid, b);
    CHECK_STR(target, "127.0.0.1:1");
    px_stats_reset();
    px_stats_service_sum(a, &s);
    CHECK_INT(s.requests, 0);
}

int main(void)
{
    UNIT_RUN(test_labelled);
    UNIT_RUN(test_two_workers_exact);
    UNIT_RUN(test_blocks_apart);
    UNIT_RUN(test_request_classes);
    return unit_report();
}
