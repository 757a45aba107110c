"""Basic behaviour of the reference service: routes, exact bodies and
headers, HEAD, 404/405, Date, HTTP/1.0 connection handling, the test routes
(params, query, streaming) and a few sanity checks through curl."""

import email.utils
import re
import subprocess
import time
from datetime import datetime, timezone

import pytest

from client import Conn, fetch, get, request

PLAINTEXT = b"Hello, World!"
JSON = b'{"message":"Hello, World!"}'
IMF_FIXDATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
                         r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                         r"[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$")


def media_type(resp):
    ct = resp.header("Content-Type")
    assert ct is not None, f"no Content-Type: {resp!r}"
    return ct.split(";")[0].strip().lower()


def check_date(resp):
    """Date is present once, in IMF-fixdate, with the right weekday, and
    close to our clock (RFC 9110 5.6.7, 6.6.1)."""
    date = resp.header("Date")
    assert date is not None, f"no Date header: {resp!r}"
    assert IMF_FIXDATE.match(date), f"Date not IMF-fixdate: {date!r}"
    dt = datetime.strptime(date, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=timezone.utc)
    assert email.utils.format_datetime(dt, usegmt=True) == date, \
        f"Date has an inconsistent weekday: {date!r}"
    skew = abs(dt.timestamp() - time.time())
    assert skew < 5, f"Date {date!r} is {skew:.1f}s away from now"
    return dt


def check_common(resp, body, mtype):
    assert resp.version == "HTTP/1.1"
    assert resp.status == 200, resp
    assert resp.body == body
    assert media_type(resp) == mtype
    assert resp.header("Content-Length") == str(len(body))
    assert resp.header("Transfer-Encoding") is None
    server = resp.header("Server")
    assert server, f"no Server header: {resp!r}"
    check_date(resp)


# ---- the reference routes ----------------------------------------------


def test_plaintext(server):
    r = fetch(server.port, "/plaintext")
    check_common(r, PLAINTEXT, "text/plain")
    assert r.header("Content-Length") == "13"


def test_json(server):
    r = fetch(server.port, "/json")
    check_common(r, JSON, "application/json")


def test_healthz(server):
    r = fetch(server.port, "/healthz")
    assert r.status == 200
    assert b"ok" in r.body.lower()


@pytest.mark.parametrize("path", ["/plaintext", "/json", "/healthz"])
def test_head_same_headers_no_body(server, path):
    """RFC 9110 9.3.2: HEAD gets the same header fields as GET (Content-Length
    of the GET body) and no content. A HEAD followed by a pipelined GET on
    the same connection proves no body bytes were sent: they would be read
    as the start of the next response."""
    with Conn(server.port) as c:
        c.send(request("GET", path))
        g = c.read_response()
        c.send(request("HEAD", path) + request("GET", "/plaintext"))
        h = c.read_response(head=True)
        nxt = c.read_response()
    assert h.status == g.status == 200
    assert h.header("Content-Length") == str(len(g.body))
    assert h.header("Content-Type") == g.header("Content-Type")
    assert h.header("Server") == g.header("Server")
    check_date(h)
    assert nxt.status == 200 and nxt.body == PLAINTEXT, \
        f"response after HEAD is broken (did HEAD send a body?): {nxt!r}"


def test_not_found(server):
    with Conn(server.port) as c:
        c.send(get("/no/such/path"))
        r = c.read_response()
        assert r.status == 404
        assert r.body, "error responses have a short text body"
        # a 404 is not a framing error: the connection stays usable
        c.send(get("/plaintext"))
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == PLAINTEXT


@pytest.mark.parametrize("method,path", [("POST", "/plaintext"), ("PUT", "/json"),
                                         ("DELETE", "/healthz")])
def test_method_not_allowed(server, method, path):
    """RFC 9110 15.5.6: a 405 MUST carry Allow with the methods the target
    supports: GET and HEAD here."""
    with Conn(server.port) as c:
        c.send(request(method, path, headers=[("Content-Length", "0")]))
        r = c.read_response()
    assert r.status == 405, r
    allow = r.tokens("Allow")
    assert "get" in allow and "head" in allow, f"Allow is {r.all('Allow')!r}"
    assert r.body


def test_405_with_unread_body_is_not_parsed_as_request(server):
    """The body of a rejected request must be consumed (or the connection
    closed): its bytes are never a request of their own."""
    smuggled = request("GET", "/json")
    with Conn(server.port) as c:
        c.send(request("POST", "/plaintext",
                       headers=[("Content-Length", str(len(smuggled)))], body=smuggled)
               + request("GET", "/healthz"))
        r = c.read_response()
        assert r.status == 405
        if r.tokens("Connection") == ["close"]:
            c.expect_eof(timeout=3)
            return
        r2 = c.read_response()
        assert r2.body != JSON, "the body of the POST was answered as a request"
        assert r2.status == 200 and b"ok" in r2.body.lower()


def test_query_string_does_not_affect_routing(server):
    r = fetch(server.port, "/plaintext?x=1&y=2")
    assert r.status == 200 and r.body == PLAINTEXT


def test_absolute_form_target(server):
    """RFC 9112 3.2.2: a server MUST accept the absolute-form in requests."""
    with Conn(server.port) as c:
        c.send(b"GET http://localhost/plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.body == PLAINTEXT


def test_leading_empty_lines_ignored(server):
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line (CRLF)
    received prior to the request-line."""
    with Conn(server.port) as c:
        c.send(b"\r\n" + get("/plaintext"))
        r = c.read_response()
    assert r.status == 200 and r.body == PLAINTEXT


def test_higher_minor_version_treated_as_1_1(server):
    """RFC 9110 2.5: a recipient of HTTP/1.x with a higher minor version
    than it implements processes it as the highest it conforms to."""
    with Conn(server.port) as c:
        c.send(get("/plaintext", version="HTTP/1.2"))
        r = c.read_response()
    assert r.status == 200 and r.body == PLAINTEXT


def test_header_names_case_insensitive(server):
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\nhOsT: x\r\ncontent-LENGTH: 3\r\n\r\nabc")
        r = c.read_response()
    assert r.status == 200 and r.body == b"abc"


def test_date_changes(server):
    r1 = fetch(server.port, "/plaintext")
    time.sleep(2.1)
    r2 = fetch(server.port, "/plaintext")
    d1, d2 = check_date(r1), check_date(r2)
    assert d2 > d1, f"Date did not advance: {r1.header('Date')!r} then {r2.header('Date')!r}"


# ---- HTTP/1.0 ------------------------------------------------------------


def test_http10_closes_by_default(server):
    """RFC 9112 9.3: HTTP/1.0 without keep-alive: the connection closes
    after the response."""
    with Conn(server.port) as c:
        c.send(b"GET /plaintext HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == PLAINTEXT
        assert "keep-alive" not in r.tokens("Connection")
        c.expect_eof(timeout=3)


def test_http10_keep_alive(server):
    with Conn(server.port) as c:
        for _ in range(3):
            c.send(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            assert r.status == 200 and r.body == PLAINTEXT
            assert "keep-alive" in r.tokens("Connection"), r
            assert r.header("Content-Length") == "13"
        assert c.is_open(0.2)


def test_http10_keep_alive_then_plain_request_closes(server):
    with Conn(server.port) as c:
        c.send(b"GET /json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert c.read_response().body == JSON
        c.send(b"GET /json HTTP/1.0\r\n\r\n")
        assert c.read_response().body == JSON
        c.expect_eof(timeout=3)


# ---- test routes: params, query, streaming -------------------------------


@pytest.mark.parametrize("path,expect", [
    ("/test/params/foo/bar", b"a=foo b=bar"),
    ("/test/params/x/y", b"a=x b=y"),
    ("/test/params/123/a-b_c.d", b"a=123 b=a-b_c.d"),
])
def test_params(server, path, expect):
    r = fetch(server.port, path)
    assert r.status == 200
    assert r.body == expect


@pytest.mark.parametrize("path", ["/test/params/foo", "/test/params/foo/bar/baz"])
def test_params_wrong_shape_404(server, path):
    assert fetch(server.port, path).status == 404


@pytest.mark.parametrize("query,expect", [
    ("name=a%20b%2Bc", b"a b+c"),
    ("name=a+b", b"a b"),              # form encoding: '+' is a space
    ("name=hello", b"hello"),
    ("x=1&name=zz&y=2", b"zz"),
    ("name=%C3%A9t%C3%A9", "été".encode()),
    ("other=1", b""),
    ("", b""),
    ("name=", b""),
])
def test_query(server, query, expect):
    r = fetch(server.port, "/test/query?" + query if query else "/test/query")
    assert r.status == 200
    assert r.body == expect


@pytest.mark.parametrize("chunks,size", [(5, 7), (1, 1), (3, None), (100, 65536)])
def test_stream_chunked(server, chunks, size):
    q = f"/test/stream?chunks={chunks}" + (f"&size={size}" if size else "")
    r = fetch(server.port, q, timeout=20)
    assert r.status == 200
    assert r.chunked, f"expected Transfer-Encoding: chunked: {r!r}"
    assert r.header("Content-Length") is None
    assert r.body == b"x" * (chunks * (size or 10))


def test_stream_keep_alive_after(server):
    with Conn(server.port) as c:
        c.send(get("/test/stream?chunks=4&size=3") + get("/plaintext"))
        assert c.read_response().body == b"x" * 12
        assert c.read_response().body == PLAINTEXT


def test_stream_head_has_no_body(server):
    with Conn(server.port) as c:
        c.send(request("HEAD", "/test/stream?chunks=3&size=5") + get("/plaintext"))
        h = c.read_response(head=True)
        assert h.status == 200
        nxt = c.read_response()
        assert nxt.status == 200 and nxt.body == PLAINTEXT, \
            f"HEAD on the stream sent body bytes: {nxt!r}"


def test_echo_empty_post_without_framing(server):
    """RFC 9112 6.3 rule 7: a request with neither Content-Length nor
    Transfer-Encoding has a body of length zero."""
    with Conn(server.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\nHost: x\r\n\r\n" + get("/plaintext"))
        r = c.read_response()
        assert r.status == 200 and r.body == b""
        assert c.read_response().body == PLAINTEXT


def test_echo_content_type(server):
    r = fetch(server.port, "/test/echo", method="POST", body=b"\x00\x01binary\xff")
    assert r.status == 200
    assert r.body == b"\x00\x01binary\xff"
    assert media_type(r) == "application/octet-stream"


# ---- curl sanity ---------------------------------------------------------


def run_curl(*args):
    p = subprocess.run(["curl", "-sS", "--max-time", "10", *args],
                       capture_output=True, timeout=20)
    assert p.returncode == 0, f"curl failed ({p.returncode}): {p.stderr.decode()}"
    return p.stdout


def test_curl_plaintext(server):
    out = run_curl("-i", f"http://127.0.0.1:{server.port}/plaintext")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out
    assert body == PLAINTEXT
    assert re.search(rb"(?im)^content-type: text/plain", head)


def test_curl_json_and_reuse(server):
    url = f"http://127.0.0.1:{server.port}/json"
    out = run_curl(url, url, url)
    assert out == JSON * 3


def test_curl_post_echo(server):
    out = run_curl("--data-binary", "hello curl", f"http://127.0.0.1:{server.port}/test/echo")
    assert out == b"hello curl"


def test_curl_post_chunked_echo(server):
    body = b"y" * 100000
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Transfer-Encoding: chunked",
                        "--data-binary", "@-", f"http://127.0.0.1:{server.port}/test/echo"],
                       input=body, capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert p.stdout == body


def test_curl_head(server):
    out = run_curl("-I", f"http://127.0.0.1:{server.port}/json")
    assert out.startswith(b"HTTP/1.1 200")
    assert re.search(rb"(?im)^content-length: 27\r$", out)
