/* tls.c -- SSL_CTX per name, SNI, ALPN, session cache, tickets.
 *
 * Two layers, so that sessions survive a certificate swap (STYLE.md):
 *  - a base (struct tls_base): one SSL_CTX without certificates that every
 *    SSL is created from, so it is each SSL's session_ctx: it holds the
 *    server-side session cache and the ticket-key callback and keys. It lives
 *    as long as its SSL_CTX (the last px_tls or SSL holding a reference); a
 *    new px_tls whose session settings are unchanged shares it.
 *  - the certificate contexts of one px_tls (default + SNI names), rebuilt
 *    on every reload. The servername callback, which OpenSSL runs for every
 *    ClientHello (with or without SNI), moves the SSL onto one of them. */
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>
#include <limits.h>
#include <time.h>

#include <pthread.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "px/common.h"
#include "px/config.h"
#include "px/log.h"
#include "px/tls.h"

struct tls_name {
    char *name;               /* lowercase; "*.example.com" allowed */
    SSL_CTX *ctx;
};

/* Session-ticket keys: tickets are issued under [0] and accepted under [0]
 * or [1] (a ticket under [1] is renewed). The main thread rotates them. */
#define TICKET_ROTATE_MS (3600 * 1000)
struct ticket_key {
    unsigned char name[16], aes[32], hmac[32];
};

struct tls_base {
    SSL_CTX *ctx;             /* no certificate; app data = this struct; frees it (ex_data) */
    pthread_mutex_t tk_lock;
    struct ticket_key tk[2];
    int ntk;
    uint64_t tk_rotated_ms;
    /* the session settings it was made with (px_tls_build compares them) */
    int tickets;
    int proto_min, proto_max;
    uint64_t session_timeout_ms;
    char *ciphers;
};

struct px_tls {
    struct tls_base *base;    /* holds a reference on base->ctx */
    SSL_CTX *dflt;
    struct tls_name *names;
    size_t nnames;
    unsigned char alpn[32];   /* wire format, our preference order */
    size_t alpn_len;
    struct px_tls_cert *certs; /* px_tls_certs */
    size_t ncerts;
};

static int64_t cert_not_after(X509 *x)
{
    struct tm tm;
    if (x == NULL || ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

/* Remember that path's certificate expires at na (0: unknown, skipped). */
static int cert_note(struct px_tls *t, const char *path, int64_t na)
{
    if (na == 0 || path == NULL)
        return 0;
    char label[512];
    const char *live = strstr(path, "/live/");
    const char *end = live ? strchr(live + 6, '/') : NULL;
    if (live && end && end > live + 6 && (size_t)(end - live - 6) < sizeof(label))
        snprintf(label, sizeof(label), "%.*s", (int)(end - live - 6), live + 6);
    else
        snprintf(label, sizeof(label), "%s", path);
    for (size_t i = 0; i < t->ncerts; i++)
        if (strcmp(t->certs[i].label, label) == 0) {
            if (na < t->certs[i].not_after)
                t->certs[i].not_after = na;
            return 0;
        }
    struct px_tls_cert *c = realloc(t->certs, (t->ncerts + 1) * sizeof(*c));
    if (c == NULL)
        return -1;
    t->certs = c;
    if ((c[t->ncerts].label = strdup(label)) == NULL)
        return -1;
    c[t->ncerts++].not_after = na;
    return 0;
}

const struct px_tls_cert *px_tls_certs(const struct px_tls *t, size_t *n)
{
    *n = t ? t->ncerts : 0;
    return t ? t->certs : NULL;
}

/* key: the config key; line: where the config sets it (0: not from the
 * config, e.g. an ACME lineage), giving "FILE:LINE: key: PATH: reason" as
 * every config error does. what: the message (NULL: OpenSSL's reason). */
static void ssl_err(char *err, size_t errlen, const struct px_tls_conf *conf, int line, const char *key,
                    const char *path, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256], msg[320];
    ERR_error_string_n(e, buf, sizeof(buf));
    /* keep only the reason: "error:0A000086:SSL routines::certificate verify failed" -> after last ':' */
    const char *reason = strrchr(buf, ':');
    reason = reason && reason[1] ? reason + 1 : buf;
    /* a given message replaces OpenSSL's reason: for a key that does not
     * match, OpenSSL 3 drops the certificate and says "no certificate assigned" */
    snprintf(msg, sizeof(msg), "%s", what ? what : reason);
    if (conf && conf->file && line > 0)
        snprintf(err, errlen, "%s:%d: %s: %s: %s", conf->file, line, key, path, msg);
    else
        snprintf(err, errlen, "%s %s: %s", key, path, msg);
    ERR_clear_error();
}

/* ex_data indexes: the px_tls an SSL was made for (set until its handshake
 * is done: conn.c pins the snapshot holding it that long), and the base an
 * SSL_CTX frees with it. */
static int ssl_tls_idx = -1, ctx_base_idx = -1;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    PX_UNUSED(arg);
    const struct px_tls *t = SSL_get_ex_data(ssl, ssl_tls_idx);
    unsigned char *o;
    if (t == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    /* our preference wins (h2 first when configured) */
    if (SSL_select_next_proto(&o, outlen, t->alpn, (unsigned int)t->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no overlap: carry on without ALPN (HTTP/1.1) */
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static int name_matches(const char *pattern, const char *host)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(host, '.');
        return dot && strcasecmp(dot, pattern + 1) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

static void base_free(struct tls_base *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->tk_lock);
    OPENSSL_cleanse(b->tk, sizeof(b->tk));
    free(b->ciphers);
    free(b);
}

/* The base SSL_CTX was freed (its last SSL or px_tls is gone): free the base. */
static void base_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    PX_UNUSED(parent);
    PX_UNUSED(ad);
    PX_UNUSED(idx);
    PX_UNUSED(argl);
    PX_UNUSED(argp);
    base_free(ptr);
}

static void idx_init(void)
{
    ssl_tls_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ctx_base_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, base_ex_free);
}

/* Every SSL starts on the base context (no certificate); move it onto the
 * certificate context for its name (the default one without SNI or for an
 * unknown name). OpenSSL calls this for every ClientHello. */
static int servername_cb(SSL *ssl, int *al, void *arg)
{
    PX_UNUSED(arg);
    const struct px_tls *t = SSL_get_ex_data(ssl, ssl_tls_idx);
    if (t == NULL) {
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    SSL_CTX *ctx = t->dflt;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    /* exact names first, then wildcards */
    for (int pass = 0; host && pass < 2 && ctx == t->dflt; pass++) {
        for (size_t i = 0; i < t->nnames; i++) {
            const char *n = t->names[i].name;
            if ((n[0] == '*') != (pass == 1))
                continue;
            if (name_matches(n, host)) {
                ctx = t->names[i].ctx;
                break;
            }
        }
    }
    SSL_set_SSL_CTX(ssl, ctx);
    return SSL_TLSEXT_ERR_OK;
}

static int new_ticket_key(struct ticket_key *k)
{
    return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
                   RAND_bytes(k->hmac, sizeof(k->hmac)) == 1
               ? 0
               : -1;
}

static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    /* the base and every certificate context carry the base as app data; the
     * SSL holds a reference on the base context (its session_ctx) */
    struct tls_base *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct ticket_key k;
    int which = -1;
    pthread_mutex_lock(&t->tk_lock);
    if (enc) {
        which = 0;
    } else {
        for (int i = 0; i < t->ntk; i++)
            if (memcmp(name, t->tk[i].name, 16) == 0)
                which = i;
    }
    if (which >= 0)
        k = t->tk[which];
    pthread_mutex_unlock(&t->tk_lock);
    if (which < 0)
        return 0; /* unknown key: full handshake */
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (enc) {
        memcpy(name, k.name, 16);
        if (RAND_bytes(iv, 16) != 1 || EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1 ||
            EVP_MAC_CTX_set_params(hctx, params) != 1)
            return -1;
        return 1;
    }
    if (EVP_MAC_CTX_set_params(hctx, params) != 1 || EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
        return -1;
    return which == 0 ? 1 : 2; /* 2: valid, but issue a fresh ticket */
}

void px_tls_rotate_tickets(struct px_tls *tls, uint64_t now_ms)
{
    struct tls_base *t = tls ? tls->base : NULL;
    if (t == NULL || !t->tickets || now_ms - t->tk_rotated_ms < TICKET_ROTATE_MS)
        return;
    struct ticket_key k;
    if (new_ticket_key(&k) < 0)
        return;
    pthread_mutex_lock(&t->tk_lock);
    t->tk[1] = t->tk[0];
    t->tk[0] = k;
    t->ntk = 2;
    t->tk_rotated_ms = now_ms;
    pthread_mutex_unlock(&t->tk_lock);
}

/* conf, cline, kline, ckey, kkey: for the errors (the keys and lines that
 * name the two files). */
static int add_keypair(SSL_CTX *ctx, const char *cert, const char *key, const struct px_tls_conf *conf, int cline,
                       int kline, const char *ckey, const char *kkey, char *err, size_t errlen)
{
    /* a file the process cannot read (proxyd runs as `user` after the
     * drop): name its mode and owner, not OpenSSL's "system lib" */
    const char *files[2] = {cert, key}, *keys[2] = {ckey, kkey};
    int lines[2] = {cline, kline};
    for (int i = 0; i < 2; i++)
        if (access(files[i], R_OK) < 0 && errno == EACCES) {
            char why[256];
            ERR_clear_error();
            ssl_err(err, errlen, conf, lines[i], keys[i], files[i], px_open_error(files[i], EACCES, why, sizeof(why)));
            return -1;
        }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_err(err, errlen, conf, cline, ckey, cert, NULL);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_err(err, errlen, conf, kline, kkey, key, NULL);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err(err, errlen, conf, kline, kkey, key, "does not match the certificate");
        return -1;
    }
    return 0;
}

/* "a.crt b.crt" + "a.key b.key" ([tls] certificate, certificate_key): pairs in order. */
static int add_keypairs(SSL_CTX *ctx, const struct px_tls_conf *conf, char *err, size_t errlen)
{
    char *c = strdup(conf->certificate), *k = strdup(conf->certificate_key);
    int rc = -1, n = 0;
    if (c == NULL || k == NULL)
        goto out;
    char *sc = NULL, *sk = NULL;
    char *ct = strtok_r(c, " \t", &sc), *kt = strtok_r(k, " \t", &sk);
    while (ct && kt) {
        if (add_keypair(ctx, ct, kt, conf, conf->certificate_line, conf->certificate_key_line, "certificate",
                        "certificate_key", err, errlen) < 0)
            goto out;
        n++;
        ct = strtok_r(NULL, " \t", &sc);
        kt = strtok_r(NULL, " \t", &sk);
    }
    if (ct || kt || n == 0) {
        if (conf->file && conf->certificate_key_line > 0)
            snprintf(err, errlen, "%s:%d: certificate_key: must list as many files as certificate", conf->file,
                     conf->certificate_key_line);
        else
            snprintf(err, errlen, "certificate and certificate_key must list the same number of files");
        goto out;
    }
    rc = 0;
out:
    free(c);
    free(k);
    return rc;
}

static void remove_cb(SSL_CTX *ctx, SSL_SESSION *sess);

/* A context with conf's protocol settings. base: the session context (cache,
 * tickets); otherwise a certificate context. app: the tls_base (app data). */
static SSL_CTX *ctx_new(const struct px_tls_conf *conf, int base, struct tls_base *app, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, conf->proto_min ? conf->proto_min : TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, conf->proto_max ? conf->proto_max : TLS1_3_VERSION);
    if (conf->ciphers && SSL_CTX_set_cipher_list(ctx, conf->ciphers) != 1) {
        ssl_err(err, errlen, conf, 0, "ciphers", conf->ciphers, NULL); /* the config checked it (with its line) */
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* No SSL_OP_IGNORE_UNEXPECTED_EOF: a truncated stream is an error. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 (conf->session_tickets ? 0 : SSL_OP_NO_TICKET));
    /* Release buffers of idle connections; allow partial writes of a moving buffer. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    static const unsigned char sid_ctx[] = "proxyd";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    /* Sessions are stored in and looked up from the base (every SSL's
     * session_ctx). The certificate contexts need the same mode all the same:
     * OpenSSL sends an empty TLS 1.2 session ID when the SSL's current ctx
     * does not cache, so nothing could be resumed. */
    if (conf->session_timeout_ms == 0) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_set_timeout(ctx, (long)(conf->session_timeout_ms / 1000 ? conf->session_timeout_ms / 1000 : 1));
        SSL_CTX_sess_set_cache_size(ctx, 20480);
    }
    if (base && conf->session_tickets)
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    /* TLS 1.3 resumes through NewSessionTicket: one is enough for the cache
     * or a ticket; none when there is nothing to resume (OpenSSL sends two).
     * An SSL takes this from the base. */
    SSL_CTX_set_num_tickets(ctx, conf->session_tickets || conf->session_timeout_ms ? 1 : 0);
    SSL_CTX_set_app_data(ctx, app);
    if (base) {
        SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
        SSL_CTX_sess_set_remove_cb(ctx, remove_cb); /* px_tls_sessions_each */
    }
    else
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return ctx;
}

static int str_eq(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/* Can a px_tls for conf use base b (same session settings)? */
static int base_fits(const struct tls_base *b, const struct px_tls_conf *conf)
{
    return b->tickets == conf->session_tickets && b->proto_min == conf->proto_min &&
           b->proto_max == conf->proto_max && b->session_timeout_ms == conf->session_timeout_ms &&
           str_eq(b->ciphers, conf->ciphers);
}

/* A new base; the caller holds the one reference on its context. */
static struct tls_base *base_new(const struct px_tls_conf *conf, char *err, size_t errlen)
{
    struct tls_base *b = calloc(1, sizeof(*b));
    if (b == NULL || (conf->ciphers && (b->ciphers = strdup(conf->ciphers)) == NULL)) {
        free(b);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&b->tk_lock, NULL);
    b->tickets = conf->session_tickets;
    b->proto_min = conf->proto_min;
    b->proto_max = conf->proto_max;
    b->session_timeout_ms = conf->session_timeout_ms;
    if (b->tickets) {
        if (new_ticket_key(&b->tk[0]) < 0) {
            snprintf(err, errlen, "cannot make session ticket keys");
            goto fail;
        }
        b->ntk = 1;
        b->tk_rotated_ms = px_now_ms();
    }
    if ((b->ctx = ctx_new(conf, 1, b, err, errlen)) == NULL)
        goto fail;
    if (SSL_CTX_set_ex_data(b->ctx, ctx_base_idx, b) != 1) {
        SSL_CTX_free(b->ctx);
        goto fail;
    }
    return b; /* from now on SSL_CTX_free(b->ctx) frees b */
fail:
    base_free(b);
    return NULL;
}

static int parse_alpn(struct px_tls *t, const char *s, char *err, size_t errlen)
{
    t->alpn_len = 0;
    char *copy = strdup(s ? s : "h2 http/1.1"), *save = NULL;
    if (copy == NULL)
        return -1;
    for (char *tok = strtok_r(copy, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
        size_t n = strlen(tok);
        if (t->alpn_len + 1 + n > sizeof(t->alpn)) {
            snprintf(err, errlen, "alpn: too long");
            free(copy);
            return -1;
        }
        t->alpn[t->alpn_len++] = (unsigned char)n;
        memcpy(t->alpn + t->alpn_len, tok, n);
        t->alpn_len += n;
    }
    free(copy);
    return 0;
}

/* The public name of a base: px_tls_sessions is a tls_base (casts only). */
struct px_tls_sessions *px_tls_sessions(const struct px_tls *t)
{
    return t ? (struct px_tls_sessions *)t->base : NULL;
}

struct px_tls_sessions *px_tls_sessions_ref(struct px_tls_sessions *s)
{
    if (s)
        SSL_CTX_up_ref(((struct tls_base *)s)->ctx); /* cannot fail on a live context */
    return s;
}

void px_tls_sessions_unref(struct px_tls_sessions *s)
{
    if (s)
        SSL_CTX_free(((struct tls_base *)s)->ctx); /* the last frees the base too */
}

/* ---- a binary upgrade's carry-over ---- */

size_t px_tls_ticket_keys_get(struct px_tls_sessions *s, unsigned char *out, size_t cap, uint64_t *rotated_ms)
{
    struct tls_base *b = (struct tls_base *)s;
    size_t n = 0;
    if (b == NULL || !b->tickets)
        return 0;
    pthread_mutex_lock(&b->tk_lock);
    for (int i = 0; i < b->ntk && n + PX_TLS_TICKET_KEY_LEN <= cap; i++) {
        memcpy(out + n, b->tk[i].name, 16);
        memcpy(out + n + 16, b->tk[i].aes, 32);
        memcpy(out + n + 48, b->tk[i].hmac, 32);
        n += PX_TLS_TICKET_KEY_LEN;
    }
    *rotated_ms = b->tk_rotated_ms;
    pthread_mutex_unlock(&b->tk_lock);
    return n;
}

void px_tls_ticket_keys_set(struct px_tls_sessions *s, const unsigned char *keys, size_t len, uint64_t rotated_ms)
{
    struct tls_base *b = (struct tls_base *)s;
    size_t nk = len / PX_TLS_TICKET_KEY_LEN;
    if (b == NULL || !b->tickets || nk == 0)
        return;
    pthread_mutex_lock(&b->tk_lock);
    b->ntk = nk > 2 ? 2 : (int)nk;
    for (int i = 0; i < b->ntk; i++) {
        const unsigned char *k = keys + (size_t)i * PX_TLS_TICKET_KEY_LEN;
        memcpy(b->tk[i].name, k, 16);
        memcpy(b->tk[i].aes, k + 16, 32);
        memcpy(b->tk[i].hmac, k + 48, 32);
    }
    b->tk_rotated_ms = rotated_ms;
    pthread_mutex_unlock(&b->tk_lock);
}

/* The session cache is OpenSSL's, behind its own lock, with no iterator
 * that takes it: SSL_CTX_sessions() is not thread-safe while workers add
 * sessions. SSL_CTX_flush_sessions() does take it and hands every session
 * it removes to the remove callback under it: so a dump flushes the whole
 * cache into a list (this thread's collector; the callback ignores the
 * workers' own removals) and puts the copies back at once. A handshake
 * that looks a session up in between makes a full handshake, nothing worse. */
struct sess_collect {
    unsigned char **der;
    int *len;
    size_t n, cap;
};
static __thread struct sess_collect *tl_collect;

static void remove_cb(SSL_CTX *ctx, SSL_SESSION *sess)
{
    struct sess_collect *c = tl_collect;
    PX_UNUSED(ctx);
    if (c == NULL)
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        unsigned char **d = realloc(c->der, cap * sizeof(*d));
        if (d)
            c->der = d;
        int *l = d ? realloc(c->len, cap * sizeof(*l)) : NULL;
        if (l == NULL)
            return;
        c->len = l;
        c->cap = cap;
    }
    unsigned char *p = NULL;
    int n = i2d_SSL_SESSION(sess, &p);
    if (n <= 0)
        return;
    c->der[c->n] = p;
    c->len[c->n++] = n;
}

int px_tls_sessions_each(struct px_tls_sessions *s, px_tls_session_fn fn, void *arg)
{
    struct tls_base *b = (struct tls_base *)s;
    struct sess_collect c = {0};
    if (b == NULL)
        return 0;
    tl_collect = &c;
    /* far in the future: every session counts as timed out (oldest first) */
    SSL_CTX_flush_sessions(b->ctx, (long)time(NULL) + 100L * 365 * 86400);
    tl_collect = NULL;
    for (size_t i = 0; i < c.n; i++) {
        fn(arg, c.der[i], (size_t)c.len[i]);
        px_tls_session_add(s, c.der[i], (size_t)c.len[i]);
        OPENSSL_free(c.der[i]);
    }
    free(c.der);
    free(c.len);
    return (int)c.n;
}

int px_tls_session_add(struct px_tls_sessions *s, const unsigned char *der, size_t len)
{
    struct tls_base *b = (struct tls_base *)s;
    const unsigned char *p = der;
    if (b == NULL || len > LONG_MAX)
        return -1;
    SSL_SESSION *sess = d2i_SSL_SESSION(NULL, &p, (long)len);
    if (sess == NULL) {
        ERR_clear_error();
        return -1;
    }
    int ok = SSL_CTX_add_session(b->ctx, sess);
    SSL_SESSION_free(sess); /* the cache holds its own reference */
    return ok == 1 ? 0 : -1;
}

struct px_tls *px_tls_build(const struct px_tls_conf *conf, const struct px_tls_sessions *sessions, char *err,
                            size_t errlen)
{
    struct tls_base *prev = (struct tls_base *)sessions;
    pthread_once(&idx_once, idx_init);
    if (ssl_tls_idx < 0 || ctx_base_idx < 0) {
        snprintf(err, errlen, "cannot register TLS ex_data");
        return NULL;
    }
    struct px_tls *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (parse_alpn(t, conf->alpn, err, errlen) < 0)
        goto fail;
    if (conf->certificate == NULL || conf->certificate_key == NULL) {
        snprintf(err, errlen, "[tls]: certificate and certificate_key are required");
        goto fail;
    }
    if (prev && base_fits(prev, conf)) {
        if (SSL_CTX_up_ref(prev->ctx) != 1) {
            snprintf(err, errlen, "SSL_CTX_up_ref failed");
            goto fail;
        }
        t->base = prev;
    } else if ((t->base = base_new(conf, err, errlen)) == NULL) {
        goto fail;
    }
    if ((t->dflt = ctx_new(conf, 0, t->base, err, errlen)) == NULL ||
        add_keypairs(t->dflt, conf, err, errlen) < 0)
        goto fail;
    for (int more = SSL_CTX_set_current_cert(t->dflt, SSL_CERT_SET_FIRST); more == 1;
         more = SSL_CTX_set_current_cert(t->dflt, SSL_CERT_SET_NEXT))
        if (cert_note(t, conf->certificate, cert_not_after(SSL_CTX_get0_certificate(t->dflt))) < 0)
            goto oom;
    if (conf->nsni) {
        t->names = calloc(conf->nsni, sizeof(*t->names));
        if (t->names == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    for (size_t i = 0; i < conf->nsni; i++) {
        const struct px_sni_conf *s = &conf->sni[i];
        struct tls_name *tn = NULL;
        for (size_t j = 0; j < t->nnames; j++)
            if (strcasecmp(t->names[j].name, s->name) == 0)
                tn = &t->names[j];
        if (tn == NULL) {
            tn = &t->names[t->nnames];
            if ((tn->name = strdup(s->name)) == NULL || (tn->ctx = ctx_new(conf, 0, t->base, err, errlen)) == NULL) {
                free(tn->name);
                tn->name = NULL;
                goto fail;
            }
            t->nnames++;
        }
        if (add_keypair(tn->ctx, s->cert, s->key, conf, s->line, s->line, "sni", "sni", err, errlen) < 0)
            goto fail;
        if (cert_note(t, s->cert, cert_not_after(SSL_CTX_get0_certificate(tn->ctx))) < 0)
            goto oom;
    }
    return t;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    px_tls_free(t);
    return NULL;
}

int px_tls_check_pair(const char *cert, const char *key, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return -1;
    }
    int rc = add_keypair(ctx, cert, key, NULL, 0, 0, "certificate", "certificate_key", err, errlen);
    SSL_CTX_free(ctx);
    return rc;
}

int px_tls_same_sessions(const struct px_tls *a, const struct px_tls *b)
{
    return a && b && a->base == b->base;
}

void px_tls_free(struct px_tls *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nnames; i++) {
        free(t->names[i].name);
        SSL_CTX_free(t->names[i].ctx);
    }
    free(t->names);
    for (size_t i = 0; i < t->ncerts; i++)
        free(t->certs[i].label);
    free(t->certs);
    SSL_CTX_free(t->dflt);
    if (t->base)
        SSL_CTX_free(t->base->ctx); /* the base goes with its last reference */
    free(t);
}

/* During the handshake OpenSSL writes every handshake message as its own
 * record and flushes the BIO at the end of each flight: a buffering BIO under
 * it sends the whole flight with one write(2) instead of four or five. After
 * the handshake px_tls_handshake_done() puts the socket back as the write BIO. */
SSL *px_tls_new(const struct px_tls *t, int fd)
{
    SSL *ssl = SSL_new(t->base->ctx);
    BIO *sock = BIO_new_socket(fd, BIO_NOCLOSE);
    BIO *buf = BIO_new(BIO_f_buffer());
    if (ssl == NULL || sock == NULL || buf == NULL || BIO_set_write_buffer_size(buf, 16384) != 1 ||
        BIO_up_ref(sock) != 1) {
        SSL_free(ssl);
        BIO_free(sock);
        BIO_free(buf);
        return NULL;
    }
    if (SSL_set_ex_data(ssl, ssl_tls_idx, (void *)t) != 1) {
        SSL_free(ssl);
        BIO_free(sock);
        BIO_free(buf);
        return NULL;
    }
    BIO_push(buf, sock);          /* buf -> sock; sock now has two references */
    SSL_set_bio(ssl, sock, buf);  /* read straight from the socket, write through buf */
    SSL_set_accept_state(ssl);
    return ssl;
}

static int unbuffer(SSL *ssl)
{
    BIO *wbio = SSL_get_wbio(ssl);
    BIO *sock = BIO_next(wbio);
    if (sock == NULL)
        return 0; /* already direct */
    if (BIO_wpending(wbio) > 0 && BIO_flush(wbio) <= 0)
        return BIO_should_retry(wbio) ? 1 : -1; /* keep buffering until it drains */
    BIO_up_ref(sock);
    SSL_set0_wbio(ssl, sock);     /* frees buf, which drops its reference to sock */
    return 0;
}

int px_tls_handshake_done(SSL *ssl)
{
    SSL_set_ex_data(ssl, ssl_tls_idx, NULL); /* its px_tls may go once the handshake is done */
    return unbuffer(ssl);
}

/* TLS 1.3: the server's only flight ends with its Finished; what follows
 * (a NewSessionTicket, or nothing) is one record. The flight's 16 KiB write
 * buffer and the buffering BIO's 4 KiB read buffer (20 KiB a connection) need
 * not wait through the client's round trip: in a burst of handshakes most
 * connections sit there, waiting for the client's Finished. TLS 1.2 sends a
 * second flight (ticket, ChangeCipherSpec, Finished) and keeps the buffer.
 * (OpenSSL's server state after writing its Finished is TLS_ST_EARLY_DATA,
 * whether or not early data is on.) */
void px_tls_handshake_waiting(SSL *ssl)
{
    if (SSL_version(ssl) == TLS1_3_VERSION && SSL_get_state(ssl) == TLS_ST_EARLY_DATA &&
        BIO_next(SSL_get_wbio(ssl)) != NULL && BIO_wpending(SSL_get_wbio(ssl)) == 0)
        unbuffer(ssl);
}

int px_tls_is_h2(SSL *ssl)
{
    const unsigned char *p;
    unsigned int n;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return n == 2 && p[0] == 'h' && p[1] == '2';
}
