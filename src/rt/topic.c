/* topic — see topic.h. Chained hashing with FNV-1a; the table doubles when
 * it holds more topics than buckets, so chains stay short. */
#include "rt/topic.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define MIN_BUCKETS 16u

static uint32_t hash_of(const void *name, size_t len)
{
    const uint8_t *p = name;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

void rt_topics_fini(rt_topics *t)
{
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        for (rt_topic *p = t->buckets[i], *next; p; p = next) {
            next = p->hnext;
            free(p);
        }
    }
    free(t->buckets);
    *t = (rt_topics){ 0 };
}

rt_topic *rt_topics_find(const rt_topics *t, const void *name, size_t len)
{
    if (!t->nbuckets)
        return NULL;
    uint32_t h = hash_of(name, len);
    for (rt_topic *p = t->buckets[h & (t->nbuckets - 1)]; p; p = p->hnext)
        if (p->hash == h && p->len == len && memcmp(p->name, name, len) == 0)
            return p;
    return NULL;
}

/* Doubles the buckets; on failure the table just stays denser. */
static void grow(rt_topics *t)
{
    uint32_t n = t->nbuckets ? t->nbuckets * 2 : MIN_BUCKETS;
    rt_topic **b = calloc(n, sizeof(*b));
    if (!b)
        return;
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        for (rt_topic *p = t->buckets[i], *next; p; p = next) {
            next = p->hnext;
            p->hnext = b[p->hash & (n - 1)];
            b[p->hash & (n - 1)] = p;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

rt_topic *rt_topics_get(rt_topics *t, const void *name, size_t len, bool *created)
{
    rt_topic *p = rt_topics_find(t, name, len);
    if (created)
        *created = p == NULL;
    if (p)
        return p;
    if (t->count >= t->nbuckets)
        grow(t);
    if (!t->nbuckets)
        return NULL;
    p = calloc(1, sizeof(*p) + len);
    if (!p)
        return NULL;
    p->hash = hash_of(name, len);
    p->len = (uint32_t)len;
    p->roster = -1;
    memcpy(p->name, name, len);
    rt_topic **b = &t->buckets[p->hash & (t->nbuckets - 1)];
    p->hnext = *b;
    *b = p;
    t->count++;
    return p;
}

void rt_topics_remove(rt_topics *t, rt_topic *topic)
{
    assert(topic->nsubs == 0);
    rt_topic **pp = &t->buckets[topic->hash & (t->nbuckets - 1)];
    while (*pp != topic)
        pp = &(*pp)->hnext;
    *pp = topic->hnext;
    t->count--;
    free(topic);
}

void rt_topic_link(rt_topics *t, rt_topic *topic, rt_sub *s)
{
    s->topic = topic;
    s->next = NULL;
    s->prev = topic->tail;
    if (topic->tail)
        topic->tail->next = s;
    else
        topic->head = s;
    topic->tail = s;
    topic->nsubs++;
    t->nsubs++;
}

void rt_topic_unlink(rt_topics *t, rt_sub *s)
{
    rt_topic *topic = s->topic;
    if (s->prev)
        s->prev->next = s->next;
    else
        topic->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        topic->tail = s->prev;
    s->prev = s->next = NULL;
    topic->nsubs--;
    t->nsubs--;
}
