/* test_accesslog.c -- the JSON access-log line, byte for byte: field order,
 * escaping of client bytes, the time and duration formats, "limited" only
 * when set, and a line longer than any stack buffer. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "px/accesslog.h"
#include "unit.h"

/* Format e as the pipeline does (a first try in a small buffer, then the
 * bound it asks for) and append the line to b. */
static int put(struct evbuffer *b, const struct px_access_entry *e)
{
    char small[64];
    size_t n = px_access_log_json(e, small, sizeof(small));
    if (n <= sizeof(small))
        return -1; /* every line's bound is over 400 */
    char *buf = malloc(n);
    if (buf == NULL)
        return -1;
    size_t len = px_access_log_json(e, buf, n);
    int rc = len <= n && len > 0 ? evbuffer_add(b, buf, len) : -1;
    free(buf);
    return rc;
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
                 "\"status\":200,\"bytes_out\":42,\"duration_ms\":12.345,\"service\":\"web\","
                 "\"upstream\":\"127.0.0.1:3000\",\"request_id\":\"abc123\",\"proto\":\"HTTP/1.1\",\"tls\":false}\n"
                 "{\"time\":\"2023-11-14T22:13:21.005Z\",\"client\":\"203.0.113.7\",\"method\":\"POST\","
                 "\"host\":\"example.com\",\"path\":\"/\",\"status\":429,\"bytes_out\":0,\"duration_ms\":0.007,"
                 "\"service\":\"\",\"upstream\":\"\",\"request_id\":\"abc123\",\"proto\":\"HTTP/2\",\"tls\":true,"
                 "\"limited\":\"per_ip\"}\n";
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
        .request_id = S("r"), .proto = "HTTP/1.0",
    };
    CHECK_INT(put(b, &e), 0);
    char *s = take(b);
    REQUIRE_ELSE(s != NULL, (free(path), evbuffer_free(b)));
    CHECK_INT(strlen(s), strlen("{\"time\":\"1970-01-01T00:00:00.000Z\",\"client\":\"::1\",\"method\":\"GET\","
                                "\"host\":\"\",\"path\":\"\",\"status\":404,\"bytes_out\":0,\"duration_ms\":0.000,"
                                "\"service\":\"\",\"upstream\":\"\",\"request_id\":\"r\",\"proto\":\"HTTP/1.0\","
                                "\"tls\":false}\n") + 6 * N);
    CHECK(strstr(s, "\\u007f\\u007f\"") != NULL);
    CHECK(s[strlen(s) - 1] == '\n' && strchr(s, '\n') == s + strlen(s) - 1);
    free(s);
    free(path);
    evbuffer_free(b);
}

int main(void)
{
    UNIT_RUN(test_line_exact);
    UNIT_RUN(test_long_line);
    return unit_report();
}
