/* fuzz_http1.c -- libFuzzer target for px_h1_parse_request/_response.
 *
 * Invariants checked on every input (parsed from an exact-size heap copy,
 * so ASan sees any read past the end):
 *   - the result is INCOMPLETE, one of the documented errors, or a length
 *     <= the input length that ends in CRLF CRLF;
 *   - on success every returned slice lies inside the head (the absolute-form
 *     path "/" default excepted), header names are tokens, values carry no
 *     CR/LF/NUL and no surrounding OWS, and the framing bits are coherent;
 *   - the head alone parses to the same length; every prefix of a complete
 *     head is INCOMPLETE, and every prefix of an invalid input is
 *     INCOMPLETE or the very same error;
 *   - the access-log lines of a parsed request (every field from it, every
 *     header as a log header, the raw input as the client address), JSON
 *     and combined, are one line of printable ASCII: JSON strings close and
 *     escape only as JSON does, combined has its six structural quotes and
 *     no other. */
#include "px/accesslog.h"
#include "px/http1.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c)                                                                 \
    do {                                                                               \
        if (!(c)) {                                                                    \
            fprintf(stderr, "fuzz_http1: %s:%d: assertion failed: %s\n", __FILE__,     \
                    __LINE__, #c);                                                     \
            abort();                                                                   \
        }                                                                              \
    } while (0)

static int inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p != NULL && p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void check_headers(const struct px_h1_header *h, size_t n, const char *buf, size_t len)
{
    FUZZ_ASSERT(n <= PX_H1_MAX_HEADERS);
    for (size_t i = 0; i < n; i++) {
        FUZZ_ASSERT(h[i].name_len > 0);
        FUZZ_ASSERT(inside(h[i].name, h[i].name_len, buf, len));
        FUZZ_ASSERT(inside(h[i].value, h[i].value_len, buf, len));
        for (size_t k = 0; k < h[i].name_len; k++)
            FUZZ_ASSERT(is_tchar((unsigned char)h[i].name[k]));
        for (size_t k = 0; k < h[i].value_len; k++) {
            unsigned char c = (unsigned char)h[i].value[k];
            FUZZ_ASSERT(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        if (h[i].value_len) {
            FUZZ_ASSERT(h[i].value[0] != ' ' && h[i].value[0] != '\t');
            FUZZ_ASSERT(h[i].value[h[i].value_len - 1] != ' ' && h[i].value[h[i].value_len - 1] != '\t');
        }
    }
}

static int req_copy(const uint8_t *s, size_t n, struct px_req_head *req)
{
    char *b = malloc(n ? n : 1);
    if (n)
        memcpy(b, s, n);
    int r = px_h1_parse_request(b, n, req);
    free(b);
    return r;
}

static int resp_copy(const uint8_t *s, size_t n, struct px_h1_response *resp)
{
    char *b = malloc(n ? n : 1);
    if (n)
        memcpy(b, s, n);
    int r = px_h1_parse_response(b, n, resp);
    free(b);
    return r;
}

/* Prefix lengths worth checking below lim: all of them for short heads,
 * an even spread plus the last few otherwise. */
#define FOR_PREFIXES(n, lim)                                                           \
    for (size_t n = 0, step_ = (lim) <= 512 ? 1 : (lim) / 61; n < (lim);               \
         n = (n + step_ < (lim) - 3 || step_ == 1) ? n + step_ : n + 1)

/* One access-log line of format f from e: one line, printable ASCII, its
 * syntax intact. */
static void check_log_line(enum px_access_format f, const struct px_access_entry *e)
{
    size_t bound = px_access_log_format(f, e, NULL, 0);
    char *line = malloc(bound);
    FUZZ_ASSERT(line != NULL);
    size_t n = px_access_log_format(f, e, line, bound);
    FUZZ_ASSERT(n > 0 && n <= bound && line[n - 1] == '\n');
    int in_str = 0, quotes = 0, depth = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        unsigned char c = (unsigned char)line[i];
        FUZZ_ASSERT(c >= 0x20 && c < 0x7f);
        if (f == PX_ACCESS_COMBINED) {
            quotes += c == '"';
            if (c == '\\')
                FUZZ_ASSERT(i + 3 < n && line[i + 1] == 'x');
            continue;
        }
        if (in_str && c == '\\') {
            FUZZ_ASSERT(i + 2 < n && strchr("\"\\u", line[i + 1]) != NULL);
            i++;
        } else if (c == '"') {
            in_str = !in_str;
        } else if (!in_str) {
            FUZZ_ASSERT(c != '\\');
            depth += c == '{' ? 1 : c == '}' ? -1 : 0;
        }
    }
    if (f == PX_ACCESS_COMBINED)
        FUZZ_ASSERT(quotes == 6);
    else
        FUZZ_ASSERT(!in_str && depth == 0 && line[0] == '{' && line[n - 2] == '}');
    free(line);
}

static void check_log(const struct px_req_head *req, const uint8_t *data, size_t size)
{
    struct px_access_field fields[PX_H1_MAX_HEADERS];
    const struct px_h1_header *ua = NULL, *ref = NULL;
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct px_h1_header *h = &req->headers[i];
        fields[i] = (struct px_access_field){h->name, h->name_len, h->value, h->value_len};
        if (h->name_len == 10 && strncasecmp(h->name, "user-agent", 10) == 0 && ua == NULL)
            ua = h;
        if (h->name_len == 7 && strncasecmp(h->name, "referer", 7) == 0 && ref == NULL)
            ref = h;
    }
    struct px_access_entry e = {
        .start_wall_ms = (uint64_t)size * 86400123u,
        .client = (const char *)data, .client_len = size < 64 ? size : 64,
        .method = req->method, .method_len = req->method_len,
        .host = req->host ? req->host : "", .host_len = req->host ? req->host_len : 0,
        .path = req->path, .path_len = req->path_len,
        .target = req->target, .target_len = req->target_len,
        .version = req->minor_version ? "HTTP/1.1" : "HTTP/1.0",
        .status = 200, .service = "s", .upstream = "", .upstream_status = size & 1 ? 502 : 0,
        .request_id = (const char *)data, .request_id_len = size < 16 ? size : 16,
        .proto = "HTTP/1.1",
        .user_agent = ua ? ua->value : NULL, .user_agent_len = ua ? ua->value_len : 0,
        .referer = ref ? ref->value : NULL, .referer_len = ref ? ref->value_len : 0,
        .limited = size & 2 ? "zone" : NULL,
        .fields = fields, .nfields = req->nheaders,
    };
    check_log_line(PX_ACCESS_JSON, &e);
    check_log_line(PX_ACCESS_COMBINED, &e);
    e.method_len = 0; /* a head that did not parse: the line as received */
    check_log_line(PX_ACCESS_COMBINED, &e);
}

static void check_request(const uint8_t *data, size_t size)
{
    struct px_req_head req;
    const char *buf = (const char *)data;
    char *b = malloc(size ? size : 1);
    if (size)
        memcpy(b, data, size);
    int r = px_h1_parse_request(b, size, &req);

    FUZZ_ASSERT(r == 0 || r == -400 || r == -431 || r == -501 || r == -505 || (r > 0 && (size_t)r <= size));
    if (r > 0) {
        size_t len = (size_t)r;
        FUZZ_ASSERT(len >= 4 && memcmp(b + len - 4, "\r\n\r\n", 4) == 0);
        FUZZ_ASSERT(req.method_len > 0 && inside(req.method, req.method_len, b, len));
        FUZZ_ASSERT(req.target_len > 0 && inside(req.target, req.target_len, b, len));
        FUZZ_ASSERT(req.method_id == px_h1_method_id(req.method, req.method_len));
        FUZZ_ASSERT(req.path != NULL && req.path_len > 0);
        if (inside(req.path, req.path_len, req.target, req.target_len)) {
            FUZZ_ASSERT(req.path[0] == '/' || (req.path_len == 1 && req.path[0] == '*'));
            FUZZ_ASSERT(req.path + req.path_len == req.target + req.target_len);
        } else {
            /* absolute-form without a path: the static "/" */
            FUZZ_ASSERT(req.path_len == 1 && req.path[0] == '/');
            FUZZ_ASSERT(req.query == NULL);
        }
        if (req.query) {
            FUZZ_ASSERT(inside(req.query, req.query_len, req.path, req.path_len));
            FUZZ_ASSERT(req.query[-1] == '?');
            FUZZ_ASSERT(req.query + req.query_len == req.path + req.path_len);
        }
        FUZZ_ASSERT(req.minor_version == 0 || req.minor_version == 1);
        if (req.minor_version == 1)
            FUZZ_ASSERT(req.host != NULL);
        if (req.host)
            FUZZ_ASSERT(req.host_len > 0 && inside(req.host, req.host_len, b, len));
        FUZZ_ASSERT(req.content_length >= -1);
        FUZZ_ASSERT(!(req.chunked && req.content_length >= 0));
        if (req.chunked)
            FUZZ_ASSERT(req.minor_version == 1);
        FUZZ_ASSERT(!(req.method_len == 7 && memcmp(req.method, "CONNECT", 7) == 0));
        for (size_t i = 0; i < req.method_len; i++) /* nginx's method alphabet */
            FUZZ_ASSERT((req.method[i] >= 'A' && req.method[i] <= 'Z') || req.method[i] == '_' ||
                        req.method[i] == '-');
        check_headers(req.headers, req.nheaders, b, len);
        check_log(&req, data, size);

        /* the head alone parses identically */
        int64_t cl = req.content_length;
        size_t nh = req.nheaders, pl = req.path_len;
        unsigned ch = req.chunked;
        FUZZ_ASSERT(req_copy(data, len, &req) == r);
        FUZZ_ASSERT(req.content_length == cl && req.nheaders == nh && req.path_len == pl && req.chunked == ch);
    }
    free(b);

    /* prefixes: INCOMPLETE, or the same error */
    if (r != 0) {
        size_t lim = r > 0 ? (size_t)r : size;
        FOR_PREFIXES(n, lim) {
            int pr = req_copy(data, n, &req);
            if (r > 0)
                FUZZ_ASSERT(pr == 0);
            else
                FUZZ_ASSERT(pr == 0 || pr == r);
        }
    }
    (void)buf;
}

static void check_response(const uint8_t *data, size_t size)
{
    struct px_h1_response resp;
    char *b = malloc(size ? size : 1);
    if (size)
        memcpy(b, data, size);
    int r = px_h1_parse_response(b, size, &resp);

    FUZZ_ASSERT(r == 0 || r == -502 || (r > 0 && (size_t)r <= size));
    if (r > 0) {
        size_t len = (size_t)r;
        FUZZ_ASSERT(len >= 4 && memcmp(b + len - 4, "\r\n\r\n", 4) == 0);
        FUZZ_ASSERT(resp.status >= 100 && resp.status <= 999);
        FUZZ_ASSERT(resp.minor_version == 0 || resp.minor_version == 1);
        FUZZ_ASSERT(inside(resp.reason, resp.reason_len, b, len));
        FUZZ_ASSERT(resp.content_length >= -1);
        FUZZ_ASSERT(!(resp.chunked && resp.content_length >= 0));
        check_headers(resp.headers, resp.nheaders, b, len);
        int st = resp.status;
        FUZZ_ASSERT(resp_copy(data, len, &resp) == r && resp.status == st);
    }
    free(b);

    if (r != 0) {
        size_t lim = r > 0 ? (size_t)r : size;
        FOR_PREFIXES(n, lim) {
            int pr = resp_copy(data, n, &resp);
            if (r > 0)
                FUZZ_ASSERT(pr == 0);
            else
                FUZZ_ASSERT(pr == 0 || pr == r);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_request(data, size);
    check_response(data, size);
    return 0;
}
