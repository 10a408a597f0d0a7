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
    uint32_t peak;                  /* the most open at once since the worker last gave memory back */
    struct px_conn *idle_head, *idle_tail; /* reusable connections, oldest first */
    uint64_t reuse_warned_ms;       /* last "max_connections reached" warning */
    struct px_conn *dead;           /* closed, freed by the worker's gc */
    void *free_reqs;                /* HTTP/1 request objects (h1.c) */
    uint32_t nfree_reqs;
};

/* ---- the module's internals, shared by conn.c, h1.c and tunnel.c ---- */

#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "px/sock.h"

struct px_worker;
struct px_h1req;
struct px_uconn;
struct px_target;
struct px_routes;
struct px_h2;

/* Client output held for a client that does not read (nginx holds 64-128
 * KiB in its proxy buffers). A client that keeps up (nothing queued) takes a
 * whole upstream read, so a 64 KiB body and its head move in one read and one
 * write; one that is behind gets at most PX_CLIENT_OUT_HIGH. */
#define PX_CLIENT_OUT_HIGH (64 * 1024)
#define PX_CLIENT_OUT_LOW (16 * 1024)
#define PX_CLIENT_READ_MAX (64 * 1024)
/* A request answered without reading its body (404, 429, 503, a redirect)
 * keeps its keep-alive connection when at most this much body is left: it
 * is read and dropped, as nginx discards it; a larger one closes. */
#define PX_DISCARD_MAX (1024 * 1024)

/* States: HANDSHAKE (TLS) -> IDLE (keep-alive, waiting for a first byte) ->
 * HEAD (reading a request head) -> ACTIVE (one request in flight) -> IDLE
 * again, or CLOSING (flush, close) / LINGER (flush, half-close, drain) ->
 * DEAD. H2 after ALPN "h2"; TUNNEL after a WebSocket 101. */
enum px_cstate { C_HANDSHAKE, C_IDLE, C_HEAD, C_ACTIVE, C_TUNNEL, C_H2, C_CLOSING, C_LINGER, C_DEAD };

struct px_conn {
    struct px_sock s;
    struct px_worker *w;
    struct event timer;
    struct px_conn *next, *prev;
    struct px_conn *inext, *iprev; /* the worker's idle list, oldest first */
    enum px_cstate state;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;                       /* not sockaddr_storage: 100 bytes less per connection */
    char peer_ip[46];
    uint8_t peer_ip_len;
    unsigned tls : 1;
    unsigned keepalive : 1;       /* keep the connection after the current response */
    unsigned out_full : 1;        /* the upstream waits for our output to drain */
    unsigned body_paused : 1;     /* the upstream asked us to stop reading body */
    unsigned in_run : 1;          /* inside conn_run: no re-entry, loop instead */
    unsigned again : 1;           /* conn_run must run once more */
    unsigned tun_client_eof : 1, tun_up_eof : 1;
    unsigned closing : 1;         /* inside conn_close */
    unsigned shut_wr : 1;         /* C_LINGER: our side is shut down */
    unsigned reusable : 1;        /* on the worker's idle list */
    uint32_t discard;             /* h1.c: body bytes of an answered request still to skip */
    struct px_h1req *hr;              /* h1.c: the request in progress */
    struct px_uconn *tun;
    struct px_target *tun_target;      /* counted in its load; kept alive by tun_routes */
    const struct px_routes *tun_routes;
    const struct px_routes *hs_routes; /* pinned during the TLS handshake (SNI/ALPN callbacks) */
    struct px_h2 *h2;             /* C_H2: the HTTP/2 session */
    unsigned h2_idle_armed : 1;
};

/* conn.c */
void px_conn_run(struct px_conn *c);           /* runs the state machine; re-entry loops instead */
void px_conn_close(struct px_conn *c);         /* now; freed by the worker's gc */
void px_conn_linger(struct px_conn *c);        /* flush, half-close, read until EOF or tv_linger */
void px_conn_enter_idle(struct px_conn *c);    /* keep-alive: wait for the next request */
void px_conn_set_reusable(struct px_conn *c, int on);

/* h1.c: the HTTP/1 session on a connection */
void px_h1_run_head(struct px_conn *c);        /* IDLE/HEAD: read and start requests */
void px_h1_run_active(struct px_conn *c);      /* ACTIVE: body up, output drained */
void px_h1_timeout(struct px_conn *c);         /* ACTIVE: the connection's timer fired */
void px_h1_abort(struct px_conn *c);           /* the connection closes under a request */
void px_h1_free_cache(struct px_worker *w);

/* tunnel.c: a WebSocket tunnel on a connection */
void px_tunnel_start(struct px_conn *c, struct px_uconn *u, struct px_target *t, const struct px_routes *routes);
void px_tunnel_run(struct px_conn *c);
void px_tunnel_close(struct px_conn *c);

#endif
