/* px/control_server.h -- the control socket (control/server.c) and its command
 * handlers (control/commands.c), on the main thread's event base.
 *
 * A Unix stream socket at control_socket, created with control_socket_mode
 * (a stale socket file is replaced; a live one, another proxyd answering on
 * it, refuses the start). Every peer is checked with SO_PEERCRED: root,
 * proxyd's own uid, or a member of the socket file's group may talk; others
 * get one "forbidden" reply and are closed. Each connection reads
 * newline-delimited JSON requests (px/control.h), at most PX_CTL_LINE_MAX
 * bytes a line, and answers them in order; a slow or hostile client holds
 * only its own buffers and never blocks the loop or another client. A
 * control-plane header. */
#ifndef PX_CONTROL_SERVER_H
#define PX_CONTROL_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "px/errors.h"

struct px_server;
struct px_deployer;
struct px_ctlserver;

/* ---- the audit trail ----
 * Every command that changes state (deploy, rollback, stop, pause, resume,
 * remove, reload, cert_renew, cert_reload, upgrade) writes two "[notice] control:"
 * lines to the error log, one when it is received and one when it ends:
 *
 *   control: deploy service=web uid=0 pid=1234 received
 *   control: deploy service=web uid=0 pid=1234 ok 1.234s
 *   control: reload signal=SIGHUP failed (reload_failed) 0.003s: proxyd.ini:3: ...
 *
 * ("service=" only for commands that name one; the peer is uid= and pid=
 * from SO_PEERCRED, or signal=SIGHUP). A refused peer gets one line:
 * "control: refused a peer uid=N gid=N pid=N". The socket's commands are
 * logged by control/server.c; these two are for the others (SIGHUP). peer
 * is the text after the service ("signal=SIGHUP"); message may be NULL.
 * Main thread. */
void px_ctl_audit_begin(const char *cmd, const char *service, const char *peer);
void px_ctl_audit_finish(const char *cmd, const char *service, const char *peer, enum px_err code,
                         const char *message, uint64_t started_ms);

struct px_ctlserver *px_ctlserver_new(struct event_base *base, const char *path, unsigned mode,
                                      struct px_server *srv, struct px_deployer *dep, char *err, size_t errlen);
/* A binary upgrade's new process: fd is the old process's listening
 * control socket (bound at path), taken over as it is: the path is not
 * touched. */
struct px_ctlserver *px_ctlserver_adopt(struct event_base *base, const char *path, int fd, unsigned mode,
                                        struct px_server *srv, struct px_deployer *dep, char *err, size_t errlen);
/* The listening socket (for a binary upgrade), -1 without one. */
int px_ctlserver_fd(const struct px_ctlserver *c);
/* The new process has the socket now: accept nothing more (connections
 * already open still get their answers), and leave the path alone at
 * exit. */
void px_ctlserver_hand_over(struct px_ctlserver *c);
/* The daemon is stopping: every long command in progress (deploy, rollback,
 * cert renew) is answered {"ok":false,"error":{"code":"shutting_down",...}}
 * now, and later ones the same way; short commands still answer until the
 * socket closes. */
void px_ctlserver_shutdown(struct px_ctlserver *c);
/* Close the socket and every connection (replies already queued are
 * written first, waiting at most a fraction of a second); unlink the socket
 * file. */
void px_ctlserver_free(struct px_ctlserver *c);

#endif
