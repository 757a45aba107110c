/* libFuzzer target for src/http/http_resp_parser.c.
 *
 * Builds alone (the parsers are #included):
 *   clang -std=gnu17 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *         -Iinclude -Isrc -o /tmp/fz fuzz/http_resp_parser.c
 *
 * The first input byte chooses whether the response answers a HEAD; the
 * rest is parsed as a response head under small limits and checked against
 * the parser's contract: the verdict is one of the documented ones, every
 * pointer lies inside the consumed bytes, fields obey the grammar, framing
 * is exactly one of no body / chunked / length / close-delimited (never
 * Content-Length with chunked), and a head fed in two pieces (resuming at
 * prev_len) gets the same verdict and the same fields. When the head
 * announces a chunked body, the bytes after it go through the chunked
 * decoder, as the balancer decodes a backend's body, in one piece and in
 * two; both must agree. A broken invariant aborts.
 */
#include "http/http_parser.c"
#include "http/http_resp_parser.c"

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "invariant broken: %s (line %d)\n", #cond, __LINE__); abort(); } } while (0)

#define FUZZ_MAX_HEADERS 8

static const http_limits fuzz_limits = {
    .max_request_line = 128, .max_header_bytes = 1024, .max_headers = FUZZ_MAX_HEADERS,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool inside(const void *p, size_t n, const void *base, size_t len)
{
    const char *c = p, *b = base;
    return c != NULL && c >= b && c + n <= b + len;
}

static void check_accepted(const char *buf, size_t n, const http_response *r, bool head)
{
    CHECK(n >= 14 && buf[n - 1] == '\n' && buf[n - 2] == '\r' && buf[n - 3] == '\n');
    CHECK(memcmp(buf, "HTTP/1.", 7) == 0);
    CHECK(r->error == NULL);
    CHECK(r->status >= 100 && r->status <= 599);
    CHECK(r->version_minor <= 1);
    CHECK(r->reason_len == 0 || inside(r->reason, r->reason_len, buf, n));
    for (uint32_t i = 0; i < r->reason_len; i++)
        CHECK(resp_is(r->reason[i], RC_VALUE));
    CHECK(r->num_headers <= FUZZ_MAX_HEADERS);
    for (uint32_t i = 0; i < r->num_headers; i++) {
        const http_header *h = &r->headers[i];
        CHECK(inside(h->name, h->name_len, buf, n) && h->name_len > 0);
        CHECK(h->value_len == 0 || inside(h->value, h->value_len, buf, n));
        for (uint32_t k = 0; k < h->name_len; k++)
            CHECK(resp_is(h->name[k], RC_TCHAR));
        for (uint32_t k = 0; k < h->value_len; k++)
            CHECK(resp_is(h->value[k], RC_VALUE));
        if (h->value_len)
            CHECK(!resp_ows(h->value[0]) && !resp_ows(h->value[h->value_len - 1]));
    }
    int kinds = r->no_body + r->chunked + r->close_delimited + (r->content_length >= 0 && !r->no_body);
    CHECK(kinds == 1);
    CHECK(!(r->chunked && r->content_length >= 0));
    CHECK(!r->chunked || r->version_minor == 1);
    CHECK(!r->close_delimited || !r->keep_alive);
    if (head || r->status < 200 || r->status == 204 || r->status == 304)
        CHECK(r->no_body);
    if (r->status < 200 || r->status == 204)
        CHECK(r->content_length == -1);
}

static void check_same(const http_response *a, const http_response *b)
{
    CHECK(a->status == b->status && a->version_minor == b->version_minor);
    CHECK(a->reason == b->reason && a->reason_len == b->reason_len);
    CHECK(a->num_headers == b->num_headers);
    CHECK(memcmp(a->headers, b->headers, a->num_headers * sizeof(http_header)) == 0);
    CHECK(a->content_length == b->content_length && a->chunked == b->chunked);
    CHECK(a->close_delimited == b->close_delimited && a->no_body == b->no_body);
    CHECK(a->keep_alive == b->keep_alive);
}

/* The body after a chunked head, decoded in one piece and in two. */
static void check_chunked_body(const char *raw, size_t n, size_t cut)
{
    char *one = malloc(n + 1), *two = malloc(n + 1);
    memcpy(one, raw, n);
    memcpy(two, raw, n);
    http_chunked d1 = { 0 }, d2 = { 0 };
    size_t len1 = n;
    ssize_t r1 = http_chunked_decode(&d1, one, &len1, UINT64_MAX);
    size_t len2a = cut, len2b = n - cut;
    ssize_t r2 = http_chunked_decode(&d2, two, &len2a, UINT64_MAX);
    if (r2 == HTTP_AGAIN) {
        memmove(two + len2a, two + cut, n - cut);
        r2 = http_chunked_decode(&d2, two + len2a, &len2b, UINT64_MAX);
        CHECK(r1 == r2 && len1 == len2a + len2b);
        CHECK(memcmp(one, two, len1) == 0);
    } else if (r2 >= 0) {   /* done within the first piece: the rest is tail */
        CHECK(r1 >= 0 && (size_t)r1 == (size_t)r2 + (n - cut) && len1 == len2a);
        CHECK(memcmp(one, two, len1) == 0);
    } else {
        CHECK(r1 == r2);
    }
    CHECK(r1 == HTTP_AGAIN || r1 == -400 || (r1 >= 0 && d1.done));
    free(one);
    free(two);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    bool head = data[0] & 1;
    const char *buf = (const char *)data + 1;
    size_t n = size - 1;
    http_header hs[FUZZ_MAX_HEADERS + 1], hs2[FUZZ_MAX_HEADERS + 1];
    memset(&hs[FUZZ_MAX_HEADERS], 0x5a, sizeof(hs[0]));
    http_response r = { .headers = hs };
    ssize_t rc = http_parse_response(buf, n, 0, &r, &fuzz_limits, head);
    CHECK(rc == HTTP_AGAIN || rc == -502 || (rc > 0 && (size_t)rc <= n));
    if (rc == -502)
        CHECK(r.error != NULL);
    const unsigned char *guard = (const unsigned char *)&hs[FUZZ_MAX_HEADERS];
    for (size_t i = 0; i < sizeof(hs[0]); i++)
        CHECK(guard[i] == 0x5a);
    if (rc > 0)
        check_accepted(buf, (size_t)rc, &r, head);

    if (n > 0) {   /* the same bytes in two calls */
        size_t cut = (size_t)data[size - 1] * 7 % n;
        http_response part = { .headers = hs2 };
        ssize_t p = http_parse_response(buf, cut, 0, &part, &fuzz_limits, head);
        if (p == HTTP_AGAIN)
            p = http_parse_response(buf, n, cut, &part, &fuzz_limits, head);
        CHECK(p == rc);
        if (rc > 0)
            check_same(&r, &part);
    }
    if (rc > 0 && r.chunked) {
        size_t body = n - (size_t)rc;
        check_chunked_body(buf + rc, body, body ? (size_t)data[0] % (body + 1) : 0);
    }
    return 0;
}
