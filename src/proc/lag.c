/* lag — see lag.h.
 *
 * Bucket layout (S = LAG_SUB_BITS = 4):
 *
 *   value v (µs)              bucket
 *   0 .. 15                   v                      exact
 *   2^e .. 2^(e+1)-1, e >= 4  (e-3)*16 + (v >> (e-4)) - 16
 *                             16 buckets of width 2^(e-4)
 *
 * so bucket 16 starts at 16, 32 at 32, 48 at 64, ... and the bucket of a
 * value is two shifts and a count-leading-zeros.
 *
 * Sampling. The timer is re-armed from the time the sample was taken, not
 * from the due time, so a long stall yields one large sample rather than a
 * burst of catch-up ticks. The clock is read fresh in the callback: the
 * loop's cached time predates the I/O dispatch that may be the very reason
 * for the lateness.
 */
#include "proc/lag.h"

#include <math.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PER_MS 1000000u
#define SUB       (1u << LAG_SUB_BITS)

_Static_assert(LAG_BUCKETS == 592, "bucket count the header documents");

struct lag {
    loop       *loop;
    loop_timer  timer;
    uint64_t    interval_ns;    /* sampling period */
    uint64_t    stall_ns;       /* samples later than this count as stalls; 0 = none */
    uint64_t    due_ns;         /* when the armed sample is due */
    _Atomic uint64_t due_pub;   /* due_ns, published for the watchdog thread */
    uint64_t    stalls;         /* samples later than stall_ns */
    bool        running;        /* the loop has run the first (unrecorded) tick */

    uint64_t    win_start_ns;   /* start of the current window */
    uint64_t    win_sum_us;     /* lateness summed over the current window */
    uint64_t    win_n;          /* samples in the current window */
    uint64_t    win_mean_us;    /* mean of the last complete window */

    lag_hist    hist;           /* since start or lag_reset */
};

static uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- histogram ------------------------------------------------------------------ */

unsigned lag_bucket_of(uint64_t us)
{
    if (us < SUB)
        return (unsigned)us;
    if (us >> LAG_MAX_EXP)
        return LAG_BUCKETS - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(us);   /* 2^e <= us */
    return ((e - LAG_SUB_BITS + 1) << LAG_SUB_BITS) + (unsigned)(us >> (e - LAG_SUB_BITS)) - SUB;
}

uint64_t lag_bucket_low(unsigned idx)
{
    if (idx < SUB)
        return idx;
    unsigned k = idx >> LAG_SUB_BITS;   /* octave, >= 1 */
    return (uint64_t)(SUB + (idx & (SUB - 1))) << (k - 1);
}

uint64_t lag_bucket_high(unsigned idx)
{
    if (idx < SUB)
        return idx;
    return lag_bucket_low(idx) + ((uint64_t)1 << ((idx >> LAG_SUB_BITS) - 1)) - 1;
}

void lag_hist_record(lag_hist *h, uint64_t us)
{
    if (h->count == 0 || us < h->min_us)
        h->min_us = us;
    if (us > h->max_us)
        h->max_us = us;
    h->count++;
    h->sum_us += us;
    h->buckets[lag_bucket_of(us)]++;
}

uint64_t lag_hist_percentile(const lag_hist *h, double pct)
{
    if (h->count == 0)
        return 0;
    if (pct < 0)
        pct = 0;
    if (pct > 100)
        pct = 100;
    /* rank of the sample we want, 1-based: ceil(pct% of count), at least 1 */
    uint64_t rank = (uint64_t)ceil(pct / 100.0 * (double)h->count);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < LAG_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            /* the last bucket also holds the clamped values: its top is max */
            uint64_t v = i == LAG_BUCKETS - 1 ? h->max_us : lag_bucket_high(i);
            return v < h->max_us ? v : h->max_us;
        }
    }
    return h->max_us;
}

/* ---- the monitor ------------------------------------------------------------------- */

static void window_add(lag *m, uint64_t now, uint64_t late_us)
{
    m->win_sum_us += late_us;
    m->win_n++;
    if (now - m->win_start_ns >= (uint64_t)LAG_WINDOW_MS * NS_PER_MS) {
        m->win_mean_us = m->win_sum_us / m->win_n;
        m->win_sum_us = 0;
        m->win_n = 0;
        m->win_start_ns = now;
    }
}

static void on_sample(loop_timer *t)
{
    lag *m = container_of(t, lag, timer);
    uint64_t now = clock_ns();
    uint64_t late = now > m->due_ns ? now - m->due_ns : 0;
    if (m->running) {
        lag_hist_record(&m->hist, late / 1000);
        window_add(m, now, late / 1000);
        if (m->stall_ns && late > m->stall_ns)
            m->stalls++;
    } else {
        /* the first firing is the loop's first iteration: what came
         * before (start-up, migrations) is not loop lag */
        m->running = true;
        m->win_start_ns = now;
    }
    m->due_ns = now + m->interval_ns;
    /* Out of memory for the timer heap: sampling stops, and the watchdog is
     * told there is no heartbeat (0) rather than shown a frozen one. */
    bool armed = loop_timer_start_at(m->loop, t, m->due_ns, on_sample) == 0;
    atomic_store_explicit(&m->due_pub, armed ? m->due_ns : 0, memory_order_release);
}

lag *lag_new(loop *l, uint64_t interval_ms, uint64_t stall_ms)
{
    lag *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->loop = l;
    m->interval_ns = (interval_ms ? interval_ms : 1) * NS_PER_MS;
    m->stall_ns = stall_ms * NS_PER_MS;
    /* due_pub stays 0 (no heartbeat) until the loop runs: start-up work
     * between here and loop_run is not a stall */
    m->due_ns = clock_ns();
    if (loop_timer_start_at(l, &m->timer, m->due_ns, on_sample) < 0) {
        free(m);
        return NULL;
    }
    return m;
}

void lag_free(lag *m)
{
    if (!m)
        return;
    loop_timer_stop(m->loop, &m->timer);
    free(m);
}

void lag_snapshot(const lag *m, lag_stats *out)
{
    const lag_hist *h = &m->hist;
    *out = (lag_stats){
        .count = h->count,
        .min_us = h->min_us,
        .max_us = h->max_us,
        .mean_us = h->count ? h->sum_us / h->count : 0,
        .p50_us = lag_hist_percentile(h, 50),
        .p90_us = lag_hist_percentile(h, 90),
        .p99_us = lag_hist_percentile(h, 99),
        .p999_us = lag_hist_percentile(h, 99.9),
        .window_mean_us = m->win_mean_us,
        .stalls = m->stalls,
    };
}

void lag_reset(lag *m) { memset(&m->hist, 0, sizeof(m->hist)); }
const lag_hist *lag_histogram(const lag *m) { return &m->hist; }
uint64_t lag_window_us(const lag *m) { return m->win_mean_us; }

uint64_t lag_due_ns(const lag *m)
{
    return atomic_load_explicit(&((lag *)m)->due_pub, memory_order_acquire);
}
