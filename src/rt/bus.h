/* bus — the local message bus: a broadcast ring in shared memory that every
 * worker process of one machine appends to and reads all of.
 *
 *   publisher (any worker)                  readers (every subscribing worker)
 *     lock (robust, process-shared)           own cursor (process-local)
 *     evict the oldest records for room       copy a record out, then check it
 *     write the record, advance `tail`         was not overwritten meanwhile
 *     unlock; wake readers marked asleep      behind `head`: overrun, skip ahead
 *
 * Layout (one piece of a shm region, made before fork):
 *
 *   +--------+--------------------------+-------------------------------+
 *   | header | slot table: one 64-byte  | ring: cap bytes, a power of   |
 *   | (lock, | row per worker slot (pid,| two, of 8-byte-aligned        |
 *   | head,  | asleep flag, publisher   | records that may wrap around  |
 *   | tail)  | sequence, id counter)    | the end                       |
 *   +--------+--------------------------+-------------------------------+
 *
 * A record (positions are absolute byte offsets that only grow; the ring
 * index is pos & (cap - 1)):
 *
 *   word 0  pos         its own position: a reader checks it to know the
 *                       bytes are this lap's record
 *   word 1  msgseq      bus-wide message number, +1 per record: gaps a
 *                       reader sees after an overrun are messages it lost
 *   word 2  slot | topic length << 32 | flags << 48
 *   word 3  pubseq      the publishing slot's own sequence (per publisher)
 *   word 4  data length
 *   then the topic bytes and the data bytes, padded to 8.
 *
 * Invariants: head <= tail, tail - head <= cap, head and tail are record
 * boundaries; [head, tail) holds complete records; a record's bytes change
 * only after head has moved past it (a publisher evicts before it writes).
 *
 * Writers are serialised by a robust process-shared mutex: a publisher that
 * dies inside (kill -9) leaves at most a half-written record beyond `tail`,
 * which nobody reads; the next locker is told (EOWNERDEAD), marks the mutex
 * consistent and carries on. The critical section is a bounded copy with no
 * system call, so a live publisher never holds it long.
 *
 * Readers never lock. Ring words are accessed with relaxed atomics, and a
 * reader validates after copying (a seqlock on `head`): the publisher stores
 * the new head, then a release fence, then the record's words; the reader
 * copies words, then an acquire fence, then loads head. If it read any word
 * of the new record it must see the new head, so a record that was being
 * overwritten during the copy is always detected and counted as lost.
 *
 * Wake-ups. A reader that has read everything marks itself asleep in its
 * slot row and then checks `tail` once more (seq_cst on both sides, so the
 * publisher that appends next either sees the flag or the reader sees the
 * record). A publisher clears each asleep flag it finds with an exchange and
 * sends that reader one byte on its wake socket: an abstract-namespace Unix
 * datagram socket named from the bus's instance id and the slot row, bound
 * by the reader. Names need no file and vanish with the process, so a
 * respawned worker binds the same name again; a wake to a dead reader fails
 * harmlessly. Publishers send from one unbound socket made before fork.
 *
 * Threads: a bus is shared by processes; each reader belongs to one thread.
 */
#ifndef MYR_RT_BUS_H
#define MYR_RT_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/shm.h"

#define RT_BUS_MIN_RING   (64u * 1024)   /* bytes */
#define RT_BUS_HEADER     40u            /* bytes of a record's header */
#define RT_BUS_TOPIC_MAX  0xffffu        /* bytes of a topic (the bus's own bound) */

typedef struct rt_bus rt_bus;

enum { RT_BUS_BINARY = 1u << 0 };   /* record flags */

/* Bytes of shared memory rt_bus_new needs (headers and alignment included). */
size_t rt_bus_shm_size(size_t ring_bytes, uint32_t slots);

/* Before fork: carves a bus out of r with a ring of ring_bytes (rounded
 * down to a power of two, at least RT_BUS_MIN_RING) and `slots` slot rows,
 * and opens the publishers' socket. instance names the wake sockets (one
 * bus per instance id per machine). NULL with errno set on failure. */
rt_bus *rt_bus_new(shm_region *r, size_t ring_bytes, uint32_t slots, uint64_t instance);
/* Closes the publishers' socket in this process (the memory goes with the
 * region). For tests and the process that made it. */
void rt_bus_close(rt_bus *b);

size_t   rt_bus_max_message(const rt_bus *b);   /* topic + data bytes per record */
uint32_t rt_bus_slots(const rt_bus *b);
uint64_t rt_bus_instance(const rt_bus *b);

/* Appends one message from `slot` and wakes the readers that sleep. Any
 * process, any thread. Returns 0 (and the record's per-publisher sequence
 * in *pubseq if not NULL), -EINVAL for a slot out of range or an empty
 * topic, -EMSGSIZE when topic + data exceed rt_bus_max_message(). */
int rt_bus_publish(rt_bus *b, uint32_t slot, const void *topic, size_t tlen, const void *data,
                   size_t len, unsigned flags, uint64_t *pubseq);

/* A per-slot counter that survives the slot's processes (for ids that
 * stay unique when a worker is replaced): returns its next value. */
uint64_t rt_bus_next_id(rt_bus *b, uint32_t slot);

/* ---- reading ------------------------------------------------------------------- */

/* One message as copied out of the ring: the pointers are into the
 * reader's own buffer and valid until its next rt_bus_read. */
typedef struct rt_bus_msg {
    uint32_t    slot;       /* publishing slot */
    unsigned    flags;      /* RT_BUS_BINARY */
    uint64_t    pubseq;     /* the publisher's sequence */
    uint64_t    msgseq;     /* the bus's sequence */
    const char *topic;
    size_t      topic_len;
    const void *data;
    size_t      len;
} rt_bus_msg;

/* A reader: process-local; its fields are private to bus.c. */
typedef struct rt_bus_reader {
    rt_bus   *bus;
    uint32_t  slot;
    int       fd;          /* wake socket: readable when woken; -1 when closed */
    uint64_t  cursor;      /* next record's position */
    uint64_t  next_msgseq; /* msgseq expected next; UINT64_MAX: unknown (resynced) */
    uint64_t  lost;        /* records overwritten before this reader got them */
    uint8_t  *buf;         /* copy of the current record */
    size_t    cap;
} rt_bus_reader;

/* Registers `slot` as a reader from now on (earlier records are not
 * delivered) and binds its wake socket. The reader starts awake.
 * 0 or -errno (-EADDRINUSE: another live process reads as this slot). */
int rt_bus_reader_open(rt_bus *b, uint32_t slot, rt_bus_reader *r);
void rt_bus_reader_close(rt_bus_reader *r);

/* Copies the next record out: 1 and *m, or 0 when everything published has
 * been read. Records lost to an overrun are skipped and added to r->lost.
 * -ENOMEM if the copy buffer cannot grow (the record is skipped). */
int rt_bus_read(rt_bus_reader *r, rt_bus_msg *m);

/* Consumes the wake datagrams that arrived (call when fd is readable). */
void rt_bus_reader_drain(rt_bus_reader *r);

/* Marks the reader asleep before it waits on its fd. Returns false (and
 * stays awake) when records arrived meanwhile: read on instead. */
bool rt_bus_sleep(rt_bus_reader *r);

/* ---- slots ----------------------------------------------------------------------- */

/* The pid registered for a slot by rt_bus_slot_claim (0: none). */
int32_t rt_bus_slot_pid(const rt_bus *b, uint32_t slot);
/* Records the calling process as the slot's owner (its successor after a
 * respawn overwrites it). */
void rt_bus_slot_claim(rt_bus *b, uint32_t slot);
void rt_bus_slot_release(rt_bus *b, uint32_t slot);
/* True if the slot's registered process is alive. */
bool rt_bus_slot_live(const rt_bus *b, uint32_t slot);
/* Slot rows ever claimed or read: [0, high). */
uint32_t rt_bus_slots_high(const rt_bus *b);

#endif
