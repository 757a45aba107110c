/* watchdog — tells the operator which handler blocked the loop, and where.
 *
 * A thread of its own wakes every stall/2 and reads the loop's heartbeat:
 * the time the lag monitor's next sample is due (lag_due_ns). When the clock
 * is more than `stall` past it, the loop has run nothing — no I/O, no timer —
 * for that long: some callback is hogging it. The watchdog then sends the
 * loop thread a signal (WATCHDOG_SIGNAL, with pthread_sigqueue); the handler
 * runs *on the loop thread, inside the culprit*, records backtrace(3) and
 * the note the loop left (method and path of the request being handled),
 * and posts a semaphore. The watchdog thread, not the handler, formats and
 * logs the report, so the handler does only async-signal-safe work
 * (backtrace is made so by calling it once at start-up, which loads
 * libgcc's unwinder before any signal can arrive).
 *
 * One report per stall (per heartbeat value), at most one per second; the
 * stall counter counts them all. Frames are printed as backtrace_symbols
 * gives them (binary(+offset)); resolve with `addr2line -f -e BINARY
 * +offset`, or link with -rdynamic to get names.
 *
 * Signals: the handler for WATCHDOG_SIGNAL is installed once per process
 * (sigaction with SA_RESTART, so interrupted system calls resume; a sleep
 * in the blocked handler is cut short). The watchdog thread blocks every
 * signal. A loop thread must not block WATCHDOG_SIGNAL.
 *
 * Threading: new/free/enter/leave on the loop thread that is watched.
 */
#ifndef MYR_PROC_WATCHDOG_H
#define MYR_PROC_WATCHDOG_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "proc/lag.h"

#define WATCHDOG_SIGNAL   (SIGRTMIN + 3)
#define WATCHDOG_NOTE_MAX 96    /* bytes of "METHOD /path" kept */
#define WATCHDOG_FRAMES   48    /* backtrace depth */

typedef struct watchdog watchdog;

/* Watches the loop whose lag monitor is m, from a new thread, reporting
 * stalls longer than stall_ms (> 0). Call on that loop's thread. NULL when
 * the thread or memory cannot be had. */
watchdog *watchdog_new(const lag *m, uint64_t stall_ms);
/* Stops and joins the thread. NULL is a no-op. */
void watchdog_free(watchdog *w);

/* The loop is about to run a handler for "a b" (e.g. method and path);
 * copied, truncated to WATCHDOG_NOTE_MAX. w may be NULL. */
void watchdog_enter(watchdog *w, const char *a, size_t alen, const char *b, size_t blen);
/* The handler returned. w may be NULL. */
void watchdog_leave(watchdog *w);

/* Stalls seen so far (any thread). */
uint64_t watchdog_stalls(const watchdog *w);

#endif
