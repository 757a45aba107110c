"""Connection handling: keep-alive, Connection: close, pipelining, half
close, --max-connections, asynchronous handlers and their cancellation,
backpressure on a huge pipeline, many concurrent connections, garbage and
resets, and shutdown on SIGTERM with connections open."""

import random
import socket
import struct
import threading
import time

import pytest

from client import Conn, HOST, ProtocolError, ReadTimeout, fetch, get, request

PLAINTEXT = b"Hello, World!"
JSON = b'{"message":"Hello, World!"}'


# ---- keep-alive ----------------------------------------------------------


def test_many_requests_one_connection(server):
    with Conn(server.port) as c:
        for i in range(300):
            path = ("/plaintext", "/json", "/test/params/k/%d" % i)[i % 3]
            c.send(get(path))
            r = c.read_response()
            assert r.status == 200
            assert "close" not in r.tokens("Connection")
            expect = (PLAINTEXT, JSON, b"a=k b=%d" % i)[i % 3]
            assert r.body == expect


def test_connection_close(server):
    with Conn(server.port) as c:
        c.send(get("/plaintext"))
        assert c.read_response().status == 200
        c.send(get("/json", headers=[("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200 and r.body == JSON
        assert "close" in r.tokens("Connection"), r
        c.expect_eof(timeout=3)


def test_connection_close_among_other_tokens(server):
    with Conn(server.port) as c:
        c.send(get("/json", headers=[("Connection", "foo, Close")]))
        r = c.read_response()
        assert "close" in r.tokens("Connection")
        c.expect_eof(timeout=3)


def test_connection_close_stops_pipeline(server):
    """RFC 9112 9.6: a server that receives "close" MUST NOT process further
    requests on that connection."""
    with Conn(server.port) as c:
        c.send(get("/plaintext", headers=[("Connection", "close")]) + get("/json"))
        r = c.read_response()
        assert r.body == PLAINTEXT
        c.expect_eof(timeout=3, what="the response to the request with Connection: close")


# ---- pipelining ----------------------------------------------------------

MIX = [("GET", "/plaintext", PLAINTEXT), ("GET", "/json", JSON),
       ("GET", "/test/params/x/y", b"a=x b=y"), ("HEAD", "/plaintext", b""),
       ("GET", "/test/query?name=p%20q", b"p q")]


@pytest.mark.parametrize("n", [16, 100])
def test_pipelining_in_order(server, n):
    reqs = [MIX[i % len(MIX)] for i in range(n)]
    data = b"".join(request(m, p) for m, p, _ in reqs)
    with Conn(server.port) as c:
        c.send(data)
        for i, (m, p, body) in enumerate(reqs):
            r = c.read_response(head=(m == "HEAD"))
            assert r.status == 200, (i, m, p, r)
            assert r.body == body, f"response {i} to {m} {p} out of order or wrong: {r!r}"
            if m == "HEAD":
                assert r.header("Content-Length") == "13"
        assert c.is_open(0.1)
        assert c.pending() == b""


def test_pipelined_batch_answered_without_stall(server):
    """16 pipelined requests in one send are all answered within a short
    bound (no waiting for more input between them)."""
    data = get("/plaintext") * 16
    with Conn(server.port) as c:
        t0 = time.monotonic()
        c.send(data)
        for _ in range(16):
            c.read_response(timeout=2)
        assert time.monotonic() - t0 < 2


# ---- half close ----------------------------------------------------------


def test_half_close_still_answered(server):
    with Conn(server.port) as c:
        c.send(get("/plaintext"))
        c.shutdown_write()
        r = c.read_response()
        assert r.status == 200 and r.body == PLAINTEXT
        c.expect_eof(timeout=3)


def test_half_close_pipelined(server):
    with Conn(server.port) as c:
        c.send(get("/plaintext") + get("/json") + get("/test/delay?ms=100") + get("/healthz"))
        c.shutdown_write()
        bodies = [c.read_response().body for _ in range(4)]
        assert bodies[:3] == [PLAINTEXT, JSON, b"ok"]
        c.expect_eof(timeout=3)


def test_half_close_mid_request(server):
    """EOF in the middle of a head: no response is possible; the server
    closes (it may send 400) and does not hang or crash."""
    with Conn(server.port) as c:
        c.send(b"GET /plaintext HTTP/1.1\r\nHo")
        c.shutdown_write()
        rest = c.read_until_eof(timeout=3)
        assert rest == b"" or rest.startswith(b"HTTP/1.1 400"), rest


# ---- async handlers ----------------------------------------------------


def test_delay_is_async(server):
    """8 concurrent /test/delay?ms=300: served in parallel (serialised
    they would take 2.4 s)."""
    conns = [Conn(server.port) for _ in range(8)]
    try:
        t0 = time.monotonic()
        for c in conns:
            c.send(get("/test/delay?ms=300"))
        for c in conns:
            r = c.read_response(timeout=5)
            assert r.status == 200 and r.body == b"ok"
        elapsed = time.monotonic() - t0
    finally:
        for c in conns:
            c.close()
    assert 0.28 <= elapsed < 1.5, f"8 parallel 300 ms delays took {elapsed:.2f}s"


def test_delay_does_not_block_other_clients(server):
    with Conn(server.port) as slow:
        slow.send(get("/test/delay?ms=1500"))
        time.sleep(0.05)
        t0 = time.monotonic()
        r = fetch(server.port, "/plaintext")
        assert r.body == PLAINTEXT
        assert time.monotonic() - t0 < 0.5
        assert slow.read_response(timeout=5).body == b"ok"


def test_delay_pipelined_order(server):
    with Conn(server.port) as c:
        t0 = time.monotonic()
        c.send(get("/test/delay?ms=200") + get("/plaintext") + get("/test/delay?ms=50") + get("/json"))
        r1 = c.read_response()
        t1 = time.monotonic() - t0
        r2 = c.read_response()
        r3 = c.read_response()
        r4 = c.read_response()
    assert (r1.body, r2.body, r3.body, r4.body) == (b"ok", PLAINTEXT, b"ok", JSON)
    assert t1 >= 0.19, f"delay answered after {t1:.3f}s"


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_gone_during_delay(server, how):
    """The client goes away while its handler waits: the server must cancel
    or finish the handler without touching freed memory (sanitizer check
    at teardown) and keep serving."""
    for _ in range(5):
        c = Conn(server.port)
        c.send(get("/test/delay?ms=300"))
        time.sleep(0.01)
        c.abort() if how == "reset" else c.close()
    # a pipelined delay plus more requests, then gone
    c = Conn(server.port)
    c.send(get("/test/delay?ms=200") + get("/plaintext") * 5)
    c.abort() if how == "reset" else c.close()
    time.sleep(0.6)   # let every timer fire
    assert fetch(server.port, "/plaintext").body == PLAINTEXT
    assert server.alive()


def test_client_gone_during_streaming(server):
    for _ in range(5):
        c = Conn(server.port, rcvbuf=4096)
        c.send(get("/test/stream?chunks=1000&size=65536"))
        c.sock.recv(10000)
        c.abort()
    time.sleep(0.2)
    assert fetch(server.port, "/plaintext").body == PLAINTEXT


# ---- backpressure --------------------------------------------------------


def test_backpressure_huge_pipeline(server):
    """20000 pipelined requests while the client does not read for 1 s:
    the server must stop reading when its output backs up, not drop or
    reorder anything, and keep serving other clients meanwhile."""
    n = 20000
    one = get("/plaintext")
    heads = (b"HEAD /json HTTP/1.1\r\nHost: x\r\n\r\n")
    # every 1000th request is a HEAD to check per-request framing at scale
    kinds = ["H" if i % 1000 == 999 else "G" for i in range(n)]
    data = b"".join(heads if k == "H" else one for k in kinds)
    c = Conn(server.port, timeout=30)
    sent_err = []

    def sender():
        try:
            for i in range(0, len(data), 64 * 1024):
                c.sock.sendall(data[i:i + 64 * 1024])
        except OSError as e:
            sent_err.append(e)
    t = threading.Thread(target=sender, daemon=True)
    try:
        t.start()
        time.sleep(1.0)
        # meanwhile another client is served promptly
        t0 = time.monotonic()
        assert fetch(server.port, "/plaintext", timeout=2).body == PLAINTEXT
        assert time.monotonic() - t0 < 1.0
        for i, k in enumerate(kinds):
            r = c.read_response(head=(k == "H"), timeout=30)
            if k == "H":
                assert r.status == 200 and r.header("Content-Length") == "27", (i, r)
            else:
                assert r.status == 200 and r.body == PLAINTEXT, (i, r)
        t.join(10)
        assert not t.is_alive() and not sent_err, sent_err
        assert c.pending() == b""
        assert c.is_open(0.1)
    finally:
        c.close()


# ---- many connections -----------------------------------------------------


def test_many_concurrent_connections(server):
    conns = []
    try:
        for _ in range(300):
            conns.append(Conn(server.port))
        for i, c in enumerate(conns):
            c.send(get("/test/params/c/%d" % i))
        for i, c in enumerate(conns):
            r = c.read_response(timeout=10)
            assert r.body == b"a=c b=%d" % i
    finally:
        for c in conns:
            c.close()


def test_max_connections(start_server):
    # the limit is per worker: one worker makes the sixth connection the one over it
    srv = start_server("--max-connections", "5", "--workers", "1")
    time.sleep(0.2)   # let the server see the readiness probe's close
    conns = []
    try:
        for _ in range(5):
            c = Conn(srv.port)
            c.send(get("/plaintext"))
            assert c.read_response().body == PLAINTEXT
            conns.append(c)
        # the 6th: a 503, or closed at once; never a hang
        extra = None
        try:
            extra = Conn(srv.port, timeout=3)
            extra.try_send(get("/plaintext"))
            try:
                r = extra.read_response(timeout=3)
                assert r.status == 503, f"6th connection over --max-connections 5 got {r!r}"
                extra.read_until_eof(timeout=3)
            except ProtocolError as e:
                assert "no response at all" in str(e), e   # closed without a response
        except ConnectionRefusedError:
            pass
        except ReadTimeout as e:
            raise AssertionError("6th connection hangs instead of 503/close") from e
        finally:
            if extra:
                extra.close()
        # the 5 are unaffected
        for c in conns:
            c.send(get("/json"))
            assert c.read_response().body == JSON
        # after closing one, a new connection is served (poll up to 2 s)
        conns.pop().close()
        deadline = time.monotonic() + 2.0
        ok = False
        while time.monotonic() < deadline and not ok:
            try:
                with Conn(srv.port, timeout=1) as c:
                    c.send(get("/plaintext"))
                    r = c.read_response(timeout=1)
                    ok = r.status == 200 and r.body == PLAINTEXT
            except (AssertionError, OSError):
                time.sleep(0.1)
        assert ok, "no new connection served after one of the 5 closed"
    finally:
        for c in conns:
            c.close()


def serve_new_connection_within(port, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            with Conn(port, timeout=1) as c:
                c.send(get("/plaintext"))
                r = c.read_response(timeout=1)
                if r.status == 200 and r.body == PLAINTEXT:
                    return True
                last = r
        except (AssertionError, OSError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"no new connection served within {seconds}s; last: {last!r}")


@pytest.mark.parametrize("what", ["partial_head", "partial_body", "full_request", "nothing"])
def test_closed_clients_free_their_slots(start_server, what):
    """Clients that close (FIN) right after sending — a partial head, a
    partial body, a whole request, or nothing — must not keep holding a
    connection slot until some timeout: with --max-connections 5 and 5 such
    clients gone, a new client is served at once. (A server that misses the
    EOF arriving together with the data would hold them for the 10 s
    header timeout.)"""
    srv = start_server("--max-connections", "5", "--workers", "1")
    time.sleep(0.2)
    data = {"partial_head": b"GET /plaintext HTTP/1.1\r\nHo",
            "partial_body": b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab",
            "full_request": get("/test/delay?ms=100"),
            "nothing": b""}[what]
    for _ in range(5):
        c = Conn(srv.port)
        if data:
            c.send(data)
        c.close()
    time.sleep(0.3)
    serve_new_connection_within(srv.port, 2.0)


# ---- robustness ------------------------------------------------------------


def test_garbage_connections(server):
    rng = random.Random(20240611)
    valid = get("/plaintext") + b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    for i in range(200):
        kind = i % 4
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))
        elif kind == 1:   # mutate a valid request
            b = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            data = bytes(b)
        elif kind == 2:   # truncate a valid request
            data = valid[:rng.randrange(1, len(valid))]
        else:             # printable junk with line breaks
            data = bytes(rng.choice(b"GET/ HTP1.:\r\nabcxyz0123;,\t") for _ in range(rng.randrange(1, 500)))
        try:
            c = Conn(server.port, timeout=1)
            c.try_send(data)
            if rng.random() < 0.3:
                c.wait_readable(0.02)
            c.abort() if rng.random() < 0.5 else c.close()
        except OSError:
            pass
    time.sleep(0.2)
    assert server.alive()
    assert fetch(server.port, "/plaintext").body == PLAINTEXT


def test_connect_and_close_immediately(server):
    for i in range(200):
        s = socket.create_connection((HOST, server.port), timeout=2)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    time.sleep(0.2)
    assert fetch(server.port, "/plaintext").body == PLAINTEXT


def test_reset_mid_response(server):
    for _ in range(10):
        c = Conn(server.port, rcvbuf=8192)
        c.send(get("/test/stream?chunks=500&size=65536"))
        got = 0
        while got < 50000:
            data = c.sock.recv(65536)
            assert data, "stream ended early"
            got += len(data)
        c.abort()
    for _ in range(10):   # and reset mid-request
        c = Conn(server.port)
        c.send(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        c.abort()
    time.sleep(0.2)
    assert fetch(server.port, "/plaintext").body == PLAINTEXT


def test_sigterm_with_open_connections(start_server):
    """SIGTERM with an idle keep-alive connection, a handler waiting, a
    half-received head and a stalled stream: exit 0 within 5 s, clean.
    (Short header and write timeouts, so that even a server that drains
    gracefully has nothing left to wait for after ~1 s.)"""
    srv = start_server("--header-timeout", "1s", "--write-timeout", "1s")
    idle = Conn(srv.port)
    idle.send(get("/plaintext"))
    idle.read_response()
    waiting = Conn(srv.port)
    waiting.send(get("/test/delay?ms=1000"))
    partial = Conn(srv.port)
    partial.send(b"GET /plaintext HTTP/1.1\r\nHo")
    stalled = Conn(srv.port, rcvbuf=4096)
    stalled.send(get("/test/stream?chunks=2000&size=65536"))
    time.sleep(0.3)
    try:
        problems = srv.stop()
        assert not problems, "\n".join(problems)
    finally:
        for c in (idle, waiting, partial, stalled):
            c.close()
