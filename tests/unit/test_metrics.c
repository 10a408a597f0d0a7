/* test_metrics.c -- the /metrics renderer (px/metrics.h) over a published
 * snapshot of 100 services x 3 targets and 100 routes x 4 zones, every
 * labelled counter bumped: exact series counts, the deploy ring, and the
 * time a scrape takes on the (main) thread, printed, not asserted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "px/common.h"
#include "px/config.h"
#include "px/metrics.h"
#include "px/routes.h"
#include "px/services.h"
#include "px/stats.h"
#include "unit.h"

static size_t count_lines(const char *text, const char *prefix)
{
    size_t n = 0, pl = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, pl) == 0)
            n++;
    return n;
}

static char *render(void)
{
    struct evbuffer *b = evbuffer_new();
    px_metrics_render(b);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static void test_scrape_100_services(void)
{
    enum { NSVC = 100, NTGT = 3, NZONE = 4, NWORKERS = 2 };
    px_stats_set_nworkers(NWORKERS);
    size_t cap = 1 << 20, n = 0;
    char *ini = malloc(cap);
    REQUIRE(ini != NULL);
    n += (size_t)snprintf(ini + n, cap - n, "[proxy]\nlisten_http = 127.0.0.1:0\n");
    for (int z = 0; z < NZONE; z++)
        n += (size_t)snprintf(ini + n, cap - n, "[limit z%d]\nrate = 10r/s\nzone_size = 1m\n", z);
    for (int s = 0; s < NSVC; s++) {
        n += (size_t)snprintf(ini + n, cap - n, "[route /s%d/]\nlimit = z0 z1 z2 z3\n", s);
        n += (size_t)snprintf(ini + n, cap - n, "[service svc%d]\nhosts = s%d.test\ntargets =", s, s);
        for (int t = 0; t < NTGT; t++)
            n += (size_t)snprintf(ini + n, cap - n, " 127.0.0.1:%d", 20000 + s * NTGT + t);
        n += (size_t)snprintf(ini + n, cap - n, "\n");
    }
    struct px_config *cfg = NULL;
    char err[512];
    REQUIRE(px_config_load_string(ini, "t.ini", &cfg, err, sizeof(err)) == 0);
    free(ini);
    struct px_routes *r = px_routes_build(cfg, NULL, err, sizeof(err));
    REQUIRE(r != NULL);
    px_routes_publish(r);
    const struct px_services *svcs = px_routes_services(px_routes_peek());
    REQUIRE(px_services_count(svcs) == NSVC);
    /* every service: 6 codes x 2 protocols on each worker; every pair: 4 kinds */
    static const int codes[] = {200, 204, 304, 404, 502, 503};
    for (size_t i = 0; i < NSVC; i++) {
        const struct px_service *s = px_services_at(svcs, i);
        for (int w = 0; w < NWORKERS; w++) {
            for (size_t c = 0; c < sizeof(codes) / sizeof(codes[0]); c++) {
                px_stats_service(w, s->stats_id, PX_STATS_PROTO_H11, codes[c], 1000 * c, 10);
                px_stats_service(w, s->stats_id, PX_STATS_PROTO_H2, codes[c], 1000 * c, 10);
            }
            for (size_t t = 0; t < s->ntargets; t++)
                for (unsigned k = 0; k < PX_STATS_UP_NKINDS; k++)
                    px_stats_target_error(w, s->target_stats_ids[t], k);
        }
    }
    for (uint32_t l = 0; l < px_stats_nlimits(); l++)
        px_stats_limited(0, l);
    for (int d = 0; d < 25; d++) {
        char name[16];
        snprintf(name, sizeof(name), "svc%d", d % 3);
        px_metrics_deploy_done(name, d % 5 ? "ok" : "health_check_failed", 1000, 1500 * (uint64_t)d, "127.0.0.1:1");
    }

    char *text = render();
    CHECK_INT(count_lines(text, "proxyd_requests_total{"), NSVC * 6 * 2);
    CHECK_INT(count_lines(text, "proxyd_request_duration_seconds_bucket{"), NSVC * PX_STATS_NBUCKETS);
    CHECK_INT(count_lines(text, "proxyd_upstream_errors_total{"), NSVC * NTGT * PX_STATS_UP_NKINDS);
    CHECK_INT(count_lines(text, "proxyd_limited_requests_total{"), NSVC * NZONE);
    CHECK_INT(count_lines(text, "proxyd_target_healthy{"), NSVC * NTGT);
    CHECK_INT(count_lines(text, "proxyd_target_requests_in_flight{"), NSVC * NTGT);
    CHECK_INT(count_lines(text, "proxyd_deploys_total{"), 6);
    CHECK(strstr(text, "proxyd_requests_total{service=\"svc7\",code=\"502\",proto=\"HTTP/2\"} 2\n") != NULL);
    CHECK(strstr(text, "proxyd_limited_requests_total{zone=\"z2\",route=\"/s9/\"} 1\n") != NULL);
    CHECK(strstr(text, "proxyd_upstream_errors_total{service=\"svc0\",target=\"127.0.0.1:20001\",kind=\"reset\"} 2\n") !=
          NULL);
    CHECK(strstr(text, "proxyd_deploys_total{service=\"svc0\",result=\"health_check_failed\"} 2\n") != NULL);
    CHECK(strstr(text, "proxyd_deploy_duration_seconds_bucket{service=\"svc1\",le=\"10\"} 2\n") != NULL);
    size_t bytes = strlen(text);
    free(text);

    struct px_metrics_deploy ring[PX_METRICS_DEPLOYS];
    CHECK_INT(px_metrics_deploys(ring), PX_METRICS_DEPLOYS);
    CHECK_STR(ring[0].service, "svc0"); /* the 25th, d = 24 */
    CHECK_INT(ring[0].duration_ms, 1500 * 24);
    CHECK_STR(ring[PX_METRICS_DEPLOYS - 1].service, "svc2"); /* d = 5 */

    /* the time a scrape holds the main thread (not asserted) */
    enum { RUNS = 20 };
    uint64_t t0 = px_now_us();
    for (int i = 0; i < RUNS; i++)
        free(render());
    double ms = (double)(px_now_us() - t0) / RUNS / 1000.0;
    fprintf(stderr, "# scrape of %d services x %d targets x %d zones (%d routes): %.2f ms, %zu bytes\n", NSVC, NTGT,
            NZONE, NSVC, ms, bytes);
    px_routes_shutdown();
}

static void test_escaping(void)
{
    /* label values from the config are escaped: \ " and newline */
    uint32_t id;
    REQUIRE(px_stats_service_id("we\"b\\x\ny", &id) == 0);
    px_stats_service(0, id, PX_STATS_PROTO_H11, 200, 1, 1);
    char *text = render();
    CHECK(strstr(text, "proxyd_requests_total{service=\"we\\\"b\\\\x\\ny\",code=\"200\",proto=\"HTTP/1.1\"} 1\n") !=
          NULL);
    free(text);
}

int main(void)
{
    UNIT_RUN(test_scrape_100_services);
    UNIT_RUN(test_escaping);
    return unit_report();
}
