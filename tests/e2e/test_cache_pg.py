"""The cache on PostgreSQL (pg.py), where statements are counted the way
the TechEmpower toolset counts them (pg_stat_statements):

/cached-queries and /world/:id valid and equal to the database, repeated
reads costing no query, an unknown id queried once then answered from the
negative cache; 1,000 concurrent requests for one cold key (two workers,
with and without Redis) costing exactly one query; /updates dropping the
cached rows it changes.
"""

import json

import pytest

import pg
import tfb_verify as tfb
from client import Conn, fetch, request
from redis_server import RedisServer
from test_cache import Burst, kv_put, mval, pipelined, wait_until, world_of

WORLD_SELECT = r"FROM World WHERE id"


@pytest.fixture(scope="module")
def cl():
    ws = pg.Workspace()
    try:
        ws.p = ws.primary()
        yield ws
    finally:
        ws.close()


def serve(start_server, cl, *flags, redis=None):
    env = {"REDIS_URL": redis.url if redis else ""}
    s = start_server("--db", cl.p.url, "--db-pool", "2", "--db-timeout", "30s", *flags, env=env)
    pg.wait_until(lambda: tfb.get(s.port, "/db").status == 200, 15, what="/db answering")
    return s


def db_world(cl):
    rows = cl.p.psql("SELECT id, randomnumber FROM world")
    return {int(a): int(b) for a, b in (line.split("|") for line in rows.splitlines())}


def test_cached_queries_and_world(start_server, cl):
    s = serve(start_server, cl, "--workers", "2")
    cases = tfb.check_query_cases(s.port, "/cached-queries?count=")
    world = db_world(cl)
    for rows in cases.values():
        for row in rows:
            assert world[row["id"]] == row["randomNumber"], row
    # cached: reading the same rows again costs no statement
    cl.p.reset_statements()
    for row in cases["501"][:50]:
        assert world_of(s.port, row["id"]) == row
    assert cl.p.statements(WORLD_SELECT) == 0
    # an unknown id: one query, then the negative cache
    for _ in range(5):
        r = fetch(s.port, "/world/123456")
        assert r.status == 404, r
    assert cl.p.statements(WORLD_SELECT) == 1
    assert fetch(s.port, "/world/0").status == 400
    assert fetch(s.port, "/world/x").status == 400


@pytest.mark.parametrize("with_redis", [False, True], ids=["l1", "l1+redis"])
def test_stampede_one_query(start_server, cl, with_redis):
    rs = RedisServer() if with_redis else None
    try:
        s = serve(start_server, cl, "--workers", "2", redis=rs)
        if rs:
            wait_until(lambda: mval(s.port, "myriad_redis_up") >= 1, 10, what="redis up")
        key = "pg-hot-%s" % with_redis
        kv_put(s.port, key, "value")
        crowd = Burst(s.port, 999)
        cl.p.reset_statements()
        first = Conn(s.port, timeout=30)   # starts the fill: pg_sleep(0.3)
        first.send(request("GET", "/test/cache/kv/%s?slow=1" % key))
        wait_until(lambda: mval(s.port, "myriad_cache_lookups_total", tier="l1",
                                outcome="miss") >= 1, 10, 0.002, "the first miss")
        results = crowd.fire("/test/cache/kv/%s?slow=1" % key)
        r, _ = first.read_final()
        first.close()
        results.append((r.status, r.body))
        assert [x for x in results if x != (200, b"value")] == []
        assert cl.p.statements(r"pg_sleep") == 1
        assert mval(s.port, "myriad_cache_waits_total") >= 1
        if rs:
            assert rs.cli("GET", "c:kv:" + key) == "value"
    finally:
        if rs:
            rs.close()


def test_updates_drop_cached_rows(start_server, cl):
    s = serve(start_server, cl, "--workers", "2")
    pipelined(s.port, ["/world/%d" % i for i in range(1, 10001)])
    r = fetch(s.port, "/updates?queries=20")
    assert r.status == 200, r
    rows = json.loads(r.body)
    world = db_world(cl)
    for row in rows:
        assert world[row["id"]] == row["randomNumber"]
        assert world_of(s.port, row["id"]) == row
