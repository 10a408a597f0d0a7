/* main.c -- argv, config, listeners, signals, workers. No request logic. */
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "px/common.h"
#include "px/config.h"
#include "px/log.h"
#include "px/routes.h"
#include "px/tls.h"
#include "px/worker.h"

#define DEFAULT_CONFIG "/etc/proxyd/proxyd.ini"

struct server {
    char *config_path;
    struct event_base *base;
    struct px_worker *workers;
    int nworkers;
    _Atomic int running_workers;
    struct event *sig_hup, *sig_term, *sig_int, *sig_usr1, *reap_timer, *stop_timer;
    int stopping;
    uint64_t stop_deadline_ms;
    struct px_addr listen_http, listen_https;
    int has_http, has_https;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: proxyd [-c FILE]      run in the foreground (default %s)\n"
               "       proxyd -t [-c FILE]   check the configuration\n"
               "       proxyd -V             print the version\n",
            DEFAULT_CONFIG);
}

/* One SO_REUSEPORT socket per worker; the kernel spreads connections. */
static int open_listener(struct px_addr *a, char *err, size_t errlen)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (a->ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a->ss, a->len) < 0)
        goto fail;
    if (listen(fd, 4096) < 0)
        goto fail;
    int defer = 1; /* wake us when the first bytes are there */
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer));
    /* port 0: every further worker binds the port the kernel chose */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            ((struct sockaddr_in *)&a->ss)->sin_port = ((struct sockaddr_in *)&ss)->sin_port;
        else if (ss.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&a->ss)->sin6_port = ((struct sockaddr_in6 *)&ss)->sin6_port;
    }
    return fd;
fail:
    snprintf(err, errlen, "listen %s: %s", a->text, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

static unsigned addr_port(const struct px_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

static void log_listening(const char *what, const struct px_addr *a)
{
    char ip[64];
    px_addr_ntop((const struct sockaddr *)&a->ss, ip, sizeof(ip));
    px_log_info("listening %s %s%s%s:%u", what, a->ss.ss_family == AF_INET6 ? "[" : "", ip,
                a->ss.ss_family == AF_INET6 ? "]" : "", addr_port(a));
}

/* Look the user up before anything is bound (a bad name fails the start
 * cleanly); switch after binding. */
static int lookup_user(const char *user, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        snprintf(err, errlen, "user %s: no such user", user);
        return -1;
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

static int drop_privileges(const char *user, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
        snprintf(err, errlen, "dropping to user %s: %s", user, strerror(errno));
        return -1;
    }
    return 0;
}

static void notify_all(struct server *s, unsigned what)
{
    for (int i = 0; i < s->nworkers; i++)
        px_worker_notify(&s->workers[i], what);
}

static int same_addr(const struct px_addr *a, int has_a, const struct px_addr *b, int has_b)
{
    if (has_a != has_b)
        return 0;
    return !has_a || strcmp(a->text, b->text) == 0;
}

static void reload(struct server *s)
{
    char err[512];
    struct px_config *cfg = NULL;
    if (px_config_load(s->config_path, &cfg, err, sizeof(err)) < 0) {
        px_log_error("reload failed, keeping the running configuration: %s", err);
        return;
    }
    if (!same_addr(&cfg->listen_http, cfg->has_listen_http, &s->listen_http, s->has_http) ||
        !same_addr(&cfg->listen_https, cfg->has_listen_https, &s->listen_https, s->has_https))
        px_log_warn("reload: listener addresses change only on restart");
    if (cfg->workers != s->nworkers)
        px_log_warn("reload: the number of workers changes only on restart");
    if (px_log_open(cfg->error_log, cfg->access_log, err, sizeof(err)) < 0) {
        px_log_error("reload failed, keeping the running configuration: %s", err);
        px_config_free(cfg);
        return;
    }
    struct px_routes *r = px_routes_build(cfg, err, sizeof(err));
    if (r == NULL) {
        px_log_error("reload failed, keeping the running configuration: %s", err);
        return;
    }
    px_routes_publish(r);
    notify_all(s, PX_WN_ROUTES | PX_WN_RELOAD);
    px_log_info("configuration reloaded from %s", s->config_path);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;
    switch (sig) {
    case SIGHUP:
        if (!s->stopping)
            reload(s);
        break;
    case SIGUSR1:
        px_log_reopen();
        px_log_info("log files reopened");
        break;
    case SIGTERM:
    case SIGINT:
        if (s->stopping) {
            px_log_warn("second stop signal: exiting now");
            notify_all(s, PX_WN_KILL);
            break;
        }
        s->stopping = 1;
        s->stop_deadline_ms = px_now_ms() + px_routes_config(px_routes_peek())->shutdown_timeout_ms;
        px_log_info("stopping: finishing in-flight requests (up to %llu ms)",
                    (unsigned long long)px_routes_config(px_routes_peek())->shutdown_timeout_ms);
        notify_all(s, PX_WN_STOP);
        struct timeval tv = {0, 50000};
        event_add(s->stop_timer, &tv);
        break;
    }
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    PX_UNUSED(arg);
    px_routes_reap();
    const struct px_routes *r = px_routes_peek();
    if (r)
        /* the ticket-key ring is the one mutable part of a snapshot: it has its own lock */
        px_tls_rotate_tickets((struct px_tls *)px_routes_tls(r), px_now_ms());
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    if (atomic_load(&px_workers_running) == 0) {
        event_base_loopexit(s->base, NULL);
        return;
    }
    if (px_now_ms() >= s->stop_deadline_ms) {
        px_log_warn("shutdown_timeout reached: closing the remaining connections");
        notify_all(s, PX_WN_KILL);
        s->stop_deadline_ms = UINT64_MAX;
    }
    struct timeval tv = {0, 50000};
    event_add(s->stop_timer, &tv);
}

int main(int argc, char **argv)
{
    const char *config_path = DEFAULT_CONFIG;
    int test_only = 0;
    int opt;
    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'V':
            printf("proxyd %s\n", PX_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }

    char err[1024];
    struct px_config *cfg = NULL;
    if (px_config_load(config_path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (test_only) {
        /* like nginx -t: also load the certificates */
        struct px_routes *r = px_routes_build(cfg, err, sizeof(err));
        if (r == NULL) {
            fprintf(stderr, "%s: %s\n", config_path, err);
            return 1;
        }
        px_routes_publish(r);
        px_routes_shutdown();
        printf("configuration ok\n");
        return 0;
    }

    signal(SIGPIPE, SIG_IGN);
    struct server s;
    memset(&s, 0, sizeof(s));
    s.config_path = (char *)config_path;
    s.nworkers = cfg->workers > PX_MAX_WORKERS ? PX_MAX_WORKERS : cfg->workers;
    s.has_http = cfg->has_listen_http;
    s.has_https = cfg->has_listen_https;
    s.listen_http = cfg->listen_http;
    s.listen_https = cfg->listen_https;
    int rc = 1;

    if (px_log_open(cfg->error_log, cfg->access_log, err, sizeof(err)) < 0) {
        fprintf(stderr, "proxyd: %s\n", err);
        px_config_free(cfg);
        return 1;
    }
    const char *user = cfg->user && geteuid() == 0 ? strdup(cfg->user) : NULL;
    uid_t uid = 0;
    gid_t gid = 0;
    if (user && lookup_user(user, &uid, &gid, err, sizeof(err)) < 0) {
        px_log_error("%s", err);
        px_config_free(cfg);
        free((char *)user);
        return 1;
    }
    px_routes_set_nworkers(s.nworkers);
    struct px_routes *routes = px_routes_build(cfg, err, sizeof(err));
    if (routes == NULL) {
        px_log_error("%s", err);
        return 1;
    }
    px_routes_publish(routes);

    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGUSR1);

    s.workers = calloc((size_t)s.nworkers, sizeof(*s.workers));
    s.base = event_base_new();
    if (s.workers == NULL || s.base == NULL) {
        px_log_error("out of memory");
        goto out;
    }
    for (int i = 0; i < s.nworkers; i++) {
        if (px_worker_init(&s.workers[i], i, err, sizeof(err)) < 0) {
            px_log_error("%s", err);
            goto out;
        }
        if (s.has_http) {
            int fd = open_listener(&s.listen_http, err, sizeof(err));
            if (fd < 0 || px_worker_add_listener(&s.workers[i], fd, 0) < 0) {
                px_log_error("%s", err);
                goto out;
            }
        }
        if (s.has_https) {
            int fd = open_listener(&s.listen_https, err, sizeof(err));
            if (fd < 0 || px_worker_add_listener(&s.workers[i], fd, 1) < 0) {
                px_log_error("%s", err);
                goto out;
            }
        }
    }
    if (s.has_http)
        log_listening("http", &s.listen_http);
    if (s.has_https)
        log_listening("https", &s.listen_https);
    if (user && drop_privileges(user, uid, gid, err, sizeof(err)) < 0) {
        px_log_error("%s", err);
        goto out;
    }

    s.sig_hup = evsignal_new(s.base, SIGHUP, on_signal, &s);
    s.sig_term = evsignal_new(s.base, SIGTERM, on_signal, &s);
    s.sig_int = evsignal_new(s.base, SIGINT, on_signal, &s);
    s.sig_usr1 = evsignal_new(s.base, SIGUSR1, on_signal, &s);
    s.reap_timer = event_new(s.base, -1, EV_PERSIST, on_reap, &s);
    s.stop_timer = evtimer_new(s.base, on_stop_timer, &s);
    evsignal_add(s.sig_hup, NULL);
    evsignal_add(s.sig_term, NULL);
    evsignal_add(s.sig_int, NULL);
    evsignal_add(s.sig_usr1, NULL);
    struct timeval one = {1, 0};
    event_add(s.reap_timer, &one);

    /* workers never take the process signals */
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (int i = 0; i < s.nworkers; i++) {
        atomic_fetch_add(&px_workers_running, 1);
        if (px_worker_start(&s.workers[i]) != 0) {
            atomic_fetch_sub(&px_workers_running, 1);
            px_log_error("cannot start worker %d", i);
            notify_all(&s, PX_WN_KILL);
            break;
        }
        s.workers[i].started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    px_log_info("proxyd %s started: %d workers, pid %d", PX_VERSION, s.nworkers, (int)getpid());

    event_base_dispatch(s.base);
    rc = 0;
    px_log_info("stopped");
out:
    for (int i = 0; s.workers && i < s.nworkers; i++)
        if (s.workers[i].started)
            px_worker_join(&s.workers[i]);
    for (int i = 0; s.workers && i < s.nworkers; i++)
        px_worker_free(&s.workers[i]);
    free(s.workers);
    if (s.sig_hup) {
        event_free(s.sig_hup);
        event_free(s.sig_term);
        event_free(s.sig_int);
        event_free(s.sig_usr1);
        event_free(s.reap_timer);
        event_free(s.stop_timer);
    }
    if (s.base)
        event_base_free(s.base);
    px_routes_shutdown();
    free((char *)user);
    px_log_close();
    return rc;
}
