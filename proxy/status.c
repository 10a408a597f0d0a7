/* status.c -- the status page behind metrics_listen (px/status.h): the
 * last-minute window, the quantile estimate, and the hooks px/metrics.h
 * calls for GET / and GET /status.json. Main thread only. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "px/acme_manager.h"
#include "px/cluster.h"
#include "px/common.h"
#include "px/config.h"
#include "px/deploy.h"
#include "px/metrics.h"
#include "px/routes.h"
#include "px/server.h"
#include "px/services.h"
#include "px/stats.h"
#include "px/status.h"
#include "px/target.h"
#include "px/tls.h"

/* One service's ring, aligned with the window's ring of times: sample seq
 * lives at [seq % PX_STATUS_SAMPLES]; first is the oldest seq it has (a
 * service added later, or restarted, has a shorter window). */
struct win_svc {
    uint64_t first;
    int seen;
    struct px_status_counts c[PX_STATUS_SAMPLES];
};

struct px_status_window {
    double bounds[PX_STATUS_NBUCKETS - 1];
    uint64_t t_ms[PX_STATUS_SAMPLES];
    uint64_t seq; /* samples taken; the newest is seq - 1 */
    size_t last_nids; /* ids the newest sample had */
    struct win_svc **svcs;
    size_t nsvcs;
};

struct px_status_window *px_status_window_new(const double *bounds_s)
{
    struct px_status_window *w = calloc(1, sizeof(*w));
    if (w != NULL)
        memcpy(w->bounds, bounds_s, sizeof(w->bounds));
    return w;
}

void px_status_window_free(struct px_status_window *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->nsvcs; i++)
        free(w->svcs[i]);
    free(w->svcs);
    free(w);
}

static int went_back(const struct px_status_counts *old, const struct px_status_counts *now)
{
    if (now->requests < old->requests || now->errors < old->errors)
        return 1;
    for (int b = 0; b < PX_STATUS_NBUCKETS; b++)
        if (now->buckets[b] < old->buckets[b])
            return 1;
    return 0;
}

int px_status_window_add(struct px_status_window *w, uint64_t now_ms, const struct px_status_counts *counts,
                         size_t nids)
{
    if (nids > w->nsvcs) {
        struct win_svc **n = realloc(w->svcs, nids * sizeof(*n));
        if (n == NULL)
            return -1;
        for (size_t i = w->nsvcs; i < nids; i++)
            n[i] = NULL;
        w->svcs = n;
        w->nsvcs = nids;
    }
    /* Allocate first, so that a failure leaves the window as it was. */
    for (size_t i = 0; i < nids; i++)
        if (w->svcs[i] == NULL && (w->svcs[i] = calloc(1, sizeof(struct win_svc))) == NULL)
            return -1;
    uint64_t seq = w->seq++;
    size_t slot = seq % PX_STATUS_SAMPLES;
    w->t_ms[slot] = now_ms;
    for (size_t i = 0; i < nids; i++) {
        struct win_svc *s = w->svcs[i];
        if (!s->seen && seq > 0 && i >= w->last_nids) {
            /* An id made since the last sample started from zero then: what
             * it counts now happened in this interval. */
            memset(&s->c[(seq - 1) % PX_STATUS_SAMPLES], 0, sizeof(s->c[0]));
            s->first = seq - 1;
        } else if (!s->seen || went_back(&s->c[(seq - 1) % PX_STATUS_SAMPLES], &counts[i])) {
            s->first = seq;
        }
        s->seen = 1;
        s->c[slot] = counts[i];
    }
    w->last_nids = nids;
    /* An id that was not given this time (the caller's list is shorter:
     * never, ids only grow) starts over when it comes back. */
    for (size_t i = nids; i < w->nsvcs; i++)
        if (w->svcs[i] != NULL)
            w->svcs[i]->seen = 0;
    return 0;
}

void px_status_window_figures(const struct px_status_window *w, size_t id, struct px_status_figures *out)
{
    memset(out, 0, sizeof(*out));
    out->p50_ms = out->p99_ms = -1;
    if (id >= w->nsvcs || w->svcs[id] == NULL || !w->svcs[id]->seen || w->seq == 0)
        return;
    const struct win_svc *s = w->svcs[id];
    uint64_t newest = w->seq - 1, oldest = s->first;
    if (newest - oldest > PX_STATUS_SAMPLES - 1)
        oldest = newest - (PX_STATUS_SAMPLES - 1);
    if (oldest == newest)
        return;
    const struct px_status_counts *a = &s->c[oldest % PX_STATUS_SAMPLES], *b = &s->c[newest % PX_STATUS_SAMPLES];
    uint64_t t0 = w->t_ms[oldest % PX_STATUS_SAMPLES], t1 = w->t_ms[newest % PX_STATUS_SAMPLES];
    out->seconds = t1 > t0 ? (double)(t1 - t0) / 1000.0 : 0;
    uint64_t n = b->requests - a->requests;
    if (out->seconds > 0)
        out->rate = (double)n / out->seconds;
    if (n == 0)
        return;
    out->error_rate = (double)(b->errors - a->errors) / (double)n;
    uint64_t cum[PX_STATUS_NBUCKETS];
    for (int i = 0; i < PX_STATUS_NBUCKETS; i++)
        cum[i] = b->buckets[i] - a->buckets[i];
    double p50 = px_status_quantile(0.5, w->bounds, cum, PX_STATUS_NBUCKETS);
    double p99 = px_status_quantile(0.99, w->bounds, cum, PX_STATUS_NBUCKETS);
    out->p50_ms = p50 < 0 ? -1 : p50 * 1000.0;
    out->p99_ms = p99 < 0 ? -1 : p99 * 1000.0;
}

/* As Prometheus' bucketQuantile (promql/quantile.go): the rank's bucket by
 * binary search over the finite buckets, +Inf answers the highest bound. */
double px_status_quantile(double q, const double *bounds, const uint64_t *cum, size_t n)
{
    if (n < 2 || cum[n - 1] == 0 || q < 0 || q > 1)
        return -1;
    double rank = q * (double)cum[n - 1];
    size_t lo = 0, hi = n - 1; /* first i in [0, n-1) with cum[i] >= rank, else n - 1 */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((double)cum[mid] >= rank)
            hi = mid;
        else
            lo = mid + 1;
    }
    size_t i = lo;
    if (i == n - 1)
        return bounds[n - 2];
    if (i == 0 && bounds[0] <= 0)
        return bounds[0];
    double lower = i == 0 ? 0 : bounds[i - 1];
    uint64_t below = i == 0 ? 0 : cum[i - 1];
    uint64_t in = cum[i] - below;
    if (in == 0) /* q == 0 and an empty first bucket */
        return lower;
    return lower + (bounds[i] - lower) * ((rank - (double)below) / (double)in);
}

/* ---- the live document: GET /status.json (px/metrics.h's hooks) ---- */

_Static_assert(PX_STATUS_NBUCKETS == PX_STATS_NBUCKETS, "the window keeps the latency histogram's buckets");

/* What the status page reads, set by px_status_start: process state of
 * this module, as the hooks px/metrics.h calls take no argument. */
static struct {
    struct px_server *srv;
    struct px_deployer *dep;
    struct event *tick;
    struct px_status_window *win;
    struct px_status_counts *counts;
    size_t ncounts;
} live;

static struct px_stats_svc_sum sum_buf; /* ~2.5 KB: not on the stack, reused */

static void sample(void)
{
    uint32_t n = px_stats_nservices();
    if (n > live.ncounts) {
        struct px_status_counts *c = realloc(live.counts, n * sizeof(*c));
        if (c == NULL)
            return;
        live.counts = c;
        live.ncounts = n;
    }
    for (uint32_t id = 0; id < n; id++) {
        struct px_status_counts *c = &live.counts[id];
        px_stats_service_sum(id, &sum_buf);
        c->requests = sum_buf.requests;
        c->errors = 0;
        for (size_t i = 0; i < sum_buf.ncodes; i++) {
            const struct px_stats_code_count *k = &sum_buf.codes[i];
            if (k->fallback ? k->code == 5 : k->code >= 500 && k->code < 600)
                for (int p = 0; p < PX_STATS_NPROTO; p++)
                    c->errors += k->n[p];
        }
        memcpy(c->buckets, sum_buf.duration, sizeof(c->buckets));
    }
    px_status_window_add(live.win, px_now_ms(), live.counts, n);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    sample();
}

int px_status_start(struct event_base *base, struct px_server *srv, struct px_deployer *dep)
{
    double bounds[PX_STATUS_NBUCKETS - 1];
    for (int i = 0; i < PX_STATUS_NBUCKETS - 1; i++)
        bounds[i] = (double)px_stats_bucket_us[i] / 1e6;
    px_status_stop();
    live.srv = srv;
    live.dep = dep;
    live.win = px_status_window_new(bounds);
    live.tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval one = {1, 0};
    if (live.win == NULL || live.tick == NULL || event_add(live.tick, &one) < 0) {
        px_status_stop();
        return -1;
    }
    sample();
    return 0;
}

void px_status_stop(void)
{
    if (live.tick)
        event_free(live.tick);
    px_status_window_free(live.win);
    free(live.counts);
    memset(&live, 0, sizeof(live));
}

/* A JSON string of s: jansson refuses invalid UTF-8, so such bytes become
 * U+FFFD (a name from a deploy is the operator's; the page must not lose
 * the whole document over one byte). */
static json_t *jstr(const char *s)
{
    if (s == NULL)
        return json_null();
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    size_t n = strlen(s);
    char *t = malloc(n * 3 + 1), *o = t;
    if (t == NULL)
        return json_string("");
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int len = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
        int ok = len > 0;
        for (int i = 1; ok && i < len; i++)
            ok = (p[i] & 0xc0) == 0x80;
        if (ok && len > 1) {
            char one[5] = {0};
            memcpy(one, p, (size_t)len);
            json_t *probe = json_string(one); /* overlong forms and surrogates too */
            ok = probe != NULL;
            json_decref(probe);
        }
        if (ok) {
            memcpy(o, p, (size_t)len);
            o += len;
            p += len;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            p++;
        }
    }
    *o = 0;
    j = json_string(t);
    free(t);
    return j ? j : json_string("");
}

static json_t *jstrs(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, jstr(v[i]));
    return a;
}

/* A figure, or null when there is none (negative). */
static json_t *jms(double v)
{
    return v < 0 ? json_null() : json_real(v);
}

static char *iso8601(uint64_t wall_ms, char *buf, size_t len)
{
    time_t t = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

static json_t *target_json(const struct px_target *t)
{
    uint32_t req = 0, tun = 0;
    char buf[32];
    px_target_inflight(t, &req, &tun);
    /* the state proxyctl list shows: healthy, failing N/M, unhealthy, draining, standby */
    return json_pack("{s:o, s:s, s:I}", "target", jstr(t->addr.text), "health",
                     px_target_health_state(t, buf, sizeof(buf)), "in_flight", (json_int_t)(req + tun));
}

struct services_acc {
    json_t *arr;
    double rate; /* the sum of the services' rates */
};

static void service_json(void *arg, const struct px_deploy_entry *e)
{
    static const char *const states[] = {"running", "stopped", "paused"}; /* by enum px_service_state */
    struct services_acc *acc = arg;
    const struct px_service *s = e->svc;
    json_t *active = json_array(), *previous = json_array(), *codes = json_object();
    for (size_t i = 0; active && i < s->ntargets; i++)
        json_array_append_new(active, target_json(s->targets[i]));
    /* A previous target is not served: rollback switches back to it (its
     * health is not checked; what it has in flight while it drains is
     * counted on the service). */
    for (size_t i = 0; previous && i < e->nprevious; i++)
        json_array_append_new(previous, json_pack("{s:o, s:s, s:n}", "target", jstr(e->previous[i]), "health",
                                                  "standby", "in_flight"));
    struct px_status_figures f;
    uint32_t id;
    memset(&sum_buf, 0, sizeof(sum_buf));
    if (px_stats_service_id(s->name, &id) == 0) {
        px_stats_service_sum(id, &sum_buf);
        px_status_window_figures(live.win, id, &f);
    } else {
        memset(&f, 0, sizeof(f));
        f.p50_ms = f.p99_ms = -1;
    }
    for (size_t i = 0; codes && i < sum_buf.ncodes; i++) {
        char label[16];
        uint64_t n = 0;
        for (int p = 0; p < PX_STATS_NPROTO; p++)
            n += sum_buf.codes[i].n[p];
        json_object_set_new(codes, px_stats_code_label(&sum_buf.codes[i], label), json_integer((json_int_t)n));
    }
    acc->rate += f.rate;
    const char *prefixes[] = {s->path_prefix};
    json_t *o = json_pack("{s:o, s:o, s:o, s:s, s:o, s:o, s:I, s:I, s:f, s:o, s:o, s:f, s:o}", "name", jstr(s->name),
                          "hosts", jstrs((const char *const *)s->hosts, s->nhosts), "path_prefixes",
                          jstrs(prefixes, 1), "state", s->state < 3 ? states[s->state] : "running", "active", active,
                          "previous", previous, "in_flight", (json_int_t)e->in_flight, "requests_total",
                          (json_int_t)sum_buf.requests, "rate_1m", f.rate, "p50_ms", jms(f.p50_ms), "p99_ms",
                          jms(f.p99_ms), "error_rate_1m", f.error_rate, "codes", codes);
    if (o)
        json_array_append_new(acc->arr, o);
}

/* "10r/s", or "30r/m" when the rate is not whole per second. */
static void rate_text(uint64_t milli, char *buf, size_t len)
{
    if (milli % 1000 == 0)
        snprintf(buf, len, "%llur/s", (unsigned long long)(milli / 1000));
    else
        snprintf(buf, len, "%llur/m", (unsigned long long)((milli * 60 + 500) / 1000));
}

static json_t *limits_json(const struct px_config *cfg)
{
    json_t *arr = json_array();
    uint32_t nlim = px_stats_nlimits();
    for (size_t z = 0; arr && z < cfg->nlimits; z++) {
        const struct px_limit_conf *lc = &cfg->limits[z];
        char rate[32];
        rate_text(lc->rate_milli_per_s, rate, sizeof(rate));
        json_t *routes = json_array();
        uint64_t total = 0;
        for (uint32_t id = 0; routes && id < nlim; id++) {
            const char *zone, *route;
            px_stats_limit_label(id, &zone, &route);
            if (zone == NULL || strcmp(zone, lc->name) != 0)
                continue;
            uint64_t n = px_stats_limit_sum(id);
            total += n;
            json_array_append_new(routes, json_pack("{s:o, s:I}", "route", jstr(route), "limited_total", (json_int_t)n));
        }
        json_array_append_new(arr, json_pack("{s:o, s:s, s:I, s:I, s:o}", "zone", jstr(lc->name), "rate", rate,
                                             "burst", (json_int_t)lc->burst, "limited_total", (json_int_t)total,
                                             "routes", routes));
    }
    return arr;
}

/* One certificate: not_after < 0 when none is served yet; names borrowed
 * (NULL: none known). */
static json_t *certificate_json(const char *lineage, json_t *names, int64_t not_after,
                                const struct px_metrics_acme *last, size_t nlast)
{
    char when[32];
    json_t *attempt = NULL;
    for (size_t a = 0; a < nlast && attempt == NULL; a++)
        if (last[a].lineage && strcmp(last[a].lineage, lineage) == 0)
            attempt = json_pack("{s:s, s:o, s:o}", "time", iso8601(last[a].wall_ms, when, sizeof(when)), "result",
                                jstr(last[a].result), "message", jstr(last[a].message));
    json_t *o = json_pack("{s:o, s:o, s:o, s:o}", "lineage", jstr(lineage), "names",
                          names ? json_incref(names) : json_array(),
                          "last_acme", attempt ? attempt : json_null(), "not_after",
                          not_after < 0 ? json_null()
                                        : json_string(iso8601((uint64_t)not_after * 1000, when, sizeof(when))));
    if (o)
        json_object_set_new(o, "days_left",
                            not_after < 0 ? json_null()
                                          : json_real((double)(not_after - (int64_t)(px_wall_ms() / 1000)) / 86400.0));
    return o;
}

/* The certificates: those served (px_tls_certs, labelled as /metrics
 * labels them), then the ACME lineages not served yet (missing, being
 * obtained); their names from cert status (px_acme_manager_status), the
 * last ACME attempt as /metrics counted it (px_metrics_acme_last). */
static json_t *certificates_json(const struct px_routes *r, const struct px_config *cfg)
{
    const struct px_tls_conf *tls = cfg->has_listen_https || cfg->tls.present ? &cfg->tls : NULL;
    json_t *st = px_acme_manager_status(live.srv ? px_server_acme(live.srv) : NULL, tls), *arr = json_array();
    json_t *status = json_object_get(st, "certificates"), *c;
    static struct px_metrics_acme last[256];
    size_t nlast = px_metrics_acme_last(last, sizeof(last) / sizeof(last[0])), ncerts = 0, k;
    const struct px_tls_cert *certs = px_tls_certs(px_routes_tls(r), &ncerts);
    for (size_t i = 0; arr && i < ncerts; i++) {
        json_t *names = NULL;
        json_array_foreach(status, k, c)
        {
            const char *source = json_string_value(json_object_get(c, "source"));
            const char *key = json_string_value(
                json_object_get(c, source && strcmp(source, "acme") == 0 ? "name" : "file"));
            if (key && strcmp(key, certs[i].label) == 0 && names == NULL)
                names = json_object_get(c, "hosts");
        }
        json_t *o = certificate_json(certs[i].label, names, certs[i].not_after, last, nlast);
        if (o)
            json_array_append_new(arr, o);
    }
    json_array_foreach(status, k, c)
    {
        const char *source = json_string_value(json_object_get(c, "source"));
        const char *name = json_string_value(json_object_get(c, "name"));
        if (arr == NULL || source == NULL || strcmp(source, "acme") != 0 || name == NULL ||
            json_is_true(json_object_get(c, "served")))
            continue;
        json_t *names = json_object_get(c, "hosts");
        json_t *o = certificate_json(name, names, -1, last, nlast);
        if (o)
            json_array_append_new(arr, o);
    }
    json_decref(st);
    return arr;
}

static json_t *deploys_json(void)
{
    static struct px_metrics_deploy d[PX_METRICS_DEPLOYS];
    size_t n = px_metrics_deploys(d);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        char when[32];
        json_t *targets = json_array();
        /* "a,b" -> ["a","b"] */
        for (const char *p = d[i].targets; targets && *p;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            char one[sizeof(d[i].targets)];
            memcpy(one, p, len);
            one[len] = 0;
            if (len)
                json_array_append_new(targets, jstr(one));
            p += len + (comma != NULL);
        }
        json_array_append_new(arr, json_pack("{s:o, s:o, s:s, s:f, s:o}", "service", jstr(d[i].service), "result",
                                             jstr(d[i].result), "time", iso8601(d[i].started_wall_ms, when, sizeof(when)),
                                             "duration_s", (double)d[i].duration_ms / 1000.0, "targets", targets));
    }
    return arr;
}

/* [cluster]: what `proxyctl status --json` shows under "cluster", with the
 * same fields: {"instance", "redis": "up"|"down", "instances": [{"name",
 * "version", "pid", "listen"}]} (the live ones, as the last heartbeat read
 * them). NULL without [cluster]: the key is absent. */
static json_t *cluster_json(void)
{
    struct px_cluster *cl = live.srv ? px_server_cluster(live.srv) : NULL;
    return cl ? px_cluster_json(cl) : NULL;
}

static json_t *status_document(void)
{
    const struct px_routes *r = px_routes_peek();
    const struct px_config *cfg = px_routes_config(r);
    struct px_stats_snapshot st;
    px_stats_sum(&st);
    struct services_acc acc = {.arr = json_array()};
    if (acc.arr && live.dep)
        px_deployer_each(live.dep, service_json, &acc);
    /* Requests answered before a service was chosen (service "", id 0)
     * count in the total rate too. */
    struct px_status_figures none;
    px_status_window_figures(live.win, 0, &none);
    json_t *doc = json_pack("{s:s, s:I, s:I, s:{s:I, s:I}, s:{s:I, s:f}, s:o, s:o, s:o, s:o}", "version", PX_VERSION,
                     "time", (json_int_t)(px_wall_ms() / 1000), "uptime_s",
                     (json_int_t)(live.srv ? px_server_uptime_s(live.srv) : 0), "connections", "open",
                     (json_int_t)st.open_conns, "idle", (json_int_t)st.idle_conns, "requests", "total",
                     (json_int_t)st.requests_total, "rate_1m", acc.rate + none.rate, "services", acc.arr, "limits",
                     limits_json(cfg), "certificates", certificates_json(r, cfg), "deploys", deploys_json());
    json_t *cl = cluster_json();
    if (doc && cl)
        json_object_set_new(doc, "cluster", cl);
    else
        json_decref(cl);
    return doc;
}

int px_status_json(struct evbuffer *body, const char **content_type)
{
    json_t *doc = status_document();
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL)
        return 500;
    evbuffer_add(body, text, strlen(text));
    evbuffer_add(body, "\n", 1);
    free(text);
    *content_type = "application/json";
    return 200;
}

int px_status_page(struct evbuffer *body, const char **content_type)
{
    evbuffer_add_reference(body, px_status_page_html, px_status_page_len, NULL, NULL);
    *content_type = "text/html; charset=utf-8";
    return 200;
}
