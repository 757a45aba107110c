'use strict';
// bench/peers/node/hash.js — the Node.js peer of bench/offload: the login
// endpoint done the way a Node user should do it, with the asynchronous
// crypto.scrypt that runs on libuv's thread pool (UV_THREADPOOL_SIZE,
// default 4 — the same as myriad's --threads), so the event loop only
// parses, dispatches and writes.
//
//   GET  /plaintext -> 200 text/plain  "Hello, World!"
//   POST /hash      {"password": "..."} -> 200 {"hash": "$scrypt$N=16384,r=8,p=1$SALT$KEY"}
//   bad JSON, missing or over-long password -> 400 {"error": "..."}
//
// scrypt parameters are those of libsodium's
// crypto_pwhash_scryptsalsa208sha256 INTERACTIVE limits, which myriad's
// `--hash-alg scrypt` uses: N = 2^14, r = 8, p = 1, a 32-byte random salt
// and a 32-byte key (16 MiB of memory per hash).
//
// Usage: node hash.js [--host 127.0.0.1] [--port 8080]

const http = require('http');
const crypto = require('crypto');

const PLAINTEXT = 'Hello, World!';
const SCRYPT = { N: 16384, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const SALT_BYTES = 32;
const KEY_BYTES = 32;
const BODY_MAX = 8192;
const PASSWORD_MAX = 1024;

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 8080 };
  for (let i = 0; i < argv.length; i += 2) {
    if (argv[i] === '--host') opts.host = argv[i + 1];
    else if (argv[i] === '--port') opts.port = Number(argv[i + 1]);
    else {
      console.error(`usage: node hash.js [--host H] [--port P] (bad argument ${argv[i]})`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port <= 0 || opts.port > 65535) {
    console.error('hash.js: --port must be 1..65535');
    process.exit(2);
  }
  return opts;
}

function send(res, status, type, body) {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'Server': 'node',
  });
  res.end(body);
}

function sendJson(res, status, obj) {
  send(res, status, 'application/json', JSON.stringify(obj));
}

function hash(req, res) {
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size <= BODY_MAX) chunks.push(chunk);
  });
  req.on('end', () => {
    if (size > BODY_MAX) return sendJson(res, 413, { error: 'body too large' });
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      return sendJson(res, 400, { error: `invalid JSON: ${e.message}` });
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body))
      return sendJson(res, 400, { error: 'the body must be a JSON object' });
    const pw = body.password;
    if (typeof pw !== 'string') return sendJson(res, 400, { error: 'missing field: password' });
    if (Buffer.byteLength(pw) > PASSWORD_MAX)
      return sendJson(res, 400, { error: 'field password too long' });
    const salt = crypto.randomBytes(SALT_BYTES);
    crypto.scrypt(pw, salt, KEY_BYTES, SCRYPT, (err, key) => {
      if (err) return sendJson(res, 503, { error: err.message });
      sendJson(res, 200, {
        hash: `$scrypt$N=${SCRYPT.N},r=${SCRYPT.r},p=${SCRYPT.p}$` +
              `${salt.toString('base64')}$${key.toString('base64')}`,
      });
    });
  });
}

function handle(req, res) {
  if (req.method === 'GET' && req.url === '/plaintext') send(res, 200, 'text/plain', PLAINTEXT);
  else if (req.method === 'POST' && req.url === '/hash') hash(req, res);
  else send(res, 404, 'text/plain', 'not found\n');
}

const opts = parseArgs(process.argv.slice(2));
const server = http.createServer(handle);
server.keepAliveTimeout = 0;
server.listen(opts.port, opts.host, 4096, () => {
  console.error(`node ${process.pid}: listening on ${opts.host}:${opts.port} ` +
                `(UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE || 4})`);
});
