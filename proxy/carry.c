/* carry.c -- the carry-over object (see px/carry.h): references, kept in
 * step with what is published. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "px/carry.h"
#include "px/common.h"
#include "px/limit.h"
#include "px/tls.h"

void px_carry_init(struct px_carry *c)
{
    memset(c, 0, sizeof(*c));
}

int px_carry_add_listener(struct px_carry *c, const struct px_addr *a, int https, int fd)
{
    struct px_carry_listener *l = NULL;
    for (size_t i = 0; i < c->nlisteners && l == NULL; i++)
        if (c->listeners[i].https == https && strcmp(c->listeners[i].addr.text, a->text) == 0)
            l = &c->listeners[i];
    if (l == NULL) {
        if (c->nlisteners == PX_CARRY_MAX_LISTENERS)
            return -1;
        l = &c->listeners[c->nlisteners++];
        memset(l, 0, sizeof(*l));
        l->addr = *a;
        l->https = https;
    }
    if (l->nfds == PX_MAX_WORKERS)
        return -1;
    l->fds[l->nfds++] = fd;
    return 0;
}

void px_carry_keep_zones(struct px_carry *c, struct px_limits *zones)
{
    if (zones == c->zones)
        return;
    px_limits_ref(zones);
    px_limits_free(c->zones);
    c->zones = zones;
}

void px_carry_keep_sessions(struct px_carry *c, struct px_tls_sessions *s)
{
    if (s == c->sessions)
        return;
    px_tls_sessions_ref(s);
    px_tls_sessions_unref(c->sessions);
    c->sessions = s;
}

void px_carry_free(struct px_carry *c)
{
    px_limits_free(c->zones);
    px_tls_sessions_unref(c->sessions);
    px_carry_init(c);
}

/* ---- the serialised carry-over of a binary upgrade ----
 * Native byte order and sizes: it only ever goes to the next process on
 * the same machine. "PXCARRY1", then the ticket keys (u64 rotated_ms, u32
 * length, bytes), the sessions (u32 count; u32 length + DER each), the
 * zones (u32 count; u16 name length, name, u64 zone_size, u32 keys, then
 * per key u8 family, 16 address bytes, u64 excess, u64 last). */

#define CARRY_MAGIC "PXCARRY1"

struct wbuf {
    unsigned char *p;
    size_t len, cap;
    int oom;
};

static void put(struct wbuf *b, const void *v, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, v, n);
    b->len += n;
}

static void put_u32(struct wbuf *b, uint32_t v)
{
    put(b, &v, sizeof(v));
}

static void put_u64(struct wbuf *b, uint64_t v)
{
    put(b, &v, sizeof(v));
}

static void put_session(void *arg, const unsigned char *der, size_t len)
{
    struct wbuf *b = arg;
    put_u32(b, (uint32_t)len);
    put(b, der, len);
}

struct zone_dump {
    struct wbuf *b;
    uint32_t n;
};

static void put_key(void *arg, const struct px_limit_key *k, uint64_t excess, uint64_t last)
{
    struct zone_dump *d = arg;
    put(d->b, &k->family, 1);
    put(d->b, k->addr, 16);
    put_u64(d->b, excess);
    put_u64(d->b, last);
    d->n++;
}

int px_carry_export(const struct px_carry *c, unsigned char **out, size_t *outlen, char *err, size_t errlen)
{
    struct wbuf b = {0};
    unsigned char keys[2 * PX_TLS_TICKET_KEY_LEN];
    uint64_t rotated = 0;
    size_t nk = px_tls_ticket_keys_get(c->sessions, keys, sizeof(keys), &rotated);

    put(&b, CARRY_MAGIC, 8);
    put_u64(&b, rotated);
    put_u32(&b, (uint32_t)nk);
    put(&b, keys, nk);
    OPENSSL_cleanse(keys, sizeof(keys));
    size_t at = b.len;
    put_u32(&b, 0);
    int ns = px_tls_sessions_each(c->sessions, put_session, &b);
    if (!b.oom)
        memcpy(b.p + at, &(uint32_t){(uint32_t)ns}, 4);
    size_t nz = px_limits_count(c->zones);
    put_u32(&b, (uint32_t)nz);
    for (size_t i = 0; i < nz; i++) {
        struct px_limit_zone *z = px_limits_zone(c->zones, i);
        const char *name = px_limit_zone_name(z);
        uint16_t nl = (uint16_t)strlen(name);
        put(&b, &nl, sizeof(nl));
        put(&b, name, nl);
        put_u64(&b, px_limit_zone_size(z));
        at = b.len;
        put_u32(&b, 0);
        struct zone_dump d = {&b, 0};
        px_limit_zone_each(z, put_key, &d);
        if (!b.oom)
            memcpy(b.p + at, &d.n, 4);
    }
    if (b.oom) {
        if (b.p)
            OPENSSL_cleanse(b.p, b.len);
        free(b.p);
        snprintf(err, errlen, "carry-over: out of memory");
        return -1;
    }
    *out = b.p;
    *outlen = b.len;
    return 0;
}

struct rbuf {
    const unsigned char *p;
    size_t len, at;
    int bad;
};

static const void *get(struct rbuf *r, size_t n)
{
    if (r->bad || r->len - r->at < n) {
        r->bad = 1;
        return NULL;
    }
    const void *v = r->p + r->at;
    r->at += n;
    return v;
}

static uint32_t get_u32(struct rbuf *r)
{
    uint32_t v = 0;
    const void *p = get(r, sizeof(v));
    if (p)
        memcpy(&v, p, sizeof(v));
    return v;
}

static uint64_t get_u64(struct rbuf *r)
{
    uint64_t v = 0;
    const void *p = get(r, sizeof(v));
    if (p)
        memcpy(&v, p, sizeof(v));
    return v;
}

int px_carry_import(struct px_carry *c, const unsigned char *buf, size_t len, struct px_carry_counts *n,
                    char *err, size_t errlen)
{
    struct rbuf r = {buf, len, 0, 0};
    const void *magic = get(&r, 8);
    uint64_t now = px_now_ms();

    memset(n, 0, sizeof(*n));
    if (magic == NULL || memcmp(magic, CARRY_MAGIC, 8) != 0) {
        snprintf(err, errlen, "carry-over: not from a compatible proxyd");
        return -1;
    }
    uint64_t rotated = get_u64(&r);
    uint32_t nk = get_u32(&r);
    const unsigned char *keys = get(&r, nk);
    if (keys && nk) {
        px_tls_ticket_keys_set(c->sessions, keys, nk, rotated);
        n->ticket_keys = c->sessions ? nk / PX_TLS_TICKET_KEY_LEN : 0;
    }
    uint32_t ns = get_u32(&r);
    for (uint32_t i = 0; i < ns && !r.bad; i++) {
        uint32_t sl = get_u32(&r);
        const unsigned char *der = get(&r, sl);
        if (der && px_tls_session_add(c->sessions, der, sl) == 0)
            n->sessions++;
    }
    uint32_t nz = get_u32(&r);
    for (uint32_t i = 0; i < nz && !r.bad; i++) {
        uint16_t nl = 0;
        const void *p = get(&r, sizeof(nl));
        if (p)
            memcpy(&nl, p, sizeof(nl));
        const char *name = get(&r, nl);
        uint64_t size = get_u64(&r);
        uint32_t nkeys = get_u32(&r);
        char zname[256];
        snprintf(zname, sizeof(zname), "%.*s", name ? (int)nl : 0, name ? name : "");
        struct px_limit_zone *z = px_limits_find(c->zones, zname);
        /* as a reload does: a zone keeps its state when its name and zone_size stay */
        if (z && px_limit_zone_size(z) != size)
            z = NULL;
        if (z)
            n->zones++;
        for (uint32_t k = 0; k < nkeys && !r.bad; k++) {
            const unsigned char *fam = get(&r, 1), *addr = get(&r, 16);
            uint64_t excess = get_u64(&r), last = get_u64(&r);
            if (z && !r.bad) {
                struct px_limit_key key = {.family = *fam};
                memcpy(key.addr, addr, 16);
                px_limit_zone_restore(z, &key, excess, last, now);
                n->keys++;
            }
        }
    }
    if (r.bad) {
        snprintf(err, errlen, "carry-over: truncated at byte %zu of %zu", r.at, len);
        return -1;
    }
    return 0;
}
