/* Unit tests for src/core/loop.c. The .c is included so white-box tests can
 * check the heap invariant and the poll-timeout rounding directly; the rest
 * drives the public API. No test asserts a tight timing bound: waits are
 * guarded by generous watchdog timers and alarm() kills a hung run. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/loop.c"

#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* ---- helpers --------------------------------------------------------- */

static void make_pipe(int fds[2])
{
    assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
}

static void put_byte(int fd)
{
    assert_int_equal(write(fd, "x", 1), 1);
}

static void drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

static uint64_t ms(uint64_t n) { return n * NS_PER_MS; }

/* A watchdog stops the loop and records that it had to. */
struct watchdog {
    loop_timer t;
    loop      *l;
    bool       fired;
};

static void on_watchdog(loop_timer *t)
{
    struct watchdog *w = container_of(t, struct watchdog, t);
    w->fired = true;
    loop_stop(w->l);
}

static void watchdog_arm(struct watchdog *w, loop *l, uint64_t timeout_ms)
{
    *w = (struct watchdog){ .l = l };
    assert_int_equal(loop_timer_start(l, &w->t, timeout_ms, on_watchdog), 0);
}

/* Checks every parent <= child and that each timer knows its slot. */
static void assert_heap_ok(const loop *l)
{
    for (size_t i = 1; i <= l->heap_len; i++) {
        assert_int_equal(l->heap[i]->heap_idx, i);
        if (i > 1)
            assert_false(timer_before(l->heap[i], l->heap[i / 2]));
    }
}

/* ---- I/O ------------------------------------------------------------- */

struct io_probe {
    loop_io  io;
    int      calls;
    uint32_t last;
};

static void on_probe(loop_io *io, uint32_t events)
{
    struct io_probe *p = container_of(io, struct io_probe, io);
    p->calls++;
    p->last = events;
}

static void test_io_level(void **state)
{
    loop *l = loop_new();
    int fds[2];
    make_pipe(fds);
    struct io_probe p = { 0 };
    assert_int_equal(loop_io_add(l, &p.io, fds[0], LOOP_READ, on_probe), 0);

    assert_int_equal(loop_run_once(l, 0), 0);
    assert_int_equal(p.calls, 0);
    put_byte(fds[1]);
    assert_int_equal(loop_run_once(l, 0), 1);
    assert_int_equal(p.calls, 1);
    assert_true(p.last & LOOP_READ);
    assert_int_equal(loop_run_once(l, 0), 1);  /* not drained: fires again */
    assert_int_equal(p.calls, 2);
    drain(fds[0]);
    assert_int_equal(loop_run_once(l, 0), 0);
    assert_int_equal(p.calls, 2);

    assert_int_equal(loop_io_del(l, &p.io), 0);
    assert_int_equal(p.io.fd, -1);
    assert_int_equal(loop_io_del(l, &p.io), -ENOENT);
    close(fds[0]);
    close(fds[1]);
    loop_free(l);
}

static void test_io_edge(void **state)
{
    loop *l = loop_new();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct io_probe p = { 0 };
    assert_int_equal(loop_io_add(l, &p.io, sv[0], LOOP_READ | LOOP_EDGE, on_probe), 0);

    put_byte(sv[1]);
    loop_run_once(l, 0);
    assert_int_equal(p.calls, 1);
    loop_run_once(l, 0);                       /* not drained, but no new edge */
    assert_int_equal(p.calls, 1);
    put_byte(sv[1]);                           /* new data: new edge */
    loop_run_once(l, 0);
    assert_int_equal(p.calls, 2);

    /* Peer close is reported once too. */
    close(sv[1]);
    loop_run_once(l, 0);
    assert_int_equal(p.calls, 3);
    loop_io_del(l, &p.io);
    close(sv[0]);
    loop_free(l);
}

static void test_io_mod(void **state)
{
    loop *l = loop_new();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct io_probe p = { 0 };
    assert_int_equal(loop_io_add(l, &p.io, sv[0], LOOP_READ, on_probe), 0);
    loop_run_once(l, 0);
    assert_int_equal(p.calls, 0);               /* writable, but not asked */

    assert_int_equal(loop_io_mod(l, &p.io, LOOP_WRITE), 0);
    assert_int_equal(p.io.events, LOOP_WRITE);
    loop_run_once(l, 0);
    assert_int_equal(p.calls, 1);
    assert_true(p.last & LOOP_WRITE);
    assert_false(p.last & LOOP_READ);

    put_byte(sv[1]);
    assert_int_equal(loop_io_mod(l, &p.io, LOOP_READ | LOOP_WRITE), 0);
    loop_run_once(l, 0);
    assert_int_equal(p.calls, 2);
    assert_int_equal(p.last & (LOOP_READ | LOOP_WRITE), LOOP_READ | LOOP_WRITE);

    assert_int_equal(loop_io_mod(l, &p.io, LOOP_READ), 0);
    drain(sv[0]);
    loop_run_once(l, 0);
    assert_int_equal(p.calls, 2);

    loop_io_del(l, &p.io);
    assert_int_equal(loop_io_mod(l, &p.io, LOOP_READ), -ENOENT);
    struct io_probe bad = { 0 };
    assert_int_equal(loop_io_add(l, &bad.io, 1000000, LOOP_READ, on_probe), -EBADF);
    assert_int_equal(bad.io.fd, -1);
    close(sv[0]);
    close(sv[1]);
    loop_free(l);
}

/* Two readable pipes, one batch: whichever callback runs first deletes the
 * other io and closes its pipe, and defers freeing it. The other's event,
 * later in the same batch, must not be delivered (ASan would flag a
 * premature free). */
struct victim {
    loop_io        io;
    loop_deferred  d;
    int            fds[2];
    struct victim *other;
    loop          *l;
    int           *calls;
};

static void on_free_victim(loop_deferred *d)
{
    struct victim *v = container_of(d, struct victim, d);
    close(v->fds[0]);
    close(v->fds[1]);
    free(v);
}

static void on_victim(loop_io *io, uint32_t events)
{
    struct victim *v = container_of(io, struct victim, io);
    (*v->calls)++;
    struct victim *o = v->other;
    if (o) {
        o->other = NULL;
        v->other = NULL;
        assert_int_equal(loop_io_del(v->l, &o->io), 0);
        loop_defer(v->l, &o->d, on_free_victim);
    }
}

static void test_io_del_later_in_batch(void **state)
{
    loop *l = loop_new();
    int calls = 0;
    struct victim *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    *a = (struct victim){ .other = b, .l = l, .calls = &calls };
    *b = (struct victim){ .other = a, .l = l, .calls = &calls };
    make_pipe(a->fds);
    make_pipe(b->fds);
    assert_int_equal(loop_io_add(l, &a->io, a->fds[0], LOOP_READ, on_victim), 0);
    assert_int_equal(loop_io_add(l, &b->io, b->fds[0], LOOP_READ, on_victim), 0);
    put_byte(a->fds[1]);
    put_byte(b->fds[1]);

    assert_int_equal(loop_run_once(l, 0), 2);  /* both fetched in one batch */
    assert_int_equal(calls, 1);                 /* ... one delivered */

    struct victim *live = a->io.fd >= 0 ? a : b;
    loop_io_del(l, &live->io);
    loop_defer(l, &live->d, on_free_victim);
    loop_run_once(l, 0);
    loop_free(l);
}

/* A loop_io_mod earlier in the batch masks what is delivered later. */
struct modder {
    loop_io          io;
    struct io_probe *target;
    int              target_calls_at_mod;
    loop            *l;
};

static void on_modder(loop_io *io, uint32_t events)
{
    struct modder *m = container_of(io, struct modder, io);
    if (m->target) {
        m->target_calls_at_mod = m->target->calls;
        assert_int_equal(loop_io_mod(m->l, &m->target->io, LOOP_WRITE), 0);
        m->target = NULL;
    }
}

static void test_io_mod_masks_batch(void **state)
{
    loop *l = loop_new();
    int p1[2], p2[2];
    make_pipe(p1);
    make_pipe(p2);
    struct io_probe probe = { 0 };
    struct modder m = { .target = &probe, .l = l };
    /* The pipe's read end is never writable, so after the mod nothing may
     * be delivered to probe, even its read event if it comes later in the
     * batch than the modder's. */
    assert_int_equal(loop_io_add(l, &m.io, p1[0], LOOP_READ, on_modder), 0);
    assert_int_equal(loop_io_add(l, &probe.io, p2[0], LOOP_READ, on_probe), 0);
    put_byte(p1[1]);
    put_byte(p2[1]);
    assert_int_equal(loop_run_once(l, 0), 2);
    assert_null(m.target);
    assert_int_equal(probe.calls, m.target_calls_at_mod);
    loop_run_once(l, 0);
    assert_int_equal(probe.calls, m.target_calls_at_mod);
    loop_io_del(l, &m.io);
    loop_io_del(l, &probe.io);
    for (int i = 0; i < 2; i++) {
        close(p1[i]);
        close(p2[i]);
    }
    loop_free(l);
}

/* ---- timers ---------------------------------------------------------- */

struct order_timer {
    loop_timer t;
    int        id;
    uint64_t   fired_at;
    int       *log;
    int       *nlog;
    loop      *l;
};

static void on_order(loop_timer *t)
{
    struct order_timer *o = container_of(t, struct order_timer, t);
    o->fired_at = loop_now(o->l);
    o->log[(*o->nlog)++] = o->id;
    assert_false(loop_timer_active(t));        /* out of the heap in its cb */
    if (*o->nlog == 5)
        loop_stop(o->l);     /* test_timers_order's last */
}

static void test_timers_order(void **state)
{
    loop *l = loop_new();
    const uint64_t timeouts[5] = { 30, 10, 20, 0, 10 };
    const int expect[5] = { 3, 1, 4, 2, 0 };    /* by deadline, ties FIFO */
    int log[5], nlog = 0;
    struct order_timer o[5];
    uint64_t start = loop_now(l);
    for (int i = 0; i < 5; i++) {
        o[i] = (struct order_timer){ .id = i, .log = log, .nlog = &nlog, .l = l };
        assert_int_equal(loop_timer_start(l, &o[i].t, timeouts[i], on_order), 0);
        assert_true(loop_timer_active(&o[i].t));
    }
    assert_int_equal(loop_timer_count(l), 5);
    assert_heap_ok(l);
    struct watchdog w;
    watchdog_arm(&w, l, 10000);
    assert_int_equal(loop_run(l), 0);
    assert_false(w.fired);
    assert_int_equal(nlog, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(log[i], expect[i]);
        assert_true(o[i].fired_at >= start + ms(timeouts[i]));
    }
    loop_timer_stop(l, &w.t);
    assert_int_equal(loop_timer_count(l), 0);
    loop_free(l);
}

/* Equal deadlines fire in arming order; a re-armed timer goes to the back. */
static void test_timer_ties_fifo(void **state)
{
    loop *l = loop_new();
    enum { N = 100 };
    int log[N + 1], nlog = 0;
    struct order_timer o[N];
    uint64_t deadline = loop_now(l) + ms(1);
    for (int i = 0; i < N; i++) {
        o[i] = (struct order_timer){ .id = i, .log = log, .nlog = &nlog, .l = l };
        assert_int_equal(loop_timer_start_at(l, &o[i].t, deadline, on_order), 0);
    }
    assert_int_equal(loop_timer_start_at(l, &o[0].t, deadline, on_order), 0);
    struct watchdog w;
    watchdog_arm(&w, l, 10000);
    while (nlog < N && !w.fired)
        loop_run_once(l, -1);
    assert_int_equal(nlog, N);
    for (int i = 0; i < N - 1; i++)
        assert_int_equal(log[i], i + 1);
    assert_int_equal(log[N - 1], 0);
    loop_timer_stop(l, &w.t);
    loop_free(l);
}

struct count_timer {
    loop_timer t;
    int        calls;
    uint64_t   fired_at;
    loop      *l;
    bool       stop_loop;
};

static void on_count(loop_timer *t)
{
    struct count_timer *c = container_of(t, struct count_timer, t);
    c->calls++;
    c->fired_at = loop_now(c->l);
    if (c->stop_loop)
        loop_stop(c->l);
}

static void test_timer_rearm_stop(void **state)
{
    loop *l = loop_new();
    uint64_t start = loop_now(l);
    struct count_timer later = { .l = l, .stop_loop = true };
    struct count_timer stopped = { .l = l };
    struct count_timer sooner = { .l = l };

    assert_int_equal(loop_timer_start(l, &later.t, 10, on_count), 0);
    assert_int_equal(loop_timer_start(l, &later.t, 40, on_count), 0);  /* moves later */
    assert_int_equal(loop_timer_start(l, &stopped.t, 5, on_count), 0);
    assert_int_equal(loop_timer_start(l, &sooner.t, 100000, on_count), 0);
    assert_int_equal(loop_timer_start(l, &sooner.t, 1, on_count), 0);  /* moves sooner */
    assert_int_equal(loop_timer_count(l), 3);
    assert_heap_ok(l);
    loop_timer_stop(l, &stopped.t);
    assert_false(loop_timer_active(&stopped.t));
    loop_timer_stop(l, &stopped.t);             /* stopping twice is a no-op */
    assert_int_equal(loop_timer_count(l), 2);

    struct watchdog w;
    watchdog_arm(&w, l, 10000);
    assert_int_equal(loop_run(l), 0);
    assert_false(w.fired);
    assert_int_equal(later.calls, 1);
    assert_true(later.fired_at >= start + ms(40));
    assert_int_equal(sooner.calls, 1);
    assert_true(sooner.fired_at < later.fired_at);
    assert_int_equal(stopped.calls, 0);
    loop_timer_stop(l, &w.t);

    /* A deadline in the past is clamped to now and fires next iteration. */
    assert_int_equal(loop_timer_start_at(l, &stopped.t, 1, on_count), 0);
    assert_int_equal(stopped.t.deadline, loop_now(l));
    loop_run_once(l, 0);
    assert_int_equal(stopped.calls, 1);
    /* A huge timeout saturates instead of wrapping into the past. */
    assert_int_equal(loop_timer_start(l, &stopped.t, UINT64_MAX, on_count), 0);
    assert_int_equal(stopped.t.deadline, UINT64_MAX);
    loop_timer_stop(l, &stopped.t);
    loop_free(l);
}

/* Random start / re-arm / stop against the heap invariant. */
static void test_timer_heap_random(void **state)
{
    loop *l = loop_new();
    enum { N = 4096 };
    loop_timer *t = calloc(N, sizeof *t);
    srand(7);
    for (int op = 0; op < 200000; op++) {
        loop_timer *x = &t[rand() % N];
        if (rand() % 3 == 0)
            loop_timer_stop(l, x);
        else
            loop_timer_start_at(l, x, l->now + (uint64_t)(rand() % 1000), on_count);
        if (op % 10007 == 0)
            assert_heap_ok(l);
    }
    assert_heap_ok(l);
    size_t armed = 0;
    for (int i = 0; i < N; i++)
        armed += loop_timer_active(&t[i]);
    assert_int_equal(armed, loop_timer_count(l));
    for (int i = 0; i < N; i++)
        loop_timer_stop(l, &t[i]);
    assert_int_equal(loop_timer_count(l), 0);
    assert_int_equal(l->heap_cap, HEAP_MIN_CAP);   /* shrunk back */
    free(t);
    loop_free(l);
}

/* A timer that re-arms itself with timeout 0 fires once per iteration, and
 * I/O keeps being served. */
struct spinner {
    loop_timer t;
    loop      *l;
    int        calls;
};

static void on_spin(loop_timer *t)
{
    struct spinner *s = container_of(t, struct spinner, t);
    s->calls++;
    loop_timer_start(s->l, t, 0, on_spin);
}

static void test_timer_zero_no_starve(void **state)
{
    loop *l = loop_new();
    int fds[2];
    make_pipe(fds);
    struct io_probe p = { 0 };
    assert_int_equal(loop_io_add(l, &p.io, fds[0], LOOP_READ, on_probe), 0);
    struct spinner s = { .l = l };
    struct count_timer other = { .l = l };
    assert_int_equal(loop_timer_start(l, &s.t, 0, on_spin), 0);
    assert_int_equal(loop_timer_start(l, &other.t, 0, on_count), 0);
    put_byte(fds[1]);

    for (int i = 1; i <= 10; i++) {
        loop_run_once(l, -1);                   /* must not block: timer due */
        assert_int_equal(s.calls, i);
        assert_int_equal(p.calls, i);
    }
    assert_int_equal(other.calls, 1);
    assert_int_equal(loop_iterations(l), 10);
    loop_timer_stop(l, &s.t);
    loop_io_del(l, &p.io);
    close(fds[0]);
    close(fds[1]);
    loop_free(l);
}

/* 1M timers with random deadlines within 200 ms; half stopped; the rest must
 * fire in deadline order, through the real loop. Also measures start+stop
 * with 1M armed. */
enum { MILLION = 1000000 };

struct million {
    loop_timer *t;
    uint64_t    last_deadline;
    size_t      fired;
    bool        in_order;
    bool        only_even;
};

static struct million *g_million;  /* test-only: a timer cb has no context */

static void on_million(loop_timer *t)
{
    struct million *m = g_million;
    if (t->deadline < m->last_deadline)
        m->in_order = false;
    if ((t - m->t) % 2 != 0)
        m->only_even = false;
    m->last_deadline = t->deadline;
    m->fired++;
}

static double elapsed_ns(uint64_t since) { return (double)(clock_now() - since); }

static void test_timer_million(void **state)
{
    loop *l = loop_new();
    struct million m = { .in_order = true, .only_even = true };
    m.t = calloc(MILLION, sizeof *m.t);
    assert_non_null(m.t);
    g_million = &m;
    srand(42);
    uint64_t base = loop_now(l), t0 = clock_now();
    for (int i = 0; i < MILLION; i++)
        assert_int_equal(loop_timer_start_at(l, &m.t[i], base + (uint64_t)(rand() % 200000000), on_million), 0);
    double arm_ns = elapsed_ns(t0) / MILLION;
    assert_int_equal(loop_timer_count(l), MILLION);

    enum { PROBES = 200000 };
    loop_timer probe = { 0 };
    t0 = clock_now();
    for (int i = 0; i < PROBES; i++) {
        loop_timer_start_at(l, &probe, base + (uint64_t)(rand() % 200000000), on_million);
        loop_timer_stop(l, &probe);
    }
    double startstop_ns = elapsed_ns(t0) / PROBES;

    t0 = clock_now();
    for (int i = 1; i < MILLION; i += 2)
        loop_timer_stop(l, &m.t[i]);
    double stop_ns = elapsed_ns(t0) / (MILLION / 2);
    assert_int_equal(loop_timer_count(l), MILLION / 2);
    assert_heap_ok(l);

    struct watchdog w;
    watchdog_arm(&w, l, 20000);
    t0 = clock_now();
    while (loop_timer_count(l) > 1)             /* the watchdog remains */
        assert_true(loop_run_once(l, -1) >= 0);
    double fire_ns = elapsed_ns(t0);
    assert_false(w.fired);
    assert_int_equal(m.fired, MILLION / 2);
    assert_true(m.in_order);
    assert_true(m.only_even);
    print_message("  [measure] 1M timers: arm %.0f ns/timer, start+stop with 1M armed "
                  "%.0f ns, stop %.0f ns/timer, 500k fired in %.1f ms (%" PRIu64 " iterations)\n",
                  arm_ns, startstop_ns, stop_ns, fire_ns / 1e6, loop_iterations(l));
    loop_timer_stop(l, &w.t);
    free(m.t);
    loop_free(l);
}

/* ---- clock and poll timeout ------------------------------------------ */

struct clock_probe {
    loop_timer t;
    loop      *l;
    uint64_t   before, after_sleep, refreshed;
};

static void on_clock(loop_timer *t)
{
    struct clock_probe *c = container_of(t, struct clock_probe, t);
    c->before = loop_now(c->l);
    usleep(3000);
    c->after_sleep = loop_now(c->l);
    c->refreshed = loop_update_time(c->l);
}

static void test_clock(void **state)
{
    loop *l = loop_new();
    struct clock_probe c = { .l = l };
    loop_timer_start(l, &c.t, 0, on_clock);
    uint64_t prev = loop_now(l);
    loop_run_once(l, 0);
    assert_true(c.before >= prev);
    assert_int_equal(c.after_sleep, c.before);  /* cached within an iteration */
    assert_true(c.refreshed >= c.before + 2000000);
    assert_int_equal(loop_now(l), c.refreshed);

    prev = loop_now(l);
    loop_run_once(l, 5);                        /* nothing to do: waits ~5 ms */
    assert_true(loop_now(l) >= prev + 4000000);
    for (int i = 0; i < 100; i++) {
        prev = loop_now(l);
        loop_run_once(l, 0);
        assert_true(loop_now(l) >= prev);
    }
    loop_free(l);
}

static void on_nothing_deferred(loop_deferred *d) { (void)d; }

static void test_poll_timeout(void **state)
{
    loop *l = loop_new();
    assert_int_equal(poll_timeout(l, -1), -1);   /* nothing to wait for */
    assert_int_equal(poll_timeout(l, 7), 7);

    /* 0.5 ms ahead rounds up to 1 ms; 0 only once the deadline is reached. */
    loop_timer t = { 0 };
    uint64_t deadline = clock_now() + 500000;
    loop_timer_start_at(l, &t, deadline, on_count);
    int to = poll_timeout(l, -1);
    assert_true(to == 1 || clock_now() >= deadline);
    assert_true(to == 0 || to == 1);
    deadline = clock_now() + ms(250) + 1;
    loop_timer_start_at(l, &t, deadline, on_count);
    to = poll_timeout(l, -1);
    assert_true(to >= 240 && to <= 251);
    assert_int_equal(poll_timeout(l, 3), 3);     /* caller's cap wins */

    /* Queued deferred work means: don't block. */
    loop_deferred d = { 0 };
    loop_defer(l, &d, on_nothing_deferred);
    assert_int_equal(poll_timeout(l, -1), 0);
    loop_run_once(l, 0);
    loop_timer_stop(l, &t);

    /* End to end: a 2.5 ms timer fires after one poll, without spinning. */
    struct count_timer c = { .l = l, .stop_loop = true };
    loop_timer_start_at(l, &c.t, loop_update_time(l) + 2500000, on_count);
    uint64_t iter = loop_iterations(l);
    loop_run(l);
    assert_int_equal(c.calls, 1);
    assert_true(loop_iterations(l) - iter <= 2);
    loop_free(l);
}

/* ---- async ----------------------------------------------------------- */

/* Strict counter protocol: each sender publishes i, sends, and waits until
 * the loop has acknowledged i. A send lost after a callback started would
 * leave its sender waiting forever (caught by the watchdog). */
enum { SENDERS = 4, ROUNDS = 2000, BLAST = 5000 };

struct proto {
    loop_async    a;
    loop         *l;
    _Atomic long  slot[SENDERS];
    _Atomic long  ack[SENDERS];
    _Atomic bool  abort;
    int           done;
    long          calls;
};

struct sender {
    struct proto *p;
    int           id;
};

static void *proto_sender(void *arg)
{
    struct sender *s = arg;
    for (long i = 1; i <= ROUNDS; i++) {
        atomic_store(&s->p->slot[s->id], i);
        loop_async_send(&s->p->a);
        while (atomic_load(&s->p->ack[s->id]) < i && !atomic_load(&s->p->abort))
            sched_yield();
    }
    return NULL;
}

static void on_proto(loop_async *a)
{
    struct proto *p = container_of(a, struct proto, a);
    p->calls++;
    int done = 0;
    for (int i = 0; i < SENDERS; i++) {
        long v = atomic_load(&p->slot[i]);
        atomic_store(&p->ack[i], v);
        done += v == ROUNDS;
    }
    if (done == SENDERS)
        loop_stop(p->l);
}

static void test_async_protocol(void **state)
{
    struct proto *p = calloc(1, sizeof *p);
    p->l = loop_new();
    assert_int_equal(loop_async_init(p->l, &p->a, on_proto), 0);
    struct watchdog w;
    watchdog_arm(&w, p->l, 30000);
    pthread_t th[SENDERS];
    struct sender s[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        s[i] = (struct sender){ .p = p, .id = i };
        assert_int_equal(pthread_create(&th[i], NULL, proto_sender, &s[i]), 0);
    }
    assert_int_equal(loop_run(p->l), 0);
    atomic_store(&p->abort, true);
    for (int i = 0; i < SENDERS; i++)
        pthread_join(th[i], NULL);
    assert_false(w.fired);
    assert_true(p->calls >= ROUNDS);            /* every round needed a call */
    assert_true(p->calls <= SENDERS * ROUNDS);  /* ... and sends coalesce */
    loop_timer_stop(p->l, &w.t);
    loop_async_close(p->l, &p->a);
    loop_free(p->l);
    free(p);
}

/* Fire-and-forget senders: the callback runs at least once after the last
 * send, i.e. some callback observes the final count. */
struct blast {
    loop_async   a;
    loop        *l;
    _Atomic long sent;
    long         calls;
};

static void *blast_sender(void *arg)
{
    struct blast *b = arg;
    for (int i = 0; i < BLAST; i++) {
        atomic_fetch_add(&b->sent, 1);
        loop_async_send(&b->a);
    }
    return NULL;
}

static void on_blast(loop_async *a)
{
    struct blast *b = container_of(a, struct blast, a);
    b->calls++;
    if (atomic_load(&b->sent) == SENDERS * BLAST)
        loop_stop(b->l);
}

static void test_async_blast(void **state)
{
    struct blast *b = calloc(1, sizeof *b);
    b->l = loop_new();
    loop_async_init(b->l, &b->a, on_blast);
    struct watchdog w;
    watchdog_arm(&w, b->l, 30000);
    pthread_t th[SENDERS];
    for (int i = 0; i < SENDERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, blast_sender, b), 0);
    assert_int_equal(loop_run(b->l), 0);
    for (int i = 0; i < SENDERS; i++)
        pthread_join(th[i], NULL);
    assert_false(w.fired);
    assert_true(b->calls >= 1 && b->calls <= SENDERS * BLAST);
    print_message("  [measure] %d sends from %d threads -> %ld callbacks\n",
                  SENDERS * BLAST, SENDERS, b->calls);
    loop_timer_stop(b->l, &w.t);
    loop_async_close(b->l, &b->a);
    loop_free(b->l);
    free(b);
}

struct echo_async {
    loop_async a;
    loop      *l;
    int        calls;
    int        resend;    /* sends itself this many more times from its cb */
};

static void on_echo(loop_async *a)
{
    struct echo_async *e = container_of(a, struct echo_async, a);
    e->calls++;
    if (e->resend > 0) {
        e->resend--;
        loop_async_send(a);
    }
}

static struct echo_async *g_sig_async;  /* test-only: for the handler */

static void on_sigwinch(int signo) { loop_async_send(&g_sig_async->a); }

static void test_async_coalesce(void **state)
{
    loop *l = loop_new();
    struct echo_async e = { .l = l }, other = { .l = l };
    loop_async_init(l, &e.a, on_echo);
    loop_async_init(l, &other.a, on_echo);
    for (int i = 0; i < 100; i++)
        loop_async_send(&e.a);
    loop_run_once(l, 0);
    assert_int_equal(e.calls, 1);              /* 100 sends, one call */
    assert_int_equal(other.calls, 0);          /* only the sent one runs */
    loop_run_once(l, 0);
    assert_int_equal(e.calls, 1);

    /* A send during the callback causes another call, next iteration. */
    e.resend = 1;
    loop_async_send(&e.a);
    loop_run_once(l, 0);
    assert_int_equal(e.calls, 2);
    loop_run_once(l, 0);
    assert_int_equal(e.calls, 3);
    loop_run_once(l, 0);
    assert_int_equal(e.calls, 3);

    /* From a signal handler (async-signal-safe), errno preserved. */
    g_sig_async = &e;
    struct sigaction sa = { .sa_handler = on_sigwinch }, old;
    sigaction(SIGWINCH, &sa, &old);
    errno = 1234;
    raise(SIGWINCH);
    assert_int_equal(errno, 1234);
    loop_run_once(l, 1000);
    assert_int_equal(e.calls, 4);
    sigaction(SIGWINCH, &old, NULL);

    loop_async_close(l, &other.a);
    loop_async_close(l, &e.a);
    assert_null(l->asyncs);
    loop_free(l);
}

/* Closing another async from a callback during the walk: it is skipped. */
struct closer {
    loop_async  a;
    loop_async *victim;
    loop       *l;
    int         calls;
};

static void on_closer(loop_async *a)
{
    struct closer *c = container_of(a, struct closer, a);
    c->calls++;
    if (c->victim) {
        loop_async_close(c->l, c->victim);
        c->victim = NULL;
    }
}

static void test_async_close_during_walk(void **state)
{
    loop *l = loop_new();
    struct closer x = { .l = l }, y = { .l = l };
    loop_async_init(l, &x.a, on_closer);
    loop_async_init(l, &y.a, on_closer);
    x.victim = &y.a;
    y.victim = &x.a;
    loop_async_send(&x.a);
    loop_async_send(&y.a);
    loop_run_once(l, 0);
    assert_int_equal(x.calls + y.calls, 1);
    assert_non_null(l->asyncs);
    assert_null(l->asyncs->next);
    loop_async_close(l, l->asyncs);
    loop_free(l);
}

/* ---- signals --------------------------------------------------------- */

struct sig_probe {
    loop_signal  s;
    loop        *l;
    int          calls;
    int          last;
    loop_signal *victim;
};

static void on_sig(loop_signal *s, int signo)
{
    struct sig_probe *p = container_of(s, struct sig_probe, s);
    p->calls++;
    p->last = signo;
    if (p->victim) {
        loop_signal_del(p->l, p->victim);
        p->victim = NULL;
    }
}

static bool thread_blocks(int signo)
{
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    return sigismember(&cur, signo);
}

static void test_signals(void **state)
{
    loop *l = loop_new();
    struct sig_probe u1 = { .l = l }, u1b = { .l = l }, u2 = { .l = l };
    assert_false(thread_blocks(SIGUSR1));
    assert_int_equal(loop_signal_add(l, &u1.s, SIGUSR1, on_sig), 0);
    assert_int_equal(loop_signal_add(l, &u1b.s, SIGUSR1, on_sig), 0);
    assert_int_equal(loop_signal_add(l, &u2.s, SIGUSR2, on_sig), 0);
    assert_true(thread_blocks(SIGUSR1));
    assert_true(thread_blocks(SIGUSR2));
    struct sig_probe bad = { 0 };
    assert_int_equal(loop_signal_add(l, &bad.s, SIGKILL, on_sig), -EINVAL);
    assert_int_equal(loop_signal_add(l, &bad.s, 0, on_sig), -EINVAL);

    raise(SIGUSR1);                            /* thread-directed */
    kill(getpid(), SIGUSR2);                   /* process-directed */
    struct watchdog w;
    watchdog_arm(&w, l, 10000);
    while (!w.fired && (u1.calls == 0 || u2.calls == 0))
        loop_run_once(l, -1);
    assert_false(w.fired);
    assert_int_equal(u1.calls, 1);
    assert_int_equal(u1b.calls, 1);            /* every registration is called */
    assert_int_equal(u1.last, SIGUSR1);
    assert_int_equal(u2.calls, 1);
    assert_int_equal(u2.last, SIGUSR2);

    loop_signal_del(l, &u1.s);
    assert_true(thread_blocks(SIGUSR1));       /* u1b still registered */
    raise(SIGUSR1);
    while (!w.fired && u1b.calls < 2)
        loop_run_once(l, -1);
    assert_int_equal(u1.calls, 1);
    assert_int_equal(u1b.calls, 2);
    loop_signal_del(l, &u1b.s);
    assert_false(thread_blocks(SIGUSR1));
    loop_signal_del(l, &u2.s);
    assert_false(thread_blocks(SIGUSR2));
    loop_signal_del(l, &u2.s);                 /* not registered: no-op */
    loop_timer_stop(l, &w.t);
    loop_free(l);
}

/* A signal the thread had blocked itself stays blocked after del; a
 * registration removed during delivery is not called. */
static void test_signals_preblocked_and_del_in_cb(void **state)
{
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &one, NULL);

    loop *l = loop_new();
    struct sig_probe first = { .l = l }, second = { .l = l };
    loop_signal_add(l, &first.s, SIGUSR2, on_sig);
    loop_signal_add(l, &second.s, SIGUSR2, on_sig);
    /* Newest is walked first: second removes first before it is reached. */
    second.victim = &first.s;
    first.victim = &second.s;
    raise(SIGUSR2);
    struct watchdog w;
    watchdog_arm(&w, l, 10000);
    while (!w.fired && first.calls + second.calls == 0)
        loop_run_once(l, -1);
    assert_int_equal(first.calls + second.calls, 1);
    loop_signal_del(l, &first.s);
    loop_signal_del(l, &second.s);
    assert_null(l->signals);
    assert_true(thread_blocks(SIGUSR2));
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    loop_timer_stop(l, &w.t);
    loop_free(l);
}

/* ---- deferred -------------------------------------------------------- */

struct dprobe {
    loop_deferred  d;
    loop          *l;
    char           id;
    char          *log;
    struct dprobe *chain;   /* deferred from this one's callback */
};

static void on_dprobe(loop_deferred *d)
{
    struct dprobe *p = container_of(d, struct dprobe, d);
    strncat(p->log, &p->id, 1);
    assert_false(d->queued);
    if (p->chain)
        loop_defer(p->l, &p->chain->d, on_dprobe);
}

static void test_deferred(void **state)
{
    loop *l = loop_new();
    char log[32] = "";
    struct dprobe a = { .l = l, .id = 'a', .log = log },
                  b = { .l = l, .id = 'b', .log = log },
                  c = { .l = l, .id = 'c', .log = log },
                  d = { .l = l, .id = 'd', .log = log };
    a.chain = &d;
    loop_defer(l, &a.d, on_dprobe);
    loop_defer(l, &b.d, on_dprobe);
    loop_defer(l, &a.d, on_dprobe);            /* already queued: no-op */
    loop_defer(l, &c.d, on_dprobe);
    assert_true(a.d.queued);

    /* Queued work means the poll must not block, even with -1. */
    struct watchdog w;
    watchdog_arm(&w, l, 5000);
    uint64_t t0 = clock_now();
    loop_run_once(l, -1);
    assert_true(clock_now() - t0 < ms(1000));
    assert_string_equal(log, "abc");           /* FIFO; d waits */
    assert_true(d.d.queued);
    loop_run_once(l, -1);
    assert_string_equal(log, "abcd");
    assert_false(w.fired);
    loop_timer_stop(l, &w.t);
    loop_free(l);
}

/* ---- lifecycle ------------------------------------------------------- */

struct stopper {
    loop_timer t;
    loop      *l;
    int        calls;
    int        stop_at;
};

static void on_stopper(loop_timer *t)
{
    struct stopper *s = container_of(t, struct stopper, t);
    if (++s->calls == s->stop_at)
        loop_stop(s->l);
    else
        loop_timer_start(s->l, t, 1, on_stopper);
}

static void test_stop(void **state)
{
    loop *l = loop_new();
    struct stopper s = { .l = l, .stop_at = 3 };
    loop_timer_start(l, &s.t, 1, on_stopper);
    assert_int_equal(loop_run(l), 0);
    assert_int_equal(s.calls, 3);

    s.stop_at = 5;                             /* the loop runs again */
    loop_timer_start(l, &s.t, 1, on_stopper);
    assert_int_equal(loop_run(l), 0);
    assert_int_equal(s.calls, 5);

    uint64_t iter = loop_iterations(l);
    loop_stop(l);                              /* pending stop: returns at once */
    assert_int_equal(loop_run(l), 0);
    assert_int_equal(loop_iterations(l), iter);
    loop_free(l);
}

/* Two loops in two threads, each with its own pipe, timer and async. The
 * timer writes TICKS-1 bytes to the pipe, 1 ms apart; the asyncs play
 * ping-pong, which measures the cross-thread round trip. A loop stops once
 * it has answered PINGS pings and read every byte its own timer wrote. */
enum { PINGS = 5000, TICKS = 20 };

struct peer {
    loop           *l;
    loop_async      a;
    struct peer    *other;
    loop_timer      tick;
    loop_io         io;
    int             fds[2];
    int             ticks, reads;
    long            pings;
    _Atomic bool    ready;
    struct watchdog w;
};

static void peer_maybe_stop(struct peer *p)
{
    if (p->pings >= PINGS && p->reads == TICKS - 1)
        loop_stop(p->l);
}

static void on_tick(loop_timer *t)
{
    struct peer *p = container_of(t, struct peer, tick);
    if (++p->ticks < TICKS) {
        put_byte(p->fds[1]);
        loop_timer_start(p->l, t, 1, on_tick);
    }
}

static void on_peer_read(loop_io *io, uint32_t events)
{
    struct peer *p = container_of(io, struct peer, io);
    char c;
    while (read(p->fds[0], &c, 1) == 1)
        p->reads++;
    peer_maybe_stop(p);
}

/* Answers pings 1..PINGS; the (PINGS+1)th, if it arrives, is not answered. */
static void on_ping(loop_async *a)
{
    struct peer *p = container_of(a, struct peer, a);
    if (++p->pings <= PINGS)
        loop_async_send(&p->other->a);
    peer_maybe_stop(p);
}

static void peer_setup(struct peer *p)
{
    p->l = loop_new();
    assert_non_null(p->l);
    make_pipe(p->fds);
    loop_async_init(p->l, &p->a, on_ping);
    loop_io_add(p->l, &p->io, p->fds[0], LOOP_READ, on_peer_read);
    loop_timer_start(p->l, &p->tick, 1, on_tick);
    watchdog_arm(&p->w, p->l, 30000);
}

static void peer_teardown(struct peer *p)
{
    loop_timer_stop(p->l, &p->tick);
    loop_timer_stop(p->l, &p->w.t);
    loop_io_del(p->l, &p->io);
    loop_async_close(p->l, &p->a);
    close(p->fds[0]);
    close(p->fds[1]);
    loop_free(p->l);
}

static void *peer_thread(void *arg)
{
    struct peer *p = arg;
    peer_setup(p);
    atomic_store(&p->ready, true);
    loop_run(p->l);
    return NULL;
}

static void test_two_loops(void **state)
{
    struct peer a = { 0 }, b = { 0 };
    a.other = &b;
    b.other = &a;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, peer_thread, &b), 0);
    peer_setup(&a);
    while (!atomic_load(&b.ready))
        sched_yield();
    uint64_t t0 = clock_now();
    loop_async_send(&b.a);                     /* the first ping */
    assert_int_equal(loop_run(a.l), 0);
    double ns = (double)(clock_now() - t0);
    pthread_join(th, NULL);

    assert_false(a.w.fired);
    assert_false(b.w.fired);
    assert_int_equal(a.pings, PINGS);
    assert_true(b.pings == PINGS || b.pings == PINGS + 1);
    assert_int_equal(a.reads, TICKS - 1);      /* each loop saw its own I/O */
    assert_int_equal(b.reads, TICKS - 1);
    print_message("  [measure] async round trip between two loop threads: %.1f us "
                  "(%d round trips, incl. timer/pipe work)\n", ns / 1e3 / PINGS, PINGS);
    peer_teardown(&b);
    peer_teardown(&a);
}

int main(void)
{
    alarm(120);  /* a hang is a failure */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_level),
        cmocka_unit_test(test_io_edge),
        cmocka_unit_test(test_io_mod),
        cmocka_unit_test(test_io_del_later_in_batch),
        cmocka_unit_test(test_io_mod_masks_batch),
        cmocka_unit_test(test_timers_order),
        cmocka_unit_test(test_timer_ties_fifo),
        cmocka_unit_test(test_timer_rearm_stop),
        cmocka_unit_test(test_timer_heap_random),
        cmocka_unit_test(test_timer_zero_no_starve),
        cmocka_unit_test(test_timer_million),
        cmocka_unit_test(test_clock),
        cmocka_unit_test(test_poll_timeout),
        cmocka_unit_test(test_async_protocol),
        cmocka_unit_test(test_async_blast),
        cmocka_unit_test(test_async_coalesce),
        cmocka_unit_test(test_async_close_during_walk),
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_signals_preblocked_and_del_in_cb),
        cmocka_unit_test(test_deferred),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_two_loops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
