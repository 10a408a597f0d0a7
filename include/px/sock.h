/* px/sock.h -- a non-blocking stream socket with edge-triggered readiness.
 *
 * One event (EV_READ|EV_WRITE|EV_CLOSED|EV_ET|EV_PERSIST) is registered once
 * for the socket's lifetime, so steady-state I/O costs no epoll_ctl. The
 * owner keeps the readiness bits: `readable` is set by the event and cleared
 * when a read comes back short or with EAGAIN; `writable` likewise for
 * writes. An owner that stops reading (backpressure) simply does not call
 * px_sock_read and resumes later while `readable` is still set -- no event
 * re-arming.
 *
 * A short read ends reading without the EAGAIN round trip, which is safe only
 * because the peer's FIN is reported separately: EV_CLOSED (EPOLLRDHUP)
 * arrives with the edge that brought the last bytes, sets `rdhup`, and from
 * then on reads go on until read(2) returns 0. Without it a FIN queued
 * behind the data would raise no further edge and never be seen.
 *
 * Buffers are libevent evbuffers, allocated once per socket; their chains
 * are freed when drained, so an idle socket holds no buffer memory.
 * Threading: a px_sock belongs to one worker's event base. */
#ifndef PX_SOCK_H
#define PX_SOCK_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <sys/types.h>

struct px_sock {
    int fd;
    struct event ev;
    struct evbuffer *in, *out;
    SSL *ssl;                /* NULL for plain TCP; owned (freed by px_sock_close) */
    unsigned readable : 1, writable : 1;
    unsigned eof : 1;        /* the peer closed its side (read returned 0) */
    unsigned error : 1;      /* a read or write failed; err holds errno */
    unsigned registered : 1;
    unsigned rdhup : 1;      /* EV_CLOSED seen: the peer's FIN is queued behind the data */
    unsigned eof_ok : 1;     /* TLS: an EOF without close_notify is a clean end here */
    int err;
    uint32_t read_chunk;     /* bytes per read(2) (16 KiB; upstreams take 64 KiB) */
};

/* Set up s for fd (takes ownership of fd) and register its event with cb.
 * Returns 0, or -1 (fd closed) when the buffers cannot be allocated. */
int px_sock_open(struct px_sock *s, struct event_base *base, int fd, event_callback_fn cb, void *arg);
/* Mark readiness from an event callback's `what`. */
static inline void px_sock_mark(struct px_sock *s, short what)
{
    if (what & (EV_READ | EV_CLOSED))
        s->readable = 1;
    if (what & EV_CLOSED)
        s->rdhup = 1;
    if (what & EV_WRITE)
        s->writable = 1;
}
/* Read up to max bytes (or until short read / EAGAIN) into s->in. Returns
 * bytes read (0 when nothing was available); sets eof / error. */
size_t px_sock_read(struct px_sock *s, size_t max);
/* Write as much of s->out as the socket takes. Returns 0 (all written, or
 * the rest waits for writability) or -1 on error (s->error set). */
int px_sock_flush(struct px_sock *s);
/* TLS: whether the connection is at a message boundary, where a peer that
 * closes without close_notify ends it cleanly (the session stays resumable,
 * as browsers and pooled clients expect) rather than truncating it. Inside a
 * message such an EOF stays an error. No-op on plain sockets. */
void px_sock_set_eof_ok(struct px_sock *s, int ok);
/* TLS: the peer's stream ended inside a message (an EOF in a request head or
 * body): a truncation, so the session is not kept. No-op on plain sockets. */
void px_sock_mark_truncated(struct px_sock *s);
/* Unregister, close the fd and free the buffers. Safe on a zeroed sock. */
void px_sock_close(struct px_sock *s);
/* Move len bytes from the front of src to dst: large runs hand over whole
 * chains (no copy); a few bytes are copied, so that a small body does not
 * keep an 80 KiB read chain alive in a queue (HTTP/2 streams, slow clients). */
void px_buf_move(struct evbuffer *dst, struct evbuffer *src, size_t len);
/* shutdown(SHUT_WR) once the output is flushed (tunnels, half-close); over
 * TLS a close_notify goes first. */
void px_sock_shutdown_write(struct px_sock *s);

#endif
