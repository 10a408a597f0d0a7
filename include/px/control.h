/* px/control.h -- the control protocol, shared by the daemon's control
 * server and proxyctl (control/protocol.c).
 *
 * Wire format: newline-delimited JSON (jansson), one object per line.
 *
 *   request   {"id":N,"cmd":"deploy","args":{...},"progress":true}           ("progress" optional)
 *   progress  {"id":N,"progress":"waiting for 10.0.0.5:3000 to be healthy"}   (zero or more, only
 *                                                                             when asked for)
 *   ok        {"id":N,"ok":true,"result":{...}}                                (exactly one,
 *   error     {"id":N,"ok":false,"error":{"code":"...","message":"..."}}        last)
 *
 * The id is any JSON value and is echoed as given; a request without one, or
 * a line that is not a JSON object, is answered with "id":null. "args" may
 * be omitted (= {}). "progress" (a boolean, default false) asks for progress
 * lines; without it a request gets exactly one line back. Unknown arguments are errors, so a misspelt option
 * never passes silently. A line is at most PX_CTL_LINE_MAX bytes before its
 * '\n'; a trailing '\r' is tolerated (nc, socat -t, telnet) and stripped.
 * A longer request line is answered with line_too_long and the connection
 * closed.
 *
 * Nothing here keeps state between calls: the module is safe on the
 * daemon's main thread and in proxyctl alike, and reentrant. Strings
 * returned as `const char *` are static unless said otherwise.
 *
 * Result shapes (the "result" object of an ok reply), per command:
 *
 *   deploy, rollback  {"service":"web","active":["10.0.0.5:3000"],"previous":["10.0.0.4:3000"],
 *                      "drained":3,            requests that were in flight on the old targets
 *                      "cut":0,                of those, cut with 504 at drain_timeout
 *                      "duration_ms":2100}
 *   list              {"services":[{"name":"web","state":"running"|"paused"|"stopped",
 *                      "hosts":["example.com"],   [] = any host
 *                      "path_prefix":"/","active":["h:p"],"previous":["h:p"],
 *                      "in_flight":N,             on its active targets
 *                      "targets":[{"address":"h:p","role":"active"|"previous",
 *                                  "health":"healthy"|"failing N/3"|"unhealthy"|"draining"|"standby",
 *                                  "in_flight":N}],   (px_target_health_state; previous ones
 *                                                  are "draining" or "standby")
 *                      "stop_message":"..."       only when stopped with a message
 *                      "max_pause_ms":N           only when paused
 *                      }]}
 *   status            {"version":"0.1.0","pid":N,"uptime_s":N,"workers":N,"connections":N,
 *                      "services":N,"requests":N, connections open now, requests answered
 *                      "request_rate":R,          requests/s over the last minute: "request_rate_count"
 *                      "request_rate_count":N,    requests answered in the last
 *                      "request_rate_window_s":W, W seconds (W < 60 in the first minute)
 *                      "targets":[{"service":"web",...}],  list's target objects, with their service
 *                      "certificates":[{"name","key_type","not_after","days_left"}],  as cert_status
 *                      "stats":{...}, ...}        the data path's counters (px/stats.h,
 *                                                 commands.c stats_json); more keys may
 *                                                 follow; proxyctl prints every scalar key
 *                                                 it gets (objects with --json only)
 *   stop, pause, resume {"service":"web","state":"stopped"|"paused"|"running"}
 *   remove            {"service":"web"}
 *   reload            {"config":"/etc/proxyd/proxyd.ini"}
 *   cert_status       {"certificates":[{"name":"example.com","hosts":[...],"not_after":"RFC 3339",
 *                      "days_left":N,"source":"acme"|"file",
 *                      "key_type":"ECDSA-P256"|"RSA-2048"|...|null  the certificate's key (tells a
 *                                                          name's ECDSA and RSA certificates apart)
 *                      "file":"/path.crt"                  source file: the certificate file
 *                                                          ("name" is "default" or the sni name)
 *                      -- source acme only: --
 *                      "lineage":"/etc/proxyd/letsencrypt/live/example.com","version":N (0 = none yet),
 *                      "wanted":[names to obtain it for],"service":"web"|null (deploy --tls),
 *                      "served":true|false,"state":"valid"|"missing"|"expired"|"renewing",
 *                      "last_attempt":"RFC 3339"|null,"outcome":"ok"|"failed"|"renewing"|null,
 *                      "error":{"type":"connection","detail":"..."}   when the last attempt failed,
 *                                                          "type" as in RFC 8555 or ours (px/acme.h)
 *                      "failures":N (in a row),"next_check":"RFC 3339"|"now",
 *                      "renewal_window":{"start","end"}     when the CA offers one (RFC 9773)
 *                      }]}                                 not_after and days_left null without one
 *   cert_renew        {"renewed":["example.com"],"skipped":["..."],"failed":[]}  (answers after
 *                      the attempts; a failure is an error reply, renewal_failed)
 *   cert_reload       {"loaded":N}                         certificates now served (files + ACME)
 *   upgrade           {"pid":N,"old_pid":N,"binary":"/usr/sbin/proxyd"}  answers once the new
 *                      process serves (the old one then drains and exits); a binary that
 *                      does not start is an error reply, upgrade_failed, and changes nothing
 *
 * Progress lines are free text for people (proxyctl asks for them and
 * prints them to stderr as they arrive); deploy and rollback send, in order: "waiting for H:P to
 * be healthy" (per target), "switched", "draining N requests", "done in 2.1s".
 */
#ifndef PX_CONTROL_H
#define PX_CONTROL_H

#include <stddef.h>

#include <jansson.h>

#include "px/errors.h"

/* The largest request line the daemon reads, not counting its '\n'. */
#define PX_CTL_LINE_MAX (64 * 1024)
/* The largest reply line proxyctl reads (a list of many services). */
#define PX_CTL_REPLY_MAX (16 * 1024 * 1024)
/* Bounds of duration-ms arguments, inclusive. */
#define PX_CTL_DURATION_MIN_MS 1
#define PX_CTL_DURATION_MAX_MS (24LL * 3600 * 1000)
/* At most this many strings in a string-array argument. */
#define PX_CTL_ARRAY_MAX 256
/* At most this many bytes in stop's message. */
#define PX_CTL_MESSAGE_MAX 1024

/* Defaults of optional arguments: the daemon applies them (they are never
 * filled in by the validator); proxyctl's help and time limit use them. */
#define PX_CTL_DEFAULT_PATH_PREFIX "/"
#define PX_CTL_DEFAULT_HEALTH_CHECK_PATH "/up"
#define PX_CTL_DEFAULT_HEALTH_CHECK_INTERVAL_MS 1000
#define PX_CTL_DEFAULT_HEALTH_CHECK_TIMEOUT_MS 5000
#define PX_CTL_DEFAULT_DEPLOY_TIMEOUT_MS 30000
#define PX_CTL_DEFAULT_DRAIN_TIMEOUT_MS 30000
#define PX_CTL_DEFAULT_MAX_PAUSE_MS 30000

/* ---- error codes ---------------------------------------------------------
 * enum px_err (px/errors.h): the deployer, the services table and the
 * handlers return these; px_err_name gives the wire string. */

/* ---- command table -------------------------------------------------------
 * One row per command (PX_CTL_COMMANDS below). The daemon's handlers receive
 * args already checked against the row's schema; proxyctl builds its argv
 * parser and its help from the same rows. */
enum px_ctl_arg_type {
    PX_CTL_ARG_STRING,      /* non-empty JSON string without NUL */
    PX_CTL_ARG_INT,         /* JSON integer >= 0 */
    PX_CTL_ARG_BOOL,        /* JSON true/false */
    PX_CTL_ARG_STRINGS,     /* JSON array of 0..PX_CTL_ARRAY_MAX distinct strings as above
                               (required = at least one) */
    PX_CTL_ARG_DURATION_MS, /* JSON integer in [PX_CTL_DURATION_MIN_MS, PX_CTL_DURATION_MAX_MS] */
};

#define PX_CTL_ARG_REQUIRED   0x1 /* must be present */
#define PX_CTL_ARG_POSITIONAL 0x2 /* proxyctl takes it as a bare word, in table order */

struct px_ctl_arg {
    const char *name;             /* JSON key, snake_case ("health_check_interval_ms") */
    enum px_ctl_arg_type type;
    unsigned flags;               /* PX_CTL_ARG_* */
    const char *flag;             /* proxyctl's option without "--" ("health-check-interval"),
                                     NULL for positional arguments */
    const char *metavar;          /* "HOST:PORT", "30s"; NULL for bool flags */
    const char *help;             /* one line, for proxyctl help */
    /* Extra check of each string value (each element for STRINGS); NULL = none.
     * Returns NULL or a static message. */
    const char *(*check)(const char *value);
};

/* THE command table, one row per command (HAProxy's cli_kw):
 *   X(NAME, HANDLER, ARGS, HELP)
 * NAME the wire name (snake_case; proxyctl spells '_' as ' '); HANDLER the
 * daemon's function for it (control/commands.c); ARGS the argument schema
 * (ARGS(array) of struct px_ctl_arg in control/protocol.c, or NO_ARGS);
 * HELP one line. protocol.c makes the schema rows from it, commands.c the
 * handler table indexed by PX_CTL_CMD_NAME, so a row whose handler does not
 * exist does not build, and a handler is never missing at run time.
 * proxyctl links only the schema (the HANDLER column is not expanded there). */
#define PX_CTL_COMMANDS(X)                                                                                    \
    X(deploy, h_deploy, ARGS(deploy_args),                                                                    \
      "health-check new targets, switch the service to them, drain the old ones")                            \
    X(rollback, h_rollback, ARGS(service_args),                                                               \
      "switch back to the previous targets (same health check and draining)")                                \
    X(list, h_list, NO_ARGS, "show every service: state, hosts, targets with their health and requests in flight")\
    X(stop, h_stop, ARGS(stop_args), "answer 503 with a maintenance page until resume")                       \
    X(pause, h_pause, ARGS(pause_args), "hold new requests until resume (a short migration)")                 \
    X(resume, h_resume, ARGS(service_args), "end a pause or a stop")                                          \
    X(remove, h_remove, ARGS(service_args), "remove the service (its hosts then answer 404)")                 \
    X(status, h_status, NO_ARGS,                                                                              \
      "show the daemon's version, uptime, connections, request rate, targets' health and certificate expiry")  \
    X(reload, h_reload, NO_ARGS, "reload the config and certificates (like SIGHUP); a bad one changes nothing")\
    X(cert_status, h_cert_status, NO_ARGS,                                                                    \
      "show the certificates: names, expiry, source, last ACME attempt and next check")                      \
    X(cert_renew, h_cert_renew, ARGS(cert_renew_args),                                                        \
      "renew the ACME certificates that are due (all with --force); answers after the attempts")             \
    X(cert_reload, h_cert_reload, NO_ARGS,                                                                    \
      "reload the certificate files and ACME lineages from disk (sessions stay resumable)")                   \
    X(upgrade, h_upgrade, ARGS(upgrade_args),                                                                 \
      "start the new binary on the same sockets and state; this process then drains and exits")

enum px_ctl_cmd_id {
#define PX_CTL_CMD_ENUM_(name, handler, args, help) PX_CTL_CMD_##name,
    PX_CTL_COMMANDS(PX_CTL_CMD_ENUM_)
#undef PX_CTL_CMD_ENUM_
    PX_CTL_CMD__COUNT
};

struct px_ctl_cmd {
    enum px_ctl_cmd_id id;        /* its row: PX_CTL_CMD_deploy, ... */
    const char *name;             /* wire name, snake_case; proxyctl spells '_' as ' ' */
    const char *help;             /* one line */
    const struct px_ctl_arg *args;
    size_t nargs;
};

/* The table (static, immutable) and its length. */
const struct px_ctl_cmd *px_ctl_commands(size_t *n);
/* The row of a wire name, or NULL. */
const struct px_ctl_cmd *px_ctl_command_find(const char *name);
/* The schema row of an argument, or NULL. */
const struct px_ctl_arg *px_ctl_command_arg(const struct px_ctl_cmd *cmd, const char *name);

/* The argument validator: args must be a JSON object (NULL = {}) whose keys
 * are all in cmd's schema, with the declared types and bounds, and every
 * required one present. Returns NULL, or a message naming the argument
 * ("targets: required", "deploy_timeout_ms: must be an integer 1..86400000
 * (milliseconds)", "frobnicate: unknown argument") written into err (and
 * returned). An error here is a bad_request. */
const char *px_ctl_args_check(const struct px_ctl_cmd *cmd, const json_t *args, char *err, size_t errlen);

/* Per-value checks used by the schema (NULL or a static message). */
const char *px_ctl_check_service(const char *v); /* 1..64 of [A-Za-z0-9_.-], like [service NAME] */
const char *px_ctl_check_target(const char *v);  /* HOST:PORT or [V6]:PORT, port 1..65535 (no DNS) */
const char *px_ctl_check_host(const char *v);    /* host name or *.suffix, no port */
const char *px_ctl_check_path(const char *v);    /* '/' then visible ASCII, no '?' or '#' */
/* canonical_host: a host name, no wildcard. */
const char *px_ctl_check_canonical(const char *v);
/* A file or directory path (proxyctl makes a relative one absolute). */
const char *px_ctl_check_fspath(const char *v);
/* Marks an INT argument that is a TCP port (1..65535). */
const char *px_ctl_check_port(const char *v);
const char *px_ctl_check_message(const char *v); /* at most PX_CTL_MESSAGE_MAX bytes */
const char *px_ctl_check_binary(const char *v);  /* an absolute path, visible characters */
#define PX_CTL_DEFAULT_UPGRADE_TIMEOUT_MS 60000  /* upgrade: the new process must be ready by then */

/* ---- framing ------------------------------------------------------------- */
enum px_ctl_frame {
    PX_CTL_FRAME_LINE,     /* a complete line is at buf[0, *line_len) (no "\n" or "\r\n");
                              drop *consumed bytes from the buffer after using it */
    PX_CTL_FRAME_MORE,     /* no '\n' yet and still within max: read more */
    PX_CTL_FRAME_TOO_LONG, /* more than max bytes before the '\n' (seen, or certain because
                              len > max): answer line_too_long and close */
};

/* Find the first line in buf[0, len). max is the longest line allowed,
 * counted without its '\n' (PX_CTL_LINE_MAX for requests); a line of exactly
 * max bytes is accepted. scanned, if not NULL, is per-connection state that
 * makes repeated calls on a growing buffer linear: start it at 0 and keep it
 * while the buffer only grows; the framer sets it to 0 on LINE (the caller
 * then drops *consumed bytes) and on TOO_LONG. line_len and consumed are set
 * on LINE only. */
enum px_ctl_frame px_ctl_frame(const char *buf, size_t len, size_t max, size_t *scanned,
                               size_t *line_len, size_t *consumed);

/* ---- requests ------------------------------------------------------------ */
struct px_ctl_request {
    json_t *root;                 /* owned: the parsed line; NULL when it did not parse */
    json_t *id;                   /* borrowed from root; NULL = absent (echo null) */
    const struct px_ctl_cmd *cmd; /* the table row; NULL unless the command is known */
    json_t *args;                 /* borrowed from root (an empty object is added when
                                     "args" was absent); valid only when
                                     px_ctl_request_parse returned PX_E_OK */
    int progress;                 /* "progress":true at the top level: progress lines wanted */
};

/* Parse and validate one request line (line[0, len), without its newline;
 * need not be NUL-terminated). Returns PX_E_OK with req filled, or an
 * error code (PX_E_BAD_REQUEST, PX_E_UNKNOWN_COMMAND) with a
 * message in err; either way req->id is the id to echo (NULL when the line
 * was not a JSON object or had none) and the caller must call
 * px_ctl_request_clear(req). Handlers may read req->args with jansson's
 * getters: every key present has its schema type. */
enum px_err px_ctl_request_parse(const char *line, size_t len, struct px_ctl_request *req,
                                     char *err, size_t errlen);
/* Release what parse made; req may be reused. Safe on a zeroed or cleared req. */
void px_ctl_request_clear(struct px_ctl_request *req);

/* Typed getters for validated args (defaults when the key is absent). */
const char *px_ctl_arg_str(const json_t *args, const char *name, const char *dflt);
long long px_ctl_arg_int(const json_t *args, const char *name, long long dflt); /* INT, DURATION_MS */
int px_ctl_arg_bool(const json_t *args, const char *name, int dflt);

/* ---- building lines ------------------------------------------------------
 * Each returns a malloc'd NUL-terminated line ending in "\n" (free() it) and
 * its length in *len (if not NULL), or NULL when out of memory. id is
 * borrowed; NULL writes "id":null. Keys are written in a fixed order. */
char *px_ctl_request_line(const json_t *id, const char *cmd, json_t *args_stolen, size_t *len);
/* The same with "progress":true when progress is nonzero (proxyctl asks). */
char *px_ctl_request_line_progress(const json_t *id, const char *cmd, json_t *args_stolen, int progress,
                                   size_t *len);
/* result_stolen: the reference is taken even on failure; NULL = {}. */
char *px_ctl_ok_line(const json_t *id, json_t *result_stolen, size_t *len);
char *px_ctl_error_line(const json_t *id, enum px_err code, const char *message, size_t *len);
char *px_ctl_progress_line(const json_t *id, const char *text, size_t *len);

/* ---- reading replies (proxyctl) ------------------------------------------ */
enum px_ctl_reply_kind { PX_CTL_REPLY_PROGRESS, PX_CTL_REPLY_OK, PX_CTL_REPLY_ERROR };

struct px_ctl_reply {
    json_t *root;                 /* owned */
    enum px_ctl_reply_kind kind;
    json_t *id;                   /* borrowed; NULL when null/absent */
    const char *progress;         /* PROGRESS: the text */
    json_t *result;               /* OK: the result object (borrowed; {} when absent) */
    const char *code;             /* ERROR: wire code (may be one this build does not know) */
    const char *message;          /* ERROR: message ("" when absent) */
};

/* Parse one reply line. Returns NULL, or a static message when the line is
 * not a reply ("not JSON", "no ok or progress"); either way call
 * px_ctl_reply_clear(). */
const char *px_ctl_reply_parse(const char *line, size_t len, struct px_ctl_reply *rep);
void px_ctl_reply_clear(struct px_ctl_reply *rep);

#endif
