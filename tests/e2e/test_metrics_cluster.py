"""/metrics across the workers of a cluster: whichever worker answers, the
figures cover the whole service; per-worker series for each live worker;
counts survive a worker's crash; restarts are counted by cause.

Needs the supervisor to make the registry before fork and attach each
worker to its slot (src/proc/cluster.c: metrics_new, metrics_attach,
metrics_detach, metrics_restart).
"""

import json
import os
import signal
import time

from client import fetch
from test_metrics import scrape


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(x) for x in f.read().split())
    except FileNotFoundError:
        return []


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def workers_seen(fams):
    return {lb["worker"] for lb, _ in fams["myriad_worker_starts_total"].series()}


def test_figures_cover_every_worker(start_server):
    srv = start_server("--workers", "2")
    wait_for(lambda: len(children(srv.proc.pid)) == 2, 10, "2 workers")
    n = 200
    for _ in range(n):   # new connections: the kernel spreads them over both workers
        assert fetch(srv.port, "/plaintext").status == 200
    selves = set()
    for i in range(40):   # every scrape, from either worker, sees all of it
        fams = scrape(srv.port)
        got = fams["myriad_http_requests_total"].value(method="GET", status="2xx")
        assert got == n, (got, n)
        selves.add(json.loads(fetch(srv.port, "/metrics.json").body)["self"])
        n += 2   # the scrape and the JSON request
        if len(selves) == 2 and i >= 5:
            break
    assert len(selves) == 2, f"only worker {selves} answered 40 new connections"
    fams = scrape(srv.port)
    assert workers_seen(fams) == {"0", "1"}
    for w in ("0", "1"):
        assert fams["myriad_worker_resident_memory_bytes"].value(worker=w) > 1 << 20
    before = fams["myriad_http_requests_total"].total()

    # a worker crashes: it is replaced, the totals stay, the restart is counted
    victim = children(srv.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(children(srv.proc.pid)) == 2 and victim not in children(srv.proc.pid),
             10, "the replacement worker")

    # The replacement is a child from fork on, but its per-worker series
    # appear only once it has attached to the victim's slot (run_child in
    # src/proc/cluster.c, after become_worker); until then the slot is not
    # live and a scrape shows the survivor's series alone. On a loaded
    # machine that window is long enough to be scraped: wait for the attach.
    def replaced():
        f = scrape(srv.port)
        crashes = f["myriad_worker_restarts_total"].value(cause="crash")
        return f if crashes == 1 and workers_seen(f) == {"0", "1"} else None

    fams = wait_for(replaced, 10, "the crash to be counted and the replacement to attach")
    assert fams["myriad_http_requests_total"].total() >= before
    assert fams["myriad_worker_starts_total"].total() == 3

    # a reload replaces both: two restarts by reload
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: scrape(srv.port)["myriad_worker_restarts_total"].value(cause="reload") == 2,
             15, "two restarts by reload")
    fams = scrape(srv.port)
    assert fams["myriad_http_requests_total"].total() >= before
