/* worker.c -- one event_base per thread and its loop: housekeeping, the
 * message queue, the access-log buffer. It knows modules only through the
 * table px_worker_init is given: each answers its own messages. */
#include <errno.h>
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
#include "px/headers.h"
#include "px/log.h"
#include "px/mem.h"
#include "px/routes.h"
#include "px/worker.h"

#define ACCESS_BUF_FLUSH (64 * 1024)

_Atomic int px_workers_running;

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
        a->remove = c->headers[i].remove;
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

/* Every message type but the worker's own has exactly one owner. */
static int check_owners(const struct px_worker_module *const *mods, size_t nmods, char *err, size_t errlen)
{
    uint32_t own = PX_WM_BIT(PX_WM_ROUTES) | PX_WM_BIT(PX_WM_STOP) | PX_WM_BIT(PX_WM_KILL);
    for (size_t i = 0; i < nmods; i++) {
        if ((mods[i]->msgs & own) || (mods[i]->msgs && mods[i]->on_msg == NULL)) {
            snprintf(err, errlen, "module %s: a message type it cannot own", mods[i]->name);
            return -1;
        }
        own |= mods[i]->msgs;
    }
    for (int t = 1; t < PX_WM__COUNT; t++) {
        if (!(own & PX_WM_BIT(t))) {
            snprintf(err, errlen, "no module answers worker message type %d", t);
            return -1;
        }
    }
    return 0;
}

int px_worker_init(struct px_worker *w, int id, const struct px_worker_module *const *mods, size_t nmods,
                   char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->notify_fd = -1;
    if (check_owners(mods, nmods, err, errlen) < 0)
        return -1;
    w->mods = mods;
    w->nmods = nmods;
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
    return 0;
fail:
    snprintf(err, errlen, "worker %d: cannot create an event base", id);
    px_worker_free(w);
    return -1;
}

int px_worker_add_listener(struct px_worker *w, int fd, int tls)
{
    if (w->nlisteners == PX_WORKER_MAX_LISTENERS)
        return -1;
    struct px_listener *l = &w->listeners[w->nlisteners++];
    l->fd = fd;
    l->tls = tls;
    return 0;
}

const struct px_session_ops *px_worker_session(const struct px_worker *w, const char *alpn)
{
    for (size_t i = 0; i < w->nmods; i++)
        if (w->mods[i]->alpn && strcmp(w->mods[i]->alpn, alpn) == 0)
            return w->mods[i]->session;
    return NULL;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_worker *w = arg;
    px_worker_refresh(w);
    for (size_t i = 0; i < w->nmods; i++)
        if (w->mods[i]->tick)
            w->mods[i]->tick(w);
    if (evbuffer_get_length(w->access_buf))
        log_flush_cb(-1, 0, w);
}

static void stop(struct px_worker *w, int now)
{
    if (!now) {
        if (w->stopping)
            return;
        w->stopping = 1;
    }
    for (size_t i = 0; i < w->nmods; i++)
        if (w->mods[i]->on_stop)
            w->mods[i]->on_stop(w, now);
    if (now)
        event_base_loopexit(w->base, NULL);
}

static void handle_msg(struct px_worker *w, const struct px_wmsg *m)
{
    switch (m->type) {
    case PX_WM_ROUTES:
        px_worker_refresh(w);
        return;
    case PX_WM_STOP:
        stop(w, 0);
        return;
    case PX_WM_KILL:
        stop(w, 1);
        return;
    default:
        break;
    }
    for (size_t i = 0; i < w->nmods; i++)
        if (w->mods[i]->msgs & PX_WM_BIT(m->type)) {
            w->mods[i]->on_msg(w, m);
            return;
        }
}

static void take_msgs(struct px_worker *w)
{
    px_worker_refresh(w); /* a message may refer to a snapshot published before it */
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
    if (m->type == PX_WM_WAKE_SERVICE)
        m->u.service.name[PX_WMSG_NAME_MAX - 1] = '\0';
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

int px_worker_post(struct px_worker *w, enum px_wmsg_type type)
{
    struct px_wmsg m = {.type = type};
    return px_worker_send(w, &m);
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_worker *w = arg;
    uint64_t v;
    if (read(w->notify_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        px_log_warn("worker %d: eventfd read: %s", w->id, strerror(errno));
    take_msgs(w);
}

/* ---- answers to the main thread ---- */

struct px_worker_answers {
    pthread_mutex_t lock;           /* guards head: workers append, the main loop takes */
    struct px_wmsg *head, **tail;
    int fd;                         /* eventfd */
    struct event ev;
    void (*fn)(void *arg, const struct px_wmsg *m);
    void *arg;
};

static void answers_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_worker_answers *a = arg;
    uint64_t v;
    if (read(a->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        px_log_warn("answers: eventfd read: %s", strerror(errno));
    pthread_mutex_lock(&a->lock);
    struct px_wmsg *m = a->head;
    a->head = NULL;
    a->tail = &a->head;
    pthread_mutex_unlock(&a->lock);
    while (m) {
        struct px_wmsg *next = m->next;
        a->fn(a->arg, m);
        free(m);
        m = next;
    }
}

struct px_worker_answers *px_worker_answers_new(struct event_base *main_base,
                                                void (*fn)(void *arg, const struct px_wmsg *m), void *arg)
{
    struct px_worker_answers *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->fd < 0) {
        free(a);
        return NULL;
    }
    pthread_mutex_init(&a->lock, NULL);
    a->tail = &a->head;
    a->fn = fn;
    a->arg = arg;
    event_assign(&a->ev, main_base, a->fd, EV_READ | EV_PERSIST, answers_cb, a);
    event_add(&a->ev, NULL);
    return a;
}

void px_worker_answers_free(struct px_worker_answers *a)
{
    if (a == NULL)
        return;
    event_del(&a->ev);
    close(a->fd);
    for (struct px_wmsg *m = a->head, *next; m; m = next) {
        next = m->next;
        free(m);
    }
    pthread_mutex_destroy(&a->lock);
    free(a);
}

void px_worker_set_answers(struct px_worker *w, struct px_worker_answers *a)
{
    w->answers = a;
}

void px_worker_answer(struct px_worker *w, const struct px_wmsg *msg)
{
    struct px_worker_answers *a = w->answers;
    if (a == NULL)
        return;
    struct px_wmsg *m = malloc(sizeof(*m));
    if (m == NULL)
        return;
    *m = *msg;
    m->next = NULL;
    pthread_mutex_lock(&a->lock);
    *a->tail = m;
    a->tail = &m->next;
    pthread_mutex_unlock(&a->lock);
    uint64_t one = 1;
    if (write(a->fd, &one, sizeof(one)) < 0)
        px_log_warn("worker %d: answers eventfd write: %s", w->id, strerror(errno));
}

static void gc_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_worker *w = arg;
    for (size_t i = 0; i < w->nmods; i++)
        if (w->mods[i]->gc)
            w->mods[i]->gc(w);
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
    px_mem_thread_cache(); /* the data path's buffers and nghttp2's blocks: px/mem.h */
    event_base_dispatch(w->base);
    log_flush_cb(-1, 0, w);
    atomic_fetch_sub(&px_workers_running, 1);
    return NULL;
}

int px_worker_start(struct px_worker *w)
{
    for (size_t i = 0; i < w->nmods; i++)
        if (w->mods[i]->start)
            w->mods[i]->start(w);
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
    for (size_t i = 0; i < w->nmods; i++)
        if (w->mods[i]->exit)
            w->mods[i]->exit(w);
    for (int i = 0; i < w->nlisteners; i++) {
        if (event_initialized(&w->listeners[i].ev))
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
