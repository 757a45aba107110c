"""WebSocket conformance of GET /ws/echo (RFC 6455, RFC 7692).

Every rule is driven over a raw socket with frames built by hand here
(masking, RSV bits, 7/16/64-bit lengths, fragments, frames sent one byte
per write), and each failure must come back as the right close code,
followed by the server closing TCP with nothing more sent. Compression is
checked against Python's zlib (raw deflate, 2^15 or smaller windows, the
00 00 ff ff tail stripped and re-appended) with and without context
takeover; a real client (npm ws, perMessageDeflate on) does a round trip
through tests/e2e/ws_client/client.js.

Autobahn|Testsuite is not used: it is not packaged for Debian (only the
AutobahnPython library, python3-autobahn, is) nor on npm, and upstream it is
a Python 2 tool run from Docker, neither of which this machine can fetch.
These cases cover its categories instead (framing, pings, fragmentation,
UTF-8 incl. fail-fast and split sequences, close codes, limits,
permessage-deflate negotiation and round trips).
"""

import base64
import hashlib
import os
import json
import shutil
import signal
import socket
import struct
import subprocess
import time
import zlib

import pytest

from client import Conn, ProtocolError, ReadTimeout, request
from conftest import sanitizer_report

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TAIL = b"\x00\x00\xff\xff"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10


# ---- frames ----------------------------------------------------------------------

def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, key=None, length=None):
    """The bytes of one client frame. length overrides the encoded payload
    length (to lie about it); the length uses the minimal encoding."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = key if key is not None else os.urandom(4)
    return head + key + masked(payload, key)


def masked(payload, key):
    if not payload:
        return b""
    reps = (len(payload) + 3) // 4
    k = (key * reps)[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(len(payload), "big")


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def deflate_raw(data, comp=None, wbits=15):
    """RFC 7692 compression of one message: a sync flush with its tail cut."""
    c = comp if comp is not None else zlib.compressobj(wbits=-wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


class Frame:
    def __init__(self, fin, rsv, opcode, payload):
        self.fin, self.rsv, self.opcode, self.payload = fin, rsv, opcode, payload

    def close_code(self):
        assert self.opcode == CLOSE, self
        return struct.unpack("!H", self.payload[:2])[0] if self.payload else None

    def __repr__(self):
        return (f"<Frame op={self.opcode:#x} fin={self.fin} rsv={self.rsv:#x} "
                f"len={len(self.payload)} {self.payload[:60]!r}>")


class WS(Conn):
    """A raw client connection that speaks WebSocket after a handshake.
    Every one is closed when its test ends, even a failing one: a client
    left open would hold up the server's graceful stop (1001, then up to
    --ws-close-timeout for the answer)."""

    opened = []

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        WS.opened.append(self)

    def handshake(self, target="/ws/echo", extensions=None, headers=None, key=None,
                  expect=101):
        self.key = key or base64.b64encode(os.urandom(16)).decode()
        hdrs = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", self.key), ("Sec-WebSocket-Version", "13")]
        if extensions is not None:
            hdrs.append(("Sec-WebSocket-Extensions", extensions))
        hdrs += headers or []
        self.send(request("GET", target, headers=hdrs))
        r = self.read_response()
        assert r.status == expect, r
        if expect == 101:
            want = base64.b64encode(hashlib.sha1(self.key.encode() + GUID).digest()).decode()
            assert r.header("Sec-WebSocket-Accept") == want, r
            assert r.tokens("upgrade") == ["websocket"], r
            assert "upgrade" in r.tokens("connection"), r
        self.response = r
        return r

    def read_frame(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        b0, b1 = self._read_exact(2, deadline, "a frame header")
        if b1 & 0x80:
            raise ProtocolError(f"server frame is masked: {b0:#x} {b1:#x}")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read_exact(2, deadline, "a 16-bit length"))[0]
            if n < 126:
                raise ProtocolError("server used a non-minimal 16-bit length")
        elif n == 127:
            n = struct.unpack("!Q", self._read_exact(8, deadline, "a 64-bit length"))[0]
            if n <= 0xFFFF:
                raise ProtocolError("server used a non-minimal 64-bit length")
        payload = self._read_exact(n, deadline, "a frame payload")
        return Frame(bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, payload)

    def read_message(self, timeout=None, inflate=None):
        """Reads one data message (control frames other than pongs are an
        error here); returns (opcode, payload, compressed)."""
        f = self.read_frame(timeout)
        assert f.opcode in (TEXT, BINARY), f
        assert f.fin, f"echo came back fragmented: {f}"
        compressed = bool(f.rsv & RSV1)
        assert f.rsv & ~RSV1 == 0, f
        data = f.payload
        if compressed:
            assert inflate is not None, f"compressed frame without an extension: {f}"
            data = inflate.decompress(data + TAIL)
        return f.opcode, data, compressed

    def echo(self, opcode, payload, timeout=None):
        self.send(frame(opcode, payload))
        op, data, _ = self.read_message(timeout)
        assert op == opcode
        assert data == (payload.encode() if isinstance(payload, str) else payload)

    def expect_close(self, code, timeout=5.0):
        """The next frame is a close with code (None: no code), then EOF:
        after a close the server sends nothing more and closes TCP."""
        f = self.read_frame(timeout)
        assert f.opcode == CLOSE, f"expected close {code}, got {f}"
        assert f.close_code() == code, f"expected close {code}, got {f.close_code()} ({f})"
        self.expect_eof(timeout=timeout, what=f"the close frame ({code})")
        return f


def ws_connect(port, **kw):
    hs = {k: kw.pop(k) for k in ("target", "extensions", "headers") if k in kw}
    c = WS(port, **kw)
    c.handshake(**hs)
    return c


@pytest.fixture(autouse=True)
def _close_clients(start_server):
    """Torn down before the servers (it depends on start_server)."""
    yield
    for c in WS.opened:
        c.close()
    WS.opened.clear()


@pytest.fixture
def ws(server):
    c = ws_connect(server.port)
    yield c
    c.close()


# ---- echo and framing ------------------------------------------------------------

def test_echo_text_and_binary_all_length_forms(ws):
    ws.echo(TEXT, "hello")
    ws.echo(TEXT, "")
    ws.echo(BINARY, b"\x00\xff" * 3)
    ws.echo(TEXT, "κόσμε" * 40)                  # 16-bit length
    ws.echo(BINARY, os.urandom(125))
    ws.echo(BINARY, os.urandom(126))
    ws.echo(BINARY, os.urandom(65535))
    ws.echo(BINARY, os.urandom(65536))           # 64-bit length
    ws.echo(TEXT, "x" * 300000)
    assert ws.response.header("Sec-WebSocket-Extensions") is None


def test_fragments_come_back_as_one_message(ws):
    ws.send(frame(TEXT, "Hel", fin=False) + frame(CONT, "lo, ", fin=False) +
            frame(CONT, "", fin=False) + frame(CONT, "world"))
    assert ws.read_message() == (TEXT, b"Hello, world", False)
    # a multi-byte character split across fragments is fine
    ws.send(frame(BINARY, b"\x01", fin=False) + frame(CONT, b"\x02"))
    assert ws.read_message() == (BINARY, b"\x01\x02", False)
    ws.send(frame(TEXT, b"\xce", fin=False) + frame(CONT, b"\xba\xe1", fin=False) +
            frame(CONT, b"\xbd\xb9"))
    assert ws.read_message() == (TEXT, b"\xce\xba\xe1\xbd\xb9", False)   # U+03BA U+1F79


def test_ping_pong_including_inside_a_fragmented_message(ws):
    ws.send(frame(PING, b"ping-1"))
    f = ws.read_frame()
    assert (f.opcode, f.payload, f.fin) == (PONG, b"ping-1", True)
    ws.send(frame(PING, b"x" * 125))            # the largest control frame
    assert ws.read_frame().payload == b"x" * 125
    ws.send(frame(TEXT, "part one ", fin=False) + frame(PING, b"mid") +
            frame(CONT, "part two"))
    f = ws.read_frame()
    assert (f.opcode, f.payload) == (PONG, b"mid")
    assert ws.read_message() == (TEXT, b"part one part two", False)
    ws.send(frame(PONG, b"unsolicited"))         # ignored
    ws.echo(TEXT, "still open")


def test_frames_one_byte_per_write(server):
    c = ws_connect(server.port)
    try:
        c.send_slowly(frame(TEXT, "byte by byte"), step=1)
        assert c.read_message() == (TEXT, b"byte by byte", False)
        payload = os.urandom(300)                    # 16-bit length
        c.send_slowly(frame(BINARY, payload), step=1)
        assert c.read_message() == (BINARY, payload, False)
        c.send_slowly(frame(PING, b"p") + frame(TEXT, "a", fin=False) + frame(CONT, "b"), step=1)
        assert c.read_frame().opcode == PONG
        assert c.read_message() == (TEXT, b"ab", False)
        big = os.urandom(70000)                      # 64-bit length: header byte by byte
        raw = frame(BINARY, big)
        c.send_slowly(raw[:14], step=1)
        c.send_slowly(raw[14:], step=4096)
        assert c.read_message(timeout=10) == (BINARY, big, False)
        c.send_slowly(frame(CLOSE, close_payload(1000)), step=1)
        c.expect_close(1000)
    finally:
        c.close()


def test_handshake_and_frames_in_one_write(server):
    """Bytes that arrive with the upgrade request belong to WebSocket."""
    c = WS(server.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        c.send(request("GET", "/plaintext") + request("GET", "/ws/echo", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]) +
            frame(TEXT, "right behind") + frame(PING, b"pp"))
        assert c.read_response().status == 200        # the pipelined request first
        assert c.read_response().status == 101
        assert c.read_message() == (TEXT, b"right behind", False)
        assert c.read_frame().payload == b"pp"
    finally:
        c.close()


# ---- closing ---------------------------------------------------------------------

def test_close_handshake_echoes_the_code(ws):
    ws.send(frame(CLOSE, close_payload(1000, b"bye")))
    f = ws.expect_close(1000)
    assert f.payload == close_payload(1000)


def test_close_without_code(ws):
    ws.send(frame(CLOSE))
    f = ws.read_frame()
    assert (f.opcode, f.payload) == (CLOSE, b"")
    ws.expect_eof(what="the close reply")


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes_are_echoed(server, code):
    c = ws_connect(server.port)
    try:
        c.send(frame(CLOSE, close_payload(code, b"reason \xe2\x9c\x93")))
        c.expect_close(code)
    finally:
        c.close()


def test_nothing_is_sent_after_close(ws):
    ws.send(frame(CLOSE, close_payload(1000)) + frame(PING, b"late") + frame(TEXT, "late"))
    ws.expect_close(1000)      # no pong, no echo: the close frame then EOF


# ---- protocol errors: 1002 -------------------------------------------------------

PROTOCOL_ERRORS = {
    "unmasked": frame(TEXT, "hi", mask=False),
    "rsv1-without-extension": frame(TEXT, "hi", rsv=RSV1),
    "rsv2": frame(BINARY, "hi", rsv=RSV2),
    "rsv3": frame(TEXT, "hi", rsv=RSV3),
    "rsv-on-ping": frame(PING, "hi", rsv=RSV1),
    "control-126-bytes": frame(PING, b"x" * 126),
    "fragmented-ping": frame(PING, b"x", fin=False),
    "fragmented-close": frame(CLOSE, close_payload(1000), fin=False),
    "continuation-without-start": frame(CONT, "orphan"),
    "continuation-after-complete-message": frame(TEXT, "done") + frame(CONT, "more"),
    "new-message-inside-fragmented": frame(TEXT, "a", fin=False) + frame(TEXT, "b"),
    "binary-inside-fragmented": frame(TEXT, "a", fin=False) + frame(BINARY, "b"),
    "one-byte-close": frame(CLOSE, b"\x03"),
    "non-minimal-16-bit-length": bytes([0x81, 0xFE, 0x00, 0x05]) + b"\x00" * 4 + b"hello",
    "non-minimal-64-bit-length": bytes([0x82, 0xFF]) + struct.pack("!Q", 5) + b"\x00" * 4 + b"hello",
    "64-bit-length-top-bit": bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + b"\x00" * 4,
}
for _op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF):
    PROTOCOL_ERRORS[f"reserved-opcode-{_op:#x}"] = frame(_op, b"x")
for _code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
    PROTOCOL_ERRORS[f"close-code-{_code}"] = frame(CLOSE, close_payload(_code))


@pytest.mark.parametrize("name", sorted(PROTOCOL_ERRORS))
def test_protocol_errors_close_1002(server, name):
    c = ws_connect(server.port)
    try:
        c.send(PROTOCOL_ERRORS[name])
        frames = []
        while True:            # a valid message before the violation is still echoed
            f = c.read_frame()
            if f.opcode == CLOSE:
                break
            frames.append(f)
        assert f.close_code() == 1002, f"{name}: {f}"
        c.expect_eof(what="the 1002 close")
        assert all(x.opcode == TEXT for x in frames), frames
    finally:
        c.close()


def test_bad_first_byte_fails_before_the_rest_arrives(ws):
    ws.send(bytes([0x83]))          # FIN + reserved opcode 3, nothing else
    ws.expect_close(1002)


# ---- UTF-8: 1007 ----------------------------------------------------------------------

INVALID_UTF8 = {
    "lone-continuation": b"abc\x80",
    "overlong-nul": b"\xc0\x80",
    "overlong-3-byte": b"\xe0\x80\xaf",
    "overlong-4-byte": b"\xf0\x80\x80\xaf",
    "surrogate-d800": b"\xed\xa0\x80",
    "surrogate-dfff": b"\xed\xbf\xbf",
    "surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5-byte": b"\xf5\x80\x80\x80",
    "fe-ff": b"\xfe\xff",
    "truncated-at-end": "κόσμε".encode() + b"\xce",
    "missing-continuation": b"\xe1\x80A",
}


@pytest.mark.parametrize("name", sorted(INVALID_UTF8))
def test_invalid_utf8_closes_1007(server, name):
    c = ws_connect(server.port)
    try:
        c.send(frame(TEXT, INVALID_UTF8[name]))
        c.expect_close(1007)
    finally:
        c.close()


def test_invalid_utf8_across_fragments(server):
    # the first byte of a sequence ends fragment 1, a non-continuation starts 2
    c = ws_connect(server.port)
    c.send(frame(TEXT, b"ok \xe2\x9c", fin=False) + frame(CONT, b"A"))
    c.expect_close(1007)
    c.close()
    # a message that ends in the middle of a character
    c = ws_connect(server.port)
    c.send(frame(TEXT, b"ok \xe2", fin=False) + frame(CONT, b"\x9c"))
    c.expect_close(1007)
    c.close()
    # binary messages are not checked
    c = ws_connect(server.port)
    c.echo(BINARY, b"\xed\xa0\x80\xff")
    c.close()


def test_invalid_utf8_fails_fast(server):
    """1007 as soon as the bad byte is certain: before the fragment or the
    message is complete."""
    c = ws_connect(server.port)
    c.send(frame(TEXT, "κόσμε".encode() + b"\xed\xa0\x80" + b"edited", fin=False))
    c.expect_close(1007)       # no final fragment was ever sent
    c.close()
    c = ws_connect(server.port)
    key = os.urandom(4)
    full = frame(TEXT, b"valid prefix \xf4\x90" + b"x" * 5000, key=key)
    c.send(full[:40])          # the header promises 5015 bytes; 32 arrive
    c.expect_close(1007)
    c.close()


def test_invalid_utf8_in_close_reason(ws):
    ws.send(frame(CLOSE, close_payload(1000, b"bad \xc0\x80")))
    ws.expect_close(1007)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def is_asan_binary(path):
    with open(path, "rb") as f:
        return b"AddressSanitizer" in f.read()


# ---- limits: 1009 and slow readers: 1008 -----------------------------------------

def test_message_over_max_closes_1009(start_server):
    s = start_server("--ws-max-message", "1k")
    c = ws_connect(s.port)
    c.echo(TEXT, "y" * 1024)                      # exactly the limit
    c.send(frame(BINARY, b"", length=2000)[:8])   # the header alone is enough
    c.expect_close(1009)
    c.close()
    c = ws_connect(s.port)
    c.send(frame(TEXT, "a" * 600, fin=False) + frame(CONT, "b" * 600))
    c.expect_close(1009)
    c.close()
    # compressed: the inflated size counts (a 1 MiB bomb in ~1 KiB)
    c = ws_connect(s.port, extensions="permessage-deflate")
    bomb = deflate_raw(b"\x00" * (1 << 20))
    assert len(bomb) < 2048
    c.send(frame(BINARY, bomb, rsv=RSV1))
    c.expect_close(1009)
    c.close()


def test_slow_reader_is_closed_1008(start_server):
    """A client that sends but never reads: its echoes pile up past
    --ws-max-queue, the server drops them and closes with 1008, and its
    memory does not grow with what the client sent."""
    s = start_server("--ws-max-queue", "256k")
    other = ws_connect(s.port)
    c = WS(s.port, rcvbuf=16384)
    c.handshake()
    rss0 = rss_kib(s.proc.pid)
    msg = frame(BINARY, b"s" * 65536)
    sent = 0
    c.sock.settimeout(1.0)
    try:
        while sent < 32 << 20:
            c.sock.sendall(msg)
            sent += len(msg)
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass                         # the server stopped taking input: fine too
    grown = rss_kib(s.proc.pid) - rss0
    assert grown < 8 << 10, f"server RSS grew {grown} KiB for a reader that never reads"
    t0 = time.monotonic()            # nobody else waited for it
    other.echo(TEXT, "unaffected")
    assert time.monotonic() - t0 < 1.0
    other.close()
    # now read: the echoes that were already on their way, then 1008, then EOF
    echoes = 0
    while True:
        f = c.read_frame(timeout=10)
        if f.opcode == CLOSE:
            break
        assert f.opcode == BINARY and len(f.payload) == 65536
        echoes += 1
    assert f.close_code() == 1008
    assert echoes * len(msg) < min(sent, 16 << 20), (echoes, sent)
    c.expect_eof(what="the 1008 close")
    c.close()
    # the server is fine for everyone else
    c = ws_connect(s.port)
    c.echo(TEXT, "next")
    c.close()


# ---- keep-alive ---------------------------------------------------------------------------------

def test_server_pings_and_closes_dead_peers(start_server):
    s = start_server("--ws-ping-interval", "200ms", "--ws-ping-timeout", "400ms")
    c = ws_connect(s.port)
    t0 = time.monotonic()
    f = c.read_frame(timeout=3)
    assert f.opcode == PING and time.monotonic() - t0 >= 0.15
    c.send(frame(PONG, f.payload))               # alive: another ping follows
    f = c.read_frame(timeout=3)
    assert f.opcode == PING
    t1 = time.monotonic()                        # now play dead
    c.expect_eof(timeout=3, what="the dead-peer timeout")
    assert 0.3 <= time.monotonic() - t1 < 2.5
    c.close()
    # any traffic counts as alive: a client that keeps talking is never pinged
    c = ws_connect(s.port)
    for _ in range(8):
        time.sleep(0.1)
        c.echo(TEXT, "chatty")
    c.close()


# ---- graceful stop: 1001 ---------------------------------------------------------

def wait_stopped(s, timeout=5):
    """The server, sent SIGTERM by the test, exited 0 with a clean stderr."""
    s.proc.wait(timeout)
    s.kill()                       # marks it stopped for the fixture's teardown
    assert s.proc.returncode == 0, s.stderr()[-2000:]
    assert sanitizer_report(s.stderr()) is None, s.stderr()[-3000:]


def test_graceful_stop_sends_1001(start_server):
    s = start_server("--ws-close-timeout", "3s")
    a = ws_connect(s.port)
    b = ws_connect(s.port)
    a.echo(TEXT, "before")
    b.send(frame(TEXT, "half of a message", fin=False))
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    for c in (a, b):
        f = c.read_frame(timeout=5)
        assert f.opcode == CLOSE and f.close_code() == 1001, f
        c.send(frame(CLOSE, close_payload(1001)))
        c.expect_eof(what="the end after 1001")   # the server closes first
    wait_stopped(s)
    assert time.monotonic() - t0 < 2, "the server waited for more than the handshakes"
    a.close()
    b.close()


def test_graceful_stop_is_bounded_when_clients_do_not_answer(start_server):
    s = start_server("--ws-close-timeout", "300ms")
    c = ws_connect(s.port)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    f = c.read_frame(timeout=5)
    assert f.close_code() == 1001
    wait_stopped(s)                    # never answered: the server still stops
    assert time.monotonic() - t0 < 3
    c.close()


# ---- handshake refusals ----------------------------------------------------------

def raw_handshake(port, headers, method="GET", version="HTTP/1.1", target="/ws/echo"):
    with Conn(port) as c:
        c.send(request(method, target, headers=headers, version=version))
        r = c.read_response()
        if r.status == 426:
            # still an HTTP connection: the next request is served
            c.send(request("GET", "/plaintext"))
            assert c.read_response().status == 200
        return r


KEY = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
VER = ("Sec-WebSocket-Version", "13")
UPG = ("Upgrade", "websocket")
CON = ("Connection", "Upgrade")


def test_handshake_accept_value_of_the_rfc_example(server):
    c = WS(server.port)
    r = c.handshake(key="dGhlIHNhbXBsZSBub25jZQ==")
    assert r.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    c.close()


def test_handshake_tokens_are_case_insensitive(server):
    c = WS(server.port)
    c.handshake(headers=[])  # the default headers, then with odd case:
    c.close()
    with Conn(server.port) as c:
        c.send(request("GET", "/ws/echo", headers=[
            ("upgrade", "WebSocket"), ("connection", "keep-alive, UPGRADE"), KEY, VER]))
        assert c.read_response().status == 101


@pytest.mark.parametrize("case,headers,status", [
    ("plain-get", [], 426),
    ("no-upgrade-header", [CON, KEY, VER], 426),
    ("upgrade-to-something-else", [("Upgrade", "h2c"), CON, KEY, VER], 426),
    ("version-8", [UPG, CON, KEY, ("Sec-WebSocket-Version", "8")], 426),
    ("no-version", [UPG, CON, KEY], 426),
    ("two-versions", [UPG, CON, KEY, ("Sec-WebSocket-Version", "13, 8")], 426),
    ("no-connection-upgrade", [UPG, ("Connection", "keep-alive"), KEY, VER], 400),
    ("no-key", [UPG, CON, VER], 400),
    ("short-key", [UPG, CON, ("Sec-WebSocket-Key", "c2hvcnQ="), VER], 400),
    ("key-not-base64", [UPG, CON, ("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!=="), VER], 400),
    ("two-keys", [UPG, CON, KEY, KEY, VER], 400),
])
def test_handshake_refusals(server, case, headers, status):
    r = raw_handshake(server.port, headers)
    assert r.status == status, (case, r)
    if status == 426:
        assert r.header("Sec-WebSocket-Version") == "13", r
        assert r.tokens("upgrade") == ["websocket"], r


def test_handshake_needs_get_and_http11(server):
    assert raw_handshake(server.port, [UPG, CON, KEY, VER], method="POST").status == 405
    r = raw_handshake(server.port, [UPG, CON, KEY, VER, ("Host", "x")], version="HTTP/1.0")
    assert r.status == 400
    with Conn(server.port) as c:     # a body on a handshake
        c.send(request("GET", "/ws/echo", headers=[UPG, CON, KEY, VER, ("Content-Length", "2")],
                       body=b"hi"))
        assert c.read_response().status == 400


# ---- permessage-deflate -------------------------------------------------------------------------------

@pytest.mark.parametrize("offer,response", [
    ("permessage-deflate", "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10"),
    ('permessage-deflate; server_max_window_bits="12"', "permessage-deflate; server_max_window_bits=12"),
    # declined offers: the extension is left out, the upgrade still happens
    ("permessage-deflate; server_max_window_bits=8", None),
    ("permessage-deflate; server_max_window_bits=16", None),
    ("permessage-deflate; client_max_window_bits=7", None),
    ("permessage-deflate; server_no_context_takeover=yes", None),
    ("permessage-deflate; mystery_param", None),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
    ("x-webkit-deflate-frame", None),
    ("permessage-deflate;;", None),                           # malformed
    # the first acceptable offer wins
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover"),
    ("foo, permessage-deflate", "permessage-deflate"),
])
def test_deflate_negotiation(server, offer, response):
    c = ws_connect(server.port, extensions=offer)
    assert c.response.header("Sec-WebSocket-Extensions") == response
    if response is None:     # not negotiated: a compressed frame is a violation
        c.send(frame(TEXT, deflate_raw(b"hello" * 30), rsv=RSV1))
        c.expect_close(1002)
    else:
        c.echo(TEXT, "negotiated, and plain frames still work")
    c.close()


def test_deflate_round_trip_with_context_takeover(server):
    c = ws_connect(server.port, extensions="permessage-deflate; client_max_window_bits")
    comp = zlib.compressobj(wbits=-15)           # the client's context
    inf = zlib.decompressobj(wbits=-15)          # the server's, as we see it
    msg = ("The quick brown fox jumps over the lazy dog; " * 40).encode()
    sizes = []
    for _ in range(3):
        c.send(frame(TEXT, deflate_raw(msg, comp), rsv=RSV1))
        f = c.read_frame()
        assert f.opcode == TEXT and f.rsv == RSV1, f
        assert inf.decompress(f.payload + TAIL) == msg
        sizes.append(len(f.payload))
    assert sizes[0] < len(msg) // 5
    assert sizes[1] < sizes[0] // 2 and sizes[2] < sizes[0] // 2, sizes   # the window is kept
    # a compressed message in fragments (RSV1 on the first only), with a ping between
    data = deflate_raw(os.urandom(3000) + msg, comp)
    c.send(frame(BINARY, data[:10], rsv=RSV1, fin=False) + frame(PING, b"p") +
           frame(CONT, data[10:500], fin=False) + frame(CONT, data[500:]))
    assert c.read_frame().opcode == PONG
    op, out, compressed = c.read_message(inflate=inf)
    assert (op, compressed) == (BINARY, True) and out[3000:] == msg
    # uncompressed frames mix with compressed ones; small echoes go out plain
    c.send(frame(TEXT, "plain"))
    assert c.read_message(inflate=inf) == (TEXT, b"plain", False)
    c.send(frame(CLOSE, close_payload(1000)))
    c.expect_close(1000)
    c.close()


def test_deflate_round_trip_without_context_takeover(server):
    c = ws_connect(server.port, extensions="permessage-deflate; server_no_context_takeover; "
                                           "client_no_context_takeover")
    msg = ("no context takeover here " * 50).encode()
    sizes = []
    for _ in range(3):
        c.send(frame(TEXT, deflate_raw(msg), rsv=RSV1))   # a fresh compressor each time
        f = c.read_frame()
        assert f.rsv == RSV1, f
        assert zlib.decompressobj(wbits=-15).decompress(f.payload + TAIL) == msg
        sizes.append(len(f.payload))
    assert sizes[0] == sizes[1] == sizes[2] and sizes[0] < len(msg) // 5
    c.close()


def test_deflate_server_window_is_limited(server):
    """server_max_window_bits=10: no back-reference may reach past 1 KiB.
    A random block repeated 2000 bytes later compresses only with a larger
    window."""
    block = os.urandom(2000)
    c = ws_connect(server.port, extensions="permessage-deflate; server_max_window_bits=10")
    c.send(frame(BINARY, block + block))
    f = c.read_frame()
    assert f.rsv == RSV1
    assert zlib.decompressobj(wbits=-10).decompress(f.payload + TAIL) == block + block
    assert len(f.payload) > 3900                # the repeat was out of reach
    c.close()
    c = ws_connect(server.port, extensions="permessage-deflate")
    c.send(frame(BINARY, block + block))
    f = c.read_frame()
    assert zlib.decompressobj(wbits=-15).decompress(f.payload + TAIL) == block + block
    assert len(f.payload) < 2100                # with 2^15 it does reach back
    c.close()


def test_deflate_protocol_errors(server):
    c = ws_connect(server.port, extensions="permessage-deflate")
    data = deflate_raw(b"abc" * 100)
    c.send(frame(TEXT, data[:5], rsv=RSV1, fin=False) + frame(CONT, data[5:], rsv=RSV1))
    c.expect_close(1002)                        # RSV1 on a continuation
    c.close()
    c = ws_connect(server.port, extensions="permessage-deflate")
    c.send(frame(PING, b"x", rsv=RSV1))
    c.expect_close(1002)
    c.close()
    c = ws_connect(server.port, extensions="permessage-deflate")
    c.send(frame(BINARY, b"\xff\xff\xff\xff\x00\x11", rsv=RSV1))
    c.expect_close(1007)                        # not deflate data
    c.close()
    c = ws_connect(server.port, extensions="permessage-deflate")
    c.send(frame(TEXT, deflate_raw(b"ok \xed\xa0\x80"), rsv=RSV1))
    c.expect_close(1007)                        # invalid UTF-8 inside
    c.close()


def test_deflate_flags(start_server):
    s = start_server("--ws-deflate=false")
    c = ws_connect(s.port, extensions="permessage-deflate")
    assert c.response.header("Sec-WebSocket-Extensions") is None
    c.close()
    s = start_server("--ws-deflate-takeover=false")
    c = ws_connect(s.port, extensions="permessage-deflate")
    assert c.response.header("Sec-WebSocket-Extensions") == \
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    c.send(frame(TEXT, "x" * 500))
    assert c.read_message(inflate=zlib.decompressobj(wbits=-15)) == (TEXT, b"x" * 500, True)
    c.close()
    c = ws_connect(s.port, extensions="permessage-deflate; server_max_window_bits=10")
    assert c.response.header("Sec-WebSocket-Extensions") == \
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " \
        "server_max_window_bits=10"     # the longest response
    c.close()


# ---- randomized sequences ------------------------------------------------------------

def random_frames(rnd, pmd):
    """A mix of valid and broken frames, as a misbehaving client sends."""
    out = []
    for _ in range(rnd.randint(1, 8)):
        kind = rnd.randrange(10)
        size = rnd.choice([0, 1, 5, 125, 126, 300, 4096, 70000])
        data = bytes(rnd.getrandbits(8) for _ in range(min(size, 64))) * (size // 64 + 1)
        data = data[:size]
        if kind == 0:
            out.append(frame(TEXT, "é" * (size // 2)))
        elif kind == 1:
            out.append(frame(BINARY, data))
        elif kind == 2:
            cut = rnd.randint(0, size)
            out.append(frame(rnd.choice([TEXT, BINARY]), data[:cut], fin=False) +
                       frame(PING, data[:20]) + frame(CONT, data[cut:]))
        elif kind == 3:
            out.append(frame(rnd.choice([PING, PONG]), data[:125]))
        elif kind == 4 and pmd:
            out.append(frame(BINARY, deflate_raw(data), rsv=RSV1))
        elif kind == 5:
            out.append(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 40))))
        elif kind == 6:
            out.append(frame(CLOSE, close_payload(rnd.choice([1000, 1001, 1005, 3000, 999]))))
        elif kind == 7:
            out.append(frame(rnd.randrange(16), data[:200], fin=rnd.random() < 0.7,
                             rsv=rnd.choice([0, 0, RSV1, RSV2])))
        elif kind == 8 and pmd:
            out.append(frame(TEXT, deflate_raw(data)[:rnd.randint(0, 30)], rsv=RSV1))
        else:
            out.append(frame(TEXT, data.decode("latin-1").encode()[:size]))
    return b"".join(out)


def test_random_sequences_never_break_the_server(server):
    """Seeded random client behaviour: every server frame is well formed,
    a close is always followed by EOF, and the server lives on."""
    import random
    rnd = random.Random(20261127)
    for _ in range(60):
        pmd = rnd.random() < 0.5
        c = ws_connect(server.port, extensions="permessage-deflate" if pmd else None)
        data = random_frames(rnd, pmd)
        step = rnd.choice([1, 7, 512, len(data) or 1])
        if step == 1:
            data = data[:600]
        data += frame(PING, b"sentinel")     # answered last if all went well
        for i in range(0, len(data), step):
            if not c.try_send(data[i:i + step]):
                break
        inflate = zlib.decompressobj(wbits=-15)
        try:
            while True:
                f = c.read_frame(timeout=0.3)
                if f.opcode == CLOSE:
                    c.expect_eof(what="the close frame")
                    break
                if f.opcode == PONG and f.payload == b"sentinel":
                    break
                if f.rsv & RSV1:
                    assert pmd and f.opcode in (TEXT, BINARY), f
                    inflate.decompress(f.payload + TAIL)
                else:
                    assert f.rsv == 0, f
        except (ReadTimeout, ProtocolError) as e:
            # the connection may legitimately still be open, or end
            # without a close frame if our bytes were cut mid-frame
            assert isinstance(e, ReadTimeout) or c.eof, e
        c.close()
    with ws_connect(server.port) as c:
        c.echo(TEXT, "still here")


# ---- a real client ---------------------------------------------------------------

def node_client_dir():
    """tests/e2e/ws_client installed (npm ci, from its lock file) into
    build/ws_client, outside the source tree."""
    src = os.path.join(ROOT, "tests", "e2e", "ws_client")
    dst = os.path.join(ROOT, "build", "ws_client")
    os.makedirs(dst, exist_ok=True)
    changed = False
    for name in ("package.json", "package-lock.json", "client.js"):
        a, b = os.path.join(src, name), os.path.join(dst, name)
        with open(a, "rb") as f:
            want = f.read()
        have = None
        if os.path.exists(b):
            with open(b, "rb") as f:
                have = f.read()
        if have != want:
            with open(b, "wb") as f:
                f.write(want)
            changed |= name != "client.js"
    stamp = os.path.join(dst, "node_modules", ".package-lock.json")
    if changed or not os.path.exists(stamp):
        if not shutil.which("npm") or not shutil.which("node"):
            pytest.fail("node and npm are needed (scripts/deps.sh installs nodejs npm)")
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=dst, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"
    return dst


@pytest.mark.parametrize("mode", ["takeover", "no-takeover"])
def test_npm_ws_client_round_trip(server, mode):
    d = node_client_dir()
    r = subprocess.run(["node", "client.js", str(server.port), mode], cwd=d,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"client failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["echoed"] == 6 and out["close"]["code"] == 1000, out
    assert out["extensions"].startswith("permessage-deflate"), out
    if mode == "no-takeover":
        assert "server_no_context_takeover" in out["extensions"]


# ---- memory of idle connections --------------------------------------------------

def test_idle_connections_are_small(start_server):
    """2000 idle WebSocket connections (after a compressed echo each, without
    context takeover): the server's resident memory per connection."""
    s = start_server("--ws-ping-interval", "0")
    n = 2000
    warm = [ws_connect(s.port) for _ in range(50)]   # pools and heap warmed up
    for c in warm:
        c.echo(TEXT, "warm")
    time.sleep(0.2)
    before = rss_kib(s.proc.pid)
    conns = []
    try:
        for _ in range(n):
            c = WS(s.port)
            c.handshake(extensions="permessage-deflate; server_no_context_takeover; "
                                   "client_no_context_takeover")
            conns.append(c)
        for c in conns[:200]:
            c.send(frame(TEXT, deflate_raw(b"idle " * 40), rsv=RSV1))
            assert c.read_frame().rsv == RSV1
        time.sleep(0.3)
        per_conn = (rss_kib(s.proc.pid) - before) * 1024 / n
        print(f"\nidle WebSocket: {per_conn:.0f} bytes of server RSS per connection")
        limit = 8192 if is_asan_binary(s.argv[0]) else 1024
        assert per_conn < limit, f"{per_conn:.0f} B per idle WebSocket connection"
        conns[0].echo(TEXT, "all still open")
    finally:
        for c in conns + warm:
            c.close()
