/* Unit tests for src/core/deadline.c: the lazy re-arm (a later deadline never
 * touches the armed timer, an earlier one does, an early firing re-arms to
 * the current deadline) and the one-shot expiry. Most cases use the loop's
 * cached clock, which only moves when the loop runs, so they are exact; one
 * case runs a real loop to see the whole cycle end to end. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/deadline.h"

#define NS_PER_MS 1000000ull

struct owner {
    deadline dl;
    loop    *l;
    int      fired;     /* timer callbacks */
    int      expired;   /* ... that found the deadline passed */
    uint64_t now_at_expiry;
};

static void on_timer(loop_timer *t)
{
    struct owner *o = container_of(t, struct owner, dl.timer);
    o->fired++;
    if (deadline_expired(o->l, &o->dl)) {
        o->expired++;
        o->now_at_expiry = loop_now(o->l);
    }
}

static void test_zero_is_unset(void **state)
{
    loop *l = loop_new();
    deadline d = { 0 };
    assert_false(deadline_expired(l, &d));
    assert_false(loop_timer_active(&d.timer));   /* nothing to re-arm for */
    deadline_stop(l, &d);
    assert_int_equal(loop_timer_count(l), 0);
    loop_free(l);
}

static void test_later_is_lazy_earlier_rearms(void **state)
{
    loop *l = loop_new();
    struct owner o = { .l = l };
    uint64_t now = loop_now(l);

    deadline_set(l, &o.dl, 1000, on_timer);
    assert_true(loop_timer_active(&o.dl.timer));
    assert_int_equal(o.dl.at, now + 1000 * NS_PER_MS);
    assert_int_equal(o.dl.timer.deadline, o.dl.at);

    deadline_set(l, &o.dl, 2000, on_timer);   /* later: the timer stays put */
    assert_int_equal(o.dl.at, now + 2000 * NS_PER_MS);
    assert_int_equal(o.dl.timer.deadline, now + 1000 * NS_PER_MS);

    deadline_set(l, &o.dl, 500, on_timer);    /* earlier: re-armed */
    assert_int_equal(o.dl.timer.deadline, now + 500 * NS_PER_MS);
    assert_int_equal(loop_timer_count(l), 1);

    deadline_stop(l, &o.dl);
    assert_false(loop_timer_active(&o.dl.timer));
    assert_int_equal(o.dl.at, 0);
    loop_free(l);
}

static void test_early_fire_rearms_to_current(void **state)
{
    loop *l = loop_new();
    struct owner o = { .l = l };
    deadline_set(l, &o.dl, 1000, on_timer);
    loop_timer_stop(l, &o.dl.timer);   /* as if the loop had just fired it */
    assert_false(deadline_expired(l, &o.dl));
    assert_true(loop_timer_active(&o.dl.timer));
    assert_int_equal(o.dl.timer.deadline, o.dl.at);
    assert_ptr_equal(o.dl.timer.cb, on_timer);
    deadline_stop(l, &o.dl);
    loop_free(l);
}

static void test_expiry_is_one_shot(void **state)
{
    loop *l = loop_new();
    struct owner o = { .l = l };
    deadline_set(l, &o.dl, 0, on_timer);   /* due at the cached now */
    loop_timer_stop(l, &o.dl.timer);
    assert_true(deadline_expired(l, &o.dl));
    assert_int_equal(o.dl.at, 0);
    assert_false(deadline_expired(l, &o.dl));   /* cleared: fires once */
    assert_false(loop_timer_active(&o.dl.timer));
    loop_free(l);
}

static void test_clear_leaves_nothing_due(void **state)
{
    loop *l = loop_new();
    struct owner o = { .l = l };
    deadline_set(l, &o.dl, 1000, on_timer);
    deadline_clear(&o.dl);
    assert_true(loop_timer_active(&o.dl.timer));   /* lazily left armed ... */
    loop_timer_stop(l, &o.dl.timer);
    assert_false(deadline_expired(l, &o.dl));      /* ... and finds nothing due */
    assert_false(loop_timer_active(&o.dl.timer));
    loop_free(l);
}

/* The whole cycle on a running loop: a deadline moved later while armed
 * expires once, never before its final value. Bounded by a 5 s budget. */
static void test_running_loop(void **state)
{
    loop *l = loop_new();
    struct owner o = { .l = l };
    deadline_set(l, &o.dl, 10, on_timer);
    deadline_set(l, &o.dl, 30, on_timer);   /* the armed timer still says 10 ms */
    uint64_t want = o.dl.at;
    uint64_t give_up = loop_update_time(l) + 5000 * NS_PER_MS;
    while (o.expired == 0 && loop_update_time(l) < give_up)
        loop_run_once(l, 50);
    assert_int_equal(o.expired, 1);
    assert_true(o.fired >= 1 && o.fired <= 2);   /* at most one early firing */
    assert_true(o.now_at_expiry >= want);
    assert_false(loop_timer_active(&o.dl.timer));
    assert_int_equal(loop_timer_count(l), 0);
    loop_run_once(l, 0);
    assert_int_equal(o.expired, 1);
    loop_free(l);
}

int main(void)
{
    alarm(60);   /* a hang is a failure */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_is_unset),
        cmocka_unit_test(test_later_is_lazy_earlier_rearms),
        cmocka_unit_test(test_early_fire_rearms_to_current),
        cmocka_unit_test(test_expiry_is_one_shot),
        cmocka_unit_test(test_clear_leaves_nothing_due),
        cmocka_unit_test(test_running_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
