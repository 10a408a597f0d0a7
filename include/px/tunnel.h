/* px/tunnel.h -- a WebSocket tunnel on a client connection after a 101
 * (tunnel.c): bytes both ways; a session type conn.c runs through struct
 * px_session_ops. Threading: the worker that owns the connection. */
#ifndef PX_TUNNEL_H
#define PX_TUNNEL_H

#include <stdint.h>

struct px_conn;
struct px_uconn;
struct px_target;
struct px_routes;
struct px_tunnel;

/* Turn c into a tunnel to u (taken over: closed with the tunnel). It counts
 * on t's load and pins routes until it closes. The caller's session must
 * let go of c. 0, or -1 when out of memory (u is closed). */
int px_tunnel_start(struct px_conn *c, struct px_uconn *u, struct px_target *t, const struct px_routes *routes);

struct px_worker_module;
/* The module: answers PX_WM_CLOSE_TUNNELS. */
extern const struct px_worker_module px_tunnel_module;

#endif
