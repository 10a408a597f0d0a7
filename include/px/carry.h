/* px/carry.h -- the carry-over object: what outlives a reload, in one place,
 * and what a binary upgrade will hand to the next process (serialised, or
 * inherited as file descriptors): the listening sockets, the rate-limit
 * zones (their state, found by name) and the TLS session context (session
 * cache and ticket keys). nginx's ngx_cycle_t/old_cycle, HAProxy's
 * listeners handed over with -x. It also names how a rebuild keeps what
 * the control plane added since the config was read (the providers below).
 *
 * Ownership: the server owns the one carry of the process (px_carry_init at
 * start, px_carry_free at exit). It holds a reference on the zone set and
 * on the session context in force; it records the listening sockets but
 * does not own them (each worker closes its own). Rebuilds take it:
 * px_routes_build/px_routes_make read zones and sessions from it, and a
 * snapshot built with a carry updates it when it is published, so the
 * carry always names what is in force. An unpublished build changes
 * nothing in it.
 * Threading: main thread only. Workers never see it: they reach the zones
 * and TLS contexts through the snapshot they pinned. */
#ifndef PX_CARRY_H
#define PX_CARRY_H

#include <stddef.h>

#include "px/addr.h"
#include "px/common.h" /* PX_MAX_WORKERS */

struct px_config;
struct px_limits;
struct px_services;
struct px_tls;
struct px_tls_sessions;

/* Where a rebuild takes the services table from: NULL = the config's
 * [service] sections (px_config_services); the control plane installs its
 * own (the config's services with the deployed ones on top), so that a
 * reload keeps what proxyctl deployed. Main thread. */
typedef struct px_services *(*px_services_provider)(void *arg, const struct px_config *cfg, char *err,
                                                     size_t errlen);
/* Likewise for the TLS part: NULL = px_tls_build(&cfg->tls, sessions); the
 * control plane installs its own to add the ACME certificates. */
typedef struct px_tls *(*px_tls_provider)(void *arg, const struct px_config *cfg,
                                          const struct px_tls_sessions *sessions, char *err, size_t errlen);

#define PX_CARRY_MAX_LISTENERS 4

/* One listen address: a socket per worker (an SO_REUSEPORT group). */
struct px_carry_listener {
    struct px_addr addr;
    int https;                    /* TLS is spoken on it */
    int fds[PX_MAX_WORKERS];      /* fds[i]: worker i's socket (borrowed) */
    int nfds;
};

struct px_carry {
    struct px_carry_listener listeners[PX_CARRY_MAX_LISTENERS];
    size_t nlisteners;
    struct px_limits *zones;          /* the zone set in force (a reference), or NULL */
    struct px_tls_sessions *sessions; /* the TLS session context in force (a reference), or NULL */
    /* how a rebuild makes the parts that must keep what the control plane
     * added (deployed services, ACME certificates); set by the server */
    px_services_provider services;
    void *services_arg;
    px_tls_provider tls;
    void *tls_arg;
};

/* An empty carry: nothing carried over (what a first start has). */
void px_carry_init(struct px_carry *c);
/* Record worker socket fd for listen address a (https: TLS on it); the
 * sockets of one address are recorded in worker order. 0, or -1 when the
 * table is full. */
int px_carry_add_listener(struct px_carry *c, const struct px_addr *a, int https, int fd);
/* Hold zones (may be NULL) instead of the set held so far. */
void px_carry_keep_zones(struct px_carry *c, struct px_limits *zones);
/* Hold the session context s (may be NULL) instead of the one held so far. */
void px_carry_keep_sessions(struct px_carry *c, struct px_tls_sessions *s);
/* Drop the references and forget the listeners (their sockets stay open);
 * the carry is empty afterwards. */
void px_carry_free(struct px_carry *c);

/* ---- a binary upgrade: the state handed to the next process ----
 * The listening sockets go by inheritance (px/upgrade.h); the rest is one
 * blob: the ticket keys and the session cache of c->sessions, and the
 * buckets of every zone of c->zones. The deployed services need nothing
 * here: the state file has them. */

/* Serialise c's state into a new buffer (*out, *outlen; free() it; it
 * holds key material: cleanse before). 0, or -1 with the reason. Main
 * thread; takes the zones' stripe locks and the session cache's lock in
 * turn, never for long. */
int px_carry_export(const struct px_carry *c, unsigned char **out, size_t *outlen, char *err, size_t errlen);

struct px_carry_counts {
    size_t ticket_keys, sessions, zones, keys;
};
/* Put what px_carry_export gave (in the previous process) into the state
 * c names now (after the first snapshot is published: its sessions and
 * zones). A zone is restored when the new config has one with the same
 * name and zone_size (as a reload keeps it); the ticket keys when session
 * tickets are on. n says what was taken. 0, or -1 for a blob that is not
 * one (what was read before the fault stays). */
int px_carry_import(struct px_carry *c, const unsigned char *buf, size_t len, struct px_carry_counts *n,
                    char *err, size_t errlen);

#endif
