/* log.c -- error log and access-log sink.
 *
 * Both sinks are file descriptors opened O_APPEND; a line is written with a
 * single write(2), so lines from different threads never interleave. The
 * fds are swapped atomically on reopen; the old fd is closed after a grace
 * period of one reopen (a writer racing the swap may still hold it). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "px/log.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int error_fd = 2;
static _Atomic int access_fd = 1; /* -1 = off */
static char *error_path, *access_path;
static int retired_fds[2] = {-1, -1};
static enum px_log_level min_level = PX_LOG_INFO;

static int open_sink(const char *path, int dflt, char *err, size_t errlen)
{
    if (path == NULL || strcmp(path, "-") == 0)
        return dflt;
    if (strcmp(path, "off") == 0)
        return -1;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0 && err)
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return fd < 0 ? -2 : fd;
}

static void retire(int fd)
{
    /* Keep the previous generation open one more round: a thread that loaded
     * the fd just before the swap may still write to it. */
    if (retired_fds[0] > 2)
        close(retired_fds[0]);
    retired_fds[0] = retired_fds[1];
    retired_fds[1] = fd;
}

struct px_log_sinks {
    int efd, afd;             /* afd -1 = off */
    char *error_path, *access_path;
};

struct px_log_sinks *px_log_prepare(const char *error_log, const char *access_log, char *err, size_t errlen)
{
    struct px_log_sinks *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        if (err)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->efd = s->afd = -1;
    int efd = open_sink(error_log, 2, err, errlen);
    if (efd == -2 || efd == -1) {
        if (efd == -1 && err)
            snprintf(err, errlen, "error_log cannot be off");
        goto fail;
    }
    s->efd = efd;
    int afd = open_sink(access_log, 1, err, errlen);
    if (afd == -2)
        goto fail;
    s->afd = afd;
    if ((error_log && (s->error_path = strdup(error_log)) == NULL) ||
        (access_log && (s->access_path = strdup(access_log)) == NULL)) {
        if (err)
            snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return s;
fail:
    px_log_discard(s);
    return NULL;
}

void px_log_discard(struct px_log_sinks *s)
{
    if (s == NULL)
        return;
    if (s->efd > 2)
        close(s->efd);
    if (s->afd > 2)
        close(s->afd);
    free(s->error_path);
    free(s->access_path);
    free(s);
}

void px_log_commit(struct px_log_sinks *s)
{
    pthread_mutex_lock(&log_lock);
    free(error_path);
    free(access_path);
    error_path = s->error_path;
    access_path = s->access_path;
    retire(atomic_exchange(&error_fd, s->efd));
    retire(atomic_exchange(&access_fd, s->afd));
    pthread_mutex_unlock(&log_lock);
    free(s);
    const char *lvl = getenv("PROXYD_LOG_LEVEL");
    if (lvl && strcmp(lvl, "debug") == 0)
        min_level = PX_LOG_DEBUG;
}

int px_log_open(const char *error_log, const char *access_log, char *err, size_t errlen)
{
    struct px_log_sinks *s = px_log_prepare(error_log, access_log, err, errlen);
    if (s == NULL)
        return -1;
    px_log_commit(s);
    return 0;
}

void px_log_reopen(void)
{
    pthread_mutex_lock(&log_lock);
    char *e = error_path ? strdup(error_path) : NULL;
    char *a = access_path ? strdup(access_path) : NULL;
    pthread_mutex_unlock(&log_lock);
    char err[256];
    if (px_log_open(e, a, err, sizeof(err)) < 0)
        px_log_error("reopening logs: %s", err);
    free(e);
    free(a);
}

void px_log_close(void)
{
    pthread_mutex_lock(&log_lock);
    int efd = atomic_exchange(&error_fd, 2);
    int afd = atomic_exchange(&access_fd, 1);
    if (efd > 2)
        close(efd);
    if (afd > 2)
        close(afd);
    for (int i = 0; i < 2; i++) {
        if (retired_fds[i] > 2)
            close(retired_fds[i]);
        retired_fds[i] = -1;
    }
    free(error_path);
    free(access_path);
    error_path = access_path = NULL;
    pthread_mutex_unlock(&log_lock);
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void px_log(enum px_log_level lvl, const char *fmt, ...)
{
    if (lvl < min_level)
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(atomic_load(&error_fd), line, len);
    (void)w;
}

int px_log_access_enabled(void)
{
    return atomic_load_explicit(&access_fd, memory_order_relaxed) >= 0;
}

void px_log_access_write(const char *line, size_t len)
{
    int fd = atomic_load_explicit(&access_fd, memory_order_acquire);
    while (fd >= 0 && len > 0) {
        ssize_t w = write(fd, line, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        line += w;
        len -= (size_t)w;
    }
}
