/* services.c -- the services table: builder, conflict rule, host index, match.
 * See px/services.h for ownership and threading. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <dirent.h>
#include <errno.h>

#include "px/common.h"
#include "px/parse.h"
#include "px/log.h"
#include "px/services.h"
#include "px/stats.h"

/* One path prefix of a service. */
struct svc_ref {
    const struct px_service *s;
    const char *prefix;
    size_t len;
};

/* Services that share a host key, longest path_prefix first. */
struct host_entry {
    const char *key;           /* exact host, or ".suffix" for "*.suffix" (points into a service's hosts) */
    size_t key_len;
    struct svc_ref *svcs;
    size_t nsvcs;
};

struct px_services {
    struct px_service **svcs;  /* each allocated alone: index entries point at them */
    size_t nsvcs, cap;
    int sealed;
    struct host_entry *exact;  /* sorted by key */
    size_t nexact;
    struct host_entry *wild;   /* longest suffix first */
    size_t nwild;
    struct host_entry any;     /* catch-all services */
};

/* "/app/" and "/app" are the same prefix; "/" stays "/". */
static size_t prefix_len(const char *p)
{
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        n--;
    return n;
}

/* The conflict rule for one prefix of each. */
static const char *conflict1(const struct px_service_claim *a, const char *pa, const struct px_service_claim *b,
                             const char *pb, char *buf, size_t buflen)
{
    size_t la = prefix_len(pa), lb = prefix_len(pb);

    if (la != lb || memcmp(pa, pb, la) != 0)
        return NULL;
    if (a->nhosts == 0 && b->nhosts == 0) {
        snprintf(buf, buflen, "conflicts with service %s (any host, prefix %.*s)", b->name, (int)lb, pb);
        return buf;
    }
    for (size_t i = 0; i < a->nhosts; i++)
        for (size_t j = 0; j < b->nhosts; j++)
            if (strcasecmp(a->hosts[i], b->hosts[j]) == 0) {
                snprintf(buf, buflen, "conflicts with service %s (host %s, prefix %.*s)", b->name, b->hosts[j],
                         (int)lb, pb);
                return buf;
            }
    return NULL;
}

const char *px_service_conflict(const struct px_service_claim *a, const struct px_service_claim *b, char *buf,
                                size_t buflen)
{
    if (a->name && b->name && strcmp(a->name, b->name) == 0)
        return NULL;
    for (size_t i = 0; i <= a->nmore_prefixes; i++) {
        const char *pa = i ? a->more_prefixes[i - 1] : a->path_prefix ? a->path_prefix : "/";
        for (size_t j = 0; j <= b->nmore_prefixes; j++) {
            const char *pb = j ? b->more_prefixes[j - 1] : b->path_prefix ? b->path_prefix : "/";
            if (conflict1(a, pa, b, pb, buf, buflen))
                return buf;
        }
    }
    return NULL;
}

struct px_service_claim px_service_claim_of(const struct px_service *s)
{
    struct px_service_claim c = {s->name,          (const char *const *)s->hosts, s->nhosts,
                                 s->path_prefix,   s->opts.more_prefixes,         s->opts.nmore_prefixes};
    return c;
}

struct px_services *px_services_new(void)
{
    return calloc(1, sizeof(struct px_services));
}

static void service_free(struct px_service *s)
{
    if (s == NULL)
        return;
    free(s->name);
    for (size_t i = 0; i < s->nhosts; i++)
        free(s->hosts[i]);
    free(s->hosts);
    free(s->path_prefix);
    for (size_t i = 0; i < s->ntargets; i++)
        px_target_release(s->targets[i]);
    free(s->targets);
    free(s->target_stats_ids);
    free(s->health_check_path);
    free(s->stop_message);
    free(s->log_headers);
    px_svc_opts_clear(&s->opts);
    for (size_t i = 0; i < s->npages; i++)
        free(s->pages[i].body);
    free(s->pages);
    free(s);
}

const char *const px_log_request_headers_default[3] = {"Cache-Control", "Last-Modified", "User-Agent"};

static const char *check_log_headers(const char *const *v, size_t n)
{
    if (n > PX_LOG_HEADERS_MAX)
        return "at most 16 log headers of each kind";
    for (size_t i = 0; i < n; i++) {
        const char *e = v[i] ? px_parse_check_header_name(v[i]) : "no header name";
        if (e)
            return e;
    }
    return NULL;
}

/* ---- options ---- */

static char *lower_dup(const char *s);

int px_svc_opts_copy(struct px_svc_opts *dst, const struct px_svc_opts *src)
{
    *dst = *src;
    dst->more_prefixes = NULL;
    dst->nmore_prefixes = 0;
    dst->canonical_host = dst->tls_certificate = dst->tls_certificate_key = dst->error_pages = NULL;
    if ((src->nmore_prefixes &&
         (dst->more_prefixes = px_strv_dup((const char *const *)src->more_prefixes, src->nmore_prefixes)) == NULL) ||
        (src->canonical_host && (dst->canonical_host = lower_dup(src->canonical_host)) == NULL) ||
        (src->tls_certificate && (dst->tls_certificate = strdup(src->tls_certificate)) == NULL) ||
        (src->tls_certificate_key && (dst->tls_certificate_key = strdup(src->tls_certificate_key)) == NULL) ||
        (src->error_pages && (dst->error_pages = strdup(src->error_pages)) == NULL)) {
        dst->nmore_prefixes = dst->more_prefixes ? src->nmore_prefixes : 0;
        px_svc_opts_clear(dst);
        return -1;
    }
    dst->nmore_prefixes = src->nmore_prefixes;
    return 0;
}

void px_svc_opts_clear(struct px_svc_opts *o)
{
    px_strv_free(o->more_prefixes, o->nmore_prefixes);
    free(o->canonical_host);
    free(o->tls_certificate);
    free(o->tls_certificate_key);
    free(o->error_pages);
    memset(o, 0, sizeof(*o));
}

const char *px_svc_opts_check(const struct px_svc_opts *o, char *buf, size_t buflen)
{
    if ((o->tls_certificate == NULL) != (o->tls_certificate_key == NULL)) {
        snprintf(buf, buflen, "tls_certificate and tls_certificate_key go together");
        return buf;
    }
    if (o->error_pages) {
        DIR *d = opendir(o->error_pages);
        if (d == NULL) {
            snprintf(buf, buflen, "error_pages %s: %s", o->error_pages, strerror(errno));
            return buf;
        }
        closedir(d);
    }
    return NULL;
}

/* The log headers in one block: the entries, then each name and key. */
static int log_headers_make(struct px_service *s, const struct px_service_spec *sp)
{
    size_t n = sp->nlog_request_headers + sp->nlog_response_headers, size = n * sizeof(struct px_log_header);
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = i < sp->nlog_request_headers ? sp->log_request_headers[i]
                                                        : sp->log_response_headers[i - sp->nlog_request_headers];
        size += 2 * strlen(name) + 8;
    }
    char *b = malloc(size);
    if (b == NULL)
        return -1;
    struct px_log_header *lh = (struct px_log_header *)(void *)b;
    char *p = b + n * sizeof(*lh);
    for (size_t i = 0; i < n; i++) {
        int req = i < sp->nlog_request_headers;
        const char *name = req ? sp->log_request_headers[i] : sp->log_response_headers[i - sp->nlog_request_headers];
        size_t len = strlen(name);
        lh[i].name = p;
        lh[i].name_len = len;
        memcpy(p, name, len + 1);
        p += len + 1;
        lh[i].key = p;
        lh[i].key_len = len + (req ? 4 : 5);
        p = stpcpy(p, req ? "req_" : "resp_");
        for (size_t k = 0; k < len; k++)
            *p++ = name[k] == '-' ? '_' : name[k] >= 'A' && name[k] <= 'Z' ? (char)(name[k] + 32) : name[k];
        *p++ = '\0';
    }
    s->log_headers = lh;
    s->nlog_req = (uint8_t)sp->nlog_request_headers;
    s->nlog_resp = (uint8_t)sp->nlog_response_headers;
    return 0;
}

/* ---- error pages ---- */

#define PAGE_MAX (256 * 1024)

/* "{{ .Name }}" (any spaces inside the braces) at p: its length, else 0. */
static size_t tmpl_field(const char *p, const char *name)
{
    const char *q = p;
    size_t n = strlen(name);
    if (strncmp(q, "{{", 2) != 0)
        return 0;
    for (q += 2; *q == ' '; q++)
        ;
    if (*q != '.' || strncmp(q + 1, name, n) != 0)
        return 0;
    for (q += 1 + n; *q == ' '; q++)
        ;
    return strncmp(q, "}}", 2) == 0 ? (size_t)(q + 2 - p) : 0;
}

static int put(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = (*len + n + 1) * 2;
        char *g = realloc(*buf, nc);
        if (g == NULL)
            return -1;
        *buf = g;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0'; /* the page is also a C string */
    return 0;
}

/* The template with its fields filled in; the message HTML-escaped. */
static char *render(const char *tmpl, int status, const char *message, size_t *outlen)
{
    char *out = NULL, st[8];
    size_t len = 0, cap = 0, k;
    int rc = 0;
    snprintf(st, sizeof(st), "%d", status);
    for (const char *p = tmpl; *p && rc == 0;) {
        if ((k = tmpl_field(p, "Status")) != 0) {
            rc = put(&out, &len, &cap, st, strlen(st));
        } else if ((k = tmpl_field(p, "Message")) != 0) {
            for (const char *m = message ? message : ""; *m && rc == 0; m++) {
                const char *e = *m == '<' ? "&lt;" : *m == '>' ? "&gt;" : *m == '&' ? "&amp;"
                              : *m == '"' ? "&#34;" : *m == '\'' ? "&#39;" : NULL;
                rc = e ? put(&out, &len, &cap, e, strlen(e)) : put(&out, &len, &cap, m, 1);
            }
        } else {
            k = 1;
            rc = put(&out, &len, &cap, p, 1);
        }
        p += k;
    }
    if (rc < 0 || put(&out, &len, &cap, "", 0) < 0) {
        free(out);
        return NULL;
    }
    *outlen = len;
    return out;
}

static int cmp_page(const void *a, const void *b)
{
    return ((const struct px_err_page *)a)->status - ((const struct px_err_page *)b)->status;
}

/* DIR/4xx.html and DIR/5xx.html into s->pages. A file that cannot be read
 * is logged and left out (the entry points checked the directory). */
static int load_pages(struct px_service *s, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL) {
        px_log_warn("service %s: error_pages %s: %s (serving proxyd's own pages)", s->name, dir, strerror(errno));
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (!(n[0] == '4' || n[0] == '5') || n[1] < '0' || n[1] > '9' || n[2] < '0' || n[2] > '9' ||
            strcmp(n + 3, ".html") != 0)
            continue;
        char path[4096], *tmpl = NULL;
        snprintf(path, sizeof(path), "%s/%s", dir, n);
        FILE *f = fopen(path, "rb");
        long sz = -1;
        if (f && fseek(f, 0, SEEK_END) == 0 && (sz = ftell(f)) >= 0 && sz <= PAGE_MAX && fseek(f, 0, SEEK_SET) == 0 &&
            (tmpl = calloc(1, (size_t)sz + 1)) != NULL && fread(tmpl, 1, (size_t)sz, f) == (size_t)sz) {
            struct px_err_page pg = {atoi(n), NULL, 0};
            struct px_err_page *g = realloc(s->pages, (s->npages + 1) * sizeof(*g));
            if (g == NULL || (pg.body = render(tmpl, pg.status, s->stop_message, &pg.len)) == NULL) {
                if (g)
                    s->pages = g;
                free(tmpl);
                fclose(f);
                closedir(d);
                return -1;
            }
            s->pages = g;
            s->pages[s->npages++] = pg;
        } else {
            px_log_warn("service %s: error page %s: %s", s->name, path, sz > PAGE_MAX ? "over 256k" : strerror(errno));
        }
        free(tmpl);
        if (f)
            fclose(f);
    }
    closedir(d);
    if (s->npages)
        qsort(s->pages, s->npages, sizeof(*s->pages), cmp_page);
    return 0;
}

const struct px_err_page *px_service_page(const struct px_service *s, int status)
{
    for (size_t i = 0; i < s->npages; i++)
        if (s->pages[i].status == status)
            return &s->pages[i];
    return NULL;
}

static const char *check_spec(const struct px_service_spec *sp)
{
    if (sp->name == NULL || sp->name[0] == '\0')
        return "a service needs a name";
    if (strlen(sp->name) >= 128)
        return "service name too long";
    if (sp->path_prefix && sp->path_prefix[0] != '/')
        return "path_prefix must start with /";
    if (sp->health_check_path && sp->health_check_path[0] != '/')
        return "health_check_path must start with /";
    for (size_t i = 0; i < sp->nhosts; i++) {
        const char *h = sp->hosts[i];
        if (h == NULL || h[0] == '\0' || strlen(h) > 253)
            return "bad host name";
        for (const char *p = h; *p; p++)
            if ((unsigned char)*p <= ' ' || *p == '/' || *p == '\\' || (unsigned char)*p >= 0x7f)
                return "bad host name";
        if (strchr(h, '*') && (h[0] != '*' || h[1] != '.' || strchr(h + 1, '*')))
            return "a wildcard host is *.suffix";
    }
    if (sp->state != PX_SVC_ACTIVE && sp->state != PX_SVC_STOPPED && sp->state != PX_SVC_PAUSED)
        return "bad service state";
    const char *e = check_log_headers(sp->log_request_headers, sp->nlog_request_headers);
    return e ? e : check_log_headers(sp->log_response_headers, sp->nlog_response_headers);
}

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return d;
}

/* Takes ownership of s (freed on failure). */
static enum px_err table_append(struct px_services *t, struct px_service *s, char *err, size_t errlen)
{
    if (t->nsvcs == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 8;
        struct px_service **n = realloc(t->svcs, nc * sizeof(*n));
        if (n == NULL) {
            service_free(s);
            snprintf(err, errlen, "out of memory");
            return PX_E_INTERNAL;
        }
        t->svcs = n;
        t->cap = nc;
    }
    t->svcs[t->nsvcs++] = s;
    return PX_E_OK;
}

/* Validation and the conflict rule, shared by both add functions. */
static enum px_err admit(const struct px_services *t, const struct px_service_claim *c, char *err, size_t errlen)
{
    char buf[512];
    if (t->sealed) {
        snprintf(err, errlen, "services table already published");
        return PX_E_INTERNAL; /* a caller's bug */
    }
    for (size_t i = 0; i < t->nsvcs; i++) {
        if (strcmp(t->svcs[i]->name, c->name) == 0) {
            snprintf(err, errlen, "service %s: defined twice", c->name);
            return PX_E_BAD_REQUEST;
        }
        struct px_service_claim o = px_service_claim_of(t->svcs[i]);
        if (px_service_conflict(c, &o, buf, sizeof(buf))) {
            snprintf(err, errlen, "service %s: %s", c->name, buf);
            return PX_E_CONFLICT;
        }
    }
    return PX_E_OK;
}

enum px_err px_services_add(struct px_services *t, const struct px_service_spec *sp, char *err, size_t errlen)
{
    struct px_service *s = NULL;
    enum px_err code;
    const char *bad = check_spec(sp);
    if (bad) {
        snprintf(err, errlen, "service %s: %s", sp->name ? sp->name : "?", bad);
        return PX_E_BAD_REQUEST;
    }
    for (size_t i = 0; i < sp->opts.nmore_prefixes; i++)
        if (sp->opts.more_prefixes[i] == NULL || sp->opts.more_prefixes[i][0] != '/') {
            snprintf(err, errlen, "service %s: path_prefix must start with /", sp->name);
            return PX_E_BAD_REQUEST;
        }
    struct px_service_claim c = {sp->name,        sp->hosts, sp->nhosts, sp->path_prefix, sp->opts.more_prefixes,
                                 sp->opts.nmore_prefixes};
    if ((code = admit(t, &c, err, errlen)) != PX_E_OK)
        return code;
    if ((s = calloc(1, sizeof(*s))) == NULL)
        goto nomem;
    const char *pp = sp->path_prefix ? sp->path_prefix : "/";
    s->path_prefix_len = prefix_len(pp);
    s->state = sp->state;
    s->max_pause_ms = sp->max_pause_ms;
    s->health_checks = sp->health_checks;
    s->health_check_interval_ms = sp->health_check_interval_ms ? sp->health_check_interval_ms : 1000;
    s->health_check_timeout_ms = sp->health_check_timeout_ms ? sp->health_check_timeout_ms : 5000;
    s->buffering = sp->buffering;
    if ((s->name = strdup(sp->name)) == NULL || (s->path_prefix = strndup(pp, s->path_prefix_len)) == NULL ||
        (s->health_check_path = strdup(sp->health_check_path ? sp->health_check_path : "/up")) == NULL ||
        (sp->stop_message && (s->stop_message = strdup(sp->stop_message)) == NULL) ||
        log_headers_make(s, sp) < 0)
        goto nomem;
    if (sp->nhosts && (s->hosts = calloc(sp->nhosts, sizeof(*s->hosts))) == NULL)
        goto nomem;
    for (; s->nhosts < sp->nhosts; s->nhosts++)
        if ((s->hosts[s->nhosts] = lower_dup(sp->hosts[s->nhosts])) == NULL)
            goto nomem;
    if ((s->targets = calloc(sp->ntargets ? sp->ntargets : 1, sizeof(*s->targets))) == NULL)
        goto nomem;
    for (; s->ntargets < sp->ntargets; s->ntargets++)
        if ((s->targets[s->ntargets] = px_target_acquire(&sp->targets[s->ntargets])) == NULL)
            goto nomem;
    if (px_svc_opts_copy(&s->opts, &sp->opts) < 0)
        goto nomem;
    for (size_t i = 0; i < s->opts.nmore_prefixes; i++) /* "/b/" routes like "/b" */
        s->opts.more_prefixes[i][prefix_len(s->opts.more_prefixes[i])] = '\0';
    s->target_tv.tv_sec = (time_t)(s->opts.target_timeout_ms / 1000);
    s->target_tv.tv_usec = (suseconds_t)(s->opts.target_timeout_ms % 1000) * 1000;
    if (s->opts.error_pages && load_pages(s, s->opts.error_pages) < 0)
        goto nomem;
    return table_append(t, s, err, errlen);
nomem:
    service_free(s);
    snprintf(err, errlen, "out of memory");
    return PX_E_INTERNAL;
}

enum px_err px_services_add_copy(struct px_services *t, const struct px_service *from, char *err, size_t errlen)
{
    struct px_addr *addrs = calloc(from->ntargets ? from->ntargets : 1, sizeof(*addrs));
    if (addrs == NULL) {
        snprintf(err, errlen, "out of memory");
        return PX_E_INTERNAL;
    }
    for (size_t i = 0; i < from->ntargets; i++)
        addrs[i] = from->targets[i]->addr; /* same HOST:PORT = same target object */
    const char *lh[2 * PX_LOG_HEADERS_MAX];
    for (size_t i = 0; i < (size_t)from->nlog_req + from->nlog_resp; i++)
        lh[i] = from->log_headers[i].name;
    struct px_service_spec sp = {
        .name = from->name,
        .hosts = (const char *const *)from->hosts,
        .nhosts = from->nhosts,
        .path_prefix = from->path_prefix,
        .targets = addrs,
        .ntargets = from->ntargets,
        .health_check_path = from->health_check_path,
        .state = from->state,
        .stop_message = from->stop_message,
        .max_pause_ms = from->max_pause_ms,
        .health_checks = from->health_checks,
        .health_check_interval_ms = from->health_check_interval_ms,
        .health_check_timeout_ms = from->health_check_timeout_ms,
        .log_request_headers = lh,
        .nlog_request_headers = from->nlog_req,
        .log_response_headers = lh + from->nlog_req,
        .nlog_response_headers = from->nlog_resp,
        .opts = from->opts,
        .buffering = from->buffering,
    };
    enum px_err rc = px_services_add(t, &sp, err, errlen);
    free(addrs);
    return rc;
}

/* ---- the self-target rule ---- */

static unsigned port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

/* The address part as 16 bytes (IPv4 as v4-mapped), 0 for another family. */
static int ip16(const struct sockaddr *sa, unsigned char out[16])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (sa->sa_family == AF_INET) {
        memcpy(out, mapped, 12);
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 1;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 1;
    }
    return 0;
}

static int ip_unspecified(const unsigned char a[16])
{
    static const unsigned char any4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0};
    static const unsigned char any6[16] = {0};
    return memcmp(a, any4, 16) == 0 || memcmp(a, any6, 16) == 0;
}

static int ip_loopback(const unsigned char a[16])
{
    static const unsigned char lo6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a, lo6, 16) == 0 || (memcmp(a, mapped, 12) == 0 && a[12] == 127);
}

/* An address of this host: loopback, unspecified, or on an interface. */
static int ip_local(const unsigned char a[16])
{
    if (ip_loopback(a) || ip_unspecified(a))
        return 1;
    struct ifaddrs *ifs = NULL;
    int found = 0;
    if (getifaddrs(&ifs) < 0)
        return 0;
    for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
        unsigned char b[16];
        found = i->ifa_addr && ip16(i->ifa_addr, b) && memcmp(a, b, 16) == 0;
    }
    freeifaddrs(ifs);
    return found;
}

const char *px_service_self_target(const struct px_addr *target, const struct px_addr *listens, size_t n, char *buf,
                                   size_t buflen)
{
    unsigned char t[16];
    unsigned port = port_of(&target->ss);
    if (port == 0 || !ip16((const struct sockaddr *)&target->ss, t))
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char l[16];
        if (port_of(&listens[i].ss) != port || !ip16((const struct sockaddr *)&listens[i].ss, l))
            continue;
        /* the same address; a wildcard listener and a local target; an
         * unspecified target (connect() takes it as this host) and a local listener */
        if (memcmp(t, l, 16) == 0 || (ip_unspecified(l) && ip_local(t)) || (ip_unspecified(t) && ip_local(l))) {
            snprintf(buf, buflen, "is proxyd's own listen address %s (every request would loop back into proxyd)",
                     listens[i].text);
            return buf;
        }
    }
    return NULL;
}

static void index_free(struct px_services *t)
{
    for (size_t i = 0; i < t->nexact; i++)
        free(t->exact[i].svcs);
    for (size_t i = 0; i < t->nwild; i++)
        free(t->wild[i].svcs);
    free(t->exact);
    free(t->wild);
    free(t->any.svcs);
    t->exact = t->wild = NULL;
    t->nexact = t->nwild = 0;
    memset(&t->any, 0, sizeof(t->any));
}

void px_services_free(struct px_services *t)
{
    if (t == NULL)
        return;
    index_free(t);
    for (size_t i = 0; i < t->nsvcs; i++)
        service_free(t->svcs[i]);
    free(t->svcs);
    free(t);
}

static int entry_add1(struct host_entry *e, const struct px_service *s, const char *prefix)
{
    struct svc_ref *n = realloc(e->svcs, (e->nsvcs + 1) * sizeof(*n));
    if (n == NULL)
        return -1;
    e->svcs = n;
    size_t len = prefix_len(prefix);
    /* insertion sort: longest prefix first */
    size_t i = e->nsvcs++;
    while (i > 0 && e->svcs[i - 1].len < len) {
        e->svcs[i] = e->svcs[i - 1];
        i--;
    }
    e->svcs[i] = (struct svc_ref){s, prefix, len};
    return 0;
}

/* Every path prefix of s. */
static int entry_add(struct host_entry *e, const struct px_service *s)
{
    if (entry_add1(e, s, s->path_prefix) < 0)
        return -1;
    for (size_t i = 0; i < s->opts.nmore_prefixes; i++)
        if (entry_add1(e, s, s->opts.more_prefixes[i]) < 0)
            return -1;
    return 0;
}

static struct host_entry *entry_find_or_add(struct host_entry **arr, size_t *n, const char *key)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*arr)[i].key, key) == 0)
            return &(*arr)[i];
    struct host_entry *na = realloc(*arr, (*n + 1) * sizeof(*na));
    if (na == NULL)
        return NULL;
    *arr = na;
    struct host_entry *e = &na[(*n)++];
    memset(e, 0, sizeof(*e));
    e->key = key;
    e->key_len = strlen(key);
    return e;
}

static int cmp_exact(const void *a, const void *b)
{
    return strcmp(((const struct host_entry *)a)->key, ((const struct host_entry *)b)->key);
}

static int cmp_wild(const void *a, const void *b)
{
    const struct host_entry *x = a, *y = b;
    return x->key_len < y->key_len ? 1 : (x->key_len > y->key_len ? -1 : 0);
}

int px_services_seal(struct px_services *t, char *err, size_t errlen)
{
    uint32_t none;
    if (t->sealed)
        return 0;
    if (px_stats_service_id("", &none) < 0) /* id 0: requests no service answered */
        goto noids;
    for (size_t i = 0; i < t->nsvcs; i++) {
        struct px_service *s = t->svcs[i];
        free(s->target_stats_ids);
        s->target_stats_ids = calloc(s->ntargets ? s->ntargets : 1, sizeof(uint32_t));
        if (s->target_stats_ids == NULL || px_stats_service_id(s->name, &s->stats_id) < 0)
            goto noids;
        /* a pair without an id (over PX_STATS_MAX_TARGETS after years of
         * deploys to new HOST:PORTs) only goes uncounted by pair */
        for (size_t j = 0; j < s->ntargets; j++)
            if (px_stats_target_id(s->stats_id, s->targets[j]->addr.text, &s->target_stats_ids[j]) < 0)
                s->target_stats_ids[j] = PX_STATS_NO_ID;
    }
    for (size_t i = 0; i < t->nsvcs; i++) {
        const struct px_service *s = t->svcs[i];
        if (s->nhosts == 0) {
            if (entry_add(&t->any, s) < 0)
                goto nomem;
            continue;
        }
        for (size_t j = 0; j < s->nhosts; j++) {
            const char *h = s->hosts[j];
            struct host_entry *e = (h[0] == '*' && h[1] == '.') ? entry_find_or_add(&t->wild, &t->nwild, h + 1)
                                                                : entry_find_or_add(&t->exact, &t->nexact, h);
            if (e == NULL || entry_add(e, s) < 0)
                goto nomem;
        }
    }
    if (t->nexact)
        qsort(t->exact, t->nexact, sizeof(*t->exact), cmp_exact);
    if (t->nwild)
        qsort(t->wild, t->nwild, sizeof(*t->wild), cmp_wild);
    t->sealed = 1;
    return 0;
nomem:
    index_free(t);
    snprintf(err, errlen, "out of memory building routes");
    return -1;
noids:
    snprintf(err, errlen, "out of memory (or over %d service names) for metrics", PX_STATS_MAX_SERVICES);
    return -1;
}

size_t px_services_count(const struct px_services *t)
{
    return t->nsvcs;
}

const struct px_service *px_services_at(const struct px_services *t, size_t i)
{
    return i < t->nsvcs ? t->svcs[i] : NULL;
}

const struct px_service *px_services_find(const struct px_services *t, const char *name)
{
    for (size_t i = 0; i < t->nsvcs; i++)
        if (strcmp(t->svcs[i]->name, name) == 0)
            return t->svcs[i];
    return NULL;
}

static int prefix_is(const char *prefix, size_t n, const char *path, size_t plen)
{
    return n == 1 || /* "/" */
           (plen >= n && memcmp(path, prefix, n) == 0 && (plen == n || path[n] == '/' || path[n] == '?'));
}

static const struct px_service *match_prefix(const struct host_entry *e, const char *path, size_t plen)
{
    for (size_t i = 0; i < e->nsvcs; i++)
        if (prefix_is(e->svcs[i].prefix, e->svcs[i].len, path, plen))
            return e->svcs[i].s;
    return NULL;
}

int px_service_prefix_match(const struct px_service *s, const char *path, size_t path_len)
{
    int best = prefix_is(s->path_prefix, s->path_prefix_len, path, path_len)
                   ? (s->path_prefix_len == 1 ? 0 : (int)s->path_prefix_len) : -1;
    for (size_t i = 0; i < s->opts.nmore_prefixes; i++) {
        const char *p = s->opts.more_prefixes[i];
        size_t n = strlen(p);
        if (prefix_is(p, n, path, path_len) && (int)(n == 1 ? 0 : n) > best)
            best = n == 1 ? 0 : (int)n;
    }
    return best;
}

/* The exact-host entry for normalized host h, or NULL. */
static const struct host_entry *exact_entry(const struct px_services *t, const char *h)
{
    size_t lo = 0, hi = t->nexact;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(h, t->exact[mid].key);
        if (c == 0)
            return &t->exact[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* Whether wildcard entry e ("*.suffix") names normalized host h of hl bytes. */
static int wild_names(const struct host_entry *e, const char *h, size_t hl)
{
    return hl > e->key_len && memcmp(h + hl - e->key_len, e->key, e->key_len) == 0;
}

const struct px_service *px_services_match(const struct px_services *t, const char *host, size_t host_len,
                                           const char *path, size_t path_len)
{
    char h[256];
    int hl = px_host_normalize(host, host_len, h, sizeof(h));
    const struct px_service *s;
    if (hl > 0) {
        const struct host_entry *e = exact_entry(t, h);
        if (e && (s = match_prefix(e, path, path_len)) != NULL)
            return s;
        for (size_t i = 0; i < t->nwild; i++)
            if (wild_names(&t->wild[i], h, (size_t)hl) && (s = match_prefix(&t->wild[i], path, path_len)) != NULL)
                return s;
    }
    return match_prefix(&t->any, path, path_len);
}

int px_services_names_host(const struct px_services *t, const char *host, size_t host_len)
{
    char h[256];
    int hl = px_host_normalize(host, host_len, h, sizeof(h));
    if (hl <= 0)
        return 0;
    if (exact_entry(t, h))
        return 1;
    for (size_t i = 0; i < t->nwild; i++)
        if (wild_names(&t->wild[i], h, (size_t)hl))
            return 1;
    return 0;
}

const struct px_service *px_services_match_named(const struct px_services *t, const char *name, const char *path,
                                                 size_t path_len)
{
    const struct px_service *s = px_services_find(t, name);
    if (s == NULL)
        return NULL;
    return px_service_prefix_match(s, path, path_len) >= 0 ? s : NULL; /* any of its prefixes */
}
