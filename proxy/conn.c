/* conn.c -- the client transport: listeners and accept, TLS handshake, the
 * state machine that hands a connection to its session (through its
 * px_session_ops: h1, h2, tunnel), timers, lingering close, idle
 * connections and max_connections, and lifetime (a closed connection is
 * freed by the worker's gc, never in its callback). */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "px/addr.h"
#include "px/common.h"
#include "px/config.h"
#include "px/conn.h"
#include "px/log.h"
#include "px/mem.h"
#include "px/routes.h"
#include "px/sock.h"
#include "px/stats.h"
#include "px/tls.h"
#include "px/worker.h"

static void conn_event(evutil_socket_t fd, short what, void *arg);
static void conn_timeout(evutil_socket_t fd, short what, void *arg);
static void conn_closed(struct px_worker *w);

#define ACCEPT_BATCH 64
/* Give memory back after a burst: when at least this many of the worker's
 * connections have closed and at most half of its peak are left; and when
 * a trim left part of the burst open, again each time half of that part
 * has gone (the last connections of a burst pin the pages their neighbours
 * freed: a few dozen of them can hold half of what the burst took). */
#define TRIM_MIN_CLOSED 64

static _Atomic uint64_t last_trim_ms; /* px_now_ms() of the last malloc_trim (trim_after_burst) */
/* ---- connections a new client may take the place of ----
 *
 * At max_connections nginx closes "reusable" connections -- keep-alive
 * waits and HTTP/2 sessions with no stream -- to make room rather than lock
 * new clients out until keepalive_timeout. The worker keeps them in a list,
 * oldest first. */

#define CONN(node) px_list_entry(node, struct px_conn, link)

static void set_reusable(struct px_conn *c, int on)
{
    struct px_worker *w = c->w;
    if (c->reusable == (unsigned)!!on)
        return;
    c->reusable = on ? 1 : 0;
    px_stats_conn_idle(px_stats_of(w->id), on);
    if (on)
        px_list_insert_tail(&w->conn.idle, &c->idle);
    else
        px_list_remove(&w->conn.idle, &c->idle);
}

/* Waiting for a request: an EOF without close_notify now is a clean end. */
void px_conn_idle(struct px_conn *c, int on)
{
    set_reusable(c, on);
    px_sock_set_eof_ok(&c->s, on);
}

static unsigned drain_idle(struct px_worker *w, unsigned n)
{
    unsigned closed = 0;
    while (closed < n && !px_list_empty(&w->conn.idle)) {
        px_conn_close(px_container_of(px_list_first(&w->conn.idle), struct px_conn, idle));
        closed++;
    }
    return closed;
}

/* ---- connection lifetime ---- */

static void conn_accept(struct px_worker *w, int fd, int tls, const struct sockaddr *sa, socklen_t salen)
{
    struct px_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        conn_closed(w);
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
        conn_closed(w);
        return;
    }
    event_assign(&c->timer, w->base, -1, 0, conn_timeout, c);
    c->state = C_SESSION;
    if (tls) {
        px_worker_refresh(w);
        const struct px_tls *t = px_routes_tls(w->routes);
        if (t == NULL || (c->s.ssl = px_tls_new(t, fd)) == NULL) {
            px_sock_close(&c->s);
            free(c);
            conn_closed(w);
            return;
        }
        c->hs_routes = w->routes;
        px_routes_pin(c->hs_routes, w->id);
        c->state = C_HANDSHAKE;
    }
    px_list_insert_head(&w->conn.all, &c->link);
    if (++w->conn.n > w->conn.peak)
        w->conn.peak = w->conn.n;
    px_conn_arm(c, w->tv_header);
    if (c->state == C_SESSION && (c->session = (c->ops = w->conn.h1)->open(c)) == NULL) {
        px_conn_close(c);
        return;
    }
    /* data usually arrives with the handshake: try at once */
    px_conn_run(c);
}

void px_conn_set_session(struct px_conn *c, const struct px_session_ops *ops, void *session)
{
    c->ops = ops;
    c->session = session;
}

void px_conn_close(struct px_conn *c)
{
    if (c->state == C_DEAD || c->closing)
        return;
    struct px_worker *w = c->w;
    c->closing = 1;
    set_reusable(c, 0);
    if (c->session) {
        void *session = c->session;
        c->session = NULL;
        c->ops->free(session);
    }
    if (c->hs_routes) {
        px_routes_unpin(c->hs_routes, w->id);
        c->hs_routes = NULL;
    }
    event_del(&c->timer);
    px_sock_close(&c->s);
    c->state = C_DEAD;
    px_list_remove(&w->conn.all, &c->link);
    px_list_insert_head(&w->conn.dead, &c->link);
    w->conn.n--;
    px_worker_schedule_gc(w);
    conn_closed(w);
}

static void conn_gc(struct px_worker *w)
{
    struct px_list_node *n;
    while ((n = px_list_first(&w->conn.dead)) != NULL) {
        px_list_remove(&w->conn.dead, n);
        free(CONN(n));
    }
}

/* Reload (stop = 0) or graceful stop (stop = 1) of every connection. */
static void goaway_all(struct px_worker *w, int stop)
{
    struct px_list_node *n, *next;
    px_list_foreach_safe(&w->conn.all, n, next) {
        struct px_conn *c = CONN(n);
        /* a handshake under way finishes (bounded by its timer): its client
         * connected before we stopped accepting -- during a binary upgrade,
         * just before the new process took over -- and is answered once */
        if (c->state == C_HANDSHAKE)
            continue;
        if (c->state == C_SESSION && c->ops->goaway(c->session, stop)) {
            px_conn_close(c);
        }
    }
}

int px_conn_input_pending(struct px_conn *c)
{
    int n = 0;
    if (evbuffer_get_length(c->s.in) > 0 || (c->s.ssl && SSL_pending(c->s.ssl) > 0))
        return 1;
    return ioctl(c->s.fd, FIONREAD, &n) == 0 && n > 0;
}

/* The session is done: flush what is queued, then close. */
void px_conn_closing(struct px_conn *c)
{
    c->state = C_CLOSING;
    px_sock_set_eof_ok(&c->s, 1);
    px_conn_arm(c, c->w->tv_body); /* bounded: a client that never reads */
    c->again = 1;
}

/* Flush, half-close and read until EOF (or tv_linger), so that the peer
 * reads our last response before it sees a reset. */
void px_conn_linger(struct px_conn *c)
{
    c->state = C_LINGER;
    px_sock_set_eof_ok(&c->s, 1);
    px_conn_arm(c, c->w->tv_linger);
    c->again = 1;
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
        c->ops = px_tls_is_h2(c->s.ssl) ? c->w->conn.h2 : c->w->conn.h1;
        c->state = C_SESSION;
        if (c->ops == NULL || (c->session = c->ops->open(c)) == NULL)
            px_conn_close(c);
        else if (c->w->stopping)
            c->ops->goaway(c->session, 0); /* h2: GOAWAY; h1 closes after its one response */
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
        case C_SESSION:
            c->ops->run(c->session);
            break;
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
    if (px_timer_early(&c->timer, &c->timer_due))
        return;
    switch (c->state) {
    case C_SESSION:
        c->ops->timeout(c->session);
        return;
    case C_HANDSHAKE:
    case C_CLOSING:
    case C_LINGER:
        px_conn_close(c);
        return;
    case C_DEAD:
        return;
    }
}

/* ---- listeners ---- */

static void accept_cb(evutil_socket_t fd, short what, void *arg);

static void accept_pause(struct px_worker *w)
{
    if (!w->conn.accepting)
        return;
    w->conn.accepting = 0;
    for (int i = 0; i < w->nlisteners; i++)
        event_del(&w->listeners[i].ev);
}

static void accept_resume(struct px_worker *w)
{
    if (w->conn.accepting || w->stopping)
        return;
    w->conn.accepting = 1;
    for (int i = 0; i < w->nlisteners; i++)
        event_add(&w->listeners[i].ev, NULL);
}

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_worker *w = arg;
    int tls = 0;
    for (int i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].fd == fd)
            tls = w->listeners[i].tls;
    px_worker_refresh(w);
    uint32_t max = w->cfg->max_connections;
    for (int n = 0; n < ACCEPT_BATCH; n++) {
        /* At the limit, make room by closing the oldest idle connection
         * (nginx's reusable connections), but only for a client that is
         * really there; with none idle, new clients wait in the listen
         * queue. */
        int full = px_stats_open_conns() >= max;
        if (full && px_list_empty(&w->conn.idle)) {
            accept_pause(w);
            return;
        }
        struct sockaddr_in6 sa; /* large enough for AF_INET and AF_INET6 */
        socklen_t salen = sizeof(sa);
        int cfd = accept4(fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                px_log_error("accept: %s: pausing accepts for a second", strerror(errno));
                accept_pause(w);
            } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                px_log_warn("accept: %s", strerror(errno));
            }
            return;
        }
        if (full) {
            drain_idle(w, 1);
            uint64_t now = px_now_ms();
            if (now - w->conn.reuse_warned_ms >= 60000) {
                w->conn.reuse_warned_ms = now;
                px_log_warn("max_connections (%u) reached: closing idle keep-alive connections for new ones",
                            max);
            }
        }
        px_stats_conn_open(px_stats_block(w->id), tls); /* registers the block for px_stats_open_conns */
        conn_accept(w, cfd, tls, (struct sockaddr *)&sa, salen);
    }
}

/* A connection closed: accepting may go on. */
static void conn_closed(struct px_worker *w)
{
    px_stats_conn_closed(px_stats_of(w->id));
    if (!w->conn.accepting && !w->stopping)
        accept_resume(w);
    if (w->stopping && w->conn.n == 0)
        event_base_loopexit(w->base, NULL);
}

static long rss_kb(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* After a burst of connections, what they used is free but stays resident:
 * glibc keeps freed memory in its per-thread arenas, fragmented among the
 * survivors, and returns only the top of a heap by itself (3,000 TLS+h2
 * connections left ~170 MB behind). malloc_trim(0) hands the free pages of
 * every arena back (MADV_DONTNEED). It walks the arenas (a few ms for a
 * large heap), so it runs from the 1 s tick, only once many connections
 * have closed -- never on the data path. */
static void trim_after_burst(struct px_worker *w)
{
    uint32_t n = w->conn.n, peak = w->conn.peak, tail = w->conn.tail;
    int burst = peak >= n + TRIM_MIN_CLOSED && n <= peak / 2;
    if (!burst && !(tail > 0 && n <= tail / 2))
        return;
    px_mem_trim(); /* this thread's cached blocks first, so that their pages can go too */
    /* one trim covers every arena: when the burst ended on all workers at
     * once, the first to notice does it for all. The peak is reset only by
     * a trim that ran: a tick that lands just inside the second after the
     * last trim (ticks jitter) tries again on the next one, not never.
     * Each trim at least halves the tail: at most log2(peak) of them. */
    uint64_t now = px_now_ms(), last = atomic_load(&last_trim_ms);
    if (now - last < 1000 || !atomic_compare_exchange_strong(&last_trim_ms, &last, now))
        return;
    w->conn.peak = n;
    w->conn.tail = n;
    long before = rss_kb();
    uint64_t t0 = px_now_us();
    malloc_trim(0);
    px_log_info("worker %d: %u of %u connections closed: freed memory returned (RSS %ld -> %ld kB, %.1f ms)",
                w->id, peak - n, peak, before, rss_kb(), (double)(px_now_us() - t0) / 1000.0);
}

/* ---- the module ---- */

static void conn_start(struct px_worker *w)
{
    w->conn.h1 = px_worker_session(w, "http/1.1");
    w->conn.h2 = px_worker_session(w, "h2");
    for (int i = 0; i < w->nlisteners; i++)
        event_assign(&w->listeners[i].ev, w->base, w->listeners[i].fd, EV_READ | EV_PERSIST, accept_cb, w);
    w->conn.accepting = 0;
    accept_resume(w);
}

static void conn_tick(struct px_worker *w)
{
    trim_after_burst(w);
    if (w->conn.n == 0)
        px_mem_trim(); /* an idle worker keeps no cached block */
    if (!w->conn.accepting && !w->stopping &&
        px_stats_open_conns() < w->cfg->max_connections)
        accept_resume(w);
}

static void conn_on_msg(struct px_worker *w, const struct px_wmsg *m)
{
    if (m->type == PX_WM_RELOAD && !w->stopping)
        goaway_all(w, 0);
}

static void conn_on_stop(struct px_worker *w, int now)
{
    if (now) {
        while (!px_list_empty(&w->conn.all))
            px_conn_close(CONN(px_list_first(&w->conn.all)));
        return;
    }
    accept_pause(w);
    for (int i = 0; i < w->nlisteners; i++) {
        close(w->listeners[i].fd);
        w->listeners[i].fd = -1;
    }
    goaway_all(w, 1);
    if (w->conn.n == 0)
        event_base_loopexit(w->base, NULL);
}

const struct px_worker_module px_conn_module = {
    .name = "conn",
    .msgs = PX_WM_BIT(PX_WM_RELOAD),
    .start = conn_start,
    .on_msg = conn_on_msg,
    .on_stop = conn_on_stop,
    .tick = conn_tick,
    .gc = conn_gc,
    .exit = conn_gc,
};
