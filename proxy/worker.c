/* worker.c -- one event_base per thread: listeners, housekeeping, notify. */
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/thread.h>

#include "px/common.h"
#include "px/config.h"
#include "px/h2.h"
#include "px/headers.h"
#include "px/log.h"
#include "px/stats.h"
#include "px/worker.h"

#define ACCESS_BUF_FLUSH (64 * 1024)
#define ACCEPT_BATCH 64
/* Give memory back after a burst: when at least this many of the worker's
 * connections have closed and at most half of its peak are left. */
#define TRIM_MIN_CLOSED 64

/* The modules with per-worker state, in the order their hooks run: pools
 * close before the connections whose requests used them are freed. */
static const struct px_worker_module *const modules[] = {
    &px_upstream_module,
    &px_conn_module,
    &px_h2_module,
};

_Atomic int px_workers_running;
static _Atomic uint64_t last_trim_ms; /* px_now_ms() of the last malloc_trim (trim_after_burst) */

static void tick_cb(evutil_socket_t fd, short what, void *arg);
static void notify_cb(evutil_socket_t fd, short what, void *arg);
static void gc_cb(evutil_socket_t fd, short what, void *arg);
static void log_flush_cb(evutil_socket_t fd, short what, void *arg);

static void set_timeouts(struct px_worker *w)
{
    const struct px_config *c = w->cfg;
    struct timeval tv;
#define COMMON(field, ms)                                                        \
    do {                                                                         \
        tv.tv_sec = (time_t)((ms) / 1000);                                       \
        tv.tv_usec = (suseconds_t)(((ms) % 1000) * 1000);                        \
        w->field = event_base_init_common_timeout(w->base, &tv);                 \
    } while (0)
    COMMON(tv_header, c->client_header_timeout_ms);
    COMMON(tv_body, c->client_body_timeout_ms);
    COMMON(tv_keepalive, c->keepalive_timeout_ms);
    COMMON(tv_uconnect, c->upstream_connect_timeout_ms);
    COMMON(tv_usend, c->upstream_send_timeout_ms);
    COMMON(tv_uread, c->upstream_read_timeout_ms);
    COMMON(tv_uidle, (uint64_t)60000);
    COMMON(tv_linger, (uint64_t)2000);
#undef COMMON
}

static void set_adds(struct px_worker *w)
{
    const struct px_config *c = w->cfg;
    size_t n = c->nheaders;
    if (n > PX_MAX_ADD_HEADERS) {
        if (w->id == 0)
            px_log_warn("[headers]: only the first %d headers are added", PX_MAX_ADD_HEADERS);
        n = PX_MAX_ADD_HEADERS;
    }
    /* the lowercase names HTTP/2 sends, made here once rather than per
     * response; without the block h2.c lowercases per response */
    size_t names = 0;
    for (size_t i = 0; i < n; i++)
        names += strlen(c->headers[i].name);
    free(w->adds_lower);
    w->adds_lower = names ? malloc(names) : NULL;
    char *lower = w->adds_lower;
    for (size_t i = 0; i < n; i++) {
        struct px_hdr_add *a = &w->adds[i];
        a->name = c->headers[i].name;
        a->name_len = strlen(a->name);
        a->value = c->headers[i].value;
        a->value_len = strlen(a->value);
        a->https_only = strcasecmp(a->name, "strict-transport-security") == 0;
        a->lname = NULL;
        if (lower) {
            px_lower_copy(lower, a->name, a->name_len);
            a->lname = lower;
            lower += a->name_len;
        }
    }
    w->nadds = n;
}

void px_worker_refresh(struct px_worker *w)
{
    const struct px_routes *r = px_routes_current(w->id);
    if (PX_LIKELY(r == w->routes))
        return;
    w->routes = r;
    const struct px_config *c = px_routes_config(r);
    if (c != w->cfg) {
        w->cfg = c;
        set_timeouts(w);
        set_adds(w);
    }
}

int px_worker_init(struct px_worker *w, int id, char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->notify_fd = -1;
    pthread_mutex_init(&w->msg_lock, NULL);
    w->msgs_tail = &w->msgs;
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        goto fail;
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_flag(ec, EVENT_BASE_FLAG_IGNORE_ENV);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (w->base == NULL)
        goto fail;
    w->access_buf = evbuffer_new();
    if (w->access_buf == NULL)
        goto fail;
    event_assign(&w->tick, w->base, -1, EV_PERSIST, tick_cb, w);
    /* Other threads wake us through an eventfd: the base runs without locks. */
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->notify_fd < 0)
        goto fail;
    event_assign(&w->notify, w->base, w->notify_fd, EV_READ | EV_PERSIST, notify_cb, w);
    event_assign(&w->gc, w->base, -1, 0, gc_cb, w);
    event_assign(&w->log_flush, w->base, -1, 0, log_flush_cb, w);
    struct timeval one = {1, 0};
    event_add(&w->tick, &one);
    event_add(&w->notify, NULL);
    if (getrandom(w->rng, sizeof(w->rng), 0) != sizeof(w->rng)) {
        w->rng[0] = (uint64_t)px_now_us() ^ ((uint64_t)id << 32);
        w->rng[1] = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    }
    w->rng[0] |= 1;
    px_worker_refresh(w);
    w->accepting = 1;
    return 0;
fail:
    snprintf(err, errlen, "worker %d: cannot create an event base", id);
    px_worker_free(w);
    return -1;
}

static void accept_cb(evutil_socket_t fd, short what, void *arg);

int px_worker_add_listener(struct px_worker *w, int fd, int tls)
{
    if (w->nlisteners == PX_WORKER_MAX_LISTENERS)
        return -1;
    struct px_listener *l = &w->listeners[w->nlisteners++];
    l->fd = fd;
    l->tls = tls;
    event_assign(&l->ev, w->base, fd, EV_READ | EV_PERSIST, accept_cb, w);
    return event_add(&l->ev, NULL);
}

static void accept_pause(struct px_worker *w)
{
    if (!w->accepting)
        return;
    w->accepting = 0;
    for (int i = 0; i < w->nlisteners; i++)
        event_del(&w->listeners[i].ev);
}

static void accept_resume(struct px_worker *w)
{
    if (w->accepting || w->stopping)
        return;
    w->accepting = 1;
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
        if (full && !px_conn_have_idle(w)) {
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
            px_conn_drain_idle(w, 1);
            uint64_t now = px_now_ms();
            if (now - w->conn.reuse_warned_ms >= 60000) {
                w->conn.reuse_warned_ms = now;
                px_log_warn("max_connections (%u) reached: closing idle keep-alive connections for new ones",
                            max);
            }
        }
        px_stats_conn_open(px_stats_block(w->id), tls);
        px_conn_accept(w, cfd, tls, (struct sockaddr *)&sa, salen);
    }
}

/* A connection closed: accepting may go on. */
void px_worker_conn_closed(struct px_worker *w)
{
    px_stats_conn_closed(px_stats_of(w->id));
    if (!w->accepting && !w->stopping)
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
    uint32_t n = w->conn.n, peak = w->conn.peak;
    if (peak < n + TRIM_MIN_CLOSED || n > peak / 2)
        return;
    w->conn.peak = n;
    /* one trim covers every arena: when the burst ended on all workers at
     * once, the first to notice does it for all */
    uint64_t now = px_now_ms(), last = atomic_load(&last_trim_ms);
    if (now - last < 1000 || !atomic_compare_exchange_strong(&last_trim_ms, &last, now))
        return;
    long before = rss_kb();
    uint64_t t0 = px_now_us();
    malloc_trim(0);
    px_log_info("worker %d: %u of %u connections closed: freed memory returned (RSS %ld -> %ld kB, %.1f ms)",
                w->id, peak - n, peak, before, rss_kb(), (double)(px_now_us() - t0) / 1000.0);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_worker *w = arg;
    px_worker_refresh(w);
    trim_after_burst(w);
    if (!w->accepting && !w->stopping &&
        px_stats_open_conns() < w->cfg->max_connections)
        accept_resume(w);
    if (evbuffer_get_length(w->access_buf))
        log_flush_cb(-1, 0, w);
}

static void handle_msg(struct px_worker *w, const struct px_wmsg *m)
{
    switch (m->type) {
    case PX_WM_CLOSE_IDLE:
        px_pool_close_idle(w, m->target_id);
        break;
    case PX_WM_DRAIN_TARGET:
        /* busy connections see the target's draining flag when they end */
        px_pool_close_idle(w, m->target_id);
        break;
    case PX_WM_CLOSE_TUNNELS:
        px_conn_close_tunnels(w, m->target_id);
        break;
    case PX_WM_WAKE_SERVICE:
        px_req_wake_service(w, m->name);
        break;
    case PX_WM_CUT_TARGET:
        px_upstream_cut_target(w, m->target_id);
        break;
    case PX_WM_WARM_TARGET: {
        struct px_target t = {.addr = m->addr, .id = m->target_id}; /* what a connect needs */
        px_pool_warm(w, &t, m->from, m->nfrom, m->count);
        break;
    }
    }
}

static void take_msgs(struct px_worker *w)
{
    pthread_mutex_lock(&w->msg_lock);
    struct px_wmsg *m = w->msgs;
    w->msgs = NULL;
    w->msgs_tail = &w->msgs;
    pthread_mutex_unlock(&w->msg_lock);
    while (m) {
        struct px_wmsg *next = m->next;
        handle_msg(w, m);
        free(m);
        m = next;
    }
}

int px_worker_send(struct px_worker *w, const struct px_wmsg *msg)
{
    struct px_wmsg *m = malloc(sizeof(*m));
    if (m == NULL)
        return -1;
    *m = *msg;
    m->name[PX_WMSG_NAME_MAX - 1] = '\0';
    m->next = NULL;
    pthread_mutex_lock(&w->msg_lock);
    *w->msgs_tail = m;
    w->msgs_tail = &m->next;
    pthread_mutex_unlock(&w->msg_lock);
    uint64_t one = 1;
    if (write(w->notify_fd, &one, sizeof(one)) < 0)
        px_log_warn("worker %d: eventfd write: %s", w->id, strerror(errno));
    return 0;
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_worker *w = arg;
    uint64_t v;
    if (read(w->notify_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        px_log_warn("worker %d: eventfd read: %s", w->id, strerror(errno));
    unsigned p = atomic_exchange(&w->pending, 0);
    if (p & PX_WN_ROUTES)
        px_worker_refresh(w);
    take_msgs(w); /* after the refresh: a message may refer to the new snapshot */
    if ((p & PX_WN_RELOAD) && !w->stopping)
        px_conn_goaway_all(w);
    if ((p & PX_WN_STOP) && !w->stopping) {
        accept_pause(w);
        w->stopping = 1;
        for (int i = 0; i < w->nlisteners; i++) {
            close(w->listeners[i].fd);
            w->listeners[i].fd = -1;
        }
        px_pool_close_idle(w, UINT32_MAX);
        px_conn_stop_all(w);
        if (w->conn.n == 0)
            event_base_loopexit(w->base, NULL);
    }
    if (p & PX_WN_KILL) {
        px_conn_kill_all(w);
        event_base_loopexit(w->base, NULL);
    }
}

void px_worker_notify(struct px_worker *w, unsigned what)
{
    atomic_fetch_or(&w->pending, what);
    uint64_t one = 1;
    if (write(w->notify_fd, &one, sizeof(one)) < 0)
        px_log_warn("worker %d: eventfd write: %s", w->id, strerror(errno));
}

static void gc_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_worker *w = arg;
    for (size_t i = 0; i < PX_ARRAY_LEN(modules); i++)
        if (modules[i]->gc)
            modules[i]->gc(w);
}

void px_worker_schedule_gc(struct px_worker *w)
{
    event_active(&w->gc, EV_TIMEOUT, 1);
}

static void log_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_worker *w = arg;
    w->log_flush_pending = 0;
    size_t len = evbuffer_get_length(w->access_buf);
    if (len == 0)
        return;
    const char *p = (const char *)evbuffer_pullup(w->access_buf, (ev_ssize_t)len);
    if (p)
        px_log_access_write(p, len);
    evbuffer_drain(w->access_buf, len);
}

void px_worker_access_log(struct px_worker *w, const char *line, size_t len)
{
    evbuffer_add(w->access_buf, line, len);
    if (evbuffer_get_length(w->access_buf) >= ACCESS_BUF_FLUSH) {
        log_flush_cb(-1, 0, w);
    } else if (!w->log_flush_pending) {
        w->log_flush_pending = 1;
        event_active(&w->log_flush, EV_TIMEOUT, 1);
    }
}

static uint64_t rng_next(uint64_t s[2])
{
    uint64_t s1 = s[0];
    const uint64_t s0 = s[1];
    const uint64_t result = s0 + s1;
    s[0] = s0;
    s1 ^= s1 << 23;
    s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return result;
}

void px_worker_request_id(struct px_worker *w, char out[32])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = rng_next(w->rng), b = rng_next(w->rng);
    for (int i = 0; i < 16; i++) {
        out[i] = hex[(a >> (60 - 4 * i)) & 15];
        out[16 + i] = hex[(b >> (60 - 4 * i)) & 15];
    }
}


static void *worker_main(void *arg)
{
    struct px_worker *w = arg;
    event_base_dispatch(w->base);
    log_flush_cb(-1, 0, w);
    atomic_fetch_sub(&px_workers_running, 1);
    return NULL;
}

int px_worker_start(struct px_worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w);
}

void px_worker_join(struct px_worker *w)
{
    pthread_join(w->thread, NULL);
}

void px_worker_free(struct px_worker *w)
{
    if (w->base == NULL)
        return;
    for (size_t i = 0; i < PX_ARRAY_LEN(modules); i++)
        if (modules[i]->exit)
            modules[i]->exit(w);
    for (int i = 0; i < w->nlisteners; i++) {
        event_del(&w->listeners[i].ev);
        if (w->listeners[i].fd >= 0)
            close(w->listeners[i].fd);
    }
    event_del(&w->tick);
    event_del(&w->notify);
    event_del(&w->gc);
    event_del(&w->log_flush);
    if (w->access_buf)
        evbuffer_free(w->access_buf);
    free(w->adds_lower);
    event_base_free(w->base);
    w->base = NULL;
    if (w->notify_fd >= 0)
        close(w->notify_fd);
    for (struct px_wmsg *m = w->msgs, *next; m; m = next) {
        next = m->next;
        free(m);
    }
    w->msgs = NULL;
    pthread_mutex_destroy(&w->msg_lock);
}
