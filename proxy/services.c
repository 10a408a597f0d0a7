/* services.c -- the services table: builder, conflict rule, host index, match.
 * See px/services.h for ownership and threading. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include "px/common.h"
#include "px/services.h"

/* Services that share a host key, longest path_prefix first. */
struct host_entry {
    const char *key;           /* exact host, or ".suffix" for "*.suffix" (points into a service's hosts) */
    size_t key_len;
    const struct px_service **svcs;
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

const char *px_service_conflict(const struct px_service_claim *a, const struct px_service_claim *b, char *buf,
                                size_t buflen)
{
    const char *pa = a->path_prefix ? a->path_prefix : "/", *pb = b->path_prefix ? b->path_prefix : "/";
    size_t la = prefix_len(pa), lb = prefix_len(pb);

    if (a->name && b->name && strcmp(a->name, b->name) == 0)
        return NULL;
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

struct px_service_claim px_service_claim_of(const struct px_service *s)
{
    struct px_service_claim c = {s->name, (const char *const *)s->hosts, s->nhosts, s->path_prefix};
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
    free(s->health_check_path);
    free(s->stop_message);
    free(s);
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
    return NULL;
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
    struct px_service_claim c = {sp->name, sp->hosts, sp->nhosts, sp->path_prefix};
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
        (sp->stop_message && (s->stop_message = strdup(sp->stop_message)) == NULL))
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

static int entry_add(struct host_entry *e, const struct px_service *s)
{
    const struct px_service **n = realloc(e->svcs, (e->nsvcs + 1) * sizeof(*n));
    if (n == NULL)
        return -1;
    e->svcs = n;
    /* insertion sort: longest prefix first */
    size_t i = e->nsvcs++;
    while (i > 0 && e->svcs[i - 1]->path_prefix_len < s->path_prefix_len) {
        e->svcs[i] = e->svcs[i - 1];
        i--;
    }
    e->svcs[i] = s;
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
    if (t->sealed)
        return 0;
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

static const struct px_service *match_prefix(const struct host_entry *e, const char *path, size_t plen)
{
    for (size_t i = 0; i < e->nsvcs; i++) {
        const struct px_service *s = e->svcs[i];
        size_t n = s->path_prefix_len;
        if (n == 1)
            return s; /* "/" */
        if (plen >= n && memcmp(path, s->path_prefix, n) == 0 && (plen == n || path[n] == '/' || path[n] == '?'))
            return s;
    }
    return NULL;
}

const struct px_service *px_services_match(const struct px_services *t, const char *host, size_t host_len,
                                           const char *path, size_t path_len)
{
    char h[256];
    int hl = px_host_normalize(host, host_len, h, sizeof(h));
    const struct px_service *s;
    if (hl > 0) {
        size_t lo = 0, hi = t->nexact;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            int c = strcmp(h, t->exact[mid].key);
            if (c == 0) {
                if ((s = match_prefix(&t->exact[mid], path, path_len)) != NULL)
                    return s;
                break;
            }
            if (c < 0)
                hi = mid;
            else
                lo = mid + 1;
        }
        for (size_t i = 0; i < t->nwild; i++) {
            const struct host_entry *e = &t->wild[i];
            if ((size_t)hl > e->key_len && memcmp(h + (size_t)hl - e->key_len, e->key, e->key_len) == 0 &&
                (s = match_prefix(e, path, path_len)) != NULL)
                return s;
        }
    }
    return match_prefix(&t->any, path, path_len);
}
