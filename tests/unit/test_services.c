/* Unit tests: the services table (builder, ownership, the conflict rule),
 * the snapshot parts and their refcounts, and TLS session sharing. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "px/carry.h"
#include "px/config.h"
#include "px/log.h"
#include "px/routes.h"
#include "px/services.h"
#include "px/tls.h"
#include "unit.h"

static struct px_config *load(const char *ini)
{
    char err[512];
    struct px_config *cfg = NULL;
    if (px_config_load_string(ini, "t.ini", &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return NULL;
    }
    return cfg;
}

static const char *conflict(const char *an, const char *ah, const char *ap, const char *bn, const char *bh,
                            const char *bp)
{
    static char buf[256];
    const char *ahs[] = {ah}, *bhs[] = {bh};
    struct px_service_claim a = {an, ahs, ah ? 1 : 0, ap, NULL, 0}, b = {bn, bhs, bh ? 1 : 0, bp, NULL, 0};
    const char *r = px_service_conflict(&a, &b, buf, sizeof(buf));
    return r ? r : "-";
}

static void test_conflict_rule(void)
{
    CHECK_STR(conflict("a", NULL, "/", "b", NULL, "/"), "conflicts with service b (any host, prefix /)");
    CHECK_STR(conflict("a", NULL, NULL, "b", NULL, "/"), "conflicts with service b (any host, prefix /)");
    CHECK_STR(conflict("a", "x.com", "/app", "b", "X.COM", "/app/"),
              "conflicts with service b (host X.COM, prefix /app)");
    CHECK_STR(conflict("a", "x.com", "/app", "b", "x.com", "/ap"), "-");
    CHECK_STR(conflict("a", "x.com", "/", "b", "y.com", "/"), "-");
    CHECK_STR(conflict("a", "x.com", "/", "b", NULL, "/"), "-");     /* a host beats the catch-all */
    CHECK_STR(conflict("a", "*.x.com", "/", "b", "a.x.com", "/"), "-"); /* exact beats wildcard */
    CHECK_STR(conflict("a", "*.x.com", "/", "b", "*.X.com", "/"), "conflicts with service b (host *.X.com, prefix /)");
    CHECK_STR(conflict("web", NULL, "/", "web", NULL, "/"), "-");    /* a deploy replaces its own service */
    /* several hosts: any common one */
    const char *ah[] = {"a.com", "b.com"}, *bh[] = {"c.com", "B.com"};
    struct px_service_claim a = {"a", ah, 2, "/", NULL, 0}, b = {"b", bh, 2, "/", NULL, 0};
    char buf[128];
    CHECK(px_service_conflict(&a, &b, buf, sizeof(buf)) == buf);
    CHECK_STR(buf, "conflicts with service b (host B.com, prefix /)");
}

static struct px_addr addr(const char *text)
{
    struct px_addr a;
    memset(&a, 0, sizeof(a));
    if (px_addr_parse(text, &a) != NULL)
        fprintf(stderr, "bad address %s\n", text);
    return a;
}

/* The table copies every string: the caller's buffers may change or go. */
/* The self-target rule: a target that is one of proxyd's listen addresses. */
static void test_self_target_rule(void)
{
    static const struct {
        const char *target, *listen;
        int self;
    } cases[] = {
        {"127.0.0.1:80", "127.0.0.1:80", 1},
        {"127.0.0.1:80", "127.0.0.1:81", 0},
        {"127.0.0.1:80", "127.0.0.2:80", 0},
        {"127.0.0.9:80", "0.0.0.0:80", 1},     /* a wildcard takes every local address */
        {"[::1]:80", "0.0.0.0:80", 1},
        {"127.0.0.1:80", "[::]:80", 1},
        {"0.0.0.0:80", "127.0.0.1:80", 1},     /* connect() to 0.0.0.0 reaches this host */
        {"[::]:80", "[::1]:80", 1},
        {"192.0.2.1:80", "0.0.0.0:80", 0},     /* TEST-NET: not this host */
        {"127.0.0.1:80", "127.0.0.1:0", 0},    /* not bound yet: unknown */
    };
    char buf[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct px_addr t, l;
        CHECK(px_addr_parse(cases[i].target, &t) == NULL);
        CHECK(px_addr_parse(cases[i].listen, &l) == NULL);
        const char *r = px_service_self_target(&t, &l, 1, buf, sizeof(buf));
        if ((r != NULL) != cases[i].self && !unit_failed_now) {
            unit_failed_now = 1;
            snprintf(unit_msg, sizeof(unit_msg), "%s vs %s: want %d", cases[i].target, cases[i].listen,
                     cases[i].self);
        }
        if (r)
            CHECK(strstr(r, cases[i].listen) != NULL);
    }
    struct px_addr t;
    CHECK(px_addr_parse("127.0.0.1:80", &t) == NULL);
    CHECK(px_service_self_target(&t, NULL, 0, buf, sizeof(buf)) == NULL);
}

/* Several path prefixes: each one routes, conflicts and strips. */
static void test_several_prefixes(void)
{
    char *more[] = {"/api/", "/admin"};
    const char *hosts[] = {"example.com"};
    struct px_addr t = addr("127.0.0.1:7100"), t2 = addr("127.0.0.1:7101");
    struct px_service_spec a = {.name = "app", .hosts = hosts, .nhosts = 1, .path_prefix = "/app", .targets = &t,
                                .ntargets = 1, .opts = {.more_prefixes = more, .nmore_prefixes = 2}};
    struct px_service_spec b = {.name = "web", .hosts = hosts, .nhosts = 1, .targets = &t2, .ntargets = 1};
    struct px_service_spec c = {.name = "clash", .hosts = hosts, .nhosts = 1, .path_prefix = "/admin/",
                                .targets = &t2, .ntargets = 1};
    char err[256];
    struct px_services *tab = px_services_new();
    CHECK(tab != NULL);
    CHECK_INT(px_services_add(tab, &a, err, sizeof(err)), PX_E_OK);
    CHECK_INT(px_services_add(tab, &b, err, sizeof(err)), PX_E_OK);
    CHECK_INT(px_services_add(tab, &c, err, sizeof(err)), PX_E_CONFLICT);
    CHECK_STR(err, "service clash: conflicts with service app (host example.com, prefix /admin)");
    CHECK_INT(px_services_seal(tab, err, sizeof(err)), 0);
    static const struct {
        const char *path, *svc;
        int strip;
    } cases[] = {
        {"/app/x", "app", 4}, {"/api", "app", 4},  {"/api/v1?q=1", "app", 4}, {"/admin/users", "app", 6},
        {"/apix", "web", 0},  {"/", "web", 0},     {"/administrator", "web", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct px_service *s = px_services_match(tab, "example.com", 11, cases[i].path, strlen(cases[i].path));
        CHECK_STR(s ? s->name : "none", cases[i].svc);
        CHECK_INT(s ? px_service_prefix_match(s, cases[i].path, strlen(cases[i].path)) : -9, cases[i].strip);
    }
    px_services_free(tab);
}

/* error_pages: STATUS.html rendered when the table is built, the stop
 * message HTML-escaped. */
static void test_error_pages(void)
{
    char dir[] = "/tmp/px-pagesXXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/503.html", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs("<h1>{{ .Status }}</h1><p>{{.Message}}</p>", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/notes.txt", dir);
    f = fopen(path, "w");
    fclose(f);
    struct px_addr t = addr("127.0.0.1:7100");
    struct px_service_spec sp = {.name = "web", .targets = &t, .ntargets = 1, .state = PX_SVC_STOPPED,
                                 .stop_message = "back <soon> & \"ok\"", .opts = {.error_pages = dir}};
    char err[256];
    struct px_services *tab = px_services_new();
    CHECK_INT(px_services_add(tab, &sp, err, sizeof(err)), PX_E_OK);
    const struct px_service *s = px_services_find(tab, "web");
    CHECK_INT(s->npages, 1);
    const struct px_err_page *pg = px_service_page(s, 503);
    CHECK(pg != NULL);
    CHECK_STR(pg ? pg->body : "", "<h1>503</h1><p>back &lt;soon&gt; &amp; &#34;ok&#34;</p>");
    CHECK(px_service_page(s, 502) == NULL);
    CHECK(px_svc_opts_check(&s->opts, err, sizeof(err)) == NULL);
    struct px_svc_opts bad = {.error_pages = "/nonexistent-px-dir"};
    CHECK(px_svc_opts_check(&bad, err, sizeof(err)) != NULL);
    px_services_free(tab);
    unlink(path);
    snprintf(path, sizeof(path), "%s/503.html", dir);
    unlink(path);
    rmdir(dir);
}

static void test_builder_owns_strings(void)
{
    char name[] = "web", host[] = "Example.COM", prefix[] = "/app/", hc[] = "/up2", msg[] = "down for a bit";
    const char *hosts[] = {host};
    struct px_addr t = addr("127.0.0.1:7100");
    struct px_service_spec sp = {.name = name, .hosts = hosts, .nhosts = 1, .path_prefix = prefix,
                                 .targets = &t, .ntargets = 1, .health_check_path = hc,
                                 .state = PX_SVC_STOPPED, .stop_message = msg, .max_pause_ms = 1500};
    char err[256];
    struct px_services *tab = px_services_new();
    CHECK(tab != NULL);
    CHECK_INT(px_services_add(tab, &sp, err, sizeof(err)), 0);
    memset(name, 'x', 3);
    memset(host, 'x', sizeof(host) - 1);
    memset(prefix, 'x', sizeof(prefix) - 1);
    memset(hc, 'x', sizeof(hc) - 1);
    memset(msg, 'x', sizeof(msg) - 1);
    const struct px_service *s = px_services_find(tab, "web");
    CHECK(s != NULL);
    if (s) {
        CHECK_STR(s->hosts[0], "example.com");
        CHECK_STR(s->path_prefix, "/app");
        CHECK_INT((int)s->path_prefix_len, 4);
        CHECK_STR(s->health_check_path, "/up2");
        CHECK_STR(s->stop_message, "down for a bit");
        CHECK_INT(s->state, PX_SVC_STOPPED);
        CHECK_INT((int)s->max_pause_ms, 1500);
        CHECK_STR(s->targets[0]->addr.text, "127.0.0.1:7100");
    }
    /* the conflict rule on add; nothing is added */
    const char *h2[] = {"EXAMPLE.com"};
    struct px_service_spec other = {.name = "api", .hosts = h2, .nhosts = 1, .path_prefix = "/app",
                                    .targets = &t, .ntargets = 1};
    CHECK_INT(px_services_add(tab, &other, err, sizeof(err)), PX_E_CONFLICT);
    CHECK_STR(err, "service api: conflicts with service web (host example.com, prefix /app)");
    CHECK_INT((int)px_services_count(tab), 1);
    other.name = "web";
    other.path_prefix = "/other";
    CHECK_INT(px_services_add(tab, &other, err, sizeof(err)), PX_E_BAD_REQUEST);
    CHECK_STR(err, "service web: defined twice");
    other.name = "api";
    other.path_prefix = "app";
    CHECK_INT(px_services_add(tab, &other, err, sizeof(err)), PX_E_BAD_REQUEST);
    CHECK_STR(err, "service api: path_prefix must start with /");
    other.path_prefix = "/api";
    CHECK_INT(px_services_add(tab, &other, err, sizeof(err)), 0);
    CHECK(px_services_at(tab, 1)->targets[0] == s->targets[0]); /* one target per HOST:PORT */
    CHECK_INT(px_services_seal(tab, err, sizeof(err)), 0);
    CHECK_STR(px_services_match(tab, "example.com", 11, "/api/x", 6)->name, "api");
    CHECK_INT(px_services_add(tab, &other, err, sizeof(err)), PX_E_INTERNAL); /* sealed */
    /* a copy of a service into a new table shares its targets */
    struct px_services *tab2 = px_services_new();
    CHECK_INT(px_services_add_copy(tab2, s, err, sizeof(err)), 0);
    CHECK(px_services_at(tab2, 0)->targets[0] == s->targets[0]);
    CHECK_INT(px_services_at(tab2, 0)->targets[0]->refs, 3);
    px_services_free(tab);
    CHECK_INT(px_services_at(tab2, 0)->targets[0]->refs, 1);
    CHECK_STR(px_services_at(tab2, 0)->stop_message, "down for a bit");
    px_services_free(tab2);
}

/* The config loader's services come out owning copies: freeing the config
 * leaves the table intact (ASan would catch a borrowed string). */
static void test_from_config_outlives_config(void)
{
    char err[256];
    struct px_config *cfg = load("[proxy]\nlisten_http = 127.0.0.1:0\n"
                                 "[service a]\nhosts = a.test\npath_prefix = /x/\ntargets = 127.0.0.1:7200\n");
    REQUIRE(cfg != NULL);
    struct px_services *t = px_config_services(cfg, err, sizeof(err));
    px_config_free(cfg);
    REQUIRE(t != NULL);
    const struct px_service *s = px_services_match(t, "a.test", 6, "/x/y", 4);
    CHECK(s != NULL);
    if (s) {
        CHECK_STR(s->name, "a");
        CHECK_STR(s->path_prefix, "/x");
        CHECK_STR(s->hosts[0], "a.test");
    }
    px_services_free(t);
}

static struct px_services *one_service(const char *name, const char *target)
{
    char err[256];
    struct px_addr t = addr(target);
    struct px_service_spec sp = {.name = name, .targets = &t, .ntargets = 1};
    struct px_services *tab = px_services_new();
    if (tab && px_services_add(tab, &sp, err, sizeof(err)) != PX_E_OK) {
        fprintf(stderr, "%s\n", err);
        px_services_free(tab);
        return NULL;
    }
    return tab;
}

/* Publishing a services table keeps the config and TLS parts (the same
 * objects); parts are counted by the snapshots naming them and freed with
 * the last. */
static void test_publish_services_keeps_parts(void)
{
    char err[256];
    px_routes_set_nworkers(1);
    struct px_routes *a = px_routes_build(load("[proxy]\nlisten_http = 127.0.0.1:0\n"
                                               "[service old]\ntargets = 127.0.0.1:7300\n"),
                                          NULL, err, sizeof(err));
    REQUIRE(a != NULL);
    px_routes_publish(a);
    CHECK(px_routes_current(0) == a);
    px_routes_pin(a, 0); /* a request still running on a */
    CHECK_INT(px_routes_publish_services(one_service("new", "127.0.0.1:7301"), err, sizeof(err)), 0);
    const struct px_routes *b = px_routes_peek();
    CHECK(b != a);
    CHECK(px_routes_config(b) == px_routes_config(a));
    CHECK(px_routes_tls(b) == px_routes_tls(a));
    CHECK(px_routes_services(b) != px_routes_services(a));
    CHECK_INT(px_routes_part_refs(b, PX_PART_CONFIG), 2);
    CHECK_INT(px_routes_part_refs(b, PX_PART_TLS), 2);
    CHECK_INT(px_routes_part_refs(b, PX_PART_SERVICES), 1);
    CHECK_STR(px_routes_match(b, NULL, 0, "/", 1)->name, "new");
    CHECK_STR(px_routes_match(a, NULL, 0, "/", 1)->name, "old"); /* a is still whole */
    CHECK_INT(px_routes_reap(), 1);
    CHECK(px_routes_current(0) == b);
    px_routes_unpin(a, 0);
    CHECK_INT(px_routes_reap(), 0); /* a freed; its config part lives on in b */
    CHECK_INT(px_routes_part_refs(b, PX_PART_CONFIG), 1);
    CHECK_INT((int)px_routes_config(b)->workers >= 1, 1);
    /* a TLS part alone */
    CHECK_INT(px_routes_publish_tls(NULL, err, sizeof(err)), 0);
    const struct px_routes *c = px_routes_peek();
    CHECK(px_routes_services(c) == px_routes_services(b));
    CHECK(px_routes_config(c) == px_routes_config(b));
    CHECK_INT(px_routes_part_refs(c, PX_PART_SERVICES), 2);
    px_routes_current(0);
    CHECK_INT(px_routes_reap(), 0);
    CHECK_INT(px_routes_part_refs(c, PX_PART_SERVICES), 1);
    px_routes_shutdown();
    /* nothing published yet: refused, and the table is freed (no leak) */
    CHECK_INT(px_routes_publish_services(one_service("x", "127.0.0.1:7302"), err, sizeof(err)), -1);
    CHECK_STR(err, "nothing published yet");
    px_routes_shutdown();
    px_routes_set_nworkers(PX_MAX_WORKERS);
}

static const char *tls_ini(const char *extra)
{
    static char buf[1024];
    snprintf(buf, sizeof(buf),
             "[proxy]\nlisten_http = 127.0.0.1:0\nlisten_https = 127.0.0.1:0\n"
             "[tls]\ncertificate = certs-dev/localhost.crt\ncertificate_key = certs-dev/localhost.key\n%s"
             "[service s]\ntargets = 127.0.0.1:7400\n",
             extra);
    return buf;
}

/* A rebuilt TLS part shares the session cache and ticket keys of the one in
 * force unless the session settings changed. */
static void test_tls_sessions_outlive_rebuild(void)
{
    char err[512];
    REQUIRE(access("certs-dev/localhost.crt", R_OK) == 0); /* make test runs make certs-dev */
    struct px_config *c1 = load(tls_ini("session_tickets = yes\n"));
    struct px_config *c2 = load(tls_ini("session_tickets = yes\n"));
    struct px_config *c3 = load(tls_ini("session_tickets = yes\nsession_timeout = 1h\n"));
    REQUIRE(c1 && c2 && c3);
    struct px_tls *t1 = px_tls_build(&c1->tls, NULL, err, sizeof(err));
    CHECK(t1 != NULL);
    struct px_tls *t2 = px_tls_build(&c2->tls, px_tls_sessions(t1), err, sizeof(err));
    CHECK(t2 != NULL);
    CHECK(px_tls_same_sessions(t1, t2));
    px_tls_free(t1); /* t2 keeps the shared base alive */
    struct px_tls *t3 = px_tls_build(&c3->tls, px_tls_sessions(t2), err, sizeof(err));
    CHECK(t3 != NULL);
    CHECK(!px_tls_same_sessions(t2, t3));
    struct px_tls *t4 = px_tls_build(&c3->tls, NULL, err, sizeof(err));
    CHECK(!px_tls_same_sessions(t3, t4));
    px_tls_rotate_tickets(t2, UINT64_MAX / 2); /* rotates the shared ring; no crash after t1 went */
    px_tls_free(t2);
    px_tls_free(t3);
    px_tls_free(t4);
    px_config_free(c1);
    px_config_free(c2);
    px_config_free(c3);
}

/* The carry-over object holds the session context in force: a rebuild
 * shares it even after every snapshot that had it is gone, a build that is
 * not published leaves the carry alone, and new session settings replace it
 * when published. */
static void test_carry_holds_tls_sessions(void)
{
    char err[512];
    struct px_carry carry;
    REQUIRE(access("certs-dev/localhost.crt", R_OK) == 0); /* make certs-dev */
    px_carry_init(&carry);
    px_routes_set_nworkers(1);
    struct px_config *c1 = load(tls_ini("session_tickets = yes\n"));
    REQUIRE(c1 != NULL);
    struct px_routes *a = px_routes_build(c1, &carry, err, sizeof(err));
    REQUIRE(a != NULL);
    CHECK(carry.sessions == NULL); /* not published yet */
    px_routes_publish(a);
    struct px_tls_sessions *sa = px_tls_sessions(px_routes_tls(a));
    CHECK(sa != NULL);
    CHECK(carry.sessions == sa);
    px_routes_shutdown(); /* every snapshot gone: the carry keeps the context alive */
    CHECK(carry.sessions == sa);

    struct px_config *c2 = load(tls_ini("session_tickets = yes\n"));
    struct px_routes *b = c2 ? px_routes_build(c2, &carry, err, sizeof(err)) : NULL;
    CHECK(b != NULL);
    if (b) {
        CHECK(px_tls_sessions(px_routes_tls(b)) == sa); /* the same cache and ticket keys */
        px_routes_publish(b);
    }
    /* new session settings: a new context, in the carry once published */
    struct px_config *c3 = load(tls_ini("session_tickets = yes\nsession_timeout = 1h\n"));
    struct px_routes *c = c3 ? px_routes_build(c3, &carry, err, sizeof(err)) : NULL;
    CHECK(c != NULL);
    if (c) {
        struct px_tls_sessions *sc = px_tls_sessions(px_routes_tls(c));
        CHECK(sc != sa);
        CHECK(carry.sessions == sa);
        px_routes_publish(c);
        CHECK(carry.sessions == sc);
    }
    px_routes_shutdown();
    px_carry_free(&carry);
    CHECK(carry.sessions == NULL && carry.zones == NULL);
    px_routes_set_nworkers(PX_MAX_WORKERS);
}

int main(void)
{
    px_log_open("/dev/null", "off", NULL, 0);
    UNIT_RUN(test_conflict_rule);
    UNIT_RUN(test_self_target_rule);
    UNIT_RUN(test_builder_owns_strings);
    UNIT_RUN(test_from_config_outlives_config);
    UNIT_RUN(test_publish_services_keeps_parts);
    UNIT_RUN(test_several_prefixes);
    UNIT_RUN(test_error_pages);
    UNIT_RUN(test_tls_sessions_outlive_rebuild);
    UNIT_RUN(test_carry_holds_tls_sessions);
    px_log_close();
    return unit_report();
}
