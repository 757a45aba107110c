/* Unit tests for src/proxy/rewrite.c: the heads the balancer forwards.
 *
 * Requests are parsed with the real request parser and responses with the
 * real response parser, rewritten, and the result parsed again, so every
 * head the balancer emits is checked to be one the strict parsers accept.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_parser.h"
#include "http/http_resp_parser.h"
#include "proxy/rewrite.h"

#define MAXH 32
static const http_limits LIM = { .max_request_line = 1024, .max_header_bytes = 8192,
                                 .max_headers = MAXH };

/* Parses raw as a request and rewrites it; returns the new head (caller
 * frees) after checking that it parses as a request itself. */
static char *rewrite_req(const char *raw, const rewrite_req_info *ri)
{
    http_header hs[MAXH];
    http_request req = { .headers = hs };
    ssize_t rc = http_parse_request(raw, strlen(raw), 0, &req, &LIM);
    assert_true(rc > 0);
    buf out = { 0 };
    assert_int_equal(rewrite_request(&out, &req, ri), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    http_header hs2[MAXH];
    http_request again = { .headers = hs2 };
    assert_int_equal(http_parse_request(out.data, out.len - 1, 0, &again, &LIM),
                     (ssize_t)out.len - 1);
    return out.data;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static const rewrite_req_info plain = {
    .client_ip = "192.0.2.7", .proto = "http", .default_host = "lb.example:80",
    .framing = FRAME_NONE,
};

static void test_request_basic(void **state)
{
    char *h = rewrite_req("GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
                          &plain);
    assert_string_equal(h, "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n"
                           "X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n"
                           "Forwarded: for=192.0.2.7;proto=http\r\n\r\n");
    free(h);
}

static void test_request_hop_by_hop(void **state)
{
    char *h = rewrite_req("POST /u HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\n"
                          "Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\n"
                          "Upgrade: websocket\r\nProxy-Authorization: Basic YQ==\r\n"
                          "Proxy: http://evil\r\nProxy-Connection: close\r\nX-Secret: 1\r\n"
                          "Expect: 100-continue\r\nX-Keep: yes\r\nContent-Length: 3\r\n\r\n",
                          &(rewrite_req_info){ .client_ip = "192.0.2.7", .proto = "http",
                                               .default_host = "lb", .framing = FRAME_LENGTH,
                                               .content_length = 3 });
    const char *gone[] = { "Connection", "Keep-Alive", "TE:", "Trailer", "Upgrade", "Proxy",
                           "X-Secret", "Expect" };
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        if (strstr(h, gone[i]))
            fail_msg("%s forwarded:\n%s", gone[i], h);
    assert_non_null(strstr(h, "\r\nX-Keep: yes\r\n"));
    assert_non_null(strstr(h, "\r\nContent-Length: 3\r\n"));
    free(h);
}

static void test_request_forwarded_lists(void **state)
{
    char *h = rewrite_req("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\n"
                          "X-Forwarded-For: 10.0.0.2, 10.0.0.3\r\nX-Forwarded-Proto: https\r\n"
                          "Forwarded: for=10.0.0.1\r\n\r\n",
                          &(rewrite_req_info){ .client_ip = "2001:db8::1", .client_ipv6 = true,
                                               .proto = "http", .default_host = "lb" });
    assert_non_null(strstr(h, "\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, "
                              "2001:db8::1\r\n"));
    assert_non_null(strstr(h, "\r\nX-Forwarded-Proto: http\r\n"));
    assert_null(strstr(h, "https"));
    assert_non_null(strstr(h, "\r\nForwarded: for=10.0.0.1, for=\"[2001:db8::1]\";proto=http\r\n"));
    free(h);
}

static void test_request_host_and_forms(void **state)
{
    /* absolute-form: origin-form to the backend, its authority as Host */
    char *h = rewrite_req("GET http://example.org:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
                          &plain);
    assert_true(starts_with(h, "GET /p?q HTTP/1.1\r\nHost: example.org:8080\r\n"));
    assert_null(strstr(h, "other"));
    free(h);
    /* HTTP/1.0 without Host: the default; sent as 1.1 */
    h = rewrite_req("GET / HTTP/1.0\r\n\r\n", &plain);
    assert_true(starts_with(h, "GET / HTTP/1.1\r\nHost: lb.example:80\r\n"));
    free(h);
    h = rewrite_req("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", &plain);
    assert_true(starts_with(h, "OPTIONS * HTTP/1.1\r\n"));
    free(h);
}

static void test_request_chunked_reframed(void **state)
{
    char *h = rewrite_req("PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                          &(rewrite_req_info){ .client_ip = "1.2.3.4", .proto = "http",
                                               .default_host = "lb",
                                               .framing = FRAME_CHUNKED });
    assert_non_null(strstr(h, "\r\nTransfer-Encoding: chunked\r\n"));
    assert_null(strstr(h, "Content-Length"));
    free(h);
}

/* ---- responses ---------------------------------------------------------------------- */

static char *rewrite_resp(const char *raw, bool head, const rewrite_resp_info *ri)
{
    http_header hs[MAXH];
    http_response resp = { .headers = hs };
    assert_true(http_parse_response(raw, strlen(raw), 0, &resp, &LIM, head) > 0);
    buf out = { 0 };
    assert_int_equal(rewrite_response(&out, &resp, ri), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    http_header hs2[MAXH];
    http_response again = { .headers = hs2 };
    assert_int_equal(http_parse_response(out.data, out.len - 1, 0, &again, &LIM, head),
                     (ssize_t)out.len - 1);
    return out.data;
}

static void test_response_length(void **state)
{
    char *h = rewrite_resp("HTTP/1.1 200 OK\r\nServer: s\r\nConnection: keep-alive, X-Hop\r\n"
                           "X-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\n\r\n",
                           false,
                           &(rewrite_resp_info){ .framing = FRAME_LENGTH, .content_length = 5,
                                                 .keep_alive = true, .client_minor = 1 });
    assert_string_equal(h, "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 5\r\n\r\n");
    free(h);
}

static void test_response_reframed(void **state)
{
    /* close-delimited from the backend: chunked to a 1.1 client */
    char *h = rewrite_resp("HTTP/1.0 200 OK\r\nX: y\r\n\r\n", false,
                           &(rewrite_resp_info){ .framing = FRAME_CHUNKED, .keep_alive = true,
                                                 .client_minor = 1 });
    assert_string_equal(h, "HTTP/1.1 200 OK\r\nX: y\r\nTransfer-Encoding: chunked\r\n\r\n");
    free(h);
    /* chunked from the backend to a 1.0 client: delimited by close */
    h = rewrite_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false,
                     &(rewrite_resp_info){ .framing = FRAME_CLOSE, .keep_alive = false,
                                           .client_minor = 0 });
    assert_string_equal(h, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    free(h);
    /* a 1.0 keep-alive client is told so */
    h = rewrite_resp("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false,
                     &(rewrite_resp_info){ .framing = FRAME_LENGTH, .keep_alive = true,
                                           .client_minor = 0 });
    assert_string_equal(h, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                           "Connection: keep-alive\r\n\r\n");
    free(h);
}

static void test_response_no_body(void **state)
{
    char *h = rewrite_resp("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", true,
                           &(rewrite_resp_info){ .announce_length = true,
                                                 .content_length = 1234, .keep_alive = true,
                                                 .client_minor = 1 });
    assert_string_equal(h, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    free(h);
    h = rewrite_resp("HTTP/1.1 204 No Content\r\nX: 1\r\n\r\n", false,
                     &(rewrite_resp_info){ .framing = FRAME_NONE, .keep_alive = true,
                                           .client_minor = 1 });
    assert_string_equal(h, "HTTP/1.1 204 No Content\r\nX: 1\r\n\r\n");
    free(h);
    h = rewrite_resp("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\nConnection: x\r\n\r\n",
                     false, &(rewrite_resp_info){ .client_minor = 1 });
    assert_string_equal(h, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n");
    free(h);
}

static void test_predicates(void **state)
{
    assert_true(rewrite_is_hop_field("TRANSFER-encoding", 17));
    assert_true(rewrite_is_hop_field("proxy-foo", 9));
    assert_true(rewrite_is_hop_field("Proxy", 5));
    assert_false(rewrite_is_hop_field("proxyx", 6));
    assert_false(rewrite_is_hop_field("Content-Type", 12));
    assert_true(rewrite_is_idempotent(HTTP_GET));
    assert_true(rewrite_is_idempotent(HTTP_PUT));
    assert_true(rewrite_is_idempotent(HTTP_DELETE));
    assert_false(rewrite_is_idempotent(HTTP_POST));
    assert_false(rewrite_is_idempotent(HTTP_PATCH));
    assert_false(rewrite_is_idempotent(HTTP_OTHER));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_basic),
        cmocka_unit_test(test_request_hop_by_hop),
        cmocka_unit_test(test_request_forwarded_lists),
        cmocka_unit_test(test_request_host_and_forms),
        cmocka_unit_test(test_request_chunked_reframed),
        cmocka_unit_test(test_response_length),
        cmocka_unit_test(test_response_reframed),
        cmocka_unit_test(test_response_no_body),
        cmocka_unit_test(test_predicates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
