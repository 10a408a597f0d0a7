/* state.c -- the deployed services on disk: JSON (jansson), written
 * temp + fsync + rename + fsync(dir); loaded entry by entry, a bad entry
 * skipped and logged, never the whole table. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "px/common.h"
#include "px/log.h"
#include "px/state.h"

#define STATE_VERSION 1

static const char *const state_names[] = {"active", "stopped", "paused"};

/* ---- memory ---- */

void px_state_service_clear(struct px_state_service *s)
{
    free(s->name);
    px_strv_free(s->hosts, s->nhosts);
    free(s->path_prefix);
    px_strv_free(s->active, s->nactive);
    px_strv_free(s->previous, s->nprevious);
    free(s->health_check_path);
    free(s->stop_message);
    px_strv_free(s->log_request_headers, s->nlog_request_headers);
    px_strv_free(s->log_response_headers, s->nlog_response_headers);
    px_svc_opts_clear(&s->opts);
    memset(s, 0, sizeof(*s));
}

/* log_request_headers / log_response_headers: NULL stays NULL (the default). */
static int log_headers_copy(char ***dst, size_t *ndst, char *const *src, size_t n)
{
    if (src == NULL)
        return 0;
    if ((*dst = px_strv_dup((const char *const *)src, n)) == NULL)
        return -1;
    *ndst = n;
    return 0;
}

int px_state_service_copy(struct px_state_service *dst, const struct px_state_service *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->state = src->state;
    dst->max_pause_ms = src->max_pause_ms;
    dst->tls = src->tls;
    dst->interval_ms = src->interval_ms;
    dst->timeout_ms = src->timeout_ms;
    dst->deploy_timeout_ms = src->deploy_timeout_ms;
    dst->buffering = src->buffering;
    dst->nhosts = src->nhosts;
    dst->nactive = src->nactive;
    dst->nprevious = src->nprevious;
    if ((dst->name = strdup(src->name)) == NULL ||
        (dst->path_prefix = strdup(src->path_prefix ? src->path_prefix : "/")) == NULL ||
        (dst->health_check_path = strdup(src->health_check_path ? src->health_check_path : "/up")) == NULL ||
        (src->stop_message && (dst->stop_message = strdup(src->stop_message)) == NULL) ||
        (dst->hosts = px_strv_dup((const char *const *)src->hosts, src->nhosts)) == NULL ||
        (dst->active = px_strv_dup((const char *const *)src->active, src->nactive)) == NULL ||
        (dst->previous = px_strv_dup((const char *const *)src->previous, src->nprevious)) == NULL ||
        log_headers_copy(&dst->log_request_headers, &dst->nlog_request_headers, src->log_request_headers,
                         src->nlog_request_headers) < 0 ||
        log_headers_copy(&dst->log_response_headers, &dst->nlog_response_headers, src->log_response_headers,
                         src->nlog_response_headers) < 0 ||
        px_svc_opts_copy(&dst->opts, &src->opts) < 0) {
        if (dst->hosts == NULL)
            dst->nhosts = 0;
        if (dst->active == NULL)
            dst->nactive = 0;
        if (dst->previous == NULL)
            dst->nprevious = 0;
        px_state_service_clear(dst);
        return -1;
    }
    return 0;
}

void px_state_free(struct px_state *st)
{
    for (size_t i = 0; i < st->nservices; i++)
        px_state_service_clear(&st->services[i]);
    free(st->services);
    st->services = NULL;
    st->nservices = 0;
}

/* ---- save ---- */

static json_t *strv_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

void px_state_opts_json(json_t *o, const struct px_svc_opts *p)
{
    if (p->strip_path_prefix)
        json_object_set_new(o, "strip_path_prefix", json_true());
    if (p->forward_headers)
        json_object_set_new(o, "forward_headers", json_true());
    if (p->no_tls_redirect)
        json_object_set_new(o, "tls_redirect", json_false());
    if (p->health_check_port)
        json_object_set_new(o, "health_check_port", json_integer(p->health_check_port));
    if (p->target_timeout_ms)
        json_object_set_new(o, "target_timeout_ms", json_integer((json_int_t)p->target_timeout_ms));
    const char *const strs[] = {p->canonical_host, p->tls_certificate, p->tls_certificate_key, p->error_pages};
    static const char *const names[] = {"canonical_host", "tls_certificate_path", "tls_private_key_path",
                                        "error_pages"};
    for (size_t i = 0; i < PX_ARRAY_LEN(strs); i++)
        if (strs[i])
            json_object_set_new(o, names[i], json_string(strs[i]));
}

static const char *opts_from(json_t *o, struct px_svc_opts *p)
{
    p->strip_path_prefix = json_is_true(json_object_get(o, "strip_path_prefix"));
    p->forward_headers = json_is_true(json_object_get(o, "forward_headers"));
    p->no_tls_redirect = json_is_false(json_object_get(o, "tls_redirect"));
    json_t *port = json_object_get(o, "health_check_port"), *tt = json_object_get(o, "target_timeout_ms");
    if (port && (!json_is_integer(port) || json_integer_value(port) < 1 || json_integer_value(port) > 65535))
        return "health_check_port is not a port";
    if (tt && (!json_is_integer(tt) || json_integer_value(tt) < 1 || json_integer_value(tt) > 86400000))
        return "target_timeout_ms is not a duration (1..86400000 ms)";
    p->health_check_port = port ? (unsigned)json_integer_value(port) : 0;
    p->target_timeout_ms = tt ? (uint64_t)json_integer_value(tt) : 0;
    char **strs[] = {&p->canonical_host, &p->tls_certificate, &p->tls_certificate_key, &p->error_pages};
    static const char *const names[] = {"canonical_host", "tls_certificate_path", "tls_private_key_path",
                                        "error_pages"};
    for (size_t i = 0; i < PX_ARRAY_LEN(strs); i++) {
        json_t *v = json_object_get(o, names[i]);
        if (v && (!json_is_string(v) || json_string_length(v) == 0))
            return "canonical_host, tls_certificate_path, tls_private_key_path and error_pages must be strings";
        if (v && (*strs[i] = strdup(json_string_value(v))) == NULL)
            return "out of memory";
    }
    return NULL;
}

static json_t *service_json(const struct px_state_service *s)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "name", json_string(s->name));
    json_object_set_new(o, "hosts", strv_json(s->hosts, s->nhosts));
    json_t *pp = json_string(s->path_prefix ? s->path_prefix : "/");
    if (s->opts.nmore_prefixes) { /* several: one list, the first first */
        json_t *all = strv_json(s->opts.more_prefixes, s->opts.nmore_prefixes);
        json_array_insert_new(all, 0, pp);
        pp = all;
    }
    json_object_set_new(o, "path_prefix", pp);
    json_object_set_new(o, "active", strv_json(s->active, s->nactive));
    json_object_set_new(o, "previous", strv_json(s->previous, s->nprevious));
    json_object_set_new(o, "health_check_path", json_string(s->health_check_path ? s->health_check_path : "/up"));
    json_object_set_new(o, "state", json_string(state_names[s->state]));
    if (s->stop_message)
        json_object_set_new(o, "stop_message", json_string(s->stop_message));
    if (s->state == PX_STATE_PAUSED)
        json_object_set_new(o, "max_pause_ms", json_integer((json_int_t)s->max_pause_ms));
    if (s->tls)
        json_object_set_new(o, "tls", json_true());
    if (s->interval_ms)
        json_object_set_new(o, "health_check_interval_ms", json_integer((json_int_t)s->interval_ms));
    if (s->timeout_ms)
        json_object_set_new(o, "health_check_timeout_ms", json_integer((json_int_t)s->timeout_ms));
    if (s->deploy_timeout_ms)
        json_object_set_new(o, "deploy_timeout_ms", json_integer((json_int_t)s->deploy_timeout_ms));
    if (s->log_request_headers)
        json_object_set_new(o, "log_request_headers", strv_json(s->log_request_headers, s->nlog_request_headers));
    if (s->log_response_headers)
        json_object_set_new(o, "log_response_headers", strv_json(s->log_response_headers, s->nlog_response_headers));
    px_state_opts_json(o, &s->opts);
    const struct px_buffering *b = &s->buffering;
    json_object_set_new(o, "buffering", json_pack("{s:b, s:b, s:I, s:I, s:I}", "requests", b->requests,
                                                  "responses", b->responses, "memory", (json_int_t)b->memory,
                                                  "max_request_body", (json_int_t)b->max_request,
                                                  "max_response_body", (json_int_t)b->max_response));
    return o;
}

static int fsync_dir(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int px_state_save(const char *path, const struct px_state *st, char *err, size_t errlen)
{
    json_t *root = json_object(), *arr = json_array();
    char *text = NULL, *tmp = NULL;
    int fd = -1, rc = -1;
    if (root == NULL || arr == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    json_object_set_new(root, "version", json_integer(STATE_VERSION));
    for (size_t i = 0; i < st->nservices; i++)
        json_array_append_new(arr, service_json(&st->services[i]));
    json_object_set(root, "services", arr);
    text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    size_t tlen = strlen(path) + 16;
    tmp = malloc(tlen);
    if (text == NULL || tmp == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    snprintf(tmp, tlen, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
            goto out;
        }
        off += (size_t)n;
    }
    if (write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) < 0) {
        snprintf(err, errlen, "rename %s: %s", path, strerror(errno));
        goto out;
    }
    if (fsync_dir(path) < 0) {
        snprintf(err, errlen, "fsync of %s's directory: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(tmp);
    free(text);
    json_decref(arr);
    json_decref(root);
    return rc;
}

/* ---- load ---- */

static int strv_from(json_t *a, char ***out, size_t *n, int allow_empty)
{
    *out = NULL;
    *n = 0;
    if (a == NULL)
        return allow_empty ? ((*out = calloc(1, sizeof(char *))) ? 0 : -1) : -1;
    if (!json_is_array(a))
        return -1;
    size_t k = json_array_size(a);
    if (k == 0 && !allow_empty)
        return -1;
    char **v = calloc(k ? k : 1, sizeof(*v));
    if (v == NULL)
        return -1;
    for (size_t i = 0; i < k; i++) {
        json_t *e = json_array_get(a, i);
        if (!json_is_string(e) || (v[i] = strdup(json_string_value(e))) == NULL) {
            px_strv_free(v, i);
            return -1;
        }
    }
    *out = v;
    *n = k;
    return 0;
}

/* One entry: NULL when it is usable, else why not. */
static const char *service_from(json_t *o, struct px_state_service *s)
{
    memset(s, 0, sizeof(*s));
    if (!json_is_object(o))
        return "not an object";
    json_t *name = json_object_get(o, "name");
    if (!json_is_string(name) || json_string_length(name) == 0)
        return "no name";
    if ((s->name = strdup(json_string_value(name))) == NULL)
        return "out of memory";
    if (strv_from(json_object_get(o, "hosts"), &s->hosts, &s->nhosts, 1) < 0)
        return "hosts is not a list of strings";
    if (strv_from(json_object_get(o, "active"), &s->active, &s->nactive, 0) < 0)
        return "active is not a non-empty list of targets";
    if (strv_from(json_object_get(o, "previous"), &s->previous, &s->nprevious, 1) < 0)
        return "previous is not a list of targets";
    json_t *pp = json_object_get(o, "path_prefix"), *hc = json_object_get(o, "health_check_path");
    if (json_is_array(pp)) { /* several prefixes */
        if (strv_from(pp, &s->opts.more_prefixes, &s->opts.nmore_prefixes, 0) < 0)
            return "path_prefix is not a non-empty list of strings";
        s->path_prefix = s->opts.more_prefixes[0];
        memmove(s->opts.more_prefixes, s->opts.more_prefixes + 1, --s->opts.nmore_prefixes * sizeof(char *));
        for (size_t i = 0; i < s->opts.nmore_prefixes; i++)
            if (s->opts.more_prefixes[i][0] != '/')
                return "path_prefix and health_check_path must start with /";
        pp = NULL;
    } else if (pp && !json_is_string(pp)) {
        return "path_prefix and health_check_path must be strings";
    } else {
        s->path_prefix = strdup(pp ? json_string_value(pp) : "/");
    }
    if (hc && !json_is_string(hc))
        return "path_prefix and health_check_path must be strings";
    s->health_check_path = strdup(hc ? json_string_value(hc) : "/up");
    if (s->path_prefix == NULL || s->health_check_path == NULL)
        return "out of memory";
    if (s->path_prefix[0] != '/' || s->health_check_path[0] != '/')
        return "path_prefix and health_check_path must start with /";
    json_t *st = json_object_get(o, "state");
    s->state = PX_STATE_ACTIVE;
    if (st) {
        const char *v = json_is_string(st) ? json_string_value(st) : "";
        size_t i = 0;
        while (i < sizeof(state_names) / sizeof(state_names[0]) && strcmp(v, state_names[i]) != 0)
            i++;
        if (i == sizeof(state_names) / sizeof(state_names[0]))
            return "state is not active, stopped or paused";
        s->state = (enum px_state_svc)i;
    }
    json_t *msg = json_object_get(o, "stop_message");
    if (msg && json_is_string(msg) && (s->stop_message = strdup(json_string_value(msg))) == NULL)
        return "out of memory";
    json_t *mp = json_object_get(o, "max_pause_ms");
    if (mp && (!json_is_integer(mp) || json_integer_value(mp) < 0))
        return "max_pause_ms is not a duration";
    s->max_pause_ms = mp ? (uint64_t)json_integer_value(mp) : 30000;
    s->tls = json_is_true(json_object_get(o, "tls"));
    /* absent in files written before they were kept: the defaults */
    static const char *const timings[] = {"health_check_interval_ms", "health_check_timeout_ms", "deploy_timeout_ms"};
    uint64_t *fields[] = {&s->interval_ms, &s->timeout_ms, &s->deploy_timeout_ms};
    for (size_t i = 0; i < PX_ARRAY_LEN(timings); i++) {
        json_t *v = json_object_get(o, timings[i]);
        if (v && (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 86400000))
            return "health_check_interval_ms, health_check_timeout_ms and deploy_timeout_ms must be durations "
                   "(1..86400000 ms)";
        *fields[i] = v ? (uint64_t)json_integer_value(v) : 0;
    }
    /* absent: the defaults (NULL); the names are checked when the service is built */
    json_t *lq = json_object_get(o, "log_request_headers"), *lr = json_object_get(o, "log_response_headers");
    if ((lq && strv_from(lq, &s->log_request_headers, &s->nlog_request_headers, 1) < 0) ||
        (lr && strv_from(lr, &s->log_response_headers, &s->nlog_response_headers, 1) < 0))
        return "log_request_headers and log_response_headers must be lists of header names";
    s->buffering = (struct px_buffering)PX_BUFFERING_DEFAULT;
    json_t *b = json_object_get(o, "buffering");
    if (b) {
        int rq = s->buffering.requests, rs = s->buffering.responses;
        json_int_t mem = (json_int_t)s->buffering.memory, mq = 0, ms = 0;
        if (json_unpack(b, "{s?b, s?b, s?I, s?I, s?I}", "requests", &rq, "responses", &rs, "memory", &mem,
                        "max_request_body", &mq, "max_response_body", &ms) != 0 ||
            mem < 0 || mq < 0 || ms < 0)
            return "buffering must be {requests, responses: booleans; memory, max_request_body, "
                   "max_response_body: bytes}";
        s->buffering = (struct px_buffering){rq, rs, (uint64_t)mem, (uint64_t)mq, (uint64_t)ms};
    }
    return opts_from(o, &s->opts);
}

int px_state_load(const char *path, struct px_state *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (root == NULL) {
        if (access(path, F_OK) < 0 && errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s:%d: %s", path, je.line, je.text);
        return -1;
    }
    json_t *arr = json_object_get(root, "services");
    if (!json_is_array(arr)) {
        snprintf(err, errlen, "%s: no \"services\" list", path);
        json_decref(root);
        return -1;
    }
    size_t n = json_array_size(arr);
    st->services = calloc(n ? n : 1, sizeof(*st->services));
    if (st->services == NULL) {
        snprintf(err, errlen, "out of memory");
        json_decref(root);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct px_state_service *s = &st->services[st->nservices];
        const char *why = service_from(json_array_get(arr, i), s);
        if (why == NULL) {
            for (size_t j = 0; j < st->nservices && why == NULL; j++)
                if (strcmp(st->services[j].name, s->name) == 0)
                    why = "a second entry with this name";
        }
        if (why) {
            px_log_warn("%s: service entry %zu (%s) skipped: %s", path, i,
                        s->name ? s->name : "?", why);
            px_state_service_clear(s);
            continue;
        }
        st->nservices++;
    }
    json_decref(root);
    return 0;
}

int px_state_set_aside(const char *path, char *aside, size_t asidelen, char *err, size_t errlen)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    /* link + unlink, not rename: link never replaces an existing name */
    for (int i = 1; i <= 1000; i++) {
        int n = i == 1 ? snprintf(aside, asidelen, "%s.unreadable-%s", path, stamp)
                       : snprintf(aside, asidelen, "%s.unreadable-%s-%d", path, stamp, i);
        if (n < 0 || (size_t)n >= asidelen) {
            snprintf(err, errlen, "%s: path too long", path);
            return -1;
        }
        if (link(path, aside) == 0) {
            if (unlink(path) < 0) {
                snprintf(err, errlen, "unlink %s: %s", path, strerror(errno));
                unlink(aside);
                return -1;
            }
            fsync_dir(path);
            return 0;
        }
        if (errno != EEXIST) {
            snprintf(err, errlen, "link %s to %s: %s", path, aside, strerror(errno));
            return -1;
        }
    }
    snprintf(err, errlen, "%s: too many files set aside already", path);
    return -1;
}
