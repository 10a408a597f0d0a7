/* test_accesslog.c -- the access-log lines, byte for byte. JSON: field
 * order, escaping of client bytes, the time and duration formats, "limited"
 * and the upstream's fields only when set, the service's log headers, and
 * a line longer than any stack buffer. combined: nginx's line exactly, its
 * \xHH escaping, "-" for what is absent. Hostile bytes in every client
 * field never make a second line in either format. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "px/accesslog.h"
#include "unit.h"

/* Format e as the pipeline does (a first try in a small buffer, then the
 * bound it asks for) and append the line to b. */
static int put_fmt(struct evbuffer *b, const struct px_access_entry *e, enum px_access_format f)
{
    char small[64];
    size_t n = px_access_log_format(f, e, small, sizeof(small));
    if (n <= sizeof(small))
        return -1; /* every line's bound is over 100 */
    char *buf = malloc(n);
    if (buf == NULL)
        return -1;
    size_t len = px_access_log_format(f, e, buf, n);
    int rc = len <= n && len > 0 ? evbuffer_add(b, buf, len) : -1;
    free(buf);
    return rc;
}

static int put(struct evbuffer *b, const struct px_access_entry *e)
{
    return put_fmt(b, e, PX_ACCESS_JSON);
}

static char *take(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    if (s == NULL)
        return NULL;
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

#define S(x) x, sizeof(x) - 1

static void test_line_exact(void)
{
    struct evbuffer *b = evbuffer_new();
    REQUIRE(b != NULL);
    struct px_access_entry e = {
        .start_wall_ms = 1700000000123ull, /* 2023-11-14T22:13:20.123Z */
        .duration_us = 12345,
        .client = S("203.0.113.7"),
        .method = S("GET"),
        .host = S("example.com"),
        .path = S("/a\"b\\c\n\x01\xc3\xa9?q=1"),
        .status = 200,
        .bytes_out = 42,
        .service = "web",
        .upstream = "127.0.0.1:3000",
        .request_id = S("abc123"),
        .proto = "HTTP/1.1",
        .version = "HTTP/1.1",
        .target = "",
        .tls = 0,
        .limited = NULL,
    };
    CHECK_INT(put(b, &e), 0);
    e.start_wall_ms = 1700000001005ull;
    e.duration_us = 7;
    e.method = "POST";
    e.method_len = 4;
    e.path = "/";
    e.path_len = 1;
    e.status = 429;
    e.bytes_out = 0;
    e.service = "";
    e.upstream = "";
    e.proto = "HTTP/2";
    e.tls = 1;
    e.limited = "per_ip";
    CHECK_INT(put(b, &e), 0);
    char *s = take(b);
    static const char want[] = "{\"time\":\"2023-11-14T22:13:20.123Z\",\"client\":\"203.0.113.7\",\"method\":\"GET\","
                 "\"host\":\"example.com\",\"path\":\"/a\\\"b\\\\c\\u000a\\u0001\\u00c3\\u00a9?q=1\","
                 "\"status\":200,\"bytes_in\":0,\"bytes_out\":42,\"duration_ms\":12.345,\"service\":\"web\","
                 "\"upstream\":\"127.0.0.1:3000\",\"request_id\":\"abc123\",\"proto\":\"HTTP/1.1\",\"tls\":false,"
                 "\"user_agent\":\"\",\"referer\":\"\"}\n"
                 "{\"time\":\"2023-11-14T22:13:21.005Z\",\"client\":\"203.0.113.7\",\"method\":\"POST\","
                 "\"host\":\"example.com\",\"path\":\"/\",\"status\":429,\"bytes_in\":0,\"bytes_out\":0,"
                 "\"duration_ms\":0.007,\"service\":\"\",\"upstream\":\"\",\"request_id\":\"abc123\",\"proto\":\"HTTP/2\","
                 "\"tls\":true,\"user_agent\":\"\",\"referer\":\"\",\"limited\":\"per_ip\"}\n";
    CHECK(s != NULL && strcmp(s, want) == 0);
    if (s && strcmp(s, want) != 0)
        fprintf(stderr, "got:  %s\nwant: %s", s, want);
    free(s);
    evbuffer_free(b);
}

/* A path of 8 KiB of bytes that each take six: the bound holds. */
static void test_long_line(void)
{
    enum { N = 8192 };
    char *path = malloc(N);
    REQUIRE(path != NULL);
    struct evbuffer *b = evbuffer_new();
    REQUIRE_ELSE(b != NULL, free(path));
    memset(path, 0x7f, N);
    struct px_access_entry e = {
        .start_wall_ms = 0, .client = S("::1"), .method = S("GET"), .host = S(""),
        .path = path, .path_len = N, .status = 404, .service = "", .upstream = "",
        .request_id = S("r"), .proto = "HTTP/1.0", .version = "HTTP/1.0", .target = "",
    };
    CHECK_INT(put(b, &e), 0);
    char *s = take(b);
    REQUIRE_ELSE(s != NULL, (free(path), evbuffer_free(b)));
    CHECK_INT(strlen(s), strlen("{\"time\":\"1970-01-01T00:00:00.000Z\",\"client\":\"::1\",\"method\":\"GET\","
                                "\"host\":\"\",\"path\":\"\",\"status\":404,\"bytes_in\":0,\"bytes_out\":0,"
                                "\"duration_ms\":0.000,\"service\":\"\",\"upstream\":\"\",\"request_id\":\"r\","
                                "\"proto\":\"HTTP/1.0\",\"tls\":false,\"user_agent\":\"\",\"referer\":\"\"}\n") + 6 * N);
    CHECK(strstr(s, "\\u007f\\u007f\"") != NULL);
    CHECK(s[strlen(s) - 1] == '\n' && strchr(s, '\n') == s + strlen(s) - 1);
    free(s);
    free(path);
    evbuffer_free(b);
}

/* The fields issue 16 added, and the service's log headers: an absent one
 * is left out, a present one escaped. */
static void test_json_full(void)
{
    struct evbuffer *b = evbuffer_new();
    REQUIRE(b != NULL);
    const struct px_access_field fields[] = {
        {S("req_cache_control"), S("no-cache")},
        {S("req_last_modified"), NULL, 0},
        {S("resp_x_runtime"), S("0.1\"\n")},
    };
    struct px_access_entry e = {
        .start_wall_ms = 1700000000000ull,
        .duration_us = 5000,
        .client = S("10.0.0.1"),
        .method = S("GET"),
        .host = S("a.test"),
        .path = S("/x"),
        .target = S("/x"),
        .version = "HTTP/2.0",
        .status = 200,
        .bytes_in = 57,
        .bytes_out = 180,
        .body_out = 5,
        .service = "web",
        .upstream = "127.0.0.1:3000",
        .upstream_status = 201,
        .upstream_us = 3210,
        .request_id = S("id"),
        .proto = "HTTP/2",
        .tls = 1,
        .user_agent = S("curl/8 \"x\""),
        .referer = S("https://r.test/\xff"),
        .fields = fields,
        .nfields = 3,
    };
    CHECK_INT(put(b, &e), 0);
    char *s = take(b);
    static const char want[] =
        "{\"time\":\"2023-11-14T22:13:20.000Z\",\"client\":\"10.0.0.1\",\"method\":\"GET\",\"host\":\"a.test\","
        "\"path\":\"/x\",\"status\":200,\"bytes_in\":57,\"bytes_out\":180,\"duration_ms\":5.000,\"service\":\"web\","
        "\"upstream\":\"127.0.0.1:3000\",\"upstream_status\":201,\"upstream_ms\":3.210,\"request_id\":\"id\","
        "\"proto\":\"HTTP/2\",\"tls\":true,\"user_agent\":\"curl/8 \\\"x\\\"\",\"referer\":\"https://r.test/\\u00ff\","
        "\"req_cache_control\":\"no-cache\",\"resp_x_runtime\":\"0.1\\\"\\u000a\"}\n";
    CHECK_STR(s, want);
    free(s);
    evbuffer_free(b);
}

/* nginx's combined line, byte for byte (the time zone is set to UTC). */
static void test_combined_exact(void)
{
    struct evbuffer *b = evbuffer_new();
    REQUIRE(b != NULL);
    struct px_access_entry e = {
        .start_wall_ms = 1796599769123ull, /* 2026-12-06T23:29:29Z */
        .client = S("203.0.113.7"),
        .method = S("GET"),
        .host = S("example.com"),
        .path = S("/a?b=1"),
        .target = S("/a\"b\\c\x01\x7f\xc3\xa9?q=1"),
        .version = "HTTP/1.1",
        .status = 200,
        .bytes_in = 100,
        .bytes_out = 300,
        .body_out = 42,
        .service = "web",
        .upstream = "",
        .request_id = S("r"),
        .proto = "HTTP/1.1",
        .user_agent = S("Mozilla/5.0 \"evil\"\t"),
        .referer = NULL,
    };
    CHECK_INT(put_fmt(b, &e, PX_ACCESS_COMBINED), 0);
    e.user_agent = NULL;
    e.referer = "";
    e.referer_len = 0;
    e.method = "";
    e.method_len = 0;
    e.target = "\x16\x03\x01";
    e.target_len = 3;
    e.status = 400;
    e.body_out = 0;
    CHECK_INT(put_fmt(b, &e, PX_ACCESS_COMBINED), 0);
    e.target_len = 0;
    CHECK_INT(put_fmt(b, &e, PX_ACCESS_COMBINED), 0);
    char *s = take(b);
    static const char want[] =
        "203.0.113.7 - - [06/Dec/2026:23:29:29 +0000] \"GET /a\\x22b\\x5Cc\\x01\\x7F\\xC3\\xA9?q=1 HTTP/1.1\" 200 42 "
        "\"-\" \"Mozilla/5.0 \\x22evil\\x22\\x09\"\n"
        "203.0.113.7 - - [06/Dec/2026:23:29:29 +0000] \"\\x16\\x03\\x01\" 400 0 \"\" \"-\"\n"
        "203.0.113.7 - - [06/Dec/2026:23:29:29 +0000] \"-\" 400 0 \"\" \"-\"\n";
    CHECK_STR(s, want);
    free(s);
    evbuffer_free(b);
}

/* Every client field holding every byte: one line in each format, no
 * raw quote inside a JSON string or a combined field. */
static void test_hostile_one_line(void)
{
    char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (char)i;
    const struct px_access_field fields[] = {{S("req_x"), all, 256}};
    struct px_access_entry e = {
        .client = all, .client_len = 256, .method = all, .method_len = 256, .host = all, .host_len = 256,
        .path = all, .path_len = 256, .target = all, .target_len = 256, .version = "HTTP/1.1",
        .status = 200, .service = "", .upstream = "", .request_id = all, .request_id_len = 256,
        .proto = "HTTP/1.1", .user_agent = all, .user_agent_len = 256, .referer = all, .referer_len = 256,
        .fields = fields, .nfields = 1,
    };
    for (int f = 0; f < 2; f++) {
        struct evbuffer *b = evbuffer_new();
        REQUIRE(b != NULL);
        CHECK_INT(put_fmt(b, &e, (enum px_access_format)f), 0);
        char *s = take(b);
        REQUIRE_ELSE(s != NULL, evbuffer_free(b));
        size_t n = strlen(s);
        CHECK(n > 256 * 4 && s[n - 1] == '\n');
        for (size_t i = 0; i + 1 < n; i++)
            CHECK((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f);
        /* combined: exactly the 8 quotes of its 4 quoted fields */
        size_t quotes = 0;
        for (size_t i = 0; i < n; i++)
            quotes += s[i] == '"' && (i == 0 || s[i - 1] != '\\' || f == 1);
        if (f == 1)
            CHECK_INT(quotes, 6); /* "$request" "$http_referer" "$http_user_agent" */
        free(s);
        evbuffer_free(b);
    }
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    tzset();
    UNIT_RUN(test_line_exact);
    UNIT_RUN(test_long_line);
    UNIT_RUN(test_json_full);
    UNIT_RUN(test_combined_exact);
    UNIT_RUN(test_hostile_one_line);
    return unit_report();
}
