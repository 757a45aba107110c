/* cluster_test — routes the cluster tests drive (see routes_cluster.h):
 * which worker answered, and a worker that grows on request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <myriad.h>

#include "routes_cluster.h"

#define GROW_MAX_MB 1024

/* Memory kept by /test/grow: blocks chained through their first bytes, so
 * it stays reachable (not a leak) until the process exits. One list per
 * process, touched only on the loop thread. */
static void *grown;

static void test_pid(myr_req *req)
{
    char body[32];
    snprintf(body, sizeof(body), "%d\n", (int)getpid());
    myr_respond_str(req, 200, "text/plain", body);
}

static void test_grow(myr_req *req)
{
    myr_str v = myr_query_param(req, "mb");
    long mb = v.ptr && v.len ? strtol(v.ptr, NULL, 10) : 0;
    if (mb <= 0 || mb > GROW_MAX_MB) {
        myr_respond_str(req, 400, "text/plain", "mb must be 1..1024\n");
        return;
    }
    size_t size = (size_t)mb << 20;
    void **block = malloc(size);
    if (!block) {
        myr_respond_str(req, 503, "text/plain", "out of memory\n");
        return;
    }
    memset(block, 0xa5, size);   /* touch every page: resident */
    *block = grown;
    grown = block;
    test_pid(req);
}

void cluster_test_routes(myr_app *app, bool test_routes)
{
    if (!test_routes)
        return;
    myr_get(app, "/test/pid", test_pid);
    myr_get(app, "/test/grow", test_grow);
}
