"""The data layer on PostgreSQL, against real servers started here (pg.py):
a primary, a streaming replica and a second cluster as another shard, all
shared by the module (initdb is the slow part).

Checked: the TechEmpower endpoints under the TFB-style verifier with
updates read back through psql; statement counts the way the toolset counts
them (pg_stat_statements: one statement per row, no IN lists); reads on the
replica and writes on the primary, read-your-writes; a lagging replica
skipped until it catches up; a replica killed mid-test; shard routing that
is stable across restarts; a stopped primary answering 503 then recovering
without a restart; the query timeout.
"""

import json
import subprocess
import threading
import time

import pytest

import pg
import tfb_verify as tfb
from client import Conn, request

MASK = (1 << 64) - 1


@pytest.fixture(scope="module")
def cl():
    ws = pg.Workspace()
    try:
        ws.p = ws.primary()
        ws.r = ws.replica(ws.p)
        ws.s = ws.primary(name="shard1")
        yield ws
    finally:
        ws.close()


def serve(start_server, cl, *flags):
    s = start_server("--db", cl.p.url, "--db-pool", "2", "--db-timeout", "3s", *flags)
    pg.wait_until(lambda: tfb.get(s.port, "/db").status == 200, 15, what="/db answering")
    return s


def world(server):
    rows = server.psql("SELECT id, randomnumber FROM world")
    return {int(a): int(b) for a, b in (line.split("|") for line in rows.splitlines())}


def where(port):
    r = tfb.get(port, "/test/db/where")
    assert r.status == 200, r
    return int(r.body)


# ---- TechEmpower ---------------------------------------------------------------------------

def test_tfb_endpoints(start_server, cl):
    s = serve(start_server, cl)
    tfb.check_db(s.port)
    tfb.check_query_cases(s.port, "/queries?queries=")
    tfb.check_fortunes(s.port)
    before = world(cl.p)
    cases = tfb.check_query_cases(s.port, "/updates?queries=", head=False)
    after = world(cl.p)
    changed = sum(before[k] != after[k] for k in before)
    assert changed > 475, f"only {changed} rows changed"
    later = {row["id"] for row in cases[""]}
    for row in cases["501"]:
        if row["id"] not in later:
            assert after[row["id"]] == row["randomNumber"], row
    assert tfb.get(s.port, "/updates?queries=", head=True).status == 200
    for _ in range(10):   # clients gone mid-query: the answers are dropped
        c = Conn(s.port)
        c.send(request("GET", "/queries?queries=500"))
        c.abort()
    tfb.check_db(s.port)


def test_statement_counts(start_server, cl):
    """The toolset's count (spec section 9), on 50 requests of each."""
    s = serve(start_server, cl)
    cl.p.reset_statements()
    with Conn(s.port, timeout=15) as c:
        for path in ["/queries?queries=20"] * 50 + ["/fortunes"] * 50 + ["/updates?queries=20"] * 50:
            c.send(request("GET", path))
            r, _ = c.read_final()
            assert r.status == 200, r
    selects = cl.p.statements(r"^select.*\mworld\M")
    updates = cl.p.statements(r"^update.*\mworld\M")
    fortunes = cl.p.statements(r"\mfortune\M")
    assert (selects, updates, fortunes) == (2000, 50, 50)


# ---- replicas ------------------------------------------------------------------------------

def test_reads_on_replica_writes_on_primary(start_server, cl):
    s = serve(start_server, cl, "--db-replica", cl.r.url)
    pg.wait_until(lambda: where(s.port) == cl.r.port, 10, what="reads on the replica")
    cl.p.reset_statements()
    cl.r.reset_statements()
    for _ in range(20):
        assert len(json.loads(tfb.get(s.port, "/queries?queries=5").body)) == 5
    r = tfb.get(s.port, "/updates?queries=3")
    assert r.status == 200
    assert cl.r.statements(r"^select.*\mworld\M") == 103
    assert cl.p.statements(r"^select.*\mworld\M") == 0
    assert cl.p.statements(r"^update.*\mworld\M") == 1
    # read-your-writes: a request that wrote reads from the primary
    assert int(tfb.get(s.port, "/test/db/ryw").body) == cl.p.port


def test_read_your_writes_off(start_server, cl):
    s = serve(start_server, cl, "--db-replica", cl.r.url, "--db-read-your-writes=false")
    pg.wait_until(lambda: where(s.port) == cl.r.port, 10, what="reads on the replica")
    assert int(tfb.get(s.port, "/test/db/ryw").body) == cl.r.port


def test_shard_replica_flag(start_server, cl, tmp_path):
    s = serve(start_server, cl, "--db-shard-replica", "0:" + cl.r.url)
    pg.wait_until(lambda: where(s.port) == cl.r.port, 10, what="reads on the replica")
    from conftest import Server
    bad = Server(tmp_path / "bad", ["--db", cl.p.url, "--db-shard-replica", "1:" + cl.r.url])
    try:
        bad.proc.wait(15)
    finally:
        bad.kill()
    assert bad.proc.returncode != 0
    assert "expected I:URL with I a shard number below 1" in bad.stderr(), bad.stderr()


def test_lagging_replica_skipped(start_server, cl):
    s = serve(start_server, cl, "--db-replica", cl.r.url, "--db-max-replica-lag", "300ms")
    pg.wait_until(lambda: where(s.port) == cl.r.port, 10, what="reads on the replica")
    cl.r.psql("SELECT pg_wal_replay_pause()")
    try:
        cl.p.psql("UPDATE world SET randomnumber = randomnumber WHERE id = 1")
        pg.wait_until(lambda: where(s.port) == cl.p.port, 10, what="reads moved to the primary")
        assert "skipped for reads" in s.stderr()
    finally:
        cl.r.psql("SELECT pg_wal_replay_resume()")
    pg.wait_until(lambda: where(s.port) == cl.r.port, 10, what="reads back on the replica")


def test_replica_killed_mid_test(start_server, cl):
    s = serve(start_server, cl, "--db-replica", cl.r.url)
    pg.wait_until(lambda: where(s.port) == cl.r.port, 10, what="reads on the replica")
    bad, done = [], threading.Event()

    def reader():
        with Conn(s.port, timeout=10) as c:
            while not done.is_set():
                c.send(request("GET", "/queries?queries=10"))
                r, _ = c.read_final()
                if r.status != 200:
                    bad.append(r)
    t = threading.Thread(target=reader)
    t.start()
    try:
        time.sleep(0.3)
        cl.r.stop("immediate")
        time.sleep(0.5)
        assert where(s.port) == cl.p.port
    finally:
        done.set()
        t.join(15)
        if not cl.r.running:
            cl.r.start()
    assert not bad, bad[:3]
    pg.wait_until(lambda: where(s.port) == cl.r.port, 15, what="the replica taken back")


# ---- shards --------------------------------------------------------------------------------

def shard_of(key, n):
    """db_shard_of: FNV-1a 64 of the key, then the jump consistent hash."""
    h = 14695981039346656037
    for b in key.encode():
        h = ((h ^ b) * 1099511628211) & MASK
    b, j = -1, 0
    while j < n:
        b = j
        h = (h * 2862933555777941757 + 1) & MASK
        j = int((b + 1) * (float(1 << 31) / float((h >> 33) + 1)))
    return b


def test_shard_routing_stable(start_server, cl):
    flags = ("--db-shard", cl.s.url)
    s = serve(start_server, cl, *flags)
    keys = ["user:%d" % i for i in range(40)]
    for k in keys:
        with Conn(s.port) as c:
            c.send(request("POST", "/test/db/kv/" + k, headers=[("Content-Length", "3")],
                           body=b"v-" + k[-1].encode()))
            r, _ = c.read_final()
            assert r.status == 200, r
    on = [set(x.psql("SELECT k FROM kv WHERE k LIKE 'user:%'").split()) for x in (cl.p, cl.s)]
    expect = [{k for k in keys if shard_of(k, 2) == i} for i in (0, 1)]
    assert on == expect
    assert expect[0] and expect[1], "both shards hold keys"
    # a new process routes the same way; a batch fans out over both shards
    s2 = serve(start_server, cl, *flags)
    for k in keys[:10]:
        assert tfb.get(s2.port, "/test/db/kv/" + k).body == b"v-" + k[-1].encode()
    r = tfb.get(s2.port, "/test/db/kvs?keys=" + ",".join(keys) + ",absent")
    got = json.loads(r.body)
    assert got == dict({k: "v-" + k[-1] for k in keys}, absent=None)


# ---- failures ------------------------------------------------------------------------------

def test_query_timeout(start_server, cl):
    s = serve(start_server, cl, "--db-timeout", "500ms")
    locker = subprocess.Popen(
        ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(cl.p.port), "-U", "postgres", "-d",
         pg.DBNAME, "-c", "BEGIN; LOCK TABLE world; SELECT pg_sleep(2); COMMIT;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pg.wait_until(lambda: cl.p.psql("SELECT count(*) FROM pg_locks WHERE "
                                        "relation = 'world'::regclass AND granted") != "0",
                      5, what="the lock")
        t0 = time.monotonic()
        r = tfb.get(s.port, "/db")
        took = time.monotonic() - t0
        assert r.status == 503, r
        assert json.loads(r.body) == {"error": "database query timed out"}
        assert took < 1.5, took
    finally:
        locker.wait(10)
    pg.wait_until(lambda: tfb.get(s.port, "/db").status == 200, 10, what="recovery")


def test_bad_role_503(start_server, cl):
    url = cl.p.url.replace(pg.USER + ":", "nosuchrole:")
    s = start_server("--db", url)
    r = tfb.get(s.port, "/db")
    assert r.status == 503 and json.loads(r.body) == {"error": "database unavailable"}, r
    assert 'role "nosuchrole" does not exist' in s.stderr()


def test_primary_down_503_then_recovers(start_server, cl):
    s = serve(start_server, cl)
    cl.p.stop("fast")
    try:
        for path in ["/db"] * 5 + ["/fortunes"]:
            t0 = time.monotonic()
            r = tfb.get(s.port, path)
            took = time.monotonic() - t0
            assert r.status == 503, (path, r)
            assert json.loads(r.body)["error"] in ("database unavailable",
                                                   "database query timed out"), r
            assert took < 4, (path, took)   # --db-timeout 3s bounds even a stuck query
    finally:
        cl.p.start()
    pg.wait_until(lambda: tfb.get(s.port, "/db").status == 200, 15, what="recovery")
    tfb.check_fortunes(s.port)
