/* Unit tests: target choice (least outstanding, round robin, passive and
 * active health, draining) and the per-worker keep-alive pool. Includes
 * the upstream module's files to reach their statics. */
#include "../../proxy/balancer.c"
#include "../../proxy/pool.c"
#include "../../proxy/upstream.c"

#include <unistd.h>

#include <arpa/inet.h>

#include "px/log.h"
#include "unit.h"

#define LRU(node) px_list_entry(node, struct px_uconn, lru)

static struct px_worker w;
static const struct px_service *svc;

static const char *extra_proxy = ""; /* more [proxy] lines for the next setup() */

static int setup(const char *targets)
{
    char ini[512], err[256];
    snprintf(ini, sizeof(ini), "[proxy]\nlisten_http = 127.0.0.1:0\n%s[service s]\ntargets = %s\n", extra_proxy,
             targets);
    struct px_config *cfg = NULL;
    if (px_config_load_string(ini, "t.ini", &cfg, err, sizeof(err)) < 0)
        return -1;
    struct px_routes *r = px_routes_build(cfg, NULL, err, sizeof(err));
    if (r == NULL)
        return -1;
    px_routes_publish(r);
    if (px_worker_init(&w, 0, px_worker_modules, px_worker_nmodules, err, sizeof(err)) < 0)
        return -1;
    svc = px_routes_match(w.routes, NULL, 0, "/", 1);
    return svc ? 0 : -1;
}

static void teardown(void)
{
    px_worker_free(&w);
    px_routes_shutdown();
}

/* A loopback listener (connections complete in its backlog) as the one
 * target of the service. Returns its fd. */
static int setup_listening(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(lfd, (struct sockaddr *)&sa, sizeof(sa));
    listen(lfd, 8);
    socklen_t sl = sizeof(sa);
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    char targets[64];
    snprintf(targets, sizeof(targets), "127.0.0.1:%u", ntohs(sa.sin_port));
    CHECK_INT(setup(targets), 0);
    return lfd;
}

/* The head upstream.c (write_head) sends: a POST with a 400000-byte body. */
static struct px_req_head fake_q = {
    .method = "POST", .method_len = 4, .method_id = PX_METHOD_POST,
    .target = "/", .target_len = 1, .path = "/", .path_len = 1,
    .minor_version = 1, .host = "t", .host_len = 1, .content_length = 400000,
    .nheaders = 2,
    .headers = {{"Host", 4, "t", 1}, {"Content-Length", 14, "400000", 6}},
};

static struct px_req req(void)
{
    struct px_req r;
    memset(&r, 0, sizeof(r));
    r.w = &w;
    r.svc = svc;
    r.method = PX_METHOD_GET;
    r.q = &fake_q;
    r.head_bound = 128;
    r.peer_ip = "127.0.0.1";
    r.peer_ip_len = 9;
    return r;
}

static void test_least_outstanding(void)
{
    REQUIRE_OK(setup("127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003"));
    REQUIRE(svc != NULL);
    struct px_req r = req();
    px_pool_of(&w, svc->targets[0])->outstanding = 3;
    px_pool_of(&w, svc->targets[1])->outstanding = 1;
    px_pool_of(&w, svc->targets[2])->outstanding = 2;
    for (int i = 0; i < 10; i++)
        CHECK(px_balancer_pick(&r, NULL) == svc->targets[1]);
    CHECK(px_balancer_pick(&r, svc->targets[1]) == svc->targets[2]); /* excluded: next best */
    teardown();
}

static void test_round_robin_on_ties(void)
{
    REQUIRE_OK(setup("127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003"));
    REQUIRE(svc != NULL);
    struct px_req r = req();
    int seen[3] = {0, 0, 0};
    for (int i = 0; i < 30; i++) {
        struct px_target *t = px_balancer_pick(&r, NULL);
        for (int k = 0; k < 3; k++)
            if (t == svc->targets[k])
                seen[k]++;
    }
    CHECK_INT(seen[0], 10);
    CHECK_INT(seen[1], 10);
    CHECK_INT(seen[2], 10);
    teardown();
}

static void test_health_and_draining(void)
{
    REQUIRE_OK(setup("127.0.0.1:7001 127.0.0.1:7002"));
    REQUIRE(svc != NULL);
    struct px_req r = req();
    atomic_store(&svc->targets[0]->healthy, 0);
    for (int i = 0; i < 4; i++)
        CHECK(px_balancer_pick(&r, NULL) == svc->targets[1]);
    atomic_store(&svc->targets[0]->healthy, 1);
    atomic_store(&svc->targets[1]->draining, 1);
    for (int i = 0; i < 4; i++)
        CHECK(px_balancer_pick(&r, NULL) == svc->targets[0]);
    /* only a draining one left: it still serves (a request routed on the
     * snapshot a deploy just replaced), rather than a 503 */
    atomic_store(&svc->targets[0]->healthy, 0);
    CHECK(px_balancer_pick(&r, NULL) == svc->targets[1]);
    atomic_store(&svc->targets[1]->healthy, 0);
    CHECK(px_balancer_pick(&r, NULL) == NULL); /* none healthy: 503 */
    teardown();
}

static void test_passive_down(void)
{
    REQUIRE_OK(setup("127.0.0.1:7001 127.0.0.1:7002"));
    REQUIRE(svc != NULL);
    struct px_req r = req();
    px_pool_of(&w, svc->targets[0])->down_until_ms = px_now_ms() + 60000;
    px_pool_of(&w, svc->targets[1])->outstanding = 5;
    for (int i = 0; i < 4; i++)
        CHECK(px_balancer_pick(&r, NULL) == svc->targets[1]);
    /* all down: still try one rather than fail */
    px_pool_of(&w, svc->targets[1])->down_until_ms = px_now_ms() + 60000;
    CHECK(px_balancer_pick(&r, NULL) != NULL);
    /* expired: usable again */
    px_pool_of(&w, svc->targets[0])->down_until_ms = px_now_ms() - 1;
    CHECK(px_balancer_pick(&r, NULL) == svc->targets[0]);
    CHECK_INT(px_pool_of(&w, svc->targets[0])->down_until_ms, 0);
    teardown();
}

static void test_pool_growth(void)
{
    REQUIRE_OK(setup("127.0.0.1:7001"));
    REQUIRE(svc != NULL);
    struct px_target fake;
    memset(&fake, 0, sizeof(fake));
    fake.id = 1000;
    struct px_upool *p = px_pool_of(&w, &fake);
    CHECK(p != NULL);
    CHECK(w.up.npools > 1000);
    CHECK_INT(p->nidle, 0);
    CHECK_INT(p->outstanding, 0);
    CHECK(px_pool_of(&w, svc->targets[0]) == &w.up.pools[svc->targets[0]->id]);
    teardown();
}

/* A finished keep-alive connection goes back to the pool and is reused. */
static void test_pool_reuse(void)
{
    int lfd = setup_listening();
    REQUIRE_ELSE(svc != NULL, close(lfd));
    struct px_req r = req();
    int err = 0;
    CHECK_INT(attach(&r, svc->targets[0], &err), 0);
    struct px_uconn *u = r.up;
    CHECK(u != NULL && !u->reused);
    CHECK_INT(w.up.pools[svc->targets[0]->id].outstanding, 1);
    u->state = U_BUSY;
    detach_count(&r);
    r.up = NULL;
    px_pool_release(u, 1);
    CHECK_INT(w.up.pools[svc->targets[0]->id].nidle, 1);
    CHECK_INT(w.up.pools[svc->targets[0]->id].outstanding, 0);
    struct px_req r2 = req();
    CHECK_INT(attach(&r2, svc->targets[0], &err), 0);
    CHECK(r2.up == u);
    CHECK(u->reused);
    CHECK_INT(w.up.pools[svc->targets[0]->id].nidle, 0);
    /* not reusable (e.g. Connection: close): closed, not pooled */
    u->state = U_BUSY;
    detach_count(&r2);
    px_pool_release(u, 0);
    CHECK_INT(w.up.pools[svc->targets[0]->id].nidle, 0);
    teardown();
    close(lfd);
}

/* The upstream closed an idle pooled connection in the same epoll batch
 * that brought the request about to use it: its event is active, its
 * callback has not run (nothing marked the socket). The pool must look
 * before reusing it, and connect anew instead (a POST on it would get 502). */
static void test_pool_skips_closed_idle(void)
{
    int lfd = setup_listening();
    REQUIRE_ELSE(svc != NULL, close(lfd));
    struct px_req r = req();
    int err = 0;
    REQUIRE_ELSE(attach(&r, svc->targets[0], &err) == 0, teardown(); close(lfd));
    struct px_uconn *u = r.up;
    int sfd = accept(lfd, NULL, NULL);
    REQUIRE_ELSE(sfd >= 0, teardown(); close(lfd));
    u->state = U_BUSY;
    detach_count(&r);
    r.up = NULL;
    px_pool_release(u, 1);
    CHECK_INT(u->state, U_IDLE);
    close(sfd); /* the upstream closes it: the FIN is in u's socket */
    CHECK(!u->s.rdhup && !u->s.eof);
    event_active(&u->s.ev, EV_READ | EV_CLOSED, 1); /* as epoll reported it, callback pending */
    struct px_req r2 = req();
    CHECK_INT(attach(&r2, svc->targets[0], &err), 0);
    CHECK(r2.up != NULL && r2.up != u);
    CHECK(r2.up == NULL || !r2.up->reused);
    CHECK_INT(u->state, U_DEAD);
    CHECK_INT(w.up.nidle, 0);
    if (r2.up) {
        detach_count(&r2);
        px_uconn_close(r2.up);
    }
    teardown();
    close(lfd);
}

static int listener(unsigned *port)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(lfd, (struct sockaddr *)&sa, sizeof(sa));
    listen(lfd, 8);
    socklen_t sl = sizeof(sa);
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    *port = ntohs(sa.sin_port);
    return lfd;
}

static struct px_uconn *busy_conn(struct px_req *r, const struct px_target *t)
{
    int err = 0;
    *r = req();
    if (attach(r, (struct px_target *)t, &err) < 0)
        return NULL;
    struct px_uconn *u = r->up;
    u->state = U_BUSY;
    detach_count(r);
    r->up = NULL;
    return u;
}

/* upstream_keepalive bounds the worker's idle connections, all targets
 * together: a connection released into a full pool closes the one idle the
 * longest, whichever target it belongs to. */
static void test_pool_bound(void)
{
    unsigned pa, pb;
    int la = listener(&pa), lb = listener(&pb);
    char targets[64];
    snprintf(targets, sizeof(targets), "127.0.0.1:%u 127.0.0.1:%u", pa, pb);
    extra_proxy = "upstream_keepalive = 2\n";
    int rc = setup(targets);
    extra_proxy = "";
    REQUIRE_ELSE(rc == 0, (close(la), close(lb)));
    const struct px_target *a = svc->targets[0], *b = svc->targets[1];
    struct px_req r1, r2, r3, r4;
    struct px_uconn *u1 = busy_conn(&r1, a), *u2 = busy_conn(&r2, b), *u3 = busy_conn(&r3, a);
    REQUIRE_ELSE(u1 && u2 && u3, (teardown(), close(la), close(lb)));
    px_pool_release(u1, 1);
    px_pool_release(u2, 1);
    CHECK_INT(w.up.nidle, 2);
    CHECK_INT(w.up.idle_evicted, 0);
    px_pool_release(u3, 1); /* full: u1, idle the longest, goes */
    CHECK_INT(w.up.nidle, 2);
    CHECK_INT(w.up.idle_evicted, 1);
    CHECK_INT(u1->state, U_DEAD);
    CHECK_INT(u2->state, U_IDLE);
    CHECK_INT(u3->state, U_IDLE);
    CHECK_INT(w.up.pools[a->id].nidle, 1);
    CHECK_INT(w.up.pools[b->id].nidle, 1);
    CHECK(LRU(px_list_first(&w.up.lru)) == u3 && LRU(px_list_last(&w.up.lru)) == u2);
    /* taking one out of the pool takes it off the worker's list too */
    CHECK(busy_conn(&r4, b) == u2);
    CHECK_INT(w.up.nidle, 1);
    CHECK(LRU(px_list_first(&w.up.lru)) == u3 && LRU(px_list_last(&w.up.lru)) == u3);
    px_uconn_close(u2);
    teardown();
    close(la);
    close(lb);
}

/* ---- a request body that outruns a connecting upstream ---- */

static int resumed, errors;

static void fake_respond(struct px_req *r, int status, const char *body, size_t len,
                         const struct px_h1_header *extra, size_t nextra)
{
}
static void fake_proceed(struct px_req *r) {}
static int fake_resp_head(struct px_req *r, const struct px_h1_response *resp, size_t n, int *pt)
{
    *pt = 1;
    return 0;
}
static int fake_resp_body(struct px_req *r, struct evbuffer *src, size_t len)
{
    evbuffer_drain(src, len);
    return 0;
}
static void fake_resp_end(struct px_req *r, int ok) {}
static void fake_resp_error(struct px_req *r, int status) { errors++; }
static void fake_body_resume(struct px_req *r) { resumed++; }
static void fake_upgraded(struct px_req *r) {}
static const struct px_down_ops fake_ops = {
    .respond = fake_respond,
    .proceed = fake_proceed,
    .resp_head = fake_resp_head,
    .resp_body = fake_resp_body,
    .resp_end = fake_resp_end,
    .resp_error = fake_resp_error,
    .body_resume = fake_body_resume,
    .upgraded = fake_upgraded,
};

static void test_body_resumes_after_connect(void)
{
    int lfd = setup_listening();
    REQUIRE_ELSE(svc != NULL, close(lfd));
    struct px_req r = req();
    r.ops = &fake_ops;
    r.method = PX_METHOD_POST;
    r.has_body = 1;
    resumed = errors = 0;
    CHECK_INT(px_upstream_start(&r), 0);
    CHECK(r.up != NULL);
    /* the body arrives before the connect completes: more than the watermark */
    struct evbuffer *src = evbuffer_new();
    char chunk[4096];
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 100; i++)
        evbuffer_add(src, chunk, sizeof(chunk));
    if (r.up->state == U_CONNECTING)
        CHECK_INT(px_upstream_body(&r, src, evbuffer_get_length(src), 0), 1);
    else
        px_upstream_body(&r, src, evbuffer_get_length(src), 0);
    for (int i = 0; i < 50 && resumed == 0 && r.up && r.up->body_paused; i++)
        event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK(r.up == NULL || !r.up->body_paused);
    CHECK_INT(errors, 0);
    px_upstream_abort(&r);
    evbuffer_free(src);
    teardown();
    close(lfd);
}

static uint32_t idle_answers, idle_target;

static void on_answer(void *arg, const struct px_wmsg *m)
{
    if (m->type == PX_WA_TARGET_IDLE) {
        idle_answers++;
        idle_target = m->u.target.id;
    }
}

/* A draining target answers the main thread (no poll): once when the
 * worker sees the drain, and again when its last request on it ends. */
static void test_drain_answers_the_main_thread(void)
{
    int lfd = setup_listening();
    if (!svc) {
        close(lfd);
        return;
    }
    struct event_base *main_base = event_base_new();
    struct px_worker_answers *a = px_worker_answers_new(main_base, on_answer, NULL);
    CHECK(a != NULL);
    px_worker_set_answers(&w, a);
    idle_answers = idle_target = 0;
    struct px_target *t = svc->targets[0];
    struct px_req r = req();
    r.ops = &fake_ops;
    int err = 0;
    CHECK_INT(attach(&r, t, &err), 0);
    atomic_store(&t->draining, 1);
    struct px_wmsg m = {.type = PX_WM_DRAIN_TARGET, .u.target.id = t->id};
    CHECK_INT(px_worker_send(&w, &m), 0);
    for (int i = 0; i < 10; i++)
        event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    for (int i = 0; i < 10 && idle_answers < 1; i++)
        event_base_loop(main_base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK_INT(idle_answers, 1); /* seen; one request still in flight */
    CHECK_INT(idle_target, t->id);
    uint32_t inflight = 0;
    px_target_inflight(t, &inflight, NULL);
    CHECK_INT(inflight, 1);
    struct px_uconn *u = r.up;
    u->state = U_BUSY;
    detach_count(&r); /* the request ends: nothing left on t */
    r.up = NULL;
    px_uconn_close(u);
    for (int i = 0; i < 10 && idle_answers < 2; i++)
        event_base_loop(main_base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK_INT(idle_answers, 2);
    px_target_inflight(t, &inflight, NULL);
    CHECK_INT(inflight, 0);
    atomic_store(&t->draining, 0);
    px_worker_set_answers(&w, NULL);
    teardown();
    px_worker_answers_free(a);
    event_base_free(main_base);
    close(lfd);
}

/* A retiring target: idle pooled connections close on the worker's message,
 * busy ones when their response ends, and its in-flight count follows. */
static void test_draining_target(void)
{
    int lfd = setup_listening();
    REQUIRE_ELSE(svc != NULL, close(lfd));
    struct px_target *t = svc->targets[0];
    struct px_req r = req();
    r.ops = &fake_ops;
    int err = 0;
    CHECK_INT(attach(&r, t, &err), 0);
    uint32_t inflight = 9;
    px_target_inflight(t, &inflight, NULL);
    CHECK_INT(inflight, 1);
    struct px_uconn *u = r.up;
    u->state = U_BUSY;
    detach_count(&r);
    r.up = NULL;
    px_pool_release(u, 1);
    px_target_inflight(t, &inflight, NULL);
    CHECK_INT(inflight, 0);
    CHECK_INT(w.up.pools[t->id].nidle, 1);
    /* the control plane marks the target draining and tells the worker */
    atomic_store(&t->draining, 1);
    struct px_wmsg m = {.type = PX_WM_DRAIN_TARGET, .u.target.id = t->id};
    CHECK_INT(px_worker_send(&w, &m), 0);
    for (int i = 0; i < 50 && w.up.pools[t->id].nidle; i++)
        event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK_INT(w.up.pools[t->id].nidle, 0);
    /* a busy connection to it is closed, not pooled, when its response ends */
    atomic_store(&t->draining, 0);
    struct px_req r2 = req();
    r2.ops = &fake_ops;
    CHECK_INT(attach(&r2, t, &err), 0);
    r2.up->state = U_BUSY;
    r2.resp_keepalive = 1;
    r2.body_sent = 1;
    atomic_store(&t->draining, 1);
    finish(r2.up, 1);
    CHECK_INT(w.up.pools[t->id].nidle, 0);
    px_target_inflight(t, &inflight, NULL);
    CHECK_INT(inflight, 0);
    teardown();
    close(lfd);
}

/* drain_timeout: a request still waiting on the target is answered 504
 * and its connection closed; the target's busy list and count empty out. */
static void test_cut_target(void)
{
    int lfd = setup_listening();
    REQUIRE_ELSE(svc != NULL, close(lfd));
    struct px_target *t = svc->targets[0];
    struct px_req r = req();
    r.ops = &fake_ops;
    errors = 0;
    CHECK_INT(px_upstream_start(&r), 0);
    CHECK(px_list_entry(px_list_first(&w.up.pools[t->id].busy), struct px_uconn, link) == r.up);
    struct px_wmsg m = {.type = PX_WM_CUT_TARGET, .u.target.id = t->id};
    CHECK_INT(px_worker_send(&w, &m), 0);
    for (int i = 0; i < 50 && errors == 0; i++)
        event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK_INT(errors, 1);
    CHECK(r.up == NULL);
    CHECK(px_list_empty(&w.up.pools[t->id].busy));
    uint32_t inflight = 9;
    px_target_inflight(t, &inflight, NULL);
    CHECK_INT(inflight, 0);
    teardown();
    close(lfd);
}

/* A deploy warms the new target: the worker opens connections that join
 * its pool as idle once connected: its peak concurrency on the targets the
 * deploy replaces, shared among the new targets, plus one. */
static void test_warm_target(void)
{
    int lfd = setup_listening();
    REQUIRE_ELSE(svc != NULL, close(lfd));
    struct px_target *t = svc->targets[0];
    /* a made-up old target this worker had 4 requests on at once */
    struct px_target old = {.id = t->id + 1};
    struct px_upool *op = px_pool_of(&w, &old);
    REQUIRE_ELSE(op != NULL, (teardown(), close(lfd)));
    op->peak = 4;
    struct px_wmsg m = {.type = PX_WM_WARM_TARGET,
                        .u.warm = {.target_id = t->id, .addr = t->addr, .count = 2, .from = {old.id}, .nfrom = 1}};
    CHECK_INT(px_worker_send(&w, &m), 0); /* 4 shared by 2 new targets, plus one: 3 */
    for (int i = 0; i < 100 && (t->id >= w.up.npools || w.up.pools[t->id].nidle < 3); i++)
        event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    REQUIRE_ELSE(t->id < w.up.npools, (teardown(), close(lfd)));
    CHECK_INT(w.up.pools[t->id].nidle, 3);
    CHECK_INT(w.up.pools[t->id].warming, 0);
    CHECK_INT(w.up.pools[old.id].peak, 0); /* the old pool's peak restarts */
    w.up.pools[old.id].peak = 4;
    CHECK_INT(px_worker_send(&w, &m), 0); /* already warm: nothing more */
    for (int i = 0; i < 10; i++)
        event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK_INT(w.up.pools[t->id].nidle, 3);
    /* warmed connections never used do not count: the new pool's peak is 0,
     * so warming back from it asks for one connection only */
    CHECK_INT(w.up.pools[t->id].peak, 0);
    struct px_req r = req();
    int err = 0;
    CHECK_INT(attach(&r, t, &err), 0);
    CHECK(r.up != NULL && r.up->reused); /* the first request takes a warm one */
    CHECK_INT(w.up.pools[t->id].peak, 1);
    px_upstream_abort(&r);
    teardown();
    close(lfd);
}

int main(void)
{
    px_log_open("/dev/null", "off", NULL, 0);
    px_routes_set_nworkers(1);
    UNIT_RUN(test_least_outstanding);
    UNIT_RUN(test_round_robin_on_ties);
    UNIT_RUN(test_health_and_draining);
    UNIT_RUN(test_passive_down);
    UNIT_RUN(test_pool_growth);
    UNIT_RUN(test_pool_reuse);
    UNIT_RUN(test_pool_bound);
    UNIT_RUN(test_pool_skips_closed_idle);
    UNIT_RUN(test_body_resumes_after_connect);
    UNIT_RUN(test_draining_target);
    UNIT_RUN(test_drain_answers_the_main_thread);
    UNIT_RUN(test_cut_target);
    UNIT_RUN(test_warm_target);
    px_log_close();
    return unit_report();
}
