/* px/acme_manager.h -- ACME lineages: which certificates proxyd obtains
 * and renews, when, and how they reach the TLS part of the snapshot.
 *
 * Lineages come from two places: [acme] domains (one lineage named after
 * domains[0], for all of them) and services deployed with `proxyctl deploy
 * --tls` (one lineage per service, named after its first host, for its
 * hosts). Each is certbot's layout under config_dir (px/acme.h); a lineage
 * found there at start -- certbot's own included -- is served as it is.
 *
 * The life of a lineage:
 *  - missing at start: the default certificate serves its names while it is
 *    obtained at once;
 *  - every check_interval (and at the due time): re-read from disk (a
 *    renewal by certbot is picked up), the CA's renewalInfo window asked for
 *    (RFC 9773), and renewed when due: now >= not_after - renew_before, or
 *    the time picked in the CA's window, whichever is first; or at once when
 *    the certificate lacks a name the lineage wants;
 *  - a renewal, one at a time: the store lock, renewal-hooks/pre, the order
 *    (HTTP-01 tokens in the px/challenge.h table), archive N+1 and the live/
 *    links, renewal-hooks/deploy, renewal-hooks/post, then a new TLS part is
 *    published (config and services parts kept; the session cache shared, so
 *    sessions stay resumable);
 *  - a failure keeps the certificate in service, logs the RFC 8555 error
 *    type and detail, and retries after retry_interval, doubling per
 *    consecutive failure up to check_interval.
 *
 * Serving: px_acme_manager_build_tls() builds a TLS part from [tls] plus,
 * for every lineage whose files are on disk and valid, an SNI entry per
 * name in its certificate. An explicit `sni =` line for a name wins over a
 * lineage (the operator's configuration is never overridden); a name two
 * lineages cover goes to the first ([acme] domains before services).
 *
 * Everything runs on the main thread's event base. A control-plane header. */
#ifndef PX_ACME_MANAGER_H
#define PX_ACME_MANAGER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <jansson.h>

#include "px/errors.h"

struct px_acme_conf;
struct px_tls_conf;
struct px_tls;
struct px_tls_sessions;
struct px_acme_manager;

/* ---- when a lineage is due (a pure function; times are Unix ms) ---- */

struct px_acme_sched {
    int64_t not_after_ms;       /* the certificate's notAfter; 0 = no certificate (due at once) */
    int names_missing;          /* the certificate lacks a wanted name (due at once) */
    uint64_t renew_before_ms;
    int64_t window_at_ms;       /* RFC 9773: the time picked in the CA's window; 0 = none */
    unsigned failures;          /* consecutive failed attempts */
    int64_t last_failure_ms;    /* when the last of them ended */
    uint64_t retry_ms;          /* the first backoff; doubles per further failure */
    uint64_t check_interval_ms; /* the backoff's cap */
};

/* The backoff after n >= 1 consecutive failures: retry_ms * 2^(n-1), at
 * most cap_ms (and at least 1 ms). */
uint64_t px_acme_backoff_ms(unsigned n, uint64_t retry_ms, uint64_t cap_ms);
/* When the lineage should next be attempted: the earlier of the expiry
 * rule and the CA's window (at once without a certificate or with a name
 * missing), but never before the backoff after the last failure ends. */
int64_t px_acme_due_ms(const struct px_acme_sched *s);
/* A time in [start, end) picked uniformly from r (RFC 9773 4.2); start when
 * the window is empty or inverted. */
int64_t px_acme_window_pick(int64_t start_ms, int64_t end_ms, uint64_t r);

/* ---- the manager ---- */

struct px_acme_manager_hooks {
    /* Lineage files changed (issued, renewed, found on disk): rebuild the TLS
     * part with px_acme_manager_build_tls and publish it. 0, or -1 with a
     * message (the certificate in service stays). */
    int (*certs_changed)(void *arg, char *err, size_t errlen);
    void *arg;
};

/* One service deployed with --tls. */
struct px_acme_service {
    const char *service;
    const char *const *hosts;   /* the lineage is named after hosts[0] */
    size_t nhosts;
};

/* A manager for conf (enabled; copied). Reads the [acme] lineage from disk
 * (nothing is written yet: this may run as root before the privilege drop).
 * NULL with a message in err (out of memory). */
struct px_acme_manager *px_acme_manager_new(struct event_base *base, const struct px_acme_conf *conf,
                                            const struct px_acme_manager_hooks *hooks, char *err, size_t errlen);
/* Cancels what runs (orders, hooks, waiters without an answer). NULL is fine. */
void px_acme_manager_free(struct px_acme_manager *m);
/* Make config_dir's tree (px_acme_store_init) and begin the schedule: a
 * missing lineage is obtained at once. Run as the user proxyd drops to.
 * 0, or -1 with a message (the manager then retries at every check). */
int px_acme_manager_start(struct px_acme_manager *m, char *err, size_t errlen);
/* A reload: new [acme] settings (enabled). Lineages no longer wanted stop
 * being renewed and served; new ones are read from disk or obtained. May
 * call certs_changed. */
void px_acme_manager_reconfigure(struct px_acme_manager *m, const struct px_acme_conf *conf);
/* The services deployed with --tls, all of them (after every change; the
 * same set again is cheap). May call certs_changed. */
void px_acme_manager_set_services(struct px_acme_manager *m, const struct px_acme_service *svcs, size_t n);
/* Re-read every lineage from disk (proxyctl cert reload). */
void px_acme_manager_reload(struct px_acme_manager *m);
/* How many lineages it serves (files on disk, valid). */
size_t px_acme_manager_served(const struct px_acme_manager *m);

/* The TLS part for conf plus the served lineages (see above), on the
 * session context `sessions` when it fits (px_tls_build). m NULL:
 * px_tls_build(conf, sessions). NULL with a message in err. */
struct px_tls *px_acme_manager_build_tls(struct px_acme_manager *m, const struct px_tls_conf *conf,
                                         const struct px_tls_sessions *sessions, char *err, size_t errlen);

/* [acme] storage = redis: the cluster whose Redis keeps the lineages; its
 * secret_file's key (px_cluster_secret) seals the private keys there.
 * Without a cluster or a key, storage = redis orders nothing. */
struct px_cluster;
void px_acme_manager_set_cluster(struct px_acme_manager *m, struct px_cluster *c);

/* `cert status`: {"certificates":[...]}: the [tls] files (source "file")
 * then the lineages (source "acme"); see px/control.h for the fields. m
 * may be NULL (files only). tls may be NULL (no [tls]). New reference. */
json_t *px_acme_manager_status(struct px_acme_manager *m, const struct px_tls_conf *tls);

/* `cert renew`: renew every lineage that is due, or all with force, and
 * answer once every attempt ended: PX_E_OK and result {"renewed":[...],
 * "skipped":[...]} when none failed, else PX_E_RENEWAL_FAILED with a
 * message naming each failed lineage, its error type and detail (result
 * holds the same lists plus "failed":[{"name","type","detail"}]; the types
 * are RFC 8555's and the client's, data for the operator, not protocol
 * codes), or PX_E_INTERNAL. result is borrowed. Called from the event loop,
 * never inside this call. */
typedef void (*px_acme_renew_cb)(void *arg, enum px_err code, const char *message, json_t *result);
void px_acme_manager_renew(struct px_acme_manager *m, int force, px_acme_renew_cb done, void *arg);
/* The client of a cert renew went away: its answer goes nowhere. */
void px_acme_manager_forget(struct px_acme_manager *m, void *arg);

#endif
