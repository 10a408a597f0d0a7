/* challenge.c -- the HTTP-01 token table: immutable copies published with
 * one atomic store, read under per-worker hazard pointers. See
 * px/challenge.h.
 *
 * Why hazard pointers rather than a snapshot part or a grace period: a
 * reader holds a table for one bounded copy, so the main thread can free a
 * replaced table at once in the common case, without publishing a whole
 * route snapshot per token (a renewal of ten names changes the table
 * twenty times) and without waiting for every worker to pass a quiescent
 * point (an idle worker passes none). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "px/challenge.h"
#include "px/common.h" /* PX_MAX_WORKERS */

struct entry {
    char token[PX_CHALLENGE_TOKEN_MAX + 1];
    char keyauth[PX_CHALLENGE_KEYAUTH_MAX + 1];
    size_t token_len, keyauth_len;
};

struct table {
    struct table *next_retired; /* main thread only */
    size_t n;
    struct entry e[];
};

struct hazard {
    _Atomic(struct table *) t;
    char pad[64 - sizeof(void *)];
};

static _Atomic(struct table *) current;
static struct hazard hazards[PX_MAX_WORKERS];
static struct table *retired; /* main thread only */

static int token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static int token_ok(const char *t, size_t n)
{
    if (n == 0 || n > PX_CHALLENGE_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!token_char((unsigned char)t[i]))
            return 0;
    return 1;
}

static int keyauth_ok(const char *k, size_t n)
{
    if (n == 0 || n > PX_CHALLENGE_KEYAUTH_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!token_char((unsigned char)k[i]) && k[i] != '.')
            return 0;
    return 1;
}

static int in_use(const struct table *t)
{
    for (int w = 0; w < PX_MAX_WORKERS; w++)
        if (atomic_load(&hazards[w].t) == t)
            return 1;
    return 0;
}

int px_challenge_reap(void)
{
    int left = 0;
    for (struct table **pp = &retired; *pp;) {
        struct table *t = *pp;
        if (in_use(t)) {
            left++;
            pp = &t->next_retired;
        } else {
            *pp = t->next_retired;
            free(t);
        }
    }
    return left;
}

/* Make t (NULL: no tokens) current; the table it replaces is retired. */
static void publish(struct table *t)
{
    struct table *old = atomic_exchange(&current, t);
    if (old) {
        old->next_retired = retired;
        retired = old;
    }
    px_challenge_reap();
}

static struct table *table_copy(const struct table *cur, size_t extra)
{
    size_t n = cur ? cur->n : 0;
    struct table *t = malloc(sizeof(*t) + (n + extra) * sizeof(t->e[0]));
    if (t == NULL)
        return NULL;
    t->next_retired = NULL;
    t->n = n;
    if (n)
        memcpy(t->e, cur->e, n * sizeof(t->e[0]));
    return t;
}

static size_t find(const struct table *t, const char *token, size_t len)
{
    for (size_t i = 0; t && i < t->n; i++)
        if (t->e[i].token_len == len && memcmp(t->e[i].token, token, len) == 0)
            return i;
    return (size_t)-1;
}

int px_challenge_put(const char *token, const char *key_authorization)
{
    size_t tl = strlen(token), kl = strlen(key_authorization);
    if (!token_ok(token, tl) || !keyauth_ok(key_authorization, kl))
        return -1;
    struct table *cur = atomic_load(&current);
    size_t at = find(cur, token, tl);
    if (at == (size_t)-1 && cur && cur->n >= PX_CHALLENGE_MAX)
        return -1;
    struct table *t = table_copy(cur, at == (size_t)-1 ? 1 : 0);
    if (t == NULL)
        return -1;
    if (at == (size_t)-1)
        at = t->n++;
    struct entry *e = &t->e[at];
    memcpy(e->token, token, tl + 1);
    memcpy(e->keyauth, key_authorization, kl + 1);
    e->token_len = tl;
    e->keyauth_len = kl;
    publish(t);
    return 0;
}

int px_challenge_remove(const char *token)
{
    struct table *cur = atomic_load(&current);
    size_t at = find(cur, token, strlen(token));
    if (at == (size_t)-1)
        return 0;
    if (cur->n == 1) {
        publish(NULL);
        return 1;
    }
    struct table *t = table_copy(cur, 0);
    if (t == NULL) {
        /* Out of memory: the token stays answerable, which is harmless (the
         * CA validates a token once); the next change drops it. */
        return 0;
    }
    t->e[at] = t->e[--t->n];
    publish(t);
    return 1;
}

size_t px_challenge_count(void)
{
    struct table *t = atomic_load(&current);
    return t ? t->n : 0;
}

void px_challenge_shutdown(void)
{
    free(atomic_exchange(&current, NULL));
    for (int w = 0; w < PX_MAX_WORKERS; w++)
        atomic_store(&hazards[w].t, NULL);
    while (retired) {
        struct table *t = retired;
        retired = t->next_retired;
        free(t);
    }
}

int px_challenge_lookup(int wid, const char *token, size_t len, char *out, size_t outlen)
{
    struct table *t = atomic_load(&current);
    if (t == NULL || wid < 0 || wid >= PX_MAX_WORKERS || !token_ok(token, len))
        return -1;
    struct hazard *h = &hazards[wid];
    /* Announce, then re-check: either the main thread sees our hazard when
     * it reaps, or we see its newer table (sequentially consistent). */
    for (;;) {
        atomic_store(&h->t, t);
        struct table *t2 = atomic_load(&current);
        if (t2 == t)
            break;
        t = t2;
        if (t == NULL) {
            atomic_store(&h->t, NULL);
            return -1;
        }
    }
    int rc = -1;
    size_t at = find(t, token, len);
    if (at != (size_t)-1 && t->e[at].keyauth_len < outlen) {
        memcpy(out, t->e[at].keyauth, t->e[at].keyauth_len + 1);
        rc = (int)t->e[at].keyauth_len;
    }
    atomic_store(&h->t, NULL);
    return rc;
}

/* ---- the remote table ---- */

static const struct px_challenge_remote *remote; /* written only while no worker runs */

void px_challenge_set_remote(const struct px_challenge_remote *ops)
{
    remote = ops;
}

int px_challenge_find(int wid, const char *token, size_t len, char *out, size_t outlen, px_challenge_done_fn done,
                      void *arg)
{
    int n = px_challenge_lookup(wid, token, len, out, outlen);
    if (n >= 0 || remote == NULL || !token_ok(token, len))
        return n;
    return remote->lookup(token, len, done, arg) == PX_CHALLENGE_LATER ? PX_CHALLENGE_LATER : -1;
}

void px_challenge_cancel(void *arg)
{
    if (remote && remote->cancel)
        remote->cancel(arg);
}

int px_challenge_valid(const char *token, size_t tlen, const char *keyauth, size_t klen)
{
    return token_ok(token, tlen) && keyauth != NULL && keyauth_ok(keyauth, klen) && klen > tlen + 1 &&
           memcmp(keyauth, token, tlen) == 0 && keyauth[tlen] == '.';
}
