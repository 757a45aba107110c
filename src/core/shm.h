/* shm — memory shared by the supervisor and its workers, made before fork.
 *
 * A region is one MAP_SHARED|MAP_ANONYMOUS mapping created by the supervisor
 * before it forks anything; every worker inherits it at the same address,
 * so pointers into it are valid in all of them. Pieces are carved out of it
 * with shm_alloc() (a bump allocator, never freed) — also before the first
 * fork, so that every process knows every piece.
 *
 * The first piece is the worker table: one 64-byte row per worker process
 * (pid, generation, index, start time, state, RSS, requests, connections).
 * Each field has exactly one writer:
 *
 *   supervisor   claims and releases rows; pid, generation, index, started,
 *                rss (sampled each second)
 *   the worker   requests, accepted, connections
 *
 * except `state`: the worker moves it STARTING → SERVING (compare-and-swap)
 * and either side may set DRAINING, which is final.
 *
 * and any process may read any row at any time (relaxed atomics: each value
 * is a true value from some recent moment). A row's identity (pid,
 * generation, index, started) changes only when the row is reused; readers
 * that need it consistent use shm_worker_read(), which retries around the
 * row's sequence number (a seqlock written only by the supervisor).
 *
 * Rows are 64 bytes, one cache line each, so workers updating their own
 * counters never share a line.
 */
#ifndef MYR_SHM_H
#define MYR_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SHM_ALIGN 64u   /* every piece starts on its own cache line */

typedef struct shm_region shm_region;

/* Maps `size` bytes (rounded up to pages) of zeroed shared memory. NULL
 * with errno set on failure. */
shm_region *shm_create(size_t size);
/* Unmaps the region in the calling process; pointers into it die. */
void shm_destroy(shm_region *r);
/* Carves `size` zeroed bytes, SHM_ALIGN-aligned, out of r. NULL when the
 * region is full. Call before fork (see the file comment). */
void *shm_alloc(shm_region *r, size_t size);
size_t shm_used(const shm_region *r);     /* bytes handed out, header included */
size_t shm_size(const shm_region *r);     /* bytes mapped */

/* ---- the worker table ---------------------------------------------------- */

enum shm_worker_state {
    SHM_WORKER_FREE,      /* unused row */
    SHM_WORKER_STARTING,  /* forked, not accepting yet */
    SHM_WORKER_SERVING,   /* accepting connections */
    SHM_WORKER_DRAINING,  /* told to stop: finishing its requests */
};

typedef struct shm_worker {
    _Atomic uint32_t seq;          /* odd while the supervisor rewrites the identity */
    _Atomic uint32_t state;        /* enum shm_worker_state */
    _Atomic int32_t  pid;
    _Atomic uint32_t generation;   /* configuration generation: 1 at start, +1 per reload */
    _Atomic uint32_t index;        /* worker number within its generation, 0-based */
    _Atomic uint32_t connections;  /* connections open now */
    _Atomic int64_t  started_ms;   /* start time, ms since the Unix epoch */
    _Atomic uint64_t rss;          /* resident set, bytes (sampled by the supervisor) */
    _Atomic uint64_t requests;     /* requests dispatched since start */
    _Atomic uint64_t accepted;     /* connections accepted since start */
    uint64_t         reserved;     /* pads the row to one cache line */
} shm_worker;

typedef struct shm_workers {
    uint32_t         capacity;     /* rows in slot[] */
    _Atomic uint32_t high;         /* rows ever used: readers scan slot[0..high) */
    uint8_t          pad[SHM_ALIGN - 8];
    shm_worker       slot[];
} shm_workers;

/* A consistent copy of one row's identity and counters. */
typedef struct shm_worker_info {
    enum shm_worker_state state;
    pid_t    pid;
    uint32_t generation, index, connections;
    int64_t  started_ms;
    uint64_t rss, requests, accepted;
} shm_worker_info;

/* Carves a table of `capacity` rows out of r; NULL when r is too small. */
shm_workers *shm_workers_new(shm_region *r, uint32_t capacity);

/* Supervisor only. Takes the lowest free row for a worker about to be
 * forked, fills its identity (pid 0 until shm_worker_set_pid) and sets it
 * STARTING; NULL when every row is in use. */
shm_worker *shm_worker_claim(shm_workers *t, uint32_t generation, uint32_t index);
/* Supervisor only, right after fork: the row's pid. */
void shm_worker_set_pid(shm_worker *w, pid_t pid);
/* Supervisor only. Frees a row whose worker has exited. */
void shm_worker_release(shm_workers *t, shm_worker *w);

/* Worker: STARTING → SERVING. False if the supervisor already moved the
 * row on (it asked the worker to drain before it was ready). */
bool shm_worker_set_serving(shm_worker *w);
/* Supervisor or worker: the worker is draining (told to, or on its own
 * signal). Final: no transition leaves DRAINING but release. */
void shm_worker_set_draining(shm_worker *w);
/* Worker: publishes its counters. */
void shm_worker_publish(shm_worker *w, uint64_t requests, uint64_t accepted,
                        uint32_t connections);

/* Any process. Copies row i; false if it is free (or being reused). */
bool shm_worker_read(const shm_workers *t, uint32_t i, shm_worker_info *out);
/* Rows a reader should scan: slot[0 .. shm_workers_high(t)). */
uint32_t shm_workers_high(const shm_workers *t);

#endif
