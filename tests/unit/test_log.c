/* test_log.c -- the log sinks: an access log that cannot be written is
 * reported in the error log, rate-limited, and its recovery too; files a
 * failed reload created are removed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "px/log.h"
#include "unit.h"

static char dir[64];
static char errpath[128], accpath[128];

static char *slurp(const char *path)
{
    static char buf[8192];
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (f) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void access_log_full_disk_reported_once_then_recovery(void)
{
    char err[256];
    CHECK_INT(px_log_open(errpath, "/dev/full", err, sizeof(err)), 0);
    for (int i = 0; i < 5; i++)
        px_log_access_write("{\"status\":200}\n", 15);
    const char *text = slurp(errpath);
    /* one line for five lost ones: the next report is PX_LOG_FAIL_REPORT_MS away */
    CHECK_INT(count(text, "access_log /dev/full: write failed: No space left on device (1 line(s) lost"), 1);
    CHECK_INT(count(text, "access_log"), 1);
    /* a worker's batch of lines counts as that many lost lines */
    px_log_access_write("{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n", 24);
    /* the disk has room again (here: a reopen to a writable file) */
    CHECK_INT(px_log_open(errpath, accpath, err, sizeof(err)), 0);
    px_log_access_write("{\"status\":200}\n", 15);
    px_log_access_write("{\"status\":200}\n", 15);
    text = slurp(errpath);
    CHECK(strstr(text, "writing again (7 line(s) lost since the last report)") != NULL);
    CHECK_INT(count(text, "writing again"), 1);
    CHECK_INT(count(slurp(accpath), "status"), 2);
    px_log_close();
}

static void discarded_sinks_remove_created_files(void)
{
    char err[256], newacc[160], newerr[160];
    snprintf(newacc, sizeof(newacc), "%s/new-access.log", dir);
    snprintf(newerr, sizeof(newerr), "%s/new-error.log", dir);
    CHECK_INT(px_log_open(errpath, accpath, err, sizeof(err)), 0);
    struct px_log_sinks *s = px_log_prepare(newerr, newacc, err, sizeof(err));
    CHECK(s != NULL);
    CHECK(access(newacc, F_OK) == 0);
    px_log_discard(s);
    CHECK(access(newacc, F_OK) != 0);
    CHECK(access(newerr, F_OK) != 0);
    /* files that were there before are left alone */
    s = px_log_prepare(errpath, accpath, err, sizeof(err));
    CHECK(s != NULL);
    px_log_discard(s);
    CHECK(access(errpath, F_OK) == 0);
    CHECK(access(accpath, F_OK) == 0);
    /* a prepare that fails half-way (the access log's directory is missing)
     * removes the error log it made */
    char badacc[200];
    snprintf(badacc, sizeof(badacc), "%s/missing/access.log", dir);
    CHECK(px_log_prepare(newerr, badacc, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "missing/access.log") != NULL);
    CHECK(access(newerr, F_OK) != 0);
    px_log_close();
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/px-test-log-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(errpath, sizeof(errpath), "%s/error.log", dir);
    snprintf(accpath, sizeof(accpath), "%s/access.log", dir);
    UNIT_RUN(access_log_full_disk_reported_once_then_recovery);
    UNIT_RUN(discarded_sinks_remove_created_files);
    /* everything a test may have made, also when it failed */
    const char *names[] = {"error.log", "access.log", "new-error.log", "new-access.log"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[160];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    return unit_report();
}
