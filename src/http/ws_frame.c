/* ws_frame — see ws_frame.h. The header parser checks each byte as it
 * becomes available (fail fast); the UTF-8 validator is a nine-state DFA
 * over twelve byte classes, with an eight-bytes-at-a-time ASCII skip.
 */
#include "http/ws_frame.h"

#include <string.h>

/* ---- header --------------------------------------------------------------------- */

/* Checks the first header byte against the rules. 0 or -1002. */
static int check_byte0(uint8_t b0, const ws_frame_rules *r)
{
    unsigned op = b0 & 0x0f, rsv = b0 & 0x70;
    bool fin = b0 & 0x80;
    if (ws_is_control(op)) {
        if (op > WS_OP_PONG || !fin || rsv)
            return -WS_CLOSE_PROTOCOL;
        return 0;
    }
    if (op == WS_OP_CONT)   /* RSV1 of deflate marks only a message's first frame */
        return r->in_message && !rsv ? 0 : -WS_CLOSE_PROTOCOL;
    if (op > WS_OP_BINARY || r->in_message || (rsv & ~r->rsv_allowed))
        return -WS_CLOSE_PROTOCOL;
    return 0;
}

static uint64_t load_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

ssize_t ws_frame_parse(const uint8_t *buf, size_t len, const ws_frame_rules *r, ws_frame *f)
{
    if (len < 1)
        return WS_AGAIN;
    int rc = check_byte0(buf[0], r);
    if (rc)
        return rc;
    if (len < 2)
        return WS_AGAIN;
    bool masked = buf[1] & 0x80;
    unsigned len7 = buf[1] & 0x7f;
    if (r->need_mask && !masked)
        return -WS_CLOSE_PROTOCOL;
    if (ws_is_control(buf[0] & 0x0f) && len7 > WS_MAX_CONTROL)
        return -WS_CLOSE_PROTOCOL;
    unsigned ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    size_t need = 2 + ext + (masked ? 4 : 0);
    uint64_t plen = len7;
    if (ext) {
        if (len < 2 + ext)
            return WS_AGAIN;
        plen = load_be(buf + 2, ext);
        /* minimal encoding: 16 bits only for 126.., 64 bits only beyond 16 */
        if ((ext == 2 && plen < 126) || (ext == 8 && (plen <= 0xffff || plen >> 63)))
            return -WS_CLOSE_PROTOCOL;
    }
    if (len < need)
        return WS_AGAIN;
    f->fin = buf[0] & 0x80;
    f->rsv = buf[0] & 0x70;
    f->opcode = buf[0] & 0x0f;
    f->masked = masked;
    f->len = plen;
    if (masked)
        memcpy(f->mask, buf + 2 + ext, 4);
    else
        memset(f->mask, 0, 4);
    return (ssize_t)need;
}

size_t ws_frame_encode(uint8_t out[WS_MAX_HEADER], const ws_frame *f)
{
    size_t n = 2;
    out[0] = (uint8_t)((f->fin ? 0x80 : 0) | (f->rsv & 0x70) | (f->opcode & 0x0f));
    uint8_t m = f->masked ? 0x80 : 0;
    if (f->len < 126) {
        out[1] = (uint8_t)(m | f->len);
    } else if (f->len <= 0xffff) {
        out[1] = m | 126;
        out[2] = (uint8_t)(f->len >> 8);
        out[3] = (uint8_t)f->len;
        n = 4;
    } else {
        out[1] = m | 127;
        for (unsigned i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(f->len >> (56 - 8 * i));
        n = 10;
    }
    if (f->masked) {
        memcpy(out + n, f->mask, 4);
        n += 4;
    }
    return n;
}

void ws_mask(uint8_t *p, size_t n, const uint8_t key[4], uint64_t at)
{
    uint8_t k[8];
    for (unsigned i = 0; i < 8; i++)
        k[i] = key[(at + i) & 3];
    size_t i = 0;
    if (n >= 8) {
        uint64_t k64;
        memcpy(&k64, k, 8);
        for (; i + 8 <= n; i += 8) {   /* i is a multiple of 8, so k stays in phase */
            uint64_t w;
            memcpy(&w, p + i, 8);
            w ^= k64;
            memcpy(p + i, &w, 8);
        }
    }
    for (; i < n; i++)
        p[i] ^= k[i & 7];
}

/* ---- close payloads ------------------------------------------------------------- */

bool ws_close_code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

int ws_close_parse(const uint8_t *p, size_t n, unsigned *code)
{
    if (n == 0) {
        *code = WS_CLOSE_NO_STATUS;
        return 0;
    }
    if (n == 1)
        return -WS_CLOSE_PROTOCOL;
    *code = (unsigned)p[0] << 8 | p[1];
    if (!ws_close_code_valid(*code))
        return -WS_CLOSE_PROTOCOL;
    if (ws_utf8_check(WS_UTF8_OK, p + 2, n - 2) != WS_UTF8_OK)
        return -WS_CLOSE_INVALID_DATA;
    return 0;
}

/* ---- UTF-8 --------------------------------------------------------------------- */

/* Byte classes: what a byte can be in a UTF-8 sequence (RFC 3629 table). */
enum {
    C_ASCII,   /* 00..7F */
    C_CONT8,   /* 80..8F continuation */
    C_CONT9,   /* 90..9F continuation */
    C_CONTA,   /* A0..BF continuation */
    C_NEVER,   /* C0 C1 F5..FF: never in UTF-8 */
    C_LEAD2,   /* C2..DF */
    C_E0,      /* E0: next must be A0..BF (else overlong) */
    C_LEAD3,   /* E1..EC EE EF */
    C_ED,      /* ED: next must be 80..9F (else a surrogate) */
    C_F0,      /* F0: next must be 90..BF (else overlong) */
    C_LEAD4,   /* F1..F3 */
    C_F4,      /* F4: next must be 80..8F (else above U+10FFFF) */
    NCLASSES
};

static const uint8_t byte_class[256] = {
    [0x00 ... 0x7f] = C_ASCII, [0x80 ... 0x8f] = C_CONT8, [0x90 ... 0x9f] = C_CONT9,
    [0xa0 ... 0xbf] = C_CONTA, [0xc0 ... 0xc1] = C_NEVER, [0xc2 ... 0xdf] = C_LEAD2,
    [0xe0] = C_E0, [0xe1 ... 0xec] = C_LEAD3, [0xed] = C_ED, [0xee ... 0xef] = C_LEAD3,
    [0xf0] = C_F0, [0xf1 ... 0xf3] = C_LEAD4, [0xf4] = C_F4, [0xf5 ... 0xff] = C_NEVER,
};

/* States beyond OK (0) and BAD (1): continuation bytes still expected. */
enum { S_OK = WS_UTF8_OK, S_BAD = WS_UTF8_BAD, S_T1, S_T2, S_T3, S_E0, S_ED, S_F0, S_F4,
       NSTATES };

#define B S_BAD
static const uint8_t next_state[NSTATES][NCLASSES] = {
    /*           ASCII CONT8 CONT9 CONTA NEVER LEAD2 E0    LEAD3 ED    F0    LEAD4 F4 */
    [S_OK]  = { S_OK,  B,    B,    B,    B,    S_T1, S_E0, S_T2, S_ED, S_F0, S_T3, S_F4 },
    [S_BAD] = { B,     B,    B,    B,    B,    B,    B,    B,    B,    B,    B,    B },
    [S_T1]  = { B,     S_OK, S_OK, S_OK, B,    B,    B,    B,    B,    B,    B,    B },
    [S_T2]  = { B,     S_T1, S_T1, S_T1, B,    B,    B,    B,    B,    B,    B,    B },
    [S_T3]  = { B,     S_T2, S_T2, S_T2, B,    B,    B,    B,    B,    B,    B,    B },
    [S_E0]  = { B,     B,    B,    S_T1, B,    B,    B,    B,    B,    B,    B,    B },
    [S_ED]  = { B,     S_T1, S_T1, B,    B,    B,    B,    B,    B,    B,    B,    B },
    [S_F0]  = { B,     B,    S_T2, S_T2, B,    B,    B,    B,    B,    B,    B,    B },
    [S_F4]  = { B,     S_T2, B,    B,    B,    B,    B,    B,    B,    B,    B,    B },
};
#undef B

uint32_t ws_utf8_check(uint32_t state, const uint8_t *p, size_t n)
{
    if (state >= NSTATES)
        return S_BAD;
    size_t i = 0;
    while (i < n) {
        if (state == S_OK) {   /* skip ASCII runs eight bytes at a time */
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (w & 0x8080808080808080ull)
                    break;
                i += 8;
            }
            if (i == n)
                break;
        }
        state = next_state[state][byte_class[p[i++]]];
        if (state == S_BAD)
            break;
    }
    return state;
}
