/* metrics — the balancer's counters in Prometheus text format.
 *
 * Counters live where they are counted (each backend's backend_stats, the
 * balancer's bal_stats) as plain integers of one worker: no atomics, no
 * locks. metrics_render() writes them all, for GET /metrics on the admin
 * port. A histogram is a fixed array of buckets (latency in nanoseconds,
 * bounds below), rendered cumulatively as Prometheus expects.
 */
#ifndef MYR_PROXY_METRICS_H
#define MYR_PROXY_METRICS_H

#include <stdint.h>

#include "core/buf.h"

#define HIST_BUCKETS 14   /* finite bounds; one more bucket is +Inf */

typedef struct histogram {
    uint64_t counts[HIST_BUCKETS + 1];   /* per bucket, not cumulative */
    uint64_t sum_ns;
    uint64_t count;
} histogram;

void histogram_observe(histogram *h, uint64_t ns);

/* Why a request failed on a backend (the `kind` label of errors_total). */
enum backend_error {
    BERR_CONNECT,     /* refused, unreachable, connect timeout */
    BERR_TIMEOUT,     /* no response (or no progress) within backend-timeout */
    BERR_RESET,       /* closed or reset before the response was complete */
    BERR_MALFORMED,   /* a response the balancer refuses to relay */
    BERR_COUNT,
};

typedef struct backend_stats {
    uint64_t  requests;             /* attempts sent (or tried) here */
    uint64_t  responses[5];         /* complete responses by class 1xx..5xx */
    uint64_t  errors[BERR_COUNT];
    uint64_t  retries;              /* attempts here that were retried elsewhere */
    uint64_t  ejections;            /* times passive checks took it out */
    uint64_t  checks_failed;        /* active health checks that failed */
    histogram latency;              /* request sent -> response head received */
} backend_stats;

typedef struct bal_stats {
    uint64_t requests;              /* client requests received (heads parsed) */
    uint64_t retries;               /* attempts after the first */
    uint64_t retries_denied;        /* retries the budget refused */
    uint64_t no_backend;            /* 503: no backend could take the request */
    uint64_t client_errors;         /* requests rejected as malformed (4xx) */
    uint64_t accepted;              /* client connections accepted */
} bal_stats;

struct balancer;

/* Appends the exposition text of every metric. 0 or -ENOMEM. */
int metrics_render(struct balancer *b, buf *out);

#endif
