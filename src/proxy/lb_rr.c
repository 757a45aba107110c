/* lb_rr — smooth weighted round-robin, as nginx does it.
 *
 * Each pick adds every candidate's effective weight to its running score,
 * takes the candidate with the highest score, and subtracts the total of
 * the weights added from the winner. Over any window of W picks (W the sum
 * of weights) each backend is picked in proportion to its weight, and the
 * picks are interleaved rather than bunched: weights 5,1,1 give
 * a a b a c a a, not a a a a a b c.
 *
 * Effective weights change with slow start and health; the scores adapt
 * without a rebuild. A rebuild (membership changed) resets the scores.
 * State: one score per backend position.
 */
#include "proxy/lb.h"

#include <errno.h>
#include <stdlib.h>

typedef struct rr_state {
    int64_t *score;   /* per view position */
    uint32_t n;
} rr_state;

static void rr_free(lb *p)
{
    rr_state *st = p->priv;
    if (st) {
        free(st->score);
        free(st);
    }
    p->priv = NULL;
}

static int rr_build(lb *p, const lb_view *v)
{
    rr_state *st = calloc(1, sizeof(*st));
    if (!st || !(st->score = calloc(v->n ? v->n : 1, sizeof(int64_t)))) {
        free(st);
        return -ENOMEM;
    }
    st->n = v->n;
    rr_free(p);
    p->priv = st;
    return 0;
}

static backend *rr_pick(lb *p, const lb_view *v, const lb_req *req)
{
    rr_state *st = p->priv;
    if (!st || st->n != v->n)
        return NULL;
    int64_t total = 0;
    int best = -1;
    for (uint32_t i = 0; i < v->n; i++) {
        if (v->weights[i] == 0 || lb_tried(req, v->backends[i]))
            continue;
        st->score[i] += v->weights[i];
        total += v->weights[i];
        if (best < 0 || st->score[i] > st->score[best])
            best = (int)i;
    }
    if (best < 0)
        return NULL;
    st->score[best] -= total;
    return v->backends[best];
}

const lb_ops lb_rr_ops = {
    .name = "rr", .build = rr_build, .pick = rr_pick, .free = rr_free,
};
