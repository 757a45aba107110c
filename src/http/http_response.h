/* http_response — the bytes of a response head: status reasons, the cached
 * Date header, and the writer that appends a head to a connection's output.
 */
#ifndef MYR_HTTP_RESPONSE_H
#define MYR_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* "OK", "Not Found"...; "Unknown" for a status without a name. */
const char *http_status_reason(int status);

/* The Date header value, re-rendered at most once a second. Each loop owns
 * one (no sharing between threads). */
typedef struct http_date {
    char     text[32];    /* IMF-fixdate, NUL-terminated, 29 chars */
    uint64_t next_ns;     /* loop-clock time at which text goes stale */
} http_date;

/* Returns the current Date text; now_ns is the loop's cached clock. */
const char *http_date_get(http_date *d, uint64_t now_ns);

typedef struct http_head {
    int         status;
    uint8_t     version_minor;   /* of the request: 1.0 clients get 1.1 heads
                                    but keep-alive must be explicit */
    bool        keep_alive;      /* false: "Connection: close" */
    bool        chunked;         /* Transfer-Encoding: chunked instead of length */
    const char *content_type;    /* NULL: none */
    uint64_t    content_length;  /* used unless chunked or no_length */
    bool        no_length;       /* neither length nor chunked (1xx, 204, 304, or
                                    an HTTP/1.0 stream delimited by close) */
    const char *date;            /* http_date_get() */
    const char *extra;           /* preformatted "Name: value\r\n" lines, or NULL */
    size_t      extra_len;
} http_head;

/* Appends the head, through the empty line. 0 or -ENOMEM. */
int http_head_write(buf *out, const http_head *h);

/* True if name/value may be sent as a header field (token name; value of
 * VCHAR, obs-text, SP, HTAB, not starting or ending with whitespace). */
bool http_field_valid(const char *name, const char *value);

#endif
