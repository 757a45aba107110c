"""Timeouts: header (an overall deadline for the whole head, so slowloris
and byte-trickling clients are cut), body, keep-alive idle, and write (a
client that stops reading). Every server here runs with short limits:
--header-timeout 1s --idle-timeout 2s --body-timeout 1s --write-timeout 1s.

Bounds are generous (the machine may be loaded, the binary may be an
ASan build): a timeout must not fire much before its value, and must fire
within value + 3 s."""

import socket
import time

import pytest

from client import Conn, fetch, get

FLAGS = ("--header-timeout", "1s", "--idle-timeout", "2s",
         "--body-timeout", "1s", "--write-timeout", "1s")
PLAINTEXT = b"Hello, World!"
EARLY = 0.7      # a 1 s timeout firing before this is a bug
MARGIN = 3.0     # ... and it must have fired by value + MARGIN


@pytest.fixture
def tsrv(start_server):
    return start_server(*FLAGS)


def expect_408_and_close(c, t0, limit, what):
    r = c.read_response(timeout=limit + MARGIN)
    elapsed = time.monotonic() - t0
    assert r.status == 408, f"{what}: expected 408, got {r!r}"
    assert "close" in r.tokens("Connection")
    c.expect_eof(timeout=2, what="the 408")
    assert EARLY * limit <= elapsed <= limit + MARGIN, \
        f"{what}: 408 after {elapsed:.2f}s, limit {limit}s"


def test_slowloris_partial_head(tsrv):
    with Conn(tsrv.port) as c:
        t0 = time.monotonic()
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n")
        expect_408_and_close(c, t0, 1.0, "partial head then silence")


def test_header_timeout_is_overall_deadline(tsrv):
    """A client sending one byte every 200 ms keeps the connection busy
    forever if the timeout restarts on each byte; it must be an overall
    deadline for the head."""
    head = b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200
    with Conn(tsrv.port) as c:
        t0 = time.monotonic()
        for i in range(len(head)):
            if c.wait_readable(0.2):
                break
            if not c.try_send(head[i:i + 1]):
                break
            if time.monotonic() - t0 > 1.0 + MARGIN + 1:
                break
        expect_408_and_close(c, t0, 1.0, "head trickled 1 byte / 200 ms")


def test_fresh_connection_sending_nothing_is_closed(tsrv):
    """A connection that never sends a byte is closed by the header or the
    idle timeout (either is a fair reading), with nothing or a 408."""
    with Conn(tsrv.port) as c:
        t0 = time.monotonic()
        rest = c.read_until_eof(timeout=2.0 + MARGIN)
        elapsed = time.monotonic() - t0
    assert rest == b"" or rest.startswith(b"HTTP/1.1 408 "), rest[:200]
    assert EARLY <= elapsed <= 2.0 + MARGIN, f"closed after {elapsed:.2f}s"


def test_idle_keep_alive_closed_after_idle_timeout(tsrv):
    """After a response the connection idles under --idle-timeout (2 s),
    not --header-timeout (1 s): a request sent 1.5 s later is answered;
    then after 2 s of silence the server closes without sending
    anything."""
    with Conn(tsrv.port) as c:
        c.send(get("/plaintext"))
        assert c.read_response().body == PLAINTEXT
        time.sleep(1.5)
        assert c.is_open(0), "closed before --idle-timeout 2s (after 1.5 s)"
        c.send(get("/json"))
        r = c.read_response(timeout=2)
        assert r.status == 200, r
        t0 = time.monotonic()
        rest = c.read_until_eof(timeout=2.0 + MARGIN)
        elapsed = time.monotonic() - t0
    assert rest == b"", f"an idle close sends no bytes, got {rest[:200]!r}"
    assert 2.0 * EARLY <= elapsed <= 2.0 + MARGIN, f"idle close after {elapsed:.2f}s"


def test_partial_body_then_silence(tsrv):
    with Conn(tsrv.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        t0 = time.monotonic()
        expect_408_and_close(c, t0, 1.0, "partial Content-Length body then silence")


def test_partial_chunked_body_then_silence(tsrv):
    with Conn(tsrv.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhel")
        t0 = time.monotonic()
        expect_408_and_close(c, t0, 1.0, "partial chunked body then silence")


def test_slow_handler_not_cut_by_request_timeouts(tsrv):
    """Once the request is complete, the header and body timeouts no
    longer apply: a handler taking 1.5 s still answers."""
    with Conn(tsrv.port) as c:
        c.send(get("/test/delay?ms=1500"))
        r = c.read_response(timeout=5)
        assert r.status == 200 and r.body == b"ok"
        c.send(get("/plaintext"))
        assert c.read_response().body == PLAINTEXT


def test_steady_requests_not_cut(tsrv):
    """Requests every 0.5 s for 3 s on one connection: none of the
    timeouts (all 1-2 s) fires."""
    with Conn(tsrv.port) as c:
        for _ in range(6):
            c.send(get("/plaintext"))
            assert c.read_response().body == PLAINTEXT
            time.sleep(0.5)


def test_write_timeout_stalled_reader(tsrv):
    """A client requests a ~131 MB streamed response and never reads. The
    server must stay responsive to others and close the stalled connection
    after --write-timeout (1 s). We read only after 4 s: what arrives then
    is what sat in the socket buffers, followed by EOF/RST — not the whole
    stream."""
    total = 2000 * 65536
    c = Conn(tsrv.port, rcvbuf=4096)
    try:
        c.send(get("/test/stream?chunks=2000&size=65536"))
        time.sleep(0.5)
        for _ in range(3):
            t0 = time.monotonic()
            assert b"ok" in fetch(tsrv.port, "/healthz", timeout=2).body.lower()
            assert time.monotonic() - t0 < 1.0, "server unresponsive while one client stalls"
        time.sleep(3.5)
        got = 0
        closed = False
        deadline = time.monotonic() + 10
        c.sock.settimeout(1.0)
        while time.monotonic() < deadline:
            try:
                data = c.sock.recv(1 << 20)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            got += len(data)
        assert closed, (f"stalled connection still open 4 s after --write-timeout 1s "
                        f"(read {got} of {total} body bytes without an EOF)")
        assert got < total // 4, (f"server sent {got} bytes: it did not cut the stalled "
                                  f"connection after the write timeout")
    finally:
        c.close()
    assert fetch(tsrv.port, "/plaintext").body == PLAINTEXT


def test_write_timeout_unread_pipeline(tsrv):
    """Pipelined requests whose responses are never read: the server stops
    reading when output backs up and drops the client after the write
    timeout; other clients are unaffected."""
    c = Conn(tsrv.port, rcvbuf=4096, timeout=2)
    c.sock.setblocking(False)
    try:
        one = get("/test/stream?chunks=16&size=65536")
        sent = 0
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            try:
                sent += c.sock.send(one)
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
        t0 = time.monotonic()
        assert fetch(tsrv.port, "/plaintext", timeout=2).body == PLAINTEXT
        assert time.monotonic() - t0 < 1.0
        time.sleep(3.5)
        c.sock.setblocking(True)
        c.sock.settimeout(1.0)
        closed = False
        got = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                data = c.sock.recv(1 << 20)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            got += len(data)
        answered = (sent // len(one)) * 16 * 65536
        assert closed, (f"connection with unread pipelined responses not closed 4 s after "
                        f"--write-timeout 1s (read {got} bytes)")
        assert got < answered // 2 and got < 64 << 20, \
            f"read {got} bytes of ~{answered}: the stalled connection was not cut"
    finally:
        c.close()
