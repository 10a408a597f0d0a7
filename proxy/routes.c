/* routes.c -- immutable route snapshots of refcounted parts: build,
 * publish, reclaim; the [route] table. See
 * px/routes.h for the lifetime protocol. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/carry.h"
#include "px/common.h"
#include "px/config.h"
#include "px/headers.h"
#include "px/http1.h"
#include "px/limit.h"
#include "px/log.h"
#include "px/routes.h"
#include "px/services.h"
#include "px/stats.h"
#include "px/tls.h"

/* One entry of the match table: a [route] for one of its host names (or
 * for any host), with what matching needs. */
struct route {
    const struct px_route *pub;    /* what the [route] does (shared by its host names) */
    const char *prefix;            /* the config's string; prefix_len bytes are matched */
    size_t prefix_len;
    const char *host;              /* exact name, or ".suffix" of a "*.suffix" (host_kind) */
    size_t host_len;
    uint8_t host_kind;             /* HOST_ANY, HOST_WILD, HOST_EXACT: also their precedence */
    const char *const *suffixes;   /* lowercase; the config's strings */
    const size_t *suffix_lens;     /* the [route]'s (policy's) */
    size_t nsuffixes;
    size_t order;                  /* position in the file: ties in sorting */
};

enum { HOST_ANY = 0, HOST_WILD, HOST_EXACT };

/* What one [route] does, and its suffix lengths. */
struct policy {
    struct px_route pub;
    size_t *suffix_lens;
};

/* The config part of a snapshot: the config and what is made from it. */
struct conf_part {
    struct px_config *cfg;
    struct px_limits *limits;
    struct policy *policies;       /* one per [route], in file order */
    struct route *routes;          /* in precedence order: the first that matches applies */
    size_t nroutes;
    int any_host;                  /* a route names a host: normalize the request's */
    char *lower_names;             /* lowercase names of every route's adds, one block */
};

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
    const struct conf_part *conf;
    const struct px_tls *tls;      /* NULL without listen_https */
    const struct px_services *svcs;
    struct part *parts[PX_PART_COUNT];
    struct px_carry *carry;        /* what publishing it updates (NULL: none); main thread */
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

void px_routes_set_nworkers(int n)
{
    nworkers = n < 1 ? 1 : (n > PX_MAX_WORKERS ? PX_MAX_WORKERS : n);
}

/* ---- the config part: config, [route] table, zones ---- */

static void conf_part_free(struct conf_part *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; c->policies && i < c->cfg->nroutes; i++) {
        free((void *)c->policies[i].pub.zones);
        free((void *)c->policies[i].pub.zone_stats_ids);
        free((void *)c->policies[i].pub.adds);
        free(c->policies[i].suffix_lens);
    }
    free(c->policies);
    free(c->routes);
    free(c->lower_names);
    px_limits_free(c->limits);
    px_config_free(c->cfg);
    free(c);
}

static void destroy_config(void *o)
{
    conf_part_free(o);
}

static int route_cmp(const void *a, const void *b)
{
    const struct route *x = a, *y = b;
    if (x->prefix_len != y->prefix_len)
        return x->prefix_len > y->prefix_len ? -1 : 1;
    if (x->host_kind != y->host_kind)
        return x->host_kind > y->host_kind ? -1 : 1;
    if (x->host_kind == HOST_WILD && x->host_len != y->host_len)
        return x->host_len > y->host_len ? -1 : 1;
    if ((x->nsuffixes != 0) != (y->nsuffixes != 0))
        return x->nsuffixes ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static const struct px_header_set_conf *header_set(const struct px_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nheader_sets; i++)
        if (strcmp(cfg->header_sets[i].name, name) == 0)
            return &cfg->header_sets[i];
    return NULL;
}

static int set_names(const struct px_header_set_conf *set, const char *name)
{
    for (size_t i = 0; i < set->nheaders; i++)
        if (strcasecmp(set->headers[i].name, name) == 0)
            return 1;
    return 0;
}

static void add_of(struct px_hdr_add *a, const struct px_header_conf *h, char **lower)
{
    a->name = h->name;
    a->name_len = strlen(h->name);
    a->value = h->value;
    a->value_len = strlen(h->value);
    a->https_only = strcasecmp(h->name, "strict-transport-security") == 0;
    px_lower_copy(*lower, a->name, a->name_len);
    a->lname = *lower;
    *lower += a->name_len;
}

/* The route's response headers, merged once here so a response only walks
 * one list: [headers] minus the names its sets give, then its sets. The
 * config guarantees the sets do not repeat a name and the whole fits
 * PX_MAX_ADD_HEADERS. */
static int route_adds(const struct px_config *cfg, const struct px_route_conf *rc, struct policy *rt, char **lower)
{
    size_t n = 0;
    struct px_hdr_add *adds = calloc(PX_MAX_ADD_HEADERS, sizeof(*adds));
    if (adds == NULL)
        return -1;
    for (size_t i = 0; i < cfg->nheaders && n < PX_MAX_ADD_HEADERS; i++) {
        size_t k = 0;
        while (k < rc->nheader_sets && !set_names(header_set(cfg, rc->header_sets[k].name), cfg->headers[i].name))
            k++;
        if (k == rc->nheader_sets)
            add_of(&adds[n++], &cfg->headers[i], lower);
    }
    for (size_t k = 0; k < rc->nheader_sets; k++) {
        const struct px_header_set_conf *set = header_set(cfg, rc->header_sets[k].name);
        for (size_t i = 0; i < set->nheaders && n < PX_MAX_ADD_HEADERS; i++)
            add_of(&adds[n++], &set->headers[i], lower);
    }
    rt->pub.adds = adds;
    rt->pub.nadds = n;
    return 0;
}

/* What [route] rc does: its zones and its response headers. */
static int policy_make(struct conf_part *c, const struct px_route_conf *rc, struct policy *pol, char **lower,
                       char *err, size_t errlen)
{
    pol->pub.prefix = rc->prefix;
    if (rc->nsuffixes && (pol->suffix_lens = calloc(rc->nsuffixes, sizeof(size_t))) == NULL)
        goto oom;
    for (size_t k = 0; k < rc->nsuffixes; k++)
        pol->suffix_lens[k] = strlen(rc->suffixes[k]);
    if (rc->nlimits) {
        struct px_limit_zone **z = calloc(rc->nlimits, sizeof(*z));
        if (z == NULL)
            goto oom;
        pol->pub.zones = z;
        pol->pub.nzones = rc->nlimits;
        uint32_t *ids = calloc(rc->nlimits, sizeof(*ids));
        if (ids == NULL)
            goto oom;
        pol->pub.zone_stats_ids = ids;
        for (size_t k = 0; k < rc->nlimits; k++) {
            if ((z[k] = px_limits_find(c->limits, rc->limits[k].name)) == NULL) {
                snprintf(err, errlen, "[route %s]: no zone %s", rc->prefix, rc->limits[k].name);
                return -1;
            }
        }
        /* the route's label: PREFIX, or HOST[,HOST...]PREFIX */
        size_t len = strlen(rc->prefix) + 1;
        for (size_t h = 0; h < rc->nhosts; h++)
            len += strlen(rc->hosts[h]) + 1;
        char *label = malloc(len);
        if (label == NULL)
            goto oom;
        label[0] = '\0';
        for (size_t h = 0; h < rc->nhosts; h++) {
            if (h)
                strcat(label, ",");
            strcat(label, rc->hosts[h]);
        }
        strcat(label, rc->prefix);
        for (size_t k = 0; k < rc->nlimits; k++)
            if (px_stats_limit_id(rc->limits[k].name, label, &ids[k]) < 0) {
                free(label);
                snprintf(err, errlen, "[route %s]: out of memory (or over %d zone-route pairs) for metrics",
                         rc->prefix, PX_STATS_MAX_LIMITS);
                return -1;
            }
        free(label);
    }
    if (rc->nheader_sets && route_adds(c->cfg, rc, pol, lower) < 0)
        goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory building routes");
    return -1;
}

/* Takes ownership of cfg, even on failure. */
static struct conf_part *conf_part_new(struct px_config *cfg, struct px_carry *carry, char *err, size_t errlen)
{
    struct conf_part *c = calloc(1, sizeof(*c));
    size_t names = 0, entries = 0;
    char *lower;

    if (c == NULL) {
        px_config_free(cfg);
        snprintf(err, errlen, "out of memory building routes");
        return NULL;
    }
    c->cfg = cfg;
    if ((c->limits = px_limits_build(cfg, carry ? carry->zones : NULL, err, errlen)) == NULL)
        goto fail;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct px_route_conf *rc = &cfg->routes[i];
        entries += rc->nhosts ? rc->nhosts : 1;
        if (rc->nheader_sets == 0)
            continue;
        for (size_t j = 0; j < cfg->nheaders; j++)
            names += strlen(cfg->headers[j].name);
        for (size_t k = 0; k < rc->nheader_sets; k++) {
            const struct px_header_set_conf *set = header_set(cfg, rc->header_sets[k].name);
            for (size_t j = 0; set && j < set->nheaders; j++)
                names += strlen(set->headers[j].name);
        }
    }
    if (cfg->nroutes && ((c->policies = calloc(cfg->nroutes, sizeof(*c->policies))) == NULL ||
                         (c->routes = calloc(entries, sizeof(*c->routes))) == NULL))
        goto oom;
    if (names && (c->lower_names = malloc(names)) == NULL)
        goto oom;
    lower = c->lower_names;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct px_route_conf *rc = &cfg->routes[i];
        struct policy *pol = &c->policies[i];
        if (policy_make(c, rc, pol, &lower, err, errlen) < 0)
            goto fail;
        for (size_t h = 0; h < (rc->nhosts ? rc->nhosts : 1); h++) {
            struct route *rt = &c->routes[c->nroutes++];
            rt->pub = &pol->pub;
            rt->prefix = rc->prefix;
            rt->prefix_len = rc->prefix_len;
            rt->order = i;
            rt->suffixes = (const char *const *)rc->suffixes;
            rt->suffix_lens = pol->suffix_lens;
            rt->nsuffixes = rc->nsuffixes;
            if (rc->nhosts) {
                const char *name = rc->hosts[h];
                c->any_host = 1;
                rt->host_kind = name[0] == '*' ? HOST_WILD : HOST_EXACT;
                rt->host = name[0] == '*' ? name + 1 : name;
                rt->host_len = strlen(rt->host);
            }
        }
    }
    if (c->nroutes > 1)
        qsort(c->routes, c->nroutes, sizeof(*c->routes), route_cmp);
    return c;
oom:
    snprintf(err, errlen, "out of memory building routes");
fail:
    conf_part_free(c);
    return NULL;
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
    r->conf = pc->obj;
    r->cfg = r->conf->cfg;
    r->tls = pt->obj;
    r->svcs = ps->obj;
    return r;
}

struct px_routes *px_routes_make(struct px_config *cfg, struct px_tls *tls, struct px_services *svcs,
                                 struct px_carry *carry, char *err, size_t errlen)
{
    struct px_routes *r;
    struct conf_part *conf = NULL;
    if (cfg == NULL || svcs == NULL || px_services_seal(svcs, err, errlen) < 0) {
        if (cfg == NULL || svcs == NULL)
            snprintf(err, errlen, "a snapshot needs a config and a services table");
        px_config_free(cfg);
        goto fail;
    }
    if ((conf = conf_part_new(cfg, carry, err, errlen)) == NULL) /* took cfg */
        goto fail;
    r = routes_of(part_new(conf, destroy_config), part_new(tls, destroy_tls), part_new(svcs, destroy_services),
                  err, errlen);
    if (r)
        r->carry = carry;
    return r;
fail:
    px_tls_free(tls);
    px_services_free(svcs);
    return NULL;
}

struct px_routes *px_routes_build(struct px_config *cfg, struct px_carry *carry, char *err, size_t errlen)
{
    struct px_tls *tls = NULL;
    struct px_services *svcs = NULL;
    const struct px_tls_sessions *sessions = carry ? carry->sessions : NULL;
    if (cfg->has_listen_https &&
        (tls = carry && carry->tls ? carry->tls(carry->tls_arg, cfg, sessions, err, errlen)
                                   : px_tls_build(&cfg->tls, sessions, err, errlen)) == NULL)
        goto fail;
    svcs = carry && carry->services ? carry->services(carry->services_arg, cfg, err, errlen)
                                    : px_config_services(cfg, err, errlen);
    if (svcs == NULL)
        goto fail;
    return px_routes_make(cfg, tls, svcs, carry, err, errlen);
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
    r->carry = cur->carry;
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
    if (r->carry) {
        px_carry_keep_zones(r->carry, r->conf->limits);
        px_carry_keep_sessions(r->carry, px_tls_sessions(r->tls));
    }
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

/* ---- [route] matching ---- */

/* Paths up to this long are normalized on the stack; the parsers answer
 * longer ones 414 before any route is looked up (px_h1_check_target). */
#define PATH_STACK PX_H1_PATH_MAX

static int unhex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The path as a backend may read it, for matching: %XX decoded (a decoded
 * '/' or '.' counts as one, as in nginx's ngx_http_parse_complex_uri), then
 * per segment ";params" dropped (servlet containers route "/login;x" and
 * "/app/..;/admin" as "/login" and "/admin"), "//" merged, "." and ".."
 * resolved, never above the root. out has room for n bytes: the result is
 * never longer. Returns its length. */
static size_t normalize_path(const char *p, size_t n, char *out)
{
    size_t m = 0, r = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = unhex((unsigned char)p[i + 1])) >= 0 &&
            (lo = unhex((unsigned char)p[i + 2])) >= 0) {
            out[m++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[m++] = p[i];
        }
    }
    if (m == 0 || out[0] != '/')
        return m; /* "*", or not a path: no route prefix can match it anyway */
    /* segments, in place (w <= r always) */
    while (r < m) {
        while (r < m && out[r] == '/')
            r++;
        size_t s = r;
        while (r < m && out[r] != '/')
            r++;
        const char *semi = memchr(out + s, ';', r - s);
        size_t len = semi ? (size_t)(semi - (out + s)) : r - s;
        if (len == 0 || (len == 1 && out[s] == '.')) {
            if (r == m)
                out[w++] = '/'; /* "/a/" and "/a/." end as "/a/" */
            continue;
        }
        if (len == 2 && out[s] == '.' && out[s + 1] == '.') {
            while (w > 0 && out[w - 1] != '/')
                w--;
            if (w > 0)
                w--;
            if (r == m)
                out[w++] = '/';
            continue;
        }
        out[w++] = '/';
        memmove(out + w, out + s, len);
        w += len;
    }
    return w ? w : (out[0] = '/', 1);
}

/* Up to the query (or a fragment, which the parsers reject anyway);
 * *messy when normalizing could change it. */
static size_t path_part(const char *p, size_t n, int *messy)
{
    size_t i = 0;
    int m = 0;
    for (; i < n; i++) {
        char c = p[i];
        if (c == '?' || c == '#')
            break;
        if (c == '%' || c == ';' || (c == '/' && i + 1 < n && (p[i + 1] == '/' || p[i + 1] == '.')))
            m = 1;
    }
    *messy = m;
    return i;
}

/* A byte that continues a path segment's name: after a prefix it means
 * another name ("/app" is not "/appointment", "/login-help" not "/login").
 * Anything else ends the name for matching -- '/', '.', a decoded '?', '#',
 * space, NUL, ... -- since a backend may serve "/login.json" (Rails formats,
 * Spring suffix patterns), "/login%3f", "/login%20" as /login. */
static inline int name_byte(unsigned char c)
{
    return (unsigned char)((c | 0x20) - 'a') < 26u || (unsigned char)(c - '0') < 10u || c == '-' || c == '_' ||
           c == '~' || c >= 0x80;
}

static int suffix_match(const struct route *rt, const char *p, size_t n)
{
    for (size_t k = 0; k < rt->nsuffixes; k++) {
        size_t len = rt->suffix_lens[k];
        if (len <= n && px_slice_ieq(p + n - len, len, rt->suffixes[k], len))
            return 1;
    }
    return 0;
}

const struct px_route *px_routes_route(const struct px_routes *r, const char *host, size_t host_len,
                                       const char *path, size_t path_len)
{
    const struct conf_part *c = r->conf;
    const struct route *found = NULL;
    char buf[PATH_STACK], h[256];
    int messy, hl = -1;

    if (PX_LIKELY(c->nroutes == 0))
        return NULL;
    size_t n = path_part(path, path_len, &messy);
    const char *p = path;
    if (messy && n <= sizeof(buf)) {
        n = normalize_path(path, n, buf);
        p = buf;
    }
    if (c->any_host)
        hl = px_host_normalize(host, host_len, h, sizeof(h));
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct route *rt = &c->routes[i];
        size_t pl = rt->prefix_len;
        if (pl > n || memcmp(p, rt->prefix, pl) != 0 ||
            (pl < n && name_byte((unsigned char)p[pl]) && rt->prefix[pl - 1] != '/'))
            continue;
        if (rt->host_kind == HOST_EXACT && ((size_t)hl != rt->host_len || memcmp(h, rt->host, rt->host_len) != 0))
            continue;
        if (rt->host_kind == HOST_WILD &&
            (hl <= 0 || (size_t)hl <= rt->host_len || memcmp(h + hl - rt->host_len, rt->host, rt->host_len) != 0))
            continue;
        if (rt->nsuffixes && !suffix_match(rt, p, n))
            continue;
        found = rt;
        break;
    }
    return found ? found->pub : NULL;
}

struct px_limits *px_routes_limits(const struct px_routes *r)
{
    return r->conf->limits;
}

const struct px_service *px_routes_match(const struct px_routes *r, const char *host, size_t host_len,
                                         const char *path, size_t path_len)
{
    return px_services_match(r->svcs, host, host_len, path, path_len);
}
