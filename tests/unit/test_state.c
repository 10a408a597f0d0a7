/* Unit tests: the state file -- a round trip keeps every field; a missing
 * file is an empty state; a bad entry is skipped and the others kept; a
 * corrupt file is an error (never silently empty); a save leaves no
 * temporary file and a stale one from a crash does not matter. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "px/log.h"
#include "px/state.h"
#include "unit.h"

static char dir[64], path[128];

static void write_file(const char *p, const char *text)
{
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

static void test_round_trip(void)
{
    char *hosts[] = {"example.com", "www.example.com"};
    char *active[] = {"10.0.0.5:3000"}, *previous[] = {"10.0.0.4:3000", "10.0.0.6:3000"};
    char *lreq[] = {"X-Tenant"};
    char *more[] = {"/api", "/admin"};
    struct px_state_service svcs[2] = {
        {.name = "web", .hosts = hosts, .nhosts = 2, .path_prefix = "/", .active = active, .nactive = 1,
         .previous = previous, .nprevious = 2, .health_check_path = "/up", .state = PX_STATE_PAUSED,
         .max_pause_ms = 12000, .tls = 1, .interval_ms = 250, .timeout_ms = 2000, .deploy_timeout_ms = 9000,
         .log_request_headers = lreq, .nlog_request_headers = 1, .log_response_headers = previous, /* any list */
         .nlog_response_headers = 0,
         .opts = {.more_prefixes = more, .nmore_prefixes = 2, .strip_path_prefix = 1, .forward_headers = 1,
                  .no_tls_redirect = 1, .health_check_port = 9001, .target_timeout_ms = 90000,
                  .canonical_host = "example.com", .tls_certificate = "/c.pem", .tls_certificate_key = "/k.pem",
                  .error_pages = "/pages"},
         .buffering = {0, 1, 4096, 1000, 1ull << 40}},
        {.name = "api", .hosts = NULL, .nhosts = 0, .path_prefix = "/api", .active = active, .nactive = 1,
         .previous = NULL, .nprevious = 0, .health_check_path = "/health", .state = PX_STATE_STOPPED,
         .stop_message = "back at 5 \"pm\"\n"},
    };
    struct px_state st = {svcs, 2}, got;
    char err[256] = "";
    CHECK_INT(px_state_save(path, &st, err, sizeof(err)), 0);
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0);
    struct stat sb;
    CHECK_INT(stat(path, &sb), 0);
    CHECK_INT(sb.st_mode & 0777, 0600);
    CHECK_INT(px_state_load(path, &got, err, sizeof(err)), 0);
    CHECK_INT(got.nservices, 2);
    if (got.nservices == 2) {
        struct px_state_service *w = &got.services[0], *a = &got.services[1];
        CHECK_STR(w->name, "web");
        CHECK_INT(w->nhosts, 2);
        CHECK_STR(w->hosts[1], "www.example.com");
        CHECK_INT(w->nactive, 1);
        CHECK_STR(w->active[0], "10.0.0.5:3000");
        CHECK_INT(w->nprevious, 2);
        CHECK_STR(w->previous[1], "10.0.0.6:3000");
        CHECK_INT(w->state, PX_STATE_PAUSED);
        CHECK_INT(w->max_pause_ms, 12000);
        CHECK_INT(w->tls, 1);
        CHECK_INT(w->interval_ms, 250);
        CHECK_INT(w->timeout_ms, 2000);
        CHECK_INT(w->deploy_timeout_ms, 9000);
        CHECK(w->log_request_headers != NULL && w->nlog_request_headers == 1);
        if (w->log_request_headers && w->nlog_request_headers == 1)
            CHECK_STR(w->log_request_headers[0], "X-Tenant");
        CHECK(w->log_response_headers != NULL && w->nlog_response_headers == 0); /* given empty: none */
        const struct px_svc_opts *o = &w->opts;
        CHECK_STR(w->path_prefix, "/");
        CHECK_INT(o->nmore_prefixes, 2);
        CHECK_STR(o->nmore_prefixes == 2 ? o->more_prefixes[1] : "", "/admin");
        CHECK(o->strip_path_prefix && o->forward_headers && o->no_tls_redirect);
        CHECK_INT(o->health_check_port, 9001);
        CHECK_INT(o->target_timeout_ms, 90000);
        CHECK_STR(o->canonical_host ? o->canonical_host : "", "example.com");
        CHECK_STR(o->tls_certificate ? o->tls_certificate : "", "/c.pem");
        CHECK_STR(o->tls_certificate_key ? o->tls_certificate_key : "", "/k.pem");
        CHECK_STR(o->error_pages ? o->error_pages : "", "/pages");
        o = &a->opts;
        CHECK(!o->nmore_prefixes && !o->strip_path_prefix && !o->forward_headers && !o->no_tls_redirect &&
              !o->health_check_port && !o->target_timeout_ms && !o->canonical_host && !o->error_pages);
        CHECK_INT(w->buffering.requests, 0);
        CHECK_INT(w->buffering.responses, 1);
        CHECK_INT(w->buffering.memory, 4096);
        CHECK_INT(w->buffering.max_request, 1000);
        CHECK_INT(w->buffering.max_response, 1ull << 40);
        CHECK_STR(a->name, "api");
        CHECK_STR(a->path_prefix, "/api");
        CHECK_STR(a->health_check_path, "/health");
        CHECK_INT(a->state, PX_STATE_STOPPED);
        CHECK_STR(a->stop_message, "back at 5 \"pm\"\n");
        CHECK_INT(a->nhosts, 0);
        CHECK_INT(a->tls, 0);
        CHECK_INT(a->interval_ms, 0); /* not given: the defaults, and nothing written */
        CHECK_INT(a->deploy_timeout_ms, 0);
        CHECK(a->log_request_headers == NULL && a->log_response_headers == NULL); /* not given: the defaults */
        CHECK_INT(a->buffering.requests, 0); /* kept as saved, even all zero */
        CHECK_INT(a->buffering.memory, 0);
    }
    px_state_free(&got);
}

static void test_missing_is_empty(void)
{
    struct px_state st;
    char err[256], p[160];
    snprintf(p, sizeof(p), "%s/none.json", dir);
    CHECK_INT(px_state_load(p, &st, err, sizeof(err)), 0);
    CHECK_INT(st.nservices, 0);
    px_state_free(&st);
}

static void test_bad_entries_skipped(void)
{
    write_file(path, "{\"version\":1,\"services\":["
                     "{\"name\":\"ok1\",\"active\":[\"127.0.0.1:1\"]},"
                     "{\"name\":\"noactive\",\"active\":[]},"
                     "42,"
                     "{\"active\":[\"127.0.0.1:2\"]},"
                     "{\"name\":\"badstate\",\"active\":[\"127.0.0.1:3\"],\"state\":\"sleeping\"},"
                     "{\"name\":\"ok1\",\"active\":[\"127.0.0.1:4\"]},"
                     "{\"name\":\"ok2\",\"active\":[\"127.0.0.1:5\"],\"hosts\":[\"a.test\"],\"state\":\"stopped\"}"
                     "]}");
    struct px_state st;
    char err[256];
    CHECK_INT(px_state_load(path, &st, err, sizeof(err)), 0);
    CHECK_INT(st.nservices, 2);
    if (st.nservices == 2) {
        CHECK_STR(st.services[0].name, "ok1");
        CHECK_STR(st.services[0].active[0], "127.0.0.1:1");
        CHECK_STR(st.services[0].path_prefix, "/");
        CHECK_STR(st.services[1].name, "ok2");
        CHECK_INT(st.services[1].state, PX_STATE_STOPPED);
    }
    px_state_free(&st);
}

static void test_corrupt_file_is_an_error(void)
{
    write_file(path, "{\"version\":1,\"services\":[{\"name\":\"x\"");
    struct px_state st;
    char err[256] = "";
    CHECK_INT(px_state_load(path, &st, err, sizeof(err)), -1);
    CHECK(strstr(err, path) != NULL);
    write_file(path, "[]");
    CHECK_INT(px_state_load(path, &st, err, sizeof(err)), -1);
}

static char *slurp(const char *p)
{
    static char buf[256];
    FILE *f = fopen(p, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    return buf;
}

/* An unreadable file goes aside under a name of its own; a second one never
 * takes the first one's name. */
static void test_set_aside(void)
{
    char err[256] = "", a1[256], a2[256], prefix[200];
    write_file(path, "first {");
    CHECK_INT(px_state_set_aside(path, a1, sizeof(a1), err, sizeof(err)), 0);
    CHECK_STR(err, "");
    snprintf(prefix, sizeof(prefix), "%s.unreadable-", path);
    CHECK(strncmp(a1, prefix, strlen(prefix)) == 0);
    CHECK(access(path, F_OK) != 0);
    CHECK_STR(slurp(a1), "first {");
    write_file(path, "second {");
    CHECK_INT(px_state_set_aside(path, a2, sizeof(a2), err, sizeof(err)), 0);
    CHECK(strcmp(a1, a2) != 0);
    CHECK_STR(slurp(a1), "first {");
    CHECK_STR(slurp(a2), "second {");
    /* within the same second: the next free suffix */
    if (strncmp(a1, a2, strlen(a1)) == 0)
        CHECK_STR(a2 + strlen(a1), "-2");
    /* nothing to move: an error, nothing made */
    CHECK_INT(px_state_set_aside(path, a2, sizeof(a2), err, sizeof(err)), -1);
    CHECK(strstr(err, path) != NULL);
    unlink(a1);
}

static void test_bad_timings_skip_the_entry(void)
{
    write_file(path, "{\"version\":1,\"services\":["
                     "{\"name\":\"a\",\"active\":[\"127.0.0.1:1\"],\"health_check_interval_ms\":0},"
                     "{\"name\":\"b\",\"active\":[\"127.0.0.1:1\"],\"deploy_timeout_ms\":\"5s\"},"
                     "{\"name\":\"c\",\"active\":[\"127.0.0.1:1\"],\"health_check_timeout_ms\":700}]}");
    struct px_state st;
    char err[256];
    CHECK_INT(px_state_load(path, &st, err, sizeof(err)), 0);
    CHECK_INT(st.nservices, 1);
    if (st.nservices == 1) {
        CHECK_STR(st.services[0].name, "c");
        CHECK_INT(st.services[0].timeout_ms, 700);
        CHECK_INT(st.services[0].interval_ms, 0);
    }
    px_state_free(&st);
}

/* A file from before buffering was kept: the defaults; a bad buffering
 * object skips its entry. */
static void test_buffering_defaults_and_errors(void)
{
    write_file(path, "{\"version\":1,\"services\":["
                     "{\"name\":\"old\",\"active\":[\"127.0.0.1:1\"]},"
                     "{\"name\":\"bad\",\"active\":[\"127.0.0.1:2\"],\"buffering\":{\"memory\":\"1m\"}},"
                     "{\"name\":\"part\",\"active\":[\"127.0.0.1:3\"],\"buffering\":{\"responses\":true}}]}");
    struct px_state st;
    char err[256];
    CHECK_INT(px_state_load(path, &st, err, sizeof(err)), 0);
    REQUIRE_ELSE(st.nservices == 2, px_state_free(&st));
    CHECK_STR(st.services[0].name, "old");
    CHECK_INT(st.services[0].buffering.requests, 1);
    CHECK_INT(st.services[0].buffering.responses, 0);
    CHECK_INT(st.services[0].buffering.memory, 1 << 20);
    CHECK_STR(st.services[1].name, "part");
    CHECK_INT(st.services[1].buffering.requests, 1);
    CHECK_INT(st.services[1].buffering.responses, 1);
    px_state_free(&st);
}

static void test_stale_temp_ignored(void)
{
    char *active[] = {"127.0.0.1:9"};
    struct px_state_service s = {.name = "one", .active = active, .nactive = 1};
    struct px_state st = {&s, 1}, got;
    char err[256], tmp[160];
    CHECK_INT(px_state_save(path, &st, err, sizeof(err)), 0);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    write_file(tmp, "{\"half written"); /* a crash between write and rename */
    CHECK_INT(px_state_load(path, &got, err, sizeof(err)), 0);
    CHECK_INT(got.nservices, 1);
    px_state_free(&got);
    CHECK_INT(px_state_save(path, &st, err, sizeof(err)), 0); /* and the next save replaces it */
    CHECK(access(tmp, F_OK) != 0);
}

int main(void)
{
    px_log_open("/dev/null", "off", NULL, 0);
    snprintf(dir, sizeof(dir), "/tmp/px-state-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(path, sizeof(path), "%s/state.json", dir);
    UNIT_RUN(test_round_trip);
    UNIT_RUN(test_missing_is_empty);
    UNIT_RUN(test_bad_entries_skipped);
    UNIT_RUN(test_corrupt_file_is_an_error);
    UNIT_RUN(test_stale_temp_ignored);
    UNIT_RUN(test_buffering_defaults_and_errors);
    UNIT_RUN(test_set_aside);
    UNIT_RUN(test_bad_timings_skip_the_entry);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    px_log_close();
    return unit_report();
}
