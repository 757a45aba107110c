/* sha1 — SHA-1 (RFC 3174, FIPS 180-4) for protocol fingerprints.
 *
 * SHA-1 is broken for collision resistance; it is here only because the
 * WebSocket handshake (RFC 6455 section 4.2.2) defines Sec-WebSocket-Accept
 * with it. Do not use it for anything that needs a secure hash (libsodium
 * has those).
 *
 * Streaming: sha1_init, any number of sha1_update calls, sha1_final. The
 * context is plain data (no allocation); an all-zero context is NOT valid,
 * call sha1_init first.
 */
#ifndef MYR_SHA1_H
#define MYR_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define SHA1_DIGEST_LEN 20

typedef struct sha1_ctx {
    uint32_t h[5];        /* chaining state */
    uint64_t bytes;       /* message bytes hashed so far */
    uint8_t  block[64];   /* pending partial block */
    uint32_t used;        /* bytes of block in use, < 64 */
} sha1_ctx;

void sha1_init(sha1_ctx *c);
void sha1_update(sha1_ctx *c, const void *data, size_t n);
/* Writes the digest; c must be re-initialised before reuse. */
void sha1_final(sha1_ctx *c, uint8_t out[SHA1_DIGEST_LEN]);
/* One-shot digest of data[0..n). */
void sha1(const void *data, size_t n, uint8_t out[SHA1_DIGEST_LEN]);

#endif
