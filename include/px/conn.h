/* px/conn.h -- the client transport (conn.c): listeners and accept, TLS
 * handshake, the connection timer, lingering close, idle connections and
 * max_connections, lifetime. It runs whatever session sits on a connection
 * (h1.c, h2.c, tunnel.c; HTTP/3 later) through struct px_session_ops only,
 * as HAProxy's mux_ops on struct connection: it names no session.
 * Threading: a connection belongs to the worker that accepted it. */
#ifndef PX_CONN_H
#define PX_CONN_H

#include <stdint.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "px/list.h"
#include "px/sock.h"
#include "px/timer.h"

struct px_conn;
struct px_worker;
struct px_routes;
struct px_session_ops;

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

/* A session: what runs on a connection once the transport is up. Every
 * hook gets the session pointer the connection carries (c->session). */
struct px_session_ops {
    const char *name;
    /* A new session on c (which is set up and may be written to); NULL when
     * out of memory (the connection closes). */
    void *(*open)(struct px_conn *c);
    /* The socket is ready or the session was woken: read, process, write. */
    void (*run)(void *session);
    /* The connection's timer fired. */
    void (*timeout)(void *session);
    /* Reload (stop = 0: HTTP/2 sends GOAWAY) or graceful stop (stop = 1:
     * finish what runs, then close). Returns 1 when the connection should
     * close now (nothing runs on it). */
    int (*goaway)(void *session, int stop);
    /* The connection closes under the session: abort what runs, free it. */
    void (*free)(void *session);
};

/* States of the transport: HANDSHAKE (TLS) -> SESSION (the session runs) ->
 * CLOSING (flush, close) or LINGER (flush, half-close, drain) -> DEAD. */
enum px_cstate { C_HANDSHAKE, C_SESSION, C_CLOSING, C_LINGER, C_DEAD };

struct px_conn {
    struct px_sock s;
    struct px_worker *w;
    struct event timer;           /* the session arms it (px_conn_arm) for its own timeouts */
    struct px_timer_due timer_due;
    const struct px_session_ops *ops;
    void *session;
    struct px_list_node link;     /* the worker's open list, then its dead list (px_conn_ctx) */
    struct px_list_node idle;     /* reusable: the worker's idle list, oldest first */
    enum px_cstate state;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;                       /* not sockaddr_storage: 100 bytes less per connection */
    char peer_ip[46];
    uint8_t peer_ip_len;
    unsigned tls : 1;
    unsigned in_run : 1;          /* inside px_conn_run: no re-entry, loop instead */
    unsigned again : 1;           /* px_conn_run must run once more */
    unsigned closing : 1;         /* inside px_conn_close */
    unsigned shut_wr : 1;         /* C_LINGER: our side is shut down */
    unsigned reusable : 1;        /* on the worker's idle list */
    const struct px_routes *hs_routes; /* pinned during the TLS handshake (SNI/ALPN callbacks) */
};

/* ---- the transport API sessions use ---- */

/* Run the connection: flush, then the session (or the transport's own
 * state); a call from inside the run loops once more instead of re-entering. */
void px_conn_run(struct px_conn *c);
/* Run c once more: now, or at the end of the current run. */
static inline void px_conn_wake(struct px_conn *c)
{
    if (c->in_run)
        c->again = 1;
    else
        px_conn_run(c);
}
/* (Re)arm the session's timeout: ops->timeout runs tv from now, unless it
 * is armed again first. Lazy (px/timer.h): moving the deadline later costs
 * no heap update. */
static inline void px_conn_arm(struct px_conn *c, const struct timeval *tv)
{
    px_timer_arm(&c->timer, &c->timer_due, tv);
}
/* Close now (the session's free hook runs); freed by the worker's gc. */
void px_conn_close(struct px_conn *c);
/* The session is done with c: flush what is queued, then close (bounded by
 * tv_body for a client that does not read). */
void px_conn_closing(struct px_conn *c);
/* The session is done with c: flush, half-close, read until EOF or
 * tv_linger, so that the peer reads the last response before a reset. */
void px_conn_linger(struct px_conn *c);
/* The session waits for a client with nothing running (on = 1): c may be
 * closed to make room at max_connections, and an EOF now is a clean end. */
void px_conn_idle(struct px_conn *c, int on);
/* Has the client sent bytes not read yet (buffered, in TLS, or still in
 * the kernel)? For a graceful stop: an idle connection whose next request
 * has arrived is answered, not closed. A system call: not for the request
 * path. */
int px_conn_input_pending(struct px_conn *c);
/* Put another session on c (an HTTP/1 upgrade to a tunnel); the old one is
 * the caller's to free. */
void px_conn_set_session(struct px_conn *c, const struct px_session_ops *ops, void *session);

struct px_worker_module;
/* The module: listeners, accepts, PX_WM_RELOAD, stop. */
extern const struct px_worker_module px_conn_module;

#endif
