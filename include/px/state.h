/* px/state.h -- the services proxyctl deployed, persisted crash-safely.
 *
 * The state file is JSON, {"version":1,"services":[...]}, one object per
 * service with its active and previous targets and its stopped/paused
 * state. A save writes a temporary file next to it, fsyncs it, renames it
 * over the old one and fsyncs the directory, so that a crash (kill -9, power
 * loss) at any moment leaves either the old file or the new one, never a
 * mix. A load skips an entry it cannot use with a log line and keeps the
 * others (kamal-proxy #233: one bad certificate entry wiped its whole
 * table). Main thread only; nothing here touches the data path. */
#ifndef PX_STATE_H
#define PX_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "px/services.h" /* struct px_svc_opts, struct px_buffering */

enum px_state_svc { PX_STATE_ACTIVE = 0, PX_STATE_STOPPED, PX_STATE_PAUSED };

struct px_state_service {
    char *name;
    char **hosts;
    size_t nhosts;
    char *path_prefix;        /* "/" when absent */
    char **active;            /* "HOST:PORT" as given to deploy */
    size_t nactive;
    char **previous;          /* what rollback switches back to; may be empty */
    size_t nprevious;
    char *health_check_path;  /* "/up" when absent */
    enum px_state_svc state;
    char *stop_message;       /* PX_STATE_STOPPED; may be NULL */
    uint64_t max_pause_ms;    /* PX_STATE_PAUSED */
    int tls;                  /* deploy --tls: an ACME lineage for the hosts */
    uint64_t interval_ms;     /* the health-check timings of the last deploy (rollback and the */
    uint64_t timeout_ms;      /* monitor use them); 0 = the defaults, 1 s and 5 s */
    uint64_t deploy_timeout_ms; /* the last deploy's, for rollback; 0 = 30 s */
    char **log_request_headers;  /* NULL: the default (px_log_request_headers_default) */
    size_t nlog_request_headers;
    char **log_response_headers; /* NULL: none */
    size_t nlog_response_headers;
    struct px_svc_opts opts;  /* the other per-service options (owned) */
    struct px_buffering buffering; /* the last deploy's; absent in the file: PX_BUFFERING_DEFAULT */
};

struct px_state {
    struct px_state_service *services;
    size_t nservices;
};

struct json_t;
/* Set the options that are not at their default on JSON object o, under the
 * control protocol's names (the state file's and `list --json`'s). */
void px_state_opts_json(struct json_t *o, const struct px_svc_opts *p);

/* Write st to path crash-safely (see above). 0, or -1 with a message. */
int px_state_save(const char *path, const struct px_state *st, char *err, size_t errlen);
/* Read path into *st (zeroed first). A missing file is an empty state (0);
 * an unreadable or unparsable file is -1 with a message; a bad service entry
 * is skipped and logged. Free with px_state_free. */
int px_state_load(const char *path, struct px_state *st, char *err, size_t errlen);
/* Rename an unreadable state file aside, to PATH.unreadable-YYYYMMDDTHHMMSSZ
 * (with -2, -3, ... when that name exists: an earlier one is never
 * overwritten), so that the next save cannot replace it. 0 with the new name
 * in aside, or -1 with a message in err (the file stays where it is). */
int px_state_set_aside(const char *path, char *aside, size_t asidelen, char *err, size_t errlen);
void px_state_free(struct px_state *st);
/* Deep copy of one service into dst (0, or -1 out of memory). */
int px_state_service_copy(struct px_state_service *dst, const struct px_state_service *src);
void px_state_service_clear(struct px_state_service *s);

#endif
