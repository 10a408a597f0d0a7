/* pool.c -- upstream connections: the per-worker keep-alive pool per
 * target, connecting, closing. A closed connection goes on the worker's
 * dead list and is freed at the end of the loop iteration (never inside its
 * own callback). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "px/common.h"
#include "px/config.h"
#include "px/routes.h"
#include "px/sock.h"
#include "px/upstream.h"
#include "px/worker.h"

struct px_upool *px_pool_of(struct px_worker *w, const struct px_target *t)
{
    if (PX_LIKELY(t->id < w->up.npools))
        return &w->up.pools[t->id];
    uint32_t n = w->up.npools ? w->up.npools : 16;
    while (n <= t->id)
        n *= 2;
    struct px_upool *np = realloc(w->up.pools, n * sizeof(*np));
    if (np == NULL)
        return NULL;
    memset(np + w->up.npools, 0, (n - w->up.npools) * sizeof(*np));
    /* no connection points at a pool's list heads (px/list.h): moving is
     * fine, and zeroed slots are empty lists */
    w->up.pools = np;
    w->up.npools = n;
    return &w->up.pools[t->id];
}

#define UCONN(node) px_list_entry(node, struct px_uconn, link)

static void pool_unlink(struct px_worker *w, struct px_upool *p, struct px_uconn *u)
{
    px_list_remove(&p->idle, &u->link);
    p->nidle--;
    px_list_remove(&w->up.lru, &u->lru);
    w->up.nidle--;
}

static void pool_link(struct px_worker *w, struct px_upool *p, struct px_uconn *u)
{
    px_list_insert_head(&p->idle, &u->link);
    p->nidle++;
    px_list_insert_head(&w->up.lru, &u->lru);
    w->up.nidle++;
}

/* Busy connections are listed per target too, so that a deploy can cut
 * the requests still running on a target at drain_timeout. */
static void busy_link(struct px_worker *w, struct px_uconn *u)
{
    px_list_insert_head(&w->up.pools[u->target_id].busy, &u->link);
    u->on_busy = 1;
}

void px_pool_unbusy(struct px_uconn *u)
{
    if (!u->on_busy)
        return;
    px_list_remove(&u->w->up.pools[u->target_id].busy, &u->link);
    u->on_busy = 0;
}

void px_uconn_close(struct px_uconn *u)
{
    if (u == NULL || u->state == U_DEAD)
        return;
    struct px_worker *w = u->w;
    if (u->state == U_IDLE && u->target_id < w->up.npools)
        pool_unlink(w, &w->up.pools[u->target_id], u);
    px_pool_unbusy(u);
    event_del(&u->timer);
    px_sock_close(&u->s);
    u->state = U_DEAD;
    u->req = NULL;
    px_list_insert_head(&w->up.dead, &u->link);
    px_worker_schedule_gc(w);
}

void px_pool_gc(struct px_worker *w)
{
    struct px_list_node *n;
    while ((n = px_list_first(&w->up.dead)) != NULL) {
        px_list_remove(&w->up.dead, n);
        free(UCONN(n));
    }
}

void px_pool_close_idle(struct px_worker *w, uint32_t target_id)
{
    if (target_id == UINT32_MAX) {
        for (uint32_t i = 0; i < w->up.npools; i++)
            px_pool_close_idle(w, i);
        return;
    }
    if (target_id >= w->up.npools)
        return;
    struct px_list *idle = &w->up.pools[target_id].idle;
    while (!px_list_empty(idle))
        px_uconn_close(UCONN(px_list_first(idle)));
}

void px_pool_exit(struct px_worker *w)
{
    px_pool_close_idle(w, UINT32_MAX);
    for (uint32_t i = 0; i < w->up.npools; i++) { /* warming ones: no request owns them */
        struct px_list_node *n, *next;
        px_list_foreach_safe(&w->up.pools[i].busy, n, next) {
            struct px_uconn *u = UCONN(n);
            if (u->req == NULL)
                px_uconn_close(u);
        }
    }
    px_pool_gc(w);
    free(w->up.pools);
    w->up.pools = NULL;
    w->up.npools = 0;
}

/* ---- connections ---- */

static struct px_uconn *uconn_connect(struct px_worker *w, const struct px_target *t,
                                      const struct px_uconn_handlers *h, int *err)
{
    const struct px_addr *a = &t->addr;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = connect(fd, (const struct sockaddr *)&a->ss, a->len);
    if (rc < 0 && errno != EINPROGRESS) {
        *err = errno;
        close(fd);
        return NULL;
    }
    struct px_uconn *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        *err = ENOMEM;
        close(fd);
        return NULL;
    }
    u->w = w;
    u->target_id = t->id;
    if (px_sock_open(&u->s, w->base, fd, h->event, u) < 0) {
        free(u);
        *err = ENOMEM;
        return NULL;
    }
    u->s.read_chunk = PX_UP_READ_CHUNK;
    event_assign(&u->timer, w->base, -1, 0, h->timeout, u);
    u->state = rc == 0 ? U_BUSY : U_CONNECTING;
    if (u->state == U_CONNECTING)
        u->s.writable = u->s.readable = 0;
    px_timer_arm(&u->timer, &u->timer_due, w->tv_uconnect);
    return u;
}

/* Whether s's event was made active in this loop iteration and its
 * callback has not run yet (something arrived: data, a FIN, a reset).
 *
 * libevent's private evcb_flags, on purpose, and only here: libevent 2.1
 * has no public way to ask it. event_pending() also reports the registered
 * bits of a persistent event (EV_READ is always set on our sockets), so it
 * answers yes for every socket; a flag set by our own callback cannot tell
 * either, since the callback that has not run yet is the very case; a hook
 * between the poll and the callbacks (evwatch) comes with libevent 2.2
 * only; event priorities would reorder every callback. The public way, a
 * recv(MSG_PEEK | MSG_DONTWAIT), costs a system call per reused connection
 * (five instead of four per keep-alive request). So the flag is read for
 * the libevent series whose layout it was checked against (2.1: bits
 * defined in the public event_struct.h, member of struct event); any other
 * version, or -DPX_EVENT_PUBLIC_ONLY, takes the peek, which answers the
 * same question (anything to read, an EOF or an error) at that price. */
static int event_queued(const struct px_sock *s)
{
#if !defined(PX_EVENT_PUBLIC_ONLY) && LIBEVENT_VERSION_NUMBER >= 0x02010000 && LIBEVENT_VERSION_NUMBER < 0x02020000
    return (s->ev.ev_evcallback.evcb_flags & (EVLIST_ACTIVE | EVLIST_ACTIVE_LATER)) != 0;
#else
    char c;
    ssize_t n = recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
#endif
}

/* An idle connection whose event is already active in this loop iteration
 * may have been closed by the upstream in the same epoll batch that brought
 * the request about to use it: look (one read) before reusing it, as its
 * idle handler would. Cheap: nothing to do unless an event is pending. */
static int idle_usable(struct px_uconn *u)
{
    if (!u->s.rdhup && !event_queued(&u->s))
        return 1;
    u->s.readable = 1;
    px_sock_read(&u->s, 4096);
    return !(u->s.eof || u->s.error || evbuffer_get_length(u->s.in));
}

struct px_uconn *px_pool_get(struct px_worker *w, struct px_target *t, const struct px_uconn_handlers *h,
                             int *err)
{
    struct px_upool *p = px_pool_of(w, t);
    if (p == NULL) {
        *err = ENOMEM;
        return NULL;
    }
    struct px_uconn *u;
    while ((u = UCONN(px_list_first(&p->idle))) != NULL && !idle_usable(u))
        px_uconn_close(u);
    if (u) {
        pool_unlink(w, p, u);
        u->state = U_BUSY;
        u->reused = 1;
    } else if ((u = uconn_connect(w, t, h, err)) == NULL) {
        return NULL;
    }
    busy_link(w, u);
    return u;
}

void px_pool_warm(struct px_worker *w, const struct px_target *t, const struct px_uconn_handlers *h,
                  const uint32_t *from, uint32_t nfrom, uint32_t nnew)
{
    struct px_upool *p = px_pool_of(w, t);
    if (p == NULL || w->stopping)
        return;
    /* What this worker needs: the most requests it had in flight at once on
     * the targets replaced, shared among the new targets as the balancer
     * will share them, plus one. Counted here, not by the main thread,
     * because only the worker knows its own concurrency; a peak, not the
     * pool's size, so that connections warmed and never used do not feed
     * the next deploy's count. The old pools' peaks restart from zero. */
    uint32_t peak = 0;
    for (uint32_t i = 0; i < nfrom; i++)
        if (from[i] < w->up.npools && from[i] != t->id) {
            struct px_upool *o = &w->up.pools[from[i]];
            peak += o->peak > o->outstanding ? o->peak : o->outstanding;
            o->peak = o->outstanding;
        }
    if (nnew == 0)
        nnew = 1;
    uint32_t count = (peak + nnew - 1) / nnew + 1;
    if (count > PX_WARM_MAX)
        count = PX_WARM_MAX;
    uint32_t have = p->nidle + p->warming;
    for (; have < count; have++) {
        int err = 0;
        struct px_uconn *u = uconn_connect(w, t, h, &err);
        if (u == NULL)
            return; /* the deploy's health checks passed: a real failure shows on use */
        if (u->state == U_BUSY) {
            px_pool_release(u, 1); /* connected at once (loopback) */
        } else {
            u->warm = 1; /* no request: its event handler pools it once connected */
            p->warming++;
            busy_link(w, u); /* listed, so that a cut or the worker's exit closes it */
        }
    }
}

/* A warming connection's connect ended: pool it, or drop it. */
void px_pool_warmed(struct px_uconn *u, int ok)
{
    struct px_worker *w = u->w;
    if (u->target_id < w->up.npools && w->up.pools[u->target_id].warming)
        w->up.pools[u->target_id].warming--;
    u->warm = 0;
    if (!ok) {
        px_uconn_close(u);
        return;
    }
    u->state = U_BUSY;
    u->s.writable = 1;
    px_pool_release(u, 1);
}

/* Release u after a complete response: back to the pool or closed. */
void px_pool_release(struct px_uconn *u, int reusable)
{
    struct px_worker *w = u->w;
    u->req = NULL;
    px_pool_unbusy(u);
    if (!reusable || w->stopping || evbuffer_get_length(u->s.in) || u->s.eof || u->s.error ||
        u->target_id >= w->up.npools) {
        px_uconn_close(u);
        return;
    }
    uint32_t max = w->cfg->upstream_keepalive;
    if (max == 0) {
        px_uconn_close(u);
        return;
    }
    /* Full: the one idle the longest goes, as nginx's keepalive cache
     * does; the returning one is the likeliest to be reused soon (LIFO). */
    while (w->up.nidle >= max && !px_list_empty(&w->up.lru)) {
        px_uconn_close(px_container_of(px_list_last(&w->up.lru), struct px_uconn, lru));
        w->up.idle_evicted++;
    }
    u->state = U_IDLE;
    pool_link(w, &w->up.pools[u->target_id], u);
    px_timer_arm(&u->timer, &u->timer_due, w->tv_uidle);
}
