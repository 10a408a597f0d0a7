/* Unit tests: when an ACME lineage is due (expiry, renewalInfo window,
 * backoff), and which lineages the manager keeps for [acme] and the
 * services deployed with --tls. */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "px/acme_manager.h"
#include "px/config.h"
#include "unit.h"

#define DAY (86400000LL)
#define NOW (1700000000000LL)

static struct px_acme_sched base_sched(void)
{
    struct px_acme_sched s = {
        .not_after_ms = NOW + 60 * DAY,
        .renew_before_ms = 30 * DAY,
        .retry_ms = 60000,
        .check_interval_ms = 12 * 3600000,
    };
    return s;
}

static void test_backoff(void)
{
    CHECK_INT(px_acme_backoff_ms(1, 60000, 43200000), 60000);
    CHECK_INT(px_acme_backoff_ms(2, 60000, 43200000), 120000);
    CHECK_INT(px_acme_backoff_ms(3, 60000, 43200000), 240000);
    CHECK_INT(px_acme_backoff_ms(10, 60000, 43200000), 30720000);
    CHECK_INT(px_acme_backoff_ms(11, 60000, 43200000), 43200000); /* capped at check_interval */
    CHECK_INT(px_acme_backoff_ms(500, 60000, 43200000), 43200000);  /* no overflow */
    CHECK_INT(px_acme_backoff_ms(1, 0, 1000), 1);
    CHECK_INT(px_acme_backoff_ms(3, 5000, 1000), 1000);             /* cap below the first step */
}

static void test_due_by_expiry(void)
{
    struct px_acme_sched s = base_sched();
    CHECK_INT(px_acme_due_ms(&s), NOW + 30 * DAY);
    s.not_after_ms = NOW + 10 * DAY; /* already within renew_before: due in the past */
    CHECK(px_acme_due_ms(&s) <= NOW);
    s.not_after_ms = 0; /* no certificate */
    CHECK_INT(px_acme_due_ms(&s), 0);
    s = base_sched();
    s.names_missing = 1; /* a name was added to domains */
    CHECK_INT(px_acme_due_ms(&s), 0);
}

static void test_due_by_window(void)
{
    struct px_acme_sched s = base_sched();
    s.window_at_ms = NOW + 5 * DAY; /* the CA wants it sooner (e.g. a revocation coming) */
    CHECK_INT(px_acme_due_ms(&s), NOW + 5 * DAY);
    s.window_at_ms = NOW + 40 * DAY; /* later than our rule: ours wins */
    CHECK_INT(px_acme_due_ms(&s), NOW + 30 * DAY);
    CHECK_INT(px_acme_window_pick(100, 200, 0), 100);
    CHECK_INT(px_acme_window_pick(100, 200, 150), 150);
    CHECK_INT(px_acme_window_pick(100, 200, 99), 199);
    CHECK_INT(px_acme_window_pick(100, 100, 7), 100);
    CHECK_INT(px_acme_window_pick(200, 100, 7), 200);
    for (uint64_t r = 0; r < 1000; r += 37) {
        int64_t t = px_acme_window_pick(NOW, NOW + DAY, r * 1234567);
        CHECK(t >= NOW && t < NOW + DAY);
    }
}

static void test_due_after_failures(void)
{
    struct px_acme_sched s = base_sched();
    s.not_after_ms = NOW + 10 * DAY; /* due */
    s.failures = 1;
    s.last_failure_ms = NOW;
    CHECK_INT(px_acme_due_ms(&s), NOW + 60000);
    s.failures = 3;
    CHECK_INT(px_acme_due_ms(&s), NOW + 240000);
    /* a failed forced renewal of a certificate not due yet is retried too */
    s = base_sched();
    s.failures = 1;
    s.last_failure_ms = NOW;
    CHECK_INT(px_acme_due_ms(&s), NOW + 60000);
    /* the backoff never exceeds check_interval */
    s.failures = 40;
    CHECK_INT(px_acme_due_ms(&s), NOW + 12 * 3600000);
}

/* ---- the manager's lineages (no CA: nothing is due to run here) ---- */

static int changed_calls;
static int on_changed(void *arg, char *err, size_t errlen)
{
    (void)arg;
    (void)err;
    (void)errlen;
    changed_calls++;
    return 0;
}

static json_t *certs(struct px_acme_manager *m)
{
    json_t *st = px_acme_manager_status(m, NULL);
    json_t *a = json_incref(json_object_get(st, "certificates"));
    json_decref(st);
    return a;
}

static const char *field(json_t *a, size_t i, const char *k)
{
    return json_string_value(json_object_get(json_array_get(a, i), k));
}

static void test_lineages(void)
{
    char dir[] = "/tmp/px-acme-mgr-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *domains[] = {"example.test", "www.example.test"};
    struct px_acme_conf conf = {
        .present = 1,
        .enabled = 1,
        .directory = "https://127.0.0.1:1/dir",
        .email = "",
        .domains = domains,
        .ndomains = 2,
        .config_dir = dir,
        .renew_before_ms = 30 * DAY,
        .check_interval_ms = 12 * 3600000,
        .retry_interval_ms = 60000,
        .hook_timeout_ms = 60000,
    };
    struct event_base *base = event_base_new();
    struct px_acme_manager_hooks hooks = {on_changed, NULL};
    char err[256];
    struct px_acme_manager *m = px_acme_manager_new(base, &conf, &hooks, err, sizeof(err));
    REQUIRE(m != NULL);
    json_t *a = certs(m);
    CHECK_INT(json_array_size(a), 1);
    CHECK_STR(field(a, 0, "name"), "example.test");
    CHECK_STR(field(a, 0, "source"), "acme");
    CHECK_STR(field(a, 0, "state"), "missing");
    CHECK_INT(json_array_size(json_object_get(json_array_get(a, 0), "wanted")), 2);
    CHECK(json_is_null(json_object_get(json_array_get(a, 0), "service")));
    json_decref(a);

    /* deploy --tls services: one lineage each, named after the first host */
    const char *h1[] = {"app.test", "api.app.test"}, *h2[] = {"blog.test"};
    struct px_acme_service svcs[] = {{"app", h1, 2}, {"blog", h2, 1}};
    px_acme_manager_set_services(m, svcs, 2);
    a = certs(m);
    CHECK_INT(json_array_size(a), 3);
    CHECK_STR(field(a, 0, "name"), "example.test"); /* [acme]'s first */
    CHECK_STR(field(a, 1, "name"), "app.test");
    CHECK_STR(field(a, 1, "service"), "app");
    CHECK_STR(field(a, 2, "name"), "blog.test");
    json_decref(a);

    /* a service that shares the [acme] lineage's name adds its hosts to it */
    const char *h3[] = {"example.test", "shop.example.test"};
    struct px_acme_service svcs2[] = {{"blog", h2, 1}, {"shop", h3, 2}};
    px_acme_manager_set_services(m, svcs2, 2);
    a = certs(m);
    CHECK_INT(json_array_size(a), 2); /* app.test is gone */
    CHECK_STR(field(a, 0, "name"), "example.test");
    CHECK_INT(json_array_size(json_object_get(json_array_get(a, 0), "wanted")), 3);
    CHECK_STR(field(a, 1, "name"), "blog.test");
    json_decref(a);

    /* a reload without domains: only the services' lineages remain */
    conf.ndomains = 0;
    px_acme_manager_reconfigure(m, &conf);
    a = certs(m);
    CHECK_INT(json_array_size(a), 2);
    CHECK_STR(field(a, 0, "name"), "example.test"); /* now the shop service's */
    CHECK_STR(field(a, 0, "service"), "shop");
    CHECK_INT(json_array_size(json_object_get(json_array_get(a, 0), "wanted")), 2);
    json_decref(a);
    CHECK_INT(changed_calls, 0); /* nothing on disk, nothing served: no swap */
    CHECK_INT(px_acme_manager_served(m), 0);

    px_acme_manager_free(m);
    event_base_free(base);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(void)
{
    UNIT_RUN(test_backoff);
    UNIT_RUN(test_due_by_expiry);
    UNIT_RUN(test_due_by_window);
    UNIT_RUN(test_due_after_failures);
    UNIT_RUN(test_lineages);
    return unit_report();
}
