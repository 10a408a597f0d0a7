/* Per-thread size-class cache (px/mem.h). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "px/mem.h"

#if defined(__SANITIZE_ADDRESS__)
#define PX_MEM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PX_MEM_ASAN 1
#endif
#endif
#ifdef PX_MEM_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define MIN_SHIFT 6 /* 64 B */
#define NCLASS 12   /* .. 128 KiB (an upstream read's chain) */
#define BIG NCLASS  /* the class of a block malloc holds for us */
#define CLASS_SIZE(c) ((size_t)1 << ((c) + MIN_SHIFT))
/* how many blocks of class c a thread keeps: 64 up to 2 KiB, then 128 KiB
 * of a class, and at least 2 (one block in use and its successor) */
#define KEEP(c)                                                                                         \
    (CLASS_SIZE(c) <= 2048 ? 64u : CLASS_SIZE(c) >= 64 * 1024 ? 2u : (uint32_t)((128u * 1024u) / CLASS_SIZE(c)))

/* The header before each block: its class, and a BIG block's size or a
 * cached block's successor. The header is never poisoned; its 16 bytes keep
 * the block as aligned as malloc's. */
struct hdr {
    uint32_t cls;
    union {
        size_t size;
        struct hdr *next;
    } u;
};
_Static_assert(sizeof(struct hdr) == 16, "the header keeps malloc's 16-byte alignment");

struct cache {
    struct hdr *free[NCLASS];
    uint32_t n[NCLASS];
    int on; /* px_mem_thread_cache() ran in this thread (and its exit destructor is set) */
};

static _Thread_local struct cache cache;
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static int exit_key_ok;

static void drain(struct cache *c)
{
    for (int k = 0; k < NCLASS; k++) {
        while (c->free[k]) {
            struct hdr *h = c->free[k];
            c->free[k] = h->u.next;
            UNPOISON(h + 1, CLASS_SIZE(k));
            free(h);
        }
        c->n[k] = 0;
    }
}

static void on_thread_exit(void *arg)
{
    struct cache *c = arg;
    c->on = 0; /* a later free (another key's destructor) goes to malloc */
    drain(c);
}

static void make_exit_key(void)
{
    exit_key_ok = pthread_key_create(&exit_key, on_thread_exit) == 0;
}

static size_t cap_of(const struct hdr *h)
{
    return h->cls < NCLASS ? CLASS_SIZE(h->cls) : h->u.size;
}

static unsigned size_class(size_t size)
{
    if (size <= CLASS_SIZE(0))
        return 0;
    if (size > CLASS_SIZE(NCLASS - 1))
        return BIG;
    /* the smallest power of two >= size, as a shift */
    return (unsigned)(64 - __builtin_clzll((unsigned long long)(size - 1))) - MIN_SHIFT;
}

void *px_mem_alloc(size_t size)
{
    unsigned k = size_class(size);
    struct hdr *h;
    if (k < NCLASS && (h = cache.free[k]) != NULL) {
        cache.free[k] = h->u.next;
        cache.n[k]--;
        UNPOISON(h + 1, CLASS_SIZE(k));
        return h + 1;
    }
    size_t cap = k < NCLASS ? CLASS_SIZE(k) : size;
    if (cap > SIZE_MAX - sizeof(*h) || (h = malloc(sizeof(*h) + cap)) == NULL)
        return NULL;
    h->cls = k;
    h->u.size = cap;
    return h + 1;
}

void px_mem_free(void *p)
{
    if (p == NULL)
        return;
    struct hdr *h = (struct hdr *)p - 1;
    unsigned k = h->cls;
    if (k >= NCLASS || !cache.on || cache.n[k] >= KEEP(k)) {
        free(h);
        return;
    }
    h->u.next = cache.free[k];
    cache.free[k] = h;
    cache.n[k]++;
    POISON(p, CLASS_SIZE(k));
}

void *px_mem_realloc(void *p, size_t size)
{
    if (p == NULL)
        return px_mem_alloc(size);
    struct hdr *h = (struct hdr *)p - 1;
    size_t cap = cap_of(h);
    if (size <= cap)
        return p;
    if (h->cls == BIG && size_class(size) == BIG) {
        /* a large array growing (libevent's event maps): realloc may extend it in place */
        if (size > SIZE_MAX - sizeof(*h))
            return NULL;
        struct hdr *n = realloc(h, sizeof(*h) + size);
        if (n == NULL)
            return NULL;
        n->u.size = size;
        return n + 1;
    }
    void *n = px_mem_alloc(size);
    if (n == NULL)
        return NULL;
    memcpy(n, p, cap);
    px_mem_free(p);
    return n;
}

void px_mem_thread_cache(void)
{
    pthread_once(&exit_once, make_exit_key);
    /* without the destructor the cache could not go back at thread exit: keep none */
    if (exit_key_ok && pthread_setspecific(exit_key, &cache) == 0)
        cache.on = 1;
}

void px_mem_trim(void)
{
    drain(&cache);
}

void px_mem_init(void)
{
    event_set_mem_functions(px_mem_alloc, px_mem_realloc, px_mem_free);
}
