/* px/accesslog.h -- the access-log line of a finished request, in either
 * format (`access_log_format`): the pipeline fills a px_access_entry from
 * the request and calls one formatter once; nothing here knows a request,
 * a worker or a protocol. Each formatter is one pass into the caller's
 * buffer after one check against a bound, and allocates nothing.
 *
 * Escaping: every value a client chose (client address from
 * X-Forwarded-For, method, Host, path, request line, header values) is
 * escaped so that no input forges a line or breaks its syntax: JSON string
 * escaping, with every byte outside printable ASCII as \u00XX (the line
 * stays ASCII and valid JSON whatever the client sent; the byte is the code
 * point), and in `combined` nginx's \xHH for '"', '\\', bytes < 0x20 and
 * >= 0x7f (ngx_http_log_escape).
 * Threading: any thread; each thread caches its formatted second. */
#ifndef PX_ACCESSLOG_H
#define PX_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

/* access_log_format */
enum px_access_format { PX_ACCESS_JSON = 0, PX_ACCESS_COMBINED };

/* One extra JSON string field (a service's req_NAME / resp_NAME): key from
 * the config (a header token, written as is), value from the client or the
 * upstream (escaped). value NULL: the field is left out. */
struct px_access_field {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
};

/* Borrowed strings, not NUL-terminated unless said; none may be NULL
 * except where said. Client-supplied ones are escaped in the line. */
struct px_access_entry {
    uint64_t start_wall_ms;       /* "time" (UTC, milliseconds); combined: $time_local */
    uint64_t duration_us;
    const char *client; size_t client_len;
    const char *method; size_t method_len; /* "" for a head that did not parse */
    const char *host; size_t host_len;
    const char *path; size_t path_len;
    const char *target; size_t target_len; /* the request-target as received (combined's
                                              * $request); for a head that did not parse, the
                                              * first line as received */
    const char *version;          /* NUL-terminated, as nginx's $request ends: "HTTP/1.1", "HTTP/2.0" */
    int status;
    uint64_t bytes_in;            /* request head + body as received */
    uint64_t bytes_out;           /* response head + body as sent */
    uint64_t body_out;            /* response body only: combined's $body_bytes_sent */
    const char *service;          /* NUL-terminated; "" before a service was chosen */
    const char *upstream;         /* NUL-terminated; "" when none was tried */
    int upstream_status;          /* the upstream's status; 0: none answered (with upstream_us, left out) */
    uint64_t upstream_us;         /* from the first upstream try to the end of its response */
    const char *request_id; size_t request_id_len;
    const char *proto;            /* NUL-terminated: "HTTP/1.1", "HTTP/2", ... (not escaped) */
    int tls;
    const char *user_agent; size_t user_agent_len; /* NULL: absent ("" in JSON, "-" in combined) */
    const char *referer; size_t referer_len;       /* the same */
    const char *limited;          /* NUL-terminated zone name, or NULL: the key is left out */
    const struct px_access_field *fields; /* JSON only, after the others, in order; may be NULL */
    size_t nfields;
};

/* Write one line (ending in '\n', no NUL) for e into buf and return its
 * length; or, when cap is below the line's bound, write nothing and return
 * that bound (> cap): call again with that much room (snprintf's contract,
 * with a bound in place of the exact length). */
size_t px_access_log_json(const struct px_access_entry *e, char *buf, size_t cap);
/* nginx's `combined`: $remote_addr - $remote_user [$time_local] "$request"
 * $status $body_bytes_sent "$http_referer" "$http_user_agent", with
 * $remote_user "-", $time_local in the local time zone
 * ("06/Dec/2026:23:29:29 +0000"), "-" for an absent header. */
size_t px_access_log_combined(const struct px_access_entry *e, char *buf, size_t cap);
/* The formatter of format f. */
size_t px_access_log_format(enum px_access_format f, const struct px_access_entry *e, char *buf, size_t cap);

#endif
