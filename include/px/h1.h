/* px/h1.h -- the HTTP/1.x server session on a client connection (h1.c):
 * one of the session types conn.c runs through struct px_session_ops.
 * Threading: the worker that owns the connection. */
#ifndef PX_H1_H
#define PX_H1_H

#include <stdint.h>

struct px_h1conn;

/* The HTTP/1 module's per-worker state: cached request and session
 * objects, so that steady keep-alive traffic allocates nothing. */
struct px_h1_ctx {
    void *free_reqs;                /* HTTP/1 request objects */
    uint32_t nfree_reqs;
    struct px_h1conn *dead;         /* closed sessions, cached by the worker's gc */
    struct px_h1conn *free_sess;    /* HTTP/1 session objects */
    uint32_t nfree_sess;
};

struct px_worker_module;
/* The module: session ops for "http/1.1", exit frees the caches. */
extern const struct px_worker_module px_h1_module;

#endif
