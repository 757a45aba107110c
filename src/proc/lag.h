/* lag — how late a worker's loop runs, measured all the time (Node's
 * monitorEventLoopDelay).
 *
 * A loop timer due every `interval` ms notes, when it finally runs, how long
 * after its due time that was: the delay any event arriving then would have
 * waited for the loop. Each sample goes into a histogram kept since start
 * (or the last lag_reset) and into a short window (LAG_WINDOW_MS) whose mean
 * is the overload signal: a single long stall is the watchdog's business,
 * sustained lag is overload. An idle loop reads up to ~1 ms, the loop's
 * poll rounds timeouts up to whole milliseconds.
 *
 * The histogram is log-linear, like HdrHistogram: values in microseconds,
 * 16 linear sub-buckets per power of two, so any value is known within
 * 1/16 (6.25%) in 592 counters, from 1 µs to 2^40 µs (12.7 days; larger
 * values are clamped into the last bucket, max_us is exact).
 *
 * Threading: loop thread only, except lag_due_ns() (any thread: the
 * watchdog's heartbeat).
 */
#ifndef MYR_PROC_LAG_H
#define MYR_PROC_LAG_H

#include <stdint.h>

#include "core/loop.h"

#define LAG_SUB_BITS     4                            /* 16 sub-buckets per octave */
#define LAG_MAX_EXP      40                           /* values clamp below 2^40 µs */
#define LAG_BUCKETS      ((LAG_MAX_EXP - LAG_SUB_BITS + 1) << LAG_SUB_BITS)
#define LAG_INTERVAL_MS  20                           /* default sampling period */
#define LAG_WINDOW_MS    500                          /* overload window */

/* A histogram of microsecond values. All-zero is a valid empty one. */
typedef struct lag_hist {
    uint64_t count;                 /* samples */
    uint64_t sum_us;                /* of every sample, for the mean */
    uint64_t min_us, max_us;        /* exact; 0 when empty */
    uint64_t buckets[LAG_BUCKETS];  /* samples per bucket */
} lag_hist;

void     lag_hist_record(lag_hist *h, uint64_t us);
/* The value at or below which pct percent of the samples lie (the highest
 * value of that bucket, capped at max_us); 0 when empty. pct in [0, 100]. */
uint64_t lag_hist_percentile(const lag_hist *h, double pct);
/* Bucket arithmetic, exposed for tests and exporters. */
unsigned lag_bucket_of(uint64_t us);
uint64_t lag_bucket_low(unsigned idx);    /* smallest value in bucket idx */
uint64_t lag_bucket_high(unsigned idx);   /* largest value in bucket idx */

/* What the metrics see. Microseconds. */
typedef struct lag_stats {
    uint64_t count;         /* samples since start or reset */
    uint64_t min_us, max_us, mean_us;
    uint64_t p50_us, p90_us, p99_us, p999_us;
    uint64_t window_mean_us;/* mean of the last complete LAG_WINDOW_MS window */
    uint64_t stalls;        /* samples later than the stall threshold */
} lag_stats;

typedef struct lag lag;

/* Starts sampling on loop l every interval_ms (>= 1). Samples later than
 * stall_ms (0: never) are counted as stalls. Loop thread; NULL when out of
 * memory. */
lag  *lag_new(loop *l, uint64_t interval_ms, uint64_t stall_ms);
void  lag_free(lag *m);                        /* stops the timer; NULL is a no-op */
void  lag_snapshot(const lag *m, lag_stats *out);
void  lag_reset(lag *m);                       /* empties the histogram */
const lag_hist *lag_histogram(const lag *m);   /* for exporters (per-bucket counts) */
/* The mean lag of the last complete window, µs: the overload signal. */
uint64_t lag_window_us(const lag *m);
/* When the next sample is due (CLOCK_MONOTONIC ns), or 0 if sampling
 * stopped (out of memory). Any thread: a watchdog that sees the clock far
 * past it knows the loop is stuck. */
uint64_t lag_due_ns(const lag *m);

#endif
