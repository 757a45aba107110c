/* Unit tests for src/http/request.c: the accessors that do work of their
 * own (query-string decoding, params, headers, rebasing). The connection
 * paths are covered end to end in tests/e2e. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "http/request.c"

static myr_req *req_with_query(const char *q)
{
    myr_req *r = calloc(1, sizeof(*r));
    r->h.query = q;
    r->h.query_len = q ? (uint32_t)strlen(q) : 0;
    return r;
}

static void req_drop(myr_req *r)
{
    arena_free(&r->arena);
    free(r);
}

static void test_query_param_decoding(void **state)
{
    myr_req *r = req_with_query("a=1&name=a%20b%2Bc&plus=x+y&empty=&flag&bad=%zz%4&last=%41");
    myr_str v = myr_query_param(r, "name");
    assert_int_equal(v.len, 5);
    assert_memory_equal(v.ptr, "a b+c", 5);
    v = myr_query_param(r, "plus");
    assert_memory_equal(v.ptr, "x y", 3);
    v = myr_query_param(r, "empty");
    assert_non_null(v.ptr);
    assert_int_equal(v.len, 0);
    v = myr_query_param(r, "flag");
    assert_non_null(v.ptr);
    assert_int_equal(v.len, 0);
    v = myr_query_param(r, "bad");   /* bad escapes stay literal */
    assert_int_equal(v.len, 5);
    assert_memory_equal(v.ptr, "%zz%4", 5);
    v = myr_query_param(r, "last");
    assert_memory_equal(v.ptr, "A", 1);
    assert_null(myr_query_param(r, "missing").ptr);
    assert_null(myr_query_param(r, "nam").ptr);   /* no prefix match */
    req_drop(r);
}

static void test_query_absent(void **state)
{
    myr_req *r = req_with_query(NULL);
    assert_null(myr_query_param(r, "a").ptr);
    assert_null(myr_query(r).ptr);
    req_drop(r);
}

static void test_params_and_headers(void **state)
{
    myr_req *r = req_with_query(NULL);
    r->match.nparams = 2;
    r->match.params[0] = (router_param){ "id", 2, "42", 2 };
    r->match.params[1] = (router_param){ "rest", 4, "a/b", 3 };
    assert_memory_equal(myr_param(r, "id").ptr, "42", 2);
    assert_int_equal(myr_param(r, "rest").len, 3);
    assert_null(myr_param(r, "i").ptr);
    http_header hs[2] = { { "Host", "example", 4, 7 }, { "X-Thing", "v", 7, 1 } };
    r->h.headers = hs;
    r->h.num_headers = 2;
    assert_memory_equal(myr_header(r, "x-thing").ptr, "v", 1);
    assert_null(myr_header(r, "X-Other").ptr);
    req_drop(r);
}

static void test_rebase_moves_every_pointer(void **state)
{
    char a[64] = "GET /p?q HTTP/1.1\r\nHost: h\r\n\r\n";
    char b[64];
    memcpy(b, a, sizeof(a));
    myr_req *r = req_with_query(a + 7);
    http_header hs[1] = { { a + 19, a + 25, 4, 1 } };
    r->h.headers = hs;
    r->h.num_headers = 1;
    r->h.method = a;
    r->h.path = a + 4;
    r->h.target = a + 4;
    r->base = a;
    r->body = NULL;   /* NULL pointers stay NULL */
    req_rebase(r, a, b);
    assert_ptr_equal(r->h.method, b);
    assert_ptr_equal(r->h.path, b + 4);
    assert_ptr_equal(r->h.query, b + 7);
    assert_ptr_equal(r->base, b);
    assert_null(r->body);
    assert_null(r->h.host);
    assert_ptr_equal(hs[0].name, b + 19);
    assert_ptr_equal(hs[0].value, b + 25);
    req_drop(r);
}

static void test_set_header_validation(void **state)
{
    myr_req *r = req_with_query(NULL);
    assert_int_equal(myr_set_header(r, "X-Ok", "fine"), 0);
    assert_int_equal(myr_set_header(r, "Bad Name", "x"), -EINVAL);
    assert_int_equal(myr_set_header(r, "X", "a\r\nInjected: 1"), -EINVAL);
    assert_int_equal(myr_set_header(r, "Content-Length", "5"), -EINVAL);
    assert_int_equal(myr_set_header(r, "connection", "close"), -EINVAL);
    assert_int_equal(r->resp_headers.len, strlen("X-Ok: fine\r\n"));
    assert_memory_equal(r->resp_headers.data, "X-Ok: fine\r\n", r->resp_headers.len);
    buf_free(&r->resp_headers);
    req_drop(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_param_decoding),
        cmocka_unit_test(test_query_absent),
        cmocka_unit_test(test_params_and_headers),
        cmocka_unit_test(test_rebase_moves_every_pointer),
        cmocka_unit_test(test_set_header_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
