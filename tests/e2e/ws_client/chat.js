// Two npm `ws` clients in one chat room of myriad's /ws/chat (for
// tests/e2e/test_pubsub.py), permessage-deflate on:
//
//   node chat.js PORT
//
// Both join room "npm-<random>"; once both are welcomed, A says 20 numbered
// messages; B must receive all 20 from A's id, in order, as the JSON the
// protocol describes (app/chat.c). Prints one JSON line; exits 0 on success,
// 1 on a mismatch or error, 2 when not done within 20 s.
'use strict';

const WebSocket = require('ws');

const port = Number(process.argv[2]);
const room = `npm-${Math.floor(Math.random() * 1e9)}`;
const N = 20;

const deadline = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: 'timeout' }));
  process.exit(2);
}, 20000);

function fail(error) {
  console.log(JSON.stringify({ ok: false, error: String(error) }));
  process.exit(1);
}

function join() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat?room=${room}`, {
      perMessageDeflate: { threshold: 0 },
    });
    ws.negotiated = '';
    ws.on('upgrade', (res) => { ws.negotiated = res.headers['sec-websocket-extensions'] || ''; });
    ws.once('message', (data) => {
      const m = JSON.parse(data.toString());
      if (m.type !== 'welcome' || m.room !== room) reject(new Error(`bad welcome ${data}`));
      ws.id = m.id;
      resolve(ws);
    });
    ws.on('error', reject);
  });
}

(async () => {
  const a = await join();
  const b = await join();
  const seen = { ok: true, received: 0, extensions: b.negotiated };
  b.on('message', (data, isBinary) => {
    if (isBinary) fail('binary message');
    const m = JSON.parse(data.toString());
    if (m.type !== 'message' || m.room !== room || m.from !== a.id ||
        m.text !== `hello ${seen.received}` || !Number.isInteger(m.ts)) {
      fail(`unexpected ${data}`);
    }
    seen.received++;
    if (seen.received === N) {
      clearTimeout(deadline);
      console.log(JSON.stringify(seen));
      a.close(1000);
      b.close(1000);
    }
  });
  for (let i = 0; i < N; i++) a.send(`hello ${i}`);
})().catch(fail);
