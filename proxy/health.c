/* health.c -- active HTTP health checks: a fresh connection per check, the
 * response head read with the HTTP/1 client framing, any 2xx passes. */
#include <errno.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "px/common.h"
#include "px/health.h"
#include "px/http1.h"
#include "px/sock.h"
#include "px/log.h"
#include "px/routes.h"
#include "px/services.h"
#include "px/target.h"
#include "px/upstream.h"

struct px_health {
    struct event_base *base;
    struct px_addr addr;
    char *request;              /* the whole request, built once */
    size_t request_len;
    uint64_t interval_ms, timeout_ms;
    px_health_cb cb;
    void *arg;
    struct event next;          /* the next check */
    struct event deadline;      /* the check in progress times out */
    struct px_sock s;
    uint64_t started_ms;
    unsigned busy : 1;          /* a check is in progress */
    unsigned connecting : 1;
};

static void start_check(evutil_socket_t fd, short what, void *arg);

static void tv_of(struct timeval *tv, uint64_t ms)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

/* End the check in progress and report it. The callback may free h: it is
 * the last thing done. */
static void done(struct px_health *h, int pass, int status, const char *reason)
{
    struct px_health_result res = {
        .pass = pass,
        .status = status,
        .reason = reason,
        .elapsed_ms = px_now_ms() - h->started_ms,
    };
    event_del(&h->deadline);
    px_sock_close(&h->s);
    h->busy = 0;
    uint64_t spent = res.elapsed_ms;
    struct timeval tv;
    tv_of(&tv, spent < h->interval_ms ? h->interval_ms - spent : 0);
    event_add(&h->next, &tv);
    h->cb(h->arg, &res);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct px_health *h = arg;
    char why[96];
    px_sock_mark(&h->s, what);
    if (h->connecting) {
        int e = 0;
        socklen_t el = sizeof(e);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
            e = errno;
        if (e == EINPROGRESS || e == EALREADY || (e == 0 && !(what & (EV_WRITE | EV_READ | EV_CLOSED))))
            return;
        if (e != 0) {
            snprintf(why, sizeof(why), "connect: %s", strerror(e));
            done(h, 0, 0, why);
            return;
        }
        h->connecting = 0;
        h->s.writable = 1;
    }
    if (evbuffer_get_length(h->s.out) && px_sock_flush(&h->s) < 0) {
        snprintf(why, sizeof(why), "send: %s", strerror(h->s.err));
        done(h, 0, 0, why);
        return;
    }
    px_sock_read(&h->s, PX_H1C_HEAD_MAX);
    struct px_h1_response resp;
    int rc = px_h1c_head(h->s.in, &resp);
    while (rc > 0 && resp.status < 200) { /* 1xx: the real answer follows */
        evbuffer_drain(h->s.in, (size_t)rc);
        rc = px_h1c_head(h->s.in, &resp);
    }
    if (rc > 0) {
        int pass = resp.status >= 200 && resp.status < 300;
        snprintf(why, sizeof(why), "%d", resp.status);
        done(h, pass, resp.status, pass ? NULL : why);
        return;
    }
    if (rc < 0) {
        done(h, 0, 0, "invalid response");
        return;
    }
    if (h->s.eof || h->s.error) {
        done(h, 0, 0, h->s.error ? "connection reset" : "closed without answering");
        return;
    }
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct px_health *h = arg;
    char why[64];
    snprintf(why, sizeof(why), "timed out after %llu ms", (unsigned long long)h->timeout_ms);
    done(h, 0, 0, why);
}

static void start_check(evutil_socket_t fd, short what, void *arg)
{
    struct px_health *h = arg;
    char why[96];
    h->started_ms = px_now_ms();
    h->busy = 1;
    int sfd = socket(h->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sfd < 0) {
        snprintf(why, sizeof(why), "socket: %s", strerror(errno));
        done(h, 0, 0, why);
        return;
    }
    int one = 1;
    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = connect(sfd, (const struct sockaddr *)&h->addr.ss, h->addr.len);
    if (rc < 0 && errno != EINPROGRESS) {
        snprintf(why, sizeof(why), "connect: %s", strerror(errno));
        close(sfd);
        done(h, 0, 0, why);
        return;
    }
    if (px_sock_open(&h->s, h->base, sfd, on_io, h) < 0) {
        done(h, 0, 0, "out of memory");
        return;
    }
    h->connecting = rc < 0;
    if (h->connecting)
        h->s.readable = h->s.writable = 0;
    evbuffer_add(h->s.out, h->request, h->request_len);
    struct timeval tv;
    tv_of(&tv, h->timeout_ms);
    event_add(&h->deadline, &tv);
    if (!h->connecting)
        on_io(sfd, EV_WRITE, h);
}

struct px_health *px_health_new(struct event_base *base, const struct px_addr *addr, const char *path,
                                uint64_t interval_ms, uint64_t timeout_ms, px_health_cb cb, void *arg)
{
    struct px_health *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->base = base;
    h->addr = *addr;
    h->interval_ms = interval_ms ? interval_ms : 1000;
    h->timeout_ms = timeout_ms ? timeout_ms : 5000;
    h->cb = cb;
    h->arg = arg;
    h->s.fd = -1;
    int n = snprintf(NULL, 0,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: proxyd/%s\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                     path && path[0] ? path : "/", addr->text, PX_VERSION);
    h->request = malloc((size_t)n + 1);
    if (h->request == NULL) {
        free(h);
        return NULL;
    }
    h->request_len = (size_t)snprintf(
        h->request, (size_t)n + 1,
        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: proxyd/%s\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        path && path[0] ? path : "/", addr->text, PX_VERSION);
    event_assign(&h->next, base, -1, 0, start_check, h);
    event_assign(&h->deadline, base, -1, 0, on_deadline, h);
    event_active(&h->next, EV_TIMEOUT, 1);
    return h;
}

void px_health_free(struct px_health *h)
{
    if (h == NULL)
        return;
    event_del(&h->next);
    event_del(&h->deadline);
    px_sock_close(&h->s);
    free(h->request);
    free(h);
}

/* ---- the monitor ---- */

struct watch {
    struct px_monitor *m;
    struct px_target *t;       /* referenced while watched */
    struct px_health *h;
    unsigned fails;
    int seen;                  /* still in the table (sync's mark) */
    uint64_t interval_ms, timeout_ms; /* what the checker runs with */
    char *path;
    unsigned port;             /* health_check_port, 0 = the target's */
};

struct px_monitor {
    struct event_base *base;
    uint64_t interval_ms, timeout_ms;
    struct watch **w;
    size_t n, cap;
};

static void on_watch(void *arg, const struct px_health_result *res)
{
    struct watch *w = arg;
    if (res->pass) {
        if (!atomic_load(&w->t->healthy))
            px_log_info("target %s is healthy again: back in balancing", w->t->addr.text);
        w->fails = 0;
        atomic_store(&w->t->health_fails, 0);
        atomic_store(&w->t->healthy, 1);
        return;
    }
    atomic_store(&w->t->health_fails, ++w->fails);
    if (w->fails == PX_HEALTH_FALL && atomic_load(&w->t->healthy)) {
        atomic_store(&w->t->healthy, 0);
        px_log_warn("target %s failed %d health checks (%s): out of balancing", w->t->addr.text, PX_HEALTH_FALL,
                    res->reason ? res->reason : "?");
    }
}

struct px_monitor *px_monitor_new(struct event_base *base, uint64_t interval_ms, uint64_t timeout_ms)
{
    struct px_monitor *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->base = base;
    m->interval_ms = interval_ms;
    m->timeout_ms = timeout_ms;
    return m;
}

static void watch_free(struct watch *w)
{
    px_health_free(w->h);
    free(w->path);
    atomic_store(&w->t->healthy, 1); /* nobody judges it any more */
    atomic_store(&w->t->health_fails, 0);
    px_target_release(w->t);
    free(w);
}

/* The checker of w, with the timings and path of service s (0/NULL: the monitor's defaults). */
static int watch_start(struct px_monitor *m, struct watch *w, const struct px_service *s)
{
    uint64_t iv = s->health_check_interval_ms ? s->health_check_interval_ms : m->interval_ms;
    uint64_t to = s->health_check_timeout_ms ? s->health_check_timeout_ms : m->timeout_ms;
    char *path = strdup(s->health_check_path ? s->health_check_path : "/up");
    struct px_addr a = w->t->addr;
    if (s->opts.health_check_port)
        px_addr_with_port(&w->t->addr, s->opts.health_check_port, &a);
    struct px_health *h = path ? px_health_new(m->base, &a, path, iv, to, on_watch, w) : NULL;
    if (h == NULL) {
        free(path);
        return -1;
    }
    px_health_free(w->h);
    free(w->path);
    w->h = h;
    w->path = path;
    w->interval_ms = iv;
    w->timeout_ms = to;
    w->port = s->opts.health_check_port;
    return 0;
}

void px_monitor_sync(struct px_monitor *m, const struct px_services *t)
{
    if (m == NULL || t == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        m->w[i]->seen = 0;
    for (size_t i = 0; i < px_services_count(t); i++) {
        const struct px_service *s = px_services_at(t, i);
        for (size_t j = 0; s->health_checks && j < s->ntargets; j++) {
            struct watch *found = NULL;
            for (size_t k = 0; k < m->n && !found; k++)
                if (m->w[k]->t == s->targets[j])
                    found = m->w[k];
            if (found) {
                if (found->seen)
                    continue; /* the first service that names the target sets its check */
                found->seen = 1;
                uint64_t iv = s->health_check_interval_ms ? s->health_check_interval_ms : m->interval_ms;
                uint64_t to = s->health_check_timeout_ms ? s->health_check_timeout_ms : m->timeout_ms;
                const char *path = s->health_check_path ? s->health_check_path : "/up";
                /* a reload or a deploy changed how it is checked: a new checker, same count of failures */
                if ((iv != found->interval_ms || to != found->timeout_ms || strcmp(path, found->path) != 0 ||
                     s->opts.health_check_port != found->port) &&
                    watch_start(m, found, s) < 0)
                    px_log_error("health: %s: out of memory, keeping its old check", found->t->addr.text);
                continue;
            }
            if (m->n == m->cap) {
                size_t nc = m->cap ? m->cap * 2 : 8;
                struct watch **nw = realloc(m->w, nc * sizeof(*nw));
                if (nw == NULL)
                    return;
                m->w = nw;
                m->cap = nc;
            }
            struct watch *w = calloc(1, sizeof(*w));
            if (w == NULL)
                return;
            w->m = m;
            w->seen = 1;
            if ((w->t = px_target_acquire(&s->targets[j]->addr)) == NULL || watch_start(m, w, s) < 0) {
                if (w->t)
                    px_target_release(w->t);
                free(w);
                return;
            }
            m->w[m->n++] = w;
        }
    }
    for (size_t i = 0; i < m->n;) {
        if (m->w[i]->seen) {
            i++;
            continue;
        }
        watch_free(m->w[i]);
        m->w[i] = m->w[--m->n];
    }
}

void px_monitor_free(struct px_monitor *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        watch_free(m->w[i]);
    free(m->w);
    free(m);
}
