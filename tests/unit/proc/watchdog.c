/* Unit tests for src/proc/watchdog.c: a loop held by a callback is
 * reported with the note left by watchdog_enter and a backtrace of the loop
 * thread; a stall outside any handler says so; reports are rate-limited
 * but every stall is counted; an idle loop is never reported. The log goes
 * to a temporary file (log_set_fd) that the tests read back. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "proc/lag.h"
#include "proc/watchdog.h"

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

static void run_for(loop *l, uint64_t ms)
{
    uint64_t until = now_ns() + ms * 1000000u;
    while (now_ns() < until)
        assert_true(loop_run_once(l, 5) >= 0);
}

typedef struct fixture {
    loop     *l;
    lag      *m;
    watchdog *w;
    FILE     *log;
} fixture;

static int setup(void **state)
{
    alarm(60);
    fixture *f = calloc(1, sizeof(*f));
    f->log = tmpfile();
    assert_non_null(f->log);
    log_set_fd(fileno(f->log));
    f->l = loop_new();
    f->m = lag_new(f->l, 5, 0);
    f->w = watchdog_new(f->m, 60);
    assert_non_null(f->w);
    run_for(f->l, 30);   /* the loop runs: heartbeat on */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    watchdog_free(f->w);
    lag_free(f->m);
    loop_free(f->l);
    log_set_fd(2);
    fclose(f->log);
    free(f);
    alarm(0);
    return 0;
}

/* The whole log so far, NUL-terminated (caller frees). */
static char *log_text(fixture *f)
{
    fflush(f->log);
    long n = ftell(f->log);
    assert_true(n >= 0);
    char *s = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fileno(f->log), s, (size_t)n, 0), n);
    return s;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

typedef struct holder {
    loop_timer t;
    watchdog  *w;
    uint64_t   ms;
    bool       note;
} holder;

static void on_hold(loop_timer *t)
{
    holder *h = container_of(t, holder, t);
    if (h->note)
        watchdog_enter(h->w, "GET", 3, "/slow/handler", 13);
    spin_ms(h->ms);
    if (h->note)
        watchdog_leave(h->w);
}

static void hold(fixture *f, uint64_t ms, bool note)
{
    holder h = { .w = f->w, .ms = ms, .note = note };
    loop_timer_start(f->l, &h.t, 0, on_hold);
    assert_true(loop_run_once(f->l, 100) >= 0);
    assert_false(loop_timer_active(&h.t));
}

static void test_reports_handler_and_backtrace(void **state)
{
    fixture *f = *state;
    hold(f, 300, true);
    run_for(f->l, 50);
    assert_int_equal(watchdog_stalls(f->w), 1);
    char *log = log_text(f);
    assert_non_null(strstr(log, "stall: the event loop has not run for"));
    assert_non_null(strstr(log, "handling GET /slow/handler"));
    assert_non_null(strstr(log, "backtrace of the loop thread"));
    assert_true(count(log, "stall:   #") >= 3);
    free(log);
}

static void test_outside_handler_and_rate_limit(void **state)
{
    fixture *f = *state;
    hold(f, 250, false);
    run_for(f->l, 20);
    hold(f, 250, false);   /* within a second of the first report */
    run_for(f->l, 20);
    assert_int_equal(watchdog_stalls(f->w), 2);
    char *log = log_text(f);
    assert_int_equal(count(log, "has not run for"), 1);
    assert_non_null(strstr(log, "outside any request handler"));
    free(log);
    run_for(f->l, 1000);
    hold(f, 250, false);
    run_for(f->l, 20);
    log = log_text(f);
    assert_int_equal(count(log, "has not run for"), 2);
    assert_non_null(strstr(log, "(1 more since the last report)"));
    free(log);
}

static void test_idle_is_quiet(void **state)
{
    fixture *f = *state;
    run_for(f->l, 300);   /* polling with 5 ms timeouts: never late by 60 ms */
    usleep(10000);
    char *log = log_text(f);
    assert_int_equal(count(log, "has not run for"), (int)watchdog_stalls(f->w));
    free(log);
    assert_null(watchdog_new(f->m, 0));   /* --stall-warn 0: off */
    assert_int_equal(watchdog_stalls(NULL), 0);
    watchdog_enter(NULL, "GET", 3, "/", 1);   /* no-ops */
    watchdog_leave(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reports_handler_and_backtrace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outside_handler_and_rate_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_is_quiet, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
