/* px/request.h -- one proxied request, independent of the client protocol,
 * and the one pipeline every request goes through.
 *
 * A client side (an HTTP/1.x connection, an HTTP/2 stream) parses a request
 * head into a px_req_head, fills a px_req (px_req_begin), and hands it to
 * px_req_dispatch(): shortcuts (health_path, ACME challenge, the port-80
 * redirect) -> [route] match -> body limit -> route policy (rate limits) ->
 * service -> service state -> upstream. A step that must wait parks the
 * request (px_req_park): the worker keeps it on a list with a timer and
 * re-enters the pipeline where it stopped. When the request is over, whatever the reason, the client side
 * calls px_req_finish() once: access log, per-target counts, unpin.
 *
 * The client side implements px_down_ops; upstream.c owns target choice,
 * pooling, retries, timeouts and the response framing. Request objects come
 * from per-worker free lists: no allocation per request in steady state.
 * Threading: a px_req lives and dies on its worker. */
#ifndef PX_REQUEST_H
#define PX_REQUEST_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdint.h>
#include <sys/socket.h>

#include "px/http1.h"
#include "px/list.h"
#include "px/routes.h"
#include "px/spool.h"

struct px_req;
struct px_worker;
struct px_hdr_add;
struct px_uconn;
struct px_config;

struct px_down_ops {
    /* The pipeline answers the request itself (health, 404, 429, 502...):
     * send this response. body NULL: "<status> <reason>\n". extra: response
     * header fields to add (Location), or NULL. The request is over when it
     * returns (the client side calls px_req_finish). */
    void (*respond)(struct px_req *r, int status, const char *body, size_t len,
                    const struct px_h1_header *extra, size_t nextra);
    /* The upstream request has started: let the request body flow (HTTP/1:
     * 100 Continue, read the body; HTTP/2: hand over what waited). */
    void (*proceed)(struct px_req *r);
    /* The response head arrived. Return 0 to go on, -1 when the client is
     * gone. Set *passthrough when the client takes the upstream's chunked
     * framing verbatim (HTTP/1.1); otherwise body bytes arrive de-chunked. */
    int (*resp_head)(struct px_req *r, const struct px_h1_response *resp, size_t head_len,
                     int *passthrough);
    /* len body bytes at the front of src: move (or drain) them. Return 1 when
     * the client's buffer is full: the upstream stops reading until
     * px_upstream_resume(). */
    int (*resp_body)(struct px_req *r, struct evbuffer *src, size_t len);
    /* The response ended: ok=1 complete, ok=0 cut short after the head was
     * sent (the client connection must be closed). */
    void (*resp_end)(struct px_req *r, int ok);
    /* No response head could be had: answer with this status (502, 503, 504). */
    void (*resp_error)(struct px_req *r, int status);
    /* The upstream takes request body again after a px_upstream_body() pause. */
    void (*body_resume)(struct px_req *r);
    /* 101 Switching Protocols was relayed: hand both sockets to a tunnel. */
    void (*upgraded)(struct px_req *r);
    /* The response turned out invalid before any body byte was handed over:
     * take back the head given to resp_head, if none of it reached the
     * client yet. 0 when done (resp_error follows); -1 when too late. May be
     * NULL (never possible). */
    int (*resp_retract)(struct px_req *r);
    /* How many response bytes the client side can take now. 0: full, and
     * the client side calls px_upstream_resume once it drained. Bounds
     * each upstream read, so a client that does not read costs at most its
     * watermark, not its watermark plus a read. May be NULL (no bound). */
    size_t (*resp_room)(struct px_req *r);
};

/* Where the pipeline (re-)enters a request. ROUTE: shortcuts, then the
 * [route] that applies (before the service, as an nginx location applies
 * to a path no service serves); POLICY: its rate limits (a delayed request
 * parks and re-enters at SERVICE); SERVICE: the service by host and path. */
enum px_step { PX_STEP_ROUTE = 0, PX_STEP_POLICY, PX_STEP_SERVICE, PX_STEP_STATE, PX_STEP_UPSTREAM, PX_STEP_DONE };

#define PX_CLIENT_IP_MAX 46
#define PX_RESP_LOG_MAX 1024

struct px_req {
    /* ---- set by px_req_begin, per request ---- */
    struct px_worker *w;
    const struct px_down_ops *ops;
    void *down;                      /* the client-side owner */
    const struct px_req_head *q;   /* the head, owned by the client side */
    size_t head_bound;               /* bytes the upstream head can need beyond the forwarding fields */
    const struct sockaddr *peer;     /* the TCP peer */
    const char *peer_ip;
    uint8_t peer_ip_len;
    uint8_t proto;                   /* PX_PROTO_* (access log) */
    unsigned tls : 1;
    unsigned websocket : 1;
    unsigned strip_expect : 1;       /* proxyd answers 100-continue itself */
    unsigned looped : 1;             /* it carries this process's CDN-Loop token: it came from us */
    unsigned xff_trusted : 1;        /* xff came from a trusted proxy (trusted_proxies) */
    unsigned html : 1;               /* proxyd's own response is a service's error page */

    const struct px_routes *routes;  /* pinned for the request's lifetime */
    const struct px_route *route;    /* the [route] that applies, or NULL */
    const struct px_hdr_add *adds;   /* response headers when its route has sets (r->route->adds),
                                      * NULL: the worker's [headers] */
    size_t nadds;
    const char *limited;             /* the zone that rejected it (access log), or NULL */
    uint32_t limited_stats_id;       /* its (zone, route) metrics id, when limited */
    const struct px_service *svc;
    struct px_target *target;        /* the target of the current try */
    struct px_uconn *up;
    enum px_step step;

    enum px_method method;
    unsigned has_body : 1;           /* a request body follows the head */
    unsigned body_sent : 1;          /* the whole request body was handed over */
    unsigned resp_started : 1;       /* a response head was handed to the client side */
    unsigned done : 1;
    unsigned parked : 1;
    unsigned limit_pending : 1;      /* a zone answers later (px_limit_decide): parked until then */
    unsigned challenge_pending : 1;  /* the remote token table answers later (px_challenge_find): parked */
    unsigned counted : 1;            /* in its target's in-flight count */
    unsigned health : 1;             /* answered as health_path (health_log) */
    /* buffering (DESIGN "Buffering"; the spools are below, kept across requests) */
    unsigned spooled : 1;            /* a spool was used: px_req_finish resets them */
    unsigned req_spooling : 1;       /* the client's body goes into body_spool (no upstream yet) */
    unsigned body_buffered : 1;      /* the body was read whole into body_spool: it goes up from there */
    unsigned spool_pending : 1;      /* body_spool still has bytes for the upstream */
    unsigned resp_buffered : 1;      /* the response body goes through resp_spool when the client is full */
    unsigned client_full : 1;        /* resp_buffered: the client side said full; it calls px_upstream_resume */
    unsigned resp_in : 1;            /* resp_buffered: the upstream response is complete, resp_spool is not empty */
    unsigned resp_fault : 1;         /* resp_buffered: over max_response_body or a temp file error */
    uint8_t tries;

    int status;                      /* for the access log */
    /* What the access log and the byte counters count (the client side
     * adds): bytes_in, the request head and body as received (HTTP/1: the
     * head as sent, body with any chunk framing; HTTP/2: each decoded
     * header field's name + value, and DATA payload); bytes_out, the
     * response head and body as sent (HTTP/2: the fields submitted, name +
     * value, and DATA payload); body_out, the body alone. */
    uint64_t bytes_in, bytes_out, body_out;
    int upstream_status;             /* the upstream's response status (0: none answered) */
    uint64_t up_start_us, up_end_us; /* monotonic: the first upstream try began; its response ended
                                      * (0: not yet) */
    const char *ua, *referer;        /* the first User-Agent / Referer field, or NULL */
    uint32_t ua_len, referer_len;
    uint64_t start_us;               /* monotonic */
    uint64_t start_wall_ms;
    char request_id[65];
    uint8_t request_id_len;
    char client_ip[PX_CLIENT_IP_MAX];
    uint8_t client_ip_len;
    const char *xff;                 /* the client's X-Forwarded-For, or NULL; appended to when the peer is
                                      * trusted (xff_trusted) or the service has forward_headers */
    size_t xff_len;

    /* response framing (upstream side) */
    struct px_h1c_body resp;
    unsigned resp_keepalive : 1;     /* the upstream connection may be reused */
    unsigned resp_more : 1;          /* at resp_head: body bytes already follow the head */
    uint64_t resp_total;             /* resp_buffered: body bytes read from the upstream */
    uint64_t body_limit;             /* req_spooling: max_request_body in force (0: none) */

    /* parking */
    struct px_list_node park_link;   /* the worker's parked list (px_req_ctx) while parked */
    int park_status;                 /* answered when the park times out; 0 = go on */

    /* ---- kept across requests (px_req_begin leaves them) ---- */
    struct px_req *next_free;
    struct event park_ev;
    char *xff_join;                  /* repeated X-Forwarded-For lines joined with ", " */
    size_t xff_join_cap;
    /* The service's log_response_headers, copied at the upstream's head
     * (px_req_upstream_head; valid when upstream_status is set): values past
     * PX_RESP_LOG_MAX bytes in all are cut there. Outside px_req_begin's
     * clearing: written only for a service that logs response headers. */
    uint16_t resp_log_off[PX_LOG_HEADERS_MAX], resp_log_len[PX_LOG_HEADERS_MAX]; /* len 0xffff: absent */
    char resp_log[PX_RESP_LOG_MAX];
    struct px_spool body_spool;      /* a buffered request body (reset at px_req_finish) */
    struct px_spool resp_spool;      /* buffered response bytes the client has not taken yet */
    struct px_chunked dechunk;       /* req_spooling a chunked body: its framing, dropped */
};

/* The client's protocol (px_req.proto). A new one needs its name in
 * request.c's table: the build fails without it. */
enum px_proto { PX_PROTO_HTTP10 = 0, PX_PROTO_HTTP11, PX_PROTO_HTTP2, PX_PROTO__COUNT };
/* Its name as the access log writes it ("HTTP/1.1"); "-" for a value that
 * names no protocol (never another protocol's name). */
const char *px_proto_name(unsigned proto);

/* ---- request.c: the pipeline ---- */

/* What a client side knows about a request before the pipeline runs. */
struct px_req_origin {
    const struct px_req_head *q;
    size_t head_bound;
    const struct sockaddr *peer;
    const char *peer_ip;
    uint8_t peer_ip_len;
    uint8_t proto;
    unsigned tls : 1;
    unsigned has_body : 1;
};

/* Start a request: clear the per-request fields, pin the worker's current
 * snapshot, take the request id, the client address (trusted_proxies) and
 * the X-Forwarded-For to append to (repeated lines joined) from the head.
 * Returns 0, or -1 out of memory (the request is begun all the same; answer
 * it with 500 or close). */
int px_req_begin(struct px_req *r, struct px_worker *w, const struct px_down_ops *ops, void *down,
                 const struct px_req_origin *o);
/* Run the pipeline from r->step. Ends in ops->respond (answered here),
 * ops->proceed (proxying), or a park (resumed later from its worker). */
void px_req_dispatch(struct px_req *r);
/* Answer with a local response through the client side (respond). */
void px_req_respond(struct px_req *r, int status, const char *body, size_t len);
/* The request is over: leave the park list, drop the upstream, write the
 * access-log line (when a status was set), count, unpin. Exactly once;
 * the client side frees or recycles the object afterwards. */
void px_req_finish(struct px_req *r);
/* Free what px_req_begin keeps across requests (before freeing r). */
void px_req_release(struct px_req *r);
/* req_spooling: len body bytes at the front of src go into the spool
 * (px_upstream_body hands them here). At the end (last), the request goes
 * on to its upstream; over max_request_body, 413; a temp file error, 500
 * and an error-log line. Returns 0. Client sides call px_req_body. */
int px_req_spool_body(struct px_req *r, struct evbuffer *src, size_t len, int last);

/* Park r for ms milliseconds: when the time passes, answer `status` (e.g.
 * 504 when a pause outlasts max-pause) or, with status 0, go on at r->step.
 * A parked request is resumed early by px_req_wake_service. */
void px_req_park(struct px_req *r, uint64_t ms, int status);
/* Resume the requests of worker w parked on service `name` (a pause ended):
 * each is routed again on the current snapshot and goes on. */
void px_req_wake_service(struct px_worker *w, const char *name);
/* Number of requests parked on w. */
uint32_t px_req_parked_count(const struct px_worker *w);

/* The Date of worker w's responses: an IMF-fixdate of the worker's cached
 * loop time (event_base_gettimeofday_cached: no system call per request),
 * formatted once a second. Valid until the next call on w. */
const char *px_req_date(struct px_worker *w);

/* Fill r's request id: the client's X-Request-ID when it is sane (1..64
 * visible chars), else a new one. */
void px_req_set_id(struct px_req *r, const char *client_id, size_t len);
/* The client address per trusted_proxies: the peer, or the right-most
 * untrusted address in X-Forwarded-For when the peer is trusted. Writes into
 * out (>= 46 bytes) and returns the length. *xff_trusted says whether the
 * client's X-Forwarded-For is to be appended to. */
size_t px_req_client_ip(const struct px_config *cfg, const struct sockaddr *peer, const char *peer_ip,
                        size_t peer_ip_len, const char *xff, size_t xff_len, char *out, int *xff_trusted);

/* ---- upstream.c ---- */

/* Choose a target of r->svc and attach an upstream connection (pooled or
 * connecting). Then writes the head (the forwarding head of headers.h) and starts sending.
 * Returns 0, or an HTTP status (503: no target available) when nothing was
 * started. */
int px_upstream_start(struct px_req *r);
/* Hand len bytes of request body at the front of src to the upstream
 * (moved from src). last=1 when the body is complete. Returns 1 when the
 * client side should pause reading (ops->body_resume says when to go on). */
int px_upstream_body(struct px_req *r, struct evbuffer *src, size_t len, int last);
/* What the client sides call with request body: into the spool while
 * req_spooling (px_req_spool_body), else px_upstream_body. */
static inline int px_req_body(struct px_req *r, struct evbuffer *src, size_t len, int last)
{
    if (__builtin_expect(r->req_spooling, 0))
        return px_req_spool_body(r, src, len, last);
    return px_upstream_body(r, src, len, last);
}
/* The client drained its output: resume reading the upstream response. */
void px_upstream_resume(struct px_req *r);
/* The client went away: drop the request; the connection is closed or kept
 * according to its state. */
void px_upstream_abort(struct px_req *r);
/* After ops->upgraded: the upstream socket, detached from its pool. */
struct px_uconn *px_upstream_detach(struct px_req *r);
struct px_sock *px_uconn_sock(struct px_uconn *u);
/* Route a detached connection's events to a tunnel. */
typedef void (*px_tunnel_cb)(struct px_uconn *u, short what, void *owner);
void px_uconn_tunnel(struct px_uconn *u, px_tunnel_cb cb, void *owner);
void px_uconn_close(struct px_uconn *u);

struct px_worker_module;
/* The module: answers WAKE_SERVICE. */
extern const struct px_worker_module px_req_module;

#endif
