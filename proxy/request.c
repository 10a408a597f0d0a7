/* request.c -- what every request does regardless of the client protocol:
 * its id, its client address, its access-log line. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "px/addr.h"
#include "px/common.h"
#include "px/config.h"
#include "px/log.h"
#include "px/request.h"
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

static int path_is(const struct px_h1_request *q, const char *p, int prefix)
{
    size_t n = strlen(p);
    if (q->path_len < n || memcmp(q->path, p, n) != 0)
        return 0;
    return prefix || q->path_len == n || q->path[n] == '?';
}

void px_req_decide(struct px_req *r, const struct px_config *cfg, const struct px_h1_request *q, int tls,
                   struct px_decision *d)
{
    memset(d, 0, sizeof(*d));
    d->act = PX_ACT_LOCAL;
    if (cfg->health_path[0] && (r->method == PX_METHOD_GET || r->method == PX_METHOD_HEAD) &&
        path_is(q, cfg->health_path, 0)) {
        d->status = 200;
        d->body = "healthy\n";
        d->body_len = 8;
        return;
    }
    if (!tls && path_is(q, "/.well-known/acme-challenge/", 1)) {
        d->status = 404; /* answered from the ACME client's tokens once it lands */
        return;
    }
    if (!tls && cfg->redirect_https && cfg->has_listen_https) {
        d->act = PX_ACT_REDIRECT;
        return;
    }
    if (q->content_length > 0 && cfg->max_body_size && (uint64_t)q->content_length > cfg->max_body_size) {
        d->status = 413;
        return;
    }
    r->svc = px_routes_match(r->routes, q->host, q->host ? q->host_len : 0, q->path, q->path_len);
    if (r->svc == NULL) {
        d->status = 404;
        return;
    }
    if (r->svc->state == PX_SVC_STOPPED) {
        d->status = 503;
        d->body = r->svc->stop_message;
        d->body_len = d->body ? strlen(d->body) : 0;
        return;
    }
    d->act = PX_ACT_PROXY;
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

/* JSON string body: escape quote, backslash, control bytes and non-ASCII
 * bytes (\u00XX keeps the line valid UTF-8 whatever the client sent). */
static char *json_str(char *p, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            memcpy(p, "\\u00", 4);
            p += 4;
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    return p;
}

void px_req_log(const struct px_req *r, const struct px_log_fields *f)
{
    struct px_worker *w = r->w;
    if (!px_log_access_enabled())
        return;
    time_t sec = (time_t)(r->start_wall_ms / 1000);
    if (sec != w->log_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(w->log_time, sizeof(w->log_time), "%Y-%m-%dT%H:%M:%S", &tm);
        w->log_sec = sec;
    }
    const char *svc = r->svc ? r->svc->name : "";
    const char *up = r->target ? r->target->addr.text : "";
    size_t bound = 400 + 6 * (f->client_len + f->method_len + f->host_len + f->path_len + strlen(svc) +
                              strlen(up) + r->request_id_len);
    char stackbuf[2048];
    char *buf = stackbuf;
    struct evbuffer_iovec v;
    if (bound > sizeof(stackbuf)) {
        if (evbuffer_reserve_space(w->access_buf, (ev_ssize_t)bound, &v, 1) < 1)
            return;
        buf = v.iov_base;
    }
    char *p = buf;
    uint64_t dur = px_now_us() - r->start_us;
    p += sprintf(p, "{\"time\":\"%s.%03uZ\",\"client\":", w->log_time, (unsigned)(r->start_wall_ms % 1000));
    p = json_str(p, f->client, f->client_len);
    memcpy(p, ",\"method\":", 10);
    p = json_str(p + 10, f->method, f->method_len);
    memcpy(p, ",\"host\":", 8);
    p = json_str(p + 8, f->host, f->host_len);
    memcpy(p, ",\"path\":", 8);
    p = json_str(p + 8, f->path, f->path_len);
    p += sprintf(p, ",\"status\":%d,\"bytes_out\":%" PRIu64 ",\"duration_ms\":%" PRIu64 ".%03u,\"service\":",
                 r->status, r->bytes_out, dur / 1000, (unsigned)(dur % 1000));
    p = json_str(p, svc, strlen(svc));
    memcpy(p, ",\"upstream\":", 12);
    p = json_str(p + 12, up, strlen(up));
    memcpy(p, ",\"request_id\":", 14);
    p = json_str(p + 14, r->request_id, r->request_id_len);
    p += sprintf(p, ",\"proto\":\"%s\",\"tls\":%s}\n", f->proto, f->tls ? "true" : "false");
    if (buf == stackbuf) {
        px_worker_access_log(w, buf, (size_t)(p - buf));
    } else {
        v.iov_len = (size_t)(p - buf);
        evbuffer_commit_space(w->access_buf, &v, 1);
        px_worker_access_log(w, "", 0);
    }
}
