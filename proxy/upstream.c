/* upstream.c -- the glue between a request and its upstream connection:
 * tries and retries, timeouts, request body up, response down (framing by
 * h1client.c, connections by pool.c, the target by balancer.c).
 *
 * Bytes move with evbuffer_remove_buffer (chains change hands; no copy for
 * whole chains). Backpressure: an upstream read takes at most what the
 * client side has room for (ops->resp_room) and stops when it is full
 * (ops->resp_body returns 1); the client stops reading its body while our
 * output is above UP_OUT_HIGH. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "px/common.h"
#include "px/config.h"
#include "px/log.h"
#include "px/request.h"
#include "px/sock.h"
#include "px/spool.h"
#include "px/stats.h"
#include "px/upstream.h"
#include "px/worker.h"

static void upstream_event(evutil_socket_t fd, short what, void *arg);
static void upstream_timeout(evutil_socket_t fd, short what, void *arg);
/* the event entry points of the connections the pool opens for us */
static const struct px_uconn_handlers handlers = {upstream_event, upstream_timeout};

#define UP_OUT_HIGH (256 * 1024)
#define UP_OUT_LOW (64 * 1024)

static void process(struct px_uconn *u);

struct px_sock *px_uconn_sock(struct px_uconn *u)
{
    return &u->s;
}

static void arm(struct px_uconn *u, const struct timeval *tv)
{
    px_timer_arm(&u->timer, &u->timer_due, tv);
}

/* The read timeout: the service's target_timeout, else [proxy]'s. */
static const struct timeval *read_tv(const struct px_uconn *u)
{
    const struct px_service *svc = u->req ? u->req->svc : NULL;
    return svc && svc->opts.target_timeout_ms ? &svc->target_tv : u->w->tv_uread;
}

/* While request bytes wait for the upstream to take them the send timeout
 * runs; once all is sent, the read timeout. */
static void arm_io(struct px_uconn *u)
{
    arm(u, evbuffer_get_length(u->s.out) ? u->w->tv_usend : read_tv(u));
}

/* Attach an upstream connection for target t to r: an idle pooled one, else
 * a new one. Returns 0 or -1 (errno-like code in *err). */
static int attach(struct px_req *r, struct px_target *t, int *err)
{
    struct px_worker *w = r->w;
    struct px_uconn *u = px_pool_get(w, t, &handlers, err);
    if (u == NULL) {
        px_balancer_mark_down(w, t);
        return -1;
    }
    struct px_upool *p = px_pool_of(w, t); /* exists: px_pool_get made it */
    u->req = r;
    u->paused = u->body_paused = u->head_done = u->got_bytes = u->quickacked = 0;
    r->up = u;
    r->target = t;
    r->tries++;
    if (++p->outstanding > p->peak)
        p->peak = p->outstanding;
    px_target_load_add(t, w->id, 1, 0);
    r->counted = 1;
    return 0;
}

static void detach_count(struct px_req *r)
{
    if (r->target && r->counted) {
        struct px_upool *p = px_pool_of(r->w, r->target);
        if (p && p->outstanding)
            p->outstanding--;
        px_target_load_add(r->target, r->w->id, -1, 0);
        r->counted = 0;
        px_upstream_target_left(r->w, r->target);
    }
}

static void send_some(struct px_uconn *u)
{
    if (u->state != U_BUSY)
        return;
    if (evbuffer_get_length(u->s.out))
        px_sock_flush(&u->s); /* an error surfaces through s.error */
}

/* ---- buffering (DESIGN "Buffering") ---- */

/* Per event, the most of a buffered request body put on the wire: then
 * yield to other connections, as reads do. */
#define SPOOL_UP_MAX (1024 * 1024)

/* A buffered request body goes up from its spool as fast as the upstream
 * takes it: the output is refilled below UP_OUT_LOW, up to UP_OUT_HIGH.
 * While connecting, one refill waits with the head. -1: a temp file read
 * error (errno). */
static int spool_up(struct px_uconn *u)
{
    struct px_req *r = u->req;
    size_t moved = 0;
    int rc = 0;
    while (r->spool_pending && evbuffer_get_length(u->s.out) < UP_OUT_LOW && !u->s.error) {
        if (moved >= SPOOL_UP_MAX) {
            event_active(&u->s.ev, EV_WRITE, 1);
            break;
        }
        size_t room = UP_OUT_HIGH - evbuffer_get_length(u->s.out);
        struct evbuffer *f = px_spool_front(&r->body_spool, room);
        size_t n = f ? evbuffer_get_length(f) : 0;
        if (n == 0) {
            rc = -1;
            break;
        }
        if (n > room)
            n = room;
        evbuffer_remove_buffer(f, u->s.out, n);
        moved += n;
        if (px_spool_length(&r->body_spool) == 0)
            r->spool_pending = 0;
        if (u->state != U_BUSY)
            break;
        send_some(u);
        if (!u->s.writable)
            break;
    }
    return rc;
}

/* Content-Type: text/event-stream or X-Accel-Buffering: no -- a response
 * that must pass through unbuffered (nginx honours the latter too). */
static int unbuffered(const struct px_h1_response *resp)
{
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct px_h1_header *h = &resp->headers[i];
        if (h->name_len == 12 && PX_IEQ_LIT(h->name, 12, "content-type") && h->value_len >= 17 &&
            strncasecmp(h->value, "text/event-stream", 17) == 0)
            return 1;
        if (h->name_len == 17 && PX_IEQ_LIT(h->name, 17, "x-accel-buffering") && PX_IEQ_LIT(h->value, h->value_len, "no"))
            return 1;
    }
    return 0;
}

/* resp_buffered: body bytes from the upstream. Straight to the client while
 * it takes them and nothing waits; else into the spool (memory, then the
 * temp file), so that the upstream is never paused. 1 (stop) only on a
 * fault: over max_response_body, or a temp file error. */
__attribute__((noinline, cold)) /* relay_sink stays a test and a tail call */
static int spool_sink(struct px_req *r, struct evbuffer *src, size_t len)
{
    const struct px_buffering *b = &r->svc->buffering;
    r->resp_total += len;
    if (b->max_response && r->resp_total > b->max_response) {
        px_log_warn("upstream %s: response body over max_response_body (%llu bytes) of %s",
                    r->target ? r->target->addr.text : "?", (unsigned long long)b->max_response, r->svc->name);
        evbuffer_drain(src, len);
        r->resp_fault = 1;
        return 1;
    }
    /* what the client has room for goes now, as unbuffered (resp_room
     * bounds it, and arms the client side's resume when it says 0) */
    while (len && !r->client_full && px_spool_length(&r->resp_spool) == 0) {
        size_t room = r->ops->resp_room ? r->ops->resp_room(r) : len;
        if (room == 0) {
            r->client_full = 1;
            break;
        }
        size_t n = room < len ? room : len;
        if (r->ops->resp_body(r, src, n))
            r->client_full = 1;
        len -= n;
    }
    if (len == 0)
        return 0;
    const struct px_config *cfg = px_routes_config(r->routes);
    if (px_spool_add(&r->resp_spool, src, len, cfg->temp_dir, b->memory) < 0) {
        px_log_error("response of %s: cannot buffer it in temp_dir %s: %s: cutting it", r->svc->name, cfg->temp_dir,
                     strerror(errno));
        r->resp_fault = 1;
        return 1;
    }
    return 0;
}

/* resp_buffered, the client can take more: what waits in the spool goes
 * first, as much as the client side has room for; once all of a complete
 * response went, it ends. */
static void spool_down(struct px_req *r)
{
    r->client_full = 0;
    while (px_spool_length(&r->resp_spool)) {
        size_t room = r->ops->resp_room ? r->ops->resp_room(r) : PX_UP_READ_MAX;
        if (room == 0) {
            r->client_full = 1; /* resp_room armed the client side's resume */
            return;
        }
        if (room > PX_UP_READ_MAX)
            room = PX_UP_READ_MAX;
        struct evbuffer *f = px_spool_front(&r->resp_spool, room);
        size_t n = f ? evbuffer_get_length(f) : 0;
        if (n == 0) {
            px_log_error("response of %s: temp file read: %s: cutting it", r->svc->name, strerror(errno));
            px_spool_reset(&r->resp_spool);
            if (r->up) {
                r->resp_fault = 1;
                event_active(&r->up->s.ev, EV_READ, 1); /* process() cuts it */
            } else if (r->resp_in) {
                r->resp_in = 0;
                r->ops->resp_end(r, 0);
            }
            return;
        }
        if (n > room)
            n = room;
        if (r->ops->resp_body(r, f, n)) {
            r->client_full = 1;
            return;
        }
    }
    if (r->resp_in) {
        r->resp_in = 0;
        r->ops->resp_end(r, 1);
    }
}

/* The upstream request head (HTTP/1.1) for r. 0 or -1. */
static int write_head(struct px_req *r, struct evbuffer *out)
{
    size_t f_loop_len;
    const struct px_svc_opts *o = &r->svc->opts;
    int fwd = o->forward_headers, strip = 0;
    if (PX_UNLIKELY(o->strip_path_prefix) && (strip = px_service_prefix_match(r->svc, r->q->path, r->q->path_len)) < 0)
        strip = 0;
    struct px_fwd f = {
        .client_ip = r->client_ip,
        .client_ip_len = r->client_ip_len,
        .peer_ip = r->peer_ip,
        .peer_ip_len = r->peer_ip_len,
        .xff = r->xff_trusted || fwd ? r->xff : NULL,
        .xff_len = r->xff_trusted || fwd ? r->xff_len : 0,
        .forward_headers = fwd,
        .strip = (size_t)strip,
        .proto = r->tls ? "https" : "http",
        .request_id = r->request_id,
        .request_id_len = r->request_id_len,
        .start_ms = r->start_wall_ms,
        .websocket = r->websocket,
        .strip_expect = r->strip_expect,
        .loop = px_loop_token(&f_loop_len),
        .default_host = r->target ? r->target->addr.text : NULL,
        .set = r->route ? r->route->req_set : NULL,
        .nset = r->route ? r->route->nreq_set : 0,
        .set_length = r->body_buffered,
        .body_length = r->body_spool.added,
    };
    f.loop_len = f_loop_len;
    return px_h1_write_request_head(out, r->q, r->head_bound, &f);
}

/* One failed try on target t: the unlabelled count and the (service,
 * target) pair's (an error path: the pair is found by a scan of the
 * service's few targets). */
static void count_error(struct px_req *r, const struct px_target *t, unsigned kind)
{
    int wid = r->w->id;
    px_stats_inc(&px_stats_of(wid)->upstream_errors[kind]);
    const struct px_service *svc = r->svc;
    if (svc == NULL || t == NULL || svc->target_stats_ids == NULL)
        return;
    for (size_t i = 0; i < svc->ntargets; i++)
        if (svc->targets[i] == t) {
            if (svc->target_stats_ids[i] != PX_STATS_NO_ID)
                px_stats_target_error(wid, svc->target_stats_ids[i], kind);
            return;
        }
}

int px_upstream_start(struct px_req *r)
{
    int err = 0;
    for (;;) {
        struct px_target *t = px_balancer_pick(r, r->target);
        if (t == NULL)
            return r->tries ? 502 : 503;
        if (attach(r, t, &err) == 0)
            break;
        px_log_warn("upstream %s: connect: %s", t->addr.text, strerror(err));
        count_error(r, t, PX_STATS_UP_CONNECT);
        r->target = t;
        if (++r->tries >= 2 || r->svc->ntargets < 2)
            return 502;
    }
    struct px_uconn *u = r->up;
    if (write_head(r, u->s.out) < 0)
        return 500;
    if (PX_UNLIKELY(r->spool_pending) && spool_up(u) < 0) {
        px_log_error("request body of %s: temp file read: %s", r->svc->name, strerror(errno));
        return 500;
    }
    send_some(u);
    if (u->s.error) {
        /* fails on the next event; let the event path handle it uniformly */
        event_active(&u->s.ev, EV_WRITE, 1);
    }
    if (u->state == U_BUSY)
        arm_io(u);
    return 0;
}

static void finish(struct px_uconn *u, int ok)
{
    struct px_req *r = u->req;
    /* a draining target's connections close once their response is done */
    int reusable = ok && r->resp_keepalive && r->body_sent && !r->spool_pending && u->state == U_BUSY &&
                   !atomic_load_explicit(&r->target->draining, memory_order_relaxed);
    detach_count(r);
    r->up = NULL;
    r->up_end_us = px_now_us();
    px_pool_release(u, reusable);
    if (PX_UNLIKELY(r->resp_buffered) && ok && px_spool_length(&r->resp_spool)) {
        /* the upstream is free already; the client gets the rest (spool_down) */
        r->resp_in = 1;
        return;
    }
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
    if (connect_failed)
        px_balancer_mark_down(w, failed);
    /* a read that ended the try (EOF, reset) or a head that was wrong */
    count_error(r, failed,
                status == 504      ? PX_STATS_UP_TIMEOUT
                : connect_failed   ? PX_STATS_UP_CONNECT
                : u->s.eof || u->s.error ? PX_STATS_UP_RESET
                                         : PX_STATS_UP_BAD_RESPONSE);
    px_log_warn("upstream %s: %s", failed ? failed->addr.text : "?",
                connect_failed ? (status == 504 ? "connect timed out" : "connect failed")
                               : (status == 504 ? "timed out" : "closed before answering"));
    detach_count(r);
    r->up = NULL;
    if (can_retry && (u->reused || r->svc->ntargets > 1)) {
        struct px_target *t = px_balancer_pick(r, u->reused ? NULL : failed);
        int err;
        if (t && attach(r, t, &err) == 0) {
            struct px_uconn *nu = r->up;
            if (connect_failed)
                evbuffer_add_buffer(nu->s.out, u->s.out);
            else if (write_head(r, nu->s.out) < 0)
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
    if (PX_UNLIKELY(r->resp_buffered)) {
        spool_down(r);
        return;
    }
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
    px_pool_unbusy(u);
    detach_count(r);
    r->up = NULL;
    u->req = NULL;
    u->state = U_TUNNEL;
    event_del(&u->timer);
    return u;
}

static int relay_sink(void *arg, struct evbuffer *src, size_t len)
{
    struct px_req *r = arg;
    if (PX_UNLIKELY(r->resp_buffered))
        return spool_sink(r, src, len);
    return r->ops->resp_body(r, src, len);
}

/* The response head arrived: its status and the values of the service's
 * log_response_headers, for the access log (px_req.resp_log). */
static void log_head(struct px_req *r, const struct px_h1_response *resp)
{
    r->upstream_status = resp->status;
    const struct px_service *svc = r->svc;
    if (PX_LIKELY(svc->nlog_resp == 0))
        return;
    size_t used = 0;
    for (size_t i = 0; i < svc->nlog_resp; i++) {
        const struct px_log_header *lh = &svc->log_headers[svc->nlog_req + i];
        r->resp_log_len[i] = 0xffff;
        for (size_t k = 0; k < resp->nheaders; k++) {
            const struct px_h1_header *h = &resp->headers[k];
            if (h->name_len == lh->name_len && strncasecmp(h->name, lh->name, lh->name_len) == 0) {
                size_t n = h->value_len < PX_RESP_LOG_MAX - used ? h->value_len : PX_RESP_LOG_MAX - used;
                memcpy(r->resp_log + used, h->value, n);
                r->resp_log_off[i] = (uint16_t)used;
                r->resp_log_len[i] = (uint16_t)n;
                used += n;
                break;
            }
        }
    }
}

/* Take back a response head none of whose body reached the client, and
 * answer 502 instead (the upstream is closed). 0, or -1 when too late. */
static int retract_502(struct px_uconn *u)
{
    struct px_req *r = u->req;
    if (r->bytes_out || r->ops->resp_retract == NULL || r->ops->resp_retract(r) != 0)
        return -1;
    r->status = 502;
    detach_count(r);
    r->up = NULL;
    px_uconn_close(u);
    r->resp_started = 0;
    r->ops->resp_error(r, 502);
    return 0;
}

/* resp_buffered, a fault (spool_sink): 502 when nothing was sent yet, else
 * the response is cut. */
static void resp_fault(struct px_uconn *u)
{
    struct px_req *r = u->req;
    px_spool_reset(&r->resp_spool);
    if (retract_502(u) == 0)
        return;
    r->resp_keepalive = 0;
    finish(u, 0);
}

static void start_response(struct px_uconn *u, const struct px_h1_response *resp, size_t head_len)
{
    struct px_req *r = u->req;
    r->status = resp->status;
    log_head(r, resp);
    r->resp_keepalive = px_h1c_frame(&r->resp, resp, r->method == PX_METHOD_HEAD) ? 1 : 0;
    if (PX_UNLIKELY(r->svc->buffering.responses) && r->resp.mode != PX_BODY_NONE && !unbuffered(resp)) {
        uint64_t max = r->svc->buffering.max_response;
        if (max && resp->content_length > 0 && (uint64_t)resp->content_length > max) {
            px_log_warn("upstream %s: Content-Length %lld over max_response_body (%llu bytes) of %s: 502",
                        r->target ? r->target->addr.text : "?", (long long)resp->content_length,
                        (unsigned long long)max, r->svc->name);
            r->status = 502;
            detach_count(r);
            r->up = NULL;
            px_uconn_close(u);
            r->ops->resp_error(r, 502);
            return;
        }
        r->resp_buffered = 1;
        r->spooled = 1;
    }
    int passthrough = 0;
    r->resp_started = 1;
    r->resp_more = evbuffer_get_length(u->s.in) > head_len;
    if (r->ops->resp_head(r, resp, head_len, &passthrough) < 0) {
        evbuffer_drain(u->s.in, head_len);
        px_upstream_abort(r);
        return;
    }
    r->resp.passthrough = passthrough ? 1 : 0;
    evbuffer_drain(u->s.in, head_len);
}

/* Part of a response arrived and the rest has not: acknowledge it now.
 * Having just sent the request, the socket is in Linux's "pingpong" mode
 * and delays its ACK (40 ms) to piggyback it on data we will not send; a
 * backend with Nagle on (Python's http.server, many dev servers) writes
 * the head and the body in two segments and holds the body until the head
 * is acked, so every keep-alive request would wait for that timer.
 * TCP_QUICKACK sends the pending ACK and leaves pingpong mode until we
 * send again (it is not sticky: hence once per response, re-armed for the
 * next). A response that comes whole in one read costs nothing. */
static void ack_now(struct px_uconn *u)
{
    if (u->quickacked)
        return;
    u->quickacked = 1;
    int one = 1;
    setsockopt(u->s.fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

static void process(struct px_uconn *u)
{
    struct px_req *r = u->req;

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
    if (PX_UNLIKELY(r->spool_pending) && u->state == U_BUSY && evbuffer_get_length(u->s.out) < UP_OUT_LOW) {
        if (spool_up(u) < 0) {
            px_log_error("request body of %s: temp file read: %s", r->svc->name, strerror(errno));
            u->s.error = 1; /* fails below, or cuts the response */
        }
        arm_io(u);
    }
    if (u->s.error && !u->got_bytes) {
        fail(u, 502, 0);
        return;
    }
    if (PX_UNLIKELY(r->resp_fault)) {
        resp_fault(u);
        return;
    }
    if (u->paused)
        return;
    /* A head fits one read; body reads are bounded by the client's room. */
    size_t budget = u->head_done ? PX_UP_READ_MAX : PX_UP_READ_CHUNK;
    if (u->head_done && r->ops->resp_room && !r->resp_buffered) {
        budget = r->ops->resp_room(r);
        if (budget > PX_UP_READ_MAX)
            budget = PX_UP_READ_MAX;
        if (budget == 0) {
            u->paused = 1; /* the client side resumes us (px_upstream_resume) */
            return;
        }
        /* Read what fills a power-of-two chain: a 60 KiB read would take a
         * 128 KiB allocation to a client that is already behind. */
        size_t fit = PX_UP_READ_CHUNK + 512;
        while (fit > 4096 && fit - 512 > budget)
            fit >>= 1;
        if (fit - 512 < budget)
            budget = fit - 512;
    }
    size_t n = px_sock_read(&u->s, budget);
    if (n) {
        u->got_bytes = 1;
        arm(u, read_tv(u));
    }
    while (!u->head_done) {
        struct px_h1_response resp;
        int rc = px_h1c_head(u->s.in, &resp);
        if (rc == 0) {
            if (n)
                ack_now(u);
            break;
        }
        if (rc == -2) {
            px_log_warn("upstream sent a response head over %d bytes", PX_H1C_HEAD_MAX);
            fail(u, 502, 0);
            return;
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
            log_head(r, &resp);
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
        if (r->resp.mode == PX_BODY_NONE) {
            finish(u, 1);
            return;
        }
    }
    if (u->head_done) {
        unsigned paused = u->paused;
        int rc = px_h1c_relay(&r->resp, u->s.in, relay_sink, r, &paused);
        u->paused = paused;
        if (r->up != u)
            return;
        if (PX_UNLIKELY(r->resp_fault)) {
            resp_fault(u);
            return;
        }
        if (rc < 0) {
            px_log_warn("upstream %s sent malformed chunked framing", r->target ? r->target->addr.text : "?");
            count_error(r, r->target, PX_STATS_UP_BAD_RESPONSE);
            if (r->body_out == 0) {
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
        if (rc == 0 && n && !paused)
            ack_now(u);
    }
    if (u->s.eof || u->s.error) {
        if (!u->head_done) {
            fail(u, 502, 0);
        } else if (r->resp.mode == PX_BODY_CLOSE && !u->paused && evbuffer_get_length(u->s.in) == 0) {
            finish(u, 1);
        } else if (!u->paused || u->s.error) {
            count_error(r, r->target, PX_STATS_UP_RESET);
            r->resp_keepalive = 0;
            finish(u, 0);
        }
        return;
    }
    if (u->s.readable && !u->paused)
        event_active(&u->s.ev, EV_READ, 1);
}

static void upstream_event(evutil_socket_t fd, short what, void *arg)
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
        if (u->warm) {
            px_pool_warmed(u, e == 0);
            return;
        }
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

static void upstream_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct px_uconn *u = arg;
    if (px_timer_early(&u->timer, &u->timer_due))
        return;
    switch (u->state) {
    case U_CONNECTING:
        if (u->warm)
            px_pool_warmed(u, 0);
        else
            fail(u, 504, 1);
        return;
    case U_BUSY:
        /* Waiting on the client (slow reader, or a body still coming with
         * nothing queued for the upstream) is not the upstream's fault. */
        if (u->paused || (!u->req->body_sent && evbuffer_get_length(u->s.out) == 0)) {
            arm(u, read_tv(u));
            return;
        }
        if (!u->head_done) {
            px_log_warn(evbuffer_get_length(u->s.out) ? "upstream timed out taking the request"
                                                      : "upstream timed out waiting for the response");
            fail(u, 504, 0);
        } else {
            count_error(u->req, u->req->target, PX_STATS_UP_TIMEOUT);
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

void px_upstream_cut_target(struct px_worker *w, uint32_t target_id)
{
    if (target_id >= w->up.npools)
        return;
    struct px_uconn *u;
    /* each cut takes u off the busy list: always look at the head */
    while ((u = px_list_entry(px_list_first(&w->up.pools[target_id].busy), struct px_uconn, link)) != NULL) {
        struct px_req *r = u->req;
        if (r == NULL) {
            px_uconn_close(u);
            continue;
        }
        px_log_warn("upstream %s: still busy at drain_timeout: cut", r->target ? r->target->addr.text : "?");
        if (!u->head_done) {
            detach_count(r);
            r->up = NULL;
            px_uconn_close(u);
            r->ops->resp_error(r, 504);
        } else {
            r->resp_keepalive = 0;
            finish(u, 0);
        }
    }
}

/* ---- the module: balancer.c, pool.c, upstream.c ---- */

void px_upstream_target_left(struct px_worker *w, const struct px_target *t)
{
    if (PX_LIKELY(!atomic_load_explicit(&t->draining, memory_order_relaxed)))
        return;
    const struct px_target_load *l = &t->load[w->id];
    if (atomic_load_explicit(&l->requests, memory_order_relaxed) ||
        atomic_load_explicit(&l->tunnels, memory_order_relaxed))
        return;
    struct px_wmsg m = {.type = PX_WA_TARGET_IDLE, .u.target.id = t->id};
    px_worker_answer(w, &m);
}

static void upstream_on_msg(struct px_worker *w, const struct px_wmsg *m)
{
    switch (m->type) {
    case PX_WM_DRAIN_TARGET: {
        /* busy connections see the target's draining flag when they end */
        px_pool_close_idle(w, m->u.target.id);
        /* This worker has seen the flag: whatever ends on the target from
         * now on answers by itself (px_upstream_target_left), and what
         * ended before is visible to the main thread once it reads this
         * answer, so it counts again and misses nothing. */
        struct px_wmsg a = {.type = PX_WA_TARGET_IDLE, .u.target.id = m->u.target.id};
        px_worker_answer(w, &a);
        break;
    }
    case PX_WM_CUT_TARGET:
        px_upstream_cut_target(w, m->u.target.id);
        break;
    case PX_WM_WARM_TARGET: {
        struct px_target t = {.addr = m->u.warm.addr, .id = m->u.warm.target_id}; /* what a connect needs */
        px_pool_warm(w, &t, &handlers, m->u.warm.from, m->u.warm.nfrom, m->u.warm.count);
        break;
    }
    default:
        break;
    }
}

static void upstream_on_stop(struct px_worker *w, int now)
{
    if (!now)
        px_pool_close_idle(w, UINT32_MAX);
}

const struct px_worker_module px_upstream_module = {
    .name = "upstream",
    .msgs = PX_WM_BIT(PX_WM_DRAIN_TARGET) | PX_WM_BIT(PX_WM_CUT_TARGET) | PX_WM_BIT(PX_WM_WARM_TARGET),
    .on_msg = upstream_on_msg,
    .on_stop = upstream_on_stop,
    .gc = px_pool_gc,
    .exit = px_pool_exit,
};
