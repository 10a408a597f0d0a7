/* server.c -- process lifecycle: listeners, privilege drop, signals,
 * workers, all-or-nothing reload, graceful stop. See px/server.h. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "px/acme.h"
#include "px/acme_manager.h"
#include "px/carry.h"
#include "px/challenge.h"
#include "px/cluster.h"
#include "px/common.h"
#include "px/config.h"
#include "px/control_server.h"
#include "px/deploy.h"
#include "px/health.h"
#include "px/log.h"
#include "px/metrics.h"
#include "px/routes.h"
#include "px/server.h"
#include "px/stats.h"
#include "px/status.h"
#include "px/systemd.h"
#include "px/target.h"
#include "px/tls.h"
#include "px/upgrade.h"
#include "px/worker.h"

struct px_server {
    char *config_path;
    struct event_base *base;
    struct px_worker *workers;
    int nworkers;
    struct event *sig_hup, *sig_term, *sig_int, *sig_usr1, *sig_usr2, *reap_timer, *stop_timer;
    int stopping;
    int running;                   /* workers were started */
    uint64_t stop_deadline_ms;
    struct px_addr listen_http, listen_https;
    int has_http, has_https;
    uint64_t started_ms;
    struct px_deployer *deployer;  /* services proxyctl deploys, on this base */
    struct px_worker_answers *answers; /* the workers' answers, read on this base */
    struct px_ctlserver *control;  /* the control socket */
    struct px_metrics *metrics;    /* metrics_listen, or NULL */
    struct px_addr metrics_listen; /* as configured at start (a reload keeps it) */
    struct px_monitor *monitor;    /* active health checks of every served target */
    struct px_acme_manager *acme;  /* [acme] enabled: lineages, renewals, the token table */
    struct px_cluster *cluster;    /* [cluster]: shared zones, heartbeats (its settings stay until a restart) */
    struct px_carry carry;         /* what outlives a reload (px/carry.h): every rebuild takes it */
    char *pid_file;                /* written at start, removed at exit if it still names us */
    uint64_t cert_sig;             /* the services' own certificates the TLS part serves (a hash) */
    /* binary upgrade (px/upgrade.h) */
    char *exe;                     /* /proc/self/exe's target at start: the default new binary */
    struct px_upgrade *upgrade;    /* the one in progress, or NULL */
    px_server_upgrade_fn upgrade_done;
    void *upgrade_arg;
    uint64_t upgrade_started_ms;
    int handed_over;               /* a new process serves: this one drains and exits */
    struct px_upgrade_inherit inherit; /* started by an upgrade: what the old process handed over */
};

static void notify_all(struct px_server *s, unsigned what);

static void hook_published(void *arg)
{
    px_server_routes_published(arg);
}

/* ---- ACME: the manager's view of the deployed --tls services, and the
 * TLS part with its lineages ---- */

struct tls_services {
    struct px_acme_service *v;
    const char **hosts;            /* one block for every service's host list */
    size_t n, nhosts;
};

static void count_tls(void *arg, const char *service, char *const *hosts, size_t nhosts)
{
    struct tls_services *t = arg;
    PX_UNUSED(service);
    PX_UNUSED(hosts);
    t->n++;
    t->nhosts += nhosts;
}

/* HTTP-01 proves names, not wildcards: those hosts are left out. */
static void take_tls(void *arg, const char *service, char *const *hosts, size_t nhosts)
{
    struct tls_services *t = arg;
    struct px_acme_service *v = &t->v[t->n++];
    v->service = service;
    v->hosts = t->hosts + t->nhosts;
    for (size_t i = 0; i < nhosts; i++)
        if (hosts[i][0] != '*')
            t->hosts[t->nhosts + v->nhosts++] = hosts[i];
    t->nhosts += v->nhosts;
}

static void sync_acme_services(struct px_server *s)
{
    struct tls_services t = {0};
    if (s->acme == NULL || s->deployer == NULL)
        return;
    px_deployer_each_tls(s->deployer, count_tls, &t);
    t.v = calloc(t.n ? t.n : 1, sizeof(*t.v));
    t.hosts = calloc(t.nhosts ? t.nhosts : 1, sizeof(*t.hosts));
    if (t.v == NULL || t.hosts == NULL) {
        px_log_error("acme: out of memory listing the --tls services");
    } else {
        t.n = t.nhosts = 0;
        px_deployer_each_tls(s->deployer, take_tls, &t);
        px_acme_manager_set_services(s->acme, t.v, t.n);
    }
    free(t.v);
    free(t.hosts);
}

/* The services' own certificates (tls_certificate) of the published table,
 * as a hash: what the TLS part serves is rebuilt when it changes. */
static uint64_t service_certs_sig(void)
{
    const struct px_routes *r = px_routes_peek();
    const struct px_services *t = r ? px_routes_services(r) : NULL;
    uint64_t h = 0;
    for (size_t i = 0; t && i < px_services_count(t); i++) {
        const struct px_service *v = px_services_at(t, i);
        if (v->opts.tls_certificate == NULL)
            continue;
        const char *parts[] = {v->opts.tls_certificate, v->opts.tls_certificate_key};
        h = h ? h : 1469598103934665603ull;
        for (size_t j = 0; j < 2 + v->nhosts; j++)
            for (const char *p = j < 2 ? parts[j] : v->hosts[j - 2]; *p; p++)
                h = (h ^ (unsigned char)*p) * 1099511628211ull;
    }
    return h;
}

/* [tls] with the published services' certificates as sni entries for their
 * hosts (after the sni lines: the operator's word wins), then ACME's. */
static struct px_tls *build_tls(struct px_server *s, const struct px_tls_conf *conf,
                                const struct px_tls_sessions *sessions, char *err, size_t errlen)
{
    const struct px_routes *r = px_routes_peek();
    const struct px_services *t = r ? px_routes_services(r) : NULL;
    size_t cap = conf->nsni, n = conf->nsni;
    for (size_t i = 0; t && i < px_services_count(t); i++)
        cap += px_services_at(t, i)->nhosts;
    struct px_sni_conf *sni = calloc(cap ? cap : 1, sizeof(*sni));
    if (sni == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (conf->nsni) /* conf->sni is NULL without sni lines */
        memcpy(sni, conf->sni, conf->nsni * sizeof(*sni));
    for (size_t i = 0; t && i < px_services_count(t); i++) {
        const struct px_service *v = px_services_at(t, i);
        char why[512];
        /* checked at deploy or load; a file gone since must not fail every later reload */
        if (v->opts.tls_certificate &&
            px_tls_check_pair(v->opts.tls_certificate, v->opts.tls_certificate_key, why, sizeof(why)) < 0) {
            px_log_error("service %s: its certificate is not served: %s", v->name, why);
            continue;
        }
        for (size_t j = 0; v->opts.tls_certificate && j < v->nhosts; j++) {
            int taken = 0;
            for (size_t k = 0; k < n && !taken; k++)
                taken = strcasecmp(sni[k].name, v->hosts[j]) == 0;
            if (!taken)
                sni[n++] = (struct px_sni_conf){v->hosts[j], v->opts.tls_certificate, v->opts.tls_certificate_key, 0};
        }
    }
    struct px_tls_conf c = *conf;
    c.sni = sni;
    c.nsni = n;
    struct px_tls *tls = px_acme_manager_build_tls(s->acme, &c, sessions, err, errlen);
    free(sni);
    return tls;
}

static struct px_tls *tls_provider(void *arg, const struct px_config *cfg, const struct px_tls_sessions *sessions,
                                   char *err, size_t errlen)
{
    struct px_server *s = arg;
    return build_tls(s, &cfg->tls, sessions, err, errlen);
}

static int reload_certs(struct px_server *s, int notify, char *err, size_t errlen)
{
    const struct px_routes *cur = px_routes_peek();
    const struct px_config *cfg = px_routes_config(cur);
    if (!cfg->has_listen_https)
        return 0; /* nothing serves TLS */
    uint64_t sig = service_certs_sig();
    struct px_tls *t = build_tls(s, &cfg->tls, s->carry.sessions, err, errlen);
    if (t == NULL || px_routes_publish_tls(t, err, errlen) < 0)
        return -1;
    s->cert_sig = sig;
    if (notify)
        notify_all(s, PX_WM_ROUTES);
    return 0;
}

int px_server_reload_certs(struct px_server *s, char *err, size_t errlen)
{
    return reload_certs(s, 1, err, errlen);
}

/* A deploy, a reload or the start changed which services bring their own
 * certificate: the TLS part follows (a file gone since it was checked is
 * logged, and the old part keeps serving). */
static void sync_service_certs(struct px_server *s, int notify)
{
    char err[512];
    if (service_certs_sig() != s->cert_sig && reload_certs(s, notify, err, sizeof(err)) < 0)
        px_log_error("services' certificates: %s (the previous certificates keep serving)", err);
}

static int hook_certs_changed(void *arg, char *err, size_t errlen)
{
    return px_server_reload_certs(arg, err, errlen);
}

struct px_acme_manager *px_server_acme(struct px_server *s)
{
    return s->acme;
}

struct px_cluster *px_server_cluster(struct px_server *s)
{
    return s->cluster;
}

/* config_dir, made when missing and given to the user proxyd drops to, who
 * writes there afterwards (an existing one is left as the operator set it). */
static void make_owned_dir(const char *dir, uid_t uid, gid_t gid)
{
    if (mkdir(dir, 0755) < 0) {
        if (errno != EEXIST)
            px_log_warn("cannot create %s: %s", dir, strerror(errno));
        return;
    }
    if (uid != (uid_t)-1 && chown(dir, uid, gid) < 0)
        px_log_warn("%s: chown: %s", dir, strerror(errno));
}

/* A new manager for acme (enabled), with the deployed --tls services. */
static int acme_new(struct px_server *s, const struct px_acme_conf *acme, char *err, size_t errlen)
{
    struct px_acme_manager_hooks h = {hook_certs_changed, s};
    if ((s->acme = px_acme_manager_new(s->base, acme, &h, err, errlen)) == NULL)
        return -1;
    px_acme_manager_set_cluster(s->acme, s->cluster);
    sync_acme_services(s);
    return 0;
}

static void acme_start(struct px_server *s)
{
    char err[1024];
    if (px_acme_manager_start(s->acme, err, sizeof(err)) < 0)
        px_log_error("acme: %s (certificates cannot be obtained until this is fixed)", err);
}

/* After a reload: [acme] turned on, off, or changed. */
static void acme_reload(struct px_server *s, const struct px_acme_conf *acme)
{
    char err[1024];
    if (acme->enabled && s->acme == NULL) {
        if (acme_new(s, acme, err, sizeof(err)) < 0) {
            px_log_error("acme: %s", err);
            return;
        }
        acme_start(s);
    } else if (!acme->enabled && s->acme) {
        px_acme_manager_free(s->acme);
        s->acme = NULL;
        px_log_info("acme: disabled; its certificates are no longer renewed or served");
    } else if (s->acme) {
        px_acme_manager_reconfigure(s->acme, acme);
        return;
    } else {
        return;
    }
    if (px_server_reload_certs(s, err, sizeof(err)) < 0)
        px_log_error("acme: rebuilding the certificates failed, the current ones stay: %s", err);
}

static void hook_broadcast(void *arg, const struct px_wmsg *m)
{
    struct px_server *s = arg;
    for (int i = 0; i < s->nworkers; i++)
        if (px_worker_send(&s->workers[i], m) < 0)
            px_log_error("worker %d: cannot queue a message (out of memory)", i);
}

/* An answer from a worker (main thread). */
static void on_answer(void *arg, const struct px_wmsg *m)
{
    struct px_server *s = arg;
    if (m->type == PX_WA_TARGET_IDLE && s->deployer)
        px_deployer_target_idle(s->deployer, m->u.target.id);
}

static struct px_services *services_provider(void *arg, const struct px_config *cfg, char *err, size_t errlen)
{
    struct px_server *s = arg;
    return px_deployer_services(s->deployer, cfg, err, errlen);
}

/* The directory of a path proxyd writes (state file, control socket):
 * made when missing, like /run/proxyd on a fresh machine, and given to the
 * user proxyd drops to (uid -1: none), who writes there afterwards. */
static void make_parent(const char *path, uid_t uid, gid_t gid)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return;
    *slash = '\0';
    if (mkdir(dir, 0750) < 0) {
        if (errno != EEXIST)
            px_log_warn("cannot create %s: %s", dir, strerror(errno));
        return; /* an existing directory is the operator's: left as it is */
    }
    if (uid != (uid_t)-1 && chown(dir, uid, gid) < 0)
        px_log_warn("%s: chown: %s", dir, strerror(errno));
}

/* nginx's pid file: "PID\n", written once the listeners and the control
 * socket are up (a second instance has failed by then, so it never replaces
 * the pid of the one that runs), before the drop: its directory may be
 * root's (/run). Owned by the user, so that the process can remove it. */
static int write_pid_file(struct px_server *s, const char *path, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    make_parent(path, uid, gid);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (fd < 0 || write(fd, buf, (size_t)n) != n || (uid != (uid_t)-1 && fchown(fd, uid, gid) < 0)) {
        snprintf(err, errlen, "pid_file %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    if ((s->pid_file = strdup(path)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* A failed upgrade: the pid file names this process again (the new one
 * may have written its own before it failed). */
static void rewrite_pid_file(struct px_server *s)
{
    if (s->pid_file == NULL)
        return;
    int fd = open(s->pid_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (fd < 0 || write(fd, buf, (size_t)n) != n)
        px_log_warn("pid_file %s: %s", s->pid_file, strerror(errno));
    if (fd >= 0)
        close(fd);
}

/* Removed at exit only while it still names this process (a new instance
 * may have written its own since). */
static void remove_pid_file(struct px_server *s)
{
    if (s->pid_file == NULL)
        return;
    FILE *f = fopen(s->pid_file, "re");
    long pid = 0;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    if (pid == (long)getpid() && unlink(s->pid_file) < 0)
        px_log_warn("pid_file %s: %s", s->pid_file, strerror(errno));
    free(s->pid_file);
    s->pid_file = NULL;
}

uint64_t px_server_uptime_s(const struct px_server *s)
{
    return (px_now_ms() - s->started_ms) / 1000;
}

int px_server_nworkers(const struct px_server *s)
{
    return s->nworkers;
}

const char *px_server_config_path(const struct px_server *s)
{
    return s->config_path;
}

static unsigned addr_port(const struct px_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

/* One SO_REUSEPORT socket per worker; the kernel spreads connections.
 *
 * SO_REUSEPORT would also let a second proxyd (or anything else of the same
 * uid that sets it) bind the same address and silently take half of the
 * connections. So the first socket of an address (join = 0) is bound
 * without it, an exclusive bind that fails with "Address already in use"
 * whenever anything listens there, as nginx's bind() does; SO_REUSEPORT is
 * set on it after the bind and before listen(), so that the reuseport group
 * forms around it and the other workers' sockets (join = 1) join it. The
 * check and the bind are one system call: no window for another process.
 * SO_REUSEADDR keeps a restart from tripping over TIME_WAIT connections. A
 * process given listening sockets (a binary upgrade, socket activation)
 * binds nothing, and a socket it adds to such an address joins. */
static int open_listener(struct px_addr *a, int join, char *err, size_t errlen)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (join && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (a->ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a->ss, a->len) < 0)
        goto fail;
    if (!join && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
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
fail:;
    int e = errno;
    snprintf(err, errlen, "listen %s: %s%s", a->text, strerror(e),
             e == EADDRINUSE && !join ? " (another process listens there; a second proxyd?)"
             : e == EACCES && addr_port(a) < 1024
                 ? " (a port below 1024 needs CAP_NET_BIND_SERVICE: `setcap cap_net_bind_service=+ep "
                   "$(command -v proxyd)`, AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit, or "
                   "socket activation with proxyd.socket; or start as root with user =)"
                 : "");
    if (fd >= 0)
        close(fd);
    return -1;
}

/* Whether a restart could bind a: the exclusive bind open_listener starts
 * with (no listen(), so no connection can land on it), undone at once.
 * Returns 0, or -1 with the reason in err. */
static int probe_listener(const struct px_addr *a, char *err, size_t errlen)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, rc = -1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (a->ss.ss_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        rc = bind(fd, (const struct sockaddr *)&a->ss, a->len);
    }
    if (rc < 0)
        snprintf(err, errlen, "listen %s: %s", a->text, strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc < 0 ? -1 : 0;
}

/* A socket systemd passed (proxyd.socket): every worker accepts on its own
 * duplicate of it (one accept queue; a worker that loses the race to a
 * connection gets EAGAIN). a takes the address the socket is bound to, for
 * the log and for the deploy's loop check. Returns the fd for worker i. */
static int inherited_listener(struct px_addr *a, int fd, int i, char *err, size_t errlen)
{
    if (i == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && sl <= sizeof(a->ss)) {
            char ip[64];
            memcpy(&a->ss, &ss, sl);
            a->len = sl;
            px_addr_ntop((const struct sockaddr *)&a->ss, ip, sizeof(ip));
            snprintf(a->text, sizeof(a->text), "%s%s%s:%u", ss.ss_family == AF_INET6 ? "[" : "", ip,
                     ss.ss_family == AF_INET6 ? "]" : "", addr_port(a));
        }
        return fd;
    }
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0)
        snprintf(err, errlen, "listen %s (from systemd): %s", a->text, strerror(errno));
    return d;
}

static void log_listening(const char *what, const struct px_addr *a, int from_systemd)
{
    char ip[64];
    px_addr_ntop((const struct sockaddr *)&a->ss, ip, sizeof(ip));
    px_log_info("listening %s %s%s%s:%u%s", what, a->ss.ss_family == AF_INET6 ? "[" : "", ip,
                a->ss.ss_family == AF_INET6 ? "]" : "", addr_port(a), from_systemd ? " (from systemd)" : "");
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

static void notify_all(struct px_server *s, enum px_wmsg_type what)
{
    for (int i = 0; i < s->nworkers; i++)
        if (px_worker_post(&s->workers[i], what) < 0)
            px_log_error("worker %d: cannot queue a message (out of memory)", i);
}

static int same_addr(const struct px_addr *a, int has_a, const struct px_addr *b, int has_b)
{
    if (has_a != has_b)
        return 0;
    return !has_a || strcmp(a->text, b->text) == 0;
}

/* A reload names other listen addresses: they are bound only by a restart,
 * which fails when another process holds one; say so now. */
static void warn_listeners(struct px_server *s, const struct px_config *cfg)
{
    px_log_warn("reload: listener addresses change only on restart");
    const struct px_addr *want[2] = {cfg->has_listen_http ? &cfg->listen_http : NULL,
                                     cfg->has_listen_https ? &cfg->listen_https : NULL};
    for (int i = 0; i < 2; i++) {
        char msg[512];
        if (want[i] == NULL || addr_port(want[i]) == 0 ||
            (s->has_http && strcmp(want[i]->text, s->listen_http.text) == 0) ||
            (s->has_https && strcmp(want[i]->text, s->listen_https.text) == 0))
            continue; /* ephemeral, or bound by this process already */
        if (probe_listener(want[i], msg, sizeof(msg)) < 0)
            px_log_warn("reload: a restart with this configuration would fail: %s", msg);
    }
}

static int reload(struct px_server *s, char *err, size_t errlen);

/* A reload (SIGHUP, proxyctl reload, systemctl reload through it): systemd
 * hears RELOADING=1 before and READY=1 after, whatever the outcome. */
int px_server_reload(struct px_server *s, char *err, size_t errlen)
{
    px_systemd_reloading();
    int rc = reload(s, err, errlen);
    px_systemd_ready(rc < 0 ? "serving (the last reload failed)" : "serving");
    return rc;
}

static int reload(struct px_server *s, char *err, size_t errlen)
{
    struct px_config *cfg = NULL;
    struct px_log_sinks *sinks = NULL;
    int listeners_changed, workers_changed;

    if (px_config_load(s->config_path, &cfg, err, errlen) < 0)
        return -1;
    listeners_changed = !same_addr(&cfg->listen_http, cfg->has_listen_http, &s->listen_http, s->has_http) ||
                        !same_addr(&cfg->listen_https, cfg->has_listen_https, &s->listen_https, s->has_https);
    workers_changed = cfg->workers != s->nworkers;
    int metrics_changed = !same_addr(&cfg->metrics_listen, cfg->has_metrics_listen, &s->metrics_listen,
                                     s->metrics != NULL);
    if (cfg->acme.enabled && px_acme_global_init(err, errlen) < 0) {
        px_config_free(cfg);
        return -1;
    }
    if ((sinks = px_log_prepare(cfg->error_log, cfg->access_log, err, errlen)) == NULL) {
        px_config_free(cfg);
        return -1;
    }
    /* certificates and services: everything else that can fail */
    struct px_routes *r = px_routes_build(cfg, &s->carry, err, errlen);
    if (r == NULL) {
        px_log_discard(sinks);
        return -1;
    }
    /* nothing can fail from here on */
    px_log_commit(sinks);
    px_routes_publish(r);
    sync_service_certs(s, 0);
    notify_all(s, PX_WM_ROUTES);
    notify_all(s, PX_WM_RELOAD);
    px_monitor_sync(s->monitor, px_routes_services(px_routes_peek()));
    acme_reload(s, &px_routes_config(px_routes_peek())->acme);
    if (listeners_changed)
        warn_listeners(s, px_routes_config(px_routes_peek()));
    if (workers_changed)
        px_log_warn("reload: the number of workers changes only on restart");
    if (metrics_changed)
        px_log_warn("reload: metrics_listen changes only on restart (it stays %s)",
                    s->metrics ? px_metrics_address(s->metrics) : "unset");
    if (px_routes_config(px_routes_peek())->cluster.present != (s->cluster != NULL))
        px_log_warn("reload: [cluster] is read only at start (restart or upgrade to %s it); shared zones decide "
                    "%s", s->cluster ? "remove" : "add", s->cluster ? "through Redis" : "locally until then");
    const char *pf = px_routes_config(px_routes_peek())->pid_file;
    if ((pf == NULL) != (s->pid_file == NULL) || (pf && strcmp(pf, s->pid_file) != 0))
        px_log_warn("reload: pid_file changes only on restart (it stays %s)", s->pid_file ? s->pid_file : "unset");
    return 0;
}

void px_server_routes_published(struct px_server *s)
{
    notify_all(s, PX_WM_ROUTES);
    px_monitor_sync(s->monitor, px_routes_services(px_routes_peek()));
    sync_acme_services(s); /* a deploy --tls, or the removal of such a service */
    sync_service_certs(s, 1);
}

/* upgrade: a new process took over, which systemd follows as its main
 * pid by now: it must not hear STOPPING=1 from this one. */
static void stop(struct px_server *s, int upgrade)
{
    if (s->stopping) {
        px_log_warn("second stop signal: exiting now");
        notify_all(s, PX_WM_KILL);
        return;
    }
    s->stopping = 1;
    if (!upgrade)
        px_systemd_stopping();
    uint64_t budget = px_routes_config(px_routes_peek())->shutdown_timeout_ms;
    s->stop_deadline_ms = px_now_ms() + budget;
    px_log_info("stopping: finishing in-flight requests (up to %llu ms)", (unsigned long long)budget);
    px_ctlserver_shutdown(s->control); /* pending deploys answer shutting_down */
    notify_all(s, PX_WM_STOP);
    struct timeval tv = {0, 50000};
    event_add(s->stop_timer, &tv);
}

void px_server_stop(struct px_server *s)
{
    stop(s, 0);
}

/* ---- binary upgrade ---- */

static void upgrade_done(void *arg, pid_t pid, const char *error)
{
    struct px_server *s = arg;
    px_server_upgrade_fn done = s->upgrade_done;
    void *darg = s->upgrade_arg;
    uint64_t ms = px_now_ms() - s->upgrade_started_ms;
    char msg[1400];
    s->upgrade_done = NULL;
    if (error) {
        snprintf(msg, sizeof(msg), "%s", error);
        px_upgrade_free(s->upgrade);
        s->upgrade = NULL;
        rewrite_pid_file(s);
        px_log_error("upgrade failed, this process keeps serving: %s", msg);
        if (done)
            done(darg, 0, msg);
        return;
    }
    /* the new process serves on the same sockets: stop accepting, drain */
    s->handed_over = 1;
    px_ctlserver_hand_over(s->control);
    px_metrics_free(s->metrics); /* its socket is the new process's now (it stays open there) */
    s->metrics = NULL;
    px_log_notice("upgrade: new process %ld serves (ready in %llu ms); this one (%ld) stops accepting and drains",
                  (long)pid, (unsigned long long)ms, (long)getpid());
    if (done)
        done(darg, (long)pid, NULL);
    stop(s, 1);
}

void px_server_upgrade_forget(struct px_server *s, void *arg)
{
    if (s->upgrade_arg == arg)
        s->upgrade_done = NULL;
}

int px_server_upgrade(struct px_server *s, const char *binary, unsigned timeout_ms, px_server_upgrade_fn done,
                      void *arg, char *err, size_t errlen)
{
    unsigned char *blob = NULL;
    size_t bloblen = 0;
    int http[PX_MAX_WORKERS], https[PX_MAX_WORKERS], nhttp = 0, nhttps = 0;

    if (s->stopping) {
        snprintf(err, errlen, "proxyd is stopping");
        return -1;
    }
    if (s->upgrade) {
        snprintf(err, errlen, "an upgrade is already in progress");
        return -1;
    }
    if (px_deployer_busy(s->deployer)) {
        /* the new process reads the services from the state file: a deploy
         * that switches after that would be lost to it */
        snprintf(err, errlen, "a deploy or rollback is running: upgrade once it is done");
        return -1;
    }
    if (binary == NULL)
        binary = s->exe;
    if (binary == NULL) {
        snprintf(err, errlen, "the running binary's path is unknown: name one (--binary PATH)");
        return -1;
    }
    for (size_t i = 0; i < s->carry.nlisteners; i++) {
        const struct px_carry_listener *l = &s->carry.listeners[i];
        for (int j = 0; j < l->nfds; j++) {
            if (l->https && nhttps < PX_MAX_WORKERS)
                https[nhttps++] = l->fds[j];
            else if (!l->https && nhttp < PX_MAX_WORKERS)
                http[nhttp++] = l->fds[j];
        }
    }
    if (px_carry_export(&s->carry, &blob, &bloblen, err, errlen) < 0)
        return -1;
    struct px_upgrade_handover h = {http, https, nhttp, nhttps, px_ctlserver_fd(s->control),
                                    s->metrics ? px_metrics_fd(s->metrics) : -1, blob, bloblen};
    s->upgrade_started_ms = px_now_ms();
    s->upgrade_done = done;
    s->upgrade_arg = arg;
    px_log_notice("upgrade: starting %s", binary);
    s->upgrade = px_upgrade_spawn(s->base, binary, s->config_path, &h, timeout_ms, upgrade_done, s, err, errlen);
    OPENSSL_cleanse(blob, bloblen);
    free(blob);
    if (s->upgrade == NULL) {
        s->upgrade_done = NULL;
        px_log_error("upgrade failed, this process keeps serving: %s", err);
        return -1;
    }
    return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct px_server *s = arg;
    char err[1024];
    PX_UNUSED(what);
    switch (sig) {
    case SIGHUP:
        if (s->stopping)
            break;
        uint64_t t0 = px_now_ms();
        px_ctl_audit_begin("reload", NULL, "signal=SIGHUP");
        if (px_server_reload(s, err, sizeof(err)) < 0) {
            px_log_error("reload failed, keeping the running configuration: %s", err);
            px_ctl_audit_finish("reload", NULL, "signal=SIGHUP", PX_E_RELOAD_FAILED, err, t0);
        } else {
            px_log_info("configuration reloaded from %s", s->config_path);
            px_ctl_audit_finish("reload", NULL, "signal=SIGHUP", PX_E_OK, NULL, t0);
        }
        break;
    case SIGUSR1:
        px_log_reopen();
        px_log_info("log files reopened");
        break;
    case SIGTERM:
    case SIGINT:
        px_server_stop(s);
        break;
    case SIGUSR2:
        if (px_server_upgrade(s, NULL, PX_UPGRADE_TIMEOUT_MS, NULL, NULL, err, sizeof(err)) < 0 && !s->stopping)
            px_log_error("upgrade (SIGUSR2): %s", err);
        break;
    }
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    PX_UNUSED(fd);
    PX_UNUSED(what);
    PX_UNUSED(arg);
    px_routes_reap();
    px_challenge_reap();
    const struct px_routes *r = px_routes_peek();
    if (r)
        /* the ticket-key ring is the one mutable piece of a TLS part: it has its own lock */
        px_tls_rotate_tickets((struct px_tls *)px_routes_tls(r), px_now_ms());
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    struct px_server *s = arg;
    PX_UNUSED(fd);
    PX_UNUSED(what);
    if (atomic_load(&px_workers_running) == 0) {
        event_base_loopexit(s->base, NULL);
        return;
    }
    if (px_now_ms() >= s->stop_deadline_ms) {
        px_log_warn("shutdown_timeout reached: closing the remaining connections");
        notify_all(s, PX_WM_KILL);
        s->stop_deadline_ms = UINT64_MAX;
    }
    struct timeval tv = {0, 50000};
    event_add(s->stop_timer, &tv);
}

int px_server_check(const char *config_path, char *err, size_t errlen)
{
    struct px_config *cfg = NULL;
    char msg[1024];
    if (px_config_load(config_path, &cfg, err, errlen) < 0)
        return -1;
    /* what start would refuse: [acme] without a loadable libcurl */
    if (cfg->acme.enabled && px_acme_global_init(msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "%s: %s", config_path, msg);
        px_config_free(cfg);
        return -1;
    }
    /* what start reads before the privilege drop: secret_file */
    if (cfg->cluster.present && cfg->cluster.secret_file) {
        unsigned char key[32];
        int rc = px_cluster_read_secret(cfg->cluster.secret_file, key, msg, sizeof(msg));
        explicit_bzero(key, sizeof(key));
        if (rc < 0) {
            snprintf(err, errlen, "%s:%d: secret_file: %s", config_path, cfg->cluster.secret_line, msg);
            px_config_free(cfg);
            return -1;
        }
    }
    /* like nginx -t: also load the certificates */
    struct px_routes *r = px_routes_build(cfg, NULL, msg, sizeof(msg)); /* nothing to carry: it exits */
    if (r == NULL) {
        /* an error about a key (a certificate file) already says FILE:LINE */
        size_t n = strlen(config_path);
        if (strncmp(msg, config_path, n) == 0 && msg[n] == ':')
            snprintf(err, errlen, "%s", msg);
        else
            snprintf(err, errlen, "%s: %s", config_path, msg);
        return -1;
    }
    px_routes_publish(r);
    px_routes_shutdown();
    return 0;
}

static int add_events(struct px_server *s)
{
    s->sig_hup = evsignal_new(s->base, SIGHUP, on_signal, s);
    s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
    s->sig_usr1 = evsignal_new(s->base, SIGUSR1, on_signal, s);
    s->sig_usr2 = evsignal_new(s->base, SIGUSR2, on_signal, s);
    s->reap_timer = event_new(s->base, -1, EV_PERSIST, on_reap, s);
    s->stop_timer = evtimer_new(s->base, on_stop_timer, s);
    if (!s->sig_hup || !s->sig_term || !s->sig_int || !s->sig_usr1 || !s->sig_usr2 || !s->reap_timer ||
        !s->stop_timer)
        return -1;
    struct timeval one = {1, 0};
    if (evsignal_add(s->sig_hup, NULL) < 0 || evsignal_add(s->sig_term, NULL) < 0 ||
        evsignal_add(s->sig_int, NULL) < 0 || evsignal_add(s->sig_usr1, NULL) < 0 ||
        evsignal_add(s->sig_usr2, NULL) < 0 ||
        event_add(s->reap_timer, &one) < 0)
        return -1;
    return 0;
}

/* A binary upgrade: worker i's share of the sockets the old process's
 * workers listened on (the old worker count may differ: socket j goes to
 * worker j % nworkers, so every accept queue has a worker), or, for a
 * worker beyond them, a new socket that joins their SO_REUSEPORT group.
 * a takes the inherited sockets' address. -1 with the reason in err. */
static int upgrade_listeners(struct px_server *s, int i, struct px_addr *a, const int *fds, int n, int tls,
                             char *err, size_t errlen)
{
    if (i == 0) {
        struct px_addr want = *a;
        if (inherited_listener(a, fds[0], 0, err, errlen) < 0)
            return -1;
        if (addr_port(&want) != 0 && strcmp(want.text, a->text) != 0)
            px_log_warn("upgrade: the config listens on %s, the sockets handed over on %s: they are kept "
                        "(listener addresses change only on restart)", want.text, a->text);
    }
    for (int j = i; j < n; j += s->nworkers) {
        if (px_worker_add_listener(&s->workers[i], fds[j], tls) < 0) {
            px_log_warn("upgrade: listen %s: worker %d takes no more sockets: one of the old process's is "
                        "closed (its queued connections are reset)", a->text, i);
            close(fds[j]);
            continue;
        }
        px_carry_add_listener(&s->carry, a, tls, fds[j]);
    }
    if (i < n)
        return 0;
    int fd = open_listener(a, 1, err, errlen);
    if (fd < 0)
        return -1;
    if (px_worker_add_listener(&s->workers[i], fd, tls) < 0) {
        close(fd);
        snprintf(err, errlen, "listen %s: too many listeners", a->text);
        return -1;
    }
    px_carry_add_listener(&s->carry, a, tls, fd);
    return 0;
}

static struct px_server *server_new(const char *config_path, struct px_upgrade_inherit *inh, char *err,
                                    size_t errlen);

struct px_server *px_server_new(const char *config_path, char *err, size_t errlen)
{
    struct px_upgrade_inherit inh;
    err[0] = '\0';
    if (px_upgrade_inherited(&inh, err, errlen) < 0)
        return NULL;
    struct px_server *s = server_new(config_path, &inh, err, errlen);
    if (s == NULL) {
        if (err[0])
            px_upgrade_failed(&inh, err);
        px_upgrade_inherit_free(&inh);
    }
    return s;
}

static struct px_server *server_new(const char *config_path, struct px_upgrade_inherit *inh, char *err,
                                    size_t errlen)
{
    struct px_config *cfg = NULL;
    struct px_server *s = NULL;
    char *user = NULL;
    uid_t uid = 0;
    gid_t gid = 0;
    int logs_open = 0;

    if (px_config_load(config_path, &cfg, err, errlen) < 0)
        return NULL;
    signal(SIGPIPE, SIG_IGN);
    if ((s = calloc(1, sizeof(*s))) == NULL || (s->config_path = strdup(config_path)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->inherit.status_fd = s->inherit.stderr_fd = s->inherit.control_fd = -1;
    {
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
            exe[n] = '\0';
            s->exe = strdup(exe);
        }
    }
    s->nworkers = cfg->workers > PX_MAX_WORKERS ? PX_MAX_WORKERS : cfg->workers;
    s->has_http = cfg->has_listen_http;
    s->has_https = cfg->has_listen_https;
    s->listen_http = cfg->listen_http;
    s->listen_https = cfg->listen_https;
    if (cfg->user && geteuid() == 0) {
        if ((user = strdup(cfg->user)) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        if (lookup_user(user, &uid, &gid, err, errlen) < 0)
            goto fail;
        /* the log files it makes are the user's, who reopens them after
         * the drop (SIGUSR1, or a reload to new paths) */
        px_log_set_owner(uid, gid);
    }
    if (px_log_open(cfg->error_log, cfg->access_log, err, errlen) < 0) {
        char m[1024];
        snprintf(m, sizeof(m), "proxyd: %s", err);
        snprintf(err, errlen, "%s", m);
        goto fail;
    }
    logs_open = 1;
    px_routes_set_nworkers(s->nworkers);
    px_stats_set_nworkers(s->nworkers);
    px_target_set_nworkers(s->nworkers);
    s->started_ms = px_now_ms();
    s->base = event_base_new();
    if (s->base == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* the deployed services come back before the first snapshot is built */
    make_parent(cfg->state_file, user ? uid : (uid_t)-1, gid);
    struct px_deploy_hooks hooks = {hook_published, hook_broadcast, s};
    char serr[512];
    if ((s->deployer = px_deployer_new(s->base, cfg->state_file, &hooks, serr, sizeof(serr))) == NULL) {
        snprintf(err, errlen, "state_file %s", serr);
        goto fail;
    }
    s->carry.services = services_provider;
    s->carry.services_arg = s;
    /* ACME: libcurl is loaded (and initialised) only when [acme] is on, here
     * or on the reload that turns it on; the lineages on disk before the
     * first TLS part, so that they serve from the first handshake */
    if (cfg->acme.enabled) {
        if (px_acme_global_init(err, errlen) < 0)
            goto fail;
        if (user)
            make_owned_dir(cfg->acme.config_dir, uid, gid);
        if (acme_new(s, &cfg->acme, err, errlen) < 0)
            goto fail;
    }
    s->carry.tls = tls_provider;
    s->carry.tls_arg = s;
    struct px_routes *routes = px_routes_build(cfg, &s->carry, err, errlen);
    cfg = NULL; /* the snapshot owns it, even on failure */
    if (routes == NULL)
        goto fail;
    px_routes_publish(routes);
    sync_service_certs(s, 0); /* no worker yet */
    if (inh->status_fd >= 0) {
        /* a binary upgrade: the old process's sessions, ticket keys and zones */
        struct px_carry_counts n;
        char cerr[256];
        if (px_carry_import(&s->carry, inh->carry, inh->carrylen, &n, cerr, sizeof(cerr)) < 0)
            px_log_warn("upgrade: %s", cerr);
        px_log_info("upgrade: carried over %zu TLS sessions, %zu ticket keys, %zu rate-limit zones (%zu keys)",
                    n.sessions, n.ticket_keys, n.zones, n.keys);
    }

    s->workers = calloc((size_t)s->nworkers, sizeof(*s->workers));
    s->answers = px_worker_answers_new(s->base, on_answer, s);
    if (s->workers == NULL || s->answers == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* proxyd.socket: the listening sockets come from systemd, bound by it */
    int sd_http = -1, sd_https = -1;
    int nsd = inh->status_fd >= 0 ? 0 : px_systemd_listen_fds(s->has_http, s->has_https, &sd_http, &sd_https, err, errlen);
    if (nsd < 0)
        goto fail;
    int up_http = s->has_http && inh->nhttp > 0, up_https = s->has_https && inh->nhttps > 0;
    if (inh->status_fd >= 0) {
        /* listeners the new config dropped: their sockets go (as on a restart) */
        if (!s->has_http && inh->nhttp > 0)
            px_log_warn("upgrade: listen_http is gone from the config: its sockets are closed");
        for (int j = 0; !s->has_http && j < inh->nhttp; j++)
            close(inh->http[j]);
        if (!s->has_https && inh->nhttps > 0)
            px_log_warn("upgrade: listen_https is gone from the config: its sockets are closed");
        for (int j = 0; !s->has_https && j < inh->nhttps; j++)
            close(inh->https[j]);
    }
    for (int i = 0; i < s->nworkers; i++) {
        if (px_worker_init(&s->workers[i], i, px_worker_modules, px_worker_nmodules, err, errlen) < 0)
            goto fail;
        px_worker_set_answers(&s->workers[i], s->answers);
        if (up_http) {
            if (upgrade_listeners(s, i, &s->listen_http, inh->http, inh->nhttp, 0, err, errlen) < 0)
                goto fail;
        } else if (s->has_http) {
            int fd = sd_http >= 0 ? inherited_listener(&s->listen_http, sd_http, i, err, errlen)
                                  : open_listener(&s->listen_http, i > 0, err, errlen);
            if (fd < 0)
                goto fail;
            if (px_worker_add_listener(&s->workers[i], fd, 0) < 0) {
                close(fd);
                snprintf(err, errlen, "listen %s: too many listeners", s->listen_http.text);
                goto fail;
            }
            px_carry_add_listener(&s->carry, &s->listen_http, 0, fd); /* cannot be full: two addresses */
        }
        if (up_https) {
            if (upgrade_listeners(s, i, &s->listen_https, inh->https, inh->nhttps, 1, err, errlen) < 0)
                goto fail;
        } else if (s->has_https) {
            int fd = sd_https >= 0 ? inherited_listener(&s->listen_https, sd_https, i, err, errlen)
                                   : open_listener(&s->listen_https, i > 0, err, errlen);
            if (fd < 0)
                goto fail;
            if (px_worker_add_listener(&s->workers[i], fd, 1) < 0) {
                close(fd);
                snprintf(err, errlen, "listen %s: too many listeners", s->listen_https.text);
                goto fail;
            }
            px_carry_add_listener(&s->carry, &s->listen_https, 1, fd);
        }
    }
    if (s->has_http)
        log_listening("http", &s->listen_http, sd_http >= 0);
    if (s->has_https)
        log_listening("https", &s->listen_https, sd_https >= 0);
    { /* deploy refuses these as targets (a loop), with their real ports */
        struct px_addr self[2];
        size_t nself = 0;
        if (s->has_http)
            self[nself++] = s->listen_http;
        if (s->has_https)
            self[nself++] = s->listen_https;
        px_deployer_set_listeners(s->deployer, self, nself);
    }
    /* the control socket, before the drop (its directory may be root's) */
    const struct px_config *c0 = px_routes_config(px_routes_peek());
    /* [cluster]: password_file is read before the drop; before the workers run */
    if (c0->cluster.present) {
        const struct px_addr *a = s->has_http ? &s->listen_http : &s->listen_https;
        char ip[64], where[96];
        px_addr_ntop((const struct sockaddr *)&a->ss, ip, sizeof(ip));
        snprintf(where, sizeof(where), "%s%s%s:%u", a->ss.ss_family == AF_INET6 ? "[" : "", ip,
                 a->ss.ss_family == AF_INET6 ? "]" : "", addr_port(a));
        if ((s->cluster = px_cluster_start(s->base, &c0->cluster, where, s->nworkers, err, errlen)) == NULL)
            goto fail;
        if (s->acme) /* made before the cluster: [acme] storage = redis needs it */
            px_acme_manager_set_cluster(s->acme, s->cluster);
    }
    make_parent(c0->control_socket, user ? uid : (uid_t)-1, gid);
    if (inh->control_fd >= 0) {
        /* a config that moved the socket: a new one there (the old process's
         * stays at its path, answering nothing, until it exits) */
        struct sockaddr_un sun;
        socklen_t sl = sizeof(sun);
        memset(&sun, 0, sizeof(sun));
        if (getsockname(inh->control_fd, (struct sockaddr *)&sun, &sl) < 0 || sun.sun_family != AF_UNIX ||
            strncmp(sun.sun_path, c0->control_socket, sizeof(sun.sun_path)) != 0) {
            px_log_warn("upgrade: control_socket is %s now: the one handed over (%s) is not taken",
                        c0->control_socket, sun.sun_path[0] ? sun.sun_path : "?");
            close(inh->control_fd);
            inh->control_fd = -1;
        }
    }
    if (inh->control_fd >= 0) {
        /* a binary upgrade: the old process's socket, path untouched */
        if ((s->control = px_ctlserver_adopt(s->base, c0->control_socket, inh->control_fd, c0->control_socket_mode,
                                             s, s->deployer, err, errlen)) == NULL)
            goto fail;
        inh->control_fd = -1;
    } else if ((s->control = px_ctlserver_new(s->base, c0->control_socket, c0->control_socket_mode, s,
                                              s->deployer, err, errlen)) == NULL) {
        goto fail;
    }
    if (c0->has_metrics_listen) { /* the main base's own listener, never a worker's */
        /* a binary upgrade hands the old process's listener over (a bind
         * would fail: the old one still listens there) */
        int mfd = inh->metrics_fd;
        inh->metrics_fd = -1;
        if ((s->metrics = px_metrics_new(s->base, &c0->metrics_listen, mfd, err, errlen)) == NULL)
            goto fail;
        px_log_info("listening metrics %s", px_metrics_address(s->metrics));
        s->metrics_listen = c0->metrics_listen;
        if (px_status_start(s->base, s, s->deployer) < 0) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    if (inh->metrics_fd >= 0) { /* handed over, but this config has no metrics_listen */
        close(inh->metrics_fd);
        inh->metrics_fd = -1;
    }
    if (user && chown(c0->control_socket, uid, gid) < 0)
        px_log_warn("control_socket %s: chown to %s: %s", c0->control_socket, user, strerror(errno));
    if (c0->pid_file && write_pid_file(s, c0->pid_file, user ? uid : (uid_t)-1, gid, err, errlen) < 0)
        goto fail;
    if (user && drop_privileges(user, uid, gid, err, errlen) < 0)
        goto fail;
    if (s->acme)
        acme_start(s); /* as the user: config_dir's tree is theirs */
    if ((s->monitor = px_monitor_new(s->base, 1000, 5000)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    px_monitor_sync(s->monitor, px_routes_services(px_routes_peek()));
    if (add_events(s) < 0) {
        snprintf(err, errlen, "cannot set up signals and timers");
        goto fail;
    }
    free(user);
    s->inherit = *inh; /* the status pipe: "ready" once the workers run */
    return s;
fail:
    if (s && inh->status_fd >= 0)
        px_ctlserver_hand_over(s->control); /* the old process's socket: its path stays */
    if (logs_open) {
        px_log_error("%s", err);
        px_upgrade_failed(inh, err);
        err[0] = '\0';
    }
    px_config_free(cfg);
    free(user);
    px_server_free(s);
    return NULL;
}

int px_server_run(struct px_server *s)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2);
    /* workers never take the process signals */
    pthread_sigmask(SIG_BLOCK, &block, &old);
    tzset(); /* the combined access log's local time: read the zone here, not on a worker */
    s->running = 1;
    int rc = 0;
    for (int i = 0; i < s->nworkers; i++) {
        atomic_fetch_add(&px_workers_running, 1);
        if (px_worker_start(&s->workers[i]) != 0) {
            atomic_fetch_sub(&px_workers_running, 1);
            px_log_error("cannot start worker %d", i);
            notify_all(s, PX_WM_KILL);
            rc = 1;
            break;
        }
        s->workers[i].started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return rc;
    px_log_info("proxyd %s started: %d workers, pid %d", PX_VERSION, s->nworkers, (int)getpid());
    if (s->inherit.status_fd >= 0) {
        /* a binary upgrade: systemd follows this process from now on, and
         * the old one stops accepting when it hears "ready" */
        px_systemd_mainpid((int)getpid());
        px_upgrade_ready(&s->inherit);
    }
    px_systemd_ready("serving");
    event_base_dispatch(s->base);
    px_log_info("stopped");
    return 0;
}

void px_server_free(struct px_server *s)
{
    if (s == NULL)
        return;
    if (s->workers) {
        for (int i = 0; i < s->nworkers; i++)
            if (s->workers[i].started)
                px_worker_join(&s->workers[i]);
        for (int i = 0; i < s->nworkers; i++)
            px_worker_free(&s->workers[i]);
    }
    free(s->workers);
    px_worker_answers_free(s->answers); /* the workers are joined */
    px_monitor_free(s->monitor);
    px_ctlserver_free(s->control);
    px_status_stop();
    px_metrics_free(s->metrics);
    px_acme_manager_free(s->acme);
    px_cluster_free(s->cluster); /* the workers are joined */
    px_deployer_free(s->deployer);
    px_upgrade_free(s->upgrade);
    struct event *evs[] = {s->sig_hup, s->sig_term, s->sig_int, s->sig_usr1, s->sig_usr2, s->reap_timer,
                           s->stop_timer};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    if (s->base)
        event_base_free(s->base);
    px_routes_shutdown();
    px_carry_free(&s->carry);
    px_target_shutdown();
    px_challenge_shutdown();
    remove_pid_file(s);
    px_log_close();
    px_upgrade_inherit_free(&s->inherit);
    free(s->exe);
    free(s->config_path);
    free(s);
}
