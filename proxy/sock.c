/* sock.c -- edge-triggered non-blocking stream I/O on evbuffers. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "px/common.h"
#include "px/sock.h"

#define PX_READ_CHUNK 16384

int px_sock_open(struct px_sock *s, struct event_base *base, int fd, event_callback_fn cb, void *arg)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    if (s->in == NULL || s->out == NULL)
        goto fail;
    if (event_assign(&s->ev, base, fd, EV_READ | EV_WRITE | EV_ET | EV_PERSIST, cb, arg) < 0 ||
        event_add(&s->ev, NULL) < 0)
        goto fail;
    s->registered = 1;
    s->readable = 1;
    s->writable = 1;
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

size_t px_sock_read(struct px_sock *s, size_t max)
{
    size_t total = 0;
    while (s->readable && !s->eof && !s->error && total < max) {
        struct evbuffer_iovec v;
        size_t want = max - total < PX_READ_CHUNK ? max - total : PX_READ_CHUNK;
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
             * arrival raises a new edge, so skip the EAGAIN round trip. */
            if ((size_t)n < want)
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

int px_sock_flush(struct px_sock *s)
{
    while (s->writable && !s->error) {
        size_t len = evbuffer_get_length(s->out);
        if (len == 0)
            return 0;
        int n = evbuffer_write(s->out, s->fd);
        if (n > 0) {
            if ((size_t)n < len)
                s->writable = 0; /* send buffer full: wait for EPOLLOUT */
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

void px_sock_shutdown_write(struct px_sock *s)
{
    if (s->fd >= 0)
        shutdown(s->fd, SHUT_WR);
}

void px_sock_close(struct px_sock *s)
{
    if (s->registered) {
        event_del(&s->ev);
        s->registered = 0;
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
