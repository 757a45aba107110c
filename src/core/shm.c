/* shm — see shm.h.
 *
 * Layout of a region:
 *
 *   +------------------+--------------------------+--------------------+----
 *   | shm_region (64B) | first piece (64B-aligned) | next piece ...     | free
 *   +------------------+--------------------------+--------------------+----
 *   ^ mapping start      used grows to the right          size = mapping end
 *
 * The header lives in the mapping itself, so the region needs no heap and
 * a worker holds nothing to free but the mapping.
 */
#include "core/shm.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct shm_region {
    size_t size;                        /* bytes mapped */
    _Atomic size_t used;                /* bytes handed out, header included */
    uint8_t pad[SHM_ALIGN - 2 * sizeof(size_t)];
};

static_assert(sizeof(struct shm_region) == SHM_ALIGN, "region header is one line");
static_assert(sizeof(shm_worker) == SHM_ALIGN, "a worker row is one cache line");
static_assert(sizeof(shm_workers) == SHM_ALIGN, "rows start on a cache line");

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

shm_region *shm_create(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (size > SIZE_MAX - sizeof(shm_region) - page) {
        errno = ENOMEM;
        return NULL;
    }
    size = round_up(size + sizeof(shm_region), page);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    shm_region *r = p;
    r->size = size;
    atomic_init(&r->used, sizeof(*r));
    return r;
}

void shm_destroy(shm_region *r)
{
    if (r)
        munmap(r, r->size);
}

void *shm_alloc(shm_region *r, size_t size)
{
    size = round_up(size ? size : 1, SHM_ALIGN);
    size_t off = atomic_load_explicit(&r->used, memory_order_relaxed);
    do {
        if (size > r->size - off)
            return NULL;
    } while (!atomic_compare_exchange_weak(&r->used, &off, off + size));
    return (char *)r + off;   /* zero: fresh anonymous memory, never reused */
}

size_t shm_used(const shm_region *r) { return atomic_load(&r->used); }
size_t shm_size(const shm_region *r) { return r->size; }

/* ---- worker table ----------------------------------------------------------- */

shm_workers *shm_workers_new(shm_region *r, uint32_t capacity)
{
    shm_workers *t = shm_alloc(r, sizeof(*t) + (size_t)capacity * sizeof(shm_worker));
    if (t)
        t->capacity = capacity;
    return t;
}

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define RELAXED memory_order_relaxed

/* The seqlock's write side: seq odd, the identity stores, seq even. The
 * release fence after the first increment keeps the stores after it; the
 * release increment keeps them before the second. */
static void identity_begin(shm_worker *w)
{
    atomic_fetch_add_explicit(&w->seq, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static void identity_end(shm_worker *w)
{
    atomic_fetch_add_explicit(&w->seq, 1, memory_order_release);
}

shm_worker *shm_worker_claim(shm_workers *t, uint32_t generation, uint32_t index)
{
    for (uint32_t i = 0; i < t->capacity; i++) {
        shm_worker *w = &t->slot[i];
        if (atomic_load_explicit(&w->state, RELAXED) != SHM_WORKER_FREE)
            continue;
        identity_begin(w);
        atomic_store_explicit(&w->pid, 0, RELAXED);
        atomic_store_explicit(&w->generation, generation, RELAXED);
        atomic_store_explicit(&w->index, index, RELAXED);
        atomic_store_explicit(&w->started_ms, unix_ms(), RELAXED);
        atomic_store_explicit(&w->rss, 0, RELAXED);
        atomic_store_explicit(&w->requests, 0, RELAXED);
        atomic_store_explicit(&w->accepted, 0, RELAXED);
        atomic_store_explicit(&w->connections, 0, RELAXED);
        atomic_store_explicit(&w->state, SHM_WORKER_STARTING, RELAXED);
        identity_end(w);
        if (i >= atomic_load_explicit(&t->high, RELAXED))
            atomic_store_explicit(&t->high, i + 1, memory_order_release);
        return w;
    }
    return NULL;
}

void shm_worker_set_pid(shm_worker *w, pid_t pid)
{
    identity_begin(w);
    atomic_store_explicit(&w->pid, pid, RELAXED);
    identity_end(w);
}

void shm_worker_release(shm_workers *t, shm_worker *w)
{
    assert(w >= t->slot && w < t->slot + t->capacity);
    identity_begin(w);
    atomic_store_explicit(&w->state, SHM_WORKER_FREE, RELAXED);
    atomic_store_explicit(&w->pid, 0, RELAXED);
    identity_end(w);
}

bool shm_worker_set_serving(shm_worker *w)
{
    uint32_t expect = SHM_WORKER_STARTING;
    return atomic_compare_exchange_strong(&w->state, &expect, SHM_WORKER_SERVING);
}

void shm_worker_set_draining(shm_worker *w)
{
    atomic_store_explicit(&w->state, SHM_WORKER_DRAINING, RELAXED);
}

void shm_worker_publish(shm_worker *w, uint64_t requests, uint64_t accepted,
                        uint32_t connections)
{
    atomic_store_explicit(&w->requests, requests, RELAXED);
    atomic_store_explicit(&w->accepted, accepted, RELAXED);
    atomic_store_explicit(&w->connections, connections, RELAXED);
}

uint32_t shm_workers_high(const shm_workers *t)
{
    return atomic_load_explicit(&t->high, memory_order_acquire);
}

enum { READ_TRIES = 100 };   /* a rewrite is a few stores: retries are rare */

bool shm_worker_read(const shm_workers *t, uint32_t i, shm_worker_info *out)
{
    if (i >= t->capacity)
        return false;
    shm_worker *w = (shm_worker *)&t->slot[i];   /* atomics need non-const */
    for (int tries = 0; tries < READ_TRIES; tries++) {
        uint32_t seq = atomic_load_explicit(&w->seq, memory_order_acquire);
        if (seq & 1)
            continue;
        out->state = atomic_load_explicit(&w->state, RELAXED);
        out->pid = atomic_load_explicit(&w->pid, RELAXED);
        out->generation = atomic_load_explicit(&w->generation, RELAXED);
        out->index = atomic_load_explicit(&w->index, RELAXED);
        out->started_ms = atomic_load_explicit(&w->started_ms, RELAXED);
        out->rss = atomic_load_explicit(&w->rss, RELAXED);
        out->requests = atomic_load_explicit(&w->requests, RELAXED);
        out->accepted = atomic_load_explicit(&w->accepted, RELAXED);
        out->connections = atomic_load_explicit(&w->connections, RELAXED);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&w->seq, RELAXED) == seq)
            return out->state != SHM_WORKER_FREE;
    }
    return false;
}
