/* spool.c -- a body in memory, then in an unlinked temp file (px/spool.h).
 * The file is only written at its end and read at its front; once the
 * reader caught up, both start over at offset 0, so a long response that
 * the client keeps up with reuses the same pages. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "px/sock.h"
#include "px/spool.h"

#define IOV_MAX_SPOOL 16

static int open_tmp(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd;
    /* no O_TMPFILE here (an old kernel, some file systems): name, then unlink */
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/proxyd-spool-XXXXXX", dir) >= (int)sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    return fd;
}

/* Write len bytes at the front of src to the file's end, then drain them. */
static int file_add(struct px_spool *sp, struct evbuffer *src, size_t len)
{
    while (len) {
        struct evbuffer_iovec v[IOV_MAX_SPOOL];
        int n = evbuffer_peek(src, (ev_ssize_t)len, NULL, v, IOV_MAX_SPOOL);
        if (n > IOV_MAX_SPOOL)
            n = IOV_MAX_SPOOL;
        size_t want = 0;
        for (int i = 0; i < n; i++) {
            if (want + v[i].iov_len > len)
                v[i].iov_len = len - want;
            want += v[i].iov_len;
        }
        ssize_t w = pwritev(sp->fd, (struct iovec *)v, n, (off_t)sp->file_wr);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = ENOSPC;
            return -1;
        }
        sp->file_wr += (uint64_t)w;
        evbuffer_drain(src, (size_t)w);
        len -= (size_t)w;
    }
    return 0;
}

int px_spool_add(struct px_spool *sp, struct evbuffer *src, size_t len, const char *dir, uint64_t mem_max)
{
    if (sp->mem == NULL && (sp->mem = evbuffer_new()) == NULL) {
        evbuffer_drain(src, len);
        errno = ENOMEM;
        return -1;
    }
    sp->added += len;
    if (sp->file_rd == sp->file_wr && evbuffer_get_length(sp->mem) + len <= mem_max) {
        /* The first piece moves (a small body: no copy, no allocation);
         * later small ones are copied behind it: a slow upload's one-byte
         * reads must not each pin a read chain (nor make an iovec apiece). */
        if (evbuffer_get_length(sp->mem) == 0)
            evbuffer_remove_buffer(src, sp->mem, len);
        else
            px_buf_move(sp->mem, src, len);
        return 0;
    }
    if (!sp->has_file) {
        int fd = open_tmp(dir);
        if (fd < 0 && errno == ENOENT && mkdir(dir, 0700) == 0)
            fd = open_tmp(dir); /* nginx makes its temp paths too */
        if (fd < 0) {
            int e = errno;
            evbuffer_drain(src, len);
            errno = e;
            return -1;
        }
        sp->fd = fd;
        sp->has_file = 1;
        sp->file_rd = sp->file_wr = 0;
    }
    if (file_add(sp, src, len) < 0) {
        int e = errno;
        evbuffer_drain(src, len);
        errno = e;
        return -1;
    }
    return 0;
}

uint64_t px_spool_length(const struct px_spool *sp)
{
    return (sp->mem ? evbuffer_get_length(sp->mem) : 0) + (sp->file_wr - sp->file_rd);
}

struct evbuffer *px_spool_front(struct px_spool *sp, size_t max)
{
    if (sp->mem == NULL && (sp->mem = evbuffer_new()) == NULL)
        return NULL;
    if (evbuffer_get_length(sp->mem) || sp->file_rd == sp->file_wr || max == 0)
        return sp->mem;
    uint64_t left = sp->file_wr - sp->file_rd;
    size_t n = left < max ? (size_t)left : max;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(sp->mem, (ev_ssize_t)n, &v, 1) < 1)
        return NULL;
    ssize_t r;
    do
        r = pread(sp->fd, v.iov_base, n, (off_t)sp->file_rd);
    while (r < 0 && errno == EINTR);
    if (r <= 0) {
        if (r == 0)
            errno = EIO; /* shorter than written: never */
        return NULL;
    }
    v.iov_len = (size_t)r;
    evbuffer_commit_space(sp->mem, &v, 1);
    sp->file_rd += (uint64_t)r;
    if (sp->file_rd == sp->file_wr)
        sp->file_rd = sp->file_wr = 0; /* caught up: the next spill starts over at 0 */
    return sp->mem;
}

void px_spool_reset(struct px_spool *sp)
{
    if (sp->mem)
        evbuffer_drain(sp->mem, evbuffer_get_length(sp->mem));
    if (sp->has_file)
        close(sp->fd);
    sp->has_file = 0;
    sp->file_rd = sp->file_wr = 0;
    sp->added = 0;
}

void px_spool_release(struct px_spool *sp)
{
    px_spool_reset(sp);
    if (sp->mem)
        evbuffer_free(sp->mem);
    sp->mem = NULL;
}
