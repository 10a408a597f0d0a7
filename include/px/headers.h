/* px/headers.h -- header names as data, and the heads proxyd writes.
 *
 * Known header names map to an id with flags (h2o token.h style) so the
 * forwarding rules are a table, not strcasecmp chains. The serializers write
 * a whole head with one evbuffer reservation and one copy. */
#ifndef PX_HEADERS_H
#define PX_HEADERS_H

#include <event2/buffer.h>
#include <stddef.h>
#include <stdint.h>

#include "px/http1.h"

enum px_hdr_id {
    PX_HDR_OTHER = 0,
    PX_HDR_HOST,
    PX_HDR_CONNECTION,
    PX_HDR_KEEP_ALIVE,
    PX_HDR_PROXY_CONNECTION,
    PX_HDR_PROXY_OTHER,      /* any other Proxy-* */
    PX_HDR_TE,
    PX_HDR_UPGRADE,
    PX_HDR_TRANSFER_ENCODING,
    PX_HDR_CONTENT_LENGTH,
    PX_HDR_EXPECT,
    PX_HDR_X_FORWARDED_FOR,
    PX_HDR_X_REAL_IP,
    PX_HDR_X_FORWARDED_PROTO,
    PX_HDR_X_FORWARDED_HOST,
    PX_HDR_X_REQUEST_ID,
    PX_HDR_X_REQUEST_START,
};

/* Flags of a header id. */
#define PX_HF_HOP 0x1        /* hop-by-hop: never forwarded as is, either way */
#define PX_HF_REQ_REPLACE 0x2 /* proxyd sets its own value toward the upstream */

enum px_hdr_id px_hdr_lookup(const char *name, size_t len);
unsigned px_hdr_flags(enum px_hdr_id id);

/* What proxyd adds to a request going upstream. */
struct px_fwd {
    const char *client_ip;    /* the client address (see trusted_proxies) */
    size_t client_ip_len;
    const char *peer_ip;      /* the TCP peer */
    size_t peer_ip_len;
    const char *xff;          /* the client's X-Forwarded-For to append to, or NULL (untrusted peer) */
    size_t xff_len;
    const char *proto;        /* "http" or "https" */
    const char *request_id;   /* 32 hex, or the client's value */
    size_t request_id_len;
    uint64_t start_ms;        /* unix ms */
    const char *default_host; /* NUL-terminated Host for a request that has none (HTTP/1.0): the
                                 chosen target's address text, or NULL (then an empty Host) */
    const char *loop;         /* proxyd's CDN-Loop token (RFC 8586) to add as its own line, or NULL */
    size_t loop_len;
    int websocket;            /* keep Upgrade, send Connection: upgrade */
    int strip_expect;         /* proxyd answers 100-continue itself */
    const struct px_hdr_add *set; /* the route's request_headers (nginx proxy_set_header): each
                               * replaces the client's header of its name, or removes it (remove);
                               * NULL/0 when the route names none (then no cost). Names are never
                               * Host, framing, hop-by-hop or proxyd's own (the config checks) */
    size_t nset;
    int forward_headers;      /* the service believes the client's X-Forwarded-Proto/-Host: kept */
    size_t strip;             /* bytes of the path to leave out (strip_path_prefix) */
    int set_length;           /* a buffered body: Content-Length body_length replaces the client's framing */
    uint64_t body_length;
};

/* Serialize the request head to send upstream (HTTP/1.1). */
int px_h1_write_request_head(struct evbuffer *out, const struct px_req_head *r, size_t head_len,
                             const struct px_fwd *f);

/* A response header proxyd adds unless the upstream sent the same name; or,
 * with remove, a header taken out of the upstream's response (never added). */
struct px_hdr_add {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
    int https_only;
    int remove;          /* "-NAME =" in a [headers] section */
    const char *lname;   /* name lowercased (HTTP/2 field name), or NULL */
};

/* At most this many [headers] are added (the "upstream already sent it" set
 * is a 64-bit mask). */
#define PX_MAX_ADD_HEADERS 64

/* Index of the add-header named name (any case), or -1. */
int px_hdr_add_find(const struct px_hdr_add *add, size_t nadd, const char *name, size_t len);

/* How the response head to an HTTP/1.x client is written. */
struct px_resp_opts {
    int client_minor;         /* 0 or 1 */
    int keep_alive;           /* else "Connection: close" */
    int strip_te;             /* body is being de-chunked: drop Transfer-Encoding */
    int is_https;
    int upgrade;              /* 101: keep Upgrade, Connection: upgrade */
    int html;                 /* a local response's body is HTML (a service's error_pages) */
    const struct px_hdr_add *add;
    size_t nadd;
    const char *date;         /* IMF-fixdate of now (px_http_date), or NULL: the Date of proxyd's own
                               * responses, and of an upstream response that has none */
};

/* RFC 9110 5.6.7 IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT". */
#define PX_HTTP_DATE_LEN 29
/* Format unix_sec into out (PX_HTTP_DATE_LEN bytes and a NUL). No locale,
 * no allocation; any thread. */
void px_http_date(int64_t unix_sec, char *out);

/* Serialize an upstream response head for an HTTP/1.x client. Its Date is
 * kept; o->date is added only when it has none (RFC 9110 6.6.1). */
int px_h1_write_response_head(struct evbuffer *out, const struct px_h1_response *resp, size_t head_len,
                              const struct px_resp_opts *o);

/* A response proxyd makes itself (health, 404, 502, ...): status line,
 * Date (o->date, when set), Content-Type text/plain, Content-Length, `extra` (complete header lines
 * such as "Location: ...\r\n", or NULL), the add-headers, Connection, then
 * body (may be NULL with body_len 0; omit_body for HEAD). 0, or -1 when the
 * buffer could not grow (nothing was written: the caller must not go on as
 * if the client got an answer). */
int px_h1_write_local_response(struct evbuffer *out, int status, const char *body, size_t body_len,
                               int omit_body, const struct px_resp_opts *o, const char *extra,
                               size_t extra_len);

const char *px_status_reason(int status);

/* This process's loop token: "proxyd-" and 16 random hex digits, made once
 * (any thread) and constant for the process's life. Every request proxyd
 * sends upstream carries it in a CDN-Loop line (RFC 8586); a request that
 * arrives with it came from this very process (a target that is proxyd
 * itself, or a chain of proxies back to it) and is answered 508 Loop
 * Detected without going upstream again. NUL-terminated; *len its length. */
const char *px_loop_token(size_t *len);

#endif
