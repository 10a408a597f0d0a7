/* h1.c -- the HTTP/1.x server session on a client connection: read a
 * request head, hand the request to the pipeline (request.c), move its body
 * up, write the response down, then keep-alive or close.
 *
 * One request at a time: pipelined requests wait in the input buffer (or the
 * kernel) until the response before them is done. The request head is
 * copied out of the read buffer into the request object (a few hundred
 * bytes, usually) so that its slices stay valid for a retry and the access
 * log while the read buffer moves on. Request objects are cached per worker:
 * no allocation per request in steady state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/common.h"
#include "px/config.h"
#include "px/conn.h"
#include "px/headers.h"
#include "px/log.h"
#include "px/request.h"
#include "px/sock.h"
#include "px/worker.h"

#define REQ_CACHE_MAX 64
#define HEAD_KEEP_MAX 4096

struct px_h1req {
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

static const struct px_down_ops h1_ops;
static void finish_request(struct px_conn *c, int ok);
static void read_body(struct px_conn *c);

/* ---- request objects ---- */

static struct px_h1req *hr_alloc(struct px_worker *w)
{
    struct px_h1req *hr = w->conn.free_reqs;
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

static void hr_release(struct px_worker *w, struct px_h1req *hr)
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

void px_h1_free_cache(struct px_worker *w)
{
    while (w->conn.free_reqs) {
        struct px_h1req *hr = w->conn.free_reqs;
        w->conn.free_reqs = hr->r.next_free;
        free(hr->head);
        px_req_release(&hr->r);
        free(hr);
    }
    w->conn.nfree_reqs = 0;
}

/* ---- responses proxyd makes itself ---- */

/* The response headers: the request's route's when it has sets, else the
 * worker's [headers]. */
static void resp_opts(struct px_conn *c, const struct px_req *r, struct px_resp_opts *o, int minor)
{
    o->client_minor = minor;
    o->keep_alive = c->keepalive;
    o->strip_te = 0;
    o->is_https = c->tls;
    o->upgrade = 0;
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
    struct px_conn *c = r->down;
    /* A body we did not read poisons the connection unless it can be
     * skipped: close after. */
    if (r->has_body && !r->body_sent && !body_discardable(hr))
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
    resp_opts(c, r, &o, hr->hreq.minor_version);
    int head = r->method == PX_METHOD_HEAD;
    int rc = px_h1_write_local_response(c->s.out, status, body, len, head, &o, xp, xlen);
    if (xp != xbuf)
        free(xp);
    if (rc < 0) {
        /* never a silent drop: say so, and close rather than leave the
         * client waiting on a keep-alive connection */
        px_log_error("out of memory writing a %d response: closing the connection", status);
        r->status = status;
        finish_request(c, 0);
        return;
    }
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
    struct px_h1req *hr = c->hr;
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
    struct px_h1req *hr = c->hr;
    struct px_req *r = &hr->r;
    struct px_worker *w = c->w;
    px_req_finish(r);
    int body_unread = r->has_body && !r->body_sent;
    if (body_unread && ok && c->keepalive && body_discardable(hr)) {
        c->discard = (uint32_t)hr->body_left; /* read_head skips it */
        body_unread = 0;
    }
    c->hr = NULL;
    hr_release(w, hr); /* r is gone from here on */
    if (c->state == C_DEAD || c->closing || c->state == C_TUNNEL)
        return;
    if (!ok) {
        /* the response was cut short: the client must see the break */
        px_conn_close(c);
        return;
    }
    if (body_unread)
        c->keepalive = 0;
    if (px_sock_flush(&c->s) < 0) {
        px_conn_close(c);
        return;
    }
    if (!c->keepalive || w->stopping) {
        /* Linger (half-close, drain) only when the client may still be
         * sending -- an unread body or pipelined bytes -- so that its data
         * does not turn our last response into a reset. Else just flush and
         * close, like nginx's lingering_close on. */
        if (body_unread || evbuffer_get_length(c->s.in) || c->s.readable)
            px_conn_linger(c);
        else {
            c->state = C_CLOSING;
            px_sock_set_eof_ok(&c->s, 1);
            event_add(&c->timer, w->tv_body); /* bounded: a client that never reads */
            c->again = 1;
        }
    } else {
        px_conn_enter_idle(c);
        event_add(&c->timer, w->tv_keepalive);
        c->again = 1;
    }
    if (!c->in_run)
        px_conn_run(c);
}

/* Move request body bytes from the client to the upstream. */
static void read_body(struct px_conn *c)
{
    struct px_h1req *hr = c->hr;
    struct px_req *r = &hr->r;
    const struct px_config *cfg = c->w->cfg;
    while (c->hr == hr && !r->body_sent && !c->body_paused) {
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
        uint64_t data;
        enum px_chunk_result end;
        size_t scanned = px_chunked_scan(&hr->body_chunked, c->s.in, &data, &end);
        if (end == PX_CHUNK_ERROR) {
            if (!r->resp_started) {
                px_upstream_abort(r);
                r->body_sent = 1; /* nothing more is read */
                c->keepalive = 0;
                respond_local(c, 400, NULL, 0);
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
                c->keepalive = 0;
                respond_local(c, 413, NULL, 0);
            } else {
                px_conn_close(c);
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
    struct px_h1req *hr = c->hr;
    struct px_req *r = &hr->r;
    struct px_h1_request *q = &hr->hreq;

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
    struct px_h1req *hr = (struct px_h1req *)r;
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
        if (c->discard) {
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
            size_t n = len < c->discard ? len : c->discard;
            evbuffer_drain(c->s.in, n);
            c->discard -= (uint32_t)n;
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
        if (c->state == C_IDLE) {
            c->state = C_HEAD;
            px_conn_set_reusable(c, 0);
            px_sock_set_eof_ok(&c->s, 0);
            event_add(&c->timer, w->tv_header);
        }
        if (c->hr == NULL && (c->hr = hr_alloc(w)) == NULL) {
            px_conn_close(c);
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
                px_conn_close(c);
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

void px_h1_run_head(struct px_conn *c)
{
    if (evbuffer_get_length(c->s.out) > PX_CLIENT_OUT_HIGH)
        return; /* let the previous response drain first */
    read_head(c);
}

void px_h1_run_active(struct px_conn *c)
{
    struct px_h1req *hr = c->hr;
    if (hr->r.parked && (c->s.rdhup || c->s.error)) {
        /* the client left while its request waited (nginx: 499) */
        hr->r.status = 499;
        finish_request(c, 0);
        return;
    }
    if (c->out_full && evbuffer_get_length(c->s.out) < PX_CLIENT_OUT_LOW) {
        c->out_full = 0;
        px_upstream_resume(&hr->r);
    }
    if (c->hr && !c->hr->r.body_sent && !c->body_paused)
        read_body(c);
    else if (c->s.error)
        px_conn_close(c);
}

void px_h1_timeout(struct px_conn *c)
{
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
    px_conn_close(c);
}

void px_h1_abort(struct px_conn *c)
{
    finish_request(c, 0);
}

/* ---- px_down_ops for HTTP/1.x ---- */

/* ---- px_down_ops for HTTP/1.x ---- */

static int h1_resp_head(struct px_req *r, const struct px_h1_response *resp, size_t head_len, int *passthrough)
{
    struct px_h1req *hr = (struct px_h1req *)r;
    struct px_conn *c = r->down;
    struct px_resp_opts o;
    if (r->resp.mode == PX_BODY_CLOSE || (r->has_body && !r->body_sent))
        c->keepalive = 0;
    resp_opts(c, r, &o, hr->hreq.minor_version);
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
    struct px_h1req *hr = (struct px_h1req *)r;
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
    if (evbuffer_get_length(c->s.out) > PX_CLIENT_OUT_HIGH) {
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
    if (out + 4096 <= PX_CLIENT_OUT_HIGH) /* not worth a read below a page */
        return PX_CLIENT_OUT_HIGH - out;
    c->out_full = 1; /* conn_run resumes the upstream below PX_CLIENT_OUT_LOW */
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

static void h1_upgraded(struct px_req *r)
{
    struct px_conn *c = r->down;
    struct px_uconn *u = px_upstream_detach(r);
    if (u == NULL) {
        finish_request(c, 0);
        return;
    }
    px_tunnel_start(c, u, r->target, r->routes);
    r->body_sent = 1;
    c->keepalive = 0;
    c->state = C_TUNNEL; /* finish_request logs the 101 and leaves the state alone */
    finish_request(c, 1);
    event_add(&c->timer, c->w->tv_uread);
    if (c->in_run)
        c->again = 1;
    else
        px_conn_run(c);
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
