/* Unit tests for src/rt/bus.c: records round-trip with their origin and
 * sequences; a reader starts at the tail; records wrap around the end of
 * the ring; a lapped reader skips to intact records and counts exactly what
 * it lost; several forked publishers keep their own order; a reader racing
 * a publisher on a tiny ring never returns a torn record; the wake-up
 * socket; a publisher killed while holding the lock does not wedge the
 * others. Every wait is bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rt/bus.c"

#define SLOTS 8

typedef struct fixture {
    shm_region *region;
    rt_bus     *bus;
} fixture;

static fixture make(size_t ring)
{
    static uint64_t made;   /* a fresh instance per bus: fresh wake socket names */
    fixture f;
    f.region = shm_create(rt_bus_shm_size(ring, SLOTS));
    assert_non_null(f.region);
    f.bus = rt_bus_new(f.region, ring, SLOTS, (uint64_t)getpid() << 20 | ++made);
    assert_non_null(f.bus);
    return f;
}

static void unmake(fixture *f)
{
    rt_bus_close(f->bus);
    shm_destroy(f->region);
}

#define PAYLOAD_MAX 300

/* A payload whose bytes derive from (slot, n), so a torn copy is seen:
 * 8 to PAYLOAD_MAX - 1 bytes (out holds at least PAYLOAD_MAX). */
static size_t payload(uint32_t slot, uint64_t n, uint8_t *out, size_t max)
{
    assert_true(max >= PAYLOAD_MAX);
    size_t len = 8 + (size_t)((n * 7919 + slot * 31) % (PAYLOAD_MAX - 8));
    memcpy(out, &n, 8);
    for (size_t i = 8; i < len; i++)
        out[i] = (uint8_t)(n * 131 + i * 7 + slot);
    return len;
}

static bool payload_ok(uint32_t slot, const rt_bus_msg *m, uint64_t *n)
{
    uint8_t want[PAYLOAD_MAX];
    if (m->len < 8)
        return false;
    memcpy(n, m->data, 8);
    size_t len = payload(slot, *n, want, sizeof(want));
    return len == m->len && memcmp(want, m->data, len) == 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- basics ------------------------------------------------------------------------ */

static void test_round_trip(void **state)
{
    fixture f = make(RT_BUS_MIN_RING);
    rt_bus_reader r;
    assert_int_equal(rt_bus_reader_open(f.bus, 1, &r), 0);
    uint64_t seq = 0;
    assert_int_equal(rt_bus_publish(f.bus, 2, "room", 4, "hello", 5, 0, &seq), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(rt_bus_publish(f.bus, 2, "t", 1, "\0\1\2", 3, RT_BUS_BINARY, &seq), 0);
    assert_int_equal(seq, 2);
    assert_int_equal(rt_bus_publish(f.bus, 3, "empty", 5, NULL, 0, 0, &seq), 0);
    assert_int_equal(seq, 1);   /* per publisher */
    rt_bus_msg m;
    assert_int_equal(rt_bus_read(&r, &m), 1);
    assert_int_equal(m.slot, 2);
    assert_int_equal(m.pubseq, 1);
    assert_int_equal(m.flags, 0);
    assert_memory_equal(m.topic, "room", 4);
    assert_int_equal(m.topic_len, 4);
    assert_int_equal(m.len, 5);
    assert_memory_equal(m.data, "hello", 5);
    assert_int_equal(rt_bus_read(&r, &m), 1);
    assert_int_equal(m.flags, RT_BUS_BINARY);
    assert_int_equal(m.len, 3);
    assert_memory_equal(m.data, "\0\1\2", 3);
    assert_int_equal(rt_bus_read(&r, &m), 1);
    assert_int_equal(m.slot, 3);
    assert_int_equal(m.len, 0);
    assert_int_equal(rt_bus_read(&r, &m), 0);
    assert_int_equal(r.lost, 0);
    rt_bus_reader_close(&r);
    unmake(&f);
}

static void test_limits(void **state)
{
    fixture f = make(RT_BUS_MIN_RING);
    size_t max = rt_bus_max_message(f.bus);
    assert_int_equal(max, RT_BUS_MIN_RING / 8 - RT_BUS_HEADER);
    char *big = calloc(1, max + 1);
    assert_int_equal(rt_bus_publish(f.bus, 0, "t", 1, big, max - 1, 0, NULL), 0);
    assert_int_equal(rt_bus_publish(f.bus, 0, "t", 1, big, max, 0, NULL), -EMSGSIZE);
    assert_int_equal(rt_bus_publish(f.bus, 0, "", 0, "x", 1, 0, NULL), -EINVAL);
    assert_int_equal(rt_bus_publish(f.bus, SLOTS, "t", 1, "x", 1, 0, NULL), -EINVAL);
    rt_bus_reader r;
    assert_int_equal(rt_bus_reader_open(f.bus, SLOTS, &r), -EINVAL);
    free(big);
    unmake(&f);
}

static void test_reader_starts_at_the_tail(void **state)
{
    fixture f = make(RT_BUS_MIN_RING);
    assert_int_equal(rt_bus_publish(f.bus, 0, "t", 1, "old", 3, 0, NULL), 0);
    rt_bus_reader r;
    assert_int_equal(rt_bus_reader_open(f.bus, 1, &r), 0);
    rt_bus_msg m;
    assert_int_equal(rt_bus_read(&r, &m), 0);
    assert_int_equal(rt_bus_publish(f.bus, 0, "t", 1, "new", 3, 0, NULL), 0);
    assert_int_equal(rt_bus_read(&r, &m), 1);
    assert_memory_equal(m.data, "new", 3);
    /* a second reader of the same slot in this process: the name is taken */
    rt_bus_reader r2;
    assert_int_equal(rt_bus_reader_open(f.bus, 1, &r2), -EADDRINUSE);
    rt_bus_reader_close(&r);
    assert_int_equal(rt_bus_reader_open(f.bus, 1, &r2), 0);   /* free again */
    rt_bus_reader_close(&r2);
    unmake(&f);
}

/* Records of varying sizes, read as they come, many laps around a small
 * ring: every one intact, the ones that straddle the end included. */
static void test_wrap_around(void **state)
{
    fixture f = make(RT_BUS_MIN_RING);
    rt_bus_reader r;
    assert_int_equal(rt_bus_reader_open(f.bus, 1, &r), 0);
    uint8_t p[PAYLOAD_MAX];
    unsigned straddled = 0;
    for (uint64_t n = 0; n < 20000; n++) {
        size_t len = payload(0, n, p, sizeof(p));
        uint64_t pos = atomic_load(&f.bus->tail);
        assert_int_equal(rt_bus_publish(f.bus, 0, "wrap", 4, p, len, 0, NULL), 0);
        uint64_t end = atomic_load(&f.bus->tail);
        if ((pos & ~(f.bus->cap - 1)) != ((end - 1) & ~(f.bus->cap - 1)))
            straddled++;
        rt_bus_msg m;
        uint64_t got;
        assert_int_equal(rt_bus_read(&r, &m), 1);
        assert_true(payload_ok(0, &m, &got));
        assert_int_equal(got, n);
        assert_int_equal(m.pubseq, n + 1);
    }
    assert_true(straddled > 10);
    assert_true(atomic_load(&f.bus->tail) > 20 * f.bus->cap);
    assert_int_equal(r.lost, 0);
    rt_bus_reader_close(&r);
    unmake(&f);
}

/* A reader that falls more than a ring behind skips to the oldest intact
 * record and counts exactly the records it missed. */
static void test_overrun_is_detected_and_counted(void **state)
{
    fixture f = make(RT_BUS_MIN_RING);
    rt_bus_reader r;
    assert_int_equal(rt_bus_reader_open(f.bus, 1, &r), 0);
    uint8_t p[PAYLOAD_MAX];
    const uint64_t total = 5000;
    for (uint64_t n = 0; n < total; n++)
        assert_int_equal(rt_bus_publish(f.bus, 0, "t", 1, p, payload(0, n, p, sizeof(p)), 0,
                                        NULL), 0);
    rt_bus_msg m;
    uint64_t got = 0, first = UINT64_MAX, prev = 0, n;
    while (rt_bus_read(&r, &m) == 1) {
        assert_true(payload_ok(0, &m, &n));
        if (first == UINT64_MAX)
            first = n;
        else
            assert_int_equal(n, prev + 1);   /* contiguous after the jump */
        prev = n;
        got++;
    }
    assert_true(first > 0);                  /* the start was overwritten */
    assert_int_equal(prev, total - 1);       /* the end is there */
    assert_true(got * 100 < f.bus->cap);     /* at most a ring's worth survives */
    assert_int_equal(r.lost, first);         /* it expected record 0 */
    assert_int_equal(got + r.lost, total);
    rt_bus_reader_close(&r);
    unmake(&f);
}

/* ---- several processes --------------------------------------------------------------- */

static void publisher_child(rt_bus *b, uint32_t slot, uint64_t count)
{
    uint8_t p[PAYLOAD_MAX];
    for (uint64_t n = 0; n < count; n++)
        if (rt_bus_publish(b, slot, "multi", 5, p, payload(slot, n, p, sizeof(p)), 0, NULL))
            _exit(2);
    _exit(0);
}

/* Waits (bounded) for the reader's socket, as a worker's loop would. */
static bool wait_wake(rt_bus_reader *r, int ms)
{
    struct pollfd pfd = { .fd = r->fd, .events = POLLIN };
    int rc = poll(&pfd, 1, ms);
    rt_bus_reader_drain(r);
    return rc == 1;
}

/* Four publisher processes at once, one reader sleeping between wake-ups:
 * everything arrives, each publisher's records in its own order. */
static void test_forked_publishers_keep_their_order(void **state)
{
    fixture f = make(4u << 20);
    rt_bus_reader r;
    assert_int_equal(rt_bus_reader_open(f.bus, 0, &r), 0);
    enum { PUBS = 4, EACH = 5000 };
    pid_t pids[PUBS];
    for (uint32_t i = 0; i < PUBS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0)
            publisher_child(f.bus, i + 1, EACH);
    }
    uint64_t next[PUBS + 1] = { 0 }, got = 0, lost_wakes = 0;
    uint64_t deadline = now_ms() + 30000;
    while (got < PUBS * EACH && now_ms() < deadline) {
        rt_bus_msg m;
        int rc = rt_bus_read(&r, &m);
        if (rc == 1) {
            uint64_t n;
            assert_true(m.slot >= 1 && m.slot <= PUBS);
            assert_true(payload_ok(m.slot, &m, &n));
            assert_int_equal(n, next[m.slot]);
            assert_int_equal(m.pubseq, n + 1);
            next[m.slot]++;
            got++;
            continue;
        }
        /* progress depends on the wakes: a wait that times out with
         * records waiting means a wake-up was lost */
        if (rt_bus_sleep(&r) && !wait_wake(&r, 5000) && rt_bus_sleep(&r) == false)
            lost_wakes++;
    }
    for (uint32_t i = 0; i < PUBS; i++) {
        int st;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    assert_int_equal(got, PUBS * EACH);
    assert_int_equal(r.lost, 0);
    assert_int_equal(lost_wakes, 0);
    rt_bus_reader_close(&r);
    unmake(&f);
}

/* A publisher laps a slow reader over and over on the smallest ring: every
 * record the reader returns is intact (the seqlock check), in order, and
 * what it returned plus what it counted lost is everything published. */
static void test_racing_reader_never_sees_a_torn_record(void **state)
{
    fixture f = make(RT_BUS_MIN_RING);
    rt_bus_reader r;
    assert_int_equal(rt_bus_reader_open(f.bus, 0, &r), 0);
    enum { TOTAL = 300000 };
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        publisher_child(f.bus, 1, TOTAL);
    uint64_t got = 0, prev = 0, first = UINT64_MAX, spins = 0;
    uint64_t deadline = now_ms() + 60000;
    for (;;) {
        rt_bus_msg m;
        int rc = rt_bus_read(&r, &m);
        if (rc == 1) {
            uint64_t n;
            assert_true(payload_ok(1, &m, &n));
            assert_int_equal(m.pubseq, n + 1);
            if (first == UINT64_MAX)
                first = n;
            else
                assert_true(n > prev);
            prev = n;
            got++;
            if (++spins % 64 == 0)
                usleep(50);   /* be slow now and then: get lapped */
            continue;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            while (rt_bus_read(&r, &m) == 1) {   /* the rest */
                uint64_t n;
                assert_true(payload_ok(1, &m, &n));
                assert_true(n > prev);
                prev = n;
                got++;
            }
            break;
        }
        assert_true(now_ms() < deadline);
        usleep(100);
    }
    assert_int_equal(prev, TOTAL - 1);
    assert_true(r.lost > 0);   /* it was lapped */
    assert_int_equal(got + r.lost, TOTAL);
    rt_bus_reader_close(&r);
    unmake(&f);
}

/* A reader asleep in another process is woken by a publish; awake, it is
 * sent nothing, and going to sleep with a record unread fails. */
static void test_sleeping_reader_is_woken(void **state)
{
    fixture f = make(RT_BUS_MIN_RING);
    int up[2], down[2];   /* child -> parent, parent -> child */
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        rt_bus_reader r;
        char c;
        if (rt_bus_reader_open(f.bus, 3, &r) || !rt_bus_sleep(&r))
            _exit(2);
        if (write(up[1], "s", 1) != 1)   /* asleep now */
            _exit(3);
        if (!wait_wake(&r, 5000))
            _exit(4);
        rt_bus_msg m;
        if (rt_bus_read(&r, &m) != 1 || m.len != 4 || memcmp(m.data, "ping", 4))
            _exit(5);
        if (read(down[0], &c, 1) != 1)   /* the parent published "more" */
            _exit(6);
        if (rt_bus_sleep(&r))
            _exit(7);   /* "more" is unread: it must not sleep */
        if (rt_bus_read(&r, &m) != 1 || m.len != 4 || memcmp(m.data, "more", 4))
            _exit(8);
        if (!rt_bus_sleep(&r))
            _exit(9);
        rt_bus_reader_close(&r);
        _exit(0);
    }
    char c;
    assert_int_equal(read(up[0], &c, 1), 1);
    assert_int_equal(atomic_load(&f.bus->slots[3].asleep), 1);
    assert_int_equal(rt_bus_publish(f.bus, 0, "t", 1, "ping", 4, 0, NULL), 0);
    assert_int_equal(atomic_load(&f.bus->slots[3].asleep), 0);   /* claimed by the wake */
    assert_int_equal(rt_bus_publish(f.bus, 0, "t", 1, "more", 4, 0, NULL), 0);
    assert_int_equal(write(down[1], "g", 1), 1);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    close(up[0]);
    close(up[1]);
    close(down[0]);
    close(down[1]);
    unmake(&f);
}

/* kill -9 while holding the publishers' lock, half-way through a record:
 * the next publisher is not blocked, and readers never see the half. */
static void test_publisher_killed_mid_append_does_not_wedge(void **state)
{
    fixture f = make(RT_BUS_MIN_RING);
    rt_bus_reader r;
    assert_int_equal(rt_bus_reader_open(f.bus, 0, &r), 0);
    assert_int_equal(rt_bus_publish(f.bus, 1, "t", 1, "before", 6, 0, NULL), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        bus_lock(f.bus);
        uint64_t pos = atomic_load(&f.bus->tail);
        evict(f.bus, pos, 4096);
        ring_writer w = { .b = f.bus, .pos = pos };
        rw_word(&w, pos);          /* a plausible header ... */
        rw_word(&w, 999);
        rw_word(&w, pack_meta(2, 1, 0));
        rw_word(&w, 1);
        rw_word(&w, 3000);
        for (int i = 0; i < 100; i++)
            rw_word(&w, 0xdeadbeefdeadbeefull);   /* ... and some of its body */
        raise(SIGKILL);            /* never stores tail, never unlocks */
        _exit(9);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    /* another process publishes: EOWNERDEAD is repaired inside */
    pid_t pub = fork();
    assert_true(pub >= 0);
    if (pub == 0)
        _exit(rt_bus_publish(f.bus, 3, "t", 1, "after", 5, 0, NULL) == 0 ? 0 : 1);
    uint64_t deadline = now_ms() + 10000;
    int done = 0;
    while (!(done = waitpid(pub, &st, WNOHANG)) && now_ms() < deadline)
        usleep(1000);
    assert_int_equal(done, pub);   /* not wedged */
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(rt_bus_publish(f.bus, 1, "t", 1, "again", 5, 0, NULL), 0);
    rt_bus_msg m;
    assert_int_equal(rt_bus_read(&r, &m), 1);
    assert_memory_equal(m.data, "before", 6);
    assert_int_equal(rt_bus_read(&r, &m), 1);
    assert_int_equal(m.slot, 3);
    assert_memory_equal(m.data, "after", 5);
    assert_int_equal(rt_bus_read(&r, &m), 1);
    assert_memory_equal(m.data, "again", 5);
    assert_int_equal(rt_bus_read(&r, &m), 0);
    rt_bus_reader_close(&r);
    unmake(&f);
}

/* ---- slots ------------------------------------------------------------------------------ */

static void test_slots_and_ids(void **state)
{
    fixture f = make(RT_BUS_MIN_RING);
    assert_false(rt_bus_slot_live(f.bus, 2));
    rt_bus_slot_claim(f.bus, 2);
    assert_int_equal(rt_bus_slot_pid(f.bus, 2), getpid());
    assert_true(rt_bus_slot_live(f.bus, 2));
    assert_int_equal(rt_bus_slots_high(f.bus), 3);
    rt_bus_slot_release(f.bus, 2);
    assert_false(rt_bus_slot_live(f.bus, 2));
    pid_t pid = fork();   /* a process that has exited is not alive */
    if (pid == 0) {
        rt_bus_slot_claim(f.bus, 4);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_int_equal(rt_bus_slot_pid(f.bus, 4), pid);
    assert_false(rt_bus_slot_live(f.bus, 4));
    assert_int_equal(rt_bus_next_id(f.bus, 4), 1);
    assert_int_equal(rt_bus_next_id(f.bus, 4), 2);
    assert_int_equal(rt_bus_next_id(f.bus, 5), 1);
    unmake(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_reader_starts_at_the_tail),
        cmocka_unit_test(test_wrap_around),
        cmocka_unit_test(test_overrun_is_detected_and_counted),
        cmocka_unit_test(test_forked_publishers_keep_their_order),
        cmocka_unit_test(test_racing_reader_never_sees_a_torn_record),
        cmocka_unit_test(test_sleeping_reader_is_woken),
        cmocka_unit_test(test_publisher_killed_mid_append_does_not_wedge),
        cmocka_unit_test(test_slots_and_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
