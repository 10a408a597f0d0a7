/* jws.c -- the ACME client's cryptography: base64url, the ES256 key as a
 * JWK and its RFC 7638 thumbprint, flattened JWS with raw r||s signatures,
 * and the CSR. OpenSSL 3 only (EVP and OSSL_PARAM, no EC_KEY). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "client_internal.h"

/* ---- base64url ---- */

static const char b64url_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t px_acme_b64url_encode(const void *in, size_t n, char *out, size_t outlen)
{
    const unsigned char *p = in;
    size_t o = 0, i = 0;
    if (outlen < PX_ACME_B64URL_LEN(n))
        return (size_t)-1;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_chars[v >> 18];
        out[o++] = b64url_chars[(v >> 12) & 63];
        out[o++] = b64url_chars[(v >> 6) & 63];
        out[o++] = b64url_chars[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url_chars[v >> 18];
        out[o++] = b64url_chars[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url_chars[v >> 18];
        out[o++] = b64url_chars[(v >> 12) & 63];
        out[o++] = b64url_chars[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

char *px_acme_b64url(const void *in, size_t n)
{
    char *out = malloc(PX_ACME_B64URL_LEN(n));
    if (out != NULL)
        px_acme_b64url_encode(in, n, out, PX_ACME_B64URL_LEN(n));
    return out;
}

static int b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

size_t px_acme_b64url_decode(const char *in, size_t n, unsigned char *out, size_t outlen)
{
    size_t rem = n % 4, o = 0;
    if (rem == 1 || outlen < n / 4 * 3 + (rem ? rem - 1 : 0))
        return (size_t)-1;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0)
            return (size_t)-1;
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return (size_t)-1; /* non-canonical: unused bits set */
    return o;
}

/* ---- keys ---- */

EVP_PKEY *px_acme_key_new(void)
{
    return EVP_EC_gen("P-256");
}

static int is_p256(EVP_PKEY *k)
{
    char group[32];
    size_t glen = 0;
    return k != NULL && EVP_PKEY_is_a(k, "EC") &&
           EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &glen) == 1 &&
           strcmp(group, "prime256v1") == 0;
}

/* x, y (and d when wanted) as 32-byte big-endian numbers. */
static int key_coords(EVP_PKEY *k, unsigned char x[32], unsigned char y[32], unsigned char *d)
{
    BIGNUM *bx = NULL, *by = NULL, *bd = NULL;
    int rc = -1;
    if (!is_p256(k) || EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &bx) != 1 ||
        EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, &by) != 1 || BN_bn2binpad(bx, x, 32) != 32 ||
        BN_bn2binpad(by, y, 32) != 32)
        goto out;
    if (d != NULL && (EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_PRIV_KEY, &bd) != 1 || BN_bn2binpad(bd, d, 32) != 32))
        goto out;
    rc = 0;
out:
    BN_free(bx);
    BN_free(by);
    BN_clear_free(bd);
    return rc;
}

json_t *px_acme_jwk(EVP_PKEY *k, int with_private)
{
    unsigned char x[32], y[32], d[32];
    char bx[44], by[44], bd[44];
    json_t *o;
    if (key_coords(k, x, y, with_private ? d : NULL) < 0)
        return NULL;
    px_acme_b64url_encode(x, 32, bx, sizeof(bx));
    px_acme_b64url_encode(y, 32, by, sizeof(by));
    o = json_pack("{s:s, s:s, s:s, s:s}", "crv", "P-256", "kty", "EC", "x", bx, "y", by);
    if (with_private) {
        px_acme_b64url_encode(d, 32, bd, sizeof(bd));
        if (o != NULL && json_object_set_new(o, "d", json_string(bd)) < 0) {
            json_decref(o);
            o = NULL;
        }
        OPENSSL_cleanse(d, sizeof(d));
        OPENSSL_cleanse(bd, sizeof(bd));
    }
    return o;
}

static int jwk_member(const json_t *jwk, const char *name, unsigned char out[32])
{
    const json_t *v = json_object_get(jwk, name);
    if (!json_is_string(v))
        return -1;
    return px_acme_b64url_decode(json_string_value(v), json_string_length(v), out, 32) == 32 ? 0 : -1;
}

EVP_PKEY *px_acme_jwk_key(const json_t *jwk, char *err, size_t errlen)
{
    unsigned char x[32], y[32], d[32], pub[65];
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL, *chk = NULL;
    EVP_PKEY *k = NULL;
    BIGNUM *bd = NULL;

    if (!json_is_object(jwk)) {
        snprintf(err, errlen, "not a JSON object");
        return NULL;
    }
    if (kty == NULL || strcmp(kty, "EC") != 0 || crv == NULL || strcmp(crv, "P-256") != 0) {
        snprintf(err, errlen, "not an EC P-256 key (kty %s)", kty ? kty : "missing");
        return NULL;
    }
    if (jwk_member(jwk, "x", x) < 0 || jwk_member(jwk, "y", y) < 0 || jwk_member(jwk, "d", d) < 0) {
        snprintf(err, errlen, "x, y and d must be 32 bytes in base64url");
        goto out;
    }
    pub[0] = 0x04; /* uncompressed point */
    memcpy(pub + 1, x, 32);
    memcpy(pub + 33, y, 32);
    if ((bd = BN_bin2bn(d, 32, NULL)) == NULL || (bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub)) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bd) || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_KEYPAIR, params) != 1) {
        snprintf(err, errlen, "not a valid P-256 key");
        goto out;
    }
    if ((chk = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL)) == NULL || EVP_PKEY_pairwise_check(chk) != 1) {
        snprintf(err, errlen, "the public key (x, y) does not match the private key (d)");
        EVP_PKEY_free(k);
        k = NULL;
    }
out:
    OPENSSL_cleanse(d, sizeof(d));
    BN_clear_free(bd);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_CTX_free(chk);
    return k;
}

int px_acme_thumbprint(EVP_PKEY *k, char out[44])
{
    unsigned char x[32], y[32], md[32];
    char bx[44], by[44], canon[160];
    if (key_coords(k, x, y, NULL) < 0)
        return -1;
    px_acme_b64url_encode(x, 32, bx, sizeof(bx));
    px_acme_b64url_encode(y, 32, by, sizeof(by));
    /* RFC 7638 section 3.2: the required members in lexical order, no
     * whitespace */
    int n = snprintf(canon, sizeof(canon), "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", bx, by);
    if (EVP_Digest(canon, (size_t)n, md, NULL, EVP_sha256(), NULL) != 1)
        return -1;
    px_acme_b64url_encode(md, sizeof(md), out, 44);
    return 0;
}

char *px_acme_key_authorization(const char *token, const char *thumbprint)
{
    size_t n = strlen(token) + strlen(thumbprint) + 2;
    char *s = malloc(n);
    if (s != NULL)
        snprintf(s, n, "%s.%s", token, thumbprint);
    return s;
}

int px_acme_es256_sign(EVP_PKEY *k, const void *data, size_t n, unsigned char sig[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[80];
    size_t derlen = sizeof(der);
    const unsigned char *p = der;
    ECDSA_SIG *es = NULL;
    int rc = -1;
    if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) != 1 ||
        EVP_DigestSign(md, der, &derlen, data, n) != 1)
        goto out;
    /* OpenSSL signs DER (SEQUENCE {r, s}); JWS wants r and s as fixed
     * 32-byte big-endian numbers, concatenated. */
    if ((es = d2i_ECDSA_SIG(NULL, &p, (long)derlen)) == NULL || BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) != 32 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) != 32)
        goto out;
    rc = 0;
out:
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    return rc;
}

char *px_acme_jws(EVP_PKEY *k, const char *kid, const char *nonce, const char *url, const char *payload)
{
    json_t *prot = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "nonce", nonce, "url", url), *out = NULL;
    char *prot_text = NULL, *prot_b64 = NULL, *pay_b64 = NULL, *signing = NULL, *res = NULL;
    unsigned char sig[64];
    char sig_b64[PX_ACME_B64URL_LEN(64)];

    if (prot == NULL)
        goto out;
    if (kid != NULL ? json_object_set_new(prot, "kid", json_string(kid)) < 0
                    : json_object_set_new(prot, "jwk", px_acme_jwk(k, 0)) < 0)
        goto out;
    if ((prot_text = json_dumps(prot, JSON_COMPACT)) == NULL ||
        (prot_b64 = px_acme_b64url(prot_text, strlen(prot_text))) == NULL ||
        (pay_b64 = px_acme_b64url(payload, strlen(payload))) == NULL)
        goto out;
    size_t n = strlen(prot_b64) + strlen(pay_b64) + 2;
    if ((signing = malloc(n)) == NULL)
        goto out;
    snprintf(signing, n, "%s.%s", prot_b64, pay_b64);
    if (px_acme_es256_sign(k, signing, n - 1, sig) < 0)
        goto out;
    px_acme_b64url_encode(sig, sizeof(sig), sig_b64, sizeof(sig_b64));
    out = json_pack("{s:s, s:s, s:s}", "protected", prot_b64, "payload", pay_b64, "signature", sig_b64);
    if (out != NULL)
        res = json_dumps(out, JSON_COMPACT);
out:
    json_decref(prot);
    json_decref(out);
    free(prot_text);
    free(prot_b64);
    free(pay_b64);
    free(signing);
    return res;
}

/* ---- CSR ---- */

static int add_san(X509_REQ *req, const char *const *names, size_t n)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    STACK_OF(X509_EXTENSION) *exts = NULL;
    X509_EXTENSION *ext = NULL;
    int rc = -1;
    if (gens == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        if (g == NULL || s == NULL || !ASN1_STRING_set(s, names[i], (int)strlen(names[i]))) {
            GENERAL_NAME_free(g);
            ASN1_IA5STRING_free(s);
            goto out;
        }
        GENERAL_NAME_set0_value(g, GEN_DNS, s);
        if (!sk_GENERAL_NAME_push(gens, g)) {
            GENERAL_NAME_free(g);
            goto out;
        }
    }
    if ((ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens)) == NULL ||
        (exts = sk_X509_EXTENSION_new_null()) == NULL || !sk_X509_EXTENSION_push(exts, ext))
        goto out;
    ext = NULL; /* owned by exts */
    if (X509_REQ_add_extensions(req, exts) != 1)
        goto out;
    rc = 0;
out:
    X509_EXTENSION_free(ext);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    GENERAL_NAMES_free(gens);
    return rc;
}

unsigned char *px_acme_csr_der(EVP_PKEY *k, const char *const *names, size_t n, size_t *len)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *subj = X509_NAME_new();
    unsigned char *der = NULL;
    int dlen;
    if (req == NULL || subj == NULL || n == 0 || X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1)
        goto out;
    /* a CN longer than 64 bytes is invalid (RFC 5280 ub-common-name); the
     * SAN alone names the certificate then, which CAs accept */
    if (strlen(names[0]) <= 64 &&
        X509_NAME_add_entry_by_NID(subj, NID_commonName, MBSTRING_ASC, (const unsigned char *)names[0], -1, -1, 0) != 1)
        goto out;
    if (X509_REQ_set_subject_name(req, subj) != 1 || X509_REQ_set_pubkey(req, k) != 1 || add_san(req, names, n) < 0 ||
        X509_REQ_sign(req, k, EVP_sha256()) <= 0)
        goto out;
    if ((dlen = i2d_X509_REQ(req, &der)) <= 0) {
        der = NULL;
        goto out;
    }
    *len = (size_t)dlen;
out:
    X509_NAME_free(subj);
    X509_REQ_free(req);
    return der;
}

char *px_acme_key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *text = NULL, *p;
    long n;
    if (b != NULL && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1 &&
        (n = BIO_get_mem_data(b, &p)) > 0 && (text = malloc((size_t)n + 1)) != NULL) {
        memcpy(text, p, (size_t)n);
        text[n] = '\0';
    }
    BIO_free(b);
    return text;
}

int px_acme_key_id(EVP_PKEY *k, char out[33])
{
    unsigned char *der = NULL, md[16];
    int n = i2d_PUBKEY(k, &der), rc = -1;
    if (n > 0 && EVP_Digest(der, (size_t)n, md, NULL, EVP_md5(), NULL) == 1) {
        for (int i = 0; i < 16; i++)
            snprintf(out + 2 * i, 3, "%02x", md[i]);
        rc = 0;
    }
    OPENSSL_free(der);
    return rc;
}
