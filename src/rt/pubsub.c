/* pubsub — see pubsub.h for the paths a message takes and why each
 * subscriber gets it once.
 *
 * Reading order: the machine's shared state (prefork) -> the worker's state
 * and its metrics -> fan-out -> subscriptions (topics appearing and going:
 * roster entries, Redis channels) -> the bus reader -> Redis -> publishing
 * -> the listing of topics and ids -> shutdown -> the Redis message format.
 */
#include "rt/pubsub.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "myriad.h"
#include "core/log.h"
#include "core/loop.h"
#include "data/redis.h"
#include "http/request.h"
#include "http/server.h"
#include "http/ws.h"
#include "obs/metrics.h"
#include "rt/bus.h"
#include "rt/roster.h"
#include "rt/topic.h"

#define BUS_BATCH        256           /* bus records per turn before yielding to the loop */
#define NO_BUS_MAX       (1u << 20)    /* topic + data bytes of a message without a bus */

static_assert(MYR_TOPIC_MAX <= RT_ROSTER_NAME_MAX, "the roster holds every topic name");

/* ---- the machine's shared state --------------------------------------------------------- */

typedef struct pubsub_machine {
    shm_region *region;
    rt_bus     *bus;
    rt_roster  *roster;
    uint64_t    instance;   /* random, made once by the supervisor */
} pubsub_machine;

/* Filled by pubsub_prefork before any worker exists and only read
 * afterwards (workers inherit it). NULL: no prefork ran (a worker alone,
 * as in unit tests): each worker is its own machine. */
static pubsub_machine machine_state;
static const pubsub_machine *machine;

static uint64_t random_instance(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec << 20 ^
            (uint64_t)getpid();
    }
    return v ? v : 1;
}

int pubsub_prefork(const config *cfg, uint32_t slots, char *err, size_t errlen)
{
    if (machine)
        return 0;   /* made at start-up; a reload keeps it */
    size_t size = rt_bus_shm_size(cfg->pubsub_bus_size, slots) +
                  rt_roster_shm_size(cfg->pubsub_topics);
    shm_region *r = shm_create(size);
    if (!r) {
        snprintf(err, errlen, "pub/sub: cannot map %zu bytes of shared memory: %s", size,
                 strerror(errno));
        return -1;
    }
    uint64_t instance = random_instance();
    rt_bus *bus = rt_bus_new(r, cfg->pubsub_bus_size, slots, instance);
    rt_roster *roster = bus ? rt_roster_new(r, cfg->pubsub_topics) : NULL;
    if (!roster) {
        snprintf(err, errlen, "pub/sub: cannot set up the local bus: %s", strerror(errno));
        rt_bus_close(bus);
        shm_destroy(r);
        return -1;
    }
    machine_state = (pubsub_machine){ r, bus, roster, instance };
    machine = &machine_state;
    return 0;
}

/* ---- the worker's state ------------------------------------------------------------------- */

enum source { SRC_LOCAL, SRC_BUS, SRC_REDIS };

static const char *const source_values[] = { "local", "bus", "redis", NULL };
static const char *const policy_values[] = { "disconnect", "drop_oldest", "coalesce", NULL };

static const metrics_spec spec_published = {
    .name = "myriad_pubsub_published_total", .type = METRICS_COUNTER,
    .help = "Messages published (myr_publish calls accepted).",
};
static const metrics_spec spec_delivered = {
    .name = "myriad_pubsub_delivered_total", .type = METRICS_COUNTER,
    .help = "Messages queued to subscribers, by the path that brought them to the worker.",
    .label = { "source" }, .values = { source_values },
};
static const metrics_spec spec_dropped = {
    .name = "myriad_pubsub_dropped_total", .type = METRICS_COUNTER,
    .help = "Messages a subscription's overflow policy discarded, by policy.",
    .label = { "policy" }, .values = { policy_values },
};
static const metrics_spec spec_bus_lost = {
    .name = "myriad_pubsub_bus_lost_total", .type = METRICS_COUNTER,
    .help = "Messages of other workers missed because the local bus ring overran the reader.",
};
static const metrics_spec spec_redis_failures = {
    .name = "myriad_pubsub_redis_publish_failures_total", .type = METRICS_COUNTER,
    .help = "Messages Redis did not take (down, timeout, error): they did not leave the machine.",
};
static const metrics_spec spec_resubscribes = {
    .name = "myriad_pubsub_redis_resubscribes_total", .type = METRICS_COUNTER,
    .help = "Redis subscriptions restored after a lost connection (messages meanwhile missed).",
};
static const metrics_spec spec_roster_full = {
    .name = "myriad_pubsub_roster_full_total", .type = METRICS_COUNTER,
    .help = "Topics left out of the subscriber counts: --pubsub-topics entries all in use.",
};
static const metrics_spec spec_subscriptions = {
    .name = "myriad_pubsub_subscriptions", .type = METRICS_GAUGE,
    .help = "Subscriptions of WebSocket connections to topics.",
};
static const metrics_spec spec_topics = {
    .name = "myriad_pubsub_topics", .type = METRICS_GAUGE,
    .help = "Topics with subscribers, counted once per worker that has them.",
};

typedef struct ps_families {
    metrics_family *published, *delivered, *dropped, *bus_lost, *redis_failures,
                   *resubscribes, *roster_full, *subscriptions, *topics;
} ps_families;

struct myr_pubsub {
    http_server     *srv;
    uint32_t         slot;          /* this worker's row: the bus's and the metrics' */
    uint64_t         instance;      /* the machine's id (the origin in Redis messages) */
    rt_bus          *bus;           /* NULL: no other worker to reach */
    rt_roster       *roster;        /* NULL: counts come from this worker alone */
    rt_topics        topics;
    rt_bus_reader    reader;        /* fd -1 until the first subscription */
    loop_io          bus_io;        /* the reader's wake socket; fd -1 when not watched */
    loop_timer       bus_timer;     /* a long read goes on at the next turn */
    bool             bus_tried;     /* the reader was opened (or failed to) */
    uint64_t         lost_counted;  /* reader.lost already added to the metric */
    uint64_t         local_seq;     /* publisher sequence without a bus */
    uint64_t         local_ids;     /* myr_unique_id without a bus */
    metrics_worker  *metrics;
    ps_families      m;
    char             prefix[sizeof(((config *)0)->pubsub_channel_prefix)];
    size_t           prefix_len;
    uint8_t         *scratch;       /* a Redis channel name or PUBLISH arguments */
    size_t           scratch_cap;
};

static void count(myr_pubsub *ps, const metrics_family *f, unsigned combo, uint64_t n)
{
    if (f && n)
        metrics_add(ps->metrics, f, combo, n);
}

static void gauge(myr_pubsub *ps, const metrics_family *f, int64_t delta)
{
    if (f)
        metrics_gauge_add(ps->metrics, f, 0, delta);
}

static void families_add(myr_pubsub *ps)
{
    metrics_registry *reg = metrics_registry_of(ps->metrics);
    if (!reg)
        return;
    ps->m = (ps_families){
        .published = metrics_family_add(reg, &spec_published),
        .delivered = metrics_family_add(reg, &spec_delivered),
        .dropped = metrics_family_add(reg, &spec_dropped),
        .bus_lost = metrics_family_add(reg, &spec_bus_lost),
        .redis_failures = metrics_family_add(reg, &spec_redis_failures),
        .resubscribes = metrics_family_add(reg, &spec_resubscribes),
        .roster_full = metrics_family_add(reg, &spec_roster_full),
        .subscriptions = metrics_family_add(reg, &spec_subscriptions),
        .topics = metrics_family_add(reg, &spec_topics),
    };
}

/* The worker's state, made on first use. */
static myr_pubsub *ps_get(http_server *s)
{
    if (s->pubsub)
        return s->pubsub;
    myr_pubsub *ps = calloc(1, sizeof(*ps));
    if (!ps)
        return NULL;
    ps->srv = s;
    ps->reader.fd = -1;
    ps->bus_io.fd = -1;
    ps->metrics = s->metrics;
    ps->slot = s->metrics ? s->metrics->slot : 0;
    ps->prefix_len = strlen(s->cfg->pubsub_channel_prefix);
    memcpy(ps->prefix, s->cfg->pubsub_channel_prefix, ps->prefix_len);
    if (machine && ps->slot < rt_bus_slots(machine->bus)) {
        ps->bus = machine->bus;
        ps->roster = machine->roster;
        ps->instance = machine->instance;
        /* entries a dead predecessor in this slot left, before the slot
         * counts as alive again */
        rt_roster_reset(ps->roster, ps->slot);
        rt_bus_slot_claim(ps->bus, ps->slot);
    } else {
        ps->instance = random_instance();
    }
    families_add(ps);
    s->pubsub = ps;
    return ps;
}

myr_pubsub *myr_ws_pubsub(myr_ws *ws) { return ps_get(ws->wss->srv); }
myr_pubsub *myr_req_pubsub(myr_req *req) { return ps_get(req->srv); }

/* ---- fan-out -------------------------------------------------------------------------------- */

/* Queues one shared frame on every subscription of t, each under its own
 * overflow policy. */
static void deliver(myr_pubsub *ps, const rt_topic *t, const void *data, size_t len, bool binary,
                    enum source src)
{
    if (!t || !t->head)
        return;
    ws_msg *msg = ws_msg_new(binary ? WS_OP_BINARY : WS_OP_TEXT, data, len);
    if (!msg) {
        log_warn("pub/sub: out of memory: a message for %u subscribers dropped", t->nsubs);
        return;
    }
    uint64_t queued = 0;
    /* queueing never closes a connection synchronously (a refused one goes
     * to LINGER), so the list cannot change under this walk */
    for (const rt_sub *s = t->head; s; s = s->next) {
        uint32_t dropped = 0;
        if (ws_send_msg_policy(s->owner, msg, (myr_ws_overflow)s->policy, &dropped) == 0)
            queued++;
        count(ps, ps->m.dropped, s->policy, dropped);
    }
    ws_msg_unref(msg);
    count(ps, ps->m.delivered, src, queued);
}

/* ---- subscriptions ---------------------------------------------------------------------------- */

static uint8_t *scratch(myr_pubsub *ps, size_t n)
{
    if (n > ps->scratch_cap) {
        uint8_t *p = realloc(ps->scratch, n);
        if (!p)
            return NULL;
        ps->scratch = p;
        ps->scratch_cap = n;
    }
    return ps->scratch;
}

/* prefix + topic in the scratch buffer; NULL when out of memory. */
static const uint8_t *channel_of(myr_pubsub *ps, const rt_topic *t, size_t *len)
{
    uint8_t *b = scratch(ps, ps->prefix_len + t->len);
    if (!b)
        return NULL;
    memcpy(b, ps->prefix, ps->prefix_len);
    memcpy(b + ps->prefix_len, t->name, t->len);
    *len = ps->prefix_len + t->len;
    return b;
}

static void on_redis_message(void *arg, const redis_message *m);

/* The first local subscriber: count the topic and listen to other machines. */
static void topic_appeared(myr_pubsub *ps, rt_topic *t)
{
    gauge(ps, ps->m.topics, 1);
    if (ps->roster) {
        int idx = rt_roster_claim(ps->roster, ps->slot, t->name, t->len);
        if (idx >= 0)
            t->roster = idx;
        else
            count(ps, ps->m.roster_full, 0, 1);
    }
    redis *r = ps->srv->redis;
    size_t chlen;
    const uint8_t *ch = r ? channel_of(ps, t, &chlen) : NULL;
    if (ch && redis_subscribe(r, ch, chlen, on_redis_message, ps) == 0)
        t->redis = true;
    else if (r)
        log_warn("pub/sub: cannot subscribe to the Redis channel of %.*s: out of memory",
                 (int)t->len, t->name);
}

/* The last local subscriber left. */
static void topic_gone(myr_pubsub *ps, rt_topic *t)
{
    gauge(ps, ps->m.topics, -1);
    if (t->roster >= 0)
        rt_roster_free(ps->roster, (uint32_t)t->roster);
    redis *r = ps->srv->redis;   /* NULL once the worker's client is gone */
    size_t chlen;
    const uint8_t *ch = t->redis && r ? channel_of(ps, t, &chlen) : NULL;
    if (ch)
        redis_unsubscribe(r, ch, chlen, on_redis_message, ps);
    rt_topics_remove(&ps->topics, t);
}

static void roster_update(myr_pubsub *ps, const rt_topic *t)
{
    if (t->roster >= 0)
        rt_roster_set(ps->roster, (uint32_t)t->roster, t->nsubs);
}

/* Unlinks s (already out of its owner's list) and frees it. */
static void sub_drop(myr_pubsub *ps, rt_sub *s)
{
    rt_topic *t = s->topic;
    rt_topic_unlink(&ps->topics, s);
    free(s);
    gauge(ps, ps->m.subscriptions, -1);
    if (t->nsubs == 0)
        topic_gone(ps, t);
    else
        roster_update(ps, t);
}

/* ws_server.drop_subs: the connection closed. */
static void drop_ws_subs(myr_ws *ws)
{
    myr_pubsub *ps = ws->wss->srv->pubsub;
    rt_sub *s = ws->subs;
    ws->subs = NULL;
    while (s) {
        rt_sub *next = s->owner_next;
        if (ps)
            sub_drop(ps, s);
        else
            free(s);   /* cannot happen: subscriptions exist only with the state */
        s = next;
    }
}

/* Where ws's subscription to topic sits in its list (*pp is NULL: none). */
static rt_sub **sub_slot(myr_ws *ws, const char *topic, size_t len)
{
    rt_sub **pp = &ws->subs;
    while (*pp && !((*pp)->topic->len == len && memcmp((*pp)->topic->name, topic, len) == 0))
        pp = &(*pp)->owner_next;
    return pp;
}

static void start_reading(myr_pubsub *ps);

int myr_ws_subscribe(myr_ws *ws, const char *topic, size_t len, myr_ws_overflow policy)
{
    if (!topic || len == 0 || len > MYR_TOPIC_MAX || (unsigned)policy > MYR_WS_COALESCE)
        return -EINVAL;
    if (ws->state != WS_OPEN)
        return -EPIPE;
    myr_pubsub *ps = ps_get(ws->wss->srv);
    if (!ps)
        return -ENOMEM;
    rt_sub *s = *sub_slot(ws, topic, len);
    if (s) {
        s->policy = (uint8_t)policy;
        return 0;
    }
    start_reading(ps);
    bool created;
    rt_topic *t = rt_topics_get(&ps->topics, topic, len, &created);
    s = t ? calloc(1, sizeof(*s)) : NULL;
    if (!s) {
        if (t && created)
            rt_topics_remove(&ps->topics, t);
        return -ENOMEM;
    }
    if (created)
        topic_appeared(ps, t);
    s->owner = ws;
    s->policy = (uint8_t)policy;
    rt_topic_link(&ps->topics, t, s);
    s->owner_next = ws->subs;
    ws->subs = s;
    ws->wss->drop_subs = drop_ws_subs;
    gauge(ps, ps->m.subscriptions, 1);
    roster_update(ps, t);
    return 0;
}

int myr_ws_unsubscribe(myr_ws *ws, const char *topic, size_t len)
{
    myr_pubsub *ps = ws->wss->srv->pubsub;
    rt_sub **pp = topic && ps ? sub_slot(ws, topic, len) : NULL;
    if (!pp || !*pp)
        return -ENOENT;
    rt_sub *s = *pp;
    *pp = s->owner_next;
    sub_drop(ps, s);
    return 0;
}

/* ---- the bus reader --------------------------------------------------------------------------- */

static void count_lost(myr_pubsub *ps)
{
    count(ps, ps->m.bus_lost, 0, ps->reader.lost - ps->lost_counted);
    ps->lost_counted = ps->reader.lost;
}

static void on_bus_timer(loop_timer *t);

/* Reads what other workers published, up to BUS_BATCH records a turn;
 * then sleeps (wake-up through the socket) or goes on at the next turn. */
static void bus_pump(myr_pubsub *ps)
{
    rt_bus_msg m;
    for (unsigned i = 0; i < BUS_BATCH; i++) {
        int rc = rt_bus_read(&ps->reader, &m);
        if (rc < 0)
            continue;   /* out of memory for one record: counted as lost */
        if (rc == 0) {
            if (!rt_bus_sleep(&ps->reader))
                continue;   /* more arrived while going to sleep */
            count_lost(ps);
            return;
        }
        if (m.slot == ps->slot)
            continue;   /* ours: delivered here when it was published */
        deliver(ps, rt_topics_find(&ps->topics, m.topic, m.topic_len), m.data, m.len,
                m.flags & RT_BUS_BINARY, SRC_BUS);
    }
    count_lost(ps);
    loop_timer_start(ps->srv->loop, &ps->bus_timer, 0, on_bus_timer);
}

static void on_bus_timer(loop_timer *t)
{
    bus_pump(container_of(t, myr_pubsub, bus_timer));
}

static void on_bus_io(loop_io *io, uint32_t events)
{
    myr_pubsub *ps = container_of(io, myr_pubsub, bus_io);
    rt_bus_reader_drain(&ps->reader);
    bus_pump(ps);
}

/* From the first subscription on, this worker reads the bus. */
static void start_reading(myr_pubsub *ps)
{
    if (ps->bus_tried || !ps->bus)
        return;
    ps->bus_tried = true;
    int rc = rt_bus_reader_open(ps->bus, ps->slot, &ps->reader);
    if (rc == 0)
        rc = loop_io_add(ps->srv->loop, &ps->bus_io, ps->reader.fd, LOOP_READ, on_bus_io);
    if (rc < 0) {
        log_error("pub/sub: cannot read the local bus (%s): messages published by other "
                  "workers will not reach this one's subscribers", strerror(-rc));
        rt_bus_reader_close(&ps->reader);
        return;
    }
    bus_pump(ps);
}

/* ---- Redis ------------------------------------------------------------------------------------ */

static void on_redis_message(void *arg, const redis_message *m)
{
    myr_pubsub *ps = arg;
    if (m->kind == REDIS_MSG_RESUBSCRIBED) {
        count(ps, ps->m.resubscribes, 0, 1);
        return;
    }
    pubsub_wire w;
    if (!pubsub_wire_parse(m->data, m->len, &w) || w.instance == ps->instance)
        return;   /* not ours, or from this machine: the bus brought it */
    if (m->channel_len <= ps->prefix_len || memcmp(m->channel, ps->prefix, ps->prefix_len))
        return;
    deliver(ps,
            rt_topics_find(&ps->topics, m->channel + ps->prefix_len,
                           m->channel_len - ps->prefix_len),
            w.data, w.len, w.binary, SRC_REDIS);
}

/* arg is the server, which outlives both the Redis client and the pub/sub
 * state, whichever of them is freed first at shutdown. */
static void on_published(void *arg, enum redis_status st, const redisReply *reply)
{
    myr_pubsub *ps = ((http_server *)arg)->pubsub;
    if (ps && st != REDIS_STATUS_OK && st != REDIS_STATUS_CLOSED)
        count(ps, ps->m.redis_failures, 0, 1);
}

static void redis_forward(myr_pubsub *ps, const char *topic, size_t tlen, const void *data,
                          size_t len, bool binary, uint64_t seq)
{
    redis *r = ps->srv->redis;
    if (!r)
        return;
    size_t chlen = ps->prefix_len + tlen;
    uint8_t *b = scratch(ps, chlen + PUBSUB_WIRE_HEADER + len);
    if (!b) {
        count(ps, ps->m.redis_failures, 0, 1);
        return;
    }
    memcpy(b, ps->prefix, ps->prefix_len);
    memcpy(b + ps->prefix_len, topic, tlen);
    uint8_t *msg = b + chlen;
    pubsub_wire w = { .instance = ps->instance, .slot = ps->slot, .pubseq = seq,
                      .binary = binary };
    pubsub_wire_header(&w, msg);
    if (len)
        memcpy(msg + PUBSUB_WIRE_HEADER, data, len);
    if (redis_publish(r, b, chlen, msg, PUBSUB_WIRE_HEADER + len, on_published, ps->srv) < 0)
        count(ps, ps->m.redis_failures, 0, 1);
}

/* ---- publishing --------------------------------------------------------------------------------- */

int myr_publish(myr_pubsub *ps, const char *topic, size_t topic_len, const void *data,
                size_t len, bool binary)
{
    if (!ps)
        return -ENOMEM;
    if (!topic || topic_len == 0 || topic_len > MYR_TOPIC_MAX || (!data && len))
        return -EINVAL;
    size_t max = ps->bus ? rt_bus_max_message(ps->bus) : NO_BUS_MAX;
    if (len > max || topic_len + len > max)
        return -EMSGSIZE;
    deliver(ps, rt_topics_find(&ps->topics, topic, topic_len), data, len, binary, SRC_LOCAL);
    uint64_t seq = 0;
    if (!ps->bus || rt_bus_publish(ps->bus, ps->slot, topic, topic_len, data, len,
                                   binary ? RT_BUS_BINARY : 0, &seq) < 0)
        seq = ++ps->local_seq;
    redis_forward(ps, topic, topic_len, data, len, binary, seq);
    count(ps, ps->m.published, 0, 1);
    return 0;
}

/* ---- listing topics, naming things -------------------------------------------------------------- */

typedef struct topic_row {
    char     name[RT_ROSTER_NAME_MAX];
    size_t   len;
    uint64_t count;
} topic_row;

static int row_cmp(const void *a, const void *b)
{
    const topic_row *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Every (topic, live worker) count: from the roster, or this worker's own. */
static size_t collect_rows(const myr_pubsub *ps, topic_row *rows, size_t max)
{
    size_t n = 0;
    if (machine) {
        uint32_t high = rt_bus_slots_high(machine->bus);
        uint8_t *live = calloc(high + 1, 1);   /* 0 unknown, 1 alive, 2 gone */
        if (!live)
            return 0;
        for (uint32_t i = 0; i < rt_roster_capacity(machine->roster) && n < max; i++) {
            rt_roster_item it;
            if (!rt_roster_read(machine->roster, i, &it) || it.count == 0 || it.slot >= high)
                continue;
            if (!live[it.slot])
                live[it.slot] = rt_bus_slot_live(machine->bus, it.slot) ? 1 : 2;
            if (live[it.slot] != 1)
                continue;
            memcpy(rows[n].name, it.name, it.len);
            rows[n].len = it.len;
            rows[n++].count = it.count;
        }
        free(live);
        return n;
    }
    for (uint32_t b = 0; ps && b < ps->topics.nbuckets; b++) {
        for (const rt_topic *t = ps->topics.buckets[b]; t && n < max; t = t->hnext) {
            memcpy(rows[n].name, t->name, t->len);
            rows[n].len = t->len;
            rows[n++].count = t->nsubs;
        }
    }
    return n;
}

int myr_topics(myr_req *req, const myr_topic_count **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    const myr_pubsub *ps = req->srv->pubsub;
    size_t max = machine ? rt_roster_capacity(machine->roster) : ps ? ps->topics.count : 0;
    if (max == 0)
        return 0;
    topic_row *rows = malloc(max * sizeof(*rows));
    if (!rows)
        return -ENOMEM;
    size_t k = collect_rows(ps, rows, max);
    qsort(rows, k, sizeof(*rows), row_cmp);
    size_t groups = 0;   /* merge the workers' rows of one topic */
    for (size_t i = 0; i < k; i++) {
        if (groups && row_cmp(&rows[groups - 1], &rows[i]) == 0)
            rows[groups - 1].count += rows[i].count;
        else
            rows[groups++] = rows[i];
    }
    myr_topic_count *res = groups ? myr_alloc(req, groups * sizeof(*res)) : NULL;
    for (size_t i = 0; res && i < groups; i++) {
        char *name = myr_alloc(req, rows[i].len);
        if (!name) {
            res = NULL;
            break;
        }
        memcpy(name, rows[i].name, rows[i].len);
        res[i] = (myr_topic_count){ { name, rows[i].len }, rows[i].count };
    }
    free(rows);
    if (groups && !res)
        return -ENOMEM;
    *out = res;
    *n = groups;
    return 0;
}

size_t myr_unique_id(myr_pubsub *ps, char out[MYR_ID_MAX])
{
    if (!ps) {
        out[0] = '\0';
        return 0;
    }
    uint64_t n = ps->bus ? rt_bus_next_id(ps->bus, ps->slot) : ++ps->local_ids;
    int k = snprintf(out, MYR_ID_MAX, "%016llx-%u-%llu", (unsigned long long)ps->instance,
                     ps->slot, (unsigned long long)n);
    return k > 0 ? (size_t)k : 0;
}

/* ---- shutdown ----------------------------------------------------------------------------------- */

void pubsub_server_fini(http_server *s)
{
    myr_pubsub *ps = s->pubsub;
    if (!ps)
        return;
    /* connections still open (a stop without draining) keep no pointer */
    for (uint32_t b = 0; b < ps->topics.nbuckets; b++) {
        while (ps->topics.buckets[b]) {
            rt_topic *t = ps->topics.buckets[b];
            while (t->head) {
                rt_sub *sub = t->head;
                ((myr_ws *)sub->owner)->subs = NULL;
                gauge(ps, ps->m.subscriptions, -1);
                rt_topic_unlink(&ps->topics, sub);
                free(sub);
            }
            topic_gone(ps, t);
        }
    }
    rt_topics_fini(&ps->topics);
    loop_timer_stop(s->loop, &ps->bus_timer);
    if (ps->bus_io.fd >= 0)
        loop_io_del(s->loop, &ps->bus_io);
    rt_bus_reader_close(&ps->reader);
    if (ps->bus && rt_bus_slot_pid(ps->bus, ps->slot) == (int32_t)getpid())
        rt_bus_slot_release(ps->bus, ps->slot);
    free(ps->scratch);
    free(ps);
    s->pubsub = NULL;
}

/* ---- the Redis message -------------------------------------------------------------------------- */

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void pubsub_wire_header(const pubsub_wire *w, uint8_t out[PUBSUB_WIRE_HEADER])
{
    memset(out, 0, PUBSUB_WIRE_HEADER);
    memcpy(out, "MYR\1", 4);
    out[4] = w->binary ? 1 : 0;
    put_le(out + 8, w->instance, 8);
    put_le(out + 16, w->slot, 4);
    put_le(out + 24, w->pubseq, 8);
}

bool pubsub_wire_parse(const void *msg, size_t len, pubsub_wire *w)
{
    const uint8_t *p = msg;
    if (!p || len < PUBSUB_WIRE_HEADER || memcmp(p, "MYR\1", 4) != 0 || (p[4] & ~1u))
        return false;
    *w = (pubsub_wire){
        .instance = get_le(p + 8, 8),
        .slot = (uint32_t)get_le(p + 16, 4),
        .pubseq = get_le(p + 24, 8),
        .binary = p[4] & 1,
        .data = p + PUBSUB_WIRE_HEADER,
        .len = len - PUBSUB_WIRE_HEADER,
    };
    return true;
}
