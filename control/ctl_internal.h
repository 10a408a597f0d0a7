/* control/ctl_internal.h -- between the control socket (server.c) and the
 * command handlers (commands.c). Not a public header. */
#ifndef PX_CTL_INTERNAL_H
#define PX_CTL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/bufferevent.h>
#include <jansson.h>

#include "px/control.h"

struct px_server;
struct px_deployer;
struct px_ctlserver;

/* The request rate over the last minute: requests_total (px_stats_sum)
 * sampled every second on the main thread (server.c's timer). */
#define PX_CTL_RATE_SLOTS 60
struct px_ctl_rate {
    uint64_t total[PX_CTL_RATE_SLOTS]; /* requests_total at at_ms[i] */
    uint64_t at_ms[PX_CTL_RATE_SLOTS];
    unsigned next, n;                  /* the slot written next; slots filled */
};

/* What handlers may call: public module APIs only. */
struct px_ctl_env {
    struct px_server *srv;
    struct px_deployer *dep;
    int stopping;            /* px_ctlserver_shutdown: long commands answer shutting_down */
    struct px_ctl_rate rate;
};

struct ctl_conn {
    struct px_ctlserver *srv;
    struct bufferevent *bev;
    struct ctl_conn *next;
    size_t scanned;          /* the framer's state for the line being read */
    uid_t uid;
    pid_t pid;               /* the peer's, from SO_PEERCRED */
    /* the audit trail of the state-changing command in progress (see
     * px_ctl_audit_end); cmd NULL when none */
    const char *audit_cmd;
    char audit_service[72];
    uint64_t audit_started_ms;
    json_t *op_id;           /* the id of the long command in progress */
    char *tls_note;          /* deploy --tls: the lineage, named in a progress line at the end */
    unsigned busy : 1;       /* a long command runs: later lines wait */
    unsigned closing : 1;    /* close once the replies are written */
    unsigned in_process : 1; /* process() is on the stack */
    unsigned progress : 1;   /* the request in progress asked for progress lines */
};

/* server.c */
void px_ctl_conn_send(struct ctl_conn *c, char *line, size_t len);
void px_ctl_conn_done(struct ctl_conn *c);
/* The audit trail (README "proxyctl"): the "[notice] control:" line that
 * ends c's audited command (ok, or code with message), if one runs; then
 * none runs. Called where the one answer is written. */
void px_ctl_audit_end(struct ctl_conn *c, enum px_err code, const char *message);
/* Begin c's audit: the "received" line (service NULL: none named). */
void px_ctl_audit_start(struct ctl_conn *c, const char *cmd, const char *service);
/* The rate of requests over the ring's window: *delta requests in
 * *window_s seconds (0 and 0 before the second sample). */
void px_ctl_rate_get(const struct px_ctl_rate *r, uint64_t now_total, uint64_t now_ms, uint64_t *delta,
                     double *window_s);
/* commands.c */
void px_ctl_handle(struct px_ctl_env *env, struct ctl_conn *c, const struct px_ctl_request *req);
void px_ctl_forget(struct px_ctl_env *env, struct ctl_conn *c);

#endif
