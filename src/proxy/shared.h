/* shared — what the workers of one `myriad balance` share: each backend's
 * admin drain flag, and the counters every worker publishes so that
 * /metrics, served by whichever worker the admin connection reaches, shows
 * the whole service.
 *
 * One region (core/shm), mapped before the supervisor forks, so every
 * worker of every generation sees it at the same address. Layout:
 *
 *   names[]   backend names seen by any worker, each with its drain flag;
 *             a name's position is its index everywhere below
 *   cells[row][name]   one worker's published counters and gauges for
 *             one backend; row = the worker's row in the supervisor's table
 *   base[name], gbase  counters of workers that have exited (folded in
 *             when their row is reused, so totals never go backwards)
 *
 * Writers: names and the drain flags under `lock` (a spin lock held for a
 * few instructions; admin requests and new backends only); a cell only by
 * the worker owning its row; base only by a worker taking over a row,
 * under the lock. Readers use relaxed atomic loads: each value is true of
 * some recent moment, which is what a scrape promises.
 */
#ifndef MYR_PROXY_SHARED_H
#define MYR_PROXY_SHARED_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "proxy/metrics.h"

typedef struct bal_shared bal_shared;
typedef struct backend backend;

#define SHARED_NAMES    256   /* distinct backend names over the service's life */
#define SHARED_ROWS_MAX 256   /* worker processes alive at once that publish */

/* One worker's view of one backend at its last publish. */
typedef struct shared_cell {
    backend_stats st;         /* cumulative counters */
    uint64_t      up;         /* gauges: 1/0 */
    uint64_t      configured; /* 1 when in this worker's backend set */
    uint64_t      active;     /* requests in flight */
    uint64_t      nconns;     /* open connections */
    uint64_t      nidle;      /* idle pooled connections */
} shared_cell;

/* Before fork: a region for `workers` processes (reloads overlap two
 * generations). NULL with errno set on failure. */
bal_shared *shared_create(uint32_t workers);
void        shared_destroy(bal_shared *sh);

/* Takes row `row` for the calling process (folding what an exited owner
 * left there into the totals). False when row is beyond the region; the
 * worker then publishes nothing. */
bool shared_claim_row(bal_shared *sh, uint32_t row);

/* The index of a backend name, registered if new; -1 when the table is
 * full (that backend is then neither shared nor drainable by name). */
int  shared_name_index(bal_shared *sh, const char *name);
void shared_set_draining(bal_shared *sh, int idx, bool on);
bool shared_draining(const bal_shared *sh, int idx);
/* Changes on every drain flag change: workers poll it to apply them. */
uint32_t shared_drain_seq(const bal_shared *sh);

/* The owning worker publishes its numbers. */
void shared_publish_backend(bal_shared *sh, uint32_t row, int idx, const backend *b,
                            bool configured);
void shared_publish_global(bal_shared *sh, uint32_t row, const bal_stats *st,
                           uint32_t connections);

/* Readers (metrics). Totals over every worker that ever published. */
uint32_t    shared_names(const bal_shared *sh);
const char *shared_name(const bal_shared *sh, int idx);
/* Counters summed; gauges summed over live workers (up and configured:
 * the maximum, i.e. "in any live worker"). */
void shared_sum_backend(const bal_shared *sh, int idx, shared_cell *out);
void shared_sum_global(const bal_shared *sh, bal_stats *out, uint64_t *connections,
                       uint32_t *workers);

#endif
