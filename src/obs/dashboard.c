/* dashboard — see dashboard.h. The JSON view walks the registry the way
 * prom.c does, but keeps every worker's value apart; the page is a C string
 * (below) with one placeholder, @JSON_PATH@, for the URL it polls. */
#include "obs/dashboard.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the JSON view -------------------------------------------------------------------- */

static const char *const type_names[] = { "counter", "gauge", "histogram" };

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What the view is made from: the registry, and which slots are live,
 * asked once per view. */
typedef struct view {
    const metrics_registry *reg;
    uint32_t                nslots;
    const bool             *live;
} view;

/* One value per worker entry (the last is the supervisor's block). */
static void json_values(myr_json *w, const view *v, const metrics_family *f, uint32_t combo)
{
    const metrics_registry *reg = v->reg;
    uint32_t nslots = v->nslots;
    uint32_t per = metrics_combo_cells(f);
    myr_json_key(w, "values");
    myr_json_arr_begin(w);
    for (uint32_t s = 0; s <= nslots; s++) {
        uint32_t slot = s < nslots ? s : metrics_max_workers(reg);
        if (f->type == METRICS_HISTOGRAM) {
            myr_json_arr_begin(w);
            for (uint32_t c = 0; c < per; c++)
                myr_json_uint(w, metrics_read(reg, slot, f, combo * per + c));
            myr_json_arr_end(w);
        } else if (f->type == METRICS_GAUGE) {
            bool live = s < nslots && v->live[s];
            myr_json_int(w, live ? (int64_t)metrics_read(reg, slot, f, combo) : 0);
        } else {
            myr_json_uint(w, metrics_read(reg, slot, f, combo));
        }
    }
    myr_json_arr_end(w);
}

static void json_series(myr_json *w, const view *v, const metrics_family *f)
{
    uint32_t combos = f->nvalues[0] * f->nvalues[1];
    myr_json_key(w, "series");
    myr_json_arr_begin(w);
    for (uint32_t c = 0; c < combos; c++) {
        unsigned idx[METRICS_MAX_LABELS] = { c / f->nvalues[1], c % f->nvalues[1] };
        myr_json_obj_begin(w);
        myr_json_key(w, "labels");
        myr_json_arr_begin(w);
        for (unsigned l = 0; l < f->nlabels; l++)
            myr_json_str(w, f->value[l][idx[l]]);
        myr_json_arr_end(w);
        json_values(w, v, f, c);
        myr_json_obj_end(w);
    }
    myr_json_arr_end(w);
}

static void json_family(myr_json *w, const view *v, const metrics_family *f)
{
    myr_json_obj_begin(w);
    myr_json_key(w, "name");
    myr_json_str(w, f->name);
    myr_json_key(w, "type");
    myr_json_str(w, type_names[f->type]);
    myr_json_key(w, "help");
    myr_json_str(w, f->help);
    myr_json_key(w, "per_worker");
    myr_json_bool(w, f->flags & METRICS_PER_WORKER);
    myr_json_key(w, "scale");
    myr_json_double(w, f->scale);
    myr_json_key(w, "labels");
    myr_json_arr_begin(w);
    for (unsigned l = 0; l < f->nlabels; l++)
        myr_json_str(w, f->label[l]);
    myr_json_arr_end(w);
    myr_json_key(w, "bounds");
    myr_json_arr_begin(w);
    for (unsigned b = 0; b < f->nbounds; b++)
        myr_json_double(w, (double)f->bounds[b] * f->scale);
    myr_json_arr_end(w);
    json_series(w, v, f);
    myr_json_obj_end(w);
}

static void json_workers(myr_json *w, const view *v)
{
    const metrics_registry *reg = v->reg;
    myr_json_key(w, "workers");
    myr_json_arr_begin(w);
    for (uint32_t s = 0; s < v->nslots; s++) {
        myr_json_obj_begin(w);
        myr_json_key(w, "slot");
        myr_json_uint(w, s);
        myr_json_key(w, "pid");
        myr_json_int(w, metrics_slot_pid(reg, s));
        myr_json_key(w, "live");
        myr_json_bool(w, v->live[s]);
        myr_json_obj_end(w);
    }
    myr_json_obj_begin(w);
    myr_json_key(w, "slot");
    myr_json_uint(w, metrics_max_workers(reg));
    myr_json_key(w, "supervisor");
    myr_json_bool(w, true);
    myr_json_key(w, "live");
    myr_json_bool(w, false);
    myr_json_obj_end(w);
    myr_json_arr_end(w);
}

int dashboard_json(myr_json *w, const metrics_registry *reg, uint32_t self)
{
    view v = { .reg = reg, .nslots = metrics_slots(reg) };
    bool *live = metrics_live_slots(reg, v.nslots);
    if (!live)
        return -ENOMEM;
    v.live = live;
    myr_json_obj_begin(w);
    myr_json_key(w, "now_ms");
    myr_json_int(w, unix_ms());
    myr_json_key(w, "start_ms");
    myr_json_int(w, metrics_start_ms(reg));
    myr_json_key(w, "version");
    myr_json_str(w, MYR_VERSION);
    myr_json_key(w, "self");
    myr_json_uint(w, self);
    json_workers(w, &v);
    myr_json_key(w, "families");
    myr_json_arr_begin(w);
    uint32_t n = metrics_families(reg);
    for (uint32_t i = 0; i < n; i++)
        json_family(w, &v, metrics_family_at(reg, i));
    myr_json_arr_end(w);
    myr_json_obj_end(w);
    free(live);
    return 0;
}

/* ---- the page ------------------------------------------------------------------------ */

/* Charts are <canvas> lines drawn by the script; rates and percentiles
 * come from the difference between two polls, a second apart. */
static const char page[] =
    "<!doctype html>\n"
    "<html lang=en>\n"
    "<head>\n"
    "<meta charset=utf-8>\n"
    "<meta name=viewport content='width=device-width, initial-scale=1'>\n"
    "<title>myriad dashboard</title>\n"
    "<style>\n"
    ":root { --bg: #f4f5f7; --card: #fff; --ink: #1f2937; --mute: #6b7280; --grid: #e5e7eb; }\n"
    "* { box-sizing: border-box; }\n"
    "body { margin: 0; font: 13px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--ink); }\n"
    "header { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: baseline; padding: 10px 20px;\n"
    "         background: #111827; color: #f9fafb; }\n"
    "header h1 { font-size: 16px; margin: 0; font-weight: 600; }\n"
    "header span { color: #d1d5db; font-variant-numeric: tabular-nums; }\n"
    "header .err { color: #fca5a5; }\n"
    "main { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 12px;\n"
    "       padding: 12px 20px; }\n"
    ".card { background: var(--card); border-radius: 8px; box-shadow: 0 1px 2px rgba(0,0,0,.08);\n"
    "        padding: 10px 12px; }\n"
    ".card h2 { margin: 0 0 4px; font-size: 13px; font-weight: 600; display: flex;\n"
    "           justify-content: space-between; }\n"
    ".card h2 b { font-variant-numeric: tabular-nums; }\n"
    ".card small { color: var(--mute); }\n"
    "canvas { width: 100%; height: 140px; display: block; }\n"
    ".legend { display: flex; flex-wrap: wrap; gap: 2px 12px; color: var(--mute); font-size: 11px;\n"
    "          margin-top: 4px; }\n"
    ".legend i { display: inline-block; width: 12px; height: 3px; margin-right: 4px;\n"
    "            vertical-align: middle; }\n"
    ".wide { grid-column: 1 / -1; }\n"
    "table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }\n"
    "th, td { text-align: right; padding: 3px 8px; border-bottom: 1px solid var(--grid); }\n"
    "th:first-child, td:first-child { text-align: left; }\n"
    "tr.dead { color: var(--mute); }\n"
    "</style>\n"
    "</head>\n"
    "<body>\n"
    "<header><h1>myriad</h1><span id=info>connecting...</span><span id=state></span></header>\n"
    "<main id=grid></main>\n"
    "<script>\n"
    "(function () {\n"
    "'use strict';\n"
    "var JSON_URL = '@JSON_PATH@', POLL_MS = 1000, KEEP = 120, MIB = 1048576;\n"
    "var COLORS = ['#111827', '#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2',\n"
    "              '#db2777', '#65a30d', '#ea580c', '#4f46e5', '#0d9488'];\n"
    "var CHARTS = [\n"
    "  { id: 'rps', title: 'Requests/s' },\n"
    "  { id: 'p50', title: 'Latency p50 (ms)' },\n"
    "  { id: 'p99', title: 'Latency p99 (ms)' },\n"
    "  { id: 'lag', title: 'Loop lag p99 (ms)' },\n"
    "  { id: 'conns', title: 'Open connections' },\n"
    "  { id: 'rss', title: 'RSS (MiB)' },\n"
    "  { id: 'restarts', title: 'Restarts' },\n"
    "  { id: 'cache', title: 'Cache hit ratio (%)', optional: 'myriad_cache_hits_total' },\n"
    "  { id: 'dbpool', title: 'DB pool use (%)', optional: 'myriad_db_pool_in_use' }\n"
    "];\n"
    "var LAG_WINDOW_MS = 2500, past = [];\n"
    "var hist = {}, prev = null, colorOf = { total: COLORS[0] }, nextColor = 1;\n"
    "\n"
    "function $(id) { return document.getElementById(id); }\n"
    "function fmt(v) {\n"
    "  if (v === null || v === undefined || isNaN(v)) return '-';\n"
    "  if (v >= 100) return Math.round(v).toLocaleString('en');\n"
    "  if (v >= 1) return v.toFixed(1);\n"
    "  return v.toPrecision(2);\n"
    "}\n"
    "\n"
    "/* ---- reading the JSON view ---- */\n"
    "function sumSeries(f, n) {\n"
    "  var out = [];\n"
    "  for (var i = 0; i < n; i++) out.push(0);\n"
    "  if (f) f.series.forEach(function (s) {\n"
    "    s.values.forEach(function (v, i) { out[i] += v; });\n"
    "  });\n"
    "  return out;\n"
    "}\n"
    "function sumHist(f, n) {\n"
    "  var out = [];\n"
    "  for (var i = 0; i < n; i++) out.push(null);\n"
    "  if (f) f.series.forEach(function (s) {\n"
    "    s.values.forEach(function (cells, i) {\n"
    "      if (!out[i]) { out[i] = cells.slice(); return; }\n"
    "      for (var k = 0; k < cells.length; k++) out[i][k] += cells[k];\n"
    "    });\n"
    "  });\n"
    "  return out;\n"
    "}\n"
    "function digest(snap) {\n"
    "  var fam = {}, n = snap.workers.length, d = { snap: snap, index: {} };\n"
    "  snap.families.forEach(function (f) { fam[f.name] = f; });\n"
    "  snap.workers.forEach(function (w, i) { d.index[w.slot] = i; });\n"
    "  function bounds(name) { return fam[name] ? fam[name].bounds : []; }\n"
    "  d.fam = fam;\n"
    "  d.req = sumSeries(fam.myriad_http_requests_total, n);\n"
    "  d.dur = sumHist(fam.myriad_http_request_duration_seconds, n);\n"
    "  d.durBounds = bounds('myriad_http_request_duration_seconds');\n"
    "  d.lag = sumHist(fam.myriad_loop_lag_seconds, n);\n"
    "  d.lagBounds = bounds('myriad_loop_lag_seconds');\n"
    "  d.conns = sumSeries(fam.myriad_http_open_connections, n);\n"
    "  d.rss = sumSeries(fam.myriad_worker_resident_memory_bytes, n);\n"
    "  d.heap = sumSeries(fam.myriad_worker_heap_bytes, n);\n"
    "  d.starts = sumSeries(fam.myriad_worker_starts_total, n);\n"
    "  d.restarts = fam.myriad_worker_restarts_total;\n"
    "  d.hits = sumSeries(fam.myriad_cache_hits_total, n);\n"
    "  d.misses = sumSeries(fam.myriad_cache_misses_total, n);\n"
    "  d.poolUse = sumSeries(fam.myriad_db_pool_in_use, n);\n"
    "  d.poolSize = sumSeries(fam.myriad_db_pool_size, n);\n"
    "  return d;\n"
    "}\n"
    "\n"
    "/* Prometheus' histogram_quantile: linear inside the bucket. cells holds\n"
    " * per-bucket counts, the +Inf bucket, then the sum. */\n"
    "function quantile(q, b, cells) {\n"
    "  if (!cells) return null;\n"
    "  var nb = b.length, total = 0, cum = 0, k;\n"
    "  for (k = 0; k <= nb; k++) total += cells[k];\n"
    "  if (total <= 0) return null;\n"
    "  var rank = q * total;\n"
    "  for (k = 0; k <= nb; k++) {\n"
    "    if (cells[k] > 0 && cum + cells[k] >= rank) {\n"
    "      if (k === nb) return b[nb - 1];\n"
    "      var lo = k ? b[k - 1] : 0;\n"
    "      return lo + (b[k] - lo) * (rank - cum) / cells[k];\n"
    "    }\n"
    "    cum += cells[k];\n"
    "  }\n"
    "  return b[nb - 1];\n"
    "}\n"
    "function diff(a, b) {\n"
    "  if (!a || !b || a.length !== b.length) return null;\n"
    "  return a.map(function (v, i) { return v - b[i]; });\n"
    "}\n"
    "function merge(acc, d) {\n"
    "  if (!d) return acc;\n"
    "  if (!acc) return d.slice();\n"
    "  return acc.map(function (v, i) { return v + d[i]; });\n"
    "}\n"
    "\n"
    "/* One point per chart and line ('total', 'w<slot>') from two polls; loop\n"
    " * lag, sampled once a second by the server, over at least LAG_WINDOW_MS. */\n"
    "function points(cur, old, lagOld) {\n"
    "  var p = {}, dt = old ? (cur.snap.now_ms - old.snap.now_ms) / 1000 : 0;\n"
    "  CHARTS.forEach(function (c) { p[c.id] = {}; });\n"
    "  var req = 0, rated = false, dur = null, lag = null, hits = 0, looks = 0, use = 0, size = 0;\n"
    "  var conns = 0, rss = 0, live = 0;\n"
    "  cur.snap.workers.forEach(function (w, i) {\n"
    "    var key = 'w' + w.slot, j = old ? old.index[w.slot] : undefined, mine = w.live;\n"
    "    if (mine) {\n"
    "      live++;\n"
    "      p.conns[key] = cur.conns[i]; conns += cur.conns[i];\n"
    "      p.rss[key] = cur.rss[i] / MIB; rss += cur.rss[i];\n"
    "      p.restarts[key] = Math.max(0, cur.starts[i] - 1);\n"
    "      if (cur.poolSize[i] > 0) p.dbpool[key] = 100 * cur.poolUse[i] / cur.poolSize[i];\n"
    "      use += cur.poolUse[i]; size += cur.poolSize[i];\n"
    "    }\n"
    "    if (!(dt > 0) || j === undefined) return;\n"
    "    rated = true;\n"
    "    var dreq = cur.req[i] - old.req[j], dd = diff(cur.dur[i], old.dur[j]);\n"
    "    var k = lagOld ? lagOld.index[w.slot] : undefined;\n"
    "    var dl = k === undefined ? null : diff(cur.lag[i], lagOld.lag[k]);\n"
    "    var dh = cur.hits[i] - old.hits[j], dm = cur.misses[i] - old.misses[j];\n"
    "    req += dreq; dur = merge(dur, dd); lag = merge(lag, dl); hits += dh; looks += dh + dm;\n"
    "    if (!mine) return;\n"
    "    p.rps[key] = dreq / dt;\n"
    "    var q50 = quantile(0.5, cur.durBounds, dd), q99 = quantile(0.99, cur.durBounds, dd);\n"
    "    if (q50 !== null) { p.p50[key] = q50 * 1000; p.p99[key] = q99 * 1000; }\n"
    "    var l99 = quantile(0.99, cur.lagBounds, dl);\n"
    "    if (l99 !== null) p.lag[key] = l99 * 1000;\n"
    "    if (dh + dm > 0) p.cache[key] = 100 * dh / (dh + dm);\n"
    "  });\n"
    "  if (rated) p.rps.total = req / dt;\n"
    "  var t50 = quantile(0.5, cur.durBounds, dur), t99 = quantile(0.99, cur.durBounds, dur);\n"
    "  if (t50 !== null) { p.p50.total = t50 * 1000; p.p99.total = t99 * 1000; }\n"
    "  var tl = quantile(0.99, cur.lagBounds, lag);\n"
    "  if (tl !== null) p.lag.total = tl * 1000;\n"
    "  p.conns.total = conns;\n"
    "  p.rss.total = rss / MIB;\n"
    "  p.restarts.total = sumSeries(cur.restarts, cur.snap.workers.length)\n"
    "    .reduce(function (a, b) { return a + b; }, 0);\n"
    "  if (looks > 0) p.cache.total = 100 * hits / looks;\n"
    "  if (size > 0) p.dbpool.total = 100 * use / size;\n"
    "  p.live = live;\n"
    "  return p;\n"
    "}\n"
    "\n"
    "/* ---- drawing ---- */\n"
    "function card(c) {\n"
    "  var el = document.createElement('section');\n"
    "  el.className = 'card';\n"
    "  el.id = 'card-' + c.id;\n"
    "  el.innerHTML = '<h2><span>' + c.title + '</span><b id=now-' + c.id + '>-</b></h2>' +\n"
    "                 '<canvas id=chart-' + c.id + ' data-points=0 data-last=0 data-max=0></canvas>' +\n"
    "                 '<div class=legend id=legend-' + c.id + '></div>' +\n"
    "                 (c.id === 'restarts' ? '<small id=causes></small>' : '');\n"
    "  $('grid').insertBefore(el, $('workers-card'));\n"
    "  hist[c.id] = { n: 0, lines: {} };\n"
    "}\n"
    "function record(id, values) {\n"
    "  var h = hist[id];\n"
    "  Object.keys(values).forEach(function (k) {\n"
    "    if (!h.lines[k]) h.lines[k] = new Array(h.n).fill(null);\n"
    "  });\n"
    "  Object.keys(h.lines).forEach(function (k) {\n"
    "    var line = h.lines[k];\n"
    "    line.push(k in values ? values[k] : null);\n"
    "    if (line.length > KEEP) line.shift();\n"
    "  });\n"
    "  h.n = Math.min(h.n + 1, KEEP);\n"
    "}\n"
    "function niceMax(v) {\n"
    "  if (!(v > 0)) return 1;\n"
    "  var e = Math.pow(10, Math.floor(Math.log10(v))), m = v / e;\n"
    "  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * e;\n"
    "}\n"
    "function colorFor(k) {\n"
    "  if (!colorOf[k]) colorOf[k] = COLORS[nextColor++ % COLORS.length || 1];\n"
    "  return colorOf[k];\n"
    "}\n"
    "function draw(c) {\n"
    "  var h = hist[c.id], cv = $('chart-' + c.id), ctx = cv.getContext('2d');\n"
    "  var dpr = window.devicePixelRatio || 1, W = cv.clientWidth, H = cv.clientHeight;\n"
    "  cv.width = W * dpr; cv.height = H * dpr;\n"
    "  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);\n"
    "  var max = 0, keys = Object.keys(h.lines).sort(function (a, b) {\n"
    "    return a === 'total' ? 1 : b === 'total' ? -1 : a.localeCompare(b, 'en', { numeric: true });\n"
    "  });\n"
    "  keys.forEach(function (k) {\n"
    "    h.lines[k].forEach(function (v) { if (v !== null && v > max) max = v; });\n"
    "  });\n"
    "  var top = niceMax(max), L = 44, R = 6, T = 6, B = 6, pw = W - L - R, ph = H - T - B;\n"
    "  ctx.font = '10px system-ui, sans-serif';\n"
    "  ctx.fillStyle = '#6b7280';\n"
    "  ctx.strokeStyle = '#e5e7eb';\n"
    "  ctx.lineWidth = 1;\n"
    "  for (var g = 0; g <= 4; g++) {\n"
    "    var gy = T + ph - ph * g / 4;\n"
    "    ctx.beginPath(); ctx.moveTo(L, gy); ctx.lineTo(W - R, gy); ctx.stroke();\n"
    "    ctx.fillText(fmt(top * g / 4), 2, gy + 3);\n"
    "  }\n"
    "  var span = Math.min(KEEP, Math.max(h.n, 30));   /* a young chart is not squeezed */\n"
    "  keys.forEach(function (k) {\n"
    "    var line = h.lines[k].slice(-span), off = span - line.length, open = false;\n"
    "    ctx.strokeStyle = colorFor(k);\n"
    "    ctx.lineWidth = k === 'total' ? 2.2 : 1.2;\n"
    "    ctx.fillStyle = ctx.strokeStyle;\n"
    "    ctx.beginPath();\n"
    "    line.forEach(function (v, i) {\n"
    "      if (v === null) { open = false; return; }\n"
    "      var x = L + pw * (off + i) / (span - 1), y = T + ph - ph * Math.min(v, top) / top;\n"
    "      if (open) ctx.lineTo(x, y); else ctx.moveTo(x, y);\n"
    "      var alone = !open && (i + 1 >= line.length || line[i + 1] === null);\n"
    "      if (alone) ctx.fillRect(x - 1.5, y - 1.5, 3, 3);   /* a point with no neighbour */\n"
    "      open = true;\n"
    "    });\n"
    "    ctx.stroke();\n"
    "  });\n"
    "  var total = h.lines.total || [], seen = total.filter(function (v) { return v !== null; });\n"
    "  var last = seen.length ? seen[seen.length - 1] : null;\n"
    "  cv.dataset.points = seen.length;\n"
    "  cv.dataset.last = last === null ? 0 : last;\n"
    "  cv.dataset.max = seen.length ? Math.max.apply(null, seen) : 0;\n"
    "  $('now-' + c.id).textContent = fmt(last);\n"
    "  $('legend-' + c.id).innerHTML = keys.map(function (k) {\n"
    "    return '<span><i style=\\'background:' + colorFor(k) + '\\'></i>' +\n"
    "           (k === 'total' ? 'total' : 'worker ' + k.slice(1)) + '</span>';\n"
    "  }).join('');\n"
    "}\n"
    "\n"
    "function workersTable(cur, p) {\n"
    "  var rows = cur.snap.workers.filter(function (w) { return !w.supervisor; }).map(function (w) {\n"
    "    var i = cur.index[w.slot], k = 'w' + w.slot;\n"
    "    return '<tr class=' + (w.live ? 'live' : 'dead') + '><td>' + w.slot + '</td><td>' +\n"
    "           w.pid + '</td><td>' + (w.live ? 'yes' : 'no') + '</td><td>' + fmt(p.rps[k]) +\n"
    "           '</td><td>' + fmt(p.p99[k]) + '</td><td>' + fmt(p.lag[k]) + '</td><td>' +\n"
    "           (w.live ? cur.conns[i] : '-') + '</td><td>' + fmt(cur.rss[i] / MIB) + '</td><td>' +\n"
    "           fmt(cur.heap[i] / MIB) + '</td><td>' + cur.req[i].toLocaleString('en') + '</td></tr>';\n"
    "  });\n"
    "  $('workers').innerHTML = '<tr><th>worker</th><th>pid</th><th>live</th><th>req/s</th>' +\n"
    "    '<th>p99 ms</th><th>lag p99 ms</th><th>conns</th><th>RSS MiB</th><th>heap MiB</th>' +\n"
    "    '<th>requests</th></tr>' + rows.join('');\n"
    "}\n"
    "\n"
    "/* The latest earlier poll at least ms older than cur, else the oldest. */\n"
    "function olderThan(cur, ms) {\n"
    "  for (var i = past.length - 1; i >= 0; i--)\n"
    "    if (cur.snap.now_ms - past[i].snap.now_ms >= ms) return past[i];\n"
    "  return past[0] || null;\n"
    "}\n"
    "\n"
    "function update(snap) {\n"
    "  var cur = digest(snap), p = points(cur, prev, olderThan(cur, LAG_WINDOW_MS));\n"
    "  CHARTS.forEach(function (c) {\n"
    "    if (c.optional && !cur.fam[c.optional]) return;\n"
    "    if (!hist[c.id]) card(c);\n"
    "    record(c.id, p[c.id]);\n"
    "    draw(c);\n"
    "  });\n"
    "  if (cur.restarts) {\n"
    "    $('causes').textContent = cur.restarts.series.map(function (s) {\n"
    "      return s.labels[0] + ' ' + s.values.reduce(function (a, b) { return a + b; }, 0);\n"
    "    }).join(' \\u00b7 ');\n"
    "  }\n"
    "  workersTable(cur, p);\n"
    "  var up = Math.max(0, (snap.now_ms - snap.start_ms) / 1000);\n"
    "  $('info').textContent = 'version ' + snap.version + ' \\u00b7 up ' + fmt(up / 60) +\n"
    "    ' min \\u00b7 ' + p.live + ' live worker' + (p.live === 1 ? '' : 's') + ' \\u00b7 ' +\n"
    "    cur.req.reduce(function (a, b) { return a + b; }, 0).toLocaleString('en') +\n"
    "    ' requests \\u00b7 answered by worker ' + snap.self;\n"
    "  $('state').textContent = '';\n"
    "  $('state').className = '';\n"
    "  prev = cur;\n"
    "  past.push(cur);\n"
    "  if (past.length > 10) past.shift();\n"
    "}\n"
    "\n"
    "function poll() {\n"
    "  fetch(JSON_URL, { cache: 'no-store' }).then(function (r) {\n"
    "    if (!r.ok) throw new Error('HTTP ' + r.status);\n"
    "    return r.json();\n"
    "  }).then(update).catch(function (e) {\n"
    "    $('state').textContent = 'poll failed: ' + e.message;\n"
    "    $('state').className = 'err';\n"
    "  }).then(function () { setTimeout(poll, POLL_MS); });\n"
    "}\n"
    "\n"
    "var wide = document.createElement('section');\n"
    "wide.className = 'card wide';\n"
    "wide.id = 'workers-card';\n"
    "wide.innerHTML = '<h2><span>Workers</span></h2><table id=workers></table>';\n"
    "$('grid').appendChild(wide);\n"
    "CHARTS.forEach(function (c) { if (!c.optional) card(c); });\n"
    "poll();\n"
    "})();\n"
    "</script>\n"
    "</body>\n"
    "</html>\n";

#define PLACEHOLDER "@JSON_PATH@"

int dashboard_page(buf *out, const char *json_path)
{
    const char *at = strstr(page, PLACEHOLDER);
    if (!at)
        return -EINVAL;
    size_t head = (size_t)(at - page), skip = sizeof(PLACEHOLDER) - 1;
    if (buf_reserve(out, sizeof(page) + strlen(json_path)))
        return -ENOMEM;
    buf_append(out, page, head);
    buf_append(out, json_path, strlen(json_path));
    buf_append(out, at + skip, sizeof(page) - 1 - head - skip);
    return 0;
}
