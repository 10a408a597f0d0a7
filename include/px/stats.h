/* px/stats.h -- per-worker counters of the data path (nginx's ngx_stat_*,
 * h2o's status collectors): bumped where the work happens, summed where
 * they are read.
 *
 * Threading. Each worker (wid < PX_MAX_WORKERS) owns one block and is its
 * only writer: a bump is a relaxed load and a relaxed store of its own
 * field -- no lock, no atomic read-modify-write, no allocation, no shared
 * cache line (blocks are cache-line aligned). The fields are _Atomic so
 * that a reader on another thread (the main thread: control plane, the
 * metrics server of issue 16) may load them at any time without a data race
 * under the C11 model; on x86-64 and arm64 a relaxed store is a plain store.
 * A sum is not a consistent cut across counters or workers (each counter is
 * exact and monotonic on its own; the open-connection gauge may lag by the
 * accepts in flight), which is what a scrape or a status line needs.
 * A writer that is not the worker (the main thread freeing a worker's
 * connections after joining it) is fine: the join orders it after the
 * worker's own writes.
 *
 * Counters survive a reload (they are per worker id, not per snapshot);
 * px_stats_reset() is for tests only.
 *
 * Issue 16 (the metrics server) reads these through px_stats_sum(); the
 * per-service, per-target and per-zone families go beside them, see the
 * note at the end of this file. */
#ifndef PX_STATS_H
#define PX_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#include "px/common.h" /* PX_MAX_WORKERS, PX_UNLIKELY */

/* Protocol of a finished request (same order as enum px_proto in request.h;
 * a static assert in stats.c keeps them together). */
enum { PX_STATS_PROTO_H10, PX_STATS_PROTO_H11, PX_STATS_PROTO_H2, PX_STATS_NPROTO };
/* Status class: index status / 100 (1xx..5xx); 0 holds anything outside
 * 100..599. */
#define PX_STATS_NCLASS 6
/* Kinds of upstream errors: one per failed try (a retried request may count
 * more than one). */
enum px_stats_upstream_err {
    PX_STATS_UP_CONNECT,      /* connect refused or failed (not a timeout) */
    PX_STATS_UP_TIMEOUT,      /* connect, send or read timed out */
    PX_STATS_UP_RESET,        /* closed or reset before a complete answer */
    PX_STATS_UP_BAD_RESPONSE, /* an invalid or oversized head, a 101 not asked for, bad chunked framing */
    PX_STATS_UP_NKINDS
};
/* Listeners: a worker has one of each kind (server.c). */
enum { PX_STATS_LISTEN_HTTP, PX_STATS_LISTEN_HTTPS, PX_STATS_NLISTEN };

#define PX_STATS_ALIGN 64

/* One worker's block. Field order: what accept and close touch first (its
 * own cache line, read by other workers for max_connections), then the
 * per-request counters. */
struct px_stats {
    _Alignas(PX_STATS_ALIGN) _Atomic uint32_t open_conns; /* gauge: client connections open now */
    _Atomic uint32_t idle_conns;                          /* gauge: of those, idle keep-alive (reusable) */
    _Atomic uint64_t accepted[PX_STATS_NLISTEN];          /* client connections accepted, by listener */
    _Atomic uint64_t tls_new, tls_resumed, tls_failed;    /* client TLS handshakes */

    _Alignas(PX_STATS_ALIGN) _Atomic uint64_t requests[PX_STATS_NPROTO][PX_STATS_NCLASS];
    _Atomic uint64_t bytes_in;  /* request body bytes handed to an upstream (as received) */
    _Atomic uint64_t bytes_out; /* response body bytes sent to clients (the access log's bytes_out) */
    _Atomic uint64_t limited;   /* requests a rate-limit zone rejected (429 or its status) */
    _Atomic uint64_t parked;    /* times a request was parked (limit delay, paused service) */
    _Atomic uint64_t closed_early; /* 499: the client left before the answer */
    _Atomic uint64_t upstream_errors[PX_STATS_UP_NKINDS];
};

/* The blocks, one per worker id: static storage, no allocation, and a
 * block exists before its worker does (a unit test needs no server). Use
 * px_stats_of(); the array is here only so that the lookup is inline. */
extern struct px_stats px_stats_blocks[PX_MAX_WORKERS];

/* The block of worker wid (0 <= wid < PX_MAX_WORKERS): the request path's
 * lookup, an array index. */
static inline struct px_stats *px_stats_of(int wid)
{
    return &px_stats_blocks[wid];
}
/* The same, and wid counts among the workers whose open-connection gauges
 * px_stats_open_conns() reads: for the accept path (a worker's first
 * connection registers it; nothing else writes the gauge). */
struct px_stats *px_stats_block(int wid);

/* The single-writer bump: only the block's owner calls these. */
static inline void px_stats_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}
static inline void px_stats_inc(_Atomic uint64_t *c)
{
    px_stats_add(c, 1);
}

/* ---- the sites (one call each) ---- */

/* A request ended (px_req_finish): status 0 (nothing was answered or
 * logged) is not counted; 499 counts in closed_early and class 4xx; limited
 * when a zone rejected it. proto is enum px_proto. */
static inline void px_stats_request(struct px_stats *s, unsigned proto, int status, uint64_t bytes_out,
                                    int limited)
{
    if (status == 0)
        return;
    unsigned cls = status >= 100 && status < 600 ? (unsigned)status / 100 : 0;
    px_stats_inc(&s->requests[proto < PX_STATS_NPROTO ? proto : PX_STATS_PROTO_H11][cls]);
    px_stats_add(&s->bytes_out, bytes_out);
    if (limited)
        px_stats_inc(&s->limited);
    if (status == 499)
        px_stats_inc(&s->closed_early);
}

/* A client connection was accepted on a listener (tls: the https one) /
 * closed (every accepted connection closes exactly once). */
static inline void px_stats_conn_open(struct px_stats *s, int tls)
{
    atomic_store_explicit(&s->open_conns, atomic_load_explicit(&s->open_conns, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    px_stats_inc(&s->accepted[tls ? PX_STATS_LISTEN_HTTPS : PX_STATS_LISTEN_HTTP]);
}
static inline void px_stats_conn_closed(struct px_stats *s)
{
    atomic_store_explicit(&s->open_conns, atomic_load_explicit(&s->open_conns, memory_order_relaxed) - 1,
                          memory_order_relaxed);
}

/* A client connection went idle (on: waiting for its next request) or busy
 * again / closed while idle (off): conn.c's reusable flag. */
static inline void px_stats_conn_idle(struct px_stats *s, int on)
{
    atomic_store_explicit(&s->idle_conns,
                          atomic_load_explicit(&s->idle_conns, memory_order_relaxed) + (on ? 1u : (uint32_t)-1),
                          memory_order_relaxed);
}

/* A client TLS handshake ended: ok (reused: an abbreviated handshake from a
 * session ticket or the session cache) or failed. */
static inline void px_stats_tls(struct px_stats *s, int ok, int reused)
{
    px_stats_inc(!ok ? &s->tls_failed : reused ? &s->tls_resumed : &s->tls_new);
}

/* ---- readers (any thread; the main thread in practice) ---- */

/* Open client connections across all workers (max_connections and status):
 * one relaxed load per registered worker, cheap enough for every accept. */
uint32_t px_stats_open_conns(void);

/* Sums over every worker, plain integers. */
struct px_stats_snapshot {
    uint64_t open_conns, idle_conns;
    uint64_t accepted[PX_STATS_NLISTEN];
    uint64_t tls_new, tls_resumed, tls_failed;
    uint64_t requests[PX_STATS_NPROTO][PX_STATS_NCLASS];
    uint64_t requests_total; /* every cell of requests[][] */
    uint64_t bytes_in, bytes_out, limited, parked, closed_early;
    uint64_t upstream_errors[PX_STATS_UP_NKINDS];
};
void px_stats_sum(struct px_stats_snapshot *out); /* reads every block */
/* Names for the indexes, as issue 16's labels and status's JSON use them:
 * "http1.0", "http1.1", "http2"; "connect", "timeout", "reset",
 * "bad_response"; "http", "https". */
extern const char *const px_stats_proto_names[PX_STATS_NPROTO];
extern const char *const px_stats_upstream_err_names[PX_STATS_UP_NKINDS];
extern const char *const px_stats_listen_names[PX_STATS_NLISTEN];

/* Tests only: zero every block, the labelled ones too (no worker may run). */
void px_stats_reset(void);

/* ---- labelled families (issue 16) ----
 *
 * Per-service (requests by exact code x proto, the latency histogram, bytes),
 * per service-target pair (upstream errors by kind) and per zone-route pair
 * (limited requests) counters are labelled by config and deploy names, so
 * they live beside the fixed blocks above, indexed by a small id:
 *
 *  - Ids are assigned on the main thread while a snapshot is built
 *    (px_stats_service_id() from px_services_seal, px_stats_target_id() for
 *    each of a service's targets, px_stats_limit_id() from the [route]
 *    table). The same name (pair) gets the same id for the process
 *    lifetime, across reloads and deploys, so its counters keep counting;
 *    ids are never reused (a removed service's counters stay, as a
 *    Prometheus counter should). Service id 0 is "" (a request answered
 *    before a service was chosen).
 *  - The storage of an id (one cache-line aligned block per worker) is
 *    allocated when the id is assigned, before the snapshot that carries the
 *    id is published: the publish (release/acquire) orders the allocation
 *    before any worker's use, so workers never allocate.
 *  - The bump is an array index and the single-writer relaxed load/store of
 *    px_stats_add: no lock, no atomic RMW.
 *
 * Cost: a service costs sizeof(struct px_stats_svc) (1,472 bytes) per
 * worker, a service-target pair and a zone-route pair 64 bytes per worker,
 * plus the name. Label values are copies of config/deploy names only. */

/* The latency histogram's upper bounds in microseconds (DESIGN: .005 .01
 * .025 .05 .1 .25 .5 1 2.5 5 10 seconds); the last bucket is +Inf. */
#define PX_STATS_NBUCKETS 12
extern const uint64_t px_stats_bucket_us[PX_STATS_NBUCKETS - 1];

/* Exact status codes: each registered code has its slot (px_stats_code_slot);
 * another code takes one of a worker's PX_STATS_NOVERFLOW overflow slots
 * (claimed by that worker, its only writer); when those are taken it counts
 * in its class's fallback slot (label "2xx" etc., "other" outside 100..599). */
#define PX_STATS_NCODES 44
#define PX_STATS_NCODE_SLOTS (PX_STATS_NCODES + PX_STATS_NCLASS)
#define PX_STATS_NOVERFLOW 4
extern const uint16_t px_stats_codes[PX_STATS_NCODES];
/* code (0..599) -> slot + 1 (0: not registered) */
extern const uint8_t px_stats_code_slot_tab[600];

/* The id spaces. */
#define PX_STATS_MAX_SERVICES 4096
#define PX_STATS_MAX_TARGETS 16384 /* service-target pairs */
#define PX_STATS_MAX_LIMITS 4096   /* zone-route pairs */
/* A service-target pair past PX_STATS_MAX_TARGETS (or out of memory): its
 * errors count only in the unlabelled totals. */
#define PX_STATS_NO_ID UINT32_MAX

struct px_stats_overflow {
    _Atomic uint32_t code; /* 0: free; set once by the owning worker */
    _Atomic uint64_t n[PX_STATS_NPROTO];
};

/* One worker's counters of one service. */
struct px_stats_svc {
    _Alignas(PX_STATS_ALIGN) _Atomic uint64_t requests[PX_STATS_NCODE_SLOTS][PX_STATS_NPROTO];
    struct px_stats_overflow overflow[PX_STATS_NOVERFLOW];
    _Atomic uint64_t duration[PX_STATS_NBUCKETS]; /* per bucket, not cumulative; [last] = +Inf */
    _Atomic uint64_t duration_sum_us;
    _Atomic uint64_t bytes_in, bytes_out;
};
/* One worker's counters of a service-target pair / a zone-route pair. */
struct px_stats_tgt {
    _Alignas(PX_STATS_ALIGN) _Atomic uint64_t errors[PX_STATS_UP_NKINDS];
};
struct px_stats_lim {
    _Alignas(PX_STATS_ALIGN) _Atomic uint64_t limited;
};

/* id -> its blocks, one per worker (index wid). Set by the main thread
 * before the id is published; the arrays are here only so that the lookup
 * is inline. */
extern struct px_stats_svc *px_stats_svc_tab[PX_STATS_MAX_SERVICES];
extern struct px_stats_tgt *px_stats_tgt_tab[PX_STATS_MAX_TARGETS];
extern struct px_stats_lim *px_stats_lim_tab[PX_STATS_MAX_LIMITS];

/* ---- ids (main thread only) ---- */

/* How many workers' blocks an id gets: n clamped to 1..PX_MAX_WORKERS
 * (default PX_MAX_WORKERS). Before the first id is assigned (later calls are
 * ignored: ids keep the blocks they have). */
void px_stats_set_nworkers(int n);
/* The id of service name ("" is id 0), of the pair (service id, target
 * "HOST:PORT"), of the pair (zone, route label): assigned (with its
 * storage) on first use, the same one afterwards. 0 with *id set, or -1
 * when out of memory or out of ids (nothing assigned; the caller fails its
 * build). */
int px_stats_service_id(const char *name, uint32_t *id);
int px_stats_target_id(uint32_t service_id, const char *target, uint32_t *id);
int px_stats_limit_id(const char *zone, const char *route, uint32_t *id);

/* ---- the sites (the block's worker only) ---- */

static inline unsigned px_stats_code_slot(int status)
{
    if (status >= 100 && status < 600 && px_stats_code_slot_tab[status])
        return px_stats_code_slot_tab[status] - 1u;
    return PX_STATS_NCODES + (status >= 100 && status < 600 ? (unsigned)status / 100 : 0);
}

/* A request ended (px_req_finish, beside px_stats_request): service id svc
 * (0: none chosen), proto (enum px_proto), status (0: not counted),
 * duration in microseconds, bytes sent to the client. */
static inline void px_stats_service(int wid, uint32_t svc, unsigned proto, int status, uint64_t dur_us,
                                    uint64_t bytes_out)
{
    if (status == 0)
        return;
    struct px_stats_svc *s = &px_stats_svc_tab[svc][wid];
    if (proto >= PX_STATS_NPROTO)
        proto = PX_STATS_PROTO_H11;
    if (PX_LIKELY(status >= 100 && status < 600 && px_stats_code_slot_tab[status])) {
        px_stats_inc(&s->requests[px_stats_code_slot_tab[status] - 1u][proto]);
    } else {
        int i = 0;
        for (; i < PX_STATS_NOVERFLOW; i++) {
            uint32_t c = atomic_load_explicit(&s->overflow[i].code, memory_order_relaxed);
            if (c == (uint32_t)status)
                break;
            if (c == 0) {
                atomic_store_explicit(&s->overflow[i].code, (uint32_t)status, memory_order_relaxed);
                break;
            }
        }
        if (i < PX_STATS_NOVERFLOW)
            px_stats_inc(&s->overflow[i].n[proto]);
        else
            px_stats_inc(&s->requests[px_stats_code_slot(status)][proto]);
    }
    unsigned b = 0;
    while (b < PX_STATS_NBUCKETS - 1 && dur_us > px_stats_bucket_us[b])
        b++;
    px_stats_inc(&s->duration[b]);
    px_stats_add(&s->duration_sum_us, dur_us);
    px_stats_add(&s->bytes_out, bytes_out);
}
/* Request body bytes handed to an upstream for service svc (beside the
 * unlabelled bytes_in). */
static inline void px_stats_service_bytes_in(int wid, uint32_t svc, uint64_t n)
{
    px_stats_add(&px_stats_svc_tab[svc][wid].bytes_in, n);
}
/* An upstream error of kind (enum px_stats_upstream_err) on the pair tgt. */
static inline void px_stats_target_error(int wid, uint32_t tgt, unsigned kind)
{
    px_stats_inc(&px_stats_tgt_tab[tgt][wid].errors[kind]);
}
/* A request a zone rejected, on the pair lim. */
static inline void px_stats_limited(int wid, uint32_t lim)
{
    px_stats_inc(&px_stats_lim_tab[lim][wid].limited);
}

/* ---- readers (main thread: the metrics server, the status page) ---- */

/* How many ids are assigned (ids are 0..n-1). */
uint32_t px_stats_nservices(void);
uint32_t px_stats_ntargets(void);
uint32_t px_stats_nlimits(void);
/* Their labels (borrowed, valid for the process lifetime). */
const char *px_stats_service_name(uint32_t id);
void px_stats_target_label(uint32_t id, uint32_t *service_id, const char **target);
void px_stats_limit_label(uint32_t id, const char **zone, const char **route);

/* A service's counters summed over workers. codes[0..ncodes) are the codes
 * seen (count != 0 for some proto), registered codes first in code order,
 * then overflow codes, then class fallbacks (code 1..5: "Nxx", 0: "other"). */
struct px_stats_code_count {
    int code;
    int fallback; /* 1: code is a class (label "Nxx" or "other") */
    uint64_t n[PX_STATS_NPROTO];
};
struct px_stats_svc_sum {
    struct px_stats_code_count codes[PX_STATS_NCODE_SLOTS + PX_STATS_NOVERFLOW * 4];
    size_t ncodes;
    uint64_t requests;                    /* every count of codes[] */
    uint64_t duration[PX_STATS_NBUCKETS]; /* cumulative: duration[i] = requests <= bound i; [last] = count */
    uint64_t duration_sum_us;
    uint64_t bytes_in, bytes_out;
};
void px_stats_service_sum(uint32_t id, struct px_stats_svc_sum *out);
/* A pair's errors by kind / limited count, summed over workers. */
void px_stats_target_sum(uint32_t id, uint64_t errors[PX_STATS_UP_NKINDS]);
uint64_t px_stats_limit_sum(uint32_t id);
/* Label text of a code: "200", "2xx", "other" (buf >= 8 bytes). */
const char *px_stats_code_label(const struct px_stats_code_count *c, char *buf);

#endif
