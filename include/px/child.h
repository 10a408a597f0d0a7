/* px/child.h -- wait for a child process on an event base, without a
 * SIGCHLD handler and without reaping anyone else's children.
 *
 * proxyd forks little (today only the ACME renewal hooks), but several
 * modules may: each watches the PIDs it started and reaps exactly those,
 * with waitpid(pid, WNOHANG), never waitpid(-1). Exit is noticed through a
 * pidfd (Linux >= 5.3: readable once the process has exited) registered on
 * the base, so there is no process-wide SIGCHLD event (which libevent
 * allows on one base only) and no shared registry; where pidfd_open is
 * unavailable (old kernel, seccomp) a watch polls waitpid every 100 ms.
 *
 * Threading: a watch lives on the base it was given; call these on that
 * base's thread (the main thread). The base must outlive its watches. */
#ifndef PX_CHILD_H
#define PX_CHILD_H

#include <sys/types.h>

struct event_base;
struct px_child;

/* Called once, from the base's loop, after pid has exited and been reaped.
 * status is what waitpid gives (WIFEXITED / WIFSIGNALED), or -1 when it
 * could not be collected (someone else reaped it: SIGCHLD set to SIG_IGN,
 * or a waitpid(-1) elsewhere). The watch is gone when this runs (do not
 * forget it). */
typedef void (*px_child_exit_fn)(void *arg, pid_t pid, int status);

/* Watch pid, a child of this process not yet reaped. fn is never called
 * from inside this call, even when the child has already exited. NULL
 * when out of memory or when no event could be made; the child is then
 * neither watched nor reaped (the caller still owns that). */
struct px_child *px_child_watch(struct event_base *base, pid_t pid, px_child_exit_fn fn, void *arg);

/* Stop watching: fn is never called. The child is not signalled (kill it
 * first if it must die); it is reaped here if it exits within wait_ms
 * (waiting up to that long: a SIGKILLed process is gone in a few ms), else
 * later on the base without a callback (with a pidfd; the polling fallback
 * gives up instead and logs a warning). NULL is fine. */
void px_child_forget(struct px_child *c, int wait_ms);

#endif
