/* Unit tests: the per-thread size-class cache (proxy/mem.c) -- a freed
 * block comes back for the next allocation of its class, with the size it
 * promised; a class keeps at most its bound; realloc keeps the contents; a
 * thread's cache goes back to malloc when the thread ends; libevent's
 * buffer chains come from the cache once px_mem_init() ran. */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "../../proxy/mem.c"
#include "unit.h"

static void test_freed_block_comes_back(void)
{
    static const size_t sizes[] = {1, 64, 65, 200, 1000, 1024, 1025, 4096, 16384, 16385, 32768, 131072};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        unsigned char *p = px_mem_alloc(sizes[i]);
        REQUIRE(p != NULL);
        CHECK_INT((uintptr_t)p % 16, 0);
        memset(p, 0xab, sizes[i]); /* all of it is ours (ASan would say otherwise) */
        unsigned k = size_class(sizes[i]);
        CHECK(k < NCLASS);
        CHECK(CLASS_SIZE(k) >= sizes[i]);
        CHECK(k == 0 || CLASS_SIZE(k - 1) < sizes[i]);
        uint32_t before = cache.n[k];
        px_mem_free(p);
        CHECK_INT(cache.n[k], before + 1);
#ifdef PX_MEM_ASAN
        CHECK(__asan_address_is_poisoned(p));
#endif
        unsigned char *q = px_mem_alloc(sizes[i]);
        CHECK(q == p);
        CHECK_INT(cache.n[k], before);
        px_mem_free(q);
    }
    px_mem_trim();
    for (int k = 0; k < NCLASS; k++)
        CHECK(cache.free[k] == NULL && cache.n[k] == 0);
}

static void test_large_blocks_bypass(void)
{
    unsigned char *p = px_mem_alloc(131073);
    REQUIRE(p != NULL);
    CHECK_INT(((struct hdr *)p - 1)->cls, BIG);
    memset(p, 1, 131073);
    px_mem_free(p);
    for (int k = 0; k < NCLASS; k++)
        CHECK_INT(cache.n[k], 0);
}

static void test_class_bound(void)
{
    void *blocks[200];
    for (int k = 0; k < NCLASS; k++) {
        uint32_t keep = KEEP(k);
        REQUIRE(keep >= 2 && keep <= 64 && (keep == 2 || keep * CLASS_SIZE(k) <= 128 * 1024));
        int n = (int)keep + 10;
        for (int i = 0; i < n; i++)
            REQUIRE((blocks[i] = px_mem_alloc(CLASS_SIZE(k))) != NULL);
        for (int i = 0; i < n; i++)
            px_mem_free(blocks[i]);
        CHECK_INT(cache.n[k], keep);
    }
    px_mem_trim();
}

static void test_realloc_keeps_contents(void)
{
    unsigned char *p = px_mem_realloc(NULL, 100);
    REQUIRE(p != NULL);
    for (int i = 0; i < 100; i++)
        p[i] = (unsigned char)i;
    CHECK(px_mem_realloc(p, 128) == p); /* within its class: in place */
    unsigned char *q = px_mem_realloc(p, 5000);
    REQUIRE(q != NULL);
    int same = 1;
    for (int i = 0; i < 100; i++)
        same &= q[i] == (unsigned char)i;
    CHECK(same);
    unsigned char *r = px_mem_realloc(q, 200000); /* to a large block */
    REQUIRE(r != NULL);
    unsigned char *s = px_mem_realloc(r, 300000); /* large to large: realloc */
    REQUIRE(s != NULL);
    same = 1;
    for (int i = 0; i < 100; i++)
        same &= s[i] == (unsigned char)i;
    CHECK(same);
    s[299999] = 1;
    px_mem_free(s);
    px_mem_trim();
}

static void *churn(void *arg)
{
    if (arg != NULL)
        px_mem_thread_cache();
    void *blocks[64];
    for (int k = 0; k < NCLASS; k++) {
        for (int i = 0; i < 4; i++)
            blocks[i] = px_mem_alloc(CLASS_SIZE(k));
        for (int i = 0; i < 4; i++)
            px_mem_free(blocks[i]);
    }
    return (void *)(uintptr_t)cache.n[NCLASS - 3]; /* 32 KiB: keeps 4 */
}

static void test_thread_exit_gives_cache_back(void)
{
    /* each thread caches 2 to 4 blocks of every class (~0.6 MiB); none may
     * stay after it ends. (Under ASan, LeakSanitizer checks the same at exit.) */
    struct mallinfo2 a = mallinfo2();
    for (int t = 0; t < 8; t++) {
        pthread_t th;
        void *cached = NULL;
        REQUIRE(pthread_create(&th, NULL, churn, (void *)1) == 0); /* non-NULL: a caching thread */
        pthread_join(th, &cached);
        CHECK_INT((uintptr_t)cached, 4);
    }
    struct mallinfo2 b = mallinfo2();
#ifndef PX_MEM_ASAN
    CHECK(b.uordblks < a.uordblks + 64 * 1024); /* 8 threads' caches would be ~5 MiB */
#else
    (void)a, (void)b;
#endif
}

static void test_only_caching_threads_keep_blocks(void)
{
    /* a thread that did not ask (the main thread's control plane, ACME)
     * hands every block straight back */
    pthread_t th;
    void *cached = (void *)1;
    REQUIRE(pthread_create(&th, NULL, churn, NULL) == 0);
    pthread_join(th, &cached);
    CHECK_INT((uintptr_t)cached, 0);
}

static void test_libevent_chains_from_the_cache(void)
{
    struct evbuffer *b = evbuffer_new();
    REQUIRE(b != NULL);
    REQUIRE(evbuffer_add(b, "hello", 5) == 0);
    struct evbuffer_iovec v;
    REQUIRE(evbuffer_peek(b, -1, NULL, &v, 1) == 1);
    void *chain_data = v.iov_base;
    evbuffer_drain(b, 5); /* the chain goes back to the cache ... */
    uint32_t cached = 0;
    for (int k = 0; k < NCLASS; k++)
        cached += cache.n[k];
    CHECK(cached >= 1);
    REQUIRE(evbuffer_add(b, "again", 5) == 0); /* ... and is the next one */
    REQUIRE(evbuffer_peek(b, -1, NULL, &v, 1) == 1);
    CHECK(v.iov_base == chain_data);
    evbuffer_free(b);
    px_mem_trim();
}

int main(void)
{
    px_mem_init(); /* before any libevent call, as proxyd's main() */
    px_mem_thread_cache(); /* this thread plays a worker */
    UNIT_RUN(test_freed_block_comes_back);
    UNIT_RUN(test_large_blocks_bypass);
    UNIT_RUN(test_class_bound);
    UNIT_RUN(test_realloc_keeps_contents);
    UNIT_RUN(test_thread_exit_gives_cache_back);
    UNIT_RUN(test_only_caching_threads_keep_blocks);
    UNIT_RUN(test_libevent_chains_from_the_cache);
    px_mem_trim();
    return unit_report();
}
