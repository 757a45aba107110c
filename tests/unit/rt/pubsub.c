/* Unit tests for src/rt/pubsub.c on connections that have a loop but no
 * socket: fan-out queues one shared frame on every subscriber; each
 * subscription's own overflow policy; unsubscribing and closing drop
 * subscriptions and topics; the Redis message format; then, with the
 * machine's shared state made (pubsub_prefork): publishing appends to the
 * bus, records of other workers are delivered and our own skipped, and the
 * roster's counts come back through myr_topics.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "rt/pubsub.c"

#define CONNS 4

typedef struct fixture {
    config      cfg;
    http_server srv;
    ws_server   wss;
    ws_route    route;
    myr_ws      ws[CONNS];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    config_defaults(&f->cfg);
    f->cfg.pubsub_bus_size = 64 * 1024;
    f->srv.loop = loop_new();
    f->srv.cfg = &f->cfg;
    f->wss.srv = &f->srv;
    for (int i = 0; i < CONNS; i++) {
        f->ws[i].wss = &f->wss;
        f->ws[i].route = &f->route;
        f->ws[i].io.fd = -1;
        f->ws[i].state = WS_OPEN;
    }
    *state = f;
    return 0;
}

static void queue_release(ws_queue *q)
{
    for (uint32_t i = 0; i < q->count; i++)
        ws_msg_unref(q->ring[(q->head + i) & (q->cap - 1)]);
    free(q->ring);
    *q = (ws_queue){ 0 };
}

static int teardown(void **state)
{
    fixture *f = *state;
    pubsub_server_fini(&f->srv);
    for (int i = 0; i < CONNS; i++) {
        assert_null(f->ws[i].subs);
        loop_timer_stop(f->srv.loop, &f->ws[i].timer);
        queue_release(&f->ws[i].q);
    }
    loop_free(f->srv.loop);
    free(f);
    return 0;
}

static ws_msg *queued(const myr_ws *ws, uint32_t i)
{
    const ws_queue *q = &ws->q;
    return i < q->count ? q->ring[(q->head + i) & (q->cap - 1)] : NULL;
}

static bool payload_is(const ws_msg *m, const char *s)
{
    size_t len = strlen(s);
    return m && m->len - (WS_MSG_HEADROOM - m->head) == len &&
           memcmp(m->data + WS_MSG_HEADROOM, s, len) == 0;
}

/* ---- without a machine: this worker alone -------------------------------------------- */

static void test_fan_out_shares_one_frame(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 3; i++)
        assert_int_equal(myr_ws_subscribe(&f->ws[i], "t", 1, MYR_WS_DISCONNECT), 0);
    assert_int_equal(myr_ws_subscribe(&f->ws[0], "t", 1, MYR_WS_COALESCE), 0);   /* again */
    myr_pubsub *ps = f->srv.pubsub;
    assert_non_null(ps);
    assert_ptr_equal(myr_ws_pubsub(&f->ws[3]), ps);
    assert_int_equal(ps->topics.nsubs, 3);
    assert_int_equal(myr_publish(ps, "t", 1, "hello", 5, false), 0);
    ws_msg *m = queued(&f->ws[0], 0);
    assert_true(payload_is(m, "hello"));
    assert_int_equal(m->opcode, WS_OP_TEXT);
    assert_ptr_equal(queued(&f->ws[1], 0), m);   /* the same frame: encoded once */
    assert_ptr_equal(queued(&f->ws[2], 0), m);
    assert_int_equal(m->refs, 3);
    assert_int_equal(f->ws[3].q.count, 0);       /* not subscribed */
    assert_int_equal(myr_publish(ps, "other", 5, "x", 1, true), 0);   /* nobody: fine */
    assert_int_equal(myr_publish(ps, "t", 1, "\1\2", 2, true), 0);
    assert_int_equal(queued(&f->ws[2], 1)->opcode, WS_OP_BINARY);
}

static void test_arguments(void **state)
{
    fixture *f = *state;
    char big[MYR_TOPIC_MAX + 1];
    memset(big, 'a', sizeof(big));
    assert_int_equal(myr_ws_subscribe(&f->ws[0], "", 0, MYR_WS_DISCONNECT), -EINVAL);
    assert_int_equal(myr_ws_subscribe(&f->ws[0], big, sizeof(big), MYR_WS_DISCONNECT), -EINVAL);
    assert_int_equal(myr_ws_subscribe(&f->ws[0], big, MYR_TOPIC_MAX, MYR_WS_DISCONNECT), 0);
    assert_int_equal(myr_ws_subscribe(&f->ws[0], "t", 1, (myr_ws_overflow)7), -EINVAL);
    myr_pubsub *ps = f->srv.pubsub;
    assert_int_equal(myr_publish(ps, "", 0, "x", 1, false), -EINVAL);
    assert_int_equal(myr_publish(ps, big, sizeof(big), "x", 1, false), -EINVAL);
    assert_int_equal(myr_publish(ps, "t", 1, NULL, 1, false), -EINVAL);
    assert_int_equal(myr_publish(ps, "t", 1, NULL, 0, false), 0);   /* empty message */
    assert_int_equal(myr_publish(NULL, "t", 1, "x", 1, false), -ENOMEM);
    char *huge = calloc(1, NO_BUS_MAX);
    assert_int_equal(myr_publish(ps, "t", 1, huge, NO_BUS_MAX, false), -EMSGSIZE);
    free(huge);
    f->ws[1].state = WS_LINGER;
    assert_int_equal(myr_ws_subscribe(&f->ws[1], "t", 1, MYR_WS_DISCONNECT), -EPIPE);
    assert_int_equal(myr_ws_unsubscribe(&f->ws[1], "t", 1), -ENOENT);
    f->ws[1].state = WS_OPEN;
}

/* Each subscription applies its own policy when the queue is over max_queue. */
static void test_policies_per_subscription(void **state)
{
    fixture *f = *state;
    f->cfg.ws_max_queue = 1000;
    assert_int_equal(myr_ws_subscribe(&f->ws[0], "t", 1, MYR_WS_DROP_OLDEST), 0);
    assert_int_equal(myr_ws_subscribe(&f->ws[1], "t", 1, MYR_WS_COALESCE), 0);
    assert_int_equal(myr_ws_subscribe(&f->ws[2], "t", 1, MYR_WS_DISCONNECT), 0);
    myr_pubsub *ps = f->srv.pubsub;
    char p[300];
    for (int i = 0; i < 5; i++) {
        memset(p, 'a' + i, sizeof(p));
        p[0] = (char)('0' + i);
        assert_int_equal(myr_publish(ps, "t", 1, p, sizeof(p), false), 0);
    }
    /* drop oldest: the three newest fit (3 x 304 <= 1000) */
    assert_int_equal(f->ws[0].q.count, 3);
    assert_int_equal(queued(&f->ws[0], 0)->data[WS_MSG_HEADROOM], '2');
    assert_int_equal(queued(&f->ws[0], 2)->data[WS_MSG_HEADROOM], '4');
    /* coalesce: everything before the one that overflowed went; 4 came after */
    assert_int_equal(queued(&f->ws[1], f->ws[1].q.count - 1)->data[WS_MSG_HEADROOM], '4');
    assert_true(f->ws[1].q.count <= 2);
    /* disconnect: closing with 1008, its data gone, only the close frame */
    assert_int_equal(f->ws[2].state, WS_LINGER);
    assert_int_equal(f->ws[2].q.count, 1);
    assert_int_equal(queued(&f->ws[2], 0)->opcode, WS_OP_CLOSE);
    /* the subscription of a closing connection just gets nothing */
    assert_int_equal(myr_publish(ps, "t", 1, "late", 4, false), 0);
    assert_int_equal(f->ws[2].q.count, 1);
}

static void test_unsubscribe_and_close_drop_everything(void **state)
{
    fixture *f = *state;
    assert_int_equal(myr_ws_subscribe(&f->ws[0], "a", 1, MYR_WS_DISCONNECT), 0);
    assert_int_equal(myr_ws_subscribe(&f->ws[0], "b", 1, MYR_WS_DISCONNECT), 0);
    assert_int_equal(myr_ws_subscribe(&f->ws[0], "c", 1, MYR_WS_DISCONNECT), 0);
    assert_int_equal(myr_ws_subscribe(&f->ws[1], "b", 1, MYR_WS_DISCONNECT), 0);
    myr_pubsub *ps = f->srv.pubsub;
    assert_int_equal(ps->topics.count, 3);
    assert_ptr_equal(f->wss.drop_subs, drop_ws_subs);
    assert_int_equal(myr_ws_unsubscribe(&f->ws[0], "c", 1), 0);
    assert_int_equal(myr_ws_unsubscribe(&f->ws[0], "c", 1), -ENOENT);
    assert_null(rt_topics_find(&ps->topics, "c", 1));   /* its last subscriber left */
    drop_ws_subs(&f->ws[0]);                             /* ws 0 closes */
    assert_null(f->ws[0].subs);
    assert_null(rt_topics_find(&ps->topics, "a", 1));
    rt_topic *b = rt_topics_find(&ps->topics, "b", 1);
    assert_non_null(b);
    assert_int_equal(b->nsubs, 1);
    assert_int_equal(myr_publish(ps, "b", 1, "x", 1, false), 0);
    assert_int_equal(f->ws[0].q.count, 0);
    assert_int_equal(f->ws[1].q.count, 1);
    /* the worker stops with ws 1 still open: it keeps no pointer */
    pubsub_server_fini(&f->srv);
    assert_null(f->ws[1].subs);
    assert_null(f->srv.pubsub);
}

static void test_wire_format(void **state)
{
    uint8_t wire[PUBSUB_WIRE_HEADER + 3];
    pubsub_wire w = { .instance = 0x0102030405060708ull, .slot = 77, .pubseq = 123456789,
                      .binary = true };
    pubsub_wire_header(&w, wire);
    memcpy(wire + PUBSUB_WIRE_HEADER, "abc", 3);
    assert_memory_equal(wire, "MYR\1\1\0\0\0\x08\x07\x06\x05\x04\x03\x02\x01", 16);
    pubsub_wire r;
    assert_true(pubsub_wire_parse(wire, sizeof(wire), &r));
    assert_int_equal(r.instance, w.instance);
    assert_int_equal(r.slot, 77);
    assert_int_equal(r.pubseq, 123456789);
    assert_true(r.binary);
    assert_int_equal(r.len, 3);
    assert_memory_equal(r.data, "abc", 3);
    assert_true(pubsub_wire_parse(wire, PUBSUB_WIRE_HEADER, &r));   /* empty message */
    assert_false(pubsub_wire_parse(wire, PUBSUB_WIRE_HEADER - 1, &r));
    wire[3] = 2;   /* another version */
    assert_false(pubsub_wire_parse(wire, sizeof(wire), &r));
    wire[3] = 1;
    wire[4] = 4;   /* unknown flags */
    assert_false(pubsub_wire_parse(wire, sizeof(wire), &r));
    assert_false(pubsub_wire_parse("hello", 5, &r));
}

/* ---- with the machine's shared state ---------------------------------------------------- */

static void test_prefork(void **state)
{
    fixture *f = *state;
    char err[256] = "";
    assert_int_equal(pubsub_prefork(&f->cfg, 8, err, sizeof(err)), 0);
    assert_non_null(machine);
    const pubsub_machine *m = machine;
    assert_int_equal(pubsub_prefork(&f->cfg, 8, err, sizeof(err)), 0);   /* once */
    assert_ptr_equal(machine, m);
    assert_int_equal(rt_bus_slots(machine->bus), 8);
}

static void test_bus_both_ways(void **state)
{
    fixture *f = *state;
    assert_int_equal(myr_ws_subscribe(&f->ws[0], "t", 1, MYR_WS_DISCONNECT), 0);
    myr_pubsub *ps = f->srv.pubsub;
    assert_int_equal(ps->slot, 0);
    assert_ptr_equal(ps->bus, machine->bus);
    assert_int_equal(ps->instance, rt_bus_instance(machine->bus));
    assert_true(ps->reader.fd >= 0);   /* reading since the first subscription */
    assert_true(rt_bus_slot_live(machine->bus, 0));
    rt_bus_reader other;   /* another worker's reader */
    assert_int_equal(rt_bus_reader_open(machine->bus, 5, &other), 0);
    assert_int_equal(myr_publish(ps, "t", 1, "mine", 4, false), 0);
    rt_bus_msg msg;
    assert_int_equal(rt_bus_read(&other, &msg), 1);
    assert_int_equal(msg.slot, 0);
    assert_memory_equal(msg.data, "mine", 4);
    /* another worker publishes: this one delivers it; its own is skipped */
    assert_int_equal(rt_bus_publish(machine->bus, 5, "t", 1, "theirs", 6, 0, NULL), 0);
    assert_int_equal(rt_bus_publish(machine->bus, 5, "nobody", 6, "x", 1, 0, NULL), 0);
    bus_pump(ps);
    assert_int_equal(f->ws[0].q.count, 2);
    assert_true(payload_is(queued(&f->ws[0], 0), "mine"));
    assert_true(payload_is(queued(&f->ws[0], 1), "theirs"));
    assert_false(loop_timer_active(&ps->bus_timer));   /* read everything: asleep */
    /* unique ids: this slot's counter, under the machine's instance */
    char id[MYR_ID_MAX], want[MYR_ID_MAX];
    size_t n = myr_unique_id(ps, id);
    snprintf(want, sizeof(want), "%016llx-0-", (unsigned long long)ps->instance);
    assert_int_equal(n, strlen(id));
    assert_memory_equal(id, want, strlen(want));
    rt_bus_reader_close(&other);
}

static void test_topics_from_the_roster(void **state)
{
    fixture *f = *state;
    assert_int_equal(myr_ws_subscribe(&f->ws[0], "chat:b", 6, MYR_WS_DISCONNECT), 0);
    assert_int_equal(myr_ws_subscribe(&f->ws[1], "chat:b", 6, MYR_WS_DISCONNECT), 0);
    assert_int_equal(myr_ws_subscribe(&f->ws[1], "chat:a", 6, MYR_WS_DISCONNECT), 0);
    /* another live worker (this process, slot 3) with the same topic */
    int idx = rt_roster_claim(machine->roster, 3, "chat:b", 6);
    assert_true(idx >= 0);
    rt_roster_set(machine->roster, (uint32_t)idx, 5);
    rt_bus_slot_claim(machine->bus, 3);
    /* and a dead one (slot 4): not counted */
    int dead = rt_roster_claim(machine->roster, 4, "chat:c", 6);
    rt_roster_set(machine->roster, (uint32_t)dead, 9);
    myr_req *req = calloc(1, sizeof(*req));
    req->srv = &f->srv;
    const myr_topic_count *t;
    size_t n;
    assert_int_equal(myr_topics(req, &t, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(t[0].topic.len, 6);
    assert_memory_equal(t[0].topic.ptr, "chat:a", 6);
    assert_int_equal(t[0].subscribers, 1);
    assert_memory_equal(t[1].topic.ptr, "chat:b", 6);
    assert_int_equal(t[1].subscribers, 7);
    /* ws 1 leaves: the counts follow */
    drop_ws_subs(&f->ws[1]);
    assert_int_equal(myr_topics(req, &t, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(t[0].subscribers, 6);
    rt_roster_free(machine->roster, (uint32_t)idx);
    rt_roster_free(machine->roster, (uint32_t)dead);
    rt_bus_slot_release(machine->bus, 3);
    arena_free(&req->arena);
    free(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fan_out_shares_one_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policies_per_subscription, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsubscribe_and_close_drop_everything, setup,
                                        teardown),
        cmocka_unit_test(test_wire_format),
        /* from here on the process has a machine (pubsub_prefork is once) */
        cmocka_unit_test_setup_teardown(test_prefork, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bus_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_topics_from_the_roster, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
