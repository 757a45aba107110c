/* body — see body.h. The chunked decoder is http_parser's (in place,
 * byte-resumable); re-framing writes one chunk per pump, so a chunk never
 * spans two pumps and an interrupted body is visibly unfinished. */
#include "proxy/body.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void body_init(body *b, enum body_kind kind, uint64_t length, size_t at)
{
    *b = (body){ .kind = (uint8_t)kind, .left = length, .start = at, .at = at, .end = at };
    b->done = kind == BODY_NONE || (kind == BODY_LENGTH && length == 0);
}

int body_feed(body *b, buf *x, uint64_t max)
{
    size_t raw = x->len - b->end;
    if (b->done || raw == 0)
        return 0;
    if (b->kind == BODY_LENGTH) {
        size_t n = raw < b->left ? raw : (size_t)b->left;
        b->end += n;
        b->left -= n;
        b->done = b->left == 0;
    } else if (b->kind == BODY_EOF) {
        b->end = x->len;
    } else if (b->kind == BODY_CHUNKED) {
        size_t len = raw;
        ssize_t rc = http_chunked_decode(&b->ch, x->data + b->end, &len, max);
        if (rc < 0 && rc != HTTP_AGAIN)
            return (int)rc;
        if (rc == HTTP_AGAIN) {
            b->end += len;
            x->len = b->end;
        } else {   /* the bytes after the body sit at the end of the raw area */
            memmove(x->data + b->end + len, x->data + b->end + raw - (size_t)rc, (size_t)rc);
            b->end += len;
            x->len = b->end + (size_t)rc;
            b->done = true;
        }
    }
    return 0;
}

/* Appends data to out in the wire framing: as is, or as one chunk. */
static int frame_append(buf *out, enum rewrite_framing f, const char *p, size_t n)
{
    if (f != FRAME_CHUNKED)
        return buf_append(out, p, n);
    char size[24];
    int k = snprintf(size, sizeof(size), "%zx\r\n", n);
    if (buf_reserve(out, (size_t)k + n + 2))
        return -ENOMEM;
    buf_append(out, size, (size_t)k);
    buf_append(out, p, n);
    return buf_append(out, "\r\n", 2);
}

bool body_pump(body *b, const buf *src, buf *out, size_t out_off, enum rewrite_framing f,
               bool *oom)
{
    while (b->at < b->end && out->len - out_off < OUT_HIGH) {
        size_t n = b->end - b->at;
        if (n > BODY_WINDOW)
            n = BODY_WINDOW;
        if (frame_append(out, f, src->data + b->at, n)) {
            *oom = true;
            return false;
        }
        b->at += n;
    }
    if (!b->done || b->at < b->end)
        return false;
    if (f == FRAME_CHUNKED && b->kind != BODY_NONE && buf_append(out, "0\r\n\r\n", 5)) {
        *oom = true;
        return false;
    }
    return true;
}
