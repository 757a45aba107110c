/* pool — see pool.h for the model.
 *
 * Locking: one mutex, `mu`, guards the queue, the completion list, the
 * stopping flag and every job's state. It is never held while a work or
 * done callback runs or a wake-up is sent, and no other lock is taken under
 * it. The counters `queued` and `running` are atomics written under mu so
 * that other threads can read them without it. The thread hooks and nice
 * value are written only before the threads start (pthread_create orders
 * them).
 *
 * Wake-ups: a pool thread that appends to an EMPTY completion list sends the
 * loop's async; appends to a non-empty list ride on the wake-up already
 * due, because the loop takes the whole list at once (on_completions). So a
 * burst of N completions costs the loop one eventfd read, not N. (A send
 * that lands after the loop already took the list costs one empty pass.)
 */
#include "proc/pool.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/log.h"

enum pool_job_state {
    JOB_IDLE,       /* not in the pool (never submitted, or done has run) */
    JOB_QUEUED,     /* in the queue */
    JOB_RUNNING,    /* a thread is in work() */
    JOB_COMPLETED,  /* in the completion list, done not yet called */
};

struct pool {
    loop           *loop;
    loop_async      async;        /* completions are ready */
    pthread_mutex_t mu;           /* guards the fields marked [mu] */
    pthread_cond_t  work_cv;      /* threads wait here for jobs or stop */

    pool_job       *q_head;       /* [mu] FIFO of queued jobs, doubly linked */
    pool_job       *q_tail;
    pool_job       *c_head;       /* [mu] completed jobs, oldest first */
    pool_job      **c_tail;       /* [mu] last next pointer of that list */
    bool            stopping;     /* [mu] pool_free has begun */

    _Atomic unsigned queued;      /* jobs in the queue (written under mu) */
    _Atomic unsigned running;     /* jobs in work() (written under mu) */
    unsigned        queue_max;    /* queued jobs at most */
    unsigned        nthreads;     /* threads wanted */
    _Atomic unsigned started;     /* threads created (loop thread writes) */
    pthread_t      *threads;      /* nthreads slots, `started` used */
    int             nice;         /* pool threads run this much nicer than the loop */

    void         *(*init)(void *arg);   /* per-thread hooks, fixed once threads run */
    void          (*fini)(void *ctx);
    void           *hook_arg;
};

/* The calling pool thread's context (pool_thread_ctx). Thread-local rather
 * than global: each pool thread writes only its own. */
static __thread void *thread_ctx;

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

/* Appends a finished or cancelled job to the completion list. Returns true
 * if the list was empty, i.e. the caller must wake the loop. Holds mu. */
static bool complete_locked(pool *p, pool_job *job, int status)
{
    bool was_empty = p->c_head == NULL;
    job->status = status;
    job->state = JOB_COMPLETED;
    job->next = NULL;
    *p->c_tail = job;
    p->c_tail = &job->next;
    return was_empty;
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
    lower_priority(p->nice);
    thread_ctx = p->init ? p->init(p->hook_arg) : NULL;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->q_head && !p->stopping)
            pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->stopping)
            break;   /* queued jobs are pool_free's to cancel */
        pool_job *job = dequeue_locked(p);
        job->state = JOB_RUNNING;
        atomic_fetch_add(&p->running, 1);
        pthread_mutex_unlock(&p->mu);

        job->work(job);

        pthread_mutex_lock(&p->mu);
        atomic_fetch_sub(&p->running, 1);
        if (complete_locked(p, job, 0)) {
            pthread_mutex_unlock(&p->mu);
            loop_async_send(&p->async);
            pthread_mutex_lock(&p->mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
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

/* Calls done for each job of a detached list, oldest first. A done may free
 * its job, so next is read before. */
static void run_dones(pool_job *job)
{
    while (job) {
        pool_job *next = job->next;
        int status = job->status;
        job->next = NULL;
        job->state = JOB_IDLE;
        job->done(job, status);
        job = next;
    }
}

/* Bounded: the list is taken once; jobs completing while these callbacks
 * run wake the loop again. */
static void on_completions(loop_async *a)
{
    pool *p = container_of(a, pool, async);
    pthread_mutex_lock(&p->mu);
    pool_job *list = p->c_head;
    p->c_head = NULL;
    p->c_tail = &p->c_head;
    pthread_mutex_unlock(&p->mu);
    run_dones(list);
}

pool *pool_new(loop *l, unsigned threads, unsigned queue_max)
{
    if (!threads || !queue_max)
        return NULL;
    pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->threads = calloc(threads, sizeof(*p->threads));
    if (!p->threads) {
        free(p);
        return NULL;
    }
    p->loop = l;
    p->nthreads = threads;
    p->queue_max = queue_max;
    p->c_tail = &p->c_head;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    loop_async_init(l, &p->async, on_completions);
    return p;
}

int pool_submit(pool *p, pool_job *job, pool_work_fn work, pool_done_fn done)
{
    assert(job->state == JOB_IDLE);
    if (!atomic_load(&p->started)) {
        int rc = start_threads(p);
        if (rc < 0)
            return rc;
    }
    job->work = work;
    job->done = done;
    pthread_mutex_lock(&p->mu);
    int rc = p->stopping ? -ECANCELED
           : atomic_load(&p->queued) >= p->queue_max ? -EAGAIN : 0;
    if (rc == 0) {
        job->state = JOB_QUEUED;
        job->next = NULL;
        job->prev = p->q_tail;
        if (p->q_tail)
            p->q_tail->next = job;
        else
            p->q_head = job;
        p->q_tail = job;
        atomic_fetch_add(&p->queued, 1);
        pthread_cond_signal(&p->work_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

bool pool_cancel(pool *p, pool_job *job)
{
    bool wake = false;
    pthread_mutex_lock(&p->mu);
    bool queued = job->state == JOB_QUEUED;
    if (queued) {
        if (job->prev)
            job->prev->next = job->next;
        else
            p->q_head = job->next;
        if (job->next)
            job->next->prev = job->prev;
        else
            p->q_tail = job->prev;
        job->prev = NULL;
        atomic_fetch_sub(&p->queued, 1);
        wake = complete_locked(p, job, -ECANCELED);
    }
    pthread_mutex_unlock(&p->mu);
    if (wake)
        loop_async_send(&p->async);
    return queued;
}

/* Joining first means no thread touches the lists afterwards; then the
 * completions (status 0 or an earlier cancel) run, and then the queue,
 * cancelled, in submission order. A done that submits gets -ECANCELED. */
void pool_free(pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    unsigned n = atomic_load(&p->started);
    for (unsigned i = 0; i < n; i++)
        pthread_join(p->threads[i], NULL);

    while (p->q_head)
        complete_locked(p, dequeue_locked(p), -ECANCELED);
    pool_job *list = p->c_head;
    p->c_head = NULL;
    p->c_tail = &p->c_head;
    run_dones(list);
    assert(!p->q_head && !p->c_head);

    loop_async_close(p->loop, &p->async);
    pthread_cond_destroy(&p->work_cv);
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

unsigned pool_queued(const pool *p) { return atomic_load_explicit(&p->queued, memory_order_relaxed); }
unsigned pool_running(const pool *p) { return atomic_load_explicit(&p->running, memory_order_relaxed); }
unsigned pool_threads(const pool *p) { return atomic_load(&p->started); }
unsigned pool_queue_max(const pool *p) { return p->queue_max; }
bool pool_is_full(const pool *p) { return pool_queued(p) >= p->queue_max; }
