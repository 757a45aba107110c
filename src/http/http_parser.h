/* http_parser — strict, zero-copy HTTP/1.1 request parser (RFC 9110, 9112).
 *
 * A pure function over the caller's bytes, in the manner of picohttpparser:
 * it never allocates, never writes to the input, and fills an array of
 * headers whose capacity the caller bounds. All pointers it returns point
 * into the caller's buffer and live as long as those bytes do.
 *
 * Besides splitting the message it derives everything the connection layer
 * needs to frame it safely (body length, chunked, keep-alive, 100-continue)
 * and rejects every ambiguity a request-smuggling attack relies on. When it
 * rejects, the connection must answer with the status it returns and close:
 * nothing after a rejected request is ever parsed as another request.
 *
 * Return convention of the parse calls:
 *   > 0           bytes consumed (the request head, through the empty line)
 *   HTTP_AGAIN    need more bytes (-1)
 *   -status       reject with this status: -400, -413, -414, -417, -431,
 *                 -501 or -505; req->error names the rule broken
 */
#ifndef MYR_HTTP_PARSER_H
#define MYR_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP_AGAIN (-1)

typedef enum http_method {
    HTTP_OTHER = 0,   /* a valid token we have no name for */
    HTTP_GET, HTTP_HEAD, HTTP_POST, HTTP_PUT, HTTP_DELETE,
    HTTP_OPTIONS, HTTP_PATCH, HTTP_CONNECT, HTTP_TRACE,
} http_method;

typedef struct http_header {
    const char *name;       /* not NUL-terminated; case as sent */
    const char *value;      /* leading and trailing OWS removed */
    uint32_t    name_len;
    uint32_t    value_len;
} http_header;

typedef struct http_limits {
    uint32_t max_request_line;  /* bytes before the first CRLF, else 414 */
    uint32_t max_header_bytes;  /* whole head incl. request line, else 431 */
    uint32_t max_headers;       /* header fields, else 431; <= headers array */
} http_limits;

typedef struct http_request {
    /* request line */
    const char *method;     uint32_t method_len;
    const char *target;     uint32_t target_len;  /* as sent */
    const char *path;       uint32_t path_len;    /* origin-form path; for
                                   absolute-form the path part, "/" if empty;
                                   "*" for asterisk-form */
    const char *query;      uint32_t query_len;   /* after '?', excl.; NULL if none */
    http_method method_id;
    uint8_t     version_minor;                     /* 0 or 1 (1.x, x>1 => 1) */

    /* header fields; the caller points `headers` at an array of at least
     * limits->max_headers entries before parsing */
    http_header *headers;
    uint32_t     num_headers;

    /* derived framing */
    int64_t     content_length;   /* -1 when absent */
    bool        chunked;          /* Transfer-Encoding: chunked (final) */
    bool        keep_alive;       /* per version and Connection */
    bool        expect_continue;  /* Expect: 100-continue */
    bool        upgrade;          /* Connection: upgrade and an Upgrade field */
    const char *host;  uint32_t host_len;

    const char *error;            /* static text naming the rule broken */
} http_request;

/* Parses one request head from buf[0..len). prev_len is how many of these
 * bytes an earlier call (with the same buf) already saw and found incomplete;
 * the search for the end of the head resumes there, so a client sending one
 * byte at a time costs O(n), not O(n^2). Pass 0 on the first call.
 * Leading empty lines (CRLF) before the request line are skipped (RFC 9112
 * 2.2) and count in the bytes consumed. */
ssize_t http_parse_request(const char *buf, size_t len, size_t prev_len,
                           http_request *req, const http_limits *limits);

/* Finds a header by name, case-insensitively. Returns the first match. */
const http_header *http_find_header(const http_request *req,
                                    const char *name, size_t name_len);

/* ---- chunked transfer coding (RFC 9112 section 7.1) --------------------- */

typedef struct http_chunked {
    uint8_t  state;          /* private: where decoding resumes */
    bool     done;           /* the last chunk and trailers were read */
    uint64_t chunk_left;     /* bytes left in the current chunk */
    uint64_t total;          /* decoded body bytes so far */
    uint32_t meta_bytes;     /* size-line / extension / trailer bytes seen in
                                the current line, bounded */
    uint32_t trailer_bytes;  /* trailer section bytes, bounded */
} http_chunked;

/* Decodes in place. On entry buf[0..*len) is raw input that follows what
 * earlier calls consumed. On return buf[0..*len) holds the body bytes
 * decoded by this call (always a prefix of the input area).
 *   HTTP_AGAIN  all input consumed, the body is not complete yet
 *   >= 0        the body is complete (d->done); the return value counts the
 *               raw bytes after its end (the next pipelined request), which
 *               sit at the end of the original input area:
 *               buf[orig_len - ret .. orig_len)
 *   -400        malformed chunk size, extension, CRLF or trailer field
 *   -413        decoded body would exceed max_body
 * Trailer fields are validated like header fields and then discarded.
 * Zero-initialise d before the first call. */
ssize_t http_chunked_decode(http_chunked *d, char *buf, size_t *len,
                            uint64_t max_body);

#endif
