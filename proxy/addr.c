/* addr.c -- "HOST:PORT" parsing and CIDR sets (see px/addr.h). */
#include "px/addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

/* Host names we hand to the resolver: letters, digits, '.', '-', '_'.
 * Anything else is a typo, not something DNS should be asked about. */
static int name_ok(const char *h)
{
    if (*h == '\0')
        return 0;
    for (; *h; h++) {
        unsigned char c = (unsigned char)*h;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

static const char *parse_port(const char *p, unsigned *out)
{
    unsigned v = 0;

    if (*p == '\0')
        return "missing port";
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return "bad port";
        v = v * 10 + (unsigned)(*p - '0');
        if (v > 65535)
            return "bad port";
    }
    *out = v;
    return NULL;
}

/* Resolve host (numeric or name) with getaddrinfo; first IPv4 answer wins,
 * else the first IPv6 one. v6_only: the host was written in brackets. */
static const char *resolve(const char *host, const char *port, int v6_only, struct px_addr *out)
{
    struct addrinfo hints, *res = NULL, *ai, *pick = NULL;
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = v6_only ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_NUMERICHOST;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 && !v6_only) {
        if (!name_ok(host))
            return "bad host";
        hints.ai_flags = AI_NUMERICSERV;
        rc = getaddrinfo(host, port, &hints, &res);
    }
    if (rc != 0 || res == NULL) {
        if (res)
            freeaddrinfo(res);
        return v6_only ? "bad IPv6 address" : "cannot resolve host";
    }
    for (ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
        if (ai->ai_family == AF_INET6 && pick == NULL)
            pick = ai;
    }
    if (pick == NULL || pick->ai_addrlen > sizeof(out->ss)) {
        freeaddrinfo(res);
        return "cannot resolve host";
    }
    memset(&out->ss, 0, sizeof(out->ss));
    memcpy(&out->ss, pick->ai_addr, pick->ai_addrlen);
    out->len = (socklen_t)pick->ai_addrlen;
    freeaddrinfo(res);
    return NULL;
}

const char *px_addr_parse(const char *s, struct px_addr *out)
{
    char host[PX_ADDR_TEXT_MAX], port[8];
    const char *colon, *err;
    size_t n, hn;
    unsigned pv = 0;
    int v6 = 0;

    if (s == NULL || *s == '\0')
        return "empty address";
    n = strlen(s);
    if (n >= PX_ADDR_TEXT_MAX)
        return "address too long";

    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL)
            return "missing ']'";
        hn = (size_t)(rb - s - 1);
        if (hn == 0)
            return "bad IPv6 address";
        memcpy(host, s + 1, hn);
        host[hn] = '\0';
        if (rb[1] != ':')
            return rb[1] == '\0' ? "missing port" : "bad port";
        colon = rb + 1;
        v6 = 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return "missing port";
        if (memchr(s, ':', (size_t)(colon - s)) != NULL)
            return "IPv6 address needs brackets: [ADDR]:PORT";
        hn = (size_t)(colon - s);
        memcpy(host, s, hn);
        host[hn] = '\0';
    }
    if ((err = parse_port(colon + 1, &pv)) != NULL)
        return err;
    snprintf(port, sizeof(port), "%u", pv);

    if (!v6 && (hn == 0 || (hn == 1 && host[0] == '*'))) {
        /* ":PORT" / "*:PORT": any address; IPv4 preferred. */
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
        memset(&out->ss, 0, sizeof(out->ss));
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)pv);
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        out->len = sizeof(*sin);
    } else if ((err = resolve(host, port, v6, out)) != NULL) {
        return err;
    }
    memcpy(out->text, s, n + 1);
    return NULL;
}

size_t px_addr_ntop(const struct sockaddr *sa, char *buf, size_t buflen)
{
    const void *src = NULL;

    if (buf == NULL || buflen == 0)
        return 0;
    buf[0] = '\0';
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET)
        src = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6)
        src = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (src == NULL || inet_ntop(sa->sa_family, src, buf, (socklen_t)buflen) == NULL) {
        buf[0] = '\0';
        return 0;
    }
    return strlen(buf);
}

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

const char *px_cidr_parse(const char *s, struct px_cidr *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    const char *slash;
    size_t n;
    unsigned plen, maxlen;
    struct px_cidr c;

    if (s == NULL || *s == '\0')
        return "empty address";
    memset(&c, 0, sizeof(c));
    slash = strchr(s, '/');
    n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof(buf))
        return "bad address";
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, c.addr) == 1) {
        c.family = AF_INET;
        maxlen = 32;
    } else if (inet_pton(AF_INET6, buf, c.addr) == 1) {
        c.family = AF_INET6;
        maxlen = 128;
    } else {
        return "bad address";
    }
    plen = maxlen;
    if (slash) {
        const char *p = slash + 1;
        if (*p == '\0' || strlen(p) > 3)
            return "bad prefix length";
        plen = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return "bad prefix length";
            plen = plen * 10 + (unsigned)(*p - '0');
        }
        if (plen > maxlen)
            return "bad prefix length";
    }
    /* "::ffff:10.0.0.0/104" is an IPv4 range: store it as one so it
     * matches the way px_cidr_match sees v4-mapped peers. */
    if (c.family == AF_INET6 && plen >= 96 && memcmp(c.addr, v4mapped_prefix, 12) == 0) {
        memmove(c.addr, c.addr + 12, 4);
        memset(c.addr + 4, 0, 12);
        c.family = AF_INET;
        plen -= 96;
        maxlen = 32;
    }
    c.prefix_len = (uint8_t)plen;
    for (unsigned bit = plen; bit < maxlen; bit++)
        c.addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
    *out = c;
    return NULL;
}

/* Family and address bytes of an address, v4-mapped IPv6 folded to IPv4. */
static int addr_bytes(int family, const uint8_t *a, const uint8_t **bytes)
{
    if (family == AF_INET6 && memcmp(a, v4mapped_prefix, 12) == 0) {
        *bytes = a + 12;
        return AF_INET;
    }
    *bytes = a;
    return family;
}

static int match_bytes(const struct px_cidr *set, size_t n, int family, const uint8_t *a)
{
    for (size_t i = 0; i < n; i++) {
        const struct px_cidr *c = &set[i];
        unsigned full, rem;

        if (c->family != family)
            continue;
        full = c->prefix_len / 8u;
        rem = c->prefix_len % 8u;
        if (memcmp(c->addr, a, full) != 0)
            continue;
        if (rem) {
            uint8_t mask = (uint8_t)(0xffu << (8 - rem));
            if ((c->addr[full] & mask) != (a[full] & mask))
                continue;
        }
        return 1;
    }
    return 0;
}

int px_cidr_match(const struct px_cidr *set, size_t n, const struct sockaddr *sa)
{
    const uint8_t *bytes;
    int family;

    if (set == NULL || n == 0 || sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        return match_bytes(set, n, AF_INET, (const uint8_t *)&sin->sin_addr);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        family = addr_bytes(AF_INET6, (const uint8_t *)&sin6->sin6_addr, &bytes);
        return match_bytes(set, n, family, bytes);
    }
    return 0;
}

int px_cidr_match_text(const struct px_cidr *set, size_t n, const char *p, size_t len)
{
    char buf[INET6_ADDRSTRLEN + 1];
    uint8_t a[16];
    const uint8_t *bytes;
    int family;

    if (set == NULL || n == 0 || p == NULL)
        return 0;
    /* X-Forwarded-For members may carry optional whitespace; an IPv6
     * member may be bracketed. */
    while (len && (p[0] == ' ' || p[0] == '\t'))
        p++, len--;
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (len >= 2 && p[0] == '[' && p[len - 1] == ']')
        p++, len -= 2;
    if (len == 0 || len >= sizeof(buf) || memchr(p, '\0', len) != NULL)
        return 0;
    memcpy(buf, p, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, a) == 1)
        return match_bytes(set, n, AF_INET, a);
    if (inet_pton(AF_INET6, buf, a) != 1)
        return 0;
    family = addr_bytes(AF_INET6, a, &bytes);
    return match_bytes(set, n, family, bytes);
}

int px_host_normalize(const char *host, size_t len, char *out, size_t outlen)
{
    if (host == NULL || len == 0)
        return 0;
    size_t end = len;
    if (host[0] == '[') {
        const char *rb = memchr(host, ']', len);
        if (rb == NULL)
            return -1;
        end = (size_t)(rb - host) + 1;
    } else {
        const char *colon = memchr(host, ':', len);
        if (colon)
            end = (size_t)(colon - host);
    }
    if (end > 0 && host[end - 1] == '.')
        end--;
    if (end >= outlen)
        return -1;
    for (size_t i = 0; i < end; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        else if (c <= ' ' || c == '/' || c == '\\' || c >= 0x7f)
            return -1;
        out[i] = (char)c;
    }
    out[end] = '\0';
    return (int)end;
}

void px_addr_with_port(const struct px_addr *a, unsigned port, struct px_addr *out)
{
    *out = *a;
    if (out->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&out->ss)->sin_port = htons((uint16_t)port);
    else if (out->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&out->ss)->sin6_port = htons((uint16_t)port);
    char *colon = strrchr(out->text, ':');
    if (colon && (size_t)(colon - out->text) + 7 < sizeof(out->text))
        snprintf(colon + 1, 6, "%u", port);
}
