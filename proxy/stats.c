/* stats.c -- the per-worker counter blocks and their sums (px/stats.h).
 * The bumps are inline in the header; this file holds the storage and the
 * readers. */
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

void px_stats_reset(void)
{
    memset(px_stats_blocks, 0, sizeof(px_stats_blocks));
    atomic_store(&nblocks, 0);
}
