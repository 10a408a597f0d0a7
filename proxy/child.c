/* child.c -- one watch per child PID: a pidfd on the event base (readable
 * once the process exits), else a 100 ms waitpid(pid, WNOHANG) poll. Only
 * the watched PID is ever reaped. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "px/child.h"
#include "px/common.h"
#include "px/log.h"

#define POLL_MS 100

struct px_child {
    struct event_base *base;
    pid_t pid;
    int pidfd; /* -1: polling */
    struct event *ev;
    px_child_exit_fn fn;
    void *arg;
};

/* A forgotten child still running: reaped by an event_base_once. */
struct orphan {
    pid_t pid;
    int pidfd;
};

static int force_poll; /* tests set it to exercise the fallback */

static int open_pidfd(pid_t pid)
{
    if (force_poll) {
        errno = ENOSYS;
        return -1;
    }
#ifdef SYS_pidfd_open
    /* the pidfd is close-on-exec already */
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* 1 when pid is gone (status filled, -1 if someone else reaped it), 0 while it runs. */
static int try_reap(pid_t pid, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r == 0)
            return 0;
        if (errno == EINTR)
            continue;
        *status = -1;
        return 1;
    }
}

static void watch_free(struct px_child *c)
{
    if (c->ev)
        event_free(c->ev);
    if (c->pidfd >= 0)
        close(c->pidfd);
    free(c);
}

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    struct px_child *c = arg;
    int status;
    PX_UNUSED(fd);
    PX_UNUSED(what);
    if (!try_reap(c->pid, &status))
        return;
    px_child_exit_fn fn = c->fn;
    void *fn_arg = c->arg;
    pid_t pid = c->pid;
    /* As libevent's own event_base_once does, the event is freed at the end
     * of its callback: nothing touches it (or c) afterwards, and fn may
     * start and watch the next child. */
    watch_free(c);
    fn(fn_arg, pid, status);
}

struct px_child *px_child_watch(struct event_base *base, pid_t pid, px_child_exit_fn fn, void *arg)
{
    struct px_child *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    c->pid = pid;
    c->fn = fn;
    c->arg = arg;
    c->pidfd = open_pidfd(pid);
    if (c->pidfd >= 0) {
        c->ev = event_new(base, c->pidfd, EV_READ | EV_PERSIST, on_event, c);
        if (c->ev == NULL || event_add(c->ev, NULL) < 0)
            goto fail;
    } else {
        struct timeval tv = {0, POLL_MS * 1000};
        c->ev = event_new(base, -1, EV_PERSIST, on_event, c);
        if (c->ev == NULL || event_add(c->ev, &tv) < 0)
            goto fail;
    }
    return c;
fail:
    watch_free(c);
    return NULL;
}

static void on_orphan(evutil_socket_t fd, short what, void *arg)
{
    struct orphan *o = arg;
    int status;
    PX_UNUSED(fd);
    PX_UNUSED(what);
    if (!try_reap(o->pid, &status))
        px_log_warn("child %d: its pidfd is readable but it cannot be reaped", (int)o->pid);
    close(o->pidfd);
    free(o);
}

void px_child_forget(struct px_child *c, int wait_ms)
{
    int status;
    if (c == NULL)
        return;
    event_free(c->ev);
    c->ev = NULL;
    uint64_t deadline = px_now_ms() + (uint64_t)(wait_ms > 0 ? wait_ms : 0);
    for (;;) {
        if (try_reap(c->pid, &status)) {
            watch_free(c);
            return;
        }
        uint64_t now = px_now_ms();
        if (now >= deadline)
            break;
        if (c->pidfd >= 0) {
            struct pollfd p = {.fd = c->pidfd, .events = POLLIN};
            if (poll(&p, 1, (int)(deadline - now)) < 0 && errno != EINTR)
                break;
        } else {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    struct orphan *o = c->pidfd >= 0 ? malloc(sizeof(*o)) : NULL;
    if (o) {
        o->pid = c->pid;
        o->pidfd = c->pidfd;
        if (event_base_once(c->base, o->pidfd, EV_READ, on_orphan, o, NULL) == 0) {
            c->pidfd = -1; /* the orphan owns it now */
            watch_free(c);
            return;
        }
        free(o);
    }
    px_log_warn("child %d did not exit within %d ms: left unreaped", (int)c->pid, wait_ms);
    watch_free(c);
}
