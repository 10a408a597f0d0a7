/* test_acme_shared.c -- [acme] storage = redis, the Redis side
 * (proxy/acme/shared.c, included for its statics) over a stub of the
 * cluster's main connection that records each command and answers with a
 * scripted reply: the exact HTTP-01 token commands (a contract with the
 * workers' lookup), the sealed private key in the fenced write, the lock's
 * and the fetch's answers, a cancelled request's callback never called. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/acme/shared.c"
#include "unit.h"

/* ---- the stub cluster ---- */

#define MAXARGS 20
static struct {
    int up;
    int n;                      /* commands sent */
    char *argv[MAXARGS];        /* the last one */
    int argc;
    px_cluster_reply_fn fn;     /* its callback, answered by reply() */
    void *arg;
} st;

int px_cluster_command(struct px_cluster *c, px_cluster_reply_fn fn, void *arg, int argc, const char *const *argv,
                       const size_t *lens)
{
    if (!st.up)
        return -1;
    for (int i = 0; i < st.argc; i++)
        free(st.argv[i]);
    st.argc = argc < MAXARGS ? argc : MAXARGS;
    for (int i = 0; i < st.argc; i++)
        st.argv[i] = strdup(argv[i]);
    st.fn = fn;
    st.arg = arg;
    st.n++;
    return 0;
}

int px_cluster_main_up(const struct px_cluster *c)
{
    return st.up;
}

const char *px_cluster_prefix(const struct px_cluster *c)
{
    return "pfx:";
}

const char *px_cluster_instance(const struct px_cluster *c)
{
    return "edge-1";
}

struct px_cluster_sub {
    int dummy;
};
static struct px_cluster_sub the_sub;

struct px_cluster_sub *px_cluster_subscribe(struct px_cluster *c, const char *channel,
                                            void (*on_msg)(void *arg, const char *msg, size_t len),
                                            void (*on_up)(void *arg), void *arg)
{
    CHECK_STR(channel, "pfx:acme:announce");
    return &the_sub;
}

void px_cluster_sub_free(struct px_cluster_sub *s)
{
}

static void reply(const redisReply *r)
{
    px_cluster_reply_fn fn = st.fn;
    st.fn = NULL;
    if (fn)
        fn(st.arg, r);
}

static redisReply str_reply(const char *s)
{
    redisReply r = {.type = REDIS_REPLY_STRING, .str = (char *)s, .len = strlen(s)};
    return r;
}

static const unsigned char KEY[32] = "0123456789abcdef0123456789abcde";

static void no_announce(void *arg, const char *name, long long v)
{
}

static void no_resync(void *arg)
{
}

/* ---- tests ---- */

static void test_token_commands(void)
{
    struct px_acme_shared *sh = px_acme_shared_new(NULL, KEY, no_announce, no_resync, NULL);
    REQUIRE(sh != NULL);
    st.up = 1;
    px_acme_shared_token_put(sh, "TOK-1_x", "TOK-1_x.thumb");
    REQUIRE(st.argc == 5);
    CHECK_STR(st.argv[0], "SET");
    CHECK_STR(st.argv[1], "pfx:acme:token:TOK-1_x");
    CHECK_STR(st.argv[2], "TOK-1_x.thumb");
    CHECK_STR(st.argv[3], "PX");
    CHECK_STR(st.argv[4], "600000");
    reply(NULL);
    px_acme_shared_token_del(sh, "TOK-1_x");
    REQUIRE(st.argc == 2);
    CHECK_STR(st.argv[0], "DEL");
    CHECK_STR(st.argv[1], "pfx:acme:token:TOK-1_x");
    reply(NULL);
    /* Redis down: nothing sent, nothing fails */
    st.up = 0;
    int n = st.n;
    px_acme_shared_token_put(sh, "T2", "T2.k");
    CHECK_INT(st.n, n);
    px_acme_shared_free(sh);
}

static int lock_rc;
static char lock_text[128];
static void on_lock_cb(void *arg, int rc, const char *text)
{
    lock_rc = rc;
    snprintf(lock_text, sizeof(lock_text), "%s", text);
}

static void test_lock_answers(void)
{
    struct px_acme_shared *sh = px_acme_shared_new(NULL, KEY, no_announce, no_resync, NULL);
    REQUIRE(sh != NULL);
    st.up = 1;
    REQUIRE(px_acme_shared_lock(sh, "example.test", 3000, on_lock_cb, &lock_rc) == 0);
    CHECK_STR(st.argv[0], "EVAL");
    CHECK_STR(st.argv[2], "2");
    CHECK_STR(st.argv[3], "pfx:acme:lock:example.test");
    CHECK_STR(st.argv[4], "pfx:acme:fence");
    CHECK_STR(st.argv[5], "edge-1");
    CHECK_STR(st.argv[6], "3000");
    CHECK(strstr(st.argv[1], "'NX', 'PX'") != NULL);
    CHECK(strstr(st.argv[1], "INCR") != NULL);
    redisReply one = {.type = REDIS_REPLY_INTEGER, .integer = 1}, val = str_reply("edge-1 7");
    redisReply *el[2] = {&one, &val};
    redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = el};
    reply(&arr);
    CHECK_INT(lock_rc, 1);
    CHECK_STR(lock_text, "edge-1 7");
    /* held by another */
    REQUIRE(px_acme_shared_lock(sh, "example.test", 3000, on_lock_cb, &lock_rc) == 0);
    redisReply zero = {.type = REDIS_REPLY_INTEGER, .integer = 0}, other = str_reply("edge-2 6");
    el[0] = &zero;
    el[1] = &other;
    reply(&arr);
    CHECK_INT(lock_rc, 0);
    CHECK_STR(lock_text, "edge-2 6");
    /* the connection went before the answer */
    REQUIRE(px_acme_shared_lock(sh, "example.test", 3000, on_lock_cb, &lock_rc) == 0);
    reply(NULL);
    CHECK_INT(lock_rc, -1);
    /* cancelled: the answer reaches nobody */
    lock_rc = 42;
    REQUIRE(px_acme_shared_lock(sh, "example.test", 3000, on_lock_cb, &lock_rc) == 0);
    px_acme_shared_cancel(sh, &lock_rc);
    reply(NULL);
    CHECK_INT(lock_rc, 42);
    /* Redis down: -1 at once, no callback */
    st.up = 0;
    CHECK_INT(px_acme_shared_lock(sh, "example.test", 3000, on_lock_cb, &lock_rc), -1);
    CHECK_INT(lock_rc, 42);
    px_acme_shared_free(sh);
}

static long long written = -5;
static void on_write_cb(void *arg, long long v, const char *err)
{
    written = v;
}

static int fetched_rc = -9;
static struct px_acme_shared_cert *fetched;
static char fetch_err[512];
static void on_fetch_cb(void *arg, int rc, struct px_acme_shared_cert *c, const char *err)
{
    fetched_rc = rc;
    fetched = c;
    snprintf(fetch_err, sizeof(fetch_err), "%s", err ? err : "");
}

static const char PRIV[] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

static void test_write_seals_then_fetch_opens(void)
{
    struct px_acme_shared *sh = px_acme_shared_new(NULL, KEY, no_announce, no_resync, NULL);
    REQUIRE(sh != NULL);
    st.up = 1;
    const char *names[] = {"example.test", "www.example.test"};
    struct px_acme_cert cert = {PRIV, "LEAF", "CHAIN", "LEAFCHAIN", 0, 1900000000};
    REQUIRE(px_acme_shared_write(sh, "example.test", "edge-1 7", names, 2, &cert, on_write_cb, NULL) == 0);
    REQUIRE(st.argc == 16);
    CHECK_STR(st.argv[3], "pfx:acme:lock:example.test");
    CHECK_STR(st.argv[4], "pfx:acme:cert:example.test");
    CHECK_STR(st.argv[5], "edge-1 7");
    CHECK_STR(st.argv[6], "7");                 /* the fencing token */
    CHECK_STR(st.argv[7], "pfx:acme:announce");
    CHECK_STR(st.argv[8], "example.test");
    CHECK_STR(st.argv[9], "1900000000");
    CHECK_STR(st.argv[10], "example.test www.example.test");
    CHECK_STR(st.argv[13], "LEAFCHAIN");
    CHECK(strstr(st.argv[14], "BEGIN") == NULL);
    CHECK(strncmp(st.argv[14], "pxenc1:", 7) == 0);
    char *sealed = strdup(st.argv[14]);
    REQUIRE(sealed != NULL);
    redisReply v = {.type = REDIS_REPLY_INTEGER, .integer = 3};
    reply(&v);
    CHECK_INT(written, 3);
    REQUIRE(px_acme_shared_write(sh, "example.test", "edge-1 7", names, 2, &cert, on_write_cb, NULL) == 0);
    v.integer = 0; /* the lock was lost */
    reply(&v);
    CHECK_INT(written, 0);

    /* HGETALL back: the key opens under its own name only */
    redisReply f[14];
    const char *kv[] = {"version", "3", "not_after", "1900000000", "names", "example.test www.example.test",
                        "cert", "LEAF", "chain", "CHAIN", "fullchain", "LEAFCHAIN", "privkey", sealed};
    redisReply *el[14];
    for (int i = 0; i < 14; i++) {
        f[i] = str_reply(kv[i]);
        el[i] = &f[i];
    }
    redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 14, .element = el};
    REQUIRE(px_acme_shared_fetch(sh, "example.test", on_fetch_cb, NULL) == 0);
    CHECK_STR(st.argv[0], "HGETALL");
    CHECK_STR(st.argv[1], "pfx:acme:cert:example.test");
    reply(&arr);
    CHECK_INT(fetched_rc, 1);
    REQUIRE_ELSE(fetched != NULL, free(sealed));
    CHECK_INT(fetched->version, 3);
    CHECK_INT(fetched->not_after, 1900000000);
    CHECK_INT(fetched->nnames, 2);
    CHECK_STR(fetched->privkey, PRIV);
    CHECK_STR(fetched->fullchain, "LEAFCHAIN");
    px_acme_shared_cert_free(fetched);
    fetched = NULL;
    /* the same value fetched as another lineage's: AAD differs, not opened */
    REQUIRE(px_acme_shared_fetch(sh, "other.test", on_fetch_cb, NULL) == 0);
    reply(&arr);
    CHECK_INT(fetched_rc, -2);
    CHECK(fetched == NULL);
    CHECK(strstr(fetch_err, "does not decrypt") != NULL);
    /* none */
    redisReply empty = {.type = REDIS_REPLY_ARRAY, .elements = 0};
    REQUIRE(px_acme_shared_fetch(sh, "example.test", on_fetch_cb, NULL) == 0);
    reply(&empty);
    CHECK_INT(fetched_rc, 0);
    free(sealed);
    px_acme_shared_free(sh);
}

static void test_free_with_requests_in_flight(void)
{
    struct px_acme_shared *sh = px_acme_shared_new(NULL, KEY, no_announce, no_resync, NULL);
    REQUIRE(sh != NULL);
    st.up = 1;
    lock_rc = 42;
    REQUIRE(px_acme_shared_lock(sh, "example.test", 3000, on_lock_cb, &lock_rc) == 0);
    px_acme_shared_free(sh);
    reply(NULL); /* the cluster's connection goes later: the request is freed, nobody called */
    CHECK_INT(lock_rc, 42);
}

int main(void)
{
    UNIT_RUN(test_token_commands);
    UNIT_RUN(test_lock_answers);
    UNIT_RUN(test_write_seals_then_fetch_opens);
    UNIT_RUN(test_free_with_requests_in_flight);
    for (int i = 0; i < st.argc; i++)
        free(st.argv[i]);
    return unit_report();
}
