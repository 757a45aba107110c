/* db — the data layer's backend-neutral core: the statement registry, the
 * per-worker handle, operations (a batch of statements that completes
 * together), routing by shard key, the per-request query budget, and the
 * result accessors.
 *
 *   app (start-up)  myr_db_prepare / myr_db_migration -> db_registry (myr_app.db)
 *   supervisor      db_prefork, once before the first fork: what the backend
 *                   can do for all workers at once (SQLite: migrations)
 *   worker start    db_open: picks the backend from --db, applies migrations
 *                   not yet applied, prepares its view of the statements
 *   handler         myr_db_query / myr_db_batch -> db_op -> backend->submit
 *   backend         fills op->results, calls db_op_done() on the loop thread
 *   db_op_done      calls the user's callback, then frees results and the op
 *
 * Backends are a const table of functions (db_backend), one file each:
 * db_sqlite.c (statements on the worker's thread pool) and db_pg.c +
 * db_pg_cluster.c (non-blocking libpq on the loop: pools, pipelining,
 * replicas, shards).
 *
 * Threads: everything here runs on the worker's loop thread. The registry
 * is built before serving and read-only after (workers share it by fork).
 */
#ifndef MYR_DATA_DB_H
#define MYR_DATA_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "myriad.h"
#include "core/config.h"
#include "core/loop.h"

struct http_server;
struct metrics_worker;
struct metrics_family;

/* ---- registry (app level) --------------------------------------------------------- */

#define DB_MAX_PARAMS   64    /* $1..$64 */
#define DB_MAX_NAME     63    /* statement name bytes */

typedef struct db_stmt {
    char     *name;
    char     *sql;         /* as registered: $N placeholders */
    char     *sql_sqlite;  /* the same with ?N placeholders */
    unsigned  flags;       /* MYR_DB_* */
    unsigned  nparams;     /* highest $N used */
} db_stmt;

typedef struct db_migration {
    char     *name;
    char     *sql;
    unsigned  dialect;     /* MYR_DB_PG or MYR_DB_SQLITE */
} db_migration;

typedef struct db_registry {
    db_stmt      *stmts;
    size_t        nstmts, cap_stmts;
    db_migration *migs;
    size_t        nmigs, cap_migs;
} db_registry;

void db_registry_free(db_registry *r);
/* Rewrites $N as ?N outside quotes; returns the highest N (0 if none) or
 * -EINVAL for $0 or N > DB_MAX_PARAMS. out has room for strlen(sql) + 1. */
int  db_sql_translate(const char *sql, char *out);

/* ---- results ---------------------------------------------------------------------- */

/* A SQLite cell; text and blobs live in the result's text buffer. */
typedef struct db_cell {
    int64_t  i;       /* integer value (text: parsed when read as int) */
    uint32_t off;     /* text: offset in myr_db_result.text */
    uint32_t len;     /* text: bytes, without the NUL */
    uint8_t  type;    /* MYR_DB_NULL, MYR_DB_INT, MYR_DB_TEXT */
} db_cell;

struct myr_db_result {
    uint32_t  nrows, ncols;
    uint64_t  affected;    /* rows changed by INSERT/UPDATE/DELETE */
    void     *pg;          /* PostgreSQL: the PGresult (owned), else NULL */
    db_cell  *cells;       /* SQLite: nrows * ncols, row-major (owned) */
    char     *text;        /* SQLite: text of the cells (owned) */
};

void db_result_free(myr_db_result *res);

/* ---- operations ------------------------------------------------------------------- */

typedef struct db_call {
    const db_stmt *stmt;
    myr_db_param  *params;    /* nparams, text copied into the op's block */
    unsigned       nparams;
    uint32_t       sidx;      /* index of stmt in myr_db.stmts (prepared name) */
    uint32_t       shard;     /* 0, or the shard of a MYR_DB_SHARDED call's key */
} db_call;

typedef struct db_op db_op;
struct db_op {
    myr_db          *db;
    myr_req         *req;       /* NULL for myr_db_submit */
    myr_db_done      req_cb;
    myr_db_bg_done   bg_cb;
    void            *arg;
    myr_db_error     err;       /* first error, sticky */
    bool             write;     /* some call writes */
    bool             primary;   /* read-your-writes: reads go to the primary */
    uint32_t         ncalls;
    uint32_t         parts;     /* backend parts still running (shard fan-out) */
    uint64_t         deadline;  /* loop-clock ns: --db-timeout after submit */
    db_op           *next;      /* the handle's list of ops failed at submit */
    myr_db_result  **results;   /* ncalls entries, NULL until filled */
    db_call          calls[];
};

/* Completes op (one part) with err from a deferred callback: never inside
 * the call that submitted it. */
void db_op_fail_later(db_op *op, myr_db_error err);
/* Records err (the first one wins) and frees any results already in. */
void db_op_fail(db_op *op, myr_db_error err);
/* A backend part of op has finished; the last one delivers the op: the
 * callback runs, then results and op are freed. */
void db_op_part_done(db_op *op);

/* ---- the worker's handle -------------------------------------------------------------- */

enum { DB_QHIST_BUCKETS = 12 };   /* queries per request: 1, 2-3, 4-7, ... 1024+ */

typedef struct db_backend {
    const char *name;
    unsigned    dialect;   /* MYR_DB_PG or MYR_DB_SQLITE */
    /* Supervisor, once before any worker exists (may block; may be NULL):
     * db has cfg, reg, stmts and nshards but no loop or server, and nothing
     * opened here may outlive the call (no connection crosses a fork).
     * 0, or -errno with a one-line reason in err. */
    int  (*prefork)(myr_db *db, const char *url, char *err, size_t errlen);
    /* Start-up (may block): connect, apply migrations, start the pool. */
    int  (*open)(myr_db *db, const char *url);
    void (*close)(myr_db *db);
    /* Runs op (parts = 1 on entry); completes through db_op_part_done. */
    void (*submit)(myr_db *db, db_op *op);
} db_backend;

/* The data layer's families in the metrics registry (db_open adds them;
 * NULL when the registry is absent or full: then nothing is counted).
 * Written on the loop thread only, into the worker's own block. */
typedef struct db_metrics {
    struct metrics_worker       *w;
    const struct metrics_family *per_request;  /* myriad_db_queries_per_request */
    const struct metrics_family *queries;      /* myriad_db_queries_total */
    const struct metrics_family *errors;       /* myriad_db_errors_total */
    const struct metrics_family *pool_size;    /* myriad_db_pool_size */
    const struct metrics_family *pool_in_use;  /* myriad_db_pool_in_use */
    uint32_t                     size, in_use; /* the pool gauges' values */
} db_metrics;

/* Backends: the pool has changed size (connections or threads) or use
 * (those busy with a statement); deltas, applied to both gauges. */
void db_metrics_pool(myr_db *db, int32_t size_delta, int32_t in_use_delta);

extern const db_backend db_backend_sqlite;
extern const db_backend db_backend_pg;

struct myr_db {
    loop               *loop;
    const config       *cfg;
    struct http_server *srv;
    const db_backend   *backend;
    void               *impl;         /* the backend's state */
    const db_registry  *reg;
    const db_stmt     **stmts;        /* this dialect's statements */
    size_t              nstmts;
    uint32_t            nshards;      /* 1 + --db-shard count */
    db_op              *failed;       /* ops to complete with an error, next iteration */
    loop_deferred       fail_defer;
    uint64_t            budget_logged;/* loop ns of the last budget warning */
    uint64_t            qhist[DB_QHIST_BUCKETS]; /* requests by statements issued */
    uint64_t            ops, calls;   /* submitted, total */
    db_metrics          m;            /* exported figures (/metrics) */
};

/* The database URL in effect: --db, else $DATABASE_URL, else the default. */
const char *db_url(const config *cfg);
/* Supervisor, before the first fork: runs the backend's prefork step when
 * the app registered statements or migrations and the backend has one
 * (SQLite: the file's migrations and a statement check; PostgreSQL: none).
 * Returns 0, or -1 with a one-line reason in err: the service must stop. */
int  db_prefork(const myr_app *app, const config *cfg, char *err, size_t errlen);
/* Opens the worker's handle for srv when the app registered statements or
 * migrations (else *out = NULL). Start-up: may block. 0 or -errno (logged). */
int  db_open(struct http_server *srv, myr_db **out);
void db_close(myr_db *db);
/* The index in db->stmts of the statement named name, or -1. */
int  db_find(const myr_db *db, const char *name);
/* Submits an op built by the public calls (exposed for unit tests). */
void db_submit(myr_db *db, db_op *op);
/* Shard of a call: 0 unless its statement is MYR_DB_SHARDED, then a jump
 * consistent hash of $1's text over nshards. Stable across restarts. */
uint32_t db_shard_of(const myr_db_param *key, uint32_t nshards);

/* PostgreSQL cell access for the accessors (db_pg.c): NULL when out of
 * range or SQL NULL (*null says which). */
const char *db_pg_cell(const void *pgres, size_t row, size_t col, size_t *len, bool *null);
void        db_pg_result_clear(void *pgres);

/* Called when a request completes (obs_request_done): records its final
 * statement count in the queries-per-request histogram. */
void db_request_observe(myr_db *db, uint32_t queries);

#endif
