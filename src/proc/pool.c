/* pool — see pool.h for the model.
 *
 * The loop never waits for a pool thread. Pool threads run at a low
 * priority (SCHED_IDLE by default), so one of them can be preempted at any
 * instruction and then wait a long time for the CPU; if it held a lock the
 * loop needs, the loop would wait as long (priority inversion; priority-
 * inheritance mutexes do nothing for SCHED_OTHER/SCHED_IDLE threads). So:
 *
 *  - Completions go on a lock-free stack (`done_stack`, Treiber: push by
 *    CAS, the loop takes the whole stack with one exchange and reverses it
 *    into completion order). No lock on either side.
 *  - Submissions: the queue the threads take jobs from is guarded by `mu`,
 *    but the loop only ever *tries* it. A job submitted while a thread holds
 *    mu waits in the loop's own `staged` list; the loop sets `want_flush`,
 *    and whichever thread holds mu checks that flag right after letting go
 *    and wakes the loop (its async), which moves the staged jobs then. A
 *    seq_cst fence between "set the flag" and "try the lock" on the loop
 *    side, and between "unlock" and "read the flag" on the thread side,
 *    makes it Dekker-safe: either the loop gets the lock or the holder sees
 *    the flag. Threads sleep on a semaphore (one post per queued job, one per
 *    thread to stop): sem_post never blocks the loop, unlike signalling a
 *    condition variable, which wants the mutex held to avoid lost wake-ups.
 *  - Cancelling a queued job: under mu if the loop gets it at once
 *    (unlinked, done follows on the next loop pass); otherwise a CAS of the
 *    job's state from QUEUED to CANCELLED, racing the CAS from QUEUED to
 *    RUNNING that a thread does when it dequeues the job: whoever wins
 *    decides, and a thread that dequeues a CANCELLED job completes it with
 *    -ECANCELED without running it.
 * Only pool_free takes mu unconditionally (it joins the threads anyway).
 *
 * Locking: `mu` guards the queue (q_head/q_tail, the jobs' queue links) and
 * `stopping`; it is never held while a work or done callback runs or a
 * wake-up is sent, and no other lock is taken under it. Loop-thread-only:
 * the staged list. Job states are read and written atomically (GNU
 * __atomic builtins on pool_job.state, which pool.h keeps a plain field).
 * The counters `queued` and `running` are atomics any thread may read. The
 * thread hooks, nice value and policy are written only before the threads
 * start (pthread_create orders them).
 *
 * Wake-ups: a thread that pushes onto an EMPTY completion stack sends the
 * loop's async; pushes onto a non-empty one ride on the wake-up already
 * due, because the loop takes the whole stack at once (on_async). So a
 * burst of N completions costs the loop one eventfd read, not N. (A send
 * that lands after the loop already took the stack costs one empty pass.)
 */
#include "proc/pool.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/log.h"

enum pool_job_state {
    JOB_IDLE,       /* not in the pool (never submitted, or done has run) */
    JOB_STAGED,     /* in the loop's staged list, not yet in the queue */
    JOB_QUEUED,     /* in the queue */
    JOB_CANCELLED,  /* in the queue, cancelled: the thread that dequeues it skips work */
    JOB_RUNNING,    /* a thread is in work() */
    JOB_COMPLETED,  /* on the completion stack or in a list of dones, done not yet called */
};

struct pool {
    loop           *loop;
    loop_async      async;        /* completions ready, or the queue free for staged jobs */
    pthread_mutex_t mu;           /* guards the fields marked [mu] */
    sem_t           work_sem;     /* one post per queued job, and per thread at stop */

    pool_job       *q_head;       /* [mu] FIFO of queued jobs, doubly linked */
    pool_job       *q_tail;
    bool            stopping;     /* [mu] pool_free has begun (the loop reads it freely) */
    pool_job       *s_head;       /* [loop] staged: submitted while mu was busy, FIFO */
    pool_job       *s_tail;
    _Atomic bool    want_flush;   /* the loop has staged jobs and found mu busy */
    _Atomic(pool_job *) done_stack;   /* finished or cancelled jobs, newest first */

    _Atomic unsigned queued;      /* jobs staged or queued, not yet taken by a thread */
    _Atomic unsigned running;     /* jobs in work() */
    unsigned        queue_max;    /* queued jobs at most */
    unsigned        nthreads;     /* threads wanted */
    _Atomic unsigned started;     /* threads created (loop thread writes) */
    pthread_t      *threads;      /* nthreads slots, `started` used */
    int             nice;         /* pool threads run this much nicer than the loop */
    enum pool_sched sched;        /* and under this policy */

    void         *(*init)(void *arg);   /* per-thread hooks, fixed once threads run */
    void          (*fini)(void *ctx);
    void           *hook_arg;
};

/* The calling pool thread's context (pool_thread_ctx). Thread-local rather
 * than global: each pool thread writes only its own. */
static __thread void *thread_ctx;

/* ---- job states and the completion stack (any thread) ------------------------------ */

static unsigned state_of(const pool_job *job)
{
    return __atomic_load_n(&job->state, __ATOMIC_ACQUIRE);
}

static void set_state(pool_job *job, unsigned s)
{
    __atomic_store_n(&job->state, s, __ATOMIC_RELEASE);
}

static bool change_state(pool_job *job, unsigned from, unsigned to)
{
    return __atomic_compare_exchange_n(&job->state, &from, to, false, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

/* Pushes a finished or cancelled job; wakes the loop if the stack was
 * empty (otherwise a wake-up is already due). The release CAS publishes
 * status and everything work wrote. */
static void push_done(pool *p, pool_job *job, int status)
{
    job->status = status;
    set_state(job, JOB_COMPLETED);
    pool_job *head = atomic_load_explicit(&p->done_stack, memory_order_relaxed);
    do
        job->next = head;
    while (!atomic_compare_exchange_weak_explicit(&p->done_stack, &head, job,
                                                  memory_order_release, memory_order_relaxed));
    if (!head)
        loop_async_send(&p->async);
}

/* Takes every pushed job, oldest first. */
static pool_job *take_dones(pool *p)
{
    pool_job *job = atomic_exchange_explicit(&p->done_stack, NULL, memory_order_acquire);
    pool_job *oldest_first = NULL;
    while (job) {
        pool_job *next = job->next;
        job->next = oldest_first;
        oldest_first = job;
        job = next;
    }
    return oldest_first;
}

/* ---- pool threads ------------------------------------------------------------- */

/* Lowers this thread's CPU priority by `by` below the nice value it
 * inherited from the loop thread that started it. On Linux nice is per
 * thread: the TID is a valid PRIO_PROCESS target and leaves the rest of the
 * process alone. Failure is harmless (the thread competes as an equal). */
static void lower_priority(int by)
{
    if (by <= 0)
        return;
    id_t tid = (id_t)gettid();
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, tid);
    if (cur == -1 && errno)
        return;
    int want = cur + by > 19 ? 19 : cur + by;
    if (setpriority(PRIO_PROCESS, tid, want) < 0)
        log_warn("pool: cannot set nice %d on a pool thread: %s", want, strerror(errno));
}

/* Switches a new pool thread to the pool's policy; each thread does it to
 * itself as it starts, before it takes a job (glibc's thread attributes
 * take only SCHED_OTHER/FIFO/RR, so it cannot be born so). Any unprivileged process
 * may lower a thread's policy like this (and cannot raise it back without
 * CAP_SYS_NICE or RLIMIT_NICE: it is done once, for good). Failure is
 * harmless (the thread keeps the loop's policy) but logged. */
static void set_policy(pthread_t t, enum pool_sched sched)
{
    if (sched == POOL_SCHED_NORMAL)
        return;
    int policy = sched == POOL_SCHED_IDLE ? SCHED_IDLE : SCHED_BATCH;
    struct sched_param sp = { .sched_priority = 0 };   /* the only one these allow */
    int err = pthread_setschedparam(t, policy, &sp);
    if (err)
        log_warn("pool: cannot set policy %s on a pool thread: %s", pool_sched_name(sched),
                 strerror(err));
}

/* Every pool thread lets go of mu through here: if the loop found mu busy
 * meanwhile (want_flush), it is woken to move its staged jobs. */
static void unlock_thread(pool *p)
{
    pthread_mutex_unlock(&p->mu);
    atomic_thread_fence(memory_order_seq_cst);   /* pairs with the one in flush_staged */
    if (atomic_load_explicit(&p->want_flush, memory_order_relaxed) &&
        atomic_exchange(&p->want_flush, false))
        loop_async_send(&p->async);
}

static pool_job *dequeue_locked(pool *p)
{
    pool_job *job = p->q_head;
    p->q_head = job->next;
    if (p->q_head)
        p->q_head->prev = NULL;
    else
        p->q_tail = NULL;
    job->next = job->prev = NULL;
    atomic_fetch_sub(&p->queued, 1);
    return job;
}

static void *thread_main(void *arg)
{
    pool *p = arg;
    /* Policy first, then nice, both by the thread itself and before its
     * first job: a policy change made by another thread reads the nice
     * value, then writes it back with the policy, so done from the loop it
     * could undo a nice value this thread had just set. */
    set_policy(pthread_self(), p->sched);
    lower_priority(p->nice);   /* its own: setpriority wants the TID (under SCHED_BATCH nice
                                * still ranks the thread, under SCHED_IDLE it does not matter) */
    thread_ctx = p->init ? p->init(p->hook_arg) : NULL;
    for (;;) {
        while (sem_wait(&p->work_sem) < 0)
            ;   /* EINTR only; signals are blocked anyway */
        pthread_mutex_lock(&p->mu);
        if (p->stopping) {   /* queued jobs are pool_free's to cancel */
            unlock_thread(p);
            break;
        }
        /* no job: it was cancelled and unlinked after its post */
        pool_job *job = p->q_head ? dequeue_locked(p) : NULL;
        bool run = job && change_state(job, JOB_QUEUED, JOB_RUNNING);
        if (run)
            atomic_fetch_add(&p->running, 1);
        unlock_thread(p);
        if (!job)
            continue;
        if (run) {
            job->work(job);
            atomic_fetch_sub(&p->running, 1);
        }
        push_done(p, job, run ? 0 : -ECANCELED);   /* else cancelled while mu was busy */
    }
    if (p->fini)
        p->fini(thread_ctx);
    thread_ctx = NULL;
    return NULL;
}

/* Starts the threads with every signal blocked (they inherit the creator's
 * mask): signals are for the loop's signalfd, and a thread that left
 * SIGTERM unblocked would get the default action — the whole process dies.
 * Some threads failing to start is survivable; none is -ENOMEM. */
static int start_threads(pool *p)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    unsigned n = 0;
    int err = 0;
    while (n < p->nthreads) {
        err = pthread_create(&p->threads[n], NULL, thread_main, p);
        if (err)
            break;
        pthread_setname_np(p->threads[n], "myriad-pool");
        n++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    atomic_store(&p->started, n);
    if (err)
        log_warn("pool: started %u of %u threads: %s", n, p->nthreads, strerror(err));
    return n ? 0 : -ENOMEM;
}

/* ---- the loop side ------------------------------------------------------------ */

static void unlink_job(pool_job **head, pool_job **tail, pool_job *job)
{
    if (job->prev)
        job->prev->next = job->next;
    else
        *head = job->next;
    if (job->next)
        job->next->prev = job->prev;
    else
        *tail = job->prev;
    job->next = job->prev = NULL;
}

/* Moves the staged jobs to the queue if mu is free now; if not, asks the
 * thread holding it to wake the loop when it lets go (unlock_thread), and
 * on_async calls this again. Never blocks. */
static void flush_staged(pool *p)
{
    if (!p->s_head)
        return;
    atomic_store(&p->want_flush, true);
    atomic_thread_fence(memory_order_seq_cst);   /* pairs with the one in unlock_thread */
    if (pthread_mutex_trylock(&p->mu) != 0)
        return;
    atomic_store(&p->want_flush, false);
    unsigned n = 0;
    for (pool_job *j = p->s_head; j; j = j->next, n++)
        set_state(j, JOB_QUEUED);
    p->s_head->prev = p->q_tail;
    if (p->q_tail)
        p->q_tail->next = p->s_head;
    else
        p->q_head = p->s_head;
    p->q_tail = p->s_tail;
    p->s_head = p->s_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (n--)
        sem_post(&p->work_sem);
}

/* Calls done for each job of a detached list, oldest first. A done may free
 * its job, so next is read before. */
static void run_dones(pool_job *job)
{
    while (job) {
        pool_job *next = job->next;
        int status = job->status;
        job->next = NULL;
        set_state(job, JOB_IDLE);
        job->done(job, status);
        job = next;
    }
}

/* The pool's wake-up: staged jobs first (threads may be waiting), then the
 * completions. Bounded: the stack is taken once; jobs completing while
 * these callbacks run wake the loop again. */
static void on_async(loop_async *a)
{
    pool *p = container_of(a, pool, async);
    flush_staged(p);
    run_dones(take_dones(p));
}

pool *pool_new(loop *l, unsigned threads, unsigned queue_max)
{
    if (!threads || !queue_max)
        return NULL;
    pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->threads = calloc(threads, sizeof(*p->threads));
    if (!p->threads || sem_init(&p->work_sem, 0, 0) < 0) {
        free(p->threads);
        free(p);
        return NULL;
    }
    p->loop = l;
    p->nthreads = threads;
    p->queue_max = queue_max;
    pthread_mutex_init(&p->mu, NULL);
    loop_async_init(l, &p->async, on_async);
    return p;
}

int pool_submit(pool *p, pool_job *job, pool_work_fn work, pool_done_fn done)
{
    assert(state_of(job) == JOB_IDLE);
    if (!atomic_load(&p->started)) {
        int rc = start_threads(p);
        if (rc < 0)
            return rc;
    }
    if (p->stopping)   /* written by this (the loop) thread only */
        return -ECANCELED;
    if (atomic_load(&p->queued) >= p->queue_max)
        return -EAGAIN;
    job->work = work;
    job->done = done;
    job->next = NULL;
    job->prev = p->s_tail;
    set_state(job, JOB_STAGED);
    if (p->s_tail)
        p->s_tail->next = job;
    else
        p->s_head = job;
    p->s_tail = job;
    atomic_fetch_add(&p->queued, 1);
    flush_staged(p);   /* at once, unless a thread holds mu this instant */
    return 0;
}

bool pool_cancel(pool *p, pool_job *job)
{
    switch (state_of(job)) {
    case JOB_STAGED:   /* the loop's own list: no lock */
        unlink_job(&p->s_head, &p->s_tail, job);
        atomic_fetch_sub(&p->queued, 1);
        push_done(p, job, -ECANCELED);
        return true;
    case JOB_QUEUED:
        if (pthread_mutex_trylock(&p->mu) == 0) {
            /* a thread may have taken it between the two looks */
            bool still = state_of(job) == JOB_QUEUED;
            if (still) {
                unlink_job(&p->q_head, &p->q_tail, job);
                atomic_fetch_sub(&p->queued, 1);
            }
            pthread_mutex_unlock(&p->mu);
            if (still)
                push_done(p, job, -ECANCELED);
            return still;
        }
        /* mu busy: never wait for a pool thread. Left in the queue; the
         * thread that dequeues it completes it unrun. */
        return change_state(job, JOB_QUEUED, JOB_CANCELLED);
    default:
        return false;
    }
}

/* Joining first means no thread touches the lists afterwards; then the
 * completions (status 0 or an earlier cancel) run, and then the queue and
 * the staged jobs, cancelled, in submission order. A done that submits
 * gets -ECANCELED. */
void pool_free(pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);   /* the one place the loop waits for mu: it joins next */
    p->stopping = true;
    pthread_mutex_unlock(&p->mu);
    unsigned n = atomic_load(&p->started);
    for (unsigned i = 0; i < n; i++)
        sem_post(&p->work_sem);
    for (unsigned i = 0; i < n; i++)
        pthread_join(p->threads[i], NULL);

    pool_job *list = take_dones(p), **tail = &list;
    while (*tail)
        tail = &(*tail)->next;
    pool_job *rest[2] = { p->q_head, p->s_head };
    p->q_head = p->q_tail = p->s_head = p->s_tail = NULL;
    for (int i = 0; i < 2; i++) {
        for (pool_job *j = rest[i], *next; j; j = next) {
            next = j->next;
            j->prev = j->next = NULL;
            j->status = -ECANCELED;
            set_state(j, JOB_COMPLETED);
            *tail = j;
            tail = &j->next;
        }
    }
    atomic_store(&p->queued, 0);
    run_dones(list);
    assert(!atomic_load(&p->done_stack));

    loop_async_close(p->loop, &p->async);
    sem_destroy(&p->work_sem);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

/* ---- settings and counters ------------------------------------------------------ */

int pool_set_thread_hooks(pool *p, void *(*init)(void *arg), void (*fini)(void *ctx), void *arg)
{
    if (atomic_load(&p->started))
        return -EBUSY;
    p->init = init;
    p->fini = fini;
    p->hook_arg = arg;
    return 0;
}

void *pool_thread_ctx(void) { return thread_ctx; }

void pool_set_nice(pool *p, int nice) { p->nice = nice < 0 ? 0 : nice > 19 ? 19 : nice; }

void pool_set_sched(pool *p, enum pool_sched sched) { p->sched = sched; }

static const char *const sched_names[] = {
    [POOL_SCHED_NORMAL] = "normal", [POOL_SCHED_BATCH] = "batch", [POOL_SCHED_IDLE] = "idle",
};

int pool_sched_parse(const char *name, enum pool_sched *out)
{
    for (unsigned i = 0; i < sizeof(sched_names) / sizeof(sched_names[0]); i++) {
        if (name && strcmp(name, sched_names[i]) == 0) {
            *out = (enum pool_sched)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *pool_sched_name(enum pool_sched sched)
{
    return (unsigned)sched < sizeof(sched_names) / sizeof(sched_names[0]) ? sched_names[sched]
                                                                           : "?";
}

unsigned pool_queued(const pool *p) { return atomic_load_explicit(&p->queued, memory_order_relaxed); }
unsigned pool_running(const pool *p) { return atomic_load_explicit(&p->running, memory_order_relaxed); }
unsigned pool_threads(const pool *p) { return atomic_load(&p->started); }
unsigned pool_queue_max(const pool *p) { return p->queue_max; }
bool pool_is_full(const pool *p) { return pool_queued(p) >= p->queue_max; }
