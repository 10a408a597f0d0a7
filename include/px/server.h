/* px/server.h -- the process: listeners, privilege drop, signals, workers,
 * the all-or-nothing reload, graceful stop, and the main-thread event base.
 *
 * Everything here runs on the main thread. The main-thread event base is
 * where whatever is not a request runs: signals, the snapshot reaper,
 * ticket-key rotation, the control socket, health checks, deploys and ACME
 * (each module is handed the base when it is made).
 * A control-plane header: data-path files never include it (make layers). */
#ifndef PX_SERVER_H
#define PX_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

struct px_server;

/* Load config_path, open the logs, build and publish the first route
 * snapshot (certificates included), bind the listeners, then drop to
 * `user`. Workers do not run yet. NULL on failure with the reason in err;
 * err is empty when the reason has already been written to the error log. */
struct px_server *px_server_new(const char *config_path, char *err, size_t errlen);
/* Start the workers and run the main loop until a stop completes. Returns the
 * process exit status: 0 after a graceful stop, 1 when workers could not run. */
int px_server_run(struct px_server *s);
/* Stop the workers if they run, close everything, free s (NULL is fine). */
void px_server_free(struct px_server *s);

/* Reload the configuration file, all or nothing: the new config is loaded,
 * the new log files opened and the new snapshot parts (certificates
 * included) built first; only when all of that succeeded are the logs
 * switched and the snapshot published. 0, or -1 with the reason in err and
 * nothing changed. SIGHUP calls it; so will the control plane's `reload`. */
int px_server_reload(struct px_server *s, char *err, size_t errlen);
/* Tell every worker to adopt the newest snapshot now (after a
 * px_routes_publish_* from the control plane); idle workers would otherwise
 * adopt it at their next event. */
void px_server_routes_published(struct px_server *s);
/* Build and publish a new TLS part from the current config's [tls] and the
 * ACME lineages (config and services parts kept; sessions stay resumable):
 * after a renewal, and for `proxyctl cert reload`. 0, or -1 with the reason
 * in err and the current certificates still serving. */
int px_server_reload_certs(struct px_server *s, char *err, size_t errlen);
/* The ACME manager, or NULL when [acme] is not enabled. */
struct px_acme_manager *px_server_acme(struct px_server *s);
/* The cluster ([cluster]), or NULL without one. */
struct px_cluster *px_server_cluster(struct px_server *s);
/* Begin a graceful stop, as SIGTERM does (a second call cuts at once). */
void px_server_stop(struct px_server *s);

/* A binary upgrade (proxyctl upgrade, SIGUSR2; px/upgrade.h): start binary
 * (NULL: the running executable, /proc/self/exe as it was at start) with
 * the same config path, hand it the listening sockets, the control socket
 * and the carry-over, and once it says it serves, stop accepting and drain
 * as px_server_stop does. done(arg, pid, NULL) then, or done(arg, 0, why)
 * when it failed to start within timeout_ms: nothing changed here. -1 with
 * the reason in err when it cannot begin (another one runs, stopping, not
 * executable); done is not called then. */
#define PX_UPGRADE_TIMEOUT_MS 60000
typedef void (*px_server_upgrade_fn)(void *arg, long pid, const char *error);
int px_server_upgrade(struct px_server *s, const char *binary, unsigned timeout_ms, px_server_upgrade_fn done,
                      void *arg, char *err, size_t errlen);

/* The caller arg of an upgrade in progress went away: done is not called. */
void px_server_upgrade_forget(struct px_server *s, void *arg);

/* For `proxyctl status`. */
uint64_t px_server_uptime_s(const struct px_server *s);
int px_server_nworkers(const struct px_server *s);
const char *px_server_config_path(const struct px_server *s);

/* proxyd -t: load the config and its certificates, change nothing. 0, or -1
 * with "FILE:LINE: key: message" or "FILE: reason" in err. */
int px_server_check(const char *config_path, char *err, size_t errlen);

#endif
