/* db_pg_cluster — the PostgreSQL backend's servers and routing (see
 * db_pg.h): which shard, which server, which connection.
 *
 * Shards: shard 0 is --db, shards 1.. are --db-shard in order. A call whose
 * statement is MYR_DB_SHARDED goes to the shard its key hashes to (db.c);
 * an op's calls are split into one part per shard, and the op completes
 * when its last part does.
 *
 * Servers (nodes): each shard has a primary and any number of replicas
 * (--db-replica for shard 0, --db-shard-replica I:URL). Writes and
 * read-your-writes reads go to the primary. Other reads go round-robin to a
 * replica that has a READY connection and is not lagging; with none, to the
 * primary. A replica whose connection fails hands its reads to the primary
 * (once per part); its connections reconnect with backoff, and it takes
 * reads again when one is READY. Lag is probed every LAG_POLL_MS on a
 * replica connection (pg_last_xact_replay_timestamp, 0 when everything
 * received is replayed).
 *
 * Availability: a part for a node with a READY connection is sent at once;
 * while the node's first connections are still being made it waits
 * (bounded by --db-timeout); once the node's connections have failed, it
 * fails at once with MYR_DB_UNAVAILABLE (503) until a reconnect succeeds.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "data/db_pg.h"

#define LAG_POLL_MS       500
#define MIGRATION_LOCK_SQL "SELECT pg_advisory_xact_lock(7236041)"   /* migrations, one at a time */

/* ---- failing parts (always from a deferred callback) ---------------------------------- */

static void run_failed(loop_deferred *d)
{
    pg_cluster *cl = container_of(d, pg_cluster, fail_defer);
    pg_part *p = cl->failed;
    cl->failed = NULL;
    while (p) {
        pg_part *next = p->next;
        db_op *op = p->op;
        free(p);
        db_op_part_done(op);
        p = next;
    }
}

static void part_fail_later(pg_cluster *cl, pg_part *p, myr_db_error err)
{
    db_op_fail(p->op, err);
    p->next = cl->failed;
    cl->failed = p;
    loop_defer(cl->db->loop, &cl->fail_defer, run_failed);
}

/* ---- nodes ------------------------------------------------------------------------------- */

static pg_conn *pick_conn(pg_node *n)
{
    pg_conn *best = NULL;
    for (uint32_t i = 0; i < n->nconns; i++) {
        pg_conn *c = &n->conns[i];
        if (c->state == PGC_READY && (!best || c->count < best->count))
            best = c;
    }
    return best;
}

static void on_pending_timer(loop_timer *t)
{
    pg_node *n = container_of(t, pg_node, pending_timer);
    uint64_t now = loop_now(n->cl->db->loop);
    while (n->pending && n->pending->op->deadline <= now) {
        pg_part *p = n->pending;
        n->pending = p->next;
        if (!n->pending)
            n->pending_tail = &n->pending;
        part_fail_later(n->cl, p, MYR_DB_TIMEOUT);
    }
    if (n->pending)
        loop_timer_start_at(n->cl->db->loop, t, n->pending->op->deadline, on_pending_timer);
}

static void node_dispatch(pg_node *n, pg_part *p);

static void pending_add(pg_node *n, pg_part *p)
{
    p->next = NULL;
    *n->pending_tail = p;
    n->pending_tail = &p->next;
    if (!loop_timer_active(&n->pending_timer))
        loop_timer_start_at(n->cl->db->loop, &n->pending_timer, p->op->deadline,
                            on_pending_timer);
}

/* Empties the pending list through node_dispatch (sent, moved or failed). */
static void pending_flush(pg_node *n)
{
    pg_part *p = n->pending;
    n->pending = NULL;
    n->pending_tail = &n->pending;
    loop_timer_stop(n->cl->db->loop, &n->pending_timer);
    while (p) {
        pg_part *next = p->next;
        node_dispatch(n, p);
        p = next;
    }
}

static void node_dispatch(pg_node *n, pg_part *p)
{
    pg_cluster *cl = n->cl;
    p->node = n;
    if (cl->closing) {
        part_fail_later(cl, p, MYR_DB_UNAVAILABLE);
        return;
    }
    pg_conn *c = pick_conn(n);
    if (c) {
        pg_conn_send_part(c, p);   /* on failure the part comes back through part_failed */
        return;
    }
    if (!n->down) {
        pending_add(n, p);         /* first connections still being made */
        return;
    }
    if (n->replica) {
        p->retried = true;
        node_dispatch(cl->shards[p->shard].primary, p);
        return;
    }
    part_fail_later(cl, p, MYR_DB_UNAVAILABLE);
}

void pg_node_conn_ready(pg_node *n)
{
    n->nready++;
    if (n->down)
        log_info("postgres %s: connected again", n->name);
    n->down = false;
    pending_flush(n);
}

void pg_node_conn_lost(pg_node *n, bool was_ready, bool connect_failed)
{
    if (was_ready)
        n->nready--;
    if (n->nready == 0 && (connect_failed || was_ready)) {
        n->down = true;
        n->lagging = false;
        pending_flush(n);          /* moves them to the primary, or fails them */
    }
}

/* ---- replicas: choice and lag ------------------------------------------------------------- */

static pg_node *pick_replica(pg_shard *sh)
{
    for (uint32_t i = 0; i < sh->nreplicas; i++) {
        pg_node *r = sh->replicas[(sh->rr + i) % sh->nreplicas];
        if (r->nready && !r->lagging) {
            sh->rr = (sh->rr + i + 1) % sh->nreplicas;
            return r;
        }
    }
    return NULL;
}

static void on_lag_timer(loop_timer *t)
{
    pg_node *n = container_of(t, pg_node, lag_timer);
    pg_conn *c = n->probing ? NULL : pick_conn(n);
    loop_timer_start(n->cl->db->loop, t, LAG_POLL_MS, on_lag_timer);
    if (c && pg_conn_send_probe(c) == 0)
        n->probing = true;
}

void pg_node_probe_result(pg_node *n, PGresult *res)
{
    n->probing = false;
    if (!res)
        return;
    int64_t lag = PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    bool lagging = (uint64_t)(lag > 0 ? lag : 0) > n->cl->db->cfg->db_max_replica_lag;
    if (lagging != n->lagging)
        log_warn("postgres replica %s: replay lag %lld ms: %s", n->name, (long long)lag,
                 lagging ? "skipped for reads until it catches up" : "caught up, reading again");
    n->lagging = lagging;
    n->lag_ms = lag;
}

/* ---- parts and replies ---------------------------------------------------------------------- */

static void part_route(pg_cluster *cl, pg_part *p)
{
    pg_shard *sh = &cl->shards[p->shard];
    pg_node *n = NULL;
    if (!p->op->write && !p->op->primary && !p->retried)
        n = pick_replica(sh);
    node_dispatch(n ? n : sh->primary, p);
}

void pg_cluster_part_failed(pg_part *p, myr_db_error err)
{
    pg_cluster *cl = p->node->cl;
    if (!cl->closing && err == MYR_DB_UNAVAILABLE && p->node->replica && !p->retried) {
        for (uint32_t k = 0; k < p->ncalls; k++) {
            db_result_free(p->op->results[p->idx[k]]);
            p->op->results[p->idx[k]] = NULL;
        }
        p->left = p->ncalls;
        p->retried = true;
        node_dispatch(cl->shards[p->shard].primary, p);
        return;
    }
    part_fail_later(cl, p, err);
}

static myr_db_result *wrap(PGresult *res)
{
    myr_db_result *r = calloc(1, sizeof(*r));
    if (!r) {
        PQclear(res);
        return NULL;
    }
    r->pg = res;
    r->nrows = (uint32_t)PQntuples(res);
    r->ncols = (uint32_t)PQnfields(res);
    r->affected = strtoull(PQcmdTuples(res), NULL, 10);
    return r;
}

void pg_cluster_reply(pg_part *p, uint32_t k, PGresult *res)
{
    db_op *op = p->op;
    if (!res) {
        db_op_fail(op, MYR_DB_QUERY_FAILED);
    } else if (op->err) {
        PQclear(res);
    } else if (!(op->results[p->idx[k]] = wrap(res))) {
        db_op_fail(op, MYR_DB_NOMEM);
    }
    if (--p->left == 0) {
        free(p);
        db_op_part_done(op);
    }
}

static pg_part *part_new(db_op *op, uint32_t shard, uint32_t ncalls)
{
    pg_part *p = malloc(sizeof(*p) + ncalls * sizeof(uint32_t));
    if (p)
        *p = (pg_part){ .op = op, .shard = shard };
    return p;
}

static void pg_submit(myr_db *db, db_op *op)
{
    pg_cluster *cl = db->impl;
    uint32_t counts[db->nshards];
    pg_part *parts[db->nshards];
    uint32_t nparts = 0;
    memset(counts, 0, sizeof(counts));
    memset(parts, 0, sizeof(parts));
    for (uint32_t i = 0; i < op->ncalls; i++)
        counts[op->calls[i].shard]++;
    for (uint32_t s = 0; s < db->nshards; s++) {
        if (!counts[s])
            continue;
        if (!(parts[s] = part_new(op, s, counts[s]))) {
            for (uint32_t k = 0; k < s; k++)
                free(parts[k]);
            db_op_fail_later(op, MYR_DB_NOMEM);   /* op->parts is still 1 */
            return;
        }
        nparts++;
    }
    for (uint32_t i = 0; i < op->ncalls; i++) {
        pg_part *p = parts[op->calls[i].shard];
        p->idx[p->ncalls++] = i;
        p->left++;
    }
    op->parts = nparts;   /* set before routing: a part may finish at once */
    for (uint32_t s = 0; s < db->nshards; s++)
        if (parts[s])
            part_route(cl, parts[s]);
}

/* ---- start-up: URLs, migrations, nodes -------------------------------------------------- */

/* "host:port/dbname" from a conninfo or URL; NULL if it does not parse
 * (errmsg says why, the caller frees it with PQfreemem). */
static char *node_label(const char *url, char **errmsg)
{
    PQconninfoOption *opts = PQconninfoParse(url, errmsg);
    if (!opts)
        return NULL;
    const char *host = "localhost", *port = "5432", *dbname = "";
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "port"))
            port = o->val;
        else if (!strcmp(o->keyword, "dbname"))
            dbname = o->val;
    }
    char buf[600];
    snprintf(buf, sizeof(buf), "%s:%s/%s", host, port, dbname);
    PQconninfoFree(opts);
    return strdup(buf);
}

static pg_node *node_new(pg_cluster *cl, const char *url, size_t len, uint32_t shard,
                         bool replica)
{
    pg_node *n = calloc(1, sizeof(*n));
    if (!n || !(n->url = strndup(url, len))) {
        free(n);
        return NULL;
    }
    char *err = NULL;
    n->name = node_label(n->url, &err);
    if (!n->name) {
        log_error("--db%s %.*s: %s", replica ? "-replica" : shard ? "-shard" : "", (int)len, url,
                  err ? strtok(err, "\n") : "invalid connection string");
        if (err)
            PQfreemem(err);
        free(n->url);
        free(n);
        return NULL;
    }
    n->cl = cl;
    n->shard = shard;
    n->replica = replica;
    n->lag_ms = -1;
    n->pending_tail = &n->pending;
    n->nconns = cl->db->cfg->db_pool;
    n->conns = calloc(n->nconns, sizeof(pg_conn));
    if (!n->conns) {
        free(n->name);
        free(n->url);
        free(n);
        return NULL;
    }
    for (uint32_t i = 0; i < n->nconns; i++)
        pg_conn_init(&n->conns[i], n);
    cl->nodes[cl->nnodes++] = n;
    return n;
}

static int add_replica(pg_cluster *cl, uint32_t shard, const char *url, size_t len)
{
    pg_shard *sh = &cl->shards[shard];
    pg_node **r = realloc(sh->replicas, (sh->nreplicas + 1) * sizeof(*r));
    if (!r)
        return -ENOMEM;
    sh->replicas = r;
    if (!(r[sh->nreplicas] = node_new(cl, url, len, shard, true)))
        return -EINVAL;
    sh->nreplicas++;
    return 0;
}

static int exec_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
}

static bool migration_applied(PGconn *pg, const char *name, bool *failed)
{
    const char *v[1] = { name };
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM myriad_migrations WHERE name = $1", 1, NULL, v,
                               NULL, NULL, 0);
    *failed = PQresultStatus(r) != PGRES_TUPLES_OK;
    bool found = !*failed && PQntuples(r) > 0;
    PQclear(r);
    return found;
}

/* Applies the PostgreSQL migrations not yet recorded on one primary, under
 * an advisory lock so that workers starting together apply each once. */
static int migrate_apply(myr_db *db, PGconn *pg, const char *label)
{
    if (exec_ok(pg, "BEGIN") ||
        exec_ok(pg, MIGRATION_LOCK_SQL) ||
        exec_ok(pg, "CREATE TABLE IF NOT EXISTS myriad_migrations (name text PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"))
        return -1;
    for (size_t i = 0; i < db->reg->nmigs; i++) {
        const db_migration *m = &db->reg->migs[i];
        bool failed;
        if (m->dialect != MYR_DB_PG || migration_applied(pg, m->name, &failed))
            continue;
        if (failed)
            return -1;
        log_info("postgres %s: applying migration %s", label, m->name);
        const char *v[1] = { m->name };
        if (exec_ok(pg, m->sql))
            return -1;
        PGresult *r = PQexecParams(pg, "INSERT INTO myriad_migrations (name) VALUES ($1)", 1,
                                   NULL, v, NULL, NULL, 0);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok)
            return -1;
    }
    return exec_ok(pg, "COMMIT");
}

static void notice_ignore(void *arg, const char *message) {}

/* Start-up only (blocks): a server that cannot be reached is reported and
 * skipped (the service answers 503 until it is up); failing SQL is fatal. */
static int migrate(myr_db *db, const pg_node *n)
{
    bool any = false;
    for (size_t i = 0; i < db->reg->nmigs; i++)
        any |= db->reg->migs[i].dialect == MYR_DB_PG;
    if (!any)
        return 0;
    char timeout[24];
    snprintf(timeout, sizeof(timeout), "%llu",
             (unsigned long long)(db->cfg->db_timeout + 999) / 1000);
    const char *keys[] = { "dbname", "connect_timeout", NULL };
    const char *vals[] = { n->url, timeout, NULL };
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pg) != CONNECTION_OK) {
        const char *e = PQerrorMessage(pg);
        log_warn("postgres %s: cannot connect to apply migrations (%.*s); serving 503 until "
                 "it is up", n->name, (int)strcspn(e, "\n"), e);
        PQfinish(pg);
        return 0;
    }
    PQsetNoticeProcessor(pg, notice_ignore, NULL);   /* "already exists, skipping" */
    int rc = migrate_apply(db, pg, n->name);
    if (rc) {
        const char *e = PQerrorMessage(pg);
        log_error("postgres %s: migration failed: %.*s", n->name, (int)strcspn(e, "\n"), e);
    }
    PQfinish(pg);
    return rc ? -EINVAL : 0;
}

static int parse_nodes(pg_cluster *cl, const char *url)
{
    const config *cfg = cl->db->cfg;
    const char *cur = NULL, *v;
    size_t len;
    uint32_t shard = 0;
    if (!(cl->shards[0].primary = node_new(cl, url, strlen(url), 0, false)))
        return -EINVAL;
    while ((v = config_list_next(cfg->db_shard, &cur, &len))) {
        shard++;
        if (!(cl->shards[shard].primary = node_new(cl, v, len, shard, false)))
            return -EINVAL;
    }
    for (cur = NULL; (v = config_list_next(cfg->db_replica, &cur, &len));)
        if (add_replica(cl, 0, v, len))
            return -EINVAL;
    for (cur = NULL; (v = config_list_next(cfg->db_shard_replica, &cur, &len));) {
        char *end;
        unsigned long i = strtoul(v, &end, 10);
        if (end == v || *end != ':' || i >= cl->db->nshards) {
            log_error("--db-shard-replica %.*s: expected I:URL with I a shard number below %u",
                      (int)len, v, cl->db->nshards);
            return -EINVAL;
        }
        if (add_replica(cl, (uint32_t)i, end + 1, len - (size_t)(end + 1 - v)))
            return -EINVAL;
    }
    return 0;
}

static void pg_close(myr_db *db);

static int pg_open(myr_db *db, const char *url)
{
    const config *cfg = db->cfg;
    size_t maxnodes = db->nshards;
    for (const char *p = cfg->db_replica; *p; p++)
        maxnodes += *p == '\n';
    for (const char *p = cfg->db_shard_replica; *p; p++)
        maxnodes += *p == '\n';
    maxnodes += 2;
    pg_cluster *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return -ENOMEM;
    db->impl = cl;
    cl->db = db;
    cl->shards = calloc(db->nshards, sizeof(pg_shard));
    cl->nodes = calloc(maxnodes, sizeof(pg_node *));
    int rc = cl->shards && cl->nodes ? parse_nodes(cl, url) : -ENOMEM;
    for (uint32_t s = 0; rc == 0 && s < db->nshards; s++)
        rc = migrate(db, cl->shards[s].primary);
    if (rc) {
        pg_close(db);
        return rc;
    }
    for (uint32_t i = 0; i < cl->nnodes; i++) {
        pg_node *n = cl->nodes[i];
        db_metrics_pool(db, (int32_t)n->nconns, 0);   /* every server's connections */
        for (uint32_t k = 0; k < n->nconns; k++)
            pg_conn_start(&n->conns[k]);
        if (n->replica)
            loop_timer_start(db->loop, &n->lag_timer, LAG_POLL_MS, on_lag_timer);
    }
    log_info("postgres: %u shard%s, %u server%s, %u connection%s each", db->nshards,
             db->nshards == 1 ? "" : "s", cl->nnodes, cl->nnodes == 1 ? "" : "s", cfg->db_pool,
             cfg->db_pool == 1 ? "" : "s");
    return 0;
}

static bool deferred_work(const pg_cluster *cl)
{
    if (cl->fail_defer.queued)
        return true;
    for (uint32_t i = 0; i < cl->nnodes; i++)
        for (uint32_t k = 0; k < cl->nodes[i]->nconns; k++)
            if (cl->nodes[i]->conns[k].flush_defer.queued)
                return true;
    return false;
}

static void pg_close(myr_db *db)
{
    pg_cluster *cl = db->impl;
    if (!cl)
        return;
    cl->closing = true;
    for (uint32_t i = 0; i < cl->nnodes; i++) {
        pg_node *n = cl->nodes[i];
        loop_timer_stop(db->loop, &n->lag_timer);
        pending_flush(n);   /* closing: every part fails */
        for (uint32_t k = 0; k < n->nconns; k++)
            pg_conn_close(&n->conns[k]);
    }
    /* deliver the failed parts and let queued flushes run (they see no
     * connection) before their memory goes */
    for (int i = 0; i < 16 && deferred_work(cl); i++)
        loop_run_once(db->loop, 0);
    for (uint32_t i = 0; i < cl->nnodes; i++) {
        pg_node *n = cl->nodes[i];
        free(n->conns);
        free(n->name);
        free(n->url);
        free(n);
    }
    for (uint32_t s = 0; cl->shards && s < db->nshards; s++)
        free(cl->shards[s].replicas);
    free(cl->shards);
    free(cl->nodes);
    free(cl);
    db->impl = NULL;
}

const db_backend db_backend_pg = {
    .name = "postgres",
    .dialect = MYR_DB_PG,
    .open = pg_open,
    .close = pg_close,
    .submit = pg_submit,
};
