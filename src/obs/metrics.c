/* metrics — see metrics.h for the layout and the single-writer rule.
 *
 * The family table is append-only: an entry is filled, then `nfamilies`
 * is raised with a release store, so a reader that loads the count with
 * acquire sees complete entries only. Appends from several processes take
 * the registry's mutex (process-shared and robust: a worker that dies
 * holding it leaves it usable, and its half-written entry, never counted,
 * is overwritten by the next append).
 */
#include "obs/metrics.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RELAXED memory_order_relaxed
#define CORE_CELLS (sizeof(metrics_core) / sizeof(metrics_cell))
#define CELL(field) (uint32_t)(offsetof(metrics_core, field) / sizeof(metrics_cell))

typedef struct metrics_block {
    _Alignas(64) _Atomic int32_t pid;   /* attached process; 0 when none */
    union {
        _Alignas(64) metrics_core core;
        metrics_cell cells[METRICS_BLOCK_CELLS];
    } u;
} metrics_block;

struct metrics_registry {
    uint32_t         max_workers;   /* worker blocks; block[max_workers] is the supervisor's */
    _Atomic uint32_t high;          /* slots ever attached: readers scan [0, high) */
    _Atomic uint32_t nfamilies;     /* complete entries of family[] (release/acquire) */
    uint32_t         next_cell;     /* first free cell for run-time families (lock) */
    int64_t          start_ms;      /* wall clock when created, Unix ms */
    pthread_mutex_t  lock;          /* guards appends to family[] and next_cell */
    metrics_family   family[METRICS_MAX_FAMILIES];
    metrics_block    block[];       /* max_workers + 1 */
};

static_assert(sizeof(metrics_block) % 64 == 0, "blocks are whole cache lines");
static_assert(CORE_CELLS <= METRICS_BLOCK_CELLS / 2, "room for run-time families");

const uint64_t metrics_duration_bounds[METRICS_DURATION_BOUNDS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
const uint64_t metrics_lag_bounds[METRICS_LAG_BOUNDS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
    250000, 500000, 1000000, 5000000,
};

/* ---- built-in families --------------------------------------------------------- */

static const char *const methods[] = { "GET", "HEAD", "POST", "PUT", "DELETE",
                                       "OPTIONS", "PATCH", "other", NULL };
static const char *const status_classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx", NULL };
static const char *const reject_reasons[] = { "limit", "nomem", NULL };
static const char *const error_reasons[] = { "parse", "limit", "timeout", "route",
                                             "overload", "other", NULL };
static const char *const timeout_phases[] = { "idle", "head", "body", "write", "linger", NULL };
static const char *const restart_causes[] = { "crash", "memory", "requests", "age",
                                              "reload", NULL };

static_assert(sizeof(methods) / sizeof(*methods) == METRICS_METHODS + 1, "methods");
static_assert(sizeof(error_reasons) / sizeof(*error_reasons) == METRICS_ERRORS + 1, "errors");
static_assert(sizeof(timeout_phases) / sizeof(*timeout_phases) == METRICS_TIMEOUTS + 1, "phases");
static_assert(sizeof(restart_causes) / sizeof(*restart_causes) == METRICS_RESTARTS + 1, "causes");

typedef struct builtin {
    metrics_spec spec;
    uint32_t     cell;   /* fixed offset in metrics_core */
} builtin;

#define LABEL1(n, v) .label = { n }, .values = { v }

static const builtin builtins[] = {
    { { .name = "myriad_http_requests_total", .type = METRICS_COUNTER,
        .help = "HTTP requests answered, by method and status class.",
        .label = { "method", "status" }, .values = { methods, status_classes } },
      CELL(requests) },
    { { .name = "myriad_http_request_duration_seconds", .type = METRICS_HISTOGRAM,
        .help = "Time from a request's first byte to its complete response "
                "(event-loop clock: one loop iteration is the resolution).",
        .bounds = metrics_duration_bounds, .nbounds = METRICS_DURATION_BOUNDS,
        .scale = 1e-6 },
      CELL(duration) },
    { { .name = "myriad_http_received_bytes_total", .type = METRICS_COUNTER,
        .help = "Bytes read from HTTP connections." },
      CELL(bytes_in) },
    { { .name = "myriad_http_sent_bytes_total", .type = METRICS_COUNTER,
        .help = "Bytes written to HTTP connections." },
      CELL(bytes_out) },
    { { .name = "myriad_http_connections_total", .type = METRICS_COUNTER,
        .help = "HTTP connections accepted and served." },
      CELL(conns_total) },
    { { .name = "myriad_http_open_connections", .type = METRICS_GAUGE,
        .flags = METRICS_PER_WORKER, .help = "HTTP connections open now." },
      CELL(conns_open) },
    { { .name = "myriad_http_rejected_connections_total", .type = METRICS_COUNTER,
        .help = "Connections refused at accept (a canned 503), by reason.",
        LABEL1("reason", reject_reasons) },
      CELL(rejected) },
    { { .name = "myriad_http_errors_total", .type = METRICS_COUNTER,
        .help = "Error responses the server made itself, by reason.",
        LABEL1("reason", error_reasons) },
      CELL(errors) },
    { { .name = "myriad_http_timeouts_total", .type = METRICS_COUNTER,
        .help = "Connection timeouts, by what the connection was waiting for.",
        LABEL1("phase", timeout_phases) },
      CELL(timeouts) },
    { { .name = "myriad_access_log_lines_total", .type = METRICS_COUNTER,
        .help = "Access log lines written." },
      CELL(access_log_lines) },
    { { .name = "myriad_access_log_dropped_lines_total", .type = METRICS_COUNTER,
        .help = "Access log lines dropped because the log could not keep up." },
      CELL(access_log_dropped) },
    { { .name = "myriad_worker_resident_memory_bytes", .type = METRICS_GAUGE,
        .flags = METRICS_PER_WORKER, .help = "Resident set size of the worker process." },
      CELL(rss) },
    { { .name = "myriad_worker_heap_bytes", .type = METRICS_GAUGE,
        .flags = METRICS_PER_WORKER,
        .help = "Heap bytes in use by the worker (malloc's view, mallinfo2)." },
      CELL(heap) },
    { { .name = "myriad_loop_lag_seconds", .type = METRICS_HISTOGRAM,
        .flags = METRICS_PER_WORKER,
        .help = "How late the event loop ran a timer due every 20 ms.",
        .bounds = metrics_lag_bounds, .nbounds = METRICS_LAG_BOUNDS, .scale = 1e-6 },
      CELL(lag) },
    { { .name = "myriad_offload_queued_jobs", .type = METRICS_GAUGE,
        .flags = METRICS_PER_WORKER, .help = "Jobs waiting in the worker's thread pool." },
      CELL(offload_queued) },
    { { .name = "myriad_offload_running_jobs", .type = METRICS_GAUGE,
        .flags = METRICS_PER_WORKER, .help = "Jobs running on the worker's thread pool." },
      CELL(offload_running) },
    { { .name = "myriad_offload_threads", .type = METRICS_GAUGE,
        .flags = METRICS_PER_WORKER, .help = "Threads started in the worker's pool." },
      CELL(offload_threads) },
    { { .name = "myriad_worker_start_time_seconds", .type = METRICS_GAUGE,
        .flags = METRICS_PER_WORKER, .scale = 1e-3,
        .help = "When the worker process started, seconds since the Unix epoch." },
      CELL(start_ms) },
    { { .name = "myriad_worker_starts_total", .type = METRICS_COUNTER,
        .flags = METRICS_PER_WORKER,
        .help = "Worker processes that have served in this slot." },
      CELL(starts) },
    { { .name = "myriad_worker_restarts_total", .type = METRICS_COUNTER,
        .help = "Worker processes replaced by the supervisor, by cause.",
        LABEL1("cause", restart_causes) },
      CELL(restarts) },
};

/* ---- validation ------------------------------------------------------------------- */

static bool name_ok(const char *s, bool colon)
{
    if (!s || !*s || strlen(s) >= METRICS_NAME_MAX)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                     (colon && c == ':');
        if (!alpha && !(p > s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Prometheus naming: counters end in _total, the others never do, and a
 * histogram's name must leave its _bucket/_sum/_count series unambiguous. */
static bool family_name_ok(const metrics_spec *sp)
{
    if (!name_ok(sp->name, true) || strncmp(sp->name, "__", 2) == 0)
        return false;
    bool total = ends_with(sp->name, "_total");
    if (sp->type == METRICS_COUNTER)
        return total;
    if (total)
        return false;
    return sp->type != METRICS_HISTOGRAM ||
           !(ends_with(sp->name, "_bucket") || ends_with(sp->name, "_sum") ||
             ends_with(sp->name, "_count"));
}

static bool label_ok(const char *name, const char *const *values)
{
    if (!name_ok(name, false) || strlen(name) >= METRICS_LABEL_MAX ||
        strncmp(name, "__", 2) == 0 || !strcmp(name, "le") || !strcmp(name, "worker"))
        return false;
    if (!values || !values[0])
        return false;
    size_t n = 0;
    for (; values[n]; n++)
        if (!*values[n] || strlen(values[n]) >= METRICS_LABEL_MAX || n >= METRICS_MAX_VALUES)
            return false;
    return true;
}

static bool spec_ok(const metrics_spec *sp)
{
    if (sp->type != METRICS_COUNTER && sp->type != METRICS_GAUGE &&
        sp->type != METRICS_HISTOGRAM)
        return false;
    if (!family_name_ok(sp) || !sp->help || strlen(sp->help) >= METRICS_HELP_MAX)
        return false;
    for (int i = 0; i < METRICS_MAX_LABELS; i++) {
        if (!sp->label[i])
            continue;
        if ((i > 0 && !sp->label[i - 1]) || !label_ok(sp->label[i], sp->values[i]))
            return false;
    }
    if (sp->label[0] && sp->label[1] && !strcmp(sp->label[0], sp->label[1]))
        return false;
    if (sp->scale < 0 || isnan(sp->scale) || isinf(sp->scale))
        return false;
    if (sp->type != METRICS_HISTOGRAM)
        return sp->nbounds == 0;
    if (!sp->bounds || sp->nbounds == 0 || sp->nbounds > METRICS_MAX_BOUNDS)
        return false;
    for (unsigned i = 1; i < sp->nbounds; i++)
        if (sp->bounds[i] <= sp->bounds[i - 1])
            return false;
    return true;
}

/* ---- the family table ------------------------------------------------------------- */

static void family_fill(metrics_family *f, const metrics_spec *sp, uint32_t offset)
{
    memset(f, 0, sizeof(*f));
    strcpy(f->name, sp->name);
    strcpy(f->help, sp->help);
    f->type = (uint8_t)sp->type;
    f->flags = (uint8_t)sp->flags;
    f->scale = sp->scale > 0 ? sp->scale : 1.0;
    uint32_t combos = 1;
    for (int i = 0; i < METRICS_MAX_LABELS; i++) {
        f->nvalues[i] = 1;
        if (!sp->label[i])
            continue;
        f->nlabels++;
        strcpy(f->label[i], sp->label[i]);
        uint8_t n = 0;
        for (; sp->values[i][n]; n++)
            strcpy(f->value[i][n], sp->values[i][n]);
        f->nvalues[i] = n;
        combos *= n;
    }
    f->nbounds = (uint8_t)sp->nbounds;
    for (unsigned i = 0; i < sp->nbounds; i++)
        f->bounds[i] = sp->bounds[i];
    f->offset = offset;
    f->ncells = combos * metrics_combo_cells(f);
}

static uint32_t spec_cells(const metrics_spec *sp)
{
    metrics_family f;
    family_fill(&f, sp, 0);
    return f.ncells;
}

static bool same_shape(const metrics_family *f, const metrics_spec *sp)
{
    metrics_family g;
    family_fill(&g, sp, 0);
    return f->type == g.type && f->ncells == g.ncells && f->nlabels == g.nlabels &&
           f->nbounds == g.nbounds && !memcmp(f->nvalues, g.nvalues, sizeof(g.nvalues)) &&
           !memcmp(f->bounds, g.bounds, sizeof(g.bounds));
}

/* Appends under the lock (or before fork). */
static metrics_family *family_append(metrics_registry *reg, const metrics_spec *sp,
                                     uint32_t offset)
{
    uint32_t n = atomic_load_explicit(&reg->nfamilies, RELAXED);
    if (n == METRICS_MAX_FAMILIES) {
        errno = ENOSPC;
        return NULL;
    }
    metrics_family *f = &reg->family[n];
    family_fill(f, sp, offset);
    atomic_store_explicit(&reg->nfamilies, n + 1, memory_order_release);
    return f;
}

static metrics_family *family_find(metrics_registry *reg, const char *name)
{
    uint32_t n = atomic_load_explicit(&reg->nfamilies, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(reg->family[i].name, name) == 0)
            return &reg->family[i];
    return NULL;
}

static int reg_lock(metrics_registry *reg)
{
    int rc = pthread_mutex_lock(&reg->lock);
    if (rc == EOWNERDEAD) {   /* its holder died: the table itself is consistent */
        pthread_mutex_consistent(&reg->lock);
        rc = 0;
    }
    return rc;
}

metrics_family *metrics_family_add(metrics_registry *reg, const metrics_spec *spec)
{
    if (!reg || !spec || !spec_ok(spec)) {
        errno = EINVAL;
        return NULL;
    }
    if (reg_lock(reg) != 0) {
        errno = EDEADLK;
        return NULL;
    }
    metrics_family *f = family_find(reg, spec->name);
    if (f) {
        if (!same_shape(f, spec)) {
            errno = EEXIST;
            f = NULL;
        }
    } else {
        uint32_t cells = spec_cells(spec);
        if (cells > METRICS_BLOCK_CELLS - reg->next_cell) {
            errno = ENOSPC;
        } else if ((f = family_append(reg, spec, reg->next_cell)) != NULL) {
            reg->next_cell += cells;
        }
    }
    pthread_mutex_unlock(&reg->lock);
    return f;
}

/* ---- the registry ------------------------------------------------------------------- */

size_t metrics_shm_size(uint32_t max_workers)
{
    return sizeof(metrics_registry) + ((size_t)max_workers + 1) * sizeof(metrics_block);
}

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int lock_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc)
        return rc;
    rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!rc)
        rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!rc)
        rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

metrics_registry *metrics_new(shm_region *r, uint32_t max_workers)
{
    if (!r || max_workers == 0 || max_workers > (1u << 20)) {
        errno = EINVAL;
        return NULL;
    }
    metrics_registry *reg = shm_alloc(r, metrics_shm_size(max_workers));
    if (!reg) {
        errno = ENOMEM;
        return NULL;
    }
    int rc = lock_init(&reg->lock);
    if (rc) {
        errno = rc;
        return NULL;   /* the carved bytes stay unused: shm never frees */
    }
    reg->max_workers = max_workers;
    reg->start_ms = unix_ms();
    reg->next_cell = CORE_CELLS;
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        assert(spec_ok(&builtins[i].spec));
        family_append(reg, &builtins[i].spec, builtins[i].cell);
    }
    return reg;
}

static metrics_block *block_of(const metrics_registry *reg, uint32_t slot)
{
    return (metrics_block *)&reg->block[slot];
}

/* Zeroes the gauges of a block: a new (or no) process, nothing open yet. */
static void zero_gauges(metrics_registry *reg, metrics_block *b)
{
    uint32_t n = atomic_load_explicit(&reg->nfamilies, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        const metrics_family *f = &reg->family[i];
        if (f->type != METRICS_GAUGE)
            continue;
        for (uint32_t c = 0; c < f->ncells; c++)
            atomic_store_explicit(&b->u.cells[f->offset + c], 0, RELAXED);
    }
}

metrics_worker *metrics_attach(metrics_registry *reg, uint32_t slot)
{
    if (!reg || slot >= reg->max_workers) {
        errno = EINVAL;
        return NULL;
    }
    metrics_worker *w = malloc(sizeof(*w));
    if (!w)
        return NULL;
    metrics_block *b = block_of(reg, slot);
    zero_gauges(reg, b);
    atomic_store_explicit(&b->u.core.start_ms, (uint64_t)unix_ms(), RELAXED);
    metrics_cell_add(&b->u.core.starts, 1);
    atomic_store_explicit(&b->pid, (int32_t)getpid(), memory_order_release);
    uint32_t high = atomic_load_explicit(&reg->high, RELAXED);
    while (high < slot + 1 &&
           !atomic_compare_exchange_weak(&reg->high, &high, slot + 1))
        ;
    *w = (metrics_worker){ .core = &b->u.core, .cells = b->u.cells, .reg = reg, .slot = slot };
    return w;
}

void metrics_worker_free(metrics_worker *w)
{
    free(w);
}

void metrics_detach(metrics_registry *reg, uint32_t slot)
{
    if (!reg || slot >= reg->max_workers)
        return;
    metrics_block *b = block_of(reg, slot);
    zero_gauges(reg, b);
    atomic_store_explicit(&b->pid, 0, memory_order_release);
}

void metrics_restart(metrics_registry *reg, enum metrics_restart cause)
{
    if (!reg || (unsigned)cause >= METRICS_RESTARTS)
        return;
    metrics_core *c = &block_of(reg, reg->max_workers)->u.core;
    atomic_fetch_add_explicit(&c->restarts[cause], 1, RELAXED);
}

/* ---- the process's handle ---------------------------------------------------------- */

static metrics_worker *self;   /* set once per process: see metrics_set_self */

void metrics_set_self(metrics_worker *w) { self = w; }
metrics_worker *metrics_self(void) { return self; }

/* ---- reading ------------------------------------------------------------------------- */

uint32_t metrics_slots(const metrics_registry *reg)
{
    return atomic_load_explicit(&((metrics_registry *)reg)->high, memory_order_acquire);
}

uint32_t metrics_max_workers(const metrics_registry *reg) { return reg->max_workers; }

int32_t metrics_slot_pid(const metrics_registry *reg, uint32_t slot)
{
    if (slot >= reg->max_workers)
        return 0;
    return atomic_load_explicit(&block_of(reg, slot)->pid, memory_order_acquire);
}

bool metrics_slot_live(const metrics_registry *reg, uint32_t slot)
{
    pid_t pid = metrics_slot_pid(reg, slot);
    if (pid <= 0)
        return false;
    /* a worker that crashed is detached by the supervisor; until then
     * (or without one) ask the kernel */
    return pid == getpid() || kill(pid, 0) == 0 || errno == EPERM;
}

bool *metrics_live_slots(const metrics_registry *reg, uint32_t n)
{
    bool *live = calloc(n + 1, sizeof(bool));
    for (uint32_t s = 0; live && s < n; s++)
        live[s] = metrics_slot_live(reg, s);
    return live;
}

uint32_t metrics_families(const metrics_registry *reg)
{
    return atomic_load_explicit(&((metrics_registry *)reg)->nfamilies, memory_order_acquire);
}

const metrics_family *metrics_family_at(const metrics_registry *reg, uint32_t i)
{
    return i < metrics_families(reg) ? &reg->family[i] : NULL;
}

uint64_t metrics_read(const metrics_registry *reg, uint32_t slot, const metrics_family *f,
                      uint32_t i)
{
    if (slot > reg->max_workers || i >= f->ncells)
        return 0;
    return atomic_load_explicit(&block_of(reg, slot)->u.cells[f->offset + i], RELAXED);
}

int64_t metrics_start_ms(const metrics_registry *reg) { return reg->start_ms; }
