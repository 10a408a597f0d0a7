/* px/common.h -- small shared types and helpers (no module state). */
#ifndef PX_COMMON_H
#define PX_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PX_VERSION "0.1.0"

/* The most worker threads a process runs: per-worker slots (snapshot pins,
 * target load, challenge hazards) are sized by it. */
#define PX_MAX_WORKERS 64

#define PX_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define PX_UNUSED(x) ((void)(x))
#define PX_LIKELY(x) __builtin_expect(!!(x), 1)
#define PX_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A borrowed byte range; never NUL-terminated unless said otherwise. */
struct px_slice {
    const char *p;
    size_t n;
};

/* ASCII case-insensitive equality of a slice and a NUL-terminated lowercase
 * literal (the literal must already be lowercase). */
static inline int px_slice_ieq(const char *p, size_t n, const char *lower, size_t lower_n)
{
    if (n != lower_n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}
#define PX_IEQ_LIT(p, n, lit) px_slice_ieq((p), (n), lit, sizeof(lit) - 1)

/* Copy n bytes lowercasing ASCII letters (HTTP/2 field names). */
static inline void px_lower_copy(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        dst[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
}

/* Monotonic clock in milliseconds / microseconds. */
uint64_t px_now_ms(void);
uint64_t px_now_us(void);
/* Wall clock in milliseconds since the Unix epoch. */
uint64_t px_wall_ms(void);

/* A string vector: a copy of v[0..n) (n = 0 gives an empty, non-NULL
 * vector), NULL when out of memory; and its free (NULL is fine). */
char **px_strv_dup(const char *const *v, size_t n);
void px_strv_free(char **v, size_t n);
/* Why path cannot be read by this process, for an error message: after an
 * open failed with errno e, writes "Permission denied (mode 0600, owner
 * root:root; proxyd runs as nobody)" when e is EACCES (what an operator who
 * set `user =` needs to see), else strerror(e). Returns buf. */
const char *px_open_error(const char *path, int e, char *buf, size_t n);

/* A library loaded only when a feature needs it (libcurl for ACME,
 * libsystemd under systemd): dlopen lib and resolve every syms[i].name into
 * the function pointer at (char *)dst + syms[i].off, all or none (dst is
 * untouched on failure). 0 (the handle stays open for the life of the
 * process), or -1 with "LIB cannot be loaded (WHY)" or "LIB has no NAME". */
struct px_dl_sym {
    const char *name;
    size_t off;
};
int px_dl_load(const char *lib, const struct px_dl_sym *syms, size_t n, void *dst, size_t dst_size, char *err,
               size_t errlen);

#endif
