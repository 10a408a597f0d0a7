/* px/mem.h -- a per-thread cache of memory blocks by size class, for what
 * the data path takes from the heap and gives back on every request:
 * libevent's buffer chains (a client read, an upstream write and read, a
 * response head: four a request) and nghttp2's streams, frames and field
 * arrays. glibc's own per-thread cache stops at 1 KiB and 7 blocks a size;
 * past it every block went through _int_malloc/_int_free (this cache saves
 * about 180 instructions a pair, 700 a request on HTTP/1.1).
 *
 * Classes are powers of two from 64 B to 128 KiB (an upstream read's
 * chain); a thread keeps at most 64 blocks of a class up to 2 KiB, 128 KiB
 * of a class up to 32 KiB and 2 blocks of the two largest, so a thread holds
 * at most ~1.1 MiB it does not use (a worker gives it back on its tick once
 * it has no connection). Larger blocks go straight to malloc. Only threads
 * that ask for it keep a cache (the workers: px_mem_thread_cache); in the
 * others px_mem_free is free(). A block carries a 16-byte header (its
 * class); it may be freed by any thread and then joins that thread's cache,
 * if it has one. A thread's cache goes back to malloc when the thread ends
 * and on px_mem_trim(). Under AddressSanitizer a cached block is poisoned, so a
 * use after free still stops the test. A leaf: no px/ header. */
#ifndef PX_MEM_H
#define PX_MEM_H

#include <stddef.h>

/* Routes libevent's allocations through this cache. Call it first in main(),
 * before any libevent call: a block libevent took from malloc must not come
 * back here. Programs that never call it (proxyctl, tests, fuzzers) keep
 * libevent on malloc. */
void px_mem_init(void);

/* malloc, realloc and free semantics (NULL on failure; free(NULL) and
 * realloc(NULL, n) as libc's). Blocks from here go back only through
 * px_mem_free or px_mem_realloc, never free(). */
void *px_mem_alloc(size_t size);
void *px_mem_realloc(void *p, size_t size);
void px_mem_free(void *p);

/* The calling thread keeps the blocks it frees, from now until it ends (a
 * worker, first thing). */
void px_mem_thread_cache(void);

/* Gives the calling thread's cached blocks back to malloc (before a
 * malloc_trim, so that the pages they sit on can go too). */
void px_mem_trim(void);

#endif
