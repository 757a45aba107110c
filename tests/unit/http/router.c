/* Unit tests for src/http/router.c: matching rules, precedence and
 * backtracking, 404/405 and Allow, pattern validation, ownership (every
 * allocation failure leaves a usable router and no leak), and a large table.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Allocation failure injection: the n-th allocation from now fails. */
static long alloc_fail_in = -1;
static void *failing_realloc(void *p, size_t n)
{
    if (alloc_fail_in >= 0 && alloc_fail_in-- == 0)
        return NULL;
    return realloc(p, n);
}
#define router_realloc failing_realloc
#include "http/router.c"

/* Distinct handler identities. */
static char H1, H2, H3, H4, H5;

static int find(const router *r, const char *method, const char *path, router_match *m)
{
    return router_find(r, method, strlen(method), path, strlen(path), m);
}

/* The handler a request reaches, or NULL. */
static void *reach(const router *r, const char *method, const char *path)
{
    router_match m;
    return find(r, method, path, &m) == 0 ? m.handler : NULL;
}

static void assert_param(const router_match *m, uint32_t i, const char *name,
                         const char *value)
{
    assert_true(i < m->nparams);
    assert_int_equal(m->params[i].name_len, strlen(name));
    assert_memory_equal(m->params[i].name, name, strlen(name));
    assert_int_equal(m->params[i].value_len, strlen(value));
    if (*value)
        assert_memory_equal(m->params[i].value, value, strlen(value));
}

static char *allow(const router *r, const char *path, char *out, size_t cap)
{
    router_allow(r, path, strlen(path), out, cap);
    return out;
}

static void test_static(void **state)
{
    router *r = router_new();
    assert_non_null(r);
    assert_int_equal(router_add(r, "GET", "/plaintext", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/json", &H2), 0);
    assert_int_equal(router_add(r, "GET", "/a/b/c", &H3), 0);
    router_match m;
    assert_int_equal(find(r, "GET", "/json", &m), 0);
    assert_ptr_equal(m.handler, &H2);
    assert_int_equal(m.nparams, 0);
    assert_ptr_equal(reach(r, "GET", "/plaintext"), &H1);
    assert_ptr_equal(reach(r, "GET", "/a/b/c"), &H3);
    assert_int_equal(find(r, "GET", "/jso", &m), -404);
    assert_int_equal(find(r, "GET", "/jsonx", &m), -404);
    assert_int_equal(find(r, "GET", "/a/b", &m), -404);
    assert_int_equal(find(r, "GET", "/a/b/c/d", &m), -404);
    assert_int_equal(find(r, "GET", "/JSON", &m), -404);   /* case-sensitive */
    assert_int_equal(find(r, "GET", "", &m), -404);
    assert_int_equal(find(r, "GET", "json", &m), -404);
    assert_int_equal(find(r, "GET", "*", &m), -404);
    /* Only path_len bytes count: the rest of the buffer is not read. */
    assert_int_equal(router_find(r, "GET", 3, "/jsonXYZ", 5, &m), 0);
    assert_ptr_equal(m.handler, &H2);
    router_free(r);
}

static void test_params(void **state)
{
    router *r = router_new();
    assert_int_equal(router_add(r, "GET", "/users/:id", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/users/:id/posts/:post", &H2), 0);
    assert_int_equal(router_add(r, "GET", "/x/:a/:b/:c", &H3), 0);
    router_match m;
    assert_int_equal(find(r, "GET", "/users/42", &m), 0);
    assert_ptr_equal(m.handler, &H1);
    assert_int_equal(m.nparams, 1);
    assert_param(&m, 0, "id", "42");

    const char *path = "/users/alice/posts/7";
    assert_int_equal(find(r, "GET", path, &m), 0);
    assert_ptr_equal(m.handler, &H2);
    assert_int_equal(m.nparams, 2);
    assert_param(&m, 0, "id", "alice");
    assert_param(&m, 1, "post", "7");
    /* Values point into the path, names into the router. */
    assert_ptr_equal(m.params[0].value, path + 7);
    assert_true(m.params[0].name < path || m.params[0].name >= path + strlen(path));

    assert_int_equal(find(r, "GET", "/x/1/2/3", &m), 0);
    assert_int_equal(m.nparams, 3);
    assert_param(&m, 0, "a", "1");
    assert_param(&m, 1, "b", "2");
    assert_param(&m, 2, "c", "3");

    /* A param takes exactly one non-empty segment. */
    assert_int_equal(find(r, "GET", "/users/", &m), -404);
    assert_int_equal(find(r, "GET", "/users", &m), -404);
    assert_int_equal(find(r, "GET", "/users/1/2", &m), -404);
    assert_int_equal(find(r, "GET", "/x/1//3", &m), -404);
    /* Bytes are taken as sent: no decoding, any byte but '/'. */
    assert_int_equal(find(r, "GET", "/users/a%2Fb:c*", &m), 0);
    assert_param(&m, 0, "id", "a%2Fb:c*");
    router_free(r);
}

static void test_same_shape_different_names(void **state)
{
    /* Names belong to routes: two methods on one shape keep their own. */
    router *r = router_new();
    assert_int_equal(router_add(r, "GET", "/u/:id", &H1), 0);
    assert_int_equal(router_add(r, "PUT", "/u/:name", &H2), 0);
    router_match m;
    assert_int_equal(find(r, "GET", "/u/7", &m), 0);
    assert_param(&m, 0, "id", "7");
    assert_int_equal(find(r, "PUT", "/u/7", &m), 0);
    assert_ptr_equal(m.handler, &H2);
    assert_param(&m, 0, "name", "7");
    router_free(r);
}

static void test_wildcard(void **state)
{
    router *r = router_new();
    assert_int_equal(router_add(r, "GET", "/static/*path", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/f/:dir/*rest", &H2), 0);
    router_match m;
    assert_int_equal(find(r, "GET", "/static/css/site.css", &m), 0);
    assert_ptr_equal(m.handler, &H1);
    assert_int_equal(m.nparams, 1);
    assert_param(&m, 0, "path", "css/site.css");
    assert_int_equal(find(r, "GET", "/static/a//b/", &m), 0);
    assert_param(&m, 0, "path", "a//b/");
    /* Possibly empty, but the slash before it is part of the pattern. */
    assert_int_equal(find(r, "GET", "/static/", &m), 0);
    assert_param(&m, 0, "path", "");
    assert_int_equal(find(r, "GET", "/static", &m), -404);

    assert_int_equal(find(r, "GET", "/f/d/x/y", &m), 0);
    assert_ptr_equal(m.handler, &H2);
    assert_int_equal(m.nparams, 2);
    assert_param(&m, 0, "dir", "d");
    assert_param(&m, 1, "rest", "x/y");
    router_free(r);

    /* A wildcard at the root takes every path. */
    r = router_new();
    assert_int_equal(router_add(r, "GET", "/*all", &H3), 0);
    assert_int_equal(find(r, "GET", "/", &m), 0);
    assert_param(&m, 0, "all", "");
    assert_int_equal(find(r, "GET", "/a/b/c/", &m), 0);
    assert_param(&m, 0, "all", "a/b/c/");
    router_free(r);
}

static void test_precedence_and_backtracking(void **state)
{
    router *r = router_new();
    assert_int_equal(router_add(r, "GET", "/a/:x/c", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/a/b/d", &H2), 0);
    assert_int_equal(router_add(r, "GET", "/a/b", &H3), 0);
    assert_int_equal(router_add(r, "GET", "/a/*rest", &H4), 0);
    assert_int_equal(router_add(r, "GET", "/a/:x", &H5), 0);
    router_match m;
    /* static beats param beats wildcard */
    assert_ptr_equal(reach(r, "GET", "/a/b"), &H3);
    assert_ptr_equal(reach(r, "GET", "/a/z"), &H5);
    assert_ptr_equal(reach(r, "GET", "/a/b/d"), &H2);
    /* The static branch "b" dead-ends at "c": back up and take :x. */
    assert_int_equal(find(r, "GET", "/a/b/c", &m), 0);
    assert_ptr_equal(m.handler, &H1);
    assert_int_equal(m.nparams, 1);
    assert_param(&m, 0, "x", "b");
    /* Both static and param dead-end: the wildcard catches it, and the
     * param bound on the failed branch is not reported. */
    assert_int_equal(find(r, "GET", "/a/b/e", &m), 0);
    assert_ptr_equal(m.handler, &H4);
    assert_int_equal(m.nparams, 1);
    assert_param(&m, 0, "rest", "b/e");
    assert_ptr_equal(reach(r, "GET", "/a/"), &H4);   /* :x needs a segment */
    router_free(r);

    /* Backtracking across methods: the static node has no GET, so the
     * param route serves it rather than a 405. */
    r = router_new();
    assert_int_equal(router_add(r, "POST", "/item/new", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/item/:id", &H2), 0);
    assert_ptr_equal(reach(r, "GET", "/item/new"), &H2);
    assert_ptr_equal(reach(r, "POST", "/item/new"), &H1);
    assert_int_equal(find(r, "POST", "/item/9", &m), -405);
    router_free(r);
}

static void test_404_405_allow(void **state)
{
    router *r = router_new();
    assert_int_equal(router_add(r, "POST", "/res", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/res", &H2), 0);
    assert_int_equal(router_add(r, "DELETE", "/res/:id", &H3), 0);
    assert_int_equal(router_add(r, "PATCH", "/res/*all", &H4), 0);
    router_match m;
    char out[64];
    assert_int_equal(find(r, "PUT", "/res", &m), -405);
    assert_null(m.handler);
    assert_int_equal(find(r, "get", "/res", &m), -405);      /* case-sensitive */
    assert_int_equal(router_find(r, "", 0, "/res", 4, &m), -405);
    assert_int_equal(find(r, "GET", "/nope", &m), -404);
    assert_string_equal(allow(r, "/res", out, sizeof out), "GET, HEAD, POST");
    /* Union over every route the path reaches, sorted. */
    assert_string_equal(allow(r, "/res/1", out, sizeof out), "DELETE, PATCH");
    assert_int_equal(find(r, "GET", "/res/1", &m), -405);
    assert_string_equal(allow(r, "/res/1/2", out, sizeof out), "PATCH");
    assert_string_equal(allow(r, "/nope", out, sizeof out), "");
    assert_int_equal(router_allow(r, "/nope", 5, out, sizeof out), 0);
    assert_string_equal(allow(r, "", out, sizeof out), "");

    /* Truncation works like snprintf: the needed length comes back. */
    assert_int_equal(router_allow(r, "/res", 4, out, 6), strlen("GET, HEAD, POST"));
    assert_string_equal(out, "GET, ");
    assert_int_equal(router_allow(r, "/res", 4, out, 1), 15);
    assert_string_equal(out, "");
    assert_int_equal(router_allow(r, "/res", 4, NULL, 0), 15);
    router_free(r);
}

static void test_head(void **state)
{
    router *r = router_new();
    assert_int_equal(router_add(r, "GET", "/g", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/both", &H2), 0);
    assert_int_equal(router_add(r, "HEAD", "/both", &H3), 0);
    assert_int_equal(router_add(r, "POST", "/p", &H4), 0);
    char out[64];
    assert_ptr_equal(reach(r, "HEAD", "/g"), &H1);      /* falls back to GET */
    assert_ptr_equal(reach(r, "HEAD", "/both"), &H3);   /* its own route */
    assert_ptr_equal(reach(r, "GET", "/both"), &H2);
    router_match m;
    assert_int_equal(find(r, "HEAD", "/p", &m), -405);
    assert_string_equal(allow(r, "/g", out, sizeof out), "GET, HEAD");
    assert_string_equal(allow(r, "/both", out, sizeof out), "GET, HEAD");
    assert_string_equal(allow(r, "/p", out, sizeof out), "POST");
    router_free(r);

    /* No GET anywhere: HEAD has nothing to fall back to. */
    r = router_new();
    assert_int_equal(router_add(r, "HEAD", "/h", &H1), 0);
    assert_ptr_equal(reach(r, "HEAD", "/h"), &H1);
    assert_int_equal(find(r, "GET", "/h", &m), -405);
    assert_string_equal(allow(r, "/h", out, sizeof out), "HEAD");
    router_free(r);
}

static void test_duplicates(void **state)
{
    router *r = router_new();
    assert_int_equal(router_add(r, "GET", "/a/:id", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/a/:id", &H2), -EEXIST);
    assert_int_equal(router_add(r, "GET", "/a/:other", &H2), -EEXIST);
    assert_int_equal(router_add(r, "POST", "/a/:other", &H2), 0);
    assert_int_equal(router_add(r, "GET", "/s/*x", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/s/*y", &H1), -EEXIST);
    assert_int_equal(router_add(r, "GET", "/", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/", &H1), -EEXIST);
    /* The first route is untouched. */
    assert_ptr_equal(reach(r, "GET", "/a/1"), &H1);
    router_free(r);
}

static void test_bad_patterns(void **state)
{
    router *r = router_new();
    const char *bad[] = {
        "", "a", "a/b", ":x", "/:", "/a/:/b", "/*", "/*x/y", "/*x/", "/a/*x/*y",
        "/:a/:a", "/:a/*a", "/:1/:2/:3/:4/:5/:6/:7/:8/:9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (router_add(r, "GET", bad[i], &H1) != -EINVAL)
            fail_msg("pattern \"%s\" accepted", bad[i]);
    }
    /* Eight params is the limit, not over it. */
    assert_int_equal(router_add(r, "GET", "/:1/:2/:3/:4/:5/:6/:7/*8", &H1), 0);
    router_match m;
    assert_int_equal(find(r, "GET", "/a/b/c/d/e/f/g/h/i", &m), 0);
    assert_int_equal(m.nparams, 8);
    assert_param(&m, 7, "8", "h/i");

    const char *bad_methods[] = { "", "GE T", "GET\r\n", "G:T", "(GET)", "GÉT" };
    for (size_t i = 0; i < sizeof bad_methods / sizeof *bad_methods; i++)
        assert_int_equal(router_add(r, bad_methods[i], "/ok", &H1), -EINVAL);
    assert_int_equal(router_add(r, NULL, "/ok", &H1), -EINVAL);
    assert_int_equal(router_add(r, "GET", NULL, &H1), -EINVAL);
    assert_int_equal(router_add(r, "M-SEARCH", "/ok", &H1), 0);
    assert_ptr_equal(reach(r, "M-SEARCH", "/ok"), &H1);

    /* Too deep a pattern is refused rather than deepening the recursion. */
    char deep[2 * ROUTER_MAX_SEGMENTS + 8] = "";
    for (int i = 0; i <= ROUTER_MAX_SEGMENTS; i++)
        strcat(deep, "/a");
    assert_int_equal(router_add(r, "GET", deep, &H1), -EINVAL);
    deep[2 * ROUTER_MAX_SEGMENTS] = '\0';
    assert_int_equal(router_add(r, "GET", deep, &H1), 0);
    assert_ptr_equal(reach(r, "GET", deep), &H1);
    router_free(r);
}

static void test_too_many_methods(void **state)
{
    router *r = router_new();
    char name[16];
    for (int i = 0; i < ROUTER_MAX_METHODS; i++) {
        snprintf(name, sizeof name, "M%d", i);
        assert_int_equal(router_add(r, name, "/", &H1), 0);
    }
    assert_int_equal(router_add(r, "ONEMORE", "/", &H1), -EINVAL);
    assert_int_equal(router_add(r, "M7", "/x", &H2), 0);    /* known: fine */
    assert_ptr_equal(reach(r, "M63", "/"), &H1);
    router_free(r);
}

static void test_root_trailing_slash_empty_segments(void **state)
{
    router *r = router_new();
    assert_int_equal(router_add(r, "GET", "/", &H1), 0);
    assert_int_equal(router_add(r, "GET", "/a", &H2), 0);
    assert_int_equal(router_add(r, "GET", "/a/", &H3), 0);
    assert_int_equal(router_add(r, "GET", "/b//c", &H4), 0);
    assert_int_equal(router_add(r, "GET", "/p/:x/", &H5), 0);
    router_match m;
    assert_ptr_equal(reach(r, "GET", "/"), &H1);
    assert_ptr_equal(reach(r, "GET", "/a"), &H2);
    assert_ptr_equal(reach(r, "GET", "/a/"), &H3);
    assert_int_equal(find(r, "GET", "//", &m), -404);
    assert_int_equal(find(r, "GET", "/a//", &m), -404);
    assert_ptr_equal(reach(r, "GET", "/b//c"), &H4);
    assert_int_equal(find(r, "GET", "/b/c", &m), -404);
    assert_ptr_equal(reach(r, "GET", "/p/1/"), &H5);
    assert_int_equal(find(r, "GET", "/p/1", &m), -404);
    router_free(r);

    /* Without a root route, "/" is a 404. */
    r = router_new();
    assert_int_equal(router_add(r, "GET", "/a", &H1), 0);
    assert_int_equal(find(r, "GET", "/", &m), -404);
    router_free(r);
}

/* Routes "/r<i>/<kind>/..." of three shapes; every one must be found with
 * the right handler (its index) and params. */
static void route_for(int i, char *pat, size_t cap, char *path, size_t pcap)
{
    switch (i % 3) {
    case 0:
        snprintf(pat, cap, "/r%d/static/%d", i / 3, i);
        snprintf(path, pcap, "/r%d/static/%d", i / 3, i);
        break;
    case 1:
        snprintf(pat, cap, "/r%d/p/:id%d/end", i / 3, i);
        snprintf(path, pcap, "/r%d/p/v%d/end", i / 3, i);
        break;
    default:
        snprintf(pat, cap, "/r%d/w/*rest", i / 3);
        snprintf(path, pcap, "/r%d/w/x/%d", i / 3, i);
        break;
    }
}

static void test_many_routes(void **state)
{
    enum { N = 3000 };
    router *r = router_new();
    char pat[64], path[64];
    for (int i = 0; i < N; i++) {
        route_for(i, pat, sizeof pat, path, sizeof path);
        assert_int_equal(router_add(r, i % 2 ? "GET" : "POST", pat, (void *)(intptr_t)(i + 1)), 0);
    }
    /* A thousand static siblings at one node stay sorted. */
    for (int i = 0; i < 1000; i++) {
        snprintf(pat, sizeof pat, "/flat/%d", (i * 7919) % 1000);
        assert_int_equal(router_add(r, "GET", pat, (void *)(intptr_t)(N + 1 + (i * 7919) % 1000)), 0);
    }
    router_match m;
    for (int i = 0; i < N; i++) {
        route_for(i, pat, sizeof pat, path, sizeof path);
        int rc = find(r, i % 2 ? "GET" : "POST", path, &m);
        if (rc != 0 || m.handler != (void *)(intptr_t)(i + 1))
            fail_msg("route %d (%s) not found: %d", i, path, rc);
        if (i % 3 == 1) {
            char name[16], val[16];
            snprintf(name, sizeof name, "id%d", i);
            snprintf(val, sizeof val, "v%d", i);
            assert_param(&m, 0, name, val);
        }
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(path, sizeof path, "/flat/%d", i);
        assert_ptr_equal(reach(r, "GET", path), (void *)(intptr_t)(N + 1 + i));
    }
    const rnode *flat = static_child(&r->root, (seg){ "flat", 4 });
    assert_non_null(flat);
    assert_int_equal(flat->nstatics, 1000);
    for (uint32_t i = 1; i < flat->nstatics; i++)
        assert_true(seg_cmp(flat->statics[i - 1].seg, flat->statics[i - 1].len,
                            flat->statics[i].seg, flat->statics[i].len) < 0);
    assert_int_equal(find(r, "GET", "/flat/1000", &m), -404);
    router_free(r);
}

/* ---- a naive reference matcher for randomized comparison ----------------- */

enum { REF_ROUTES = 40, REF_SEGS = 5 };

typedef struct ref_route {
    char pattern[64];
    const char *method;
    int  kinds[REF_SEGS + 1];   /* per segment: 0 static, 1 param, 2 wildcard */
    int  nsegs;
    bool added;
} ref_route;

/* Splits "/x/y" into segment pointers and lengths; returns the count. */
static int split(const char *s, const char **segs, size_t *lens, int max)
{
    int n = 0;
    while (*s == '/' && n < max) {
        const char *b = s + 1, *e = strchr(b, '/');
        if (!e)
            e = b + strlen(b);
        segs[n] = b;
        lens[n++] = (size_t)(e - b);
        s = e;
    }
    return n;
}

/* Does pattern rt match path? Fills values like router_find would. */
static bool ref_match(const ref_route *rt, const char *path, router_param *vals,
                      uint32_t *nvals)
{
    const char *ps[16], *qs[16];
    size_t pl[16], ql[16];
    int np = split(rt->pattern, ps, pl, 16), nq = split(path, qs, ql, 16);
    *nvals = 0;
    for (int i = 0; i < np; i++) {
        if (rt->kinds[i] == 2) {
            if (i >= nq)
                return false;
            vals[*nvals].value = qs[i];
            vals[(*nvals)++].value_len = (uint32_t)strlen(qs[i]);
            return true;
        }
        if (i >= nq)
            return false;
        if (rt->kinds[i] == 1) {
            if (ql[i] == 0)
                return false;
            vals[*nvals].value = qs[i];
            vals[(*nvals)++].value_len = (uint32_t)ql[i];
        } else if (pl[i] != ql[i] || memcmp(ps[i], qs[i], pl[i]) != 0) {
            return false;
        }
    }
    return np == nq;
}

/* Precedence: compare kind sequences segment by segment. */
static int ref_cmp(const ref_route *a, const ref_route *b)
{
    for (int i = 0; i < a->nsegs && i < b->nsegs; i++)
        if (a->kinds[i] != b->kinds[i])
            return a->kinds[i] - b->kinds[i];
    return 0;
}

static bool same_shape(const ref_route *a, const ref_route *b)
{
    const char *as[16], *bs[16];
    size_t al[16], bl[16];
    int na = split(a->pattern, as, al, 16), nb = split(b->pattern, bs, bl, 16);
    if (na != nb)
        return false;
    for (int i = 0; i < na; i++) {
        if (a->kinds[i] != b->kinds[i])
            return false;
        if (a->kinds[i] == 0 && (al[i] != bl[i] || memcmp(as[i], bs[i], al[i])))
            return false;
    }
    return true;
}

/* The reference answer: among shapes matching the path, in precedence
 * order, the first with the method (HEAD falling back to GET per shape). */
static int ref_find(const ref_route *rs, int n, const char *method, const char *path,
                    const ref_route **out)
{
    const ref_route *best = NULL;
    bool any = false;
    router_param vals[ROUTER_MAX_PARAMS];
    uint32_t nv;
    for (int i = 0; i < n; i++) {
        if (!rs[i].added || !ref_match(&rs[i], path, vals, &nv))
            continue;
        any = true;
        bool ok = strcmp(rs[i].method, method) == 0;
        if (!ok && strcmp(method, "HEAD") == 0 && strcmp(rs[i].method, "GET") == 0) {
            ok = true;      /* unless this shape has its own HEAD */
            for (int j = 0; j < n; j++)
                if (rs[j].added && strcmp(rs[j].method, "HEAD") == 0 && same_shape(&rs[i], &rs[j]))
                    ok = false;
        }
        if (ok && (!best || ref_cmp(&rs[i], best) < 0))
            best = &rs[i];
    }
    *out = best;
    return best ? 0 : any ? -405 : -404;
}

static void random_segment(uint32_t *seed, char *out, size_t cap, int *kind, bool last)
{
    static const char *pool[] = { "a", "b", "", ":p", ":q", "*w" };
    *seed = *seed * 1103515245 + 12345;
    const char *s = pool[(*seed >> 16) % (last ? 6 : 5)];
    snprintf(out, cap, "/%s", s);
    *kind = s[0] == ':' ? 1 : s[0] == '*' ? 2 : 0;
}

static void test_random_against_reference(void **state)
{
    static const char *methods[] = { "GET", "POST", "HEAD" };
    static const char *path_pool[] = { "a", "b", "c", "" };
    uint32_t seed = 12345;
    for (int round = 0; round < 300; round++) {
        ref_route rs[REF_ROUTES];
        router *r = router_new();
        for (int i = 0; i < REF_ROUTES; i++) {
            ref_route *rt = &rs[i];
            seed = seed * 1103515245 + 12345;
            rt->nsegs = 1 + (int)((seed >> 16) % REF_SEGS);
            rt->pattern[0] = '\0';
            for (int k = 0; k < rt->nsegs; k++) {
                char sg[8];
                random_segment(&seed, sg, sizeof sg, &rt->kinds[k], k == rt->nsegs - 1);
                strcat(rt->pattern, sg);
            }
            /* Distinct names per pattern: rename params p0, p1, ... */
            char renamed[64] = "";
            const char *segs[16];
            size_t lens[16];
            int n = split(rt->pattern, segs, lens, 16);
            for (int k = 0; k < n; k++) {
                char sg[16];
                if (rt->kinds[k] == 0)
                    snprintf(sg, sizeof sg, "/%.*s", (int)lens[k], segs[k]);
                else
                    snprintf(sg, sizeof sg, "/%c%d", rt->kinds[k] == 1 ? ':' : '*', k);
                strcat(renamed, sg);
            }
            strcpy(rt->pattern, renamed);
            seed = seed * 1103515245 + 12345;
            rt->method = methods[(seed >> 16) % 3];
            int rc = router_add(r, rt->method, rt->pattern, rt);
            bool dup = false;
            for (int j = 0; j < i; j++)
                dup |= rs[j].added && rs[j].method == rt->method && same_shape(&rs[j], rt);
            assert_int_equal(rc, dup ? -EEXIST : 0);
            rt->added = rc == 0;
        }
        for (int q = 0; q < 100; q++) {
            char path[64] = "";
            seed = seed * 1103515245 + 12345;
            int n = 1 + (int)((seed >> 16) % (REF_SEGS + 1));
            for (int k = 0; k < n; k++) {
                seed = seed * 1103515245 + 12345;
                strcat(path, "/");
                strcat(path, path_pool[(seed >> 16) % 4]);
            }
            const char *method = methods[q % 3];
            const ref_route *want;
            int want_rc = ref_find(rs, REF_ROUTES, method, path, &want);
            router_match m;
            int rc = find(r, method, path, &m);
            if (rc != want_rc || (rc == 0 && m.handler != want))
                fail_msg("%s %s: got %d %s, want %d %s", method, path, rc,
                         rc == 0 ? ((ref_route *)m.handler)->pattern : "-",
                         want_rc, want ? want->pattern : "-");
            /* Allow lists, sorted, the methods of every matching shape
             * (HEAD too where GET is). */
            bool has[3] = { false, false, false };
            for (int i = 0; i < REF_ROUTES; i++) {
                router_param vals[ROUTER_MAX_PARAMS];
                uint32_t nv;
                if (rs[i].added && ref_match(&rs[i], path, vals, &nv))
                    for (int k = 0; k < 3; k++)
                        has[k] |= rs[i].method == methods[k];
            }
            has[2] |= has[0];
            char want_allow[32] = "", got_allow[32];
            const char *sorted[] = { "GET", "HEAD", "POST" };
            bool sorted_has[] = { has[0], has[2], has[1] };
            for (int k = 0; k < 3; k++) {
                if (!sorted_has[k])
                    continue;
                if (want_allow[0])
                    strcat(want_allow, ", ");
                strcat(want_allow, sorted[k]);
            }
            assert_string_equal(allow(r, path, got_allow, sizeof got_allow), want_allow);
            if (rc == 0) {
                router_param vals[ROUTER_MAX_PARAMS];
                uint32_t nv;
                assert_true(ref_match(want, path, vals, &nv));
                assert_int_equal(m.nparams, nv);
                for (uint32_t k = 0; k < nv; k++) {
                    assert_ptr_equal(m.params[k].value, vals[k].value);
                    assert_int_equal(m.params[k].value_len, vals[k].value_len);
                }
            }
        }
        router_free(r);
    }
}

/* Every allocation router_add makes may fail: each failure must return
 * -ENOMEM, leak nothing (ASan checks at exit), and leave the router working
 * with the routes added before. */
static void test_out_of_memory(void **state)
{
    const char *pats[] = { "/", "/a/:x/c", "/a/b/d", "/s/*rest", "/a/b" };
    const char *methods[] = { "GET", "POST", "GET", "PUT", "GET" };
    int failures = 0;
    for (long k = 0;; k++) {
        router *r = router_new();
        assert_non_null(r);
        alloc_fail_in = k;
        int rc = 0;
        size_t added = 0;
        for (; added < 5; added++) {
            rc = router_add(r, methods[added], pats[added], &H1);
            if (rc)
                break;
        }
        alloc_fail_in = -1;
        if (rc == 0) {
            router_free(r);
            break;
        }
        assert_int_equal(rc, -ENOMEM);
        failures++;
        /* The failed add can be retried; earlier routes still match. */
        for (; added < 5; added++)
            assert_int_equal(router_add(r, methods[added], pats[added], &H1), 0);
        for (size_t i = 0; i < 5; i++)
            assert_int_equal(router_add(r, methods[i], pats[i], &H2), -EEXIST);
        assert_ptr_equal(reach(r, "POST", "/a/b/c"), &H1);
        assert_ptr_equal(reach(r, "PUT", "/s/x/y"), &H1);
        router_free(r);
    }
    assert_true(failures > 10);
    alloc_fail_in = 0;
    assert_null(router_new());
    alloc_fail_in = -1;
}

/* Informal speed check: a 3-segment lookup among ~20 routes. The bound is
 * generous (a noisy machine and sanitizer builds must pass); the measured
 * figure is printed for the record. */
static void test_lookup_speed(void **state)
{
    router *r = router_new();
    const char *pats[] = {
        "/", "/plaintext", "/json", "/db", "/queries", "/fortunes", "/updates",
        "/cached-queries", "/users", "/users/:id", "/users/:id/posts",
        "/users/:id/posts/:post", "/posts", "/posts/:id", "/posts/:id/comments",
        "/static/*path", "/api/v1/status", "/api/v1/items", "/api/v1/items/:id",
        "/api/v2/items/:id",
    };
    for (size_t i = 0; i < sizeof pats / sizeof *pats; i++)
        assert_int_equal(router_add(r, "GET", pats[i], &H1), 0);
    router_match m;
    const char *path = "/users/12345/posts";
    size_t plen = strlen(path);
    enum { ITER = 2000000 };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int bad = 0;
    for (int i = 0; i < ITER; i++) {
        __asm__ volatile("" : : "r"(path) : "memory");
        bad += router_find(r, "GET", 3, path, plen, &m) != 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / ITER;
    print_message("router_find 3 segments, 20 routes: %.1f ns/lookup\n", ns);
    assert_int_equal(bad, 0);
    assert_true(ns < 5000);
    router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_same_shape_different_names),
        cmocka_unit_test(test_wildcard),
        cmocka_unit_test(test_precedence_and_backtracking),
        cmocka_unit_test(test_404_405_allow),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_bad_patterns),
        cmocka_unit_test(test_too_many_methods),
        cmocka_unit_test(test_root_trailing_slash_empty_segments),
        cmocka_unit_test(test_many_routes),
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_lookup_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
