/* bus — see bus.h for the layout, the invariants and why readers can trust
 * what they copied.
 *
 * Reading order: the shared structures -> creation -> ring words ->
 * publishing (lock, evict, write, wake) -> reading -> slots.
 */
#include "rt/bus.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define WORD 8u

/* One row per worker slot: written by the slot's process, read by all. */
typedef struct bus_slot {
    _Atomic int32_t  pid;      /* rt_bus_slot_claim's process; 0 = none */
    _Atomic uint32_t asleep;   /* 1: the reader waits for a wake datagram */
    _Atomic uint64_t pubseq;   /* sequence of the slot's last published record */
    _Atomic uint64_t ids;      /* rt_bus_next_id's counter */
    uint8_t          pad[SHM_ALIGN - 24];
} bus_slot;

static_assert(sizeof(bus_slot) == SHM_ALIGN, "a slot row is one cache line");

struct rt_bus {
    /* guards the ring's contents, head and msgseq for publishers; readers
     * never take it. Robust: a holder that dies is detected by the next. */
    pthread_mutex_t   lock;
    _Atomic uint64_t  head;        /* oldest intact record (bytes, absolute) */
    _Atomic uint64_t  tail;        /* end of the last complete record */
    _Atomic uint64_t  msgseq;      /* the next record's number (under lock) */
    uint64_t          cap;         /* ring bytes: a power of two */
    uint64_t          max_message; /* topic + data bytes per record */
    uint64_t          instance;    /* names the wake sockets */
    uint32_t          nslots;
    _Atomic uint32_t  high;        /* slot rows ever used: [0, high) */
    int               send_fd;     /* publishers' datagram socket (inherited) */
    bus_slot         *slots;       /* nslots rows, shared */
    _Atomic uint64_t *ring;        /* cap / 8 words, shared */
};

static uint64_t round8(uint64_t n) { return (n + WORD - 1) & ~(uint64_t)(WORD - 1); }

static uint64_t floor_pow2(uint64_t n)
{
    uint64_t p = 1;
    while (p <= n / 2)
        p *= 2;
    return p;
}

/* ---- creation -------------------------------------------------------------------------- */

size_t rt_bus_shm_size(size_t ring_bytes, uint32_t slots)
{
    size_t cap = ring_bytes < RT_BUS_MIN_RING ? RT_BUS_MIN_RING : floor_pow2(ring_bytes);
    return sizeof(rt_bus) + (size_t)slots * sizeof(bus_slot) + cap + 3 * SHM_ALIGN;
}

rt_bus *rt_bus_new(shm_region *r, size_t ring_bytes, uint32_t slots, uint64_t instance)
{
    uint64_t cap = ring_bytes < RT_BUS_MIN_RING ? RT_BUS_MIN_RING : floor_pow2(ring_bytes);
    rt_bus *b = shm_alloc(r, sizeof(*b));
    bus_slot *rows = b && slots ? shm_alloc(r, (size_t)slots * sizeof(bus_slot)) : NULL;
    _Atomic uint64_t *ring = rows ? shm_alloc(r, cap) : NULL;
    if (!ring) {
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a) || pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) ||
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) || pthread_mutex_init(&b->lock, &a)) {
        errno = EINVAL;
        return NULL;
    }
    pthread_mutexattr_destroy(&a);
    b->send_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (b->send_fd < 0)
        return NULL;
    b->cap = cap;
    b->max_message = cap / 8 - RT_BUS_HEADER;
    b->instance = instance;
    b->nslots = slots;
    b->slots = rows;
    b->ring = ring;
    return b;
}

void rt_bus_close(rt_bus *b)
{
    if (b && b->send_fd >= 0)
        close(b->send_fd);   /* this process's copy; the shared field keeps the number */
}

size_t rt_bus_max_message(const rt_bus *b) { return b->max_message; }
uint32_t rt_bus_slots(const rt_bus *b) { return b->nslots; }
uint64_t rt_bus_instance(const rt_bus *b) { return b->instance; }

/* ---- ring words -------------------------------------------------------------------------- */

static inline _Atomic uint64_t *word_at(const rt_bus *b, uint64_t pos)
{
    return &b->ring[(pos & (b->cap - 1)) / WORD];
}

/* Streams bytes into the ring as whole words from an 8-aligned position. */
typedef struct ring_writer {
    rt_bus  *b;
    uint64_t pos;
    uint64_t acc;
    unsigned n;     /* bytes in acc */
} ring_writer;

static void rw_word(ring_writer *w, uint64_t v)
{
    atomic_store_explicit(word_at(w->b, w->pos), v, memory_order_relaxed);
    w->pos += WORD;
}

static void rw_bytes(ring_writer *w, const void *p, size_t len)
{
    const uint8_t *s = p;
    while (len) {
        size_t k = WORD - w->n < len ? WORD - w->n : len;
        memcpy((uint8_t *)&w->acc + w->n, s, k);
        w->n += (unsigned)k;
        s += k;
        len -= k;
        if (w->n == WORD) {
            rw_word(w, w->acc);
            w->acc = 0;
            w->n = 0;
        }
    }
}

static void rw_finish(ring_writer *w)
{
    if (w->n)
        rw_word(w, w->acc);   /* the padding is zero */
    w->acc = 0;
    w->n = 0;
}

/* Copies len bytes (rounded up to words) from position pos into dst. */
static void ring_copy(const rt_bus *b, uint64_t pos, void *dst, size_t len)
{
    uint8_t *d = dst;
    for (size_t off = 0; off < len; off += WORD) {
        uint64_t v = atomic_load_explicit(word_at(b, pos + off), memory_order_relaxed);
        memcpy(d + off, &v, len - off < WORD ? len - off : WORD);
    }
}

/* Header word 2: slot | topic length << 32 | flags << 48. */
static inline uint64_t pack_meta(uint32_t slot, size_t tlen, unsigned flags)
{
    return slot | (uint64_t)tlen << 32 | (uint64_t)(flags & 0xff) << 48;
}

static inline uint64_t record_size(uint64_t tlen, uint64_t len)
{
    return RT_BUS_HEADER + round8(tlen + len);
}

/* ---- publishing ---------------------------------------------------------------------------- */

static void bus_lock(rt_bus *b)
{
    int rc = pthread_mutex_lock(&b->lock);
    if (rc == EOWNERDEAD) {
        /* a publisher died while appending. It never stored `tail`, so its
         * half-written bytes are beyond what anyone reads, and `head` only
         * ever moves forward over whole records: nothing to repair. */
        pthread_mutex_consistent(&b->lock);
        rc = 0;
    }
    assert(rc == 0);   /* ENOTRECOVERABLE cannot happen: every owner-death is repaired */
    (void)rc;
}

/* Moves head past the oldest records until `need` more bytes fit. Lock held. */
static void evict(rt_bus *b, uint64_t tail, uint64_t need)
{
    uint64_t head = atomic_load_explicit(&b->head, memory_order_relaxed);
    if (tail + need - head <= b->cap)
        return;
    while (tail + need - head > b->cap) {
        uint64_t meta = atomic_load_explicit(word_at(b, head + 2 * WORD), memory_order_relaxed);
        uint64_t len = atomic_load_explicit(word_at(b, head + 4 * WORD), memory_order_relaxed);
        head += record_size(meta >> 32 & 0xffff, len);
    }
    atomic_store_explicit(&b->head, head, memory_order_relaxed);
    /* the seqlock's write side: a reader that sees any word written after
     * this fence also sees the new head */
    atomic_thread_fence(memory_order_release);
}

static int wake_name(const rt_bus *b, uint32_t slot, struct sockaddr_un *a)
{
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    /* abstract namespace: sun_path[0] is NUL and the name is not terminated */
    int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "myriad-bus-%016llx-%u",
                     (unsigned long long)b->instance, slot);
    return (int)offsetof(struct sockaddr_un, sun_path) + 1 + n;
}

static void wake_readers(rt_bus *b, uint32_t self)
{
    /* pairs with the fence in rt_bus_sleep: either that reader sees the new
     * tail, or this load sees its flag */
    atomic_thread_fence(memory_order_seq_cst);
    uint32_t high = atomic_load_explicit(&b->high, memory_order_acquire);
    for (uint32_t i = 0; i < high; i++) {
        bus_slot *s = &b->slots[i];
        if (i == self || !atomic_load_explicit(&s->asleep, memory_order_relaxed))
            continue;
        if (!atomic_exchange(&s->asleep, 0))
            continue;   /* another publisher woke it */
        struct sockaddr_un a;
        socklen_t alen = (socklen_t)wake_name(b, i, &a);
        /* a dead reader's name is unbound (ECONNREFUSED); a full socket
         * already holds a wake: either way there is nothing to do */
        (void)sendto(b->send_fd, "w", 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&a, alen);
    }
}

int rt_bus_publish(rt_bus *b, uint32_t slot, const void *topic, size_t tlen, const void *data,
                   size_t len, unsigned flags, uint64_t *pubseq)
{
    if (slot >= b->nslots || tlen == 0 || tlen > RT_BUS_TOPIC_MAX)
        return -EINVAL;
    if (len > b->max_message || tlen + len > b->max_message)
        return -EMSGSIZE;
    uint64_t need = record_size(tlen, len);
    bus_lock(b);
    uint64_t pos = atomic_load_explicit(&b->tail, memory_order_relaxed);
    evict(b, pos, need);
    uint64_t msgseq = atomic_load_explicit(&b->msgseq, memory_order_relaxed);
    atomic_store_explicit(&b->msgseq, msgseq + 1, memory_order_relaxed);
    uint64_t seq = atomic_fetch_add_explicit(&b->slots[slot].pubseq, 1, memory_order_relaxed) + 1;
    ring_writer w = { .b = b, .pos = pos };
    rw_word(&w, pos);
    rw_word(&w, msgseq);
    rw_word(&w, pack_meta(slot, tlen, flags));
    rw_word(&w, seq);
    rw_word(&w, len);
    rw_bytes(&w, topic, tlen);
    rw_bytes(&w, data, len);
    rw_finish(&w);
    assert(w.pos == pos + need);
    atomic_store_explicit(&b->tail, pos + need, memory_order_release);
    pthread_mutex_unlock(&b->lock);
    wake_readers(b, slot);
    if (pubseq)
        *pubseq = seq;
    return 0;
}

uint64_t rt_bus_next_id(rt_bus *b, uint32_t slot)
{
    return atomic_fetch_add_explicit(&b->slots[slot % b->nslots].ids, 1, memory_order_relaxed) + 1;
}

/* ---- reading ------------------------------------------------------------------------------- */

static void raise_high(rt_bus *b, uint32_t slot)
{
    uint32_t h = atomic_load(&b->high);
    while (h < slot + 1 && !atomic_compare_exchange_weak(&b->high, &h, slot + 1))
        ;
}

int rt_bus_reader_open(rt_bus *b, uint32_t slot, rt_bus_reader *r)
{
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    if (slot >= b->nslots)
        return -EINVAL;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un a;
    socklen_t alen = (socklen_t)wake_name(b, slot, &a);
    if (bind(fd, (struct sockaddr *)&a, alen) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    r->bus = b;
    r->slot = slot;
    r->fd = fd;
    atomic_store(&b->slots[slot].asleep, 0);
    raise_high(b, slot);
    bus_lock(b);   /* where to start and the number of the record there, together */
    r->cursor = atomic_load_explicit(&b->tail, memory_order_relaxed);
    r->next_msgseq = atomic_load_explicit(&b->msgseq, memory_order_relaxed);
    pthread_mutex_unlock(&b->lock);
    return 0;
}

void rt_bus_reader_close(rt_bus_reader *r)
{
    if (r->fd >= 0) {
        atomic_store(&r->bus->slots[r->slot].asleep, 0);
        close(r->fd);
    }
    free(r->buf);
    r->fd = -1;
    r->buf = NULL;
    r->cap = 0;
}

/* True if the bytes at pos may have been overwritten since they were read. */
static bool overwritten(const rt_bus *b, uint64_t pos)
{
    atomic_thread_fence(memory_order_acquire);   /* the seqlock's read side */
    return atomic_load_explicit(&b->head, memory_order_relaxed) > pos;
}

static int reserve(rt_bus_reader *r, size_t n)
{
    if (n <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap : 256;
    while (cap < n)
        cap *= 2;
    uint8_t *p = realloc(r->buf, cap);
    if (!p)
        return -ENOMEM;
    r->buf = p;
    r->cap = cap;
    return 0;
}

int rt_bus_read(rt_bus_reader *r, rt_bus_msg *m)
{
    rt_bus *b = r->bus;
    for (;;) {
        uint64_t tail = atomic_load_explicit(&b->tail, memory_order_acquire);
        if (r->cursor == tail)
            return 0;
        uint64_t head = atomic_load_explicit(&b->head, memory_order_acquire);
        if (r->cursor < head) {
            r->cursor = head;   /* lapped: the msgseq gap says by how much */
            continue;
        }
        uint64_t h[RT_BUS_HEADER / WORD];
        ring_copy(b, r->cursor, h, sizeof(h));
        if (overwritten(b, r->cursor))
            continue;
        uint64_t tlen = h[2] >> 32 & 0xffff, len = h[4];
        if (h[0] != r->cursor || tlen == 0 || len > b->max_message ||
            tlen + len > b->max_message) {
            /* cannot happen with the invariants above; never trust shared
             * memory blindly: resynchronise at the end */
            r->cursor = tail;
            r->next_msgseq = UINT64_MAX;
            continue;
        }
        uint64_t size = record_size(tlen, len);
        if (reserve(r, round8(tlen + len) + WORD)) {
            r->cursor += size;
            r->lost++;
            r->next_msgseq = h[1] + 1;
            return -ENOMEM;
        }
        ring_copy(b, r->cursor + RT_BUS_HEADER, r->buf, (size_t)round8(tlen + len));
        if (overwritten(b, r->cursor))
            continue;
        if (r->next_msgseq != UINT64_MAX && h[1] > r->next_msgseq)
            r->lost += h[1] - r->next_msgseq;
        r->next_msgseq = h[1] + 1;
        r->cursor += size;
        *m = (rt_bus_msg){
            .slot = (uint32_t)h[2],
            .flags = (unsigned)(h[2] >> 48 & 0xff),
            .pubseq = h[3],
            .msgseq = h[1],
            .topic = (const char *)r->buf,
            .topic_len = (size_t)tlen,
            .data = r->buf + tlen,
            .len = (size_t)len,
        };
        return 1;
    }
}

void rt_bus_reader_drain(rt_bus_reader *r)
{
    char sink[64];
    while (recv(r->fd, sink, sizeof(sink), MSG_DONTWAIT) >= 0 || errno == EINTR)
        ;
}

bool rt_bus_sleep(rt_bus_reader *r)
{
    _Atomic uint32_t *asleep = &r->bus->slots[r->slot].asleep;
    atomic_store_explicit(asleep, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);   /* pairs with wake_readers' */
    if (atomic_load_explicit(&r->bus->tail, memory_order_relaxed) == r->cursor)
        return true;
    atomic_store_explicit(asleep, 0, memory_order_relaxed);
    return false;
}

/* ---- slots --------------------------------------------------------------------------------- */

int32_t rt_bus_slot_pid(const rt_bus *b, uint32_t slot)
{
    return slot < b->nslots ? atomic_load(&b->slots[slot].pid) : 0;
}

void rt_bus_slot_claim(rt_bus *b, uint32_t slot)
{
    if (slot >= b->nslots)
        return;
    atomic_store(&b->slots[slot].pid, (int32_t)getpid());
    raise_high(b, slot);
}

void rt_bus_slot_release(rt_bus *b, uint32_t slot)
{
    if (slot < b->nslots)
        atomic_store(&b->slots[slot].pid, 0);
}

bool rt_bus_slot_live(const rt_bus *b, uint32_t slot)
{
    pid_t pid = rt_bus_slot_pid(b, slot);
    if (pid <= 0)
        return false;
    return pid == getpid() || kill(pid, 0) == 0 || errno == EPERM;
}

uint32_t rt_bus_slots_high(const rt_bus *b) { return atomic_load(&b->high); }
