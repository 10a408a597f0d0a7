/* px/limit.h -- request rate limiting zones with nginx limit_req semantics.
 *
 * A zone ([limit NAME]) is a leaky bucket per key (the client IP): `rate`
 * in milli-requests per second leaks `excess`; each request adds 1000
 * milli-requests. Exactly nginx's ngx_http_limit_req_module:
 *
 *   ms     = now - last        (negative: 0; clock jumped back > 60 s: 1)
 *   excess = node.excess - rate * ms / 1000 + 1000, floored at 0
 *            (rate * ms / 1000 truncates, as nginx's integer division does)
 *   excess > burst * 1000      -> rejected; nothing is charged
 *   otherwise                  -> charged: node.excess = excess, and
 *                                 node.last = now unless ms is 0 (a clock
 *                                 that stood still or went back keeps it)
 *   delay  = excess <= delay * 1000 ? 0 : (excess - delay * 1000) * 1000 / rate  (ms)
 *            (nodelay = an infinite `delay`; no `delay` and no nodelay = delay 0)
 *
 * A key seen for the first time starts with excess 0 and last = now, so
 * burst N lets N + 1 requests through back to back.
 *
 * Several zones on one route (px_limit_check with n > 1) behave as nginx's
 * several limit_req directives: every zone is looked at first; if any would
 * reject, the request is rejected and no zone is charged; otherwise every
 * zone is charged and the delay is the longest of theirs.
 *
 * Memory: a zone's state is a fixed arena sized from `zone_size` (allocated
 * once, when the zone is made; its pages are touched only as keys arrive):
 * no allocation per request or per new key. About 50 bytes a key: 10m
 * holds some 200,000 (px_limit_zone_capacity says exactly). Keys are
 * evicted least recently used first: when the arena (a stripe of it) is
 * full, a new key takes the least recently used key's entry even if that
 * key is still being limited, as nginx's ngx_http_limit_req_expire(ctx, 0)
 * deletes its oldest node by force when the zone cannot allocate one: a new
 * client is never refused for want of room. Like nginx's expire, making a
 * key also frees up to two least recently used keys idle for a minute.
 *
 * Threads: a zone is shared by every worker. It is striped (the key's hash,
 * keyed per zone, picks a stripe with its own small lock, table and LRU
 * list), so workers rarely contend and no lock is global. The capacity is
 * split evenly over the stripes, so a stripe can start evicting a little
 * before the zone holds `capacity` keys.
 *
 * Lifetime: zones belong to a px_limits set built from a config on the main
 * thread. A reload builds a new set from the old one: a zone whose name and
 * zone_size are unchanged is carried over with its state (nginx keeps
 * shared zones by name); its rate, burst, delay and status take the new
 * values. The config snapshot holds the set; workers use zones through the
 * pinned snapshot, so a set is freed only after the last request that could
 * see it. A zone handle (struct px_limit_zone) is one set's view: that set's
 * parameters over state it may share with the sets before and after it;
 * the handle lives as long as its set. Old and new sets may be used at once
 * (workers on an old snapshot): each applies its own parameters to the
 * shared buckets. */
#ifndef PX_LIMIT_H
#define PX_LIMIT_H

#include <stddef.h>
#include <stdint.h>

struct px_config;
struct sockaddr;
struct px_limit_zone;
struct px_limits;

/* A client key: an IPv4 address (family 4, first 4 bytes) or an IPv6 one
 * (family 6, all 16 bytes). Bytes past the address must be zero. An
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 key: the fillers
 * below make it so, as px_cidr_match does. */
struct px_limit_key {
    uint8_t family;
    uint8_t addr[16];
};

/* Fill k from a numeric address ("192.0.2.1", "2001:db8::1"; s need not be
 * NUL-terminated). -1 (k zeroed) when s is not exactly one. */
int px_limit_key_parse(const char *s, size_t len, struct px_limit_key *k);
/* Fill k from a peer address (AF_INET or AF_INET6). -1 for other families. */
int px_limit_key_from_sockaddr(const struct sockaddr *sa, struct px_limit_key *k);

/* Build the zones of cfg's [limit] sections, carrying over the state of
 * old's zones that keep their name and zone_size (old may be NULL and is
 * not changed; it stays valid for its readers until px_limits_free). NULL
 * with a message in err on failure (out of memory, a rate or zone_size out
 * of range); old is untouched then. Main thread. */
struct px_limits *px_limits_build(const struct px_config *cfg, struct px_limits *old, char *err, size_t errlen);
/* Drop one reference on the set (px_limits_ref); the last frees it. Zones
 * carried over into a newer set live on there (a zone's state is
 * refcounted by the sets holding it). NULL is fine. Main thread, after the
 * last reader. */
void px_limits_free(struct px_limits *l);
/* The zone called name, or NULL. */
struct px_limit_zone *px_limits_find(const struct px_limits *l, const char *name);

/* Zone facts, for the pipeline and the access log. */
const char *px_limit_zone_name(const struct px_limit_zone *z);
int px_limit_zone_status(const struct px_limit_zone *z); /* 429 or 503 */
/* How many keys the arena holds at most. */
size_t px_limit_zone_capacity(const struct px_limit_zone *z);
/* How many keys it holds now (its ops' keys; the arena takes each stripe's
 * lock in turn: for metrics and tests, not the request path). */
size_t px_limit_zone_keys(const struct px_limit_zone *z);

enum px_limit_verdict {
    PX_LIMIT_PASS = 0,  /* go on now */
    PX_LIMIT_DELAY,     /* go on after *delay_ms (park the request) */
    PX_LIMIT_REJECT,    /* answer zones[*which]'s status */
    PX_LIMIT_LATER,     /* px_limit_decide only: the answer comes through its done callback */
};

struct px_limit_result {
    enum px_limit_verdict verdict;
    uint64_t delay_ms;       /* PX_LIMIT_DELAY: the longest delay (> 0) */
    uint32_t retry_after_s;  /* PX_LIMIT_REJECT: whole seconds (rounded up, >= 1) until a
                              * request of this key would pass the rejecting zone, if no
                              * other comes meanwhile */
    size_t which;            /* PX_LIMIT_REJECT: the zone that rejected (first in order);
                              * PX_LIMIT_DELAY: the zone with the longest delay (on a tie,
                              * the later one, as nginx logs it); PX_LIMIT_PASS: 0 */
};

/* Decide one request of key k against zones[0..n) at now_ms (a monotonic
 * millisecond clock: the caller passes it, so tests use a fake one), and
 * charge it unless rejected. n == 0 passes. The zones should be distinct.
 * Any thread; takes one stripe lock at a time, never allocates. With n > 1
 * two workers racing on one key may both pass the look at an earlier zone
 * and both be charged there (nginx has the same race); one zone is exact. */
void px_limit_check(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k, uint64_t now_ms,
                    struct px_limit_result *res);

/* ---- zone implementations ---- */

/* Where a "later" answer goes: on the worker thread that asked (the
 * implementation posts it there), exactly once, unless cancelled first. res
 * is only read during the call; its verdict is never PX_LIMIT_LATER. */
typedef void (*px_limit_done_fn)(void *arg, const struct px_limit_result *res);

/* What keeps a zone's state. Today's striped arena (above) is the first
 * implementation, px_limit_arena_ops; a backend shared by several proxyd
 * instances (Redis) is the next: its check may answer PX_LIMIT_LATER, and
 * the request pipeline parks the request until done is called, so h1 and h2
 * need no change. The checks of a route's zones are one decision: the
 * first zone's ops take it, or the shared zones' when the route mixes them
 * with local ones. */
struct px_limit_ops {
    const char *kind;           /* "arena", ... (messages) */
    /* Decide one request of key k against zones[0..n) (n >= 1, all of this
     * kind) and charge it, with px_limit_check's rules. Fills res and
     * returns its verdict, or returns PX_LIMIT_LATER (res untouched) and
     * calls done(arg, ...) once later on the calling worker's thread. Any
     * worker thread; never blocks. */
    enum px_limit_verdict (*check)(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k,
                                   uint64_t now_ms, struct px_limit_result *res, px_limit_done_fn done, void *arg);
    /* Forget a pending "later" answer for arg: done is not called for it
     * after this returns (the request ended first). The calling worker's
     * thread. NULL when check never answers later. */
    void (*cancel)(struct px_limit_zone *const *zones, size_t n, void *arg);
    /* How many keys the zone holds (metrics and tests, not the request path). */
    size_t (*keys)(const struct px_limit_zone *z);
    /* Drop the zone's hold on state (the set that named it is freed). */
    void (*free)(void *state);
};

/* The striped arena: px_limit_check behind the ops (it never answers later). */
extern const struct px_limit_ops px_limit_arena_ops;

/* Decide through the zones' ops: px_limit_check for arena zones; another
 * implementation may return PX_LIMIT_LATER and answer through done(arg).
 * n == 0 passes. Any worker thread. */
enum px_limit_verdict px_limit_decide(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k,
                                      uint64_t now_ms, struct px_limit_result *res, px_limit_done_fn done,
                                      void *arg);
/* Cancel a "later" answer px_limit_decide promised for arg (see the op). */
void px_limit_cancel(struct px_limit_zone *const *zones, size_t n, void *arg);

/* Put zone z on another implementation: ops with its state (taken over;
 * the zone's previous state is dropped through its ops' free). Such a zone
 * is not carried over by name into the next set. Main thread, before the
 * set is published. */
void px_limit_zone_set_ops(struct px_limit_zone *z, const struct px_limit_ops *ops, void *state);
/* The zone's implementation state (what set_ops gave, or the arena). */
void *px_limit_zone_state(const struct px_limit_zone *z);
/* Shared zones ([limit] shared = yes): the zone keeps its arena, which is
 * its local state when the remote backend is down (px_limit_check on such
 * zones uses the arena), and its ops ask `remote` (px_limit_set_remote)
 * first. Without a remote (no [cluster] running) they decide locally. */
int px_limit_zone_shared(const struct px_limit_zone *z);
/* The backend shared zones ask (the cluster module). Main thread, before
 * the workers start; NULL: local decisions. */
void px_limit_set_remote(const struct px_limit_ops *remote);
/* px_limit_check in two halves, for a decision joined with another
 * backend's (a route mixing local and shared zones): look at every zone
 * charging none (PX_LIMIT_REJECT with which and retry_after_s, as
 * px_limit_check), then, once the whole decision passes, charge every zone
 * (PX_LIMIT_PASS, or PX_LIMIT_DELAY with the longest delay). Between the
 * two, another request may charge the zones: nginx's race, as in
 * px_limit_check with n > 1. */
enum px_limit_verdict px_limit_look(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k,
                                    uint64_t now_ms, struct px_limit_result *res);
void px_limit_charge(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k, uint64_t now_ms,
                     struct px_limit_result *res);
/* A zone's parameters in the arithmetic's units: rate in milli-requests
 * per second, burst and delay in milli-requests (delay UINT64_MAX:
 * nodelay). */
void px_limit_zone_params(const struct px_limit_zone *z, uint64_t *rate, uint64_t *burst, uint64_t *delay);

/* A new reference on the set (main thread): it is freed by the last
 * px_limits_free. The carry-over object holds one on the set in force. */
struct px_limits *px_limits_ref(struct px_limits *l);

/* ---- a binary upgrade's carry-over (px/carry.h) ---- */

/* How many zones l has (0 for NULL), and zone i (i < that). */
size_t px_limits_count(const struct px_limits *l);
struct px_limit_zone *px_limits_zone(const struct px_limits *l, size_t i);
/* The zone's zone_size (0 on another implementation than the arena). */
uint64_t px_limit_zone_size(const struct px_limit_zone *z);
typedef void (*px_limit_each_fn)(void *arg, const struct px_limit_key *k, uint64_t excess, uint64_t last_ms);
/* Call fn for every key of an arena zone with its bucket (excess in
 * milli-requests, last on px_now_ms's clock, which is the machine's
 * monotonic clock and so the same in the next process), least recently
 * used first. Takes each stripe's lock in turn (fn must not call back
 * into the zone). Main thread; nothing for another implementation. */
void px_limit_zone_each(const struct px_limit_zone *z, px_limit_each_fn fn, void *arg);
/* Put key k with that bucket into an arena zone (as the most recently
 * used key; an existing one is overwritten), evicting as a new key would.
 * Main thread, before the zone's set is used or while it is. */
void px_limit_zone_restore(struct px_limit_zone *z, const struct px_limit_key *k, uint64_t excess, uint64_t last_ms,
                           uint64_t now_ms);

#endif
