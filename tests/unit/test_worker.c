/* Unit tests: the worker is a loop -- it hands every message to the one
 * module that owns its type, runs on_stop once for a graceful stop and
 * again (now) for a kill, refuses a module table that leaves a type without
 * an owner or gives it two; and the access log has a name for every
 * protocol and none (not "HTTP/1.1") for an unknown one. */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "px/common.h"
#include "px/config.h"
#include "px/log.h"
#include "px/request.h"
#include "px/routes.h"
#include "px/worker.h"
#include "unit.h"

static struct px_worker w;
static int got[PX_WM__COUNT], stops, kills;
static char got_name[PX_WMSG_NAME_MAX];
static uint32_t got_target;

static void fake_on_msg(struct px_worker *wk, const struct px_wmsg *m)
{
    got[m->type]++;
    if (m->type == PX_WM_WAKE_SERVICE)
        snprintf(got_name, sizeof(got_name), "%s", m->u.service.name);
    if (m->type == PX_WM_CUT_TARGET)
        got_target = m->u.target.id;
}

static void fake_on_stop(struct px_worker *wk, int now)
{
    if (now)
        kills++;
    else
        stops++;
}

#define ALL_TYPES                                                                                          \
    (PX_WM_BIT(PX_WM_RELOAD) | PX_WM_BIT(PX_WM_DRAIN_TARGET) | PX_WM_BIT(PX_WM_CLOSE_TUNNELS) |           \
     PX_WM_BIT(PX_WM_WAKE_SERVICE) | PX_WM_BIT(PX_WM_CUT_TARGET) | PX_WM_BIT(PX_WM_WARM_TARGET))

static const struct px_worker_module fake_all = {
    .name = "fake", .msgs = ALL_TYPES, .on_msg = fake_on_msg, .on_stop = fake_on_stop};
static const struct px_worker_module fake_cut = {
    .name = "cut", .msgs = PX_WM_BIT(PX_WM_CUT_TARGET), .on_msg = fake_on_msg};
static const struct px_worker_module fake_rest = {
    .name = "rest", .msgs = ALL_TYPES & ~PX_WM_BIT(PX_WM_CUT_TARGET), .on_msg = fake_on_msg};
static const struct px_worker_module fake_stop = {.name = "stop", .msgs = PX_WM_BIT(PX_WM_STOP),
                                                  .on_msg = fake_on_msg};

static int setup(void)
{
    char err[256];
    struct px_config *cfg = NULL;
    if (px_config_load_string("[proxy]\nlisten_http = 127.0.0.1:0\n", "t.ini", &cfg, err, sizeof(err)) < 0) {
        printf("# %s\n", err);
        return -1;
    }
    struct px_routes *r = px_routes_build(cfg, NULL, err, sizeof(err));
    if (r == NULL) {
        printf("# %s\n", err);
        return -1;
    }
    px_routes_publish(r);
    return 0;
}

static void pump(void)
{
    for (int i = 0; i < 10; i++)
        event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

static void test_the_real_table_gives_every_type_an_owner(void)
{
    char err[256] = "";
    CHECK_INT(px_worker_init(&w, 0, px_worker_modules, px_worker_nmodules, err, sizeof(err)), 0);
    CHECK_STR(err, "");
    CHECK(px_worker_session(&w, "http/1.1") != NULL);
    CHECK(px_worker_session(&w, "h2") != NULL);
    CHECK(px_worker_session(&w, "h3") == NULL);
    px_worker_free(&w);
}

static void test_a_type_without_owner_or_with_two_is_refused(void)
{
    char err[256] = "";
    const struct px_worker_module *none[] = {&fake_rest};
    CHECK_INT(px_worker_init(&w, 0, none, 1, err, sizeof(err)), -1);
    CHECK(strstr(err, "no module answers") != NULL);
    const struct px_worker_module *two[] = {&fake_all, &fake_cut};
    err[0] = '\0';
    CHECK_INT(px_worker_init(&w, 0, two, 2, err, sizeof(err)), -1);
    CHECK(strstr(err, "module cut") != NULL);
    const struct px_worker_module *life[] = {&fake_all, &fake_stop};
    err[0] = '\0';
    CHECK_INT(px_worker_init(&w, 0, life, 2, err, sizeof(err)), -1); /* STOP is the worker's own */
    CHECK(strstr(err, "module stop") != NULL);
}

static void test_messages_reach_their_owner_once(void)
{
    char err[256];
    const struct px_worker_module *split[] = {&fake_rest, &fake_cut};
    memset(got, 0, sizeof(got));
    CHECK_INT(px_worker_init(&w, 0, split, 2, err, sizeof(err)), 0);
    struct px_wmsg m = {.type = PX_WM_WAKE_SERVICE};
    snprintf(m.u.service.name, sizeof(m.u.service.name), "svc-a");
    CHECK_INT(px_worker_send(&w, &m), 0);
    struct px_wmsg cut = {.type = PX_WM_CUT_TARGET, .u.target.id = 42};
    CHECK_INT(px_worker_send(&w, &cut), 0);
    CHECK_INT(px_worker_post(&w, PX_WM_ROUTES), 0); /* the worker's own: no module sees it */
    pump();
    CHECK_INT(got[PX_WM_WAKE_SERVICE], 1);
    CHECK_STR(got_name, "svc-a");
    CHECK_INT(got[PX_WM_CUT_TARGET], 1);
    CHECK_INT(got_target, 42);
    CHECK_INT(got[PX_WM_ROUTES], 0);
    px_worker_free(&w);
}

static void test_stop_once_then_kill(void)
{
    char err[256];
    const struct px_worker_module *mods[] = {&fake_all};
    stops = kills = 0;
    memset(got, 0, sizeof(got));
    CHECK_INT(px_worker_init(&w, 0, mods, 1, err, sizeof(err)), 0);
    CHECK_INT(px_worker_post(&w, PX_WM_STOP), 0);
    CHECK_INT(px_worker_post(&w, PX_WM_STOP), 0);
    pump();
    CHECK_INT(stops, 1);
    CHECK(w.stopping);
    CHECK_INT(px_worker_post(&w, PX_WM_KILL), 0);
    pump();
    CHECK_INT(kills, 1);
    CHECK_INT(got[PX_WM_STOP] + got[PX_WM_KILL], 0);
    px_worker_free(&w);
}

static void test_every_protocol_has_a_name_and_unknown_none(void)
{
    CHECK_STR(px_proto_name(PX_PROTO_HTTP10), "HTTP/1.0");
    CHECK_STR(px_proto_name(PX_PROTO_HTTP11), "HTTP/1.1");
    CHECK_STR(px_proto_name(PX_PROTO_HTTP2), "HTTP/2");
    for (unsigned p = 0; p < PX_PROTO__COUNT; p++)
        CHECK(strncmp(px_proto_name(p), "HTTP/", 5) == 0);
    CHECK_STR(px_proto_name(PX_PROTO__COUNT), "-");
    CHECK_STR(px_proto_name(200), "-");
}

int main(void)
{
    px_log_open("/dev/null", "off", NULL, 0);
    px_routes_set_nworkers(1);
    if (setup() < 0) {
        printf("not ok - setup\n");
        return 1;
    }
    UNIT_RUN(test_the_real_table_gives_every_type_an_owner);
    UNIT_RUN(test_a_type_without_owner_or_with_two_is_refused);
    UNIT_RUN(test_messages_reach_their_owner_once);
    UNIT_RUN(test_stop_once_then_kill);
    UNIT_RUN(test_every_protocol_has_a_name_and_unknown_none);
    px_routes_shutdown();
    px_log_close();
    return unit_report();
}
