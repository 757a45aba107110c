"""myriad balance: the L7 load balancer, end to end with real processes.

Backends are small Python HTTP/1.1 servers (this file run as a script:
`python3 test_balance.py backend PORT NAME [DELAY_MS]`), one process each so
that a test can kill -9 one. Each answers with its name (body and
X-Backend), and can be slow, stream large bodies, hash uploads, or answer
with deliberately malformed responses; GET /stats tells what it saw
(connections, requests, malformed answers whose connection the balancer
then closed). Everything runs on 127.0.0.1 (loopback, not network
namespaces: the suite's traffic stays on 127.0.0.1).

The balancer runs with --workers 1 (in-process) unless a test is about the
supervisor (--workers 2: reload as a new generation, metrics summed over
workers). Every balancer must exit 0 on SIGTERM with a clean stderr (no
sanitizer report), like the servers of conftest.py.
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import Conn, ProtocolError, ReadTimeout, free_port, request, HOST  # noqa: E402
from conftest import clean_env, myriad_bin, sanitizer_report  # noqa: E402

THIS = os.path.abspath(__file__)


# ============================================================ the test backend
# (runs in its own process; only the standard library)

BAD = {
    # head-level malformations: the balancer must answer 502
    "cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"0\r\n\r\n",
    "double-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "space-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "garbage": b"\x16\x03\x01 this is not http at all\r\n\r\n",
    "status": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    "huge-head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20000 + b"\r\nContent-Length: 2\r\n\r\nok",
    "truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
    # body-level: the head was fine and is relayed; the body breaks
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    "short-body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
    # a valid response followed by a smuggled one: must never reach a client
    "extra": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
             b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nSMUGGLED!",
}


class Backend:
    """State shared by a backend process's connection threads."""

    def __init__(self, name, delay_ms):
        self.name = name.encode()
        self.delay = delay_ms / 1000.0
        self.lock = threading.Lock()
        self.conns = 0          # connections that made a request other than /stats
        self.requests = 0       # requests answered, all paths but /stats
        self.bad_sent = 0       # malformed answers sent
        self.bad_closed = 0     # ... whose connection the peer then closed
        self.sick = False       # /health answers 503

    def count(self, field, n=1):
        with self.lock:
            setattr(self, field, getattr(self, field) + n)


def _read_head(sock, buf):
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None, buf
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _read_body(sock, rest, headers, sink):
    """Reads a Content-Length or chunked body, feeding sink(bytes). Returns
    the bytes after it."""
    te = headers.get("transfer-encoding", "").lower()
    if te == "chunked":
        buf = rest
        while True:
            while b"\r\n" not in buf:
                buf += sock.recv(65536)
            line, _, buf = buf.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while not buf.startswith(b"\r\n") and b"\r\n\r\n" not in buf:
                    buf += sock.recv(65536)
                return buf[2:] if buf.startswith(b"\r\n") else buf.partition(b"\r\n\r\n")[2]
            while len(buf) < size + 2:
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("EOF in chunk")
                buf += data
            sink(buf[:size])
            buf = buf[size + 2:]
    left = int(headers.get("content-length", "0"))
    take = rest[:left]
    sink(take)
    left -= len(take)
    rest = rest[len(take):]
    while left > 0:
        data = sock.recv(min(left, 1 << 20))
        if not data:
            raise ConnectionError("EOF in body")
        sink(data)
        left -= len(data)
    return rest


def _respond(sock, status, body, extra=b"", keep=True):
    head = b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s" % (status, len(body), extra)
    if not keep:
        head += b"Connection: close\r\n"
    sock.sendall(head + b"\r\n" + body)


def _serve_conn(be, sock):
    counted = False   # connections are counted at their first request but /stats
    buf = b""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head, buf = _read_head(sock, buf)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            headers = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                headers[k.strip().lower()] = (headers.get(k.strip().lower(), "") +
                                              ("," if k.strip().lower() in headers else "") +
                                              v.strip())
            keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
            path, _, query = target.partition("?")
            args = dict(kv.partition("=")[::2] for kv in query.split("&") if kv)
            if path == "/stats":
                body = json.dumps({"conns": be.conns, "requests": be.requests,
                                   "bad_sent": be.bad_sent,
                                   "bad_closed": be.bad_closed}).encode()
                _respond(sock, 200, body, keep=keep)
                if not keep:
                    return
                continue
            if path == "/health":   # not counted as a request
                _respond(sock, 503 if be.sick else 200, b"ok", keep=keep)
                continue
            if path == "/sick":
                be.sick = args.get("on", "1") == "1"
                _respond(sock, 200, b"ok", keep=keep)
                continue
            be.count("requests")
            if not counted:
                be.count("conns")
                counted = True
            if be.delay:
                time.sleep(be.delay)
            if path.startswith("/bad/"):
                kind = path[5:]
                be.count("bad_sent")
                try:
                    sock.sendall(BAD[kind])
                except OSError:   # closed (reset) before we were done: closed
                    be.count("bad_closed")
                    return
                if kind == "short-body":   # the backend itself ends it early
                    return
                sock.settimeout(5)
                try:   # the balancer must close this connection now
                    while sock.recv(65536):
                        pass
                    be.count("bad_closed")
                except socket.timeout:
                    pass
                except OSError:   # a reset: closed with our bytes unread
                    be.count("bad_closed")
                return
            ident = b"X-Backend: " + be.name + b"\r\n"
            if path == "/slow":
                time.sleep(int(args.get("ms", "100")) / 1000.0)
                _respond(sock, 200, be.name, ident, keep)
            elif path in ("/upload", "/echo"):
                h = hashlib.sha256()
                got = [0]
                echo = []

                def sink(data, h=h, got=got, echo=echo):
                    h.update(data)
                    got[0] += len(data)
                    if path == "/echo":
                        echo.append(data)
                buf = _read_body(sock, buf, headers, sink)
                if path == "/echo":
                    _respond(sock, 200, b"".join(echo), ident, keep)
                else:
                    body = json.dumps({"name": be.name.decode(), "bytes": got[0],
                                       "sha256": h.hexdigest()}).encode()
                    _respond(sock, 200, body, ident, keep)
            elif path == "/headers":
                _respond(sock, 200, head, ident, keep)
            elif path == "/big":
                n = int(args.get("n", "0"))
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (n, ident))
                block = b"x" * (1 << 20)
                while n > 0:
                    sock.sendall(block[:min(n, len(block))])
                    n -= min(n, len(block))
            elif path == "/chunked":
                sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n%s\r\n" % ident)
                for i in range(int(args.get("n", "3"))):
                    sock.sendall(b"%x;ext=1\r\n%s\r\n" % (len(be.name) + 1, be.name + b"%d" % (i % 10)))
                sock.sendall(b"0\r\nX-Trailer: t\r\n\r\n")
            elif path == "/close":   # body delimited by closing the connection
                sock.sendall(b"HTTP/1.0 200 OK\r\n" + ident + b"\r\n" + be.name * 3)
                return
            elif path == "/nocontent":
                sock.sendall(b"HTTP/1.1 204 No Content\r\n" + ident + b"\r\n")
            elif path == "/status":
                _respond(sock, int(args.get("code", "200")), be.name, ident, keep)
            elif path == "/drop":   # read the request, then close without a word
                if args.get("who", be.name.decode()) == be.name.decode():
                    if method == "POST":
                        _read_body(sock, buf, headers, lambda data: None)
                    return
                _respond(sock, 200, be.name, ident, keep)
            elif path == "/hang":
                time.sleep(30)
                return
            else:
                if method == "HEAD":
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n"
                                 % (len(be.name), ident))
                else:
                    _respond(sock, 200, be.name, ident, keep)
            if not keep:
                return
    except (ConnectionError, OSError, ValueError):
        return
    finally:
        sock.close()


def backend_main(port, name, delay_ms):
    be = Backend(name, delay_ms)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((HOST, port))
    ls.listen(1024)
    print("ready", flush=True)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=_serve_conn, args=(be, s), daemon=True).start()


if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "backend":
    backend_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    sys.exit(0)


# ============================================================ processes

class BackendProc:
    def __init__(self, name, port=None, delay_ms=0):
        self.name = name
        self.port = port or free_port()
        self.delay_ms = delay_ms
        self.proc = None
        self.start()

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, THIS, "backend", str(self.port), self.name, str(self.delay_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", f"backend {self.name} did not start: {line!r}"

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stats(self):
        """What the backend saw (connections that only asked /stats are not
        counted)."""
        with Conn(self.port, timeout=5) as c:
            c.send(request("GET", "/stats", headers={"Connection": "close"}))
            return json.loads(c.read_response().body)


class Balancer:
    """One `myriad balance` process."""

    def __init__(self, workdir, backends, *flags, workers=1, admin=True, config=None,
                 wait=True):
        self.port = free_port()
        self.admin_port = free_port() if admin else None
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.stderr_path = os.path.join(self.workdir, "balance-%d.stderr" % self.port)
        argv = [myriad_bin(), "balance", "--listen", "%s:%d" % (HOST, self.port),
                "--workers", str(workers), "--shutdown-timeout", "5s"]
        if admin:
            argv += ["--admin-port", str(self.admin_port)]
        if config:
            argv += ["--config", config]
        for b in backends:
            argv += ["--backend", b if isinstance(b, str) else b.addr]
        argv += list(flags)
        self.argv = argv
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=self.workdir, env=clean_env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err)
        self.stopped = False
        if wait:
            self.wait_ready()

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        ports = [self.port] + ([self.admin_port] if self.admin_port else [])
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("balancer exited with %s: %s\n%s" % (
                    self.proc.returncode, " ".join(self.argv), self.stderr()), pytrace=False)
            try:
                for p in ports:
                    socket.create_connection((HOST, p), timeout=0.2).close()
                if "balancing over" in self.stderr():
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        pytest.fail("balancer not ready: %s\n%s" % (" ".join(self.argv), self.stderr()),
                    pytrace=False)

    def stop(self):
        """SIGTERM; returns problems (empty when it exited 0 with a clean log)."""
        if self.stopped:
            return []
        self.stopped = True
        problems = []
        if self.proc.poll() is not None:
            problems.append("balancer had exited with %s" % self.proc.returncode)
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                problems.append("balancer did not exit within 10 s of SIGTERM")
        if self.proc.returncode != 0 and not problems:
            problems.append("balancer exited with %s after SIGTERM" % self.proc.returncode)
        self._err.close()
        rep = sanitizer_report(self.stderr())
        if rep:
            problems.append("sanitizer report:\n" + rep)
        if problems:
            problems.append("command: %s\nstderr tail:\n%s" % (" ".join(self.argv),
                                                                self.stderr()[-3000:]))
        return problems

    def rss_kb(self):
        """Resident memory of the balancer's process tree, KiB."""
        total = 0
        for pid in [self.proc.pid] + _children(self.proc.pid):
            try:
                with open("/proc/%d/status" % pid) as f:
                    m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
                total += int(m.group(1)) if m else 0
            except OSError:
                pass
        return total

    def admin(self, method, path):
        with Conn(self.admin_port, timeout=5) as c:
            c.send(request(method, path, headers={"Content-Length": "0", "Connection": "close"}))
            return c.read_response()

    def metrics(self):
        r = self.admin("GET", "/metrics")
        assert r.status == 200, r
        out = {}
        for line in r.body.decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out


def _children(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    data = f.read()
                if int(data[data.rindex(")") + 2:].split()[1]) == pid:
                    out.append(int(name))
            except (OSError, ValueError):
                pass
    return out


@pytest.fixture
def procs(tmp_path):
    """Factories for backends and balancers, all stopped after the test; a
    balancer that crashed, failed to exit 0 or logged a sanitizer report
    fails the test."""
    started = {"backends": [], "balancers": []}

    class Factory:
        def backend(self, name, delay_ms=0, port=None):
            b = BackendProc(name, port=port, delay_ms=delay_ms)
            started["backends"].append(b)
            return b

        def balancer(self, backends, *flags, **kw):
            b = Balancer(tmp_path / ("bal%d" % len(started["balancers"])), backends, *flags, **kw)
            started["balancers"].append(b)
            return b

    yield Factory()
    problems = []
    for b in started["balancers"]:
        problems += b.stop()
    for b in started["backends"]:
        b.kill()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ============================================================ load

def get(port, target, conn=None, headers=None, timeout=5.0):
    """GET on conn (or a new connection); returns (response, conn)."""
    if conn is None:
        conn = Conn(port, timeout=timeout)
    conn.send(request("GET", target, headers=headers))
    return conn.read_response(), conn


class Load:
    """`threads` clients, each on its own keep-alive connection, sending GET
    target back to back until stopped. A connection the balancer closes
    after a response (Connection: close) is replaced; anything else that
    goes wrong — no response, a broken one, a status other than 200 — is a
    failure, recorded with its time."""

    def __init__(self, port, target="/", threads=8):
        self.port = port
        self.target = target
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []          # (monotonic time, description)
        self.by_backend = {}
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self):
        conn = None
        while not self.stop_flag.is_set():
            try:
                if conn is None:
                    conn = Conn(self.port, timeout=5)
                conn.send(request("GET", self.target))
                r = conn.read_response()
                if r.status != 200:
                    raise ProtocolError("status %d %r" % (r.status, r.body[:80]))
                with self.lock:
                    self.ok += 1
                    name = r.header("X-Backend")
                    self.by_backend[name] = self.by_backend.get(name, 0) + 1
                if "close" in r.tokens("connection"):
                    conn.close()
                    conn = None
            except (OSError, AssertionError) as e:
                with self.lock:
                    self.failures.append((time.monotonic(), repr(e)[:200]))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(10)

    def snapshot(self):
        with self.lock:
            return self.ok, list(self.failures), dict(self.by_backend)


def wait_until(pred, timeout, step=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    pytest.fail("timed out after %.1fs waiting for %s" % (timeout, what), pytrace=False)


def served_by(port, target, n, conn=None):
    """Sends n requests on one connection; returns backend name per request."""
    out = []
    for _ in range(n):
        r, conn = get(port, target, conn)
        assert r.status == 200, r
        out.append(r.header("X-Backend"))
    conn.close()
    return out


# ============================================================ command line

@pytest.mark.parametrize("args,word", [
    ([], "no backend"),
    (["--backend", "127.0.0.1"], "backend"),
    (["--backend", "127.0.0.1:80,weight=0"], "weight"),
    (["--backend", "127.0.0.1:80", "--backend", "127.0.0.1:80"], "twice"),
    (["--backend", "127.0.0.1:80", "--policy", "random"], "--policy"),
    (["--backend", "127.0.0.1:80", "--hash-key", "cookie"], "--hash-key"),
    (["--backend", "127.0.0.1:80", "--hash-balance-factor", "50"], "--hash-balance-factor"),
    (["--backend", "127.0.0.1:80", "--health-path", "x y"], "--health-path"),
    (["--backend", "127.0.0.1:80", "--listen", "nowhere"], "--listen"),
    (["--backend", "a..b:80"], "resolve"),   # fails in the resolver, no DNS traffic
    (["--backend", "127.0.0.1:80", "--retries", "9"], "--retries"),
])
def test_bad_flags(args, word):
    p = subprocess.run([myriad_bin(), "balance", *args], env=clean_env(), capture_output=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    lines = [l for l in p.stderr.decode().splitlines() if l.strip()]
    assert p.returncode == 2, (args, p)
    assert len(lines) == 1 and word in lines[0], lines


def test_help():
    p = subprocess.run([myriad_bin(), "balance", "--help"], env=clean_env(),
                       capture_output=True, timeout=10)
    assert p.returncode == 0
    out = p.stdout.decode()
    for flag in ("--backend", "--policy", "--health-path", "--admin-port", "--retry-budget"):
        assert flag in out


# ============================================================ forwarding

def test_forwarding_basics(procs):
    a = procs.backend("a")
    bal = procs.balancer([a])
    with Conn(bal.port) as c:
        # headers the backend sees: forwarding fields, no hop-by-hop ones
        c.send(request("GET", "/headers", headers=[
            ("Connection", "keep-alive, X-Hop"), ("X-Hop", "secret"), ("Keep-Alive", "5"),
            ("X-Forwarded-For", "198.51.100.1"), ("Proxy", "http://evil"), ("X-Keep", "1")]))
        r = c.read_response()
        seen = r.body.decode()
        assert r.status == 200 and r.header("X-Backend") == "a"
        assert "X-Forwarded-For: 198.51.100.1, 127.0.0.1\r\n" in seen, seen
        assert "X-Forwarded-Proto: http" in seen and "Forwarded: for=127.0.0.1;proto=http" in seen
        for gone in ("X-Hop", "Keep-Alive", "Proxy:", "Connection"):
            assert gone not in seen, seen
        assert "X-Keep: 1" in seen and "Host: localhost" in seen
        # HEAD, 204, chunked, close-delimited (re-framed as chunked), status codes
        c.send(request("HEAD", "/"))
        r = c.read_response(head=True)
        assert r.status == 200 and r.header("Content-Length") == "1" and r.body == b""
        c.send(request("GET", "/nocontent"))
        assert c.read_response().status == 204
        c.send(request("GET", "/chunked?n=4"))
        r = c.read_response()
        assert r.chunked and r.body == b"a0a1a2a3"
        assert a.stats()["conns"] == 1   # keep-alive on both sides: one backend connection
        c.send(request("GET", "/close"))
        r = c.read_response()
        assert r.chunked and r.body == b"aaa"
        c.send(request("GET", "/status?code=404"))
        assert c.read_response().status == 404
        # pipelined: answered in order
        c.send(request("GET", "/status?code=201") + request("GET", "/status?code=202"))
        assert [c.read_response().status for _ in range(2)] == [201, 202]
        # a request body with Content-Length, and a chunked one (re-framed)
        body = os.urandom(300000)
        c.send(request("POST", "/echo", headers={"Content-Length": len(body)}, body=body))
        assert c.read_response().body == body
        c.send(request("POST", "/echo", headers={"Transfer-Encoding": "chunked"},
                       body=b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\n"))
        assert c.read_response().body == b"hello world"
    assert a.stats()["conns"] == 2   # the close-delimited answer closed the first
    # HTTP/1.0 client: a chunked response comes delimited by close
    with Conn(bal.port) as c:
        c.send(request("GET", "/chunked?n=2", version="HTTP/1.0"))
        r = c.read_response()
        assert r.body == b"a0a1" and "close" in r.tokens("connection")
        c.expect_eof()
    # Expect: 100-continue is answered by the balancer
    with Conn(bal.port) as c:
        c.send(request("POST", "/echo", headers={"Content-Length": "4", "Expect": "100-continue"}))
        r = c.read_response()
        assert r.status == 100
        c.send(b"ping")
        assert c.read_response().body == b"ping"
    # malformed requests get the server's strict answers
    with Conn(bal.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert c.read_response().status == 400
        c.expect_eof()


def test_no_backend_available(procs):
    dead = free_port()   # nothing listens there
    bal = procs.balancer(["127.0.0.1:%d" % dead], "--eject-errors", "0")
    r, c = get(bal.port, "/")
    assert r.status == 502   # connect refused, retried, nothing else to try
    c.close()
    m = bal.metrics()
    assert m['myriad_balance_backend_errors_total{backend="127.0.0.1:%d",kind="connect"}' % dead] >= 1


# ============================================================ policies

def test_weighted_round_robin(procs):
    a, b, c = procs.backend("a"), procs.backend("b"), procs.backend("c")
    bal = procs.balancer([a.addr + ",weight=1", b.addr + ",weight=2", c.addr + ",weight=3"])
    names = served_by(bal.port, "/", 600)
    # smooth weighted round-robin is exact over whole rounds of 6
    assert (names.count("a"), names.count("b"), names.count("c")) == (100, 200, 300)
    # ... and interleaved: never more than 2 of c in a row (5,1,1-style bunching is not)
    assert "ccc" not in "".join(names)
    m = bal.metrics()
    assert m['myriad_balance_backend_requests_total{backend="%s"}' % c.addr] == 300
    assert m['myriad_balance_backend_responses_total{backend="%s",code="2xx"}' % b.addr] == 200
    assert m['myriad_balance_backend_response_seconds_count{backend="%s"}' % a.addr] == 100
    assert m['myriad_balance_backend_up{backend="%s"}' % a.addr] == 1
    assert m['myriad_balance_backend_pool_connections{backend="%s",state="idle"}' % a.addr] == 1
    assert m["myriad_balance_requests_total"] == 600


@pytest.mark.parametrize("policy", ["leastconn", "p2c"])
def test_spread_policies(procs, policy):
    bs = [procs.backend(n) for n in "abc"]
    bal = procs.balancer(bs, "--policy", policy)
    load = Load(bal.port, "/slow?ms=5", threads=6)
    time.sleep(1.5)
    load.stop()
    ok, failures, by = load.snapshot()
    assert not failures, failures[:3]
    assert ok > 150
    for n in "abc":   # equal backends: each within a fair share, give or take
        assert 0.18 < by.get(n, 0) / ok < 0.48, by


def test_slow_backend_avoided(procs):
    """A backend 20x slower than its peers gets a third of the requests
    under round-robin, and far fewer under leastconn and p2c, which see its
    requests pile up."""
    fast1, fast2 = procs.backend("fast1"), procs.backend("fast2")
    slow = procs.backend("slow", delay_ms=200)
    shares = {}
    for policy in ("rr", "leastconn", "p2c"):
        bal = procs.balancer([fast1, fast2, slow], "--policy", policy)
        load = Load(bal.port, "/slow?ms=10", threads=10)
        time.sleep(1.5)
        load.stop()
        ok, failures, by = load.snapshot()
        assert not failures, failures[:3]
        shares[policy] = by.get("slow", 0) / ok
    print("slow backend share by policy:", shares)
    # rr: the slow backend holds clients back, but still gets ~1/3 of requests
    assert shares["rr"] > 0.25, shares
    assert shares["leastconn"] < 0.10, shares
    assert shares["p2c"] < 0.12, shares


def test_consistent_hashing_stability(procs, tmp_path):
    """chash on the path: the same path always lands on the same backend;
    adding a fourth backend (reload of the config file with SIGHUP) moves
    about a quarter of the paths, all to the new one; removing one moves
    only that one's paths."""
    bs = [procs.backend(n) for n in "abcd"]
    conf = tmp_path / "balance.conf"

    def write_conf(members):
        conf.write_text("policy chash\nhash-key path\nhash-balance-factor 0\n" +
                        "".join("backend %s\n" % b.addr for b in members))

    write_conf(bs[:3])
    bal = procs.balancer([], config=str(conf))
    paths = ["/item/%d" % i for i in range(400)]

    def mapping():
        conn = Conn(bal.port)
        out = {}
        for p in paths:
            r, conn = get(bal.port, p, conn)
            assert r.status == 200
            out[p] = r.header("X-Backend")
        conn.close()
        return out

    m1 = mapping()
    assert mapping() == m1   # stable
    counts = {n: list(m1.values()).count(n) for n in "abc"}
    assert all(80 < v < 190 for v in counts.values()), counts

    write_conf(bs)
    bal.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded: 4 backends" in bal.stderr(), 5, what="the reload")
    m2 = mapping()
    moved = [p for p in paths if m2[p] != m1[p]]
    assert all(m2[p] == "d" for p in moved), [(p, m1[p], m2[p]) for p in moved][:5]
    assert 0.15 < len(moved) / len(paths) < 0.37, len(moved)

    write_conf([bs[0], bs[2], bs[3]])   # b leaves
    bal.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: bal.stderr().count("reloaded: 3 backends") == 1, 5, what="the reload")
    m3 = mapping()
    for p in paths:
        if m2[p] != "b":
            assert m3[p] == m2[p], p
        else:
            assert m3[p] != "b"


def test_hash_on_header_with_bounded_load(procs):
    bs = [procs.backend(n) for n in "abc"]
    bal = procs.balancer(bs, "--policy", "chash", "--hash-key", "header:X-User")
    homes = {}
    for user in ("alice", "bob", "carol", "dave"):
        conn = Conn(bal.port)
        seen = set()
        for _ in range(5):
            r, conn = get(bal.port, "/", conn, headers={"X-User": user})
            seen.add(r.header("X-Backend"))
        conn.close()
        assert len(seen) == 1, (user, seen)   # sequential: no load, always home
        homes[user] = seen.pop()
    # a hot key under concurrency spills over (factor 150%): more than one
    # backend serves it, and its home takes the largest share
    load = Load(bal.port, "/slow?ms=20", threads=9)
    time.sleep(0.3)
    load.stop()
    # Load sends no X-User: all requests hash the client address
    ok, failures, by = load.snapshot()
    assert not failures
    assert len(by) >= 2, by


# ============================================================ health and retries

def test_kill9_backend_under_load(procs):
    """kill -9 one of three backends while 8 clients keep requests flowing:
    at most a few requests fail (those in flight on it whose retry was not
    possible), then none; once it is back, rise health checks bring it back
    into rotation."""
    a, b, c = procs.backend("a"), procs.backend("b"), procs.backend("c")
    bal = procs.balancer([a, b, c], "--health-path", "/health", "--health-interval", "100ms",
                         "--health-timeout", "100ms", "--health-fall", "2", "--health-rise", "2",
                         "--slow-start", "0")
    load = Load(bal.port, "/slow?ms=20", threads=8)
    time.sleep(0.5)
    _, _, before = load.snapshot()
    assert before.get("b", 0) > 10, before
    port_b = b.port
    b.kill()
    t_kill = time.monotonic()
    time.sleep(1.5)
    ok1, failures, by1 = load.snapshot()
    # failures only right after the kill, and no more than requests in flight
    assert len(failures) <= 8, failures
    assert all(t - t_kill < 0.6 for t, _ in failures), failures
    m = bal.metrics()
    assert m['myriad_balance_backend_up{backend="%s"}' % b.addr] == 0
    # back on the same port: used again after `rise` passed checks
    b2 = procs.backend("b", port=port_b)
    time.sleep(1.0)
    _, _, by2 = load.snapshot()
    load.stop()
    ok, failures_end, by_end = load.snapshot()
    assert len(failures_end) == len(failures), failures_end
    assert by_end.get("b", 0) > by1.get("b", 0), (by1, by_end)
    assert b2.stats()["requests"] > 0
    assert bal.metrics()['myriad_balance_backend_up{backend="%s"}' % b.addr] == 1


def test_passive_ejection_and_retry(procs):
    """Without active checks: a backend that refuses connections costs no
    request (a refused connect is retried on another backend) and is
    ejected after --eject-errors failures in a row."""
    a = procs.backend("a")
    dead = "127.0.0.1:%d" % free_port()
    bal = procs.balancer([a.addr, dead], "--eject-errors", "3", "--eject-time", "60s")
    names = served_by(bal.port, "/", 30)
    assert names == ["a"] * 30
    m = bal.metrics()
    assert m['myriad_balance_backend_errors_total{backend="%s",kind="connect"}' % dead] == 3
    assert m['myriad_balance_backend_ejections_total{backend="%s"}' % dead] == 1
    assert m['myriad_balance_backend_up{backend="%s"}' % dead] == 0
    assert m["myriad_balance_retries_total"] == 3


def test_retry_budget_caps_retries(procs):
    """Every backend down and never ejected: each request tries (1 + retries)
    backends only while the budget lasts; then each fails after one try."""
    dead = ["127.0.0.1:%d" % free_port() for _ in range(3)]
    bal = procs.balancer(dead, "--eject-errors", "0", "--retries", "2", "--retry-budget", "10")
    conn = Conn(bal.port)
    for _ in range(100):
        r, conn = get(bal.port, "/", conn)
        assert r.status == 502
    conn.close()
    m = bal.metrics()
    # a burst of 10, then 10% of the 100 requests
    assert 15 <= m["myriad_balance_retries_total"] <= 21, m["myriad_balance_retries_total"]
    assert m["myriad_balance_retries_denied_total"] > 50


def test_backend_timeout(procs):
    a = procs.backend("a")
    bal = procs.balancer([a], "--backend-timeout", "300ms")
    t0 = time.monotonic()
    r, c = get(bal.port, "/hang")
    assert r.status == 504 and 0.25 < time.monotonic() - t0 < 3
    r, c = get(bal.port, "/", c)   # the client connection carries on
    assert r.status == 200
    c.close()
    assert bal.metrics()['myriad_balance_backend_errors_total{backend="%s",kind="timeout"}'
                         % a.addr] == 1


def test_retry_only_idempotent(procs):
    """A backend that reads a request and closes without answering: a GET is
    retried on the other backend (nothing was sent to the client yet); a
    POST is not (the backend may have acted on it), so the client gets 502."""
    a, b = procs.backend("a"), procs.backend("b")
    bal = procs.balancer([a, b], "--eject-errors", "0")
    conn = Conn(bal.port)
    for _ in range(6):   # round-robin: half of them try a first
        r, conn = get(bal.port, "/drop?who=a", conn)
        assert r.status == 200 and r.header("X-Backend") == "b"
    statuses = []
    for _ in range(6):
        conn.send(request("POST", "/drop?who=a", headers={"Content-Length": "2"}, body="hi"))
        r = conn.read_response()
        statuses.append((r.status, r.header("X-Backend")))
        if "close" in r.tokens("connection"):
            conn.close()
            conn = Conn(bal.port)
    conn.close()
    assert statuses.count((502, None)) == 3 and statuses.count((200, "b")) == 3, statuses
    m = bal.metrics()
    assert m['myriad_balance_backend_errors_total{backend="%s",kind="reset"}' % a.addr] == 6
    assert m['myriad_balance_backend_retries_total{backend="%s"}' % a.addr] == 3


# ============================================================ draining and reloading

def test_drain_under_load(procs):
    """POST /backends/NAME/drain: no new requests go to it, those in flight
    finish, no request fails; /ready brings it back."""
    a, b, c = procs.backend("a"), procs.backend("b"), procs.backend("c")
    bal = procs.balancer([a, b, c])
    load = Load(bal.port, "/slow?ms=20", threads=8)
    time.sleep(0.4)
    r = bal.admin("POST", "/backends/%s/drain" % b.addr)
    assert r.status == 200 and b"draining" in r.body
    time.sleep(0.1)   # requests already on b finish
    n_b = b.stats()["requests"]
    time.sleep(0.8)
    assert b.stats()["requests"] == n_b   # nothing new
    m = bal.metrics()
    assert m['myriad_balance_backend_draining{backend="%s"}' % b.addr] == 1
    assert m['myriad_balance_backend_pool_connections{backend="%s",state="idle"}' % b.addr] == 0
    assert bal.admin("POST", "/backends/127.0.0.1:1/drain").status == 404
    assert bal.admin("POST", "/backends/%s/ready" % b.addr).status == 200
    time.sleep(0.5)
    load.stop()
    ok, failures, by = load.snapshot()
    assert not failures, failures[:3]
    assert b.stats()["requests"] > n_b


def test_reload_changed_backends_under_load(procs, tmp_path):
    """Two workers under the supervisor; SIGHUP with a changed backend list
    starts a new generation and drains the old one: zero failed requests,
    the removed backend gets no more, the added one takes traffic, and the
    admin drain reaches every worker through the shared region."""
    a, b, c, d = (procs.backend(n) for n in "abcd")
    conf = tmp_path / "balance.conf"
    conf.write_text("backend %s\nbackend %s\nbackend %s\n" % (a.addr, b.addr, c.addr))
    bal = procs.balancer([], "--health-path", "/health", workers=2, config=str(conf))
    load = Load(bal.port, "/slow?ms=10", threads=8)
    time.sleep(0.6)
    # a drain through whichever worker answers applies to both
    assert bal.admin("POST", "/backends/%s/drain" % a.addr).status == 200
    time.sleep(0.4)   # the other worker picks the flag up within 100 ms
    n_a = a.stats()["requests"]
    time.sleep(0.5)
    assert a.stats()["requests"] == n_a
    bal.admin("POST", "/backends/%s/ready" % a.addr)
    conf.write_text("backend %s\nbackend %s\nbackend %s\n" % (a.addr, b.addr, d.addr))
    bal.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "generation 2" in bal.stderr(), 5, what="the new generation")
    time.sleep(2.0)   # old workers drain (linger 1 s, then close)
    n_c = c.stats()["requests"]
    time.sleep(0.7)
    load.stop()
    ok, failures, by = load.snapshot()
    assert not failures, failures[:5]
    assert c.stats()["requests"] == n_c   # removed: nothing new
    assert d.stats()["requests"] > 20      # added: in rotation
    time.sleep(0.3)   # every worker publishes its counters each 100 ms
    m = bal.metrics()
    assert m["myriad_balance_workers"] == 2
    # the counters of the drained generation are kept in the totals
    total = sum(m['myriad_balance_backend_requests_total{backend="%s"}' % x.addr]
                for x in (a, b, c, d))
    assert total >= ok * 0.95, (total, ok)
    assert m['myriad_balance_backend_configured{backend="%s"}' % c.addr] == 0


# ============================================================ malformed backends

HEAD_BAD = ["cl-te", "double-cl", "te-gzip", "bare-lf", "obs-fold", "space-colon", "garbage",
            "status", "switching", "huge-head"]


def test_malformed_responses_502(procs):
    """A response the balancer cannot frame exactly is never relayed: the
    client gets 502 and the backend connection is closed."""
    a = procs.backend("a")
    bal = procs.balancer([a], "--eject-errors", "0")
    conn = Conn(bal.port)
    for kind in HEAD_BAD:
        conn.send(request("GET", "/bad/" + kind))
        r = conn.read_response()
        assert r.status == 502, (kind, r)
        # the client connection is fine: the next request works
        r, conn = get(bal.port, "/", conn)
        assert r.status == 200, kind
    conn.close()
    wait_until(lambda: a.stats()["bad_closed"] == len(HEAD_BAD), 5,
               what="the balancer to close every bad backend connection")
    m = bal.metrics()
    assert m['myriad_balance_backend_errors_total{backend="%s",kind="malformed"}' % a.addr] \
        == len(HEAD_BAD)


def test_malformed_body_and_smuggling(procs):
    a = procs.backend("a")
    bal = procs.balancer([a], "--eject-errors", "0")
    # the head was good and went out; a bad chunk or a short body cuts the
    # client's response: it can never look complete
    for kind in ("bad-chunk", "short-body"):
        with Conn(bal.port, timeout=3) as c:
            c.send(request("GET", "/bad/" + kind))
            with pytest.raises(ProtocolError):
                c.read_response()
    # a response followed by a smuggled one: the first is relayed, the
    # connection carrying the rest is closed, and the next request on the
    # same client connection gets a genuine answer
    with Conn(bal.port) as c:
        c.send(request("GET", "/bad/extra"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello"
        c.send(request("GET", "/"))
        r = c.read_response()
        assert r.body == b"a" and b"SMUGGLED" not in r.raw_head
    wait_until(lambda: a.stats()["bad_closed"] == 2, 5, what="bad backend connections closed")


# ============================================================ streaming

def _rss_sampler(bal, stop, out):
    while not stop.is_set():
        out.append(bal.rss_kb())
        time.sleep(0.05)


def test_large_upload_and_download_flat_memory(procs):
    """A 1 GiB upload and a 1 GiB download pass through; the balancer's RSS
    stays flat (bodies are streamed through bounded buffers)."""
    size = 1 << 30
    a = procs.backend("a")
    bal = procs.balancer([a])
    base = bal.rss_kb()
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=_rss_sampler, args=(bal, stop, samples), daemon=True)
    sampler.start()
    try:
        block = os.urandom(1 << 20)
        digest = hashlib.sha256()
        with Conn(bal.port, timeout=60) as c:
            c.send(request("POST", "/upload", headers={"Content-Length": size}))
            for _ in range(size >> 20):
                c.sock.sendall(block)
                digest.update(block)
            r = c.read_response(timeout=60)
            got = json.loads(r.body)
            assert got["bytes"] == size and got["sha256"] == digest.hexdigest()
            # chunked upload: re-framed on the way
            c.send(request("POST", "/upload", headers={"Transfer-Encoding": "chunked"}))
            for _ in range(64):
                c.sock.sendall(b"100000\r\n" + block + b"\r\n")
            c.send(b"0\r\n\r\n")
            got = json.loads(c.read_response(timeout=60).body)
            assert got["bytes"] == 64 << 20
            # download, read as it comes
            c.send(request("GET", "/big?n=%d" % size))
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % size in head
            left = size - len(head.partition(b"\r\n\r\n")[2])
            c.sock.settimeout(60)
            while left > 0:
                n = len(c.sock.recv(min(left, 1 << 20)))
                assert n > 0
                left -= n
    finally:
        stop.set()
        sampler.join(5)
    peak = max(samples)
    print("balancer RSS: %d KiB before, %d KiB peak over 2 GiB streamed" % (base, peak))
    assert peak - base < 8 * 1024, (base, peak)   # KiB: buffers, not bodies


def test_client_aborts(procs):
    """Clients that leave mid-upload or before their answer: the backend
    connection of the abandoned exchange is closed, never pooled half-used,
    and the counts of requests in flight return to zero."""
    a = procs.backend("a")
    bal = procs.balancer([a])
    c = Conn(bal.port)
    c.send(request("POST", "/upload", headers={"Content-Length": 10 << 20}, body=b"x" * 65536))
    time.sleep(0.2)
    c.abort()   # RST mid-body
    c = Conn(bal.port)
    c.send(request("GET", "/slow?ms=300"))
    c.close()   # gone before the answer
    time.sleep(0.6)
    r = bal.admin("GET", "/backends")
    assert b"active=0" in r.body, r.body
    # both abandoned connections were closed; what is pooled is clean
    names = served_by(bal.port, "/", 5)
    assert names == ["a"] * 5
    m = bal.metrics()
    assert m['myriad_balance_backend_active_requests{backend="%s"}' % a.addr] == 0
    assert m['myriad_balance_backend_pool_connections{backend="%s",state="open"}' % a.addr] == \
        m['myriad_balance_backend_pool_connections{backend="%s",state="idle"}' % a.addr]


def test_myriad_serve_backends(procs, start_server):
    """The real stack: three `myriad serve` backends behind the balancer."""
    servers = [start_server("--workers", "1") for _ in range(3)]
    addrs = ["127.0.0.1:%d" % s.port for s in servers]
    bal = procs.balancer(addrs)
    conn = Conn(bal.port)
    for _ in range(300):
        r, conn = get(bal.port, "/plaintext", conn)
        assert r.status == 200 and r.body == b"Hello, World!"
    body = os.urandom(200000)
    conn.send(request("POST", "/test/echo", headers={"Content-Length": len(body)}, body=body))
    assert conn.read_response().body == body
    r, conn = get(bal.port, "/test/stream?chunks=50&size=1000", conn)
    assert r.chunked and r.body == b"x" * 50000
    conn.close()
    m = bal.metrics()
    counts = [m['myriad_balance_backend_requests_total{backend="%s"}' % a] for a in addrs]
    assert sorted(counts) == [100, 101, 101], counts
