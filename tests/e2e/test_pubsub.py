"""Pub/sub and the chat endpoint (src/rt, app/chat.c), end to end.

Chat clients are raw WebSocket connections (the frames of test_ws.py) to
/ws/chat?room=NAME; the welcome message tells each one its id, whose middle
part is the worker slot it landed on, so a test can open connections until
its subscribers sit on every worker. Covered: broadcast within one worker
and across two (exactly once, in order per sender); JSON escaping; /rooms
counts summed over workers; room-name and policy validation; each slow-
reader policy (1008, drop oldest, coalesce) with its /metrics counter;
subscriptions dropped when connections close (the server must stop clean
under ASan); graceful stop and reload closing chat sockets with 1001 after
what was queued; the npm ws client; and, with a redis-server started here,
two instances of two workers each: every message reaches every subscriber
on all four workers exactly once and in order per publisher, and when Redis
is killed delivery within each instance goes on while /metrics shows the
outage. Every wait is bounded.
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from client import Conn, ReadTimeout, request
from test_ws import BINARY, CLOSE, TEXT, WS, frame, node_client_dir, wait_stopped
from redis_server import RedisServer

ID_RE = re.compile(r"^([0-9a-f]{16})-(\d+)-(\d+)$")


# ---- a chat client ------------------------------------------------------------------

class Chat(WS):
    """One chat connection: joined on construction (the welcome is read)."""

    def __init__(self, port, room="lobby", policy=None, **kw):
        super().__init__(port, **kw)
        target = f"/ws/chat?room={room}" + (f"&policy={policy}" if policy else "")
        self.handshake(target=target)
        hello = self.next_json()
        assert hello["type"] == "welcome" and hello["room"] == room, hello
        self.id = hello["id"]
        m = ID_RE.match(self.id)
        assert m, self.id
        self.instance, self.slot = m.group(1), int(m.group(2))
        self.room = room

    def next_json(self, timeout=5.0):
        op, data, _ = self.read_message(timeout)
        assert op == TEXT
        return json.loads(data)

    def say(self, text):
        self.send(frame(TEXT, text))

    def drain(self, wait=0.3):
        """Reads and drops messages until none arrives within `wait`."""
        while True:
            try:
                self.read_frame(timeout=wait)
            except ReadTimeout:
                return

    def quiet(self, wait=0.3):
        """True when nothing arrives within `wait` seconds."""
        try:
            f = self.read_frame(timeout=wait)
        except ReadTimeout:
            return True
        raise AssertionError(f"unexpected frame: {f}")


@pytest.fixture(autouse=True)
def _close_clients(start_server):
    """Every client is closed before the servers stop (an open WebSocket
    would hold up the graceful stop)."""
    yield
    for c in WS.opened:
        c.close()
    WS.opened.clear()


def http(port, method, target, body=b""):
    with Conn(port) as c:
        hdrs = [("Content-Length", str(len(body)))] if method == "POST" else []
        c.send(request(method, target, headers=hdrs, body=body))
        return c.read_response()


def rooms(port):
    r = http(port, "GET", "/rooms")
    assert r.status == 200 and r.header("Content-Type") == "application/json", r
    return {x["room"]: x["subscribers"] for x in json.loads(r.body)}


def metric(port, name, labels=""):
    """The value of one series of /metrics (summed over workers)."""
    body = http(port, "GET", "/metrics").body.decode()
    want = name + ("{" + labels + "}" if labels else "")
    for line in body.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{want} not in /metrics")


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def spread(port, room, workers, per_worker=1, limit=200, **kw):
    """Connects until `per_worker` clients sit on each of `workers` worker
    slots (extra ones are closed). Returns {slot: [Chat, ...]}."""
    by_slot = {}
    for _ in range(limit):
        if len(by_slot) == workers and all(len(v) >= per_worker for v in by_slot.values()):
            return by_slot
        c = Chat(port, room, **kw)
        if len(by_slot.get(c.slot, [])) >= per_worker:
            c.close()
        else:
            by_slot.setdefault(c.slot, []).append(c)
    raise AssertionError(f"clients did not spread over {workers} workers: "
                         f"{ {k: len(v) for k, v in by_slot.items()} }")


def collect(clients, count, timeout=20.0, skip=None):
    """Reads `count` chat messages on each client. skip(msg) drops warm-up
    messages without counting them."""
    out = {}
    deadline = time.monotonic() + timeout
    for c in clients:
        got = []
        while len(got) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"client {c.id}: {len(got)} of {count} messages"
            m = c.next_json(timeout=left)
            assert m["type"] == "message", m
            if skip and skip(m):
                continue
            got.append(m)
        out[c] = got
    return out


def check_exactly_once_in_order(received, senders, n):
    """Each client got exactly n numbered messages from each sender, in the
    order each sender sent them, and nothing else."""
    for c, msgs in received.items():
        by_sender = {}
        for m in msgs:
            by_sender.setdefault(m["from"], []).append(m["text"])
        assert set(by_sender) == set(senders), (c.id, set(by_sender))
        for s, texts in by_sender.items():
            want = [f"{s[-6:]}#{i}" for i in range(n)]
            assert texts == want, (c.id, s, texts[:5], len(texts))


# ---- one worker ----------------------------------------------------------------------

def test_broadcast_in_one_worker(start_server):
    s = start_server("--workers", "1")
    a, b, c = Chat(s.port), Chat(s.port), Chat(s.port)
    other = Chat(s.port, room="elsewhere")
    assert len({a.id, b.id, c.id, other.id}) == 4
    text = 'quotes " backslash \\ newline \n tab \t control \x01 unicode κόσμε ✓ </script>'
    t0 = time.time()
    a.say(text)
    for x in (a, b, c):   # the sender too
        m = x.next_json()
        assert m == {"type": "message", "room": "lobby", "from": a.id, "text": text,
                     "ts": m["ts"]}, m
        assert isinstance(m["ts"], int) and abs(m["ts"] / 1e6 - t0) < 60, m
    assert other.quiet()
    # the raw JSON escapes what it must
    b.say("x\"y")
    for x in (a, b, c):
        op, raw, _ = x.read_message()
        assert b'"text":"x\\"y"' in raw, raw
    # a message published by an HTTP handler, not a client
    r = http(s.port, "POST", "/rooms/lobby/messages", "from a handler".encode())
    assert r.status == 200 and json.loads(r.body) == {"published": True}, r
    for x in (b, c):
        assert x.next_json()["text"] == "from a handler"
    assert metric(s.port, "myriad_pubsub_delivered_total", 'source="local"') >= 9


def test_room_names_and_policies_are_checked(start_server):
    s = start_server("--workers", "1")
    for target in ["/ws/chat", "/ws/chat?room=", "/ws/chat?room=" + "a" * 65,
                   "/ws/chat?room=a%20b", "/ws/chat?room=a/b", "/ws/chat?room=%C3%A9",
                   "/ws/chat?room=a%00", "/ws/chat?room=a:b", "/ws/chat?room=ok&policy=never"]:
        w = WS(s.port)
        w.handshake(target=target, expect=400)
        w.close()
    Chat(s.port, room="A-z_0.9" + "x" * 57)   # 64 bytes, every allowed kind
    Chat(s.port, room="p", policy="drop_oldest")
    Chat(s.port, room="p", policy="coalesce")
    Chat(s.port, room="p", policy="disconnect")
    assert http(s.port, "POST", "/rooms/bad%20room/messages", b"x").status == 400
    assert http(s.port, "POST", "/rooms/" + "a" * 65 + "/messages", b"x").status == 400


def expect_close_answered(c, code):
    """The server closes with code; the client answers with a close frame,
    as RFC 6455 5.5.1 asks, and the server then closes TCP at once. (A
    client that does not answer is closed only after --ws-close-timeout,
    5 s by default: as long as expect_close waits, hence the answer.)"""
    f = c.read_frame(5.0)
    assert f.opcode == CLOSE and f.close_code() == code, f"expected close {code}, got {f}"
    c.send(frame(CLOSE, code.to_bytes(2, "big")))
    c.expect_eof(timeout=5.0, what=f"the close handshake ({code})")


def test_binary_and_oversized_messages_close(start_server):
    s = start_server("--workers", "1")
    a = Chat(s.port)
    a.send(frame(BINARY, b"\x00\x01"))
    expect_close_answered(a, 1003)
    b = Chat(s.port)
    b.send(frame(TEXT, "x" * (64 * 1024 + 1)))
    expect_close_answered(b, 1009)
    c = Chat(s.port)   # the room still works
    c.say("fine")
    assert c.next_json()["text"] == "fine"


# ---- two workers --------------------------------------------------------------------------

def test_broadcast_across_two_workers(start_server):
    s = start_server("--workers", "2")
    by_slot = spread(s.port, "lobby", workers=2, per_worker=2)
    clients = [c for cs in by_slot.values() for c in cs]
    senders = [cs[0] for cs in by_slot.values()]   # one on each worker
    n = 100
    for i in range(n):
        for snd in senders:
            snd.say(f"{snd.id[-6:]}#{i}")
    got = collect(clients, n * len(senders))
    check_exactly_once_in_order(got, [x.id for x in senders], n)
    for c in clients:
        assert c.quiet(0.2)   # and nothing more
    assert metric(s.port, "myriad_pubsub_delivered_total", 'source="bus"') >= n * 2 * 2
    assert metric(s.port, "myriad_pubsub_bus_lost_total") == 0


def test_rooms_counts_sum_over_workers(start_server):
    s = start_server("--workers", "2")
    assert rooms(s.port) == {}
    by_slot = spread(s.port, "big", workers=2, per_worker=3)
    small = [Chat(s.port, room="small") for _ in range(2)]
    assert rooms(s.port) == {"big": 6, "small": 2}
    assert metric(s.port, "myriad_pubsub_subscriptions") == 8
    # a connection that just vanishes (no close frame), and one closed politely
    by_slot[0][0].abort()
    small[0].send(frame(CLOSE, b"\x03\xe8"))
    small[0].expect_close(1000)
    wait_for(lambda: rooms(s.port) == {"big": 5, "small": 1}, what="counts after closes")
    for cs in by_slot.values():
        for c in cs:
            c.close()
    small[1].close()
    wait_for(lambda: rooms(s.port) == {}, what="no rooms")
    wait_for(lambda: metric(s.port, "myriad_pubsub_subscriptions") == 0, what="gauge at 0")
    assert metric(s.port, "myriad_pubsub_topics") == 0


def test_subscriptions_are_dropped_on_close(start_server):
    """Hundreds of connections in many rooms come and go, some cut off
    without a close frame: nothing stays subscribed, the counts come back
    to zero, and the server stops clean (under ASan: no leak)."""
    s = start_server("--workers", "2")
    for round_ in range(3):
        cs = [Chat(s.port, room=f"r{i % 7}") for i in range(60)]
        cs[0].say("hello")
        for i, c in enumerate(cs):
            if i % 3 == 0:
                c.abort()
            elif i % 3 == 1:
                c.send(frame(CLOSE, b"\x03\xe8"))
                c.close()
            else:
                c.close()
        wait_for(lambda: rooms(s.port) == {}, what=f"round {round_}: no rooms")
    wait_for(lambda: metric(s.port, "myriad_pubsub_subscriptions") == 0, what="gauge at 0")


def worker_pids(server):
    with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as f:
        return {int(x) for x in f.read().split()}


def test_worker_killed_its_subscribers_leave_the_counts(start_server):
    """kill -9 of a worker: its clients are gone from /rooms at once (its
    process is dead), its successor in the same slot reads the bus again
    (same wake socket name) and counts from zero."""
    s = start_server("--workers", "2")
    by_slot = spread(s.port, "k", workers=2, per_worker=2)
    assert rooms(s.port) == {"k": 4}
    before = worker_pids(s)
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    dead = [c for cs in by_slot.values() for c in cs if not c.is_open(wait=2.0)]
    assert len(dead) == 2 and dead[0].slot == dead[1].slot, [c.slot for c in dead]
    wait_for(lambda: rooms(s.port) == {"k": 2}, what="the dead worker's clients to leave")
    wait_for(lambda: len(worker_pids(s) - before) == 1, what="a new worker")
    def on_respawned():
        c = Chat(s.port, room="k")
        if c.slot == dead[0].slot:
            return c
        c.close()
        return None
    fresh = wait_for(on_respawned, timeout=20, what="a client on the new worker")
    assert rooms(s.port) == {"k": 3}
    fresh.say("from the new worker")
    survivors = [c for cs in by_slot.values() for c in cs if c not in dead]
    for c in survivors + [fresh]:
        m = c.next_json()
        assert m["text"] == "from the new worker" and m["from"] == fresh.id, m
    survivors[0].say("to the new worker")
    for c in survivors + [fresh]:
        assert c.next_json()["text"] == "to the new worker"


# ---- slow readers: the subscription's policy ---------------------------------------------

def flood(port, room, count, size):
    """Publishes `count` numbered messages of about `size` bytes through
    POST /rooms/ROOM/messages on one keep-alive connection."""
    with Conn(port, timeout=10) as c:
        for i in range(count):
            body = (f"{i:06d}:" + "p" * size).encode()
            c.send(request("POST", f"/rooms/{room}/messages",
                           headers=[("Content-Length", str(len(body)))], body=body))
            assert c.read_response().status == 200


def numbers_read(client, timeout=10.0):
    """Reads until the connection is quiet; returns the numbers of the
    messages received and the close frame if one came."""
    nums, close = [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            f = client.read_frame(timeout=1.0)
        except ReadTimeout:
            break
        if f.opcode == CLOSE:
            close = f
            break
        m = json.loads(f.payload)
        if m["type"] == "message":
            nums.append(int(m["text"][:6]))
    return nums, close


@pytest.mark.parametrize("policy", ["disconnect", "drop_oldest", "coalesce"])
def test_slow_reader_policy(start_server, policy):
    """A subscriber that does not read while the room talks: its queue
    passes --ws-max-queue and its own policy decides; the server's memory
    for it stays bounded and everyone else is served."""
    s = start_server("--workers", "1", "--ws-max-queue", "64k")
    slow = Chat(s.port, room="flood", policy=policy, rcvbuf=4096)
    count, size = 800, 16 * 1024   # ~13 MB: well past what the socket buffers hold
    flood(s.port, "flood", count, size)
    fast = Chat(s.port, room="flood")   # the room still works for others
    r = http(s.port, "POST", "/rooms/flood/messages", b"999999:last")
    assert r.status == 200
    assert fast.next_json()["text"] == "999999:last"
    label = f'policy="{policy}"'
    assert metric(s.port, "myriad_pubsub_dropped_total", label) > 0
    nums, close = numbers_read(slow)
    assert nums == sorted(nums) and len(set(nums)) == len(nums), nums[:50]
    assert len(nums) < count                      # some were dropped
    if policy == "disconnect":
        assert close is not None and close.close_code() == 1008, close
        assert 999999 not in nums                 # closed before the last one
        slow.expect_eof(what="the end after 1008")
    else:
        assert close is None, close                # still connected
        assert nums[-1] == 999999, nums[-10:]      # the newest always arrives
        slow.say("still here")
        while True:
            m = slow.next_json()
            if m["text"] == "still here":
                break


# ---- stopping and reloading --------------------------------------------------------------

def test_graceful_stop_sends_1001_after_the_queued_messages(start_server):
    """Clients that do not read have messages queued when the stop comes:
    they get all of them, then 1001."""
    s = start_server("--workers", "2", "--ws-close-timeout", "3s")
    by_slot = spread(s.port, "bye", workers=2, per_worker=2)
    idle = [cs[0] for cs in by_slot.values()]      # do not read until the stop
    readers = [cs[1] for cs in by_slot.values()]   # prove the fan-out happened
    for i in range(20):
        idle[0].say(f"m{i}")
    collect(readers, 20)   # each worker has queued the 20 on its idle client
    s.proc.send_signal(signal.SIGTERM)
    for c in idle + readers:
        texts = [c.next_json()["text"] for _ in range(20 if c in idle else 0)]
        assert texts == ([f"m{i}" for i in range(20)] if c in idle else [])
        f = c.read_frame(timeout=5)
        assert f.opcode == CLOSE and f.close_code() == 1001, f
        c.send(frame(CLOSE, b"\x03\xe9"))
        c.expect_eof(what="the end after 1001")
    wait_stopped(s, timeout=10)


def test_reload_closes_with_1001_and_new_workers_chat(start_server):
    s = start_server("--workers", "2", "--ws-close-timeout", "2s")
    old = list(spread(s.port, "r", workers=2).values())
    s.proc.send_signal(signal.SIGHUP)
    for cs in old:
        f = cs[0].read_frame(timeout=15)
        assert f.opcode == CLOSE and f.close_code() == 1001, f
        cs[0].send(frame(CLOSE, b"\x03\xe9"))
        cs[0].close()
    # the new generation: workers reuse the bus and the roster
    def new_clients():
        try:
            return spread(s.port, "r", workers=2)
        except (AssertionError, OSError):
            return None
    by_slot = wait_for(new_clients, timeout=20, what="the new workers")
    clients = [cs[0] for cs in by_slot.values()]
    clients[0].say("after reload")
    for c in clients:
        assert c.next_json()["text"] == "after reload"
    assert rooms(s.port) == {"r": 2}


# ---- a real client ----------------------------------------------------------------------------

def test_npm_ws_clients_chat(start_server):
    """Two npm ws clients (with permessage-deflate) in one room: what one
    says the other receives, as the JSON the protocol describes."""
    s = start_server("--workers", "2")
    d = node_client_dir()   # npm ws installed from the lock file; chat.js beside it
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ws_client", "chat.js")
    with open(src, "rb") as f, open(os.path.join(d, "chat.js"), "wb") as g:
        g.write(f.read())
    r = subprocess.run(["node", "chat.js", str(s.port)], cwd=d, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"chat.js failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["received"] == 20, out
    assert out["extensions"].startswith("permessage-deflate"), out


# ---- across machines: Redis ----------------------------------------------------------------

@pytest.fixture
def redis():
    rs = RedisServer()
    yield rs
    rs.close()


def wait_cross_instance(pub, subs, timeout=20.0):
    """Redis SUBSCRIBE is asynchronous: `pub` says probes until every
    subscriber has received one (its worker's subscription is active)."""
    pending = set(subs)
    deadline = time.monotonic() + timeout
    k = 0
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} subscribers never heard a probe"
        pub.say(f"probe-{k}")
        k += 1
        t_end = time.monotonic() + 0.3
        for c in list(pending):
            while time.monotonic() < t_end:
                try:
                    m = c.next_json(timeout=max(0.01, t_end - time.monotonic()))
                except ReadTimeout:
                    break
                if m["from"] == pub.id and m["text"].startswith("probe-"):
                    pending.discard(c)
                    break


def is_probe(m):
    return m["text"].startswith("probe-")


def test_fan_out_two_instances_two_workers_each(start_server, redis):
    a = start_server("--workers", "2", "--redis", redis.url)
    b = start_server("--workers", "2", "--redis", redis.url)
    subs = {}
    for name, srv in (("a", a), ("b", b)):
        for slot, cs in spread(srv.port, "world", workers=2).items():
            subs[(name, slot)] = cs[0]
    assert len(subs) == 4
    assert len({c.instance for c in subs.values()}) == 2   # two machines
    clients = list(subs.values())
    pub_a, pub_b = subs[("a", 0)], subs[("b", 1)]
    wait_cross_instance(pub_a, clients)
    wait_cross_instance(pub_b, clients)
    n = 200
    for i in range(n):
        pub_a.say(f"{pub_a.id[-6:]}#{i}")
        pub_b.say(f"{pub_b.id[-6:]}#{i}")
    got = collect(clients, 2 * n, timeout=30, skip=is_probe)
    check_exactly_once_in_order(got, [pub_a.id, pub_b.id], n)
    for c in clients:
        assert c.quiet(0.3)
    for srv in (a, b):
        assert metric(srv.port, "myriad_pubsub_delivered_total", 'source="redis"') >= 2 * n
        assert metric(srv.port, "myriad_pubsub_redis_publish_failures_total") == 0
    # rooms are per machine
    assert rooms(a.port) == {"world": 2} and rooms(b.port) == {"world": 2}


def test_redis_down_local_delivery_goes_on(start_server, redis):
    a = start_server("--workers", "2", "--redis", redis.url, "--redis-timeout", "200ms")
    b = start_server("--workers", "2", "--redis", redis.url, "--redis-timeout", "200ms")
    on_a = [cs[0] for cs in spread(a.port, "down", workers=2).values()]
    on_b = [cs[0] for cs in spread(b.port, "down", workers=2).values()]
    wait_cross_instance(on_a[0], on_a + on_b)
    for c in on_a + on_b:
        c.drain()   # probes still in flight
    redis.kill()
    n = 50
    for i in range(n):
        on_a[0].say(f"{on_a[0].id[-6:]}#{i}")
    got = collect(on_a, n, timeout=20)   # both workers of instance a
    check_exactly_once_in_order(got, [on_a[0].id], n)
    for c in on_b:
        assert c.quiet(0.5)   # b is another machine: nothing crosses without Redis
    wait_for(lambda: metric(a.port, "myriad_pubsub_redis_publish_failures_total") > 0,
             what="the outage in /metrics")
    body = http(a.port, "GET", "/metrics").body.decode()
    assert "myriad_redis_" in body   # the client's own families (connection state)
    # Redis comes back: the subscriptions are restored and messages cross again
    redis.restart()
    wait_cross_instance(on_a[0], on_b, timeout=30)
    wait_for(lambda: metric(b.port, "myriad_pubsub_redis_resubscribes_total") > 0,
             what="resubscriptions counted")
