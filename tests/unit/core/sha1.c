/* Unit tests for src/core/sha1.c: the RFC 3174 section 7.3 test vectors,
 * the empty message, every padding boundary around 55/56/64 bytes, and
 * streaming in pieces of every size giving the one-shot digest.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sha1.h"

static void hex(const uint8_t d[SHA1_DIGEST_LEN], char out[41])
{
    for (int i = 0; i < SHA1_DIGEST_LEN; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* Digest of `repeat` copies of s, fed in one update per copy. */
static void digest_repeat(const char *s, size_t repeat, char out[41])
{
    sha1_ctx c;
    uint8_t d[SHA1_DIGEST_LEN];
    sha1_init(&c);
    for (size_t i = 0; i < repeat; i++)
        sha1_update(&c, s, strlen(s));
    sha1_final(&c, d);
    hex(d, out);
}

static void test_rfc3174_vectors(void **state)
{
    char h[41];
    digest_repeat("abc", 1, h);
    assert_string_equal(h, "a9993e364706816aba3e25717850c26c9cd0d89d");
    digest_repeat("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1, h);
    assert_string_equal(h, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    digest_repeat("a", 1000000, h);
    assert_string_equal(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    digest_repeat("0123456701234567012345670123456701234567012345670123456701234567", 10, h);
    assert_string_equal(h, "dea356a2cddd90c7a7ecedc5ebb563934f460452");
}

static void test_empty_and_one_shot(void **state)
{
    uint8_t d[SHA1_DIGEST_LEN];
    char h[41];
    sha1("", 0, d);
    hex(d, h);
    assert_string_equal(h, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    sha1("The quick brown fox jumps over the lazy dog", 43, d);
    hex(d, h);
    assert_string_equal(h, "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12");
    /* the WebSocket handshake example of RFC 6455 section 1.3 */
    const char *k = "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    sha1(k, strlen(k), d);
    hex(d, h);
    assert_string_equal(h, "b37a4f2cc0624f1690f64606cf385945b2bec4ea");
}

/* Lengths around the padding boundaries, checked against digests of the
 * same bytes computed independently (Python hashlib, recorded here). */
static void test_padding_boundaries(void **state)
{
    static const struct { size_t n; const char *hex; } cases[] = {
        { 55, "c1c8bbdc22796e28c0e15163d20899b65621d65a" },
        { 56, "c2db330f6083854c99d4b5bfb6e8f29f201be699" },
        { 57, "f08f24908d682555111be7ff6f004e78283d989a" },
        { 63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5" },
        { 64, "0098ba824b5c16427bd7a1122a5a442a25ec644d" },
        { 65, "11655326c708d70319be2610e8a57d9a5b959d3b" },
        { 119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56" },
        { 120, "f34c1488385346a55709ba056ddd08280dd4c6d6" },
    };
    char *buf = malloc(128);
    memset(buf, 'a', 128);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t d[SHA1_DIGEST_LEN];
        char h[41];
        sha1(buf, cases[i].n, d);
        hex(d, h);
        assert_string_equal(h, cases[i].hex);
    }
    free(buf);
}

static void test_streaming_equals_one_shot(void **state)
{
    uint8_t data[300], whole[SHA1_DIGEST_LEN], part[SHA1_DIGEST_LEN];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 31 + 7);
    for (size_t len = 0; len <= sizeof(data); len += 13) {
        sha1(data, len, whole);
        for (size_t step = 1; step <= 70; step++) {
            sha1_ctx c;
            sha1_init(&c);
            for (size_t off = 0; off < len; off += step)
                sha1_update(&c, data + off, off + step <= len ? step : len - off);
            sha1_final(&c, part);
            assert_memory_equal(whole, part, SHA1_DIGEST_LEN);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3174_vectors),
        cmocka_unit_test(test_empty_and_one_shot),
        cmocka_unit_test(test_padding_boundaries),
        cmocka_unit_test(test_streaming_equals_one_shot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
