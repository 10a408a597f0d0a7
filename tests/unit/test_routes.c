/* Unit tests: route matching and snapshot reclamation. */
#include <stdlib.h>
#include <string.h>

#include "px/carry.h"
#include "px/config.h"
#include "px/headers.h"
#include "px/limit.h"
#include "px/log.h"
#include "px/routes.h"
#include "unit.h"

/* What the server hands to every rebuild; tests that carry zones over use it. */
static struct px_carry carry;

static struct px_routes *build_with(const char *ini, struct px_carry *c)
{
    char err[512];
    struct px_config *cfg = NULL;
    if (px_config_load_string(ini, "test.ini", &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return NULL;
    }
    return px_routes_build(cfg, c, err, sizeof(err));
}

static struct px_routes *build(const char *ini)
{
    return build_with(ini, NULL);
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
    REQUIRE(r != NULL);
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
    REQUIRE(r != NULL);
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
    REQUIRE(r != NULL);
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
    REQUIRE(a && b);
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

/* ---- [route] policies ---- */

static const char *ini_routes =
    "[proxy]\nlisten_http = 127.0.0.1:0\n"
    "[service any]\ntargets = 127.0.0.1:3005\n"
    "[limit api]\nrate = 10r/s\nburst = 20\nzone_size = 64k\n"
    "[limit chat]\nrate = 5r/s\nburst = 10\nzone_size = 64k\n"
    "[route /api/]\nlimit = api\n"
    "[route /api/v1/]\nlimit = api, chat\nheaders = cors\n"
    "[route /api/v1/sessions/]\nlimit = chat\n"
    "[route /]\nsuffix = .js .css\nheaders = immutable\n"
    "[route /static/]\n"
    "[route /api/]\nhost = api.example.com api2.example.com\n"
    "[route /api]\nhost = *.example.com\n"
    "[route /api]\nhost = *.eu.example.com\n"
    "[route /app]\nsuffix = .js\n"
    "[route /app]\n"
    "[headers cors]\nAccess-Control-Allow-Origin = https://example.com\nX-Frame-Options = SAMEORIGIN\n"
    "[headers immutable]\nCache-Control = public, max-age=31536000, immutable\n";

/* "PREFIX" of the route that applies, "PREFIX host H" for a host route, "-" for none. */
static const char *route(const struct px_routes *r, const char *host, const char *path)
{
    static char out[128];
    const struct px_route *rt = px_routes_route(r, host, host ? strlen(host) : 0, path, strlen(path));
    if (rt == NULL)
        return "-";
    snprintf(out, sizeof(out), "%s", rt->prefix);
    return out;
}

static void test_route_prefix(void)
{
    struct px_routes *r = build(ini_routes);
    REQUIRE(r != NULL);
    CHECK_STR(route(r, NULL, "/api"), "/api/");
    CHECK_STR(route(r, NULL, "/api/"), "/api/");
    CHECK_STR(route(r, NULL, "/api/x?y=1"), "/api/");
    CHECK_STR(route(r, NULL, "/api?y=/api/v1/"), "/api/");
    CHECK_STR(route(r, NULL, "/apix"), "-");     /* segment boundary; "/" only with a suffix */
    CHECK_STR(route(r, NULL, "/api/v1"), "/api/v1/");
    CHECK_STR(route(r, NULL, "/api/v1/users?x=1"), "/api/v1/");
    CHECK_STR(route(r, NULL, "/api/v1/sessions/abc"), "/api/v1/sessions/");
    CHECK_STR(route(r, NULL, "/api/v1/sessions"), "/api/v1/sessions/");
    CHECK_STR(route(r, NULL, "/api/v1/sessionsx"), "/api/v1/");
    CHECK_STR(route(r, NULL, "/static/app.js"), "/static/");  /* the longer prefix beats a suffix */
    CHECK_STR(route(r, NULL, "/"), "-");
    CHECK_STR(route(r, NULL, ""), "-");
    CHECK_STR(route(r, NULL, "*"), "-");
    px_routes_publish(r);
    px_routes_shutdown();
}

/* The path as nginx matches locations: an encoded or dotted path cannot
 * slip past a limit. */
static void test_route_normalized(void)
{
    struct px_routes *r = build(ini_routes);
    REQUIRE(r != NULL);
    CHECK_STR(route(r, NULL, "//api//v1/sessions/x"), "/api/v1/sessions/");
    CHECK_STR(route(r, NULL, "/%61pi/v1/%73essions/x"), "/api/v1/sessions/");
    CHECK_STR(route(r, NULL, "/api%2Fv1%2fsessions"), "/api/v1/sessions/");
    CHECK_STR(route(r, NULL, "/x/../api/v1/sessions/"), "/api/v1/sessions/");
    CHECK_STR(route(r, NULL, "/api/v1/sessions/../../v1/x"), "/api/v1/");
    CHECK_STR(route(r, NULL, "/api/./v1/./sessions/."), "/api/v1/sessions/");
    CHECK_STR(route(r, NULL, "/%2e%2e/api/x"), "/api/");      /* never above the root */
    CHECK_STR(route(r, NULL, "/../../api"), "/api/");
    CHECK_STR(route(r, NULL, "/api/v1/sessions/.."), "/api/v1/");
    CHECK_STR(route(r, NULL, "/api%zz"), "/api/");            /* not an escape: a literal '%' ends the name
                                                                * (the parsers answer 400 first) */
    CHECK_STR(route(r, NULL, "/apix%zz"), "-");
    CHECK_STR(route(r, NULL, "/ap%69?x=%2Fapi/v1/"), "/api/");
    CHECK_STR(route(r, NULL, "/.well-known/x.js"), "/");
    /* a long path is normalized too (off the stack) */
    {
        static char p[9000];
        strcpy(p, "//api/v1/sessions/");
        memset(p + strlen(p), 'a', 8000);
        p[8018] = '\0';
        CHECK_STR(route(r, NULL, p), "/api/v1/sessions/");
    }
    px_routes_publish(r);
    px_routes_shutdown();
}

/* What a backend would serve as /login is limited by [route /login]: the
 * prefix must end where a name ends -- '/', '.', ';params', a decoded '?',
 * '#', space, NUL -- never inside a longer name ("/loginx", "/login-help"). */
static void test_route_boundary(void)
{
    struct px_routes *r = build("[proxy]\nlisten_http = 127.0.0.1:0\n[service any]\ntargets = 127.0.0.1:3005\n"
                                "[route /login]\n[route /admin/]\n[route /app]\nsuffix = .js\n");
    REQUIRE(r != NULL);
    static const char *const limited[] = {
        "/login", "/login/", "/login?x", "/login;x", "/login;jsessionid=1?a=b", "/login%3f", "/login%3Fx=1",
        "/login%23", "/login%20", "/login%09", "/login%00", "/login.json", "/login%2ejson", "/login%2f",
        "/login/x", "/;x/login", "/x;y/../login", "/login;x/", "//login", "/a/..;/login", "/login%3bx",
        "/admin", "/admin;x/users", "/x/..;/admin/", "/login%", "/login%zz",
    };
    for (size_t i = 0; i < sizeof(limited) / sizeof(limited[0]); i++) {
        const char *got = route(r, NULL, limited[i]);
        CHECK(strcmp(got, "-") != 0);
        if (strcmp(got, "-") == 0)
            fprintf(stderr, "# not limited: %s\n", limited[i]);
    }
    static const char *const other[] = {
        "/loginx", "/login-help", "/login_x", "/login~", "/login%41", "/login\xc3\xa9", "/LOGIN", "/logi",
        "/x/login", "/login/../x", "/adminx", "/;login", "/lo;gin",
    };
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        const char *got = route(r, NULL, other[i]);
        CHECK_STR(got, "-");
        if (strcmp(got, "-") != 0)
            fprintf(stderr, "# limited: %s\n", other[i]);
    }
    CHECK_STR(route(r, NULL, "/login"), "/login");
    CHECK_STR(route(r, NULL, "/app.js;v=1"), "/app");          /* the suffix after ";params" are dropped */
    CHECK_STR(route(r, NULL, "/app/x.js;jsessionid=1"), "/app");
    px_routes_publish(r);
    px_routes_shutdown();
}

static void test_route_suffix(void)
{
    struct px_routes *r = build(ini_routes);
    REQUIRE(r != NULL);
    CHECK_STR(route(r, NULL, "/x.js"), "/");
    CHECK_STR(route(r, NULL, "/a/b/STYLE.CSS"), "/");
    CHECK_STR(route(r, NULL, "/x.js?v=1.css"), "/");
    CHECK_STR(route(r, NULL, "/x.json"), "-");
    CHECK_STR(route(r, NULL, "/x.html?x.js"), "-");      /* the query is not the path */
    CHECK_STR(route(r, NULL, "/x.js/"), "-");
    CHECK_STR(route(r, NULL, "/x%2Ejs"), "/");
    /* at equal prefix the route whose suffix matches wins */
    CHECK_STR(route(r, NULL, "/app/x.js"), "/app");
    CHECK_STR(route(r, NULL, "/app/x.css"), "/app");
    CHECK_STR(route(r, NULL, "/app.js"), "/app");          /* '.' ends the name "app" (see test_route_boundary) */
    CHECK_STR(route(r, NULL, "/apps.js"), "/");            /* "/app" is not a prefix of "/apps" */
    const struct px_route *a = px_routes_route(r, NULL, 0, "/app/x.JS", 9);
    const struct px_route *b = px_routes_route(r, NULL, 0, "/app/x.jsx", 10);
    CHECK(a && b && a != b);
    px_routes_publish(r);
    px_routes_shutdown();
}

static void test_route_hosts(void)
{
    struct px_routes *r = build(ini_routes);
    REQUIRE(r != NULL);
    const struct px_route *none = px_routes_route(r, NULL, 0, "/api/x", 6);
    const struct px_route *exact = px_routes_route(r, "API.Example.com:8443", 20, "/api/x", 6);
    const struct px_route *wild = px_routes_route(r, "a.example.com", 13, "/api/x", 6);
    const struct px_route *deep = px_routes_route(r, "x.eu.example.com", 16, "/api/x", 6);
    const struct px_route *multi = px_routes_route(r, "a.b.example.com.", 16, "/api", 4);
    const struct px_route *other = px_routes_route(r, "example.com", 11, "/api/x", 6);
    const struct px_route *bad = px_routes_route(r, "a b", 3, "/api/x", 6);
    CHECK(none && exact && wild && deep && multi && other && bad);
    if (!(none && exact && wild && deep && multi && other && bad))
        goto out;
    CHECK(exact != none && wild != none && deep != none && exact != wild && deep != wild);
    CHECK(multi == wild);  /* "*.example.com" takes any depth */
    CHECK(px_routes_route(r, "api2.example.com", 16, "/api/y", 6) == exact); /* one route, two names */
    CHECK(other == none);  /* "*.example.com" is not example.com */
    CHECK(bad == none);
    CHECK_INT(none->nzones, 1);
    CHECK_INT(exact->nzones, 0);
    /* a host route does not beat a longer host-less prefix */
    CHECK_STR(route(r, "api.example.com", "/api/v1/x"), "/api/v1/");
out:
    px_routes_publish(r);
    px_routes_shutdown();
}

static void test_route_policy(void)
{
    struct px_routes *r = build(ini_routes);
    REQUIRE(r != NULL);
    const struct px_route *v1 = px_routes_route(r, NULL, 0, "/api/v1/x", 9);
    const struct px_route *api = px_routes_route(r, NULL, 0, "/api/x", 6);
    const struct px_route *js = px_routes_route(r, NULL, 0, "/x.js", 5);
    CHECK(v1 && api && js);
    if (!(v1 && api && js))
        goto out;
    CHECK_INT(v1->nzones, 2);
    if (v1->nzones == 2) {
        CHECK_STR(px_limit_zone_name(v1->zones[0]), "api");
        CHECK_STR(px_limit_zone_name(v1->zones[1]), "chat");
        CHECK(v1->zones[0] == api->zones[0]); /* one zone, shared by the routes naming it */
        CHECK(v1->zones[0] == px_limits_find(px_routes_limits(r), "api"));
    }
    CHECK(api->adds == NULL); /* no sets: the [headers] alone */
    CHECK_INT(js->nzones, 0);
    /* the defaults, X-Frame-Options replaced by the set's, then the set */
    CHECK_INT(v1->nadds, 5);
    if (v1->nadds == 5) {
        CHECK_STR(v1->adds[0].name, "Strict-Transport-Security");
        CHECK_INT(v1->adds[0].https_only, 1);
        CHECK_STR(v1->adds[1].name, "X-Content-Type-Options");
        CHECK_STR(v1->adds[3].name, "Access-Control-Allow-Origin");
        CHECK(v1->adds[3].lname && memcmp(v1->adds[3].lname, "access-control-allow-origin", 27) == 0);
        CHECK_INT(v1->adds[3].name_len, 27);
        CHECK_INT(v1->adds[3].https_only, 0);
        CHECK_STR(v1->adds[4].value, "SAMEORIGIN");
        CHECK_INT(px_hdr_add_find(v1->adds, v1->nadds, "x-frame-options", 15), 4);
    }
    CHECK_INT(js->nadds, 5);
    if (js->nadds == 5)
        CHECK_STR(js->adds[4].value, "public, max-age=31536000, immutable");
out:
    px_routes_publish(r);
    px_routes_shutdown();
}

static void test_route_none(void)
{
    struct px_routes *r = build(ini_main);
    REQUIRE(r != NULL);
    CHECK(px_routes_route(r, "example.com", 11, "/api/x", 6) == NULL);
    CHECK(px_routes_limits(r) != NULL);
    px_routes_publish(r);
    px_routes_shutdown();
}

/* Zones keep their state across a reload that leaves them unchanged, and
 * start over when their zone_size changes (nginx keeps shared zones by
 * name and size). */
static void test_zones_carry_over(void)
{
    const char *fmt = "[proxy]\nlisten_http = 127.0.0.1:0\n[service s]\ntargets = 127.0.0.1:7000\n"
                      "[limit api]\nrate = 1r/m\nburst = %d\nzone_size = %s\n[route /]\nlimit = api\n";
    char ini[512];
    struct px_limit_key k = {4, {192, 0, 2, 1}};
    struct px_limit_result res;

    px_carry_init(&carry);
    snprintf(ini, sizeof(ini), fmt, 1, "64k");
    struct px_routes *a = build_with(ini, &carry);
    REQUIRE(a != NULL);
    CHECK(carry.zones == NULL); /* built, not published: the carry is as it was */
    px_routes_publish(a);
    struct px_limits *za = px_routes_limits(a);
    CHECK(carry.zones == za);
    const struct px_route *ra = px_routes_route(a, NULL, 0, "/", 1);
    px_limit_check(ra->zones, ra->nzones, &k, 1000, &res);
    CHECK_INT(res.verdict, PX_LIMIT_PASS);
    px_limit_check(ra->zones, ra->nzones, &k, 1000, &res);
    CHECK_INT(res.verdict, PX_LIMIT_PASS);
    px_limit_check(ra->zones, ra->nzones, &k, 1000, &res);
    CHECK_INT(res.verdict, PX_LIMIT_REJECT);

    /* without the carry nothing is carried over: a new, empty bucket */
    snprintf(ini, sizeof(ini), fmt, 1, "64k");
    struct px_routes *fresh = build(ini);
    CHECK(fresh != NULL);
    if (fresh) {
        const struct px_route *rf = px_routes_route(fresh, NULL, 0, "/", 1);
        px_limit_check(rf->zones, rf->nzones, &k, 1000, &res);
        CHECK_INT(res.verdict, PX_LIMIT_PASS);
        px_routes_publish(fresh); /* built without a carry: leaves it alone (a is freed now) */
        CHECK(carry.zones == za);
    }

    /* an unchanged zone (a new burst is only a parameter): the bucket is full still */
    snprintf(ini, sizeof(ini), fmt, 2, "64k");
    struct px_routes *b = build_with(ini, &carry);
    CHECK(b != NULL);
    if (!b)
        goto out;
    px_routes_publish(b);
    const struct px_route *rb = px_routes_route(b, NULL, 0, "/", 1);
    px_limit_check(rb->zones, rb->nzones, &k, 1000, &res);
    CHECK_INT(res.verdict, PX_LIMIT_PASS);   /* the third fits burst 2 */
    px_limit_check(rb->zones, rb->nzones, &k, 1000, &res);
    CHECK_INT(res.verdict, PX_LIMIT_REJECT);

    /* a new zone_size: a new zone, empty */
    snprintf(ini, sizeof(ini), fmt, 2, "128k");
    struct px_routes *c = build_with(ini, &carry);
    CHECK(c != NULL);
    if (!c)
        goto out;
    px_routes_publish(c);
    const struct px_route *rc = px_routes_route(c, NULL, 0, "/", 1);
    for (int i = 0; i < 3; i++) {
        px_limit_check(rc->zones, rc->nzones, &k, 1000, &res);
        CHECK_INT(res.verdict, PX_LIMIT_PASS);
    }
    px_limit_check(rc->zones, rc->nzones, &k, 1000, &res);
    CHECK_INT(res.verdict, PX_LIMIT_REJECT);
out:
    px_routes_shutdown();
    px_carry_free(&carry); /* the last reference on the last zone set */
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
    UNIT_RUN(test_route_prefix);
    UNIT_RUN(test_route_normalized);
    UNIT_RUN(test_route_suffix);
    UNIT_RUN(test_route_boundary);
    UNIT_RUN(test_route_hosts);
    UNIT_RUN(test_route_policy);
    UNIT_RUN(test_route_none);
    UNIT_RUN(test_zones_carry_over);
    px_log_close();
    return unit_report();
}
