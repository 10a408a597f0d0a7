/* tunnel.c -- a WebSocket tunnel after a 101: bytes both ways with
 * backpressure, half-close aware. The tunnel outlives its request: it keeps
 * the snapshot (and so its target) pinned and counts on the target until it
 * closes, so that a deploy knows when it is gone and can close it. A session
 * on its connection (struct px_session_ops). */
#include <stdlib.h>

#include "px/common.h"
#include "px/conn.h"
#include "px/list.h"
#include "px/routes.h"
#include "px/sock.h"
#include "px/tunnel.h"
#include "px/upstream.h"
#include "px/worker.h"

#define TUNNEL_HIGH (256 * 1024)

struct px_tunnel {
    struct px_conn *c;
    struct px_uconn *u;
    struct px_target *target;          /* counted in its load; kept alive by routes */
    const struct px_routes *routes;
    struct px_list_node link;          /* the worker's tunnels (px_tunnel_ctx) */
    unsigned client_eof : 1, up_eof : 1;
};

static const struct px_session_ops tunnel_ops;

static void tunnel_event(struct px_uconn *u, short what, void *owner)
{
    struct px_tunnel *t = owner;
    px_sock_mark(px_uconn_sock(u), what);
    px_conn_run(t->c);
}

int px_tunnel_start(struct px_conn *c, struct px_uconn *u, struct px_target *target, const struct px_routes *routes)
{
    struct px_worker *w = c->w;
    struct px_tunnel *t = calloc(1, sizeof(*t)); /* once per upgrade, not per request */
    if (t == NULL) {
        px_uconn_close(u);
        return -1;
    }
    t->c = c;
    t->u = u;
    t->target = target;
    t->routes = routes;
    px_routes_pin(routes, w->id);
    px_target_load_add(target, w->id, 0, 1);
    px_uconn_tunnel(u, tunnel_event, t);
    px_list_insert_head(&w->tunnel.all, &t->link);
    px_conn_set_session(c, &tunnel_ops, t);
    return 0;
}

/* session free: the connection closes */
static void tunnel_free(void *session)
{
    struct px_tunnel *t = session;
    struct px_worker *w = t->c->w;
    px_uconn_close(t->u);
    px_target_load_add(t->target, w->id, 0, -1);
    px_upstream_target_left(w, t->target);
    px_routes_unpin(t->routes, w->id);
    px_list_remove(&w->tunnel.all, &t->link);
    free(t);
}

/* ---- WebSocket tunnel: bytes both ways, half-close aware ---- */

static void tunnel_run(void *session)
{
    struct px_tunnel *t = session;
    struct px_conn *c = t->c;
    struct px_sock *us = px_uconn_sock(t->u);
    struct px_sock *cs = &c->s;
    int progress = 0;
    for (int round = 0; round < 4; round++) {
        size_t moved = 0;
        if (!t->client_eof && evbuffer_get_length(us->out) < TUNNEL_HIGH) {
            moved += px_sock_read(cs, PX_CLIENT_READ_MAX);
            if (evbuffer_get_length(cs->in)) {
                moved += evbuffer_get_length(cs->in);
                evbuffer_add_buffer(us->out, cs->in);
            }
        }
        if (!t->up_eof && evbuffer_get_length(cs->out) < TUNNEL_HIGH) {
            moved += px_sock_read(us, PX_CLIENT_READ_MAX);
            if (evbuffer_get_length(us->in)) {
                moved += evbuffer_get_length(us->in);
                evbuffer_add_buffer(cs->out, us->in);
            }
        }
        if (px_sock_flush(us) < 0 || px_sock_flush(cs) < 0 || cs->error || us->error) {
            px_conn_close(c);
            return;
        }
        if (cs->eof && !t->client_eof && evbuffer_get_length(us->out) == 0) {
            t->client_eof = 1;
            px_sock_shutdown_write(us);
        }
        if (us->eof && !t->up_eof && evbuffer_get_length(cs->out) == 0) {
            t->up_eof = 1;
            px_sock_shutdown_write(cs);
        }
        if (t->client_eof && t->up_eof) {
            px_conn_close(c);
            return;
        }
        if (moved == 0)
            break;
        progress = 1;
    }
    if (progress)
        px_conn_arm(c, c->w->tv_uread);
    if ((cs->readable && !t->client_eof && evbuffer_get_length(us->out) < TUNNEL_HIGH) ||
        (us->readable && !t->up_eof && evbuffer_get_length(cs->out) < TUNNEL_HIGH))
        event_active(&cs->ev, EV_READ, 1);
}

static void tunnel_timeout(void *session)
{
    struct px_tunnel *t = session;
    px_conn_close(t->c);
}

/* A tunnel has no graceful end of its own: it runs until a side closes, a
 * deploy closes it (PX_WM_CLOSE_TUNNELS) or the shutdown deadline. */
static int tunnel_goaway(void *session, int stop)
{
    PX_UNUSED(session);
    PX_UNUSED(stop);
    return 0;
}

static const struct px_session_ops tunnel_ops = {
    .name = "tunnel",
    .run = tunnel_run,
    .timeout = tunnel_timeout,
    .goaway = tunnel_goaway,
    .free = tunnel_free,
};

/* PX_WM_CLOSE_TUNNELS: close this worker's tunnels to one target. */
static void tunnel_on_msg(struct px_worker *w, const struct px_wmsg *m)
{
    struct px_list_node *n, *next;
    px_list_foreach_safe(&w->tunnel.all, n, next) {
        struct px_tunnel *t = px_container_of(n, struct px_tunnel, link);
        if (t->target && t->target->id == m->u.target.id)
            px_conn_close(t->c); /* frees t (tunnel_free) */
    }
}

const struct px_worker_module px_tunnel_module = {
    .name = "tunnel",
    .msgs = PX_WM_BIT(PX_WM_CLOSE_TUNNELS),
    .on_msg = tunnel_on_msg,
};
