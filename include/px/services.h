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

#include "px/addr.h"
#include "px/errors.h"
#include "px/target.h"

struct px_services;

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
    struct px_buffering buffering;
};

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
    struct px_buffering buffering;      /* copied as given (all zero: none) */
};

/* The part of a service that two services must not share: the service
 * conflict rule's input. Borrowed pointers. */
struct px_service_claim {
    const char *name;
    const char *const *hosts;        /* nhosts 0 = any host */
    size_t nhosts;
    const char *path_prefix;         /* NULL = "/"; a trailing '/' is ignored */
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
/* Build the host index; afterwards the table is immutable. Idempotent.
 * 0, or -1 out of memory (the table stays unsealed and may be freed). */
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

#endif
