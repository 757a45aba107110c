/* arena — see arena.h.
 *
 * Layout: each block is a header followed by `size` bytes of payload. A
 * request larger than a quarter of the default block gets a block of its own
 * sized to fit, inserted behind the head so the head's free space is not
 * wasted.
 */
#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK 4096            /* payload bytes of a default block */
#define ARENA_ALIGN 16
#define ARENA_MAX   ((size_t)1 << 40)

struct arena_block {
    arena_block *next;   /* older block */
    size_t       size;   /* payload bytes */
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

static arena_block *block_new(size_t size, arena_block *next)
{
    arena_block *b = malloc(sizeof(*b) + size);
    if (!b)
        return NULL;
    b->next = next;
    b->size = size;
    return b;
}

void *arena_alloc(arena *a, size_t n)
{
    if (n > ARENA_MAX)
        return NULL;
    n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (a->head && a->head->size - a->used >= n) {
        void *p = a->head->data + a->used;
        a->used += n;
        return p;
    }
    if (n > ARENA_BLOCK / 4 && a->head) {
        /* big: own block, behind the head */
        arena_block *b = block_new(n, a->head->next);
        if (!b)
            return NULL;
        a->head->next = b;
        return b->data;
    }
    arena_block *b = block_new(n > ARENA_BLOCK ? n : ARENA_BLOCK, a->head);
    if (!b)
        return NULL;
    a->head = b;
    a->used = n;
    return b->data;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void arena_reset(arena *a)
{
    if (!a->head)
        return;
    /* keep one default-size block, so the next request allocates nothing */
    arena_block *b = a->head, *keep = NULL;
    while (b) {
        arena_block *next = b->next;
        if (!keep && b->size == ARENA_BLOCK)
            keep = b;
        else
            free(b);
        b = next;
    }
    if (keep)
        keep->next = NULL;
    a->head = keep;
    a->used = 0;
}

void arena_free(arena *a)
{
    arena_block *b = a->head;
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->used = 0;
}
