'use strict';
// bench/peers/node/server.js — the Node.js peer of bench/compare and
// bench/idle-memory: the same two endpoints as myriad, written the way a Node
// user would, with nothing but the standard `http` module (no npm packages).
//
//   GET /plaintext -> 200 text/plain        "Hello, World!"
//   GET /json      -> 200 application/json  {"message":"Hello, World!"}
//                     (JSON.stringify per request, as the TechEmpower rules ask)
//
// Every response carries Server (set here) and Date (added by Node itself).
//
// Usage: node server.js [--host 127.0.0.1] [--port 8080] [--cluster N]
//   --cluster N  fork N workers with the `cluster` module (N = 0 or 1: one
//                process, no cluster). The primary only distributes
//                connections (round-robin on Linux) and forwards SIGTERM.

const http = require('http');
const cluster = require('cluster');

const PLAINTEXT = 'Hello, World!';

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 8080, cluster: 0 };
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i];
    const value = argv[i + 1];
    if (name === '--host') opts.host = value;
    else if (name === '--port') opts.port = Number(value);
    else if (name === '--cluster') opts.cluster = Number(value);
    else {
      console.error(`usage: node server.js [--host H] [--port P] [--cluster N] (bad argument ${name})`);
      process.exit(2);
    }
    i++;
  }
  if (!Number.isInteger(opts.port) || opts.port <= 0 || opts.port > 65535 ||
      !Number.isInteger(opts.cluster) || opts.cluster < 0) {
    console.error('server.js: --port must be 1..65535 and --cluster a count');
    process.exit(2);
  }
  return opts;
}

function handle(req, res) {
  if (req.method === 'GET' && req.url === '/plaintext') {
    res.writeHead(200, {
      'Content-Type': 'text/plain',
      'Content-Length': PLAINTEXT.length,
      'Server': 'node',
    });
    res.end(PLAINTEXT);
  } else if (req.method === 'GET' && req.url === '/json') {
    const body = JSON.stringify({ message: 'Hello, World!' });
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      'Server': 'node',
    });
    res.end(body);
  } else {
    res.writeHead(404, { 'Content-Length': 0, 'Server': 'node' });
    res.end();
  }
}

function serve(opts) {
  const server = http.createServer(handle);
  // Keep idle keep-alive connections open: bench/idle-memory holds them for
  // a while, and nginx and myriad are configured the same way.
  server.keepAliveTimeout = 0;
  server.listen(opts.port, opts.host, 4096, () => {
    console.error(`node ${process.pid}: listening on ${opts.host}:${opts.port}`);
  });
  // A cluster worker whose primary went away has nobody to answer to.
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
else serve(opts);
