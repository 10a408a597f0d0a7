/* px/log.h -- error log (levels, thread-safe, one write(2) per line) and the
 * access log sink. Both may be a path, "-" (stdout for access, stderr for
 * error) or, for the access log, "off". Reopened on SIGUSR1. */
#ifndef PX_LOG_H
#define PX_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>

/* NOTICE: a normal event an operator wants on record (the control audit
 * trail, "[notice] control: ..."). */
enum px_log_level { PX_LOG_DEBUG, PX_LOG_INFO, PX_LOG_NOTICE, PX_LOG_WARN, PX_LOG_ERROR };

/* Files the sinks create from now on (O_CREAT, 0640) are chowned to uid:gid
 * (-1: left as created): the user proxyd drops to after opening them as
 * root. Main thread, before px_log_open. */
void px_log_set_owner(uid_t uid, gid_t gid);
/* Open the sinks. Returns 0, or -1 with a message in err. Safe to call
 * again (reload): the new files replace the old ones atomically. */
int px_log_open(const char *error_log, const char *access_log, char *err, size_t errlen);
/* The same in two steps, for an all-or-nothing reload: open the new sinks
 * (nothing changes yet; NULL with a message in err), then either switch to
 * them or drop them. Both take ownership of s. Main thread. A path that is
 * the current one and still names the same file keeps its open fd (after
 * the privilege drop the user may not be able to open it); a file that
 * prepare created is removed again by discard. */
struct px_log_sinks;
struct px_log_sinks *px_log_prepare(const char *error_log, const char *access_log, char *err, size_t errlen);
void px_log_commit(struct px_log_sinks *s);
void px_log_discard(struct px_log_sinks *s);
/* Reopen the same paths (logrotate): always opens them anew. On failure the
 * current files stay and the error log says why. */
void px_log_reopen(void);
void px_log_close(void);

void px_log(enum px_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define px_log_error(...) px_log(PX_LOG_ERROR, __VA_ARGS__)
#define px_log_warn(...) px_log(PX_LOG_WARN, __VA_ARGS__)
#define px_log_info(...) px_log(PX_LOG_INFO, __VA_ARGS__)
#define px_log_notice(...) px_log(PX_LOG_NOTICE, __VA_ARGS__)

/* 1 when access logging is on. */
int px_log_access_enabled(void);
/* Write complete access-log lines (each ending in '\n'; a worker writes its
 * batch at once). Thread-safe; lines from different threads never
 * interleave. A failing write (ENOSPC) drops the lines and is reported in the error log at most once per
 * PX_LOG_FAIL_REPORT_MS with the count of lines lost; a write that works
 * again after a report says so once. */
#define PX_LOG_FAIL_REPORT_MS 60000
void px_log_access_write(const char *line, size_t len);

#endif
