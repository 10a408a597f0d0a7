/* Unit tests: the ACME client without a CA -- base64url vectors; the JWK,
 * its RFC 7638 thumbprint and certbot's account ID for a fixed key, checked
 * against values computed outside this code; JWS signatures that OpenSSL
 * verifies; the CSR read back; the parsers of the CA's objects on pebble's
 * real answers and on bad ones; the PEM chain; renewalInfo and the ARI
 * certID (RFC 9773's example); certbot's accounts/ files; and the event
 * loop side: callbacks never run inside the call, once, not after cancel;
 * an unreachable CA is "network", a silent one "timeout". */
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "../../proxy/acme/client_internal.h"
#include "px/common.h"
#include "unit.h"

/* CHECK_STR on px_acme_error's arrays: a failure message may be cut */
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

/* A fixed P-256 key. d is arbitrary; x and y were derived from it by the
 * openssl command line, not by this code:
 *   d.der = 30 31 02 01 01 04 20 || d || a0 0a 06 08 2a 86 48 ce 3d 03 01 07
 *   openssl ec -inform DER -in d.der -pubout -outform DER > pub.der
 *   x, y = the last 64 bytes of pub.der, base64url */
static const char *const KEY_X = "CFg7FbQDvWRS7EnHPtpi85Uki5y94DwHRoi2Cg57OMI";
static const char *const KEY_Y = "83kIG4RMx3wLgtGx8rDCGWK_WNTuhxsc6tFs-vtVvnk";
static const char *const KEY_D = "jpsQnnGQmL-YBIffH1136cLNvtRgHsqzDoUPwfw1xhI";

static EVP_PKEY *fixed_key(void)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", KEY_X, "y", KEY_Y, "d", KEY_D);
    char err[128];
    EVP_PKEY *k = px_acme_jwk_key(j, err, sizeof(err));
    json_decref(j);
    return k;
}

static char tmpdir[64];

static void rm_rf(const char *path)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "rm -rf %s failed\n", path);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* ---- base64url ---- */

static char *enc(const char *s)
{
    return px_acme_b64url(s, strlen(s));
}

static void test_b64url_vectors(void)
{
    /* RFC 4648 section 10, without the padding */
    static const char *const v[][2] = {{"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
                                       {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < PX_ARRAY_LEN(v); i++) {
        char *e = enc(v[i][0]);
        unsigned char out[16];
        CHECK_STR(e, v[i][1]);
        CHECK_INT(px_acme_b64url_decode(v[i][1], strlen(v[i][1]), out, sizeof(out)), strlen(v[i][0]));
        CHECK(memcmp(out, v[i][0], strlen(v[i][0])) == 0);
        CHECK_INT(PX_ACME_B64URL_LEN(strlen(v[i][0])), strlen(v[i][1]) + 1);
        free(e);
    }
    /* the url-safe alphabet: 0xfb 0xff is "+/8" in base64 */
    unsigned char b[] = {0xfb, 0xff}, out[8];
    char *e = px_acme_b64url(b, 2);
    CHECK_STR(e, "-_8");
    free(e);
    CHECK_INT(px_acme_b64url_decode("-_8", 3, out, sizeof(out)), 2);
    CHECK(out[0] == 0xfb && out[1] == 0xff);
    /* RFC 7515 appendix A.1's protected header */
    e = enc("{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}");
    CHECK_STR(e, "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9");
    free(e);
    CHECK_INT(PX_ACME_B64URL_LEN(32), 44);
    CHECK_INT(PX_ACME_B64URL_LEN(64), 87);
}

static void test_b64url_rejects(void)
{
    unsigned char out[16];
    char small[4];
    const char *bad[] = {"Zg==", "Z", "Zh", "Zm9", "a+bc", "a/bc", "ab c", "Zm9v\n"};
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++)
        CHECK_INT(px_acme_b64url_decode(bad[i], strlen(bad[i]), out, sizeof(out)), -1);
    /* "Zm9" has unused bits set; "Zm8" is canonical */
    CHECK_INT(px_acme_b64url_decode("Zm8", 3, out, sizeof(out)), 2);
    CHECK_INT(px_acme_b64url_decode("Zm9vYmFy", 8, out, 5), -1); /* too small an output */
    CHECK_INT(px_acme_b64url_encode("foo", 3, small, sizeof(small)), -1);
}

/* ---- keys, thumbprint, JWS, CSR ---- */

/* Computed outside this code (RFC 7638 section 3's method):
 *   printf '%s' '{"crv":"P-256","kty":"EC","x":"CFg7FbQDvWRS7EnHPtpi85Uki5y94DwHRoi2Cg57OMI",'\
 *               '"y":"83kIG4RMx3wLgtGx8rDCGWK_WNTuhxsc6tFs-vtVvnk"}' \
 *     | openssl dgst -sha256 -binary | basenc --base64url | tr -d =
 * (Python agrees: base64.urlsafe_b64encode(hashlib.sha256(json.dumps(jwk,
 * sort_keys=True, separators=(',', ':')).encode()).digest()).rstrip(b'=')).
 * certbot's account ID: `openssl dgst -md5 pub.der` (the SubjectPublicKeyInfo
 * DER made above). */
static void test_thumbprint(void)
{
    EVP_PKEY *k = fixed_key();
    char t[44], id[33];
    REQUIRE(k != NULL);
    CHECK_INT(px_acme_thumbprint(k, t), 0);
    CHECK_STR(t, "n60AQ9GmNDi04IJtdIJYM0NJKUkTlPgpCQretS9M38k");
    CHECK_INT(px_acme_key_id(k, id), 0);
    CHECK_STR(id, "9ea5f773c3a294b705a484721617a96a");
    char *ka = px_acme_key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", t);
    CHECK_STR(ka, "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.n60AQ9GmNDi04IJtdIJYM0NJKUkTlPgpCQretS9M38k");
    free(ka);
    EVP_PKEY_free(k);
}

static void test_jwk_round_trip(void)
{
    EVP_PKEY *k = fixed_key();
    json_t *pub = px_acme_jwk(k, 0), *priv = px_acme_jwk(k, 1);
    char err[128];
    CHECK(pub != NULL && priv != NULL);
    CHECK_STR(json_string_value(json_object_get(pub, "x")), KEY_X);
    CHECK_STR(json_string_value(json_object_get(pub, "y")), KEY_Y);
    CHECK(json_object_get(pub, "d") == NULL);
    CHECK_STR(json_string_value(json_object_get(priv, "d")), KEY_D);
    CHECK_STR(json_string_value(json_object_get(priv, "kty")), "EC");
    CHECK_STR(json_string_value(json_object_get(priv, "crv")), "P-256");
    /* a public part that is not the private key's is refused */
    json_object_set_new(priv, "x", json_string("bVaJY1ZTGUonIyAQfyadEzT7KACSJkQbXRpGCy6Q_Bw"));
    EVP_PKEY *bad = px_acme_jwk_key(priv, err, sizeof(err));
    CHECK(bad == NULL);
    EVP_PKEY_free(bad);
    json_t *rsa = json_pack("{s:s, s:s, s:s}", "kty", "RSA", "n", "AQAB", "e", "AQAB");
    CHECK(px_acme_jwk_key(rsa, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "RSA") != NULL);
    json_t *shortx =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", "AQAB", "y", KEY_Y, "d", KEY_D);
    CHECK(px_acme_jwk_key(shortx, err, sizeof(err)) == NULL);
    json_decref(shortx);
    json_decref(rsa);
    json_decref(pub);
    json_decref(priv);
    EVP_PKEY_free(k);
}

/* JSON member name of a decoded base64url JSON object. */
static json_t *b64_json(const char *b64)
{
    unsigned char buf[2048];
    size_t n = px_acme_b64url_decode(b64, strlen(b64), buf, sizeof(buf));
    return n == (size_t)-1 ? NULL : json_loadb((const char *)buf, n, 0, NULL);
}

/* 1 when the raw r||s signature over protected.payload verifies. */
static int jws_verifies(EVP_PKEY *k, json_t *jws)
{
    const char *prot = json_string_value(json_object_get(jws, "protected"));
    const char *pay = json_string_value(json_object_get(jws, "payload"));
    const char *sig = json_string_value(json_object_get(jws, "signature"));
    unsigned char raw[64], *der = NULL;
    char signing[4096];
    int ok = 0;
    if (prot == NULL || pay == NULL || sig == NULL || strlen(sig) != 86 ||
        px_acme_b64url_decode(sig, strlen(sig), raw, sizeof(raw)) != 64)
        return 0;
    /* back to the DER OpenSSL verifies */
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL));
    int dlen = i2d_ECDSA_SIG(es, &der);
    int n = snprintf(signing, sizeof(signing), "%s.%s", prot, pay);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (dlen > 0 && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
        EVP_DigestVerify(md, der, (size_t)dlen, (unsigned char *)signing, (size_t)n) == 1)
        ok = 1;
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    return ok;
}

static void test_jws(void)
{
    EVP_PKEY *k = px_acme_key_new();
    char *text = px_acme_jws(k, NULL, "nonce-1", "https://ca.example/new-acct", "{\"termsOfServiceAgreed\":true}");
    json_t *jws = json_loads(text, 0, NULL), *prot;
    CHECK(jws != NULL);
    CHECK_INT(json_object_size(jws), 3);
    CHECK(jws_verifies(k, jws));
    prot = b64_json(json_string_value(json_object_get(jws, "protected")));
    CHECK_STR(json_string_value(json_object_get(prot, "alg")), "ES256");
    CHECK_STR(json_string_value(json_object_get(prot, "nonce")), "nonce-1");
    CHECK_STR(json_string_value(json_object_get(prot, "url")), "https://ca.example/new-acct");
    CHECK(json_object_get(prot, "kid") == NULL);
    json_t *jwk = json_object_get(prot, "jwk");
    CHECK(jwk != NULL && json_object_get(jwk, "d") == NULL);
    CHECK_STR(json_string_value(json_object_get(jwk, "crv")), "P-256");
    json_t *pay = b64_json(json_string_value(json_object_get(jws, "payload")));
    CHECK(json_is_true(json_object_get(pay, "termsOfServiceAgreed")));
    json_decref(pay);
    json_decref(prot);
    json_decref(jws);
    free(text);

    /* with a kid, and POST-as-GET: the payload is the empty string */
    text = px_acme_jws(k, "https://ca.example/acct/1", "nonce-2", "https://ca.example/authz/1", "");
    jws = json_loads(text, 0, NULL);
    CHECK(jws_verifies(k, jws));
    CHECK_STR(json_string_value(json_object_get(jws, "payload")), "");
    prot = b64_json(json_string_value(json_object_get(jws, "protected")));
    CHECK_STR(json_string_value(json_object_get(prot, "kid")), "https://ca.example/acct/1");
    CHECK(json_object_get(prot, "jwk") == NULL);
    /* another key does not verify it */
    EVP_PKEY *other = px_acme_key_new();
    CHECK(!jws_verifies(other, jws));
    EVP_PKEY_free(other);
    json_decref(prot);
    json_decref(jws);
    free(text);
    /* signatures of a fixed key are 64 bytes even when r or s is short */
    for (int i = 0; i < 200; i++) {
        unsigned char sig[64];
        CHECK_INT(px_acme_es256_sign(k, &i, sizeof(i), sig), 0);
    }
    EVP_PKEY_free(k);
}

static int san_has(STACK_OF(GENERAL_NAME) * gens, const char *name)
{
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS && (size_t)ASN1_STRING_length(g->d.dNSName) == strlen(name) &&
            memcmp(ASN1_STRING_get0_data(g->d.dNSName), name, strlen(name)) == 0)
            return 1;
    }
    return 0;
}

static void test_csr(void)
{
    EVP_PKEY *k = px_acme_key_new();
    const char *names[] = {"example.com", "www.example.com"};
    size_t len = 0;
    unsigned char *der = px_acme_csr_der(k, names, 2, &len);
    const unsigned char *p = der;
    X509_REQ *req = der ? d2i_X509_REQ(NULL, &p, (long)len) : NULL;
    char cn[256] = "";
    CHECK(req != NULL);
    if (req == NULL)
        goto out;
    CHECK_INT(X509_REQ_verify(req, k), 1);
    X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn, sizeof(cn));
    CHECK_STR(cn, "example.com");
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    STACK_OF(GENERAL_NAME) *gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    CHECK(gens != NULL && sk_GENERAL_NAME_num(gens) == 2);
    CHECK(san_has(gens, "example.com") && san_has(gens, "www.example.com"));
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    OPENSSL_free(der);

    /* a first name longer than a CN may be: no CN, the SAN names it */
    const char *longn[] = {"a-very-long-label-that-goes-on-and-on.and-another-one-that-is-long.example.com"};
    der = px_acme_csr_der(k, longn, 1, &len);
    p = der;
    req = der ? d2i_X509_REQ(NULL, &p, (long)len) : NULL;
    CHECK(req != NULL);
    if (req != NULL) {
        CHECK_INT(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 0);
        exts = X509_REQ_get_extensions(req);
        gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
        CHECK(gens != NULL && san_has(gens, longn[0]));
        GENERAL_NAMES_free(gens);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }
out:
    X509_REQ_free(req);
    OPENSSL_free(der);
    EVP_PKEY_free(k);
}

static void test_key_pem(void)
{
    EVP_PKEY *k = fixed_key();
    char *pem = px_acme_key_pem(k);
    CHECK(pem != NULL && strncmp(pem, "-----BEGIN PRIVATE KEY-----\n", 28) == 0);
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *back = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    CHECK(back != NULL && EVP_PKEY_eq(back, k) == 1);
    EVP_PKEY_free(back);
    BIO_free(b);
    free(pem);
    EVP_PKEY_free(k);
}

/* ---- the CA's objects (pebble 2.4.0's answers) ---- */

static const char PEBBLE_DIRECTORY[] =
    "{\n   \"keyChange\": \"https://127.0.0.1:14000/rollover-account-key\",\n   \"meta\": {\n"
    "      \"externalAccountRequired\": false,\n      \"termsOfService\": \"data:text/plain,Do%20what%20thou%20wilt\"\n"
    "   },\n   \"newAccount\": \"https://127.0.0.1:14000/sign-me-up\",\n"
    "   \"newNonce\": \"https://127.0.0.1:14000/nonce-plz\",\n   \"newOrder\": \"https://127.0.0.1:14000/order-plz\",\n"
    "   \"revokeCert\": \"https://127.0.0.1:14000/revoke-cert\"\n}";

static void test_directory(void)
{
    struct px_acme_directory d;
    char err[256];
    CHECK_INT(px_acme_directory_parse(PEBBLE_DIRECTORY, strlen(PEBBLE_DIRECTORY), &d, err, sizeof(err)), 0);
    CHECK_STR(d.new_nonce, "https://127.0.0.1:14000/nonce-plz");
    CHECK_STR(d.new_account, "https://127.0.0.1:14000/sign-me-up");
    CHECK_STR(d.new_order, "https://127.0.0.1:14000/order-plz");
    CHECK_STR(d.revoke_cert, "https://127.0.0.1:14000/revoke-cert");
    CHECK(d.renewal_info == NULL); /* no ARI in pebble 2.4.0 */
    CHECK_STR(d.terms_of_service, "data:text/plain,Do%20what%20thou%20wilt");
    CHECK_INT(d.eab_required, 0);
    px_acme_directory_clear(&d);

    const char *le = "{\"newNonce\":\"https://acme.example/nonce\",\"newAccount\":\"https://acme.example/acct\","
                     "\"newOrder\":\"https://acme.example/order\",\"renewalInfo\":\"https://acme.example/ari\","
                     "\"meta\":{\"externalAccountRequired\":true},\"xAnything\":[1]}";
    CHECK_INT(px_acme_directory_parse(le, strlen(le), &d, err, sizeof(err)), 0);
    CHECK_STR(d.renewal_info, "https://acme.example/ari");
    CHECK_INT(d.eab_required, 1);
    px_acme_directory_clear(&d);

    const char *bad[] = {
        "",
        "[]",
        "{\"newNonce\":\"https://a/n\",\"newAccount\":\"https://a/a\"}",                            /* no newOrder */
        "{\"newNonce\":\"ftp://a/n\",\"newAccount\":\"https://a/a\",\"newOrder\":\"https://a/o\"}", /* not http(s) */
        "{\"newNonce\":\"https://\",\"newAccount\":\"https://a/a\",\"newOrder\":\"https://a/o\"}",
        "{\"newNonce\":\"https://a/ n\",\"newAccount\":\"https://a/a\",\"newOrder\":\"https://a/o\"}",
        "{\"newNonce\":1,\"newAccount\":\"https://a/a\",\"newOrder\":\"https://a/o\"}",
        "{\"newNonce\":\"https://a/n\",\"newNonce\":\"https://a/n\",\"newAccount\":\"https://a/a\",\"newOrder\":\"x\"}",
        "{\"newNonce\":\"https://a/n\" \"newAccount\"}",
    };
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        CHECK_INT(px_acme_directory_parse(bad[i], strlen(bad[i]), &d, err, sizeof(err)), -1);
        CHECK(err[0] != '\0');
        CHECK(d.new_nonce == NULL); /* cleared */
    }
    /* not NUL-terminated: the length is what counts */
    CHECK_INT(px_acme_directory_parse(PEBBLE_DIRECTORY, strlen(PEBBLE_DIRECTORY) - 1, &d, err, sizeof(err)), -1);
}

static const char PEBBLE_ORDER[] =
    "{\n   \"status\": \"pending\",\n   \"expires\": \"2026-11-27T04:13:23Z\",\n   \"identifiers\": [\n"
    "      {\n         \"type\": \"dns\",\n         \"value\": \"www.example.com\"\n      },\n"
    "      {\n         \"type\": \"dns\",\n         \"value\": \"example.com\"\n      }\n   ],\n"
    "   \"finalize\": \"https://127.0.0.1:42727/finalize-order/_cGC29LQut8IbvEFj5N-zkwRREVCfCrNFml0Ufpwva8\",\n"
    "   \"authorizations\": [\n      \"https://127.0.0.1:42727/authZ/Io_XLzrRaJ2rEuQDfcpoO8NFLJMmzqTS_iCX4tlnPvM\",\n"
    "      \"https://127.0.0.1:42727/authZ/UElhUenCZQXY2MVz3MF9qFrX-yiuqfu_RRnrjudRtls\"\n   ]\n}";

static void test_order(void)
{
    struct px_acme_order o;
    char err[256];
    CHECK_INT(px_acme_order_parse(PEBBLE_ORDER, strlen(PEBBLE_ORDER), &o, err, sizeof(err)), 0);
    CHECK_INT(o.status, PX_ACME_S_PENDING);
    CHECK_INT(o.nauthorizations, 2);
    CHECK_STR(o.authorizations[1], "https://127.0.0.1:42727/authZ/UElhUenCZQXY2MVz3MF9qFrX-yiuqfu_RRnrjudRtls");
    CHECK_STR(o.finalize, "https://127.0.0.1:42727/finalize-order/_cGC29LQut8IbvEFj5N-zkwRREVCfCrNFml0Ufpwva8");
    CHECK(o.certificate == NULL && !o.has_error);
    px_acme_order_clear(&o);

    const char *valid = "{\"status\":\"valid\",\"authorizations\":[],\"finalize\":\"https://a/f\","
                        "\"certificate\":\"https://a/cert/1\"}";
    CHECK_INT(px_acme_order_parse(valid, strlen(valid), &o, err, sizeof(err)), 0);
    CHECK_INT(o.status, PX_ACME_S_VALID);
    CHECK_STR(o.certificate, "https://a/cert/1");
    px_acme_order_clear(&o);

    const char *invalid = "{\"status\":\"invalid\",\"authorizations\":[\"https://a/z\"],\"finalize\":\"https://a/f\","
                          "\"error\":{\"type\":\"urn:ietf:params:acme:error:badCSR\",\"detail\":\"bad key\"}}";
    CHECK_INT(px_acme_order_parse(invalid, strlen(invalid), &o, err, sizeof(err)), 0);
    CHECK_INT(o.status, PX_ACME_S_INVALID);
    CHECK(o.has_error);
    CHECK_STR(o.error.type, "badCSR");
    CHECK_STR(o.error.detail, "bad key");
    px_acme_order_clear(&o);

    const char *bad[] = {
        "{\"authorizations\":[],\"finalize\":\"https://a/f\"}",                           /* no status */
        "{\"status\":\"weird\",\"authorizations\":[],\"finalize\":\"https://a/f\"}",      /* unknown status */
        "{\"status\":\"pending\",\"authorizations\":\"x\",\"finalize\":\"https://a/f\"}", /* not a list */
        "{\"status\":\"pending\",\"authorizations\":[1],\"finalize\":\"https://a/f\"}",   /* not a URL */
        "{\"status\":\"pending\",\"authorizations\":[]}",                                 /* no finalize */
        "{\"status\":\"valid\",\"authorizations\":[],\"finalize\":\"https://a/f\"}",      /* valid, no cert */
        "null",
    };
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++) {
        CHECK_INT(px_acme_order_parse(bad[i], strlen(bad[i]), &o, err, sizeof(err)), -1);
        CHECK(o.authorizations == NULL && o.finalize == NULL);
    }
}

static const char PEBBLE_AUTHZ[] =
    "{\"status\":\"pending\",\"identifier\":{\"type\":\"dns\",\"value\":\"www.example.com\"},\"challenges\":["
    "{\"type\":\"dns-01\",\"url\":\"https://127.0.0.1:42727/chalZ/68QWi3vMvMvUpPEmiqTPQbthYdxpnpLa-4ta4InX_88\","
    "\"token\":\"6AVg4XlZBkwTCKfgBiwDzSzUuwE_LkeQcgPToX_UGNk\",\"status\":\"pending\"},"
    "{\"type\":\"http-01\",\"url\":\"https://127.0.0.1:42727/chalZ/xPJEzEQDikH-PUs5hH0ihGhVAMaFz-pRmrQDixKVXkY\","
    "\"token\":\"Ls4ziYhN02OPgM4PGojBJbRf6fxQSggwBtDgkkDfcyw\",\"status\":\"pending\"},"
    "{\"type\":\"tls-alpn-01\",\"url\":\"https://127.0.0.1:42727/chalZ/uUbBZvBTvknYfacKIVzmCZK0oN7NHRSJE-W7qijXD_4\","
    "\"token\":\"QhF-oq66yLcqdfUNivSbc_5qq8TYy1W2AwYKq7Pfido\",\"status\":\"pending\"}],"
    "\"expires\":\"2026-11-26T05:13:23Z\"}";

static void test_authz(void)
{
    struct px_acme_authz a;
    char err[256];
    CHECK_INT(px_acme_authz_parse(PEBBLE_AUTHZ, strlen(PEBBLE_AUTHZ), &a, err, sizeof(err)), 0);
    CHECK_INT(a.status, PX_ACME_S_PENDING);
    CHECK_STR(a.identifier, "www.example.com");
    CHECK_INT(a.nchallenges, 3);
    const struct px_acme_challenge *ch = px_acme_authz_challenge(&a, "http-01");
    CHECK(ch != NULL);
    if (ch != NULL) {
        CHECK_STR(ch->token, "Ls4ziYhN02OPgM4PGojBJbRf6fxQSggwBtDgkkDfcyw");
        CHECK_STR(ch->url, "https://127.0.0.1:42727/chalZ/xPJEzEQDikH-PUs5hH0ihGhVAMaFz-pRmrQDixKVXkY");
        CHECK_INT(ch->status, PX_ACME_S_PENDING);
    }
    CHECK(px_acme_authz_challenge(&a, "dns-account-01") == NULL);
    px_acme_authz_clear(&a);

    /* pebble's answer when the responder said 404 */
    const char *invalid =
        "{\"status\":\"invalid\",\"identifier\":{\"type\":\"dns\",\"value\":\"example.com\"},\"challenges\":[{"
        "\"type\":\"http-01\",\"url\":\"https://127.0.0.1:1/chalZ/"
        "x\",\"token\":\"kVIPkvNCKaDFc9jE3SJAecExuQtFB38M83T8CdD2iIc\","
        "\"status\":\"invalid\",\"validated\":\"2026-11-26T04:13:27Z\",\"error\":{\"type\":"
        "\"urn:ietf:params:acme:error:unauthorized\",\"detail\":\"Non-200 status code from HTTP: returned 404\","
        "\"status\":403}}],\"expires\":\"2026-11-26T05:13:27Z\"}";
    CHECK_INT(px_acme_authz_parse(invalid, strlen(invalid), &a, err, sizeof(err)), 0);
    CHECK_INT(a.status, PX_ACME_S_INVALID);
    CHECK(a.nchallenges == 1 && a.challenges[0].has_error);
    if (a.nchallenges == 1) {
        CHECK_STR(a.challenges[0].error.type, "unauthorized");
        CHECK_STR(a.challenges[0].error.detail, "Non-200 status code from HTTP: returned 404");
    }
    px_acme_authz_clear(&a);

    const char *wild = "{\"status\":\"pending\",\"wildcard\":true,\"identifier\":{\"type\":\"dns\",\"value\":"
                       "\"example.com\"},\"challenges\":[]}";
    CHECK_INT(px_acme_authz_parse(wild, strlen(wild), &a, err, sizeof(err)), 0);
    CHECK(a.wildcard && a.nchallenges == 0 && px_acme_authz_challenge(&a, "http-01") == NULL);
    px_acme_authz_clear(&a);

    const char *bad[] = {
        "{\"identifier\":{\"value\":\"a\"},\"challenges\":[]}",      /* no status */
        "{\"status\":\"pending\",\"challenges\":[]}",                /* no identifier */
        "{\"status\":\"pending\",\"identifier\":{\"value\":\"a\"}}", /* no challenges */
        "{\"status\":\"pending\",\"identifier\":{\"value\":\"a\"},\"challenges\":[{\"url\":\"https://a/c\"}]}",
        "{\"status\":\"pending\",\"identifier\":{\"value\":\"a\"},\"challenges\":[{\"type\":\"http-01\"}]}",
        /* an http-01 token that cannot be a URL path segment */
        "{\"status\":\"pending\",\"identifier\":{\"value\":\"a\"},\"challenges\":[{\"type\":\"http-01\","
        "\"url\":\"https://a/c\",\"token\":\"../../../../etc/passwd/aaaaaaaaaaaaaaa\"}]}",
        "{\"status\":\"pending\",\"identifier\":{\"value\":\"a\"},\"challenges\":[{\"type\":\"http-01\","
        "\"url\":\"https://a/c\",\"token\":\"short\"}]}",
        "{\"status\":\"pending\",\"identifier\":{\"value\":\"a\\u0000b\"},\"challenges\":[]}",
    };
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++) {
        CHECK_INT(px_acme_authz_parse(bad[i], strlen(bad[i]), &a, err, sizeof(err)), -1);
        CHECK(a.identifier == NULL && a.challenges == NULL);
    }

    struct px_acme_challenge c;
    const char *chal =
        "{\"type\":\"http-01\",\"url\":\"https://a/c\",\"token\":\"Ls4ziYhN02OPgM4PGojBJbRf6fxQSggwBtDgkkDfcyw\","
        "\"status\":\"processing\"}";
    CHECK_INT(px_acme_challenge_parse(chal, strlen(chal), &c, err, sizeof(err)), 0);
    CHECK_INT(c.status, PX_ACME_S_PROCESSING);
    px_acme_challenge_clear(&c);
    CHECK_INT(px_acme_challenge_parse("{}", 2, &c, err, sizeof(err)), -1);

    enum px_acme_status st;
    const char *acct = "{\"status\":\"valid\",\"orders\":\"https://a/o\",\"key\":{}}";
    CHECK_INT(px_acme_account_parse(acct, strlen(acct), &st, err, sizeof(err)), 0);
    CHECK_INT(st, PX_ACME_S_VALID);
    CHECK_INT(px_acme_account_parse("{}", 2, &st, err, sizeof(err)), -1);
}

static void test_problem(void)
{
    struct px_acme_error e;
    const char *bn = "{\"type\":\"urn:ietf:params:acme:error:badNonce\",\"detail\":\"JWS has an invalid anti-replay "
                     "nonce: kUNIimdktI4c7YfJDVH9Kw\",\"status\":400}";
    CHECK_INT(px_acme_problem_parse(bn, strlen(bn), &e), 0);
    CHECK_STR(e.type, "badNonce");
    CHECK_STR(e.detail, "JWS has an invalid anti-replay nonce: kUNIimdktI4c7YfJDVH9Kw");

    /* every RFC 8555 type comes out by its short name */
    const char *types[] = {"accountDoesNotExist",
                           "alreadyRevoked",
                           "badCSR",
                           "badNonce",
                           "badPublicKey",
                           "badRevocationReason",
                           "badSignatureAlgorithm",
                           "caa",
                           "compound",
                           "connection",
                           "dns",
                           "externalAccountRequired",
                           "incorrectResponse",
                           "invalidContact",
                           "malformed",
                           "orderNotReady",
                           "rateLimited",
                           "rejectedIdentifier",
                           "serverInternal",
                           "tls",
                           "unauthorized",
                           "unsupportedContact",
                           "unsupportedIdentifier",
                           "userActionRequired"};
    for (size_t i = 0; i < PX_ARRAY_LEN(types); i++) {
        char doc[256];
        snprintf(doc, sizeof(doc), "{\"type\":\"urn:ietf:params:acme:error:%s\",\"detail\":\"d\"}", types[i]);
        CHECK_INT(px_acme_problem_parse(doc, strlen(doc), &e), 0);
        CHECK_STR(e.type, types[i]);
    }

    const char *sub = "{\"type\":\"urn:ietf:params:acme:error:rejectedIdentifier\",\"detail\":\"Some rejected\","
                      "\"subproblems\":[{\"type\":\"urn:ietf:params:acme:error:malformed\",\"detail\":\"Invalid "
                      "underscore\",\"identifier\":{\"type\":\"dns\",\"value\":\"_example.org\"}}]}";
    CHECK_INT(px_acme_problem_parse(sub, strlen(sub), &e), 0);
    CHECK_STR(e.type, "rejectedIdentifier");
    CHECK_STR(e.detail, "Some rejected; _example.org: Invalid underscore (malformed)");

    const char *other = "{\"type\":\"about:blank\",\"title\":\"Not Found\"}";
    CHECK_INT(px_acme_problem_parse(other, strlen(other), &e), 0);
    CHECK_STR(e.type, "about:blank");
    CHECK_STR(e.detail, "");

    CHECK_INT(px_acme_problem_parse("<html>502</html>", 16, &e), -1);
    CHECK_STR(e.type, "bad_response");
    CHECK_INT(px_acme_problem_parse("{\"detail\":\"no type\"}", 20, &e), -1);
    CHECK_STR(e.type, "bad_response");

    /* long fields are cut, never overflow */
    char big[4096];
    snprintf(big, sizeof(big), "{\"type\":\"urn:ietf:params:acme:error:%0200d\",\"detail\":\"%01000d\"}", 7, 7);
    CHECK_INT(px_acme_problem_parse(big, strlen(big), &e), 0);
    CHECK_INT(strlen(e.type), sizeof(e.type) - 1);
    CHECK_INT(strlen(e.detail), sizeof(e.detail) - 1);
}

/* ---- certificates ---- */

static X509 *make_cert(EVP_PKEY *key, EVP_PKEY *signer, X509 *issuer, const char *cn, long serial, long days)
{
    X509 *x = X509_new();
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), days * 86400);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(x));
    X509_sign(x, signer, EVP_sha256());
    return x;
}

static char *pem_of(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p, *s;
    PEM_write_bio_X509(b, x);
    long n = BIO_get_mem_data(b, &p);
    s = strndup(p, (size_t)n);
    BIO_free(b);
    return s;
}

static void test_chain(void)
{
    EVP_PKEY *cak = px_acme_key_new(), *leafk = px_acme_key_new();
    X509 *ca = make_cert(cak, cak, NULL, "test intermediate", 1, 30);
    X509 *leaf = make_cert(leafk, cak, ca, "example.com", 2, 90);
    char *lp = pem_of(leaf), *cp = pem_of(ca), err[256], text[8192];
    struct px_acme_chain ch;

    /* CRLF line ends and text between the blocks, as some CAs send */
    snprintf(text, sizeof(text), "%s\r\nsome text\r\n%s", lp, cp);
    CHECK_INT(px_acme_chain_parse(text, strlen(text), &ch, err, sizeof(err)), 0);
    CHECK_INT(ch.ncerts, 2);
    CHECK_STR(ch.cert_pem, lp);
    CHECK_STR(ch.chain_pem, cp);
    char full[8192];
    snprintf(full, sizeof(full), "%s%s", lp, cp);
    CHECK_STR(ch.fullchain_pem, full);
    time_t now = time(NULL);
    CHECK(ch.not_before <= now && ch.not_before > now - 60);
    CHECK(ch.not_after >= now + 90 * 86400 - 60 && ch.not_after <= now + 90 * 86400 + 60);
    px_acme_chain_clear(&ch);

    /* a leaf alone: the chain is empty */
    CHECK_INT(px_acme_chain_parse(lp, strlen(lp), &ch, err, sizeof(err)), 0);
    CHECK_INT(ch.ncerts, 1);
    CHECK_STR(ch.chain_pem, "");
    px_acme_chain_clear(&ch);

    CHECK_INT(px_acme_chain_parse("", 0, &ch, err, sizeof(err)), -1);
    CHECK_INT(px_acme_chain_parse("not pem", 7, &ch, err, sizeof(err)), -1);
    /* a broken second block is not a good chain */
    snprintf(text, sizeof(text), "%s-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", lp);
    CHECK_INT(px_acme_chain_parse(text, strlen(text), &ch, err, sizeof(err)), -1);
    CHECK(ch.cert_pem == NULL);
    /* cut short */
    CHECK_INT(px_acme_chain_parse(lp, strlen(lp) - 30, &ch, err, sizeof(err)), -1);

    free(lp);
    free(cp);
    X509_free(leaf);
    X509_free(ca);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(leafk);
}

/* A leaf with subjectAltName san ("DNS:a, DNS:b"; NULL = none), valid
 * from now + nb to now + na (seconds). */
static char *san_cert(EVP_PKEY *k, const char *cn, const char *san, long nb, long na)
{
    X509 *x = X509_new();
    X509V3_CTX ctx;
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), nb);
    X509_gmtime_adj(X509_getm_notAfter(x), na);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    if (san != NULL) {
        X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, k, EVP_sha256());
    char *pem = pem_of(x);
    X509_free(x);
    return pem;
}

/* The leaf must cover what was ordered and be inside its dates. */
static void test_cert_check(void)
{
    EVP_PKEY *k = px_acme_key_new();
    time_t now = time(NULL);
    char err[256];
    const char *site[] = {"site.test"}, *two[] = {"example.com", "www.example.com"};
    const char *sub[] = {"a.example.com", "b.example.com"}, *wild[] = {"*.example.com"};
    const char *deep[] = {"a.b.example.com"}, *bare[] = {"example.com"};
    struct {
        const char *cn, *san;
        long nb, na;
        const char *const *names;
        size_t n;
        int ok;
        const char *why; /* in err when refused */
    } cases[] = {
        /* the repro: the CA signed the CSR's key for another name */
        {"wrong.example", "DNS:wrong.example", 0, 86400, site, 1, 0, "does not cover site.test"},
        {"site.test", "DNS:site.test", 0, 86400, site, 1, 1, NULL},
        /* case-insensitive, order free, extra names fine */
        {"x", "DNS:WWW.Example.COM, DNS:other.test, DNS:example.com", 0, 86400, two, 2, 1, NULL},
        /* one name of two missing */
        {"example.com", "DNS:example.com", 0, 86400, two, 2, 0, "does not cover www.example.com (1 of the 2"},
        /* the CN is never looked at (browsers do not), with or without SANs */
        {"site.test", NULL, 0, 86400, site, 1, 0, "does not cover site.test"},
        {"site.test", "DNS:other.test", 0, 86400, site, 1, 0, "does not cover site.test"},
        /* a wildcard covers one left-most label, as in a browser */
        {"x", "DNS:*.example.com", 0, 86400, sub, 2, 1, NULL},
        {"x", "DNS:*.example.com", 0, 86400, deep, 1, 0, "a.b.example.com"},
        {"x", "DNS:*.example.com", 0, 86400, bare, 1, 0, "example.com"},
        {"x", "DNS:a*.example.com", 0, 86400, sub, 1, 0, "a.example.com"},
        /* a wildcard identifier needs that wildcard SAN */
        {"x", "DNS:*.Example.com", 0, 86400, wild, 1, 1, NULL},
        {"x", "DNS:a.example.com", 0, 86400, wild, 1, 0, "*.example.com"},
        /* an IP SAN is no DNS name */
        {"x", "IP:127.0.0.1", 0, 86400, site, 1, 0, "site.test"},
        /* dates: a little clock skew is fine, more is not; expired is not */
        {"site.test", "DNS:site.test", PX_ACME_CLOCK_SKEW_S - 60, 86400, site, 1, 1, NULL},
        {"site.test", "DNS:site.test", 3600, 86400, site, 1, 0, "not valid yet"},
        {"site.test", "DNS:site.test", -86400, -60, site, 1, 0, "expired"},
    };
    for (size_t i = 0; i < PX_ARRAY_LEN(cases); i++) {
        char *pem = san_cert(k, cases[i].cn, cases[i].san, cases[i].nb, cases[i].na);
        err[0] = '\0';
        int rc = px_acme_cert_check(pem, cases[i].names, cases[i].n, now, err, sizeof(err));
        if (rc != (cases[i].ok ? 0 : -1))
            fprintf(stderr, "case %zu: rc %d (%s)\n", i, rc, err);
        CHECK_INT(rc, cases[i].ok ? 0 : -1);
        if (!cases[i].ok)
            CHECK(strstr(err, cases[i].why) != NULL);
        free(pem);
    }
    /* many missing names: the message stays short and says how many */
    const char *many[] = {"a.test", "b.test", "c.test", "d.test", "e.test"};
    char *pem = san_cert(k, "x", "DNS:z.test", 0, 86400);
    CHECK_INT(px_acme_cert_check(pem, many, 5, now, err, sizeof(err)), -1);
    CHECK(strstr(err, "a.test, b.test, c.test, ... (5 of the 5 names ordered)") != NULL);
    free(pem);
    CHECK_INT(px_acme_cert_check("junk", site, 1, now, err, sizeof(err)), -1);
    EVP_PKEY_free(k);
}

/* RFC 9773 section 4.1's example: AKI keyIdentifier
 * 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4 and serial
 * 0x87654321 give "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE". */
static void test_ari_cert_id(void)
{
    static const unsigned char kid[] = {0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3,
                                        0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4};
    EVP_PKEY *k = px_acme_key_new();
    X509 *x = make_cert(k, k, NULL, "example.com", 0x87654321L, 90);
    AUTHORITY_KEYID *aki = AUTHORITY_KEYID_new();
    char err[256];
    aki->keyid = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(aki->keyid, kid, sizeof(kid));
    X509_add1_ext_i2d(x, NID_authority_key_identifier, aki, 0, 0);
    X509_sign(x, k, EVP_sha256());
    char *pem = pem_of(x);
    char *id = px_acme_ari_cert_id(pem, strlen(pem), err, sizeof(err));
    CHECK_STR(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    free(id);
    free(pem);
    AUTHORITY_KEYID_free(aki);
    X509_free(x);

    /* no AKI: no certID */
    x = make_cert(k, k, NULL, "example.com", 5, 90);
    pem = pem_of(x);
    id = px_acme_ari_cert_id(pem, strlen(pem), err, sizeof(err));
    CHECK(id == NULL && strstr(err, "authority key identifier") != NULL);
    free(pem);
    X509_free(x);
    CHECK(px_acme_ari_cert_id("junk", 4, err, sizeof(err)) == NULL);
    EVP_PKEY_free(k);
}

static void test_renewal_info(void)
{
    time_t s, e, t;
    char err[256];
    CHECK_INT(px_acme_rfc3339("2025-01-02T03:04:05Z", &t), 0);
    CHECK_INT(t, 1735787045);
    CHECK_INT(px_acme_rfc3339("2025-01-02T05:04:05.123456+02:00", &t), 0);
    CHECK_INT(t, 1735787045);
    CHECK_INT(px_acme_rfc3339("2025-01-01t22:04:05-05:00", &t), 0);
    CHECK_INT(t, 1735787045);
    const char *bad[] = {"",
                         "2025-01-02",
                         "2025-01-02T03:04:05",
                         "2025-13-02T03:04:05Z",
                         "2025-01-02T03:04:05Zx",
                         "2025-01-02T03:04:05.Z",
                         "2025-01-02 03:04:05Z",
                         "2025-01-02T03:04:05+0200"};
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++)
        CHECK_INT(px_acme_rfc3339(bad[i], &t), -1);

    const char *ri = "{\"suggestedWindow\":{\"start\":\"2025-01-02T03:04:05Z\",\"end\":\"2025-01-03T03:04:05Z\"},"
                     "\"explanationURL\":\"https://acme.example/ari\"}";
    CHECK_INT(px_acme_renewal_info_parse(ri, strlen(ri), &s, &e, err, sizeof(err)), 0);
    CHECK_INT(s, 1735787045);
    CHECK_INT(e, 1735787045 + 86400);
    const char *backwards =
        "{\"suggestedWindow\":{\"start\":\"2025-01-03T03:04:05Z\",\"end\":\"2025-01-02T03:04:05Z\"}}";
    CHECK_INT(px_acme_renewal_info_parse(backwards, strlen(backwards), &s, &e, err, sizeof(err)), -1);
    CHECK_INT(px_acme_renewal_info_parse("{}", 2, &s, &e, err, sizeof(err)), -1);

    CHECK_INT(px_acme_retry_after("120", 0), 120);
    CHECK_INT(px_acme_retry_after(" 3 ", 0), 3);
    CHECK_INT(px_acme_retry_after(NULL, 0), -1);
    CHECK_INT(px_acme_retry_after("soon", 0), -1);
    CHECK_INT(px_acme_retry_after("12x", 0), -1);
    CHECK_INT(px_acme_retry_after("Thu, 02 Jan 2025 03:04:15 GMT", 1735787045), 10);
    CHECK_INT(px_acme_retry_after("Thu, 02 Jan 2025 03:04:15 GMT", 1735787045 + 100), 0); /* past */
    /* RFC 9110's obsolete forms, which a recipient must accept too */
    CHECK_INT(px_acme_retry_after("Thursday, 02-Jan-25 03:04:15 GMT", 1735787045), 10);
    CHECK_INT(px_acme_retry_after("Thu Jan  2 03:04:15 2025", 1735787045), 10);
    CHECK_INT(px_acme_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 0), 784111777);
    CHECK_INT(px_acme_retry_after("Thu, 02 Jan 2025 03:04:15 GMT\r\n", 1735787045), 10);
    static const char *const bad_dates[] = {
        "Thu, 02 Jan 2025 03:04:15 PST", "Thu, 02 Foo 2025 03:04:15 GMT", "Thu, 32 Jan 2025 03:04:15 GMT",
        "Thu, 02 Jan 2025 24:04:15 GMT", "Thu, 02 Jan 2025 03:04:15 GMT x", "Thu, 02 Jan 2025", "Thu,",
        "Thu 02 Jan 2025 03:04:15 GMT", "Thu, 02 anJ 2025 03:04:15 GMT", "",
    };
    for (size_t i = 0; i < PX_ARRAY_LEN(bad_dates); i++)
        CHECK_INT(px_acme_retry_after(bad_dates[i], 0), -1);
}

/* ---- accounts/ ---- */

static void test_account_subdir(void)
{
    static const char *const v[][2] = {
        {"https://acme-v02.api.letsencrypt.org/directory", "acme-v02.api.letsencrypt.org/directory"},
        {"https://127.0.0.1:14000/dir", "127.0.0.1:14000/dir"},
        {"https://127.0.0.1:14000/dir/", "127.0.0.1:14000/dir"},
        {"https://ca.example//a//b?x=1", "ca.example/a/b"},
        {"https://ca.example", "ca.example"},
        {"http://[::1]:14000/dir", "[::1]:14000/dir"},
    };
    char err[256];
    for (size_t i = 0; i < PX_ARRAY_LEN(v); i++) {
        char *s = px_acme_account_subdir(v[i][0], err, sizeof(err));
        CHECK_STR(s, v[i][1]);
        free(s);
    }
    const char *bad[] = {"ftp://ca/dir", "https:///dir", "https://ca/../dir", "https://ca/a/./b",
                         "https://../x", "directory",    "https://c a/dir"};
    for (size_t i = 0; i < PX_ARRAY_LEN(bad); i++)
        CHECK(px_acme_account_subdir(bad[i], err, sizeof(err)) == NULL);
}

static int mode_of(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (int)(sb.st_mode & 0777) : -1;
}

static void test_account_files(void)
{
    char accounts[128], path[512], err[256];
    const char *url = "https://127.0.0.1:14000/dir";
    struct px_acme_account a = {0}, b;
    snprintf(accounts, sizeof(accounts), "%s/accounts", tmpdir);

    CHECK_INT(px_acme_account_load(accounts, url, &b, err, sizeof(err)), 0); /* nothing yet */
    a.key = fixed_key();
    CHECK_INT(px_acme_account_save_key(accounts, url, &a, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/127.0.0.1:14000/dir/9ea5f773c3a294b705a484721617a96a", accounts);
    CHECK_STR(a.dir, path);
    CHECK_INT(mode_of(accounts), 0700);
    snprintf(path, sizeof(path), "%s/127.0.0.1:14000", accounts);
    CHECK_INT(mode_of(path), 0700);
    snprintf(path, sizeof(path), "%s/127.0.0.1:14000/dir", accounts);
    CHECK_INT(mode_of(path), 0700);
    CHECK_INT(mode_of(a.dir), 0700);
    snprintf(path, sizeof(path), "%s/private_key.json", a.dir);
    CHECK_INT(mode_of(path), 0600);
    snprintf(path, sizeof(path), "%s/private_key.json.tmp", a.dir);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof(path), "%s/meta.json", a.dir);
    json_t *meta = json_load_file(path, 0, NULL);
    CHECK(json_is_string(json_object_get(meta, "creation_dt")) &&
          json_is_string(json_object_get(meta, "creation_host")));
    json_decref(meta);

    /* a key without a registration is found, without a uri */
    CHECK_INT(px_acme_account_load(accounts, url, &b, err, sizeof(err)), 1);
    CHECK(b.uri == NULL && EVP_PKEY_eq(b.key, a.key) == 1);
    px_acme_account_clear(&b);

    json_t *body = json_pack("{s:s}", "status", "valid");
    CHECK_INT(px_acme_account_save_regr(&a, body, "https://127.0.0.1:14000/my-account/1", err, sizeof(err)), 0);
    json_decref(body);
    snprintf(path, sizeof(path), "%s/regr.json", a.dir);
    json_t *regr = json_load_file(path, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(json_object_get(regr, "body"), "status")), "valid");
    json_decref(regr);

    /* certbot's RSA account next to it (sorting first) is skipped; an
     * unregistered EC key after it does not win over the registered one */
    snprintf(path, sizeof(path), "%s/127.0.0.1:14000/dir/0000rsa", accounts);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/127.0.0.1:14000/dir/0000rsa/private_key.json", accounts);
    write_file(path, "{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\",\"d\":\"AQAB\"}");
    snprintf(path, sizeof(path), "%s/127.0.0.1:14000/dir/0001junk", accounts);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/127.0.0.1:14000/dir/0001junk/private_key.json", accounts);
    write_file(path, "{not json");
    struct px_acme_account c = {.key = px_acme_key_new()};
    CHECK_INT(px_acme_account_save_key(accounts, url, &c, err, sizeof(err)), 0);
    CHECK_INT(px_acme_account_load(accounts, url, &b, err, sizeof(err)), 1);
    CHECK_STR(b.uri, "https://127.0.0.1:14000/my-account/1");
    CHECK(EVP_PKEY_eq(b.key, a.key) == 1);
    px_acme_account_clear(&b);
    px_acme_account_clear(&c);

    /* only RSA: none usable */
    CHECK_INT(px_acme_account_load(accounts, "https://other.example/dir", &b, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/other.example/dir/rsa", accounts);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
    CHECK_INT(system(cmd), 0);
    snprintf(path, sizeof(path), "%s/other.example/dir/rsa/private_key.json", accounts);
    write_file(path, "{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}");
    CHECK_INT(px_acme_account_load(accounts, "https://other.example/dir", &b, err, sizeof(err)), 0);
    /* an unreadable account directory is an error, not "none" */
    if (geteuid() != 0) {
        snprintf(path, sizeof(path), "%s/other.example/dir", accounts);
        chmod(path, 0);
        CHECK_INT(px_acme_account_load(accounts, "https://other.example/dir", &b, err, sizeof(err)), -1);
        chmod(path, 0700);
    }
    px_acme_account_clear(&a);
}

/* ---- the event loop side ---- */

struct result {
    int calls;
    char type[48];
    int published, unpublished;
};

static void on_done(void *arg, const struct px_acme_cert *cert, const struct px_acme_error *err)
{
    struct result *r = arg;
    r->calls++;
    snprintf(r->type, sizeof(r->type), "%s", err ? err->type : "ok");
}

static void on_window(void *arg, int ok, time_t start, time_t end)
{
    struct result *r = arg;
    r->calls++;
    snprintf(r->type, sizeof(r->type), "ok=%d", ok);
}

static int pub(void *arg, const char *token, const char *ka)
{
    ((struct result *)arg)->published++;
    return 0;
}

static void unpub(void *arg, const char *token)
{
    ((struct result *)arg)->unpublished++;
}

static void run_until(struct event_base *base, const int *calls, int want, int max_ms)
{
    for (int i = 0; i < max_ms / 10 && *calls < want; i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}

/* A port nothing listens on (bound, then closed). */
static int closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

static void test_callbacks_later_and_once(void)
{
    struct event_base *base = event_base_new();
    char url[64], accounts[128], err[256];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/dir", closed_port());
    snprintf(accounts, sizeof(accounts), "%s/acct-cb", tmpdir);
    struct px_acme_client_conf conf = {.directory = url, .accounts_dir = accounts};
    struct px_acme_client *c = px_acme_client_new(base, &conf, err, sizeof(err));
    struct px_acme_challenge_ops ch = {0};
    struct result r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0};
    CHECK(c != NULL);
    if (c == NULL)
        goto out;
    ch = (struct px_acme_challenge_ops){.publish = pub, .unpublish = unpub, .arg = &r1};

    /* bad arguments fail through the callback, later */
    const char *none[] = {"x"};
    CHECK(px_acme_obtain(c, none, 0, &ch, 1000, on_done, &r1) != NULL);
    const char *upper[] = {"Example.com"};
    CHECK(px_acme_obtain(c, upper, 1, &ch, 1000, on_done, &r2) != NULL);
    const char *twice[] = {"example.com", "example.com"};
    CHECK(px_acme_obtain(c, twice, 2, &ch, 1000, on_done, &r3) != NULL);
    /* a cancelled op never calls back */
    struct px_acme_op *op = px_acme_obtain(c, twice, 2, &ch, 1000, on_done, &r4);
    CHECK_INT(r1.calls + r2.calls + r3.calls, 0);
    px_acme_op_cancel(op);
    run_until(base, &r3.calls, 1, 2000);
    CHECK_INT(r1.calls, 1);
    CHECK_STR(r1.type, "internal");
    CHECK_INT(r2.calls, 1);
    CHECK_STR(r2.type, "internal");
    CHECK_INT(r3.calls, 1);
    CHECK_INT(r4.calls, 0);

    /* nothing listens: "network", once, after a real attempt */
    struct result rn = {0}, rw = {0};
    const char *names[] = {"example.com"};
    CHECK(px_acme_obtain(c, names, 1, &ch, 10000, on_done, &rn) != NULL);
    CHECK(px_acme_renewal_info(c, "junk", on_window, &rw) != NULL);
    CHECK_INT(rn.calls + rw.calls, 0);
    run_until(base, &rn.calls, 1, 5000);
    run_until(base, &rw.calls, 1, 5000);
    CHECK_INT(rn.calls, 1);
    CHECK_STR(rn.type, "network");
    CHECK_INT(rw.calls, 1);
    CHECK_STR(rw.type, "ok=0");
    /* the account is made only when the directory answered */
    CHECK(access(accounts, F_OK) != 0);
    run_until(base, &rn.calls, 2, 100);
    CHECK_INT(rn.calls, 1);
out:
    px_acme_client_free(c);
    event_base_free(base);
}

static void test_timeout(void)
{
    /* a CA that accepts connections and never answers */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    bind(lfd, (struct sockaddr *)&sa, sizeof(sa));
    listen(lfd, 8);
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    struct event_base *base = event_base_new();
    char url[64], accounts[128], err[256];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/dir", ntohs(sa.sin_port));
    snprintf(accounts, sizeof(accounts), "%s/acct-to", tmpdir);
    struct px_acme_client_conf conf = {.directory = url, .accounts_dir = accounts};
    struct px_acme_client *c = px_acme_client_new(base, &conf, err, sizeof(err));
    struct result r = {0}, r2 = {0};
    struct px_acme_challenge_ops ch = {.publish = pub, .unpublish = unpub, .arg = &r};
    const char *names[] = {"example.com"};
    uint64_t t0 = px_now_ms();
    CHECK(px_acme_obtain(c, names, 1, &ch, 300, on_done, &r) != NULL);
    run_until(base, &r.calls, 1, 5000);
    CHECK_INT(r.calls, 1);
    CHECK_STR(r.type, "timeout");
    CHECK(px_now_ms() - t0 >= 290 && px_now_ms() - t0 < 3000);
    /* freeing the client with an op in flight: no callback */
    CHECK(px_acme_obtain(c, names, 1, &ch, 10000, on_done, &r2) != NULL);
    run_until(base, &r2.calls, 1, 100);
    px_acme_client_free(c);
    CHECK_INT(r2.calls, 0);
    event_base_free(base);
    close(lfd);
}

static void test_client_new_errors(void)
{
    struct event_base *base = event_base_new();
    char err[256] = "";
    struct px_acme_client_conf conf = {.directory = "ftp://ca/dir", .accounts_dir = tmpdir};
    CHECK(px_acme_client_new(base, &conf, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "ftp://ca/dir") != NULL);
    conf.directory = "https://ca.example/dir";
    conf.accounts_dir = NULL;
    CHECK(px_acme_client_new(base, &conf, err, sizeof(err)) == NULL);
    event_base_free(base);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_acme_client.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    char ierr[256];
    if (px_acme_global_init(ierr, sizeof(ierr)) < 0) {
        fprintf(stderr, "%s\n", ierr);
        return 1;
    }
    UNIT_RUN(test_b64url_vectors);
    UNIT_RUN(test_b64url_rejects);
    UNIT_RUN(test_thumbprint);
    UNIT_RUN(test_jwk_round_trip);
    UNIT_RUN(test_jws);
    UNIT_RUN(test_csr);
    UNIT_RUN(test_key_pem);
    UNIT_RUN(test_directory);
    UNIT_RUN(test_order);
    UNIT_RUN(test_authz);
    UNIT_RUN(test_problem);
    UNIT_RUN(test_chain);
    UNIT_RUN(test_cert_check);
    UNIT_RUN(test_ari_cert_id);
    UNIT_RUN(test_renewal_info);
    UNIT_RUN(test_account_subdir);
    UNIT_RUN(test_account_files);
    UNIT_RUN(test_callbacks_later_and_once);
    UNIT_RUN(test_timeout);
    UNIT_RUN(test_client_new_errors);
    rm_rf(tmpdir);
    return unit_report();
}
