/* test_parse.c -- px/parse.h, the leaf of value parsers (durations, sizes
 * and booleans are also driven through the config in test_config.c). */
#include <stdint.h>

#include "px/parse.h"
#include "unit.h"

static void test_rates(void)
{
    static const struct {
        const char *in;
        uint64_t milli; /* 0: an error */
    } cases[] = {
        {"1r/s", 1000}, {"10r/s", 10000}, {"1000000r/s", 1000000000}, {"30r/m", 500}, {"1r/m", 16},
        {"0r/s", 0},    {"1000001r/s", 0}, {"10r/h", 0}, {"10", 0}, {"r/s", 0}, {"-1r/s", 0},
        {"10 r/s", 0},  {"10r/s ", 0},    {"", 0},      {"99999999999999999999r/s", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 7;
        const char *err = px_parse_rate(cases[i].in, &v);
        if (cases[i].milli) {
            CHECK_STR(err ? cases[i].in : "ok", "ok");
            CHECK_INT(v, cases[i].milli);
        } else {
            CHECK_STR(err ? err : cases[i].in, "must be Nr/s or Nr/m with N in 1..1000000");
            CHECK_INT(v, 7); /* untouched on error */
        }
    }
    CHECK(px_parse_rate(NULL, NULL) != NULL);
}

/* Go's time.ParseDuration syntax (kamal-proxy's flags) on top of proxyd's. */
static void test_go_durations(void)
{
    static const struct {
        const char *in;
        uint64_t ms;
        int ok;
    } cases[] = {
        {"500ms", 500, 1},   {"0.5s", 500, 1},      {"1m30s", 90000, 1}, {"1h", 3600000, 1},
        {"1h2m3s4ms", 3723004, 1}, {"2.5m", 150000, 1}, {".5s", 500, 1}, {"1500us", 2, 1},
        {"1000000ns", 1, 1}, {"1\xc2\xb5s", 1, 1}, {"30", 30000, 1},  {"0", 0, 1},
        {"1d12h", 129600000, 1}, {"0.001s", 1, 1},
        {"1m30", 0, 0},      {"1.s", 0, 0},         {"1x", 0, 0},        {"m", 0, 0},
        {"1s ", 0, 0},       {"1 s", 0, 0},         {"-1s", 0, 0},       {"1S", 0, 0},
        {"99999999999999999999h", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 7;
        const char *err = px_parse_duration_ms(cases[i].in, &v);
        CHECK_STR(cases[i].in, (err == NULL) == cases[i].ok ? cases[i].in : "wrong verdict");
        CHECK_INT(v, cases[i].ok ? cases[i].ms : 7);
    }
}

static void test_u64_leaves_the_rest(void)
{
    const char *p = "123abc";
    uint64_t v = 0;

    CHECK(px_parse_u64(&p, &v) == NULL);
    CHECK_INT(v, 123);
    CHECK_STR(p, "abc");
    p = "x1";
    CHECK_STR(px_parse_u64(&p, &v), "not a number");
    CHECK_STR(p, "x1");
    p = "18446744073709551616";
    CHECK_STR(px_parse_u64(&p, &v), "number too large");
}

static void test_names_and_paths(void)
{
    CHECK(px_parse_check_name("web-1.a_b") == NULL);
    CHECK_STR(px_parse_check_name(""), "name must be 1..64 characters");
    CHECK_STR(px_parse_check_name("a b"), "name may contain only letters, digits, '_', '-' and '.'");
    CHECK(px_parse_check_path("/up") == NULL);
    CHECK_STR(px_parse_check_path("up"), "must start with '/'");
    CHECK_STR(px_parse_check_path("/a?b"), "bad character in path");
}

int main(void)
{
    UNIT_RUN(test_rates);
    UNIT_RUN(test_u64_leaves_the_rest);
    UNIT_RUN(test_go_durations);
    UNIT_RUN(test_names_and_paths);
    return unit_report();
}
