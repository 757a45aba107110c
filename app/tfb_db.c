/* tfb_db — the TechEmpower database endpoints of the reference service,
 * written only against include/myriad.h, on SQLite (default) or PostgreSQL.
 *
 *   GET /db              one random World row                 {"id":N,"randomNumber":N}
 *   GET /queries?queries=N   N rows, one SELECT each (a batch: pipelined on PostgreSQL)
 *   GET /fortunes        every Fortune row plus one added now, sorted by message
 *                        (byte order) in the app, as an HTML-escaped table
 *   GET /updates?queries=N   N rows read one SELECT each, new random numbers,
 *                        written back by one bulk UPDATE (ids sorted), returned
 *
 * Nothing is cached: every request reaches the database (/updates drops
 * the cached copies of the rows it changes: app/cache_routes.c). A database error
 * answers 503 (500 for a failed statement) with {"error":"..."}.
 *
 * The schema and its seed are migrations (applied once per database, before
 * serving): World 10,000 rows with random numbers in 1..10000, Fortune the 12
 * standard rows.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "routes_db.h"
#include "routes_cache.h"
#include "tfb.h"


/* ---- schema ------------------------------------------------------------------------------ */

#define FORTUNE_ROWS                                                                      \
    "(1, 'fortune: No such file or directory'),"                                          \
    "(2, 'A computer scientist is someone who fixes things that aren''t broken.'),"      \
    "(3, 'After enough decimal places, nobody gives a damn.'),"                           \
    "(4, 'A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1'),"             \
    "(5, 'A computer program does what you tell it to do, not what you want it to do.')," \
    "(6, 'Emacs is a nice operating system, but I prefer UNIX. \xe2\x80\x94 Tom Christaensen'),"  \
    "(7, 'Any program that runs right is obsolete.'),"                                    \
    "(8, 'A list is only as strong as its weakest link. \xe2\x80\x94 Donald Knuth'),"     \
    "(9, 'Feature: A bug with seniority.'),"                                              \
    "(10, 'Computers make very fast, very accurate mistakes.'),"                          \
    "(11, '<script>alert(\"This should not be displayed in a browser alert box.\");</script>')," \
    "(12, '\xe3\x83\x95\xe3\x83\xac\xe3\x83\xbc\xe3\x83\xa0\xe3\x83\xaf\xe3\x83\xbc\xe3\x82\xaf" \
    "\xe3\x81\xae\xe3\x83\x99\xe3\x83\xb3\xe3\x83\x81\xe3\x83\x9e\xe3\x83\xbc\xe3\x82\xaf')"

static const char schema_sqlite[] =
    "CREATE TABLE IF NOT EXISTS World (id INTEGER PRIMARY KEY, "
    "randomNumber INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS Fortune (id INTEGER PRIMARY KEY, message TEXT NOT NULL);"
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) "
    "INSERT OR IGNORE INTO World (id, randomNumber) SELECT i, abs(random() % 10000) + 1 FROM n;"
    "INSERT OR IGNORE INTO Fortune (id, message) VALUES " FORTUNE_ROWS ";";

static const char schema_pg[] =
    "CREATE TABLE IF NOT EXISTS World (id integer NOT NULL, "
    "randomNumber integer NOT NULL DEFAULT 0, PRIMARY KEY (id));"
    "CREATE TABLE IF NOT EXISTS Fortune (id integer NOT NULL, message varchar(2048) NOT NULL, "
    "PRIMARY KEY (id));"
    "INSERT INTO World (id, randomNumber) SELECT x, least(floor(random() * 10000 + 1), 10000) "
    "FROM generate_series(1, 10000) AS x ON CONFLICT DO NOTHING;"
    "INSERT INTO Fortune (id, message) VALUES " FORTUNE_ROWS " ON CONFLICT DO NOTHING;";

/* The bulk UPDATE takes two comma-separated lists of equal length: ids
 * (sorted, so concurrent updates lock rows in one order) and new numbers. */
static const char update_pg[] =
    "UPDATE World SET randomNumber = v.r FROM (SELECT unnest(string_to_array($1, ',')::int[]) "
    "AS id, unnest(string_to_array($2, ',')::int[]) AS r) AS v WHERE World.id = v.id";
static const char update_sqlite[] =
    "UPDATE World SET randomNumber = v.r FROM (SELECT a.value AS id, b.value AS r "
    "FROM json_each('[' || $1 || ']') AS a JOIN json_each('[' || $2 || ']') AS b "
    "ON a.key = b.key) AS v WHERE World.id = v.id";

/* ---- helpers ------------------------------------------------------------------------------ */

static void respond_error(myr_req *req, myr_db_error err)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_obj_begin(&w);
    myr_json_key(&w, "error");
    myr_json_str(&w, myr_db_strerror(err));
    myr_json_obj_end(&w);
    myr_set_header(req, "Retry-After", "1");
    myr_respond_json(req, myr_db_error_status(err), &w);
}

static void respond_oom(myr_req *req)
{
    respond_error(req, MYR_DB_NOMEM);
}

/* ---- /db and /queries ------------------------------------------------------------------------ */

static void db_done(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                    size_t n)
{
    if (err) {
        respond_error(req, err);
        return;
    }
    myr_json w;
    myr_json_init(&w);
    tfb_world_json(&w, myr_db_int(res[0], 0, 0), myr_db_int(res[0], 0, 1));
    myr_respond_json(req, 200, &w);
}

static void tfb_db(myr_req *req)
{
    myr_db_param id = myr_db_int_param(tfb_random_id());
    if (myr_db_query(req, "world_by_id", &id, 1, db_done, NULL))
        respond_oom(req);
}

static void queries_done(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                         size_t n)
{
    if (err) {
        respond_error(req, err);
        return;
    }
    myr_json w;
    myr_json_init(&w);
    myr_json_arr_begin(&w);
    for (size_t i = 0; i < n; i++)
        tfb_world_json(&w, myr_db_int(res[i], 0, 0), myr_db_int(res[i], 0, 1));
    myr_json_arr_end(&w);
    myr_respond_json(req, 200, &w);
}

/* n calls of world_by_id with random ids, in the request's arena. */
static myr_db_call *world_reads(myr_req *req, int n)
{
    myr_db_call *calls = myr_alloc(req, (size_t)n * sizeof(*calls));
    myr_db_param *ids = myr_alloc(req, (size_t)n * sizeof(*ids));
    if (!calls || !ids)
        return NULL;
    for (int i = 0; i < n; i++) {
        ids[i] = myr_db_int_param(tfb_random_id());
        calls[i] = (myr_db_call){ "world_by_id", &ids[i], 1 };
    }
    return calls;
}

static void tfb_queries(myr_req *req)
{
    int n = tfb_count_param(req, "queries");
    myr_db_call *calls = world_reads(req, n);
    if (!calls || myr_db_batch(req, calls, (size_t)n, queries_done, NULL))
        respond_oom(req);
}

/* ---- /fortunes ------------------------------------------------------------------------------ */

typedef struct fortune {
    int64_t     id;
    const char *msg;
    size_t      len;
} fortune;

static int fortune_cmp(const void *a, const void *b)
{
    const fortune *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->msg, y->msg, n);   /* UTF-8 byte order = code-point order */
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static size_t escaped_len(const char *s, size_t n)
{
    size_t out = n;
    for (size_t i = 0; i < n; i++)
        switch (s[i]) {
        case '&': out += 4; break;
        case '<': case '>': out += 3; break;
        case '"': case '\'': out += 5; break;
        }
    return out;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put_escaped(char *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        switch (s[i]) {
        case '&': p = put(p, "&amp;", 5); break;
        case '<': p = put(p, "&lt;", 4); break;
        case '>': p = put(p, "&gt;", 4); break;
        case '"': p = put(p, "&quot;", 6); break;
        case '\'': p = put(p, "&apos;", 6); break;
        default: *p++ = s[i];
        }
    return p;
}

static const char fortunes_head[] =
    "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
    "<tr><th>id</th><th>message</th></tr>";
static const char fortunes_tail[] = "</table></body></html>";
#define ROW_FIXED (sizeof("<tr><td></td><td></td></tr>") - 1 + 20)

/* The template: head, one row per fortune (message escaped), tail. */
static void fortunes_render(myr_req *req, const fortune *f, size_t n)
{
    size_t size = sizeof(fortunes_head) + sizeof(fortunes_tail);
    for (size_t i = 0; i < n; i++)
        size += ROW_FIXED + escaped_len(f[i].msg, f[i].len);
    char *body = myr_alloc(req, size), *p = body;
    if (!body) {
        respond_oom(req);
        return;
    }
    p = put(p, fortunes_head, sizeof(fortunes_head) - 1);
    for (size_t i = 0; i < n; i++) {
        char id[24];
        p = put(p, "<tr><td>", 8);
        p = put(p, id, (size_t)snprintf(id, sizeof(id), "%lld", (long long)f[i].id));
        p = put(p, "</td><td>", 9);
        p = put_escaped(p, f[i].msg, f[i].len);
        p = put(p, "</td></tr>", 10);
    }
    p = put(p, fortunes_tail, sizeof(fortunes_tail) - 1);
    myr_respond(req, 200, "text/html; charset=utf-8", body, (size_t)(p - body));
}

static void fortunes_done(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                          size_t nres)
{
    if (err) {
        respond_error(req, err);
        return;
    }
    size_t rows = myr_db_rows(res[0]), n = rows + 1;
    fortune *f = myr_alloc(req, n * sizeof(*f));
    if (!f) {
        respond_oom(req);
        return;
    }
    for (size_t i = 0; i < rows; i++) {
        f[i].id = myr_db_int(res[0], i, 0);
        f[i].msg = myr_db_text(res[0], i, 1, &f[i].len);   /* valid in this callback */
    }
    static const char added[] = "Additional fortune added at request time.";
    f[rows] = (fortune){ 0, added, sizeof(added) - 1 };
    qsort(f, n, sizeof(*f), fortune_cmp);
    fortunes_render(req, f, n);
}

static void tfb_fortunes(myr_req *req)
{
    if (myr_db_query(req, "fortunes", NULL, 0, fortunes_done, NULL))
        respond_oom(req);
}

/* ---- /updates ---------------------------------------------------------------------------- */

typedef struct world { int64_t id, number; } world;

typedef struct update_state {
    int    n;
    world *rows;       /* in read order: the response */
} update_state;

static int world_cmp(const void *a, const void *b)
{
    const world *x = *(const world *const *)a, *y = *(const world *const *)b;
    return (x->id > y->id) - (x->id < y->id);
}

static void updates_written(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                            size_t nres)
{
    update_state *st = arg;
    if (err) {
        respond_error(req, err);
        return;
    }
    for (int i = 0; i < st->n; i++)   /* the cached copies (/cached-queries, /world/:id) */
        cached_world_forget(req, st->rows[i].id);
    myr_json w;
    myr_json_init(&w);
    myr_json_arr_begin(&w);
    for (int i = 0; i < st->n; i++)
        tfb_world_json(&w, st->rows[i].id, st->rows[i].number);
    myr_json_arr_end(&w);
    myr_respond_json(req, 200, &w);
}

/* "1,2,3" from the sorted rows, skipping repeated ids (one value each). */
static char *join(myr_req *req, world **sorted, int n, bool ids)
{
    char *out = myr_alloc(req, (size_t)n * 12 + 1), *p = out;
    if (!out)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (i && sorted[i]->id == sorted[i - 1]->id)
            continue;
        p += sprintf(p, "%s%lld", p == out ? "" : ",",
                     (long long)(ids ? sorted[i]->id : sorted[i]->number));
    }
    return out;
}

static void updates_read(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                         size_t n)
{
    update_state *st = arg;
    if (err) {
        respond_error(req, err);
        return;
    }
    world **sorted = myr_alloc(req, n * sizeof(*sorted));
    if (!sorted) {
        respond_oom(req);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        world *r = &st->rows[i];
        int64_t old = myr_db_int(res[i], 0, 1);
        r->id = myr_db_int(res[i], 0, 0);
        do
            r->number = tfb_random_id();
        while (r->number == old);
        sorted[i] = r;
    }
    qsort(sorted, n, sizeof(*sorted), world_cmp);
    for (size_t i = 1; i < n; i++)   /* a repeated id gets one new value */
        if (sorted[i]->id == sorted[i - 1]->id)
            sorted[i]->number = sorted[i - 1]->number;
    char *ids = join(req, sorted, (int)n, true), *nums = join(req, sorted, (int)n, false);
    if (!ids || !nums) {
        respond_oom(req);
        return;
    }
    myr_db_param p[2] = { myr_db_text_param(ids, strlen(ids)),
                          myr_db_text_param(nums, strlen(nums)) };
    if (myr_db_query(req, "world_update", p, 2, updates_written, st))
        respond_oom(req);
}

static void tfb_updates(myr_req *req)
{
    int n = tfb_count_param(req, "queries");
    update_state *st = myr_alloc(req, sizeof(*st));
    myr_db_call *calls = world_reads(req, n);
    if (!st || !calls || !(st->rows = myr_alloc(req, (size_t)n * sizeof(world)))) {
        respond_oom(req);
        return;
    }
    st->n = n;
    if (myr_db_batch(req, calls, (size_t)n, updates_read, st))
        respond_oom(req);
}

/* ---- test routes (MYRIAD_TEST_ROUTES=1): shards, replicas, budgets ----------------------------- */

static void kv_get_done(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                        size_t n)
{
    if (err) {
        respond_error(req, err);
        return;
    }
    if (myr_db_rows(res[0]) == 0) {
        myr_respond_str(req, 404, "text/plain", "no such key\n");
        return;
    }
    size_t len;
    const char *v = myr_db_text(res[0], 0, 0, &len);
    myr_respond(req, 200, "text/plain", v, len);
}

static void test_kv_get(myr_req *req)
{
    myr_str k = myr_param(req, "k");
    myr_db_param key = myr_db_text_param(k.ptr, k.len);
    if (myr_db_query(req, "kv_get", &key, 1, kv_get_done, NULL))
        respond_oom(req);
}

static void kv_put_done(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                        size_t n)
{
    if (err)
        respond_error(req, err);
    else
        myr_respond_str(req, 200, "text/plain", "stored\n");
}

static void test_kv_put(myr_req *req)
{
    myr_str k = myr_param(req, "k"), v = myr_body(req);
    myr_db_param p[2] = { myr_db_text_param(k.ptr, k.len), myr_db_text_param(v.ptr, v.len) };
    if (myr_db_query(req, "kv_put", p, 2, kv_put_done, NULL))
        respond_oom(req);
}

static void kvs_done(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                     size_t n)
{
    const myr_db_call *calls = arg;
    if (err) {
        respond_error(req, err);
        return;
    }
    myr_json w;
    myr_json_init(&w);
    myr_json_obj_begin(&w);
    for (size_t i = 0; i < n; i++) {
        myr_json_keyn(&w, calls[i].params[0].s, calls[i].params[0].len);
        if (myr_db_rows(res[i])) {
            size_t len;
            const char *v = myr_db_text(res[i], 0, 0, &len);
            myr_json_strn(&w, v, len);
        } else {
            myr_json_null(&w);
        }
    }
    myr_json_obj_end(&w);
    myr_respond_json(req, 200, &w);
}

/* ?keys=a,b,c: one batch that fans out over the shards. */
static void test_kvs(myr_req *req)
{
    myr_str keys = myr_query_param(req, "keys");
    size_t n = 1;
    for (size_t i = 0; i < keys.len; i++)
        n += keys.ptr[i] == ',';
    myr_db_call *calls = myr_alloc(req, n * sizeof(*calls));
    myr_db_param *ps = myr_alloc(req, n * sizeof(*ps));
    if (!calls || !ps || !keys.ptr) {
        myr_respond_str(req, 400, "text/plain", "keys=a,b,... expected\n");
        return;
    }
    const char *p = keys.ptr, *end = keys.ptr + keys.len;
    for (size_t i = 0; i < n; i++) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        const char *e = c ? c : end;
        ps[i] = myr_db_text_param(p, (size_t)(e - p));
        calls[i] = (myr_db_call){ "kv_get", &ps[i], 1 };
        p = e + 1;
    }
    if (myr_db_batch(req, calls, n, kvs_done, calls))
        respond_oom(req);
}

static void where_done(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                       size_t n)
{
    if (err) {
        respond_error(req, err);
        return;
    }
    size_t len;
    const char *port = myr_db_text(res[n - 1], 0, 0, &len);
    myr_respond(req, 200, "text/plain", port, len);
}

/* The port of the PostgreSQL server that answered a read. */
static void test_where(myr_req *req)
{
    if (myr_db_query(req, "server_port", NULL, 0, where_done, NULL))
        respond_oom(req);
}

static void ryw_written(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                        size_t n)
{
    if (err)
        respond_error(req, err);
    else
        test_where(req);   /* a read after a write in the same request */
}

static void test_ryw(myr_req *req)
{
    myr_db_param p[2] = { myr_db_text_param("ryw", 3), myr_db_text_param("1", 1) };
    if (myr_db_query(req, "kv_put", p, 2, ryw_written, NULL))
        respond_oom(req);
}

static void test_queries_count(myr_req *req, void *arg, myr_db_error err,
                               myr_db_result *const *res, size_t n)
{
    char out[32];
    if (err) {
        respond_error(req, err);
        return;
    }
    snprintf(out, sizeof(out), "%u", myr_db_queries(req));
    myr_respond_str(req, 200, "text/plain", out);
}

/* ?n=N: N statements in one batch; answers with myr_db_queries(). */
static void test_nplus1(myr_req *req)
{
    myr_str v = myr_query_param(req, "n");
    int n = v.ptr ? atoi(v.ptr) : 1;
    n = n < 1 ? 1 : n > TFB_MAX_QUERIES ? TFB_MAX_QUERIES : n;
    myr_db_call *calls = world_reads(req, n);
    if (!calls || myr_db_batch(req, calls, (size_t)n, test_queries_count, NULL))
        respond_oom(req);
}

static const char kv_schema_pg[] =
    "CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v text NOT NULL)";
static const char kv_schema_sqlite[] =
    "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)";
static const char kv_put_sql[] =
    "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v";

/* ---- registration ------------------------------------------------------------------------------ */

static void must(int rc, const char *what)
{
    if (rc) {
        fprintf(stderr, "myriad: registering %s failed (%d)\n", what, rc);
        abort();   /* start-up: a programming error */
    }
}

static void test_routes_add(myr_app *app)
{
    must(myr_db_migration(app, "test-kv", MYR_DB_PG, kv_schema_pg), "test-kv");
    must(myr_db_migration(app, "test-kv", MYR_DB_SQLITE, kv_schema_sqlite), "test-kv");
    must(myr_db_prepare(app, "kv_get", "SELECT v FROM kv WHERE k = $1", MYR_DB_SHARDED),
         "kv_get");
    must(myr_db_prepare(app, "kv_put", kv_put_sql, MYR_DB_SHARDED | MYR_DB_WRITE), "kv_put");
    must(myr_db_prepare(app, "server_port", "SELECT current_setting('port')", MYR_DB_PG),
         "server_port");
    must(myr_db_prepare(app, "server_port", "SELECT 0", MYR_DB_SQLITE), "server_port");
    must(myr_get(app, "/test/db/kv/:k", test_kv_get), "/test/db/kv");
    must(myr_post(app, "/test/db/kv/:k", test_kv_put), "/test/db/kv");
    must(myr_get(app, "/test/db/kvs", test_kvs), "/test/db/kvs");
    must(myr_get(app, "/test/db/where", test_where), "/test/db/where");
    must(myr_get(app, "/test/db/ryw", test_ryw), "/test/db/ryw");
    must(myr_get(app, "/test/db/nplus1", test_nplus1), "/test/db/nplus1");
}

void tfb_db_routes(myr_app *app, bool test_routes)
{
    must(myr_db_migration(app, "tfb-schema", MYR_DB_SQLITE, schema_sqlite), "tfb-schema");
    must(myr_db_migration(app, "tfb-schema", MYR_DB_PG, schema_pg), "tfb-schema");
    must(myr_db_prepare(app, "world_by_id", "SELECT id, randomNumber FROM World WHERE id = $1", 0),
         "world_by_id");
    must(myr_db_prepare(app, "fortunes", "SELECT id, message FROM Fortune", 0), "fortunes");
    must(myr_db_prepare(app, "world_update", update_pg, MYR_DB_WRITE | MYR_DB_PG),
         "world_update");
    must(myr_db_prepare(app, "world_update", update_sqlite, MYR_DB_WRITE | MYR_DB_SQLITE),
         "world_update");
    must(myr_get(app, "/db", tfb_db), "/db");
    must(myr_get(app, "/queries", tfb_queries), "/queries");
    must(myr_get(app, "/fortunes", tfb_fortunes), "/fortunes");
    must(myr_get(app, "/updates", tfb_updates), "/updates");
    if (test_routes)
        test_routes_add(app);
}
