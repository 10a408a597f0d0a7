/* px/errors.h -- the error codes that services, deploys and the control
 * protocol share, and their wire names (kamal-proxy's ErrorServiceNotFound:
 * typed at the boundary, never found by searching a message).
 *
 * One list, PX_ERRORS, makes the enum and the name table (errors.c), so a
 * code cannot exist without its wire name: a row without one does not
 * expand, and errors.c checks the table's size against PX_E__COUNT. The wire
 * names are the control protocol's "error":{"code":...} values, stable
 * snake_case; the README's table of error codes lists exactly these (a unit
 * test compares them). Only codes something produces are listed; add a row
 * when a new error reaches the wire, never rename one.
 *
 * A leaf: no state, safe on any thread; the data path may include it. */
#ifndef PX_ERRORS_H
#define PX_ERRORS_H

/* X(ID, "wire_name"): PX_E_ID. */
#define PX_ERRORS(X)                                                                                        \
    X(OK, "ok")                                   /* success (never on the wire as an error) */             \
    X(BAD_REQUEST, "bad_request")                 /* malformed JSON, missing/ill-typed field, bad argument */\
    X(LINE_TOO_LONG, "line_too_long")             /* request line over PX_CTL_LINE_MAX; the daemon closes */ \
    X(UNKNOWN_COMMAND, "unknown_command")         /* "cmd" is not in the command table */                   \
    X(FORBIDDEN, "forbidden")                     /* the peer's uid/gid may not use the socket */            \
    X(UNKNOWN_SERVICE, "unknown_service")         /* no service of that name */                              \
    X(CONFLICT, "conflict")                       /* another service claims the same host and path_prefix */ \
    X(BUSY, "busy")                               /* a deploy/rollback of this service is already running */ \
    X(HEALTH_CHECK_FAILED, "health_check_failed") /* a new target was not healthy within deploy_timeout;     \
                                                     message: "H:P /up: 503 after 30s"; nothing changed */   \
    X(NO_PREVIOUS, "no_previous")                 /* rollback of a service with no previous targets */       \
    X(RELOAD_FAILED, "reload_failed")             /* the new config or certificates did not load */          \
    X(SHUTTING_DOWN, "shutting_down")             /* the daemon is stopping; also the answer of a long       \
                                                     command still running at SIGTERM */                     \
    X(INTERNAL, "internal")                       /* a bug or resource failure in the daemon */              \
    X(ACME_NOT_CONFIGURED, "acme_not_configured") /* cert_renew, deploy --tls: [acme] is not enabled */      \
    X(RENEWAL_FAILED, "renewal_failed")           /* cert_renew: an attempt failed; message "NAME: TYPE:     \
                                                     detail" per failed lineage; the old one keeps serving */\
    X(INVALID_TARGET, "invalid_target")           /* deploy: a target is proxyd's own listen address */      \
    X(UPGRADE_FAILED, "upgrade_failed")           /* upgrade: the new binary did not start (message: why,    \
                                                     with its last error line); the old one serves on */

enum px_err {
#define PX_ERR_ENUM_(id, name) PX_E_##id,
    PX_ERRORS(PX_ERR_ENUM_)
#undef PX_ERR_ENUM_
    PX_E__COUNT
};

/* The wire name of a code ("bad_request"); "internal" for a value outside
 * the enum. Static. */
const char *px_err_name(enum px_err code);
/* The code of a wire name, or -1 when unknown (a newer daemon's code, or a
 * string from a module that still names its errors, like ACME's). */
int px_err_from_name(const char *name);

#endif
