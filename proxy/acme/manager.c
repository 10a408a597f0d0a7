/* manager.c -- ACME lineages: the schedule, one renewal at a time (lock,
 * hooks, order, store, swap), the TLS part with the lineages, cert status
 * and cert renew. See px/acme_manager.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "px/acme.h"
#include "px/acme_manager.h"
#include "px/challenge.h"
#include "px/metrics.h"
#include "px/common.h"
#include "px/config.h"
#include "px/log.h"
#include "px/tls.h"
#include "px/cluster.h"
#include "shared.h"

#define OBTAIN_TIMEOUT_MS (5 * 60 * 1000) /* one order, all in: generous for a slow CA */
#define MIN_SLEEP_MS 50
#define BUSY_RETRY_MS 1000      /* storage = redis: another instance holds the lock: look again */
#define RECHECK_MS 60000        /* storage = redis: Redis looked at this often (a missed announcement) */

/* ---- the schedule (pure) ---- */

uint64_t px_acme_backoff_ms(unsigned n, uint64_t retry_ms, uint64_t cap_ms)
{
    uint64_t b = retry_ms ? retry_ms : 1;
    for (unsigned i = 1; i < n && b < cap_ms; i++)
        b = b > UINT64_MAX / 2 ? UINT64_MAX : b * 2;
    if (cap_ms && b > cap_ms)
        b = cap_ms;
    return b ? b : 1;
}

int64_t px_acme_due_ms(const struct px_acme_sched *s)
{
    /* A failed attempt -- forced or due -- is retried until one succeeds. */
    if (s->failures)
        return s->last_failure_ms + (int64_t)px_acme_backoff_ms(s->failures, s->retry_ms, s->check_interval_ms);
    if (s->not_after_ms == 0 || s->names_missing)
        return 0;
    int64_t due = s->not_after_ms - (int64_t)s->renew_before_ms;
    if (s->window_at_ms && s->window_at_ms < due)
        due = s->window_at_ms;
    return due;
}

int64_t px_acme_window_pick(int64_t start_ms, int64_t end_ms, uint64_t r)
{
    if (end_ms <= start_ms)
        return start_ms;
    return start_ms + (int64_t)(r % (uint64_t)(end_ms - start_ms));
}

/* ---- state ---- */

enum outcome { OUT_NONE, OUT_OK, OUT_FAILED };

struct lineage {
    struct lineage *next;
    struct px_acme_manager *m;
    char *name;
    char **want;                 /* the names to obtain it for */
    size_t nwant;
    char *service;               /* deploy --tls: the service that wants it; NULL = [acme] only */
    int from_config;             /* [acme] domains */
    int wanted;                  /* scratch while reconciling */
    /* on disk */
    int present;                 /* disk is filled */
    struct px_acme_lineage disk;
    char load_err[512];          /* a broken lineage on disk: why */
    int served_version;          /* the version the TLS part has (0 none) */
    /* the schedule */
    int64_t next_check_ms;
    int64_t window_start_ms, window_end_ms, window_at_ms; /* RFC 9773; 0 = none */
    struct px_acme_op *ari;
    unsigned failures;
    int64_t last_failure_ms;
    /* the last attempt */
    int64_t last_attempt_ms;     /* when it started; 0 = never */
    int64_t last_end_ms;
    enum outcome outcome;
    struct px_acme_error err;
    unsigned queued : 1;
    unsigned running : 1;
    unsigned gone : 1;           /* no longer wanted: dropped once idle */
    /* storage = redis */
    long long rversion;          /* the Redis version the files on disk are (0: unknown) */
    struct px_acme_shared_cert *take; /* fetched from Redis, to be installed here (queued) */
    int fetching;
    int64_t busy_until_ms;       /* another instance holds the lock: not before then */
    int busy_logged;
    unsigned defers;             /* attempts put off in a row (Redis down) */
    char take_err[512];          /* why Redis's version is not usable (logged once) */
};

struct attempt {
    struct px_acme_manager *m;
    struct lineage *l;
    int lock_fd;
    struct px_acme_op *op;
    struct px_acme_hooks *hooks;
    void (*after_hooks)(struct attempt *a);
    int saved;                   /* a new version is on disk */
    int failed;
    /* storage = redis */
    int busy;                    /* another instance holds the lock: no attempt made */
    int deferred;                /* Redis unreachable: no attempt made */
    int push_account;            /* Redis had no account: store ours after the order */
    int lost_logged;
    struct px_acme_shared_cert *tc; /* a version taken from Redis (installing it) */
    char *lock_value;            /* the Redis lock held ("INSTANCE FENCE") */
    struct event *extend;        /* keeps it */
    char *pem[4];                /* the order's certificate, kept across the Redis write */
    time_t not_before, not_after;
    struct px_acme_error err;
    char live_dir[4200];
};

enum wstate { W_PENDING, W_RENEWED, W_SKIPPED, W_FAILED };

struct wentry {
    char *name;
    enum wstate st;
    struct px_acme_error err;
};

struct waiter {
    struct waiter *next;
    px_acme_renew_cb done;       /* NULL: forgotten */
    void *arg;
    struct wentry *e;
    size_t n;
};

struct svc_copy {
    char *service;
    char **hosts;
    size_t nhosts;
};

struct px_acme_manager {
    struct event_base *base;
    struct px_acme_manager_hooks hooks;
    /* [acme], copied */
    char *directory, *email, *config_dir, *ca_bundle;
    char **domains;
    size_t ndomains;
    uint64_t renew_before_ms, check_interval_ms, retry_ms, hook_timeout_ms;
    /* services deployed with --tls, copied */
    struct svc_copy *svcs;
    size_t nsvcs;
    int started;
    int store_ready;             /* px_acme_store_init succeeded */
    int tls_built;               /* a TLS part was built with the lineages (listen_https) */
    struct px_acme_client *client;
    int client_stale;            /* settings changed: a new client before the next order */
    struct lineage *lineages;    /* the [acme] one first, then the services' */
    struct event *timer, *kick;
    struct attempt *cur;         /* the renewal in progress, or NULL */
    struct waiter *waiters;
    /* storage = redis */
    int redis;
    uint64_t lock_timeout_ms;
    struct px_cluster *cluster;  /* NULL: none yet (nothing is ordered) */
    struct px_acme_shared *sh;   /* made when first needed */
    int redis_down_logged;
    char *account_id;            /* the account Redis has (NULL: any) */
    struct px_acme_challenge_ops chops;
};

/* ---- small helpers ---- */

static int strv_has(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(v[i], s) == 0)
            return 1;
    return 0;
}

/* Same names, any order. */
static int strv_same_set(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (!strv_has(b, nb, a[i]))
            return 0;
    return 1;
}

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static int str_eq(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

static void set_err(struct px_acme_error *e, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(struct px_acme_error *e, const char *type, const char *fmt, ...)
{
    va_list ap;
    snprintf(e->type, sizeof(e->type), "%s", type);
    va_start(ap, fmt);
    vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
    va_end(ap);
}

/* "2025-01-31T12:00:00Z" */
static json_t *time_json(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char buf[32];
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

static void human_delay(char *buf, size_t n, uint64_t ms)
{
    if (ms < 120000)
        snprintf(buf, n, "%.0fs", (double)ms / 1000);
    else if (ms < 2 * 3600000ull)
        snprintf(buf, n, "%.0fm", (double)ms / 60000);
    else
        snprintf(buf, n, "%.1fh", (double)ms / 3600000);
}

/* The names the certificate on disk lacks. */
static int names_missing(const struct lineage *l)
{
    if (!l->present)
        return 1;
    for (size_t i = 0; i < l->nwant; i++)
        if (!strv_has(l->disk.names, l->disk.nnames, l->want[i]))
            return 1;
    return 0;
}

static struct px_acme_sched sched_of(const struct px_acme_manager *m, const struct lineage *l, int with_failures)
{
    struct px_acme_sched s = {
        .not_after_ms = l->present ? (int64_t)l->disk.not_after * 1000 : 0,
        .names_missing = names_missing(l),
        .renew_before_ms = m->renew_before_ms,
        .window_at_ms = l->window_at_ms,
        .failures = with_failures ? l->failures : 0,
        .last_failure_ms = l->last_failure_ms,
        .retry_ms = m->retry_ms,
        .check_interval_ms = m->check_interval_ms,
    };
    return s;
}

/* ---- lineages on disk ---- */

/* (Re)read l from disk. Returns 1 when the TLS part must be rebuilt: the
 * version changed, or the one on disk is not the one served. A lineage
 * that is broken on disk (an update by hand or by certbot half done) keeps
 * what was read before: the TLS part in service keeps its certificate in
 * memory, and the next renewal writes a whole new version. */
static int load(struct px_acme_manager *m, struct lineage *l)
{
    struct px_acme_lineage d;
    char err[512] = "";
    int before = l->present ? l->disk.version : 0;
    memset(&d, 0, sizeof(d));
    int rc = px_acme_store_load(m->config_dir, l->name, &d, err, sizeof(err));
    if (rc < 0) {
        if (strcmp(l->load_err, err) != 0)
            px_log_error("acme %s: lineage in %s is unusable: %s", l->name, m->config_dir, err);
        snprintf(l->load_err, sizeof(l->load_err), "%s", err);
        px_acme_lineage_clear(&d);
        return 0;
    }
    l->load_err[0] = '\0';
    if (rc == 1) {
        if (l->present)
            px_acme_lineage_clear(&l->disk);
        l->disk = d;
        l->present = 1;
    } else {
        px_acme_lineage_clear(&d);
        if (l->present) {
            px_acme_lineage_clear(&l->disk);
            l->present = 0;
        }
    }
    int after = l->present ? l->disk.version : 0;
    return after != before || (m->tls_built && after != l->served_version);
}

static struct lineage *find(struct px_acme_manager *m, const char *name)
{
    for (struct lineage *l = m->lineages; l; l = l->next)
        if (strcasecmp(l->name, name) == 0)
            return l;
    return NULL;
}

static void lineage_free(struct lineage *l)
{
    if (l == NULL)
        return;
    if (l->ari)
        px_acme_op_cancel(l->ari);
    if (l->present)
        px_acme_lineage_clear(&l->disk);
    px_acme_shared_cancel(l->m->sh, l);
    px_acme_shared_cert_free(l->take);
    free(l->name);
    px_strv_free(l->want, l->nwant);
    free(l->service);
    free(l);
}

/* ---- swapping certificates in ---- */

static void certs_changed(struct px_acme_manager *m)
{
    char err[1024];
    if (m->hooks.certs_changed && m->hooks.certs_changed(m->hooks.arg, err, sizeof(err)) < 0)
        px_log_error("acme: serving the new certificates failed, the current ones stay: %s", err);
}

/* ---- waiters (cert renew) ---- */

static void waiter_free(struct waiter *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->e[i].name);
    free(w->e);
    free(w);
}

static void waiters_note(struct px_acme_manager *m, const char *name, enum wstate st, const struct px_acme_error *err)
{
    for (struct waiter *w = m->waiters; w; w = w->next)
        for (size_t i = 0; i < w->n; i++)
            if (w->e[i].st == W_PENDING && strcasecmp(w->e[i].name, name) == 0) {
                w->e[i].st = st;
                if (err)
                    w->e[i].err = *err;
            }
    event_active(m->kick, 0, 0);
}

/* Answer the waiters whose lineages all ended (from the event loop). */
static void waiters_answer(struct px_acme_manager *m)
{
    for (struct waiter **pp = &m->waiters; *pp;) {
        struct waiter *w = *pp;
        int pending = 0;
        for (size_t i = 0; i < w->n; i++)
            pending |= w->e[i].st == W_PENDING;
        if (pending) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        json_t *renewed = json_array(), *skipped = json_array(), *failed = json_array();
        char msg[2048] = "";
        size_t off = 0, nfailed = 0;
        for (size_t i = 0; i < w->n; i++) {
            const struct wentry *e = &w->e[i];
            if (e->st == W_RENEWED) {
                json_array_append_new(renewed, json_string(e->name));
            } else if (e->st == W_SKIPPED) {
                json_array_append_new(skipped, json_string(e->name));
            } else {
                json_array_append_new(failed, json_pack("{s:s, s:s, s:s}", "name", e->name, "type", e->err.type,
                                                        "detail", e->err.detail));
                if (off < sizeof(msg))
                    off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s%s: %s: %s", nfailed ? "; " : "",
                                            e->name, e->err.type, e->err.detail);
                nfailed++;
            }
        }
        json_t *res = json_pack("{s:o, s:o, s:o}", "renewed", renewed, "skipped", skipped, "failed", failed);
        if (w->done)
            w->done(w->arg, nfailed ? PX_E_RENEWAL_FAILED : PX_E_OK, nfailed ? msg : NULL, res);
        json_decref(res);
        waiter_free(w);
    }
}

/* ---- the renewal ---- */

static void run_queue(struct px_acme_manager *m);
static void arm(struct px_acme_manager *m);
static void attempt_end(struct attempt *a);

static void remove_lineage(struct px_acme_manager *m, struct lineage *l)
{
    for (struct lineage **pp = &m->lineages; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    struct px_acme_error e;
    set_err(&e, "internal", "the lineage is no longer configured");
    waiters_note(m, l->name, W_FAILED, &e);
    lineage_free(l);
}

/* The token table (px/challenge.h). One order runs at a time, so a token
 * is never published twice at once (acme.h's "count" case cannot arise).
 * storage = redis: in Redis too (P acme:token:TOKEN), for the instance the
 * CA's validation request reaches; the client waits for Redis to have them
 * before it triggers the challenges (ch_sync). */
static int ch_publish(void *arg, const char *token, const char *key_authorization)
{
    struct px_acme_manager *m = arg;
    if (px_challenge_put(token, key_authorization) < 0)
        return -1;
    if (m->redis && m->sh)
        px_acme_shared_token_put(m->sh, token, key_authorization);
    return 0;
}

static void ch_unpublish(void *arg, const char *token)
{
    struct px_acme_manager *m = arg;
    px_challenge_remove(token);
    if (m->redis && m->sh)
        px_acme_shared_token_del(m->sh, token);
}

static int ch_sync(void *arg, void (*ready)(void *ctx, int ok), void *ctx)
{
    struct px_acme_manager *m = arg;
    if (!m->redis || m->sh == NULL)
        return -1;
    return px_acme_shared_barrier(m->sh, ready, ctx);
}

static void ch_sync_cancel(void *arg, void *ctx)
{
    struct px_acme_manager *m = arg;
    px_acme_shared_cancel(m->sh, ctx);
}

static void on_hooks_done(void *arg, int nfailed)
{
    struct attempt *a = arg;
    a->hooks = NULL;
    if (nfailed)
        px_log_warn("acme %s: %d hook%s failed (see above); the renewal goes on", a->l->name, nfailed,
                    nfailed == 1 ? "" : "s");
    a->after_hooks(a);
}

/* Run renewal-hooks/KIND, then next(a) (at once when there is none). */
static void hooks(struct attempt *a, const char *kind, void (*next)(struct attempt *))
{
    struct lineage *l = a->l;
    a->after_hooks = next;
    a->hooks = px_acme_hooks_run(a->m->base, a->m->config_dir, kind, a->live_dir, (const char *const *)l->want,
                                 l->nwant, a->m->hook_timeout_ms, on_hooks_done, a);
    if (a->hooks == NULL)
        next(a);
}

static void after_post(struct attempt *a)
{
    attempt_end(a);
}

static void after_deploy(struct attempt *a)
{
    hooks(a, "post", after_post);
}

/* Write cert into certbot's layout here, then the deploy hooks. */
static void save_local(struct attempt *a, const struct px_acme_cert *cert)
{
    struct px_acme_manager *m = a->m;
    struct lineage *l = a->l;
    struct px_acme_lineage out;
    char e[512] = "";
    memset(&out, 0, sizeof(out));
    if (px_acme_store_save(m->config_dir, l->name, m->directory, (const char *const *)l->want, l->nwant, cert, &out,
                           e, sizeof(e)) < 0) {
        a->failed = 1;
        set_err(&a->err, "io", "saving the new certificate: %s", e);
        px_acme_lineage_clear(&out);
        if (a->tc)
            attempt_end(a); /* a version taken from Redis: no pre hook ran, so no post */
        else
            hooks(a, "post", after_post);
        return;
    }
    if (l->present)
        px_acme_lineage_clear(&l->disk);
    l->disk = out;
    l->present = 1;
    l->load_err[0] = '\0';
    a->saved = 1;
    hooks(a, "deploy", a->tc ? after_post : after_deploy);
}

static struct px_acme_cert kept_cert(const struct attempt *a)
{
    struct px_acme_cert c = {a->pem[0], a->pem[1], a->pem[2], a->pem[3], a->not_before, a->not_after};
    return c;
}

static void on_written(void *arg, long long version, const char *err)
{
    struct attempt *a = arg;
    struct lineage *l = a->l;
    struct px_acme_cert c = kept_cert(a);
    if (version > 0) {
        px_log_info("acme %s: stored in Redis as version %lld and announced", l->name, version);
        l->rversion = version;
        save_local(a, &c);
    } else if (version == 0) {
        a->failed = 1;
        set_err(&a->err, "lock_lost",
                "the lock expired while ordering and another instance took it: this certificate is not stored "
                "(the other instance's will be taken)");
        hooks(a, "post", after_post);
    } else {
        px_log_warn("acme %s: the new certificate could not be stored in Redis (%s): it serves on this instance "
                    "only until the next renewal",
                    l->name, err);
        save_local(a, &c);
    }
}

static void on_obtained(void *arg, const struct px_acme_cert *cert, const struct px_acme_error *err)
{
    struct attempt *a = arg;
    struct px_acme_manager *m = a->m;
    struct lineage *l = a->l;
    a->op = NULL;
    if (cert == NULL) {
        a->failed = 1;
        a->err = *err;
        hooks(a, "post", after_post);
        return;
    }
    if (!m->redis || a->lock_value == NULL) {
        save_local(a, cert);
        return;
    }
    /* storage = redis: into Redis first (fenced: a holder that lost the
     * lock stores nothing, here or there), then here */
    const char *src[4] = {cert->privkey_pem, cert->cert_pem, cert->chain_pem, cert->fullchain_pem};
    for (int i = 0; i < 4; i++)
        if ((a->pem[i] = strdup(src[i])) == NULL) {
            a->failed = 1;
            set_err(&a->err, "internal", "out of memory");
            hooks(a, "post", after_post);
            return;
        }
    a->not_before = cert->not_before;
    a->not_after = cert->not_after;
    if (px_acme_shared_write(m->sh, l->name, a->lock_value, (const char *const *)l->want, l->nwant, cert, on_written,
                             a) < 0)
        on_written(a, -1, "Redis is not reachable");
}

static void after_pre(struct attempt *a)
{
    struct lineage *l = a->l;
    px_log_info("acme %s: ordering a certificate for %zu name%s from %s", l->name, l->nwant,
                l->nwant == 1 ? "" : "s", a->m->directory);
    a->op = px_acme_obtain(a->m->client, (const char *const *)l->want, l->nwant, &a->m->chops, OBTAIN_TIMEOUT_MS,
                           on_obtained, a);
    if (a->op == NULL) {
        a->failed = 1;
        set_err(&a->err, "internal", "out of memory starting the order");
        hooks(a, "post", after_post);
    }
}

/* config_dir/accounts, certbot's (out holds 4200 bytes). */
static const char *accounts_dir(const struct px_acme_manager *m, char *out, size_t n)
{
    snprintf(out, n, "%s/accounts", m->config_dir);
    return out;
}

/* Everything an order needs that may be missing: the tree, the client. */
static int ready(struct px_acme_manager *m, struct px_acme_error *e)
{
    char err[512] = "";
    if (!m->store_ready) {
        if (px_acme_store_init(m->config_dir, err, sizeof(err)) < 0) {
            set_err(e, "io", "config_dir %s: %s", m->config_dir, err);
            return -1;
        }
        m->store_ready = 1;
    }
    if (m->client && m->client_stale) {
        for (struct lineage *l = m->lineages; l; l = l->next)
            if (l->ari) {
                px_acme_op_cancel(l->ari);
                l->ari = NULL;
            }
        px_acme_client_free(m->client);
        m->client = NULL;
    }
    if (m->client == NULL) {
        char accounts[4200];
        struct px_acme_client_conf cc = {m->directory, m->ca_bundle, m->email,
                                         accounts_dir(m, accounts, sizeof(accounts)), m->account_id};
        if ((m->client = px_acme_client_new(m->base, &cc, err, sizeof(err))) == NULL) {
            set_err(e, "internal", "ACME client for %s: %s", m->directory, err);
            return -1;
        }
        m->client_stale = 0;
    }
    return 0;
}

/* ---- storage = redis ---- */

static char *read_small(const char *path);

static void on_announce(void *arg, const char *name, long long version);
static void on_resync(void *arg);

/* The Redis side, made when first needed; NULL without a cluster. */
static struct px_acme_shared *shared(struct px_acme_manager *m)
{
    const unsigned char *key = m->cluster ? px_cluster_secret(m->cluster) : NULL;
    if (!m->redis || key == NULL)
        return NULL;
    if (m->sh == NULL && (m->sh = px_acme_shared_new(m->cluster, key, on_announce, on_resync, m)) == NULL)
        px_log_error("acme: out of memory for the Redis storage");
    return m->sh;
}

/* Redis's version c is one to install here instead of ordering: all the
 * names wanted, not due, and newer than the files here. */
static int should_take(struct px_acme_manager *m, struct lineage *l, const struct px_acme_shared_cert *c)
{
    for (size_t i = 0; i < l->nwant; i++)
        if (!strv_has(c->names, c->nnames, l->want[i]))
            return 0;
    if ((int64_t)c->not_after * 1000 - (int64_t)m->renew_before_ms <= (int64_t)px_wall_ms())
        return 0;
    if (!l->present || c->not_after > l->disk.not_after)
        return 1;
    if (c->not_after < l->disk.not_after || c->version == l->rversion)
        return 0;
    /* the same expiry: another certificate only if the files differ */
    char *mine = read_small(l->disk.fullchain);
    int differs = mine == NULL || strcmp(mine, c->fullchain) != 0;
    free(mine);
    if (!differs)
        l->rversion = c->version;
    return differs;
}

static void kick(struct px_acme_manager *m)
{
    event_active(m->kick, 0, 0);
}

static void on_fetch_check(void *arg, int rc, struct px_acme_shared_cert *c, const char *err)
{
    struct lineage *l = arg;
    struct px_acme_manager *m = l->m;
    l->fetching = 0;
    if (rc == -2) {
        if (strcmp(l->take_err, err) != 0)
            px_log_error("acme %s: the certificate in Redis is not taken: %s", l->name, err);
        snprintf(l->take_err, sizeof(l->take_err), "%s", err);
        return;
    }
    if (rc != 1)
        return;
    l->take_err[0] = '\0';
    if (l->running || l->gone || !should_take(m, l, c)) {
        px_acme_shared_cert_free(c);
        return;
    }
    px_acme_shared_cert_free(l->take);
    l->take = c;
    l->queued = 1;
    l->busy_until_ms = 0;
    kick(m);
}

/* Look at Redis's version of l (asynchronously): a newer one is queued
 * for installing. */
static void fetch_check(struct px_acme_manager *m, struct lineage *l)
{
    struct px_acme_shared *sh = shared(m);
    if (sh == NULL || l->fetching || l->running || l->gone)
        return;
    if (px_acme_shared_fetch(sh, l->name, on_fetch_check, l) == 0)
        l->fetching = 1;
}

static void on_announce(void *arg, const char *name, long long version)
{
    struct px_acme_manager *m = arg;
    struct lineage *l = find(m, name);
    if (l && version > l->rversion) {
        px_log_info("acme %s: version %lld announced in Redis", l->name, version);
        fetch_check(m, l);
    }
}

/* Redis answers (the lock, or the subscription is back): said once after
 * defer() said it was not. */
static void redis_back(struct px_acme_manager *m)
{
    if (m->redis_down_logged)
        px_log_info("acme: Redis answers again: certificates may be ordered");
    m->redis_down_logged = 0;
}

/* The subscription is (back) up: what was announced meanwhile is lost,
 * and what waited for Redis may go on. */
static void on_resync(void *arg)
{
    struct px_acme_manager *m = arg;
    int64_t now = px_wall_ms();
    redis_back(m);
    for (struct lineage *l = m->lineages; l; l = l->next) {
        fetch_check(m, l);
        if (l->defers && !l->running && !l->queued)
            l->next_check_ms = now;
        l->busy_until_ms = 0;
    }
    if (m->started)
        arm(m);
    kick(m);
}

/* No attempt: Redis cannot be asked for the lock (one order at a time is
 * kept, so none starts). Logged once until Redis answers again. */
static void defer(struct attempt *a, const char *why)
{
    struct px_acme_manager *m = a->m;
    if (!m->redis_down_logged)
        px_log_error("acme: Redis (storage = redis) %s: no certificate is ordered until it answers; the ones in "
                     "service stay",
                     why);
    m->redis_down_logged = 1;
    a->deferred = 1;
    set_err(&a->err, "redis", "Redis %s: no order starts without its lock", why);
    attempt_end(a);
}

static void on_extended(void *arg, int rc, const char *text)
{
    struct attempt *a = arg;
    if (rc == 0 && !a->lost_logged++)
        px_log_warn("acme %s: the Redis lock expired while ordering (another instance may take it): this order's "
                    "certificate will not be stored",
                    a->l->name);
}

static void on_extend_timer(evutil_socket_t fd, short what, void *arg)
{
    struct attempt *a = arg;
    PX_UNUSED(fd);
    PX_UNUSED(what);
    if (a->lock_value && a->m->sh)
        px_acme_shared_extend(a->m->sh, a->l->name, a->lock_value, a->m->lock_timeout_ms, on_extended, a);
}

/* Install Redis's version a->tc here: certbot's files, deploy hooks, swap. */
static void take_install(struct attempt *a)
{
    struct lineage *l = a->l;
    struct px_acme_shared_cert *c = a->tc;
    struct px_acme_cert cert = {c->privkey, c->cert, c->chain, c->fullchain, 0, c->not_after};
    px_log_info("acme %s: taking version %lld from Redis (ordered by %s)", l->name, c->version,
                c->instance ? c->instance : "another instance");
    l->rversion = c->version;
    save_local(a, &cert);
}

static void on_account_pulled(void *arg, int rc, int changed, const char *id, const char *err)
{
    struct attempt *a = arg;
    struct px_acme_manager *m = a->m;
    struct lineage *l = a->l;
    if (rc < 0)
        px_log_warn("acme: the account in Redis is not used: %s", err);
    if (rc == 0)
        a->push_account = 1;
    if (rc == 1 && !str_eq(m->account_id, id)) {
        free(m->account_id); /* the one to load, whatever else accounts/ holds */
        m->account_id = strdup(id);
        changed = 1;
    }
    if (changed) {
        px_log_info("acme: using the account stored in Redis for %s", m->directory);
        m->client_stale = 1;
        if (ready(m, &a->err) < 0) {
            a->failed = 1;
            attempt_end(a);
            return;
        }
    }
    px_log_info("acme %s: %s", l->name, l->present ? "renewing" : "obtaining the first certificate");
    hooks(a, "pre", after_pre);
}

static void on_fetch_locked(void *arg, int rc, struct px_acme_shared_cert *c, const char *err)
{
    struct attempt *a = arg;
    struct px_acme_manager *m = a->m;
    struct lineage *l = a->l;
    if (rc == 1 && should_take(m, l, c)) {
        a->tc = c;
        take_install(a);
        return;
    }
    px_acme_shared_cert_free(c);
    if (rc == -2) {
        /* not ordered either: a version sealed with another secret_file
         * would be overwritten with one the other instances cannot open */
        if (strcmp(l->take_err, err) != 0)
            px_log_error("acme %s: the certificate in Redis is not taken: %s", l->name, err);
        snprintf(l->take_err, sizeof(l->take_err), "%s", err);
        a->deferred = 1;
        set_err(&a->err, "secret", "%s", err);
        attempt_end(a);
        return;
    }
    if (rc == -1) {
        defer(a, err);
        return;
    }
    char accounts[4200];
    if (px_acme_shared_account_pull(m->sh, m->directory, accounts_dir(m, accounts, sizeof(accounts)),
                                    on_account_pulled, a) < 0)
        defer(a, "is not reachable");
}

static void on_locked(void *arg, int rc, const char *text)
{
    struct attempt *a = arg;
    struct px_acme_manager *m = a->m;
    struct lineage *l = a->l;
    if (rc < 0) {
        defer(a, text);
        return;
    }
    if (rc == 0) {
        if (!l->busy_logged)
            px_log_info("acme %s: the Redis lock is held (%s): waiting for that instance's certificate", l->name,
                        text);
        l->busy_logged = 1;
        a->busy = 1;
        attempt_end(a);
        return;
    }
    redis_back(m);
    l->busy_logged = 0;
    l->defers = 0;
    if ((a->lock_value = strdup(text)) == NULL ||
        (a->extend = event_new(m->base, -1, EV_PERSIST, on_extend_timer, a)) == NULL) {
        a->failed = 1;
        set_err(&a->err, "internal", "out of memory");
        attempt_end(a);
        return;
    }
    uint64_t every = m->lock_timeout_ms / 3;
    struct timeval tv = {(time_t)(every / 1000), (suseconds_t)(every % 1000) * 1000};
    event_add(a->extend, &tv);
    /* under the lock: maybe an instance stored a newer one meanwhile */
    if (px_acme_shared_fetch(m->sh, l->name, on_fetch_locked, a) < 0)
        defer(a, "is not reachable");
}

static void attempt_start(struct px_acme_manager *m, struct lineage *l)
{
    struct attempt *a = calloc(1, sizeof(*a));
    l->queued = 0;
    l->last_attempt_ms = px_wall_ms();
    if (a == NULL) {
        l->failures++;
        l->last_failure_ms = l->last_end_ms = px_wall_ms();
        l->outcome = OUT_FAILED;
        set_err(&l->err, "internal", "out of memory");
        waiters_note(m, l->name, W_FAILED, &l->err);
        return;
    }
    a->m = m;
    a->l = l;
    a->lock_fd = -1;
    l->running = 1;
    m->cur = a;
    snprintf(a->live_dir, sizeof(a->live_dir), "%s/live/%s", m->config_dir, l->name);
    if (ready(m, &a->err) < 0) {
        a->failed = 1;
        attempt_end(a);
        return;
    }
    char err[512] = "";
    if ((a->lock_fd = px_acme_store_lock(m->config_dir, err, sizeof(err))) < 0) {
        a->failed = 1;
        set_err(&a->err, "locked", "%s", err[0] ? err : "another renewal (proxyd or certbot) holds config_dir's lock");
        attempt_end(a);
        return;
    }
    if (l->take) { /* a newer version in Redis: installed, not ordered */
        a->tc = l->take;
        l->take = NULL;
        take_install(a);
        return;
    }
    if (m->redis) {
        struct px_acme_shared *sh = shared(m);
        if (sh == NULL)
            defer(a, m->cluster ? "storage is not available" : "is not configured until a restart ([cluster])");
        else if (px_acme_shared_lock(sh, l->name, m->lock_timeout_ms, on_locked, a) < 0)
            defer(a, "is not reachable");
        return;
    }
    px_log_info("acme %s: %s", l->name, l->present ? "renewing" : "obtaining the first certificate");
    hooks(a, "pre", after_pre);
}

/* What an attempt holds in Redis and memory (not the file lock). */
static void attempt_release(struct attempt *a)
{
    struct px_acme_manager *m = a->m;
    if (a->extend)
        event_free(a->extend);
    a->extend = NULL;
    if (a->lock_value && m->sh)
        px_acme_shared_unlock(m->sh, a->l->name, a->lock_value);
    free(a->lock_value);
    a->lock_value = NULL;
    if (a->push_account && m->sh) {
        char accounts[4200];
        px_acme_shared_account_push(m->sh, m->directory, accounts_dir(m, accounts, sizeof(accounts)));
    }
    a->push_account = 0;
    px_acme_shared_cancel(m->sh, a);
    px_acme_shared_cert_free(a->tc);
    a->tc = NULL;
    for (int i = 0; i < 4; i++) {
        if (a->pem[i])
            OPENSSL_cleanse(a->pem[i], strlen(a->pem[i]));
        free(a->pem[i]);
        a->pem[i] = NULL;
    }
}

static void attempt_end(struct attempt *a)
{
    struct px_acme_manager *m = a->m;
    struct lineage *l = a->l;
    int64_t now = px_wall_ms();
    int took = a->tc != NULL;
    if (a->lock_fd >= 0)
        px_acme_store_unlock(a->lock_fd);
    m->cur = NULL;
    l->running = 0;
    attempt_release(a);
    if (a->busy || a->deferred) {
        /* no attempt was made: neither a failure nor a success */
        if (a->busy) {
            l->queued = 1; /* again soon, or at the announcement */
            l->busy_until_ms = now + BUSY_RETRY_MS;
        } else {
            l->defers++;
            l->queued = 0;
            l->next_check_ms = now + (int64_t)px_acme_backoff_ms(l->defers, m->retry_ms, m->check_interval_ms);
            waiters_note(m, l->name, W_FAILED, &a->err);
        }
        free(a);
        if (l->gone)
            remove_lineage(m, l);
        kick(m);
        return;
    }
    l->last_end_ms = now;
    if (a->saved)
        certs_changed(m);
    if (a->failed) {
        l->outcome = OUT_FAILED;
        l->err = a->err;
        l->failures++;
        l->last_failure_ms = now;
        char when[32];
        human_delay(when, sizeof(when), px_acme_backoff_ms(l->failures, m->retry_ms, m->check_interval_ms));
        px_log_error("acme %s: %s failed: %s: %s; %s, next attempt in %s", l->name,
                     l->present ? "renewal" : "issuance", a->err.type, a->err.detail,
                     l->present ? "the current certificate stays in service" : "the default certificate serves",
                     when);
        const char *type = a->err.type[0] ? a->err.type : "error";
        if (strncmp(type, "urn:ietf:params:acme:error:", 27) == 0 && type[27])
            type += 27; /* "rateLimited", "connection", ... */
        px_metrics_acme_done(l->name, type, a->err.detail);
        waiters_note(m, l->name, W_FAILED, &a->err);
    } else {
        l->outcome = OUT_OK;
        memset(&l->err, 0, sizeof(l->err));
        l->failures = 0;
        l->window_start_ms = l->window_end_ms = l->window_at_ms = 0; /* the window was the old certificate's */
        char exp[32];
        time_t na = l->disk.not_after;
        struct tm tm;
        gmtime_r(&na, &tm);
        strftime(exp, sizeof(exp), "%Y-%m-%dT%H:%M:%SZ", &tm);
        px_log_info("acme %s: certificate version %d installed%s, valid until %s", l->name, l->disk.version,
                    took ? " (taken from Redis)" : "", exp);
        char msg[96];
        snprintf(msg, sizeof(msg), "certificate version %d installed, valid until %s", l->disk.version, exp);
        px_metrics_acme_done(l->name, "ok", msg);
        waiters_note(m, l->name, W_RENEWED, NULL);
    }
    free(a);
    struct px_acme_sched s = sched_of(m, l, 1);
    int64_t due = px_acme_due_ms(&s), cap = now + (int64_t)m->check_interval_ms;
    l->next_check_ms = due < cap ? due : cap;
    if (l->gone)
        remove_lineage(m, l);
    event_active(m->kick, 0, 0);
}

static void run_queue(struct px_acme_manager *m)
{
    if (m->cur || !m->started) /* not before px_acme_manager_start (the privilege drop) */
        return;
    int64_t now = px_wall_ms();
    for (struct lineage *l = m->lineages; l; l = l->next)
        if (l->queued && !l->gone && l->busy_until_ms <= now) {
            attempt_start(m, l);
            return;
        }
}

/* ---- checks ---- */

static void on_window(void *arg, int ok, time_t start, time_t end)
{
    struct lineage *l = arg;
    struct px_acme_manager *m = l->m;
    l->ari = NULL;
    if (!ok)
        return;
    int64_t s = (int64_t)start * 1000, e = (int64_t)end * 1000;
    if (s == l->window_start_ms && e == l->window_end_ms)
        return;
    uint64_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        r = (uint64_t)px_now_us();
    l->window_start_ms = s;
    l->window_end_ms = e;
    l->window_at_ms = px_acme_window_pick(s, e, r);
    px_log_info("acme %s: the CA suggests renewing between %lld and %lld (Unix time)", l->name,
                (long long)start, (long long)end);
    if (l->window_at_ms < l->next_check_ms && !l->running && !l->queued) {
        l->next_check_ms = l->window_at_ms;
        arm(m);
    }
}

static char *read_small(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *buf = malloc(65537);
    size_t n = buf ? fread(buf, 1, 65536, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

/* Ask the CA for its renewal window (RFC 9773), when it can be asked. */
static void ask_window(struct px_acme_manager *m, struct lineage *l)
{
    if (l->ari || !l->present || m->client == NULL || m->client_stale)
        return;
    char path[4300];
    snprintf(path, sizeof(path), "%s/cert.pem", l->disk.live_dir);
    char *pem = read_small(path);
    if (pem == NULL)
        return;
    l->ari = px_acme_renewal_info(m->client, pem, on_window, l);
    free(pem);
}

/* Look at l now: re-read it, ask for the window, queue it when due. */
static void check(struct px_acme_manager *m, struct lineage *l, int64_t now, int *changed)
{
    if (l->running || l->gone)
        return;
    if (load(m, l))
        *changed = 1;
    ask_window(m, l);
    struct px_acme_sched s = sched_of(m, l, 1);
    int64_t due = px_acme_due_ms(&s), cap = now + (int64_t)m->check_interval_ms;
    if (m->redis) {
        /* another instance may have stored a newer one (a missed announcement) */
        fetch_check(m, l);
        if (cap > now + RECHECK_MS)
            cap = now + RECHECK_MS;
    }
    if (due <= now)
        l->queued = 1;
    l->next_check_ms = due > now && due < cap ? due : cap;
}

static void arm(struct px_acme_manager *m)
{
    if (!m->started)
        return;
    int64_t now = px_wall_ms(), next = now + (int64_t)m->check_interval_ms;
    for (struct lineage *l = m->lineages; l; l = l->next) {
        if (!l->running && !l->gone && !l->queued && l->next_check_ms < next)
            next = l->next_check_ms;
        if (l->queued && !l->running && l->busy_until_ms && l->busy_until_ms < next)
            next = l->busy_until_ms;
    }
    int64_t d = next - now;
    if (d < MIN_SLEEP_MS)
        d = MIN_SLEEP_MS;
    struct timeval tv = {(time_t)(d / 1000), (suseconds_t)(d % 1000) * 1000};
    event_add(m->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct px_acme_manager *m = arg;
    PX_UNUSED(fd);
    PX_UNUSED(what);
    int64_t now = px_wall_ms();
    int changed = 0;
    if (!m->store_ready) {
        char err[512];
        if (px_acme_store_init(m->config_dir, err, sizeof(err)) == 0)
            m->store_ready = 1;
    }
    for (struct lineage *l = m->lineages; l; l = l->next)
        if (!l->queued && l->next_check_ms <= now)
            check(m, l, now, &changed);
    if (changed)
        certs_changed(m);
    run_queue(m);
    arm(m);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct px_acme_manager *m = arg;
    PX_UNUSED(fd);
    PX_UNUSED(what);
    run_queue(m);
    waiters_answer(m);
    arm(m);
}

/* ---- which lineages ---- */

/* Add names to the lineage called name (made when new), marking it wanted. */
static struct lineage *want(struct px_acme_manager *m, const char *name, char *const *names, size_t n,
                            const char *service, int *fresh)
{
    struct lineage *l = find(m, name);
    if (l == NULL) {
        if ((l = calloc(1, sizeof(*l))) == NULL || (l->name = strdup(name)) == NULL) {
            free(l);
            return NULL;
        }
        l->m = m;
        /* [acme]'s lineage first, the services' after it in their order */
        struct lineage **pp = &m->lineages;
        if (service)
            while (*pp)
                pp = &(*pp)->next;
        l->next = *pp;
        *pp = l;
        *fresh = 1;
    }
    if (!l->wanted) {
        l->wanted = 1;
        l->gone = 0;
        l->from_config = 0;
        free(l->service);
        l->service = NULL;
        px_strv_free(l->want, l->nwant);
        l->want = NULL;
        l->nwant = 0;
    }
    if (service == NULL)
        l->from_config = 1;
    else if (l->service == NULL)
        l->service = strdup(service);
    for (size_t i = 0; i < n; i++) {
        if (strv_has(l->want, l->nwant, names[i]))
            continue;
        char **g = realloc(l->want, (l->nwant + 1) * sizeof(*g));
        if (g == NULL)
            break;
        l->want = g;
        if ((g[l->nwant] = strdup(names[i])) != NULL)
            l->nwant++;
    }
    return l;
}

/* Make the lineages what [acme] and the services ask for. */
static void reconcile(struct px_acme_manager *m)
{
    /* what each lineage wanted before, to see whose names changed */
    struct before {
        struct lineage *l;
        char **want;
        size_t nwant;
    } *before = NULL;
    size_t nb = 0;
    for (struct lineage *l = m->lineages; l; l = l->next)
        nb++;
    if (nb && (before = calloc(nb, sizeof(*before))) == NULL)
        nb = 0;
    size_t k = 0;
    for (struct lineage *l = m->lineages; l; l = l->next) {
        if (k < nb) {
            before[k].l = l;
            before[k].want = px_strv_dup((const char *const *)l->want, l->nwant);
            before[k].nwant = before[k].want ? l->nwant : 0;
            k++;
        }
        l->wanted = 0;
    }
    int changed = 0;
    if (m->ndomains) {
        int fresh = 0;
        struct lineage *l = want(m, m->domains[0], m->domains, m->ndomains, NULL, &fresh);
        if (l && fresh && load(m, l))
            changed = 1;
    }
    for (size_t i = 0; i < m->nsvcs; i++) {
        int fresh = 0;
        const struct svc_copy *s = &m->svcs[i];
        if (s->nhosts == 0)
            continue;
        struct lineage *l = want(m, s->hosts[0], s->hosts, s->nhosts, s->service, &fresh);
        if (l && fresh) {
            px_log_info("acme %s: lineage for service %s (deploy --tls)", l->name, s->service);
            if (load(m, l))
                changed = 1;
        }
    }
    int64_t now = px_wall_ms();
    for (size_t i = 0; i < nb; i++) {
        struct lineage *l = before[i].l;
        if (l->wanted && !strv_same_set(before[i].want, before[i].nwant, l->want, l->nwant))
            l->next_check_ms = now; /* the names changed: look again now */
        px_strv_free(before[i].want, before[i].nwant);
    }
    free(before);
    for (struct lineage *l = m->lineages, *next; l; l = next) {
        next = l->next;
        if (l->wanted || l->gone)
            continue;
        px_log_info("acme %s: no longer configured: neither renewed nor served", l->name);
        if (l->served_version)
            changed = 1;
        if (l->running) {
            l->gone = 1;
            l->queued = 0;
        } else {
            remove_lineage(m, l);
        }
    }
    if (changed && m->started)
        certs_changed(m);
    if (m->started)
        arm(m);
}

static int copy_conf(struct px_acme_manager *m, const struct px_acme_conf *c)
{
    char *dir = strdup(c->directory), *email = dup_or_null(c->email), *cd = strdup(c->config_dir),
         *ca = dup_or_null(c->ca_bundle);
    char **doms = px_strv_dup((const char *const *)c->domains, c->ndomains);
    if (dir == NULL || cd == NULL || doms == NULL || (c->email && *c->email && !email) ||
        (c->ca_bundle && *c->ca_bundle && !ca)) {
        free(dir);
        free(email);
        free(cd);
        free(ca);
        px_strv_free(doms, c->ndomains);
        return -1;
    }
    if (m->directory && (!str_eq(m->directory, dir) || !str_eq(m->email, email) || !str_eq(m->ca_bundle, ca) ||
                         !str_eq(m->config_dir, cd)))
        m->client_stale = 1;
    if (m->config_dir && !str_eq(m->config_dir, cd))
        m->store_ready = 0;
    if (m->directory && !str_eq(m->directory, dir)) {
        free(m->account_id); /* another CA's */
        m->account_id = NULL;
    }
    free(m->directory);
    free(m->email);
    free(m->config_dir);
    free(m->ca_bundle);
    px_strv_free(m->domains, m->ndomains);
    m->directory = dir;
    m->email = email;
    m->config_dir = cd;
    m->ca_bundle = ca;
    m->domains = doms;
    m->ndomains = c->ndomains;
    m->renew_before_ms = c->renew_before_ms;
    m->check_interval_ms = c->check_interval_ms;
    m->retry_ms = c->retry_interval_ms;
    m->hook_timeout_ms = c->hook_timeout_ms;
    m->lock_timeout_ms = c->lock_timeout_ms ? c->lock_timeout_ms : 60000;
    if (m->redis && !c->storage_redis && m->sh && m->cur == NULL) {
        px_acme_shared_free(m->sh); /* back to files alone */
        m->sh = NULL;
    }
    m->redis = c->storage_redis;
    return 0;
}

/* ---- the API ---- */

struct px_acme_manager *px_acme_manager_new(struct event_base *base, const struct px_acme_conf *conf,
                                            const struct px_acme_manager_hooks *hooks, char *err, size_t errlen)
{
    struct px_acme_manager *m = calloc(1, sizeof(*m));
    if (m == NULL)
        goto oom;
    m->base = base;
    m->hooks = *hooks;
    m->chops = (struct px_acme_challenge_ops){ch_publish, ch_unpublish, m, ch_sync, ch_sync_cancel};
    if (copy_conf(m, conf) < 0 || (m->timer = evtimer_new(base, on_timer, m)) == NULL ||
        (m->kick = event_new(base, -1, 0, on_kick, m)) == NULL)
        goto oom;
    reconcile(m);
    return m;
oom:
    snprintf(err, errlen, "out of memory");
    px_acme_manager_free(m);
    return NULL;
}

void px_acme_manager_free(struct px_acme_manager *m)
{
    if (m == NULL)
        return;
    if (m->cur) {
        struct attempt *a = m->cur;
        if (a->op)
            px_acme_op_cancel(a->op);
        if (a->hooks)
            px_acme_hooks_cancel(a->hooks);
        if (a->lock_fd >= 0)
            px_acme_store_unlock(a->lock_fd);
        a->push_account = 0;
        attempt_release(a);
        free(a);
    }
    while (m->waiters) {
        struct waiter *w = m->waiters;
        m->waiters = w->next;
        waiter_free(w);
    }
    while (m->lineages) {
        struct lineage *l = m->lineages;
        m->lineages = l->next;
        lineage_free(l);
    }
    px_acme_client_free(m->client);
    px_acme_shared_free(m->sh);
    free(m->account_id);
    for (size_t i = 0; i < m->nsvcs; i++) {
        free(m->svcs[i].service);
        px_strv_free(m->svcs[i].hosts, m->svcs[i].nhosts);
    }
    free(m->svcs);
    if (m->timer)
        event_free(m->timer);
    if (m->kick)
        event_free(m->kick);
    free(m->directory);
    free(m->email);
    free(m->config_dir);
    free(m->ca_bundle);
    px_strv_free(m->domains, m->ndomains);
    free(m);
}

int px_acme_manager_start(struct px_acme_manager *m, char *err, size_t errlen)
{
    int64_t now = px_wall_ms();
    m->started = 1;
    for (struct lineage *l = m->lineages; l; l = l->next)
        l->next_check_ms = now;
    int rc = 0;
    struct px_acme_error e;
    /* the tree, and the client now (renewalInfo is asked before anything is due) */
    if (ready(m, &e) < 0) {
        snprintf(err, errlen, "%s", e.detail);
        rc = -1;
    }
    arm(m);
    return rc;
}

void px_acme_manager_reconfigure(struct px_acme_manager *m, const struct px_acme_conf *conf)
{
    int dir_changed = !str_eq(m->config_dir, conf->config_dir);
    if (copy_conf(m, conf) < 0) {
        px_log_error("acme: out of memory applying the new [acme] settings; keeping the old ones");
        return;
    }
    reconcile(m);
    if (dir_changed) {
        int changed = 0;
        for (struct lineage *l = m->lineages; l; l = l->next)
            if (!l->running && load(m, l))
                changed = 1;
        if (changed && m->started)
            certs_changed(m);
    }
    int64_t now = px_wall_ms();
    for (struct lineage *l = m->lineages; l; l = l->next)
        if (l->next_check_ms > now + (int64_t)m->check_interval_ms)
            l->next_check_ms = now + (int64_t)m->check_interval_ms;
    if (m->started)
        arm(m);
}

void px_acme_manager_set_services(struct px_acme_manager *m, const struct px_acme_service *svcs, size_t n)
{
    int same = n == m->nsvcs;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(svcs[i].service, m->svcs[i].service) == 0 &&
               strv_same_set((char *const *)svcs[i].hosts, svcs[i].nhosts, m->svcs[i].hosts, m->svcs[i].nhosts);
    if (same)
        return;
    struct svc_copy *c = calloc(n ? n : 1, sizeof(*c));
    if (c == NULL) {
        px_log_error("acme: out of memory taking the --tls services");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        c[i].service = strdup(svcs[i].service);
        c[i].hosts = px_strv_dup(svcs[i].hosts, svcs[i].nhosts);
        c[i].nhosts = c[i].hosts ? svcs[i].nhosts : 0;
    }
    for (size_t i = 0; i < m->nsvcs; i++) {
        free(m->svcs[i].service);
        px_strv_free(m->svcs[i].hosts, m->svcs[i].nhosts);
    }
    free(m->svcs);
    m->svcs = c;
    m->nsvcs = n;
    for (size_t i = 0; i < n; i++)
        if (c[i].service == NULL)
            c[i].service = strdup("?");
    reconcile(m);
}

void px_acme_manager_reload(struct px_acme_manager *m)
{
    for (struct lineage *l = m->lineages; l; l = l->next)
        if (!l->running)
            load(m, l);
}

size_t px_acme_manager_served(const struct px_acme_manager *m)
{
    size_t n = 0;
    for (const struct lineage *l = m ? m->lineages : NULL; l; l = l->next)
        n += l->served_version != 0;
    return n;
}

struct px_tls *px_acme_manager_build_tls(struct px_acme_manager *m, const struct px_tls_conf *conf,
                                         const struct px_tls_sessions *sessions, char *err, size_t errlen)
{
    if (m == NULL)
        return px_tls_build(conf, sessions, err, errlen);
    size_t cap = conf->nsni;
    for (struct lineage *l = m->lineages; l; l = l->next)
        if (l->present && !l->gone)
            cap += l->disk.nnames;
    struct px_sni_conf *sni = calloc(cap ? cap : 1, sizeof(*sni));
    if (sni == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t n = 0;
    for (; n < conf->nsni; n++)
        sni[n] = conf->sni[n];
    for (struct lineage *l = m->lineages; l; l = l->next) {
        if (!l->present || l->gone)
            continue;
        char why[512];
        if (px_tls_check_pair(l->disk.fullchain, l->disk.privkey, why, sizeof(why)) < 0) {
            px_log_error("acme %s: not served: %s", l->name, why);
            continue;
        }
        for (size_t i = 0; i < l->disk.nnames; i++) {
            int taken = 0; /* by an sni = line (the operator's word wins) or an earlier lineage */
            for (size_t j = 0; j < n && !taken; j++)
                taken = strcasecmp(sni[j].name, l->disk.names[i]) == 0;
            if (taken)
                continue;
            sni[n++] = (struct px_sni_conf){l->disk.names[i], l->disk.fullchain, l->disk.privkey, 0};
        }
    }
    struct px_tls_conf c = *conf;
    c.sni = sni;
    c.nsni = n;
    struct px_tls *t = px_tls_build(&c, sessions, err, errlen);
    if (t) {
        /* what the new part serves (a lineage is in it when one of its names is) */
        m->tls_built = 1;
        for (struct lineage *l = m->lineages; l; l = l->next) {
            l->served_version = 0;
            for (size_t j = conf->nsni; l->present && j < n && !l->served_version; j++)
                if (sni[j].cert == l->disk.fullchain)
                    l->served_version = l->disk.version;
        }
    }
    free(sni);
    return t;
}

/* ---- cert status ---- */

/* The certificate's key as an operator tells two apart (a name with an
 * ECDSA and an RSA certificate): "ECDSA-P256", "RSA-2048", "Ed25519". */
static json_t *key_type_json(X509 *x)
{
    EVP_PKEY *k = X509_get0_pubkey(x);
    char text[64], group[32];
    size_t glen = 0;
    if (k == NULL)
        return json_null();
    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_EC:
        if (EVP_PKEY_get_group_name(k, group, sizeof(group), &glen) != 1)
            snprintf(group, sizeof(group), "%d", EVP_PKEY_get_bits(k));
        else if (strcmp(group, "prime256v1") == 0)
            snprintf(group, sizeof(group), "P256");
        else if (strcmp(group, "secp384r1") == 0)
            snprintf(group, sizeof(group), "P384");
        else if (strcmp(group, "secp521r1") == 0)
            snprintf(group, sizeof(group), "P521");
        snprintf(text, sizeof(text), "ECDSA-%s", group);
        break;
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
        snprintf(text, sizeof(text), "RSA-%d", EVP_PKEY_get_bits(k));
        break;
    default:
        snprintf(text, sizeof(text), "%s", OBJ_nid2sn(EVP_PKEY_get_base_id(k)));
        break;
    }
    return json_string(text);
}

/* notAfter, DNS names and key type (into o) of the first certificate in a
 * PEM file; not_after_ms and hosts may be NULL (not wanted). */
static int cert_file_info(const char *path, int64_t *not_after_ms, json_t *hosts, json_t *o)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL)
        return -1;
    struct tm tm;
    const ASN1_TIME *na = X509_get0_notAfter(x);
    if (not_after_ms != NULL)
        *not_after_ms = na && ASN1_TIME_to_tm(na, &tm) == 1 ? (int64_t)timegm(&tm) * 1000 : 0;
    GENERAL_NAMES *gens = hosts ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *p = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        json_array_append_new(hosts, json_stringn((const char *)p, (size_t)len));
    }
    GENERAL_NAMES_free(gens);
    json_object_set_new(o, "key_type", key_type_json(x));
    X509_free(x);
    return 0;
}

static void add_expiry(json_t *o, int64_t not_after_ms, int64_t now)
{
    json_object_set_new(o, "not_after", time_json(not_after_ms));
    if (not_after_ms > 0) {
        int64_t left = not_after_ms - now; /* whole days, rounded down (an expired one is negative) */
        int64_t days = left >= 0 ? left / 86400000 : -((-left + 86399999) / 86400000);
        json_object_set_new(o, "days_left", json_integer((json_int_t)days));
    } else {
        json_object_set_new(o, "days_left", json_null());
    }
}

static void file_entries(json_t *arr, const char *name, const char *files, int64_t now)
{
    char *copy = strdup(files), *save = NULL;
    for (char *p = copy ? strtok_r(copy, " \t", &save) : NULL; p; p = strtok_r(NULL, " \t", &save)) {
        json_t *hosts = json_array();
        int64_t na = 0;
        json_t *o = json_pack("{s:s, s:s}", "name", name, "source", "file");
        if (cert_file_info(p, &na, hosts, o) < 0)
            json_object_set_new(o, "error",
                                json_pack("{s:s, s:s}", "type", "io", "detail", "cannot read the certificate"));
        json_object_set_new(o, "hosts", hosts);
        add_expiry(o, na, now);
        json_object_set_new(o, "file", json_string(p));
        json_array_append_new(arr, o);
    }
    free(copy);
}

json_t *px_acme_manager_status(struct px_acme_manager *m, const struct px_tls_conf *tls)
{
    json_t *arr = json_array();
    int64_t now = px_wall_ms();
    if (tls && tls->certificate) {
        file_entries(arr, "default", tls->certificate, now);
        for (size_t i = 0; i < tls->nsni; i++)
            file_entries(arr, tls->sni[i].name, tls->sni[i].cert, now);
    }
    for (struct lineage *l = m ? m->lineages : NULL; l; l = l->next) {
        if (l->gone)
            continue;
        json_t *hosts = json_array(), *wanted = json_array();
        /* the certificate's names; the wanted ones until there is one */
        for (size_t i = 0; l->present && i < l->disk.nnames; i++)
            json_array_append_new(hosts, json_string(l->disk.names[i]));
        for (size_t i = 0; i < l->nwant; i++) {
            json_array_append_new(wanted, json_string(l->want[i]));
            if (!l->present)
                json_array_append_new(hosts, json_string(l->want[i]));
        }
        json_t *o = json_pack("{s:s, s:o, s:s}", "name", l->name, "hosts", hosts, "source", "acme");
        add_expiry(o, l->present ? (int64_t)l->disk.not_after * 1000 : 0, now);
        if (!l->present || cert_file_info(l->disk.fullchain, NULL, NULL, o) < 0)
            json_object_set_new(o, "key_type", json_null());
        char live[4200];
        snprintf(live, sizeof(live), "%s/live/%s", m->config_dir, l->name);
        json_object_set_new(o, "lineage", json_string(live));
        json_object_set_new(o, "version", json_integer(l->present ? l->disk.version : 0));
        json_object_set_new(o, "wanted", wanted);
        json_object_set_new(o, "service", l->service ? json_string(l->service) : json_null());
        json_object_set_new(o, "served", json_boolean(l->served_version != 0));
        const char *state = l->running                          ? "renewing"
                            : !l->present                       ? "missing"
                            : l->disk.not_after * 1000LL <= now ? "expired"
                                                                : "valid";
        json_object_set_new(o, "state", json_string(state));
        json_object_set_new(o, "last_attempt", time_json(l->last_attempt_ms));
        json_object_set_new(o, "outcome", l->running               ? json_string("renewing")
                                          : l->outcome == OUT_OK     ? json_string("ok")
                                          : l->outcome == OUT_FAILED ? json_string("failed")
                                                                     : json_null());
        if (l->outcome == OUT_FAILED)
            json_object_set_new(o, "error", json_pack("{s:s, s:s}", "type", l->err.type, "detail", l->err.detail));
        else if (l->load_err[0])
            json_object_set_new(o, "error", json_pack("{s:s, s:s}", "type", "io", "detail", l->load_err));
        json_object_set_new(o, "failures", json_integer(l->failures));
        json_object_set_new(o, "next_check",
                            l->running || l->queued ? json_string("now") : time_json(l->next_check_ms));
        if (l->window_start_ms)
            json_object_set_new(o, "renewal_window", json_pack("{s:o, s:o}", "start", time_json(l->window_start_ms),
                                                               "end", time_json(l->window_end_ms)));
        json_array_append_new(arr, o);
    }
    return json_pack("{s:o}", "certificates", arr);
}

/* ---- cert renew ---- */

void px_acme_manager_renew(struct px_acme_manager *m, int force, px_acme_renew_cb done, void *arg)
{
    size_t n = 0;
    for (struct lineage *l = m->lineages; l; l = l->next)
        n += !l->gone;
    struct waiter *w = calloc(1, sizeof(*w));
    if (w == NULL || (w->e = calloc(n ? n : 1, sizeof(*w->e))) == NULL) {
        free(w);
        /* answered from the loop like every other outcome */
        w = NULL;
    }
    if (w == NULL) {
        px_log_error("acme: out of memory for cert renew");
        json_t *res = json_object();
        done(arg, PX_E_INTERNAL, "out of memory", res);
        json_decref(res);
        return;
    }
    w->done = done;
    w->arg = arg;
    int64_t now = px_wall_ms();
    for (struct lineage *l = m->lineages; l; l = l->next) {
        if (l->gone)
            continue;
        struct wentry *e = &w->e[w->n++];
        e->name = strdup(l->name);
        struct px_acme_sched s = sched_of(m, l, 0); /* the operator asks: no backoff */
        if (force || l->running || l->queued || px_acme_due_ms(&s) <= now) {
            e->st = W_PENDING;
            if (!l->running)
                l->queued = 1;
        } else {
            e->st = W_SKIPPED;
        }
        if (e->name == NULL) {
            e->name = strdup("?");
            e->st = W_SKIPPED;
        }
    }
    w->next = m->waiters;
    m->waiters = w;
    event_active(m->kick, 0, 0);
}

void px_acme_manager_forget(struct px_acme_manager *m, void *arg)
{
    for (struct waiter *w = m ? m->waiters : NULL; w; w = w->next)
        if (w->arg == arg)
            w->done = NULL;
}

/* ---- storage = redis ---- */

void px_acme_manager_set_cluster(struct px_acme_manager *m, struct px_cluster *c)
{
    m->cluster = c;
    if (m->redis)
        shared(m); /* subscribed before the first check */
}
