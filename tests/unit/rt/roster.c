/* Unit tests for src/rt/roster.c: claiming, counting and freeing entries;
 * a dead slot's entries reset; a full table; a stale copy is refused;
 * workers in other processes claiming at once never share an entry.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rt/roster.c"

static rt_roster *make(shm_region **r, uint32_t entries)
{
    *r = shm_create(rt_roster_shm_size(entries));
    assert_non_null(*r);
    rt_roster *t = rt_roster_new(*r, entries);
    assert_non_null(t);
    return t;
}

static void test_claim_count_free(void **state)
{
    shm_region *r;
    rt_roster *t = make(&r, 10);
    assert_int_equal(rt_roster_capacity(t), 64);   /* at least 64, a power of two */
    int a = rt_roster_claim(t, 1, "chat:lobby", 10);
    int b = rt_roster_claim(t, 2, "chat:lobby", 10);   /* another worker, same topic */
    assert_true(a >= 0 && b >= 0 && a != b);
    rt_roster_set(t, (uint32_t)a, 3);
    rt_roster_set(t, (uint32_t)b, 4);
    rt_roster_item it;
    assert_true(rt_roster_read(t, (uint32_t)a, &it));
    assert_int_equal(it.slot, 1);
    assert_int_equal(it.count, 3);
    assert_int_equal(it.len, 10);
    assert_memory_equal(it.name, "chat:lobby", 10);
    uint32_t used = 0;
    for (uint32_t i = 0; i < rt_roster_capacity(t); i++)
        used += rt_roster_read(t, i, &it);
    assert_int_equal(used, 2);
    rt_roster_free(t, (uint32_t)a);
    assert_false(rt_roster_read(t, (uint32_t)a, &it));
    assert_true(rt_roster_read(t, (uint32_t)b, &it));
    shm_destroy(r);
}

static void test_limits_and_full_table(void **state)
{
    shm_region *r;
    rt_roster *t = make(&r, 64);
    char longname[RT_ROSTER_NAME_MAX + 1];
    memset(longname, 'x', sizeof(longname));
    assert_int_equal(rt_roster_claim(t, 0, "", 0), -EINVAL);
    assert_int_equal(rt_roster_claim(t, 0, longname, sizeof(longname)), -EINVAL);
    int idx = rt_roster_claim(t, 0, longname, RT_ROSTER_NAME_MAX);
    assert_true(idx >= 0);
    rt_roster_item it;
    assert_true(rt_roster_read(t, (uint32_t)idx, &it));
    assert_int_equal(it.len, RT_ROSTER_NAME_MAX);
    for (int i = 1; i < 64; i++) {
        char name[16];
        int n = snprintf(name, sizeof(name), "t%d", i);
        assert_true(rt_roster_claim(t, 0, name, (size_t)n) >= 0);
    }
    assert_int_equal(rt_roster_claim(t, 0, "one more", 8), -ENOSPC);
    rt_roster_free(t, (uint32_t)idx);
    assert_int_equal(rt_roster_claim(t, 0, "one more", 8), idx);   /* the freed one */
    shm_destroy(r);
}

static void test_reset_frees_one_slot(void **state)
{
    shm_region *r;
    rt_roster *t = make(&r, 64);
    int a = rt_roster_claim(t, 5, "x", 1), b = rt_roster_claim(t, 5, "y", 1);
    int c = rt_roster_claim(t, 6, "x", 1);
    rt_roster_reset(t, 5);
    rt_roster_item it;
    assert_false(rt_roster_read(t, (uint32_t)a, &it));
    assert_false(rt_roster_read(t, (uint32_t)b, &it));
    assert_true(rt_roster_read(t, (uint32_t)c, &it));
    assert_int_equal(it.slot, 6);
    shm_destroy(r);
}

/* A copy taken while the entry changed hands is refused: simulated by
 * re-claiming between the state load and the check. */
static void test_generation_changes_on_reuse(void **state)
{
    shm_region *r;
    rt_roster *t = make(&r, 64);
    int a = rt_roster_claim(t, 1, "old", 3);
    uint32_t st1 = atomic_load(&t->e[a].state);
    rt_roster_free(t, (uint32_t)a);
    int b = rt_roster_claim(t, 1, "old", 3);   /* same start: same entry */
    assert_int_equal(a, b);
    assert_int_not_equal(atomic_load(&t->e[b].state), st1);
    shm_destroy(r);
}

/* Four processes claim 100 topics each at once: no entry is taken twice. */
static void test_concurrent_claims(void **state)
{
    shm_region *r;
    rt_roster *t = make(&r, 1024);
    enum { PROCS = 4, EACH = 100 };
    pid_t pids[PROCS];
    for (uint32_t p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            for (int i = 0; i < EACH; i++) {
                char name[16];
                int n = snprintf(name, sizeof(name), "topic%d", i % 10);   /* shared names */
                int idx = rt_roster_claim(t, p, name, (size_t)n);
                if (idx < 0)
                    _exit(1);
                rt_roster_set(t, (uint32_t)idx, (uint64_t)i + 1);
            }
            _exit(0);
        }
    }
    for (uint32_t p = 0; p < PROCS; p++) {
        int st;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    uint32_t per_slot[PROCS] = { 0 };
    for (uint32_t i = 0; i < rt_roster_capacity(t); i++) {
        rt_roster_item it;
        if (rt_roster_read(t, i, &it)) {
            assert_true(it.slot < PROCS);
            per_slot[it.slot]++;
        }
    }
    for (uint32_t p = 0; p < PROCS; p++)
        assert_int_equal(per_slot[p], EACH);   /* each claim got its own entry */
    shm_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claim_count_free),
        cmocka_unit_test(test_limits_and_full_table),
        cmocka_unit_test(test_reset_frees_one_slot),
        cmocka_unit_test(test_generation_changes_on_reuse),
        cmocka_unit_test(test_concurrent_claims),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
