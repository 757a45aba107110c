/* libFuzzer target for src/http/ws_frame.c (and the pure parts of
 * src/http/ws_deflate.c that read peer input).
 *
 * Builds alone (the modules are #included):
 *   clang -std=gnu17 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *         -Iinclude -Isrc -o /tmp/fz fuzz/ws_frame.c -lz
 *
 * The first input byte picks the receiver's rules (mask required, RSV1
 * allowed, inside a message); the rest is read as a stream of frames, as
 * a server would. For each header the parser's contract is checked: the
 * verdict is a length of 2..14, WS_AGAIN or -1002; every shorter prefix is
 * WS_AGAIN or the same error (never a different verdict); an accepted
 * header re-encodes to exactly its input bytes (lengths are minimal) and
 * obeys the rules it was parsed under. Payloads are unmasked whole and in
 * input-chosen pieces (same bytes; masking twice is the identity), checked
 * as UTF-8 whole and split (same state, and the same as a reference
 * decoder), and close payloads go through ws_close_parse. Finally the
 * whole input is offered as a Sec-WebSocket-Extensions value (an accepted
 * offer's response must negotiate to the same parameters) and inflated
 * as permessage-deflate data under a small limit (it never passes the
 * limit by more than the one byte that detects it), and deflate/inflate
 * round-trips it. A broken invariant aborts.
 */
#include "http/ws_frame.c"
#include "http/ws_deflate.c"
#include "core/buf.c"

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "invariant broken: %s (line %d)\n", #cond, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reference: 1 valid, 0 invalid, 2 a prefix that may still become valid. */
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
                uint32_t lo = cp, hi = cp;
                for (size_t r = k; r < len; r++) {
                    lo <<= 6;
                    hi = hi << 6 | 0x3f;
                }
                uint32_t a = lo > min ? lo : min, z = hi < 0x10ffff ? hi : 0x10ffff;
                return a <= z && !(a >= 0xd800 && z <= 0xdfff) ? 2 : 0;
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

static void check_utf8(const uint8_t *p, size_t n, size_t cut)
{
    uint32_t whole = ws_utf8_check(WS_UTF8_OK, p, n);
    uint32_t split = ws_utf8_check(ws_utf8_check(WS_UTF8_OK, p, cut), p + cut, n - cut);
    CHECK(whole == split);
    int ref = reference_utf8(p, n);
    CHECK(ref != 1 || whole == WS_UTF8_OK);
    CHECK(ref != 0 || whole == WS_UTF8_BAD);
    CHECK(ref != 2 || (whole != WS_UTF8_OK && whole != WS_UTF8_BAD));
}

static void check_header(const uint8_t *p, size_t avail, const ws_frame_rules *r, ssize_t hl,
                         const ws_frame *f)
{
    CHECK(hl == WS_AGAIN || hl == -1002 || (hl >= 2 && hl <= WS_MAX_HEADER && (size_t)hl <= avail));
    size_t upto = hl > 0 ? (size_t)hl : avail;
    for (size_t k = 0; k < upto && k < WS_MAX_HEADER; k++) {
        ws_frame g;
        ssize_t pr = ws_frame_parse(p, k, r, &g);
        CHECK(pr == WS_AGAIN || (hl < 0 && pr == hl));
    }
    if (hl <= 0)
        return;
    uint8_t enc[WS_MAX_HEADER];
    CHECK(ws_frame_encode(enc, f) == (size_t)hl);
    CHECK(memcmp(enc, p, (size_t)hl) == 0);
    CHECK(!r->need_mask || f->masked);
    CHECK(f->len >> 63 == 0);
    if (ws_is_control(f->opcode)) {
        CHECK(f->fin && f->len <= WS_MAX_CONTROL && !f->rsv && f->opcode <= WS_OP_PONG);
    } else {
        CHECK(f->opcode <= WS_OP_BINARY);
        CHECK((f->opcode == WS_OP_CONT) == r->in_message);
        CHECK(!(f->rsv & ~r->rsv_allowed) && !(f->opcode == WS_OP_CONT && f->rsv));
    }
}

static void check_payload(const ws_frame *f, const uint8_t *p, size_t n, uint8_t knob)
{
    uint8_t *whole = malloc(n + 1), *pieces = malloc(n + 1);
    memcpy(whole, p, n);
    memcpy(pieces, p, n);
    ws_mask(whole, n, f->mask, 0);
    size_t step = (size_t)knob % 7 + 1;
    for (size_t off = 0; off < n; off += step)
        ws_mask(pieces + off, off + step <= n ? step : n - off, f->mask, off);
    CHECK(memcmp(whole, pieces, n) == 0);
    ws_mask(pieces, n, f->mask, 0);
    CHECK(memcmp(pieces, p, n) == 0);
    check_utf8(whole, n, n ? (size_t)knob % (n + 1) : 0);
    if (f->opcode == WS_OP_CLOSE) {
        unsigned code = 0;
        int rc = ws_close_parse(whole, n, &code);
        CHECK(rc == 0 || rc == -1002 || rc == -1007);
        CHECK(rc != 0 || n == 0 || ws_close_code_valid(code));
        CHECK(rc != 0 || n != 0 || code == WS_CLOSE_NO_STATUS);
    }
    free(whole);
    free(pieces);
}

static void fuzz_frames(const uint8_t *data, size_t size)
{
    ws_frame_rules r = {
        .need_mask = data[0] & 1,
        .rsv_allowed = data[0] & 2 ? WS_RSV1 : 0,
        .in_message = data[0] & 4,
    };
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    for (int frames = 0; frames < 64 && left; frames++) {
        ws_frame f;
        ssize_t hl = ws_frame_parse(p, left, &r, &f);
        check_header(p, left, &r, hl, &f);
        if (hl <= 0)
            return;
        size_t n = f.len < left - (size_t)hl ? (size_t)f.len : left - (size_t)hl;
        check_payload(&f, p + hl, n, data[0] >> 3);
        if (!ws_is_control(f.opcode))
            r.in_message = !f.fin;   /* what a receiver would track */
        p += (size_t)hl + n;
        left -= (size_t)hl + n;
    }
}

static void fuzz_negotiation(const uint8_t *data, size_t size)
{
    for (int takeover = 0; takeover < 2; takeover++) {
        ws_pmd a = { 0 };
        int rc = ws_pmd_negotiate((const char *)data, size, takeover, &a);
        CHECK(rc == -1 || rc == 0 || rc == 1);
        if (rc != 1)
            continue;
        CHECK(a.enabled && a.server_wbits >= 9 && a.server_wbits <= 15);
        CHECK(takeover || (a.server_no_takeover && a.client_no_takeover));
        char resp[WS_PMD_RESPONSE_MAX];
        size_t n = ws_pmd_response(&a, resp, sizeof(resp));
        CHECK(n > 0 && n == strlen(resp));
        ws_pmd b = { 0 };
        CHECK(ws_pmd_negotiate(resp, n, true, &b) == 1);
        CHECK(b.server_no_takeover == a.server_no_takeover);
        CHECK(b.client_no_takeover == a.client_no_takeover);
        CHECK(b.server_wbits == a.server_wbits && b.server_wbits_sent == a.server_wbits_sent);
    }
}

static void fuzz_deflate(const uint8_t *data, size_t size)
{
    ws_inflater *x = ws_inflater_new();
    buf out = { 0 };
    size_t cut = size ? data[0] % (size + 1) : 0;
    int rc = ws_inflate(x, data, cut, false, &out, 1 << 16);
    if (rc == 0)
        rc = ws_inflate(x, data + cut, size - cut, true, &out, 1 << 16);
    CHECK(rc == 0 || rc == -1007 || rc == -1009);
    /* the output stops one byte past the limit, which is how it is detected */
    CHECK(rc == -1009 ? out.len == (1 << 16) + 1 : out.len <= 1 << 16);
    ws_inflater_free(x);

    ws_deflater *d = ws_deflater_new(9 + data[0] % 7);
    size_t cap = ws_deflate_bound(d, size);
    uint8_t *c = malloc(cap);
    ssize_t n = ws_deflate(d, data, size, c, cap, true);
    CHECK(n >= 0);
    x = ws_inflater_new();
    out.len = 0;
    CHECK(ws_inflate(x, c, (size_t)n, true, &out, size) == 0);
    CHECK(out.len == size && (size == 0 || memcmp(out.data, data, size) == 0));
    free(c);
    buf_free(&out);
    ws_inflater_free(x);
    ws_deflater_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    fuzz_frames(data, size);
    fuzz_negotiation(data, size);
    fuzz_deflate(data, size);
    return 0;
}
