'use strict';
// bench/peers/node/cache.js — the Node.js peer of bench/cache: TechEmpower's
// cached-queries written the way the seed (and most Node code) does it:
// cache-aside over Redis with the npm `redis` client, one client per
// process, the `cluster` module for several processes.
//
//   GET /cached-queries?count=N   N random World rows (count clamped 1..500):
//                                 per row GET world:ID; on a miss SELECT it
//                                 from the database and SET world:ID EX 3600
//   GET /world/:id                one row the same way (400 bad id, 404 unknown)
//   GET /plaintext                for the harness's readiness check
//
// --local adds the naive per-process in-memory layer (a Map with the same
// TTL in front of Redis): every process keeps its own copy of every row, so
// with N processes each row misses N times. bench/cache uses it only to
// measure that per-process hit ratio; the throughput rows use plain
// cache-aside (no --local), the seed's pattern.
//
// --stats-port P: the primary (or the single process) answers GET /stats on
// 127.0.0.1:P with every process's counters (workers report them over the
// cluster IPC channel every 200 ms): local_hits, local_misses (with --local),
// redis_hits, redis_misses (= database fills), db_errors.
//
// The database must hold the TechEmpower schema (myriad's migrations create
// it: start myriad on the same database first, as bench/cache does).
//
// Usage: node cache.js --port P --db postgres://...|sqlite:PATH --redis redis://HOST:PORT[/DB]
//                      [--pool N] [--cluster N] [--local] [--stats-port P]

const http = require('http');
const cluster = require('cluster');

const TTL_S = 3600;

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 8080, cluster: 0, pool: 4, db: '', redis: '',
    local: false, statsPort: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (name === '--local') { opts.local = true; i -= 1; continue; }
    if (value === undefined) usage(`${name} needs a value`);
    if (name === '--host') opts.host = value;
    else if (name === '--port') opts.port = Number(value);
    else if (name === '--cluster') opts.cluster = Number(value);
    else if (name === '--pool') opts.pool = Number(value);
    else if (name === '--db') opts.db = value;
    else if (name === '--redis') opts.redis = value;
    else if (name === '--stats-port') opts.statsPort = Number(value);
    else usage(`unknown option ${name}`);
  }
  if (!opts.db.startsWith('postgres') && !opts.db.startsWith('sqlite:')) usage('--db postgres://... or sqlite:PATH');
  if (!opts.redis.startsWith('redis://')) usage('--redis redis://HOST:PORT[/DB]');
  return opts;
}

function usage(why) {
  console.error(`cache.js: ${why}\nusage: node cache.js --port P --db URL --redis URL ` +
    '[--pool N] [--cluster N] [--local] [--stats-port P]');
  process.exit(2);
}

const randomId = () => 1 + Math.floor(Math.random() * 10000);

// TechEmpower's clamp: missing, empty, non-numeric or < 1 -> 1; > 500 -> 500.
function countParam(url) {
  const m = /[?&]count=([^&]*)/.exec(url);
  const n = m ? parseInt(m[1], 10) : 1;
  if (!Number.isInteger(n) || n < 1) return 1;
  return n > 500 ? 500 : n;
}

function send(res, status, type, body, extra) {
  res.writeHead(status, Object.assign({ 'Content-Type': type,
    'Content-Length': Buffer.byteLength(body), 'Server': 'node' }, extra || {}));
  res.end(body);
}

// ---- the database: one row by id, or null ---------------------------------------------

function pgWorld(opts) {
  const { Pool } = require('pg');
  const pool = new Pool({ connectionString: opts.db, max: opts.pool });
  return (id) => pool.query({ name: 'world', text: 'SELECT id, randomNumber FROM World WHERE id = $1',
    values: [id] }).then((r) => (r.rows.length ? { id: r.rows[0].id, randomNumber: r.rows[0].randomnumber }
    : null));
}

function sqliteWorld(opts) {
  const Database = require('better-sqlite3');
  const db = new Database(opts.db.slice('sqlite:'.length), { readonly: true });
  db.pragma('busy_timeout = 5000');
  const sel = db.prepare('SELECT id, randomNumber FROM World WHERE id = ?');
  return async (id) => sel.get(id) || null;
}

// ---- cache-aside -------------------------------------------------------------------------

const counters = { local_hits: 0, local_misses: 0, redis_hits: 0, redis_misses: 0, db_errors: 0 };

function makeCache(opts) {
  const { createClient } = require('redis');
  const client = createClient({ url: opts.redis });
  client.on('error', (e) => console.error(`node ${process.pid}: redis: ${e.message}`));
  const ready = client.connect();
  const dbWorld = opts.db.startsWith('sqlite:') ? sqliteWorld(opts) : pgWorld(opts);
  const local = opts.local ? new Map() : null;   // id -> { row, expires (ms) }

  async function world(id) {
    if (local) {
      const e = local.get(id);
      if (e && e.expires > Date.now()) { counters.local_hits++; return e.row; }
      counters.local_misses++;
    }
    const key = `world:${id}`;
    const cached = await client.get(key);
    let row;
    if (cached !== null) {
      counters.redis_hits++;
      row = JSON.parse(cached);
    } else {
      counters.redis_misses++;
      try {
        row = await dbWorld(id);
      } catch (e) {
        counters.db_errors++;
        throw e;
      }
      if (row) await client.set(key, JSON.stringify(row), { EX: TTL_S });
    }
    if (local && row) local.set(id, { row, expires: Date.now() + TTL_S * 1000 });
    return row;
  }
  return { ready, world };
}

function serve(opts) {
  const cache = makeCache(opts);
  const fail = (res) => (e) => send(res, 503, 'application/json', JSON.stringify({ error: String(e) }));
  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/cached-queries') {
      const n = countParam(req.url);
      Promise.all(Array.from({ length: n }, () => cache.world(randomId())))
        .then((rows) => send(res, 200, 'application/json', JSON.stringify(rows)), fail(res));
    } else if (path.startsWith('/world/')) {
      const raw = path.slice('/world/'.length);
      const id = /^[0-9]{1,9}$/.test(raw) ? Number(raw) : 0;
      if (id < 1) { send(res, 400, 'application/json', '{"error":"bad id"}'); return; }
      cache.world(id).then((row) => {
        if (row) send(res, 200, 'application/json', JSON.stringify(row), { 'Cache-Control': `max-age=${TTL_S}` });
        else send(res, 404, 'application/json', '{"error":"not found"}');
      }, fail(res));
    } else if (path === '/plaintext') send(res, 200, 'text/plain', 'Hello, World!');
    else send(res, 404, 'text/plain', 'not found');
  });
  server.keepAliveTimeout = 0;
  cache.ready.then(() => {
    server.listen(opts.port, opts.host, 4096, () => {
      console.error(`node ${process.pid}: listening on ${opts.host}:${opts.port} (cache-aside, ` +
        `${opts.db.split(':')[0]}, redis${opts.local ? ', per-process Map' : ''})`);
    });
  }, (e) => { console.error(`node ${process.pid}: redis connect: ${e.message}`); process.exit(1); });
  if (cluster.isWorker) {
    let last = '';
    setInterval(() => {
      const now = JSON.stringify(counters);
      if (now !== last && process.connected) { last = now; process.send({ stats: counters }); }
    }, 200).unref();
    process.on('disconnect', () => process.exit(0));
  }
}

// GET /stats on the stats port: { "<pid>": counters, ..., "total": sums }.
function statsServer(opts, byPid) {
  if (!opts.statsPort) return;
  http.createServer((req, res) => {
    const total = {};
    for (const c of Object.values(byPid)) for (const [k, v] of Object.entries(c)) total[k] = (total[k] || 0) + v;
    send(res, 200, 'application/json', JSON.stringify(Object.assign({}, byPid, { total })));
  }).listen(opts.statsPort, '127.0.0.1');
}

function runPrimary(opts) {
  const byPid = {};
  for (let i = 0; i < opts.cluster; i++) cluster.fork();
  cluster.on('message', (w, msg) => { if (msg && msg.stats) byPid[w.process.pid] = msg.stats; });
  statsServer(opts, byPid);
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
else {
  serve(opts);
  if (!cluster.isWorker) statsServer(opts, { [process.pid]: counters });
}
