/* px/worker_ctx.h -- each data-path module's per-worker state, the
 * members of struct px_worker (worker.h) by value: no indirection on the
 * hot path. A leaf: it includes no module header, so worker.h includes
 * only leaves and the modules include worker.h without a circle. Each
 * struct belongs to the module named above it: only that module reads or
 * writes it (its header has the API; what is in it is said here). */
#ifndef PX_WORKER_CTX_H
#define PX_WORKER_CTX_H

#include <stdint.h>

#include "px/list.h"

struct px_conn;
struct px_h1conn;
struct px_tunnel;
struct px_req;
struct px_uconn;
struct px_upool;
struct px_session_ops;

/* ---- owned by conn.c ---- */
/* The client-connection module's per-worker state. */
struct px_conn_ctx {
    struct px_list all;             /* every open client connection (px_conn.link), newest first */
    uint32_t n;
    uint32_t peak;                  /* the most open at once since the worker last gave memory back */
    uint32_t tail;                  /* open when a trim left some of a burst: trim again at half of it */
    struct px_list idle;            /* reusable connections (px_conn.idle), oldest first */
    uint64_t reuse_warned_ms;       /* last "max_connections reached" warning */
    struct px_list dead;            /* closed (px_conn.link), freed by the worker's gc */
    unsigned accepting : 1;
    const struct px_session_ops *h1, *h2; /* the sessions offered for "http/1.1" and "h2" */
};

/* ---- owned by h1.c ---- */
/* The HTTP/1 module's per-worker state: cached request and session
 * objects, so that steady keep-alive traffic allocates nothing. */
struct px_h1_ctx {
    void *free_reqs;                /* HTTP/1 request objects */
    uint32_t nfree_reqs;
    struct px_h1conn *dead;         /* closed sessions, cached by the worker's gc */
    struct px_h1conn *free_sess;    /* HTTP/1 session objects */
    uint32_t nfree_sess;
};

/* ---- owned by h2.c ---- */
/* The HTTP/2 module's per-worker state. */
struct px_h2_ctx {
    void *free;               /* cached stream objects */
    uint32_t nfree;
};

/* ---- owned by tunnel.c ---- */
/* The tunnel module's per-worker state. */
struct px_tunnel_ctx {
    struct px_list all;             /* open tunnels (PX_WM_CLOSE_TUNNELS walks them), newest first */
};

/* ---- owned by request.c ---- */
/* Per-worker state of the request module. */
struct px_req_ctx {
    struct px_list parked;           /* parked requests (px_req.park_link), newest first */
    uint32_t nparked;
    int64_t date_sec;                /* the second date[] shows (px_req_date) */
    char date[32];                   /* IMF-fixdate, PX_HTTP_DATE_LEN bytes and a NUL */
};

/* ---- owned by balancer.c, pool.c, upstream.c ---- */
/* The upstream module's per-worker state. */
struct px_upstream_ctx {
    struct px_upool *pools;   /* indexed by px_target.id */
    uint32_t npools;
    uint32_t rr;              /* round-robin tie breaker */
    struct px_list dead;      /* closed (px_uconn.link), freed by the worker's gc */
    /* Every idle connection of this worker (px_uconn.lru), all targets, most
     * recently pooled first: at [proxy] upstream_keepalive the last (the
     * oldest) is closed. */
    struct px_list lru;
    uint32_t nidle;
    uint64_t idle_evicted;    /* idle connections closed for the bound */
};

#endif
