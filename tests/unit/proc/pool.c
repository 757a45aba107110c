/* Unit tests for src/proc/pool.c: completion order, the bounded queue,
 * many concurrent jobs, cancellation, stopping with jobs queued, thread
 * hooks, lazy start, the pool threads' priority and scheduling policy, an
 * idle-policy job finishing beside a thread that saturates its core, and
 * the loop never waiting for the pool's mutex (the source is included to
 * hold that mutex from the test, as a preempted pool thread would). Jobs are heap objects
 * freed by their done callback, so LeakSanitizer (the ASan build) checks
 * that every submitted job gets exactly one done, even at shutdown.
 *
 * Blocking: a "gate" job holds a pool thread until the test opens it, which
 * makes "running" and "queued" states deterministic without sleeps. Every
 * wait on the loop is bounded by a deadline; alarm() kills a hung run. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"
#include "proc/pool.c"

/* ---- helpers ------------------------------------------------------------- */

typedef struct tjob {
    pool_job   job;
    int        id;
    int        status;       /* from done; 1 = done not run yet */
    bool       ran;          /* work ran */
    sem_t     *gate;         /* work waits here when set */
    sem_t     *started;      /* work posts here first when set */
    int       *order;        /* done appends id here ... */
    int       *norder;       /* ... at *norder */
    bool       keep;         /* done does not free (the test owns it) */
    pthread_t  thread;       /* the thread work ran on */
    void      *ctx;          /* pool_thread_ctx() seen by work */
    int        nice;         /* getpriority() seen by work */
    int        policy;       /* sched_getscheduler() seen by work */
    long       spin_us;      /* work burns this much of its thread's CPU time */
} tjob;

static _Atomic int dones;    /* done callbacks run, per test */

static void work_fn(pool_job *j)
{
    tjob *t = container_of(j, tjob, job);
    if (t->started)
        sem_post(t->started);
    if (t->gate)
        sem_wait(t->gate);
    t->ran = true;
    t->thread = pthread_self();
    t->ctx = pool_thread_ctx();
    errno = 0;
    t->nice = getpriority(PRIO_PROCESS, (id_t)gettid());
    t->policy = sched_getscheduler(0);
    if (t->spin_us) {   /* CPU time, not wall time: only runs on the CPU count */
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        long start = ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
        do
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        while (ts.tv_sec * 1000000L + ts.tv_nsec / 1000 - start < t->spin_us);
    }
}

static void done_fn(pool_job *j, int status)
{
    tjob *t = container_of(j, tjob, job);
    t->status = status;
    if (t->order)
        t->order[(*t->norder)++] = t->id;
    atomic_fetch_add(&dones, 1);
    if (!t->keep)
        free(t);
}

static tjob *tjob_new(int id)
{
    tjob *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->id = id;
    t->status = 1;
    return t;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the loop until `want` done callbacks have run (10 s at most). */
static void run_until_dones(loop *l, int want)
{
    uint64_t deadline = now_ms() + 10000;
    while (atomic_load(&dones) < want) {
        assert_true(now_ms() < deadline);
        assert_true(loop_run_once(l, 50) >= 0);
    }
}

/* Waits for a pool thread to be inside the work of a job with `started`. */
static void wait_started(sem_t *started)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    assert_int_equal(sem_timedwait(started, &until), 0);
}

static int setup(void **state)
{
    atomic_store(&dones, 0);
    alarm(60);
    loop *l = loop_new();
    assert_non_null(l);
    *state = l;
    return 0;
}

static int teardown(void **state)
{
    loop_free(*state);
    alarm(0);
    return 0;
}

/* ---- tests ------------------------------------------------------------------ */

/* One thread: done runs in submission order, on the loop thread, never
 * inside pool_submit. */
static void test_order(void **state)
{
    loop *l = *state;
    pool *p = pool_new(l, 1, 1000);
    assert_non_null(p);
    enum { N = 200 };
    int order[N], n = 0;
    for (int i = 0; i < N; i++) {
        tjob *t = tjob_new(i);
        t->order = order;
        t->norder = &n;
        assert_int_equal(pool_submit(p, &t->job, work_fn, done_fn), 0);
    }
    assert_int_equal(n, 0);   /* nothing completes inside submit */
    run_until_dones(l, N);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(order[i], i);
    pool_free(p);
}

/* With the only thread held, queue_max jobs fit and the next is refused
 * with -EAGAIN (and its done never runs); room comes back as jobs start. */
static void test_queue_full(void **state)
{
    loop *l = *state;
    pool *p = pool_new(l, 1, 3);
    sem_t gate, started;
    sem_init(&gate, 0, 0);
    sem_init(&started, 0, 0);
    tjob *hold = tjob_new(0);
    hold->gate = &gate;
    hold->started = &started;
    assert_int_equal(pool_submit(p, &hold->job, work_fn, done_fn), 0);
    wait_started(&started);
    assert_int_equal(pool_running(p), 1);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(pool_submit(p, &tjob_new(i)->job, work_fn, done_fn), 0);
    assert_int_equal(pool_queued(p), 3);
    assert_true(pool_is_full(p));
    tjob refused = { .id = 99, .status = 1, .keep = true };
    assert_int_equal(pool_submit(p, &refused.job, work_fn, done_fn), -EAGAIN);
    sem_post(&gate);
    run_until_dones(l, 4);
    assert_int_equal(refused.status, 1);   /* done never ran */
    assert_false(refused.ran);
    assert_false(pool_is_full(p));
    /* the refused job may be submitted again */
    assert_int_equal(pool_submit(p, &refused.job, work_fn, done_fn), 0);
    run_until_dones(l, 5);
    assert_int_equal(refused.status, 0);
    assert_true(refused.ran);
    pool_free(p);
    sem_destroy(&gate);
    sem_destroy(&started);
}

/* Four threads, many jobs: each runs once, every done has status 0, the
 * counters return to zero, and the threads really were several. */
static void test_many(void **state)
{
    loop *l = *state;
    pool *p = pool_new(l, 4, 100000);
    enum { N = 20000 };
    tjob *jobs = calloc(N, sizeof(*jobs));
    assert_non_null(jobs);
    for (int i = 0; i < N; i++) {
        jobs[i] = (tjob){ .id = i, .status = 1, .keep = true };
        assert_int_equal(pool_submit(p, &jobs[i].job, work_fn, done_fn), 0);
    }
    run_until_dones(l, N);
    int threads_seen = 0;
    pthread_t seen[4];
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i].status, 0);
        assert_true(jobs[i].ran);
        bool known = false;
        for (int k = 0; k < threads_seen; k++)
            known |= pthread_equal(seen[k], jobs[i].thread);
        if (!known) {
            assert_true(threads_seen < 4);
            seen[threads_seen++] = jobs[i].thread;
        }
    }
    assert_int_equal(pool_threads(p), 4);
    assert_int_equal(pool_queued(p), 0);
    assert_int_equal(pool_running(p), 0);
    pool_free(p);
    free(jobs);
}

/* Cancelling: a queued job is skipped and its done gets -ECANCELED later
 * (not inside pool_cancel); a running or finished job cannot be cancelled
 * and completes with 0; the order of the others is kept. */
static void test_cancel(void **state)
{
    loop *l = *state;
    pool *p = pool_new(l, 1, 100);
    sem_t gate, started;
    sem_init(&gate, 0, 0);
    sem_init(&started, 0, 0);
    int order[8], n = 0;
    tjob jobs[4];
    for (int i = 0; i < 4; i++)
        jobs[i] = (tjob){ .id = i, .status = 1, .keep = true, .order = order, .norder = &n };
    jobs[0].gate = &gate;
    jobs[0].started = &started;
    for (int i = 0; i < 4; i++)
        assert_int_equal(pool_submit(p, &jobs[i].job, work_fn, done_fn), 0);
    wait_started(&started);
    assert_false(pool_cancel(p, &jobs[0].job));   /* running */
    assert_true(pool_cancel(p, &jobs[2].job));    /* queued */
    assert_false(pool_cancel(p, &jobs[2].job));   /* already cancelled */
    assert_int_equal(jobs[2].status, 1);          /* done comes later */
    assert_int_equal(pool_queued(p), 2);
    run_until_dones(l, 1);                        /* the cancelled one */
    assert_int_equal(order[0], 2);
    assert_int_equal(jobs[2].status, -ECANCELED);
    sem_post(&gate);
    run_until_dones(l, 4);
    assert_int_equal(jobs[0].status, 0);
    assert_int_equal(jobs[1].status, 0);
    assert_int_equal(jobs[3].status, 0);
    assert_false(jobs[2].ran);
    assert_int_equal(order[1], 0);
    assert_int_equal(order[2], 1);
    assert_int_equal(order[3], 3);
    assert_false(pool_cancel(p, &jobs[3].job));   /* finished */
    pool_free(p);
    sem_destroy(&gate);
    sem_destroy(&started);
}

/* A done callback may resubmit its own job. */
typedef struct rjob {
    tjob  t;
    pool *p;
    int   rounds;
} rjob;

static void done_resubmit(pool_job *j, int status)
{
    rjob *r = container_of(j, rjob, t.job);
    assert_int_equal(status, 0);
    atomic_fetch_add(&dones, 1);
    if (++r->rounds < 10)
        assert_int_equal(pool_submit(r->p, j, work_fn, done_resubmit), 0);
}

static void test_resubmit_from_done(void **state)
{
    loop *l = *state;
    rjob r = { .t = { .status = 1, .keep = true } };
    r.p = pool_new(l, 2, 10);
    assert_int_equal(pool_submit(r.p, &r.t.job, work_fn, done_resubmit), 0);
    run_until_dones(l, 10);
    assert_int_equal(r.rounds, 10);
    pool_free(r.p);
}

/* pool_free with jobs queued behind a running one: the running job
 * finishes (status 0), every queued one gets -ECANCELED before pool_free
 * returns, none of their work runs, and no job leaks (LSan). A done that
 * submits during shutdown is refused. */
static pool *stopping_pool;
static int refused_during_stop;
static void done_submit_again(pool_job *j, int status)
{
    tjob *t = container_of(j, tjob, job);
    assert_false(status != 0 && t->ran);
    tjob extra = { .keep = true };
    if (pool_submit(stopping_pool, &extra.job, work_fn, done_fn) == -ECANCELED)
        refused_during_stop++;
    done_fn(j, status);
}

static void *open_gate_later(void *arg)
{
    usleep(50 * 1000);   /* pool_free is (very likely) joining by now */
    sem_post(arg);
    return NULL;
}

static void test_free_with_queued(void **state)
{
    loop *l = *state;
    pool *p = pool_new(l, 1, 100);
    stopping_pool = p;
    refused_during_stop = 0;
    sem_t gate, started;
    sem_init(&gate, 0, 0);
    sem_init(&started, 0, 0);
    static int order[16];
    int n = 0;
    tjob *first = tjob_new(0);
    first->gate = &gate;
    first->started = &started;
    first->order = order;
    first->norder = &n;
    assert_int_equal(pool_submit(p, &first->job, work_fn, done_submit_again), 0);
    wait_started(&started);
    for (int i = 1; i <= 5; i++) {
        tjob *t = tjob_new(i);
        t->order = order;
        t->norder = &n;
        assert_int_equal(pool_submit(p, &t->job, work_fn, done_submit_again), 0);
    }
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, open_gate_later, &gate), 0);
    pool_free(p);   /* waits for the first job, then cancels the rest */
    pthread_join(opener, NULL);
    assert_int_equal(atomic_load(&dones), 6);
    assert_int_equal(refused_during_stop, 6);
    assert_int_equal(n, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(order[i], i);   /* the finished one, then the queue in order */
    sem_destroy(&gate);
    sem_destroy(&started);
}

/* A pool that never ran a job has no threads; freeing it is clean. */
static void test_lazy_start(void **state)
{
    loop *l = *state;
    pool *p = pool_new(l, 3, 10);
    assert_int_equal(pool_threads(p), 0);
    pool_free(p);
    p = pool_new(l, 3, 10);
    assert_int_equal(pool_submit(p, &tjob_new(0)->job, work_fn, done_fn), 0);
    assert_int_equal(pool_threads(p), 3);
    run_until_dones(l, 1);
    pool_free(p);
    assert_null(pool_new(l, 0, 10));
    assert_null(pool_new(l, 1, 0));
}

/* Thread hooks: init runs once per thread with arg, its result is that
 * thread's pool_thread_ctx(), fini gets it back at exit; the loop thread
 * has no ctx; hooks cannot change once threads run. */
typedef struct hooks_seen {
    _Atomic int inits, finis;
    int         ctx_tag[8];
} hooks_seen;

static void *hook_init(void *arg)
{
    hooks_seen *h = arg;
    int i = atomic_fetch_add(&h->inits, 1);
    return &h->ctx_tag[i];
}

static void hook_fini_other(void *ctx) { (void)ctx; }

static hooks_seen *hooks_global;
static void hook_fini_count(void *ctx)
{
    assert_true((int *)ctx >= hooks_global->ctx_tag && (int *)ctx < hooks_global->ctx_tag + 8);
    atomic_fetch_add(&hooks_global->finis, 1);
}

static void test_thread_hooks(void **state)
{
    loop *l = *state;
    hooks_seen h = { 0 };
    hooks_global = &h;
    pool *p = pool_new(l, 3, 1000);
    assert_int_equal(pool_set_thread_hooks(p, hook_init, hook_fini_count, &h), 0);
    enum { N = 300 };
    tjob *jobs = calloc(N, sizeof(*jobs));
    for (int i = 0; i < N; i++) {
        jobs[i] = (tjob){ .id = i, .status = 1, .keep = true };
        assert_int_equal(pool_submit(p, &jobs[i].job, work_fn, done_fn), 0);
    }
    assert_int_equal(pool_set_thread_hooks(p, NULL, hook_fini_other, NULL), -EBUSY);
    run_until_dones(l, N);
    assert_null(pool_thread_ctx());   /* not a pool thread */
    for (int i = 0; i < N; i++) {
        int *ctx = jobs[i].ctx;
        assert_true(ctx >= h.ctx_tag && ctx < h.ctx_tag + 3);
    }
    pool_free(p);
    assert_int_equal(atomic_load(&h.inits), 3);
    assert_int_equal(atomic_load(&h.finis), 3);
    free(jobs);
}

/* Pool threads run `nice` below the thread that started them (capped at
 * 19); the loop thread is left alone. */
static void test_nice(void **state)
{
    loop *l = *state;
    errno = 0;
    int before = getpriority(PRIO_PROCESS, (id_t)gettid());
    pool *p = pool_new(l, 1, 10);
    pool_set_nice(p, 7);
    tjob t = { .status = 1, .keep = true };
    assert_int_equal(pool_submit(p, &t.job, work_fn, done_fn), 0);
    run_until_dones(l, 1);
    assert_int_equal(t.nice, before + 7 > 19 ? 19 : before + 7);
    assert_int_equal(getpriority(PRIO_PROCESS, (id_t)gettid()), before);
    pool_free(p);
}

/* --pool-sched: each policy is what work sees on its pool thread (nice
 * still applies under SCHED_BATCH), the loop thread keeps its own; the
 * names parse both ways and nothing else does. */
static void test_sched(void **state)
{
    loop *l = *state;
    static const struct { enum pool_sched sched; const char *name; int policy; } cases[] = {
        { POOL_SCHED_NORMAL, "normal", SCHED_OTHER },
        { POOL_SCHED_BATCH, "batch", SCHED_BATCH },
        { POOL_SCHED_IDLE, "idle", SCHED_IDLE },
    };
    int loop_policy = sched_getscheduler(0);
    errno = 0;
    int before = getpriority(PRIO_PROCESS, (id_t)gettid());
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum pool_sched parsed = (enum pool_sched)-1;
        assert_int_equal(pool_sched_parse(cases[i].name, &parsed), 0);
        assert_int_equal(parsed, cases[i].sched);
        assert_string_equal(pool_sched_name(cases[i].sched), cases[i].name);

        atomic_store(&dones, 0);
        pool *p = pool_new(l, 2, 10);
        pool_set_sched(p, cases[i].sched);
        pool_set_nice(p, 3);
        tjob t[2] = { { .status = 1, .keep = true }, { .status = 1, .keep = true } };
        for (int j = 0; j < 2; j++)
            assert_int_equal(pool_submit(p, &t[j].job, work_fn, done_fn), 0);
        run_until_dones(l, 2);
        for (int j = 0; j < 2; j++) {
            assert_int_equal(t[j].status, 0);
            assert_int_equal(t[j].policy, cases[i].policy);
            if (cases[i].sched != POOL_SCHED_IDLE)   /* idle threads have no nice to speak of */
                assert_int_equal(t[j].nice, before + 3 > 19 ? 19 : before + 3);
        }
        assert_int_equal(sched_getscheduler(0), loop_policy);
        pool_free(p);
    }
    enum pool_sched out = POOL_SCHED_BATCH;
    assert_int_equal(pool_sched_parse("IDLE", &out), -EINVAL);
    assert_int_equal(pool_sched_parse("", &out), -EINVAL);
    assert_int_equal(pool_sched_parse(NULL, &out), -EINVAL);
    assert_int_equal(pool_sched_parse("fifo", &out), -EINVAL);
    assert_int_equal(out, POOL_SCHED_BATCH);   /* untouched on error */
}

/* A busy-looping ordinary thread on the loop thread's CPU: what a
 * saturated loop looks like to the pool threads sharing its core. */
static _Atomic bool spinning;

static void *spin_main(void *arg)
{
    (void)arg;
    while (atomic_load_explicit(&spinning, memory_order_relaxed))
        ;
    return NULL;
}

/* SCHED_IDLE is the lowest weight, not "only when the CPU is idle": an idle
 * pool thread pinned to one core with an ordinary thread spinning on it
 * still gets its small share, so a job completes — slowly, never starved
 * for good. The job needs 3 ms of CPU; at SCHED_IDLE's weight against one
 * nice-0 thread (3 : 1024) that is ~1 s of wall time, and the bound is 30. */
static void test_idle_not_starved(void **state)
{
    loop *l = *state;
    cpu_set_t old, one;
    assert_int_equal(sched_getaffinity(0, sizeof(old), &old), 0);
    int cpu = sched_getcpu();
    assert_true(cpu >= 0);
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    /* the pool thread and the spinner inherit this thread's affinity */
    assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
    atomic_store(&spinning, true);
    pthread_t spinner;
    assert_int_equal(pthread_create(&spinner, NULL, spin_main, NULL), 0);

    pool *p = pool_new(l, 1, 10);
    pool_set_sched(p, POOL_SCHED_IDLE);
    tjob t = { .status = 1, .keep = true, .spin_us = 3000 };
    assert_int_equal(pool_submit(p, &t.job, work_fn, done_fn), 0);
    uint64_t deadline = now_ms() + 30000;
    while (atomic_load(&dones) < 1 && now_ms() < deadline)
        assert_true(loop_run_once(l, 50) >= 0);
    int got = atomic_load(&dones);

    atomic_store(&spinning, false);
    pthread_join(spinner, NULL);
    assert_int_equal(sched_setaffinity(0, sizeof(old), &old), 0);
    run_until_dones(l, 1);   /* if the bound was missed, finish before freeing */
    pool_free(p);
    assert_int_equal(got, 1);
    assert_int_equal(t.status, 0);
    assert_int_equal(t.policy, SCHED_IDLE);
}

/* Holds the pool's mutex the way a pool thread does — as if preempted in a
 * critical section — until `release` is posted, then lets go through the
 * same unlock path pool threads use (which wakes the loop if it asked). */
typedef struct holder {
    pool  *p;
    sem_t  held, release;
} holder;

static void *hold_main(void *arg)
{
    holder *h = arg;
    pthread_mutex_lock(&h->p->mu);
    sem_post(&h->held);
    sem_wait(&h->release);
    unlock_thread(h->p);
    return NULL;
}

/* The loop never waits for a pool thread: with the pool's mutex held by
 * another thread, submit, cancel of a staged job and cancel of a queued
 * job all return at once (were one to block, the holder is never released
 * and alarm() fails the test). Staged jobs reach the queue once the holder
 * lets go; a job cancelled while the mutex was busy is skipped by the
 * thread that dequeues it; dones come in completion order. */
static void test_loop_never_waits_for_mu(void **state)
{
    loop *l = *state;
    pool *p = pool_new(l, 1, 10);
    sem_t gate, started;
    sem_init(&gate, 0, 0);
    sem_init(&started, 0, 0);
    int order[8], n = 0;
    tjob jobs[5];
    for (int i = 0; i < 5; i++)
        jobs[i] = (tjob){ .id = i, .status = 1, .keep = true, .order = order, .norder = &n };
    jobs[0].gate = &gate;
    jobs[0].started = &started;
    /* 0 runs (held at its gate), 1 waits in the queue */
    assert_int_equal(pool_submit(p, &jobs[0].job, work_fn, done_fn), 0);
    assert_int_equal(pool_submit(p, &jobs[1].job, work_fn, done_fn), 0);
    wait_started(&started);
    assert_int_equal(state_of(&jobs[1].job), JOB_QUEUED);

    holder h = { .p = p };
    sem_init(&h.held, 0, 0);
    sem_init(&h.release, 0, 0);
    pthread_t ht;
    assert_int_equal(pthread_create(&ht, NULL, hold_main, &h), 0);
    sem_wait(&h.held);

    assert_true(pool_cancel(p, &jobs[1].job));    /* queued, mu busy: marked */
    assert_int_equal(state_of(&jobs[1].job), JOB_CANCELLED);
    for (int i = 2; i < 5; i++)                   /* staged */
        assert_int_equal(pool_submit(p, &jobs[i].job, work_fn, done_fn), 0);
    assert_int_equal(state_of(&jobs[2].job), JOB_STAGED);
    assert_int_equal(pool_queued(p), 4);
    assert_true(pool_cancel(p, &jobs[3].job));    /* staged: the loop's own */
    assert_false(pool_cancel(p, &jobs[3].job));
    assert_int_equal(pool_queued(p), 3);
    run_until_dones(l, 1);                        /* 3's done, on the loop */
    assert_int_equal(jobs[3].status, -ECANCELED);
    assert_int_equal(state_of(&jobs[2].job), JOB_STAGED);   /* mu still busy */

    sem_post(&h.release);   /* the holder lets go and wakes the loop */
    pthread_join(ht, NULL);
    uint64_t deadline = now_ms() + 10000;
    while (state_of(&jobs[4].job) == JOB_STAGED) {
        assert_true(now_ms() < deadline);
        assert_true(loop_run_once(l, 50) >= 0);
    }
    sem_post(&gate);
    run_until_dones(l, 5);
    int want[5] = { 3, 0, 1, 2, 4 };
    for (int i = 0; i < 5; i++)
        assert_int_equal(order[i], want[i]);
    assert_int_equal(jobs[1].status, -ECANCELED);
    assert_false(jobs[1].ran);
    assert_false(jobs[3].ran);
    for (int i = 0; i < 5; i += 2)
        assert_int_equal(jobs[i].status, 0);
    assert_int_equal(pool_queued(p), 0);
    pool_free(p);
    sem_destroy(&h.held);
    sem_destroy(&h.release);
    sem_destroy(&gate);
    sem_destroy(&started);
}

/* pool_free with jobs staged (mu busy at submit) and one cancelled in
 * place: every job gets exactly one done, -ECANCELED for those that never
 * ran, completions first, then the queue, then the staged jobs. */
static void test_free_with_staged(void **state)
{
    loop *l = *state;
    pool *p = pool_new(l, 1, 10);
    sem_t gate, started;
    sem_init(&gate, 0, 0);
    sem_init(&started, 0, 0);
    int order[8], n = 0;
    tjob jobs[4];
    for (int i = 0; i < 4; i++)
        jobs[i] = (tjob){ .id = i, .status = 1, .keep = true, .order = order, .norder = &n };
    jobs[0].gate = &gate;
    jobs[0].started = &started;
    assert_int_equal(pool_submit(p, &jobs[0].job, work_fn, done_fn), 0);
    assert_int_equal(pool_submit(p, &jobs[1].job, work_fn, done_fn), 0);
    wait_started(&started);
    holder h = { .p = p };
    sem_init(&h.held, 0, 0);
    sem_init(&h.release, 0, 0);
    pthread_t ht;
    assert_int_equal(pthread_create(&ht, NULL, hold_main, &h), 0);
    sem_wait(&h.held);
    assert_true(pool_cancel(p, &jobs[1].job));
    assert_int_equal(pool_submit(p, &jobs[2].job, work_fn, done_fn), 0);
    assert_int_equal(pool_submit(p, &jobs[3].job, work_fn, done_fn), 0);
    sem_post(&h.release);
    pthread_join(ht, NULL);
    sem_post(&gate);   /* 0 finishes; whether 2 and 3 run first or not, free sorts it out */
    pool_free(p);
    assert_int_equal(n, 4);
    assert_int_equal(jobs[0].status, 0);
    assert_int_equal(jobs[1].status, -ECANCELED);
    assert_false(jobs[1].ran);
    for (int i = 2; i < 4; i++)
        assert_true(jobs[i].ran ? jobs[i].status == 0 : jobs[i].status == -ECANCELED);
    sem_destroy(&h.held);
    sem_destroy(&h.release);
    sem_destroy(&gate);
    sem_destroy(&started);
}

/* Completions arriving while the loop is busy are delivered together:
 * with the loop not polling, N jobs finish, then one loop iteration runs
 * every done. */
static void test_batched_completions(void **state)
{
    loop *l = *state;
    pool *p = pool_new(l, 2, 100);
    enum { N = 50 };
    for (int i = 0; i < N; i++)
        assert_int_equal(pool_submit(p, &tjob_new(i)->job, work_fn, done_fn), 0);
    uint64_t deadline = now_ms() + 10000;
    while (pool_queued(p) || pool_running(p)) {
        assert_true(now_ms() < deadline);
        usleep(1000);
    }
    usleep(10000);   /* the last completion is appended after running drops */
    assert_int_equal(atomic_load(&dones), 0);
    assert_true(loop_run_once(l, 1000) >= 1);
    assert_int_equal(atomic_load(&dones), N);
    pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resubmit_from_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lazy_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_hooks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_not_starved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batched_completions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_never_waits_for_mu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_staged, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
