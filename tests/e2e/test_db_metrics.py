"""The data layer's figures in /metrics: queries per request (histogram),
statements by backend and result, errors by name, and the pool gauges the
dashboard draws (myriad_db_pool_size, myriad_db_pool_in_use), on the
default SQLite database in a temporary working directory.
"""

import promtext
import tfb_verify as tfb
from client import Conn, request


def scrape(port):
    with Conn(port, timeout=15) as c:
        c.send(request("GET", "/metrics"))
        r, _ = c.read_final()
    assert r.status == 200, r
    return promtext.parse(r.body.decode("utf-8"))


def started(start_server, *flags):
    s = start_server("--workers", "1", "--db-pool", "3", *flags)
    r = tfb.get(s.port, "/db", timeout=30)   # ready once the database is open
    assert r.status == 200, (r, s.stderr())
    return s


def test_queries_per_request_and_pool(start_server):
    srv = started(start_server)
    before = scrape(srv.port)
    h = before["myriad_db_queries_per_request"]
    assert h.type == "histogram"
    count0, sum0 = h.value("_count"), h.value("_sum")
    assert count0 >= 1 and sum0 >= 1, "the readiness /db request issued one statement"
    q0 = before["myriad_db_queries_total"].value(backend="sqlite", result="ok")

    for _ in range(5):
        r = tfb.get(srv.port, "/queries?queries=3")
        assert r.status == 200, r

    after = scrape(srv.port)
    h = after["myriad_db_queries_per_request"]
    assert h.value("_count") - count0 == 5
    assert h.value("_sum") - sum0 == 15
    # each of the five requests issued exactly 3: all land at le="3" and above
    assert h.value("_bucket", le="3") - before["myriad_db_queries_per_request"] \
        .value("_bucket", le="3") == 5
    assert h.value("_bucket", le="2") == \
        before["myriad_db_queries_per_request"].value("_bucket", le="2")
    assert after["myriad_db_queries_total"].value(backend="sqlite", result="ok") - q0 == 15
    assert after["myriad_db_queries_total"].value(backend="postgres", result="error") == 0

    size = after["myriad_db_pool_size"]
    assert size.type == "gauge" and size.value() == 3, "--db-pool 3 threads"
    in_use = after["myriad_db_pool_in_use"]
    assert in_use.type == "gauge" and 0 <= in_use.value() <= 3


def test_errors_by_name(start_server):
    """A strict query budget fails the op: one budget error, its statements
    counted as errors."""
    srv = started(start_server, "--db-query-budget", "2", "--db-budget-strict")
    fams = scrape(srv.port)
    e0 = fams["myriad_db_errors_total"].value(error="budget")
    q0 = fams["myriad_db_queries_total"].value(backend="sqlite", result="error")
    r = tfb.get(srv.port, "/queries?queries=3")
    assert r.status == 500, r
    fams = scrape(srv.port)
    assert fams["myriad_db_errors_total"].value(error="budget") - e0 == 1
    assert fams["myriad_db_errors_total"].value(error="timeout") == 0
    assert fams["myriad_db_queries_total"].value(backend="sqlite", result="error") - q0 == 3
