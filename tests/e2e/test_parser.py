"""Parser strictness: every malformed or ambiguous request is answered with
the right status, `Connection: close`, and then EOF — and a valid request
pipelined right behind it in the same send is never answered (nothing after
a rejected request is parsed as a request: RFC 9112 9.6 / 11.2).

Each case is (id, bytes, accepted statuses). Unless noted, the expected
statuses are those of the specification of the server under test; the RFC
rule each one rests on is quoted in the case's comment.
"""

import time

import pytest

from client import Conn, get

H = b"Host: x\r\n"
FOLLOW = get("/json")                  # the pipelined request that must not be answered
ECHO_TE = b"POST /test/echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"

CASES = [
    # RFC 9112 6.1: a server MAY reject CL+TE and MUST close the connection
    # after responding; the specification says 400.
    ("cl_and_te", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    ("te_and_cl", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", {400}),
    # RFC 9112 6.3 rule 5: differing Content-Length values are
    # unrecoverable: the server MUST respond 400 and close.
    ("two_different_cl", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", {400}),
    ("cl_list_different", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Content-Length: 5, 6\r\n\r\nhello!", {400}),
    # RFC 9110 8.6: Content-Length = 1*DIGIT
    ("cl_not_a_number", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Content-Length: abc\r\n\r\n", {400}),
    ("cl_negative", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Content-Length: -1\r\n\r\n", {400}),
    ("cl_plus_sign", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Content-Length: +3\r\n\r\nabc", {400}),
    ("cl_hex", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Content-Length: 0x3\r\n\r\nabc", {400}),
    # An overflowing length is invalid (400) or too large (413); both close.
    ("cl_overflow", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Content-Length: 99999999999999999999999\r\n\r\n", {400, 413}),
    # RFC 9112 6.1: an unknown transfer coding SHOULD get 501; the
    # specification: 501 (400 accepted too).
    ("te_gzip_chunked", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", {501, 400}),
    # RFC 9112 6.3 rule 4: chunked not final in a request: 400 and close.
    ("te_chunked_gzip", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", {400}),
    ("te_split_fields_chunked_then_other", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", {400, 501}),
    # RFC 9112 6.1: the sender MUST NOT apply chunked more than once.
    ("te_chunked_twice", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", {400}),
    ("te_vertical_tab", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", {400, 501}),
    # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0: the framing is faulty.
    ("te_in_http10", b"POST /test/echo HTTP/1.0\r\n" +
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    # RFC 9112 5.2: obs-fold: reject with 400 (or unfold; spec: 400).
    ("obs_fold", b"GET /plaintext HTTP/1.1\r\n" + H + b"X-Foo: a\r\n b\r\n\r\n", {400}),
    ("obs_fold_tab", b"GET /plaintext HTTP/1.1\r\n" + H + b"X-Foo: a\r\n\tb\r\n\r\n", {400}),
    # RFC 9112 2.2: whitespace between start-line and first field: reject
    # (or ignore that line, which leaves no Host: 400 either way).
    ("ws_before_first_field", b"GET /plaintext HTTP/1.1\r\n Host: x\r\n\r\n", {400}),
    # RFC 9112 2.2: bare CR: invalid (or replace with SP; spec: 400).
    ("bare_cr_in_value", b"GET /plaintext HTTP/1.1\r\n" + H + b"X-Foo: a\rb\r\n\r\n", {400}),
    ("bare_cr_request_line", b"GET /plaintext HTTP/1.1\rX: y\r\n" + H + b"\r\n", {400}),
    # RFC 9112 2.2 lets a recipient accept bare LF; the specification says
    # this server rejects it (400).
    ("bare_lf_request_line", b"GET /plaintext HTTP/1.1\n" + H + b"\r\n", {400}),
    ("bare_lf_header_line", b"GET /plaintext HTTP/1.1\r\n" + b"Host: x\nX-Foo: y\r\n\r\n", {400}),
    # RFC 9110 5.5: field values never contain NUL / CTLs other than HTAB.
    ("nul_in_value", b"GET /plaintext HTTP/1.1\r\n" + H + b"X-Foo: a\x00b\r\n\r\n", {400}),
    ("ctl_in_value", b"GET /plaintext HTTP/1.1\r\n" + H + b"X-Foo: a\x01b\r\n\r\n", {400}),
    ("del_in_value", b"GET /plaintext HTTP/1.1\r\n" + H + b"X-Foo: a\x7fb\r\n\r\n", {400}),
    # RFC 9110 5.1: field-name = token
    ("ctl_in_name", b"GET /plaintext HTTP/1.1\r\n" + H + b"X\x01Foo: a\r\n\r\n", {400}),
    ("space_in_name", b"GET /plaintext HTTP/1.1\r\n" + H + b"X Foo: a\r\n\r\n", {400}),
    ("empty_name", b"GET /plaintext HTTP/1.1\r\n" + H + b": a\r\n\r\n", {400}),
    ("no_colon", b"GET /plaintext HTTP/1.1\r\n" + H + b"XFoo\r\n\r\n", {400}),
    # RFC 9112 5.1: whitespace between field name and colon: MUST 400.
    ("space_before_colon", b"GET /plaintext HTTP/1.1\r\n" + H + b"X-Foo : a\r\n\r\n", {400}),
    ("space_before_colon_host", b"GET /plaintext HTTP/1.1\r\nHost : x\r\n\r\n", {400}),
    ("space_before_colon_te", b"POST /test/echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", {400}),
    # RFC 9110 9.1: method = token; RFC 9112 3: invalid request-line -> 400.
    ("bad_method_token", b"GE(T /plaintext HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("empty_method", b" /plaintext HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("target_not_origin_form", b"GET plaintext HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("ctl_in_target", b"GET /plain\x7ftext HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("trailing_space_after_version", b"GET /plaintext HTTP/1.1 \r\n" + H + b"\r\n", {400}),
    ("missing_version", b"GET /plaintext\r\n" + H + b"\r\n", {400, 505}),
    # RFC 9112 3.2: a 1.1 request without Host, or with more than one,
    # MUST get 400.
    ("no_host_http11", b"GET /plaintext HTTP/1.1\r\nX-Foo: a\r\n\r\n", {400}),
    ("two_hosts", b"GET /plaintext HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    # RFC 9110 15.6.6: major version not supported: 505.
    ("http20", b"GET /plaintext HTTP/2.0\r\n" + H + b"\r\n", {505}),
    ("http30", b"GET /plaintext HTTP/3.0\r\n" + H + b"\r\n", {505}),
    # RFC 9112 2.3: HTTP-name is case-sensitive "HTTP".
    ("lowercase_http", b"GET /plaintext http/1.1\r\n" + H + b"\r\n", {400}),
    ("bad_version_digits", b"GET /plaintext HTTP/1.10\r\n" + H + b"\r\n", {400}),
    # RFC 9112 3: request-line longer than the server parses: 414.
    ("request_line_too_long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", {414}),
    # RFC 6585 5: header fields too large: 431.
    ("header_block_too_big", b"GET /plaintext HTTP/1.1\r\n" + H +
     b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"v" * 1000) for i in range(20)) + b"\r\n", {431}),
    ("one_header_too_big", b"GET /plaintext HTTP/1.1\r\n" + H +
     b"X-Big: " + b"v" * 17000 + b"\r\n\r\n", {431}),
    ("too_many_headers", b"GET /plaintext HTTP/1.1\r\n" + H +
     b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n", {431}),
    # RFC 9112 7.1: chunk-size = 1*HEXDIG
    ("chunk_size_not_hex", ECHO_TE + b"zz\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_size_0x_prefix", ECHO_TE + b"0x5\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_size_negative", ECHO_TE + b"-5\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_size_empty", ECHO_TE + b"\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_size_overflow", ECHO_TE + b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_size_bare_lf", ECHO_TE + b"5\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_data_no_crlf", ECHO_TE + b"3\r\nabcd\r\n0\r\n\r\n", {400}),
    ("chunk_data_bare_lf", ECHO_TE + b"3\r\nabc\n0\r\n\r\n", {400}),
    ("chunk_bad_trailer", ECHO_TE + b"3\r\nabc\r\n0\r\nBad Trailer: x\r\n\r\n", {400}),
]


@pytest.mark.parametrize("data,statuses", [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rejected_then_closed(server, data, statuses):
    with Conn(server.port) as c:
        c.send(data + FOLLOW)
        r = c.read_response()
        assert r.status in statuses, f"expected {sorted(statuses)}, got {r!r}"
        assert "close" in r.tokens("Connection"), \
            f"framing errors must carry Connection: close: {r!r}"
        assert r.body and len(r.body) < 4096, "error responses have a short text body"
        # nothing after the bad request is answered; the connection ends
        c.expect_eof(timeout=3, what=f"the {r.status} response (the pipelined "
                                     f"GET /json must not be answered)")


def test_request_line_never_ends_414_without_waiting(server):
    """9000 bytes and no CRLF: the line is already too long, so 414 must
    come at once, not after the 10 s header timeout."""
    with Conn(server.port) as c:
        t0 = time.monotonic()
        c.send(b"GET /" + b"a" * 9000)
        r = c.read_response(timeout=3)
        assert r.status == 414
        assert "close" in r.tokens("Connection")
        c.expect_eof(timeout=3)
        assert time.monotonic() - t0 < 3


def test_header_block_never_ends_431_without_waiting(server):
    with Conn(server.port) as c:
        c.send(b"GET /plaintext HTTP/1.1\r\n" + H +
               b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"v" * 1000) for i in range(20)))
        r = c.read_response(timeout=3)
        assert r.status == 431
        c.expect_eof(timeout=3)


def test_smuggled_request_in_body_not_answered(server):
    """CL.TE smuggling: a front end honouring Content-Length would forward
    all of this as one request; one honouring chunked would see a second
    request (GET /json) inside. The server must answer neither the body's
    request nor anything else: one 400, then EOF."""
    body = b"0\r\n\r\n" + get("/json")
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\n" + H +
               b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body) + body)
        r = c.read_response()
        assert r.status == 400, r
        rest = c.read_until_eof(timeout=3)
        assert b"Hello" not in rest and rest == b"", f"smuggled request answered: {rest!r}"


def test_te_cl_smuggling_not_answered(server):
    """TE.CL: the chunked body hides a request that a Content-Length reader
    would see."""
    inner = get("/json")
    chunk = b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n"
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\n" + H +
               b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunk)
        r = c.read_response()
        assert r.status == 400
        rest = c.read_until_eof(timeout=3)
        assert rest == b"", f"smuggled request answered: {rest!r}"


def test_valid_chunked_then_pipelined_is_answered(server):
    """Control case for the ones above: the same bytes, well formed, are
    two requests and both are answered."""
    with Conn(server.port) as c:
        c.send(ECHO_TE + b"5\r\nhello\r\n0\r\n\r\n" + FOLLOW)
        r1 = c.read_response()
        r2 = c.read_response()
    assert (r1.status, r1.body) == (200, b"hello")
    assert r2.status == 200 and r2.body == b'{"message":"Hello, World!"}'


def test_request_line_at_limit_is_accepted(server):
    """A request line just under 8192 bytes is fine (route 404, not 414)."""
    target = b"/" + b"a" * (8192 - len(b"GET  HTTP/1.1") - 1 - 64)
    with Conn(server.port) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n")
        r = c.read_response()
    assert r.status == 404


def test_headers_at_limit_are_accepted(server):
    """99 extra fields + Host = 100 = --max-headers: accepted."""
    with Conn(server.port) as c:
        c.send(b"GET /plaintext HTTP/1.1\r\n" + H +
               b"".join(b"X-H%d: v\r\n" % i for i in range(99)) + b"\r\n")
        r = c.read_response()
    assert r.status == 200
