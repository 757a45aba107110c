"""The chat endpoint from a real browser: Debian's chromium, headless, runs
a page whose script uses the browser's own WebSocket to join a room of
/ws/chat. A raw client of the test joins the same room (on whichever
worker the kernel picks) and says something; the page answers every
message it receives from someone else with "ack:" + the message's JSON
fields as it parsed them, so the test sees what the browser received.

Chromium runs in its own session and is killed by its process group id
(only what this test started), whatever the outcome.
"""

import json
import os
import shutil
import signal
import subprocess
import time

from test_pubsub import Chat, rooms, wait_for
from test_ws import WS

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--mute-audio"]

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>myriad chat</title>
<pre id="log"></pre>
<script>
  "use strict";
  const log = (s) => { document.getElementById("log").textContent += s + "\\n"; };
  const ws = new WebSocket("ws://127.0.0.1:%(port)d/ws/chat?room=%(room)s");
  let me = null;
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "welcome") { me = m.id; log("joined as " + me); return; }
    if (m.type !== "message" || m.from === me) return;
    log(m.from + ": " + m.text);
    ws.send("ack:" + JSON.stringify({ from: m.from, room: m.room, text: m.text, ts: m.ts,
                                      binary: typeof ev.data !== "string" }));
  };
  ws.onclose = (ev) => log("closed " + ev.code);
</script>
"""


def start_chromium(tmp_path, url):
    exe = shutil.which("chromium")
    assert exe, "chromium not found: scripts/deps.sh installs Debian's chromium package"
    argv = [exe] + CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}", url]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def test_browser_joins_a_room_and_receives_a_broadcast(start_server, tmp_path):
    s = start_server("--workers", "2")
    room = "browser-%d" % os.getpid()
    page = tmp_path / "chat.html"
    page.write_text(PAGE % {"port": s.port, "room": room})
    browser = start_chromium(tmp_path, page.as_uri())
    try:
        me = Chat(s.port, room=room)
        wait_for(lambda: rooms(s.port).get(room) == 2, timeout=60,
                 what="the browser to join the room")
        text = 'hello from the test: "quoted" ✓ κόσμε'
        me.say(text)
        assert me.next_json()["text"] == text   # our own copy first
        deadline = time.monotonic() + 30
        while True:
            m = me.next_json(timeout=max(0.1, deadline - time.monotonic()))
            if m["from"] != me.id and m["text"].startswith("ack:"):
                break
        got = json.loads(m["text"][4:])
        assert got["from"] == me.id and got["room"] == room and got["text"] == text, got
        assert isinstance(got["ts"], int) and not got["binary"], got
        assert m["room"] == room and m["from"] != me.id   # the browser's own id
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        browser.wait(10)
        for c in WS.opened:
            c.close()
        WS.opened.clear()
    # the browser's connection is gone: the room is empty again
    wait_for(lambda: room not in rooms(s.port), timeout=10, what="the room to empty")
