/* l1 — the machine's shared-memory cache: one table that every worker
 * process of a service reads and writes, so a value filled by one worker is
 * a hit in all of them.
 *
 * The supervisor maps it (l1_new, MAP_SHARED|MAP_ANONYMOUS, its own mapping
 * of --cache-size bytes) before it forks; the workers inherit it at the same
 * address. Keys and values are byte strings; every entry has a time to live
 * and a stale window after it (stale-while-revalidate), an optional fill
 * lease (one worker fills a missing key while the others wait or serve the
 * stale value) and user flags (L1_NEGATIVE: a cached "absent").
 *
 * Layout: a header, then `stripes` equal stripes. A stripe is a complete
 * little cache of its own — a robust process-shared mutex, a bucket array,
 * an entry array, and the blocks that hold the bytes — and a key lives in
 * the stripe its hash picks. Nothing of one stripe points into another, so
 * workers only contend on a stripe, and one stripe can be rebuilt alone:
 *
 *   +--------+-----------------------------------------+----------+---
 *   | header | stripe 0                                | stripe 1 | ...
 *   |        | lock, lists | buckets | entries | next[] | blocks  |
 *   +--------+-----------------------------------------+----------+---
 *
 * Memory. A stripe's bytes are cut once into 128-byte entries, each with
 * room for the first 64 bytes of its item (key then value), and as many
 * 64-byte blocks. An item takes one entry and a chain of
 * ceil((klen + vlen - 64) / 64) blocks from the stripe's free list; any
 * free block serves any item, so there is no external fragmentation and no
 * size class can starve another: the waste is under one block per item plus
 * the 4-byte link of each block. When the blocks or entries run out, CLOCK
 * (second chance) evicts: the hand sweeps the entries, frees expired ones,
 * clears the reference bit of recently read ones and evicts the first one
 * whose bit is clear — at most two sweeps, so a set always terminates.
 *
 * Crashes. A worker may die (SIGKILL, a crash) while it holds a stripe's
 * lock, in the middle of changing the stripe. The locks are robust: the
 * next locker gets EOWNERDEAD. The invariant that makes this safe: a
 * stripe's structure (lists, buckets, entries, blocks, counters) is
 * changed only under its lock, and everything it refers to lies inside the
 * stripe. So the next locker may throw the whole stripe away and rebuild it
 * empty (stripe_reset) before marking the lock consistent: the stripe's
 * entries are lost, which a cache may always do, and their fill leases with
 * them, which costs at most a duplicate fill. No other stripe is touched.
 *
 * Generations. The header holds a generation number; every entry records
 * the one it was stored under and counts as absent once it differs.
 * l1_flush bumps it: every entry of the machine is dropped in O(1) (the
 * memory is taken back lazily, by lookups and the CLOCK hand). The cache
 * layer calls it when its Redis invalidation stream restarts.
 *
 * Times are CLOCK_MONOTONIC milliseconds, the same clock in every process
 * of the machine; callers pass `now` (their loop's cached clock).
 *
 * Threads: any process, any thread; each call takes one stripe lock for
 * a few hundred nanoseconds (a copy of the value included).
 */
#ifndef MYR_CACHE_L1_H
#define MYR_CACHE_L1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define L1_BLOCK       64u          /* payload bytes of a block */
#define L1_MAX_KEY     250u         /* bytes */
#define L1_MAX_VALUE   (1u << 20)   /* bytes, and at most a quarter of a stripe */

typedef struct l1_cache l1_cache;

/* User flags stored with an entry. */
enum { L1_NEGATIVE = 1u << 0 };   /* the source said "absent": a tombstone */

enum l1_state {
    L1_MISS,    /* absent, expired past its stale window, or of an old generation */
    L1_FRESH,   /* within its time to live */
    L1_STALE,   /* past its time to live, within its stale window */
};

enum l1_lease {
    L1_LEASE_NONE,    /* not asked for, or not needed (a fresh hit) */
    L1_LEASE_TAKEN,   /* the caller holds the key's fill lease: fill it, then
                         l1_set or l1_release */
    L1_LEASE_BUSY,    /* another filler holds it until lease_until */
};

/* What a store is conditional on: taken by l1_get, checked by l1_set. A
 * delete of the key (or more deletes in its stripe than the stripe
 * remembers, 32), a rebuild of the stripe or l1_flush in between voids it:
 * the value being stored may predate the change that caused the delete. */
typedef struct l1_ticket {
    uint32_t epoch;   /* the stripe's delete count */
    uint32_t gen;     /* the cache's generation */
} l1_ticket;

/* Events counted by one call, for the caller's metrics (added to, never
 * reset: pass the same struct to many calls). */
typedef struct l1_stats {
    uint64_t hits, stale, misses;  /* l1_get outcomes (negatives are hits) */
    uint64_t evictions;            /* live entries pushed out for room */
    uint64_t expirations;          /* dead entries (time or generation) taken back */
    uint64_t recoveries;           /* stripes rebuilt after their lock holder died */
} l1_stats;

/* The value is copied out, under the lock, into memory from alloc(arg, n)
 * (n >= 1); NULL from alloc makes l1_get fail with -ENOMEM. */
typedef void *(*l1_alloc_fn)(void *arg, size_t n);

typedef struct l1_result {
    enum l1_state state;
    unsigned      flags;         /* the entry's user flags (not on a miss) */
    void         *value;         /* from alloc; NULL for a miss or len 0 */
    size_t        len;
    uint64_t      fresh_until;   /* ms (fresh and stale entries) */
    enum l1_lease lease;
    uint64_t      lease_until;   /* ms, when lease is TAKEN or BUSY */
    l1_ticket     ticket;
} l1_result;

/* Smallest --cache-size that l1_new accepts for `stripes` stripes. */
size_t l1_min_size(uint32_t stripes);
/* Maps a cache of about `size` bytes (rounded down to whole stripes) in
 * `stripes` stripes (a power of two, 1..4096). NULL with errno EINVAL (bad
 * arguments, too small) or ENOMEM. Call before fork. */
l1_cache *l1_new(size_t size, uint32_t stripes);
/* Unmaps it in the calling process. */
void l1_free(l1_cache *c);

/* Looks key up at time now. With lease_ms > 0 the caller also asks for the
 * key's fill lease when the value is missing or stale: it gets it
 * (TAKEN, valid lease_ms, under the name `owner`) unless another owner
 * holds a lease that has not expired (BUSY). A fresh hit sets the entry's
 * reference bit. Returns 0, -EINVAL (empty or over-long key) or -ENOMEM
 * (alloc failed; *out is a miss). */
int l1_get(l1_cache *c, const void *key, size_t klen, uint64_t now, uint64_t lease_ms,
           uint64_t owner, l1_alloc_fn alloc, void *arg, l1_result *out, l1_stats *st);

/* Stores key = value (copied) with user flags, fresh for ttl_ms and
 * servable stale for stale_ms more, under the current generation; clears
 * the key's lease. With a ticket, stores only if the ticket still holds
 * (else the key's lease is released and -ESTALE returned). Returns 0,
 * -EINVAL (bad key, ttl_ms 0), -E2BIG (item over the limit: not stored,
 * lease released), -ESTALE, or -ENOTRECOVERABLE (the lock could not be
 * taken: not stored). Evicts as needed. */
int l1_set(l1_cache *c, const void *key, size_t klen, const void *value, size_t vlen,
           unsigned flags, uint64_t ttl_ms, uint64_t stale_ms, uint64_t now,
           const l1_ticket *ticket, l1_stats *st);

/* Removes key (value and lease). Returns 1 if it was there, else 0. */
int l1_del(l1_cache *c, const void *key, size_t klen, l1_stats *st);

/* Gives up the lease `owner` holds on key (a failed fill), so the next
 * caller may fill at once. */
void l1_release(l1_cache *c, const void *key, size_t klen, uint64_t owner);

/* Drops every entry (a new generation). O(1). */
void l1_flush(l1_cache *c);
uint32_t l1_generation(const l1_cache *c);

/* Whole-cache figures, read without locks (each a recent true value). */
typedef struct l1_info {
    uint64_t entries;        /* entries in use, leases included */
    uint64_t bytes;          /* key + value bytes stored */
    uint64_t capacity;       /* block bytes in all stripes */
    uint64_t max_entries;    /* entry slots in all stripes */
    uint32_t stripes;
    size_t   max_item;       /* klen + vlen limit */
} l1_info;
void l1_info_get(const l1_cache *c, l1_info *out);

/* One process of the machine reports the whole-cache gauges (entries,
 * bytes) so that summing workers does not count them N times: returns true
 * for the process that holds the role, taking it over when its holder
 * (a pid) is gone. Call about once a second. */
bool l1_reporter(l1_cache *c, pid_t self);

/* Checks every stripe's structure (lists, chains, counters); tests. 0 or
 * -EUCLEAN naming nothing: a broken invariant. Takes each lock. */
int l1_check(l1_cache *c);

#endif
