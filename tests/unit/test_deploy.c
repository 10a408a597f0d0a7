/* Unit tests: the deploy phases of px/deploy.h (health wait, warm, switch,
 * drain, drain_timeout and the cut, deploy_timeout, rollback) driven by a
 * fake clock and fake health results, without a socket or a running event
 * loop. deploy.c is included with px_now_ms and px_health_new/free renamed
 * to the fakes below (nothing in deploy.c changes for it); the op's timer
 * is fired by hand (on_timer), as libevent would at its deadline. */
#define px_now_ms fake_now_ms
#define px_health_new fake_health_new
#define px_health_free fake_health_free
#include "../../proxy/deploy.c"
#undef px_now_ms
#undef px_health_new
#undef px_health_free

#include <unistd.h>

#include "unit.h"

/* ---- the fakes ---- */

static uint64_t fake_now = 5000000; /* ms */

uint64_t fake_now_ms(void)
{
    return fake_now;
}

struct px_health {
    char addr[128], path[128];
    px_health_cb cb;
    void *arg;
    int live;
};

#define MAX_CHECKS 8
static struct px_health checks[MAX_CHECKS];
static int nchecks;

struct px_health *fake_health_new(struct event_base *base, const struct px_addr *addr, const char *path,
                                  uint64_t interval_ms, uint64_t timeout_ms, px_health_cb cb, void *arg)
{
    if (nchecks == MAX_CHECKS)
        return NULL;
    struct px_health *h = &checks[nchecks++];
    snprintf(h->addr, sizeof(h->addr), "%s", addr->text);
    snprintf(h->path, sizeof(h->path), "%s", path);
    h->cb = cb;
    h->arg = arg;
    h->live = 1;
    return h;
}

void fake_health_free(struct px_health *h)
{
    if (h)
        h->live = 0;
}

static int live_checks(void)
{
    int n = 0;
    for (int i = 0; i < nchecks; i++)
        n += checks[i].live;
    return n;
}

/* The checker of addr reports a result, as health.c would after a GET. */
static void health_result(struct px_health *h, int pass, const char *reason)
{
    struct px_health_result r = {.pass = pass, .status = pass ? 200 : 0, .reason = reason};
    h->cb(h->arg, &r);
}

/* ---- what the deployer reports ---- */

#define MAX_MSGS 32
static struct px_wmsg sent[MAX_MSGS];
static int nsent, npublished, ndone;
static enum px_err done_code;
static char done_msg[256], last_progress[256];
static struct px_deploy_result done_res;
static char done_active[64], done_previous[64];

static void on_published(void *arg)
{
    npublished++;
}

static void on_broadcast(void *arg, const struct px_wmsg *m)
{
    if (nsent < MAX_MSGS)
        sent[nsent++] = *m;
}

static void on_progress(void *arg, const char *text)
{
    snprintf(last_progress, sizeof(last_progress), "%s", text);
}

static void on_done(void *arg, enum px_err code, const char *message, const struct px_deploy_result *res)
{
    ndone++;
    done_code = code;
    snprintf(done_msg, sizeof(done_msg), "%s", message ? message : "");
    memset(&done_res, 0, sizeof(done_res));
    done_active[0] = done_previous[0] = '\0';
    if (res) {
        done_res = *res;
        snprintf(done_active, sizeof(done_active), "%s", res->nactive ? res->active[0] : "");
        snprintf(done_previous, sizeof(done_previous), "%s", res->nprevious ? res->previous[0] : "");
    }
}

static int count_sent(enum px_wmsg_type type, uint32_t target_id)
{
    int n = 0;
    for (int i = 0; i < nsent; i++)
        n += sent[i].type == type && (type == PX_WM_WARM_TARGET ? sent[i].u.warm.target_id : sent[i].u.target.id) == target_id;
    return n;
}

/* ---- the world: a published snapshot with [service web] on OLD ---- */

#define OLD "127.0.0.1:7001"
#define NEW "127.0.0.1:7002"

static struct event_base *base;
static struct px_deployer *dep;
static char dir[64], state_path[128];

static int setup(void)
{
    char err[512];
    struct px_config *cfg = NULL;
    nchecks = nsent = npublished = ndone = 0;
    last_progress[0] = '\0';
    snprintf(dir, sizeof(dir), "/tmp/px-test-deploy-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        dir[0] = '\0';
        return -1;
    }
    snprintf(state_path, sizeof(state_path), "%s/state.json", dir);
    if (px_config_load_string("[proxy]\nlisten_http = 127.0.0.1:0\n[service web]\ntargets = " OLD "\n", "t.ini",
                              &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    struct px_routes *r = px_routes_build(cfg, NULL, err, sizeof(err));
    if (r == NULL) {
        fprintf(stderr, "routes: %s\n", err);
        return -1;
    }
    px_routes_publish(r);
    base = event_base_new();
    struct px_deploy_hooks hooks = {.published = on_published, .broadcast = on_broadcast};
    dep = base ? px_deployer_new(base, state_path, &hooks, err, sizeof(err)) : NULL;
    return dep ? 0 : -1;
}

static void teardown(void)
{
    px_deployer_free(dep);
    dep = NULL;
    px_routes_shutdown();
    if (base)
        event_base_free(base);
    base = NULL;
    if (dir[0]) {
        unlink(state_path);
        rmdir(dir);
    }
    dir[0] = '\0';
}

/* The target the published snapshot serves for web ("" when none). */
static const char *serving(void)
{
    const struct px_routes *r = px_routes_peek();
    const struct px_service *s = r ? px_services_find(px_routes_services(r), "web") : NULL;
    return s && s->ntargets ? s->targets[0]->addr.text : "";
}

static struct px_target *target(const char *hostport)
{
    struct px_addr a;
    if (px_addr_parse(hostport, &a) != NULL)
        return NULL;
    return px_target_acquire(&a); /* the registry's one object for it */
}

static void deploy_new(uint64_t drain_timeout_ms)
{
    static const char *const targets[] = {NEW};
    struct px_deploy_spec q = {.service = "web", .targets = targets, .ntargets = 1,
                               .deploy_timeout_ms = 30000, .drain_timeout_ms = drain_timeout_ms};
    px_deploy(dep, &q, on_progress, on_done, NULL);
}

/* libevent's part: the op's timer reaches its deadline. */
static void fire(void)
{
    if (dep->ops)
        on_timer(-1, EV_TIMEOUT, dep->ops);
}

/* ---- tests ---- */

/* Health wait: a failing check changes nothing; the first pass warms the
 * new target, the timer switches (state file, publish, DRAIN_TARGET and
 * CLOSE_TUNNELS for the old one); the deploy answers when the old target's
 * last request ends, before drain_timeout. */
static void test_health_wait_switch_drain(void)
{
    REQUIRE_ELSE(setup() == 0, teardown());
    struct px_target *old = target(OLD);
    REQUIRE_ELSE(old != NULL, teardown());
    px_target_load_add(old, 0, 2, 0); /* two requests in flight on the old target */
    uint64_t t0 = fake_now;
    deploy_new(10000);
    REQUIRE_ELSE(nchecks == 1 && dep->ops != NULL, (px_target_release(old), teardown()));
    CHECK_STR(checks[0].addr, NEW);
    CHECK_STR(checks[0].path, "/up");
    CHECK_INT(dep->ops->phase, PH_HEALTH);

    fake_now += 1500;
    health_result(&checks[0], 0, "connection refused");
    CHECK_INT(dep->ops->phase, PH_HEALTH);
    CHECK_INT(ndone, 0);
    CHECK_STR(serving(), OLD);

    fake_now += 1000;
    health_result(&checks[0], 1, NULL);
    CHECK_INT(dep->ops->phase, PH_WARM);
    CHECK_INT(nsent, 1);
    CHECK_INT(sent[0].type, PX_WM_WARM_TARGET);
    CHECK_STR(sent[0].u.warm.addr.text, NEW);
    CHECK_INT(sent[0].u.warm.nfrom, 1);
    CHECK_INT(sent[0].u.warm.from[0], old->id);
    CHECK_STR(serving(), OLD); /* not yet: the workers warm first */
    CHECK_INT(npublished, 0);

    fire(); /* WARM_MS later */
    CHECK_INT(npublished, 1);
    CHECK_STR(serving(), NEW);
    CHECK(access(state_path, R_OK) == 0); /* persisted before it answers */
    CHECK_INT(live_checks(), 0);
    CHECK_INT(count_sent(PX_WM_DRAIN_TARGET, old->id), 1);
    CHECK_INT(count_sent(PX_WM_CLOSE_TUNNELS, old->id), 1);
    CHECK_INT(atomic_load(&old->draining), 1);
    CHECK_STR(last_progress, "draining 2 requests");
    REQUIRE_ELSE(dep->ops != NULL, (px_target_release(old), teardown()));
    CHECK_INT(dep->ops->phase, PH_DRAIN);

    fake_now += 9999; /* one ms before drain_timeout */
    fire();
    CHECK_INT(ndone, 0);
    CHECK_INT(count_sent(PX_WM_CUT_TARGET, old->id), 0);

    px_target_load_add(old, 0, -2, 0); /* both finish */
    fire();
    CHECK_INT(ndone, 1);
    CHECK_INT(done_code, PX_E_OK);
    CHECK_STR(done_active, NEW);
    CHECK_STR(done_previous, OLD);
    CHECK_INT(done_res.drained, 2);
    CHECK_INT(done_res.cut, 0);
    CHECK_INT(done_res.duration_ms, fake_now - t0);
    CHECK(dep->ops == NULL);
    px_target_release(old);
    teardown();
}

/* drain_timeout: what still runs is cut (CUT_TARGET), and the deploy
 * answers after the workers' grace, with the count it cut. */
static void test_drain_timeout_cuts(void)
{
    REQUIRE_ELSE(setup() == 0, teardown());
    struct px_target *old = target(OLD);
    REQUIRE_ELSE(old != NULL, teardown());
    px_target_load_add(old, 1, 3, 0);
    deploy_new(10000);
    REQUIRE_ELSE(nchecks == 1, (px_target_release(old), teardown()));
    health_result(&checks[0], 1, NULL);
    fire(); /* switch */
    REQUIRE_ELSE(dep->ops != NULL && dep->ops->phase == PH_DRAIN, (px_target_release(old), teardown()));

    fake_now += 10000;
    fire();
    CHECK_INT(count_sent(PX_WM_CUT_TARGET, old->id), 1);
    CHECK_STR(last_progress, "drain_timeout: cutting 3 requests still running");
    CHECK_INT(ndone, 0);
    REQUIRE_ELSE(dep->ops != NULL, (px_target_release(old), teardown()));
    CHECK_INT(dep->ops->phase, PH_CUT);

    fake_now += CUT_GRACE_MS - 1;
    fire();
    CHECK_INT(ndone, 0);
    fake_now += 1; /* the workers never reported: it answers anyway */
    fire();
    CHECK_INT(ndone, 1);
    CHECK_INT(done_code, PX_E_OK);
    CHECK_INT(done_res.drained, 3);
    CHECK_INT(done_res.cut, 3);
    CHECK_INT(count_sent(PX_WM_CUT_TARGET, old->id), 1);
    px_target_load_add(old, 1, -3, 0);
    px_target_release(old);
    teardown();
}

/* deploy_timeout: the new target never passed; nothing changed, and the
 * message names the target, its last failure and the fake time waited. */
static void test_deploy_timeout(void)
{
    REQUIRE_ELSE(setup() == 0, teardown());
    deploy_new(10000);
    REQUIRE_ELSE(nchecks == 1, teardown());
    fake_now += 1000;
    health_result(&checks[0], 0, "connection refused");
    fake_now += 29000;
    fire();
    CHECK_INT(ndone, 1);
    CHECK_INT(done_code, PX_E_HEALTH_CHECK_FAILED);
    CHECK_STR(done_msg, NEW " /up: connection refused after 30s");
    CHECK_INT(npublished, 0);
    CHECK_INT(nsent, 0);
    CHECK_STR(serving(), OLD);
    CHECK(access(state_path, F_OK) != 0); /* nothing persisted */
    CHECK_INT(live_checks(), 0);
    CHECK(dep->ops == NULL);
    teardown();
}

/* A second deploy of the service while one waits is refused with busy. */
static void test_busy(void)
{
    REQUIRE_ELSE(setup() == 0, teardown());
    deploy_new(10000);
    REQUIRE_ELSE(dep->ops != NULL, teardown());
    deploy_new(10000);
    CHECK_INT(ndone, 1);
    CHECK_INT(done_code, PX_E_BUSY);
    CHECK(dep->ops != NULL); /* the first goes on */
    teardown();
}

/* Rollback: nothing to go back to before a deploy; after one, the previous
 * target is health-checked, switched to and the deployed one drained. */
static void test_rollback(void)
{
    REQUIRE_ELSE(setup() == 0, teardown());
    px_rollback(dep, "web", 5000, on_progress, on_done, NULL);
    CHECK_INT(ndone, 1);
    CHECK_INT(done_code, PX_E_NO_PREVIOUS);
    px_rollback(dep, "nope", 5000, on_progress, on_done, NULL);
    CHECK_INT(ndone, 2);
    CHECK_INT(done_code, PX_E_UNKNOWN_SERVICE);

    deploy_new(10000);
    REQUIRE_ELSE(nchecks == 1, teardown());
    health_result(&checks[0], 1, NULL);
    fire();
    CHECK_INT(ndone, 3);
    CHECK_INT(done_code, PX_E_OK); /* nothing in flight: no drain wait */
    CHECK_STR(serving(), NEW);

    struct px_target *newt = target(NEW);
    REQUIRE_ELSE(newt != NULL, teardown());
    px_target_load_add(newt, 0, 1, 1); /* a request and a tunnel */
    nsent = 0;
    px_rollback(dep, "web", 5000, on_progress, on_done, NULL);
    REQUIRE_ELSE(nchecks == 2, (px_target_release(newt), teardown()));
    CHECK_STR(checks[1].addr, OLD);
    CHECK_STR(checks[1].path, "/up");
    health_result(&checks[1], 1, NULL);
    fire();
    CHECK_STR(serving(), OLD);
    CHECK_INT(count_sent(PX_WM_DRAIN_TARGET, newt->id), 1);
    CHECK_INT(count_sent(PX_WM_CLOSE_TUNNELS, newt->id), 1);
    CHECK_INT(ndone, 3);
    px_target_load_add(newt, 0, -1, -1);
    fire();
    CHECK_INT(ndone, 4);
    CHECK_INT(done_code, PX_E_OK);
    CHECK_STR(done_active, OLD);
    CHECK_STR(done_previous, NEW);
    CHECK_INT(done_res.drained, 2);
    CHECK_INT(done_res.cut, 0);
    px_target_release(newt);
    teardown();
}

/* Shutdown before the switch abandons the deploy: nothing changes. */
static void test_shutdown_before_switch(void)
{
    REQUIRE_ELSE(setup() == 0, teardown());
    deploy_new(10000);
    REQUIRE_ELSE(nchecks == 1, teardown());
    px_deployer_shutdown(dep);
    CHECK_INT(ndone, 1);
    CHECK_INT(done_code, PX_E_SHUTTING_DOWN);
    CHECK_STR(serving(), OLD);
    CHECK_INT(npublished, 0);
    CHECK_INT(live_checks(), 0);
    deploy_new(10000);
    CHECK_INT(ndone, 2);
    CHECK_INT(done_code, PX_E_SHUTTING_DOWN);
    teardown();
}

int main(void)
{
    UNIT_RUN(test_health_wait_switch_drain);
    UNIT_RUN(test_drain_timeout_cuts);
    UNIT_RUN(test_deploy_timeout);
    UNIT_RUN(test_busy);
    UNIT_RUN(test_rollback);
    UNIT_RUN(test_shutdown_before_switch);
    return unit_report();
}
