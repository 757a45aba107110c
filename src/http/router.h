/* router — maps (method, path) to a handler, with :param and *wildcard.
 *
 * Routes live in a tree of path segments: each node has its static children
 * (sorted, binary-searched), at most one ":param" child and at most one
 * "*rest" child, and a small list of (method, handler) pairs. Lookup walks
 * the path once, preferring static over param over wildcard, backtracking
 * only when a more specific branch dead-ends. Built at start-up, read-only
 * while serving (so workers share it after fork without copying).
 *
 * Paths are matched as sent (no percent-decoding; a router does not guess).
 * A GET route also matches HEAD unless a HEAD route exists.
 */
#ifndef MYR_ROUTER_H
#define MYR_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#define ROUTER_MAX_PARAMS 8

typedef struct router router;

typedef struct router_param {
    const char *name;  uint32_t name_len;   /* points into the router */
    const char *value; uint32_t value_len;  /* points into the looked-up path */
} router_param;

typedef struct router_match {
    void        *handler;                   /* as given to router_add */
    router_param params[ROUTER_MAX_PARAMS];
    uint32_t     nparams;
} router_match;

router *router_new(void);           /* NULL when out of memory */
void    router_free(router *r);

/* Adds a route. method is a token ("GET"); pattern starts with '/', its
 * segments are literal, ":name", or a final "*name". Returns 0, -EINVAL for
 * a bad method or pattern (empty or duplicate param name, '*' not last, more
 * than ROUTER_MAX_PARAMS params), -EEXIST for a duplicate (method, pattern)
 * — two patterns differing only in param names count as duplicates — or
 * -ENOMEM. */
int router_add(router *r, const char *method, const char *pattern, void *handler);

/* Looks up a request. Returns 0 with m filled, -404 if no route matches the
 * path, -405 if routes match the path but none for this method. */
int router_find(const router *r, const char *method, size_t method_len,
                const char *path, size_t path_len, router_match *m);

/* Writes the Allow header value for path ("GET, HEAD, POST") into out,
 * NUL-terminated, truncated to cap. Returns the length it needed. */
size_t router_allow(const router *r, const char *path, size_t path_len,
                    char *out, size_t cap);

#endif
