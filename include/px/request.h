/* px/request.h -- one proxied request, independent of the client protocol.
 *
 * The client side (HTTP/1.x connection now, an HTTP/2 stream later) fills a
 * px_req, writes the upstream request head into the buffer the upstream
 * module hands it, and implements px_down_ops to receive the response. The
 * upstream module (upstream.c) owns target choice, pooling, retries,
 * timeouts and the response framing. Request objects come from a per-worker
 * free list: no allocation per request in steady state. */
#ifndef PX_REQUEST_H
#define PX_REQUEST_H

#include <event2/buffer.h>
#include <stdint.h>
#include <sys/socket.h>

#include "px/http1.h"
#include "px/routes.h"

struct px_req;
struct px_worker;
struct px_uconn;
struct px_config;

struct px_down_ops {
    /* (Re)write the upstream request head into out: used for the first try
     * and for a retry on a fresh connection. Returns 0 or -1. */
    int (*write_head)(struct px_req *r, struct evbuffer *out);
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

enum px_body_mode { PX_BODY_NONE = 0, PX_BODY_LENGTH, PX_BODY_CHUNKED, PX_BODY_CLOSE };

struct px_req {
    struct px_worker *w;
    const struct px_down_ops *ops;
    void *down;                      /* the client-side owner */
    struct px_req *next_free;

    const struct px_routes *routes;  /* pinned for the request's lifetime */
    const struct px_service *svc;
    struct px_target *target;        /* the target of the current try */
    struct px_uconn *up;

    enum px_method method;
    unsigned has_body : 1;           /* a request body follows the head */
    unsigned body_sent : 1;          /* the whole request body was handed over */
    unsigned websocket : 1;
    unsigned resp_started : 1;       /* a response head was handed to the client side */
    unsigned done : 1;
    uint8_t tries;

    int status;                      /* for the access log */
    uint64_t bytes_out;              /* body bytes sent to the client */
    uint64_t start_us;               /* monotonic */
    uint64_t start_wall_ms;
    char request_id[33];
    uint8_t request_id_len;

    /* response framing (upstream side) */
    enum px_body_mode resp_mode;
    uint64_t resp_remaining;
    struct px_chunked resp_chunked;
    unsigned resp_passthrough : 1;
    unsigned resp_keepalive : 1;     /* the upstream connection may be reused */
    unsigned resp_more : 1;          /* at resp_head: body bytes already follow the head */
};

/* ---- request.c: protocol-independent helpers ---- */

/* Fill r's request id: the client's X-Request-ID when it is sane (1..64
 * visible chars), else a new one. */
void px_req_set_id(struct px_req *r, const char *client_id, size_t len);
/* The client address per trusted_proxies: the peer, or the right-most
 * untrusted address in X-Forwarded-For when the peer is trusted. Writes into
 * out (>= 46 bytes) and returns the length. *xff_trusted says whether the
 * client's X-Forwarded-For is to be appended to. */
size_t px_req_client_ip(const struct px_config *cfg, const struct sockaddr *peer, const char *peer_ip,
                        size_t peer_ip_len, const char *xff, size_t xff_len, char *out, int *xff_trusted);
/* What to do with a parsed request: DESIGN's order -- health_path, the ACME
 * challenge path, the port-80 redirect, the body limit, the route, the
 * service's state. Sets r->svc when a service matched. */
enum px_action { PX_ACT_PROXY = 0, PX_ACT_LOCAL, PX_ACT_REDIRECT };
struct px_decision {
    enum px_action act;
    int status;               /* PX_ACT_LOCAL */
    const char *body;         /* NULL: "<status> <reason>\n" */
    size_t body_len;
};
void px_req_decide(struct px_req *r, const struct px_config *cfg, const struct px_h1_request *q, int tls,
                   struct px_decision *d);

/* Append the access-log line for a finished request. */
struct px_log_fields {
    const char *client; size_t client_len;
    const char *method; size_t method_len;
    const char *host; size_t host_len;
    const char *path; size_t path_len;
    const char *proto;
    int tls;
};
void px_req_log(const struct px_req *r, const struct px_log_fields *f);

/* ---- upstream.c ---- */

/* Choose a target of r->svc and attach an upstream connection (pooled or
 * connecting). Then calls ops->write_head and starts sending. Returns 0, or
 * an HTTP status (503: no target available) when nothing was started. */
int px_upstream_start(struct px_req *r);
/* Hand len bytes of request body at the front of src to the upstream
 * (moved from src). last=1 when the body is complete. Returns 1 when the
 * client side should pause reading (ops->body_resume says when to go on). */
int px_upstream_body(struct px_req *r, struct evbuffer *src, size_t len, int last);
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

#endif
