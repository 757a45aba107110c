/* arena — bump allocator whose memory dies all at once.
 *
 * Each request owns one: handlers allocate with myr_alloc() and never free;
 * the arena is reset when the response is done. Memory comes in blocks
 * chained newest-first; a reset keeps the first block (its size is the common
 * case) so a keep-alive connection's next request allocates nothing.
 * An all-zero arena is valid and empty; the first allocation mallocs.
 */
#ifndef MYR_ARENA_H
#define MYR_ARENA_H

#include <stddef.h>

typedef struct arena_block arena_block;

typedef struct arena {
    arena_block *head;   /* newest block, where allocation happens */
    size_t       used;   /* bytes used in head */
} arena;

/* 16-byte aligned memory, or NULL when out of memory (or n is absurd). */
void *arena_alloc(arena *a, size_t n);
/* Copies s[0..n) and appends a NUL. */
char *arena_strndup(arena *a, const char *s, size_t n);
/* Frees all but the first block; everything allocated becomes invalid. */
void  arena_reset(arena *a);
/* Frees everything. */
void  arena_free(arena *a);

#endif
