/* shared.h -- [acme] storage = redis: the account, lineages, locks, HTTP-01
 * tokens and announcements in [cluster]'s Redis, for manager.c. Not a
 * public contract (px/acme_manager.h is); main thread only.
 *
 * Keys (P = [cluster] key_prefix):
 *   P acme:account:DIRECTORY_URL  hash id, private_key (sealed), regr, meta:
 *                                 certbot's three files; the first instance
 *                                 to register stores it (never overwritten)
 *   P acme:cert:NAME              hash version (+1 per write), not_after (Unix
 *                                 s), names (space-separated), cert, chain,
 *                                 fullchain, privkey (sealed), fence, instance
 *   P acme:lock:NAME              "INSTANCE FENCE", SET NX PX lock_timeout
 *   P acme:fence                  INCR: one fencing token per lock taken
 *   P acme:token:TOKEN            the key authorization, PX 600000
 *   P acme:announce               channel: "NAME VERSION" per write
 * Sealed: px_acme_seal with AAD = the key's name.
 *
 * Every call that takes a callback returns 0 (it will be called once, from
 * the loop) or -1 (Redis not reachable now: it will not). px_acme_shared_cancel
 * drops the callbacks of every request made with that arg. */
#ifndef PX_ACME_SHARED_H
#define PX_ACME_SHARED_H

#include <stddef.h>
#include <time.h>

#include "px/acme.h"

struct px_cluster;
struct px_acme_shared;

struct px_acme_shared *px_acme_shared_new(struct px_cluster *c, const unsigned char key[32],
                                          void (*on_announce)(void *arg, const char *name, long long version),
                                          void (*on_resync)(void *arg), void *arg);
void px_acme_shared_free(struct px_acme_shared *sh);
int px_acme_shared_up(const struct px_acme_shared *sh);
void px_acme_shared_cancel(struct px_acme_shared *sh, void *arg);

/* A lineage as Redis has it (privkey opened). */
struct px_acme_shared_cert {
    long long version;
    time_t not_after;
    char **names;
    size_t nnames;
    char *cert, *chain, *fullchain, *privkey;
    char *instance;
};
void px_acme_shared_cert_free(struct px_acme_shared_cert *c);

/* rc 1: c (the callee's) filled; 0: none; -1: Redis failed (err); -2: its
 * private key does not open (err: a different secret_file?). */
typedef void (*px_acme_shared_fetch_fn)(void *arg, int rc, struct px_acme_shared_cert *c, const char *err);
int px_acme_shared_fetch(struct px_acme_shared *sh, const char *name, px_acme_shared_fetch_fn fn, void *arg);

/* rc 1: taken, text = the lock's value (INSTANCE FENCE); 0: held by
 * another, text = its value; -1: Redis failed (text: why). */
typedef void (*px_acme_shared_lock_fn)(void *arg, int rc, const char *text);
int px_acme_shared_lock(struct px_acme_shared *sh, const char *name, uint64_t ttl_ms, px_acme_shared_lock_fn fn,
                        void *arg);
/* Extend the lock when it still holds value: rc 1, 0 lost, -1 failed. */
int px_acme_shared_extend(struct px_acme_shared *sh, const char *name, const char *value, uint64_t ttl_ms,
                          px_acme_shared_lock_fn fn, void *arg);
/* Release it when it still holds value (no answer). */
void px_acme_shared_unlock(struct px_acme_shared *sh, const char *name, const char *value);

/* Store a new version of lineage name when the lock still holds value (its
 * fencing token) and announce it: version > 0 written; 0 the lock was lost
 * (nothing written); -1 Redis failed (err). */
typedef void (*px_acme_shared_write_fn)(void *arg, long long version, const char *err);
int px_acme_shared_write(struct px_acme_shared *sh, const char *name, const char *lock_value,
                         const char *const *names, size_t n, const struct px_acme_cert *cert,
                         px_acme_shared_write_fn fn, void *arg);

/* HTTP-01 answers (no answer; nothing when Redis is down). */
void px_acme_shared_token_put(struct px_acme_shared *sh, const char *token, const char *key_authorization);
void px_acme_shared_token_del(struct px_acme_shared *sh, const char *token);
/* Calls fn(arg, 1) once every command sent before it was answered (0:
 * Redis went away meanwhile). */
int px_acme_shared_barrier(struct px_acme_shared *sh, void (*fn)(void *arg, int ok), void *arg);

/* The account for directory_url: pull writes Redis's into accounts_dir (rc
 * 1 written or already there, changed when the files changed, id its ID; 0 none in
 * Redis; -1 failed, err); push stores accounts_dir's when Redis has none
 * (no answer). */
typedef void (*px_acme_shared_account_fn)(void *arg, int rc, int changed, const char *id, const char *err);
int px_acme_shared_account_pull(struct px_acme_shared *sh, const char *directory_url, const char *accounts_dir,
                                px_acme_shared_account_fn fn, void *arg);
void px_acme_shared_account_push(struct px_acme_shared *sh, const char *directory_url, const char *accounts_dir);

#endif
