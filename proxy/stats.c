/* stats.c -- the per-worker counter blocks and their sums (px/stats.h).
 * The bumps are inline in the header; this file holds the storage and the
 * readers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/request.h"
#include "px/stats.h"

_Static_assert((int)PX_PROTO_HTTP10 == (int)PX_STATS_PROTO_H10 && (int)PX_PROTO_HTTP11 == (int)PX_STATS_PROTO_H11 &&
                   (int)PX_PROTO_HTTP2 == (int)PX_STATS_PROTO_H2,
               "stats protocol indexes follow enum px_proto");
_Static_assert(sizeof(struct px_stats) % PX_STATS_ALIGN == 0, "a block fills whole cache lines");

/* Untouched blocks cost no resident memory. */
struct px_stats px_stats_blocks[PX_MAX_WORKERS];
/* 1 + the highest wid registered by px_stats_block: px_stats_open_conns
 * stops there (the gauge is written on the accept path only). */
static _Atomic int nblocks;

const char *const px_stats_proto_names[PX_STATS_NPROTO] = {"http1.0", "http1.1", "http2"};
const char *const px_stats_upstream_err_names[PX_STATS_UP_NKINDS] = {"connect", "timeout", "reset",
                                                                    "bad_response"};
const char *const px_stats_listen_names[PX_STATS_NLISTEN] = {"http", "https"};

struct px_stats *px_stats_block(int wid)
{
    if (wid < 0 || wid >= PX_MAX_WORKERS)
        wid = 0; /* not reached: workers are numbered below PX_MAX_WORKERS */
    int n = atomic_load_explicit(&nblocks, memory_order_relaxed);
    while (wid >= n && !atomic_compare_exchange_weak(&nblocks, &n, wid + 1))
        ;
    return &px_stats_blocks[wid];
}

static inline uint64_t ld(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

uint32_t px_stats_open_conns(void)
{
    int n = atomic_load_explicit(&nblocks, memory_order_relaxed);
    uint32_t sum = 0;
    for (int i = 0; i < n; i++)
        sum += atomic_load_explicit(&px_stats_blocks[i].open_conns, memory_order_relaxed);
    return sum;
}

void px_stats_sum(struct px_stats_snapshot *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < PX_MAX_WORKERS; i++) {
        struct px_stats *s = &px_stats_blocks[i];
        out->open_conns += atomic_load_explicit(&s->open_conns, memory_order_relaxed);
        out->idle_conns += atomic_load_explicit(&s->idle_conns, memory_order_relaxed);
        for (int l = 0; l < PX_STATS_NLISTEN; l++)
            out->accepted[l] += ld(&s->accepted[l]);
        out->tls_new += ld(&s->tls_new);
        out->tls_resumed += ld(&s->tls_resumed);
        out->tls_failed += ld(&s->tls_failed);
        for (int p = 0; p < PX_STATS_NPROTO; p++)
            for (int c = 0; c < PX_STATS_NCLASS; c++) {
                uint64_t v = ld(&s->requests[p][c]);
                out->requests[p][c] += v;
                out->requests_total += v;
            }
        out->bytes_in += ld(&s->bytes_in);
        out->bytes_out += ld(&s->bytes_out);
        out->limited += ld(&s->limited);
        out->parked += ld(&s->parked);
        out->closed_early += ld(&s->closed_early);
        for (int k = 0; k < PX_STATS_UP_NKINDS; k++)
            out->upstream_errors[k] += ld(&s->upstream_errors[k]);
    }
}


/* ---- labelled families ---- */

const uint64_t px_stats_bucket_us[PX_STATS_NBUCKETS - 1] = {5000,   10000,   25000,   50000,   100000,  250000,
                                                            500000, 1000000, 2500000, 5000000, 10000000};
/* The codes an HTTP proxy answers or relays in practice (RFC 9110 and
 * friends, nginx's 499). */
const uint16_t px_stats_codes[PX_STATS_NCODES] = {
    100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409, 410,
    411, 412, 413, 414, 415, 416, 417, 421, 422, 425, 426, 428, 429, 431, 451, 499, 500, 501, 502, 503, 504, 505};
#define S(c, i) [c] = (i) + 1
const uint8_t px_stats_code_slot_tab[600] = {
    S(100, 0),  S(101, 1),  S(200, 2),  S(201, 3),  S(202, 4),  S(204, 5),  S(206, 6),  S(301, 7),  S(302, 8),
    S(303, 9),  S(304, 10), S(307, 11), S(308, 12), S(400, 13), S(401, 14), S(403, 15), S(404, 16), S(405, 17),
    S(406, 18), S(408, 19), S(409, 20), S(410, 21), S(411, 22), S(412, 23), S(413, 24), S(414, 25), S(415, 26),
    S(416, 27), S(417, 28), S(421, 29), S(422, 30), S(425, 31), S(426, 32), S(428, 33), S(429, 34), S(431, 35),
    S(451, 36), S(499, 37), S(500, 38), S(501, 39), S(502, 40), S(503, 41), S(504, 42), S(505, 43)};
#undef S
_Static_assert(sizeof(struct px_stats_svc) == 1472, "the per-service cost the header documents");
_Static_assert(sizeof(struct px_stats_tgt) == PX_STATS_ALIGN && sizeof(struct px_stats_lim) == PX_STATS_ALIGN,
               "a pair costs one cache line per worker");

struct px_stats_svc *px_stats_svc_tab[PX_STATS_MAX_SERVICES];
struct px_stats_tgt *px_stats_tgt_tab[PX_STATS_MAX_TARGETS];
struct px_stats_lim *px_stats_lim_tab[PX_STATS_MAX_LIMITS];

/* The labels, main thread only: open-addressed hash of id + 1 by label. */
struct label {
    char *a;      /* service name / target / zone */
    const char *b; /* route (limits; owned, freed never) */
    uint32_t svc; /* targets: the service id */
};
struct registry {
    struct label *labels;
    uint32_t n, max;
    uint32_t *hash; /* id + 1, 0 = empty; size hcap (power of two, > 2n) */
    uint32_t hcap;
};
static struct registry reg_svc = {.max = PX_STATS_MAX_SERVICES};
static struct registry reg_tgt = {.max = PX_STATS_MAX_TARGETS};
static struct registry reg_lim = {.max = PX_STATS_MAX_LIMITS};
static int stats_nworkers = PX_MAX_WORKERS;

void px_stats_set_nworkers(int n)
{
    if (reg_svc.n || reg_tgt.n || reg_lim.n)
        return;
    stats_nworkers = n < 1 ? 1 : n > PX_MAX_WORKERS ? PX_MAX_WORKERS : n;
}

static uint32_t hash_of(const char *a, const char *b, uint32_t svc)
{
    uint32_t h = 2166136261u ^ svc;
    for (const char *p = a; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (const char *p = b ? b : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static int same(const struct label *l, const char *a, const char *b, uint32_t svc)
{
    return l->svc == svc && strcmp(l->a, a) == 0 && strcmp(l->b ? l->b : "", b ? b : "") == 0;
}

static int reg_grow(struct registry *r)
{
    uint32_t cap = r->hcap ? r->hcap * 2 : 64;
    uint32_t *h = calloc(cap, sizeof(*h));
    struct label *l = realloc(r->labels, (size_t)cap / 2 * sizeof(*l));
    if (l)
        r->labels = l;
    if (h == NULL || l == NULL) {
        free(h);
        return -1;
    }
    for (uint32_t i = 0; i < r->n; i++) {
        uint32_t k = hash_of(r->labels[i].a, r->labels[i].b, r->labels[i].svc) & (cap - 1);
        while (h[k])
            k = (k + 1) & (cap - 1);
        h[k] = i + 1;
    }
    free(r->hash);
    r->hash = h;
    r->hcap = cap;
    return 0;
}

/* The id of (a, b, svc) in r, assigned with blocks of size `block` per
 * worker stored through tab when new. */
static int reg_id(struct registry *r, const char *a, const char *b, uint32_t svc, void **tab, size_t block,
                  uint32_t *id)
{
    if (r->hcap) {
        uint32_t k = hash_of(a, b, svc) & (r->hcap - 1);
        for (; r->hash[k]; k = (k + 1) & (r->hcap - 1))
            if (same(&r->labels[r->hash[k] - 1], a, b, svc)) {
                *id = r->hash[k] - 1;
                return 0;
            }
    }
    if (r->n >= r->max)
        return -1;
    if ((r->n + 1) * 2 > r->hcap && reg_grow(r) < 0)
        return -1;
    void *blocks = NULL;
    char *ca = strdup(a), *cb = b ? strdup(b) : NULL;
    if (ca == NULL || (b && cb == NULL) ||
        posix_memalign(&blocks, PX_STATS_ALIGN, block * (size_t)stats_nworkers) != 0) {
        free(ca);
        free(cb);
        return -1;
    }
    memset(blocks, 0, block * (size_t)stats_nworkers);
    uint32_t i = r->n++;
    r->labels[i] = (struct label){ca, cb, svc};
    uint32_t k = hash_of(a, b, svc) & (r->hcap - 1);
    while (r->hash[k])
        k = (k + 1) & (r->hcap - 1);
    r->hash[k] = i + 1;
    tab[i] = blocks;
    *id = i;
    return 0;
}

int px_stats_service_id(const char *name, uint32_t *id)
{
    if (reg_svc.n == 0 && strcmp(name, "") != 0) {
        uint32_t none;
        if (reg_id(&reg_svc, "", NULL, 0, (void **)px_stats_svc_tab, sizeof(struct px_stats_svc), &none) < 0)
            return -1;
    }
    return reg_id(&reg_svc, name, NULL, 0, (void **)px_stats_svc_tab, sizeof(struct px_stats_svc), id);
}

int px_stats_target_id(uint32_t service_id, const char *target, uint32_t *id)
{
    return reg_id(&reg_tgt, target, NULL, service_id, (void **)px_stats_tgt_tab, sizeof(struct px_stats_tgt), id);
}

int px_stats_limit_id(const char *zone, const char *route, uint32_t *id)
{
    return reg_id(&reg_lim, zone, route, 0, (void **)px_stats_lim_tab, sizeof(struct px_stats_lim), id);
}

uint32_t px_stats_nservices(void)
{
    return reg_svc.n;
}
uint32_t px_stats_ntargets(void)
{
    return reg_tgt.n;
}
uint32_t px_stats_nlimits(void)
{
    return reg_lim.n;
}

const char *px_stats_service_name(uint32_t id)
{
    return id < reg_svc.n ? reg_svc.labels[id].a : "";
}

void px_stats_target_label(uint32_t id, uint32_t *service_id, const char **target)
{
    *service_id = id < reg_tgt.n ? reg_tgt.labels[id].svc : 0;
    *target = id < reg_tgt.n ? reg_tgt.labels[id].a : "";
}

void px_stats_limit_label(uint32_t id, const char **zone, const char **route)
{
    *zone = id < reg_lim.n ? reg_lim.labels[id].a : "";
    *route = id < reg_lim.n && reg_lim.labels[id].b ? reg_lim.labels[id].b : "";
}

static void code_add(struct px_stats_svc_sum *out, int code, int fallback, const uint64_t n[PX_STATS_NPROTO])
{
    size_t i = 0;
    for (; i < out->ncodes; i++)
        if (out->codes[i].code == code && out->codes[i].fallback == fallback)
            break;
    if (i == out->ncodes) {
        if (out->ncodes == PX_ARRAY_LEN(out->codes)) {
            /* every slot taken: fold into the class */
            int cls = code >= 100 && code < 600 ? code / 100 : 0;
            code_add(out, cls, 1, n);
            return;
        }
        out->codes[out->ncodes++] = (struct px_stats_code_count){.code = code, .fallback = fallback};
    }
    for (int p = 0; p < PX_STATS_NPROTO; p++) {
        out->codes[i].n[p] += n[p];
        out->requests += n[p];
    }
}

void px_stats_service_sum(uint32_t id, struct px_stats_svc_sum *out)
{
    memset(out, 0, sizeof(*out));
    if (id >= reg_svc.n)
        return;
    uint64_t cells[PX_STATS_NCODE_SLOTS][PX_STATS_NPROTO] = {{0}};
    for (int w = 0; w < stats_nworkers; w++) {
        struct px_stats_svc *s = &px_stats_svc_tab[id][w];
        for (int c = 0; c < PX_STATS_NCODE_SLOTS; c++)
            for (int p = 0; p < PX_STATS_NPROTO; p++)
                cells[c][p] += ld(&s->requests[c][p]);
        for (int b = 0; b < PX_STATS_NBUCKETS; b++)
            out->duration[b] += ld(&s->duration[b]);
        out->duration_sum_us += ld(&s->duration_sum_us);
        out->bytes_in += ld(&s->bytes_in);
        out->bytes_out += ld(&s->bytes_out);
    }
    /* codes in order: registered, overflow, fallbacks (code 0 "other" last) */
    for (int c = 0; c < PX_STATS_NCODES; c++)
        if (cells[c][0] | cells[c][1] | cells[c][2])
            code_add(out, px_stats_codes[c], 0, cells[c]);
    for (int w = 0; w < stats_nworkers; w++) {
        struct px_stats_svc *s = &px_stats_svc_tab[id][w];
        for (int i = 0; i < PX_STATS_NOVERFLOW; i++) {
            uint32_t code = atomic_load_explicit(&s->overflow[i].code, memory_order_relaxed);
            if (code == 0)
                break;
            uint64_t n[PX_STATS_NPROTO];
            for (int p = 0; p < PX_STATS_NPROTO; p++)
                n[p] = ld(&s->overflow[i].n[p]);
            if (n[0] | n[1] | n[2])
                code_add(out, (int)code, 0, n);
        }
    }
    for (int c = 1; c <= PX_STATS_NCLASS; c++) {
        int cls = c % PX_STATS_NCLASS; /* 1..5, then 0 */
        uint64_t *n = cells[PX_STATS_NCODES + cls];
        if (n[0] | n[1] | n[2])
            code_add(out, cls, 1, n);
    }
    for (int b = 1; b < PX_STATS_NBUCKETS; b++)
        out->duration[b] += out->duration[b - 1];
}

void px_stats_target_sum(uint32_t id, uint64_t errors[PX_STATS_UP_NKINDS])
{
    memset(errors, 0, sizeof(uint64_t) * PX_STATS_UP_NKINDS);
    if (id >= reg_tgt.n)
        return;
    for (int w = 0; w < stats_nworkers; w++)
        for (int k = 0; k < PX_STATS_UP_NKINDS; k++)
            errors[k] += ld(&px_stats_tgt_tab[id][w].errors[k]);
}

uint64_t px_stats_limit_sum(uint32_t id)
{
    uint64_t n = 0;
    if (id >= reg_lim.n)
        return 0;
    for (int w = 0; w < stats_nworkers; w++)
        n += ld(&px_stats_lim_tab[id][w].limited);
    return n;
}

const char *px_stats_code_label(const struct px_stats_code_count *c, char *buf)
{
    if (c->fallback && c->code == 0)
        return "other";
    if (c->fallback)
        snprintf(buf, 8, "%dxx", c->code % 10);
    else
        snprintf(buf, 8, "%d", c->code % 1000);
    return buf;
}

void px_stats_reset(void)
{
    memset(px_stats_blocks, 0, sizeof(px_stats_blocks));
    atomic_store(&nblocks, 0);
    for (uint32_t i = 0; i < reg_svc.n; i++)
        memset(px_stats_svc_tab[i], 0, sizeof(struct px_stats_svc) * (size_t)stats_nworkers);
    for (uint32_t i = 0; i < reg_tgt.n; i++)
        memset(px_stats_tgt_tab[i], 0, sizeof(struct px_stats_tgt) * (size_t)stats_nworkers);
    for (uint32_t i = 0; i < reg_lim.n; i++)
        memset(px_stats_lim_tab[i], 0, sizeof(struct px_stats_lim) * (size_t)stats_nworkers);
}
