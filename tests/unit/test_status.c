/* test_status.c -- the status page's figures (px/status.h): the quantile
 * estimate against values worked out by hand from Prometheus'
 * histogram_quantile rule, and the last-minute window driven by a fake
 * clock with exact counts. Also: the embedded page is the source file,
 * and the document's helpers (names that are not UTF-8, rates). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../proxy/status.c" /* the statics: jstr, rate_text */
#include "unit.h"

static const double BOUNDS[PX_STATUS_NBUCKETS - 1] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};

#define NEAR(a, b) (fabs((a) - (b)) < 1e-9)

static void cum_of(const uint64_t *per_bucket, uint64_t *cum)
{
    uint64_t n = 0;
    for (int i = 0; i < PX_STATUS_NBUCKETS; i++)
        cum[i] = n += per_bucket[i];
}

static void test_quantile(void)
{
    uint64_t per[PX_STATUS_NBUCKETS] = {0}, cum[PX_STATUS_NBUCKETS];
    /* Nothing observed: no figure. */
    cum_of(per, cum);
    CHECK(px_status_quantile(0.5, BOUNDS, cum, PX_STATUS_NBUCKETS) < 0);

    /* 100 requests in (5ms, 10ms]: rank 50 is half-way, rank 99 at .99. */
    per[1] = 100;
    cum_of(per, cum);
    CHECK(NEAR(px_status_quantile(0.5, BOUNDS, cum, PX_STATUS_NBUCKETS), 0.0075));
    CHECK(NEAR(px_status_quantile(0.99, BOUNDS, cum, PX_STATUS_NBUCKETS), 0.00995));

    /* 40 in the first bucket (lower bound 0), 60 in (50ms, 100ms]:
     * p50: rank 50, 10 into the 60 -> .05 + .05 * 10/60; p25: rank 25 of
     * the first 40 -> .005 * 25/40. */
    per[1] = 0;
    per[0] = 40;
    per[4] = 60;
    cum_of(per, cum);
    CHECK(NEAR(px_status_quantile(0.5, BOUNDS, cum, PX_STATUS_NBUCKETS), 0.05 + 0.05 * 10.0 / 60.0));
    CHECK(NEAR(px_status_quantile(0.25, BOUNDS, cum, PX_STATUS_NBUCKETS), 0.005 * 25.0 / 40.0));
    CHECK(NEAR(px_status_quantile(0.99, BOUNDS, cum, PX_STATUS_NBUCKETS), 0.05 + 0.05 * 59.0 / 60.0));

    /* The rank in +Inf: the highest finite bound, as Prometheus answers. */
    per[PX_STATUS_NBUCKETS - 1] = 100;
    cum_of(per, cum);
    CHECK(NEAR(px_status_quantile(0.99, BOUNDS, cum, PX_STATUS_NBUCKETS), 10.0));
    CHECK(NEAR(px_status_quantile(0.5, BOUNDS, cum, PX_STATUS_NBUCKETS), 0.1)); /* rank 100 = cum[4] */
    CHECK(px_status_quantile(1.5, BOUNDS, cum, PX_STATUS_NBUCKETS) < 0);
}

/* n more requests, e of them 5xx, all in bucket b (cumulative counts). */
static void observe(struct px_status_counts *c, uint64_t n, uint64_t e, int b)
{
    c->requests += n;
    c->errors += e;
    for (int i = b; i < PX_STATUS_NBUCKETS; i++)
        c->buckets[i] += n;
}

static void test_window(void)
{
    struct px_status_window *w = px_status_window_new(BOUNDS);
    REQUIRE(w != NULL);
    struct px_status_figures f;
    struct px_status_counts c[2];
    memset(c, 0, sizeof(c));

    /* One sample: no figure yet (ids given in the first sample existed
     * before it: what they count is not from one interval). */
    observe(&c[0], 1000, 0, 2);
    REQUIRE_OK(px_status_window_add(w, 5000, c, 1));
    px_status_window_figures(w, 0, &f);
    CHECK(f.seconds == 0 && f.rate == 0 && f.p50_ms < 0 && f.p99_ms < 0);

    /* 10 s later, 100 more requests (20 of them 5xx), all in (10, 25] ms. */
    observe(&c[0], 100, 20, 2);
    REQUIRE_OK(px_status_window_add(w, 15000, c, 1));
    px_status_window_figures(w, 0, &f);
    CHECK(NEAR(f.seconds, 10) && NEAR(f.rate, 10) && NEAR(f.error_rate, 0.2));
    CHECK(NEAR(f.p50_ms, 17.5)); /* 10 + 15 * 50/100 */
    CHECK(NEAR(f.p99_ms, 24.85));

    /* A second service appears; 100 samples one a second: service 0 gets 7
     * requests a second in (50, 100] ms, none failing; service 1 gets 3, all
     * 5xx, in (0, 5] ms. */
    for (int s = 1; s <= 100; s++) {
        observe(&c[0], 7, 0, 4);
        observe(&c[1], 3, 3, 0);
        REQUIRE_OK(px_status_window_add(w, 15000 + (uint64_t)s * 1000, c, 2));
        if (s == 1) { /* service 1 is new since the last sample: it counted from zero then */
            px_status_window_figures(w, 1, &f);
            CHECK(NEAR(f.seconds, 1) && NEAR(f.rate, 3) && NEAR(f.error_rate, 1));
        }
        if (s == 30) { /* service 0's window still reaches back to its first sample */
            px_status_window_figures(w, 0, &f);
            CHECK(NEAR(f.seconds, 40) && NEAR(f.rate, (100.0 + 30 * 7) / 40));
            CHECK(NEAR(f.error_rate, 20.0 / 310));
            px_status_window_figures(w, 1, &f);
            CHECK(NEAR(f.seconds, 30) && NEAR(f.rate, 3) && NEAR(f.error_rate, 1));
        }
    }
    /* The window is the last 60 s only: the old errors and buckets are out. */
    px_status_window_figures(w, 0, &f);
    CHECK(NEAR(f.seconds, 60) && NEAR(f.rate, 7) && f.error_rate == 0);
    CHECK(NEAR(f.p50_ms, 75) && NEAR(f.p99_ms, 50 + 50 * 0.99));
    px_status_window_figures(w, 1, &f);
    CHECK(NEAR(f.seconds, 60) && NEAR(f.rate, 3) && NEAR(f.error_rate, 1) && NEAR(f.p50_ms, 2.5));
    /* No traffic for a minute: rate 0, no quantile. */
    for (int s = 101; s <= 161; s++)
        REQUIRE_OK(px_status_window_add(w, 15000 + (uint64_t)s * 1000, c, 2));
    px_status_window_figures(w, 0, &f);
    CHECK(NEAR(f.seconds, 60) && f.rate == 0 && f.p50_ms < 0 && f.error_rate == 0);
    /* A counter going backwards restarts that service's window only. */
    c[1].requests = 5;
    REQUIRE_OK(px_status_window_add(w, 177000, c, 2));
    px_status_window_figures(w, 1, &f);
    CHECK(f.seconds == 0 && f.rate == 0);
    px_status_window_figures(w, 0, &f);
    CHECK(NEAR(f.seconds, 60));
    /* An id never given. */
    px_status_window_figures(w, 7, &f);
    CHECK(f.rate == 0 && f.p99_ms < 0);
    px_status_window_free(w);
}

/* The build embedded proxy/status_page.html byte for byte. */
static void test_page_embedded(void)
{
    FILE *f = fopen("proxy/status_page.html", "rb");
    REQUIRE(f != NULL);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    CHECK_INT(n, px_status_page_len);
    CHECK(n == px_status_page_len && memcmp(buf, px_status_page_html, n) == 0);
    CHECK_INT(px_status_page_html[px_status_page_len], 0);
    CHECK(strstr((const char *)px_status_page_html, "status.json") != NULL);
}

/* A name jansson refuses (not UTF-8: a config file's bytes) still makes a
 * string, with U+FFFD for each bad byte; a good one goes through as is. */
static void test_json_strings(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"web", "web"},
        {"/p\"<b>", "/p\"<b>"},
        {"caf\xc3\xa9", "caf\xc3\xa9"},
        {"bad\xff", "bad\xef\xbf\xbd"},
        {"\xc3(x", "\xef\xbf\xbd(x"},        /* a lead byte without its continuation */
        {"\xc0\xafx", "\xef\xbf\xbd\xef\xbf\xbdx"}, /* overlong '/' */
        {"\xed\xa0\x80!", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!"}, /* a surrogate */
        {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = jstr(cases[i].in);
        REQUIRE(j != NULL);
        CHECK_STR(json_string_value(j), cases[i].out);
        json_decref(j);
    }
    char buf[32];
    rate_text(10000, buf, sizeof(buf));
    CHECK_STR(buf, "10r/s");
    rate_text(16, buf, sizeof(buf)); /* 1r/m as the parser stores it */
    CHECK_STR(buf, "1r/m");
    rate_text(500, buf, sizeof(buf));
    CHECK_STR(buf, "30r/m");
}

int main(void)
{
    UNIT_RUN(test_quantile);
    UNIT_RUN(test_window);
    UNIT_RUN(test_page_embedded);
    UNIT_RUN(test_json_strings);
    return unit_report();
}
