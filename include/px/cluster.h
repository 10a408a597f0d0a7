/* px/cluster.h -- several proxyd instances sharing state through Redis
 * ([cluster]): shared rate-limit zones and instance heartbeats.
 *
 * Connections (hiredis' asynchronous API on proxyd's own event bases): one
 * per worker, made by px_cluster_module's start hook on the worker's base
 * and used only there (the limit checks of one loop iteration go out in one
 * write: hiredis pipelines), and one on the main thread for heartbeats.
 * Each reconnects with backoff (100 ms doubling to 2 s), sends AUTH
 * (password_file), SELECT and SCRIPT LOAD first.
 *
 * Shared zones ([limit] shared = yes, px/limit.h): px_cluster_start puts
 * the remote ops under them (px_limit_set_remote). A check runs one Lua
 * script (EVALSHA; NOSCRIPT: EVAL, which caches it again) that does
 * px_limit_check's arithmetic on the Redis server's clock over all the
 * route's zones at once (all or none); the key of a zone and a client is
 * KEY_PREFIX "l:" ZONE ":" ADDRESS, "EXCESS LAST" in milli-requests and
 * Redis ms, expiring once it has leaked (plus a minute). The request parks
 * until the answer. A worker whose connection is down, or whose answer did
 * not come within `timeout`, decides on the zones' local arenas
 * (px_limit_check) until Redis answers again (a PING each second; one
 * unanswered for 5 s drops the connection for a new one); the first worker
 * to fall back logs it, the last to come back logs that. A route that also
 * names local zones looks at them first (px_limit_look) and charges them
 * once Redis passes (px_limit_charge): all or none.
 *
 * HTTP-01 tokens (px/challenge.h): px_cluster_start registers the remote
 * token table (px_challenge_set_remote): a token the worker's own table
 * lacks is a GET of KEY_PREFIX "acme:token:" TOKEN on the worker's
 * connection; the request parks until the answer. Redis down: absent at
 * once; no answer within `timeout`: absent then, and down as above.
 *
 * Heartbeats: every 2 s the main thread runs a script that writes this
 * instance's record (name, version, pid, listen) every 10 s with a 30 s
 * TTL and reads the live instances back for px_cluster_instances.
 *
 * [acme] storage = redis (proxy/acme/shared.c) sends its commands on the
 * main connection (px_cluster_command) and gets its announcements on a
 * subscription with a connection of its own (px_cluster_subscribe). */
#ifndef PX_CLUSTER_H
#define PX_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct px_cluster_conf;
struct px_cluster;

/* Start the cluster from cc (a [cluster] section): read password_file,
 * check Redis synchronously (a refused password or database is an error
 * naming Redis; Redis unreachable is only a warning: the zones start on
 * their local state), register the shared zones' remote ops and start the
 * heartbeats on main_base. listen: this instance's address for the
 * heartbeat. nworkers: how many workers will run px_cluster_module. NULL
 * with err filled on failure. Main thread, before the workers start (the
 * settings it keeps are read by them, never written after). */
struct px_cluster *px_cluster_start(struct event_base *main_base, const struct px_cluster_conf *cc,
                                    const char *listen, int nworkers, char *err, size_t errlen);
/* Stop the heartbeats and close the main connection (the workers are
 * joined). NULL is fine. Main thread. */
void px_cluster_free(struct px_cluster *c);

/* For `proxyctl status` (main thread): Redis reachable from this instance
 * (the main connection up and no worker falling back). */
int px_cluster_redis_up(const struct px_cluster *c);
/* The live instances as the last heartbeat read them: JSON objects
 * {"name","version","pid","listen"} as text, owned by c, valid until the
 * next main-loop iteration. */
size_t px_cluster_instances(const struct px_cluster *c, const char *const **json);
/* This instance's name. */
const char *px_cluster_instance(const struct px_cluster *c);
/* [cluster] secret_file's key (its first 32 bytes), read by
 * px_cluster_start before the privilege drop and kept for the process
 * lifetime (a reload never reads the file again: it may be root's only);
 * NULL without secret_file. */
const unsigned char *px_cluster_secret(const struct px_cluster *c);
/* Read path's first 32 bytes into key: 0, or -1 with a message (it cannot
 * be read, or it is shorter). px_cluster_start's, and `proxyd -t`'s check. */
int px_cluster_read_secret(const char *path, unsigned char key[32], char *err, size_t errlen);
/* `proxyctl status`'s and status.json's "cluster": {"instance", "redis":
 * "up"|"down", "instances": [{"name", "version", "pid", "listen"}]} (the
 * live ones, as the last heartbeat read them). A new jansson reference, or
 * NULL (out of memory). Main thread. */
struct json_t;
struct json_t *px_cluster_json(const struct px_cluster *c);

/* ---- metrics (px/metrics.h renders them; main thread) ----
 *
 * Counted where the work happens, in per-thread blocks (one per worker,
 * one for the main thread's connection) with px/stats.h's single-writer
 * bump: no lock, no atomic read-modify-write on the request path.
 *  - commands: every command queued on a connection (the limit checks, one
 *    per shared-limited request; AUTH, SELECT, SCRIPT LOAD on each connect;
 *    PINGs while down; the heartbeats).
 *  - errors by kind: timeout (a limit check answered locally because its
 *    reply was later than `timeout`, one per check; a PING or heartbeat
 *    unanswered for 5 s), connection (a connect that failed, a connection
 *    lost), reply (an error or unexpected reply; NOSCRIPT, recovered with
 *    EVAL, is not one).
 *  - seconds: the round trip of each limit check, from queued to answered
 *    (late ones too), in PX_CLUSTER_NBUCKETS buckets.
 *  - fallbacks by zone: limit decisions a shared zone made on this
 *    instance's local state because Redis was down, late or failing (one
 *    per shared zone of the route per request). */
#define PX_CLUSTER_NBUCKETS 14
/* The bounds in microseconds; the last bucket is +Inf. */
extern const uint64_t px_cluster_bucket_us[PX_CLUSTER_NBUCKETS - 1];
enum { PX_CLUSTER_ERR_TIMEOUT, PX_CLUSTER_ERR_CONNECTION, PX_CLUSTER_ERR_REPLY, PX_CLUSTER_NERR };
extern const char *const px_cluster_err_names[PX_CLUSTER_NERR]; /* "timeout", "connection", "reply" */
#define PX_CLUSTER_MAX_ZONES 64  /* zones with a fallback count (more: counted in errors only) */
struct px_cluster_stats {
    int redis_up;                /* px_cluster_redis_up */
    uint64_t commands;
    uint64_t errors[PX_CLUSTER_NERR];
    uint64_t seconds[PX_CLUSTER_NBUCKETS]; /* cumulative: [i] = checks answered within bound i; [last] = count */
    uint64_t seconds_sum_us;
    struct {
        const char *zone;        /* static storage: valid for the process lifetime */
        uint64_t n;
    } fallbacks[PX_CLUSTER_MAX_ZONES];
    size_t nfallbacks;           /* zones that fell back at least once, by name */
};
/* Sum every thread's block into out: -1 (out untouched) when no cluster
 * runs (no [cluster]: the families are absent). Main thread. */
int px_cluster_stats(struct px_cluster_stats *out);

/* ---- for the rest of the main thread ([acme] storage = redis) ---- */

struct redisReply;
/* reply: hiredis' (borrowed, valid during the call); NULL when the
 * connection went before the answer (Redis down, proxyd stopping). */
typedef void (*px_cluster_reply_fn)(void *arg, const struct redisReply *reply);
/* Send one command (argv[0..argc), lens as redisAsyncCommandArgv's; NULL:
 * strlen) on the main thread's connection. 0: fn will be called exactly
 * once, from the loop; -1: Redis is not reachable now (fn is never called).
 * Main thread. */
int px_cluster_command(struct px_cluster *c, px_cluster_reply_fn fn, void *arg, int argc, const char *const *argv,
                       const size_t *lens);
/* The main connection is up (set up and answering). */
int px_cluster_main_up(const struct px_cluster *c);
/* [cluster] key_prefix. */
const char *px_cluster_prefix(const struct px_cluster *c);

/* SUBSCRIBE to channel on a connection of its own on the main thread
 * (reconnecting with the same backoff). on_msg gets each message's payload;
 * on_up is called each time the subscription is (re)established (messages
 * sent while it was down are lost: look again). NULL when out of memory.
 * Free it before the cluster. */
struct px_cluster_sub;
struct px_cluster_sub *px_cluster_subscribe(struct px_cluster *c, const char *channel,
                                            void (*on_msg)(void *arg, const char *msg, size_t len),
                                            void (*on_up)(void *arg), void *arg);
void px_cluster_sub_free(struct px_cluster_sub *s);

/* The per-worker module (its connection); does nothing without a started
 * cluster. */
struct px_worker_module;
extern const struct px_worker_module px_cluster_module;

#endif
