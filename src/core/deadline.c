/* deadline — see deadline.h for the lazy re-arm and its invariant. */
#include "core/deadline.h"

#define NS_PER_MS 1000000ull

void deadline_set(loop *l, deadline *d, uint64_t timeout_ms, loop_timer_cb cb)
{
    d->at = loop_now(l) + timeout_ms * NS_PER_MS;
    if (!loop_timer_active(&d->timer) || d->timer.deadline > d->at)
        loop_timer_start_at(l, &d->timer, d->at, cb);
}

bool deadline_expired(loop *l, deadline *d)
{
    if (d->at == 0)
        return false;
    if (loop_now(l) < d->at) {   /* moved since the timer was armed */
        loop_timer_start_at(l, &d->timer, d->at, d->timer.cb);
        return false;
    }
    d->at = 0;
    return true;
}

void deadline_stop(loop *l, deadline *d)
{
    d->at = 0;
    loop_timer_stop(l, &d->timer);
}
