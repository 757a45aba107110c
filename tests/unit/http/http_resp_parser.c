/* Unit tests for src/http/http_resp_parser.c: the strict response-head
 * parser the load balancer relays through.
 *
 * Every case goes through run_case(): parsed in one shot, as growing
 * prefixes with and without prev_len resumption, and split in two at every
 * byte; the verdict must be the same every way. Inputs live in exact-size
 * heap copies so AddressSanitizer catches a read past the caller's bytes,
 * and are compared afterwards to prove the parser never writes to them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_resp_parser.h"

#define MAXH 16
static const http_limits LIM = { .max_request_line = 256, .max_header_bytes = 2048,
                                 .max_headers = MAXH };

/* The copy the last accepted case points into; freed by the next case. */
static char *kept;

static ssize_t parse_keep(const char *raw, size_t len, size_t prev, bool head,
                         http_response *r, http_header *hs, bool keep)
{
    char *b = malloc(len ? len : 1);
    assert_non_null(b);
    memcpy(b, raw, len);
    *r = (http_response){ .headers = hs };
    ssize_t rc = http_parse_response(b, len, prev, r, &LIM, head);
    assert_memory_equal(b, raw, len);
    if (rc < -1)
        assert_non_null(r->error);
    if (keep) {
        free(kept);
        kept = b;
    } else {
        free(b);
    }
    return rc;
}


/* Parses raw[0..len) from an exact-size copy, resuming at prev; checks the
 * copy is untouched. */
static ssize_t parse_copy(const char *raw, size_t len, size_t prev, bool head,
                          http_response *r, http_header *hs)
{
    return parse_keep(raw, len, prev, head, r, hs, false);
}

/* The verdict on raw in one piece, checked against every prefix and every
 * two-piece split. */
static ssize_t run_case(const char *raw, bool head, http_response *out, http_header *hs)
{
    size_t n = strlen(raw);
    http_header tmp[MAXH];
    http_response r;
    ssize_t whole = parse_keep(raw, n, 0, head, out, hs, true);
    for (size_t cut = 0; cut < n; cut++) {
        ssize_t a = parse_copy(raw, cut, 0, head, &r, tmp);
        if (a == HTTP_AGAIN) {
            assert_int_equal(parse_copy(raw, n, cut, head, &r, tmp), whole);
        } else if (whole > 0 && a != whole) {
            fail_msg("prefix of %zu bytes gave %zd for a head accepted at %zd: %s",
                     cut, a, whole, raw);
        } else {
            assert_int_equal(a, whole);   /* a rejection is decided as early */
        }
    }
    return whole;
}

static void expect_reject(const char *raw)
{
    http_header hs[MAXH];
    http_response r;
    ssize_t rc = run_case(raw, false, &r, hs);
    if (rc != -502)
        fail_msg("expected -502, got %zd for %s", rc, raw);
}

/* ---- accepted heads ------------------------------------------------------------ */

static void test_content_length(void **state)
{
    http_header hs[MAXH];
    http_response r;
    const char *raw = "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 5\r\n\r\nhello";
    ssize_t rc = run_case(raw, false, &r, hs);
    assert_int_equal(rc, (ssize_t)strlen(raw) - 5);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.version_minor, 1);
    assert_int_equal(r.reason_len, 2);
    assert_memory_equal(r.reason, "OK", 2);
    assert_int_equal(r.content_length, 5);
    assert_true(r.keep_alive);
    assert_false(r.chunked || r.close_delimited || r.no_body);
    assert_int_equal(r.num_headers, 2);
    const http_header *h = http_resp_find_header(&r, "server", 6);
    assert_non_null(h);
    assert_int_equal(h->value_len, 1);
    assert_null(http_resp_find_header(&r, "date", 4));
}

static void test_chunked(void **state)
{
    http_header hs[MAXH];
    http_response r;
    assert_true(run_case("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n", false,
                         &r, hs) > 0);
    assert_true(r.chunked);
    assert_int_equal(r.content_length, -1);
    assert_true(r.keep_alive);
}

static void test_close_delimited(void **state)
{
    http_header hs[MAXH];
    http_response r;
    assert_true(run_case("HTTP/1.1 200 OK\r\n\r\n", false, &r, hs) > 0);
    assert_true(r.close_delimited);
    assert_false(r.keep_alive);   /* the body ends with the connection */
}

static void test_versions_and_connection(void **state)
{
    http_header hs[MAXH];
    http_response r;
    assert_true(run_case("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, &r, hs) > 0);
    assert_int_equal(r.version_minor, 0);
    assert_false(r.keep_alive);
    assert_true(run_case("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
                         false, &r, hs) > 0);
    assert_true(r.keep_alive);
    assert_true(run_case("HTTP/1.1 200 OK\r\nConnection: foo, close\r\nContent-Length: 0\r\n\r\n",
                         false, &r, hs) > 0);
    assert_false(r.keep_alive);
    assert_true(run_case("HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n", false, &r, hs) > 0);
    assert_int_equal(r.version_minor, 1);
}

static void test_no_body_statuses(void **state)
{
    http_header hs[MAXH];
    http_response r;
    assert_true(run_case("HTTP/1.1 204 No Content\r\n\r\n", false, &r, hs) > 0);
    assert_true(r.no_body);
    assert_true(r.keep_alive);
    assert_true(run_case("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false, &r,
                         hs) > 0);
    assert_int_equal(r.content_length, -1);
    assert_true(run_case("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", false,
                         &r, hs) > 0);
    assert_true(r.no_body);
    assert_int_equal(r.content_length, 100);   /* what a GET would have sent */
    assert_true(run_case("HTTP/1.1 100 Continue\r\n\r\n", false, &r, hs) > 0);
    assert_int_equal(r.status, 100);
    assert_true(r.no_body);
    assert_true(run_case("HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n", false,
                         &r, hs) > 0);
    assert_int_equal(r.status, 103);
}

static void test_head_request(void **state)
{
    http_header hs[MAXH];
    http_response r;
    assert_true(run_case("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", true, &r, hs) > 0);
    assert_true(r.no_body);
    assert_int_equal(r.content_length, 1000);
    assert_true(r.keep_alive);
    assert_true(run_case("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, &r,
                         hs) > 0);
    assert_true(r.no_body && !r.chunked);
}

static void test_reason_phrases(void **state)
{
    http_header hs[MAXH];
    http_response r;
    assert_true(run_case("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, &r, hs) > 0);
    assert_int_equal(r.reason_len, 0);
    assert_true(run_case("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", false, &r, hs) > 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(r.reason_len, 0);
    assert_true(run_case("HTTP/1.1 500 Internal\tServer \xe9rror\r\nContent-Length: 0\r\n\r\n",
                         false, &r, hs) > 0);
    assert_int_equal(r.reason_len, 21);
}

static void test_repeated_equal_lengths(void **state)
{
    http_header hs[MAXH];
    http_response r;
    assert_true(run_case("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
                         false, &r, hs) > 0);
    assert_int_equal(r.content_length, 5);
}

static void test_values_trimmed(void **state)
{
    http_header hs[MAXH];
    http_response r;
    assert_true(run_case("HTTP/1.1 200 OK\r\nX-A: \t a b \t\r\nX-B:\r\nContent-Length: 0\r\n\r\n",
                         false, &r, hs) > 0);
    assert_int_equal(hs[0].value_len, 3);
    assert_memory_equal(hs[0].value, "a b", 3);
    assert_int_equal(hs[1].value_len, 0);
}

/* ---- rejected heads: smuggling and malformed framing ------------------------------ */

static void test_reject_framing(void **state)
{
    expect_reject("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n");
    expect_reject("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    expect_reject("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n");
    expect_reject("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n");
    expect_reject("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
    expect_reject("HTTP/1.1 101 Switching\r\nContent-Length: 5\r\n\r\n");
}

static void test_reject_syntax(void **state)
{
    expect_reject("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n");        /* bare LF */
    expect_reject("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n");                 /* bare CR */
    expect_reject("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n");              /* obs-fold */
    expect_reject("HTTP/1.1 200 OK\r\n X: a\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n");      /* space before colon */
    expect_reject("HTTP/1.1 200 OK\r\n: a\r\n\r\n");                     /* empty name */
    expect_reject("HTTP/1.1 200 OK\r\nX(y): a\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nX: a\x01" "b\r\n\r\n");            /* CTL */
    expect_reject("HTTP/1.1 200 OK\r\nX: a\x7f\r\n\r\n");                /* DEL */
    expect_reject("HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n");
    expect_reject("HTTP/1.1 200 O\x01K\r\n\r\n");                        /* CTL in reason */
    expect_reject("\r\nHTTP/1.1 200 OK\r\n\r\n");                        /* leading empty line */
    expect_reject("FOO 200 OK\r\n\r\n");
    expect_reject("http/1.1 200 OK\r\n\r\n");
    expect_reject("HTTP/2.0 200 OK\r\n\r\n");
    expect_reject("HTTP/1.1 099 X\r\n\r\n");
    expect_reject("HTTP/1.1 600 X\r\n\r\n");
    expect_reject("HTTP/1.1 20 X\r\n\r\n");
    expect_reject("HTTP/1.1 2000 X\r\n\r\n");
    expect_reject("HTTP/1.1 200OK\r\n\r\n");
    expect_reject("HTTP/1.1  200 OK\r\n\r\n");
    expect_reject("HTTP/1.1 2x0 OK\r\n\r\n");
    expect_reject("HTTP/1.1\r\n\r\n");
    expect_reject("HTTP/1.1 200 OK\r\nConnection: a b\r\n\r\n");
}

static void test_limits(void **state)
{
    http_header hs[MAXH];
    http_response r;
    char big[4096];
    /* too many fields */
    int n = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i <= MAXH; i++)
        n += snprintf(big + n, sizeof(big) - (size_t)n, "X-%d: v\r\n", i);
    snprintf(big + n, sizeof(big) - (size_t)n, "\r\n");
    assert_int_equal(run_case(big, false, &r, hs), -502);
    /* exactly the field limit is fine */
    n = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < MAXH; i++)
        n += snprintf(big + n, sizeof(big) - (size_t)n, "X-%d: v\r\n", i);
    snprintf(big + n, sizeof(big) - (size_t)n, "\r\n");
    assert_true(run_case(big, false, &r, hs) > 0);
    /* a head over max_header_bytes */
    n = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nX: ");
    memset(big + n, 'a', 2100);
    snprintf(big + n + 2100, sizeof(big) - (size_t)n - 2100, "\r\n\r\n");
    assert_int_equal(run_case(big, false, &r, hs), -502);
    /* a status line over max_request_line */
    n = snprintf(big, sizeof(big), "HTTP/1.1 200 ");
    memset(big + n, 'a', 300);
    snprintf(big + n + 300, sizeof(big) - (size_t)n - 300, "\r\n\r\n");
    assert_int_equal(run_case(big, false, &r, hs), -502);
}

static void test_incomplete(void **state)
{
    http_header hs[MAXH];
    http_response r;
    assert_int_equal(parse_copy("", 0, 0, false, &r, hs), HTTP_AGAIN);
    assert_int_equal(parse_copy("HTT", 3, 0, false, &r, hs), HTTP_AGAIN);
    assert_int_equal(parse_copy("HTTP/1.1 200 OK\r\nX: y\r\n", 24, 0, false, &r, hs),
                     HTTP_AGAIN);
    /* the early verdict: garbage is rejected before a line ends */
    assert_int_equal(parse_copy("XTTP", 4, 0, false, &r, hs), -502);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_close_delimited),
        cmocka_unit_test(test_versions_and_connection),
        cmocka_unit_test(test_no_body_statuses),
        cmocka_unit_test(test_head_request),
        cmocka_unit_test(test_reason_phrases),
        cmocka_unit_test(test_repeated_equal_lengths),
        cmocka_unit_test(test_values_trimmed),
        cmocka_unit_test(test_reject_framing),
        cmocka_unit_test(test_reject_syntax),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_incomplete),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(kept);
    return rc;
}
