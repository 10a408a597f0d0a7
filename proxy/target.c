/* target.c -- the target registry and per-worker load slots. See
 * px/target.h for ownership and threading. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/target.h"

/* Registry: main thread only. A linear scan: acquire runs on a deploy or a
 * reload, never per request. */
static struct px_target **targets;
static size_t ntargets, cap_targets;
static uint32_t next_target_id;
static int nworkers = PX_MAX_WORKERS;

void px_target_set_nworkers(int n)
{
    nworkers = n < 1 ? 1 : (n > PX_MAX_WORKERS ? PX_MAX_WORKERS : n);
}

void px_target_inflight(const struct px_target *t, uint32_t *requests, uint32_t *tunnels)
{
    uint32_t rq = 0, tn = 0;
    for (int w = 0; w < nworkers; w++) {
        rq += atomic_load_explicit(&t->load[w].requests, memory_order_relaxed);
        tn += atomic_load_explicit(&t->load[w].tunnels, memory_order_relaxed);
    }
    if (requests)
        *requests = rq;
    if (tunnels)
        *tunnels = tn;
}

const char *px_target_health_state(const struct px_target *t, char *buf, size_t n)
{
    if (atomic_load_explicit(&t->draining, memory_order_relaxed)) {
        uint32_t rq, tn;
        px_target_inflight(t, &rq, &tn);
        return rq + tn ? "draining" : "standby"; /* retired, and its last request has ended */
    }
    if (!atomic_load_explicit(&t->healthy, memory_order_relaxed))
        return "unhealthy";
    uint32_t fails = atomic_load_explicit(&t->health_fails, memory_order_relaxed);
    if (fails == 0 || n == 0)
        return "healthy";
    snprintf(buf, n, "failing %u/%d", (unsigned)fails, PX_TARGET_HEALTH_FALL);
    return buf;
}

const struct px_target *px_target_find(const char *addr)
{
    for (size_t i = 0; i < ntargets; i++)
        if (strcmp(targets[i]->addr.text, addr) == 0)
            return targets[i];
    return NULL;
}

struct px_target *px_target_acquire(const struct px_addr *a)
{
    for (size_t i = 0; i < ntargets; i++) {
        struct px_target *t = targets[i];
        if (t->addr.len == a->len && memcmp(&t->addr.ss, &a->ss, a->len) == 0 &&
            strcmp(t->addr.text, a->text) == 0) {
            t->refs++;
            return t;
        }
    }
    if (ntargets == cap_targets) {
        size_t nc = cap_targets ? cap_targets * 2 : 16;
        struct px_target **nt = realloc(targets, nc * sizeof(*nt));
        if (nt == NULL)
            return NULL;
        targets = nt;
        cap_targets = nc;
    }
    struct px_target *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->load = calloc((size_t)nworkers, sizeof(*t->load));
    if (t->load == NULL) {
        free(t);
        return NULL;
    }
    t->addr = *a;
    t->id = next_target_id++;
    atomic_init(&t->healthy, 1);
    atomic_init(&t->draining, 0);
    atomic_init(&t->health_fails, 0);
    t->refs = 1;
    targets[ntargets++] = t;
    return t;
}

void px_target_release(struct px_target *t)
{
    if (t == NULL || --t->refs > 0)
        return;
    for (size_t i = 0; i < ntargets; i++) {
        if (targets[i] == t) {
            targets[i] = targets[--ntargets];
            break;
        }
    }
    free(t->load);
    free(t);
}

void px_target_shutdown(void)
{
    free(targets);
    targets = NULL;
    ntargets = cap_targets = 0;
}
