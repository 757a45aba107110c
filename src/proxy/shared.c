/* shared — see shared.h. The region, the name table and its lock, and
 * publishing and summing counters as arrays of 64-bit words (every struct
 * published here is made of uint64_t only; static_asserts hold that).
 */
#include "proxy/shared.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "core/shm.h"
#include "proxy/backend.h"

static_assert(sizeof(backend_stats) % 8 == 0, "backend_stats is published as words");
static_assert(sizeof(shared_cell) % 8 == 0, "shared_cell is published as words");
static_assert(sizeof(bal_stats) % 8 == 0, "bal_stats is published as words");

typedef struct name_entry {
    char             name[BACKEND_NAME_MAX];
    _Atomic uint32_t draining;
} name_entry;

typedef struct shared_row {
    _Atomic int32_t owner;        /* pid publishing here; 0 never used */
    uint32_t        pad;
    bal_stats       g;            /* the worker's global counters */
    uint64_t        connections;  /* client connections open */
} shared_row;

struct bal_shared {
    shm_region      *region;
    _Atomic uint32_t lock;
    _Atomic uint32_t nnames;
    _Atomic uint32_t drain_seq;
    uint32_t         rows;
    name_entry       names[SHARED_NAMES];
    bal_stats        gbase;                /* exited workers' global counters */
    backend_stats    base[SHARED_NAMES];   /* exited workers' backend counters */
    shared_row      *row;                  /* [rows] */
    shared_cell     *cells;                /* [rows * SHARED_NAMES] */
};

/* ---- words ----------------------------------------------------------------------- */

static void words_store(void *dst, const void *src, size_t bytes)
{
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (size_t i = 0; i < bytes / 8; i++)
        __atomic_store_n(&d[i], s[i], __ATOMIC_RELAXED);
}

static void words_add(void *acc, const void *src, size_t bytes)
{
    uint64_t *a = acc;
    const uint64_t *s = src;
    for (size_t i = 0; i < bytes / 8; i++)
        a[i] += __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

/* dst += src, word by word, for a destination that readers load concurrently. */
static void words_fold(void *dst, const void *src, size_t bytes)
{
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (size_t i = 0; i < bytes / 8; i++)
        __atomic_store_n(&d[i], __atomic_load_n(&d[i], __ATOMIC_RELAXED) +
                                    __atomic_load_n(&s[i], __ATOMIC_RELAXED), __ATOMIC_RELAXED);
}

static void words_zero(void *dst, size_t bytes)
{
    uint64_t *d = dst;
    for (size_t i = 0; i < bytes / 8; i++)
        __atomic_store_n(&d[i], 0, __ATOMIC_RELAXED);
}

static void lock(bal_shared *sh)
{
    uint32_t expect = 0;
    while (!atomic_compare_exchange_weak_explicit(&sh->lock, &expect, 1,
                                                  memory_order_acquire, memory_order_relaxed))
        expect = 0;
}

static void unlock(bal_shared *sh)
{
    atomic_store_explicit(&sh->lock, 0, memory_order_release);
}

static shared_cell *cell(const bal_shared *sh, uint32_t row, int idx)
{
    return &sh->cells[(size_t)row * SHARED_NAMES + (size_t)idx];
}

/* ---- lifecycle -------------------------------------------------------------------- */

bal_shared *shared_create(uint32_t workers)
{
    uint32_t rows = workers * 2 + 4;
    if (rows > SHARED_ROWS_MAX)
        rows = SHARED_ROWS_MAX;
    size_t size = sizeof(bal_shared) + rows * sizeof(shared_row) +
                  (size_t)rows * SHARED_NAMES * sizeof(shared_cell) + 8 * SHM_ALIGN + 4096;
    shm_region *r = shm_create(size);
    if (!r)
        return NULL;
    bal_shared *sh = shm_alloc(r, sizeof(bal_shared));
    shared_row *rowv = shm_alloc(r, rows * sizeof(shared_row));
    shared_cell *cells = shm_alloc(r, (size_t)rows * SHARED_NAMES * sizeof(shared_cell));
    if (!sh || !rowv || !cells) {
        shm_destroy(r);
        errno = ENOMEM;
        return NULL;
    }
    sh->region = r;
    sh->rows = rows;
    sh->row = rowv;
    sh->cells = cells;
    return sh;
}

void shared_destroy(bal_shared *sh)
{
    if (sh)
        shm_destroy(sh->region);
}

bool shared_claim_row(bal_shared *sh, uint32_t row)
{
    if (row >= sh->rows)
        return false;
    int32_t me = (int32_t)getpid();
    lock(sh);
    shared_row *r = &sh->row[row];
    if (atomic_load_explicit(&r->owner, memory_order_relaxed) != me) {
        /* the supervisor reuses a row only after its process exited */
        words_fold(&sh->gbase, &r->g, sizeof(bal_stats));
        words_zero(&r->g, sizeof(bal_stats));
        for (int i = 0; i < SHARED_NAMES; i++) {
            shared_cell *c = cell(sh, row, i);
            words_fold(&sh->base[i], &c->st, sizeof(backend_stats));
            words_zero(c, sizeof(shared_cell));
        }
        __atomic_store_n(&r->connections, 0, __ATOMIC_RELAXED);
        atomic_store_explicit(&r->owner, me, memory_order_release);
    }
    unlock(sh);
    return true;
}

/* ---- names and drain flags ------------------------------------------------------------ */

int shared_name_index(bal_shared *sh, const char *name)
{
    int idx = -1;
    lock(sh);
    uint32_t n = atomic_load_explicit(&sh->nnames, memory_order_relaxed);
    for (uint32_t i = 0; i < n && idx < 0; i++)
        if (strcmp(sh->names[i].name, name) == 0)
            idx = (int)i;
    if (idx < 0 && n < SHARED_NAMES && strlen(name) < BACKEND_NAME_MAX) {
        strcpy(sh->names[n].name, name);
        atomic_store_explicit(&sh->nnames, n + 1, memory_order_release);
        idx = (int)n;
    }
    unlock(sh);
    return idx;
}

void shared_set_draining(bal_shared *sh, int idx, bool on)
{
    if (idx < 0)
        return;
    atomic_store_explicit(&sh->names[idx].draining, on, memory_order_relaxed);
    atomic_fetch_add_explicit(&sh->drain_seq, 1, memory_order_release);
}

bool shared_draining(const bal_shared *sh, int idx)
{
    return idx >= 0 && atomic_load_explicit(&sh->names[idx].draining, memory_order_relaxed);
}

uint32_t shared_drain_seq(const bal_shared *sh)
{
    return atomic_load_explicit(&sh->drain_seq, memory_order_acquire);
}

/* ---- publishing --------------------------------------------------------------------------- */

void shared_publish_backend(bal_shared *sh, uint32_t row, int idx, const backend *b,
                            bool configured)
{
    if (idx < 0 || row >= sh->rows)
        return;
    shared_cell v = {
        .st = b->st, .up = b->up, .configured = configured, .active = b->active,
        .nconns = b->nconns, .nidle = b->nidle,
    };
    words_store(cell(sh, row, idx), &v, sizeof(v));
}

void shared_publish_global(bal_shared *sh, uint32_t row, const bal_stats *st,
                           uint32_t connections)
{
    if (row >= sh->rows)
        return;
    words_store(&sh->row[row].g, st, sizeof(*st));
    __atomic_store_n(&sh->row[row].connections, connections, __ATOMIC_RELAXED);
}

/* ---- reading -------------------------------------------------------------------------------- */

uint32_t shared_names(const bal_shared *sh)
{
    return atomic_load_explicit(&sh->nnames, memory_order_acquire);
}

const char *shared_name(const bal_shared *sh, int idx)
{
    return sh->names[idx].name;
}

/* A row whose owner is still running (its gauges are current). */
static bool row_live(const bal_shared *sh, uint32_t row)
{
    pid_t pid = atomic_load_explicit(&sh->row[row].owner, memory_order_acquire);
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

void shared_sum_backend(const bal_shared *sh, int idx, shared_cell *out)
{
    memset(out, 0, sizeof(*out));
    words_add(&out->st, &sh->base[idx], sizeof(backend_stats));
    for (uint32_t r = 0; r < sh->rows; r++) {
        if (atomic_load_explicit(&sh->row[r].owner, memory_order_acquire) == 0)
            continue;
        const shared_cell *c = cell(sh, r, idx);
        words_add(&out->st, &c->st, sizeof(backend_stats));
        if (!row_live(sh, r))
            continue;
        shared_cell g;
        memset(&g, 0, sizeof(g));
        words_add(&g, c, sizeof(g));
        out->active += g.active;
        out->nconns += g.nconns;
        out->nidle += g.nidle;
        if (g.configured) {
            out->configured = 1;
            out->up |= g.up;
        }
    }
}

void shared_sum_global(const bal_shared *sh, bal_stats *out, uint64_t *connections,
                       uint32_t *workers)
{
    memset(out, 0, sizeof(*out));
    *connections = 0;
    *workers = 0;
    words_add(out, &sh->gbase, sizeof(bal_stats));
    for (uint32_t r = 0; r < sh->rows; r++) {
        if (atomic_load_explicit(&sh->row[r].owner, memory_order_acquire) == 0)
            continue;
        words_add(out, &sh->row[r].g, sizeof(bal_stats));
        if (row_live(sh, r)) {
            *connections += __atomic_load_n(&sh->row[r].connections, __ATOMIC_RELAXED);
            (*workers)++;
        }
    }
}
