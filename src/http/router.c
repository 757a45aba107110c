/* router — a tree of path segments mapping (method, path) to a handler.
 *
 * A path is split at '/' into segments: "/" is one empty segment, "/a/" is
 * "a" then "", and "//x" is "", "x". Each tree node stands for a prefix of
 * segments and holds
 *
 *   statics   children for literal segments, sorted by bytes (memcmp, then
 *             length) so lookup binary-searches them;
 *   param     the ":name" child, which takes any one non-empty segment;
 *   wild      the "*name" child, which takes the rest of the path, slashes
 *             included, possibly empty; it always ends a pattern;
 *   routes    the (method, handler) pairs of patterns ending here.
 *
 * Names of params belong to routes, not nodes: "/u/:id" and "/u/:name"
 * share a node (and so are duplicates for one method), and each route keeps
 * its own copy of its pattern for the names to point into.
 *
 * Methods are interned: the router keeps each distinct method string once
 * and a node's `methods` mask says which of them it has routes for. That
 * makes the 405 test and the Allow list a union of masks, and keeps string
 * compares out of the tree walk (the request's method is resolved once).
 *
 * Lookup is a depth-first walk in precedence order — static, then param,
 * then wildcard — that backtracks when a branch dead-ends, and stops at the
 * first node with a route for the method. It never allocates; its recursion
 * is bounded by the depth of the tree (ROUTER_MAX_SEGMENTS). The router is
 * built at start-up and read-only afterwards, so lookups need no locking.
 */
#include "http/router.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Tests replace the allocator to exercise -ENOMEM. */
#ifndef router_realloc
#define router_realloc realloc
#endif

/* Distinct methods one router knows: one bit each in rnode.methods. */
#define ROUTER_MAX_METHODS 64
/* Segments in one pattern. Bounds the tree's depth, hence the recursion of
 * lookup and free; real routes are a handful of segments deep. */
#define ROUTER_MAX_SEGMENTS 128

typedef struct rnode rnode;

/* A static child: the literal segment and the node it leads to. */
typedef struct redge {
    char     *seg;          /* owned, NUL-terminated copy */
    uint32_t  len;          /* bytes in seg, without the NUL */
    rnode    *node;         /* owned */
} redge;

/* A route that ends at a node. */
typedef struct rroute {
    void       *handler;
    char       *pattern;                    /* owned copy; names point in */
    const char *names[ROUTER_MAX_PARAMS];   /* param names, in path order */
    uint32_t    name_lens[ROUTER_MAX_PARAMS];
    uint32_t    nparams;
    uint32_t    method;                     /* index into router.methods */
} rroute;

struct rnode {
    redge    *statics;      /* sorted by seg_cmp; nstatics used, cap_statics allocated */
    uint32_t  nstatics, cap_statics;
    rnode    *param;        /* ":name" child or NULL; owned */
    rnode    *wild;         /* "*name" child or NULL; owned; has no children */
    rroute   *routes;       /* nroutes entries, one per method, unordered */
    uint32_t  nroutes;
    uint64_t  methods;      /* bit i set: routes has one for method i */
};

struct router {
    rnode     root;                             /* stands for "" */
    char     *methods[ROUTER_MAX_METHODS];      /* owned, interned names */
    uint32_t  method_lens[ROUTER_MAX_METHODS];
    uint32_t  nmethods;
    int       get;          /* index of "GET" in methods, or -1 */
};

/* ---- segments ------------------------------------------------------------- */

/* One segment of a path or pattern: [p, p + len). */
typedef struct seg {
    const char *p;
    uint32_t    len;
} seg;

/* Splits off the segment after the '/' at *cur and moves *cur to the '/'
 * that ends it, or to end. Requires *cur < end and **cur == '/'. */
static seg next_segment(const char **cur, const char *end)
{
    const char *s = *cur + 1;
    const char *e = s < end ? memchr(s, '/', (size_t)(end - s)) : NULL;
    if (!e)
        e = end;
    *cur = e;
    return (seg){ s, (uint32_t)(e - s) };
}

static int seg_cmp(const char *a, uint32_t alen, const char *b, uint32_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return (alen > blen) - (alen < blen);
}

/* Index of the static child for s, or of where it would be inserted. */
static uint32_t static_slot(const rnode *n, seg s, bool *found)
{
    uint32_t lo = 0, hi = n->nstatics;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = seg_cmp(n->statics[mid].seg, n->statics[mid].len, s.p, s.len);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static const rnode *static_child(const rnode *n, seg s)
{
    bool found;
    uint32_t i = static_slot(n, s, &found);
    return found ? n->statics[i].node : NULL;
}

/* ---- validation ------------------------------------------------------------ */

/* RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" /
 * "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

/* Checks a pattern's shape: leading '/', named params with distinct names,
 * '*' only last, at most ROUTER_MAX_PARAMS params and ROUTER_MAX_SEGMENTS
 * segments. Returns 0 or -EINVAL. */
static int check_pattern(const char *pat, size_t len)
{
    if (len == 0 || pat[0] != '/' || len > UINT32_MAX)
        return -EINVAL;
    seg names[ROUTER_MAX_PARAMS];
    uint32_t nparams = 0, nsegs = 0;
    const char *cur = pat, *end = pat + len;
    while (cur < end) {
        seg s = next_segment(&cur, end);
        if (++nsegs > ROUTER_MAX_SEGMENTS)
            return -EINVAL;
        if (s.len == 0 || (s.p[0] != ':' && s.p[0] != '*'))
            continue;
        if (s.len == 1 || nparams == ROUTER_MAX_PARAMS)
            return -EINVAL;         /* no name, or one param too many */
        if (s.p[0] == '*' && cur != end)
            return -EINVAL;         /* a wildcard must be last */
        seg name = { s.p + 1, s.len - 1 };
        for (uint32_t i = 0; i < nparams; i++)
            if (seg_cmp(names[i].p, names[i].len, name.p, name.len) == 0)
                return -EINVAL;
        names[nparams++] = name;
    }
    return 0;
}

/* ---- building -------------------------------------------------------------- */

static void *zalloc(size_t n)
{
    void *p = router_realloc(NULL, n);
    if (p)
        memset(p, 0, n);
    return p;
}

/* Index of method in r's interned methods, or -1. */
static int method_index(const router *r, const char *m, size_t len)
{
    for (uint32_t i = 0; i < r->nmethods; i++)
        if (r->method_lens[i] == len && memcmp(r->methods[i], m, len) == 0)
            return (int)i;
    return -1;
}

/* Interns method; returns its index, -EINVAL when the table is full, or
 * -ENOMEM. */
static int method_intern(router *r, const char *m)
{
    size_t len = strlen(m);
    int i = method_index(r, m, len);
    if (i >= 0)
        return i;
    if (r->nmethods == ROUTER_MAX_METHODS)
        return -EINVAL;
    char *copy = router_realloc(NULL, len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, m, len + 1);
    i = (int)r->nmethods++;
    r->methods[i] = copy;
    r->method_lens[i] = (uint32_t)len;
    if (len == 3 && memcmp(m, "GET", 3) == 0)
        r->get = i;
    return i;
}

/* The static child of n for s, created (in sorted position) if missing. */
static rnode *static_child_make(rnode *n, seg s)
{
    bool found;
    uint32_t i = static_slot(n, s, &found);
    if (found)
        return n->statics[i].node;
    if (n->nstatics == n->cap_statics) {
        uint32_t cap = n->cap_statics ? n->cap_statics * 2 : 4;
        redge *e = router_realloc(n->statics, cap * sizeof *e);
        if (!e)
            return NULL;
        n->statics = e;
        n->cap_statics = cap;
    }
    char *copy = router_realloc(NULL, (size_t)s.len + 1);
    rnode *child = zalloc(sizeof *child);
    if (!copy || !child) {
        free(copy);
        free(child);
        return NULL;
    }
    memcpy(copy, s.p, s.len);
    copy[s.len] = '\0';
    memmove(n->statics + i + 1, n->statics + i, (n->nstatics - i) * sizeof *n->statics);
    n->statics[i] = (redge){ copy, s.len, child };
    n->nstatics++;
    return child;
}

static rnode *slot_make(rnode **slot)
{
    if (!*slot)
        *slot = zalloc(sizeof **slot);
    return *slot;
}

/* The child of n for pattern segment s, created if missing; NULL when out
 * of memory. Nodes created before a failure stay in the tree: with no
 * routes they match nothing, and router_free frees them. */
static rnode *child_make(rnode *n, seg s)
{
    if (s.len > 0 && s.p[0] == ':')
        return slot_make(&n->param);
    if (s.len > 0 && s.p[0] == '*')
        return slot_make(&n->wild);
    return static_child_make(n, s);
}

/* Fills a route's pattern copy and param names. Returns 0 or -ENOMEM. */
static int route_init(rroute *rt, const char *pattern, size_t len)
{
    *rt = (rroute){ 0 };
    rt->pattern = router_realloc(NULL, len + 1);
    if (!rt->pattern)
        return -ENOMEM;
    memcpy(rt->pattern, pattern, len + 1);
    const char *cur = rt->pattern, *end = rt->pattern + len;
    while (cur < end) {
        seg s = next_segment(&cur, end);
        if (s.len > 1 && (s.p[0] == ':' || s.p[0] == '*')) {
            rt->names[rt->nparams] = s.p + 1;
            rt->name_lens[rt->nparams] = s.len - 1;
            rt->nparams++;
        }
    }
    return 0;
}

/* Adds a route for method index mi at n. -EEXIST if n has one already. */
static int node_add_route(rnode *n, uint32_t mi, const char *pattern,
                          size_t len, void *handler)
{
    if (n->methods & ((uint64_t)1 << mi))
        return -EEXIST;
    rroute *routes = router_realloc(n->routes, (n->nroutes + 1) * sizeof *routes);
    if (!routes)
        return -ENOMEM;
    n->routes = routes;
    rroute *rt = &routes[n->nroutes];
    if (route_init(rt, pattern, len) < 0)
        return -ENOMEM;
    rt->handler = handler;
    rt->method = mi;
    n->nroutes++;
    n->methods |= (uint64_t)1 << mi;
    return 0;
}

router *router_new(void)
{
    router *r = zalloc(sizeof *r);
    if (r)
        r->get = -1;
    return r;
}

int router_add(router *r, const char *method, const char *pattern, void *handler)
{
    if (!method || !pattern || !is_token(method))
        return -EINVAL;
    size_t len = strlen(pattern);
    int rc = check_pattern(pattern, len);
    if (rc < 0)
        return rc;
    int mi = method_intern(r, method);
    if (mi < 0)
        return mi;
    rnode *n = &r->root;
    const char *cur = pattern, *end = pattern + len;
    while (cur < end) {
        n = child_make(n, next_segment(&cur, end));
        if (!n)
            return -ENOMEM;
    }
    return node_add_route(n, (uint32_t)mi, pattern, len, handler);
}

static void node_fini(rnode *n)
{
    for (uint32_t i = 0; i < n->nstatics; i++) {
        node_fini(n->statics[i].node);
        free(n->statics[i].node);
        free(n->statics[i].seg);
    }
    free(n->statics);
    if (n->param)
        node_fini(n->param);
    free(n->param);
    if (n->wild)
        node_fini(n->wild);
    free(n->wild);
    for (uint32_t i = 0; i < n->nroutes; i++)
        free(n->routes[i].pattern);
    free(n->routes);
}

void router_free(router *r)
{
    if (!r)
        return;
    node_fini(&r->root);
    for (uint32_t i = 0; i < r->nmethods; i++)
        free(r->methods[i]);
    free(r);
}

/* ---- lookup ------------------------------------------------------------------ */

/* State of one walk. With match == NULL it only collects `seen` (Allow). */
typedef struct walk {
    const char   *end;          /* end of the path */
    int           method;       /* method index wanted, or -1 */
    int           fallback;     /* also accepted (GET for HEAD), or -1 */
    uint64_t      seen;         /* methods of every node the path reached */
    router_param *params;       /* values so far, in path order */
    router_match *match;        /* filled on success, or NULL */
} walk;

/* The path ended at n. Returns true if n has a route for the method, and
 * then fills the match; otherwise notes n's methods for a 405. */
static bool walk_end(walk *w, const rnode *n, uint32_t np)
{
    if (!n->methods)
        return false;
    w->seen |= n->methods;
    int mi = -1;
    if (w->method >= 0 && (n->methods >> w->method & 1))
        mi = w->method;
    else if (w->fallback >= 0 && (n->methods >> w->fallback & 1))
        mi = w->fallback;
    if (mi < 0 || !w->match)
        return false;
    const rroute *rt = n->routes;
    while (rt->method != (uint32_t)mi)
        rt++;                       /* present: the mask said so */
    assert(rt->nparams == np);
    for (uint32_t i = 0; i < np; i++) {
        w->params[i].name = rt->names[i];
        w->params[i].name_len = rt->name_lens[i];
    }
    w->match->handler = rt->handler;
    w->match->nparams = np;
    return true;
}

/* n has matched the path up to p, which is the end or a '/'; np params are
 * bound. Tries static, then param, then wildcard for the next segment. */
static bool walk_node(walk *w, const rnode *n, const char *p, uint32_t np)
{
    if (p == w->end)
        return walk_end(w, n, np);
    const char *cur = p;
    seg s = next_segment(&cur, w->end);
    if (n->nstatics) {
        const rnode *c = static_child(n, s);
        if (c && walk_node(w, c, cur, np))
            return true;
    }
    if (n->param && s.len > 0) {
        assert(np < ROUTER_MAX_PARAMS);
        w->params[np].value = s.p;
        w->params[np].value_len = s.len;
        if (walk_node(w, n->param, cur, np + 1))
            return true;
    }
    if (n->wild) {
        assert(np < ROUTER_MAX_PARAMS);
        w->params[np].value = s.p;
        w->params[np].value_len = (uint32_t)(w->end - s.p);
        return walk_end(w, n->wild, np + 1);
    }
    return false;
}

/* Paths longer than 4 GiB cannot be reported in router_param's 32-bit
 * lengths; they match nothing. */
static bool path_ok(const char *path, size_t len)
{
    return len > 0 && len <= UINT32_MAX && path[0] == '/';
}

int router_find(const router *r, const char *method, size_t method_len,
                const char *path, size_t path_len, router_match *m)
{
    if (!path_ok(path, path_len))
        return -404;
    walk w = {
        .end = path + path_len,
        .method = method_index(r, method, method_len),
        .fallback = -1,
        .params = m->params,
        .match = m,
    };
    if (method_len == 4 && memcmp(method, "HEAD", 4) == 0)
        w.fallback = r->get;
    if (walk_node(&w, &r->root, path, 0))
        return 0;
    m->handler = NULL;
    m->nparams = 0;
    return w.seen ? -405 : -404;
}

/* Appends s to out (cap bytes) at offset *len, as snprintf would. */
static void append(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    if (*len < cap) {
        size_t room = cap - *len;
        memcpy(out + *len, s, n < room ? n : room);
    }
    *len += n;
}

/* Fills names with the methods in `seen`, plus HEAD where GET is, sorted
 * (strcmp) so the Allow text is stable. Returns the count. */
static uint32_t allow_names(const router *r, uint64_t seen, const char **names)
{
    uint32_t n = 0;
    bool head = false;
    for (uint32_t i = 0; i < r->nmethods; i++) {
        if (seen >> i & 1) {
            names[n++] = r->methods[i];
            head |= strcmp(r->methods[i], "HEAD") == 0;
        }
    }
    if (r->get >= 0 && (seen >> r->get & 1) && !head)
        names[n++] = "HEAD";
    for (uint32_t i = 1; i < n; i++) {      /* insertion sort: a handful */
        const char *x = names[i];
        uint32_t j = i;
        for (; j > 0 && strcmp(names[j - 1], x) > 0; j--)
            names[j] = names[j - 1];
        names[j] = x;
    }
    return n;
}

size_t router_allow(const router *r, const char *path, size_t path_len,
                    char *out, size_t cap)
{
    router_param scratch[ROUTER_MAX_PARAMS];
    walk w = { .end = path + path_len, .method = -1, .fallback = -1,
               .params = scratch };
    if (path_ok(path, path_len))
        walk_node(&w, &r->root, path, 0);

    const char *names[ROUTER_MAX_METHODS + 1];
    uint32_t n = allow_names(r, w.seen, names);
    size_t len = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            append(out, cap, &len, ", ", 2);
        append(out, cap, &len, names[i], strlen(names[i]));
    }
    if (cap)
        out[len < cap ? len : cap - 1] = '\0';
    return len;
}
