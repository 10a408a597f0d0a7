/* test_control.c -- the control protocol (control/protocol.c): framer,
 * request parsing, the argument validator for every command, line builders,
 * reply parsing, the error-code table. */
#include <stdlib.h>

#include "px/control.h"
#include "unit.h"

#define PARSE(req, s, err) px_ctl_request_parse((s), strlen(s), (req), (err), sizeof(err))

/* ---- framer ---- */

static void test_frame_lines(void)
{
    const char buf[] = "{\"a\":1}\n{\"b\":2}\r\n\npartial";
    size_t n = sizeof(buf) - 1, line, used, off = 0, scanned = 0;

    CHECK_INT(px_ctl_frame(buf, n, PX_CTL_LINE_MAX, &scanned, &line, &used), PX_CTL_FRAME_LINE);
    CHECK_INT(line, 7);
    CHECK_INT(used, 8);
    off += used;
    CHECK_INT(px_ctl_frame(buf + off, n - off, PX_CTL_LINE_MAX, &scanned, &line, &used), PX_CTL_FRAME_LINE);
    CHECK_INT(line, 7); /* the '\r' is stripped */
    CHECK_INT(used, 9);
    CHECK(memcmp(buf + off, "{\"b\":2}", 7) == 0);
    off += used;
    CHECK_INT(px_ctl_frame(buf + off, n - off, PX_CTL_LINE_MAX, &scanned, &line, &used), PX_CTL_FRAME_LINE);
    CHECK_INT(line, 0); /* an empty line */
    CHECK_INT(used, 1);
    off += used;
    CHECK_INT(px_ctl_frame(buf + off, n - off, PX_CTL_LINE_MAX, &scanned, &line, &used), PX_CTL_FRAME_MORE);
    CHECK_INT(scanned, 7);
    CHECK_INT(px_ctl_frame(buf, 0, PX_CTL_LINE_MAX, NULL, &line, &used), PX_CTL_FRAME_MORE);
    /* a lone "\r\n" is an empty line; a '\r' elsewhere is kept */
    CHECK_INT(px_ctl_frame("\r\n", 2, 10, NULL, &line, &used), PX_CTL_FRAME_LINE);
    CHECK_INT(line, 0);
    CHECK_INT(px_ctl_frame("a\rb\n", 4, 10, NULL, &line, &used), PX_CTL_FRAME_LINE);
    CHECK_INT(line, 3);
}

/* A line split over many reads: found once complete, wherever the split. */
static void test_frame_split(void)
{
    const char msg[] = "{\"id\":1,\"cmd\":\"list\"}\n";
    size_t n = sizeof(msg) - 1;

    for (size_t step = 1; step <= n; step++) {
        size_t have = 0, scanned = 0, line = 0, used = 0;
        enum px_ctl_frame f = PX_CTL_FRAME_MORE;
        while (f == PX_CTL_FRAME_MORE && have < n) {
            have = have + step > n ? n : have + step;
            f = px_ctl_frame(msg, have, PX_CTL_LINE_MAX, &scanned, &line, &used);
        }
        CHECK_INT(f, PX_CTL_FRAME_LINE);
        CHECK_INT(line, n - 1);
        CHECK_INT(used, n);
        CHECK_INT(scanned, 0);
    }
}

/* The bound, exactly: max bytes before '\n' is a line; max + 1 is too long,
 * known as soon as max + 1 bytes without a '\n' are buffered. */
static void test_frame_bound(void)
{
    size_t max = PX_CTL_LINE_MAX, line, used, scanned = 0;
    char *buf = malloc(max + 3);

    REQUIRE(buf != NULL);
    memset(buf, 'x', max + 2);
    buf[max] = '\n';
    CHECK_INT(px_ctl_frame(buf, max + 1, max, NULL, &line, &used), PX_CTL_FRAME_LINE);
    CHECK_INT(line, max);
    CHECK_INT(used, max + 1);
    CHECK_INT(px_ctl_frame(buf, max, max, &scanned, &line, &used), PX_CTL_FRAME_MORE);
    CHECK_INT(px_ctl_frame(buf, max + 1, max, &scanned, &line, &used), PX_CTL_FRAME_LINE);
    /* max bytes then "\r\n": the '\r' counts */
    buf[max] = '\r';
    buf[max + 1] = '\n';
    CHECK_INT(px_ctl_frame(buf, max + 2, max, NULL, &line, &used), PX_CTL_FRAME_TOO_LONG);
    memset(buf, 'x', max + 2);
    buf[max - 1] = '\r';
    buf[max] = '\n';
    CHECK_INT(px_ctl_frame(buf, max + 1, max, NULL, &line, &used), PX_CTL_FRAME_LINE);
    CHECK_INT(line, max - 1);
    /* max + 1 bytes, no '\n': too long without waiting for more */
    memset(buf, 'x', max + 2);
    scanned = 0;
    CHECK_INT(px_ctl_frame(buf, max, max, &scanned, &line, &used), PX_CTL_FRAME_MORE);
    CHECK_INT(px_ctl_frame(buf, max + 1, max, &scanned, &line, &used), PX_CTL_FRAME_TOO_LONG);
    CHECK_INT(scanned, 0);
    buf[max + 1] = '\n';
    CHECK_INT(px_ctl_frame(buf, max + 2, max, NULL, &line, &used), PX_CTL_FRAME_TOO_LONG);
    /* a short line followed by a long tail: the line first */
    buf[3] = '\n';
    CHECK_INT(px_ctl_frame(buf, max + 2, max, NULL, &line, &used), PX_CTL_FRAME_LINE);
    CHECK_INT(line, 3);
    free(buf);
}

/* ---- requests ---- */

static void test_request_ok(void)
{
    struct px_ctl_request req;
    char err[256] = "";

    CHECK_INT(PARSE(&req, "{\"id\":7,\"cmd\":\"list\"}", err), PX_E_OK);
    CHECK(req.cmd == px_ctl_command_find("list"));
    CHECK_INT(json_integer_value(req.id), 7);
    CHECK(json_is_object(req.args) && json_object_size(req.args) == 0); /* absent args = {} */
    px_ctl_request_clear(&req);
    px_ctl_request_clear(&req); /* twice is safe */

    CHECK_INT(PARSE(&req, "{\"id\":8,\"cmd\":\"deploy\",\"args\":{\"service\":\"web\",\"targets\":"
                          "[\"10.0.0.5:3000\",\"[::1]:3001\",\"app.internal:80\"],\"hosts\":[\"example.com\","
                          "\"*.example.org\"],\"path_prefix\":\"/\",\"health_check_path\":\"/up\","
                          "\"health_check_interval_ms\":1000,\"health_check_timeout_ms\":5000,"
                          "\"deploy_timeout_ms\":30000,\"drain_timeout_ms\":30000,\"force\":false,"
                          "\"tls\":true},\"extra\":1}",
                    err),
              PX_E_OK);
    CHECK_STR(err, "");
    CHECK_STR(px_ctl_arg_str(req.args, "service", NULL), "web");
    CHECK_STR(px_ctl_arg_str(req.args, "health_check_path", NULL), "/up");
    CHECK_STR(px_ctl_arg_str(req.args, "absent", "dflt"), "dflt");
    CHECK_INT(px_ctl_arg_int(req.args, "deploy_timeout_ms", 0), 30000);
    CHECK_INT(px_ctl_arg_int(req.args, "absent", 42), 42);
    CHECK_INT(px_ctl_arg_bool(req.args, "force", 1), 0);
    CHECK_INT(px_ctl_arg_bool(req.args, "tls", 0), 1);
    CHECK_INT(px_ctl_arg_bool(req.args, "absent", 1), 1);
    CHECK_INT(json_array_size(json_object_get(req.args, "targets")), 3);
    px_ctl_request_clear(&req);

    /* "args":null is {} */
    CHECK_INT(PARSE(&req, "{\"cmd\":\"status\",\"args\":null}", err), PX_E_OK);
    CHECK(req.id == NULL);
    px_ctl_request_clear(&req);
}

/* The id is echoed whatever its JSON type, even when the rest is bad. */
static void test_request_ids(void)
{
    static const char *const ids[] = {"1", "0", "-5", "9007199254740993", "1.5", "\"abc\"", "\"\"", "true",
                                      "false", "null", "[1,\"x\"]", "{\"k\":[]}"};
    char line[256], err[256], *out;
    struct px_ctl_request req;

    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        for (int bad = 0; bad < 3; bad++) {
            static const char *const tails[] = {"\"cmd\":\"list\"", "\"cmd\":\"nope\"", "\"cmd\":\"stop\""};
            json_t *want = json_loads(ids[i], JSON_DECODE_ANY, NULL);
            enum px_err e;
            snprintf(line, sizeof(line), "{\"id\":%s,%s}", ids[i], tails[bad]);
            e = PARSE(&req, line, err);
            CHECK_INT(e, bad == 0 ? PX_E_OK : bad == 1 ? PX_E_UNKNOWN_COMMAND : PX_E_BAD_REQUEST);
            CHECK(want != NULL);
            if (strcmp(ids[i], "null") == 0)
                CHECK(json_is_null(req.id));
            else
                CHECK(req.id != NULL && json_equal(req.id, want));
            /* and the reply line carries it back */
            out = px_ctl_error_line(req.id, e ? e : PX_E_INTERNAL, err, NULL);
            CHECK(out != NULL);
            if (out) {
                json_t *back = json_loads(out, 0, NULL);
                CHECK(back && json_equal(json_object_get(back, "id"), want));
                json_decref(back);
            }
            free(out);
            json_decref(want);
            px_ctl_request_clear(&req);
        }
    }
}

static void test_request_malformed(void)
{
    static const struct {
        const char *line;
        enum px_err code;
        const char *msg;    /* prefix of the message */
        int has_id;
    } cases[] = {
        {"", PX_E_BAD_REQUEST, "malformed JSON", 0},
        {"{", PX_E_BAD_REQUEST, "malformed JSON", 0},
        {"{\"id\":1,\"cmd\":\"list\"", PX_E_BAD_REQUEST, "malformed JSON", 0},
        {"{\"id\":1,\"cmd\":\"list\"} x", PX_E_BAD_REQUEST, "malformed JSON", 0},
        {"[1,2]", PX_E_BAD_REQUEST, "a request must be a JSON object", 0},
        {"\"list\"", PX_E_BAD_REQUEST, "malformed JSON", 0},
        {"{\"id\":1,\"id\":2,\"cmd\":\"list\"}", PX_E_BAD_REQUEST, "malformed JSON", 0},
        {"{\"id\":1}", PX_E_BAD_REQUEST, "cmd: required", 1},
        {"{\"id\":1,\"cmd\":5}", PX_E_BAD_REQUEST, "cmd: must be a string", 1},
        {"{\"id\":1,\"cmd\":\"li\\u0000st\"}", PX_E_BAD_REQUEST, "malformed JSON", 0},
        {"{\"id\":1,\"cmd\":\"LIST\"}", PX_E_UNKNOWN_COMMAND, "unknown command \"LIST\"", 1},
        {"{\"id\":1,\"cmd\":\"cert status\"}", PX_E_UNKNOWN_COMMAND, "unknown command", 1},
        {"{\"id\":1,\"cmd\":\"list\",\"args\":[]}", PX_E_BAD_REQUEST, "args: must be an object", 1},
        {"{\"id\":1,\"cmd\":\"list\",\"args\":{\"x\":1}}", PX_E_BAD_REQUEST, "x: unknown argument of list", 1},
        {"{\"id\":1,\"cmd\":\"rollback\",\"args\":{}}", PX_E_BAD_REQUEST, "service: required", 1},
        {"{\"id\":1,\"cmd\":\"rollback\",\"args\":{\"service\":1}}", PX_E_BAD_REQUEST,
         "service: must be a non-empty string", 1},
        {"{\"id\":1,\"cmd\":\"list\"}\xff", PX_E_BAD_REQUEST, "malformed JSON", 0},
    };
    struct px_ctl_request req;
    char err[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        CHECK_INT(PARSE(&req, cases[i].line, err), cases[i].code);
        if (strncmp(err, cases[i].msg, strlen(cases[i].msg)) != 0)
            CHECK_STR(err, cases[i].msg);
        CHECK_INT(req.id != NULL, cases[i].has_id);
        CHECK(req.args == NULL);
        px_ctl_request_clear(&req);
    }
    /* not NUL-terminated: only len bytes are read */
    CHECK_INT(px_ctl_request_parse("{\"cmd\":\"list\"}garbage", 14, &req, err, sizeof(err)), PX_E_OK);
    px_ctl_request_clear(&req);
}

/* ---- the validator, per command ---- */

struct vcase {
    const char *cmd, *args, *err; /* err NULL = valid */
};

static void run_vcases(const struct vcase *cases, size_t n)
{
    char err[256];

    for (size_t i = 0; i < n; i++) {
        const struct px_ctl_cmd *c = px_ctl_command_find(cases[i].cmd);
        json_error_t jerr;
        json_t *args = json_loads(cases[i].args, JSON_ALLOW_NUL, &jerr);
        const char *got;
        CHECK(c != NULL);
        CHECK(args != NULL);
        if (c == NULL || args == NULL) {
            if (!unit_failed_now) /* name the case */
                CHECK_STR(cases[i].args, "parses");
            json_decref(args);
            continue;
        }
        got = px_ctl_args_check(c, args, err, sizeof(err));
        if (cases[i].err == NULL && got != NULL)
            CHECK_STR(got, "(valid)");
        else if (cases[i].err != NULL)
            CHECK_STR(got, cases[i].err);
        json_decref(args);
    }
}

static void test_validate_deploy(void)
{
    static const struct vcase cases[] = {
        {"deploy", "{\"service\":\"web\",\"targets\":[\"10.0.0.5:3000\"]}", NULL},
        {"deploy", "{\"service\":\"web-2.x_y\",\"targets\":[\"a:1\",\"b:65535\"],\"hosts\":[]}", NULL},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"force\":true,\"tls\":false}", NULL},
        {"deploy", "{\"targets\":[\"a:1\"]}", "service: required"},
        {"deploy", "{\"service\":\"web\"}", "targets: required"},
        {"deploy", "{\"service\":\"web\",\"targets\":[]}", "targets: needs at least one entry"},
        {"deploy", "{\"service\":\"web\",\"targets\":\"a:1\"}", NULL}, /* one value as a plain string */
        {"deploy", "{\"service\":\"web\",\"targets\":[1]}", "targets: must be an array of non-empty strings"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"\"]}", "targets: must be an array of non-empty strings"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\",\"a:1\"]}", "targets: \"a:1\" given twice"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"10.0.0.5\"]}",
         "targets: \"10.0.0.5\": missing port (write HOST:PORT)"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:0\"]}", "targets: \"a:0\": bad port (1..65535)"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:65536\"]}", "targets: \"a:65536\": bad port (1..65535)"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:\"]}", "targets: \"a:\": missing port (write HOST:PORT)"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"::1:80\"]}",
         "targets: \"::1:80\": write an IPv6 address as [ADDR]:PORT"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"[::1]80\"]}",
         "targets: \"[::1]80\": missing port (write HOST:PORT)"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a b:80\"]}", "targets: \"a b:80\": bad host (write HOST:PORT)"},
        {"deploy", "{\"service\":\"we b\",\"targets\":[\"a:1\"]}",
         "service: \"we b\": name may contain only letters, digits, '_', '-' and '.'"},
        {"deploy", "{\"service\":\"\",\"targets\":[\"a:1\"]}", "service: must be a non-empty string"},
        {"deploy", "{\"service\":\"w\\u0000\",\"targets\":[\"a:1\"]}", "service: must not contain NUL"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"hosts\":[\"example.com:443\"]}",
         "hosts: \"example.com:443\": bad host name (no port here)"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"hosts\":[\"a.*.com\"]}",
         "hosts: \"a.*.com\": a wildcard must be written *.SUFFIX"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"hosts\":[\"*.example.com\",\"EXAMPLE.com\"]}", NULL},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"path_prefix\":\"app\"}",
         "path_prefix: \"app\": must start with '/'"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"health_check_path\":\"/up?x\"}",
         "health_check_path: \"/up?x\": bad character in path"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"deploy_timeout_ms\":0}",
         "deploy_timeout_ms: must be an integer 1..86400000 (milliseconds)"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"drain_timeout_ms\":86400001}",
         "drain_timeout_ms: must be an integer 1..86400000 (milliseconds)"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"drain_timeout_ms\":86400000}", NULL},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"health_check_interval_ms\":\"1s\"}",
         "health_check_interval_ms: must be an integer 1..86400000 (milliseconds)"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"health_check_timeout_ms\":1.5}",
         "health_check_timeout_ms: must be an integer 1..86400000 (milliseconds)"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"force\":1}", "force: must be true or false"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"tls\":\"yes\"}", "tls: must be true or false"},
        {"deploy", "{\"service\":\"web\",\"targets\":[\"a:1\"],\"target\":[\"b:1\"]}",
         "target: unknown argument of deploy"},
    };
    run_vcases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_validate_others(void)
{
    static const struct vcase cases[] = {
        {"rollback", "{\"service\":\"web\"}", NULL},
        {"rollback", "{\"service\":\"web\",\"force\":true}", "force: unknown argument of rollback"},
        {"list", "{}", NULL},
        {"list", "{\"json\":true}", "json: unknown argument of list"},
        {"stop", "{\"service\":\"web\"}", NULL},
        {"stop", "{\"service\":\"web\",\"message\":\"back soon\"}", NULL},
        {"stop", "{\"service\":\"web\",\"message\":\"\"}", "message: must be a non-empty string"},
        {"stop", "{\"message\":\"x\"}", "service: required"},
        {"pause", "{\"service\":\"web\",\"max_pause_ms\":30000}", NULL},
        {"pause", "{\"service\":\"web\",\"max_pause_ms\":-1}",
         "max_pause_ms: must be an integer 1..86400000 (milliseconds)"},
        {"pause", "{\"service\":\"web\",\"max_pause\":1}", "max_pause: unknown argument of pause"},
        {"resume", "{\"service\":\"web\"}", NULL},
        {"resume", "{}", "service: required"},
        {"remove", "{\"service\":\"web\"}", NULL},
        {"remove", "{\"service\":[\"web\"]}", "service: must be a non-empty string"},
        {"status", "{}", NULL},
        {"status", "{\"verbose\":true}", "verbose: unknown argument of status"},
        {"reload", "{}", NULL},
        {"cert_status", "{}", NULL},
        {"cert_renew", "{}", NULL},
        {"cert_renew", "{\"force\":true}", NULL},
        {"cert_renew", "{\"force\":null}", "force: must be true or false"},
        {"cert_reload", "{}", NULL},
        {"cert_reload", "{\"force\":true}", "force: unknown argument of cert_reload"},
    };
    char big[PX_CTL_MESSAGE_MAX + 2], err[256];
    const struct px_ctl_cmd *stop = px_ctl_command_find("stop");
    json_t *args;

    run_vcases(cases, sizeof(cases) / sizeof(cases[0]));
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    args = json_pack("{s:s,s:s}", "service", "web", "message", big);
    CHECK(px_ctl_args_check(stop, args, err, sizeof(err)) != NULL && strstr(err, "at most 1024 bytes") != NULL);
    big[sizeof(big) - 2] = '\0';
    json_object_set_new(args, "message", json_string(big));
    CHECK(px_ctl_args_check(stop, args, err, sizeof(err)) == NULL);
    json_decref(args);
    CHECK(px_ctl_args_check(stop, NULL, err, sizeof(err)) != NULL); /* NULL = {} */
    CHECK(px_ctl_args_check(px_ctl_command_find("list"), NULL, err, sizeof(err)) == NULL);
}

static void test_validate_array_bound(void)
{
    const struct px_ctl_cmd *deploy = px_ctl_command_find("deploy");
    json_t *args = json_pack("{s:s,s:[]}", "service", "web", "targets");
    json_t *t = json_object_get(args, "targets");
    char err[256], tgt[32];

    for (int i = 1; i <= PX_CTL_ARRAY_MAX; i++) {
        snprintf(tgt, sizeof(tgt), "10.0.0.1:%d", i);
        json_array_append_new(t, json_string(tgt));
    }
    CHECK(px_ctl_args_check(deploy, args, err, sizeof(err)) == NULL);
    json_array_append_new(t, json_string("10.0.0.2:1"));
    CHECK_STR(px_ctl_args_check(deploy, args, err, sizeof(err)), "targets: at most 256 entries");
    json_decref(args);
}

/* Every row is well-formed: snake_case names, help, flags for non-positional args. */
static void test_command_table(void)
{
    static const char *const want[] = {"deploy", "rollback", "list", "stop", "pause", "resume", "remove",
                                       "status", "reload", "cert_status", "cert_renew", "cert_reload",
                                       "upgrade"};
    size_t n;
    const struct px_ctl_cmd *cmds = px_ctl_commands(&n);

    CHECK_INT(n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        CHECK(px_ctl_command_find(want[i]) != NULL);
    CHECK(px_ctl_command_find("nope") == NULL);
    CHECK(px_ctl_command_find(NULL) == NULL);
    for (size_t i = 0; i < n; i++) {
        CHECK(cmds[i].help && *cmds[i].help);
        CHECK(strspn(cmds[i].name, "abcdefghijklmnopqrstuvwxyz_") == strlen(cmds[i].name));
        for (size_t k = 0; k < cmds[i].nargs; k++) {
            const struct px_ctl_arg *a = &cmds[i].args[k];
            CHECK(strspn(a->name, "abcdefghijklmnopqrstuvwxyz_") == strlen(a->name));
            CHECK(a->help && *a->help);
            CHECK((a->flag == NULL) == ((a->flags & PX_CTL_ARG_POSITIONAL) != 0));
            CHECK((a->metavar == NULL) == (a->type == PX_CTL_ARG_BOOL));
            CHECK(px_ctl_command_arg(&cmds[i], a->name) == a);
        }
    }
    /* deploy's arguments are DESIGN.md's */
    {
        static const char *const dargs[] = {"service", "targets", "hosts", "path_prefix", "health_check_path",
                                            "health_check_interval_ms", "health_check_timeout_ms",
                                            "deploy_timeout_ms", "drain_timeout_ms", "force", "tls",
                                            "log_request_headers", "log_response_headers",
                                            "strip_path_prefix", "health_check_port", "target_timeout_ms",
                                            "forward_headers", "tls_redirect", "tls_certificate_path",
                                            "tls_private_key_path", "canonical_host", "error_pages",
                                            "buffer_requests", "buffer_responses", "buffer_memory",
                                            "max_request_body", "max_response_body"};
        const struct px_ctl_cmd *d = px_ctl_command_find("deploy");
        CHECK_INT(d->nargs, sizeof(dargs) / sizeof(dargs[0]));
        for (size_t i = 0; i < sizeof(dargs) / sizeof(dargs[0]); i++)
            CHECK(px_ctl_command_arg(d, dargs[i]) != NULL);
        CHECK(px_ctl_command_arg(px_ctl_command_find("stop"), "message") != NULL);
        CHECK(px_ctl_command_arg(px_ctl_command_find("pause"), "max_pause_ms") != NULL);
        CHECK(px_ctl_command_arg(px_ctl_command_find("cert_renew"), "force") != NULL);
        CHECK(px_ctl_command_arg(d, "nope") == NULL);
    }
}

static void test_error_codes(void)
{
    static const char *const stable[] = {"bad_request", "line_too_long", "unknown_command", "forbidden",
                                         "unknown_service", "conflict", "busy", "health_check_failed",
                                         "no_previous", "reload_failed", "shutting_down",
                                         "internal", "acme_not_configured",
                                         "renewal_failed", "invalid_target", "upgrade_failed"};

    CHECK_STR(px_err_name(PX_E_BAD_REQUEST), "bad_request");
    CHECK_STR(px_err_name(PX_E_HEALTH_CHECK_FAILED), "health_check_failed");
    CHECK_STR(px_err_name(PX_E__COUNT), "internal");
    CHECK_STR(px_err_name((enum px_err)-1), "internal");
    CHECK_INT(PX_E__COUNT - 1, sizeof(stable) / sizeof(stable[0]));
    for (size_t i = 0; i < sizeof(stable) / sizeof(stable[0]); i++) {
        int code = px_err_from_name(stable[i]);
        CHECK(code > 0);
        CHECK_STR(px_err_name((enum px_err)code), stable[i]);
    }
    CHECK_INT(px_err_from_name("nope"), -1);
    CHECK_INT(px_err_from_name(NULL), -1);
}

/* ---- builders and replies ---- */

static void test_builders(void)
{
    json_t *id = json_integer(3), *sid = json_string("x");
    size_t len = 0;
    char *s;

    s = px_ctl_ok_line(id, json_pack("{s:s,s:[s]}", "service", "web", "active", "10.0.0.5:3000"), &len);
    CHECK_STR(s, "{\"id\":3,\"ok\":true,\"result\":{\"service\":\"web\",\"active\":[\"10.0.0.5:3000\"]}}\n");
    CHECK_INT(len, s ? strlen(s) : 0);
    free(s);
    s = px_ctl_ok_line(NULL, NULL, NULL);
    CHECK_STR(s, "{\"id\":null,\"ok\":true,\"result\":{}}\n");
    free(s);
    s = px_ctl_error_line(id, PX_E_HEALTH_CHECK_FAILED, "10.0.0.5:3000 /up: 503 after 30s", NULL);
    CHECK_STR(s, "{\"id\":3,\"ok\":false,\"error\":{\"code\":\"health_check_failed\","
                 "\"message\":\"10.0.0.5:3000 /up: 503 after 30s\"}}\n");
    free(s);
    /* a message with a newline and bytes that are not UTF-8 stays one valid line */
    s = px_ctl_error_line(sid, PX_E_BAD_REQUEST, "two\nlines \xff\xfe", NULL);
    CHECK_STR(s, "{\"id\":\"x\",\"ok\":false,\"error\":{\"code\":\"bad_request\",\"message\":\"two\\nlines ??\"}}\n");
    free(s);
    s = px_ctl_progress_line(id, "waiting for 10.0.0.5:3000 to be healthy", NULL);
    CHECK_STR(s, "{\"id\":3,\"progress\":\"waiting for 10.0.0.5:3000 to be healthy\"}\n");
    free(s);
    s = px_ctl_request_line(id, "rollback", json_pack("{s:s}", "service", "web"), NULL);
    CHECK_STR(s, "{\"id\":3,\"cmd\":\"rollback\",\"args\":{\"service\":\"web\"}}\n");
    free(s);
    s = px_ctl_request_line(NULL, "list", NULL, NULL);
    CHECK_STR(s, "{\"id\":null,\"cmd\":\"list\",\"args\":{}}\n");
    free(s);
    CHECK_INT(id->refcount, 1); /* borrowed, untouched */
    json_decref(id);
    json_decref(sid);
}

/* What the builders write, the reply parser reads back; the request line
 * proxyctl writes, the daemon parses. */
static void test_round_trip(void)
{
    json_t *id = json_integer(1);
    struct px_ctl_reply rep;
    struct px_ctl_request req;
    char err[256], *s;

    s = px_ctl_progress_line(id, "switched", NULL);
    CHECK(px_ctl_reply_parse(s, strlen(s) - 1, &rep) == NULL);
    CHECK_INT(rep.kind, PX_CTL_REPLY_PROGRESS);
    CHECK_STR(rep.progress, "switched");
    CHECK_INT(json_integer_value(rep.id), 1);
    px_ctl_reply_clear(&rep);
    free(s);

    s = px_ctl_error_line(NULL, PX_E_FORBIDDEN, "uid 1001 may not use this socket", NULL);
    CHECK(px_ctl_reply_parse(s, strlen(s), &rep) == NULL);
    CHECK_INT(rep.kind, PX_CTL_REPLY_ERROR);
    CHECK(rep.id == NULL);
    CHECK_STR(rep.code, "forbidden");
    CHECK_STR(rep.message, "uid 1001 may not use this socket");
    px_ctl_reply_clear(&rep);
    free(s);

    s = px_ctl_ok_line(id, NULL, NULL);
    CHECK(px_ctl_reply_parse(s, strlen(s), &rep) == NULL);
    CHECK_INT(rep.kind, PX_CTL_REPLY_OK);
    CHECK(json_is_object(rep.result));
    px_ctl_reply_clear(&rep);
    free(s);

    s = px_ctl_request_line(id, "deploy",
                            json_pack("{s:s,s:[s],s:I}", "service", "web", "targets", "10.0.0.5:3000",
                                      "deploy_timeout_ms", (json_int_t)30000),
                            NULL);
    CHECK_INT(px_ctl_request_parse(s, strlen(s) - 1, &req, err, sizeof(err)), PX_E_OK);
    CHECK_STR(req.cmd ? req.cmd->name : NULL, "deploy");
    CHECK_INT(req.progress, 0); /* not asked: exactly one reply line */
    px_ctl_request_clear(&req);
    free(s);

    /* proxyctl asks for progress lines at the top level */
    s = px_ctl_request_line_progress(id, "rollback", json_pack("{s:s}", "service", "web"), 1, NULL);
    CHECK_STR(s, "{\"id\":1,\"cmd\":\"rollback\",\"args\":{\"service\":\"web\"},\"progress\":true}\n");
    CHECK_INT(px_ctl_request_parse(s, strlen(s) - 1, &req, err, sizeof(err)), PX_E_OK);
    CHECK_INT(req.progress, 1);
    px_ctl_request_clear(&req);
    free(s);
    s = px_ctl_request_line_progress(id, "list", NULL, 0, NULL);
    CHECK_STR(s, "{\"id\":1,\"cmd\":\"list\",\"args\":{}}\n");
    free(s);
    static const char *const progress_lines[][2] = {
        {"{\"cmd\":\"list\",\"progress\":false}", "0"},
        {"{\"cmd\":\"list\",\"progress\":true}", "1"},
        {"{\"cmd\":\"list\",\"args\":{},\"progress\":1}", "bad"},
        {"{\"cmd\":\"list\",\"progress\":\"yes\"}", "bad"},
        {"{\"cmd\":\"list\",\"args\":{\"progress\":true}}", "bad"}, /* top level only: not an argument */
    };
    for (size_t i = 0; i < sizeof(progress_lines) / sizeof(progress_lines[0]); i++) {
        const char *l = progress_lines[i][0], *want = progress_lines[i][1];
        enum px_err rc = px_ctl_request_parse(l, strlen(l), &req, err, sizeof(err));
        if (strcmp(want, "bad") == 0) {
            CHECK_INT(rc, PX_E_BAD_REQUEST);
        } else {
            CHECK_INT(rc, PX_E_OK);
            CHECK_INT(req.progress, want[0] - '0');
        }
        px_ctl_request_clear(&req);
    }
    json_decref(id);

    static const struct {
        const char *line, *err;
    } bad[] = {
        {"nope", "not JSON"},
        {"[1]", "not a JSON object"},
        {"{\"id\":1}", "neither ok nor progress"},
        {"{\"id\":1,\"ok\":1}", "neither ok nor progress"},
        {"{\"id\":1,\"progress\":5}", "progress is not a string"},
        {"{\"id\":1,\"ok\":true,\"result\":[]}", "result is not an object"},
        {"{\"id\":1,\"ok\":false}", "error without a code"},
        {"{\"id\":1,\"ok\":false,\"error\":{\"message\":\"m\"}}", "error without a code"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_STR(px_ctl_reply_parse(bad[i].line, strlen(bad[i].line), &rep), bad[i].err);
        px_ctl_reply_clear(&rep);
    }
    /* a code this build does not know, and no message */
    CHECK(px_ctl_reply_parse("{\"id\":1,\"ok\":false,\"error\":{\"code\":\"from_the_future\"}}", 54, &rep) == NULL);
    CHECK_STR(rep.code, "from_the_future");
    CHECK_STR(rep.message, "");
    px_ctl_reply_clear(&rep);
}

static void test_value_checks(void)
{
    CHECK(px_ctl_check_target("[fd00::5]:3000") == NULL);
    CHECK(px_ctl_check_target("localhost:1") == NULL);
    CHECK(px_ctl_check_target("[]:1") != NULL);
    CHECK(px_ctl_check_target("[zz]:1") != NULL);
    CHECK(px_ctl_check_target(":80") != NULL);
    CHECK(px_ctl_check_target("a:080") == NULL);
    CHECK(px_ctl_check_target("a:000080") != NULL);
    CHECK(px_ctl_check_target("a:+80") != NULL);
    CHECK(px_ctl_check_host("*") != NULL);
    CHECK(px_ctl_check_host("a..b") != NULL);
    CHECK(px_ctl_check_host("a.") != NULL);
    CHECK(px_ctl_check_service("a") == NULL);
    CHECK(px_ctl_check_service("0123456789012345678901234567890123456789012345678901234567890123") == NULL);
    CHECK(px_ctl_check_service("01234567890123456789012345678901234567890123456789012345678901234") != NULL);
    CHECK(px_ctl_check_path("/") == NULL);
    CHECK(px_ctl_check_path("/a b") != NULL);
}

int main(void)
{
    UNIT_RUN(test_frame_lines);
    UNIT_RUN(test_frame_split);
    UNIT_RUN(test_frame_bound);
    UNIT_RUN(test_request_ok);
    UNIT_RUN(test_request_ids);
    UNIT_RUN(test_request_malformed);
    UNIT_RUN(test_validate_deploy);
    UNIT_RUN(test_validate_others);
    UNIT_RUN(test_validate_array_bound);
    UNIT_RUN(test_command_table);
    UNIT_RUN(test_error_codes);
    UNIT_RUN(test_builders);
    UNIT_RUN(test_round_trip);
    UNIT_RUN(test_value_checks);
    return unit_report();
}
