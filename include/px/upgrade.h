/* px/upgrade.h -- a binary upgrade, nginx's USR2 and HAProxy's -x: the
 * running process starts the new binary as its child and hands it what it
 * must not drop; the child says when it serves, and only then does the old
 * process stop accepting and drain.
 *
 * What goes across (the old process's side, px_upgrade_spawn):
 *  - by inheritance: every worker's listening sockets (the same sockets, so
 *    a connection in an accept queue is the new process's to take when the
 *    old stops accepting), the control socket, a memfd with the carry-over
 *    blob (px_carry_export), the write end of a status pipe, and the old
 *    process's stderr; the child's own stderr is a pipe the old reads
 *    until "ready" (its last line explains a failure);
 *  - the environment variable PROXYD_UPGRADE names those descriptors:
 *    "status=N,stderr=N,carry=N,control=N,metrics=N,http=N:N,https=N:N".
 * The child (px_upgrade_inherited at its start) writes "ready PID\n" on the
 * status pipe when its workers run, or "error MESSAGE\n" when its start
 * fails. EOF, an exit or the timeout without "ready" is a failure too:
 * the old process kills the child (if it still runs), closes nothing of its
 * own and keeps serving.
 *
 * Main thread only. A control-plane header. */
#ifndef PX_UPGRADE_H
#define PX_UPGRADE_H

#include <stddef.h>
#include <sys/types.h>

#include <event2/event.h>

#include "px/common.h" /* PX_MAX_WORKERS */

#define PX_UPGRADE_ENV "PROXYD_UPGRADE"

/* ---- the old process ---- */

struct px_upgrade;
/* The outcome, once: pid of the new process and error NULL when it serves;
 * else error says why ("the new binary exited with status 1: ..."). Called
 * from the event loop; the upgrade may be freed in it. */
typedef void (*px_upgrade_done_fn)(void *arg, pid_t pid, const char *error);

struct px_upgrade_handover {
    const int *http, *https;      /* every worker's listening socket, worker order */
    int nhttp, nhttps;
    int control;                  /* the control socket's listening fd, -1: none */
    int metrics;                  /* metrics_listen's listening fd, -1: none */
    const unsigned char *carry;   /* px_carry_export's blob */
    size_t carrylen;
};

/* Start binary (an absolute path) with `-c config_path` and hand it h.
 * The result comes through done unless this fails at once (-1 with the
 * reason in err: not executable, out of descriptors). */
struct px_upgrade *px_upgrade_spawn(struct event_base *base, const char *binary, const char *config_path,
                                    const struct px_upgrade_handover *h, unsigned timeout_ms,
                                    px_upgrade_done_fn done, void *arg, char *err, size_t errlen);
/* Release what the upgrade holds (pipes; a child that has not said ready is
 * killed and reaped). NULL is fine. */
void px_upgrade_free(struct px_upgrade *u);

/* ---- the new process ---- */

struct px_upgrade_inherit {
    int status_fd, stderr_fd, control_fd, metrics_fd;
    int http[PX_MAX_WORKERS], https[PX_MAX_WORKERS];
    int nhttp, nhttps;
    unsigned char *carry;         /* the blob (malloc'ed), carrylen bytes */
    size_t carrylen;
};

/* Started by px_upgrade_spawn? 1 with in filled (the descriptors are made
 * close-on-exec, the listeners non-blocking; the variable is unset), 0 when
 * not (in->status_fd = -1), -1 with the reason in err. */
int px_upgrade_inherited(struct px_upgrade_inherit *in, char *err, size_t errlen);
/* Tell the old process "ready", put its stderr back on fd 2, close the
 * status pipe and free the blob. */
void px_upgrade_ready(struct px_upgrade_inherit *in);
/* Tell it why this start failed (one line). */
void px_upgrade_failed(struct px_upgrade_inherit *in, const char *why);
/* Free the blob and close the status pipe (after ready or failed). */
void px_upgrade_inherit_free(struct px_upgrade_inherit *in);

#endif
