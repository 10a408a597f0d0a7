/* status.c -- the status page's figures (px/status.h): the last-minute
 * window and the quantile estimate. Main thread only. */
#include <stdlib.h>
#include <string.h>

#include "px/status.h"

/* One service's ring, aligned with the window's ring of times: sample seq
 * lives at [seq % PX_STATUS_SAMPLES]; first is the oldest seq it has (a
 * service added later, or restarted, has a shorter window). */
struct win_svc {
    uint64_t first;
    int seen;
    struct px_status_counts c[PX_STATUS_SAMPLES];
};

struct px_status_window {
    double bounds[PX_STATUS_NBUCKETS - 1];
    uint64_t t_ms[PX_STATUS_SAMPLES];
    uint64_t seq; /* samples taken; the newest is seq - 1 */
    struct win_svc **svcs;
    size_t nsvcs;
};

struct px_status_window *px_status_window_new(const double *bounds_s)
{
    struct px_status_window *w = calloc(1, sizeof(*w));
    if (w != NULL)
        memcpy(w->bounds, bounds_s, sizeof(w->bounds));
    return w;
}

void px_status_window_free(struct px_status_window *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->nsvcs; i++)
        free(w->svcs[i]);
    free(w->svcs);
    free(w);
}

static int went_back(const struct px_status_counts *old, const struct px_status_counts *now)
{
    if (now->requests < old->requests || now->errors < old->errors)
        return 1;
    for (int b = 0; b < PX_STATUS_NBUCKETS; b++)
        if (now->buckets[b] < old->buckets[b])
            return 1;
    return 0;
}

int px_status_window_add(struct px_status_window *w, uint64_t now_ms, const struct px_status_counts *counts,
                         size_t nids)
{
    if (nids > w->nsvcs) {
        struct win_svc **n = realloc(w->svcs, nids * sizeof(*n));
        if (n == NULL)
            return -1;
        for (size_t i = w->nsvcs; i < nids; i++)
            n[i] = NULL;
        w->svcs = n;
        w->nsvcs = nids;
    }
    /* Allocate first, so that a failure leaves the window as it was. */
    for (size_t i = 0; i < nids; i++)
        if (w->svcs[i] == NULL && (w->svcs[i] = calloc(1, sizeof(struct win_svc))) == NULL)
            return -1;
    uint64_t seq = w->seq++;
    size_t slot = seq % PX_STATUS_SAMPLES;
    w->t_ms[slot] = now_ms;
    for (size_t i = 0; i < nids; i++) {
        struct win_svc *s = w->svcs[i];
        if (!s->seen || went_back(&s->c[(seq - 1) % PX_STATUS_SAMPLES], &counts[i]))
            s->first = seq;
        s->seen = 1;
        s->c[slot] = counts[i];
    }
    /* An id that was not given this time (the caller's list is shorter:
     * never, ids only grow) starts over when it comes back. */
    for (size_t i = nids; i < w->nsvcs; i++)
        if (w->svcs[i] != NULL)
            w->svcs[i]->seen = 0;
    return 0;
}

void px_status_window_figures(const struct px_status_window *w, size_t id, struct px_status_figures *out)
{
    memset(out, 0, sizeof(*out));
    out->p50_ms = out->p99_ms = -1;
    if (id >= w->nsvcs || w->svcs[id] == NULL || !w->svcs[id]->seen || w->seq == 0)
        return;
    const struct win_svc *s = w->svcs[id];
    uint64_t newest = w->seq - 1, oldest = s->first;
    if (newest - oldest > PX_STATUS_SAMPLES - 1)
        oldest = newest - (PX_STATUS_SAMPLES - 1);
    if (oldest == newest)
        return;
    const struct px_status_counts *a = &s->c[oldest % PX_STATUS_SAMPLES], *b = &s->c[newest % PX_STATUS_SAMPLES];
    uint64_t t0 = w->t_ms[oldest % PX_STATUS_SAMPLES], t1 = w->t_ms[newest % PX_STATUS_SAMPLES];
    out->seconds = t1 > t0 ? (double)(t1 - t0) / 1000.0 : 0;
    uint64_t n = b->requests - a->requests;
    if (out->seconds > 0)
        out->rate = (double)n / out->seconds;
    if (n == 0)
        return;
    out->error_rate = (double)(b->errors - a->errors) / (double)n;
    uint64_t cum[PX_STATUS_NBUCKETS];
    for (int i = 0; i < PX_STATUS_NBUCKETS; i++)
        cum[i] = b->buckets[i] - a->buckets[i];
    double p50 = px_status_quantile(0.5, w->bounds, cum, PX_STATUS_NBUCKETS);
    double p99 = px_status_quantile(0.99, w->bounds, cum, PX_STATUS_NBUCKETS);
    out->p50_ms = p50 < 0 ? -1 : p50 * 1000.0;
    out->p99_ms = p99 < 0 ? -1 : p99 * 1000.0;
}

/* As Prometheus' bucketQuantile (promql/quantile.go): the rank's bucket by
 * binary search over the finite buckets, +Inf answers the highest bound. */
double px_status_quantile(double q, const double *bounds, const uint64_t *cum, size_t n)
{
    if (n < 2 || cum[n - 1] == 0 || q < 0 || q > 1)
        return -1;
    double rank = q * (double)cum[n - 1];
    size_t lo = 0, hi = n - 1; /* first i in [0, n-1) with cum[i] >= rank, else n - 1 */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((double)cum[mid] >= rank)
            hi = mid;
        else
            lo = mid + 1;
    }
    size_t i = lo;
    if (i == n - 1)
        return bounds[n - 2];
    if (i == 0 && bounds[0] <= 0)
        return bounds[0];
    double lower = i == 0 ? 0 : bounds[i - 1];
    uint64_t below = i == 0 ? 0 : cum[i - 1];
    uint64_t in = cum[i] - below;
    if (in == 0) /* q == 0 and an empty first bucket */
        return lower;
    return lower + (bounds[i] - lower) * ((rank - (double)below) / (double)in);
}
