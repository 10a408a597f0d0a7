/* config.c -- INI file -> validated, immutable struct px_config.
 *
 * inih does the tokenizing; everything else is driven by the key tables
 * below ({key, type, field offset, bounds, default, validator}). Defaults
 * are written as text and go through the same parsers as the file, so a
 * default can never bypass validation.
 *
 * Line numbers: Debian's libinih is built without INI_HANDLER_LINENO, so we
 * feed it through our own reader (read_line). inih calls the handler for a
 * line right after the reader returned it, so the reader's count is the
 * handler's line. The reader also handles "[section]" lines itself (inih
 * never calls the handler for them, and truncates long section names).
 *
 * No globals: all parse state lives in struct pctx, inih's user pointer. */
#include "px/config.h"

#include <dirent.h>
#include <errno.h>
#include <ini.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "px/accesslog.h"
#include "px/common.h"
#include "px/headers.h"
#include "px/log.h"
#include "px/services.h"
#include "px/tls.h"

#define PX_TLS1_2 0x0303
#define PX_TLS1_3 0x0304
#define MAX_FILE_SIZE (4u << 20)
#define MAX_KEYS 64 /* per section table: the "seen" set is a uint64_t */
#define TOK_MAX 256 /* one list item; lines are shorter than inih's 200 anyway */
#define LIST_SEPS " \t"
#define REF_SEPS " \t," /* a route's limit/headers/suffix lists */

enum sect { S_NONE, S_PROXY, S_TLS, S_HEADERS, S_LIMIT, S_ROUTE, S_SERVICE, S_ACME, S_CLUSTER, S_COUNT };

struct pctx;

/* A pure validator: NULL or a static message. */
typedef const char *(*check_fn)(const char *v);
/* A setter for values that need more than one field or an allocation:
 * base is the section's struct. NULL or a message (static or pc->msg). */
typedef const char *(*set_fn)(struct pctx *pc, void *base, const char *v);

enum ktype {
    K_STR,      /* char *, validated by check */
    K_OPTSTR,   /* char *, "" -> NULL, else validated by check */
    K_BOOL,     /* int */
    K_U32,      /* uint32_t in [min, max] */
    K_DURATION, /* uint64_t ms in [min, max] */
    K_SIZE,     /* uint64_t bytes in [min, max] */
    K_OCTAL,    /* unsigned in [0, max] */
    K_ADDR,     /* struct px_addr + int flag at has_off; "" = absent */
    K_FN,       /* set() does it all */
};

#define KF_REPEAT 1 /* the key may appear more than once in a section */

struct keydef {
    const char *name;
    enum ktype type;
    size_t off;        /* field in the section's struct */
    uint64_t min, max; /* bounds for numbers */
    const char *def;   /* default, as it would be written in the file; NULL = none */
    check_fn check;
    set_fn set;
    size_t has_off;    /* K_ADDR only */
    int flags;
};

#define KSTR(n, o, d, c) {.name = n, .type = K_STR, .off = o, .def = d, .check = c}
#define KOPT(n, o, d, c) {.name = n, .type = K_OPTSTR, .off = o, .def = d, .check = c}
#define KBOOL(n, o, d) {.name = n, .type = K_BOOL, .off = o, .def = d}
#define KU32(n, o, lo, hi, d) {.name = n, .type = K_U32, .off = o, .min = lo, .max = hi, .def = d}
#define KDUR(n, o, d) {.name = n, .type = K_DURATION, .off = o, .min = 1, .max = UINT64_MAX, .def = d}
#define KSIZE(n, o, lo, hi, d) {.name = n, .type = K_SIZE, .off = o, .min = lo, .max = hi, .def = d}
#define KOCT(n, o, hi, d) {.name = n, .type = K_OCTAL, .off = o, .max = hi, .def = d}
#define KADDR(n, o, h) {.name = n, .type = K_ADDR, .off = o, .has_off = h}
#define KFN(n, s, d, f) {.name = n, .type = K_FN, .set = s, .def = d, .flags = f}

enum { UNNAMED = 0, NAMED, NAME_OPTIONAL };

struct sectdef {
    const char *kind;
    enum sect id;
    int named; /* UNNAMED "[kind]", NAMED "[kind NAME]", NAME_OPTIONAL either */
    const struct keydef *keys;
    size_t nkeys;
};

struct pctx {
    const char *file;
    const char *text;
    size_t len, pos;
    int lineno;
    int last_num, full_pending;

    struct px_config *cfg;
    enum sect sect;
    const struct sectdef *sd;
    void *base;             /* struct the current section's keys write to */
    char label[520];        /* "[service web]" */
    int sect_line;
    uint64_t seen;          /* keys given in the current section */
    int key_line[MAX_KEYS];
    int first_line[S_COUNT];/* unique sections: where they were opened */
    int listen_https_line, acme_enabled_line, default_service_line;
    int delay_line, nodelay_yes_line; /* current [limit]: nginx's delay= and nodelay exclude each other */

    char bad[TOK_MAX];      /* the offending list item, quoted in the message */
    char msg[160];          /* scratch for formatted validator messages */

    char **warns;
    size_t nwarns;

    int failed, err_line;
    char err[512];
};

/* ---- Accepted but not implemented yet --------------------------------
 * THE place to edit as features land. Returns 1 for a section (key NULL)
 * or a key that is parsed and validated but not acted on yet; the loader
 * then logs one warning per occurrence ("FILE:LINE: [acme]: accepted but
 * not implemented yet"). Delete a case when its feature ships. */
static int pending_feature(enum sect s, const char *key)
{
    (void)key;
    switch (s) {
    default:
        return 0;
    }
}

/* ---- errors and warnings ---- */

__attribute__((format(printf, 3, 4)))
static int fail(struct pctx *pc, int line, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (pc->failed)
        return 0;
    pc->failed = 1;
    pc->err_line = line;
    if (line > 0)
        n = snprintf(pc->err, sizeof(pc->err), "%s:%d: ", pc->file, line);
    else
        n = snprintf(pc->err, sizeof(pc->err), "%s: ", pc->file);
    if (n < 0 || (size_t)n >= sizeof(pc->err))
        return 0;
    va_start(ap, fmt);
    vsnprintf(pc->err + n, sizeof(pc->err) - (size_t)n, fmt, ap);
    va_end(ap);
    return 0;
}

/* Quote a user value for a message: printable ASCII as is, the rest as
 * \xHH, cut at 60 bytes. */
static const char *quote(const char *v, char *buf, size_t size)
{
    size_t o = 0, i;

    for (i = 0; v[i] && o + 8 < size; i++) {
        unsigned char c = (unsigned char)v[i];
        if (i == 60) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\')
            o += (size_t)snprintf(buf + o, size - o, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return buf;
}

static int fail_value(struct pctx *pc, const char *key, const char *msg, const char *value)
{
    char q[256];

    quote(pc->bad[0] ? pc->bad : value, q, sizeof(q));
    if (q[0] == '\0')
        return fail(pc, pc->lineno, "%s: %s", key, msg);
    return fail(pc, pc->lineno, "%s: %s (got \"%s\")", key, msg, q);
}

__attribute__((format(printf, 3, 4)))
static void warn(struct pctx *pc, int line, const char *fmt, ...)
{
    char buf[512], **w;
    va_list ap;
    int n;

    n = snprintf(buf, sizeof(buf), "%s:%d: ", pc->file, line);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    w = realloc(pc->warns, (pc->nwarns + 1) * sizeof(*w));
    if (w == NULL)
        return; /* a lost warning is not worth failing the load */
    pc->warns = w;
    if ((w[pc->nwarns] = strdup(buf)) != NULL)
        pc->nwarns++;
}

/* ---- small helpers ---- */

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if (is_ctl((unsigned char)*s))
            return 1;
    return 0;
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s + 32);
}

/* ASCII case-insensitive equality (proxyd never calls setlocale: the C
 * locale's strcasecmp is exactly that). */
#define ieq(a, b) (strcasecmp((a), (b)) == 0)

/* Grow an array by one zeroed element; NULL when out of memory (the old
 * array is then still valid and owned by the caller). */
static void *grow(void *arr, size_t n, size_t elem)
{
    char *p = realloc(arr, (n + 1) * elem);
    if (p != NULL)
        memset(p + n * elem, 0, elem);
    return p;
}

/* Append a copy of tok to the string list (*list, *n) unless it is there
 * already: NULL, or dup_err / "out of memory" (the list is unchanged). */
static const char *strlist_add(char ***list, size_t *n, const char *tok, const char *dup_err)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*list)[i], tok) == 0)
            return dup_err;
    char **g = grow(*list, *n, sizeof(**list));
    if (g == NULL)
        return "out of memory";
    *list = g;
    if ((g[*n] = strdup(tok)) == NULL)
        return "out of memory";
    (*n)++;
    return NULL;
}

/* Next token of *s separated by any of seps; copied into tok. Returns 1
 * with a token, 0 at the end, -1 when the token does not fit. */
static int next_tok(const char **s, const char *seps, char *tok, size_t toksz)
{
    const char *p = *s, *start;
    size_t n;

    while (*p && strchr(seps, *p))
        p++;
    if (*p == '\0') {
        *s = p;
        return 0;
    }
    start = p;
    while (*p && !strchr(seps, *p))
        p++;
    *s = p;
    n = (size_t)(p - start);
    if (n >= toksz)
        return -1;
    memcpy(tok, start, n);
    tok[n] = '\0';
    return 1;
}

/* ---- validators ---- */

static const char *check_path(const char *v)
{
    if (*v == '\0')
        return "must not be empty";
    if (has_ctl(v))
        return "control character in path";
    return NULL;
}

static const char *check_error_log(const char *v)
{
    if (strcmp(v, "off") == 0)
        return "cannot be off (use a path or -)";
    return check_path(v);
}

static const char *check_socket_path(const char *v)
{
    const char *err = check_path(v);

    if (err)
        return err;
    if (strlen(v) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return "too long for a Unix socket path (max 107 bytes)";
    return NULL;
}

static const char *check_redis(const char *v)
{
    struct px_redis_addr a;
    return px_parse_redis(v, &a);
}

/* Keys are binary-safe, but a prefix people can read in redis-cli. */
static const char *check_key_prefix(const char *v)
{
    if (*v == '\0' || strlen(v) > 64)
        return "must be 1..64 characters";
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "no spaces or control characters";
    return NULL;
}

static const char *check_instance(const char *v)
{
    if (strlen(v) > 64)
        return "must be at most 64 characters";
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
            return "no spaces, quotes or control characters";
    return NULL;
}

/* A [route] prefix is matched against the normalized request path (%XX
 * decoded, ";params" dropped, "//" merged, "." and ".." resolved), so it
 * must be normalized itself to ever match. */
static const char *check_route_prefix(const char *v)
{
    const char *err = px_parse_check_path(v);

    if (err)
        return err;
    if (strchr(v, '%'))
        return "must be written decoded (no %XX)";
    if (strchr(v, ';'))
        return "must not contain ';' (\";params\" are dropped from a path before matching)";
    for (const char *p = v; *p; p++) {
        if (*p != '/')
            continue;
        if (p[1] == '/')
            return "must not contain \"//\"";
        if (p[1] == '.' && (p[2] == '/' || p[2] == '\0' || (p[2] == '.' && (p[3] == '/' || p[3] == '\0'))))
            return "must not contain \".\" or \"..\" segments";
    }
    return NULL;
}

static const char *check_health_path(const char *v)
{
    return *v == '\0' ? NULL : px_parse_check_path(v);
}

static const char *check_user(const char *v)
{
    if (v[0] == '-' || strlen(v) > 32)
        return "bad user name";
    return px_parse_check_name(v) ? "bad user name" : NULL;
}

static const char *check_email(const char *v)
{
    const char *at = strchr(v, '@');

    if (*v == '\0')
        return NULL;
    if (at == NULL || at == v || at[1] == '\0' || strchr(at + 1, '@'))
        return "must be NAME@DOMAIN";
    for (; *v; v++)
        if (*v == ' ' || is_ctl((unsigned char)*v))
            return "must be NAME@DOMAIN";
    return NULL;
}

static const char *check_https_url(const char *v)
{
    if (strncmp(v, "https://", 8) != 0 || v[8] == '\0')
        return "must be an https:// URL";
    for (; *v; v++)
        if (*v == ' ' || is_ctl((unsigned char)*v))
            return "must be an https:// URL";
    return NULL;
}

/* The list as the TLS context will take it (SSL_CTX_set_cipher_list, as
 * tls.c does), so that a list OpenSSL rejects is an error with FILE:LINE
 * in -t and a reload, not one found later while building the context. */
static const char *check_ciphers(const char *v)
{
    if (*v == '\0')
        return "must not be empty";
    if (has_ctl(v))
        return "control character in cipher list";
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return "cannot check it (out of memory)";
    int ok = SSL_CTX_set_cipher_list(ctx, v) == 1;
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return ok ? NULL : "no cipher of the list is known to OpenSSL (see `openssl ciphers`)";
}

static const char msg_no_wildcard[] = "wildcards are not allowed here";

/* A host name as clients send it in Host/SNI, lowercased in place.
 * allow_wild: "*.example.com" is accepted. */
static const char *check_host(char *h, int allow_wild)
{
    const char *p = h;
    size_t label = 0, n;

    lower(h);
    if (h[0] == '*') {
        if (!allow_wild)
            return msg_no_wildcard;
        if (h[1] != '.')
            return "a wildcard must be written *.SUFFIX";
        p = h + 2;
    }
    n = strlen(p);
    if (n == 0 || n > 253)
        return "bad host name";
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.') {
            if (label == 0)
                return "bad host name";
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return c == '*' ? "a wildcard must be written *.SUFFIX"
                            : c == ':' ? "bad host name (no port here)" : "bad host name";
        if (++label > 63)
            return "bad host name";
    }
    return label == 0 ? "bad host name" : NULL;
}

/* ---- setters (K_FN) ---- */

static const char *set_workers(struct pctx *pc, void *base, const char *v)
{
    struct px_config *cfg = base;
    uint64_t n;
    const char *p = v;

    (void)pc;
    if (strcmp(v, "auto") == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->workers = cpus < 1 ? 1 : cpus > 256 ? 256 : (int)cpus;
        return NULL;
    }
    if (px_parse_u64(&p, &n) != NULL || *p != '\0' || n < 1 || n > 256)
        return "must be auto or 1..256";
    cfg->workers = (int)n;
    return NULL;
}

/* default_service = NAME: checked against the [service] sections at the end. */
static const char *set_default_service(struct pctx *pc, void *base, const char *v)
{
    struct px_config *cfg = base;
    const char *err;
    char *s = NULL;

    if (*v != '\0') {
        if ((err = px_parse_check_name(v)) != NULL)
            return err;
        if ((s = strdup(v)) == NULL)
            return "out of memory";
    }
    free(cfg->default_service);
    cfg->default_service = s;
    pc->default_service_line = pc->lineno;
    return NULL;
}

static const char *set_trusted_proxies(struct pctx *pc, void *base, const char *v)
{
    struct px_config *cfg = base;
    struct px_cidr *set = NULL, *g;
    size_t n = 0;
    char tok[TOK_MAX];
    const char *err = NULL;
    int r;

    while ((r = next_tok(&v, " \t,", tok, sizeof(tok))) != 0) {
        if (r < 0) {
            err = "entry too long";
            goto fail;
        }
        if ((g = grow(set, n, sizeof(*set))) == NULL) {
            err = "out of memory";
            goto fail;
        }
        set = g;
        if ((err = px_cidr_parse(tok, &set[n])) != NULL) {
            snprintf(pc->bad, sizeof(pc->bad), "%s", tok);
            goto fail;
        }
        n++;
    }
    free(cfg->trusted_proxies);
    cfg->trusted_proxies = set;
    cfg->ntrusted_proxies = n;
    return NULL;
fail:
    free(set);
    return err;
}

/* A space-separated list of host names -> lowercase, unique. */
static const char *parse_hosts(struct pctx *pc, const char *v, int allow_wild, char ***out, size_t *nout)
{
    char **list = NULL;
    size_t n = 0;
    char tok[TOK_MAX];
    const char *err = NULL;
    int r;

    while ((r = next_tok(&v, LIST_SEPS, tok, sizeof(tok))) != 0) {
        if (r < 0) {
            err = "bad host name";
            goto fail;
        }
        snprintf(pc->bad, sizeof(pc->bad), "%s", tok);
        if ((err = check_host(tok, allow_wild)) != NULL)
            goto fail;
        if ((err = strlist_add(&list, &n, tok, "duplicate host")) != NULL)
            goto fail;
    }
    pc->bad[0] = '\0';
    *out = list;
    *nout = n;
    return NULL;
fail:
    px_strv_free(list, n);
    return err;
}

static const char *set_hosts(struct pctx *pc, void *base, const char *v)
{
    struct px_service_conf *s = base;
    char **list;
    size_t n;
    const char *err = parse_hosts(pc, v, 1, &list, &n);

    if (err)
        return err;
    px_strv_free(s->hosts, s->nhosts);
    s->hosts = list;
    s->nhosts = n;
    return NULL;
}

/* log_request_headers / log_response_headers: header names, space-separated. */
static const char *parse_log_headers(struct pctx *pc, const char *v, char ***out, size_t *nout)
{
    char **list = NULL, **g;
    size_t n = 0;
    char tok[TOK_MAX];
    const char *err = NULL;
    int r;

    while ((r = next_tok(&v, LIST_SEPS, tok, sizeof(tok))) != 0) {
        snprintf(pc->bad, sizeof(pc->bad), "%s", r < 0 ? "" : tok);
        if (r < 0 || (err = px_parse_check_header_name(tok)) != NULL || n == PX_LOG_HEADERS_MAX) {
            err = err ? err : r < 0 ? "header name too long" : "at most 16 headers";
            px_strv_free(list, n);
            return err;
        }
        if ((g = grow(list, n, sizeof(*list))) == NULL || (list = g, (g[n] = strdup(tok)) == NULL)) {
            px_strv_free(list, n);
            return "out of memory";
        }
        n++;
    }
    pc->bad[0] = '\0';
    *out = list;
    *nout = n;
    return NULL;
}

static const char *set_log_request_headers(struct pctx *pc, void *base, const char *v)
{
    struct px_service_conf *s = base;
    px_strv_free(s->log_request_headers, s->nlog_request_headers);
    s->log_request_headers = NULL, s->nlog_request_headers = 0;
    return parse_log_headers(pc, v, &s->log_request_headers, &s->nlog_request_headers);
}

static const char *set_log_response_headers(struct pctx *pc, void *base, const char *v)
{
    struct px_service_conf *s = base;
    px_strv_free(s->log_response_headers, s->nlog_response_headers);
    s->log_response_headers = NULL, s->nlog_response_headers = 0;
    return parse_log_headers(pc, v, &s->log_response_headers, &s->nlog_response_headers);
}

static const char *set_access_log_format(struct pctx *pc, void *base, const char *v)
{
    struct px_config *cfg = base;
    if (strcmp(v, "json") == 0)
        cfg->access_log_format = PX_ACCESS_JSON;
    else if (strcmp(v, "combined") == 0)
        cfg->access_log_format = PX_ACCESS_COMBINED;
    else
        return "must be json or combined";
    return NULL;
}

static const char *set_storage(struct pctx *pc, void *base, const char *v)
{
    struct px_acme_conf *a = base;
    PX_UNUSED(pc);
    if (strcmp(v, "file") == 0)
        a->storage_redis = 0;
    else if (strcmp(v, "redis") == 0)
        a->storage_redis = 1;
    else
        return "must be file or redis";
    return NULL;
}

static const char *set_domains(struct pctx *pc, void *base, const char *v)
{
    struct px_acme_conf *a = base;
    char **list;
    size_t n;
    const char *err = parse_hosts(pc, v, 0, &list, &n);

    if (err)
        return err == msg_no_wildcard ? "wildcards need DNS-01 challenges (not supported)" : err;
    px_strv_free(a->domains, a->ndomains);
    a->domains = list;
    a->ndomains = n;
    return NULL;
}

/* path_prefix = /app /api: the first is path_prefix, the others the
 * service's more_prefixes. */
static const char *set_path_prefix(struct pctx *pc, void *base, const char *v)
{
    struct px_service_conf *s = base;
    char **list = NULL, tok[TOK_MAX];
    size_t n = 0;
    const char *err = NULL;
    int r;

    while ((r = next_tok(&v, LIST_SEPS, tok, sizeof(tok))) != 0) {
        snprintf(pc->bad, sizeof(pc->bad), "%s", tok);
        if (r < 0 || (err = px_parse_check_path(tok)) != NULL) {
            err = err ? err : "path too long";
            goto fail;
        }
        size_t k = strlen(tok);
        while (k > 1 && tok[k - 1] == '/') /* "/app/" routes like "/app" */
            tok[--k] = '\0';
        if ((err = strlist_add(&list, &n, tok, "given twice")) != NULL)
            goto fail;
    }
    pc->bad[0] = '\0';
    if (n == 0) {
        err = "needs at least one path";
        goto fail;
    }
    free(s->path_prefix);
    px_strv_free(s->opts.more_prefixes, s->opts.nmore_prefixes);
    s->path_prefix = list[0];
    s->opts.more_prefixes = n > 1 ? list + 0 : NULL;
    if (n > 1)
        memmove(list, list + 1, (n - 1) * sizeof(*list));
    else
        free(list);
    s->opts.nmore_prefixes = n - 1;
    return NULL;
fail:
    px_strv_free(list, n);
    return err;
}

/* [service] keys whose empty value means "unset". */
static const char *set_target_timeout(struct pctx *pc, void *base, const char *v)
{
    struct px_service_conf *s = base;
    uint64_t ms = 0;
    const char *err = *v ? px_parse_duration_ms(v, &ms) : NULL;
    (void)pc;
    if (err == NULL && *v && (ms < 1 || ms > 86400000))
        err = "must be 1ms..24h (empty: upstream_read_timeout)";
    if (err == NULL)
        s->opts.target_timeout_ms = ms;
    return err;
}

static const char *set_hc_port(struct pctx *pc, void *base, const char *v)
{
    struct px_service_conf *s = base;
    uint64_t n = 0;
    const char *p = v;
    (void)pc;
    if (*v && (px_parse_u64(&p, &n) != NULL || *p != '\0' || n < 1 || n > 65535))
        return "must be a port 1..65535 (empty: the target's)";
    s->opts.health_check_port = (unsigned)n;
    return NULL;
}

static const char *set_tls_redirect(struct pctx *pc, void *base, const char *v)
{
    struct px_service_conf *s = base;
    int b;
    const char *err = px_parse_bool(v, &b);
    (void)pc;
    if (err == NULL)
        s->opts.no_tls_redirect = !b;
    return err;
}

static const char *set_canonical_host(struct pctx *pc, void *base, const char *v)
{
    struct px_service_conf *s = base;
    char h[TOK_MAX], *d = NULL;
    const char *err;
    (void)pc;
    if (*v) {
        if (strlen(v) >= sizeof(h))
            return "bad host name";
        strcpy(h, v);
        if ((err = check_host(h, 0)) != NULL)
            return err;
        if ((d = strdup(h)) == NULL)
            return "out of memory";
    }
    free(s->opts.canonical_host);
    s->opts.canonical_host = d;
    return NULL;
}

static const char *check_dir(const char *v)
{
    DIR *d;
    if (*v == '\0')
        return NULL;
    if (has_ctl(v))
        return "control character in path";
    if ((d = opendir(v)) == NULL)
        return errno == ENOENT ? "no such directory" : errno == ENOTDIR ? "not a directory" : "cannot read it";
    closedir(d);
    return NULL;
}

static const char *set_targets(struct pctx *pc, void *base, const char *v)
{
    struct px_service_conf *s = base;
    struct px_addr *list = NULL, *g;
    size_t n = 0;
    char tok[TOK_MAX];
    const char *err = NULL;
    int r;

    while ((r = next_tok(&v, LIST_SEPS, tok, sizeof(tok))) != 0) {
        if (r < 0) {
            err = "address too long";
            goto fail;
        }
        snprintf(pc->bad, sizeof(pc->bad), "%s", tok);
        if ((g = grow(list, n, sizeof(*list))) == NULL) {
            err = "out of memory";
            goto fail;
        }
        list = g;
        if ((err = px_addr_parse(tok, &list[n])) != NULL)
            goto fail;
        for (size_t i = 0; i < n; i++) {
            if (list[i].len == list[n].len && memcmp(&list[i].ss, &list[n].ss, list[n].len) == 0) {
                err = "duplicate target";
                goto fail;
            }
        }
        n++;
    }
    if (n == 0) {
        err = "needs at least one HOST:PORT";
        goto fail;
    }
    free(s->targets);
    s->targets = list;
    s->ntargets = n;
    return NULL;
fail:
    free(list);
    return err;
}

/* host = example.com www.example.com: the site's names, as a [service]'s
 * hosts (one route for the names of one nginx server block). */
static const char *set_route_host(struct pctx *pc, void *base, const char *v)
{
    struct px_route_conf *r = base;
    char **list;
    size_t n;
    const char *err = parse_hosts(pc, v, 1, &list, &n);

    if (err)
        return err;
    px_strv_free(r->hosts, r->nhosts);
    r->hosts = list;
    r->nhosts = n;
    return NULL;
}

/* Names of other sections ([limit NAME], [headers NAME]), space- or
 * comma-separated; a repeated key adds to the list. */
static const char *add_refs(struct pctx *pc, const char *v, struct px_name_ref **list, size_t *n)
{
    struct px_name_ref *g;
    char tok[TOK_MAX];
    const char *err;
    int r;

    while ((r = next_tok(&v, REF_SEPS, tok, sizeof(tok))) != 0) {
        if (r < 0)
            return "name must be 1..64 characters";
        snprintf(pc->bad, sizeof(pc->bad), "%s", tok);
        if ((err = px_parse_check_name(tok)) != NULL)
            return err;
        for (size_t i = 0; i < *n; i++)
            if (strcmp((*list)[i].name, tok) == 0)
                return "named twice";
        if ((g = grow(*list, *n, sizeof(*g))) == NULL)
            return "out of memory";
        *list = g;
        g[*n].line = pc->lineno;
        if ((g[*n].name = strdup(tok)) == NULL)
            return "out of memory";
        (*n)++;
    }
    pc->bad[0] = '\0';
    return NULL;
}

static const char *set_route_limits(struct pctx *pc, void *base, const char *v)
{
    struct px_route_conf *r = base;
    return add_refs(pc, v, &r->limits, &r->nlimits);
}

static const char *set_route_headers(struct pctx *pc, void *base, const char *v)
{
    struct px_route_conf *r = base;
    return add_refs(pc, v, &r->header_sets, &r->nheader_sets);
}

static const char *set_route_request_headers(struct pctx *pc, void *base, const char *v)
{
    struct px_route_conf *r = base;
    return add_refs(pc, v, &r->request_header_sets, &r->nrequest_header_sets);
}

/* File extensions: ".js .CSS" -> ".js" ".css" (matched case-insensitively
 * at the end of the path, the query left out). */
static const char *set_route_suffix(struct pctx *pc, void *base, const char *v)
{
    struct px_route_conf *r = base;
    char tok[TOK_MAX], **g;
    int rc;

    while ((rc = next_tok(&v, REF_SEPS, tok, sizeof(tok))) != 0) {
        if (rc < 0)
            return "suffix too long";
        snprintf(pc->bad, sizeof(pc->bad), "%s", tok);
        if (tok[0] != '.' || tok[1] == '\0')
            return "must be a file extension starting with '.' (e.g. .js)";
        for (const char *p = tok; *p; p++) {
            unsigned char c = (unsigned char)*p;
            if (c <= 0x20 || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '%')
                return "bad character in suffix";
        }
        lower(tok);
        for (size_t i = 0; i < r->nsuffixes; i++)
            if (strcmp(r->suffixes[i], tok) == 0)
                return "named twice";
        if ((g = grow(r->suffixes, r->nsuffixes, sizeof(*g))) == NULL)
            return "out of memory";
        r->suffixes = g;
        if ((g[r->nsuffixes] = strdup(tok)) == NULL)
            return "out of memory";
        r->nsuffixes++;
    }
    pc->bad[0] = '\0';
    return NULL;
}

/* nginx's delay=N: the first N excess requests pass at once, the rest of the
 * burst waits; giving it turns nodelay off. */
static const char *set_delay(struct pctx *pc, void *base, const char *v)
{
    struct px_limit_conf *l = base;
    const char *p = v;
    uint64_t n;

    (void)pc;
    if (px_parse_u64(&p, &n) != NULL || *p != '\0' || n > UINT32_MAX)
        return "must be a number";
    l->delay = (uint32_t)n;
    l->nodelay = 0;
    return NULL;
}

static const char *set_rate(struct pctx *pc, void *base, const char *v)
{
    struct px_limit_conf *l = base;

    (void)pc;
    return px_parse_rate(v, &l->rate_milli_per_s);
}

static const char *set_status(struct pctx *pc, void *base, const char *v)
{
    struct px_limit_conf *l = base;

    (void)pc;
    if (strcmp(v, "429") == 0)
        l->status = 429;
    else if (strcmp(v, "503") == 0)
        l->status = 503;
    else
        return "must be 429 or 503";
    return NULL;
}

/* sni = NAME:CERT:KEY (repeatable). */
static const char *set_sni(struct pctx *pc, void *base, const char *v)
{
    struct px_tls_conf *t = base;
    struct px_sni_conf e = {0}, *g;
    const char *c1 = strchr(v, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    char name[TOK_MAX];
    const char *err;
    size_t n;

    if (c1 == NULL || c2 == NULL)
        return "must be NAME:CERTIFICATE:KEY";
    n = (size_t)(c1 - v);
    if (n >= sizeof(name))
        return "bad host name";
    memcpy(name, v, n);
    name[n] = '\0';
    snprintf(pc->bad, sizeof(pc->bad), "%s", name);
    if ((err = check_host(name, 1)) != NULL)
        return err;
    pc->bad[0] = '\0';
    if (c2 == c1 + 1 || c2[1] == '\0')
        return "must be NAME:CERTIFICATE:KEY";
    /* A name may appear twice (an ECDSA and an RSA certificate), not with the same file. */
    for (size_t i = 0; i < t->nsni; i++)
        if (strcmp(t->sni[i].name, name) == 0 && strncmp(t->sni[i].cert, c1 + 1, (size_t)(c2 - c1 - 1)) == 0 &&
            t->sni[i].cert[c2 - c1 - 1] == '\0')
            return "duplicate server name and certificate";
    e.name = strdup(name);
    e.cert = strndup(c1 + 1, (size_t)(c2 - c1 - 1));
    e.key = strdup(c2 + 1);
    e.line = pc->lineno;
    if (e.name == NULL || e.cert == NULL || e.key == NULL ||
        (g = grow(t->sni, t->nsni, sizeof(*t->sni))) == NULL) {
        free(e.name);
        free(e.cert);
        free(e.key);
        return "out of memory";
    }
    t->sni = g;
    t->sni[t->nsni++] = e;
    return NULL;
}

static const char *set_protocols(struct pctx *pc, void *base, const char *v)
{
    struct px_tls_conf *t = base;
    char tok[TOK_MAX];
    int lo = 0, hi = 0, ver, r;

    while ((r = next_tok(&v, LIST_SEPS, tok, sizeof(tok))) != 0) {
        if (r < 0)
            return "unknown protocol";
        snprintf(pc->bad, sizeof(pc->bad), "%s", tok);
        if (ieq(tok, "TLSv1.2"))
            ver = PX_TLS1_2;
        else if (ieq(tok, "TLSv1.3"))
            ver = PX_TLS1_3;
        else if (ieq(tok, "TLSv1") || ieq(tok, "TLSv1.1") || ieq(tok, "SSLv2") || ieq(tok, "SSLv3"))
            return "not supported (TLSv1.2 and TLSv1.3 only)";
        else
            return "unknown protocol (TLSv1.2, TLSv1.3)";
        if (lo == 0 || ver < lo)
            lo = ver;
        if (ver > hi)
            hi = ver;
    }
    pc->bad[0] = '\0';
    if (lo == 0)
        return "needs TLSv1.2 and/or TLSv1.3";
    t->proto_min = lo;
    t->proto_max = hi;
    return NULL;
}

static const char *set_alpn(struct pctx *pc, void *base, const char *v)
{
    struct px_tls_conf *t = base;
    char tok[TOK_MAX], out[32] = "", *s;
    int r, h2 = 0, h1 = 0;

    while ((r = next_tok(&v, LIST_SEPS, tok, sizeof(tok))) != 0) {
        if (r < 0)
            return "unknown protocol (h2, http/1.1)";
        snprintf(pc->bad, sizeof(pc->bad), "%s", tok);
        if (strcmp(tok, "h2") == 0 && !h2)
            h2 = 1;
        else if (strcmp(tok, "http/1.1") == 0 && !h1)
            h1 = 1;
        else
            return h2 || h1 ? "unknown or repeated protocol (h2, http/1.1)" : "unknown protocol (h2, http/1.1)";
        if (out[0])
            strcat(out, " ");
        strcat(out, tok); /* order kept: it is the server's preference */
    }
    pc->bad[0] = '\0';
    if (out[0] == '\0')
        return "needs h2 and/or http/1.1";
    if ((s = strdup(out)) == NULL)
        return "out of memory";
    free(t->alpn);
    t->alpn = s;
    return NULL;
}

/* ---- key tables ---- */

#define DEFAULT_CIPHERS                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

#define P(f) offsetof(struct px_config, f)
static const struct keydef proxy_keys[] = {
    KFN("workers", set_workers, "auto", 0),
    KADDR("listen_http", P(listen_http), P(has_listen_http)),
    KADDR("listen_https", P(listen_https), P(has_listen_https)),
    KBOOL("redirect_https", P(redirect_https), "yes"),
    KSTR("health_path", P(health_path), "/health", check_health_path),
    KSTR("control_socket", P(control_socket), "/run/proxyd/control.sock", check_socket_path),
    KOCT("control_socket_mode", P(control_socket_mode), 0777, "0660"),
    KSTR("state_file", P(state_file), "/var/lib/proxyd/state.json", check_path),
    KSTR("access_log", P(access_log), "-", check_path),
    KSTR("error_log", P(error_log), "-", check_error_log),
    KOPT("user", P(user), "", check_user),
    KOPT("pid_file", P(pid_file), "", check_path),
    KU32("max_connections", P(max_connections), 1, 1000000, "10000"),
    KDUR("client_header_timeout", P(client_header_timeout_ms), "10s"),
    KDUR("client_body_timeout", P(client_body_timeout_ms), "60s"),
    KDUR("keepalive_timeout", P(keepalive_timeout_ms), "75s"),
    KSIZE("max_header_size", P(max_header_size), 1u << 10, 1u << 20, "16k"),
    KSIZE("max_body_size", P(max_body_size), 0, UINT64_MAX, "100m"),
    KSTR("temp_dir", P(temp_dir), "/var/lib/proxyd/tmp", check_path),
    KDUR("upstream_connect_timeout", P(upstream_connect_timeout_ms), "5s"),
    KDUR("upstream_send_timeout", P(upstream_send_timeout_ms), "60s"),
    KDUR("upstream_read_timeout", P(upstream_read_timeout_ms), "60s"),
    KU32("upstream_keepalive", P(upstream_keepalive), 0, 1000000, "256"),
    KDUR("shutdown_timeout", P(shutdown_timeout_ms), "30s"),
    KFN("trusted_proxies", set_trusted_proxies, "", 0),
    KADDR("metrics_listen", P(metrics_listen), P(has_metrics_listen)),
    KFN("default_service", set_default_service, "", 0),
    KFN("access_log_format", set_access_log_format, "json", 0),
    KBOOL("health_log", P(health_log), "yes"),
};
#undef P

#define T(f) offsetof(struct px_tls_conf, f)
static const struct keydef tls_keys[] = {
    KOPT("certificate", T(certificate), NULL, check_path),
    KOPT("certificate_key", T(certificate_key), NULL, check_path),
    KFN("sni", set_sni, NULL, KF_REPEAT),
    KFN("protocols", set_protocols, "TLSv1.2 TLSv1.3", 0),
    KSTR("ciphers", T(ciphers), DEFAULT_CIPHERS, check_ciphers),
    /* 0 turns the session cache off (benchmarks of full handshakes) */
    {.name = "session_timeout", .type = K_DURATION, .off = T(session_timeout_ms), .min = 0, .max = UINT64_MAX, .def = "1d"},
    KBOOL("session_tickets", T(session_tickets), "no"),
    KFN("alpn", set_alpn, "h2 http/1.1", 0),
};
#undef T

#define L(f) offsetof(struct px_limit_conf, f)
static const struct keydef limit_keys[] = {
    KFN("rate", set_rate, NULL, 0),
    KU32("burst", L(burst), 0, UINT32_MAX, "0"),
    KBOOL("nodelay", L(nodelay), "yes"),
    KFN("delay", set_delay, NULL, 0),
    KFN("status", set_status, "429", 0),
    KSIZE("zone_size", L(zone_size), 64u << 10, UINT64_MAX, "10m"),
    KBOOL("shared", L(shared), "no"),
};
#undef L

static const struct keydef route_keys[] = {
    KFN("host", set_route_host, NULL, 0),
    KFN("suffix", set_route_suffix, NULL, KF_REPEAT),
    KFN("limit", set_route_limits, NULL, KF_REPEAT),
    KFN("headers", set_route_headers, NULL, KF_REPEAT),
    KFN("request_headers", set_route_request_headers, NULL, KF_REPEAT),
    KBOOL("access_log", offsetof(struct px_route_conf, access_log), "on"),
};

#define S(f) offsetof(struct px_service_conf, f)
static const struct keydef service_keys[] = {
    KFN("hosts", set_hosts, "", 0),
    KFN("path_prefix", set_path_prefix, "/", 0),
    KFN("targets", set_targets, NULL, 0),
    KSTR("health_check_path", S(health_check_path), "/up", px_parse_check_path),
    /* a check every 100 ms at most (a backend is not a load test); a timeout past an hour is a typo */
    {.name = "health_check_interval", .type = K_DURATION, .off = S(health_check_interval_ms), .min = 100,
     .max = 3600 * 1000, .def = "1s"},
    {.name = "health_check_timeout", .type = K_DURATION, .off = S(health_check_timeout_ms), .min = 100,
     .max = 3600 * 1000, .def = "5s"},
    KFN("log_request_headers", set_log_request_headers, "Cache-Control Last-Modified User-Agent", 0),
    KFN("log_response_headers", set_log_response_headers, "", 0),
    KBOOL("strip_path_prefix", S(opts.strip_path_prefix), "no"),
    KFN("health_check_port", set_hc_port, "", 0),
    KFN("target_timeout", set_target_timeout, "", 0),
    KFN("canonical_host", set_canonical_host, "", 0),
    KFN("tls_redirect", set_tls_redirect, "yes", 0),
    KOPT("tls_certificate", S(opts.tls_certificate), "", check_path),
    KOPT("tls_certificate_key", S(opts.tls_certificate_key), "", check_path),
    KBOOL("forward_headers", S(opts.forward_headers), "no"),
    KOPT("error_pages", S(opts.error_pages), "", check_dir),
    KBOOL("buffer_requests", S(buffering.requests), "yes"),
    KBOOL("buffer_responses", S(buffering.responses), "no"),
    KSIZE("buffer_memory", S(buffering.memory), 0, UINT64_MAX, "1m"),
    KSIZE("max_request_body", S(buffering.max_request), 0, UINT64_MAX, "0"),
    KSIZE("max_response_body", S(buffering.max_response), 0, UINT64_MAX, "0"),
};
#undef S

#define A(f) offsetof(struct px_acme_conf, f)
static const struct keydef acme_keys[] = {
    KBOOL("enabled", A(enabled), "no"),
    KSTR("directory", A(directory), "https://acme-v02.api.letsencrypt.org/directory", check_https_url),
    KSTR("email", A(email), "", check_email),
    KFN("domains", set_domains, "", 0),
    KSTR("config_dir", A(config_dir), "/etc/proxyd/letsencrypt", check_path),
    KDUR("renew_before", A(renew_before_ms), "30d"),
    KDUR("check_interval", A(check_interval_ms), "12h"),
    KOPT("ca_bundle", A(ca_bundle), "", check_path),
    KDUR("retry_interval", A(retry_interval_ms), "5m"),
    KDUR("hook_timeout", A(hook_timeout_ms), "5m"),
    KFN("storage", set_storage, "file", 0),
    {.name = "lock_timeout", .type = K_DURATION, .off = A(lock_timeout_ms), .min = 1000, .max = 3600000, .def = "60s"},
};
#undef A

#define C(f) offsetof(struct px_cluster_conf, f)
static const struct keydef cluster_keys[] = {
    KSTR("redis", C(redis), "redis://127.0.0.1:6379/0", check_redis),
    KOPT("password_file", C(password_file), "", check_path),
    KSTR("key_prefix", C(key_prefix), "proxyd:", check_key_prefix),
    KOPT("instance", C(instance), "", check_instance),
    /* a Redis slower than this counts as down; under the pipeline's 1 s bound on a
     * parked limit check (past it the request would go on unlimited) */
    {.name = "timeout", .type = K_DURATION, .off = C(timeout_ms), .min = 1, .max = 900, .def = "50ms"},
    KOPT("secret_file", C(secret_file), "", check_path),
};
#undef C

_Static_assert(PX_ARRAY_LEN(proxy_keys) <= MAX_KEYS, "seen set too small");

#define SECT(k, id, named, keys) {k, id, named, keys, PX_ARRAY_LEN(keys)}
static const struct sectdef sections[] = {
    SECT("proxy", S_PROXY, UNNAMED, proxy_keys),
    SECT("tls", S_TLS, UNNAMED, tls_keys),
    {"headers", S_HEADERS, NAME_OPTIONAL, NULL, 0}, /* [headers]; [headers NAME]: a set for routes */
    SECT("limit", S_LIMIT, NAMED, limit_keys),
    SECT("route", S_ROUTE, NAMED, route_keys),
    SECT("service", S_SERVICE, NAMED, service_keys),
    SECT("acme", S_ACME, UNNAMED, acme_keys),
    SECT("cluster", S_CLUSTER, UNNAMED, cluster_keys),
};
#undef SECT

/* ---- applying one value ---- */

/* "must be 1..1000000", "must be 1k..1m", "must be at least 64k". */
static const char *bounds_msg(struct pctx *pc, const struct keydef *k)
{
    char lo[32], hi[32];
    uint64_t v[2] = {k->min, k->max};
    char *out[2] = {lo, hi};

    for (int i = 0; i < 2; i++) {
        if (k->type == K_SIZE && v[i] && v[i] % (1u << 20) == 0)
            snprintf(out[i], 32, "%llum", (unsigned long long)(v[i] >> 20));
        else if (k->type == K_SIZE && v[i] && v[i] % (1u << 10) == 0)
            snprintf(out[i], 32, "%lluk", (unsigned long long)(v[i] >> 10));
        else
            snprintf(out[i], 32, "%llu", (unsigned long long)v[i]);
    }
    if (k->max == UINT64_MAX)
        snprintf(pc->msg, sizeof(pc->msg), "must be at least %s", lo);
    else
        snprintf(pc->msg, sizeof(pc->msg), "must be %s..%s", lo, hi);
    return pc->msg;
}

static const char *set_value(struct pctx *pc, const struct keydef *k, void *base, const char *v)
{
    void *field = (char *)base + k->off;
    const char *err, *p = v;
    uint64_t n;
    int b;

    switch (k->type) {
    case K_STR:
    case K_OPTSTR: {
        char *s = NULL;
        if (k->type == K_STR || *v != '\0') {
            if (k->check && (err = k->check(v)) != NULL)
                return err;
            if ((s = strdup(v)) == NULL)
                return "out of memory";
        }
        free(*(char **)field);
        *(char **)field = s;
        return NULL;
    }
    case K_BOOL:
        if ((err = px_parse_bool(v, &b)) != NULL)
            return err;
        *(int *)field = b;
        return NULL;
    case K_U32:
        if (px_parse_u64(&p, &n) != NULL || *p != '\0')
            return k->max == UINT32_MAX ? "must be a number" : bounds_msg(pc, k);
        if (n < k->min || n > k->max)
            return bounds_msg(pc, k);
        *(uint32_t *)field = (uint32_t)n;
        return NULL;
    case K_OCTAL:
        for (n = 0; *p >= '0' && *p <= '7' && n <= k->max; p++)
            n = n * 8 + (uint64_t)(*p - '0');
        if (p == v || *p != '\0' || n > k->max)
            return "must be an octal mode like 0660";
        *(unsigned *)field = (unsigned)n;
        return NULL;
    case K_DURATION:
        if ((err = px_parse_duration_ms(v, &n)) != NULL)
            return err;
        if (n < k->min || n > k->max) {
            if (k->min <= 1 && k->max == UINT64_MAX)
                return "must be greater than 0";
            snprintf(pc->msg, sizeof(pc->msg), "must be %llums..%llus", (unsigned long long)k->min,
                     (unsigned long long)(k->max / 1000));
            return pc->msg;
        }
        *(uint64_t *)field = n;
        return NULL;
    case K_SIZE:
        if ((err = px_parse_size(v, &n)) != NULL)
            return err;
        if (n < k->min || n > k->max)
            return bounds_msg(pc, k);
        *(uint64_t *)field = n;
        return NULL;
    case K_ADDR: {
        struct px_addr a;
        int *has = (int *)((char *)base + k->has_off);
        if (*v == '\0') {
            *has = 0;
            return NULL;
        }
        memset(&a, 0, sizeof(a));
        if ((err = px_addr_parse(v, &a)) != NULL)
            return err;
        *(struct px_addr *)field = a;
        *has = 1;
        return NULL;
    }
    case K_FN:
        return k->set(pc, base, v);
    }
    return "internal error";
}

static int apply_defaults(struct pctx *pc, const struct sectdef *sd, void *base)
{
    for (size_t i = 0; i < sd->nkeys; i++) {
        const struct keydef *k = &sd->keys[i];
        const char *err;
        if (k->def == NULL)
            continue;
        pc->bad[0] = '\0';
        if ((err = set_value(pc, k, base, k->def)) != NULL)
            return fail(pc, 0, "default of %s: %s", k->name, err);
    }
    return 1;
}

/* ---- sections ---- */

static const struct sectdef *find_sect(enum sect id)
{
    for (size_t i = 0; i < PX_ARRAY_LEN(sections); i++)
        if (sections[i].id == id)
            return &sections[i];
    return NULL;
}

/* "[kind name]" seen by the reader (inner: between the brackets). */
/* The entry a [KIND NAME] section opens in one of the config's arrays:
 * NAME checked and unique, the array grown by one zeroed element whose
 * name (a copy) and line are set. *arr and *n are the array and its count;
 * size is an element's size, name_off and line_off where it keeps its name
 * and line. The new element, or NULL once fail() has said why. */
static void *add_named(struct pctx *pc, void **arr, size_t *n, size_t size, size_t name_off, size_t line_off,
                       const char *name, int line)
{
    const char *err = px_parse_check_name(name);
    if (err != NULL) {
        fail(pc, line, "%s: %s", pc->label, err);
        return NULL;
    }
    for (size_t i = 0; i < *n; i++) {
        const char *e = (const char *)*arr + i * size;
        if (strcmp(*(char *const *)(e + name_off), name) == 0) {
            fail(pc, line, "%s: duplicate section (first at line %d)", pc->label, *(const int *)(e + line_off));
            return NULL;
        }
    }
    char *g = grow(*arr, *n, size);
    if (g == NULL) {
        fail(pc, line, "out of memory");
        return NULL;
    }
    *arr = g;
    g += (*n)++ * size;
    *(int *)(g + line_off) = line;
    if ((*(char **)(g + name_off) = strdup(name)) == NULL) {
        fail(pc, line, "out of memory");
        return NULL;
    }
    return g;
}

static int begin_section(struct pctx *pc, char *inner)
{
    struct px_config *cfg = pc->cfg;
    const struct sectdef *sd = NULL;
    char *kind = inner, *name, *end;
    const char *err;
    int line = pc->lineno;

    while (is_space(*kind))
        kind++;
    end = kind + strlen(kind);
    while (end > kind && is_space(end[-1]))
        *--end = '\0';
    name = kind;
    while (*name && !is_space(*name))
        name++;
    if (*name) {
        *name++ = '\0';
        while (is_space(*name))
            name++;
    }
    if (*name)
        snprintf(pc->label, sizeof(pc->label), "[%s %s]", kind, name);
    else
        snprintf(pc->label, sizeof(pc->label), "[%s]", kind);

    for (size_t i = 0; i < PX_ARRAY_LEN(sections); i++)
        if (strcmp(sections[i].kind, kind) == 0)
            sd = &sections[i];
    if (sd == NULL) {
        char q[256];
        return fail(pc, line, "%s: unknown section", quote(pc->label, q, sizeof(q)));
    }
    if (sd->named == NAMED && *name == '\0')
        return fail(pc, line, "%s: needs a name: [%s %s]", pc->label, kind,
                    sd->id == S_ROUTE ? "PREFIX" : "NAME");
    if (sd->named == UNNAMED && *name)
        return fail(pc, line, "%s: [%s] takes no name", pc->label, kind);

    pc->sect = sd->id;
    pc->sd = sd;
    pc->sect_line = line;
    pc->seen = 0;
    pc->base = NULL;
    pc->delay_line = pc->nodelay_yes_line = 0;

    switch (sd->id) {
    case S_LIMIT:
        if ((pc->base = add_named(pc, (void **)&cfg->limits, &cfg->nlimits, sizeof(*cfg->limits),
                                  offsetof(struct px_limit_conf, name), offsetof(struct px_limit_conf, line), name,
                                  line)) == NULL)
            return 0; /* fail() said why */
        break;
    case S_ROUTE: {
        struct px_route_conf *g;
        /* Same prefix twice is fine for different hosts or suffixes:
         * checked at the end. */
        if ((err = check_route_prefix(name)) != NULL)
            return fail(pc, line, "%s: prefix %s", pc->label, err);
        if ((g = grow(cfg->routes, cfg->nroutes, sizeof(*g))) == NULL)
            return fail(pc, line, "out of memory");
        cfg->routes = g;
        g = &cfg->routes[cfg->nroutes++];
        g->line = line;
        if ((g->prefix = strdup(name)) == NULL)
            return fail(pc, line, "out of memory");
        g->prefix_len = strlen(name);
        if (g->prefix_len > 1 && name[g->prefix_len - 1] == '/') /* "/api/" matches like "/api" */
            g->prefix_len--;
        pc->base = g;
        break;
    }
    case S_HEADERS: {
        if (*name == '\0') {
            if (pc->first_line[S_HEADERS])
                return fail(pc, line, "%s: duplicate section (first at line %d)", pc->label,
                            pc->first_line[S_HEADERS]);
            pc->first_line[S_HEADERS] = line;
            cfg->has_headers_section = 1;
            break; /* base NULL: the [headers] list */
        }
        if ((pc->base = add_named(pc, (void **)&cfg->header_sets, &cfg->nheader_sets, sizeof(*cfg->header_sets),
                                  offsetof(struct px_header_set_conf, name),
                                  offsetof(struct px_header_set_conf, line), name, line)) == NULL)
            return 0; /* fail() said why */
        break;
    }
    case S_SERVICE:
        if ((pc->base = add_named(pc, (void **)&cfg->services, &cfg->nservices, sizeof(*cfg->services),
                                  offsetof(struct px_service_conf, name), offsetof(struct px_service_conf, line), name,
                                  line)) == NULL)
            return 0; /* fail() said why */
        break;
    default:
        if (pc->first_line[sd->id])
            return fail(pc, line, "%s: duplicate section (first at line %d)", pc->label,
                        pc->first_line[sd->id]);
        pc->first_line[sd->id] = line;
        if (sd->id == S_PROXY)
            pc->base = cfg;
        else if (sd->id == S_TLS)
            pc->base = &cfg->tls, cfg->tls.present = 1;
        else if (sd->id == S_ACME)
            pc->base = &cfg->acme, cfg->acme.present = 1;
        else if (sd->id == S_CLUSTER)
            pc->base = &cfg->cluster, cfg->cluster.present = 1, cfg->cluster.line = line;
        break;
    }
    /* [proxy], [tls] and [acme] got their defaults when the config was made. */
    if (sd->id == S_LIMIT || sd->id == S_ROUTE || sd->id == S_SERVICE)
        if (!apply_defaults(pc, sd, pc->base))
            return 0;
    if (pending_feature(sd->id, NULL))
        warn(pc, line, "%s: accepted but not implemented yet", pc->label);
    return 1;
}

/* ---- [headers] ---- */

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* One header line of [headers] (pc->base NULL) or of a [headers NAME] set. */
static int add_header(struct pctx *pc, const char *name, const char *value)
{
    /* Framing and hop-by-hop headers would corrupt the response. */
    static const char *const forbidden[] = {"content-length", "transfer-encoding", "connection",
                                            "keep-alive", "upgrade", "te", "trailer", "host"};
    struct px_config *cfg = pc->cfg;
    struct px_header_set_conf *set = pc->base;
    struct px_header_conf **list = set ? &set->headers : &cfg->headers, *g;
    size_t *n = set ? &set->nheaders : &cfg->nheaders;
    char q[256];
    int remove = name[0] == '-'; /* "-X-Powered-By =": remove it */

    if (remove)
        name++;
    if (*name == '\0')
        return fail(pc, pc->lineno, "-: missing header name to remove in %s", pc->label);
    for (const char *p = name; *p; p++)
        if (!is_tchar((unsigned char)*p))
            return fail(pc, pc->lineno, "%s: bad header name in %s", quote(name, q, sizeof(q)), pc->label);
    for (size_t i = 0; i < PX_ARRAY_LEN(forbidden); i++)
        if (ieq(name, forbidden[i]))
            return fail(pc, pc->lineno, "%s: cannot be %s in %s (framing and hop-by-hop headers are proxyd's)",
                        name, remove ? "removed" : "set", pc->label);
    if (remove && *value != '\0')
        return fail(pc, pc->lineno, "-%s: a removal takes no value (write \"-%s =\")", name, name);
    if (!remove && *value == '\0')
        return fail(pc, pc->lineno, "%s: empty header value", name);
    for (const char *p = value; *p; p++)
        if (is_ctl((unsigned char)*p) && *p != '\t')
            return fail_value(pc, name, "control character in header value", value);
    for (size_t i = 0; i < *n; i++)
        if (ieq((*list)[i].name, name))
            return fail(pc, pc->lineno, "%s: duplicate header in %s", name, pc->label);
    if ((g = grow(*list, *n, sizeof(*g))) == NULL)
        return fail(pc, pc->lineno, "out of memory");
    *list = g;
    g = &g[(*n)++];
    g->name = strdup(name);
    g->value = strdup(value);
    g->remove = remove;
    if (g->name == NULL || g->value == NULL)
        return fail(pc, pc->lineno, "out of memory");
    return 1;
}

/* ---- inih callbacks ---- */

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct pctx *pc = user;
    const struct keydef *k = NULL;
    const char *err;
    size_t idx;
    char q[256];

    (void)section; /* ours is pc->sect: inih truncates long section names */
    if (pc->failed)
        return 0;
    if (*name == '\0')
        return fail(pc, pc->lineno, "missing key name");
    if (pc->sect == S_NONE)
        return fail(pc, pc->lineno, "%s: key outside a section (add [proxy] above it)", quote(name, q, sizeof(q)));
    if (pc->sect == S_HEADERS)
        return add_header(pc, name, value);

    for (idx = 0; idx < pc->sd->nkeys; idx++) {
        if (strcmp(pc->sd->keys[idx].name, name) == 0) {
            k = &pc->sd->keys[idx];
            break;
        }
    }
    if (k == NULL)
        return fail(pc, pc->lineno, "%s: unknown key in %s", quote(name, q, sizeof(q)), pc->label);
    if (!(k->flags & KF_REPEAT) && (pc->seen & (1ull << idx)))
        return fail(pc, pc->lineno, "%s: duplicate key in %s (first at line %d)", name, pc->label,
                    pc->key_line[idx]);
    pc->seen |= 1ull << idx;
    pc->key_line[idx] = pc->lineno;

    pc->bad[0] = '\0';
    if ((err = set_value(pc, k, pc->base, value)) != NULL)
        return fail_value(pc, name, err, value);

    if (pc->sect == S_PROXY && strcmp(name, "listen_https") == 0)
        pc->listen_https_line = pc->lineno;
    if (pc->sect == S_ACME && strcmp(name, "enabled") == 0)
        pc->acme_enabled_line = pc->lineno;
    if (pc->sect == S_TLS && strcmp(name, "certificate") == 0)
        pc->cfg->tls.certificate_line = pc->lineno;
    if (pc->sect == S_TLS && strcmp(name, "certificate_key") == 0)
        pc->cfg->tls.certificate_key_line = pc->lineno;
    if (pc->sect == S_CLUSTER && strcmp(name, "secret_file") == 0)
        pc->cfg->cluster.secret_line = pc->lineno;
    if (pc->sect == S_ACME && strcmp(name, "storage") == 0)
        pc->cfg->acme.storage_line = pc->lineno;
    if (pc->sect == S_SERVICE && strcmp(name, "health_check_path") == 0)
        ((struct px_service_conf *)pc->base)->health_checks = 1;
    if (pc->sect == S_SERVICE && strcmp(name, "targets") == 0)
        ((struct px_service_conf *)pc->base)->targets_line = pc->lineno;
    if (pc->sect == S_LIMIT) {
        if (strcmp(name, "delay") == 0)
            pc->delay_line = pc->lineno;
        else if (strcmp(name, "nodelay") == 0 && ((struct px_limit_conf *)pc->base)->nodelay)
            pc->nodelay_yes_line = pc->lineno;
        if (pc->delay_line && pc->nodelay_yes_line)
            return fail(pc, pc->lineno, "%s: delay and nodelay = yes exclude each other (%s at line %d); "
                        "delay = N already turns nodelay off", name, strcmp(name, "delay") ? "delay" : "nodelay",
                        strcmp(name, "delay") ? pc->delay_line : pc->nodelay_yes_line);
    }
    if (*value != '\0' && pending_feature(pc->sect, name))
        warn(pc, pc->lineno, "%s: accepted but not implemented yet", name);
    return 1;
}

/* inih's find_chars_or_comment(s, "]"): the ']' of a section line, or
 * where an inline comment (" ;") starts, or the end. */
static char *section_end(char *s)
{
    int was_space = 0;

    while (*s && *s != ']' && !(was_space && *s == ';')) {
        was_space = is_space((unsigned char)*s);
        s++;
    }
    return s;
}

/* fgets-style reader for ini_parse_stream: one line per call, counted.
 * Lines are never split: a line that does not fit inih's buffer is an
 * error. Leading whitespace is removed, so indentation is cosmetic (inih
 * would otherwise take an indented line as a continuation of the previous
 * key's value). */
static char *read_line(char *buf, int num, void *user)
{
    struct pctx *pc = user;
    const char *p, *eol;
    size_t n;

    if (pc->failed || num < 2)
        return NULL;
    if (pc->full_pending) {
        pc->full_pending = 0;
        /* A full buffer without '\n' makes some inih versions drain the
         * rest of the line into a small scratch buffer: there is none. */
        if (num != pc->last_num)
            return NULL;
    }
    if (pc->pos >= pc->len)
        return NULL;
    p = pc->text + pc->pos;
    eol = memchr(p, '\n', pc->len - pc->pos);
    n = eol ? (size_t)(eol - p) : pc->len - pc->pos;
    pc->pos += n + (eol ? 1 : 0);
    pc->lineno++;

    if (n && p[n - 1] == '\r')
        n--;
    if (pc->lineno == 1 && n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3, n -= 3;
    if (memchr(p, '\0', n) != NULL) {
        fail(pc, pc->lineno, "NUL byte in line");
        return NULL;
    }
    if (n > (size_t)num - 1) {
        fail(pc, pc->lineno, "line too long (max %d bytes)", num - 1);
        return NULL;
    }
    while (n && is_space((unsigned char)*p))
        p++, n--;
    memcpy(buf, p, n);
    buf[n] = '\0';
    pc->last_num = num;
    pc->full_pending = (n == (size_t)num - 1);

    if (buf[0] == '[') {
        char *end = section_end(buf + 1), *rest, inner[256];
        if (*end != ']')
            return buf; /* inih reports it: syntax error */
        for (rest = end + 1; is_space((unsigned char)*rest); rest++)
            ;
        if (*rest != '\0' && *rest != ';' && *rest != '#') {
            fail(pc, pc->lineno, "syntax error: text after ']'");
            return NULL;
        }
        n = (size_t)(end - (buf + 1));
        memcpy(inner, buf + 1, n);
        inner[n] = '\0';
        if (!begin_section(pc, inner))
            return NULL;
    }
    return buf;
}

/* ---- whole-file checks ---- */

/* Two listeners on one address and a fixed port cannot both bind (port 0
 * is a different ephemeral port each time: tests use it). */
static int same_fixed_addr(const struct px_addr *a, const struct px_addr *b)
{
    in_port_t pa = a->ss.ss_family == AF_INET ? ((const struct sockaddr_in *)&a->ss)->sin_port
                                              : ((const struct sockaddr_in6 *)&a->ss)->sin6_port;
    return pa != 0 && a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static const struct px_header_set_conf *find_header_set(const struct px_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nheader_sets; i++)
        if (strcmp(cfg->header_sets[i].name, name) == 0)
            return &cfg->header_sets[i];
    return NULL;
}

static int set_has_header(const struct px_header_set_conf *s, const char *name)
{
    for (size_t i = 0; i < s->nheaders; i++)
        if (ieq(s->headers[i].name, name))
            return 1;
    return 0;
}

/* The first host name two routes share, or NULL. */
static const char *shared_host(const struct px_route_conf *a, const struct px_route_conf *b)
{
    for (size_t i = 0; i < a->nhosts; i++)
        for (size_t j = 0; j < b->nhosts; j++)
            if (strcmp(a->hosts[i], b->hosts[j]) == 0)
                return a->hosts[i];
    return NULL;
}

/* A path can end with a suffix of each route (one is a suffix of the
 * other: ".js" and ".min.js"); *which gets the shorter. */
static int suffixes_overlap(const struct px_route_conf *a, const struct px_route_conf *b, const char **which)
{
    for (size_t i = 0; i < a->nsuffixes; i++) {
        for (size_t j = 0; j < b->nsuffixes; j++) {
            const char *x = a->suffixes[i], *y = b->suffixes[j];
            size_t nx = strlen(x), ny = strlen(y);
            const char *shorter = nx <= ny ? x : y, *longer = nx <= ny ? y : x;
            size_t ns = nx <= ny ? nx : ny, nl = nx <= ny ? ny : nx;
            if (strcmp(longer + (nl - ns), shorter) == 0) {
                *which = shorter;
                return 1;
            }
        }
    }
    return 0;
}

/* Exactly one route must apply to any request: two routes conflict when
 * they have the same prefix (a trailing '/' ignored) and a host name in
 * common (or neither names one), and either neither has a suffix or a path could end with a
 * suffix of each. References must name existing sections; the headers a
 * route adds must fit the response writers' bound. */
static int check_routes(struct pctx *pc)
{
    struct px_config *cfg = pc->cfg;

    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct px_route_conf *r = &cfg->routes[i];
        size_t total = 0, nreq = 0;

        for (size_t k = 0; k < r->nlimits; k++) {
            size_t j = 0;
            while (j < cfg->nlimits && strcmp(cfg->limits[j].name, r->limits[k].name) != 0)
                j++;
            if (j == cfg->nlimits)
                return fail(pc, r->limits[k].line, "limit: no [limit %s] section", r->limits[k].name);
        }
        for (size_t k = 0; k < r->nheader_sets; k++) {
            const struct px_header_set_conf *set = find_header_set(cfg, r->header_sets[k].name);
            if (set == NULL)
                return fail(pc, r->header_sets[k].line, "headers: no [headers %s] section",
                            r->header_sets[k].name);
            for (size_t h = 0; h < set->nheaders; h++) {
                for (size_t k2 = 0; k2 < k; k2++) {
                    const struct px_header_set_conf *o = find_header_set(cfg, r->header_sets[k2].name);
                    if (set_has_header(o, set->headers[h].name))
                        return fail(pc, r->header_sets[k].line,
                                    "headers: %s is set by both [headers %s] and [headers %s]",
                                    set->headers[h].name, o->name, set->name);
                }
            }
            total += set->nheaders;
        }
        for (size_t k = 0; k < r->nrequest_header_sets; k++) {
            const struct px_name_ref *ref = &r->request_header_sets[k];
            const struct px_header_set_conf *set = find_header_set(cfg, ref->name);
            if (set == NULL)
                return fail(pc, ref->line, "request_headers: no [headers %s] section", ref->name);
            if (set->nheaders > PX_MAX_ADD_HEADERS)
                return fail(pc, ref->line, "request_headers: more than %d headers in [headers %s]",
                            PX_MAX_ADD_HEADERS, ref->name);
            nreq += set->nheaders;
            for (size_t h = 0; h < set->nheaders; h++) {
                const char *hn = set->headers[h].name;
                enum px_hdr_id id = px_hdr_lookup(hn, strlen(hn));
                /* Host, framing, hop-by-hop and what proxyd writes itself
                 * (X-Forwarded-*, X-Real-IP, X-Request-*) stay proxyd's */
                if (id != PX_HDR_OTHER)
                    return fail(pc, ref->line, "request_headers: %s%s in [headers %s] cannot be %s on the request "
                                "sent upstream (%s)", set->headers[h].remove ? "-" : "", hn, set->name,
                                set->headers[h].remove ? "removed" : "set",
                                (px_hdr_flags(id) & PX_HF_REQ_REPLACE) ? "proxyd sets it itself"
                                                                       : "Host, framing and hop-by-hop headers are proxyd's");
                for (size_t k2 = 0; k2 < k; k2++) {
                    const struct px_header_set_conf *o = find_header_set(cfg, r->request_header_sets[k2].name);
                    if (set_has_header(o, hn))
                        return fail(pc, ref->line, "request_headers: %s is set by both [headers %s] and [headers %s]",
                                    hn, o->name, set->name);
                }
            }
        }
        if (nreq > PX_MAX_ADD_HEADERS)
            return fail(pc, r->request_header_sets[0].line, "request_headers: more than %d headers",
                        PX_MAX_ADD_HEADERS);
        if (r->nheader_sets) {
            /* a set's header replaces the [headers] one of the same name */
            for (size_t h = 0; h < cfg->nheaders; h++) {
                size_t k = 0;
                while (k < r->nheader_sets &&
                       !set_has_header(find_header_set(cfg, r->header_sets[k].name), cfg->headers[h].name))
                    k++;
                total += k == r->nheader_sets;
            }
            if (total > PX_MAX_ADD_HEADERS)
                return fail(pc, r->header_sets[0].line, "headers: more than %d response headers with [headers]",
                            PX_MAX_ADD_HEADERS);
        }

        for (size_t j = 0; j < i; j++) {
            struct px_route_conf *o = &cfg->routes[j];
            const char *sfx = NULL, *host = NULL;
            if (o->prefix_len != r->prefix_len || memcmp(o->prefix, r->prefix, r->prefix_len) != 0)
                continue;
            if ((o->nhosts == 0) != (r->nhosts == 0) || (r->nhosts && (host = shared_host(r, o)) == NULL))
                continue;
            if ((o->nsuffixes == 0) != (r->nsuffixes == 0))
                continue; /* the one with a matching suffix wins */
            if (r->nsuffixes && !suffixes_overlap(r, o, &sfx))
                continue;
            return fail(pc, r->line, "[route %s]: conflicts with [route %s] at line %d (%s%s%s%s)", r->prefix,
                        o->prefix, o->line, host ? "host " : "any host", host ? host : "",
                        sfx ? ", suffix " : "", sfx ? sfx : "");
        }
    }

    /* sections nothing uses cost memory (a zone) or are a typo */
    for (size_t i = 0; i < cfg->nlimits; i++) {
        int used = 0;
        for (size_t j = 0; j < cfg->nroutes && !used; j++)
            for (size_t k = 0; k < cfg->routes[j].nlimits && !used; k++)
                used = strcmp(cfg->routes[j].limits[k].name, cfg->limits[i].name) == 0;
        if (!used)
            warn(pc, cfg->limits[i].line, "[limit %s]: no [route] uses it", cfg->limits[i].name);
    }
    for (size_t i = 0; i < cfg->nheader_sets; i++) {
        int used = 0;
        for (size_t j = 0; j < cfg->nroutes && !used; j++)
            for (size_t k = 0; k < cfg->routes[j].nheader_sets && !used; k++)
                used = strcmp(cfg->routes[j].header_sets[k].name, cfg->header_sets[i].name) == 0;
        for (size_t j = 0; j < cfg->nroutes && !used; j++)
            for (size_t k = 0; k < cfg->routes[j].nrequest_header_sets && !used; k++)
                used = strcmp(cfg->routes[j].request_header_sets[k].name, cfg->header_sets[i].name) == 0;
        if (!used)
            warn(pc, cfg->header_sets[i].line, "[headers %s]: no [route] uses it", cfg->header_sets[i].name);
    }
    return 1;
}

static int finish(struct pctx *pc)
{
    static const struct px_header_conf defaults[] = {
        {"Strict-Transport-Security", "max-age=63072000; includeSubDomains; preload", 0},
        {"X-Frame-Options", "DENY", 0},
        {"X-Content-Type-Options", "nosniff", 0},
        {"X-XSS-Protection", "1; mode=block", 0},
    };
    struct px_config *cfg = pc->cfg;

    for (size_t i = 0; i < cfg->nlimits; i++) {
        if (cfg->limits[i].rate_milli_per_s == 0)
            return fail(pc, cfg->limits[i].line, "rate: required in [limit %s]", cfg->limits[i].name);
        if (cfg->limits[i].shared && !cfg->cluster.present)
            return fail(pc, cfg->limits[i].line, "shared: [limit %s] is shared but there is no [cluster] section",
                        cfg->limits[i].name);
    }
    if (cfg->acme.storage_redis && !cfg->cluster.present)
        return fail(pc, cfg->acme.storage_line, "storage: redis needs a [cluster] section");
    if (cfg->acme.storage_redis && !cfg->cluster.secret_file)
        return fail(pc, cfg->acme.storage_line,
                    "storage: redis needs [cluster] secret_file (the key that encrypts private keys in Redis)");

    for (size_t i = 0; i < cfg->nservices; i++) {
        struct px_service_conf *s = &cfg->services[i];
        if (s->ntargets == 0)
            return fail(pc, s->line, "targets: required in [service %s]", s->name);
        if (s->opts.tls_certificate || s->opts.tls_certificate_key) {
            char why[600];
            if (s->opts.tls_certificate == NULL || s->opts.tls_certificate_key == NULL)
                return fail(pc, s->line, "%s: required with %s in [service %s]",
                            s->opts.tls_certificate ? "tls_certificate_key" : "tls_certificate",
                            s->opts.tls_certificate ? "tls_certificate" : "tls_certificate_key", s->name);
            if (px_tls_check_pair(s->opts.tls_certificate, s->opts.tls_certificate_key, why, sizeof(why)) < 0)
                return fail(pc, s->line, "tls_certificate: %s in [service %s]", why, s->name);
        }
        /* a target that is proxyd itself loops every request back in (the rule deploy applies too) */
        struct px_addr self[3];
        size_t nself = 0;
        if (cfg->has_listen_http)
            self[nself++] = cfg->listen_http;
        if (cfg->has_listen_https)
            self[nself++] = cfg->listen_https;
        if (cfg->has_metrics_listen)
            self[nself++] = cfg->metrics_listen;
        for (size_t j = 0; j < s->ntargets; j++) {
            char msg[300];
            if (px_service_self_target(&s->targets[j], self, nself, msg, sizeof(msg)))
                return fail(pc, s->targets_line ? s->targets_line : s->line, "targets: %s %s in [service %s]",
                            s->targets[j].text, msg, s->name);
        }
        for (size_t j = 0; j < i; j++) {
            /* the rule the control plane applies too (px/services.h) */
            struct px_service_conf *o = &cfg->services[j];
            struct px_service_claim cs = {s->name,        (const char *const *)s->hosts, s->nhosts,
                                          s->path_prefix, s->opts.more_prefixes,         s->opts.nmore_prefixes};
            struct px_service_claim co = {o->name,        (const char *const *)o->hosts, o->nhosts,
                                          o->path_prefix, o->opts.more_prefixes,         o->opts.nmore_prefixes};
            char msg[600];
            if (px_service_conflict(&cs, &co, msg, sizeof(msg)))
                return fail(pc, s->line, "[service %s]: %s", s->name, msg);
        }
    }

    if (cfg->tls.present && (cfg->tls.certificate == NULL) != (cfg->tls.certificate_key == NULL))
        return fail(pc, pc->first_line[S_TLS], "%s: required with %s in [tls]",
                    cfg->tls.certificate ? "certificate_key" : "certificate",
                    cfg->tls.certificate ? "certificate" : "certificate_key");
    if (cfg->has_listen_https && (cfg->tls.certificate == NULL || cfg->tls.certificate_key == NULL))
        return fail(pc, pc->listen_https_line, "listen_https: needs [tls] with certificate and certificate_key");

    if (cfg->acme.enabled && !cfg->has_listen_http)
        return fail(pc, pc->acme_enabled_line, "enabled: needs listen_http (HTTP-01 challenges arrive there)");

    if (!cfg->has_listen_http && !cfg->has_listen_https)
        return fail(pc, 0, "no listener: set listen_http or listen_https");
    if (cfg->has_listen_http && cfg->has_listen_https && same_fixed_addr(&cfg->listen_http, &cfg->listen_https))
        return fail(pc, pc->listen_https_line, "listen_https: same address as listen_http");

    if (!cfg->has_headers_section) {
        for (size_t i = 0; i < PX_ARRAY_LEN(defaults); i++) {
            struct px_header_conf *g = grow(cfg->headers, cfg->nheaders, sizeof(*g));
            if (g == NULL)
                return fail(pc, 0, "out of memory");
            cfg->headers = g;
            g = &cfg->headers[cfg->nheaders++];
            g->name = strdup(defaults[i].name);
            g->value = strdup(defaults[i].value);
            if (g->name == NULL || g->value == NULL)
                return fail(pc, 0, "out of memory");
        }
    }
    if (cfg->default_service) {
        size_t i = 0;
        while (i < cfg->nservices && strcmp(cfg->services[i].name, cfg->default_service) != 0)
            i++;
        if (i == cfg->nservices)
            return fail(pc, pc->default_service_line, "default_service: no [service %s] section",
                        cfg->default_service);
    }
    return check_routes(pc);
}

/* ---- entry points ---- */

static int load(const char *text, size_t len, const char *name, struct px_config **out, char *err,
                size_t errlen)
{
    struct pctx pc;
    struct px_config *cfg = NULL;
    int rc;

    memset(&pc, 0, sizeof(pc));
    pc.file = name;
    pc.text = text;
    pc.len = len;
    if ((cfg = calloc(1, sizeof(*cfg))) == NULL || (cfg->path = strdup(name)) == NULL) {
        fail(&pc, 0, "out of memory");
        goto fail;
    }
    pc.cfg = cfg;
    cfg->tls.file = cfg->path;
    if (!apply_defaults(&pc, find_sect(S_PROXY), cfg) || !apply_defaults(&pc, find_sect(S_TLS), &cfg->tls) ||
        !apply_defaults(&pc, find_sect(S_ACME), &cfg->acme) ||
        !apply_defaults(&pc, find_sect(S_CLUSTER), &cfg->cluster))
        goto fail;

    rc = ini_parse_stream(read_line, &pc, on_key, &pc);
    if (pc.failed && (rc <= 0 || rc >= pc.err_line))
        goto fail; /* ours came first */
    if (rc > 0) {
        pc.failed = 0;
        fail(&pc, rc, "syntax error");
        goto fail;
    }
    if (rc < 0) {
        fail(&pc, 0, "cannot parse (out of memory)");
        goto fail;
    }
    if (!finish(&pc))
        goto fail;

    for (size_t i = 0; i < pc.nwarns; i++)
        px_log_warn("%s", pc.warns[i]);
    px_strv_free(pc.warns, pc.nwarns);
    *out = cfg;
    return 0;

fail:
    if (err && errlen)
        snprintf(err, errlen, "%s", pc.err);
    px_strv_free(pc.warns, pc.nwarns);
    px_config_free(cfg);
    *out = NULL;
    return -1;
}

int px_config_load_string(const char *text, const char *name, struct px_config **out, char *err,
                          size_t errlen)
{
    if (name == NULL)
        name = "(string)";
    if (text == NULL) {
        if (err && errlen)
            snprintf(err, errlen, "%s: no text", name);
        *out = NULL;
        return -1;
    }
    return load(text, strlen(text), name, out, err, errlen);
}

int px_config_load(const char *path, struct px_config **out, char *err, size_t errlen)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    int rc = -1;

    *out = NULL;
    if (path == NULL) {
        if (err && errlen)
            snprintf(err, errlen, "no config file given");
        return -1;
    }
    if ((f = fopen(path, "rb")) == NULL) {
        int e = errno;
        char why[256];
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, px_open_error(path, e, why, sizeof(why)));
        return -1;
    }
    for (;;) {
        if (len == cap) {
            char *g;
            if (cap >= MAX_FILE_SIZE) {
                if (err && errlen)
                    snprintf(err, errlen, "%s: file too large (max %u bytes)", path, MAX_FILE_SIZE);
                goto done;
            }
            cap = cap ? cap * 2 : 8192;
            if ((g = realloc(buf, cap)) == NULL) {
                if (err && errlen)
                    snprintf(err, errlen, "%s: out of memory", path);
                goto done;
            }
            buf = g;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        if (err && errlen)
            snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
        goto done;
    }
    rc = load(buf ? buf : "", len, path, out, err, errlen);
done:
    free(buf);
    fclose(f);
    return rc;
}

void px_config_free(struct px_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->health_path);
    free(cfg->control_socket);
    free(cfg->state_file);
    free(cfg->temp_dir);
    free(cfg->access_log);
    free(cfg->error_log);
    free(cfg->user);
    free(cfg->pid_file);
    free(cfg->default_service);
    free(cfg->trusted_proxies);

    free(cfg->tls.certificate);
    free(cfg->tls.certificate_key);
    for (size_t i = 0; i < cfg->tls.nsni; i++) {
        free(cfg->tls.sni[i].name);
        free(cfg->tls.sni[i].cert);
        free(cfg->tls.sni[i].key);
    }
    free(cfg->tls.sni);
    free(cfg->tls.ciphers);
    free(cfg->tls.alpn);

    for (size_t i = 0; i < cfg->nheaders; i++) {
        free(cfg->headers[i].name);
        free(cfg->headers[i].value);
    }
    free(cfg->headers);
    for (size_t i = 0; i < cfg->nlimits; i++)
        free(cfg->limits[i].name);
    free(cfg->limits);
    for (size_t i = 0; i < cfg->nheader_sets; i++) {
        struct px_header_set_conf *hs = &cfg->header_sets[i];
        for (size_t j = 0; j < hs->nheaders; j++) {
            free(hs->headers[j].name);
            free(hs->headers[j].value);
        }
        free(hs->headers);
        free(hs->name);
    }
    free(cfg->header_sets);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct px_route_conf *r = &cfg->routes[i];
        free(r->prefix);
        px_strv_free(r->hosts, r->nhosts);
        px_strv_free(r->suffixes, r->nsuffixes);
        for (size_t j = 0; j < r->nlimits; j++)
            free(r->limits[j].name);
        free(r->limits);
        for (size_t j = 0; j < r->nheader_sets; j++)
            free(r->header_sets[j].name);
        free(r->header_sets);
        for (size_t j = 0; j < r->nrequest_header_sets; j++)
            free(r->request_header_sets[j].name);
        free(r->request_header_sets);
    }
    free(cfg->routes);
    for (size_t i = 0; i < cfg->nservices; i++) {
        struct px_service_conf *s = &cfg->services[i];
        free(s->name);
        px_strv_free(s->hosts, s->nhosts);
        free(s->path_prefix);
        free(s->targets);
        free(s->health_check_path);
        px_strv_free(s->log_request_headers, s->nlog_request_headers);
        px_strv_free(s->log_response_headers, s->nlog_response_headers);
        px_svc_opts_clear(&s->opts);
    }
    free(cfg->services);

    free(cfg->acme.directory);
    free(cfg->acme.email);
    px_strv_free(cfg->acme.domains, cfg->acme.ndomains);
    free(cfg->acme.config_dir);
    free(cfg->acme.ca_bundle);
    free(cfg->cluster.redis);
    free(cfg->cluster.password_file);
    free(cfg->cluster.key_prefix);
    free(cfg->cluster.instance);
    free(cfg->cluster.secret_file);
    free(cfg);
}

/* ---- the [service] sections as a services table ---- */

enum px_err px_config_add_service(struct px_services *t, const struct px_service_conf *sc, char *err,
                                  size_t errlen)
{
    struct px_service_spec sp = {
        .name = sc->name,
        .hosts = (const char *const *)sc->hosts,
        .nhosts = sc->nhosts,
        .path_prefix = sc->path_prefix,
        .targets = sc->targets,
        .ntargets = sc->ntargets,
        .health_check_path = sc->health_check_path,
        .state = PX_SVC_ACTIVE,
        .health_checks = sc->health_checks,
        .health_check_interval_ms = sc->health_check_interval_ms,
        .health_check_timeout_ms = sc->health_check_timeout_ms,
        .log_request_headers = (const char *const *)sc->log_request_headers,
        .nlog_request_headers = sc->nlog_request_headers,
        .log_response_headers = (const char *const *)sc->log_response_headers,
        .nlog_response_headers = sc->nlog_response_headers,
        .opts = sc->opts,
        .buffering = sc->buffering,
    };
    return px_services_add(t, &sp, err, errlen);
}

struct px_services *px_config_services(const struct px_config *cfg, char *err, size_t errlen)
{
    struct px_services *t = px_services_new();
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < cfg->nservices; i++) {
        if (px_config_add_service(t, &cfg->services[i], err, errlen) != PX_E_OK)
            goto fail;
    }
    if (px_services_seal(t, err, errlen) < 0)
        goto fail;
    return t;
fail:
    px_services_free(t);
    return NULL;
}
