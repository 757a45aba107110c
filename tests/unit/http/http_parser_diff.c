/* Differential test: our request parser against Debian's libhttp-parser.
 *
 * Every corpus entry carries the verdict RFC 9110/9112 (and our documented
 * policy for what the RFCs leave open) calls for. Our parser must give that
 * verdict on every entry. libhttp-parser (nodejs/http-parser 2.9, as Debian
 * builds it) is run on the same bytes; where the two disagree, a line names
 * the case and both answers so a reader sees every divergence, and the test
 * still requires ours to be the RFC's. Where they agree, the shared verdict
 * is the RFC's by the first rule.
 *
 * The name clash. Our "http/http_parser.h" and the system <http_parser.h>
 * both declare `enum http_method` with enumerators HTTP_GET, HTTP_POST, ...
 * so they cannot be included into one translation unit as they are. Enum
 * tags and enumerators have no linkage: renaming them with the preprocessor
 * for this file only changes nothing in the object code, so we include ours
 * under renamed tags (ours_*), undo the macros, then include the system
 * header. Our functions and the struct layouts keep their names and ABI, and
 * the implementation links in unchanged (from libmyriad.a, or
 * src/http/http_parser.c on a standalone command line). The test only talks
 * about our methods by name (req.method), never by enumerator.
 *
 * Build: ... tests/unit/http/http_parser_diff.c src/http/http_parser.c
 *        -lhttp_parser -lcmocka   (the Makefile adds -lhttp_parser)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define http_method  ours_http_method
#define HTTP_OTHER   OURS_HTTP_OTHER
#define HTTP_GET     OURS_HTTP_GET
#define HTTP_HEAD    OURS_HTTP_HEAD
#define HTTP_POST    OURS_HTTP_POST
#define HTTP_PUT     OURS_HTTP_PUT
#define HTTP_DELETE  OURS_HTTP_DELETE
#define HTTP_OPTIONS OURS_HTTP_OPTIONS
#define HTTP_PATCH   OURS_HTTP_PATCH
#define HTTP_CONNECT OURS_HTTP_CONNECT
#define HTTP_TRACE   OURS_HTTP_TRACE
#include "http/http_parser.h"
#undef http_method
#undef HTTP_OTHER
#undef HTTP_GET
#undef HTTP_HEAD
#undef HTTP_POST
#undef HTTP_PUT
#undef HTTP_DELETE
#undef HTTP_OPTIONS
#undef HTTP_PATCH
#undef HTTP_CONNECT
#undef HTTP_TRACE

#include <http_parser.h>

#define MAX_BODY (1u << 20)

/* What a parser made of one message. */
typedef struct outcome {
    int     verdict;        /* 0 accepted, -status rejected (ours), -1 ours
                               incomplete; theirs: 0 accepted, -1 rejected or
                               incomplete (it has no statuses) */
    char    method[32];
    char    url[256];
    int     num_headers;
    long    body_len;
    int     keep_alive;
    const char *why;        /* error name */
} outcome;

typedef struct dcase {
    const char *name;
    const char *raw;
    size_t      len;
    int         rfc;        /* 0 accept, else -status */
    long        body_len;   /* when accepted */
    int         keep_alive; /* when accepted */
} dcase;

#define A(name, raw, body, ka) { name, raw, sizeof(raw) - 1, 0, body, ka }
#define R(name, raw, status)   { name, raw, sizeof(raw) - 1, -(status), 0, 0 }

#define H11 " HTTP/1.1\r\nHost: a.example\r\n"
#define POST11 "POST /p HTTP/1.1\r\nHost: a.example\r\n"

static const dcase corpus[] = {
    /* well-formed requests both must accept */
    A("get-simple", "GET /" H11 "\r\n", 0, 1),
    A("get-query", "GET /s?q=1&r=2" H11 "User-Agent: t\r\n\r\n", 0, 1),
    A("get-1.0", "GET / HTTP/1.0\r\n\r\n", 0, 0),
    A("get-1.0-keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, 1),
    A("get-1.1-close", "GET /" H11 "Connection: close\r\n\r\n", 0, 0),
    A("head", "HEAD /x" H11 "\r\n", 0, 1),
    A("post-cl", POST11 "Content-Length: 5\r\n\r\nhello", 5, 1),
    A("post-cl-zero", POST11 "Content-Length: 0\r\n\r\n", 0, 1),
    A("post-chunked", POST11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 5, 1),
    A("post-chunked-hex", POST11 "Transfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", 10, 1),
    A("post-chunked-ext", POST11 "Transfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d\"\r\nhello\r\n0\r\n\r\n", 5, 1),
    A("post-chunked-trailer", POST11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", 5, 1),
    A("te-upper-case", POST11 "Transfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n", 0, 1),
    A("te-htab-ows", POST11 "Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n", 0, 1),
    A("pipelined-first", "GET /1" H11 "\r\nGET /2" H11 "\r\n", 0, 1),
    A("leading-crlf", "\r\n\r\nGET /" H11 "\r\n", 0, 1),
    A("absolute-form", "GET http://a.example/x?y" H11 "\r\n", 0, 1),
    A("options-asterisk", "OPTIONS *" H11 "\r\n", 0, 1),
    A("cl-repeated-equal", POST11 "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 3, 1),
    A("cl-list-equal", POST11 "Content-Length: 3, 3\r\n\r\nabc", 3, 1),
    A("obs-text-value", "GET /" H11 "X: caf\xc3\xa9\r\n\r\n", 0, 1),
    A("upgrade-websocket", "GET /ws" H11 "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 0, 1),
    A("expect-100", POST11 "Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", 2, 1),
    A("http-1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 0, 1),
    A("unknown-method", "FROB /" H11 "\r\n", 0, 1),
    A("purge-method", "PURGE /" H11 "\r\n", 0, 1),
    A("empty-host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0, 1),
    A("empty-value", "GET /" H11 "X-Empty:\r\n\r\n", 0, 1),
    A("connection-list", "GET /" H11 "Connection: foo, close\r\n\r\n", 0, 0),

    /* request smuggling classics */
    R("cl-and-te", POST11 "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    R("te-and-cl", POST11 "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400),
    R("te-space-before-colon", POST11 "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    R("te-obs-fold", POST11 "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    R("te-leading-space-line", POST11 " Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    R("te-chunked-identity", POST11 "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    R("te-identity-chunked", POST11 "Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
    R("te-gzip-chunked", POST11 "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    R("te-gzip", POST11 "Transfer-Encoding: gzip\r\n\r\n", 400),
    R("te-xchunked", POST11 "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    R("te-chunked-twice", POST11 "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    R("te-two-fields-chunked", POST11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    R("te-chunked-then-gzip-field", POST11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 400),
    R("te-vertical-tab", POST11 "Transfer-Encoding: \vchunked\r\n\r\n0\r\n\r\n", 400),
    R("te-quoted", POST11 "Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n", 400),
    R("te-in-http-1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    R("te-bare-lf", POST11 "Transfer-Encoding: chunked\n\r\n0\r\n\r\n", 400),
    R("cl-double-differ", POST11 "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    R("cl-list-differ", POST11 "Content-Length: 3, 4\r\n\r\nabcd", 400),
    R("cl-negative", POST11 "Content-Length: -1\r\n\r\n", 400),
    R("cl-plus", POST11 "Content-Length: +3\r\n\r\nabc", 400),
    R("cl-hex", POST11 "Content-Length: 0x3\r\n\r\nabc", 400),
    R("cl-space-inside", POST11 "Content-Length: 1 2\r\n\r\nabcdefghijkl", 400),
    R("cl-overflow", POST11 "Content-Length: 99999999999999999999\r\n\r\n", 400),
    R("cl-space-before-colon", POST11 "Content-Length : 3\r\n\r\nabc", 400),

    /* line structure */
    R("bare-lf-request-line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    R("bare-lf-header", "GET /" H11 "X: y\n\r\n", 400),
    R("bare-lf-everywhere", "GET / HTTP/1.1\nHost: a\n\n", 400),
    R("bare-cr-value", "GET /" H11 "X: a\rb\r\n\r\n", 400),
    R("obs-fold", "GET /" H11 "X: a\r\n b\r\n\r\n", 400),
    R("too-many-empty-lines", "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET /" H11 "\r\n", 400),
    R("nul-in-value", "GET /" H11 "X: a\0b\r\n\r\n", 400),
    R("nul-in-name", "GET /" H11 "X\0Y: b\r\n\r\n", 400),
    R("ctl-in-value", "GET /" H11 "X: a\x01" "b\r\n\r\n", 400),
    R("del-in-value", "GET /" H11 "X: a\x7f" "b\r\n\r\n", 400),
    R("space-before-colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    R("empty-header-name", "GET /" H11 ": v\r\n\r\n", 400),
    R("no-colon", "GET /" H11 "NoColon\r\n\r\n", 400),
    R("bad-tchar-name", "GET /" H11 "X(Y): v\r\n\r\n", 400),

    /* request line */
    R("double-sp", "GET  /" H11 "\r\n", 400),
    R("sp-in-target", "GET /a b" H11 "\r\n", 400),
    R("fragment", "GET /a#b" H11 "\r\n", 400),
    R("non-ascii-target", "GET /caf\xc3\xa9" H11 "\r\n", 400),
    R("ctl-in-target", "GET /a\x01" H11 "\r\n", 400),
    R("bad-method-char", "G@T /" H11 "\r\n", 400),
    R("http-2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    R("http-0.9", "GET / HTTP/0.9\r\n\r\n", 505),
    R("lower-case-version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    R("two-digit-minor", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    R("connect", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 501),
    R("authority-form-get", "GET a.example:80" H11 "\r\n", 400),
    R("asterisk-get", "GET *" H11 "\r\n", 400),
    R("absolute-userinfo", "GET http://u@a.example/" H11 "\r\n", 400),
    R("absolute-ftp", "GET ftp://a.example/" H11 "\r\n", 400),

    /* Host and Expect */
    R("no-host", "GET / HTTP/1.1\r\n\r\n", 400),
    R("double-host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    R("host-with-space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    R("expect-unknown", POST11 "Expect: 200-ok\r\nContent-Length: 0\r\n\r\n", 417),

    /* chunked bodies */
    R("chunk-size-huge", POST11 "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n", 400),
    R("chunk-size-17-digits", POST11 "Transfer-Encoding: chunked\r\n\r\n00000000000000001\r\na\r\n0\r\n\r\n", 400),
    R("chunk-size-negative", POST11 "Transfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
    R("chunk-size-empty", POST11 "Transfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n", 400),
    R("chunk-size-trailing-sp", POST11 "Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", 400),
    R("chunk-size-bare-lf", POST11 "Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400),
    R("chunk-data-no-crlf", POST11 "Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400),
    R("chunk-data-bare-lf", POST11 "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", 400),
    R("chunk-ext-unterminated", POST11 "Transfer-Encoding: chunked\r\n\r\n3;a=\"b\r\nabc\r\n0\r\n\r\n", 400),
    R("chunk-ext-bad-char", POST11 "Transfer-Encoding: chunked\r\n\r\n3;a@b\r\nabc\r\n0\r\n\r\n", 400),
    R("chunk-trailer-obs-fold", POST11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n", 400),
    R("chunk-trailer-no-colon", POST11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX\r\n\r\n", 400),
    R("chunk-last-bare-lf", POST11 "Transfer-Encoding: chunked\r\n\r\n0\r\n\n", 400),
};

/* ---- ours ---------------------------------------------------------------- */

static void run_ours(const dcase *c, outcome *o)
{
    static const http_limits lim = { 8192, 65536, 64 };
    http_header hs[64];
    http_request req = { .headers = hs };
    char *buf = malloc(c->len);
    assert_non_null(buf);
    memcpy(buf, c->raw, c->len);
    *o = (outcome){ .verdict = -1 };

    ssize_t n = http_parse_request(buf, c->len, 0, &req, &lim);
    if (n < 0) {
        o->verdict = (int)n;
        o->why = req.error;
        goto out;
    }
    snprintf(o->method, sizeof(o->method), "%.*s", (int)req.method_len, req.method);
    snprintf(o->url, sizeof(o->url), "%.*s", (int)req.target_len, req.target);
    o->num_headers = (int)req.num_headers;
    o->keep_alive = req.keep_alive;
    size_t rest = c->len - (size_t)n;
    if (req.chunked) {
        http_chunked d = {0};
        size_t dlen = rest;
        ssize_t r = http_chunked_decode(&d, buf + n, &dlen, MAX_BODY);
        if (r < 0) {
            o->verdict = r == HTTP_AGAIN ? -1 : (int)r;
            o->why = "chunked body";
            goto out;
        }
        o->body_len = (long)dlen;
    } else if (req.content_length > 0) {
        if ((size_t)req.content_length > rest)
            goto out;                       /* incomplete */
        o->body_len = (long)req.content_length;
    }
    o->verdict = 0;
out:
    free(buf);
}

/* ---- theirs -------------------------------------------------------------- */

typedef struct theirs_ctx {
    outcome *o;
    int      complete;
    int      in_field;      /* last callback was a header-field piece */
    int      in_trailer;    /* the head is complete: fields are trailers */
} theirs_ctx;

static int on_url(http_parser *p, const char *at, size_t n)
{
    theirs_ctx *x = p->data;
    size_t have = strlen(x->o->url);
    snprintf(x->o->url + have, sizeof(x->o->url) - have, "%.*s", (int)n, at);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    ((theirs_ctx *)p->data)->in_trailer = 1;   /* fields after are trailers */
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    theirs_ctx *x = p->data;
    if (!x->in_field && !x->in_trailer)
        x->o->num_headers++;
    x->in_field = 1;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    ((theirs_ctx *)p->data)->in_field = 0;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    ((theirs_ctx *)p->data)->o->body_len += (long)n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    theirs_ctx *x = p->data;
    x->complete = 1;
    x->o->keep_alive = http_should_keep_alive(p);
    snprintf(x->o->method, sizeof(x->o->method), "%s",
             http_method_str((enum http_method)p->method));
    http_parser_pause(p, 1);    /* one message: stop before a pipelined one */
    return 0;
}

static void run_theirs(const dcase *c, outcome *o)
{
    http_parser_settings s;
    http_parser_settings_init(&s);
    s.on_url = on_url;
    s.on_header_field = on_header_field;
    s.on_header_value = on_header_value;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;

    *o = (outcome){ .verdict = -1 };
    theirs_ctx x = { .o = o };
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = &x;
    http_parser_execute(&p, &s, c->raw, c->len);
    enum http_errno e = HTTP_PARSER_ERRNO(&p);
    if (x.complete && (e == HPE_OK || e == HPE_PAUSED))
        o->verdict = 0;
    else
        o->why = e == HPE_OK ? "incomplete" : http_errno_name(e);
}

/* ---- the comparison ------------------------------------------------------ */

static const char *describe(const outcome *o, char *buf, size_t n)
{
    if (o->verdict == 0)
        snprintf(buf, n, "accept");
    else if (o->verdict == -1)
        snprintf(buf, n, "reject (%s)", o->why ? o->why : "incomplete");
    else
        snprintf(buf, n, "%d (%s)", -o->verdict, o->why);
    return buf;
}

static void test_corpus_size(void **state)
{
    size_t n = sizeof(corpus) / sizeof(corpus[0]);
    assert_true(n >= 60);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            assert_string_not_equal(corpus[i].name, corpus[j].name);
}

static void test_differential(void **state)
{
    size_t n = sizeof(corpus) / sizeof(corpus[0]);
    int disagreements = 0, wrong = 0;
    for (size_t i = 0; i < n; i++) {
        const dcase *c = &corpus[i];
        outcome ours, theirs;
        run_ours(c, &ours);
        run_theirs(c, &theirs);

        /* ours must be the RFC's verdict, whatever libhttp-parser says */
        bool ok = ours.verdict == c->rfc;
        if (ok && c->rfc == 0)
            ok = ours.body_len == c->body_len && ours.keep_alive == c->keep_alive;
        if (!ok) {
            printf("WRONG %-28s ours=%d (%s) body=%ld ka=%d, rfc=%d body=%ld ka=%d\n",
                   c->name, ours.verdict, ours.why ? ours.why : "-", ours.body_len,
                   ours.keep_alive, c->rfc, c->body_len, c->keep_alive);
            wrong++;
        }

        bool ours_acc = ours.verdict == 0, theirs_acc = theirs.verdict == 0;
        if (ours_acc != theirs_acc) {
            char a[96], b[96];
            printf("DISAGREE %-28s ours=%s theirs=%s\n", c->name,
                   describe(&ours, a, sizeof(a)), describe(&theirs, b, sizeof(b)));
            disagreements++;
        } else if (ours_acc) {
            const char *what = strcmp(ours.method, theirs.method) ? "method"
                             : strcmp(ours.url, theirs.url) ? "url"
                             : ours.num_headers != theirs.num_headers ? "header count"
                             : ours.body_len != theirs.body_len ? "body length"
                             : ours.keep_alive != theirs.keep_alive ? "keep-alive" : NULL;
            if (what) {
                printf("DISAGREE %-28s on %s: ours %s %s h=%d body=%ld ka=%d, "
                       "theirs %s %s h=%d body=%ld ka=%d\n", c->name, what,
                       ours.method, ours.url, ours.num_headers, ours.body_len,
                       ours.keep_alive, theirs.method, theirs.url, theirs.num_headers,
                       theirs.body_len, theirs.keep_alive);
                disagreements++;
            }
        }
    }
    printf("differential: %zu cases, %d disagreements with libhttp-parser %lu.%lu.%lu, "
           "%d not per RFC\n", n, disagreements, (http_parser_version() >> 16) & 255,
           (http_parser_version() >> 8) & 255, http_parser_version() & 255, wrong);
    assert_int_equal(wrong, 0);
}

int main(void)
{
    /* whole lines, so our report never splits cmocka's (stderr) lines when
     * both go to one pipe */
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus_size),
        cmocka_unit_test(test_differential),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
