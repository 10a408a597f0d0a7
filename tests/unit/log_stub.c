/* log_stub.c -- px/log.h for standalone unit-test and fuzz builds of the
 * config module (the Makefile links it into test_config only; everything
 * else links proxy/log.c). It defines every function of px/log.h, so the
 * archive's log.o is never pulled in beside it. Warnings are
 * counted and the last one kept, so a test can look at them; nothing is
 * printed unless PX_LOG_STUB_PRINT is set in the environment. */
#include <stdio.h>
#include <stdlib.h>

#include "px/log.h"

int px_log_stub_count(void);
const char *px_log_stub_last(void);

static int stub_count;
static char stub_last[512];

int px_log_stub_count(void)
{
    return stub_count;
}

const char *px_log_stub_last(void)
{
    return stub_last;
}

void px_log(enum px_log_level lvl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(stub_last, sizeof(stub_last), fmt, ap);
    va_end(ap);
    stub_count++;
    if (getenv("PX_LOG_STUB_PRINT"))
        fprintf(stderr, "log[%d]: %s\n", (int)lvl, stub_last);
}

int px_log_open(const char *error_log, const char *access_log, char *err, size_t errlen)
{
    (void)error_log;
    (void)access_log;
    if (err && errlen)
        err[0] = '\0';
    return 0;
}

struct px_log_sinks {
    int unused;
};

struct px_log_sinks *px_log_prepare(const char *error_log, const char *access_log, char *err, size_t errlen)
{
    static struct px_log_sinks one;
    (void)error_log;
    (void)access_log;
    if (err && errlen)
        err[0] = '\0';
    return &one;
}

void px_log_commit(struct px_log_sinks *s)
{
    (void)s;
}

void px_log_discard(struct px_log_sinks *s)
{
    (void)s;
}

void px_log_reopen(void)
{
}

void px_log_close(void)
{
}

int px_log_access_enabled(void)
{
    return 0;
}

void px_log_access_write(const char *line, size_t len)
{
    (void)line;
    (void)len;
}

void px_log_set_owner(uid_t uid, gid_t gid)
{
    (void)uid;
    (void)gid;
}
