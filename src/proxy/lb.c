/* lb — the policy table and what every policy shares: hashing, random
 * numbers, the exclusion test. See lb.h.
 */
#include "proxy/lb.h"

#include <string.h>

static const lb_ops *const lb_policies[] = {
    &lb_rr_ops, &lb_leastconn_ops, &lb_p2c_ops, &lb_chash_ops,
};
#define NPOLICIES (sizeof(lb_policies) / sizeof(lb_policies[0]))

const lb_ops *lb_find(const char *name)
{
    for (size_t i = 0; i < NPOLICIES; i++)
        if (strcmp(lb_policies[i]->name, name) == 0)
            return lb_policies[i];
    return NULL;
}

const char *lb_names(void)
{
    return "rr, leastconn, p2c, chash";
}

uint64_t lb_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a 64 */
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;                          /* murmur3 fmix64 */
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

uint64_t lb_rand(lb *p)
{
    uint64_t x = p->rng ? p->rng : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

int lb_tried(const lb_req *req, const backend *b)
{
    for (uint32_t i = 0; i < req->ntried; i++)
        if (req->tried[i] == b)
            return 1;
    return 0;
}
