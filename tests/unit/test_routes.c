/* Unit tests: route matching and snapshot reclamation. */
#include <stdlib.h>
#include <string.h>

#include "px/config.h"
#include "px/log.h"
#include "px/routes.h"
#include "unit.h"

static struct px_routes *build(const char *ini)
{
    char err[512];
    struct px_config *cfg = NULL;
    if (px_config_load_string(ini, "test.ini", &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return NULL;
    }
    return px_routes_build(cfg, err, sizeof(err));
}

static const char *match(const struct px_routes *r, const char *host, const char *path)
{
    const struct px_service *s = px_routes_match(r, host, host ? strlen(host) : 0, path, strlen(path));
    return s ? s->name : "-";
}

static const char *ini_main =
    "[proxy]\nlisten_http = 127.0.0.1:0\n"
    "[service web]\nhosts = example.com www.example.com\ntargets = 127.0.0.1:3000\n"
    "[service app]\nhosts = example.com\npath_prefix = /app\ntargets = 127.0.0.1:3001\n"
    "[service api]\nhosts = example.com\npath_prefix = /app/api/\ntargets = 127.0.0.1:3002\n"
    "[service wild]\nhosts = *.example.com\ntargets = 127.0.0.1:3003\n"
    "[service deep]\nhosts = *.eu.example.com\ntargets = 127.0.0.1:3004\n"
    "[service any]\ntargets = 127.0.0.1:3005\n"
    "[service anyadmin]\npath_prefix = /admin\ntargets = 127.0.0.1:3006\n";

static void test_match_hosts(void)
{
    struct px_routes *r = build(ini_main);
    CHECK(r != NULL);
    if (!r)
        return;
    CHECK_STR(match(r, "example.com", "/"), "web");
    CHECK_STR(match(r, "EXAMPLE.com", "/x"), "web");
    CHECK_STR(match(r, "example.com:8080", "/x"), "web");
    CHECK_STR(match(r, "example.com.", "/x"), "web");
    CHECK_STR(match(r, "www.example.com", "/x"), "web");
    CHECK_STR(match(r, "a.example.com", "/x"), "wild");
    CHECK_STR(match(r, "a.b.example.com", "/x"), "wild");
    CHECK_STR(match(r, "x.eu.example.com", "/x"), "deep");
    CHECK_STR(match(r, "other.org", "/x"), "any");
    CHECK_STR(match(r, NULL, "/x"), "any");
    CHECK_STR(match(r, "other.org", "/admin/users"), "anyadmin");
    CHECK_STR(match(r, "notexample.com", "/"), "any");
    px_routes_publish(r);
    px_routes_shutdown();
}

static void test_match_prefix_segments(void)
{
    struct px_routes *r = build(ini_main);
    CHECK(r != NULL);
    if (!r)
        return;
    CHECK_STR(match(r, "example.com", "/app"), "app");
    CHECK_STR(match(r, "example.com", "/app/"), "app");
    CHECK_STR(match(r, "example.com", "/app/x"), "app");
    CHECK_STR(match(r, "example.com", "/app?q=1"), "app");
    CHECK_STR(match(r, "example.com", "/appointment"), "web");
    CHECK_STR(match(r, "example.com", "/app/api"), "api");
    CHECK_STR(match(r, "example.com", "/app/api/v1"), "api");
    CHECK_STR(match(r, "example.com", "/app/apis"), "app");
    /* an exact host without a matching prefix falls back to catch-all */
    CHECK_STR(match(r, "example.com", "/admin"), "web");
    px_routes_publish(r);
    px_routes_shutdown();
}

static void test_no_catch_all(void)
{
    struct px_routes *r = build("[proxy]\nlisten_http = 127.0.0.1:0\n"
                                "[service a]\nhosts = a.test\ntargets = 127.0.0.1:1\n");
    CHECK(r != NULL);
    if (!r)
        return;
    CHECK_STR(match(r, "a.test", "/"), "a");
    CHECK_STR(match(r, "b.test", "/"), "-");
    CHECK_STR(match(r, NULL, "/"), "-");
    px_routes_publish(r);
    px_routes_shutdown();
}

static void test_host_normalize(void)
{
    char out[64];
    CHECK_INT(px_host_normalize("Example.COM:443", 15, out, sizeof(out)), 11);
    CHECK_STR(out, "example.com");
    CHECK_INT(px_host_normalize("[::1]:8080", 10, out, sizeof(out)), 5);
    CHECK_STR(out, "[::1]");
    CHECK_INT(px_host_normalize("a b", 3, out, sizeof(out)), -1);
    CHECK_INT(px_host_normalize("[::1", 4, out, sizeof(out)), -1);
}

/* Targets are shared between snapshots: the same HOST:PORT is one object. */
static void test_targets_shared(void)
{
    struct px_routes *a = build("[proxy]\nlisten_http = 127.0.0.1:0\n[service s]\ntargets = 127.0.0.1:7000 127.0.0.1:7001\n");
    px_routes_publish(a);
    struct px_routes *b = build("[proxy]\nlisten_http = 127.0.0.1:0\n[service s]\ntargets = 127.0.0.1:7001 127.0.0.1:7002\n");
    CHECK(a && b);
    if (!a || !b)
        return;
    const struct px_service *sa = px_routes_match(a, NULL, 0, "/", 1);
    const struct px_service *sb = px_routes_match(b, NULL, 0, "/", 1);
    CHECK(sa->targets[1] == sb->targets[0]);
    CHECK(sa->targets[0]->id != sb->targets[1]->id);
    px_routes_publish(b);
    px_routes_shutdown();
}

/* The reclamation protocol: a retired snapshot lives while a worker's
 * hazard points at it or a request pins it. */
static void test_reclaim(void)
{
    px_routes_set_nworkers(2);
    const char *ini = "[proxy]\nlisten_http = 127.0.0.1:0\n[service s]\ntargets = 127.0.0.1:7000\n";
    struct px_routes *a = build(ini);
    px_routes_publish(a);
    CHECK(px_routes_current(0) == a);
    CHECK(px_routes_current(1) == a);
    px_routes_pin(a, 0); /* a request on worker 0 */
    struct px_routes *b = build(ini);
    px_routes_publish(b);
    CHECK_INT(px_routes_reap(), 1);      /* both workers still hold a */
    CHECK(px_routes_current(1) == b);    /* worker 1 moves on */
    CHECK_INT(px_routes_reap(), 1);      /* worker 0's hazard + pin */
    CHECK(px_routes_current(0) == b);    /* worker 0 moves on, request still running */
    CHECK_INT(px_routes_reap(), 1);
    px_routes_unpin(a, 0);               /* the request ends */
    CHECK_INT(px_routes_reap(), 0);      /* a is freed */
    /* a snapshot nobody adopted is freed at once when replaced */
    struct px_routes *c = build(ini);
    px_routes_publish(c);
    struct px_routes *d = build(ini);
    px_routes_publish(d);
    CHECK_INT(px_routes_reap(), 1);      /* b (hazards) remains; c went at once */
    CHECK(px_routes_current(0) == d);
    CHECK(px_routes_current(1) == d);
    CHECK_INT(px_routes_reap(), 0);
    px_routes_shutdown();
    px_routes_set_nworkers(PX_MAX_WORKERS);
}

int main(void)
{
    px_log_open("/dev/null", "off", NULL, 0);
    UNIT_RUN(test_match_hosts);
    UNIT_RUN(test_match_prefix_segments);
    UNIT_RUN(test_no_catch_all);
    UNIT_RUN(test_host_normalize);
    UNIT_RUN(test_targets_shared);
    UNIT_RUN(test_reclaim);
    px_log_close();
    return unit_report();
}
