/* http_parser.c — strict HTTP/1.1 request heads and the chunked coding.
 *
 * The connection layer (http/conn) hands us the bytes it has buffered; we
 * answer "this many bytes are a request head", "need more" or "reject with
 * this status". Nothing is allocated, nothing in the input is written (except
 * by the chunked decoder, which compacts the body in place by design), and
 * every pointer we return points into the caller's buffer.
 *
 * A head is read in two passes:
 *
 *   1. find_head() locates the end of the head (the first empty line) with
 *      one memchr per line. It is the only part that runs on every call while
 *      a head is incomplete, so it resumes the field lines at prev_len (only
 *      the bounded request line is found again) and it enforces the size
 *      limits (414, 431) before the head is whole. Each LF it meets must
 *      follow a CR; anything else is rejected at once.
 *   2. parse_head() runs once over the complete head: the request line, then
 *      each field with table-driven scans (16 bytes at a time with SSE2 for
 *      values) that need no bounds checks, because the head is known to end
 *      in CR LF CR LF and CR/LF belong to no class a scan continues over.
 *      Framing facts are collected per field and judged together at the end
 *      (judge_framing), so their verdict does not depend on field order.
 *
 * The chunked decoder at the end of the file is a byte-resumable state
 * machine for the metadata and one memmove per run of data.
 *
 * Both passes check bytes in buffer order and find_head() decides its limits
 * from byte positions only, so a head fed in any number of pieces gets the
 * same verdict as in one piece.
 *
 * Decisions the RFCs leave to us (documented for the connection layer):
 *   - up to MAX_EMPTY_LINES empty lines before the request line are skipped,
 *     one more is a 400; they are not counted against the head limits;
 *   - a request line longer than max_request_line is 414 and a head longer
 *     than max_header_bytes 431; when both limits are crossed the one whose
 *     threshold lies first in the byte stream decides;
 *   - Transfer-Encoding: the final coding must be chunked (else 400), chunked
 *     only once (else 400); any other coding before it is 501 (we implement
 *     no other coding); parameters on chunked and empty list elements are
 *     400: both are classic ways to make two parsers disagree;
 *   - Content-Length may repeat (in one field as "5, 5" or in several fields)
 *     only with identical values; empty list elements are 400;
 *   - an absolute-form target's authority replaces the Host field value in
 *     req->host (RFC 9112 3.2.2: the server MUST ignore Host then); userinfo
 *     in it is 400 (RFC 9110 4.2.4);
 *   - Host (and an absolute-form authority) may contain only characters of
 *     uri-host ":" port; an empty Host is accepted;
 *   - CONNECT is 501 (we are not a proxy), as soon as its request line is
 *     known to be well formed;
 *   - when several rules are broken, syntax (400) outranks 501 outranks 417;
 *   - chunked: at most CHUNK_SIZE_DIGITS hex digits and a size below 2^63,
 *     CHUNK_LINE_MAX bytes per size or trailer line, TRAILER_MAX bytes of
 *     trailer section; beyond any of them 400.
 */
#include "http/http_parser.h"

#include <string.h>

#if defined(__SSE2__) && !defined(HTTP_PARSER_NO_SIMD)
#include <emmintrin.h>
#define HTTP_PARSER_SSE2 1
#endif

#define MAX_EMPTY_LINES   8        /* leading CRLFs skipped before 400 */
#define CHUNK_SIZE_DIGITS 16       /* hex digits in a chunk-size, incl. zeros */
#define CHUNK_LINE_MAX    4096     /* bytes of one size or trailer line */
#define TRAILER_MAX       16384    /* bytes of the whole trailer section */

/* ---- character classes ---------------------------------------------------
 *
 * One table, one bit per class, built at compile time from the RFC grammar
 * so each row can be checked against it by eye.
 */
enum {
    C_TCHAR  = 1 << 0,  /* RFC 9110 5.6.2 token character */
    C_VALUE  = 1 << 1,  /* field-vchar, obs-text, SP, HTAB (field-value) */
    C_TARGET = 1 << 2,  /* request-target byte: VCHAR (0x21-0x7E) */
    C_HOST   = 1 << 3,  /* uri-host [":" port]: unreserved, sub-delims,
                           pct-encoded, ':' and the IP-literal brackets */
    C_QDTEXT = 1 << 4,  /* quoted-string qdtext */
    C_HEX    = 1 << 5,  /* HEXDIG */
};

#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_TCHAR(c) (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '!' || (c) == '#' || \
    (c) == '$' || (c) == '%' || (c) == '&' || (c) == '\'' || (c) == '*' ||   \
    (c) == '+' || (c) == '-' || (c) == '.' || (c) == '^' || (c) == '_' ||    \
    (c) == '`' || (c) == '|' || (c) == '~')
#define IS_VALUE(c) ((c) == '\t' || ((c) >= 0x20 && (c) != 0x7f))
#define IS_TARGET(c) ((c) >= 0x21 && (c) <= 0x7e)
#define IS_HOST(c) (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '-' || (c) == '.' ||  \
    (c) == '_' || (c) == '~' || (c) == '!' || (c) == '$' || (c) == '&' ||    \
    (c) == '\'' || (c) == '(' || (c) == ')' || (c) == '*' || (c) == '+' ||   \
    (c) == ',' || (c) == ';' || (c) == '=' || (c) == '%' || (c) == ':' ||    \
    (c) == '[' || (c) == ']')
#define IS_QDTEXT(c) ((c) == '\t' || (c) == ' ' || (c) == 0x21 ||             \
    ((c) >= 0x23 && (c) <= 0x5b) || ((c) >= 0x5d && (c) <= 0x7e) || (c) >= 0x80)
#define IS_HEX(c) (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))

#define CLASS(c) ((IS_TCHAR(c) ? C_TCHAR : 0) | (IS_VALUE(c) ? C_VALUE : 0) |  \
    (IS_TARGET(c) ? C_TARGET : 0) | (IS_HOST(c) ? C_HOST : 0) |                \
    (IS_QDTEXT(c) ? C_QDTEXT : 0) | (IS_HEX(c) ? C_HEX : 0))
#define ROW(b) CLASS((b) + 0), CLASS((b) + 1), CLASS((b) + 2), CLASS((b) + 3),  \
    CLASS((b) + 4), CLASS((b) + 5), CLASS((b) + 6), CLASS((b) + 7),           \
    CLASS((b) + 8), CLASS((b) + 9), CLASS((b) + 10), CLASS((b) + 11),         \
    CLASS((b) + 12), CLASS((b) + 13), CLASS((b) + 14), CLASS((b) + 15)

static const uint8_t cclass[256] = {
    ROW(0x00), ROW(0x10), ROW(0x20), ROW(0x30), ROW(0x40), ROW(0x50),
    ROW(0x60), ROW(0x70), ROW(0x80), ROW(0x90), ROW(0xa0), ROW(0xb0),
    ROW(0xc0), ROW(0xd0), ROW(0xe0), ROW(0xf0),
};

static inline bool is_class(char c, unsigned cls)
{
    return cclass[(uint8_t)c] & cls;
}

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static inline unsigned char to_lower(unsigned char c)
{
    return c | (unsigned char)(((unsigned)(c - 'A') < 26u) << 5);
}

/* Case-insensitive equality of a[0..n) and b[0..n). */
static bool ci_equal(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (to_lower((unsigned char)a[i]) != to_lower((unsigned char)b[i]))
            return false;
    return true;
}

#define CI_IS(p, n, lit) ((n) == sizeof(lit) - 1 && ci_equal((p), (lit), (n)))

/* Rejects with status and names the rule; evaluates to -status. */
#define REJECT(req, status, why) ((req)->error = (why), (ssize_t)-(status))

/* ---- pass 1: where does the head end? ------------------------------------ */

/* Byte offsets (from buf) of the pieces of a head found by find_head(). */
typedef struct head_span {
    size_t start;   /* first byte of the request line (after empty lines) */
    size_t rl_lf;   /* the LF ending the request line */
} head_span;

/* Skips the empty lines allowed before a request line. Returns the offset of
 * the request line, HTTP_AGAIN or -400. */
static ssize_t skip_empty_lines(const char *buf, size_t len, http_request *req)
{
    size_t p = 0;
    for (int n = 0; p < len && (buf[p] == '\r' || buf[p] == '\n'); n++) {
        if (buf[p] == '\n')
            return REJECT(req, 400, "bare LF line terminator");
        if (p + 1 == len)
            return HTTP_AGAIN;
        if (buf[p + 1] != '\n')
            return REJECT(req, 400, "bare CR");
        if (n == MAX_EMPTY_LINES)
            return REJECT(req, 400, "too many empty lines before request line");
        p += 2;
    }
    return p < len ? (ssize_t)p : HTTP_AGAIN;
}

/* Finds the LF ending the request line that starts at s. Returns its offset,
 * HTTP_AGAIN or -status.
 *
 * Limits are positions: a request line whose LF lies at or past
 * s + max_request_line + 2 is 414; a head whose final LF lies at or past
 * s + max_header_bytes is 431. When a threshold is reached without seeing
 * that LF the verdict is already certain, so it is given at once; when both
 * apply to the request line, the nearer threshold names the status. */
static ssize_t find_request_line(const char *buf, size_t len, size_t s,
                                 const http_limits *lim, http_request *req)
{
    const size_t rl_max = (size_t)lim->max_request_line + 2;   /* incl. CRLF */
    const size_t hd_max = lim->max_header_bytes;
    const size_t win = rl_max <= hd_max ? rl_max : hd_max;
    const size_t avail = len - s, scan = avail < win ? avail : win;

    /* The method comes first on the line: reject garbage (a TLS hello, a
     * stray binary protocol) now rather than after a whole line of it. */
    size_t m = 0;
    while (m < scan && is_class(buf[s + m], C_TCHAR))
        m++;
    if (m < scan && (buf[s + m] != ' ' || m == 0))
        return REJECT(req, 400, "invalid method token");

    const char *lf = memchr(buf + s, '\n', scan);
    if (lf == NULL) {
        if (avail < win)
            return HTTP_AGAIN;
        return rl_max <= hd_max ? REJECT(req, 414, "request line too long")
                                : REJECT(req, 431, "request head too large");
    }
    if (lf[-1] != '\r')            /* lf > buf + s: buf[s] is not CR or LF */
        return REJECT(req, 400, "bare LF line terminator");
    return lf - buf;
}

/* Finds the end of the head in buf[0..len). Returns the head's length (through
 * the empty line), HTTP_AGAIN or -status; fills *span.
 *
 * Only the field lines are resumed at prev_len: the request line (at most
 * max_request_line bytes, usually a few dozen) is found again on each call,
 * which keeps this function free of state between calls. */
static ssize_t find_head(const char *buf, size_t len, size_t prev_len,
                         const http_limits *lim, http_request *req, head_span *span)
{
    ssize_t r = skip_empty_lines(buf, len, req);
    if (r < 0)
        return r;
    size_t s = (size_t)r;
    if ((r = find_request_line(buf, len, s, lim, req)) < 0)
        return r;
    size_t i = (size_t)r;
    span->start = s;
    span->rl_lf = i;

    /* LFs before prev_len were checked by the call that saw those bytes and
     * none of them ended the head. */
    const size_t hd_max = lim->max_header_bytes;
    size_t p = i + 1 > prev_len ? i + 1 : (prev_len < len ? prev_len : len);
    size_t win_end = len - s < hd_max ? len : s + hd_max;
    const char *lf;
    while (p < win_end && (lf = memchr(buf + p, '\n', win_end - p)) != NULL) {
        size_t j = (size_t)(lf - buf);
        if (buf[j - 1] != '\r')
            return REJECT(req, 400, "bare LF line terminator");
        if (buf[j - 2] == '\n')     /* j - 2 >= i: an empty line */
            return (ssize_t)(j + 1);
        p = j + 1;
    }
    if (len - s >= hd_max)
        return REJECT(req, 431, "request head too large");
    return HTTP_AGAIN;
}

/* ---- pass 2: the request line -------------------------------------------- */

static http_method method_id(const char *m, size_t n)
{
#define M_IS(lit) (n == sizeof(lit) - 1 && memcmp(m, lit, sizeof(lit) - 1) == 0)
    switch (n) {   /* method names are case-sensitive (RFC 9110 9.1) */
    case 3: return M_IS("GET") ? HTTP_GET : M_IS("PUT") ? HTTP_PUT : HTTP_OTHER;
    case 4: return M_IS("HEAD") ? HTTP_HEAD : M_IS("POST") ? HTTP_POST : HTTP_OTHER;
    case 5: return M_IS("PATCH") ? HTTP_PATCH : M_IS("TRACE") ? HTTP_TRACE : HTTP_OTHER;
    case 6: return M_IS("DELETE") ? HTTP_DELETE : HTTP_OTHER;
    case 7: return M_IS("OPTIONS") ? HTTP_OPTIONS : M_IS("CONNECT") ? HTTP_CONNECT : HTTP_OTHER;
    default: return HTTP_OTHER;
    }
#undef M_IS
}

/* Splits path and query at the first '?' of t[0..n). */
static void split_query(http_request *req, const char *t, size_t n)
{
    const char *q = memchr(t, '?', n);
    req->path = t;
    req->path_len = (uint32_t)(q ? (size_t)(q - t) : n);
    if (q) {
        req->query = q + 1;
        req->query_len = (uint32_t)(n - (size_t)(q + 1 - t));
    }
}

static bool is_host_text(const char *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_class(h[i], C_HOST))
            return false;
    return true;
}

/* absolute-form: "http" ["s"] "://" authority [path-abempty] ["?" query].
 * The path is "/" when empty: we point at the second '/' of "://" so that
 * every pointer we return stays inside the caller's buffer. */
static ssize_t parse_absolute(http_request *req, const char *t, size_t n, size_t scheme)
{
    const char *a = t + scheme, *end = t + n, *e = a;
    while (e < end && *e != '/' && *e != '?')
        e++;
    if (e == a)
        return REJECT(req, 400, "empty authority in absolute-form");
    if (memchr(a, '@', (size_t)(e - a)))
        return REJECT(req, 400, "userinfo in request-target");
    if (!is_host_text(a, (size_t)(e - a)))
        return REJECT(req, 400, "invalid authority in absolute-form");
    req->host = a;
    req->host_len = (uint32_t)(e - a);
    if (e < end && *e == '/') {
        split_query(req, e, (size_t)(end - e));
    } else {
        req->path = a - 1;
        req->path_len = 1;
        if (e < end) {           /* *e == '?' */
            req->query = e + 1;
            req->query_len = (uint32_t)(end - e - 1);
        }
    }
    return 0;
}

/* Classifies the request-target (RFC 9112 3.2) and fills path and query. */
static ssize_t parse_target(http_request *req)
{
    const char *t = req->target;
    size_t n = req->target_len;
    if (memchr(t, '#', n))
        return REJECT(req, 400, "fragment in request-target");
    if (t[0] == '/') {
        split_query(req, t, n);
        return 0;
    }
    if (n == 1 && t[0] == '*') {
        if (req->method_id != HTTP_OPTIONS)
            return REJECT(req, 400, "asterisk-form without OPTIONS");
        req->path = t;
        req->path_len = 1;
        return 0;
    }
    if (n > 7 && ci_equal(t, "http://", 7))
        return parse_absolute(req, t, n, 7);
    if (n > 8 && ci_equal(t, "https://", 8))
        return parse_absolute(req, t, n, 8);
    return REJECT(req, 400, "invalid request-target form");
}

/* request-line = method SP request-target SP HTTP-version, line[0..n) with
 * its CRLF removed. The method was checked token-only by find_head(). */
static ssize_t parse_request_line(http_request *req, const char *line, size_t n)
{
    const char *p = line, *end = line + n;
    while (is_class(*p, C_TCHAR))
        p++;
    req->method = line;
    req->method_len = (uint32_t)(p - line);   /* *p == ' ', see find_head */
    req->method_id = method_id(line, req->method_len);

    const char *t = ++p;
    while (p < end && is_class(*p, C_TARGET))
        p++;
    if (p == t)
        return REJECT(req, 400, "empty request-target");
    if (p == end || *p != ' ')
        return REJECT(req, 400, "invalid character in request-target");
    req->target = t;
    req->target_len = (uint32_t)(p - t);

    const char *v = p + 1;
    if (end - v != 8 || memcmp(v, "HTTP/", 5) != 0 || !IS_DIGIT(v[5]) ||
        v[6] != '.' || !IS_DIGIT(v[7]))
        return REJECT(req, 400, "malformed HTTP-version");
    if (v[5] != '1')
        return REJECT(req, 505, "HTTP major version not supported");
    req->version_minor = v[7] != '0';

    if (req->method_id == HTTP_CONNECT)
        return REJECT(req, 501, "CONNECT not supported");
    return parse_target(req);
}

/* ---- pass 2: header fields ----------------------------------------------- */

/* Framing facts gathered field by field, judged together at the end. */
typedef struct field_facts {
    uint32_t hosts;           /* Host fields seen */
    uint32_t te_chunked;      /* "chunked" codings seen across TE fields */
    bool te_seen;             /* a Transfer-Encoding field */
    bool te_last_chunked;     /* the last coding so far is chunked */
    bool te_unknown;          /* a coding other than chunked */
    bool conn_close, conn_keep_alive, conn_upgrade;
    bool upgrade_field;       /* an Upgrade field */
    bool expect_other;        /* an Expect other than 100-continue */
    const char *host; uint32_t host_len;
} field_facts;

/* Iterates the comma-separated elements of v[0..n): on each call sets
 * *e and *elen to the next element with OWS trimmed (possibly empty) and returns
 * false when none is left. *pos carries the position between calls. */
static bool next_element(const char *v, size_t n, size_t *pos, const char **e, size_t *elen)
{
    if (*pos > n)
        return false;
    const char *start = v + *pos, *end = v + n;
    const char *c = memchr(start, ',', (size_t)(end - start));
    const char *stop = c ? c : end;
    *pos = c ? (size_t)(c - v) + 1 : n + 1;
    while (start < stop && is_ows(*start))
        start++;
    while (stop > start && is_ows(stop[-1]))
        stop--;
    *e = start;
    *elen = (size_t)(stop - start);
    return true;
}

static bool is_token(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_class(s[i], C_TCHAR))
            return false;
    return n > 0;
}

/* Content-Length = 1*DIGIT; "5, 5" and repeated fields allowed when equal. */
static ssize_t on_content_length(http_request *req, const char *v, size_t n)
{
    const char *e;
    size_t elen, pos = 0;
    while (next_element(v, n, &pos, &e, &elen)) {
        if (elen == 0)
            return REJECT(req, 400, "invalid Content-Length");
        int64_t cl = 0;
        for (size_t i = 0; i < elen; i++) {
            if (!IS_DIGIT(e[i]))
                return REJECT(req, 400, "invalid Content-Length");
            if (cl > (INT64_MAX - (e[i] - '0')) / 10)
                return REJECT(req, 400, "Content-Length overflows");
            cl = cl * 10 + (e[i] - '0');
        }
        if (req->content_length >= 0 && req->content_length != cl)
            return REJECT(req, 400, "conflicting Content-Length values");
        req->content_length = cl;
    }
    return 0;
}

/* Transfer-Encoding = #transfer-coding; see the file comment for policy. */
static ssize_t on_transfer_encoding(http_request *req, field_facts *f,
                                    const char *v, size_t n)
{
    const char *e;
    size_t elen, pos = 0;
    f->te_seen = true;
    while (next_element(v, n, &pos, &e, &elen)) {
        const char *semi = memchr(e, ';', elen);
        size_t nlen = semi ? (size_t)(semi - e) : elen;
        while (nlen > 0 && is_ows(e[nlen - 1]))
            nlen--;
        if (!is_token(e, nlen))
            return REJECT(req, 400, "invalid Transfer-Encoding element");
        if (CI_IS(e, nlen, "chunked")) {
            if (semi)
                return REJECT(req, 400, "parameters on chunked");
            f->te_chunked++;
            f->te_last_chunked = true;
        } else {
            f->te_unknown = true;
            f->te_last_chunked = false;
        }
    }
    return 0;
}

/* Connection = #connection-option; empty elements are ignored (RFC 9110
 * 5.6.1.2), any other non-token is 400. */
static ssize_t on_connection(http_request *req, field_facts *f, const char *v, size_t n)
{
    const char *e;
    size_t elen, pos = 0;
    while (next_element(v, n, &pos, &e, &elen)) {
        if (elen == 0)
            continue;
        if (!is_token(e, elen))
            return REJECT(req, 400, "invalid Connection option");
        if (CI_IS(e, elen, "close"))
            f->conn_close = true;
        else if (CI_IS(e, elen, "keep-alive"))
            f->conn_keep_alive = true;
        else if (CI_IS(e, elen, "upgrade"))
            f->conn_upgrade = true;
    }
    return 0;
}

/* Records what a field means for framing. Name dispatch is on length first,
 * so most fields cost one switch. */
static ssize_t on_field(http_request *req, field_facts *f, const http_header *h)
{
    const char *nm = h->name, *v = h->value;
    size_t n = h->value_len;
    switch (h->name_len) {
    case 4:
        if (CI_IS(nm, 4, "host")) {
            if (++f->hosts > 1)
                return REJECT(req, 400, "more than one Host");
            if (!is_host_text(v, n))
                return REJECT(req, 400, "invalid Host");
            f->host = v;
            f->host_len = (uint32_t)n;
        }
        break;
    case 6:
        if (CI_IS(nm, 6, "expect")) {
            if (CI_IS(v, n, "100-continue"))
                req->expect_continue = true;
            else
                f->expect_other = true;
        }
        break;
    case 7:
        if (CI_IS(nm, 7, "upgrade"))
            f->upgrade_field = true;
        break;
    case 10:
        if (CI_IS(nm, 10, "connection"))
            return on_connection(req, f, v, n);
        break;
    case 14:
        if (CI_IS(nm, 14, "content-length"))
            return on_content_length(req, v, n);
        break;
    case 17:
        if (CI_IS(nm, 17, "transfer-encoding"))
            return on_transfer_encoding(req, f, v, n);
        break;
    }
    return 0;
}

/* Returns the first byte at or after p that is not field-value text. The
 * head ends in CR LF before end, so there is one. With SSE2, 16 bytes are
 * checked per step for the bytes a value may not hold (C0 controls, DEL;
 * bytes >= 0x80 are negative as signed and so fall outside the compare);
 * HTAB is a control that values may hold, so it is stepped over here. */
static inline const char *skip_value(const char *p, const char *end)
{
#ifdef HTTP_PARSER_SSE2
    const __m128i zero = _mm_setzero_si128(), sp = _mm_set1_epi8(0x20),
                  del = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i ctl = _mm_andnot_si128(_mm_cmplt_epi8(v, zero), _mm_cmplt_epi8(v, sp));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(ctl, _mm_cmpeq_epi8(v, del)));
        if (mask == 0) {
            p += 16;
            continue;
        }
        p += __builtin_ctz(mask);
        if (*p != '\t')
            return p;
        p++;
    }
#else
    (void)end;
#endif
    while (is_class(*p, C_VALUE))
        p++;
    return p;
}

/* Reads one field line at *pp: field-name ":" OWS field-value OWS CRLF.
 * The head ends in CRLF CRLF before end, so the scans stop inside it. */
static ssize_t parse_field(http_request *req, const char **pp, const char *end,
                           http_header *h)
{
    const char *p = *pp, *name = p;
    while (is_class(*p, C_TCHAR))
        p++;
    if (*p != ':') {
        if (p == name && is_ows(*p))
            return REJECT(req, 400, "obs-fold or whitespace at line start");
        if (is_ows(*p))
            return REJECT(req, 400, "whitespace before colon");
        if (*p == '\r' && p[1] != '\n')
            return REJECT(req, 400, "bare CR");
        return REJECT(req, 400, *p == '\r' ? "header line without colon"
                                           : "invalid character in field name");
    }
    if (p == name)
        return REJECT(req, 400, "empty field name");
    h->name = name;
    h->name_len = (uint32_t)(p - name);
    p++;
    while (is_ows(*p))
        p++;
    const char *v = p;
    p = skip_value(p, end);
    if (*p != '\r')
        return REJECT(req, 400, *p == '\n' ? "bare LF line terminator"
                                           : "invalid character in field value");
    if (p[1] != '\n')
        return REJECT(req, 400, "bare CR");
    const char *ve = p;
    while (ve > v && is_ows(ve[-1]))
        ve--;
    h->value = v;
    h->value_len = (uint32_t)(ve - v);
    *pp = p + 2;
    return 0;
}

/* Judges the collected facts: the framing rules of RFC 9112 6.1-6.3 and the
 * Host and Expect rules. Syntax errors (400) outrank 501 outranks 417. */
static ssize_t judge_framing(http_request *req, const field_facts *f)
{
    if (f->hosts == 0 && req->version_minor == 1)
        return REJECT(req, 400, "HTTP/1.1 request without Host");
    if (f->te_seen) {
        if (req->version_minor == 0)
            return REJECT(req, 400, "Transfer-Encoding in HTTP/1.0");
        if (req->content_length >= 0)
            return REJECT(req, 400, "both Content-Length and Transfer-Encoding");
        if (f->te_chunked > 1)
            return REJECT(req, 400, "chunked applied more than once");
        if (!f->te_last_chunked)
            return REJECT(req, 400, "final transfer coding is not chunked");
        if (f->te_unknown)
            return REJECT(req, 501, "transfer coding not implemented");
        req->chunked = true;
    }
    if (f->expect_other)
        return REJECT(req, 417, "unsupported expectation");
    if (req->version_minor == 0)          /* RFC 9110 10.1.1: MUST ignore */
        req->expect_continue = false;
    if (req->host == NULL) {              /* absolute-form set it already */
        req->host = f->host;
        req->host_len = f->host_len;
    }
    if (req->version_minor == 1)
        req->keep_alive = !f->conn_close;
    else
        req->keep_alive = f->conn_keep_alive && !f->conn_close;
    req->upgrade = f->conn_upgrade && f->upgrade_field;
    return 0;
}

/* Parses the complete head buf[span->start .. end). */
static ssize_t parse_head(const char *buf, size_t end, const head_span *span,
                          http_request *req, const http_limits *lim)
{
    ssize_t r = parse_request_line(req, buf + span->start,
                                   span->rl_lf - 1 - span->start);
    if (r < 0)
        return r;
    field_facts f = {0};
    const char *p = buf + span->rl_lf + 1, *last = buf + end - 2;
    while (p < last) {   /* p lands exactly on last, see parse_field */
        if (req->num_headers >= lim->max_headers || req->headers == NULL)
            return REJECT(req, 431, "too many header fields");
        http_header *h = &req->headers[req->num_headers];
        if ((r = parse_field(req, &p, buf + end, h)) < 0)
            return r;
        /* a continuation line belongs to this field: name the fold, not
         * whatever the truncated value looks like */
        if (is_ows(*p))
            return REJECT(req, 400, "obs-fold or whitespace at line start");
        if ((r = on_field(req, &f, h)) < 0)
            return r;
        req->num_headers++;
    }
    r = judge_framing(req, &f);
    return r < 0 ? r : (ssize_t)end;
}

static void request_reset(http_request *req)
{
    http_header *headers = req->headers;   /* the caller's, kept */
    *req = (http_request){0};
    req->headers = headers;
    req->content_length = -1;
}

ssize_t http_parse_request(const char *buf, size_t len, size_t prev_len,
                           http_request *req, const http_limits *limits)
{
    request_reset(req);
    head_span span;
    ssize_t end = find_head(buf, len, prev_len, limits, req, &span);
    if (end < 0)
        return end;
    return parse_head(buf, (size_t)end, &span, req, limits);
}

const http_header *http_find_header(const http_request *req,
                                    const char *name, size_t name_len)
{
    for (uint32_t i = 0; i < req->num_headers; i++) {
        const http_header *h = &req->headers[i];
        if (h->name_len == name_len && ci_equal(h->name, name, name_len))
            return h;
    }
    return NULL;
}

/* ---- chunked transfer coding ----------------------------------------------
 *
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
 *
 * Data bytes are moved down over the metadata with one memmove per run; the
 * metadata goes through step_meta() one byte at a time, its state in d->state
 * so a call may stop after any byte. d->meta_bytes counts the bytes of the
 * current size line including the one being stepped, so in CS_SIZE it is the
 * number of digits read counting this byte; d->chunk_left accumulates the
 * size there.
 */
enum chunk_state {
    CS_SIZE = 0,      /* chunk-size digits (zero state: a fresh decoder) */
    CS_SIZE_BWS,      /* BWS after the size, ';' must follow */
    CS_EXT_START,     /* after ';': BWS then an extension name */
    CS_EXT_NAME,
    CS_EXT_NAME_BWS,  /* BWS after a name: '=' or ';' must follow */
    CS_EXT_EQ,        /* after '=': BWS then token or quoted-string */
    CS_EXT_TOKEN,
    CS_EXT_QS,        /* inside a quoted-string */
    CS_EXT_QS_ESC,    /* after a backslash in it */
    CS_EXT_VAL_END,   /* right after a value: BWS, ';' or CR */
    CS_EXT_VAL_BWS,   /* BWS after a value: ';' must follow */
    CS_SIZE_LF,       /* CR of the size line seen */
    CS_DATA,          /* chunk_left data bytes to go */
    CS_DATA_CR,       /* CRLF after the data */
    CS_DATA_LF,
    CS_TRAILER_START, /* start of a trailer line, or the final CRLF */
    CS_TRAILER_NAME,
    CS_TRAILER_VALUE,
    CS_TRAILER_LF,
    CS_FINAL_LF,
    CS_DONE,
};

/* Where a size-line byte leads after an extension name, token or value:
 * ';' starts another extension, CR ends the line. */
static int after_ext(char c, int ws_state)
{
    if (is_ows(c))
        return ws_state;
    if (c == ';')
        return CS_EXT_START;
    if (c == '\r')
        return CS_SIZE_LF;
    return -1;
}

/* One byte of a size line (CS_SIZE .. CS_SIZE_LF). Returns the next state or
 * -1 for a syntax error. */
static int step_size_line(http_chunked *d, char c, uint64_t max_body, int *status)
{
    switch (d->state) {
    case CS_SIZE:
        if (is_class(c, C_HEX)) {
            if (d->meta_bytes > CHUNK_SIZE_DIGITS || d->chunk_left > (INT64_MAX >> 4))
                return -1;
            unsigned v = IS_DIGIT(c) ? (unsigned)(c - '0') : (unsigned)(to_lower((unsigned char)c) - 'a' + 10);
            d->chunk_left = d->chunk_left << 4 | v;
            return CS_SIZE;
        }
        if (d->meta_bytes == 1)
            return -1;                      /* no digit at all */
        return is_ows(c) ? CS_SIZE_BWS : after_ext(c, -1);
    case CS_SIZE_BWS:
        return is_ows(c) ? CS_SIZE_BWS : c == ';' ? CS_EXT_START : -1;
    case CS_EXT_START:
        return is_ows(c) ? CS_EXT_START : is_class(c, C_TCHAR) ? CS_EXT_NAME : -1;
    case CS_EXT_NAME:
        if (is_class(c, C_TCHAR))
            return CS_EXT_NAME;
        return c == '=' ? CS_EXT_EQ : after_ext(c, CS_EXT_NAME_BWS);
    case CS_EXT_NAME_BWS:
        return is_ows(c) ? CS_EXT_NAME_BWS : c == '=' ? CS_EXT_EQ
             : c == ';' ? CS_EXT_START : -1;
    case CS_EXT_EQ:
        return is_ows(c) ? CS_EXT_EQ : c == '"' ? CS_EXT_QS
             : is_class(c, C_TCHAR) ? CS_EXT_TOKEN : -1;
    case CS_EXT_TOKEN:
        return is_class(c, C_TCHAR) ? CS_EXT_TOKEN : after_ext(c, CS_EXT_VAL_BWS);
    case CS_EXT_QS:
        return c == '"' ? CS_EXT_VAL_END : c == '\\' ? CS_EXT_QS_ESC
             : is_class(c, C_QDTEXT) ? CS_EXT_QS : -1;
    case CS_EXT_QS_ESC:
        return is_class(c, C_VALUE) ? CS_EXT_QS : -1;
    case CS_EXT_VAL_END:
        return after_ext(c, CS_EXT_VAL_BWS);
    case CS_EXT_VAL_BWS:
        return is_ows(c) ? CS_EXT_VAL_BWS : c == ';' ? CS_EXT_START : -1;
    case CS_SIZE_LF:
        if (c != '\n')
            return -1;
        d->meta_bytes = 0;
        if (d->chunk_left == 0)
            return CS_TRAILER_START;
        if (d->chunk_left > max_body - d->total) {
            *status = 413;
            return -1;
        }
        return CS_DATA;
    }
    return -1;
}

/* One byte after the data of a chunk or in the trailer section. */
static int step_after_data(http_chunked *d, char c)
{
    switch (d->state) {
    case CS_DATA_CR:
        return c == '\r' ? CS_DATA_LF : -1;
    case CS_DATA_LF:
        return c == '\n' ? CS_SIZE : -1;
    case CS_TRAILER_START:
        return c == '\r' ? CS_FINAL_LF : is_class(c, C_TCHAR) ? CS_TRAILER_NAME : -1;
    case CS_TRAILER_NAME:
        return is_class(c, C_TCHAR) ? CS_TRAILER_NAME : c == ':' ? CS_TRAILER_VALUE : -1;
    case CS_TRAILER_VALUE:
        return is_class(c, C_VALUE) ? CS_TRAILER_VALUE : c == '\r' ? CS_TRAILER_LF : -1;
    case CS_TRAILER_LF:
        return c == '\n' ? CS_TRAILER_START : -1;
    case CS_FINAL_LF:
        return c == '\n' ? CS_DONE : -1;
    }
    return -1;
}

/* Advances the decoder over one metadata byte. Returns 0 or -status. */
static int step_meta(http_chunked *d, char c, uint64_t max_body)
{
    int next, status = 400;
    if (d->state <= CS_SIZE_LF) {
        if (++d->meta_bytes > CHUNK_LINE_MAX)
            return -400;
        next = step_size_line(d, c, max_body, &status);
    } else {
        if (d->state >= CS_TRAILER_START &&
            (++d->trailer_bytes > TRAILER_MAX || ++d->meta_bytes > CHUNK_LINE_MAX))
            return -400;
        next = step_after_data(d, c);
        if (next == CS_TRAILER_START)
            d->meta_bytes = 0;      /* a trailer line ended */
    }
    if (next < 0)
        return -status;
    d->state = (uint8_t)next;
    return 0;
}

ssize_t http_chunked_decode(http_chunked *d, char *buf, size_t *len, uint64_t max_body)
{
    size_t n = *len, r = 0, w = 0;
    *len = 0;
    if (d->done)
        return (ssize_t)n;
    while (r < n) {
        if (d->state == CS_DATA) {
            size_t k = n - r < d->chunk_left ? n - r : (size_t)d->chunk_left;
            memmove(buf + w, buf + r, k);
            w += k;
            r += k;
            d->chunk_left -= k;
            d->total += k;
            if (d->chunk_left == 0)
                d->state = CS_DATA_CR;
            continue;
        }
        int rc = step_meta(d, buf[r++], max_body);
        if (rc < 0) {
            *len = w;
            return rc;
        }
        if (d->state == CS_DONE) {
            d->done = true;
            *len = w;
            return (ssize_t)(n - r);
        }
    }
    *len = w;
    return HTTP_AGAIN;
}
