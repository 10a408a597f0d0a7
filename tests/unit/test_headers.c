/* Unit tests: header table and the heads proxyd writes (exact bytes). */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "px/headers.h"
#include "px/http1.h"
#include "unit.h"

static char *drain_str(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static void test_lookup(void)
{
    CHECK_INT(px_hdr_lookup("Connection", 10), PX_HDR_CONNECTION);
    CHECK_INT(px_hdr_lookup("KEEP-ALIVE", 10), PX_HDR_KEEP_ALIVE);
    CHECK_INT(px_hdr_lookup("te", 2), PX_HDR_TE);
    CHECK_INT(px_hdr_lookup("Proxy-Authorization", 19), PX_HDR_PROXY_OTHER);
    CHECK_INT(px_hdr_lookup("Proxy-Connection", 16), PX_HDR_PROXY_CONNECTION);
    CHECK_INT(px_hdr_lookup("X-Forwarded-For", 15), PX_HDR_X_FORWARDED_FOR);
    CHECK_INT(px_hdr_lookup("X-Request-Id", 12), PX_HDR_X_REQUEST_ID);
    CHECK_INT(px_hdr_lookup("Hostx", 5), PX_HDR_OTHER);
    CHECK_INT(px_hdr_lookup("Proxy-", 6), PX_HDR_OTHER);
    CHECK(px_hdr_flags(PX_HDR_UPGRADE) & PX_HF_HOP);
    CHECK(!(px_hdr_flags(PX_HDR_HOST) & PX_HF_HOP));
}

static struct px_fwd fwd(void)
{
    struct px_fwd f = {
        .client_ip = "10.1.2.3", .client_ip_len = 8,
        .peer_ip = "127.0.0.1", .peer_ip_len = 9,
        .proto = "http",
        .request_id = "abc", .request_id_len = 3,
        .start_ms = 1700000000123ull,
        .strip_expect = 1,
    };
    return f;
}

static void test_request_head(void)
{
    const char *in = "POST /p?a=%20b&c=d;e HTTP/1.1\r\n"
                     "Host: example.com\r\n"
                     "Connection: keep-alive, X-Secret\r\n"
                     "X-Secret: 1\r\n"
                     "Keep-Alive: timeout=5\r\n"
                     "TE: trailers\r\n"
                     "Proxy-Authorization: Basic x\r\n"
                     "Upgrade: h2c\r\n"
                     "X-Forwarded-For: 6.6.6.6\r\n"
                     "X-Real-IP: 6.6.6.6\r\n"
                     "X-Request-ID: zzz\r\n"
                     "Expect: 100-continue\r\n"
                     "Content-Length: 3\r\n"
                     "Accept: */*\r\n\r\n";
    struct px_req_head r;
    int n = px_h1_parse_request(in, strlen(in), &r);
    CHECK_INT(n, (int)strlen(in));
    struct evbuffer *b = evbuffer_new();
    struct px_fwd f = fwd();
    CHECK_INT(px_h1_write_request_head(b, &r, (size_t)n, &f), 0);
    char *out = drain_str(b);
    CHECK_STR(out, "POST /p?a=%20b&c=d;e HTTP/1.1\r\n"
                   "Host: example.com\r\n"
                   "Content-Length: 3\r\n"
                   "Accept: */*\r\n"
                   "X-Forwarded-For: 127.0.0.1\r\n"
                   "X-Real-IP: 10.1.2.3\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: example.com\r\n"
                   "X-Request-ID: abc\r\n"
                   "X-Request-Start: t=1700000000123\r\n\r\n");
    free(out);
    evbuffer_free(b);
}

/* The loop token goes last, as a line of its own after the client's
 * CDN-Loop lines (which pass unchanged). */
static void test_request_head_loop_token(void)
{
    const char *in = "GET / HTTP/1.1\r\nHost: a\r\nCDN-Loop: cloudflare\r\n\r\n";
    struct px_req_head r;
    int n = px_h1_parse_request(in, strlen(in), &r);
    CHECK_INT(n, (int)strlen(in));
    struct evbuffer *b = evbuffer_new();
    struct px_fwd f = fwd();
    f.loop = "proxyd-0123456789abcdef";
    f.loop_len = 23;
    CHECK_INT(px_h1_write_request_head(b, &r, (size_t)n, &f), 0);
    char *out = drain_str(b);
    CHECK_STR(out, "GET / HTTP/1.1\r\n"
                   "Host: a\r\n"
                   "CDN-Loop: cloudflare\r\n"
                   "X-Forwarded-For: 127.0.0.1\r\n"
                   "X-Real-IP: 10.1.2.3\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: a\r\n"
                   "X-Request-ID: abc\r\n"
                   "X-Request-Start: t=1700000000123\r\n"
                   "CDN-Loop: proxyd-0123456789abcdef\r\n\r\n");
    free(out);
    evbuffer_free(b);
}

/* HTTP/1.0 without Host: the upstream gets the target's address, never an
 * empty Host (issue 6 r5b); with a Host, default_host changes nothing. */
static void test_request_head_default_host(void)
{
    const char *in = "GET /a HTTP/1.0\r\nAccept: */*\r\n\r\n";
    struct px_req_head r;
    int n = px_h1_parse_request(in, strlen(in), &r);
    CHECK_INT(n, (int)strlen(in));
    struct evbuffer *b = evbuffer_new();
    struct px_fwd f = fwd();
    f.default_host = "10.0.0.7:3000";
    CHECK_INT(px_h1_write_request_head(b, &r, (size_t)n, &f), 0);
    char *out = drain_str(b);
    CHECK_STR(out, "GET /a HTTP/1.1\r\n"
                   "Host: 10.0.0.7:3000\r\n"
                   "Accept: */*\r\n"
                   "X-Forwarded-For: 127.0.0.1\r\n"
                   "X-Real-IP: 10.1.2.3\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Request-ID: abc\r\n"
                   "X-Request-Start: t=1700000000123\r\n\r\n");
    free(out);

    in = "GET /a HTTP/1.0\r\nHost: h.test\r\n\r\n";
    n = px_h1_parse_request(in, strlen(in), &r);
    CHECK_INT(n, (int)strlen(in));
    CHECK_INT(px_h1_write_request_head(b, &r, (size_t)n, &f), 0);
    out = drain_str(b);
    static const char want[] = "GET /a HTTP/1.1\r\nHost: h.test\r\nX-Forwarded-For: ";
    CHECK(strncmp(out, want, sizeof(want) - 1) == 0);
    CHECK(strstr(out, "10.0.0.7") == NULL);
    free(out);
    evbuffer_free(b);
}

static void test_request_head_trusted_ws_absolute(void)
{
    const char *in = "GET http://Example.com:8080/ws?x HTTP/1.1\r\n"
                     "Host: ignored.test\r\n"
                     "Connection: Upgrade\r\n"
                     "Upgrade: websocket\r\n"
                     "Sec-WebSocket-Key: k\r\n\r\n";
    struct px_req_head r;
    int n = px_h1_parse_request(in, strlen(in), &r);
    CHECK_INT(n, (int)strlen(in));
    struct evbuffer *b = evbuffer_new();
    struct px_fwd f = fwd();
    f.xff = "1.1.1.1, 10.1.2.3";
    f.xff_len = strlen(f.xff);
    f.websocket = 1;
    CHECK_INT(px_h1_write_request_head(b, &r, (size_t)n, &f), 0);
    char *out = drain_str(b);
    CHECK_STR(out, "GET /ws?x HTTP/1.1\r\n"
                   "Host: Example.com:8080\r\n"
                   "Upgrade: websocket\r\n"
                   "Sec-WebSocket-Key: k\r\n"
                   "X-Forwarded-For: 1.1.1.1, 10.1.2.3, 127.0.0.1\r\n"
                   "X-Real-IP: 10.1.2.3\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: Example.com:8080\r\n"
                   "X-Request-ID: abc\r\n"
                   "X-Request-Start: t=1700000000123\r\n"
                   "Connection: upgrade\r\n\r\n");
    free(out);
    evbuffer_free(b);
}

static const struct px_hdr_add adds[] = {
    {"Strict-Transport-Security", 25, "max-age=1", 9, 1, 0, NULL},
    {"X-Frame-Options", 15, "DENY", 4, 0, 0, NULL},
    {"X-Content-Type-Options", 22, "nosniff", 7, 0, 0, NULL},
};

static void test_response_head(void)
{
    const char *in = "HTTP/1.1 200 OK\r\n"
                     "Content-Type: text/html\r\n"
                     "Connection: keep-alive, X-Hop\r\n"
                     "X-Hop: 1\r\n"
                     "Keep-Alive: timeout=5\r\n"
                     "x-frame-options: SAMEORIGIN\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n";
    struct px_h1_response resp;
    int n = px_h1_parse_response(in, strlen(in), &resp);
    CHECK_INT(n, (int)strlen(in));
    struct evbuffer *b = evbuffer_new();
    struct px_resp_opts o = {.client_minor = 1, .keep_alive = 1, .add = adds, .nadd = 3};
    CHECK_INT(px_h1_write_response_head(b, &resp, (size_t)n, &o), 0);
    char *out = drain_str(b);
    CHECK_STR(out, "HTTP/1.1 200 OK\r\n"
                   "Content-Type: text/html\r\n"
                   "x-frame-options: SAMEORIGIN\r\n"
                   "Transfer-Encoding: chunked\r\n"
                   "X-Content-Type-Options: nosniff\r\n\r\n");
    free(out);
    /* HTTP/1.0 client, de-chunked, over HTTPS, closing */
    struct px_resp_opts o2 = {.client_minor = 0, .keep_alive = 0, .strip_te = 1, .is_https = 1,
                              .add = adds, .nadd = 3};
    CHECK_INT(px_h1_write_response_head(b, &resp, (size_t)n, &o2), 0);
    out = drain_str(b);
    CHECK_STR(out, "HTTP/1.1 200 OK\r\n"
                   "Content-Type: text/html\r\n"
                   "x-frame-options: SAMEORIGIN\r\n"
                   "Strict-Transport-Security: max-age=1\r\n"
                   "X-Content-Type-Options: nosniff\r\n"
                   "Connection: close\r\n\r\n");
    free(out);
    evbuffer_free(b);
}

static void test_local_response(void)
{
    struct evbuffer *b = evbuffer_new();
    struct px_resp_opts o = {.client_minor = 0, .keep_alive = 1, .add = adds + 1, .nadd = 1};
    px_h1_write_local_response(b, 404, "404 Not Found\n", 14, 0, &o, NULL, 0);
    char *out = drain_str(b);
    CHECK_STR(out, "HTTP/1.1 404 Not Found\r\nServer: proxyd\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n"
                   "X-Frame-Options: DENY\r\nConnection: keep-alive\r\n\r\n404 Not Found\n");
    free(out);
    px_h1_write_local_response(b, 200, "healthy\n", 8, 1, &o, "Location: /x\r\n", 14);
    CHECK(strstr(out = drain_str(b), "Content-Length: 8\r\nLocation: /x\r\nX-Frame-Options") != NULL);
    free(out);
    px_h1_write_local_response(b, 200, "healthy\n", 8, 1, &o, NULL, 0);
    out = drain_str(b);
    CHECK(strstr(out, "Content-Length: 8\r\n") != NULL);
    CHECK(strstr(out, "healthy") == NULL);
    free(out);
    CHECK_STR(px_status_reason(431), "Request Header Fields Too Large");
    evbuffer_free(b);
}

/* IMF-fixdate without locale or libc time formatting. */
static void test_http_date(void)
{
    char d[PX_HTTP_DATE_LEN + 1];
    px_http_date(784111777, d);                 /* RFC 9110's example */
    CHECK_STR(d, "Sun, 06 Nov 1994 08:49:37 GMT");
    px_http_date(0, d);
    CHECK_STR(d, "Thu, 01 Jan 1970 00:00:00 GMT");
    px_http_date(951782400, d);                 /* a leap day */
    CHECK_STR(d, "Tue, 29 Feb 2000 00:00:00 GMT");
    px_http_date(1798761599, d);
    CHECK_STR(d, "Thu, 31 Dec 2026 23:59:59 GMT");
    CHECK_INT(strlen(d), PX_HTTP_DATE_LEN);
}

/* proxyd's own responses carry Date; an upstream response keeps its own
 * Date and gets proxyd's only when it has none (RFC 9110 6.6.1). */
static void test_date_lines(void)
{
    static const char date[] = "Sun, 06 Nov 1994 08:49:37 GMT";
    struct evbuffer *b = evbuffer_new();
    struct px_resp_opts o = {.client_minor = 1, .keep_alive = 1, .date = date};
    CHECK_INT(px_h1_write_local_response(b, 429, NULL, 0, 0, &o, "Retry-After: 1\r\n", 16), 0);
    char *out = drain_str(b);
    CHECK_STR(out, "HTTP/1.1 429 Too Many Requests\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nServer: proxyd\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n");
    free(out);
    const char *with = "HTTP/1.1 200 OK\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n";
    const char *without = "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n";
    struct px_h1_response resp;
    int n = px_h1_parse_response(with, strlen(with), &resp);
    CHECK_INT(px_h1_write_response_head(b, &resp, (size_t)n, &o), 0);
    out = drain_str(b);
    CHECK_STR(out, with);
    free(out);
    n = px_h1_parse_response(without, strlen(without), &resp);
    CHECK_INT(px_h1_write_response_head(b, &resp, (size_t)n, &o), 0);
    out = drain_str(b);
    CHECK_STR(out, "HTTP/1.1 204 No Content\r\nX-A: 1\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n");
    free(out);
    CHECK_STR(px_status_reason(508), "Loop Detected");
    evbuffer_free(b);
}

/* request_headers: a set header replaces the client's (any case), a
 * removal drops it; the rest passes. "-X-Powered-By =": the upstream's
 * header is dropped and never added, on proxyd's own responses too. */
static void test_set_and_remove(void)
{
    static const struct px_hdr_add set[] = {
        {"X-Api-Gateway", 13, "proxyd", 6, 0, 0, NULL},
        {"Cookie", 6, "", 0, 0, 1, NULL},
    };
    const char *in = "GET /api HTTP/1.1\r\nHost: a\r\nx-api-gateway: evil\r\nCookie: s=1\r\nAccept: */*\r\n\r\n";
    struct px_req_head r;
    int n = px_h1_parse_request(in, strlen(in), &r);
    CHECK_INT(n, (int)strlen(in));
    struct evbuffer *b = evbuffer_new();
    struct px_fwd f = fwd();
    f.set = set;
    f.nset = 2;
    CHECK_INT(px_h1_write_request_head(b, &r, (size_t)n, &f), 0);
    char *out = drain_str(b);
    CHECK_STR(out, "GET /api HTTP/1.1\r\n"
                   "Host: a\r\n"
                   "Accept: */*\r\n"
                   "X-Forwarded-For: 127.0.0.1\r\n"
                   "X-Real-IP: 10.1.2.3\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: a\r\n"
                   "X-Request-ID: abc\r\n"
                   "X-Request-Start: t=1700000000123\r\n"
                   "X-Api-Gateway: proxyd\r\n\r\n");
    free(out);

    static const struct px_hdr_add hide[] = {
        {"X-Frame-Options", 15, "DENY", 4, 0, 0, NULL},
        {"X-Powered-By", 12, "", 0, 0, 1, NULL},
    };
    const char *resp_in = "HTTP/1.1 200 OK\r\nx-powered-by: Next.js\r\nContent-Length: 0\r\n\r\n";
    struct px_h1_response resp;
    n = px_h1_parse_response(resp_in, strlen(resp_in), &resp);
    CHECK_INT(n, (int)strlen(resp_in));
    struct px_resp_opts o = {.client_minor = 1, .keep_alive = 1, .add = hide, .nadd = 2};
    CHECK_INT(px_h1_write_response_head(b, &resp, (size_t)n, &o), 0);
    out = drain_str(b);
    CHECK_STR(out, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Frame-Options: DENY\r\n\r\n");
    free(out);
    px_h1_write_local_response(b, 404, "x", 1, 0, &o, NULL, 0);
    out = drain_str(b);
    CHECK(strstr(out, "X-Frame-Options: DENY\r\n") != NULL);
    CHECK(strstr(out, "X-Powered-By") == NULL);
    free(out);
    evbuffer_free(b);
}

int main(void)
{
    UNIT_RUN(test_set_and_remove);
    UNIT_RUN(test_lookup);
    UNIT_RUN(test_request_head);
    UNIT_RUN(test_request_head_loop_token);
    UNIT_RUN(test_request_head_default_host);
    UNIT_RUN(test_request_head_trusted_ws_absolute);
    UNIT_RUN(test_response_head);
    UNIT_RUN(test_local_response);
    UNIT_RUN(test_http_date);
    UNIT_RUN(test_date_lines);
    return unit_report();
}
