/* px/parse.h -- value parsers: durations, sizes, rates, booleans, names and
 * URL paths. A leaf (libc only): the config loader, the control protocol and
 * proxyctl share it, so proxyctl links no data-path code.
 *
 * Every parser returns NULL on success, else a static message for people
 * ("bad duration (use e.g. 500ms, 10s, 5m, 1h, 2d)"); *out is written only
 * on success. No state, safe on any thread. */
#ifndef PX_PARSE_H
#define PX_PARSE_H

#include <stdint.h>

/* Unsigned decimal at *pp (no sign), overflow checked; advances *pp past
 * the digits and leaves whatever follows for the caller. */
const char *px_parse_u64(const char **pp, uint64_t *out);
/* Go syntax plus days: "500ms" "0.5s" "1m30s" "1h" "2d" (ns, us, ms, s, m, h, d
 * in any sequence, decimals allowed); a bare number alone is seconds; a
 * sub-millisecond rest rounds up. */
const char *px_parse_duration_ms(const char *s, uint64_t *out);
/* "16k" "10m" "1g" (powers of 1024, either case); a bare number is bytes. */
const char *px_parse_size(const char *s, uint64_t *out);
/* nginx's rate: "Nr/s" or "Nr/m" with N in 1..1000000, as milli-requests
 * per second (r/m rounds down: 1r/m = 16). */
const char *px_parse_rate(const char *s, uint64_t *milli_per_s);
/* yes/no/on/off/true/false/1/0, case-insensitive. */
const char *px_parse_bool(const char *s, int *out);
/* Section names ([limit NAME], [service NAME]), references to them and the
 * control protocol's service names: 1..64 of [A-Za-z0-9_.-]. */
const char *px_parse_check_name(const char *s);
/* An absolute URL path: '/' then visible ASCII, no '?' or '#' (config paths
 * and the control protocol's). */
const char *px_parse_check_path(const char *s);
/* An HTTP field name to log (log_request_headers, log_response_headers): a
 * token (RFC 9110 5.6.2), 1..64 characters. */
const char *px_parse_check_header_name(const char *s);

/* [cluster] redis = "redis://HOST:PORT/DB" (port default 6379, /DB
 * default 0; HOST a name, an IPv4 address or [IPv6]) or "unix:PATH". */
struct px_redis_addr {
    char host[256];          /* "" for a Unix socket */
    int port;
    int db;
    char path[108];          /* the Unix socket, or "" */
};
const char *px_parse_redis(const char *s, struct px_redis_addr *out);

#endif
