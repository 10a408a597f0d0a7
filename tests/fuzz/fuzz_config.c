/* fuzz_config.c -- libFuzzer target for the config loader and its value
 * parsers. Any input must load or fail cleanly: no crash, no leak, no UB.
 *
 *   clang -fsanitize=fuzzer,address,undefined ... tests/fuzz/fuzz_config.c
 *   ./fuzz_config tests/fuzz/corpus/config
 *
 * Host names in targets/listeners would make the loader ask DNS; a fuzzer
 * must be fast and offline, so this file replaces getaddrinfo() with a
 * resolver that knows numeric addresses and "localhost" only (the
 * executable's definition takes precedence over libc's). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "px/addr.h"
#include "px/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fake_ai {
    struct addrinfo ai;
    struct sockaddr_storage ss;
};

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    struct fake_ai *f;
    int family = hints ? hints->ai_family : AF_UNSPEC;
    unsigned long port = service ? strtoul(service, NULL, 10) : 0;
    uint8_t a[16];

    if (node == NULL || port > 65535)
        return EAI_NONAME;
    if (strcmp(node, "localhost") == 0)
        node = "127.0.0.1";
    if ((f = calloc(1, sizeof(*f))) == NULL)
        return EAI_MEMORY;
    if (family != AF_INET6 && inet_pton(AF_INET, node, a) == 1) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&f->ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        memcpy(&sin->sin_addr, a, 4);
        f->ai.ai_family = AF_INET;
        f->ai.ai_addrlen = sizeof(*sin);
    } else if (family != AF_INET && inet_pton(AF_INET6, node, a) == 1) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&f->ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        memcpy(&sin6->sin6_addr, a, 16);
        f->ai.ai_family = AF_INET6;
        f->ai.ai_addrlen = sizeof(*sin6);
    } else {
        free(f);
        return EAI_NONAME;
    }
    f->ai.ai_socktype = SOCK_STREAM;
    f->ai.ai_addr = (struct sockaddr *)&f->ss;
    *res = &f->ai;
    return 0;
}

void freeaddrinfo(struct addrinfo *ai)
{
    free(ai); /* always a struct fake_ai, whose first member it is */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct px_config *cfg = NULL;
    char err[512], *text;

    if (size > 64 * 1024)
        return 0;
    if ((text = malloc(size + 1)) == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    if (px_config_load_string(text, "fuzz.ini", &cfg, err, sizeof(err)) == 0)
        px_config_free(cfg);

    /* The value parsers on their own, for short inputs. */
    if (size < 128) {
        uint64_t u;
        int b;
        struct px_cidr c;
        struct px_addr a;
        px_parse_duration_ms(text, &u);
        px_parse_size(text, &u);
        px_parse_bool(text, &b);
        px_parse_rate(text, &u);
        px_cidr_parse(text, &c);
        px_addr_parse(text, &a);
        px_cidr_match_text(&c, 0, text, strlen(text));
        if (px_cidr_parse("10.0.0.0/8", &c) == NULL)
            px_cidr_match_text(&c, 1, text, size);
    }
    free(text);
    return 0;
}
