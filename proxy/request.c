/* request.c -- the one pipeline both protocols enter: begin (id, client
 * address, forwarding fields), dispatch (shortcuts, route, policy, service
 * state, upstream), park and resume, finish (log, counts, unpin). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>

#include "px/accesslog.h"
#include "px/addr.h"
#include "px/challenge.h"
#include "px/common.h"
#include "px/config.h"
#include "px/headers.h"
#include "px/limit.h"
#include "px/log.h"
#include "px/request.h"
#include "px/stats.h"
#include "px/worker.h"

void px_req_set_id(struct px_req *r, const char *id, size_t len)
{
    if (id && len > 0 && len <= 64) {
        size_t i = 0;
        for (; i < len; i++) {
            unsigned char c = (unsigned char)id[i];
            if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
                break;
        }
        if (i == len) {
            memcpy(r->request_id, id, len);
            r->request_id[len] = '\0';
            r->request_id_len = (uint8_t)len;
            return;
        }
    }
    px_worker_request_id(r->w, r->request_id);
    r->request_id[32] = '\0';
    r->request_id_len = 32;
}

/* A CDN-Loop value naming this process (a list of cdn-ids with parameters:
 * the random token is matched anywhere in it). */
static int loop_seen(const char *v, size_t n)
{
    size_t tl;
    const char *t = px_loop_token(&tl);
    return n >= tl && memmem(v, n, t, tl) != NULL;
}

const char *px_req_date(struct px_worker *w)
{
    struct px_req_ctx *x = &w->req;
    struct timeval tv;
    if (w->base == NULL || event_base_gettimeofday_cached(w->base, &tv) != 0)
        gettimeofday(&tv, NULL);
    if (x->date[0] == '\0' || (int64_t)tv.tv_sec != x->date_sec) {
        px_http_date((int64_t)tv.tv_sec, x->date);
        x->date_sec = (int64_t)tv.tv_sec;
    }
    return x->date;
}

static int path_is(const struct px_req_head *q, const char *p, int prefix)
{
    size_t n = strlen(p);
    if (q->path_len < n || memcmp(q->path, p, n) != 0)
        return 0;
    return prefix || q->path_len == n || q->path[n] == '?';
}

/* Field lines of the same name combine with ", " (RFC 9110 5.3), whatever
 * the protocol: HTTP/1 repeats lines, HTTP/2 repeats fields. */
static int xff_join(struct px_req *r, const char *v, size_t n)
{
    size_t need = r->xff_len + 2 + n;
    if (need > r->xff_join_cap) {
        char *nb = malloc(need);
        if (nb == NULL)
            return -1;
        memcpy(nb, r->xff, r->xff_len);
        free(r->xff_join);
        r->xff_join = nb;
        r->xff_join_cap = need;
    } else if (r->xff != r->xff_join) {
        memmove(r->xff_join, r->xff, r->xff_len);
    }
    memcpy(r->xff_join + r->xff_len, ", ", 2);
    memcpy(r->xff_join + r->xff_len + 2, v, n);
    r->xff = r->xff_join;
    r->xff_len = need;
    return 0;
}

int px_req_begin(struct px_req *r, struct px_worker *w, const struct px_down_ops *ops, void *down,
                 const struct px_req_origin *o)
{
    memset(r, 0, offsetof(struct px_req, next_free));
    r->w = w;
    r->ops = ops;
    r->down = down;
    r->q = o->q;
    r->head_bound = o->head_bound;
    r->peer = o->peer;
    r->peer_ip = o->peer_ip;
    r->peer_ip_len = o->peer_ip_len;
    r->proto = o->proto;
    r->tls = o->tls;
    r->has_body = o->has_body;
    r->body_sent = !o->has_body;
    r->strip_expect = 1;
    r->method = o->q->method_id;
    r->start_us = px_now_us();
    r->start_wall_ms = px_wall_ms();
    px_worker_refresh(w);
    r->routes = w->routes;
    px_routes_pin(r->routes, w->id);

    /* one pass over the fields the pipeline acts on */
    const struct px_req_head *q = o->q;
    const char *rid = NULL;
    size_t rid_len = 0;
    int rc = 0;
    for (size_t i = 0; i < q->nheaders; i++) {
        const struct px_h1_header *h = &q->headers[i];
        /* the two names by their lengths first: a full px_hdr_lookup of
         * every field costs more than the rest of this function */
        if (h->name_len == 12 && PX_IEQ_LIT(h->name, 12, "x-request-id")) {
            rid = h->value;
            rid_len = h->value_len;
        } else if (h->name_len == 8 && PX_IEQ_LIT(h->name, 8, "cdn-loop")) {
            if (loop_seen(h->value, h->value_len))
                r->looped = 1;
        } else if (h->name_len == 10 && r->ua == NULL && PX_IEQ_LIT(h->name, 10, "user-agent")) {
            r->ua = h->value; /* the access log's */
            r->ua_len = (uint32_t)h->value_len;
        } else if (h->name_len == 7 && r->referer == NULL && PX_IEQ_LIT(h->name, 7, "referer")) {
            r->referer = h->value;
            r->referer_len = (uint32_t)h->value_len;
        } else if (h->name_len == 15 && PX_IEQ_LIT(h->name, 15, "x-forwarded-for")) {
            if (r->xff == NULL) {
                r->xff = h->value;
                r->xff_len = h->value_len;
            } else if (xff_join(r, h->value, h->value_len) < 0) {
                rc = -1;
            }
        }
    }
    px_req_set_id(r, rid, rid_len);
    int trusted = 0;
    r->client_ip_len = (uint8_t)px_req_client_ip(w->cfg, r->peer, r->peer_ip, r->peer_ip_len, r->xff, r->xff_len,
                                                 r->client_ip, &trusted);
    r->xff_trusted = trusted ? 1 : 0;
    return rc;
}

void px_req_release(struct px_req *r)
{
    free(r->xff_join);
    r->xff_join = NULL;
    r->xff_join_cap = 0;
    px_spool_release(&r->body_spool);
    px_spool_release(&r->resp_spool);
}

/* ---- request buffering (DESIGN "Buffering") ---- */

/* The service buffers requests: read the whole body (px_req_spool_body)
 * before an upstream is chosen. 413 at once when the Content-Length says
 * it is over; else the client side lets the body flow (HTTP/1.1 sends its
 * 100 Continue now: proxyd answers Expect itself). */
static void spool_begin(struct px_req *r, const struct px_config *cfg)
{
    const struct px_req_head *q = r->q;
    uint64_t limit = r->svc->buffering.max_request ? r->svc->buffering.max_request : cfg->max_body_size;
    if (limit && q->content_length > 0 && (uint64_t)q->content_length > limit) {
        px_req_respond(r, 413, NULL, 0);
        return;
    }
    r->body_limit = limit;
    r->req_spooling = 1;
    r->spooled = 1;
    if (q->chunked)
        px_chunked_init(&r->dechunk);
    r->ops->proceed(r);
}

/* A chunked body (HTTP/1.1 as sent, HTTP/2 as framed by h2.c) goes in
 * de-chunked: it goes up with a Content-Length. The framing was validated
 * by the client side already; trailers are dropped. */
static int dechunk_add(struct px_req *r, struct evbuffer *src, size_t len, const char *dir, uint64_t mem)
{
    while (len) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(src, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        size_t n = v.iov_len < len ? v.iov_len : len, c = 0;
        enum px_chunk_result res = px_chunked_step(&r->dechunk, v.iov_base, n, &c);
        if (res == PX_CHUNK_ERROR || c == 0) {
            errno = EINVAL;
            break;
        }
        len -= c;
        if (res != PX_CHUNK_DATA)
            evbuffer_drain(src, c);
        else if (px_spool_add(&r->body_spool, src, c, dir, mem) < 0)
            break;
    }
    if (len == 0)
        return 0;
    evbuffer_drain(src, len);
    return -1;
}

int px_req_spool_body(struct px_req *r, struct evbuffer *src, size_t len, int last)
{
    const struct px_config *cfg = px_routes_config(r->routes);
    uint64_t mem = r->svc->buffering.memory;
    int rc = r->q->chunked ? dechunk_add(r, src, len, cfg->temp_dir, mem)
                           : px_spool_add(&r->body_spool, src, len, cfg->temp_dir, mem);
    if (rc < 0) {
        px_log_error("request body of %s: cannot buffer it in temp_dir %s: %s", r->svc->name, cfg->temp_dir,
                     errno == EINVAL ? "bad chunked framing" : strerror(errno));
        r->req_spooling = 0;
        px_spool_reset(&r->body_spool);
        px_req_respond(r, 500, NULL, 0);
        return 0;
    }
    if (r->body_limit && r->body_spool.added > r->body_limit) {
        r->req_spooling = 0;
        px_spool_reset(&r->body_spool);
        px_req_respond(r, 413, NULL, 0);
        return 0;
    }
    if (last) {
        r->body_sent = 1; /* all of it was read: the client side reads no more */
        r->req_spooling = 0;
        r->body_buffered = 1;
        r->spool_pending = px_spool_length(&r->body_spool) > 0;
        px_req_dispatch(r); /* at PX_STEP_UPSTREAM */
    }
    return 0;
}

void px_req_respond(struct px_req *r, int status, const char *body, size_t len)
{
    const struct px_err_page *pg;
    r->step = PX_STEP_DONE;
    if (PX_UNLIKELY(r->svc != NULL && r->svc->npages != 0) && status >= 400 &&
        (pg = px_service_page(r->svc, status)) != NULL) {
        r->html = 1;
        body = pg->body;
        len = pg->len;
    }
    r->ops->respond(r, status, body, len, NULL, 0);
}

/* 301 to SCHEME://HOST/PATH?QUERY: HOST is canonical, else the request's
 * (lowercased, port stripped). */
static void respond_redirect(struct px_req *r, const char *scheme, const char *canonical)
{
    const struct px_req_head *q = r->q;
    char host[256];
    int hl = canonical ? snprintf(host, sizeof(host), "%s", canonical)
                       : px_host_normalize(q->host, q->host ? q->host_len : 0, host, sizeof(host));
    if (hl <= 0) {
        px_req_respond(r, 400, NULL, 0);
        return;
    }
    size_t cap = (size_t)hl + q->path_len + 16;
    char stackbuf[1024];
    char *loc = cap <= sizeof(stackbuf) ? stackbuf : malloc(cap);
    if (loc == NULL) {
        px_req_respond(r, 500, NULL, 0);
        return;
    }
    int n = snprintf(loc, cap, "%s://%s%.*s", scheme, host, (int)q->path_len, q->path);
    struct px_h1_header extra = {"Location", 8, loc, (size_t)n};
    r->step = PX_STEP_DONE;
    r->ops->respond(r, 301, "301 Moved Permanently\n", 22, &extra, 1);
    if (loc != stackbuf)
        free(loc);
}

/* The token of a challenge request (its path after the prefix, up to a
 * query). */
static const char *challenge_token(const struct px_req *r, size_t *len)
{
    static const char prefix[] = "/.well-known/acme-challenge/";
    const struct px_req_head *q = r->q;
    const char *token = q->path + sizeof(prefix) - 1;
    const char *end = memchr(token, '?', q->path_len - (sizeof(prefix) - 1));
    *len = end ? (size_t)(end - token) : q->path_len - (sizeof(prefix) - 1);
    return token;
}

/* A token the remote table answers (several instances) keeps the request
 * parked this long at most; the remote answers within [cluster] timeout
 * (at most 900 ms), so this is only a backstop: then 404. */
#define CHALLENGE_LATER_MS 1000

static void park_unlink(struct px_req *r);

/* The remote table's answer, on this worker's thread: a value that is not
 * a key authorization for this token is not served. */
static void challenge_answer(void *arg, const char *keyauth, int n)
{
    struct px_req *r = arg;
    size_t len;
    const char *token = challenge_token(r, &len);
    r->challenge_pending = 0;
    park_unlink(r);
    if (n < 0 || !px_challenge_valid(token, len, keyauth, (size_t)n))
        px_req_respond(r, 404, NULL, 0);
    else
        px_req_respond(r, 200, keyauth, (size_t)n);
}

/* HTTP-01 (RFC 8555 8.3): the key authorization of a pending token, for
 * any Host (the CA sends NAME:PORT) and before the redirect; else 404. The
 * local table first, then (several instances) the remote one: the request
 * parks until it answers. */
static void respond_challenge(struct px_req *r)
{
    size_t len;
    const char *token = challenge_token(r, &len);
    char keyauth[PX_CHALLENGE_KEYAUTH_MAX + 1];
    int n = r->method == PX_METHOD_GET || r->method == PX_METHOD_HEAD
                ? px_challenge_find(r->w->id, token, len, keyauth, sizeof(keyauth), challenge_answer, r)
                : -1;
    if (n == PX_CHALLENGE_LATER) {
        r->challenge_pending = 1;
        px_req_park(r, CHALLENGE_LATER_MS, 404);
    } else if (n < 0) {
        px_req_respond(r, 404, NULL, 0);
    } else {
        px_req_respond(r, 200, keyauth, (size_t)n);
    }
}

/* Steps before the route: answers proxyd gives without a service. 1 when
 * the request was answered. */
static int shortcuts(struct px_req *r, const struct px_config *cfg)
{
    const struct px_req_head *q = r->q;
    if (cfg->health_path[0] && (r->method == PX_METHOD_GET || r->method == PX_METHOD_HEAD) &&
        path_is(q, cfg->health_path, 0)) {
        r->health = 1;
        px_req_respond(r, 200, "healthy\n", 8);
        return 1;
    }
    if (!r->tls && path_is(q, "/.well-known/acme-challenge/", 1)) {
        respond_challenge(r);
        return 1;
    }
    if (!r->tls && cfg->redirect_https && cfg->has_listen_https) {
        /* a service's tls_redirect = no wins for its hosts; its canonical_host in the same hop */
        const struct px_service *s = px_routes_match(r->routes, q->host, q->host ? q->host_len : 0, q->path,
                                                     q->path_len);
        if (s == NULL || !s->opts.no_tls_redirect) {
            respond_redirect(r, "https", s ? s->opts.canonical_host : NULL);
            return 1;
        }
    }
    return 0;
}

/* A request for another host of a service with canonical_host: 301 there
 * (https when the request is, or when port 80 redirects this service). 1
 * when answered. */
static int canonical_redirect(struct px_req *r, const struct px_config *cfg)
{
    const struct px_req_head *q = r->q;
    const char *c = r->svc->opts.canonical_host;
    char host[256];
    int hl = px_host_normalize(q->host, q->host ? q->host_len : 0, host, sizeof(host));
    if (hl > 0 && strcmp(host, c) == 0)
        return 0;
    int https = r->tls || (cfg->redirect_https && cfg->has_listen_https && !r->svc->opts.no_tls_redirect);
    respond_redirect(r, https ? "https" : "http", c);
    return 1;
}

/* The [route] of r on its pinned snapshot, and the response headers that
 * come with it. */
static void set_route(struct px_req *r)
{
    const struct px_req_head *q = r->q;
    r->route = px_routes_route(r->routes, q->host, q->host ? q->host_len : 0, q->path, q->path_len);
    r->adds = r->route ? r->route->adds : NULL;
    r->nadds = r->route ? r->route->nadds : 0;
}

/* The rate-limit key: the client address in binary, made only for a route
 * with zones. The peer's comes from its sockaddr; an address taken from a
 * trusted proxy's X-Forwarded-For is parsed (unparsable: the peer's). */
static void client_key(const struct px_req *r, struct px_limit_key *k)
{
    if (r->xff_trusted && px_limit_key_parse(r->client_ip, r->client_ip_len, k) == 0)
        return;
    if (px_limit_key_from_sockaddr(r->peer, k) < 0)
        memset(k, 0, sizeof(*k)); /* not an IP peer: one shared key */
}

/* What the zones decided, applied: go on (0), wait (parked; the request
 * re-enters at PX_STEP_SERVICE), or the rejecting zone's status (429 with
 * Retry-After; 503 bare, as nginx sends it). 1 when the request does not go
 * on now. */
static int limit_apply(struct px_req *r, const struct px_limit_result *res)
{
    if (PX_LIKELY(res->verdict == PX_LIMIT_PASS))
        return 0;
    if (res->verdict == PX_LIMIT_DELAY) {
        r->step = PX_STEP_SERVICE;
        px_req_park(r, res->delay_ms, 0);
        return 1;
    }
    struct px_limit_zone *z = r->route->zones[res->which];
    int status = px_limit_zone_status(z);
    r->limited = px_limit_zone_name(z);
    r->limited_stats_id = r->route->zone_stats_ids[res->which];
    r->step = PX_STEP_DONE;
    if (status != 429) {
        r->ops->respond(r, status, NULL, 0, NULL, 0);
        return 1;
    }
    char v[12];
    int n = snprintf(v, sizeof(v), "%" PRIu32, res->retry_after_s ? res->retry_after_s : 1);
    struct px_h1_header ra = {"Retry-After", 11, v, (size_t)n};
    r->ops->respond(r, 429, NULL, 0, &ra, 1);
    return 1;
}

/* A zone that answers later (a shared backend) keeps the request parked
 * this long at most; with no answer by then the request goes on: a limiter
 * that is down must not take the site down (the fail-open choice in the
 * README). */
#define LIMIT_LATER_MS 1000

/* The later answer, on this worker's thread: unpark and apply it. */
static void limit_answer(void *arg, const struct px_limit_result *res)
{
    struct px_req *r = arg;
    r->limit_pending = 0;
    park_unlink(r);
    if (!limit_apply(r, res))
        px_req_dispatch(r); /* at PX_STEP_SERVICE */
}

static void limit_cancel(struct px_req *r)
{
    r->limit_pending = 0;
    px_limit_cancel(r->route->zones, r->route->nzones, r);
}

/* The route's zones decide, as nginx's limit_req does (px_limit_decide: the
 * zones' ops; a "later" answer parks the request until limit_answer). 1
 * when the request does not go on now. */
static int rate_limit(struct px_req *r)
{
    const struct px_route *rt = r->route;
    struct px_limit_key k;
    struct px_limit_result res;

    client_key(r, &k);
    enum px_limit_verdict v = px_limit_decide(rt->zones, rt->nzones, &k, r->start_us / 1000, &res, limit_answer, r);
    if (PX_LIKELY(v == PX_LIMIT_PASS))
        return 0;
    if (v == PX_LIMIT_LATER) {
        r->step = PX_STEP_SERVICE;
        r->limit_pending = 1;
        px_req_park(r, LIMIT_LATER_MS, 0);
        return 1;
    }
    return limit_apply(r, &res);
}

void px_req_dispatch(struct px_req *r)
{
    const struct px_config *cfg = px_routes_config(r->routes);
    const struct px_req_head *q = r->q;
    switch (r->step) {
    case PX_STEP_ROUTE:
        /* health_path and ACME challenges first: never limited */
        if (shortcuts(r, cfg))
            return;
        if (PX_UNLIKELY(r->looped)) {
            /* it came from this process: sending it upstream again would
             * loop until max_connections (a target that is proxyd itself) */
            static const char msg[] = "508 Loop Detected: this request already passed through this proxyd\n";
            px_req_respond(r, 508, msg, sizeof(msg) - 1);
            return;
        }
        set_route(r);
        if (q->content_length > 0 && cfg->max_body_size && (uint64_t)q->content_length > cfg->max_body_size) {
            px_req_respond(r, 413, NULL, 0);
            return;
        }
        r->step = PX_STEP_POLICY;
        /* fall through */
    case PX_STEP_POLICY:
        if (r->route && r->route->nzones && rate_limit(r))
            return;
        r->step = PX_STEP_SERVICE;
        /* fall through */
    case PX_STEP_SERVICE:
        r->svc = px_routes_match(r->routes, q->host, q->host ? q->host_len : 0, q->path, q->path_len);
        if (r->svc == NULL) {
            px_req_respond(r, 404, NULL, 0);
            return;
        }
        if (PX_UNLIKELY(r->svc->opts.canonical_host != NULL) && canonical_redirect(r, cfg))
            return;
        r->step = PX_STEP_STATE;
        /* fall through */
    case PX_STEP_STATE:
        if (r->svc->state == PX_SVC_STOPPED) {
            const char *m = r->svc->stop_message;
            px_req_respond(r, 503, m, m ? strlen(m) : 0);
            return;
        }
        if (r->svc->state == PX_SVC_PAUSED) {
            px_req_park(r, r->svc->max_pause_ms, 504);
            return;
        }
        r->step = PX_STEP_UPSTREAM;
        /* fall through */
    case PX_STEP_UPSTREAM: {
        /* no body: one flag */
        if (PX_UNLIKELY(r->has_body) && !r->body_buffered && r->svc->buffering.requests) {
            spool_begin(r, cfg);
            return;
        }
        r->up_start_us = px_now_us(); /* the access log's upstream_ms */
        int status = px_upstream_start(r);
        if (status) {
            px_req_respond(r, status, NULL, 0);
            return;
        }
        r->step = PX_STEP_DONE;
        if (!r->body_buffered)
            r->ops->proceed(r);
        return;
    }
    case PX_STEP_DONE:
        return;
    }
}

/* ---- parking ---- */

static void park_unlink(struct px_req *r)
{
    struct px_req_ctx *x = &r->w->req;
    px_list_remove(&x->parked, &r->park_link);
    x->nparked--;
    r->parked = 0;
    event_del(&r->park_ev);
}

static void park_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct px_req *r = arg;
    park_unlink(r);
    if (r->limit_pending)
        limit_cancel(r); /* no answer in time: go on */
    if (r->challenge_pending) {
        r->challenge_pending = 0;
        px_challenge_cancel(r); /* no answer in time: 404 (park_status) */
    }
    if (r->park_status)
        px_req_respond(r, r->park_status, NULL, 0);
    else
        px_req_dispatch(r);
}

void px_req_park(struct px_req *r, uint64_t ms, int status)
{
    struct px_req_ctx *x = &r->w->req;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    r->park_status = status;
    r->parked = 1;
    px_list_insert_head(&x->parked, &r->park_link);
    x->nparked++;
    event_assign(&r->park_ev, r->w->base, -1, 0, park_timeout, r);
    event_add(&r->park_ev, &tv);
    px_stats_inc(&px_stats_of(r->w->id)->parked);
}

void px_req_wake_service(struct px_worker *w, const char *name)
{
    struct px_list_node *n, *next;
    /* Resuming may answer at once and so free the object: take next first.
     * A request that parks again goes to the head, behind the walk. */
    px_list_foreach_safe(&w->req.parked, n, next) {
        struct px_req *r = px_container_of(n, struct px_req, park_link);
        if (r->park_status == 0 || r->svc == NULL || strcmp(r->svc->name, name) != 0)
            continue;
        park_unlink(r);
        /* the pause ended on a newer snapshot: route again on it */
        px_routes_unpin(r->routes, w->id);
        px_worker_refresh(w);
        r->routes = w->routes;
        px_routes_pin(r->routes, w->id);
        set_route(r); /* its headers; the limits were applied once */
        r->svc = px_routes_match(r->routes, r->q->host, r->q->host ? r->q->host_len : 0, r->q->path,
                                 r->q->path_len);
        if (r->svc == NULL) {
            px_req_respond(r, 404, NULL, 0);
            continue;
        }
        r->step = PX_STEP_STATE;
        px_req_dispatch(r);
    }
}

uint32_t px_req_parked_count(const struct px_worker *w)
{
    return w->req.nparked;
}

/* ---- the end of a request ---- */

static const char *const proto_names[] = {
    [PX_PROTO_HTTP10] = "HTTP/1.0",
    [PX_PROTO_HTTP11] = "HTTP/1.1",
    [PX_PROTO_HTTP2] = "HTTP/2",
};
_Static_assert(PX_ARRAY_LEN(proto_names) == PX_PROTO__COUNT, "every enum px_proto has a name");

const char *px_proto_name(unsigned proto)
{
    return proto < PX_PROTO__COUNT && proto_names[proto] ? proto_names[proto] : "-";
}

static void access_log(const struct px_req *r, uint64_t now_us);

void px_req_finish(struct px_req *r)
{
    struct px_worker *w = r->w;
    r->done = 1;
    if (r->limit_pending)
        limit_cancel(r);
    if (PX_UNLIKELY(r->challenge_pending)) {
        r->challenge_pending = 0;
        px_challenge_cancel(r); /* the client went first: the answer is dropped */
    }
    if (r->parked)
        park_unlink(r);
    if (r->up)
        px_upstream_abort(r);
    if (PX_UNLIKELY(r->spooled)) {
        /* temp files never outlive their request */
        px_spool_reset(&r->body_spool);
        px_spool_reset(&r->resp_spool);
        r->req_spooling = r->spool_pending = r->resp_buffered = r->resp_in = 0;
    }
    if (w == NULL)
        return; /* never begun (a connection closed before its first request line) */
    px_stats_request(px_stats_of(w->id), r->proto, r->status, r->bytes_in, r->bytes_out, r->limited != NULL);
    uint64_t now_us = 0; /* one clock read for the latency histogram and the log line */
    if (r->status) {
        uint32_t sid = r->svc ? r->svc->stats_id : 0;
        now_us = px_now_us();
        px_stats_service(w->id, sid, r->proto, r->status, now_us - r->start_us, r->bytes_out);
        px_stats_service_bytes_in(w->id, sid, r->bytes_in);
        if (r->limited)
            px_stats_limited(w->id, r->limited_stats_id);
    }
    if (r->status && px_log_access_enabled() && !(r->route && r->route->no_access_log) &&
        !(r->health && !px_routes_config(r->routes)->health_log))
        access_log(r, now_us);
    if (r->routes) {
        px_routes_unpin(r->routes, w->id);
        r->routes = NULL;
    }
}

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

size_t px_req_client_ip(const struct px_config *cfg, const struct sockaddr *peer, const char *peer_ip,
                        size_t peer_ip_len, const char *xff, size_t xff_len, char *out, int *xff_trusted)
{
    *xff_trusted = 0;
    if (cfg->ntrusted_proxies == 0 || !px_cidr_match(cfg->trusted_proxies, cfg->ntrusted_proxies, peer)) {
        memcpy(out, peer_ip, peer_ip_len);
        out[peer_ip_len] = '\0';
        return peer_ip_len;
    }
    if (xff == NULL || xff_len == 0) {
        memcpy(out, peer_ip, peer_ip_len);
        out[peer_ip_len] = '\0';
        return peer_ip_len;
    }
    *xff_trusted = 1;
    /* Walk right to left: the first address not in trusted_proxies is the
     * client (nginx real_ip_recursive on). All trusted: the left-most. */
    const char *end = xff + xff_len, *best = NULL;
    size_t best_len = 0;
    while (end > xff) {
        const char *e = end;
        while (e > xff && is_space(e[-1]))
            e--;
        const char *s = e;
        while (s > xff && s[-1] != ',')
            s--;
        const char *b = s;
        while (b < e && is_space(*b))
            b++;
        if (e > b) {
            best = b;
            best_len = (size_t)(e - b);
            if (!px_cidr_match_text(cfg->trusted_proxies, cfg->ntrusted_proxies, b, best_len))
                break;
        }
        end = s > xff ? s - 1 : xff;
    }
    if (best == NULL || best_len >= 46) {
        memcpy(out, peer_ip, peer_ip_len);
        out[peer_ip_len] = '\0';
        return peer_ip_len;
    }
    memcpy(out, best, best_len);
    out[best_len] = '\0';
    return best_len;
}

/* The access-log line: the request's fields for the formatter beside the
 * logger (accesslog.c). */
static void access_log(const struct px_req *r, uint64_t now)
{
    struct px_worker *w = r->w;
    const struct px_req_head *q = r->q;
    const struct px_config *cfg = px_routes_config(r->routes);
    const struct px_service *svc = r->svc;
    /* the service's log headers: looked up only when it names some */
    struct px_access_field fields[2 * PX_LOG_HEADERS_MAX];
    size_t nf = 0;
    for (size_t i = 0; svc && i < svc->nlog_req; i++) {
        const struct px_log_header *lh = &svc->log_headers[i];
        struct px_access_field *f = &fields[nf++];
        *f = (struct px_access_field){lh->key, lh->key_len, NULL, 0};
        for (size_t k = 0; k < q->nheaders; k++) {
            const struct px_h1_header *h = &q->headers[k];
            if (h->name_len == lh->name_len && strncasecmp(h->name, lh->name, lh->name_len) == 0) {
                f->value = h->value;
                f->value_len = h->value_len;
                break;
            }
        }
    }
    for (size_t i = 0; svc && r->upstream_status && i < svc->nlog_resp; i++) {
        const struct px_log_header *lh = &svc->log_headers[svc->nlog_req + i];
        if (r->resp_log_len[i] != 0xffff)
            fields[nf++] = (struct px_access_field){lh->key, lh->key_len, r->resp_log + r->resp_log_off[i],
                                                    r->resp_log_len[i]};
    }
    const struct px_access_entry e = {
        .start_wall_ms = r->start_wall_ms,
        .duration_us = now - r->start_us,
        .client = r->client_ip_len ? r->client_ip : r->peer_ip,
        .client_len = r->client_ip_len ? r->client_ip_len : r->peer_ip_len,
        .method = q->method ? q->method : "",
        .method_len = q->method ? q->method_len : 0,
        .host = q->host ? q->host : "",
        .host_len = q->host ? q->host_len : 0,
        .path = q->path ? q->path : "",
        .path_len = q->path ? q->path_len : 0,
        .target = q->target ? q->target : "",
        .target_len = q->target ? q->target_len : 0,
        .version = r->proto == PX_PROTO_HTTP2 ? "HTTP/2.0" : q->minor_version ? "HTTP/1.1" : "HTTP/1.0",
        .status = r->status,
        .bytes_in = r->bytes_in,
        .bytes_out = r->bytes_out,
        .body_out = r->body_out,
        .service = svc ? svc->name : "",
        .upstream = r->target ? r->target->addr.text : "",
        .upstream_status = r->upstream_status,
        .upstream_us = r->upstream_status ? (r->up_end_us ? r->up_end_us : now) - r->up_start_us : 0,
        .request_id = r->request_id,
        .request_id_len = r->request_id_len,
        .proto = px_proto_name(r->proto),
        .tls = r->tls,
        .user_agent = r->ua,
        .user_agent_len = r->ua_len,
        .referer = r->referer,
        .referer_len = r->referer_len,
        .limited = r->limited,
        .fields = fields,
        .nfields = nf,
    };
    enum px_access_format fmt = (enum px_access_format)cfg->access_log_format;
    char stackbuf[16384]; /* the bound is loose (6 per escapable byte): most lines fit */
    size_t n = px_access_log_format(fmt, &e, stackbuf, sizeof(stackbuf));
    if (n <= sizeof(stackbuf)) {
        px_worker_access_log(w, stackbuf, n);
        return;
    }
    /* a long line: format it in place in the worker's buffer */
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(w->access_buf, (ev_ssize_t)n, &v, 1) < 1)
        return;
    v.iov_len = px_access_log_format(fmt, &e, v.iov_base, n);
    evbuffer_commit_space(w->access_buf, &v, 1);
    px_worker_access_log(w, "", 0); /* schedules the flush */
}

/* ---- the module ---- */

static void req_on_msg(struct px_worker *w, const struct px_wmsg *m)
{
    if (m->type == PX_WM_WAKE_SERVICE)
        px_req_wake_service(w, m->u.service.name);
}

const struct px_worker_module px_req_module = {
    .name = "request",
    .msgs = PX_WM_BIT(PX_WM_WAKE_SERVICE),
    .on_msg = req_on_msg,
};
