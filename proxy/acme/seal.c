/* seal.c -- AES-256-GCM for private keys kept in Redis (see px/acme.h). */
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "px/acme.h"

#define NONCE_LEN 12
#define TAG_LEN 16
#define PREFIX_LEN (sizeof(PX_ACME_SEAL_PREFIX) - 1)

char *px_acme_seal(const unsigned char key[32], const char *aad, const void *plain, size_t len)
{
    size_t raw_len = NONCE_LEN + len + TAG_LEN;
    unsigned char *raw = malloc(raw_len);
    char *out = malloc(PREFIX_LEN + 4 * ((raw_len + 2) / 3) + 1);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, ok = 0;
    if (raw == NULL || out == NULL || ctx == NULL || len > INT32_MAX)
        goto out;
    if (RAND_bytes(raw, NONCE_LEN) != 1 || EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_EncryptInit_ex(ctx, NULL, NULL, key, raw) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        EVP_EncryptUpdate(ctx, raw + NONCE_LEN, &n, plain, (int)len) != 1 ||
        EVP_EncryptFinal_ex(ctx, raw + NONCE_LEN + n, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, raw + NONCE_LEN + len) != 1)
        goto out;
    memcpy(out, PX_ACME_SEAL_PREFIX, PREFIX_LEN);
    EVP_EncodeBlock((unsigned char *)out + PREFIX_LEN, raw, (int)raw_len);
    ok = 1;
out:
    EVP_CIPHER_CTX_free(ctx);
    if (raw)
        OPENSSL_cleanse(raw, raw_len);
    free(raw);
    if (!ok) {
        free(out);
        out = NULL;
    }
    return out;
}

char *px_acme_unseal(const unsigned char key[32], const char *aad, const char *text, size_t *len, char *err,
                     size_t errlen)
{
    unsigned char *raw = NULL, *plain = NULL;
    EVP_CIPHER_CTX *ctx = NULL;
    size_t tlen, raw_len = 0;
    int n = 0, ok = 0;
    if (strncmp(text, PX_ACME_SEAL_PREFIX, PREFIX_LEN) != 0) {
        snprintf(err, errlen, "not a sealed value (no \"%s\" prefix)", PX_ACME_SEAL_PREFIX);
        return NULL;
    }
    text += PREFIX_LEN;
    tlen = strlen(text);
    if (tlen == 0 || tlen % 4 != 0 || tlen > INT32_MAX) {
        snprintf(err, errlen, "a sealed value that is not base64");
        return NULL;
    }
    if ((raw = malloc(tlen / 4 * 3 + 1)) == NULL || (ctx = EVP_CIPHER_CTX_new()) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    int dl = EVP_DecodeBlock(raw, (const unsigned char *)text, (int)tlen);
    if (dl < 0) {
        snprintf(err, errlen, "a sealed value that is not base64");
        goto out;
    }
    raw_len = (size_t)dl; /* EVP_DecodeBlock counts the '=' padding as zero bytes */
    if (tlen >= 1 && text[tlen - 1] == '=')
        raw_len--;
    if (tlen >= 2 && text[tlen - 2] == '=')
        raw_len--;
    if (raw_len < NONCE_LEN + TAG_LEN) {
        snprintf(err, errlen, "a sealed value too short to hold a nonce and a tag");
        goto out;
    }
    size_t clen = raw_len - NONCE_LEN - TAG_LEN;
    if ((plain = malloc(clen + 1)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, key, raw) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        EVP_DecryptUpdate(ctx, plain, &n, raw + NONCE_LEN, (int)clen) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, raw + NONCE_LEN + clen) != 1 ||
        EVP_DecryptFinal_ex(ctx, plain + n, &n) != 1) {
        snprintf(err, errlen, "it does not decrypt: a different secret_file, or a value altered or copied from "
                              "another key");
        goto out;
    }
    plain[clen] = '\0';
    *len = clen;
    ok = 1;
out:
    EVP_CIPHER_CTX_free(ctx);
    free(raw);
    if (!ok && plain) {
        OPENSSL_cleanse(plain, raw_len - NONCE_LEN - TAG_LEN);
        free(plain);
        plain = NULL;
    }
    return (char *)plain;
}
