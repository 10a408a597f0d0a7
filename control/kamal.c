/* kamal.c -- proxyctl installed as kamal-proxy: kamal-proxy 0.9's command
 * line, so the command lines Kamal 2.x generates drive proxyd unchanged.
 *
 *   kamal-proxy run [--bind ADDR] [--http-port N] [--https-port N] [--metrics-port N] [--debug]
 *                   [--http3] [--acme-directory URL] [--acme-ca-bundle FILE]
 *   kamal-proxy deploy SERVICE --target HOST:PORT ... [kamal-proxy's deploy flags]
 *   kamal-proxy remove|pause|resume SERVICE
 *   kamal-proxy stop SERVICE [--message TEXT] [--drain-timeout D]
 *   kamal-proxy list
 *
 * Flags follow Go (cobra/pflag, and Go's flag package): --name=value or
 * --name value, also -name; booleans --flag or --flag=false; durations
 * in Go's syntax (500ms, 0.5s, 1m30s); sizes in bytes; list flags repeat
 * and split on commas, as pflag's StringSlice. Each command becomes one
 * control-protocol request (the socket where kamal-proxy keeps its own);
 * `run` writes a proxyd config under ~/.config/kamal-proxy and execs
 * proxyd in the foreground. Exit codes are proxyctl's: 0 done, 1 refused
 * or failed (message on stderr), 2 usage, 3 no daemon. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "px/common.h"
#include "px/control.h"
#include "proxyctl.h"

/* What kamal-proxy itself answers for a flag or command proxyd does not offer. */
#define NOT_SUPPORTED "not_supported"

enum ktype {
    KT_STRS,      /* repeatable, comma-split: a JSON array */
    KT_STR,
    KT_BOOL,
    KT_DUR,       /* Go duration -> milliseconds */
    KT_PORT,      /* 1..65535 */
    KT_SIZE,      /* bytes (Go int64: decimal, 0x hex) */
    KT_NOTE,      /* a boolean accepted with a note on stderr; nothing sent */
    KT_DROP,      /* accepted, nothing sent (what proxyd does anyway) */
    KT_UNSUPPORTED,
};

struct kflag {
    const char *flag;
    enum ktype type;
    const char *arg;  /* the control protocol's argument, or the note */
};

/* kamal-proxy 0.9's deploy flags (cmd/deploy.go) and the deploy arguments they become. */
static const struct kflag deploy_flags[] = {
    {"target", KT_STRS, "targets"},
    {"host", KT_STRS, "hosts"},
    {"path-prefix", KT_STRS, "path_prefix"},
    {"strip-path-prefix", KT_BOOL, "strip_path_prefix"},
    {"tls", KT_BOOL, "tls"},
    {"tls-staging", KT_NOTE, "--tls-staging: proxyd takes its ACME directory from `kamal-proxy run "
                             "--acme-directory URL` (Let's Encrypt's staging URL there)"},
    {"tls-certificate-path", KT_STR, "tls_certificate_path"},
    {"tls-private-key-path", KT_STR, "tls_private_key_path"},
    {"tls-redirect", KT_BOOL, "tls_redirect"},
    {"canonical-host", KT_STR, "canonical_host"},
    {"deploy-timeout", KT_DUR, "deploy_timeout_ms"},
    {"drain-timeout", KT_DUR, "drain_timeout_ms"},
    {"health-check-path", KT_STR, "health_check_path"},
    {"health-check-interval", KT_DUR, "health_check_interval_ms"},
    {"health-check-timeout", KT_DUR, "health_check_timeout_ms"},
    {"health-check-port", KT_PORT, "health_check_port"},
    {"target-timeout", KT_DUR, "target_timeout_ms"},
    {"buffer-requests", KT_BOOL, "buffer_requests"},
    {"buffer-responses", KT_BOOL, "buffer_responses"},
    {"buffer-memory", KT_SIZE, "buffer_memory"},
    {"max-request-body", KT_SIZE, "max_request_body"},
    {"max-response-body", KT_SIZE, "max_response_body"},
    {"forward-headers", KT_BOOL, "forward_headers"},
    {"log-request-header", KT_STRS, "log_request_headers"},
    {"log-response-header", KT_STRS, "log_response_headers"},
    {"error-pages", KT_STR, "error_pages"},
    {"read-target", KT_UNSUPPORTED, "read targets"},
    {"read-target-websockets", KT_UNSUPPORTED, "read targets"},
    {"writer-affinity-timeout", KT_UNSUPPORTED, "read targets"},
};

static const struct kflag stop_flags[] = {
    {"message", KT_STR, "message"},
    /* proxyd's stop lets requests in flight finish; it never cuts them */
    {"drain-timeout", KT_DROP, NULL},
};

static const struct kflag pause_flags[] = {
    {"drain-timeout", KT_DROP, NULL},
    {"max-pause", KT_DUR, "max_pause_ms"},
};

/* `run`'s flags go to the config, not to a request: .arg names the field. */
static const struct kflag run_flags[] = {
    {"bind", KT_STR, "bind"},
    {"http-port", KT_PORT, "http_port"},
    {"https-port", KT_PORT, "https_port"},
    {"metrics-port", KT_PORT, "metrics_port"},
    {"debug", KT_BOOL, "debug"},
    {"http3", KT_BOOL, "http3"},
    {"acme-directory", KT_STR, "acme_directory"},
    {"acme-ca-bundle", KT_STR, "acme_ca_bundle"},
};

struct kcmd {
    const char *name;
    const char *proto;          /* the control command, NULL for run */
    int service;                /* takes SERVICE */
    const struct kflag *flags;
    size_t nflags;
};

static const struct kcmd kcmds[] = {
    {"run", NULL, 0, run_flags, PX_ARRAY_LEN(run_flags)},
    {"deploy", "deploy", 1, deploy_flags, PX_ARRAY_LEN(deploy_flags)},
    {"remove", "remove", 1, NULL, 0},
    {"pause", "pause", 1, pause_flags, PX_ARRAY_LEN(pause_flags)},
    {"resume", "resume", 1, NULL, 0},
    {"stop", "stop", 1, stop_flags, PX_ARRAY_LEN(stop_flags)},
    {"list", "list", 0, NULL, 0},
};

static void kusage(FILE *f)
{
    fprintf(f,
            "usage: kamal-proxy COMMAND [ARGS]   (proxyd's kamal-proxy compatible command line)\n\n"
            "  run [--bind ADDR] [--http-port 80] [--https-port 443] [--metrics-port N] [--debug] [--http3]\n"
            "      [--acme-directory URL] [--acme-ca-bundle FILE]\n"
            "      start proxyd in the foreground; config, state and certificates under ~/.config/kamal-proxy\n"
            "  deploy SERVICE --target HOST:PORT [--target ...] [--host NAME ...] [--path-prefix P ...]\n"
            "      [--strip-path-prefix=false] [--tls] [--tls-staging] [--tls-certificate-path F]\n"
            "      [--tls-private-key-path F] [--tls-redirect=false] [--canonical-host NAME]\n"
            "      [--deploy-timeout 30s] [--drain-timeout 30s] [--health-check-path /up]\n"
            "      [--health-check-interval 1s] [--health-check-timeout 5s] [--health-check-port N]\n"
            "      [--target-timeout 30s] [--buffer-requests] [--buffer-responses] [--buffer-memory BYTES]\n"
            "      [--max-request-body BYTES] [--max-response-body BYTES] [--forward-headers]\n"
            "      [--log-request-header NAME ...] [--log-response-header NAME ...] [--error-pages DIR]\n"
            "  remove SERVICE | pause SERVICE [--max-pause D] | resume SERVICE\n"
            "  stop SERVICE [--message TEXT] [--drain-timeout D]\n"
            "  list\n\n"
            "The socket: $KAMAL_PROXY_SOCKET, else $XDG_RUNTIME_DIR/kamal-proxy.sock, else "
            "/tmp/kamal-proxy.sock.\n"
            "Read targets and rollout answer not_supported. Exit status: 0 done; 1 refused or failed;\n"
            "2 usage error; 3 cannot reach proxyd.\n");
}

static int kusage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int kusage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "kamal-proxy: %s%s", cmd ? cmd : "", cmd ? ": " : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'kamal-proxy --help'.\n");
    return EXIT_USAGE;
}

static int not_supported(const char *what)
{
    fprintf(stderr, "kamal-proxy: %s: %s is not supported by proxyd\n", NOT_SUPPORTED, what);
    return EXIT_REFUSED;
}

/* ---- Go's value syntax ---- */

/* time.ParseDuration: [-+]? then one or more DECIMAL UNIT ("1h30m", "0.5s",
 * "500ms"), units ns us µs ms s m h; "0" alone. Rounded up to whole
 * milliseconds (a positive duration never becomes 0). Negative: an error. */
static const char *go_duration_ms(const char *s, uint64_t *out)
{
    static const struct {
        const char *u;
        double ns;
    } units[] = {{"ns", 1}, {"us", 1e3}, {"\xc2\xb5s", 1e3}, {"\xce\xbcs", 1e3}, {"ms", 1e6},
                 {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
    double total = 0;

    if (*s == '+')
        s++;
    if (*s == '-')
        return "must not be negative";
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return NULL;
    }
    if (*s == '\0')
        return "not a duration (Go syntax: 500ms, 0.5s, 1m30s)";
    while (*s) {
        const char *start = s;
        double v = 0, scale = 1;
        int digits = 0;
        while (*s >= '0' && *s <= '9')
            v = v * 10 + (*s++ - '0'), digits++;
        if (*s == '.') {
            s++;
            while (*s >= '0' && *s <= '9')
                scale /= 10, v += (*s++ - '0') * scale, digits++;
        }
        if (digits == 0 || s == start)
            return "not a duration (Go syntax: 500ms, 0.5s, 1m30s)";
        size_t k = 0, best = PX_ARRAY_LEN(units);
        for (; k < PX_ARRAY_LEN(units); k++) {
            size_t n = strlen(units[k].u);
            /* the longest unit that matches ("ms" before "m") */
            if (strncmp(s, units[k].u, n) == 0 && (best == PX_ARRAY_LEN(units) || n > strlen(units[best].u)))
                best = k;
        }
        if (best == PX_ARRAY_LEN(units))
            return "missing or unknown unit (ns, us, ms, s, m, h)";
        s += strlen(units[best].u);
        total += v * units[best].ns;
        if (total > 9.2e18)
            return "too long";
    }
    double ms = total / 1e6;
    uint64_t whole = (uint64_t)ms;
    *out = (double)whole < ms ? whole + 1 : whole;
    return NULL;
}

/* strconv.ParseBool. */
static int go_bool(const char *s, int *out)
{
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < PX_ARRAY_LEN(t); i++) {
        if (strcmp(s, t[i]) == 0)
            return *out = 1, 0;
        if (strcmp(s, f[i]) == 0)
            return *out = 0, 0;
    }
    return -1;
}

/* ---- parsing ---- */

struct kinv {
    const struct kcmd *cmd;
    const char *service;
    json_t *args;       /* what the request carries */
    json_t *given;      /* flag names given (an object used as a set) */
    int json;           /* list --json */
};

static const struct kflag *find_kflag(const struct kcmd *c, const char *name, size_t n)
{
    for (size_t i = 0; i < c->nflags; i++)
        if (strlen(c->flags[i].flag) == n && memcmp(c->flags[i].flag, name, n) == 0)
            return &c->flags[i];
    return NULL;
}

static int append_str(json_t *args, const char *key, const char *v, size_t n)
{
    json_t *arr = json_object_get(args, key);
    if (arr == NULL) {
        if ((arr = json_array()) == NULL || json_object_set_new(args, key, arr) != 0)
            return -1;
    }
    return json_array_append_new(arr, json_stringn(v, n));
}

/* One flag's value into k->args. Returns 0 or an exit code. */
static int set_kflag(struct kinv *k, const struct kflag *f, const char *v)
{
    const char *cmd = k->cmd->name, *err;
    uint64_t n;
    int b;
    char *end;

    json_object_set_new(k->given, f->flag, json_true());
    switch (f->type) {
    case KT_STRS:
        /* pflag's StringSlice: "a,b" is two entries */
        for (const char *p = v;;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (len == 0)
                return kusage_error(cmd, "--%s: empty value", f->flag);
            if (append_str(k->args, f->arg, p, len) != 0)
                return kusage_error(cmd, "--%s: not valid UTF-8", f->flag);
            if (comma == NULL)
                break;
            p = comma + 1;
        }
        return 0;
    case KT_STR:
        if (json_object_set_new(k->args, f->arg, json_string(v)) != 0)
            return kusage_error(cmd, "--%s: not valid UTF-8", f->flag);
        return 0;
    case KT_BOOL:
        if (go_bool(v, &b) != 0)
            return kusage_error(cmd, "--%s: invalid boolean value \"%s\"", f->flag, v);
        json_object_set_new(k->args, f->arg, json_boolean(b));
        return 0;
    case KT_DUR:
        if ((err = go_duration_ms(v, &n)) != NULL)
            return kusage_error(cmd, "--%s: \"%s\": %s", f->flag, v, err);
        if (n == 0 || n > (uint64_t)PX_CTL_DURATION_MAX_MS)
            return kusage_error(cmd, "--%s: \"%s\": must be more than 0 and at most 24h", f->flag, v);
        json_object_set_new(k->args, f->arg, json_integer((json_int_t)n));
        return 0;
    case KT_PORT:
        errno = 0;
        n = strtoull(v, &end, 10);
        if (*v < '0' || *v > '9' || *end != '\0' || errno || n < 1 || n > 65535)
            return kusage_error(cmd, "--%s: \"%s\": must be a port, 1..65535", f->flag, v);
        json_object_set_new(k->args, f->arg, json_integer((json_int_t)n));
        return 0;
    case KT_SIZE:
        errno = 0;
        n = strtoull(v, &end, 0);
        if (*v < '0' || *v > '9' || *end != '\0' || errno || n > INT64_MAX)
            return kusage_error(cmd, "--%s: \"%s\": must be a size in bytes", f->flag, v);
        json_object_set_new(k->args, f->arg, json_integer((json_int_t)n));
        return 0;
    case KT_NOTE:
        if (go_bool(v, &b) != 0)
            return kusage_error(cmd, "--%s: invalid boolean value \"%s\"", f->flag, v);
        if (b)
            fprintf(stderr, "kamal-proxy: note: %s\n", f->arg);
        return 0;
    case KT_DROP:
        return 0;
    case KT_UNSUPPORTED:
        fprintf(stderr, "kamal-proxy: %s: --%s (%s) is not supported by proxyd\n", NOT_SUPPORTED, f->flag, f->arg);
        return EXIT_REFUSED;
    }
    return EXIT_USAGE;
}

/* Returns -1 to go on, or an exit code. */
static int kparse(int argc, char **argv, struct kinv *k)
{
    int dashdash = 0, rc;

    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!dashdash && s[0] == '-' && s[1] != '\0') {
            if (strcmp(s, "--") == 0) {
                dashdash = 1;
                continue;
            }
            const char *name = s + (s[1] == '-' ? 2 : 1), *eq = strchr(name, '=');
            size_t n = eq ? (size_t)(eq - name) : strlen(name);
            if ((n == 4 && memcmp(name, "help", 4) == 0) || (n == 1 && *name == 'h')) {
                kusage(stdout);
                return EXIT_DONE;
            }
            if (strcmp(k->cmd->name, "list") == 0 && n == 4 && memcmp(name, "json", 4) == 0 && !eq) {
                k->json = 1;
                continue;
            }
            const struct kflag *f = find_kflag(k->cmd, name, n);
            if (f == NULL)
                return kusage_error(k->cmd->name, "unknown flag: %s", s);
            const char *v;
            if (f->type == KT_UNSUPPORTED)
                return set_kflag(k, f, "");
            if (f->type == KT_BOOL || f->type == KT_NOTE)
                v = eq ? eq + 1 : "true";     /* never the next word (Go) */
            else if (eq)
                v = eq + 1;
            else if (i + 1 < argc)
                v = argv[++i];
            else
                return kusage_error(k->cmd->name, "flag needs an argument: --%s", f->flag);
            if ((rc = set_kflag(k, f, v)) != 0)
                return rc;
            continue;
        }
        if (!k->cmd->service || k->service)
            return kusage_error(k->cmd->name, "unexpected argument \"%s\"", s);
        k->service = s;
    }
    if (k->cmd->service && k->service == NULL)
        return kusage_error(k->cmd->name, "missing SERVICE");
    if (k->service) {
        const char *err = px_ctl_check_service(k->service);
        if (err)
            return kusage_error(k->cmd->name, "SERVICE \"%s\": %s", k->service, err);
        json_object_set_new(k->args, "service", json_string(k->service));
    }
    return -1;
}

/* ---- deploy ---- */

static int given(const struct kinv *k, const char *flag)
{
    return json_object_get(k->given, flag) != NULL;
}

/* kamal-proxy's defaults that differ from a proxyd deploy's, sent unless the
 * flag was given. They are "implied": a proxyd that does not know the
 * argument yet refuses it, and the deploy is retried without it (a note on
 * stderr) rather than failing a release over a default. */
static int deploy_translate(struct kinv *k, json_t *implied)
{
    json_t *pp = json_object_get(k->args, "path_prefix");
    int tls = json_is_true(json_object_get(k->args, "tls"));

    if (json_object_get(k->args, "targets") == NULL)
        return kusage_error("deploy", "--target HOST:PORT is required");
    int prefixed = 0;
    for (size_t i = 0; pp && i < json_array_size(pp); i++)
        prefixed |= strcmp(json_string_value(json_array_get(pp, i)), "/") != 0;
    /* one prefix as the string every proxyd takes, several as a list */
    if (pp && json_array_size(pp) == 1)
        json_object_set(k->args, "path_prefix", json_array_get(pp, 0)); /* drops pp */
    if (!given(k, "strip-path-prefix") && prefixed) {
        json_object_set_new(k->args, "strip_path_prefix", json_true()); /* kamal-proxy: default true */
        json_array_append_new(implied, json_string("strip_path_prefix"));
    }
    if (!given(k, "tls-redirect") && !tls) {
        /* kamal-proxy serves a service without --tls over plain HTTP: no
         * redirect_https for it (`run` sets redirect_https = yes for the others) */
        json_object_set_new(k->args, "tls_redirect", json_false());
        json_array_append_new(implied, json_string("tls_redirect"));
    }
    if (!given(k, "forward-headers")) {
        json_object_set_new(k->args, "forward_headers", json_boolean(!tls)); /* kamal-proxy: !tls */
        json_array_append_new(implied, json_string("forward_headers"));
    }
    if (!given(k, "target-timeout")) {
        json_object_set_new(k->args, "target_timeout_ms", json_integer(30000)); /* kamal-proxy: 30s */
        json_array_append_new(implied, json_string("target_timeout_ms"));
    }
    if (!given(k, "buffer-requests")) {
        json_object_set_new(k->args, "buffer_requests", json_false()); /* kamal-proxy: off */
        json_array_append_new(implied, json_string("buffer_requests"));
    }
    return -1;
}

/* "KEY: unknown argument of deploy" about an implied KEY: its index, or -1. */
static int implied_refused(const struct pxctl_refusal *r, const json_t *implied)
{
    if (strcmp(r->code, "bad_request") != 0)
        return -1;
    for (size_t i = 0; i < json_array_size(implied); i++) {
        const char *key = json_string_value(json_array_get(implied, i));
        size_t n = strlen(key);
        if (strncmp(r->message, key, n) == 0 && strncmp(r->message + n, ": unknown argument", 18) == 0)
            return (int)i;
    }
    return -1;
}

static const char *socket_path(char *buf, size_t n)
{
    const char *s = getenv("KAMAL_PROXY_SOCKET"), *x = getenv("XDG_RUNTIME_DIR");

    if (s && *s)
        return s;
    if (x && *x) {
        snprintf(buf, n, "%s/kamal-proxy.sock", x);
        return buf;
    }
    return "/tmp/kamal-proxy.sock";
}

static int send_request(struct kinv *k, json_t *implied)
{
    char sbuf[PATH_MAX];
    const char *sock = socket_path(sbuf, sizeof(sbuf));
    struct pxctl_refusal r;
    int rc;

    for (;;) {
        memset(&r, 0, sizeof(r));
        rc = pxctl_call(sock, k->cmd->proto, k->args, k->json, &r);
        if (rc != EXIT_REFUSED || r.code[0] == '\0')
            return rc;
        int i = implied ? implied_refused(&r, implied) : -1;
        if (i < 0)
            break;
        const char *key = json_string_value(json_array_get(implied, (size_t)i));
        fprintf(stderr, "kamal-proxy: note: this proxyd does not take %s yet: deploying with its default\n", key);
        json_object_del(k->args, key);
        json_array_remove(implied, (size_t)i);
    }
    fprintf(stderr, "kamal-proxy: %s%s%s\n", r.code, *r.message ? ": " : "", r.message);
    return rc;
}

/* ---- run ---- */

struct runopts {
    const char *bind;
    long http_port, https_port, metrics_port;
    int debug, http3;
    const char *acme_directory, *acme_ca_bundle;
};

static long env_port(const char *name, long dflt)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (v == NULL || *v == '\0')
        return dflt;
    n = strtol(v, &end, 10);
    return *end == '\0' && n >= 1 && n <= 65535 ? n : -1;
}

static int mkdirs(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, mode) != 0 && errno != EEXIST ? -1 : 0;
}

/* "ADDR:PORT" as proxyd's listen keys take it ("" = every address). */
static void listen_addr(char *buf, size_t n, const char *bind, long port)
{
    if (bind == NULL || *bind == '\0')
        snprintf(buf, n, "*:%ld", port);
    else if (strchr(bind, ':') && bind[0] != '[')
        snprintf(buf, n, "[%s]:%ld", bind, port);
    else
        snprintf(buf, n, "%s:%ld", bind, port);
}

/* A self-signed default certificate for names no certificate covers yet
 * (proxyd's [tls] needs one; kamal-proxy fails those handshakes instead).
 * Made once with the openssl command; 0 when the files exist. */
static int default_cert(const char *crt, const char *key)
{
    if (access(crt, R_OK) == 0 && access(key, R_OK) == 0)
        return 0;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        umask(077);
        execlp("openssl", "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
               "-nodes", "-days", "3650", "-subj", "/CN=kamal-proxy", "-keyout", key, "-out", crt, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* proxyd beside this binary, else in PATH. */
static void exec_proxyd(const char *self, const char *conf)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);

    if (n > 0) {
        path[n] = '\0';
    } else {
        snprintf(path, sizeof(path), "%s", self);
    }
    char *slash = strrchr(path, '/');
    if (slash && (size_t)(slash - path) + sizeof("/proxyd") <= sizeof(path)) {
        strcpy(slash + 1, "proxyd");
        if (access(path, X_OK) == 0)
            execl(path, "proxyd", "-c", conf, (char *)NULL);
    }
    execlp("proxyd", "proxyd", "-c", conf, (char *)NULL);
    fprintf(stderr, "kamal-proxy: run: cannot start proxyd (not beside %s, nor in PATH): %s\n", self,
            strerror(errno));
}

static int run_cmd(struct kinv *k, const char *self)
{
    struct runopts o = {.bind = json_string_value(json_object_get(k->args, "bind")),
                        .acme_directory = json_string_value(json_object_get(k->args, "acme_directory")),
                        .acme_ca_bundle = json_string_value(json_object_get(k->args, "acme_ca_bundle"))};
    const char *home = getenv("HOME"), *dbg = getenv("DEBUG");
    char dir[PATH_MAX], conf[PATH_MAX + 32], crt[PATH_MAX + 32], key[PATH_MAX + 32], tmp[PATH_MAX + 48];
    char sbuf[PATH_MAX], addr[300];
    json_t *v;
    int dbgenv = 0;

    o.http_port = (v = json_object_get(k->args, "http_port")) ? (long)json_integer_value(v) : env_port("HTTP_PORT", 80);
    o.https_port = (v = json_object_get(k->args, "https_port")) ? (long)json_integer_value(v)
                                                                : env_port("HTTPS_PORT", 443);
    o.metrics_port = (v = json_object_get(k->args, "metrics_port")) ? (long)json_integer_value(v) : 0;
    if (o.http_port < 0 || o.https_port < 0)
        return kusage_error("run", "HTTP_PORT and HTTPS_PORT must be ports, 1..65535");
    o.debug = json_is_true(json_object_get(k->args, "debug")) || (dbg && go_bool(dbg, &dbgenv) == 0 && dbgenv);
    o.http3 = json_is_true(json_object_get(k->args, "http3"));
    if (o.acme_directory && strncmp(o.acme_directory, "https://", 8) != 0)
        return kusage_error("run", "--acme-directory: must be an https:// URL");
    if (home == NULL || *home != '/')
        return kusage_error("run", "HOME must be set to an absolute path (state goes to ~/.config/kamal-proxy)");
    snprintf(dir, sizeof(dir), "%s/.config/kamal-proxy", home);
    if (mkdirs(dir, 0700) != 0) {
        fprintf(stderr, "kamal-proxy: run: cannot create %s: %s\n", dir, strerror(errno));
        return EXIT_REFUSED;
    }
    if (o.http3)
        fprintf(stderr, "kamal-proxy: run: --http3: HTTP/3 is not offered yet (no Alt-Svc is sent: "
                        "clients stay on HTTP/2)\n");
    if (o.debug)
        fprintf(stderr, "kamal-proxy: run: --debug: proxyd logs every request and every control command "
                        "already (access log on stdout, error log on stderr)\n");
    snprintf(conf, sizeof(conf), "%s/proxyd.ini", dir);
    snprintf(crt, sizeof(crt), "%s/default.crt", dir);
    snprintf(key, sizeof(key), "%s/default.key", dir);
    int https = default_cert(crt, key) == 0;
    if (!https)
        fprintf(stderr, "kamal-proxy: run: no default certificate in %s and the openssl command could not "
                        "make one: serving plain HTTP only\n", dir);

    snprintf(tmp, sizeof(tmp), "%s.tmp", conf);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        fprintf(stderr, "kamal-proxy: run: %s: %s\n", tmp, strerror(errno));
        return EXIT_REFUSED;
    }
    fprintf(f, "; written by `kamal-proxy run` at every start, from its flags and environment:\n"
               "; change those, not this file\n[proxy]\n");
    listen_addr(addr, sizeof(addr), o.bind, o.http_port);
    fprintf(f, "listen_http = %s\n", addr);
    if (https) {
        listen_addr(addr, sizeof(addr), o.bind, o.https_port);
        fprintf(f, "listen_https = %s\n", addr);
    }
    fprintf(f, "redirect_https = yes\ncontrol_socket = %s\ncontrol_socket_mode = 0600\nstate_file = %s/state.json\n"
               "temp_dir = %s/tmp\n",
            socket_path(sbuf, sizeof(sbuf)), dir, dir);
    if (o.metrics_port) {
        listen_addr(addr, sizeof(addr), o.bind, o.metrics_port);
        fprintf(f, "metrics_listen = %s\n", addr);
    }
    if (https)
        fprintf(f, "\n[tls]\ncertificate = %s\ncertificate_key = %s\n", crt, key);
    fprintf(f, "\n[acme]\nenabled = yes\nconfig_dir = %s/letsencrypt\n", dir);
    if (o.acme_directory)
        fprintf(f, "directory = %s\n", o.acme_directory);
    if (o.acme_ca_bundle)
        fprintf(f, "ca_bundle = %s\n", o.acme_ca_bundle);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 || rename(tmp, conf) != 0) {
        fprintf(stderr, "kamal-proxy: run: %s: %s\n", conf, strerror(errno));
        return EXIT_REFUSED;
    }
    fflush(stderr);
    exec_proxyd(self, conf);
    return EXIT_REFUSED;
}

/* ---- main ---- */

int px_kamal_main(int argc, char **argv)
{
    struct kinv k = {0};
    json_t *implied = NULL;
    int rc;

    if (argc < 2) {
        kusage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        kusage(stdout);
        return EXIT_DONE;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("kamal-proxy (proxyd %s)\n", PX_VERSION);
        return EXIT_DONE;
    }
    if (strcmp(name, "rollout") == 0)
        return not_supported("rollout (gradual rollouts to a second target set)");
    for (size_t i = 0; i < PX_ARRAY_LEN(kcmds) && !k.cmd; i++)
        if (strcmp(kcmds[i].name, name) == 0)
            k.cmd = &kcmds[i];
    if (k.cmd == NULL)
        return kusage_error(NULL, "unknown command \"%s\"", name);
    if ((k.args = json_object()) == NULL || (k.given = json_object()) == NULL ||
        (implied = json_array()) == NULL) {
        rc = EXIT_UNREACHABLE;
        goto out;
    }
    if ((rc = kparse(argc, argv, &k)) >= 0)
        goto out;
    if (k.cmd->proto == NULL) {
        rc = run_cmd(&k, argv[0]);
        goto out;
    }
    if (strcmp(k.cmd->name, "deploy") == 0 && (rc = deploy_translate(&k, implied)) >= 0)
        goto out;
    rc = send_request(&k, implied);
out:
    json_decref(k.args);
    json_decref(k.given);
    json_decref(implied);
    return rc;
}
