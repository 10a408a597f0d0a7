/* Unit tests: the HTTP-01 token table (put, replace, remove, lookup bounds)
 * and its reclamation while readers on other threads look tokens up. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/challenge.c" /* the statics: current, hazards */
#include "unit.h"

static int lookup(int wid, const char *token, char *out)
{
    return px_challenge_lookup(wid, token, strlen(token), out, PX_CHALLENGE_KEYAUTH_MAX + 1);
}

static void test_put_lookup_remove(void)
{
    char out[PX_CHALLENGE_KEYAUTH_MAX + 1];
    CHECK_INT(px_challenge_count(), 0);
    CHECK_INT(lookup(0, "abc", out), -1);
    CHECK_INT(px_challenge_put("abc", "abc.thumb"), 0);
    CHECK_INT(px_challenge_put("d-E_f9", "d-E_f9.thumb2"), 0);
    CHECK_INT(px_challenge_count(), 2);
    CHECK_INT(lookup(0, "abc", out), 9);
    CHECK_STR(out, "abc.thumb");
    CHECK_INT(lookup(3, "d-E_f9", out), 13);
    CHECK_STR(out, "d-E_f9.thumb2");
    /* exact match only: no prefix, no case folding */
    CHECK_INT(lookup(0, "ab", out), -1);
    CHECK_INT(lookup(0, "ABC", out), -1);
    CHECK_INT(lookup(0, "abcd", out), -1);
    /* replace */
    CHECK_INT(px_challenge_put("abc", "abc.other"), 0);
    CHECK_INT(px_challenge_count(), 2);
    CHECK_INT(lookup(1, "abc", out), 9);
    CHECK_STR(out, "abc.other");
    CHECK_INT(px_challenge_remove("abc"), 1);
    CHECK_INT(px_challenge_remove("abc"), 0);
    CHECK_INT(lookup(0, "abc", out), -1);
    CHECK_INT(lookup(0, "d-E_f9", out), 13);
    CHECK_INT(px_challenge_remove("d-E_f9"), 1);
    CHECK_INT(px_challenge_count(), 0);
    CHECK_INT(px_challenge_reap(), 0);
    px_challenge_shutdown();
}

static void test_rejects_bad_input(void)
{
    char out[PX_CHALLENGE_KEYAUTH_MAX + 1], big[PX_CHALLENGE_TOKEN_MAX + 2], ka[PX_CHALLENGE_KEYAUTH_MAX + 2];
    CHECK_INT(px_challenge_put("", "x.y"), -1);
    CHECK_INT(px_challenge_put("a/b", "a.y"), -1);
    CHECK_INT(px_challenge_put("a.b", "a.y"), -1);
    CHECK_INT(px_challenge_put("ok", ""), -1);
    CHECK_INT(px_challenge_put("ok", "ok thumb"), -1);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_INT(px_challenge_put(big, "x.y"), -1);
    big[PX_CHALLENGE_TOKEN_MAX] = '\0';
    CHECK_INT(px_challenge_put(big, "x.y"), 0); /* exactly the maximum */
    memset(ka, 'k', sizeof(ka) - 1);
    ka[sizeof(ka) - 1] = '\0';
    CHECK_INT(px_challenge_put("ok", ka), -1);
    CHECK_INT(px_challenge_count(), 1);
    /* lookups of what no table could hold are refused before any load */
    CHECK_INT(px_challenge_lookup(0, "a/b", 3, out, sizeof(out)), -1);
    CHECK_INT(px_challenge_lookup(0, "", 0, out, sizeof(out)), -1);
    CHECK_INT(px_challenge_lookup(-1, big, strlen(big), out, sizeof(out)), -1);
    CHECK_INT(px_challenge_lookup(0, big, strlen(big), out, 2), -1); /* out too small */
    CHECK_INT(px_challenge_lookup(0, big, strlen(big), out, sizeof(out)), 3);
    px_challenge_shutdown();
    CHECK_INT(px_challenge_count(), 0);
}

static void test_hazard_holds_table(void)
{
    char out[PX_CHALLENGE_KEYAUTH_MAX + 1];
    CHECK_INT(px_challenge_put("t1", "t1.x"), 0);
    /* a reader announces the table it reads: simulate one caught mid-copy */
    struct table *held = atomic_load(&current);
    atomic_store(&hazards[5].t, held);
    CHECK_INT(px_challenge_put("t2", "t2.x"), 0);
    CHECK_INT(px_challenge_reap(), 1); /* the held one survives */
    CHECK_INT(px_challenge_put("t3", "t3.x"), 0);
    CHECK_INT(px_challenge_reap(), 1);
    atomic_store(&hazards[5].t, NULL);
    CHECK_INT(px_challenge_reap(), 0);
    CHECK_INT(lookup(5, "t1", out), 4);
    CHECK(atomic_load(&hazards[5].t) == NULL); /* cleared after the lookup */
    px_challenge_shutdown();
}

/* Readers on several threads while the main thread changes the table as
 * fast as it can: every answer is either "unknown" or the exact value put
 * for that token (ASan catches a read of a freed table). */
static atomic_int stop_readers;
static atomic_long answers;

static void *reader(void *arg)
{
    int wid = (int)(long)arg;
    char out[PX_CHALLENGE_KEYAUTH_MAX + 1], tok[16], want[64];
    long n = 0, bad = 0;
    while (!atomic_load(&stop_readers)) {
        for (int i = 0; i < 8; i++) {
            snprintf(tok, sizeof(tok), "tok%d", i);
            int r = lookup(wid, tok, out);
            if (r < 0)
                continue;
            snprintf(want, sizeof(want), "tok%d.%s", i, "key-authorization-of-this-token");
            if (strcmp(out, want) != 0 || r != (int)strlen(want))
                bad++;
            n++;
        }
    }
    atomic_fetch_add(&answers, bad ? -1000000000L : n);
    return NULL;
}

static void test_concurrent_readers(void)
{
    pthread_t th[4];
    atomic_store(&stop_readers, 0);
    atomic_store(&answers, 0);
    for (long i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, reader, (void *)i);
    char tok[16], ka[64];
    for (int round = 0; round < 20000; round++) {
        int i = round % 8;
        snprintf(tok, sizeof(tok), "tok%d", i);
        snprintf(ka, sizeof(ka), "tok%d.%s", i, "key-authorization-of-this-token");
        if (round % 3 == 2)
            px_challenge_remove(tok);
        else
            CHECK_INT(px_challenge_put(tok, ka), 0);
    }
    atomic_store(&stop_readers, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK(atomic_load(&answers) > 0);
    CHECK_INT(px_challenge_reap(), 0);
    px_challenge_shutdown();
}

/* A fake remote table: counts lookups and cancels, answers as told. */
static int remote_calls, remote_cancels, remote_answer;
static char remote_token[PX_CHALLENGE_TOKEN_MAX + 1];
static void *remote_arg;

static int fake_lookup(const char *token, size_t len, px_challenge_done_fn done, void *arg)
{
    remote_calls++;
    memcpy(remote_token, token, len);
    remote_token[len] = '\0';
    remote_arg = arg;
    (void)done;
    return remote_answer;
}

static void fake_cancel(void *arg)
{
    if (arg == remote_arg)
        remote_cancels++;
}

static const struct px_challenge_remote fake_remote = {fake_lookup, fake_cancel};

static int find_any(const char *token, char *out)
{
    return px_challenge_find(0, token, strlen(token), out, PX_CHALLENGE_KEYAUTH_MAX + 1, NULL, &remote_arg);
}

static void test_find_local_first_then_remote(void)
{
    char out[PX_CHALLENGE_KEYAUTH_MAX + 1];
    char big[PX_CHALLENGE_TOKEN_MAX + 2];
    /* no remote: the local table only */
    CHECK_INT(find_any("abc", out), -1);
    px_challenge_set_remote(&fake_remote);
    remote_answer = PX_CHALLENGE_LATER;
    /* absent locally: the remote is asked with the token (not the query) */
    CHECK_INT(px_challenge_find(0, "abc?x=1", 3, out, sizeof(out), NULL, &remote_arg), PX_CHALLENGE_LATER);
    CHECK_INT(remote_calls, 1);
    CHECK_STR(remote_token, "abc");
    px_challenge_cancel(&remote_arg);
    CHECK_INT(remote_cancels, 1);
    /* the local table wins: the remote is not asked */
    CHECK_INT(px_challenge_put("abc", "abc.local"), 0);
    CHECK_INT(find_any("abc", out), 9);
    CHECK_STR(out, "abc.local");
    CHECK_INT(remote_calls, 1);
    /* a malformed token never reaches the remote */
    CHECK_INT(find_any("a.b", out), -1);
    CHECK_INT(find_any("", out), -1);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_INT(find_any(big, out), -1);
    CHECK_INT(remote_calls, 1);
    /* a remote that is down answers absent at once */
    remote_answer = -1;
    CHECK_INT(find_any("other", out), -1);
    CHECK_INT(remote_calls, 2);
    px_challenge_set_remote(NULL);
    CHECK_INT(find_any("other", out), -1);
    CHECK_INT(remote_calls, 2);
    px_challenge_shutdown();
}

static void test_valid(void)
{
    char big[PX_CHALLENGE_KEYAUTH_MAX + 2];
    CHECK_INT(px_challenge_valid("tok", 3, "tok.thumb-_9", 12), 1);
    CHECK_INT(px_challenge_valid("tok", 3, "tok.", 4), 0);            /* no thumbprint */
    CHECK_INT(px_challenge_valid("tok", 3, "tok", 3), 0);
    CHECK_INT(px_challenge_valid("tok", 3, "tak.thumb", 9), 0);       /* another token's */
    CHECK_INT(px_challenge_valid("tok", 3, "tokX.thumb", 10), 0);
    CHECK_INT(px_challenge_valid("tok", 3, "tok.th umb", 10), 0);     /* not base64url */
    CHECK_INT(px_challenge_valid("tok", 3, "tok.th\numb", 10), 0);
    CHECK_INT(px_challenge_valid("tok", 3, "tok.th\0mb", 9), 0);
    CHECK_INT(px_challenge_valid("tok", 3, NULL, 0), 0);
    CHECK_INT(px_challenge_valid("t/k", 3, "t/k.thumb", 9), 0);
    memcpy(big, "tok.", 4);
    memset(big + 4, 'x', sizeof(big) - 4);
    CHECK_INT(px_challenge_valid("tok", 3, big, PX_CHALLENGE_KEYAUTH_MAX), 1);
    CHECK_INT(px_challenge_valid("tok", 3, big, PX_CHALLENGE_KEYAUTH_MAX + 1), 0);
}

int main(void)
{
    UNIT_RUN(test_find_local_first_then_remote);
    UNIT_RUN(test_valid);
    UNIT_RUN(test_put_lookup_remove);
    UNIT_RUN(test_rejects_bad_input);
    UNIT_RUN(test_hazard_holds_table);
    UNIT_RUN(test_concurrent_readers);
    return unit_report();
}
