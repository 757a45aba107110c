/* Unit tests for src/data/db.c: placeholder translation, the statement
 * registry, the error table, shard hashing, ops (parameter copies, bad
 * input, deferred completion), the query budget and the result accessors.
 * The .c is included for its static helpers; the backends are not used. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "data/db.c"

#include <stdio.h>

/* ---- translation and registry ------------------------------------------------------ */

static void test_translate(void **state)
{
    char out[128];
    assert_int_equal(db_sql_translate("SELECT $1, '$2', \"$3\", $10 FROM t", out), 10);
    assert_string_equal(out, "SELECT ?1, '$2', \"$3\", ?10 FROM t");
    assert_int_equal(db_sql_translate("SELECT 1", out), 0);
    assert_string_equal(out, "SELECT 1");
    assert_int_equal(db_sql_translate("SELECT $0", out), -EINVAL);
    assert_int_equal(db_sql_translate("SELECT $65", out), -EINVAL);
    assert_int_equal(db_sql_translate("SELECT $64, '$", out), 64);   /* open quote: kept */
    assert_int_equal(db_sql_translate("SELECT json_extract(x, '$[0]') + $2", out), 2);
    assert_string_equal(out, "SELECT json_extract(x, '$[0]') + ?2");
}

static void test_registry(void **state)
{
    myr_app *app = myr_app_new();
    assert_int_equal(myr_db_prepare(app, "a", "SELECT $1", 0), 0);
    assert_int_equal(myr_db_prepare(app, "a", "SELECT $1", MYR_DB_PG), -EEXIST);
    assert_int_equal(myr_db_prepare(app, "b", "SELECT 1", MYR_DB_PG), 0);
    assert_int_equal(myr_db_prepare(app, "b", "SELECT 2", MYR_DB_SQLITE), 0);  /* per dialect */
    assert_int_equal(myr_db_prepare(app, "b", "SELECT 3", 0), -EEXIST);
    assert_int_equal(myr_db_prepare(app, "", "SELECT 1", 0), -EINVAL);
    assert_int_equal(myr_db_prepare(app, "bad name", "SELECT 1", 0), -EINVAL);
    assert_int_equal(myr_db_prepare(app, "c", "SELECT 1", 1u << 9), -EINVAL);
    assert_int_equal(myr_db_prepare(app, "c", "SELECT 1", MYR_DB_SHARDED), -EINVAL); /* no key */
    assert_int_equal(myr_db_prepare(app, "c", "SELECT $0", 0), -EINVAL);
    assert_int_equal(myr_db_migration(app, "m", MYR_DB_PG | MYR_DB_SQLITE, "x"), -EINVAL);
    assert_int_equal(myr_db_migration(app, "m", MYR_DB_SQLITE, "CREATE TABLE t (x)"), 0);
    db_registry *r = app->db;
    assert_int_equal(r->nstmts, 3);
    assert_int_equal(r->stmts[0].nparams, 1);
    assert_string_equal(r->stmts[0].sql_sqlite, "SELECT ?1");
    assert_int_equal(r->nmigs, 1);
    myr_app_free(app);   /* frees the registry (ASan checks) */
}

static void test_errors(void **state)
{
    assert_string_equal(myr_db_strerror(MYR_DB_OK), "ok");
    assert_string_equal(myr_db_strerror(MYR_DB_UNAVAILABLE), "database unavailable");
    assert_string_equal(myr_db_strerror(MYR_DB_BUDGET), "query budget exceeded");
    assert_string_equal(myr_db_strerror((myr_db_error)99), "unknown database error");
    assert_int_equal(myr_db_error_status(MYR_DB_OK), 200);
    assert_int_equal(myr_db_error_status(MYR_DB_TIMEOUT), 503);
    assert_int_equal(myr_db_error_status(MYR_DB_BUSY), 503);
    assert_int_equal(myr_db_error_status(MYR_DB_QUERY_FAILED), 500);
    assert_int_equal(myr_db_error_status(MYR_DB_BUDGET), 500);
}

/* ---- shards -------------------------------------------------------------------------- */

static uint32_t shard_text(const char *k, uint32_t n)
{
    myr_db_param p = myr_db_text_param(k, strlen(k));
    return db_shard_of(&p, n);
}

static void test_shard_known_values(void **state)
{
    /* the same values as the Python model in tests/e2e/test_db_pg.py */
    assert_int_equal(shard_text("a", 4), 2);
    assert_int_equal(shard_text("user:1", 4), 0);
    assert_int_equal(shard_text("42", 4), 1);
    assert_int_equal(shard_text("hello", 4), 2);
    assert_int_equal(shard_text("", 4), 1);
    assert_int_equal(shard_text("a", 16), 12);
    assert_int_equal(shard_text("hello", 16), 2);
    myr_db_param i42 = myr_db_int_param(42);
    assert_int_equal(db_shard_of(&i42, 4), 1);   /* an integer hashes as its text */
    assert_int_equal(shard_text("anything", 1), 0);
}

static void test_shard_spread_and_moves(void **state)
{
    uint32_t count[5] = { 0 }, moved = 0;
    char k[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        uint32_t a = shard_text(k, 4), b = shard_text(k, 5);
        count[a]++;
        if (a != b) {
            assert_int_equal(b, 4);   /* a new shard only takes keys */
            moved++;
        }
    }
    for (int s = 0; s < 4; s++)
        assert_in_range(count[s], 2200, 2800);
    assert_in_range(moved, 1700, 2300);   /* about 1/5 */
}

/* ---- ops ------------------------------------------------------------------------------- */

typedef struct fake {
    loop          *l;
    config         cfg;
    myr_db         db;
    db_stmt        stmts[2];
    const db_stmt *sp[2];
} fake;

static void fake_init(fake *f)
{
    memset(f, 0, sizeof(*f));
    f->l = loop_new();
    assert_non_null(f->l);
    config_defaults(&f->cfg);
    f->stmts[0] = (db_stmt){ .name = "one", .sql = "SELECT $1", .nparams = 1 };
    f->stmts[1] = (db_stmt){ .name = "put", .sql = "INSERT $1 $2", .nparams = 2,
                             .flags = MYR_DB_WRITE };
    f->sp[0] = &f->stmts[0];
    f->sp[1] = &f->stmts[1];
    f->db = (myr_db){ .loop = f->l, .cfg = &f->cfg, .stmts = f->sp, .nstmts = 2, .nshards = 1 };
}

static int calls_seen;
static myr_db_error err_seen;

static void bg_done(void *arg, myr_db_error err, myr_db_result *const *res, size_t n)
{
    calls_seen++;
    err_seen = err;
    assert_ptr_equal(arg, &calls_seen);
    for (size_t i = 0; i < n; i++)
        assert_null(res[i]);
}

static void test_op_copies_params(void **state)
{
    fake f;
    fake_init(&f);
    char text[] = "hello";
    myr_db_param p[2] = { myr_db_int_param(7), myr_db_text_param(text, 5) };
    myr_db_call c[2] = { { "one", p, 1 }, { "put", p, 2 } };
    int rc;
    db_op *op = op_new(&f.db, c, 2, &rc);
    assert_non_null(op);
    text[0] = 'X';   /* the caller's memory may change or die */
    assert_int_equal(op->ncalls, 2);
    assert_true(op->write);
    assert_int_equal(op->calls[1].sidx, 1);
    assert_int_equal(op->calls[1].params[0].i, 7);
    assert_memory_equal(op->calls[1].params[1].s, "hello", 6);
    free(op);
    loop_free(f.l);
}

static void test_op_bad_input(void **state)
{
    fake f;
    fake_init(&f);
    myr_db_param p = myr_db_int_param(1);
    myr_db_call unknown = { "nope", &p, 1 }, wrong = { "put", &p, 1 }, null_params = { "one", NULL, 1 };
    int rc;
    assert_null(op_new(&f.db, &unknown, 1, &rc));
    assert_int_equal(rc, -ENOENT);
    assert_null(op_new(&f.db, &wrong, 1, &rc));
    assert_int_equal(rc, -EINVAL);
    assert_null(op_new(&f.db, &null_params, 1, &rc));
    assert_int_equal(rc, -EINVAL);
    assert_null(op_new(&f.db, &unknown, 0, &rc));
    assert_int_equal(myr_db_submit(NULL, &unknown, 1, bg_done, NULL), -ENOENT);
    loop_free(f.l);
}

static void test_failed_op_completes_later(void **state)
{
    fake f;
    fake_init(&f);
    myr_db_param p = myr_db_int_param(1);
    myr_db_call c = { "one", &p, 1 };
    int rc;
    db_op *op = op_new(&f.db, &c, 1, &rc);
    op->bg_cb = bg_done;
    op->arg = &calls_seen;
    op->err = MYR_DB_BUSY;
    calls_seen = 0;
    db_submit(&f.db, op);   /* never calls back from inside the submit */
    assert_int_equal(calls_seen, 0);
    loop_run_once(f.l, 0);
    assert_int_equal(calls_seen, 1);
    assert_int_equal(err_seen, MYR_DB_BUSY);
    loop_free(f.l);
}

/* ---- budget ------------------------------------------------------------------------------ */

static void test_budget_and_histogram(void **state)
{
    fake f;
    fake_init(&f);
    myr_req *req = calloc(1, sizeof(*req));
    req->h.path = "/x";
    req->h.path_len = 2;
    assert_int_equal(qbucket(1), 0);
    assert_int_equal(qbucket(2), 1);
    assert_int_equal(qbucket(3), 1);
    assert_int_equal(qbucket(20), 4);
    assert_int_equal(qbucket(1u << 30), DB_QHIST_BUCKETS - 1);
    assert_false(budget_charge(&f.db, req, 1));     /* no budget set */
    assert_false(budget_charge(&f.db, req, 19));
    assert_int_equal(myr_db_queries(req), 20);
    assert_int_equal(f.db.qhist[0], 0);             /* moved from "1" to "16-31" */
    assert_int_equal(f.db.qhist[4], 1);
    f.cfg.db_query_budget = 25;
    assert_false(budget_charge(&f.db, req, 5));     /* 25: at the budget */
    assert_false(budget_charge(&f.db, req, 1));     /* over: logged only */
    f.cfg.db_budget_strict = true;
    assert_true(budget_charge(&f.db, req, 1));      /* strict: fails */
    free(req);
    loop_free(f.l);
}

/* ---- results ------------------------------------------------------------------------------- */

static void test_result_accessors(void **state)
{
    myr_db_result *r = calloc(1, sizeof(*r));
    r->nrows = 2;
    r->ncols = 2;
    r->cells = calloc(4, sizeof(db_cell));
    r->text = malloc(16);
    memcpy(r->text, "12\0-34\0abc", 11);
    r->cells[0] = (db_cell){ .type = MYR_DB_INT, .i = 12, .off = 0, .len = 2 };
    r->cells[1] = (db_cell){ .type = MYR_DB_TEXT, .off = 3, .len = 3 };
    r->cells[2] = (db_cell){ .type = MYR_DB_NULL };
    r->cells[3] = (db_cell){ .type = MYR_DB_TEXT, .off = 7, .len = 3 };
    size_t len;
    assert_int_equal(myr_db_rows(r), 2);
    assert_int_equal(myr_db_cols(r), 2);
    assert_int_equal(myr_db_int(r, 0, 0), 12);
    assert_int_equal(myr_db_int(r, 0, 1), -34);    /* text read as an integer */
    assert_string_equal(myr_db_text(r, 0, 0, &len), "12");
    assert_true(myr_db_is_null(r, 1, 0));
    assert_int_equal(myr_db_int(r, 1, 0), 0);
    assert_string_equal(myr_db_text(r, 1, 0, &len), "");
    assert_int_equal(len, 0);
    assert_string_equal(myr_db_text(r, 1, 1, NULL), "abc");
    assert_true(myr_db_is_null(r, 5, 0));          /* out of range */
    assert_int_equal(myr_db_int(r, 0, 9), 0);
    assert_int_equal(myr_db_rows(NULL), 0);
    db_result_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_translate),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_shard_known_values),
        cmocka_unit_test(test_shard_spread_and_moves),
        cmocka_unit_test(test_op_copies_params),
        cmocka_unit_test(test_op_bad_input),
        cmocka_unit_test(test_failed_op_completes_later),
        cmocka_unit_test(test_budget_and_histogram),
        cmocka_unit_test(test_result_accessors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
