/* The myriad reference service: the TechEmpower benchmark endpoints and the
 * routes the end-to-end tests drive. Written only against include/myriad.h,
 * like any other service built on libmyriad.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <myriad.h>

#include "routes_hash.h"

#include "routes_db.h"

#include "routes_cache.h"

#include "routes_cluster.h"

#include "routes_ws.h"

#include "routes_chat.h"

/* ---- TechEmpower --------------------------------------------------------- */

static void plaintext(myr_req *req)
{
    static const char hello[] = "Hello, World!";
    myr_respond(req, 200, "text/plain", hello, sizeof(hello) - 1);
}

static void json(myr_req *req)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_obj_begin(&w);
    myr_json_key(&w, "message");
    myr_json_str(&w, "Hello, World!");
    myr_json_obj_end(&w);
    myr_respond_json(req, 200, &w);
}

static void healthz(myr_req *req)
{
    const char *why = myr_overload_reason(req);   /* so a load balancer steers away */
    if (why) {
        char body[64];
        snprintf(body, sizeof(body), "overloaded: %s\n", why);
        myr_set_header(req, "Retry-After", "1");
        myr_respond_str(req, 503, "text/plain", body);
        return;
    }
    myr_respond_str(req, 200, "text/plain", "ok\n");
}

/* ---- test-only routes (MYRIAD_TEST_ROUTES=1) ------------------------------ */

static long query_long(myr_req *req, const char *name, long def, long max)
{
    myr_str v = myr_query_param(req, name);
    if (!v.ptr || !v.len)
        return def;
    char *end;
    long n = strtol(v.ptr, &end, 10);
    if (*end || n < 0)
        return def;
    return n > max ? max : n;
}

static void delay_done(myr_req *req, void *arg)
{
    myr_respond_str(req, 200, "text/plain", "ok");
}

/* Answers after ?ms=N: an asynchronous handler. */
static void test_delay(myr_req *req)
{
    long ms = query_long(req, "ms", 100, 60000);
    if (myr_after(req, (uint64_t)ms, delay_done, NULL))
        myr_respond_str(req, 503, "text/plain", "out of memory\n");
}

static void test_echo(myr_req *req)
{
    myr_str body = myr_body(req);
    myr_respond(req, 200, "application/octet-stream", body.ptr, body.len);
}

typedef struct stream_state {
    long  left;    /* chunks still to send */
    char *chunk;   /* `size` bytes of 'x' */
    long  size;
} stream_state;

static void stream_more(myr_req *req, void *arg)
{
    stream_state *st = arg;
    while (st->left > 0) {
        st->left--;
        int rc = myr_stream_write(req, st->chunk, (size_t)st->size);
        if (rc < 0)
            break;   /* client gone */
        if (rc == 1) {
            myr_stream_on_drain(req, stream_more, st);
            return;
        }
    }
    myr_stream_end(req);
}

/* ?chunks=N&size=S: a chunked response written as the client reads it. */
static void test_stream(myr_req *req)
{
    stream_state *st = myr_alloc(req, sizeof(*st));
    long size = query_long(req, "size", 10, 1 << 20);
    if (!st || !(st->chunk = myr_alloc(req, (size_t)size + 1))) {
        myr_respond_str(req, 503, "text/plain", "out of memory\n");
        return;
    }
    st->left = query_long(req, "chunks", 1, 1000000);
    st->size = size;
    memset(st->chunk, 'x', (size_t)size);
    myr_stream_begin(req, 200, "text/plain");
    stream_more(req, st);
}

static void test_params(myr_req *req)
{
    myr_str a = myr_param(req, "a"), b = myr_param(req, "b");
    size_t n = a.len + b.len + 6;
    char *out = myr_alloc(req, n + 1);
    if (!out) {
        myr_respond_str(req, 503, "text/plain", "out of memory\n");
        return;
    }
    memcpy(out, "a=", 2);
    memcpy(out + 2, a.ptr, a.len);
    memcpy(out + 2 + a.len, " b=", 3);
    memcpy(out + 5 + a.len, b.ptr, b.len);
    myr_respond(req, 200, "text/plain", out, a.len + b.len + 5);
}

static void test_query(myr_req *req)
{
    myr_str v = myr_query_param(req, "name");
    myr_respond(req, 200, "text/plain", v.ptr ? v.ptr : "", v.len);
}

int main(int argc, char **argv)
{
    myr_app *app = myr_app_new();
    myr_get(app, "/plaintext", plaintext);
    myr_get(app, "/json", json);
    myr_get(app, "/healthz", healthz);
    const char *t = getenv("MYRIAD_TEST_ROUTES");
    tfb_db_routes(app, t && strcmp(t, "1") == 0);   /* /db /queries /fortunes /updates */
    cache_routes(app, t && strcmp(t, "1") == 0);    /* /cached-queries /world/:id (app/cache_routes.c) */
    if (t && strcmp(t, "1") == 0) {
        myr_get(app, "/test/delay", test_delay);
        myr_post(app, "/test/echo", test_echo);
        myr_get(app, "/test/stream", test_stream);
        myr_get(app, "/test/params/:a/:b", test_params);
        myr_get(app, "/test/query", test_query);
    }
    hash_routes(app, t && strcmp(t, "1") == 0);   /* POST /hash, /verify (app/hash.c) */
    cluster_test_routes(app, t && strcmp(t, "1") == 0);   /* /test/pid, /test/grow */
    ws_echo_routes(app);   /* GET /ws/echo (app/ws_echo.c) */
    chat_routes(app);      /* GET /ws/chat, GET /rooms, POST /rooms/:room/messages (app/chat.c) */
    int rc = myr_main(app, argc, argv);
    myr_app_free(app);
    return rc;
}
