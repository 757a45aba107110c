/* loop — one epoll event loop per thread (see loop.h for the API).
 *
 * One iteration (loop_run_once) is six named phases:
 *
 *   1. compute timeout   0 if deferred work is queued, else the time to the
 *                        earliest timer rounded UP to the ms, else -1
 *   2. poll              epoll_wait for at most LOOP_BATCH events
 *   3. update clock      l->now = CLOCK_MONOTONIC, the one value every
 *                        callback of this iteration sees through loop_now()
 *   4. dispatch I/O      the fetched events, in order
 *   5. run due timers    those due at phase start, armed before the phase
 *   6. run deferred      the FIFO as it stood when the phase began
 *
 * Every phase is bounded: the poll fetches at most LOOP_BATCH events; a timer
 * armed during phase 5 (even with timeout 0) waits for the next iteration, as
 * does an item deferred during phase 6. So a callback that keeps re-arming or
 * re-deferring itself cannot starve I/O.
 *
 * Sources are embedded in their owners; the loop keeps pointers to them:
 * epoll_data.ptr holds the loop_io*, the timer heap holds loop_timer*, and
 * asyncs, signals and deferred items are threaded on intrusive lists. The
 * only allocation after loop_new is the heap's pointer array (grown and
 * shrunk geometrically).
 *
 * Lifetimes. A loop_io deleted during dispatch may still have an event later
 * in the fetched batch: loop_io_del sets io->fd = -1 and dispatch skips such
 * events, which means the io's memory must stay valid until the batch is
 * done — so an io may only be freed from a loop_defer callback or later.
 * (An io deleted and re-added during the same batch may see one stale event,
 * filtered by its new mask; callbacks must tolerate EAGAIN anyway.) Timers
 * are out of the heap before their callback runs, so a timer callback may
 * free its timer. Asyncs and signals may be removed from any callback, even
 * during their own delivery walk: the walk keeps its cursor in the loop and
 * removal advances it, so a removed entry is never touched again.
 *
 * Cross-thread: only loop_async_send may be called off the loop thread. The
 * loop has no global state; signals are per-thread masks plus a per-loop
 * signalfd, so several loops in several threads are independent.
 */
#include "core/loop.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

enum {
    LOOP_BATCH      = 512,  /* events fetched per epoll_wait */
    HEAP_MIN_CAP    = 64,   /* smallest heap array, in timers */
    SIGNAL_READS    = 4,    /* signalfd reads per dispatch (16 siginfo each) */
};

/* heap_idx is 32 bits: keep every slot (and 2 * slot) well inside it. */
#define HEAP_MAX_LEN ((size_t)INT32_MAX - 1)
#define NS_PER_MS    UINT64_C(1000000)

struct loop {
    int       epfd;           /* epoll instance */
    uint64_t  now;            /* cached CLOCK_MONOTONIC, ns */
    uint64_t  iterations;     /* completed loop_run_once calls */
    bool      stop;           /* set by loop_stop, cleared when loop_run returns */
    bool      in_iteration;   /* loop_run_once is not re-entrant */

    /* Timers: a binary min-heap ordered by (deadline, seq). heap[0] is
     * unused so that slot i has children 2i, 2i+1 and heap_idx == i. */
    loop_timer **heap;
    size_t       heap_len;    /* armed timers, in heap[1..heap_len] */
    size_t       heap_cap;    /* usable slots (array holds heap_cap + 1) */
    uint32_t     timer_seq;   /* next arming sequence number, wraps */

    /* Async: one eventfd shared by every loop_async of this loop. */
    int          efd;
    loop_io      async_io;
    loop_async  *asyncs;      /* registered asyncs, newest first */
    loop_async  *async_next;  /* delivery walk cursor; NULL outside a walk */

    /* Signals: a signalfd created on first loop_signal_add. */
    int          sfd;         /* -1 until then */
    loop_io      signal_io;
    sigset_t     sigmask;     /* signals with at least one registration */
    sigset_t     preblocked;  /* of those, ones the thread had blocked itself */
    loop_signal *signals;     /* registrations, newest first */
    loop_signal *signal_next; /* delivery walk cursor */

    /* Deferred: FIFO; defer_tail points at the last next pointer. */
    loop_deferred  *defer_head;
    loop_deferred **defer_tail;

    struct epoll_event events[LOOP_BATCH];
};

static uint64_t clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- I/O ------------------------------------------------------------- */

static int epoll_op(loop *l, int op, loop_io *io, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = io };
    return epoll_ctl(l->epfd, op, io->fd, &ev) < 0 ? -errno : 0;
}

int loop_io_add(loop *l, loop_io *io, int fd, uint32_t events, loop_io_cb cb)
{
    io->fd = fd;
    io->events = events;
    io->cb = cb;
    int rc = epoll_op(l, EPOLL_CTL_ADD, io, events);
    if (rc < 0)
        io->fd = -1;
    return rc;
}

int loop_io_mod(loop *l, loop_io *io, uint32_t events)
{
    if (io->fd < 0)
        return -ENOENT;
    int rc = epoll_op(l, EPOLL_CTL_MOD, io, events);
    if (rc == 0)
        io->events = events;
    return rc;
}

/* Marking fd = -1 is what makes dispatch drop an event already fetched for
 * io; it happens even if epoll_ctl fails (e.g. fd was closed first, which
 * already removed it from the epoll set). */
int loop_io_del(loop *l, loop_io *io)
{
    if (io->fd < 0)
        return -ENOENT;
    int rc = epoll_op(l, EPOLL_CTL_DEL, io, 0);
    io->fd = -1;
    io->events = 0;
    return rc;
}

/* Phase 4. Events are masked by the io's current interest so a loop_io_mod
 * made earlier in the batch is honoured; errors are always delivered. */
static void dispatch_io(loop *l, int n)
{
    for (int i = 0; i < n; i++) {
        loop_io *io = l->events[i].data.ptr;
        if (io->fd < 0)
            continue;
        uint32_t ev = l->events[i].events & (io->events | LOOP_ERROR);
        if (ev)
            io->cb(io, ev);
    }
}

/* ---- timer heap ------------------------------------------------------ */

/* Equal deadlines fire in arming order. seq wraps: the comparison is exact
 * for timers armed fewer than 2^31 arms apart, and only ties depend on it. */
static bool timer_before(const loop_timer *a, const loop_timer *b)
{
    if (a->deadline != b->deadline)
        return a->deadline < b->deadline;
    return (int32_t)(a->seq - b->seq) < 0;
}

static void heap_place(loop *l, size_t i, loop_timer *t)
{
    l->heap[i] = t;
    t->heap_idx = (uint32_t)i;
}

static void sift_up(loop *l, size_t i)
{
    loop_timer *t = l->heap[i];
    while (i > 1 && timer_before(t, l->heap[i / 2])) {
        heap_place(l, i, l->heap[i / 2]);
        i /= 2;
    }
    heap_place(l, i, t);
}

static void sift_down(loop *l, size_t i)
{
    loop_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i;
        if (c > l->heap_len)
            break;
        if (c < l->heap_len && timer_before(l->heap[c + 1], l->heap[c]))
            c++;
        if (!timer_before(l->heap[c], t))
            break;
        heap_place(l, i, l->heap[c]);
        i = c;
    }
    heap_place(l, i, t);
}

/* Restores heap order after heap[i] changed its key either way. */
static void heap_fix(loop *l, size_t i)
{
    if (i > 1 && timer_before(l->heap[i], l->heap[i / 2]))
        sift_up(l, i);
    else
        sift_down(l, i);
}

static int heap_resize(loop *l, size_t cap)
{
    loop_timer **h = realloc(l->heap, (cap + 1) * sizeof *h);
    if (!h)
        return -ENOMEM;
    l->heap = h;
    l->heap_cap = cap;
    return 0;
}

static int heap_insert(loop *l, loop_timer *t)
{
    if (l->heap_len == l->heap_cap) {
        if (l->heap_len >= HEAP_MAX_LEN)
            return -ENOMEM;
        size_t cap = l->heap_cap ? 2 * l->heap_cap : HEAP_MIN_CAP;
        int rc = heap_resize(l, cap < HEAP_MAX_LEN ? cap : HEAP_MAX_LEN);
        if (rc < 0)
            return rc;
    }
    heap_place(l, ++l->heap_len, t);
    sift_up(l, l->heap_len);
    return 0;
}

/* The last slot fills the hole. Shrinking at a quarter full keeps the cost
 * amortised O(1) and gives back the memory of a burst (a failed shrink is
 * harmless). */
static void heap_remove(loop *l, loop_timer *t)
{
    size_t i = t->heap_idx;
    loop_timer *last = l->heap[l->heap_len--];
    t->heap_idx = 0;
    if (last != t) {
        heap_place(l, i, last);
        heap_fix(l, i);
    }
    if (l->heap_cap > HEAP_MIN_CAP && l->heap_len < l->heap_cap / 4)
        (void)heap_resize(l, l->heap_cap / 2);
}

/* ---- timers ---------------------------------------------------------- */

/* A deadline already past is clamped to now: "as soon as possible". The
 * timer phase relies on this (a timer armed during it is never earlier than
 * the phase's now, see run_timers). */
int loop_timer_start_at(loop *l, loop_timer *t, uint64_t deadline_ns, loop_timer_cb cb)
{
    t->deadline = deadline_ns > l->now ? deadline_ns : l->now;
    t->seq = l->timer_seq++;
    t->cb = cb;
    if (t->heap_idx) {
        heap_fix(l, t->heap_idx);
        return 0;
    }
    return heap_insert(l, t);
}

int loop_timer_start(loop *l, loop_timer *t, uint64_t timeout_ms, loop_timer_cb cb)
{
    uint64_t room = (UINT64_MAX - l->now) / NS_PER_MS;
    uint64_t deadline = timeout_ms > room ? UINT64_MAX : l->now + timeout_ms * NS_PER_MS;
    return loop_timer_start_at(l, t, deadline, cb);
}

void loop_timer_stop(loop *l, loop_timer *t)
{
    if (t->heap_idx)
        heap_remove(l, t);
}

size_t loop_timer_count(const loop *l) { return l->heap_len; }
uint64_t loop_now(const loop *l) { return l->now; }

uint64_t loop_update_time(loop *l)
{
    l->now = clock_now();
    return l->now;
}

/* Phase 5. Fires, in (deadline, seq) order, every timer due at phase start
 * that was armed before the phase began; seq numbers in [first,
 * l->timer_seq) were handed out during the phase. Since a timer armed in the
 * phase has deadline >= now and a larger seq than any pre-phase timer of the same deadline, the
 * first "armed during the phase" timer at the top of the heap means no
 * pre-phase timer is due: stopping there is exact. The timer leaves the heap
 * before its callback, which may re-arm or free it. */
static void run_timers(loop *l)
{
    const uint64_t now = l->now;  /* a callback may call loop_update_time */
    const uint32_t first = l->timer_seq;
    while (l->heap_len) {
        loop_timer *t = l->heap[1];
        if (t->deadline > now)
            break;
        if ((uint32_t)(t->seq - first) < (uint32_t)(l->timer_seq - first))
            break;
        heap_remove(l, t);
        t->cb(t);
    }
}

/* ---- async ----------------------------------------------------------- */

int loop_async_init(loop *l, loop_async *a, loop_async_cb cb)
{
    a->cb = cb;
    atomic_store(&a->pending, 0);
    a->owner = l;
    a->next = l->asyncs;
    l->asyncs = a;
    return 0;
}

void loop_async_close(loop *l, loop_async *a)
{
    for (loop_async **p = &l->asyncs; *p; p = &(*p)->next) {
        if (*p == a) {
            *p = a->next;
            break;
        }
    }
    if (l->async_next == a)
        l->async_next = a->next;
    a->next = NULL;
}

/* Only the sender that flips pending 0 -> 1 writes: the loop clears pending
 * (after draining the eventfd) before it calls cb, so any send that could be
 * missed by a running cb finds pending == 0 and wakes the loop again. EAGAIN
 * means the counter is saturated, i.e. a wake-up is already due. errno is
 * preserved for callers in signal handlers. */
void loop_async_send(loop_async *a)
{
    if (atomic_exchange(&a->pending, 1) != 0)
        return;
    int saved = errno;
    uint64_t one = 1;
    ssize_t r;
    do
        r = write(a->owner->efd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
    errno = saved;
}

/* Drains the eventfd first, then walks the asyncs: a send racing with the
 * walk either is seen by it or leaves the eventfd readable for next time. */
static void on_async(loop_io *io, uint32_t events)
{
    loop *l = container_of(io, loop, async_io);
    uint64_t count;
    /* EAGAIN is fine: a wake-up whose asyncs an earlier walk already ran. */
    (void)!read(l->efd, &count, sizeof count);
    for (loop_async *a = l->asyncs; a; a = l->async_next) {
        l->async_next = a->next;
        if (atomic_exchange(&a->pending, 0))
            a->cb(a);
    }
    l->async_next = NULL;
}

/* ---- signals --------------------------------------------------------- */

static bool signal_registered(const loop *l, int signo)
{
    for (const loop_signal *s = l->signals; s; s = s->next)
        if (s->signo == signo)
            return true;
    return false;
}

/* Creates the signalfd on first use, else replaces its mask. */
static int signalfd_update(loop *l, const sigset_t *mask)
{
    if (l->sfd >= 0)
        return signalfd(l->sfd, mask, 0) < 0 ? -errno : 0;
    int fd = signalfd(-1, mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = loop_io_add(l, &l->signal_io, fd, LOOP_READ, l->signal_io.cb);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    l->sfd = fd;
    return 0;
}

/* The first registration for signo blocks it (remembering whether the
 * thread had blocked it already, so del restores the caller's mask exactly)
 * and only then adds it to the signalfd: an instance arriving in between
 * stays pending and is read from the signalfd. */
static int signal_watch(loop *l, int signo)
{
    sigset_t one, old, mask = l->sigmask;
    sigemptyset(&one);
    sigaddset(&one, signo);
    int rc = -pthread_sigmask(SIG_BLOCK, &one, &old);
    if (rc < 0)
        return rc;
    sigaddset(&mask, signo);
    rc = signalfd_update(l, &mask);
    if (rc < 0) {
        if (!sigismember(&old, signo))
            pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        return rc;
    }
    l->sigmask = mask;
    if (sigismember(&old, signo))
        sigaddset(&l->preblocked, signo);
    return 0;
}

/* Undoes signal_watch. An instance still pending is then delivered with
 * the thread's disposition, as POSIX unblocking implies. */
static void signal_unwatch(loop *l, int signo)
{
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    sigdelset(&l->sigmask, signo);
    (void)signalfd_update(l, &l->sigmask);
    if (sigismember(&l->preblocked, signo))
        sigdelset(&l->preblocked, signo);
    else
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
}

int loop_signal_add(loop *l, loop_signal *s, int signo, loop_signal_cb cb)
{
    if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
        return -EINVAL;
    if (!signal_registered(l, signo)) {
        int rc = signal_watch(l, signo);
        if (rc < 0)
            return rc;
    }
    s->signo = signo;
    s->cb = cb;
    s->next = l->signals;
    l->signals = s;
    return 0;
}

void loop_signal_del(loop *l, loop_signal *s)
{
    bool found = false;
    for (loop_signal **p = &l->signals; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            found = true;
            break;
        }
    }
    if (!found)
        return;
    if (l->signal_next == s)
        l->signal_next = s->next;
    s->next = NULL;
    if (!signal_registered(l, s->signo))
        signal_unwatch(l, s->signo);
}

static void signal_deliver(loop *l, int signo)
{
    for (loop_signal *s = l->signals; s; s = l->signal_next) {
        l->signal_next = s->next;
        if (s->signo == signo)
            s->cb(s, signo);
    }
    l->signal_next = NULL;
}

/* Bounded: at most SIGNAL_READS reads; the fd is level-triggered, so any
 * remainder (a flood of queued real-time signals) waits one iteration. */
static void on_signal(loop_io *io, uint32_t events)
{
    loop *l = container_of(io, loop, signal_io);
    struct signalfd_siginfo si[16];
    for (int round = 0; round < SIGNAL_READS; round++) {
        ssize_t r = read(l->sfd, si, sizeof si);
        if (r <= 0)
            break;
        size_t n = (size_t)r / sizeof si[0];
        for (size_t i = 0; i < n; i++)
            signal_deliver(l, (int)si[i].ssi_signo);
        if (n < sizeof si / sizeof si[0])
            break;
    }
}

/* ---- deferred work --------------------------------------------------- */

void loop_defer(loop *l, loop_deferred *d, loop_deferred_cb cb)
{
    if (d->queued)
        return;
    d->cb = cb;
    d->next = NULL;
    d->queued = true;
    *l->defer_tail = d;
    l->defer_tail = &d->next;
}

/* Phase 6. Takes the list as it is now; items deferred by these callbacks
 * form the next iteration's list. next is read before cb, which may free d
 * or defer it again. */
static void run_deferred(loop *l)
{
    loop_deferred *d = l->defer_head;
    l->defer_head = NULL;
    l->defer_tail = &l->defer_head;
    while (d) {
        loop_deferred *next = d->next;
        d->queued = false;
        d->next = NULL;
        d->cb(d);
        d = next;
    }
}

/* ---- lifecycle and iteration ----------------------------------------- */

loop *loop_new(void)
{
    int err;
    loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->defer_tail = &l->defer_head;
    l->sfd = -1;
    l->signal_io = (loop_io){ .fd = -1, .cb = on_signal };
    sigemptyset(&l->sigmask);
    sigemptyset(&l->preblocked);
    l->now = clock_now();
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        err = errno;
        goto free_loop;
    }
    l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->efd < 0) {
        err = errno;
        goto close_epoll;
    }
    err = -loop_io_add(l, &l->async_io, l->efd, LOOP_READ, on_async);
    if (err)
        goto close_eventfd;
    return l;

close_eventfd:
    close(l->efd);
close_epoll:
    close(l->epfd);
free_loop:
    free(l);
    errno = err;
    return NULL;
}

/* Timers still armed are forgotten, not touched: their memory may be gone.
 * Signals still registered stay blocked in the calling thread. */
void loop_free(loop *l)
{
    if (!l)
        return;
    assert(!l->in_iteration);
    close(l->epfd);
    close(l->efd);
    if (l->sfd >= 0)
        close(l->sfd);
    free(l->heap);
    free(l);
}

/* Phase 1. Measured against a fresh clock (callbacks since the last poll
 * took time) and rounded up so a future deadline never yields a 0 ms poll,
 * which would spin until it is due. */
static int poll_timeout(const loop *l, int max_ms)
{
    if (l->defer_head)
        return 0;
    if (!l->heap_len)
        return max_ms;
    uint64_t deadline = l->heap[1]->deadline, now = clock_now();
    if (deadline <= now)
        return 0;
    uint64_t ms = (deadline - now + NS_PER_MS - 1) / NS_PER_MS;
    if (ms > INT_MAX)
        ms = INT_MAX;
    return max_ms >= 0 && (uint64_t)max_ms < ms ? max_ms : (int)ms;
}

/* The six phases of the file comment. A fatal epoll error returns before
 * dispatch. EINTR (a signal, or SIGSTOP/SIGCONT: the process may have been
 * stopped for long) polls once more without waiting, so input that arrived
 * meanwhile is dispatched before the timers that would judge it late; a
 * second EINTR just makes an iteration with no I/O. */
int loop_run_once(loop *l, int timeout_ms)
{
    assert(!l->in_iteration);
    int n = epoll_wait(l->epfd, l->events, LOOP_BATCH, poll_timeout(l, timeout_ms));
    if (n < 0 && errno == EINTR)
        n = epoll_wait(l->epfd, l->events, LOOP_BATCH, 0);
    int err = n < 0 ? errno : 0;
    l->now = clock_now();
    if (n < 0) {
        if (err != EINTR)
            return -err;
        n = 0;
    }
    l->in_iteration = true;
    dispatch_io(l, n);
    run_timers(l);
    run_deferred(l);
    l->in_iteration = false;
    l->iterations++;
    return n;
}

/* A stop requested before loop_run is honoured: it returns at once. */
int loop_run(loop *l)
{
    int rc = 0;
    while (!l->stop) {
        rc = loop_run_once(l, -1);
        if (rc < 0)
            break;
    }
    l->stop = false;
    return rc < 0 ? rc : 0;
}

void loop_stop(loop *l) { l->stop = true; }
uint64_t loop_iterations(const loop *l) { return l->iterations; }
