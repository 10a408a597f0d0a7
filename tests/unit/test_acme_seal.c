/* test_acme_seal.c -- private keys sealed for Redis (proxy/acme/seal.c):
 * the round trip, the text form, a fresh nonce per seal, and every way a
 * value must refuse to open (a tampered byte, a wrong key, another key
 * name as AAD, junk) with an error, never bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/acme.h"
#include "unit.h"

static const char PEM[] = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
                          "-----END PRIVATE KEY-----\n";
static const char AAD[] = "proxyd:acme:cert:example.test";

static void key_of(unsigned char k[32], unsigned char fill)
{
    for (int i = 0; i < 32; i++)
        k[i] = (unsigned char)(fill + i);
}

static void test_round_trip(void)
{
    unsigned char k[32];
    char err[256] = "";
    size_t len = 0;
    key_of(k, 1);
    char *s = px_acme_seal(k, AAD, PEM, strlen(PEM));
    REQUIRE(s != NULL);
    CHECK(strncmp(s, "pxenc1:", 7) == 0);
    CHECK(strstr(s, "BEGIN") == NULL);
    /* 12-byte nonce + ciphertext + 16-byte tag, base64 */
    CHECK_INT(strlen(s), 7 + 4 * ((12 + strlen(PEM) + 16 + 2) / 3));
    char *p = px_acme_unseal(k, AAD, s, &len, err, sizeof(err));
    REQUIRE_ELSE(p != NULL, free(s));
    CHECK_INT(len, strlen(PEM));
    CHECK_STR(p, PEM);
    /* a new nonce each time: the same plaintext seals differently */
    char *s2 = px_acme_seal(k, AAD, PEM, strlen(PEM));
    CHECK(s2 != NULL && strcmp(s, s2) != 0);
    CHECK(s2 != NULL && strncmp(s + 7, s2 + 7, 16) != 0);
    /* empty plaintext works too */
    char *e = px_acme_seal(k, AAD, "", 0);
    char *pe = e ? px_acme_unseal(k, AAD, e, &len, err, sizeof(err)) : NULL;
    CHECK(pe != NULL && len == 0 && pe[0] == '\0');
    free(pe);
    free(e);
    free(s2);
    free(p);
    free(s);
}

static void test_tamper(void)
{
    unsigned char k[32];
    char err[256];
    size_t len = 0;
    key_of(k, 1);
    char *s = px_acme_seal(k, AAD, PEM, strlen(PEM));
    REQUIRE(s != NULL);
    /* flip one base64 character in the nonce, the ciphertext and the tag */
    size_t n = strlen(s);
    size_t at[] = {8, 7 + 16 + 10, n - 4};
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        char *t = strdup(s);
        REQUIRE_ELSE(t != NULL, free(s));
        t[at[i]] = t[at[i]] == 'A' ? 'B' : 'A';
        err[0] = '\0';
        char *p = px_acme_unseal(k, AAD, t, &len, err, sizeof(err));
        CHECK(p == NULL);
        CHECK(strstr(err, "does not decrypt") != NULL);
        free(p);
        free(t);
    }
    /* cut short */
    char *t = strdup(s);
    REQUIRE_ELSE(t != NULL, free(s));
    t[7 + 20] = '\0';
    char *p = px_acme_unseal(k, AAD, t, &len, err, sizeof(err));
    CHECK(p == NULL);
    CHECK(strstr(err, "too short") != NULL);
    free(p);
    free(t);
    free(s);
}

static void test_wrong_key_and_aad(void)
{
    unsigned char k[32], other[32];
    char err[256] = "";
    size_t len = 0;
    key_of(k, 1);
    key_of(other, 2);
    char *s = px_acme_seal(k, AAD, PEM, strlen(PEM));
    REQUIRE(s != NULL);
    char *p = px_acme_unseal(other, AAD, s, &len, err, sizeof(err));
    CHECK(p == NULL);
    CHECK(strstr(err, "secret_file") != NULL);
    free(p);
    err[0] = '\0';
    /* the same value under another key name */
    p = px_acme_unseal(k, "proxyd:acme:cert:other.test", s, &len, err, sizeof(err));
    CHECK(p == NULL);
    CHECK(strstr(err, "does not decrypt") != NULL);
    free(p);
    free(s);
}

static void test_junk(void)
{
    unsigned char k[32];
    char err[256] = "";
    size_t len = 0;
    key_of(k, 1);
    char *p = px_acme_unseal(k, AAD, PEM, &len, err, sizeof(err));
    CHECK(p == NULL);
    CHECK(strstr(err, "pxenc1:") != NULL);
    free(p);
    p = px_acme_unseal(k, AAD, "pxenc1:not base64!", &len, err, sizeof(err));
    CHECK(p == NULL);
    CHECK(strstr(err, "base64") != NULL);
    free(p);
    p = px_acme_unseal(k, AAD, "pxenc1:", &len, err, sizeof(err));
    CHECK(p == NULL);
    free(p);
}

int main(void)
{
    UNIT_RUN(test_round_trip);
    UNIT_RUN(test_tamper);
    UNIT_RUN(test_wrong_key_and_aad);
    UNIT_RUN(test_junk);
    return unit_report();
}
