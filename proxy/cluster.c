/* cluster.c -- shared limit zones and heartbeats through Redis (see
 * px/cluster.h). hiredis' async API over libevent: every callback runs on
 * the loop of the thread that owns the connection. */
#include "px/cluster.h"

#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "px/challenge.h"
#include "px/common.h"
#include "px/config.h"
#include "px/limit.h"
#include "px/list.h"
#include "px/log.h"
#include "px/parse.h"
#include "px/stats.h"
#include "px/worker.h"

#define MAX_ZONES 8             /* a route with more decides locally */
_Static_assert(MAX_ZONES < 10, "send_check writes the key count as one digit");
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define PING_MS 1000            /* a worker that fell back asks this often */
#define BEAT_MS 2000            /* the main thread reads the instances this often */
#define BEAT_WRITE_MS 10000     /* and writes its own record this often */
#define BEAT_TTL_MS 30000

/* px_limit_check's arithmetic (limit.c, nginx's limit_req) over the route's
 * zones, on Redis's clock. KEYS: one per zone; ARGV: rate, burst, delay per
 * zone (milli-requests; delay -1: nodelay). Returns {verdict, value, which}:
 * 0 pass; 1 delay (value ms); 2 reject (value: Retry-After seconds). */
static const char LIMIT_LUA[] =
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local n = #KEYS\n"
    "local function elapsed(last)\n"
    "  if now >= last then return now - last end\n"
    "  if last - now > 60000 then return 1 end\n"
    "  return 0\n"
    "end\n"
    "local function nextx(e, rate, ms)\n"
    "  if rate * ms >= (e + 1000) * 1000 then return 0 end\n"
    "  return e + 1000 - math.floor(rate * ms / 1000)\n"
    "end\n"
    "local function get(i)\n"
    "  local v = redis.call('GET', KEYS[i])\n"
    "  if not v then return nil end\n"
    "  local e, l = string.match(v, '^(%d+) (%d+)$')\n"
    "  if not e then return nil end\n"
    "  return tonumber(e), tonumber(l)\n"
    "end\n"
    "local function put(i, e, l, rate)\n"
    "  local ttl = math.floor((e * 1000 + rate - 1) / rate) + 60000\n"
    "  redis.call('SET', KEYS[i], string.format('%.0f %.0f', e, l), 'PX', ttl)\n"
    "end\n"
    "local function par(i)\n"
    "  local b = 3 * (i - 1)\n"
    "  return tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])\n"
    "end\n"
    "local function delay(x, rate, d)\n"
    "  if d < 0 or x <= d then return 0 end\n"
    "  return math.floor((x - d) * 1000 / rate)\n"
    "end\n"
    "local excess = 0\n"
    "for i = 1, n do\n"
    "  local rate, burst = par(i)\n"
    "  local e, last = get(i)\n"
    "  if e then\n"
    "    local ms = elapsed(last)\n"
    "    local x = nextx(e, rate, ms)\n"
    "    excess = x\n"
    "    if x > burst then\n"
    "      local tt = last + math.floor(((e + 1000 - burst) * 1000 + rate - 1) / rate)\n"
    "      local w = 0\n"
    "      if tt > now then w = tt - now end\n"
    "      local s = math.floor((w + 999) / 1000)\n"
    "      if s < 1 then s = 1 end\n"
    "      return {2, s, i - 1}\n"
    "    end\n"
    "    if i == n then\n"
    "      if ms ~= 0 then last = now end\n"
    "      put(i, x, last, rate)\n"
    "    end\n"
    "  else\n"
    "    excess = 0\n"
    "    if i == n then put(i, 0, now, rate) end\n"
    "  end\n"
    "end\n"
    "local rate, burst, d = par(n)\n"
    "local which = n - 1\n"
    "local best = delay(excess, rate, d)\n"
    "for i = n - 1, 1, -1 do\n"
    "  rate, burst, d = par(i)\n"
    "  local e, last = get(i)\n"
    "  local x = 0\n"
    "  if e then\n"
    "    local ms = elapsed(last)\n"
    "    x = nextx(e, rate, ms)\n"
    "    if ms ~= 0 then last = now end\n"
    "    put(i, x, last, rate)\n"
    "  else\n"
    "    put(i, 0, now, rate)\n"
    "  end\n"
    "  local dd = delay(x, rate, d)\n"
    "  if dd > best then best = dd; which = i - 1 end\n"
    "end\n"
    "if best > 0 then return {1, best, which} end\n"
    "return {0, 0, 0}\n";

/* The heartbeat: KEYS[1] the prefix; ARGV: name, record, TTL ms, write
 * (1/0). Returns the live instances' records. */
static const char BEAT_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local set = KEYS[1] .. 'instances'\n"
    "if ARGV[4] == '1' then\n"
    "  redis.call('SET', KEYS[1] .. 'instance:' .. ARGV[1], ARGV[2], 'PX', tonumber(ARGV[3]))\n"
    "  redis.call('ZADD', set, now + tonumber(ARGV[3]), ARGV[1])\n"
    "end\n"
    "redis.call('ZREMRANGEBYSCORE', set, '-inf', now)\n"
    "local out = {}\n"
    "for _, name in ipairs(redis.call('ZRANGE', set, 0, -1)) do\n"
    "  local v = redis.call('GET', KEYS[1] .. 'instance:' .. name)\n"
    "  if v then out[#out + 1] = v end\n"
    "end\n"
    "return out\n";

/* ---- settings: written by px_cluster_start before the workers run ---- */

static struct {
    int on;
    struct px_redis_addr addr;
    char *password;             /* NULL: no AUTH */
    char *prefix;
    size_t prefix_len;
    uint64_t timeout_ms;
    char sha[41];               /* of LIMIT_LUA */
    char head[64];              /* "$7\r\nEVALSHA\r\n$40\r\n" SHA "\r\n": send_check's */
    size_t head_len;
    struct rconn **conns;       /* by worker id: made by the start hook, freed by the exit hook */
    struct px_cluster *main;    /* the running cluster (px_cluster_stats) */
    int nconns;
} g;

/* ---- metrics: one block per worker id, [PX_MAX_WORKERS] the main
 * thread's; each written only by its thread (px_stats_inc), summed by
 * px_cluster_stats. Static: no allocation, and the counts outlive a worker. */

const uint64_t px_cluster_bucket_us[PX_CLUSTER_NBUCKETS - 1] = {100,   250,   500,    1000,   2500,   5000,  10000,
                                                                25000, 50000, 100000, 250000, 500000, 1000000};
const char *const px_cluster_err_names[PX_CLUSTER_NERR] = {"timeout", "connection", "reply"};

#define FB_NAME 64 /* a longer zone name is counted under its first 63 bytes */

struct cl_block {
    _Alignas(PX_STATS_ALIGN) _Atomic uint64_t commands;
    _Atomic uint64_t errors[PX_CLUSTER_NERR];
    _Atomic uint64_t seconds[PX_CLUSTER_NBUCKETS]; /* per bucket, not cumulative */
    _Atomic uint64_t seconds_sum_us;
    _Atomic uint32_t nfb;       /* fb[0..nfb) named: the name is written before nfb is (release) */
    struct {
        char zone[FB_NAME];
        _Atomic uint64_t n;
    } fb[PX_CLUSTER_MAX_ZONES];
};
static struct cl_block blocks[PX_MAX_WORKERS + 1];

static void count_err(struct cl_block *b, int kind)
{
    px_stats_inc(&b->errors[kind]);
}

/* One local decision of the shared zones in zones[0..n). A zone's slot is
 * found by name (zone handles change on reloads, names do not): a short
 * scan, on the fallback path only. */
static void count_fallback(struct cl_block *b, struct px_limit_zone *const *zones, size_t n)
{
    uint32_t nfb = atomic_load_explicit(&b->nfb, memory_order_relaxed);
    for (size_t i = 0; i < n; i++) {
        if (!px_limit_zone_shared(zones[i]))
            continue;
        const char *name = px_limit_zone_name(zones[i]);
        uint32_t j = 0;
        while (j < nfb && strncmp(b->fb[j].zone, name, FB_NAME - 1) != 0)
            j++;
        if (j == nfb) {
            if (nfb == PX_CLUSTER_MAX_ZONES)
                continue;
            snprintf(b->fb[j].zone, FB_NAME, "%s", name);
            atomic_store_explicit(&b->nfb, ++nfb, memory_order_release);
        }
        px_stats_inc(&b->fb[j].n);
    }
}

/* Workers' connections not up: still starting (their checks queue behind
 * them) or failed (their checks fall back). The first failure is logged,
 * and the way back once every connection is up: a connection that is
 * still starting must not hide another's failure (nor its own). */
static atomic_int ndown;
static atomic_int nfailed;
static atomic_int announced;    /* the fallback was logged: log the way back */

/* ---- one connection ---- */

struct pend;

struct rconn {
    struct event_base *base;
    redisAsyncContext *ac;      /* NULL while disconnected */
    int up;                     /* AUTH, SELECT and SCRIPT LOAD answered; not timed out since */
    int failed;                 /* counted in nfailed (workers; a worker's is in ndown while !up) */
    int ping_out;
    int main;                   /* the main thread's (not in ndown) */
    int closing;                /* being freed: callbacks only let go */
    int starting;               /* the first connection is being made: checks queue behind it */
    int setup_warned;           /* a refused AUTH or SELECT was logged (once until up again) */
    uint64_t ping_ms;           /* when the outstanding PING went out */
    uint64_t backoff_ms;
    struct event retry;         /* reconnect */
    struct event timer;         /* the oldest check's deadline (workers) */
    struct event ping;          /* PING while down (workers) */
    struct px_list waiting;     /* checks (struct pend) waiting, oldest first (deadline order) */
    struct px_list spare;       /* a cache of spare ones */
    void (*on_up)(struct rconn *rc);
    struct px_list twaiting;    /* token lookups (struct tpend) waiting, oldest first (workers) */
    struct px_list tspare;
    struct event ttimer;        /* the oldest lookup's deadline */
    struct cl_block *st;        /* this thread's counters */
};

/* A check in flight. Freed (to the cache) only by its reply callback:
 * hiredis calls it exactly once, with NULL when the connection goes. */
struct pend {
    struct px_list_node link;   /* on rc->waiting (`waiting` set) or rc->spare */
    struct rconn *rc;
    px_limit_done_fn done;
    void *arg;                  /* NULL: answered (timeout) or cancelled: the reply is dropped */
    int waiting;                /* on the waiting list */
    struct px_limit_zone *const *zones; /* the route's (pinned by the request) */
    size_t n;
    uint8_t sidx[MAX_ZONES], lidx[MAX_ZONES]; /* which of them are shared, which local */
    uint8_t ns, nl;
    struct px_limit_key key;
    uint64_t deadline_ms;
    uint64_t sent_us;           /* when it was queued (the round-trip histogram) */
};

static __thread struct rconn *tl_conn; /* this worker's */

#define PEND(node) px_list_entry((node), struct pend, link)
#define TPEND(node) px_list_entry((node), struct tpend, link)

/* Arm ev for deadline_ms (half a millisecond late, never early) unless it
 * is armed: the waiting lists' oldest deadline. */
static void arm_deadline(struct event *ev, uint64_t deadline_ms)
{
    if (evtimer_pending(ev, NULL))
        return;
    uint64_t now = px_now_ms(), d = deadline_ms > now ? deadline_ms - now : 0;
    struct timeval tv = {(time_t)(d / 1000), (suseconds_t)(d % 1000) * 1000 + 500};
    evtimer_add(ev, &tv);
}

static void rconn_connect(struct rconn *rc);

static void set_down(struct rconn *rc, const char *why)
{
    rc->starting = 0;
    if (rc->closing)
        return;
    int was_up = rc->up;
    rc->up = 0;
    if (rc->main || rc->failed)
        return;
    if (was_up)
        atomic_fetch_add(&ndown, 1);
    rc->failed = 1;
    if (atomic_fetch_add(&nfailed, 1) == 0 && !atomic_exchange(&announced, 1))
        px_log(PX_LOG_WARN, "cluster: Redis %s: shared limit zones fall back to this instance's local state", why);
}

static void set_up(struct rconn *rc)
{
    if (rc->up)
        return;
    rc->up = 1;
    rc->starting = 0;
    rc->setup_warned = 0;
    rc->backoff_ms = BACKOFF_MIN_MS;
    if (rc->main)
        return;
    if (rc->failed) {
        rc->failed = 0;
        atomic_fetch_sub(&nfailed, 1);
    }
    if (atomic_fetch_sub(&ndown, 1) == 1 && atomic_exchange(&announced, 0))
        px_log(PX_LOG_INFO, "cluster: Redis answers again: shared limit zones use it");
}

static void schedule_retry(struct rconn *rc)
{
    struct timeval tv = {(time_t)(rc->backoff_ms / 1000), (suseconds_t)(rc->backoff_ms % 1000) * 1000};
    evtimer_add(&rc->retry, &tv);
    rc->backoff_ms = rc->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : rc->backoff_ms * 2;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    rconn_connect(arg);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn *rc = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this; no disconnect callback follows */
        rc->ac = NULL;
        count_err(rc->st, PX_CLUSTER_ERR_CONNECTION);
        set_down(rc, ac->errstr[0] ? ac->errstr : "unreachable");
        schedule_retry(rc);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rconn *rc = ac->data;
    if (rc->closing)
        return;
    rc->ac = NULL;
    rc->ping_out = 0;
    if (status != REDIS_OK) /* REDIS_OK: we let it go (a timeout, counted there) */
        count_err(rc->st, PX_CLUSTER_ERR_CONNECTION);
    set_down(rc, status == REDIS_OK ? "closed the connection" : ac->errstr[0] ? ac->errstr : "connection lost");
    schedule_retry(rc);
}

static int reply_ok(const redisReply *r)
{
    return r != NULL && r->type != REDIS_REPLY_ERROR;
}

/* The setup's last answer (SCRIPT LOAD): AUTH and SELECT came before it. */
static void on_ready(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *rc = ac->data;
    const redisReply *r = reply;
    if (!reply_ok(r)) {
        if (r) {
            count_err(rc->st, PX_CLUSTER_ERR_REPLY);
            set_down(rc, r->str);
            redisAsyncDisconnect(ac); /* on_disconnect retries */
        }
        return;
    }
    set_up(rc);
    if (rc->on_up)
        rc->on_up(rc);
}

static void on_setup_step(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *rc = ac->data;
    const redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR && !rc->setup_warned) {
        rc->setup_warned = 1;   /* not again on every reconnect */
        px_log(PX_LOG_WARN, "cluster: Redis: %s: %s", (const char *)priv, r->str);
    }
}

/* ---- hiredis on libevent ----
 * hiredis' own adapter (adapters/libevent.h) with two changes that keep
 * the per-request cost to a few loads and stores: the read event stays
 * registered (the stock one is re-armed after every read: two epoll_ctl),
 * and a queued command arms no write event but a deferred flush that runs
 * once the loop iteration's other callbacks have queued theirs (one write
 * for all; the socket is almost always writable). Only a write that could
 * not finish waits for the write event. */
struct hev {
    redisAsyncContext *ac;
    struct event rev, wev, flush;
    unsigned reading : 1, writing : 1, flushing : 1;
};

static _Thread_local int in_flush;

static void hev_read(evutil_socket_t fd, short what, void *arg)
{
    redisAsyncHandleRead(((struct hev *)arg)->ac);
}

static void hev_write(evutil_socket_t fd, short what, void *arg)
{
    redisAsyncHandleWrite(((struct hev *)arg)->ac);
}

static void hev_add_write_now(struct hev *e)
{
    if (!e->writing) {
        event_add(&e->wev, NULL);
        e->writing = 1;
    }
}

static void hev_flush(evutil_socket_t fd, short what, void *arg)
{
    struct hev *e = arg;
    redisAsyncContext *ac = e->ac;
    e->flushing = 0;
    if (!(ac->c.flags & REDIS_CONNECTED)) {
        hev_add_write_now(e); /* connect(2) in progress: its completion is a write event */
        return;
    }
    in_flush = 1;
    redisAsyncHandleWrite(ac); /* may free ac and e (an error disconnects) */
    in_flush = 0;
}

static void hev_add_read(void *d)
{
    struct hev *e = d;
    if (!e->reading) {
        event_add(&e->rev, NULL);
        e->reading = 1;
    }
}

static void hev_del_read(void *d)
{
    struct hev *e = d;
    if (e->reading) {
        event_del(&e->rev);
        e->reading = 0;
    }
}

static void hev_add_write(void *d)
{
    struct hev *e = d;
    if (in_flush) {
        hev_add_write_now(e); /* the flush could not write it all */
    } else if (!e->flushing && !e->writing) {
        e->flushing = 1;
        event_active(&e->flush, EV_TIMEOUT, 1);
    }
}

static void hev_del_write(void *d)
{
    struct hev *e = d;
    if (e->writing) {
        event_del(&e->wev);
        e->writing = 0;
    }
}

static void hev_cleanup(void *d)
{
    struct hev *e = d;
    event_del(&e->rev);
    event_del(&e->wev);
    event_del(&e->flush);
    free(e);
}

static int hev_attach(redisAsyncContext *ac, struct event_base *base)
{
    struct hev *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -1;
    e->ac = ac;
    event_assign(&e->rev, base, ac->c.fd, EV_READ | EV_PERSIST, hev_read, e);
    event_assign(&e->wev, base, ac->c.fd, EV_WRITE | EV_PERSIST, hev_write, e);
    event_assign(&e->flush, base, -1, 0, hev_flush, e);
    ac->ev.addRead = hev_add_read;
    ac->ev.delRead = hev_del_read;
    ac->ev.addWrite = hev_add_write;
    ac->ev.delWrite = hev_del_write;
    ac->ev.cleanup = hev_cleanup;
    ac->ev.data = e;
    hev_add_read(e);
    hev_add_write_now(e); /* the connect's completion */
    return 0;
}

/* ---- the limit check's reply without allocation ----
 * hiredis builds each reply as malloc'ed objects: a check's answer, an
 * array of three integers, is five allocations and five frees. A worker's
 * reader builds that shape in its thread's slot instead (anything else, or
 * the slot busy, goes to hiredis' own functions); async hiredis frees a
 * reply right after its callback, before it parses the next one, so one
 * slot per worker suffices. A slot is recognised by its address (the
 * reader may be freed on the main thread after the worker's join). */
struct rslot {
    redisReply arr;
    redisReply *elp[3];
    redisReply ints[3];
    int busy;
};
static struct rslot rslots[PX_MAX_WORKERS];
static __thread struct rslot *tl_slot; /* this worker's (NULL: the main thread) */
static redisReplyObjectFunctions *hiredis_fn; /* hiredis' defaults: set by px_cluster_start */

static void *slot_array(const redisReadTask *task, int elements)
{
    struct rslot *sl = tl_slot;
    if (task->parent != NULL || elements != 3 || sl == NULL || sl->busy)
        return hiredis_fn->createArray(task, elements);
    sl->busy = 1;
    memset(&sl->arr, 0, sizeof(sl->arr));
    sl->arr.type = REDIS_REPLY_ARRAY;
    sl->arr.elements = 3;
    sl->arr.element = sl->elp;
    memset(sl->elp, 0, sizeof(sl->elp));
    return &sl->arr;
}

static void *slot_integer(const redisReadTask *task, long long v)
{
    struct rslot *sl = tl_slot;
    if (sl == NULL || task->parent == NULL || task->parent->obj != &sl->arr || task->idx < 0 || task->idx >= 3)
        return hiredis_fn->createInteger(task, v);
    redisReply *r = &sl->ints[task->idx];
    memset(r, 0, sizeof(*r));
    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    sl->elp[task->idx] = r;
    return r;
}

static void *slot_string(const redisReadTask *task, char *str, size_t len)
{
    return hiredis_fn->createString(task, str, len); /* sets the slot's element when it is the parent */
}

static void *slot_nil(const redisReadTask *task)
{
    return hiredis_fn->createNil(task);
}

static void slot_free(void *obj)
{
    struct rslot *sl = (struct rslot *)obj;
    if (sl < rslots || sl >= rslots + PX_MAX_WORKERS) {
        hiredis_fn->freeObject(obj);
        return;
    }
    for (int i = 0; i < 3; i++)
        if (sl->elp[i] != NULL && sl->elp[i] != &sl->ints[i])
            hiredis_fn->freeObject(sl->elp[i]);
    memset(sl->elp, 0, sizeof(sl->elp));
    sl->busy = 0;
}

static redisReplyObjectFunctions slot_fn = {slot_string, slot_array, slot_integer, slot_nil, slot_free};

static void rconn_connect(struct rconn *rc)
{
    redisAsyncContext *ac = g.addr.path[0] ? redisAsyncConnectUnix(g.addr.path)
                                           : redisAsyncConnect(g.addr.host, g.addr.port);
    if (ac == NULL) {
        set_down(rc, "out of memory");
        schedule_retry(rc);
        return;
    }
    if (ac->err) {
        count_err(rc->st, PX_CLUSTER_ERR_CONNECTION);
        set_down(rc, ac->errstr);
        redisAsyncFree(ac);
        schedule_retry(rc);
        return;
    }
    ac->data = rc;
    if (!rc->main && ac->c.reader != NULL && ac->c.reader->fn == hiredis_fn)
        ac->c.reader->fn = &slot_fn;
    if (hev_attach(ac, rc->base) < 0) {
        set_down(rc, "out of memory");
        redisAsyncFree(ac);
        schedule_retry(rc);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    rc->ac = ac;
    /* queued: sent once connected, answered in this order */
    if (g.password)
        redisAsyncCommand(ac, on_setup_step, "AUTH", "AUTH %s", g.password);
    if (g.addr.db)
        redisAsyncCommand(ac, on_setup_step, "SELECT", "SELECT %d", g.addr.db);
    redisAsyncCommand(ac, on_ready, NULL, "SCRIPT LOAD %s", LIMIT_LUA);
    px_stats_add(&rc->st->commands, 1u + (g.password != NULL) + (g.addr.db != 0));
}

static void rconn_init(struct rconn *rc, struct event_base *base, int is_main, int wid)
{
    memset(rc, 0, sizeof(*rc));
    rc->st = &blocks[is_main || wid < 0 || wid >= PX_MAX_WORKERS ? PX_MAX_WORKERS : wid];
    rc->base = base;
    rc->main = is_main;
    rc->backoff_ms = BACKOFF_MIN_MS;
    evtimer_assign(&rc->retry, base, on_retry, rc);
}

/* ---- shared limit checks (worker threads) ---- */

static void wait_unlink(struct rconn *rc, struct pend *p)
{
    if (!p->waiting)
        return;
    px_list_remove(&rc->waiting, &p->link);
    p->waiting = 0;
}

static void arm_timer(struct rconn *rc)
{
    struct pend *p = PEND(px_list_first(&rc->waiting));
    if (p)
        arm_deadline(&rc->timer, p->deadline_ms);
}

/* Answer p on the local arenas (Redis down or late). */
static void answer_local(struct pend *p)
{
    struct px_limit_result res;
    px_limit_done_fn done = p->done;
    void *arg = p->arg;
    p->arg = NULL;
    wait_unlink(p->rc, p);
    count_fallback(p->rc->st, p->zones, p->n);
    px_limit_check(p->zones, p->n, &p->key, px_now_ms(), &res);
    done(arg, &res);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *rc = arg;
    uint64_t now = px_now_ms();
    int late = 0;
    struct pend *p;
    while ((p = PEND(px_list_first(&rc->waiting))) != NULL && p->deadline_ms <= now) {
        if (!late) {
            late = 1;
            set_down(rc, "did not answer in time");
        }
        count_err(rc->st, PX_CLUSTER_ERR_TIMEOUT);
        answer_local(p); /* unlinks it; its reply is dropped when it comes */
    }
    arm_timer(rc);
}

static char *put_u64(char *o, uint64_t v)
{
    char t[20];
    int n = 0;
    do
        t[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n)
        *o++ = t[--n];
    return o;
}

static int key_text(const struct px_limit_key *k, char *out, size_t len)
{
    if (k->family == 4) { /* inet_ntop's work without its checks: the common key */
        char *o = out;
        for (int i = 0; i < 4; i++) {
            o = put_u64(o, k->addr[i]);
            *o++ = '.';
        }
        o[-1] = '\0';
        return 0;
    }
    if (k->family == 6)
        return inet_ntop(AF_INET6, k->addr, out, (socklen_t)len) ? 0 : -1;
    snprintf(out, len, "-");
    return 0;
}

static void on_limit_reply(redisAsyncContext *ac, void *reply, void *priv);

/* RESP's "*N\r\n" (an array) or "$N\r\n" (a bulk string's head) */
static char *put_len(char *o, char type, uint64_t n)
{
    *o++ = type;
    o = put_u64(o, n);
    *o++ = '\r';
    *o++ = '\n';
    return o;
}

/* "$LEN\r\n" s "\r\n" */
static char *put_bulk(char *o, const char *s, size_t len)
{
    o = put_len(o, '$', len);
    memcpy(o, s, len);
    o += len;
    *o++ = '\r';
    *o++ = '\n';
    return o;
}

static char *put_num(char *o, uint64_t v)
{
    char t[24], *e = v == UINT64_MAX ? (memcpy(t, "-1", 2), t + 2) : put_u64(t, v);
    return put_bulk(o, t, (size_t)(e - t));
}

/* EVAL after a NOSCRIPT, or a command too long for send_check's buffer:
 * hiredis formats it. */
static int send_check_argv(struct rconn *rc, struct pend *p, int full, const char *ip)
{
    char keys[MAX_ZONES][256], nums[MAX_ZONES * 3][24], nk[8];
    const char *argv[3 + MAX_ZONES * 4];
    size_t argvlen[3 + MAX_ZONES * 4];
    int argc = 0;

    argv[argc] = full ? "EVAL" : "EVALSHA";
    argvlen[argc] = strlen(argv[argc]);
    argc++;
    argv[argc] = full ? LIMIT_LUA : g.sha;
    argvlen[argc] = full ? sizeof(LIMIT_LUA) - 1 : 40;
    argc++;
    snprintf(nk, sizeof(nk), "%u", (unsigned)p->ns);
    argv[argc] = nk;
    argvlen[argc++] = strlen(nk);
    for (size_t i = 0; i < p->ns; i++) {
        int m = snprintf(keys[i], sizeof(keys[i]), "%sl:%s:%s", g.prefix, px_limit_zone_name(p->zones[p->sidx[i]]),
                         ip);
        if (m < 0 || (size_t)m >= sizeof(keys[i]))
            return -1;
        argv[argc] = keys[i];
        argvlen[argc++] = (size_t)m;
    }
    for (size_t i = 0; i < p->ns; i++) {
        uint64_t rate, burst, delay;
        px_limit_zone_params(p->zones[p->sidx[i]], &rate, &burst, &delay);
        uint64_t v[3] = {rate, burst, delay};
        for (int j = 0; j < 3; j++) {
            char *s = nums[i * 3 + j];
            int m = v[j] == UINT64_MAX ? snprintf(s, 24, "-1") : snprintf(s, 24, "%llu", (unsigned long long)v[j]);
            argv[argc] = s;
            argvlen[argc++] = (size_t)m;
        }
    }
    if (redisAsyncCommandArgv(rc->ac, on_limit_reply, p, argc, argv, argvlen) != REDIS_OK)
        return -1;
    px_stats_inc(&rc->st->commands);
    return 0;
}

/* EVALSHA (or EVAL after a NOSCRIPT) of p's zones. 0, or -1 when it could
 * not be queued. The EVALSHA is written here as RESP into a stack buffer
 * (the fixed head precomputed, the numbers by hand) and handed over whole
 * (redisAsyncFormattedCommand copies it to the output buffer): none of
 * redisAsyncCommandArgv's formatting and allocation per check. */
static int send_check(struct rconn *rc, struct pend *p, int full)
{
    char buf[2048], ip[64], *o = buf;
    size_t ziplen[MAX_ZONES], need = 64 + g.head_len;

    if (rc->ac == NULL || key_text(&p->key, ip, sizeof(ip)) < 0)
        return -1;
    if (full)
        return send_check_argv(rc, p, 1, ip);
    size_t iplen = strlen(ip);
    for (size_t i = 0; i < p->ns; i++) {
        ziplen[i] = strlen(px_limit_zone_name(p->zones[p->sidx[i]]));
        need += g.prefix_len + ziplen[i] + iplen + 3 + 24 + 3 * 32;
    }
    if (need > sizeof(buf))
        return send_check_argv(rc, p, 0, ip);
    o = put_len(o, '*', 3 + 4 * (uint64_t)p->ns);
    memcpy(o, g.head, g.head_len); /* $7 EVALSHA $40 SHA */
    o += g.head_len;
    char nk = (char)('0' + p->ns); /* ns <= MAX_ZONES < 10 */
    o = put_bulk(o, &nk, 1);
    for (size_t i = 0; i < p->ns; i++) { /* PREFIX "l:" ZONE ":" ADDRESS */
        o = put_len(o, '$', g.prefix_len + 2 + ziplen[i] + 1 + iplen);
        memcpy(o, g.prefix, g.prefix_len);
        o += g.prefix_len;
        *o++ = 'l';
        *o++ = ':';
        memcpy(o, px_limit_zone_name(p->zones[p->sidx[i]]), ziplen[i]);
        o += ziplen[i];
        *o++ = ':';
        memcpy(o, ip, iplen);
        o += iplen;
        *o++ = '\r';
        *o++ = '\n';
    }
    for (size_t i = 0; i < p->ns; i++) {
        uint64_t rate, burst, delay;
        px_limit_zone_params(p->zones[p->sidx[i]], &rate, &burst, &delay);
        o = put_num(o, rate);
        o = put_num(o, burst);
        o = put_num(o, delay);
    }
    if (redisAsyncFormattedCommand(rc->ac, on_limit_reply, p, buf, (size_t)(o - buf)) != REDIS_OK)
        return -1;
    px_stats_inc(&rc->st->commands);
    return 0;
}

static void pend_put(struct rconn *rc, struct pend *p)
{
    wait_unlink(rc, p);
    p->arg = NULL;
    px_list_insert_head(&rc->spare, &p->link);
}

/* The shared zones passed: charge the local ones; the longest delay wins
 * (on a tie, the later zone, as px_limit_check names it). */
static void charge_local(const struct pend *p, struct px_limit_result *res)
{
    struct px_limit_zone *lz[MAX_ZONES];
    struct px_limit_result lr;
    for (size_t i = 0; i < p->nl; i++)
        lz[i] = p->zones[p->lidx[i]];
    px_limit_charge(lz, p->nl, &p->key, px_now_ms(), &lr);
    if (lr.verdict != PX_LIMIT_DELAY)
        return;
    size_t which = p->lidx[lr.which];
    if (lr.delay_ms > res->delay_ms || (lr.delay_ms == res->delay_ms && which > res->which)) {
        res->verdict = PX_LIMIT_DELAY;
        res->delay_ms = lr.delay_ms;
        res->which = which;
    }
}

static void on_limit_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct pend *p = priv;
    struct rconn *rc = p->rc;
    const redisReply *r = reply;

    if (r == NULL) {            /* the connection went */
        set_down(rc, "connection lost");
        if (p->arg)
            answer_local(p);
        pend_put(rc, p);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && p->arg) {
        /* SCRIPT FLUSH, or a restarted Redis: EVAL caches it again */
        if (send_check(rc, p, 1) == 0)
            return;
    }
    {
        uint64_t us = px_now_us() - p->sent_us;
        unsigned b = 0;
        while (b < PX_CLUSTER_NBUCKETS - 1 && us > px_cluster_bucket_us[b])
            b++;
        px_stats_inc(&rc->st->seconds[b]);
        px_stats_add(&rc->st->seconds_sum_us, us);
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->type == REDIS_REPLY_INTEGER && r->element[2]->type == REDIS_REPLY_INTEGER) {
        set_up(rc);
        if (p->arg) {
            struct px_limit_result res = {0};
            long long v = r->element[0]->integer, x = r->element[1]->integer, w = r->element[2]->integer;
            size_t which = w >= 0 && w < p->ns ? p->sidx[w] : p->sidx[0];
            px_limit_done_fn done = p->done;
            void *arg = p->arg;
            if (v == 2) {
                res.verdict = PX_LIMIT_REJECT;
                res.retry_after_s = x < 1 ? 1 : x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
                res.which = which;
            } else {
                if (v == 1 && x > 0) {
                    res.verdict = PX_LIMIT_DELAY;
                    res.delay_ms = (uint64_t)x;
                    res.which = which;
                }
                if (p->nl)      /* the route's local zones, looked at before: charged now */
                    charge_local(p, &res);
            }
            pend_put(rc, p);
            done(arg, &res);
            return;
        }
    } else {
        count_err(rc->st, PX_CLUSTER_ERR_REPLY);
        if (p->arg) {
            /* an error (a password changed, OOM...): this one locally */
            set_down(rc, r->type == REDIS_REPLY_ERROR ? r->str : "gave an unexpected answer");
            answer_local(p);
        }
    }
    pend_put(rc, p);
}

static enum px_limit_verdict remote_check(struct px_limit_zone *const *zones, size_t n, const struct px_limit_key *k,
                                          uint64_t now_ms, struct px_limit_result *res, px_limit_done_fn done,
                                          void *arg)
{
    struct rconn *rc = tl_conn;
    struct pend *p;
    int fallback = 0;           /* local because of Redis (counted) */

    if (PX_UNLIKELY(rc == NULL || n > MAX_ZONES))
        goto local;
    if (PX_UNLIKELY(!rc->up && !rc->starting)) {
        fallback = 1;
        goto local;
    }
    uint8_t sidx[MAX_ZONES], lidx[MAX_ZONES], ns = 0, nl = 0;
    for (size_t i = 0; i < n; i++) {
        if (px_limit_zone_shared(zones[i]))
            sidx[ns++] = (uint8_t)i;
        else
            lidx[nl++] = (uint8_t)i;
    }
    if (PX_UNLIKELY(ns == 0))
        goto local;
    if (PX_UNLIKELY(nl > 0)) {
        /* a route mixing local zones in: they are looked at first (one that
         * would reject rejects, nothing charged) and charged once Redis passes */
        struct px_limit_zone *lz[MAX_ZONES];
        for (size_t i = 0; i < nl; i++)
            lz[i] = zones[lidx[i]];
        if (px_limit_look(lz, nl, k, now_ms, res) == PX_LIMIT_REJECT) {
            res->which = lidx[res->which];
            return PX_LIMIT_REJECT;
        }
    }
    if ((p = PEND(px_list_first(&rc->spare))) != NULL)
        px_list_remove(&rc->spare, &p->link);
    else if ((p = calloc(1, sizeof(*p))) == NULL)
        goto local;
    memcpy(p->sidx, sidx, ns);
    memcpy(p->lidx, lidx, nl);
    p->ns = ns;
    p->nl = nl;
    p->rc = rc;
    p->done = done;
    p->arg = arg;
    p->zones = zones;
    p->n = n;
    p->key = *k;
    if (send_check(rc, p, 0) < 0) {
        pend_put(rc, p);
        set_down(rc, "cannot be reached");
        fallback = 1;
        goto local;
    }
    p->sent_us = px_now_us();
    p->deadline_ms = p->sent_us / 1000 + g.timeout_ms;
    p->waiting = 1;
    px_list_insert_tail(&rc->waiting, &p->link);
    arm_timer(rc);
    return PX_LIMIT_LATER;

local:
    if (fallback)
        count_fallback(rc->st, zones, n);
    px_limit_check(zones, n, k, now_ms, res);
    return res->verdict;
}

static void remote_cancel(struct px_limit_zone *const *zones, size_t n, void *arg)
{
    struct rconn *rc = tl_conn;
    if (rc == NULL)
        return;
    struct px_list_node *node;
    px_list_foreach(&rc->waiting, node) {
        struct pend *p = PEND(node);
        if (p->arg == arg) {
            p->arg = NULL;      /* the reply frees it */
            wait_unlink(rc, p);
            return;
        }
    }
}

static const struct px_limit_ops remote_ops = {
    .kind = "redis",
    .check = remote_check,
    .cancel = remote_cancel,
    .keys = NULL,
    .free = NULL,
};

/* ---- HTTP-01 tokens another instance put (worker threads) ----
 * GET KEY_PREFIX "acme:token:" TOKEN on the worker's connection; the
 * answer (the key authorization, checked by the caller) or absent. Redis
 * down: absent at once; no answer within `timeout`: absent then, and the
 * connection counts as down as for the limit checks. */

/* A lookup in flight. Freed (to the cache) only by its reply callback,
 * which hiredis calls exactly once (NULL when the connection goes). */
struct tpend {
    struct px_list_node link;   /* on rc->twaiting (`waiting` set) or rc->tspare */
    struct rconn *rc;
    px_challenge_done_fn done;
    void *arg;                  /* NULL: answered (timeout) or cancelled: the reply is dropped */
    int waiting;
    uint64_t deadline_ms;
};

static void token_unlink(struct rconn *rc, struct tpend *p)
{
    if (!p->waiting)
        return;
    px_list_remove(&rc->twaiting, &p->link);
    p->waiting = 0;
}

static void token_put(struct rconn *rc, struct tpend *p)
{
    token_unlink(rc, p);
    p->arg = NULL;
    px_list_insert_head(&rc->tspare, &p->link);
}

static void token_arm(struct rconn *rc)
{
    struct tpend *p = TPEND(px_list_first(&rc->twaiting));
    if (p)
        arm_deadline(&rc->ttimer, p->deadline_ms);
}

static void on_token_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *rc = arg;
    uint64_t now = px_now_ms();
    int late = 0;
    struct tpend *p;
    while ((p = TPEND(px_list_first(&rc->twaiting))) != NULL && p->deadline_ms <= now) {
        px_challenge_done_fn done = p->done;
        void *parg = p->arg;
        count_err(rc->st, PX_CLUSTER_ERR_TIMEOUT);
        if (!late) {
            late = 1;
            set_down(rc, "did not answer in time");
        }
        p->arg = NULL;          /* its reply, when it comes, frees it */
        token_unlink(rc, p);
        done(parg, NULL, -1);
    }
    token_arm(rc);
}

static void on_token_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct tpend *p = priv;
    struct rconn *rc = p->rc;
    const redisReply *r = reply;
    px_challenge_done_fn done = p->done;
    void *arg = p->arg;
    const char *v = NULL;
    int n = -1;

    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL))
        set_up(rc);             /* Redis answers (a late answer too) */
    else if (r)
        count_err(rc->st, PX_CLUSTER_ERR_REPLY);
    if (r && r->type == REDIS_REPLY_STRING) {
        v = r->str;
        n = r->len > PX_CHALLENGE_KEYAUTH_MAX ? PX_CHALLENGE_KEYAUTH_MAX + 1 : (int)r->len;
    }
    token_put(rc, p);
    if (arg)
        done(arg, v, n);        /* may start another lookup: p is back in the cache */
}

static int token_lookup(const char *token, size_t len, px_challenge_done_fn done, void *arg)
{
    struct rconn *rc = tl_conn;
    char key[64 + sizeof("acme:token:") + PX_CHALLENGE_TOKEN_MAX];
    struct tpend *p;

    if (PX_UNLIKELY(rc == NULL || (!rc->up && !rc->starting) || rc->ac == NULL || len > PX_CHALLENGE_TOKEN_MAX ||
                    g.prefix_len > 64))
        return -1;
    memcpy(key, g.prefix, g.prefix_len);
    memcpy(key + g.prefix_len, "acme:token:", 11);
    memcpy(key + g.prefix_len + 11, token, len);
    if ((p = TPEND(px_list_first(&rc->tspare))) != NULL)
        px_list_remove(&rc->tspare, &p->link);
    else if ((p = calloc(1, sizeof(*p))) == NULL)
        return -1;
    p->rc = rc;
    p->done = done;
    p->arg = arg;
    p->waiting = 0;
    const char *argv[] = {"GET", key};
    size_t argvlen[] = {3, g.prefix_len + 11 + len};
    if (redisAsyncCommandArgv(rc->ac, on_token_reply, p, 2, argv, argvlen) != REDIS_OK) {
        token_put(rc, p);
        return -1;
    }
    px_stats_inc(&rc->st->commands);
    p->deadline_ms = px_now_ms() + g.timeout_ms;
    p->waiting = 1;
    px_list_insert_tail(&rc->twaiting, &p->link);
    token_arm(rc);
    return PX_CHALLENGE_LATER;
}

static void token_cancel(void *arg)
{
    struct rconn *rc = tl_conn;
    if (rc == NULL)
        return;
    struct px_list_node *node;
    px_list_foreach(&rc->twaiting, node) {
        struct tpend *p = TPEND(node);
        if (p->arg == arg) {
            p->arg = NULL;      /* the reply frees it */
            token_unlink(rc, p);
            return;
        }
    }
}

static const struct px_challenge_remote token_ops = {
    .lookup = token_lookup,
    .cancel = token_cancel,
};

/* The worker's lookups at its exit: before the connection goes (no answer
 * reaches the requests), and the cache after (the replies returned theirs). */
static void token_drop(struct rconn *rc)
{
    struct tpend *p;
    while ((p = TPEND(px_list_first(&rc->twaiting))) != NULL) {
        p->arg = NULL;
        token_unlink(rc, p);
    }
    evtimer_del(&rc->ttimer);
}

static void token_free_cache(struct rconn *rc)
{
    struct tpend *p;
    while ((p = TPEND(px_list_first(&rc->tspare))) != NULL) {
        px_list_remove(&rc->tspare, &p->link);
        free(p);
    }
}

static void on_pong(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *rc = ac->data;
    rc->ping_out = 0;
    if (reply_ok(reply))
        set_up(rc);
}

#define PING_GIVE_UP_MS 5000     /* a PING unanswered this long: a new connection */

static void on_ping_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *rc = arg;
    if (rc->up || rc->ac == NULL)
        return;
    if (rc->ping_out) {
        if (px_now_ms() - rc->ping_ms >= PING_GIVE_UP_MS) {
            /* a Redis that accepts but never answers (stopped, a black hole):
             * let go of the connection (its callbacks run with NULL, then
             * on_disconnect retries) */
            redisAsyncContext *ac = rc->ac;
            rc->ping_out = 0;
            count_err(rc->st, PX_CLUSTER_ERR_TIMEOUT);
            redisAsyncFree(ac);
        }
        return;
    }
    if (redisAsyncCommand(rc->ac, on_pong, NULL, "PING") == REDIS_OK) {
        px_stats_inc(&rc->st->commands);
        rc->ping_out = 1;
        rc->ping_ms = px_now_ms();
    }
}

/* On the worker's thread, as its loop begins: the hooks run on the main
 * thread, and the check finds its connection through tl_conn. */
static void w_begin(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *rc = arg;
    tl_conn = rc;
    tl_slot = rc->st - blocks < PX_MAX_WORKERS ? &rslots[rc->st - blocks] : NULL;
    rconn_connect(rc);
}

static void w_start(struct px_worker *w)
{
    struct rconn *rc;
    if (!g.on || w->id < 0 || w->id >= g.nconns || (rc = malloc(sizeof(*rc))) == NULL)
        return;
    rconn_init(rc, w->base, 0, w->id);
    /* down until ready: in ndown (not nfailed) from the start, silently */
    rc->starting = 1;
    atomic_fetch_add(&ndown, 1);
    evtimer_assign(&rc->timer, w->base, on_timer, rc);
    evtimer_assign(&rc->ttimer, w->base, on_token_timer, rc);
    event_assign(&rc->ping, w->base, -1, EV_PERSIST, on_ping_timer, rc);
    struct timeval tv = {PING_MS / 1000, (PING_MS % 1000) * 1000}, now = {0, 0};
    event_add(&rc->ping, &tv);
    g.conns[w->id] = rc;
    event_base_once(w->base, -1, EV_TIMEOUT, w_begin, rc, &now);
}

/* After the worker's thread ended (main thread). */
static void w_exit(struct px_worker *w)
{
    struct rconn *rc = w->id >= 0 && w->id < g.nconns ? g.conns[w->id] : NULL;
    if (rc == NULL)
        return;
    g.conns[w->id] = NULL;
    /* the requests are going: no answer reaches them */
    struct pend *p;
    while ((p = PEND(px_list_first(&rc->waiting))) != NULL) {
        p->arg = NULL;
        wait_unlink(rc, p);
    }
    token_drop(rc);
    evtimer_del(&rc->retry);
    evtimer_del(&rc->timer);
    event_del(&rc->ping);
    if (rc->ac) {
        redisAsyncContext *ac = rc->ac;
        rc->closing = 1;
        rc->ac = NULL;
        redisAsyncFree(ac); /* the replies' callbacks run with NULL: they free their pends */
    }
    if (!rc->up)
        atomic_fetch_sub(&ndown, 1);
    if (rc->failed)
        atomic_fetch_sub(&nfailed, 1);
    while ((p = PEND(px_list_first(&rc->spare))) != NULL) {
        px_list_remove(&rc->spare, &p->link);
        free(p);
    }
    token_free_cache(rc);
    free(rc);
}

const struct px_worker_module px_cluster_module = {
    .name = "cluster",
    .start = w_start,
    .exit = w_exit,
};

/* ---- the main thread: start, heartbeats, status ---- */

struct px_cluster {
    struct rconn rc;
    struct event beat;
    char *instance;
    char record[512];
    uint64_t last_write_ms;
    char **inst;                /* the live instances' records */
    size_t ninst;
    int beat_out;
    uint64_t beat_ms;           /* when the outstanding heartbeat went out */
    unsigned char secret[32];   /* secret_file's key (has_secret) */
    int has_secret;
};

static void free_instances(struct px_cluster *c)
{
    for (size_t i = 0; i < c->ninst; i++)
        free(c->inst[i]);
    free(c->inst);
    c->inst = NULL;
    c->ninst = 0;
}

static void on_beat(redisAsyncContext *ac, void *reply, void *priv)
{
    struct px_cluster *c = priv;
    const redisReply *r = reply;
    c->beat_out = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            count_err(c->rc.st, PX_CLUSTER_ERR_REPLY);
        if (r && r->type == REDIS_REPLY_ERROR)
            px_log(PX_LOG_WARN, "cluster: heartbeat: %s", r->str);
        return;
    }
    free_instances(c);
    if (r->elements && (c->inst = calloc(r->elements, sizeof(*c->inst))) != NULL)
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING && (c->inst[c->ninst] = strdup(r->element[i]->str)))
                c->ninst++;
}

static void beat(struct px_cluster *c)
{
    uint64_t now = px_now_ms();
    int write = c->last_write_ms == 0 || now - c->last_write_ms >= BEAT_WRITE_MS;
    char ttl[24];
    if (!c->rc.up || c->rc.ac == NULL || c->beat_out)
        return;
    snprintf(ttl, sizeof(ttl), "%d", BEAT_TTL_MS);
    const char *argv[] = {"EVAL", BEAT_LUA, "1", g.prefix, c->instance, c->record, ttl, write ? "1" : "0"};
    if (redisAsyncCommandArgv(c->rc.ac, on_beat, c, (int)PX_ARRAY_LEN(argv), argv, NULL) == REDIS_OK) {
        px_stats_inc(&c->rc.st->commands);
        c->beat_out = 1;
        c->beat_ms = now;
        if (write)
            c->last_write_ms = now;
    }
}

static void on_beat_timer(evutil_socket_t fd, short what, void *arg)
{
    struct px_cluster *c = arg;
    if (c->beat_out && c->rc.ac && px_now_ms() - c->beat_ms >= PING_GIVE_UP_MS) {
        /* Redis stopped answering: down (status says so), and a new connection */
        redisAsyncContext *ac = c->rc.ac;
        c->rc.up = 0;
        count_err(c->rc.st, PX_CLUSTER_ERR_TIMEOUT);
        redisAsyncFree(ac);     /* on_beat (NULL) clears beat_out; on_disconnect retries */
        return;
    }
    beat(c);
}

static void main_up(struct rconn *rc)
{
    struct px_cluster *c = px_container_of(rc, struct px_cluster, rc);
    c->beat_out = 0;
    c->last_write_ms = 0;       /* a restarted Redis hears from us at once */
    beat(c);
}

int px_cluster_read_secret(const char *path, unsigned char key[32], char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        char why[256];
        snprintf(err, errlen, "%s: %s", path, px_open_error(path, errno, why, sizeof(why)));
        return -1;
    }
    size_t n = fread(key, 1, 32, f);
    fclose(f);
    if (n < 32) {
        explicit_bzero(key, 32);
        snprintf(err, errlen, "%s has %zu bytes, needs at least 32 (head -c 32 /dev/urandom > FILE)", path, n);
        return -1;
    }
    return 0;
}

static char *read_password(const char *path, char *err, size_t errlen)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        char why[256];
        snprintf(err, errlen, "[cluster] password_file %s: %s", path, px_open_error(path, errno, why, sizeof(why)));
        return NULL;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    if (n == 0 || strchr(buf, '\n')) {
        snprintf(err, errlen, "[cluster] password_file %s: must hold the password on one line", path);
        return NULL;
    }
    char *p = strdup(buf);
    explicit_bzero(buf, sizeof(buf));
    if (p == NULL)
        snprintf(err, errlen, "out of memory");
    return p;
}

static const char *where(void)
{
    static char w[400];
    if (g.addr.path[0])
        snprintf(w, sizeof(w), "unix:%s", g.addr.path);
    else
        snprintf(w, sizeof(w), "%s:%d", g.addr.host, g.addr.port);
    return w;
}

/* At start: a refused password or database is the operator's mistake,
 * said now; an unreachable Redis is an outage, which the zones survive. */
static int check_sync(char *err, size_t errlen)
{
    struct timeval tv = {g.timeout_ms < 2000 ? 2 : (time_t)(g.timeout_ms / 1000) + 1, 0};
    redisContext *c = g.addr.path[0] ? redisConnectUnixWithTimeout(g.addr.path, tv)
                                     : redisConnectWithTimeout(g.addr.host, g.addr.port, tv);
    redisReply *r = NULL;
    int rc = 0;

    if (c == NULL || c->err) {
        atomic_store(&announced, 1);
        px_log(PX_LOG_WARN, "cluster: Redis at %s: %s: shared limit zones start on this instance's local state",
               where(), c ? c->errstr : "out of memory");
        redisFree(c);
        return 0;
    }
    redisSetTimeout(c, tv);
    if (g.password) {
        r = redisCommand(c, "AUTH %s", g.password);
        if (r && r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "[cluster] Redis at %s refused the password of password_file: %s", where(), r->str);
            rc = -1;
            goto out;
        }
        freeReplyObject(r);
    }
    if (g.addr.db) {
        r = redisCommand(c, "SELECT %d", g.addr.db);
        if (r && r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "[cluster] Redis at %s refused database %d: %s", where(), g.addr.db, r->str);
            rc = -1;
            goto out;
        }
        freeReplyObject(r);
    }
    r = redisCommand(c, "PING");
    if (r && r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "[cluster] Redis at %s: %s%s", where(), r->str,
                 strncmp(r->str, "NOAUTH", 6) == 0 ? " (set password_file)" : "");
        rc = -1;
        goto out;
    }
    if (r == NULL) {
        atomic_store(&announced, 1);
        px_log(PX_LOG_WARN, "cluster: Redis at %s: %s: shared limit zones start on this instance's local state",
               where(), c->errstr);
    }
out:
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

struct px_cluster *px_cluster_start(struct event_base *main_base, const struct px_cluster_conf *cc,
                                    const char *listen, int nworkers, char *err, size_t errlen)
{
    struct px_cluster *c = calloc(1, sizeof(*c));
    char host[256];
    unsigned char md[SHA_DIGEST_LENGTH];

    if (c == NULL)
        goto oom;
    const char *perr = px_parse_redis(cc->redis, &g.addr);
    if (perr) {
        snprintf(err, errlen, "[cluster] redis: %s", perr);
        goto fail;
    }
    if (cc->password_file && (g.password = read_password(cc->password_file, err, errlen)) == NULL)
        goto fail;
    if (cc->secret_file) {
        char why[512];
        if (px_cluster_read_secret(cc->secret_file, c->secret, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "[cluster] secret_file: %s", why);
            goto fail;
        }
        c->has_secret = 1;
    }
    if ((g.prefix = strdup(cc->key_prefix)) == NULL)
        goto oom;
    g.prefix_len = strlen(g.prefix);
    g.timeout_ms = cc->timeout_ms;
    SHA1((const unsigned char *)LIMIT_LUA, sizeof(LIMIT_LUA) - 1, md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(g.sha + 2 * i, 3, "%02x", md[i]);
    if (hiredis_fn == NULL) {
        redisReader *rd = redisReaderCreate();
        if (rd == NULL)
            goto oom;
        hiredis_fn = rd->fn; /* hiredis' static table, the same for every reader */
        redisReaderFree(rd);
    }
    g.head_len = (size_t)snprintf(g.head, sizeof(g.head), "$7\r\nEVALSHA\r\n$40\r\n%s\r\n", g.sha);
    if (cc->instance)
        c->instance = strdup(cc->instance);
    else {
        if (gethostname(host, sizeof(host)) < 0)
            snprintf(host, sizeof(host), "proxyd");
        host[sizeof(host) - 1] = '\0';
        c->instance = strdup(host);
    }
    if (c->instance == NULL)
        goto oom;
    snprintf(c->record, sizeof(c->record), "{\"name\":\"%s\",\"version\":\"%s\",\"pid\":%d,\"listen\":\"%s\"}",
             c->instance, PX_VERSION, (int)getpid(), listen ? listen : "");
    if (check_sync(err, errlen) < 0)
        goto fail;
    if ((g.conns = calloc((size_t)(nworkers > 0 ? nworkers : 1), sizeof(*g.conns))) == NULL)
        goto oom;
    g.nconns = nworkers;
    g.on = 1;
    px_limit_set_remote(&remote_ops);
    px_challenge_set_remote(&token_ops);
    rconn_init(&c->rc, main_base, 1, -1);
    g.main = c;
    c->rc.on_up = main_up;
    event_assign(&c->beat, main_base, -1, EV_PERSIST, on_beat_timer, c);
    struct timeval tv = {BEAT_MS / 1000, (BEAT_MS % 1000) * 1000};
    event_add(&c->beat, &tv);
    rconn_connect(&c->rc);
    return c;

oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (c) {
        free(c->instance);
        explicit_bzero(c->secret, sizeof(c->secret));
    }
    free(c);
    if (g.password) {
        explicit_bzero(g.password, strlen(g.password));
        free(g.password);
        g.password = NULL;
    }
    free(g.prefix);
    g.prefix = NULL;
    return NULL;
}

void px_cluster_free(struct px_cluster *c)
{
    if (c == NULL)
        return;
    event_del(&c->beat);
    evtimer_del(&c->rc.retry);
    if (c->rc.ac) {
        redisAsyncContext *ac = c->rc.ac;
        c->rc.closing = 1;
        c->rc.ac = NULL;
        redisAsyncFree(ac);
    }
    free_instances(c);
    free(c->instance);
    explicit_bzero(c->secret, sizeof(c->secret));
    free(c);
    px_limit_set_remote(NULL);
    px_challenge_set_remote(NULL);
    g.on = 0;
    g.main = NULL;
    free(g.conns);
    g.conns = NULL;
    g.nconns = 0;
    if (g.password) {
        explicit_bzero(g.password, strlen(g.password));
        free(g.password);
        g.password = NULL;
    }
    free(g.prefix);
    g.prefix = NULL;
}

int px_cluster_redis_up(const struct px_cluster *c)
{
    return c && c->rc.up && atomic_load_explicit(&ndown, memory_order_relaxed) == 0;
}

size_t px_cluster_instances(const struct px_cluster *c, const char *const **json)
{
    *json = (const char *const *)c->inst;
    return c->rc.up ? c->ninst : 0;
}

const char *px_cluster_instance(const struct px_cluster *c)
{
    return c->instance;
}

const unsigned char *px_cluster_secret(const struct px_cluster *c)
{
    return c->has_secret ? c->secret : NULL;
}

json_t *px_cluster_json(const struct px_cluster *c)
{
    const char *const *recs;
    size_t n = px_cluster_instances(c, &recs);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *o = json_loads(recs[i], 0, NULL);
        if (o)
            json_array_append_new(list, o);
    }
    return json_pack("{s:s, s:s, s:o*}", "instance", px_cluster_instance(c), "redis",
                     px_cluster_redis_up(c) ? "up" : "down", "instances", list);
}

int px_cluster_stats(struct px_cluster_stats *out)
{
    if (!g.on || g.main == NULL)
        return -1;
    memset(out, 0, sizeof(*out));
    out->redis_up = px_cluster_redis_up(g.main);
    for (int w = 0; w <= PX_MAX_WORKERS; w++) {
        struct cl_block *b = &blocks[w];
        out->commands += atomic_load_explicit(&b->commands, memory_order_relaxed);
        for (int k = 0; k < PX_CLUSTER_NERR; k++)
            out->errors[k] += atomic_load_explicit(&b->errors[k], memory_order_relaxed);
        for (int i = 0; i < PX_CLUSTER_NBUCKETS; i++)
            out->seconds[i] += atomic_load_explicit(&b->seconds[i], memory_order_relaxed);
        out->seconds_sum_us += atomic_load_explicit(&b->seconds_sum_us, memory_order_relaxed);
        uint32_t nfb = atomic_load_explicit(&b->nfb, memory_order_acquire);
        for (uint32_t j = 0; j < nfb; j++) {
            size_t z = 0;
            while (z < out->nfallbacks && strcmp(out->fallbacks[z].zone, b->fb[j].zone) != 0)
                z++;
            if (z == out->nfallbacks) {
                if (z == PX_CLUSTER_MAX_ZONES)
                    continue;
                out->fallbacks[z].zone = b->fb[j].zone;
                out->nfallbacks++;
            }
            out->fallbacks[z].n += atomic_load_explicit(&b->fb[j].n, memory_order_relaxed);
        }
    }
    for (int i = 1; i < PX_CLUSTER_NBUCKETS; i++) /* cumulative */
        out->seconds[i] += out->seconds[i - 1];
    return 0;
}

/* ---- the main connection for others ([acme] storage = redis) ---- */

struct gen {
    px_cluster_reply_fn fn;
    void *arg;
};

static void on_generic(redisAsyncContext *ac, void *reply, void *priv)
{
    struct gen *g1 = priv;
    g1->fn(g1->arg, reply);
    free(g1);
}

int px_cluster_command(struct px_cluster *c, px_cluster_reply_fn fn, void *arg, int argc, const char *const *argv,
                       const size_t *lens)
{
    struct gen *g1;
    if (c == NULL || !c->rc.up || c->rc.ac == NULL || (g1 = malloc(sizeof(*g1))) == NULL)
        return -1;
    g1->fn = fn;
    g1->arg = arg;
    if (redisAsyncCommandArgv(c->rc.ac, on_generic, g1, argc, (const char **)argv, lens) != REDIS_OK) {
        free(g1);
        return -1;
    }
    px_stats_inc(&c->rc.st->commands);
    return 0;
}

int px_cluster_main_up(const struct px_cluster *c)
{
    return c && c->rc.up && c->rc.ac;
}

const char *px_cluster_prefix(const struct px_cluster *c)
{
    return g.prefix;
}

struct px_cluster_sub {
    struct rconn rc;
    char *channel;
    void (*on_msg)(void *arg, const char *msg, size_t len);
    void (*on_up)(void *arg);
    void *arg;
};

/* Called for the SUBSCRIBE's answer and then for every message. */
static void on_sub(redisAsyncContext *ac, void *reply, void *priv)
{
    struct px_cluster_sub *s = priv;
    const redisReply *r = reply;
    if (r == NULL || s->rc.closing || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    const redisReply *kind = r->element[0], *msg = r->element[2];
    if (kind->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(kind->str, "subscribe") == 0) {
        if (s->on_up)
            s->on_up(s->arg);
    } else if (strcmp(kind->str, "message") == 0 && msg->type == REDIS_REPLY_STRING) {
        s->on_msg(s->arg, msg->str, msg->len);
    }
}

static void sub_up(struct rconn *rc)
{
    struct px_cluster_sub *s = px_container_of(rc, struct px_cluster_sub, rc);
    if (rc->ac)
        redisAsyncCommand(rc->ac, on_sub, s, "SUBSCRIBE %s", s->channel);
}

struct px_cluster_sub *px_cluster_subscribe(struct px_cluster *c, const char *channel,
                                            void (*on_msg)(void *arg, const char *msg, size_t len),
                                            void (*on_up)(void *arg), void *arg)
{
    struct px_cluster_sub *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->channel = strdup(channel)) == NULL) {
        free(s);
        return NULL;
    }
    s->on_msg = on_msg;
    s->on_up = on_up;
    s->arg = arg;
    rconn_init(&s->rc, c->rc.base, 1, -1);
    s->rc.on_up = sub_up;
    rconn_connect(&s->rc);
    return s;
}

void px_cluster_sub_free(struct px_cluster_sub *s)
{
    if (s == NULL)
        return;
    evtimer_del(&s->rc.retry);
    if (s->rc.ac) {
        redisAsyncContext *ac = s->rc.ac;
        s->rc.closing = 1;
        s->rc.ac = NULL;
        redisAsyncFree(ac);
    }
    free(s->channel);
    free(s);
}
