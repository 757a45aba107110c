/* libFuzzer target for src/http/http_parser.c.
 *
 * Builds alone (the parser is #included):
 *   clang -std=gnu17 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *         -Iinclude -Isrc -o /tmp/fz fuzz/http_parser.c
 *
 * Each input is parsed as a request head under small limits, and the result
 * is checked against the parser's contract: the verdict is one of the
 * documented ones, every pointer returned lies inside the consumed bytes,
 * fields are what the grammar allows, and a head fed in two pieces (resuming
 * at prev_len) gets the same verdict and the same fields as in one. When the
 * head announces a chunked body, the bytes after it go through the chunked
 * decoder in one shot, in 2-3 pieces cut at input-derived positions and, for
 * short bodies, one byte at a time; every way must decode the same bytes,
 * leave the same tail and give the same verdict. Inputs that are not a
 * chunked request feed the decoder directly, so it is fuzzed on its own too.
 * A broken invariant aborts, which libFuzzer reports as a crash.
 */
#include "http/http_parser.c"

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "invariant broken: %s (line %d)\n", #cond, __LINE__); abort(); } } while (0)

#define FUZZ_MAX_HEADERS 8
#define FUZZ_MAX_BODY    4096

static const http_limits fuzz_limits = {
    .max_request_line = 256, .max_header_bytes = 1024, .max_headers = FUZZ_MAX_HEADERS,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool within(const void *p, size_t n, const void *base, size_t len)
{
    const char *c = p, *b = base;
    return c != NULL && c >= b && c + n <= b + len;
}

static bool is_status(ssize_t r)
{
    return r == -400 || r == -414 || r == -417 || r == -431 || r == -501 || r == -505;
}

/* Everything an accepted head exposes must be inside buf[0..n) and obey the
 * grammar it was checked against. */
static void check_accepted(const char *buf, size_t n, const http_request *req)
{
    CHECK(n >= 16 && buf[n - 1] == '\n' && buf[n - 2] == '\r' && buf[n - 3] == '\n');
    CHECK(req->error == NULL);
    CHECK(within(req->method, req->method_len, buf, n) && req->method_len > 0);
    for (uint32_t i = 0; i < req->method_len; i++)
        CHECK(is_class(req->method[i], C_TCHAR));
    CHECK(within(req->target, req->target_len, buf, n) && req->target_len > 0);
    for (uint32_t i = 0; i < req->target_len; i++)
        CHECK(is_class(req->target[i], C_TARGET) && req->target[i] != '#');
    CHECK(within(req->path, req->path_len, req->target, req->target_len));
    CHECK(req->path_len > 0 && (req->path[0] == '/' || req->path[0] == '*'));
    if (req->query)
        CHECK(within(req->query, req->query_len, req->target, req->target_len) &&
              req->query[-1] == '?');
    else
        CHECK(req->query_len == 0);
    CHECK(req->version_minor <= 1);
    CHECK(req->method_id != HTTP_CONNECT);
    CHECK(req->num_headers <= FUZZ_MAX_HEADERS);
    for (uint32_t i = 0; i < req->num_headers; i++) {
        const http_header *h = &req->headers[i];
        CHECK(within(h->name, h->name_len, buf, n) && h->name_len > 0);
        CHECK(within(h->value, h->value_len, buf, n));
        for (uint32_t k = 0; k < h->name_len; k++)
            CHECK(is_class(h->name[k], C_TCHAR));
        for (uint32_t k = 0; k < h->value_len; k++)
            CHECK(is_class(h->value[k], C_VALUE));
        if (h->value_len)
            CHECK(!is_ows(h->value[0]) && !is_ows(h->value[h->value_len - 1]));
        CHECK(http_find_header(req, h->name, h->name_len) <= h);
    }
    CHECK(req->content_length >= -1);
    CHECK(!(req->chunked && req->content_length >= 0));
    CHECK(!req->chunked || req->version_minor == 1);
    if (req->version_minor == 1)
        CHECK(req->host != NULL);
    if (req->host) {
        CHECK(within(req->host, req->host_len, buf, n));
        for (uint32_t k = 0; k < req->host_len; k++)
            CHECK(is_class(req->host[k], C_HOST));
    }
}

static void check_same_request(const http_request *a, const http_request *b)
{
    CHECK(a->method == b->method && a->method_len == b->method_len);
    CHECK(a->target == b->target && a->target_len == b->target_len);
    CHECK(a->path == b->path && a->path_len == b->path_len);
    CHECK(a->query == b->query && a->query_len == b->query_len);
    CHECK(a->method_id == b->method_id && a->version_minor == b->version_minor);
    CHECK(a->num_headers == b->num_headers);
    CHECK(memcmp(a->headers, b->headers, a->num_headers * sizeof(http_header)) == 0);
    CHECK(a->content_length == b->content_length && a->chunked == b->chunked);
    CHECK(a->keep_alive == b->keep_alive && a->expect_continue == b->expect_continue);
    CHECK(a->upgrade == b->upgrade);
    CHECK(a->host == b->host && a->host_len == b->host_len);
}

/* ---- chunked ------------------------------------------------------------- */

typedef struct decoded {
    ssize_t status;     /* HTTP_AGAIN, 0 done, -400, -413 */
    char   *out;        /* decoded bytes, out_len of them */
    size_t  out_len;
    size_t  tail_len;   /* raw bytes after the body (they are the input's last) */
    uint64_t total;
} decoded;

/* Decodes raw[0..n) arriving in pieces that end at cuts[] and n. */
static decoded decode_pieces(const char *raw, size_t n, const size_t *cuts, size_t ncuts)
{
    decoded d = { .status = HTTP_AGAIN, .out = malloc(n + 1) };
    http_chunked st = {0};
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n, plen = to - from;
        char *piece = malloc(plen + 1);
        memcpy(piece, raw + from, plen);
        size_t len = plen;
        ssize_t r = http_chunked_decode(&st, piece, &len, FUZZ_MAX_BODY);
        CHECK(len <= plen);
        memcpy(d.out + d.out_len, piece, len);
        d.out_len += len;
        if (r >= 0) {
            CHECK(st.done && (size_t)r <= plen - len);
            /* the tail is the end of this piece, untouched */
            CHECK(memcmp(piece + plen - (size_t)r, raw + to - (size_t)r, (size_t)r) == 0);
            d.tail_len = (size_t)r + (n - to);
            d.status = 0;
        } else {
            CHECK(r == HTTP_AGAIN || r == -400 || r == -413);
            CHECK(!st.done);
            d.status = r;
        }
        free(piece);
        from = to;
        if (r != HTTP_AGAIN)
            break;
    }
    CHECK(st.total == d.out_len && st.total <= FUZZ_MAX_BODY);
    d.total = st.total;
    return d;
}

static void check_same_decoded(const decoded *a, const decoded *b)
{
    CHECK(a->status == b->status);
    CHECK(a->out_len == b->out_len && memcmp(a->out, b->out, a->out_len) == 0);
    CHECK(a->tail_len == b->tail_len);
}

static void fuzz_chunked(const char *raw, size_t n, const uint8_t *data, size_t size)
{
    decoded one = decode_pieces(raw, n, NULL, 0);

    /* cut positions derived from the input, so the fuzzer can steer them */
    size_t c1 = n ? (size_t)(data[0] | data[size - 1] << 8) % (n + 1) : 0;
    size_t c2 = c1 + (n - c1 ? (size_t)(data[size / 2] * 131u) % (n - c1 + 1) : 0);
    size_t cuts[2] = { c1, c2 };
    decoded two = decode_pieces(raw, n, cuts, 1);
    check_same_decoded(&one, &two);
    decoded three = decode_pieces(raw, n, cuts, 2);
    check_same_decoded(&one, &three);
    free(two.out);
    free(three.out);

    if (n <= 512) {
        size_t *all = malloc((n + 1) * sizeof(size_t));
        for (size_t i = 0; i < n; i++)
            all[i] = i + 1;
        decoded bytes = decode_pieces(raw, n, all, n ? n - 1 : 0);
        check_same_decoded(&one, &bytes);
        free(bytes.out);
        free(all);
    }
    free(one.out);
}

/* ---- the target ---------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    http_header hs[FUZZ_MAX_HEADERS + 1], hs2[FUZZ_MAX_HEADERS + 1];
    memset(&hs[FUZZ_MAX_HEADERS], 0x5a, sizeof(hs[0]));
    http_request req = { .headers = hs };

    ssize_t r = http_parse_request(buf, size, 0, &req, &fuzz_limits);
    CHECK(r == HTTP_AGAIN || is_status(r) || (r > 0 && (size_t)r <= size));
    if (r < -1)
        CHECK(req.error != NULL);
    const unsigned char *guard = (const unsigned char *)&hs[FUZZ_MAX_HEADERS];
    for (size_t i = 0; i < sizeof(hs[0]); i++)
        CHECK(guard[i] == 0x5a);
    if (r > 0)
        check_accepted(buf, (size_t)r, &req);

    /* the same bytes in two calls: the cut never changes the answer */
    if (size > 0) {
        size_t cut = (size_t)data[size - 1] * 7 % size;
        http_request part = { .headers = hs2 };
        ssize_t p = http_parse_request(buf, cut, 0, &part, &fuzz_limits);
        if (p == HTTP_AGAIN)
            p = http_parse_request(buf, size, cut, &part, &fuzz_limits);
        CHECK(p == r);
        if (r > 0)
            check_same_request(&req, &part);
    }

    if (r > 0 && req.chunked)
        fuzz_chunked(buf + r, size - (size_t)r, data, size);
    else
        fuzz_chunked(buf, size, data, size);
    return 0;
}
