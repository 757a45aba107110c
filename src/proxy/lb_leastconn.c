/* lb_leastconn — the backend with the fewest requests in flight per unit
 * of weight.
 *
 * Load is (active + 1) / weight, the +1 counting the request being placed,
 * so an idle heavy backend beats an idle light one. Loads are compared by
 * cross-multiplication, without division. Ties go round-robin: the scan
 * starts one position later on each pick, so equal backends share a
 * trickle of traffic instead of the first one taking it all.
 *
 * Counts are per worker: each worker balances its own requests, as
 * HAProxy's processes did with nbproc.
 */
#include "proxy/lb.h"

#include <stdlib.h>

static int lc_build(lb *p, const lb_view *v)
{
    (void)p;
    (void)v;
    return 0;
}

static void lc_free(lb *p)
{
    (void)p;
}

static backend *lc_pick(lb *p, const lb_view *v, const lb_req *req)
{
    if (v->n == 0)
        return NULL;
    uint32_t start = (uint32_t)(lb_rand(p) % v->n);
    int best = -1;
    uint64_t best_load = 0, best_w = 1;
    for (uint32_t k = 0; k < v->n; k++) {
        uint32_t i = (start + k) % v->n;
        uint64_t w = v->weights[i];
        if (w == 0 || lb_tried(req, v->backends[i]))
            continue;
        uint64_t load = (uint64_t)lb_backend_active(v->backends[i]) + 1;
        /* load / w < best_load / best_w */
        if (best < 0 || load * best_w < best_load * w) {
            best = (int)i;
            best_load = load;
            best_w = w;
        }
    }
    return best < 0 ? NULL : v->backends[best];
}

const lb_ops lb_leastconn_ops = {
    .name = "leastconn", .build = lc_build, .pick = lc_pick, .free = lc_free,
};
