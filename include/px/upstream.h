/* px/upstream.h -- the upstream side of a request, in four files:
 *
 *   balancer.c  target choice: least outstanding requests, round robin on
 *               ties, passive health (a target whose connect failed is
 *               skipped for a while)
 *   pool.c      connections to a target: the per-worker keep-alive pool,
 *               connecting, closing (freed at the end of the loop iteration)
 *   h1client.c  HTTP/1 response framing over a px_sock: the head, the body
 *               mode, the relay (the health checker reuses it)
 *   upstream.c  the glue: a request's tries and retries, timeouts, relay
 *
 * A px_uconn is connecting, busy with one request, idle in its worker's
 * pool, or detached into a tunnel. Everything here belongs to one worker;
 * only px_target's atomics are shared. */
#ifndef PX_UPSTREAM_H
#define PX_UPSTREAM_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdint.h>

#include "px/http1.h"
#include "px/list.h"
#include "px/request.h"
#include "px/sock.h"
#include "px/timer.h"

struct px_worker;
struct px_target;

#define PX_UP_READ_MAX (256 * 1024)  /* per event, then yield to other connections */
/* Per read(2): a 64 KiB body and its head in one. libevent rounds a chain
 * (its header included) up to a power of two, so this is the most a 128 KiB
 * allocation holds; 80 KiB took as much memory. */
#define PX_UP_READ_CHUNK (128 * 1024 - 512)

/* Per target, per worker: the keep-alive pool and balancing state. */
struct px_upool {
    struct px_list idle;      /* idle keep-alive connections (LIFO), px_uconn.link */
    struct px_list busy;      /* connections with a request (connecting or busy), px_uconn.link */
    uint32_t nidle;
    uint32_t outstanding;     /* requests in flight on this worker */
    uint32_t peak;            /* the most in flight at once since the pool was last warmed from */
    uint32_t warming;         /* connections opening ahead of a switch (px_pool_warm) */
    uint64_t down_until_ms;   /* passive health: skip after a connect failure */
};

enum px_ustate { U_CONNECTING, U_BUSY, U_IDLE, U_TUNNEL, U_DEAD };

struct px_uconn {
    struct px_sock s;
    struct px_worker *w;
    uint32_t target_id;
    enum px_ustate state;
    struct px_req *req;
    struct event timer;            /* armed through px_timer_arm only */
    struct px_timer_due timer_due;
    struct px_list_node link;      /* its pool's idle or busy list, or the worker's dead list */
    struct px_list_node lru;       /* U_IDLE: the worker's idle list (px_upstream_ctx) */
    unsigned reused : 1;
    unsigned paused : 1;           /* stopped reading: the client is full */
    unsigned body_paused : 1;      /* told the client to stop sending body */
    unsigned head_done : 1;        /* response head parsed */
    unsigned got_bytes : 1;        /* any response byte arrived */
    unsigned on_busy : 1;          /* on its pool's busy list */
    unsigned warm : 1;             /* connecting ahead of a switch, no request yet */
    unsigned quickacked : 1;       /* TCP_QUICKACK set for this response (upstream.c ack_now) */
    px_tunnel_cb tunnel_cb;        /* U_TUNNEL: events go to the tunnel's owner */
    void *tunnel_owner;
};

/* ---- balancer.c ---- */

/* The target of r->svc for the next try: healthy, not draining, not
 * passively down, least outstanding requests on this worker, round robin on
 * ties; a passively down one only when nothing else is left. NULL: none. */
struct px_target *px_balancer_pick(struct px_req *r, const struct px_target *exclude);
/* A connect to t failed: skip it on this worker for a while. */
void px_balancer_mark_down(struct px_worker *w, const struct px_target *t);

/* ---- pool.c ---- */

/* Where the events of a connection the pool opens go (upstream.c's entry
 * points): handed in, so that the pool calls nothing above it. */
struct px_uconn_handlers {
    event_callback_fn event;
    event_callback_fn timeout;
};

/* The pool slot of target t on worker w (grows the table). NULL on OOM. */
struct px_upool *px_pool_of(struct px_worker *w, const struct px_target *t);
/* A connection to t for a request: an idle pooled one that is still good,
 * else a new one (connecting, its events going to h). NULL with an
 * errno value in *err. */
struct px_uconn *px_pool_get(struct px_worker *w, struct px_target *t, const struct px_uconn_handlers *h,
                             int *err);
/* After a complete response: back to the pool when reusable, else closed.
 * The worker keeps at most [proxy] upstream_keepalive idle connections, all
 * targets together: a connection pooled beyond that closes the one idle the
 * longest (nginx's `keepalive N`, which also evicts the least recently used).
 * An idle connection also closes after 60 s (nginx's keepalive_timeout). */
void px_pool_release(struct px_uconn *u, int reusable);
/* Open connections to t ahead of a switch from the targets `from`: this
 * worker's connections to them (idle and busy) divided among `nnew` new
 * targets, plus one; at least one, at most PX_WARM_MAX. */
void px_pool_warm(struct px_worker *w, const struct px_target *t, const struct px_uconn_handlers *h,
                  const uint32_t *from, uint32_t nfrom, uint32_t nnew);
void px_pool_warmed(struct px_uconn *u, int ok);
/* Take u off its target's busy list (it becomes a tunnel). */
void px_pool_unbusy(struct px_uconn *u);
/* Close idle pooled connections: to one target, or to all (UINT32_MAX). */
void px_pool_close_idle(struct px_worker *w, uint32_t target_id);
/* Worker hooks: free connections closed during this iteration; at exit,
 * close the idle ones and free the tables. */
void px_pool_gc(struct px_worker *w);
void px_pool_exit(struct px_worker *w);

/* ---- upstream.c ---- */
/* drain_timeout passed: cut this worker's requests still running on the
 * target (504 before a response head, else the response is cut short). */
void px_upstream_cut_target(struct px_worker *w, uint32_t target_id);
/* A request or tunnel of worker w on t ended (its load slot is updated):
 * when t is draining and w has nothing left on it, answer the main thread
 * PX_WA_TARGET_IDLE (the deploy waiting for the drain counts again). */
void px_upstream_target_left(struct px_worker *w, const struct px_target *t);

/* ---- h1client.c ---- */

#define PX_H1C_HEAD_MAX (64 * 1024)

/* Parse a response head at the front of in (not consumed). > 0: its length;
 * 0: need more; -1: invalid; -2: larger than PX_H1C_HEAD_MAX. */
int px_h1c_head(struct evbuffer *in, struct px_h1_response *resp);
/* Set up b for resp's body (RFC 9112 6.3: HEAD, 1xx, 204, 304 have none;
 * chunked; Content-Length; else until close). Returns 1 when the connection
 * may be kept alive after the body. */
int px_h1c_frame(struct px_h1c_body *b, const struct px_h1_response *resp, int head_request);
/* Where body bytes go: move (or drain) len bytes at the front of src;
 * return 1 to stop reading (the taker is full). */
typedef int (*px_h1c_sink)(void *arg, struct evbuffer *src, size_t len);
/* Relay the body bytes in in per b, de-chunking unless b->passthrough.
 * Stops when *paused is set (by the sink's answer). Returns 1 when the body
 * is complete, 0 when more is needed, -1 on malformed chunked framing. */
int px_h1c_relay(struct px_h1c_body *b, struct evbuffer *in, px_h1c_sink sink, void *arg, unsigned *paused);

struct px_worker_module;
/* The module: answers DRAIN_TARGET, CUT_TARGET, WARM_TARGET; closes idle pools on stop. */
extern const struct px_worker_module px_upstream_module;

#endif
