/* unit.h -- the unit-test convention: each tests/unit/test_*.c is one
 * binary; main() calls UNIT_RUN(fn) for every test and returns
 * unit_report(). Output is one line per test, "ok - NAME" or
 * "not ok - NAME: FILE:LINE: EXPR", read by tests/run.py. A test may
 * include a proxy/ .c file directly to reach its statics. */
#ifndef PX_UNIT_H
#define PX_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_failed_now, unit_pass, unit_fail;
static char unit_msg[512];

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond) && !unit_failed_now) {                                             \
            unit_failed_now = 1;                                                       \
            snprintf(unit_msg, sizeof(unit_msg), "%s:%d: %s", __FILE__, __LINE__, #cond); \
        }                                                                              \
    } while (0)

#define CHECK_INT(a, b)                                                                \
    do {                                                                               \
        long long ua_ = (long long)(a), ub_ = (long long)(b);                          \
        if (ua_ != ub_ && !unit_failed_now) {                                          \
            unit_failed_now = 1;                                                       \
            snprintf(unit_msg, sizeof(unit_msg), "%s:%d: %s == %s (%lld != %lld)",     \
                     __FILE__, __LINE__, #a, #b, ua_, ub_);                            \
        }                                                                              \
    } while (0)

#define CHECK_STR(a, b)                                                                \
    do {                                                                               \
        const char *sa_ = (a), *sb_ = (b);                                             \
        if ((sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0) && !unit_failed_now) { \
            unit_failed_now = 1;                                                       \
            snprintf(unit_msg, sizeof(unit_msg), "%s:%d: %s == \"%s\" (got \"%s\")",   \
                     __FILE__, __LINE__, #a, sb_ ? sb_ : "(null)", sa_ ? sa_ : "(null)"); \
        }                                                                              \
    } while (0)

#define UNIT_RUN(fn)                                                                   \
    do {                                                                               \
        unit_failed_now = 0;                                                           \
        fn();                                                                          \
        if (unit_failed_now) {                                                         \
            unit_fail++;                                                               \
            printf("not ok - %s: %s\n", #fn, unit_msg);                                \
        } else {                                                                       \
            unit_pass++;                                                               \
            printf("ok - %s\n", #fn);                                                  \
        }                                                                              \
        fflush(stdout);                                                                \
    } while (0)

static inline int unit_report(void)
{
    return unit_fail ? 1 : 0;
}

#endif
