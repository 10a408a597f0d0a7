/* upgrade.c -- a binary upgrade's two halves (px/upgrade.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "px/common.h"
#include "px/log.h"
#include "px/upgrade.h"

extern char **environ;

struct px_upgrade {
    struct event_base *base;
    pid_t pid;
    int status_fd, err_fd;        /* read ends: the child's status pipe and its stderr */
    struct event *status_ev, *err_ev, *timer;
    char status[512];             /* a status line being read */
    size_t nstatus;
    char last_err[512];           /* the child's last stderr line (or "error" message) */
    char errline[512];            /* the stderr line being read */
    size_t nerrline;
    int ready;
    px_upgrade_done_fn done;
    void *arg;
};

/* ---- the old process ---- */

static void finish(struct px_upgrade *u, const char *error)
{
    px_upgrade_done_fn done = u->done;
    u->done = NULL;
    if (u->timer)
        event_del(u->timer);
    if (done)
        done(u->arg, u->pid, error);
}

/* The child is gone (or is going): say why, with its exit status when it
 * has one by now. */
static void fail_child(struct px_upgrade *u, const char *what)
{
    char msg[1200];
    int st = 0;
    pid_t r = 0;
    if (u->pid > 0) {
        /* EOF on both pipes comes at its exit: give it a moment to be reaped */
        for (int i = 0; i < 100 && (r = waitpid(u->pid, &st, WNOHANG)) == 0; i++)
            usleep(10000);
        if (r == 0) {
            kill(u->pid, SIGKILL);
            r = waitpid(u->pid, &st, 0);
        }
        if (r == u->pid)
            u->pid = -u->pid; /* reaped: nothing to kill later */
    }
    char how[96] = "";
    if (r > 0 && WIFEXITED(st))
        snprintf(how, sizeof(how), " (it exited with status %d)", WEXITSTATUS(st));
    else if (r > 0 && WIFSIGNALED(st))
        snprintf(how, sizeof(how), " (it was killed by signal %d)", WTERMSIG(st));
    snprintf(msg, sizeof(msg), "%s%s%s%s", what, how, u->last_err[0] ? ": " : "", u->last_err);
    finish(u, msg);
}

static void set_last_err(struct px_upgrade *u, const char *line, size_t n)
{
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' '))
        n--;
    if (n == 0)
        return;
    if (n >= sizeof(u->last_err))
        n = sizeof(u->last_err) - 1;
    memcpy(u->last_err, line, n);
    u->last_err[n] = '\0';
}

/* The child's stderr until it is ready: passed on to ours, its last line kept. */
static void on_err(evutil_socket_t fd, short what, void *arg)
{
    struct px_upgrade *u = arg;
    char buf[4096];
    PX_UNUSED(what);
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        event_del(u->err_ev);
        if (u->nerrline)
            set_last_err(u, u->errline, u->nerrline);
        u->nerrline = 0;
        return;
    }
    if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
        /* our stderr is gone: the line is still kept */
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            set_last_err(u, u->errline, u->nerrline);
            u->nerrline = 0;
        } else if (u->nerrline < sizeof(u->errline)) {
            u->errline[u->nerrline++] = buf[i];
        }
    }
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
    struct px_upgrade *u = arg;
    char buf[512];
    PX_UNUSED(what);
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        event_del(u->status_ev);
        if (!u->ready && u->done) {
            /* what it wrote to stderr last may still be in the pipe */
            on_err(u->err_fd, EV_READ, u);
            fail_child(u, "the new process ended before it was ready");
        }
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] != '\n') {
            if (u->nstatus < sizeof(u->status) - 1)
                u->status[u->nstatus++] = buf[i];
            continue;
        }
        u->status[u->nstatus] = '\0';
        u->nstatus = 0;
        if (strncmp(u->status, "ready ", 6) == 0 && !u->ready) {
            u->ready = 1;
            finish(u, NULL);
            return; /* u may be freed */
        }
        if (strncmp(u->status, "error ", 6) == 0)
            set_last_err(u, u->status + 6, strlen(u->status + 6));
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct px_upgrade *u = arg;
    PX_UNUSED(fd);
    PX_UNUSED(what);
    if (u->ready || u->done == NULL)
        return;
    kill(u->pid, SIGKILL);
    fail_child(u, "the new process was not ready within the timeout");
}

/* Async-signal-safe: the child of a threaded process may call nothing else
 * before execve. */
static void child_fail(int fd, const char *what, int e)
{
    char num[16];
    int n = 0;
    char rev[16];
    do {
        rev[n++] = (char)('0' + e % 10);
        e /= 10;
    } while (e && n < (int)sizeof(rev));
    for (int i = 0; i < n; i++)
        num[i] = rev[n - 1 - i];
    if (write(fd, "error ", 6) < 0 || write(fd, what, strlen(what)) < 0 || write(fd, " (errno ", 8) < 0 ||
        write(fd, num, (size_t)n) < 0 || write(fd, ")\n", 2) < 0)
        _exit(127);
    _exit(127);
}

static int put_fd(char *env, size_t cap, size_t *len, const char *name, const int *fds, int n)
{
    if (n == 0)
        return 0; /* none: not named */
    int w = snprintf(env + *len, cap - *len, "%s%s=", *len && env[*len - 1] != '=' ? "," : "", name);
    if (w < 0 || (size_t)w >= cap - *len)
        return -1;
    *len += (size_t)w;
    for (int i = 0; i < n; i++) {
        w = snprintf(env + *len, cap - *len, "%s%d", i ? ":" : "", fds[i]);
        if (w < 0 || (size_t)w >= cap - *len)
            return -1;
        *len += (size_t)w;
    }
    return 0;
}

struct px_upgrade *px_upgrade_spawn(struct event_base *base, const char *binary, const char *config_path,
                                    const struct px_upgrade_handover *h, unsigned timeout_ms,
                                    px_upgrade_done_fn done, void *arg, char *err, size_t errlen)
{
    int status[2] = {-1, -1}, errp[2] = {-1, -1}, carry = -1, olderr = -1;
    char **envp = NULL;
    struct px_upgrade *u = NULL;
    char env[2048];
    size_t len = 0;

    if (binary[0] != '/') {
        snprintf(err, errlen, "binary %s: an absolute path is needed", binary);
        return NULL;
    }
    if (access(binary, X_OK) < 0) {
        snprintf(err, errlen, "binary %s: %s", binary, strerror(errno));
        return NULL;
    }
    if ((u = calloc(1, sizeof(*u))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    u->base = base;
    u->status_fd = u->err_fd = -1;
    u->done = done;
    u->arg = arg;
    if (pipe2(status, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
        (carry = memfd_create("proxyd-carry", MFD_CLOEXEC)) < 0 ||
        ((olderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3)) < 0 && errno != EBADF)) {
        snprintf(err, errlen, "upgrade: %s", strerror(errno));
        goto fail;
    }
    for (size_t off = 0; off < h->carrylen;) {
        ssize_t w = write(carry, h->carry + off, h->carrylen - off);
        if (w < 0) {
            snprintf(err, errlen, "upgrade: writing the carry-over: %s", strerror(errno));
            goto fail;
        }
        off += (size_t)w;
    }
    lseek(carry, 0, SEEK_SET);
    len = (size_t)snprintf(env, sizeof(env), PX_UPGRADE_ENV "=");
    if (put_fd(env, sizeof(env), &len, "status", &status[1], 1) < 0 ||
        put_fd(env, sizeof(env), &len, "stderr", &olderr, olderr >= 0) < 0 ||
        put_fd(env, sizeof(env), &len, "carry", &carry, 1) < 0 ||
        put_fd(env, sizeof(env), &len, "control", &h->control, h->control >= 0) < 0 ||
        put_fd(env, sizeof(env), &len, "metrics", &h->metrics, h->metrics >= 0) < 0 ||
        put_fd(env, sizeof(env), &len, "http", h->http, h->nhttp) < 0 ||
        put_fd(env, sizeof(env), &len, "https", h->https, h->nhttps) < 0) {
        snprintf(err, errlen, "upgrade: too many descriptors");
        goto fail;
    }
    /* our environment without a stale PROXYD_UPGRADE or systemd's LISTEN_* */
    size_t ne = 0;
    while (environ[ne])
        ne++;
    if ((envp = calloc(ne + 2, sizeof(*envp))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], PX_UPGRADE_ENV "=", sizeof(PX_UPGRADE_ENV)) != 0 &&
            strncmp(environ[i], "LISTEN_", 7) != 0)
            envp[k++] = environ[i];
    envp[k++] = env;
    char *argv[] = {(char *)binary, (char *)"-c", (char *)config_path, NULL};

    int keep[8 + 2 * PX_MAX_WORKERS], nkeep = 0;
    keep[nkeep++] = status[1];
    if (olderr >= 0) /* our stderr was closed: the new process gets none either */
        keep[nkeep++] = olderr;
    keep[nkeep++] = carry;
    if (h->control >= 0)
        keep[nkeep++] = h->control;
    if (h->metrics >= 0)
        keep[nkeep++] = h->metrics;
    for (int i = 0; i < h->nhttp; i++)
        keep[nkeep++] = h->http[i];
    for (int i = 0; i < h->nhttps; i++)
        keep[nkeep++] = h->https[i];

    u->pid = fork();
    if (u->pid < 0) {
        snprintf(err, errlen, "upgrade: fork: %s", strerror(errno));
        goto fail;
    }
    if (u->pid == 0) {
        /* the child: only async-signal-safe calls until execve */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (dup2(errp[1], STDERR_FILENO) < 0)
            child_fail(status[1], "dup2", errno);
        for (int i = 0; i < nkeep; i++)
            if (fcntl(keep[i], F_SETFD, 0) < 0)
                child_fail(status[1], "fcntl", errno);
        execve(binary, argv, envp);
        child_fail(status[1], "execve", errno);
    }
    free(envp);
    envp = NULL;
    close(status[1]);
    close(errp[1]);
    close(carry);
    if (olderr >= 0)
        close(olderr);
    u->status_fd = status[0];
    u->err_fd = errp[0];
    evutil_make_socket_nonblocking(u->status_fd);
    evutil_make_socket_nonblocking(u->err_fd);
    u->status_ev = event_new(base, u->status_fd, EV_READ | EV_PERSIST, on_status, u);
    u->err_ev = event_new(base, u->err_fd, EV_READ | EV_PERSIST, on_err, u);
    u->timer = evtimer_new(base, on_timeout, u);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    if (u->status_ev == NULL || u->err_ev == NULL || u->timer == NULL || event_add(u->status_ev, NULL) < 0 ||
        event_add(u->err_ev, NULL) < 0 || event_add(u->timer, &tv) < 0) {
        snprintf(err, errlen, "out of memory");
        px_upgrade_free(u);
        return NULL;
    }
    return u;
fail:
    free(envp);
    int fds[] = {status[0], status[1], errp[0], errp[1], carry, olderr};
    for (size_t i = 0; i < PX_ARRAY_LEN(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(u);
    return NULL;
}

void px_upgrade_free(struct px_upgrade *u)
{
    if (u == NULL)
        return;
    struct event *evs[] = {u->status_ev, u->err_ev, u->timer};
    for (size_t i = 0; i < PX_ARRAY_LEN(evs); i++)
        if (evs[i])
            event_free(evs[i]);
    if (!u->ready && u->pid > 0) {
        kill(u->pid, SIGKILL);
        waitpid(u->pid, NULL, 0);
    }
    if (u->status_fd >= 0)
        close(u->status_fd);
    if (u->err_fd >= 0)
        close(u->err_fd);
    free(u);
}

/* ---- the new process ---- */

static int parse_fds(const char *v, int *out, int max, int *n)
{
    *n = 0;
    while (*v && *v != ',') {
        char *end;
        long fd = strtol(v, &end, 10);
        if (end == v || fd < 0 || fd > 65535 || *n == max)
            return -1;
        out[(*n)++] = (int)fd;
        v = end;
        if (*v == ':')
            v++;
    }
    return 0;
}

static int check_fd(int fd, int listener, char *err, size_t errlen)
{
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        snprintf(err, errlen, PX_UPGRADE_ENV ": descriptor %d: %s", fd, strerror(errno));
        return -1;
    }
    if (listener) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            snprintf(err, errlen, PX_UPGRADE_ENV ": descriptor %d: %s", fd, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int px_upgrade_inherited(struct px_upgrade_inherit *in, char *err, size_t errlen)
{
    const char *env = getenv(PX_UPGRADE_ENV);
    int carry = -1, one, n;
    memset(in, 0, sizeof(*in));
    in->status_fd = in->stderr_fd = in->control_fd = in->metrics_fd = -1;
    if (env == NULL)
        return 0;
    char copy[2048];
    snprintf(copy, sizeof(copy), "%s", env);
    unsetenv(PX_UPGRADE_ENV);
    for (const char *p = copy; *p;) {
        const char *eq = strchr(p, '=');
        if (eq == NULL)
            goto bad;
        size_t nl = (size_t)(eq - p);
        const char *v = eq + 1;
#define KEY(s) (nl == sizeof(s) - 1 && strncmp(p, s, nl) == 0)
        if (KEY("http")) {
            if (parse_fds(v, in->http, PX_MAX_WORKERS, &in->nhttp) < 0)
                goto bad;
        } else if (KEY("https")) {
            if (parse_fds(v, in->https, PX_MAX_WORKERS, &in->nhttps) < 0)
                goto bad;
        } else if (KEY("status") || KEY("stderr") || KEY("carry") || KEY("control") || KEY("metrics")) {
            if (parse_fds(v, &one, 1, &n) < 0 || n != 1)
                goto bad;
            if (KEY("status"))
                in->status_fd = one;
            else if (KEY("stderr"))
                in->stderr_fd = one;
            else if (KEY("carry"))
                carry = one;
            else if (KEY("metrics"))
                in->metrics_fd = one;
            else
                in->control_fd = one;
        }
#undef KEY
        const char *comma = strchr(v, ',');
        p = comma ? comma + 1 : v + strlen(v);
    }
    if (in->status_fd < 0 || carry < 0)
        goto bad;
    if (check_fd(in->status_fd, 0, err, errlen) < 0 || check_fd(carry, 0, err, errlen) < 0 ||
        (in->stderr_fd >= 0 && check_fd(in->stderr_fd, 0, err, errlen) < 0) ||
        (in->control_fd >= 0 && check_fd(in->control_fd, 1, err, errlen) < 0) ||
        (in->metrics_fd >= 0 && check_fd(in->metrics_fd, 1, err, errlen) < 0))
        goto fail;
    for (int i = 0; i < in->nhttp; i++)
        if (check_fd(in->http[i], 1, err, errlen) < 0)
            goto fail;
    for (int i = 0; i < in->nhttps; i++)
        if (check_fd(in->https[i], 1, err, errlen) < 0)
            goto fail;
    struct stat st;
    if (fstat(carry, &st) < 0) {
        snprintf(err, errlen, PX_UPGRADE_ENV ": carry-over: %s", strerror(errno));
        goto fail;
    }
    in->carrylen = (size_t)st.st_size;
    if ((in->carry = malloc(in->carrylen ? in->carrylen : 1)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t off = 0; off < in->carrylen;) {
        ssize_t r = pread(carry, in->carry + off, in->carrylen - off, (off_t)off);
        if (r <= 0) {
            snprintf(err, errlen, PX_UPGRADE_ENV ": reading the carry-over: %s", r < 0 ? strerror(errno) : "short");
            goto fail;
        }
        off += (size_t)r;
    }
    close(carry);
    return 1;
bad:
    snprintf(err, errlen, PX_UPGRADE_ENV ": malformed (%s)", copy);
fail:
    if (carry >= 0)
        close(carry);
    return -1;
}

void px_upgrade_ready(struct px_upgrade_inherit *in)
{
    char line[64];
    if (in->status_fd < 0)
        return;
    if (in->stderr_fd >= 0) {
        dup2(in->stderr_fd, STDERR_FILENO); /* our stderr is the old process's again */
        close(in->stderr_fd);
        in->stderr_fd = -1;
    } else {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC); /* the old one had none: not the pipe */
        if (null >= 0) {
            dup2(null, STDERR_FILENO);
            close(null);
        }
    }
    int n = snprintf(line, sizeof(line), "ready %ld\n", (long)getpid());
    if (write(in->status_fd, line, (size_t)n) != n)
        px_log_warn("upgrade: could not tell the old process we are ready: %s", strerror(errno));
    px_upgrade_inherit_free(in);
}

void px_upgrade_failed(struct px_upgrade_inherit *in, const char *why)
{
    char line[1100];
    if (in->status_fd < 0)
        return;
    int n = snprintf(line, sizeof(line), "error %s", why);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line) - 1)
        n = (int)sizeof(line) - 2;
    for (int i = 6; i < n; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[n++] = '\n';
    if (write(in->status_fd, line, (size_t)n) < 0) {
        /* the old process is gone: nobody to tell */
    }
}

void px_upgrade_inherit_free(struct px_upgrade_inherit *in)
{
    if (in->carry) {
        memset(in->carry, 0, in->carrylen); /* ticket keys */
        free(in->carry);
        in->carry = NULL;
    }
    if (in->status_fd >= 0)
        close(in->status_fd);
    if (in->stderr_fd >= 0)
        close(in->stderr_fd);
    in->status_fd = in->stderr_fd = -1;
}
