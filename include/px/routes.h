/* px/routes.h -- the immutable route snapshot and the blue-green swap.
 *
 * A snapshot holds everything a request needs to be served, in three parts
 * that are replaced independently: the config in force with the policies
 * made from it (timeouts, headers, the [route] table and its rate-limit
 * zones), the TLS contexts (px/tls.h) and the services table with its
 * targets (px/services.h). A part is shared by consecutive snapshots
 * (refcounted by the snapshots naming it, main thread only) and freed with
 * the last one: a deploy publishes a new services table and keeps the very
 * same config and TLS parts; a certificate reload replaces only the TLS
 * part. A snapshot is built off the data path (main/control thread),
 * published with one atomic pointer store, and never changed afterwards.
 *
 * Lifetime (no atomic read-modify-write on the data path):
 *  - A worker adopts the current snapshot with px_routes_current(); it
 *    announces the pointer in its hazard slot before using it.
 *  - Each request pins the snapshot it started with (px_routes_pin/unpin):
 *    a per-worker counter only that worker writes.
 *  - A replaced snapshot is retired; px_routes_reap() (main thread) frees it
 *    once no worker's hazard slot points at it and every per-worker pin
 *    count is zero. So an old snapshot dies when its last request ends.
 *
 * Targets (px/target.h) are shared between services tables (the same
 * HOST:PORT is the same target object) and are freed with the last holder.
 * This module is the snapshot only: it names the config, TLS and services
 * modules and none of them names it. */
#ifndef PX_ROUTES_H
#define PX_ROUTES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "px/services.h" /* struct px_service, what px_routes_match returns */

struct px_carry;
struct px_config;
struct px_tls;
struct px_services;
struct px_limits;
struct px_limit_zone;
struct px_hdr_add;

struct px_routes;

/* ---- building and publishing (main thread only) ---- */

enum px_routes_part { PX_PART_CONFIG, PX_PART_TLS, PX_PART_SERVICES, PX_PART_COUNT };

/* An unpublished snapshot of three new parts: cfg (required), tls (NULL
 * without listen_https), svcs (required; sealed here). Takes ownership of all
 * three, even on failure (NULL with a message in err). The config part also
 * gets cfg's [route] table and its rate-limit zones, made here: zones that
 * keep their name and zone_size carry their state over from the carry's
 * zone set (px/carry.h, px_limits_build). carry: the carry-over object
 * (NULL: nothing carried over, and nothing recorded); publishing the
 * snapshot makes the carry hold its zones and TLS session context (and so
 * do the snapshots px_routes_publish_services/_tls derive from it).
 * Nothing is published here: a caller can build everything that can fail
 * first, then publish (an unpublished snapshot that is dropped leaves the
 * carry and the current zones as they were). */
struct px_routes *px_routes_make(struct px_config *cfg, struct px_tls *tls, struct px_services *svcs,
                                 struct px_carry *carry, char *err, size_t errlen);
/* px_routes_make with the parts cfg describes: its certificates (loaded now;
 * sharing the carry's session cache and ticket keys when the session
 * settings are unchanged, see px_tls_build) and its [service] sections --
 * or what the carry's providers make of them (px/carry.h: the deployed
 * services on top, the ACME certificates added). Takes ownership of cfg,
 * even on failure. */
struct px_routes *px_routes_build(struct px_config *cfg, struct px_carry *carry, char *err, size_t errlen);
/* Make r current (cannot fail); the previous snapshot is retired. */
void px_routes_publish(struct px_routes *r);
/* Publish a snapshot whose services table is svcs and whose config and TLS
 * parts are the current ones (the same objects): what a deploy does. Takes
 * ownership of svcs, even on failure. 0, or -1 with a message in err
 * (nothing published yet, out of memory) and nothing changed. */
int px_routes_publish_services(struct px_services *svcs, char *err, size_t errlen);
/* The same for a new TLS part (certificate reload): config and services kept. */
int px_routes_publish_tls(struct px_tls *tls, char *err, size_t errlen);
/* How many snapshots (published, retired or not yet published) name r's
 * part `which`. Main thread; for tests and status. */
int px_routes_part_refs(const struct px_routes *r, enum px_routes_part which);
/* Free retired snapshots no worker uses any more. Returns how many remain. */
int px_routes_reap(void);
/* Free everything at exit (no worker may run). */
void px_routes_shutdown(void);
/* The current snapshot as seen by the main thread (never NULL after the first publish). */
const struct px_routes *px_routes_peek(void);
/* How many per-worker slots (hazards, pins) the reaper checks: n clamped to
 * 1..PX_MAX_WORKERS. Main thread, before the workers start. */
void px_routes_set_nworkers(int n);

/* ---- reading (any worker thread) ---- */

/* The current snapshot for worker wid (adopts a newer one if published). */
const struct px_routes *px_routes_current(int wid);
void px_routes_pin(const struct px_routes *r, int wid);
void px_routes_unpin(const struct px_routes *r, int wid);

const struct px_config *px_routes_config(const struct px_routes *r);
/* The TLS contexts (NULL without listen_https). */
const struct px_tls *px_routes_tls(const struct px_routes *r);
/* The services table (never NULL). */
const struct px_services *px_routes_services(const struct px_routes *r);

/* The service for a request: host (as sent: case-insensitive, ":port" and a
 * trailing dot ignored; NULL/empty = no host) by exact name, then the
 * longest "*.suffix", then catch-all; within each, the longest path_prefix
 * on a segment boundary. NULL when nothing matches. */
const struct px_service *px_routes_match(const struct px_routes *r, const char *host, size_t host_len,
                                         const char *path, size_t path_len);

/* ---- [route] policies ---- */

/* What a [route] does to the requests it applies to. Owned by the
 * snapshot's config part: immutable, valid while the request pins it. */
struct px_route {
    const char *prefix;                 /* as configured ("/api/"), for messages */
    struct px_limit_zone *const *zones; /* its [limit] zones in the order given (px_limit_check) */
    const uint32_t *zone_stats_ids;     /* per zone: the (zone, route) pair's metrics id (px/stats.h);
                                         * the route label is PREFIX, or HOST/PREFIX with hosts
                                         * (several hosts joined with ",") */
    size_t nzones;
    const struct px_hdr_add *adds;      /* the response headers of its requests: [headers] with its
                                         * [headers NAME] sets on top (a set's header replaces the
                                         * [headers] one of the same name); NULL when it names no set:
                                         * then [headers] alone, as for a request no route matches */
    size_t nadds;
};

/* The one [route] that applies to a request, as one nginx location does:
 * the longest prefix that matches the normalized path (%XX decoded,
 * ";params" dropped from each segment, "//" merged, "." and ".." resolved;
 * the query ignored) where a name ends: the byte after the prefix is not a
 * letter, digit, '-', '_', '~' or non-ASCII ("/login" takes "/login/x",
 * "/login.json", "/login;x", "/login%3f", never "/loginx"); at equal prefix
 * a route for the exact host beats one for a "*.suffix" (the longer first),
 * which beats one without host; then one whose suffix matches the path
 * (case-insensitive) beats one without. NULL when none matches (or the
 * snapshot has no routes: then it costs one test). host is as sent
 * (":port" ignored). Any thread. No allocation: a path up to
 * PX_H1_PATH_MAX is normalized on the stack; a longer one (the parsers
 * answer it 414 first) is matched as sent. */
const struct px_route *px_routes_route(const struct px_routes *r, const char *host, size_t host_len,
                                       const char *path, size_t path_len);
/* The snapshot's rate-limit zones (one set per config part). */
struct px_limits *px_routes_limits(const struct px_routes *r);

#endif
