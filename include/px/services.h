/* px/services.h -- the services table: one replaceable part of a route
 * snapshot (see px/routes.h).
 *
 * A table is built on the main thread, from a config's [service] sections
 * (px_config_services, px/config.h) or by the control plane (px_services_new, then
 * px_services_add for each service), sealed, and handed to the route module,
 * which publishes it. After sealing it is immutable and read lock-free by
 * workers through the snapshot that names it.
 *
 * Ownership: a table owns every string of its services (copied on add; it
 * never borrows from a config) and holds one reference on each target it
 * names (targets are shared between tables by HOST:PORT, see
 * px_target_acquire). Threading: everything here is main thread only, except
 * px_services_match and the accessors on a sealed table, which any thread may
 * call while the snapshot naming the table is pinned. */
#ifndef PX_SERVICES_H
#define PX_SERVICES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "px/addr.h"
#include "px/errors.h"
#include "px/target.h"

struct px_services;

/* The per-service options of DESIGN's [service] example and kamal-proxy's
 * deploy flags, the same struct in a [service] (px_service_conf), a deploy,
 * the state file and the table: px_service owns its strings, a spec lends
 * them. Zeroed = every default. */
struct px_svc_opts {
    char **more_prefixes;         /* path prefixes after path_prefix ("/b", no trailing '/') */
    size_t nmore_prefixes;
    int strip_path_prefix;        /* the upstream sees the path without the prefix that matched */
    int forward_headers;          /* believe the client's X-Forwarded-For/-Proto/-Host */
    int no_tls_redirect;          /* tls_redirect = no: port 80 serves its hosts */
    unsigned health_check_port;   /* 0 = the target's */
    uint64_t target_timeout_ms;   /* 0 = [proxy] upstream_read_timeout */
    char *canonical_host;         /* lowercase; NULL = none */
    char *tls_certificate, *tls_certificate_key; /* PEM paths, served by SNI for its hosts; NULL = none */
    char *error_pages;            /* a directory of STATUS.html; NULL = none */
};

/* Deep copy (dst zeroed first): 0, or -1 out of memory (dst left empty). */
int px_svc_opts_copy(struct px_svc_opts *dst, const struct px_svc_opts *src);
/* Free what a copy owns and zero it. */
void px_svc_opts_clear(struct px_svc_opts *o);
/* The checks every entry point runs (config, deploy, state file): a readable
 * error_pages directory, a certificate with its key. NULL or a message in buf. */
const char *px_svc_opts_check(const struct px_svc_opts *o, char *buf, size_t buflen);

/* One of proxyd's own 4xx/5xx pages of a service (error_pages), rendered
 * when its table is built: {{ .Status }} and {{ .Message }} filled in. */
struct px_err_page {
    int status;
    char *body;
    size_t len;
};
/* A service's buffering (DESIGN "Buffering"): the [service] keys, the
 * deploy flags and the state file all carry this one struct. Sizes in
 * bytes. */
struct px_buffering {
    int requests;             /* read the whole request body before the upstream (default yes) */
    int responses;            /* read the upstream as fast as it sends (default no) */
    uint64_t memory;          /* held in memory, then temp_dir (default 1m) */
    uint64_t max_request;     /* request body limit; 0 = [proxy] max_body_size */
    uint64_t max_response;    /* buffered response body limit; 0 = unlimited */
};
#define PX_BUFFERING_DEFAULT {.requests = 1, .responses = 0, .memory = 1u << 20}

/* A service as workers read it (immutable once its table is sealed). */
enum px_service_state { PX_SVC_ACTIVE = 0, PX_SVC_STOPPED, PX_SVC_PAUSED };

/* Headers a service logs (log_request_headers / log_response_headers):
 * each as the access log's JSON key req_NAME / resp_NAME (lowercase, '-' ->
 * '_'). At most PX_LOG_HEADERS_MAX of each; the request default is Kamal's. */
#define PX_LOG_HEADERS_MAX 16
struct px_log_header {
    const char *name;         /* as given (px_parse_check_header_name) */
    size_t name_len;
    const char *key;          /* "req_cache_control" */
    size_t key_len;
};
extern const char *const px_log_request_headers_default[3]; /* Cache-Control Last-Modified User-Agent */

struct px_service {
    char *name;
    char **hosts;
    size_t nhosts;
    char *path_prefix;        /* "/" or "/seg" without trailing '/' */
    size_t path_prefix_len;
    struct px_target **targets;
    size_t ntargets;
    char *health_check_path;
    enum px_service_state state;
    char *stop_message;       /* for PX_SVC_STOPPED */
    uint64_t max_pause_ms;    /* PX_SVC_PAUSED: requests wait this long, then 504 */
    int health_checks;        /* its targets are checked all the time (px_monitor) */
    uint64_t health_check_interval_ms, health_check_timeout_ms; /* px_monitor's timings (> 0) */
    struct px_log_header *log_headers; /* nlog_req request headers, then nlog_resp response ones */
    uint8_t nlog_req, nlog_resp;
    /* Metrics ids (px/stats.h), set by px_services_seal: the service's, and
     * one per target (parallel to targets) for the (service, target) pair. */
    uint32_t stats_id;
    uint32_t *target_stats_ids;
    struct px_svc_opts opts;
    struct timeval target_tv;      /* opts.target_timeout_ms as a timeval (when set) */
    struct px_err_page *pages;     /* opts.error_pages, loaded and rendered; sorted by status */
    size_t npages;
    struct px_buffering buffering;
};

/* Its page for status, or NULL (any thread, sealed table). */
const struct px_err_page *px_service_page(const struct px_service *s, int status);
/* The length of the path_prefix of s that path matches ("/" counts 0), or
 * -1 when none does (segment boundary as px_services_match). */
int px_service_prefix_match(const struct px_service *s, const char *path, size_t path_len);

/* What a caller gives to add one service. Every pointer is borrowed for the
 * call only. */
struct px_service_spec {
    const char *name;                /* required, unique in the table */
    const char *const *hosts;        /* "*.example.com" allowed; case-insensitive; nhosts 0 = any host */
    size_t nhosts;
    const char *path_prefix;         /* NULL = "/"; must start with '/'; a trailing '/' is ignored */
    const struct px_addr *targets;   /* resolved HOST:PORT */
    size_t ntargets;
    const char *health_check_path;   /* NULL = "/up" */
    enum px_service_state state;
    const char *stop_message;        /* PX_SVC_STOPPED: the 503 page text; NULL = none */
    uint64_t max_pause_ms;           /* PX_SVC_PAUSED: how long requests wait before 504 */
    int health_checks;               /* check the targets all the time (px_monitor) */
    uint64_t health_check_interval_ms;  /* 0 = 1 s */
    uint64_t health_check_timeout_ms;   /* 0 = 5 s */
    const char *const *log_request_headers;  /* logged as req_NAME; none when 0 (callers pass */
    size_t nlog_request_headers;             /* px_log_request_headers_default for the default) */
    const char *const *log_response_headers; /* logged as resp_NAME */
    size_t nlog_response_headers;
    struct px_svc_opts opts;            /* borrowed; error_pages is read here (a page that cannot be
                                           read is logged and left out: px_svc_opts_check first) */
    struct px_buffering buffering;      /* copied as given (all zero: none) */
};

/* The part of a service that two services must not share: the service
 * conflict rule's input. Borrowed pointers. */
struct px_service_claim {
    const char *name;
    const char *const *hosts;        /* nhosts 0 = any host */
    size_t nhosts;
    const char *path_prefix;         /* NULL = "/"; a trailing '/' is ignored */
    char *const *more_prefixes;      /* and these (px_svc_opts) */
    size_t nmore_prefixes;
};

/* THE service conflict rule, called by the config loader and by the control
 * plane (and by px_services_add): two services conflict when their
 * path_prefix is the same and either both take any host or they name a
 * common host (case-insensitive, wildcards compared as written). Returns NULL,
 * or buf holding "conflicts with service B (host H, prefix P)" (a's name is
 * the caller's to add). A service never conflicts with a claim of its own
 * name (a deploy replaces it). */
const char *px_service_conflict(const struct px_service_claim *a, const struct px_service_claim *b, char *buf,
                                size_t buflen);

/* The rule against a target that is proxyd itself (a --target typo that
 * would loop every request back into proxyd): target equals one of the n
 * listen addresses, or has its port while that listener takes any address
 * (0.0.0.0:P, [::]:P) and target is a local address (loopback, an address of
 * this host's interfaces, or unspecified). A listen address with port 0 is
 * skipped (not bound yet). Returns NULL, or buf holding "is proxyd's own
 * listen address L". Main thread (it may list the interfaces). */
const char *px_service_self_target(const struct px_addr *target, const struct px_addr *listens, size_t n, char *buf,
                                   size_t buflen);

/* The claim of an existing service. */
struct px_service_claim px_service_claim_of(const struct px_service *s);

/* An empty, unsealed table. NULL when out of memory. */
struct px_services *px_services_new(void);
/* Add a service: validates the spec (name, path_prefix, hosts), runs the
 * conflict rule against every service already in the table, copies every
 * string and acquires the targets. PX_E_OK, or with a message in err and
 * nothing added: PX_E_CONFLICT (the conflict rule), PX_E_BAD_REQUEST (a bad
 * spec, a name given twice), PX_E_INTERNAL (out of memory, a sealed table). */
enum px_err px_services_add(struct px_services *t, const struct px_service_spec *spec, char *err, size_t errlen);
/* Add a copy of an existing service (of another table): same strings, same
 * target objects. Same errors as px_services_add. */
enum px_err px_services_add_copy(struct px_services *t, const struct px_service *s, char *err, size_t errlen);
/* Build the host index and assign the metrics ids (px_stats_service_id,
 * px_stats_target_id: the same names keep their ids, so counters survive
 * reloads and deploys); afterwards the table is immutable. Idempotent.
 * 0, or -1 out of memory or out of metrics ids (the table stays unsealed
 * and may be freed). */
int px_services_seal(struct px_services *t, char *err, size_t errlen);
/* Free a table nobody publishes (NULL is fine): releases its targets.
 * Tables handed to the route module are freed by it. */
void px_services_free(struct px_services *t);

size_t px_services_count(const struct px_services *t);
/* The i-th service in insertion order (i < count). */
const struct px_service *px_services_at(const struct px_services *t, size_t i);
/* By name; NULL when absent. */
const struct px_service *px_services_find(const struct px_services *t, const char *name);

/* The service for a request (sealed table, any thread): host (as sent:
 * case-insensitive, ":port" and a trailing dot ignored; NULL/empty = no host)
 * by exact name, then the longest "*.suffix", then catch-all; within each,
 * the longest path_prefix on a segment boundary. NULL when nothing matches. */
const struct px_service *px_services_match(const struct px_services *t, const char *host, size_t host_len,
                                           const char *path, size_t path_len);
/* Whether a service names host (exactly or by "*.suffix"; host as sent,
 * normalized as px_services_match does). Any thread, sealed table. */
int px_services_names_host(const struct px_services *t, const char *host, size_t host_len);
/* The service named name when path is under its path_prefix (the default
 * service of a request no host matched), else NULL. Any thread, sealed table. */
const struct px_service *px_services_match_named(const struct px_services *t, const char *name, const char *path,
                                                 size_t path_len);

#endif
