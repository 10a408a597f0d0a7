/* headers.c -- the header table and the heads proxyd writes. */
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "px/common.h"
#include "px/headers.h"

static const unsigned hdr_flags[] = {
    [PX_HDR_OTHER] = 0,
    [PX_HDR_HOST] = 0,
    [PX_HDR_CONNECTION] = PX_HF_HOP,
    [PX_HDR_KEEP_ALIVE] = PX_HF_HOP,
    [PX_HDR_PROXY_CONNECTION] = PX_HF_HOP,
    [PX_HDR_PROXY_OTHER] = PX_HF_HOP,
    [PX_HDR_TE] = PX_HF_HOP,
    [PX_HDR_UPGRADE] = PX_HF_HOP,
    [PX_HDR_TRANSFER_ENCODING] = 0, /* framing is passed through verbatim */
    [PX_HDR_CONTENT_LENGTH] = 0,
    [PX_HDR_EXPECT] = 0,
    [PX_HDR_X_FORWARDED_FOR] = PX_HF_REQ_REPLACE,
    [PX_HDR_X_REAL_IP] = PX_HF_REQ_REPLACE,
    [PX_HDR_X_FORWARDED_PROTO] = PX_HF_REQ_REPLACE,
    [PX_HDR_X_FORWARDED_HOST] = PX_HF_REQ_REPLACE,
    [PX_HDR_X_REQUEST_ID] = PX_HF_REQ_REPLACE,
    [PX_HDR_X_REQUEST_START] = PX_HF_REQ_REPLACE,
};

unsigned px_hdr_flags(enum px_hdr_id id)
{
    return hdr_flags[id];
}

enum px_hdr_id px_hdr_lookup(const char *n, size_t len)
{
    switch (len) {
    case 2:
        return PX_IEQ_LIT(n, len, "te") ? PX_HDR_TE : PX_HDR_OTHER;
    case 4:
        return PX_IEQ_LIT(n, len, "host") ? PX_HDR_HOST : PX_HDR_OTHER;
    case 6:
        return PX_IEQ_LIT(n, len, "expect") ? PX_HDR_EXPECT : PX_HDR_OTHER;
    case 7:
        return PX_IEQ_LIT(n, len, "upgrade") ? PX_HDR_UPGRADE : PX_HDR_OTHER;
    case 9:
        return PX_IEQ_LIT(n, len, "x-real-ip") ? PX_HDR_X_REAL_IP : PX_HDR_OTHER;
    case 10:
        if (PX_IEQ_LIT(n, len, "connection"))
            return PX_HDR_CONNECTION;
        if (PX_IEQ_LIT(n, len, "keep-alive"))
            return PX_HDR_KEEP_ALIVE;
        break;
    case 12:
        if (PX_IEQ_LIT(n, len, "x-request-id"))
            return PX_HDR_X_REQUEST_ID;
        break;
    case 14:
        if (PX_IEQ_LIT(n, len, "content-length"))
            return PX_HDR_CONTENT_LENGTH;
        break;
    case 15:
        if (PX_IEQ_LIT(n, len, "x-forwarded-for"))
            return PX_HDR_X_FORWARDED_FOR;
        if (PX_IEQ_LIT(n, len, "x-request-start"))
            return PX_HDR_X_REQUEST_START;
        break;
    case 16:
        if (PX_IEQ_LIT(n, len, "proxy-connection"))
            return PX_HDR_PROXY_CONNECTION;
        if (PX_IEQ_LIT(n, len, "x-forwarded-host"))
            return PX_HDR_X_FORWARDED_HOST;
        break;
    case 17:
        if (PX_IEQ_LIT(n, len, "transfer-encoding"))
            return PX_HDR_TRANSFER_ENCODING;
        if (PX_IEQ_LIT(n, len, "x-forwarded-proto"))
            return PX_HDR_X_FORWARDED_PROTO;
        break;
    default:
        break;
    }
    if (len > 6 && PX_IEQ_LIT(n, 6, "proxy-"))
        return PX_HDR_PROXY_OTHER;
    return PX_HDR_OTHER;
}

/* Field names listed in Connection headers (other than the three known
 * options) are hop-by-hop too (RFC 9110 7.6.1). */
struct conn_tokens {
    struct px_slice t[16];
    size_t n;
};

static void conn_tokens_collect(struct conn_tokens *ct, const struct px_h1_header *h, size_t nh)
{
    ct->n = 0;
    for (size_t i = 0; i < nh; i++) {
        if (h[i].name_len != 10 || !PX_IEQ_LIT(h[i].name, 10, "connection"))
            continue;
        const char *p = h[i].value, *end = p + h[i].value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *s = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            size_t n = (size_t)(p - s);
            if (n == 0 || PX_IEQ_LIT(s, n, "close") || PX_IEQ_LIT(s, n, "keep-alive") ||
                PX_IEQ_LIT(s, n, "upgrade"))
                continue;
            if (ct->n < PX_ARRAY_LEN(ct->t))
                ct->t[ct->n++] = (struct px_slice){s, n};
        }
    }
}

static int conn_tokens_has(const struct conn_tokens *ct, const char *name, size_t len)
{
    for (size_t i = 0; i < ct->n; i++) {
        if (ct->t[i].n != len)
            continue;
        size_t j = 0;
        for (; j < len; j++) {
            unsigned char a = (unsigned char)name[j], b = (unsigned char)ct->t[i].p[j];
            if (a >= 'A' && a <= 'Z')
                a = (unsigned char)(a + 32);
            if (b >= 'A' && b <= 'Z')
                b = (unsigned char)(b + 32);
            if (a != b)
                break;
        }
        if (j == len)
            return 1;
    }
    return 0;
}

#define PUT(p, s, n) \
    do { \
        memcpy((p), (s), (n)); \
        (p) += (n); \
    } while (0)
#define PUTL(p, lit) PUT(p, lit, sizeof(lit) - 1)

static char *put_header(char *p, const struct px_h1_header *h)
{
    PUT(p, h->name, h->name_len);
    *p++ = ':';
    *p++ = ' ';
    PUT(p, h->value, h->value_len);
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (i)
        *p++ = tmp[--i];
    return p;
}

int px_h1_write_request_head(struct evbuffer *out, const struct px_req_head *r, size_t head_len,
                             const struct px_fwd *f)
{
    /* A Host-less request (HTTP/1.0) gets nginx's default, $proxy_host: the
     * address of the target it goes to. An empty Host is what upstream
     * frameworks reject, and the service's host names are no alternative: a
     * request without Host can only have matched a catch-all service, which
     * has none. */
    const char *dflt = r->host == NULL ? f->default_host : NULL;
    size_t dflt_len = dflt ? strlen(dflt) : 0;
    size_t bound = head_len + r->target_len + r->host_len * 2 + dflt_len + f->xff_len + f->peer_ip_len +
                   f->client_ip_len + f->request_id_len + f->loop_len + 512;
    for (size_t i = 0; i < f->nset; i++)
        bound += f->set[i].name_len + f->set[i].value_len + 4;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)bound, &v, 1) < 1)
        return -1;
    char *p = v.iov_base;
    struct conn_tokens ct;
    conn_tokens_collect(&ct, r->headers, r->nheaders);
    int absolute = r->path != r->target; /* absolute-form: Host comes from the authority */

    PUT(p, r->method, r->method_len);
    *p++ = ' ';
    if (PX_UNLIKELY(f->strip != 0) && f->strip <= r->path_len) {
        /* strip_path_prefix: "/app/x?q" -> "/x?q", "/app" -> "/" */
        if (f->strip == r->path_len || r->path[f->strip] != '/')
            *p++ = '/';
        PUT(p, r->path + f->strip, r->path_len - f->strip);
    } else {
        PUT(p, r->path, r->path_len);
    }
    PUTL(p, " HTTP/1.1\r\n");
    if (absolute || r->host == NULL) {
        PUTL(p, "Host: ");
        if (r->host)
            PUT(p, r->host, r->host_len);
        else if (dflt)
            PUT(p, dflt, dflt_len);
        PUTL(p, "\r\n");
    }
    int seen_cl = 0, fwd_proto = 0, fwd_host = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct px_h1_header *h = &r->headers[i];
        enum px_hdr_id id = px_hdr_lookup(h->name, h->name_len);
        switch (id) {
        case PX_HDR_X_FORWARDED_PROTO:
        case PX_HDR_X_FORWARDED_HOST:
            if (!f->forward_headers) /* replaced by ours */
                continue;
            fwd_proto |= id == PX_HDR_X_FORWARDED_PROTO;
            fwd_host |= id == PX_HDR_X_FORWARDED_HOST;
            break;
        case PX_HDR_HOST:
            if (absolute)
                continue;
            break;
        case PX_HDR_UPGRADE:
            if (!f->websocket)
                continue;
            break;
        case PX_HDR_EXPECT:
            if (f->strip_expect)
                continue;
            break;
        case PX_HDR_CONTENT_LENGTH:
            if (seen_cl++ || f->set_length)
                continue;
            break;
        case PX_HDR_TRANSFER_ENCODING:
            if (f->set_length)
                continue;
            break;
        case PX_HDR_OTHER:
            if (ct.n && conn_tokens_has(&ct, h->name, h->name_len))
                continue;
            if (f->nset && px_hdr_add_find(f->set, f->nset, h->name, h->name_len) >= 0)
                continue; /* replaced below, or removed */
            break;
        default:
            if (hdr_flags[id] & (PX_HF_HOP | PX_HF_REQ_REPLACE))
                continue;
            break;
        }
        p = put_header(p, h);
    }
    if (f->set_length) {
        PUTL(p, "Content-Length: ");
        p = put_u64(p, f->body_length);
        PUTL(p, "\r\n");
    }
    PUTL(p, "X-Forwarded-For: ");
    if (f->xff) {
        PUT(p, f->xff, f->xff_len);
        PUTL(p, ", ");
    }
    PUT(p, f->peer_ip, f->peer_ip_len);
    PUTL(p, "\r\nX-Real-IP: ");
    PUT(p, f->client_ip, f->client_ip_len);
    if (!fwd_proto) {
        PUTL(p, "\r\nX-Forwarded-Proto: ");
        PUT(p, f->proto, strlen(f->proto));
    }
    if (r->host && !fwd_host) {
        PUTL(p, "\r\nX-Forwarded-Host: ");
        PUT(p, r->host, r->host_len);
    }
    PUTL(p, "\r\nX-Request-ID: ");
    PUT(p, f->request_id, f->request_id_len);
    PUTL(p, "\r\nX-Request-Start: t=");
    p = put_u64(p, f->start_ms);
    if (f->loop) {
        /* a line of its own: the client's CDN-Loop lines went before it,
         * unchanged, and the list reads as one (RFC 9110 5.3) */
        PUTL(p, "\r\nCDN-Loop: ");
        PUT(p, f->loop, f->loop_len);
    }
    if (f->websocket)
        PUTL(p, "\r\nConnection: upgrade");
    for (size_t i = 0; i < f->nset; i++) {
        const struct px_hdr_add *a = &f->set[i];
        if (a->remove)
            continue;
        PUTL(p, "\r\n");
        PUT(p, a->name, a->name_len);
        *p++ = ':';
        *p++ = ' ';
        PUT(p, a->value, a->value_len);
    }
    PUTL(p, "\r\n\r\n");
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    return evbuffer_commit_space(out, &v, 1);
}

static const struct {
    int status;
    const char *reason;
} reasons[] = {
    {100, "Continue"}, {101, "Switching Protocols"}, {200, "OK"}, {201, "Created"},
    {202, "Accepted"}, {204, "No Content"}, {206, "Partial Content"},
    {301, "Moved Permanently"}, {302, "Found"}, {303, "See Other"}, {304, "Not Modified"},
    {307, "Temporary Redirect"}, {308, "Permanent Redirect"}, {400, "Bad Request"},
    {401, "Unauthorized"}, {403, "Forbidden"}, {404, "Not Found"}, {405, "Method Not Allowed"},
    {408, "Request Timeout"}, {411, "Length Required"}, {413, "Content Too Large"},
    {414, "URI Too Long"}, {417, "Expectation Failed"}, {421, "Misdirected Request"},
    {429, "Too Many Requests"}, {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"}, {501, "Not Implemented"}, {502, "Bad Gateway"},
    {503, "Service Unavailable"}, {504, "Gateway Timeout"}, {505, "HTTP Version Not Supported"},
    {508, "Loop Detected"},
};

const char *px_status_reason(int status)
{
    for (size_t i = 0; i < PX_ARRAY_LEN(reasons); i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    return "Unknown";
}

static char *put_status_line(char *p, int status, const char *reason, size_t reason_len)
{
    PUTL(p, "HTTP/1.1 ");
    *p++ = (char)('0' + status / 100);
    *p++ = (char)('0' + status / 10 % 10);
    *p++ = (char)('0' + status % 10);
    *p++ = ' ';
    if (reason_len == 0) {
        reason = px_status_reason(status);
        reason_len = strlen(reason);
    }
    PUT(p, reason, reason_len);
    PUTL(p, "\r\n");
    return p;
}

void px_http_date(int64_t t, char *out)
{
    static const char days[7][4] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"}; /* 1970-01-01: Thu */
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (t < 0)
        t = 0;
    int64_t days_since = t / 86400, sod = t % 86400;
    /* civil_from_days (H. Hinnant): the proleptic Gregorian date */
    int64_t z = days_since + 719468, era = z / 146097, doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9, y = yoe + era * 400 + (m <= 2);
    if (y > 9999)
        y = 9999;
    char *p = out;
    memcpy(p, days[days_since % 7], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    *p++ = (char)('0' + d / 10);
    *p++ = (char)('0' + d % 10);
    *p++ = ' ';
    memcpy(p, months[m - 1], 3);
    p += 3;
    *p++ = ' ';
    *p++ = (char)('0' + y / 1000);
    *p++ = (char)('0' + y / 100 % 10);
    *p++ = (char)('0' + y / 10 % 10);
    *p++ = (char)('0' + y % 10);
    *p++ = ' ';
    int64_t hms[3] = {sod / 3600, sod / 60 % 60, sod % 60};
    for (int i = 0; i < 3; i++) {
        *p++ = (char)('0' + hms[i] / 10);
        *p++ = (char)('0' + hms[i] % 10);
        *p++ = i < 2 ? ':' : ' ';
    }
    memcpy(p, "GMT", 4);
}

static char *put_date(char *p, const char *date)
{
    PUTL(p, "Date: ");
    PUT(p, date, PX_HTTP_DATE_LEN);
    PUTL(p, "\r\n");
    return p;
}

int px_hdr_add_find(const struct px_hdr_add *add, size_t nadd, const char *name, size_t len)
{
    for (size_t j = 0; j < nadd; j++)
        if (add[j].name_len == len && strncasecmp(add[j].name, name, len) == 0)
            return (int)j;
    return -1;
}

static size_t add_bound(const struct px_resp_opts *o)
{
    size_t n = 0;
    for (size_t i = 0; i < o->nadd; i++)
        n += o->add[i].name_len + o->add[i].value_len + 4;
    return n;
}

static char *put_adds(char *p, const struct px_resp_opts *o, uint64_t present)
{
    for (size_t i = 0; i < o->nadd; i++) {
        const struct px_hdr_add *a = &o->add[i];
        if ((present >> i & 1) || a->remove || (a->https_only && !o->is_https))
            continue;
        PUT(p, a->name, a->name_len);
        *p++ = ':';
        *p++ = ' ';
        PUT(p, a->value, a->value_len);
        *p++ = '\r';
        *p++ = '\n';
    }
    return p;
}

static char *put_connection(char *p, const struct px_resp_opts *o)
{
    if (o->upgrade)
        PUTL(p, "Connection: upgrade\r\n");
    else if (!o->keep_alive)
        PUTL(p, "Connection: close\r\n");
    else if (o->client_minor == 0)
        PUTL(p, "Connection: keep-alive\r\n");
    return p;
}

int px_h1_write_response_head(struct evbuffer *out, const struct px_h1_response *resp, size_t head_len,
                              const struct px_resp_opts *o)
{
    size_t bound = head_len + add_bound(o) + 128 + 64; /* 64: a Date line */
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)bound, &v, 1) < 1)
        return -1;
    char *p = v.iov_base;
    struct conn_tokens ct;
    conn_tokens_collect(&ct, resp->headers, resp->nheaders);
    uint64_t present = 0;
    int has_date = 0;

    p = put_status_line(p, resp->status, resp->reason, resp->reason_len);
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct px_h1_header *h = &resp->headers[i];
        enum px_hdr_id id = px_hdr_lookup(h->name, h->name_len);
        if (id == PX_HDR_UPGRADE) {
            if (!o->upgrade)
                continue;
        } else if (id == PX_HDR_TRANSFER_ENCODING) {
            if (o->strip_te)
                continue;
        } else if (hdr_flags[id] & PX_HF_HOP) {
            continue;
        } else if (id == PX_HDR_OTHER) {
            if (ct.n && conn_tokens_has(&ct, h->name, h->name_len))
                continue;
            if (h->name_len == 4 && PX_IEQ_LIT(h->name, 4, "date"))
                has_date = 1;
            int j = px_hdr_add_find(o->add, o->nadd, h->name, h->name_len);
            if (j >= 0) {
                if (o->add[j].remove)
                    continue; /* "-X-Powered-By =" */
                present |= (uint64_t)1 << j;
            }
        }
        p = put_header(p, h);
    }
    if (!has_date && o->date) /* RFC 9110 6.6.1: a recipient with a clock adds the one missing */
        p = put_date(p, o->date);
    p = put_adds(p, o, present);
    p = put_connection(p, o);
    PUTL(p, "\r\n");
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    return evbuffer_commit_space(out, &v, 1);
}

int px_h1_write_local_response(struct evbuffer *out, int status, const char *body, size_t body_len,
                               int omit_body, const struct px_resp_opts *o, const char *extra,
                               size_t extra_len)
{
    size_t bound = add_bound(o) + 256 + 64 + extra_len + (omit_body ? 0 : body_len);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)bound, &v, 1) < 1)
        return -1;
    char *p = v.iov_base;
    p = put_status_line(p, status, NULL, 0);
    if (o->date)
        p = put_date(p, o->date);
    if (o->html)
        PUTL(p, "Server: proxyd\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ");
    else
        PUTL(p, "Server: proxyd\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ");
    p = put_u64(p, body_len);
    PUTL(p, "\r\n");
    if (extra_len)
        PUT(p, extra, extra_len);
    p = put_adds(p, o, 0);
    p = put_connection(p, o);
    PUTL(p, "\r\n");
    if (!omit_body && body_len)
        PUT(p, body, body_len);
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    return evbuffer_commit_space(out, &v, 1);
}

/* ---- the CDN-Loop token ---- */

static char loop_token[24];
static size_t loop_token_len;
static pthread_once_t loop_once = PTHREAD_ONCE_INIT;

static void loop_token_make(void)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t x;
    /* random, so that two proxyd on one host (or a chain through another
     * proxy) tell their tokens apart; the clock and the address space only
     * if the kernel has no entropy yet: it need not be secret */
    if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != (ssize_t)sizeof(x)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ (uint64_t)(uintptr_t)&x;
        x ^= x >> 31;
        x *= 0x9e3779b97f4a7c15u;
    }
    memcpy(loop_token, "proxyd-", 7);
    for (int i = 0; i < 16; i++)
        loop_token[7 + i] = hex[(x >> (60 - 4 * i)) & 15];
    loop_token[23] = '\0';
    loop_token_len = 23;
}

const char *px_loop_token(size_t *len)
{
    pthread_once(&loop_once, loop_token_make);
    *len = loop_token_len;
    return loop_token;
}
