"""The cluster: a supervisor with one worker process per index, respawn,
crash-loop detection, graceful stop, zero-downtime reload, recycling on
memory and request limits, the privilege drop, the pid and log files.

Real processes only: the tests find the workers through
/proc/<supervisor>/task/<supervisor>/children, kill them, signal the
supervisor, and put load on the service with keep-alive clients (threads
with the strict client of client.py, or wrk) that count every failed or
non-2xx request. Every wait is bounded.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from client import Conn, HOST, fetch, get
from conftest import Server, myriad_bin, sanitizer_report

PLAINTEXT = b"Hello, World!"


# ---- helpers -------------------------------------------------------------------


def children(pid):
    """The supervisor's child processes (its workers), sorted."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(x) for x in f.read().split())
    except FileNotFoundError:
        return []


def wait_for(pred, timeout, interval=0.02, what="condition"):
    """Polls pred() until it returns a true value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def status_ids(pid):
    """(uid, gid, supplementary groups) of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    uid = int(re.search(r"^Uid:\s+(\d+)", text, re.M).group(1))
    gid = int(re.search(r"^Gid:\s+(\d+)", text, re.M).group(1))
    groups = [int(g) for g in re.search(r"^Groups:(.*)$", text, re.M).group(1).split()]
    return uid, gid, groups


def ready_workers(srv, n, timeout=10):
    """Waits until the supervisor has n workers and one answers."""
    wait_for(lambda: len(children(srv.proc.pid)) == n, timeout, what=f"{n} workers")
    assert fetch(srv.port, "/plaintext").body == PLAINTEXT
    return children(srv.proc.pid)


class Load:
    """Keep-alive load: `conns` threads, each with one connection sending
    GET `path` back to back until stop(). A response with Connection: close
    makes the thread reconnect, as any client would; anything else going
    wrong (connect or read error, reset, EOF without a response, a
    malformed response, a 5 s timeout) is a failure, recorded with its time
    and reason, and the thread reconnects."""

    def __init__(self, port, conns=8, path="/plaintext"):
        self.port, self.path = port, path
        self.ok = self.non2xx = 0
        self.failures = []            # (monotonic time, repr of the error)
        self.success_times = []       # per thread: monotonic time of each 2xx
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(conns)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(10)
            assert not t.is_alive(), "load thread did not stop"
        return self

    def _run(self):
        conn, ok, non2xx, fails, times = None, 0, 0, [], []
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = Conn(self.port, timeout=5)
                conn.send(get(self.path))
                r = conn.read_response()
            except (OSError, AssertionError) as e:
                fails.append((time.monotonic(), repr(e)[:200]))
                if conn:
                    conn.close()
                conn = None
                continue
            if 200 <= r.status < 300:
                ok += 1
                times.append(time.monotonic())
            else:
                non2xx += 1
            if "close" in r.tokens("connection"):
                conn.close()
                conn = None
        if conn:
            conn.close()
        with self._lock:
            self.ok += ok
            self.non2xx += non2xx
            self.failures += fails
            self.success_times.append(times)

    def largest_gap(self, start, end):
        """The longest time within [start, end] with no 2xx at all."""
        times = sorted(t for ts in self.success_times for t in ts if start <= t <= end)
        points = [start] + times + [end]
        return max(b - a for a, b in zip(points, points[1:]))


def start_wrk(port, conns=16, path="/plaintext"):
    """wrk until stop_wrk (SIGINT makes it stop and print its report)."""
    cmd = ["wrk", "-t1", f"-c{conns}", "-d120s", "--timeout", "5s",
           f"http://{HOST}:{port}{path}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_wrk(p):
    """Stops wrk; returns (requests, non-2xx, socket errors, report)."""
    p.send_signal(signal.SIGINT)
    try:
        out = p.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        p.kill()
        out = p.communicate()[0]
        raise AssertionError(f"wrk did not stop on SIGINT:\n{out}")
    m = re.search(r"^\s*(\d+) requests in", out, re.M)
    assert m, f"no wrk report:\n{out}"
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return (int(m.group(1)), int(non2xx.group(1)) if non2xx else 0,
            sum(map(int, errs.groups())) if errs else 0, out)


@pytest.fixture
def spawn(tmp_path):
    """Starts a server this test manages itself (for exits other than a
    clean stop); kills whatever is left of it at the end."""
    servers = []

    def _spawn(*flags, env=None, cwd=None):
        s = Server(cwd or tmp_path / f"srv{len(servers)}", flags, env=env)
        servers.append(s)
        return s

    yield _spawn
    for s in servers:
        left = children(s.proc.pid)
        s.kill()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---- respawn ----------------------------------------------------------------------


def test_kill9_worker_under_load(start_server):
    """kill -9 of one worker under load: the service keeps answering, a new
    worker appears within 1 s, and only the requests in flight on the
    killed worker fail (at most one per client connection, all right at
    the kill)."""
    conns = 8
    srv = start_server("--workers", "2")
    before = ready_workers(srv, 2)
    load = Load(srv.port, conns=conns).start()
    time.sleep(0.7)
    victim = before[0]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    new = wait_for(lambda: [p for p in children(srv.proc.pid) if p not in before], 1.0,
                   interval=0.005, what="a new worker")
    appeared = time.monotonic() - killed_at
    time.sleep(1.0)
    end = time.monotonic()
    load.stop()
    assert appeared < 1.0 and len(new) == 1, (appeared, new)
    assert len(children(srv.proc.pid)) == 2
    assert len(load.failures) <= conns, load.failures
    late = [f for f in load.failures if f[0] > killed_at + 1.0]
    assert not late, f"failures after the kill was over: {late}"
    assert load.non2xx == 0
    assert load.ok > 100, load.ok
    gap = load.largest_gap(killed_at - 0.5, end)
    assert gap < 1.0, f"no answer for {gap:.2f}s around the kill"
    log = srv.stderr()
    assert re.search(rf"worker \d \(pid {victim}, generation 1\) killed by signal 9 \(SIGKILL\) "
                     r"unexpectedly", log), log[-2000:]


@pytest.mark.parametrize("fault,death", [
    ("exit", r"exited with status 3"),
    ("abort", r"killed by signal 6 \(SIGABRT\)"),
])
def test_crash_loop_stops_the_service(spawn, fault, death):
    """Workers that die at start-up: each death is logged with its pid and
    status, restarts back off, and the supervisor exits 1 with a clear
    message within the crash-loop window."""
    window = 8.0
    t0 = time.monotonic()
    srv = spawn("--workers", "2", "--crash-loop-deaths", "6", "--crash-loop-window", "8s",
                env={"MYRIAD_TEST_WORKER_FAULT": fault})
    try:
        rc = srv.proc.wait(window + 5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {window + 5}s:\n{srv.stderr()[-3000:]}")
    elapsed = time.monotonic() - t0
    log = srv.stderr()
    assert rc == 1, (rc, log[-3000:])
    assert elapsed < window, f"took {elapsed:.1f}s"
    assert "crash loop: 6 worker deaths within" in log, log[-3000:]
    deaths = re.findall(rf"worker \d \(pid \d+, generation 1\) {death} unexpectedly", log)
    assert len(deaths) >= 6, log[-3000:]
    assert re.search(r"starting a new one in \d+ ms \(death \d+ in a row\)", log), log[-3000:]
    assert "stopped after a failure: exit status 1" in log
    assert not children(srv.proc.pid)


# ---- graceful stop ---------------------------------------------------------------


def refused(port):
    """True if a connect is refused (False if accepted or reset: a socket
    that was closing)."""
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False


def test_sigterm_finishes_slow_request_and_refuses_new(start_server):
    """SIGTERM with a slow request in flight: new connections are refused
    at once, the request completes and its connection closes, then the
    service exits 0."""
    srv = start_server("--workers", "2")
    ready_workers(srv, 2)
    slow = Conn(srv.port, timeout=10)
    slow.send(get("/test/delay?ms=1500"))
    time.sleep(0.3)
    srv.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: refused(srv.port), 1.0, what="new connections refused")
    assert all(refused(srv.port) for _ in range(3))
    r = slow.read_response(timeout=5)
    assert r.status == 200 and r.body == b"ok"
    slow.expect_eof(timeout=5)   # and the connection ends after it
    slow.close()
    assert srv.proc.wait(5) == 0
    srv.stopped = True
    assert not sanitizer_report(srv.stderr()), sanitizer_report(srv.stderr())


def test_second_sigint_stops_at_once(start_server):
    """SIGINT drains; a second SIGINT stops the workers at once, even with a
    request that would take 20 s; the exit status stays 0."""
    srv = start_server("--workers", "2")
    ready_workers(srv, 2)
    slow = Conn(srv.port, timeout=10)
    slow.send(get("/test/delay?ms=20000"))
    time.sleep(0.2)
    srv.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert srv.alive(), "stopped before the slow request was done"
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(5) == 0
    assert time.monotonic() - t0 < 3
    slow.close()
    srv.stopped = True
    assert "SIGINT again: stopping now" in srv.stderr()
    assert not sanitizer_report(srv.stderr()), sanitizer_report(srv.stderr())


# ---- reload --------------------------------------------------------------------------


def test_sighup_five_times_under_load(start_server, tmp_path):
    """Five SIGHUPs under load (wrk and the strict client): no failed and no
    non-2xx request; every reload replaces both workers; then a config file
    that does not parse keeps the workers running and says why."""
    conf = tmp_path / "myriad.conf"
    conf.write_text("workers 2\nidle-timeout 30s\n")
    srv = start_server("--config", str(conf))
    first = ready_workers(srv, 2)
    wrk = start_wrk(srv.port)
    load = Load(srv.port, conns=6).start()
    time.sleep(0.5)
    seen = set(first)
    current = first
    try:
        for gen in range(2, 7):
            srv.proc.send_signal(signal.SIGHUP)
            prev = current
            current = wait_for(lambda: (lambda c: c if len(c) == 2 and not set(c) & set(prev)
                                        else None)(children(srv.proc.pid)),
                               10, what=f"generation {gen} alone")
            seen |= set(current)
            time.sleep(0.3)
    finally:
        load.stop()
        requests, non2xx, errors, report = stop_wrk(wrk)
    assert len(seen) == 12, seen
    assert not load.failures, load.failures[:5]
    assert load.non2xx == 0
    assert load.ok > 100
    assert non2xx == 0 and errors == 0, report
    assert requests > 1000, report
    log = srv.stderr()
    assert "reload: starting generation 6 (2 workers)" in log
    # a config that does not parse: the old generation keeps serving
    conf.write_text("workers 2\nidle-timeout forever\n")
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in srv.stderr(), 5, what="the reload failure")
    log = srv.stderr()
    assert re.search(r"reload failed: .*myriad\.conf:2: invalid value 'forever'.*"
                     r"generation 6 keeps running", log), log[-2000:]
    time.sleep(0.3)
    assert children(srv.proc.pid) == current
    assert fetch(srv.port, "/plaintext").body == PLAINTEXT


def test_reload_changes_worker_count(start_server, tmp_path):
    """A reload applies the new file: from 2 workers to 3, then 1."""
    conf = tmp_path / "myriad.conf"
    conf.write_text("workers 2\n")
    srv = start_server("--config", str(conf))
    ready_workers(srv, 2)
    for n in (3, 1):
        conf.write_text(f"workers {n}\n")
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(children(srv.proc.pid)) == n and
                 f"({n} workers)" in srv.stderr(), 10, what=f"{n} workers")
        for _ in range(6):
            assert fetch(srv.port, "/plaintext").body == PLAINTEXT


# ---- recycling -------------------------------------------------------------------------


def test_memory_limit_replaces_worker_without_failures(start_server):
    """A worker grown past --max-worker-memory is replaced — successor first,
    then drained — with no failed request under load."""
    srv = start_server("--workers", "2", "--max-worker-memory", "64m")
    before = ready_workers(srv, 2)
    load = Load(srv.port, conns=6).start()
    time.sleep(0.3)
    with Conn(srv.port, timeout=10) as c:
        c.send(get("/test/grow?mb=100"))
        r = c.read_response()
    assert r.status == 200, r
    grown = int(r.body)
    assert grown in before
    wait_for(lambda: grown not in children(srv.proc.pid) and
             len(children(srv.proc.pid)) == 2, 5, what="the grown worker replaced")
    time.sleep(0.3)
    load.stop()
    assert not load.failures, load.failures[:5]
    assert load.non2xx == 0 and load.ok > 50
    log = srv.stderr()
    assert re.search(r"worker \d \(pid %d\): RSS \d+ KiB over --max-worker-memory 65536 KiB; "
                     r"starting its successor, then draining it" % grown, log), log[-2000:]
    assert re.search(r"worker \d \(pid %d, generation 1\) exited with status 0" % grown, log)


def test_max_requests_recycles_workers(start_server):
    """--max-requests replaces each worker after about that many requests,
    gracefully: no failed request."""
    srv = start_server("--workers", "2", "--max-requests", "300")
    before = ready_workers(srv, 2)
    load = Load(srv.port, conns=4).start()
    wait_for(lambda: not set(children(srv.proc.pid)) & set(before), 10,
             what="both workers recycled")
    load.stop()
    assert not load.failures, load.failures[:5]
    assert load.non2xx == 0
    assert re.search(r"requests served \(--max-requests 300\); starting its successor",
                     srv.stderr())


def test_max_worker_age_recycles_workers(start_server):
    """--max-worker-age 1s: each worker is replaced after 1-1.1 s (sampled
    each second), one at a time per index, with no failed request."""
    srv = start_server("--workers", "2", "--max-worker-age", "1s")
    before = ready_workers(srv, 2)
    load = Load(srv.port, conns=4).start()
    wait_for(lambda: not set(children(srv.proc.pid)) & set(before), 5,
             what="both workers recycled")
    load.stop()
    assert not load.failures, load.failures[:5]
    assert load.non2xx == 0
    assert re.search(r"s old \(--max-worker-age 1000 ms\); starting its successor",
                     srv.stderr())


# ---- privileges, files ------------------------------------------------------------------


def allowed_cpus(pid):
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    return re.search(r"^Cpus_allowed_list:\s*(\S+)", text, re.M).group(1)


def test_pin(start_server):
    """--pin: worker i runs on the i-th CPU the service may use, from before
    it serves. Under load a fork is visible in /proc before the child has run
    a line and before the supervisor has logged it, so the test waits for
    both (bounded), then checks each CPU set once."""
    import json

    def attached_pids(port):
        """Live workers attached to the shared metrics: each attaches once it
        is a worker (pinned, privileges dropped), right before it serves."""
        doc = json.loads(fetch(port, "/metrics.json").body)
        return {w["pid"] for w in doc["workers"] if w.get("live")}

    cpus = sorted(os.sched_getaffinity(0))
    srv = start_server("--workers", "2", "--pin")
    workers = ready_workers(srv, 2)
    wait_for(lambda: set(workers) <= attached_pids(srv.port), 10, what="both workers serving")
    for pid in workers:
        started = wait_for(lambda: re.search(r"worker (\d+) started: pid %d," % pid, srv.stderr()),
                           10, what=f"the start of pid {pid} in the log")
        index = int(started.group(1))
        assert allowed_cpus(pid) == str(cpus[index % len(cpus)]), (pid, index)
    assert children(srv.proc.pid) == workers   # the same workers throughout
    assert allowed_cpus(srv.proc.pid) == allowed_cpus(os.getpid())   # not the supervisor



def test_user_drop(spawn, start_server):
    """As root, --user nobody: the supervisor stays root, every worker runs
    as nobody with nobody's groups only. (Not as root: --user of another
    user is refused with exit 2.)"""
    if os.geteuid() != 0:
        p = subprocess.run([myriad_bin(), "serve", "--user", "root"], capture_output=True,
                           timeout=10)
        assert p.returncode == 2 and b"needs root" in p.stderr, p
        return
    import pwd
    nobody = pwd.getpwnam("nobody")
    work = tempfile.mkdtemp(prefix="myriad-user-")   # reachable by nobody
    os.chmod(work, 0o777)
    try:
        srv = spawn("--workers", "2", "--user", "nobody", cwd=work)
        srv.wait_ready()
        workers = ready_workers(srv, 2)
        assert status_ids(srv.proc.pid)[0] == 0
        for pid in workers:
            uid, gid, groups = status_ids(pid)
            assert (uid, gid) == (nobody.pw_uid, nobody.pw_gid), (pid, uid, gid)
            assert set(groups) <= {nobody.pw_gid}, groups
        assert "running as root" not in srv.stderr()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(5) == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    srv = spawn("--workers", "2", "--user", "no-such-user-here")
    assert srv.proc.wait(5) == 2
    assert "--user no-such-user-here: no such user" in srv.stderr()


def test_pid_file_and_log_file_reopen(start_server, tmp_path):
    """--pid-file holds the supervisor's pid while it runs; --log-file gets
    the log; after the file is moved away, SIGUSR1 makes the supervisor and
    every worker write to a new file of that name."""
    pid_file, log_file = tmp_path / "myriad.pid", tmp_path / "myriad.log"
    srv = start_server("--workers", "2", "--pid-file", str(pid_file), "--log-file",
                       str(log_file), wait=False)
    wait_for(lambda: log_file.exists() and "listening on" in log_file.read_text(), 10,
             what="the log file")
    workers = ready_workers(srv, 2)
    assert pid_file.read_text() == f"{srv.proc.pid}\n"
    os.rename(log_file, tmp_path / "myriad.log.1")
    srv.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: log_file.exists() and "log file reopened" in log_file.read_text(), 5,
             what="the reopened log")
    for pid in [srv.proc.pid] + workers:
        wait_for(lambda: os.readlink(f"/proc/{pid}/fd/2") == str(log_file), 5,
                 what=f"pid {pid} writing to the new log")
    assert srv.stop() == []
    assert not pid_file.exists()
    log = log_file.read_text()
    assert "info: stopped" in log
    assert not sanitizer_report(log), sanitizer_report(log)


def test_one_worker_runs_in_process(start_server):
    """--workers 1 without recycling limits: no supervisor, the process
    serves itself; SIGHUP is refused with a warning, not a crash."""
    srv = start_server("--workers", "1")
    assert fetch(srv.port, "/plaintext").body == PLAINTEXT
    assert children(srv.proc.pid) == []
    assert fetch(srv.port, "/test/pid").body == b"%d\n" % srv.proc.pid
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP ignored" in srv.stderr(), 5, what="the SIGHUP warning")
    assert fetch(srv.port, "/plaintext").body == PLAINTEXT
