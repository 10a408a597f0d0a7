/* conn.c -- an HTTP/1.x client connection.
 *
 * States: IDLE (keep-alive, waiting for a first byte) -> HEAD (reading a
 * request head) -> ACTIVE (one request in flight: body up, response down)
 * -> IDLE again, or LINGER (flush, half-close, drain) -> closed. TUNNEL
 * after a WebSocket 101. One request at a time: pipelined requests wait in
 * the input buffer (or the kernel) until the response before them is done.
 *
 * The request head is copied out of the read buffer into the request object
 * (a few hundred bytes, usually) so that its slices stay valid for a retry
 * and the access log while the read buffer moves on. Request objects are
 * cached per worker: no allocation per request in steady state. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "px/addr.h"
#include "px/common.h"
#include "px/config.h"
#include "px/h2.h"
#include "px/headers.h"
#include "px/log.h"
#include "px/request.h"
#include "px/sock.h"
#include "px/tls.h"
#include "px/worker.h"

/* Response bytes held for a client that does not read (nginx holds 64-128
 * KiB in its proxy buffers). A client that keeps up (nothing queued) takes a
 * whole upstream read, so a 64 KiB body and its head move in one read and one
 * write; one that is behind gets at most CLIENT_OUT_HIGH. */
#define CLIENT_OUT_HIGH (64 * 1024)
#define CLIENT_OUT_LOW (16 * 1024)
#define CLIENT_READ_MAX (64 * 1024)
#define TUNNEL_HIGH (256 * 1024)
#define REQ_CACHE_MAX 64
#define HEAD_KEEP_MAX 4096

enum cstate { C_HANDSHAKE, C_IDLE, C_HEAD, C_ACTIVE, C_TUNNEL, C_H2, C_CLOSING, C_LINGER, C_DEAD };

struct h1req {
    struct px_req r;              /* first: px_req* <-> h1req* */
    struct px_h1_request hreq;    /* slices into head */
    char *head;
    size_t head_cap, head_len;
    enum px_body_mode body_mode;
    uint64_t body_left;           /* PX_BODY_LENGTH */
    uint64_t body_total;
    struct px_chunked body_chunked;
    size_t resp_mark, resp_end;   /* s.out length before and after the response head */
    unsigned expect_sent : 1;
};

struct px_conn {
    struct px_sock s;
    struct px_worker *w;
    struct event timer;
    struct px_conn *next, *prev;
    struct px_conn *inext, *iprev; /* the worker's idle list, oldest first */
    enum cstate state;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;                       /* not sockaddr_storage: 100 bytes less per connection */
    char peer_ip[46];
    uint8_t peer_ip_len;
    unsigned tls : 1;
    unsigned keepalive : 1;       /* keep the connection after the current response */
    unsigned out_full : 1;        /* the upstream waits for our output to drain */
    unsigned body_paused : 1;     /* the upstream asked us to stop reading body */
    unsigned in_run : 1;          /* inside conn_run: no re-entry, loop instead */
    unsigned again : 1;           /* conn_run must run once more */
    unsigned tun_client_eof : 1, tun_up_eof : 1;
    unsigned closing : 1;         /* inside conn_close */
    unsigned shut_wr : 1;         /* C_LINGER: our side is shut down */
    unsigned reusable : 1;        /* on the worker's idle list */
    struct h1req *hr;
    struct px_uconn *tun;
    struct px_target *tun_target;      /* counted in its load; kept alive by tun_routes */
    const struct px_routes *tun_routes;
    const struct px_routes *hs_routes; /* pinned during the TLS handshake (SNI/ALPN callbacks) */
    struct px_h2 *h2;             /* C_H2: the HTTP/2 session */
    unsigned h2_idle_armed : 1;
};

static void conn_event(evutil_socket_t fd, short what, void *arg);
static void conn_timeout(evutil_socket_t fd, short what, void *arg);
static void conn_run(struct px_conn *c);
static void conn_close(struct px_conn *c);
static void tunnel_run(struct px_conn *c);
static const struct px_down_ops h1_ops;

/* ---- request objects ---- */

static struct h1req *hr_alloc(struct px_worker *w)
{
    struct h1req *hr = w->conn.free_reqs;
    if (hr) {
        w->conn.free_reqs = hr->r.next_free;
        w->conn.nfree_reqs--;
        /* what conn_close looks at before px_req_begin ran */
        hr->r.status = 0;
        hr->r.up = NULL;
        hr->r.routes = NULL;
        hr->r.parked = 0;
        return hr;
    }
    return calloc(1, sizeof(*hr));
}

static void hr_release(struct px_worker *w, struct h1req *hr)
{
    if (hr->head_cap > HEAD_KEEP_MAX || hr->r.xff_join_cap > HEAD_KEEP_MAX || w->conn.nfree_reqs >= REQ_CACHE_MAX) {
        free(hr->head);
        px_req_release(&hr->r);
        free(hr);
        return;
    }
    hr->r.next_free = w->conn.free_reqs;
    w->conn.free_reqs = hr;
    w->conn.nfree_reqs++;
}

static void conn_free_cache(struct px_worker *w)
{
    while (w->conn.free_reqs) {
        struct h1req *hr = w->conn.free_reqs;
        w->conn.free_reqs = hr->r.next_free;
        free(hr->head);
        px_req_release(&hr->r);
        free(hr);
    }
    w->conn.nfree_reqs = 0;
}

/* ---- connections a new client may take the place of ----
 *
 * At max_connections nginx closes "reusable" connections -- keep-alive
 * waits and HTTP/2 sessions with no stream -- to make room rather than lock
 * new clients out until keepalive_timeout. The worker keeps them in a list,
 * oldest first. */

static void set_reusable(struct px_conn *c, int on)
{
    struct px_worker *w = c->w;
    if (c->reusable == (unsigned)!!on)
        return;
    c->reusable = on ? 1 : 0;
    if (on) {
        c->inext = NULL;
        c->iprev = w->conn.idle_tail;
        if (w->conn.idle_tail)
            w->conn.idle_tail->inext = c;
        else
            w->conn.idle_head = c;
        w->conn.idle_tail = c;
        return;
    }
    if (c->iprev)
        c->iprev->inext = c->inext;
    else
        w->conn.idle_head = c->inext;
    if (c->inext)
        c->inext->iprev = c->iprev;
    else
        w->conn.idle_tail = c->iprev;
    c->inext = c->iprev = NULL;
}

/* Waiting for a request: an EOF without close_notify now is a clean end. */
static void enter_idle(struct px_conn *c)
{
    c->state = C_IDLE;
    set_reusable(c, 1);
    px_sock_set_eof_ok(&c->s, 1);
}

static void conn_close(struct px_conn *c);

unsigned px_conn_drain_idle(struct px_worker *w, unsigned n)
{
    unsigned closed = 0;
    while (closed < n && w->conn.idle_head) {
        conn_close(w->conn.idle_head);
        closed++;
    }
    return closed;
}

/* ---- connection lifetime ---- */

void px_conn_accept(struct px_worker *w, int fd, int tls, const struct sockaddr *sa, socklen_t salen)
{
    struct px_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        px_worker_conn_closed(w);
        return;
    }
    if (salen <= sizeof(c->peer))
        memcpy(&c->peer, sa, salen);
    c->peer_ip_len = (uint8_t)px_addr_ntop(&c->peer.sa, c->peer_ip, sizeof(c->peer_ip));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->w = w;
    c->tls = tls ? 1 : 0;
    if (px_sock_open(&c->s, w->base, fd, conn_event, c) < 0) {
        free(c);
        px_worker_conn_closed(w);
        return;
    }
    event_assign(&c->timer, w->base, -1, 0, conn_timeout, c);
    c->state = C_IDLE;
    if (tls) {
        px_worker_refresh(w);
        const struct px_tls *t = px_routes_tls(w->routes);
        if (t == NULL || (c->s.ssl = px_tls_new(t, fd)) == NULL) {
            px_sock_close(&c->s);
            free(c);
            px_worker_conn_closed(w);
            return;
        }
        c->hs_routes = w->routes;
        px_routes_pin(c->hs_routes, w->id);
        c->state = C_HANDSHAKE;
    }
    c->next = w->conn.all;
    if (w->conn.all)
        w->conn.all->prev = c;
    w->conn.all = c;
    w->conn.n++;
    if (c->state == C_IDLE)
        set_reusable(c, 1);
    event_add(&c->timer, w->tv_header);
    /* data usually arrives with the handshake: try at once */
    conn_run(c);
}

static void finish_request(struct px_conn *c, int ok);

static void conn_close(struct px_conn *c)
{
    if (c->state == C_DEAD || c->closing)
        return;
    struct px_worker *w = c->w;
    c->closing = 1;
    set_reusable(c, 0);
    if (c->hr)
        finish_request(c, 0);
    if (c->tun) {
        px_uconn_close(c->tun);
        c->tun = NULL;
        px_target_load_add(c->tun_target, w->id, 0, -1);
        px_routes_unpin(c->tun_routes, w->id);
        c->tun_target = NULL;
        c->tun_routes = NULL;
    }
    if (c->hs_routes) {
        px_routes_unpin(c->hs_routes, w->id);
        c->hs_routes = NULL;
    }
    if (c->h2) {
        px_h2_free(c->h2);
        c->h2 = NULL;
    }
    event_del(&c->timer);
    px_sock_close(&c->s);
    c->state = C_DEAD;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conn.all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = w->conn.dead;
    w->conn.dead = c;
    w->conn.n--;
    px_worker_schedule_gc(w);
    px_worker_conn_closed(w);
}

static void conn_gc(struct px_worker *w)
{
    while (w->conn.dead) {
        struct px_conn *c = w->conn.dead;
        w->conn.dead = c->next;
        free(c);
    }
}

void px_conn_stop_all(struct px_worker *w)
{
    struct px_conn *c = w->conn.all, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == C_IDLE || c->state == C_HANDSHAKE)
            conn_close(c);
        else if (c->state == C_H2)
            px_h2_goaway(c->h2);
        else
            c->keepalive = 0;
    }
}

void px_conn_close_tunnels(struct px_worker *w, uint32_t target_id)
{
    struct px_conn *c = w->conn.all, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == C_TUNNEL && c->tun_target && c->tun_target->id == target_id)
            conn_close(c);
    }
}

void px_conn_goaway_all(struct px_worker *w)
{
    for (struct px_conn *c = w->conn.all; c; c = c->next)
        if (c->state == C_H2)
            px_h2_goaway(c->h2);
}

void px_conn_kill_all(struct px_worker *w)
{
    while (w->conn.all)
        conn_close(w->conn.all);
}

/* Flush, half-close and read until EOF (or tv_linger), so that the peer
 * reads our last response before it sees a reset. */
static void conn_linger(struct px_conn *c)
{
    c->keepalive = 0;
    c->state = C_LINGER;
    px_sock_set_eof_ok(&c->s, 1);
    event_add(&c->timer, c->w->tv_linger);
    c->again = 1;
}

/* ---- responses proxyd makes itself ---- */

static void resp_opts(struct px_conn *c, struct px_resp_opts *o, int minor)
{
    o->client_minor = minor;
    o->keep_alive = c->keepalive;
    o->strip_te = 0;
    o->is_https = c->tls;
    o->upgrade = 0;
    o->add = c->w->adds;
    o->nadd = c->w->nadds;
}

/* px_down_ops.respond: a response proxyd makes itself. */
static void h1_respond(struct px_req *r, int status, const char *body, size_t len,
                       const struct px_h1_header *extra, size_t nextra)
{
    struct h1req *hr = (struct h1req *)r;
    struct px_conn *c = r->down;
    /* A body we did not read poisons the connection: close after. */
    if (r->has_body && !r->body_sent)
        c->keepalive = 0;
    if (status >= 400 && status != 404 && status != 429 && status != 503)
        c->keepalive = 0;
    char tmp[64];
    if (body == NULL) {
        int n = snprintf(tmp, sizeof(tmp), "%d %s\n", status, px_status_reason(status));
        body = tmp;
        len = (size_t)n;
    }
    char xbuf[1024], *xp = NULL;
    size_t xlen = 0;
    for (size_t i = 0; i < nextra; i++)
        xlen += extra[i].name_len + extra[i].value_len + 4;
    if (xlen) {
        xp = xlen <= sizeof(xbuf) ? xbuf : malloc(xlen);
        if (xp == NULL) {
            conn_close(c);
            return;
        }
        char *p = xp;
        for (size_t i = 0; i < nextra; i++)
            p += sprintf(p, "%.*s: %.*s\r\n", (int)extra[i].name_len, extra[i].name, (int)extra[i].value_len,
                         extra[i].value);
        xlen = (size_t)(p - xp);
    }
    struct px_resp_opts o;
    resp_opts(c, &o, hr->hreq.minor_version);
    int head = r->method == PX_METHOD_HEAD;
    px_h1_write_local_response(c->s.out, status, body, len, head, &o, xp, xlen);
    if (xp != xbuf)
        free(xp);
    r->status = status;
    r->bytes_out = head ? 0 : len;
    r->resp_started = 1;
    finish_request(c, 1);
}

static void respond_local(struct px_conn *c, int status, const char *body, size_t len)
{
    px_req_respond(&c->hr->r, status, body, len);
}

static struct px_req_origin h1_origin(struct px_conn *c, size_t head_bound)
{
    const struct px_h1_request *q = &c->hr->hreq;
    struct px_req_origin o = {
        .q = q,
        .head_bound = head_bound,
        .peer = &c->peer.sa,
        .peer_ip = c->peer_ip,
        .peer_ip_len = c->peer_ip_len,
        .proto = q->minor_version ? PX_PROTO_HTTP11 : PX_PROTO_HTTP10,
        .tls = c->tls,
    };
    return o;
}

/* A head that could not be parsed: there is no request to speak of. */
static void respond_bad_head(struct px_conn *c, int status)
{
    struct h1req *hr = c->hr;
    hr->hreq.method = "";
    hr->hreq.method_len = 0;
    hr->hreq.method_id = PX_METHOD_OTHER;
    hr->hreq.host = NULL;
    hr->hreq.path = "";
    hr->hreq.path_len = 0;
    hr->hreq.content_length = -1;
    hr->hreq.nheaders = 0;
    hr->hreq.minor_version = 1;
    hr->head_len = 0;
    struct px_req_origin o = h1_origin(c, 0);
    px_req_begin(&hr->r, c->w, &h1_ops, c, &o);
    c->keepalive = 0;
    c->state = C_ACTIVE;
    respond_local(c, status, NULL, 0);
}

/* ---- the request ---- */

static void finish_request(struct px_conn *c, int ok)
{
    struct h1req *hr = c->hr;
    struct px_req *r = &hr->r;
    struct px_worker *w = c->w;
    px_req_finish(r);
    int body_unread = r->has_body && !r->body_sent;
    c->hr = NULL;
    hr_release(w, hr); /* r is gone from here on */
    if (c->state == C_DEAD || c->closing || c->state == C_TUNNEL)
        return;
    if (!ok) {
        /* the response was cut short: the client must see the break */
        conn_close(c);
        return;
    }
    if (body_unread)
        c->keepalive = 0;
    if (px_sock_flush(&c->s) < 0) {
        conn_close(c);
        return;
    }
    if (!c->keepalive || w->stopping) {
        /* Linger (half-close, drain) only when the client may still be
         * sending -- an unread body or pipelined bytes -- so that its data
         * does not turn our last response into a reset. Else just flush and
         * close, like nginx's lingering_close on. */
        if (body_unread || evbuffer_get_length(c->s.in) || c->s.readable)
            conn_linger(c);
        else {
            c->state = C_CLOSING;
            px_sock_set_eof_ok(&c->s, 1);
            event_add(&c->timer, w->tv_body); /* bounded: a client that never reads */
            c->again = 1;
        }
    } else {
        enter_idle(c);
        event_add(&c->timer, w->tv_keepalive);
        c->again = 1;
    }
    if (!c->in_run)
        conn_run(c);
}

/* Move request body bytes from the client to the upstream. */
static void read_body(struct px_conn *c)
{
    struct h1req *hr = c->hr;
    struct px_req *r = &hr->r;
    const struct px_config *cfg = c->w->cfg;
    while (c->hr == hr && !r->body_sent && !c->body_paused) {
        size_t avail = evbuffer_get_length(c->s.in);
        if (avail == 0) {
            if (c->s.eof || c->s.error) {
                /* the client went away mid-body */
                px_sock_mark_truncated(&c->s);
                conn_close(c);
                return;
            }
            if (!c->s.readable)
                return;
            if (px_sock_read(&c->s, CLIENT_READ_MAX) == 0)
                continue;
            event_add(&c->timer, c->w->tv_body);
            continue;
        }
        if (hr->body_mode == PX_BODY_LENGTH) {
            size_t n = avail < hr->body_left ? avail : (size_t)hr->body_left;
            hr->body_left -= n;
            if (px_upstream_body(r, c->s.in, n, hr->body_left == 0))
                c->body_paused = 1;
            continue;
        }
        /* chunked: pass the framing through verbatim, validating it */
        struct evbuffer_iovec vec[8];
        int nv = evbuffer_peek(c->s.in, -1, NULL, vec, 8);
        size_t scanned = 0;
        int done = 0;
        for (int i = 0; i < nv && i < 8 && !done; i++) {
            const char *p = vec[i].iov_base;
            size_t left = vec[i].iov_len;
            while (left) {
                size_t used = 0;
                enum px_chunk_result res = px_chunked_step(&hr->body_chunked, p, left, &used);
                if (res == PX_CHUNK_ERROR) {
                    if (!r->resp_started) {
                        px_upstream_abort(r);
                        r->body_sent = 1; /* nothing more is read */
                        c->keepalive = 0;
                        respond_local(c, 400, NULL, 0);
                    } else {
                        conn_close(c);
                    }
                    return;
                }
                if (res == PX_CHUNK_DATA)
                    hr->body_total += used;
                scanned += used;
                p += used;
                left -= used;
                if (res == PX_CHUNK_DONE) {
                    done = 1;
                    break;
                }
            }
        }
        if (cfg->max_body_size && hr->body_total > cfg->max_body_size) {
            if (!r->resp_started) {
                px_upstream_abort(r);
                r->body_sent = 1;
                c->keepalive = 0;
                respond_local(c, 413, NULL, 0);
            } else {
                conn_close(c);
            }
            return;
        }
        if (px_upstream_body(r, c->s.in, scanned, done))
            c->body_paused = 1;
    }
}

static void start_request(struct px_conn *c, size_t head_len)
{
    struct px_worker *w = c->w;
    struct h1req *hr = c->hr;
    struct px_req *r = &hr->r;
    struct px_h1_request *q = &hr->hreq;

    /* Keep our own copy of the head; rebase the slices onto it. */
    if (hr->head_cap < head_len) {
        char *nh = realloc(hr->head, head_len);
        if (nh == NULL) {
            conn_close(c);
            return;
        }
        hr->head = nh;
        hr->head_cap = head_len;
    }
    const char *src = (const char *)evbuffer_pullup(c->s.in, (ev_ssize_t)head_len);
    memcpy(hr->head, src, head_len);
    ptrdiff_t delta = hr->head - src;
    /* only pointers into the buffer move (the parser may point at a literal "/") */
#define REBASE(ptr) \
    do { \
        if ((ptr) >= src && (ptr) < src + head_len) \
            (ptr) += delta; \
    } while (0)
    REBASE(q->method);
    REBASE(q->target);
    REBASE(q->path);
    REBASE(q->query);
    REBASE(q->host);
    for (size_t i = 0; i < q->nheaders; i++) {
        REBASE(q->headers[i].name);
        REBASE(q->headers[i].value);
    }
#undef REBASE
    hr->head_len = head_len;
    evbuffer_drain(c->s.in, head_len);

    struct px_req_origin o = h1_origin(c, head_len);
    o.has_body = q->chunked || q->content_length > 0;
    int rc = px_req_begin(r, w, &h1_ops, c, &o);
    hr->body_total = 0;
    hr->expect_sent = 0;
    c->state = C_ACTIVE;
    c->body_paused = 1; /* until the upstream request starts (h1_proceed) */
    c->out_full = 0;
    c->keepalive = q->minor_version == 1 ? !q->conn_close : q->conn_keep_alive;
    if (rc < 0) {
        respond_local(c, 500, NULL, 0);
        return;
    }
    if (q->chunked) {
        hr->body_mode = PX_BODY_CHUNKED;
        px_chunked_init(&hr->body_chunked);
    } else if (q->content_length > 0) {
        hr->body_mode = PX_BODY_LENGTH;
        hr->body_left = (uint64_t)q->content_length;
    } else {
        hr->body_mode = PX_BODY_NONE;
    }
    r->websocket = q->upgrade_websocket && q->conn_upgrade && r->method == PX_METHOD_GET &&
                   q->minor_version == 1;
    px_req_dispatch(r);
}

/* px_down_ops.proceed: the upstream request started; let the body flow. */
static void h1_proceed(struct px_req *r)
{
    struct h1req *hr = (struct h1req *)r;
    struct px_conn *c = r->down;
    const struct px_h1_request *q = &hr->hreq;
    c->body_paused = 0;
    if (!r->has_body)
        return;
    if (q->expect_continue && q->minor_version == 1 && evbuffer_get_length(c->s.in) == 0) {
        evbuffer_add(c->s.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        hr->expect_sent = 1;
        px_sock_flush(&c->s);
    }
    event_add(&c->timer, c->w->tv_body);
    if (c->in_run)
        c->again = 1; /* conn_run reads the body next */
    else
        read_body(c);
}

/* Parse heads from the input as long as there are complete requests and the
 * previous response is out of the way. */
static void read_head(struct px_conn *c)
{
    struct px_worker *w = c->w;
    const struct px_config *cfg = w->cfg;
    size_t limit = (size_t)cfg->max_header_size;
    for (;;) {
        size_t len = evbuffer_get_length(c->s.in);
        if (len < limit && c->s.readable && !c->s.eof && !c->s.error) {
            px_sock_read(&c->s, limit - len + 1024);
            len = evbuffer_get_length(c->s.in);
        }
        if (len == 0) {
            if (c->s.eof || c->s.error)
                conn_close(c);
            return;
        }
        if (c->state == C_IDLE) {
            c->state = C_HEAD;
            set_reusable(c, 0);
            px_sock_set_eof_ok(&c->s, 0);
            event_add(&c->timer, w->tv_header);
        }
        if (c->hr == NULL && (c->hr = hr_alloc(w)) == NULL) {
            conn_close(c);
            return;
        }
        size_t n = len < limit ? len : limit;
        const char *buf = (const char *)evbuffer_pullup(c->s.in, (ev_ssize_t)n);
        int rc = px_h1_parse_request(buf, n, &c->hr->hreq);
        if (rc == PX_H1_INCOMPLETE) {
            if (len >= limit) {
                respond_bad_head(c, 431);
                return;
            }
            if (c->s.eof || c->s.error) {
                px_sock_mark_truncated(&c->s); /* EOF inside a head */
                conn_close(c);
                return;
            }
            if (c->s.readable)
                continue;
            return;
        }
        if (rc < 0) {
            respond_bad_head(c, -rc);
            return;
        }
        start_request(c, (size_t)rc);
        return;
    }
}

/* An upstream event produced HTTP/2 frames: write them once this loop
 * iteration is done (EV_TIMEOUT marks no socket readiness). */
static void conn_kick(void *arg)
{
    struct px_conn *c = arg;
    if (c->in_run)
        c->again = 1;
    else
        event_active(&c->s.ev, EV_TIMEOUT, 1);
}

static void tls_handshake(struct px_conn *c)
{
    int rc = SSL_do_handshake(c->s.ssl);
    if (rc == 1) {
        int d = px_tls_handshake_done(c->s.ssl);
        if (d < 0) {
            conn_close(c);
            return;
        }
        if (d > 0)
            return; /* the flight waits for EPOLLOUT; SSL_do_handshake returns 1 again */
        px_routes_unpin(c->hs_routes, c->w->id);
        c->hs_routes = NULL;
        c->s.readable = 1; /* read-ahead may already hold the first request */
        c->s.writable = 1;
        c->again = 1;
        if (px_tls_is_h2(c->s.ssl)) {
            struct px_h2_peer peer = {&c->peer.sa, c->peer_ip, c->peer_ip_len};
            if ((c->h2 = px_h2_new(c->w, &c->s, &peer, conn_kick, c)) == NULL) {
                conn_close(c);
                return;
            }
            c->state = C_H2;
            event_add(&c->timer, c->w->tv_keepalive);
            c->h2_idle_armed = 1;
            set_reusable(c, 1);
            px_sock_set_eof_ok(&c->s, 1);
            return;
        }
        enter_idle(c);
        return;
    }
    int e = SSL_get_error(c->s.ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        c->s.readable = 0; /* wait for an EPOLLIN edge, not any edge */
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->s.writable = 0;
        return;
    }
    ERR_clear_error();
    conn_close(c); /* protocol or version mismatch, or the peer left */
}

static void conn_run(struct px_conn *c)
{
    if (c->in_run) {
        c->again = 1;
        return;
    }
    c->in_run = 1;
    do {
        c->again = 0;
        if (c->s.writable && evbuffer_get_length(c->s.out) && px_sock_flush(&c->s) < 0) {
            conn_close(c);
            break;
        }
        switch (c->state) {
        case C_HANDSHAKE:
            if (c->s.readable || c->s.writable)
                tls_handshake(c);
            break;
        case C_IDLE:
        case C_HEAD:
            if (evbuffer_get_length(c->s.out) > CLIENT_OUT_HIGH)
                break; /* let the previous response drain first */
            read_head(c);
            break;
        case C_ACTIVE: {
            struct h1req *hr = c->hr;
            if (hr->r.parked && (c->s.rdhup || c->s.error)) {
                /* the client left while its request waited (nginx: 499) */
                hr->r.status = 499;
                finish_request(c, 0);
                break;
            }
            if (c->out_full && evbuffer_get_length(c->s.out) < CLIENT_OUT_LOW) {
                c->out_full = 0;
                px_upstream_resume(&hr->r);
            }
            if (c->hr && !c->hr->r.body_sent && !c->body_paused)
                read_body(c);
            else if (c->s.error)
                conn_close(c);
            break;
        }
        case C_TUNNEL:
            tunnel_run(c);
            break;
        case C_H2: {
            int rc = px_h2_run(c->h2);
            if (rc != 0) {
                conn_close(c);
                break;
            }
            if (!px_h2_idle(c->h2)) {
                if (c->h2_idle_armed) {
                    c->h2_idle_armed = 0;
                    set_reusable(c, 0);
                    px_sock_set_eof_ok(&c->s, 0);
                }
            } else if (!c->h2_idle_armed) {
                c->h2_idle_armed = 1;
                set_reusable(c, 1);
                px_sock_set_eof_ok(&c->s, 1);
                event_add(&c->timer, c->w->tv_keepalive);
            }
            break;
        }
        case C_CLOSING:
            if (evbuffer_get_length(c->s.out) == 0 || c->s.error)
                conn_close(c);
            break;
        case C_LINGER:
            if (evbuffer_get_length(c->s.out)) {
                if (c->s.error)
                    conn_close(c);
                break;
            }
            /* Once: every shutdown raises a new EPOLLOUT edge, and a
             * shutdown per wakeup would spin until the linger timeout. */
            if (!c->shut_wr) {
                c->shut_wr = 1;
                px_sock_shutdown_write(&c->s);
            }
            evbuffer_drain(c->s.in, evbuffer_get_length(c->s.in));
            while (c->s.readable && !c->s.eof && !c->s.error) {
                px_sock_read(&c->s, 65536);
                evbuffer_drain(c->s.in, evbuffer_get_length(c->s.in));
            }
            if (c->s.eof || c->s.error)
                conn_close(c);
            break;
        case C_DEAD:
            break;
        }
    } while (c->again && c->state != C_DEAD);
    c->in_run = 0;
}

static void conn_event(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    px_sock_mark(&c->s, what);
    conn_run(c);
}

static void conn_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    switch (c->state) {
    case C_H2:
        if (!px_h2_idle(c->h2)) {
            event_add(&c->timer, c->w->tv_keepalive);
            return;
        }
        conn_close(c);
        return;
    case C_HANDSHAKE:
    case C_IDLE:
    case C_HEAD:
    case C_CLOSING:
    case C_LINGER:
    case C_TUNNEL:
        conn_close(c);
        return;
    case C_ACTIVE: {
        struct px_req *r = &c->hr->r;
        int waiting_body = !r->body_sent && !c->body_paused;
        int waiting_out = evbuffer_get_length(c->s.out) > 0 && !c->s.writable;
        if (!waiting_body && !waiting_out) {
            event_add(&c->timer, c->w->tv_body); /* the upstream's timers govern */
            return;
        }
        if (waiting_body && !r->resp_started) {
            px_upstream_abort(r);
            r->body_sent = 1;
            c->keepalive = 0;
            respond_local(c, 408, NULL, 0);
            return;
        }
        conn_close(c);
        return;
    }
    case C_DEAD:
        return;
    }
}

/* ---- px_down_ops for HTTP/1.x ---- */

static int h1_resp_head(struct px_req *r, const struct px_h1_response *resp, size_t head_len, int *passthrough)
{
    struct h1req *hr = (struct h1req *)r;
    struct px_conn *c = r->down;
    struct px_resp_opts o;
    if (r->resp.mode == PX_BODY_CLOSE || (r->has_body && !r->body_sent))
        c->keepalive = 0;
    resp_opts(c, &o, hr->hreq.minor_version);
    if (r->resp.mode == PX_BODY_CHUNKED && hr->hreq.minor_version == 0) {
        o.strip_te = 1; /* HTTP/1.0 has no chunked: de-chunk and close */
        o.keep_alive = c->keepalive = 0;
        *passthrough = 0;
    } else {
        *passthrough = 1;
    }
    o.upgrade = resp->status == 101;
    hr->resp_mark = evbuffer_get_length(c->s.out);
    if (px_h1_write_response_head(c->s.out, resp, head_len, &o) < 0)
        return -1;
    hr->resp_end = evbuffer_get_length(c->s.out);
    /* With body bytes right behind, head and body leave in one write; a
     * head alone (a streaming or slow response) must not wait for them. */
    if (!r->resp_more && px_sock_flush(&c->s) < 0)
        return -1;
    return 0;
}

static int h1_resp_retract(struct px_req *r)
{
    struct h1req *hr = (struct h1req *)r;
    struct px_conn *c = r->down;
    struct evbuffer *out = c->s.out;
    /* Unchanged length after the head: no byte of it was written. */
    if (evbuffer_get_length(out) != hr->resp_end || c->s.error)
        return -1;
    if (hr->resp_mark == 0) {
        evbuffer_drain(out, hr->resp_end);
        return 0;
    }
    struct evbuffer *keep = evbuffer_new(); /* an error path: rare */
    if (keep == NULL)
        return -1;
    evbuffer_remove_buffer(out, keep, hr->resp_mark);
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_add_buffer(out, keep);
    evbuffer_free(keep);
    return 0;
}

static int h1_resp_body(struct px_req *r, struct evbuffer *src, size_t len)
{
    struct px_conn *c = r->down;
    px_buf_move(c->s.out, src, len);
    r->bytes_out += len;
    if (px_sock_flush(&c->s) < 0)
        return 1; /* the error surfaces in conn_run */
    if (evbuffer_get_length(c->s.out) > CLIENT_OUT_HIGH) {
        c->out_full = 1;
        event_add(&c->timer, c->w->tv_body);
        return 1;
    }
    return 0;
}

static size_t h1_resp_room(struct px_req *r)
{
    struct px_conn *c = r->down;
    size_t out = evbuffer_get_length(c->s.out);
    if (out == 0)
        return SIZE_MAX;
    if (out + 4096 <= CLIENT_OUT_HIGH) /* not worth a read below a page */
        return CLIENT_OUT_HIGH - out;
    c->out_full = 1; /* conn_run resumes the upstream below CLIENT_OUT_LOW */
    event_add(&c->timer, c->w->tv_body);
    return 0;
}

static void h1_resp_end(struct px_req *r, int ok)
{
    struct px_conn *c = r->down;
    if (c->s.error)
        ok = 0;
    finish_request(c, ok);
}

static void h1_resp_error(struct px_req *r, int status)
{
    struct px_conn *c = r->down;
    respond_local(c, status, NULL, 0);
}

static void h1_body_resume(struct px_req *r)
{
    struct px_conn *c = r->down;
    c->body_paused = 0;
    if (c->in_run)
        c->again = 1;
    else
        event_active(&c->s.ev, EV_READ, 1);
}

static void tunnel_event(struct px_uconn *u, short what, void *owner)
{
    struct px_conn *c = owner;
    px_sock_mark(px_uconn_sock(u), what);
    conn_run(c);
}

static void h1_upgraded(struct px_req *r)
{
    struct px_conn *c = r->down;
    struct px_uconn *u = px_upstream_detach(r);
    if (u == NULL) {
        finish_request(c, 0);
        return;
    }
    c->tun = u;
    /* The tunnel outlives the request: it keeps the snapshot (and so its
     * target) pinned, and counts on the target until it closes, so that a
     * deploy knows when it is gone. */
    c->tun_target = r->target;
    c->tun_routes = r->routes;
    px_routes_pin(c->tun_routes, c->w->id);
    px_target_load_add(c->tun_target, c->w->id, 0, 1);
    px_uconn_tunnel(u, tunnel_event, c);
    r->body_sent = 1;
    c->keepalive = 0;
    c->state = C_TUNNEL; /* finish_request logs the 101 and leaves the state alone */
    finish_request(c, 1);
    event_add(&c->timer, c->w->tv_uread);
    if (c->in_run)
        c->again = 1;
    else
        conn_run(c);
}

static const struct px_down_ops h1_ops = {
    .respond = h1_respond,
    .proceed = h1_proceed,
    .resp_head = h1_resp_head,
    .resp_body = h1_resp_body,
    .resp_end = h1_resp_end,
    .resp_error = h1_resp_error,
    .body_resume = h1_body_resume,
    .upgraded = h1_upgraded,
    .resp_retract = h1_resp_retract,
    .resp_room = h1_resp_room,
};

/* ---- WebSocket tunnel: bytes both ways, half-close aware ---- */

static void tunnel_run(struct px_conn *c)
{
    struct px_sock *us = px_uconn_sock(c->tun);
    struct px_sock *cs = &c->s;
    int progress = 0;
    for (int round = 0; round < 4; round++) {
        size_t moved = 0;
        if (!c->tun_client_eof && evbuffer_get_length(us->out) < TUNNEL_HIGH) {
            moved += px_sock_read(cs, CLIENT_READ_MAX);
            if (evbuffer_get_length(cs->in)) {
                moved += evbuffer_get_length(cs->in);
                evbuffer_add_buffer(us->out, cs->in);
            }
        }
        if (!c->tun_up_eof && evbuffer_get_length(cs->out) < TUNNEL_HIGH) {
            moved += px_sock_read(us, CLIENT_READ_MAX);
            if (evbuffer_get_length(us->in)) {
                moved += evbuffer_get_length(us->in);
                evbuffer_add_buffer(cs->out, us->in);
            }
        }
        if (px_sock_flush(us) < 0 || px_sock_flush(cs) < 0 || cs->error || us->error) {
            conn_close(c);
            return;
        }
        if (cs->eof && !c->tun_client_eof && evbuffer_get_length(us->out) == 0) {
            c->tun_client_eof = 1;
            px_sock_shutdown_write(us);
        }
        if (us->eof && !c->tun_up_eof && evbuffer_get_length(cs->out) == 0) {
            c->tun_up_eof = 1;
            px_sock_shutdown_write(cs);
        }
        if (c->tun_client_eof && c->tun_up_eof) {
            conn_close(c);
            return;
        }
        if (moved == 0)
            break;
        progress = 1;
    }
    if (progress)
        event_add(&c->timer, c->w->tv_uread);
    if ((cs->readable && !c->tun_client_eof && evbuffer_get_length(us->out) < TUNNEL_HIGH) ||
        (us->readable && !c->tun_up_eof && evbuffer_get_length(cs->out) < TUNNEL_HIGH))
        event_active(&cs->ev, EV_READ, 1);
}

static void conn_exit(struct px_worker *w)
{
    conn_gc(w);
    conn_free_cache(w);
}

const struct px_worker_module px_conn_module = {
    .name = "conn",
    .gc = conn_gc,
    .exit = conn_exit,
};
