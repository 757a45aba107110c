/* prom — the Prometheus text exposition format (version 0.0.4) of a
 * metrics registry: what GET /metrics answers.
 *
 * Every family gets its # HELP and # TYPE lines, then one sample per label
 * combination (all combinations, zeros included, so series never come and
 * go with traffic). A family is summed over the service's workers — every
 * slot for counters and histograms, including the counts of workers that
 * have exited, and live workers only for gauges — unless it is
 * METRICS_PER_WORKER: then each live worker has its own series with a
 * worker="SLOT" label. Histograms are written cumulatively with _bucket{le},
 * _sum and _count. Two constant families come first: process_start_time_
 * seconds (when the registry was made: the service's start) and
 * myriad_build_info.
 *
 * The output passes `promtool check metrics` (tests/e2e/test_metrics.py).
 */
#ifndef MYR_OBS_PROM_H
#define MYR_OBS_PROM_H

#include "core/buf.h"
#include "obs/metrics.h"

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends the whole exposition to out. 0 or -ENOMEM (out then holds a
 * truncated text: the caller discards it). */
int prom_write(buf *out, const metrics_registry *reg);

#endif
