/* balancer.c -- which target of a service gets the next try: least
 * outstanding requests on this worker, round robin on ties (the start index
 * rotates), skipping unhealthy targets; draining and passively down ones
 * only when nothing else is left. */
#include <stdatomic.h>
#include <stdint.h>

#include "px/common.h"
#include "px/routes.h"
#include "px/upstream.h"
#include "px/worker.h"

#define PASSIVE_DOWN_MS 5000

/* ---- target choice ---- */

struct px_target *px_balancer_pick(struct px_req *r, const struct px_target *exclude)
{
    const struct px_service *svc = r->svc;
    struct px_worker *w = r->w;
    struct px_target *best = NULL, *fallback = NULL;
    uint32_t best_out = UINT32_MAX;
    uint64_t now = 0;
    size_t n = svc->ntargets;
    uint32_t start = n > 1 ? w->up.rr++ % (uint32_t)n : 0;
    for (size_t k = 0; k < n; k++) {
        struct px_target *t = svc->targets[(start + k) % n];
        if (t == exclude || !atomic_load_explicit(&t->healthy, memory_order_relaxed))
            continue;
        struct px_upool *p = px_pool_of(w, t);
        if (p == NULL)
            continue;
        /* A draining target is a last resort, not a refusal: a request
         * routed on the snapshot a deploy just replaced only has the old
         * targets, and they still serve until the deploy has answered. */
        if (atomic_load_explicit(&t->draining, memory_order_relaxed)) {
            if (fallback == NULL)
                fallback = t;
            continue;
        }
        if (p->down_until_ms) {
            if (now == 0)
                now = px_now_ms();
            if (p->down_until_ms > now) {
                if (fallback == NULL)
                    fallback = t;
                continue;
            }
            p->down_until_ms = 0;
        }
        if (p->outstanding < best_out) {
            best = t;
            best_out = p->outstanding;
        }
    }
    return best ? best : fallback;
}

void px_balancer_mark_down(struct px_worker *w, const struct px_target *t)
{
    struct px_upool *p = px_pool_of(w, t);
    if (p)
        p->down_until_ms = px_now_ms() + PASSIVE_DOWN_MS;
}
