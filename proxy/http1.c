/* http1.c -- strict, allocation-free HTTP/1.x head parser and incremental
 * chunked-body decoder (see include/px/http1.h for the contract).
 *
 * Design: one left-to-right pass over the head. Every decision depends only
 * on bytes already seen, and running out of bytes always yields
 * PX_H1_INCOMPLETE, so a prefix of a head parses as INCOMPLETE or as the same
 * error as the whole head. Byte classes come from one 256-entry table; long
 * runs (request-target, field values) are scanned 8 bytes at a time with a
 * SWAR test for "any CTL/SP/DEL" and fall back to the table only for the
 * word that contains the terminator (or an HTAB).
 *
 * Choices the header leaves open (documented here and in the tests):
 *   - at most PX_H1_MAX_EMPTY_LINES empty lines (CRLF) before a request line
 *     are skipped, more -> -400; responses get none;
 *   - requests, as nginx 1.22: a Transfer-Encoding value other than exactly
 *     "chunked" -> -501, a second Transfer-Encoding line -> -400; responses:
 *     a Transfer-Encoding that does not end in exactly one "chunked" -> -502;
 *     any TE in an HTTP/1.0 request -> -400 and in an HTTP/1.0 response ->
 *     -502 (RFC 9112 6.1: faulty framing);
 *   - the Host header (and an absolute-form authority) must be non-empty and
 *     made of reg-name/IP-literal/port characters (no '@', '/', '\', ...),
 *     else -400; two Host headers -> -400 whatever the version;
 *   - absolute-form "http://h" (no path) gets path "/" (a static string, the
 *     only slice that does not point into the buffer); "http://h?q" (query
 *     but no path) is rejected with -400 because "/?q" does not exist
 *     contiguously in the buffer;
 *   - Expect: 100-continue is ignored in HTTP/1.0 requests (RFC 9110 10.1.1);
 *   - in responses every error, including too many headers, is -502;
 *   - Transfer-Encoding codings are bare tokens (no parameters);
 *   - chunked decoder: once DONE, further calls return DONE with
 *     *consumed = 0; ERROR is sticky. Chunk extensions are checked loosely
 *     (BWS then ';', then any VCHAR/obs-text/SP/HTAB up to CR); whitespace
 *     after the size without a ';' is an error. */
#include <event2/buffer.h>

#include "px/http1.h"
#include "px/common.h"

#include <limits.h>
#include <string.h>

#define PX_H1_MAX_EMPTY_LINES 4
#define PX_CHUNK_MAX_LINE 4096u
#define PX_CHUNK_MAX_TRAILERS 16384u
#define PX_CHUNK_MAX_SIZE (UINT64_C(1) << 62)

/* ---- character classes ------------------------------------------------ */

#define C_TOKEN 0x01  /* tchar (RFC 9110 5.6.2) */
#define C_VALUE 0x02  /* field-value byte: VCHAR, obs-text, SP, HTAB */
#define C_TARGET 0x04 /* request-target byte: not CTL, SP or DEL */
#define C_HOST 0x08   /* reg-name / IP-literal / port: unreserved, sub-delims, ':', '[', ']', '%' */
#define C_METHOD 0x10 /* 'A'-'Z', '_', '-': nginx's method alphabet, a subset of tchar */

static const unsigned char px_h1_class[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 00 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 10 */
    0x02, 0x0f, 0x06, 0x07, 0x0f, 0x0f, 0x0f, 0x0f, 0x0e, 0x0e, 0x0f, 0x0f, 0x0e, 0x1f, 0x0f, 0x06, /* 20 */
    0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0e, 0x0e, 0x06, 0x0e, 0x06, 0x06, /* 30 */
    0x06, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, /* 40 */
    0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x0e, 0x06, 0x0e, 0x07, 0x1f, /* 50 */
    0x07, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, /* 60 */
    0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x06, 0x07, 0x06, 0x0f, 0x00, /* 70 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* 80 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* 90 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* a0 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* b0 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* c0 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* d0 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* e0 */
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, /* f0 */
};

#define IS(c, cls) (px_h1_class[(unsigned char)(c)] & (cls))

static inline int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static inline int is_digit(char c)
{
    return (unsigned char)(c - '0') < 10u;
}

static inline int hex_val(unsigned char c)
{
    if ((unsigned char)(c - '0') < 10u)
        return c - '0';
    c |= 0x20;
    if ((unsigned char)(c - 'a') < 6u)
        return c - 'a' + 10;
    return -1;
}

/* ---- SWAR scanning ------------------------------------------------------ */

#define SWAR_ONES UINT64_C(0x0101010101010101)
#define SWAR_HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t swar_load(const char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof(x));
    return x;
}

/* Nonzero iff some byte of x is < n (n <= 128); exact as a boolean. */
static inline uint64_t swar_has_less(uint64_t x, unsigned n)
{
    return (x - SWAR_ONES * n) & ~x & SWAR_HIGHS;
}

/* Index of the first byte at or after pos (< len) that is not in class
 * cls; len if none. lt: every byte >= lt (other than DEL) is in cls, so a
 * word with no byte < lt and no DEL is skipped whole. */
static inline size_t scan_class(const char *buf, size_t pos, size_t len, unsigned lt, unsigned char cls)
{
    for (;;) {
        while (pos + 8 <= len) {
            uint64_t x = swar_load(buf + pos);
            if (swar_has_less(x, lt) | swar_has_less(x ^ (SWAR_ONES * 0x7f), 1))
                break;
            pos += 8;
        }
        size_t stop = len - pos > 8 ? pos + 8 : len;
        while (pos < stop && IS(buf[pos], cls))
            pos++;
        if (pos < stop || pos >= len)
            return pos;
        /* the word held only HTABs among class bytes: keep going */
    }
}

/* ---- helpers for field values -------------------------------------------- */

/* Next comma-separated element of v[0..n), OWS-trimmed (may be empty).
 * *i starts at 0; returns 0 once the list is exhausted. */
static int list_next(const char *v, size_t n, size_t *i, const char **e, size_t *en)
{
    size_t p = *i;
    if (p > n)
        return 0;
    const char *comma = p < n ? memchr(v + p, ',', n - p) : NULL;
    size_t end = comma ? (size_t)(comma - v) : n;
    *i = end + 1;
    while (p < end && is_ows(v[p]))
        p++;
    while (end > p && is_ows(v[end - 1]))
        end--;
    *e = v + p;
    *en = end - p;
    return 1;
}

static int all_class(const char *p, size_t n, unsigned char cls)
{
    for (size_t i = 0; i < n; i++)
        if (!IS(p[i], cls))
            return 0;
    return 1;
}

/* Content-Length: 1*DIGIT, or a list of identical such values. *canon gets
 * the digits of the first member without leading zeros ("0" stays "0"). */
static int parse_content_length(const char *v, size_t n, int64_t *out, const char **canon, size_t *canon_len)
{
    size_t i = 0;
    const char *e;
    size_t en;
    int64_t val = -1;
    while (list_next(v, n, &i, &e, &en)) {
        if (en == 0)
            return -1;
        int64_t x = 0;
        for (size_t k = 0; k < en; k++) {
            if (!is_digit(e[k]))
                return -1;
            int d = e[k] - '0';
            if (x > (INT64_MAX - d) / 10)
                return -1;
            x = x * 10 + d;
        }
        if (val >= 0 && x != val)
            return -1;
        if (val < 0) {
            while (en > 1 && e[0] == '0')
                e++, en--;
            *canon = e;
            *canon_len = en;
        }
        val = x;
    }
    *out = val;
    return 0;
}

/* ---- header section --------------------------------------------------------- */

struct h1_state {
    int64_t content_length;
    const char *host;
    size_t host_len;
    unsigned host_count;
    int minor;
    int is_request;
    unsigned te_seen : 1;
    unsigned te_chunked : 1; /* "chunked" seen (it must be the last coding) */
    unsigned te_unknown : 1; /* request: a Transfer-Encoding other than "chunked" */
    unsigned conn_close : 1;
    unsigned conn_keep_alive : 1;
    unsigned conn_upgrade : 1;
    unsigned upgrade_websocket : 1;
    unsigned expect_continue : 1;
};

/* Applies the semantics of the known fields: FIELD_KEEP, FIELD_DROP (h is
 * not stored), or FIELD_BAD on an invalid value. */
#define FIELD_KEEP 0
#define FIELD_DROP 1
#define FIELD_BAD (-1)

static int on_transfer_encoding(struct h1_state *st, const char *v, size_t n)
{
    size_t i = 0;
    const char *e;
    size_t en;
    if (st->minor == 0)
        return FIELD_BAD;
    if (st->is_request) {
        /* nginx 1.22: Transfer-Encoding is a unique field (a second line,
         * even a second "chunked", is 400 at once: two lines are how
         * smuggling attempts hide a coding) and once the head is complete
         * its whole value must be "chunked"; anything else -- "gzip",
         * "gzip, chunked", "chunked, chunked" -- is 501, a coding proxyd does
         * not implement (te_unknown; never forwarded). */
        if (st->te_seen)
            return FIELD_BAD;
        st->te_seen = 1;
        if (PX_IEQ_LIT(v, n, "chunked"))
            st->te_chunked = 1;
        else
            st->te_unknown = 1;
        return FIELD_KEEP;
    }
    st->te_seen = 1;
    while (list_next(v, n, &i, &e, &en)) {
        if (en == 0 || !all_class(e, en, C_TOKEN))
            return -1;
        if (st->te_chunked) /* a coding after chunked, or chunked twice */
            return -1;
        if (PX_IEQ_LIT(e, en, "chunked"))
            st->te_chunked = 1;
    }
    return 0;
}

static void on_connection(struct h1_state *st, const char *v, size_t n)
{
    size_t i = 0;
    const char *e;
    size_t en;
    while (list_next(v, n, &i, &e, &en)) {
        switch (en) {
        case 5:
            if (PX_IEQ_LIT(e, en, "close"))
                st->conn_close = 1;
            break;
        case 7:
            if (PX_IEQ_LIT(e, en, "upgrade"))
                st->conn_upgrade = 1;
            break;
        case 10:
            if (PX_IEQ_LIT(e, en, "keep-alive"))
                st->conn_keep_alive = 1;
            break;
        default:
            break;
        }
    }
}

static void on_upgrade(struct h1_state *st, const char *v, size_t n)
{
    size_t i = 0;
    const char *e;
    size_t en;
    while (list_next(v, n, &i, &e, &en))
        if (PX_IEQ_LIT(e, en, "websocket"))
            st->upgrade_websocket = 1;
}

static int on_field(struct h1_state *st, struct px_h1_header *h)
{
    const char *name = h->name, *v = h->value;
    size_t nl = h->name_len, vl = h->value_len;
    switch (nl) {
    case 4:
        if (st->is_request && PX_IEQ_LIT(name, nl, "host")) {
            if (++st->host_count > 1 || vl == 0 || !all_class(v, vl, C_HOST))
                return -1;
            st->host = v;
            st->host_len = vl;
        }
        return 0;
    case 6:
        if (st->is_request && st->minor == 1 && PX_IEQ_LIT(name, nl, "expect") &&
            PX_IEQ_LIT(v, vl, "100-continue"))
            st->expect_continue = 1;
        return 0;
    case 7:
        if (st->is_request && PX_IEQ_LIT(name, nl, "upgrade"))
            on_upgrade(st, v, vl);
        return 0;
    case 10:
        if (PX_IEQ_LIT(name, nl, "connection"))
            on_connection(st, v, vl);
        return 0;
    case 14:
        if (PX_IEQ_LIT(name, nl, "content-length")) {
            /* RFC 9110 8.6 lets a recipient either reject "5, 5" (nginx: 400)
             * or replace it with one "5" (HAProxy). We normalise: DESIGN.md
             * rejects only *differing* lengths, so equal ones stay valid, and
             * every writer (h1 and h2, both directions) relays the slice as
             * is, so one exact value and one line is what they all pass on. */
            int64_t x;
            const char *canon = v;
            size_t canon_len = vl;
            if (parse_content_length(v, vl, &x, &canon, &canon_len) < 0)
                return FIELD_BAD;
            if (st->content_length >= 0)
                return st->content_length == x ? FIELD_DROP : FIELD_BAD;
            st->content_length = x;
            h->value = canon;
            h->value_len = canon_len;
        }
        return 0;
    case 17:
        if (PX_IEQ_LIT(name, nl, "transfer-encoding"))
            return on_transfer_encoding(st, v, vl);
        return 0;
    default:
        return 0;
    }
}

/* Parses field lines from pos through the empty line. Returns the offset
 * just past the final CRLF, 0 when incomplete, or -err / -too_many. */
static int parse_fields(const char *buf, size_t len, size_t pos, struct px_h1_header *hdrs,
                        size_t *nhdrs, struct h1_state *st, int err, int too_many)
{
    size_t n = 0;
    for (;;) {
        if (pos >= len)
            return PX_H1_INCOMPLETE;
        if (buf[pos] == '\r') {
            if (pos + 1 >= len)
                return PX_H1_INCOMPLETE;
            if (buf[pos + 1] != '\n')
                return -err;
            *nhdrs = n;
            return (int)(pos + 2);
        }
        if (PX_UNLIKELY(n == PX_H1_MAX_HEADERS))
            return -too_many;

        /* field-name ":" -- a token, no whitespace before the colon; a line
         * starting with SP/HTAB (obs-fold) fails here as an empty name */
        size_t name = pos;
        while (pos < len && IS(buf[pos], C_TOKEN))
            pos++;
        if (pos >= len)
            return PX_H1_INCOMPLETE;
        if (buf[pos] != ':' || pos == name)
            return -err;
        size_t name_len = pos - name;
        pos++;

        /* OWS field-value OWS CRLF */
        while (pos < len && is_ows(buf[pos]))
            pos++;
        size_t val = pos;
        pos = scan_class(buf, pos, len, 0x20, C_VALUE);
        if (pos >= len)
            return PX_H1_INCOMPLETE;
        if (buf[pos] != '\r')
            return -err;
        if (pos + 1 >= len)
            return PX_H1_INCOMPLETE;
        if (buf[pos + 1] != '\n')
            return -err;
        size_t end = pos;
        while (end > val && is_ows(buf[end - 1]))
            end--;
        pos += 2;

        hdrs[n].name = buf + name;
        hdrs[n].name_len = name_len;
        hdrs[n].value = buf + val;
        hdrs[n].value_len = end - val;
        int f = on_field(st, &hdrs[n]);
        if (f < 0)
            return -err;
        if (f == FIELD_KEEP)
            n++;
        if (st->te_seen && st->content_length >= 0 && !st->te_unknown)
            return -err; /* an unknown coding with a length is 501 (nginx) */
    }
}

/* Matches the available prefix of buf[pos..) against lit[0..n): 1 when all n
 * bytes match, 0 when the available bytes match but are fewer, -1 else. */
static int match_lit(const char *buf, size_t len, size_t pos, const char *lit, size_t n)
{
    size_t avail = len - pos < n ? len - pos : n;
    if (memcmp(buf + pos, lit, avail) != 0)
        return -1;
    return avail == n ? 1 : 0;
}

static void h1_state_init(struct h1_state *st, int is_request)
{
    memset(st, 0, sizeof(*st));
    st->content_length = -1;
    st->is_request = is_request;
}

/* ---- requests ------------------------------------------------------------------ */

enum px_method px_h1_method_id(const char *m, size_t n)
{
    switch (n) {
    case 3:
        if (memcmp(m, "GET", 3) == 0)
            return PX_METHOD_GET;
        if (memcmp(m, "PUT", 3) == 0)
            return PX_METHOD_PUT;
        break;
    case 4:
        if (memcmp(m, "POST", 4) == 0)
            return PX_METHOD_POST;
        if (memcmp(m, "HEAD", 4) == 0)
            return PX_METHOD_HEAD;
        break;
    case 5:
        if (memcmp(m, "PATCH", 5) == 0)
            return PX_METHOD_PATCH;
        if (memcmp(m, "TRACE", 5) == 0)
            return PX_METHOD_TRACE;
        break;
    case 6:
        if (memcmp(m, "DELETE", 6) == 0)
            return PX_METHOD_DELETE;
        break;
    case 7:
        if (memcmp(m, "OPTIONS", 7) == 0)
            return PX_METHOD_OPTIONS;
        break;
    default:
        break;
    }
    return PX_METHOD_OTHER;
}

int px_h1_check_target(const char *t, size_t n)
{
    if (memchr(t, '#', n) != NULL)
        return -400;
    const char *q = memchr(t, '?', n);
    size_t pn = q ? (size_t)(q - t) : n;
    if (pn > PX_H1_PATH_MAX)
        return -414;
    const char *p = t, *end = t + pn;
    while ((p = memchr(p, '%', (size_t)(end - p))) != NULL) {
        int hi, lo;
        if (end - p < 3 || (hi = hex_val((unsigned char)p[1])) < 0 || (lo = hex_val((unsigned char)p[2])) < 0 ||
            (hi | lo) == 0)
            return -400;
        p += 3;
    }
    return 0;
}

/* Splits the request-target into path/query (and the absolute-form
 * authority); -400 when it is not an acceptable form, or what
 * px_h1_check_target answers. */
static int classify_target(struct px_req_head *req, const char **auth, size_t *auth_len)
{
    const char *t = req->target;
    size_t n = req->target_len;
    const char *path;

    *auth = NULL;
    if (t[0] == '/') {
        path = t;
    } else if (n == 1 && t[0] == '*') {
        if (req->method_id != PX_METHOD_OPTIONS)
            return -400;
        req->path = t;
        req->path_len = 1;
        return 0;
    } else {
        size_t skip;
        if (n >= 7 && PX_IEQ_LIT(t, 7, "http://"))
            skip = 7;
        else if (n >= 8 && PX_IEQ_LIT(t, 8, "https://"))
            skip = 8;
        else
            return -400;
        size_t a = skip;
        while (a < n && IS(t[a], C_HOST))
            a++;
        if (a == skip)
            return -400; /* empty authority */
        *auth = t + skip;
        *auth_len = a - skip;
        if (a == n) {
            req->path = "/";
            req->path_len = 1;
            return 0;
        }
        if (t[a] != '/')
            return -400; /* userinfo, "?q" without a path, or junk */
        path = t + a;
    }
    int bad = px_h1_check_target(path, (size_t)(t + n - path));
    if (bad)
        return bad;
    req->path = path;
    req->path_len = (size_t)(t + n - path);
    const char *q = memchr(path, '?', req->path_len);
    if (q) {
        req->query = q + 1;
        req->query_len = (size_t)(t + n - (q + 1));
    }
    return 0;
}

int px_h1_parse_request(const char *buf, size_t len, struct px_req_head *req)
{
    size_t pos = 0;
    int r;

    if (len > INT_MAX)
        len = INT_MAX; /* the head length must fit the return value */

    req->method = NULL;
    req->method_len = 0;
    req->method_id = PX_METHOD_OTHER;
    req->target = NULL;
    req->target_len = 0;
    req->path = NULL;
    req->path_len = 0;
    req->query = NULL;
    req->query_len = 0;
    req->minor_version = 1;
    req->host = NULL;
    req->host_len = 0;
    req->content_length = -1;
    req->chunked = 0;
    req->conn_close = 0;
    req->conn_keep_alive = 0;
    req->conn_upgrade = 0;
    req->upgrade_websocket = 0;
    req->expect_continue = 0;
    req->nheaders = 0;

    /* RFC 9112 2.2: tolerate a few empty lines before the request-line */
    for (unsigned empty = 0; pos < len && buf[pos] == '\r'; pos += 2) {
        if (pos + 1 >= len)
            return PX_H1_INCOMPLETE;
        if (buf[pos + 1] != '\n' || ++empty > PX_H1_MAX_EMPTY_LINES)
            return -400;
    }

    /* method SP. RFC 9110 allows any token, but nginx takes only uppercase
     * letters, '_' and '-' (400 otherwise): "get" is not GET to an upstream
     * that matches methods exactly, and a method an upstream reads another
     * way than proxyd's routing and limits did is a confusion to avoid. */
    size_t m = pos;
    while (pos < len && IS(buf[pos], C_METHOD))
        pos++;
    if (pos >= len)
        return PX_H1_INCOMPLETE;
    if (buf[pos] != ' ' || pos == m)
        return -400;
    req->method = buf + m;
    req->method_len = pos - m;
    req->method_id = px_h1_method_id(buf + m, pos - m);
    if (req->method_id == PX_METHOD_OTHER && pos - m == 7 && memcmp(buf + m, "CONNECT", 7) == 0)
        return -400;
    pos++;

    /* request-target SP */
    size_t t = pos;
    pos = scan_class(buf, pos, len, 0x21, C_TARGET);
    if (pos >= len)
        return PX_H1_INCOMPLETE;
    if (buf[pos] != ' ' || pos == t)
        return -400;
    req->target = buf + t;
    req->target_len = pos - t;
    pos++;

    /* HTTP-version CRLF: "HTTP/1.0" or "HTTP/1.1"; another HTTP/D.D -> 505 */
    static const char pattern[] = "HTTP/D.D";
    for (size_t i = 0; i < 8; i++) {
        if (pos + i >= len)
            return PX_H1_INCOMPLETE;
        char c = buf[pos + i];
        if (pattern[i] == 'D' ? !is_digit(c) : c != pattern[i])
            return -400;
    }
    if (buf[pos + 5] != '1' || (buf[pos + 7] != '0' && buf[pos + 7] != '1'))
        return -505;
    req->minor_version = buf[pos + 7] - '0';
    pos += 8;
    if ((r = match_lit(buf, len, pos, "\r\n", 2)) <= 0)
        return r < 0 ? -400 : PX_H1_INCOMPLETE;
    pos += 2;

    const char *auth;
    size_t auth_len = 0;
    if ((r = classify_target(req, &auth, &auth_len)) < 0)
        return r;

    struct h1_state st;
    h1_state_init(&st, 1);
    st.minor = req->minor_version;
    r = parse_fields(buf, len, pos, req->headers, &req->nheaders, &st, 400, 431);
    if (r <= 0)
        return r;

    if (st.host_count == 0 && req->minor_version == 1)
        return -400;
    if (st.te_unknown)
        return -501;
    if (auth) {
        req->host = auth;
        req->host_len = auth_len;
    } else {
        req->host = st.host;
        req->host_len = st.host_len;
    }
    req->content_length = st.content_length;
    req->chunked = st.te_seen;
    req->conn_close = st.conn_close;
    req->conn_keep_alive = st.conn_keep_alive;
    req->conn_upgrade = st.conn_upgrade;
    req->upgrade_websocket = st.upgrade_websocket;
    req->expect_continue = st.expect_continue;
    return r;
}

/* ---- responses ------------------------------------------------------------------ */

int px_h1_parse_response(const char *buf, size_t len, struct px_h1_response *resp)
{
    size_t pos = 0;
    int r;

    if (len > INT_MAX)
        len = INT_MAX;

    resp->status = 0;
    resp->minor_version = 1;
    resp->reason = NULL;
    resp->reason_len = 0;
    resp->content_length = -1;
    resp->chunked = 0;
    resp->conn_close = 0;
    resp->conn_keep_alive = 0;
    resp->conn_upgrade = 0;
    resp->nheaders = 0;

    /* "HTTP/1." ("0" / "1") SP 3DIGIT [SP reason] CRLF */
    if ((r = match_lit(buf, len, pos, "HTTP/1.", 7)) <= 0)
        return r < 0 ? -502 : PX_H1_INCOMPLETE;
    pos += 7;
    if (pos >= len)
        return PX_H1_INCOMPLETE;
    if (buf[pos] != '0' && buf[pos] != '1')
        return -502;
    resp->minor_version = buf[pos] - '0';
    pos++;
    if (pos >= len)
        return PX_H1_INCOMPLETE;
    if (buf[pos] != ' ')
        return -502;
    pos++;
    int status = 0;
    for (int i = 0; i < 3; i++, pos++) {
        if (pos >= len)
            return PX_H1_INCOMPLETE;
        if (!is_digit(buf[pos]) || (i == 0 && buf[pos] == '0'))
            return -502;
        status = status * 10 + (buf[pos] - '0');
    }
    resp->status = status;
    if (pos >= len)
        return PX_H1_INCOMPLETE;
    if (buf[pos] == ' ') {
        pos++;
        size_t rs = pos;
        pos = scan_class(buf, pos, len, 0x20, C_VALUE);
        resp->reason = buf + rs;
        resp->reason_len = pos - rs;
    } else {
        resp->reason = buf + pos;
        resp->reason_len = 0;
    }
    if ((r = match_lit(buf, len, pos, "\r\n", 2)) <= 0)
        return r < 0 ? -502 : PX_H1_INCOMPLETE;
    pos += 2;

    struct h1_state st;
    h1_state_init(&st, 0);
    st.minor = resp->minor_version;
    r = parse_fields(buf, len, pos, resp->headers, &resp->nheaders, &st, 502, 502);
    if (r <= 0)
        return r;
    if (st.te_seen && !st.te_chunked)
        return -502;
    resp->content_length = st.content_length;
    resp->chunked = st.te_seen;
    resp->conn_close = st.conn_close;
    resp->conn_keep_alive = st.conn_keep_alive;
    resp->conn_upgrade = st.conn_upgrade;
    return r;
}

/* ---- chunked decoder ---------------------------------------------------------------- */

enum {
    CS_SIZE = 0,  /* chunk-size hex digits */
    CS_SIZE_WS,   /* BWS after the size: only more BWS or ';' */
    CS_EXT,       /* chunk-ext, loosely: no CTL except HTAB */
    CS_SIZE_LF,   /* CR of the size line seen */
    CS_DATA,      /* remaining bytes of chunk data */
    CS_DATA_CR,   /* CRLF after the data */
    CS_DATA_LF,
    CS_TRL_START, /* start of a trailer line (or the final CRLF) */
    CS_TRL_NAME,
    CS_TRL_VALUE,
    CS_TRL_LF,
    CS_FINAL_LF,
    CS_DONE,
    CS_ERROR,
};

/* Fields that must not be trailers (RFC 9110 6.5.1 names the kinds; this is
 * RFC 7230 4.1.2's concrete list plus the hop-by-hop fields): framing,
 * routing, request modifiers, authentication, response control data and
 * content handling. Trailers pass through verbatim, so a peer that merges
 * them into the header section would apply, say, a Content-Length after the
 * body was already framed by another. Every name fits PX_CHUNK_NAME_MAX. */
static const struct {
    const char *name;
    size_t len;
} trailer_forbidden_names[] = {
#define TF(s) { s, sizeof(s) - 1 }
    TF("content-length"), TF("transfer-encoding"), TF("trailer"), TF("host"),
    TF("connection"), TF("keep-alive"), TF("proxy-connection"), TF("te"), TF("upgrade"),
    TF("cache-control"), TF("expect"), TF("max-forwards"), TF("pragma"), TF("range"),
    TF("if-match"), TF("if-none-match"), TF("if-modified-since"), TF("if-unmodified-since"),
    TF("if-range"), TF("authorization"), TF("proxy-authorization"), TF("www-authenticate"),
    TF("proxy-authenticate"), TF("age"), TF("expires"), TF("date"), TF("location"),
    TF("retry-after"), TF("vary"), TF("warning"), TF("content-encoding"), TF("content-type"),
    TF("content-range"),
#undef TF
};

/* Runs once per trailer field, and only when a body has trailers. */
static int trailer_forbidden(const char *n, size_t len)
{
    for (size_t i = 0; i < sizeof(trailer_forbidden_names) / sizeof(trailer_forbidden_names[0]); i++)
        if (trailer_forbidden_names[i].len == len && px_slice_ieq(n, len, trailer_forbidden_names[i].name, len))
            return 1;
    return 0;
}

void px_chunked_init(struct px_chunked *c)
{
    c->state = CS_SIZE;
    c->remaining = 0;
    c->line_len = 0;
    c->trailer_len = 0;
    c->saw_digit = 0;
    c->name_len = 0;
}

enum px_chunk_result px_chunked_step(struct px_chunked *c, const char *buf, size_t len, size_t *consumed)
{
    *consumed = 0;
    if (c->state == CS_ERROR)
        return PX_CHUNK_ERROR;
    if (c->state == CS_DONE)
        return PX_CHUNK_DONE;
    if (len == 0)
        return PX_CHUNK_AGAIN;

    if (c->state == CS_DATA) {
        size_t n = (uint64_t)len < c->remaining ? len : (size_t)c->remaining;
        c->remaining -= n;
        if (c->remaining == 0)
            c->state = CS_DATA_CR;
        *consumed = n;
        return PX_CHUNK_DATA;
    }

    size_t i = 0;
    while (i < len) {
        unsigned char ch = (unsigned char)buf[i++];
        switch (c->state) {
        case CS_SIZE:
        case CS_SIZE_WS:
        case CS_EXT:
        case CS_SIZE_LF:
            if (++c->line_len > PX_CHUNK_MAX_LINE)
                goto error;
            if (c->state == CS_SIZE) {
                int d = hex_val(ch);
                if (d >= 0) {
                    if (c->remaining > (PX_CHUNK_MAX_SIZE - (uint64_t)d) >> 4)
                        goto error;
                    c->remaining = (c->remaining << 4) | (uint64_t)d;
                    c->saw_digit = 1;
                } else if (!c->saw_digit) {
                    goto error;
                } else if (ch == '\r') {
                    c->state = CS_SIZE_LF;
                } else if (ch == ';') {
                    c->state = CS_EXT;
                } else if (ch == ' ' || ch == '\t') {
                    c->state = CS_SIZE_WS;
                } else {
                    goto error;
                }
            } else if (c->state == CS_SIZE_WS) {
                if (ch == ';')
                    c->state = CS_EXT;
                else if (ch != ' ' && ch != '\t')
                    goto error;
            } else if (c->state == CS_EXT) {
                if (ch == '\r')
                    c->state = CS_SIZE_LF;
                else if (!IS(ch, C_VALUE))
                    goto error;
            } else {
                if (ch != '\n')
                    goto error;
                c->line_len = 0;
                c->saw_digit = 0;
                if (c->remaining == 0) {
                    c->state = CS_TRL_START;
                } else {
                    c->state = CS_DATA;
                    *consumed = i;
                    return PX_CHUNK_META;
                }
            }
            break;
        case CS_DATA_CR:
            if (ch != '\r')
                goto error;
            c->state = CS_DATA_LF;
            break;
        case CS_DATA_LF:
            if (ch != '\n')
                goto error;
            c->state = CS_SIZE;
            break;
        default: /* trailer section */
            if (++c->trailer_len > PX_CHUNK_MAX_TRAILERS)
                goto error;
            switch (c->state) {
            case CS_TRL_START:
                if (ch == '\r') {
                    c->state = CS_FINAL_LF;
                } else if (IS(ch, C_TOKEN)) {
                    c->state = CS_TRL_NAME;
                    c->name[0] = (char)ch;
                    c->name_len = 1;
                } else {
                    goto error; /* obs-fold, empty name, junk */
                }
                break;
            case CS_TRL_NAME:
                /* the name is kept (up to PX_CHUNK_NAME_MAX bytes; longer ones
                 * are never forbidden) because it may span calls */
                if (ch == ':') {
                    if (c->name_len <= PX_CHUNK_NAME_MAX && trailer_forbidden(c->name, c->name_len))
                        goto error;
                    c->state = CS_TRL_VALUE;
                } else if (!IS(ch, C_TOKEN)) {
                    goto error;
                } else if (c->name_len < PX_CHUNK_NAME_MAX) {
                    c->name[c->name_len++] = (char)ch;
                } else {
                    c->name_len = PX_CHUNK_NAME_MAX + 1;
                }
                break;
            case CS_TRL_VALUE:
                if (ch == '\r')
                    c->state = CS_TRL_LF;
                else if (!IS(ch, C_VALUE))
                    goto error;
                break;
            case CS_TRL_LF:
                if (ch != '\n')
                    goto error;
                c->state = CS_TRL_START;
                break;
            case CS_FINAL_LF:
                if (ch != '\n')
                    goto error;
                c->state = CS_DONE;
                *consumed = i;
                return PX_CHUNK_DONE;
            default:
                goto error;
            }
            break;
        }
    }
    *consumed = i;
    return PX_CHUNK_META;

error:
    c->state = CS_ERROR;
    *consumed = 0;
    return PX_CHUNK_ERROR;
}

size_t px_chunked_scan(struct px_chunked *c, struct evbuffer *buf, uint64_t *data, enum px_chunk_result *end)
{
    struct evbuffer_iovec vec[8];
    int nv = evbuffer_peek(buf, -1, NULL, vec, 8);
    size_t scanned = 0;
    *data = 0;
    *end = PX_CHUNK_DATA;
    for (int i = 0; i < nv && i < 8; i++) {
        const char *p = vec[i].iov_base;
        size_t left = vec[i].iov_len;
        while (left) {
            size_t used = 0;
            enum px_chunk_result res = px_chunked_step(c, p, left, &used);
            if (res == PX_CHUNK_ERROR) {
                *end = PX_CHUNK_ERROR;
                return scanned;
            }
            if (res == PX_CHUNK_DATA)
                *data += used;
            scanned += used;
            p += used;
            left -= used;
            if (res == PX_CHUNK_DONE) {
                *end = PX_CHUNK_DONE;
                return scanned;
            }
        }
    }
    return scanned;
}
