/* px/worker.h -- worker threads and what lives on them.
 *
 * Each worker owns one event_base, its own SO_REUSEPORT listening sockets,
 * its client connections, its upstream keep-alive pools and a free list of
 * request objects. Nothing here is touched by another thread except the
 * atomics named below and px_worker_send(). The worker is a loop: it runs
 * the hooks of the modules in its table and hands each message to the module
 * that owns it. */
#ifndef PX_WORKER_H
#define PX_WORKER_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

/* leaves only: the modules include this header, it includes none of them */
#include "px/addr.h"
#include "px/headers.h"
#include "px/worker_ctx.h"

struct px_conn;
struct px_uconn;
struct px_req;
struct px_config;
struct px_hdr_add;

struct px_listener {
    int fd;
    int tls;
    struct event ev;
};

#define PX_WORKER_MAX_LISTENERS 4

struct px_worker {
    int id;
    pthread_t thread;
    struct event_base *base;
    struct px_listener listeners[PX_WORKER_MAX_LISTENERS];
    int nlisteners;
    unsigned stopping : 1;    /* graceful stop: no accepts, close idle, finish in-flight */
    unsigned started : 1;     /* the thread runs (main thread's bookkeeping) */
    struct event tick;        /* 1 s housekeeping */
    struct event notify;      /* woken by other threads through notify_fd */
    int notify_fd;            /* eventfd */
    struct event gc;          /* frees objects closed during this loop iteration */
    const struct px_worker_module *const *mods;
    size_t nmods;
    struct px_worker_answers *answers; /* to the main thread */
    pthread_mutex_t msg_lock;      /* guards msgs: other threads append, the worker takes */
    struct px_wmsg *msgs, **msgs_tail;

    const struct px_routes *routes; /* adopted snapshot (see routes.h) */
    const struct px_config *cfg;    /* px_routes_config(routes) */
    const struct timeval *tv_header, *tv_body, *tv_keepalive, *tv_uconnect, *tv_usend, *tv_uread,
        *tv_uidle, *tv_linger;

    /* each module's own per-worker state (px/worker_ctx.h says what is in it) */
    struct px_conn_ctx conn;       /* conn.c: client connections */
    struct px_h1_ctx h1;           /* h1.c */
    struct px_tunnel_ctx tunnel;   /* tunnel.c */
    struct px_h2_ctx h2;           /* h2.c */
    struct px_upstream_ctx up;     /* balancer.c, pool.c, upstream.c */
    struct px_req_ctx req;         /* request.c: parked requests */
    struct px_hdr_add adds[PX_MAX_ADD_HEADERS]; /* response headers from cfg, cached per config;
                                                   * fixed: no allocation can leave a response without them */
    char *adds_lower;              /* their lowercase names (HTTP/2), one block; NULL: made per response */
    size_t nadds;

    struct evbuffer *access_buf;   /* access-log lines, flushed once per loop iteration */
    struct event log_flush;
    unsigned log_flush_pending : 1;
    uint64_t rng[2];
};

/* A typed message to a worker (px_worker_send): one tagged union, one
 * queue. The worker handles the lifecycle types itself (ROUTES, STOP, KILL);
 * every other type belongs to exactly one module, which names it in its
 * px_worker_module.msgs mask and answers it in on_msg (h2o: one receiver
 * per module on the thread's queue). The main thread (control plane) names
 * targets and services by id or name; the worker acts on its own
 * connections and requests. */
enum px_wmsg_type {
    PX_WM_ROUTES = 1,         /* worker: a new snapshot was published */
    PX_WM_STOP,               /* worker: graceful stop (no accepts, close idle, finish in-flight) */
    PX_WM_KILL,               /* worker: shutdown_timeout passed: close everything now */
    PX_WM_RELOAD,             /* conn: the configuration was reloaded: GOAWAY on HTTP/2 connections */
    PX_WM_DRAIN_TARGET,       /* upstream: target.id retires: idle connections close now, busy ones
                               * after their response */
    PX_WM_CLOSE_TUNNELS,      /* tunnel: close WebSocket tunnels to target.id (clients reconnect) */
    PX_WM_WAKE_SERVICE,       /* request: a pause of service.name ended: resume its parked requests */
    PX_WM_CUT_TARGET,         /* upstream: drain_timeout passed: cut requests still running on
                               * target.id (504) */
    PX_WM_WARM_TARGET,        /* upstream: open connections to warm.target_id ahead of a switch (its
                               * pool): as many as this worker has to the `from` targets it replaces
                               * (its share of them among `count` new targets), plus one; at least
                               * one, at most PX_WARM_MAX */
    PX_WM__COUNT,
    /* answers: from a worker to the main thread (px_worker_answer) */
    PX_WA_TARGET_IDLE,        /* this worker has nothing left in flight on draining target.id */
};
#define PX_WM_BIT(type) (1u << (type))

#define PX_WMSG_NAME_MAX 128
#define PX_WMSG_FROM_MAX 16
#define PX_WARM_MAX 16

struct px_wmsg {
    enum px_wmsg_type type;
    union {
        struct {
            uint32_t id;
        } target;                 /* DRAIN_TARGET, CLOSE_TUNNELS, CUT_TARGET, TARGET_IDLE */
        struct {
            char name[PX_WMSG_NAME_MAX];
        } service;                /* WAKE_SERVICE */
        struct {
            uint32_t target_id;
            struct px_addr addr;  /* the target's address (a copy: no lifetime) */
            uint32_t count;
            uint32_t from[PX_WMSG_FROM_MAX]; /* ids of the targets being replaced */
            uint32_t nfrom;
        } warm;                   /* WARM_TARGET */
    } u;
    struct px_wmsg *next;     /* the queue's */
};

/* Queue a copy of m for w and wake it (any thread). 0, or -1 out of memory. */
int px_worker_send(struct px_worker *w, const struct px_wmsg *m);
/* px_worker_send of a message without payload (ROUTES, STOP, KILL, RELOAD). */
int px_worker_post(struct px_worker *w, enum px_wmsg_type type);

/* Answers from the workers to the main thread (h2o: a receiver on the
 * main thread's queue): a worker queues a message (any of the PX_WA_*
 * types), the main loop hands it to fn(arg, m) in order. Made and freed on
 * the main thread; the workers must be joined before the free. */
struct px_worker_answers;
struct px_worker_answers *px_worker_answers_new(struct event_base *main_base,
                                                void (*fn)(void *arg, const struct px_wmsg *m), void *arg);
void px_worker_answers_free(struct px_worker_answers *a);
/* Where w's answers go (before px_worker_start); NULL: dropped. */
void px_worker_set_answers(struct px_worker *w, struct px_worker_answers *a);
/* Worker thread: queue a copy of m for the main thread (dropped when out of
 * memory or when w has no answers queue: the main thread's timers still
 * bound what waits on it). */
void px_worker_answer(struct px_worker *w, const struct px_wmsg *m);

/* Open connections across all workers (max_connections): px_stats_open_conns() in px/stats.h. */
/* Worker threads whose loop has not ended yet. */
extern _Atomic int px_workers_running;

/* A module's per-worker hooks (nginx's init_process/exit_process), all
 * optional (NULL), run on the worker's thread in table order:
 *  - `start`: the loop is about to run (listeners are added by then);
 *  - `on_msg`: a message of a type in `msgs` (PX_WM_BIT of each) arrived;
 *  - `on_stop`: graceful stop (now = 0), or close everything now (now = 1);
 *  - `tick`: 1 s housekeeping;
 *  - `gc`: free what the module closed during this loop iteration (objects
 *    are never freed inside their own callbacks);
 *  - `exit`: close and free what is left when the worker ends.
 * A module that runs a client protocol offers its session ops under its
 * ALPN name (px_worker_session). worker.c knows modules only through the
 * table handed to px_worker_init: it names none. */
struct px_session_ops;
struct px_worker_module {
    const char *name;
    uint32_t msgs;
    void (*start)(struct px_worker *w);
    void (*on_msg)(struct px_worker *w, const struct px_wmsg *m);
    void (*on_stop)(struct px_worker *w, int now);
    void (*tick)(struct px_worker *w);
    void (*gc)(struct px_worker *w);
    void (*exit)(struct px_worker *w);
    const char *alpn;                       /* the protocol it serves, or NULL */
    const struct px_session_ops *session;
};

/* The data-path modules, in the order their hooks run (modules.c): pools
 * close before the connections whose requests used them are freed. */
extern const struct px_worker_module *const px_worker_modules[];
extern const size_t px_worker_nmodules;

/* mods (static, nmods entries) must give every non-lifecycle message type
 * exactly one owner; -1 with err filled otherwise. */
int px_worker_init(struct px_worker *w, int id, const struct px_worker_module *const *mods, size_t nmods,
                   char *err, size_t errlen);
int px_worker_add_listener(struct px_worker *w, int fd, int tls);
int px_worker_start(struct px_worker *w);
void px_worker_join(struct px_worker *w);
void px_worker_free(struct px_worker *w);

/* Adopt the newest snapshot when one was published (called per request). */
void px_worker_refresh(struct px_worker *w);
/* Append an access-log line; it is written at the end of this loop iteration. */
void px_worker_access_log(struct px_worker *w, const char *line, size_t len);
/* 32 lowercase hex characters, no NUL. */
void px_worker_request_id(struct px_worker *w, char out[32]);
/* Schedule the gc event (objects were put on the dead lists). */
void px_worker_schedule_gc(struct px_worker *w);

/* The session ops of the module serving protocol `alpn` ("http/1.1",
 * "h2"), or NULL. */
const struct px_session_ops *px_worker_session(const struct px_worker *w, const char *alpn);

#endif
