/* db_sqlite — the embedded backend: a SQLite file, statements run on a
 * thread pool, never on the loop.
 *
 * Start-up (setup): one short-lived connection turns on WAL, applies the
 * migrations not yet recorded and prepares every statement once to report
 * bad SQL by name; then it is closed. It runs first in the supervisor,
 * before any worker exists (lite_prefork, from db_prefork): a bad path or a
 * file that is not a database stops the service there with one clear line,
 * and the reference data is seeded once by one process. Each worker then
 * runs the same setup (db_open, on its loop thread, before serving) and
 * normally finds every migration recorded: it reads that without a lock and
 * only opens the file. It still migrates when something is missing — after
 * a reload to another file, when the supervisor left the file alone (see
 * lite_prefork), or when another program changed it — under BEGIN
 * EXCLUSIVE, so processes starting together queue on the file lock and the
 * second finds the work recorded. No connection crosses a fork: the
 * supervisor's is closed before the first one.
 *
 * Serving: a pool of --db-pool threads of our own (pool_new), each with one
 * connection opened by the thread-start hook (pool_set_thread_hooks) and
 * every statement prepared once on it. An op is one pool job: its calls run
 * in order on one connection, inside one transaction when there are several
 * (a consistent snapshot) and always for writes. The pool is ours rather
 * than the worker's general one so that a thread waiting for the write lock
 * never holds up CPU work queued behind it, and the per-thread connection
 * hook does not claim that pool's one hook slot.
 *
 * Writers: SQLite allows one writer per file. In this process a mutex
 * (write_lock) makes writer threads take turns without sleeping in SQLite's
 * busy handler; across processes (several workers) BEGIN IMMEDIATE takes the
 * file's write lock up front and busy_timeout (--db-timeout) waits for it —
 * on the pool thread, so the loop never blocks. Readers are not blocked by
 * a writer (WAL). synchronous=NORMAL: in WAL mode a commit survives a
 * process crash; a power cut may lose the last commits, never corrupt.
 *
 * Timeouts: a job that waited in the queue past its deadline is not run;
 * a running statement is interrupted at the deadline (progress handler).
 */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "data/db.h"
#include "proc/pool.h"

#define QUEUE_MAX     65536   /* jobs waiting for a thread, beyond that 503 */
#define PROGRESS_OPS  1000    /* VM steps between deadline checks */
#define JOB_MIN_OPS   16      /* ops per job before another thread is woken */

typedef struct lite {
    myr_db         *db;
    pool           *pool;
    char           *path;
    db_op          *queued;        /* ops submitted this loop iteration, in order */
    db_op         **queued_tail;
    uint32_t        nqueued;
    loop_deferred   flush_defer;   /* hands the queued ops to the pool */
    /* Guards the right to hold a write transaction in this process; taken
     * before BEGIN IMMEDIATE, released after COMMIT/ROLLBACK. Alone in its
     * order (no other lock is held with it). */
    pthread_mutex_t write_lock;
    _Atomic uint64_t err_logged;   /* CLOCK_MONOTONIC ns of the last error line */
    uint32_t        njobs;         /* loop thread: jobs submitted, not yet done */
} lite;

/* One pool thread's connection (pool_thread_ctx). */
typedef struct lite_conn {
    sqlite3       *h;
    sqlite3_stmt **stmts;      /* db->nstmts, prepared once; NULL if open failed */
    size_t         nstmts;
    uint64_t       deadline;   /* CLOCK_MONOTONIC ns for the running op */
} lite_conn;

/* Ops run by one thread, one after the other (linked through op->next).
 * While the job is on the pool the loop thread touches none of them; the
 * pool thread writes their results and err, read after done. */
typedef struct lite_job {
    pool_job      job;
    lite         *l;
    db_op        *ops;
} lite_job;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void log_sqlite(lite *l, sqlite3 *h, const char *what)
{
    uint64_t now = mono_ns(), last = atomic_load(&l->err_logged);
    if (now - last < 1000000000ull || !atomic_compare_exchange_strong(&l->err_logged, &last, now))
        return;   /* at most one line a second */
    log_warn("sqlite %s: %s: %s", l->path, what, h ? sqlite3_errmsg(h) : "out of memory");
}

/* ---- connections ---------------------------------------------------------------------- */

static int progress(void *arg)
{
    const lite_conn *c = arg;
    return c->deadline && mono_ns() > c->deadline;   /* non-zero interrupts */
}

/* Opens a connection to path, or returns NULL with the reason in err. */
static sqlite3 *conn_open(const char *path, const config *cfg, bool create, char *err,
                          size_t errlen)
{
    sqlite3 *h = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &h, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite %s: cannot open: %s", path,
                 h ? sqlite3_errmsg(h) : "out of memory");
        sqlite3_close(h);
        return NULL;
    }
    sqlite3_busy_timeout(h, (int)cfg->db_timeout);
    sqlite3_exec(h, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    return h;
}

static void *thread_init(void *arg)
{
    lite *l = arg;
    lite_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    char err[1200];
    if (!(c->h = conn_open(l->path, l->db->cfg, false, err, sizeof(err)))) {
        log_error("%s", err);
        return c;
    }
    sqlite3_progress_handler(c->h, PROGRESS_OPS, progress, c);
    c->stmts = calloc(l->db->nstmts + 1, sizeof(*c->stmts));
    for (size_t i = 0; c->stmts && i < l->db->nstmts; i++) {
        if (sqlite3_prepare_v3(c->h, l->db->stmts[i]->sql_sqlite, -1, SQLITE_PREPARE_PERSISTENT,
                               &c->stmts[i], NULL) != SQLITE_OK)
            log_sqlite(l, c->h, l->db->stmts[i]->name);
        c->nstmts = i + 1;
    }
    return c;
}

static void thread_fini(void *ctx)
{
    lite_conn *c = ctx;
    if (!c)
        return;
    for (size_t i = 0; i < c->nstmts; i++)
        sqlite3_finalize(c->stmts[i]);
    free(c->stmts);
    sqlite3_close(c->h);
    free(c);
}

/* ---- running an op (pool thread) ------------------------------------------------------------ */

typedef struct rbuild {
    myr_db_result *res;
    size_t         cells_cap, text_len, text_cap;
} rbuild;

static int text_put(rbuild *b, const void *p, size_t n, uint32_t *off)
{
    if (b->text_len + n + 1 > b->text_cap) {
        size_t cap = b->text_cap ? b->text_cap * 2 : 256;
        while (cap < b->text_len + n + 1)
            cap *= 2;
        if (cap > UINT32_MAX)
            return -1;
        char *t = realloc(b->res->text, cap);
        if (!t)
            return -1;
        b->res->text = t;
        b->text_cap = cap;
    }
    *off = (uint32_t)b->text_len;
    if (n)
        memcpy(b->res->text + b->text_len, p, n);
    b->res->text[b->text_len + n] = '\0';
    b->text_len += n + 1;
    return 0;
}

static int row_add(rbuild *b, sqlite3_stmt *st)
{
    myr_db_result *r = b->res;
    size_t need = (size_t)(r->nrows + 1) * r->ncols;
    if (need > b->cells_cap) {
        size_t cap = b->cells_cap ? b->cells_cap * 2 : (size_t)r->ncols * 16;
        db_cell *c = realloc(r->cells, cap * sizeof(*c));
        if (!c)
            return -1;
        r->cells = c;
        b->cells_cap = cap;
    }
    db_cell *row = &r->cells[(size_t)r->nrows * r->ncols];
    for (uint32_t i = 0; i < r->ncols; i++) {
        int t = sqlite3_column_type(st, (int)i);
        row[i] = (db_cell){ .type = t == SQLITE_NULL ? MYR_DB_NULL
                                  : t == SQLITE_INTEGER ? MYR_DB_INT : MYR_DB_TEXT };
        if (t == SQLITE_NULL)
            continue;
        if (t == SQLITE_INTEGER)
            row[i].i = sqlite3_column_int64(st, (int)i);
        const void *p = t == SQLITE_BLOB ? sqlite3_column_blob(st, (int)i)
                                         : (const void *)sqlite3_column_text(st, (int)i);
        size_t n = (size_t)sqlite3_column_bytes(st, (int)i);
        if (text_put(b, p, n, &row[i].off))
            return -1;
        row[i].len = (uint32_t)n;
    }
    r->nrows++;
    return 0;
}

static myr_db_error code_error(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_INTERRUPT:
        return MYR_DB_TIMEOUT;
    case SQLITE_NOMEM:
        return MYR_DB_NOMEM;
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return MYR_DB_UNAVAILABLE;
    default:
        return MYR_DB_QUERY_FAILED;
    }
}

static int bind_params(sqlite3_stmt *st, const db_call *call)
{
    int rc = SQLITE_OK;
    for (unsigned i = 0; rc == SQLITE_OK && i < call->nparams; i++) {
        const myr_db_param *p = &call->params[i];
        int at = (int)i + 1;
        if (p->type == MYR_DB_INT)
            rc = sqlite3_bind_int64(st, at, p->i);
        else if (p->type == MYR_DB_TEXT)
            rc = sqlite3_bind_text(st, at, p->s, (int)p->len, SQLITE_STATIC);
        else
            rc = sqlite3_bind_null(st, at);
    }
    return rc;
}

/* Runs one call into a new result. 0, or a SQLite error code. */
static int run_call(lite_conn *c, const db_call *call, myr_db_result **out)
{
    sqlite3_stmt *st = call->sidx < c->nstmts ? c->stmts[call->sidx] : NULL;
    if (!st)
        return SQLITE_ERROR;   /* did not prepare: logged at thread start */
    int rc = bind_params(st, call);
    rbuild b = { .res = calloc(1, sizeof(myr_db_result)) };
    if (!b.res)
        rc = SQLITE_NOMEM;
    if (rc == SQLITE_OK) {
        b.res->ncols = (uint32_t)sqlite3_column_count(st);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            if (b.res->ncols && row_add(&b, st)) {
                rc = SQLITE_NOMEM;
                break;
            }
    }
    if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
        if (!sqlite3_stmt_readonly(st))
            b.res->affected = (uint64_t)sqlite3_changes64(c->h);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_OK) {
        db_result_free(b.res);
        return rc;
    }
    *out = b.res;
    return 0;
}

static int exec_simple(lite_conn *c, const char *sql)
{
    return sqlite3_exec(c->h, sql, NULL, NULL, NULL);
}

static myr_db_error run_op(lite *l, lite_conn *c, db_op *op)
{
    if (mono_ns() > op->deadline)
        return MYR_DB_TIMEOUT;   /* waited too long for a thread */
    c->deadline = op->deadline;
    bool txn = op->write || op->ncalls > 1;
    int rc = SQLITE_OK;
    if (op->write)
        pthread_mutex_lock(&l->write_lock);
    if (txn)
        rc = exec_simple(c, op->write ? "BEGIN IMMEDIATE" : "BEGIN");
    for (uint32_t i = 0; rc == SQLITE_OK && i < op->ncalls; i++)
        rc = run_call(c, &op->calls[i], &op->results[i]);
    if (txn && rc == SQLITE_OK)
        rc = exec_simple(c, "COMMIT");
    if (rc != SQLITE_OK) {
        log_sqlite(l, c->h, op->calls[0].stmt->name);
        if (txn && !sqlite3_get_autocommit(c->h))
            exec_simple(c, "ROLLBACK");
    }
    if (op->write)
        pthread_mutex_unlock(&l->write_lock);
    c->deadline = 0;
    return rc == SQLITE_OK ? MYR_DB_OK : code_error(rc);
}

static void job_work(pool_job *job)
{
    lite_job *j = container_of(job, lite_job, job);
    lite_conn *c = pool_thread_ctx();
    for (db_op *op = j->ops; op; op = op->next)
        op->err = !c || !c->stmts ? MYR_DB_UNAVAILABLE : run_op(j->l, c, op);
}

/* Loop thread: njobs moved by delta; the pool's in-use gauge counts the
 * threads those jobs occupy (a job beyond --db-pool waits for one). */
static void jobs_changed(lite *l, int32_t delta)
{
    uint32_t threads = l->db->cfg->db_pool;
    uint32_t before = l->njobs < threads ? l->njobs : threads;
    l->njobs = (uint32_t)((int64_t)l->njobs + delta);
    uint32_t after = l->njobs < threads ? l->njobs : threads;
    db_metrics_pool(l->db, 0, (int32_t)after - (int32_t)before);
}

/* Loop thread: delivers the job's ops in order. */
static void job_done(pool_job *job, int status)
{
    lite_job *j = container_of(job, lite_job, job);
    db_op *op = j->ops;
    jobs_changed(j->l, -1);
    free(j);
    while (op) {
        db_op *next = op->next;
        if (status)
            db_op_fail(op, MYR_DB_UNAVAILABLE);
        else if (op->err)
            db_op_fail(op, op->err);   /* frees the results already in */
        db_op_part_done(op);
        op = next;
    }
}

static void fail_all(db_op *op, myr_db_error err)
{
    while (op) {
        db_op *next = op->next;
        db_op_fail_later(op, err);
        op = next;
    }
}

/* End of the loop iteration: the ops submitted during it go to the pool as
 * at most one job per thread and at least JOB_MIN_OPS ops per job, so a
 * burst of requests costs a few thread wake-ups instead of one each. */
static void flush_queued(loop_deferred *d)
{
    lite *l = container_of(d, lite, flush_defer);
    uint32_t threads = l->db->cfg->db_pool;
    uint32_t per_job = (l->nqueued + threads - 1) / threads;
    if (per_job < JOB_MIN_OPS)
        per_job = JOB_MIN_OPS;   /* a thread wake-up costs more than a few reads */
    db_op *op = l->queued;
    l->queued = NULL;
    l->queued_tail = &l->queued;
    l->nqueued = 0;
    while (op) {
        lite_job *j = malloc(sizeof(*j));
        db_op *first = op, **tail = &first;
        for (uint32_t n = 0; op && n < per_job; n++) {
            tail = &op->next;
            op = op->next;
        }
        *tail = NULL;
        if (!j) {
            fail_all(first, MYR_DB_NOMEM);
            continue;
        }
        *j = (lite_job){ .l = l, .ops = first };
        int rc = pool_submit(l->pool, &j->job, job_work, job_done);
        if (rc) {
            free(j);
            fail_all(first, rc == -EAGAIN ? MYR_DB_BUSY : MYR_DB_UNAVAILABLE);
        } else {
            jobs_changed(l, 1);
        }
    }
}

static void lite_submit(myr_db *db, db_op *op)
{
    lite *l = db->impl;
    op->next = NULL;
    *l->queued_tail = op;
    l->queued_tail = &op->next;
    l->nqueued++;
    loop_defer(db->loop, &l->flush_defer, flush_queued);
}

/* ---- start-up: WAL, migrations, statement check (blocking) ------------------------------------ */

static bool migration_applied(sqlite3 *h, const char *name)
{
    sqlite3_stmt *st;
    bool found = false;
    if (sqlite3_prepare_v2(h, "SELECT 1 FROM myriad_migrations WHERE name = ?1", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    return found;
}

/* Whether migrate has work: the record table is missing, or one of our
 * migrations is not in it. Read without a lock: a process that finds
 * everything recorded takes no exclusive lock at all; one that finds work
 * looks again under it (migrate). An unreadable file counts as work, so
 * migrate reports it. */
static bool migrations_pending(const myr_db *db, sqlite3 *h)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(h, "SELECT 1 FROM myriad_migrations", -1, &st, NULL) != SQLITE_OK)
        return true;
    sqlite3_finalize(st);
    for (size_t i = 0; i < db->reg->nmigs; i++) {
        const db_migration *m = &db->reg->migs[i];
        if (m->dialect == MYR_DB_SQLITE && !migration_applied(h, m->name))
            return true;
    }
    return false;
}

static int migration_record(sqlite3 *h, const char *name)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(h, "INSERT INTO myriad_migrations (name) VALUES (?1)", -1, &st,
                                NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        sqlite3_finalize(st);
    }
    return rc;
}

static int migrate(const myr_db *db, const char *path, sqlite3 *h, char *err, size_t errlen)
{
    if (!migrations_pending(db, h))
        return 0;
    int rc = sqlite3_exec(h, "BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS myriad_migrations ("
                             "name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT "
                             "CURRENT_TIMESTAMP)", NULL, NULL, NULL);
    for (size_t i = 0; rc == SQLITE_OK && i < db->reg->nmigs; i++) {
        const db_migration *m = &db->reg->migs[i];
        if (m->dialect != MYR_DB_SQLITE || migration_applied(h, m->name))
            continue;
        log_info("sqlite %s: applying migration %s (first start)...", path, m->name);
        uint64_t t0 = mono_ns();
        rc = sqlite3_exec(h, m->sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = migration_record(h, m->name);
        if (rc == SQLITE_OK)
            log_info("sqlite %s: migration %s applied in %llu ms", path, m->name,
                     (unsigned long long)((mono_ns() - t0) / 1000000));
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(h, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "sqlite %s: migration failed: %s", path, sqlite3_errmsg(h));
        sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
        return -EINVAL;
    }
    return 0;
}

static int check_statements(const myr_db *db, const char *path, sqlite3 *h, char *err,
                            size_t errlen)
{
    for (size_t i = 0; i < db->nstmts; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(h, db->stmts[i]->sql_sqlite, -1, &st, NULL) != SQLITE_OK) {
            snprintf(err, errlen, "sqlite %s: statement %s: %s", path, db->stmts[i]->name,
                     sqlite3_errmsg(h));
            return -EINVAL;
        }
        sqlite3_finalize(st);
    }
    return 0;
}

/* The start-up of one database file, on one short-lived connection; the
 * supervisor and every worker run it (see the top of this file). 0, or
 * -errno with the reason in err. */
static int setup(const myr_db *db, const char *path, char *err, size_t errlen)
{
    sqlite3 *h = conn_open(path, db->cfg, true, err, errlen);
    if (!h)
        return -EIO;
    char *mode = NULL;
    int rc = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(h, "PRAGMA journal_mode=WAL", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            mode = strdup((const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    if (!mode || strcmp(mode, "wal") != 0)
        log_warn("sqlite %s: cannot use WAL (journal mode %s): writers will block readers",
                 path, mode ? mode : "unknown");
    free(mode);
    rc = migrate(db, path, h, err, errlen);
    if (rc == 0)
        rc = check_statements(db, path, h, err, errlen);
    sqlite3_close(h);
    return rc;
}

/* The file named by a sqlite: URL, or NULL with the reason in err. */
static const char *url_path(const myr_db *db, const char *url, char *err, size_t errlen)
{
    const char *path = url + strlen("sqlite:");
    if (!*path) {
        snprintf(err, errlen, "--db %s: no file name (e.g. sqlite:myriad.db)", url);
        return NULL;
    }
    if (db->nshards > 1 || db->cfg->db_replica[0] || db->cfg->db_shard_replica[0]) {
        snprintf(err, errlen, "--db %s: replicas and shards need PostgreSQL", url);
        return NULL;
    }
    return path;
}

/* Supervisor, before the first fork: the setup every worker would do, done
 * once, so its errors stop the service before any worker starts. Not when
 * the workers will drop to --user: a root supervisor would create a file
 * root owns, and check access as root; the first worker then migrates as
 * that user, as the only start-up there was before this one. */
static int lite_prefork(myr_db *db, const char *url, char *err, size_t errlen)
{
    const char *path = url_path(db, url, err, errlen);
    if (!path)
        return -EINVAL;
    if (db->cfg->user[0] && geteuid() == 0)
        return 0;
    return setup(db, path, err, errlen);
}

static void lite_close(myr_db *db);

static int lite_open(myr_db *db, const char *url)
{
    char err[1200];
    const char *path = url_path(db, url, err, sizeof(err));
    if (!path) {
        log_error("%s", err);
        return -EINVAL;
    }
    lite *l = calloc(1, sizeof(*l));
    if (!l || !(l->path = strdup(path))) {
        free(l);
        return -ENOMEM;
    }
    l->db = db;
    l->queued_tail = &l->queued;
    db->impl = l;
    pthread_mutex_init(&l->write_lock, NULL);
    int rc = setup(db, path, err, sizeof(err));
    if (rc)
        log_error("%s", err);
    if (rc == 0 && !(l->pool = pool_new(db->loop, db->cfg->db_pool, QUEUE_MAX)))
        rc = -ENOMEM;
    if (rc == 0)
        rc = pool_set_thread_hooks(l->pool, thread_init, thread_fini, l);
    if (rc) {
        lite_close(db);
        return rc;
    }
    db_metrics_pool(db, (int32_t)db->cfg->db_pool, 0);
    return 0;
}

static void lite_close(myr_db *db)
{
    lite *l = db->impl;
    if (!l)
        return;
    if (l->queued)
        flush_queued(&l->flush_defer);   /* the loop will not run it again */
    for (int i = 0; i < 16 && l->flush_defer.queued; i++)
        loop_run_once(db->loop, 0);      /* a queued flush finds nothing to do */
    pool_free(l->pool);   /* joins the threads; done runs for every job */
    pthread_mutex_destroy(&l->write_lock);
    free(l->path);
    free(l);
    db->impl = NULL;
}

const db_backend db_backend_sqlite = {
    .name = "sqlite",
    .dialect = MYR_DB_SQLITE,
    .prefork = lite_prefork,
    .open = lite_open,
    .close = lite_close,
    .submit = lite_submit,
};
