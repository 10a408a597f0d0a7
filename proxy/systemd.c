/* systemd.c -- sd_notify and socket activation (px/systemd.h), through
 * libsystemd, loaded only under systemd. libsystemd and what it pulls in
 * (libgcrypt, libgpg-error, liblzma, libzstd, liblz4, libcap) cost every
 * process ~1.3 MiB of relocated pages at start; a proxyd that systemd did
 * not start (a container, a test, the bench, a shell) needs none of it. So
 * nothing links -lsystemd: the four functions are looked up with dlsym the
 * first time NOTIFY_SOCKET or LISTEN_FDS is set, as libcurl is for ACME
 * (proxy/acme/libcurl.c). The headers still give their types. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "px/common.h"
#include "px/log.h"
#include "px/systemd.h"

#define LIBSYSTEMD "libsystemd.so.0"

static struct {
    int tried;
    __typeof__(sd_notify) *notify;
    __typeof__(sd_listen_fds) *listen_fds;
    __typeof__(sd_is_socket) *is_socket;
} sd;

/* The library, when the environment says systemd is there (main thread). */
static int load(void)
{
    static const struct px_dl_sym syms[] = {
        {"sd_notify", offsetof(__typeof__(sd), notify)},
        {"sd_listen_fds", offsetof(__typeof__(sd), listen_fds)},
        {"sd_is_socket", offsetof(__typeof__(sd), is_socket)},
    };
    char why[512];
    if (sd.tried)
        return sd.notify != NULL;
    sd.tried = 1;
    if (px_dl_load(LIBSYSTEMD, syms, PX_ARRAY_LEN(syms), &sd, sizeof(sd), why, sizeof(why)) < 0) {
        px_log_warn("systemd: %s: readiness and socket activation are off", why);
        return 0;
    }
    return 1;
}

__attribute__((format(printf, 1, 2)))
static void notify(const char *fmt, ...)
{
    if (getenv("NOTIFY_SOCKET") == NULL || !load())
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sd.notify(0, msg);
}

void px_systemd_ready(const char *status)
{
    notify("READY=1\nSTATUS=%s", status ? status : "serving");
}

void px_systemd_reloading(void)
{
    notify("RELOADING=1\nSTATUS=reloading the configuration");
}

void px_systemd_stopping(void)
{
    notify("STOPPING=1\nSTATUS=stopping: finishing in-flight requests");
}

void px_systemd_mainpid(int pid)
{
    notify("MAINPID=%d", pid);
}

static int take(int fd, char *err, size_t errlen)
{
    if (sd.is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0 ||
        (sd.is_socket(fd, AF_INET, SOCK_STREAM, 1) <= 0 && sd.is_socket(fd, AF_INET6, SOCK_STREAM, 1) <= 0)) {
        snprintf(err, errlen, "socket activation: descriptor %d is not a listening TCP socket "
                 "(the socket unit needs ListenStream= lines only)", fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        snprintf(err, errlen, "socket activation: descriptor %d: %s", fd, strerror(errno));
        return -1;
    }
    return 0;
}

int px_systemd_listen_fds(int want_http, int want_https, int *http_fd, int *https_fd, char *err, size_t errlen)
{
    *http_fd = *https_fd = -1;
    if (getenv("LISTEN_FDS") == NULL)
        return 0;
    if (!load()) {
        snprintf(err, errlen, "socket activation: LISTEN_FDS is set but %s cannot be loaded", LIBSYSTEMD);
        return -1;
    }
    int n = sd.listen_fds(1);
    if (n < 0) {
        snprintf(err, errlen, "socket activation: LISTEN_FDS: %s", strerror(-n));
        return -1;
    }
    if (n == 0)
        return 0;
    int want = (want_http != 0) + (want_https != 0);
    if (n != want) {
        snprintf(err, errlen, "socket activation: systemd passed %d socket%s, the config has %d listener%s "
                 "(listen_http and listen_https take them in ListenStream= order)",
                 n, n == 1 ? "" : "s", want, want == 1 ? "" : "s");
        return -1;
    }
    int fd = SD_LISTEN_FDS_START;
    if (want_http) {
        if (take(fd, err, errlen) < 0)
            return -1;
        *http_fd = fd++;
    }
    if (want_https) {
        if (take(fd, err, errlen) < 0)
            return -1;
        *https_fd = fd;
    }
    return n;
}
