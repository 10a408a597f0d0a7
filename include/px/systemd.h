/* px/systemd.h -- what proxyd tells systemd and takes from it (libsystemd):
 * readiness, reloading and stopping for a Type=notify unit, and the
 * listening sockets of a proxyd.socket unit (socket activation).
 *
 * Without systemd every call is a no-op: sd_notify() does nothing when
 * NOTIFY_SOCKET is unset, and there are no LISTEN_FDS. Main thread only. */
#ifndef PX_SYSTEMD_H
#define PX_SYSTEMD_H

#include <stddef.h>

/* A status line for `systemctl status` beside the state change:
 * px_systemd_ready("...") once serving and after a reload, px_systemd_reloading()
 * before a reload, px_systemd_stopping() when a graceful stop begins. */
void px_systemd_ready(const char *status);
void px_systemd_reloading(void);
void px_systemd_stopping(void);
/* MAINPID= for a process that takes over from its parent (binary upgrade). */
void px_systemd_mainpid(int pid);

/* Sockets passed by systemd (LISTEN_FDS/LISTEN_PID), in the order of the
 * socket unit's ListenStream= lines: the first is listen_http when it is
 * configured, the next listen_https. Sets *http_fd / *https_fd (-1 for
 * none passed) and returns the number taken (0 without socket activation),
 * or -1 with the reason in err: a count that does not match the configured
 * listeners, or a descriptor that is not a listening TCP socket. The
 * sockets are made non-blocking and close-on-exec; the environment
 * variables are unset so that children do not see them. */
int px_systemd_listen_fds(int want_http, int want_https, int *http_fd, int *https_fd, char *err, size_t errlen);

#endif
