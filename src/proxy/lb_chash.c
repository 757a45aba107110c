/* lb_chash — consistent hashing with bounded loads.
 *
 * The ring: every backend puts CHASH_POINTS points per unit of configured
 * weight on a 64-bit circle, each at lb_hash("name#k"). A request's key (its
 * client address, a header or its path; see session.c) hashes to a spot on
 * the circle and goes to the owner of the first point at or after it. A
 * point's place depends only on its backend's name, so adding or removing
 * one backend of N moves only the keys of the arcs it gains or loses, about
 * 1/N of them, and each backend keeps the keys whose cache it has warmed.
 *
 * Bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018; HAProxy's
 * hash-balance-factor): with a factor c (percent, > 100), a backend may take
 * the request only if its requests in flight, this one counted, stay within
 * ceil(c/100 * (all in flight + 1) * w / W) (w its effective weight, W the
 * sum over eligible backends). A backend over its bound passes the key on to
 * the next point's owner, so a hot key spills to a neighbour instead of
 * overloading its home. The bounds add up to at least the load plus one,
 * so some eligible backend always qualifies.
 *
 * Down, draining and tried backends are skipped on the walk, which moves
 * only their keys. The ring is rebuilt only when membership or weights
 * change (start-up, reload).
 */
#include "proxy/lb.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHASH_POINTS 160   /* points per unit of weight: spread within ~10% */

typedef struct chash_point {
    uint64_t hash;
    uint32_t idx;   /* view position of its backend */
} chash_point;

typedef struct chash_state {
    chash_point *ring;     /* sorted by hash */
    uint32_t     npoints;
    uint32_t     n;        /* view size at build */
    uint8_t     *seen;     /* per position, scratch for a walk */
} chash_state;

static void chash_free(lb *p)
{
    chash_state *st = p->priv;
    if (st) {
        free(st->ring);
        free(st->seen);
        free(st);
    }
    p->priv = NULL;
}

static int point_cmp(const void *a, const void *b)
{
    const chash_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;   /* a total order: stable builds */
}

static int chash_build(lb *p, const lb_view *v)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < v->n; i++)
        total += (uint64_t)(v->weights[i] / LB_WEIGHT_SCALE) * CHASH_POINTS;
    if (total > UINT32_MAX)
        return -ENOMEM;
    chash_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->ring = malloc((total ? total : 1) * sizeof(chash_point));
    st->seen = calloc(v->n ? v->n : 1, 1);
    if (!st->ring || !st->seen) {
        free(st->ring);
        free(st->seen);
        free(st);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < v->n; i++) {
        const char *name = lb_backend_name(v->backends[i]);
        uint32_t pts = v->weights[i] / LB_WEIGHT_SCALE * CHASH_POINTS;
        for (uint32_t k = 0; k < pts; k++) {
            char key[300];
            int len = snprintf(key, sizeof(key), "%s#%u", name, k);
            st->ring[st->npoints++] = (chash_point){ lb_hash(key, (size_t)len), i };
        }
    }
    qsort(st->ring, st->npoints, sizeof(chash_point), point_cmp);
    st->n = v->n;
    chash_free(p);
    p->priv = st;
    return 0;
}

/* First ring position whose hash is >= key (wrapping to 0). */
static uint32_t ring_find(const chash_state *st, uint64_t key)
{
    uint32_t lo = 0, hi = st->npoints;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (st->ring[mid].hash < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == st->npoints ? 0 : lo;
}

/* Whether position i may take one more request under the load bound. */
static bool under_bound(const lb *p, const lb_view *v, uint32_t i, uint64_t load,
                        uint64_t wsum)
{
    if (p->balance_factor == 0 || wsum == 0)
        return true;
    uint64_t num = (uint64_t)p->balance_factor * (load + 1) * v->weights[i];
    uint64_t den = 100 * wsum;
    uint64_t bound = (num + den - 1) / den;
    return (uint64_t)lb_backend_active(v->backends[i]) + 1 <= bound;
}

static backend *chash_pick(lb *p, const lb_view *v, const lb_req *req)
{
    chash_state *st = p->priv;
    if (!st || st->n != v->n || st->npoints == 0)
        return NULL;
    uint64_t load = 0, wsum = 0;
    uint32_t eligible = 0;
    for (uint32_t i = 0; i < v->n; i++) {
        st->seen[i] = 0;
        if (v->weights[i] == 0 || lb_tried(req, v->backends[i]))
            continue;
        load += lb_backend_active(v->backends[i]);
        wsum += v->weights[i];
        eligible++;
    }
    if (eligible == 0)
        return NULL;
    int first = -1;
    uint32_t pos = ring_find(st, req->key), visited = 0;
    for (uint32_t step = 0; step < st->npoints && visited < v->n; step++) {
        uint32_t i = st->ring[(pos + step) % st->npoints].idx;
        if (st->seen[i])
            continue;
        st->seen[i] = 1;
        visited++;
        if (v->weights[i] == 0 || lb_tried(req, v->backends[i]))
            continue;
        if (first < 0)
            first = (int)i;
        if (under_bound(p, v, i, load, wsum))
            return v->backends[i];
    }
    /* a backend with weight below one unit has no points: fall back */
    if (first < 0)
        for (uint32_t i = 0; i < v->n && first < 0; i++)
            if (v->weights[i] && !lb_tried(req, v->backends[i]))
                first = (int)i;
    return first < 0 ? NULL : v->backends[first];
}

const lb_ops lb_chash_ops = {
    .name = "chash", .build = chash_build, .pick = chash_pick, .free = chash_free,
};
