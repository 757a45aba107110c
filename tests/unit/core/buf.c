/* Unit tests for src/core/buf.c */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/buf.h"

static void test_zero_is_empty(void **state)
{
    buf b = { 0 };
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_append(&b, "", 0), 0);
    assert_null(b.data);
    buf_free(&b);
}

static void test_append_grows(void **state)
{
    buf b = { 0 };
    for (int i = 0; i < 10000; i++)
        assert_int_equal(buf_append(&b, "abc", 3), 0);
    assert_int_equal(b.len, 30000);
    assert_true(b.cap >= b.len);
    assert_memory_equal(b.data + 29997, "abc", 3);
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
}

static void test_consume(void **state)
{
    buf b = { 0 };
    buf_append_str(&b, "hello world");
    buf_consume(&b, 6);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "world", 5);
    buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_reserve_overflow(void **state)
{
    buf b = { 0 };
    buf_append_str(&b, "x");
    assert_int_equal(buf_reserve(&b, SIZE_MAX), -12 /* -ENOMEM */);
    assert_int_equal(b.len, 1);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_is_empty),
        cmocka_unit_test(test_append_grows),
        cmocka_unit_test(test_consume),
        cmocka_unit_test(test_reserve_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
