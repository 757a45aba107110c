"""Redis servers for the end-to-end tests: Debian's redis-server on a free
loopback port in a temporary directory, no persistence, stdlib only.

Every wait is bounded. kill()/stop() and the module-level cleanup (atexit)
touch only the servers started here, by PID; restart() keeps the port, so a
client that was connected can reconnect to the same URL.

    with RedisServer() as rs:
        rs.url                          # redis://127.0.0.1:PORT
        rs.cli("SET", "k", "v")         # redis-cli -p PORT SET k v -> "OK"
        rs.kill()                       # SIGKILL: the server vanishes mid-stream
        rs.restart()                    # the same port, an empty data set
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
HOST = "127.0.0.1"
START_TIMEOUT = 10.0   # s until PING answers
STOP_TIMEOUT = 5.0     # s for SIGTERM before SIGKILL
CLI_TIMEOUT = 10.0     # s per redis-cli call

_live = set()          # servers started here and not yet stopped


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _ping(port, timeout=0.5):
    """True when the server at port answers PING with +PONG."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; the port stays the same across restart()."""

    def __init__(self, port=None, args=(), start=True):
        self.port = port or _free_port()
        self.args = list(args)               # extra "--name value" arguments
        self.dir = tempfile.mkdtemp(prefix="myriad-redis-")
        self.log = os.path.join(self.dir, "redis.log")
        self.proc = None
        if start:
            self.start()

    @property
    def url(self):
        return "redis://%s:%d" % (HOST, self.port)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self):
        """Starts the server and waits (bounded) until PING answers."""
        assert self.proc is None, "already running"
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
                "--logfile", self.log] + self.args
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _live.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                _live.discard(self)
                raise RuntimeError("redis-server exited with %s on port %d:\n%s"
                                   % (code, self.port, self._log_tail()))
            if _ping(self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("redis-server on port %d did not answer PING within %.0f s:\n%s"
                           % (self.port, START_TIMEOUT, self._log_tail()))

    def _log_tail(self):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return ""

    def cli(self, *args, check=True):
        """Runs redis-cli -p PORT ARGS... and returns its stdout (stripped of the
        final newline). Raises on a non-zero exit when check is set."""
        p = subprocess.run([REDIS_CLI, "-h", HOST, "-p", str(self.port)] + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=CLI_TIMEOUT)
        if check and p.returncode != 0:
            raise RuntimeError("redis-cli %s failed (%d): %s" % (" ".join(map(str, args)),
                                                                  p.returncode, p.stderr))
        return p.stdout.rstrip("\n")

    def _wait_exit(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self):
        """SIGKILL by PID: the server dies without closing anything cleanly."""
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._wait_exit(STOP_TIMEOUT)
        self.proc = None
        _live.discard(self)

    def stop(self):
        """SIGTERM, then SIGKILL after STOP_TIMEOUT."""
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not self._wait_exit(STOP_TIMEOUT):
            self.kill()
            return
        self.proc = None
        _live.discard(self)

    def restart(self):
        """Stops (if running) and starts again on the same port."""
        self.stop()
        deadline = time.monotonic() + START_TIMEOUT
        while True:   # the old socket may linger briefly; redis-server sets SO_REUSEADDR
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def close(self):
        """Stops the server and removes its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@atexit.register
def _cleanup():
    for rs in list(_live):
        rs.kill()
        shutil.rmtree(rs.dir, ignore_errors=True)
