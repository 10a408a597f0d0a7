/* px/h2.h -- HTTP/2 server connections (nghttp2) on top of a client socket.
 *
 * conn.c owns the socket and the TLS session; after ALPN picks "h2" it hands
 * them to a px_h2, which maps each stream onto a px_req (request.h) and so
 * onto the same dispatch policy, upstream pool and access log as HTTP/1.x.
 * Flow control follows the upstream: a stream's window is consumed only as
 * fast as its upstream takes the body, and response DATA is produced only
 * as fast as the client reads (the socket's output watermark), at most
 * 1 MiB held per connection; a stream (or the whole output) the client does
 * not take for client_body_timeout is reset (or the session ends with -1).
 * Threading: the worker that owns the connection. */
#ifndef PX_H2_H
#define PX_H2_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct px_h2;
struct px_sock;

struct px_worker;

struct px_h2_peer {
    const struct sockaddr *sa;
    const char *ip;
    size_t ip_len;
};

/* kick(arg) asks the owner to call px_h2_run soon (used when upstream events
 * produced frames). NULL on failure. */
struct px_h2 *px_h2_new(struct px_worker *w, struct px_sock *s, const struct px_h2_peer *peer,
                        void (*kick)(void *arg), void *arg);
/* Read, process, write. 0: go on; 1: the session is over (close); -1: error. */
int px_h2_run(struct px_h2 *h);
/* No stream is open. */
int px_h2_idle(const struct px_h2 *h);
/* Graceful: a shutdown notice (GOAWAY 2^31-1) now, the final GOAWAY with the
 * last stream processed one round trip (PING) or at most 1 s later; open
 * streams finish, the session ends (px_h2_run returns 1) when none is left. */
void px_h2_goaway(struct px_h2 *h);
/* Abort every stream and free the session (the socket stays with the owner). */
void px_h2_free(struct px_h2 *h);

struct px_worker_module;
/* The module: session ops for "h2". */
extern const struct px_worker_module px_h2_module;

#endif
