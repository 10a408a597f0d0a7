/* test_acme_hooks.c -- renewal-hooks/KIND/ (proxy/acme/hooks.c) on a real
 * event base: byte order, the environment, failures, the time limit, the
 * output in the error log (pointed at a file here), cancel, no zombies. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "px/acme.h"
#include "px/common.h"
#include "px/log.h"
#include "unit.h"

#ifndef __clang__
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

static char top[64], cfg[128], logpath[160], outpath[160];
static struct event_base *base;

struct result {
    int called;
    int nfailed;
};

static void on_done(void *arg, int nfailed)
{
    struct result *r = arg;
    r->called++;
    r->nfailed = nfailed;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void run_until(const int *flag, int ms)
{
    struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 10000};
    event_add(t, &tv);
    uint64_t end = px_now_ms() + (uint64_t)ms;
    while (!*flag && px_now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
}

/* A fresh config dir, error log and output file for each test. */
static void setup(void)
{
    char err[256];
    snprintf(top, sizeof(top), "/tmp/proxyd-acme-hooks-XXXXXX");
    if (mkdtemp(top) == NULL)
        abort();
    snprintf(cfg, sizeof(cfg), "%s/le", top);
    snprintf(logpath, sizeof(logpath), "%s/error.log", top);
    snprintf(outpath, sizeof(outpath), "%s/out", top);
    if (px_acme_store_init(cfg, err, sizeof(err)) < 0 || px_log_open(logpath, "off", err, sizeof(err)) < 0)
        abort();
    base = event_base_new();
}

static void teardown(void)
{
    int st;
    /* no child of ours is left, running or zombie */
    CHECK_INT(waitpid(-1, &st, WNOHANG), -1);
    CHECK_INT(errno, ECHILD);
    px_log_open("-", "off", NULL, 0);
    event_base_free(base);
    nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void hook(const char *kind, const char *name, int mode, const char *body)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/renewal-hooks/%s/%s", cfg, kind, name);
    FILE *f = fopen(p, "w");
    fputs(body, f);
    fclose(f);
    chmod(p, (mode_t)mode);
}

static char *slurp(const char *path)
{
    static char buf[262144];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
    return buf;
}

static int logged(const char *s)
{
    return strstr(slurp(logpath), s) != NULL;
}

static const char *const DOMAINS[] = {"example.test", "www.example.test"};
#define LIVE "/etc/le/live/example.test"

#define APPEND_NAME                                                                                                    \
    "#!/bin/sh\n"                                                                                                      \
    "echo \"${0##*/} $RENEWED_LINEAGE $RENEWED_DOMAINS\" >> \"$OUT\"\n"

static void test_order_and_environment(void)
{
    setup();
    setenv("OUT", outpath, 1);
    setenv("RENEWED_DOMAINS", "stale", 1); /* ours replaces it */
    hook("deploy", "a", 0755, APPEND_NAME);
    hook("deploy", "2-b", 0755, APPEND_NAME "echo \"out of 2-b\"\necho \"err of 2-b\" >&2\n");
    hook("deploy", "10-a", 0755, APPEND_NAME);
    hook("deploy", "3-noexec", 0644, APPEND_NAME);
    hook("deploy", ".hidden", 0755, APPEND_NAME);
    hook("deploy", "b~", 0755, APPEND_NAME);
    char p[512];
    snprintf(p, sizeof(p), "%s/renewal-hooks/deploy/1-dir", cfg);
    mkdir(p, 0755);
    /* a symlink to an executable counts, as in certbot */
    snprintf(p, sizeof(p), "%s/renewal-hooks/deploy/b-link", cfg);
    CHECK_INT(symlink("a", p), 0);

    struct result r = {0};
    struct px_acme_hooks *h = px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 5000, on_done, &r);
    CHECK(h != NULL);
    CHECK_INT(r.called, 0); /* never from inside the call */
    run_until(&r.called, 5000);
    CHECK_INT(r.called, 1);
    CHECK_INT(r.nfailed, 0);
    CHECK_STR(slurp(outpath), "10-a " LIVE " example.test www.example.test\n"
                              "2-b " LIVE " example.test www.example.test\n"
                              "a " LIVE " example.test www.example.test\n"
                              "b-link " LIVE " example.test www.example.test\n");
    CHECK(logged("[info] hook deploy/2-b: out of 2-b\n"));
    CHECK(logged("[info] hook deploy/2-b: err of 2-b\n"));
    CHECK(logged("hook deploy/10-a: running (pid "));
    unsetenv("RENEWED_DOMAINS");

    /* pre and post: the same, without RENEWED_* when not given */
    hook("post", "1", 0755, APPEND_NAME);
    memset(&r, 0, sizeof(r));
    h = px_acme_hooks_run(base, cfg, "post", NULL, NULL, 0, 5000, on_done, &r);
    CHECK(h != NULL);
    run_until(&r.called, 5000);
    CHECK_INT(r.called, 1);
    CHECK(strstr(slurp(outpath), "\n1  \n") != NULL);
    unsetenv("OUT");
    teardown();
}

static void test_failures(void)
{
    setup();
    setenv("OUT", outpath, 1);
    hook("deploy", "1-fail", 0755, "#!/bin/sh\necho about to fail\nexit 3\n");
    hook("deploy", "2-badinterp", 0755, "#!/nonexistent/interpreter\n");
    hook("deploy", "3-nohashbang", 0755, "echo \"3-nohashbang ran\" >> \"$OUT\"\n");
    hook("deploy", "4-ok", 0755, APPEND_NAME);
    hook("deploy", "5-signal", 0755, "#!/bin/sh\nkill -USR1 $$\n");
    struct result r = {0};
    struct px_acme_hooks *h = px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 5000, on_done, &r);
    CHECK(h != NULL);
    run_until(&r.called, 5000);
    CHECK_INT(r.called, 1);
    CHECK_INT(r.nfailed, 3);
    CHECK(logged("[info] hook deploy/1-fail: about to fail\n"));
    CHECK(logged("[warn] hook deploy/1-fail: exited with status 3\n"));
    CHECK(logged("[error] hook deploy/2-badinterp: cannot run it: No such file or directory\n"));
    CHECK(logged("[warn] hook deploy/5-signal: killed by signal 10\n"));
    CHECK_STR(slurp(outpath), "3-nohashbang ran\n4-ok " LIVE " example.test www.example.test\n");

    /* only hooks that cannot start: done still comes, from the loop */
    char p[512];
    snprintf(p, sizeof(p), "%s/renewal-hooks/pre", cfg);
    hook("pre", "x", 0755, "#!/nonexistent/interpreter\n");
    memset(&r, 0, sizeof(r));
    h = px_acme_hooks_run(base, cfg, "pre", NULL, NULL, 0, 5000, on_done, &r);
    CHECK(h != NULL);
    CHECK_INT(r.called, 0);
    run_until(&r.called, 2000);
    CHECK_INT(r.called, 1);
    CHECK_INT(r.nfailed, 1);
    unsetenv("OUT");
    teardown();
}

static int gone(pid_t pid)
{
    char p[64], buf[512];
    snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return 1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && rp[2] == 'Z'; /* a zombie waiting for init counts as dead */
}

static pid_t pid_in(const char *path)
{
    return (pid_t)atoi(slurp(path));
}

static void test_time_limit(void)
{
    setup();
    char pidfile[256];
    snprintf(pidfile, sizeof(pidfile), "%s/sleep.pid", top);
    setenv("PIDFILE", pidfile, 1);
    /* its `sleep` is in its process group: killed too */
    hook("deploy", "1-slow", 0755, "#!/bin/sh\necho started\nsleep 30 &\necho $! > \"$PIDFILE\"\nwait\n");
    hook("deploy", "2-after", 0755, "#!/bin/sh\necho after\n");
    struct result r = {0};
    uint64_t t0 = px_now_ms();
    struct px_acme_hooks *h = px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 300, on_done, &r);
    CHECK(h != NULL);
    run_until(&r.called, 5000);
    CHECK_INT(r.called, 1);
    CHECK_INT(r.nfailed, 1);
    CHECK(px_now_ms() - t0 < 4000);
    CHECK(logged("[info] hook deploy/1-slow: started\n"));
    CHECK(logged("[warn] hook deploy/1-slow: still running after 300 ms: SIGTERM\n"));
    CHECK(logged("[warn] hook deploy/1-slow: killed: it ran past the time limit (300 ms)\n"));
    CHECK(logged("[info] hook deploy/2-after: after\n"));
    pid_t sleeper = pid_in(pidfile);
    CHECK(sleeper > 0);
    for (int i = 0; i < 100 && sleeper > 0 && !gone(sleeper); i++)
        usleep(10000);
    CHECK(sleeper > 0 && gone(sleeper));

    /* one that ignores SIGTERM gets SIGKILL 2 s later */
    hook("pre", "stubborn", 0755, "#!/bin/sh\ntrap '' TERM\necho stubborn\nwhile :; do sleep 0.05; done\n");
    memset(&r, 0, sizeof(r));
    t0 = px_now_ms();
    h = px_acme_hooks_run(base, cfg, "pre", NULL, NULL, 0, 200, on_done, &r);
    CHECK(h != NULL);
    run_until(&r.called, 8000);
    CHECK_INT(r.called, 1);
    CHECK_INT(r.nfailed, 1);
    uint64_t took = px_now_ms() - t0;
    CHECK(took >= 2150 && took < 6000);
    CHECK(logged("[warn] hook pre/stubborn: still running 2000 ms after SIGTERM: SIGKILL\n"));
    unsetenv("PIDFILE");
    teardown();
}

static void test_output(void)
{
    setup();
    /* no final newline; a CR LF; a control character; a line longer than 1024 */
    hook("deploy", "out", 0755,
         "#!/bin/sh\nprintf 'dos line\\r\\nbell\\007here\\n'\n"
         "head -c 1500 /dev/zero | tr '\\0' x\necho\n"
         "yes | head -1 >/dev/null\n" /* SIGPIPE is back to default: `yes` dies quietly */
         "printf 'no newline'\n");
    struct result r = {0};
    CHECK(px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 5000, on_done, &r) != NULL);
    run_until(&r.called, 5000);
    CHECK_INT(r.called, 1);
    CHECK_INT(r.nfailed, 0);
    CHECK(logged("hook deploy/out: dos line\n"));
    CHECK(logged("hook deploy/out: bell?here\n"));
    CHECK(logged("hook deploy/out: no newline\n"));
    CHECK(!logged("Broken pipe"));
    char want[1200] = "hook deploy/out: ";
    size_t n = strlen(want);
    memset(want + n, 'x', 1024);
    want[n + 1024] = '\n';
    want[n + 1025] = '\0';
    CHECK(logged(want));
    memset(want, 0, sizeof(want));
    snprintf(want, sizeof(want), "hook deploy/out: %.476s\n",
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    CHECK(logged(want)); /* the rest of the 1500 */
    teardown();
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* What a hook prints is logged up to 64 KiB per run; the rest is read
 * (the hook never blocks on a full pipe), dropped and counted. */
static void test_output_capped(void)
{
    setup();
    hook("deploy", "1-chatty", 0755, "#!/bin/sh\nhead -c 10485760 /dev/zero | tr '\\0' a\necho\necho last line\n");
    hook("deploy", "2-next", 0755, "#!/bin/sh\necho next hook speaks\n");
    struct result r = {0};
    CHECK(px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 20000, on_done, &r) != NULL);
    run_until(&r.called, 20000);
    CHECK_INT(r.called, 1);
    CHECK_INT(r.nfailed, 0);
    struct stat st;
    CHECK_INT(stat(logpath, &st), 0);
    if (!(st.st_size > 64 * 1024 && st.st_size < 80 * 1024))
        fprintf(stderr, "error.log: %lld bytes\n", (long long)st.st_size);
    CHECK(st.st_size > 64 * 1024 && st.st_size < 80 * 1024);
    /* 10 MiB of 'a', a newline, "last line\n": 64 KiB logged */
    CHECK(logged("hook deploy/1-chatty: 10420235 more bytes of output not logged "
                 "(only the first 64 KiB or 1000 lines of a run are)"));
    CHECK(!logged("hook deploy/1-chatty: last line"));
    CHECK(logged("hook deploy/2-next: next hook speaks\n"));

    /* one that leaves a writer that never stops on the pipe is still over
     * when it exits (what is left is not read without end) */
    char p[512];
    snprintf(p, sizeof(p), "%s/renewal-hooks/deploy/1-chatty", cfg);
    unlink(p);
    snprintf(p, sizeof(p), "%s/renewal-hooks/deploy/2-next", cfg);
    unlink(p);
    hook("deploy", "3-endless", 0755, "#!/bin/sh\necho bye\nyes endless &\n");
    memset(&r, 0, sizeof(r));
    CHECK(px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 20000, on_done, &r) != NULL);
    run_until(&r.called, 20000);
    CHECK_INT(r.called, 1);
    CHECK_INT(r.nfailed, 0);
    CHECK(logged("hook deploy/3-endless: bye\n"));
    /* short lines: 1000 of them at most (the log line costs more than the output) */
    CHECK(count(slurp(logpath), "hook deploy/3-endless: endless\n") <= 1000);
    CHECK_INT(stat(logpath, &st), 0);
    CHECK(st.st_size < 80 * 1024 + 1001 * 64);
    teardown();
}

/* A hook that is not executable is skipped, as certbot does, and said so
 * once per file for the life of the process. */
static void test_not_executable_warned_once(void)
{
    setup();
    hook("deploy", "noexec", 0644, "#!/bin/sh\necho ran\n");
    hook("deploy", "ok", 0755, "#!/bin/sh\n");
    const char *warn = "[warn] hook deploy/noexec: skipped: not executable (Permission denied); chmod +x it";
    for (int i = 0; i < 3; i++) {
        struct result r = {0};
        CHECK(px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 5000, on_done, &r) != NULL);
        run_until(&r.called, 5000);
        CHECK_INT(r.called, 1);
    }
    CHECK_INT(count(slurp(logpath), warn), 1);
    CHECK(!logged("hook deploy/noexec: ran"));
    /* made executable, it runs; made non-executable again, it is said again */
    char p[512];
    snprintf(p, sizeof(p), "%s/renewal-hooks/deploy/noexec", cfg);
    for (int mode = 0755, i = 0; i < 3; i++, mode = 0644) {
        chmod(p, (mode_t)mode);
        struct result r = {0};
        CHECK(px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 5000, on_done, &r) != NULL);
        run_until(&r.called, 5000);
        CHECK_INT(r.called, 1);
    }
    CHECK(logged("hook deploy/noexec: ran\n"));
    CHECK_INT(count(slurp(logpath), warn), 2);
    /* alone in its directory: nothing runs, and it is not said again */
    snprintf(p, sizeof(p), "%s/renewal-hooks/deploy/ok", cfg);
    unlink(p);
    struct result r = {0};
    CHECK(px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 5000, on_done, &r) == NULL);
    CHECK_INT(count(slurp(logpath), warn), 2);
    teardown();
}

/* A hook that leaves a daemon holding its stdout is over when it exits. */
static void test_daemon_keeps_pipe(void)
{
    setup();
    char pidfile[256];
    snprintf(pidfile, sizeof(pidfile), "%s/daemon.pid", top);
    setenv("PIDFILE", pidfile, 1);
    hook("deploy", "starts-daemon", 0755, "#!/bin/sh\nsleep 30 &\necho $! > \"$PIDFILE\"\necho started it\n");
    struct result r = {0};
    uint64_t t0 = px_now_ms();
    CHECK(px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 5000, on_done, &r) != NULL);
    run_until(&r.called, 5000);
    CHECK_INT(r.called, 1);
    CHECK_INT(r.nfailed, 0);
    CHECK(px_now_ms() - t0 < 4000);
    CHECK(logged("hook deploy/starts-daemon: started it\n"));
    pid_t d = pid_in(pidfile);
    CHECK(d > 0 && !gone(d)); /* not ours to kill */
    if (d > 0)
        kill(d, SIGKILL);
    unsetenv("PIDFILE");
    teardown();
}

static void test_nothing_to_run(void)
{
    setup();
    struct result r = {0};
    CHECK(px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 5000, on_done, &r) == NULL);
    hook("deploy", "README", 0644, "not a hook\n");
    CHECK(px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 5000, on_done, &r) == NULL);
    CHECK(px_acme_hooks_run(base, "/nonexistent", "deploy", LIVE, DOMAINS, 2, 5000, on_done, &r) == NULL);
    hook("deploy", "ok", 0755, "#!/bin/sh\n");
    CHECK(px_acme_hooks_run(base, cfg, "bogus", LIVE, DOMAINS, 2, 5000, on_done, &r) == NULL);
    int never = 0;
    run_until(&never, 50);
    CHECK_INT(r.called, 0);
    teardown();
}

static void test_cancel(void)
{
    setup();
    char pidfile[256], p2[256];
    snprintf(pidfile, sizeof(pidfile), "%s/hook.pid", top);
    snprintf(p2, sizeof(p2), "%s/sleep.pid", top);
    setenv("PIDFILE", pidfile, 1);
    setenv("PIDFILE2", p2, 1);
    hook("deploy", "1-long", 0755, "#!/bin/sh\nsleep 30 &\necho $! > \"$PIDFILE2\"\necho $$ > \"$PIDFILE\"\nwait\n");
    hook("deploy", "2-never", 0755, "#!/bin/sh\necho never\n");
    struct result r = {0};
    struct px_acme_hooks *h = px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 0, on_done, &r);
    CHECK(h != NULL);
    int started = 0;
    uint64_t end = px_now_ms() + 3000;
    while (!started && px_now_ms() < end) {
        run_until(&started, 20);
        started = access(pidfile, F_OK) == 0 && pid_in(pidfile) > 0;
    }
    CHECK(started);
    pid_t pid = pid_in(pidfile), sleeper = pid_in(p2);
    px_acme_hooks_cancel(h);
    int st;
    CHECK_INT(waitpid(pid, &st, WNOHANG), -1); /* reaped by cancel */
    CHECK_INT(errno, ECHILD);
    CHECK(gone(pid));
    for (int i = 0; i < 100 && !gone(sleeper); i++)
        usleep(10000);
    CHECK(gone(sleeper)); /* its group went too */
    int never = 0;
    run_until(&never, 100);
    CHECK_INT(r.called, 0);
    CHECK(!logged("never"));
    CHECK(logged("hook deploy/1-long: cancelled (killed)"));

    /* cancel before anything started, and NULL */
    h = px_acme_hooks_run(base, cfg, "deploy", LIVE, DOMAINS, 2, 0, on_done, &r);
    px_acme_hooks_cancel(h);
    px_acme_hooks_cancel(NULL);
    run_until(&never, 50);
    CHECK_INT(r.called, 0);
    unsetenv("PIDFILE");
    unsetenv("PIDFILE2");
    teardown();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as proxyd: hooks must not inherit it */
    UNIT_RUN(test_order_and_environment);
    UNIT_RUN(test_failures);
    UNIT_RUN(test_time_limit);
    UNIT_RUN(test_output);
    UNIT_RUN(test_output_capped);
    UNIT_RUN(test_not_executable_warned_once);
    UNIT_RUN(test_daemon_keeps_pipe);
    UNIT_RUN(test_nothing_to_run);
    UNIT_RUN(test_cancel);
    return unit_report();
}
