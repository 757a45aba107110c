/* Unit tests for src/http/http_response.c */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>
#include <time.h>

#include "http/http_response.h"

static const char *date = "Wed, 17 Apr 2013 12:00:00 GMT";

static void test_plain_head(void **state)
{
    buf b = { 0 };
    http_head h = { .status = 200, .version_minor = 1, .keep_alive = true,
                    .content_type = "text/plain", .content_length = 13, .date = date };
    assert_int_equal(http_head_write(&b, &h), 0);
    const char *want = "HTTP/1.1 200 OK\r\nServer: myriad\r\nDate: Wed, 17 Apr 2013 12:00:00 GMT\r\n"
                       "Content-Type: text/plain\r\nContent-Length: 13\r\n\r\n";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    buf_free(&b);
}

static void test_close_chunked_extra(void **state)
{
    buf b = { 0 };
    http_head h = { .status = 404, .version_minor = 1, .keep_alive = false, .chunked = true,
                    .date = date, .extra = "X-A: 1\r\n", .extra_len = 8 };
    assert_int_equal(http_head_write(&b, &h), 0);
    const char *want = "HTTP/1.1 404 Not Found\r\nServer: myriad\r\nDate: Wed, 17 Apr 2013 12:00:00 GMT\r\n"
                       "Transfer-Encoding: chunked\r\nConnection: close\r\nX-A: 1\r\n\r\n";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    buf_free(&b);
}

static void test_http10_keepalive_and_nolength(void **state)
{
    buf b = { 0 };
    http_head h = { .status = 204, .version_minor = 0, .keep_alive = true, .no_length = true,
                    .date = date };
    assert_int_equal(http_head_write(&b, &h), 0);
    b.data[b.len] = 0;
    assert_non_null(strstr(b.data, "Connection: keep-alive\r\n"));
    assert_null(strstr(b.data, "Content-Length"));
    assert_non_null(strstr(b.data, "HTTP/1.1 204 No Content\r\n"));
    buf_free(&b);
}

static void test_reasons(void **state)
{
    assert_string_equal(http_status_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_status_reason(505), "HTTP Version Not Supported");
    assert_string_equal(http_status_reason(299), "Unknown");
}

static void test_date_cached_and_refreshed(void **state)
{
    http_date d = { 0 };
    const char *a = http_date_get(&d, 1000);
    assert_int_equal(strlen(a), 29);
    assert_memory_equal(a + 25, " GMT", 4);
    char first[32];
    strcpy(first, a);
    /* within the same second: the same text, not re-rendered */
    strcpy(d.text, "sentinel");
    assert_string_equal(http_date_get(&d, 1001), "sentinel");
    /* after the second ends: fresh */
    const char *b = http_date_get(&d, d.next_ns);
    assert_int_equal(strlen(b), 29);
    struct tm tm;
    assert_non_null(strptime(b, "%a, %d %b %Y %H:%M:%S GMT", &tm));
}

static void test_field_valid(void **state)
{
    assert_true(http_field_valid("X-Ok", "a b\tc"));
    assert_true(http_field_valid("Cache-Control", ""));
    assert_false(http_field_valid("", "x"));
    assert_false(http_field_valid("Bad Name", "x"));
    assert_false(http_field_valid("X", "a\r\nInjected: 1"));
    assert_false(http_field_valid("X", " lead"));
    assert_false(http_field_valid("X", "trail "));
    assert_false(http_field_valid("X:", "v"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_head),
        cmocka_unit_test(test_close_chunked_extra),
        cmocka_unit_test(test_http10_keepalive_and_nolength),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_date_cached_and_refreshed),
        cmocka_unit_test(test_field_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
