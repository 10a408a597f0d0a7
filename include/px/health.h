/* px/health.h -- active HTTP health checks of one target.
 *
 * A checker runs on the event base it is given (the main thread's: never a
 * worker's). Every interval it opens a fresh connection to the target, sends
 * `GET PATH HTTP/1.1` with `Host: HOST:PORT`, `User-Agent: proxyd/VERSION`
 * and `Connection: close`, and reads the response head with the HTTP/1
 * client framing (h1client.c): any 2xx within the timeout is a pass, anything
 * else (a connect error, another status, a timeout, an invalid head) a
 * failure. Each result goes to the callback, with a short reason for a
 * failure ("connect: Connection refused", "503", "timed out after 5000 ms").
 *
 * What a result means (taking a target out of a balancer after so many
 * failures, gating a deploy on the first pass) is the caller's business.
 * Threading: one event base; the callback runs on it and may free the
 * checker (px_health_free is safe inside the callback). */
#ifndef PX_HEALTH_H
#define PX_HEALTH_H

#include <stdint.h>

#include <event2/event.h>

#include "px/addr.h"
#include "px/target.h" /* PX_TARGET_HEALTH_FALL */

struct px_health;

struct px_health_result {
    int pass;                 /* 1: a 2xx arrived in time */
    int status;               /* the HTTP status, 0 when none arrived */
    const char *reason;       /* failure: what went wrong (valid during the callback) */
    uint64_t elapsed_ms;      /* from connect to the result */
};

typedef void (*px_health_cb)(void *arg, const struct px_health_result *res);

/* Start checking addr at path every interval_ms (the first check at once),
 * each bounded by timeout_ms. NULL on allocation failure. */
struct px_health *px_health_new(struct event_base *base, const struct px_addr *addr, const char *path,
                                uint64_t interval_ms, uint64_t timeout_ms, px_health_cb cb, void *arg);
/* Stop and free (a check in progress is abandoned). NULL is fine. */
void px_health_free(struct px_health *h);

/* ---- the monitor: the targets of the served services, all the time ----
 *
 * One checker per target of the services that ask for it (deployed ones,
 * and [service] sections that give health_check_path), with the path and
 * the health_check_interval_ms / health_check_timeout_ms of the first service
 * that names it (the monitor's own interval and timeout when those are 0); a
 * sync that finds them changed restarts the checker. A target is taken out of balancing
 * (px_target.healthy = 0) after PX_HEALTH_FALL consecutive failures and put
 * back after one pass; the transitions are logged. px_monitor_sync adds
 * and drops checkers after every publish (start, reload, deploy). */
#define PX_HEALTH_FALL PX_TARGET_HEALTH_FALL

struct px_monitor;
struct px_services;

struct px_monitor *px_monitor_new(struct event_base *base, uint64_t interval_ms, uint64_t timeout_ms);
void px_monitor_sync(struct px_monitor *m, const struct px_services *t);
void px_monitor_free(struct px_monitor *m);

#endif
