/* routes.c -- immutable route snapshots of refcounted parts: build,
 * publish, reclaim; the target registry. See px/routes.h for the lifetime
 * protocol. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/common.h"
#include "px/config.h"
#include "px/log.h"
#include "px/routes.h"
#include "px/services.h"
#include "px/tls.h"

/* One replaceable part of a snapshot (config, TLS, services). Snapshots
 * name parts; a part is freed with the last snapshot naming it. */
struct part {
    int refs;                      /* snapshots naming it; main thread only */
    void *obj;
    void (*destroy)(void *);
};

struct pin {
    _Atomic uint32_t n;
    char pad[64 - sizeof(uint32_t)];
};

struct px_routes {
    /* what workers read (copies of the parts' objects, one load each) */
    const struct px_config *cfg;
    const struct px_tls *tls;      /* NULL without listen_https */
    const struct px_services *svcs;
    struct part *parts[PX_PART_COUNT];
    struct px_routes *next_retired;
    struct pin pins[PX_MAX_WORKERS];
};

struct slot {
    _Atomic(struct px_routes *) hazard;
    struct px_routes *mine;        /* worker-private copy of hazard */
    char pad[64 - 2 * sizeof(void *)];
};

static _Atomic(struct px_routes *) current;
static struct slot slots[PX_MAX_WORKERS];
static struct px_routes *retired;  /* main thread only */
static int nworkers = PX_MAX_WORKERS;

/* Target registry: main thread only. */
static struct px_target **targets;
static size_t ntargets, cap_targets;
static uint32_t next_target_id;

void px_target_inflight(const struct px_target *t, uint32_t *requests, uint32_t *tunnels)
{
    uint32_t rq = 0, tn = 0;
    for (int w = 0; w < nworkers; w++) {
        rq += atomic_load_explicit(&t->load[w].requests, memory_order_relaxed);
        tn += atomic_load_explicit(&t->load[w].tunnels, memory_order_relaxed);
    }
    if (requests)
        *requests = rq;
    if (tunnels)
        *tunnels = tn;
}

void px_routes_set_nworkers(int n)
{
    nworkers = n < 1 ? 1 : (n > PX_MAX_WORKERS ? PX_MAX_WORKERS : n);
}

struct px_target *px_target_acquire(const struct px_addr *a)
{
    for (size_t i = 0; i < ntargets; i++) {
        struct px_target *t = targets[i];
        if (t->addr.len == a->len && memcmp(&t->addr.ss, &a->ss, a->len) == 0 &&
            strcmp(t->addr.text, a->text) == 0) {
            t->refs++;
            return t;
        }
    }
    if (ntargets == cap_targets) {
        size_t nc = cap_targets ? cap_targets * 2 : 16;
        struct px_target **nt = realloc(targets, nc * sizeof(*nt));
        if (nt == NULL)
            return NULL;
        targets = nt;
        cap_targets = nc;
    }
    struct px_target *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->load = calloc((size_t)nworkers, sizeof(*t->load));
    if (t->load == NULL) {
        free(t);
        return NULL;
    }
    t->addr = *a;
    t->id = next_target_id++;
    atomic_init(&t->healthy, 1);
    atomic_init(&t->draining, 0);
    t->refs = 1;
    targets[ntargets++] = t;
    return t;
}

void px_target_release(struct px_target *t)
{
    if (t == NULL || --t->refs > 0)
        return;
    for (size_t i = 0; i < ntargets; i++) {
        if (targets[i] == t) {
            targets[i] = targets[--ntargets];
            break;
        }
    }
    free(t->load);
    free(t);
}

static void destroy_config(void *o)
{
    px_config_free(o);
}

static void destroy_tls(void *o)
{
    px_tls_free(o);
}

static void destroy_services(void *o)
{
    px_services_free(o);
}

static void part_put(struct part *p)
{
    if (p == NULL || --p->refs > 0)
        return;
    p->destroy(p->obj);
    free(p);
}

/* A new part holding obj (NULL obj is a valid part: no TLS). On failure obj
 * is destroyed. */
static struct part *part_new(void *obj, void (*destroy)(void *))
{
    struct part *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        destroy(obj);
        return NULL;
    }
    p->refs = 1;
    p->obj = obj;
    p->destroy = destroy;
    return p;
}

static void routes_free(struct px_routes *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < PX_PART_COUNT; i++)
        part_put(r->parts[i]);
    free(r);
}

/* A snapshot of three parts; takes over one reference on each (dropped on
 * failure). */
static struct px_routes *routes_of(struct part *pc, struct part *pt, struct part *ps, char *err, size_t errlen)
{
    struct px_routes *r = NULL;
    if (pc == NULL || pt == NULL || ps == NULL || (r = calloc(1, sizeof(*r))) == NULL) {
        part_put(pc);
        part_put(pt);
        part_put(ps);
        snprintf(err, errlen, "out of memory building routes");
        return NULL;
    }
    r->parts[PX_PART_CONFIG] = pc;
    r->parts[PX_PART_TLS] = pt;
    r->parts[PX_PART_SERVICES] = ps;
    r->cfg = pc->obj;
    r->tls = pt->obj;
    r->svcs = ps->obj;
    return r;
}

struct px_routes *px_routes_make(struct px_config *cfg, struct px_tls *tls, struct px_services *svcs, char *err,
                                 size_t errlen)
{
    if (cfg == NULL || svcs == NULL || px_services_seal(svcs, err, errlen) < 0) {
        if (cfg == NULL || svcs == NULL)
            snprintf(err, errlen, "a snapshot needs a config and a services table");
        px_config_free(cfg);
        px_tls_free(tls);
        px_services_free(svcs);
        return NULL;
    }
    return routes_of(part_new(cfg, destroy_config), part_new(tls, destroy_tls),
                     part_new(svcs, destroy_services), err, errlen);
}

static px_services_provider provider;
static void *provider_arg;

void px_routes_set_services_provider(px_services_provider fn, void *arg)
{
    provider = fn;
    provider_arg = arg;
}

static px_tls_provider tls_provider;
static void *tls_provider_arg;

void px_routes_set_tls_provider(px_tls_provider fn, void *arg)
{
    tls_provider = fn;
    tls_provider_arg = arg;
}

struct px_routes *px_routes_build(struct px_config *cfg, char *err, size_t errlen)
{
    struct px_tls *tls = NULL;
    struct px_services *svcs = NULL;
    const struct px_routes *cur = px_routes_peek();
    const struct px_tls *prev = cur ? cur->tls : NULL;
    if (cfg->has_listen_https &&
        (tls = tls_provider ? tls_provider(tls_provider_arg, cfg, prev, err, errlen)
                            : px_tls_build(&cfg->tls, prev, err, errlen)) == NULL)
        goto fail;
    svcs = provider ? provider(provider_arg, cfg, err, errlen) : px_services_from_config(cfg, err, errlen);
    if (svcs == NULL)
        goto fail;
    return px_routes_make(cfg, tls, svcs, err, errlen);
fail:
    px_tls_free(tls);
    px_config_free(cfg);
    return NULL;
}

/* A new snapshot: the current one with part `which` replaced by obj. */
static int publish_part(int which, void *obj, void (*destroy)(void *), char *err, size_t errlen)
{
    struct px_routes *cur = atomic_load(&current);
    if (cur == NULL) {
        destroy(obj);
        snprintf(err, errlen, "nothing published yet");
        return -1;
    }
    struct part *p[PX_PART_COUNT];
    for (int i = 0; i < PX_PART_COUNT; i++) {
        p[i] = cur->parts[i];
        p[i]->refs++;
    }
    part_put(p[which]);
    p[which] = part_new(obj, destroy);
    struct px_routes *r = routes_of(p[PX_PART_CONFIG], p[PX_PART_TLS], p[PX_PART_SERVICES], err, errlen);
    if (r == NULL)
        return -1;
    px_routes_publish(r);
    return 0;
}

int px_routes_publish_services(struct px_services *svcs, char *err, size_t errlen)
{
    if (svcs == NULL) {
        snprintf(err, errlen, "no services table");
        return -1;
    }
    if (px_services_seal(svcs, err, errlen) < 0) {
        px_services_free(svcs);
        return -1;
    }
    return publish_part(PX_PART_SERVICES, svcs, destroy_services, err, errlen);
}

int px_routes_publish_tls(struct px_tls *tls, char *err, size_t errlen)
{
    return publish_part(PX_PART_TLS, tls, destroy_tls, err, errlen);
}

int px_routes_part_refs(const struct px_routes *r, enum px_routes_part which)
{
    return r->parts[which]->refs;
}

void px_routes_publish(struct px_routes *r)
{
    struct px_routes *old = atomic_exchange(&current, r);
    if (old) {
        old->next_retired = retired;
        retired = old;
    }
    px_routes_reap();
}

static int in_use(struct px_routes *r)
{
    for (int w = 0; w < nworkers; w++) {
        if (atomic_load(&slots[w].hazard) == r)
            return 1;
        if (atomic_load_explicit(&r->pins[w].n, memory_order_acquire) != 0)
            return 1;
    }
    return 0;
}

int px_routes_reap(void)
{
    int left = 0;
    struct px_routes **pp = &retired;
    while (*pp) {
        struct px_routes *r = *pp;
        if (in_use(r)) {
            left++;
            pp = &r->next_retired;
        } else {
            *pp = r->next_retired;
            routes_free(r);
        }
    }
    return left;
}

void px_routes_shutdown(void)
{
    while (retired) {
        struct px_routes *r = retired;
        retired = r->next_retired;
        routes_free(r);
    }
    routes_free(atomic_exchange(&current, NULL));
    for (int w = 0; w < PX_MAX_WORKERS; w++) {
        atomic_store(&slots[w].hazard, NULL);
        slots[w].mine = NULL;
    }
    free(targets);
    targets = NULL;
    ntargets = cap_targets = 0;
}

const struct px_routes *px_routes_peek(void)
{
    return atomic_load(&current);
}

const struct px_routes *px_routes_current(int wid)
{
    struct slot *s = &slots[wid];
    struct px_routes *c = atomic_load_explicit(&current, memory_order_acquire);
    if (PX_LIKELY(c == s->mine))
        return c;
    /* Hazard-pointer handshake: announce, then re-check that it is still
     * current, so the reaper either sees our hazard or we see its swap. */
    for (;;) {
        atomic_store(&s->hazard, c);
        struct px_routes *c2 = atomic_load(&current);
        if (c2 == c)
            break;
        c = c2;
    }
    s->mine = c;
    return c;
}

void px_routes_pin(const struct px_routes *cr, int wid)
{
    struct px_routes *r = (struct px_routes *)cr;
    uint32_t n = atomic_load_explicit(&r->pins[wid].n, memory_order_relaxed);
    atomic_store_explicit(&r->pins[wid].n, n + 1, memory_order_relaxed);
}

void px_routes_unpin(const struct px_routes *cr, int wid)
{
    struct px_routes *r = (struct px_routes *)cr;
    uint32_t n = atomic_load_explicit(&r->pins[wid].n, memory_order_relaxed);
    atomic_store_explicit(&r->pins[wid].n, n - 1, memory_order_release);
}

const struct px_config *px_routes_config(const struct px_routes *r)
{
    return r->cfg;
}

const struct px_services *px_routes_services(const struct px_routes *r)
{
    return r->svcs;
}

const struct px_tls *px_routes_tls(const struct px_routes *r)
{
    return r->tls;
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

const struct px_service *px_routes_match(const struct px_routes *r, const char *host, size_t host_len,
                                         const char *path, size_t path_len)
{
    return px_services_match(r->svcs, host, host_len, path, path_len);
}
