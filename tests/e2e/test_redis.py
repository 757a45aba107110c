"""The worker's Redis client seen from outside: --redis / $REDIS_URL
validation at start-up, the myriad_redis_* figures in /metrics while Redis
is up, killed and restarted on the same port, and a clean stop (exit 0, no
sanitizer report: the hiredis contexts are freed).
"""

import time

import promtext
from client import Conn, request
from redis_server import RedisServer

WAIT = 15.0


def scrape(port):
    with Conn(port, timeout=15) as c:
        c.send(request("GET", "/metrics"))
        r, _ = c.read_final()
    assert r.status == 200, r
    return promtext.parse(r.body.decode("utf-8"))


def wait_metrics(port, pred, what):
    deadline = time.monotonic() + WAIT
    fams = None
    while time.monotonic() < deadline:
        fams = scrape(port)
        try:
            if pred(fams):
                return fams
        except (KeyError, AssertionError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {WAIT}s: {what}")


def wait_exit(srv, timeout=WAIT):
    try:
        srv.proc.wait(timeout)
    except Exception:
        srv.kill()
        raise
    srv.kill()   # closes its files; already exited
    return srv.proc.returncode


def test_bad_url_is_a_startup_error(start_server):
    srv = start_server("--workers", "1", "--redis", "redis://:@127.0.0.1", wait=False)
    assert wait_exit(srv) != 0
    err = srv.stderr()
    assert "--redis: redis URL: empty password" in err, err


def test_bad_env_url_is_a_startup_error(start_server):
    srv = start_server("--workers", "2", env={"REDIS_URL": "http://nope"}, wait=False)
    assert wait_exit(srv) != 0
    assert "REDIS_URL: redis URL" in srv.stderr(), srv.stderr()


def test_up_down_up(start_server):
    with RedisServer() as rs:
        srv = start_server("--workers", "2", "--redis", rs.url, "--redis-timeout", "200ms")
        wait_metrics(srv.port,
                     lambda f: len(f["myriad_redis_up"].series()) == 2 and
                     f["myriad_redis_up"].total() == 2, "both workers connected")
        # both workers hold a command connection (no subscriber until needed)
        clients = [ln for ln in rs.cli("CLIENT", "LIST").splitlines() if "cmd=client" not in ln]
        assert len(clients) >= 2, clients

        rs.kill()
        fams = wait_metrics(srv.port,
                            lambda f: f["myriad_redis_up"].total() == 0 and
                            f["myriad_redis_breaker_open"].total() == 2,
                            "down and breakers open in both workers")
        assert fams["myriad_redis_up"].type == "gauge"
        assert srv.alive()

        rs.start()   # the same port
        fams = wait_metrics(srv.port,
                            lambda f: f["myriad_redis_up"].total() == 2 and
                            f["myriad_redis_breaker_open"].total() == 0,
                            "reconnected and breakers closed")
        assert fams["myriad_redis_reconnects_total"].total() >= 2
        err = srv.stderr()
        assert "lost" in err and "available again" in err, err
        # one line per state change, not one per retry
        assert err.count("circuit breaker closed") <= 2, err
    problems = srv.stop()   # Redis already gone: still a clean exit
    assert not problems, problems
