/* px/target.h -- upstream targets by address: the registry that shares one
 * object per HOST:PORT between services tables, the per-worker load slots
 * (in-flight requests and tunnels), health and draining (kamal-proxy's
 * target.go).
 *
 * Ownership: a target is refcounted by the tables (and the deploy and health
 * code) that acquired it; px_target_release frees it with the last
 * reference. The registry is process state of this module.
 * Threading: acquire, release and set_nworkers are main thread only (refs
 * is a plain int). A worker writes only its own load slot
 * (px_target_load_add, a plain load and store, no read-modify-write); any
 * thread reads healthy/draining and px_target_inflight. A worker may use a
 * target while the snapshot naming it is pinned (px/routes.h). */
#ifndef PX_TARGET_H
#define PX_TARGET_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "px/addr.h"
#include "px/common.h" /* PX_MAX_WORKERS */

/* What one worker has in flight on a target. Each worker writes only its
 * own slot; the main thread sums the slots to know when a draining target is
 * idle. A cache line each, so workers never share one. */
struct px_target_load {
    _Atomic uint32_t requests;  /* requests with a connection to the target */
    _Atomic uint32_t tunnels;   /* WebSocket tunnels to it */
    char pad[64 - 2 * sizeof(uint32_t)];
};

/* An upstream HOST:PORT. Fields other than the atomics are immutable. */
struct px_target {
    struct px_addr addr;
    uint32_t id;              /* unique for the process lifetime; indexes per-worker pools */
    _Atomic int healthy;      /* written by health checks, read by workers */
    _Atomic int draining;     /* set when a deploy retires this target */
    _Atomic uint32_t health_fails; /* consecutive failed health checks (the monitor writes it;
                                      0 when passing or not checked) */
    int refs;                 /* holders; main thread only */
    struct px_target_load *load; /* one slot per worker (the count set when it was made) */
};

/* How many load slots targets made from now on get, and how many
 * px_target_inflight sums: n clamped to 1..PX_MAX_WORKERS (default
 * PX_MAX_WORKERS). Main thread, before the workers start. */
void px_target_set_nworkers(int n);

/* The target for HOST:PORT a, shared with every holder naming it: a new
 * reference (px_target_release drops it). NULL out of memory. Main thread. */
struct px_target *px_target_acquire(const struct px_addr *a);
/* Drop one reference (NULL is fine); the last frees the target. Main thread. */
void px_target_release(struct px_target *t);

/* Worker wid's own slot: add to its counts. */
static inline void px_target_load_add(struct px_target *t, int wid, int requests, int tunnels)
{
    struct px_target_load *l = &t->load[wid];
    if (requests)
        atomic_store_explicit(&l->requests,
                              atomic_load_explicit(&l->requests, memory_order_relaxed) + (uint32_t)requests,
                              memory_order_relaxed);
    if (tunnels)
        atomic_store_explicit(&l->tunnels,
                              atomic_load_explicit(&l->tunnels, memory_order_relaxed) + (uint32_t)tunnels,
                              memory_order_relaxed);
}
/* Any thread: requests and tunnels in flight on t, summed over workers.
 * Either pointer may be NULL. */
void px_target_inflight(const struct px_target *t, uint32_t *requests, uint32_t *tunnels);

/* A health check failure count that takes a target out of balancing
 * (px/health.h PX_HEALTH_FALL is this). */
#define PX_TARGET_HEALTH_FALL 3

/* The target's state as proxyctl list/status, the status page and the
 * metrics show it: "draining" (a deploy retired it; requests or tunnels
 * still run on it), "standby" (retired and idle: a previous target kept
 * for rollback), "unhealthy" (out of balancing), "failing N/M" (N consecutive
 * failed checks of the PX_TARGET_HEALTH_FALL = M that take it out; written
 * into buf, which must hold 24 bytes), else "healthy" (passing, or not
 * checked at all). Returns a static string or buf. Any thread. */
const char *px_target_health_state(const struct px_target *t, char *buf, size_t n);

/* The registered target whose address text is addr ("10.0.0.5:3000"), or
 * NULL; no reference is taken (valid until the next release). Main thread. */
const struct px_target *px_target_find(const char *addr);

/* Forget the registry at exit (the targets themselves go with their last
 * holder). Main thread, no worker running. */
void px_target_shutdown(void);

#endif
