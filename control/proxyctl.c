/* proxyctl.c -- the control client: argv -> one request -> print -> exit code.
 *
 * Its parser and its help come from the protocol's command table
 * (px/control.h), and it runs the daemon's argument validator before
 * sending, so a usage error never reaches the daemon. Exit codes: 0 done,
 * 1 the daemon refused or the operation failed, 2 usage, 3 the daemon could
 * not be reached, closed without answering, or did not answer in time. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "px/common.h"
#include "px/parse.h"
#include "px/control.h"
#include "proxyctl.h"

const char *pxctl_prog = "proxyctl";

#define DEFAULT_SOCKET "/run/proxyd/control.sock"
#define LIMIT_MARGIN_MS 30000         /* on top of what the daemon may take */
#define LIMIT_DEFAULT_MS 30000        /* commands that answer at once */
#define LIMIT_ROLLBACK_MS (10 * 60000) /* rollback uses the service's stored timeouts */
#define LIMIT_CERT_RENEW_MS (20 * 60000) /* an order (5 min at most) and three hook directories */

struct invocation {
    const char *socket;
    int json;
    const struct px_ctl_cmd *cmd;
    json_t *args;
    struct pxctl_refusal *refusal; /* NULL: print an error reply; else keep it here */
};

/* ---- help, from the command table ---- */

static void cli_name(const struct px_ctl_cmd *c, char *buf, size_t n)
{
    snprintf(buf, n, "%s", c->name);
    for (char *p = buf; *p; p++)
        if (*p == '_')
            *p = ' ';
}

/* "deploy SERVICE --target HOST:PORT [--target ...] [--host NAME ...] ...", wrapped. */
static void synopsis(FILE *f, const struct px_ctl_cmd *c, const char *lead, int indent)
{
    char name[64], word[160];
    int col;

    cli_name(c, name, sizeof(name));
    col = fprintf(f, "%s%s", lead, name);
    for (size_t i = 0; i < c->nargs; i++) {
        const struct px_ctl_arg *a = &c->args[i];
        int req = (a->flags & PX_CTL_ARG_REQUIRED) != 0;
        if (a->flags & PX_CTL_ARG_POSITIONAL)
            snprintf(word, sizeof(word), req ? "%s" : "[%s]", a->metavar);
        else if (a->type == PX_CTL_ARG_BOOL)
            snprintf(word, sizeof(word), "[--%s]", a->flag);
        else if (a->type == PX_CTL_ARG_STRINGS)
            snprintf(word, sizeof(word), req ? "--%s %s [--%s ...]" : "[--%s %s ...]", a->flag, a->metavar,
                     a->flag);
        else
            snprintf(word, sizeof(word), req ? "--%s %s" : "[--%s %s]", a->flag, a->metavar);
        if (col + 1 + (int)strlen(word) > 96) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else {
            col += fprintf(f, " ");
        }
        col += fprintf(f, "%s", word);
    }
    if (strcmp(c->name, "list") == 0 || strcmp(c->name, "status") == 0 || strcmp(c->name, "cert_status") == 0)
        fprintf(f, " [--json]");
    fputc('\n', f);
}

static void usage(FILE *f)
{
    size_t n;
    const struct px_ctl_cmd *cmds = px_ctl_commands(&n);

    fprintf(f, "usage: proxyctl [--socket PATH] [--json] COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < n; i++) {
        synopsis(f, &cmds[i], "  ", 6);
        fprintf(f, "      %s\n", cmds[i].help);
    }
    fprintf(f, "\noptions:\n"
               "  --socket PATH  the daemon's control socket (default $PROXYCTL_SOCKET, else %s)\n"
               "  --json         print the result as JSON (list, status, cert status: instead of a table)\n"
               "  --help         this text; proxyctl help COMMAND or COMMAND --help for one command\n"
               "  --version      print the version\n"
               "\nDurations: 500ms, 10s, 5m, 1h (a bare number is seconds).\n"
               "Exit status: 0 done; 1 the daemon refused or the operation failed (message on stderr);\n"
               "2 usage error; 3 cannot reach the daemon (or it closed or timed out without answering).\n",
            DEFAULT_SOCKET);
}

static void command_help(FILE *f, const struct px_ctl_cmd *c)
{
    char word[160];

    synopsis(f, c, "usage: proxyctl [--socket PATH] ", 8);
    fprintf(f, "%s\n\n", c->help);
    for (size_t i = 0; i < c->nargs; i++) {
        const struct px_ctl_arg *a = &c->args[i];
        if (a->flags & PX_CTL_ARG_POSITIONAL)
            snprintf(word, sizeof(word), "%s", a->metavar);
        else if (a->metavar)
            snprintf(word, sizeof(word), "--%s %s", a->flag, a->metavar);
        else
            snprintf(word, sizeof(word), "--%s", a->flag);
        fprintf(f, "  %-33s %s\n", word, a->help);
    }
    fprintf(f, "  %-33s %s\n", "--json", "print the result as JSON");
    fprintf(f, "  %-33s %s\n", "--socket PATH", "the control socket (default $PROXYCTL_SOCKET, else " DEFAULT_SOCKET ")");
}

static int usage_error(const struct px_ctl_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const struct px_ctl_cmd *c, const char *fmt, ...)
{
    char name[64];
    va_list ap;

    fprintf(stderr, "proxyctl: ");
    if (c) {
        cli_name(c, name, sizeof(name));
        fprintf(stderr, "%s: ", name);
    }
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (c)
        fprintf(stderr, "\nTry 'proxyctl help %s'.\n", name);
    else
        fprintf(stderr, "\nTry 'proxyctl --help'.\n");
    return EXIT_USAGE;
}

/* ---- argv ---- */

/* The command named by argv[*i] (and argv[*i + 1] for "cert status"). */
static const struct px_ctl_cmd *find_command(int argc, char **argv, int *i)
{
    const struct px_ctl_cmd *c = px_ctl_command_find(argv[*i]);
    char two[128];

    if (c == NULL && *i + 1 < argc && strchr(argv[*i], '_') == NULL) {
        snprintf(two, sizeof(two), "%s_%s", argv[*i], argv[*i + 1]);
        if ((c = px_ctl_command_find(two)) != NULL)
            (*i)++;
    }
    return c;
}

static const struct px_ctl_arg *find_flag(const struct px_ctl_cmd *c, const char *flag, size_t n)
{
    for (size_t i = 0; i < c->nargs; i++)
        if (c->args[i].flag && strlen(c->args[i].flag) == n && memcmp(c->args[i].flag, flag, n) == 0)
            return &c->args[i];
    return NULL;
}

/* Sets one argument from its command-line text. Returns 0 or an exit code. */
static int set_arg(struct invocation *inv, const struct px_ctl_arg *a, const char *text, const char *what)
{
    json_t *v = NULL, *arr;
    const char *err;
    uint64_t ms;
    char *end;

    char abs[8192], cwd[4096];
    int b = 1;
    switch (a->type) {
    case PX_CTL_ARG_BOOL: /* --flag, --flag=true, --flag=false */
        if (text && strcmp(text, "true") != 0 && (b = 0, strcmp(text, "false") != 0))
            return usage_error(inv->cmd, "%s: expected true or false", what);
        v = json_boolean(b);
        break;
    case PX_CTL_ARG_STRING:
    case PX_CTL_ARG_STRINGS:
        /* a file the daemon opens: relative to where proxyctl runs, as a user means it */
        if (a->check == px_ctl_check_fspath && text[0] != '/' && text[0] != '\0' && getcwd(cwd, sizeof(cwd)) &&
            snprintf(abs, sizeof(abs), "%s/%s", cwd, text) < (int)sizeof(abs))
            text = abs;
        if ((v = json_string(text)) == NULL)
            return usage_error(inv->cmd, "%s: not valid UTF-8", what);
        break;
    case PX_CTL_ARG_DURATION_MS:
        if ((err = px_parse_duration_ms(text, &ms)) != NULL)
            return usage_error(inv->cmd, "%s: %s", what, err);
        if (ms < PX_CTL_DURATION_MIN_MS || ms > (uint64_t)PX_CTL_DURATION_MAX_MS)
            return usage_error(inv->cmd, "%s: must be 1ms..24h", what);
        v = json_integer((json_int_t)ms);
        break;
    case PX_CTL_ARG_INT:
        errno = 0;
        ms = strtoull(text, &end, 10);
        if (*text < '0' || *text > '9' || *end != '\0' || errno || ms > INT64_MAX)
            return usage_error(inv->cmd, "%s: must be a number", what);
        v = json_integer((json_int_t)ms);
        break;
    }
    if (v == NULL)
        return usage_error(inv->cmd, "%s: out of memory", what);
    if (a->type != PX_CTL_ARG_STRINGS)
        return json_object_set_new(inv->args, a->name, v) == 0 ? 0 : EXIT_USAGE;
    if ((arr = json_object_get(inv->args, a->name)) == NULL) {
        arr = json_array();
        if (arr == NULL || json_object_set_new(inv->args, a->name, arr) != 0) {
            json_decref(v);
            return EXIT_USAGE;
        }
    }
    return json_array_append_new(arr, v) == 0 ? 0 : EXIT_USAGE;
}

static const struct px_ctl_arg *nth_positional(const struct px_ctl_cmd *c, size_t n)
{
    for (size_t k = 0; k < c->nargs; k++)
        if ((c->args[k].flags & PX_CTL_ARG_POSITIONAL) && n-- == 0)
            return &c->args[k];
    return NULL;
}

/* Returns -1 to go on, or an exit code (help printed, usage error). */
static int parse_argv(int argc, char **argv, struct invocation *inv)
{
    size_t npos = 0;
    int help = 0, dashdash = 0, rc;
    char err[256], what[80];

    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *eq;
        const struct px_ctl_arg *a;

        if (!dashdash && s[0] == '-' && s[1] != '\0') {
            size_t n;
            if (strcmp(s, "--") == 0) {
                dashdash = 1;
                continue;
            }
            if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
                help = 1;
                continue;
            }
            if (strcmp(s, "--json") == 0) {
                inv->json = 1;
                continue;
            }
            if ((strcmp(s, "-V") == 0 || strcmp(s, "--version") == 0) && inv->cmd == NULL) {
                printf("proxyctl %s\n", PX_VERSION);
                return EXIT_DONE;
            }
            if (strcmp(s, "--socket") == 0 || strncmp(s, "--socket=", 9) == 0) {
                if (s[8] == '=')
                    inv->socket = s + 9;
                else if (i + 1 < argc)
                    inv->socket = argv[++i];
                else
                    return usage_error(NULL, "--socket needs a PATH");
                continue;
            }
            if (inv->cmd == NULL || strncmp(s, "--", 2) != 0)
                return usage_error(inv->cmd, "unknown option %s", s);
            eq = strchr(s + 2, '=');
            n = eq ? (size_t)(eq - s - 2) : strlen(s + 2);
            if ((a = find_flag(inv->cmd, s + 2, n)) == NULL)
                return usage_error(inv->cmd, "unknown option %s", s);
            snprintf(what, sizeof(what), "--%s", a->flag);
            if (a->type == PX_CTL_ARG_BOOL) {
                s = eq ? eq + 1 : NULL;
            } else if (eq) {
                s = eq + 1;
            } else if (i + 1 < argc) {
                s = argv[++i];
            } else {
                return usage_error(inv->cmd, "%s needs a value (%s)", what, a->metavar);
            }
            if ((rc = set_arg(inv, a, s, what)) != 0)
                return rc;
            continue;
        }
        if (inv->cmd == NULL) {
            if (strcmp(s, "help") == 0) {
                help = 1;
                if (i + 1 >= argc)
                    continue;
                i++;
            }
            if ((inv->cmd = find_command(argc, argv, &i)) == NULL)
                return usage_error(NULL, "unknown command '%s'", argv[i]);
            continue;
        }
        /* a bare word: the next positional argument */
        if ((a = nth_positional(inv->cmd, npos)) == NULL)
            return usage_error(inv->cmd, "unexpected argument '%s'", s);
        snprintf(what, sizeof(what), "%s", a->metavar);
        if ((rc = set_arg(inv, a, s, what)) != 0)
            return rc;
        npos++;
    }
    if (help) {
        if (inv->cmd)
            command_help(stdout, inv->cmd);
        else
            usage(stdout);
        return EXIT_DONE;
    }
    if (inv->cmd == NULL) {
        usage(stderr);
        return EXIT_USAGE;
    }
    for (size_t k = 0; k < inv->cmd->nargs; k++) {
        const struct px_ctl_arg *a = &inv->cmd->args[k];
        if (!(a->flags & PX_CTL_ARG_REQUIRED) || json_object_get(inv->args, a->name))
            continue;
        if (a->flags & PX_CTL_ARG_POSITIONAL)
            return usage_error(inv->cmd, "missing %s", a->metavar);
        return usage_error(inv->cmd, "--%s %s is required", a->flag, a->metavar);
    }
    if (px_ctl_args_check(inv->cmd, inv->args, err, sizeof(err)) != NULL)
        return usage_error(inv->cmd, "%s", err);
    return -1;
}

/* ---- printing results ---- */

/* A scalar or an array of scalars as text ("a, b"); objects as compact JSON.
 * Returns malloc'd text or NULL. */
static char *value_text(const json_t *v, const char *sep, const char *empty)
{
    char *out = NULL, *dumped;
    size_t len = 0, n;

    switch (json_typeof(v)) {
    case JSON_STRING:
        return strdup(json_string_value(v));
    case JSON_INTEGER:
        if (asprintf(&out, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) < 0)
            return NULL;
        return out;
    case JSON_REAL:
        if (asprintf(&out, "%g", json_real_value(v)) < 0)
            return NULL;
        return out;
    case JSON_TRUE:
        return strdup("true");
    case JSON_FALSE:
        return strdup("false");
    case JSON_NULL:
        return strdup(empty);
    case JSON_ARRAY:
        if (json_array_size(v) == 0)
            return strdup(empty);
        for (size_t i = 0; i < json_array_size(v); i++) {
            char *item = value_text(json_array_get(v, i), sep, empty), *grown;
            if (item == NULL || (grown = realloc(out, len + strlen(sep) + strlen(item) + 1)) == NULL) {
                free(item);
                free(out);
                return NULL;
            }
            out = grown;
            n = (size_t)sprintf(out + len, "%s%s", i ? sep : "", item);
            len += n;
            free(item);
        }
        return out;
    case JSON_OBJECT:
    default:
        dumped = json_dumps(v, JSON_COMPACT);
        return dumped;
    }
}

struct column {
    const char *key, *title, *empty;
};

/* An aligned table of an array of objects. */
static void print_table(const json_t *rows, const struct column *cols, size_t ncols)
{
    size_t nrows = json_array_size(rows), width[16] = {0};
    char **cells = calloc((nrows + 1) * ncols, sizeof(*cells));

    if (cells == NULL)
        return;
    for (size_t c = 0; c < ncols && c < 16; c++)
        cells[c] = strdup(cols[c].title);
    for (size_t r = 0; r < nrows; r++)
        for (size_t c = 0; c < ncols; c++) {
            const json_t *v = json_object_get(json_array_get(rows, r), cols[c].key);
            cells[(r + 1) * ncols + c] = v ? value_text(v, ",", cols[c].empty) : strdup(cols[c].empty);
        }
    for (size_t i = 0; i < (nrows + 1) * ncols; i++)
        if (cells[i] && strlen(cells[i]) > width[i % ncols])
            width[i % ncols] = strlen(cells[i]);
    for (size_t r = 0; r <= nrows; r++)
        for (size_t c = 0; c < ncols; c++) {
            const char *cell = cells[r * ncols + c] ? cells[r * ncols + c] : "?";
            if (c + 1 < ncols)
                printf("%-*s  ", (int)width[c], cell);
            else
                printf("%s\n", cell);
        }
    for (size_t i = 0; i < (nrows + 1) * ncols; i++)
        free(cells[i]);
    free(cells);
}

/* An object, or an array of objects: printed as a table or with --json only. */
static int is_nested(const json_t *v)
{
    return json_is_object(v) || (json_is_array(v) && json_is_object(json_array_get(v, 0)));
}

/* "key  value" lines, keys aligned; the shape of status and of most results.
 * Nested objects (status's "stats") are for --json only; arrays of objects
 * (status's "targets") are the caller's tables. */
static void print_fields(const json_t *obj)
{
    const char *key;
    json_t *v;
    int width = 0;

    json_object_foreach((json_t *)obj, key, v)
        if (!is_nested(v) && (int)strlen(key) > width)
            width = (int)strlen(key);
    json_object_foreach((json_t *)obj, key, v) {
        if (is_nested(v))
            continue;
        char *text = value_text(v, ", ", "-");
        printf("%-*s  %s\n", width, key, text ? text : "?");
        free(text);
    }
}

static void print_result(const struct invocation *inv, const json_t *result)
{
    static const struct column services[] = {
        {"name", "SERVICE", "-"},       {"state", "STATE", "-"},     {"hosts", "HOSTS", "*"},
        {"path_prefix", "PREFIX", "/"}, {"active", "ACTIVE", "-"},   {"previous", "PREVIOUS", "-"},
        {"in_flight", "IN-FLIGHT", "0"},
    };
    static const struct column certs[] = {
        {"name", "NAME", "-"},          {"key_type", "KEY", "-"},    {"hosts", "HOSTS", "-"},
        {"not_after", "NOT-AFTER", "-"},
        {"days_left", "DAYS-LEFT", "-"}, {"source", "SOURCE", "-"},   {"last_attempt", "LAST-ATTEMPT", "-"},
        {"outcome", "OUTCOME", "-"},     {"next_check", "NEXT-CHECK", "-"},
    };
    static const struct column targets[] = {
        {"service", "SERVICE", "-"}, {"address", "TARGET", "-"},     {"role", "ROLE", "-"},
        {"health", "HEALTH", "-"},   {"in_flight", "IN-FLIGHT", "0"},
    };
    static const struct column expiry[] = {
        {"name", "CERTIFICATE", "-"}, {"key_type", "KEY", "-"}, {"not_after", "NOT-AFTER", "-"},
        {"days_left", "DAYS-LEFT", "-"},
    };
    const json_t *rows;

    if (inv->json) {
        char *s = json_dumps(result, JSON_INDENT(2));
        if (s)
            printf("%s\n", s);
        free(s);
        return;
    }
    if (strcmp(inv->cmd->name, "list") == 0 && json_is_array(rows = json_object_get(result, "services"))) {
        if (json_array_size(rows) == 0) {
            printf("no services\n");
            return;
        }
        print_table(rows, services, PX_ARRAY_LEN(services));
        /* then one row per target: its health and its requests in flight */
        json_t *flat = json_array();
        for (size_t i = 0; flat && i < json_array_size(rows); i++) {
            const json_t *svc = json_array_get(rows, i), *ts = json_object_get(svc, "targets");
            for (size_t j = 0; j < json_array_size(ts); j++) {
                json_t *t = json_copy(json_array_get(ts, j));
                if (t && json_object_get(svc, "name"))
                    json_object_set(t, "service", json_object_get(svc, "name"));
                json_array_append_new(flat, t);
            }
        }
        if (json_array_size(flat)) {
            printf("\n");
            print_table(flat, targets, PX_ARRAY_LEN(targets));
        }
        json_decref(flat);
        return;
    }
    if (strcmp(inv->cmd->name, "cert_status") == 0 &&
        json_is_array(rows = json_object_get(result, "certificates"))) {
        if (json_array_size(rows) == 0) {
            printf("no certificates\n");
            return;
        }
        print_table(rows, certs, PX_ARRAY_LEN(certs));
        /* why the last attempt failed, one line per certificate */
        for (size_t i = 0; i < json_array_size(rows); i++) {
            const json_t *row = json_array_get(rows, i), *e = json_object_get(row, "error");
            if (e)
                printf("%s: %s: %s\n", json_string_value(json_object_get(row, "name")),
                       json_string_value(json_object_get(e, "type")), json_string_value(json_object_get(e, "detail")));
        }
        return;
    }
    print_fields(result);
    if (strcmp(inv->cmd->name, "status") == 0 && json_is_object(json_object_get(result, "cluster"))) {
        /* one line: "cluster  redis up, 3 instances: a, b, c" */
        const json_t *cl = json_object_get(result, "cluster"), *ins = json_object_get(cl, "instances");
        printf("cluster  redis %s, %zu instance%s", json_string_value(json_object_get(cl, "redis")),
               json_array_size(ins), json_array_size(ins) == 1 ? "" : "s");
        for (size_t i = 0; i < json_array_size(ins); i++)
            printf("%s%s", i ? ", " : ": ", json_string_value(json_object_get(json_array_get(ins, i), "name")));
        printf("\n");
    }
    if (strcmp(inv->cmd->name, "status") == 0) {
        if (json_array_size(rows = json_object_get(result, "targets"))) {
            printf("\n");
            print_table(rows, targets, PX_ARRAY_LEN(targets));
        }
        if (json_array_size(rows = json_object_get(result, "certificates"))) {
            printf("\n");
            print_table(rows, expiry, PX_ARRAY_LEN(expiry));
        }
    }
}

/* ---- talking to the daemon ---- */

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = px_now_ms();
    return now >= deadline ? 0 : (int)(deadline - now > 60000 ? 60000 : deadline - now);
}

/* How long proxyctl waits for the answer: what the daemon may take plus a margin. */
static uint64_t time_limit_ms(const struct invocation *inv)
{
    const char *n = inv->cmd->name;

    if (strcmp(n, "deploy") == 0)
        return (uint64_t)px_ctl_arg_int(inv->args, "deploy_timeout_ms", PX_CTL_DEFAULT_DEPLOY_TIMEOUT_MS) +
               (uint64_t)px_ctl_arg_int(inv->args, "drain_timeout_ms", PX_CTL_DEFAULT_DRAIN_TIMEOUT_MS) +
               LIMIT_MARGIN_MS;
    if (strcmp(n, "rollback") == 0)
        return LIMIT_ROLLBACK_MS;
    if (strcmp(n, "cert_renew") == 0)
        return LIMIT_CERT_RENEW_MS;
    if (strcmp(n, "upgrade") == 0)
        return (uint64_t)px_ctl_arg_int(inv->args, "timeout_ms", PX_CTL_DEFAULT_UPGRADE_TIMEOUT_MS) +
               LIMIT_MARGIN_MS;
    return LIMIT_DEFAULT_MS;
}

static int unreachable(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "%s: ", pxctl_prog);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return EXIT_UNREACHABLE;
}

/* Handles one reply line. Returns -1 to read on, or the exit code. */
static int on_line(const struct invocation *inv, const char *line, size_t len)
{
    struct px_ctl_reply rep;
    const char *err;
    int rc = -1;

    if (len == 0)
        return -1;
    if ((err = px_ctl_reply_parse(line, len, &rep)) != NULL) {
        rc = unreachable("bad reply from the daemon: %s%s", err, "");
        goto done;
    }
    /* ours (id 1), or about the connection itself (id null: forbidden, line_too_long) */
    if (rep.id && !(json_is_integer(rep.id) && json_integer_value(rep.id) == 1))
        goto done;
    switch (rep.kind) {
    case PX_CTL_REPLY_PROGRESS:
        fprintf(stderr, "%s\n", rep.progress);
        break;
    case PX_CTL_REPLY_ERROR:
        if (inv->refusal) {
            snprintf(inv->refusal->code, sizeof(inv->refusal->code), "%s", rep.code);
            snprintf(inv->refusal->message, sizeof(inv->refusal->message), "%s", rep.message);
        } else {
            fprintf(stderr, "%s: %s%s%s\n", pxctl_prog, rep.code, *rep.message ? ": " : "", rep.message);
        }
        rc = EXIT_REFUSED;
        break;
    case PX_CTL_REPLY_OK:
        print_result(inv, rep.result);
        rc = fflush(stdout) == 0 ? EXIT_DONE : EXIT_REFUSED;
        break;
    }
done:
    px_ctl_reply_clear(&rep);
    return rc;
}

static int run(const struct invocation *inv)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char *req = NULL, *buf = NULL;
    size_t reqlen = 0, sent = 0, have = 0, cap = 0, scanned = 0;
    uint64_t limit = time_limit_ms(inv), deadline = px_now_ms() + limit;
    json_t *id = json_integer(1);
    int fd = -1, rc = -1;

    if (strlen(inv->socket) >= sizeof(sun.sun_path)) {
        rc = usage_error(NULL, "socket path too long: %s", inv->socket);
        goto out;
    }
    memcpy(sun.sun_path, inv->socket, strlen(inv->socket) + 1);
    /* progress lines on stderr as they arrive: proxyctl asks for them */
    if ((req = px_ctl_request_line_progress(id, inv->cmd->name, json_incref(inv->args), 1, &reqlen)) == NULL) {
        rc = unreachable("out of memory%s%s", "", "");
        goto out;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
        connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        rc = unreachable("cannot connect to %s: %s", inv->socket, strerror(errno));
        goto out;
    }
    while (rc < 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN | (sent < reqlen ? POLLOUT : 0)};
        int t = remaining_ms(deadline), r;
        char limit_text[32];
        ssize_t n;

        if (t == 0) {
            snprintf(limit_text, sizeof(limit_text), "%.0fs", (double)limit / 1000);
            rc = unreachable("no answer from the daemon within %s (the operation may still be running)",
                             limit_text, "");
            break;
        }
        if ((r = poll(&p, 1, t)) < 0 && errno != EINTR) {
            rc = unreachable("poll: %s%s", strerror(errno), "");
            break;
        }
        if (r <= 0)
            continue;
        if (sent < reqlen && (p.revents & POLLOUT)) {
            if ((n = send(fd, req + sent, reqlen - sent, MSG_NOSIGNAL)) > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                sent = reqlen; /* the daemon hung up; read what it said (forbidden) */
        }
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (cap - have < 65536) {
            char *g;
            if (cap > PX_CTL_REPLY_MAX + 65536 || (g = realloc(buf, cap + 65536)) == NULL) {
                rc = unreachable("reply too long%s%s", "", "");
                break;
            }
            buf = g;
            cap += 65536;
        }
        if ((n = read(fd, buf + have, cap - have)) < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            if (errno != ECONNRESET) {
                rc = unreachable("read: %s%s", strerror(errno), "");
                break;
            }
            n = 0;
        }
        if (n == 0) {
            rc = unreachable("the daemon closed the connection without answering%s%s", "", "");
            break;
        }
        have += (size_t)n;
        for (;;) {
            size_t line_len, used;
            enum px_ctl_frame fr = px_ctl_frame(buf, have, PX_CTL_REPLY_MAX, &scanned, &line_len, &used);
            if (fr == PX_CTL_FRAME_MORE)
                break;
            if (fr == PX_CTL_FRAME_TOO_LONG) {
                rc = unreachable("reply too long%s%s", "", "");
                break;
            }
            if ((rc = on_line(inv, buf, line_len)) >= 0)
                break;
            memmove(buf, buf + used, have - used);
            have -= used;
        }
    }
out:
    if (fd >= 0)
        close(fd);
    free(req);
    free(buf);
    json_decref(id);
    return rc;
}

int pxctl_call(const char *socket, const char *cmd, json_t *args, int json, struct pxctl_refusal *refusal)
{
    struct invocation inv = {.socket = socket, .json = json, .args = args, .refusal = refusal};

    if ((inv.cmd = px_ctl_command_find(cmd)) == NULL)
        return unreachable("no command %s%s", cmd, "");
    return run(&inv);
}

int main(int argc, char **argv)
{
    struct invocation inv = {0};
    const char *base = strrchr(argv[0], '/');
    int rc;

    signal(SIGPIPE, SIG_IGN);
    /* the same program installed as kamal-proxy takes kamal-proxy's command line */
    base = base ? base + 1 : argv[0];
    if (strcmp(base, "kamal-proxy") == 0) {
        pxctl_prog = "kamal-proxy";
        return px_kamal_main(argc, argv);
    }
    if ((inv.args = json_object()) == NULL)
        return EXIT_UNREACHABLE;
    inv.socket = getenv("PROXYCTL_SOCKET");
    if (inv.socket == NULL || *inv.socket == '\0')
        inv.socket = DEFAULT_SOCKET;
    if ((rc = parse_argv(argc, argv, &inv)) < 0)
        rc = run(&inv);
    json_decref(inv.args);
    return rc;
}
