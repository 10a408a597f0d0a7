/* px/metrics.h -- the metrics listener (metrics_listen): GET /metrics in
 * Prometheus text format 0.0.4, GET /status.json and GET / through the
 * status page's hooks (px_status_json, px_status_page: proxy/status.c).
 * Control plane: everything here runs on the main thread's event base,
 * never on a worker; a scrape reads the workers' counters (px/stats.h) with
 * relaxed loads and stops nobody.
 *
 * It also keeps what only the control plane knows: the deploys (counts by
 * service and result, a duration histogram, the last PX_METRICS_DEPLOYS in
 * a ring) and the ACME renewals (counts by lineage and result, the last
 * attempt per lineage), for /metrics and the status page. */
#ifndef PX_METRICS_H
#define PX_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct px_addr;
struct px_metrics;

/* Listen on addr on base (main thread), or on fd when it is >= 0 (a
 * listening socket a binary upgrade handed over; it is owned from here on,
 * even on failure). NULL with a message in err (the bind failed, out of
 * memory). */
struct px_metrics *px_metrics_new(struct event_base *base, const struct px_addr *addr, int fd, char *err,
                                  size_t errlen);
/* The listening socket (for a binary upgrade to hand over). */
int px_metrics_fd(const struct px_metrics *m);
/* Close the listener and its connections (NULL is fine). */
void px_metrics_free(struct px_metrics *m);
/* The address actually bound (port 0 resolved), "HOST:PORT". */
const char *px_metrics_address(const struct px_metrics *m);

/* The /metrics body (main thread): every family, # HELP and # TYPE first. */
void px_metrics_render(struct evbuffer *out);

/* ---- what the control plane reports (main thread) ---- */

/* A deploy or rollback of service ended: result "ok" or the error code's
 * name; started (wall, ms), duration_ms, targets (the new targets, e.g.
 * "10.0.0.1:3000,10.0.0.2:3000"). */
void px_metrics_deploy_done(const char *service, const char *result, uint64_t started_wall_ms,
                            uint64_t duration_ms, const char *targets);
/* An ACME renewal of lineage ended: result "ok" or the error type; message
 * (NULL: none) for the status page. */
void px_metrics_acme_done(const char *lineage, const char *result, const char *message);

/* ---- readers for the status page ---- */
#define PX_METRICS_DEPLOYS 20
struct px_metrics_deploy {
    char service[128];
    char result[48];
    uint64_t started_wall_ms, duration_ms;
    char targets[256];
};
/* The last deploys, newest first; returns how many (<= PX_METRICS_DEPLOYS). */
size_t px_metrics_deploys(struct px_metrics_deploy out[PX_METRICS_DEPLOYS]);
struct px_metrics_acme {
    const char *lineage, *result, *message; /* valid until the next px_metrics_acme_done */
    uint64_t wall_ms;
};
/* The last ACME attempt of each lineage; returns how many (up to max). */
size_t px_metrics_acme_last(struct px_metrics_acme *out, size_t max);

/* ---- the status page's hooks (proxy/status.c; issue 16's status page) ----
 * Fill body and set *content_type; return the HTTP status to answer (404:
 * not there). Main thread. */
int px_status_json(struct evbuffer *body, const char **content_type);
int px_status_page(struct evbuffer *body, const char **content_type);

#endif
