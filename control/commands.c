/* control/commands.c -- one handler per command of the protocol's table
 * (PX_CTL_COMMANDS in px/control.h). Handlers call only public module APIs
 * (deploy.h, server.h, worker counters), like kamal-proxy's commands.go;
 * args arrive validated. The modules return typed codes and structs; only
 * this file turns them into JSON. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "px/acme_manager.h"
#include "px/cluster.h"
#include "px/common.h"
#include "px/config.h"
#include "px/control.h"
#include "px/deploy.h"
#include "px/routes.h"
#include "px/server.h"
#include "px/services.h"
#include "px/state.h"
#include "px/stats.h"
#include "px/target.h"
#include "px/worker.h"
#include "ctl_internal.h"

typedef void (*handler_fn)(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args);

static void reply_ok(struct ctl_conn *c, const json_t *id, json_t *result)
{
    size_t n;
    px_ctl_audit_end(c, PX_E_OK, NULL);
    char *line = px_ctl_ok_line(id, result, &n);
    px_ctl_conn_send(c, line, n);
}

static void reply_err(struct ctl_conn *c, const json_t *id, enum px_err code, const char *msg)
{
    size_t n;
    px_ctl_audit_end(c, code, msg);
    char *line = px_ctl_error_line(id, code, msg, &n);
    px_ctl_conn_send(c, line, n);
}

static json_t *string_array(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

/* ---- long commands: progress lines, then one answer ---- */

static void op_progress(void *arg, const char *text)
{
    struct ctl_conn *c = arg;
    size_t n;
    if (!c->progress)
        return; /* one response line per request unless it asked (DESIGN, control protocol) */
    char *line = px_ctl_progress_line(c->op_id, text, &n);
    px_ctl_conn_send(c, line, n);
}

/* The one answer of a long command: result (stolen, whatever the code; an
 * error answer carries only the message). */
static void op_answer(struct ctl_conn *c, enum px_err code, const char *message, json_t *result)
{
    if (code != PX_E_OK) {
        json_decref(result);
        result = NULL;
    }
    if (code == PX_E_OK && c->tls_note)
        op_progress(c, c->tls_note);
    free(c->tls_note);
    c->tls_note = NULL;
    if (code == PX_E_OK)
        reply_ok(c, c->op_id, result);
    else
        reply_err(c, c->op_id, code, message);
    px_ctl_conn_done(c); /* may free c */
}

/* deploy, rollback: the result object of px/control.h. */
static void deploy_done(void *arg, enum px_err code, const char *message, const struct px_deploy_result *r)
{
    json_t *res = NULL;
    if (code == PX_E_OK)
        res = json_pack("{s:s, s:o, s:o, s:I, s:I, s:I}", "service", r->service, "active",
                        string_array(r->active, r->nactive), "previous", string_array(r->previous, r->nprevious),
                        "drained", (json_int_t)r->drained, "cut", (json_int_t)r->cut, "duration_ms",
                        (json_int_t)r->duration_ms);
    op_answer(arg, code, message, res);
}

/* cert_renew: the manager's result is JSON already (borrowed). */
static void acme_done(void *arg, enum px_err code, const char *message, json_t *result)
{
    op_answer(arg, code, message, json_incref(result));
}

static void begin_op(struct ctl_conn *c, const json_t *id)
{
    c->busy = 1;
    c->op_id = id ? json_deep_copy(id) : NULL;
}

static size_t strings(const json_t *args, const char *name, const char **out, size_t max)
{
    const json_t *a = json_object_get(args, name);
    size_t n = 0;
    if (json_is_string(a) && max) { /* one value as a plain string */
        out[0] = json_string_value(a);
        return 1;
    }
    for (size_t i = 0; a && i < json_array_size(a) && n < max; i++)
        out[n++] = json_string_value(json_array_get(a, i));
    return n;
}

/* deploy --tls: refused before anything changes unless [acme] runs and
 * the service has host names HTTP-01 can prove (its new ones, or the ones
 * it keeps). PX_E_OK, or an error code with the message in msg. */
static enum px_err tls_check(struct px_ctl_env *env, const json_t *args, char *msg, size_t msglen)
{
    if (px_server_acme(env->srv) == NULL) {
        snprintf(msg, msglen, "deploy --tls needs [acme] enabled = yes (with listen_http, where the CA's HTTP-01 "
                              "validation arrives)");
        return PX_E_ACME_NOT_CONFIGURED;
    }
    const char *hosts[PX_CTL_ARRAY_MAX];
    size_t n = strings(args, "hosts", hosts, PX_CTL_ARRAY_MAX);
    if (json_object_get(args, "hosts") == NULL) {
        const struct px_service *s =
            px_services_find(px_routes_services(px_routes_peek()), px_ctl_arg_str(args, "service", ""));
        for (size_t i = 0; s && i < s->nhosts && i < PX_CTL_ARRAY_MAX; i++)
            hosts[n++] = s->hosts[i];
    }
    if (n == 0) {
        snprintf(msg, msglen, "--tls needs the service's host names (--host NAME): the certificate is for them");
        return PX_E_BAD_REQUEST;
    }
    for (size_t i = 0; i < n; i++)
        if (hosts[i][0] == '*') {
            snprintf(msg, msglen, "--tls: %s: a wildcard certificate needs DNS-01 challenges (not supported)",
                     hosts[i]);
            return PX_E_BAD_REQUEST;
        }
    return PX_E_OK;
}

/* A long command while the daemon stops: 1 when refused. */
static int refuse_stopping(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id)
{
    if (!env->stopping)
        return 0;
    reply_err(c, id, PX_E_SHUTTING_DOWN, "proxyd is stopping");
    return 1;
}

static void h_deploy(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    if (refuse_stopping(env, c, id))
        return;
    if (px_ctl_arg_bool(args, "tls", 0)) {
        char msg[512];
        enum px_err code = tls_check(env, args, msg, sizeof(msg));
        if (code != PX_E_OK) {
            reply_err(c, id, code, msg);
            return;
        }
    }
    const char *targets[PX_CTL_ARRAY_MAX], *hosts[PX_CTL_ARRAY_MAX], *prefixes[PX_CTL_ARRAY_MAX];
    const char *lreq[PX_CTL_ARRAY_MAX], *lresp[PX_CTL_ARRAY_MAX];
    size_t nprefixes = strings(args, "path_prefix", prefixes, PX_CTL_ARRAY_MAX);
    struct px_deploy_spec q = {
        .service = px_ctl_arg_str(args, "service", NULL),
        .targets = targets,
        .ntargets = strings(args, "targets", targets, PX_CTL_ARRAY_MAX),
        .hosts = hosts,
        .nhosts = strings(args, "hosts", hosts, PX_CTL_ARRAY_MAX),
        .hosts_given = json_object_get(args, "hosts") != NULL,
        .path_prefix = nprefixes ? prefixes[0] : NULL,
        .health_check_path = px_ctl_arg_str(args, "health_check_path", NULL),
        .interval_ms = (uint64_t)px_ctl_arg_int(args, "health_check_interval_ms", PX_CTL_DEFAULT_HEALTH_CHECK_INTERVAL_MS),
        .timeout_ms = (uint64_t)px_ctl_arg_int(args, "health_check_timeout_ms", PX_CTL_DEFAULT_HEALTH_CHECK_TIMEOUT_MS),
        .deploy_timeout_ms = (uint64_t)px_ctl_arg_int(args, "deploy_timeout_ms", PX_CTL_DEFAULT_DEPLOY_TIMEOUT_MS),
        .drain_timeout_ms = (uint64_t)px_ctl_arg_int(args, "drain_timeout_ms", PX_CTL_DEFAULT_DRAIN_TIMEOUT_MS),
        .force = px_ctl_arg_bool(args, "force", 0),
        .tls = px_ctl_arg_bool(args, "tls", 0),
        .log_request_headers = lreq,
        .nlog_request_headers = strings(args, "log_request_headers", lreq, PX_CTL_ARRAY_MAX),
        .log_request_headers_given = json_object_get(args, "log_request_headers") != NULL,
        .log_response_headers = lresp,
        .nlog_response_headers = strings(args, "log_response_headers", lresp, PX_CTL_ARRAY_MAX),
        .log_response_headers_given = json_object_get(args, "log_response_headers") != NULL,
        .opts = {
            .more_prefixes = nprefixes > 1 ? (char **)(prefixes + 1) : NULL,
            .nmore_prefixes = nprefixes > 1 ? nprefixes - 1 : 0,
            .strip_path_prefix = px_ctl_arg_bool(args, "strip_path_prefix", 0),
            .forward_headers = px_ctl_arg_bool(args, "forward_headers", 0),
            .no_tls_redirect = !px_ctl_arg_bool(args, "tls_redirect", 1),
            .health_check_port = (unsigned)px_ctl_arg_int(args, "health_check_port", 0),
            .target_timeout_ms = (uint64_t)px_ctl_arg_int(args, "target_timeout_ms", 0),
            .canonical_host = (char *)px_ctl_arg_str(args, "canonical_host", NULL),
            .tls_certificate = (char *)px_ctl_arg_str(args, "tls_certificate_path", NULL),
            .tls_certificate_key = (char *)px_ctl_arg_str(args, "tls_private_key_path", NULL),
            .error_pages = (char *)px_ctl_arg_str(args, "error_pages", NULL),
        },
        .buffering = {px_ctl_arg_bool(args, "buffer_requests", 1), px_ctl_arg_bool(args, "buffer_responses", 0),
                      (uint64_t)px_ctl_arg_int(args, "buffer_memory", 1 << 20),
                      (uint64_t)px_ctl_arg_int(args, "max_request_body", 0),
                      (uint64_t)px_ctl_arg_int(args, "max_response_body", 0)},
    };
    begin_op(c, id);
    if (q.tls) {
        char note[512];
        snprintf(note, sizeof(note),
                 "tls: the certificate is obtained and renewed in the background (proxyctl cert status)");
        c->tls_note = strdup(note);
    }
    px_deploy(env->dep, &q, op_progress, deploy_done, c);
}

static void h_rollback(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    if (refuse_stopping(env, c, id))
        return;
    begin_op(c, id);
    px_rollback(env->dep, px_ctl_arg_str(args, "service", ""),
                (uint64_t)px_ctl_arg_int(args, "drain_timeout_ms", PX_CTL_DEFAULT_DRAIN_TIMEOUT_MS), op_progress,
                deploy_done, c);
}

/* ---- immediate commands ---- */

static void state_reply(struct ctl_conn *c, const json_t *id, enum px_err code, const char *msg,
                        const char *service, const char *state)
{
    if (code != PX_E_OK) {
        reply_err(c, id, code, msg);
        return;
    }
    json_t *r = state ? json_pack("{s:s, s:s}", "service", service, "state", state)
                      : json_pack("{s:s}", "service", service);
    reply_ok(c, id, r);
}

static void h_stop(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char msg[512];
    const char *svc = px_ctl_arg_str(args, "service", "");
    enum px_err code = px_deployer_stop(env->dep, svc, px_ctl_arg_str(args, "message", NULL), msg, sizeof(msg));
    state_reply(c, id, code, msg, svc, "stopped");
}

static void h_pause(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char msg[512];
    const char *svc = px_ctl_arg_str(args, "service", "");
    enum px_err code = px_deployer_pause(
        env->dep, svc, (uint64_t)px_ctl_arg_int(args, "max_pause_ms", PX_CTL_DEFAULT_MAX_PAUSE_MS), msg, sizeof(msg));
    state_reply(c, id, code, msg, svc, "paused");
}

static void h_resume(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char msg[512];
    const char *svc = px_ctl_arg_str(args, "service", "");
    enum px_err code = px_deployer_resume(env->dep, svc, msg, sizeof(msg));
    state_reply(c, id, code, msg, svc, "running");
}

static void h_remove(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char msg[512];
    const char *svc = px_ctl_arg_str(args, "service", "");
    enum px_err code = px_deployer_remove(env->dep, svc, msg, sizeof(msg));
    state_reply(c, id, code, msg, svc, NULL);
}

/* One target of a service as list and status show it: {"address","role":
 * "active"|"previous","health","in_flight"}, with "service" when service is
 * not NULL. A previous target is "draining" while requests still run on it
 * after a deploy, else "standby" (kept for rollback: no requests, not
 * checked). */
static json_t *target_json(const char *service, const char *address, const struct px_target *t, int active)
{
    char buf[32];
    uint32_t rq = 0, tn = 0;
    const char *health = "standby";
    if (t && (active || atomic_load(&t->draining)))
        health = px_target_health_state(t, buf, sizeof(buf));
    if (t)
        px_target_inflight(t, &rq, &tn);
    json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "address", address, "role", active ? "active" : "previous",
                          "health", health, "in_flight", (json_int_t)(rq + tn));
    if (o && service)
        json_object_set_new(o, "service", json_string(service));
    return o;
}

/* Append the targets of e to arr (service named in each when with_service). */
static void targets_of(json_t *arr, const struct px_deploy_entry *e, int with_service)
{
    const struct px_service *s = e->svc;
    const char *svc = with_service ? s->name : NULL;
    for (size_t j = 0; arr && j < s->ntargets; j++)
        json_array_append_new(arr, target_json(svc, s->targets[j]->addr.text, s->targets[j], 1));
    for (size_t j = 0; arr && j < e->nprevious; j++)
        json_array_append_new(arr, target_json(svc, e->previous[j], px_target_find(e->previous[j]), 0));
}

/* One service of `list` (px/control.h), appended to the array arg. */
static void list_entry(void *arg, const struct px_deploy_entry *e)
{
    static const char *const names[] = {"running", "stopped", "paused"}; /* by enum px_svc_state */
    const struct px_service *s = e->svc;
    json_t *act = json_array();
    for (size_t j = 0; act && j < s->ntargets; j++)
        json_array_append_new(act, json_string(s->targets[j]->addr.text));
    json_t *o = json_pack("{s:s, s:s, s:o, s:s, s:o, s:o, s:I, s:s}", "name", s->name, "state", names[s->state],
                          "hosts", string_array((const char *const *)s->hosts, s->nhosts), "path_prefix",
                          s->path_prefix, "active", act, "previous", string_array(e->previous, e->nprevious),
                          "in_flight", (json_int_t)e->in_flight, "source", e->deployed ? "proxyctl" : "config");
    if (o && s->state == PX_SVC_STOPPED && s->stop_message)
        json_object_set_new(o, "stop_message", json_string(s->stop_message));
    if (o && s->state == PX_SVC_PAUSED)
        json_object_set_new(o, "max_pause_ms", json_integer((json_int_t)s->max_pause_ms));
    json_t *targets = json_array();
    targets_of(targets, e, 0);
    if (o)
        json_object_set_new(o, "targets", targets);
    else
        json_decref(targets);
    json_t *opts = json_object();
    if (o && opts) { /* the per-service options not at their default */
        if (s->opts.nmore_prefixes) {
            json_t *all = string_array((const char *const *)s->opts.more_prefixes, s->opts.nmore_prefixes);
            json_array_insert_new(all, 0, json_string(s->path_prefix));
            json_object_set_new(opts, "path_prefix", all);
        }
        px_state_opts_json(opts, &s->opts);
        json_object_set(o, "options", opts);
    }
    json_decref(opts);
    json_array_append_new(arg, o);
}

static void h_list(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    json_t *arr = json_array();
    if (arr)
        px_deployer_each(env->dep, list_entry, arr);
    reply_ok(c, id, json_pack("{s:o}", "services", arr));
}

/* The data path's counters summed over the workers (px/stats.h), as the
 * "stats" object of status: {"requests":{"http1.1":{"2xx":N,..},..},
 * "accepted":{"http":N,"https":N},"tls":{"new":N,"resumed":N,"failed":N},
 * "bytes_in":N,"bytes_out":N,"limited":N,"parked":N,"closed_early":N,
 * "upstream_errors":{"connect":N,"timeout":N,"reset":N,"bad_response":N}}. */
static json_t *stats_json(const struct px_stats_snapshot *st)
{
    static const char *const cls[PX_STATS_NCLASS] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I}}", "bytes_in", (json_int_t)st->bytes_in,
                          "bytes_out", (json_int_t)st->bytes_out, "limited", (json_int_t)st->limited, "parked",
                          (json_int_t)st->parked, "closed_early", (json_int_t)st->closed_early, "tls", "new",
                          (json_int_t)st->tls_new, "resumed", (json_int_t)st->tls_resumed, "failed",
                          (json_int_t)st->tls_failed);
    json_t *req = json_object(), *acc = json_object(), *up = json_object();
    if (o == NULL || req == NULL || acc == NULL || up == NULL)
        goto fail;
    for (int p = 0; p < PX_STATS_NPROTO; p++) {
        json_t *byc = json_object();
        if (byc == NULL || json_object_set_new(req, px_stats_proto_names[p], byc) < 0)
            goto fail;
        for (int k = 0; k < PX_STATS_NCLASS; k++)
            json_object_set_new(byc, cls[k], json_integer((json_int_t)st->requests[p][k]));
    }
    for (int l = 0; l < PX_STATS_NLISTEN; l++)
        json_object_set_new(acc, px_stats_listen_names[l], json_integer((json_int_t)st->accepted[l]));
    for (int k = 0; k < PX_STATS_UP_NKINDS; k++)
        json_object_set_new(up, px_stats_upstream_err_names[k], json_integer((json_int_t)st->upstream_errors[k]));
    json_object_set_new(o, "requests", req);
    json_object_set_new(o, "accepted", acc);
    json_object_set_new(o, "upstream_errors", up);
    return o;
fail:
    json_decref(o);
    json_decref(req);
    json_decref(acc);
    json_decref(up);
    return NULL;
}

static void status_targets(void *arg, const struct px_deploy_entry *e)
{
    targets_of(arg, e, 1);
}

static const struct px_tls_conf *tls_conf(void);

/* status's "certificates": [{"name","not_after","days_left"}] of cert_status. */
static json_t *cert_expiry(struct px_acme_manager *m)
{
    json_t *all = px_acme_manager_status(m, tls_conf()), *out = json_array();
    const json_t *list = json_object_get(all, "certificates");
    for (size_t i = 0; out && i < json_array_size(list); i++) {
        const json_t *c = json_array_get(list, i);
        json_t *o = json_object();
        if (o == NULL)
            break;
        static const char *const keys[] = {"name", "key_type", "not_after", "days_left"};
        for (size_t k = 0; k < PX_ARRAY_LEN(keys); k++) {
            json_t *v = json_object_get(c, keys[k]);
            json_object_set(o, keys[k], v ? v : json_null());
        }
        json_array_append_new(out, o);
    }
    json_decref(all);
    return out;
}

static void h_status(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    size_t nsvc = px_deployer_each(env->dep, NULL, NULL);
    struct px_stats_snapshot st;
    px_stats_sum(&st);
    json_t *r = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o*}", "version", PX_VERSION, "pid",
                          (json_int_t)getpid(), "uptime_s", (json_int_t)px_server_uptime_s(env->srv), "workers",
                          (json_int_t)px_server_nworkers(env->srv), "connections", (json_int_t)st.open_conns,
                          "services", (json_int_t)nsvc, "requests", (json_int_t)st.requests_total, "stats",
                          stats_json(&st));
    const char *problem = px_deployer_state_problem(env->dep);
    if (r && problem)
        json_object_set_new(r, "state_file_error", json_string(problem));
    uint64_t delta;
    double window;
    px_ctl_rate_get(&env->rate, st.requests_total, px_now_ms(), &delta, &window);
    if (r) {
        json_object_set_new(r, "request_rate", json_real(window > 0 ? (double)delta / window : 0.0));
        json_object_set_new(r, "request_rate_count", json_integer((json_int_t)delta));
        json_object_set_new(r, "request_rate_window_s", json_real(window));
    }
    json_t *targets = json_array();
    if (targets)
        px_deployer_each(env->dep, status_targets, targets);
    if (r)
        json_object_set_new(r, "targets", targets);
    else
        json_decref(targets);
    json_t *certs = cert_expiry(px_server_acme(env->srv));
    if (r)
        json_object_set_new(r, "certificates", certs);
    else
        json_decref(certs);
    struct px_cluster *cl = px_server_cluster(env->srv);
    if (r && cl)
        json_object_set_new(r, "cluster", px_cluster_json(cl));
    reply_ok(c, id, r);
}

static void h_reload(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char err[1024];
    if (refuse_stopping(env, c, id))
        return;
    if (px_server_reload(env->srv, err, sizeof(err)) < 0) {
        reply_err(c, id, PX_E_RELOAD_FAILED, err);
        return;
    }
    reply_ok(c, id, json_pack("{s:s}", "config", px_server_config_path(env->srv)));
}

/* ---- certificates ---- */

static const struct px_tls_conf *tls_conf(void)
{
    const struct px_config *cfg = px_routes_config(px_routes_peek());
    return cfg->has_listen_https || cfg->tls.present ? &cfg->tls : NULL;
}

static void h_cert_status(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    reply_ok(c, id, px_acme_manager_status(px_server_acme(env->srv), tls_conf()));
}

static void h_cert_renew(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    struct px_acme_manager *m = px_server_acme(env->srv);
    if (refuse_stopping(env, c, id))
        return;
    if (m == NULL) {
        reply_err(c, id, PX_E_ACME_NOT_CONFIGURED,
                  "[acme] is not enabled: certificates come from the [tls] files (renew them, then proxyctl cert "
                  "reload)");
        return;
    }
    begin_op(c, id);
    px_acme_manager_renew(m, px_ctl_arg_bool(args, "force", 0), acme_done, c);
}

static void h_cert_reload(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char err[1024];
    struct px_acme_manager *m = px_server_acme(env->srv);
    if (m)
        px_acme_manager_reload(m);
    if (px_server_reload_certs(env->srv, err, sizeof(err)) < 0) {
        reply_err(c, id, PX_E_RELOAD_FAILED, err);
        return;
    }
    const struct px_config *cfg = px_routes_config(px_routes_peek());
    size_t n = 0;
    if (cfg->has_listen_https) {
        n = 1 + cfg->tls.nsni + px_acme_manager_served(m);
    }
    reply_ok(c, id, json_pack("{s:I}", "loaded", (json_int_t)n));
}

/* ---- binary upgrade ---- */

static void upgrade_done(void *arg, long pid, const char *error)
{
    struct ctl_conn *c = arg;
    if (error) {
        op_answer(c, PX_E_UPGRADE_FAILED, error, NULL);
        return;
    }
    op_answer(c, PX_E_OK, NULL, json_pack("{s:I, s:I}", "pid", (json_int_t)pid, "old_pid", (json_int_t)getpid()));
}

static void h_upgrade(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char err[1024];
    if (refuse_stopping(env, c, id))
        return;
    begin_op(c, id);
    unsigned timeout = (unsigned)px_ctl_arg_int(args, "timeout_ms", PX_CTL_DEFAULT_UPGRADE_TIMEOUT_MS);
    if (px_server_upgrade(env->srv, px_ctl_arg_str(args, "binary", NULL), timeout, upgrade_done, c, err,
                          sizeof(err)) < 0)
        op_answer(c, PX_E_UPGRADE_FAILED, err, NULL);
}

/* The handler half of PX_CTL_COMMANDS: a row naming a function that does
 * not exist fails here, at build time. */
static const handler_fn handlers[] = {
#define HANDLER_(name, handler, args, help) [PX_CTL_CMD_##name] = handler,
    PX_CTL_COMMANDS(HANDLER_)
#undef HANDLER_
};
_Static_assert(PX_ARRAY_LEN(handlers) == PX_CTL_CMD__COUNT, "one handler per command");

/* The commands that change state: each writes the audit trail's two lines
 * (px/control_server.h); the read-only ones (list, status, cert_status) none. */
static const unsigned char audited[PX_CTL_CMD__COUNT] = {
    [PX_CTL_CMD_deploy] = 1, [PX_CTL_CMD_rollback] = 1, [PX_CTL_CMD_stop] = 1,
    [PX_CTL_CMD_pause] = 1,  [PX_CTL_CMD_resume] = 1,   [PX_CTL_CMD_remove] = 1,
    [PX_CTL_CMD_reload] = 1, [PX_CTL_CMD_cert_renew] = 1, [PX_CTL_CMD_cert_reload] = 1,
    [PX_CTL_CMD_upgrade] = 1,
};

void px_ctl_handle(struct px_ctl_env *env, struct ctl_conn *c, const struct px_ctl_request *req)
{
    c->progress = req->progress;
    if (audited[req->cmd->id])
        px_ctl_audit_start(c, req->cmd->name, px_ctl_arg_str(req->args, "service", NULL));
    handlers[req->cmd->id](env, c, req->id, req->args);
}

void px_ctl_forget(struct px_ctl_env *env, struct ctl_conn *c)
{
    px_deploy_forget(env->dep, c);
    px_acme_manager_forget(px_server_acme(env->srv), c);
    px_server_upgrade_forget(env->srv, c);
}
