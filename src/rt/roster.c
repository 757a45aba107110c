/* roster — see roster.h. Every shared field is an atomic (the name as
 * words), so a reader racing a writer reads stale or new values, never
 * torn ones, and the state word tells it which copies to keep. */
#include "rt/roster.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#define NAME_WORDS (RT_ROSTER_NAME_MAX / 8)

enum { ST_FREE, ST_BUSY, ST_USED, ST_MASK = 3 };

typedef struct roster_entry {
    _Atomic uint32_t state;                /* generation << 2 | ST_* */
    _Atomic uint32_t slot;                 /* owner */
    _Atomic uint64_t count;                /* subscribers of the topic in that slot */
    _Atomic uint64_t len;                  /* bytes of the name */
    _Atomic uint64_t name[NAME_WORDS];
} roster_entry;

static_assert(sizeof(roster_entry) == 128, "two cache lines per entry");

struct rt_roster {
    uint32_t      cap;       /* entries: a power of two */
    uint32_t      pad[15];
    roster_entry  e[];
};

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 64;
    while (p < n && p < (1u << 30))
        p *= 2;
    return p;
}

size_t rt_roster_shm_size(uint32_t entries)
{
    return sizeof(rt_roster) + (size_t)pow2_at_least(entries) * sizeof(roster_entry) + SHM_ALIGN;
}

rt_roster *rt_roster_new(shm_region *r, uint32_t entries)
{
    uint32_t cap = pow2_at_least(entries);
    rt_roster *t = shm_alloc(r, sizeof(*t) + (size_t)cap * sizeof(roster_entry));
    if (!t) {
        errno = ENOMEM;
        return NULL;
    }
    t->cap = cap;
    return t;
}

uint32_t rt_roster_capacity(const rt_roster *t) { return t->cap; }

/* FNV-1a of the topic and the slot: where the search for a free entry
 * starts, so that workers adding the same topic do not collide. */
static uint32_t start_of(const void *topic, size_t len, uint32_t slot)
{
    const uint8_t *p = topic;
    uint32_t h = 2166136261u ^ slot;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

int rt_roster_claim(rt_roster *t, uint32_t slot, const void *topic, size_t len)
{
    if (len == 0 || len > RT_ROSTER_NAME_MAX)
        return -EINVAL;
    uint32_t start = start_of(topic, len, slot);
    for (uint32_t i = 0; i < t->cap; i++) {
        uint32_t idx = (start + i) & (t->cap - 1);
        roster_entry *e = &t->e[idx];
        uint32_t st = atomic_load_explicit(&e->state, memory_order_relaxed);
        if ((st & ST_MASK) != ST_FREE)
            continue;
        uint32_t gen = (st >> 2) + 1;
        if (!atomic_compare_exchange_strong(&e->state, &st, gen << 2 | ST_BUSY))
            continue;
        /* the seqlock's write side: a reader that sees any word written
         * below also sees BUSY when it re-reads the state */
        atomic_thread_fence(memory_order_release);
        uint64_t words[NAME_WORDS] = { 0 };
        memcpy(words, topic, len);
        for (unsigned w = 0; w < NAME_WORDS; w++)
            atomic_store_explicit(&e->name[w], words[w], memory_order_relaxed);
        atomic_store_explicit(&e->len, len, memory_order_relaxed);
        atomic_store_explicit(&e->slot, slot, memory_order_relaxed);
        atomic_store_explicit(&e->count, 0, memory_order_relaxed);
        atomic_store_explicit(&e->state, gen << 2 | ST_USED, memory_order_release);
        return (int)idx;
    }
    return -ENOSPC;
}

void rt_roster_set(rt_roster *t, uint32_t idx, uint64_t count)
{
    atomic_store_explicit(&t->e[idx & (t->cap - 1)].count, count, memory_order_relaxed);
}

void rt_roster_free(rt_roster *t, uint32_t idx)
{
    roster_entry *e = &t->e[idx & (t->cap - 1)];
    uint32_t st = atomic_load_explicit(&e->state, memory_order_relaxed);
    atomic_store_explicit(&e->count, 0, memory_order_relaxed);
    atomic_store_explicit(&e->state, (st & ~(uint32_t)ST_MASK) | ST_FREE, memory_order_release);
}

void rt_roster_reset(rt_roster *t, uint32_t slot)
{
    for (uint32_t i = 0; i < t->cap; i++) {
        roster_entry *e = &t->e[i];
        uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
        if ((st & ST_MASK) == ST_USED && atomic_load(&e->slot) == slot)
            rt_roster_free(t, i);
    }
}

bool rt_roster_read(const rt_roster *t, uint32_t idx, rt_roster_item *out)
{
    const roster_entry *e = &t->e[idx & (t->cap - 1)];
    uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
    if ((st & ST_MASK) != ST_USED)
        return false;
    uint64_t words[NAME_WORDS];
    for (unsigned w = 0; w < NAME_WORDS; w++)
        words[w] = atomic_load_explicit(&e->name[w], memory_order_relaxed);
    uint64_t len = atomic_load_explicit(&e->len, memory_order_relaxed);
    out->slot = atomic_load_explicit(&e->slot, memory_order_relaxed);
    out->count = atomic_load_explicit(&e->count, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&e->state, memory_order_relaxed) != st || len == 0 ||
        len > RT_ROSTER_NAME_MAX)
        return false;
    memcpy(out->name, words, (size_t)len);
    out->len = (size_t)len;
    return true;
}
