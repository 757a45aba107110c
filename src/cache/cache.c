/* cache — see cache.h and the cache section of myriad.h.
 *
 * One lookup (myr_cached), in order:
 *
 *   1. L1, no lease: a fresh value (or a cached "absent") answers at once;
 *      a stale one answers at once and starts a background refresh (a
 *      flight without waiters) unless one runs in this worker already.
 *   2. A flight for the key in this worker (single flight): the call waits
 *      on it (a stampede wait).
 *   3. A new flight: L1 again, asking for the key's fill lease. Lease busy
 *      (another worker fills): poll L1 every POLL_MS until the value shows
 *      up or the lease runs out. Lease taken: L2 (Redis GET), then the
 *      source's fill; what it finds goes to L1 (if no delete voided the
 *      lease's ticket meanwhile) and L2 (SET PX ttl), then to every waiter.
 *
 * Answers never run inside myr_cached: a finished call goes on the
 * worker's ready list, which a deferred callback drains at the end of the
 * iteration. Each call copies its value into its request's arena, so a
 * flight's memory is its own and dies with it.
 *
 * Requests and flights are independent: a flight holds calls (waiters),
 * not requests. A request whose client goes away has its waiting calls
 * detached and answered MYR_CACHE_CANCELLED (a request-wide cancel hook,
 * chained with the handler's like myr_offload's); the flight goes on and
 * still stores what it finds. Background refreshes have no request at all.
 *
 * Invalidation. With Redis, each worker registers a tracker for
 * --cache-prefix on its first call (data/redis.h: CLIENT TRACKING BCAST
 * PREFIX, REDIRECT, NOLOOP): a key changed in Redis by anyone but this
 * worker's own command connection is deleted from the L1; when
 * invalidations may have been lost (tracking lost or set up again after a
 * loss, Redis flushed), the whole L1 is dropped (l1_flush: a new
 * generation). A fill whose lookup began while no tracking was active
 * stores its value in L1 for at most UNTRACKED_TTL_MS, since a change made
 * elsewhere meanwhile could not reach us. Deletes (myr_cache_del or
 * tracking) void the L1 ticket of a fill of the same key still running, so
 * a value read before the change is neither stored in L1 nor SET in L2.
 *
 * The echo. Workers share the L1 but each has its own Redis connection, so
 * NOLOOP only hides a worker's own writes: when worker A fills a key and
 * SETs it in Redis, the trackers of A's sibling workers are told the key
 * changed and delete it from the shared L1. The next lookup then reads it
 * from Redis (no SET: no further echo) and stores it again. A fill thus
 * costs one extra L2 read per machine; correctness is unaffected.
 *
 * State: `self`, this worker process's cache_worker, made by the first
 * call on the loop thread and used only there (loop state); `machine_l1`,
 * set by the supervisor before forking and read-only after.
 */
#include "cache/cache.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/l1.h"
#include "core/log.h"
#include "data/redis.h"
#include "http/request.h"
#include "http/server.h"
#include "obs/metrics.h"

enum {
    POLL_MS          = 1,     /* a lease waiter looks at L1 this often */
    UNTRACKED_TTL_MS = 1000,  /* L1 life of values learnt while invalidations cannot arrive */
    REPORT_MS        = 1000,  /* the L1 gauges */
    FILL_GRACE_MS    = 1000,  /* beyond max(--cache-lease, --db-timeout): a fill is lost */
    MIN_BUCKETS      = 64,    /* flight table */
    MAX_PENDING_DELS = 4096,  /* L2 deletes kept for Redis to come back, per worker */
};

static l1_cache *machine_l1;   /* see the file comment */

/* ---- metrics ------------------------------------------------------------------------ */

enum tier { TIER_L1, TIER_L2, TIER_NONE };
enum outcome { OUT_FRESH, OUT_STALE, OUT_NEGATIVE, OUT_MISS, OUT_ERROR, OUT_SKIPPED };
enum fill_result { FILL_OK, FILL_ABSENT, FILL_FAILED, FILL_LOST };
enum wait_kind { WAIT_WORKER, WAIT_LEASE };
enum inval_source { INV_LOCAL, INV_REDIS, INV_RESET };
enum l1_event { EV_EVICTION, EV_EXPIRATION, EV_RECOVERY, EV_STORE_VOIDED, EV_TOO_BIG };

static const char *const m_tiers[] = { "l1", "l2", NULL };
static const char *const m_outcomes[] = { "fresh", "stale", "negative", "miss", "error",
                                          "skipped", NULL };
static const char *const m_fills[] = { "ok", "absent", "failed", "lost", NULL };
static const char *const m_waits[] = { "worker", "lease", NULL };
static const char *const m_invals[] = { "local", "redis", "reset", NULL };
static const char *const m_events[] = { "eviction", "expiration", "recovery", "store_voided",
                                        "too_big", NULL };

static const metrics_spec m_spec[] = {
    { .name = "myriad_cache_hits_total", .type = METRICS_COUNTER,
      .help = "Cache lookups answered from a tier (fresh, stale or negative), by tier.",
      .label = { "tier" }, .values = { m_tiers } },
    { .name = "myriad_cache_misses_total", .type = METRICS_COUNTER,
      .help = "Cache lookups answered by a fill (their own or one they waited for)." },
    { .name = "myriad_cache_lookups_total", .type = METRICS_COUNTER,
      .help = "Tier lookups made for myr_cached calls, by tier and outcome.",
      .label = { "tier", "outcome" }, .values = { m_tiers, m_outcomes } },
    { .name = "myriad_cache_fills_total", .type = METRICS_COUNTER,
      .help = "Fills run (each one source read), by result.",
      .label = { "result" }, .values = { m_fills } },
    { .name = "myriad_cache_waits_total", .type = METRICS_COUNTER,
      .help = "Stampede waits: calls that joined this worker's fill of the key, "
              "fills that waited for another worker's lease.",
      .label = { "kind" }, .values = { m_waits } },
    { .name = "myriad_cache_invalidations_total", .type = METRICS_COUNTER,
      .help = "Keys deleted from L1 by myr_cache_del or Redis tracking; whole-L1 resets.",
      .label = { "source" }, .values = { m_invals } },
    { .name = "myriad_cache_l1_events_total", .type = METRICS_COUNTER,
      .help = "L1 evictions, expirations, stripes rebuilt after a crash, stores voided "
              "by a concurrent delete, values too big for L1.",
      .label = { "event" }, .values = { m_events } },
    { .name = "myriad_cache_l1_entries", .type = METRICS_GAUGE,
      .help = "Entries in the machine's L1 (fill leases included)." },
    { .name = "myriad_cache_l1_bytes", .type = METRICS_GAUGE,
      .help = "Key and value bytes in the machine's L1." },
};

enum { M_HITS, M_MISSES, M_LOOKUPS, M_FILLS, M_WAITS, M_INVALS, M_EVENTS, M_ENTRIES, M_BYTES,
       M_COUNT };

/* ---- types -------------------------------------------------------------------------- */

typedef struct cache_worker cache_worker;
typedef struct myr_cache_fill flight;
typedef struct cache_call cache_call;

/* An L2 delete (prefix + key) sent, or waiting for Redis to come back: a
 * delete lost while Redis is unreachable would leave the old value there,
 * for every machine to read back, until its ttl. Heap. */
typedef struct pending_del {
    cache_worker       *cw;
    struct pending_del *next;   /* cw->dels while waiting */
    size_t              len;
    char                key[];
} pending_del;

/* The calls of one request still to be answered, and the cancel hook that
 * was in place before ours. In the request's arena. */
typedef struct cache_req {
    myr_req    *req;
    cache_call *pending;                              /* doubly linked: rnext/rprev */
    void      (*prev_cancel)(myr_req *req, void *arg);
    void       *prev_arg;
} cache_req;

/* One myr_cached call, in its request's arena. */
struct cache_call {
    cache_req       *cr;
    cache_call      *rnext, *rprev;   /* cr->pending until delivered */
    flight          *fl;              /* the flight it waits on, or NULL */
    cache_call      *fnext, *fprev;   /* fl->waiters */
    cache_call      *qnext;           /* the worker's ready list */
    myr_cache_done   done;
    void            *arg;
    myr_cache_status st;
    const void      *value;           /* in the request's arena */
    size_t           len;
};

enum phase { PH_LOOKUP, PH_WAIT, PH_L2, PH_FILL };

/* A flight: the work of getting one key's value in this worker. Heap;
 * freed when it finishes, except that a fill running is never freed under
 * its feet (abandoned flights wait for their fill on `orphans`). */
struct myr_cache_fill {
    cache_worker    *cw;
    flight          *hnext;           /* table chain; onext on orphans */
    uint64_t         hash;
    myr_cache_source src;             /* ttl_ms resolved */
    cache_call      *waiters;         /* doubly linked: fnext/fprev */
    enum phase       phase;
    bool             in_table;        /* findable by key */
    bool             filling;         /* src.fill called, myr_cache_fill_done not yet */
    bool             abandoned;       /* the fill took too long: waiters answered */
    bool             leased;          /* holds the key's L1 fill lease */
    bool             waited;          /* has waited for another worker's lease */
    bool             tracked;         /* invalidations flowed when its lookup began */
    bool             has_ticket;
    l1_ticket        ticket;
    uint64_t         owner;           /* lease owner name: pid << 32 | sequence */
    loop_timer       timer;           /* lease polling, or the fill's deadline */
    size_t           klen;
    size_t           rklen;           /* prefix + key */
    char             rkey[];          /* --cache-prefix, key, NUL */
};

struct cache_worker {
    http_server     *srv;
    loop            *loop;
    const config    *cfg;
    l1_cache        *l1;              /* NULL: no L1 */
    bool             redis_configured;/* --redis or $REDIS_URL */
    struct redis    *tracked;         /* the client our tracker is registered with */
    bool             tracking_was_on; /* our tracker has been set up once */
    size_t           plen;            /* strlen(cfg->cache_prefix) */
    pid_t            pid;
    uint64_t         seq;             /* lease owner names */
    flight         **buckets;
    uint32_t         nbuckets, nflights;
    flight          *orphans;
    pending_del     *dels;            /* L2 deletes to send when Redis is back */
    uint32_t         ndels;
    uint64_t         dels_lost;       /* beyond MAX_PENDING_DELS (logged) */
    cache_call      *ready, **ready_tail;
    loop_deferred    deliver;
    loop_timer       report;
    metrics_worker  *mw;
    const metrics_family *m[M_COUNT];
};

static cache_worker *self;   /* see the file comment */

/* ---- small helpers -------------------------------------------------------------------- */

const char *myr_cache_strerror(myr_cache_status st)
{
    static const char *const msg[] = {
#define MYR_CACHE_MSG_(code, text) text,
        MYR_CACHE_STATUSES(MYR_CACHE_MSG_)
#undef MYR_CACHE_MSG_
    };
    return (unsigned)st < sizeof(msg) / sizeof(msg[0]) ? msg[st] : "unknown cache status";
}

static void count(cache_worker *cw, unsigned fam, unsigned combo)
{
    if (cw->m[fam])
        metrics_inc(cw->mw, cw->m[fam], combo);
}

static void count_lookup(cache_worker *cw, enum tier t, enum outcome o)
{
    if (cw->m[M_LOOKUPS])
        metrics_inc(cw->mw, cw->m[M_LOOKUPS], metrics_combo(cw->m[M_LOOKUPS], t, o));
}

static void account(cache_worker *cw, const l1_stats *st)
{
    const metrics_family *f = cw->m[M_EVENTS];
    if (!f)
        return;
    if (st->evictions)
        metrics_add(cw->mw, f, EV_EVICTION, st->evictions);
    if (st->expirations)
        metrics_add(cw->mw, f, EV_EXPIRATION, st->expirations);
    if (st->recoveries) {
        metrics_add(cw->mw, f, EV_RECOVERY, st->recoveries);
        log_warn("cache: rebuilt an L1 stripe whose lock holder died");
    }
}

static uint64_t now_ms(const cache_worker *cw) { return loop_now(cw->loop) / 1000000u; }

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static const char *key_of(const flight *fl) { return fl->rkey + fl->cw->plen; }

/* May values learnt now stay in L1 for their whole ttl? Only if a change
 * made elsewhere would reach us: no Redis (nothing elsewhere), or Redis
 * with tracking set up. */
static bool invalidations_flow(const cache_worker *cw)
{
    if (!cw->redis_configured)
        return true;
    return cw->srv->redis && redis_tracking_active(cw->srv->redis);
}

/* The client for L2 now, or NULL (none, or down: its breaker is open). */
static struct redis *l2(const cache_worker *cw)
{
    struct redis *r = cw->srv->redis;
    return r && redis_available(r) ? r : NULL;
}

/* ---- the worker's state ------------------------------------------------------------------ */

static void dels_flush(cache_worker *cw);

static void on_report(loop_timer *t)
{
    cache_worker *cw = container_of(t, cache_worker, report);
    l1_info in = { 0 };
    if (cw->l1 && l1_reporter(cw->l1, cw->pid))
        l1_info_get(cw->l1, &in);   /* else 0: another worker reports the machine's */
    if (cw->m[M_ENTRIES])
        metrics_set(cw->mw, cw->m[M_ENTRIES], 0, in.entries);
    if (cw->m[M_BYTES])
        metrics_set(cw->mw, cw->m[M_BYTES], 0, in.bytes);
    dels_flush(cw);
    loop_timer_start(cw->loop, t, REPORT_MS, on_report);
}

static void on_deliver(loop_deferred *d);

static cache_worker *worker_of(myr_req *req)
{
    if (self)
        return self;
    http_server *s = req->srv;
    cache_worker *cw = calloc(1, sizeof(*cw));
    if (!cw || !(cw->buckets = calloc(MIN_BUCKETS, sizeof(flight *)))) {
        free(cw);
        return NULL;
    }
    cw->srv = s;
    cw->loop = s->loop;
    cw->cfg = s->cfg;
    cw->l1 = machine_l1;
    cw->redis_configured = redis_config_url(s->cfg) != NULL;
    cw->plen = strlen(s->cfg->cache_prefix);
    cw->pid = getpid();
    cw->nbuckets = MIN_BUCKETS;
    cw->ready_tail = &cw->ready;
    cw->mw = s->metrics;
    metrics_registry *reg = metrics_registry_of(s->metrics);
    for (unsigned i = 0; i < M_COUNT && reg; i++)
        cw->m[i] = metrics_family_add(reg, &m_spec[i]);   /* NULL: not counted */
    on_report(&cw->report);
    self = cw;
    return cw;
}

static void on_invalidate(void *arg, const char *key, size_t klen)
{
    cache_worker *cw = arg;
    if (!cw->l1 || klen <= cw->plen || memcmp(key, cw->cfg->cache_prefix, cw->plen))
        return;
    l1_stats st = { 0 };
    l1_del(cw->l1, key + cw->plen, klen - cw->plen, &st);
    account(cw, &st);
    count(cw, M_INVALS, INV_REDIS);
}

/* Invalidations may have been lost (tracking set up again, lost, Redis
 * flushed): drop the whole L1. Except the first set-up of this worker's
 * tracker: nothing it stored before could miss an invalidation, since it
 * stored only values capped at UNTRACKED_TTL_MS, and what the other
 * workers stored is covered by their own trackers. */
static void on_reset(void *arg)
{
    cache_worker *cw = arg;
    if (!cw->tracking_was_on && cw->srv->redis && redis_tracking_active(cw->srv->redis)) {
        cw->tracking_was_on = true;
        return;
    }
    if (cw->l1)
        l1_flush(cw->l1);
    count(cw, M_INVALS, INV_RESET);
}

/* Registers the worker's tracker with its Redis client once it exists. */
static void track(cache_worker *cw)
{
    struct redis *r = cw->srv->redis;
    if (!r || r == cw->tracked || !cw->l1)
        return;
    const char *prefix = cw->cfg->cache_prefix;
    if (redis_track_prefixes(r, &prefix, 1, on_invalidate, on_reset, cw) == 0)
        cw->tracked = r;
}

/* ---- answering calls ------------------------------------------------------------------------ */

static void cache_on_cancel(myr_req *req, void *arg);

static cache_call *call_new(cache_worker *cw, myr_req *req, myr_cache_done done, void *arg)
{
    cache_req *cr = req->on_cancel == cache_on_cancel ? req->cancel_arg : NULL;
    if (!cr) {
        if (!(cr = myr_alloc(req, sizeof(*cr))))
            return NULL;
        *cr = (cache_req){ .req = req, .prev_cancel = req->on_cancel,
                           .prev_arg = req->cancel_arg };
    }
    cache_call *c = myr_alloc(req, sizeof(*c));
    if (!c)
        return NULL;
    *c = (cache_call){ .cr = cr, .rnext = cr->pending, .done = done, .arg = arg };
    if (cr->pending)
        cr->pending->rprev = c;
    cr->pending = c;
    myr_req_on_cancel(req, cache_on_cancel, cr);
    return c;
}

static void call_unpend(cache_call *c)
{
    cache_req *cr = c->cr;
    if (c->rprev)
        c->rprev->rnext = c->rnext;
    else
        cr->pending = c->rnext;
    if (c->rnext)
        c->rnext->rprev = c->rprev;
    c->rnext = c->rprev = NULL;
    myr_req *req = cr->req;
    if (!cr->pending && req->on_cancel == cache_on_cancel && req->cancel_arg == cr)
        myr_req_on_cancel(req, cr->prev_cancel, cr->prev_arg);   /* the handler's again */
}

static void flight_detach(flight *fl, cache_call *c)
{
    if (c->fprev)
        c->fprev->fnext = c->fnext;
    else
        fl->waiters = c->fnext;
    if (c->fnext)
        c->fnext->fprev = c->fprev;
    c->fnext = c->fprev = NULL;
    c->fl = NULL;
}

/* Finishes call c: the answer goes on the ready list (copied into the
 * request's arena unless `owned`), delivered at the end of the iteration. */
static void call_finish(cache_worker *cw, cache_call *c, myr_cache_status st, const void *value,
                        size_t len, bool owned)
{
    if (c->fl)
        flight_detach(c->fl, c);
    if (st == MYR_CACHE_OK && !owned && len) {
        void *copy = myr_alloc(c->cr->req, len);
        if (copy)
            memcpy(copy, value, len);
        else
            st = MYR_CACHE_NOMEM;
        value = copy;
    }
    c->st = st;
    c->value = st == MYR_CACHE_OK ? (len ? value : "") : NULL;
    c->len = st == MYR_CACHE_OK ? len : 0;
    *cw->ready_tail = c;
    cw->ready_tail = &c->qnext;
    loop_defer(cw->loop, &cw->deliver, on_deliver);
}

/* The ready list, at the end of the iteration. Calls finished by these
 * callbacks wait for the next round (loop_defer from a deferred callback). */
static void on_deliver(loop_deferred *d)
{
    cache_worker *cw = container_of(d, cache_worker, deliver);
    cache_call *c = cw->ready;
    cw->ready = NULL;
    cw->ready_tail = &cw->ready;
    while (c) {
        cache_call *next = c->qnext;   /* c dies with its request in done */
        call_unpend(c);
        c->done(c->cr->req, c->arg, c->st, c->value, c->len);
        c = next;
    }
}

/* The client went away: its waiting calls leave their flights (which go
 * on) and are answered CANCELLED; then the handler's own hook runs. */
static void cache_on_cancel(myr_req *req, void *arg)
{
    cache_req *cr = arg;
    cache_worker *cw = self;
    for (cache_call *c = cr->pending; c; c = c->rnext)
        if (c->fl)
            call_finish(cw, c, MYR_CACHE_CANCELLED, NULL, 0, true);
    if (cr->prev_cancel)
        cr->prev_cancel(req, cr->prev_arg);
}

/* ---- the flight table ------------------------------------------------------------------------ */

static flight *flight_find(cache_worker *cw, const void *key, size_t klen)
{
    uint64_t h = hash_bytes(key, klen);
    for (flight *f = cw->buckets[h & (cw->nbuckets - 1)]; f; f = f->hnext)
        if (f->hash == h && f->klen == klen && memcmp(key_of(f), key, klen) == 0)
            return f;
    return NULL;
}

static void table_grow(cache_worker *cw)
{
    uint32_t n = cw->nbuckets * 2;
    flight **b = calloc(n, sizeof(*b));
    if (!b)
        return;   /* longer chains, still correct */
    for (uint32_t i = 0; i < cw->nbuckets; i++)
        for (flight *f = cw->buckets[i], *next; f; f = next) {
            next = f->hnext;
            f->hnext = b[f->hash & (n - 1)];
            b[f->hash & (n - 1)] = f;
        }
    free(cw->buckets);
    cw->buckets = b;
    cw->nbuckets = n;
}

static flight *flight_new(cache_worker *cw, const void *key, size_t klen,
                          const myr_cache_source *src)
{
    flight *f = malloc(sizeof(*f) + cw->plen + klen + 1);
    if (!f)
        return NULL;
    *f = (flight){ .cw = cw, .hash = hash_bytes(key, klen), .src = *src, .klen = klen,
                   .rklen = cw->plen + klen, .in_table = true,
                   .owner = (uint64_t)cw->pid << 32 | (++cw->seq & 0xffffffffu) };
    memcpy(f->rkey, cw->cfg->cache_prefix, cw->plen);
    memcpy(f->rkey + cw->plen, key, klen);
    f->rkey[f->rklen] = '\0';
    if (cw->nflights >= 2 * cw->nbuckets)
        table_grow(cw);
    flight **b = &cw->buckets[f->hash & (cw->nbuckets - 1)];
    f->hnext = *b;
    *b = f;
    cw->nflights++;
    return f;
}

static void flight_unlink(flight *f)
{
    if (!f->in_table)
        return;
    cache_worker *cw = f->cw;
    flight **p = &cw->buckets[f->hash & (cw->nbuckets - 1)];
    while (*p != f)
        p = &(*p)->hnext;
    *p = f->hnext;
    f->hnext = NULL;
    f->in_table = false;
    cw->nflights--;
}

/* Answers every waiter and frees the flight (unless a fill still runs).
 * tier: where the value came from (TIER_NONE: a fill, or no value). */
static void flight_finish(flight *f, myr_cache_status st, const void *value, size_t len,
                          enum tier tier)
{
    cache_worker *cw = f->cw;
    flight_unlink(f);
    loop_timer_stop(cw->loop, &f->timer);
    if (f->leased && cw->l1)
        l1_release(cw->l1, key_of(f), f->klen, f->owner);
    f->leased = false;
    while (f->waiters) {
        if (st == MYR_CACHE_OK || st == MYR_CACHE_ABSENT) {
            if (tier == TIER_NONE)
                count(cw, M_MISSES, 0);
            else
                count(cw, M_HITS, tier);
        }
        call_finish(cw, f->waiters, st, value, len, false);
    }
    if (!f->filling)
        free(f);
}

/* ---- a flight's steps ---------------------------------------------------------------------------- */

static void flight_lookup(flight *f);
static void flight_l2(flight *f);

static void *heap_alloc(void *arg, size_t n)
{
    (void)arg;
    return malloc(n);
}

/* Stores a value (or a tombstone) for f's key in L1, under f's ticket.
 * False if a delete voided the ticket (the value may be older than the
 * change that caused it). */
static bool l1_store(flight *f, const void *value, size_t len, unsigned flags, uint64_t ttl,
                     uint64_t stale)
{
    cache_worker *cw = f->cw;
    if (!cw->l1)
        return true;
    if (!f->tracked || !invalidations_flow(cw)) {
        ttl = ttl < UNTRACKED_TTL_MS ? ttl : UNTRACKED_TTL_MS;
        stale = 0;
    }
    l1_stats st = { 0 };
    int rc = l1_set(cw->l1, key_of(f), f->klen, value, len, flags, ttl, stale, now_ms(cw),
                    f->has_ticket ? &f->ticket : NULL, &st);
    f->leased = false;   /* l1_set ended it, whatever it returned */
    account(cw, &st);
    if (rc == -ESTALE)
        count(cw, M_EVENTS, EV_STORE_VOIDED);
    else if (rc == -E2BIG)
        count(cw, M_EVENTS, EV_TOO_BIG);
    return rc != -ESTALE;
}

static void on_poll(loop_timer *t)
{
    flight_lookup(container_of(t, flight, timer));
}

static void on_fill_deadline(loop_timer *t)
{
    flight *f = container_of(t, flight, timer);
    cache_worker *cw = f->cw;
    log_warn("cache: the fill of \"%.*s\" did not answer in time", (int)f->klen, key_of(f));
    count(cw, M_FILLS, FILL_LOST);
    f->abandoned = true;
    flight_finish(f, MYR_CACHE_FAILED, NULL, 0, TIER_NONE);   /* not freed: filling */
    f->hnext = cw->orphans;
    cw->orphans = f;
}

static void flight_fill(flight *f)
{
    cache_worker *cw = f->cw;
    f->phase = PH_FILL;
    f->filling = true;
    uint64_t wait = cw->cfg->cache_lease > cw->cfg->db_timeout ? cw->cfg->cache_lease
                                                               : cw->cfg->db_timeout;
    loop_timer_start(cw->loop, &f->timer, wait + FILL_GRACE_MS, on_fill_deadline);
    f->src.fill(f, key_of(f), f->klen, f->src.arg);   /* may finish and free f */
}

/* L1 with the lease: the first step of a new flight, and each poll while
 * another worker holds the lease. */
static void flight_lookup(flight *f)
{
    cache_worker *cw = f->cw;
    f->phase = PH_LOOKUP;
    l1_result r;
    l1_stats st = { 0 };
    int rc = l1_get(cw->l1, key_of(f), f->klen, now_ms(cw), cw->cfg->cache_lease, f->owner,
                    heap_alloc, NULL, &r, &st);
    account(cw, &st);
    if (rc < 0) {   /* out of memory copying the value: go on without L1 */
        flight_l2(f);
        return;
    }
    f->ticket = r.ticket;
    f->has_ticket = true;
    f->tracked = invalidations_flow(cw);   /* a change from now on would reach us */
    f->leased = r.lease == L1_LEASE_TAKEN;
    if (r.state == L1_FRESH) {
        flight_finish(f, r.flags & L1_NEGATIVE ? MYR_CACHE_ABSENT : MYR_CACHE_OK, r.value,
                      r.len, TIER_L1);
    } else if (r.state == L1_STALE) {
        /* the waiters take the stale value; the flight refreshes it if it
         * got the lease (another worker does otherwise) */
        while (f->waiters) {
            count(cw, M_HITS, TIER_L1);
            count_lookup(cw, TIER_L1, r.flags & L1_NEGATIVE ? OUT_NEGATIVE : OUT_STALE);
            call_finish(cw, f->waiters, r.flags & L1_NEGATIVE ? MYR_CACHE_ABSENT : MYR_CACHE_OK,
                        r.value, r.len, false);
        }
        if (f->leased)
            flight_l2(f);
        else
            flight_finish(f, MYR_CACHE_OK, NULL, 0, TIER_L1);
    } else if (r.lease == L1_LEASE_BUSY) {
        if (!f->waited)
            count(cw, M_WAITS, WAIT_LEASE);
        f->waited = true;
        f->phase = PH_WAIT;
        uint64_t left = r.lease_until > now_ms(cw) ? r.lease_until - now_ms(cw) : 0;
        loop_timer_start(cw->loop, &f->timer, left < POLL_MS ? left : POLL_MS, on_poll);
    } else {
        flight_l2(f);   /* the lease is ours (or L1 could not make one) */
    }
    free(r.value);
}

static void on_l2_get(void *arg, enum redis_status status, const redisReply *reply)
{
    flight *f = arg;
    cache_worker *cw = f->cw;
    if (status == REDIS_STATUS_OK && reply->type == REDIS_REPLY_STRING) {
        count_lookup(cw, TIER_L2, OUT_FRESH);
        l1_store(f, reply->str, (size_t)reply->len, 0, f->src.ttl_ms, f->src.stale_ms);
        flight_finish(f, MYR_CACHE_OK, reply->str, (size_t)reply->len, TIER_L2);
        return;
    }
    bool miss = status == REDIS_STATUS_OK && reply->type == REDIS_REPLY_NIL;
    count_lookup(cw, TIER_L2, miss ? OUT_MISS : OUT_ERROR);
    flight_fill(f);
}

static void flight_l2(flight *f)
{
    cache_worker *cw = f->cw;
    struct redis *r = l2(cw);
    if (r && redis_get(r, f->rkey, f->rklen, on_l2_get, f) == 0) {
        f->phase = PH_L2;
        return;
    }
    if (cw->redis_configured)
        count_lookup(cw, TIER_L2, OUT_SKIPPED);
    flight_fill(f);
}

void myr_cache_fill_done(myr_cache_fill *f, myr_cache_status st, const void *value, size_t len)
{
    cache_worker *cw = f->cw;
    f->filling = false;
    if (f->abandoned) {   /* its waiters were answered at the deadline */
        flight **p = &cw->orphans;
        while (*p != f)
            p = &(*p)->hnext;
        *p = f->hnext;
        free(f);
        return;
    }
    loop_timer_stop(cw->loop, &f->timer);
    if (st == MYR_CACHE_OK) {
        count(cw, M_FILLS, FILL_OK);
        struct redis *r = l2(cw);
        if (l1_store(f, value, len, 0, f->src.ttl_ms, f->src.stale_ms) && r)
            redis_set(r, f->rkey, f->rklen, value, len, f->src.ttl_ms, NULL, NULL);
    } else if (st == MYR_CACHE_ABSENT) {
        count(cw, M_FILLS, FILL_ABSENT);
        if (cw->cfg->cache_negative_ttl)
            l1_store(f, NULL, 0, L1_NEGATIVE, cw->cfg->cache_negative_ttl, 0);
    } else {
        count(cw, M_FILLS, FILL_FAILED);
        st = MYR_CACHE_FAILED;
    }
    flight_finish(f, st, value, len, TIER_NONE);
}

myr_db *myr_cache_fill_db(const myr_cache_fill *f)
{
    return f->cw->srv->db;
}

static void flight_start(flight *f)
{
    if (f->cw->l1)
        flight_lookup(f);
    else
        flight_l2(f);
}

/* ---- the public calls --------------------------------------------------------------------------- */

static void *req_alloc(void *arg, size_t n)
{
    return myr_alloc(arg, n);
}

/* Step 1: L1 without a lease. True if it answered c. */
static bool l1_answer(cache_worker *cw, cache_call *c, const void *key, size_t klen,
                      const myr_cache_source *src)
{
    l1_result r;
    l1_stats st = { 0 };
    int rc = l1_get(cw->l1, key, klen, now_ms(cw), 0, 0, req_alloc, c->cr->req, &r, &st);
    account(cw, &st);
    if (rc == -ENOMEM) {
        call_finish(cw, c, MYR_CACHE_NOMEM, NULL, 0, true);
        return true;
    }
    if (r.state == L1_MISS) {
        count_lookup(cw, TIER_L1, OUT_MISS);
        return false;
    }
    bool negative = r.flags & L1_NEGATIVE;
    count_lookup(cw, TIER_L1, negative ? OUT_NEGATIVE : r.state == L1_FRESH ? OUT_FRESH
                                                                            : OUT_STALE);
    count(cw, M_HITS, TIER_L1);
    call_finish(cw, c, negative ? MYR_CACHE_ABSENT : MYR_CACHE_OK, r.value, r.len, true);
    if (r.state == L1_STALE && !flight_find(cw, key, klen)) {
        flight *f = flight_new(cw, key, klen, src);   /* a background refresh */
        if (f)
            flight_lookup(f);
    }
    return true;
}

int myr_cached(myr_req *req, const void *key, size_t klen, const myr_cache_source *src,
               myr_cache_done done, void *arg)
{
    if (!req || !key || !klen || klen > L1_MAX_KEY || !src || !src->fill || !done)
        return -EINVAL;
    cache_worker *cw = worker_of(req);
    if (!cw)
        return -ENOMEM;
    track(cw);
    myr_cache_source s = *src;
    if (!s.ttl_ms)
        s.ttl_ms = cw->cfg->cache_ttl;
    cache_call *c = call_new(cw, req, done, arg);
    if (!c)
        return -ENOMEM;
    if (cw->l1 && l1_answer(cw, c, key, klen, &s))
        return 0;
    flight *f = flight_find(cw, key, klen);
    bool started = f != NULL;
    if (started) {
        count(cw, M_WAITS, WAIT_WORKER);
    } else if (!(f = flight_new(cw, key, klen, &s))) {
        call_unpend(c);
        return -ENOMEM;
    }
    c->fl = f;
    c->fnext = f->waiters;
    if (f->waiters)
        f->waiters->fprev = c;
    f->waiters = c;
    if (!started)
        flight_start(f);
    return 0;
}

/* ---- L2 deletes ---------------------------------------------------------------------------- */

static void del_keep(cache_worker *cw, pending_del *d)
{
    if (cw->ndels >= MAX_PENDING_DELS) {
        if (!cw->dels_lost++)
            log_warn("cache: more than %d deletes wait for Redis: values deleted since may "
                     "be read back from Redis until their ttl", MAX_PENDING_DELS);
        free(d);
        return;
    }
    d->next = cw->dels;
    cw->dels = d;
    cw->ndels++;
}

static void on_del_done(void *arg, enum redis_status status, const redisReply *reply)
{
    pending_del *d = arg;
    if (status == REDIS_STATUS_OK || status == REDIS_STATUS_CLOSED)
        free(d);   /* done, or the worker is stopping */
    else
        del_keep(d->cw, d);   /* not known to have reached Redis: again later */
}

static void del_send(cache_worker *cw, pending_del *d)
{
    struct redis *r = l2(cw);
    if (!r || redis_del(r, d->key, d->len, on_del_done, d) < 0)
        del_keep(cw, d);
}

/* Every second: the deletes Redis missed, once it answers again. */
static void dels_flush(cache_worker *cw)
{
    if (!cw->dels || !l2(cw))
        return;
    pending_del *d = cw->dels;
    cw->dels = NULL;
    cw->ndels = 0;
    while (d) {
        pending_del *next = d->next;
        del_send(cw, d);
        d = next;
    }
}

static void del_l2(cache_worker *cw, const void *key, size_t klen)
{
    if (!cw->redis_configured)
        return;
    pending_del *d = malloc(sizeof(*d) + cw->plen + klen);
    if (!d) {
        cw->dels_lost++;
        return;
    }
    *d = (pending_del){ .cw = cw, .len = cw->plen + klen };
    memcpy(d->key, cw->cfg->cache_prefix, cw->plen);
    memcpy(d->key + cw->plen, key, klen);
    del_send(cw, d);
}

int myr_cache_del(myr_req *req, const void *key, size_t klen)
{
    if (!req || !key || !klen || klen > L1_MAX_KEY)
        return -EINVAL;
    cache_worker *cw = worker_of(req);
    if (!cw)
        return -ENOMEM;
    track(cw);
    if (cw->l1) {
        l1_stats st = { 0 };
        l1_del(cw->l1, key, klen, &st);
        account(cw, &st);
    }
    count(cw, M_INVALS, INV_LOCAL);
    del_l2(cw, key, klen);
    return 0;
}

uint64_t myr_cache_ttl(const myr_req *req)
{
    return req->srv->cfg->cache_ttl;
}

/* ---- the supervisor --------------------------------------------------------------------------- */

int cache_prefork(const config *cfg, char *err, size_t errlen)
{
    if (machine_l1 || !cfg->cache_size)
        return 0;   /* made once: reloads keep it */
    uint32_t stripes = cfg->cache_stripes;
    if (!stripes || (stripes & (stripes - 1))) {
        snprintf(err, errlen, "--cache-stripes %u: must be a power of two", stripes);
        return -1;
    }
    size_t min = l1_min_size(stripes);
    if (cfg->cache_size < min) {
        snprintf(err, errlen, "--cache-size %llu: at least %zu bytes for %u stripes "
                 "(or 0 for no L1)", (unsigned long long)cfg->cache_size, min, stripes);
        return -1;
    }
    machine_l1 = l1_new(cfg->cache_size, stripes);
    if (!machine_l1) {
        snprintf(err, errlen, "cache: cannot map %llu bytes of shared memory: %s",
                 (unsigned long long)cfg->cache_size, strerror(errno));
        return -1;
    }
    return 0;
}

l1_cache *cache_l1(void)
{
    return machine_l1;
}
