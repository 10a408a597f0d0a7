/* px/config.h -- the parsed, validated, immutable configuration.
 *
 * px_config_load() reads an INI file (inih), applies defaults, validates
 * every key against a declarative table and returns a complete config or
 * nothing. A config is never modified after load; a reload builds a new one
 * and swaps it in (the old one stays valid for whoever still holds it).
 * Durations are milliseconds, sizes bytes. Strings are owned by the config. */
#ifndef PX_CONFIG_H
#define PX_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "px/addr.h"
#include "px/errors.h"
#include "px/parse.h" /* the value parsers the loader uses (durations, sizes, rates) */
#include "px/services.h" /* struct px_svc_opts, struct px_buffering */

struct px_services;

struct px_service_conf {
    char *name;
    char **hosts;            /* lowercase; "*.example.com" wildcards allowed; empty = any host */
    size_t nhosts;
    char *path_prefix;       /* default "/" */
    struct px_addr *targets; /* at least one */
    size_t ntargets;
    char *health_check_path; /* default "/up" */
    int health_checks;       /* health_check_path was given: check the targets all the time */
    uint64_t health_check_interval_ms; /* default 1s */
    uint64_t health_check_timeout_ms;  /* default 5s */
    char **log_request_headers;        /* default Cache-Control Last-Modified User-Agent */
    size_t nlog_request_headers;
    char **log_response_headers;       /* default none */
    size_t nlog_response_headers;
    struct px_svc_opts opts;           /* the other per-service keys (px/services.h) */
    struct px_buffering buffering;     /* buffer_requests, buffer_responses, buffer_memory, max_*_body */
    int line;
    int targets_line;
};

/* A [route] key naming another section, and the line it was written on. */
struct px_name_ref {
    char *name;
    int line;
};

struct px_route_conf {
    char *prefix;            /* from "[route PREFIX]", as written ("/api/") */
    size_t prefix_len;       /* what is matched: prefix without its trailing '/' ("/api"); "/" is 1 */
    char **hosts;            /* lowercase, unique; "*.example.com" allowed; none = any host */
    size_t nhosts;
    char **suffixes;         /* lowercase file extensions (".js"); none = any path */
    size_t nsuffixes;
    struct px_name_ref *limits;      /* [limit NAME] zones, in the order given */
    size_t nlimits;
    struct px_name_ref *header_sets; /* [headers NAME] sets, in the order given */
    size_t nheader_sets;
    struct px_name_ref *request_header_sets; /* request_headers = : sets applied to the request sent
                                              * upstream (nginx proxy_set_header), in the order given */
    size_t nrequest_header_sets;
    int access_log;          /* default 1; 0: its requests are not logged */
    int line;
};

struct px_limit_conf {
    char *name;
    uint64_t rate_milli_per_s; /* "10r/s" -> 10000, "30r/m" -> 500 */
    uint32_t burst;
    int nodelay;               /* default 1; 0 when `delay` is given */
    uint32_t delay;            /* nginx delay=N: the first N excess requests pass at once
                                * (only when !nodelay); default 0 */
    int status;                /* 429 (default) or 503 */
    uint64_t zone_size;        /* default 10m */
    int shared;                /* [cluster]: the zone's state lives in Redis (default no) */
    int line;
};

struct px_header_conf {
    char *name;              /* without the '-' of a removal */
    char *value;             /* "" for a removal */
    int remove;              /* "-NAME =": the header is removed (from the upstream's response, or
                              * from the client's request in a request_headers set), never added */
};

/* A [headers NAME] section: added to the responses of the routes naming it
 * (headers =), or applied to their requests sent upstream (request_headers =). */
struct px_header_set_conf {
    char *name;
    struct px_header_conf *headers;
    size_t nheaders;
    int line;
};

struct px_sni_conf {
    char *name;              /* server name (lowercase) */
    char *cert;              /* full chain PEM path */
    char *key;               /* key PEM path */
    int line;                /* its sni = line in file (0: not from the config, e.g. an ACME lineage) */
};

struct px_tls_conf {
    int present;             /* a [tls] section was given */
    char *certificate, *certificate_key;
    const char *file;        /* the config's path (px_config.path, borrowed) and the lines of */
    int certificate_line, certificate_key_line; /* the keys: errors loading the files say FILE:LINE */
    struct px_sni_conf *sni;
    size_t nsni;
    int proto_min, proto_max; /* TLS1_2_VERSION / TLS1_3_VERSION values (0x0303, 0x0304) */
    char *ciphers;
    uint64_t session_timeout_ms;
    int session_tickets;
    char *alpn;              /* "h2 http/1.1" */
};

struct px_acme_conf {
    int present;
    int enabled;
    char *directory, *email;
    char **domains;
    size_t ndomains;
    char *config_dir;
    uint64_t renew_before_ms, check_interval_ms;
    char *ca_bundle;         /* NULL = system default */
    uint64_t retry_interval_ms; /* the first retry after a failed renewal (doubles up to check_interval) */
    uint64_t hook_timeout_ms;   /* per renewal hook, then SIGTERM, then SIGKILL */
    int storage_redis;          /* storage = redis: lineages, account, locks in [cluster]'s Redis */
    int storage_line;
    uint64_t lock_timeout_ms;   /* storage = redis: the order lock's TTL (extended while it runs) */
};

/* [cluster]: several proxyd sharing limit zones through Redis (px/cluster.h). */
struct px_cluster_conf {
    int present;
    int line;                /* of the section */
    char *redis;             /* "redis://HOST:PORT/DB" or "unix:PATH" (validated) */
    char *password_file;     /* NULL: no AUTH */
    char *key_prefix;        /* default "proxyd:" */
    char *instance;          /* NULL: the hostname */
    uint64_t timeout_ms;     /* default 50ms */
    char *secret_file;       /* NULL: none; else at least 32 bytes (checked at load) */
    int secret_line;
};

struct px_config {
    char *path;              /* the file it was loaded from */

    /* [proxy] */
    int workers;             /* resolved: "auto" -> online CPUs (>= 1) */
    int has_listen_http, has_listen_https;
    struct px_addr listen_http, listen_https;
    int redirect_https;      /* default 1 */
    char *health_path;       /* default "/health"; "" disables */
    char *control_socket;    /* default /run/proxyd/control.sock */
    unsigned control_socket_mode; /* default 0660 */
    char *state_file;        /* default /var/lib/proxyd/state.json */
    char *access_log;        /* default "-" */
    int access_log_format;   /* enum px_access_format (px/accesslog.h): json (default) or combined */
    int health_log;          /* default 1; 0: health_path requests are not logged */
    char *error_log;         /* default "-" */
    char *user;              /* NULL = do not drop privileges */
    char *pid_file;          /* NULL = none; written before the drop, removed at exit (logrotate's postrotate) */
    uint32_t max_connections;      /* default 10000 (per process) */
    uint64_t client_header_timeout_ms;   /* 10s */
    uint64_t client_body_timeout_ms;     /* 60s */
    uint64_t keepalive_timeout_ms;       /* 75s */
    uint64_t max_header_size;            /* 16k */
    uint64_t max_body_size;              /* 100m; 0 = unlimited */
    char *temp_dir;                      /* /var/lib/proxyd/tmp: buffered bodies past buffer_memory */
    uint64_t upstream_connect_timeout_ms;/* 5s */
    uint64_t upstream_send_timeout_ms;   /* 60s */
    uint64_t upstream_read_timeout_ms;   /* 60s */
    uint32_t upstream_keepalive;         /* 256: idle upstream connections kept per worker (all
                                          * targets together); 0 = none kept */
    uint64_t shutdown_timeout_ms;        /* 30s */
    struct px_cidr *trusted_proxies;
    size_t ntrusted_proxies;
    int has_metrics_listen;
    struct px_addr metrics_listen;
    char *default_service;   /* NULL = none; a [service] name: the service of a request whose Host no
                              * service names (nginx's default server) */

    struct px_tls_conf tls;

    int has_headers_section;  /* without it, the four defaults below apply */
    struct px_header_conf *headers; /* resolved list (defaults filled in when no section) */
    size_t nheaders;

    struct px_header_set_conf *header_sets; /* [headers NAME] */
    size_t nheader_sets;

    struct px_limit_conf *limits;
    size_t nlimits;
    struct px_route_conf *routes;
    size_t nroutes;
    struct px_service_conf *services;
    size_t nservices;

    struct px_acme_conf acme;
    struct px_cluster_conf cluster;
};

/* Load and validate PATH. On success returns 0 and *out (free with
 * px_config_free). On failure returns -1 and writes "FILE:LINE: key: message"
 * (or "FILE: message" when no line applies) into err. Warnings (keys that are
 * accepted but not yet acted on) go to px_log_warn. */
int px_config_load(const char *path, struct px_config **out, char *err, size_t errlen);

/* Parse from memory (same rules; `name` is used in messages). For tests and fuzzing. */
int px_config_load_string(const char *text, const char *name, struct px_config **out,
                          char *err, size_t errlen);

void px_config_free(struct px_config *cfg);

/* ---- the [service] sections as a services table (px/services.h) ---- */

/* Add one [service] section to t (same errors as px_services_add). */
enum px_err px_config_add_service(struct px_services *t, const struct px_service_conf *sc, char *err,
                                  size_t errlen);
/* The [service] sections of cfg as a sealed table (cfg is only read; the
 * table owns copies). NULL with a message in err. Main thread. */
struct px_services *px_config_services(const struct px_config *cfg, char *err, size_t errlen);

#endif
