/* px/accesslog.h -- the access-log line of a finished request (formats
 * beside the sink in log.c). The pipeline fills a px_access_entry from the
 * request and calls px_access_log_json once; nothing here knows a request,
 * a worker or a protocol (issue 16 adds `combined` and more fields here).
 * Threading: any thread; each thread caches its formatted second. */
#ifndef PX_ACCESSLOG_H
#define PX_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

/* Borrowed strings, not NUL-terminated unless said; none may be NULL
 * except `limited`. Client-supplied ones are escaped in the line. */
struct px_access_entry {
    uint64_t start_wall_ms;       /* the "time" field (UTC, milliseconds) */
    uint64_t duration_us;
    const char *client; size_t client_len;
    const char *method; size_t method_len;
    const char *host; size_t host_len;
    const char *path; size_t path_len;
    int status;
    uint64_t bytes_out;
    const char *service;          /* NUL-terminated; "" before a service was chosen */
    const char *upstream;         /* NUL-terminated; "" when none was tried */
    const char *request_id; size_t request_id_len;
    const char *proto;            /* NUL-terminated: "HTTP/1.1", "HTTP/2", ... (not escaped) */
    int tls;
    const char *limited;          /* NUL-terminated zone name, or NULL: the key is left out */
};

/* Write one JSON line (ending in '\n', no NUL) for e into buf and return
 * its length; or, when cap is below the line's bound, write nothing and
 * return that bound (> cap): call again with that much room (snprintf's
 * contract, with a bound in place of the exact length). */
size_t px_access_log_json(const struct px_access_entry *e, char *buf, size_t cap);

#endif
