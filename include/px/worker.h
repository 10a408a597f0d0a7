/* px/worker.h -- worker threads and what lives on them.
 *
 * Each worker owns one event_base, its own SO_REUSEPORT listening sockets,
 * its client connections, its upstream keep-alive pools and a free list of
 * request objects. Nothing here is touched by another thread except the
 * atomics named below and px_worker_notify(). */
#ifndef PX_WORKER_H
#define PX_WORKER_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "px/conn.h"
#include "px/h2.h"
#include "px/headers.h"
#include "px/request.h"
#include "px/routes.h"
#include "px/upstream.h"

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
    unsigned accepting : 1;
    unsigned stopping : 1;    /* graceful stop: no accepts, close idle, finish in-flight */
    unsigned started : 1;     /* the thread runs (main thread's bookkeeping) */
    struct event tick;        /* 1 s housekeeping */
    struct event notify;      /* woken by other threads through notify_fd */
    int notify_fd;            /* eventfd */
    struct event gc;          /* frees objects closed during this loop iteration */
    _Atomic unsigned pending; /* PX_WN_* bits for notify */
    pthread_mutex_t msg_lock;      /* guards msgs: other threads append, the worker takes */
    struct px_wmsg *msgs, **msgs_tail;

    const struct px_routes *routes; /* adopted snapshot (see routes.h) */
    const struct px_config *cfg;    /* px_routes_config(routes) */
    const struct timeval *tv_header, *tv_body, *tv_keepalive, *tv_uconnect, *tv_usend, *tv_uread,
        *tv_uidle, *tv_linger;

    /* each module's own per-worker state (its header says what is in it) */
    struct px_conn_ctx conn;       /* conn.c, h1.c, tunnel.c: client connections */
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

#define PX_WN_STOP 0x1        /* graceful stop */
#define PX_WN_ROUTES 0x2      /* a new snapshot was published */
#define PX_WN_KILL 0x4        /* shutdown_timeout passed: close everything now */
#define PX_WN_RELOAD 0x8      /* the configuration was reloaded: GOAWAY on HTTP/2 connections */

/* A typed message to a worker (px_worker_send). The main thread (control
 * plane) tells workers about targets and services by id or name; the worker
 * acts on its own connections and requests. */
enum px_wmsg_type {
    PX_WM_CLOSE_IDLE = 1,     /* close idle pooled connections to target_id */
    PX_WM_DRAIN_TARGET,       /* target_id retires: idle connections close now, busy ones after their response */
    PX_WM_CLOSE_TUNNELS,      /* close WebSocket tunnels to target_id (clients reconnect) */
    PX_WM_WAKE_SERVICE,       /* a pause of service `name` ended: resume its parked requests */
    PX_WM_CUT_TARGET,         /* drain_timeout passed: cut requests still running on target_id (504) */
    PX_WM_WARM_TARGET,        /* open connections to `target` ahead of a switch (its pool): as many as
                               * this worker has to the `from` targets it replaces (its share of them
                               * among `count` new targets), plus one; at least one, at most PX_WARM_MAX */
};

#define PX_WMSG_NAME_MAX 128
#define PX_WMSG_FROM_MAX 16
#define PX_WARM_MAX 16

struct px_wmsg {
    enum px_wmsg_type type;
    uint32_t target_id;
    struct px_addr addr;      /* PX_WM_WARM_TARGET: the target's address (a copy: no lifetime) */
    uint32_t count;
    uint32_t from[PX_WMSG_FROM_MAX]; /* PX_WM_WARM_TARGET: ids of the targets being replaced */
    uint32_t nfrom;
    char name[PX_WMSG_NAME_MAX];
    struct px_wmsg *next;     /* the queue's */
};

/* Queue a copy of m for w and wake it (any thread). 0, or -1 out of memory. */
int px_worker_send(struct px_worker *w, const struct px_wmsg *m);

/* Open connections across all workers (max_connections): px_stats_open_conns() in px/stats.h. */
/* Worker threads whose loop has not ended yet. */
extern _Atomic int px_workers_running;

/* A module's per-worker hooks (nginx's init_process/exit_process): `gc`
 * frees what the module closed during this loop iteration (objects are
 * never freed inside their own callbacks); `exit` closes and frees what is
 * left when the worker ends. Either may be NULL. worker.c runs the hooks of
 * every module in its table, in order. */
struct px_worker_module {
    const char *name;
    void (*gc)(struct px_worker *w);
    void (*exit)(struct px_worker *w);
};
extern const struct px_worker_module px_conn_module, px_h2_module, px_upstream_module;

int px_worker_init(struct px_worker *w, int id, char *err, size_t errlen);
int px_worker_add_listener(struct px_worker *w, int fd, int tls);
int px_worker_start(struct px_worker *w);
void px_worker_notify(struct px_worker *w, unsigned what);
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

/* Accept on a listener: provided by conn.c. */
void px_conn_accept(struct px_worker *w, int fd, int tls, const struct sockaddr *sa, socklen_t salen);
/* Graceful stop: close idle client connections, mark the rest to close after
 * their current response (conn.c). */
void px_conn_stop_all(struct px_worker *w);
/* At max_connections: close up to n of this worker's idle connections
 * (keep-alive waits, HTTP/2 sessions without streams), oldest first, to make
 * room for new clients, as nginx does. Returns how many were closed. */
unsigned px_conn_drain_idle(struct px_worker *w, unsigned n);
static inline int px_conn_have_idle(const struct px_worker *w)
{
    return w->conn.idle_head != NULL;
}
/* Close every client connection now (shutdown deadline). */
void px_conn_kill_all(struct px_worker *w);
/* GOAWAY on every HTTP/2 connection (reload): clients reconnect at leisure. */
void px_conn_goaway_all(struct px_worker *w);
/* A client connection closed (conn.c -> worker.c): accounting, resume accepts. */
void px_worker_conn_closed(struct px_worker *w);
/* Close this worker's WebSocket tunnels to one target (conn.c). */
void px_conn_close_tunnels(struct px_worker *w, uint32_t target_id);

#endif
