/* pool — a worker's thread pool: CPU-heavy or blocking work off the loop.
 *
 * libuv's design — one FIFO queue, results posted back to the loop through
 * its eventfd — except that the loop never waits for a pool thread: the
 * completions are a lock-free stack, and the loop only ever *tries* the
 * queue's mutex (a job submitted while a thread holds it is staged and
 * moved when that thread lets go; see pool.c). Pool threads run at the
 * lowest priority and may sit preempted inside that mutex for long. A job
 * is a struct the caller embeds in its own (container_of), so the pool
 * never allocates per job:
 *
 *   loop thread                      pool thread
 *   pool_submit ──> queue ──────────> work(job)
 *                                        │
 *   done(job, 0) <── completions <───────┘   one wake-up (loop_async) for
 *                                             every job finished meanwhile
 *
 * A job moves IDLE → (STAGED →) QUEUED → RUNNING → COMPLETED → IDLE (done
 * called), or from STAGED or QUEUED to COMPLETED with -ECANCELED when
 * cancelled or when the pool stops (a queued job cancelled while a thread
 * held the mutex is completed, unrun, by the thread that dequeues it).
 * done always runs exactly once per submitted job, on the loop thread, and
 * in the order the jobs completed (FIFO submission order with one thread).
 *
 * Threads start lazily, all together, on the first submit: most workers of
 * most services never offload, and a worker per core times four idle
 * threads is memory and scheduler noise for nothing; the first job pays the
 * thread creation (90–200 µs for four, measured). They run at a lower CPU
 * priority than the loop — SCHED_IDLE by default (pool_set_sched), or nice
 * under SCHED_OTHER/SCHED_BATCH (pool_set_nice) — so that on a machine with
 * as many workers as cores the loop thread, which every request needs,
 * wins the CPU over hashing, and at once when it wakes; see
 * docs/BENCHMARKS.md for the measurement. Pool threads block every signal:
 * signals belong to the loop's signalfd.
 *
 * Threading: everything here is loop-thread-only, except pool_thread_ctx()
 * (pool threads) and pool_queued()/pool_running() (any thread).
 */
#ifndef MYR_PROC_POOL_H
#define MYR_PROC_POOL_H

#include <stdbool.h>

#include "core/loop.h"

typedef struct pool pool;
typedef struct pool_job pool_job;

/* Runs on a pool thread; must not touch the loop or anything it owns. */
typedef void (*pool_work_fn)(pool_job *job);
/* Runs on the loop thread: status 0 after work ran, or -ECANCELED if the
 * job was cancelled before it started or the pool stopped first (then work
 * never ran). The job may be freed or resubmitted from here. */
typedef void (*pool_done_fn)(pool_job *job, int status);

/* Embedded by the caller, who owns it from pool_submit until done runs.
 * Fields below `done` are the pool's. */
struct pool_job {
    pool_work_fn work;
    pool_done_fn done;
    pool_job    *next;      /* staged list, queue or completion stack link */
    pool_job    *prev;      /* staged list and queue only (O(1) cancel) */
    int          status;    /* for done */
    unsigned     state;     /* enum pool_job_state in pool.c; accessed atomically */
};

/* A pool for loop l: `threads` threads (started on the first submit) and at
 * most queue_max jobs waiting. Loop thread. NULL when out of memory or for
 * a zero count. */
pool *pool_new(loop *l, unsigned threads, unsigned queue_max);
/* Stops the threads: each finishes the job it is running, then exits. Then,
 * before returning, done runs for every job: 0 for those that ran,
 * -ECANCELED for those still queued. Loop thread; NULL is a no-op. */
void  pool_free(pool *p);

/* Queues job (never blocks). Returns 0; -EAGAIN when queue_max jobs are waiting already;
 * -ECANCELED while the pool is stopping (inside pool_free); -ENOMEM when no
 * thread could be started. On error done will not run. */
int   pool_submit(pool *p, pool_job *job, pool_work_fn work, pool_done_fn done);
/* True if job was still queued: it will not run, and done(job, -ECANCELED)
 * runs later on the loop (never from inside this call; never blocks). False
 * if it is running or finished (done runs, or ran, with its real status). */
bool  pool_cancel(pool *p, pool_job *job);

/* Per-thread context (one SQLite connection per thread, say): init(arg) runs
 * once on each pool thread as it starts and its result is what
 * pool_thread_ctx() returns on that thread; fini(ctx) runs as the thread
 * exits. Either may be NULL. Set before the first submit: returns 0, or
 * -EBUSY once the threads have started (the hooks are then not changed). */
int   pool_set_thread_hooks(pool *p, void *(*init)(void *arg), void (*fini)(void *ctx),
                            void *arg);
/* The calling pool thread's context; NULL on any other thread. */
void *pool_thread_ctx(void);
/* Threads started from now on run `nice` (0..19) nicer than the thread
 * that starts them (the loop), capped at 19; default 0. Ignored by the
 * kernel under POOL_SCHED_IDLE (which has its own, lowest, weight). */
void  pool_set_nice(pool *p, int nice);

/* The Linux scheduling policy of the pool threads (--pool-sched):
 *   NORMAL  SCHED_OTHER, ranked against the loop by nice alone;
 *   BATCH   SCHED_BATCH: like NORMAL, but a pool thread that wakes never
 *           preempts the running thread;
 *   IDLE    SCHED_IDLE: the lowest weight there is (3, against 1024 for a
 *           nice-0 thread), and any non-idle thread of the same scheduling
 *           group (the loop) preempts it the moment it wakes. Not strictly
 *           idle-only: a saturated loop still leaves it ~0.3% of the core
 *           per thread, so a job is slowed, never starved for good.
 * Applied by each thread to itself as it starts, before its nice value
 * and its first job (a policy change made from another thread could undo
 * the nice value: it writes back the one it read); set before
 * the first submit, like the nice value; default NORMAL (the offload pool
 * takes --pool-sched, whose default is idle). */
enum pool_sched { POOL_SCHED_NORMAL, POOL_SCHED_BATCH, POOL_SCHED_IDLE };
void  pool_set_sched(pool *p, enum pool_sched sched);
/* "normal", "batch" or "idle" -> *out: 0, or -EINVAL for anything else. */
int   pool_sched_parse(const char *name, enum pool_sched *out);
const char *pool_sched_name(enum pool_sched sched);

unsigned pool_queued(const pool *p);    /* jobs waiting (any thread) */
unsigned pool_running(const pool *p);   /* jobs in work() (any thread) */
unsigned pool_threads(const pool *p);   /* threads started (0 until the first submit) */
unsigned pool_queue_max(const pool *p);
bool     pool_is_full(const pool *p);   /* queue_max jobs waiting (any thread) */

#endif
