/* db_pg — one PostgreSQL connection on the event loop (see db_pg.h).
 *
 *   IDLE ──timer──> CONNECTING ──PQconnectPoll OK──> PREPARING ──last prepare──> READY
 *     ^                  │                               │                        │
 *     └──── backoff ─────┴──────── failure or timeout ───┴────────────────────────┘
 *
 * libpq runs non-blocking: PQconnectStart/PQconnectPoll to connect, then
 * pipeline mode. Calls are appended to libpq's output buffer as they come
 * and flushed once per loop iteration (a deferred callback), so the calls
 * of every request handled in one iteration leave in one write; PQflush
 * leftovers wait for LOOP_WRITE. Replies are read when the socket is
 * readable: PQconsumeInput, then PQgetResult while !PQisBusy, matched in
 * order against the FIFO of waits (one per Sync sent).
 *
 * One timer per connection: the connect deadline while CONNECTING, the
 * reconnect delay while IDLE, and otherwise the deadline of the oldest wait
 * (re-armed lazily when it fires early), so a stuck server is noticed after
 * --db-timeout without a timer per query. A failure hands every part still
 * waiting back to the cluster (which retries reads elsewhere or fails them)
 * and reconnects with exponential backoff.
 */
#include "data/db_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define BACKOFF_MIN_MS   50
#define BACKOFF_MAX_MS   2000
#define WAITS_MIN        64
#define PROBE_SQL                                                                  \
    "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 " \
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000, 0) " \
    "END::bigint"

static void conn_fail(pg_conn *c, myr_db_error err, const char *why);
static void on_io(loop_io *io, uint32_t events);
static void on_timer(loop_timer *t);

static loop *conn_loop(const pg_conn *c) { return c->node->cl->db->loop; }
static const config *conn_cfg(const pg_conn *c) { return c->node->cl->db->cfg; }

void pg_conn_init(pg_conn *c, pg_node *n)
{
    memset(c, 0, sizeof(*c));
    c->node = n;
    c->io.fd = -1;
}

/* ---- the wait FIFO ------------------------------------------------------------------ */

static pg_wait *wait_push(pg_conn *c, uint8_t kind)
{
    if (c->count == c->cap) {
        uint32_t cap = c->cap ? c->cap * 2 : WAITS_MIN;
        pg_wait *w = malloc(cap * sizeof(*w));
        if (!w)
            return NULL;
        for (uint32_t i = 0; i < c->count; i++)
            w[i] = c->waits[(c->head + i) % c->cap];
        free(c->waits);
        c->waits = w;
        c->head = 0;
        c->cap = cap;
    }
    pg_wait *w = &c->waits[(c->head + c->count++) % c->cap];
    if (c->count == 1)
        db_metrics_pool(c->node->cl->db, 0, 1);   /* in use while a reply is owed */
    *w = (pg_wait){ .kind = kind,
                    .deadline = loop_now(conn_loop(c)) + conn_cfg(c)->db_timeout * 1000000ull };
    if (!loop_timer_active(&c->timer))
        loop_timer_start_at(conn_loop(c), &c->timer, w->deadline, on_timer);
    return w;
}

static pg_wait *wait_head(pg_conn *c) { return c->count ? &c->waits[c->head] : NULL; }

static void wait_pop(pg_conn *c)
{
    c->head = (c->head + 1) % c->cap;
    if (--c->count == 0)
        db_metrics_pool(c->node->cl->db, 0, -1);
}

/* ---- sending -------------------------------------------------------------------------- */

static void on_flush_defer(loop_deferred *d)
{
    pg_conn *c = container_of(d, pg_conn, flush_defer);
    if (!c->pg)
        return;
    int rc = PQflush(c->pg);
    if (rc < 0) {
        conn_fail(c, MYR_DB_UNAVAILABLE, "flush");
        return;
    }
    bool want = rc == 1;
    if (want != c->want_write) {
        c->want_write = want;
        loop_io_mod(conn_loop(c), &c->io, LOOP_READ | (want ? LOOP_WRITE : 0));
    }
}

static void flush_later(pg_conn *c)
{
    loop_defer(conn_loop(c), &c->flush_defer, on_flush_defer);
}

static void stmt_name(char *out, size_t cap, size_t i) { snprintf(out, cap, "s%zu", i); }

static int send_prepares(pg_conn *c)
{
    const myr_db *db = c->node->cl->db;
    char name[24];
    for (size_t i = 0; i < db->nstmts; i++) {
        stmt_name(name, sizeof(name), i);
        if (!PQsendPrepare(c->pg, name, db->stmts[i]->sql, (int)db->stmts[i]->nparams, NULL) ||
            !PQpipelineSync(c->pg) || !wait_push(c, PGW_PREPARE))
            return -1;
    }
    return 0;
}

static int send_call(pg_conn *c, const db_call *call)
{
    const char *values[DB_MAX_PARAMS];
    int lengths[DB_MAX_PARAMS];
    char nums[DB_MAX_PARAMS][24];
    char name[24];
    for (unsigned i = 0; i < call->nparams; i++) {
        const myr_db_param *p = &call->params[i];
        switch (p->type) {
        case MYR_DB_INT:
            lengths[i] = snprintf(nums[i], sizeof(nums[i]), "%lld", (long long)p->i);
            values[i] = nums[i];
            break;
        case MYR_DB_TEXT:
            values[i] = p->s;
            lengths[i] = (int)p->len;
            break;
        default:
            values[i] = NULL;
            lengths[i] = 0;
        }
    }
    stmt_name(name, sizeof(name), call->sidx);
    if (!PQsendQueryPrepared(c->pg, name, (int)call->nparams, values, lengths, NULL, 0) ||
        !PQpipelineSync(c->pg))
        return -1;
    return 0;
}

int pg_conn_send_part(pg_conn *c, pg_part *p)
{
    p->conn = c;
    for (uint32_t k = 0; k < p->ncalls; k++) {
        pg_wait *w;
        if (send_call(c, &p->op->calls[p->idx[k]]) || !(w = wait_push(c, PGW_CALL))) {
            conn_fail(c, MYR_DB_UNAVAILABLE, PQerrorMessage(c->pg));
            if (p->conn == c) {   /* no wait of it was queued: conn_fail did not see it */
                p->conn = NULL;
                pg_cluster_part_failed(p, MYR_DB_UNAVAILABLE);
            }
            return -1;
        }
        w->part = p;
        w->k = k;
    }
    c->node->calls += p->ncalls;
    flush_later(c);
    return 0;
}

int pg_conn_send_probe(pg_conn *c)
{
    if (!PQsendQueryParams(c->pg, PROBE_SQL, 0, NULL, NULL, NULL, NULL, 0) ||
        !PQpipelineSync(c->pg) || !wait_push(c, PGW_PROBE)) {
        conn_fail(c, MYR_DB_UNAVAILABLE, "lag probe");
        return -1;
    }
    flush_later(c);
    return 0;
}

/* ---- receiving ------------------------------------------------------------------------------ */

static void log_query_error(pg_conn *c, const PGresult *res)
{
    pg_cluster *cl = c->node->cl;
    uint64_t now = loop_now(conn_loop(c));
    if (now - cl->err_logged < 1000000000ull)
        return;   /* at most one line a second */
    cl->err_logged = now;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg);
    log_warn("postgres %s: query failed: %.*s", c->node->name, (int)strcspn(msg, "\n"), msg);
}

static void became_ready(pg_conn *c)
{
    c->state = PGC_READY;
    c->backoff_ms = 0;
    pg_node_conn_ready(c->node);
}

/* The Sync of the head wait arrived: hand its result on. */
static void wait_complete(pg_conn *c)
{
    pg_wait w = *wait_head(c);
    wait_pop(c);
    ExecStatusType st = w.res ? PQresultStatus(w.res) : PGRES_FATAL_ERROR;
    bool ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
    if (!ok) {
        log_query_error(c, w.res);   /* rate-limited */
        PQclear(w.res);
        w.res = NULL;
    }
    switch (w.kind) {
    case PGW_CALL:
        pg_cluster_reply(w.part, w.k, w.res);
        break;
    case PGW_PROBE:
        pg_node_probe_result(c->node, w.res);
        break;
    case PGW_PREPARE:
        PQclear(w.res);
        if (!ok) {
            /* the schema may not have reached this server yet (a replica
             * behind its primary): start over later rather than run with
             * a statement missing */
            conn_fail(c, MYR_DB_UNAVAILABLE, "preparing statements failed");
            break;
        }
        if (c->state == PGC_PREPARING && (!c->count || wait_head(c)->kind != PGW_PREPARE))
            became_ready(c);
        break;
    }
}

/* Reads every complete reply. Returns -1 if the connection failed. */
static int read_replies(pg_conn *c)
{
    if (!PQconsumeInput(c->pg)) {
        conn_fail(c, MYR_DB_UNAVAILABLE, PQerrorMessage(c->pg));
        return -1;
    }
    int nulls = 0;
    while (c->pg && c->count && !PQisBusy(c->pg)) {
        pg_wait *w = wait_head(c);
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            if (!w->got || ++nulls > 1)
                break;   /* nothing more available yet */
            continue;    /* end of this statement's results; its Sync is next */
        }
        nulls = 0;
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            wait_complete(c);
        } else if (!w->got) {
            w->got = true;
            w->res = res;
        } else {
            PQclear(res);   /* a second result for one statement: not ours to keep */
        }
    }
    if (c->pg && PQstatus(c->pg) == CONNECTION_BAD) {
        conn_fail(c, MYR_DB_UNAVAILABLE, PQerrorMessage(c->pg));
        return -1;
    }
    return 0;
}

/* ---- connecting ---------------------------------------------------------------------------- */

static int watch_socket(pg_conn *c, uint32_t events)
{
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return -1;
    if (c->io.fd == fd)
        return loop_io_mod(conn_loop(c), &c->io, events);
    if (c->io.fd >= 0)
        loop_io_del(conn_loop(c), &c->io);
    return loop_io_add(conn_loop(c), &c->io, fd, events, on_io);
}

static void notice_ignore(void *arg, const char *message) {}

static void connected(pg_conn *c)
{
    PQsetNoticeProcessor(c->pg, notice_ignore, NULL);
    if (PQsetnonblocking(c->pg, 1) || !PQenterPipelineMode(c->pg) ||
        watch_socket(c, LOOP_READ)) {
        conn_fail(c, MYR_DB_UNAVAILABLE, "entering pipeline mode");
        return;
    }
    loop_timer_stop(conn_loop(c), &c->timer);   /* the waits' deadlines take over */
    c->state = PGC_PREPARING;
    c->want_write = false;
    if (send_prepares(c)) {
        conn_fail(c, MYR_DB_UNAVAILABLE, PQerrorMessage(c->pg));
        return;
    }
    if (!c->count)
        became_ready(c);
    flush_later(c);
}

static void connect_step(pg_conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_OK:
        connected(c);
        break;
    case PGRES_POLLING_READING:
        if (watch_socket(c, LOOP_READ))
            conn_fail(c, MYR_DB_UNAVAILABLE, "socket");
        break;
    case PGRES_POLLING_WRITING:
        if (watch_socket(c, LOOP_WRITE))
            conn_fail(c, MYR_DB_UNAVAILABLE, "socket");
        break;
    default:
        conn_fail(c, MYR_DB_UNAVAILABLE, PQerrorMessage(c->pg));
    }
}

void pg_conn_start(pg_conn *c)
{
    c->pg = PQconnectStart(c->node->url);
    c->state = PGC_CONNECTING;
    loop_timer_start(conn_loop(c), &c->timer, conn_cfg(c)->db_timeout, on_timer);
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_fail(c, MYR_DB_UNAVAILABLE, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        return;
    }
    /* libpq's protocol: act as if PQconnectPoll had asked to write */
    if (watch_socket(c, LOOP_WRITE))
        conn_fail(c, MYR_DB_UNAVAILABLE, "socket");
}

/* ---- events ------------------------------------------------------------------------------- */

static void on_io(loop_io *io, uint32_t events)
{
    pg_conn *c = container_of(io, pg_conn, io);
    if (c->state == PGC_CONNECTING) {
        connect_step(c);
        return;
    }
    if ((events & (LOOP_READ | LOOP_ERROR)) && read_replies(c))
        return;
    if ((events & LOOP_WRITE) && c->pg)
        on_flush_defer(&c->flush_defer);
}

static void on_timer(loop_timer *t)
{
    pg_conn *c = container_of(t, pg_conn, timer);
    switch (c->state) {
    case PGC_IDLE:
        pg_conn_start(c);
        return;
    case PGC_CONNECTING:
        conn_fail(c, MYR_DB_UNAVAILABLE, "connect timed out");
        return;
    default: {
        pg_wait *w = wait_head(c);
        if (!w)
            return;
        if (w->deadline > loop_now(conn_loop(c))) {
            loop_timer_start_at(conn_loop(c), t, w->deadline, on_timer);
            return;
        }
        conn_fail(c, MYR_DB_TIMEOUT, "query timed out");
    }
    }
}

/* ---- failure and close ------------------------------------------------------------------- */

/* Detaches everything from c: the PGconn, the socket, the waits. Returns
 * the parts that were waiting (linked through next), each once. */
static pg_part *conn_reset(pg_conn *c)
{
    pg_part *parts = NULL, **tail = &parts;
    while (c->count) {
        pg_wait *w = wait_head(c);
        PQclear(w->res);
        if (w->kind == PGW_CALL && w->part->conn == c) {
            w->part->conn = NULL;   /* listed once */
            w->part->next = NULL;
            *tail = w->part;
            tail = &w->part->next;
        }
        if (w->kind == PGW_PROBE)
            c->node->probing = false;
        wait_pop(c);
    }
    if (c->io.fd >= 0)
        loop_io_del(conn_loop(c), &c->io);
    c->io.fd = -1;
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    c->want_write = false;
    loop_timer_stop(conn_loop(c), &c->timer);
    return parts;
}

static void conn_fail(pg_conn *c, myr_db_error err, const char *why)
{
    bool was_ready = c->state == PGC_READY;
    bool connecting = c->state == PGC_CONNECTING || c->state == PGC_PREPARING;
    if (connecting || was_ready)
        log_warn("postgres %s: %s%.*s", c->node->name,
                 connecting ? "cannot connect: " : "connection lost: ",
                 (int)strcspn(why, "\n"), why);
    c->state = PGC_IDLE;
    pg_part *parts = conn_reset(c);
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (c->backoff_ms > BACKOFF_MAX_MS)
        c->backoff_ms = BACKOFF_MAX_MS;
    /* jitter (+0..25%) so a pool does not reconnect in lockstep */
    uint32_t delay = c->backoff_ms + (uint32_t)((uintptr_t)c >> 4) % (c->backoff_ms / 4 + 1);
    loop_timer_start(conn_loop(c), &c->timer, delay, on_timer);
    pg_node_conn_lost(c->node, was_ready, connecting);
    while (parts) {
        pg_part *next = parts->next;
        pg_cluster_part_failed(parts, err);
        parts = next;
    }
}

void pg_conn_close(pg_conn *c)
{
    bool was_ready = c->state == PGC_READY;
    c->state = PGC_IDLE;
    pg_part *parts = conn_reset(c);
    if (was_ready)
        pg_node_conn_lost(c->node, true, false);
    while (parts) {
        pg_part *next = parts->next;
        pg_cluster_part_failed(parts, MYR_DB_UNAVAILABLE);
        parts = next;
    }
    free(c->waits);
    c->waits = NULL;
    c->cap = c->head = c->count = 0;
}

/* ---- results ---------------------------------------------------------------------------- */

const char *db_pg_cell(const void *pgres, size_t row, size_t col, size_t *len, bool *null)
{
    const PGresult *r = pgres;
    if (row >= (size_t)PQntuples(r) || col >= (size_t)PQnfields(r) ||
        PQgetisnull(r, (int)row, (int)col)) {
        *null = true;
        *len = 0;
        return NULL;
    }
    *null = false;
    *len = (size_t)PQgetlength(r, (int)row, (int)col);
    return PQgetvalue(r, (int)row, (int)col);
}

void db_pg_result_clear(void *pgres) { PQclear(pgres); }
