/* shared.c -- [acme] storage = redis: what lives in Redis and how it gets
 * there (see shared.h for the keys). Requests go on the cluster's main
 * connection (px_cluster_command); the announcements come on a
 * subscription of their own. */
#include "shared.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <openssl/crypto.h>

#include "client_internal.h"
#include "px/cluster.h"
#include "px/common.h"
#include "px/list.h"
#include "px/log.h"

#define TOKEN_TTL_MS "600000"

/* KEYS: lock, fence; ARGV: instance, ttl ms. {1, value} taken, {0, holder}. */
static const char LOCK_LUA[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur then return {0, cur} end\n"
    "local v = ARGV[1] .. ' ' .. redis.call('INCR', KEYS[2])\n"
    "if not redis.call('SET', KEYS[1], v, 'NX', 'PX', tonumber(ARGV[2])) then\n"
    "  return {0, redis.call('GET', KEYS[1]) or ''}\n"
    "end\n"
    "return {1, v}\n";

/* KEYS: lock; ARGV: value, ttl ms. */
static const char EXTEND_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

static const char UNLOCK_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

/* The fenced write. KEYS: lock, cert; ARGV: lock value, fence, channel,
 * name, not_after, names, cert, chain, fullchain, privkey (sealed),
 * instance. Writes nothing unless the lock still holds our value and no
 * later holder wrote already; announces the new version. */
static const char WRITE_LUA[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "local f = tonumber(ARGV[2])\n"
    "local hf = tonumber(redis.call('HGET', KEYS[2], 'fence') or '0')\n"
    "if hf and hf > f then return 0 end\n"
    "local v = redis.call('HINCRBY', KEYS[2], 'version', 1)\n"
    "redis.call('HSET', KEYS[2], 'not_after', ARGV[5], 'names', ARGV[6], 'cert', ARGV[7], 'chain', ARGV[8],\n"
    "           'fullchain', ARGV[9], 'privkey', ARGV[10], 'instance', ARGV[11], 'fence', ARGV[2])\n"
    "redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. v)\n"
    "return v\n";

/* KEYS: account; ARGV: id, private_key (sealed), regr, meta. */
static const char ACCOUNT_LUA[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'id', ARGV[1], 'private_key', ARGV[2], 'regr', ARGV[3], 'meta', ARGV[4])\n"
    "return 1\n";

struct req {
    struct px_list_node link;  /* on sh->reqs */
    struct px_acme_shared *sh; /* NULL: sh was freed */
    void *arg;
    int dead;
    union {
        px_acme_shared_fetch_fn fetch;
        px_acme_shared_lock_fn lock;
        px_acme_shared_write_fn write;
        void (*barrier)(void *arg, int ok);
        px_acme_shared_account_fn account;
    } fn;
    char *key;                 /* the key name (the AAD) */
    char *url, *dir;           /* account pull */
};

struct px_acme_shared {
    struct px_cluster *c;
    unsigned char key[32];
    struct px_cluster_sub *sub;
    void (*on_announce)(void *arg, const char *name, long long version);
    void (*on_resync)(void *arg);
    void *arg;
    struct px_list reqs;       /* requests sent, not answered yet */
};

static char *key_of(const struct px_acme_shared *sh, const char *what, const char *name)
{
    const char *p = px_cluster_prefix(sh->c);
    size_t n = strlen(p) + strlen(what) + strlen(name) + 1;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%s%s%s", p, what, name);
    return k;
}

/* ---- requests ---- */

static void req_free(struct req *r)
{
    if (r->sh)
        px_list_remove(&r->sh->reqs, &r->link);
    free(r->key);
    free(r->url);
    free(r->dir);
    free(r);
}

static struct req *req_new(struct px_acme_shared *sh, void *arg)
{
    struct req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->sh = sh;
    r->arg = arg;
    px_list_insert_tail(&sh->reqs, &r->link);
    return r;
}

static int req_send(struct req *r, px_cluster_reply_fn fn, int argc, const char *const *argv, const size_t *lens)
{
    if (px_cluster_command(r->sh->c, fn, r, argc, argv, lens) < 0) {
        req_free(r);
        return -1;
    }
    return 0;
}

static int live(const struct req *r)
{
    return r->sh != NULL && !r->dead;
}

void px_acme_shared_cancel(struct px_acme_shared *sh, void *arg)
{
    struct px_list_node *n;
    if (sh == NULL)
        return;
    px_list_foreach(&sh->reqs, n) {
        struct req *r = px_container_of(n, struct req, link);
        if (r->arg == arg)
            r->dead = 1;
    }
}

static void on_nothing(void *arg, const redisReply *reply)
{
    PX_UNUSED(arg);
    if (reply && reply->type == REDIS_REPLY_ERROR)
        px_log_warn("acme: Redis: %s", reply->str);
}

static const char *reply_err(const redisReply *r)
{
    return r == NULL ? "Redis went away before answering" : r->type == REDIS_REPLY_ERROR ? r->str : "an unexpected answer";
}

/* ---- announcements ---- */

static void on_message(void *arg, const char *msg, size_t len)
{
    struct px_acme_shared *sh = arg;
    char buf[512];
    if (len >= sizeof(buf))
        return;
    memcpy(buf, msg, len);
    buf[len] = '\0';
    char *sp = strrchr(buf, ' ');
    if (sp == NULL)
        return;
    *sp = '\0';
    sh->on_announce(sh->arg, buf, strtoll(sp + 1, NULL, 10));
}

static void on_sub_up(void *arg)
{
    struct px_acme_shared *sh = arg;
    sh->on_resync(sh->arg);
}

struct px_acme_shared *px_acme_shared_new(struct px_cluster *c, const unsigned char key[32],
                                          void (*on_announce)(void *arg, const char *name, long long version),
                                          void (*on_resync)(void *arg), void *arg)
{
    struct px_acme_shared *sh = calloc(1, sizeof(*sh));
    char *chan = NULL;
    if (sh == NULL)
        return NULL;
    sh->c = c;
    memcpy(sh->key, key, 32);
    sh->on_announce = on_announce;
    sh->on_resync = on_resync;
    sh->arg = arg;
    if ((chan = key_of(sh, "acme:announce", "")) == NULL ||
        (sh->sub = px_cluster_subscribe(c, chan, on_message, on_sub_up, sh)) == NULL) {
        free(chan);
        OPENSSL_cleanse(sh->key, sizeof(sh->key));
        free(sh);
        return NULL;
    }
    free(chan);
    return sh;
}

void px_acme_shared_free(struct px_acme_shared *sh)
{
    if (sh == NULL)
        return;
    px_cluster_sub_free(sh->sub);
    struct px_list_node *n, *tmp;
    px_list_foreach_safe(&sh->reqs, n, tmp) {
        px_list_remove(&sh->reqs, n);
        px_container_of(n, struct req, link)->sh = NULL; /* their replies free them */
    }
    OPENSSL_cleanse(sh->key, sizeof(sh->key));
    free(sh);
}

int px_acme_shared_up(const struct px_acme_shared *sh)
{
    return sh && px_cluster_main_up(sh->c);
}

/* ---- lineages ---- */

void px_acme_shared_cert_free(struct px_acme_shared_cert *c)
{
    if (c == NULL)
        return;
    px_strv_free(c->names, c->nnames);
    free(c->cert);
    free(c->chain);
    free(c->fullchain);
    if (c->privkey)
        OPENSSL_cleanse(c->privkey, strlen(c->privkey));
    free(c->privkey);
    free(c->instance);
    free(c);
}

static const redisReply *hash_get(const redisReply *r, const char *field)
{
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, field) == 0 &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            return r->element[i + 1];
    return NULL;
}

static char *hash_dup(const redisReply *r, const char *field)
{
    const redisReply *v = hash_get(r, field);
    return v ? strndup(v->str, v->len) : NULL;
}

static char **split_names(const char *s, size_t *n)
{
    char *copy = strdup(s), *save = NULL, **v = NULL;
    *n = 0;
    if (copy == NULL)
        return NULL;
    for (char *p = strtok_r(copy, " ", &save); p; p = strtok_r(NULL, " ", &save)) {
        char **g = realloc(v, (*n + 1) * sizeof(*v));
        if (g == NULL)
            break;
        v = g;
        if ((v[*n] = strdup(p)) != NULL)
            (*n)++;
    }
    free(copy);
    return v;
}

/* An HGETALL's answer: 1 a hash, 0 none (no such key), -1 Redis failed
 * (err filled). */
static int hash_reply(const redisReply *reply, char *err, size_t errlen)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "%s", reply_err(reply));
        return -1;
    }
    return reply->elements != 0;
}

static void on_fetch(void *arg, const redisReply *reply)
{
    struct req *r = arg;
    struct px_acme_shared_cert *c = NULL;
    char err[512] = "";
    int rc = -1;
    if (!live(r))
        goto out;
    if ((rc = hash_reply(reply, err, sizeof(err))) != 1)
        goto answer;
    rc = -1;
    const redisReply *ver = hash_get(reply, "version"), *na = hash_get(reply, "not_after"),
                     *names = hash_get(reply, "names"), *pk = hash_get(reply, "privkey");
    if (ver == NULL || na == NULL || names == NULL || pk == NULL) {
        snprintf(err, sizeof(err), "%s is incomplete", r->key);
        goto answer;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto answer;
    }
    c->version = strtoll(ver->str, NULL, 10);
    c->not_after = (time_t)strtoll(na->str, NULL, 10);
    c->names = split_names(names->str, &c->nnames);
    c->cert = hash_dup(reply, "cert");
    c->chain = hash_dup(reply, "chain");
    c->fullchain = hash_dup(reply, "fullchain");
    c->instance = hash_dup(reply, "instance");
    if (c->cert == NULL || c->chain == NULL || c->fullchain == NULL) {
        snprintf(err, sizeof(err), "%s is incomplete", r->key);
        goto answer;
    }
    size_t len;
    char why[300];
    if ((c->privkey = px_acme_unseal(r->sh->key, r->key, pk->str, &len, why, sizeof(why))) == NULL) {
        snprintf(err, sizeof(err), "the private key in %s: %s", r->key, why);
        rc = -2;
        goto answer;
    }
    rc = 1;
answer:
    if (rc != 1) {
        px_acme_shared_cert_free(c);
        c = NULL;
    }
    r->fn.fetch(r->arg, rc, c, err);
out:
    req_free(r);
}

int px_acme_shared_fetch(struct px_acme_shared *sh, const char *name, px_acme_shared_fetch_fn fn, void *arg)
{
    struct req *r;
    if (!px_acme_shared_up(sh) || (r = req_new(sh, arg)) == NULL)
        return -1;
    r->fn.fetch = fn;
    if ((r->key = key_of(sh, "acme:cert:", name)) == NULL) {
        req_free(r);
        return -1;
    }
    const char *argv[] = {"HGETALL", r->key};
    return req_send(r, on_fetch, 2, argv, NULL);
}

static void on_lock(void *arg, const redisReply *reply)
{
    struct req *r = arg;
    if (live(r)) {
        if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
            reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[1]->type == REDIS_REPLY_STRING)
            r->fn.lock(r->arg, reply->element[0]->integer ? 1 : 0, reply->element[1]->str);
        else if (reply && reply->type == REDIS_REPLY_INTEGER)
            r->fn.lock(r->arg, reply->integer ? 1 : 0, "");
        else
            r->fn.lock(r->arg, -1, reply_err(reply));
    }
    req_free(r);
}

int px_acme_shared_lock(struct px_acme_shared *sh, const char *name, uint64_t ttl_ms, px_acme_shared_lock_fn fn,
                        void *arg)
{
    struct req *r;
    char ttl[24], *fence;
    if (!px_acme_shared_up(sh) || (r = req_new(sh, arg)) == NULL)
        return -1;
    r->fn.lock = fn;
    if ((r->key = key_of(sh, "acme:lock:", name)) == NULL || (fence = key_of(sh, "acme:fence", "")) == NULL) {
        req_free(r);
        return -1;
    }
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
    const char *argv[] = {"EVAL", LOCK_LUA, "2", r->key, fence, px_cluster_instance(sh->c), ttl};
    int rc = req_send(r, on_lock, (int)PX_ARRAY_LEN(argv), argv, NULL);
    free(fence);
    return rc;
}

int px_acme_shared_extend(struct px_acme_shared *sh, const char *name, const char *value, uint64_t ttl_ms,
                          px_acme_shared_lock_fn fn, void *arg)
{
    struct req *r;
    char ttl[24];
    if (!px_acme_shared_up(sh) || (r = req_new(sh, arg)) == NULL)
        return -1;
    r->fn.lock = fn;
    if ((r->key = key_of(sh, "acme:lock:", name)) == NULL) {
        req_free(r);
        return -1;
    }
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
    const char *argv[] = {"EVAL", EXTEND_LUA, "1", r->key, value, ttl};
    return req_send(r, on_lock, (int)PX_ARRAY_LEN(argv), argv, NULL);
}

void px_acme_shared_unlock(struct px_acme_shared *sh, const char *name, const char *value)
{
    char *k = sh ? key_of(sh, "acme:lock:", name) : NULL;
    if (k == NULL)
        return;
    const char *argv[] = {"EVAL", UNLOCK_LUA, "1", k, value};
    px_cluster_command(sh->c, on_nothing, NULL, (int)PX_ARRAY_LEN(argv), argv, NULL);
    free(k);
}

static void on_write(void *arg, const redisReply *reply)
{
    struct req *r = arg;
    if (live(r)) {
        if (reply && reply->type == REDIS_REPLY_INTEGER)
            r->fn.write(r->arg, reply->integer, NULL);
        else
            r->fn.write(r->arg, -1, reply_err(reply));
    }
    req_free(r);
}

int px_acme_shared_write(struct px_acme_shared *sh, const char *name, const char *lock_value,
                         const char *const *names, size_t n, const struct px_acme_cert *cert,
                         px_acme_shared_write_fn fn, void *arg)
{
    struct req *r;
    char *lock = NULL, *chan = NULL, *sealed = NULL, *joined = NULL, na[24];
    int rc = -1;
    if (!px_acme_shared_up(sh) || (r = req_new(sh, arg)) == NULL)
        return -1;
    r->fn.write = fn;
    size_t jl = 1;
    for (size_t i = 0; i < n; i++)
        jl += strlen(names[i]) + 1;
    if ((r->key = key_of(sh, "acme:cert:", name)) == NULL || (lock = key_of(sh, "acme:lock:", name)) == NULL ||
        (chan = key_of(sh, "acme:announce", "")) == NULL || (joined = calloc(1, jl)) == NULL ||
        (sealed = px_acme_seal(sh->key, r->key, cert->privkey_pem, strlen(cert->privkey_pem))) == NULL) {
        req_free(r);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(joined, " ");
        strcat(joined, names[i]);
    }
    const char *fence = strrchr(lock_value, ' ');
    snprintf(na, sizeof(na), "%lld", (long long)cert->not_after);
    const char *argv[] = {"EVAL",      WRITE_LUA,       "2",       lock,   r->key,       lock_value,
                          fence ? fence + 1 : "0",      chan,      name,   na,           joined,
                          cert->cert_pem, cert->chain_pem, cert->fullchain_pem, sealed, px_cluster_instance(sh->c)};
    rc = req_send(r, on_write, (int)PX_ARRAY_LEN(argv), argv, NULL);
out:
    free(lock);
    free(chan);
    free(joined);
    free(sealed);
    return rc;
}

/* ---- HTTP-01 tokens ---- */

void px_acme_shared_token_put(struct px_acme_shared *sh, const char *token, const char *key_authorization)
{
    char *k = sh ? key_of(sh, "acme:token:", token) : NULL;
    if (k == NULL)
        return;
    const char *argv[] = {"SET", k, key_authorization, "PX", TOKEN_TTL_MS};
    px_cluster_command(sh->c, on_nothing, NULL, (int)PX_ARRAY_LEN(argv), argv, NULL);
    free(k);
}

void px_acme_shared_token_del(struct px_acme_shared *sh, const char *token)
{
    char *k = sh ? key_of(sh, "acme:token:", token) : NULL;
    if (k == NULL)
        return;
    const char *argv[] = {"DEL", k};
    px_cluster_command(sh->c, on_nothing, NULL, 2, argv, NULL);
    free(k);
}

static void on_barrier(void *arg, const redisReply *reply)
{
    struct req *r = arg;
    if (live(r))
        r->fn.barrier(r->arg, reply != NULL && reply->type != REDIS_REPLY_ERROR);
    req_free(r);
}

int px_acme_shared_barrier(struct px_acme_shared *sh, void (*fn)(void *arg, int ok), void *arg)
{
    struct req *r;
    if (!px_acme_shared_up(sh) || (r = req_new(sh, arg)) == NULL)
        return -1;
    r->fn.barrier = fn;
    const char *argv[] = {"PING"};
    return req_send(r, on_barrier, 1, argv, NULL);
}

/* ---- the account ---- */

static void on_account(void *arg, const redisReply *reply)
{
    struct req *r = arg;
    char err[512] = "";
    int rc = -1, changed = 0;
    char *key = NULL;
    if (!live(r))
        goto out;
    if ((rc = hash_reply(reply, err, sizeof(err))) != 1)
        goto answer;
    rc = -1;
    const redisReply *id = hash_get(reply, "id"), *pk = hash_get(reply, "private_key"),
                     *regr = hash_get(reply, "regr"), *meta = hash_get(reply, "meta");
    if (id == NULL || pk == NULL || regr == NULL) {
        snprintf(err, sizeof(err), "%s is incomplete", r->key);
        goto answer;
    }
    size_t len;
    char why[300];
    if ((key = px_acme_unseal(r->sh->key, r->key, pk->str, &len, why, sizeof(why))) == NULL) {
        snprintf(err, sizeof(err), "the account key in %s: %s", r->key, why);
        goto answer;
    }
    if (px_acme_account_import(r->dir, r->url, id->str, key, regr->str, meta ? meta->str : "{}", &changed, err,
                               sizeof(err)) == 0)
        rc = 1;
answer:
    r->fn.account(r->arg, rc, changed, rc == 1 ? id->str : NULL, err);
out:
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(key);
    req_free(r);
}

int px_acme_shared_account_pull(struct px_acme_shared *sh, const char *directory_url, const char *accounts_dir,
                                px_acme_shared_account_fn fn, void *arg)
{
    struct req *r;
    if (!px_acme_shared_up(sh) || (r = req_new(sh, arg)) == NULL)
        return -1;
    r->fn.account = fn;
    if ((r->key = key_of(sh, "acme:account:", directory_url)) == NULL || (r->url = strdup(directory_url)) == NULL ||
        (r->dir = strdup(accounts_dir)) == NULL) {
        req_free(r);
        return -1;
    }
    const char *argv[] = {"HGETALL", r->key};
    return req_send(r, on_account, 2, argv, NULL);
}

void px_acme_shared_account_push(struct px_acme_shared *sh, const char *directory_url, const char *accounts_dir)
{
    char *id = NULL, *key = NULL, *regr = NULL, *meta = NULL, *k = NULL, *sealed = NULL, err[512];
    if (!px_acme_shared_up(sh))
        return;
    int rc = px_acme_account_export(accounts_dir, directory_url, &id, &key, &regr, &meta, err, sizeof(err));
    if (rc < 0)
        px_log_warn("acme: the account for %s is not stored in Redis: %s", directory_url, err);
    if (rc != 1)
        return;
    if ((k = key_of(sh, "acme:account:", directory_url)) != NULL &&
        (sealed = px_acme_seal(sh->key, k, key, strlen(key))) != NULL) {
        const char *argv[] = {"EVAL", ACCOUNT_LUA, "1", k, id, sealed, regr, meta};
        px_cluster_command(sh->c, on_nothing, NULL, (int)PX_ARRAY_LEN(argv), argv, NULL);
    }
    OPENSSL_cleanse(key, strlen(key));
    free(id);
    free(key);
    free(regr);
    free(meta);
    free(k);
    free(sealed);
}
