/* rewrite — the heads the balancer sends: a client's request as it goes to
 * a backend, and a backend's response as it goes to the client.
 *
 * Pure functions from a parsed head (pointing into the sender's bytes) to
 * new bytes appended to a buffer; nothing here knows sockets. What changes
 * on the way through (RFC 9110 7.6, RFC 9112 7, RFC 7239):
 *
 *   - hop-by-hop fields are dropped: Connection and every field it names,
 *     Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy and
 *     Proxy-*; Expect too (the balancer answers 100-continue itself);
 *   - framing is re-stated by the balancer (Content-Length or chunked), never
 *     copied, so what the next hop reads is exactly what was framed here;
 *   - requests go as HTTP/1.1 in origin-form with one Host field, and carry
 *     X-Forwarded-For (the client's address appended to any earlier list),
 *     X-Forwarded-Proto and Forwarded (the client's element appended);
 *   - responses go as HTTP/1.1 with the Connection field the client's side
 *     of the balancer needs.
 */
#ifndef MYR_PROXY_REWRITE_H
#define MYR_PROXY_REWRITE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "http/http_parser.h"
#include "http/http_resp_parser.h"

/* How a body travels on the wire the head announces. */
enum rewrite_framing {
    FRAME_NONE,      /* no body, nothing announced */
    FRAME_LENGTH,    /* Content-Length: n */
    FRAME_CHUNKED,   /* Transfer-Encoding: chunked */
    FRAME_CLOSE,     /* delimited by closing the connection (HTTP/1.0 clients) */
};

typedef struct rewrite_req_info {
    const char *client_ip;     /* numeric address, NUL-terminated */
    bool        client_ipv6;   /* Forwarded quotes it as "[addr]" */
    const char *proto;         /* "http" */
    const char *default_host;  /* Host when the request has none (HTTP/1.0) */
    enum rewrite_framing framing;   /* FRAME_NONE, _LENGTH or _CHUNKED */
    uint64_t    content_length;     /* with FRAME_LENGTH */
} rewrite_req_info;

/* Appends the request head for the backend. 0 or -ENOMEM. */
int rewrite_request(buf *out, const http_request *req, const rewrite_req_info *ri);

typedef struct rewrite_resp_info {
    enum rewrite_framing framing;
    uint64_t content_length;   /* with FRAME_LENGTH, or announced for HEAD/304 */
    bool     announce_length;  /* no body, but forward the backend's length
                                  (HEAD, 304) */
    bool     keep_alive;       /* the client connection stays open */
    uint8_t  client_minor;     /* the client's HTTP/1.x minor version */
} rewrite_resp_info;

/* Appends the response head for the client. An interim (1xx) response gets
 * no framing and no Connection field. 0 or -ENOMEM. */
int rewrite_response(buf *out, const http_response *resp, const rewrite_resp_info *ri);

/* True for a field a proxy never forwards (the fixed hop-by-hop set). */
bool rewrite_is_hop_field(const char *name, size_t len);

/* RFC 9110 9.2.2: the methods a retry cannot harm. */
bool rewrite_is_idempotent(http_method m);

#endif
