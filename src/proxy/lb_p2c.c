/* lb_p2c — power of two choices: draw two distinct candidates at random
 * (in proportion to their effective weights) and send the request to the
 * less loaded, load being requests in flight per unit of weight.
 *
 * Almost as good as least-connections at avoiding a slow backend, and it
 * never herds: least-connections sends every new request to the one
 * emptiest backend until counts change, two random draws spread them.
 * Draws cost O(n) each over the weight array; n is small.
 */
#include "proxy/lb.h"

#include <stdbool.h>
#include <stdlib.h>

static int p2c_build(lb *p, const lb_view *v)
{
    (void)p;
    (void)v;
    return 0;
}

static void p2c_free(lb *p)
{
    (void)p;
}

static bool p2c_eligible(const lb_view *v, const lb_req *req, uint32_t i, int other)
{
    return v->weights[i] != 0 && (int)i != other && !lb_tried(req, v->backends[i]);
}

/* One weighted draw among eligible positions other than `other`; -1 if none. */
static int p2c_draw(lb *p, const lb_view *v, const lb_req *req, int other)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < v->n; i++)
        if (p2c_eligible(v, req, i, other))
            total += v->weights[i];
    if (total == 0)
        return -1;
    uint64_t r = lb_rand(p) % total;
    for (uint32_t i = 0; i < v->n; i++) {
        if (!p2c_eligible(v, req, i, other))
            continue;
        if (r < v->weights[i])
            return (int)i;
        r -= v->weights[i];
    }
    return -1;
}

static backend *p2c_pick(lb *p, const lb_view *v, const lb_req *req)
{
    int a = p2c_draw(p, v, req, -1);
    if (a < 0)
        return NULL;
    int b = p2c_draw(p, v, req, a);
    if (b < 0)
        return v->backends[a];
    uint64_t la = (uint64_t)lb_backend_active(v->backends[a]) + 1;
    uint64_t lb_ = (uint64_t)lb_backend_active(v->backends[b]) + 1;
    /* la / wa <= lb / wb, ties to the first draw */
    return la * v->weights[b] <= lb_ * v->weights[a] ? v->backends[a] : v->backends[b];
}

const lb_ops lb_p2c_ops = {
    .name = "p2c", .build = p2c_build, .pick = p2c_pick, .free = p2c_free,
};
