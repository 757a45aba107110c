"""Request bodies: Content-Length and chunked echo, bodies split across many
sends, --max-body (413), Expect: 100-continue (RFC 9110 10.1.1) and 417."""

import threading
import time

import pytest

from client import Conn, get

H = b"Host: x\r\n"
PLAINTEXT = b"Hello, World!"


def echo_cl(body, extra=b""):
    return (b"POST /test/echo HTTP/1.1\r\n" + H + extra +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def chunked(body, size=7, ext=False):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x" % len(part)
        if ext:
            out += b";name=val;q=\"quoted; str\""
        out += b"\r\n" + part + b"\r\n"
    return out + b"0\r\n"


def echo_te(body, size=7, ext=False, trailers=b""):
    return (b"POST /test/echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" +
            chunked(body, size, ext) + trailers + b"\r\n")


def send_in_thread(conn, data):
    """Sends data from a thread so the test can read at the same time (a
    large echo would otherwise deadlock both sides' buffers)."""
    err = []

    def run():
        try:
            conn.send(data)
        except OSError as e:  # the server may legitimately close early
            err.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, err


@pytest.mark.parametrize("size", [0, 1, 13, 4096, 100000])
def test_echo_content_length(server, size):
    body = bytes((i * 7 + 3) % 256 for i in range(size))
    with Conn(server.port, timeout=10) as c:
        t, _ = send_in_thread(c, echo_cl(body))
        r = c.read_response()
        t.join(10)
    assert r.status == 200
    assert r.body == body
    assert r.header("Content-Length") == str(size) or r.chunked


def test_echo_max_body_exactly(server):
    """Default --max-body is 1m = 1048576 bytes: exactly that is accepted."""
    body = b"m" * 1048576
    with Conn(server.port, timeout=20) as c:
        t, _ = send_in_thread(c, echo_cl(body))
        r = c.read_response()
        t.join(10)
    assert r.status == 200 and len(r.body) == len(body) and r.body == body


def test_echo_chunked_with_extensions_and_trailers(server):
    body = b"hello chunked world, " * 20
    with Conn(server.port) as c:
        c.send(echo_te(body, size=11, ext=True,
                       trailers=b"X-Trailer: t1\r\nX-Other: t2\r\n") + get("/plaintext"))
        r = c.read_response()
        assert r.status == 200 and r.body == body
        # keep-alive still works after a chunked body with trailers
        assert c.read_response().body == PLAINTEXT


def test_echo_chunked_uppercase_hex_and_leading_zeros(server):
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
               b"000A\r\n0123456789\r\n00\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.body == b"0123456789"


def test_echo_chunked_large(server):
    body = bytes(range(256)) * 2000   # 512000 bytes
    with Conn(server.port, timeout=15) as c:
        t, _ = send_in_thread(c, echo_te(body, size=65536))
        r = c.read_response()
        t.join(10)
    assert r.status == 200 and r.body == body


def test_content_length_body_one_byte_per_send(server):
    body = b"split into single bytes"
    with Conn(server.port, timeout=10) as c:
        c.send_slowly(echo_cl(body), step=1, delay=0.001)
        r = c.read_response()
        assert r.status == 200 and r.body == body
        c.send_slowly(get("/json"), step=1, delay=0.001)
        assert c.read_response().status == 200


def test_chunked_body_one_byte_per_send(server):
    body = b"chunked, single bytes!"
    data = echo_te(body, size=5, ext=True, trailers=b"X-T: v\r\n")
    with Conn(server.port, timeout=10) as c:
        c.send_slowly(data, step=1, delay=0.001)
        r = c.read_response()
    assert r.status == 200 and r.body == body


@pytest.mark.parametrize("step", [2, 3, 7, 13])
def test_split_at_odd_boundaries(server, step):
    body = b"0123456789abcdef" * 4
    data = echo_cl(body) + echo_te(body, size=9, ext=True) + get("/plaintext")
    with Conn(server.port, timeout=10) as c:
        c.send_slowly(data, step=step, delay=0.0005)
        assert c.read_response().body == body
        assert c.read_response().body == body
        assert c.read_response().body == PLAINTEXT


# ---- --max-body ---------------------------------------------------------


@pytest.fixture
def small_body_server(start_server):
    return start_server("--max-body", "1k")


def test_max_body_size_suffix_accepts_limit(small_body_server):
    body = b"k" * 1024
    with Conn(small_body_server.port) as c:
        c.send(echo_cl(body))
        r = c.read_response()
    assert r.status == 200 and r.body == body


def test_content_length_over_max_body_413(small_body_server):
    with Conn(small_body_server.port) as c:
        c.try_send(echo_cl(b"k" * 1025) + get("/plaintext"))
        r = c.read_response()
        assert r.status == 413
        assert "close" in r.tokens("Connection")
        c.expect_eof(timeout=3)


def test_content_length_over_max_body_413_before_body_sent(small_body_server):
    """The head alone announces too much: 413 without waiting for a body."""
    with Conn(small_body_server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\n" + H + b"Content-Length: 5000000\r\n\r\n")
        r = c.read_response(timeout=3)
        assert r.status == 413
        c.expect_eof(timeout=3)


def test_chunked_over_max_body_413(small_body_server):
    with Conn(small_body_server.port) as c:
        c.try_send(echo_te(b"z" * 3000, size=500) + get("/plaintext"))
        r = c.read_response()
        assert r.status == 413
        assert "close" in r.tokens("Connection")
        c.expect_eof(timeout=3)


def test_expect_100_over_max_body_no_continue(small_body_server):
    """RFC 9110 10.1.1: a server that would reject the request on its head
    alone answers the final status instead of 100 Continue."""
    with Conn(small_body_server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\n" + H +
               b"Expect: 100-continue\r\nContent-Length: 2048\r\n\r\n")
        r = c.read_response(timeout=3)
        assert r.status == 413, f"expected 413 and no 100 Continue first, got {r!r}"
        c.expect_eof(timeout=3)


# ---- Expect ---------------------------------------------------------------


def test_expect_100_continue(server):
    body = b"after the interim response"
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\n" + H +
               b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        r = c.read_response(timeout=3)
        assert r.status == 100, f"expected 100 Continue before the body, got {r!r}"
        assert r.version == "HTTP/1.1"
        c.send(body)
        final = c.read_response()
        assert final.status == 200 and final.body == body
        # and the connection is still good
        c.send(get("/plaintext"))
        assert c.read_response().body == PLAINTEXT


def test_expect_100_continue_chunked(server):
    body = b"chunky"
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\n" + H +
               b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
        r = c.read_response(timeout=3)
        assert r.status == 100
        c.send(chunked(body) + b"\r\n")
        final = c.read_response()
        assert final.status == 200 and final.body == body


def test_expect_100_body_sent_anyway(server):
    """A client may send the body without waiting (RFC 9110 10.1.1); the
    server may still send 100 first, but the final response must be
    right and the connection reusable."""
    body = b"impatient"
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\n" + H +
               b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body) + body +
               get("/plaintext"))
        final, interim = c.read_final()
        assert [i.status for i in interim] in ([], [100])
        assert final.status == 200 and final.body == body
        assert c.read_response().body == PLAINTEXT


def test_expect_100_ignored_in_http10(server):
    """RFC 9110 10.1.1: a server that receives 100-continue in an HTTP/1.0
    request MUST ignore that expectation."""
    body = b"one-oh"
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.0\r\nExpect: 100-continue\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        r = c.read_response()
    assert r.status == 200, f"no 100 Continue to an HTTP/1.0 client: {r!r}"
    assert r.body == body


def test_expect_other_417(server):
    """RFC 9110 10.1.1: a server that receives an Expect value other than
    100-continue MAY respond 417; the specification says it does."""
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\n" + H +
               b"Expect: something-else\r\nContent-Length: 3\r\n\r\nabc")
        r = c.read_response()
    assert r.status == 417
    assert r.body


def test_pipelined_post_in_middle(server):
    body = b"in the middle of the pipeline"
    data = get("/plaintext") + echo_cl(body) + get("/json") + echo_te(b"xyz") + get("/healthz")
    with Conn(server.port) as c:
        c.send(data)
        rs = [c.read_response() for _ in range(5)]
    assert [r.status for r in rs] == [200] * 5
    assert rs[0].body == PLAINTEXT
    assert rs[1].body == body
    assert rs[2].body == b'{"message":"Hello, World!"}'
    assert rs[3].body == b"xyz"
    assert b"ok" in rs[4].body.lower()


def test_post_body_is_not_timed_out_between_requests(server):
    """Sending a body slowly but steadily within the body timeout works."""
    body = b"abcdef"
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n\r\n")
        for b in body:
            time.sleep(0.05)
            c.send(bytes([b]))
        assert c.read_response().body == body
