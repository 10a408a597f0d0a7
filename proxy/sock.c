/* sock.c -- edge-triggered non-blocking stream I/O on evbuffers. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>

#include "px/common.h"
#include "px/sock.h"

#define PX_READ_CHUNK 16384
/* Plain reads fill a 16 KiB chain exactly: libevent rounds a chain and its
 * header up to a power of two, and a 16384-byte reservation would take 32
 * KiB -- held for as long as a pipelined request waits in the buffer. */
#define PX_PLAIN_READ_CHUNK (16384 - 512)

int px_sock_open(struct px_sock *s, struct event_base *base, int fd, event_callback_fn cb, void *arg)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    if (s->in == NULL || s->out == NULL)
        goto fail;
    if (event_assign(&s->ev, base, fd, EV_READ | EV_WRITE | EV_CLOSED | EV_ET | EV_PERSIST, cb, arg) < 0 ||
        event_add(&s->ev, NULL) < 0)
        goto fail;
    s->registered = 1;
    s->readable = 1;
    s->writable = 1;
    s->read_chunk = PX_PLAIN_READ_CHUNK;
    return 0;
fail:
    if (s->in)
        evbuffer_free(s->in);
    if (s->out)
        evbuffer_free(s->out);
    s->in = s->out = NULL;
    close(fd);
    s->fd = -1;
    return -1;
}

/* TLS: SSL_read until it wants more (it may hold decrypted bytes the
 * socket no longer signals, so the short-read shortcut does not apply). */
static size_t tls_read(struct px_sock *s, size_t max)
{
    size_t total = 0;
    while (s->readable && !s->eof && !s->error && total < max) {
        struct evbuffer_iovec v;
        size_t want = max - total < PX_READ_CHUNK ? max - total : PX_READ_CHUNK;
        if (evbuffer_reserve_space(s->in, (ev_ssize_t)want, &v, 1) < 1)
            break;
        if (v.iov_len > want)
            v.iov_len = want;
        size_t n = 0;
        int ok = SSL_read_ex(s->ssl, v.iov_base, v.iov_len, &n);
        if (ok) {
            v.iov_len = n;
            evbuffer_commit_space(s->in, &v, 1);
            total += n;
            continue;
        }
        evbuffer_commit_space(s->in, &v, 0);
        switch (SSL_get_error(s->ssl, 0)) {
        case SSL_ERROR_WANT_READ:
            s->readable = 0;
            break;
        case SSL_ERROR_WANT_WRITE:
            s->writable = 0; /* the next EPOLLOUT edge runs us again */
            return total;
        case SSL_ERROR_ZERO_RETURN:
            s->eof = 1;      /* close_notify, or a bare EOF where eof_ok: a clean end */
            break;
        default:
            /* includes an EOF without close_notify: a truncated stream */
            s->error = 1;
            s->err = EPROTO;
            ERR_clear_error();
            break;
        }
    }
    return total;
}

size_t px_sock_read(struct px_sock *s, size_t max)
{
    if (s->ssl)
        return tls_read(s, max);
    size_t total = 0;
    while (s->readable && !s->eof && !s->error && total < max) {
        struct evbuffer_iovec v;
        size_t want = max - total < s->read_chunk ? max - total : s->read_chunk;
        if (evbuffer_reserve_space(s->in, (ev_ssize_t)want, &v, 1) < 1)
            break;
        if (v.iov_len > want)
            v.iov_len = want;
        ssize_t n = read(s->fd, v.iov_base, v.iov_len);
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(s->in, &v, 1);
            total += (size_t)n;
            /* A short read means the socket is drained: with EPOLLET the next
             * arrival raises a new edge, so skip the EAGAIN round trip --
             * unless the FIN is queued behind these bytes (rdhup): it raises
             * no new edge, so read on until read(2) says 0. */
            if ((size_t)n < want && !s->rdhup)
                s->readable = 0;
            continue;
        }
        evbuffer_commit_space(s->in, &v, 0);
        if (n == 0) {
            s->eof = 1;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->readable = 0;
        } else if (errno != EINTR) {
            s->error = 1;
            s->err = errno;
        }
    }
    return total;
}

/* TLS: one record per call; small chains are coalesced first so a head and
 * a short body leave in one record and one write(2). */
static int tls_flush(struct px_sock *s)
{
    while (s->writable && !s->error) {
        size_t len = evbuffer_get_length(s->out);
        if (len == 0)
            return 0;
        size_t n = len < PX_READ_CHUNK ? len : PX_READ_CHUNK;
        const unsigned char *p = evbuffer_pullup(s->out, (ev_ssize_t)n);
        size_t w = 0;
        if (p && SSL_write_ex(s->ssl, p, n, &w)) {
            evbuffer_drain(s->out, w);
            continue;
        }
        switch (SSL_get_error(s->ssl, 0)) {
        case SSL_ERROR_WANT_WRITE:
            s->writable = 0;
            return 0;
        case SSL_ERROR_WANT_READ:
            return 0; /* a post-handshake message; the next EPOLLIN edge resumes us */
        default:
            s->error = 1;
            s->err = EPIPE;
            ERR_clear_error();
            return -1;
        }
    }
    return s->error ? -1 : 0;
}

/* At most this many chains per writev(2) (IOV_MAX is 1024; nginx's
 * chains go 64 at a time too). */
#define PX_WRITE_IOV 64

int px_sock_flush(struct px_sock *s)
{
    if (s->ssl)
        return tls_flush(s);
    while (s->writable && !s->error) {
        struct evbuffer_iovec v[PX_WRITE_IOV];
        int nv = evbuffer_peek(s->out, -1, NULL, v, PX_WRITE_IOV);
        if (nv <= 0)
            return 0;
        if (nv > PX_WRITE_IOV)
            nv = PX_WRITE_IOV;
        size_t want = 0;
        for (int i = 0; i < nv; i++)
            want += v[i].iov_len;
        ssize_t n = writev(s->fd, (const struct iovec *)v, nv);
        if (n > 0) {
            evbuffer_drain(s->out, (size_t)n);
            /* Short of what this call offered: the send buffer is full, and
             * EPOLLOUT's edge comes when it drains. Short of the whole
             * buffer only (more chains than one writev takes) is not full:
             * with EPOLLET, no edge would ever come for it. */
            if ((size_t)n < want)
                s->writable = 0;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            s->writable = 0;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            s->error = 1;
            s->err = n < 0 ? errno : EPIPE;
            return -1;
        }
    }
    return s->error ? -1 : 0;
}

#define PX_MOVE_COPY_MAX 4096

void px_buf_move(struct evbuffer *dst, struct evbuffer *src, size_t len)
{
    if (len > PX_MOVE_COPY_MAX) {
        evbuffer_remove_buffer(src, dst, len);
        return;
    }
    char tmp[PX_MOVE_COPY_MAX];
    int n = evbuffer_remove(src, tmp, len);
    if (n > 0)
        evbuffer_add(dst, tmp, (size_t)n);
}

void px_sock_mark_truncated(struct px_sock *s)
{
    if (s->ssl && !s->error) {
        s->error = 1;
        s->err = EPROTO;
    }
}

void px_sock_set_eof_ok(struct px_sock *s, int ok)
{
    if (s->ssl == NULL || s->eof_ok == (unsigned)!!ok)
        return;
    s->eof_ok = ok ? 1 : 0;
    /* OpenSSL 3 treats a bare EOF as a fatal error that evicts the session
     * from the cache; with this option it reads as a close_notify. */
    if (ok)
        SSL_set_options(s->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    else
        SSL_clear_options(s->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
}

void px_sock_shutdown_write(struct px_sock *s)
{
    if (s->ssl && !s->error) {
        SSL_shutdown(s->ssl); /* send close_notify; we do not wait for the peer's */
        ERR_clear_error();
    }
    if (s->fd >= 0)
        shutdown(s->fd, SHUT_WR);
}

void px_sock_close(struct px_sock *s)
{
    if (s->registered) {
        event_del(&s->ev);
        s->registered = 0;
    }
    if (s->ssl) {
        /* A clean end says close_notify (one non-blocking try). It also keeps
         * the session in the cache: OpenSSL drops sessions of connections
         * freed without it. After an error the session is dropped. */
        if (!s->error && SSL_is_init_finished(s->ssl))
            SSL_shutdown(s->ssl);
        ERR_clear_error();
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (s->in) {
        evbuffer_free(s->in);
        s->in = NULL;
    }
    if (s->out) {
        evbuffer_free(s->out);
        s->out = NULL;
    }
}
