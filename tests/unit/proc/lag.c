/* Unit tests for src/proc/lag.c: the log-linear histogram (bucket bounds,
 * percentiles against known distributions) and the monitor on a real loop
 * (samples taken, a blocked loop shows up as lag and as a stall, the
 * overload window rises and falls, the watchdog heartbeat). Timing
 * assertions are one-sided and generous: a loaded machine only makes the
 * loop later, and "later" is asserted with a lower bound only where the
 * test itself blocked the loop. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"
#include "proc/lag.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void spin_ms(uint64_t ms)
{
    uint64_t until = now_ns() + ms * 1000000u;
    while (now_ns() < until)
        ;
}

/* Runs loop iterations for about ms milliseconds, and at least three (an
 * iteration that blocked still leaves its late sample to the next). */
static void run_for(loop *l, uint64_t ms)
{
    uint64_t until = now_ns() + ms * 1000000u;
    for (int i = 0; i < 3 || now_ns() < until; i++)
        assert_true(loop_run_once(l, 5) >= 0);
}

/* ---- histogram -------------------------------------------------------------- */

static void test_bucket_bounds(void **state)
{
    assert_int_equal(lag_bucket_of(0), 0);
    assert_int_equal(lag_bucket_of(15), 15);
    assert_int_equal(lag_bucket_of(16), 16);
    assert_int_equal(lag_bucket_of(31), 31);
    assert_int_equal(lag_bucket_of(32), 32);
    assert_int_equal(lag_bucket_of(33), 32);   /* width 2 from 32 */
    assert_int_equal(lag_bucket_of(64), 48);
    assert_int_equal(lag_bucket_of(((uint64_t)1 << 40) - 1), LAG_BUCKETS - 1);
    assert_int_equal(lag_bucket_of((uint64_t)1 << 40), LAG_BUCKETS - 1);
    assert_int_equal(lag_bucket_of(UINT64_MAX), LAG_BUCKETS - 1);

    /* every value lies in its bucket, buckets are contiguous and ordered,
     * and no bucket is wider than 1/16 of its smallest value */
    for (unsigned i = 0; i + 1 < LAG_BUCKETS; i++) {
        assert_true(lag_bucket_low(i) <= lag_bucket_high(i));
        assert_int_equal(lag_bucket_high(i) + 1, lag_bucket_low(i + 1));
        if (i >= 16)
            assert_true((lag_bucket_high(i) - lag_bucket_low(i) + 1) * 16 <= lag_bucket_low(i));
        assert_int_equal(lag_bucket_of(lag_bucket_low(i)), i);
        assert_int_equal(lag_bucket_of(lag_bucket_high(i)), i);
    }
    for (uint64_t v = 1; v < ((uint64_t)1 << 40); v = v * 3 + 1) {
        unsigned b = lag_bucket_of(v);
        assert_true(lag_bucket_low(b) <= v && v <= lag_bucket_high(b));
    }
}

static void test_percentiles_uniform(void **state)
{
    lag_hist *h = calloc(1, sizeof(*h));
    for (uint64_t v = 1; v <= 1000; v++)
        lag_hist_record(h, v);
    assert_int_equal(h->count, 1000);
    assert_int_equal(h->min_us, 1);
    assert_int_equal(h->max_us, 1000);
    assert_int_equal(h->sum_us / h->count, 500);
    /* the true value, at most one bucket (6.25%) above it */
    struct { double pct; uint64_t want; } cases[] = {
        { 50, 500 }, { 90, 900 }, { 99, 990 }, { 99.9, 999 }, { 100, 1000 }, { 0.1, 1 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t got = lag_hist_percentile(h, cases[i].pct);
        assert_true(got >= cases[i].want);
        assert_true(got <= cases[i].want + cases[i].want / 16 + 1);
    }
    assert_int_equal(lag_hist_percentile(h, 100), 1000);   /* capped at max */
    free(h);
}

static void test_percentiles_skewed(void **state)
{
    lag_hist *h = calloc(1, sizeof(*h));
    for (int i = 0; i < 990; i++)
        lag_hist_record(h, 100);
    for (int i = 0; i < 10; i++)
        lag_hist_record(h, 50000);
    uint64_t p50 = lag_hist_percentile(h, 50), p99 = lag_hist_percentile(h, 99);
    assert_true(p50 >= 100 && p50 <= 106);
    assert_true(p99 >= 100 && p99 <= 106);                  /* rank 990 is still 100 */
    assert_int_equal(lag_hist_percentile(h, 99.9), 50000);  /* bucket capped at max */
    assert_int_equal(lag_hist_percentile(h, 100), 50000);
    free(h);
}

static void test_empty_and_zero(void **state)
{
    lag_hist *h = calloc(1, sizeof(*h));
    assert_int_equal(lag_hist_percentile(h, 50), 0);
    for (int i = 0; i < 10; i++)
        lag_hist_record(h, 0);
    assert_int_equal(lag_hist_percentile(h, 99), 0);
    assert_int_equal(h->min_us, 0);
    assert_int_equal(h->max_us, 0);
    lag_hist_record(h, (uint64_t)1 << 50);   /* clamped bucket, exact max */
    assert_int_equal(h->max_us, (uint64_t)1 << 50);
    assert_int_equal(lag_hist_percentile(h, 100), (uint64_t)1 << 50);
    free(h);
}

/* ---- the monitor ------------------------------------------------------------------ */

typedef struct blocker {
    loop_timer t;
    uint64_t   ms;
} blocker;

static void on_block(loop_timer *t)
{
    spin_ms(container_of(t, blocker, t)->ms);
}

static void test_monitor(void **state)
{
    alarm(60);
    loop *l = loop_new();
    lag *m = lag_new(l, 5, 80);
    assert_non_null(m);
    assert_int_equal(lag_due_ns(m), 0);   /* no heartbeat before the loop runs */
    spin_ms(50);                          /* start-up work is not lag */
    run_for(l, 150);
    lag_stats st;
    lag_snapshot(m, &st);
    assert_true(st.count >= 5);           /* ~30 expected; a loaded machine gives fewer */
    if (st.max_us <= 80000)
        assert_int_equal(st.stalls, 0);   /* a busy machine may stall us by itself */
    uint64_t due = lag_due_ns(m);
    assert_true(due > 0 && due <= now_ns() + 5 * 1000000u);

    /* a callback that holds the loop 150 ms */
    blocker b = { .ms = 150 };
    loop_timer_start(l, &b.t, 0, on_block);
    run_for(l, 50);
    lag_snapshot(m, &st);
    assert_true(st.max_us >= 140000);     /* due within 5 ms of the block's start */
    assert_true(st.stalls >= 1);
    assert_true(st.p999_us >= 140000 || st.count > 1000);
    assert_true(st.mean_us > 0);

    lag_reset(m);
    lag_snapshot(m, &st);
    assert_int_equal(st.count, 0);
    assert_int_equal(st.max_us, 0);
    lag_free(m);
    loop_free(l);
    alarm(0);
}

/* The overload window: sustained lag raises its mean, an idle loop brings
 * it back down. */
static void test_window(void **state)
{
    alarm(60);
    loop *l = loop_new();
    lag *m = lag_new(l, 5, 0);
    blocker b = { .ms = 30 };
    uint64_t until = now_ns() + 1200 * 1000000u;
    while (now_ns() < until) {   /* every iteration holds the loop 30 ms */
        loop_timer_start(l, &b.t, 0, on_block);
        assert_true(loop_run_once(l, 5) >= 0);
    }
    assert_true(lag_window_us(m) >= 10000);
    run_for(l, 1200);            /* two idle windows */
    assert_true(lag_window_us(m) < 10000);
    lag_stats st;
    lag_snapshot(m, &st);
    assert_int_equal(st.window_mean_us, lag_window_us(m));
    assert_int_equal(st.stalls, 0);   /* stall threshold 0: never counted */
    lag_free(m);
    loop_free(l);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_bounds),
        cmocka_unit_test(test_percentiles_uniform),
        cmocka_unit_test(test_percentiles_skewed),
        cmocka_unit_test(test_empty_and_zero),
        cmocka_unit_test(test_monitor),
        cmocka_unit_test(test_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
