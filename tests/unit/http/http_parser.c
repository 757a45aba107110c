/* Unit tests for src/http/http_parser.c: the strict request-head parser and
 * the chunked decoder.
 *
 * Most rules are tested through tables of raw requests with the status the
 * RFCs (and our documented policy) call for. Every table entry goes through
 * run_case(), which parses it in one shot, as growing prefixes with and
 * without prev_len resumption, and split in two at every byte, and requires
 * the same verdict every way. Inputs are copied to exact-size heap buffers so
 * that AddressSanitizer sees any read past the caller's bytes, and compared
 * afterwards to prove the parser never writes to them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_parser.c"

#define MAXH 32
static const http_limits LIM = { .max_request_line = 1024,
                                 .max_header_bytes = 8192,
                                 .max_headers = MAXH };

/* ---- helpers ------------------------------------------------------------- */

static char *dup_exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

/* Parses raw[0..len) from an exact-size copy; checks the copy is untouched. */
static ssize_t parse_copy(const char *raw, size_t len, size_t prev, http_request *req,
                          http_header *hs, const http_limits *lim, char **keep)
{
    char *b = dup_exact(raw, len);
    *req = (http_request){ .headers = hs };
    ssize_t r = http_parse_request(b, len, prev, req, lim);
    assert_memory_equal(b, raw, len);
    if (r < 0 && r != HTTP_AGAIN)
        assert_non_null(req->error);
    if (r > 0)
        assert_null(req->error);
    if (keep)
        *keep = b;
    else
        free(b);
    return r;
}

static ssize_t parse_str(const char *raw, http_request *req, http_header *hs)
{
    /* req points into the copy, so it lives until the next call */
    static char *last;
    free(last);
    return parse_copy(raw, strlen(raw), 0, req, hs, &LIM, &last);
}

#define OFF(p, base) ((p) ? (ptrdiff_t)((p) - (base)) : (ptrdiff_t)-1)

/* Two results for the same bytes in two buffers must be the same request. */
static void assert_same_request(const http_request *a, const char *ab,
                                const http_request *b, const char *bb)
{
    assert_int_equal(OFF(a->method, ab), OFF(b->method, bb));
    assert_int_equal(a->method_len, b->method_len);
    assert_int_equal(OFF(a->target, ab), OFF(b->target, bb));
    assert_int_equal(a->target_len, b->target_len);
    assert_int_equal(OFF(a->path, ab), OFF(b->path, bb));
    assert_int_equal(a->path_len, b->path_len);
    assert_int_equal(OFF(a->query, ab), OFF(b->query, bb));
    assert_int_equal(a->query_len, b->query_len);
    assert_int_equal(a->method_id, b->method_id);
    assert_int_equal(a->version_minor, b->version_minor);
    assert_int_equal(a->num_headers, b->num_headers);
    for (uint32_t i = 0; i < a->num_headers; i++) {
        assert_int_equal(OFF(a->headers[i].name, ab), OFF(b->headers[i].name, bb));
        assert_int_equal(a->headers[i].name_len, b->headers[i].name_len);
        assert_int_equal(OFF(a->headers[i].value, ab), OFF(b->headers[i].value, bb));
        assert_int_equal(a->headers[i].value_len, b->headers[i].value_len);
    }
    assert_int_equal(a->content_length, b->content_length);
    assert_int_equal(a->chunked, b->chunked);
    assert_int_equal(a->keep_alive, b->keep_alive);
    assert_int_equal(a->expect_continue, b->expect_continue);
    assert_int_equal(a->upgrade, b->upgrade);
    assert_int_equal(OFF(a->host, ab), OFF(b->host, bb));
    assert_int_equal(a->host_len, b->host_len);
}

typedef struct rcase {
    const char *name;
    const char *raw;
    size_t      len;
    ssize_t     want;   /* 0: the whole input is one accepted head */
} rcase;

#define C(name, raw, want) { name, raw, sizeof(raw) - 1, want }
#define OK 0

/* The verdict for raw must not depend on how its bytes arrive. */
static void run_case_lim(const rcase *c, const http_limits *lim)
{
    http_header h1[MAXH], h2[MAXH];
    http_request one, part;
    char *ob, *pb;
    ssize_t want = c->want == OK ? (ssize_t)c->len : c->want;
    ssize_t r = parse_copy(c->raw, c->len, 0, &one, h1, lim, &ob);
    if (r != want)
        fail_msg("case '%s': one-shot got %zd want %zd (%s)", c->name, r, want,
                 one.error ? one.error : "no error");

    /* growing prefixes, resuming at the previous length, then from 0 */
    for (int resume = 0; resume < 2; resume++) {
        size_t prev = 0, k;
        for (k = 1; k <= c->len; k++) {
            r = parse_copy(c->raw, k, resume ? prev : 0, &part, h2, lim, &pb);
            if (r != HTTP_AGAIN)
                break;
            prev = k;
            free(pb);
        }
        if (k > c->len)
            fail_msg("case '%s': never complete when fed byte by byte", c->name);
        if (r != want)
            fail_msg("case '%s': at prefix %zu got %zd want %zd (%s)", c->name, k, r,
                     want, part.error ? part.error : "no error");
        if (want > 0) {
            assert_int_equal(k, (size_t)want);
            assert_same_request(&one, ob, &part, pb);
        }
        free(pb);
    }

    /* two pieces: a first call on the prefix, then one resuming there */
    for (size_t cut = 1; cut < c->len; cut++) {
        r = parse_copy(c->raw, cut, 0, &part, h2, lim, NULL);
        if (r != HTTP_AGAIN)
            continue;   /* decided earlier: covered by the prefix loop */
        r = parse_copy(c->raw, c->len, cut, &part, h2, lim, &pb);
        if (r != want)
            fail_msg("case '%s': split at %zu got %zd want %zd", c->name, cut, r, want);
        if (want > 0)
            assert_same_request(&one, ob, &part, pb);
        free(pb);
    }
    free(ob);
}

static void run_cases(const rcase *cs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        run_case_lim(&cs[i], &LIM);
}

#define RUN(cs) run_cases(cs, sizeof(cs) / sizeof(cs[0]))

/* ---- request line -------------------------------------------------------- */

static void test_request_line(void **state)
{
    static const rcase cs[] = {
        C("simple GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", OK),
        C("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", OK),
        C("unknown but valid method", "PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n", OK),
        C("lower-case method is a token", "get / HTTP/1.1\r\nHost: a\r\n\r\n", OK),
        C("tchar symbols in method", "M-SEARCH! /x HTTP/1.1\r\nHost: a\r\n\r\n", OK),
        C("invalid char in method", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
        C("empty method", " / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
        C("NUL in method", "G\0ET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
        C("TLS hello bytes", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", -400),
        C("double SP after method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
        C("double SP before version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", -400),
        C("HTAB as separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
        C("trailing SP", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -400),
        C("missing version", "GET /\r\nHost: a\r\n\r\n", -400),
        C("missing target", "GET HTTP/1.1\r\nHost: a\r\n\r\n", -400),
        C("bare CR in request line", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", -400),
        C("bare LF ends request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", -400),
        C("CONNECT is not implemented", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", -501),
        C("CONNECT with bad version is 400", "CONNECT a:443 HTTP/1\r\nHost: a\r\n\r\n", -400),
    };
    RUN(cs);
}

/* req->error names the rule that was broken. */
static void test_error_names(void **state)
{
    static const struct { const char *raw; const char *error; } es[] = {
        { "M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n", "asterisk-form without OPTIONS" },
        { "GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n", "whitespace before colon" },
        { "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", "obs-fold or whitespace at line start" },
        { "GET / HTTP/1.1\nHost: a\r\n\r\n", "bare LF line terminator" },
        { "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", "bare CR" },
        { "GET / HTTP/2.0\r\n\r\n", "HTTP major version not supported" },
        { "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 request without Host" },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
          "both Content-Length and Transfer-Encoding" },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n",
          "transfer coding not implemented" },
        { "POST / HTTP/1.1\r\nHost: a\r\nExpect: x\r\n\r\n", "unsupported expectation" },
    };
    for (size_t i = 0; i < sizeof(es) / sizeof(es[0]); i++) {
        http_request req;
        http_header hs[MAXH];
        assert_true(parse_str(es[i].raw, &req, hs) < -1);
        assert_string_equal(req.error, es[i].error);
    }
}

static void test_version(void **state)
{
    static const rcase cs[] = {
        C("HTTP/1.1", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", OK),
        C("HTTP/1.2 is 1.1 and needs Host", "GET / HTTP/1.2\r\n\r\n", -400),
        C("HTTP/1.9 with Host", "GET / HTTP/1.9\r\nHost: a\r\n\r\n", OK),
        C("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", -505),
        C("HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", -505),
        C("HTTP/3.0", "GET / HTTP/3.0\r\n\r\n", -505),
        C("lower-case http", "GET / http/1.1\r\nHost: a\r\n\r\n", -400),
        C("two-digit minor", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", -400),
        C("no minor", "GET / HTTP/1\r\nHost: a\r\n\r\n", -400),
        C("no dot", "GET / HTTP/11\r\nHost: a\r\n\r\n", -400),
        C("letter minor", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", -400),
        C("two-digit major", "GET / HTTP/11.1\r\nHost: a\r\n\r\n", -400),
        C("not HTTP", "GET / FTP/1.1\r\nHost: a\r\n\r\n", -400),
    };
    RUN(cs);

    http_request req;
    http_header hs[MAXH];
    assert_true(parse_str("GET / HTTP/1.0\r\n\r\n", &req, hs) > 0);
    assert_int_equal(req.version_minor, 0);
    assert_true(parse_str("GET / HTTP/1.7\r\nHost: a\r\n\r\n", &req, hs) > 0);
    assert_int_equal(req.version_minor, 1);
}

static void test_target(void **state)
{
    static const rcase cs[] = {
        C("origin-form", "GET /a/b?c=d HTTP/1.1\r\nHost: a\r\n\r\n", OK),
        C("absolute-form", "GET http://h.example/p?q HTTP/1.1\r\nHost: h.example\r\n\r\n", OK),
        C("absolute-form https upper", "GET HTTPS://H.EXAMPLE:8443 HTTP/1.1\r\nHost: x\r\n\r\n", OK),
        C("absolute-form empty authority", "GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n", -400),
        C("absolute-form scheme only", "GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", -400),
        C("absolute-form userinfo", "GET http://u:p@h/ HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("absolute-form bad authority", "GET http://h\"x/ HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("other scheme", "GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("scheme without slashes", "GET http:/x HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("relative path", "GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("asterisk with OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", OK),
        C("asterisk with GET", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("asterisk plus path", "OPTIONS */x HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("authority-form without CONNECT", "GET h.example:443 HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("fragment", "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("CTL in target", "GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("non-ASCII in target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("NUL in target", "GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("HTAB in target", "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("SP in target", "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", -400),
    };
    RUN(cs);
}

static void test_path_query_split(void **state)
{
    http_request req;
    http_header hs[MAXH];
    assert_true(parse_str("GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\n\r\n", &req, hs) > 0);
    assert_int_equal(req.path_len, 4);
    assert_memory_equal(req.path, "/a/b", 4);
    assert_int_equal(req.query_len, 7);
    assert_memory_equal(req.query, "x=1&y=2", 7);
    assert_int_equal(req.target_len, 12);

    assert_true(parse_str("GET /a HTTP/1.1\r\nHost: h\r\n\r\n", &req, hs) > 0);
    assert_null(req.query);
    assert_int_equal(req.query_len, 0);

    assert_true(parse_str("GET /a? HTTP/1.1\r\nHost: h\r\n\r\n", &req, hs) > 0);
    assert_non_null(req.query);
    assert_int_equal(req.query_len, 0);
    assert_int_equal(req.path_len, 2);

    assert_true(parse_str("GET /a?b?c HTTP/1.1\r\nHost: h\r\n\r\n", &req, hs) > 0);
    assert_int_equal(req.query_len, 3);
    assert_memory_equal(req.query, "b?c", 3);

    assert_true(parse_str("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &req, hs) > 0);
    assert_int_equal(req.path_len, 1);
    assert_memory_equal(req.path, "*", 1);
    assert_null(req.query);
}

static void test_absolute_form_fields(void **state)
{
    http_request req;
    http_header hs[MAXH];
    const char *raw = "GET http://h.example:81/p/q?x HTTP/1.1\r\nHost: other\r\n\r\n";
    assert_true(parse_str(raw, &req, hs) > 0);
    assert_int_equal(req.path_len, 4);
    assert_memory_equal(req.path, "/p/q", 4);
    assert_int_equal(req.query_len, 1);
    assert_memory_equal(req.query, "x", 1);
    /* RFC 9112 3.2.2: the target's authority wins over Host */
    assert_int_equal(req.host_len, 12);
    assert_memory_equal(req.host, "h.example:81", 12);

    raw = "GET hTTp://h HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_true(parse_str(raw, &req, hs) > 0);
    assert_int_equal(req.path_len, 1);
    assert_memory_equal(req.path, "/", 1);
    assert_null(req.query);
    /* the "/" lies inside the caller's target */
    assert_true(req.path >= req.target && req.path < req.target + req.target_len);

    raw = "GET https://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_true(parse_str(raw, &req, hs) > 0);
    assert_int_equal(req.path_len, 1);
    assert_memory_equal(req.path, "/", 1);
    assert_int_equal(req.query_len, 3);
    assert_memory_equal(req.query, "q=1", 3);
}

static void test_method_ids(void **state)
{
    static const struct { const char *m; http_method id; } ms[] = {
        { "GET", HTTP_GET }, { "HEAD", HTTP_HEAD }, { "POST", HTTP_POST },
        { "PUT", HTTP_PUT }, { "DELETE", HTTP_DELETE }, { "OPTIONS", HTTP_OPTIONS },
        { "PATCH", HTTP_PATCH }, { "TRACE", HTTP_TRACE }, { "get", HTTP_OTHER },
        { "PURGE", HTTP_OTHER }, { "GETS", HTTP_OTHER }, { "POS", HTTP_OTHER },
    };
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        char raw[128];
        snprintf(raw, sizeof(raw), "%s /x HTTP/1.1\r\nHost: h\r\n\r\n", ms[i].m);
        http_request req;
        http_header hs[MAXH];
        assert_int_equal(parse_str(raw, &req, hs), (ssize_t)strlen(raw));
        assert_int_equal(req.method_id, ms[i].id);
        assert_int_equal(req.method_len, strlen(ms[i].m));
        assert_memory_equal(req.method, ms[i].m, req.method_len);
    }
}

/* ---- header fields ------------------------------------------------------- */

static void test_field_syntax(void **state)
{
    static const rcase cs[] = {
        C("OWS around value", "GET / HTTP/1.1\r\nHost: h\r\nX:  \t v \t \r\n\r\n", OK),
        C("empty value", "GET / HTTP/1.1\r\nHost: h\r\nX:\r\n\r\n", OK),
        C("HTAB inside value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\tb\r\n\r\n", OK),
        C("obs-text in value", "GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\xff\r\n\r\n", OK),
        C("all tchar in name", "GET / HTTP/1.1\r\nHost: h\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n", OK),
        C("obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", -400),
        C("obs-fold with HTAB", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", -400),
        C("whitespace before first field", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", -400),
        C("SP before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", -400),
        C("HTAB before colon", "GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", -400),
        C("empty name", "GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", -400),
        C("no colon", "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", -400),
        C("non-tchar in name", "GET / HTTP/1.1\r\nHost: h\r\nX(Y): v\r\n\r\n", -400),
        C("at-sign in name", "GET / HTTP/1.1\r\nHost: h\r\nX@Y: v\r\n\r\n", -400),
        C("non-ASCII in name", "GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: v\r\n\r\n", -400),
        C("NUL in name", "GET / HTTP/1.1\r\nHost: h\r\nX\0Y: v\r\n\r\n", -400),
        C("NUL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", -400),
        C("CTL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01" "b\r\n\r\n", -400),
        C("ESC in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x1b[31m\r\n\r\n", -400),
        C("DEL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f" "b\r\n\r\n", -400),
        C("DEL in name", "GET / HTTP/1.1\r\nHost: h\r\nX\x7fY: v\r\n\r\n", -400),
        C("VT in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\vb\r\n\r\n", -400),
        C("bare CR in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", -400),
        C("bare CR ends value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\r\n\r\n", -400),
        C("bare CR ends name", "GET / HTTP/1.1\r\nHost: h\r\nX\rY: v\r\n\r\n", -400),
        C("bare LF ends field", "GET / HTTP/1.1\r\nHost: h\nX: v\r\n\r\n", -400),
        C("bare LF ends head", "GET / HTTP/1.1\r\nHost: h\r\n\n", -400),
        C("LF LF ends head", "GET / HTTP/1.1\nHost: h\n\n", -400),
        C("bare LF inside value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n", -400),
        /* long values, with more fields after, take the 16-byte-block scan */
#define LONG_A "0123456789abcdefghijklmnopqrstuv"
#define AFTER "\r\nY-After: 0123456789abcdefghij\r\n\r\n"
        C("long value", "GET / HTTP/1.1\r\nHost: h\r\nX: " LONG_A LONG_A AFTER, OK),
        C("long value HTABs", "GET / HTTP/1.1\r\nHost: h\r\nX: " LONG_A "\t\t" LONG_A "\t" LONG_A AFTER, OK),
        C("long value obs-text", "GET / HTTP/1.1\r\nHost: h\r\nX: " LONG_A "\x80\xff\xc3\xa9" LONG_A AFTER, OK),
        C("long value CTL", "GET / HTTP/1.1\r\nHost: h\r\nX: " LONG_A "\x01" LONG_A AFTER, -400),
        C("long value CTL after HTAB", "GET / HTTP/1.1\r\nHost: h\r\nX: " LONG_A "\t\x1f" LONG_A AFTER, -400),
        C("long value DEL", "GET / HTTP/1.1\r\nHost: h\r\nX: " LONG_A "0123\x7f" LONG_A AFTER, -400),
        C("long value NUL", "GET / HTTP/1.1\r\nHost: h\r\nX: " LONG_A "\0" LONG_A AFTER, -400),
        C("long value bare CR", "GET / HTTP/1.1\r\nHost: h\r\nX: " LONG_A "\r" LONG_A AFTER, -400),
        C("long value bare LF", "GET / HTTP/1.1\r\nHost: h\r\nX: " LONG_A "\n" LONG_A AFTER, -400),
        C("long value ESC at block end", "GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789abcde\x1b" LONG_A AFTER, -400),
#undef LONG_A
#undef AFTER
    };
    RUN(cs);
}

static void test_field_values(void **state)
{
    http_request req;
    http_header hs[MAXH];
    const char *raw = "GET / HTTP/1.1\r\nHost: h\r\nX-A:  \t v 1 \t \r\nx-empty:\r\n"
                      "X-Tab:\ta\tb\t\r\n\r\n";
    assert_int_equal(parse_str(raw, &req, hs), (ssize_t)strlen(raw));
    assert_int_equal(req.num_headers, 4);
    assert_int_equal(hs[0].name_len, 4);
    assert_memory_equal(hs[0].name, "Host", 4);
    assert_int_equal(hs[1].name_len, 3);
    assert_memory_equal(hs[1].name, "X-A", 3);
    assert_int_equal(hs[1].value_len, 3);
    assert_memory_equal(hs[1].value, "v 1", 3);
    assert_int_equal(hs[2].value_len, 0);
    assert_non_null(hs[2].value);
    assert_int_equal(hs[3].value_len, 3);
    assert_memory_equal(hs[3].value, "a\tb", 3);
    assert_int_equal(req.content_length, -1);
    assert_false(req.chunked);
    assert_true(req.keep_alive);
    assert_false(req.expect_continue);
    assert_false(req.upgrade);
    assert_int_equal(req.host_len, 1);
    assert_memory_equal(req.host, "h", 1);
}

static void test_find_header(void **state)
{
    http_request req;
    http_header hs[MAXH];
    const char *raw = "GET / HTTP/1.1\r\nHost: h\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n";
    assert_true(parse_str(raw, &req, hs) > 0);
    const http_header *h = http_find_header(&req, "X-DUP", 5);
    assert_non_null(h);
    assert_memory_equal(h->value, "1", 1);
    assert_ptr_equal(http_find_header(&req, "host", 4), &hs[0]);
    assert_null(http_find_header(&req, "X-Du", 4));
    assert_null(http_find_header(&req, "X-Dupe", 6));
    assert_null(http_find_header(&req, "Content-Length", 14));
    /* '-' must not match '\r' or other bytes that fold to it with | 0x20 */
    assert_null(http_find_header(&req, "X\rDUP", 5));
    assert_null(http_find_header(&req, "X\x0d" "dup", 5));
}

/* ---- framing fields ------------------------------------------------------ */

static void test_content_length(void **state)
{
    static const rcase cs[] = {
        C("CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", OK),
        C("CL zero", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", OK),
        C("CL leading zeros", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n", OK),
        C("CL int64 max", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n", OK),
        C("CL int64 max + 1", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n", -400),
        C("CL huge", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", -400),
        C("CL list of equal values", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5 ,5\r\n\r\n", OK),
        C("CL repeated equal fields", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", OK),
        C("CL list of different values", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", -400),
        C("CL different fields", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", -400),
        C("CL empty", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", -400),
        C("CL empty element", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n", -400),
        C("CL plus sign", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", -400),
        C("CL negative", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", -400),
        C("CL hex", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n", -400),
        C("CL space inside", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5 5\r\n\r\n", -400),
        C("CL trailing junk", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5a\r\n\r\n", -400),
        C("CL with TE", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
        C("TE with CL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", -400),
    };
    RUN(cs);

    http_request req;
    http_header hs[MAXH];
    assert_true(parse_str("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", &req, hs) > 0);
    assert_int_equal(req.content_length, 5);
    assert_true(parse_str("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n", &req, hs) > 0);
    assert_true(req.content_length == INT64_MAX);
    assert_true(parse_str("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", &req, hs) > 0);
    assert_int_equal(req.content_length, 0);
}

static void test_transfer_encoding(void **state)
{
    static const rcase cs[] = {
        C("TE chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", OK),
        C("TE Chunked case", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n", OK),
        C("TE trailing OWS", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  chunked \t\r\n\r\n", OK),
        C("TE gzip only", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", -400),
        C("TE gzip, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", -501),
        C("TE two fields gzip then chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", -501),
        C("TE identity, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity, chunked\r\n\r\n", -501),
        C("TE chunked, gzip", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", -400),
        C("TE chunked, identity", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n", -400),
        C("TE chunked twice", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", -400),
        C("TE chunked in two fields", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
        C("TE xchunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", -400),
        C("TE chunkedx", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunkedx\r\n\r\n", -400),
        C("TE chunked with parameter", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", -400),
        C("TE gzip with parameter, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip;level=1, chunked\r\n\r\n", -501),
        C("TE empty element first", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked\r\n\r\n", -400),
        C("TE empty element last", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,\r\n\r\n", -400),
        C("TE empty value", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", -400),
        C("TE quoted", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", -400),
        C("TE space inside", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chun ked\r\n\r\n", -400),
        C("TE space before colon", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n", -400),
        C("TE obs-folded", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", -400),
        C("TE vertical tab", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \vchunked\r\n\r\n", -400),
        C("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
    };
    RUN(cs);

    http_request req;
    http_header hs[MAXH];
    assert_true(parse_str("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", &req, hs) > 0);
    assert_true(req.chunked);
    assert_int_equal(req.content_length, -1);
    assert_int_equal(parse_str("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", &req, hs), -400);
    assert_false(req.chunked);
}

static void test_host(void **state)
{
    static const rcase cs[] = {
        C("Host with port", "GET / HTTP/1.1\r\nHost: h.example:8080\r\n\r\n", OK),
        C("Host IPv6", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", OK),
        C("empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", OK),
        C("HOST upper-case name", "GET / HTTP/1.1\r\nHOST: h\r\n\r\n", OK),
        C("no Host in 1.1", "GET / HTTP/1.1\r\nX: y\r\n\r\n", -400),
        C("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", -400),
        C("two Hosts in 1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", -400),
        C("Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", -400),
        C("Host with HTAB", "GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", -400),
        C("Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", -400),
        C("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", -400),
        C("Host non-ASCII", "GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", -400),
        C("Host list", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", -400),
    };
    RUN(cs);

    http_request req;
    http_header hs[MAXH];
    assert_true(parse_str("GET / HTTP/1.1\r\nHost:  h.example:8080 \r\n\r\n", &req, hs) > 0);
    assert_int_equal(req.host_len, 14);
    assert_memory_equal(req.host, "h.example:8080", 14);
    assert_true(parse_str("GET / HTTP/1.1\r\nHost:\r\n\r\n", &req, hs) > 0);
    assert_non_null(req.host);
    assert_int_equal(req.host_len, 0);
    assert_true(parse_str("GET / HTTP/1.0\r\n\r\n", &req, hs) > 0);
    assert_null(req.host);
}

static void test_expect(void **state)
{
    static const rcase cs[] = {
        C("Expect 100-continue", "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", OK),
        C("Expect case-insensitive", "POST / HTTP/1.1\r\nHost: h\r\nexpect: 100-Continue\r\n\r\n", OK),
        C("Expect other", "POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", -417),
        C("Expect list", "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue, x\r\n\r\n", -417),
        C("Expect empty", "POST / HTTP/1.1\r\nHost: h\r\nExpect:\r\n\r\n", -417),
        C("Expect 417 outranked by 400", "POST / HTTP/1.1\r\nExpect: nope\r\n\r\n", -400),
        C("Expect 417 outranked by 501", "POST / HTTP/1.1\r\nHost: h\r\nExpect: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", -501),
    };
    RUN(cs);

    http_request req;
    http_header hs[MAXH];
    assert_true(parse_str("POST / HTTP/1.1\r\nHost: h\r\nExpect:  100-continue \r\n\r\n", &req, hs) > 0);
    assert_true(req.expect_continue);
    assert_true(parse_str("POST / HTTP/1.1\r\nHost: h\r\n\r\n", &req, hs) > 0);
    assert_false(req.expect_continue);
    /* RFC 9110 10.1.1: a 100-continue in an HTTP/1.0 request is ignored */
    assert_true(parse_str("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &req, hs) > 0);
    assert_false(req.expect_continue);
}

static void test_keep_alive(void **state)
{
    static const struct { const char *raw; bool ka; } ks[] = {
        { "GET / HTTP/1.1\r\nHost: h\r\n\r\n", true },
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false },
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\n", false },
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", true },
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n", false },
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: foo ,\t close \r\n\r\n", false },
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: , ,close,\r\n\r\n", false },
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n", true },
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: x\r\nConnection: close\r\n\r\n", false },
        { "GET / HTTP/1.0\r\n\r\n", false },
        { "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true },
        { "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true },
        { "GET / HTTP/1.0\r\nConnection: upgrade, keep-alive\r\n\r\n", true },
        { "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false },
        { "GET / HTTP/1.0\r\nConnection: keep-alives\r\n\r\n", false },
        { "GET / HTTP/1.0\r\nKeep-Alive: 1\r\n\r\n", false },
    };
    for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
        http_request req;
        http_header hs[MAXH];
        if (parse_str(ks[i].raw, &req, hs) <= 0)
            fail_msg("keep-alive case %zu rejected: %s", i, req.error);
        if (req.keep_alive != ks[i].ka)
            fail_msg("keep-alive case %zu: got %d", i, req.keep_alive);
    }
    static const rcase cs[] = {
        C("Connection non-token", "GET / HTTP/1.1\r\nHost: h\r\nConnection: a b\r\n\r\n", -400),
        C("Connection quoted", "GET / HTTP/1.1\r\nHost: h\r\nConnection: \"close\"\r\n\r\n", -400),
    };
    RUN(cs);
}

static void test_upgrade(void **state)
{
    static const struct { const char *raw; bool up; } us[] = {
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true },
        { "GET / HTTP/1.1\r\nHost: h\r\nupgrade: h2c\r\nconnection: keep-alive, upgrade\r\n\r\n", true },
        { "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", false },
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n", false },
        { "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrades\r\nUpgrade: x\r\n\r\n", false },
    };
    for (size_t i = 0; i < sizeof(us) / sizeof(us[0]); i++) {
        http_request req;
        http_header hs[MAXH];
        assert_true(parse_str(us[i].raw, &req, hs) > 0);
        if (req.upgrade != us[i].up)
            fail_msg("upgrade case %zu: got %d", i, req.upgrade);
    }
}

/* ---- framing of the head itself ------------------------------------------ */

static void test_leading_empty_lines(void **state)
{
    static const rcase cs[] = {
        C("one empty line", "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", OK),
        C("eight empty lines",
          "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", OK),
        C("nine empty lines",
          "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("bare LF empty line", "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("bare CR empty line", "\r\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", -400),
        C("SP line before request", " \r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", -400),
    };
    RUN(cs);

    http_request req;
    http_header hs[MAXH];
    const char *raw = "\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(parse_str(raw, &req, hs), (ssize_t)strlen(raw));
    assert_int_equal(req.method_len, 3);
    assert_memory_equal(req.method, "GET", 3);
    assert_int_equal(http_parse_request("\r\n", 2, 0, &req, &LIM), HTTP_AGAIN);
    assert_int_equal(http_parse_request("\r", 1, 0, &req, &LIM), HTTP_AGAIN);
    assert_int_equal(http_parse_request("", 0, 0, &req, &LIM), HTTP_AGAIN);
}

static void test_pipelined(void **state)
{
    const char *raw = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
                      "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
                      "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t len = strlen(raw), first = strlen("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n");
    http_request req;
    http_header hs[MAXH];
    char *b = dup_exact(raw, len);
    req.headers = hs;
    ssize_t r = http_parse_request(b, len, 0, &req, &LIM);
    assert_int_equal(r, (ssize_t)first);
    assert_memory_equal(req.path, "/1", 2);

    size_t at = (size_t)r;
    r = http_parse_request(b + at, len - at, 0, &req, &LIM);
    assert_true(r > 0);
    assert_memory_equal(req.path, "/2", 2);
    assert_int_equal(req.content_length, 2);
    at += (size_t)r + 2;   /* the body */
    r = http_parse_request(b + at, len - at, 0, &req, &LIM);
    assert_int_equal(r, (ssize_t)(len - at));
    assert_memory_equal(req.path, "/3", 2);
    free(b);
}

static void test_prev_len_resumption(void **state)
{
    /* a prev_len inside the final CRLF CRLF must still find the end */
    const char *raw = "GET / HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n";
    size_t len = strlen(raw);
    http_request req;
    http_header hs[MAXH];
    for (size_t prev = 0; prev < len; prev++) {
        req = (http_request){ .headers = hs };
        if (http_parse_request(raw, prev, 0, &req, &LIM) != HTTP_AGAIN)
            fail_msg("prefix %zu not AGAIN", prev);
        if (http_parse_request(raw, len, prev, &req, &LIM) != (ssize_t)len)
            fail_msg("resume at %zu failed: %s", prev, req.error);
        assert_int_equal(req.num_headers, 2);
    }
    /* prev_len larger than len is clamped, not trusted */
    assert_int_equal(http_parse_request(raw, len - 3, len, &req, &LIM), HTTP_AGAIN);
}

/* ---- limits -------------------------------------------------------------- */

static void test_limit_request_line(void **state)
{
    const http_limits lim = { .max_request_line = 16, .max_header_bytes = 4096, .max_headers = 8 };
    /* "GET /0123456789A HTTP/1.1" is 25 bytes; we need exactly 16 */
    static const rcase cs[] = {
        C("line of exactly 16", "GET /23 HTTP/1.1\r\nHost: h\r\n\r\n", OK),
        C("line of 17", "GET /234 HTTP/1.1\r\nHost: h\r\n\r\n", -414),
        C("long line, bad char after limit", "GET /2345678901234567890\x01 HTTP/1.1\r\n\r\n", -414),
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
        run_case_lim(&cs[i], &lim);

    /* incomplete: 17 bytes of a line could still end in CRLF after 16+CR */
    http_request req;
    http_header hs[8];
    char line[64];
    memset(line, 'a', sizeof(line));
    memcpy(line, "GET /", 5);
    assert_int_equal(parse_copy(line, 17, 0, &req, hs, &lim, NULL), HTTP_AGAIN);
    assert_int_equal(parse_copy(line, 18, 0, &req, hs, &lim, NULL), -414);
    assert_string_equal(req.error, "request line too long");
    assert_int_equal(parse_copy(line, 64, 0, &req, hs, &lim, NULL), -414);
    assert_int_equal(parse_copy(line, 64, 17, &req, hs, &lim, NULL), -414);
    /* a CR at the last allowed byte keeps it pending */
    memcpy(line, "GET /23 HTTP/1.1\r", 17);
    assert_int_equal(parse_copy(line, 17, 0, &req, hs, &lim, NULL), HTTP_AGAIN);
}

static void test_limit_head_bytes(void **state)
{
    const char *raw = "GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789\r\n\r\n";
    size_t len = strlen(raw);
    http_limits lim = { .max_request_line = 1024, .max_header_bytes = (uint32_t)len, .max_headers = 8 };
    rcase c = { "head of exactly the limit", raw, len, OK };
    run_case_lim(&c, &lim);
    lim.max_header_bytes = (uint32_t)len - 1;
    c = (rcase){ "head one byte over", raw, len, -431 };
    run_case_lim(&c, &lim);

    /* incomplete and already too large: decided without the end */
    http_request req;
    http_header hs[8];
    char big[300];
    size_t n = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: h\r\nX: ");
    memset(big + n, 'v', sizeof(big) - n);
    lim.max_header_bytes = 100;
    assert_int_equal(parse_copy(big, 99, 0, &req, hs, &lim, NULL), HTTP_AGAIN);
    assert_int_equal(parse_copy(big, 100, 99, &req, hs, &lim, NULL), -431);
    assert_string_equal(req.error, "request head too large");
    assert_int_equal(parse_copy(big, 300, 0, &req, hs, &lim, NULL), -431);

    /* the request line limit above the head limit: the head limit decides */
    lim = (http_limits){ .max_request_line = 500, .max_header_bytes = 50, .max_headers = 8 };
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    assert_int_equal(parse_copy(big, 49, 0, &req, hs, &lim, NULL), HTTP_AGAIN);
    assert_int_equal(parse_copy(big, 50, 0, &req, hs, &lim, NULL), -431);
}

static void test_limit_header_count(void **state)
{
    http_limits lim = { .max_request_line = 1024, .max_header_bytes = 4096, .max_headers = 3 };
    static const rcase ok = C("three fields", "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", OK);
    static const rcase over = C("four fields", "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", -431);
    run_case_lim(&ok, &lim);
    run_case_lim(&over, &lim);

    /* the array past max_headers is never written */
    http_header hs[5];
    memset(hs, 0xAB, sizeof(hs));
    http_request req = { .headers = hs };
    assert_int_equal(http_parse_request(over.raw, over.len, 0, &req, &lim), -431);
    const unsigned char *guard = (const unsigned char *)&hs[3];
    for (size_t i = 0; i < 2 * sizeof(http_header); i++)
        assert_int_equal(guard[i], 0xAB);
    assert_int_equal(req.num_headers, 3);

    lim.max_headers = 0;
    req = (http_request){ .headers = NULL };
    assert_int_equal(http_parse_request("GET / HTTP/1.0\r\n\r\n", 18, 0, &req, &lim), 18);
    assert_int_equal(http_parse_request("GET / HTTP/1.0\r\nA: 1\r\n\r\n", 24, 0, &req, &lim), -431);
}

/* ---- chunked decoder ----------------------------------------------------- */

typedef struct dresult {
    ssize_t status;         /* HTTP_AGAIN, 0 (done) or -status */
    char   *out;            /* decoded body */
    size_t  out_len;
    char   *tail;           /* raw bytes after the body */
    size_t  tail_len;
} dresult;

static void dresult_free(dresult *r)
{
    free(r->out);
    free(r->tail);
}

/* Decodes raw[0..n) delivered in pieces ending at cuts[0..ncuts) and n. */
static dresult decode_pieces(const char *raw, size_t n, const size_t *cuts, size_t ncuts,
                             uint64_t max_body)
{
    dresult res = { .status = HTTP_AGAIN, .out = malloc(n + 1), .tail = malloc(n + 1) };
    assert_non_null(res.out);
    assert_non_null(res.tail);
    http_chunked d = {0};
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n, plen = to - from;
        char *piece = dup_exact(raw + from, plen);
        size_t len = plen;
        ssize_t r = http_chunked_decode(&d, piece, &len, max_body);
        assert_true(len <= plen);
        memcpy(res.out + res.out_len, piece, len);
        res.out_len += len;
        if (r >= 0) {
            assert_true(d.done);
            assert_true((size_t)r <= plen);
            memcpy(res.tail, piece + plen - (size_t)r, (size_t)r);
            memcpy(res.tail + r, raw + to, n - to);
            res.tail_len = (size_t)r + n - to;
            res.status = 0;
        } else if (r != HTTP_AGAIN) {
            res.status = r;
        }
        free(piece);
        from = to;
        if (r != HTTP_AGAIN)
            break;
    }
    assert_true(res.out_len == d.total || res.status != 0);
    return res;
}

static void assert_same_dresult(const dresult *a, const dresult *b, const char *name,
                                const char *how)
{
    if (a->status != b->status)
        fail_msg("chunked '%s' %s: status %zd vs %zd", name, how, b->status, a->status);
    if (a->out_len != b->out_len || memcmp(a->out, b->out, a->out_len) != 0)
        fail_msg("chunked '%s' %s: decoded bytes differ", name, how);
    if (a->tail_len != b->tail_len || memcmp(a->tail, b->tail, a->tail_len) != 0)
        fail_msg("chunked '%s' %s: tail differs", name, how);
}

typedef struct ccase {
    const char *name;
    const char *raw;
    size_t      len;
    ssize_t     status;     /* 0 done, HTTP_AGAIN, -400, -413 */
    const char *body;       /* decoded, when done */
    const char *tail;       /* raw bytes after, when done */
} ccase;

#define CC(name, raw, status, body, tail) { name, raw, sizeof(raw) - 1, status, body, tail }

/* Every split: one shot, byte by byte, all two-piece and (for short inputs)
 * all three-piece splits must agree with the expected result. */
static void run_chunked(const ccase *c, uint64_t max_body)
{
    dresult one = decode_pieces(c->raw, c->len, NULL, 0, max_body);
    if (one.status != c->status)
        fail_msg("chunked '%s': status %zd want %zd", c->name, one.status, c->status);
    if (c->status == 0) {
        assert_int_equal(one.out_len, strlen(c->body));
        assert_memory_equal(one.out, c->body, one.out_len);
        assert_int_equal(one.tail_len, strlen(c->tail));
        assert_memory_equal(one.tail, c->tail, one.tail_len);
    }

    size_t *cuts = malloc((c->len + 1) * sizeof(size_t));
    for (size_t i = 0; i + 1 < c->len; i++)
        cuts[i] = i + 1;
    dresult bytes = decode_pieces(c->raw, c->len, cuts, c->len ? c->len - 1 : 0, max_body);
    assert_same_dresult(&one, &bytes, c->name, "byte by byte");
    dresult_free(&bytes);

    for (size_t a = 0; a <= c->len; a++) {
        dresult two = decode_pieces(c->raw, c->len, &a, 1, max_body);
        assert_same_dresult(&one, &two, c->name, "in two pieces");
        dresult_free(&two);
        for (size_t b = a; c->len <= 96 && b <= c->len; b++) {
            size_t ab[2] = { a, b };
            dresult three = decode_pieces(c->raw, c->len, ab, 2, max_body);
            assert_same_dresult(&one, &three, c->name, "in three pieces");
            dresult_free(&three);
        }
    }
    free(cuts);
    dresult_free(&one);
}

static void test_chunked_valid(void **state)
{
    static const ccase cs[] = {
        CC("one chunk", "5\r\nhello\r\n0\r\n\r\n", 0, "hello", ""),
        CC("two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 0, "hello world", ""),
        CC("empty body", "0\r\n\r\n", 0, "", ""),
        CC("hex sizes", "a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n", 0,
           "0123456789abcdefghij", ""),
        CC("leading zeros", "0005\r\nhello\r\n000\r\n\r\n", 0, "hello", ""),
        CC("16 digits", "0000000000000005\r\nhello\r\n0\r\n\r\n", 0, "hello", ""),
        CC("CRLF inside data", "4\r\n\r\n\r\n\r\n0\r\n\r\n", 0, "\r\n\r\n", ""),
        CC("extension name", "5;foo\r\nhello\r\n0\r\n\r\n", 0, "hello", ""),
        CC("extension token value", "5;foo=bar;baz\r\nhello\r\n0;x=y\r\n\r\n", 0, "hello", ""),
        CC("extension quoted value", "5;q=\"a \\\"b\\\" ;c\"\r\nhello\r\n0\r\n\r\n", 0, "hello", ""),
        CC("extension BWS", "5 ;\tfoo = \"v\" ; bar\r\nhello\r\n0\r\n\r\n", 0, "hello", ""),
        CC("extension obs-text quoted", "5;q=\"\xc3\xa9\"\r\nhello\r\n0\r\n\r\n", 0, "hello", ""),
        CC("trailer field", "5\r\nhello\r\n0\r\nX-Sum: abc\r\nY:\r\n\r\n", 0, "hello", ""),
        CC("pipelined tail", "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 0, "abc",
           "GET / HTTP/1.1\r\n"),
        CC("incomplete data", "5\r\nhel", HTTP_AGAIN, "", ""),
        CC("incomplete trailer", "0\r\nX: 1\r\n", HTTP_AGAIN, "", ""),
        CC("incomplete final CR", "0\r\n\r", HTTP_AGAIN, "", ""),
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
        run_chunked(&cs[i], UINT64_MAX);
}

static void test_chunked_invalid(void **state)
{
    static const ccase cs[] = {
        CC("empty size", "\r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("negative size", "-5\r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("non-hex", "g\r\n", -400, "", ""),
        CC("17 digits", "00000000000000005\r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("size over 2^63-1", "8000000000000000\r\n", -400, "", ""),
        CC("size way over", "ffffffffffffffffff\r\n", -400, "", ""),
        CC("bare LF after size", "5\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("bare CR after size", "5\rhello\r\n0\r\n\r\n", -400, "", ""),
        CC("SP after size", "5 \r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("SP inside size", "1 0\r\n", -400, "", ""),
        CC("extension without name", "5;\r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("extension empty name", "5;=x\r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("extension empty value", "5;a=\r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("extension trailing SP", "5;a \r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("extension value trailing SP", "5;a=b \r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("extension bad char", "5;a@b\r\nhello\r\n0\r\n\r\n", -400, "", ""),
        CC("extension unterminated quote", "5;a=\"b\r\nhello\r\n", -400, "", ""),
        CC("extension NUL in quote", "5;a=\"\0\"\r\nhello\r\n", -400, "", ""),
        CC("extension junk after quote", "5;a=\"b\"c\r\nhello\r\n", -400, "", ""),
        CC("data too long", "3\r\nabcd\r\n0\r\n\r\n", -400, "abc", ""),
        CC("data too short", "3\r\nab\r\n0\r\n\r\n", -400, "ab\r", ""),
        CC("LF only after data", "3\r\nabc\n0\r\n\r\n", -400, "abc", ""),
        CC("CR only after data", "3\r\nabc\r0\r\n\r\n", -400, "abc", ""),
        CC("no CRLF after last chunk", "0\r\n", HTTP_AGAIN, "", ""),
        CC("bare LF final", "0\r\n\n", -400, "", ""),
        CC("trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n", -400, "", ""),
        CC("trailer SP before colon", "0\r\nX : a\r\n\r\n", -400, "", ""),
        CC("trailer without colon", "0\r\nX\r\n\r\n", -400, "", ""),
        CC("trailer empty name", "0\r\n: a\r\n\r\n", -400, "", ""),
        CC("trailer NUL in value", "0\r\nX: a\0b\r\n\r\n", -400, "", ""),
        CC("trailer bare LF", "0\r\nX: a\n\r\n", -400, "", ""),
        CC("trailer bare CR", "0\r\nX: a\rb\r\n\r\n", -400, "", ""),
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
        run_chunked(&cs[i], UINT64_MAX);
}

static void test_chunked_max_body(void **state)
{
    static const ccase at = CC("exactly max", "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 0,
                               "helloworld", "");
    static const ccase over = CC("one over", "5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n", -413,
                                 "hello", "");
    static const ccase huge = CC("huge size", "7fffffffffffffff\r\n", -413, "", "");
    run_chunked(&at, 10);
    run_chunked(&over, 10);
    run_chunked(&huge, 1 << 20);
    /* the largest size is accepted when the body limit allows it */
    static const ccase big = CC("largest size", "7fffffffffffffff\r\nab", HTTP_AGAIN, "", "");
    run_chunked(&big, UINT64_MAX);
    static const ccase empty = CC("zero max, empty body", "0\r\n\r\n", 0, "", "");
    run_chunked(&empty, 0);
}

static void test_chunked_line_bounds(void **state)
{
    /* one size line: extensions up to the 4 KiB bound, then 400 */
    size_t n = 5000;
    char *raw = malloc(n + 32);
    for (size_t ext_len = 4000; ext_len <= 4200; ext_len += 100) {
        size_t k = 0;
        raw[k++] = '1';
        raw[k++] = ';';
        memset(raw + k, 'e', ext_len);
        k += ext_len;
        k += (size_t)sprintf(raw + k, "\r\nx\r\n0\r\n\r\n");
        dresult one = decode_pieces(raw, k, NULL, 0, UINT64_MAX);
        size_t line = 2 + ext_len + 2;     /* "1;" ext CRLF */
        assert_int_equal(one.status, line <= 4096 ? 0 : -400);
        dresult_free(&one);
    }

    /* the trailer section: up to 16 KiB, then 400 */
    char *tr = malloc(40000);   /* 200 fields of 148 bytes */
    for (size_t fields = 100; fields <= 200; fields += 100) {
        size_t k = (size_t)sprintf(tr, "0\r\n");
        for (size_t i = 0; i < fields; i++)
            k += (size_t)sprintf(tr + k, "X-Trailer-%04zu: %0130zu\r\n", i, i);
        k += (size_t)sprintf(tr + k, "\r\n");
        dresult one = decode_pieces(tr, k, NULL, 0, UINT64_MAX);
        assert_int_equal(one.status, k - 3 <= 16384 ? 0 : -400);
        size_t mid = k / 2;
        dresult two = decode_pieces(tr, k, &mid, 1, UINT64_MAX);
        assert_int_equal(two.status, one.status);
        dresult_free(&one);
        dresult_free(&two);
    }

    /* one trailer line ("X:" value CRLF): up to 4 KiB, then 400 */
    for (size_t line = 4095; line <= 4097; line++) {
        size_t k = (size_t)sprintf(tr, "0\r\nX:");
        memset(tr + k, 'v', line - 4);
        k += line - 4;
        k += (size_t)sprintf(tr + k, "\r\n\r\n");
        dresult one = decode_pieces(tr, k, NULL, 0, UINT64_MAX);
        assert_int_equal(one.status, line <= 4096 ? 0 : -400);
        dresult_free(&one);
    }
    free(tr);
    free(raw);
}

static void test_chunked_after_done(void **state)
{
    http_chunked d = {0};
    char buf[] = "0\r\n\r\nNEXT";
    size_t len = sizeof(buf) - 1;
    assert_int_equal(http_chunked_decode(&d, buf, &len, 100), 4);
    assert_int_equal(len, 0);
    assert_memory_equal(buf + sizeof(buf) - 1 - 4, "NEXT", 4);
    assert_true(d.done);
    /* further calls consume nothing */
    char more[] = "abc";
    len = 3;
    assert_int_equal(http_chunked_decode(&d, more, &len, 100), 3);
    assert_int_equal(len, 0);
    assert_int_equal(d.total, 0);

    /* total counts decoded bytes across calls */
    d = (http_chunked){0};
    char a[] = "3\r\nab";
    len = 5;
    assert_int_equal(http_chunked_decode(&d, a, &len, 100), HTTP_AGAIN);
    assert_int_equal(len, 2);
    assert_memory_equal(a, "ab", 2);
    char b[] = "c\r\n2\r\nde\r\n0\r\n\r\n";
    len = sizeof(b) - 1;
    assert_int_equal(http_chunked_decode(&d, b, &len, 100), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(b, "cde", 3);
    assert_int_equal(d.total, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line),
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_target),
        cmocka_unit_test(test_path_query_split),
        cmocka_unit_test(test_absolute_form_fields),
        cmocka_unit_test(test_method_ids),
        cmocka_unit_test(test_field_syntax),
        cmocka_unit_test(test_field_values),
        cmocka_unit_test(test_find_header),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_transfer_encoding),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_expect),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_upgrade),
        cmocka_unit_test(test_leading_empty_lines),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_prev_len_resumption),
        cmocka_unit_test(test_limit_request_line),
        cmocka_unit_test(test_limit_head_bytes),
        cmocka_unit_test(test_limit_header_count),
        cmocka_unit_test(test_chunked_valid),
        cmocka_unit_test(test_chunked_invalid),
        cmocka_unit_test(test_chunked_max_body),
        cmocka_unit_test(test_chunked_line_bounds),
        cmocka_unit_test(test_chunked_after_done),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
