/* l1 — see l1.h for the design (stripes, blocks, CLOCK, robust locks,
 * generations). This file: the geometry, a stripe's lists and chains, and
 * the operations.
 *
 * An entry is two cache lines: its fields, then the first L1_INLINE bytes
 * of its item (key bytes, then value bytes); the rest of the item, if any,
 * is a chain of blocks. Small items (a key and a number) thus cost one
 * bucket read and one entry read, both lines adjacent.
 *
 * Inside a stripe, every link is an index + 1 (0 = none), so the stripe is
 * position-independent and a rebuild needs only the geometry, which lives
 * in the header and is never written after l1_new:
 *
 *   buckets[b]     first entry of bucket b's chain
 *   entry.next     next entry of the same bucket, or of the free list
 *   entry.block    first block of the item's overflow (bytes past L1_INLINE)
 *   next[k]        the block after block k in its item, or in the free list
 *
 * Entries and blocks are handed out from the free lists first, then from a
 * high-water mark (entries [0, top) have been used since the last rebuild),
 * so creating or rebuilding a stripe touches only its buckets, never the
 * megabytes behind them, and the CLOCK hand sweeps only [0, top).
 *
 * Lock order: one stripe lock at a time, never nested.
 */
#include "cache/l1.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define L1_MAGIC      0x6d79726961644c31ull   /* "myriadL1" */
#define MIN_ENTRIES   16u                     /* per stripe */
#define DEL_RING      32u                     /* deletes remembered per stripe (tickets) */
#define L1_INLINE     64u                     /* item bytes kept in the entry itself */
#define LINE          64u

enum {                  /* l1_entry.bits */
    E_USED  = 1u << 0,  /* in a bucket chain (else on the free list) */
    E_VALUE = 1u << 1,  /* holds a value (else a lease placeholder: key only) */
    E_REF   = 1u << 2,  /* CLOCK: read since the hand last passed */
};

typedef struct l1_entry {
    uint64_t hash;          /* the key's hash (all 64 bits) */
    uint64_t fresh_until;   /* ms: fresh before this */
    uint64_t stale_until;   /* ms: servable stale before this (>= fresh_until) */
    uint64_t lease_until;   /* ms: a fill lease is held before this; 0 = none */
    uint64_t lease_owner;   /* who holds the lease (l1_get's owner) */
    uint32_t next;          /* bucket chain or free list: entry index + 1 */
    uint32_t block;         /* first block of the item: index + 1 */
    uint32_t vlen;          /* value bytes */
    uint32_t gen;           /* the cache's generation when stored */
    uint16_t klen;          /* key bytes */
    uint8_t  bits;          /* E_* */
    uint8_t  flags;         /* user flags (L1_NEGATIVE) */
    uint8_t  pad[4];
    uint8_t  inl[L1_INLINE];/* the item's first bytes */
} l1_entry;

static_assert(sizeof(l1_entry) == 2 * LINE, "an entry is two cache lines");

/* A stripe's header. Everything in it but the lock is guarded by the lock;
 * used and bytes are also read without it (l1_info_get). */
typedef struct l1_stripe {
    pthread_mutex_t  lock;          /* robust, process-shared */
    uint32_t         free_entry;    /* free list head: entry index + 1 */
    uint32_t         free_block;    /* free list head: block index + 1 */
    uint32_t         nfree_entries; /* on the list or above top_entry */
    uint32_t         nfree_blocks;  /* on the list or above top_block */
    uint32_t         top_entry;     /* entries [0, top) have been handed out */
    uint32_t         top_block;     /* blocks [0, top) have been handed out */
    uint32_t         hand;          /* CLOCK hand: next entry index to look at, < top_entry */
    uint32_t         epoch;         /* deletes so far (+ DEL_RING + 1 per rebuild) */
    uint64_t         deleted[DEL_RING]; /* key hashes of the last deletes, at epoch % DEL_RING */
    _Atomic uint64_t used;          /* entries in use */
    _Atomic uint64_t bytes;         /* key + value bytes of the entries in use */
} l1_stripe;

/* The header: written by l1_new only, except gen and reporter. */
struct l1_cache {
    uint64_t         magic;
    size_t           map_size;      /* bytes mapped */
    size_t           stripe_bytes;  /* bytes per stripe, header included */
    uint32_t         nstripes;      /* a power of two */
    uint32_t         nbuckets;      /* per stripe, a power of two */
    uint32_t         nentries;      /* per stripe */
    uint32_t         nblocks;       /* per stripe: as many as entries */
    uint32_t         off_buckets, off_entries, off_next, off_blocks; /* in a stripe */
    uint32_t         max_item;      /* klen + vlen limit */
    _Atomic uint32_t gen;           /* generation: bumped by l1_flush */
    _Atomic int32_t  reporter;      /* pid reporting the gauges; 0 = nobody */
};

static size_t up(size_t n, size_t to) { return (n + to - 1) / to * to; }
static size_t header_bytes(void) { return up(sizeof(struct l1_cache), LINE); }
static size_t stripe_header_bytes(void) { return up(sizeof(l1_stripe), LINE); }

/* ---- geometry --------------------------------------------------------------------- */

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

/* Per entry: <= 8 bytes of buckets (a power of two <= 2 entries), the
 * entry, one block and its link; plus three arrays' rounding. */
#define BYTES_PER_ENTRY (8u + sizeof(l1_entry) + L1_BLOCK + 4u)

static uint32_t entries_for(size_t stripe_bytes)
{
    size_t fixed = stripe_header_bytes() + 3 * LINE;
    if (stripe_bytes <= fixed)
        return 0;
    size_t n = (stripe_bytes - fixed) / BYTES_PER_ENTRY;
    return n > (1u << 26) ? 1u << 26 : (uint32_t)n;
}

/* Fills the header's geometry for stripes of stripe_bytes. */
static void geometry(struct l1_cache *c, size_t stripe_bytes)
{
    c->stripe_bytes = stripe_bytes;
    c->nentries = entries_for(stripe_bytes);
    c->nblocks = c->nentries;
    c->nbuckets = pow2_at_least(c->nentries);
    size_t off = stripe_header_bytes();
    c->off_buckets = (uint32_t)off;
    off += up((size_t)c->nbuckets * 4, LINE);
    c->off_entries = (uint32_t)off;
    off += (size_t)c->nentries * sizeof(l1_entry);
    c->off_next = (uint32_t)off;
    off += up((size_t)c->nblocks * 4, LINE);
    c->off_blocks = (uint32_t)off;
    off += (size_t)c->nblocks * L1_BLOCK;
    assert(off <= stripe_bytes);
    size_t quarter = (size_t)c->nblocks * L1_BLOCK / 4;
    size_t limit = L1_MAX_KEY + L1_MAX_VALUE;
    c->max_item = (uint32_t)(quarter < limit ? quarter : limit);
}

size_t l1_min_size(uint32_t stripes)
{
    size_t stripe = stripe_header_bytes() + 3 * LINE + MIN_ENTRIES * BYTES_PER_ENTRY;
    return header_bytes() + (size_t)stripes * up(stripe, LINE);
}

static l1_stripe *stripe_at(const l1_cache *c, uint32_t i)
{
    return (l1_stripe *)((char *)c + header_bytes() + (size_t)i * c->stripe_bytes);
}
static uint32_t *buckets_of(const l1_cache *c, l1_stripe *s)
{
    return (uint32_t *)((char *)s + c->off_buckets);
}
static l1_entry *entries_of(const l1_cache *c, l1_stripe *s)
{
    return (l1_entry *)((char *)s + c->off_entries);
}
static uint32_t *next_of(const l1_cache *c, l1_stripe *s)
{
    return (uint32_t *)((char *)s + c->off_next);
}
static uint8_t *block_at(const l1_cache *c, l1_stripe *s, uint32_t k)
{
    return (uint8_t *)s + c->off_blocks + (size_t)k * L1_BLOCK;
}

/* FNV-1a, then a splitmix64 finalizer so that the low bits (the bucket)
 * and the high bits (the stripe) are both well mixed. */
static uint64_t hash_key(const void *key, size_t n)
{
    const uint8_t *p = key;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

static l1_stripe *stripe_of(const l1_cache *c, uint64_t h)
{
    return stripe_at(c, (uint32_t)(h >> 40) & (c->nstripes - 1));
}

/* ---- a stripe's lists ---------------------------------------------------------------- */

/* Rebuilds the stripe empty from the geometry alone: at creation, and when
 * its lock's holder died in the middle of a change (see l1.h). */
static void stripe_reset(const l1_cache *c, l1_stripe *s)
{
    memset(buckets_of(c, s), 0, (size_t)c->nbuckets * 4);
    s->free_entry = 0;
    s->free_block = 0;
    s->nfree_entries = c->nentries;
    s->nfree_blocks = c->nblocks;
    s->top_entry = 0;
    s->top_block = 0;
    s->hand = 0;
    s->epoch += DEL_RING + 1;   /* voids every ticket taken before */
    atomic_store_explicit(&s->used, 0, memory_order_relaxed);
    atomic_store_explicit(&s->bytes, 0, memory_order_relaxed);
}

/* 0, or -ENOTRECOVERABLE when the lock is beyond repair (it never is: we
 * always make it consistent). */
static int stripe_lock(const l1_cache *c, l1_stripe *s, l1_stats *st)
{
    int rc = pthread_mutex_lock(&s->lock);
    if (rc == EOWNERDEAD) {   /* the holder died, maybe halfway through a change */
        stripe_reset(c, s);
        pthread_mutex_consistent(&s->lock);
        if (st)
            st->recoveries++;
        return 0;
    }
    return rc ? -ENOTRECOVERABLE : 0;
}

static void stripe_unlock(l1_stripe *s)
{
    pthread_mutex_unlock(&s->lock);
}

/* Blocks an item of `bytes` needs beyond its entry's inline bytes. */
static uint32_t blocks_for(size_t bytes)
{
    return bytes <= L1_INLINE ? 0 : (uint32_t)((bytes - L1_INLINE + L1_BLOCK - 1) / L1_BLOCK);
}

/* Takes n blocks (0 or more) as one chain: from the free list, then above
 * the high-water mark. Returns the first block's index + 1 (0 for none).
 * Caller checked nfree_blocks. */
static uint32_t chain_take(const l1_cache *c, l1_stripe *s, uint32_t n)
{
    uint32_t *next = next_of(c, s);
    uint32_t first = 0, *link = &first;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = s->free_block;
        if (k)
            s->free_block = next[k - 1];
        else
            k = ++s->top_block;
        *link = k;
        link = &next[k - 1];
    }
    *link = 0;
    s->nfree_blocks -= n;
    return first;
}

static void chain_give(const l1_cache *c, l1_stripe *s, uint32_t first)
{
    if (!first)
        return;
    uint32_t *next = next_of(c, s);
    uint32_t last = first, n = 1;
    while (next[last - 1]) {
        last = next[last - 1];
        n++;
    }
    next[last - 1] = s->free_block;
    s->free_block = first;
    s->nfree_blocks += n;
}

/* Walks the item bytes [off, off + n) of entry x (inline part, then its
 * blocks), calling op on each piece; stops early when op returns false.
 * Returns op's last answer. */
typedef bool (*piece_fn)(uint8_t *blk, void *mem, size_t n);

static bool chain_walk(const l1_cache *c, l1_stripe *s, l1_entry *x, size_t off,
                       uint8_t *mem, size_t n, piece_fn op)
{
    if (!n)
        return true;   /* mem may be NULL */
    if (off < L1_INLINE) {
        size_t take = L1_INLINE - off < n ? L1_INLINE - off : n;
        if (take && !op(x->inl + off, mem, take))
            return false;
        mem += take;
        n -= take;
        off = L1_INLINE;
    }
    if (!n)
        return true;
    off -= L1_INLINE;
    uint32_t *next = next_of(c, s);
    uint32_t k = x->block;
    while (off >= L1_BLOCK) {
        k = next[k - 1];
        off -= L1_BLOCK;
    }
    while (n) {
        size_t take = L1_BLOCK - off < n ? L1_BLOCK - off : n;
        if (!op(block_at(c, s, k - 1) + off, mem, take))
            return false;
        mem += take;
        n -= take;
        off = 0;
        k = next[k - 1];
    }
    return true;
}

static bool piece_write(uint8_t *blk, void *mem, size_t n) { memcpy(blk, mem, n); return true; }
static bool piece_read(uint8_t *blk, void *mem, size_t n) { memcpy(mem, blk, n); return true; }
static bool piece_equal(uint8_t *blk, void *mem, size_t n) { return memcmp(blk, mem, n) == 0; }

/* ---- entries ----------------------------------------------------------------------- */

static bool lease_live(const l1_entry *e, uint64_t now) { return e->lease_until > now; }

/* Dead: of an old generation, or neither servable nor leased. */
static bool entry_dead(const l1_entry *e, uint64_t now, uint32_t gen)
{
    if (e->gen != gen)
        return true;
    if (lease_live(e, now))
        return false;
    return !(e->bits & E_VALUE) || now >= e->stale_until;
}

/* The entry index of key, or -1. */
static int64_t entry_find(const l1_cache *c, l1_stripe *s, uint64_t h, const void *key,
                          size_t klen)
{
    l1_entry *e = entries_of(c, s);
    for (uint32_t i = buckets_of(c, s)[h & (c->nbuckets - 1)]; i; i = e[i - 1].next) {
        l1_entry *x = &e[i - 1];
        if (x->hash == h && x->klen == klen &&
            chain_walk(c, s, x, 0, (uint8_t *)key, klen, piece_equal))
            return (int64_t)i - 1;
    }
    return -1;
}

/* Unlinks entry i from its bucket, gives its blocks and itself back. */
static void entry_drop(const l1_cache *c, l1_stripe *s, uint32_t i)
{
    l1_entry *e = entries_of(c, s), *x = &e[i];
    uint32_t *link = &buckets_of(c, s)[x->hash & (c->nbuckets - 1)];
    while (*link && *link != i + 1)
        link = &e[*link - 1].next;
    if (*link)
        *link = x->next;
    chain_give(c, s, x->block);
    atomic_store_explicit(&s->used, atomic_load_explicit(&s->used, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    atomic_store_explicit(&s->bytes,
                          atomic_load_explicit(&s->bytes, memory_order_relaxed) - x->klen -
                              x->vlen,
                          memory_order_relaxed);
    x->bits = 0;
    x->next = s->free_entry;
    s->free_entry = i + 1;
    s->nfree_entries++;
}

/* One step of the CLOCK hand: reclaims a dead entry, gives a recently read
 * one a second chance, or evicts. */
static void clock_step(const l1_cache *c, l1_stripe *s, uint64_t now, uint32_t gen,
                       l1_stats *st)
{
    uint32_t i = s->hand;
    if (i >= s->top_entry)
        i = 0;   /* no entry handed out: nothing to find */
    s->hand = i + 1 < s->top_entry ? i + 1 : 0;
    if (!s->top_entry)
        return;
    l1_entry *x = &entries_of(c, s)[i];
    if (!(x->bits & E_USED))
        return;
    if (entry_dead(x, now, gen)) {
        entry_drop(c, s, i);
        if (st)
            st->expirations++;
    } else if (x->bits & E_REF) {
        x->bits &= (uint8_t)~E_REF;
    } else {
        entry_drop(c, s, i);
        if (st)
            st->evictions++;
    }
}

/* A new entry for key with room for vlen value bytes, linked into its
 * bucket; evicts until there is room. Index, or -1 if the stripe cannot
 * hold it (never, for an item within max_item). */
static int64_t entry_new(const l1_cache *c, l1_stripe *s, uint64_t h, const void *key,
                         size_t klen, size_t vlen, uint64_t now, uint32_t gen, l1_stats *st)
{
    uint32_t need = blocks_for(klen + vlen);
    /* two sweeps clear every reference bit and then evict everything */
    for (uint32_t steps = 0; s->nfree_blocks < need || !s->nfree_entries; steps++) {
        if (steps > 2 * c->nentries + 1)
            return -1;
        clock_step(c, s, now, gen, st);
    }
    uint32_t i;
    l1_entry *e = entries_of(c, s);
    if (s->free_entry) {
        i = s->free_entry - 1;
        s->free_entry = e[i].next;
    } else {
        i = s->top_entry++;
    }
    s->nfree_entries--;
    l1_entry *x = &e[i];
    uint32_t *bucket = &buckets_of(c, s)[h & (c->nbuckets - 1)];
    memset(x, 0, offsetof(l1_entry, inl));   /* the inline bytes are written below */
    x->hash = h;
    x->next = *bucket;
    x->block = chain_take(c, s, need);
    x->gen = gen;
    x->klen = (uint16_t)klen;
    x->bits = E_USED;
    *bucket = i + 1;
    chain_walk(c, s, x, 0, (uint8_t *)key, klen, piece_write);
    atomic_store_explicit(&s->used, atomic_load_explicit(&s->used, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&s->bytes,
                          atomic_load_explicit(&s->bytes, memory_order_relaxed) + klen,
                          memory_order_relaxed);
    return i;
}

static void lease_take(l1_entry *x, uint64_t now, uint64_t lease_ms, uint64_t owner,
                       l1_result *out)
{
    x->lease_until = now + lease_ms;
    x->lease_owner = owner;
    out->lease = L1_LEASE_TAKEN;
    out->lease_until = x->lease_until;
}

/* The lease part of a lookup that found no servable value (x may be a
 * placeholder, or NULL). */
static void lease_for_miss(const l1_cache *c, l1_stripe *s, l1_entry *x, uint64_t h,
                           const void *key, size_t klen, uint64_t now, uint64_t lease_ms,
                           uint64_t owner, uint32_t gen, l1_result *out, l1_stats *st)
{
    if (x && lease_live(x, now) && x->lease_owner != owner) {
        out->lease = L1_LEASE_BUSY;
        out->lease_until = x->lease_until;
        return;
    }
    if (!x) {
        int64_t i = entry_new(c, s, h, key, klen, 0, now, gen, st);
        if (i < 0)
            return;   /* no lease: the caller fills without one */
        x = &entries_of(c, s)[i];
    }
    lease_take(x, now, lease_ms, owner, out);
}

/* ---- operations ------------------------------------------------------------------------ */

int l1_get(l1_cache *c, const void *key, size_t klen, uint64_t now, uint64_t lease_ms,
           uint64_t owner, l1_alloc_fn alloc, void *arg, l1_result *out, l1_stats *st)
{
    *out = (l1_result){ .state = L1_MISS };
    if (!klen || klen > L1_MAX_KEY)
        return -EINVAL;
    uint64_t h = hash_key(key, klen);
    l1_stripe *s = stripe_of(c, h);
    if (stripe_lock(c, s, st) < 0) {
        if (st)
            st->misses++;
        return 0;
    }
    uint32_t gen = atomic_load_explicit(&c->gen, memory_order_acquire);
    int64_t i = entry_find(c, s, h, key, klen);
    l1_entry *x = i >= 0 ? &entries_of(c, s)[i] : NULL;
    if (x && entry_dead(x, now, gen)) {
        entry_drop(c, s, (uint32_t)i);
        if (st)
            st->expirations++;
        x = NULL;
    }
    int rc = 0;
    if (x && (x->bits & E_VALUE) && now < x->stale_until) {
        if (x->vlen) {
            out->value = alloc(arg, x->vlen);
            if (!out->value) {
                rc = -ENOMEM;
                goto unlock;
            }
            chain_walk(c, s, x, x->klen, out->value, x->vlen, piece_read);
        }
        out->len = x->vlen;
        out->flags = x->flags;
        out->fresh_until = x->fresh_until;
        out->state = now < x->fresh_until ? L1_FRESH : L1_STALE;
        x->bits |= E_REF;
        if (st)
            *(out->state == L1_FRESH ? &st->hits : &st->stale) += 1;
        if (out->state == L1_STALE && lease_ms) {
            if (lease_live(x, now) && x->lease_owner != owner) {
                out->lease = L1_LEASE_BUSY;
                out->lease_until = x->lease_until;
            } else {
                lease_take(x, now, lease_ms, owner, out);
            }
        }
    } else {
        if (st)
            st->misses++;
        if (lease_ms)
            lease_for_miss(c, s, x, h, key, klen, now, lease_ms, owner, gen, out, st);
    }
    out->ticket = (l1_ticket){ .epoch = s->epoch, .gen = gen };
unlock:
    stripe_unlock(s);
    return rc;
}

/* Does a ticket for the key hashed h still hold? Only if no delete of that
 * key happened since it was taken: the stripe remembers the last DEL_RING
 * deletes; past that, every older ticket is void. */
static bool ticket_holds(const l1_stripe *s, const l1_ticket *t, uint32_t gen, uint64_t h)
{
    uint32_t n = s->epoch - t->epoch;
    if (t->gen != gen || n > DEL_RING)
        return false;
    for (uint32_t e = t->epoch; e != s->epoch; e++)
        if (s->deleted[e % DEL_RING] == h)
            return false;
    return true;
}

/* Lock held: clears the key's lease; a placeholder goes. */
static void lease_clear(const l1_cache *c, l1_stripe *s, int64_t i, const uint64_t *owner)
{
    if (i < 0)
        return;
    l1_entry *x = &entries_of(c, s)[i];
    if (owner && x->lease_owner != *owner)
        return;
    x->lease_until = 0;
    x->lease_owner = 0;
    if (!(x->bits & E_VALUE))
        entry_drop(c, s, (uint32_t)i);
}

int l1_set(l1_cache *c, const void *key, size_t klen, const void *value, size_t vlen,
           unsigned flags, uint64_t ttl_ms, uint64_t stale_ms, uint64_t now,
           const l1_ticket *ticket, l1_stats *st)
{
    if (!klen || klen > L1_MAX_KEY || !ttl_ms || (vlen && !value))
        return -EINVAL;
    uint64_t h = hash_key(key, klen);
    l1_stripe *s = stripe_of(c, h);
    int rc = stripe_lock(c, s, st);
    if (rc < 0)
        return rc;
    uint32_t gen = atomic_load_explicit(&c->gen, memory_order_acquire);
    int64_t i = entry_find(c, s, h, key, klen);
    if (klen + vlen > c->max_item || (ticket && !ticket_holds(s, ticket, gen, h))) {
        lease_clear(c, s, i, NULL);
        rc = klen + vlen > c->max_item ? -E2BIG : -ESTALE;
        goto unlock;
    }
    if (i >= 0)
        entry_drop(c, s, (uint32_t)i);   /* replaced whole: its lease ends with it */
    i = entry_new(c, s, h, key, klen, vlen, now, gen, st);
    if (i < 0) {
        rc = -E2BIG;
        goto unlock;
    }
    l1_entry *x = &entries_of(c, s)[i];
    chain_walk(c, s, x, klen, (uint8_t *)value, vlen, piece_write);
    x->vlen = (uint32_t)vlen;
    x->flags = (uint8_t)flags;
    x->bits |= E_VALUE;
    x->fresh_until = now + ttl_ms;
    x->stale_until = x->fresh_until + stale_ms;
    atomic_store_explicit(&s->bytes, atomic_load_explicit(&s->bytes, memory_order_relaxed) + vlen,
                          memory_order_relaxed);
unlock:
    stripe_unlock(s);
    return rc;
}

int l1_del(l1_cache *c, const void *key, size_t klen, l1_stats *st)
{
    if (!klen || klen > L1_MAX_KEY)
        return 0;
    uint64_t h = hash_key(key, klen);
    l1_stripe *s = stripe_of(c, h);
    if (stripe_lock(c, s, st) < 0)
        return 0;
    int64_t i = entry_find(c, s, h, key, klen);
    if (i >= 0)
        entry_drop(c, s, (uint32_t)i);
    /* a fill of this key that read before now must not store (even if its
     * lease placeholder was evicted: recorded whether found or not) */
    s->deleted[s->epoch % DEL_RING] = h;
    s->epoch++;
    stripe_unlock(s);
    return i >= 0;
}

void l1_release(l1_cache *c, const void *key, size_t klen, uint64_t owner)
{
    if (!klen || klen > L1_MAX_KEY)
        return;
    uint64_t h = hash_key(key, klen);
    l1_stripe *s = stripe_of(c, h);
    if (stripe_lock(c, s, NULL) < 0)
        return;
    lease_clear(c, s, entry_find(c, s, h, key, klen), &owner);
    stripe_unlock(s);
}

void l1_flush(l1_cache *c)
{
    atomic_fetch_add_explicit(&c->gen, 1, memory_order_acq_rel);
}

uint32_t l1_generation(const l1_cache *c)
{
    return atomic_load_explicit(&c->gen, memory_order_acquire);
}

void l1_info_get(const l1_cache *c, l1_info *out)
{
    *out = (l1_info){ .stripes = c->nstripes, .max_item = c->max_item,
                      .capacity = (uint64_t)c->nstripes *
                                  ((uint64_t)c->nblocks * L1_BLOCK + (uint64_t)c->nentries * L1_INLINE),
                      .max_entries = (uint64_t)c->nstripes * c->nentries };
    for (uint32_t i = 0; i < c->nstripes; i++) {
        l1_stripe *s = stripe_at(c, i);
        out->entries += atomic_load_explicit(&s->used, memory_order_relaxed);
        out->bytes += atomic_load_explicit(&s->bytes, memory_order_relaxed);
    }
}

bool l1_reporter(l1_cache *c, pid_t self)
{
    int32_t cur = atomic_load_explicit(&c->reporter, memory_order_relaxed);
    if (cur == self)
        return true;
    if (cur != 0 && (kill(cur, 0) == 0 || errno != ESRCH))
        return false;
    return atomic_compare_exchange_strong(&c->reporter, &cur, (int32_t)self);
}

/* ---- creation ---------------------------------------------------------------------------- */

l1_cache *l1_new(size_t size, uint32_t stripes)
{
    if (!stripes || stripes > 4096 || (stripes & (stripes - 1)) || size < l1_min_size(stripes)) {
        errno = EINVAL;
        return NULL;
    }
    size_t stripe_bytes = (size - header_bytes()) / stripes / LINE * LINE;
    size_t map = header_bytes() + stripe_bytes * stripes;
    void *p = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    l1_cache *c = p;
    c->magic = L1_MAGIC;
    c->map_size = map;
    c->nstripes = stripes;
    geometry(c, stripe_bytes);
    atomic_init(&c->gen, 1);
    atomic_init(&c->reporter, 0);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    for (uint32_t i = 0; i < stripes; i++) {
        l1_stripe *s = stripe_at(c, i);
        int rc = pthread_mutex_init(&s->lock, &a);
        if (rc) {
            pthread_mutexattr_destroy(&a);
            munmap(p, map);
            errno = rc;
            return NULL;
        }
        stripe_reset(c, s);
    }
    pthread_mutexattr_destroy(&a);
    return c;
}

void l1_free(l1_cache *c)
{
    if (c) {
        assert(c->magic == L1_MAGIC);
        munmap(c, c->map_size);
    }
}

/* ---- checking (tests) ---------------------------------------------------------------------- */

static int stripe_check(const l1_cache *c, l1_stripe *s, uint8_t *seen_e, uint8_t *seen_b)
{
    l1_entry *e = entries_of(c, s);
    uint32_t *next = next_of(c, s);
    if (s->top_entry > c->nentries || s->top_block > c->nblocks ||
        (s->top_entry && s->hand >= s->top_entry))
        return -EUCLEAN;
    memset(seen_e, 0, c->nentries);
    memset(seen_b, 0, c->nblocks);
    uint64_t used = 0, bytes = 0;
    for (uint32_t b = 0; b < c->nbuckets; b++)
        for (uint32_t i = buckets_of(c, s)[b]; i; i = e[i - 1].next) {
            l1_entry *x = &e[i - 1];
            if (i > s->top_entry || seen_e[i - 1] || !(x->bits & E_USED) ||
                (x->hash & (c->nbuckets - 1)) != b)
                return -EUCLEAN;
            seen_e[i - 1] = 1;
            used++;
            bytes += x->klen + x->vlen;
            uint32_t n = 0;
            for (uint32_t k = x->block; k; k = next[k - 1], n++)
                if (k > s->top_block || seen_b[k - 1]++)
                    return -EUCLEAN;
            if (n != blocks_for(x->klen + x->vlen))
                return -EUCLEAN;
        }
    uint32_t nfree = 0;
    for (uint32_t i = s->free_entry; i; i = e[i - 1].next, nfree++)
        if (i > s->top_entry || seen_e[i - 1]++ || (e[i - 1].bits & E_USED))
            return -EUCLEAN;
    uint32_t nfreeb = 0;
    for (uint32_t k = s->free_block; k; k = next[k - 1], nfreeb++)
        if (k > s->top_block || seen_b[k - 1]++)
            return -EUCLEAN;
    for (uint32_t i = 0; i < s->top_entry; i++)
        if (!seen_e[i])
            return -EUCLEAN;   /* an entry lost to every list */
    for (uint32_t k = 0; k < s->top_block; k++)
        if (!seen_b[k])
            return -EUCLEAN;   /* a block lost to every list */
    if (nfree + c->nentries - s->top_entry != s->nfree_entries ||
        nfreeb + c->nblocks - s->top_block != s->nfree_blocks ||
        used + s->nfree_entries != c->nentries || used != atomic_load(&s->used) ||
        bytes != atomic_load(&s->bytes))
        return -EUCLEAN;
    return 0;
}

int l1_check(l1_cache *c)
{
    uint8_t *seen_e = malloc(c->nentries), *seen_b = malloc(c->nblocks);
    int rc = seen_e && seen_b ? 0 : -ENOMEM;
    for (uint32_t i = 0; i < c->nstripes && !rc; i++) {
        l1_stripe *s = stripe_at(c, i);
        rc = stripe_lock(c, s, NULL);
        if (rc)
            break;
        rc = stripe_check(c, s, seen_e, seen_b);
        stripe_unlock(s);
    }
    free(seen_e);
    free(seen_b);
    return rc;
}
