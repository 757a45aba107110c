/* topic — one worker's topic registry: which of its connections subscribe
 * to which topic. A hash table of topics, each with an intrusive list of
 * subscriptions in subscription order (the fan-out order), plus a list per
 * subscriber so that a closing connection drops all of its subscriptions.
 *
 *   rt_topics ── buckets ──> rt_topic "chat:lobby" ──> sub ⇄ sub ⇄ sub
 *                            rt_topic "chat:dev"   ──> sub
 *   a subscriber's subscriptions: sub ─owner_next─> sub ─> NULL
 *
 * Pure data structure: no I/O, no loop. The caller (pubsub.c) decides what
 * a subscriber is (a myr_ws) and what happens when a topic appears or
 * empties (Redis SUBSCRIBE, the shared roster). A topic object lives while
 * it has subscribers; the caller removes it when the last one leaves.
 *
 * Ownership: the registry owns its topics; the caller allocates and frees
 * subscriptions (rt_sub) and links them in and out. Loop thread only.
 */
#ifndef MYR_RT_TOPIC_H
#define MYR_RT_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_topic rt_topic;

typedef struct rt_sub {
    rt_topic      *topic;
    void          *owner;        /* the subscriber (a myr_ws) */
    struct rt_sub *prev, *next;  /* the topic's subscriptions, oldest first */
    struct rt_sub *owner_next;   /* the owner's subscriptions, newest first */
    uint8_t        policy;       /* myr_ws_overflow */
} rt_sub;

struct rt_topic {
    rt_topic *hnext;      /* bucket chain */
    rt_sub   *head, *tail;
    uint32_t  nsubs;      /* subscriptions linked */
    int32_t   roster;     /* entry in the shared roster; -1 = none */
    bool      redis;      /* subscribed to its Redis channel */
    uint32_t  hash;
    uint32_t  len;        /* bytes of name */
    char      name[];     /* not NUL-terminated */
};

typedef struct rt_topics {
    rt_topic **buckets;   /* nbuckets chains; NULL until the first topic */
    uint32_t   nbuckets;  /* a power of two */
    uint32_t   count;     /* topics */
    uint64_t   nsubs;     /* subscriptions over all topics */
} rt_topics;

/* An all-zero rt_topics is empty and valid. */
void rt_topics_fini(rt_topics *t);   /* frees the topics (not the subscriptions) */

rt_topic *rt_topics_find(const rt_topics *t, const void *name, size_t len);
/* Finds or creates (with no subscriptions, roster -1). NULL when out of
 * memory. *created (may be NULL) tells which. */
rt_topic *rt_topics_get(rt_topics *t, const void *name, size_t len, bool *created);
/* Unlinks and frees a topic that has no subscriptions. */
void rt_topics_remove(rt_topics *t, rt_topic *topic);

/* Appends s to topic's list (s->topic is set). */
void rt_topic_link(rt_topics *t, rt_topic *topic, rt_sub *s);
void rt_topic_unlink(rt_topics *t, rt_sub *s);

#endif
