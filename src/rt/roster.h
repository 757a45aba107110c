/* roster — how many subscribers each topic has on this machine, in shared
 * memory, so that any worker can answer "which rooms exist and how full are
 * they" (GET /rooms) without asking the others.
 *
 * A fixed table of entries made before fork. An entry belongs to one
 * (topic, worker slot) pair and has a single writer: the slot's process,
 * which claims it when the topic gets its first local subscriber, keeps the
 * entry's index in its own topic object and updates the count in place,
 * and frees it when the last subscriber leaves. Readers scan the whole
 * table, skip entries of slots whose process is gone, and sum per topic.
 *
 *   entry (128 bytes): state word | slot | count | length | name (104 bytes)
 *   state word = generation << 2 | FREE / BUSY / USED
 *
 * Claiming is a compare-and-swap FREE -> BUSY (so two workers never take
 * the same entry), then the key is written and the state becomes USED with
 * the generation bumped. Readers copy an entry and re-read its state word
 * afterwards (a seqlock): a changed word means it was freed or reused
 * meanwhile, and the copy is ignored. A worker that replaces a dead one in
 * the same slot frees the entries its predecessor left (rt_roster_reset).
 *
 * A full table does not fail a subscription: the topic is then missing
 * from the counts (rt_roster_claim returns -ENOSPC; the caller counts it).
 *
 * Threads: any process may read; each entry's writer is its slot's loop.
 */
#ifndef MYR_RT_ROSTER_H
#define MYR_RT_ROSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/shm.h"

#define RT_ROSTER_NAME_MAX 104   /* topic bytes an entry holds */

typedef struct rt_roster rt_roster;

size_t     rt_roster_shm_size(uint32_t entries);
/* Before fork: a table of `entries` (rounded up to a power of two, at least
 * 64). NULL with errno set when r is too small. */
rt_roster *rt_roster_new(shm_region *r, uint32_t entries);
uint32_t   rt_roster_capacity(const rt_roster *t);

/* Takes a free entry for (topic, slot) with count 0 and returns its index,
 * -EINVAL for a topic longer than RT_ROSTER_NAME_MAX, or -ENOSPC. */
int  rt_roster_claim(rt_roster *t, uint32_t slot, const void *topic, size_t len);
void rt_roster_set(rt_roster *t, uint32_t idx, uint64_t count);
void rt_roster_free(rt_roster *t, uint32_t idx);
/* Frees every entry held by slot (its previous process died). */
void rt_roster_reset(rt_roster *t, uint32_t slot);

/* One entry's consistent copy; false when it is not in use. */
typedef struct rt_roster_item {
    uint32_t slot;
    uint64_t count;
    size_t   len;
    char     name[RT_ROSTER_NAME_MAX];
} rt_roster_item;
bool rt_roster_read(const rt_roster *t, uint32_t idx, rt_roster_item *out);

#endif
