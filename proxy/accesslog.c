/* accesslog.c -- the JSON access-log line (px/accesslog.h): one pass into
 * the caller's buffer, after one check against a bound. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "px/accesslog.h"

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

/* The formatted second, per thread: strftime once a second, not per line. */
static _Thread_local time_t log_sec = -1;
static _Thread_local char log_time[24];

size_t px_access_log_json(const struct px_access_entry *e, char *buf, size_t cap)
{
    size_t svc_len = strlen(e->service), up_len = strlen(e->upstream);
    size_t limited_len = e->limited ? strlen(e->limited) : 0;
    /* every escaped byte takes at most 6; 400 covers the fixed text, the
     * numbers and the protocol name */
    size_t bound = 400 + 6 * (e->client_len + e->method_len + e->host_len + e->path_len + svc_len + up_len +
                              e->request_id_len + limited_len);
    if (bound > cap)
        return bound;
    time_t sec = (time_t)(e->start_wall_ms / 1000);
    if (sec != log_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(log_time, sizeof(log_time), "%Y-%m-%dT%H:%M:%S", &tm);
        log_sec = sec;
    }
    char *p = buf;
    p += sprintf(p, "{\"time\":\"%s.%03uZ\",\"client\":", log_time, (unsigned)(e->start_wall_ms % 1000));
    p = json_str(p, e->client, e->client_len);
    memcpy(p, ",\"method\":", 10);
    p = json_str(p + 10, e->method, e->method_len);
    memcpy(p, ",\"host\":", 8);
    p = json_str(p + 8, e->host, e->host_len);
    memcpy(p, ",\"path\":", 8);
    p = json_str(p + 8, e->path, e->path_len);
    p += sprintf(p, ",\"status\":%d,\"bytes_out\":%" PRIu64 ",\"duration_ms\":%" PRIu64 ".%03u,\"service\":",
                 e->status, e->bytes_out, e->duration_us / 1000, (unsigned)(e->duration_us % 1000));
    p = json_str(p, e->service, svc_len);
    memcpy(p, ",\"upstream\":", 12);
    p = json_str(p + 12, e->upstream, up_len);
    memcpy(p, ",\"request_id\":", 14);
    p = json_str(p + 14, e->request_id, e->request_id_len);
    p += sprintf(p, ",\"proto\":\"%s\",\"tls\":%s", e->proto, e->tls ? "true" : "false");
    if (e->limited) {
        memcpy(p, ",\"limited\":", 11);
        p = json_str(p + 11, e->limited, limited_len);
    }
    memcpy(p, "}\n", 2);
    p += 2;
    return (size_t)(p - buf);
}
