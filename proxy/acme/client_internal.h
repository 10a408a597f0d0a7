/* client_internal.h -- the ACME protocol client's pieces, shared by its
 * files (client.c, account.c, http.c, jws.c, msg.c), its unit test and its
 * fuzz target. Not a public contract: px/acme.h is.
 *
 *   jws.c      base64url, the ES256 key as a JWK, RFC 7638 thumbprint,
 *              JWS (flattened JSON, raw r||s), key authorization, CSR
 *   msg.c      pure parsers of what the CA sends: directory, account,
 *              order, authorization, problem, renewalInfo, the PEM chain;
 *              the ARI certID
 *   account.c  certbot's accounts/SERVER/PATH/ID/ files
 *   http.c     libcurl's multi interface driven by libevent
 *
 * The parsers take bytes and a length (not NUL-terminated), allocate what
 * they return and never log: the fuzzer calls them directly. */
#ifndef PX_ACME_CLIENT_INTERNAL_H
#define PX_ACME_CLIENT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "px/acme.h"

/* ---- jws.c ---------------------------------------------------------- */

/* base64url without padding (RFC 4648 section 5, RFC 7515 section 2).
 * The encoder writes PX_ACME_B64URL_LEN(n) bytes (the NUL included: 44
 * for 32 bytes) into out and returns the length without the NUL, or
 * (size_t)-1 when outlen is too small. */
#define PX_ACME_B64URL_LEN(n) ((n) / 3 * 4 + ((n) % 3 ? (n) % 3 + 1 : 0) + 1)
size_t px_acme_b64url_encode(const void *in, size_t n, char *out, size_t outlen);
/* The same, allocated; NULL when out of memory. */
char *px_acme_b64url(const void *in, size_t n);
/* Strict decoder: only the url-safe alphabet, no padding, no whitespace,
 * unused trailing bits zero (so decode and encode are inverses). Returns
 * the number of bytes, or (size_t)-1 on bad input or a too small out. */
size_t px_acme_b64url_decode(const char *in, size_t n, unsigned char *out, size_t outlen);

/* A new ECDSA P-256 key (the account's and each certificate's). */
EVP_PKEY *px_acme_key_new(void);
/* {"crv":"P-256","kty":"EC","x":..,"y":..} plus "d" when with_private; NULL
 * when k is not a P-256 key (or out of memory). */
json_t *px_acme_jwk(EVP_PKEY *k, int with_private);
/* The key in a JWK with "d" (an EC P-256 private key, the public part
 * checked against it). NULL with a reason in err. */
EVP_PKEY *px_acme_jwk_key(const json_t *jwk, char *err, size_t errlen);
/* RFC 7638 thumbprint: base64url(SHA-256 of the canonical JWK), 43 chars
 * plus NUL. -1 when k is not P-256. */
int px_acme_thumbprint(EVP_PKEY *k, char out[44]);
/* token "." thumbprint (RFC 8555 section 8.1), allocated. */
char *px_acme_key_authorization(const char *token, const char *thumbprint);
/* ES256 over data: the raw 64-byte r||s (RFC 7518 section 3.4). */
int px_acme_es256_sign(EVP_PKEY *k, const void *data, size_t n, unsigned char sig[64]);
/* A flattened JWS (RFC 7515 section 7.2.2) as RFC 8555 section 6.2 wants
 * it: protected {alg ES256, nonce, url, and jwk when kid is NULL, else
 * kid}; payload "" for POST-as-GET. Allocated JSON text. */
char *px_acme_jws(EVP_PKEY *k, const char *kid, const char *nonce, const char *url, const char *payload);
/* A PKCS#10 CSR for names (subject CN = names[0] when it fits in 64
 * bytes, SAN = all names), signed SHA-256 with k; DER, allocated. */
unsigned char *px_acme_csr_der(EVP_PKEY *k, const char *const *names, size_t n, size_t *len);
/* The private key as PKCS#8 PEM text, allocated. */
char *px_acme_key_pem(EVP_PKEY *k);
/* The public key's DER (SubjectPublicKeyInfo) hashed with MD5, in hex:
 * certbot's account ID. 33 bytes with the NUL. */
int px_acme_key_id(EVP_PKEY *k, char out[33]);

/* ---- msg.c ---------------------------------------------------------- */

enum px_acme_status {
    PX_ACME_S_UNKNOWN = 0,
    PX_ACME_S_PENDING,
    PX_ACME_S_READY,
    PX_ACME_S_PROCESSING,
    PX_ACME_S_VALID,
    PX_ACME_S_INVALID,
    PX_ACME_S_DEACTIVATED,
    PX_ACME_S_EXPIRED,
    PX_ACME_S_REVOKED,
};
const char *px_acme_status_name(enum px_acme_status s);

/* RFC 8555 section 7.1.1. newNonce, newAccount and newOrder are required;
 * renewal_info (RFC 9773) may be NULL. */
struct px_acme_directory {
    char *new_nonce, *new_account, *new_order, *revoke_cert, *key_change;
    char *renewal_info;
    char *terms_of_service; /* meta.termsOfService, or NULL */
    int eab_required;       /* meta.externalAccountRequired */
};

struct px_acme_challenge {
    char *type, *url, *token;
    enum px_acme_status status;
    int has_error;
    struct px_acme_error error;
};

struct px_acme_authz {
    enum px_acme_status status;
    char *identifier; /* the DNS name */
    int wildcard;
    struct px_acme_challenge *challenges;
    size_t nchallenges;
};

struct px_acme_order {
    enum px_acme_status status;
    char **authorizations;
    size_t nauthorizations;
    char *finalize;
    char *certificate; /* once valid */
    int has_error;
    struct px_acme_error error;
};

/* Each parser: 0 and *out filled (clear it with the matching _clear), or
 * -1 with a reason in err and *out cleared. URLs must be http(s). */
int px_acme_directory_parse(const char *body, size_t len, struct px_acme_directory *out, char *err, size_t errlen);
void px_acme_directory_clear(struct px_acme_directory *d);
int px_acme_order_parse(const char *body, size_t len, struct px_acme_order *out, char *err, size_t errlen);
void px_acme_order_clear(struct px_acme_order *o);
int px_acme_authz_parse(const char *body, size_t len, struct px_acme_authz *out, char *err, size_t errlen);
void px_acme_authz_clear(struct px_acme_authz *a);
int px_acme_challenge_parse(const char *body, size_t len, struct px_acme_challenge *out, char *err, size_t errlen);
void px_acme_challenge_clear(struct px_acme_challenge *ch);
/* The account object's status (RFC 8555 section 7.1.2). */
int px_acme_account_parse(const char *body, size_t len, enum px_acme_status *status, char *err, size_t errlen);
/* The challenge of that type in a, or NULL. */
const struct px_acme_challenge *px_acme_authz_challenge(const struct px_acme_authz *a, const char *type);

/* An RFC 7807 problem document as px_acme_error: type without the
 * "urn:ietf:params:acme:error:" prefix, detail with the subproblems'
 * identifiers and details appended. 0, or -1 when body is not a problem
 * document (out then holds type "bad_response"). */
int px_acme_problem_parse(const char *body, size_t len, struct px_acme_error *out);
/* The same from a parsed JSON object (an order's or challenge's "error"). */
int px_acme_problem_from_json(const json_t *o, struct px_acme_error *out);
/* Fill e; detail is printf-like. */
void px_acme_error_set(struct px_acme_error *e, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A certificate chain as the CA sent it (application/pem-certificate-chain):
 * the leaf first, then the intermediates. */
struct px_acme_chain {
    char *cert_pem, *chain_pem, *fullchain_pem; /* re-encoded, NUL-terminated */
    size_t ncerts;
    time_t not_before, not_after; /* the leaf's */
};
int px_acme_chain_parse(const char *pem, size_t len, struct px_acme_chain *out, char *err, size_t errlen);
void px_acme_chain_clear(struct px_acme_chain *ch);

/* Is the leaf of cert_pem (the first certificate) what was ordered? Its
 * DNS subjectAltNames must cover every one of names[0..n) as a browser
 * matches them (case-insensitive; "*.example.com" covers one left-most
 * label; the subject CN is not looked at), and now must be inside its
 * validity: notBefore <= now + PX_ACME_CLOCK_SKEW_S, notAfter > now.
 * 0, or -1 with the reason in err ("it does not cover a.example, ..."). */
#define PX_ACME_CLOCK_SKEW_S 300
int px_acme_cert_check(const char *cert_pem, const char *const *names, size_t n, time_t now, char *err,
                       size_t errlen);

/* RFC 3339 date-time ("2025-01-02T03:04:05Z", fractions and offsets
 * allowed) as Unix seconds. 0 or -1. */
int px_acme_rfc3339(const char *s, time_t *out);
/* RFC 9773 renewalInfo: suggestedWindow.start/end. 0 or -1. */
int px_acme_renewal_info_parse(const char *body, size_t len, time_t *start, time_t *end, char *err, size_t errlen);
/* RFC 9773 section 4.1 certID of a PEM certificate: base64url(AKI
 * keyIdentifier) "." base64url(serial's DER content octets). Allocated;
 * NULL with a reason in err (no AKI keyIdentifier, not a certificate). */
char *px_acme_ari_cert_id(const char *pem, size_t len, char *err, size_t errlen);
/* Retry-After (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date,
 * as seconds from now (>= 0), or -1 when absent or unreadable. */
long px_acme_retry_after(const char *value, time_t now);

/* ---- account.c ------------------------------------------------------ */

/* accounts/SERVER/PATH for a directory URL, as certbot names it
 * (netloc + path: "acme-v02.api.letsencrypt.org/directory",
 * "127.0.0.1:14000/dir"). Allocated; NULL with a reason in err. */
char *px_acme_account_subdir(const char *directory_url, char *err, size_t errlen);

struct px_acme_account {
    EVP_PKEY *key;
    char *dir; /* accounts_dir/SERVER/PATH/ID */
    char *uri; /* regr.json's uri (the kid), or NULL */
};
/* Find a usable account (an EC P-256 key) under accounts_dir for the
 * directory URL: 1 found, 0 none, -1 unreadable (reason in err). RSA
 * accounts (certbot's) are skipped with a log line. */
int px_acme_account_load(const char *accounts_dir, const char *directory_url, struct px_acme_account *out, char *err,
                         size_t errlen);
/* Make accounts_dir/SERVER/PATH/ID/ (0700 each) for key and write
 * private_key.json (0600) and meta.json, atomically; fills out->dir. */
int px_acme_account_save_key(const char *accounts_dir, const char *directory_url, struct px_acme_account *acct,
                             char *err, size_t errlen);
/* Write regr.json {"body": body, "uri": uri} into acct->dir. */
int px_acme_account_save_regr(const struct px_acme_account *acct, const json_t *body, const char *uri, char *err,
                              size_t errlen);
void px_acme_account_clear(struct px_acme_account *a);
/* The account accounts_dir/SERVER/PATH/ID when it is usable, else
 * px_acme_account_load's choice (id NULL: that at once). */
int px_acme_account_load_id(const char *accounts_dir, const char *directory_url, const char *id,
                            struct px_acme_account *out, char *err, size_t errlen);
/* [acme] storage = redis: the account px_acme_account_load picks, as its
 * files' text (1, all four allocated), 0 when there is none or it is not
 * registered yet, -1 with a message. */
int px_acme_account_export(const char *accounts_dir, const char *directory_url, char **id, char **key_json,
                           char **regr, char **meta, char *err, size_t errlen);
/* Write an account taken from Redis as accounts_dir/SERVER/PATH/ID/ (when
 * its files differ; *changed says so). 0, or -1 with a message. */
int px_acme_account_import(const char *accounts_dir, const char *directory_url, const char *id, const char *key_json,
                           const char *regr, const char *meta, int *changed, char *err, size_t errlen);
/* Write text to path atomically (temp file, fsync, rename, fsync dir). */
int px_acme_write_file(const char *path, const char *text, int mode, char *err, size_t errlen);

/* ---- libcurl.c ------------------------------------------------------ */

/* libcurl is not linked: it is dlopen()ed (libcurl.so.4, RTLD_NOW |
 * RTLD_LOCAL) by the first px_acme_global_init, i.e. when ACME is first
 * enabled, and these functions are called through px_curl. The table is
 * written once, under a lock, before px_acme_global_init returns 0, and
 * never changes after: read it only after that. */
#define PX_CURL_FUNCTIONS(X)                                                                                           \
    X(global_init, curl_global_init)                                                                                   \
    X(version_info, curl_version_info)                                                                                 \
    X(easy_init, curl_easy_init)                                                                                       \
    X(easy_setopt, curl_easy_setopt)                                                                                   \
    X(easy_getinfo, curl_easy_getinfo)                                                                                 \
    X(easy_strerror, curl_easy_strerror)                                                                               \
    X(easy_cleanup, curl_easy_cleanup)                                                                                 \
    X(multi_init, curl_multi_init)                                                                                     \
    X(multi_setopt, curl_multi_setopt)                                                                                 \
    X(multi_add_handle, curl_multi_add_handle)                                                                         \
    X(multi_remove_handle, curl_multi_remove_handle)                                                                   \
    X(multi_socket_action, curl_multi_socket_action)                                                                   \
    X(multi_assign, curl_multi_assign)                                                                                 \
    X(multi_info_read, curl_multi_info_read)                                                                           \
    X(multi_cleanup, curl_multi_cleanup)                                                                               \
    X(slist_append, curl_slist_append)                                                                                 \
    X(slist_free_all, curl_slist_free_all)                                                                             \
    X(url, curl_url)                                                                                                   \
    X(url_set, curl_url_set)                                                                                           \
    X(url_get, curl_url_get)                                                                                           \
    X(url_cleanup, curl_url_cleanup)                                                                                   \
    X(free, curl_free)

struct px_curl {
#define PX_CURL_MEMBER(member, fn) __typeof__(&fn) member;
    PX_CURL_FUNCTIONS(PX_CURL_MEMBER)
#undef PX_CURL_MEMBER
};
extern struct px_curl px_curl;

/* ---- http.c --------------------------------------------------------- */

struct px_acme_http;
struct px_acme_http_req;

enum px_acme_method { PX_ACME_GET, PX_ACME_HEAD, PX_ACME_POST };

/* A finished exchange. Strings are NUL-terminated and valid during the
 * callback only; a header absent is NULL. */
struct px_acme_resp {
    long status;       /* 0 when the transfer failed */
    const char *error; /* why it failed (curl's words), when status == 0 */
    int timed_out;     /* the per-request timeout hit */
    const char *body;
    size_t body_len;
    const char *content_type, *location, *nonce, *retry_after;
};
typedef void (*px_acme_resp_fn)(void *arg, const struct px_acme_resp *r);

/* The transfer engine on base: one curl multi handle (connections reused
 * across requests). NULL with a message in err. */
struct px_acme_http *px_acme_http_new(struct event_base *base, const char *ca_bundle, char *err, size_t errlen);
/* Cancels what is in flight (no callbacks). */
void px_acme_http_free(struct px_acme_http *h);
/* Start a request; body (POST) is sent as application/jose+json; accept
 * may be NULL. fn is called once, later, unless cancelled. NULL when out
 * of memory. */
struct px_acme_http_req *px_acme_http_start(struct px_acme_http *h, enum px_acme_method m, const char *url,
                                            const char *body, const char *accept, px_acme_resp_fn fn, void *arg);
void px_acme_http_cancel(struct px_acme_http_req *r);

/* Per-request limits. */
#define PX_ACME_CONNECT_TIMEOUT_MS 10000
#define PX_ACME_REQUEST_TIMEOUT_MS 30000
#define PX_ACME_MAX_BODY (1u << 20)

#endif
