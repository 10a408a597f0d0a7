/* px/limit.h -- request rate limiting zones with nginx limit_req semantics.
 *
 * A zone ([limit NAME]) is a leaky bucket per key (the client IP): `rate`
 * in milli-requests per second leaks `excess`; each request adds 1000
 * milli-requests. Exactly nginx's ngx_http_limit_req_module:
 *
 *   ms     = now - last        (negative: 0; clock jumped back > 60 s: 1)
 *   excess = node.excess - rate * ms / 1000 + 1000, floored at 0
 *   excess > burst * 1000      -> rejected; nothing is charged
 *   otherwise                  -> charged: node.excess = excess, node.last = now
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
 * once, when the zone is made): no allocation per request or per new key.
 * Keys are evicted least recently used first, but only idle ones (excess
 * fully leaked); when the arena is full and the least recently used key is
 * not idle, the request is rejected, as nginx does when its shared zone
 * cannot allocate a node.
 *
 * Threads: a zone is shared by every worker. It is striped (the key's hash
 * picks a stripe with its own small lock, table and LRU list), so workers
 * rarely contend and no lock is global.
 *
 * Lifetime: zones belong to a px_limits set built from a config on the main
 * thread. A reload builds a new set from the old one: a zone whose name and
 * zone_size are unchanged is carried over with its state (nginx keeps
 * shared zones by name); its rate, burst, delay and status take the new
 * values. The config snapshot holds the set; workers use zones through the
 * pinned snapshot, so a set is freed only after the last request that could
 * see it. */
#ifndef PX_LIMIT_H
#define PX_LIMIT_H

#include <stddef.h>
#include <stdint.h>

struct px_config;
struct px_limit_zone;
struct px_limits;

/* A client key: an IPv4 address (family 4, first 4 bytes) or an IPv6 one
 * (family 6, all 16 bytes). Bytes past the address must be zero. */
struct px_limit_key {
    uint8_t family;
    uint8_t addr[16];
};

/* Fill k from a numeric address ("192.0.2.1", "2001:db8::1"). -1 when s is
 * not one. */
int px_limit_key_parse(const char *s, size_t len, struct px_limit_key *k);

/* Build the zones of cfg's [limit] sections, carrying over the state of
 * old's zones that keep their name and zone_size (old may be NULL and is
 * not changed; it stays valid for its readers until px_limits_free). NULL
 * with a message in err on failure (out of memory). Main thread. */
struct px_limits *px_limits_build(const struct px_config *cfg, struct px_limits *old, char *err, size_t errlen);
/* Free the set; zones carried over into a newer set live on there. NULL is
 * fine. */
void px_limits_free(struct px_limits *l);
/* The zone called name, or NULL. */
struct px_limit_zone *px_limits_find(const struct px_limits *l, const char *name);

/* Zone facts, for the pipeline and the access log. */
const char *px_limit_zone_name(const struct px_limit_zone *z);
int px_limit_zone_status(const struct px_limit_zone *z); /* 429 or 503 */
/* How many keys the arena holds at most. */
size_t px_limit_zone_capacity(const struct px_limit_zone *z);

enum px_limit_verdict {
    PX_LIMIT_PASS = 0,  /* go on now */
    PX_LIMIT_DELAY,     /* go on after *delay_ms (park the request) */
    PX_LIMIT_REJECT,    /* answer zones[*which]'s status */
};

struct px_limit_result {
    enum px_limit_verdict verdict;
    uint64_t delay_ms;       /* PX_LIMIT_DELAY: the longest delay */
    uint32_t retry_after_s;  /* PX_LIMIT_REJECT: whole seconds until a request would pass, >= 1 */
    size_t which;            /* PX_LIMIT_REJECT: the zone that rejected (first in order) */
};

/* Decide one request of key k against zones[0..n) at now_ms (a monotonic
 * millisecond clock: the caller passes it, so tests use a fake one). Any
 * thread. */
void px_limit_check(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k, uint64_t now_ms,
                    struct px_limit_result *res);

#endif
