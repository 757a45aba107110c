/* body — a message body passing through one of the balancer's buffers, and
 * the framing it leaves with.
 *
 * The balancer never holds a whole body: bytes arrive in a buffer (the
 * client's input for requests, a backend connection's for responses), are
 * taken into the body as they come (body_feed: counted against a
 * Content-Length, decoded in place from chunked, or all of them until the
 * connection closes), and are forwarded in the framing the other side was
 * promised (body_pump: as they are, or as one chunk per pump, then the last
 * chunk). A body is offsets into its buffer, which may grow or compact:
 *
 *   | ...head | forwarded, kept | decoded, not yet forwarded | raw bytes |
 *             start             at                           end       len
 *
 * Raw bytes after the end of a finished body are the next message's.
 * Bytes before `at` are kept until the owner drops them (a request body is
 * kept while it may be sent again to another backend).
 */
#ifndef MYR_PROXY_BODY_H
#define MYR_PROXY_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "http/http_parser.h"
#include "proxy/rewrite.h"

#define BODY_WINDOW (64u * 1024)   /* body bytes buffered per direction */
#define OUT_HIGH    (64u * 1024)   /* output above this: stop producing into it */

enum body_kind {
    BODY_NONE,      /* no body */
    BODY_LENGTH,    /* Content-Length bytes */
    BODY_CHUNKED,   /* chunked, decoded in place */
    BODY_EOF,       /* until the sender closes (the owner sets done) */
};

typedef struct body {
    uint8_t      kind;    /* enum body_kind */
    bool         done;    /* its last byte (or the EOF ending it) was read */
    uint64_t     left;    /* BODY_LENGTH: bytes not yet read */
    http_chunked ch;      /* BODY_CHUNKED decoder */
    size_t       start;   /* first body byte still in the buffer */
    size_t       at;      /* first decoded byte not yet forwarded */
    size_t       end;     /* end of decoded bytes; raw bytes follow */
} body;

/* A body of `kind` (and `length` for BODY_LENGTH) starting at offset `at`. */
void body_init(body *b, enum body_kind kind, uint64_t length, size_t at);

/* Takes the raw bytes after b->end in x into the body. A chunked body is
 * decoded in place, which may shorten x. 0, or -status (-400, -413 past
 * max) for a malformed chunked body. */
int  body_feed(body *b, buf *x, uint64_t max);

/* Forwards decoded bytes from src into out (framed per f) while out has
 * fewer than OUT_HIGH unsent bytes past out_off; once the whole body is
 * forwarded, appends the last chunk when f is chunked. True when the body
 * has been forwarded whole. Out of memory: false with *oom set. */
bool body_pump(body *b, const buf *src, buf *out, size_t out_off, enum rewrite_framing f,
               bool *oom);

#endif
