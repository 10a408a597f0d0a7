/* h2.c -- HTTP/2 streams <-> px_req (nghttp2).
 *
 * A request's header fields are collected into the stream's own buffer and
 * turned into a px_req_head, so the HTTP/1.1 serializer writes the
 * upstream head (":authority" becomes Host; a body without content-length
 * goes upstream chunked). Stream objects are cached per worker. A stream
 * that nghttp2 closed is freed at the start of the next px_h2_run, never
 * inside a callback, since an upstream callback may be on the stack. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "px/common.h"
#include "px/config.h"
#include "px/conn.h"
#include "px/h2.h"
#include "px/headers.h"
#include "px/list.h"
#include "px/log.h"
#include "px/mem.h"
#include "px/request.h"
#include "px/sock.h"
#include "px/worker.h"

#define H2_MAX_STREAMS 128
#define H2_STREAM_WINDOW (256 * 1024)
#define H2_CONN_WINDOW (4 * 1024 * 1024)
#define H2_STREAM_HIGH (256 * 1024)
#define H2_STREAM_LOW (64 * 1024)
/* Response bytes held per connection, all streams together: without it 128
 * streams of a client that never opens its windows pin 128 x H2_STREAM_HIGH. */
#define H2_CONN_HIGH (1024 * 1024)
#define H2_CONN_LOW (512 * 1024)
#define H2_OUT_HIGH (256 * 1024)
#define H2_READ_MAX (64 * 1024)
#define H2_CACHE_MAX 64
/* A response head's fields up to this size are kept in the stream for
 * nghttp2 to send uncopied; a larger one is copied by nghttp2. */
#define H2_RBUF_MAX 8192
/* CVE-2023-44487 (rapid reset): a burst of RST_STREAMs from the client, then
 * so many per second, else GOAWAY(ENHANCE_YOUR_CALM). */
#define H2_RST_BURST 1000
#define H2_RST_RATE 33
/* Graceful GOAWAY: how long the final one waits for our PING's ACK. */
#define H2_GOAWAY_DELAY_MS 1000
static const uint8_t goaway_ping[8] = {'p', 'x', 'g', 'o', 'a', 'w', 'a', 'y'};

struct h2hdr {
    uint32_t no, nl, vo, vl;
};

struct h2s {
    struct px_req r;                  /* first: px_req* <-> h2s* */
    struct px_h2 *h;
    int32_t id;
    struct px_list_node link;         /* the session's streams, then its dead list */
    struct px_req_head q;           /* synthesized for the serializer and the log */
    struct h2hdr hdr[PX_H1_MAX_HEADERS];
    uint32_t nhdr;
    uint32_t hdr_size;                /* decoded header list size, RFC 7541 4.1 (stored or not) */
    uint32_t head_in;                 /* decoded field bytes, name + value (the access log's bytes_in) */
    char *buf;                        /* header bytes; q's slices point here */
    uint32_t buflen, bufcap;
    char *rbuf;                       /* response field bytes nghttp2 sends uncopied (h2_resp_head) */
    uint32_t rlen, rcap;
    int32_t method_o, path_o, auth_o; /* offsets of pseudo-header values (-1: absent) */
    uint32_t method_l, path_l, auth_l;
    struct evbuffer *resp;            /* response body waiting for DATA frames */
    uint64_t wait_ms;                 /* px_now_ms() since the client last took bytes (0: not waiting) */
    uint64_t body_in;
    size_t unconsumed;                /* DATA bytes held back from the window (upstream full) */
    struct evbuffer *hold;            /* request body that came before the upstream request started */
    unsigned too_large : 1, dispatched : 1, chunked_up : 1, resp_eof : 1, deferred : 1;
    unsigned up_paused : 1, logged : 1, body_done : 1, proceeding : 1;
};
#define STREAM(node) px_list_entry(node, struct h2s, link)

struct px_h2 {
    struct px_worker *w;
    struct px_sock *s;
    nghttp2_session *ng;
    struct px_h2_peer peer;
    char peer_ip[48];
    void (*kick)(void *);
    void *kick_arg;
    struct px_list streams, dead;     /* struct h2s.link; streams: newest first */
    struct h2s *hdr_s;                /* the stream whose header block is coming in (NULL: none) */
    uint32_t nstreams;
    struct evbuffer *tmp;             /* request body staging (chunk framing) */
    struct event timer;               /* client_body_timeout: streams and output the client does not take */
    size_t buffered;                  /* sum of the streams' resp lengths */
    size_t out_left;                  /* s->out's length after the last produce() */
    uint64_t out_wait_ms;             /* since when s->out has not shrunk (0: empty) */
    uint64_t now_ms;                  /* produce()'s clock: read at most once per call (0: not yet) */
    struct event goaway_timer;        /* the final GOAWAY, should the PING's ACK not come */
    int32_t goaway_last;              /* last stream id of the final GOAWAY */
    uint32_t rst_tokens;              /* rapid reset bucket (H2_RST_BURST, H2_RST_RATE) */
    uint64_t rst_ms;                  /* when rst_tokens was last refilled */
    unsigned goaway : 1;              /* shutting down: the notice went out */
    unsigned goaway_final : 1;        /* the GOAWAY with goaway_last was submitted */
    unsigned conn_paused : 1;         /* buffered went over H2_CONN_HIGH: upstreams wait for H2_CONN_LOW */
    unsigned stalled : 1;             /* the client took no output for client_body_timeout: close */
    unsigned idle_armed : 1;          /* as a session: on the keep-alive timer, the connection reusable */
    struct px_conn *c;                /* as a session: its connection (NULL: px_h2_new's caller owns) */
};

static const struct px_down_ops h2_ops;

/* ---- stream objects ---- */

static struct h2s *stream_new(struct px_h2 *h, int32_t id)
{
    struct px_worker *w = h->w;
    struct h2s *s = w->h2.free;
    if (s) {
        w->h2.free = s->r.next_free;
        w->h2.nfree--;
    } else {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return NULL;
        s->resp = evbuffer_new();
        if (s->resp == NULL) {
            free(s);
            return NULL;
        }
    }
    char *buf = s->buf;
    uint32_t cap = s->bufcap;
    struct evbuffer *resp = s->resp;
    /* px_req_begin clears the rest at dispatch; a stream reset before
     * that only needs these */
    s->r.up = NULL;
    s->r.routes = NULL;
    s->r.status = 0;
    s->r.parked = 0;
    s->r.done = 0;
    /* headers[] (3 KiB) is filled up to nheaders at dispatch: clearing it
     * per stream cost more than the rest of stream setup */
    memset(&s->q, 0, offsetof(struct px_req_head, headers));
    s->h = h;
    s->id = id;
    s->nhdr = 0;
    s->hdr_size = 0;
    s->head_in = 0;
    s->buf = buf;
    s->bufcap = cap;
    s->buflen = 0;
    s->rlen = 0; /* rbuf and rcap are kept, as buf */
    s->resp = resp;
    s->method_o = s->path_o = s->auth_o = -1;
    s->method_l = s->path_l = s->auth_l = 0;
    s->body_in = 0;
    s->wait_ms = 0;
    s->unconsumed = 0;
    s->too_large = s->dispatched = s->chunked_up = s->resp_eof = s->deferred = 0;
    s->up_paused = s->logged = s->body_done = s->proceeding = 0;
    px_list_insert_head(&h->streams, &s->link);
    h->nstreams++;
    return s;
}

static void stream_free(struct h2s *s)
{
    evbuffer_free(s->resp);
    if (s->hold)
        evbuffer_free(s->hold);
    px_req_release(&s->r);
    free(s->buf);
    free(s->rbuf);
    free(s);
}

static void stream_cache(struct px_worker *w, struct h2s *s)
{
    evbuffer_drain(s->resp, evbuffer_get_length(s->resp));
    if (s->hold)
        evbuffer_drain(s->hold, evbuffer_get_length(s->hold));
    if (w->h2.nfree >= H2_CACHE_MAX || s->bufcap > 8192 || s->rcap > H2_RBUF_MAX) {
        stream_free(s);
        return;
    }
    s->r.next_free = w->h2.free;
    w->h2.free = s;
    w->h2.nfree++;
}

/* ---- nghttp2's memory ----
 *
 * nghttp2 allocates per stream (the stream, its HEADERS and DATA items,
 * the field array) and frees it all when the stream ends: with ten and more
 * streams in flight the same sizes overflow glibc's thread cache. They come
 * from the worker's size-class cache (px/mem.h) instead. */
static void *mem_malloc(size_t size, void *ud)
{
    (void)ud;
    return px_mem_alloc(size);
}

static void mem_free(void *ptr, void *ud)
{
    (void)ud;
    px_mem_free(ptr);
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    (void)ud;
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = px_mem_alloc(n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

static void *mem_realloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    return px_mem_realloc(ptr, size);
}

static void h2_exit(struct px_worker *w)
{
    while (w->h2.free) {
        struct h2s *s = w->h2.free;
        w->h2.free = s->r.next_free;
        stream_free(s);
    }
    w->h2.nfree = 0;
}

static void stream_unlink(struct px_h2 *h, struct h2s *s)
{
    if (h->hdr_s == s)
        h->hdr_s = NULL;
    px_list_remove(&h->streams, &s->link);
    h->nstreams--;
}

static void resp_clear(struct h2s *s)
{
    size_t n = evbuffer_get_length(s->resp);
    evbuffer_drain(s->resp, n);
    s->h->buffered -= n;
}

static void free_dead(struct px_h2 *h)
{
    struct px_list_node *n;
    while ((n = px_list_first(&h->dead)) != NULL) {
        px_list_remove(&h->dead, n);
        stream_cache(h->w, STREAM(n));
    }
}

/* ---- the end of a request: log once, unpin ---- */

static void stream_log(struct h2s *s)
{
    if (s->logged || !s->dispatched)
        return;
    s->logged = 1;
    if (s->r.status == 0)
        s->r.status = 499; /* the client reset the stream first (nginx's code) */
    px_req_finish(&s->r);
}

/* ---- responses ---- */

/* The send-timeout stamps taken while produce() runs: one clock read for
 * all the frames of the call (data_read runs once per DATA frame), and none
 * when no stamp is needed. */
static uint64_t produce_now(struct px_h2 *h)
{
    if (h->now_ms == 0)
        h->now_ms = px_now_ms();
    return h->now_ms;
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    struct h2s *s = src->ptr;
    struct px_h2 *h = s->h;
    size_t n = (size_t)evbuffer_remove(s->resp, buf, length);
    size_t left = evbuffer_get_length(s->resp);
    h->buffered -= n;
    s->wait_ms = left ? produce_now(h) : 0; /* only nghttp2_session_mem_send in produce() calls us */
    if (s->up_paused && left < H2_STREAM_LOW && !h->conn_paused && (s->r.up || s->r.resp_buffered)) {
        s->up_paused = 0;
        /* a buffered response refills s->resp (and may end) right here */
        px_upstream_resume(&s->r);
        int more = n == 0 ? evbuffer_remove(s->resp, buf, length) : 0;
        if (more > 0) {
            n = (size_t)more;
            h->buffered -= n;
        }
        left = evbuffer_get_length(s->resp);
    }
    if (left == 0) {
        if (s->resp_eof)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        else if (n == 0) {
            s->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

static void kick(struct px_h2 *h)
{
    h->kick(h->kick_arg);
}

#define NV(n, nl, v, vl) \
    ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE})

/* nv room: :status, our own few fields, the upstream's, the add-headers */
#define H2_NV_MAX (4 + PX_H1_MAX_HEADERS + PX_MAX_ADD_HEADERS)

/* The response headers of a request: its route's when it has sets, else
 * the worker's [headers]. */
struct adds {
    const struct px_hdr_add *a;
    size_t n;
};

static struct adds req_adds(const struct px_worker *w, const struct px_req *r)
{
    return r->adds ? (struct adds){r->adds, r->nadds} : (struct adds){w->adds, w->nadds};
}

/* Append the headers the response does not have yet (HSTS too: HTTP/2 is
 * always TLS here). Their lowercase names are made once per configuration (set_adds,
 * the route table); lowercased into lower at *used only for an add
 * without one. own: name and value are both copied into lower (the
 * stream's rbuf, which nghttp2 does not copy). */
static size_t put_adds(struct adds ad, nghttp2_nv *nv, size_t n, char *lower, size_t *used, uint64_t present,
                       int own)
{
    for (size_t j = 0; j < ad.n; j++) {
        const struct px_hdr_add *a = &ad.a[j];
        if ((present >> j & 1) || a->remove)
            continue;
        const char *ln = a->lname, *v = a->value;
        if (ln == NULL || own) {
            char *d = lower + *used;
            if (ln)
                memcpy(d, ln, a->name_len);
            else
                px_lower_copy(d, a->name, a->name_len);
            ln = d;
            *used += a->name_len;
        }
        if (own) {
            memcpy(lower + *used, v, a->value_len);
            v = lower + *used;
            *used += a->value_len;
        }
        nv[n++] = NV(ln, a->name_len, v, a->value_len);
    }
    return n;
}

/* ":status" value: three digits (100..999, as the parser and our own
 * responses guarantee), without snprintf's cost on every response. */
static void status_digits(char st[4], int status)
{
    if (status < 100 || status > 999)
        status = 502;
    st[0] = (char)('0' + status / 100);
    st[1] = (char)('0' + status / 10 % 10);
    st[2] = (char)('0' + status % 10);
    st[3] = '\0';
}

/* A response head's size as bytes_out counts it: each field's name + value. */
static uint64_t nv_bytes(const nghttp2_nv *nv, size_t n)
{
    uint64_t b = 0;
    for (size_t i = 0; i < n; i++)
        b += nv[i].namelen + nv[i].valuelen;
    return b;
}

static size_t adds_len(struct adds ad)
{
    size_t n = 0;
    for (size_t i = 0; i < ad.n; i++)
        n += ad.a[i].name_len;
    return n;
}

/* Room for n bytes of response fields that stay put until nghttp2 has sent
 * the HEADERS frame (or dropped it with its closed stream), so that it
 * takes them uncopied: the rest of the stream's rbuf, which grows only
 * while no earlier head of the stream points into it. The stream cache
 * keeps it. NULL: no room, nghttp2 copies the fields. */
static char *resp_store(struct h2s *s, size_t n)
{
    if (s->rcap - s->rlen >= n)
        return s->rbuf + s->rlen;
    if (s->rlen || n > H2_RBUF_MAX)
        return NULL;
    uint32_t nc = 1024;
    while (nc < n)
        nc *= 2;
    char *nb = malloc(nc);
    if (nb == NULL)
        return NULL;
    free(s->rbuf);
    s->rbuf = nb;
    s->rcap = nc;
    return nb;
}

/* Submit a response proxyd makes itself. */
static void h2_respond(struct px_req *r, int status, const char *body, size_t len,
                       const struct px_h1_header *extra, size_t nextra)
{
    struct h2s *s = (struct h2s *)r;
    struct px_h2 *h = s->h;
    struct px_worker *w = h->w;
    char tmp[64], st[4], cl[24];
    if (body == NULL) {
        len = (size_t)snprintf(tmp, sizeof(tmp), "%d %s\n", status, px_status_reason(status));
        body = tmp;
    }
    status_digits(st, status);
    int cln = snprintf(cl, sizeof(cl), "%zu", len);
    nghttp2_nv nv[5 + 4 + PX_MAX_ADD_HEADERS];
    size_t n = 0, used = 0;
    nv[n++] = NV(":status", 7, st, 3);
    nv[n++] = NV("date", 4, px_req_date(w), PX_HTTP_DATE_LEN);
    nv[n++] = NV("server", 6, "proxyd", 6);
    nv[n++] = r->html ? NV("content-type", 12, "text/html; charset=utf-8", 24)
                      : NV("content-type", 12, "text/plain; charset=utf-8", 25);
    nv[n++] = NV("content-length", 14, cl, (size_t)cln);
    char stackbuf[2048];
    struct adds ad = req_adds(w, r);
    size_t need = adds_len(ad);
    if (nextra > 4)
        nextra = 4;
    for (size_t i = 0; i < nextra; i++)
        need += extra[i].name_len;
    char *lower = need <= sizeof(stackbuf) ? stackbuf : malloc(need);
    if (lower == NULL) {
        nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        kick(h);
        return;
    }
    for (size_t i = 0; i < nextra; i++) {
        char *ln = lower + used;
        px_lower_copy(ln, extra[i].name, extra[i].name_len);
        used += extra[i].name_len;
        nv[n++] = NV(ln, extra[i].name_len, extra[i].value, extra[i].value_len);
    }
    n = put_adds(ad, nv, n, lower, &used, 0, 0);
    int head = s->r.method == PX_METHOD_HEAD;
    resp_clear(s);
    if (s->unconsumed) {
        /* body held back while the request waited: nobody reads it now */
        nghttp2_session_consume(h->ng, s->id, s->unconsumed);
        s->unconsumed = 0;
    }
    if (!head && evbuffer_add(s->resp, body, len) == 0)
        h->buffered += len;
    s->resp_eof = 1;
    s->wait_ms = px_now_ms();
    s->r.status = status;
    s->r.body_out = head ? 0 : len;
    s->r.bytes_out += nv_bytes(nv, n) + s->r.body_out;
    s->r.resp_started = 1;
    s->r.done = 1;
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
    if (nghttp2_submit_response(h->ng, s->id, nv, n, head ? NULL : &prd) != 0) { /* nghttp2 copies nv */
        px_log_error("h2: cannot submit a %d response: resetting the stream", status);
        nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    }
    if (lower != stackbuf)
        free(lower);
    kick(h);
}

/* Connection-specific fields have no place in HTTP/2 (RFC 9113 8.2.2). */
static int is_hop(const char *name, size_t len)
{
    enum px_hdr_id id = px_hdr_lookup(name, len);
    return id == PX_HDR_TRANSFER_ENCODING || (px_hdr_flags(id) & PX_HF_HOP);
}

static int h2_resp_head(struct px_req *r, const struct px_h1_response *resp, size_t head_len, int *passthrough)
{
    struct h2s *s = (struct h2s *)r;
    struct px_h2 *h = s->h;
    struct px_worker *w = h->w;
    *passthrough = 0; /* HTTP/2 has its own framing: de-chunk */
    struct adds ad = req_adds(w, r);
    PX_UNUSED(head_len);
    size_t need = 3 + PX_HTTP_DATE_LEN;
    for (size_t i = 0; i < resp->nheaders; i++)
        need += resp->headers[i].name_len + resp->headers[i].value_len;
    for (size_t i = 0; i < ad.n; i++)
        need += ad.a[i].name_len + ad.a[i].value_len;
    /* own: every name and value goes into the stream's rbuf, and nghttp2
     * sends them from there (no copy, no second lowercasing) */
    char *own = resp_store(s, need);
    char stackbuf[8192];
    char *lower = own ? own : need <= sizeof(stackbuf) ? stackbuf : malloc(need); /* heads over 8 KiB only */
    if (lower == NULL)
        return -1;
    nghttp2_nv nv[H2_NV_MAX];
    char st[4];
    status_digits(st, resp->status);
    size_t n = 0, used = 0;
    uint64_t present = 0;
    int has_date = 0;
    const char *stv = st;
    if (own) {
        memcpy(lower, st, 3);
        stv = lower;
        used = 3;
    }
    nv[n++] = NV(":status", 7, stv, 3);
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct px_h1_header *hd = &resp->headers[i];
        if (is_hop(hd->name, hd->name_len))
            continue;
        if (hd->name_len == 4 && PX_IEQ_LIT(hd->name, 4, "date"))
            has_date = 1;
        int j = px_hdr_add_find(ad.a, ad.n, hd->name, hd->name_len);
        if (j >= 0) {
            if (ad.a[j].remove)
                continue; /* "-X-Powered-By =" */
            present |= (uint64_t)1 << j;
        }
        char *ln = lower + used;
        px_lower_copy(ln, hd->name, hd->name_len);
        used += hd->name_len;
        const char *v = hd->value;
        if (own) {
            memcpy(lower + used, v, hd->value_len);
            v = lower + used;
            used += hd->value_len;
        }
        nv[n++] = NV(ln, hd->name_len, v, hd->value_len);
    }
    if (!has_date) { /* RFC 9110 6.6.1: the upstream's Date is kept, a missing one added */
        const char *dv = px_req_date(w);
        if (own) {
            memcpy(lower + used, dv, PX_HTTP_DATE_LEN);
            dv = lower + used;
            used += PX_HTTP_DATE_LEN;
        }
        nv[n++] = NV("date", 4, dv, PX_HTTP_DATE_LEN);
    }
    n = put_adds(ad, nv, n, lower, &used, present, own != NULL);
    if (own)
        for (size_t i = 0; i < n; i++)
            nv[i].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    int body = r->resp.mode != PX_BODY_NONE;
    r->bytes_out += nv_bytes(nv, n);
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
    int rv = nghttp2_submit_response(h->ng, s->id, nv, n, body ? &prd : NULL); /* copies nv (only its array when own) */
    if (own && rv == 0)
        s->rlen += (uint32_t)used;
    else if (!own && lower != stackbuf)
        free(lower);
    if (!body) {
        s->resp_eof = 1;
        s->wait_ms = px_now_ms(); /* the END_STREAM waits from now (stream_waits) */
    }
    /* with a body, nothing counts before its bytes or its end wait:
     * h2_resp_body and h2_resp_end stamp then, so no clock read here */
    kick(h);
    return rv == 0 ? 0 : -1;
}

static int h2_resp_body(struct px_req *r, struct evbuffer *src, size_t len)
{
    struct h2s *s = (struct h2s *)r;
    struct px_h2 *h = s->h;
    if (len && evbuffer_get_length(s->resp) == 0)
        s->wait_ms = px_now_ms(); /* time spent waiting for the upstream is not the client's */
    px_buf_move(s->resp, src, len);
    h->buffered += len;
    r->bytes_out += len;
    r->body_out += len;
    if (s->deferred) {
        s->deferred = 0;
        nghttp2_session_resume_data(h->ng, s->id);
    }
    kick(h);
    if (h->buffered >= H2_CONN_HIGH)
        h->conn_paused = 1;
    if (evbuffer_get_length(s->resp) >= H2_STREAM_HIGH || h->conn_paused) {
        s->up_paused = 1;
        return 1;
    }
    return 0;
}

/* The most response bytes this stream may take now: its own watermark and
 * the connection's cap. 0 (paused) when under a page is left; data_read or
 * resume_paused resumes the upstream as for a resp_body pause. */
static size_t h2_resp_room(struct px_req *r)
{
    struct h2s *s = (struct h2s *)r;
    struct px_h2 *h = s->h;
    size_t held = evbuffer_get_length(s->resp);
    size_t room = held < H2_STREAM_HIGH ? H2_STREAM_HIGH - held : 0;
    size_t conn_room = h->buffered < H2_CONN_HIGH ? H2_CONN_HIGH - h->buffered : 0;
    if (conn_room < 4096 || h->conn_paused) {
        h->conn_paused = 1;
        room = 0;
    } else if (conn_room < room) {
        room = conn_room;
    }
    if (room < 4096) {
        s->up_paused = 1;
        return 0;
    }
    return room;
}

static void h2_resp_end(struct px_req *r, int ok)
{
    struct h2s *s = (struct h2s *)r;
    r->done = 1;
    if (ok) {
        s->resp_eof = 1;
        if (s->wait_ms == 0)
            s->wait_ms = px_now_ms(); /* END_STREAM needs the window too */
        if (s->deferred) {
            s->deferred = 0;
            nghttp2_session_resume_data(s->h->ng, s->id);
        }
    } else {
        nghttp2_submit_rst_stream(s->h->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    }
    kick(s->h);
}

static void h2_resp_error(struct px_req *r, int status)
{
    px_req_respond(r, status, NULL, 0);
}

static void h2_body_resume(struct px_req *r)
{
    struct h2s *s = (struct h2s *)r;
    if (s->unconsumed) {
        nghttp2_session_consume(s->h->ng, s->id, s->unconsumed);
        s->unconsumed = 0;
        kick(s->h);
    }
}

/* px_down_ops.proceed: the upstream request started; the body that came
 * while the request waited (parked) goes first. */
static void h2_proceed(struct px_req *r)
{
    struct h2s *s = (struct h2s *)r;
    struct px_h2 *h = s->h;
    s->proceeding = 1;
    if (!r->has_body || s->hold == NULL)
        return;
    size_t n = evbuffer_get_length(s->hold);
    if (n == 0 && !s->body_done)
        return;
    int paused = px_req_body(r, s->hold, n, s->body_done);
    if (!paused && s->unconsumed) {
        nghttp2_session_consume(h->ng, s->id, s->unconsumed);
        s->unconsumed = 0;
        kick(h);
    }
}

static void h2_upgraded(struct px_req *r)
{
    /* never: WebSocket upgrades are refused on HTTP/2 before dispatch */
    h2_resp_end(r, 0);
}

static const struct px_down_ops h2_ops = {
    .respond = h2_respond,
    .proceed = h2_proceed,
    .resp_head = h2_resp_head,
    .resp_body = h2_resp_body,
    .resp_end = h2_resp_end,
    .resp_error = h2_resp_error,
    .body_resume = h2_body_resume,
    .upgraded = h2_upgraded,
    .resp_room = h2_resp_room,
};

/* ---- requests ---- */

static int buf_add(struct h2s *s, const void *p, size_t n, uint32_t *off)
{
    if (s->buflen + n > s->bufcap) {
        uint32_t nc = s->bufcap ? s->bufcap : 1024;
        while (nc < s->buflen + n)
            nc *= 2;
        char *nb = realloc(s->buf, nc);
        if (nb == NULL)
            return -1;
        s->buf = nb;
        s->bufcap = nc;
    }
    memcpy(s->buf + s->buflen, p, n);
    *off = s->buflen;
    s->buflen += (uint32_t)n;
    return 0;
}

static void add_field(struct h2s *s, const char *name, size_t nl, const char *value, size_t vl)
{
    uint32_t no, vo;
    if (s->nhdr >= PX_H1_MAX_HEADERS - 2 || buf_add(s, name, nl, &no) < 0 || buf_add(s, value, vl, &vo) < 0) {
        s->too_large = 1;
        return;
    }
    s->hdr[s->nhdr++] = (struct h2hdr){no, (uint32_t)nl, vo, (uint32_t)vl};
}

/* A stream past the final GOAWAY's last id: the client takes it as not
 * processed and may retry it elsewhere, so it must never reach an upstream. */
static int refused(struct px_h2 *h, int32_t id)
{
    if (!h->goaway_final || id <= h->goaway_last)
        return 0;
    nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
    return 1;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct px_h2 *h = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (refused(h, frame->hd.stream_id))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    struct h2s *s = stream_new(h, frame->hd.stream_id);
    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, s);
    h->hdr_s = s;
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    struct px_h2 *h = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers are not forwarded */
    /* A header block is never interleaved with another (RFC 9113 6.10):
     * the stream on_begin_headers made is the one, without a lookup in
     * nghttp2's stream map per field. It is linked, so its user data is s. */
    struct h2s *s = h->hdr_s;
    if (s == NULL || s->id != frame->hd.stream_id)
        s = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    size_t max = h->w->cfg->max_header_size;
    s->head_in += (uint32_t)(nl + vl);
    s->hdr_size += (uint32_t)(nl + vl + 32 < 2 * max ? nl + vl + 32 : 2 * max);
    if (s->hdr_size > 2 * max) {
        /* Twice the limit is no client with big cookies but a header block
         * that expands (HPACK references to one large entry): nghttp2 skips
         * the rest of a reset stream's block without checking every field,
         * where answering 431 would pay for each of them first. */
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_ENHANCE_YOUR_CALM);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (s->too_large)
        return 0;
    if (s->buflen + nl + vl + 32 > max) {
        s->too_large = 1;
        return 0;
    }
    if (nl > 0 && name[0] == ':') {
        uint32_t off;
        if (buf_add(s, value, vl, &off) < 0) {
            s->too_large = 1;
            return 0;
        }
        if (nl == 7 && memcmp(name, ":method", 7) == 0) {
            s->method_o = (int32_t)off;
            s->method_l = (uint32_t)vl;
        } else if (nl == 5 && memcmp(name, ":path", 5) == 0) {
            s->path_o = (int32_t)off;
            s->path_l = (uint32_t)vl;
        } else if (nl == 10 && memcmp(name, ":authority", 10) == 0) {
            s->auth_o = (int32_t)off;
            s->auth_l = (uint32_t)vl;
        }
        return 0;
    }
    add_field(s, (const char *)name, nl, (const char *)value, vl);
    return 0;
}

/* Cookie fields may arrive split; an HTTP/1.1 upstream wants one line
 * joined with "; " (RFC 9113 8.2.3). */
static void join_cookies(struct h2s *s)
{
    int first = -1, count = 0;
    for (uint32_t i = 0; i < s->nhdr; i++)
        if (s->hdr[i].nl == 6 && memcmp(s->buf + s->hdr[i].no, "cookie", 6) == 0) {
            if (first < 0)
                first = (int)i;
            count++;
        }
    if (count < 2)
        return;
    uint32_t start = s->buflen, off;
    for (uint32_t i = (uint32_t)first, k = 0; i < s->nhdr; i++) {
        if (!(s->hdr[i].nl == 6 && memcmp(s->buf + s->hdr[i].no, "cookie", 6) == 0))
            continue;
        if (k++ && buf_add(s, "; ", 2, &off) < 0)
            return;
        /* copy through a bounded temporary: buf may move */
        char tmp[512];
        uint32_t left = s->hdr[i].vl, pos = s->hdr[i].vo;
        while (left) {
            uint32_t c = left < sizeof(tmp) ? left : (uint32_t)sizeof(tmp);
            memcpy(tmp, s->buf + pos, c);
            if (buf_add(s, tmp, c, &off) < 0)
                return;
            pos += c;
            left -= c;
        }
    }
    s->hdr[first].vo = start;
    s->hdr[first].vl = s->buflen - start;
    uint32_t j = 0;
    for (uint32_t i = 0; i < s->nhdr; i++) {
        if ((int)i != first && s->hdr[i].nl == 6 && memcmp(s->buf + s->hdr[i].no, "cookie", 6) == 0)
            continue;
        s->hdr[j++] = s->hdr[i];
    }
    s->nhdr = j;
}

static int64_t parse_cl(const char *p, size_t n)
{
    if (n == 0 || n > 18)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

static void dispatch(struct px_h2 *h, struct h2s *s, int end_stream)
{
    struct px_req *r = &s->r;
    struct px_req_head *q = &s->q;
    s->dispatched = 1;

    if (!s->too_large && s->auth_o >= 0 && s->auth_l > 0) {
        /* :authority wins over a host field (RFC 9113 8.3.1), as in current
         * nginx (routing by :authority, no 400): it picks the service and is
         * the upstream's Host; a host field next to it is dropped, whatever
         * its value, so routing, the upstream and the log never disagree.
         * Without :authority the host field is used as it came. */
        uint32_t j = 0, off;
        for (uint32_t i = 0; i < s->nhdr; i++)
            if (!(s->hdr[i].nl == 4 && memcmp(s->buf + s->hdr[i].no, "host", 4) == 0))
                s->hdr[j++] = s->hdr[i];
        s->nhdr = j;
        if (buf_add(s, "host", 4, &off) == 0) {
            memmove(&s->hdr[1], &s->hdr[0], s->nhdr * sizeof(s->hdr[0]));
            s->hdr[0] = (struct h2hdr){off, 4, (uint32_t)s->auth_o, s->auth_l};
            s->nhdr++;
        } else {
            s->too_large = 1;
        }
    }
    if (!s->too_large)
        join_cookies(s);
    int64_t cl = -1;
    for (uint32_t i = 0; i < s->nhdr; i++) {
        const struct h2hdr *e = &s->hdr[i];
        if (e->nl == 14 && memcmp(s->buf + e->no, "content-length", 14) == 0)
            cl = parse_cl(s->buf + e->vo, e->vl);
    }
    if (!end_stream && cl < 0 && !s->too_large) {
        uint32_t no, vo;
        if (buf_add(s, "transfer-encoding", 17, &no) == 0 && buf_add(s, "chunked", 7, &vo) == 0) {
            s->hdr[s->nhdr++] = (struct h2hdr){no, 17, vo, 7};
            s->chunked_up = 1;
        }
    }
    /* s->buf is final now: make the slices */
    q->method = s->method_o >= 0 ? s->buf + s->method_o : "";
    q->method_len = s->method_l;
    q->method_id = px_h1_method_id(q->method, q->method_len);
    q->path = s->path_o >= 0 ? s->buf + s->path_o : "";
    q->path_len = s->path_l;
    q->target = q->path;
    q->target_len = q->path_len;
    const char *qm = memchr(q->path, '?', q->path_len);
    q->query = qm ? qm + 1 : NULL;
    q->query_len = qm ? q->path_len - (size_t)(qm + 1 - q->path) : 0;
    q->minor_version = 1;
    q->content_length = cl;
    q->chunked = s->chunked_up;
    q->nheaders = s->nhdr;
    q->host = NULL;
    for (uint32_t i = 0; i < s->nhdr; i++) {
        struct px_h1_header *hd = &q->headers[i];
        hd->name = s->buf + s->hdr[i].no;
        hd->name_len = s->hdr[i].nl;
        hd->value = s->buf + s->hdr[i].vo;
        hd->value_len = s->hdr[i].vl;
        if (hd->name_len == 4 && memcmp(hd->name, "host", 4) == 0 && q->host == NULL) {
            q->host = hd->value;
            q->host_len = hd->value_len;
        }
    }
    struct px_req_origin o = {
        .q = q,
        .head_bound = s->buflen + 4 * s->q.nheaders + 64, /* every field plus its separators */
        .peer = h->peer.sa,
        .peer_ip = h->peer_ip,
        .peer_ip_len = (uint8_t)h->peer.ip_len,
        .proto = PX_PROTO_HTTP2,
        .tls = 1,
        .has_body = !end_stream,
    };
    int rc = px_req_begin(r, h->w, &h2_ops, s, &o);
    r->bytes_in = s->head_in;
    s->body_done = end_stream;
    if (rc < 0) {
        px_req_respond(r, 500, NULL, 0);
        return;
    }
    if (s->too_large) {
        px_req_respond(r, 431, NULL, 0);
        return;
    }
    int bad = q->path_len ? px_h1_check_target(q->path, q->path_len) : 0;
    if (bad) {
        px_req_respond(r, -bad, NULL, 0); /* a '#', a bad %-escape, %00: as HTTP/1 answers them */
        return;
    }
    if (q->method_len == 7 && memcmp(q->method, "CONNECT", 7) == 0) {
        static const char msg[] = "CONNECT and WebSocket over HTTP/2 are not supported: use HTTP/1.1\n";
        px_req_respond(r, 501, msg, sizeof(msg) - 1);
        return;
    }
    px_req_dispatch(r);
}

/* Request body bytes for the upstream (chunk-framed when the client sent
 * no content-length). */
static void body_chunk(struct px_h2 *h, struct h2s *s, const uint8_t *data, size_t len, int last)
{
    struct px_req *r = &s->r;
    if (s->chunked_up && len) {
        char line[24];
        int n = snprintf(line, sizeof(line), "%zx\r\n", len);
        evbuffer_add(h->tmp, line, (size_t)n);
    }
    if (len)
        evbuffer_add(h->tmp, data, len);
    if (s->chunked_up && len)
        evbuffer_add(h->tmp, "\r\n", 2);
    if (last) {
        s->body_done = 1;
        if (s->chunked_up)
            evbuffer_add(h->tmp, "0\r\n\r\n", 5);
    }
    size_t n = evbuffer_get_length(h->tmp);
    if (!s->proceeding) {
        /* the request waits (parked): keep the body, and its window, until
         * the upstream request starts (h2_proceed) */
        if (s->hold == NULL && (s->hold = evbuffer_new()) == NULL) {
            nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
            evbuffer_drain(h->tmp, n);
            return;
        }
        evbuffer_add_buffer(s->hold, h->tmp);
        s->unconsumed += len;
        return;
    }
    int paused = px_req_body(r, h->tmp, n, last);
    evbuffer_drain(h->tmp, evbuffer_get_length(h->tmp));
    if (len) {
        if (paused || s->unconsumed)
            s->unconsumed += len;
        else
            nghttp2_session_consume(h->ng, s->id, len);
    }
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *ud)
{
    struct px_h2 *h = ud;
    struct h2s *s = nghttp2_session_get_stream_user_data(ng, id);
    if (s == NULL || !s->dispatched || s->r.done || s->body_done) {
        nghttp2_session_consume(ng, id, len); /* not wanted: keep the windows open */
        return 0;
    }
    const struct px_config *cfg = h->w->cfg;
    s->body_in += len;
    s->r.bytes_in += len;
    if (cfg->max_body_size && s->body_in > cfg->max_body_size) {
        nghttp2_session_consume(ng, id, len);
        px_upstream_abort(&s->r);
        if (!s->r.resp_started)
            px_req_respond(&s->r, 413, NULL, 0);
        else
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        return 0;
    }
    body_chunk(h, s, data, len, 0);
    return 0;
}

/* Rapid reset: the token bucket runs out -> GOAWAY(ENHANCE_YOUR_CALM), and
 * the callback failure stops nghttp2 at this frame, so that the rest of the
 * input (often thousands more HEADERS+RST_STREAM) never becomes requests. */
static int rst_limit(struct px_h2 *h)
{
    if (h->rst_tokens < H2_RST_BURST) {
        uint64_t now = px_now_ms(), add = (now - h->rst_ms) * H2_RST_RATE / 1000;
        if (add) {
            h->rst_tokens = add >= H2_RST_BURST - h->rst_tokens ? H2_RST_BURST : h->rst_tokens + (uint32_t)add;
            h->rst_ms = now;
        }
    }
    if (h->rst_tokens > 0) {
        h->rst_tokens--;
        return 0;
    }
    px_log_info("h2: %s sent too many RST_STREAM frames: GOAWAY", h->peer_ip);
    nghttp2_session_terminate_session(h->ng, NGHTTP2_ENHANCE_YOUR_CALM);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static void goaway_final(struct px_h2 *h)
{
    if (h->goaway_final)
        return;
    h->goaway_final = 1;
    event_del(&h->goaway_timer);
    h->goaway_last = nghttp2_session_get_last_proc_stream_id(h->ng);
    nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE, h->goaway_last, NGHTTP2_NO_ERROR, NULL, 0);
    kick(h);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct px_h2 *h = ud;
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    struct h2s *s;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        s = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
        if (s == NULL)
            return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (refused(h, frame->hd.stream_id))
                return 0;
            dispatch(h, s, end);
        }
        else if (end && s->dispatched && !s->body_done && !s->r.done)
            body_chunk(h, s, NULL, 0, 1); /* trailers end the body */
        return 0;
    case NGHTTP2_DATA:
        s = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
        if (s && end && s->dispatched && !s->body_done && !s->r.done)
            body_chunk(h, s, NULL, 0, 1);
        return 0;
    case NGHTTP2_RST_STREAM:
        return rst_limit(h);
    case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && h->goaway &&
            memcmp(frame->ping.opaque_data, goaway_ping, sizeof(goaway_ping)) == 0)
            goaway_final(h);
        return 0;
    default:
        return 0;
    }
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    struct px_h2 *h = ud;
    struct h2s *s = nghttp2_session_get_stream_user_data(ng, id);
    if (s == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    if (s->unconsumed) {
        /* body held back (a parked request, a full upstream) that nobody
         * will read now: its bytes still count against the connection's
         * window, which would shrink for good with every such reset */
        nghttp2_session_consume_connection(ng, s->unconsumed);
        s->unconsumed = 0;
    }
    if (s->r.up)
        px_upstream_abort(&s->r); /* the client reset it: the upstream connection cannot be reused */
    stream_log(s);
    resp_clear(s);
    stream_unlink(h, s);
    px_list_insert_head(&h->dead, &s->link);
    return 0;
}

/* ---- send timeout (client_body_timeout) ---- */

/* Bytes (or the END_STREAM) wait for the client's window or socket. */
static int stream_waits(const struct h2s *s)
{
    return s->wait_ms && (evbuffer_get_length(s->resp) || s->resp_eof);
}

/* The client let the stream sit: give up on it and its upstream now rather
 * than when the RST_STREAM gets out (it may never, see stalled). */
static void stream_timeout(struct px_h2 *h, struct h2s *s)
{
    px_log(PX_LOG_DEBUG, "h2: stream %d: client took nothing for client_body_timeout", s->id);
    if (s->r.up)
        px_upstream_abort(&s->r);
    resp_clear(s);
    s->resp_eof = 0;
    s->wait_ms = 0;
    nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
}

static void h2_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct px_h2 *h = arg;
    uint64_t now = px_now_ms(), t = h->w->cfg->client_body_timeout_ms, next = 0;
    struct px_list_node *n;
    px_list_foreach(&h->streams, n) {
        struct h2s *s = STREAM(n);
        if (!stream_waits(s))
            continue;
        if (now - s->wait_ms >= t) {
            stream_timeout(h, s);
            continue;
        }
        if (next == 0 || s->wait_ms + t - now < next)
            next = s->wait_ms + t - now;
    }
    size_t out = evbuffer_get_length(h->s->out);
    if (out && out >= h->out_left && h->out_wait_ms && now - h->out_wait_ms >= t)
        h->stalled = 1; /* not even a GOAWAY would get through */
    if (next && !h->stalled) {
        struct timeval tv = {(time_t)(next / 1000), (suseconds_t)(next % 1000 * 1000)};
        event_add(&h->timer, &tv);
    }
    kick(h);
}

static void goaway_timeout(evutil_socket_t fd, short what, void *arg)
{
    goaway_final(arg);
}

/* ---- the session ---- */

struct px_h2 *px_h2_new(struct px_worker *w, struct px_sock *sock, const struct px_h2_peer *peer,
                        void (*kickfn)(void *), void *arg)
{
    struct px_h2 *h = calloc(1, sizeof(*h));
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    if (h == NULL)
        return NULL;
    h->w = w;
    h->s = sock;
    h->peer = *peer;
    size_t ipn = peer->ip_len < sizeof(h->peer_ip) - 1 ? peer->ip_len : sizeof(h->peer_ip) - 1;
    memcpy(h->peer_ip, peer->ip, ipn);
    h->peer.ip = h->peer_ip;
    h->peer.ip_len = ipn;
    h->kick = kickfn;
    h->kick_arg = arg;
    evtimer_assign(&h->timer, w->base, h2_timeout, h);
    evtimer_assign(&h->goaway_timer, w->base, goaway_timeout, h);
    h->rst_tokens = H2_RST_BURST;
    h->rst_ms = px_now_ms();
    if ((h->tmp = evbuffer_new()) == NULL || nghttp2_session_callbacks_new(&cb) != 0 ||
        nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* a backstop only: rst_limit() trips first and says ENHANCE_YOUR_CALM */
    nghttp2_option_set_stream_reset_rate_limit(opt, 2 * H2_RST_BURST, 2 * H2_RST_RATE);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_mem mem = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc}; /* nghttp2 keeps a copy */
    if (nghttp2_session_server_new3(&h->ng, cb, h, opt, &mem) != 0)
        goto fail;
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    cb = NULL;
    opt = NULL;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)w->cfg->max_header_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, PX_ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW) != 0)
        goto fail;
    return h;
fail:
    if (cb)
        nghttp2_session_callbacks_del(cb);
    if (opt)
        nghttp2_option_del(opt);
    px_h2_free(h);
    return NULL;
}

static int feed(struct px_h2 *h)
{
    struct evbuffer *in = h->s->in;
    while (evbuffer_get_length(in)) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t rv = nghttp2_session_mem_recv(h->ng, v.iov_base, v.iov_len);
        if (rv < 0) {
            px_log(PX_LOG_DEBUG, "h2: %s", nghttp2_strerror((int)rv));
            return -1;
        }
        evbuffer_drain(in, (size_t)rv);
    }
    return 0;
}

/* Track when the output last shrank: conn.c flushes too, so a shorter
 * buffer than we left is progress as well. */
static void out_progress(struct px_h2 *h, size_t before)
{
    size_t len = evbuffer_get_length(h->s->out);
    if (len == 0)
        h->out_wait_ms = 0;
    else if (len < before || h->out_wait_ms == 0)
        h->out_wait_ms = produce_now(h);
    h->out_left = len;
}

static int produce(struct px_h2 *h)
{
    struct evbuffer *out = h->s->out;
    h->now_ms = 0; /* produce_now() reads the clock again if this call needs it */
    if (evbuffer_get_length(out) < h->out_left)
        out_progress(h, h->out_left);
    while (evbuffer_get_length(out) < H2_OUT_HIGH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->ng, &data);
        if (n < 0) {
            px_log(PX_LOG_DEBUG, "h2: %s", nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0)
            break;
        evbuffer_add(out, data, (size_t)n);
    }
    size_t before = evbuffer_get_length(out);
    int rc = px_sock_flush(h->s);
    out_progress(h, before);
    return rc;
}

/* Upstreams paused for the connection's cap go on once it drained to half. */
static void resume_paused(struct px_h2 *h)
{
    if (!h->conn_paused || h->buffered >= H2_CONN_LOW)
        return;
    h->conn_paused = 0;
    struct px_list_node *n;
    px_list_foreach(&h->streams, n) {
        struct h2s *s = STREAM(n);
        if (s->up_paused && evbuffer_get_length(s->resp) < H2_STREAM_LOW && (s->r.up || s->r.resp_buffered)) {
            s->up_paused = 0;
            px_upstream_resume(&s->r);
        }
    }
}

int px_h2_run(struct px_h2 *h)
{
    free_dead(h);
    struct px_sock *s = h->s;
    if (h->stalled) {
        px_log(PX_LOG_DEBUG, "h2: the client took no output for client_body_timeout: closing");
        return -1;
    }
    for (int round = 0; round < 8; round++) {
        size_t got = 0;
        if (s->readable && !s->eof && !s->error && evbuffer_get_length(s->out) < H2_OUT_HIGH)
            got = px_sock_read(s, H2_READ_MAX);
        if (evbuffer_get_length(s->in) && feed(h) < 0) {
            produce(h); /* nghttp2 queued a GOAWAY: try to tell the client why */
            return -1;
        }
        if (produce(h) < 0)
            return -1;
        if (got == 0 || !s->readable)
            break;
    }
    if (s->error)
        return -1;
    if (s->eof)
        return 1;
    resume_paused(h);
    if ((h->nstreams || evbuffer_get_length(s->out)) && !evtimer_pending(&h->timer, NULL))
        event_add(&h->timer, h->w->tv_body);
    if (!nghttp2_session_want_read(h->ng) && !nghttp2_session_want_write(h->ng) &&
        evbuffer_get_length(s->out) == 0)
        return 1;
    if (s->readable && evbuffer_get_length(s->out) < H2_OUT_HIGH)
        kick(h); /* stopped by the round limit: be fair, continue next iteration */
    return 0;
}

int px_h2_idle(const struct px_h2 *h)
{
    return h->nstreams == 0;
}

/* Two steps (RFC 9113 6.8): GOAWAY(2^31-1) asks the client to open no more
 * streams; the final GOAWAY, with the last stream we took, goes when our
 * PING comes back (one round trip) or after H2_GOAWAY_DELAY_MS. Streams the
 * client sent before it saw the notice are served instead of refused. */
void px_h2_goaway(struct px_h2 *h)
{
    if (h->goaway)
        return;
    h->goaway = 1;
    if (nghttp2_submit_shutdown_notice(h->ng) != 0 ||
        nghttp2_submit_ping(h->ng, NGHTTP2_FLAG_NONE, goaway_ping) != 0) {
        goaway_final(h);
        return;
    }
    struct timeval tv = {H2_GOAWAY_DELAY_MS / 1000, H2_GOAWAY_DELAY_MS % 1000 * 1000};
    event_add(&h->goaway_timer, &tv);
    kick(h);
}

void px_h2_free(struct px_h2 *h)
{
    if (h == NULL)
        return;
    while (!px_list_empty(&h->streams)) {
        struct h2s *s = STREAM(px_list_first(&h->streams));
        if (h->ng)
            nghttp2_session_set_stream_user_data(h->ng, s->id, NULL);
        if (s->r.up)
            px_upstream_abort(&s->r);
        stream_log(s);
        stream_unlink(h, s);
        px_list_insert_head(&h->dead, &s->link);
    }
    free_dead(h);
    event_del(&h->timer);
    event_del(&h->goaway_timer);
    if (h->ng)
        nghttp2_session_del(h->ng);
    if (h->tmp)
        evbuffer_free(h->tmp);
    free(h);
}

/* ---- the session on a client connection (struct px_session_ops) ---- */

/* Upstream events produced frames: write them once this loop iteration is
 * done (EV_TIMEOUT marks no socket readiness). */
static void session_kick(void *arg)
{
    struct px_conn *c = arg;
    if (c->in_run)
        c->again = 1;
    else
        event_active(&c->s.ev, EV_TIMEOUT, 1);
}

static void *session_open(struct px_conn *c)
{
    struct px_h2_peer peer = {&c->peer.sa, c->peer_ip, c->peer_ip_len};
    struct px_h2 *h = px_h2_new(c->w, &c->s, &peer, session_kick, c);
    if (h == NULL)
        return NULL;
    h->c = c;
    px_conn_arm(c, c->w->tv_keepalive);
    h->idle_armed = 1;
    px_conn_idle(c, 1);
    return h;
}

static void session_run(void *session)
{
    struct px_h2 *h = session;
    struct px_conn *c = h->c;
    if (px_h2_run(h) != 0) {
        px_conn_close(c);
        return;
    }
    if (!px_h2_idle(h)) {
        if (h->idle_armed) {
            h->idle_armed = 0;
            px_conn_idle(c, 0);
        }
    } else if (!h->idle_armed) {
        h->idle_armed = 1;
        px_conn_idle(c, 1);
        px_conn_arm(c, c->w->tv_keepalive);
    }
}

static void session_timeout(void *session)
{
    struct px_h2 *h = session;
    if (!px_h2_idle(h)) {
        px_conn_arm(h->c, h->c->w->tv_keepalive);
        return;
    }
    px_conn_close(h->c);
}

/* Reload and stop alike: GOAWAY; the session ends when its streams are done. */
static int session_goaway(void *session, int stop)
{
    PX_UNUSED(stop);
    px_h2_goaway(session);
    return 0;
}

static void session_free(void *session)
{
    px_h2_free(session);
}

static const struct px_session_ops h2_session = {
    .name = "h2",
    .open = session_open,
    .run = session_run,
    .timeout = session_timeout,
    .goaway = session_goaway,
    .free = session_free,
};

const struct px_worker_module px_h2_module = {
    .name = "h2",
    .exit = h2_exit,
    .alpn = "h2",
    .session = &h2_session,
};
