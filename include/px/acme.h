/* px/acme.h -- ACME certificates: the contracts between the ACME client,
 * certbot's store and the manager (the client's own parts -- msg, jws,
 * http, account, libcurl -- share proxy/acme/client_internal.h). Everything here runs on the main thread's event base (never on
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
 *   proxy/acme/shared.c  [acme] storage = redis: account, lineages, the order
 *                  lock, tokens and announcements in [cluster]'s Redis
 *                  (proxy/acme/shared.h); proxy/acme/seal.c seals the private
 *                  keys kept there.
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
     * "bad_response" (not what RFC 8555 says), "bad_certificate" (the
     * certificate issued does not cover the names ordered, or is outside
     * its validity dates), "io" (files), "hook",
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
    const char *account_id;    /* NULL, or the ID under accounts/SERVER/PATH/ to use when it is
                                * usable ([acme] storage = redis: the shared one) */
};

/* How the client has its HTTP-01 answers served (by the manager's token
 * table on listen_http). publish() is called before the challenge is
 * triggered, unpublish() once the authorization is decided (or the op
 * ends, is cancelled or its client freed). publish returns 0, or -1 (the
 * op fails with "internal"). Both are called from inside the client: they
 * must not cancel an op or free the client. Two ops for the same names may
 * publish the same token (a CA reusing a pending authorization): count. */
struct px_acme_challenge_ops {
    int (*publish)(void *arg, const char *token, const char *key_authorization);
    void (*unpublish)(void *arg, const char *token);
    void *arg;
    /* Optional: called once the op's tokens are published, before any
     * challenge is triggered. 0: ready(ctx, ok) will be called once from the
     * loop, and the challenges are triggered then; -1: they are at once.
     * sync_cancel(arg, ctx): the op ends before ready came (it must then
     * never come). [acme] storage = redis: the tokens are in Redis first. */
    int (*sync)(void *arg, void (*ready)(void *ctx, int ok), void *ctx);
    void (*sync_cancel)(void *arg, void *ctx);
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

/* Load libcurl (proxyd does not link it: dlopen("libcurl.so.4") the first
 * time, so a proxy without [acme] never maps it and its ~27 dependencies)
 * and run its global init, once per process; later calls return 0 at
 * once. Thread-safe. Call it when ACME is enabled (start, the reload that
 * enables [acme]) before anything else of ACME; px_acme_client_new calls
 * it too. 0, or -1 with a message for the operator in err: the library
 * missing names it and the package to install (libcurl4); a later call
 * tries again. */
int px_acme_global_init(char *err, size_t errlen);

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
 * proxy/acme/store.c: certbot's layout, the lock; proxy/acme/hooks.c: the hooks
 *
 * A lineage certbot made is used as is, and certbot can go on using one
 * proxyd made (`certbot certificates` lists it; `certbot renew` renews it,
 * with the standalone authenticator, when proxyd does not hold port 80).
 * Synchronous file I/O (a few small files, fsynced): main thread only, at
 * renewal time. proxyd writes these files as the user it runs as (after
 * `user =`): config_dir must be that user's, and px_acme_store_init runs
 * after the privilege drop (else what it creates is root's).
 * ====================================================================== */

/* A lineage on disk: what live/NAME points at. */
struct px_acme_lineage {
    char name[256];
    int version;                         /* N of the archive files live/ points at; 0 = none yet */
    char live_dir[4096];                 /* config_dir/live/NAME */
    char fullchain[4096], privkey[4096]; /* live/NAME/fullchain.pem, privkey.pem (the links) */
    char **names;                        /* the certificate's DNS names (SAN, lowercase; the CN if
                                          * it has none), owned */
    size_t nnames;
    time_t not_before, not_after;
};

/* Create config_dir (mkdir -p, 0755) and its subdirectories with certbot's
 * modes (0700 for accounts/, archive/, live/; 0755 for renewal/ and
 * renewal-hooks/{pre,deploy,post}/), whatever the umask. Existing ones are
 * left as they are. -1 with a message (e.g. a file where a directory
 * belongs). */
int px_acme_store_init(const char *config_dir, char *err, size_t errlen);

/* Read lineage NAME (works on a lineage certbot made): 1 found and filled,
 * 0 none (no live/NAME, or one with neither fullchain.pem nor privkey.pem:
 * out->live_dir and the paths are still filled, version 0), -1 broken
 * (message in err, out cleared): a link missing, dangling or not into
 * archive/ as KINDN.pem, fullchain.pem and privkey.pem at different N (an
 * interrupted update), no certificate or key in them, a key that is not the
 * certificate's. version is N of the links' targets; names and dates come
 * from the leaf (the first certificate of fullchain.pem). Paths in out are
 * config_dir as given + "/live/...". Free with px_acme_lineage_clear (NULL
 * and cleared ones are fine). A lineage name is one path component, not
 * starting with '.'. */
int px_acme_store_load(const char *config_dir, const char *name, struct px_acme_lineage *out, char *err,
                       size_t errlen);
void px_acme_lineage_clear(struct px_acme_lineage *l);

/* Write a new version of lineage NAME, N = the highest version of any
 * archive/NAME/ file + 1 (certbot's rule): the certificate's key and leaf
 * are checked first (a key that is not the leaf's is refused, nothing
 * written); then the archive files (cert, chain, fullchain 0644; privkey
 * 0600 plus the group bits and group of the current key, as certbot does),
 * then renewal/NAME.conf, then the live/ links, each made under a temp name
 * and renamed over the old one (certbot's relative ../../archive/NAME/
 * targets), and live/README files as certbot writes them. fsyncs what it
 * writes. On success fills out (may be NULL; its version is N).
 *
 * renewal/NAME.conf is certbot's (configobj) format, edited in place when
 * it exists: proxyd sets archive_dir, cert, privkey, chain, fullchain (the
 * absolute paths under realpath(config_dir)) and proxyd_domains (names,
 * space-separated: certbot reads the names from the certificate, and keeps
 * this key when it rewrites the file); in [renewalparams] server (=
 * directory_url; when it changes, the old server's `account` line goes),
 * key_type = ecdsa, elliptic_curve and config_dir when present, and
 * authenticator = standalone when missing. The rest (account, webroot and
 * plugin settings, comments) is left as it is; an unchanged file is not
 * rewritten. A new one has version = 2.1.0 (the certbot format written).
 *
 * -1 with a message. A failure before the links switch leaves live/ as it
 * was and removes the files of version N (and a live/NAME it had just
 * made); a failure among the four link renames puts the switched ones back
 * first. */
int px_acme_store_save(const char *config_dir, const char *name, const char *directory_url,
                       const char *const *names, size_t nnames, const struct px_acme_cert *cert,
                       struct px_acme_lineage *out, char *err, size_t errlen);

/* The lock that keeps two renewals (two proxyd, or proxyd and certbot) from
 * running at once: certbot's own lock file, config_dir/.certbot.lock (0600),
 * with an open-file-description write lock (F_OFD_SETLK), which conflicts
 * with certbot's lockf() and with any other OFD lock on it, this process's
 * included; never blocks. Returns a fd >= 0 (close-on-exec; hold it for the
 * whole renewal, hooks included), or -1 when held by someone else or on
 * error (message in err). While proxyd holds it, certbot run on the same
 * config_dir says "Another instance of Certbot is already running". */
int px_acme_store_lock(const char *config_dir, char *err, size_t errlen);
void px_acme_store_unlock(int fd);

/* Run the executables of config_dir/renewal-hooks/KIND/ (KIND "pre",
 * "deploy", "post") one after another, in byte order of their names
 * (strcmp). Which: certbot's rule (regular files after symlinks that this
 * process may execute, not ending in '~') and not starting with '.'. A file
 * without a #! line runs under /bin/sh, as certbot's `sh -c` would run it.
 * Environment: proxyd's, plus RENEWED_LINEAGE=live_dir (when non-NULL) and
 * RENEWED_DOMAINS="a b c" (when domains is non-NULL); stdin /dev/null; cwd
 * proxyd's; uid and gid proxyd's (after `user =`: hooks have that user's
 * rights only). Each hook is a process group of its own. Its stdout and
 * stderr are logged line by line at info level ("hook deploy/10-reload:
 * ..."), the first 64 KiB or 1000 lines of each run; the rest is read
 * (the hook never blocks on a full pipe) and dropped, with one warning
 * line counting the bytes. A file that is not executable is skipped (as
 * certbot does) with a warning once per path for the life of the process.
 * After timeout_ms (0 = no limit) its group gets SIGTERM, and
 * SIGKILL 2 s later; a hook that exits non-zero, dies of a signal, runs
 * out of time or cannot be started counts as failed, is logged, and the
 * next one runs. A hook is over when its process exits (a daemon it
 * started may keep running). Asynchronous on base (px/child.h: a pidfd per
 * hook, never a blocking waitpid, no SIGCHLD handler); done(arg, nfailed)
 * once all ran, never from inside px_acme_hooks_run; the handle is freed
 * before done is called (do not cancel it there or after). Returns NULL
 * (and calls nothing) when there is no such directory, nothing executable
 * in it, or no memory. */
struct px_acme_hooks;
typedef void (*px_acme_hooks_done_fn)(void *arg, int nfailed);
struct px_acme_hooks *px_acme_hooks_run(struct event_base *base, const char *config_dir, const char *kind,
                                        const char *live_dir, const char *const *domains, size_t ndomains,
                                        uint64_t timeout_ms, px_acme_hooks_done_fn done, void *arg);
/* Stop: the running hook's process group gets SIGKILL and the hook is
 * reaped (waiting up to 1 s for it; past that it is reaped later on base);
 * the rest do not run; done is never called. NULL is fine. */
void px_acme_hooks_cancel(struct px_acme_hooks *h);

/* ======================================================================
 * proxy/acme/seal.c: private keys at rest in Redis ([acme] storage = redis)
 *
 * AES-256-GCM with the 32-byte key of [cluster] secret_file, a random
 * 12-byte nonce per seal, the Redis key name as AAD (a value copied under
 * another key does not open). Text form: "pxenc1:" base64(nonce | ciphertext
 * | 16-byte tag).
 * ====================================================================== */

#define PX_ACME_SEAL_PREFIX "pxenc1:"

/* A new malloc'd NUL-terminated string, or NULL (out of memory). */
char *px_acme_seal(const unsigned char key[32], const char *aad, const void *plain, size_t len);
/* Open text sealed under aad: a new malloc'd buffer (NUL-terminated;
 * length in *len), or NULL with a message in err: not "pxenc1:", not
 * base64, too short, or the tag does not verify (a wrong secret_file, a
 * value tampered with or moved to another key) -- never garbage. */
char *px_acme_unseal(const unsigned char key[32], const char *aad, const char *text, size_t *len, char *err,
                     size_t errlen);

#endif
