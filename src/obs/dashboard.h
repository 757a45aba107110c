/* dashboard — the live dashboard: GET /dashboard, one self-contained HTML
 * page (inline CSS and JavaScript, no external script, font or image; its
 * Content-Security-Policy forbids them), and GET /metrics.json, the JSON
 * view of the registry it polls once a second.
 *
 * The JSON view is the raw registry, per worker, so the page computes what
 * it draws (rates and windowed percentiles from the difference between two
 * polls):
 *
 *   { "now_ms": 1764270000123, "start_ms": ..., "version": "0.1.0", "self": 0,
 *     "workers": [ { "slot": 0, "pid": 4242, "live": true }, ...,
 *                  { "slot": N, "supervisor": true, "live": false } ],
 *     "families": [ { "name": "myriad_http_requests_total", "type": "counter",
 *                     "help": "...", "per_worker": false, "scale": 1,
 *                     "labels": ["method", "status"], "bounds": [],
 *                     "series": [ { "labels": ["GET", "2xx"],
 *                                   "values": [12, 7, ..., 0] } ] } ] }
 *
 * values[i] belongs to workers[i]; a histogram's value is its cells —
 * per-bucket counts (not cumulative), the +Inf bucket, then the sum — in
 * the family's unit (multiply bounds and sum by scale for display: bounds
 * are already scaled). The last worker entry is the supervisor's block.
 *
 * The page draws, per worker and in total: requests/s, p50 and p99
 * latency, loop lag (p99), open connections, RSS, restarts, and, when the
 * families exist, cache hit ratio and database pool use (see metrics.h for
 * their names). Each chart's <canvas> carries data-points, data-last and
 * data-max (of the total line) for tests and scripts.
 */
#ifndef MYR_OBS_DASHBOARD_H
#define MYR_OBS_DASHBOARD_H

#include <stdint.h>

#include "myriad.h"
#include "core/buf.h"
#include "obs/metrics.h"

#define DASHBOARD_CSP "default-src 'none'; script-src 'unsafe-inline'; " \
                      "style-src 'unsafe-inline'; connect-src 'self'; img-src data:"

/* Writes the JSON view (one object) into w. self: the answering worker's
 * slot. -ENOMEM before writing anything, else 0; the caller then checks
 * myr_json_error(w). */
int dashboard_json(myr_json *w, const metrics_registry *reg, uint32_t self);

/* Appends the page, which polls json_path (a path of URL-safe characters:
 * the caller validates it). 0 or -ENOMEM. */
int dashboard_page(buf *out, const char *json_path);

#endif
