/* px/status.h -- the status page on metrics_listen (issue 16): GET / is
 * one self-contained HTML page (proxy/status_page.html, built into the
 * binary as px_status_page_html), which polls GET /status.json beside it.
 *
 * The figures "over the last minute" (request rate, p50/p99, 5xx rate) come
 * from a window of per-service samples: a one-second timer on the main
 * thread reads each service's cumulative counters (px_stats_service_sum,
 * px/stats.h) and keeps the last PX_STATUS_SAMPLES of them; a figure is the
 * difference between the newest sample and the oldest one in the window,
 * the way Prometheus' rate() and histogram_quantile() read a range. Main
 * thread only. A control-plane header.
 *
 * Sampling costs px_stats_service_sum per service per second; the window
 * keeps 61 samples of 14 counters per service (6.8 KB a service). */
#ifndef PX_STATUS_H
#define PX_STATUS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct px_server;
struct px_deployer;

/* Start the status page's figures on base (main thread; with
 * metrics_listen): the one-second sampling timer. srv and dep are borrowed
 * until px_status_stop. The document itself is served by px/metrics.h's
 * hooks px_status_json() and px_status_page(), defined in status.c. 0, or
 * -1 out of memory. */
int px_status_start(struct event_base *base, struct px_server *srv, struct px_deployer *dep);
/* Stop the timer and forget the window (NULL-safe: any time). */
void px_status_stop(void);

/* The page, NUL-terminated; px_status_page_len excludes the NUL. */
extern const unsigned char px_status_page_html[];
extern const size_t px_status_page_len;

/* ---- the last-minute window ---- */

#define PX_STATUS_SAMPLES 61 /* 60 one-second intervals */
#define PX_STATUS_NBUCKETS 12 /* as PX_STATS_NBUCKETS: 11 bounds, then +Inf */

/* One service's cumulative counters at one instant. */
struct px_status_counts {
    uint64_t requests;                       /* every answered request */
    uint64_t errors;                         /* of those, 5xx */
    uint64_t buckets[PX_STATUS_NBUCKETS];    /* cumulative: requests <= bound i; [last] = requests */
};

/* What the window says about one service. p50_ms and p99_ms are negative
 * when no request ended in the window (the page shows "-"). */
struct px_status_figures {
    double rate;        /* requests per second */
    double p50_ms, p99_ms;
    double error_rate;  /* 5xx / requests, 0 when no request */
    double seconds;     /* span of the window (0: a single sample, no figure yet) */
};

struct px_status_window;

/* bounds_s: the PX_STATUS_NBUCKETS - 1 finite upper bounds in seconds,
 * ascending (copied). NULL when out of memory. */
struct px_status_window *px_status_window_new(const double *bounds_s);
void px_status_window_free(struct px_status_window *w);
/* A sample taken at now_ms (monotonic) of nids services: counts[i] is the
 * service whose id is i (ids are dense and stable: px_stats_service_id).
 * An id beyond the previous sample's nids was made since (its counters
 * started at zero): its window starts at the previous sample, at zero. An id
 * seen for the first time otherwise (the first sample) starts its window at
 * this sample; a counter that went backwards (never, with px/stats.h;
 * defensive) restarts its id's window. -1 when out of memory (the sample is dropped). */
int px_status_window_add(struct px_status_window *w, uint64_t now_ms, const struct px_status_counts *counts,
                         size_t nids);
/* The figures of service id over the window (all zero, p50/p99 negative,
 * when the id has fewer than two samples). */
void px_status_window_figures(const struct px_status_window *w, size_t id, struct px_status_figures *out);

/* Prometheus' histogram_quantile(q, ...) on cumulative bucket counts
 * cum[0..n) whose upper bounds are bounds[0..n-1) and +Inf: linear
 * interpolation inside the bucket that holds the rank q * cum[n-1] (the
 * first bucket's lower bound is 0); the +Inf bucket answers the highest
 * finite bound. Negative when cum[n-1] is 0. In the unit of bounds. */
double px_status_quantile(double q, const double *bounds, const uint64_t *cum, size_t n);

#endif
