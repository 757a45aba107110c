/* cache_routes — the reference service's cached endpoints, written only
 * against include/myriad.h:
 *
 *   GET /cached-queries?count=N   N random World rows (count clamped to
 *                                 1..500; missing, zero or not a number: 1)
 *                                 as [{"id":N,"randomNumber":N},...]
 *   GET /world/:id                one row, Cache-Control: max-age=--cache-ttl;
 *                                 404 for an id the database does not have
 *                                 (cached as absent), 400 for a bad id
 *
 * Both read "CachedWorld": the cache entry "w:<id>" holds the row's
 * randomNumber in decimal, filled from the World table (tfb_db's
 * "world_by_id") on a miss; the JSON is written per response. /updates
 * calls cached_world_forget for every row it changes.
 *
 * Test routes (MYRIAD_TEST_ROUTES=1), over tfb_db's kv table:
 *
 *   GET    /test/cache/kv/:k?ttl=MS&stale=MS&slow=1   myr_cached of "kv:<k>";
 *          slow=1 fills with a statement that takes ~0.3 s (stampedes)
 *   POST   /test/cache/kv/:k    writes the body to kv, then myr_cache_del
 *   DELETE /test/cache/kv/:k    myr_cache_del only
 *
 * Answers carry X-Pid (the worker that answered).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "routes_cache.h"
#include "tfb.h"

#define KEY_MAX     32
#define WORLD_STALE_MS 10000   /* a refreshing row may be served this much past its ttl */

/* ---- helpers ------------------------------------------------------------------------------- */

/* A decimal id of 1..2^31-1 without sign, spaces or leading zeros; else 0. */
static int64_t parse_id(const char *s, size_t n)
{
    if (!s || n == 0 || n > 10 || s[0] == '0')
        return 0;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    return v <= 2147483647 ? v : 0;
}

static size_t world_key(char *out, int64_t id)
{
    return (size_t)snprintf(out, KEY_MAX, "w:%lld", (long long)id);
}

static void set_pid_header(myr_req *req)
{
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    myr_set_header(req, "X-Pid", pid);
}

static void respond_error(myr_req *req, int status, const char *msg)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_obj_begin(&w);
    myr_json_key(&w, "error");
    myr_json_str(&w, msg);
    myr_json_obj_end(&w);
    if (status == 503)
        myr_set_header(req, "Retry-After", "1");
    myr_respond_json(req, status, &w);
}

static void respond_cache_error(myr_req *req, myr_cache_status st)
{
    respond_error(req, 503, myr_cache_strerror(st));
}

static int64_t parse_number(const void *value, size_t len)
{
    const char *p = value;
    int64_t v = 0;
    bool neg = len && p[0] == '-';
    for (size_t i = neg; i < len && p[i] >= '0' && p[i] <= '9'; i++)
        v = v * 10 + (p[i] - '0');
    return neg ? -v : v;
}

/* ---- CachedWorld: the source ------------------------------------------------------------------- */

static void world_filled(void *arg, myr_db_error err, myr_db_result *const *res, size_t n)
{
    myr_cache_fill *f = arg;
    if (err) {
        myr_cache_fill_done(f, MYR_CACHE_FAILED, NULL, 0);
        return;
    }
    if (myr_db_rows(res[0]) == 0) {
        myr_cache_fill_done(f, MYR_CACHE_ABSENT, NULL, 0);
        return;
    }
    char num[24];
    int len = snprintf(num, sizeof(num), "%lld", (long long)myr_db_int(res[0], 0, 1));
    myr_cache_fill_done(f, MYR_CACHE_OK, num, (size_t)len);
}

/* key is "w:<id>" */
static void world_fill(myr_cache_fill *f, const char *key, size_t klen, void *arg)
{
    myr_db_param id = myr_db_int_param(parse_id(key + 2, klen - 2));
    myr_db_call call = { "world_by_id", &id, 1 };
    myr_db *db = myr_cache_fill_db(f);
    if (!db || myr_db_submit(db, &call, 1, world_filled, f))
        myr_cache_fill_done(f, MYR_CACHE_FAILED, NULL, 0);
}

static const myr_cache_source world_source = {
    .fill = world_fill, .ttl_ms = 0 /* --cache-ttl */, .stale_ms = WORLD_STALE_MS,
};

void cached_world_forget(myr_req *req, int64_t id)
{
    char key[KEY_MAX];
    myr_cache_del(req, key, world_key(key, id));
}

/* ---- /cached-queries ------------------------------------------------------------------------------ */

typedef struct cq_state {
    int              n, pending;
    myr_cache_status err;      /* the first failure, or MYR_CACHE_OK */
    int64_t         *ids, *numbers;
} cq_state;

typedef struct cq_slot {
    cq_state *st;
    int       i;
} cq_slot;

static void cq_respond(myr_req *req, cq_state *st)
{
    if (st->err == MYR_CACHE_ABSENT) {
        respond_error(req, 500, "a World row is missing");
        return;
    }
    if (st->err != MYR_CACHE_OK) {
        respond_cache_error(req, st->err);
        return;
    }
    myr_json w;
    myr_json_init(&w);
    myr_json_arr_begin(&w);
    for (int i = 0; i < st->n; i++)
        tfb_world_json(&w, st->ids[i], st->numbers[i]);
    myr_json_arr_end(&w);
    myr_respond_json(req, 200, &w);
}

static void cq_done(myr_req *req, void *arg, myr_cache_status status, const void *value,
                    size_t len)
{
    cq_slot *slot = arg;
    cq_state *st = slot->st;
    if (status == MYR_CACHE_OK)
        st->numbers[slot->i] = parse_number(value, len);
    else if (st->err == MYR_CACHE_OK)
        st->err = status;
    if (--st->pending == 0)
        cq_respond(req, st);
}

static void cached_queries(myr_req *req)
{
    int n = tfb_count_param(req, "count");
    cq_state *st = myr_alloc(req, sizeof(*st));
    cq_slot *slots = myr_alloc(req, (size_t)n * sizeof(*slots));
    int64_t *ids = myr_alloc(req, (size_t)n * 2 * sizeof(*ids));
    if (!st || !slots || !ids) {
        respond_cache_error(req, MYR_CACHE_NOMEM);
        return;
    }
    *st = (cq_state){ .n = n, .pending = n, .err = MYR_CACHE_OK, .ids = ids,
                      .numbers = ids + n };
    for (int i = 0; i < n; i++) {   /* answers come later: never inside myr_cached */
        char key[KEY_MAX];
        ids[i] = tfb_random_id();
        slots[i] = (cq_slot){ st, i };
        if (myr_cached(req, key, world_key(key, ids[i]), &world_source, cq_done, &slots[i])) {
            st->err = MYR_CACHE_NOMEM;
            st->pending -= n - i;   /* calls not made */
            if (st->pending == 0)
                cq_respond(req, st);
            return;
        }
    }
}

/* ---- /world/:id ------------------------------------------------------------------------------------- */

static void world_done(myr_req *req, void *arg, myr_cache_status status, const void *value,
                       size_t len)
{
    int64_t id = *(int64_t *)arg;
    if (status == MYR_CACHE_ABSENT) {
        respond_error(req, 404, "no such world");
        return;
    }
    if (status != MYR_CACHE_OK) {
        respond_cache_error(req, status);
        return;
    }
    char cc[48];
    snprintf(cc, sizeof(cc), "max-age=%llu", (unsigned long long)(myr_cache_ttl(req) / 1000));
    myr_set_header(req, "Cache-Control", cc);
    myr_json w;
    myr_json_init(&w);
    tfb_world_json(&w, id, parse_number(value, len));
    myr_respond_json(req, 200, &w);
}

static void world_by_id(myr_req *req)
{
    myr_str p = myr_param(req, "id");
    int64_t *id = myr_alloc(req, sizeof(*id));
    if (!id) {
        respond_cache_error(req, MYR_CACHE_NOMEM);
        return;
    }
    if (!(*id = parse_id(p.ptr, p.len))) {
        respond_error(req, 400, "id must be a positive integer");
        return;
    }
    char key[KEY_MAX];
    int rc = myr_cached(req, key, world_key(key, *id), &world_source, world_done, id);
    if (rc)
        respond_cache_error(req, MYR_CACHE_NOMEM);
}

/* ---- test routes -------------------------------------------------------------------------------------- */

static void kv_filled(void *arg, myr_db_error err, myr_db_result *const *res, size_t n)
{
    myr_cache_fill *f = arg;
    if (err) {
        myr_cache_fill_done(f, MYR_CACHE_FAILED, NULL, 0);
    } else if (myr_db_rows(res[0]) == 0) {
        myr_cache_fill_done(f, MYR_CACHE_ABSENT, NULL, 0);
    } else {
        size_t len;
        const char *v = myr_db_text(res[0], 0, 0, &len);
        myr_cache_fill_done(f, MYR_CACHE_OK, v, len);
    }
}

/* key is "kv:<k>"; arg names the statement (static). */
static void kv_fill(myr_cache_fill *f, const char *key, size_t klen, void *arg)
{
    myr_db_param k = myr_db_text_param(key + 3, klen - 3);
    myr_db_call call = { arg, &k, 1 };
    myr_db *db = myr_cache_fill_db(f);
    if (!db || myr_db_submit(db, &call, 1, kv_filled, f))
        myr_cache_fill_done(f, MYR_CACHE_FAILED, NULL, 0);
}

static uint64_t query_ms(myr_req *req, const char *name)
{
    myr_str v = myr_query_param(req, name);
    return v.ptr && v.len ? strtoull(v.ptr, NULL, 10) : 0;
}

/* "kv:<k>" into out (at least 4 + len of k bytes), or 0 when k is too long. */
static size_t kv_key(myr_req *req, char *out, size_t cap)
{
    myr_str k = myr_param(req, "k");
    if (k.len + 3 > cap)
        return 0;
    memcpy(out, "kv:", 3);
    memcpy(out + 3, k.ptr, k.len);
    return k.len + 3;
}

static void kv_done(myr_req *req, void *arg, myr_cache_status status, const void *value,
                    size_t len)
{
    set_pid_header(req);
    if (status == MYR_CACHE_OK)
        myr_respond(req, 200, "text/plain", value, len);
    else if (status == MYR_CACHE_ABSENT)
        myr_respond_str(req, 404, "text/plain", "absent\n");
    else
        respond_cache_error(req, status);
}

static void test_kv_get(myr_req *req)
{
    char key[256];
    size_t klen = kv_key(req, key, sizeof(key));
    myr_str slow = myr_query_param(req, "slow");
    myr_cache_source src = {
        .fill = kv_fill, .arg = slow.len ? "cache_kv_slow" : "kv_get",
        .ttl_ms = query_ms(req, "ttl"), .stale_ms = query_ms(req, "stale"),
    };
    if (!klen || myr_cached(req, key, klen, &src, kv_done, NULL))
        respond_error(req, 400, "bad key");
}

static void kv_written(myr_req *req, void *arg, myr_db_error err, myr_db_result *const *res,
                       size_t n)
{
    if (err) {
        respond_error(req, myr_db_error_status(err), myr_db_strerror(err));
        return;
    }
    char key[256];
    myr_cache_del(req, key, kv_key(req, key, sizeof(key)));
    set_pid_header(req);
    myr_respond_str(req, 200, "text/plain", "stored\n");
}

static void test_kv_put(myr_req *req)
{
    myr_str k = myr_param(req, "k"), v = myr_body(req);
    myr_db_param p[2] = { myr_db_text_param(k.ptr, k.len), myr_db_text_param(v.ptr, v.len) };
    if (myr_db_query(req, "kv_put", p, 2, kv_written, NULL))
        respond_cache_error(req, MYR_CACHE_NOMEM);
}

static void test_kv_del(myr_req *req)
{
    char key[256];
    size_t klen = kv_key(req, key, sizeof(key));
    if (!klen || myr_cache_del(req, key, klen)) {
        respond_error(req, 400, "bad key");
        return;
    }
    set_pid_header(req);
    myr_respond_str(req, 200, "text/plain", "deleted\n");
}

/* ---- registration ---------------------------------------------------------------------------------------- */

static const char kv_slow_pg[] = "SELECT v FROM kv, pg_sleep(0.3) WHERE k = $1";
/* no sleep in SQLite: a count over a few million generated rows */
static const char kv_slow_sqlite[] =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) "
    "SELECT v FROM kv WHERE k = $1 AND (SELECT count(*) FROM c) > 0";

static void must(int rc, const char *what)
{
    if (rc) {
        fprintf(stderr, "myriad: registering %s failed (%d)\n", what, rc);
        abort();   /* start-up: a programming error */
    }
}

void cache_routes(myr_app *app, bool test_routes)
{
    must(myr_get(app, "/cached-queries", cached_queries), "/cached-queries");
    must(myr_get(app, "/world/:id", world_by_id), "/world/:id");
    if (!test_routes)
        return;
    must(myr_db_prepare(app, "cache_kv_slow", kv_slow_pg, MYR_DB_PG), "cache_kv_slow");
    must(myr_db_prepare(app, "cache_kv_slow", kv_slow_sqlite, MYR_DB_SQLITE), "cache_kv_slow");
    must(myr_get(app, "/test/cache/kv/:k", test_kv_get), "/test/cache/kv");
    must(myr_post(app, "/test/cache/kv/:k", test_kv_put), "/test/cache/kv");
    must(myr_del(app, "/test/cache/kv/:k", test_kv_del), "/test/cache/kv");
}
