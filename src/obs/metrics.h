/* metrics — the service's counters, gauges and histograms, in shared memory
 * so that whichever worker answers /metrics reports the whole service.
 *
 * Layout. The supervisor carves one registry out of its shm region before
 * it forks (metrics_new); every worker inherits it at the same address:
 *
 *   +--------+--------------------------+---------+---------+-----+------------+
 *   | header | family table             | block 0 | block 1 | ... | supervisor |
 *   |        | (METRICS_MAX_FAMILIES)   |         |         |     | block      |
 *   +--------+--------------------------+---------+---------+-----+------------+
 *
 * A block holds the cells (64-bit values) of one worker slot — the row index
 * of the shm worker table — and starts on its own cache line. Its first
 * cells are metrics_core, the built-in families at fixed offsets that the
 * hot-path functions below reach with no lookup; the rest is handed out to
 * families added at run time (metrics_family_add). One more block, after
 * the workers', belongs to the supervisor (worker restarts).
 *
 * Writers. Every cell has exactly one writing thread: the loop thread of the
 * worker that owns the block (its hot path and its once-a-second sampler),
 * or the supervisor for its block. So an increment is a relaxed load and a
 * relaxed store — no lock, no locked instruction, and no cache line written
 * by two workers. A family bumped from other threads as well (a thread
 * pool) uses the *_mt functions, which add atomically.
 *
 * Lifetimes. Cells outlive the worker: the next process attached to a slot
 * counts on from its predecessor's values, so service totals never go
 * backwards when a worker restarts. Gauges are zeroed at attach and detach.
 * Readers (the exposition, in any worker) load relaxed: each value is a
 * true value from a recent moment. A histogram's count is computed from the
 * bucket values read, so count and buckets always agree.
 *
 * Adding a family (the cache, the database...) takes a spec and two calls:
 *
 *     static const char *const outcome[] = { "hit", "miss", "error", NULL };
 *     static const metrics_spec cache_lookups = {
 *         .name = "myriad_cache_lookups_total", .type = METRICS_COUNTER,
 *         .help = "Cache lookups, by outcome.",
 *         .label = { "outcome" }, .values = { outcome },
 *     };
 *     // once per process, at start-up (before or after fork):
 *     metrics_family *f = metrics_family_add(metrics_registry_of(s->metrics),
 *                                            &cache_lookups);
 *     // on the loop thread, per event (f may be NULL if adding failed):
 *     if (f) metrics_inc(s->metrics, f, OUTCOME_HIT);
 *
 * The same name added again (by another worker) returns the same family.
 * /metrics and /metrics.json show it at once; the dashboard also draws a
 * cache hit ratio from counters named myriad_cache_hits_total and
 * myriad_cache_misses_total, and database pool use from gauges named
 * myriad_db_pool_in_use and myriad_db_pool_size, when they exist.
 *
 * Threading: the registry may be read from any process and thread; a
 * metrics_worker handle belongs to its worker's loop thread.
 */
#ifndef MYR_OBS_METRICS_H
#define MYR_OBS_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/shm.h"

#define METRICS_MAX_FAMILIES  64
#define METRICS_BLOCK_CELLS   1024   /* cells per block: built-ins + run-time families */
#define METRICS_MAX_LABELS    2
#define METRICS_MAX_VALUES    12     /* values per label */
#define METRICS_MAX_BOUNDS    20     /* histogram bounds (+Inf not counted) */
#define METRICS_NAME_MAX      64     /* bytes, NUL included */
#define METRICS_HELP_MAX      160
#define METRICS_LABEL_MAX     24     /* label names and values, NUL included */

typedef _Atomic uint64_t metrics_cell;

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

enum {
    /* /metrics shows one series per live worker, with a worker="SLOT"
     * label, instead of the sum over workers. */
    METRICS_PER_WORKER = 1u << 0,
};

/* What a family looks like; the strings are copied by metrics_family_add.
 * Names follow Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]*, counters end in
 * _total, other types do not; label names [a-zA-Z_][a-zA-Z0-9_]*, not
 * "le", "worker" or "__*". A histogram's cells count in an integer unit
 * (microseconds, bytes); `scale` converts it for display (1e-6: seconds). */
typedef struct metrics_spec {
    const char        *name;
    const char        *help;                      /* one line */
    enum metrics_type  type;
    unsigned           flags;                     /* METRICS_PER_WORKER */
    const char        *label[METRICS_MAX_LABELS]; /* NULL when unused */
    const char *const *values[METRICS_MAX_LABELS];/* NULL-terminated lists */
    const uint64_t    *bounds;                    /* histogram: ascending upper bounds */
    unsigned           nbounds;
    double             scale;                     /* displayed = cell × scale; 0 means 1 */
} metrics_spec;

/* A family as stored in the registry (shared memory: valid in every
 * process). Read-only once added. */
typedef struct metrics_family {
    char     name[METRICS_NAME_MAX];
    char     help[METRICS_HELP_MAX];
    char     label[METRICS_MAX_LABELS][METRICS_LABEL_MAX];
    char     value[METRICS_MAX_LABELS][METRICS_MAX_VALUES][METRICS_LABEL_MAX];
    uint64_t bounds[METRICS_MAX_BOUNDS];    /* histogram upper bounds, cell unit */
    double   scale;                         /* displayed = cell × scale */
    uint32_t offset;                        /* first cell, the same in every block */
    uint32_t ncells;                        /* combos × cells per combo */
    uint8_t  type;                          /* enum metrics_type */
    uint8_t  flags;
    uint8_t  nlabels;
    uint8_t  nbounds;
    uint8_t  nvalues[METRICS_MAX_LABELS];   /* 1 for an unused label */
} metrics_family;

/* ---- the built-in families --------------------------------------------- */

/* Label values, in cell order. */
enum { METRICS_METHODS = 8, METRICS_STATUS_CLASSES = 5 };   /* GET..PATCH, other; 1xx..5xx */
enum metrics_reject { METRICS_REJECT_LIMIT, METRICS_REJECT_NOMEM, METRICS_REJECTS };
enum metrics_error {
    METRICS_ERR_PARSE,      /* 400, 501, 505: a request we cannot read */
    METRICS_ERR_LIMIT,      /* 413, 414, 431: over a configured limit */
    METRICS_ERR_TIMEOUT,    /* 408 */
    METRICS_ERR_ROUTE,      /* 404, 405 */
    METRICS_ERR_OVERLOAD,   /* 503: shed, offload queue full */
    METRICS_ERR_OTHER,
    METRICS_ERRORS,
};
/* Timeouts by what the connection waited for; the values of http_conn's
 * enum conn_wait minus one (http_conn.c asserts it). */
enum metrics_timeout {
    METRICS_TIMEOUT_IDLE, METRICS_TIMEOUT_HEAD, METRICS_TIMEOUT_BODY,
    METRICS_TIMEOUT_WRITE, METRICS_TIMEOUT_LINGER, METRICS_TIMEOUTS,
};
enum metrics_restart {
    METRICS_RESTART_CRASH,     /* died unexpectedly */
    METRICS_RESTART_MEMORY,    /* --max-worker-memory */
    METRICS_RESTART_REQUESTS,  /* --max-requests */
    METRICS_RESTART_AGE,       /* --max-worker-age */
    METRICS_RESTART_RELOAD,    /* SIGHUP: a new generation */
    METRICS_RESTARTS,
};

#define METRICS_DURATION_BOUNDS 16   /* request duration buckets, µs (metrics.c) */
#define METRICS_LAG_BOUNDS      14   /* loop lag buckets, µs */

/* The first cells of every block. Histograms: per-bucket counts (not
 * cumulative), +Inf bucket, then the sum, in µs. */
typedef struct metrics_core {
    /* hot path */
    metrics_cell requests[METRICS_METHODS][METRICS_STATUS_CLASSES];
    metrics_cell duration[METRICS_DURATION_BOUNDS + 2];
    metrics_cell bytes_in, bytes_out;
    metrics_cell conns_total;                /* connections served */
    metrics_cell conns_open;                 /* gauge */
    metrics_cell rejected[METRICS_REJECTS];
    metrics_cell errors[METRICS_ERRORS];
    metrics_cell timeouts[METRICS_TIMEOUTS];
    metrics_cell access_log_lines, access_log_dropped;
    /* sampled once a second */
    metrics_cell rss, heap;                  /* gauges, bytes */
    metrics_cell lag[METRICS_LAG_BOUNDS + 2];
    metrics_cell offload_queued, offload_running, offload_threads;   /* gauges */
    /* identity */
    metrics_cell start_ms;                   /* gauge: attach time, Unix ms */
    metrics_cell starts;                     /* processes attached to the slot */
    /* the supervisor's block only */
    metrics_cell restarts[METRICS_RESTARTS];
} metrics_core;

/* ---- the registry ---------------------------------------------------------- */

typedef struct metrics_registry metrics_registry;

/* Bytes of shared memory metrics_new needs for max_workers slots. */
size_t metrics_shm_size(uint32_t max_workers);
/* Supervisor, before fork: carves the registry out of r and adds the
 * built-in families. Slots are 0..max_workers-1. NULL (errno set) when r
 * is too small. Lives as long as r. */
metrics_registry *metrics_new(shm_region *r, uint32_t max_workers);

/* A worker's handle on its slot's block: process-local, loop thread. */
typedef struct metrics_worker {
    metrics_core     *core;    /* the block's built-in cells */
    metrics_cell     *cells;   /* the same block as an array */
    metrics_registry *reg;
    uint32_t          slot;
} metrics_worker;

/* Worker, after fork: takes slot (gauges zeroed, start time and pid set,
 * counters kept). NULL when out of memory or slot is out of range. The
 * caller frees it with metrics_worker_free (the cells stay). */
metrics_worker *metrics_attach(metrics_registry *reg, uint32_t slot);
void metrics_worker_free(metrics_worker *w);
/* Supervisor (after reaping) or the worker (at exit): the slot's process is
 * gone. Zeroes its gauges; counters stay in the service's totals. */
void metrics_detach(metrics_registry *reg, uint32_t slot);
/* Supervisor: one worker restart, by cause. */
void metrics_restart(metrics_registry *reg, enum metrics_restart cause);

/* The process's own handle: set once per process by whoever attached it
 * (the worker, before serving); NULL until then. A documented process-wide
 * singleton, like the log. */
void            metrics_set_self(metrics_worker *w);
metrics_worker *metrics_self(void);

static inline metrics_registry *metrics_registry_of(const metrics_worker *w)
{
    return w ? w->reg : NULL;
}

/* Adds (or finds, by name) a family; any process, any time. NULL with
 * errno EINVAL (bad spec), EEXIST (the name exists with another shape) or
 * ENOSPC (table or cells full). */
metrics_family *metrics_family_add(metrics_registry *reg, const metrics_spec *spec);
/* The cell combination of label values (i0, i1); i1 is 0 with one label. */
static inline unsigned metrics_combo(const metrics_family *f, unsigned i0, unsigned i1)
{
    return i0 * f->nvalues[1] + i1;
}

/* ---- reading (any process) ------------------------------------------------------- */

uint32_t metrics_slots(const metrics_registry *reg);        /* slots ever attached: [0, n) */
uint32_t metrics_max_workers(const metrics_registry *reg);  /* the supervisor's block index */
/* True if a process is attached to slot and alive. */
bool     metrics_slot_live(const metrics_registry *reg, uint32_t slot);
/* metrics_slot_live of every slot in [0, n), n = metrics_slots() (one
 * system call per other worker: call once per report). The caller frees
 * the array; NULL when out of memory. */
bool    *metrics_live_slots(const metrics_registry *reg, uint32_t n);
int32_t  metrics_slot_pid(const metrics_registry *reg, uint32_t slot);
uint32_t metrics_families(const metrics_registry *reg);
const metrics_family *metrics_family_at(const metrics_registry *reg, uint32_t i);
/* Cell i of family f in block `slot` (max_workers: the supervisor's). */
uint64_t metrics_read(const metrics_registry *reg, uint32_t slot, const metrics_family *f,
                      uint32_t i);
int64_t  metrics_start_ms(const metrics_registry *reg);     /* metrics_new's wall clock */
/* Cells per label combination: 1, or nbounds + 2 for a histogram. */
static inline uint32_t metrics_combo_cells(const metrics_family *f)
{
    return f->type == METRICS_HISTOGRAM ? f->nbounds + 2u : 1u;
}

/* ---- writing: any family (loop thread of the block's worker) ------------------------ */

static inline void metrics_cell_add(metrics_cell *c, uint64_t v)
{
    /* single writer: a plain read-modify-write, published atomically */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

static inline void metrics_add(metrics_worker *w, const metrics_family *f, unsigned combo,
                               uint64_t v)
{
    metrics_cell_add(&w->cells[f->offset + combo], v);
}
static inline void metrics_inc(metrics_worker *w, const metrics_family *f, unsigned combo)
{
    metrics_add(w, f, combo, 1);
}
/* Gauges. */
static inline void metrics_set(metrics_worker *w, const metrics_family *f, unsigned combo,
                               uint64_t v)
{
    atomic_store_explicit(&w->cells[f->offset + combo], v, memory_order_relaxed);
}
static inline void metrics_gauge_add(metrics_worker *w, const metrics_family *f,
                                     unsigned combo, int64_t delta)
{
    metrics_cell_add(&w->cells[f->offset + combo], (uint64_t)delta);   /* wraps */
}

static inline unsigned metrics_bucket(const uint64_t *bounds, unsigned n, uint64_t v)
{
    unsigned b = 0;
    while (b < n && v > bounds[b])   /* "le": v lands in the first bound >= v */
        b++;
    return b;
}

static inline void metrics_observe(metrics_worker *w, const metrics_family *f,
                                   unsigned combo, uint64_t v)
{
    metrics_cell *c = &w->cells[f->offset + combo * (f->nbounds + 2u)];
    metrics_cell_add(&c[metrics_bucket(f->bounds, f->nbounds, v)], 1);
    metrics_cell_add(&c[f->nbounds + 1], v);
}

/* From any thread (cells also written by a pool): atomic adds. */
static inline void metrics_add_mt(metrics_worker *w, const metrics_family *f, unsigned combo,
                                  uint64_t v)
{
    atomic_fetch_add_explicit(&w->cells[f->offset + combo], v, memory_order_relaxed);
}

/* ---- writing: the built-in hot path (loop thread) ------------------------------------ */

extern const uint64_t metrics_duration_bounds[METRICS_DURATION_BOUNDS];   /* µs */
extern const uint64_t metrics_lag_bounds[METRICS_LAG_BOUNDS];             /* µs */

/* A response is complete. method: an http_method (http/http_parser.h:
 * OTHER 0, GET 1 ... PATCH 7, then CONNECT, TRACE); status: the status
 * sent; dur_ns: from the request's first byte (loop clock). */
static inline void metrics_http_request(metrics_worker *w, unsigned method, int status,
                                        uint64_t dur_ns)
{
    metrics_core *c = w->core;
    unsigned m = method >= 1 && method <= 7 ? method - 1 : 7;
    unsigned s = status >= 100 && status < 600 ? (unsigned)status / 100 - 1 : 4;
    metrics_cell_add(&c->requests[m][s], 1);
    uint64_t us = dur_ns / 1000;
    metrics_cell_add(&c->duration[metrics_bucket(metrics_duration_bounds,
                                                 METRICS_DURATION_BOUNDS, us)], 1);
    metrics_cell_add(&c->duration[METRICS_DURATION_BOUNDS + 1], us);
}

static inline void metrics_http_bytes_in(metrics_worker *w, uint64_t n)
{
    metrics_cell_add(&w->core->bytes_in, n);
}
static inline void metrics_http_bytes_out(metrics_worker *w, uint64_t n)
{
    metrics_cell_add(&w->core->bytes_out, n);
}
static inline void metrics_conn_opened(metrics_worker *w)
{
    metrics_cell_add(&w->core->conns_total, 1);
    metrics_cell_add(&w->core->conns_open, 1);
}
static inline void metrics_conn_closed(metrics_worker *w)
{
    metrics_cell_add(&w->core->conns_open, (uint64_t)-1);
}
static inline void metrics_conn_rejected(metrics_worker *w, enum metrics_reject why)
{
    metrics_cell_add(&w->core->rejected[why], 1);
}

/* The server answered status itself (req_respond_error). */
static inline enum metrics_error metrics_error_of(int status)
{
    switch (status) {
    case 400: case 501: case 505: return METRICS_ERR_PARSE;
    case 413: case 414: case 431: return METRICS_ERR_LIMIT;
    case 408:                     return METRICS_ERR_TIMEOUT;
    case 404: case 405:           return METRICS_ERR_ROUTE;
    case 503:                     return METRICS_ERR_OVERLOAD;
    default:                      return METRICS_ERR_OTHER;
    }
}
static inline void metrics_http_error(metrics_worker *w, int status)
{
    metrics_cell_add(&w->core->errors[metrics_error_of(status)], 1);
}

/* A connection timed out; wait: http_conn's enum conn_wait (1..5). */
static inline void metrics_http_timeout(metrics_worker *w, unsigned wait)
{
    if (wait >= 1 && wait <= METRICS_TIMEOUTS)
        metrics_cell_add(&w->core->timeouts[wait - 1], 1);
}

#endif
