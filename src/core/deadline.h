/* deadline — a timeout that moves often and fires rarely: one loop timer,
 * re-armed lazily.
 *
 * A connection renews its timeout on every read or write. Re-arming a heap
 * timer each time would cost a heap operation per request; instead `at`
 * moves freely, the timer is re-armed only when the new deadline is EARLIER
 * than the armed one, and a timer that fires before `at` re-arms itself to
 * it (deadline_expired). A busy connection thus costs about one heap
 * operation per timeout period, not one per request.
 *
 * Used by the HTTP connection (http/http_conn.c) and the balancer's client
 * session (proxy/session.c); the owner embeds a deadline, keeps its own
 * "what is being waited for" next to it, and passes an on-timer callback
 * that finds the owner with container_of(t, owner, field.timer).
 *
 * An all-zero deadline is a valid unset one. Invariant: while at != 0 the
 * timer is armed at or before at (so the expiry is never missed).
 * Loop thread only.
 */
#ifndef MYR_DEADLINE_H
#define MYR_DEADLINE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/loop.h"

typedef struct deadline {
    loop_timer timer;   /* armed at or before `at` while a deadline is set */
    uint64_t   at;      /* loop-clock ns at which the wait times out; 0: none */
} deadline;

/* Sets the deadline to timeout_ms after the loop's cached now. Arms the
 * timer (with cb) only if it is not armed or would fire later than that. */
void deadline_set(loop *l, deadline *d, uint64_t timeout_ms, loop_timer_cb cb);

/* No deadline: a timer still armed fires and finds nothing due. */
static inline void deadline_clear(deadline *d)
{
    d->at = 0;
}

/* For the timer callback: true if the deadline has passed (it is then
 * cleared, so it fires once). Otherwise false, and the timer is re-armed to
 * the current deadline when one is set (the lazy re-arm). */
bool deadline_expired(loop *l, deadline *d);

/* Clears the deadline and disarms the timer (the owner is going away). */
void deadline_stop(loop *l, deadline *d);

#endif
