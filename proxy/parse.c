/* parse.c -- value parsers shared by the config loader, the control
 * protocol and proxyctl (px/parse.h). A leaf: libc only. */
#include "px/parse.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "px/common.h"

/* ASCII case-insensitive equality (proxyd never calls setlocale: the C
 * locale's strcasecmp is exactly that). */
#define ieq(a, b) (strcasecmp((a), (b)) == 0)

const char *px_parse_u64(const char **pp, uint64_t *out)
{
    const char *p = *pp;
    uint64_t v = 0;

    if (*p < '0' || *p > '9')
        return "not a number";
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return "number too large";
        v = v * 10 + d;
    }
    *pp = p;
    *out = v;
    return NULL;
}

const char *px_parse_duration_ms(const char *s, uint64_t *out)
{
    /* Go's time.ParseDuration (kamal-proxy's flags) plus "d" and a bare
     * number of seconds: a sequence of DIGITS[.DIGITS]UNIT ("1m30s", "0.5s"),
     * added up in nanoseconds; a sub-millisecond rest rounds up, so "500us"
     * is 1 ms, never 0 (which means "none" to some keys). */
    static const struct {
        const char *unit;
        uint64_t ns;
    } units[] = {{"ns", 1},
                 {"us", 1000},
                 {"\xc2\xb5s", 1000}, /* µs, as Go writes it */
                 {"ms", 1000000},
                 {"s", 1000000000ull},
                 {"m", 60000000000ull},
                 {"h", 3600000000000ull},
                 {"d", 86400000000000ull}};
    static const char bad[] = "bad duration (use e.g. 500ms, 0.5s, 1m30s, 1h, 2d)";
    const unsigned __int128 max_ns = (unsigned __int128)UINT64_MAX * 1000000u;
    unsigned __int128 total = 0;
    const char *p = s;

    if (s == NULL || *s == '\0')
        return "empty duration";
    if (*s == '-')
        return "must not be negative";
    while (*p) {
        uint64_t v = 0, frac = 0, scale = 1, unit_ns = 0;
        size_t ulen = 0;
        if ((*p < '0' || *p > '9') && *p != '.')
            return bad;
        if (*p != '.' && px_parse_u64(&p, &v) != NULL)
            return *p >= '0' && *p <= '9' ? "too large" : bad;
        if (*p == '.') {
            if (p[1] < '0' || p[1] > '9')
                return bad;
            for (p++; *p >= '0' && *p <= '9'; p++)
                if (scale < 1000000000ull) { /* nanoseconds of an hour: nine digits are plenty */
                    frac = frac * 10 + (uint64_t)(*p - '0');
                    scale *= 10;
                }
        }
        for (size_t i = 0; i < PX_ARRAY_LEN(units); i++) {
            size_t n = strlen(units[i].unit);
            if (n > ulen && strncmp(p, units[i].unit, n) == 0 && (p[n] == '\0' || p[n] == '.' ||
                                                                  (p[n] >= '0' && p[n] <= '9'))) {
                ulen = n;
                unit_ns = units[i].ns;
            }
        }
        if (ulen == 0) {
            if (*p != '\0' || p == s)
                return bad;
            unit_ns = 1000000000ull; /* a bare number is seconds, and only alone */
            if (total != 0)
                return bad;
        }
        p += ulen;
        total += (unsigned __int128)v * unit_ns + (unsigned __int128)frac * unit_ns / scale;
        if (total > max_ns)
            return "too large";
    }
    *out = (uint64_t)((total + 999999u) / 1000000u);
    return NULL;
}

const char *px_parse_size(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t v, mul = 1;

    if (s == NULL || *s == '\0')
        return "empty size";
    if (*s == '-')
        return "must not be negative";
    if (px_parse_u64(&p, &v) != NULL)
        return *p >= '0' && *p <= '9' ? "too large" : "bad size (use e.g. 512, 16k, 10m, 1g)";
    if (*p != '\0') {
        switch (*p) {
        case 'k': case 'K': mul = 1ull << 10; break;
        case 'm': case 'M': mul = 1ull << 20; break;
        case 'g': case 'G': mul = 1ull << 30; break;
        default: return "bad size (use e.g. 512, 16k, 10m, 1g)";
        }
        if (p[1] != '\0')
            return "bad size (use e.g. 512, 16k, 10m, 1g)";
    }
    if (v > UINT64_MAX / mul)
        return "too large";
    *out = v * mul;
    return NULL;
}

const char *px_parse_rate(const char *s, uint64_t *milli_per_s)
{
    static const char bad[] = "must be Nr/s or Nr/m with N in 1..1000000";
    const char *p = s;
    uint64_t n;

    if (s == NULL || px_parse_u64(&p, &n) != NULL || n < 1 || n > 1000000)
        return bad;
    if (strcmp(p, "r/s") == 0)
        *milli_per_s = n * 1000;
    else if (strcmp(p, "r/m") == 0)
        *milli_per_s = n * 1000 / 60;
    else
        return bad;
    return NULL;
}

const char *px_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"yes", "on", "true", "1"};
    static const char *const no[] = {"no", "off", "false", "0"};

    if (s == NULL)
        return "expected yes or no";
    for (size_t i = 0; i < PX_ARRAY_LEN(yes); i++) {
        if (ieq(s, yes[i])) {
            *out = 1;
            return NULL;
        }
        if (ieq(s, no[i])) {
            *out = 0;
            return NULL;
        }
    }
    return "expected yes or no";
}

const char *px_parse_check_name(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > 64)
        return "name must be 1..64 characters";
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return "name may contain only letters, digits, '_', '-' and '.'";
    }
    return NULL;
}

const char *px_parse_check_header_name(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > 64)
        return "a header name must be 1..64 characters";
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c && strchr("!#$%&'*+-.^_`|~", c))))
            return "not a header name (letters, digits and !#$%&'*+-.^_`|~)";
    }
    return NULL;
}

const char *px_parse_check_path(const char *v)
{
    if (v[0] != '/')
        return "must start with '/'";
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#')
            return "bad character in path";
    }
    return NULL;
}

const char *px_parse_redis(const char *s, struct px_redis_addr *out)
{
    struct px_redis_addr a;
    const char *p, *h, *he;
    uint64_t n;

    memset(&a, 0, sizeof(a));
    a.port = 6379;
    if (strncmp(s, "unix:", 5) == 0) {
        p = s + 5;
        if (*p != '/' || strlen(p) >= sizeof(a.path))
            return "unix: needs an absolute socket path of at most 107 bytes";
        for (const char *q = p; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f)
                return "control character in path";
        memcpy(a.path, p, strlen(p) + 1);
        *out = a;
        return NULL;
    }
    if (strncmp(s, "redis://", 8) != 0)
        return "must be redis://HOST:PORT/DB or unix:PATH";
    h = s + 8;
    if (*h == '[') {
        he = strchr(h, ']');
        if (he == NULL)
            return "bad [IPv6] host";
        p = he + 1;
        h++;
    } else {
        for (he = h; *he && *he != ':' && *he != '/'; he++)
            ;
        p = he;
    }
    if (he == h || (size_t)(he - h) >= sizeof(a.host))
        return "must be redis://HOST:PORT/DB or unix:PATH (no host)";
    for (const char *q = h; q < he; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
              strchr(".-_:", *q)))
            return "bad host (redis://HOST:PORT/DB; no user or password in the URL: password_file)";
    memcpy(a.host, h, (size_t)(he - h));
    if (*p == ':') {
        p++;
        if (px_parse_u64(&p, &n) != NULL || n < 1 || n > 65535)
            return "bad port (1..65535)";
        a.port = (int)n;
    }
    if (*p == '/' && p[1] != '\0') {
        p++;
        if (px_parse_u64(&p, &n) != NULL || n > 1000000)
            return "bad database number";
        a.db = (int)n;
    } else if (*p == '/') {
        p++;
    }
    if (*p != '\0')
        return "must be redis://HOST:PORT/DB or unix:PATH";
    *out = a;
    return NULL;
}
