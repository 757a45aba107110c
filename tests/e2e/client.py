"""A small, strict raw-socket HTTP/1.1 client for the end-to-end tests.

The tests talk to the server byte by byte, so they need a client that sends
exactly what it is given and reads responses with a parser that is at least
as strict as a careful user agent: every line must end in CRLF, the status
line and header fields must be well formed, Content-Length and chunked
framing are honoured exactly. Anything the server sends that a strict
client would reject raises ProtocolError (an AssertionError, so pytest shows
it as a test failure with the offending bytes).

Every socket operation is bounded by a deadline: no test can hang. A read
that runs past its deadline raises ReadTimeout (also an AssertionError).
"""

import re
import select
import socket
import struct
import time

__all__ = [
    "ProtocolError", "ReadTimeout", "Response", "Conn", "request",
    "connect", "free_port",
]

HOST = "127.0.0.1"
MAX_HEAD = 256 * 1024          # a response head larger than this is a bug

_STATUS_RE = re.compile(rb"^(HTTP/1\.[01]) ([1-5][0-9][0-9]) ([\x09\x20-\x7e\x80-\xff]*)$")
_TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FIELD_VALUE_RE = re.compile(rb"^[\x09\x20-\x7e\x80-\xff]*$")
_CHUNK_SIZE_RE = re.compile(rb"^([0-9A-Fa-f]{1,16})[ \t]*(;.*)?$")


class ProtocolError(AssertionError):
    """The server sent something a strict HTTP/1.1 client must reject."""


class ReadTimeout(AssertionError):
    """A bounded wait for server bytes ran out."""


def free_port():
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def request(method="GET", target="/plaintext", headers=None, body=b"",
            version="HTTP/1.1", host="localhost"):
    """Builds the bytes of one request. headers is a list of (name, value)
    or a dict; Host is added first when host is not None. No Content-Length
    is added: the caller writes the framing it means to test."""
    lines = [f"{method} {target} {version}".encode("latin-1")]
    if host is not None:
        lines.append(b"Host: " + host.encode("latin-1"))
    if headers:
        items = headers.items() if isinstance(headers, dict) else headers
        for name, value in items:
            n = name if isinstance(name, bytes) else name.encode("latin-1")
            v = value if isinstance(value, bytes) else str(value).encode("latin-1")
            lines.append(n + b": " + v)
    if isinstance(body, str):
        body = body.encode()
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def get(target="/plaintext", **kw):
    return request("GET", target, **kw)


class Response:
    """One parsed response. headers keeps order and case as sent."""

    def __init__(self, version, status, reason, headers, body, chunked,
                 trailers=None, raw_head=b""):
        self.version = version          # "HTTP/1.1"
        self.status = status            # int
        self.reason = reason            # str
        self.headers = headers          # [(name str, value str)]
        self.body = body                # bytes (decoded if chunked)
        self.chunked = chunked          # bool
        self.trailers = trailers or []
        self.raw_head = raw_head        # bytes, for messages

    def all(self, name):
        """Every value of the header fields named name (case-insensitive)."""
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header(self, name):
        """The one value of a header field, None if absent. More than one
        field with this name is a ProtocolError (none of the fields this
        suite reads may legitimately repeat)."""
        vals = self.all(name)
        if len(vals) > 1:
            raise ProtocolError(f"header {name} repeated: {vals!r}\n{self.raw_head!r}")
        return vals[0] if vals else None

    def tokens(self, name):
        """The comma-separated, lower-cased tokens of all fields name."""
        out = []
        for v in self.all(name):
            out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def __repr__(self):
        return (f"<Response {self.status} {self.reason!r} headers={self.headers!r} "
                f"body={self.body[:200]!r}{'...' if len(self.body) > 200 else ''}>")


class Conn:
    """One client connection with a receive buffer and a strict parser.

    timeout is the default bound, in seconds, of each read call."""

    def __init__(self, port, host=HOST, timeout=5.0, rcvbuf=None, sndbuf=None,
                 nodelay=True, connect_timeout=5.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(connect_timeout)
        self.sock.connect((host, port))
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.buf = bytearray()
        self.pos = 0              # parse position in buf
        self.eof = False          # peer finished sending (FIN or RST)
        self.reset = False        # the end was a RST (ECONNRESET)
        self.closed = False

    # ---- sending ---------------------------------------------------------

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def send_slowly(self, data, step=1, delay=0.0):
        """Sends data a few bytes per send() call, to exercise the server's
        handling of requests split at every possible point."""
        for i in range(0, len(data), step):
            self.sock.sendall(data[i:i + step])
            if delay:
                time.sleep(delay)

    def try_send(self, data):
        """Sends, returning False instead of raising when the server has
        already closed the connection (EPIPE / ECONNRESET)."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        if not self.closed:
            self.closed = True
            self.sock.close()

    def abort(self):
        """Closes with a RST instead of a FIN (SO_LINGER with timeout 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- receiving -------------------------------------------------------

    def _fill(self, deadline, what):
        """Reads more bytes into buf. Returns False at EOF. Raises
        ReadTimeout at the deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReadTimeout(f"timed out waiting for {what}; unparsed bytes: "
                              f"{bytes(self.buf[self.pos:self.pos + 300])!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise ReadTimeout(f"timed out waiting for {what}; unparsed bytes: "
                              f"{bytes(self.buf[self.pos:self.pos + 300])!r}") from None
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        if self.pos > (1 << 20) and self.pos > len(self.buf) // 2:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data
        return True

    def pending(self):
        """Bytes received but not parsed yet."""
        return bytes(self.buf[self.pos:])

    def _read_line(self, deadline, what, limit=MAX_HEAD):
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                if i == self.pos or self.buf[i - 1] != 0x0D:
                    raise ProtocolError(f"bare LF in {what}: "
                                        f"{bytes(self.buf[self.pos:i + 1])!r}")
                line = bytes(self.buf[self.pos:i - 1])
                self.pos = i + 1
                if b"\r" in line:
                    raise ProtocolError(f"bare CR in {what}: {line!r}")
                return line
            if len(self.buf) - self.pos > limit:
                raise ProtocolError(f"{what} longer than {limit} bytes")
            if not self._fill(deadline, what):
                raise ProtocolError(self._eof_msg(what))

    def _read_exact(self, n, deadline, what):
        while len(self.buf) - self.pos < n:
            if not self._fill(deadline, what):
                raise ProtocolError(self._eof_msg(what) +
                                    f" (needed {n} bytes, have {len(self.buf) - self.pos})")
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def _eof_msg(self, what):
        kind = "connection reset (RST)" if self.reset else "EOF"
        return (f"{kind} while reading {what}; unparsed bytes: "
                f"{bytes(self.buf[self.pos:self.pos + 300])!r}")

    def _read_fields(self, deadline, what):
        fields = []
        while True:
            line = self._read_line(deadline, what)
            if line == b"":
                return fields
            if line[:1] in (b" ", b"\t"):
                raise ProtocolError(f"obs-fold in {what}: {line!r}")
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN_RE.match(name):
                raise ProtocolError(f"malformed field line in {what}: {line!r}")
            value = value.strip(b" \t")
            if not _FIELD_VALUE_RE.match(value):
                raise ProtocolError(f"invalid octets in field value in {what}: {line!r}")
            fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def read_response(self, head=False, timeout=None):
        """Reads one response (interim 1xx responses are returned as they
        come: see read_final). head=True: the request was HEAD, so the
        response has no body whatever its framing headers say."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        # Nothing at all before EOF is reported distinctly: tests often
        # need to tell "closed without answering" from a broken response.
        while len(self.buf) == self.pos:
            if not self._fill(deadline, "a status line"):
                raise ProtocolError(self._eof_msg("a status line (no response at all)"))
        start = self.pos
        line = self._read_line(deadline, "the status line", limit=8192)
        m = _STATUS_RE.match(line)
        if not m:
            raise ProtocolError(f"malformed status line: {line!r}")
        version, status, reason = m.group(1).decode(), int(m.group(2)), m.group(3).decode("latin-1")
        headers = self._read_fields(deadline, "the response head")
        raw_head = bytes(self.buf[start:self.pos])
        resp = Response(version, status, reason, headers, b"", False, raw_head=raw_head)

        te = resp.tokens("transfer-encoding")
        cls = resp.all("content-length")
        if te and cls:
            raise ProtocolError(f"response has both Transfer-Encoding and Content-Length:\n{raw_head!r}")
        if len(cls) > 1:
            raise ProtocolError(f"response has {len(cls)} Content-Length fields:\n{raw_head!r}")
        if cls and not re.fullmatch(r"[0-9]+", cls[0]):
            raise ProtocolError(f"bad Content-Length {cls[0]!r}")
        if 100 <= status < 200 or status == 204:
            # RFC 9110 8.6: a server MUST NOT send Content-Length in a 1xx
            # or 204 response; RFC 9112 6.1: nor Transfer-Encoding.
            if te or cls:
                raise ProtocolError(f"{status} response with body framing:\n{raw_head!r}")
            return resp
        if status == 304:
            return resp
        if head:
            return resp
        if te:
            if te != ["chunked"]:
                raise ProtocolError(f"unexpected Transfer-Encoding {te!r}")
            resp.chunked = True
            resp.body, resp.trailers = self._read_chunked(deadline)
        elif cls:
            resp.body = self._read_exact(int(cls[0]), deadline, "the response body")
        else:
            # close-delimited body: everything up to EOF
            while self._fill(deadline, "a close-delimited body"):
                pass
            resp.body = bytes(self.buf[self.pos:])
            self.pos = len(self.buf)
        return resp

    def _read_chunked(self, deadline):
        parts = []
        while True:
            line = self._read_line(deadline, "a chunk-size line", limit=4096)
            m = _CHUNK_SIZE_RE.match(line)
            if not m:
                raise ProtocolError(f"malformed chunk-size line {line!r}")
            size = int(m.group(1), 16)
            if size == 0:
                trailers = self._read_fields(deadline, "the trailer section")
                return b"".join(parts), trailers
            parts.append(self._read_exact(size, deadline, "chunk data"))
            crlf = self._read_exact(2, deadline, "the CRLF after chunk data")
            if crlf != b"\r\n":
                raise ProtocolError(f"chunk data not followed by CRLF: {crlf!r}")

    def read_final(self, head=False, timeout=None):
        """Reads responses until a final (non-1xx) one; returns
        (final, [interim...])."""
        interim = []
        while True:
            r = self.read_response(head=head, timeout=timeout)
            if r.status >= 200:
                return r, interim
            interim.append(r)

    def read_until_eof(self, timeout=None):
        """Reads until the peer closes (FIN or RST). Returns the bytes that
        arrived and were not yet parsed. Raises ReadTimeout if the
        connection is still open at the deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self._fill(deadline, "the server to close the connection"):
            pass
        rest = bytes(self.buf[self.pos:])
        self.pos = len(self.buf)
        return rest

    def expect_eof(self, timeout=None, what="the response"):
        """Asserts the server closes the connection with no further bytes."""
        rest = self.read_until_eof(timeout)
        if rest:
            raise ProtocolError(f"expected EOF after {what}, got more bytes: {rest[:300]!r}")

    def wait_readable(self, timeout):
        """True when the socket has bytes or an EOF/error pending."""
        if len(self.buf) > self.pos or self.eof:
            return True
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        return bool(r)

    def is_open(self, wait=0.05):
        """True when the server has neither closed the connection nor sent
        anything within `wait` seconds."""
        if self.eof:
            return False
        if not self.wait_readable(wait):
            return True
        try:
            self.sock.settimeout(0.5)
            data = self.sock.recv(65536, socket.MSG_PEEK)
        except ConnectionResetError:
            return False
        except socket.timeout:
            return True
        return bool(data)


def connect(port, **kw):
    return Conn(port, **kw)


def fetch(port, target="/plaintext", method="GET", headers=None, body=b"",
          timeout=5.0):
    """One request on a fresh connection; returns the final response."""
    with Conn(port, timeout=timeout) as c:
        hdrs = list(headers or [])
        if body or method in ("POST", "PUT"):
            hdrs.append(("Content-Length", str(len(body))))
        c.send(request(method, target, headers=hdrs, body=body))
        r, _ = c.read_final(head=(method == "HEAD"))
        return r
