/* Unit tests for src/proxy/lb*.c: the balancing policies.
 *
 * Policies are driven through their const tables with real backend structs
 * whose load (active) and names the tests set, and a view of effective
 * weights as backend_pick would build it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/backend.h"
#include "proxy/lb.h"

#define MAXB 8

typedef struct fixture {
    backend  b[MAXB];
    backend *v[MAXB];
    uint32_t w[MAXB];
    uint32_t n;
    lb       p;
} fixture;

/* n backends named 10.0.0.i:80 with the given weights (configured). */
static void setup(fixture *f, const lb_ops *ops, const uint32_t *weights, uint32_t n)
{
    memset(f, 0, sizeof(*f));
    f->n = n;
    f->p.ops = ops;
    f->p.rng = 42;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(f->b[i].name, sizeof(f->b[i].name), "10.0.0.%u:80", i + 1);
        f->b[i].weight = weights[i];
        f->v[i] = &f->b[i];
        f->w[i] = weights[i] * LB_WEIGHT_SCALE;
    }
    lb_view view = { f->v, f->w, n };
    assert_int_equal(ops->build(&f->p, &view), 0);
}

static int pick_index(fixture *f, uint64_t key, backend *const *tried, uint32_t ntried)
{
    lb_view view = { f->v, f->w, f->n };
    lb_req req = { key, tried, ntried };
    backend *b = f->p.ops->pick(&f->p, &view, &req);
    return b ? (int)(b - f->b) : -1;
}

static void teardown(fixture *f)
{
    f->p.ops->free(&f->p);
}

/* ---- round-robin ---------------------------------------------------------------- */

static void test_rr_smooth_weights(void **state)
{
    fixture f;
    const uint32_t w[] = { 5, 1, 1 };
    setup(&f, &lb_rr_ops, w, 3);
    /* nginx's smooth sequence for 5,1,1: a a b a c a a */
    const int expect[] = { 0, 0, 1, 0, 2, 0, 0 };
    for (int i = 0; i < 7; i++)
        assert_int_equal(pick_index(&f, 0, NULL, 0), expect[i]);
    int count[3] = { 0 };
    for (int i = 0; i < 7000; i++)
        count[pick_index(&f, 0, NULL, 0)]++;
    assert_int_equal(count[0], 5000);
    assert_int_equal(count[1], 1000);
    assert_int_equal(count[2], 1000);
    teardown(&f);
}

static void test_rr_skips_unavailable_and_tried(void **state)
{
    fixture f;
    const uint32_t w[] = { 1, 1, 1 };
    setup(&f, &lb_rr_ops, w, 3);
    f.w[1] = 0;   /* down or draining */
    for (int i = 0; i < 10; i++)
        assert_int_not_equal(pick_index(&f, 0, NULL, 0), 1);
    backend *tried[] = { &f.b[0] };
    for (int i = 0; i < 10; i++)
        assert_int_equal(pick_index(&f, 0, tried, 1), 2);
    f.w[2] = 0;
    assert_int_equal(pick_index(&f, 0, tried, 1), -1);
    teardown(&f);
}

/* ---- least connections ------------------------------------------------------------ */

static void test_leastconn(void **state)
{
    fixture f;
    const uint32_t w[] = { 1, 1, 2 };
    setup(&f, &lb_leastconn_ops, w, 3);
    f.b[0].active = 3;
    f.b[1].active = 1;
    f.b[2].active = 3;   /* (3+1)/2 = 2 per unit: more than b1's 2/1? equal: ties allowed */
    for (int i = 0; i < 20; i++) {
        int k = pick_index(&f, 0, NULL, 0);
        assert_true(k == 1 || k == 2);
    }
    f.b[2].active = 4;   /* 5/2 > 2/1 */
    for (int i = 0; i < 20; i++)
        assert_int_equal(pick_index(&f, 0, NULL, 0), 1);
    /* equal loads: spread over all, not stuck on the first */
    f.b[0].active = f.b[1].active = 0;
    f.b[2].active = 1;   /* 2/2 = 1 = 1/1 */
    int count[3] = { 0 };
    for (int i = 0; i < 300; i++)
        count[pick_index(&f, 0, NULL, 0)]++;
    assert_true(count[0] > 50 && count[1] > 50 && count[2] > 50);
    backend *tried[] = { &f.b[0], &f.b[1] };
    assert_int_equal(pick_index(&f, 0, tried, 2), 2);
    teardown(&f);
}

/* ---- power of two choices --------------------------------------------------------- */

static void test_p2c_avoids_loaded(void **state)
{
    fixture f;
    const uint32_t w[] = { 1, 1, 1, 1 };
    setup(&f, &lb_p2c_ops, w, 4);
    f.b[3].active = 50;   /* a slow backend piles up requests */
    int count[4] = { 0 };
    for (int i = 0; i < 4000; i++)
        count[pick_index(&f, 0, NULL, 0)]++;
    /* b3 wins only when both draws are b3: never with distinct draws */
    assert_int_equal(count[3], 0);
    for (int i = 0; i < 3; i++)
        assert_true(count[i] > 1000);
    teardown(&f);
}

static void test_p2c_weights(void **state)
{
    fixture f;
    const uint32_t w[] = { 3, 1 };
    setup(&f, &lb_p2c_ops, w, 2);
    /* load is per unit of weight: (3+1)/3 < (1+1)/1, the heavier wins */
    f.b[0].active = 3;
    f.b[1].active = 1;
    for (int i = 0; i < 50; i++)
        assert_int_equal(pick_index(&f, 0, NULL, 0), 0);
    /* (9+1)/3 > (1+1)/1 */
    f.b[0].active = 9;
    for (int i = 0; i < 50; i++)
        assert_int_equal(pick_index(&f, 0, NULL, 0), 1);
    /* a simulated steady state: requests end at random; picks follow weights */
    f.b[0].active = f.b[1].active = 0;
    int count[2] = { 0 };
    for (int i = 0; i < 20000; i++) {
        int k = pick_index(&f, 0, NULL, 0);
        count[k]++;
        f.b[k].active++;
        if (f.b[0].active + f.b[1].active < 20)
            continue;   /* 20 requests in flight */
        uint64_t r = lb_rand(&f.p) % (f.b[0].active + f.b[1].active);
        if (r < f.b[0].active)
            f.b[0].active--;
        else
            f.b[1].active--;
    }
    assert_true(count[0] > 20000 * 65 / 100 && count[0] < 20000 * 85 / 100);
    f.w[0] = 0;
    assert_int_equal(pick_index(&f, 0, NULL, 0), 1);
    teardown(&f);
}

/* ---- consistent hashing --------------------------------------------------------------- */

#define KEYS 20000

static void map_keys(fixture *f, int *out)
{
    for (int k = 0; k < KEYS; k++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "/item/%d", k);
        out[k] = pick_index(f, lb_hash(key, (size_t)n), NULL, 0);
    }
}

static void test_chash_spread_and_stability(void **state)
{
    static int before[KEYS], after[KEYS];
    fixture f;
    const uint32_t w[] = { 1, 1, 1, 1 };
    setup(&f, &lb_chash_ops, w, 3);
    f.p.balance_factor = 0;
    map_keys(&f, before);
    int count[4] = { 0 };
    for (int k = 0; k < KEYS; k++)
        count[before[k]]++;
    for (int i = 0; i < 3; i++)   /* within 15% of a third */
        assert_true(count[i] > KEYS / 3 * 85 / 100 && count[i] < KEYS / 3 * 115 / 100);
    /* the same keys map the same way on every pick */
    map_keys(&f, after);
    assert_memory_equal(before, after, sizeof(before));

    /* add a fourth: only keys that move to it move, about a quarter */
    teardown(&f);
    setup(&f, &lb_chash_ops, w, 4);
    f.p.balance_factor = 0;
    map_keys(&f, after);
    int moved = 0;
    for (int k = 0; k < KEYS; k++) {
        if (after[k] != before[k]) {
            moved++;
            assert_int_equal(after[k], 3);
        }
    }
    assert_true(moved > KEYS * 18 / 100 && moved < KEYS * 32 / 100);

    /* a backend going down moves only its own keys */
    f.w[1] = 0;
    static int down[KEYS];
    map_keys(&f, down);
    for (int k = 0; k < KEYS; k++)
        if (after[k] != 1)
            assert_int_equal(down[k], after[k]);
        else
            assert_int_not_equal(down[k], 1);
    teardown(&f);
}

static void test_chash_bounded_load(void **state)
{
    fixture f;
    const uint32_t w[] = { 1, 1, 1 };
    setup(&f, &lb_chash_ops, w, 3);
    f.p.balance_factor = 125;
    uint64_t key = lb_hash("hot", 3);
    int home = pick_index(&f, key, NULL, 0);
    assert_true(home >= 0);
    /* the home backend is over 1.25 x the mean: the key spills to another */
    f.b[home].active = 10;
    f.b[(home + 1) % 3].active = 2;
    f.b[(home + 2) % 3].active = 2;
    int spill = pick_index(&f, key, NULL, 0);
    assert_int_not_equal(spill, home);
    /* unbounded: the key stays home whatever the load */
    f.p.balance_factor = 0;
    assert_int_equal(pick_index(&f, key, NULL, 0), home);
    /* bounded, with balanced loads: home */
    f.p.balance_factor = 125;
    f.b[home].active = 2;
    assert_int_equal(pick_index(&f, key, NULL, 0), home);
    /* tried: the next backend on the ring */
    backend *tried[] = { &f.b[home] };
    int next = pick_index(&f, key, tried, 1);
    assert_true(next >= 0 && next != home);
    teardown(&f);
}

static void test_hash_and_find(void **state)
{
    assert_int_equal(lb_hash("abc", 3), lb_hash("abc", 3));
    assert_int_not_equal(lb_hash("abc", 3), lb_hash("abd", 3));
    assert_ptr_equal(lb_find("rr"), &lb_rr_ops);
    assert_ptr_equal(lb_find("chash"), &lb_chash_ops);
    assert_ptr_equal(lb_find("leastconn"), &lb_leastconn_ops);
    assert_ptr_equal(lb_find("p2c"), &lb_p2c_ops);
    assert_null(lb_find("random"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rr_smooth_weights),
        cmocka_unit_test(test_rr_skips_unavailable_and_tried),
        cmocka_unit_test(test_leastconn),
        cmocka_unit_test(test_p2c_avoids_loaded),
        cmocka_unit_test(test_p2c_weights),
        cmocka_unit_test(test_chash_spread_and_stability),
        cmocka_unit_test(test_chash_bounded_load),
        cmocka_unit_test(test_hash_and_find),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
