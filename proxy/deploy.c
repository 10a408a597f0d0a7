/* deploy.c -- blue-green deploys, rollbacks and service states on the main
 * thread: health-gate the new targets, write the state file, publish a new
 * services table (config and TLS parts kept), drain the retired targets
 * (idle connections now, busy ones after their response, tunnels at once,
 * the rest cut at drain_timeout), then answer. See px/deploy.h. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/addr.h"
#include "px/common.h"
#include "px/config.h"
#include "px/metrics.h"
#include "px/deploy.h"
#include "px/health.h"
#include "px/log.h"
#include "px/routes.h"
#include "px/services.h"
#include "px/state.h"
#include "px/target.h"
#include "px/tls.h"
#include "px/worker.h"

#define CUT_GRACE_MS 2000 /* after the cut, how long the workers get to report it */

enum phase { PH_HEALTH, PH_WARM, PH_DRAIN, PH_CUT };

#define WARM_MS 30      /* how long the switch waits for the new targets' connections */

struct op;
struct check {
    struct op *o;
    size_t i;
};

struct op {
    struct px_deployer *d;
    struct op *next;
    struct px_state_service svc;   /* the service as it is after the switch */
    int existed;                   /* a deployed entry was replaced */
    struct px_addr *addrs;         /* the new targets, resolved */
    size_t naddrs;
    struct px_health **checks;
    struct check *ctx;             /* each checker's (op, index) */
    int *passed;
    char **why;                    /* last failure per target */
    enum phase phase;
    struct event timer;            /* deploy_timeout, then the drain phases' deadlines */
    uint64_t started_ms, phase_deadline_ms, drain_timeout_ms;
    struct px_target **old;        /* retired targets, referenced while draining */
    size_t nold;
    struct px_target **warm;       /* the new targets, referenced while the workers warm them */
    size_t nwarm;
    uint32_t drained_peak;         /* in flight on the old targets at the switch */
    uint32_t cut;                  /* of those, still running at drain_timeout */
    px_deploy_progress_cb progress;
    px_deploy_done_cb done;
    void *arg;
};

struct px_deployer {
    struct event_base *base;
    char *state_file;
    struct px_deploy_hooks hooks;
    struct px_state st;            /* the deployed services, as persisted */
    struct op *ops;
    uint64_t ops_changed;          /* counts ops freed: a walk that may free one starts over */
    int started;                   /* the first table was built: later builds are reloads */
    int stopping;                  /* px_deployer_shutdown: no new operation */
    char *state_problem;           /* the state file could not be read at start (status shows it) */
    int frozen;                    /* ... nor moved aside: no change may overwrite it */
    struct px_addr *listens;       /* proxyd's own bound addresses: never a target */
    size_t nlistens;
};

/* ---- the services table ---- */

static const struct px_config *cur_config(void)
{
    const struct px_routes *r = px_routes_peek();
    return r ? px_routes_config(r) : NULL;
}

static const char *to_spec(const struct px_state_service *s, struct px_service_spec *spec, struct px_addr *addrs)
{
    for (size_t i = 0; i < s->nactive; i++) {
        const char *e = px_addr_parse(s->active[i], &addrs[i]);
        if (e)
            return e;
    }
    memset(spec, 0, sizeof(*spec));
    spec->name = s->name;
    spec->hosts = (const char *const *)s->hosts;
    spec->nhosts = s->nhosts;
    spec->path_prefix = s->path_prefix;
    spec->targets = addrs;
    spec->ntargets = s->nactive;
    spec->health_check_path = s->health_check_path;
    spec->state = s->state == PX_STATE_STOPPED  ? PX_SVC_STOPPED
                  : s->state == PX_STATE_PAUSED ? PX_SVC_PAUSED
                                                : PX_SVC_ACTIVE;
    spec->stop_message = s->stop_message;
    spec->max_pause_ms = s->max_pause_ms;
    spec->health_checks = 1; /* deployed: its path passed once, it is watched from then on */
    spec->health_check_interval_ms = s->interval_ms;
    spec->health_check_timeout_ms = s->timeout_ms;
    spec->log_request_headers = s->log_request_headers ? (const char *const *)s->log_request_headers
                                                       : px_log_request_headers_default;
    spec->nlog_request_headers = s->log_request_headers ? s->nlog_request_headers
                                                        : PX_ARRAY_LEN(px_log_request_headers_default);
    spec->log_response_headers = (const char *const *)s->log_response_headers;
    spec->nlog_response_headers = s->nlog_response_headers;
    spec->opts = s->opts;
    spec->buffering = s->buffering;
    return NULL;
}

static const struct px_state_service *deployed(const struct px_deployer *d, const char *name)
{
    for (size_t i = 0; i < d->st.nservices; i++)
        if (strcmp(d->st.services[i].name, name) == 0)
            return &d->st.services[i];
    return NULL;
}

/* target is proxyd itself: its bound listeners (once known), else cfg's
 * (a port 0 there is skipped), and metrics_listen. The rule: px/services.h. */
static const char *is_self(const struct px_deployer *d, const struct px_config *cfg, const struct px_addr *target,
                           char *buf, size_t buflen)
{
    struct px_addr self[8];
    size_t n = 0;
    for (size_t i = 0; i < d->nlistens && n < 6; i++)
        self[n++] = d->listens[i];
    if (cfg && d->nlistens == 0 && cfg->has_listen_http)
        self[n++] = cfg->listen_http;
    if (cfg && d->nlistens == 0 && cfg->has_listen_https)
        self[n++] = cfg->listen_https;
    if (cfg && cfg->has_metrics_listen)
        self[n++] = cfg->metrics_listen;
    return px_service_self_target(target, self, n, buf, buflen);
}

/* The deployed service (as persisted) that a [service] of another name
 * claims the host and prefix of: its conflict message in buf, or NULL. */
static const char *claimed(const struct px_deployer *d, const struct px_service_conf *sc, char *buf, size_t buflen)
{
    struct px_service_claim a = {sc->name,        (const char *const *)sc->hosts, sc->nhosts,
                                 sc->path_prefix, sc->opts.more_prefixes,         sc->opts.nmore_prefixes};
    for (size_t i = 0; i < d->st.nservices; i++) {
        const struct px_state_service *s = &d->st.services[i];
        struct px_service_claim b = {s->name,        (const char *const *)s->hosts, s->nhosts,
                                     s->path_prefix, s->opts.more_prefixes,         s->opts.nmore_prefixes};
        if (px_service_conflict(&a, &b, buf, buflen))
            return buf;
    }
    return NULL;
}

enum build_mode {
    B_START,   /* a [service] claiming a deployed service's host is left out, loudly */
    B_RELOAD,  /* ... is an error: the reload fails and the old table keeps serving */
    B_COMMAND, /* ... stays out (it was logged at start); so does another deployed entry that does not fit */
};

/* The table for cfg with the deployed services on top; `over` (may be NULL)
 * stands in for the deployed entry of its name. If `over` does not fit (a bad
 * target) that is the command's error; any other deployed entry that does not
 * fit is left out, with a log line at start and reload: one bad entry never
 * takes the others, nor every later command, down with it. */
static struct px_services *build(struct px_deployer *d, const struct px_config *cfg,
                                 const struct px_state_service *over, enum build_mode mode, enum px_err *code,
                                 char *err, size_t errlen)
{
    int strict = mode == B_COMMAND;
    struct px_services *t = px_services_new();
    *code = PX_E_INTERNAL;
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; cfg && i < cfg->nservices; i++) {
        const struct px_service_conf *sc = &cfg->services[i];
        char why[600];
        if (deployed(d, sc->name) || (over && strcmp(over->name, sc->name) == 0))
            continue; /* proxyctl owns it now */
        /* a reload never drops a deployed service (kamal-proxy's routes are
         * its own; nginx refuses a reload with a conflict) */
        if (claimed(d, sc, why, sizeof(why))) {
            if (mode == B_RELOAD) {
                snprintf(err, errlen,
                         "%s:%d: [service %s]: %s, deployed by proxyctl (a reload never drops a deployed service: "
                         "proxyctl remove it first, or change this section)",
                         cfg->path ? cfg->path : "config", sc->line, sc->name, why);
                *code = PX_E_CONFLICT;
                goto fail;
            }
            if (mode == B_START)
                px_log_error("%s:%d: [service %s]: %s, deployed by proxyctl: this section is left out, the "
                             "deployed service keeps serving (proxyctl remove it to hand the host to the config)",
                             cfg->path ? cfg->path : "config", sc->line, sc->name, why);
            continue;
        }
        if ((*code = px_config_add_service(t, sc, err, errlen)) != PX_E_OK)
            goto fail;
    }
    int over_done = 0;
    for (size_t i = 0; i <= d->st.nservices; i++) {
        const struct px_state_service *s;
        if (i < d->st.nservices) {
            s = &d->st.services[i];
            if (over && strcmp(s->name, over->name) == 0) {
                s = over;
                over_done = 1;
            }
        } else {
            if (over == NULL || over_done)
                break;
            s = over;
        }
        struct px_addr *addrs = calloc(s->nactive ? s->nactive : 1, sizeof(*addrs));
        struct px_service_spec spec;
        char why[320];
        const char *e = addrs ? to_spec(s, &spec, addrs) : "out of memory";
        enum px_err ecode = addrs ? PX_E_BAD_REQUEST : PX_E_INTERNAL;
        /* one restored from a state file written before the rule, or a
         * listener that moved onto a target since: it would loop */
        char selfwhy[200], selfmsg[300];
        for (size_t j = 0; e == NULL && j < s->nactive; j++)
            if (is_self(d, cfg, &addrs[j], selfwhy, sizeof(selfwhy))) {
                snprintf(selfmsg, sizeof(selfmsg), "target %s %s", s->active[j], selfwhy);
                e = selfmsg;
            }
        enum px_err rc = e ? ecode : px_services_add(t, &spec, why, sizeof(why));
        free(addrs);
        if (rc == PX_E_OK)
            continue;
        /* px_services_add's messages already start "service NAME: " */
        const char *bare = why;
        size_t nl = strlen(s->name);
        if (e)
            bare = e;
        else if (strncmp(why, "service ", 8) == 0 && strncmp(why + 8, s->name, nl) == 0 && why[8 + nl] == ':')
            bare = why + 8 + nl + (why[9 + nl] == ' ' ? 2 : 1);
        if (s == over) {
            snprintf(err, errlen, "service %s: %s", s->name, bare);
            *code = rc;
            goto fail;
        }
        /* another deployed entry that does not fit was logged when it was
         * left out (start, reload); a command on some other service must not
         * fail for it, and it stays in the state file for the operator */
        if (!strict)
            px_log_error("state: service %s left out: %s", s->name, bare);
    }
    if (px_services_seal(t, err, errlen) < 0) {
        *code = PX_E_INTERNAL;
        goto fail;
    }
    *code = PX_E_OK;
    return t;
fail:
    px_services_free(t);
    return NULL;
}

struct px_services *px_deployer_services(struct px_deployer *d, const struct px_config *cfg, char *err,
                                         size_t errlen)
{
    enum px_err code;
    struct px_services *t = build(d, cfg, NULL, d->started ? B_RELOAD : B_START, &code, err, errlen);
    if (t)
        d->started = 1;
    return t;
}

/* Replace (or add) the deployed entry svc, persist, publish. On failure
 * nothing changed: PX_E_OK, or a code with the message in msg. */
static enum px_err commit(struct px_deployer *d, const struct px_state_service *svc, char *msg, size_t msglen)
{
    enum px_err code;
    if (d->frozen) {
        snprintf(msg, msglen, "state_file %s: %s; fix or remove it and restart proxyd", d->state_file,
                 d->state_problem);
        return PX_E_INTERNAL;
    }
    struct px_services *t = build(d, cur_config(), svc, B_COMMAND, &code, msg, msglen);
    if (t == NULL)
        return code;
    struct px_state next = d->st;
    size_t i = 0;
    while (i < d->st.nservices && strcmp(d->st.services[i].name, svc->name) != 0)
        i++;
    struct px_state_service *arr = d->st.services;
    if (i == d->st.nservices) {
        arr = realloc(d->st.services, (d->st.nservices + 1) * sizeof(*arr));
        if (arr == NULL) {
            px_services_free(t);
            snprintf(msg, msglen, "out of memory");
            return PX_E_INTERNAL;
        }
        d->st.services = arr;
        next.services = arr;
        next.nservices = d->st.nservices + 1;
    }
    struct px_state_service saved = arr[i], copy;
    if (px_state_service_copy(&copy, svc) < 0) {
        px_services_free(t);
        snprintf(msg, msglen, "out of memory");
        return PX_E_INTERNAL;
    }
    arr[i] = copy;
    if (px_state_save(d->state_file, &next, msg, msglen) < 0) {
        px_state_service_clear(&arr[i]);
        if (i < d->st.nservices)
            arr[i] = saved;
        px_services_free(t);
        return PX_E_INTERNAL;
    }
    if (i < d->st.nservices)
        px_state_service_clear(&saved);
    d->st.nservices = next.nservices;
    if (px_routes_publish_services(t, msg, msglen) < 0)
        return PX_E_INTERNAL; /* persisted; the next start or reload serves it */
    d->hooks.published(d->hooks.arg);
    return PX_E_OK;
}

/* ---- operations ---- */

static struct op *find_op(struct px_deployer *d, const char *name)
{
    for (struct op *o = d->ops; o; o = o->next)
        if (strcmp(o->svc.name, name) == 0)
            return o;
    return NULL;
}

static void progress(struct op *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(struct op *o, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    px_log_info("deploy %s: %s", o->svc.name, buf);
    if (o->progress)
        o->progress(o->arg, buf);
}

static void op_free(struct op *o)
{
    struct px_deployer *d = o->d;
    d->ops_changed++;
    for (struct op **pp = &d->ops; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    event_del(&o->timer);
    for (size_t i = 0; i < o->naddrs; i++) {
        if (o->checks)
            px_health_free(o->checks[i]);
        if (o->why)
            free(o->why[i]);
    }
    for (size_t i = 0; i < o->nold; i++)
        px_target_release(o->old[i]);
    free(o->old);
    for (size_t i = 0; i < o->nwarm; i++)
        px_target_release(o->warm[i]);
    free(o->warm);
    free(o->checks);
    free(o->ctx);
    free(o->passed);
    free(o->why);
    free(o->addrs);
    px_state_service_clear(&o->svc);
    free(o);
}

static void finish(struct op *o, enum px_err code, const char *message)
{
    struct px_deploy_result res = {
        .service = o->svc.name,
        .active = (const char *const *)o->svc.active,
        .nactive = o->svc.nactive,
        .previous = (const char *const *)o->svc.previous,
        .nprevious = o->svc.nprevious,
        .drained = o->drained_peak,
        .cut = o->cut,
        .duration_ms = px_now_ms() - o->started_ms,
    };
    if (code == PX_E_OK)
        progress(o, "done in %.1fs", (double)(px_now_ms() - o->started_ms) / 1000.0);
    else
        px_log_warn("deploy %s failed: %s: %s", o->svc.name, px_err_name(code), message);
    { /* metrics and the status page's recent deploys */
        char targets[256];
        size_t n = 0;
        targets[0] = '\0';
        for (size_t i = 0; i < o->svc.nactive && n < sizeof(targets); i++)
            n += (size_t)snprintf(targets + n, sizeof(targets) - n, "%s%s", i ? "," : "", o->svc.active[i]);
        px_metrics_deploy_done(o->svc.name, code == PX_E_OK ? "ok" : px_err_name(code),
                               px_wall_ms() - res.duration_ms, res.duration_ms, targets);
    }
    if (o->done)
        o->done(o->arg, code, message, code == PX_E_OK ? &res : NULL);
    op_free(o);
}

static uint32_t inflight(struct op *o)
{
    uint32_t sum = 0;
    for (size_t i = 0; i < o->nold; i++) {
        uint32_t rq = 0, tn = 0;
        px_target_inflight(o->old[i], &rq, &tn);
        sum += rq + tn;
    }
    return sum;
}

static void broadcast_targets(struct op *o, enum px_wmsg_type type)
{
    for (size_t i = 0; i < o->nold; i++) {
        struct px_wmsg m = {.type = type, .u.target.id = o->old[i]->id};
        o->d->hooks.broadcast(o->d->hooks.arg, &m);
    }
}

static void arm(struct op *o, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_add(&o->timer, &tv);
}

static void on_drain_poll(struct op *o)
{
    uint32_t n = inflight(o);
    if (n == 0) {
        finish(o, PX_E_OK, NULL);
        return;
    }
    uint64_t now = px_now_ms();
    if (o->phase == PH_DRAIN && now >= o->phase_deadline_ms) {
        progress(o, "drain_timeout: cutting %u request%s still running", n, n == 1 ? "" : "s");
        o->cut = n;
        broadcast_targets(o, PX_WM_CUT_TARGET);
        o->phase = PH_CUT;
        o->phase_deadline_ms = now + CUT_GRACE_MS;
    } else if (o->phase == PH_CUT && now >= o->phase_deadline_ms) {
        finish(o, PX_E_OK, NULL); /* cut; whatever is left closes by itself */
        return;
    }
    /* until the phase's deadline: the workers answer when the old targets
     * go idle (px_deployer_target_idle) */
    arm(o, o->phase_deadline_ms > now ? o->phase_deadline_ms - now : 0);
}

void px_deployer_target_idle(struct px_deployer *d, uint32_t target_id)
{
again:
    for (struct op *o = d->ops; o; o = o->next) {
        if (o->phase != PH_DRAIN && o->phase != PH_CUT)
            continue;
        for (size_t i = 0; i < o->nold; i++) {
            if (o->old[i]->id != target_id)
                continue;
            uint64_t changed = d->ops_changed;
            on_drain_poll(o);
            if (d->ops_changed != changed)
                goto again; /* o finished (freed): each pass frees one at most */
            break;
        }
    }
}
/* The new targets passed (or --force): persist, publish, drain the old. */
static void switch_over(struct op *o)
{
    struct px_deployer *d = o->d;
    char msg[512];
    for (size_t i = 0; o->checks && i < o->naddrs; i++) {
        px_health_free(o->checks[i]);
        o->checks[i] = NULL;
    }
    /* the targets that retire: in the service's table now, not in the new set */
    const struct px_routes *cur = px_routes_peek();
    const struct px_service *was = cur ? px_services_find(px_routes_services(cur), o->svc.name) : NULL;
    if (was) {
        o->old = calloc(was->ntargets ? was->ntargets : 1, sizeof(*o->old));
        for (size_t i = 0; o->old && i < was->ntargets; i++) {
            int kept = 0;
            for (size_t j = 0; j < o->naddrs; j++)
                if (strcmp(was->targets[i]->addr.text, o->addrs[j].text) == 0)
                    kept = 1;
            if (!kept && (o->old[o->nold] = px_target_acquire(&was->targets[i]->addr)) != NULL)
                o->nold++;
        }
    }
    /* The new set serves: none of it may be draining (a rollback reuses the
     * targets the last deploy retired) -- before it is published, or a
     * worker could route to a draining target and find none. */
    for (size_t i = 0; i < o->naddrs; i++) {
        struct px_target *t = px_target_acquire(&o->addrs[i]);
        if (t) {
            atomic_store(&t->draining, 0);
            px_target_release(t); /* the table commit publishes holds it */
        }
    }
    enum px_err code = commit(d, &o->svc, msg, sizeof(msg));
    if (code != PX_E_OK) {
        finish(o, code, msg);
        return;
    }
    progress(o, "switched to %s", o->svc.active[0]);
    for (size_t i = 0; i < o->nold; i++)
        atomic_store(&o->old[i]->draining, 1);
    broadcast_targets(o, PX_WM_DRAIN_TARGET);
    broadcast_targets(o, PX_WM_CLOSE_TUNNELS);
    o->drained_peak = inflight(o);
    if (o->drained_peak)
        progress(o, "draining %u request%s", o->drained_peak, o->drained_peak == 1 ? "" : "s");
    o->phase = PH_DRAIN;
    o->phase_deadline_ms = px_now_ms() + o->drain_timeout_ms;
    on_drain_poll(o);
}

/* Before the switch, each worker opens connections to the new targets,
 * about as many as it holds to the targets they replace (px_pool_warm
 * counts its own), so the first requests after the switch do not each pay
 * a connect. */
static void warm_then_switch(struct op *o)
{
    const struct px_routes *cur = px_routes_peek();
    const struct px_service *was = cur ? px_services_find(px_routes_services(cur), o->svc.name) : NULL;
    struct px_wmsg m = {.type = PX_WM_WARM_TARGET, .u.warm.count = (uint32_t)o->naddrs};
    for (size_t i = 0; was && i < was->ntargets && m.u.warm.nfrom < PX_WMSG_FROM_MAX; i++)
        m.u.warm.from[m.u.warm.nfrom++] = was->targets[i]->id;
    for (size_t i = 0; i < o->naddrs; i++) {
        struct px_target *t = px_target_acquire(&o->addrs[i]);
        if (t == NULL)
            continue;
        struct px_target **nw = realloc(o->warm, (o->nwarm + 1) * sizeof(*nw));
        if (nw == NULL) {
            px_target_release(t);
            continue;
        }
        o->warm = nw;
        o->warm[o->nwarm++] = t;
        atomic_store(&t->draining, 0);
        m.u.warm.target_id = t->id;
        m.u.warm.addr = t->addr;
        o->d->hooks.broadcast(o->d->hooks.arg, &m);
    }
    o->phase = PH_WARM;
    arm(o, WARM_MS);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct op *o = arg;
    if (o->phase == PH_WARM) {
        switch_over(o);
        return;
    }
    if (o->phase != PH_HEALTH) {
        on_drain_poll(o);
        return;
    }
    /* deploy_timeout: the first target that never passed says why */
    for (size_t i = 0; i < o->naddrs; i++) {
        if (o->passed[i])
            continue;
        char msg[512];
        snprintf(msg, sizeof(msg), "%s %s: %s after %.0fs", o->addrs[i].text, o->svc.health_check_path,
                 o->why[i] ? o->why[i] : "no answer", (double)(px_now_ms() - o->started_ms) / 1000.0);
        finish(o, PX_E_HEALTH_CHECK_FAILED, msg);
        return;
    }
}

static void on_health(void *arg, const struct px_health_result *res)
{
    struct check *c = arg;
    struct op *o = c->o;
    if (o->phase != PH_HEALTH)
        return;
    if (!res->pass) {
        free(o->why[c->i]);
        o->why[c->i] = strdup(res->reason ? res->reason : "failed");
        return;
    }
    if (!o->passed[c->i]) {
        o->passed[c->i] = 1;
        progress(o, "%s is healthy", o->addrs[c->i].text);
    }
    for (size_t i = 0; i < o->naddrs; i++)
        if (!o->passed[i])
            return;
    event_del(&o->timer);
    warm_then_switch(o);
}

static void start(struct px_deployer *d, struct op *o, uint64_t interval_ms, uint64_t timeout_ms,
                  uint64_t deploy_timeout_ms, int force)
{
    o->next = d->ops;
    d->ops = o;
    event_assign(&o->timer, d->base, -1, 0, on_timer, o);
    if (force) {
        progress(o, "--force: switching without waiting for health checks");
        warm_then_switch(o);
        return;
    }
    o->checks = calloc(o->naddrs, sizeof(*o->checks));
    o->ctx = calloc(o->naddrs, sizeof(*o->ctx));
    o->passed = calloc(o->naddrs, sizeof(*o->passed));
    o->why = calloc(o->naddrs, sizeof(*o->why));
    if (o->checks == NULL || o->ctx == NULL || o->passed == NULL || o->why == NULL) {
        finish(o, PX_E_INTERNAL, "out of memory");
        return;
    }
    arm(o, deploy_timeout_ms);
    for (size_t i = 0; i < o->naddrs; i++) {
        progress(o, "waiting for %s to be healthy (GET %s)", o->addrs[i].text, o->svc.health_check_path);
        o->ctx[i] = (struct check){o, i};
        struct px_addr a = o->addrs[i];
        if (o->svc.opts.health_check_port)
            px_addr_with_port(&o->addrs[i], o->svc.opts.health_check_port, &a);
        o->checks[i] = px_health_new(d->base, &a, o->svc.health_check_path, interval_ms, timeout_ms, on_health,
                                     &o->ctx[i]);
        if (o->checks[i] == NULL) {
            finish(o, PX_E_INTERNAL, "out of memory");
            return;
        }
    }
}

/* A new op for service name (NULL with done called when it cannot start). */
static struct op *op_new(struct px_deployer *d, const char *name, px_deploy_progress_cb pr, px_deploy_done_cb done,
                         void *arg)
{
    if (find_op(d, name)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "a deploy or rollback of %s is in progress", name);
        done(arg, PX_E_BUSY, msg, NULL);
        return NULL;
    }
    struct op *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        done(arg, PX_E_INTERNAL, "out of memory", NULL);
        return NULL;
    }
    o->d = d;
    o->progress = pr;
    o->done = done;
    o->arg = arg;
    o->started_ms = px_now_ms();
    return o;
}

/* Resolve the new targets into o->addrs: NULL or a message. */
static const char *resolve(struct op *o, char *msg, size_t msglen)
{
    o->naddrs = o->svc.nactive;
    o->addrs = calloc(o->naddrs ? o->naddrs : 1, sizeof(*o->addrs));
    if (o->addrs == NULL)
        return "out of memory";
    for (size_t i = 0; i < o->naddrs; i++) {
        const char *e = px_addr_parse(o->svc.active[i], &o->addrs[i]);
        if (e) {
            snprintf(msg, msglen, "target %s: %s", o->svc.active[i], e);
            return msg;
        }
    }
    return NULL;
}

/* A new target that is proxyd itself: NULL or the message in msg. */
static const char *self_target(const struct px_deployer *d, const struct op *o, char *msg, size_t msglen)
{
    for (size_t i = 0; i < o->naddrs; i++) {
        char why[300];
        if (is_self(d, cur_config(), &o->addrs[i], why, sizeof(why))) {
            snprintf(msg, msglen, "target %s %s", o->svc.active[i], why);
            return msg;
        }
    }
    return NULL;
}

/* The service as the config file defines it, as a deployed entry. */
static int from_config(const struct px_deployer *d, const char *name, struct px_state_service *out)
{
    const struct px_config *cfg = cur_config();
    PX_UNUSED(d);
    for (size_t i = 0; cfg && i < cfg->nservices; i++) {
        const struct px_service_conf *sc = &cfg->services[i];
        if (strcmp(sc->name, name) != 0)
            continue;
        memset(out, 0, sizeof(*out));
        out->name = strdup(sc->name);
        out->hosts = px_strv_dup((const char *const *)sc->hosts, sc->nhosts);
        out->nhosts = out->hosts ? sc->nhosts : 0;
        out->path_prefix = strdup(sc->path_prefix);
        out->health_check_path = strdup(sc->health_check_path);
        out->active = calloc(sc->ntargets ? sc->ntargets : 1, sizeof(char *));
        for (size_t j = 0; out->active && j < sc->ntargets; j++)
            if ((out->active[out->nactive] = strdup(sc->targets[j].text)) != NULL)
                out->nactive++;
        out->previous = calloc(1, sizeof(char *));
        out->interval_ms = sc->health_check_interval_ms;
        out->timeout_ms = sc->health_check_timeout_ms;
        out->log_request_headers = px_strv_dup((const char *const *)sc->log_request_headers, sc->nlog_request_headers);
        out->nlog_request_headers = sc->nlog_request_headers;
        out->log_response_headers = px_strv_dup((const char *const *)sc->log_response_headers, sc->nlog_response_headers);
        out->nlog_response_headers = sc->nlog_response_headers;
        out->buffering = sc->buffering;
        return px_svc_opts_copy(&out->opts, &sc->opts) == 0 && out->log_request_headers && out->log_response_headers && out->name && out->hosts && out->path_prefix && out->health_check_path && out->active &&
                       out->previous
                   ? 0
                   : -1;
    }
    return -1;
}

static void log_headers_move(char ***dst, size_t *ndst, char ***src, size_t *nsrc)
{
    *dst = *src;
    *ndst = *nsrc;
    *src = NULL;
    *nsrc = 0;
}

void px_deploy(struct px_deployer *d, const struct px_deploy_spec *q, px_deploy_progress_cb pr,
               px_deploy_done_cb done, void *arg)
{
    char msg[512];
    if (d->stopping) {
        done(arg, PX_E_SHUTTING_DOWN, "proxyd is stopping", NULL);
        return;
    }
    if (q->service == NULL || q->service[0] == '\0' || q->ntargets == 0) {
        done(arg, PX_E_BAD_REQUEST, "deploy needs a service and at least one target", NULL);
        return;
    }
    struct op *o = op_new(d, q->service, pr, done, arg);
    if (o == NULL)
        return;
    struct px_state_service cur;
    const struct px_state_service *dep = deployed(d, q->service);
    int have = dep ? px_state_service_copy(&cur, dep) == 0 : from_config(d, q->service, &cur) == 0;
    struct px_state_service *s = &o->svc;
    s->name = strdup(q->service);
    s->hosts = q->hosts_given || !have ? px_strv_dup(q->hosts, q->nhosts) : px_strv_dup((const char *const *)cur.hosts, cur.nhosts);
    s->nhosts = s->hosts ? (q->hosts_given || !have ? q->nhosts : cur.nhosts) : 0;
    s->path_prefix = strdup(q->path_prefix ? q->path_prefix : have ? cur.path_prefix : "/");
    s->health_check_path = strdup(q->health_check_path ? q->health_check_path : have ? cur.health_check_path : "/up");
    s->active = px_strv_dup(q->targets, q->ntargets);
    s->nactive = s->active ? q->ntargets : 0;
    /* previous: what served until now, unless the deploy names the same targets */
    int same = have && cur.nactive == q->ntargets;
    for (size_t i = 0; same && i < q->ntargets; i++)
        same = strcmp(cur.active[i], q->targets[i]) == 0;
    if (have && !same) {
        s->previous = px_strv_dup((const char *const *)cur.active, cur.nactive);
        s->nprevious = s->previous ? cur.nactive : 0;
    } else {
        s->previous = have ? px_strv_dup((const char *const *)cur.previous, cur.nprevious) : px_strv_dup(NULL, 0);
        s->nprevious = have && s->previous ? cur.nprevious : 0;
    }
    s->state = have ? cur.state : PX_STATE_ACTIVE;
    s->stop_message = have && cur.stop_message ? strdup(cur.stop_message) : NULL;
    s->max_pause_ms = have ? cur.max_pause_ms : 0;
    s->tls = q->tls || (have && cur.tls);
    s->buffering = q->buffering;
    /* the timings given, else (rollback) the ones the last deploy used */
    s->interval_ms = q->interval_ms ? q->interval_ms : have && cur.interval_ms ? cur.interval_ms : 1000;
    s->timeout_ms = q->timeout_ms ? q->timeout_ms : have && cur.timeout_ms ? cur.timeout_ms : 5000;
    s->deploy_timeout_ms = q->deploy_timeout_ms          ? q->deploy_timeout_ms
                           : have && cur.deploy_timeout_ms ? cur.deploy_timeout_ms
                                                         : 30000;
    /* the log headers given, else the service's (NULL: the defaults) */
    if (q->log_request_headers_given) {
        s->log_request_headers = px_strv_dup(q->log_request_headers, q->nlog_request_headers);
        s->nlog_request_headers = s->log_request_headers ? q->nlog_request_headers : 0;
    } else if (have) {
        log_headers_move(&s->log_request_headers, &s->nlog_request_headers, &cur.log_request_headers,
                         &cur.nlog_request_headers);
    }
    if (q->log_response_headers_given) {
        s->log_response_headers = px_strv_dup(q->log_response_headers, q->nlog_response_headers);
        s->nlog_response_headers = s->log_response_headers ? q->nlog_response_headers : 0;
    } else if (have) {
        log_headers_move(&s->log_response_headers, &s->nlog_response_headers, &cur.log_response_headers,
                         &cur.nlog_response_headers);
    }
    int lh_nomem = (q->log_request_headers_given && s->log_request_headers == NULL) ||
                   (q->log_response_headers_given && s->log_response_headers == NULL);
    struct px_svc_opts opts = q->opts;
    if (q->path_prefix == NULL && have) { /* the prefixes kept together */
        opts.more_prefixes = cur.opts.more_prefixes;
        opts.nmore_prefixes = cur.opts.nmore_prefixes;
    } else if (q->path_prefix == NULL) {
        opts.more_prefixes = NULL;
        opts.nmore_prefixes = 0;
    }
    int opts_bad = px_svc_opts_copy(&s->opts, &opts);
    if (have)
        px_state_service_clear(&cur);
    if (lh_nomem || s->name == NULL || s->hosts == NULL || s->path_prefix == NULL || s->health_check_path == NULL ||
        s->active == NULL || s->previous == NULL || opts_bad) {
        done(arg, PX_E_INTERNAL, "out of memory", NULL);
        px_state_service_clear(s);
        free(o);
        return;
    }
    const char *e = resolve(o, msg, sizeof(msg));
    enum px_err code = PX_E_BAD_REQUEST;
    if (e == NULL)
        e = px_svc_opts_check(&s->opts, msg, sizeof(msg));
    if (e == NULL && s->opts.tls_certificate &&
        px_tls_check_pair(s->opts.tls_certificate, s->opts.tls_certificate_key, msg, sizeof(msg)) < 0)
        e = msg;
    if (e == NULL && (e = self_target(d, o, msg, sizeof(msg))) != NULL)
        code = PX_E_INVALID_TARGET;
    if (e) {
        done(arg, code, e, NULL);
        free(o->addrs);
        px_state_service_clear(s);
        free(o);
        return;
    }
    /* the conflict rule before any waiting: fail fast */
    struct px_services *t = build(d, cur_config(), s, B_COMMAND, &code, msg, sizeof(msg));
    if (t == NULL) {
        done(arg, code, msg, NULL);
        free(o->addrs);
        px_state_service_clear(s);
        free(o);
        return;
    }
    px_services_free(t);
    o->drain_timeout_ms = q->drain_timeout_ms ? q->drain_timeout_ms : 30000;
    start(d, o, s->interval_ms, s->timeout_ms, s->deploy_timeout_ms, q->force);
}

void px_rollback(struct px_deployer *d, const char *service, uint64_t drain_timeout_ms,
                 px_deploy_progress_cb pr, px_deploy_done_cb done, void *arg)
{
    const struct px_state_service *dep = deployed(d, service);
    if (dep == NULL) {
        char msg[256];
        struct px_state_service conf;
        memset(&conf, 0, sizeof(conf)); /* from_config leaves it alone when there is no such [service] */
        if (from_config(d, service, &conf) == 0) {
            /* a [service] of the file: it exists, it has just never switched */
            px_state_service_clear(&conf);
            snprintf(msg, sizeof(msg), "%s has no previous targets (it serves its [service] targets and was never "
                     "deployed)", service);
            done(arg, PX_E_NO_PREVIOUS, msg, NULL);
            return;
        }
        px_state_service_clear(&conf);
        snprintf(msg, sizeof(msg), "no service %s", service);
        done(arg, PX_E_UNKNOWN_SERVICE, msg, NULL);
        return;
    }
    if (dep->nprevious == 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s has no previous targets", service);
        done(arg, PX_E_NO_PREVIOUS, msg, NULL);
        return;
    }
    struct px_deploy_spec q = {
        .service = service,
        .targets = (const char *const *)dep->previous,
        .ntargets = dep->nprevious,
        .drain_timeout_ms = drain_timeout_ms,
        .buffering = dep->buffering, /* as the timings: the last deploy's */
    };
    px_deploy(d, &q, pr, done, arg);
}

void px_deploy_forget(struct px_deployer *d, void *arg)
{
    for (struct op *o = d->ops; o; o = o->next)
        if (o->arg == arg) {
            o->progress = NULL;
            o->done = NULL;
        }
}

/* ---- immediate commands ---- */

static enum px_err change(struct px_deployer *d, const char *service, enum px_state_svc st, const char *message,
                         uint64_t max_pause_ms, char *msg, size_t msglen)
{
    struct px_state_service s;
    const struct px_state_service *dep = deployed(d, service);
    if (dep ? px_state_service_copy(&s, dep) < 0 : from_config(d, service, &s) < 0) {
        snprintf(msg, msglen, "no service %s", service);
        return PX_E_UNKNOWN_SERVICE;
    }
    enum px_state_svc was = s.state;
    s.state = st;
    free(s.stop_message);
    s.stop_message = message ? strdup(message) : NULL;
    s.max_pause_ms = max_pause_ms;
    enum px_err code = commit(d, &s, msg, msglen);
    px_state_service_clear(&s);
    if (code == PX_E_OK && was == PX_STATE_PAUSED && st != PX_STATE_PAUSED) {
        struct px_wmsg m = {.type = PX_WM_WAKE_SERVICE};
        snprintf(m.u.service.name, sizeof(m.u.service.name), "%s", service);
        d->hooks.broadcast(d->hooks.arg, &m);
    }
    return code;
}

enum px_err px_deployer_stop(struct px_deployer *d, const char *service, const char *message, char *msg,
                             size_t msglen)
{
    return change(d, service, PX_STATE_STOPPED, message, 0, msg, msglen);
}

enum px_err px_deployer_pause(struct px_deployer *d, const char *service, uint64_t max_pause_ms, char *msg,
                              size_t msglen)
{
    return change(d, service, PX_STATE_PAUSED, NULL, max_pause_ms ? max_pause_ms : 30000, msg, msglen);
}

enum px_err px_deployer_resume(struct px_deployer *d, const char *service, char *msg, size_t msglen)
{
    return change(d, service, PX_STATE_ACTIVE, NULL, 0, msg, msglen);
}

enum px_err px_deployer_remove(struct px_deployer *d, const char *service, char *msg, size_t msglen)
{
    size_t i = 0;
    while (i < d->st.nservices && strcmp(d->st.services[i].name, service) != 0)
        i++;
    if (i == d->st.nservices) {
        snprintf(msg, msglen, "no deployed service %s", service);
        return PX_E_UNKNOWN_SERVICE;
    }
    if (find_op(d, service)) {
        snprintf(msg, msglen, "a deploy of %s is in progress", service);
        return PX_E_BUSY;
    }
    if (d->frozen) {
        snprintf(msg, msglen, "state_file %s: %s; fix or remove it and restart proxyd", d->state_file,
                 d->state_problem);
        return PX_E_INTERNAL;
    }
    struct px_state_service gone = d->st.services[i];
    d->st.services[i] = d->st.services[--d->st.nservices];
    enum px_err code;
    struct px_services *t = build(d, cur_config(), NULL, B_COMMAND, &code, msg, msglen);
    if (t == NULL || px_state_save(d->state_file, &d->st, msg, msglen) < 0) {
        px_services_free(t);
        d->st.services[d->st.nservices++] = d->st.services[i];
        d->st.services[i] = gone;
        return PX_E_INTERNAL; /* as before: a table that no longer builds without it is a state problem */
    }
    px_state_service_clear(&gone);
    if (px_routes_publish_services(t, msg, msglen) < 0)
        return PX_E_INTERNAL;
    d->hooks.published(d->hooks.arg);
    return PX_E_OK;
}

void px_deployer_each_tls(const struct px_deployer *d, px_deployer_tls_fn fn, void *arg)
{
    for (size_t i = 0; i < d->st.nservices; i++)
        if (d->st.services[i].tls)
            fn(arg, d->st.services[i].name, d->st.services[i].hosts, d->st.services[i].nhosts);
}

size_t px_deployer_each(struct px_deployer *d, px_deployer_list_fn fn, void *arg)
{
    const struct px_routes *r = px_routes_peek();
    const struct px_services *t = r ? px_routes_services(r) : NULL;
    size_t n = t ? px_services_count(t) : 0;
    for (size_t i = 0; fn && i < n; i++) {
        const struct px_service *s = px_services_at(t, i);
        const struct px_state_service *dep = deployed(d, s->name);
        struct px_deploy_entry e = {.svc = s, .deployed = dep != NULL};
        for (size_t j = 0; j < s->ntargets; j++) {
            uint32_t rq = 0, tn = 0;
            px_target_inflight(s->targets[j], &rq, &tn);
            e.in_flight += rq + tn;
        }
        if (dep) {
            e.previous = (const char *const *)dep->previous;
            e.nprevious = dep->nprevious;
        }
        fn(arg, &e);
    }
    return n;
}

/* ---- lifetime ---- */

struct px_deployer *px_deployer_new(struct event_base *base, const char *state_file,
                                    const struct px_deploy_hooks *hooks, char *err, size_t errlen)
{
    struct px_deployer *d = calloc(1, sizeof(*d));
    if (d == NULL || (d->state_file = strdup(state_file)) == NULL) {
        free(d);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->base = base;
    d->hooks = *hooks;
    char why[512];
    if (px_state_load(state_file, &d->st, why, sizeof(why)) < 0) {
        /* the front door starts anyway (DESIGN, blue-green deploy 6): the
         * file goes aside, never overwritten, and the config serves */
        char aside[1024], aerr[512], note[1600];
        px_state_free(&d->st);
        if (px_state_set_aside(state_file, aside, sizeof(aside), aerr, sizeof(aerr)) == 0) {
            snprintf(note, sizeof(note), "unreadable (%s): moved aside to %s", why, aside);
            px_log_error("state_file %s: %s; serving the config's services, the next deploy writes a fresh file",
                         state_file, note);
        } else {
            snprintf(note, sizeof(note), "unreadable (%s) and not moved aside (%s)", why, aerr);
            d->frozen = 1;
            px_log_error("state_file %s: %s; serving the config's services, deploys are refused until it is "
                         "fixed or removed", state_file, note);
        }
        if ((d->state_problem = strdup(note)) == NULL) {
            free(d->state_file);
            free(d);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
    }
    if (d->st.nservices)
        px_log_info("state: %zu deployed service%s from %s", d->st.nservices, d->st.nservices == 1 ? "" : "s",
                    state_file);
    return d;
}

const char *px_deployer_state_problem(const struct px_deployer *d)
{
    return d ? d->state_problem : NULL;
}

void px_deployer_set_listeners(struct px_deployer *d, const struct px_addr *addrs, size_t n)
{
    struct px_addr *copy = n ? calloc(n, sizeof(*copy)) : NULL;
    if (n && copy == NULL) {
        px_log_error("deploy: out of memory: a target equal to proxyd's own address is not refused");
        return;
    }
    if (n)
        memcpy(copy, addrs, n * sizeof(*copy));
    free(d->listens);
    d->listens = copy;
    d->nlistens = n;
}

void px_deployer_shutdown(struct px_deployer *d)
{
    if (d == NULL)
        return;
    d->stopping = 1;
    while (d->ops) {
        struct op *o = d->ops;
        px_deploy_done_cb done = o->done;
        void *arg = o->arg;
        char msg[512];
        if (o->phase == PH_DRAIN || o->phase == PH_CUT)
            snprintf(msg, sizeof(msg), "proxyd is stopping: %s was switched to %s; requests still on the old "
                     "targets finish within shutdown_timeout", o->svc.name, o->svc.active[0]);
        else
            snprintf(msg, sizeof(msg), "proxyd is stopping: the deploy of %s was abandoned before the switch; "
                     "nothing changed", o->svc.name);
        px_log_warn("deploy %s: %s", o->svc.name, msg);
        o->done = NULL;
        o->progress = NULL;
        op_free(o);
        if (done)
            done(arg, PX_E_SHUTTING_DOWN, msg, NULL);
    }
}

void px_deployer_free(struct px_deployer *d)
{
    if (d == NULL)
        return;
    free(d->listens);
    free(d->state_problem);
    while (d->ops) {
        d->ops->done = NULL;
        d->ops->progress = NULL;
        op_free(d->ops);
    }
    px_state_free(&d->st);
    free(d->state_file);
    free(d);
}

int px_deployer_busy(const struct px_deployer *d)
{
    return d && d->ops != NULL;
}
