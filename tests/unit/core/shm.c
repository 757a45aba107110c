/* Unit tests for src/core/shm.c: the region's bump allocator (alignment,
 * zeroing, exhaustion), the worker table (claim order, pid, release and
 * reuse, the high-water mark, state transitions) and what makes it shared:
 * a forked child's writes are seen by the parent, and a reader never sees
 * a half-rewritten identity. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/shm.h"

static void test_region_alloc(void **state)
{
    shm_region *r = shm_create(1000);
    assert_non_null(r);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    assert_int_equal(shm_size(r) % page, 0);
    assert_true(shm_size(r) >= 1000);
    size_t used0 = shm_used(r);
    char *a = shm_alloc(r, 1);
    char *b = shm_alloc(r, 100);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal((uintptr_t)a % SHM_ALIGN, 0);
    assert_int_equal((uintptr_t)b % SHM_ALIGN, 0);
    assert_true(b >= a + SHM_ALIGN);   /* no overlap: one line at least */
    for (int i = 0; i < 100; i++)
        assert_int_equal(b[i], 0);
    assert_int_equal(shm_used(r), used0 + SHM_ALIGN + 128);
    /* the rest of the mapping, then nothing more */
    size_t left = shm_size(r) - shm_used(r);
    assert_non_null(shm_alloc(r, left));
    assert_null(shm_alloc(r, 1));
    shm_destroy(r);
}

static void test_region_too_big(void **state)
{
    assert_null(shm_create(SIZE_MAX - 10));
}

static shm_workers *new_table(shm_region **r, uint32_t rows)
{
    *r = shm_create(sizeof(shm_workers) + rows * sizeof(shm_worker));
    assert_non_null(*r);
    shm_workers *t = shm_workers_new(*r, rows);
    assert_non_null(t);
    return t;
}

static void test_table_too_small(void **state)
{
    shm_region *r = shm_create(4096);
    assert_non_null(r);
    assert_null(shm_workers_new(r, 1000));
    assert_non_null(shm_workers_new(r, 10));
    shm_destroy(r);
}

static void test_claim_release(void **state)
{
    shm_region *r;
    shm_workers *t = new_table(&r, 3);
    assert_int_equal(shm_workers_high(t), 0);
    shm_worker *a = shm_worker_claim(t, 1, 0);
    shm_worker *b = shm_worker_claim(t, 1, 1);
    assert_ptr_equal(a, &t->slot[0]);
    assert_ptr_equal(b, &t->slot[1]);
    assert_int_equal(shm_workers_high(t), 2);
    shm_worker_set_pid(a, 100);
    shm_worker_set_pid(b, 101);

    shm_worker_info info;
    assert_true(shm_worker_read(t, 1, &info));
    assert_int_equal(info.pid, 101);
    assert_int_equal(info.generation, 1);
    assert_int_equal(info.index, 1);
    assert_int_equal(info.state, SHM_WORKER_STARTING);
    assert_true(info.started_ms > 1600000000000LL);
    assert_false(shm_worker_read(t, 2, &info));    /* never used */
    assert_false(shm_worker_read(t, 99, &info));   /* out of range */

    /* a released row is free, then reused first, zeroed */
    shm_worker_publish(a, 5, 6, 7);
    shm_worker_release(t, a);
    assert_false(shm_worker_read(t, 0, &info));
    shm_worker *c = shm_worker_claim(t, 2, 0);
    assert_ptr_equal(c, a);
    assert_true(shm_worker_read(t, 0, &info));
    assert_int_equal(info.pid, 0);
    assert_int_equal(info.generation, 2);
    assert_int_equal(info.requests, 0);
    assert_int_equal(info.accepted, 0);
    assert_int_equal(shm_workers_high(t), 2);
    /* full */
    assert_non_null(shm_worker_claim(t, 2, 1));
    assert_null(shm_worker_claim(t, 2, 2));
    assert_int_equal(shm_workers_high(t), 3);
    shm_destroy(r);
}

static void test_states(void **state)
{
    shm_region *r;
    shm_workers *t = new_table(&r, 2);
    shm_worker *w = shm_worker_claim(t, 1, 0);
    assert_true(shm_worker_set_serving(w));
    assert_false(shm_worker_set_serving(w));   /* only from STARTING */
    shm_worker_set_draining(w);
    assert_int_equal(atomic_load(&w->state), SHM_WORKER_DRAINING);
    /* told to drain before it was ready: it must not become SERVING */
    shm_worker *v = shm_worker_claim(t, 1, 1);
    shm_worker_set_draining(v);
    assert_false(shm_worker_set_serving(v));
    assert_int_equal(atomic_load(&v->state), SHM_WORKER_DRAINING);
    shm_destroy(r);
}

/* The point of the module: what a child writes, the parent reads. */
static void test_shared_across_fork(void **state)
{
    shm_region *r;
    shm_workers *t = new_table(&r, 4);
    shm_worker *w = shm_worker_claim(t, 3, 2);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        shm_worker_set_serving(w);
        shm_worker_publish(w, 1234, 56, 7);
        _exit(0);
    }
    shm_worker_set_pid(w, pid);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    shm_worker_info info;
    assert_true(shm_worker_read(t, 0, &info));
    assert_int_equal(info.state, SHM_WORKER_SERVING);
    assert_int_equal(info.pid, pid);
    assert_int_equal(info.generation, 3);
    assert_int_equal(info.index, 2);
    assert_int_equal(info.requests, 1234);
    assert_int_equal(info.accepted, 56);
    assert_int_equal(info.connections, 7);
    shm_destroy(r);
}

/* A reader in another process while the supervisor keeps reusing a row:
 * every successful read sees an identity written as one (pid == index +
 * 1000 * generation, as the writer keeps it, or 0 between claim and pid). */
static void test_reader_never_sees_half_identity(void **state)
{
    shm_region *r;
    shm_workers *t = new_table(&r, 1);
    shm_worker *w = shm_worker_claim(t, 1, 1);
    shm_worker_set_pid(w, 1001);
    _Atomic int *stop = shm_alloc(r, sizeof(*stop));
    assert_non_null(stop);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        long reads = 0, bad = 0;
        bool last;
        do {   /* at least once after the writer is done */
            last = atomic_load(stop);
            shm_worker_info info;
            if (shm_worker_read(t, 0, &info)) {
                reads++;
                /* pid 0: claimed, not forked yet */
                bad += info.pid && info.pid != (pid_t)(info.index + 1000 * info.generation);
            }
        } while (!last);
        _exit(bad ? 1 : reads ? 0 : 2);
    }
    for (uint32_t g = 2; g < 20000; g++) {
        shm_worker_release(t, w);
        w = shm_worker_claim(t, g, g % 7);
        shm_worker_set_pid(w, (pid_t)(g % 7 + 1000 * g));
    }
    atomic_store(stop, 1);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    shm_destroy(r);
}

int main(void)
{
    alarm(60);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_region_alloc),
        cmocka_unit_test(test_region_too_big),
        cmocka_unit_test(test_table_too_small),
        cmocka_unit_test(test_claim_release),
        cmocka_unit_test(test_states),
        cmocka_unit_test(test_shared_across_fork),
        cmocka_unit_test(test_reader_never_sees_half_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
