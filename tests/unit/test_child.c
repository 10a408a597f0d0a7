/* test_child.c -- px/child.h: a watch reaps its own child (and no other),
 * calls back from the loop only, and forget reaps without a callback; with
 * a pidfd and with the polling fallback (the .c is included to switch it). */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "../../proxy/child.c"
#include "px/common.h"
#include "unit.h"

extern char **environ;

static pid_t spawn(const char *script)
{
    pid_t pid;
    char *argv[] = {"sh", "-c", (char *)script, NULL};
    return posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) == 0 ? pid : -1;
}

struct seen {
    int calls;
    pid_t pid;
    int status;
};

static void on_exit_cb(void *arg, pid_t pid, int status)
{
    struct seen *s = arg;
    s->calls++;
    s->pid = pid;
    s->status = status;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void run_until(struct event_base *b, const int *flag, int ms)
{
    struct event *t = event_new(b, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 10000};
    event_add(t, &tv);
    uint64_t end = px_now_ms() + (uint64_t)ms;
    while (!*flag && px_now_ms() < end)
        event_base_loop(b, EVLOOP_ONCE);
    event_free(t);
}

static void test_watch_reaps_only_its_own(void)
{
    struct event_base *b = event_base_new();
    struct seen s = {0};
    pid_t other = spawn("exit 5");
    pid_t pid = spawn("exit 7");
    CHECK(pid > 0 && other > 0);
    usleep(100000); /* both have exited: the watch sees an exited child at once */
    struct px_child *c = px_child_watch(b, pid, on_exit_cb, &s);
    CHECK(c != NULL);
    CHECK_INT(s.calls, 0); /* never from inside the call */
    run_until(b, &s.calls, 2000);
    CHECK_INT(s.calls, 1);
    CHECK_INT(s.pid, pid);
    CHECK(WIFEXITED(s.status) && WEXITSTATUS(s.status) == 7);
    /* the other child is still ours to reap */
    int st = -1;
    CHECK_INT(waitpid(other, &st, 0), other);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 5);
    CHECK_INT(waitpid(-1, &st, WNOHANG), -1);
    CHECK_INT(errno, ECHILD);
    event_base_free(b);
}

static void test_watch_running_child(void)
{
    struct event_base *b = event_base_new();
    struct seen s = {0};
    pid_t pid = spawn("sleep 0.2; kill -TERM $$");
    struct px_child *c = px_child_watch(b, pid, on_exit_cb, &s);
    CHECK(c != NULL);
    uint64_t t0 = px_now_ms();
    run_until(b, &s.calls, 3000);
    CHECK_INT(s.calls, 1);
    CHECK(px_now_ms() - t0 < 2500);
    CHECK(WIFSIGNALED(s.status) && WTERMSIG(s.status) == SIGTERM);
    event_base_free(b);
}

static void test_forget(void)
{
    struct event_base *b = event_base_new();
    struct seen s = {0};
    int st;
    pid_t pid = spawn("sleep 30");
    struct px_child *c = px_child_watch(b, pid, on_exit_cb, &s);
    CHECK(c != NULL);
    kill(pid, SIGKILL);
    px_child_forget(c, 1000); /* reaped here */
    CHECK_INT(waitpid(pid, &st, WNOHANG), -1);
    CHECK_INT(errno, ECHILD);
    run_until(b, &s.calls, 100);
    CHECK_INT(s.calls, 0);

    /* one that does not exit in time is reaped later on the base, silently */
    pid = spawn("sleep 0.3");
    c = px_child_watch(b, pid, on_exit_cb, &s);
    px_child_forget(c, 10);
    CHECK_INT(waitpid(pid, &st, WNOHANG), 0); /* still running */
    int never = 0;
    run_until(b, &never, 800);
    CHECK_INT(waitpid(pid, &st, WNOHANG), -1);
    CHECK_INT(errno, ECHILD);
    CHECK_INT(s.calls, 0);
    px_child_forget(NULL, 0);
    event_base_free(b);
}

static void test_polling_fallback(void)
{
    force_poll = 1;
    test_watch_reaps_only_its_own();
    test_watch_running_child();
    struct event_base *b = event_base_new();
    struct seen s = {0};
    int st;
    pid_t pid = spawn("sleep 30");
    struct px_child *c = px_child_watch(b, pid, on_exit_cb, &s);
    CHECK(c != NULL && c->pidfd == -1);
    kill(pid, SIGKILL);
    px_child_forget(c, 1000);
    CHECK_INT(waitpid(pid, &st, WNOHANG), -1);
    CHECK_INT(errno, ECHILD);
    event_base_free(b);
    force_poll = 0;
}

int main(void)
{
    UNIT_RUN(test_watch_reaps_only_its_own);
    UNIT_RUN(test_watch_running_child);
    UNIT_RUN(test_forget);
    UNIT_RUN(test_polling_fallback);
    return unit_report();
}
