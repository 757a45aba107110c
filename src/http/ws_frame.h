/* ws_frame — the WebSocket wire format (RFC 6455 section 5) as pure
 * functions over the caller's bytes: a frame-header parser and encoder,
 * masking, close-frame payloads, and an incremental UTF-8 validator.
 *
 * Nothing here allocates, reads a socket or keeps hidden state: the parser
 * is picohttpparser-shaped (bytes consumed, WS_AGAIN for "need more", or a
 * negative close code), and the only state that spans calls — the UTF-8
 * validator's — is a value the caller keeps.
 *
 * Frame header layout (network byte order):
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-------+-+-------------+-------------------------------+
 *   |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
 *   |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
 *   |N|V|V|V|       |S|             |   (if payload len==126/127)   |
 *   | |1|2|3|       |K|             |                               |
 *   +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
 *   |     Extended payload length continued, if payload len == 127  |
 *   + - - - - - - - - - - - - - - - +-------------------------------+
 *   |                               | Masking-key, if MASK set to 1 |
 *   +-------------------------------+-------------------------------+
 *   | Masking-key (continued)       |          Payload Data         |
 *   +-------------------------------- - - - - - - - - - - - - - - - +
 */
#ifndef MYR_HTTP_WS_FRAME_H
#define MYR_HTTP_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WS_AGAIN        (-1)   /* need more bytes */
#define WS_MAX_HEADER   14     /* 2 + 8 length + 4 mask */
#define WS_MAX_CONTROL  125    /* payload bytes of a control frame */

enum ws_opcode {
    WS_OP_CONT   = 0x0,
    WS_OP_TEXT   = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE  = 0x8,
    WS_OP_PING   = 0x9,
    WS_OP_PONG   = 0xA,
};

/* RSV bits as they sit in the first header byte. */
enum { WS_RSV1 = 0x40, WS_RSV2 = 0x20, WS_RSV3 = 0x10 };

/* Close codes (RFC 6455 section 7.4.1) this server sends or reports. */
enum ws_close_code {
    WS_CLOSE_NORMAL       = 1000,
    WS_CLOSE_GOING_AWAY   = 1001,
    WS_CLOSE_PROTOCOL     = 1002,
    WS_CLOSE_UNSUPPORTED  = 1003,
    WS_CLOSE_NO_STATUS    = 1005,   /* never on the wire: a close without a code */
    WS_CLOSE_ABNORMAL     = 1006,   /* never on the wire: no close frame at all */
    WS_CLOSE_INVALID_DATA = 1007,
    WS_CLOSE_POLICY       = 1008,
    WS_CLOSE_TOO_BIG      = 1009,
    WS_CLOSE_INTERNAL     = 1011,
};

static inline bool ws_is_control(unsigned opcode) { return (opcode & 0x8) != 0; }

typedef struct ws_frame {
    uint64_t len;       /* payload bytes */
    uint8_t  opcode;    /* enum ws_opcode */
    uint8_t  rsv;       /* WS_RSV* bits set */
    bool     fin;
    bool     masked;
    uint8_t  mask[4];   /* masking key when masked */
} ws_frame;

/* What the receiving endpoint allows, which the header alone cannot say. */
typedef struct ws_frame_rules {
    uint8_t rsv_allowed;  /* RSV bits an extension defines, allowed on the
                             first frame of a data message (RSV1: deflate) */
    bool    need_mask;    /* a server requires masked client frames */
    bool    in_message;   /* a fragmented data message is in progress */
} ws_frame_rules;

/* Parses one frame header from buf[0..len). Returns the header length
 * (2..14) with *f filled, WS_AGAIN when more bytes are needed, or the
 * negated close code to fail the connection with:
 *   -1002  reserved opcode, RSV bit not allowed (or on a control frame or a
 *          continuation), unmasked when need_mask, control frame fragmented
 *          or longer than 125, continuation outside a message, data frame
 *          starting a message inside another, length not minimally encoded
 *          or with the top bit set.
 * Every check is made as soon as its byte is present, so a bad first byte
 * fails without waiting for the rest of the header. Never reads past len. */
ssize_t ws_frame_parse(const uint8_t *buf, size_t len, const ws_frame_rules *r, ws_frame *f);

/* Writes the header for *f (minimal length encoding; the mask when
 * f->masked) to out. Returns its length. */
size_t ws_frame_encode(uint8_t out[WS_MAX_HEADER], const ws_frame *f);

/* XORs p[0..n) with the key, as payload bytes starting at offset `at` of
 * the frame (so a payload may be unmasked in pieces). Masking twice is the
 * identity. */
void ws_mask(uint8_t *p, size_t n, const uint8_t key[4], uint64_t at);

/* ---- close payloads ------------------------------------------------------------- */

/* A code a peer may send (1000-1003, 1007-1014, 3000-4999). */
bool ws_close_code_valid(unsigned code);

/* Checks a received close payload: empty (code 1005 reported), or a valid
 * code and a UTF-8 reason. Returns 0 with *code set, -1002 (one byte, or a
 * code that may not be sent) or -1007 (reason not UTF-8). */
int ws_close_parse(const uint8_t *p, size_t n, unsigned *code);

/* ---- UTF-8 ------------------------------------------------------------------ */

/* Validator state: WS_UTF8_OK at a character boundary, WS_UTF8_BAD once
 * invalid (sticky), any other value in the middle of a sequence. */
enum { WS_UTF8_OK = 0, WS_UTF8_BAD = 1 };

/* Feeds p[0..n) to the validator and returns the new state. Reports
 * WS_UTF8_BAD at the first byte that makes the input certainly invalid:
 * a byte that cannot start a sequence (0x80-0xC1, 0xF5-0xFF), a missing
 * continuation, an overlong form (E0 80..9F, F0 80..8F), a surrogate
 * (ED A0..BF) or a code point above U+10FFFF (F4 90.., F5..). A text
 * message is valid iff the state after its last byte is WS_UTF8_OK. */
uint32_t ws_utf8_check(uint32_t state, const uint8_t *p, size_t n);

#endif
