/* Unit tests for src/data/db_sqlite.c through its backend table: start-up
 * (WAL, migrations once, bad SQL named), ops on the thread pool completing
 * on the loop, transactions and writes, a burst of ops batched into jobs,
 * a deadline already past, and close with work in flight; the supervisor's
 * prefork step (migrations once, before any worker; errors in err; no
 * connection left open) and a worker's open after it (no exclusive lock). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/db.h"
#include "myriad.h"

typedef struct fixture {
    char            dir[64];
    char            url[128];
    loop           *l;
    config          cfg;
    db_registry     reg;
    db_stmt         stmts[4];
    db_migration    mig;
    const db_stmt  *sp[4];
    myr_db          db;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/myriad-dbtest-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->url, sizeof(f->url), "sqlite:%s/t.db", f->dir);
    f->l = loop_new();
    config_defaults(&f->cfg);
    f->cfg.db_pool = 2;
    f->mig = (db_migration){ .name = "m1", .dialect = MYR_DB_SQLITE,
                             .sql = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
                                    "INSERT INTO t VALUES (1, 'one'), (2, NULL);" };
    f->stmts[0] = (db_stmt){ .name = "get", .sql_sqlite = "SELECT id, v FROM t WHERE id = ?1",
                             .nparams = 1 };
    f->stmts[1] = (db_stmt){ .name = "put", .sql_sqlite = "INSERT INTO t VALUES (?1, ?2)",
                             .nparams = 2, .flags = MYR_DB_WRITE };
    f->stmts[2] = (db_stmt){ .name = "all", .sql_sqlite = "SELECT id FROM t ORDER BY id" };
    f->stmts[3] = (db_stmt){ .name = "slow", .sql_sqlite =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c" };
    for (int i = 0; i < 4; i++)
        f->sp[i] = &f->stmts[i];
    f->reg = (db_registry){ .migs = &f->mig, .nmigs = 1 };
    f->db = (myr_db){ .loop = f->l, .cfg = &f->cfg, .backend = &db_backend_sqlite,
                      .reg = &f->reg, .stmts = f->sp, .nstmts = 4, .nshards = 1 };
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    loop_free(f->l);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

typedef struct seen {
    int          calls;
    myr_db_error err;
    int64_t      ints[4];
    char         text[32];
    size_t       rows;
    uint64_t     affected;
} seen;

static void done(void *arg, myr_db_error err, myr_db_result *const *res, size_t n)
{
    seen *s = arg;
    s->calls++;
    s->err = err;
    if (err)
        return;
    s->rows = myr_db_rows(res[n - 1]);
    s->affected = myr_db_affected(res[0]);
    for (size_t i = 0; i < n && i < 4; i++)
        s->ints[i] = myr_db_int(res[i], 0, 0);
    snprintf(s->text, sizeof(s->text), "%s", myr_db_text(res[0], 0, 1, NULL));
}

static void wait_for(fixture *f, const int *calls, int want)
{
    for (int i = 0; i < 5000 && *calls < want; i++)
        loop_run_once(f->l, 10);
    assert_int_equal(*calls, want);
}

static void test_open_reads_and_writes(void **state)
{
    fixture *f = *state;
    assert_int_equal(db_backend_sqlite.open(&f->db, f->url), 0);
    myr_db_param p1 = myr_db_int_param(1);
    myr_db_call get = { "get", &p1, 1 };
    seen s = { 0 };
    assert_int_equal(myr_db_submit(&f->db, &get, 1, done, &s), 0);
    assert_int_equal(s.calls, 0);   /* never from inside the call */
    wait_for(f, &s.calls, 1);
    assert_int_equal(s.err, MYR_DB_OK);
    assert_int_equal(s.ints[0], 1);
    assert_string_equal(s.text, "one");

    myr_db_param put[2] = { myr_db_int_param(3), myr_db_text_param("three", 5) };
    myr_db_param p3 = myr_db_int_param(3);
    myr_db_call batch[2] = { { "put", put, 2 }, { "get", &p3, 1 } };   /* one transaction */
    seen w = { 0 };
    assert_int_equal(myr_db_submit(&f->db, batch, 2, done, &w), 0);
    wait_for(f, &w.calls, 1);
    assert_int_equal(w.err, MYR_DB_OK);
    assert_int_equal(w.affected, 1);
    assert_int_equal(w.ints[1], 3);

    seen dup = { 0 };   /* the same key again: a constraint error, rolled back */
    assert_int_equal(myr_db_submit(&f->db, batch, 2, done, &dup), 0);
    wait_for(f, &dup.calls, 1);
    assert_int_equal(dup.err, MYR_DB_QUERY_FAILED);
    db_backend_sqlite.close(&f->db);
}

static void test_burst_is_batched_and_ordered(void **state)
{
    fixture *f = *state;
    assert_int_equal(db_backend_sqlite.open(&f->db, f->url), 0);
    enum { N = 200 };
    static seen s[N];
    myr_db_param p = myr_db_int_param(1);
    myr_db_call get = { "get", &p, 1 };
    int total = 0;
    memset(s, 0, sizeof(s));
    for (int i = 0; i < N; i++)
        assert_int_equal(myr_db_submit(&f->db, &get, 1, done, &s[i]), 0);
    for (int i = 0; i < 5000 && total < N; i++) {
        loop_run_once(f->l, 10);
        total = 0;
        for (int k = 0; k < N; k++)
            total += s[k].calls;
    }
    for (int k = 0; k < N; k++) {
        assert_int_equal(s[k].calls, 1);
        assert_int_equal(s[k].err, MYR_DB_OK);
        assert_string_equal(s[k].text, "one");
    }
    db_backend_sqlite.close(&f->db);
}

static void test_second_open_does_not_migrate_again(void **state)
{
    fixture *f = *state;
    assert_int_equal(db_backend_sqlite.open(&f->db, f->url), 0);
    db_backend_sqlite.close(&f->db);
    assert_int_equal(db_backend_sqlite.open(&f->db, f->url), 0);   /* would fail: table t exists */
    myr_db_call all = { "all", NULL, 0 };
    seen s = { 0 };
    assert_int_equal(myr_db_submit(&f->db, &all, 1, done, &s), 0);
    wait_for(f, &s.calls, 1);
    assert_int_equal(s.rows, 2);
    db_backend_sqlite.close(&f->db);
}

static void test_timeout_interrupts(void **state)
{
    fixture *f = *state;
    f->cfg.db_timeout = 100;   /* ms */
    assert_int_equal(db_backend_sqlite.open(&f->db, f->url), 0);
    myr_db_call slow = { "slow", NULL, 0 };
    seen s = { 0 };
    assert_int_equal(myr_db_submit(&f->db, &slow, 1, done, &s), 0);
    wait_for(f, &s.calls, 1);
    assert_int_equal(s.err, MYR_DB_TIMEOUT);
    db_backend_sqlite.close(&f->db);
}

static void test_close_completes_in_flight(void **state)
{
    fixture *f = *state;
    assert_int_equal(db_backend_sqlite.open(&f->db, f->url), 0);
    myr_db_param p = myr_db_int_param(2);
    myr_db_call get = { "get", &p, 1 };
    seen s = { 0 };
    assert_int_equal(myr_db_submit(&f->db, &get, 1, done, &s), 0);
    db_backend_sqlite.close(&f->db);   /* queued, not yet flushed to the pool */
    while (s.calls == 0 && f->db.failed)
        loop_run_once(f->l, 0);
    assert_int_equal(s.calls, 1);
}

static void test_bad_sql_named_at_open(void **state)
{
    fixture *f = *state;
    f->stmts[2].sql_sqlite = "SELECT nope FROM missing";
    assert_int_equal(db_backend_sqlite.open(&f->db, f->url), -EINVAL);
    assert_null(f->db.impl);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void count_rows(fixture *f, const char *sql, int want)
{
    sqlite3 *h;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->url + strlen("sqlite:"), &h), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), want);
    sqlite3_finalize(st);
    sqlite3_close(h);
}

/* The supervisor's step: migrates the new file once and keeps nothing open
 * (no connection may cross the fork that follows). */
static void test_prefork_migrates_and_closes(void **state)
{
    fixture *f = *state;
    char err[256] = "";
    int fds = open_fds();
    assert_int_equal(db_backend_sqlite.prefork(&f->db, f->url, err, sizeof(err)), 0);
    assert_int_equal(open_fds(), fds);
    assert_null(f->db.impl);
    count_rows(f, "SELECT count(*) FROM t", 2);
    count_rows(f, "SELECT count(*) FROM myriad_migrations WHERE name = 'm1'", 1);
    assert_int_equal(db_backend_sqlite.prefork(&f->db, f->url, err, sizeof(err)), 0);
    count_rows(f, "SELECT count(*) FROM t", 2);   /* a second run applies nothing */
}

/* After the supervisor migrated, a worker only opens the file: it starts
 * while another process holds the write lock, which BEGIN EXCLUSIVE would
 * have waited for until --db-timeout and failed. */
static void test_open_after_prefork_takes_no_lock(void **state)
{
    fixture *f = *state;
    char err[256] = "";
    f->cfg.db_timeout = 200;   /* ms */
    assert_int_equal(db_backend_sqlite.prefork(&f->db, f->url, err, sizeof(err)), 0);
    sqlite3 *other;
    assert_int_equal(sqlite3_open(f->url + strlen("sqlite:"), &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE; INSERT INTO t VALUES (9, 'x')",
                                  NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(db_backend_sqlite.open(&f->db, f->url), 0);
    myr_db_call all = { "all", NULL, 0 };
    seen s = { 0 };
    assert_int_equal(myr_db_submit(&f->db, &all, 1, done, &s), 0);
    wait_for(f, &s.calls, 1);
    assert_int_equal(s.err, MYR_DB_OK);
    assert_int_equal(s.rows, 2);   /* WAL: the uncommitted row is not seen */
    db_backend_sqlite.close(&f->db);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
}

static void test_prefork_errors_in_err(void **state)
{
    fixture *f = *state;
    char err[512] = "";
    assert_true(db_backend_sqlite.prefork(&f->db, "sqlite:/nonexistent-dir/x.db", err,
                                          sizeof(err)) < 0);
    assert_non_null(strstr(err, "sqlite /nonexistent-dir/x.db: cannot open"));

    err[0] = '\0';
    assert_true(db_backend_sqlite.prefork(&f->db, "sqlite:", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "no file name"));

    char path[128];   /* a file that is not a database */
    snprintf(path, sizeof(path), "%s/t.db", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 512; i++)
        fputs("this is not a database. ", fp);
    fclose(fp);
    err[0] = '\0';
    int fds = open_fds();
    assert_true(db_backend_sqlite.prefork(&f->db, f->url, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "file is not a database"));
    assert_int_equal(open_fds(), fds);
}

static void test_prefork_names_bad_sql(void **state)
{
    fixture *f = *state;
    char err[512] = "";
    f->stmts[2].sql_sqlite = "SELECT nope FROM missing";
    assert_true(db_backend_sqlite.prefork(&f->db, f->url, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "statement all: no such table: missing"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_reads_and_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_burst_is_batched_and_ordered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_open_does_not_migrate_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_interrupts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_completes_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_sql_named_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefork_migrates_and_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_after_prefork_takes_no_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefork_errors_in_err, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefork_names_bad_sql, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
