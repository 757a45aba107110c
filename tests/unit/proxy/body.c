/* Unit tests for src/proxy/body.c: bodies taken from a buffer and forwarded
 * in the framing promised to the other side. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "proxy/body.h"

static void fill(buf *x, const char *s)
{
    x->len = 0;
    assert_int_equal(buf_append(x, s, strlen(s)), 0);
}

static void test_length_and_tail(void **state)
{
    buf in = { 0 }, out = { 0 };
    fill(&in, "HEADhelloNEXT");
    body b;
    body_init(&b, BODY_LENGTH, 5, 4);
    assert_false(b.done);
    assert_int_equal(body_feed(&b, &in, UINT64_MAX), 0);
    assert_true(b.done);
    assert_int_equal(b.end, 9);   /* the rest is the next message */
    bool oom = false;
    assert_true(body_pump(&b, &in, &out, 0, FRAME_LENGTH, &oom));
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, "hello", 5);
    buf_free(&in);
    buf_free(&out);
}

static void test_length_in_pieces(void **state)
{
    buf in = { 0 }, out = { 0 };
    body b;
    body_init(&b, BODY_LENGTH, 6, 0);
    fill(&in, "abc");
    body_feed(&b, &in, UINT64_MAX);
    bool oom = false;
    assert_false(body_pump(&b, &in, &out, 0, FRAME_LENGTH, &oom));
    assert_int_equal(buf_append(&in, "defXY", 5), 0);
    body_feed(&b, &in, UINT64_MAX);
    assert_true(body_pump(&b, &in, &out, 0, FRAME_LENGTH, &oom));
    assert_int_equal(out.len, 6);
    assert_memory_equal(out.data, "abcdef", 6);
    assert_int_equal(in.len - b.end, 2);
    buf_free(&in);
    buf_free(&out);
}

/* Chunked in, decoded in place, chunked out again: the bytes on the wire
 * are canonical whatever the sender's extensions, trailers or chunk sizes. */
static void test_chunked_reframed(void **state)
{
    buf in = { 0 }, out = { 0 };
    fill(&in, "3;ext=\"x\"\r\nabc\r\n0004\r\ndefg\r\n0\r\nTrailer: t\r\n\r\nNEXT");
    body b;
    body_init(&b, BODY_CHUNKED, 0, 0);
    assert_int_equal(body_feed(&b, &in, UINT64_MAX), 0);
    assert_true(b.done);
    assert_int_equal(b.end, 7);
    assert_int_equal(in.len, 11);   /* decoded in place; the tail follows */
    assert_memory_equal(in.data, "abcdefgNEXT", 11);
    bool oom = false;
    assert_true(body_pump(&b, &in, &out, 0, FRAME_CHUNKED, &oom));
    assert_int_equal(buf_append(&out, "", 1), 0);
    assert_string_equal(out.data, "7\r\nabcdefg\r\n0\r\n\r\n");
    buf_free(&in);
    buf_free(&out);
}

static void test_chunked_to_close_and_errors(void **state)
{
    buf in = { 0 }, out = { 0 };
    fill(&in, "5\r\nhel");
    body b;
    body_init(&b, BODY_CHUNKED, 0, 0);
    body_feed(&b, &in, UINT64_MAX);
    bool oom = false;
    assert_false(body_pump(&b, &in, &out, 0, FRAME_CLOSE, &oom));
    assert_int_equal(buf_append(&in, "lo\r\n0\r\n\r\n", 9), 0);
    body_feed(&b, &in, UINT64_MAX);
    assert_true(body_pump(&b, &in, &out, 0, FRAME_CLOSE, &oom));
    assert_int_equal(out.len, 5);   /* raw bytes, no chunk framing */
    assert_memory_equal(out.data, "hello", 5);
    /* a bad size line; a body over max */
    fill(&in, "zz\r\n");
    body_init(&b, BODY_CHUNKED, 0, 0);
    assert_int_equal(body_feed(&b, &in, UINT64_MAX), -400);
    fill(&in, "10\r\n");
    body_init(&b, BODY_CHUNKED, 0, 0);
    assert_int_equal(body_feed(&b, &in, 8), -413);
    buf_free(&in);
    buf_free(&out);
}

static void test_eof_body_and_backpressure(void **state)
{
    buf in = { 0 }, out = { 0 };
    char *big = malloc(3 * OUT_HIGH);
    memset(big, 'x', 3 * OUT_HIGH);
    assert_int_equal(buf_append(&in, big, 3 * OUT_HIGH), 0);
    body b;
    body_init(&b, BODY_EOF, 0, 0);
    body_feed(&b, &in, UINT64_MAX);
    bool oom = false;
    /* output stops near its high mark: bounded memory */
    assert_false(body_pump(&b, &in, &out, 0, FRAME_CHUNKED, &oom));
    assert_true(out.len < OUT_HIGH + BODY_WINDOW + 32);
    size_t sent = out.len;   /* the other side drained it */
    assert_false(body_pump(&b, &in, &out, sent, FRAME_CHUNKED, &oom));
    b.done = true;           /* the sender closed */
    while (!body_pump(&b, &in, &out, out.len, FRAME_CHUNKED, &oom))
        assert_false(oom);
    assert_memory_equal(out.data + out.len - 5, "0\r\n\r\n", 5);
    free(big);
    buf_free(&in);
    buf_free(&out);
}

static void test_none(void **state)
{
    buf in = { 0 }, out = { 0 };
    body b;
    body_init(&b, BODY_NONE, 0, 0);
    assert_true(b.done);
    bool oom = false;
    assert_true(body_pump(&b, &in, &out, 0, FRAME_CHUNKED, &oom));
    assert_int_equal(out.len, 0);   /* announced-only framing: no last chunk */
    body_init(&b, BODY_LENGTH, 0, 0);
    assert_true(b.done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_length_and_tail),
        cmocka_unit_test(test_length_in_pieces),
        cmocka_unit_test(test_chunked_reframed),
        cmocka_unit_test(test_chunked_to_close_and_errors),
        cmocka_unit_test(test_eof_body_and_backpressure),
        cmocka_unit_test(test_none),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
