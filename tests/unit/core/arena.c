/* Unit tests for src/core/arena.c */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "core/arena.c"

static void test_alignment_and_distinct(void **state)
{
    arena a = { 0 };
    char *prev = NULL;
    for (int i = 1; i < 200; i++) {
        char *p = arena_alloc(&a, (size_t)i);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xab, (size_t)i);   /* ASan checks the bounds */
        assert_ptr_not_equal(p, prev);
        prev = p;
    }
    arena_free(&a);
}

static void test_big_allocation_keeps_head(void **state)
{
    arena a = { 0 };
    char *small = arena_alloc(&a, 16);
    arena_block *head = a.head;
    char *big = arena_alloc(&a, 100000);
    assert_non_null(big);
    memset(big, 1, 100000);
    assert_ptr_equal(a.head, head);   /* big block went behind the head */
    char *small2 = arena_alloc(&a, 16);
    assert_ptr_equal(small2, small + 16);
    arena_free(&a);
}

static void test_reset_keeps_one_block(void **state)
{
    arena a = { 0 };
    for (int i = 0; i < 100; i++)
        assert_non_null(arena_alloc(&a, 1000));
    arena_reset(&a);
    assert_non_null(a.head);
    assert_null(a.head->next);
    assert_int_equal(a.head->size, ARENA_BLOCK);
    assert_int_equal(a.used, 0);
    void *p = arena_alloc(&a, 10);
    assert_ptr_equal(p, a.head->data);   /* reuses the kept block */
    arena_free(&a);
    assert_null(a.head);
}

static void test_strndup_and_absurd(void **state)
{
    arena a = { 0 };
    char *s = arena_strndup(&a, "hello world", 5);
    assert_string_equal(s, "hello");
    assert_null(arena_alloc(&a, SIZE_MAX));
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment_and_distinct),
        cmocka_unit_test(test_big_allocation_keeps_head),
        cmocka_unit_test(test_reset_keeps_one_block),
        cmocka_unit_test(test_strndup_and_absurd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
