/* Unit tests for src/http/ws_frame.c: header parsing at every length
 * encoding and every prefix (WS_AGAIN), each protocol rule (1002) checked
 * as early as its byte allows, encode/parse round trips, masking in
 * pieces, close payloads, and the UTF-8 validator on the classic cases
 * (overlong forms, surrogates, > U+10FFFF, truncation), split at every
 * point and compared with a reference decoder on random input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "http/ws_frame.c"

static const ws_frame_rules server = { .need_mask = true };
static const ws_frame_rules server_pmd = { .need_mask = true, .rsv_allowed = WS_RSV1 };
static const ws_frame_rules server_in_msg = { .need_mask = true, .in_message = true };

/* ---- headers -------------------------------------------------------------------- */

static void test_lengths_and_prefixes(void **state)
{
    static const uint64_t lens[] = { 0, 1, 125, 126, 127, 65535, 65536, 1ull << 32, (1ull << 63) - 1 };
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        for (int masked = 0; masked < 2; masked++) {
            ws_frame in = { .len = lens[i], .opcode = WS_OP_BINARY, .fin = true,
                            .masked = masked, .mask = { 1, 2, 3, 4 } };
            uint8_t h[WS_MAX_HEADER];
            size_t n = ws_frame_encode(h, &in);
            size_t want = 2 + (lens[i] < 126 ? 0 : lens[i] <= 0xffff ? 2 : 8) + (masked ? 4 : 0);
            assert_int_equal(n, want);
            ws_frame_rules r = { .need_mask = masked };
            for (size_t k = 0; k < n; k++) {   /* every prefix asks for more */
                ws_frame f;
                assert_int_equal(ws_frame_parse(h, k, &r, &f), WS_AGAIN);
            }
            ws_frame f;
            assert_int_equal(ws_frame_parse(h, n, &r, &f), (ssize_t)n);
            assert_int_equal(f.len, lens[i]);
            assert_int_equal(f.opcode, WS_OP_BINARY);
            assert_true(f.fin);
            assert_int_equal(f.masked, masked);
            if (masked)
                assert_memory_equal(f.mask, in.mask, 4);
        }
    }
}

static void test_known_bytes(void **state)
{
    /* RFC 6455 5.7: a masked "Hello" from a client, and 256 / 64 KiB
     * binary headers */
    uint8_t hello[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    ws_frame f;
    assert_int_equal(ws_frame_parse(hello, sizeof(hello), &server, &f), 6);
    assert_int_equal(f.len, 5);
    ws_mask(hello + 6, 5, f.mask, 0);
    assert_memory_equal(hello + 6, "Hello", 5);
    uint8_t b256[] = { 0x82, 0x7e, 0x01, 0x00 };
    ws_frame_rules plain = { 0 };
    assert_int_equal(ws_frame_parse(b256, 4, &plain, &f), 4);
    assert_int_equal(f.len, 256);
    uint8_t b64k[] = { 0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0 };
    assert_int_equal(ws_frame_parse(b64k, 10, &plain, &f), 10);
    assert_int_equal(f.len, 65536);
    uint8_t out[WS_MAX_HEADER];
    ws_frame e = { .len = 65536, .opcode = WS_OP_BINARY, .fin = true };
    assert_int_equal(ws_frame_encode(out, &e), 10);
    assert_memory_equal(out, b64k, 10);
}

/* The verdict on a header given only its first n bytes. */
static ssize_t parse_n(const uint8_t *h, size_t n, const ws_frame_rules *r)
{
    ws_frame f;
    return ws_frame_parse(h, n, r, &f);
}

static void test_protocol_errors(void **state)
{
    /* reserved opcodes fail on the first byte alone */
    for (unsigned op = 3; op <= 0xf; op++) {
        if (op == WS_OP_CLOSE || op == WS_OP_PING || op == WS_OP_PONG)
            continue;
        uint8_t b = (uint8_t)(0x80 | op);
        assert_int_equal(parse_n(&b, 1, &server), -1002);
    }
    uint8_t h[2];
    /* RSV bits: none without an extension; RSV1 with deflate on a first frame only */
    h[0] = 0x80 | WS_RSV1 | WS_OP_TEXT;
    assert_int_equal(parse_n(h, 1, &server), -1002);
    assert_int_equal(parse_n(h, 1, &server_pmd), WS_AGAIN);
    h[0] = 0x80 | WS_RSV2 | WS_OP_TEXT;
    assert_int_equal(parse_n(h, 1, &server_pmd), -1002);
    h[0] = 0x80 | WS_RSV3 | WS_OP_BINARY;
    assert_int_equal(parse_n(h, 1, &server_pmd), -1002);
    h[0] = 0x80 | WS_RSV1 | WS_OP_CONT;
    ws_frame_rules pmd_in_msg = server_pmd;
    pmd_in_msg.in_message = true;
    assert_int_equal(parse_n(h, 1, &pmd_in_msg), -1002);
    h[0] = 0x80 | WS_RSV1 | WS_OP_PING;
    assert_int_equal(parse_n(h, 1, &server_pmd), -1002);
    /* fragmentation rules */
    h[0] = 0x80 | WS_OP_CONT;
    assert_int_equal(parse_n(h, 1, &server), -1002);          /* no message to continue */
    assert_int_equal(parse_n(h, 1, &server_in_msg), WS_AGAIN);
    h[0] = 0x00 | WS_OP_TEXT;
    assert_int_equal(parse_n(h, 1, &server_in_msg), -1002);   /* new message inside one */
    assert_int_equal(parse_n(h, 1, &server), WS_AGAIN);       /* a first fragment is fine */
    h[0] = 0x00 | WS_OP_PING;
    assert_int_equal(parse_n(h, 1, &server), -1002);          /* fragmented control */
    h[0] = 0x80 | WS_OP_PING;
    assert_int_equal(parse_n(h, 1, &server_in_msg), WS_AGAIN); /* control inside a message */
    /* control payloads: 125 is the most */
    uint8_t c[6] = { 0x80 | WS_OP_PING, 0x80 | 125, 1, 2, 3, 4 };
    assert_int_equal(parse_n(c, 6, &server), 6);
    c[1] = 0x80 | 126;
    assert_int_equal(parse_n(c, 2, &server), -1002);
    c[1] = 0x80 | 127;
    assert_int_equal(parse_n(c, 2, &server), -1002);
    /* unmasked client frames */
    uint8_t u[2] = { 0x81, 0x05 };
    assert_int_equal(parse_n(u, 2, &server), -1002);
    ws_frame_rules client = { 0 };
    assert_int_equal(parse_n(u, 2, &client), 2);
}

static void test_length_encoding_rules(void **state)
{
    /* 16-bit length below 126, 64-bit length below 65536: not minimal */
    uint8_t a[8] = { 0x82, 0xfe, 0x00, 0x7d, 1, 2, 3, 4 };
    assert_int_equal(parse_n(a, 4, &server), -1002);
    a[3] = 0x7e;
    assert_int_equal(parse_n(a, 8, &server), 8);
    uint8_t b[14] = { 0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4 };
    assert_int_equal(parse_n(b, 10, &server), -1002);
    b[7] = 1;   /* 0x1ffff */
    assert_int_equal(parse_n(b, 14, &server), 14);
    b[2] = 0x80;   /* the most significant bit must be 0 */
    assert_int_equal(parse_n(b, 10, &server), -1002);
}

/* ---- masking -------------------------------------------------------------------- */

static void test_mask_in_pieces(void **state)
{
    uint8_t key[4] = { 0xde, 0xad, 0xbe, 0xef };
    uint8_t orig[257], whole[257], pieces[257];
    for (size_t i = 0; i < sizeof(orig); i++)
        orig[i] = (uint8_t)(i * 7);
    memcpy(whole, orig, sizeof(orig));
    ws_mask(whole, sizeof(whole), key, 0);
    for (size_t i = 0; i < sizeof(orig); i++)
        assert_int_equal(whole[i], orig[i] ^ key[i & 3]);
    for (size_t step = 1; step < 40; step++) {
        memcpy(pieces, orig, sizeof(orig));
        for (size_t off = 0; off < sizeof(orig); off += step)
            ws_mask(pieces + off, off + step <= sizeof(orig) ? step : sizeof(orig) - off, key, off);
        assert_memory_equal(pieces, whole, sizeof(orig));
    }
    ws_mask(whole, sizeof(whole), key, 0);
    assert_memory_equal(whole, orig, sizeof(orig));   /* an involution */
}

/* ---- close payloads ------------------------------------------------------------- */

static void test_close_payloads(void **state)
{
    unsigned code = 0;
    assert_int_equal(ws_close_parse(NULL, 0, &code), 0);
    assert_int_equal(code, 1005);
    uint8_t one = 0x03;
    assert_int_equal(ws_close_parse(&one, 1, &code), -1002);
    static const unsigned valid[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                      1012, 1013, 1014, 3000, 3999, 4000, 4999 };
    static const unsigned invalid[] = { 0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000,
                                        2999, 5000, 65535 };
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        uint8_t p[2] = { (uint8_t)(valid[i] >> 8), (uint8_t)valid[i] };
        assert_int_equal(ws_close_parse(p, 2, &code), 0);
        assert_int_equal(code, valid[i]);
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        uint8_t p[2] = { (uint8_t)(invalid[i] >> 8), (uint8_t)invalid[i] };
        assert_int_equal(ws_close_parse(p, 2, &code), -1002);
    }
    uint8_t reason[] = { 0x03, 0xe8, 'o', 'k', 0xce, 0xba };
    assert_int_equal(ws_close_parse(reason, sizeof(reason), &code), 0);
    uint8_t bad[] = { 0x03, 0xe8, 'o', 0xc0, 0x80 };
    assert_int_equal(ws_close_parse(bad, sizeof(bad), &code), -1007);
    uint8_t cut[] = { 0x03, 0xe8, 0xce };   /* reason ends mid-character */
    assert_int_equal(ws_close_parse(cut, sizeof(cut), &code), -1007);
}

/* ---- UTF-8 ------------------------------------------------------------------------ */

static uint32_t utf8(const char *s, size_t n)
{
    return ws_utf8_check(WS_UTF8_OK, (const uint8_t *)s, n);
}
#define UTF8(lit) utf8(lit, sizeof(lit) - 1)

static void test_utf8_valid(void **state)
{
    assert_int_equal(UTF8(""), WS_UTF8_OK);
    assert_int_equal(UTF8("Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!"),
                     WS_UTF8_OK);
    assert_int_equal(UTF8("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"), WS_UTF8_OK);  /* κόσμε */
    assert_int_equal(UTF8("\x00"), WS_UTF8_OK);
    assert_int_equal(UTF8("\xc2\x80"), WS_UTF8_OK);            /* U+0080 */
    assert_int_equal(UTF8("\xdf\xbf"), WS_UTF8_OK);            /* U+07FF */
    assert_int_equal(UTF8("\xe0\xa0\x80"), WS_UTF8_OK);        /* U+0800 */
    assert_int_equal(UTF8("\xed\x9f\xbf"), WS_UTF8_OK);        /* U+D7FF */
    assert_int_equal(UTF8("\xee\x80\x80"), WS_UTF8_OK);        /* U+E000 */
    assert_int_equal(UTF8("\xef\xbf\xbe\xef\xbf\xbf"), WS_UTF8_OK);  /* U+FFFE U+FFFF */
    assert_int_equal(UTF8("\xf0\x90\x80\x80"), WS_UTF8_OK);    /* U+10000 */
    assert_int_equal(UTF8("\xf4\x8f\xbf\xbf"), WS_UTF8_OK);    /* U+10FFFF */
    assert_int_equal(UTF8("\xef\xbb\xbf" "abc"), WS_UTF8_OK);  /* BOM */
}

/* Feeds s byte by byte; returns the index of the byte at which the state
 * turned BAD, or -1. */
static long bad_at(const char *s, size_t n)
{
    uint32_t st = WS_UTF8_OK;
    for (size_t i = 0; i < n; i++) {
        st = ws_utf8_check(st, (const uint8_t *)s + i, 1);
        if (st == WS_UTF8_BAD)
            return (long)i;
    }
    return -1;
}
#define BAD_AT(lit) bad_at(lit, sizeof(lit) - 1)

static void test_utf8_invalid_fails_fast(void **state)
{
    assert_int_equal(BAD_AT("\x80"), 0);                   /* lone continuation */
    assert_int_equal(BAD_AT("ab\xbf"), 2);
    assert_int_equal(BAD_AT("\xc0\x80"), 0);               /* overlong NUL: C0 never valid */
    assert_int_equal(BAD_AT("\xc1\xbf"), 0);
    assert_int_equal(BAD_AT("\xe0\x80\x80"), 1);           /* overlong 3-byte */
    assert_int_equal(BAD_AT("\xe0\x9f\xbf"), 1);
    assert_int_equal(BAD_AT("\xf0\x80\x80\x80"), 1);       /* overlong 4-byte */
    assert_int_equal(BAD_AT("\xf0\x8f\xbf\xbf"), 1);
    assert_int_equal(BAD_AT("\xed\xa0\x80"), 1);           /* U+D800 surrogate */
    assert_int_equal(BAD_AT("\xed\xbf\xbf"), 1);           /* U+DFFF */
    assert_int_equal(BAD_AT("\xed\xa0\x80\xed\xb0\x80"), 1);  /* a surrogate pair */
    assert_int_equal(BAD_AT("\xf4\x90\x80\x80"), 1);       /* U+110000 */
    assert_int_equal(BAD_AT("\xf5\x80\x80\x80"), 0);
    assert_int_equal(BAD_AT("\xf8\x88\x80\x80\x80"), 0);   /* 5-byte forms */
    assert_int_equal(BAD_AT("\xfc\x84\x80\x80\x80\x80"), 0);
    assert_int_equal(BAD_AT("\xfe"), 0);
    assert_int_equal(BAD_AT("\xff"), 0);
    assert_int_equal(BAD_AT("\xc2\x41"), 1);               /* continuation missing */
    assert_int_equal(BAD_AT("\xe1\x80\x41"), 2);
    assert_int_equal(BAD_AT("\xf1\x80\x80\xc2"), 3);
    /* κόσμε then a surrogate: certain at the byte after ED */
    assert_int_equal(BAD_AT("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80" "edited"), 12);
    /* truncated: not bad (more may come), but not complete either */
    assert_int_equal(BAD_AT("\xe1\x80"), -1);
    assert_int_not_equal(UTF8("\xe1\x80"), WS_UTF8_OK);
    assert_int_not_equal(UTF8("\xf4\x8f\xbf"), WS_UTF8_OK);
    assert_int_not_equal(UTF8("\xc2"), WS_UTF8_OK);
    /* BAD is sticky */
    assert_int_equal(ws_utf8_check(WS_UTF8_BAD, (const uint8_t *)"abc", 3), WS_UTF8_BAD);
}

/* Reference: decode code points strictly (shortest form, no surrogates,
 * at most U+10FFFF). 1 valid, 0 invalid, 2 valid so far but truncated. */
static int reference_utf8(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i];
        size_t len;
        uint32_t cp, min;
        if (b < 0x80) { i++; continue; }
        else if ((b & 0xe0) == 0xc0) { len = 2; cp = b & 0x1f; min = 0x80; }
        else if ((b & 0xf0) == 0xe0) { len = 3; cp = b & 0x0f; min = 0x800; }
        else if ((b & 0xf8) == 0xf0) { len = 4; cp = b & 0x07; min = 0x10000; }
        else return 0;
        for (size_t k = 1; k < len; k++) {
            if (i + k >= n) {
                /* truncated: fine iff some continuation bytes complete it
                 * into a valid code point */
                uint32_t lo = cp, hi = cp;
                for (size_t r = k; r < len; r++) {
                    lo = lo << 6;
                    hi = hi << 6 | 0x3f;
                }
                uint32_t a = lo > min ? lo : min, z = hi < 0x10ffff ? hi : 0x10ffff;
                bool possible = a <= z && !(a >= 0xd800 && z <= 0xdfff);
                return possible ? 2 : 0;
            }
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

static void test_utf8_random_against_reference(void **state)
{
    srand(12345);
    uint8_t buf[12];
    static const uint8_t alphabet[] = { 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0,
                                        0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xee, 0xef, 0xf0, 0xf1,
                                        0xf4, 0xf5, 0xff };
    for (int iter = 0; iter < 200000; iter++) {
        size_t n = (size_t)(rand() % 12);
        for (size_t i = 0; i < n; i++)
            buf[i] = alphabet[rand() % sizeof(alphabet)];
        int ref = reference_utf8(buf, n);
        uint32_t st = ws_utf8_check(WS_UTF8_OK, buf, n);
        /* exact: valid, certainly invalid (as soon as certain), or a
         * prefix that may still become valid */
        if (ref == 1)
            assert_int_equal(st, WS_UTF8_OK);
        else if (ref == 0)
            assert_int_equal(st, WS_UTF8_BAD);
        else
            assert_true(st != WS_UTF8_OK && st != WS_UTF8_BAD);
        /* split at every point: same state as in one piece */
        for (size_t cut = 0; cut <= n; cut++) {
            uint32_t s2 = ws_utf8_check(WS_UTF8_OK, buf, cut);
            s2 = ws_utf8_check(s2, buf + cut, n - cut);
            assert_int_equal(s2, st);
        }
    }
}

static void test_utf8_long_ascii_runs(void **state)
{
    char s[100];
    memset(s, 'a', sizeof(s));
    for (size_t pos = 0; pos < sizeof(s); pos++) {   /* a bad byte at any offset of a run */
        s[pos] = (char)0xff;
        assert_int_equal(bad_at(s, sizeof(s)), (long)pos);
        assert_int_equal(utf8(s, sizeof(s)), WS_UTF8_BAD);
        s[pos] = 'a';
    }
    assert_int_equal(utf8(s, sizeof(s)), WS_UTF8_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lengths_and_prefixes),
        cmocka_unit_test(test_known_bytes),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_length_encoding_rules),
        cmocka_unit_test(test_mask_in_pieces),
        cmocka_unit_test(test_close_payloads),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_invalid_fails_fast),
        cmocka_unit_test(test_utf8_random_against_reference),
        cmocka_unit_test(test_utf8_long_ascii_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
