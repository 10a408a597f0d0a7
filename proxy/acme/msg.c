/* msg.c -- what an ACME server sends, read into plain structs: the
 * directory, account, order, authorization and challenge objects
 * (RFC 8555 section 7.1), problem documents (RFC 7807, section 6.7), the
 * PEM chain, renewalInfo and the ARI certID (RFC 9773). Pure functions:
 * no I/O, no logging, so the fuzzer can call them. Unknown members are
 * ignored, as RFC 8555 asks. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "client_internal.h"

#define ERROR_PREFIX "urn:ietf:params:acme:error:"

static const char *const status_names[] = {
    [PX_ACME_S_UNKNOWN] = "unknown",         [PX_ACME_S_PENDING] = "pending", [PX_ACME_S_READY] = "ready",
    [PX_ACME_S_PROCESSING] = "processing",   [PX_ACME_S_VALID] = "valid",     [PX_ACME_S_INVALID] = "invalid",
    [PX_ACME_S_DEACTIVATED] = "deactivated", [PX_ACME_S_EXPIRED] = "expired", [PX_ACME_S_REVOKED] = "revoked",
};

const char *px_acme_status_name(enum px_acme_status s)
{
    return (size_t)s < sizeof(status_names) / sizeof(status_names[0]) ? status_names[s] : "unknown";
}

static enum px_acme_status status_of(const json_t *v)
{
    const char *s = json_string_value(v);
    for (size_t i = 1; s != NULL && i < sizeof(status_names) / sizeof(status_names[0]); i++)
        if (strcmp(s, status_names[i]) == 0)
            return (enum px_acme_status)i;
    return PX_ACME_S_UNKNOWN;
}

void px_acme_error_set(struct px_acme_error *e, const char *type, const char *fmt, ...)
{
    va_list ap;
    snprintf(e->type, sizeof(e->type), "%s", type);
    va_start(ap, fmt);
    vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
    va_end(ap);
}

/* A JSON object from bytes (not NUL-terminated), or NULL with err set. */
static json_t *load_object(const char *body, size_t len, const char *what, char *err, size_t errlen)
{
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (o == NULL) {
        snprintf(err, errlen, "%s: not JSON (%s)", what, je.text);
        return NULL;
    }
    if (!json_is_object(o)) {
        snprintf(err, errlen, "%s: not a JSON object", what);
        json_decref(o);
        return NULL;
    }
    return o;
}

static int is_url(const char *s)
{
    if (s == NULL)
        return 0;
    const char *host = strncmp(s, "https://", 8) == 0 ? s + 8 : strncmp(s, "http://", 7) == 0 ? s + 7 : NULL;
    if (host == NULL || *host == '\0' || *host == '/')
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return 0; /* no spaces or controls: it goes into a request line */
    return 1;
}

/* A URL member: 0 and *out set (NULL when absent and optional), or -1. */
static int url_member(const json_t *o, const char *name, int required, char **out, const char *what, char *err,
                      size_t errlen)
{
    const json_t *v = json_object_get(o, name);
    *out = NULL;
    if (v == NULL && !required)
        return 0;
    if (!json_is_string(v) || !is_url(json_string_value(v)) || strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(err, errlen, "%s: %s is %s", what, name, v == NULL ? "missing" : "not a URL");
        return -1;
    }
    if ((*out = strdup(json_string_value(v))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- directory ---- */

void px_acme_directory_clear(struct px_acme_directory *d)
{
    free(d->new_nonce);
    free(d->new_account);
    free(d->new_order);
    free(d->revoke_cert);
    free(d->key_change);
    free(d->renewal_info);
    free(d->terms_of_service);
    memset(d, 0, sizeof(*d));
}

int px_acme_directory_parse(const char *body, size_t len, struct px_acme_directory *out, char *err, size_t errlen)
{
    json_t *o = load_object(body, len, "directory", err, errlen);
    memset(out, 0, sizeof(*out));
    if (o == NULL)
        return -1;
    const char *w = "directory";
    if (url_member(o, "newNonce", 1, &out->new_nonce, w, err, errlen) < 0 ||
        url_member(o, "newAccount", 1, &out->new_account, w, err, errlen) < 0 ||
        url_member(o, "newOrder", 1, &out->new_order, w, err, errlen) < 0 ||
        url_member(o, "revokeCert", 0, &out->revoke_cert, w, err, errlen) < 0 ||
        url_member(o, "keyChange", 0, &out->key_change, w, err, errlen) < 0 ||
        url_member(o, "renewalInfo", 0, &out->renewal_info, w, err, errlen) < 0)
        goto fail;
    json_t *meta = json_object_get(o, "meta");
    if (json_is_object(meta)) {
        const char *tos = json_string_value(json_object_get(meta, "termsOfService"));
        if (tos != NULL && (out->terms_of_service = strdup(tos)) == NULL)
            goto fail;
        out->eab_required = json_is_true(json_object_get(meta, "externalAccountRequired"));
    }
    json_decref(o);
    return 0;
fail:
    json_decref(o);
    px_acme_directory_clear(out);
    return -1;
}

/* ---- problems ---- */

int px_acme_problem_from_json(const json_t *o, struct px_acme_error *out)
{
    const char *type = json_string_value(json_object_get(o, "type"));
    const char *detail = json_string_value(json_object_get(o, "detail"));
    memset(out, 0, sizeof(*out));
    if (!json_is_object(o) || type == NULL) {
        px_acme_error_set(out, "bad_response", "not a problem document");
        return -1;
    }
    if (strncmp(type, ERROR_PREFIX, strlen(ERROR_PREFIX)) == 0 && type[strlen(ERROR_PREFIX)] != '\0')
        type += strlen(ERROR_PREFIX);
    snprintf(out->type, sizeof(out->type), "%s", type);
    snprintf(out->detail, sizeof(out->detail), "%s", detail ? detail : "");
    /* RFC 8555 section 6.7.1: per-identifier subproblems carry the useful
     * part ("example.com: DNS problem ...") */
    const json_t *subs = json_object_get(o, "subproblems");
    size_t i;
    const json_t *sp;
    json_array_foreach(subs, i, sp)
    {
        const char *st = json_string_value(json_object_get(sp, "type"));
        const char *sd = json_string_value(json_object_get(sp, "detail"));
        const char *id = json_string_value(json_object_get(json_object_get(sp, "identifier"), "value"));
        size_t used = strlen(out->detail);
        if (st && strncmp(st, ERROR_PREFIX, strlen(ERROR_PREFIX)) == 0)
            st += strlen(ERROR_PREFIX);
        snprintf(out->detail + used, sizeof(out->detail) - used, "%s%s%s%s (%s)", used ? "; " : "", id ? id : "",
                 id ? ": " : "", sd ? sd : "", st ? st : "?");
    }
    return 0;
}

int px_acme_problem_parse(const char *body, size_t len, struct px_acme_error *out)
{
    char err[128];
    json_t *o = load_object(body, len, "problem", err, sizeof(err));
    if (o == NULL) {
        memset(out, 0, sizeof(*out));
        px_acme_error_set(out, "bad_response", "%s", err);
        return -1;
    }
    int rc = px_acme_problem_from_json(o, out);
    json_decref(o);
    return rc;
}

/* ---- challenge, authorization, order ---- */

void px_acme_challenge_clear(struct px_acme_challenge *ch)
{
    free(ch->type);
    free(ch->url);
    free(ch->token);
    memset(ch, 0, sizeof(*ch));
}

/* RFC 8555 section 8.3: the token is base64url, at least 128 bits. We
 * also bound it: it becomes a URL path and a table key. */
static int token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n < 22 || n > 256)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)t[i]) || t[i] == '-' || t[i] == '_'))
            return 0;
    return 1;
}

static int challenge_from(const json_t *o, struct px_acme_challenge *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const char *type = json_string_value(json_object_get(o, "type"));
    if (!json_is_object(o) || type == NULL) {
        snprintf(err, errlen, "challenge: no type");
        return -1;
    }
    if ((out->type = strdup(type)) == NULL)
        goto oom;
    if (url_member(o, "url", 1, &out->url, "challenge", err, errlen) < 0)
        goto fail;
    out->status = status_of(json_object_get(o, "status"));
    const char *token = json_string_value(json_object_get(o, "token"));
    if (token != NULL) {
        /* only the token-based types need one; a bad token on another
         * type is the CA's business */
        if (!token_ok(token)) {
            if (strcmp(type, "http-01") == 0) {
                snprintf(err, errlen, "challenge: bad token");
                goto fail;
            }
        } else if ((out->token = strdup(token)) == NULL)
            goto oom;
    }
    const json_t *e = json_object_get(o, "error");
    if (e != NULL) {
        px_acme_problem_from_json(e, &out->error);
        out->has_error = 1;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    px_acme_challenge_clear(out);
    return -1;
}

int px_acme_challenge_parse(const char *body, size_t len, struct px_acme_challenge *out, char *err, size_t errlen)
{
    json_t *o = load_object(body, len, "challenge", err, errlen);
    if (o == NULL) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    int rc = challenge_from(o, out, err, errlen);
    json_decref(o);
    return rc;
}

void px_acme_authz_clear(struct px_acme_authz *a)
{
    free(a->identifier);
    for (size_t i = 0; i < a->nchallenges; i++)
        px_acme_challenge_clear(&a->challenges[i]);
    free(a->challenges);
    memset(a, 0, sizeof(*a));
}

int px_acme_authz_parse(const char *body, size_t len, struct px_acme_authz *out, char *err, size_t errlen)
{
    json_t *o = load_object(body, len, "authorization", err, errlen);
    memset(out, 0, sizeof(*out));
    if (o == NULL)
        return -1;
    const json_t *id = json_object_get(o, "identifier"), *chs = json_object_get(o, "challenges");
    const char *value = json_string_value(json_object_get(id, "value"));
    out->status = status_of(json_object_get(o, "status"));
    if (out->status == PX_ACME_S_UNKNOWN) {
        snprintf(err, errlen, "authorization: no status");
        goto fail;
    }
    if (value == NULL || strlen(value) != json_string_length(json_object_get(id, "value"))) {
        snprintf(err, errlen, "authorization: no identifier");
        goto fail;
    }
    if ((out->identifier = strdup(value)) == NULL)
        goto oom;
    out->wildcard = json_is_true(json_object_get(o, "wildcard"));
    if (!json_is_array(chs)) {
        snprintf(err, errlen, "authorization: no challenges");
        goto fail;
    }
    size_t n = json_array_size(chs);
    if (n > 64) {
        snprintf(err, errlen, "authorization: %zu challenges", n);
        goto fail;
    }
    if ((out->challenges = calloc(n ? n : 1, sizeof(*out->challenges))) == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        if (challenge_from(json_array_get(chs, i), &out->challenges[i], err, errlen) < 0)
            goto fail;
        out->nchallenges++;
    }
    json_decref(o);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    json_decref(o);
    px_acme_authz_clear(out);
    return -1;
}

const struct px_acme_challenge *px_acme_authz_challenge(const struct px_acme_authz *a, const char *type)
{
    for (size_t i = 0; i < a->nchallenges; i++)
        if (strcmp(a->challenges[i].type, type) == 0)
            return &a->challenges[i];
    return NULL;
}

void px_acme_order_clear(struct px_acme_order *o)
{
    for (size_t i = 0; i < o->nauthorizations; i++)
        free(o->authorizations[i]);
    free(o->authorizations);
    free(o->finalize);
    free(o->certificate);
    memset(o, 0, sizeof(*o));
}

int px_acme_order_parse(const char *body, size_t len, struct px_acme_order *out, char *err, size_t errlen)
{
    json_t *o = load_object(body, len, "order", err, errlen);
    memset(out, 0, sizeof(*out));
    if (o == NULL)
        return -1;
    const json_t *az = json_object_get(o, "authorizations");
    out->status = status_of(json_object_get(o, "status"));
    if (out->status == PX_ACME_S_UNKNOWN) {
        snprintf(err, errlen, "order: no status");
        goto fail;
    }
    if (!json_is_array(az) || json_array_size(az) > 1000) {
        snprintf(err, errlen, "order: authorizations is not a list");
        goto fail;
    }
    size_t n = json_array_size(az);
    if ((out->authorizations = calloc(n ? n : 1, sizeof(char *))) == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const char *u = json_string_value(json_array_get(az, i));
        if (!is_url(u) || strlen(u) != json_string_length(json_array_get(az, i))) {
            snprintf(err, errlen, "order: authorization %zu is not a URL", i);
            goto fail;
        }
        if ((out->authorizations[i] = strdup(u)) == NULL)
            goto oom;
        out->nauthorizations++;
    }
    if (url_member(o, "finalize", 1, &out->finalize, "order", err, errlen) < 0 ||
        url_member(o, "certificate", out->status == PX_ACME_S_VALID, &out->certificate, "order", err, errlen) < 0)
        goto fail;
    const json_t *e = json_object_get(o, "error");
    if (e != NULL) {
        px_acme_problem_from_json(e, &out->error);
        out->has_error = 1;
    }
    json_decref(o);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    json_decref(o);
    px_acme_order_clear(out);
    return -1;
}

int px_acme_account_parse(const char *body, size_t len, enum px_acme_status *status, char *err, size_t errlen)
{
    json_t *o = load_object(body, len, "account", err, errlen);
    *status = PX_ACME_S_UNKNOWN;
    if (o == NULL)
        return -1;
    *status = status_of(json_object_get(o, "status"));
    json_decref(o);
    if (*status == PX_ACME_S_UNKNOWN) {
        snprintf(err, errlen, "account: no status");
        return -1;
    }
    return 0;
}

/* ---- certificates ---- */

void px_acme_chain_clear(struct px_acme_chain *ch)
{
    free(ch->cert_pem);
    free(ch->chain_pem);
    free(ch->fullchain_pem);
    memset(ch, 0, sizeof(*ch));
}

static char *bio_text(BIO *b)
{
    char *p, *s;
    long n = BIO_get_mem_data(b, &p);
    if (n < 0 || (s = malloc((size_t)n + 1)) == NULL)
        return NULL;
    if (n > 0)
        memcpy(s, p, (size_t)n); /* an empty BIO has no data pointer */
    s[n] = '\0';
    return s;
}

static int asn1_time(const ASN1_TIME *t, time_t *out)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return -1;
    *out = timegm(&tm);
    return 0;
}

int px_acme_chain_parse(const char *pem, size_t len, struct px_acme_chain *out, char *err, size_t errlen)
{
    BIO *in = BIO_new_mem_buf(pem, len > (size_t)INT32_MAX ? -1 : (int)len);
    BIO *leaf = BIO_new(BIO_s_mem()), *rest = BIO_new(BIO_s_mem()), *full = BIO_new(BIO_s_mem());
    X509 *x;
    int rc = -1;
    memset(out, 0, sizeof(*out));
    if (len > (size_t)INT32_MAX || in == NULL || leaf == NULL || rest == NULL || full == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* Each block is parsed and written back: what the store saves is then
     * PEM OpenSSL wrote (no CRLF, no stray text between the blocks). */
    while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
        if (out->ncerts == 0 && (asn1_time(X509_get0_notBefore(x), &out->not_before) < 0 ||
                                 asn1_time(X509_get0_notAfter(x), &out->not_after) < 0)) {
            snprintf(err, errlen, "certificate: unreadable validity dates");
            X509_free(x);
            goto out;
        }
        int ok = PEM_write_bio_X509(out->ncerts == 0 ? leaf : rest, x) == 1 && PEM_write_bio_X509(full, x) == 1;
        X509_free(x);
        if (!ok) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        if (++out->ncerts > 16) {
            snprintf(err, errlen, "certificate chain: more than 16 certificates");
            goto out;
        }
    }
    /* the loop ends on EOF (no more PEM) or a broken block: only the
     * former is a good chain */
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (ERR_GET_REASON(e) != PEM_R_NO_START_LINE || out->ncerts == 0) {
        snprintf(err, errlen,
                 out->ncerts == 0 ? "certificate chain: no certificate" : "certificate chain: a broken block");
        goto out;
    }
    if ((out->cert_pem = bio_text(leaf)) == NULL || (out->chain_pem = bio_text(rest)) == NULL ||
        (out->fullchain_pem = bio_text(full)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rc = 0;
out:
    if (rc < 0)
        px_acme_chain_clear(out);
    BIO_free(in);
    BIO_free(leaf);
    BIO_free(rest);
    BIO_free(full);
    return rc;
}

/* ---- the certificate against the order ---- */

/* An exact (case-insensitive) DNS SAN: how a wildcard identifier is
 * covered (X509_check_host takes a host name, not a pattern). */
static int san_equal(X509 *x, const char *name)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        found = len >= 0 && (size_t)len == strlen(name) && strncasecmp((const char *)d, name, (size_t)len) == 0;
    }
    GENERAL_NAMES_free(gens);
    return found;
}

int px_acme_cert_check(const char *cert_pem, const char *const *names, size_t n, time_t now, char *err,
                       size_t errlen)
{
    BIO *b = BIO_new_mem_buf(cert_pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    time_t nb, na;
    char missing[200] = "";
    size_t nmissing = 0, used = 0;
    int rc = -1;
    if (x == NULL) {
        snprintf(err, errlen, "no certificate");
        goto out;
    }
    if (asn1_time(X509_get0_notBefore(x), &nb) < 0 || asn1_time(X509_get0_notAfter(x), &na) < 0) {
        snprintf(err, errlen, "unreadable validity dates");
        goto out;
    }
    if (nb > now + PX_ACME_CLOCK_SKEW_S) {
        snprintf(err, errlen, "not valid yet: notBefore is %lld s ahead of this clock", (long long)(nb - now));
        goto out;
    }
    if (na <= now) {
        snprintf(err, errlen, "expired: notAfter was %lld s ago", (long long)(now - na));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        /* a browser's rules: SANs only (never the CN), "*" a whole
         * left-most label */
        if (san_equal(x, names[i]) ||
            (names[i][0] != '*' &&
             X509_check_host(x, names[i], 0,
                             X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                             NULL) == 1))
            continue;
        if (nmissing++ < 3 && used < sizeof(missing)) {
            int w = snprintf(missing + used, sizeof(missing) - used, "%s%s", used ? ", " : "", names[i]);
            used += w > 0 ? (size_t)w : 0;
        }
    }
    if (nmissing > 0) {
        snprintf(err, errlen, "it does not cover %s%s (%zu of the %zu names ordered)", missing,
                 nmissing > 3 ? ", ..." : "", nmissing, n);
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error();
    X509_free(x);
    BIO_free(b);
    return rc;
}

/* ---- RFC 9773 renewalInfo ---- */

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int px_acme_rfc3339(const char *s, time_t *out)
{
    struct tm tm;
    int y, mo, d, h, mi, sec;
    memset(&tm, 0, sizeof(tm));
    if (strlen(s) < 20 || digits(s, 4, &y) < 0 || s[4] != '-' || digits(s + 5, 2, &mo) < 0 || s[7] != '-' ||
        digits(s + 8, 2, &d) < 0 || (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &h) < 0 || s[13] != ':' ||
        digits(s + 14, 2, &mi) < 0 || s[16] != ':' || digits(s + 17, 2, &sec) < 0)
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (digits(p + 1, 2, &oh) < 0 || p[3] != ':' || digits(p + 4, 2, &om) < 0 || oh > 23 || om > 59)
            return -1;
        off = (oh * 3600L + om * 60L) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = timegm(&tm) - off;
    return 0;
}

int px_acme_renewal_info_parse(const char *body, size_t len, time_t *start, time_t *end, char *err, size_t errlen)
{
    json_t *o = load_object(body, len, "renewalInfo", err, errlen);
    if (o == NULL)
        return -1;
    const json_t *w = json_object_get(o, "suggestedWindow");
    const char *s = json_string_value(json_object_get(w, "start")), *e = json_string_value(json_object_get(w, "end"));
    int rc = -1;
    if (s == NULL || e == NULL || px_acme_rfc3339(s, start) < 0 || px_acme_rfc3339(e, end) < 0)
        snprintf(err, errlen, "renewalInfo: no suggestedWindow with RFC 3339 start and end");
    else if (*end < *start)
        snprintf(err, errlen, "renewalInfo: the window ends before it starts");
    else
        rc = 0;
    json_decref(o);
    return rc;
}

char *px_acme_ari_cert_id(const char *pem, size_t len, char *err, size_t errlen)
{
    BIO *in = BIO_new_mem_buf(pem, len > (size_t)INT32_MAX ? -1 : (int)len);
    X509 *x = in ? PEM_read_bio_X509(in, NULL, NULL, NULL) : NULL;
    unsigned char *der = NULL;
    char *id = NULL, *a = NULL, *b = NULL;
    const ASN1_OCTET_STRING *kid;
    int n;
    ERR_clear_error();
    if (x == NULL) {
        snprintf(err, errlen, "not a PEM certificate");
        goto out;
    }
    if ((kid = X509_get0_authority_key_id(x)) == NULL || ASN1_STRING_length(kid) <= 0) {
        snprintf(err, errlen, "the certificate has no authority key identifier");
        goto out;
    }
    /* the serial's DER encoding without tag and length: the content
     * octets, leading zero included when the high bit is set */
    if ((n = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &der)) < 3 || der[0] != 0x02 || (der[1] & 0x80)) {
        snprintf(err, errlen, "unreadable serial number");
        goto out;
    }
    if ((a = px_acme_b64url(ASN1_STRING_get0_data(kid), (size_t)ASN1_STRING_length(kid))) == NULL ||
        (b = px_acme_b64url(der + 2, (size_t)n - 2)) == NULL || (id = malloc(strlen(a) + strlen(b) + 2)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    sprintf(id, "%s.%s", a, b);
out:
    OPENSSL_free(der);
    free(a);
    free(b);
    X509_free(x);
    BIO_free(in);
    return id;
}

/* An HTTP-date (RFC 9110 section 5.6.7): IMF-fixdate "Sun, 06 Nov 1994
 * 08:49:37 GMT", and the obsolete RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT"
 * and asctime "Sun Nov  6 08:49:37 1994" forms a recipient must accept.
 * Not strptime: its month names follow the locale. 0 or -1. */
static int http_date(const char *s, time_t *out)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    char mon[4], tail[8] = "";
    int d, y, h, mi, sec, n = 0, m;
    struct tm tm;
    const char *p = strchr(s, ' ');
    if (p == NULL)
        return -1;
    if (p[-1] == ',' && sscanf(p, " %2d %3s %4d %2d:%2d:%2d %3s%n", &d, mon, &y, &h, &mi, &sec, tail, &n) == 7) {
        /* IMF-fixdate */
    } else if (p[-1] == ',' && sscanf(p, " %2d-%3s-%2d %2d:%2d:%2d %3s%n", &d, mon, &y, &h, &mi, &sec, tail, &n) == 7) {
        y += y < 70 ? 2000 : 1900; /* RFC 9110: a year more than 50 years ahead is in the past */
    } else if (p[-1] != ',' && sscanf(p, " %3s %2d %2d:%2d:%2d %4d%n", mon, &d, &h, &mi, &sec, &y, &n) == 6) {
        strcpy(tail, "GMT");
    } else {
        return -1;
    }
    mon[3] = '\0';
    if (strchr(mon, '-') != NULL) /* "%3s" in the RFC 850 form stops at a space only */
        return -1;
    while (p[n] == ' ' || p[n] == '\t' || p[n] == '\r' || p[n] == '\n')
        n++;
    const char *found = strlen(mon) == 3 ? strstr(months, mon) : NULL;
    if (p[n] != '\0' || strcmp(tail, "GMT") != 0 || found == NULL || (m = (int)(found - months)) % 3 != 0 || d < 1 ||
        d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = m / 3;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = timegm(&tm);
    return 0;
}

long px_acme_retry_after(const char *value, time_t now)
{
    if (value == NULL)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (isdigit((unsigned char)*value)) {
        char *end;
        unsigned long long v = strtoull(value, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
            end++;
        if (*end != '\0')
            return -1;
        return v > 86400 * 365 ? 86400L * 365 : (long)v;
    }
    time_t t;
    if (http_date(value, &t) < 0)
        return -1;
    return t > now ? (long)(t - now) : 0;
}
