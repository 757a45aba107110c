"""The data layer on its embedded default, SQLite: schema and seeding once,
the four TechEmpower database endpoints under a TFB-style verifier, updates
that really persist (read back from the file), several processes writing
one file at once, the query budget, and bad database flags.
"""

import json
import os
import sqlite3
import threading
import time

import pytest

from client import Conn, request
from conftest import Server
import tfb_verify as tfb


def started(s):
    """Ready means serving: "listening on" is logged before the worker has
    opened (and maybe seeded) its database, so wait for a real answer."""
    s.wait_ready()
    r = tfb.get(s.port, "/db", timeout=30)
    assert r.status == 200, (r, s.stderr())
    return s


def world(path):
    with sqlite3.connect(path, timeout=10) as c:
        return dict(c.execute("SELECT id, randomNumber FROM World").fetchall())


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server on a fresh database in its working directory (the default
    --db sqlite:myriad.db)."""
    s = started(Server(tmp_path_factory.mktemp("sqlite"), name="sqlite"))
    s.db = os.path.join(s.workdir, "myriad.db")
    yield s
    problems = s.stop()
    assert not problems, "\n".join(problems)


def test_first_start_creates_and_seeds(srv):
    assert os.path.exists(srv.db), "the default database is myriad.db in the working directory"
    assert "applying migration tfb-schema" in srv.stderr(), srv.stderr()
    w = world(srv.db)
    assert sorted(w) == list(range(1, 10001))
    assert all(1 <= v <= 10000 for v in w.values())
    assert len(set(w.values())) > 5000, "randomNumber should be random"
    with sqlite3.connect(srv.db) as c:
        assert dict(c.execute("SELECT id, message FROM Fortune")) == tfb.FORTUNES
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {n for (n,) in c.execute("SELECT name FROM myriad_migrations")}
        assert names == {"tfb-schema", "test-kv"}


def test_db(srv):
    ids = {tfb.check_db(srv.port)["id"] for _ in range(20)}
    assert len(ids) > 10, "ids must be random"


def test_db_row_matches_database(srv):
    for _ in range(5):
        obj = tfb.check_db(srv.port)
        assert world(srv.db)[obj["id"]] == obj["randomNumber"]


def test_queries(srv):
    rows = tfb.check_query_cases(srv.port, "/queries?queries=")
    assert len({r["id"] for r in rows["501"]}) > 400, "each row its own random id"
    r = tfb.get(srv.port, "/queries?queries=20")
    assert len(json.loads(r.body)) == 20
    r = tfb.get(srv.port, "/queries")
    assert len(json.loads(r.body)) == 1, "missing parameter -> 1"


def test_fortunes(srv):
    tfb.check_fortunes(srv.port)
    tfb.check_fortunes(srv.port)   # the added fortune is not persisted


def test_updates_persist(srv):
    before = world(srv.db)
    cases = tfb.check_query_cases(srv.port, "/updates?queries=", head=False)
    after = world(srv.db)
    changed = sum(1 for k in before if before[k] != after[k])
    assert changed > 475, f"only {changed} rows changed (TFB: > 475 of the 501 case)"
    # every row returned by the last case holds its new value in the file
    # (an id drawn twice in one request gets one value)
    later = {row["id"] for row in cases[""]}   # the case run after 501
    for row in cases["501"]:
        if row["id"] not in later:
            assert after[row["id"]] == row["randomNumber"], row
    assert tfb.get(srv.port, "/updates?queries=", head=True).status == 200


def test_updates_20_read_back_with_cli(srv):
    r = tfb.get(srv.port, "/updates?queries=20")
    rows = json.loads(r.body)
    assert len(rows) == 20
    import subprocess
    for row in rows[:5]:
        out = subprocess.run(["sqlite3", srv.db, "SELECT randomNumber FROM World WHERE id = %d"
                              % row["id"]], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) == row["randomNumber"]


def test_query_counter(srv):
    r = tfb.get(srv.port, "/test/db/nplus1?n=7")
    assert r.status == 200 and r.body == b"7"


def test_many_concurrent_requests(srv):
    errors = []

    def client(path):
        try:
            with Conn(srv.port, timeout=15) as c:
                for _ in range(10):
                    c.send(request("GET", path))
                    r, _ = c.read_final()
                    if r.status != 200:
                        errors.append((path, r.status, r.body))
        except AssertionError as e:
            errors.append((path, str(e)))
    ts = [threading.Thread(target=client, args=(p,)) for p in
          ["/db", "/queries?queries=20", "/fortunes", "/updates?queries=20"] * 4]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors, errors[:3]


def test_client_gone_mid_query(srv):
    """The completion still runs; its answer is dropped; the server lives."""
    for _ in range(20):
        c = Conn(srv.port)
        c.send(request("GET", "/updates?queries=500"))
        c.abort()
    time.sleep(0.5)
    tfb.check_db(srv.port)


def test_second_start_does_not_reseed(tmp_path):
    s1 = started(Server(tmp_path, name="first"))
    db = os.path.join(s1.workdir, "myriad.db")
    assert not s1.stop()
    before = world(db)
    s2 = started(Server(tmp_path, name="second"))
    tfb.check_db(s2.port)
    assert not s2.stop()
    assert "applying migration" not in s2.stderr(), s2.stderr()
    assert world(db) == before


def test_workers_share_the_file(tmp_path):
    """Three server processes (what --workers runs) start together on one
    new file: it is seeded once, then they all write at the same time."""
    db = str(tmp_path / "shared.db")
    servers = [Server(tmp_path / f"w{i}", ["--db", "sqlite:" + db], name=f"w{i}")
               for i in range(3)]
    try:
        for s in servers:
            started(s)
        applied = sum("applying migration tfb-schema" in s.stderr() for s in servers)
        assert applied == 1, [s.stderr() for s in servers]
        before = world(db)
        errors = []

        def writer(s):
            try:
                with Conn(s.port, timeout=20) as c:
                    for _ in range(15):
                        c.send(request("GET", "/updates?queries=20"))
                        r, _ = c.read_final(timeout=20)
                        if r.status != 200:
                            errors.append((r.status, r.body))
            except AssertionError as e:
                errors.append(str(e))
        ts = [threading.Thread(target=writer, args=(s,)) for s in servers for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errors, errors[:3]
        after = world(db)
        assert len(after) == 10000
        assert sum(before[k] != after[k] for k in before) > 1000
        with sqlite3.connect(db) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        problems = []
        for s in servers:
            problems += s.stop()
        assert not problems, "\n".join(problems)


def test_query_budget_strict(start_server):
    s = started(start_server("--db-query-budget", "5", "--db-budget-strict"))
    assert len(json.loads(tfb.get(s.port, "/queries?queries=5").body)) == 5
    r = tfb.get(s.port, "/queries?queries=6")
    assert r.status == 500, r
    assert json.loads(r.body) == {"error": "query budget exceeded"}
    assert "over --db-query-budget 5" in s.stderr()


def test_query_budget_logs(start_server):
    s = started(start_server("--db-query-budget", "3"))
    assert len(json.loads(tfb.get(s.port, "/queries?queries=4").body)) == 4
    assert "/queries issued 4 statements, over --db-query-budget 3" in s.stderr()


def test_database_url_env(start_server, tmp_path):
    path = str(tmp_path / "from-env.db")
    s = started(start_server(env={"DATABASE_URL": "sqlite:" + path}))
    tfb.check_db(s.port)
    assert os.path.exists(path)


@pytest.mark.parametrize("url, message", [
    ("mysql://x@y/z", "unknown scheme"),
    ("sqlite:", "no file name"),
    ("sqlite:/nonexistent-dir/x.db", "cannot open"),
])
def test_bad_database_flag(tmp_path, url, message):
    s = Server(tmp_path, ["--db", url], name="bad")
    try:
        s.proc.wait(10)
    finally:
        s.kill()
    assert s.proc.returncode != 0
    assert message in s.stderr(), s.stderr()
    assert not tfb_sanitizer(s.stderr())


def log_pids(text, needle):
    """The pids of the log lines that contain needle ("... [pid] level: ...")."""
    return [int(line.split("[", 1)[1].split("]", 1)[0])
            for line in text.splitlines() if needle in line and "[" in line]


def test_two_workers_fresh_file_seed_once(tmp_path):
    """--workers 2 on a new file: the supervisor migrates and seeds it once,
    before any worker exists; the workers only open it."""
    db = str(tmp_path / "fresh.db")
    s = started(Server(tmp_path, ["--workers", "2", "--db", "sqlite:" + db], name="two"))
    try:
        tfb.check_db(s.port)
        log = s.stderr()
        assert log_pids(log, "applying migration tfb-schema") == [s.proc.pid], log
        assert log_pids(log, "applying migration test-kv") == [s.proc.pid], log
        assert log.index("migration tfb-schema applied") < log.index("worker 0 started"), log
        assert log.count("worker 0 started") == 1 and log.count("worker 1 started") == 1, log
        w = world(db)
        assert sorted(w) == list(range(1, 10001))
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT count(*) FROM Fortune").fetchone()[0] == len(tfb.FORTUNES)
            assert c.execute("SELECT count(*) FROM myriad_migrations").fetchone()[0] == 2
    finally:
        problems = s.stop()
    assert not problems, "\n".join(problems)


def not_a_database(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database. " * 512)
    return "sqlite:" + str(path)


@pytest.mark.parametrize("url, message", [
    (lambda tmp: "sqlite:/nonexistent-dir/x.db",
     "sqlite /nonexistent-dir/x.db: cannot open: unable to open database file"),
    (not_a_database, "migration failed: file is not a database"),
], ids=["no-such-dir", "not-a-database"])
def test_bad_database_file_stops_before_workers(tmp_path, url, message):
    """With several workers the supervisor finds a bad file before forking:
    the service stops at once with one clear line, and no worker starts."""
    s = Server(tmp_path, ["--workers", "2", "--db", url(tmp_path)], name="badfile")
    try:
        s.proc.wait(10)
    finally:
        s.kill()
    log = s.stderr()
    assert s.proc.returncode != 0, log
    assert message in log, log
    assert log_pids(log, message) == [s.proc.pid], log
    assert "worker 0 started" not in log and "listening on" not in log, log
    assert not tfb_sanitizer(log)


def tfb_sanitizer(text):
    from conftest import sanitizer_report
    return sanitizer_report(text)


def test_sharding_needs_postgres(tmp_path):
    s = Server(tmp_path, ["--db-shard", "postgres://u@127.0.0.1:1/x"], name="shard")
    try:
        s.proc.wait(10)
    finally:
        s.kill()
    assert s.proc.returncode != 0
    assert "need PostgreSQL" in s.stderr(), s.stderr()
