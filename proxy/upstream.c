/* upstream.c -- upstream connections: choice, keep-alive pool, relay.
 *
 * A px_uconn is either connecting, busy with one request, idle in its
 * worker's pool for its target, or detached into a tunnel. Bytes move with
 * evbuffer_remove_buffer (chains change hands; no copy for whole chains).
 * Backpressure: we stop reading the upstream while the client's output is
 * above its high watermark (ops->resp_body returns 1), and the client stops
 * reading its body while our output is above UP_OUT_HIGH. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "px/common.h"
#include "px/config.h"
#include "px/log.h"
#include "px/request.h"
#include "px/sock.h"
#include "px/worker.h"

#define UP_OUT_HIGH (256 * 1024)
#define UP_OUT_LOW (64 * 1024)
#define UP_READ_MAX (256 * 1024)  /* per event, then yield to other connections */
/* Per read(2): a 64 KiB body and its head in one. libevent rounds a chain
 * (its header included) up to a power of two, so this is the most a 128 KiB
 * allocation holds; 80 KiB took as much memory. */
#define UP_READ_CHUNK (128 * 1024 - 512)
#define UP_HEAD_MAX (64 * 1024)
#define PASSIVE_DOWN_MS 5000

enum ustate { U_CONNECTING, U_BUSY, U_IDLE, U_TUNNEL, U_DEAD };

struct px_uconn {
    struct px_sock s;
    struct px_worker *w;
    uint32_t target_id;
    enum ustate state;
    struct px_req *req;
    struct event timer;
    struct px_uconn *next, *prev;  /* pool list, or the dead list */
    unsigned reused : 1;
    unsigned paused : 1;           /* stopped reading: the client is full */
    unsigned body_paused : 1;      /* told the client to stop sending body */
    unsigned head_done : 1;        /* response head parsed */
    unsigned got_bytes : 1;        /* any response byte arrived */
    px_tunnel_cb tunnel_cb;        /* U_TUNNEL: events go to the tunnel's owner */
    void *tunnel_owner;
};

static void uconn_event(evutil_socket_t fd, short what, void *arg);
static void uconn_timeout(evutil_socket_t fd, short what, void *arg);
static void process(struct px_uconn *u);

struct px_sock *px_uconn_sock(struct px_uconn *u)
{
    return &u->s;
}

static void pool_unlink(struct px_upool *p, struct px_uconn *u)
{
    if (u->prev)
        u->prev->next = u->next;
    else
        p->idle = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->next = u->prev = NULL;
    p->nidle--;
}

void px_uconn_close(struct px_uconn *u)
{
    if (u == NULL || u->state == U_DEAD)
        return;
    struct px_worker *w = u->w;
    if (u->state == U_IDLE && u->target_id < w->npools)
        pool_unlink(&w->pools[u->target_id], u);
    event_del(&u->timer);
    px_sock_close(&u->s);
    u->state = U_DEAD;
    u->req = NULL;
    u->next = w->dead_uconns;
    w->dead_uconns = u;
    px_worker_schedule_gc(w);
}

void px_upstream_free_dead(struct px_worker *w)
{
    while (w->dead_uconns) {
        struct px_uconn *u = w->dead_uconns;
        w->dead_uconns = u->next;
        free(u);
    }
}

void px_upstream_close_idle(struct px_worker *w)
{
    for (uint32_t i = 0; i < w->npools; i++)
        px_upstream_close_idle_target(w, i);
}

void px_upstream_close_idle_target(struct px_worker *w, uint32_t target_id)
{
    if (target_id >= w->npools)
        return;
    while (w->pools[target_id].idle)
        px_uconn_close(w->pools[target_id].idle);
}

static void arm(struct px_uconn *u, const struct timeval *tv)
{
    event_add(&u->timer, tv);
}

/* While request bytes wait for the upstream to take them the send timeout
 * runs; once all is sent, the read timeout. */
static void arm_io(struct px_uconn *u)
{
    arm(u, evbuffer_get_length(u->s.out) ? u->w->tv_usend : u->w->tv_uread);
}

/* ---- target choice ---- */

static struct px_target *pick_target(struct px_req *r, const struct px_target *exclude)
{
    const struct px_service *svc = r->svc;
    struct px_worker *w = r->w;
    struct px_target *best = NULL, *fallback = NULL;
    uint32_t best_out = UINT32_MAX;
    uint64_t now = 0;
    size_t n = svc->ntargets;
    uint32_t start = n > 1 ? w->rr++ % (uint32_t)n : 0;
    for (size_t k = 0; k < n; k++) {
        struct px_target *t = svc->targets[(start + k) % n];
        if (t == exclude || !atomic_load_explicit(&t->healthy, memory_order_relaxed) ||
            atomic_load_explicit(&t->draining, memory_order_relaxed))
            continue;
        struct px_upool *p = px_worker_pool(w, t);
        if (p == NULL)
            continue;
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

/* ---- connections ---- */

static struct px_uconn *uconn_connect(struct px_worker *w, struct px_target *t, int *err)
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
    if (px_sock_open(&u->s, w->base, fd, uconn_event, u) < 0) {
        free(u);
        *err = ENOMEM;
        return NULL;
    }
    u->s.read_chunk = UP_READ_CHUNK;
    event_assign(&u->timer, w->base, -1, 0, uconn_timeout, u);
    u->state = rc == 0 ? U_BUSY : U_CONNECTING;
    if (u->state == U_CONNECTING)
        u->s.writable = u->s.readable = 0;
    arm(u, w->tv_uconnect);
    return u;
}

/* An idle connection whose event is already active in this loop iteration
 * may have been closed by the upstream in the same epoll batch that brought
 * the request about to use it: look (one read) before reusing it, as its
 * idle handler would. Cheap: nothing to do unless an event is pending. */
static int idle_usable(struct px_uconn *u)
{
    if (!(u->s.ev.ev_evcallback.evcb_flags & (EVLIST_ACTIVE | EVLIST_ACTIVE_LATER)) && !u->s.rdhup)
        return 1;
    u->s.readable = 1;
    px_sock_read(&u->s, 4096);
    return !(u->s.eof || u->s.error || evbuffer_get_length(u->s.in));
}

/* Attach an upstream connection for target t to r: an idle pooled one, else
 * a new one. Returns 0 or -1 (errno-like code in *err). */
static int attach(struct px_req *r, struct px_target *t, int *err)
{
    struct px_worker *w = r->w;
    struct px_upool *p = px_worker_pool(w, t);
    if (p == NULL) {
        *err = ENOMEM;
        return -1;
    }
    struct px_uconn *u;
    while ((u = p->idle) != NULL && !idle_usable(u))
        px_uconn_close(u);
    if (u) {
        pool_unlink(p, u);
        u->state = U_BUSY;
        u->reused = 1;
    } else {
        u = uconn_connect(w, t, err);
        if (u == NULL) {
            p->down_until_ms = px_now_ms() + PASSIVE_DOWN_MS;
            return -1;
        }
    }
    u->req = r;
    u->paused = u->body_paused = u->head_done = u->got_bytes = 0;
    r->up = u;
    r->target = t;
    r->tries++;
    p->outstanding++;
    px_target_load_add(t, w->id, 1, 0);
    r->counted = 1;
    return 0;
}

static void detach_count(struct px_req *r)
{
    if (r->target && r->counted) {
        struct px_upool *p = px_worker_pool(r->w, r->target);
        if (p && p->outstanding)
            p->outstanding--;
        px_target_load_add(r->target, r->w->id, -1, 0);
        r->counted = 0;
    }
}

static void send_some(struct px_uconn *u)
{
    if (u->state != U_BUSY)
        return;
    if (evbuffer_get_length(u->s.out))
        px_sock_flush(&u->s); /* an error surfaces through s.error */
}

int px_upstream_start(struct px_req *r)
{
    int err = 0;
    for (;;) {
        struct px_target *t = pick_target(r, r->target);
        if (t == NULL)
            return r->tries ? 502 : 503;
        if (attach(r, t, &err) == 0)
            break;
        px_log_warn("upstream %s: connect: %s", t->addr.text, strerror(err));
        r->target = t;
        if (++r->tries >= 2 || r->svc->ntargets < 2)
            return 502;
    }
    struct px_uconn *u = r->up;
    if (px_req_write_head(r, u->s.out) < 0)
        return 500;
    send_some(u);
    if (u->s.error) {
        /* fails on the next event; let the event path handle it uniformly */
        event_active(&u->s.ev, EV_WRITE, 1);
    }
    if (u->state == U_BUSY)
        arm_io(u);
    return 0;
}

/* Release u after a complete response: back to the pool or closed. */
static void release(struct px_uconn *u, int reusable)
{
    struct px_worker *w = u->w;
    u->req = NULL;
    if (!reusable || w->stopping || evbuffer_get_length(u->s.in) || u->s.eof || u->s.error ||
        u->target_id >= w->npools) {
        px_uconn_close(u);
        return;
    }
    struct px_upool *p = &w->pools[u->target_id];
    u->state = U_IDLE;
    u->prev = NULL;
    u->next = p->idle;
    if (p->idle)
        p->idle->prev = u;
    p->idle = u;
    p->nidle++;
    arm(u, w->tv_uidle);
}

static void finish(struct px_uconn *u, int ok)
{
    struct px_req *r = u->req;
    /* a draining target's connections close once their response is done */
    int reusable = ok && r->resp_keepalive && r->body_sent && u->state == U_BUSY &&
                   !atomic_load_explicit(&r->target->draining, memory_order_relaxed);
    detach_count(r);
    r->up = NULL;
    release(u, reusable);
    r->ops->resp_end(r, ok);
}

/* The try failed before a response head. Retry when allowed, else answer. */
static void fail(struct px_uconn *u, int status, int connect_failed)
{
    struct px_req *r = u->req;
    struct px_worker *w = u->w;
    struct px_target *failed = r->target;
    int idempotent = r->method == PX_METHOD_GET || r->method == PX_METHOD_HEAD ||
                     r->method == PX_METHOD_OPTIONS || r->method == PX_METHOD_PUT ||
                     r->method == PX_METHOD_DELETE || r->method == PX_METHOD_TRACE;
    /* Nothing reached the upstream when the connect failed: any request may
     * go elsewhere. On a reused keep-alive connection that died before
     * answering, only a bodyless idempotent request is replayed. */
    int can_retry = r->tries < 2 && !u->got_bytes &&
                    (connect_failed || (u->reused && idempotent && !r->has_body && status != 504));
    if (connect_failed) {
        struct px_upool *p = px_worker_pool(w, failed);
        if (p)
            p->down_until_ms = px_now_ms() + PASSIVE_DOWN_MS;
    }
    px_log_warn("upstream %s: %s", failed ? failed->addr.text : "?",
                connect_failed ? (status == 504 ? "connect timed out" : "connect failed")
                               : (status == 504 ? "timed out" : "closed before answering"));
    detach_count(r);
    r->up = NULL;
    if (can_retry && (u->reused || r->svc->ntargets > 1)) {
        struct px_target *t = pick_target(r, u->reused ? NULL : failed);
        int err;
        if (t && attach(r, t, &err) == 0) {
            struct px_uconn *nu = r->up;
            if (connect_failed)
                evbuffer_add_buffer(nu->s.out, u->s.out);
            else if (px_req_write_head(r, nu->s.out) < 0)
                goto give_up;
            nu->body_paused = u->body_paused;
            px_uconn_close(u);
            send_some(nu);
            if (nu->state == U_BUSY)
                arm_io(nu);
            return;
        }
    }
give_up:
    px_uconn_close(u);
    if (r->up) {
        detach_count(r);
        px_uconn_close(r->up);
        r->up = NULL;
    }
    r->ops->resp_error(r, status);
}

/* Request body from the client side. */
int px_upstream_body(struct px_req *r, struct evbuffer *src, size_t len, int last)
{
    struct px_uconn *u = r->up;
    if (last)
        r->body_sent = 1;
    if (u == NULL) {
        evbuffer_drain(src, len);
        return 0;
    }
    size_t queued = evbuffer_get_length(u->s.out);
    if (len)
        evbuffer_remove_buffer(src, u->s.out, len);
    send_some(u);
    /* start the send timeout when bytes begin to wait (not per chunk) */
    if (u->state == U_BUSY && queued == 0 && evbuffer_get_length(u->s.out))
        arm(u, u->w->tv_usend);
    if (u->s.error) {
        event_active(&u->s.ev, EV_WRITE, 1);
        return 1;
    }
    if (evbuffer_get_length(u->s.out) > UP_OUT_HIGH) {
        u->body_paused = 1;
        return 1;
    }
    return 0;
}

void px_upstream_resume(struct px_req *r)
{
    struct px_uconn *u = r->up;
    if (u == NULL || !u->paused)
        return;
    u->paused = 0;
    /* Edge-triggered: data may be waiting without a new event. */
    event_active(&u->s.ev, EV_READ, 1);
}

void px_upstream_abort(struct px_req *r)
{
    struct px_uconn *u = r->up;
    if (u == NULL)
        return;
    detach_count(r);
    r->up = NULL;
    px_uconn_close(u);
}

void px_uconn_tunnel(struct px_uconn *u, px_tunnel_cb cb, void *owner)
{
    u->tunnel_cb = cb;
    u->tunnel_owner = owner;
}

struct px_uconn *px_upstream_detach(struct px_req *r)
{
    struct px_uconn *u = r->up;
    if (u == NULL)
        return NULL;
    detach_count(r);
    r->up = NULL;
    u->req = NULL;
    u->state = U_TUNNEL;
    event_del(&u->timer);
    return u;
}

/* Response body bytes in u->s.in per the framing. Returns 1 when the
 * response is complete. */
static int relay_body(struct px_uconn *u)
{
    struct px_req *r = u->req;
    struct evbuffer *in = u->s.in;
    size_t avail;
    while ((avail = evbuffer_get_length(in)) > 0 && !u->paused) {
        switch (r->resp_mode) {
        case PX_BODY_NONE:
            return 1;
        case PX_BODY_LENGTH: {
            size_t n = avail < r->resp_remaining ? avail : (size_t)r->resp_remaining;
            r->resp_remaining -= n;
            if (r->ops->resp_body(r, in, n))
                u->paused = 1;
            if (r->resp_remaining == 0)
                return 1;
            break;
        }
        case PX_BODY_CLOSE:
            if (r->ops->resp_body(r, in, avail))
                u->paused = 1;
            break;
        case PX_BODY_CHUNKED: {
            /* Scan the framing without moving; then hand over in one move
             * (pass-through) or data run by data run (de-chunking). */
            struct evbuffer_iovec vec[8];
            int nv = evbuffer_peek(in, -1, NULL, vec, 8);
            if (nv > 8)
                nv = 8;
            size_t scanned = 0;
            int done = 0;
            for (int i = 0; i < nv && !done; i++) {
                const char *p = vec[i].iov_base;
                size_t left = vec[i].iov_len;
                while (left) {
                    size_t c = 0;
                    enum px_chunk_result res = px_chunked_step(&r->resp_chunked, p, left, &c);
                    if (res == PX_CHUNK_ERROR)
                        return -1;
                    if (!r->resp_passthrough) {
                        if (scanned) {
                            if (r->ops->resp_body(r, in, scanned))
                                u->paused = 1;
                            scanned = 0;
                        }
                        /* the peeked pointers are invalid after a move */
                        if (res == PX_CHUNK_DATA) {
                            if (r->ops->resp_body(r, in, c))
                                u->paused = 1;
                        } else {
                            evbuffer_drain(in, c);
                        }
                        if (res == PX_CHUNK_DONE)
                            return 1;
                        goto rescan;
                    }
                    scanned += c;
                    p += c;
                    left -= c;
                    if (res == PX_CHUNK_DONE) {
                        done = 1;
                        break;
                    }
                }
            }
            if (scanned && r->ops->resp_body(r, in, scanned))
                u->paused = 1;
            if (done)
                return 1;
            if (!scanned)
                return 0;
        rescan:
            break;
        }
        }
    }
    return 0;
}

static void start_response(struct px_uconn *u, const struct px_h1_response *resp, size_t head_len)
{
    struct px_req *r = u->req;
    int status = resp->status;
    int no_body = r->method == PX_METHOD_HEAD || status == 204 || status == 304 || status < 200;
    r->status = status;
    r->resp_keepalive = !resp->conn_close && (resp->minor_version == 1 || resp->conn_keep_alive);
    if (no_body) {
        r->resp_mode = PX_BODY_NONE;
    } else if (resp->chunked) {
        r->resp_mode = PX_BODY_CHUNKED;
        px_chunked_init(&r->resp_chunked);
    } else if (resp->content_length >= 0) {
        r->resp_mode = resp->content_length ? PX_BODY_LENGTH : PX_BODY_NONE;
        r->resp_remaining = (uint64_t)resp->content_length;
    } else {
        r->resp_mode = PX_BODY_CLOSE;
        r->resp_keepalive = 0;
    }
    int passthrough = 0;
    r->resp_started = 1;
    r->resp_more = evbuffer_get_length(u->s.in) > head_len;
    if (r->ops->resp_head(r, resp, head_len, &passthrough) < 0) {
        evbuffer_drain(u->s.in, head_len);
        px_upstream_abort(r);
        return;
    }
    r->resp_passthrough = passthrough ? 1 : 0;
    evbuffer_drain(u->s.in, head_len);
}

static void process(struct px_uconn *u)
{
    struct px_req *r = u->req;
    struct px_worker *w = u->w;

    if (u->s.writable && evbuffer_get_length(u->s.out)) {
        size_t before = evbuffer_get_length(u->s.out);
        send_some(u);
        if (evbuffer_get_length(u->s.out) < before)
            arm_io(u); /* the upstream took some: restart its clock */
    }
    /* Not tied to the flush above: the connect handler may have drained the
     * output already. */
    if (u->body_paused && evbuffer_get_length(u->s.out) < UP_OUT_LOW && !u->s.error) {
        u->body_paused = 0;
        r->ops->body_resume(r);
        if (r->up != u)
            return;
    }
    if (u->s.error && !u->got_bytes) {
        fail(u, 502, 0);
        return;
    }
    if (u->paused)
        return;
    /* A head fits one read; body reads are bounded by the client's room. */
    size_t budget = u->head_done ? UP_READ_MAX : UP_READ_CHUNK;
    if (u->head_done && r->ops->resp_room) {
        budget = r->ops->resp_room(r);
        if (budget > UP_READ_MAX)
            budget = UP_READ_MAX;
        if (budget == 0) {
            u->paused = 1; /* the client side resumes us (px_upstream_resume) */
            return;
        }
        /* Read what fills a power-of-two chain: a 60 KiB read would take a
         * 128 KiB allocation to a client that is already behind. */
        size_t fit = UP_READ_CHUNK + 512;
        while (fit > 4096 && fit - 512 > budget)
            fit >>= 1;
        if (fit - 512 < budget)
            budget = fit - 512;
    }
    size_t n = px_sock_read(&u->s, budget);
    if (n) {
        u->got_bytes = 1;
        arm(u, w->tv_uread);
    }
    while (!u->head_done) {
        size_t len = evbuffer_get_length(u->s.in);
        if (len == 0)
            break;
        const char *buf = (const char *)evbuffer_pullup(u->s.in, len < UP_HEAD_MAX ? (ev_ssize_t)len : UP_HEAD_MAX);
        struct px_h1_response resp;
        int rc = px_h1_parse_response(buf, len < UP_HEAD_MAX ? len : UP_HEAD_MAX, &resp);
        if (rc == PX_H1_INCOMPLETE) {
            if (len >= UP_HEAD_MAX) {
                px_log_warn("upstream sent a response head over %d bytes", UP_HEAD_MAX);
                fail(u, 502, 0);
                return;
            }
            break;
        }
        if (rc < 0) {
            px_log_warn("upstream sent an invalid response head");
            u->got_bytes = 1;
            fail(u, 502, 0);
            return;
        }
        if (resp.status == 101) {
            if (!r->websocket) {
                u->got_bytes = 1;
                fail(u, 502, 0);
                return;
            }
            u->head_done = 1;
            r->status = 101;
            int passthrough;
            r->resp_started = 1;
            if (r->ops->resp_head(r, &resp, (size_t)rc, &passthrough) < 0) {
                px_upstream_abort(r);
                return;
            }
            evbuffer_drain(u->s.in, (size_t)rc);
            r->ops->upgraded(r);
            return;
        }
        if (resp.status < 200) { /* 100, 102, 103: not relayed */
            evbuffer_drain(u->s.in, (size_t)rc);
            continue;
        }
        u->head_done = 1;
        start_response(u, &resp, (size_t)rc);
        if (r->up != u)
            return;
        if (r->resp_mode == PX_BODY_NONE) {
            finish(u, 1);
            return;
        }
    }
    if (u->head_done) {
        int rc = relay_body(u);
        if (r->up != u)
            return;
        if (rc < 0) {
            px_log_warn("upstream %s sent malformed chunked framing", r->target ? r->target->addr.text : "?");
            if (r->bytes_out == 0) {
                /* Nothing of the body reached the client: take the head
                 * back and answer 502 where the client side can, and log
                 * 502 either way -- the client did not get the 200. */
                r->status = 502;
                if (r->ops->resp_retract && r->ops->resp_retract(r) == 0) {
                    detach_count(r);
                    r->up = NULL;
                    px_uconn_close(u);
                    r->resp_started = 0;
                    r->ops->resp_error(r, 502);
                    return;
                }
            }
            r->resp_keepalive = 0;
            finish(u, 0);
            return;
        }
        if (rc == 1) {
            finish(u, 1);
            return;
        }
    }
    if (u->s.eof || u->s.error) {
        if (!u->head_done) {
            fail(u, 502, 0);
        } else if (r->resp_mode == PX_BODY_CLOSE && !u->paused && evbuffer_get_length(u->s.in) == 0) {
            finish(u, 1);
        } else if (!u->paused || u->s.error) {
            r->resp_keepalive = 0;
            finish(u, 0);
        }
        return;
    }
    if (u->s.readable && !u->paused)
        event_active(&u->s.ev, EV_READ, 1);
}

static void uconn_event(evutil_socket_t fd, short what, void *arg)
{
    struct px_uconn *u = arg;
    px_sock_mark(&u->s, what);
    switch (u->state) {
    case U_CONNECTING: {
        int e = 0;
        socklen_t el = sizeof(e);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
            e = errno;
        if (e == EINPROGRESS || e == EALREADY || (e == 0 && !(what & (EV_WRITE | EV_READ))))
            return;
        if (e != 0) {
            fail(u, 502, 1);
            return;
        }
        u->state = U_BUSY;
        u->s.writable = 1;
        send_some(u);
        arm_io(u);
        process(u);
        return;
    }
    case U_BUSY:
        process(u);
        return;
    case U_IDLE: {
        /* An idle keep-alive connection only ever reads EOF or junk. */
        px_sock_read(&u->s, 4096);
        if (u->s.eof || u->s.error || evbuffer_get_length(u->s.in))
            px_uconn_close(u);
        return;
    }
    case U_TUNNEL:
        if (u->tunnel_cb)
            u->tunnel_cb(u, what, u->tunnel_owner);
        return;
    case U_DEAD:
        return;
    }
}

static void uconn_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct px_uconn *u = arg;
    switch (u->state) {
    case U_CONNECTING:
        fail(u, 504, 1);
        return;
    case U_BUSY:
        /* Waiting on the client (slow reader, or a body still coming with
         * nothing queued for the upstream) is not the upstream's fault. */
        if (u->paused || (!u->req->body_sent && evbuffer_get_length(u->s.out) == 0)) {
            arm(u, u->w->tv_uread);
            return;
        }
        if (!u->head_done) {
            px_log_warn(evbuffer_get_length(u->s.out) ? "upstream timed out taking the request"
                                                      : "upstream timed out waiting for the response");
            fail(u, 504, 0);
        } else {
            u->req->resp_keepalive = 0;
            finish(u, 0);
        }
        return;
    case U_IDLE:
        px_uconn_close(u);
        return;
    default:
        return;
    }
}
