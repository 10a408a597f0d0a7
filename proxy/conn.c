/* conn.c -- the client transport: accept, TLS handshake, the state machine
 * that hands a connection to its session (h1.c, h2.c, tunnel.c), timers,
 * lingering close, idle connections and max_connections, and lifetime (a
 * closed connection is freed by the worker's gc, never in its callback). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "px/addr.h"
#include "px/common.h"
#include "px/config.h"
#include "px/conn.h"
#include "px/h2.h"
#include "px/headers.h"
#include "px/log.h"
#include "px/request.h"
#include "px/sock.h"
#include "px/stats.h"
#include "px/tls.h"
#include "px/worker.h"


static void conn_event(evutil_socket_t fd, short what, void *arg);
static void conn_timeout(evutil_socket_t fd, short what, void *arg);




/* ---- connections a new client may take the place of ----
 *
 * At max_connections nginx closes "reusable" connections -- keep-alive
 * waits and HTTP/2 sessions with no stream -- to make room rather than lock
 * new clients out until keepalive_timeout. The worker keeps them in a list,
 * oldest first. */

void px_conn_set_reusable(struct px_conn *c, int on)
{
    struct px_worker *w = c->w;
    if (c->reusable == (unsigned)!!on)
        return;
    c->reusable = on ? 1 : 0;
    if (on) {
        c->inext = NULL;
        c->iprev = w->conn.idle_tail;
        if (w->conn.idle_tail)
            w->conn.idle_tail->inext = c;
        else
            w->conn.idle_head = c;
        w->conn.idle_tail = c;
        return;
    }
    if (c->iprev)
        c->iprev->inext = c->inext;
    else
        w->conn.idle_head = c->inext;
    if (c->inext)
        c->inext->iprev = c->iprev;
    else
        w->conn.idle_tail = c->iprev;
    c->inext = c->iprev = NULL;
}

/* Waiting for a request: an EOF without close_notify now is a clean end. */
void px_conn_enter_idle(struct px_conn *c)
{
    c->state = C_IDLE;
    px_conn_set_reusable(c, 1);
    px_sock_set_eof_ok(&c->s, 1);
}

unsigned px_conn_drain_idle(struct px_worker *w, unsigned n)
{
    unsigned closed = 0;
    while (closed < n && w->conn.idle_head) {
        px_conn_close(w->conn.idle_head);
        closed++;
    }
    return closed;
}

/* ---- connection lifetime ---- */

void px_conn_accept(struct px_worker *w, int fd, int tls, const struct sockaddr *sa, socklen_t salen)
{
    struct px_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        px_worker_conn_closed(w);
        return;
    }
    if (salen <= sizeof(c->peer))
        memcpy(&c->peer, sa, salen);
    c->peer_ip_len = (uint8_t)px_addr_ntop(&c->peer.sa, c->peer_ip, sizeof(c->peer_ip));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->w = w;
    c->tls = tls ? 1 : 0;
    if (px_sock_open(&c->s, w->base, fd, conn_event, c) < 0) {
        free(c);
        px_worker_conn_closed(w);
        return;
    }
    event_assign(&c->timer, w->base, -1, 0, conn_timeout, c);
    c->state = C_IDLE;
    if (tls) {
        px_worker_refresh(w);
        const struct px_tls *t = px_routes_tls(w->routes);
        if (t == NULL || (c->s.ssl = px_tls_new(t, fd)) == NULL) {
            px_sock_close(&c->s);
            free(c);
            px_worker_conn_closed(w);
            return;
        }
        c->hs_routes = w->routes;
        px_routes_pin(c->hs_routes, w->id);
        c->state = C_HANDSHAKE;
    }
    c->next = w->conn.all;
    if (w->conn.all)
        w->conn.all->prev = c;
    w->conn.all = c;
    if (++w->conn.n > w->conn.peak)
        w->conn.peak = w->conn.n;
    if (c->state == C_IDLE)
        px_conn_set_reusable(c, 1);
    event_add(&c->timer, w->tv_header);
    /* data usually arrives with the handshake: try at once */
    px_conn_run(c);
}


void px_conn_close(struct px_conn *c)
{
    if (c->state == C_DEAD || c->closing)
        return;
    struct px_worker *w = c->w;
    c->closing = 1;
    px_conn_set_reusable(c, 0);
    if (c->hr)
        px_h1_abort(c);
    if (c->tun)
        px_tunnel_close(c);
    if (c->hs_routes) {
        px_routes_unpin(c->hs_routes, w->id);
        c->hs_routes = NULL;
    }
    if (c->h2) {
        px_h2_free(c->h2);
        c->h2 = NULL;
    }
    event_del(&c->timer);
    px_sock_close(&c->s);
    c->state = C_DEAD;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conn.all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = w->conn.dead;
    w->conn.dead = c;
    w->conn.n--;
    px_worker_schedule_gc(w);
    px_worker_conn_closed(w);
}

static void conn_gc(struct px_worker *w)
{
    while (w->conn.dead) {
        struct px_conn *c = w->conn.dead;
        w->conn.dead = c->next;
        free(c);
    }
}

void px_conn_stop_all(struct px_worker *w)
{
    struct px_conn *c = w->conn.all, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == C_IDLE || c->state == C_HANDSHAKE)
            px_conn_close(c);
        else if (c->state == C_H2)
            px_h2_goaway(c->h2);
        else
            c->keepalive = 0;
    }
}


void px_conn_goaway_all(struct px_worker *w)
{
    for (struct px_conn *c = w->conn.all; c; c = c->next)
        if (c->state == C_H2)
            px_h2_goaway(c->h2);
}

void px_conn_kill_all(struct px_worker *w)
{
    while (w->conn.all)
        px_conn_close(w->conn.all);
}

/* Flush, half-close and read until EOF (or tv_linger), so that the peer
 * reads our last response before it sees a reset. */
void px_conn_linger(struct px_conn *c)
{
    c->keepalive = 0;
    c->state = C_LINGER;
    px_sock_set_eof_ok(&c->s, 1);
    event_add(&c->timer, c->w->tv_linger);
    c->again = 1;
}











/* An upstream event produced HTTP/2 frames: write them once this loop
 * iteration is done (EV_TIMEOUT marks no socket readiness). */
static void conn_kick(void *arg)
{
    struct px_conn *c = arg;
    if (c->in_run)
        c->again = 1;
    else
        event_active(&c->s.ev, EV_TIMEOUT, 1);
}

static void tls_handshake(struct px_conn *c)
{
    int rc = SSL_do_handshake(c->s.ssl);
    if (rc == 1) {
        int d = px_tls_handshake_done(c->s.ssl);
        if (d < 0) {
            px_conn_close(c);
            return;
        }
        if (d > 0)
            return; /* the flight waits for EPOLLOUT; SSL_do_handshake returns 1 again */
        px_stats_tls(px_stats_of(c->w->id), 1, SSL_session_reused(c->s.ssl));
        px_routes_unpin(c->hs_routes, c->w->id);
        c->hs_routes = NULL;
        c->s.readable = 1; /* read-ahead may already hold the first request */
        c->s.writable = 1;
        c->again = 1;
        if (px_tls_is_h2(c->s.ssl)) {
            struct px_h2_peer peer = {&c->peer.sa, c->peer_ip, c->peer_ip_len};
            if ((c->h2 = px_h2_new(c->w, &c->s, &peer, conn_kick, c)) == NULL) {
                px_conn_close(c);
                return;
            }
            c->state = C_H2;
            event_add(&c->timer, c->w->tv_keepalive);
            c->h2_idle_armed = 1;
            px_conn_set_reusable(c, 1);
            px_sock_set_eof_ok(&c->s, 1);
            return;
        }
        px_conn_enter_idle(c);
        return;
    }
    int e = SSL_get_error(c->s.ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        c->s.readable = 0; /* wait for an EPOLLIN edge, not any edge */
        px_tls_handshake_waiting(c->s.ssl);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->s.writable = 0;
        return;
    }
    ERR_clear_error();
    px_stats_tls(px_stats_of(c->w->id), 0, 0);
    px_conn_close(c); /* protocol or version mismatch, or the peer left */
}

void px_conn_run(struct px_conn *c)
{
    if (c->in_run) {
        c->again = 1;
        return;
    }
    c->in_run = 1;
    do {
        c->again = 0;
        if (c->s.writable && evbuffer_get_length(c->s.out) && px_sock_flush(&c->s) < 0) {
            px_conn_close(c);
            break;
        }
        switch (c->state) {
        case C_HANDSHAKE:
            if (c->s.readable || c->s.writable)
                tls_handshake(c);
            break;
        case C_IDLE:
        case C_HEAD:
            px_h1_run_head(c);
            break;
        case C_ACTIVE:
            px_h1_run_active(c);
            break;
        case C_TUNNEL:
            px_tunnel_run(c);
            break;
        case C_H2: {
            int rc = px_h2_run(c->h2);
            if (rc != 0) {
                px_conn_close(c);
                break;
            }
            if (!px_h2_idle(c->h2)) {
                if (c->h2_idle_armed) {
                    c->h2_idle_armed = 0;
                    px_conn_set_reusable(c, 0);
                    px_sock_set_eof_ok(&c->s, 0);
                }
            } else if (!c->h2_idle_armed) {
                c->h2_idle_armed = 1;
                px_conn_set_reusable(c, 1);
                px_sock_set_eof_ok(&c->s, 1);
                event_add(&c->timer, c->w->tv_keepalive);
            }
            break;
        }
        case C_CLOSING:
            if (evbuffer_get_length(c->s.out) == 0 || c->s.error)
                px_conn_close(c);
            break;
        case C_LINGER:
            if (evbuffer_get_length(c->s.out)) {
                if (c->s.error)
                    px_conn_close(c);
                break;
            }
            /* Once: every shutdown raises a new EPOLLOUT edge, and a
             * shutdown per wakeup would spin until the linger timeout. */
            if (!c->shut_wr) {
                c->shut_wr = 1;
                px_sock_shutdown_write(&c->s);
            }
            evbuffer_drain(c->s.in, evbuffer_get_length(c->s.in));
            while (c->s.readable && !c->s.eof && !c->s.error) {
                px_sock_read(&c->s, 65536);
                evbuffer_drain(c->s.in, evbuffer_get_length(c->s.in));
            }
            if (c->s.eof || c->s.error)
                px_conn_close(c);
            break;
        case C_DEAD:
            break;
        }
    } while (c->again && c->state != C_DEAD);
    c->in_run = 0;
}

static void conn_event(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    px_sock_mark(&c->s, what);
    px_conn_run(c);
}

static void conn_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    switch (c->state) {
    case C_H2:
        if (!px_h2_idle(c->h2)) {
            event_add(&c->timer, c->w->tv_keepalive);
            return;
        }
        px_conn_close(c);
        return;
    case C_HANDSHAKE:
    case C_IDLE:
    case C_HEAD:
    case C_CLOSING:
    case C_LINGER:
    case C_TUNNEL:
        px_conn_close(c);
        return;
    case C_ACTIVE:
        px_h1_timeout(c);
        return;
    case C_DEAD:
        return;
    }
}












static void conn_exit(struct px_worker *w)
{
    conn_gc(w);
    px_h1_free_cache(w);
}

const struct px_worker_module px_conn_module = {
    .name = "conn",
    .gc = conn_gc,
    .exit = conn_exit,
};
