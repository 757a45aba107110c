/* loop — one epoll event loop per thread.
 *
 * A loop multiplexes four kinds of event sources, each an object the caller
 * embeds in its own struct (container_of gets back to the owner), so the loop
 * never allocates per source except the timer heap's pointer array:
 *
 *   loop_io      a file descriptor's readiness (epoll, edge- or level-triggered)
 *   loop_timer   a one-shot deadline (binary min-heap, O(log n) start/stop)
 *   loop_async   a wake-up sent from any thread (one eventfd per loop)
 *   loop_signal  a POSIX signal delivered on the loop thread (signalfd)
 *
 * and runs deferred callbacks (loop_defer) at the end of each iteration, which
 * is where objects closed during dispatch are safely freed.
 *
 * One iteration reads as named phases: compute the poll timeout from the
 * earliest timer, poll, update the cached clock, dispatch I/O, run due timers,
 * run deferred work. Every phase is bounded so no callback can starve others.
 *
 * Threading: everything here is loop-thread-only except loop_async_send().
 */
#ifndef MYR_LOOP_H
#define MYR_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

#ifndef container_of
#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

typedef struct loop loop;

/* ---- I/O ------------------------------------------------------------- */

/* Event bits passed to loop_io_add/mod and to callbacks: the epoll ones. */
enum {
    LOOP_READ  = EPOLLIN,
    LOOP_WRITE = EPOLLOUT,
    LOOP_RDHUP = EPOLLRDHUP,  /* peer closed its write side */
    LOOP_ERROR = EPOLLERR | EPOLLHUP,
    LOOP_EDGE  = EPOLLET,     /* edge-triggered: callback must drain to EAGAIN */
};

typedef struct loop_io loop_io;
typedef void (*loop_io_cb)(loop_io *io, uint32_t events);

struct loop_io {
    int        fd;      /* -1 when not registered */
    uint32_t   events;  /* mask registered with epoll */
    loop_io_cb cb;
};

/* Registers fd. Returns 0 or -errno. The loop does not own fd. */
int loop_io_add(loop *l, loop_io *io, int fd, uint32_t events, loop_io_cb cb);
int loop_io_mod(loop *l, loop_io *io, uint32_t events);
/* Unregisters; an event already fetched for io in this iteration is dropped,
 * so io may be freed from a deferred callback (not before). */
int loop_io_del(loop *l, loop_io *io);

/* ---- timers ---------------------------------------------------------- */

typedef struct loop_timer loop_timer;
typedef void (*loop_timer_cb)(loop_timer *t);

/* Zero-initialised = inactive. */
struct loop_timer {
    uint64_t      deadline;  /* loop clock, nanoseconds */
    uint32_t      heap_idx;  /* 1-based slot in the heap; 0 = not armed */
    uint32_t      seq;       /* arming order (loop-private): FIFO among equal
                                deadlines, and bounds the timer phase */
    loop_timer_cb cb;
};

/* Arms (or re-arms) t to fire once, timeout_ms after the loop's cached now. */
int  loop_timer_start(loop *l, loop_timer *t, uint64_t timeout_ms, loop_timer_cb cb);
/* Same, with an absolute deadline in loop-clock nanoseconds. */
int  loop_timer_start_at(loop *l, loop_timer *t, uint64_t deadline_ns, loop_timer_cb cb);
void loop_timer_stop(loop *l, loop_timer *t);
static inline bool loop_timer_active(const loop_timer *t) { return t->heap_idx != 0; }

/* The cached monotonic clock (CLOCK_MONOTONIC, ns), updated once per
 * iteration after polling; loop_update_time() refreshes it on demand. */
uint64_t loop_now(const loop *l);
uint64_t loop_update_time(loop *l);
size_t   loop_timer_count(const loop *l);

/* ---- cross-thread wake-ups ------------------------------------------ */

typedef struct loop_async loop_async;
typedef void (*loop_async_cb)(loop_async *a);

struct loop_async {
    loop_async_cb cb;
    _Atomic int   pending;  /* set by senders, cleared by the loop before cb */
    loop_async   *next;     /* the loop's list of asyncs */
    loop         *owner;
};

/* Loop thread only. */
int  loop_async_init(loop *l, loop_async *a, loop_async_cb cb);
void loop_async_close(loop *l, loop_async *a);
/* Any thread, async-signal-safe. Sends made before the callback starts are
 * coalesced into one call; a send during the callback causes another. */
void loop_async_send(loop_async *a);

/* ---- signals ------------------------------------------------------------ */

typedef struct loop_signal loop_signal;
typedef void (*loop_signal_cb)(loop_signal *s, int signo);

struct loop_signal {
    int            signo;
    loop_signal_cb cb;
    loop_signal   *next;
};

/* Blocks signo for the calling thread (call before starting other threads so
 * they inherit the mask) and delivers it through the loop's signalfd. */
int  loop_signal_add(loop *l, loop_signal *s, int signo, loop_signal_cb cb);
void loop_signal_del(loop *l, loop_signal *s);

/* ---- deferred work ------------------------------------------------------ */

typedef struct loop_deferred loop_deferred;
typedef void (*loop_deferred_cb)(loop_deferred *d);

struct loop_deferred {
    loop_deferred   *next;
    loop_deferred_cb cb;
    bool             queued;
};

/* Runs cb at the end of the current iteration (or the next one if called
 * from a deferred callback). Deferring a queued item again is a no-op. */
void loop_defer(loop *l, loop_deferred *d, loop_deferred_cb cb);

/* ---- lifecycle ------------------------------------------------------------ */

loop *loop_new(void);             /* NULL on failure, errno set */
void  loop_free(loop *l);         /* caller has closed its sources */
/* Runs iterations until loop_stop(). Returns 0, or -errno if epoll fails. */
int   loop_run(loop *l);
/* One iteration, polling at most timeout_ms (-1: until an event or timer).
 * Returns the number of I/O events fetched, or -errno if epoll fails. */
int   loop_run_once(loop *l, int timeout_ms);
void  loop_stop(loop *l);         /* loop thread; from others use an async */
uint64_t loop_iterations(const loop *l);

#endif
