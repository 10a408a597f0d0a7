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

#include "px/routes.h" /* PX_MAX_WORKERS */

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
    _Atomic uint64_t accepted[PX_STATS_NLISTEN];          /* client connections accepted, by listener */
    _Atomic uint64_t tls_new, tls_resumed, tls_failed;    /* client TLS handshakes */

    _Alignas(PX_STATS_ALIGN) _Atomic uint64_t requests[PX_STATS_NPROTO][PX_STATS_NCLASS];
    _Atomic uint64_t bytes_in;  /* request bytes received, head and body (the access log's bytes_in) */
    _Atomic uint64_t bytes_out; /* response bytes sent, head and body (the access log's bytes_out) */
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
 * when a zone rejected it. proto is enum px_proto; bytes as px_req counts
 * them (request.h), the access log's numbers. */
static inline void px_stats_request(struct px_stats *s, unsigned proto, int status, uint64_t bytes_in,
                                    uint64_t bytes_out, int limited)
{
    if (status == 0)
        return;
    unsigned cls = status >= 100 && status < 600 ? (unsigned)status / 100 : 0;
    px_stats_inc(&s->requests[proto < PX_STATS_NPROTO ? proto : PX_STATS_PROTO_H11][cls]);
    px_stats_add(&s->bytes_in, bytes_in);
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
    uint64_t open_conns;
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

/* Tests only: zero every block (no worker may run). */
void px_stats_reset(void);

/* ---- issue 16: where the labelled families go ----
 * Per-service (requests by code, latency histogram), per-target (in-flight,
 * health) and per-zone/route (limited) counters are labelled by config
 * names, so their blocks cannot be a fixed array here: each is a per-worker
 * array indexed by a small id the snapshot part assigns when it is built
 * (service index, target id, zone index), written by the same single-writer
 * bump (px_stats_add) and summed by the metrics reader on the main thread
 * with px_stats_sum's loop. The hooks belong beside px_stats_request (one
 * call with r->svc / r->target / the zone) so px_req_finish stays one call;
 * in-flight per target already lives on the target (routes.h) and is read,
 * not duplicated. */

#endif
