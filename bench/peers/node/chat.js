'use strict';
// bench/peers/node/chat.js — the Node.js peer of bench/ws and bench/c1m --ws:
// the same WebSocket endpoints as myriad's reference service, written the
// way a Node user would, with the npm `ws` package (the most used Node
// WebSocket server) and, for several processes, `cluster` with Redis
// pub/sub between the workers (what socket.io's Redis adapter does).
//
// The chat protocol is myriad's (app/chat.c):
//   GET /ws/chat?room=NAME  first {"type":"welcome","room":R,"id":ID}; then every
//                           text message a client sends goes to every client of
//                           that room (the sender too), on every worker, as
//                           {"type":"message","room":R,"from":ID,"text":T,"ts":US}
//                           ID = "<pid>-<n>", US = server time in microseconds
//                           since the Unix epoch
//   GET /ws/echo            every message comes back unchanged
//   GET /rooms              [{"room":R,"subscribers":N},...] sorted by name, over
//                           all workers (a worker's counts reach Redis within 200 ms)
//   GET /plaintext          "Hello, World!" (readiness checks)
//
// Fan-out as ws's documentation shows it (a loop of client.send), with the
// JSON encoded once per message and turned into one Buffer that every
// client.send shares ({ binary: false } keeps it a text frame).
// Across workers (--cluster N, N > 1, --redis PORT): a worker delivers a
// message to its own clients first, then PUBLISHes it on one Redis channel
// with its worker id; every worker SUBSCRIBEs to it and delivers messages
// of the other workers to its clients (its own are skipped) — the
// socket.io-redis adapter's scheme. permessage-deflate is off (ws's default
// for servers), no server pings (ws sends none unless asked).
//
// Without --redis each worker's rooms are its own: enough for bench/c1m --ws,
// whose idle connections only use /ws/echo (no Redis clients in the memory).
//
// Usage: node chat.js [--host 127.0.0.1] [--port 8080] [--cluster N] [--redis PORT]

const http = require('http');
const cluster = require('cluster');
const { performance } = require('perf_hooks');
const { WebSocketServer } = require('ws');

const CHANNEL = 'wsbench:chat';

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 8080, cluster: 0, redis: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i];
    const value = Number(argv[i + 1]);
    if (name === '--host') opts.host = argv[i + 1];
    else if (name === '--port') opts.port = value;
    else if (name === '--cluster') opts.cluster = value;
    else if (name === '--redis') opts.redis = value;
    else {
      console.error(`usage: node chat.js [--host H] [--port P] [--cluster N] [--redis PORT] (bad argument ${name})`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port <= 0 || opts.port > 65535 ||
      !Number.isInteger(opts.cluster) || opts.cluster < 0 ||
      !Number.isInteger(opts.redis) || opts.redis < 0 || opts.redis > 65535) {
    console.error('chat.js: --port and --redis must be ports, --cluster a count');
    process.exit(2);
  }
  return opts;
}

async function serve(opts) {
  const multi = cluster.isWorker && opts.redis > 0;
  const workerId = String(process.pid);
  const rooms = new Map();           // room -> Set of sockets
  let nextId = 0;
  let pub = null;
  let countsDirty = false;

  function deliver(room, buf) {
    const set = rooms.get(room);
    if (!set) return;
    for (const ws of set) {
      if (ws.readyState === 1) ws.send(buf, { binary: false });
    }
  }

  if (multi) {
    const { createClient } = require('redis');
    pub = createClient({ socket: { host: '127.0.0.1', port: opts.redis } });
    const sub = pub.duplicate();
    pub.on('error', (e) => console.error(`node ${process.pid}: redis: ${e.message}`));
    sub.on('error', (e) => console.error(`node ${process.pid}: redis sub: ${e.message}`));
    await pub.connect();
    await sub.connect();
    // Envelope: "<worker id>\n<room>\n<message JSON>".
    await sub.subscribe(CHANNEL, (msg) => {
      const a = msg.indexOf('\n');
      const b = msg.indexOf('\n', a + 1);
      if (a < 0 || b < 0 || msg.slice(0, a) === workerId) return;
      deliver(msg.slice(a + 1, b), Buffer.from(msg.slice(b + 1)));
    });
    // Room counts for GET /rooms: this worker's, in a Redis hash field per
    // worker, refreshed at most every 200 ms while they change.
    setInterval(() => {
      if (!countsDirty) return;
      countsDirty = false;
      const counts = {};
      for (const [room, set] of rooms) counts[room] = set.size;
      pub.hSet('wsbench:rooms', workerId, JSON.stringify(counts)).catch(() => {});
    }, 200).unref();
  }

  function join(ws, room) {
    let set = rooms.get(room);
    if (!set) rooms.set(room, (set = new Set()));
    set.add(ws);
    countsDirty = true;
  }

  function leave(ws, room) {
    const set = rooms.get(room);
    if (!set) return;
    set.delete(ws);
    if (set.size === 0) rooms.delete(room);
    countsDirty = true;
  }

  const chat = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const echo = new WebSocketServer({ noServer: true, perMessageDeflate: false });

  chat.on('connection', (ws, req) => {
    const room = new URL(req.url, 'http://x').searchParams.get('room') || 'lobby';
    const from = `${workerId}-${nextId++}`;
    join(ws, room);
    ws.send(JSON.stringify({ type: 'welcome', room, id: from }));
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const ts = Math.round((performance.timeOrigin + performance.now()) * 1000);
      const json = JSON.stringify({ type: 'message', room, from, text: data.toString(), ts });
      deliver(room, Buffer.from(json));
      if (pub) pub.publish(CHANNEL, `${workerId}\n${room}\n${json}`).catch(() => {});
    });
    ws.on('close', () => leave(ws, room));
    ws.on('error', () => {});
  });

  echo.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', () => {});
  });

  async function roomsBody() {
    const total = new Map();
    const add = (counts) => {
      for (const [room, n] of Object.entries(counts)) total.set(room, (total.get(room) || 0) + n);
    };
    if (pub) {
      const all = await pub.hGetAll('wsbench:rooms');
      for (const v of Object.values(all)) add(JSON.parse(v));
    } else {
      const counts = {};
      for (const [room, set] of rooms) counts[room] = set.size;
      add(counts);
    }
    const list = [...total].filter(([, n]) => n > 0).sort(([a], [b]) => (a < b ? -1 : a > b))
      .map(([room, n]) => ({ room, subscribers: n }));
    return JSON.stringify(list);
  }

  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/plaintext') {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 13, 'Server': 'node' });
      res.end('Hello, World!');
    } else if (req.method === 'GET' && req.url === '/rooms') {
      roomsBody().then((body) => {
        res.writeHead(200, { 'Content-Type': 'application/json',
                             'Content-Length': Buffer.byteLength(body), 'Server': 'node' });
        res.end(body);
      }, (e) => {
        res.writeHead(503, { 'Content-Length': 0 });
        res.end();
        console.error(`node ${process.pid}: /rooms: ${e.message}`);
      });
    } else {
      res.writeHead(404, { 'Content-Length': 0, 'Server': 'node' });
      res.end();
    }
  });
  server.on('upgrade', (req, socket, head) => {
    const path = req.url.split('?')[0];
    const wss = path === '/ws/chat' ? chat : path === '/ws/echo' ? echo : null;
    if (!wss) {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  server.keepAliveTimeout = 0;
  server.listen(opts.port, opts.host, 4096, () => {
    console.error(`node ${process.pid}: listening on ${opts.host}:${opts.port}`);
  });
  if (cluster.isWorker) process.on('disconnect', () => process.exit(0));
}

function runPrimary(opts) {
  for (let i = 0; i < opts.cluster; i++) cluster.fork();
  let stopping = false;
  const stop = () => {
    stopping = true;
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) console.error(`node worker ${worker.process.pid} died (${signal || code})`);
    if (Object.keys(cluster.workers).length === 0) process.exit(stopping ? 0 : 1);
  });
}

const opts = parseArgs(process.argv.slice(2));
if (opts.cluster > 1 && cluster.isPrimary) runPrimary(opts);
else serve(opts).catch((e) => { console.error(`chat.js: ${e.message}`); process.exit(1); });
