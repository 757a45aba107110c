/* cache — cache-aside (myr_cached, myr_cache_del: the public API is in
 * myriad.h) over two tiers: the machine's shared-memory L1 (cache/l1.h)
 * and Redis (data/redis.h).
 *
 *   serve_prefork (supervisor, before fork)   cache_prefork: maps the L1
 *   a handler's first myr_cached (worker)     the worker's state: flights,
 *                                             metrics, the Redis tracker
 *
 * Threads: everything but cache_prefork runs on the worker's loop thread.
 */
#ifndef MYR_CACHE_CACHE_H
#define MYR_CACHE_CACHE_H

#include <stddef.h>

#include "core/config.h"

struct l1_cache;

/* Supervisor (or the single in-process worker), once, before any worker
 * exists: maps the L1 of cfg->cache_size bytes (none when 0). 0, or -1
 * with a one-line reason in err. The L1 lives until the process exits and
 * is kept across reloads. */
int cache_prefork(const config *cfg, char *err, size_t errlen);

/* The machine's L1, or NULL (--cache-size 0, or before cache_prefork). */
struct l1_cache *cache_l1(void);

#endif
