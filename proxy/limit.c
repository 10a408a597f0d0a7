/* limit.c -- rate-limit zones: nginx limit_req's leaky bucket per client
 * address, over a fixed striped arena per zone (see px/limit.h). The
 * arithmetic follows ngx_http_limit_req_module.c line by line; where it
 * differs (the arena, the eviction rule, the two-phase multi-zone check
 * without pinned nodes) a comment says so. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "px/config.h"
#include "px/limit.h"

#define MAX_STRIPES 64
#define MIN_PER_STRIPE 1024     /* fewer stripes for small zones: a full stripe evicts before the zone is full */
#define CLOCK_BACK_MS 60000     /* nginx: a clock that went back further counts as 1 ms elapsed */
#define EXPIRE_IDLE_MS 60000    /* nginx's expire frees only entries untouched this long */
#define NODELAY UINT64_MAX      /* an infinite delay threshold */

/* One key's bucket. Indices are 1-based within the stripe, 0 = none, so a
 * zero-filled arena is a valid empty one. 48 bytes. */
struct entry {
    uint64_t last;              /* ms of the last charge (nginx lr->last) */
    uint64_t excess;            /* milli-requests */
    uint32_t hnext;             /* bucket chain; the free list while unused */
    uint32_t prev, next;        /* LRU list: prev toward the most recently used */
    uint8_t family;
    uint8_t addr[16];
};
_Static_assert(sizeof(struct entry) == 48, "entry size");

/* A stripe: its own lock, table and LRU list over a slice of the arena.
 * The lock is a mutex, adaptive (glibc spins briefly before sleeping):
 * uncontended it costs what a spinlock does (one atomic each way), with
 * 64 stripes contention is rare, and workers may outnumber cores -- a
 * spinlock whose holder is preempted would burn its waiters' timeslice. */
struct stripe {
    _Alignas(64) pthread_mutex_t lock;
    struct entry *e;            /* entry i is e[i - 1] */
    uint32_t *bucket;           /* mask + 1 chain heads */
    uint32_t mask;
    uint32_t cap;
    uint32_t fresh;             /* entries 1..fresh were handed out at least once */
    uint32_t free;              /* freed entries, chained through hnext */
    uint32_t used;              /* keys in the table */
    uint32_t mru, lru;          /* LRU list ends */
};

/* A zone's state, shared by the sets that carry it over. */
struct arena {
    atomic_int refs;            /* sets holding it */
    uint64_t zone_size;
    uint64_t k[4];              /* hash key, random per arena */
    uint32_t nstripes;          /* power of two */
    size_t capacity;
    void *mem;                  /* entries and buckets (mmap: zero pages until used) */
    size_t memlen;
    struct stripe *stripes;
};

/* A zone as one set sees it: that set's parameters over a shared arena. */
struct px_limit_zone {
    const struct px_limit_ops *ops;
    void *state;                /* ops' state; the arena for px_limit_arena_ops */
    struct arena *a;            /* the arena, or NULL on another implementation */
    char *name;
    uint64_t rate;              /* milli-requests per second, 1 .. 2^32 - 1 */
    uint64_t burst;             /* milli-requests */
    uint64_t delay;             /* milli-requests let through undelayed; NODELAY */
    int status;
    int shared;                 /* px_limit_shared_ops over the arena */
};

struct px_limits {
    int refs;                   /* main thread only */
    size_t n;
    struct px_limit_zone zones[];
};

/* ---- keys ---- */

static void key_v4mapped(struct px_limit_key *k)
{
    static const uint8_t pre[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (k->family == 6 && memcmp(k->addr, pre, 12) == 0) {
        memmove(k->addr, k->addr + 12, 4);
        memset(k->addr + 4, 0, 12);
        k->family = 4;
    }
}

int px_limit_key_parse(const char *s, size_t len, struct px_limit_key *k)
{
    char buf[INET6_ADDRSTRLEN];

    memset(k, 0, sizeof(*k));
    if (len == 0 || len >= sizeof(buf) || memchr(s, '\0', len) != NULL)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, k->addr) == 1) {
        k->family = 4;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, k->addr) == 1) {
        k->family = 6;
        key_v4mapped(k);
        return 0;
    }
    memset(k, 0, sizeof(*k));
    return -1;
}

int px_limit_key_from_sockaddr(const struct sockaddr *sa, struct px_limit_key *k)
{
    memset(k, 0, sizeof(*k));
    if (sa->sa_family == AF_INET) {
        k->family = 4;
        memcpy(k->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        k->family = 6;
        memcpy(k->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        key_v4mapped(k);
        return 0;
    }
    return -1;
}

/* Keyed hash of a key: two 64x64->128 multiply folds (wyhash's core) with
 * a random per-arena key, so an attacker cannot aim many addresses at one
 * chain or stripe. Low bits pick the bucket, bits 32.. the stripe. */
static inline uint64_t fold(uint64_t a, uint64_t b)
{
    unsigned __int128 r = (unsigned __int128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t key_hash(const struct arena *a, uint8_t family, const uint8_t *addr)
{
    uint64_t lo, hi;
    memcpy(&lo, addr, 8);
    memcpy(&hi, addr + 8, 8);
    return fold(fold(lo ^ a->k[0], hi ^ a->k[1]) ^ a->k[2], family ^ a->k[3]);
}

/* ---- the bucket arithmetic (nginx's, in milli-requests and ms) ---- */

/* ms since last; a clock that went back counts 0 ms, or 1 ms when it went
 * back more than a minute (nginx: the node then restarts from now). */
static inline uint64_t elapsed(uint64_t now, uint64_t last)
{
    if (now >= last)
        return now - last;
    return last - now > CLOCK_BACK_MS ? 1 : 0;
}

/* rate * ms / 1000, truncated as nginx does; rate < 2^32. */
static inline uint64_t leaked(uint64_t rate, uint64_t ms)
{
    if (ms < ((uint64_t)1 << 32))
        return rate * ms / 1000;
    unsigned __int128 l = (unsigned __int128)rate * ms / 1000;
    return l > UINT64_MAX ? UINT64_MAX : (uint64_t)l;
}

/* The excess one more request would leave: max(0, excess - leak + 1000). */
static inline uint64_t next_excess(uint64_t excess, uint64_t rate, uint64_t ms)
{
    uint64_t l = leaked(rate, ms);
    return l >= excess + 1000 ? 0 : excess + 1000 - l;
}

static inline int idle(const struct px_limit_zone *z, const struct entry *e, uint64_t now)
{
    return leaked(z->rate, elapsed(now, e->last)) >= e->excess;
}

/* ms from now until `last + ceil(milli * 1000 / rate)`, the moment `milli`
 * milli-requests have leaked since last. */
static uint64_t wait_until_leaked(const struct px_limit_zone *z, uint64_t last, uint64_t milli, uint64_t now)
{
    uint64_t t = last + (milli * 1000 + z->rate - 1) / z->rate;
    return t > now ? t - now : 0;
}

static inline uint64_t delay_ms(const struct px_limit_zone *z, uint64_t excess)
{
    return excess <= z->delay ? 0 : (excess - z->delay) * 1000 / z->rate;
}

/* ---- a stripe's table and LRU list (caller holds the stripe lock) ---- */

static inline struct entry *ent(const struct stripe *s, uint32_t i)
{
    return &s->e[i - 1];
}

static inline struct stripe *stripe_of(const struct arena *a, uint64_t h)
{
    return &a->stripes[(h >> 32) & (a->nstripes - 1)];
}

static uint32_t lookup_locked(const struct stripe *s, const struct px_limit_key *k, uint64_t h)
{
    for (uint32_t i = s->bucket[h & s->mask]; i != 0; i = ent(s, i)->hnext) {
        const struct entry *e = ent(s, i);
        if (e->family == k->family && memcmp(e->addr, k->addr, sizeof(e->addr)) == 0)
            return i;
    }
    return 0;
}

static void lru_unlink_locked(struct stripe *s, uint32_t i)
{
    struct entry *e = ent(s, i);
    if (e->prev)
        ent(s, e->prev)->next = e->next;
    else
        s->mru = e->next;
    if (e->next)
        ent(s, e->next)->prev = e->prev;
    else
        s->lru = e->prev;
}

static void lru_push_locked(struct stripe *s, uint32_t i)
{
    struct entry *e = ent(s, i);
    e->prev = 0;
    e->next = s->mru;
    if (s->mru)
        ent(s, s->mru)->prev = i;
    else
        s->lru = i;
    s->mru = i;
}

static void lru_bump_locked(struct stripe *s, uint32_t i)
{
    if (s->mru != i) {
        lru_unlink_locked(s, i);
        lru_push_locked(s, i);
    }
}

/* Take entry i out of the table and the LRU list (the hash is recomputed
 * rather than stored: it keeps the entry at 48 bytes). */
static void remove_locked(const struct arena *a, struct stripe *s, uint32_t i)
{
    struct entry *e = ent(s, i);
    uint32_t *p = &s->bucket[key_hash(a, e->family, e->addr) & s->mask];
    while (*p != i)
        p = &ent(s, *p)->hnext;
    *p = e->hnext;
    lru_unlink_locked(s, i);
    s->used--;
}

/* nginx's ngx_http_limit_req_expire(ctx, 1): free at most two least
 * recently used entries that are idle and untouched for a minute. */
static void expire_locked(const struct px_limit_zone *z, struct stripe *s, uint64_t now)
{
    for (int n = 0; n < 2 && s->lru != 0; n++) {
        uint32_t i = s->lru;
        struct entry *e = ent(s, i);
        if (now < e->last || now - e->last < EXPIRE_IDLE_MS || !idle(z, e, now))
            return;
        remove_locked(z->a, s, i);
        e->hnext = s->free;
        s->free = i;
    }
}

/* An entry for a new key: a freed one, a never used one, or else the least
 * recently used one, idle or not: nginx's ngx_http_limit_req_expire(ctx, 0)
 * ("n == 0 deletes oldest entry by force") when its zone cannot allocate a
 * node. A full zone must not lock every new client out until its buckets
 * leak (a few thousand addresses, or one IPv6 /64, fill it); the price is
 * that a flood of new addresses makes the zone forget its oldest client. */
static uint32_t take_locked(const struct px_limit_zone *z, struct stripe *s, uint64_t now)
{
    uint32_t i;

    expire_locked(z, s, now);
    if (s->free != 0) {
        i = s->free;
        s->free = ent(s, i)->hnext;
        return i;
    }
    if (s->fresh < s->cap)
        return ++s->fresh;
    i = s->lru;
    remove_locked(z->a, s, i);
    return i;
}

static void insert_locked(struct stripe *s, uint32_t i, const struct px_limit_key *k, uint64_t h, uint64_t now)
{
    struct entry *e = ent(s, i);
    uint32_t *head = &s->bucket[h & s->mask];

    e->family = k->family;
    memcpy(e->addr, k->addr, sizeof(e->addr));
    e->excess = 0;              /* a new key starts empty: burst N passes N + 1 */
    e->last = now;
    e->hnext = *head;
    *head = i;
    lru_push_locked(s, i);
    s->used++;
}

/* ---- one zone, one step ---- */

enum step {
    LOOK,                       /* would it pass? charge nothing */
    LOOK_CHARGE,                /* nginx lookup with account = 1: charge if it passes */
    CHARGE,                     /* nginx account(): charge from the current state, no burst check */
};

enum { OK, BUSY };

/* One zone's step for key k at now. *excess: the excess this request
 * leaves (or would leave); on BUSY *wait_ms until a retry could pass. A new
 * key always gets an entry (take_locked), so it is never BUSY. */
static int zone_step(const struct px_limit_zone *z, const struct px_limit_key *k, uint64_t now, enum step how,
                     uint64_t *excess, uint64_t *wait_ms)
{
    const struct arena *a = z->a;
    uint64_t h = key_hash(a, k->family, k->addr);
    struct stripe *s = stripe_of(a, h);
    int rc = OK;

    pthread_mutex_lock(&s->lock);
    uint32_t i = lookup_locked(s, k, h);
    if (i != 0) {
        struct entry *e = ent(s, i);
        uint64_t ms = elapsed(now, e->last);
        uint64_t x = next_excess(e->excess, z->rate, ms);
        lru_bump_locked(s, i);
        *excess = x;
        if (how != CHARGE && x > z->burst) {
            /* passes once excess - leak + 1000 <= burst */
            *wait_ms = wait_until_leaked(z, e->last, e->excess + 1000 - z->burst, now);
            rc = BUSY;
        } else if (how != LOOK) {
            e->excess = x;
            if (ms != 0)        /* nginx: keeps `last` when the clock stood still or went back */
                e->last = now;
        }
    } else {
        *excess = 0;
        if (how != LOOK) {
            i = take_locked(z, s, now);
            insert_locked(s, i, k, h, now);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* nginx's handler + ngx_http_limit_req_account(): every zone but the last
 * is looked at, the last is looked at and charged in one step; any
 * rejection stops there with nothing charged. Then the earlier zones are
 * charged, last to first, each from its state at that moment, and the
 * delay is the longest (on a tie the later zone names it).
 *
 * One stripe lock is held at a time, so zones cannot deadlock. The price,
 * which nginx pays too (it locks one zone at a time as well): two workers
 * may both pass the look at an earlier zone and then both be charged, so
 * under a race an earlier zone can let through up to one request per other
 * racing worker past its burst. A single zone is exact: its look and
 * charge are one step. A key evicted between the look and the charge (its
 * stripe was full) is charged as a new key. */
void px_limit_check(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *key, uint64_t now_ms,
                    struct px_limit_result *res)
{
    struct px_limit_key k = *key;
    uint64_t excess = 0, wait = 0, d, best;
    size_t which;

    res->verdict = PX_LIMIT_PASS;
    res->delay_ms = 0;
    res->retry_after_s = 0;
    res->which = 0;
    if (n == 0)
        return;
    if (k.family == 4)
        memset(k.addr + 4, 0, sizeof(k.addr) - 4);

    for (size_t i = 0; i < n; i++) {
        if (zone_step(zones[i], &k, now_ms, i == n - 1 ? LOOK_CHARGE : LOOK, &excess, &wait) != OK) {
            uint64_t s = (wait + 999) / 1000;
            res->verdict = PX_LIMIT_REJECT;
            res->which = i;
            res->retry_after_s = s < 1 ? 1 : s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
            return;
        }
    }

    which = n - 1;
    best = delay_ms(zones[n - 1], excess);
    for (size_t i = n - 1; i-- > 0;) {
        zone_step(zones[i], &k, now_ms, CHARGE, &excess, &wait);
        d = delay_ms(zones[i], excess);
        if (d > best) {
            best = d;
            which = i;
        }
    }
    if (best > 0) {
        res->verdict = PX_LIMIT_DELAY;
        res->delay_ms = best;
        res->which = which;
    }
}

enum px_limit_verdict px_limit_look(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *key,
                                    uint64_t now_ms, struct px_limit_result *res)
{
    struct px_limit_key k = *key;
    uint64_t excess = 0, wait = 0;

    memset(res, 0, sizeof(*res));
    if (k.family == 4)
        memset(k.addr + 4, 0, sizeof(k.addr) - 4);
    for (size_t i = 0; i < n; i++) {
        if (zone_step(zones[i], &k, now_ms, LOOK, &excess, &wait) != OK) {
            uint64_t s = (wait + 999) / 1000;
            res->verdict = PX_LIMIT_REJECT;
            res->which = i;
            res->retry_after_s = s < 1 ? 1 : s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
            break;
        }
    }
    return res->verdict;
}

void px_limit_charge(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *key, uint64_t now_ms,
                     struct px_limit_result *res)
{
    struct px_limit_key k = *key;
    uint64_t excess = 0, wait = 0, d, best = 0;

    memset(res, 0, sizeof(*res));
    if (k.family == 4)
        memset(k.addr + 4, 0, sizeof(k.addr) - 4);
    for (size_t i = n; i-- > 0;) {
        zone_step(zones[i], &k, now_ms, CHARGE, &excess, &wait);
        d = delay_ms(zones[i], excess);
        if (d > best) {
            best = d;
            res->which = i;
        }
    }
    if (best > 0) {
        res->verdict = PX_LIMIT_DELAY;
        res->delay_ms = best;
    }
}

/* ---- zones and sets ---- */

const char *px_limit_zone_name(const struct px_limit_zone *z)
{
    return z->name;
}

int px_limit_zone_status(const struct px_limit_zone *z)
{
    return z->status;
}

size_t px_limit_zone_capacity(const struct px_limit_zone *z)
{
    return z->a ? z->a->capacity : 0;
}

size_t px_limit_zone_keys(const struct px_limit_zone *z)
{
    return z->ops->keys(z);
}

static size_t arena_keys(const struct px_limit_zone *z)
{
    size_t n = 0;
    for (uint32_t i = 0; i < z->a->nstripes; i++) {
        struct stripe *s = &z->a->stripes[i];
        pthread_mutex_lock(&s->lock);
        n += s->used;
        pthread_mutex_unlock(&s->lock);
    }
    return n;
}

static void arena_unref(struct arena *a)
{
    if (a == NULL || atomic_fetch_sub(&a->refs, 1) != 1)
        return;
    if (a->stripes) {
        for (uint32_t i = 0; i < a->nstripes; i++)
            pthread_mutex_destroy(&a->stripes[i].lock);
        free(a->stripes);
    }
    if (a->mem)
        munmap(a->mem, a->memlen);
    free(a);
}

static void seed(uint64_t k[4])
{
    /* A hash key, not a secret that must survive analysis: when the pool
     * is not ready yet (early boot), the clock and ASLR do. */
    if (getrandom(k, 4 * sizeof(k[0]), GRND_NONBLOCK) == (ssize_t)(4 * sizeof(k[0])))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ (uint64_t)(uintptr_t)k;
    for (int i = 0; i < 4; i++) {
        x += 0x9e3779b97f4a7c15u;   /* splitmix64 */
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
        k[i] = z ^ (z >> 31);
    }
}

/* Split zone_size over the stripes: per stripe, 48-byte entries and a
 * power-of-two bucket array of 4-byte heads, at most one per entry (chains
 * average one to two). About 50 bytes a key: 10m holds some 207,000. */
static struct arena *arena_new(const char *name, uint64_t zone_size, char *err, size_t errlen)
{
    const uint64_t per_key = sizeof(struct entry) + sizeof(uint32_t);
    struct arena *a = calloc(1, sizeof(*a));
    uint64_t per, cap, nb;
    uint32_t ns = MAX_STRIPES;

    if (a == NULL)
        goto oom;
    atomic_init(&a->refs, 1);
    a->zone_size = zone_size;
    seed(a->k);
    while (ns > 1 && zone_size / per_key / ns < MIN_PER_STRIPE)
        ns /= 2;
    per = zone_size / ns / 64 * 64;   /* stripes start on cache lines */
    cap = per / per_key;
    if (cap < 1 || cap > UINT32_MAX - 1 || (uint64_t)ns * per > SIZE_MAX / 2) {
        snprintf(err, errlen, "[limit %s]: zone_size %llu is out of range", name, (unsigned long long)zone_size);
        goto fail;
    }
    for (nb = 1; nb * 2 <= cap; nb *= 2)
        ;
    cap = (per - nb * sizeof(uint32_t)) / sizeof(struct entry);
    if (cap > UINT32_MAX - 1)
        cap = UINT32_MAX - 1;
    a->nstripes = ns;
    a->capacity = (size_t)cap * ns;
    a->memlen = (size_t)per * ns;
    a->mem = mmap(NULL, a->memlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a->mem == MAP_FAILED) {
        a->mem = NULL;
        goto oom;
    }
    a->stripes = aligned_alloc(64, ns * sizeof(struct stripe));
    if (a->stripes == NULL)
        goto oom;
    memset(a->stripes, 0, ns * sizeof(struct stripe));
    for (uint32_t i = 0; i < ns; i++) {
        struct stripe *s = &a->stripes[i];
        pthread_mutexattr_t at;
        unsigned char *base = (unsigned char *)a->mem + (size_t)i * per;
        pthread_mutexattr_init(&at);
        pthread_mutexattr_settype(&at, PTHREAD_MUTEX_ADAPTIVE_NP);
        pthread_mutex_init(&s->lock, &at);
        pthread_mutexattr_destroy(&at);
        s->e = (struct entry *)base;
        s->bucket = (uint32_t *)(base + cap * sizeof(struct entry));
        s->mask = (uint32_t)(nb - 1);
        s->cap = (uint32_t)cap;
    }
    return a;

oom:
    snprintf(err, errlen, "[limit %s]: out of memory for zone_size %llu", name, (unsigned long long)zone_size);
fail:
    if (a && a->stripes == NULL)
        a->nstripes = 0;
    arena_unref(a);
    return NULL;
}

static enum px_limit_verdict arena_check(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k,
                                        uint64_t now_ms, struct px_limit_result *res, px_limit_done_fn done,
                                        void *arg)
{
    px_limit_check(zones, n, k, now_ms, res);
    return res->verdict;
}

static void arena_free(void *state)
{
    arena_unref(state);
}

const struct px_limit_ops px_limit_arena_ops = {
    .kind = "arena",
    .check = arena_check,
    .cancel = NULL,
    .keys = arena_keys,
    .free = arena_free,
};

/* Shared zones: the remote backend decides, or says later; with none, the
 * arena (the remote itself falls back to px_limit_check when it is down). */
static const struct px_limit_ops *remote_ops;

static enum px_limit_verdict shared_check(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k,
                                         uint64_t now_ms, struct px_limit_result *res, px_limit_done_fn done,
                                         void *arg)
{
    const struct px_limit_ops *r = remote_ops;
    if (r)
        return r->check(zones, n, k, now_ms, res, done, arg);
    px_limit_check(zones, n, k, now_ms, res);
    return res->verdict;
}

static void shared_cancel(struct px_limit_zone *const *zones, size_t n, void *arg)
{
    const struct px_limit_ops *r = remote_ops;
    if (r && r->cancel)
        r->cancel(zones, n, arg);
}

static const struct px_limit_ops shared_ops = {
    .kind = "shared",
    .check = shared_check,
    .cancel = shared_cancel,
    .keys = arena_keys,
    .free = arena_free,
};

void px_limit_set_remote(const struct px_limit_ops *remote)
{
    remote_ops = remote;
}

int px_limit_zone_shared(const struct px_limit_zone *z)
{
    return z->shared;
}

void px_limit_zone_params(const struct px_limit_zone *z, uint64_t *rate, uint64_t *burst, uint64_t *delay)
{
    *rate = z->rate;
    *burst = z->burst;
    *delay = z->delay;
}

enum px_limit_verdict px_limit_decide(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k,
                                      uint64_t now_ms, struct px_limit_result *res, px_limit_done_fn done,
                                      void *arg)
{
    if (n == 0) {
        memset(res, 0, sizeof(*res));
        return PX_LIMIT_PASS;
    }
    /* a route mixing local and shared zones is one decision: the shared ops
     * take it (a few loads, on limited routes only) */
    for (size_t i = 1; i < n && zones[0]->ops != &shared_ops; i++)
        if (zones[i]->shared)
            return shared_ops.check(zones, n, k, now_ms, res, done, arg);
    return zones[0]->ops->check(zones, n, k, now_ms, res, done, arg);
}

void px_limit_cancel(struct px_limit_zone *const *zones, size_t n, void *arg)
{
    for (size_t i = 0; i < n; i++)
        if (zones[i]->shared) {
            shared_ops.cancel(zones, n, arg);
            return;
        }
    if (n && zones[0]->ops->cancel)
        zones[0]->ops->cancel(zones, n, arg);
}

void px_limit_zone_set_ops(struct px_limit_zone *z, const struct px_limit_ops *ops, void *state)
{
    if (z->ops)
        z->ops->free(z->state);
    z->ops = ops;
    z->state = state;
    z->a = ops == &px_limit_arena_ops ? state : NULL;
    z->shared = 0;
}

void *px_limit_zone_state(const struct px_limit_zone *z)
{
    return z->state;
}

size_t px_limits_count(const struct px_limits *l)
{
    return l ? l->n : 0;
}

struct px_limit_zone *px_limits_zone(const struct px_limits *l, size_t i)
{
    return (struct px_limit_zone *)&l->zones[i];
}

uint64_t px_limit_zone_size(const struct px_limit_zone *z)
{
    return z->a ? z->a->zone_size : 0;
}

/* Stripe by stripe, least recently used first, so that px_limit_zone_restore
 * in the same order rebuilds the same LRU order. */
void px_limit_zone_each(const struct px_limit_zone *z, px_limit_each_fn fn, void *arg)
{
    if (z->a == NULL)
        return;
    for (uint32_t n = 0; n < z->a->nstripes; n++) {
        struct stripe *s = &z->a->stripes[n];
        pthread_mutex_lock(&s->lock);
        for (uint32_t i = s->lru; i != 0; i = ent(s, i)->prev) {
            const struct entry *e = ent(s, i);
            struct px_limit_key k = {.family = e->family};
            memcpy(k.addr, e->addr, sizeof(k.addr));
            fn(arg, &k, e->excess, e->last);
        }
        pthread_mutex_unlock(&s->lock);
    }
}

void px_limit_zone_restore(struct px_limit_zone *z, const struct px_limit_key *k, uint64_t excess, uint64_t last,
                           uint64_t now_ms)
{
    if (z->a == NULL)
        return;
    uint64_t h = key_hash(z->a, k->family, k->addr);
    struct stripe *s = stripe_of(z->a, h);
    pthread_mutex_lock(&s->lock);
    uint32_t i = lookup_locked(s, k, h);
    if (i != 0) {
        lru_bump_locked(s, i);
    } else {
        i = take_locked(z, s, now_ms);
        insert_locked(s, i, k, h, now_ms);
    }
    ent(s, i)->excess = excess;
    ent(s, i)->last = last;
    pthread_mutex_unlock(&s->lock);
}

struct px_limits *px_limits_ref(struct px_limits *l)
{
    if (l)
        l->refs++;
    return l;
}

static struct arena *carried(const struct px_limits *old, const struct px_limit_conf *c)
{
    for (size_t i = 0; old && i < old->n; i++) {
        const struct px_limit_zone *z = &old->zones[i];
        if (z->a && strcmp(z->name, c->name) == 0 && z->a->zone_size == c->zone_size) {
            atomic_fetch_add(&z->a->refs, 1);
            return z->a;
        }
    }
    return NULL;
}

struct px_limits *px_limits_build(const struct px_config *cfg, struct px_limits *old, char *err, size_t errlen)
{
    struct px_limits *l = calloc(1, sizeof(*l) + cfg->nlimits * sizeof(l->zones[0]));

    if (l == NULL) {
        snprintf(err, errlen, "limits: out of memory");
        return NULL;
    }
    l->refs = 1;
    for (size_t i = 0; i < cfg->nlimits; i++) {
        const struct px_limit_conf *c = &cfg->limits[i];
        struct px_limit_zone *z = &l->zones[i];
        l->n = i + 1;
        if (c->rate_milli_per_s == 0 || c->rate_milli_per_s >= ((uint64_t)1 << 32)) {
            snprintf(err, errlen, "[limit %s]: rate is out of range", c->name);
            goto fail;
        }
        if ((z->name = strdup(c->name)) == NULL) {
            snprintf(err, errlen, "limits: out of memory");
            goto fail;
        }
        z->rate = c->rate_milli_per_s;
        z->burst = (uint64_t)c->burst * 1000;
        z->delay = c->nodelay ? NODELAY : (uint64_t)c->delay * 1000;
        z->status = c->status;
        if ((z->a = carried(old, c)) == NULL && (z->a = arena_new(c->name, c->zone_size, err, errlen)) == NULL)
            goto fail;
        z->shared = c->shared;
        z->ops = c->shared ? &shared_ops : &px_limit_arena_ops;
        z->state = z->a;
    }
    return l;

fail:
    px_limits_free(l);
    return NULL;
}

void px_limits_free(struct px_limits *l)
{
    if (l == NULL || --l->refs > 0)
        return;
    for (size_t i = 0; i < l->n; i++) {
        if (l->zones[i].ops)
            l->zones[i].ops->free(l->zones[i].state);
        free(l->zones[i].name);
    }
    free(l);
}

struct px_limit_zone *px_limits_find(const struct px_limits *l, const char *name)
{
    for (size_t i = 0; l && i < l->n; i++)
        if (strcmp(l->zones[i].name, name) == 0)
            return (struct px_limit_zone *)&l->zones[i];
    return NULL;
}
