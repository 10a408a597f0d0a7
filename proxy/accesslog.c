/* accesslog.c -- the access-log line, JSON or nginx's combined
 * (px/accesslog.h): one pass into the caller's buffer, after one check
 * against a bound. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "px/accesslog.h"

static const char hex_lower[] = "0123456789abcdef";
static const char hex_upper[] = "0123456789ABCDEF";

/* JSON string body: escape quote, backslash, control bytes and non-ASCII
 * bytes (\u00XX keeps the line valid UTF-8 whatever the client sent). */
static char *json_str(char *p, const char *s, size_t n)
{
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            memcpy(p, "\\u00", 4);
            p += 4;
            *p++ = hex_lower[c >> 4];
            *p++ = hex_lower[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    return p;
}

/* nginx's ngx_http_log_escape: '"', '\\', < 0x20 and >= 0x7f as \xHH. */
static char *ngx_esc(char *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = 'x';
            *p++ = hex_upper[c >> 4];
            *p++ = hex_upper[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    return p;
}

#define LIT(p, s) (memcpy((p), (s), sizeof(s) - 1), (p) + sizeof(s) - 1)

/* The formatted second, per thread: strftime once a second, not per line. */
static _Thread_local time_t log_sec = -1;
static _Thread_local char log_time[24];
static _Thread_local time_t local_sec = -1;
static _Thread_local char local_time[32];

size_t px_access_log_json(const struct px_access_entry *e, char *buf, size_t cap)
{
    size_t svc_len = strlen(e->service), up_len = strlen(e->upstream);
    size_t limited_len = e->limited ? strlen(e->limited) : 0;
    size_t esc = e->client_len + e->method_len + e->host_len + e->path_len + svc_len + up_len + e->request_id_len +
                 limited_len + (e->user_agent ? e->user_agent_len : 0) + (e->referer ? e->referer_len : 0);
    size_t bound = 600;
    for (size_t i = 0; i < e->nfields; i++)
        if (e->fields[i].value) {
            esc += e->fields[i].key_len + e->fields[i].value_len;
            bound += 8;
        }
    /* every escaped byte takes at most 6; 600 covers the fixed text, the
     * numbers and the protocol name */
    bound += 6 * esc;
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
    p = json_str(LIT(p, ",\"method\":"), e->method, e->method_len);
    p = json_str(LIT(p, ",\"host\":"), e->host, e->host_len);
    p = json_str(LIT(p, ",\"path\":"), e->path, e->path_len);
    p += sprintf(p,
                 ",\"status\":%d,\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64 ",\"duration_ms\":%" PRIu64
                 ".%03u,\"service\":",
                 e->status, e->bytes_in, e->bytes_out, e->duration_us / 1000, (unsigned)(e->duration_us % 1000));
    p = json_str(p, e->service, svc_len);
    p = json_str(LIT(p, ",\"upstream\":"), e->upstream, up_len);
    if (e->upstream_status)
        p += sprintf(p, ",\"upstream_status\":%d,\"upstream_ms\":%" PRIu64 ".%03u", e->upstream_status,
                     e->upstream_us / 1000, (unsigned)(e->upstream_us % 1000));
    p = json_str(LIT(p, ",\"request_id\":"), e->request_id, e->request_id_len);
    p += sprintf(p, ",\"proto\":\"%s\",\"tls\":%s", e->proto, e->tls ? "true" : "false");
    p = json_str(LIT(p, ",\"user_agent\":"), e->user_agent ? e->user_agent : "", e->user_agent ? e->user_agent_len : 0);
    p = json_str(LIT(p, ",\"referer\":"), e->referer ? e->referer : "", e->referer ? e->referer_len : 0);
    if (e->limited)
        p = json_str(LIT(p, ",\"limited\":"), e->limited, limited_len);
    for (size_t i = 0; i < e->nfields; i++) {
        const struct px_access_field *f = &e->fields[i];
        if (f->value == NULL)
            continue;
        *p++ = ',';
        p = json_str(p, f->key, f->key_len);
        *p++ = ':';
        p = json_str(p, f->value, f->value_len);
    }
    return (size_t)(LIT(p, "}\n") - buf);
}

size_t px_access_log_combined(const struct px_access_entry *e, char *buf, size_t cap)
{
    static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    size_t vlen = strlen(e->version);
    size_t esc = e->client_len + e->method_len + e->target_len + vlen + (e->user_agent ? e->user_agent_len : 0) +
                 (e->referer ? e->referer_len : 0);
    /* \xHH: 4 per byte; 128 covers the fixed text, the time and the numbers */
    size_t bound = 128 + 4 * esc;
    if (bound > cap)
        return bound;
    time_t sec = (time_t)(e->start_wall_ms / 1000);
    if (sec != local_sec) {
        struct tm tm;
        localtime_r(&sec, &tm);
        long off = tm.tm_gmtoff / 60;
        char sign = off < 0 ? '-' : '+';
        if (off < 0)
            off = -off;
        snprintf(local_time, sizeof(local_time), "%02d/%s/%04d:%02d:%02d:%02d %c%02ld%02ld", tm.tm_mday,
                 mon[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign, off / 60 % 100,
                 off % 60);
        local_sec = sec;
    }
    char *p = ngx_esc(buf, e->client, e->client_len);
    p += sprintf(p, " - - [%s] \"", local_time);
    if (e->method_len) {
        p = ngx_esc(p, e->method, e->method_len);
        *p++ = ' ';
        p = ngx_esc(p, e->target, e->target_len);
        *p++ = ' ';
        p = ngx_esc(p, e->version, vlen);
    } else if (e->target_len) {
        p = ngx_esc(p, e->target, e->target_len); /* the line that did not parse, as nginx logs it */
    } else {
        *p++ = '-';
    }
    p += sprintf(p, "\" %d %" PRIu64 " \"", e->status, e->body_out);
    if (e->referer)
        p = ngx_esc(p, e->referer, e->referer_len);
    else
        *p++ = '-';
    p = LIT(p, "\" \"");
    if (e->user_agent)
        p = ngx_esc(p, e->user_agent, e->user_agent_len);
    else
        *p++ = '-';
    return (size_t)(LIT(p, "\"\n") - buf);
}

size_t px_access_log_format(enum px_access_format f, const struct px_access_entry *e, char *buf, size_t cap)
{
    return f == PX_ACCESS_COMBINED ? px_access_log_combined(e, buf, cap) : px_access_log_json(e, buf, cap);
}
