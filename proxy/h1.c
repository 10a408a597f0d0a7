/* h1.c -- the HTTP/1.x server session on a client connection: read a
 * request head, hand the request to the pipeline (request.c), move its body
 * up, write the response down, then keep-alive or close.
 *
 * One request at a time: pipelined requests wait in the input buffer (or the
 * kernel) until the response before them is done. The request head is
 * copied out of the read buffer into the request object (a few hundred
 * bytes, usually) so that its slices stay valid for a retry and the access
 * log while the read buffer moves on. Request and session objects are cached
 * per worker: no allocation per request in steady state. A session on its
 * connection (struct px_session_ops): it reaches the connection only through
 * the transport API of px/conn.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/common.h"
#include "px/config.h"
#include "px/conn.h"
#include "px/h1.h"
#include "px/headers.h"
#include "px/log.h"
#include "px/request.h"
#include "px/sock.h"
#include "px/tunnel.h"
#include "px/upstream.h"
#include "px/worker.h"

#define REQ_CACHE_MAX 64
#define HEAD_KEEP_MAX 4096

struct px_h1req {
    struct px_req r;              /* first: px_req* <-> h1req* */
    struct px_req_head hreq;    /* slices into head */
    char *head;
    size_t head_cap, head_len;
    enum px_body_mode body_mode;
    uint64_t body_left;           /* PX_BODY_LENGTH */
    uint64_t body_total;
    struct px_chunked body_chunked;
    size_t resp_mark, resp_end;   /* s.out length before and after the response head */
    unsigned expect_sent : 1;
};

/* The session: one per connection, while it speaks HTTP/1. */
enum h1_state { H1_IDLE, H1_HEAD, H1_ACTIVE };
struct px_h1conn {
    struct px_conn *c;
    struct px_h1req *hr;          /* the request in progress */
    enum h1_state state;          /* IDLE (keep-alive, waiting for a first byte) -> HEAD -> ACTIVE */
    uint32_t discard;             /* body bytes of an answered request still to skip */
    unsigned keepalive : 1;       /* keep the connection after the current response */
    unsigned out_full : 1;        /* the upstream waits for our output to drain */
    unsigned body_paused : 1;     /* the upstream asked us to stop reading body */
    unsigned upgraded : 1;        /* a tunnel took the connection over */
    struct px_h1conn *next_free;  /* the worker's dead list, then its cache */
};

static const struct px_down_ops h1_ops;
static void finish_request(struct px_h1conn *h, int ok);
static void read_body(struct px_h1conn *h);
static void h1_release(struct px_h1conn *h);

/* ---- request objects ---- */

static struct px_h1req *hr_alloc(struct px_worker *w)
{
    struct px_h1req *hr = w->h1.free_reqs;
    if (hr) {
        w->h1.free_reqs = hr->r.next_free;
        w->h1.nfree_reqs--;
        /* what conn_close looks at before px_req_begin ran */
        hr->r.status = 0;
        hr->r.up = NULL;
        hr->r.routes = NULL;
        hr->r.parked = 0;
        return hr;
    }
    return calloc(1, sizeof(*hr));
}

static void hr_release(struct px_worker *w, struct px_h1req *hr)
{
    if (hr->head_cap > HEAD_KEEP_MAX || hr->r.xff_join_cap > HEAD_KEEP_MAX || w->h1.nfree_reqs >= REQ_CACHE_MAX) {
        free(hr->head);
        px_req_release(&hr->r);
        free(hr);
        return;
    }
    hr->r.next_free = w->h1.free_reqs;
    w->h1.free_reqs = hr;
    w->h1.nfree_reqs++;
}

static void free_reqs(struct px_worker *w)
{
    while (w->h1.free_reqs) {
        struct px_h1req *hr = w->h1.free_reqs;
        w->h1.free_reqs = hr->r.next_free;
        free(hr->head);
        px_req_release(&hr->r);
        free(hr);
    }
    w->h1.nfree_reqs = 0;
}

/* ---- responses proxyd makes itself ---- */

/* The response headers: the request's route's when it has sets, else the
 * worker's [headers]. */
static void resp_opts(struct px_h1conn *h, const struct px_req *r, struct px_resp_opts *o, int minor)
{
    struct px_conn *c = h->c;
    o->client_minor = minor;
    o->keep_alive = h->keepalive;
    o->strip_te = 0;
    o->is_https = c->tls;
    o->upgrade = 0;
    o->html = r->html;
    o->add = r->adds ? r->adds : c->w->adds;
    o->nadd = r->adds ? r->nadds : c->w->nadds;
    o->date = px_req_date(c->w);
}

/* The unread body of hr's request can be skipped to keep the connection:
 * its length is known and small, and the client is sending it (with
 * Expect: 100-continue and no 100 sent, it may never come). */
static int body_discardable(const struct px_h1req *hr)
{
    return hr->body_mode == PX_BODY_LENGTH && hr->body_left <= PX_DISCARD_MAX &&
           !(hr->hreq.expect_continue && !hr->expect_sent);
}

/* px_down_ops.respond: a response proxyd makes itself. */
static void h1_respond(struct px_req *r, int status, const char *body, size_t len,
                       const struct px_h1_header *extra, size_t nextra)
{
    struct px_h1req *hr = (struct px_h1req *)r;
    struct px_h1conn *h = r->down;
    struct px_conn *c = h->c;
    /* A body we did not read poisons the connection unless it can be
     * skipped: close after. */
    if (r->has_body && !r->body_sent && !body_discardable(hr))
        h->keepalive = 0;
    if (status >= 400 && status != 404 && status != 429 && status != 503)
        h->keepalive = 0;
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
            px_conn_close(c);
            return;
        }
        char *p = xp;
        for (size_t i = 0; i < nextra; i++)
            p += sprintf(p, "%.*s: %.*s\r\n", (int)extra[i].name_len, extra[i].name, (int)extra[i].value_len,
                         extra[i].value);
        xlen = (size_t)(p - xp);
    }
    struct px_resp_opts o;
    resp_opts(h, r, &o, hr->hreq.minor_version);
    int head = r->method == PX_METHOD_HEAD;
    size_t out0 = evbuffer_get_length(c->s.out);
    int rc = px_h1_write_local_response(c->s.out, status, body, len, head, &o, xp, xlen);
    if (xp != xbuf)
        free(xp);
    if (rc < 0) {
        /* never a silent drop: say so, and close rather than leave the
         * client waiting on a keep-alive connection */
        px_log_error("out of memory writing a %d response: closing the connection", status);
        r->status = status;
        finish_request(h, 0);
        return;
    }
    r->status = status;
    r->body_out = head ? 0 : len;
    r->bytes_out += evbuffer_get_length(c->s.out) - out0; /* head and body (after a 100 Continue) */
    r->resp_started = 1;
    finish_request(h, 1);
}

static void respond_local(struct px_h1conn *h, int status, const char *body, size_t len)
{
    px_req_respond(&h->hr->r, status, body, len);
}

static struct px_req_origin h1_origin(struct px_h1conn *h, size_t head_bound)
{
    struct px_conn *c = h->c;
    const struct px_req_head *q = &h->hr->hreq;
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

/* A head that could not be parsed: there is no request to speak of. Its
 * first line (up to 2 KiB) is kept as the access log's request line, as
 * nginx logs it. */
static void respond_bad_head(struct px_h1conn *h, int status, const char *buf, size_t n)
{
    struct px_conn *c = h->c;
    struct px_h1req *hr = h->hr;
    size_t line = 0;
    while (line < n && line < 2048 && buf[line] != '\r' && buf[line] != '\n')
        line++;
    if (line && hr->head_cap < line) {
        char *nh = realloc(hr->head, line);
        if (nh) {
            hr->head = nh;
            hr->head_cap = line;
        } else {
            line = 0;
        }
    }
    if (line)
        memcpy(hr->head, buf, line);
    hr->hreq.target = hr->head;
    hr->hreq.target_len = line;
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
    struct px_req_origin o = h1_origin(h, 0);
    px_req_begin(&hr->r, c->w, &h1_ops, h, &o);
    h->keepalive = 0;
    h->state = H1_ACTIVE;
    respond_local(h, status, NULL, 0);
}

/* ---- the request ---- */

static void finish_request(struct px_h1conn *h, int ok)
{
    struct px_conn *c = h->c;
    struct px_h1req *hr = h->hr;
    struct px_req *r = &hr->r;
    struct px_worker *w = c->w;
    px_req_finish(r);
    int body_unread = r->has_body && !r->body_sent;
    if (body_unread && ok && h->keepalive && body_discardable(hr)) {
        h->discard = (uint32_t)hr->body_left; /* read_head skips it */
        body_unread = 0;
    }
    h->hr = NULL;
    hr_release(w, hr); /* r is gone from here on */
    if (h->upgraded) {
        h1_release(h); /* the tunnel has the connection */
        return;
    }
    if (c->state == C_DEAD || c->closing)
        return;
    if (!ok) {
        /* the response was cut short: the client must see the break */
        px_conn_close(c);
        return;
    }
    if (body_unread)
        h->keepalive = 0;
    if (px_sock_flush(&c->s) < 0) {
        px_conn_close(c);
        return;
    }
    if (!h->keepalive || w->stopping) {
        /* Linger (half-close, drain) only when the client may still be
         * sending -- an unread body or pipelined bytes -- so that its data
         * does not turn our last response into a reset. Else just flush and
         * close, like nginx's lingering_close on. */
        h->keepalive = 0;
        if (body_unread || evbuffer_get_length(c->s.in) || c->s.readable)
            px_conn_linger(c);
        else
            px_conn_closing(c);
    } else {
        h->state = H1_IDLE;
        px_conn_idle(c, 1);
        px_conn_arm(c, w->tv_keepalive);
        c->again = 1;
    }
    if (!c->in_run)
        px_conn_run(c);
}

/* Move request body bytes from the client to the upstream. */
static void read_body(struct px_h1conn *h)
{
    struct px_conn *c = h->c;
    struct px_h1req *hr = h->hr;
    struct px_req *r = &hr->r;
    const struct px_config *cfg = c->w->cfg;
    while (h->hr == hr && !r->body_sent && !h->body_paused) {
        size_t avail = evbuffer_get_length(c->s.in);
        if (avail == 0) {
            if (c->s.eof || c->s.error) {
                /* the client went away mid-body */
                px_sock_mark_truncated(&c->s);
                px_conn_close(c);
                return;
            }
            if (!c->s.readable)
                return;
            if (px_sock_read(&c->s, PX_CLIENT_READ_MAX) == 0)
                continue;
            px_conn_arm(c, c->w->tv_body);
            continue;
        }
        if (hr->body_mode == PX_BODY_LENGTH) {
            size_t n = avail < hr->body_left ? avail : (size_t)hr->body_left;
            hr->body_left -= n;
            r->bytes_in += n;
            if (px_req_body(r, c->s.in, n, hr->body_left == 0))
                h->body_paused = 1;
            continue;
        }
        /* chunked: pass the framing through verbatim, validating it */
        uint64_t data;
        enum px_chunk_result end;
        size_t scanned = px_chunked_scan(&hr->body_chunked, c->s.in, &data, &end);
        if (end == PX_CHUNK_ERROR) {
            if (!r->resp_started) {
                px_upstream_abort(r);
                r->body_sent = 1; /* nothing more is read */
                h->keepalive = 0;
                respond_local(h, 400, NULL, 0);
            } else {
                px_conn_close(c);
            }
            return;
        }
        int done = end == PX_CHUNK_DONE;
        hr->body_total += data;
        if (cfg->max_body_size && hr->body_total > cfg->max_body_size) {
            if (!r->resp_started) {
                px_upstream_abort(r);
                r->body_sent = 1;
                h->keepalive = 0;
                respond_local(h, 413, NULL, 0);
            } else {
                px_conn_close(c);
            }
            return;
        }
        r->bytes_in += scanned;
        if (px_req_body(r, c->s.in, scanned, done))
            h->body_paused = 1;
    }
}

static void start_request(struct px_h1conn *h, size_t head_len)
{
    struct px_conn *c = h->c;
    struct px_worker *w = c->w;
    struct px_h1req *hr = h->hr;
    struct px_req *r = &hr->r;
    struct px_req_head *q = &hr->hreq;

    /* Keep our own copy of the head; rebase the slices onto it. */
    if (hr->head_cap < head_len) {
        char *nh = realloc(hr->head, head_len);
        if (nh == NULL) {
            px_conn_close(c);
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

    struct px_req_origin o = h1_origin(h, head_len);
    o.has_body = q->chunked || q->content_length > 0;
    int rc = px_req_begin(r, w, &h1_ops, h, &o);
    r->bytes_in = head_len;
    hr->body_total = 0;
    hr->expect_sent = 0;
    h->state = H1_ACTIVE;
    h->body_paused = 1; /* until the upstream request starts (h1_proceed) */
    h->out_full = 0;
    h->keepalive = q->minor_version == 1 ? !q->conn_close : q->conn_keep_alive;
    if (rc < 0) {
        respond_local(h, 500, NULL, 0);
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
    struct px_h1req *hr = (struct px_h1req *)r;
    struct px_h1conn *h = r->down;
    struct px_conn *c = h->c;
    const struct px_req_head *q = &hr->hreq;
    h->body_paused = 0;
    if (!r->has_body)
        return;
    if (q->expect_continue && q->minor_version == 1 && evbuffer_get_length(c->s.in) == 0) {
        evbuffer_add(c->s.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        r->bytes_out += 25;
        hr->expect_sent = 1;
        px_sock_flush(&c->s);
    }
    px_conn_arm(c, c->w->tv_body);
    if (c->in_run)
        c->again = 1; /* conn_run reads the body next */
    else
        read_body(h);
}

/* Parse heads from the input as long as there are complete requests and the
 * previous response is out of the way. */
static void read_head(struct px_h1conn *h)
{
    struct px_conn *c = h->c;
    struct px_worker *w = c->w;
    const struct px_config *cfg = w->cfg;
    size_t limit = (size_t)cfg->max_header_size;
    for (;;) {
        size_t len = evbuffer_get_length(c->s.in);
        if (h->discard) {
            /* the rest of the body of a request answered unread */
            if (len == 0 && c->s.readable && !c->s.eof && !c->s.error) {
                px_sock_read(&c->s, PX_CLIENT_READ_MAX);
                len = evbuffer_get_length(c->s.in);
            }
            if (len == 0) {
                if (c->s.eof || c->s.error)
                    px_conn_close(c);
                return;
            }
            size_t n = len < h->discard ? len : h->discard;
            evbuffer_drain(c->s.in, n);
            h->discard -= (uint32_t)n;
            continue;
        }
        if (len < limit && c->s.readable && !c->s.eof && !c->s.error) {
            px_sock_read(&c->s, limit - len + 1024);
            len = evbuffer_get_length(c->s.in);
        }
        if (len == 0) {
            if (c->s.eof || c->s.error)
                px_conn_close(c);
            return;
        }
        if (h->state == H1_IDLE) {
            h->state = H1_HEAD;
            px_conn_idle(c, 0);
            px_conn_arm(c, w->tv_header);
        }
        if (h->hr == NULL && (h->hr = hr_alloc(w)) == NULL) {
            px_conn_close(c);
            return;
        }
        size_t n = len < limit ? len : limit;
        const char *buf = (const char *)evbuffer_pullup(c->s.in, (ev_ssize_t)n);
        int rc = px_h1_parse_request(buf, n, &h->hr->hreq);
        if (rc == PX_H1_INCOMPLETE) {
            if (len >= limit) {
                respond_bad_head(h, 431, buf, n);
                return;
            }
            if (c->s.eof || c->s.error) {
                px_sock_mark_truncated(&c->s); /* EOF inside a head */
                px_conn_close(c);
                return;
            }
            if (c->s.readable)
                continue;
            return;
        }
        if (rc < 0) {
            respond_bad_head(h, -rc, buf, n);
            return;
        }
        start_request(h, (size_t)rc);
        return;
    }
}

static void h1_run_head(struct px_h1conn *h)
{
    struct px_conn *c = h->c;
    if (evbuffer_get_length(c->s.out) > PX_CLIENT_OUT_HIGH)
        return; /* let the previous response drain first */
    read_head(h);
}

static void h1_run_active(struct px_h1conn *h)
{
    struct px_conn *c = h->c;
    struct px_h1req *hr = h->hr;
    if (hr->r.parked && (c->s.rdhup || c->s.error)) {
        /* the client left while its request waited (nginx: 499) */
        hr->r.status = 499;
        finish_request(h, 0);
        return;
    }
    if (h->out_full && evbuffer_get_length(c->s.out) < PX_CLIENT_OUT_LOW) {
        h->out_full = 0;
        px_upstream_resume(&hr->r);
    }
    if (h->hr && !h->hr->r.body_sent && !h->body_paused)
        read_body(h);
    else if (c->s.error)
        px_conn_close(c);
}

static void h1_timeout(struct px_h1conn *h)
{
    struct px_conn *c = h->c;
    struct px_req *r = &h->hr->r;
    int waiting_body = !r->body_sent && !h->body_paused;
    int waiting_out = evbuffer_get_length(c->s.out) > 0 && !c->s.writable;
    if (!waiting_body && !waiting_out) {
        px_conn_arm(c, c->w->tv_body); /* the upstream's timers govern */
        return;
    }
    if (waiting_body && !r->resp_started) {
        px_upstream_abort(r);
        r->body_sent = 1;
        h->keepalive = 0;
        respond_local(h, 408, NULL, 0);
        return;
    }
    px_conn_close(c);
}

/* ---- px_down_ops for HTTP/1.x ---- */

static int h1_resp_head(struct px_req *r, const struct px_h1_response *resp, size_t head_len, int *passthrough)
{
    struct px_h1req *hr = (struct px_h1req *)r;
    struct px_h1conn *h = r->down;
    struct px_conn *c = h->c;
    struct px_resp_opts o;
    if (r->resp.mode == PX_BODY_CLOSE || (r->has_body && !r->body_sent))
        h->keepalive = 0;
    resp_opts(h, r, &o, hr->hreq.minor_version);
    if (r->resp.mode == PX_BODY_CHUNKED && hr->hreq.minor_version == 0) {
        o.strip_te = 1; /* HTTP/1.0 has no chunked: de-chunk and close */
        o.keep_alive = h->keepalive = 0;
        *passthrough = 0;
    } else {
        *passthrough = 1;
    }
    o.upgrade = resp->status == 101;
    hr->resp_mark = evbuffer_get_length(c->s.out);
    if (px_h1_write_response_head(c->s.out, resp, head_len, &o) < 0)
        return -1;
    hr->resp_end = evbuffer_get_length(c->s.out);
    r->bytes_out += hr->resp_end - hr->resp_mark;
    /* With body bytes right behind, head and body leave in one write; a
     * head alone (a streaming or slow response) must not wait for them. */
    if (!r->resp_more && px_sock_flush(&c->s) < 0)
        return -1;
    return 0;
}

static int h1_resp_retract(struct px_req *r)
{
    struct px_h1req *hr = (struct px_h1req *)r;
    struct px_h1conn *h = r->down;
    struct px_conn *c = h->c;
    struct evbuffer *out = c->s.out;
    /* Unchanged length after the head: no byte of it was written. */
    if (evbuffer_get_length(out) != hr->resp_end || c->s.error)
        return -1;
    r->bytes_out -= hr->resp_end - hr->resp_mark;
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
    struct px_h1conn *h = r->down;
    struct px_conn *c = h->c;
    px_buf_move(c->s.out, src, len);
    r->bytes_out += len;
    r->body_out += len;
    if (px_sock_flush(&c->s) < 0)
        return 1; /* the error surfaces in conn_run */
    if (evbuffer_get_length(c->s.out) > PX_CLIENT_OUT_HIGH) {
        h->out_full = 1;
        px_conn_arm(c, c->w->tv_body);
        return 1;
    }
    return 0;
}

static size_t h1_resp_room(struct px_req *r)
{
    struct px_h1conn *h = r->down;
    struct px_conn *c = h->c;
    size_t out = evbuffer_get_length(c->s.out);
    if (out == 0)
        return SIZE_MAX;
    if (out + 4096 <= PX_CLIENT_OUT_HIGH) /* not worth a read below a page */
        return PX_CLIENT_OUT_HIGH - out;
    h->out_full = 1; /* conn_run resumes the upstream below PX_CLIENT_OUT_LOW */
    px_conn_arm(c, c->w->tv_body);
    return 0;
}

static void h1_resp_end(struct px_req *r, int ok)
{
    struct px_h1conn *h = r->down;
    struct px_conn *c = h->c;
    if (c->s.error)
        ok = 0;
    finish_request(h, ok);
}

static void h1_resp_error(struct px_req *r, int status)
{
    struct px_h1conn *h = r->down;
    respond_local(h, status, NULL, 0);
}

static void h1_body_resume(struct px_req *r)
{
    struct px_h1conn *h = r->down;
    struct px_conn *c = h->c;
    h->body_paused = 0;
    if (c->in_run)
        c->again = 1;
    else
        event_active(&c->s.ev, EV_READ, 1);
}

static void h1_upgraded(struct px_req *r)
{
    struct px_h1conn *h = r->down;
    struct px_conn *c = h->c;
    struct px_uconn *u = px_upstream_detach(r);
    if (u == NULL || px_tunnel_start(c, u, r->target, r->routes) < 0) {
        finish_request(h, 0);
        return;
    }
    r->body_sent = 1;
    h->keepalive = 0;
    h->upgraded = 1; /* finish_request logs the 101 and lets go of the connection */
    finish_request(h, 1);
    px_conn_arm(c, c->w->tv_uread);
    px_conn_wake(c);
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

/* ---- the session ---- */

static void *h1_open(struct px_conn *c)
{
    struct px_worker *w = c->w;
    struct px_h1conn *h = w->h1.free_sess;
    if (h) {
        w->h1.free_sess = h->next_free;
        w->h1.nfree_sess--;
        memset(h, 0, sizeof(*h));
    } else if ((h = calloc(1, sizeof(*h))) == NULL) {
        return NULL;
    }
    h->c = c;
    h->state = H1_IDLE;
    px_conn_idle(c, 1);
    return h;
}

/* Freed at the worker's gc, never inside a callback that may still look at
 * it (a close from deep inside a request). */
static void h1_release(struct px_h1conn *h)
{
    struct px_worker *w = h->c->w;
    h->next_free = w->h1.dead;
    w->h1.dead = h;
    px_worker_schedule_gc(w);
}

static void h1_run(void *session)
{
    struct px_h1conn *h = session;
    if (h->state == H1_ACTIVE)
        h1_run_active(h);
    else
        h1_run_head(h);
}

static void h1_on_timeout(void *session)
{
    struct px_h1conn *h = session;
    if (h->state == H1_ACTIVE)
        h1_timeout(h);
    else
        px_conn_close(h->c);
}

/* Stop: an idle connection closes now, a busy one after its response. */
static int h1_goaway(void *session, int stop)
{
    struct px_h1conn *h = session;
    if (!stop)
        return 0;
    /* idle: closed, unless its next request has arrived (answered, then closed) */
    if (h->state == H1_IDLE && !px_conn_input_pending(h->c))
        return 1;
    h->keepalive = 0;
    return 0;
}

/* The connection closes under the session. */
static void h1_free(void *session)
{
    struct px_h1conn *h = session;
    if (h->hr)
        finish_request(h, 0);
    h1_release(h);
}

static const struct px_session_ops h1_session = {
    .name = "http/1.1",
    .open = h1_open,
    .run = h1_run,
    .timeout = h1_on_timeout,
    .goaway = h1_goaway,
    .free = h1_free,
};

/* ---- the module ---- */

#define SESS_CACHE_MAX 256

static void h1_gc(struct px_worker *w)
{
    while (w->h1.dead) {
        struct px_h1conn *h = w->h1.dead;
        w->h1.dead = h->next_free;
        if (w->h1.nfree_sess >= SESS_CACHE_MAX) {
            free(h);
            continue;
        }
        h->next_free = w->h1.free_sess;
        w->h1.free_sess = h;
        w->h1.nfree_sess++;
    }
}

static void h1_exit(struct px_worker *w)
{
    free_reqs(w);
    while (w->h1.dead) {
        struct px_h1conn *h = w->h1.dead;
        w->h1.dead = h->next_free;
        free(h);
    }
    while (w->h1.free_sess) {
        struct px_h1conn *h = w->h1.free_sess;
        w->h1.free_sess = h->next_free;
        free(h);
    }
    w->h1.nfree_sess = 0;
}

const struct px_worker_module px_h1_module = {
    .name = "h1",
    .gc = h1_gc,
    .exit = h1_exit,
    .alpn = "http/1.1",
    .session = &h1_session,
};
