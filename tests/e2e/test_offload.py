"""Worker threads end to end: POST /hash and /verify (Argon2id and scrypt,
checked here with libsodium itself through ctypes), their bad inputs, the
loop staying responsive while the pool hashes, overload shedding (a tiny
offload queue; --max-loop-lag) with 503 + Retry-After and recovery, the
stall watchdog's report for a handler that blocks the loop, cancellation of
queued and running jobs when the client goes away, stopping with jobs in
flight, and the pool threads' scheduling policy and priority as the kernel
reports them (/proc/PID/task/TID/stat).

Every server runs one worker (--workers 1) so that a queue, a lag and a log
belong to the process the test talks to. Timing bounds are one-sided and
generous (the binary may be an ASan build on a loaded 2-core machine)."""

import ctypes
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from client import Conn, fetch, request
from conftest import sanitizer_report

WORKER = ("--workers", "1")

SODIUM = ctypes.CDLL("libsodium.so.23")
assert SODIUM.sodium_init() >= 0
STRBYTES = 128   # crypto_pwhash_STRBYTES: libsodium reads hashes as this array
for _fn in (SODIUM.crypto_pwhash_str_verify,
            SODIUM.crypto_pwhash_scryptsalsa208sha256_str_verify):
    _fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong]
    _fn.restype = ctypes.c_int


def sodium_verify(hash_str, password):
    """libsodium's own verdict on (hash, password): True when they match."""
    pw = password.encode() if isinstance(password, str) else password
    buf = ctypes.create_string_buffer(hash_str.encode(), STRBYTES)
    fn = (SODIUM.crypto_pwhash_scryptsalsa208sha256_str_verify if hash_str.startswith("$7$")
          else SODIUM.crypto_pwhash_str_verify)
    return fn(buf, pw, len(pw)) == 0


def post(port, path, body, timeout=20.0):
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return fetch(port, path, method="POST", body=body.encode() if isinstance(body, str) else body,
                 timeout=timeout)


def json_of(resp):
    assert resp.header("Content-Type").split(";")[0] == "application/json", resp
    return json.loads(resp.body)


def send_get(port, target):
    """Sends a GET on a new connection without reading; returns the Conn."""
    c = Conn(port, timeout=20.0)
    c.send(request("GET", target))
    return c


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def srv(start_server):
    return start_server(*WORKER)


# ---- /hash and /verify -----------------------------------------------------------


def test_hash_argon2id_verified_by_libsodium(srv):
    pw = "correct horse battery staple"
    r = post(srv.port, "/hash", {"password": pw})
    assert r.status == 200, r
    h = json_of(r)["hash"]
    assert h.startswith("$argon2id$v=19$m=65536,t=2,p=1$"), h   # INTERACTIVE limits
    assert sodium_verify(h, pw)
    assert not sodium_verify(h, pw + "!")
    h2 = json_of(post(srv.port, "/hash", {"password": pw}))["hash"]
    assert h2 != h   # a fresh salt every time

    ok = post(srv.port, "/verify", {"password": pw, "hash": h})
    assert ok.status == 200 and json_of(ok) == {"ok": True}, ok
    bad = post(srv.port, "/verify", {"password": "wrong", "hash": h})
    assert bad.status == 200 and json_of(bad) == {"ok": False}, bad

    # non-ASCII and empty passwords are bytes like any other
    for pw in ("pässwörd ✓", ""):
        h = json_of(post(srv.port, "/hash", {"password": pw}))["hash"]
        assert sodium_verify(h, pw.encode("utf-8"))
        assert json_of(post(srv.port, "/verify", {"password": pw, "hash": h})) == {"ok": True}


ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def scrypt_params(h):
    """(N, r, p) of a libsodium "$7$" scrypt string: N as log2 in one char,
    then r and p as 30-bit little-endian base-64 numbers of 5 chars."""
    assert h.startswith("$7$"), h
    n_log2 = ITOA64.index(h[3])
    dec = lambda s: sum(ITOA64.index(ch) << (6 * i) for i, ch in enumerate(s))
    return 1 << n_log2, dec(h[4:9]), dec(h[9:14])


def test_hash_scrypt_parameters(start_server):
    s = start_server(*WORKER, "--hash-alg", "scrypt")
    pw = "hunter2"
    r = post(s.port, "/hash", {"password": pw})
    assert r.status == 200, r
    h = json_of(r)["hash"]
    assert scrypt_params(h) == (16384, 8, 1)   # what bench/peers/node/hash.js uses
    assert sodium_verify(h, pw)
    assert not sodium_verify(h, "hunter3")
    assert json_of(post(s.port, "/verify", {"password": pw, "hash": h})) == {"ok": True}
    assert json_of(post(s.port, "/verify", {"password": "x", "hash": h})) == {"ok": False}


def test_bad_hash_alg_setting(start_server):
    s = start_server(*WORKER, "--hash-alg", "md5")
    r = post(s.port, "/hash", {"password": "x"})
    assert r.status == 500
    assert "--hash-alg" in json_of(r)["error"]


BAD_HASH_INPUTS = [
    (b"not json", 400, "invalid JSON"),
    (b"", 400, "invalid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"{}", 400, "missing field: password"),
    (b'{"password": 5}', 400, "must be a string"),
    (b'{"password": null}', 400, "must be a string"),
    (b'{"password": "a", "password": "b"}', 400, "invalid JSON"),
    (json.dumps({"password": "x" * 1025}).encode(), 400, "too long"),
    (b'{"password": "' + b"x" * 9000 + b'"}', 413, "body too large"),
]


@pytest.mark.parametrize("body,status,msg", BAD_HASH_INPUTS,
                         ids=[f"{s}-{m}" for _, s, m in BAD_HASH_INPUTS])
def test_hash_bad_input(server, body, status, msg):
    r = post(server.port, "/hash", body)
    assert r.status == status, r
    err = json_of(r)["error"]
    assert msg in err, err


def test_hash_length_limits(server):
    r = post(server.port, "/hash", {"password": "x" * 1024})   # the limit itself is fine
    assert r.status == 200, r
    assert sodium_verify(json_of(r)["hash"], "x" * 1024)
    r = fetch(server.port, "/hash")   # GET
    assert r.status == 405
    assert "post" in r.tokens("Allow")


def test_verify_bad_input(server):
    good = json_of(post(server.port, "/hash", {"password": "pw"}))["hash"]
    # a hash asking for 4 GiB of memory is refused before any work
    greedy = good.replace("m=65536", "m=4194304")
    cases = [
        ({"password": "pw"}, "missing field: hash"),
        ({"hash": good}, "missing field: password"),
        ({"password": "pw", "hash": 123}, "must be a string"),
        ({"password": "pw", "hash": "$2b$10$abcdefghijklmnopqrstuv"}, "unsupported hash"),
        ({"password": "pw", "hash": greedy}, "unsupported hash"),
        ({"password": "pw", "hash": "x" * 200}, "too long"),
        ({"password": "pw", "hash": good[:-1] + "\u0000"}, "invalid JSON"),   # no NULs
    ]
    for body, msg in cases:
        r = post(server.port, "/verify", body)
        assert r.status == 400, (body, r)
        assert msg in json_of(r)["error"], (body, r)


# ---- the loop keeps answering while the pool works ----------------------------------


def test_plaintext_responsive_while_hashing(start_server):
    s = start_server(*WORKER, "--threads", "2")
    stop = time.monotonic() + 3.0
    results = {"ok": 0, "bad": []}
    lock = threading.Lock()

    def hammer():
        with Conn(s.port, timeout=30.0) as c:
            body = json.dumps({"password": "load"}).encode()
            while time.monotonic() < stop:
                c.send(request("POST", "/hash", headers={"Content-Length": len(body)},
                               body=body))
                r = c.read_response()
                with lock:
                    if r.status == 200:
                        results["ok"] += 1
                    else:
                        results["bad"].append(r)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    latencies = []
    try:
        time.sleep(0.3)   # let the pool saturate
        with Conn(s.port, timeout=10.0) as c:
            while time.monotonic() < stop:
                t0 = time.monotonic()
                c.send(request("GET", "/plaintext"))
                r = c.read_response()
                latencies.append(time.monotonic() - t0)
                assert r.status == 200 and r.body == b"Hello, World!"
                time.sleep(0.02)
    finally:
        for t in threads:
            t.join(60)
    assert not results["bad"], results["bad"][:3]
    assert results["ok"] >= 6, results   # the pool really was busy
    latencies.sort()
    median, worst = latencies[len(latencies) // 2], latencies[-1]
    # A hash takes tens of ms of CPU and six were always pending: on the
    # loop, /plaintext would wait for them (median far above 50 ms, and
    # only a handful of probes in 3 s).
    assert median < 0.05, f"median /plaintext latency {median * 1000:.1f} ms under hash load"
    assert worst < 1.0, f"worst /plaintext latency {worst * 1000:.1f} ms under hash load"
    assert len(latencies) >= 30, f"only {len(latencies)} /plaintext answers in 2.7 s"


# ---- the pool threads' scheduling ------------------------------------------------------

# sched(7) policy numbers, as /proc/PID/task/TID/stat shows them (field 41)
POLICY_NAMES = {0: "normal", 3: "batch", 5: "idle"}   # SCHED_OTHER, SCHED_BATCH, SCHED_IDLE
DEFAULT_POOL = ("idle", 4)   # --pool-sched, --threads defaults (see src/core/config.c)


def threads_of(pid):
    """[(tid, name, policy name, nice)] of every thread of process pid."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:   # a thread that just exited
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()   # field 3 onwards
        policy = int(fields[41 - 3])
        out.append((int(tid), name, POLICY_NAMES.get(policy, str(policy)), int(fields[19 - 3])))
    return out


@pytest.mark.parametrize("flags,policy,threads,nice", [
    ((), DEFAULT_POOL[0], DEFAULT_POOL[1], None),
    (("--pool-sched", "normal", "--pool-nice", "5"), "normal", 4, 5),
    (("--pool-sched", "batch", "--threads", "3"), "batch", 3, 10),
    (("--pool-sched", "idle", "--threads", "2"), "idle", 2, None),
], ids=["default", "normal", "batch", "idle"])
def test_pool_threads_scheduling(start_server, flags, policy, threads, nice):
    s = start_server(*WORKER, *flags)
    before = [t for t in threads_of(s.proc.pid) if t[1] == "myriad-pool"]
    assert before == [], before   # started lazily, on the first job
    r = fetch(s.port, "/test/offload?ms=1")
    assert r.status == 200, r
    # policy and nice value are set by each thread as it first runs, which on
    # a busy machine may be a moment later: wait for them (bounded), then
    # check everything
    def pool_ready():
        ts = threads_of(s.proc.pid)
        loop_nice = [t for t in ts if t[0] == s.proc.pid][0][3]
        return all(pol == policy and (nice is None or ni == min(19, loop_nice + nice))
                   for _, name, pol, ni in ts if name == "myriad-pool")
    wait_for(pool_ready, 10, "the pool threads' policy and nice value")
    all_threads = threads_of(s.proc.pid)
    loop_thread = [t for t in all_threads if t[0] == s.proc.pid][0]
    pool = [t for t in all_threads if t[1] == "myriad-pool"]
    assert len(pool) == threads, all_threads
    # the loop keeps the ordinary policy and its nice value; only the pool is lowered
    assert loop_thread[2] == "normal", loop_thread
    for tid, _, pol, ni in pool:
        assert pol == policy, (tid, pol, all_threads)
        if nice is not None:   # SCHED_IDLE has no use for nice: not checked there
            assert ni == min(19, loop_thread[3] + nice), (tid, ni, loop_thread)
    # and a job still runs under that policy
    r = post(s.port, "/hash", {"password": "p"})
    assert r.status == 200 and sodium_verify(json_of(r)["hash"], "p"), r


@pytest.mark.parametrize("workers", ["1", "2"])
def test_bad_pool_sched_is_a_startup_error(start_server, workers):
    s = start_server("--workers", workers, "--pool-sched", "fifo", wait=False)
    try:
        s.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("server with --pool-sched fifo did not exit within 10 s")
    err = s.stderr()
    s.kill()   # it exited by itself, as it should: nothing to stop
    assert s.proc.returncode != 0
    assert "--pool-sched: invalid value 'fifo': expected normal, batch or idle" in err, err


# ---- overload shedding --------------------------------------------------------------


def assert_shed(resp, reason):
    assert resp.status == 503, resp
    assert resp.header("Retry-After") == "1", resp
    assert resp.body.decode().startswith(f"overloaded: {reason}"), resp


def test_offload_queue_full_sheds_then_recovers(start_server):
    s = start_server(*WORKER, "--threads", "1", "--offload-queue", "1")
    assert fetch(s.port, "/healthz").status == 200
    running = send_get(s.port, "/test/offload?ms=1500")
    time.sleep(0.3)   # taken by the only thread: the queue is empty again
    assert fetch(s.port, "/healthz").status == 200
    queued = send_get(s.port, "/test/offload?ms=10")
    wait_for(lambda: fetch(s.port, "/healthz").status == 503, 3, "/healthz to say overloaded")
    assert_shed(fetch(s.port, "/healthz"), "offload queue full")
    assert_shed(fetch(s.port, "/test/offload?ms=1"), "offload queue full")
    assert_shed(fetch(s.port, "/plaintext"), "offload queue full")
    assert_shed(post(s.port, "/hash", {"password": "x"}), "offload queue full")
    with running, queued:
        assert running.read_response().status == 200
        assert queued.read_response().status == 200
    # the pressure is gone: everything is served again, at once
    assert fetch(s.port, "/healthz").body == b"ok\n"
    assert fetch(s.port, "/plaintext").status == 200
    assert fetch(s.port, "/test/offload?ms=1").status == 200


def test_loop_lag_sheds_then_recovers(start_server):
    s = start_server(*WORKER, "--max-loop-lag", "20ms")
    seen = None
    deadline = time.monotonic() + 8
    with Conn(s.port, timeout=10.0) as c:
        while seen is None and time.monotonic() < deadline:
            c.send(request("GET", "/test/block?ms=100"))   # 100 ms of CPU on the loop
            r = c.read_response()
            if r.status == 503:
                seen = r
    assert seen is not None, "a loop lagging ~100 ms was never reported overloaded"
    assert_shed(seen, "loop lag")
    # idle now: within a couple of 0.5 s windows the worker serves again
    wait_for(lambda: fetch(s.port, "/healthz").status == 200, 5, "/healthz to recover")
    assert fetch(s.port, "/plaintext").status == 200


# ---- the stall watchdog --------------------------------------------------------------

FRAME_RE = re.compile(r"stall:\s+#\d+ (\S+)\(([^)]*)\) \[0x[0-9a-f]+\]")


def test_stall_watchdog_names_route_and_backtrace(start_server):
    s = start_server(*WORKER, "--stall-warn", "100ms")
    r = fetch(s.port, "/test/block?ms=400")
    assert r.status == 200
    wait_for(lambda: "handling GET /test/block" in s.stderr(), 5, "the stall report")
    log = s.stderr()
    assert re.search(r"stall: the event loop has not run for \d+ ms \(--stall-warn 100 ms\), "
                     r"handling GET /test/block", log), log
    frames = FRAME_RE.findall(log)
    assert len(frames) >= 3, log
    # the backtrace is the loop thread's, taken inside the blocking handler:
    # resolving our binary's frames names the handler and the dispatcher
    ours = [off for obj, off in frames if obj.endswith("/myriad") and off.startswith("+")]
    names = subprocess.run(["addr2line", "-f", "-i", "-e", s.argv[0]] + [o[1:] for o in ours],
                           capture_output=True, text=True, timeout=30).stdout
    assert "test_block" in names, names
    assert "req_dispatch" in names, names
    assert fetch(s.port, "/plaintext").status == 200


def test_no_stall_report_when_quiet(start_server):
    # 200 ms: a busy machine alone does not keep a loop off the CPU that long
    s = start_server(*WORKER, "--stall-warn", "200ms")
    for _ in range(20):
        assert fetch(s.port, "/plaintext").status == 200
    assert fetch(s.port, "/test/offload?ms=800").status == 200   # pool work is not a stall
    time.sleep(0.4)
    assert "stall:" not in s.stderr()


# ---- cancellation ------------------------------------------------------------------------


def test_cancelled_jobs(start_server):
    s = start_server(*WORKER, "--threads", "1")
    a = send_get(s.port, "/test/offload?ms=800")
    time.sleep(0.2)                                # a runs on the only thread
    b = send_get(s.port, "/test/offload?ms=800")   # queued behind it
    time.sleep(0.1)
    c = send_get(s.port, "/test/offload?ms=10")    # queued behind b
    time.sleep(0.1)
    b.abort()                                      # RST: the client of b is gone
    with a, c:
        ra = json.loads(a.read_response().body)
        rc = json.loads(c.read_response().body)
    # b's work never ran: c is the very next job to finish after a
    assert rc["runs"] == ra["runs"] + 1, (ra, rc)

    # a client gone while its job runs: the job finishes, the answer is
    # dropped, and the worker goes on
    d = send_get(s.port, "/test/offload?ms=400")
    time.sleep(0.15)
    d.abort()
    time.sleep(0.5)
    r = fetch(s.port, "/test/offload?ms=1")
    assert r.status == 200
    assert json.loads(r.body)["runs"] == rc["runs"] + 2   # d ran, then this one


def test_one_offload_at_a_time(srv):
    r = fetch(srv.port, "/test/offload?ms=50&twice=1")
    assert r.status == 200, r
    assert json.loads(r.body)["second"] == -16   # -EBUSY, and the request went on


# ---- stopping with jobs in flight ----------------------------------------------------------


def test_graceful_stop_finishes_jobs(start_server):
    s = start_server(*WORKER, "--threads", "1")
    conns = [send_get(s.port, "/test/offload?ms=500") for _ in range(2)]
    time.sleep(0.2)
    problems = []
    stopper = threading.Thread(target=lambda: problems.extend(s.stop()))
    stopper.start()   # SIGTERM: drain, the two jobs finish and are answered
    try:
        for c in conns:
            with c:
                r = c.read_response(timeout=10)
                assert r.status == 200, r
    finally:
        stopper.join(30)
    assert not problems, problems


def test_immediate_stop_with_jobs_queued(start_server):
    s = start_server(*WORKER, "--threads", "1")
    conns = [send_get(s.port, "/test/offload?ms=700")]
    time.sleep(0.2)
    conns += [send_get(s.port, "/test/offload?ms=700") for _ in range(3)]
    time.sleep(0.2)
    s.proc.send_signal(signal.SIGQUIT)   # stop now: queued jobs are cancelled
    try:
        s.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("server did not stop within 10 s of SIGQUIT with jobs queued")
    for c in conns:
        c.close()
    log = s.stderr()
    s.kill()   # already exited: closes its files; the fixture has nothing left to do
    assert s.proc.returncode == 0, log[-2000:]
    assert sanitizer_report(log) is None, sanitizer_report(log)
