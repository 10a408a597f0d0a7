/* tunnel.c -- a WebSocket tunnel after a 101: bytes both ways with
 * backpressure, half-close aware. The tunnel outlives its request: it keeps
 * the snapshot (and so its target) pinned and counts on the target until it
 * closes, so that a deploy knows when it is gone and can close it. */
#include "px/common.h"
#include "px/conn.h"
#include "px/request.h"
#include "px/routes.h"
#include "px/sock.h"
#include "px/worker.h"

#define TUNNEL_HIGH (256 * 1024)

static void tunnel_event(struct px_uconn *u, short what, void *owner)
{
    struct px_conn *c = owner;
    px_sock_mark(px_uconn_sock(u), what);
    px_conn_run(c);
}

void px_tunnel_start(struct px_conn *c, struct px_uconn *u, struct px_target *t, const struct px_routes *routes)
{
    c->tun = u;
    c->tun_target = t;
    c->tun_routes = routes;
    px_routes_pin(routes, c->w->id);
    px_target_load_add(t, c->w->id, 0, 1);
    px_uconn_tunnel(u, tunnel_event, c);
}

void px_tunnel_close(struct px_conn *c)
{
    px_uconn_close(c->tun);
    c->tun = NULL;
    px_target_load_add(c->tun_target, c->w->id, 0, -1);
    px_routes_unpin(c->tun_routes, c->w->id);
    c->tun_target = NULL;
    c->tun_routes = NULL;
}

/* ---- WebSocket tunnel: bytes both ways, half-close aware ---- */

void px_tunnel_run(struct px_conn *c)
{
    struct px_sock *us = px_uconn_sock(c->tun);
    struct px_sock *cs = &c->s;
    int progress = 0;
    for (int round = 0; round < 4; round++) {
        size_t moved = 0;
        if (!c->tun_client_eof && evbuffer_get_length(us->out) < TUNNEL_HIGH) {
            moved += px_sock_read(cs, PX_CLIENT_READ_MAX);
            if (evbuffer_get_length(cs->in)) {
                moved += evbuffer_get_length(cs->in);
                evbuffer_add_buffer(us->out, cs->in);
            }
        }
        if (!c->tun_up_eof && evbuffer_get_length(cs->out) < TUNNEL_HIGH) {
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
        if (cs->eof && !c->tun_client_eof && evbuffer_get_length(us->out) == 0) {
            c->tun_client_eof = 1;
            px_sock_shutdown_write(us);
        }
        if (us->eof && !c->tun_up_eof && evbuffer_get_length(cs->out) == 0) {
            c->tun_up_eof = 1;
            px_sock_shutdown_write(cs);
        }
        if (c->tun_client_eof && c->tun_up_eof) {
            px_conn_close(c);
            return;
        }
        if (moved == 0)
            break;
        progress = 1;
    }
    if (progress)
        event_add(&c->timer, c->w->tv_uread);
    if ((cs->readable && !c->tun_client_eof && evbuffer_get_length(us->out) < TUNNEL_HIGH) ||
        (us->readable && !c->tun_up_eof && evbuffer_get_length(cs->out) < TUNNEL_HIGH))
        event_active(&cs->ev, EV_READ, 1);
}

void px_conn_close_tunnels(struct px_worker *w, uint32_t target_id)
{
    struct px_conn *c = w->conn.all, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == C_TUNNEL && c->tun_target && c->tun_target->id == target_id)
            px_conn_close(c);
    }
}
