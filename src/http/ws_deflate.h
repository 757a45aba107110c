/* ws_deflate — permessage-deflate (RFC 7692): negotiating the extension
 * from a client's Sec-WebSocket-Extensions offers, and compressing and
 * decompressing messages with zlib.
 *
 * Negotiation is a pure function over the header value (no allocation).
 * Offers are taken in the client's order of preference; the first
 * permessage-deflate offer the server can honour is accepted, the others
 * (and every other extension) are declined by leaving them out of the
 * response. An offer is declined — never answered with an error — when it
 * has an unknown or repeated parameter, a value out of range or where none
 * belongs, or server_max_window_bits=8 (zlib cannot compress raw deflate
 * with a 256-byte window). A header value that breaks the grammar is
 * declined whole.
 *
 * Memory (zlib 1.2.13, measured by the unit tests through zalloc):
 *   compressor, window 2^15, memLevel 8   about 262 KiB
 *   decompressor, window 2^15             about 7 KiB + a 32 KiB window
 *                                          allocated on first output
 * With context takeover the sliding window must survive between messages,
 * so a connection keeps its own stream, allocated when its first
 * compressed message is sent or received and freed with the connection.
 * Without it (negotiated, or forced for every connection by the server)
 * streams are borrowed from a per-loop pool (ws_zpool) for one message and
 * reset, so an idle connection holds no zlib state at all.
 */
#ifndef MYR_HTTP_WS_DEFLATE_H
#define MYR_HTTP_WS_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <zlib.h>

#include "core/buf.h"

/* ---- negotiation ---------------------------------------------------------------- */

/* The parameters in force on one connection. All-zero: not negotiated. */
typedef struct ws_pmd {
    bool    enabled;
    bool    server_no_takeover;   /* we reset our compressor after each message */
    bool    client_no_takeover;   /* the client resets its compressor, so ours
                                     to decompress needs no memory in between */
    bool    server_wbits_sent;    /* the response names server_max_window_bits */
    uint8_t server_wbits;         /* our compressor's window, 9..15 */
} ws_pmd;

/* Reads one Sec-WebSocket-Extensions field value. When allow_takeover is
 * false the server asks for no context takeover in both directions (RFC
 * 7692 lets a server add both parameters to any response). Returns 1 with
 * *out set when an offer was accepted, 0 when none was acceptable (or
 * there was none), -1 when the value breaks the grammar. The whole value
 * is checked even after an offer is accepted. */
int ws_pmd_negotiate(const char *value, size_t len, bool allow_takeover, ws_pmd *out);

/* Writes the response value ("permessage-deflate; ...") for p into out,
 * NUL-terminated. Returns its length, or 0 if cap is too small.
 * WS_PMD_RESPONSE_MAX bytes always suffice. */
#define WS_PMD_RESPONSE_MAX 128
size_t ws_pmd_response(const ws_pmd *p, char *out, size_t cap);

/* ---- compression ---------------------------------------------------------------- */

typedef struct ws_inflater {
    z_stream z;
    bool     ended;   /* a block with BFINAL set ended the stream in this message */
} ws_inflater;

typedef struct ws_deflater {
    z_stream z;
    uint8_t  wbits;
} ws_deflater;

/* Decompressor with a 2^15 window, which reads what any client window
 * produces. NULL when out of memory. */
ws_inflater *ws_inflater_new(void);
void         ws_inflater_free(ws_inflater *x);

/* Decompresses the next in[0..n) of a message's payload, appending to out,
 * which must not grow beyond limit bytes; fin marks the message's last
 * bytes (the 00 00 ff ff tail the sender removed is then fed too).
 * Returns 0, -1007 for invalid compressed data (including bytes after a
 * final block), -1009 when out would pass limit (it then holds limit + 1
 * bytes, the one that told), or -ENOMEM. */
int ws_inflate(ws_inflater *x, const uint8_t *in, size_t n, bool fin, buf *out, size_t limit);

/* Ends a message. Without takeover the stream is reset; with it the
 * window is kept (re-primed if a final block ended the stream). 0 or
 * -ENOMEM. */
int ws_inflate_end(ws_inflater *x, bool takeover);

/* Compressor with a 2^wbits window (9..15). NULL when out of memory. */
ws_deflater *ws_deflater_new(unsigned wbits);
void         ws_deflater_free(ws_deflater *d);

/* Output bytes that always suffice for compressing n bytes. */
size_t ws_deflate_bound(ws_deflater *d, size_t n);

/* Compresses a whole message in[0..n) into out[0..cap) as RFC 7692 says:
 * a sync flush with its 00 00 ff ff tail removed. Without takeover the
 * stream is reset after. Returns the compressed length, or -ENOBUFS if cap
 * was too small (cap >= ws_deflate_bound never is), -EINVAL if n is too
 * large for zlib (> 1 GiB: send it uncompressed). */
ssize_t ws_deflate(ws_deflater *d, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                   bool takeover);

/* ---- per-loop pool for connections without context takeover ---------------- */

#define WS_ZPOOL_INFLATERS 16   /* idle decompressors kept at most */

typedef struct ws_zpool {
    ws_inflater *inflaters[WS_ZPOOL_INFLATERS];  /* reset, ready */
    uint32_t     ninflaters;
    ws_deflater *deflaters[16];   /* shared compressors by window bits; a
                                     message is compressed in one call, so
                                     connections never interleave on one */
} ws_zpool;

/* A reset decompressor for one message; give it back with _put. NULL when
 * out of memory. */
ws_inflater *ws_zpool_inflater_get(ws_zpool *p);
void         ws_zpool_inflater_put(ws_zpool *p, ws_inflater *x);
/* The shared compressor for wbits, created on first use. NULL when out of
 * memory. */
ws_deflater *ws_zpool_deflater(ws_zpool *p, unsigned wbits);
void         ws_zpool_fini(ws_zpool *p);

#endif
