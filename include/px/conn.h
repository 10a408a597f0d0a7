/* px/conn.h -- client connections: the transport (conn.c: accept,
 * TLS handshake, timers, lifetime, idle connections) and the sessions on it
 * (h1.c: HTTP/1; h2.c: HTTP/2; tunnel.c: WebSocket tunnels).
 * Threading: a connection belongs to the worker that accepted it. */
#ifndef PX_CONN_H
#define PX_CONN_H

#include <stdint.h>

struct px_conn;

/* The client-connection module's per-worker state. */
struct px_conn_ctx {
    struct px_conn *all;            /* every open client connection */
    uint32_t n;
    struct px_conn *idle_head, *idle_tail; /* reusable connections, oldest first */
    uint64_t reuse_warned_ms;       /* last "max_connections reached" warning */
    struct px_conn *dead;           /* closed, freed by the worker's gc */
    void *free_reqs;                /* HTTP/1 request objects (h1.c) */
    uint32_t nfree_reqs;
};

#endif
