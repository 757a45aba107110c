"""The cache (src/cache: shared-memory L1, Redis L2, myr_cached) end to end,
on SQLite, with and without a real redis-server (redis_server.py).

Checked: /world/:id and /cached-queries (TechEmpower rules, values equal to
the database's, bad input); a time to live that runs out; a value filled by
one worker read by the other (--workers 2, the worker named by X-Pid);
1,000 concurrent requests for one cold key costing exactly one database
query; stale-while-revalidate serving the stale value once, then the fresh
one; clients that go away while waiting; /updates dropping the rows it
changes; two instances sharing a Redis: L2 hits, invalidation by
myr_cache_del and by redis-cli, /updates on one seen by the other; Redis
killed mid-test (every request still succeeds, the breaker opens) and
restarted (the breaker closes); bad cache flags.

The test routes used (app/cache_routes.c): GET /test/cache/kv/:k?ttl&stale&slow
(myr_cached of kv:<k> over the kv table), POST /test/cache/kv/:k (write the
database, then myr_cache_del), POST /test/db/kv/:k (write the database
only: the cache does not know).
"""

import json
import os
import selectors
import signal
import socket
import sqlite3
import time

import pytest

import promtext
import tfb_verify as tfb
from client import HOST, Conn, fetch, request
from redis_server import RedisServer

NO_REDIS = {"REDIS_URL": ""}
BURST_TIMEOUT = 60.0


# ---- helpers --------------------------------------------------------------------------------

def metrics(port):
    r = fetch(port, "/metrics")
    assert r.status == 200, r
    return promtext.parse(r.body.decode("utf-8"))


def mval(port_or_fams, name, **labels):
    """A family's total over the series that include labels (0 if absent)."""
    fams = metrics(port_or_fams) if isinstance(port_or_fams, int) else port_or_fams
    f = fams.get(name)
    return f.total(**labels) if f else 0


def wait_until(pred, timeout=10.0, step=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


def kv_put(port, key, value, invalidate=False):
    """Writes kv[key] in the database; invalidate: through the cache's route,
    which also calls myr_cache_del."""
    path = ("/test/cache/kv/" if invalidate else "/test/db/kv/") + key
    r = fetch(port, path, method="POST", body=value.encode())
    assert r.status == 200, r
    return r


def kv_get(port, key, query=""):
    return fetch(port, "/test/cache/kv/%s%s" % (key, query), timeout=15.0)


def kv_value(port, key, query=""):
    r = kv_get(port, key, query)
    assert r.status == 200, r
    return r.body.decode()


class Burst:
    """n connections opened now; fire() sends one request for target on
    each at once and reads every answer (bounded). Returns [(status, body)]."""

    def __init__(self, port, n):
        self.socks = []
        try:
            for _ in range(n):
                s = socket.create_connection((HOST, port), timeout=5)
                s.setblocking(False)
                self.socks.append(s)
        except BaseException:
            self.close()
            raise

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []

    def fire(self, target, timeout=BURST_TIMEOUT):
        try:
            req = request("GET", target, headers=[("Connection", "close")])
            for s in self.socks:
                s.send(req)   # a few dozen bytes: the socket buffer takes them
            return self._read(timeout)
        finally:
            self.close()

    def _read(self, timeout):
        sel = selectors.DefaultSelector()
        bufs = {}
        for s in self.socks:
            sel.register(s, selectors.EVENT_READ)
            bufs[s] = bytearray()
        left, deadline = len(self.socks), time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data:
                    bufs[s] += data
                else:
                    sel.unregister(s)
                    left -= 1
        assert left == 0, "%d of %d responses missing after %.0fs" % (left, len(bufs), timeout)
        out = []
        for s in self.socks:
            head, _, body = bytes(bufs[s]).partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
            out.append((status, body))
        return out


def burst(port, target, n, timeout=BURST_TIMEOUT):
    """n concurrent requests for target, one connection each."""
    return Burst(port, n).fire(target, timeout)


def pipelined(port, targets, timeout=60.0):
    """GETs targets on one keep-alive connection, 500 at a time; returns the
    responses in order."""
    out = []
    with Conn(port, timeout=timeout) as c:
        for i in range(0, len(targets), 500):
            batch = targets[i:i + 500]
            c.send(b"".join(request("GET", t) for t in batch))
            for _ in batch:
                r, _ = c.read_final()
                out.append(r)
    return out


def db_world(path):
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT id, randomNumber FROM World"))


def world_of(port, wid):
    r = fetch(port, "/world/%d" % wid)
    assert r.status == 200, r
    return json.loads(r.body)


def start(start_server, *flags, env=None):
    e = dict(NO_REDIS)
    e.update(env or {})
    return start_server(*flags, env=e)


# ---- /world/:id and /cached-queries ------------------------------------------------------

def test_world_by_id_and_bad_input(start_server):
    s = start(start_server)
    r = fetch(s.port, "/world/42")
    tfb.check_headers(r, tfb.JSON_CT, "/world/42")
    assert r.header("Cache-Control") == "max-age=3600"
    obj = json.loads(r.body)
    tfb.check_world(obj, "/world/42")
    assert obj["id"] == 42
    want = db_world(os.path.join(s.workdir, "myriad.db"))[42]
    assert obj["randomNumber"] == want
    fills = mval(s.port, "myriad_cache_fills_total", result="ok")
    for _ in range(5):
        assert json.loads(fetch(s.port, "/world/42").body) == obj
    assert mval(s.port, "myriad_cache_fills_total", result="ok") == fills   # all L1 hits
    for bad in ("0", "abc", "-1", "1.5", "01", "2147483648", "99999999999", "%20", "1a"):
        r = fetch(s.port, "/world/" + bad)
        assert r.status == 400, (bad, r)
        assert "error" in json.loads(r.body)
    # an unknown id: 404, and the "absent" answer is cached
    absent = mval(s.port, "myriad_cache_fills_total", result="absent")
    for _ in range(3):
        r = fetch(s.port, "/world/99999")
        assert r.status == 404, r
        assert json.loads(r.body) == {"error": "no such world"}
    fams = metrics(s.port)
    assert mval(fams, "myriad_cache_fills_total", result="absent") == absent + 1
    assert mval(fams, "myriad_cache_lookups_total", tier="l1", outcome="negative") >= 2
    assert fetch(s.port, "/world/1", method="HEAD").status == 200


def test_cached_queries_tfb_rules(start_server):
    s = start(start_server, "--workers", "2")
    cases = tfb.check_query_cases(s.port, "/cached-queries?count=")
    world = db_world(os.path.join(s.workdir, "myriad.db"))
    for rows in cases.values():
        for row in rows:
            assert world[row["id"]] == row["randomNumber"], row
    assert len(cases["501"]) == 500
    for q in ("abc", "-3", "1e3", "%31"):
        r = fetch(s.port, "/cached-queries?count=" + q)
        tfb.check_headers(r, tfb.JSON_CT, q)
        assert len(json.loads(r.body)) == 1, q
    r = fetch(s.port, "/cached-queries")
    assert len(json.loads(r.body)) == 1
    r = fetch(s.port, "/cached-queries?count=20")
    rows = json.loads(r.body)
    assert len(rows) == 20 and all(world[x["id"]] == x["randomNumber"] for x in rows)
    fams = metrics(s.port)
    # every lookup counted once: 505 + 1 (HEAD) + 4 + 1 + 20
    assert mval(fams, "myriad_cache_hits_total") + mval(fams, "myriad_cache_misses_total") == 531


# ---- the L1: time to live, sharing, stampedes, staleness ----------------------------------------

def test_ttl_expiry(start_server):
    s = start(start_server)
    kv_put(s.port, "t1", "v1")
    assert kv_value(s.port, "t1", "?ttl=300") == "v1"
    kv_put(s.port, "t1", "v2")   # behind the cache's back
    assert kv_value(s.port, "t1", "?ttl=300") == "v1"   # still cached
    wait_until(lambda: kv_value(s.port, "t1", "?ttl=300") == "v2", 10, what="expiry")
    assert mval(s.port, "myriad_cache_fills_total", result="ok") == 2


def test_value_shared_by_workers(start_server):
    s = start(start_server, "--workers", "2")
    kv_put(s.port, "shared", "one")
    pids, values = set(), set()
    for _ in range(400):
        r = kv_get(s.port, "shared")
        assert r.status == 200, r
        pids.add(r.header("X-Pid"))
        values.add(r.body)
        if len(pids) == 2:
            break
    assert len(pids) == 2, "one worker answered 400 connections"
    assert values == {b"one"}
    fams = metrics(s.port)
    assert mval(fams, "myriad_cache_fills_total", result="ok") == 1   # filled once, machine-wide
    assert mval(fams, "myriad_cache_hits_total", tier="l1") >= 1


def test_stampede_one_query(start_server):
    s = start(start_server, "--workers", "2", "--db-timeout", "60s")
    kv_put(s.port, "hot", "stampede")
    crowd = Burst(s.port, 999)   # connected and idle
    before = metrics(s.port)
    q0 = mval(before, "myriad_db_queries_total")
    first = Conn(s.port, timeout=30)   # starts the (slow: a count to 10^6) fill
    first.send(request("GET", "/test/cache/kv/hot?slow=1"))
    wait_until(lambda: mval(s.port, "myriad_cache_lookups_total", tier="l1", outcome="miss") >
               mval(before, "myriad_cache_lookups_total", tier="l1", outcome="miss"),
               10, 0.002, "the first miss")
    results = crowd.fire("/test/cache/kv/hot?slow=1")
    r, _ = first.read_final()
    first.close()
    results.append((r.status, r.body))
    assert [x for x in results if x != (200, b"stampede")] == []
    fams = metrics(s.port)
    assert mval(fams, "myriad_cache_fills_total") - mval(before, "myriad_cache_fills_total") == 1
    assert mval(fams, "myriad_db_queries_total") - q0 == 1
    waits = mval(fams, "myriad_cache_waits_total") - mval(before, "myriad_cache_waits_total")
    assert waits >= 1, "no request waited for the fill: the stampede did not happen"


def test_stale_while_revalidate(start_server):
    s = start(start_server)
    q = "?ttl=200&stale=60000"
    kv_put(s.port, "swr", "old")
    assert kv_value(s.port, "swr", q) == "old"
    kv_put(s.port, "swr", "new")   # the cache does not know
    time.sleep(0.3)                # past the ttl, within the stale window
    assert kv_value(s.port, "swr", q) == "old"   # stale, at once; a refresh starts
    seen = [kv_value(s.port, "swr", q)]
    deadline = time.monotonic() + 10
    while seen[-1] != "new" and time.monotonic() < deadline:
        seen.append(kv_value(s.port, "swr", q))
    assert seen[-1] == "new", seen
    for _ in range(5):
        assert kv_value(s.port, "swr", q) == "new"
    fams = metrics(s.port)
    assert mval(fams, "myriad_cache_lookups_total", tier="l1", outcome="stale") >= 1
    assert mval(fams, "myriad_cache_fills_total", result="ok") == 2   # one refresh


def test_clients_gone_while_waiting(start_server):
    s = start(start_server, "--workers", "2", "--db-timeout", "60s")
    kv_put(s.port, "gone", "still-there")
    conns = []
    for _ in range(50):
        c = Conn(s.port)
        c.send(request("GET", "/test/cache/kv/gone?slow=1"))
        conns.append(c)
    time.sleep(0.05)
    for c in conns:
        c.abort()   # reset while the fill runs
    assert kv_value(s.port, "gone", "?slow=1") == "still-there"
    assert mval(s.port, "myriad_cache_fills_total", result="ok") == 1


def test_updates_drop_changed_rows(start_server):
    s = start(start_server, "--workers", "2")
    pipelined(s.port, ["/world/%d" % i for i in range(1, 10001)])   # every row cached
    r = fetch(s.port, "/updates?queries=20")
    assert r.status == 200, r
    for row in json.loads(r.body):
        assert world_of(s.port, row["id"]) == row
    assert mval(s.port, "myriad_cache_invalidations_total", source="local") >= 20


def test_no_l1(start_server):
    s = start(start_server, "--cache-size", "0", "--workers", "2", "--db-timeout", "60s")
    tfb.check_query_cases(s.port, "/cached-queries?count=")
    kv_put(s.port, "nol1", "x")
    results = burst(s.port, "/test/cache/kv/nol1?slow=1", 100)
    assert set(results) == {(200, b"x")}


@pytest.mark.parametrize("flags, message", [
    (("--cache-stripes", "3"), "power of two"),
    (("--cache-size", "1k"), "--cache-size"),
])
def test_bad_cache_flags(start_server, flags, message):
    s = start_server(*flags, env=NO_REDIS, wait=False)
    wait_until(lambda: not s.alive(), 10, what="exit")
    assert s.proc.returncode != 0
    assert message in s.stderr()
    s.kill()   # it exited by itself, as it should: nothing to stop


# ---- with Redis -------------------------------------------------------------------------------

@pytest.fixture
def redis_srv():
    rs = RedisServer()
    yield rs
    rs.close()


def two_instances(start_server, tmp_path, rs, *flags):
    db = "sqlite:" + str(tmp_path / "shared.db")
    a = start_server("--db", db, "--redis", rs.url, *flags)
    b = start_server("--db", db, "--redis", rs.url, *flags)
    return a, b


def trackers(rs):
    """Connections of the Redis server with key tracking on."""
    flags = [f.split("=", 1)[1] for line in rs.cli("CLIENT", "LIST").splitlines()
             for f in line.split() if f.startswith("flags=")]
    return sum("t" in f for f in flags)


def start_tracking(rs, servers, workers):
    """A worker registers its tracker on its first cache call: makes one in
    every worker of every server, then waits until Redis lists them all."""
    for s in servers:
        pids = set()
        wait_until(lambda: pids.add(kv_get(s.port, "warm").header("X-Pid")) or
                   len(pids) == workers, 20, 0.0, "a cache call in each worker")
    wait_until(lambda: trackers(rs) == workers * len(servers), 10,
               what="%d tracking connections" % (workers * len(servers)))


def test_l2_shared_by_instances(start_server, tmp_path, redis_srv):
    a, b = two_instances(start_server, tmp_path, redis_srv, "--workers", "1")
    start_tracking(redis_srv, (a, b), 1)
    kv_put(a.port, "l2", "from-a")
    assert kv_value(a.port, "l2") == "from-a"
    wait_until(lambda: redis_srv.cli("GET", "c:kv:l2") == "from-a", 5, what="the L2 SET")
    assert kv_value(b.port, "l2") == "from-a"
    fams = metrics(b.port)
    assert mval(fams, "myriad_cache_fills_total", result="ok") == 0   # B never read it
    assert mval(fams, "myriad_cache_hits_total", tier="l2") == 1


def test_invalidation_across_instances(start_server, tmp_path, redis_srv):
    a, b = two_instances(start_server, tmp_path, redis_srv, "--workers", "2")
    start_tracking(redis_srv, (a, b), 2)
    kv_put(a.port, "inv", "v1")
    assert kv_value(a.port, "inv") == "v1"   # A fills and SETs c:kv:inv
    # that SET is a change for B's two trackers: let them hear it before B
    # reads, or a late one would drop B's copy
    wait_until(lambda: mval(b.port, "myriad_cache_invalidations_total", source="redis") >= 2,
               5, what="B's trackers told of A's SET")
    assert kv_value(b.port, "inv") == "v1"
    # B keeps v1 in its L1 for the whole ttl (tracking is on: no short
    # untracked lifetime), so only an invalidation can make it read again
    l2_hits = mval(b.port, "myriad_cache_hits_total", tier="l2")
    time.sleep(1.5)
    for _ in range(4):
        assert kv_value(b.port, "inv") == "v1"
    assert mval(b.port, "myriad_cache_hits_total", tier="l2") == l2_hits
    # a write through A's API: A deletes its copies, B's L1 hears it from Redis
    kv_put(a.port, "inv", "v2", invalidate=True)
    wait_until(lambda: all(kv_value(b.port, "inv") == "v2" for _ in range(4)), 5,
               what="B serving v2")
    assert kv_value(a.port, "inv") == "v2"
    assert mval(b.port, "myriad_cache_invalidations_total", source="redis") >= 1
    # a write by someone else, straight into Redis: both instances drop it
    assert redis_srv.cli("SET", "c:kv:inv", "v3") == "OK"
    for s in (a, b):
        wait_until(lambda: all(kv_value(s.port, "inv") == "v3" for _ in range(4)), 5,
                   what="v3 everywhere")
    # DEL in Redis: the next lookup goes to the database (v2 there)
    redis_srv.cli("DEL", "c:kv:inv")
    for s in (a, b):
        wait_until(lambda: all(kv_value(s.port, "inv") == "v2" for _ in range(4)), 5,
                   what="back to the database's v2")


def test_updates_on_one_instance_seen_by_the_other(start_server, tmp_path, redis_srv):
    a, b = two_instances(start_server, tmp_path, redis_srv, "--workers", "2")
    start_tracking(redis_srv, (a, b), 2)
    pipelined(b.port, ["/world/%d" % i for i in range(1, 10001)])
    r = fetch(a.port, "/updates?queries=20")
    assert r.status == 200, r
    rows = json.loads(r.body)
    for row in rows:
        wait_until(lambda: world_of(b.port, row["id"]) == row, 5,
                   what="B seeing row %d updated" % row["id"])


def test_redis_killed_then_restarted(start_server, tmp_path, redis_srv):
    s = start_server("--redis", redis_srv.url, "--redis-timeout", "100ms", "--workers", "2")
    start_tracking(redis_srv, (s,), 2)
    tfb.check_query_cases(s.port, "/cached-queries?count=")
    redis_srv.kill()
    failures, n = [], 0
    deadline = time.monotonic() + 3.0   # through the breaker opening
    while time.monotonic() < deadline:
        for target in ("/cached-queries?count=20", "/world/%d" % (n % 10000 + 1)):
            r = fetch(s.port, target, timeout=10)
            n += 1
            if r.status != 200:
                failures.append(r)
    assert failures == [], failures[:3]
    assert n >= 20
    wait_until(lambda: mval(s.port, "myriad_redis_breaker_open") >= 1, 10,
               what="the breaker open in /metrics")
    for i in range(50):   # still served: from L1 or the database
        assert fetch(s.port, "/world/%d" % (5000 + i)).status == 200
    redis_srv.restart()
    wait_until(lambda: mval(s.port, "myriad_redis_breaker_open") == 0, 20,
               what="the breaker closed again")
    wait_until(lambda: trackers(redis_srv) == 2, 10, what="tracking again")
    # L2 is written again: a new fill lands in Redis
    kv_put(s.port, "after", "back")
    wait_until(lambda: kv_value(s.port, "after") == "back" and
               redis_srv.cli("GET", "c:kv:after") == "back", 10, what="an L2 SET after restart")
    assert mval(s.port, "myriad_cache_invalidations_total", source="reset") >= 1


def test_deletes_reach_redis_after_an_outage(start_server, redis_srv):
    """A delete made while Redis cannot be reached is sent when it answers
    again: otherwise the old value would be read back from Redis."""
    s = start_server("--redis", redis_srv.url, "--redis-timeout", "100ms", "--workers", "1")
    start_tracking(redis_srv, (s,), 1)
    kv_put(s.port, "outage", "v1")
    wait_until(lambda: kv_value(s.port, "outage") == "v1" and
               redis_srv.cli("GET", "c:kv:outage") == "v1", 10, what="v1 in L1 and L2")
    os.kill(redis_srv.pid, signal.SIGSTOP)   # unreachable, data kept
    try:
        wait_until(lambda: kv_get(s.port, "other%d" % time.monotonic_ns()).status in (200, 404)
                   and mval(s.port, "myriad_redis_breaker_open") >= 1, 15, 0.0,
                   "the breaker open")
        kv_put(s.port, "outage", "v2", invalidate=True)   # the L2 DEL cannot go now
        assert kv_value(s.port, "outage") == "v2"
    finally:
        os.kill(redis_srv.pid, signal.SIGCONT)
    wait_until(lambda: mval(s.port, "myriad_redis_breaker_open") == 0, 20, what="breaker closed")
    wait_until(lambda: redis_srv.cli("GET", "c:kv:outage") in ("", "v2"), 10,
               what="the old value gone from Redis")
    for _ in range(5):
        assert kv_value(s.port, "outage") == "v2"
