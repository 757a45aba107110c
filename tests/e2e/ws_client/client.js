// A real WebSocket client for tests/e2e/test_ws.py: npm `ws` with
// permessage-deflate on, against myriad's /ws/echo.
//
//   node client.js PORT [takeover|no-takeover]
//
// Sends text and binary messages (small, fragmented-sized, large, and
// compressible and not), checks each echo is byte-identical and of the same
// type, then closes with 1000 and waits for the server's close. Prints one
// JSON line with what it saw; exits 0 on success, 1 on a mismatch or
// error, 2 when it did not finish within 20 s.
'use strict';

const WebSocket = require('ws');
const crypto = require('crypto');

const port = Number(process.argv[2]);
const mode = process.argv[3] || 'takeover';
const noTakeover = mode === 'no-takeover';

const deadline = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: 'timeout' }));
  process.exit(2);
}, 20000);

function fail(error) {
  console.log(JSON.stringify({ ok: false, error: String(error) }));
  process.exit(1);
}

const messages = [
  { data: 'hello', binary: false },
  { data: 'κόσμε — unicode text ✓ '.repeat(50), binary: false },
  { data: 'compressible '.repeat(20000), binary: false },       // 260 KB
  { data: crypto.randomBytes(70000), binary: true },            // incompressible, 64-bit length
  { data: Buffer.alloc(0), binary: true },
  { data: Buffer.from('x'.repeat(300)), binary: true },
];

const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/echo`, {
  perMessageDeflate: {
    threshold: 0,
    serverNoContextTakeover: noTakeover,
    clientNoContextTakeover: noTakeover,
  },
});

let next = 0;
const seen = { ok: true, extensions: '', echoed: 0, close: null };

ws.on('upgrade', (res) => {
  seen.extensions = res.headers['sec-websocket-extensions'] || '';
});

ws.on('open', () => {
  // all at once: the server must keep them in order
  for (const m of messages) ws.send(m.data, { binary: m.binary });
});

ws.on('message', (data, isBinary) => {
  const want = messages[next++];
  const wantBuf = Buffer.isBuffer(want.data) ? want.data : Buffer.from(want.data);
  if (isBinary !== want.binary) fail(`message ${next - 1}: binary=${isBinary}`);
  if (!Buffer.from(data).equals(wantBuf)) fail(`message ${next - 1}: payload differs`);
  seen.echoed++;
  if (next === messages.length) ws.close(1000, 'done');
});

ws.on('close', (code, reason) => {
  clearTimeout(deadline);
  seen.close = { code, reason: reason.toString() };
  if (seen.echoed !== messages.length || code !== 1000) seen.ok = false;
  console.log(JSON.stringify(seen));
  process.exit(seen.ok ? 0 : 1);
});

ws.on('error', fail);
