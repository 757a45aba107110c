/* backend — see backend.h. Parsing and resolving the configured list,
 * applying it (start-up and reload), picking through the policy, health
 * state (active results, passive ejection, slow start), draining, and the
 * per-backend pool of idle connections.
 */
#include "proxy/backend.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proxy/balancer.h"
#include "proxy/bconn.h"
#include "proxy/health.h"
#include "proxy/shared.h"

#define NS_PER_MS 1000000ull

uint32_t lb_backend_active(const backend *b)
{
    return b->active;
}

const char *lb_backend_name(const backend *b)
{
    return b->name;
}

/* ---- parsing and resolving -------------------------------------------------------- */

/* "weight=W" options after the address. */
static int parse_options(const char *p, const char *end, uint32_t *weight, char *err,
                         size_t errlen)
{
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        char opt[64];
        size_t n = (size_t)(e - p);
        if (n >= sizeof(opt))
            n = sizeof(opt) - 1;
        memcpy(opt, p, n);
        opt[n] = '\0';
        char *num_end;
        unsigned long w;
        if (strncmp(opt, "weight=", 7) != 0 || !opt[7] ||
            (w = strtoul(opt + 7, &num_end, 10), *num_end) || w < 1 ||
            w > BACKEND_WEIGHT_MAX) {
            snprintf(err, errlen, "invalid backend option '%s' (expected weight=1..%d)", opt,
                     BACKEND_WEIGHT_MAX);
            return -EINVAL;
        }
        *weight = (uint32_t)w;
        p = comma ? comma + 1 : end;
    }
    return 0;
}

int backend_parse(const char *spec, size_t len, char *host, size_t hostcap, int *port,
                  uint32_t *weight, char *err, size_t errlen)
{
    const char *end = spec + len, *comma = memchr(spec, ',', len);
    const char *addr_end = comma ? comma : end;
    const char *h = spec, *h_end, *colon;
    if (*h == '[') {   /* [v6]:port */
        h++;
        h_end = memchr(h, ']', (size_t)(addr_end - h));
        colon = h_end ? h_end + 1 : NULL;
        if (!h_end || colon >= addr_end || *colon != ':')
            colon = NULL;
    } else {
        colon = memrchr(spec, ':', (size_t)(addr_end - spec));
        h_end = colon;
    }
    if (!colon || h_end == h || (size_t)(h_end - h) >= hostcap) {
        snprintf(err, errlen, "invalid backend '%.*s' (expected HOST:PORT[,weight=W])",
                 (int)len, spec);
        return -EINVAL;
    }
    memcpy(host, h, (size_t)(h_end - h));
    host[h_end - h] = '\0';
    long p = 0;
    const char *d = colon + 1;
    for (; d < addr_end && *d >= '0' && *d <= '9' && p <= 65535; d++)
        p = p * 10 + (*d - '0');
    if (d != addr_end || d == colon + 1 || p < 1 || p > 65535) {
        snprintf(err, errlen, "invalid port in backend '%.*s'", (int)len, spec);
        return -EINVAL;
    }
    *port = (int)p;
    *weight = 1;
    return comma ? parse_options(comma + 1, end, weight, err, errlen) : 0;
}

/* One parsed, resolved entry of the configured list. */
typedef struct spec {
    char     name[BACKEND_NAME_MAX];
    uint32_t weight;
    struct sockaddr_storage addr;
    socklen_t addrlen;
} spec;

static int resolve(const char *host, int port, spec *sp, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "backend %s: cannot resolve '%s': %s", sp->name, host,
                 gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(&sp->addr, res->ai_addr, res->ai_addrlen);
    sp->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* Parses and resolves the whole list. Returns the count or -EINVAL. */
static int parse_all(const config *cfg, spec **out, char *err, size_t errlen)
{
    size_t cap = 8, n = 0, len;
    spec *v = malloc(cap * sizeof(spec));
    const char *cur = NULL, *item;
    while (v && (item = config_list_next(cfg->backends, &cur, &len)) != NULL) {
        if (n == cap) {
            spec *nv = realloc(v, (cap *= 2) * sizeof(spec));
            if (!nv)
                break;
            v = nv;
        }
        spec *sp = &v[n];
        char host[BACKEND_NAME_MAX];
        int port;
        if (backend_parse(item, len, host, sizeof(host), &port, &sp->weight, err, errlen))
            goto fail;
        const char *comma = memchr(item, ',', len);
        size_t nlen = comma ? (size_t)(comma - item) : len;
        if (nlen >= sizeof(sp->name)) {
            snprintf(err, errlen, "backend name too long: '%.40s...'", item);
            goto fail;
        }
        snprintf(sp->name, sizeof(sp->name), "%.*s", (int)nlen, item);
        for (size_t i = 0; i < n; i++) {
            if (strcmp(v[i].name, sp->name) == 0) {
                snprintf(err, errlen, "backend %s listed twice", sp->name);
                goto fail;
            }
        }
        if (resolve(host, port, sp, err, errlen))
            goto fail;
        n++;
    }
    if (!v || item) {
        snprintf(err, errlen, "out of memory reading the backend list");
        goto fail;
    }
    if (n == 0) {
        snprintf(err, errlen, "no backend: give --backend HOST:PORT (repeatable)");
        goto fail;
    }
    *out = v;
    return (int)n;
fail:
    free(v);
    return -EINVAL;
}

int backend_list_check(const config *cfg, char *err, size_t errlen)
{
    spec *specs;
    int n = parse_all(cfg, &specs, err, errlen);
    if (n < 0)
        return n;
    free(specs);
    return 0;
}

/* ---- the set ---------------------------------------------------------------------------- */

backend *backend_find(balancer *bal, const char *name, size_t len)
{
    for (uint32_t i = 0; i < bal->nbackends; i++)
        if (strlen(bal->backends[i]->name) == len && memcmp(bal->backends[i]->name, name, len) == 0)
            return bal->backends[i];
    return NULL;
}

static void backend_free(backend *b)
{
    health_stop(b);
    loop_timer_stop(b->bal->loop, &b->eject_timer);
    free(b);
}

/* Closes the idle pool (draining, removal, shutdown). */
static void pool_close_all(backend *b)
{
    while (b->idle) {
        bool last = b->removed && b->nconns == 1;   /* then closing frees b */
        bconn_close(b->idle);   /* unlinks itself */
        if (last)
            return;
    }
}

static void retire(balancer *bal, backend *b)
{
    b->removed = true;
    b->draining = true;
    health_stop(b);
    loop_timer_stop(bal->loop, &b->eject_timer);
    log_info("backend %s removed from the configuration (%u requests in flight)", b->name,
             b->active);
    if (b->nconns == 0) {
        backend_free(b);
        return;
    }
    b->next_retired = bal->retired;
    bal->retired = b;
    pool_close_all(b);   /* may free b through backend_conn_closed: last */
}

static backend *backend_new(balancer *bal, const spec *sp, bool slow)
{
    backend *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    memcpy(b->name, sp->name, sizeof(b->name));
    b->bal = bal;
    b->up = true;
    b->up_since = slow ? loop_now(bal->loop) : 0;
    b->sidx = bal->shared ? shared_name_index(bal->shared, b->name) : -1;
    b->draining = bal->shared && shared_draining(bal->shared, b->sidx);
    return b;
}

/* The lb view with configured weights (for build). */
int backend_policy_build(balancer *bal)
{
    for (uint32_t i = 0; i < bal->nbackends; i++)
        bal->weights[i] = bal->backends[i]->weight * LB_WEIGHT_SCALE;
    lb_view v = { bal->backends, bal->weights, bal->nbackends };
    return bal->policy.ops->build(&bal->policy, &v);
}

int backend_set_apply(balancer *bal, char *err, size_t errlen)
{
    spec *specs;
    int n = parse_all(bal->cfg, &specs, err, errlen);
    if (n < 0)
        return n;
    backend **nv = calloc((size_t)n, sizeof(backend *));
    uint32_t *nw = calloc((size_t)n, sizeof(uint32_t));
    bool reload = bal->backends != NULL;
    int made = 0;
    for (; nv && nw && made < n; made++) {
        backend *b = backend_find(bal, specs[made].name, strlen(specs[made].name));
        if (!b && !(b = backend_new(bal, &specs[made], reload)))
            break;
        b->weight = specs[made].weight;
        b->addr = specs[made].addr;
        b->addrlen = specs[made].addrlen;
        nv[made] = b;
    }
    if (made < n) {   /* out of memory: free only what we created */
        for (int i = 0; i < made; i++)
            if (!backend_find(bal, nv[i]->name, strlen(nv[i]->name)))
                free(nv[i]);
        free(nv);
        free(nw);
        free(specs);
        snprintf(err, errlen, "out of memory applying the backend list");
        return -ENOMEM;
    }
    /* the old members that are gone */
    for (uint32_t i = 0; i < bal->nbackends; i++) {
        backend *b = bal->backends[i];
        bool kept = false;
        for (int k = 0; k < n && !kept; k++)
            kept = nv[k] == b;
        if (!kept)
            retire(bal, b);
    }
    free(bal->backends);
    free(bal->weights);
    bal->backends = nv;
    bal->weights = nw;
    bal->nbackends = (uint32_t)n;
    free(specs);
    for (uint32_t i = 0; i < bal->nbackends; i++) {
        if (bal->cfg->health_path[0])
            health_start(bal->backends[i]);
        else
            health_stop(bal->backends[i]);
    }
    if (bal->policy.ops && backend_policy_build(bal) < 0) {
        snprintf(err, errlen, "out of memory building the %s policy", bal->policy.ops->name);
        return -ENOMEM;
    }
    return 0;
}

void backend_set_free(balancer *bal)
{
    for (uint32_t i = 0; i < bal->nbackends; i++) {
        pool_close_all(bal->backends[i]);
        backend_free(bal->backends[i]);
    }
    while (bal->retired) {
        backend *b = bal->retired;
        bal->retired = b->next_retired;
        backend_free(b);
    }
    free(bal->backends);
    free(bal->weights);
    bal->backends = NULL;
    bal->weights = NULL;
    bal->nbackends = 0;
    if (bal->policy.ops)
        bal->policy.ops->free(&bal->policy);
}

/* ---- picking ------------------------------------------------------------------------------ */

uint32_t backend_eff_weight(const backend *b, uint64_t now)
{
    if (!b->up || b->draining || b->removed)
        return 0;
    uint32_t full = b->weight * LB_WEIGHT_SCALE;
    uint64_t ramp = b->bal->cfg->slow_start * NS_PER_MS;
    if (b->up_since == 0 || ramp == 0 || now >= b->up_since + ramp)
        return full;
    uint64_t w = (uint64_t)full * (now - b->up_since) / ramp;
    return w ? (uint32_t)w : 1;
}

backend *backend_pick(balancer *bal, uint64_t key, backend *const *tried, uint32_t ntried)
{
    uint64_t now = loop_now(bal->loop);
    for (uint32_t i = 0; i < bal->nbackends; i++)
        bal->weights[i] = backend_eff_weight(bal->backends[i], now);
    lb_view v = { bal->backends, bal->weights, bal->nbackends };
    lb_req req = { key, tried, ntried };
    return bal->policy.ops->pick(&bal->policy, &v, &req);
}

/* ---- health state ---------------------------------------------------------------------- */

static void mark_up(backend *b, const char *why)
{
    b->up = true;
    b->up_since = loop_now(b->bal->loop);
    b->failures = 0;
    b->fall = 0;
    log_info("backend %s is up (%s)", b->name, why);
}

static void mark_down(backend *b, const char *why)
{
    b->up = false;
    b->rise = 0;
    log_warn("backend %s is down (%s)", b->name, why);
    pool_close_all(b);
}

static void on_eject_end(loop_timer *t)
{
    backend *b = container_of(t, backend, eject_timer);
    if (!b->up && !b->probe)
        mark_up(b, "ejection time over");
}

void backend_report(backend *b, enum backend_outcome o)
{
    const config *cfg = b->bal->cfg;
    if (o == OUTCOME_OK) {
        b->failures = 0;
        return;
    }
    b->failures++;
    if (!b->up || cfg->eject_errors == 0 || b->failures < cfg->eject_errors)
        return;
    b->st.ejections++;
    mark_down(b, o == OUTCOME_5XX ? "passive: 5xx responses in a row"
                                  : "passive: failed requests in a row");
    if (!b->probe)
        loop_timer_start(b->bal->loop, &b->eject_timer, cfg->eject_time, on_eject_end);
}

void backend_check_result(backend *b, bool ok)
{
    const config *cfg = b->bal->cfg;
    if (!ok) {
        b->st.checks_failed++;
        b->rise = 0;
        if (b->up && ++b->fall >= cfg->health_fall)
            mark_down(b, "health checks failed");
        return;
    }
    b->fall = 0;
    if (!b->up && ++b->rise >= cfg->health_rise)
        mark_up(b, "health checks passed");
}

void backend_set_draining(backend *b, bool on)
{
    if (b->draining == on || b->removed)
        return;
    b->draining = on;
    log_info("backend %s %s (%u requests in flight)", b->name,
             on ? "is draining" : "is back in service", b->active);
    if (on)
        pool_close_all(b);
}

void backend_admin_drain(backend *b, bool on)
{
    if (b->bal->shared && b->sidx >= 0)
        shared_set_draining(b->bal->shared, b->sidx, on);
    backend_set_draining(b, on);
}

void backend_sync_drains(balancer *bal)
{
    if (!bal->shared)
        return;
    uint32_t seq = shared_drain_seq(bal->shared);
    if (seq == bal->drain_seq)
        return;
    bal->drain_seq = seq;
    for (uint32_t i = 0; i < bal->nbackends; i++) {
        backend *b = bal->backends[i];
        backend_set_draining(b, shared_draining(bal->shared, b->sidx));
    }
}

/* ---- pool ------------------------------------------------------------------------------------ */

bconn *backend_pool_get(backend *b)
{
    bconn *c = b->idle;
    if (!c)
        return NULL;
    backend_pool_remove(b, c);
    return c;
}

void backend_pool_put(backend *b, bconn *c)
{
    const config *cfg = b->bal->cfg;
    if (b->draining || !b->up || b->nidle >= cfg->pool_max_idle || b->bal->draining) {
        bconn_close(c);
        return;
    }
    bconn_make_idle(c, cfg->backend_idle_timeout);
    c->prev = NULL;
    c->next = b->idle;
    if (b->idle)
        b->idle->prev = c;
    b->idle = c;
    b->nidle++;
}

void backend_pool_remove(backend *b, bconn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        b->idle = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    b->nidle--;
}

void backend_conn_closed(backend *b)
{
    assert(b->nconns > 0);
    b->nconns--;
    if (!b->removed || b->nconns > 0)
        return;
    balancer *bal = b->bal;
    for (backend **pp = &bal->retired; *pp; pp = &(*pp)->next_retired) {
        if (*pp == b) {
            *pp = b->next_retired;
            backend_free(b);
            return;
        }
    }
}
