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

#endif
