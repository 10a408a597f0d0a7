/* systemd.c -- sd_notify and socket activation (px/systemd.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "px/systemd.h"

void px_systemd_ready(const char *status)
{
    sd_notifyf(0, "READY=1\nSTATUS=%s", status ? status : "serving");
}

void px_systemd_reloading(void)
{
    sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
}

void px_systemd_stopping(void)
{
    sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing in-flight requests");
}

void px_systemd_mainpid(int pid)
{
    sd_notifyf(0, "MAINPID=%d", pid);
}

static int take(int fd, char *err, size_t errlen)
{
    if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0 ||
        (sd_is_socket(fd, AF_INET, SOCK_STREAM, 1) <= 0 && sd_is_socket(fd, AF_INET6, SOCK_STREAM, 1) <= 0)) {
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
    int n = sd_listen_fds(1);
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
