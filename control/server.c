/* control/server.c -- the control socket: a Unix stream socket on the main
 * thread's event base, peers checked with SO_PEERCRED, newline-delimited
 * JSON requests answered in order (control/commands.c does the work). */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "px/common.h"
#include "px/control.h"
#include "px/control_server.h"
#include "px/deploy.h"
#include "px/log.h"
#include "px/stats.h"
#include "ctl_internal.h"

#define OUT_HIGH (1024 * 1024) /* a client that does not read its replies stops being read */

struct px_ctlserver {
    struct event_base *base;
    struct evconnlistener *listener;
    char *path;
    gid_t sock_gid;
    struct px_ctl_env env;
    int handed_over;          /* a binary upgrade took the socket: no accept, no unlink */
    struct ctl_conn *conns;
    struct event *rate_timer; /* samples requests_total every second (env.rate) */
};

/* ---- the audit trail (px/control_server.h) ---- */

void px_ctl_audit_begin(const char *cmd, const char *service, const char *peer)
{
    px_log_notice("control: %s%s%s %s received", cmd, service ? " service=" : "", service ? service : "", peer);
}

void px_ctl_audit_finish(const char *cmd, const char *service, const char *peer, enum px_err code,
                         const char *message, uint64_t started_ms)
{
    double secs = (double)(px_now_ms() - started_ms) / 1000.0;
    if (code == PX_E_OK) {
        px_log_notice("control: %s%s%s %s ok %.3fs", cmd, service ? " service=" : "", service ? service : "", peer,
                      secs);
        return;
    }
    /* one line whatever the message holds (a config path, a CA's detail) */
    char clean[400];
    size_t n = 0;
    for (const char *m = message ? message : ""; *m && n < sizeof(clean) - 1; m++)
        clean[n++] = (unsigned char)*m < 0x20 || *m == 0x7f ? '?' : *m;
    clean[n] = '\0';
    px_log_notice("control: %s%s%s %s failed (%s) %.3fs%s%s", cmd, service ? " service=" : "",
                  service ? service : "", peer, px_err_name(code), secs, n ? ": " : "", clean);
}

static void audit_peer(const struct ctl_conn *c, char *buf, size_t n)
{
    snprintf(buf, n, "uid=%u pid=%ld", (unsigned)c->uid, (long)c->pid);
}

void px_ctl_audit_start(struct ctl_conn *c, const char *cmd, const char *service)
{
    char peer[64];
    c->audit_cmd = cmd;
    snprintf(c->audit_service, sizeof(c->audit_service), "%s", service ? service : "");
    c->audit_started_ms = px_now_ms();
    audit_peer(c, peer, sizeof(peer));
    px_ctl_audit_begin(cmd, service, peer);
}

void px_ctl_audit_end(struct ctl_conn *c, enum px_err code, const char *message)
{
    char peer[64];
    if (c->audit_cmd == NULL)
        return;
    audit_peer(c, peer, sizeof(peer));
    px_ctl_audit_finish(c->audit_cmd, c->audit_service[0] ? c->audit_service : NULL, peer, code, message,
                        c->audit_started_ms);
    c->audit_cmd = NULL;
}

/* ---- the request rate ---- */

static void rate_sample(struct px_ctl_rate *r)
{
    struct px_stats_snapshot st;
    px_stats_sum(&st);
    r->total[r->next] = st.requests_total;
    r->at_ms[r->next] = px_now_ms();
    r->next = (r->next + 1) % PX_CTL_RATE_SLOTS;
    if (r->n < PX_CTL_RATE_SLOTS)
        r->n++;
}

static void on_rate_timer(evutil_socket_t fd, short what, void *arg)
{
    rate_sample(arg);
}

void px_ctl_rate_get(const struct px_ctl_rate *r, uint64_t now_total, uint64_t now_ms, uint64_t *delta,
                     double *window_s)
{
    *delta = 0;
    *window_s = 0;
    if (r->n == 0)
        return;
    unsigned oldest = r->n < PX_CTL_RATE_SLOTS ? 0 : r->next;
    if (now_ms <= r->at_ms[oldest])
        return;
    *delta = now_total >= r->total[oldest] ? now_total - r->total[oldest] : 0;
    *window_s = (double)(now_ms - r->at_ms[oldest]) / 1000.0;
}

static void conn_free(struct ctl_conn *c)
{
    struct px_ctlserver *s = c->srv;
    for (struct ctl_conn **pp = &s->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    if (c->busy)
        px_ctl_forget(&s->env, c);
    if (c->audit_cmd) {
        char peer[64];
        audit_peer(c, peer, sizeof(peer));
        px_log_notice("control: %s%s%s %s client went away after %.3fs (the operation goes on)", c->audit_cmd,
                      c->audit_service[0] ? " service=" : "", c->audit_service, peer,
                      (double)(px_now_ms() - c->audit_started_ms) / 1000.0);
    }
    json_decref(c->op_id);
    free(c->tls_note);
    bufferevent_free(c->bev);
    free(c);
}

/* Write a line made by the px_ctl_*_line builders (takes it). */
void px_ctl_conn_send(struct ctl_conn *c, char *line, size_t len)
{
    if (line == NULL) {
        c->closing = 1;
        return;
    }
    bufferevent_write(c->bev, line, len);
    free(line);
}

static void process(struct ctl_conn *c);

/* A long command finished: take the next request line. It may finish
 * before its handler returned (refused at once): then process() is on the
 * stack and goes on by itself. */
void px_ctl_conn_done(struct ctl_conn *c)
{
    c->busy = 0;
    json_decref(c->op_id);
    c->op_id = NULL;
    if (!c->in_process)
        process(c);
}

static void process(struct ctl_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->in_process = 1;
    while (!c->busy && !c->closing) {
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) > OUT_HIGH) {
            bufferevent_disable(c->bev, EV_READ); /* the write callback resumes us */
            break;
        }
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            break;
        size_t look = len < PX_CTL_LINE_MAX + 2 ? len : PX_CTL_LINE_MAX + 2;
        const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
        size_t line_len = 0, consumed = 0;
        enum px_ctl_frame f = px_ctl_frame(buf, look, PX_CTL_LINE_MAX, &c->scanned, &line_len, &consumed);
        if (f == PX_CTL_FRAME_MORE)
            break;
        if (f == PX_CTL_FRAME_TOO_LONG) {
            size_t n;
            char *line = px_ctl_error_line(NULL, PX_E_LINE_TOO_LONG, "request line over 64 KiB", &n);
            px_ctl_conn_send(c, line, n);
            c->closing = 1;
            evbuffer_drain(in, len);
            break;
        }
        struct px_ctl_request req;
        char err[512];
        memset(&req, 0, sizeof(req));
        enum px_err rc = px_ctl_request_parse(buf, line_len, &req, err, sizeof(err));
        evbuffer_drain(in, consumed); /* the request is parsed: the line is done with */
        if (rc != PX_E_OK) {
            size_t n;
            char *line = px_ctl_error_line(req.id, rc, err, &n);
            px_ctl_conn_send(c, line, n);
        } else {
            px_ctl_handle(&c->srv->env, c, &req);
        }
        px_ctl_request_clear(&req);
    }
    c->in_process = 0;
    if (c->closing) {
        bufferevent_disable(c->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            conn_free(c);
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    process(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct ctl_conn *c = arg;
    if (c->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            conn_free(c);
        return;
    }
    if (!(bufferevent_get_enabled(bev) & EV_READ)) {
        bufferevent_enable(bev, EV_READ);
        process(c);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct ctl_conn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
            evbuffer_get_length(bufferevent_get_output(bev)) && !c->busy) {
            c->closing = 1; /* the client half-closed: finish writing the replies */
            return;
        }
        conn_free(c);
    }
}

/* root, proxyd's own user, or the socket's group (primary or supplementary). */
static int peer_allowed(struct px_ctlserver *s, int fd, struct ucred *cr)
{
    socklen_t l = sizeof(*cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cr, &l) < 0)
        return 0;
    if (cr->uid == 0 || cr->uid == geteuid() || cr->gid == s->sock_gid)
        return 1;
    struct passwd *pw = getpwuid(cr->uid);
    if (pw == NULL)
        return 0;
    gid_t groups[64];
    int ng = 64;
    if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &ng) < 0)
        return 0;
    for (int i = 0; i < ng; i++)
        if (groups[i] == s->sock_gid)
            return 1;
    return 0;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct px_ctlserver *s = arg;
    struct ucred cr = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
    if (!peer_allowed(s, fd, &cr)) {
        size_t n;
        char *line = px_ctl_error_line(NULL, PX_E_FORBIDDEN, "this user may not use the control socket", &n);
        if (line) {
            if (write(fd, line, n) < 0)
                px_log_info("control: a forbidden peer went away");
            free(line);
        }
        px_log_notice("control: refused a peer uid=%u gid=%u pid=%ld", (unsigned)cr.uid, (unsigned)cr.gid,
                      (long)cr.pid);
        close(fd);
        return;
    }
    struct ctl_conn *c = calloc(1, sizeof(*c));
    struct bufferevent *bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c == NULL || bev == NULL) {
        free(c);
        if (bev)
            bufferevent_free(bev);
        else
            close(fd);
        return;
    }
    c->srv = s;
    c->bev = bev;
    c->uid = cr.uid;
    c->pid = cr.pid;
    c->next = s->conns;
    s->conns = c;
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* The part of a start that binds nothing: fd listening already (bound
 * here, or inherited), s->path set. */
static struct px_ctlserver *ctl_make(struct event_base *base, const char *path, int fd, unsigned mode,
                                     struct px_server *srv, struct px_deployer *dep, char *err, size_t errlen)
{
    struct px_ctlserver *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = base;
    s->env.srv = srv;
    s->env.dep = dep;
    s->listener = evconnlistener_new(base, on_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (s->listener == NULL) {
        snprintf(err, errlen, "control_socket %s: %s", path, strerror(errno));
        free(s->path);
        free(s);
        return NULL;
    }
    rate_sample(&s->env.rate);
    s->rate_timer = event_new(base, -1, EV_PERSIST, on_rate_timer, &s->env.rate);
    struct timeval second = {1, 0};
    if (s->rate_timer)
        event_add(s->rate_timer, &second);
    struct stat st;
    s->sock_gid = stat(path, &st) == 0 ? st.st_gid : getegid();
    px_log_info("control socket %s (mode %04o)", path, mode);
    return s;
}

struct px_ctlserver *px_ctlserver_new(struct event_base *base, const char *path, unsigned mode,
                                      struct px_server *srv, struct px_deployer *dep, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "control_socket %s: path too long", path);
        return NULL;
    }
    strcpy(sun.sun_path, path);
    /* A live socket means another proxyd answers there: refuse. A stale one
     * (nobody listening) is replaced. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        int live = connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0;
        close(probe);
        if (live) {
            snprintf(err, errlen, "control_socket %s: another process answers there", path);
            return NULL;
        }
    }
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    mode_t old = umask(0777 & ~mode);
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (rc < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "control_socket %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    chmod(path, mode);
    struct px_ctlserver *s = ctl_make(base, path, fd, mode, srv, dep, err, errlen);
    if (s == NULL) {
        close(fd);
        unlink(path);
    }
    return s;
}

struct px_ctlserver *px_ctlserver_adopt(struct event_base *base, const char *path, int fd, unsigned mode,
                                        struct px_server *srv, struct px_deployer *dep, char *err, size_t errlen)
{
    return ctl_make(base, path, fd, mode, srv, dep, err, errlen);
}

int px_ctlserver_fd(const struct px_ctlserver *s)
{
    return s && s->listener ? evconnlistener_get_fd(s->listener) : -1;
}

void px_ctlserver_hand_over(struct px_ctlserver *s)
{
    if (s == NULL || s->handed_over)
        return;
    s->handed_over = 1;
    if (s->listener)
        evconnlistener_disable(s->listener);
}

void px_ctlserver_shutdown(struct px_ctlserver *s)
{
    if (s == NULL || s->env.stopping)
        return;
    s->env.stopping = 1;
    px_deployer_shutdown(s->env.dep); /* deploys and rollbacks answer through their callbacks */
    /* what is left (cert renew) is answered here and forgotten by its module */
    for (int again = 1; again;) {
        again = 0;
        for (struct ctl_conn *c = s->conns; c; c = c->next) {
            if (!c->busy)
                continue;
            size_t n;
            char *line = px_ctl_error_line(c->op_id, PX_E_SHUTTING_DOWN,
                                           "proxyd is stopping: the operation was abandoned", &n);
            px_ctl_forget(&s->env, c);
            px_ctl_audit_end(c, PX_E_SHUTTING_DOWN, "proxyd is stopping: the operation was abandoned");
            px_ctl_conn_send(c, line, n);
            px_ctl_conn_done(c); /* may take the next request, or free c: start over */
            again = 1;
            break;
        }
    }
}

/* Write what is queued for c now (the loop is about to stop): a local
 * client's socket buffer takes a reply at once; bounded at 200 ms. */
static void flush_now(struct ctl_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    uint64_t deadline = px_now_ms() + 200;
    while (fd >= 0 && evbuffer_get_length(out) > 0 && px_now_ms() < deadline) {
        if (evbuffer_write(out, fd) < 0) {
            if (errno != EAGAIN && errno != EINTR)
                break;
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 20);
        }
    }
}

void px_ctlserver_free(struct px_ctlserver *s)
{
    if (s == NULL)
        return;
    while (s->conns) {
        flush_now(s->conns);
        conn_free(s->conns);
    }
    if (s->listener)
        evconnlistener_free(s->listener);
    if (s->rate_timer)
        event_free(s->rate_timer);
    if (!s->handed_over)
        unlink(s->path);
    free(s->path);
    free(s);
}
