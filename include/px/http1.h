/* px/http1.h -- strict, allocation-free HTTP/1.x parser.
 *
 * The parsers read a contiguous buffer and fill a caller-owned struct whose
 * slices point into that buffer: the caller must keep the bytes alive and
 * unmoved while it uses the result. Nothing here allocates, blocks or keeps
 * global state; every function is safe on any thread.
 *
 * Return convention of the head parsers:
 *   > 0   the head is complete; the value is its length in bytes including
 *         the terminating empty line (the body, if any, starts there);
 *   PX_H1_INCOMPLETE (0)  need more bytes (caller enforces its size limit);
 *   < 0   the head is invalid: the value is -(HTTP status to answer with),
 *         e.g. -400, -431 (too many headers), -501 (unknown transfer coding),
 *         -505 (version), and for responses -502.
 *
 * Strictness (RFC 9112 plus smuggling defences): the method is 'A'-'Z', '_'
 * and '-' only (nginx; "get" -> 400), CRLF line endings only
 * (bare LF or bare CR anywhere -> 400), no obs-fold, no whitespace between a
 * field name and its colon, field names are tokens, field values contain no
 * CTLs except HTAB, Content-Length is 1*DIGIT (no sign, no list unless all
 * members equal; an equal list or repeated equal lines leave ONE header entry
 * whose value is the digits without leading zeros, so writers that relay the
 * entries pass on a single normalised value), Content-Length together with
 * Transfer-Encoding -> 400,
 * in a request a Transfer-Encoding other than exactly "chunked" -> 501 and two
 * Transfer-Encoding lines -> 400 (nginx 1.22), in a response one that does
 * not end in "chunked" -> 502, HTTP/1.1 requests need exactly one Host header, a request
 * target is origin-form ("/..."), absolute-form ("http://h/p"), or "*" for
 * OPTIONS; CONNECT is rejected (400: we are not a forward proxy). */
#ifndef PX_HTTP1_H
#define PX_HTTP1_H

#include <stddef.h>
#include <stdint.h>

#define PX_H1_INCOMPLETE 0
#define PX_H1_MAX_HEADERS 100

enum px_method {
    PX_METHOD_OTHER = 0,
    PX_METHOD_GET,
    PX_METHOD_HEAD,
    PX_METHOD_POST,
    PX_METHOD_PUT,
    PX_METHOD_DELETE,
    PX_METHOD_OPTIONS,
    PX_METHOD_PATCH,
    PX_METHOD_TRACE,
};

struct px_h1_header {
    const char *name;
    size_t name_len;
    const char *value;       /* leading/trailing OWS removed; Content-Length normalised (see above) */
    size_t value_len;
};

/* A request head, whatever protocol brought it: the HTTP/1 parser fills it
 * from the wire, h2.c from a HEADERS frame; the pipeline (request.h) and
 * the upstream head writer read only this. */
struct px_req_head {
    const char *method;
    size_t method_len;
    enum px_method method_id;
    const char *target;      /* request-target exactly as sent */
    size_t target_len;
    const char *path;        /* origin-form path+query: for absolute-form the part from the first '/' after the authority ("/" if none) */
    size_t path_len;
    const char *query;       /* part after '?', without '?'; NULL if none */
    size_t query_len;
    int minor_version;       /* 0 or 1 (HTTP/1.0, HTTP/1.1) */

    const char *host;        /* Host header value (or absolute-form authority); NULL if none */
    size_t host_len;
    int64_t content_length;  /* -1 when absent */
    unsigned chunked : 1;        /* Transfer-Encoding: chunked */
    unsigned conn_close : 1;     /* Connection: close token */
    unsigned conn_keep_alive : 1;/* Connection: keep-alive token */
    unsigned conn_upgrade : 1;   /* Connection: upgrade token */
    unsigned upgrade_websocket : 1; /* Upgrade: websocket (case-insensitive) */
    unsigned expect_continue : 1;   /* Expect: 100-continue */

    size_t nheaders;
    struct px_h1_header headers[PX_H1_MAX_HEADERS];
};

struct px_h1_response {
    int status;              /* 100..999 */
    int minor_version;
    const char *reason;
    size_t reason_len;
    int64_t content_length;  /* -1 when absent */
    unsigned chunked : 1;
    unsigned conn_close : 1;
    unsigned conn_keep_alive : 1;
    unsigned conn_upgrade : 1;
    size_t nheaders;
    struct px_h1_header headers[PX_H1_MAX_HEADERS];
};

int px_h1_parse_request(const char *buf, size_t len, struct px_req_head *req);

/* The longest path (the request-target up to '?') proxyd takes: nginx's
 * default large_client_header_buffers answers a request line over 8 KiB
 * with 414 too. [route] matching normalizes a path this long on the stack. */
#define PX_H1_PATH_MAX 8192

/* The checks every request-target gets, HTTP/1 (px_h1_parse_request runs
 * them) and HTTP/2 (:path): 0, or -(status). A '#' anywhere -> -400: a
 * fragment is no part of a request-target (RFC 9112 3.2), and a backend
 * that drops it would serve "/login#x" as "/login" past the [route /login]
 * limit. In the path (up to the first '?'; the query is the backend's):
 * a '%' not followed by two hex digits, or "%00", -> -400, as nginx
 * answers them; a path over PX_H1_PATH_MAX -> -414. */
int px_h1_check_target(const char *target, size_t len);
int px_h1_parse_response(const char *buf, size_t len, struct px_h1_response *resp);

/* Returns the method id for a method token (exact, case-sensitive). */
enum px_method px_h1_method_id(const char *m, size_t n);

/* Incremental chunked-body decoder. It consumes everything it is given (a
 * chunk-size line may be split across calls at any byte) and never buffers:
 * the caller moves bytes out of its own buffer as they are reported.
 *
 * px_chunked_step() looks at buf[0..len) and reports the first run:
 *   PX_CHUNK_DATA  *consumed bytes of chunk data (payload) start at buf;
 *   PX_CHUNK_META  *consumed bytes of framing (size lines, extensions, the
 *                  CRLF after data, trailer fields);
 *   PX_CHUNK_DONE  the final CRLF was consumed: *consumed bytes of framing,
 *                  and the body ends exactly there (bytes after it belong to
 *                  the next message);
 *   PX_CHUNK_AGAIN len was 0 (nothing consumed);
 *   PX_CHUNK_ERROR malformed: bad hex, size overflow (> 2^62), missing CRLF,
 *                  bare LF/CR, chunk-size line over 4 KiB, trailers over 16 KiB,
 *                  or a trailer field that must not be one (RFC 9110 6.5.1:
 *                  Content-Length, Transfer-Encoding, Host, Authorization,
 *                  Cache-Control, Content-Type, ...; the list is in http1.c).
 *                  The caller answers a request body's error with 400.
 * A pass-through proxy forwards META and DATA bytes verbatim; a decoding one
 * forwards DATA only. */
enum px_chunk_result { PX_CHUNK_AGAIN, PX_CHUNK_DATA, PX_CHUNK_META, PX_CHUNK_DONE, PX_CHUNK_ERROR };

#define PX_CHUNK_NAME_MAX 20 /* longest trailer name checked against the forbidden list */

struct px_chunked {
    int state;
    uint64_t remaining;      /* bytes of data left in the current chunk */
    uint32_t line_len;       /* bytes of the current size line / trailer section seen */
    uint32_t trailer_len;
    unsigned saw_digit : 1;
    uint8_t name_len;        /* bytes of name[]; PX_CHUNK_NAME_MAX + 1: the name is longer */
    char name[PX_CHUNK_NAME_MAX]; /* the trailer field name being read */
};

void px_chunked_init(struct px_chunked *c);
enum px_chunk_result px_chunked_step(struct px_chunked *c, const char *buf, size_t len, size_t *consumed);

/* How a message body is framed (RFC 9112 6.3), and where its relay stands
 * (h1client.c). */
enum px_body_mode { PX_BODY_NONE = 0, PX_BODY_LENGTH, PX_BODY_CHUNKED, PX_BODY_CLOSE };
struct px_h1c_body {
    enum px_body_mode mode;
    uint64_t remaining;       /* PX_BODY_LENGTH */
    struct px_chunked chunked;
    unsigned passthrough : 1; /* chunked: hand the framing over verbatim */
};

struct evbuffer;
/* Validate chunked framing at the front of buf without moving it: up to the
 * bytes of its first 8 chains (call again for more). Returns the bytes
 * scanned; *data gets how many of them are chunk data; *end is
 * PX_CHUNK_DONE when the body (trailers included) ended within them,
 * PX_CHUNK_ERROR when the framing is invalid (the count is then
 * meaningless), else PX_CHUNK_DATA. The one scan both body directions use. */
size_t px_chunked_scan(struct px_chunked *c, struct evbuffer *buf, uint64_t *data, enum px_chunk_result *end);

#endif
