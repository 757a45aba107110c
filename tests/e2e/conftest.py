"""Fixtures that run the myriad binary for the end-to-end tests.

Run: MYRIAD_BIN=build/release/myriad /usr/bin/python3 -m pytest -q \
         -p no:cacheprovider tests/e2e
(stdlib + pytest only; the same suite runs against the ASan/UBSan build.)

The binary is $MYRIAD_BIN (default: build/release/myriad under the
checkout). Each server runs on a free loopback port in a temporary directory
with its stderr captured to a file. Stopping a server sends SIGTERM and
waits up to 5 s (then SIGKILL); the test fails unless the server exited
with status 0 and its stderr holds no sanitizer report, so the same suite
checks an ASan/UBSan build for memory errors and leaks.

Fixtures:
  server        the module's shared default server (MYRIAD_TEST_ROUTES=1),
                checked for liveness and sanitizer reports after every test
  start_server  factory: start_server("--max-body", "1k", env={...}) starts
                a dedicated server for one test and stops/checks it after
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import free_port, HOST  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SANITIZER_RE = re.compile(r"Sanitizer|runtime error:|SUMMARY: |Segmentation fault|"
                          r"double free|stack smashing")
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def myriad_bin():
    path = os.environ.get("MYRIAD_BIN") or os.path.join(ROOT, "build", "release", "myriad")
    path = os.path.abspath(path)
    if not os.access(path, os.X_OK):
        pytest.fail(f"server binary {path} not found or not executable "
                    f"(set MYRIAD_BIN)", pytrace=False)
    return path


def clean_env(extra=None):
    """The environment for a server: ours without any MYRIAD_* variable (so
    the caller's shell cannot change a test), plus the test routes, plus
    extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYRIAD_")}
    env["MYRIAD_TEST_ROUTES"] = "1"
    if extra:
        env.update(extra)
    return env


def sanitizer_report(text):
    m = SANITIZER_RE.search(text)
    if not m:
        return None
    start = max(0, m.start() - 200)
    return text[start:start + 3000]


class Server:
    """One running myriad process."""

    def __init__(self, workdir, flags=(), env=None, port=None, pass_addr=True,
                 name="server"):
        self.port = port if port is not None else free_port()
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.stderr_path = os.path.join(self.workdir, f"{name}-{self.port}.stderr")
        self.stdout_path = os.path.join(self.workdir, f"{name}-{self.port}.stdout")
        argv = [myriad_bin(), "serve"]
        if pass_addr:
            argv += ["--host", HOST, "--port", str(self.port)]
        argv += list(flags)
        self.argv = argv
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=self.workdir, env=clean_env(env),
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err)
        self.stopped = False
        self.returncode = None

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Waits for 'listening on' in stderr or a successful connect."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.kill()   # reported here; not again at teardown
                pytest.fail(f"server exited with status {self.proc.returncode} before "
                            f"it was ready: {' '.join(self.argv)}\nstderr:\n{self.stderr()}",
                            pytrace=False)
            if "listening on" in self.stderr():
                return self
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        pytest.fail(f"server not ready within {timeout}s: {' '.join(self.argv)}\n"
                    f"stderr:\n{self.stderr()}", pytrace=False)

    def alive(self):
        return self.proc.poll() is None

    def problems(self):
        """What is wrong with the server right now (for per-test checks)."""
        out = []
        if not self.stopped and not self.alive():
            out.append(f"server died (exit status {self.proc.returncode})")
        rep = sanitizer_report(self.stderr())
        if rep:
            out.append("sanitizer report in server stderr:\n" + rep)
        return out

    def stop(self):
        """SIGTERM, wait up to 5 s, SIGKILL. Returns a list of problems:
        empty when the server exited 0 promptly with a clean stderr."""
        if self.stopped:
            return []
        self.stopped = True
        problems = []
        if self.proc.poll() is not None:
            problems.append(f"server had already exited with status "
                            f"{self.proc.returncode} before SIGTERM")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                problems.append(f"server did not exit within {STOP_TIMEOUT}s of SIGTERM")
        self.returncode = self.proc.returncode
        if self.returncode != 0 and not problems:
            problems.append(f"server exited with status {self.returncode} after SIGTERM "
                            f"(expected 0)")
        self._err.close()
        self._out.close()
        rep = sanitizer_report(self.stderr())
        if rep:
            problems.append("sanitizer report in server stderr:\n" + rep)
        if problems:
            problems.append(f"command: {' '.join(self.argv)}\nstderr tail:\n"
                            f"{self.stderr()[-3000:]}")
        return problems

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.stopped = True
        for f in (self._err, self._out):
            if not f.closed:
                f.close()


@pytest.fixture
def start_server(tmp_path):
    """Factory for dedicated servers; each is stopped and checked at the
    end of the test (a crash, a non-zero exit or a sanitizer report fails
    the test)."""
    servers = []

    def _start(*flags, env=None, port=None, pass_addr=True, wait=True):
        s = Server(tmp_path / f"srv{len(servers)}", flags, env=env, port=port,
                   pass_addr=pass_addr)
        servers.append(s)
        if wait:
            s.wait_ready()
        return s

    yield _start
    problems = []
    for s in servers:
        problems += s.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


class _SharedServer:
    """The module's default server, restarted if a test killed it so that a
    crash fails the test that caused it and not every later one."""

    def __init__(self, base):
        self.base = base
        self.current = None
        self.generation = 0
        self.problems = []

    def get(self):
        if self.current is None or not self.current.alive():
            if self.current is not None:
                self.current.kill()
            self.generation += 1
            self.current = Server(self.base / f"gen{self.generation}", name="default")
            self.current.wait_ready()
        return self.current


@pytest.fixture(scope="module")
def _module_server(tmp_path_factory):
    shared = _SharedServer(tmp_path_factory.mktemp("default-server"))
    yield shared
    if shared.current is not None and shared.current.alive():
        problems = shared.current.stop()
        if problems:
            pytest.fail("shared server: " + "\n".join(problems), pytrace=False)


@pytest.fixture
def server(_module_server):
    """The module's shared server with default limits. After each test it
    must still be running with a clean stderr, so a crash is blamed on the
    test that caused it."""
    s = _module_server.get()
    yield s
    problems = s.problems()
    if problems:
        # Keep the stderr of the dead server with the failure, then let the
        # next test start a fresh one.
        problems.append(f"stderr tail:\n{s.stderr()[-3000:]}")
        s.kill()
        pytest.fail("\n".join(problems), pytrace=False)
