/* log.c -- error log and access-log sink.
 *
 * Both sinks are file descriptors opened O_APPEND; a line is written with a
 * single write(2), so lines from different threads never interleave. The
 * fds are swapped atomically on reopen; the old fd is closed after a grace
 * period of one reopen (a writer racing the swap may still hold it).
 *
 * Files are opened as root before the privilege drop and kept open after
 * it, as nginx keeps its log fds: a file proxyd creates then is given to
 * the user (px_log_set_owner); a reload keeps the open fd of a path that
 * still names the same file (it need not be openable by the user), and
 * only a renamed or removed file is opened again. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "px/common.h"
#include "px/log.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int error_fd = 2;
static _Atomic int access_fd = 1; /* -1 = off */
static char *error_path, *access_path;
static int retired_fds[2] = {-1, -1};
static enum px_log_level min_level = PX_LOG_INFO;

static uid_t owner_uid = (uid_t)-1;
static gid_t owner_gid = (gid_t)-1;

void px_log_set_owner(uid_t uid, gid_t gid)
{
    owner_uid = uid;
    owner_gid = gid;
}

/* The fd now serving path (cur_path), dup'ed, when path still names the
 * file behind it; -1 otherwise. Main thread (the only one that swaps). */
static int reuse_fd(const char *path, const char *cur_path, int cur_fd)
{
    struct stat a, b;
    if (cur_fd <= 2 || cur_path == NULL || strcmp(path, cur_path) != 0)
        return -1;
    if (stat(path, &a) < 0 || fstat(cur_fd, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return -1;
    return fcntl(cur_fd, F_DUPFD_CLOEXEC, 3);
}

/* *created: 1 when this call made the file (so a discarded reload can
 * remove it again). */
static int open_sink(const char *path, int dflt, int reuse, int *created, char *err, size_t errlen)
{
    *created = 0;
    if (path == NULL || strcmp(path, "-") == 0)
        return dflt;
    if (strcmp(path, "off") == 0)
        return -1;
    if (reuse) {
        pthread_mutex_lock(&log_lock);
        int fd = dflt == 2 ? reuse_fd(path, error_path, atomic_load(&error_fd))
                           : reuse_fd(path, access_path, atomic_load(&access_fd));
        pthread_mutex_unlock(&log_lock);
        if (fd >= 0)
            return fd;
    }
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 3; tries++) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (fd >= 0) {
            *created = 1;
            if (owner_uid != (uid_t)-1 && fchown(fd, owner_uid, owner_gid) < 0)
                px_log_warn("%s: chown: %s", path, strerror(errno));
        } else if (errno == EEXIST) {
            fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
            if (fd < 0 && errno != ENOENT) /* ENOENT: removed in between, create it */
                break;
        } else {
            break;
        }
    }
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
    int ecreated, acreated;   /* the file was made for these sinks */
    char *error_path, *access_path;
};

static struct px_log_sinks *prepare(const char *error_log, const char *access_log, int reuse, char *err,
                                    size_t errlen)
{
    struct px_log_sinks *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        if (err)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->efd = s->afd = -1;
    /* the paths first: a failure below removes a file it made by them */
    if ((error_log && (s->error_path = strdup(error_log)) == NULL) ||
        (access_log && (s->access_path = strdup(access_log)) == NULL)) {
        if (err)
            snprintf(err, errlen, "out of memory");
        goto fail;
    }
    int efd = open_sink(error_log, 2, reuse, &s->ecreated, err, errlen);
    if (efd == -2 || efd == -1) {
        if (efd == -1 && err)
            snprintf(err, errlen, "error_log cannot be off");
        goto fail;
    }
    s->efd = efd;
    int afd = open_sink(access_log, 1, reuse, &s->acreated, err, errlen);
    if (afd == -2)
        goto fail;
    s->afd = afd;
    return s;
fail:
    px_log_discard(s);
    return NULL;
}

struct px_log_sinks *px_log_prepare(const char *error_log, const char *access_log, char *err, size_t errlen)
{
    return prepare(error_log, access_log, 1, err, errlen);
}

void px_log_discard(struct px_log_sinks *s)
{
    if (s == NULL)
        return;
    if (s->efd > 2)
        close(s->efd);
    if (s->afd > 2)
        close(s->afd);
    /* a failed reload leaves no empty file behind */
    if (s->ecreated && s->error_path)
        unlink(s->error_path);
    if (s->acreated && s->access_path)
        unlink(s->access_path);
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
    struct px_log_sinks *s = prepare(e, a, 0, err, sizeof(err)); /* rotation: always the path's file now */
    if (s == NULL)
        px_log_error("reopening logs: %s", err);
    else
        px_log_commit(s);
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

static const char *const level_names[] = {"debug", "info", "notice", "warn", "error"};

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

/* A failing access log (a full disk) is reported, as nginx does, but at
 * most once per PX_LOG_FAIL_REPORT_MS, by whichever thread writes when the
 * period is over: one error-log line with the file, the errno and the lines
 * lost since the last report; and one when a write works again. */
static _Atomic uint64_t access_lost;        /* lines lost since the last report */
static _Atomic int access_failing;          /* a failure was reported, no success since */
static _Atomic uint64_t access_next_report; /* px_now_ms() before which nothing is said */

static void access_path_copy(char *buf, size_t len)
{
    pthread_mutex_lock(&log_lock);
    snprintf(buf, len, "%s", access_path ? access_path : "-");
    pthread_mutex_unlock(&log_lock);
}

/* e: the errno; rest, len: what was not written (whole lines but the
 * first, which may have gone out in part: lost all the same). */
static void access_failed(int e, const char *rest, size_t len)
{
    uint64_t lines = 0;
    for (const char *p = rest, *end = rest + len; p < end && (p = memchr(p, '\n', (size_t)(end - p))); p++)
        lines++;
    atomic_fetch_add(&access_lost, lines ? lines : 1);
    uint64_t now = px_now_ms(), next = atomic_load(&access_next_report);
    if (now < next || !atomic_compare_exchange_strong(&access_next_report, &next, now + PX_LOG_FAIL_REPORT_MS))
        return; /* said recently, or another thread says it now */
    atomic_store(&access_failing, 1);
    char path[512];
    access_path_copy(path, sizeof(path));
    px_log_error("access_log %s: write failed: %s (%llu line(s) lost since the last report; next report in %d s "
                 "at most)",
                 path, strerror(e), (unsigned long long)atomic_exchange(&access_lost, 0),
                 PX_LOG_FAIL_REPORT_MS / 1000);
}

static void access_recovered(void)
{
    if (!atomic_exchange(&access_failing, 0))
        return;
    char path[512];
    access_path_copy(path, sizeof(path));
    px_log_info("access_log %s: writing again (%llu line(s) lost since the last report)", path,
                (unsigned long long)atomic_exchange(&access_lost, 0));
}

void px_log_access_write(const char *line, size_t len)
{
    int fd = atomic_load_explicit(&access_fd, memory_order_acquire);
    if (fd < 0)
        return;
    while (len > 0) {
        ssize_t w = write(fd, line, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            access_failed(errno, line, len);
            return;
        }
        line += w;
        len -= (size_t)w;
    }
    if (atomic_load_explicit(&access_failing, memory_order_relaxed))
        access_recovered();
}
