/* fuzz_acme.c -- libFuzzer target for what the ACME client reads from a CA
 * and from disk, and for the JWS it signs. The first byte picks the path
 * (a letter for the seeds, any byte modulo the count), the rest is the
 * input:
 *
 *   d directory   a account   o order   z authorization   c challenge
 *   p problem document        m PEM chain, dates and the ARI certID
 *   r renewalInfo, RFC 3339 and Retry-After
 *   b base64url: decode and encode are inverses
 *   k a JWK as in private_key.json     j a JWS over the input, verified
 *
 * Any input must be handled: no crash, no leak, no UB; every string that
 * comes back is NUL-terminated and what must round-trip does.
 *
 *   ./fuzz_acme tests/fuzz/corpus/acme */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>

#include "../../proxy/acme/client_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char paths[] = "daozcpmrbkj";

static void check_error(const struct px_acme_error *e)
{
    if (memchr(e->type, '\0', sizeof(e->type)) == NULL || memchr(e->detail, '\0', sizeof(e->detail)) == NULL)
        abort();
}

static char *cstr(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s != NULL) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static void fuzz_b64(const char *p, size_t n)
{
    unsigned char *bin = malloc(n + 1);
    char *txt = malloc(PX_ACME_B64URL_LEN(n));
    size_t k = px_acme_b64url_decode(p, n, bin, n + 1);
    if (k != (size_t)-1) {
        /* canonical input: encoding the bytes gives it back */
        char *again = px_acme_b64url(bin, k);
        if (again == NULL || strlen(again) != n || memcmp(again, p, n) != 0)
            abort();
        free(again);
    }
    size_t m = px_acme_b64url_encode(p, n, txt, PX_ACME_B64URL_LEN(n));
    if (m == (size_t)-1 || m + 1 != PX_ACME_B64URL_LEN(n) || strlen(txt) != m)
        abort();
    if (px_acme_b64url_decode(txt, m, bin, n + 1) != n || memcmp(bin, p, n) != 0)
        abort();
    free(bin);
    free(txt);
}

static EVP_PKEY *fuzz_key(void)
{
    static EVP_PKEY *k;
    if (k == NULL)
        k = px_acme_key_new();
    return k;
}

/* The JWS over the input as payload (and as nonce and url, cut short):
 * the signature over protected.payload verifies with the key. */
static void fuzz_jws(const char *p, size_t n)
{
    EVP_PKEY *k = fuzz_key();
    char *payload = cstr(p, n), *nonce = cstr(p, n < 40 ? n : 40), *text;
    json_t *jws;
    if (payload == NULL || nonce == NULL || memchr(p, '\0', n) != NULL) {
        free(payload);
        free(nonce);
        return;
    }
    text = px_acme_jws(k, n % 2 ? "https://ca.example/acct/1" : NULL, nonce, "https://ca.example/new-order", payload);
    if (text == NULL) {
        /* jansson refuses strings that are not UTF-8 */
        free(payload);
        free(nonce);
        return;
    }
    if ((jws = json_loads(text, 0, NULL)) == NULL)
        abort();
    const char *prot = json_string_value(json_object_get(jws, "protected"));
    const char *pay = json_string_value(json_object_get(jws, "payload"));
    const char *sig = json_string_value(json_object_get(jws, "signature"));
    unsigned char raw[64], *dpay = malloc(strlen(pay) + 1), *der = NULL;
    if (prot == NULL || pay == NULL || sig == NULL || dpay == NULL)
        abort();
    if (px_acme_b64url_decode(pay, strlen(pay), dpay, strlen(pay) + 1) != n || memcmp(dpay, p, n) != 0)
        abort();
    if (px_acme_b64url_decode(sig, strlen(sig), raw, sizeof(raw)) != 64)
        abort();
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL));
    int dlen = i2d_ECDSA_SIG(es, &der);
    size_t slen = strlen(prot) + strlen(pay) + 2;
    char *signing = malloc(slen);
    snprintf(signing, slen, "%s.%s", prot, pay);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (dlen <= 0 || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) != 1 ||
        EVP_DigestVerify(md, der, (size_t)dlen, (const unsigned char *)signing, slen - 1) != 1)
        abort();
    EVP_MD_CTX_free(md);
    free(signing);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    free(dpay);
    json_decref(jws);
    free(text);
    free(payload);
    free(nonce);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    if (size == 0)
        return 0;
    const char *sel = memchr(paths, data[0], sizeof(paths) - 1);
    int path = sel ? (int)(sel - paths) : data[0] % (int)(sizeof(paths) - 1);
    const char *p = (const char *)data + 1;
    size_t n = size - 1;

    switch (path) {
    case 0: {
        struct px_acme_directory d;
        if (px_acme_directory_parse(p, n, &d, err, sizeof(err)) == 0 &&
            (d.new_nonce == NULL || d.new_account == NULL || d.new_order == NULL))
            abort();
        px_acme_directory_clear(&d);
        break;
    }
    case 1: {
        enum px_acme_status st;
        if (px_acme_account_parse(p, n, &st, err, sizeof(err)) == 0 && strcmp(px_acme_status_name(st), "unknown") == 0)
            abort();
        break;
    }
    case 2: {
        struct px_acme_order o;
        if (px_acme_order_parse(p, n, &o, err, sizeof(err)) == 0) {
            if (o.finalize == NULL || (o.status == PX_ACME_S_VALID && o.certificate == NULL))
                abort();
            for (size_t i = 0; i < o.nauthorizations; i++)
                if (o.authorizations[i] == NULL)
                    abort();
            if (o.has_error)
                check_error(&o.error);
        }
        px_acme_order_clear(&o);
        break;
    }
    case 3: {
        struct px_acme_authz a;
        if (px_acme_authz_parse(p, n, &a, err, sizeof(err)) == 0) {
            const struct px_acme_challenge *ch = px_acme_authz_challenge(&a, "http-01");
            if (a.identifier == NULL || (ch != NULL && ch->url == NULL))
                abort();
            if (ch != NULL && ch->token != NULL) {
                char *ka = px_acme_key_authorization(ch->token, "thumb");
                free(ka);
            }
        }
        px_acme_authz_clear(&a);
        break;
    }
    case 4: {
        struct px_acme_challenge ch;
        if (px_acme_challenge_parse(p, n, &ch, err, sizeof(err)) == 0 && ch.has_error)
            check_error(&ch.error);
        px_acme_challenge_clear(&ch);
        break;
    }
    case 5: {
        struct px_acme_error e;
        px_acme_problem_parse(p, n, &e);
        check_error(&e);
        break;
    }
    case 6: {
        struct px_acme_chain ch;
        if (px_acme_chain_parse(p, n, &ch, err, sizeof(err)) == 0) {
            struct px_acme_chain again;
            /* what we write reads back the same */
            if (px_acme_chain_parse(ch.fullchain_pem, strlen(ch.fullchain_pem), &again, err, sizeof(err)) != 0 ||
                again.ncerts != ch.ncerts || strcmp(again.fullchain_pem, ch.fullchain_pem) != 0 ||
                again.not_after != ch.not_after)
                abort();
            px_acme_chain_clear(&again);
            char *id = px_acme_ari_cert_id(ch.cert_pem, strlen(ch.cert_pem), err, sizeof(err));
            free(id);
            /* the check of the names and dates of what a CA issued */
            static const char *const names[] = {"example.com", "*.example.com", "a.b.example.com"};
            (void)px_acme_cert_check(ch.cert_pem, names, 1 + n % 3, 1700000000, err, sizeof(err));
        }
        px_acme_chain_clear(&ch);
        char *id = px_acme_ari_cert_id(p, n, err, sizeof(err));
        free(id);
        break;
    }
    case 7: {
        time_t s, e;
        if (px_acme_renewal_info_parse(p, n, &s, &e, err, sizeof(err)) == 0 && e < s)
            abort();
        char *z = cstr(p, n);
        if (z != NULL) {
            px_acme_rfc3339(z, &s);
            if (px_acme_retry_after(z, 1700000000) < -1)
                abort();
        }
        free(z);
        break;
    }
    case 8:
        fuzz_b64(p, n);
        break;
    case 9: {
        json_t *j = json_loadb(p, n, 0, NULL);
        EVP_PKEY *k = px_acme_jwk_key(j, err, sizeof(err));
        if (k != NULL) {
            /* a key we accept exports to the same members */
            json_t *back = px_acme_jwk(k, 1);
            if (back == NULL || !json_equal(json_object_get(back, "d"), json_object_get(j, "d")) ||
                !json_equal(json_object_get(back, "x"), json_object_get(j, "x")))
                abort();
            json_decref(back);
        }
        EVP_PKEY_free(k);
        json_decref(j);
        break;
    }
    case 10:
        fuzz_jws(p, n);
        break;
    }
    return 0;
}
