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
#include "ctl_internal.h"

#define OUT_HIGH (1024 * 1024) /* a client that does not read its replies stops being read */

struct px_ctlserver {
    struct event_base *base;
    struct evconnlistener *listener;
    char *path;
    gid_t sock_gid;
    struct px_ctl_env env;
    struct ctl_conn *conns;
};

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
    struct ucred cr;
    if (!peer_allowed(s, fd, &cr)) {
        size_t n;
        char *line = px_ctl_error_line(NULL, PX_E_FORBIDDEN, "this user may not use the control socket", &n);
        if (line) {
            if (write(fd, line, n) < 0)
                px_log_info("control: a forbidden peer went away");
            free(line);
        }
        px_log_warn("control: refused a peer with uid %u gid %u", (unsigned)cr.uid, (unsigned)cr.gid);
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
    c->next = s->conns;
    s->conns = c;
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
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
    struct px_ctlserver *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = base;
    s->env.srv = srv;
    s->env.dep = dep;
    mode_t old = umask(0777 & ~mode);
    s->listener = evconnlistener_new_bind(base, on_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 64,
                                          (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (s->listener == NULL) {
        snprintf(err, errlen, "control_socket %s: %s", path, strerror(errno));
        free(s->path);
        free(s);
        return NULL;
    }
    chmod(path, mode);
    struct stat st;
    s->sock_gid = stat(path, &st) == 0 ? st.st_gid : getegid();
    px_log_info("control socket %s (mode %04o)", path, mode);
    return s;
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
    unlink(s->path);
    free(s->path);
    free(s);
}
