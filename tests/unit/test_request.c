/* Unit tests: the request pipeline -- a request parked on a paused service
 * times out with 504, resumes when the pause ends, and leaves the park
 * cleanly when its client goes away; the forwarding prologue joins repeated
 * X-Forwarded-For fields and keeps a 64-character X-Request-ID. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <unistd.h>

#include "px/common.h"
#include "px/config.h"
#include "px/limit.h"
#include "px/log.h"
#include "px/request.h"
#include "px/routes.h"
#include "px/worker.h"
#include "unit.h"

static struct px_worker w;
static struct px_service *svc; /* the test flips its state, as a control command will */
static int lfd = -1;

static int responded, proceeded, last_status;
static char last_extra[128]; /* "Name: value" of the first extra header, or "" */

static void fake_respond(struct px_req *r, int status, const char *body, size_t len,
                         const struct px_h1_header *extra, size_t nextra)
{
    responded++;
    last_status = status;
    r->status = status;
    last_extra[0] = '\0';
    if (nextra)
        snprintf(last_extra, sizeof(last_extra), "%.*s: %.*s", (int)extra[0].name_len, extra[0].name,
                 (int)extra[0].value_len, extra[0].value);
}
static void fake_proceed(struct px_req *r) { proceeded++; }
static int fake_resp_head(struct px_req *r, const struct px_h1_response *resp, size_t n, int *pt) { return 0; }
static int fake_resp_body(struct px_req *r, struct evbuffer *src, size_t len) { return 0; }
static void fake_resp_end(struct px_req *r, int ok) {}
static void fake_resp_error(struct px_req *r, int status) {}
static void fake_body_resume(struct px_req *r) {}
static void fake_upgraded(struct px_req *r) {}
static const struct px_down_ops ops = {
    .respond = fake_respond,
    .proceed = fake_proceed,
    .resp_head = fake_resp_head,
    .resp_body = fake_resp_body,
    .resp_end = fake_resp_end,
    .resp_error = fake_resp_error,
    .body_resume = fake_body_resume,
    .upgraded = fake_upgraded,
};

static struct px_req_head q = {
    .method = "GET", .method_len = 3, .method_id = PX_METHOD_GET,
    .target = "/x", .target_len = 2, .path = "/x", .path_len = 2,
    .minor_version = 1, .host = "a.test", .host_len = 6, .content_length = -1,
    .nheaders = 1,
    .headers = {{"Host", 4, "a.test", 6}},
};

static const struct sockaddr_in peer = {.sin_family = AF_INET};

static struct px_req_origin origin(void)
{
    struct px_req_origin o = {
        .q = &q, .head_bound = 64, .peer = (const struct sockaddr *)&peer,
        .peer_ip = "127.0.0.1", .peer_ip_len = 9, .proto = PX_PROTO_HTTP11,
    };
    return o;
}

/* A service whose one target is a loopback listener (connects complete). */
static int setup(const char *extra_proxy)
{
    char ini[1024], err[256];
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(lfd, (struct sockaddr *)&sa, sizeof(sa));
    listen(lfd, 8);
    socklen_t sl = sizeof(sa);
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    snprintf(ini, sizeof(ini), "[proxy]\nlisten_http = 127.0.0.1:0\naccess_log = off\n%s\n[service s]\ntargets = 127.0.0.1:%u\n",
             extra_proxy, ntohs(sa.sin_port));
    struct px_config *cfg = NULL;
    if (px_config_load_string(ini, "t.ini", &cfg, err, sizeof(err)) < 0)
        return -1;
    struct px_routes *r = px_routes_build(cfg, NULL, err, sizeof(err));
    if (r == NULL)
        return -1;
    px_routes_publish(r);
    if (px_worker_init(&w, 0, px_worker_modules, px_worker_nmodules, err, sizeof(err)) < 0)
        return -1;
    svc = (struct px_service *)px_routes_match(w.routes, "a.test", 6, "/", 1);
    responded = proceeded = last_status = 0;
    last_extra[0] = '\0';
    return svc ? 0 : -1;
}

static void teardown(void)
{
    px_worker_free(&w);
    px_routes_shutdown();
    close(lfd);
    lfd = -1;
}

static void run_until(int *flag, int ms)
{
    uint64_t end = px_now_ms() + (uint64_t)ms;
    while (!*flag && px_now_ms() < end)
        event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

static void test_pause_times_out_504(void)
{
    REQUIRE_OK(setup(""));
    REQUIRE(svc != NULL);
    svc->state = PX_SVC_PAUSED;
    svc->max_pause_ms = 50;
    struct px_req r;
    memset(&r, 0, sizeof(r));
    struct px_req_origin o = origin();
    CHECK_INT(px_req_begin(&r, &w, &ops, NULL, &o), 0);
    px_req_dispatch(&r);
    CHECK(r.parked);
    CHECK_INT(px_req_parked_count(&w), 1);
    CHECK_INT(responded, 0);
    uint64_t t0 = px_now_ms();
    run_until(&responded, 2000);
    CHECK_INT(responded, 1);
    CHECK_INT(last_status, 504);
    CHECK(px_now_ms() - t0 >= 40);
    CHECK_INT(px_req_parked_count(&w), 0);
    CHECK_INT(proceeded, 0);
    px_req_finish(&r);
    px_req_release(&r);
    teardown();
}

static void test_wake_resumes_to_upstream(void)
{
    REQUIRE_OK(setup(""));
    REQUIRE(svc != NULL);
    svc->state = PX_SVC_PAUSED;
    svc->max_pause_ms = 10000;
    struct px_req r;
    memset(&r, 0, sizeof(r));
    struct px_req_origin o = origin();
    px_req_begin(&r, &w, &ops, NULL, &o);
    px_req_dispatch(&r);
    CHECK(r.parked);
    /* another service's wake leaves it parked */
    px_req_wake_service(&w, "other");
    CHECK(r.parked);
    /* the pause ends: the control plane publishes the service active, then wakes */
    svc->state = PX_SVC_ACTIVE;
    struct px_wmsg m = {.type = PX_WM_WAKE_SERVICE};
    snprintf(m.u.service.name, sizeof(m.u.service.name), "s");
    CHECK_INT(px_worker_send(&w, &m), 0);
    run_until(&proceeded, 2000);
    CHECK_INT(proceeded, 1);
    CHECK_INT(responded, 0);
    CHECK(!r.parked);
    CHECK(r.up != NULL);
    uint32_t inflight = 0;
    px_target_inflight(svc->targets[0], &inflight, NULL);
    CHECK_INT(inflight, 1);
    px_req_finish(&r); /* drops the upstream connection */
    px_target_inflight(svc->targets[0], &inflight, NULL);
    CHECK_INT(inflight, 0);
    px_req_release(&r);
    teardown();
}

static void test_client_leaves_while_parked(void)
{
    REQUIRE_OK(setup(""));
    REQUIRE(svc != NULL);
    svc->state = PX_SVC_PAUSED;
    svc->max_pause_ms = 30;
    struct px_req r;
    memset(&r, 0, sizeof(r));
    struct px_req_origin o = origin();
    px_req_begin(&r, &w, &ops, NULL, &o);
    px_req_dispatch(&r);
    CHECK_INT(px_req_parked_count(&w), 1);
    r.status = 499;
    px_req_finish(&r);
    CHECK_INT(px_req_parked_count(&w), 0);
    int never = 0;
    run_until(&never, 100); /* the park timer must not fire for a finished request */
    CHECK_INT(responded, 0);
    px_req_release(&r);
    teardown();
}

static void test_prologue_joins_xff_and_keeps_long_id(void)
{
    REQUIRE_OK(setup("trusted_proxies = 0.0.0.0/32")); /* the test peer is 0.0.0.0 */
    REQUIRE(svc != NULL);
    static const char id64[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    struct px_req_head q2 = q;
    q2.nheaders = 4;
    q2.headers[1] = (struct px_h1_header){"X-Forwarded-For", 15, "10.0.0.1", 8};
    q2.headers[2] = (struct px_h1_header){"x-forwarded-for", 15, "10.0.0.2", 8};
    q2.headers[3] = (struct px_h1_header){"X-Request-Id", 12, id64, 64};
    struct px_req r;
    memset(&r, 0, sizeof(r));
    struct px_req_origin o = origin();
    o.q = &q2;
    CHECK_INT(px_req_begin(&r, &w, &ops, NULL, &o), 0);
    CHECK_INT(r.xff_len, 18);
    CHECK(r.xff && memcmp(r.xff, "10.0.0.1, 10.0.0.2", 18) == 0);
    CHECK_STR(r.client_ip, "10.0.0.2");
    CHECK_INT(r.request_id_len, 64);
    CHECK_STR(r.request_id, id64);
    CHECK_INT(r.method, PX_METHOD_GET); /* nothing after the id was overwritten */
    px_req_finish(&r);
    px_req_release(&r);
    teardown();
}

/* One request on path through the pipeline; finished unless it parked. */
static void one(const char *path, struct px_req *r)
{
    static struct px_req_head qq;
    qq = q;
    qq.path = qq.target = path;
    qq.path_len = qq.target_len = strlen(path);
    memset(r, 0, sizeof(*r));
    struct px_req_origin o = origin();
    o.q = &qq;
    px_req_begin(r, &w, &ops, NULL, &o);
    px_req_dispatch(r);
}

static void done(struct px_req *r)
{
    px_req_finish(r);
    px_req_release(r);
}

static void test_limit_rejects_429_with_retry_after(void)
{
    REQUIRE_OK(setup("\n[limit api]\nrate = 1r/m\nburst = 1\nzone_size = 64k\n[route /api/]\nlimit = api\n"));
    REQUIRE(svc != NULL);
    struct px_req r;
    for (int i = 0; i < 2; i++) {
        one("/api/x", &r);
        CHECK_INT(proceeded, i + 1);
        CHECK(r.limited == NULL);
        done(&r);
    }
    one("/api/y?z", &r);
    CHECK_INT(responded, 1);
    CHECK_INT(last_status, 429);
    /* 1r/m leaks 16 milli-requests a second (nginx's 1000/60): a request
     * fits again after 62.5 s */
    CHECK_STR(last_extra, "Retry-After: 63");
    CHECK_STR(r.limited, "api");
    CHECK(r.svc == NULL); /* decided before the service */
    done(&r);
    /* another route, the health path: not limited */
    one("/other", &r);
    CHECK_INT(proceeded, 3);
    done(&r);
    one("/health", &r);
    CHECK_INT(last_status, 200);
    done(&r);
    teardown();
}

static void test_limit_503_has_no_retry_after(void)
{
    REQUIRE_OK(setup("\n[limit api]\nrate = 1r/m\nburst = 0\nstatus = 503\nzone_size = 64k\n[route /]\nlimit = api\n"));
    REQUIRE(svc != NULL);
    struct px_req r;
    one("/", &r);
    CHECK_INT(proceeded, 1);
    done(&r);
    one("/", &r);
    CHECK_INT(last_status, 503);
    CHECK_STR(last_extra, "");
    CHECK_STR(r.limited, "api");
    done(&r);
    teardown();
}

/* Without nodelay the burst waits its turn: parked, then on to the upstream. */
static void test_limit_delay_parks_then_proceeds(void)
{
    REQUIRE_OK(
        setup("\n[limit api]\nrate = 20r/s\nburst = 5\nnodelay = no\nzone_size = 64k\n[route /]\nlimit = api\n"));
    REQUIRE(svc != NULL);
    struct px_req a, b;
    one("/", &a);
    CHECK_INT(proceeded, 1); /* the first is not delayed */
    one("/", &b);
    CHECK(b.parked);
    CHECK_INT(b.step, PX_STEP_SERVICE);
    CHECK_INT(proceeded, 1);
    uint64_t t0 = px_now_ms();
    while (proceeded < 2 && px_now_ms() - t0 < 2000)
        event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK_INT(proceeded, 2);
    CHECK_INT(responded, 0);
    CHECK(!b.parked);
    CHECK(b.svc == svc);
    CHECK(b.limited == NULL);
    done(&a);
    done(&b);
    teardown();
}

/* A zone implementation that answers later, as a limiter shared by several
 * instances (Redis) would: check keeps the callback, the test answers. */
static struct {
    px_limit_done_fn done;
    void *arg;
    int checks, cancels, freed;
} fake;

static enum px_limit_verdict fake_check(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k,
                                        uint64_t now_ms, struct px_limit_result *res, px_limit_done_fn done_fn,
                                        void *arg)
{
    fake.checks++;
    fake.done = done_fn;
    fake.arg = arg;
    return PX_LIMIT_LATER;
}
static void fake_cancel(struct px_limit_zone *const *zones, size_t n, void *arg)
{
    if (fake.arg == arg) {
        fake.cancels++;
        fake.done = NULL;
        fake.arg = NULL;
    }
}
static size_t fake_keys(const struct px_limit_zone *z) { return 0; }
static void fake_free(void *state) { fake.freed++; }
static const struct px_limit_ops fake_ops = {
    .kind = "fake", .check = fake_check, .cancel = fake_cancel, .keys = fake_keys, .free = fake_free,
};

/* The zone of [route /] on the fake implementation. */
static int setup_later(void)
{
    memset(&fake, 0, sizeof(fake));
    if (setup("\n[limit api]\nrate = 1r/m\nburst = 0\nzone_size = 64k\n[route /]\nlimit = api\n") < 0)
        return -1;
    struct px_limit_zone *z = px_limits_find(px_routes_limits(px_routes_peek()), "api");
    if (z == NULL)
        return -1;
    px_limit_zone_set_ops(z, &fake_ops, NULL);
    return 0;
}

/* "Later", then pass: the request waits parked, neither answered nor
 * proxied, and goes on to the upstream when the answer comes. */
static void test_limit_later_parks_then_passes(void)
{
    REQUIRE_OK(setup_later());
    REQUIRE(svc != NULL);
    struct px_req r;
    one("/", &r);
    CHECK_INT(fake.checks, 1);
    CHECK(fake.arg == &r);
    CHECK(r.parked);
    CHECK_INT(px_req_parked_count(&w), 1);
    CHECK_INT(proceeded, 0);
    CHECK_INT(responded, 0);
    if (fake.done) {
        struct px_limit_result res = {.verdict = PX_LIMIT_PASS};
        fake.done(fake.arg, &res);
    }
    CHECK(!r.parked);
    CHECK_INT(px_req_parked_count(&w), 0);
    CHECK_INT(proceeded, 1);
    CHECK_INT(responded, 0);
    CHECK(r.svc == svc);
    CHECK(r.limited == NULL);
    done(&r);
    CHECK_INT(fake.cancels, 0); /* answered: nothing to cancel */
    teardown();
    CHECK_INT(fake.freed, 1);   /* the set's free went through the zone's ops */
}

/* "Later", then reject: the zone's status, as a synchronous reject. */
static void test_limit_later_rejects(void)
{
    REQUIRE_OK(setup_later());
    REQUIRE(svc != NULL);
    struct px_req r;
    one("/", &r);
    CHECK(r.parked);
    if (fake.done) {
        struct px_limit_result res = {.verdict = PX_LIMIT_REJECT, .retry_after_s = 7, .which = 0};
        fake.done(fake.arg, &res);
    }
    CHECK(!r.parked);
    CHECK_INT(responded, 1);
    CHECK_INT(last_status, 429);
    CHECK_STR(last_extra, "Retry-After: 7");
    CHECK_STR(r.limited, "api");
    CHECK_INT(proceeded, 0);
    done(&r);
    teardown();
}

/* The client leaves while the answer is pending: the answer is cancelled,
 * so it can never reach a finished request. */
static void test_limit_later_cancelled_when_client_leaves(void)
{
    REQUIRE_OK(setup_later());
    REQUIRE(svc != NULL);
    struct px_req r;
    one("/", &r);
    CHECK(r.parked);
    done(&r);
    CHECK_INT(fake.cancels, 1);
    CHECK(fake.done == NULL);
    CHECK_INT(px_req_parked_count(&w), 0);
    CHECK_INT(responded + proceeded, 0);
    teardown();
}

/* "Later" and no answer: after the bound (a second) the request goes on,
 * fail open, and the pending answer is cancelled. */
static void test_limit_later_without_answer_fails_open(void)
{
    REQUIRE_OK(setup_later());
    REQUIRE(svc != NULL);
    struct px_req r;
    one("/", &r);
    CHECK(r.parked);
    CHECK_INT(proceeded, 0);
    run_until(&proceeded, 3000);
    CHECK_INT(proceeded, 1);
    CHECK_INT(responded, 0);
    CHECK(!r.parked);
    CHECK_INT(fake.cancels, 1);
    CHECK(fake.done == NULL);
    CHECK(r.limited == NULL);
    done(&r);
    CHECK_INT(fake.cancels, 1); /* not cancelled twice */
    teardown();
}

int main(void)
{
    px_log_open("/dev/null", "off", NULL, 0);
    px_routes_set_nworkers(1);
    UNIT_RUN(test_pause_times_out_504);
    UNIT_RUN(test_wake_resumes_to_upstream);
    UNIT_RUN(test_client_leaves_while_parked);
    UNIT_RUN(test_prologue_joins_xff_and_keeps_long_id);
    UNIT_RUN(test_limit_rejects_429_with_retry_after);
    UNIT_RUN(test_limit_503_has_no_retry_after);
    UNIT_RUN(test_limit_delay_parks_then_proceeds);
    UNIT_RUN(test_limit_later_parks_then_passes);
    UNIT_RUN(test_limit_later_rejects);
    UNIT_RUN(test_limit_later_cancelled_when_client_leaves);
    UNIT_RUN(test_limit_later_without_answer_fails_open);
    px_log_close();
    return unit_report();
}
