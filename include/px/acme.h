/* px/acme.h -- ACME certificates: the contracts between the three ACME
 * modules. Everything here runs on the main thread's event base (never on
 * a worker), and never blocks it.
 *
 *   proxy/acme/client.c  the RFC 8555 protocol client (libcurl multi on the event
 *                  base, OpenSSL ES256 JWS and CSR, jansson): obtains one
 *                  certificate for a list of names.
 *   proxy/acme/store.c   certbot's files under config_dir: archive/, live/,
 *                  renewal/, the lock; and the renewal hooks.
 *   proxy/acme/manager.c lineages from [acme] and `deploy --tls`: when to obtain
 *                  and renew, the HTTP-01 token table the workers answer
 *                  from, hooks, the certificate swap, proxyctl cert_*.
 *
 * Layout under config_dir (certbot's; see ../shared/ACME-TESTING.md):
 *   accounts/SERVER/PATH/ID/      the ACME account (ES256 key, registration)
 *   archive/NAME/{cert,chain,fullchain,privkey}N.pem     N = 1, 2, ...
 *   live/NAME/{cert,chain,fullchain,privkey}.pem -> ../../archive/NAME/...N.pem
 *   renewal/NAME.conf
 *   renewal-hooks/{pre,deploy,post}/
 * Directories 0700 (live/, archive/, accounts/), keys 0600.
 *
 * The HTTP-01 token table the workers answer from is data path, so it has
 * its own header, px/challenge.h (an "acme*" header is control plane to
 * `make layers`); the manager writes it, workers only read it. */
#ifndef PX_ACME_H
#define PX_ACME_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct event_base;

/* An error as the operator sees it (error log, `proxyctl cert status`). */
struct px_acme_error {
    /* RFC 8555 error type without "urn:ietf:params:acme:error:"
     * ("badNonce", "rateLimited", "unauthorized", "connection", "dns", ...),
     * or one of ours: "network" (could not reach the CA), "timeout",
     * "bad_response" (not what RFC 8555 says), "io" (files), "hook",
     * "internal". */
    char type[48];
    char detail[512];        /* human text: the CA's detail, or ours */
};

/* ======================================================================
 * proxy/acme/client.c: the protocol client
 * ====================================================================== */

struct px_acme_client;
struct px_acme_op;

struct px_acme_client_conf {
    const char *directory;     /* the directory URL */
    const char *ca_bundle;     /* CURLOPT_CAINFO for the CA's HTTPS; NULL = the system store */
    const char *email;         /* account contact; NULL or "" = none */
    const char *accounts_dir;  /* config_dir/accounts: the account is created (once) and
                                * kept under accounts/SERVER/PATH/ID/ as certbot does */
};

/* How the client has its HTTP-01 answers served (by the manager's token
 * table on listen_http). publish() is called before the challenge is
 * triggered, unpublish() once the authorization is decided (or the op
 * ends, is cancelled or its client freed). publish returns 0, or -1 (the
 * op fails with "internal"). Both are called from inside the client: they
 * must not cancel an op or free the client. */
struct px_acme_challenge_ops {
    int (*publish)(void *arg, const char *token, const char *key_authorization);
    void (*unpublish)(void *arg, const char *token);
    void *arg;
};

/* A certificate just issued: PEM text, NUL-terminated, valid during the
 * done callback only (copy what you keep). */
struct px_acme_cert {
    const char *privkey_pem;   /* a new ECDSA P-256 key, made for this certificate */
    const char *cert_pem;      /* the leaf */
    const char *chain_pem;     /* the intermediates */
    const char *fullchain_pem; /* leaf + intermediates, as downloaded */
    time_t not_before, not_after;
};

/* Exactly one of cert and err is non-NULL. Called once per op, never from
 * inside the call that started it, from an event of its own: it may free
 * the client or start other ops. The op is gone once it returns. */
typedef void (*px_acme_done_fn)(void *arg, const struct px_acme_cert *cert, const struct px_acme_error *err);

/* libcurl's global init (curl_global_init is not thread-safe): call it on
 * the main thread before the workers start. px_acme_client_new calls it
 * too (once); calling it again is a no-op. 0, or -1 when curl fails. */
int px_acme_global_init(void);

/* A client for one CA and account. NULL with a message in err (bad URL,
 * unreadable account files, curl init). Reads the account (if any) under
 * accounts_dir now; registers one, when an op first needs it, with a new
 * ES256 key (certbot's RSA accounts are not usable: skipped, logged).
 * Requests go through one libcurl multi handle on base (the connection to
 * the CA is reused), each with a 10 s connect and 30 s overall limit. */
struct px_acme_client *px_acme_client_new(struct event_base *base, const struct px_acme_client_conf *conf, char *err,
                                          size_t errlen);
/* Cancels every op in flight (no callbacks; published tokens are
 * unpublished). */
void px_acme_client_free(struct px_acme_client *c);

/* Obtain a certificate for names[0..n) (distinct lowercase DNS names, 1
 * to 100; names[0] is the subject CN): account (loaded or registered),
 * newOrder, HTTP-01 for every authorization not already valid (all tokens
 * published, then all challenges triggered, then each authorization
 * polled), finalize with a CSR for a new key, poll (Retry-After honoured,
 * else 0.5 s doubling to 5 s), download. badNonce is retried with the
 * nonce it carries (16 times). Progress goes to the error log at info
 * level, prefixed with names[0]. The op gives up after timeout_ms in all
 * ("timeout"; 0 = no limit). Bad arguments fail the op ("internal") through
 * the callback. ch is copied. NULL only when out of memory. */
struct px_acme_op *px_acme_obtain(struct px_acme_client *c, const char *const *names, size_t n,
                                  const struct px_acme_challenge_ops *ch, uint64_t timeout_ms, px_acme_done_fn done,
                                  void *arg);

/* RFC 9773: the CA's suggested renewal window for a certificate (PEM; the
 * first certificate in it is asked about). done is called once, as for
 * px_acme_obtain: ok=1 with the window (Unix seconds), or ok=0 when the CA
 * offers no renewalInfo (pebble 2.4.0) or asking failed, within 60 s (then
 * renew by expiry). Needs the directory only, not the account. */
typedef void (*px_acme_window_fn)(void *arg, int ok, time_t start, time_t end);
struct px_acme_op *px_acme_renewal_info(struct px_acme_client *c, const char *cert_pem, px_acme_window_fn done,
                                        void *arg);

/* Stop an op: its callback is never called; its tokens are unpublished.
 * Not for an op whose callback has run. NULL is a no-op. */
void px_acme_op_cancel(struct px_acme_op *op);

/* ======================================================================
 * proxy/acme/store.c: certbot's layout, the lock, the hooks
 * ====================================================================== */

/* A lineage on disk: what live/NAME points at. */
struct px_acme_lineage {
    char name[256];
    int version;                       /* N of the archive files live/ points at; 0 = none yet */
    char live_dir[4096];               /* config_dir/live/NAME */
    char fullchain[4096], privkey[4096]; /* live/NAME/fullchain.pem, privkey.pem */
    char **names;                      /* the certificate's DNS names (SAN), owned */
    size_t nnames;
    time_t not_before, not_after;
};

/* Create config_dir and its subdirectories with certbot's modes (0700 for
 * accounts/, archive/, live/; 0755 for renewal/ and renewal-hooks/{pre,
 * deploy,post}/). Existing ones are left as they are. -1 with a message. */
int px_acme_store_init(const char *config_dir, char *err, size_t errlen);

/* Read lineage NAME (works on a lineage certbot made): 1 found and filled,
 * 0 none (no live/NAME), -1 broken (message in err). Free with
 * px_acme_lineage_clear. */
int px_acme_store_load(const char *config_dir, const char *name, struct px_acme_lineage *out, char *err,
                       size_t errlen);
void px_acme_lineage_clear(struct px_acme_lineage *l);

/* Write a new version N+1 of lineage NAME: archive files (key 0600), then
 * live/ symlinks switched atomically (each link made under a temp name and
 * renamed over the old one), then renewal/NAME.conf (directory URL, names,
 * version). fsyncs what it writes. On success fills out (may be NULL).
 * -1 with a message; a failure before the links switch leaves live/ as it
 * was. */
int px_acme_store_save(const char *config_dir, const char *name, const char *directory_url,
                       const char *const *names, size_t nnames, const struct px_acme_cert *cert,
                       struct px_acme_lineage *out, char *err, size_t errlen);

/* The lock that keeps two renewals (two proxyd, or proxyd and certbot) from
 * running at once: flock on config_dir/.proxyd.lock (certbot locks its own
 * directories; this lock is ours). Returns a fd >= 0, -1 when held by
 * someone else (EWOULDBLOCK) or on error (message in err). */
int px_acme_store_lock(const char *config_dir, char *err, size_t errlen);
void px_acme_store_unlock(int fd);

/* Run the executables of config_dir/renewal-hooks/KIND/ (KIND "pre",
 * "deploy", "post"), one after another in byte order of their names, with
 * RENEWED_LINEAGE=live_dir and RENEWED_DOMAINS="a b c" in the environment
 * (for "deploy"; pre and post get them too, as far as known). Each gets
 * timeout_ms, then SIGTERM, then SIGKILL; its stdout and stderr are logged
 * line by line at info level ("hook deploy/10-reload: ..."); a failing hook
 * is logged and the next one runs. Asynchronous on base (a child watcher,
 * never waitpid blocking); done(arg, nfailed) once all ran. Returns NULL
 * (and calls nothing) when there is no such directory or nothing executable
 * in it. */
struct px_acme_hooks;
typedef void (*px_acme_hooks_done_fn)(void *arg, int nfailed);
struct px_acme_hooks *px_acme_hooks_run(struct event_base *base, const char *config_dir, const char *kind,
                                        const char *live_dir, const char *const *domains, size_t ndomains,
                                        uint64_t timeout_ms, px_acme_hooks_done_fn done, void *arg);
/* Kill what still runs (SIGKILL, reaped); no callback. */
void px_acme_hooks_cancel(struct px_acme_hooks *h);

#endif
