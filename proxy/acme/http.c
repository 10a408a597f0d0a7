/* http.c -- libcurl's multi interface on a libevent base: curl says which
 * sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to wake it
 * (CURLMOPT_TIMERFUNCTION); the base tells curl what happened with
 * curl_multi_socket_action. Nothing here blocks, and there is no
 * curl_multi_perform loop. One multi handle per client: its connection
 * cache keeps the TLS connection to the CA for the next request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "client_internal.h"
#include "px/common.h"

struct sock_watch {
    struct px_acme_http *h;
    curl_socket_t fd;
    struct event ev;
    int added;
    struct sock_watch *prev, *next;
};

struct px_acme_http {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    char *ca_bundle;
    struct sock_watch *watches;
    struct px_acme_http_req *reqs;
};

struct px_acme_http_req {
    struct px_acme_http *h;
    struct px_acme_http_req *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    char *url, *post;
    char *body;
    size_t body_len, body_cap;
    int too_big;
    char *content_type, *location, *nonce, *retry_after;
    char errbuf[CURL_ERROR_SIZE];
    px_acme_resp_fn fn;
    void *arg;
};

static void check_done(struct px_acme_http *h);

/* ---- curl -> libevent ---- */

static void on_sock_event(evutil_socket_t fd, short what, void *arg)
{
    struct sock_watch *w = arg;
    struct px_acme_http *h = w->h; /* w may be gone after socket_action */
    int action = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0), running;
    px_curl.multi_socket_action(h->multi, fd, action, &running);
    check_done(h);
}

static void watch_free(struct sock_watch *w)
{
    if (w->added)
        event_del(&w->ev);
    if (w->prev)
        w->prev->next = w->next;
    else
        w->h->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    free(w);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct px_acme_http *h = userp;
    struct sock_watch *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (w != NULL) {
            px_curl.multi_assign(h->multi, fd, NULL);
            watch_free(w);
        }
        return 0;
    }
    if (w == NULL) {
        if ((w = calloc(1, sizeof(*w))) == NULL)
            return -1;
        w->h = h;
        w->fd = fd;
        w->next = h->watches;
        if (h->watches)
            h->watches->prev = w;
        h->watches = w;
        px_curl.multi_assign(h->multi, fd, w);
    } else if (w->added) {
        event_del(&w->ev);
        w->added = 0;
    }
    short ev = (short)(EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0));
    if (event_assign(&w->ev, h->base, fd, ev, on_sock_event, w) < 0 || event_add(&w->ev, NULL) < 0)
        return -1;
    w->added = 1;
    return 0;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct px_acme_http *h = arg;
    int running;
    px_curl.multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

/* curl wants to be woken in timeout_ms (0: as soon as possible, from the
 * loop and not from here; -1: no timer). */
static int on_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    struct px_acme_http *h = userp;
    if (timeout_ms < 0)
        return evtimer_del(h->timer);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    return evtimer_add(h->timer, &tv);
}

/* ---- one exchange ---- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct px_acme_http_req *r = arg;
    size_t n = size * nmemb;
    if (r->body_len + n + 1 > r->body_cap) {
        if (r->body_len + n + 1 > PX_ACME_MAX_BODY) {
            r->too_big = 1;
            return 0; /* curl ends the transfer: CURLE_WRITE_ERROR */
        }
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (b == NULL)
            return 0;
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

static void set_header(char **slot, const char *v, size_t n)
{
    while (n > 0 && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n'))
        n--;
    free(*slot);
    *slot = strndup(v, n);
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    struct px_acme_http_req *r = arg;
    size_t n = size * nmemb;
    static const struct {
        const char *name;
        size_t off;
    } wanted[] = {
        {"replay-nonce", offsetof(struct px_acme_http_req, nonce)},
        {"location", offsetof(struct px_acme_http_req, location)},
        {"retry-after", offsetof(struct px_acme_http_req, retry_after)},
        {"content-type", offsetof(struct px_acme_http_req, content_type)},
    };
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* a new response head (after a 100 Continue): forget the last one */
        for (size_t i = 0; i < PX_ARRAY_LEN(wanted); i++) {
            char **slot = (char **)((char *)r + wanted[i].off);
            free(*slot);
            *slot = NULL;
        }
        return n;
    }
    const char *colon = memchr(p, ':', n);
    if (colon == NULL)
        return n;
    size_t nlen = (size_t)(colon - p);
    for (size_t i = 0; i < PX_ARRAY_LEN(wanted); i++)
        if (nlen == strlen(wanted[i].name) && strncasecmp(p, wanted[i].name, nlen) == 0)
            set_header((char **)((char *)r + wanted[i].off), colon + 1, n - nlen - 1);
    return n;
}

static void req_free(struct px_acme_http_req *r)
{
    if (r->easy != NULL) {
        px_curl.multi_remove_handle(r->h->multi, r->easy);
        px_curl.easy_cleanup(r->easy);
    }
    if (r->prev)
        r->prev->next = r->next;
    else if (r->h->reqs == r)
        r->h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    px_curl.slist_free_all(r->headers);
    free(r->url);
    free(r->post);
    free(r->body);
    free(r->content_type);
    free(r->location);
    free(r->nonce);
    free(r->retry_after);
    free(r);
}

/* A relative Location resolved against the request URL. */
static char *absolute_location(const char *base, const char *loc)
{
    CURLU *u = px_curl.url();
    char *abs = NULL, *out = NULL;
    if (u != NULL && px_curl.url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
        px_curl.url_set(u, CURLUPART_URL, loc, 0) == CURLUE_OK &&
        px_curl.url_get(u, CURLUPART_URL, &abs, 0) == CURLUE_OK)
        out = strdup(abs);
    px_curl.free(abs);
    px_curl.url_cleanup(u);
    return out;
}

static void finish(struct px_acme_http_req *r, CURLcode result)
{
    struct px_acme_resp resp = {.status = 0};
    char *loc = NULL;
    long code = 0;
    px_curl.easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (result == CURLE_OK) {
        resp.status = code;
    } else if (r->too_big) {
        resp.error = "response larger than 1 MiB";
    } else {
        resp.error = r->errbuf[0] ? r->errbuf : px_curl.easy_strerror(result);
        resp.timed_out = result == CURLE_OPERATION_TIMEDOUT;
    }
    resp.body = r->body ? r->body : "";
    resp.body_len = r->body_len;
    resp.content_type = r->content_type;
    resp.nonce = r->nonce;
    resp.retry_after = r->retry_after;
    resp.location = r->location;
    if (r->location != NULL && strncmp(r->location, "https://", 8) != 0 && strncmp(r->location, "http://", 7) != 0)
        resp.location = loc = absolute_location(r->url, r->location);
    r->fn(r->arg, &resp);
    free(loc);
}

static void check_done(struct px_acme_http *h)
{
    CURLMsg *m;
    int left;
    while ((m = px_curl.multi_info_read(h->multi, &left)) != NULL) {
        struct px_acme_http_req *r = NULL;
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode result = m->data.result;
        px_curl.easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        /* out of the multi before the callback, which may start the next
         * request (or cancel others: their pending messages go with them) */
        px_curl.multi_remove_handle(h->multi, r->easy);
        finish(r, result);
        req_free(r);
    }
}

struct px_acme_http_req *px_acme_http_start(struct px_acme_http *h, enum px_acme_method m, const char *url,
                                            const char *body, const char *accept, px_acme_resp_fn fn, void *arg)
{
    struct px_acme_http_req *r = calloc(1, sizeof(*r));
    struct curl_slist *hl;
    if (r == NULL)
        return NULL;
    r->h = h;
    r->fn = fn;
    r->arg = arg;
    if ((r->url = strdup(url)) == NULL || (r->easy = px_curl.easy_init()) == NULL)
        goto fail;
    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;
    CURL *e = r->easy;
    px_curl.easy_setopt(e, CURLOPT_URL, r->url);
    px_curl.easy_setopt(e, CURLOPT_PRIVATE, r);
    px_curl.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    px_curl.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    px_curl.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)PX_ACME_CONNECT_TIMEOUT_MS);
    px_curl.easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)PX_ACME_REQUEST_TIMEOUT_MS);
    px_curl.easy_setopt(e, CURLOPT_USERAGENT, "proxyd/" PX_VERSION);
    px_curl.easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    px_curl.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    px_curl.easy_setopt(e, CURLOPT_WRITEDATA, r);
    px_curl.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    px_curl.easy_setopt(e, CURLOPT_HEADERDATA, r);
    if (h->ca_bundle != NULL) {
        /* only this file: not the CURL_CA_BUNDLE/SSL_CERT_FILE the
         * environment may name, nor the system's directory */
        px_curl.easy_setopt(e, CURLOPT_CAINFO, h->ca_bundle);
        px_curl.easy_setopt(e, CURLOPT_CAPATH, NULL);
    }
    if (m == PX_ACME_HEAD) {
        px_curl.easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (m == PX_ACME_POST) {
        if ((r->post = strdup(body ? body : "")) == NULL)
            goto fail;
        px_curl.easy_setopt(e, CURLOPT_POSTFIELDS, r->post);
        px_curl.easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->post));
        if ((hl = px_curl.slist_append(r->headers, "Content-Type: application/jose+json")) == NULL)
            goto fail;
        r->headers = hl;
        if ((hl = px_curl.slist_append(r->headers, "Expect:")) == NULL) /* no 100-continue round trip */
            goto fail;
        r->headers = hl;
    }
    if (accept != NULL) {
        char line[128];
        snprintf(line, sizeof(line), "Accept: %s", accept);
        if ((hl = px_curl.slist_append(r->headers, line)) == NULL)
            goto fail;
        r->headers = hl;
    }
    px_curl.easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    if (px_curl.multi_add_handle(h->multi, e) != CURLM_OK)
        goto fail;
    return r;
fail:
    req_free(r);
    return NULL;
}

void px_acme_http_cancel(struct px_acme_http_req *r)
{
    if (r != NULL)
        req_free(r);
}

/* ---- the engine ---- */

struct px_acme_http *px_acme_http_new(struct event_base *base, const char *ca_bundle, char *err, size_t errlen)
{
    struct px_acme_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->base = base;
    if ((ca_bundle != NULL && ca_bundle[0] && (h->ca_bundle = strdup(ca_bundle)) == NULL) ||
        (h->timer = evtimer_new(base, on_timer, h)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if ((h->multi = px_curl.multi_init()) == NULL) {
        snprintf(err, errlen, "curl_multi_init failed");
        goto fail;
    }
    px_curl.multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    px_curl.multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    px_curl.multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
    px_curl.multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    px_curl.multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 4L);
    return h;
fail:
    px_acme_http_free(h);
    return NULL;
}

void px_acme_http_free(struct px_acme_http *h)
{
    if (h == NULL)
        return;
    while (h->reqs != NULL)
        req_free(h->reqs);
    if (h->multi != NULL)
        px_curl.multi_cleanup(h->multi); /* closes the cached connections */
    while (h->watches != NULL)
        watch_free(h->watches);
    if (h->timer != NULL)
        event_free(h->timer);
    free(h->ca_bundle);
    free(h);
}
