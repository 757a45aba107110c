/* db — see db.h. The registry, operations, routing, the query budget and
 * the result accessors; nothing here knows a backend's wire or file format.
 *
 * An op is one malloc'd block laid out as
 *
 *   [db_op | db_call x ncalls | myr_db_result* x ncalls | myr_db_param x P | text]
 *
 * so the caller's parameter arrays and strings may die as soon as the
 * submitting call returns. The op dies after its callback has returned.
 */
#include "data/db.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "http/app.h"
#include "http/request.h"
#include "http/server.h"
#include "obs/metrics.h"

#define DEFAULT_URL "sqlite:myriad.db"
#define BUDGET_LOG_INTERVAL_NS 1000000000ull   /* one N+1 warning a second */

/* ---- errors --------------------------------------------------------------------------- */

const char *myr_db_strerror(myr_db_error err)
{
    static const char *const msgs[] = {
#define MSG_(code, msg) msg,
        MYR_DB_ERRORS(MSG_)
#undef MSG_
    };
    if ((unsigned)err >= sizeof(msgs) / sizeof(msgs[0]))
        return "unknown database error";
    return msgs[err];
}

int myr_db_error_status(myr_db_error err)
{
    switch (err) {
    case MYR_DB_OK:
        return 200;
    case MYR_DB_QUERY_FAILED:
    case MYR_DB_BUDGET:
        return 500;
    default:
        return 503;
    }
}

/* ---- registry ----------------------------------------------------------------------- */

int db_sql_translate(const char *sql, char *out)
{
    int max = 0;
    char quote = 0;
    for (const char *p = sql; *p; p++) {
        char c = *p;
        if (quote) {
            if (c == quote)
                quote = 0;
        } else if (c == '\'' || c == '"') {
            quote = c;
        } else if (c == '$' && p[1] >= '0' && p[1] <= '9') {
            int n = 0;
            *out++ = '?';
            while (p[1] >= '0' && p[1] <= '9') {
                n = n * 10 + (p[1] - '0');
                if (n > DB_MAX_PARAMS)
                    return -EINVAL;
                *out++ = *++p;
            }
            if (n == 0)
                return -EINVAL;
            if (n > max)
                max = n;
            continue;
        }
        *out++ = c;
    }
    *out = '\0';
    return max;
}

static db_registry *registry(myr_app *app)
{
    if (!app->db)
        app->db = calloc(1, sizeof(db_registry));
    return app->db;
}

static bool name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > DB_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(name[i] == '_' || name[i] == '-' || name[i] == '.' ||
              (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
              (name[i] >= '0' && name[i] <= '9')))
            return false;
    return true;
}

static unsigned dialects(unsigned flags)
{
    unsigned d = flags & (MYR_DB_PG | MYR_DB_SQLITE);
    return d ? d : MYR_DB_PG | MYR_DB_SQLITE;
}

int myr_db_prepare(myr_app *app, const char *name, const char *sql, unsigned flags)
{
    if (!name || !sql || !name_valid(name) ||
        (flags & ~(unsigned)(MYR_DB_WRITE | MYR_DB_SHARDED | MYR_DB_PG | MYR_DB_SQLITE)))
        return -EINVAL;
    db_registry *r = registry(app);
    if (!r)
        return -ENOMEM;
    for (size_t i = 0; i < r->nstmts; i++)
        if (strcmp(r->stmts[i].name, name) == 0 && (dialects(r->stmts[i].flags) & dialects(flags)))
            return -EEXIST;
    char *lite = malloc(strlen(sql) + 1);
    if (!lite)
        return -ENOMEM;
    int np = db_sql_translate(sql, lite);
    if (np < 0 || ((flags & MYR_DB_SHARDED) && np < 1)) {
        free(lite);
        return -EINVAL;
    }
    if (r->nstmts == r->cap_stmts) {
        size_t cap = r->cap_stmts ? r->cap_stmts * 2 : 16;
        db_stmt *s = realloc(r->stmts, cap * sizeof(*s));
        if (!s) {
            free(lite);
            return -ENOMEM;
        }
        r->stmts = s;
        r->cap_stmts = cap;
    }
    db_stmt *s = &r->stmts[r->nstmts];
    *s = (db_stmt){ .name = strdup(name), .sql = strdup(sql), .sql_sqlite = lite,
                    .flags = flags, .nparams = (unsigned)np };
    if (!s->name || !s->sql) {
        free(s->name);
        free(s->sql);
        free(lite);
        return -ENOMEM;
    }
    r->nstmts++;
    return 0;
}

int myr_db_migration(myr_app *app, const char *name, unsigned dialect, const char *sql)
{
    if (!name || !sql || !name_valid(name) || (dialect != MYR_DB_PG && dialect != MYR_DB_SQLITE))
        return -EINVAL;
    db_registry *r = registry(app);
    if (!r)
        return -ENOMEM;
    if (r->nmigs == r->cap_migs) {
        size_t cap = r->cap_migs ? r->cap_migs * 2 : 8;
        db_migration *m = realloc(r->migs, cap * sizeof(*m));
        if (!m)
            return -ENOMEM;
        r->migs = m;
        r->cap_migs = cap;
    }
    db_migration *m = &r->migs[r->nmigs];
    *m = (db_migration){ .name = strdup(name), .sql = strdup(sql), .dialect = dialect };
    if (!m->name || !m->sql) {
        free(m->name);
        free(m->sql);
        return -ENOMEM;
    }
    r->nmigs++;
    return 0;
}

void db_registry_free(db_registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nstmts; i++) {
        free(r->stmts[i].name);
        free(r->stmts[i].sql);
        free(r->stmts[i].sql_sqlite);
    }
    for (size_t i = 0; i < r->nmigs; i++) {
        free(r->migs[i].name);
        free(r->migs[i].sql);
    }
    free(r->stmts);
    free(r->migs);
    free(r);
}

/* ---- metrics ------------------------------------------------------------------------------ */

/* Label values, in cell order: the backends by dialect, op outcomes, and
 * the error codes after MYR_DB_OK in myriad.h's order. */
static const char *const m_backends[] = { "sqlite", "postgres", NULL };
static const char *const m_results[] = { "ok", "error", NULL };
static const char *const m_errors[] = { "unavailable", "timeout", "busy", "nomem",
                                        "query_failed", "budget", NULL };
static_assert(MYR_DB_BUDGET == 6 && MYR_DB_UNAVAILABLE == 1,
              "m_errors follows MYR_DB_ERRORS");
static const uint64_t m_qpr_bounds[] = { 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000 };

static const metrics_spec m_spec_per_request = {
    .name = "myriad_db_queries_per_request", .type = METRICS_HISTOGRAM,
    .help = "Statements issued per request that used the database (myr_db_queries).",
    .bounds = m_qpr_bounds, .nbounds = sizeof(m_qpr_bounds) / sizeof(m_qpr_bounds[0]),
};
static const metrics_spec m_spec_queries = {
    .name = "myriad_db_queries_total", .type = METRICS_COUNTER,
    .help = "Statements completed, by backend and by the outcome of their operation.",
    .label = { "backend", "result" }, .values = { m_backends, m_results },
};
static const metrics_spec m_spec_errors = {
    .name = "myriad_db_errors_total", .type = METRICS_COUNTER,
    .help = "Database operations that failed, by error.",
    .label = { "error" }, .values = { m_errors },
};
static const metrics_spec m_spec_pool_size = {
    .name = "myriad_db_pool_size", .type = METRICS_GAUGE,
    .help = "Database pool: PostgreSQL connections, or SQLite pool threads.",
};
static const metrics_spec m_spec_pool_in_use = {
    .name = "myriad_db_pool_in_use", .type = METRICS_GAUGE,
    .help = "Database pool members busy with statements.",
};

/* Adds (or finds) the families; a family that cannot be added stays NULL
 * and is not counted (logged once). */
static void metrics_open(myr_db *db, metrics_worker *w)
{
    metrics_registry *reg = metrics_registry_of(w);
    if (!reg)
        return;
    db->m.w = w;
    db->m.per_request = metrics_family_add(reg, &m_spec_per_request);
    db->m.queries = metrics_family_add(reg, &m_spec_queries);
    db->m.errors = metrics_family_add(reg, &m_spec_errors);
    db->m.pool_size = metrics_family_add(reg, &m_spec_pool_size);
    db->m.pool_in_use = metrics_family_add(reg, &m_spec_pool_in_use);
    if (!db->m.per_request || !db->m.queries || !db->m.errors || !db->m.pool_size ||
        !db->m.pool_in_use)
        log_warn("metrics: database families not all registered: %s", strerror(errno));
}

void db_metrics_pool(myr_db *db, int32_t size_delta, int32_t in_use_delta)
{
    db_metrics *m = &db->m;
    m->size = (uint32_t)((int64_t)m->size + size_delta);
    m->in_use = (uint32_t)((int64_t)m->in_use + in_use_delta);
    /* absolute values: right even if the slot's gauges were zeroed meanwhile */
    if (m->pool_size)
        metrics_set(m->w, m->pool_size, 0, m->size);
    if (m->pool_in_use)
        metrics_set(m->w, m->pool_in_use, 0, m->in_use);
}

/* A request that issued statements is complete: one observation of its
 * final count. Observing only at the end keeps every bucket monotonic, as
 * Prometheus requires of a histogram. */
void db_request_observe(myr_db *db, uint32_t queries)
{
    const metrics_family *f = db->m.per_request;
    if (!f || !queries)
        return;
    metrics_cell *c = &db->m.w->cells[f->offset];
    metrics_cell_add(&c[metrics_bucket(f->bounds, f->nbounds, queries)], 1);
    metrics_cell_add(&c[f->nbounds + 1], queries);
}

/* An op is delivered: its statements by outcome, its error by name. */
static void metrics_op_done(const db_op *op)
{
    const db_metrics *m = &op->db->m;
    if (m->queries) {
        unsigned backend = op->db->backend->dialect == MYR_DB_PG;
        metrics_add(m->w, m->queries, metrics_combo(m->queries, backend, op->err != MYR_DB_OK),
                    op->ncalls);
    }
    if (m->errors && op->err > MYR_DB_OK && op->err <= MYR_DB_BUDGET)
        metrics_inc(m->w, m->errors, (unsigned)op->err - 1);
}

/* ---- the worker's handle -------------------------------------------------------------- */

const char *db_url(const config *cfg)
{
    if (cfg->db[0])
        return cfg->db;
    const char *env = getenv("DATABASE_URL");
    return env && *env ? env : DEFAULT_URL;
}

static const db_backend *backend_for(const char *url)
{
    if (strncmp(url, "sqlite:", 7) == 0)
        return &db_backend_sqlite;
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        return &db_backend_pg;
    return NULL;
}

static uint32_t count_lines(const char *list)
{
    const char *cur = NULL;
    size_t len;
    uint32_t n = 0;
    while (config_list_next(list, &cur, &len))
        n++;
    return n;
}

static void run_failed(loop_deferred *d)
{
    myr_db *db = container_of(d, myr_db, fail_defer);
    db_op *op = db->failed;
    db->failed = NULL;
    while (op) {
        db_op *next = op->next;
        db_op_part_done(op);
        op = next;
    }
}

/* A handle for reg on be, with be's dialect of the statements; no loop,
 * server or backend state yet. NULL when out of memory. */
static myr_db *db_new(const db_registry *reg, const config *cfg, const db_backend *be)
{
    myr_db *db = calloc(1, sizeof(*db));
    if (!db || !(db->stmts = calloc(reg->nstmts + 1, sizeof(*db->stmts)))) {
        free(db);
        return NULL;
    }
    *db = (myr_db){ .cfg = cfg, .backend = be, .reg = reg, .stmts = db->stmts,
                    .nshards = 1 + count_lines(cfg->db_shard) };
    for (size_t i = 0; i < reg->nstmts; i++)
        if (dialects(reg->stmts[i].flags) & be->dialect)
            db->stmts[db->nstmts++] = &reg->stmts[i];
    return db;
}

static void db_free(myr_db *db)
{
    free(db->stmts);
    free(db);
}

#define UNKNOWN_SCHEME "--db %s: unknown scheme (use sqlite:PATH or postgres://...)"

int db_prefork(const myr_app *app, const config *cfg, char *err, size_t errlen)
{
    const db_registry *reg = app->db;
    if (!reg || (reg->nstmts == 0 && reg->nmigs == 0))
        return 0;
    const char *url = db_url(cfg);
    const db_backend *be = backend_for(url);
    if (!be) {
        snprintf(err, errlen, UNKNOWN_SCHEME, url);
        return -1;
    }
    if (!be->prefork)
        return 0;
    myr_db *db = db_new(reg, cfg, be);
    if (!db) {
        snprintf(err, errlen, "--db %s: out of memory", url);
        return -1;
    }
    int rc = be->prefork(db, url, err, errlen);
    db_free(db);
    return rc < 0 ? -1 : 0;
}

int db_open(http_server *srv, myr_db **out)
{
    *out = NULL;
    const db_registry *reg = srv->app->db;
    if (!reg || (reg->nstmts == 0 && reg->nmigs == 0))
        return 0;
    const char *url = db_url(srv->cfg);
    const db_backend *be = backend_for(url);
    if (!be) {
        log_error(UNKNOWN_SCHEME, url);
        return -EINVAL;
    }
    myr_db *db = db_new(reg, srv->cfg, be);
    if (!db)
        return -ENOMEM;
    db->loop = srv->loop;
    db->srv = srv;
    metrics_open(db, srv->metrics);
    int rc = be->open(db, url);
    if (rc < 0) {
        db_free(db);
        return rc;
    }
    *out = db;
    return 0;
}

void db_close(myr_db *db)
{
    if (!db)
        return;
    db->backend->close(db);
    db_metrics_pool(db, -(int32_t)db->m.size, -(int32_t)db->m.in_use);
    /* deliver what failed at the end, before the deferred item's memory goes */
    for (int i = 0; i < 16 && db->fail_defer.queued; i++)
        loop_run_once(db->loop, 0);
    db_free(db);
}

int db_find(const myr_db *db, const char *name)
{
    for (size_t i = 0; i < db->nstmts; i++)
        if (db->stmts[i]->name == name || strcmp(db->stmts[i]->name, name) == 0)
            return (int)i;
    return -1;
}

/* ---- routing -------------------------------------------------------------------------- */

/* Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm":
 * adding a shard moves only 1/n of the keys. */
static uint32_t jump_hash(uint64_t key, uint32_t buckets)
{
    int64_t b = -1, j = 0;
    while (j < (int64_t)buckets) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (uint32_t)b;
}

uint32_t db_shard_of(const myr_db_param *key, uint32_t nshards)
{
    char num[24];
    const char *s = key->s;
    size_t n = key->len;
    if (nshards <= 1)
        return 0;
    if (key->type == MYR_DB_INT) {
        n = (size_t)snprintf(num, sizeof(num), "%lld", (long long)key->i);
        s = num;
    } else if (key->type == MYR_DB_NULL) {
        n = 0;
    }
    uint64_t h = 14695981039346656037ULL;   /* FNV-1a 64 of the key's text */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return jump_hash(h, nshards);
}

/* ---- operations ----------------------------------------------------------------------- */

/* Builds an op from the caller's calls; NULL with *rc set on bad input. */
static db_op *op_new(myr_db *db, const myr_db_call *calls, size_t n, int *rc)
{
    size_t nparams = 0, text = 0;
    *rc = -EINVAL;
    if (n == 0 || n > UINT32_MAX / 2)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (calls[i].nparams && !calls[i].params)
            return NULL;
        nparams += calls[i].nparams;
        for (unsigned j = 0; j < calls[i].nparams; j++)
            if (calls[i].params[j].type == MYR_DB_TEXT)
                text += calls[i].params[j].len + 1;
    }
    size_t size = sizeof(db_op) + n * (sizeof(db_call) + sizeof(myr_db_result *)) +
                  nparams * sizeof(myr_db_param) + text;
    db_op *op = malloc(size);
    if (!op) {
        *rc = -ENOMEM;
        return NULL;
    }
    memset(op, 0, sizeof(*op) + n * (sizeof(db_call) + sizeof(myr_db_result *)));
    op->db = db;
    op->ncalls = (uint32_t)n;
    op->results = (myr_db_result **)(op->calls + n);
    myr_db_param *pp = (myr_db_param *)(op->results + n);
    char *tp = (char *)(pp + nparams);
    for (size_t i = 0; i < n; i++) {
        db_call *c = &op->calls[i];
        int si = calls[i].stmt ? db_find(db, calls[i].stmt) : -1;
        if (si < 0 || db->stmts[si]->nparams != calls[i].nparams) {
            *rc = si < 0 ? -ENOENT : -EINVAL;
            free(op);
            return NULL;
        }
        c->stmt = db->stmts[si];
        c->sidx = (uint32_t)si;
        c->params = pp;
        c->nparams = calls[i].nparams;
        for (unsigned j = 0; j < c->nparams; j++) {
            *pp = calls[i].params[j];
            if (pp->type == MYR_DB_TEXT) {
                memcpy(tp, pp->s ? pp->s : "", pp->len);
                tp[pp->len] = '\0';
                pp->s = tp;
                tp += pp->len + 1;
            }
            pp++;
        }
        if (c->stmt->flags & MYR_DB_WRITE)
            op->write = true;
        if (c->stmt->flags & MYR_DB_SHARDED)
            c->shard = db_shard_of(&c->params[0], db->nshards);
    }
    return op;
}

void db_op_fail_later(db_op *op, myr_db_error err)
{
    myr_db *db = op->db;
    db_op_fail(op, err);
    op->next = db->failed;
    db->failed = op;
    loop_defer(db->loop, &db->fail_defer, run_failed);
}

void db_submit(myr_db *db, db_op *op)
{
    op->parts = 1;
    op->deadline = loop_now(db->loop) + db->cfg->db_timeout * 1000000ull;
    db->ops++;
    db->calls += op->ncalls;
    if (op->err) {
        db_op_fail_later(op, op->err);
        return;
    }
    db->backend->submit(db, op);
}

void db_op_fail(db_op *op, myr_db_error err)
{
    if (!op->err)
        op->err = err;
    for (uint32_t i = 0; i < op->ncalls; i++) {
        db_result_free(op->results[i]);
        op->results[i] = NULL;
    }
}

void db_op_part_done(db_op *op)
{
    if (--op->parts > 0)
        return;
    myr_db_result **res = op->results;
    if (op->err)
        for (uint32_t i = 0; i < op->ncalls; i++) {
            db_result_free(res[i]);
            res[i] = NULL;
        }
    metrics_op_done(op);
    /* the callback may answer the request, which frees it: touch nothing of
     * the request after, and only the op's own block */
    if (op->req)
        op->req_cb(op->req, op->arg, op->err, res, op->ncalls);
    else
        op->bg_cb(op->arg, op->err, res, op->ncalls);
    for (uint32_t i = 0; i < op->ncalls; i++)
        db_result_free(res[i]);
    free(op);
}

/* ---- the query budget ----------------------------------------------------------------- */

static unsigned qbucket(uint32_t n)
{
    unsigned b = 0;
    while (n > 1 && b < DB_QHIST_BUCKETS - 1) {
        n >>= 1;
        b++;
    }
    return b;
}

/* Counts n more statements for req; true when the op must fail (strict). The
 * histogram moves the request from its old bucket to its new one, so it
 * holds each request's final count once the request is over. */
static bool budget_charge(myr_db *db, myr_req *req, size_t n)
{
    uint32_t before = req->db_queries;
    uint32_t after = before + (uint32_t)n;
    req->db_queries = after;
    if (before)
        db->qhist[qbucket(before)]--;
    db->qhist[qbucket(after)]++;
    uint32_t budget = db->cfg->db_query_budget;
    if (!budget || after <= budget)
        return false;
    uint64_t now = loop_now(db->loop);
    if (before <= budget && now - db->budget_logged >= BUDGET_LOG_INTERVAL_NS) {
        db->budget_logged = now;
        log_warn("%.*s issued %u statements, over --db-query-budget %u (N+1 queries?)%s",
                 (int)req->h.path_len, req->h.path, after, budget,
                 db->cfg->db_budget_strict ? ": failing it" : "");
    }
    return db->cfg->db_budget_strict;
}

/* ---- public: submitting ---------------------------------------------------------------- */

int myr_db_batch(myr_req *req, const myr_db_call *calls, size_t n, myr_db_done cb, void *arg)
{
    myr_db *db = req->srv->db;
    if (!db)
        return -ENOENT;   /* the app registered no statement */
    int rc;
    db_op *op = op_new(db, calls, n, &rc);
    if (!op)
        return rc;
    op->req = req;
    op->req_cb = cb;
    op->arg = arg;
    op->primary = db->cfg->db_read_your_writes && req->db_wrote;
    if (op->write)
        req->db_wrote = true;
    if (budget_charge(db, req, n))
        op->err = MYR_DB_BUDGET;
    db_submit(db, op);
    return 0;
}

int myr_db_query(myr_req *req, const char *stmt, const myr_db_param *params, unsigned nparams,
                 myr_db_done cb, void *arg)
{
    myr_db_call call = { stmt, params, nparams };
    return myr_db_batch(req, &call, 1, cb, arg);
}

int myr_db_submit(myr_db *db, const myr_db_call *calls, size_t n, myr_db_bg_done cb, void *arg)
{
    if (!db)
        return -ENOENT;
    int rc;
    db_op *op = op_new(db, calls, n, &rc);
    if (!op)
        return rc;
    op->bg_cb = cb;
    op->arg = arg;
    db_submit(db, op);
    return 0;
}

uint32_t myr_db_queries(const myr_req *req) { return req->db_queries; }

myr_db *myr_req_db(const myr_req *req) { return req->srv->db; }

/* ---- results ------------------------------------------------------------------------------ */

void db_result_free(myr_db_result *res)
{
    if (!res)
        return;
    if (res->pg)
        db_pg_result_clear(res->pg);
    free(res->cells);
    free(res->text);
    free(res);
}

size_t myr_db_rows(const myr_db_result *res) { return res ? res->nrows : 0; }
size_t myr_db_cols(const myr_db_result *res) { return res ? res->ncols : 0; }
uint64_t myr_db_affected(const myr_db_result *res) { return res ? res->affected : 0; }

static const db_cell *cell(const myr_db_result *res, size_t row, size_t col)
{
    if (!res || row >= res->nrows || col >= res->ncols)
        return NULL;
    return &res->cells[row * res->ncols + col];
}

bool myr_db_is_null(const myr_db_result *res, size_t row, size_t col)
{
    if (res && res->pg) {
        bool null = true;
        size_t len;
        db_pg_cell(res->pg, row, col, &len, &null);
        return null;
    }
    const db_cell *c = cell(res, row, col);
    return !c || c->type == MYR_DB_NULL;
}

static int64_t parse_int(const char *s)
{
    bool neg = *s == '-';
    uint64_t v = 0;
    s += neg || *s == '+';
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (uint64_t)(*s++ - '0');
    return neg ? -(int64_t)v : (int64_t)v;
}

int64_t myr_db_int(const myr_db_result *res, size_t row, size_t col)
{
    if (res && res->pg) {
        bool null;
        size_t len;
        const char *s = db_pg_cell(res->pg, row, col, &len, &null);
        return s ? parse_int(s) : 0;
    }
    const db_cell *c = cell(res, row, col);
    if (!c || c->type == MYR_DB_NULL)
        return 0;
    return c->type == MYR_DB_INT ? c->i : parse_int(res->text + c->off);
}

const char *myr_db_text(const myr_db_result *res, size_t row, size_t col, size_t *len)
{
    size_t dummy;
    len = len ? len : &dummy;
    if (res && res->pg) {
        bool null;
        const char *s = db_pg_cell(res->pg, row, col, len, &null);
        if (s)
            return s;
        *len = 0;
        return "";
    }
    const db_cell *c = cell(res, row, col);
    if (!c || c->type == MYR_DB_NULL) {
        *len = 0;
        return "";
    }
    *len = c->len;
    return res->text + c->off;
}
