/* control/commands.c -- one handler per command of the protocol's table.
 * Handlers call only public module APIs (deploy.h, server.h, worker
 * counters), like kamal-proxy's commands.go; args arrive validated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "px/acme_manager.h"
#include "px/common.h"
#include "px/config.h"
#include "px/control.h"
#include "px/deploy.h"
#include "px/routes.h"
#include "px/server.h"
#include "px/services.h"
#include "px/worker.h"
#include "ctl_internal.h"

typedef void (*handler_fn)(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args);

static void reply_ok(struct ctl_conn *c, const json_t *id, json_t *result)
{
    size_t n;
    char *line = px_ctl_ok_line(id, result, &n);
    px_ctl_conn_send(c, line, n);
}

static void reply_err(struct ctl_conn *c, const json_t *id, enum px_ctl_err code, const char *msg)
{
    size_t n;
    char *line = px_ctl_error_line(id, code, msg, &n);
    px_ctl_conn_send(c, line, n);
}

static enum px_ctl_err code_of(const char *name)
{
    int v = px_ctl_err_from_name(name);
    return v < 0 ? PX_CTL_E_INTERNAL : (enum px_ctl_err)v;
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

static void op_done(void *arg, const char *code, const char *message, json_t *result)
{
    struct ctl_conn *c = arg;
    if (code == NULL && c->tls_note)
        op_progress(c, c->tls_note);
    free(c->tls_note);
    c->tls_note = NULL;
    if (code == NULL)
        reply_ok(c, c->op_id, json_incref(result));
    else
        reply_err(c, c->op_id, code_of(code), message);
    px_ctl_conn_done(c); /* may free c */
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
    for (size_t i = 0; a && i < json_array_size(a) && n < max; i++)
        out[n++] = json_string_value(json_array_get(a, i));
    return n;
}

/* deploy --tls: refused before anything changes unless [acme] runs and
 * the service has host names HTTP-01 can prove (its new ones, or the ones
 * it keeps). NULL, or an error code with the message in msg. */
static const char *tls_check(struct px_ctl_env *env, const json_t *args, char *msg, size_t msglen)
{
    if (px_server_acme(env->srv) == NULL) {
        snprintf(msg, msglen, "deploy --tls needs [acme] enabled = yes (with listen_http, where the CA's HTTP-01 "
                              "validation arrives)");
        return "acme_not_configured";
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
        return "bad_request";
    }
    for (size_t i = 0; i < n; i++)
        if (hosts[i][0] == '*') {
            snprintf(msg, msglen, "--tls: %s: a wildcard certificate needs DNS-01 challenges (not supported)",
                     hosts[i]);
            return "bad_request";
        }
    return NULL;
}

/* A long command while the daemon stops: 1 when refused. */
static int refuse_stopping(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id)
{
    if (!env->stopping)
        return 0;
    reply_err(c, id, PX_CTL_E_SHUTTING_DOWN, "proxyd is stopping");
    return 1;
}

static void h_deploy(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    if (refuse_stopping(env, c, id))
        return;
    if (px_ctl_arg_bool(args, "tls", 0)) {
        char msg[512];
        const char *code = tls_check(env, args, msg, sizeof(msg));
        if (code) {
            reply_err(c, id, code_of(code), msg);
            return;
        }
    }
    const char *targets[PX_CTL_ARRAY_MAX], *hosts[PX_CTL_ARRAY_MAX];
    struct px_deploy_spec q = {
        .service = px_ctl_arg_str(args, "service", NULL),
        .targets = targets,
        .ntargets = strings(args, "targets", targets, PX_CTL_ARRAY_MAX),
        .hosts = hosts,
        .nhosts = strings(args, "hosts", hosts, PX_CTL_ARRAY_MAX),
        .hosts_given = json_object_get(args, "hosts") != NULL,
        .path_prefix = px_ctl_arg_str(args, "path_prefix", NULL),
        .health_check_path = px_ctl_arg_str(args, "health_check_path", NULL),
        .interval_ms = (uint64_t)px_ctl_arg_int(args, "health_check_interval_ms", PX_CTL_DEFAULT_HEALTH_CHECK_INTERVAL_MS),
        .timeout_ms = (uint64_t)px_ctl_arg_int(args, "health_check_timeout_ms", PX_CTL_DEFAULT_HEALTH_CHECK_TIMEOUT_MS),
        .deploy_timeout_ms = (uint64_t)px_ctl_arg_int(args, "deploy_timeout_ms", PX_CTL_DEFAULT_DEPLOY_TIMEOUT_MS),
        .drain_timeout_ms = (uint64_t)px_ctl_arg_int(args, "drain_timeout_ms", PX_CTL_DEFAULT_DRAIN_TIMEOUT_MS),
        .force = px_ctl_arg_bool(args, "force", 0),
        .tls = px_ctl_arg_bool(args, "tls", 0),
    };
    begin_op(c, id);
    if (q.tls) {
        char note[512];
        snprintf(note, sizeof(note),
                 "tls: the certificate is obtained and renewed in the background (proxyctl cert status)");
        c->tls_note = strdup(note);
    }
    px_deploy(env->dep, &q, op_progress, op_done, c);
}

static void h_rollback(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    if (refuse_stopping(env, c, id))
        return;
    begin_op(c, id);
    px_rollback(env->dep, px_ctl_arg_str(args, "service", ""),
                (uint64_t)px_ctl_arg_int(args, "drain_timeout_ms", PX_CTL_DEFAULT_DRAIN_TIMEOUT_MS), op_progress,
                op_done, c);
}

/* ---- immediate commands ---- */

static void state_reply(struct ctl_conn *c, const json_t *id, const char *code, const char *msg,
                        const char *service, const char *state)
{
    if (code) {
        reply_err(c, id, code_of(code), msg);
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
    const char *code = px_deployer_stop(env->dep, svc, px_ctl_arg_str(args, "message", NULL), msg, sizeof(msg));
    state_reply(c, id, code, msg, svc, "stopped");
}

static void h_pause(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char msg[512];
    const char *svc = px_ctl_arg_str(args, "service", "");
    const char *code = px_deployer_pause(
        env->dep, svc, (uint64_t)px_ctl_arg_int(args, "max_pause_ms", PX_CTL_DEFAULT_MAX_PAUSE_MS), msg, sizeof(msg));
    state_reply(c, id, code, msg, svc, "paused");
}

static void h_resume(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char msg[512];
    const char *svc = px_ctl_arg_str(args, "service", "");
    const char *code = px_deployer_resume(env->dep, svc, msg, sizeof(msg));
    state_reply(c, id, code, msg, svc, "running");
}

static void h_remove(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char msg[512];
    const char *svc = px_ctl_arg_str(args, "service", "");
    const char *code = px_deployer_remove(env->dep, svc, msg, sizeof(msg));
    state_reply(c, id, code, msg, svc, NULL);
}

static void h_list(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    reply_ok(c, id, px_deployer_list(env->dep));
}

static void h_status(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    json_t *list = px_deployer_list(env->dep);
    size_t nsvc = json_array_size(json_object_get(list, "services"));
    json_decref(list);
    json_t *r = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "version", PX_VERSION, "pid", (json_int_t)getpid(),
                          "uptime_s", (json_int_t)px_server_uptime_s(env->srv), "workers",
                          (json_int_t)px_server_nworkers(env->srv), "connections",
                          (json_int_t)atomic_load(&px_open_conns), "services", (json_int_t)nsvc);
    const char *problem = px_deployer_state_problem(env->dep);
    if (r && problem)
        json_object_set_new(r, "state_file_error", json_string(problem));
    reply_ok(c, id, r);
}

static void h_reload(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char err[1024];
    if (refuse_stopping(env, c, id))
        return;
    if (px_server_reload(env->srv, err, sizeof(err)) < 0) {
        reply_err(c, id, PX_CTL_E_RELOAD_FAILED, err);
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
        reply_err(c, id, PX_CTL_E_ACME_NOT_CONFIGURED,
                  "[acme] is not enabled: certificates come from the [tls] files (renew them, then proxyctl cert "
                  "reload)");
        return;
    }
    begin_op(c, id);
    px_acme_manager_renew(m, px_ctl_arg_bool(args, "force", 0), op_done, c);
}

static void h_cert_reload(struct px_ctl_env *env, struct ctl_conn *c, const json_t *id, const json_t *args)
{
    char err[1024];
    struct px_acme_manager *m = px_server_acme(env->srv);
    if (m)
        px_acme_manager_reload(m);
    if (px_server_reload_certs(env->srv, err, sizeof(err)) < 0) {
        reply_err(c, id, PX_CTL_E_RELOAD_FAILED, err);
        return;
    }
    const struct px_config *cfg = px_routes_config(px_routes_peek());
    size_t n = 0;
    if (cfg->has_listen_https) {
        n = 1 + cfg->tls.nsni + px_acme_manager_served(m);
    }
    reply_ok(c, id, json_pack("{s:I}", "loaded", (json_int_t)n));
}

static const struct {
    const char *name;
    handler_fn fn;
} handlers[] = {
    {"deploy", h_deploy}, {"rollback", h_rollback}, {"list", h_list},     {"stop", h_stop},
    {"pause", h_pause},   {"resume", h_resume},     {"remove", h_remove}, {"status", h_status},
    {"reload", h_reload}, {"cert_status", h_cert_status}, {"cert_renew", h_cert_renew},
    {"cert_reload", h_cert_reload},
};

void px_ctl_handle(struct px_ctl_env *env, struct ctl_conn *c, const struct px_ctl_request *req)
{
    for (size_t i = 0; i < PX_ARRAY_LEN(handlers); i++)
        if (strcmp(handlers[i].name, req->cmd->name) == 0) {
            c->progress = req->progress;
            handlers[i].fn(env, c, req->id, req->args);
            return;
        }
    reply_err(c, req->id, PX_CTL_E_NOT_IMPLEMENTED, "no handler for this command");
}

void px_ctl_forget(struct px_ctl_env *env, struct ctl_conn *c)
{
    px_deploy_forget(env->dep, c);
    px_acme_manager_forget(px_server_acme(env->srv), c);
}
