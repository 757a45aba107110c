/* buf — a growable byte buffer, the one container for bytes in flight.
 *
 * Used for connection input/output and for anything a writer appends to (the
 * JSON writer, the response header builder). An all-zero buf is a valid empty
 * buffer. The owner of the struct owns `data` and frees it with buf_free().
 *
 * Invariant: len <= cap; data is NULL iff cap == 0.
 */
#ifndef MYR_BUF_H
#define MYR_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct buf {
    char  *data;   /* heap storage, or NULL when cap == 0 */
    size_t len;    /* bytes in use, from data[0] */
    size_t cap;    /* bytes allocated */
} buf;

/* Makes room for `n` more bytes past len. Returns 0 or -ENOMEM (the buffer
 * is unchanged on failure). Growth is geometric. */
int  buf_reserve(buf *b, size_t n);
int  buf_append(buf *b, const void *p, size_t n);
/* Drops the first n bytes (n <= len), moving the rest to the front. */
void buf_consume(buf *b, size_t n);
void buf_free(buf *b);

static inline int buf_append_str(buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

/* Appends a byte known to fit (the caller reserved room). */
static inline void buf_put_unchecked(buf *b, char c)
{
    b->data[b->len++] = c;
}

#endif
