/* px/deploy.h -- the services the control plane owns: blue-green deploys
 * gated on health checks, rollbacks, stop/pause/resume/remove, draining of
 * retired targets, and the state file that makes all of it survive a
 * restart.
 *
 * The snapshot's services table is the config's [service] sections with the
 * deployed services on top (a deployed service replaces a [service] of the
 * same name): px_deployer_services builds it for the server at start and on
 * every reload, and the deployer publishes a new one after each change,
 * keeping the config and TLS parts.
 *
 * A change is written to the state file (crash-safe, px/state.h) before it
 * is published and before its command answers. One operation per service at
 * a time: a second deploy of a service that is deploying is refused with
 * "busy". Everything here runs on the main thread's event base; workers only
 * see published snapshots and typed messages. A control-plane header. */
#ifndef PX_DEPLOY_H
#define PX_DEPLOY_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "px/errors.h"
#include "px/services.h" /* struct px_svc_opts, struct px_buffering */

struct px_addr;
struct px_config;
struct px_service;
struct px_services;
struct px_wmsg;
struct px_deployer;

/* What the server lends the deployer. */
struct px_deploy_hooks {
    void (*published)(void *arg);                        /* a new snapshot: workers adopt it now */
    void (*broadcast)(void *arg, const struct px_wmsg *m); /* to every worker */
    void *arg;
};

/* Load the state file. A bad entry is skipped with a log line. A file that
 * cannot be read at all never stops the start: it is renamed aside
 * (px_state_set_aside), logged as an error and reported by
 * px_deployer_state_problem; the config's services serve and the next change
 * writes a fresh file. When it cannot even be moved aside, changes are
 * refused (nothing may overwrite it) until a restart finds it readable or
 * gone. NULL (out of memory only) with a message in err. */
struct px_deployer *px_deployer_new(struct event_base *base, const char *state_file,
                                    const struct px_deploy_hooks *hooks, char *err, size_t errlen);
void px_deployer_free(struct px_deployer *d);
/* What went wrong with the state file at start ("...: moved aside to X"), or
 * NULL. Borrowed. */
const char *px_deployer_state_problem(const struct px_deployer *d);
/* proxyd's bound listen addresses (real ports), which deploy refuses as
 * targets with invalid_target (px_service_self_target); copied. */
void px_deployer_set_listeners(struct px_deployer *d, const struct px_addr *addrs, size_t n);
/* The daemon is stopping: every operation in progress answers
 * "shutting_down" now (one that has not switched yet is abandoned and
 * changes nothing; one that has switched stays switched, its old targets
 * finish within shutdown_timeout), and new ones are refused the same way. */
void px_deployer_shutdown(struct px_deployer *d);
/* A worker answered PX_WA_TARGET_IDLE for target_id: an operation draining
 * it counts what is left in flight and ends when nothing is (no poll). */
void px_deployer_target_idle(struct px_deployer *d, uint32_t target_id);
/* The services table for a snapshot on cfg (see above), sealed. NULL with a
 * message in err. A deployed service is never dropped for a [service] of
 * another name that claims its host and prefix: on the first call (the
 * start) that [service] is left out with an error-log line; on later calls
 * (reloads) it is an error, "FILE:LINE: [service B]: conflicts with service
 * A (...), deployed by proxyctl ...", and the reload fails. */
struct px_services *px_deployer_services(struct px_deployer *d, const struct px_config *cfg, char *err,
                                         size_t errlen);

struct px_deploy_spec {
    const char *service;
    const char *const *targets;       /* "HOST:PORT" */
    size_t ntargets;
    const char *const *hosts;         /* NULL/0: keep the service's hosts (any host for a new one) */
    size_t nhosts;
    int hosts_given;                  /* hosts replace the service's, even when empty */
    const char *path_prefix;          /* NULL: keep, or "/" */
    const char *health_check_path;    /* NULL: keep, or "/up" */
    uint64_t interval_ms, timeout_ms, deploy_timeout_ms, drain_timeout_ms;
    int force;                        /* switch without waiting for health */
    int tls;
    const char *const *log_request_headers;  /* given: replace the service's (else keep; a new */
    size_t nlog_request_headers;             /* service gets px_log_request_headers_default) */
    int log_request_headers_given;
    const char *const *log_response_headers; /* the same (a new service: none) */
    size_t nlog_response_headers;
    int log_response_headers_given;
    struct px_svc_opts opts;          /* borrowed; replaces the service's, except more_prefixes,
                                         kept with path_prefix when that is NULL */
    struct px_buffering buffering;    /* as given (the caller fills the defaults) */
};

/* What a deploy or rollback that succeeded did (borrowed for the callback). */
struct px_deploy_result {
    const char *service;
    const char *const *active;        /* the targets now serving */
    size_t nactive;
    const char *const *previous;      /* what rollback would switch back to */
    size_t nprevious;
    uint32_t drained;                 /* requests in flight on the old targets at the switch */
    uint32_t cut;                     /* of those, cut with 504 at drain_timeout */
    uint64_t duration_ms;
};

/* A long operation's reports. progress: a line for the operator ("waiting
 * for ... to be healthy", "switched", "draining N requests"). done: once;
 * PX_E_OK with result, else the code (PX_E_BAD_REQUEST, PX_E_CONFLICT,
 * PX_E_INVALID_TARGET, PX_E_BUSY, PX_E_UNKNOWN_SERVICE, PX_E_NO_PREVIOUS,
 * PX_E_HEALTH_CHECK_FAILED, PX_E_SHUTTING_DOWN, PX_E_INTERNAL) and a message
 * with result NULL. The callbacks may be called before px_deploy returns. */
typedef void (*px_deploy_progress_cb)(void *arg, const char *text);
typedef void (*px_deploy_done_cb)(void *arg, enum px_err code, const char *message,
                                  const struct px_deploy_result *result);

void px_deploy(struct px_deployer *d, const struct px_deploy_spec *spec, px_deploy_progress_cb progress,
               px_deploy_done_cb done, void *arg);
/* Switch back to the previous targets, with the health-check path and
 * timings of the last deploy (kept in the state file), and draining. */
void px_rollback(struct px_deployer *d, const char *service, uint64_t drain_timeout_ms,
                 px_deploy_progress_cb progress, px_deploy_done_cb done, void *arg);
/* The client of an operation went away: keep going, report to nobody. */
void px_deploy_forget(struct px_deployer *d, void *arg);

/* stop (503 with message), pause (requests wait up to max_pause_ms, then
 * 504), resume (ends a stop or a pause; paused requests go on), remove.
 * Immediate: PX_E_OK, else PX_E_UNKNOWN_SERVICE, PX_E_BUSY (remove during a
 * deploy), PX_E_CONFLICT/PX_E_BAD_REQUEST (the table no longer builds) or
 * PX_E_INTERNAL, with the message in msg. */
enum px_err px_deployer_stop(struct px_deployer *d, const char *service, const char *message, char *msg,
                             size_t msglen);
enum px_err px_deployer_pause(struct px_deployer *d, const char *service, uint64_t max_pause_ms, char *msg,
                              size_t msglen);
enum px_err px_deployer_resume(struct px_deployer *d, const char *service, char *msg, size_t msglen);
enum px_err px_deployer_remove(struct px_deployer *d, const char *service, char *msg, size_t msglen);
/* The deployed services with tls (deploy --tls), in state-file order:
 * fn(arg, service, hosts, nhosts) for each (borrowed for the call). */
typedef void (*px_deployer_tls_fn)(void *arg, const char *service, char *const *hosts, size_t nhosts);
void px_deployer_each_tls(const struct px_deployer *d, px_deployer_tls_fn fn, void *arg);
/* One served service, as `list` shows it (borrowed for the callback). */
struct px_deploy_entry {
    const struct px_service *svc;     /* in the published table: name, state, hosts, path_prefix,
                                         targets, stop_message, max_pause_ms (px/services.h) */
    const char *const *previous;      /* deployed services only; else none */
    size_t nprevious;
    uint32_t in_flight;               /* requests and tunnels on its targets, all workers */
    int deployed;                     /* by proxyctl (else a [service] of the config) */
};
typedef void (*px_deployer_list_fn)(void *arg, const struct px_deploy_entry *e);
/* Every service of the published table, in table order; fn may be NULL.
 * Returns how many there are. */
size_t px_deployer_each(struct px_deployer *d, px_deployer_list_fn fn, void *arg);
/* A deploy or rollback is running (a binary upgrade waits for none). */
int px_deployer_busy(const struct px_deployer *d);

#endif
