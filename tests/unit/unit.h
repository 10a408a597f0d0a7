/* unit.h -- the unit-test convention: each tests/unit/test_*.c is one
 * binary; main() calls UNIT_RUN(fn) for every test and returns
 * unit_report(). Output is one line per test, "ok - NAME" or
 * "not ok - NAME: FILE:LINE: EXPR", read by tests/run.py. A test may
 * include a proxy/ .c file directly to reach its statics.
 *
 * CHECK* records the first failure and goes on. REQUIRE* is for setup the
 * rest of the test depends on (a config that loads, a zone that exists): it
 * fails the test ("not ok - NAME: REQUIRE failed: EXPR (FILE:LINE)") and
 * returns from it, so a test can never pass by returning early. Use it in
 * the test function itself (it returns void); never write a bare
 * `if (!x) return;` in a test. */
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

/* After an earlier CHECK failed, keep its message first: it usually says
 * why the setup failed. */
static inline void unit_require_failed(const char *expr, const char *file, int line)
{
    size_t n = unit_failed_now ? strlen(unit_msg) : 0;
    snprintf(unit_msg + n, sizeof(unit_msg) - n, "%sREQUIRE failed: %s (%s:%d)", n ? "; then " : "", expr,
             file, line);
    unit_failed_now = 1;
}

#define REQUIRE(cond)                                                                  \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            unit_require_failed(#cond, __FILE__, __LINE__);                            \
            return;                                                                    \
        }                                                                              \
    } while (0)

/* REQUIRE, running cleanup (one expression or call) before the return. */
#define REQUIRE_ELSE(cond, cleanup)                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            unit_require_failed(#cond, __FILE__, __LINE__);                            \
            cleanup;                                                                   \
            return;                                                                    \
        }                                                                              \
    } while (0)

/* REQUIRE that a setup call returned 0 (the usual int-returning helper). */
#define REQUIRE_OK(expr)                                                               \
    do {                                                                               \
        long long ur_ = (long long)(expr);                                             \
        if (ur_ != 0) {                                                                \
            char ue_[256];                                                             \
            snprintf(ue_, sizeof(ue_), "%s == 0 (got %lld)", #expr, ur_);              \
            unit_require_failed(ue_, __FILE__, __LINE__);                              \
            return;                                                                    \
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
