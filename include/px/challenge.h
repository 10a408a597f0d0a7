/* px/challenge.h -- the HTTP-01 token table: what the plain listener
 * answers at /.well-known/acme-challenge/TOKEN while an ACME order is being
 * validated (RFC 8555 8.3).
 *
 * The ACME manager (main thread) puts a token with its key authorization
 * before the CA is told to validate, and removes it once the authorization
 * is decided; workers look tokens up on every challenge request.
 *
 * Threading (no lock, no read-modify-write on the data path): the table is
 * immutable; a change copies it and publishes the copy with one atomic
 * pointer store. A reader announces the table it reads in its worker's
 * hazard slot, re-checks that it is still current, copies the answer out
 * and clears the slot -- it holds the table for the length of one memcpy,
 * never across an event. A replaced table is freed by the main thread as
 * soon as no hazard slot names it (px_challenge_reap, also run by every
 * change). With no token pending the table is NULL and a lookup is one
 * atomic load. A data-path header: workers include it. */
#ifndef PX_CHALLENGE_H
#define PX_CHALLENGE_H

#include <stddef.h>

/* A token is 1..PX_CHALLENGE_TOKEN_MAX base64url characters (A-Z a-z 0-9
 * '-' '_'); a key authorization is token "." thumbprint, at most
 * PX_CHALLENGE_KEYAUTH_MAX bytes. */
#define PX_CHALLENGE_TOKEN_MAX 128
#define PX_CHALLENGE_KEYAUTH_MAX 256
/* At most this many tokens at once (an order has one per name; a lineage
 * has at most 100 names at Let's Encrypt). */
#define PX_CHALLENGE_MAX 1024

/* ---- main thread ---- */

/* Add token (or replace its key authorization). 0, or -1 when the token
 * or key authorization is malformed or too long, the table is full, or out
 * of memory (nothing changed). */
int px_challenge_put(const char *token, const char *key_authorization);
/* Remove token: 1 removed, 0 it was not there. */
int px_challenge_remove(const char *token);
/* Tokens in the current table. */
size_t px_challenge_count(void);
/* Free replaced tables no reader holds. Returns how many are still held. */
int px_challenge_reap(void);
/* Free everything (no worker may run). */
void px_challenge_shutdown(void);

/* ---- any worker (wid < PX_MAX_WORKERS, one reader per wid at a time) ---- */

/* Look token[0, len) up: copies its key authorization into out (NUL-
 * terminated) and returns its length, or -1 when unknown or malformed. out
 * must hold PX_CHALLENGE_KEYAUTH_MAX + 1 bytes. */
int px_challenge_lookup(int wid, const char *token, size_t len, char *out, size_t outlen);

/* ---- tokens another instance put ([cluster], DESIGN "Several instances") ----
 *
 * With several instances the CA's request may reach one that did not
 * order: after the local table, the worker asks a remote table (Redis,
 * through the cluster module, which registers it). The request parks until
 * the answer; nothing is allocated per lookup beyond the backend's own. */

/* px_challenge_find's "the answer comes later". */
#define PX_CHALLENGE_LATER (-2)

/* A remote answer, on the worker thread that asked, exactly once unless
 * cancelled first: keyauth[0, len) as the remote table holds it (unchecked:
 * see px_challenge_valid; it may be longer than PX_CHALLENGE_KEYAUTH_MAX),
 * or NULL and -1 when absent, the backend is down or did not answer in
 * time. keyauth is only valid during the call. */
typedef void (*px_challenge_done_fn)(void *arg, const char *keyauth, int len);

struct px_challenge_remote {
    /* Look a well-formed token[0, len) up: PX_CHALLENGE_LATER and done(arg,
     * ...) once later, answered within the backend's timeout; or -1 at once
     * (the backend is down). The calling worker's thread; never blocks. */
    int (*lookup)(const char *token, size_t len, px_challenge_done_fn done, void *arg);
    /* Forget arg's pending answer: done is not called for it after this.
     * The calling worker's thread. */
    void (*cancel)(void *arg);
};

/* Register the remote table (NULL: none). Main thread, while no worker
 * runs (before they start, after they are joined). */
void px_challenge_set_remote(const struct px_challenge_remote *ops);

/* What the plain listener answers: the local table first (as
 * px_challenge_lookup: the length of the key authorization copied into
 * out), then the remote one for a well-formed token it does not hold
 * (PX_CHALLENGE_LATER: done(arg, ...) follows; the caller checks the value
 * with px_challenge_valid); -1 unknown or malformed (no remote, or it is
 * down). Any worker (wid as px_challenge_lookup). */
int px_challenge_find(int wid, const char *token, size_t len, char *out, size_t outlen, px_challenge_done_fn done,
                      void *arg);
/* Cancel the later answer px_challenge_find promised for arg. */
void px_challenge_cancel(void *arg);
/* 1 when keyauth[0, klen) may be served for token[0, tlen): a well-formed
 * token, and token "." then base64url, at most PX_CHALLENGE_KEYAUTH_MAX
 * bytes. */
int px_challenge_valid(const char *token, size_t tlen, const char *keyauth, size_t klen);

#endif
