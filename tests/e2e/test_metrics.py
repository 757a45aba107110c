"""/metrics, /metrics.json, the admin port and the access log, end to end.

The exposition of a server that has seen every kind of traffic (requests of
several methods, statuses and durations, bad requests, limits, timeouts,
rejected connections) is checked twice: by `promtool check metrics` from
Debian's prometheus package (scripts/deps.sh installs it), and by the
strict parser in promtext.py, whose values are then compared with the
traffic sent. Servers run with --workers 1 so the counts are exact.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from client import Conn, HOST, fetch, free_port, request
from conftest import clean_env, myriad_bin
import promtext

PROM_CT = "text/plain; version=0.0.4; charset=utf-8"


def promtool_check(text):
    exe = shutil.which("promtool")
    assert exe, "promtool not found: scripts/deps.sh installs Debian's prometheus package"
    p = subprocess.run([exe, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=60)
    assert p.returncode == 0, \
        f"promtool check metrics failed:\n{p.stdout.decode()}{p.stderr.decode()}"


def scrape(port, path="/metrics"):
    r = fetch(port, path)
    assert r.status == 200, r
    assert r.header("Content-Type") == PROM_CT
    assert r.header("Cache-Control") == "no-store"
    text = r.body.decode("utf-8")
    promtool_check(text)
    return promtext.parse(text)


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_exposition_counts_every_kind_of_traffic(start_server):
    srv = start_server("--workers", "1", "--header-timeout", "300ms", "--max-body", "1k",
                       "--max-connections", "3")
    port, conns, sent = srv.port, 0, 0

    def one(raw, head=False):
        nonlocal conns, sent
        conns += 1
        sent += len(raw)
        with Conn(port) as c:
            c.send(raw)
            return c.read_final(head=head)[0]

    for _ in range(3):
        assert one(request("GET", "/plaintext")).status == 200
    assert one(request("HEAD", "/plaintext"), head=True).status == 200
    assert one(request("POST", "/test/echo", headers={"Content-Length": "5"},
                       body=b"hello")).status == 200
    assert one(request("GET", "/test/delay?ms=60")).status == 200
    assert one(request("GET", "/no/such/route")).status == 404
    assert one(request("DELETE", "/plaintext")).status == 405
    assert one(request("GET", "/", headers=[("Host", "b")])).status == 400      # two Hosts
    assert one(request("POST", "/test/echo", headers={"Content-Length": "5000"})).status == 413
    # a head that never completes: 408 after --header-timeout
    conns += 1
    with Conn(port) as c:
        c.send(b"GET /plaintext HTTP/1.1\r\n")
        sent += len(b"GET /plaintext HTTP/1.1\r\n")
        assert c.read_response(timeout=5).status == 408
    # over --max-connections: the fourth connection gets the canned 503
    time.sleep(0.3)   # the server has seen the closes above
    held = [Conn(port) for _ in range(3)]
    for h in held:
        h.send(request("GET", "/plaintext"))
        assert h.read_response().status == 200
    conns += 3
    sent += 3 * len(request("GET", "/plaintext"))
    with Conn(port) as extra:
        assert extra.read_response().status == 503
    for h in held:
        h.close()
    rejected = 1
    time.sleep(0.3)
    while fetch(port, "/healthz").status == 503:   # the closes not seen yet: try again
        rejected += 1
        time.sleep(0.1)
    conns += 1
    time.sleep(1.2)   # one sampler tick: RSS, heap and loop lag are fresh

    fams = scrape(port)
    req = fams["myriad_http_requests_total"]
    assert req.type == "counter"
    assert req.value(method="GET", status="2xx") == 3 + 1 + 3 + 1   # + delay, held, healthz
    assert req.value(method="HEAD", status="2xx") == 1
    assert req.value(method="POST", status="2xx") == 1
    assert req.value(method="DELETE", status="4xx") == 1
    assert req.total(status="4xx") == 5          # 404 405 400 413 408
    assert req.total(status="5xx") == 0           # the canned 503 is a rejected connection

    errs = fams["myriad_http_errors_total"]
    assert errs.value(reason="route") == 2
    assert errs.value(reason="parse") == 1
    assert errs.value(reason="limit") == 1
    assert errs.value(reason="timeout") == 1
    assert fams["myriad_http_timeouts_total"].value(phase="head") == 1
    assert fams["myriad_http_rejected_connections_total"].value(reason="limit") == rejected

    dur = fams["myriad_http_request_duration_seconds"]
    answered = req.total()
    assert dur.value("_count") == answered
    assert dur.value("_bucket", le="0.05") == answered - 2   # not the delay, not the 408
    assert dur.value("_bucket", le="0.1") == answered - 1    # the 60 ms delay
    assert dur.value("_bucket", le="0.5") == answered        # the 408 after 300 ms
    assert 0.36 <= dur.value("_sum") < 2.0

    # ours, the scrape's, and perhaps the fixture's readiness probe
    assert conns + 1 <= fams["myriad_http_connections_total"].value() <= conns + 2
    assert fams["myriad_http_received_bytes_total"].value() >= sent
    assert fams["myriad_http_sent_bytes_total"].value() >= 100 * answered
    assert fams["myriad_http_open_connections"].value(worker=0) == 1   # this scrape
    assert fams["myriad_worker_resident_memory_bytes"].value(worker=0) > 1 << 20
    assert fams["myriad_worker_heap_bytes"].type == "gauge"
    assert fams["myriad_loop_lag_seconds"].value("_count", worker=0) > 10
    assert fams["myriad_worker_starts_total"].value(worker=0) == 1
    assert fams["myriad_offload_queued_jobs"].value(worker=0) == 0
    assert fams["myriad_worker_restarts_total"].total() == 0
    build = fams["myriad_build_info"].samples
    assert len(build) == 1 and build[0][1]["version"] == "0.1.0" and build[0][2] == 1
    start = fams["process_start_time_seconds"].value()
    assert time.time() - 120 < start <= time.time()
    for f in fams.values():
        assert f.help, f"{f.name} has no HELP"


def test_json_view_matches_exposition(start_server):
    srv = start_server("--workers", "1")
    for _ in range(5):
        fetch(srv.port, "/json")
    r = fetch(srv.port, "/metrics.json")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    view = json.loads(r.body)
    assert view["version"] == "0.1.0" and view["self"] == 0
    workers = view["workers"]
    assert [w["live"] for w in workers] == [True, False] and workers[-1]["supervisor"]
    assert workers[0]["pid"] == srv.proc.pid
    fams = {f["name"]: f for f in view["families"]}
    req = fams["myriad_http_requests_total"]
    assert req["labels"] == ["method", "status"]
    get2xx = [s for s in req["series"] if s["labels"] == ["GET", "2xx"]][0]
    assert get2xx["values"] == [5, 0]
    dur = fams["myriad_http_request_duration_seconds"]
    assert dur["type"] == "histogram" and len(dur["bounds"]) == 16
    cells = dur["series"][0]["values"][0]
    assert len(cells) == 18 and sum(cells[:17]) == 5
    # the exposition, scraped next, has the JSON request on top
    prom = scrape(srv.port)
    assert prom["myriad_http_requests_total"].value(method="GET", status="2xx") == 6
    assert set(fams) <= set(prom)


def test_metrics_path_methods_and_query(start_server):
    srv = start_server("--workers", "1", "--metrics-path", "/internal/prom")
    assert fetch(srv.port, "/metrics").status == 404
    assert fetch(srv.port, "/internal/prom?x=1").status == 200
    scrape(srv.port, "/internal/prom")
    assert fetch(srv.port, "/internal/prom.json").status == 200
    head = fetch(srv.port, "/internal/prom", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.header("Content-Length")) > 1000
    post = fetch(srv.port, "/internal/prom", method="POST")
    assert post.status == 405 and post.header("Allow") == "GET, HEAD"
    page = fetch(srv.port, "/dashboard")
    assert page.status == 200 and b"'/internal/prom.json'" in page.body


def test_empty_metrics_path_turns_the_routes_off(start_server):
    srv = start_server("--workers", "1", "--metrics-path", "")
    for path in ("/metrics", "/metrics.json", "/dashboard"):
        assert fetch(srv.port, path).status == 404
    assert fetch(srv.port, "/plaintext").status == 200


def test_admin_port(start_server):
    admin = free_port()
    srv = start_server("--workers", "1", "--admin-port", str(admin), "--max-connections", "2")
    port = srv.port
    for path in ("/metrics", "/metrics.json", "/dashboard"):
        assert fetch(port, path).status == 404, path
    assert fetch(admin, "/plaintext").status == 404      # the admin port serves only these
    page = fetch(admin, "/dashboard")
    assert page.status == 200
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.header("Content-Security-Policy")
    # the service is full: the admin port still answers
    held = [Conn(port) for _ in range(2)]
    for h in held:
        h.send(request("GET", "/plaintext"))
        assert h.read_response().status == 200
    with Conn(port) as extra:
        assert extra.read_response().status == 503
    fams = scrape(admin)
    assert fams["myriad_http_rejected_connections_total"].value(reason="limit") == 1
    assert fams["myriad_http_open_connections"].value(worker=0) == 3
    for h in held:
        h.close()
    # bound to 127.0.0.1 only: another local address is refused
    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect(("127.0.0.2", admin))
            pytest.fail("the admin port answers on 127.0.0.2")
        except OSError:
            pass


def run_bad(*flags):
    """Starts the server with bad flags; returns (exit status, stderr)."""
    argv = [myriad_bin(), "serve", "--host", HOST, "--port", str(free_port()),
            "--workers", "1"] + list(flags)
    p = subprocess.run(argv, env=clean_env(), capture_output=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr.decode("utf-8", "replace")


@pytest.mark.parametrize("flags,needle", [
    (("--access-log-format", "xml"), "--access-log-format 'xml'"),
    (("--metrics-path", "no-slash"), "--metrics-path 'no-slash'"),
    (("--metrics-path", "/a b"), "--metrics-path '/a b'"),
    (("--metrics-path", "/dashboard"), "--metrics-path '/dashboard'"),
    (("--metrics-path", "", "--admin-port", "1"), "--admin-port needs --metrics-path"),
    (("--access-log", "/nonexistent-dir/access.log"), "/nonexistent-dir/access.log"),
    (("--access-log-flush", "0"), "--access-log-flush"),
    (("--admin-port", "70000"), "--admin-port"),
])
def test_bad_settings_fail_clearly(flags, needle):
    code, err = run_bad(*flags)
    assert code != 0, err
    assert needle in err, err
    assert "Sanitizer" not in err and "Segmentation" not in err, err


CLF = re.compile(r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
                 r'"(?P<req>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
                 r'"(?P<ref>[^"]*)" "(?P<ua>[^"]*)"$')


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except FileNotFoundError:
        return ""


def test_access_log_combined_buffered_and_reopened(start_server, tmp_path):
    log = str(tmp_path / "access.log")
    srv = start_server("--workers", "1", "--access-log", log, "--access-log-flush", "400ms")
    r = fetch(srv.port, "/plaintext", headers=[("User-Agent", 'te"st'), ("Referer", "http://r/")])
    assert r.status == 200
    # buffered: nothing written per request, the line comes with the timer
    assert read(log) == ""
    text = wait_for(lambda: read(log), 5, "the access log line")
    m = CLF.match(text.splitlines()[0])
    assert m, text
    assert m["req"] == "GET /plaintext HTTP/1.1" and m["status"] == "200"
    assert m["bytes"] == "13" and m["ref"] == "http://r/" and m["ua"] == "te\\x22st"
    # rotation: rename, SIGUSR1, and the next lines go to a new file
    os.rename(log, log + ".1")
    srv.proc.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    assert fetch(srv.port, "/nope").status == 404
    wait_for(lambda: read(log), 5, "a line in the reopened access log")
    assert len(read(log + ".1").splitlines()) == 1
    assert ' "GET /nope HTTP/1.1" 404 14 ' in read(log)
    assert srv.alive()
    fams = scrape(srv.port)
    assert fams["myriad_access_log_lines_total"].value() >= 2
    assert fams["myriad_access_log_dropped_lines_total"].value() == 0


def test_access_log_json_to_stdout_flushed_at_shutdown(start_server):
    srv = start_server("--workers", "1", "--access-log", "-", "--access-log-format", "json",
                       "--access-log-flush", "60s")
    assert fetch(srv.port, "/test/query?name=%C3%A9").status == 200
    with Conn(srv.port) as c:   # a request whose head never completes
        c.send(b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        assert c.read_response().status == 400
    time.sleep(0.3)
    with open(srv.stdout_path, "rb") as f:
        assert f.read() == b""   # a minute of buffering: not yet
    assert srv.stop() == []
    with open(srv.stdout_path, "rb") as f:
        lines = [json.loads(x) for x in f.read().decode().splitlines()]
    assert len(lines) == 2, lines
    ok, bad = lines
    assert ok["method"] == "GET" and ok["target"] == "/test/query?name=%C3%A9"
    assert ok["status"] == 200 and ok["bytes"] == 2 and ok["remote"] == "127.0.0.1"
    assert ok["version"] == "HTTP/1.1" and ok["worker"] == 0 and ok["referer"] is None
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ok["time"])
    assert bad["status"] == 400 and bad["method"] is None and bad["target"] is None
