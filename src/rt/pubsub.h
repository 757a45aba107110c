/* pubsub — topics for WebSocket subscribers: the public myr_ws_subscribe /
 * myr_publish API (include/myriad.h) over three ways a message travels.
 *
 *   myr_publish(topic) on worker A of machine M
 *     ├─ A's own subscribers: one ws_msg, queued on each (fan-out)
 *     ├─ bus (rt/bus.h): the other workers of M read the record and fan
 *     │  out to theirs; A skips its own records
 *     └─ Redis PUBLISH prefix+topic: every worker of another machine that
 *        has subscribers for the topic SUBSCRIBEs to the channel and fans
 *        out; workers of M drop it (its origin instance is M's)
 *
 * Exactly once: a message reaches a given worker by exactly one path —
 * directly (the publisher's own worker), the bus (same machine), or Redis
 * (other machines, recognised by the instance id in the message) — and a
 * worker queues it once per subscription. In order per publisher: each
 * path is FIFO (the ring is appended under a lock; one Redis connection
 * per publishing worker delivers in order to each subscriber connection).
 *
 * Per worker (loop state): a myr_pubsub hung off http_server.pubsub, made on
 * first use, freed by pubsub_server_fini when the worker stops. It holds
 * the topic registry (rt/topic.h), the bus reader, the worker's entries in
 * the shared roster (rt/roster.h) and the metric families.
 *
 * Per machine (made before fork by pubsub_prefork, read-only afterwards):
 * the instance id, the bus, the roster.
 *
 * Redis message layout (binary, little-endian):
 *   0  'M' 'Y' 'R' 1   magic and version
 *   4  flags           bit 0: binary
 *   5  3 bytes zero
 *   8  instance        u64: the publishing machine's instance id
 *   16 slot            u32: the publishing worker's slot
 *   20 4 bytes zero
 *   24 pubseq          u64: the publisher's sequence number
 *   32 data
 */
#ifndef MYR_RT_PUBSUB_H
#define MYR_RT_PUBSUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

struct http_server;

#define PUBSUB_WIRE_HEADER 32u

/* Supervisor (or the single in-process worker), before any worker starts:
 * the instance id, the bus (--pubsub-bus-size) and the roster
 * (--pubsub-topics) for `slots` worker slots. Once per process: a reload
 * keeps them. 0, or -1 with a reason in err. */
int pubsub_prefork(const config *cfg, uint32_t slots, char *err, size_t errlen);

/* The worker is stopping: drops every subscription (connections still open
 * keep nothing), frees the roster entries and the worker's state. Before
 * or after the Redis client is freed (pending PUBLISH callbacks hold only
 * the server). No-op when the worker never used pub/sub. */
void pubsub_server_fini(struct http_server *s);

/* ---- the Redis message (exposed for the unit tests) ----------------------------- */

typedef struct pubsub_wire {
    uint64_t    instance;
    uint32_t    slot;
    uint64_t    pubseq;
    bool        binary;
    const void *data;
    size_t      len;
} pubsub_wire;

/* Writes the header for w into out (PUBSUB_WIRE_HEADER bytes). */
void pubsub_wire_header(const pubsub_wire *w, uint8_t out[PUBSUB_WIRE_HEADER]);
/* Parses a message; false if it is not one of ours. */
bool pubsub_wire_parse(const void *msg, size_t len, pubsub_wire *w);

#endif
