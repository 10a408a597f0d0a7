/* routes.c -- immutable route snapshots: build, match, publish, reclaim.
 * See px/routes.h for the lifetime protocol. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/common.h"
#include "px/config.h"
#include "px/log.h"
#include "px/routes.h"
#include "px/tls.h"

/* Services that share a host key, longest path_prefix first. */
struct host_entry {
    char *key;                 /* exact host, or ".suffix" for "*.suffix" */
    size_t key_len;
    const struct px_service **svcs;
    size_t nsvcs;
};

struct pin {
    _Atomic uint32_t n;
    char pad[64 - sizeof(uint32_t)];
};

struct px_routes {
    struct px_config *cfg;
    struct px_tls *tls;
    struct px_service *services;
    size_t nservices;
    struct host_entry *exact;      /* sorted by key */
    size_t nexact;
    struct host_entry *wild;       /* longest suffix first */
    size_t nwild;
    struct host_entry any;         /* catch-all services */
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

static struct px_target *target_get(const struct px_addr *a)
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

static void target_put(struct px_target *t)
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

static void routes_free(struct px_routes *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nservices; i++) {
        struct px_service *s = &r->services[i];
        for (size_t j = 0; j < s->ntargets; j++)
            target_put(s->targets[j]);
        free(s->targets);
    }
    free(r->services);
    for (size_t i = 0; i < r->nexact; i++)
        free(r->exact[i].svcs);
    for (size_t i = 0; i < r->nwild; i++)
        free(r->wild[i].svcs);
    free(r->exact);
    free(r->wild);
    free(r->any.svcs);
    px_tls_free(r->tls);
    px_config_free(r->cfg);
    free(r);
}

static int entry_add(struct host_entry *e, const struct px_service *s)
{
    const struct px_service **n = realloc(e->svcs, (e->nsvcs + 1) * sizeof(*n));
    if (n == NULL)
        return -1;
    e->svcs = n;
    /* insertion sort: longest prefix first */
    size_t i = e->nsvcs++;
    while (i > 0 && e->svcs[i - 1]->path_prefix_len < s->path_prefix_len) {
        e->svcs[i] = e->svcs[i - 1];
        i--;
    }
    e->svcs[i] = s;
    return 0;
}

static struct host_entry *entry_find_or_add(struct host_entry **arr, size_t *n, const char *key)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*arr)[i].key, key) == 0)
            return &(*arr)[i];
    struct host_entry *na = realloc(*arr, (*n + 1) * sizeof(*na));
    if (na == NULL)
        return NULL;
    *arr = na;
    struct host_entry *e = &na[(*n)++];
    memset(e, 0, sizeof(*e));
    e->key = (char *)key;
    e->key_len = strlen(key);
    return e;
}

static int cmp_exact(const void *a, const void *b)
{
    return strcmp(((const struct host_entry *)a)->key, ((const struct host_entry *)b)->key);
}

static int cmp_wild(const void *a, const void *b)
{
    const struct host_entry *x = a, *y = b;
    return x->key_len < y->key_len ? 1 : (x->key_len > y->key_len ? -1 : 0);
}

struct px_routes *px_routes_build(struct px_config *cfg, char *err, size_t errlen)
{
    struct px_routes *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        px_config_free(cfg);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->cfg = cfg;
    if (cfg->has_listen_https && (r->tls = px_tls_build(&cfg->tls, err, errlen)) == NULL) {
        routes_free(r);
        return NULL;
    }
    if (cfg->nservices) {
        r->services = calloc(cfg->nservices, sizeof(*r->services));
        if (r->services == NULL)
            goto nomem;
    }
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct px_service_conf *sc = &cfg->services[i];
        struct px_service *s = &r->services[r->nservices++];
        s->name = sc->name;
        s->hosts = sc->hosts;
        s->nhosts = sc->nhosts;
        s->path_prefix = sc->path_prefix;
        s->path_prefix_len = strlen(sc->path_prefix);
        s->health_check_path = sc->health_check_path;
        s->state = PX_SVC_ACTIVE;
        s->targets = calloc(sc->ntargets ? sc->ntargets : 1, sizeof(*s->targets));
        if (s->targets == NULL)
            goto nomem;
        for (size_t j = 0; j < sc->ntargets; j++) {
            s->targets[j] = target_get(&sc->targets[j]);
            if (s->targets[j] == NULL)
                goto nomem;
            s->ntargets++;
        }
    }
    for (size_t i = 0; i < r->nservices; i++) {
        const struct px_service *s = &r->services[i];
        if (s->nhosts == 0) {
            if (entry_add(&r->any, s) < 0)
                goto nomem;
            continue;
        }
        for (size_t j = 0; j < s->nhosts; j++) {
            const char *h = s->hosts[j];
            struct host_entry *e = (h[0] == '*' && h[1] == '.')
                                       ? entry_find_or_add(&r->wild, &r->nwild, h + 1)
                                       : entry_find_or_add(&r->exact, &r->nexact, h);
            if (e == NULL || entry_add(e, s) < 0)
                goto nomem;
        }
    }
    if (r->nexact)
        qsort(r->exact, r->nexact, sizeof(*r->exact), cmp_exact);
    if (r->nwild)
        qsort(r->wild, r->nwild, sizeof(*r->wild), cmp_wild);
    return r;
nomem:
    snprintf(err, errlen, "out of memory building routes");
    routes_free(r);
    return NULL;
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

static const struct px_service *match_prefix(const struct host_entry *e, const char *path, size_t plen)
{
    for (size_t i = 0; i < e->nsvcs; i++) {
        const struct px_service *s = e->svcs[i];
        size_t n = s->path_prefix_len;
        if (n == 1)
            return s; /* "/" */
        if (plen >= n && memcmp(path, s->path_prefix, n) == 0 &&
            (plen == n || path[n] == '/' || path[n] == '?'))
            return s;
    }
    return NULL;
}

const struct px_service *px_routes_match(const struct px_routes *r, const char *host, size_t host_len,
                                         const char *path, size_t path_len)
{
    char h[256];
    int hl = px_host_normalize(host, host_len, h, sizeof(h));
    const struct px_service *s;
    if (hl > 0) {
        size_t lo = 0, hi = r->nexact;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            int c = strcmp(h, r->exact[mid].key);
            if (c == 0) {
                if ((s = match_prefix(&r->exact[mid], path, path_len)) != NULL)
                    return s;
                break;
            }
            if (c < 0)
                hi = mid;
            else
                lo = mid + 1;
        }
        for (size_t i = 0; i < r->nwild; i++) {
            const struct host_entry *e = &r->wild[i];
            if ((size_t)hl > e->key_len && memcmp(h + (size_t)hl - e->key_len, e->key, e->key_len) == 0 &&
                (s = match_prefix(e, path, path_len)) != NULL)
                return s;
        }
    }
    return match_prefix(&r->any, path, path_len);
}
