/* Unit tests for src/rt/topic.c: find or create, subscription order,
 * unlink from anywhere in a list, removal, and growth past many topics
 * with binary names.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt/topic.c"

static void test_get_and_find(void **state)
{
    rt_topics t = { 0 };
    assert_null(rt_topics_find(&t, "a", 1));
    bool created;
    rt_topic *a = rt_topics_get(&t, "chat:a", 6, &created);
    assert_non_null(a);
    assert_true(created);
    assert_int_equal(a->roster, -1);
    assert_ptr_equal(rt_topics_get(&t, "chat:a", 6, &created), a);
    assert_false(created);
    assert_ptr_equal(rt_topics_find(&t, "chat:a", 6), a);
    assert_null(rt_topics_find(&t, "chat:a", 5));      /* a prefix is another topic */
    assert_null(rt_topics_find(&t, "chat:b", 6));
    rt_topic *z = rt_topics_get(&t, "a\0b", 3, NULL);  /* any bytes */
    assert_ptr_equal(rt_topics_find(&t, "a\0b", 3), z);
    assert_null(rt_topics_find(&t, "a\0c", 3));
    assert_int_equal(t.count, 2);
    rt_topics_remove(&t, a);
    assert_null(rt_topics_find(&t, "chat:a", 6));
    assert_int_equal(t.count, 1);
    rt_topics_fini(&t);
    assert_int_equal(t.count, 0);
}

static void test_subscription_order_and_unlink(void **state)
{
    rt_topics t = { 0 };
    rt_topic *a = rt_topics_get(&t, "a", 1, NULL);
    rt_sub s[5] = { 0 };
    for (int i = 0; i < 5; i++) {
        s[i].owner = &s[i];
        rt_topic_link(&t, a, &s[i]);
    }
    assert_int_equal(a->nsubs, 5);
    assert_int_equal(t.nsubs, 5);
    rt_topic_unlink(&t, &s[0]);   /* head */
    rt_topic_unlink(&t, &s[2]);   /* middle */
    rt_topic_unlink(&t, &s[4]);   /* tail */
    const rt_sub *p = a->head;
    assert_ptr_equal(p, &s[1]);
    assert_ptr_equal(p->next, &s[3]);
    assert_null(p->next->next);
    assert_ptr_equal(a->tail, &s[3]);
    assert_ptr_equal(s[3].prev, &s[1]);
    rt_topic_link(&t, a, &s[0]);   /* relinked: at the end */
    assert_ptr_equal(a->tail, &s[0]);
    assert_int_equal(a->nsubs, 3);
    rt_topic_unlink(&t, &s[1]);
    rt_topic_unlink(&t, &s[3]);
    rt_topic_unlink(&t, &s[0]);
    assert_null(a->head);
    assert_null(a->tail);
    assert_int_equal(t.nsubs, 0);
    rt_topics_remove(&t, a);
    rt_topics_fini(&t);
}

static void test_many_topics(void **state)
{
    rt_topics t = { 0 };
    enum { N = 5000 };
    for (int i = 0; i < N; i++) {
        char name[32];
        int n = snprintf(name, sizeof(name), "room-%d", i);
        assert_non_null(rt_topics_get(&t, name, (size_t)n, NULL));
    }
    assert_int_equal(t.count, N);
    assert_true(t.nbuckets >= N);   /* it grew: chains stay short */
    for (int i = 0; i < N; i += 2) {
        char name[32];
        int n = snprintf(name, sizeof(name), "room-%d", i);
        rt_topic *p = rt_topics_find(&t, name, (size_t)n);
        assert_non_null(p);
        assert_int_equal(p->len, (uint32_t)n);
        rt_topics_remove(&t, p);
    }
    assert_int_equal(t.count, N / 2);
    assert_non_null(rt_topics_find(&t, "room-4999", 9));
    assert_null(rt_topics_find(&t, "room-4998", 9));
    rt_topics_fini(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_and_find),
        cmocka_unit_test(test_subscription_order_and_unlink),
        cmocka_unit_test(test_many_topics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
