/* http_resp_parser — strict, zero-copy HTTP/1.1 response-head parser
 * (RFC 9110, 9112), the counterpart of http_parser for what a backend sends.
 *
 * The same contract as http_parse_request: a pure function over the
 * caller's bytes that never allocates and never writes to them, fills a
 * header array the caller bounds, and returns pointers into the buffer.
 *
 * It exists for the load balancer (src/proxy), which must never relay a
 * response it cannot frame exactly: every ambiguity a response-smuggling or
 * cache-poisoning attack needs (Content-Length with Transfer-Encoding,
 * differing lengths, obs-fold, bare CR/LF, codings other than chunked) is a
 * rejection, and the balancer answers its client 502 and closes the backend
 * connection. Framing is derived here once (RFC 9112 6.3):
 *
 *   no body          1xx, 204, 304, or the answer to a HEAD request
 *   chunked          Transfer-Encoding: chunked (decode with
 *                    http_chunked_decode from http_parser.h)
 *   content_length   Content-Length: N
 *   close_delimited  neither: the body ends when the backend closes
 *
 * Return convention of the parse call:
 *   > 0           bytes consumed (the response head, through the empty line)
 *   HTTP_AGAIN    need more bytes (-1)
 *   -502          reject; resp->error names the rule broken (a head over the
 *                 limits is rejected too: a proxy cannot relay it)
 */
#ifndef MYR_HTTP_RESP_PARSER_H
#define MYR_HTTP_RESP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "http/http_parser.h"

typedef struct http_response {
    /* status line */
    uint8_t     version_minor;    /* 0 or 1 (1.x, x>1 => 1) */
    int         status;           /* 100..599 */
    const char *reason;  uint32_t reason_len;   /* may be empty */

    /* header fields; the caller points `headers` at an array of at least
     * limits->max_headers entries before parsing */
    http_header *headers;
    uint32_t     num_headers;

    /* derived framing, exactly one of the four body kinds above */
    int64_t     content_length;   /* -1 when absent or no body */
    bool        chunked;
    bool        close_delimited;
    bool        no_body;
    bool        keep_alive;       /* the connection may carry another request:
                                     per version and Connection, and never
                                     after a close-delimited body */
    const char *error;            /* static text naming the rule broken */
} http_response;

/* Parses one response head from buf[0..len). prev_len: bytes an earlier call
 * with the same buf already scanned and found incomplete (0 on the first
 * call); the search for the end of the head resumes there. head_request:
 * the request was HEAD, so the response has no body whatever it says.
 * Limits: max_request_line bounds the status line, max_header_bytes the
 * whole head, max_headers the fields. */
ssize_t http_parse_response(const char *buf, size_t len, size_t prev_len,
                            http_response *resp, const http_limits *limits,
                            bool head_request);

/* Finds a header by name, case-insensitively. Returns the first match. */
const http_header *http_resp_find_header(const http_response *resp,
                                         const char *name, size_t name_len);

#endif
