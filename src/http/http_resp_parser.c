/* http_resp_parser.c — strict HTTP/1.1 response heads; see the header.
 *
 * Built like http_parser.c, in two passes over the caller's bytes:
 *
 *   1. resp_find_head() finds the end of the head (the first empty line),
 *      resuming the field lines at prev_len and enforcing the size limits
 *      before the head is whole; every LF must follow a CR.
 *   2. resp_parse_head() runs once over the complete head: the status line,
 *      then each field; framing facts are gathered per field and judged
 *      together at the end (resp_judge_framing), so the verdict does not
 *      depend on field order.
 *
 * Both passes look at bytes in buffer order and the limits are decided by
 * byte positions only, so a head fed in any number of pieces gets the same
 * verdict as in one piece.
 *
 * Policy where the RFCs leave a choice (a proxy must frame exactly what it
 * relays, so every doubt is a rejection):
 *   - no empty lines before the status line;
 *   - the reason phrase may be empty, with or without the SP before it;
 *   - Transfer-Encoding must be exactly "chunked" (once): the balancer
 *     re-frames bodies, so it cannot carry other codings through; chunked
 *     with parameters, empty elements, or in an HTTP/1.0 response are
 *     rejected, as is Transfer-Encoding on 1xx, 204 and 304;
 *   - Content-Length may repeat only with one value; with Transfer-Encoding
 *     it is rejected; on 1xx and 204 it must be 0;
 *   - a head longer than the limits is rejected (502), not truncated.
 *
 * Static names carry a resp_ prefix so a fuzz target may #include this file
 * together with http_parser.c.
 */
#include "http/http_resp_parser.h"

#include <string.h>

/* ---- character classes ---------------------------------------------------- */

enum {
    RC_TCHAR = 1 << 0,  /* RFC 9110 5.6.2 token character */
    RC_VALUE = 1 << 1,  /* field-vchar, obs-text, SP, HTAB: field values and
                           the reason phrase share this class */
};

#define RESP_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define RESP_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define RESP_TCHAR(c) (RESP_ALPHA(c) || RESP_DIGIT(c) || (c) == '!' || (c) == '#' || \
    (c) == '$' || (c) == '%' || (c) == '&' || (c) == '\'' || (c) == '*' ||        \
    (c) == '+' || (c) == '-' || (c) == '.' || (c) == '^' || (c) == '_' ||         \
    (c) == '`' || (c) == '|' || (c) == '~')
#define RESP_VALUE(c) ((c) == '\t' || ((c) >= 0x20 && (c) != 0x7f))
#define RESP_CLASS(c) ((RESP_TCHAR(c) ? RC_TCHAR : 0) | (RESP_VALUE(c) ? RC_VALUE : 0))
#define RESP_ROW(b) RESP_CLASS((b) + 0), RESP_CLASS((b) + 1), RESP_CLASS((b) + 2),   \
    RESP_CLASS((b) + 3), RESP_CLASS((b) + 4), RESP_CLASS((b) + 5),                 \
    RESP_CLASS((b) + 6), RESP_CLASS((b) + 7), RESP_CLASS((b) + 8),                 \
    RESP_CLASS((b) + 9), RESP_CLASS((b) + 10), RESP_CLASS((b) + 11),               \
    RESP_CLASS((b) + 12), RESP_CLASS((b) + 13), RESP_CLASS((b) + 14),              \
    RESP_CLASS((b) + 15)

static const uint8_t resp_cclass[256] = {
    RESP_ROW(0x00), RESP_ROW(0x10), RESP_ROW(0x20), RESP_ROW(0x30),
    RESP_ROW(0x40), RESP_ROW(0x50), RESP_ROW(0x60), RESP_ROW(0x70),
    RESP_ROW(0x80), RESP_ROW(0x90), RESP_ROW(0xa0), RESP_ROW(0xb0),
    RESP_ROW(0xc0), RESP_ROW(0xd0), RESP_ROW(0xe0), RESP_ROW(0xf0),
};

static inline bool resp_is(char c, unsigned cls)
{
    return resp_cclass[(uint8_t)c] & cls;
}

static inline bool resp_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool resp_ci_equal(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        x |= (unsigned char)(((unsigned)(x - 'A') < 26u) << 5);
        y |= (unsigned char)(((unsigned)(y - 'A') < 26u) << 5);
        if (x != y)
            return false;
    }
    return true;
}

#define RESP_CI_IS(p, n, lit) ((n) == sizeof(lit) - 1 && resp_ci_equal((p), (lit), (n)))
#define RESP_REJECT(resp, why) ((resp)->error = (why), (ssize_t)-502)

/* ---- pass 1: where does the head end? -------------------------------------- */

/* Returns the head's length (through the empty line), HTTP_AGAIN or -502;
 * *sl_lf gets the offset of the LF ending the status line. The status line
 * must end within max_request_line + 2 bytes and the head within
 * max_header_bytes; once a threshold is passed without the LF the verdict is
 * certain and given at once. */
static ssize_t resp_find_head(const char *buf, size_t len, size_t prev_len,
                              const http_limits *lim, http_response *resp, size_t *sl_lf)
{
    const size_t sl_max = (size_t)lim->max_request_line + 2;
    const size_t hd_max = lim->max_header_bytes;
    const size_t win = sl_max <= hd_max ? sl_max : hd_max;
    size_t scan = len < win ? len : win;

    /* reject garbage early: a head starts with "HTTP/" */
    size_t pre = scan < 5 ? scan : 5;
    if (memcmp(buf, "HTTP/", pre) != 0)
        return RESP_REJECT(resp, "not an HTTP response");
    const char *lf = memchr(buf, '\n', scan);
    if (lf == NULL) {
        if (len < win)
            return HTTP_AGAIN;
        return RESP_REJECT(resp, "status line or head too long");
    }
    size_t i = (size_t)(lf - buf);
    if (i == 0 || buf[i - 1] != '\r')
        return RESP_REJECT(resp, "bare LF line terminator");
    *sl_lf = i;

    size_t p = i + 1 > prev_len ? i + 1 : (prev_len < len ? prev_len : len);
    size_t win_end = len < hd_max ? len : hd_max;
    while (p < win_end && (lf = memchr(buf + p, '\n', win_end - p)) != NULL) {
        size_t j = (size_t)(lf - buf);
        if (buf[j - 1] != '\r')
            return RESP_REJECT(resp, "bare LF line terminator");
        if (buf[j - 2] == '\n')    /* j - 2 >= i: an empty line */
            return (ssize_t)(j + 1);
        p = j + 1;
    }
    if (len >= hd_max)
        return RESP_REJECT(resp, "response head too large");
    return HTTP_AGAIN;
}

/* ---- pass 2: the status line ------------------------------------------------- */

/* status-line = HTTP-version SP status-code [ SP reason-phrase ], line[0..n)
 * without its CRLF. */
static ssize_t resp_parse_status_line(http_response *resp, const char *line, size_t n)
{
    if (n < 12 || memcmp(line, "HTTP/", 5) != 0 || !RESP_DIGIT(line[5]) ||
        line[6] != '.' || !RESP_DIGIT(line[7]) || line[8] != ' ')
        return RESP_REJECT(resp, "malformed HTTP-version");
    if (line[5] != '1')
        return RESP_REJECT(resp, "HTTP major version not supported");
    resp->version_minor = line[7] != '0';
    const char *c = line + 9;
    if (!RESP_DIGIT(c[0]) || !RESP_DIGIT(c[1]) || !RESP_DIGIT(c[2]) ||
        c[0] < '1' || c[0] > '5')
        return RESP_REJECT(resp, "invalid status code");
    resp->status = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
    const char *r = c + 3, *end = line + n;
    if (r < end) {
        if (*r != ' ')
            return RESP_REJECT(resp, "invalid status code");
        r++;
    }
    for (const char *p = r; p < end; p++)
        if (!resp_is(*p, RC_VALUE))
            return RESP_REJECT(resp, "invalid character in reason phrase");
    resp->reason = r;
    resp->reason_len = (uint32_t)(end - r);
    return 0;
}

/* ---- pass 2: header fields --------------------------------------------------- */

typedef struct resp_facts {
    uint32_t te_chunked;      /* "chunked" elements seen */
    bool te_seen;
    bool conn_close, conn_keep_alive;
} resp_facts;

/* Iterates the comma-separated elements of v[0..n), OWS trimmed (possibly
 * empty); false when none is left. *pos carries the position. */
static bool resp_next_element(const char *v, size_t n, size_t *pos, const char **e,
                              size_t *elen)
{
    if (*pos > n)
        return false;
    const char *start = v + *pos, *end = v + n;
    const char *comma = memchr(start, ',', (size_t)(end - start));
    const char *stop = comma ? comma : end;
    *pos = comma ? (size_t)(comma - v) + 1 : n + 1;
    while (start < stop && resp_ows(*start))
        start++;
    while (stop > start && resp_ows(stop[-1]))
        stop--;
    *e = start;
    *elen = (size_t)(stop - start);
    return true;
}

static bool resp_is_token(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!resp_is(s[i], RC_TCHAR))
            return false;
    return n > 0;
}

static ssize_t resp_on_content_length(http_response *resp, const char *v, size_t n)
{
    const char *e;
    size_t elen, pos = 0;
    while (resp_next_element(v, n, &pos, &e, &elen)) {
        if (elen == 0)
            return RESP_REJECT(resp, "invalid Content-Length");
        int64_t cl = 0;
        for (size_t i = 0; i < elen; i++) {
            if (!RESP_DIGIT(e[i]))
                return RESP_REJECT(resp, "invalid Content-Length");
            if (cl > (INT64_MAX - (e[i] - '0')) / 10)
                return RESP_REJECT(resp, "Content-Length overflows");
            cl = cl * 10 + (e[i] - '0');
        }
        if (resp->content_length >= 0 && resp->content_length != cl)
            return RESP_REJECT(resp, "conflicting Content-Length values");
        resp->content_length = cl;
    }
    return 0;
}

static ssize_t resp_on_transfer_encoding(http_response *resp, resp_facts *f,
                                         const char *v, size_t n)
{
    const char *e;
    size_t elen, pos = 0;
    f->te_seen = true;
    while (resp_next_element(v, n, &pos, &e, &elen)) {
        if (!RESP_CI_IS(e, elen, "chunked"))
            return RESP_REJECT(resp, "transfer coding other than chunked");
        f->te_chunked++;
    }
    return 0;
}

static ssize_t resp_on_connection(http_response *resp, resp_facts *f, const char *v,
                                  size_t n)
{
    const char *e;
    size_t elen, pos = 0;
    while (resp_next_element(v, n, &pos, &e, &elen)) {
        if (elen == 0)
            continue;
        if (!resp_is_token(e, elen))
            return RESP_REJECT(resp, "invalid Connection option");
        if (RESP_CI_IS(e, elen, "close"))
            f->conn_close = true;
        else if (RESP_CI_IS(e, elen, "keep-alive"))
            f->conn_keep_alive = true;
    }
    return 0;
}

static ssize_t resp_on_field(http_response *resp, resp_facts *f, const http_header *h)
{
    const char *nm = h->name, *v = h->value;
    size_t n = h->value_len;
    switch (h->name_len) {
    case 10:
        if (RESP_CI_IS(nm, 10, "connection"))
            return resp_on_connection(resp, f, v, n);
        break;
    case 14:
        if (RESP_CI_IS(nm, 14, "content-length"))
            return resp_on_content_length(resp, v, n);
        break;
    case 17:
        if (RESP_CI_IS(nm, 17, "transfer-encoding"))
            return resp_on_transfer_encoding(resp, f, v, n);
        break;
    }
    return 0;
}

/* field-name ":" OWS field-value OWS CRLF at *pp; the head ends in CRLF CRLF,
 * so every scan stops inside it. */
static ssize_t resp_parse_field(http_response *resp, const char **pp, http_header *h)
{
    const char *p = *pp, *name = p;
    while (resp_is(*p, RC_TCHAR))
        p++;
    if (*p != ':') {
        if (p == name && resp_ows(*p))
            return RESP_REJECT(resp, "obs-fold or whitespace at line start");
        if (resp_ows(*p))
            return RESP_REJECT(resp, "whitespace before colon");
        return RESP_REJECT(resp, *p == '\r' ? "header line without colon"
                                            : "invalid character in field name");
    }
    if (p == name)
        return RESP_REJECT(resp, "empty field name");
    h->name = name;
    h->name_len = (uint32_t)(p - name);
    p++;
    while (resp_ows(*p))
        p++;
    const char *v = p;
    while (resp_is(*p, RC_VALUE))
        p++;
    if (*p != '\r')
        return RESP_REJECT(resp, *p == '\n' ? "bare LF line terminator"
                                            : "invalid character in field value");
    if (p[1] != '\n')
        return RESP_REJECT(resp, "bare CR");
    const char *ve = p;
    while (ve > v && resp_ows(ve[-1]))
        ve--;
    h->value = v;
    h->value_len = (uint32_t)(ve - v);
    *pp = p + 2;
    return 0;
}

/* RFC 9112 6.3, in the order a recipient must apply it, with the rejections
 * listed in the file comment. */
static ssize_t resp_judge_framing(http_response *resp, const resp_facts *f,
                                  bool head_request)
{
    int st = resp->status;
    bool bodiless_status = st < 200 || st == 204 || st == 304;
    if (f->te_seen) {
        if (resp->version_minor == 0)
            return RESP_REJECT(resp, "Transfer-Encoding in HTTP/1.0");
        if (f->te_chunked != 1)
            return RESP_REJECT(resp, "chunked must appear exactly once");
        if (resp->content_length >= 0)
            return RESP_REJECT(resp, "both Content-Length and Transfer-Encoding");
        if (bodiless_status)
            return RESP_REJECT(resp, "Transfer-Encoding on a response without body");
    }
    if ((st < 200 || st == 204) && resp->content_length > 0)
        return RESP_REJECT(resp, "Content-Length on a response without body");
    if (resp->version_minor == 1)
        resp->keep_alive = !f->conn_close;
    else
        resp->keep_alive = f->conn_keep_alive && !f->conn_close;
    if (bodiless_status || head_request) {
        resp->no_body = true;
        if (st < 200 || st == 204)
            resp->content_length = -1;
    } else if (f->te_seen) {
        resp->chunked = true;
    } else if (resp->content_length < 0) {
        resp->close_delimited = true;
        resp->keep_alive = false;
    }
    return 0;
}

static ssize_t resp_parse_head(const char *buf, size_t end, size_t sl_lf,
                               http_response *resp, const http_limits *lim,
                               bool head_request)
{
    ssize_t r = resp_parse_status_line(resp, buf, sl_lf - 1);
    if (r < 0)
        return r;
    resp_facts f = { 0 };
    const char *p = buf + sl_lf + 1, *last = buf + end - 2;
    while (p < last) {
        if (resp->num_headers >= lim->max_headers || resp->headers == NULL)
            return RESP_REJECT(resp, "too many header fields");
        http_header *h = &resp->headers[resp->num_headers];
        if ((r = resp_parse_field(resp, &p, h)) < 0)
            return r;
        if (resp_ows(*p))
            return RESP_REJECT(resp, "obs-fold or whitespace at line start");
        if ((r = resp_on_field(resp, &f, h)) < 0)
            return r;
        resp->num_headers++;
    }
    r = resp_judge_framing(resp, &f, head_request);
    return r < 0 ? r : (ssize_t)end;
}

ssize_t http_parse_response(const char *buf, size_t len, size_t prev_len,
                            http_response *resp, const http_limits *limits,
                            bool head_request)
{
    http_header *headers = resp->headers;   /* the caller's, kept */
    *resp = (http_response){ .headers = headers, .content_length = -1 };
    if (len == 0)
        return HTTP_AGAIN;
    size_t sl_lf = 0;
    ssize_t end = resp_find_head(buf, len, prev_len, limits, resp, &sl_lf);
    if (end < 0)
        return end;
    return resp_parse_head(buf, (size_t)end, sl_lf, resp, limits, head_request);
}

const http_header *http_resp_find_header(const http_response *resp,
                                         const char *name, size_t name_len)
{
    for (uint32_t i = 0; i < resp->num_headers; i++) {
        const http_header *h = &resp->headers[i];
        if (h->name_len == name_len && resp_ci_equal(h->name, name, name_len))
            return h;
    }
    return NULL;
}
