/* client.c -- the RFC 8555 protocol client: the shared setup (directory,
 * account) and one state machine per operation (obtain, renewalInfo), all
 * on the main thread's event base.
 *
 * Every exchange with the CA is a "call": a plain GET, or a JWS POST that
 * takes a nonce from the pool (HEAD newNonce when it is empty) and is sent
 * again with the fresh nonce when the CA answers badNonce. A call reports
 * either a 2xx response or a px_acme_error; the states below only read
 * objects.
 *
 * An op has at most one call in flight. Its callback always runs from an
 * event of its own (ev_finish), after every token is unpublished and every
 * request and timer is stopped, so the callback may free the client. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "client_internal.h"
#include "px/common.h"
#include "px/log.h"

#define BADNONCE_RETRIES 16 /* pebble rejects 5% of nonces by default, tests use 50% */
#define NONCE_POOL 4
#define POLL_MIN_MS 500
#define POLL_MAX_MS 5000
#define RETRY_AFTER_MAX_S 600
#define MAX_NAMES 100 /* Let's Encrypt's limit per certificate */
#define PEM_CHAIN "application/pem-certificate-chain"

/* ---- a call: one request to the CA ---- */

struct call;
typedef void (*call_fn)(void *arg, const struct px_acme_resp *r, const struct px_acme_error *err);

struct call {
    struct px_acme_client *c;
    enum px_acme_method method;
    int jws;     /* a signed POST */
    int use_jwk; /* signed with the jwk (newAccount), else the kid */
    char *url, *payload;
    const char *accept;
    int retries; /* badNonce retries left */
    struct px_acme_http_req *req;
    call_fn fn;
    void *arg;
};

enum need { NEED_NOTHING, NEED_DIRECTORY, NEED_ACCOUNT };

struct px_acme_client {
    struct event_base *base;
    struct px_acme_http *http;
    char *directory_url, *email, *accounts_dir;
    struct px_acme_directory dir;
    int have_dir;
    struct px_acme_account acct; /* key NULL until loaded or made; uri = kid */
    char thumbprint[44];
    char *nonces[NONCE_POOL]; /* newest last */
    int nnonces;
    enum { BOOT_IDLE, BOOT_DIRECTORY, BOOT_ACCOUNT } boot;
    struct call boot_call;
    struct px_acme_op *ops;
};

enum op_state {
    ST_START,
    ST_NEW_ORDER,
    ST_AUTHZ,      /* read each authorization */
    ST_CHALLENGE,  /* trigger each pending one */
    ST_POLL_AUTHZ, /* until each is decided */
    ST_POLL_READY, /* the order, until ready */
    ST_FINALIZE,
    ST_POLL_ORDER, /* the order, until valid */
    ST_CERT,
    ST_ARI,
};

static const char *const state_names[] = {
    "start",    "newOrder",   "authorization",        "challenge",   "authorization poll", "order poll",
    "finalize", "order poll", "certificate download", "renewalInfo",
};

struct op_authz {
    char *url, *name;
    char *token, *chall_url, *keyauth;
    enum px_acme_status status, chall_status;
    int published;
};

struct px_acme_op {
    struct px_acme_client *c;
    struct px_acme_op *prev, *next;
    int ari;
    enum need wait; /* waiting for the client's setup */
    enum op_state state;
    char label[128]; /* names[0], for the log */
    char **names;
    size_t nnames;
    struct px_acme_challenge_ops ch;
    px_acme_done_fn done;
    px_acme_window_fn wdone;
    void *arg;
    struct call call;
    struct event *ev_step, *ev_deadline, *ev_finish;
    uint64_t timeout_ms, started_ms;
    unsigned delay_ms;
    char *order_url, *finalize_url, *cert_url;
    struct op_authz *authz;
    size_t nauthz, cur;
    EVP_PKEY *cert_key;
    int finished, failed;
    struct px_acme_error err;
    struct px_acme_chain chain;
    char *key_pem;
    char *cert_id;
    int ari_ok;
    time_t ari_start, ari_end;
    int syncing;     /* waiting for ch.sync's ready */
};

static void op_step(struct px_acme_op *op);
static void op_fail(struct px_acme_op *op, const struct px_acme_error *err);
static void op_failf(struct px_acme_op *op, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void boot_next(struct px_acme_client *c);

/* ---- nonces ---- */

static void nonce_push(struct px_acme_client *c, const char *nonce)
{
    char *copy;
    if (nonce == NULL || nonce[0] == '\0' || strlen(nonce) > 512 || (copy = strdup(nonce)) == NULL)
        return;
    if (c->nnonces == NONCE_POOL) {
        free(c->nonces[0]);
        memmove(c->nonces, c->nonces + 1, (NONCE_POOL - 1) * sizeof(char *));
        c->nnonces--;
    }
    c->nonces[c->nnonces++] = copy;
}

static char *nonce_pop(struct px_acme_client *c)
{
    return c->nnonces > 0 ? c->nonces[--c->nnonces] : NULL;
}

/* ---- calls ---- */

static void call_cancel(struct call *k)
{
    px_acme_http_cancel(k->req);
    k->req = NULL;
}

static void call_clear(struct call *k)
{
    call_cancel(k);
    free(k->url);
    free(k->payload);
    k->url = k->payload = NULL;
}

static void call_on_resp(void *arg, const struct px_acme_resp *r);
static void call_on_nonce(void *arg, const struct px_acme_resp *r);

/* Send (or send again). -1 when out of memory or no nonce can be asked
 * for; the caller reports it. */
static int call_send(struct call *k)
{
    struct px_acme_client *c = k->c;
    if (!k->jws) {
        k->req = px_acme_http_start(c->http, k->method, k->url, NULL, k->accept, call_on_resp, k);
        return k->req ? 0 : -1;
    }
    char *nonce = nonce_pop(c);
    if (nonce == NULL) {
        k->req = px_acme_http_start(c->http, PX_ACME_HEAD, c->dir.new_nonce, NULL, NULL, call_on_nonce, k);
        return k->req ? 0 : -1;
    }
    char *body = px_acme_jws(c->acct.key, k->use_jwk ? NULL : c->acct.uri, nonce, k->url, k->payload);
    free(nonce);
    if (body != NULL)
        k->req = px_acme_http_start(c->http, PX_ACME_POST, k->url, body, k->accept, call_on_resp, k);
    free(body);
    return k->req ? 0 : -1;
}

/* payload NULL: a plain GET; "" a POST-as-GET. */
static int call_start(struct call *k, struct px_acme_client *c, const char *url, const char *payload, int use_jwk,
                      const char *accept, call_fn fn, void *arg)
{
    call_clear(k);
    k->c = c;
    k->method = payload ? PX_ACME_POST : PX_ACME_GET;
    k->jws = payload != NULL;
    k->use_jwk = use_jwk;
    k->accept = accept;
    k->retries = BADNONCE_RETRIES;
    k->fn = fn;
    k->arg = arg;
    if ((k->url = strdup(url)) == NULL || (payload && (k->payload = strdup(payload)) == NULL))
        return -1;
    return call_send(k);
}

static void call_report(struct call *k, const struct px_acme_resp *r, const struct px_acme_error *err)
{
    k->fn(k->arg, r, err); /* may start the next call on k: k is not touched after */
}

static void call_failf(struct call *k, const char *type, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* An error of type with a formatted detail. */
static void error_vset(struct px_acme_error *e, const char *type, const char *fmt, va_list ap)
{
    snprintf(e->type, sizeof(e->type), "%s", type);
    vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
}

static void call_failf(struct call *k, const char *type, const char *fmt, ...)
{
    struct px_acme_error e;
    va_list ap;
    va_start(ap, fmt);
    error_vset(&e, type, fmt, ap);
    va_end(ap);
    call_report(k, NULL, &e);
}

static void call_on_nonce(void *arg, const struct px_acme_resp *r)
{
    struct call *k = arg;
    k->req = NULL;
    if (r->status == 0) {
        call_failf(k, "network", "%s: %s", k->c->dir.new_nonce, r->error);
        return;
    }
    if (r->nonce == NULL) {
        call_failf(k, "bad_response", "%s: HTTP %ld without a Replay-Nonce", k->c->dir.new_nonce, r->status);
        return;
    }
    nonce_push(k->c, r->nonce);
    if (call_send(k) < 0)
        call_failf(k, "internal", "out of memory");
}

static void call_on_resp(void *arg, const struct px_acme_resp *r)
{
    struct call *k = arg;
    struct px_acme_error e;
    k->req = NULL;
    nonce_push(k->c, r->nonce); /* every response carries one, errors too */
    if (r->status == 0) {
        call_failf(k, "network", "%s: %s", k->url, r->error);
        return;
    }
    if (r->status >= 200 && r->status < 300) {
        call_report(k, r, NULL);
        return;
    }
    if (r->status < 400 || px_acme_problem_parse(r->body, r->body_len, &e) < 0)
        px_acme_error_set(&e, "bad_response", "%s: HTTP %ld%s%s", k->url, r->status, r->content_type ? " " : "",
                          r->content_type ? r->content_type : "");
    if (k->jws && strcmp(e.type, "badNonce") == 0 && k->retries > 0) {
        /* RFC 8555 section 6.5: retry with the nonce this error carried
         * (pushed above, popped first) */
        k->retries--;
        px_log_info("acme: badNonce from %s; sending it again with the nonce that came back (%d more times at most)",
                    k->url, k->retries);
        if (call_send(k) < 0)
            call_failf(k, "internal", "out of memory");
        return;
    }
    call_report(k, r, &e);
}

/* ---- the shared setup: directory, then account ---- */

static int satisfied(struct px_acme_client *c, enum need need)
{
    return need == NEED_NOTHING || (need == NEED_DIRECTORY && c->have_dir) ||
           (need == NEED_ACCOUNT && c->have_dir && c->acct.key != NULL && c->acct.uri != NULL);
}

/* The ops waiting for the setup: on to their next step, or failed. */
static void boot_wake(struct px_acme_client *c, const struct px_acme_error *err, enum need failed_need)
{
    for (struct px_acme_op *op = c->ops; op != NULL; op = op->next) {
        if (op->wait == NEED_NOTHING)
            continue;
        if (err != NULL && op->wait >= failed_need) {
            op->wait = NEED_NOTHING;
            op_fail(op, err);
        } else if (err == NULL && satisfied(c, op->wait)) {
            op->wait = NEED_NOTHING;
            op_step(op);
        }
    }
}

static void boot_fail(struct px_acme_client *c, enum need stage, const struct px_acme_error *err)
{
    c->boot = BOOT_IDLE;
    px_log_warn("acme: %s: %s: %s", c->directory_url, err->type, err->detail);
    boot_wake(c, err, stage);
    boot_next(c);
}

static void boot_failf(struct px_acme_client *c, enum need stage, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void boot_failf(struct px_acme_client *c, enum need stage, const char *type, const char *fmt, ...)
{
    struct px_acme_error e;
    va_list ap;
    snprintf(e.type, sizeof(e.type), "%s", type);
    va_start(ap, fmt);
    vsnprintf(e.detail, sizeof(e.detail), fmt, ap);
    va_end(ap);
    boot_fail(c, stage, &e);
}

static void boot_on_directory(void *arg, const struct px_acme_resp *r, const struct px_acme_error *err)
{
    struct px_acme_client *c = arg;
    char why[256];
    if (err != NULL) {
        boot_fail(c, NEED_DIRECTORY, err);
        return;
    }
    if (px_acme_directory_parse(r->body, r->body_len, &c->dir, why, sizeof(why)) < 0) {
        boot_failf(c, NEED_DIRECTORY, "bad_response", "%s: %s", c->directory_url, why);
        return;
    }
    c->have_dir = 1;
    c->boot = BOOT_IDLE;
    boot_wake(c, NULL, NEED_NOTHING);
    boot_next(c);
}

static void boot_on_account(void *arg, const struct px_acme_resp *r, const struct px_acme_error *err)
{
    struct px_acme_client *c = arg;
    enum px_acme_status st;
    char why[256];
    json_t *body;
    if (err != NULL) {
        boot_fail(c, NEED_ACCOUNT, err);
        return;
    }
    if (r->location == NULL) {
        boot_failf(c, NEED_ACCOUNT, "bad_response", "newAccount: HTTP %ld without a Location", r->status);
        return;
    }
    if (px_acme_account_parse(r->body, r->body_len, &st, why, sizeof(why)) < 0) {
        boot_failf(c, NEED_ACCOUNT, "bad_response", "newAccount: %s", why);
        return;
    }
    if (st != PX_ACME_S_VALID) {
        boot_failf(c, NEED_ACCOUNT, "unauthorized", "the account %s is %s", r->location, px_acme_status_name(st));
        return;
    }
    if ((c->acct.uri = strdup(r->location)) == NULL) {
        boot_failf(c, NEED_ACCOUNT, "internal", "out of memory");
        return;
    }
    px_log_info("acme: account %s %s (%s)", c->acct.uri, r->status == 201 ? "registered" : "found", c->acct.dir);
    /* a failure here costs a newAccount next time (the CA answers with
     * this account again for this key); this run goes on */
    body = json_loadb(r->body, r->body_len, 0, NULL);
    if (px_acme_account_save_regr(&c->acct, body, c->acct.uri, why, sizeof(why)) < 0)
        px_log_error("acme: saving the registration: %s", why);
    json_decref(body);
    c->boot = BOOT_IDLE;
    boot_wake(c, NULL, NEED_NOTHING);
    boot_next(c);
}

static void boot_account(struct px_acme_client *c)
{
    char why[256];
    json_t *p = NULL;
    char *text = NULL;
    if (c->dir.eab_required) {
        boot_failf(c, NEED_ACCOUNT, "externalAccountRequired",
                   "%s requires external account binding, which proxyd does not do", c->directory_url);
        return;
    }
    if (c->acct.key == NULL) {
        if ((c->acct.key = px_acme_key_new()) == NULL || px_acme_thumbprint(c->acct.key, c->thumbprint) < 0) {
            boot_failf(c, NEED_ACCOUNT, "internal", "cannot make an account key");
            return;
        }
        /* the key is on disk before the CA knows it: a crash after
         * registering loses nothing */
        if (px_acme_account_save_key(c->accounts_dir, c->directory_url, &c->acct, why, sizeof(why)) < 0) {
            EVP_PKEY_free(c->acct.key);
            c->acct.key = NULL;
            boot_failf(c, NEED_ACCOUNT, "io", "%s", why);
            return;
        }
    }
    p = json_pack("{s:b}", "termsOfServiceAgreed", 1);
    if (p != NULL && c->email != NULL) {
        char contact[320];
        snprintf(contact, sizeof(contact), "mailto:%s", c->email);
        json_object_set_new(p, "contact", json_pack("[s]", contact));
    }
    c->boot = BOOT_ACCOUNT;
    if (p == NULL || (text = json_dumps(p, JSON_COMPACT)) == NULL ||
        call_start(&c->boot_call, c, c->dir.new_account, text, 1, NULL, boot_on_account, c) < 0)
        boot_failf(c, NEED_ACCOUNT, "internal", "out of memory");
    json_decref(p);
    free(text);
}

/* Start the next setup step some op waits for, unless one runs. */
static void boot_next(struct px_acme_client *c)
{
    enum need most = NEED_NOTHING;
    if (c->boot != BOOT_IDLE)
        return;
    for (struct px_acme_op *op = c->ops; op != NULL; op = op->next)
        if (op->wait > most)
            most = op->wait;
    if (most == NEED_NOTHING)
        return;
    if (!c->have_dir) {
        c->boot = BOOT_DIRECTORY;
        if (call_start(&c->boot_call, c, c->directory_url, NULL, 0, NULL, boot_on_directory, c) < 0)
            boot_failf(c, NEED_DIRECTORY, "internal", "out of memory");
    } else if (most == NEED_ACCOUNT && !satisfied(c, NEED_ACCOUNT)) {
        boot_account(c);
    }
}

/* 1 when the op may go on now; else it waits (and is woken by the setup). */
static int op_need(struct px_acme_op *op, enum need need)
{
    if (satisfied(op->c, need))
        return 1;
    op->wait = need;
    boot_next(op->c);
    return 0;
}

/* ---- ops: end ---- */

static void op_unpublish(struct px_acme_op *op, struct op_authz *a)
{
    if (a->published && op->ch.unpublish != NULL)
        op->ch.unpublish(op->ch.arg, a->token);
    a->published = 0;
}

/* Stop everything in flight: the call, the timers, the tokens. */
static void op_stop(struct px_acme_op *op)
{
    if (op->syncing && op->ch.sync_cancel)
        op->ch.sync_cancel(op->ch.arg, op);
    op->syncing = 0;
    call_clear(&op->call);
    if (op->ev_step)
        evtimer_del(op->ev_step);
    if (op->ev_deadline)
        evtimer_del(op->ev_deadline);
    for (size_t i = 0; i < op->nauthz; i++)
        op_unpublish(op, &op->authz[i]);
    op->wait = NEED_NOTHING;
}

static void op_free(struct px_acme_op *op)
{
    if (op == NULL)
        return;
    call_clear(&op->call);
    if (op->ev_step)
        event_free(op->ev_step);
    if (op->ev_deadline)
        event_free(op->ev_deadline);
    if (op->ev_finish)
        event_free(op->ev_finish);
    for (size_t i = 0; i < op->nnames; i++)
        free(op->names[i]);
    free(op->names);
    for (size_t i = 0; i < op->nauthz; i++) {
        struct op_authz *a = &op->authz[i];
        free(a->url);
        free(a->name);
        free(a->token);
        free(a->chall_url);
        free(a->keyauth);
    }
    free(op->authz);
    free(op->order_url);
    free(op->finalize_url);
    free(op->cert_url);
    EVP_PKEY_free(op->cert_key);
    px_acme_chain_clear(&op->chain);
    if (op->key_pem != NULL)
        OPENSSL_cleanse(op->key_pem, strlen(op->key_pem));
    free(op->key_pem);
    free(op->cert_id);
    free(op);
}

static void op_unlink(struct px_acme_op *op)
{
    struct px_acme_client *c = op->c;
    if (c == NULL)
        return;
    if (op->prev)
        op->prev->next = op->next;
    else
        c->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
    op->c = NULL;
}

static void on_finish(evutil_socket_t fd, short what, void *arg)
{
    struct px_acme_op *op = arg;
    op_unlink(op); /* the callback may free the client: op is on its own now */
    if (op->ari) {
        op->wdone(op->arg, op->ari_ok, op->ari_start, op->ari_end);
    } else if (op->failed) {
        op->done(op->arg, NULL, &op->err);
    } else {
        struct px_acme_cert cert = {
            .privkey_pem = op->key_pem,
            .cert_pem = op->chain.cert_pem,
            .chain_pem = op->chain.chain_pem,
            .fullchain_pem = op->chain.fullchain_pem,
            .not_before = op->chain.not_before,
            .not_after = op->chain.not_after,
        };
        op->done(op->arg, &cert, NULL);
    }
    op_free(op);
}

static void op_end(struct px_acme_op *op)
{
    op->finished = 1;
    op_stop(op);
    event_active(op->ev_finish, EV_TIMEOUT, 1);
}

static void op_fail(struct px_acme_op *op, const struct px_acme_error *err)
{
    if (op->finished)
        return;
    op->failed = 1;
    op->err = *err;
    if (op->ari)
        px_log_info("acme: renewalInfo: %s: %s; renewing by expiry", err->type, err->detail);
    else
        px_log_warn("acme %s: %s failed: %s: %s", op->label, state_names[op->state], err->type, err->detail);
    op_end(op);
}

static void op_failf(struct px_acme_op *op, const char *type, const char *fmt, ...)
{
    struct px_acme_error e;
    va_list ap;
    va_start(ap, fmt);
    error_vset(&e, type, fmt, ap);
    va_end(ap);
    op_fail(op, &e);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct px_acme_op *op = arg;
    op_failf(op, "timeout", "no answer within %llu ms (at %s)", (unsigned long long)op->timeout_ms,
             state_names[op->state]);
}

/* ---- ops: the steps ---- */

static void on_step_timer(evutil_socket_t fd, short what, void *arg)
{
    op_step(arg);
}

/* Poll again after the CA's Retry-After, else after a doubling backoff. */
static void op_poll_later(struct px_acme_op *op, const struct px_acme_resp *r)
{
    long ra = px_acme_retry_after(r->retry_after, time(NULL));
    uint64_t ms;
    if (ra > 0) {
        ms = (uint64_t)(ra > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : ra) * 1000;
    } else {
        ms = op->delay_ms;
        op->delay_ms = op->delay_ms * 2 > POLL_MAX_MS ? POLL_MAX_MS : op->delay_ms * 2;
    }
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(op->ev_step, &tv);
}

static void op_goto(struct px_acme_op *op, enum op_state st)
{
    if (st != op->state)
        op->delay_ms = POLL_MIN_MS;
    op->state = st;
}

static void op_on_resp(void *arg, const struct px_acme_resp *r, const struct px_acme_error *err);

static void op_call(struct px_acme_op *op, const char *url, const char *payload, const char *accept)
{
    if (call_start(&op->call, op->c, url, payload, 0, accept, op_on_resp, op) < 0)
        op_failf(op, "internal", "out of memory");
}

static void op_new_order(struct px_acme_op *op)
{
    json_t *ids = json_array(), *p = NULL;
    char *text = NULL;
    for (size_t i = 0; ids && i < op->nnames; i++)
        json_array_append_new(ids, json_pack("{s:s, s:s}", "type", "dns", "value", op->names[i]));
    if (ids != NULL && json_array_size(ids) == op->nnames && (p = json_pack("{s:O}", "identifiers", ids)) != NULL &&
        (text = json_dumps(p, JSON_COMPACT)) != NULL)
        op_call(op, op->c->dir.new_order, text, NULL);
    else
        op_failf(op, "internal", "out of memory");
    json_decref(ids);
    json_decref(p);
    free(text);
}

static void op_finalize(struct px_acme_op *op)
{
    size_t len = 0;
    unsigned char *der = NULL;
    char *b64 = NULL, *text = NULL;
    json_t *p = NULL;
    if (op->cert_key == NULL && (op->cert_key = px_acme_key_new()) == NULL) {
        op_failf(op, "internal", "cannot make a key");
        return;
    }
    if ((der = px_acme_csr_der(op->cert_key, (const char *const *)op->names, op->nnames, &len)) == NULL ||
        (b64 = px_acme_b64url(der, len)) == NULL || (p = json_pack("{s:s}", "csr", b64)) == NULL ||
        (text = json_dumps(p, JSON_COMPACT)) == NULL)
        op_failf(op, "internal", "cannot make the CSR");
    else
        op_call(op, op->finalize_url, text, NULL);
    OPENSSL_free(der);
    free(b64);
    free(text);
    json_decref(p);
}

static void op_ari(struct px_acme_op *op)
{
    const char *base = op->c->dir.renewal_info;
    if (base == NULL) {
        /* pebble 2.4.0, and CAs without RFC 9773 */
        px_log_info("acme: %s offers no renewalInfo; renewing by expiry", op->c->directory_url);
        op_end(op);
        return;
    }
    size_t n = strlen(base) + strlen(op->cert_id) + 2;
    char *url = malloc(n);
    if (url == NULL) {
        op_failf(op, "internal", "out of memory");
        return;
    }
    snprintf(url, n, "%s%s%s", base, base[0] && base[strlen(base) - 1] == '/' ? "" : "/", op->cert_id);
    op_call(op, url, NULL, NULL);
    free(url);
}

/* The next authorization (from op->cur on) that still needs its
 * challenge triggered, or one still undecided; nauthz when none. */
static size_t next_to_trigger(struct px_acme_op *op, size_t from)
{
    for (size_t i = from; i < op->nauthz; i++)
        if (op->authz[i].status == PX_ACME_S_PENDING && op->authz[i].chall_status == PX_ACME_S_PENDING)
            return i;
    return op->nauthz;
}

static size_t next_undecided(struct px_acme_op *op, size_t from)
{
    for (size_t i = from; i < op->nauthz; i++)
        if (op->authz[i].status != PX_ACME_S_VALID)
            return i;
    return op->nauthz;
}

static void op_step(struct px_acme_op *op)
{
    struct op_authz *a = op->cur < op->nauthz ? &op->authz[op->cur] : NULL;
    switch (op->state) {
    case ST_START:
        if (!op_need(op, op->ari ? NEED_DIRECTORY : NEED_ACCOUNT))
            return;
        if (op->ari) {
            op_goto(op, ST_ARI);
            op_ari(op);
        } else {
            px_log_info("acme %s: new order for %zu name%s", op->label, op->nnames, op->nnames == 1 ? "" : "s");
            op_goto(op, ST_NEW_ORDER);
            op_new_order(op);
        }
        return;
    case ST_AUTHZ:
    case ST_POLL_AUTHZ:
        op_call(op, a->url, "", NULL);
        return;
    case ST_CHALLENGE:
        op_call(op, a->chall_url, "{}", NULL);
        return;
    case ST_POLL_READY:
    case ST_POLL_ORDER:
        op_call(op, op->order_url, "", NULL);
        return;
    case ST_FINALIZE:
        op_finalize(op);
        return;
    case ST_CERT:
        op_call(op, op->cert_url, "", PEM_CHAIN);
        return;
    case ST_NEW_ORDER:
    case ST_ARI:
        return; /* started from ST_START only */
    }
}

/* The error that made an authorization invalid: its challenge's. */
static void authz_error(const struct px_acme_authz *az, struct px_acme_error *e)
{
    for (size_t i = 0; i < az->nchallenges; i++)
        if (az->challenges[i].has_error) {
            *e = az->challenges[i].error;
            return;
        }
    px_acme_error_set(e, "unauthorized", "the authorization for %s is %s", az->identifier,
                      px_acme_status_name(az->status));
}

static void trigger_challenges(struct px_acme_op *op);

static void on_synced(void *ctx, int ok)
{
    struct px_acme_op *op = ctx;
    (void)ok; /* the local table has them anyway */
    op->syncing = 0;
    trigger_challenges(op);
}

/* After the authorizations were read: publish every token, then trigger. */
static void start_challenges(struct px_acme_op *op)
{
    for (size_t i = 0; i < op->nauthz; i++) {
        struct op_authz *a = &op->authz[i];
        if (a->status != PX_ACME_S_PENDING || a->published)
            continue;
        if (op->ch.publish == NULL || op->ch.publish(op->ch.arg, a->token, a->keyauth) < 0) {
            op_failf(op, "internal", "could not publish the HTTP-01 answer for %s", a->name);
            return;
        }
        a->published = 1;
    }
    if (op->ch.sync && op->ch.sync(op->ch.arg, on_synced, op) == 0) {
        op->syncing = 1; /* the answers are where every validation may look first */
        return;
    }
    trigger_challenges(op);
}

static void trigger_challenges(struct px_acme_op *op)
{
    if ((op->cur = next_to_trigger(op, 0)) < op->nauthz) {
        op_goto(op, ST_CHALLENGE);
    } else if ((op->cur = next_undecided(op, 0)) < op->nauthz) {
        op_goto(op, ST_POLL_AUTHZ);
    } else {
        op_goto(op, ST_POLL_READY);
    }
    op_step(op);
}

static void on_order(struct px_acme_op *op, const struct px_acme_resp *r)
{
    struct px_acme_order o;
    char why[256];
    if (px_acme_order_parse(r->body, r->body_len, &o, why, sizeof(why)) < 0) {
        op_failf(op, "bad_response", "%s", why);
        return;
    }
    if (op->state == ST_NEW_ORDER) {
        if (r->location == NULL || o.nauthorizations == 0 || o.nauthorizations > 2 * op->nnames) {
            op_failf(op, "bad_response", "newOrder: %s",
                     r->location ? "the authorizations do not match the names" : "no Location");
            goto out;
        }
        if ((op->order_url = strdup(r->location)) == NULL || (op->finalize_url = strdup(o.finalize)) == NULL ||
            (op->authz = calloc(o.nauthorizations, sizeof(*op->authz))) == NULL) {
            op_failf(op, "internal", "out of memory");
            goto out;
        }
        for (size_t i = 0; i < o.nauthorizations; i++, op->nauthz++)
            if ((op->authz[i].url = strdup(o.authorizations[i])) == NULL) {
                op_failf(op, "internal", "out of memory");
                goto out;
            }
        px_log_info("acme %s: order %s (%s)", op->label, op->order_url, px_acme_status_name(o.status));
    }
    if (o.status == PX_ACME_S_INVALID) {
        if (o.has_error)
            op_fail(op, &o.error);
        else
            op_failf(op, "unauthorized", "the order %s is invalid", op->order_url);
        goto out;
    }
    switch (op->state) {
    case ST_NEW_ORDER:
        op->cur = 0;
        op_goto(op, ST_AUTHZ);
        op_step(op);
        break;
    case ST_POLL_READY:
    case ST_FINALIZE:
    case ST_POLL_ORDER:
        if (o.status == PX_ACME_S_VALID) {
            if ((op->cert_url = strdup(o.certificate)) == NULL) {
                op_failf(op, "internal", "out of memory");
                break;
            }
            op_goto(op, ST_CERT);
            op_step(op);
        } else if (o.status == PX_ACME_S_READY && op->state == ST_POLL_READY) {
            px_log_info("acme %s: finalizing", op->label);
            op_goto(op, ST_FINALIZE);
            op_step(op);
        } else if (o.status == PX_ACME_S_PENDING && op->state == ST_POLL_READY) {
            op_poll_later(op, r); /* the authorizations are valid; the order catches up */
        } else if (o.status == PX_ACME_S_PROCESSING || o.status == PX_ACME_S_READY) {
            op_goto(op, ST_POLL_ORDER);
            op_poll_later(op, r); /* issuing; pebble gives no Retry-After */
        } else {
            op_failf(op, "bad_response", "the order is %s after %s", px_acme_status_name(o.status),
                     state_names[op->state]);
        }
        break;
    default:
        break;
    }
out:
    px_acme_order_clear(&o);
}

static void on_authz(struct px_acme_op *op, const struct px_acme_resp *r)
{
    struct op_authz *a = &op->authz[op->cur];
    struct px_acme_authz az;
    struct px_acme_error e;
    char why[256];
    if (px_acme_authz_parse(r->body, r->body_len, &az, why, sizeof(why)) < 0) {
        op_failf(op, "bad_response", "%s", why);
        return;
    }
    if (a->name == NULL && (a->name = strdup(az.identifier)) == NULL) {
        op_failf(op, "internal", "out of memory");
        goto out;
    }
    a->status = az.status;
    switch (az.status) {
    case PX_ACME_S_VALID:
        if (op->state == ST_AUTHZ)
            px_log_info("acme %s: %s already authorized", op->label, a->name);
        else
            px_log_info("acme %s: %s validated", op->label, a->name);
        op_unpublish(op, a);
        break;
    case PX_ACME_S_PENDING: {
        if (op->state == ST_POLL_AUTHZ) {
            op_poll_later(op, r);
            goto out;
        }
        const struct px_acme_challenge *ch = px_acme_authz_challenge(&az, "http-01");
        if (ch == NULL || ch->token == NULL) {
            op_failf(op, "bad_response", "no http-01 challenge for %s%s", a->name,
                     az.wildcard ? " (a wildcard name needs DNS-01)" : "");
            goto out;
        }
        if ((a->token = strdup(ch->token)) == NULL || (a->chall_url = strdup(ch->url)) == NULL ||
            (a->keyauth = px_acme_key_authorization(ch->token, op->c->thumbprint)) == NULL) {
            op_failf(op, "internal", "out of memory");
            goto out;
        }
        /* a challenge already processing (an earlier run triggered it) is
         * only polled */
        a->chall_status = ch->status;
        break;
    }
    case PX_ACME_S_INVALID:
        op_unpublish(op, a);
        authz_error(&az, &e);
        op_fail(op, &e);
        goto out;
    default:
        op_failf(op, "unauthorized", "the authorization for %s is %s", a->name, px_acme_status_name(az.status));
        goto out;
    }
    if (op->state == ST_AUTHZ) {
        if (++op->cur < op->nauthz)
            op_step(op);
        else
            start_challenges(op);
    } else if ((op->cur = next_undecided(op, op->cur)) < op->nauthz) {
        op_goto(op, ST_POLL_AUTHZ);
        op->delay_ms = POLL_MIN_MS;
        op_step(op);
    } else {
        op_goto(op, ST_POLL_READY);
        op_step(op);
    }
out:
    px_acme_authz_clear(&az);
}

static void on_challenge(struct px_acme_op *op, const struct px_acme_resp *r)
{
    struct op_authz *a = &op->authz[op->cur];
    struct px_acme_challenge ch;
    char why[256];
    if (px_acme_challenge_parse(r->body, r->body_len, &ch, why, sizeof(why)) < 0) {
        op_failf(op, "bad_response", "%s", why);
        return;
    }
    if (ch.status == PX_ACME_S_INVALID) {
        if (ch.has_error)
            op_fail(op, &ch.error);
        else
            op_failf(op, "unauthorized", "the challenge for %s is invalid", a->name);
        px_acme_challenge_clear(&ch);
        return;
    }
    px_log_info("acme %s: http-01 challenge for %s triggered", op->label, a->name);
    a->chall_status = ch.status == PX_ACME_S_UNKNOWN ? PX_ACME_S_PROCESSING : ch.status;
    px_acme_challenge_clear(&ch);
    if ((op->cur = next_to_trigger(op, op->cur + 1)) < op->nauthz) {
        op_step(op);
        return;
    }
    op->cur = next_undecided(op, 0);
    op_goto(op, op->cur < op->nauthz ? ST_POLL_AUTHZ : ST_POLL_READY);
    op_step(op);
}

static void on_cert(struct px_acme_op *op, const struct px_acme_resp *r)
{
    char why[256];
    BIO *b = NULL;
    X509 *leaf = NULL;
    if (px_acme_chain_parse(r->body, r->body_len, &op->chain, why, sizeof(why)) < 0) {
        op_failf(op, "bad_response", "%s: %s", op->cert_url, why);
        return;
    }
    if ((b = BIO_new_mem_buf(op->chain.cert_pem, -1)) == NULL ||
        (leaf = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL || X509_check_private_key(leaf, op->cert_key) != 1) {
        op_failf(op, "bad_response", "%s: the certificate is not for the key of the CSR", op->cert_url);
    } else if (px_acme_cert_check(op->chain.cert_pem, (const char *const *)op->names, op->nnames, time(NULL), why,
                                  sizeof(why)) < 0) {
        /* checked before anything is written: the certificate in service
         * stays */
        op_failf(op, "bad_certificate", "%s: the certificate the CA issued is not the one ordered: %s", op->cert_url,
                 why);
    } else if ((op->key_pem = px_acme_key_pem(op->cert_key)) == NULL) {
        op_failf(op, "internal", "out of memory");
    } else {
        char when[32];
        struct tm tm;
        gmtime_r(&op->chain.not_after, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
        px_log_info("acme %s: certificate issued (%zu in the chain), valid until %s, in %.1f s", op->label,
                    op->chain.ncerts, when, (double)(px_now_ms() - op->started_ms) / 1000.0);
        op_end(op);
    }
    X509_free(leaf);
    BIO_free(b);
}

static void op_on_resp(void *arg, const struct px_acme_resp *r, const struct px_acme_error *err)
{
    struct px_acme_op *op = arg;
    if (err != NULL) {
        if (strcmp(err->type, "accountDoesNotExist") == 0 && op->c->acct.uri != NULL) {
            /* the CA forgot the account (a test CA restarted): the next op
             * registers this key again */
            px_log_warn("acme: the CA does not know the account %s; registering again next time", op->c->acct.uri);
            free(op->c->acct.uri);
            op->c->acct.uri = NULL;
        }
        op_fail(op, err);
        return;
    }
    switch (op->state) {
    case ST_NEW_ORDER:
    case ST_POLL_READY:
    case ST_FINALIZE:
    case ST_POLL_ORDER:
        on_order(op, r);
        return;
    case ST_AUTHZ:
    case ST_POLL_AUTHZ:
        on_authz(op, r);
        return;
    case ST_CHALLENGE:
        on_challenge(op, r);
        return;
    case ST_CERT:
        on_cert(op, r);
        return;
    case ST_ARI: {
        char why[256];
        if (px_acme_renewal_info_parse(r->body, r->body_len, &op->ari_start, &op->ari_end, why, sizeof(why)) < 0) {
            op_failf(op, "bad_response", "%s", why);
            return;
        }
        op->ari_ok = 1;
        op_end(op);
        return;
    }
    case ST_START:
        return;
    }
}

/* ---- ops: start ---- */

/* A DNS name as we send it: lowercase LDH labels (a leading "*." allowed;
 * the CA decides), at most 253 bytes. */
static int name_ok(const char *s)
{
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > 253)
        return 0;
    if (strncmp(s, "*.", 2) == 0)
        s += 2;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0 || label > 63 || p[-1] == '-')
                return 0;
            if (*p == '\0')
                return 1;
            label = 0;
            continue;
        }
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || (*p == '-' && label > 0)))
            return 0;
        label++;
    }
}

static struct px_acme_op *op_new(struct px_acme_client *c, const char *label, uint64_t timeout_ms, void *arg)
{
    struct px_acme_op *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->arg = arg;
    op->timeout_ms = timeout_ms;
    op->started_ms = px_now_ms();
    op->delay_ms = POLL_MIN_MS;
    snprintf(op->label, sizeof(op->label), "%s", label);
    if ((op->ev_step = evtimer_new(c->base, on_step_timer, op)) == NULL ||
        (op->ev_deadline = evtimer_new(c->base, on_deadline, op)) == NULL ||
        (op->ev_finish = event_new(c->base, -1, 0, on_finish, op)) == NULL) {
        op_free(op);
        return NULL;
    }
    op->c = c;
    op->next = c->ops;
    if (c->ops)
        c->ops->prev = op;
    c->ops = op;
    return op;
}

/* The first step runs from the loop, so the callback never runs inside
 * the call that started the op. */
static void op_launch(struct px_acme_op *op)
{
    struct timeval zero = {0, 0};
    if (op->finished)
        return; /* failed already (bad arguments): only the callback is left */
    if (op->timeout_ms > 0) {
        struct timeval tv = {.tv_sec = (time_t)(op->timeout_ms / 1000),
                             .tv_usec = (suseconds_t)(op->timeout_ms % 1000) * 1000};
        evtimer_add(op->ev_deadline, &tv);
    }
    evtimer_add(op->ev_step, &zero);
}

struct px_acme_op *px_acme_obtain(struct px_acme_client *c, const char *const *names, size_t n,
                                  const struct px_acme_challenge_ops *ch, uint64_t timeout_ms, px_acme_done_fn done,
                                  void *arg)
{
    struct px_acme_op *op = op_new(c, n > 0 && names[0] ? names[0] : "(no name)", timeout_ms, arg);
    if (op == NULL)
        return NULL;
    op->done = done;
    if (ch != NULL)
        op->ch = *ch;
    if ((op->names = calloc(n ? n : 1, sizeof(char *))) == NULL) {
        px_acme_op_cancel(op);
        return NULL;
    }
    for (size_t i = 0; i < n; i++, op->nnames++)
        if ((op->names[i] = strdup(names[i] ? names[i] : "")) == NULL) {
            px_acme_op_cancel(op);
            return NULL;
        }
    if (n == 0 || n > MAX_NAMES)
        op_failf(op, "internal", "%zu names (1 to %d per certificate)", n, MAX_NAMES);
    for (size_t i = 0; i < n && !op->finished; i++) {
        if (!name_ok(op->names[i]))
            op_failf(op, "internal", "\"%s\" is not a lowercase DNS name", op->names[i]);
        for (size_t j = 0; j < i && !op->finished; j++)
            if (strcmp(op->names[i], op->names[j]) == 0)
                op_failf(op, "internal", "%s is listed twice", op->names[i]);
    }
    if (ch == NULL || ch->publish == NULL)
        op_failf(op, "internal", "no way to publish HTTP-01 answers");
    op_launch(op);
    return op;
}

struct px_acme_op *px_acme_renewal_info(struct px_acme_client *c, const char *cert_pem, px_acme_window_fn done,
                                        void *arg)
{
    char why[256];
    struct px_acme_op *op = op_new(c, "renewalInfo", 60000, arg);
    if (op == NULL)
        return NULL;
    op->ari = 1;
    op->wdone = done;
    if ((op->cert_id =
             px_acme_ari_cert_id(cert_pem ? cert_pem : "", cert_pem ? strlen(cert_pem) : 0, why, sizeof(why))) == NULL)
        op_failf(op, "internal", "%s", why);
    op_launch(op);
    return op;
}

void px_acme_op_cancel(struct px_acme_op *op)
{
    if (op == NULL)
        return;
    op_stop(op);
    op_unlink(op);
    op_free(op);
}

/* ---- the client ---- */

struct px_acme_client *px_acme_client_new(struct event_base *base, const struct px_acme_client_conf *conf, char *err,
                                          size_t errlen)
{
    struct px_acme_client *c;
    char *sub;
    if (conf->directory == NULL || conf->accounts_dir == NULL || conf->accounts_dir[0] == '\0') {
        snprintf(err, errlen, "acme: directory and accounts_dir are required");
        return NULL;
    }
    if ((sub = px_acme_account_subdir(conf->directory, err, errlen)) == NULL)
        return NULL;
    free(sub);
    if (px_acme_global_init(err, errlen) < 0)
        return NULL;
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->base = base;
    if ((c->directory_url = strdup(conf->directory)) == NULL ||
        (c->accounts_dir = strdup(conf->accounts_dir)) == NULL ||
        (conf->email && conf->email[0] && (c->email = strdup(conf->email)) == NULL)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if ((c->http = px_acme_http_new(base, conf->ca_bundle, err, errlen)) == NULL)
        goto fail;
    int found = px_acme_account_load_id(c->accounts_dir, c->directory_url, conf->account_id, &c->acct, err, errlen);
    if (found < 0)
        goto fail;
    if (found == 1) {
        if (px_acme_thumbprint(c->acct.key, c->thumbprint) < 0) {
            snprintf(err, errlen, "%s: not a P-256 key", c->acct.dir);
            goto fail;
        }
        px_log_info("acme: account %s (%s)", c->acct.uri ? c->acct.uri : "not registered yet", c->acct.dir);
    }
    return c;
fail:
    px_acme_client_free(c);
    return NULL;
}

void px_acme_client_free(struct px_acme_client *c)
{
    if (c == NULL)
        return;
    while (c->ops != NULL)
        px_acme_op_cancel(c->ops);
    call_clear(&c->boot_call);
    px_acme_http_free(c->http);
    px_acme_directory_clear(&c->dir);
    px_acme_account_clear(&c->acct);
    while (c->nnonces > 0)
        free(c->nonces[--c->nnonces]);
    free(c->directory_url);
    free(c->email);
    free(c->accounts_dir);
    free(c);
}
