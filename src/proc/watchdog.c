/* watchdog — see watchdog.h.
 *
 * Who touches what:
 *   note, note_len          loop thread (enter/leave), and the signal
 *                           handler, which runs on that same thread — so
 *                           only compiler ordering matters: note_len is an
 *                           atomic set to 0 before the copy and to the new
 *                           length after it, and a handler that interrupts
 *                           the copy sees "no note"
 *   frames, nframes, snap   the handler writes, then posts `captured`; the
 *                           watchdog thread reads after waiting on it
 *   stop                    under mu (the watchdog thread sleeps on cv)
 *   last_report_ns, ...     watchdog thread only
 */
#include "proc/watchdog.h"

#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

#define NS_PER_MS        1000000u
#define REPORT_GAP_NS    (1000u * NS_PER_MS)   /* at most one report per second */
#define CAPTURE_WAIT_MS  1000                  /* for the loop thread's handler */

struct watchdog {
    const lag      *lag;           /* heartbeat source (lag_due_ns) */
    uint64_t        stall_ns;      /* report when the loop is this late */
    uint64_t        period_ns;     /* watchdog wake-up period */
    pthread_t       loop_thread;   /* signalled for the backtrace */
    pthread_t       thread;        /* the watchdog */

    pthread_mutex_t mu;            /* guards stop */
    pthread_cond_t  cv;            /* CLOCK_MONOTONIC; signalled on stop */
    bool            stop;

    char            note[WATCHDOG_NOTE_MAX];   /* "METHOD /path" being handled */
    _Atomic size_t  note_len;                  /* 0: none */

    sem_t           captured;      /* posted by the signal handler */
    void           *frames[WATCHDOG_FRAMES];
    int             nframes;
    char            snap[WATCHDOG_NOTE_MAX];   /* note at the time of the signal */
    size_t          snap_len;

    _Atomic uint64_t stalls;       /* stalls seen */
    uint64_t        last_report_ns;/* watchdog thread: rate limit */
    uint64_t        unreported;    /* stalls skipped by the rate limit */
};

static uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timespec ts_after(uint64_t ns)
{
    uint64_t t = clock_ns() + ns;
    return (struct timespec){ .tv_sec = (time_t)(t / 1000000000u),
                              .tv_nsec = (long)(t % 1000000000u) };
}

/* ---- the loop thread's side ------------------------------------------------------ */

void watchdog_enter(watchdog *w, const char *a, size_t alen, const char *b, size_t blen)
{
    if (!w)
        return;
    atomic_store_explicit(&w->note_len, 0, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    size_t n = alen < WATCHDOG_NOTE_MAX - 1 ? alen : WATCHDOG_NOTE_MAX - 1;
    memcpy(w->note, a, n);
    w->note[n++] = ' ';
    size_t m = blen < WATCHDOG_NOTE_MAX - n ? blen : WATCHDOG_NOTE_MAX - n;
    memcpy(w->note + n, b, m);
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&w->note_len, n + m, memory_order_relaxed);
}

void watchdog_leave(watchdog *w)
{
    if (w)
        atomic_store_explicit(&w->note_len, 0, memory_order_relaxed);
}

/* Runs on the loop thread, interrupting whatever it is doing. Only
 * async-signal-safe work: backtrace (preloaded), memcpy, sem_post. The
 * si_code check ignores the signal if anything but pthread_sigqueue sent it. */
static void on_signal(int signo, siginfo_t *si, void *ucontext)
{
    if (si->si_code != SI_QUEUE || !si->si_value.sival_ptr)
        return;
    watchdog *w = si->si_value.sival_ptr;
    int saved = errno;
    w->nframes = backtrace(w->frames, WATCHDOG_FRAMES);
    size_t n = atomic_load_explicit(&w->note_len, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    memcpy(w->snap, w->note, n);
    w->snap_len = n;
    sem_post(&w->captured);
    errno = saved;
}

/* Process-wide, once: the handler is the same for every watchdog (the
 * watchdog rides in the signal's value). */
static void install_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(WATCHDOG_SIGNAL, &sa, NULL) < 0)
        log_warn("watchdog: sigaction: %s; stalls will be reported without a backtrace",
                 strerror(errno));
}

/* ---- the watchdog thread ---------------------------------------------------------- */

/* Asks the loop thread for its backtrace; false if it did not answer. A
 * late answer to an earlier request is drained first. */
static bool capture(watchdog *w)
{
    while (sem_trywait(&w->captured) == 0)
        ;
    union sigval v = { .sival_ptr = w };
    if (pthread_sigqueue(w->loop_thread, WATCHDOG_SIGNAL, v) != 0)
        return false;
    struct timespec until = ts_after((uint64_t)CAPTURE_WAIT_MS * NS_PER_MS);
    while (sem_clockwait(&w->captured, CLOCK_MONOTONIC, &until) < 0)
        if (errno != EINTR)
            return false;
    return true;
}

static void log_frames(watchdog *w)
{
    char **names = backtrace_symbols(w->frames, w->nframes);
    /* frame 0 is the signal handler itself */
    for (int i = 1; i < w->nframes; i++) {
        if (names)
            log_warn("stall:   #%d %s", i - 1, names[i]);
        else
            log_warn("stall:   #%d [%p]", i - 1, w->frames[i]);
    }
    free(names);
}

static void report(watchdog *w, uint64_t late_ns)
{
    atomic_fetch_add(&w->stalls, 1);
    uint64_t now = clock_ns();
    if (w->last_report_ns && now - w->last_report_ns < REPORT_GAP_NS) {
        w->unreported++;
        return;
    }
    w->last_report_ns = now;
    bool got = capture(w);
    char where[WATCHDOG_NOTE_MAX + 64], skipped[64] = "";
    if (!got)
        snprintf(where, sizeof(where), "no backtrace: the loop thread did not answer");
    else if (w->snap_len)
        snprintf(where, sizeof(where), "handling %.*s", (int)w->snap_len, w->snap);
    else
        snprintf(where, sizeof(where), "outside any request handler");
    if (w->unreported)
        snprintf(skipped, sizeof(skipped), " (%llu more since the last report)",
                 (unsigned long long)w->unreported);
    log_warn("stall: the event loop has not run for %llu ms (--stall-warn %llu ms), %s%s",
             (unsigned long long)(late_ns / NS_PER_MS),
             (unsigned long long)(w->stall_ns / NS_PER_MS), where, skipped);
    w->unreported = 0;
    if (got) {
        log_warn("stall: backtrace of the loop thread (resolve with addr2line -f -e BINARY "
                 "+OFFSET):");
        log_frames(w);
    }
}

static void *watch(void *arg)
{
    watchdog *w = arg;
    uint64_t reported_due = 0;   /* the heartbeat of the stall last reported */
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec until = ts_after(w->period_ns);
        pthread_cond_timedwait(&w->cv, &w->mu, &until);
        if (w->stop)
            break;
        pthread_mutex_unlock(&w->mu);
        uint64_t due = lag_due_ns(w->lag), now = clock_ns();
        if (due && due != reported_due && now > due + w->stall_ns) {
            reported_due = due;
            report(w, now - due);
        }
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static int start_thread(watchdog *w)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&w->thread, NULL, watch, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err == 0)
        pthread_setname_np(w->thread, "myriad-watch");
    return -err;
}

watchdog *watchdog_new(const lag *m, uint64_t stall_ms)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (!stall_ms)
        return NULL;
    watchdog *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->lag = m;
    w->stall_ns = stall_ms * NS_PER_MS;
    w->period_ns = w->stall_ns / 2;
    if (w->period_ns < 5 * NS_PER_MS)
        w->period_ns = 5 * NS_PER_MS;
    if (w->period_ns > 1000 * NS_PER_MS)
        w->period_ns = 1000 * NS_PER_MS;
    w->loop_thread = pthread_self();
    void *probe[2];
    backtrace(probe, 2);   /* loads the unwinder now, not in the handler */
    pthread_once(&once, install_handler);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, WATCHDOG_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->mu, NULL);
    sem_init(&w->captured, 0, 0);
    int rc = start_thread(w);
    if (rc < 0) {
        log_warn("watchdog: cannot start its thread: %s", strerror(-rc));
        sem_destroy(&w->captured);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        return NULL;
    }
    return w;
}

void watchdog_free(watchdog *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    /* a signal sent just before is handled on this (the loop) thread while
     * it waits here, so w is still alive when the handler runs */
    pthread_join(w->thread, NULL);
    sem_destroy(&w->captured);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

uint64_t watchdog_stalls(const watchdog *w)
{
    return w ? atomic_load(&((watchdog *)w)->stalls) : 0;
}
