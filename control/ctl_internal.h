/* control/ctl_internal.h -- between the control socket (server.c) and the
 * command handlers (commands.c). Not a public header. */
#ifndef PX_CTL_INTERNAL_H
#define PX_CTL_INTERNAL_H

#include <stddef.h>
#include <sys/types.h>

#include <event2/bufferevent.h>
#include <jansson.h>

#include "px/control.h"

struct px_server;
struct px_deployer;
struct px_ctlserver;

/* What handlers may call: public module APIs only. */
struct px_ctl_env {
    struct px_server *srv;
    struct px_deployer *dep;
    int stopping;            /* px_ctlserver_shutdown: long commands answer shutting_down */
};

struct ctl_conn {
    struct px_ctlserver *srv;
    struct bufferevent *bev;
    struct ctl_conn *next;
    size_t scanned;          /* the framer's state for the line being read */
    uid_t uid;
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
/* commands.c */
void px_ctl_handle(struct px_ctl_env *env, struct ctl_conn *c, const struct px_ctl_request *req);
void px_ctl_forget(struct px_ctl_env *env, struct ctl_conn *c);

#endif
