/* px/h1.h -- the HTTP/1.x server session on a client connection (h1.c):
 * one of the session types conn.c runs through struct px_session_ops.
 * Threading: the worker that owns the connection. */
#ifndef PX_H1_H
#define PX_H1_H

#include <stdint.h>

struct px_h1conn;

struct px_worker_module;
/* The module: session ops for "http/1.1", exit frees the caches. */
extern const struct px_worker_module px_h1_module;

#endif
