'use strict';
// bench/peers/node/db.js — the Node.js peer of bench/db: the TechEmpower
// database endpoints written the way a Node user would, on the npm `pg`
// driver (a pg.Pool per process) or on better-sqlite3 (synchronous, one
// connection per process), with the `cluster` module for several processes.
//
//   GET /db                   one random World row as JSON
//   GET /queries?queries=N    N rows, one SELECT each (clamped 1..500)
//   GET /fortunes             the fortunes plus one, sorted, as an HTML table
//   GET /updates?queries=N    N rows read, new random numbers, written back
//                             (pg: one bulk UPDATE of sorted ids; sqlite: one
//                             transaction of per-row UPDATEs), returned
//   GET /plaintext            for the harness's readiness check
//
// The database must hold the TechEmpower schema (myriad's migrations create
// it: start myriad on the same database first, as bench/db does).
//
// Usage: node db.js --port P --db postgres://...|sqlite:PATH [--pool N] [--cluster N]

const http = require('http');
const cluster = require('cluster');

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 8080, cluster: 0, pool: 4, db: '' };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (name === '--host') opts.host = value;
    else if (name === '--port') opts.port = Number(value);
    else if (name === '--cluster') opts.cluster = Number(value);
    else if (name === '--pool') opts.pool = Number(value);
    else if (name === '--db') opts.db = value;
    else {
      console.error(`usage: node db.js --port P --db URL [--pool N] [--cluster N] (bad ${name})`);
      process.exit(2);
    }
  }
  if (!opts.db.startsWith('postgres') && !opts.db.startsWith('sqlite:')) {
    console.error('db.js: --db postgres://... or sqlite:PATH');
    process.exit(2);
  }
  return opts;
}

const randomId = () => 1 + Math.floor(Math.random() * 10000);

function queriesParam(url) {
  const m = /[?&]queries=([^&]*)/.exec(url);
  const n = m ? parseInt(m[1], 10) : 1;
  if (!Number.isInteger(n) || n < 1) return 1;
  return n > 500 ? 500 : n;
}

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };
const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => ESC[c]);

function fortunesHtml(rows) {
  rows.push({ id: 0, message: 'Additional fortune added at request time.' });
  rows.sort((a, b) => (a.message < b.message ? -1 : a.message > b.message ? 1 : 0));
  let html = '<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>' +
    '<tr><th>id</th><th>message</th></tr>';
  for (const f of rows) html += `<tr><td>${f.id}</td><td>${escapeHtml(f.message)}</td></tr>`;
  return html + '</table></body></html>';
}

function send(res, status, type, body) {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body),
    'Server': 'node' });
  res.end(body);
}

// ---- PostgreSQL (npm pg) --------------------------------------------------------------

function pgBackend(opts) {
  const { Pool } = require('pg');
  const pool = new Pool({ connectionString: opts.db, max: opts.pool });
  const world = (id) => pool.query({ name: 'world', text: 'SELECT id, randomNumber FROM World WHERE id = $1',
    values: [id] }).then((r) => ({ id: r.rows[0].id, randomNumber: r.rows[0].randomnumber }));
  return {
    db: () => world(randomId()),
    queries: (n) => Promise.all(Array.from({ length: n }, () => world(randomId()))),
    fortunes: () => pool.query({ name: 'fortunes', text: 'SELECT id, message FROM Fortune' })
      .then((r) => r.rows),
    updates: async (n) => {
      const rows = await Promise.all(Array.from({ length: n }, () => world(randomId())));
      for (const r of rows) r.randomNumber = randomId();
      const sorted = [...new Map(rows.map((r) => [r.id, r])).values()].sort((a, b) => a.id - b.id);
      await pool.query({ name: 'update',
        text: 'UPDATE World SET randomNumber = v.r FROM (SELECT unnest($1::int[]) AS id, ' +
              'unnest($2::int[]) AS r) AS v WHERE World.id = v.id',
        values: [sorted.map((r) => r.id), sorted.map((r) => r.randomNumber)] });
      for (const r of rows) r.randomNumber = sorted.find((s) => s.id === r.id).randomNumber;
      return rows;
    },
  };
}

// ---- SQLite (better-sqlite3, synchronous) -----------------------------------------------

function sqliteBackend(opts) {
  const Database = require('better-sqlite3');
  const db = new Database(opts.db.slice('sqlite:'.length));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  const sel = db.prepare('SELECT id, randomNumber FROM World WHERE id = ?');
  const all = db.prepare('SELECT id, message FROM Fortune');
  const upd = db.prepare('UPDATE World SET randomNumber = ? WHERE id = ?');
  const writeAll = db.transaction((rows) => {
    for (const r of [...rows].sort((a, b) => a.id - b.id)) upd.run(r.randomNumber, r.id);
  });
  const world = () => sel.get(randomId());
  return {
    db: async () => world(),
    queries: async (n) => Array.from({ length: n }, world),
    fortunes: async () => all.all(),
    updates: async (n) => {
      const rows = Array.from({ length: n }, world);
      for (const r of rows) r.randomNumber = randomId();
      writeAll(rows);
      return rows;
    },
  };
}

function serve(opts) {
  const be = opts.db.startsWith('sqlite:') ? sqliteBackend(opts) : pgBackend(opts);
  const json = (res) => (v) => send(res, 200, 'application/json', JSON.stringify(v));
  const fail = (res) => (e) => send(res, 503, 'application/json', JSON.stringify({ error: String(e) }));
  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/db') be.db().then(json(res), fail(res));
    else if (path === '/queries') be.queries(queriesParam(req.url)).then(json(res), fail(res));
    else if (path === '/updates') be.updates(queriesParam(req.url)).then(json(res), fail(res));
    else if (path === '/fortunes') {
      be.fortunes().then((rows) => send(res, 200, 'text/html; charset=utf-8', fortunesHtml(rows)),
        fail(res));
    } else if (path === '/plaintext') send(res, 200, 'text/plain', 'Hello, World!');
    else send(res, 404, 'text/plain', 'not found');
  });
  server.keepAliveTimeout = 0;
  server.listen(opts.port, opts.host, 4096, () => {
    console.error(`node ${process.pid}: listening on ${opts.host}:${opts.port} (${opts.db.split(':')[0]})`);
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
  cluster.on('exit', () => {
    if (Object.keys(cluster.workers).length === 0) process.exit(stopping ? 0 : 1);
  });
}

const opts = parseArgs(process.argv.slice(2));
if (opts.cluster > 1 && cluster.isPrimary) runPrimary(opts);
else serve(opts);
