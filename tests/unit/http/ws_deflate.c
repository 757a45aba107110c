/* Unit tests for src/http/ws_deflate.c: the negotiation grammar (accepted
 * offers and their responses, declined offers, fallbacks, malformed
 * values), compression round trips with and without context takeover,
 * decompression in pieces, a sender that ends messages with a final
 * block, invalid data, the size limit, the pool, and the memory a stream
 * costs (printed, and bounded).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "http/ws_deflate.h"

/* Heap bytes in use, from whichever allocator is in charge. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/allocator_interface.h>
#define heap_in_use() __sanitizer_get_current_allocated_bytes()
#endif
#endif
#ifndef heap_in_use
#define heap_in_use() mallinfo2().uordblks
#endif

/* ---- negotiation ---------------------------------------------------------------- */

/* The response for value (NULL when declined). -1: malformed. */
static int nego(const char *value, bool takeover, char *resp, ws_pmd *out)
{
    ws_pmd p = { 0 };
    int rc = ws_pmd_negotiate(value, strlen(value), takeover, &p);
    resp[0] = '\0';
    if (rc == 1)
        assert_true(ws_pmd_response(&p, resp, WS_PMD_RESPONSE_MAX) > 0);
    if (out)
        *out = p;
    return rc;
}

static void expect(const char *offer, const char *response)
{
    char r[WS_PMD_RESPONSE_MAX];
    int rc = nego(offer, true, r, NULL);
    if (!response) {
        assert_int_equal(rc, 0);
        return;
    }
    assert_int_equal(rc, 1);
    assert_string_equal(r, response);
}

static void test_accepted_offers(void **state)
{
    ws_pmd p;
    char r[WS_PMD_RESPONSE_MAX];
    assert_int_equal(nego("permessage-deflate", true, r, &p), 1);
    assert_string_equal(r, "permessage-deflate");
    assert_true(p.enabled && !p.server_no_takeover && !p.client_no_takeover);
    assert_int_equal(p.server_wbits, 15);
    expect("permessage-deflate; client_max_window_bits", "permessage-deflate");
    expect("permessage-deflate; client_max_window_bits=10", "permessage-deflate");
    expect("permessage-deflate; server_no_context_takeover",
           "permessage-deflate; server_no_context_takeover");
    expect("permessage-deflate; client_no_context_takeover",
           "permessage-deflate; client_no_context_takeover");
    expect("permessage-deflate;server_no_context_takeover;client_no_context_takeover",
           "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    assert_int_equal(nego("permessage-deflate; server_max_window_bits=10", true, r, &p), 1);
    assert_string_equal(r, "permessage-deflate; server_max_window_bits=10");
    assert_int_equal(p.server_wbits, 10);
    expect("permessage-deflate; server_max_window_bits=\"12\"",
           "permessage-deflate; server_max_window_bits=12");
    expect("permessage-deflate; server_max_window_bits=\"1\\5\"",
           "permessage-deflate; server_max_window_bits=15");
    expect("  permessage-deflate ;  server_max_window_bits = 9 ; client_max_window_bits  ",
           "permessage-deflate; server_max_window_bits=9");
    expect("PerMessage-Deflate; Server_No_Context_Takeover",
           "permessage-deflate; server_no_context_takeover");
}

static void test_declined_offers(void **state)
{
    expect("x-webkit-deflate-frame", NULL);
    expect("permessage-foo", NULL);
    expect("permessage-deflate; server_max_window_bits=8", NULL);   /* zlib cannot */
    expect("permessage-deflate; server_max_window_bits=7", NULL);
    expect("permessage-deflate; server_max_window_bits=16", NULL);
    expect("permessage-deflate; server_max_window_bits=010", NULL);  /* leading zero */
    expect("permessage-deflate; server_max_window_bits", NULL);      /* value required */
    expect("permessage-deflate; server_max_window_bits=\"\"", NULL);
    expect("permessage-deflate; client_max_window_bits=16", NULL);
    expect("permessage-deflate; client_max_window_bits=abc", NULL);
    expect("permessage-deflate; server_no_context_takeover=1", NULL);  /* no value allowed */
    expect("permessage-deflate; client_no_context_takeover=\"\"", NULL);
    expect("permessage-deflate; server_no_context_takeover; server_no_context_takeover", NULL);
    expect("permessage-deflate; client_max_window_bits; client_max_window_bits=9", NULL);
    expect("permessage-deflate; unknown_param", NULL);
    expect("", NULL);
    expect(" , ,, ", NULL);
}

static void test_fallback_offers(void **state)
{
    /* the first acceptable offer wins; others (and other extensions) are declined */
    expect("permessage-deflate; server_max_window_bits=8, permessage-deflate",
           "permessage-deflate");
    expect("x-foo; a=b, permessage-deflate; client_no_context_takeover",
           "permessage-deflate; client_no_context_takeover");
    expect("permessage-deflate; server_max_window_bits=11, permessage-deflate",
           "permessage-deflate; server_max_window_bits=11");
    expect("permessage-deflate; bogus, permessage-deflate; server_no_context_takeover, "
           "permessage-deflate", "permessage-deflate; server_no_context_takeover");
}

static void test_malformed(void **state)
{
    static const char *bad[] = {
        "permessage-deflate;", "permessage-deflate; =1", "permessage-deflate x",
        "permessage-deflate; a=\"unterminated", "permessage-deflate; a=", "\"quoted\"",
        "permessage-deflate; a=b c", "permessage-deflate; a=\"x\x01\"",
        /* a syntax error after an acceptable offer declines the whole value */
        "permessage-deflate, ;",
    };
    char r[WS_PMD_RESPONSE_MAX];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(nego(bad[i], true, r, NULL), -1);
}

static void test_server_forbids_takeover(void **state)
{
    char r[WS_PMD_RESPONSE_MAX];
    assert_int_equal(nego("permessage-deflate", false, r, NULL), 1);
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover");
    /* the longest response there is (a fuzzer found 96 bytes too few) */
    assert_int_equal(nego("permessage-deflate; server_max_window_bits=10", false, r, NULL), 1);
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover; server_max_window_bits=10");
    ws_pmd p = { .enabled = true, .server_no_takeover = true, .client_no_takeover = true,
                 .server_wbits_sent = true, .server_wbits = 15 };
    assert_int_equal(ws_pmd_response(&p, r, 60), 0);   /* too small: says so */
}

/* ---- compression ---------------------------------------------------------------- */

static size_t compress_msg(ws_deflater *d, const void *in, size_t n, uint8_t **out, bool keep)
{
    size_t cap = ws_deflate_bound(d, n);
    *out = malloc(cap);
    ssize_t c = ws_deflate(d, in, n, *out, cap, keep);
    assert_true(c >= 0);
    return (size_t)c;
}

/* Inflates a whole message fed in pieces of `step` bytes. */
static int inflate_msg(ws_inflater *x, const uint8_t *in, size_t n, size_t step, buf *out,
                       size_t limit, bool keep)
{
    out->len = 0;
    for (size_t off = 0; off < n || (n == 0 && off == 0); off += step) {
        size_t take = off + step <= n ? step : n - off;
        int rc = ws_inflate(x, in + off, take, off + take == n, out, limit);
        if (rc)
            return rc;
        if (n == 0)
            break;
    }
    return ws_inflate_end(x, keep);
}

static void test_round_trip_takeover(void **state)
{
    const char *text = "The quick brown fox jumps over the lazy dog. ";
    char msg[4500];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = text[i % strlen(text)];
    for (int keep = 0; keep < 2; keep++) {
        ws_deflater *d = ws_deflater_new(15);
        ws_inflater *x = ws_inflater_new();
        assert_non_null(d);
        assert_non_null(x);
        buf out = { 0 };
        size_t first = 0;
        for (int round = 0; round < 3; round++) {
            uint8_t *c;
            size_t n = compress_msg(d, msg, sizeof(msg), &c, keep);
            assert_true(n < sizeof(msg) / 4);
            if (round == 0)
                first = n;
            else if (keep)
                assert_true(n < first / 2);   /* the window remembers the last message */
            else
                assert_int_equal(n, first);   /* every message stands alone */
            for (size_t step = 1; step <= n; step = step * 3 + 1) {
                /* the inflater must be in the same context for each try */
                ws_inflater *y = ws_inflater_new();
                if (keep) {
                    /* replay earlier rounds through y */
                    ws_deflater *d2 = ws_deflater_new(15);
                    for (int r = 0; r < round; r++) {
                        uint8_t *c2;
                        size_t n2 = compress_msg(d2, msg, sizeof(msg), &c2, true);
                        assert_int_equal(inflate_msg(y, c2, n2, 4096, &out, 1 << 20, true), 0);
                        free(c2);
                    }
                    ws_deflater_free(d2);
                }
                assert_int_equal(inflate_msg(y, c, n, step, &out, 1 << 20, keep), 0);
                assert_int_equal(out.len, sizeof(msg));
                assert_memory_equal(out.data, msg, sizeof(msg));
                ws_inflater_free(y);
            }
            assert_int_equal(inflate_msg(x, c, n, n, &out, 1 << 20, keep), 0);
            assert_memory_equal(out.data, msg, sizeof(msg));
            free(c);
        }
        buf_free(&out);
        ws_deflater_free(d);
        ws_inflater_free(x);
    }
}

static void test_small_window_and_empty(void **state)
{
    ws_deflater *d = ws_deflater_new(9);
    assert_non_null(d);
    assert_null(ws_deflater_new(8));
    ws_inflater *x = ws_inflater_new();
    buf out = { 0 };
    uint8_t *c;
    size_t n = compress_msg(d, "", 0, &c, true);
    assert_int_equal(inflate_msg(x, c, n, 1, &out, 100, true), 0);
    assert_int_equal(out.len, 0);
    free(c);
    char big[3000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + (i * i) % 17);
    n = compress_msg(d, big, sizeof(big), &c, true);
    assert_int_equal(inflate_msg(x, c, n, 7, &out, 1 << 20, true), 0);
    assert_memory_equal(out.data, big, sizeof(big));
    free(c);
    buf_free(&out);
    ws_deflater_free(d);
    ws_inflater_free(x);
}

/* A sender that finishes each message with a final block (RFC 7692
 * 7.2.3.4) and keeps its window through a preset dictionary. */
static void test_final_block_sender(void **state)
{
    const char *m1 = "hello hello hello hello websocket world";
    const char *m2 = "hello hello hello hello websocket world, again";
    uint8_t c1[256], c2[256];
    z_stream z = { 0 };
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)m1;
    z.avail_in = (uInt)strlen(m1);
    z.next_out = c1;
    z.avail_out = sizeof(c1);
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t n1 = sizeof(c1) - z.avail_out;
    deflateReset(&z);
    deflateSetDictionary(&z, (const Bytef *)m1, (uInt)strlen(m1));
    z.next_in = (Bytef *)m2;
    z.avail_in = (uInt)strlen(m2);
    z.next_out = c2;
    z.avail_out = sizeof(c2);
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t n2 = sizeof(c2) - z.avail_out;
    deflateEnd(&z);

    ws_inflater *x = ws_inflater_new();
    buf out = { 0 };
    assert_int_equal(inflate_msg(x, c1, n1, 3, &out, 1000, true), 0);
    assert_int_equal(out.len, strlen(m1));
    assert_int_equal(inflate_msg(x, c2, n2, 5, &out, 1000, true), 0);
    assert_int_equal(out.len, strlen(m2));
    assert_memory_equal(out.data, m2, strlen(m2));
    /* bytes after a final block are not deflate data */
    uint8_t extra[300];
    memcpy(extra, c1, n1);
    extra[n1] = 0x42;
    ws_inflater *y = ws_inflater_new();
    assert_int_equal(inflate_msg(y, extra, n1 + 1, n1 + 1, &out, 1000, true), -1007);
    buf_free(&out);
    ws_inflater_free(x);
    ws_inflater_free(y);
}

static void test_invalid_and_limit(void **state)
{
    ws_inflater *x = ws_inflater_new();
    buf out = { 0 };
    uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x00, 0x11 };   /* reserved block type */
    assert_int_equal(inflate_msg(x, junk, sizeof(junk), 1, &out, 1000, false), -1007);
    ws_inflater_free(x);

    /* a bomb: 1 MiB of zeros in a few hundred bytes, against a 1000-byte limit */
    char *zeros = calloc(1, 1 << 20);
    ws_deflater *d = ws_deflater_new(15);
    uint8_t *c;
    size_t n = compress_msg(d, zeros, 1 << 20, &c, false);
    assert_true(n < 2048);
    x = ws_inflater_new();
    assert_int_equal(inflate_msg(x, c, n, n, &out, 1000, false), -1009);
    assert_true(out.cap < 1 << 16);   /* stopped early, not after inflating it all */
    ws_inflater_free(x);
    x = ws_inflater_new();
    assert_int_equal(inflate_msg(x, c, n, 100, &out, 1 << 20, false), 0);   /* exactly at it */
    assert_int_equal(out.len, 1 << 20);
    ws_inflater_free(x);
    free(c);
    free(zeros);
    buf_free(&out);
    ws_deflater_free(d);
}

static void test_pool(void **state)
{
    ws_zpool p = { 0 };
    ws_inflater *a = ws_zpool_inflater_get(&p), *b = ws_zpool_inflater_get(&p);
    assert_non_null(a);
    assert_ptr_not_equal(a, b);
    ws_zpool_inflater_put(&p, a);
    ws_zpool_inflater_put(&p, b);
    assert_int_equal(p.ninflaters, 2);
    assert_ptr_equal(ws_zpool_inflater_get(&p), b);   /* LIFO: warm first */
    ws_zpool_inflater_put(&p, b);
    ws_deflater *d = ws_zpool_deflater(&p, 12);
    assert_non_null(d);
    assert_ptr_equal(ws_zpool_deflater(&p, 12), d);
    assert_null(ws_zpool_deflater(&p, 8));
    ws_inflater *many[WS_ZPOOL_INFLATERS + 4];
    for (size_t i = 0; i < sizeof(many) / sizeof(many[0]); i++)
        many[i] = ws_zpool_inflater_get(&p);
    for (size_t i = 0; i < sizeof(many) / sizeof(many[0]); i++)
        ws_zpool_inflater_put(&p, many[i]);
    assert_int_equal(p.ninflaters, WS_ZPOOL_INFLATERS);   /* the rest were freed */
    ws_zpool_fini(&p);
    assert_int_equal(p.ninflaters, 0);
}

/* What a stream costs, as the allocator sees it: the numbers in ws_deflate.h. */
static void test_memory_cost(void **state)
{
    size_t before = heap_in_use();
    ws_deflater *d = ws_deflater_new(15);
    size_t def = heap_in_use() - before;
    before = heap_in_use();
    ws_inflater *x = ws_inflater_new();
    size_t inf0 = heap_in_use() - before;
    uint8_t *c;
    size_t n = compress_msg(d, "some text some text some text", 29, &c, true);
    buf out = { 0 };
    assert_int_equal(inflate_msg(x, c, n, n, &out, 100, true), 0);
    buf_free(&out);
    size_t inf1 = heap_in_use() - before;
    print_message("zlib memory: deflater(15, memLevel 8) %zu B, inflater %zu B idle, "
                  "%zu B with its window\n", def, inf0, inf1);
    assert_true(def > 200000 && def < 300000);
    assert_true(inf0 < 12000);
    assert_true(inf1 > 32768 && inf1 < 48000);
    free(c);
    ws_deflater_free(d);
    ws_inflater_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_offers),
        cmocka_unit_test(test_declined_offers),
        cmocka_unit_test(test_fallback_offers),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_server_forbids_takeover),
        cmocka_unit_test(test_round_trip_takeover),
        cmocka_unit_test(test_small_window_and_empty),
        cmocka_unit_test(test_final_block_sender),
        cmocka_unit_test(test_invalid_and_limit),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_memory_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
