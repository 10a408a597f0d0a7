/* hooks.c -- the executables of renewal-hooks/KIND/, one after another, as
 * certbot runs them (byte order of the names, RENEWED_LINEAGE and
 * RENEWED_DOMAINS in the environment), but bounded in time and with their
 * output in our error log.
 *
 * Why:
 *  - posix_spawn, not fork: proxyd is multithreaded and posix_spawn does
 *    nothing between its clone and the exec that is unsafe there; argv and
 *    envp are ready before it. Every fd but the three it dups is closed in
 *    the child (closefrom), whatever its close-on-exec flag.
 *  - Each hook is a process group leader: a time limit (SIGTERM, SIGKILL
 *    2 s later) and a cancel hit the `sleep` a shell script started too,
 *    which would otherwise hold our pipe open.
 *  - Signal dispositions are reset in the child: proxyd ignores SIGPIPE, and
 *    ignored signals survive exec.
 *  - A hook is over when its process has exited, not when its output pipe
 *    closes: a hook that starts a daemon hands it the pipe, and waiting
 *    for EOF would wait for that daemon. What is in the pipe then is read
 *    and logged, and the pipe closed.
 *  - Hooks run with the uid and gid proxyd runs as: root only if it was
 *    started as root without `user =`; otherwise whatever they do (reload
 *    another server, copy keys) needs that user's rights (sudo rules,
 *    group-readable files). They inherit proxyd's environment and cwd.
 *  - Output is logged up to OUTPUT_LOG_MAX bytes or OUTPUT_LOG_LINES lines
 *    per run and the rest read and
 *    dropped (counted in one line at the end): the pipe never fills, so a
 *    chatty hook never blocks, and the error log stays bounded. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "px/acme.h"
#include "px/child.h"
#include "px/common.h"
#include "px/log.h"

#define KILL_GRACE_MS 2000  /* SIGTERM, then this long, then SIGKILL */
#define CANCEL_WAIT_MS 1000 /* how long cancel waits for a SIGKILLed hook */
#define LINE_MAX_LOG 1024   /* longer output lines are logged in pieces */
#define OUTPUT_LOG_MAX (64 * 1024) /* per hook run: what is logged of its output (bytes, */
#define OUTPUT_LOG_LINES 1000      /* and lines: a log line costs ~60 bytes more); the rest is read and dropped */
#define READ_BUDGET (256 * 1024)   /* per wakeup: a hook writing without pause does not hold the loop */
#define SKIPPED_MAX 64             /* non-executable hooks remembered, to warn once about each */

extern char **environ;

struct px_acme_hooks {
    struct event_base *base;
    char kind[8];
    char *dir;    /* config_dir/renewal-hooks/KIND */
    char **names; /* to run, sorted */
    size_t nnames, next;
    char **envp; /* NULL-terminated, owned strings */
    uint64_t timeout_ms;
    px_acme_hooks_done_fn done;
    void *arg;
    int nfailed;
    struct event *step; /* activated to start the next hook (or finish) */

    /* the running hook */
    const char *cur; /* its name (in names) */
    pid_t pid;       /* 0 when none runs */
    struct px_child *child;
    int out_fd;
    struct event *out_ev, *timer;
    int killing; /* 0, 1 SIGTERM sent, 2 SIGKILL sent */
    char line[LINE_MAX_LOG];
    size_t linelen;
    size_t logged;      /* bytes of output taken into log lines (<= OUTPUT_LOG_MAX) */
    size_t nlines;      /* log lines of output (<= OUTPUT_LOG_LINES + 1) */
    uint64_t dropped;   /* bytes read past that */
};

/* The non-executable hooks already warned about (paths), so that each is
 * logged once per process lifetime, not at every attempt; one that becomes
 * executable is forgotten (a later chmod -x warns again). Main thread only,
 * as everything here. */
static char *skipped[SKIPPED_MAX];
static size_t nskipped;

static int skipped_find(const char *path)
{
    for (size_t i = 0; i < nskipped; i++)
        if (strcmp(skipped[i], path) == 0)
            return (int)i;
    return -1;
}

static void skipped_forget(const char *path)
{
    int i = skipped_find(path);
    if (i < 0)
        return;
    free(skipped[i]);
    skipped[i] = skipped[--nskipped];
}

/* 1 the first time path is seen not executable (then warn), else 0. */
static int skipped_first(const char *path)
{
    char *copy;
    if (skipped_find(path) >= 0)
        return 0;
    if ((copy = strdup(path)) != NULL) {
        if (nskipped == SKIPPED_MAX) { /* full: the oldest is forgotten */
            free(skipped[0]);
            memmove(skipped, skipped + 1, (SKIPPED_MAX - 1) * sizeof(*skipped));
            nskipped--;
        }
        skipped[nskipped++] = copy;
    }
    return 1;
}

static int by_bytes(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The executables in dir, sorted; certbot's rule (a regular file, after
 * symlinks, that we may execute; not ending in '~') plus: no dot files.
 * -1 when dir cannot be read (ENOENT included). */
static int list_hooks(const char *dir, const char *kind, char ***out, size_t *nout)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **v = NULL, path[4096];
    size_t n = 0;
    if (d == NULL) {
        if (errno != ENOENT && errno != ENOTDIR)
            px_log_warn("hooks %s: %s: %s", kind, dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || de->d_name[len - 1] == '~')
            continue;
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path) || stat(path, &st) < 0 ||
            !S_ISREG(st.st_mode))
            continue;
        if (access(path, X_OK) < 0) {
            /* certbot skips it too, and says so only in its debug log */
            if (skipped_first(path))
                px_log_warn("hook %s/%s: skipped: not executable (%s); chmod +x it to have it run (said once)", kind,
                            de->d_name, strerror(errno));
            continue;
        }
        skipped_forget(path);
        char **nv = realloc(v, (n + 1) * sizeof(*v));
        if (nv == NULL || (nv[n] = strdup(de->d_name)) == NULL) {
            if (nv)
                v = nv;
            goto oom;
        }
        v = nv;
        n++;
    }
    closedir(d);
    if (n)
        qsort(v, n, sizeof(*v), by_bytes);
    *out = v;
    *nout = n;
    return 0;
oom:
    closedir(d);
    px_strv_free(v, n);
    px_log_error("hooks %s: out of memory", kind);
    return -1;
}

/* proxyd's environment without any RENEWED_*, plus ours. */
static char **make_env(const char *live_dir, const char *const *domains, size_t ndomains)
{
    size_t n = 0, k = 0, dlen = 1;
    while (environ && environ[n])
        n++;
    char **env = calloc(n + 3, sizeof(*env));
    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "RENEWED_LINEAGE=", 16) == 0 || strncmp(environ[i], "RENEWED_DOMAINS=", 16) == 0)
            continue;
        if ((env[k++] = strdup(environ[i])) == NULL)
            goto fail;
    }
    if (live_dir) {
        size_t len = strlen(live_dir) + sizeof("RENEWED_LINEAGE=");
        if ((env[k] = malloc(len)) == NULL)
            goto fail;
        snprintf(env[k++], len, "RENEWED_LINEAGE=%s", live_dir);
    }
    if (domains) {
        for (size_t i = 0; i < ndomains; i++)
            dlen += strlen(domains[i]) + 1;
        char *s = malloc(dlen + sizeof("RENEWED_DOMAINS="));
        if (s == NULL)
            goto fail;
        env[k++] = s;
        s += sprintf(s, "RENEWED_DOMAINS=");
        for (size_t i = 0; i < ndomains; i++)
            s += sprintf(s, "%s%s", i ? " " : "", domains[i]);
    }
    return env;
fail:
    px_strv_free(env, n + 2);
    return NULL;
}

/* ---- output ---- */

static void log_line(struct px_acme_hooks *h)
{
    for (size_t i = 0; i < h->linelen; i++) {
        unsigned char c = (unsigned char)h->line[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            h->line[i] = '?'; /* one log line per line, no terminal escapes */
    }
    px_log_info("hook %s/%s: %.*s", h->kind, h->cur, (int)h->linelen, h->line);
    h->linelen = 0;
    h->nlines++;
}

static void take_output(struct px_acme_hooks *h, const char *p, size_t n)
{
    size_t i = 0;
    for (; i < n && h->logged < OUTPUT_LOG_MAX && h->nlines < OUTPUT_LOG_LINES; i++) {
        h->logged++;
        if (p[i] == '\n') {
            if (h->linelen && h->line[h->linelen - 1] == '\r')
                h->linelen--;
            log_line(h);
            continue;
        }
        if (h->linelen == sizeof(h->line))
            log_line(h);
        h->line[h->linelen++] = p[i];
    }
    h->dropped += n - i;
}

/* Read what is there, up to READ_BUDGET bytes; 1 at EOF or on an error
 * (the pipe is then done), 0 when it would block or the budget is spent
 * (the level-triggered event comes back for the rest). */
static int read_output(struct px_acme_hooks *h)
{
    char buf[4096];
    for (size_t budget = READ_BUDGET; budget > 0;) {
        ssize_t n = read(h->out_fd, buf, sizeof(buf));
        if (n > 0) {
            take_output(h, buf, (size_t)n);
            budget = (size_t)n < budget ? budget - (size_t)n : 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return 1;
    }
    return 0;
}

static void close_output(struct px_acme_hooks *h)
{
    if (h->out_ev) {
        event_free(h->out_ev);
        h->out_ev = NULL;
    }
    if (h->out_fd >= 0) {
        close(h->out_fd);
        h->out_fd = -1;
    }
}

static void on_output(evutil_socket_t fd, short what, void *arg)
{
    struct px_acme_hooks *h = arg;
    PX_UNUSED(fd);
    PX_UNUSED(what);
    if (read_output(h)) {
        if (h->linelen)
            log_line(h);
        /* EOF, but the process may run on: on_exit ends the hook. Free the
         * event outside its own callback: just stop it here. */
        event_del(h->out_ev);
    }
}

/* ---- running one hook ---- */

static void on_exit_status(void *arg, pid_t pid, int status);

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct px_acme_hooks *h = arg;
    PX_UNUSED(fd);
    PX_UNUSED(what);
    if (h->killing == 0) {
        px_log_warn("hook %s/%s: still running after %llu ms: SIGTERM", h->kind, h->cur,
                    (unsigned long long)h->timeout_ms);
        kill(-h->pid, SIGTERM);
        h->killing = 1;
        struct timeval tv = {KILL_GRACE_MS / 1000, (KILL_GRACE_MS % 1000) * 1000};
        event_add(h->timer, &tv);
    } else {
        px_log_warn("hook %s/%s: still running %d ms after SIGTERM: SIGKILL", h->kind, h->cur, KILL_GRACE_MS);
        kill(-h->pid, SIGKILL);
        h->killing = 2;
    }
}

/* Start h->names[h->next - 1]; 0, or -1 (logged) when it could not be started. */
static int start_hook(struct px_acme_hooks *h)
{
    char path[4096];
    int pfd[2] = {-1, -1}, devnull = -1, fa_ok = 0, at_ok = 0, rc = -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    pid_t pid;

    if (snprintf(path, sizeof(path), "%s/%s", h->dir, h->cur) >= (int)sizeof(path)) {
        px_log_error("hook %s/%s: path too long", h->kind, h->cur);
        return -1;
    }
    char *argv[] = {path, NULL};
    if (pipe2(pfd, O_CLOEXEC) < 0 || (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        px_log_error("hook %s/%s: %s", h->kind, h->cur, strerror(errno));
        goto out;
    }
    sigemptyset(&none);
    sigfillset(&all);
    if ((errno = posix_spawn_file_actions_init(&fa)) != 0)
        goto spawn_err;
    fa_ok = 1;
    if ((errno = posix_spawnattr_init(&at)) != 0)
        goto spawn_err;
    at_ok = 1;
    if ((errno = posix_spawn_file_actions_adddup2(&fa, devnull, 0)) != 0 ||
        (errno = posix_spawn_file_actions_adddup2(&fa, pfd[1], 1)) != 0 ||
        (errno = posix_spawn_file_actions_adddup2(&fa, pfd[1], 2)) != 0 ||
        (errno = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0 ||
        (errno = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                   POSIX_SPAWN_SETSIGDEF)) != 0 ||
        (errno = posix_spawnattr_setpgroup(&at, 0)) != 0 || (errno = posix_spawnattr_setsigmask(&at, &none)) != 0 ||
        (errno = posix_spawnattr_setsigdefault(&at, &all)) != 0)
        goto spawn_err;
    if ((errno = posix_spawn(&pid, path, &fa, &at, argv, h->envp)) == ENOEXEC) {
        /* no #! line: certbot runs hooks through sh -c, which runs such a file as a shell script */
        char *sh_argv[] = {"sh", path, NULL};
        errno = posix_spawn(&pid, "/bin/sh", &fa, &at, sh_argv, h->envp);
    }
    if (errno != 0)
        goto spawn_err;
    close(pfd[1]);
    pfd[1] = -1;
    h->pid = pid;
    h->killing = 0;
    h->linelen = 0;
    h->logged = 0;
    h->nlines = 0;
    h->dropped = 0;
    h->out_fd = pfd[0];
    pfd[0] = -1;
    px_log_info("hook %s/%s: running (pid %d)", h->kind, h->cur, (int)pid);
    if (fcntl(h->out_fd, F_SETFL, O_NONBLOCK) < 0 ||
        (h->out_ev = event_new(h->base, h->out_fd, EV_READ | EV_PERSIST, on_output, h)) == NULL ||
        event_add(h->out_ev, NULL) < 0 || (h->child = px_child_watch(h->base, pid, on_exit_status, h)) == NULL) {
        /* cannot watch it: do not leave it running unbounded */
        px_log_error("hook %s/%s: cannot watch pid %d: killed", h->kind, h->cur, (int)pid);
        kill(-pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        h->pid = 0;
        close_output(h);
        goto out;
    }
    if (h->timeout_ms) {
        struct timeval tv = {(time_t)(h->timeout_ms / 1000), (suseconds_t)(h->timeout_ms % 1000) * 1000};
        event_add(h->timer, &tv);
    }
    rc = 0;
    goto out;
spawn_err:
    px_log_error("hook %s/%s: cannot run it: %s", h->kind, h->cur, strerror(errno));
out:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (at_ok)
        posix_spawnattr_destroy(&at);
    if (devnull >= 0)
        close(devnull);
    if (pfd[0] >= 0)
        close(pfd[0]);
    if (pfd[1] >= 0)
        close(pfd[1]);
    return rc;
}

static void on_exit_status(void *arg, pid_t pid, int status)
{
    struct px_acme_hooks *h = arg;
    h->child = NULL;
    if (h->killing)
        kill(-pid, SIGKILL); /* what the hook left behind in its group */
    event_del(h->timer);
    if (h->out_fd >= 0)
        read_output(h); /* what it wrote before it exited */
    if (h->linelen)
        log_line(h);
    close_output(h);
    if (h->dropped > 0)
        px_log_warn("hook %s/%s: %llu more bytes of output not logged (only the first %d KiB or %d lines of a run are)",
                    h->kind, h->cur, (unsigned long long)h->dropped, OUTPUT_LOG_MAX / 1024, OUTPUT_LOG_LINES);
    h->pid = 0;
    if (h->killing) {
        px_log_warn("hook %s/%s: killed: it ran past the time limit (%llu ms)", h->kind, h->cur,
                    (unsigned long long)h->timeout_ms);
        h->nfailed++;
    } else if (status == -1) {
        px_log_warn("hook %s/%s: exit status lost (reaped elsewhere)", h->kind, h->cur);
        h->nfailed++;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        px_log_warn("hook %s/%s: exited with status %d", h->kind, h->cur, WEXITSTATUS(status));
        h->nfailed++;
    } else if (WIFSIGNALED(status)) {
        px_log_warn("hook %s/%s: killed by signal %d", h->kind, h->cur, WTERMSIG(status));
        h->nfailed++;
    }
    event_active(h->step, EV_TIMEOUT, 1);
}

static void hooks_free(struct px_acme_hooks *h)
{
    if (h->step)
        event_free(h->step);
    if (h->timer)
        event_free(h->timer);
    close_output(h);
    free(h->dir);
    px_strv_free(h->names, h->nnames);
    if (h->envp) {
        size_t n = 0;
        while (h->envp[n])
            n++;
        px_strv_free(h->envp, n);
    }
    free(h);
}

static void on_step(evutil_socket_t fd, short what, void *arg)
{
    struct px_acme_hooks *h = arg;
    PX_UNUSED(fd);
    PX_UNUSED(what);
    while (h->next < h->nnames) {
        h->cur = h->names[h->next++];
        if (start_hook(h) == 0)
            return;
        h->nfailed++;
    }
    px_acme_hooks_done_fn done = h->done;
    void *done_arg = h->arg;
    int nfailed = h->nfailed;
    /* h (step included) is freed at the end of step's callback, as
     * libevent's event_base_once frees its own event: nothing touches them
     * after, and done may start the next kind of hooks. */
    hooks_free(h);
    done(done_arg, nfailed);
}

struct px_acme_hooks *px_acme_hooks_run(struct event_base *base, const char *config_dir, const char *kind,
                                        const char *live_dir, const char *const *domains, size_t ndomains,
                                        uint64_t timeout_ms, px_acme_hooks_done_fn done, void *arg)
{
    struct px_acme_hooks *h;
    size_t len;
    if (strcmp(kind, "pre") != 0 && strcmp(kind, "deploy") != 0 && strcmp(kind, "post") != 0) {
        px_log_error("hooks: unknown kind \"%s\"", kind);
        return NULL;
    }
    if ((h = calloc(1, sizeof(*h))) == NULL)
        goto oom;
    h->base = base;
    h->out_fd = -1;
    h->timeout_ms = timeout_ms;
    h->done = done;
    h->arg = arg;
    snprintf(h->kind, sizeof(h->kind), "%s", kind);
    len = strlen(config_dir) + strlen(kind) + sizeof("/renewal-hooks/");
    if ((h->dir = malloc(len)) == NULL)
        goto oom;
    snprintf(h->dir, len, "%s/renewal-hooks/%s", config_dir, kind);
    if (list_hooks(h->dir, kind, &h->names, &h->nnames) < 0 || h->nnames == 0) {
        hooks_free(h);
        return NULL;
    }
    if ((h->envp = make_env(live_dir, domains, ndomains)) == NULL ||
        (h->step = event_new(base, -1, 0, on_step, h)) == NULL || (h->timer = evtimer_new(base, on_timer, h)) == NULL)
        goto oom;
    event_active(h->step, EV_TIMEOUT, 1);
    return h;
oom:
    px_log_error("hooks %s: out of memory", kind);
    if (h)
        hooks_free(h);
    return NULL;
}

void px_acme_hooks_cancel(struct px_acme_hooks *h)
{
    if (h == NULL)
        return;
    if (h->pid > 0) {
        kill(-h->pid, SIGKILL);
        px_child_forget(h->child, CANCEL_WAIT_MS);
        h->child = NULL;
        px_log_info("hook %s/%s: cancelled (killed)", h->kind, h->cur);
    }
    hooks_free(h);
}
