/* acme_obtain.c -- a test tool, not part of proxyd: runs the ACME client
 * (px_acme_obtain or px_acme_renewal_info) on an event base of its own,
 * with a small HTTP server on 127.0.0.1:PORT that answers HTTP-01
 * validation from the tokens the client publishes.
 *
 *   acme-obtain --directory URL --accounts DIR --port PORT [--ca FILE]
 *               [--out DIR] [--email ADDR] [--timeout MS] [--refuse]
 *               [--cancel-after MS | --cancel-on-publish] NAME...
 *   acme-obtain --directory URL --accounts DIR [--ca FILE] --renewal-info CERT.pem
 *
 * Obtain: writes privkey.pem, cert.pem, chain.pem, fullchain.pem into
 * --out and prints "issued NOT_BEFORE NOT_AFTER" (Unix seconds); on
 * failure prints "error TYPE: DETAIL" and exits 1. --refuse answers every
 * validation request 404. --cancel-after cancels the op after MS and frees
 * the client, then prints "cancelled, N tokens left published";
 * --cancel-on-publish does so as soon as a token was published (from the
 * loop: publish itself must not cancel).
 * Renewal info: prints "renewal-info ok=0" or "renewal-info ok=1 START END".
 * Every validation request is logged on stderr ("challenge HOST TOKEN STATUS"). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "px/acme.h"

#define MAX_TOKENS 64
#define PREFIX "/.well-known/acme-challenge/"

struct token {
    char *token, *keyauth;
};

static struct {
    struct event_base *base;
    struct px_acme_client *client;
    struct px_acme_op *op;
    struct token tokens[MAX_TOKENS];
    int ntokens;
    int refuse;
    int cancel_on_publish;
    struct event *cancel;
    const char *out;
    int status; /* exit status */
} g;

static int publish(void *arg, const char *token, const char *keyauth)
{
    if (g.ntokens == MAX_TOKENS)
        return -1;
    g.tokens[g.ntokens].token = strdup(token);
    g.tokens[g.ntokens].keyauth = strdup(keyauth);
    g.ntokens++;
    fprintf(stderr, "publish %s\n", token);
    if (g.cancel_on_publish) {
        struct timeval now = {0, 0};
        evtimer_add(g.cancel, &now);
    }
    return 0;
}

static void unpublish(void *arg, const char *token)
{
    for (int i = 0; i < g.ntokens; i++)
        if (strcmp(g.tokens[i].token, token) == 0) {
            free(g.tokens[i].token);
            free(g.tokens[i].keyauth);
            g.tokens[i] = g.tokens[--g.ntokens];
            fprintf(stderr, "unpublish %s\n", token);
            return;
        }
    fprintf(stderr, "unpublish of an unknown token %s\n", token);
    g.status = 3;
}

static void on_http(struct evhttp_request *req, void *arg)
{
    const char *uri = evhttp_request_get_uri(req);
    const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    char name[256] = "";
    struct evbuffer *body = evbuffer_new();
    int code = 404;
    /* Host carries the port (NAME:PORT): the name is what is before it */
    if (host != NULL)
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(host, ":"), host);
    if (!g.refuse && strncmp(uri, PREFIX, strlen(PREFIX)) == 0) {
        const char *t = uri + strlen(PREFIX);
        for (int i = 0; i < g.ntokens; i++)
            if (strcmp(g.tokens[i].token, t) == 0) {
                evbuffer_add(body, g.tokens[i].keyauth, strlen(g.tokens[i].keyauth));
                evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
                code = 200;
                break;
            }
    }
    fprintf(stderr, "challenge %s %s %d\n", name, uri, code);
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Not Found", body);
    evbuffer_free(body);
}

static int write_out(const char *name, const char *text, int mode)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", g.out, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0)
        return -1;
    size_t n = strlen(text);
    int ok = write(fd, text, n) == (ssize_t)n;
    close(fd);
    return ok ? 0 : -1;
}

static void on_done(void *arg, const struct px_acme_cert *cert, const struct px_acme_error *err)
{
    g.op = NULL;
    if (err != NULL) {
        printf("error %s: %s\n", err->type, err->detail);
        g.status = 1;
    } else if (g.out != NULL &&
               (write_out("privkey.pem", cert->privkey_pem, 0600) < 0 ||
                write_out("cert.pem", cert->cert_pem, 0644) < 0 || write_out("chain.pem", cert->chain_pem, 0644) < 0 ||
                write_out("fullchain.pem", cert->fullchain_pem, 0644) < 0)) {
        printf("error io: %s: %s\n", g.out, strerror(errno));
        g.status = 1;
    } else {
        printf("issued %lld %lld\n", (long long)cert->not_before, (long long)cert->not_after);
    }
    /* the callback may free the client (the contract says so): do it here */
    px_acme_client_free(g.client);
    g.client = NULL;
    event_base_loopexit(g.base, NULL);
}

static void on_window(void *arg, int ok, time_t start, time_t end)
{
    g.op = NULL;
    if (ok)
        printf("renewal-info ok=1 %lld %lld\n", (long long)start, (long long)end);
    else
        printf("renewal-info ok=0\n");
    event_base_loopexit(g.base, NULL);
}

static void on_cancel(evutil_socket_t fd, short what, void *arg)
{
    px_acme_op_cancel(g.op);
    g.op = NULL;
    px_acme_client_free(g.client);
    g.client = NULL;
    printf("cancelled, %d tokens left published\n", g.ntokens);
    event_base_loopexit(g.base, NULL);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t n = 0;
    if (f == NULL)
        return NULL;
    buf = calloc(1, 1 << 20);
    if (buf != NULL)
        n = fread(buf, 1, (1 << 20) - 1, f);
    if (buf != NULL)
        buf[n] = '\0';
    fclose(f);
    return buf;
}

static void usage(void)
{
    fprintf(stderr, "usage: acme-obtain --directory URL --accounts DIR [--ca FILE] [--port PORT] [--out DIR] "
                    "[--email ADDR] [--timeout MS] [--refuse] [--cancel-after MS | --cancel-on-publish] NAME...\n"
                    "       acme-obtain --directory URL --accounts DIR [--ca FILE] --renewal-info CERT.pem\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"directory", required_argument, NULL, 'd'},    {"accounts", required_argument, NULL, 'a'},
        {"ca", required_argument, NULL, 'c'},           {"port", required_argument, NULL, 'p'},
        {"out", required_argument, NULL, 'o'},          {"email", required_argument, NULL, 'e'},
        {"timeout", required_argument, NULL, 't'},      {"refuse", no_argument, NULL, 'r'},
        {"cancel-after", required_argument, NULL, 'x'}, {"cancel-on-publish", no_argument, NULL, 'P'},
        {"renewal-info", required_argument, NULL, 'i'}, {NULL, 0, NULL, 0},
    };
    struct px_acme_client_conf conf = {0};
    const char *ari = NULL;
    int port = 0, ch;
    long cancel_after = -1;
    unsigned long long timeout = 120000;
    struct evhttp *http = NULL;
    char err[512];

    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            conf.directory = optarg;
            break;
        case 'a':
            conf.accounts_dir = optarg;
            break;
        case 'c':
            conf.ca_bundle = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'o':
            g.out = optarg;
            break;
        case 'e':
            conf.email = optarg;
            break;
        case 't':
            timeout = strtoull(optarg, NULL, 10);
            break;
        case 'r':
            g.refuse = 1;
            break;
        case 'x':
            cancel_after = atol(optarg);
            break;
        case 'P':
            g.cancel_on_publish = 1;
            break;
        case 'i':
            ari = optarg;
            break;
        default:
            usage();
        }
    }
    if (conf.directory == NULL || conf.accounts_dir == NULL || (ari == NULL && (optind >= argc || port <= 0)))
        usage();
    if (px_acme_global_init(err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    g.base = event_base_new();
    if ((g.client = px_acme_client_new(g.base, &conf, err, sizeof(err))) == NULL) {
        printf("error client: %s\n", err);
        event_base_free(g.base);
        return 1;
    }
    if (ari != NULL) {
        char *pem = read_all(ari);
        if (pem == NULL) {
            perror(ari);
            return 2;
        }
        g.op = px_acme_renewal_info(g.client, pem, on_window, NULL);
        free(pem);
    } else {
        struct px_acme_challenge_ops chops = {.publish = publish, .unpublish = unpublish};
        if ((http = evhttp_new(g.base)) == NULL || evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)port) < 0) {
            fprintf(stderr, "cannot listen on 127.0.0.1:%d\n", port);
            return 2;
        }
        evhttp_set_gencb(http, on_http, NULL);
        g.op = px_acme_obtain(g.client, (const char *const *)argv + optind, (size_t)(argc - optind), &chops, timeout,
                              on_done, NULL);
        g.cancel = evtimer_new(g.base, on_cancel, NULL);
        if (cancel_after >= 0) {
            struct timeval tv = {cancel_after / 1000, (cancel_after % 1000) * 1000};
            evtimer_add(g.cancel, &tv);
        }
    }
    if (g.op == NULL) {
        printf("error internal: out of memory\n");
        return 1;
    }
    event_base_dispatch(g.base);
    px_acme_client_free(g.client);
    if (g.cancel != NULL)
        event_free(g.cancel);
    if (http != NULL)
        evhttp_free(http);
    event_base_free(g.base);
    if (g.ntokens > 0 && g.status == 0)
        g.status = 3;
    for (int i = 0; i < g.ntokens; i++) {
        free(g.tokens[i].token);
        free(g.tokens[i].keyauth);
    }
    return g.status;
}
