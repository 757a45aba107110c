"""Timeouts after the worker stalls: a peer whose bytes are already in its
socket is never declared dead or idle.

When a worker's loop does not run for a while (CPU starvation, a long
callback, a debugger), every peer's answer piles up in the kernel. On the
next iteration the loop dispatches one batch of readiness events (512), or
none at all when the stop interrupted its epoll_wait (EINTR after SIGCONT),
and then runs the due timers, so without care every connection whose event
is still in the kernel looks silent: a WebSocket whose pong is waiting would
be closed as a dead peer, a keep-alive HTTP connection whose next request
is waiting would be closed as idle.

Each test opens connections to a single in-process worker (more than one
event batch of them, but for the few large streams of the write test), gets every connection into the waiting state, stops the
worker with SIGSTOP, sends the answers while it is stopped, lets more than
the timeout pass, resumes it with SIGCONT and checks that no connection was
closed. No timing is asserted; every wait is bounded.
"""

import base64
import os
import selectors
import signal
import socket
import struct
import time

import pytest

from client import HOST, request

N = 1500                 # connections: about three event batches
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def client_frame(opcode, payload=b""):
    """A final, masked client frame (payload < 126 bytes)."""
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + key + body


class Peer:
    """One non-blocking client socket with a receive buffer."""

    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = None       # why the server ended it, once it did
        self.pings = []          # payloads of pings not answered yet
        self.messages = []       # data payloads received

    def send(self, data):
        self.sock.setblocking(True)
        self.sock.settimeout(5)
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.closed = self.closed or f"send: {e!r}"
        self.sock.setblocking(False)

    def read_head(self, deadline):
        """Blocking: the response head, which must be a 101 or a 200."""
        while b"\r\n\r\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no response head: {bytes(self.buf[:200])!r}"
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            assert data, f"EOF before the response head: {bytes(self.buf[:200])!r}"
            self.buf += data
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end])
        del self.buf[:end]
        return head

    def fill(self):
        """Reads what the socket holds (it is readable). False at EOF/reset."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError as e:
            self.closed = self.closed or f"recv: {e!r}"
            return False
        if not data:
            self.closed = self.closed or "EOF"
            return False
        self.buf += data
        return True

    def frames(self):
        """Parses the complete server frames in buf."""
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            assert not b1 & 0x80, "server frames are not masked"
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, off = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
            if len(self.buf) < off + n:
                return
            payload = bytes(self.buf[off:off + n])
            del self.buf[:off + n]
            op = b0 & 0x0F
            if op == PING:
                self.pings.append(payload)
            elif op == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.closed = self.closed or f"close frame {code}"
            elif op != PONG:
                self.messages.append(payload)

    def answer_pings(self):
        while self.pings and not self.closed:
            self.send(client_frame(PONG, self.pings.pop(0)))


def pump(peers, seconds, answer, stop=None):
    """Reads from every peer for at most `seconds` (or until stop() is
    true), answering pings when `answer`."""
    sel = selectors.DefaultSelector()
    for p in peers:
        if not p.closed:
            p.sock.setblocking(False)
            sel.register(p.sock, selectors.EVENT_READ, p)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not (stop and stop()):
            for key, _ in sel.select(timeout=0.05):
                p = key.data
                if not p.fill():
                    sel.unregister(p.sock)
                    continue
                p.frames()
                if answer:
                    p.answer_pings()
    finally:
        sel.close()


def closed(peers):
    return [p.closed for p in peers if p.closed]


@pytest.fixture
def peers():
    opened = []
    yield opened
    for p in opened:
        p.sock.close()


def process_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# epoll_wait, epoll_pwait, epoll_pwait2 by machine (/proc/PID/syscall)
EPOLL_SYSCALLS = {"x86_64": {232, 281, 441}, "aarch64": {22, 441}}


def in_epoll_wait(pid):
    """Whether the stopped main thread of pid was stopped inside epoll_wait
    (True when this machine's numbers are not known)."""
    want = EPOLL_SYSCALLS.get(os.uname().machine)
    if not want:
        return True
    with open(f"/proc/{pid}/syscall") as f:
        first = f.read().split()[0]
    return first.lstrip("-").isdigit() and int(first) in want


class Stopped:
    """SIGSTOPs a server process for the with-block and waits until it has
    stopped, so nothing the block sends reaches it before. It is stopped
    while it waits in epoll_wait, as an idle worker does (stopped while busy
    it is resumed and stopped again, for up to 0.3 s): resumed, its
    epoll_wait then fails with EINTR and the loop runs its due timers
    before it has dispatched any event. Always resumes it."""

    def __init__(self, server):
        self.pid = server.proc.pid

    def _stop(self):
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while process_state(self.pid) != "T":
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGCONT)
                pytest.fail("the server did not stop within 5 s of SIGSTOP")
            time.sleep(0.001)

    def __enter__(self):
        self._stop()
        deadline = time.monotonic() + 0.3
        while not in_epoll_wait(self.pid) and time.monotonic() < deadline:
            os.kill(self.pid, signal.SIGCONT)
            time.sleep(0.005)
            self._stop()
        return self

    def __exit__(self, *exc):
        os.kill(self.pid, signal.SIGCONT)


def open_websockets(port, n, peers):
    for _ in range(n):
        peers.append(Peer(port))
    for p in peers:
        key = base64.b64encode(os.urandom(16)).decode()
        p.send(request("GET", "/ws/echo", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
    deadline = time.monotonic() + 30
    for p in peers:
        head = p.read_head(deadline)
        assert head.startswith(b"HTTP/1.1 101 "), head
        p.sock.setblocking(False)


def test_websocket_pongs_waiting_in_the_socket_count_after_a_stall(start_server, peers):
    # ping after 1 s of silence, a dead peer 3 s after the ping
    s = start_server("--workers", "1", "--ws-ping-interval", "1s", "--ws-ping-timeout", "3s")
    open_websockets(s.port, N, peers)
    # every connection talks now (an unsolicited pong), so the pings come together
    for p in peers:
        p.send(client_frame(PONG, b"hello"))
    # wait for the pings without answering: every ping stays unanswered
    first = []

    def enough():
        pinged = sum(1 for p in peers if p.pings)
        if pinged and not first:
            first.append(time.monotonic())
        # stop well inside the 3 s ping timeout, even if some are late
        return pinged == len(peers) or (first and time.monotonic() - first[0] > 1.5)
    pump(peers, 15, answer=False, stop=enough)
    pinged = [p for p in peers if p.pings]
    # more than one event batch (512) must be waiting for the test to mean much
    assert len(pinged) >= N // 2, f"only {len(pinged)} of {N} connections were pinged in time"
    assert not closed(peers), f"closed before the stall: {closed(peers)[:5]}"
    # the worker stalls; the pongs arrive meanwhile and wait in its sockets
    with Stopped(s):
        for p in pinged:
            p.answer_pings()
        time.sleep(4.0)          # longer than --ws-ping-timeout after every ping
    # resumed: the pongs prove every peer alive; keep answering pings
    pump(peers, 3.0, answer=True)
    gone = closed(peers)
    assert not gone, (f"{len(gone)} of {N} live WebSocket peers were closed after "
                      f"the stall, e.g. {gone[:3]}")
    # and each still echoes
    for i, p in enumerate(peers):
        p.send(client_frame(TEXT, b"alive %d" % i))
    pump(peers, 15, answer=True, stop=lambda: all(p.messages or p.closed for p in peers))
    gone = closed(peers)
    assert not gone, f"{len(gone)} closed, e.g. {gone[:3]}"
    for i, p in enumerate(peers):
        assert p.messages == [b"alive %d" % i], p.messages


def read_http_responses(peers, count, seconds=15):
    """Reads `count` plaintext responses from every peer (blocking, in turn);
    a peer that ends early is marked closed."""
    deadline = time.monotonic() + seconds
    for p in peers:
        p.sock.setblocking(True)
        got = 0
        while got < count and not p.closed:
            try:
                head = p.read_head(deadline)
            except AssertionError as e:
                p.closed = str(e)[:80]
                break
            except OSError as e:
                p.closed = f"recv: {e!r}"
                break
            assert head.startswith(b"HTTP/1.1 200 "), head
            n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(p.buf) < n:
                p.sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = p.sock.recv(65536)
                assert data, "EOF inside a body"
                p.buf += data
            del p.buf[:n]
            got += 1


def test_keep_alive_request_waiting_in_the_socket_is_not_idle_after_a_stall(start_server,
                                                                          peers):
    s = start_server("--workers", "1", "--idle-timeout", "3s")
    for _ in range(N):
        peers.append(Peer(s.port))
    for p in peers:
        p.send(request("GET", "/plaintext"))
    read_http_responses(peers, 1)
    assert not closed(peers), closed(peers)[:5]
    # every connection is idle now; its next request arrives while the
    # worker stands still, for longer than the idle timeout
    with Stopped(s):
        for p in peers:
            p.send(request("GET", "/plaintext"))
        time.sleep(4.0)
    read_http_responses(peers, 1)
    gone = closed(peers)
    assert not gone, (f"{len(gone)} of {N} keep-alive connections with a request "
                      f"waiting were closed as idle after the stall, e.g. {gone[:3]}")


def test_stalled_write_resumes_when_the_client_read_during_a_stall(start_server, peers):
    """Streamed responses to clients that do not read: every connection
    waits to write. While the worker stands still the clients read what
    their sockets hold, making room, and the worker resumes after more than
    the write timeout: a send makes progress, so no connection is cut."""
    s = start_server("--workers", "1", "--write-timeout", "1s")
    n, chunks, size = 8, 32, 1 << 20   # 32 MiB each: more than the socket buffers hold
    for _ in range(n):
        peers.append(Peer(s.port))
    for p in peers:
        p.send(request("GET", f"/test/stream?chunks={chunks}&size={size}",
                       headers=[("Connection", "close")]))
    time.sleep(0.5)              # every send has backed up: the write waits are armed
    got = [0] * n
    ended = [False] * n

    def read_some(seconds):
        """Reads what arrives for `seconds` (or until every peer ended)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not all(ended):
            busy = False
            for i, p in enumerate(peers):
                if ended[i]:
                    continue
                try:
                    data = p.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError as e:
                    p.closed = f"recv: {e!r}"
                    ended[i] = True
                    continue
                if not data:
                    ended[i] = True
                    continue
                busy = True
                got[i] += len(data)
                p.buf = (p.buf + data)[-16:]
            if not busy:
                time.sleep(0.005)
    with Stopped(s):
        read_some(0.5)           # room in every socket: the kernel refills it
        time.sleep(1.5)          # then more than --write-timeout passes
    read_some(30)
    assert all(ended), f"responses still streaming after 30 s: {got}"
    cut = [(i, got[i], p.closed) for i, p in enumerate(peers)
           if p.closed or not bytes(p.buf).endswith(b"0\r\n\r\n")]
    assert not cut, (f"{len(cut)} of {n} streams whose client read during the stall "
                     f"were cut as stalled, e.g. {cut[:3]} (want {chunks * size}+ bytes)")
    assert min(got) > chunks * size
