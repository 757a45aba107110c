/* lb — balancing policies: which backend gets the next request.
 *
 * A policy is a const table of functions in a file of its own (lb_rr.c,
 * lb_leastconn.c, lb_p2c.c, lb_chash.c), in the manner of HAProxy's lb_*.c.
 * A new policy is a new file and a line in lb_policies[] (lb.c).
 *
 * Every policy sees the same view of the backend set: the array of
 * configured backends (config order), each with its configured weight, its
 * effective weight right now (0 when it must not be picked: down, draining,
 * removed; ramping up during slow start), and its requests in flight in this
 * worker. `build` runs when the set's membership or weights change (start,
 * reload); health and drain changes only change effective weights, which
 * `pick` reads each time, so they need no rebuild.
 *
 * A pick never returns a backend in req->tried (the ones a retry already
 * failed on) nor one whose effective weight is 0; NULL when none is left.
 */
#ifndef MYR_PROXY_LB_H
#define MYR_PROXY_LB_H

#include <stddef.h>
#include <stdint.h>

typedef struct backend backend;

#define LB_MAX_TRIED 8   /* attempts per request, the first included */

/* What a pick knows about the request. */
typedef struct lb_req {
    uint64_t        key;                  /* hash of the chash key (lb_hash) */
    backend *const *tried;                /* excluded backends */
    uint32_t        ntried;
} lb_req;

/* The set as policies see it. weights[i] is backends[i]'s effective weight
 * (units of 1/LB_WEIGHT_SCALE of a configured weight unit). */
typedef struct lb_view {
    backend *const *backends;
    const uint32_t *weights;
    uint32_t        n;
} lb_view;

#define LB_WEIGHT_SCALE 16

typedef struct lb lb;

typedef struct lb_ops {
    const char *name;
    /* (Re)builds the policy's private state for view (weights there are the
     * configured ones, scaled). 0 or -ENOMEM (the old state stays valid). */
    int      (*build)(lb *p, const lb_view *v);
    backend *(*pick)(lb *p, const lb_view *v, const lb_req *req);
    void     (*free)(lb *p);
} lb_ops;

/* A policy instance: the table plus its parameters and private state. */
struct lb {
    const lb_ops *ops;
    void         *priv;           /* the policy's state, owned by it */
    uint32_t      balance_factor; /* chash: max load in percent of the mean; 0 = off */
    uint64_t      rng;            /* xorshift state (p2c, tie-breaks) */
};

/* The policy named `name`, or NULL. */
const lb_ops *lb_find(const char *name);
/* "rr, leastconn, p2c, chash": for help and errors. */
const char   *lb_names(void);

/* 64-bit hash of a key (FNV-1a with a murmur3 finaliser: the finaliser
 * spreads short, similar keys such as paths over the whole ring). */
uint64_t lb_hash(const void *p, size_t n);
/* Next pseudo-random number of p's xorshift64* generator. */
uint64_t lb_rand(lb *p);
/* True when b is in req->tried. */
int      lb_tried(const lb_req *req, const backend *b);

/* Requests in flight on a backend (the load the policies compare), and its
 * name "host:port" (what chash places on the ring). Defined in backend.c. */
uint32_t    lb_backend_active(const backend *b);
const char *lb_backend_name(const backend *b);

extern const lb_ops lb_rr_ops, lb_leastconn_ops, lb_p2c_ops, lb_chash_ops;

#endif
