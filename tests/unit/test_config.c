/* test_config.c -- the config loader: defaults, every key, every error
 * message ("FILE:LINE: key: message"), line accounting, the shipped
 * example files. Run from the repository root. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "px/accesslog.h"
#include "px/config.h"
#include "px/parse.h"
#include "unit.h"

/* tests/unit/log_stub.c (linked into this binary only, see the Makefile):
 * counts the loader's warnings and keeps the last one. */
int px_log_stub_count(void);
const char *px_log_stub_last(void);

#define BASE "[proxy]\nlisten_http = 127.0.0.1:0\n" /* lines 1-2 */
#define CIPHERS                                                                                \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static char errbuf[300]; /* small: unit.h formats it into a 512-byte message */

static struct px_config *load_ok(const char *text)
{
    struct px_config *cfg = NULL;
    errbuf[0] = '\0';
    if (px_config_load_string(text, "t.ini", &cfg, errbuf, sizeof(errbuf)) != 0)
        return NULL;
    return cfg;
}

/* NULL when loading failed with an error starting with want, else what happened. */
static const char *load_err(const char *text, const char *want)
{
    struct px_config *cfg = (struct px_config *)1;
    static char got[300];
    errbuf[0] = '\0';
    if (px_config_load_string(text, "t.ini", &cfg, errbuf, sizeof(errbuf)) == 0) {
        px_config_free(cfg);
        return "loaded fine";
    }
    if (cfg != NULL)
        return "*out not NULL on failure";
    if (strncmp(errbuf, want, strlen(want)) != 0) {
        snprintf(got, sizeof(got), "%s", errbuf);
        return got;
    }
    return NULL;
}

/* Fails the test unless loading text fails with an error starting with want. */
#define CHECK_LOAD_ERR(text, want)                                                              \
    do {                                                                                        \
        const char *r_ = load_err(text, want);                                                  \
        if (r_ != NULL && !unit_failed_now) {                                                   \
            unit_failed_now = 1;                                                                \
            snprintf(unit_msg, sizeof(unit_msg), "%s:%d: want \"%.150s\", got \"%.200s\"", __FILE__, \
                     __LINE__, want, r_);                                                       \
        }                                                                                       \
    } while (0)

static void test_defaults(void)
{
    struct px_config *cfg = load_ok(BASE);

    CHECK_STR(errbuf, "");
    REQUIRE(cfg != NULL);
    CHECK_STR(cfg->path, "t.ini");
    CHECK(cfg->workers >= 1 && cfg->workers <= 256);
    CHECK_INT(cfg->has_listen_http, 1);
    CHECK_STR(cfg->listen_http.text, "127.0.0.1:0");
    CHECK_INT(cfg->has_listen_https, 0);
    CHECK_INT(cfg->redirect_https, 1);
    CHECK_STR(cfg->health_path, "/health");
    CHECK_STR(cfg->control_socket, "/run/proxyd/control.sock");
    CHECK_INT(cfg->control_socket_mode, 0660);
    CHECK_STR(cfg->state_file, "/var/lib/proxyd/state.json");
    CHECK_STR(cfg->access_log, "-");
    CHECK_STR(cfg->error_log, "-");
    CHECK(cfg->user == NULL);
    CHECK_INT(cfg->max_connections, 10000);
    CHECK_INT(cfg->client_header_timeout_ms, 10000);
    CHECK_INT(cfg->client_body_timeout_ms, 60000);
    CHECK_INT(cfg->keepalive_timeout_ms, 75000);
    CHECK_INT(cfg->max_header_size, 16384);
    CHECK_INT(cfg->max_body_size, 100 << 20);
    CHECK_INT(cfg->upstream_connect_timeout_ms, 5000);
    CHECK_INT(cfg->upstream_send_timeout_ms, 60000);
    CHECK_INT(cfg->upstream_read_timeout_ms, 60000);
    CHECK_INT(cfg->upstream_keepalive, 256);
    CHECK_INT(cfg->shutdown_timeout_ms, 30000);
    CHECK_INT(cfg->ntrusted_proxies, 0);
    CHECK_INT(cfg->has_metrics_listen, 0);

    CHECK_INT(cfg->tls.present, 0);
    CHECK(cfg->tls.certificate == NULL && cfg->tls.certificate_key == NULL);
    CHECK_INT(cfg->tls.nsni, 0);
    CHECK_INT(cfg->tls.proto_min, 0x0303);
    CHECK_INT(cfg->tls.proto_max, 0x0304);
    CHECK_STR(cfg->tls.ciphers, CIPHERS);
    CHECK_INT(cfg->tls.session_timeout_ms, 86400000);
    CHECK_INT(cfg->tls.session_tickets, 0);
    CHECK_STR(cfg->tls.alpn, "h2 http/1.1");

    CHECK_INT(cfg->has_headers_section, 0);
    CHECK_INT(cfg->nheaders, 4);
    if (cfg->nheaders == 4) {
        CHECK_STR(cfg->headers[0].name, "Strict-Transport-Security");
        CHECK_STR(cfg->headers[0].value, "max-age=63072000; includeSubDomains; preload");
        CHECK_STR(cfg->headers[1].name, "X-Frame-Options");
        CHECK_STR(cfg->headers[1].value, "DENY");
        CHECK_STR(cfg->headers[2].name, "X-Content-Type-Options");
        CHECK_STR(cfg->headers[2].value, "nosniff");
        CHECK_STR(cfg->headers[3].name, "X-XSS-Protection");
        CHECK_STR(cfg->headers[3].value, "1; mode=block");
    }
    CHECK_INT(cfg->nlimits, 0);
    CHECK_INT(cfg->nroutes, 0);
    CHECK_INT(cfg->nservices, 0);

    CHECK_INT(cfg->acme.present, 0);
    CHECK_INT(cfg->acme.enabled, 0);
    CHECK_STR(cfg->acme.directory, "https://acme-v02.api.letsencrypt.org/directory");
    CHECK_STR(cfg->acme.email, "");
    CHECK_INT(cfg->acme.ndomains, 0);
    CHECK_STR(cfg->acme.config_dir, "/etc/proxyd/letsencrypt");
    CHECK_INT(cfg->acme.renew_before_ms, 30ull * 86400000);
    CHECK_INT(cfg->acme.check_interval_ms, 12ull * 3600000);
    CHECK(cfg->acme.ca_bundle == NULL);
    CHECK_INT(cfg->acme.retry_interval_ms, 5 * 60000);
    CHECK_INT(cfg->acme.hook_timeout_ms, 5 * 60000);
    CHECK_INT(cfg->acme.storage_redis, 0);
    CHECK_INT(cfg->acme.lock_timeout_ms, 60000);
    px_config_free(cfg);
}

static void test_every_key(void)
{
    static const char text[] =
        "[proxy]\n"
        "workers = 3\n"
        "listen_http = 127.0.0.1:8080\n"
        "listen_https = [::1]:8443\n"
        "redirect_https = no\n"
        "health_path =\n"
        "control_socket = /tmp/p/control.sock\n"
        "control_socket_mode = 600\n"
        "state_file = /tmp/p/state.json\n"
        "access_log = off\n"
        "error_log = /var/log/proxyd.err\n"
        "user = www-data\n"
        "max_connections = 1000000\n"
        "client_header_timeout = 500ms\n"
        "client_body_timeout = 2m\n"
        "keepalive_timeout = 1h\n"
        "max_header_size = 1m\n"
        "max_body_size = 0\n"
        "upstream_connect_timeout = 1\n"
        "upstream_send_timeout = 2d\n"
        "upstream_read_timeout = 90s\n"
        "shutdown_timeout = 1s\n"
        "trusted_proxies = 10.0.0.0/8, 192.168.0.1 ,fd00::/8\n"
        "metrics_listen = 127.0.0.1:9145\n"
        "[tls]\n"
        "certificate = /c/default.crt\n"
        "certificate_key = /c/default.key\n"
        "sni = Example.COM:/c/ex.pem:/c/ex.key\n"
        "sni = *.example.org:/c/org.pem:/c/org.key\n"
        "protocols = TLSv1.3\n"
        "ciphers = HIGH:!aNULL\n"
        "session_timeout = 5m\n"
        "session_tickets = yes\n"
        "alpn = http/1.1 h2\n"
        "[headers]\n"
        "X-Frame-Options = SAMEORIGIN\n"
        "Content-Security-Policy = default-src 'self'; img-src *\n"
        "[limit api]\n"
        "rate = 30r/m\n"
        "burst = 20\n"
        "nodelay = off\n"
        "status = 503\n"
        "zone_size = 64k\n"
        "[route /api/]\n"
        "host = API.example.com\n"
        "limit = api\n"
        "[service web]\n"
        "hosts = Example.com *.Example.org\n"
        "path_prefix = /app/\n"
        "targets = 127.0.0.1:3000 [::1]:3001\n"
        "health_check_path = /healthz\n"
        "[acme]\n"
        "enabled = yes\n"
        "directory = https://localhost:14000/dir\n"
        "email = ops@example.com\n"
        "domains = example.com WWW.example.com\n"
        "config_dir = /tmp/le\n"
        "renew_before = 10d\n"
        "check_interval = 1h\n"
        "ca_bundle = /tmp/pebble.minica.pem\n"
        "retry_interval = 30s\n"
        "hook_timeout = 2m\n";
    struct px_config *cfg = load_ok(text);

    CHECK_STR(errbuf, "");
    REQUIRE(cfg != NULL);
    CHECK_INT(cfg->workers, 3);
    CHECK_STR(cfg->listen_http.text, "127.0.0.1:8080");
    CHECK_INT(cfg->has_listen_https, 1);
    CHECK_INT(cfg->listen_https.ss.ss_family, AF_INET6);
    CHECK_INT(cfg->redirect_https, 0);
    CHECK_STR(cfg->health_path, "");
    CHECK_STR(cfg->control_socket, "/tmp/p/control.sock");
    CHECK_INT(cfg->control_socket_mode, 0600);
    CHECK_STR(cfg->state_file, "/tmp/p/state.json");
    CHECK_STR(cfg->access_log, "off");
    CHECK_STR(cfg->error_log, "/var/log/proxyd.err");
    CHECK_STR(cfg->user, "www-data");
    CHECK_INT(cfg->max_connections, 1000000);
    CHECK_INT(cfg->client_header_timeout_ms, 500);
    CHECK_INT(cfg->client_body_timeout_ms, 120000);
    CHECK_INT(cfg->keepalive_timeout_ms, 3600000);
    CHECK_INT(cfg->max_header_size, 1 << 20);
    CHECK_INT(cfg->max_body_size, 0);
    CHECK_INT(cfg->upstream_connect_timeout_ms, 1000);
    CHECK_INT(cfg->upstream_send_timeout_ms, 2 * 86400000);
    CHECK_INT(cfg->upstream_read_timeout_ms, 90000);
    CHECK_INT(cfg->shutdown_timeout_ms, 1000);
    CHECK_INT(cfg->ntrusted_proxies, 3);
    if (cfg->ntrusted_proxies == 3) {
        CHECK_INT(cfg->trusted_proxies[0].prefix_len, 8);
        CHECK_INT(cfg->trusted_proxies[1].prefix_len, 32);
        CHECK_INT(cfg->trusted_proxies[2].family, AF_INET6);
    }
    CHECK_INT(cfg->has_metrics_listen, 1);
    CHECK_STR(cfg->metrics_listen.text, "127.0.0.1:9145");

    CHECK_INT(cfg->tls.present, 1);
    CHECK_STR(cfg->tls.certificate, "/c/default.crt");
    CHECK_STR(cfg->tls.certificate_key, "/c/default.key");
    CHECK_INT(cfg->tls.nsni, 2);
    if (cfg->tls.nsni == 2) {
        CHECK_STR(cfg->tls.sni[0].name, "example.com");
        CHECK_STR(cfg->tls.sni[0].cert, "/c/ex.pem");
        CHECK_STR(cfg->tls.sni[0].key, "/c/ex.key");
        CHECK_STR(cfg->tls.sni[1].name, "*.example.org");
    }
    CHECK_INT(cfg->tls.proto_min, 0x0304);
    CHECK_INT(cfg->tls.proto_max, 0x0304);
    CHECK_STR(cfg->tls.ciphers, "HIGH:!aNULL");
    CHECK_INT(cfg->tls.session_timeout_ms, 300000);
    CHECK_INT(cfg->tls.session_tickets, 1);
    CHECK_STR(cfg->tls.alpn, "http/1.1 h2");

    CHECK_INT(cfg->has_headers_section, 1);
    CHECK_INT(cfg->nheaders, 2);
    if (cfg->nheaders == 2) {
        CHECK_STR(cfg->headers[0].name, "X-Frame-Options");
        CHECK_STR(cfg->headers[0].value, "SAMEORIGIN");
        CHECK_STR(cfg->headers[1].name, "Content-Security-Policy");
        CHECK_STR(cfg->headers[1].value, "default-src 'self'; img-src *");
    }

    CHECK_INT(cfg->nlimits, 1);
    if (cfg->nlimits == 1) {
        CHECK_STR(cfg->limits[0].name, "api");
        CHECK_INT(cfg->limits[0].rate_milli_per_s, 500);
        CHECK_INT(cfg->limits[0].burst, 20);
        CHECK_INT(cfg->limits[0].nodelay, 0);
        CHECK_INT(cfg->limits[0].status, 503);
        CHECK_INT(cfg->limits[0].zone_size, 65536);
        CHECK_INT(cfg->limits[0].line, 38);
    }
    CHECK_INT(cfg->nroutes, 1);
    if (cfg->nroutes == 1) {
        CHECK_STR(cfg->routes[0].prefix, "/api/");
        CHECK_INT(cfg->routes[0].prefix_len, 4);
        CHECK(cfg->routes[0].nhosts == 1 && strcmp(cfg->routes[0].hosts[0], "api.example.com") == 0);
        CHECK_INT(cfg->routes[0].nlimits, 1);
        if (cfg->routes[0].nlimits == 1) {
            CHECK_STR(cfg->routes[0].limits[0].name, "api");
            CHECK_INT(cfg->routes[0].limits[0].line, 46);
        }
        CHECK_INT(cfg->routes[0].line, 44);
    }
    CHECK_INT(cfg->nservices, 1);
    if (cfg->nservices == 1) {
        struct px_service_conf *s = &cfg->services[0];
        CHECK_STR(s->name, "web");
        CHECK_INT(s->nhosts, 2);
        if (s->nhosts == 2) {
            CHECK_STR(s->hosts[0], "example.com");
            CHECK_STR(s->hosts[1], "*.example.org");
        }
        CHECK_STR(s->path_prefix, "/app");
        CHECK_INT(s->ntargets, 2);
        if (s->ntargets == 2) {
            CHECK_STR(s->targets[0].text, "127.0.0.1:3000");
            CHECK_INT(s->targets[1].ss.ss_family, AF_INET6);
        }
        CHECK_STR(s->health_check_path, "/healthz");
        CHECK_INT(s->line, 47);
    }

    CHECK_INT(cfg->acme.present, 1);
    CHECK_INT(cfg->acme.enabled, 1);
    CHECK_STR(cfg->acme.directory, "https://localhost:14000/dir");
    CHECK_STR(cfg->acme.email, "ops@example.com");
    CHECK_INT(cfg->acme.ndomains, 2);
    if (cfg->acme.ndomains == 2) {
        CHECK_STR(cfg->acme.domains[0], "example.com");
        CHECK_STR(cfg->acme.domains[1], "www.example.com");
    }
    CHECK_STR(cfg->acme.config_dir, "/tmp/le");
    CHECK_INT(cfg->acme.renew_before_ms, 10ull * 86400000);
    CHECK_INT(cfg->acme.check_interval_ms, 3600000);
    CHECK_STR(cfg->acme.ca_bundle, "/tmp/pebble.minica.pem");
    CHECK_INT(cfg->acme.retry_interval_ms, 30000);
    CHECK_INT(cfg->acme.hook_timeout_ms, 120000);
    px_config_free(cfg);
}

static void test_errors(void)
{
    static const struct {
        const char *text;
        const char *want; /* prefix of the error */
    } cases[] = {
        /* sections and keys */
        {"[prox]\n", "t.ini:1: [prox]: unknown section"},
        {"[Proxy]\n", "t.ini:1: [Proxy]: unknown section"},
        {BASE "foo = 1\n", "t.ini:3: foo: unknown key in [proxy]"},
        {BASE "Workers = 1\n", "t.ini:3: Workers: unknown key in [proxy]"},
        {BASE "a\x1b[0m = 1\n", "t.ini:3: a\\x1b[0m: unknown key in [proxy]"},
        {"[a\x1b]\n", "t.ini:1: [a\\x1b]: unknown section"},
        {BASE "[proxy]\n", "t.ini:3: [proxy]: duplicate section (first at line 1)"},
        {BASE "workers = 2\nworkers = 3\n", "t.ini:4: workers: duplicate key in [proxy] (first at line 3)"},
        {"workers = 2\n", "t.ini:1: workers: key outside a section"},
        {"[proxy x]\n", "t.ini:1: [proxy x]: [proxy] takes no name"},
        {"[limit]\n", "t.ini:1: [limit]: needs a name: [limit NAME]"},
        {"[route]\n", "t.ini:1: [route]: needs a name: [route PREFIX]"},
        {"[service a b]\n", "t.ini:1: [service a b]: name may contain only"},
        {"[tls]\nfoo = 1\n", "t.ini:2: foo: unknown key in [tls]"},
        {"[headers]\n[headers]\n", "t.ini:2: [headers]: duplicate section (first at line 1)"},
        {"[acme]\n[acme]\n", "t.ini:2: [acme]: duplicate section (first at line 1)"},
        {"[tls]\n[tls]\n", "t.ini:2: [tls]: duplicate section (first at line 1)"},
        /* syntax */
        {"[proxy\n", "t.ini:1: syntax error"},
        {"[proxy ;]\n", "t.ini:1: syntax error"},
        {BASE "junk line\n", "t.ini:3: syntax error"},
        {"[proxy] x\n", "t.ini:1: syntax error: text after ']'"},
        {BASE "= 5\n", "t.ini:3: missing key name"},
        {BASE "junk\nworkers = 0\n", "t.ini:3: syntax error"}, /* the first error wins */
        {BASE "workers = 0\njunk\n", "t.ini:3: workers: must be auto or 1..256"},
        {"; c\r\n\r\n[proxy]\r\n  # x\r\nlisten_http = 127.0.0.1:0\r\nworkers = 0\r\n", "t.ini:6: workers:"},
        /* [proxy] values */
        {BASE "workers = 0\n", "t.ini:3: workers: must be auto or 1..256 (got \"0\")"},
        {BASE "workers = 257\n", "t.ini:3: workers: must be auto or 1..256"},
        {BASE "workers = 300 ; too many\n", "t.ini:3: workers: must be auto or 1..256 (got \"300\")"},
        {BASE "workers = two\n", "t.ini:3: workers: must be auto or 1..256"},
        {"[proxy]\nworkers = 2\n", "t.ini: no listener: set listen_http or listen_https"},
        {"", "t.ini: no listener: set listen_http or listen_https"},
        {"[proxy]\nlisten_http =\n", "t.ini: no listener"},
        {"[proxy]\nlisten_http = :8080\nlisten_https = 0.0.0.0:8080\n[tls]\ncertificate = a\ncertificate_key = b\n",
         "t.ini:3: listen_https: same address as listen_http"},
        {"[proxy]\nlisten_https = 127.0.0.1:0\n",
         "t.ini:2: listen_https: needs [tls] with certificate and certificate_key"},
        {"[proxy]\nlisten_https = 127.0.0.1:0\n[tls]\ncertificate = a.crt\n",
         "t.ini:3: certificate_key: required with certificate in [tls]"},
        {"[proxy]\nlisten_https = 127.0.0.1:0\n[tls]\ncertificate_key = a.key\n",
         "t.ini:3: certificate: required with certificate_key in [tls]"},
        {"[proxy]\nlisten_http = 127.0.0.1\n", "t.ini:2: listen_http: missing port (got \"127.0.0.1\")"},
        {"[proxy]\nlisten_http = [::1]:99999\n", "t.ini:2: listen_http: bad port"},
        {BASE "metrics_listen = 9145\n", "t.ini:3: metrics_listen: missing port"},
        {BASE "redirect_https = maybe\n", "t.ini:3: redirect_https: expected yes or no"},
        {BASE "health_path = health\n", "t.ini:3: health_path: must start with '/'"},
        {BASE "health_path = /a b\n", "t.ini:3: health_path: bad character in path"},
        {BASE "control_socket =\n", "t.ini:3: control_socket: must not be empty"},
        {BASE "control_socket = /tmp/0123456789012345678901234567890123456789012345678901234567890123456789"
              "0123456789012345678901234567890123456789\n",
         "t.ini:3: control_socket: too long for a Unix socket path"},
        {BASE "control_socket_mode = 0999\n", "t.ini:3: control_socket_mode: must be an octal mode like 0660"},
        {BASE "control_socket_mode = 01777\n", "t.ini:3: control_socket_mode: must be an octal mode"},
        {BASE "control_socket_mode = rw\n", "t.ini:3: control_socket_mode: must be an octal mode"},
        {BASE "state_file =\n", "t.ini:3: state_file: must not be empty"},
        {BASE "access_log =\n", "t.ini:3: access_log: must not be empty"},
        {BASE "error_log = off\n", "t.ini:3: error_log: cannot be off"},
        {BASE "user = -root\n", "t.ini:3: user: bad user name (got \"-root\")"},
        {BASE "user = a\"b\n", "t.ini:3: user: bad user name (got \"a\\\"b\")"},
        {BASE "max_connections = 0\n", "t.ini:3: max_connections: must be 1..1000000"},
        {BASE "max_connections = 1000001\n", "t.ini:3: max_connections: must be 1..1000000"},
        {BASE "max_connections = -1\n", "t.ini:3: max_connections: must be 1..1000000"},
        {BASE "client_header_timeout = 0\n", "t.ini:3: client_header_timeout: must be greater than 0"},
        {BASE "client_body_timeout = 0ms\n", "t.ini:3: client_body_timeout: must be greater than 0"},
        {BASE "keepalive_timeout = -5s\n", "t.ini:3: keepalive_timeout: must not be negative"},
        {BASE "keepalive_timeout = 5x\n", "t.ini:3: keepalive_timeout: bad duration"},
        {BASE "upstream_read_timeout = 99999999999999999999\n", "t.ini:3: upstream_read_timeout: too large"},
        {BASE "shutdown_timeout =\n", "t.ini:3: shutdown_timeout: empty duration"},
        {BASE "max_header_size = 512\n", "t.ini:3: max_header_size: must be 1k..1m"},
        {BASE "max_header_size = 2m\n", "t.ini:3: max_header_size: must be 1k..1m"},
        {BASE "max_body_size = 1t\n", "t.ini:3: max_body_size: bad size"},
        {BASE "trusted_proxies = 10.0.0.0/8, 300.0.0.1\n",
         "t.ini:3: trusted_proxies: bad address (got \"300.0.0.1\")"},
        {BASE "trusted_proxies = 10.0.0.0/40\n", "t.ini:3: trusted_proxies: bad prefix length"},
        /* [tls] */
        {"[tls]\nprotocols = TLSv1.1 TLSv1.2\n",
         "t.ini:2: protocols: not supported (TLSv1.2 and TLSv1.3 only) (got \"TLSv1.1\")"},
        {"[tls]\nprotocols = TLSv1\n", "t.ini:2: protocols: not supported"},
        {"[tls]\nprotocols = TLSv1.4\n", "t.ini:2: protocols: unknown protocol"},
        {"[tls]\nprotocols =\n", "t.ini:2: protocols: needs TLSv1.2 and/or TLSv1.3"},
        {"[tls]\nalpn = h3\n", "t.ini:2: alpn: unknown protocol (h2, http/1.1) (got \"h3\")"},
        {"[tls]\nalpn = h2 h2\n", "t.ini:2: alpn: unknown or repeated protocol"},
        {"[tls]\nalpn =\n", "t.ini:2: alpn: needs h2 and/or http/1.1"},
        {"[tls]\nsni = example.com\n", "t.ini:2: sni: must be NAME:CERTIFICATE:KEY"},
        {"[tls]\nsni = example.com::k\n", "t.ini:2: sni: must be NAME:CERTIFICATE:KEY"},
        {"[tls]\nsni = example.com:c:\n", "t.ini:2: sni: must be NAME:CERTIFICATE:KEY"},
        {"[tls]\nsni = bad name:c:k\n", "t.ini:2: sni: bad host name (got \"bad name\")"},
        {"[tls]\nsni = a.com:c:k\nsni = A.com:c:e\n", "t.ini:3: sni: duplicate server name and certificate"},
        {"[tls]\nsession_tickets = 2\n", "t.ini:2: session_tickets: expected yes or no"},
        {"[tls]\nciphers =\n", "t.ini:2: ciphers: must not be empty"},
        {"[tls]\nciphers = BOGUS:NOPE\n",
         "t.ini:2: ciphers: no cipher of the list is known to OpenSSL (see `openssl ciphers`) (got \"BOGUS:NOPE\")"},
        {"[tls]\ncertificate = a\ncertificate = b\n", "t.ini:3: certificate: duplicate key in [tls]"},
        /* [headers] */
        {BASE "[headers]\nBad Header = x\n", "t.ini:4: Bad Header: bad header name in [headers]"},
        {BASE "[headers]\nX-A(b) = x\n", "t.ini:4: X-A(b): bad header name in [headers]"},
        {BASE "[headers]\nContent-Length = 5\n", "t.ini:4: Content-Length: cannot be set in [headers]"},
        {BASE "[headers]\nconnection = close\n", "t.ini:4: connection: cannot be set in [headers]"},
        {BASE "[headers]\nX-A = 1\nx-a = 2\n", "t.ini:5: x-a: duplicate header in [headers]"},
        {BASE "[headers]\nX-A =\n", "t.ini:4: X-A: empty header value"},
        {BASE "[headers]\nX-A = a\x01z\n", "t.ini:4: X-A: control character in header value (got \"a\\x01z\")"},
        {BASE "[headers]\nX-A = a\rz\n", "t.ini:4: X-A: control character in header value"},
        /* removals ("-NAME ="), request_headers, default_service */
        {BASE "[headers]\n-X-Powered-By = x\n", "t.ini:4: -X-Powered-By: a removal takes no value"},
        {BASE "[headers]\n-Content-Length =\n", "t.ini:4: Content-Length: cannot be removed in [headers]"},
        {BASE "[headers hide]\n-Transfer-Encoding =\n", "t.ini:4: Transfer-Encoding: cannot be removed in [headers hide]"},
        {BASE "[headers]\n- =\n", "t.ini:4: -: missing header name to remove in [headers]"},
        {BASE "[headers]\nX-A = 1\n-x-a =\n", "t.ini:5: x-a: duplicate header in [headers]"},
        {BASE "[route /]\nrequest_headers = nope\n", "t.ini:4: request_headers: no [headers nope] section"},
        {BASE "[headers up]\nX-Forwarded-Proto = https\n[route /]\nrequest_headers = up\n",
         "t.ini:6: request_headers: X-Forwarded-Proto in [headers up] cannot be set on the request sent upstream "
         "(proxyd sets it itself)"},
        {BASE "[headers up]\n-Host =\n", "t.ini:4: Host: cannot be removed in [headers up]"},
        {BASE "[headers up]\n-Expect =\n[route /]\nrequest_headers = up\n",
         "t.ini:6: request_headers: -Expect in [headers up] cannot be removed on the request sent upstream "
         "(Host, framing and hop-by-hop headers are proxyd's)"},
        {BASE "[headers up]\nUpgrade = h2c\n", "t.ini:4: Upgrade: cannot be set in [headers up]"},
        {BASE "[headers a]\nX-A = 1\n[headers b]\n-X-A =\n[route /]\nrequest_headers = a b\n",
         "t.ini:8: request_headers: X-A is set by both [headers a] and [headers b]"},
        {BASE "default_service = web\n", "t.ini:3: default_service: no [service web] section"},
        {BASE "default_service = a/b\n", "t.ini:3: default_service: name may contain only"},
        /* [limit NAME] */
        {BASE "[limit api]\nburst = 5\n", "t.ini:3: rate: required in [limit api]"},
        {BASE "[limit api]\nrate = 10r/h\n", "t.ini:4: rate: must be Nr/s or Nr/m"},
        {BASE "[limit api]\nrate = 0r/s\n", "t.ini:4: rate: must be Nr/s or Nr/m"},
        {BASE "[limit api]\nrate = 10\n", "t.ini:4: rate: must be Nr/s or Nr/m"},
        {BASE "[limit api]\nrate = 1r/s\nburst = -1\n", "t.ini:5: burst: must be a number"},
        {BASE "[limit api]\nrate = 1r/s\nstatus = 404\n", "t.ini:5: status: must be 429 or 503"},
        {BASE "[limit api]\nrate = 1r/s\nzone_size = 1k\n", "t.ini:5: zone_size: must be at least 64k"},
        {BASE "[limit api]\nrate = 1r/s\nnodelay = x\n", "t.ini:5: nodelay: expected yes or no"},
        {BASE "[limit a]\nrate = 1r/s\n[limit a]\n", "t.ini:5: [limit a]: duplicate section (first at line 3)"},
        {BASE "[limit a/b]\n", "t.ini:3: [limit a/b]: name may contain only"},
        /* [route PREFIX] */
        {BASE "[route api]\n", "t.ini:3: [route api]: prefix must start with '/'"},
        {BASE "[route /api/]\nlimit = nope\n", "t.ini:4: limit: no [limit nope] section"},
        {BASE "[route /a/]\n[route /a/]\n", "t.ini:4: [route /a/]: conflicts with [route /a/] at line 3 (any host)"},
        {BASE "[route /a/]\nhost = A.com\n[route /a/]\nhost = a.com\n",
         "t.ini:5: [route /a/]: conflicts with [route /a/] at line 3 (host a.com)"},
        {BASE "[route /a/]\nhost = a..b\n", "t.ini:4: host: bad host name"},
        {BASE "[route /a/]\nrate = 1\n", "t.ini:4: rate: unknown key in [route /a/]"},
        {BASE "[route /a/]\nlimit = a/b\n", "t.ini:4: limit: name may contain only"},
        /* [service NAME] */
        {BASE "[service web]\nhosts = a.com\n", "t.ini:3: targets: required in [service web]"},
        {BASE "[service web]\ntargets =\n", "t.ini:4: targets: needs at least one HOST:PORT"},
        {BASE "[service web]\ntargets = 127.0.0.1:3000 foo\n", "t.ini:4: targets: missing port (got \"foo\")"},
        {BASE "[service web]\ntargets = 127.0.0.1:3000 127.0.0.1:3000\n", "t.ini:4: targets: duplicate target"},
        {BASE "[service web]\ntargets = 127.0.0.1:1\npath_prefix = app\n", "t.ini:5: path_prefix: must start with '/'"},
        {BASE "[service web]\ntargets = 127.0.0.1:1\npath_prefix = /a?b\n", "t.ini:5: path_prefix: bad character"},
        {BASE "[service web]\nhosts = a.com *.b.com A.com\n", "t.ini:4: hosts: duplicate host (got \"A.com\")"},
        {BASE "[service web]\nhosts = a*.com\n", "t.ini:4: hosts: a wildcard must be written *.SUFFIX"},
        {BASE "[service web]\nhosts = *\n", "t.ini:4: hosts: a wildcard must be written *.SUFFIX"},
        {BASE "[service web]\nhosts = a.com:80\n", "t.ini:4: hosts: bad host name (no port here)"},
        {BASE "[service web]\nhosts = a..com\n", "t.ini:4: hosts: bad host name"},
        {BASE "[service web]\nhosts = a.com.\n", "t.ini:4: hosts: bad host name"},
        {BASE "[service web]\nhealth_check_path = up\n", "t.ini:4: health_check_path: must start with '/'"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\n[service b]\ntargets = 127.0.0.1:2\n",
         "t.ini:5: [service b]: conflicts with service a (any host, prefix /)"},
        {BASE "[service a]\nhosts = x.com y.com\npath_prefix = /app\ntargets = 127.0.0.1:1\n"
              "[service b]\nhosts = Y.com\npath_prefix = /app/\ntargets = 127.0.0.1:2\n",
         "t.ini:7: [service b]: conflicts with service a (host y.com, prefix /app)"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\n[service a]\n", "t.ini:5: [service a]: duplicate section (first at line 3)"},
        /* [acme] */
        {"[proxy]\nlisten_https = 127.0.0.1:0\n[tls]\ncertificate = a\ncertificate_key = b\n"
         "[acme]\nenabled = yes\ndomains = a.com\n",
         "t.ini:7: enabled: needs listen_http"},
        {BASE "[acme]\ndomains = *.a.com\n", "t.ini:4: domains: wildcards need DNS-01 challenges"},
        {BASE "[acme]\ndomains = a.com A.com\n", "t.ini:4: domains: duplicate host"},
        {BASE "[acme]\ndirectory = http://x/dir\n", "t.ini:4: directory: must be an https:// URL"},
        {BASE "[acme]\nemail = foo\n", "t.ini:4: email: must be NAME@DOMAIN"},
        {BASE "[acme]\nrenew_before = 0\n", "t.ini:4: renew_before: must be greater than 0"},
        {BASE "[acme]\ncheck_interval = 1y\n", "t.ini:4: check_interval: bad duration"},
        {BASE "[acme]\nca_bundle = a\x02\n", "t.ini:4: ca_bundle: control character in path"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_LOAD_ERR(cases[i].text, cases[i].want);
}

/* [service] buffering keys (DESIGN "Buffering") and [proxy] temp_dir:
 * defaults, values, errors. */
static void test_service_buffering(void)
{
    struct px_config *cfg = load_ok(BASE "temp_dir = /tmp/spool\n[service a]\nhosts = a.com\ntargets = 127.0.0.1:1\n"
                                         "[service b]\nhosts = b.com\ntargets = 127.0.0.1:2\nbuffer_requests = no\n"
                                         "buffer_responses = yes\nbuffer_memory = 64k\nmax_request_body = 10m\n"
                                         "max_response_body = 1g\n");
    CHECK_STR(errbuf, "");
    REQUIRE_ELSE(cfg != NULL && cfg->nservices == 2, px_config_free(cfg));
    CHECK_STR(cfg->temp_dir, "/tmp/spool");
    const struct px_buffering *a = &cfg->services[0].buffering, *b = &cfg->services[1].buffering;
    CHECK_INT(a->requests, 1);
    CHECK_INT(a->responses, 0);
    CHECK_INT(a->memory, 1 << 20);
    CHECK_INT(a->max_request, 0);
    CHECK_INT(a->max_response, 0);
    CHECK_INT(b->requests, 0);
    CHECK_INT(b->responses, 1);
    CHECK_INT(b->memory, 64 << 10);
    CHECK_INT(b->max_request, 10 << 20);
    CHECK_INT(b->max_response, 1ull << 30);
    px_config_free(cfg);
    cfg = load_ok(BASE);
    REQUIRE(cfg != NULL);
    CHECK_STR(cfg->temp_dir, "/var/lib/proxyd/tmp");
    px_config_free(cfg);
    CHECK_LOAD_ERR(BASE "[service a]\ntargets = 127.0.0.1:1\nbuffer_requests = maybe\n", "t.ini:5: buffer_requests: ");
    CHECK_LOAD_ERR(BASE "[service a]\ntargets = 127.0.0.1:1\nbuffer_memory = lots\n", "t.ini:5: buffer_memory: bad size");
    CHECK_LOAD_ERR(BASE "temp_dir = \n", "t.ini:3: temp_dir: ");
}

/* [service] health_check_interval / health_check_timeout: the monitor's
 * timings, durations like every other, bounded to 100 ms..1 h. */
/* The access log's keys: the format, health_log, [route] access_log, and a
 * service's log headers (Kamal's default for requests, none for responses). */
static void test_access_log_keys(void)
{
    struct px_config *cfg = load_ok(BASE "[service a]\nhosts = a.com\ntargets = 127.0.0.1:1\n"
                                         "[route /q/]\naccess_log = off\n[route /r/]\n");
    CHECK_STR(errbuf, "");
    REQUIRE_ELSE(cfg != NULL && cfg->nservices == 1 && cfg->nroutes == 2, px_config_free(cfg));
    CHECK_INT(cfg->access_log_format, PX_ACCESS_JSON);
    CHECK_INT(cfg->health_log, 1);
    CHECK_INT(cfg->routes[0].access_log, 0);
    CHECK_INT(cfg->routes[1].access_log, 1);
    CHECK_INT(cfg->services[0].nlog_request_headers, 3);
    if (cfg->services[0].nlog_request_headers == 3)
        CHECK_STR(cfg->services[0].log_request_headers[2], "User-Agent");
    CHECK_INT(cfg->services[0].nlog_response_headers, 0);
    px_config_free(cfg);

    cfg = load_ok("[proxy]\nlisten_http = 127.0.0.1:0\naccess_log_format = combined\nhealth_log = no\n"
                  "[service a]\ntargets = 127.0.0.1:1\nlog_request_headers =\n"
                  "log_response_headers = X-Runtime Server\n");
    CHECK_STR(errbuf, "");
    REQUIRE_ELSE(cfg != NULL && cfg->nservices == 1, px_config_free(cfg));
    CHECK_INT(cfg->access_log_format, PX_ACCESS_COMBINED);
    CHECK_INT(cfg->health_log, 0);
    CHECK_INT(cfg->services[0].nlog_request_headers, 0);
    CHECK_INT(cfg->services[0].nlog_response_headers, 2);
    if (cfg->services[0].nlog_response_headers == 2)
        CHECK_STR(cfg->services[0].log_response_headers[1], "Server");
    px_config_free(cfg);

    CHECK_LOAD_ERR("[proxy]\nlisten_http = 127.0.0.1:0\naccess_log_format = nginx\n",
                   "t.ini:3: access_log_format: must be json or combined");
    CHECK_LOAD_ERR(BASE "[service a]\ntargets = 127.0.0.1:1\nlog_response_headers = Good Bad:Name\n",
                   "t.ini:5: log_response_headers: not a header name");
    CHECK_LOAD_ERR(BASE "[service a]\ntargets = 127.0.0.1:1\nlog_request_headers = A B C D E F G H I J K L M N O P Q\n",
                   "t.ini:5: log_request_headers: at most 16 headers");
    CHECK_LOAD_ERR(BASE "[route /a/]\naccess_log = sometimes\n", "t.ini:4: access_log: ");
}

static void test_service_health_timings(void)
{
    struct px_config *cfg = load_ok(BASE "[service a]\nhosts = a.com\ntargets = 127.0.0.1:1\n"
                                         "[service b]\nhosts = b.com\ntargets = 127.0.0.1:2\nhealth_check_path = /up\n"
                                         "health_check_interval = 250ms\nhealth_check_timeout = 1m\n");
    CHECK_STR(errbuf, "");
    REQUIRE_ELSE(cfg != NULL && cfg->nservices == 2, px_config_free(cfg));
    CHECK_INT(cfg->services[0].health_check_interval_ms, 1000);
    CHECK_INT(cfg->services[0].health_check_timeout_ms, 5000);
    CHECK_INT(cfg->services[1].health_check_interval_ms, 250);
    CHECK_INT(cfg->services[1].health_check_timeout_ms, 60000);
    px_config_free(cfg);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {BASE "[service a]\ntargets = 127.0.0.1:1\nhealth_check_interval = 0\n",
         "t.ini:5: health_check_interval: must be 100ms..3600s"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\nhealth_check_interval = 50ms\n",
         "t.ini:5: health_check_interval: must be 100ms..3600s"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\nhealth_check_interval = 2h\n",
         "t.ini:5: health_check_interval: must be 100ms..3600s"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\nhealth_check_timeout = 0s\n",
         "t.ini:5: health_check_timeout: must be 100ms..3600s"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\nhealth_check_timeout = -1s\n", "t.ini:5: health_check_timeout: "},
        {BASE "[service a]\ntargets = 127.0.0.1:1\nhealth_check_timeout = soon\n",
         "t.ini:5: health_check_timeout: bad duration"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\nhealth_check_interval = 1s\nhealth_check_interval = 2s\n",
         "t.ini:6: health_check_interval: duplicate key"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_LOAD_ERR(bad[i].text, bad[i].want);
}

/* The per-service options of [service]: values, defaults, errors. */
static void test_service_options(void)
{
    struct px_config *cfg = load_ok(BASE "[service a]\nhosts = a.com www.a.com\ntargets = 127.0.0.1:1\n"
                                         "path_prefix = /app /api/ /x\nstrip_path_prefix = yes\n"
                                         "target_timeout = 1m30s\nhealth_check_port = 9000\n"
                                         "canonical_host = A.com\ntls_redirect = no\nforward_headers = yes\n"
                                         "error_pages = /tmp\n[service b]\nhosts = b.com\ntargets = 127.0.0.1:2\n"
                                         "target_timeout =\n");
    CHECK_STR(errbuf, "");
    REQUIRE_ELSE(cfg != NULL && cfg->nservices == 2, px_config_free(cfg));
    const struct px_svc_opts *o = &cfg->services[0].opts;
    CHECK_STR(cfg->services[0].path_prefix, "/app");
    CHECK_INT(o->nmore_prefixes, 2);
    CHECK_STR(o->nmore_prefixes == 2 ? o->more_prefixes[0] : "", "/api");
    CHECK_STR(o->nmore_prefixes == 2 ? o->more_prefixes[1] : "", "/x");
    CHECK_INT(o->strip_path_prefix, 1);
    CHECK_INT(o->target_timeout_ms, 90000);
    CHECK_INT(o->health_check_port, 9000);
    CHECK_STR(o->canonical_host ? o->canonical_host : "", "a.com");
    CHECK_INT(o->no_tls_redirect, 1);
    CHECK_INT(o->forward_headers, 1);
    CHECK_STR(o->error_pages ? o->error_pages : "", "/tmp");
    o = &cfg->services[1].opts;
    CHECK(o->nmore_prefixes == 0 && !o->strip_path_prefix && !o->target_timeout_ms && !o->health_check_port &&
          !o->canonical_host && !o->no_tls_redirect && !o->forward_headers && !o->error_pages &&
          !o->tls_certificate);
    px_config_free(cfg);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {BASE "[service a]\ntargets = 127.0.0.1:1\ntarget_timeout = 2d\n",
         "t.ini:5: target_timeout: must be 1ms..24h (empty: upstream_read_timeout)"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\nhealth_check_port = 70000\n",
         "t.ini:5: health_check_port: must be a port 1..65535"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\ncanonical_host = *.a.com\n", "t.ini:5: canonical_host: "},
        {BASE "[service a]\ntargets = 127.0.0.1:1\nerror_pages = /nonexistent-px\n",
         "t.ini:5: error_pages: no such directory"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\npath_prefix = /a /a/\n", "t.ini:5: path_prefix: given twice"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\ntls_certificate = /x.pem\n",
         "t.ini:3: tls_certificate_key: required with tls_certificate in [service a]"},
        {BASE "[service a]\ntargets = 127.0.0.1:1\ntls_certificate = /nonexistent.pem\n"
              "tls_certificate_key = /nonexistent.key\n", "t.ini:3: tls_certificate: certificate /nonexistent.pem"},
        {BASE "[service a]\nhosts = a.com\npath_prefix = /x /y\ntargets = 127.0.0.1:1\n"
              "[service b]\nhosts = a.com\npath_prefix = /y\ntargets = 127.0.0.1:2\n",
         "t.ini:7: [service b]: conflicts with service a (host a.com, prefix /y)"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_LOAD_ERR(bad[i].text, bad[i].want);
}

/* A [service] target that is proxyd's own listener: every request would
 * loop back in. Same address, or a wildcard listener and a local address. */
static void test_service_self_target(void)
{
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"[proxy]\nlisten_http = 127.0.0.1:8080\n[service a]\nhosts = a.com\ntargets = 10.9.9.9:1 127.0.0.1:8080\n",
         "t.ini:5: targets: 127.0.0.1:8080 is proxyd's own listen address 127.0.0.1:8080"},
        {"[proxy]\nlisten_http = 0.0.0.0:8080\n[service a]\ntargets = localhost:8080\nhosts = a.com\n",
         "t.ini:4: targets: localhost:8080 is proxyd's own listen address 0.0.0.0:8080"},
        {"[proxy]\nlisten_http = *:8080\n[service a]\ntargets = 127.0.0.5:8080\n",
         "t.ini:4: targets: 127.0.0.5:8080 is proxyd's own listen address"},
        {"[proxy]\nlisten_http = [::]:8080\n[service a]\ntargets = 127.0.0.1:8080\n",
         "t.ini:4: targets: 127.0.0.1:8080 is proxyd's own listen address [::]:8080"},
        {"[proxy]\nlisten_http = 0.0.0.0:8080\n[service a]\ntargets = [::1]:8080\n",
         "t.ini:4: targets: [::1]:8080 is proxyd's own listen address"},
        {"[proxy]\nlisten_http = 127.0.0.1:8080\nmetrics_listen = 127.0.0.1:9145\n[service a]\n"
         "targets = 127.0.0.1:9145\n",
         "t.ini:5: targets: 127.0.0.1:9145 is proxyd's own listen address 127.0.0.1:9145"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_LOAD_ERR(bad[i].text, bad[i].want);
    /* another port, another host, an ephemeral listener: fine */
    static const char *const good[] = {
        "[proxy]\nlisten_http = 0.0.0.0:8080\n[service a]\ntargets = 127.0.0.1:8081\n",
        "[proxy]\nlisten_http = 127.0.0.1:8080\n[service a]\ntargets = 10.9.9.9:8080\n",
        "[proxy]\nlisten_http = 127.0.0.1:8080\n[service a]\ntargets = 127.0.0.2:8080\n",
        "[proxy]\nlisten_http = 127.0.0.1:0\n[service a]\ntargets = 127.0.0.1:3000\n",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct px_config *cfg = load_ok(good[i]);
        CHECK_STR(errbuf, "");
        px_config_free(cfg);
    }
}

static void test_durations(void)
{
    static const struct {
        const char *in;
        uint64_t ms;
        const char *err;
    } cases[] = {
        {"500ms", 500, NULL},
        {"10s", 10000, NULL},
        {"10", 10000, NULL},
        {"5m", 300000, NULL},
        {"1h", 3600000, NULL},
        {"2d", 172800000, NULL},
        {"0", 0, NULL},
        {"0ms", 0, NULL},
        {"213503982334d", 213503982334ull * 86400000ull, NULL},
        {"213503982335d", 0, "too large"},
        {"18446744073709551615ms", UINT64_MAX, NULL},
        {"18446744073709551616ms", 0, "too large"},
        {"18446744073709552s", 0, "too large"},
        {"", 0, "empty duration"},
        {"-1s", 0, "must not be negative"},
        {"+1s", 0, "bad duration"},
        {"1.5s", 1500, NULL},
        {"0.5s", 500, NULL},
        {"1m30s", 90000, NULL},
        {"1h30m", 5400000, NULL},
        {"500us", 1, NULL},
        {"1.5", 1500, NULL},
        {"1h30", 0, "bad duration"},
        {"1.s", 0, "bad duration"},
        {"1 s", 0, "bad duration"},
        {" 1s", 0, "bad duration"},
        {"1S", 0, "bad duration"},
        {"1w", 0, "bad duration"},
        {"s", 0, "bad duration"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        const char *err = px_parse_duration_ms(cases[i].in, &v);
        if (cases[i].err) {
            CHECK_STR(err && strncmp(err, cases[i].err, strlen(cases[i].err)) == 0 ? cases[i].err : cases[i].in,
                      cases[i].err);
            CHECK_INT(v, 12345);
        } else {
            CHECK_STR(err ? cases[i].in : "ok", "ok");
            CHECK_INT(v, cases[i].ms);
        }
    }
    CHECK(px_parse_duration_ms(NULL, NULL) != NULL);
}

static void test_sizes(void)
{
    static const struct {
        const char *in;
        uint64_t v;
        const char *err;
    } cases[] = {
        {"0", 0, NULL},
        {"512", 512, NULL},
        {"16k", 16384, NULL},
        {"16K", 16384, NULL},
        {"10m", 10485760, NULL},
        {"10M", 10485760, NULL},
        {"1g", 1073741824, NULL},
        {"1G", 1073741824, NULL},
        {"17179869183g", 17179869183ull << 30, NULL},
        {"17179869184g", 0, "too large"},
        {"99999999999999999999", 0, "too large"},
        {"", 0, "empty size"},
        {"-1", 0, "must not be negative"},
        {"1kb", 0, "bad size"},
        {"1t", 0, "bad size"},
        {"k", 0, "bad size"},
        {"1 k", 0, "bad size"},
        {"1.5m", 0, "bad size"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        const char *err = px_parse_size(cases[i].in, &v);
        if (cases[i].err) {
            CHECK_STR(err && strncmp(err, cases[i].err, strlen(cases[i].err)) == 0 ? cases[i].err : cases[i].in,
                      cases[i].err);
            CHECK_INT(v, 12345);
        } else {
            CHECK_STR(err ? cases[i].in : "ok", "ok");
            CHECK_INT(v, cases[i].v);
        }
    }
}

static void test_bools(void)
{
    static const char *const yes[] = {"yes", "Yes", "on", "ON", "true", "True", "1"};
    static const char *const no[] = {"no", "NO", "off", "Off", "false", "FALSE", "0"};
    static const char *const bad[] = {"", "y", "n", "2", "yess", "enable", " yes"};
    int b;

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        b = -1;
        CHECK_STR(px_parse_bool(yes[i], &b) ? yes[i] : "ok", "ok");
        CHECK_INT(b, 1);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        b = -1;
        CHECK_STR(px_parse_bool(no[i], &b) ? no[i] : "ok", "ok");
        CHECK_INT(b, 0);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b = -1;
        CHECK_STR(px_parse_bool(bad[i], &b), "expected yes or no");
        CHECK_INT(b, -1);
    }
}

static void test_headers_section(void)
{
    struct px_config *cfg = load_ok(BASE "[headers]\n");

    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_INT(cfg->has_headers_section, 1);
        CHECK_INT(cfg->nheaders, 0);
        px_config_free(cfg);
    }
    cfg = load_ok(BASE "[headers]\nX-B = 2\nX-A = a\tb\nStrict-Transport-Security = max-age=1\n");
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_INT(cfg->nheaders, 3);
        if (cfg->nheaders == 3) {
            CHECK_STR(cfg->headers[0].name, "X-B");
            CHECK_STR(cfg->headers[1].value, "a\tb");
            CHECK_STR(cfg->headers[2].value, "max-age=1");
        }
        px_config_free(cfg);
    }
    /* a removal, and a set applied to requests; default_service */
    cfg = load_ok(BASE "default_service = app\n[headers]\n-X-Powered-By =\nX-A = 1\n[headers up]\nX-Api = gw\n-Cookie =\n"
                       "[route /api/]\nrequest_headers = up\n[service app]\ntargets = 127.0.0.1:1\n");
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_STR(cfg->default_service, "app");
        CHECK_INT(cfg->nheaders, 2);
        if (cfg->nheaders == 2) {
            CHECK_STR(cfg->headers[0].name, "X-Powered-By");
            CHECK_STR(cfg->headers[0].value, "");
            CHECK_INT(cfg->headers[0].remove, 1);
            CHECK_INT(cfg->headers[1].remove, 0);
        }
        CHECK_INT(cfg->nroutes, 1);
        if (cfg->nroutes == 1) {
            CHECK_INT(cfg->routes[0].nrequest_header_sets, 1);
            CHECK_INT(cfg->routes[0].nheader_sets, 0);
        }
        CHECK_INT(cfg->nheader_sets, 1);
        if (cfg->nheader_sets == 1 && cfg->header_sets[0].nheaders == 2) {
            CHECK_STR(cfg->header_sets[0].headers[1].name, "Cookie");
            CHECK_INT(cfg->header_sets[0].headers[1].remove, 1);
        }
        px_config_free(cfg);
    }
}

static void test_services_and_routes(void)
{
    static const char text[] =
        BASE
        "[service root]\n"
        "targets = 127.0.0.1:1\n"
        "path_prefix = //\n"
        "[service app]\n"
        "targets = 127.0.0.1:2\n"
        "path_prefix = /app/\n"
        "[service blog]\n"
        "hosts = blog.example.com\n"
        "targets = localhost:3\n"
        "[service blog2]\n"
        "hosts = *.blog.example.com\n"
        "targets = 127.0.0.1:4\n"
        "[limit chat]\n"
        "rate = 5r/s\n"
        "[limit slow]\n"
        "rate = 1r/m\n"
        "[route /api/v1/sessions/]\n"
        "limit = chat\n"
        "[route /api/]\n"
        "host = a.example.com\n"
        "[route /api/]\n"
        "host = b.example.com\n"
        "[route /api/]\n"
        "limit =\n";
    struct px_config *cfg = load_ok(text);

    CHECK_STR(errbuf, "");
    REQUIRE(cfg != NULL);
    CHECK_INT(cfg->nservices, 4);
    if (cfg->nservices == 4) {
        CHECK_STR(cfg->services[0].path_prefix, "/");
        CHECK_INT(cfg->services[0].nhosts, 0);
        CHECK_STR(cfg->services[0].health_check_path, "/up");
        CHECK_STR(cfg->services[1].path_prefix, "/app");
        CHECK_STR(cfg->services[2].hosts[0], "blog.example.com");
        CHECK_STR(cfg->services[2].targets[0].text, "localhost:3");
        CHECK_STR(cfg->services[3].hosts[0], "*.blog.example.com");
    }
    CHECK_INT(cfg->nlimits, 2);
    if (cfg->nlimits == 2) {
        CHECK_INT(cfg->limits[0].rate_milli_per_s, 5000);
        CHECK_INT(cfg->limits[0].burst, 0);
        CHECK_INT(cfg->limits[0].nodelay, 1);
        CHECK_INT(cfg->limits[0].status, 429);
        CHECK_INT(cfg->limits[0].zone_size, 10 << 20);
        CHECK_INT(cfg->limits[1].rate_milli_per_s, 16);
    }
    CHECK_INT(cfg->nroutes, 4);
    if (cfg->nroutes == 4) {
        CHECK_STR(cfg->routes[0].prefix, "/api/v1/sessions/");
        CHECK(cfg->routes[0].nlimits == 1 && strcmp(cfg->routes[0].limits[0].name, "chat") == 0);
        CHECK_INT(cfg->routes[0].nhosts, 0);
        CHECK(cfg->routes[1].nhosts == 1 && strcmp(cfg->routes[1].hosts[0], "a.example.com") == 0);
        CHECK_INT(cfg->routes[1].nlimits, 0);
        CHECK(cfg->routes[2].nhosts == 1 && strcmp(cfg->routes[2].hosts[0], "b.example.com") == 0);
        CHECK_INT(cfg->routes[3].nlimits, 0);
    }
    px_config_free(cfg);
}

/* [route] suffix / limit / headers lists, [headers NAME] sets, [limit] delay. */
static void test_route_policies(void)
{
    static const char text[] =
        BASE
        "[limit api]\n"                       /* 3 */
        "rate = 10r/s\n"
        "burst = 20\n"
        "delay = 8\n"                         /* 6 */
        "[limit chat]\n"
        "rate = 5r/s\n"
        "nodelay = no\n"
        "delay = 0\n"                         /* 10 */
        "[route /api/v1/]\n"                  /* 11 */
        "limit = api, chat\n"
        "headers = cors\n"
        "[route /]\n"                         /* 14 */
        "suffix = .JS .css,.png\n"
        "suffix = .woff2\n"
        "headers = immutable\n"
        "headers = other\n"                   /* 18 */
        "[route /api/]\n"
        "limit = api\n"
        "limit = chat\n"                      /* 21 */
        "[headers cors]\n"                    /* 22 */
        "Access-Control-Allow-Origin = https://example.com\n"
        "Access-Control-Allow-Credentials = true\n"
        "[headers immutable]\n"
        "Cache-Control = public, max-age=31536000, immutable\n"
        "[headers other]\n"                   /* 27 */
        "[headers]\n"
        "X-Frame-Options = DENY\n";
    struct px_config *cfg = load_ok(text);

    CHECK_STR(errbuf, "");
    REQUIRE(cfg != NULL);
    CHECK_INT(cfg->nlimits, 2);
    if (cfg->nlimits == 2) {
        CHECK_INT(cfg->limits[0].delay, 8);
        CHECK_INT(cfg->limits[0].nodelay, 0);
        CHECK_INT(cfg->limits[1].delay, 0);
        CHECK_INT(cfg->limits[1].nodelay, 0);
    }
    CHECK_INT(cfg->nroutes, 3);
    if (cfg->nroutes == 3) {
        const struct px_route_conf *r = &cfg->routes[0];
        CHECK_INT(r->prefix_len, 7);
        CHECK_INT(r->nlimits, 2);
        CHECK_INT(r->nsuffixes, 0);
        if (r->nlimits == 2) {
            CHECK_STR(r->limits[0].name, "api");
            CHECK_STR(r->limits[1].name, "chat");
            CHECK_INT(r->limits[1].line, 12);
        }
        CHECK(r->nheader_sets == 1 && strcmp(r->header_sets[0].name, "cors") == 0);
        r = &cfg->routes[1];
        CHECK_INT(r->prefix_len, 1);
        CHECK_INT(r->nsuffixes, 4);
        if (r->nsuffixes == 4) {
            CHECK_STR(r->suffixes[0], ".js");
            CHECK_STR(r->suffixes[1], ".css");
            CHECK_STR(r->suffixes[2], ".png");
            CHECK_STR(r->suffixes[3], ".woff2");
        }
        CHECK_INT(r->nheader_sets, 2);
        if (r->nheader_sets == 2) {
            CHECK_STR(r->header_sets[1].name, "other");
            CHECK_INT(r->header_sets[1].line, 18);
        }
        r = &cfg->routes[2];
        CHECK(r->nlimits == 2 && r->limits[1].line == 21);
    }
    CHECK_INT(cfg->nheader_sets, 3);
    if (cfg->nheader_sets == 3) {
        CHECK_STR(cfg->header_sets[0].name, "cors");
        CHECK_INT(cfg->header_sets[0].line, 22);
        CHECK_INT(cfg->header_sets[0].nheaders, 2);
        if (cfg->header_sets[0].nheaders == 2) {
            CHECK_STR(cfg->header_sets[0].headers[1].name, "Access-Control-Allow-Credentials");
            CHECK_STR(cfg->header_sets[0].headers[1].value, "true");
        }
        CHECK_INT(cfg->header_sets[2].nheaders, 0); /* an empty set is allowed */
    }
    CHECK_INT(cfg->has_headers_section, 1);
    CHECK_INT(cfg->nheaders, 1);
    px_config_free(cfg);

    /* [headers NAME] does not count as [headers]: the defaults still apply */
    cfg = load_ok(BASE "[headers cors]\nX-A = 1\n[route /]\nheaders = cors\n");
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_INT(cfg->has_headers_section, 0);
        CHECK_INT(cfg->nheaders, 4);
        px_config_free(cfg);
    }
    /* suffix routes at one prefix: disjoint suffixes, or one without */
    cfg = load_ok(BASE "[route /]\nsuffix = .js\n[route /]\nsuffix = .css\n[route /]\n[route /a]\nsuffix = .js\n");
    CHECK_STR(errbuf, "");
    px_config_free(cfg);
}

static void test_route_policy_errors(void)
{
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        /* delay and nodelay */
        {BASE "[limit a]\nrate = 1r/s\nnodelay = yes\ndelay = 3\n",
         "t.ini:6: delay: delay and nodelay = yes exclude each other (nodelay at line 5)"},
        {BASE "[limit a]\nrate = 1r/s\ndelay = 3\nnodelay = yes\n",
         "t.ini:6: nodelay: delay and nodelay = yes exclude each other (delay at line 5)"},
        {BASE "[limit a]\nrate = 1r/s\ndelay = x\n", "t.ini:5: delay: must be a number"},
        {BASE "[limit a]\nrate = 1r/s\ndelay = -1\n", "t.ini:5: delay: must be a number"},
        {BASE "[limit a]\nrate = 1r/s\ndelay = 1\ndelay = 2\n", "t.ini:6: delay: duplicate key in [limit a]"},
        /* references */
        {BASE "[route /]\nheaders = cors\n", "t.ini:4: headers: no [headers cors] section"},
        {BASE "[limit a]\nrate = 1r/s\n[route /]\nlimit = a\nlimit = b\n", "t.ini:7: limit: no [limit b] section"},
        {BASE "[limit a]\nrate = 1r/s\n[route /]\nlimit = a a\n", "t.ini:6: limit: named twice (got \"a\")"},
        {BASE "[limit a]\nrate = 1r/s\n[route /]\nlimit = a\nlimit = a\n", "t.ini:7: limit: named twice"},
        {BASE "[route /]\nheaders = a/b\n", "t.ini:4: headers: name may contain only"},
        {BASE "[headers a]\nX-A = 1\n[headers b]\nx-a = 2\n[route /]\nheaders = a b\n",
         "t.ini:8: headers: x-a is set by both [headers a] and [headers b]"},
        /* [headers NAME] */
        {BASE "[headers a]\n[headers a]\n", "t.ini:4: [headers a]: duplicate section (first at line 3)"},
        {BASE "[headers]\n[headers]\n", "t.ini:4: [headers]: duplicate section (first at line 3)"},
        {BASE "[headers a/b]\n", "t.ini:3: [headers a/b]: name may contain only"},
        {BASE "[headers a]\nContent-Length = 1\n", "t.ini:4: Content-Length: cannot be set in [headers a]"},
        {BASE "[headers a]\nX-A = 1\nx-a = 2\n", "t.ini:5: x-a: duplicate header in [headers a]"},
        {BASE "[headers a]\nX A = 1\n", "t.ini:4: X A: bad header name in [headers a]"},
        {BASE "[headers a]\nX-A =\n", "t.ini:4: X-A: empty header value"},
        /* suffixes */
        {BASE "[route /]\nsuffix = js\n", "t.ini:4: suffix: must be a file extension starting with '.'"},
        {BASE "[route /]\nsuffix = .\n", "t.ini:4: suffix: must be a file extension starting with '.'"},
        {BASE "[route /]\nsuffix = .a/b\n", "t.ini:4: suffix: bad character in suffix (got \".a/b\")"},
        {BASE "[route /]\nsuffix = .js .JS\n", "t.ini:4: suffix: named twice (got \".JS\")"},
        /* prefixes */
        {BASE "[route /a//b]\n", "t.ini:3: [route /a//b]: prefix must not contain \"//\""},
        {BASE "[route /a/./b]\n", "t.ini:3: [route /a/./b]: prefix must not contain \".\" or \"..\" segments"},
        {BASE "[route /a/..]\n", "t.ini:3: [route /a/..]: prefix must not contain \".\" or \"..\" segments"},
        {BASE "[route /a;x]\n", "t.ini:3: [route /a;x]: prefix must not contain ';' (\";params\" are dropped from a path before matching)"},
        {BASE "[route /%41]\n", "t.ini:3: [route /%41]: prefix must be written decoded"},
        {BASE "[route /a?b]\n", "t.ini:3: [route /a?b]: prefix bad character in path"},
        /* conflicts */
        {BASE "[route /a/]\n[route /a]\n", "t.ini:4: [route /a]: conflicts with [route /a/] at line 3 (any host)"},
        {BASE "[route /]\nsuffix = .js\n[route /]\nsuffix = .css .min.JS\n",
         "t.ini:5: [route /]: conflicts with [route /] at line 3 (any host, suffix .js)"},
        {BASE "[route /x]\nhost = a.com\nsuffix = .js\n[route /x/]\nhost = a.com\nsuffix = .js\n",
         "t.ini:6: [route /x/]: conflicts with [route /x] at line 3 (host a.com, suffix .js)"},
        {BASE "[route /x]\nhost = a.com b.com\n[route /x]\nhost = c.com B.com\n",
         "t.ini:5: [route /x]: conflicts with [route /x] at line 3 (host b.com)"},
        {BASE "[route /x]\nhost = a.com A.com\n", "t.ini:4: host: duplicate host (got \"A.com\")"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_LOAD_ERR(cases[i].text, cases[i].want);

    /* a route's headers must fit the response writers' 64: 4 defaults + 60 fit */
    {
        static char text[4096];
        size_t o = (size_t)snprintf(text, sizeof(text), BASE "[route /]\nheaders = big\n[headers big]\n");
        for (int i = 0; i < 60; i++)
            o += (size_t)snprintf(text + o, sizeof(text) - o, "X-H%d = v\n", i);
        struct px_config *cfg = load_ok(text);
        CHECK_STR(errbuf, "");
        px_config_free(cfg);
        /* one replacing a default still fits; one more does not */
        o += (size_t)snprintf(text + o, sizeof(text) - o, "X-Frame-Options = SAMEORIGIN\n");
        cfg = load_ok(text);
        CHECK_STR(errbuf, "");
        px_config_free(cfg);
        snprintf(text + o, sizeof(text) - o, "X-H60 = v\n");
        CHECK_LOAD_ERR(text, "t.ini:4: headers: more than 64 response headers with [headers]");
    }
}

static void test_route_warnings(void)
{
    int before = px_log_stub_count();
    struct px_config *cfg = load_ok(BASE "[limit a]\nrate = 1r/s\n[headers h]\nX-A = 1\n[route /]\n");
    CHECK(cfg != NULL);
    px_config_free(cfg);
    CHECK_INT(px_log_stub_count() - before, 2);
    CHECK_STR(px_log_stub_last(), "t.ini:5: [headers h]: no [route] uses it");
}

static void test_syntax_details(void)
{
    struct px_config *cfg;

    /* Inline comments need whitespace before ';' (inih); '#' only starts a line. */
    cfg = load_ok("\xEF\xBB\xBF# comment\n[proxy] ; the proxy\n"
                  "  listen_http = 127.0.0.1:0   ; indented, comment\n"
                  "\tworkers: 4\n"
                  "health_path = /a;b\n"
                  "[headers]\n"
                  "X-XSS-Protection = 1; mode=block ; trailing comment\n");
    CHECK_STR(errbuf, "");
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_STR(cfg->listen_http.text, "127.0.0.1:0");
        CHECK_INT(cfg->workers, 4);
        CHECK_STR(cfg->health_path, "/a;b");
        CHECK_INT(cfg->nheaders, 1);
        if (cfg->nheaders == 1)
            CHECK_STR(cfg->headers[0].value, "1; mode=block");
        px_config_free(cfg);
    }
    /* A last line without '\n', CRLF endings. */
    cfg = load_ok("[proxy]\r\nlisten_http = 127.0.0.1:0\r\nworkers = 7");
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_INT(cfg->workers, 7);
        px_config_free(cfg);
    }
    /* An indented line after a key is a key of its own, not a continuation. */
    cfg = load_ok("[proxy]\nlisten_http = 127.0.0.1:0\n    workers = 5\n");
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_INT(cfg->workers, 5);
        px_config_free(cfg);
    }
    /* Long section names are not truncated (inih keeps 49 bytes). */
    cfg = load_ok(BASE "[route /a/very/long/prefix/that/is/longer/than/fifty/bytes/for/sure/]\nlimit =\n");
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_STR(cfg->routes[0].prefix, "/a/very/long/prefix/that/is/longer/than/fifty/bytes/for/sure/");
        px_config_free(cfg);
    }
}

/* "[proxy]\n" + a line of n bytes + "\n" + "listen_http = ..." */
static const char *long_line_case(size_t n, const char *eol, int as_key)
{
    static char text[1024];
    size_t o = (size_t)snprintf(text, sizeof(text), "[proxy]\n");
    if (as_key) {
        o += (size_t)snprintf(text + o, sizeof(text) - o, "health_path = /");
        memset(text + o, 'a', n - 15);
        o += n - 15;
    } else {
        memset(text + o, ';', n);
        o += n;
    }
    snprintf(text + o, sizeof(text) - o, "%slisten_http = 127.0.0.1:0\n", eol);
    return text;
}

static void test_long_lines(void)
{
    struct px_config *cfg;

    cfg = load_ok(long_line_case(199, "\n", 0));
    CHECK_STR(errbuf, "");
    px_config_free(cfg);
    cfg = load_ok(long_line_case(199, "\r\n", 0));
    CHECK_STR(errbuf, "");
    px_config_free(cfg);
    cfg = load_ok(long_line_case(199, "\n", 1));
    CHECK_STR(errbuf, "");
    CHECK(cfg && strlen(cfg->health_path) == 185);
    px_config_free(cfg);
    CHECK_LOAD_ERR(long_line_case(200, "\n", 0), "t.ini:2: line too long (max 199 bytes)");
    CHECK_LOAD_ERR(long_line_case(200, "\n", 1), "t.ini:2: line too long (max 199 bytes)");
    CHECK_LOAD_ERR(long_line_case(500, "\n", 1), "t.ini:2: line too long (max 199 bytes)");
    {
        /* The last line, no newline. */
        char text[512] = BASE;
        size_t o = strlen(text);
        memset(text + o, ';', 250);
        text[o + 250] = '\0';
        CHECK_LOAD_ERR(text, "t.ini:3: line too long (max 199 bytes)");
    }
}

static void test_warnings(void)
{
    static const char text[] =
        BASE
        "metrics_listen = 127.0.0.1:0\n"
        "[tls]\n"
        "[limit api]\n"
        "rate = 1r/s\n"
        "[route /api/]\n"
        "limit = api\n"
        "[route /x/]\n"
        "[acme]\n";
    struct px_config *cfg;
    int before;

    before = px_log_stub_count();
    cfg = load_ok(text);
    CHECK(cfg != NULL);
    px_config_free(cfg);
    /* metrics_listen, [tls], [limit], [route] and [acme] all shipped: no warning */
    CHECK_INT(px_log_stub_count() - before, 0);
    /* A config that fails warns about nothing. */
    before = px_log_stub_count();
    CHECK_LOAD_ERR(BASE "[acme]\n[tls]\nfoo = 1\n", "t.ini:5: foo");
    CHECK_INT(px_log_stub_count() - before, 0);
    /* Empty metrics_listen = off: no warning. */
    before = px_log_stub_count();
    cfg = load_ok(BASE "metrics_listen =\n");
    CHECK(cfg != NULL && !cfg->has_metrics_listen);
    px_config_free(cfg);
    CHECK_INT(px_log_stub_count() - before, 0);
}

static void test_files(void)
{
    static const char *const files[] = {"conf/proxyd.ini", "conf/dev.ini"};
    struct px_config *cfg;
    char path[64];
    FILE *f;

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        cfg = NULL;
        errbuf[0] = '\0';
        CHECK_INT(px_config_load(files[i], &cfg, errbuf, sizeof(errbuf)), 0);
        CHECK_STR(errbuf, "");
        CHECK(cfg != NULL);
        if (cfg)
            CHECK_STR(cfg->path, files[i]);
        px_config_free(cfg);
    }

    cfg = (struct px_config *)1;
    CHECK_INT(px_config_load("/nonexistent/proxyd.ini", &cfg, errbuf, sizeof(errbuf)), -1);
    CHECK(cfg == NULL);
    CHECK_STR(errbuf, "/nonexistent/proxyd.ini: cannot open: No such file or directory");

    /* A NUL byte in a file is an error, not the end of the line. */
    snprintf(path, sizeof(path), "/tmp/px-test-config-%d.ini", (int)getpid());
    f = fopen(path, "wb");
    REQUIRE(f != NULL);
    fwrite(BASE "work\0ers = 1\n", 1, sizeof(BASE "work\0ers = 1\n") - 1, f);
    fclose(f);
    cfg = (struct px_config *)1;
    CHECK_INT(px_config_load(path, &cfg, errbuf, sizeof(errbuf)), -1);
    CHECK(cfg == NULL);
    {
        char want[128];
        snprintf(want, sizeof(want), "%s:3: NUL byte in line", path);
        CHECK_STR(errbuf, want);
    }
    unlink(path);
}

static void test_dev_config(void)
{
    struct px_config *cfg = NULL;

    CHECK_INT(px_config_load("conf/dev.ini", &cfg, errbuf, sizeof(errbuf)), 0);
    REQUIRE(cfg != NULL);
    CHECK_STR(cfg->listen_http.text, "127.0.0.1:8080");
    CHECK_INT(cfg->workers, 2);
    CHECK_STR(cfg->access_log, "-");
    CHECK(strncmp(cfg->control_socket, "/tmp/proxyd-dev/", 16) == 0);
    CHECK(strncmp(cfg->state_file, "/tmp/proxyd-dev/", 16) == 0);
    CHECK(cfg->nservices == 1 && strcmp(cfg->services[0].name, "demo") == 0);
    CHECK(cfg->nservices == 1 && strcmp(cfg->services[0].targets[0].text, "127.0.0.1:3000") == 0);
    CHECK(cfg->nservices == 1 && strcmp(cfg->services[0].health_check_path, "/up") == 0);
    px_config_free(cfg);
}

static void test_prod_config(void)
{
    struct px_config *cfg = NULL;

    CHECK_INT(px_config_load("conf/proxyd.ini", &cfg, errbuf, sizeof(errbuf)), 0);
    REQUIRE(cfg != NULL);
    CHECK_INT(cfg->has_listen_http, 1);
    CHECK_INT(cfg->has_listen_https, 1);
    CHECK_INT(cfg->redirect_https, 1);
    CHECK_STR(cfg->tls.certificate, "/etc/letsencrypt/live/example.com/fullchain.pem");
    CHECK_STR(cfg->tls.certificate_key, "/etc/letsencrypt/live/example.com/privkey.pem");
    /* both sites' policies */
    CHECK_INT(cfg->nlimits, 2);
    if (cfg->nlimits == 2) {
        CHECK_INT(cfg->limits[0].rate_milli_per_s, 10000);
        CHECK_INT(cfg->limits[0].burst, 20);
        CHECK_INT(cfg->limits[0].nodelay, 1);
        CHECK_INT(cfg->limits[1].rate_milli_per_s, 5000);
        CHECK_INT(cfg->limits[1].burst, 10);
    }
    CHECK_INT(cfg->nheader_sets, 3);
    CHECK_INT(cfg->nroutes, 5);
    if (cfg->nroutes == 5) {
        CHECK_STR(cfg->routes[1].prefix, "/api/v1/sessions/");
        CHECK(cfg->routes[1].nlimits == 1 && strcmp(cfg->routes[1].limits[0].name, "chat") == 0);
        CHECK_INT(cfg->routes[2].nsuffixes, 9);
        CHECK(cfg->routes[3].nhosts == 1 && strcmp(cfg->routes[3].hosts[0], "shop.example.com") == 0);
    }
    CHECK_INT(cfg->nservices, 2);
    CHECK(cfg->nservices >= 1 && cfg->services[0].ntargets == 1);
    CHECK(cfg->nservices >= 1 && strcmp(cfg->services[0].targets[0].text, "127.0.0.1:3000") == 0);
    px_config_free(cfg);
}

static void test_api_edges(void)
{
    struct px_config *cfg = (struct px_config *)1;

    px_config_free(NULL);
    CHECK_INT(px_config_load_string(NULL, NULL, &cfg, errbuf, sizeof(errbuf)), -1);
    CHECK(cfg == NULL);
    CHECK_STR(errbuf, "(string): no text");
    /* A NULL or tiny error buffer is fine. */
    CHECK_INT(px_config_load_string("[x]\n", "t.ini", &cfg, NULL, 0), -1);
    CHECK_INT(px_config_load_string("[x]\n", "t.ini", &cfg, errbuf, 4), -1);
    CHECK_STR(errbuf, "t.i");
}

static void test_cluster_section(void)
{
    struct px_config *cfg = load_ok(BASE "[cluster]\n[limit api]\nrate = 10r/s\nshared = yes\n");
    REQUIRE(cfg != NULL);
    CHECK(cfg->cluster.present);
    CHECK_STR(cfg->cluster.redis, "redis://127.0.0.1:6379/0");
    CHECK_STR(cfg->cluster.key_prefix, "proxyd:");
    CHECK(cfg->cluster.instance == NULL);
    CHECK(cfg->cluster.password_file == NULL);
    CHECK(cfg->cluster.secret_file == NULL);
    CHECK_INT(cfg->cluster.timeout_ms, 50);
    CHECK_INT(cfg->limits[0].shared, 1);
    px_config_free(cfg);
    cfg = load_ok(BASE "[cluster]\nredis = unix:/run/redis/redis.sock\nkey_prefix = edge:\ninstance = web-1\n"
                       "timeout = 20ms\n");
    REQUIRE(cfg != NULL);
    CHECK_STR(cfg->cluster.key_prefix, "edge:");
    CHECK_STR(cfg->cluster.instance, "web-1");
    CHECK_INT(cfg->cluster.timeout_ms, 20);
    px_config_free(cfg);
    cfg = load_ok(BASE "[limit api]\nrate = 1r/s\n");
    REQUIRE(cfg != NULL);
    CHECK(!cfg->cluster.present);
    CHECK_INT(cfg->limits[0].shared, 0);
    px_config_free(cfg);
    CHECK_LOAD_ERR(BASE "[limit api]\nrate = 1r/s\nshared = yes\n",
                   "t.ini:3: shared: [limit api] is shared but there is no [cluster] section");
    CHECK_LOAD_ERR(BASE "[cluster]\nredis = redis://h:0/0\n", "t.ini:4: redis");
    CHECK_LOAD_ERR(BASE "[cluster]\nredis = redis://user:pw@h:6379\n", "t.ini:4: redis");
    CHECK_LOAD_ERR(BASE "[cluster]\nkey_prefix = a b\n", "t.ini:4: key_prefix");
    CHECK_LOAD_ERR(BASE "[cluster]\ntimeout = 1s\n", "t.ini:4: timeout");
    /* secret_file is read at start (before the privilege drop) and by -t, not
     * by every load: a reload as the user must not need it */
    cfg = load_ok(BASE "[cluster]\nsecret_file = /nonexistent/proxyd-secret\n");
    REQUIRE(cfg != NULL);
    CHECK_STR(cfg->cluster.secret_file, "/nonexistent/proxyd-secret");
    CHECK_INT(cfg->cluster.secret_line, 4);
    px_config_free(cfg);
    CHECK_LOAD_ERR(BASE "[cluster]\n[cluster]\n", "t.ini:4:");

    struct px_redis_addr a;
    CHECK(px_parse_redis("redis://10.0.0.5:6380/3", &a) == NULL);
    CHECK_STR(a.host, "10.0.0.5");
    CHECK_INT(a.port, 6380);
    CHECK_INT(a.db, 3);
    CHECK(px_parse_redis("redis://[::1]/", &a) == NULL);
    CHECK_STR(a.host, "::1");
    CHECK_INT(a.port, 6379);
    CHECK_INT(a.db, 0);
    CHECK(px_parse_redis("redis://cache.internal", &a) == NULL);
    CHECK_STR(a.host, "cache.internal");
    CHECK(px_parse_redis("unix:/run/redis.sock", &a) == NULL);
    CHECK_STR(a.path, "/run/redis.sock");
    CHECK(px_parse_redis("unix:relative", &a) != NULL);
    CHECK(px_parse_redis("redis://h:65536", &a) != NULL);
    CHECK(px_parse_redis("redis://h/x", &a) != NULL);
    CHECK(px_parse_redis("rediss://h", &a) != NULL);
}

int main(void)
{
    UNIT_RUN(test_defaults);
    UNIT_RUN(test_every_key);
    UNIT_RUN(test_errors);
    UNIT_RUN(test_service_health_timings);
    UNIT_RUN(test_access_log_keys);
    UNIT_RUN(test_service_buffering);
    UNIT_RUN(test_service_self_target);
    UNIT_RUN(test_service_options);
    UNIT_RUN(test_durations);
    UNIT_RUN(test_sizes);
    UNIT_RUN(test_bools);
    UNIT_RUN(test_headers_section);
    UNIT_RUN(test_services_and_routes);
    UNIT_RUN(test_route_policies);
    UNIT_RUN(test_route_policy_errors);
    UNIT_RUN(test_route_warnings);
    UNIT_RUN(test_syntax_details);
    UNIT_RUN(test_long_lines);
    UNIT_RUN(test_warnings);
    UNIT_RUN(test_files);
    UNIT_RUN(test_dev_config);
    UNIT_RUN(test_prod_config);
    UNIT_RUN(test_api_edges);
    UNIT_RUN(test_cluster_section);
    return unit_report();
}
