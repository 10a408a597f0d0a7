/* metrics.c -- the metrics listener (px/metrics.h).
 *
 * libevent's evhttp on the main base: it is non-blocking, bounds the head
 * (max_headers_size), times idle connections out and speaks HTTP/1.1
 * keep-alive, which is all a scraper and a browser need; a body is never
 * read (GET and HEAD only). A scrape renders into one evbuffer: sums over
 * the workers' blocks (relaxed loads), the current snapshot's targets, and
 * the control plane's own tables below. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "px/addr.h"
#include "px/cluster.h"
#include "px/common.h"
#include "px/config.h"
#include "px/metrics.h"
#include "px/routes.h"
#include "px/services.h"
#include "px/stats.h"
#include "px/target.h"
#include "px/tls.h"

struct px_metrics {
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    char address[PX_ADDR_TEXT_MAX + 8];
};

static uint64_t start_wall_ms;

/* ---- deploys and ACME (main thread) ---- */

static const double deploy_bounds[] = {1, 2, 5, 10, 30, 60, 120, 300};
#define NDEPLOY_B (sizeof(deploy_bounds) / sizeof(deploy_bounds[0]))
static void esc(struct evbuffer *o, const char *v);

/* A counter by (key, result): deploys by (service, result), ACME renewals
 * by (lineage, result). Few rows: a linear search, main thread only. */
struct result_count {
    char *key, *result;
    uint64_t n;
};
struct result_counts {
    struct result_count *v;
    size_t n;
};

/* Add one to (key, result); out of memory: the count is lost. */
static void result_count_inc(struct result_counts *c, const char *key, const char *result)
{
    size_t i;
    for (i = 0; i < c->n; i++)
        if (strcmp(c->v[i].key, key) == 0 && strcmp(c->v[i].result, result) == 0)
            break;
    if (i == c->n) {
        struct result_count *g = realloc(c->v, (c->n + 1) * sizeof(*g));
        if (g == NULL)
            return;
        c->v = g;
        g[i] = (struct result_count){strdup(key), strdup(result), 0};
        if (g[i].key == NULL || g[i].result == NULL) {
            free(g[i].key);
            free(g[i].result);
            return;
        }
        c->n++;
    }
    c->v[i].n++;
}

/* name{label="KEY",result="RESULT"} N, one line per row. */
static void result_counts_render(struct evbuffer *o, const char *name, const char *label,
                                 const struct result_counts *c)
{
    for (size_t i = 0; i < c->n; i++) {
        evbuffer_add_printf(o, "%s{%s=\"", name, label);
        esc(o, c->v[i].key);
        evbuffer_add_printf(o, "\",result=\"");
        esc(o, c->v[i].result);
        evbuffer_add_printf(o, "\"} %" PRIu64 "\n", c->v[i].n);
    }
}

struct deploy_hist { /* per service */
    char *service;
    uint64_t b[NDEPLOY_B + 1]; /* not cumulative; [last] = +Inf */
    uint64_t sum_ms;
};
static struct result_counts dcounts;
static struct deploy_hist *dhists;
static size_t ndhists;
static struct px_metrics_deploy dring[PX_METRICS_DEPLOYS];
static size_t dring_next, dring_n;

struct acme_last {
    char *lineage, *result, *message;
    uint64_t wall_ms;
};
static struct result_counts acounts;
static struct acme_last *alast;
static size_t nalast;

void px_metrics_deploy_done(const char *service, const char *result, uint64_t started_wall_ms,
                            uint64_t duration_ms, const char *targets)
{
    size_t i;
    result_count_inc(&dcounts, service, result);
    for (i = 0; i < ndhists; i++)
        if (strcmp(dhists[i].service, service) == 0)
            break;
    if (i == ndhists) {
        struct deploy_hist *h = realloc(dhists, (ndhists + 1) * sizeof(*h));
        if (h == NULL)
            return;
        dhists = h;
        memset(&h[i], 0, sizeof(h[i]));
        if ((h[i].service = strdup(service)) == NULL)
            return;
        ndhists++;
    }
    size_t b = 0;
    while (b < NDEPLOY_B && (double)duration_ms / 1000.0 > deploy_bounds[b])
        b++;
    dhists[i].b[b]++;
    dhists[i].sum_ms += duration_ms;
    struct px_metrics_deploy *r = &dring[dring_next];
    snprintf(r->service, sizeof(r->service), "%s", service);
    snprintf(r->result, sizeof(r->result), "%s", result);
    snprintf(r->targets, sizeof(r->targets), "%s", targets ? targets : "");
    r->started_wall_ms = started_wall_ms;
    r->duration_ms = duration_ms;
    dring_next = (dring_next + 1) % PX_METRICS_DEPLOYS;
    if (dring_n < PX_METRICS_DEPLOYS)
        dring_n++;
}

size_t px_metrics_deploys(struct px_metrics_deploy out[PX_METRICS_DEPLOYS])
{
    for (size_t k = 0; k < dring_n; k++)
        out[k] = dring[(dring_next + PX_METRICS_DEPLOYS - 1 - k) % PX_METRICS_DEPLOYS];
    return dring_n;
}

void px_metrics_acme_done(const char *lineage, const char *result, const char *message)
{
    size_t i;
    result_count_inc(&acounts, lineage, result);
    for (i = 0; i < nalast; i++)
        if (strcmp(alast[i].lineage, lineage) == 0)
            break;
    if (i == nalast) {
        struct acme_last *l = realloc(alast, (nalast + 1) * sizeof(*l));
        if (l == NULL)
            return;
        alast = l;
        memset(&l[i], 0, sizeof(l[i]));
        if ((l[i].lineage = strdup(lineage)) == NULL)
            return;
        nalast++;
    }
    free(alast[i].result);
    free(alast[i].message);
    alast[i].result = strdup(result);
    alast[i].message = message ? strdup(message) : NULL;
    alast[i].wall_ms = px_wall_ms();
}

size_t px_metrics_acme_last(struct px_metrics_acme *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < nalast && n < max; i++)
        out[n++] = (struct px_metrics_acme){alast[i].lineage, alast[i].result ? alast[i].result : "",
                                            alast[i].message ? alast[i].message : "", alast[i].wall_ms};
    return n;
}

/* ---- rendering ---- */

/* A label value: \ " and newline escaped (text format 0.0.4); other bytes
 * as they are (label values come from the config and deploys only). */
static void esc(struct evbuffer *o, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            evbuffer_add(o, "\\\\", 2);
        else if (*p == '"')
            evbuffer_add(o, "\\\"", 2);
        else if (*p == '\n')
            evbuffer_add(o, "\\n", 2);
        else
            evbuffer_add(o, p, 1);
    }
}

static void family(struct evbuffer *o, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void proto_label(struct evbuffer *o, int p)
{
    static const char *const names[PX_STATS_NPROTO] = {"HTTP/1.0", "HTTP/1.1", "HTTP/2"};
    evbuffer_add_printf(o, "%s", names[p]);
}

static void render_services(struct evbuffer *o)
{
    uint32_t n = px_stats_nservices();
    struct px_stats_svc_sum *sums = calloc(n ? n : 1, sizeof(*sums));
    if (sums == NULL)
        return;
    for (uint32_t i = 0; i < n; i++)
        px_stats_service_sum(i, &sums[i]);
    family(o, "proxyd_requests_total", "counter", "Requests answered, by service, exact status code and protocol.");
    for (uint32_t i = 0; i < n; i++)
        for (size_t c = 0; c < sums[i].ncodes; c++)
            for (int p = 0; p < PX_STATS_NPROTO; p++) {
                if (sums[i].codes[c].n[p] == 0)
                    continue;
                char buf[8];
                evbuffer_add_printf(o, "proxyd_requests_total{service=\"");
                esc(o, px_stats_service_name(i));
                evbuffer_add_printf(o, "\",code=\"%s\",proto=\"", px_stats_code_label(&sums[i].codes[c], buf));
                proto_label(o, p);
                evbuffer_add_printf(o, "\"} %" PRIu64 "\n", sums[i].codes[c].n[p]);
            }
    family(o, "proxyd_request_duration_seconds", "histogram",
           "Time from the request head to the end of the answer, by service.");
    static const char *const le[PX_STATS_NBUCKETS] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                                                      "0.5",   "1",    "2.5",   "5",    "10",  "+Inf"};
    for (uint32_t i = 0; i < n; i++) {
        if (sums[i].requests == 0)
            continue;
        for (int b = 0; b < PX_STATS_NBUCKETS; b++) {
            evbuffer_add_printf(o, "proxyd_request_duration_seconds_bucket{service=\"");
            esc(o, px_stats_service_name(i));
            evbuffer_add_printf(o, "\",le=\"%s\"} %" PRIu64 "\n", le[b], sums[i].duration[b]);
        }
        evbuffer_add_printf(o, "proxyd_request_duration_seconds_sum{service=\"");
        esc(o, px_stats_service_name(i));
        evbuffer_add_printf(o, "\"} %.6f\n", (double)sums[i].duration_sum_us / 1e6);
        evbuffer_add_printf(o, "proxyd_request_duration_seconds_count{service=\"");
        esc(o, px_stats_service_name(i));
        evbuffer_add_printf(o, "\"} %" PRIu64 "\n", sums[i].duration[PX_STATS_NBUCKETS - 1]);
    }
    family(o, "proxyd_request_bytes_total", "counter", "Request body bytes sent to upstreams, by service.");
    for (uint32_t i = 0; i < n; i++) {
        if (sums[i].requests == 0 && sums[i].bytes_in == 0)
            continue;
        evbuffer_add_printf(o, "proxyd_request_bytes_total{service=\"");
        esc(o, px_stats_service_name(i));
        evbuffer_add_printf(o, "\"} %" PRIu64 "\n", sums[i].bytes_in);
    }
    family(o, "proxyd_response_bytes_total", "counter", "Response body bytes sent to clients, by service.");
    for (uint32_t i = 0; i < n; i++) {
        if (sums[i].requests == 0)
            continue;
        evbuffer_add_printf(o, "proxyd_response_bytes_total{service=\"");
        esc(o, px_stats_service_name(i));
        evbuffer_add_printf(o, "\"} %" PRIu64 "\n", sums[i].bytes_out);
    }
    free(sums);
}

static void render_pairs(struct evbuffer *o)
{
    family(o, "proxyd_upstream_errors_total", "counter",
           "Failed upstream tries, by service, target and kind (connect, timeout, reset, bad_response).");
    for (uint32_t i = 0; i < px_stats_ntargets(); i++) {
        uint64_t e[PX_STATS_UP_NKINDS];
        px_stats_target_sum(i, e);
        uint32_t sid;
        const char *target;
        px_stats_target_label(i, &sid, &target);
        for (int k = 0; k < PX_STATS_UP_NKINDS; k++) {
            if (e[k] == 0)
                continue;
            evbuffer_add_printf(o, "proxyd_upstream_errors_total{service=\"");
            esc(o, px_stats_service_name(sid));
            evbuffer_add_printf(o, "\",target=\"");
            esc(o, target);
            evbuffer_add_printf(o, "\",kind=\"%s\"} %" PRIu64 "\n", px_stats_upstream_err_names[k], e[k]);
        }
    }
    family(o, "proxyd_limited_requests_total", "counter", "Requests a rate-limit zone rejected, by zone and route.");
    for (uint32_t i = 0; i < px_stats_nlimits(); i++) {
        const char *zone, *route;
        px_stats_limit_label(i, &zone, &route);
        evbuffer_add_printf(o, "proxyd_limited_requests_total{zone=\"");
        esc(o, zone);
        evbuffer_add_printf(o, "\",route=\"");
        esc(o, route);
        evbuffer_add_printf(o, "\"} %" PRIu64 "\n", px_stats_limit_sum(i));
    }
}

static void render_targets(struct evbuffer *o)
{
    const struct px_routes *r = px_routes_peek();
    const struct px_services *svcs = r ? px_routes_services(r) : NULL;
    size_t n = svcs ? px_services_count(svcs) : 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            family(o, "proxyd_target_healthy", "gauge", "1 when the target is in balancing, 0 when it failed its health checks.");
        else
            family(o, "proxyd_target_requests_in_flight", "gauge", "Requests in flight on the target.");
        for (size_t i = 0; i < n; i++) {
            const struct px_service *s = px_services_at(svcs, i);
            for (size_t j = 0; j < s->ntargets; j++) {
                struct px_target *t = s->targets[j];
                uint32_t req = 0;
                if (pass == 1)
                    px_target_inflight(t, &req, NULL);
                evbuffer_add_printf(o, "%s{service=\"", pass == 0 ? "proxyd_target_healthy"
                                                                  : "proxyd_target_requests_in_flight");
                esc(o, s->name);
                evbuffer_add_printf(o, "\",target=\"");
                esc(o, t->addr.text);
                evbuffer_add_printf(o, "\"} %u\n",
                                    pass == 0 ? (unsigned)(atomic_load_explicit(&t->healthy, memory_order_relaxed) != 0)
                                              : req);
            }
        }
    }
    family(o, "proxyd_certificate_expiry_timestamp_seconds", "gauge",
           "When a served certificate expires (Unix seconds), by ACME lineage or certificate file.");
    size_t nc = 0;
    const struct px_tls_cert *certs = r ? px_tls_certs(px_routes_tls(r), &nc) : NULL;
    for (size_t i = 0; i < nc; i++) {
        evbuffer_add_printf(o, "proxyd_certificate_expiry_timestamp_seconds{lineage=\"");
        esc(o, certs[i].label);
        evbuffer_add_printf(o, "\"} %" PRId64 "\n", certs[i].not_after);
    }
}

static void render_control(struct evbuffer *o)
{
    family(o, "proxyd_deploys_total", "counter", "Deploys and rollbacks that ended, by service and result.");
    result_counts_render(o, "proxyd_deploys_total", "service", &dcounts);
    family(o, "proxyd_deploy_duration_seconds", "histogram", "How long deploys and rollbacks took, by service.");
    for (size_t i = 0; i < ndhists; i++) {
        uint64_t cum = 0;
        for (size_t b = 0; b <= NDEPLOY_B; b++) {
            cum += dhists[i].b[b];
            evbuffer_add_printf(o, "proxyd_deploy_duration_seconds_bucket{service=\"");
            esc(o, dhists[i].service);
            if (b < NDEPLOY_B)
                evbuffer_add_printf(o, "\",le=\"%g\"} %" PRIu64 "\n", deploy_bounds[b], cum);
            else
                evbuffer_add_printf(o, "\",le=\"+Inf\"} %" PRIu64 "\n", cum);
        }
        evbuffer_add_printf(o, "proxyd_deploy_duration_seconds_sum{service=\"");
        esc(o, dhists[i].service);
        evbuffer_add_printf(o, "\"} %.3f\n", (double)dhists[i].sum_ms / 1000.0);
        evbuffer_add_printf(o, "proxyd_deploy_duration_seconds_count{service=\"");
        esc(o, dhists[i].service);
        evbuffer_add_printf(o, "\"} %" PRIu64 "\n", cum);
    }
    family(o, "proxyd_acme_renewals_total", "counter", "ACME certificate renewals, by lineage and result.");
    result_counts_render(o, "proxyd_acme_renewals_total", "lineage", &acounts);
}

static void fallback_sample(struct evbuffer *o, const char *zone, uint64_t n)
{
    evbuffer_add_printf(o, "proxyd_cluster_fallbacks_total{zone=\"");
    esc(o, zone);
    evbuffer_add_printf(o, "\"} %" PRIu64 "\n", n);
}

/* [cluster] only (absent otherwise): Redis as this instance sees it. The
 * fallbacks: every shared zone of the config in force (0 until it falls
 * back), then any other zone that fell back before a reload. */
static void render_cluster(struct evbuffer *o)
{
    static struct px_cluster_stats cs; /* ~1.5 KB: not on the stack */
    if (px_cluster_stats(&cs) < 0)
        return;
    family(o, "proxyd_cluster_redis_up", "gauge",
           "1 when Redis answers this instance (every worker and the heartbeat connection), 0 when it falls back.");
    evbuffer_add_printf(o, "proxyd_cluster_redis_up %d\n", cs.redis_up);
    family(o, "proxyd_cluster_fallbacks_total", "counter",
           "Limit decisions a shared zone made on this instance's local state because Redis was down or late, by zone.");
    const struct px_routes *r = px_routes_peek();
    const struct px_config *cfg = r ? px_routes_config(r) : NULL;
    int shown[PX_CLUSTER_MAX_ZONES] = {0};
    for (size_t z = 0; cfg && z < cfg->nlimits; z++) {
        if (!cfg->limits[z].shared)
            continue;
        uint64_t n = 0;
        for (size_t i = 0; i < cs.nfallbacks; i++)
            if (strcmp(cs.fallbacks[i].zone, cfg->limits[z].name) == 0) {
                n = cs.fallbacks[i].n;
                shown[i] = 1;
            }
        fallback_sample(o, cfg->limits[z].name, n);
    }
    for (size_t i = 0; i < cs.nfallbacks; i++)
        if (!shown[i])
            fallback_sample(o, cs.fallbacks[i].zone, cs.fallbacks[i].n);
    family(o, "proxyd_cluster_redis_commands_total", "counter",
           "Commands sent to Redis (limit checks, connection setup, pings, heartbeats).");
    evbuffer_add_printf(o, "proxyd_cluster_redis_commands_total %" PRIu64 "\n", cs.commands);
    family(o, "proxyd_cluster_redis_errors_total", "counter",
           "Redis failures, by kind (timeout, connection, reply).");
    for (int k = 0; k < PX_CLUSTER_NERR; k++)
        evbuffer_add_printf(o, "proxyd_cluster_redis_errors_total{kind=\"%s\"} %" PRIu64 "\n", px_cluster_err_names[k],
                            cs.errors[k]);
    family(o, "proxyd_cluster_redis_seconds", "histogram",
           "Round trip of shared-zone limit checks, from queued to answered.");
    for (int b = 0; b < PX_CLUSTER_NBUCKETS; b++) {
        if (b < PX_CLUSTER_NBUCKETS - 1)
            evbuffer_add_printf(o, "proxyd_cluster_redis_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                                (double)px_cluster_bucket_us[b] / 1e6, cs.seconds[b]);
        else
            evbuffer_add_printf(o, "proxyd_cluster_redis_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cs.seconds[b]);
    }
    evbuffer_add_printf(o, "proxyd_cluster_redis_seconds_sum %.6f\n", (double)cs.seconds_sum_us / 1e6);
    evbuffer_add_printf(o, "proxyd_cluster_redis_seconds_count %" PRIu64 "\n", cs.seconds[PX_CLUSTER_NBUCKETS - 1]);
}

static void render_process(struct evbuffer *o)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long ut = 0, st = 0;
    long rss = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        buf[len] = '\0';
        const char *p = strrchr(buf, ')'); /* comm may hold spaces */
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %*u %*u %ld",
                        &ut, &st, &rss) != 3)
            ut = st = 0, rss = 0;
        fclose(f);
    }
    unsigned long nfd = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                nfd++;
        closedir(d);
        nfd--; /* the directory's own */
    }
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_NOFILE, &rl);
    family(o, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    evbuffer_add_printf(o, "process_cpu_seconds_total %.2f\n", tick > 0 ? (double)(ut + st) / (double)tick : 0.0);
    family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    evbuffer_add_printf(o, "process_resident_memory_bytes %ld\n", rss * page);
    family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    evbuffer_add_printf(o, "process_open_fds %lu\n", nfd);
    family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    evbuffer_add_printf(o, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    family(o, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    evbuffer_add_printf(o, "process_start_time_seconds %.3f\n", (double)start_wall_ms / 1000.0);
}

void px_metrics_render(struct evbuffer *o)
{
    if (start_wall_ms == 0)
        start_wall_ms = px_wall_ms();
    struct px_stats_snapshot st;
    px_stats_sum(&st);
    render_services(o);
    family(o, "proxyd_connections", "gauge", "Client connections open now; idle: waiting for their next request.");
    evbuffer_add_printf(o, "proxyd_connections{state=\"open\"} %" PRIu64 "\n", st.open_conns);
    evbuffer_add_printf(o, "proxyd_connections{state=\"idle\"} %" PRIu64 "\n", st.idle_conns);
    family(o, "proxyd_connections_accepted_total", "counter", "Client connections accepted, by listener.");
    for (int l = 0; l < PX_STATS_NLISTEN; l++)
        evbuffer_add_printf(o, "proxyd_connections_accepted_total{listener=\"%s\"} %" PRIu64 "\n",
                            px_stats_listen_names[l], st.accepted[l]);
    family(o, "proxyd_tls_handshakes_total", "counter", "Client TLS handshakes, by result (new, resumed, failed).");
    evbuffer_add_printf(o, "proxyd_tls_handshakes_total{result=\"new\"} %" PRIu64 "\n", st.tls_new);
    evbuffer_add_printf(o, "proxyd_tls_handshakes_total{result=\"resumed\"} %" PRIu64 "\n", st.tls_resumed);
    evbuffer_add_printf(o, "proxyd_tls_handshakes_total{result=\"failed\"} %" PRIu64 "\n", st.tls_failed);
    render_pairs(o);
    render_targets(o);
    render_control(o);
    render_cluster(o);
    family(o, "proxyd_build_info", "gauge", "proxyd's version (always 1).");
    evbuffer_add_printf(o, "proxyd_build_info{version=\"%s\"} 1\n", PX_VERSION);
    render_process(o);
}

/* ---- the listener ---- */

static void answer(struct evhttp_request *req, int status, const char *ctype, struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (strncmp(ctype, "text/html", 9) == 0) { /* the status page: its own inline code, status.json, nothing else */
        evhttp_add_header(h, "Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                                                        "style-src 'unsafe-inline'; connect-src 'self'; img-src data:");
        evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    }
    evhttp_send_reply(req, status, status == 200 ? "OK" : status == 404 ? "Not Found" : "Error", body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    struct evbuffer *body = evbuffer_new();
    if (body == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        evbuffer_add_printf(body, "method not allowed\n");
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
        evhttp_send_reply(req, 405, "Method Not Allowed", body);
        evbuffer_free(body);
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (path == NULL || *path == '\0')
        path = "/";
    const char *ctype = "text/plain; charset=utf-8";
    int status = 404;
    if (strcmp(path, "/metrics") == 0) {
        px_metrics_render(body);
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        status = 200;
    } else if (strcmp(path, "/status.json") == 0) {
        status = px_status_json(body, &ctype);
    } else if (strcmp(path, "/") == 0) {
        status = px_status_page(body, &ctype);
    }
    if (status == 404) {
        evbuffer_drain(body, evbuffer_get_length(body));
        evbuffer_add_printf(body, "not found\n");
        ctype = "text/plain; charset=utf-8";
    }
    answer(req, status, ctype, body);
    evbuffer_free(body);
}

struct px_metrics *px_metrics_new(struct event_base *base, const struct px_addr *addr, int fd, char *err,
                                  size_t errlen)
{
    struct px_metrics *m = calloc(1, sizeof(*m));
    if (start_wall_ms == 0)
        start_wall_ms = px_wall_ms();
    if (m == NULL || (m->http = evhttp_new(base)) == NULL) {
        snprintf(err, errlen, "metrics_listen: out of memory");
        goto fail;
    }
    evhttp_set_max_headers_size(m->http, 8192);
    evhttp_set_max_body_size(m->http, 0);
    evhttp_set_timeout(m->http, 10); /* idle and slow clients */
    evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(m->http, on_request, m);
    int one = 1;
    if (fd < 0 && ((fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0 ||
                   setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
                   bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 || listen(fd, 128) < 0)) {
        snprintf(err, errlen, "metrics_listen %s: %s", addr->text, strerror(errno));
        goto fail;
    }
    if ((m->sock = evhttp_accept_socket_with_handle(m->http, fd)) == NULL) {
        snprintf(err, errlen, "metrics_listen %s: cannot accept", addr->text);
        goto fail;
    }
    fd = -1; /* the handle owns it */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[64];
    if (getsockname(evhttp_bound_socket_get_fd(m->sock), (struct sockaddr *)&ss, &sl) == 0) {
        px_addr_ntop((struct sockaddr *)&ss, host, sizeof(host));
        int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(m->address, sizeof(m->address), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
    }
    return m;
fail:
    if (fd >= 0)
        close(fd);
    px_metrics_free(m);
    return NULL;
}

void px_metrics_free(struct px_metrics *m)
{
    if (m == NULL)
        return;
    if (m->http)
        evhttp_free(m->http);
    free(m);
}

int px_metrics_fd(const struct px_metrics *m)
{
    return evhttp_bound_socket_get_fd(m->sock);
}

const char *px_metrics_address(const struct px_metrics *m)
{
    return m->address;
}
