/* protocol.c -- the control protocol's tables, framer, parser and line
 * builders (px/control.h). No mutable state: the daemon's main thread and
 * proxyctl both use it. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/common.h"
#include "px/parse.h"
#include "px/control.h"

/* ---- value checks ---- */

const char *px_ctl_check_service(const char *v)
{
    return px_parse_check_name(v); /* the same rule as [service NAME] */
}

static int host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

/* n bytes of dot-separated labels of host_char, each 1..63, 1..253 in all. */
static const char *check_labels(const char *p, size_t n)
{
    size_t label = 0;

    if (n == 0 || n > 253)
        return "bad host name";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '.') {
            if (label == 0)
                return "bad host name";
            label = 0;
            continue;
        }
        if (!host_char(c))
            return c == ':' ? "bad host name (no port here)" : "bad host name";
        if (++label > 63)
            return "bad host name";
    }
    return label == 0 ? "bad host name" : NULL;
}

const char *px_ctl_check_host(const char *v)
{
    if (v[0] == '*') {
        if (v[1] != '.')
            return "a wildcard must be written *.SUFFIX";
        v += 2;
    }
    if (strchr(v, '*'))
        return "a wildcard must be written *.SUFFIX";
    return check_labels(v, strlen(v));
}

const char *px_ctl_check_target(const char *v)
{
    const char *colon, *port;
    unsigned long n = 0;

    if (v[0] == '[') {
        const char *end = strchr(v, ']');
        if (end == NULL || end == v + 1)
            return "bad IPv6 address (write [ADDR]:PORT)";
        for (const char *p = v + 1; p < end; p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F') ||
                  *p == ':' || *p == '.'))
                return "bad IPv6 address (write [ADDR]:PORT)";
        colon = end + 1;
        if (*colon != ':')
            return "missing port (write HOST:PORT)";
    } else {
        if ((colon = strrchr(v, ':')) == NULL)
            return "missing port (write HOST:PORT)";
        if (memchr(v, ':', (size_t)(colon - v)))
            return "write an IPv6 address as [ADDR]:PORT";
        if (check_labels(v, (size_t)(colon - v)) != NULL)
            return "bad host (write HOST:PORT)";
    }
    port = colon + 1;
    if (*port == '\0')
        return "missing port (write HOST:PORT)";
    for (const char *p = port; *p; p++) {
        if (*p < '0' || *p > '9' || p - port >= 5)
            return "bad port (1..65535)";
        n = n * 10 + (unsigned long)(*p - '0');
    }
    return n == 0 || n > 65535 ? "bad port (1..65535)" : NULL;
}

const char *px_ctl_check_path(const char *v)
{
    return px_parse_check_path(v); /* the same rule as the config file's paths */
}

const char *px_ctl_check_canonical(const char *v)
{
    return v[0] == '*' ? "a wildcard cannot be canonical" : px_ctl_check_host(v);
}

const char *px_ctl_check_fspath(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f)
            return "control character in path";
    return NULL;
}

const char *px_ctl_check_port(const char *v)
{
    PX_UNUSED(v);
    return NULL; /* INT values are checked in px_ctl_args_check */
}

const char *px_ctl_check_message(const char *v)
{
    return strlen(v) > PX_CTL_MESSAGE_MAX ? "at most 1024 bytes" : NULL;
}

const char *px_ctl_check_binary(const char *v)
{
    if (v[0] != '/')
        return "an absolute path is needed";
    if (strlen(v) > 4095)
        return "at most 4095 bytes";
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return "no control characters";
    return NULL;
}

/* ---- the command table ---- */

#define ARG_SERVICE {"service", PX_CTL_ARG_STRING, PX_CTL_ARG_REQUIRED | PX_CTL_ARG_POSITIONAL, NULL, \
                     "SERVICE", "the service's name", px_ctl_check_service}

static const struct px_ctl_arg deploy_args[] = {
    ARG_SERVICE,
    {"targets", PX_CTL_ARG_STRINGS, PX_CTL_ARG_REQUIRED, "target", "HOST:PORT",
     "a new target (repeat for several)", px_ctl_check_target},
    {"hosts", PX_CTL_ARG_STRINGS, 0, "host", "NAME",
     "a host name it serves, *.SUFFIX allowed (repeat; none = any host)", px_ctl_check_host},
    {"path_prefix", PX_CTL_ARG_STRINGS, 0, "path-prefix", "P",
     "serve paths under P only (repeat for several; default /)", px_ctl_check_path},
    {"strip_path_prefix", PX_CTL_ARG_BOOL, 0, "strip-path-prefix", NULL,
     "send the path without the matched prefix upstream (default false)", NULL},
    {"health_check_path", PX_CTL_ARG_STRING, 0, "health-check-path", "PATH",
     "GET this on each new target, any 2xx is healthy (default /up)", px_ctl_check_path},
    {"health_check_interval_ms", PX_CTL_ARG_DURATION_MS, 0, "health-check-interval", "DURATION",
     "between health checks (default 1s)", NULL},
    {"health_check_timeout_ms", PX_CTL_ARG_DURATION_MS, 0, "health-check-timeout", "DURATION",
     "for one health check (default 5s)", NULL},
    {"deploy_timeout_ms", PX_CTL_ARG_DURATION_MS, 0, "deploy-timeout", "DURATION",
     "fail when not healthy by then; the old targets keep serving (default 30s)", NULL},
    {"drain_timeout_ms", PX_CTL_ARG_DURATION_MS, 0, "drain-timeout", "DURATION",
     "cut requests still on the old targets with 504 after this (default 30s)", NULL},
    {"health_check_port", PX_CTL_ARG_INT, 0, "health-check-port", "PORT",
     "check this port of each target (default: the target's)", px_ctl_check_port},
    {"target_timeout_ms", PX_CTL_ARG_DURATION_MS, 0, "target-timeout", "DURATION",
     "504 when a target takes longer to answer (default: upstream_read_timeout)", NULL},
    {"forward_headers", PX_CTL_ARG_BOOL, 0, "forward-headers", NULL,
     "believe the client's X-Forwarded-For/-Proto/-Host (default false)", NULL},
    {"tls_redirect", PX_CTL_ARG_BOOL, 0, "tls-redirect", NULL,
     "redirect its hosts from http to https (default true; =false serves them on port 80)", NULL},
    {"tls_certificate_path", PX_CTL_ARG_STRING, 0, "tls-certificate-path", "FILE",
     "a certificate (PEM chain) served by SNI for its hosts", px_ctl_check_fspath},
    {"tls_private_key_path", PX_CTL_ARG_STRING, 0, "tls-private-key-path", "FILE",
     "the key of --tls-certificate-path", px_ctl_check_fspath},
    {"canonical_host", PX_CTL_ARG_STRING, 0, "canonical-host", "NAME",
     "301 its other hosts to this one, path and query kept", px_ctl_check_canonical},
    {"error_pages", PX_CTL_ARG_STRING, 0, "error-pages", "DIR",
     "serve DIR/STATUS.html for proxyd's own 4xx/5xx on it", px_ctl_check_fspath},
    {"force", PX_CTL_ARG_BOOL, 0, "force", NULL, "switch without waiting for health checks", NULL},
    {"tls", PX_CTL_ARG_BOOL, 0, "tls", NULL,
     "obtain and renew a certificate for the hosts (ACME, in the background after the deploy)", NULL},
    {"log_request_headers", PX_CTL_ARG_STRINGS, 0, "log-request-header", "NAME",
     "log this request header as req_NAME (repeat; default Cache-Control Last-Modified User-Agent)",
     px_parse_check_header_name},
    {"log_response_headers", PX_CTL_ARG_STRINGS, 0, "log-response-header", "NAME",
     "log this response header as resp_NAME (repeat; default none)", px_parse_check_header_name},
    {"buffer_requests", PX_CTL_ARG_BOOL, 0, "buffer-requests", NULL,
     "read each request body whole before the upstream (default; --buffer-requests=false streams)", NULL},
    {"buffer_responses", PX_CTL_ARG_BOOL, 0, "buffer-responses", NULL,
     "read responses as fast as the upstream sends, to free it early (default off)", NULL},
    {"buffer_memory", PX_CTL_ARG_INT, 0, "buffer-memory", "BYTES", "held in memory, then temp_dir (default 1048576)",
     NULL},
    {"max_request_body", PX_CTL_ARG_INT, 0, "max-request-body", "BYTES",
     "413 over this (default 0: max_body_size)", NULL},
    {"max_response_body", PX_CTL_ARG_INT, 0, "max-response-body", "BYTES",
     "buffered responses: 502 over this (default 0: unlimited)", NULL},
};

static const struct px_ctl_arg service_args[] = {ARG_SERVICE};

static const struct px_ctl_arg stop_args[] = {
    ARG_SERVICE,
    {"message", PX_CTL_ARG_STRING, 0, "message", "TEXT", "shown on the 503 page", px_ctl_check_message},
};

static const struct px_ctl_arg pause_args[] = {
    ARG_SERVICE,
    {"max_pause_ms", PX_CTL_ARG_DURATION_MS, 0, "max-pause", "DURATION",
     "answer 504 to a request held longer (default 30s)", NULL},
};

static const struct px_ctl_arg cert_renew_args[] = {
    {"force", PX_CTL_ARG_BOOL, 0, "force", NULL, "renew every ACME certificate, due or not", NULL},
};

static const struct px_ctl_arg upgrade_args[] = {
    {"binary", PX_CTL_ARG_STRING, 0, "binary", "PATH",
     "the new binary (default: the one running, as it was when it started)", px_ctl_check_binary},
    {"timeout_ms", PX_CTL_ARG_DURATION_MS, 0, "timeout", "DURATION",
     "fail, changing nothing, when the new process does not serve by then (default 60s)", NULL},
};

#define ARGS(a) (a), PX_ARRAY_LEN(a)
#define NO_ARGS NULL, 0

/* The schema half of PX_CTL_COMMANDS (the handlers are commands.c's). */
static const struct px_ctl_cmd commands[] = {
#define ROW_(name, handler, args, help) {PX_CTL_CMD_##name, #name, help, args},
    PX_CTL_COMMANDS(ROW_)
#undef ROW_
};
_Static_assert(PX_ARRAY_LEN(commands) == PX_CTL_CMD__COUNT, "one schema row per command");

const struct px_ctl_cmd *px_ctl_commands(size_t *n)
{
    *n = PX_ARRAY_LEN(commands);
    return commands;
}

const struct px_ctl_cmd *px_ctl_command_find(const char *name)
{
    for (size_t i = 0; name && i < PX_ARRAY_LEN(commands); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

const struct px_ctl_arg *px_ctl_command_arg(const struct px_ctl_cmd *cmd, const char *name)
{
    for (size_t i = 0; cmd && name && i < cmd->nargs; i++)
        if (strcmp(cmd->args[i].name, name) == 0)
            return &cmd->args[i];
    return NULL;
}

/* ---- the validator ---- */

static const char *errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static const char *errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return err;
}

/* A string value of a STRING or STRINGS argument: non-empty, no NUL, its check. */
static const char *check_string(const struct px_ctl_arg *a, const json_t *v, int element, char *err,
                                size_t errlen)
{
    const char *s = json_string_value(v), *why;

    if (s == NULL || json_string_length(v) == 0)
        return element ? errf(err, errlen, "%s: must be an array of non-empty strings", a->name)
                       : errf(err, errlen, "%s: must be a non-empty string", a->name);
    if (strlen(s) != json_string_length(v))
        return errf(err, errlen, "%s: must not contain NUL", a->name);
    if (a->check && (why = a->check(s)) != NULL)
        return errf(err, errlen, "%s: \"%.80s\": %s", a->name, s, why);
    return NULL;
}

static const char *check_value(const struct px_ctl_arg *a, const json_t *v, char *err, size_t errlen)
{
    switch (a->type) {
    case PX_CTL_ARG_STRING:
        return check_string(a, v, 0, err, errlen);
    case PX_CTL_ARG_INT:
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return errf(err, errlen, "%s: must be an integer >= 0", a->name);
        if (a->check == px_ctl_check_port && (json_integer_value(v) < 1 || json_integer_value(v) > 65535))
            return errf(err, errlen, "%s: must be a port 1..65535", a->name);
        return NULL;
    case PX_CTL_ARG_BOOL:
        return json_is_boolean(v) ? NULL : errf(err, errlen, "%s: must be true or false", a->name);
    case PX_CTL_ARG_DURATION_MS:
        if (!json_is_integer(v) || json_integer_value(v) < PX_CTL_DURATION_MIN_MS ||
            json_integer_value(v) > PX_CTL_DURATION_MAX_MS)
            return errf(err, errlen, "%s: must be an integer %d..%lld (milliseconds)", a->name,
                        PX_CTL_DURATION_MIN_MS, (long long)PX_CTL_DURATION_MAX_MS);
        return NULL;
    case PX_CTL_ARG_STRINGS: {
        size_t n = json_array_size(v);
        if (json_is_string(v)) /* one value as a plain string */
            return check_string(a, v, 0, err, errlen);
        if (!json_is_array(v))
            return errf(err, errlen, "%s: must be an array of non-empty strings", a->name);
        if (n > PX_CTL_ARRAY_MAX)
            return errf(err, errlen, "%s: at most %d entries", a->name, PX_CTL_ARRAY_MAX);
        if (n == 0 && (a->flags & PX_CTL_ARG_REQUIRED))
            return errf(err, errlen, "%s: needs at least one entry", a->name);
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_array_get(v, i);
            if (check_string(a, e, 1, err, errlen) != NULL)
                return err;
            for (size_t j = 0; j < i; j++)
                if (json_equal((json_t *)e, json_array_get(v, j)))
                    return errf(err, errlen, "%s: \"%.80s\" given twice", a->name, json_string_value(e));
        }
        return NULL;
    }
    }
    return errf(err, errlen, "%s: bad schema type", a->name);
}

const char *px_ctl_args_check(const struct px_ctl_cmd *cmd, const json_t *args, char *err, size_t errlen)
{
    const char *key;
    json_t *v;

    if (args != NULL && !json_is_object(args))
        return errf(err, errlen, "args: must be an object");
    if (args != NULL) {
        json_object_foreach((json_t *)args, key, v) {
            const struct px_ctl_arg *a = px_ctl_command_arg(cmd, key);
            if (a == NULL)
                return errf(err, errlen, "%.64s: unknown argument of %s", key, cmd->name);
            if (check_value(a, v, err, errlen) != NULL)
                return err;
        }
    }
    for (size_t i = 0; i < cmd->nargs; i++)
        if ((cmd->args[i].flags & PX_CTL_ARG_REQUIRED) &&
            (args == NULL || json_object_get(args, cmd->args[i].name) == NULL))
            return errf(err, errlen, "%s: required", cmd->args[i].name);
    return NULL;
}

/* ---- framing ---- */

enum px_ctl_frame px_ctl_frame(const char *buf, size_t len, size_t max, size_t *scanned,
                               size_t *line_len, size_t *consumed)
{
    size_t lim = len <= max ? len : max + 1; /* the '\n' of the longest allowed line is at max */
    size_t from = scanned && *scanned < lim ? *scanned : 0;
    const char *nl = from < lim ? memchr(buf + from, '\n', lim - from) : NULL;

    if (nl != NULL) {
        size_t n = (size_t)(nl - buf);
        *consumed = n + 1;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
        *line_len = n;
        if (scanned)
            *scanned = 0;
        return PX_CTL_FRAME_LINE;
    }
    if (len > max) {
        if (scanned)
            *scanned = 0;
        return PX_CTL_FRAME_TOO_LONG;
    }
    if (scanned)
        *scanned = len;
    return PX_CTL_FRAME_MORE;
}

/* ---- requests ---- */

enum px_err px_ctl_request_parse(const char *line, size_t len, struct px_ctl_request *req, char *err,
                                     size_t errlen)
{
    json_error_t jerr;
    json_t *cmd, *args;
    const char *name;

    memset(req, 0, sizeof(*req));
    req->root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (req->root == NULL) {
        errf(err, errlen, "malformed JSON at column %d: %s", jerr.column, jerr.text);
        return PX_E_BAD_REQUEST;
    }
    if (!json_is_object(req->root)) {
        errf(err, errlen, "a request must be a JSON object");
        return PX_E_BAD_REQUEST;
    }
    req->id = json_object_get(req->root, "id");
    cmd = json_object_get(req->root, "cmd");
    if (cmd == NULL) {
        errf(err, errlen, "cmd: required");
        return PX_E_BAD_REQUEST;
    }
    if ((name = json_string_value(cmd)) == NULL || strlen(name) != json_string_length(cmd)) {
        errf(err, errlen, "cmd: must be a string");
        return PX_E_BAD_REQUEST;
    }
    if ((req->cmd = px_ctl_command_find(name)) == NULL) {
        errf(err, errlen, "unknown command \"%.64s\"", name);
        return PX_E_UNKNOWN_COMMAND;
    }
    json_t *pr = json_object_get(req->root, "progress");
    if (pr && !json_is_boolean(pr)) {
        errf(err, errlen, "progress: must be true or false");
        return PX_E_BAD_REQUEST;
    }
    req->progress = json_is_true(pr);
    args = json_object_get(req->root, "args");
    if (args == NULL || json_is_null(args)) {
        if ((args = json_object()) == NULL || json_object_set_new(req->root, "args", args) != 0) {
            errf(err, errlen, "out of memory");
            return PX_E_INTERNAL;
        }
    }
    if (px_ctl_args_check(req->cmd, args, err, errlen) != NULL)
        return PX_E_BAD_REQUEST;
    req->args = args;
    return PX_E_OK;
}

void px_ctl_request_clear(struct px_ctl_request *req)
{
    json_decref(req->root);
    memset(req, 0, sizeof(*req));
}

const char *px_ctl_arg_str(const json_t *args, const char *name, const char *dflt)
{
    const char *s = json_string_value(json_object_get(args, name));
    return s ? s : dflt;
}

long long px_ctl_arg_int(const json_t *args, const char *name, long long dflt)
{
    const json_t *v = json_object_get(args, name);
    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

int px_ctl_arg_bool(const json_t *args, const char *name, int dflt)
{
    const json_t *v = json_object_get(args, name);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* ---- building lines ---- */

/* A JSON string of s; bytes that are not valid UTF-8 become '?' (messages
 * may quote what a peer sent). */
static json_t *text_value(const char *s)
{
    json_t *v;
    char *copy;

    if ((v = json_string(s ? s : "")) != NULL)
        return v;
    if ((copy = strdup(s)) == NULL)
        return NULL;
    for (unsigned char *p = (unsigned char *)copy; *p; p++)
        if (*p >= 0x80)
            *p = '?';
    v = json_string(copy);
    free(copy);
    return v;
}

/* Serialize obj (stolen) as one line with its "\n". */
static char *finish_line(json_t *obj, size_t *len)
{
    char *s = NULL, *line = NULL;
    size_t n;

    if (obj == NULL || (s = json_dumps(obj, JSON_COMPACT)) == NULL)
        goto fail;
    n = strlen(s);
    if ((line = realloc(s, n + 2)) == NULL)
        goto fail;
    s = NULL;
    line[n] = '\n';
    line[n + 1] = '\0';
    if (len)
        *len = n + 1;
fail:
    free(s);
    json_decref(obj);
    return line;
}

/* {"id":...} with a copy of id (the caller's stays untouched). */
static json_t *with_id(const json_t *id)
{
    json_t *obj = json_object(), *copy = id ? json_deep_copy(id) : json_null();

    if (obj == NULL || copy == NULL || json_object_set_new(obj, "id", copy) != 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

char *px_ctl_request_line_progress(const json_t *id, const char *cmd, json_t *args_stolen, int progress,
                                   size_t *len)
{
    json_t *obj = with_id(id);

    if (args_stolen == NULL)
        args_stolen = json_object();
    if (obj == NULL || args_stolen == NULL || json_object_set_new(obj, "cmd", text_value(cmd)) != 0 ||
        json_object_set(obj, "args", args_stolen) != 0 ||
        (progress && json_object_set_new(obj, "progress", json_true()) != 0)) {
        json_decref(obj);
        obj = NULL;
    }
    json_decref(args_stolen);
    return finish_line(obj, len);
}

char *px_ctl_request_line(const json_t *id, const char *cmd, json_t *args_stolen, size_t *len)
{
    return px_ctl_request_line_progress(id, cmd, args_stolen, 0, len);
}

char *px_ctl_ok_line(const json_t *id, json_t *result_stolen, size_t *len)
{
    json_t *obj = with_id(id);

    if (result_stolen == NULL)
        result_stolen = json_object();
    if (obj == NULL || result_stolen == NULL || json_object_set_new(obj, "ok", json_true()) != 0 ||
        json_object_set(obj, "result", result_stolen) != 0) {
        json_decref(obj);
        obj = NULL;
    }
    json_decref(result_stolen);
    return finish_line(obj, len);
}

char *px_ctl_error_line(const json_t *id, enum px_err code, const char *message, size_t *len)
{
    json_t *obj = with_id(id), *e = json_object();

    if (obj == NULL || e == NULL || json_object_set_new(e, "code", json_string(px_err_name(code))) != 0 ||
        json_object_set_new(e, "message", text_value(message)) != 0 ||
        json_object_set_new(obj, "ok", json_false()) != 0 || json_object_set(obj, "error", e) != 0) {
        json_decref(obj);
        obj = NULL;
    }
    json_decref(e);
    return finish_line(obj, len);
}

char *px_ctl_progress_line(const json_t *id, const char *text, size_t *len)
{
    json_t *obj = with_id(id);

    if (obj == NULL || json_object_set_new(obj, "progress", text_value(text)) != 0) {
        json_decref(obj);
        obj = NULL;
    }
    return finish_line(obj, len);
}

/* ---- replies ---- */

const char *px_ctl_reply_parse(const char *line, size_t len, struct px_ctl_reply *rep)
{
    json_error_t jerr;
    json_t *v, *e;

    memset(rep, 0, sizeof(*rep));
    if ((rep->root = json_loadb(line, len, 0, &jerr)) == NULL)
        return "not JSON";
    if (!json_is_object(rep->root))
        return "not a JSON object";
    rep->id = json_object_get(rep->root, "id");
    if (json_is_null(rep->id))
        rep->id = NULL;
    if ((v = json_object_get(rep->root, "progress")) != NULL) {
        if ((rep->progress = json_string_value(v)) == NULL)
            return "progress is not a string";
        rep->kind = PX_CTL_REPLY_PROGRESS;
        return NULL;
    }
    v = json_object_get(rep->root, "ok");
    if (json_is_true(v)) {
        rep->kind = PX_CTL_REPLY_OK;
        rep->result = json_object_get(rep->root, "result");
        if (rep->result == NULL || json_is_null(rep->result)) {
            if ((rep->result = json_object()) == NULL || json_object_set_new(rep->root, "result", rep->result) != 0)
                return "out of memory";
        }
        return json_is_object(rep->result) ? NULL : "result is not an object";
    }
    if (!json_is_false(v))
        return "neither ok nor progress";
    rep->kind = PX_CTL_REPLY_ERROR;
    e = json_object_get(rep->root, "error");
    if ((rep->code = json_string_value(json_object_get(e, "code"))) == NULL)
        return "error without a code";
    rep->message = json_string_value(json_object_get(e, "message"));
    if (rep->message == NULL)
        rep->message = "";
    return NULL;
}

void px_ctl_reply_clear(struct px_ctl_reply *rep)
{
    json_decref(rep->root);
    memset(rep, 0, sizeof(*rep));
}
