"""The live dashboard in a real browser: Debian's chromium, headless.

While the service carries load — keep-alive clients, slower asynchronous
requests, connections held open — chromium opens /dashboard on the admin
port, lets the page poll /metrics.json for a few seconds of virtual time
(--virtual-time-budget: timers run without waiting, network fetches still
complete for real), and dumps the DOM. Every chart's <canvas> carries
data-points, data-last and data-max for its total line: the charts that
must show traffic must have points and a non-zero maximum. A screenshot of
the same page is kept as an artefact (build/<build>/test-artifacts/
dashboard.png, next to the binary under test; docs/img/dashboard.png is one).

Chromium gets a fresh profile in a temporary directory, no sandbox (tests
run as root), no GPU and no background networking; each run is bounded and
its whole process group is killed if it overstays.
"""

import os
import re
import shutil
import signal
import subprocess
import threading
import time

from client import Conn, free_port, request
from conftest import myriad_bin

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--mute-audio"]
CANVAS_RE = re.compile(r'<canvas id="chart-([a-z0-9]+)" data-points="(\d+)" '
                       r'data-last="([-0-9.e+]+)" data-max="([-0-9.e+]+)"')


def chromium(tmp_path, *args, timeout=90):
    exe = shutil.which("chromium")
    assert exe, "chromium not found: scripts/deps.sh installs Debian's chromium package"
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    argv = [exe] + CHROMIUM_FLAGS + [f"--user-data-dir={profile}"] + list(args)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)   # its own session: only what we started
        p.communicate()
        raise AssertionError(f"chromium did not finish within {timeout}s: {argv}")
    assert p.returncode == 0, f"chromium failed ({p.returncode}): {err.decode()[-2000:]}"
    return out.decode("utf-8", "replace")


class Load:
    """Traffic while the page polls: keep-alive clients, 20 ms async
    requests, and idle connections held open."""

    def __init__(self, port, clients=3, held=5):
        self.port = port
        self.stop = threading.Event()
        self.errors = []
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                        for i in range(clients)]
        self.held = []
        for _ in range(held):
            c = Conn(port)
            c.send(request("GET", "/plaintext"))
            assert c.read_response().status == 200
            self.held.append(c)

    def client(self, i):
        try:
            with Conn(self.port, timeout=10) as c:
                n = 0
                while not self.stop.is_set():
                    target = "/test/delay?ms=20" if i == 0 or n % 50 == 0 else "/plaintext"
                    c.send(request("GET", target))
                    assert c.read_response().status == 200
                    n += 1
        except Exception as e:   # reported by the test
            self.errors.append(repr(e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(15)
        for c in self.held:
            c.close()


def artefact_dir():
    d = os.path.join(os.path.dirname(myriad_bin()), "test-artifacts")
    os.makedirs(d, exist_ok=True)
    return d


def test_dashboard_draws_live_data(start_server, tmp_path):
    admin = free_port()
    srv = start_server("--workers", "1", "--admin-port", str(admin))
    url = f"http://127.0.0.1:{admin}/dashboard"
    with Load(srv.port) as load:
        time.sleep(1.2)   # a sampler tick and some traffic before the first poll
        dom = chromium(tmp_path, "--virtual-time-budget=6000", "--dump-dom", url)
        png = os.path.join(artefact_dir(), "dashboard.png")
        if os.path.exists(png):
            os.unlink(png)
        chromium(tmp_path, "--virtual-time-budget=8000", "--window-size=1400,1000",
                 f"--screenshot={png}", url)
    assert not load.errors, load.errors
    charts = {m[0]: (int(m[1]), float(m[2]), float(m[3])) for m in CANVAS_RE.findall(dom)}
    assert set(charts) >= {"rps", "p50", "p99", "lag", "conns", "rss", "restarts"}, dom[:3000]
    for name in ("rps", "p99", "conns", "rss"):
        points, last, peak = charts[name]
        assert points >= 2 and peak > 0, f"chart {name}: {charts[name]}\n{dom[:3000]}"
    assert charts["conns"][2] >= 5           # the held connections
    assert charts["p99"][2] >= 5             # ms: the 20 ms requests are in the window
    assert charts["restarts"][2] == 0
    assert re.search(r'<span id="state"[^>]*></span>', dom), "a poll failed"
    assert re.search(r"<td>0</td><td>%d</td><td>yes</td>" % srv.proc.pid, dom), dom[-3000:]
    # the screenshot: a real picture, not a blank page
    with open(png, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30000, len(data)
