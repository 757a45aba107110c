/* redis — see redis.h. This file: connections, the adapter, commands and
 * their timeouts, the breaker, lifecycle. redis_sub.c: channels, the
 * subscriber connection's replies, key tracking (boundary: redis_int.h).
 *
 * The adapter. hiredis's async API owns the protocol (buffers, parser, the
 * FIFO of reply callbacks) and asks its event library, through five hooks
 * (addRead, delRead, addWrite, delWrite, cleanup), to call it back when the
 * socket is readable or writable. Ours maps them onto one loop_io per
 * connection, level-triggered (hiredis reads at most one buffer per call):
 *
 *   addRead/delRead   EPOLLIN interest on and off
 *   addWrite          connecting: EPOLLOUT (connect completion is a write
 *                     event); connected: a 0 ms timer, so every command
 *                     submitted during this loop iteration is written by one
 *                     redisAsyncHandleWrite at the timer phase — automatic
 *                     pipelining without an epoll_ctl per burst; only when
 *                     that write leaves bytes behind (socket full) EPOLLOUT
 *   delWrite          EPOLLOUT off
 *   cleanup           the context is being freed (error, or we asked):
 *                     unregister, then schedule the reconnection
 *
 * hiredis frees a context on any read/write/connect error, after calling
 * every pending callback with a NULL reply; that is where in-flight commands
 * fail with DOWN (or CLOSED in redis_free). The cleanup hook runs after
 * those callbacks, so it is our single "connection gone" event.
 *
 * Commands (struct rcmd) are the privdata of hiredis callbacks. A command
 * waiting for its reply is also on its connection's list, oldest first; as
 * every command of a client has the same timeout, deadlines along the list
 * are non-decreasing, so one timer per connection, armed for the head,
 * finds every expired command (lazily re-armed: a reply costs no heap
 * operation). A command that times out leaves the list but not hiredis's
 * FIFO — it becomes an orphan, its callback already run; its late reply
 * (or the NULL of a lost connection) frees it. That keeps replies matched.
 *
 * Invariants: a connection is IDLE with ac == NULL and nothing waiting, or
 * CONNECTING/READY with ac set; records are on exactly one of: a
 * connection's waiting list, hiredis's FIFO only (orphan), the fail-later
 * queue, the free pool.
 */
#include "data/redis_int.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "core/log.h"
#include "http/request.h"
#include "http/server.h"
#include "obs/metrics.h"

#define RCMD_POOL_MAX           1024   /* spare command records kept */
#define DEFAULT_TIMEOUT_MS      250

static const char *const status_names[] = {
#define REDIS_STATUS_NAME(name, label) label,
    REDIS_STATUS_LIST(REDIS_STATUS_NAME)
#undef REDIS_STATUS_NAME
    NULL,
};

const char *redis_status_name(enum redis_status s)
{
    return (unsigned)s < REDIS_STATUS_COUNT ? status_names[s] : "?";
}

/* ---- metrics --------------------------------------------------------------------- */

static const metrics_spec spec_cmds = {
    .name = "myriad_redis_commands_total", .type = METRICS_COUNTER,
    .help = "Redis commands completed, by outcome.",
    .label = { "outcome" }, .values = { status_names },
};
static const metrics_spec spec_up = {
    .name = "myriad_redis_up", .type = METRICS_GAUGE, .flags = METRICS_PER_WORKER,
    .help = "1 while the worker's Redis command connection is ready.",
};
static const metrics_spec spec_breaker = {
    .name = "myriad_redis_breaker_open", .type = METRICS_GAUGE, .flags = METRICS_PER_WORKER,
    .help = "1 while the worker's Redis circuit breaker is open or half-open.",
};
static const metrics_spec spec_reconnects = {
    .name = "myriad_redis_reconnects_total", .type = METRICS_COUNTER,
    .help = "Redis connections re-established after a loss.",
};

static void metrics_init(redis *r)
{
    metrics_registry *reg = metrics_registry_of(r->mw);
    if (!reg)
        return;
    r->f_cmds = metrics_family_add(reg, &spec_cmds);
    r->f_up = metrics_family_add(reg, &spec_up);
    r->f_breaker = metrics_family_add(reg, &spec_breaker);
    r->f_reconnects = metrics_family_add(reg, &spec_reconnects);
}

static void gauge(redis *r, metrics_family *f, uint64_t v)
{
    if (r->mw && f)
        metrics_set(r->mw, f, 0, v);
}

/* ---- URL --------------------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Percent-decodes [s, s+n) into out (size cap, NUL-terminated). */
static int pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int a = hexval(s[i + 1]), b = hexval(s[i + 2]);
            if (a < 0 || b < 0)
                return -1;
            c = a * 16 + b;
            i += 2;
        }
        if (c == 0 || o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

static int parse_uint(const char *s, size_t n, long max, long *out)
{
    if (n == 0 || n > 9)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

#define URL_ERR(...) do { snprintf(err, errlen, __VA_ARGS__); return -EINVAL; } while (0)

/* user:password@ (the part before '@'), into out. */
static int parse_userinfo(const char *s, size_t n, redis_url *out, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', n);
    if (!colon)
        URL_ERR("redis URL: user name without a password (use redis://:PASSWORD@host "
                "or redis://USER:PASSWORD@host)");
    if (pct_decode(s, (size_t)(colon - s), out->user, sizeof out->user) < 0)
        URL_ERR("redis URL: bad or too long user name");
    size_t plen = n - (size_t)(colon - s) - 1;
    if (pct_decode(colon + 1, plen, out->password, sizeof out->password) < 0)
        URL_ERR("redis URL: bad or too long password (percent-encode reserved characters)");
    if (!out->password[0])
        URL_ERR("redis URL: empty password");
    return 0;
}

static int parse_query_db(const char *q, redis_url *out, char *err, size_t errlen)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        long v;
        if (n > 3 && memcmp(q, "db=", 3) == 0) {
            if (parse_uint(q + 3, n - 3, 1000000, &v) < 0)
                URL_ERR("redis URL: bad db number '%.*s'", (int)(n - 3), q + 3);
            out->db = (int)v;
        } else {
            URL_ERR("redis URL: unknown parameter '%.*s' (only db=N)", (int)n, q);
        }
        q += n + (amp ? 1 : 0);
    }
    return 0;
}

static int parse_unix(const char *rest, redis_url *out, char *err, size_t errlen)
{
    const char *at = strchr(rest, '@');
    const char *slash = strchr(rest, '/');
    if (at && (!slash || at < slash)) {
        if (parse_userinfo(rest, (size_t)(at - rest), out, err, errlen) < 0)
            return -EINVAL;
        rest = at + 1;
    }
    if (rest[0] != '/')
        URL_ERR("redis URL: unix:// needs an absolute socket path (unix:///path/to/redis.sock)");
    const char *q = strchr(rest, '?');
    size_t n = q ? (size_t)(q - rest) : strlen(rest);
    if (n >= sizeof out->path)
        URL_ERR("redis URL: socket path longer than %zu bytes", sizeof out->path - 1);
    memcpy(out->path, rest, n);
    out->path[n] = '\0';
    return q ? parse_query_db(q + 1, out, err, errlen) : 0;
}

static int parse_tcp(const char *rest, redis_url *out, char *err, size_t errlen)
{
    size_t alen = strcspn(rest, "/?");
    const char *auth = rest, *end = rest + alen;
    const char *at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    if (at) {
        if (parse_userinfo(auth, (size_t)(at - auth), out, err, errlen) < 0)
            return -EINVAL;
        auth = at + 1;
    }
    const char *hend, *port = NULL;
    if (*auth == '[') {
        const char *rb = memchr(auth, ']', (size_t)(end - auth));
        if (!rb)
            URL_ERR("redis URL: unterminated [IPv6] host");
        auth++;
        hend = rb;
        if (rb + 1 < end) {
            if (rb[1] != ':')
                URL_ERR("redis URL: junk after ]");
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(auth, ':', (size_t)(end - auth));
        hend = colon ? colon : end;
        if (colon)
            port = colon + 1;
    }
    size_t hlen = (size_t)(hend - auth);
    if (hlen == 0)
        URL_ERR("redis URL: missing host");
    if (hlen >= sizeof out->host)
        URL_ERR("redis URL: host name too long");
    for (size_t i = 0; i < hlen; i++)
        if (!isalnum((unsigned char)auth[i]) && !strchr(".-_:%", auth[i]))
            URL_ERR("redis URL: bad character in host '%.*s'", (int)hlen, auth);
    memcpy(out->host, auth, hlen);
    out->host[hlen] = '\0';
    if (port) {
        long v;
        if (parse_uint(port, (size_t)(end - port), 65535, &v) < 0 || v == 0)
            URL_ERR("redis URL: bad port '%.*s'", (int)(end - port), port);
        out->port = (int)v;
    }
    const char *p = end;
    if (*p == '/') {
        p++;
        size_t n = strcspn(p, "?");
        long v;
        if (n && parse_uint(p, n, 1000000, &v) < 0)
            URL_ERR("redis URL: bad db number '%.*s' (redis://host:port/DB)", (int)n, p);
        if (n)
            out->db = (int)v;
        p += n;
    }
    if (*p == '?')
        return parse_query_db(p + 1, out, err, errlen);
    return 0;
}

int redis_url_parse(const char *url, redis_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url || !*url)
        URL_ERR("redis URL: empty");
    if (strncmp(url, "redis://", 8) == 0)
        return parse_tcp(url + 8, out, err, errlen);
    if (strncmp(url, "unix://", 7) == 0)
        return parse_unix(url + 7, out, err, errlen);
    if (strncmp(url, "redis+unix://", 13) == 0)
        return parse_unix(url + 13, out, err, errlen);
    if (strncmp(url, "rediss://", 9) == 0)
        URL_ERR("redis URL: TLS (rediss://) is not supported");
    URL_ERR("redis URL '%.40s': expected redis://[[user]:password@]host[:port][/db] "
            "or unix:///path[?db=N]", url);
}

const char *redis_config_url(const config *cfg)
{
    if (cfg && cfg->redis[0])
        return cfg->redis;
    const char *env = getenv("REDIS_URL");
    return env && *env ? env : NULL;
}

int redis_config_check(const config *cfg, char *err, size_t errlen)
{
    const char *url = redis_config_url(cfg);
    if (!url)
        return 0;
    redis_url u;
    char why[256];
    if (redis_url_parse(url, &u, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: %s", cfg->redis[0] ? "--redis" : "REDIS_URL", why);
        return -EINVAL;
    }
    return 0;
}

/* ---- command records ------------------------------------------------------------- */

rcmd *rcmd_get(redis *r)
{
    rcmd *c = r->pool;
    if (c) {
        r->pool = c->next;
        r->npool--;
    } else {
        c = malloc(sizeof *c);
        if (!c)
            return NULL;
    }
    memset(c, 0, sizeof *c);
    return c;
}

void rcmd_put(redis *r, rcmd *c)
{
    c->state = RCMD_FREE;
    if (r->npool >= RCMD_POOL_MAX || r->closing) {
        free(c);
        return;
    }
    c->next = r->pool;
    r->pool = c;
    r->npool++;
}

static void list_append(rconn *cn, rcmd *c)
{
    c->next = NULL;
    c->prev = cn->tail;
    if (cn->tail)
        cn->tail->next = c;
    else
        cn->head = c;
    cn->tail = c;
    cn->waiting++;
}

static void list_unlink(rconn *cn, rcmd *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        cn->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        cn->tail = c->prev;
    c->next = c->prev = NULL;
    cn->waiting--;
}

/* ---- the breaker ------------------------------------------------------------------- */

static void probe(redis *r);

static void on_breaker_timer(loop_timer *t)
{
    redis *r = container_of(t, redis, breaker_timer);
    r->breaker = REDIS_BREAKER_HALF_OPEN;
    probe(r);
}

static void breaker_trip(redis *r, const char *why)
{
    if (r->breaker == REDIS_BREAKER_CLOSED)
        log_warn("redis: %s unavailable after %u consecutive failures (last: %s); "
                 "failing fast, probing every %llu ms", r->where, r->failures, why,
                 (unsigned long long)r->opt.breaker_cooldown_ms);
    else
        log_debug("redis: probe of %s failed (%s)", r->where, why);
    r->breaker = REDIS_BREAKER_OPEN;
    gauge(r, r->f_breaker, 1);
    loop_timer_start(r->loop, &r->breaker_timer, r->opt.breaker_cooldown_ms, on_breaker_timer);
}

static void breaker_close(redis *r)
{
    if (r->breaker != REDIS_BREAKER_CLOSED)
        log_info("redis: %s available again; circuit breaker closed", r->where);
    r->breaker = REDIS_BREAKER_CLOSED;
    r->failures = 0;
    loop_timer_stop(r->loop, &r->breaker_timer);
    gauge(r, r->f_breaker, 0);
}

/* A command timed out or was lost with its connection, or a connect failed. */
static void breaker_failure(redis *r, const char *why, bool connect)
{
    if (r->closing)
        return;
    if (r->breaker == REDIS_BREAKER_CLOSED) {
        if (++r->failures >= r->opt.breaker_failures)
            breaker_trip(r, why);
    } else if (r->breaker == REDIS_BREAKER_HALF_OPEN && connect) {
        breaker_trip(r, why);
    }
}

/* ---- completion ---------------------------------------------------------------------- */

/* Runs a command's callback with its outcome; network: the outcome says
 * something about the server (a fail-fast DOWN does not). */
static void finish(redis *r, bool user, redis_cb cb, void *arg, enum redis_status st,
                   const redisReply *reply, bool network)
{
    if (user) {
        r->commands[st]++;
        if (r->mw && r->f_cmds)
            metrics_inc(r->mw, r->f_cmds, st);
        if (st == REDIS_STATUS_OK || st == REDIS_STATUS_ERROR)
            r->failures = 0;
        else if (network && (st == REDIS_STATUS_TIMEOUT || st == REDIS_STATUS_DOWN))
            breaker_failure(r, st == REDIS_STATUS_TIMEOUT ? "timeout" : "connection lost", false);
    }
    if (cb)
        cb(arg, st, reply);
}

static void on_failq(loop_timer *t)
{
    redis *r = container_of(t, redis, failq_timer);
    rcmd *c = r->failq_head;   /* only what is queued now: new failures wait a turn */
    r->failq_head = r->failq_tail = NULL;
    while (c) {
        rcmd *next = c->next;
        redis_cb cb = c->cb;
        void *arg = c->arg;
        bool user = c->user;
        enum redis_status st = c->status;
        rcmd_put(r, c);
        finish(r, user, cb, arg, st, NULL, false);
        c = next;
    }
}

/* The callback runs at the next timer phase, never inside the caller. */
static void fail_later(redis *r, rcmd *c, enum redis_status st)
{
    c->state = RCMD_FAILQ;
    c->status = (uint8_t)st;
    c->next = NULL;
    if (r->failq_tail)
        r->failq_tail->next = c;
    else
        r->failq_head = c;
    r->failq_tail = c;
    if (!loop_timer_active(&r->failq_timer))
        loop_timer_start(r->loop, &r->failq_timer, 0, on_failq);
}

/* hiredis's callback for every command of the command connection. */
static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    rcmd *c = priv;
    rconn *cn = ac->data;
    redis *r = cn->r;
    if (c->state == RCMD_ORPHAN) {   /* timed out: its callback already ran */
        cn->orphans--;
        rcmd_put(r, c);
        return;
    }
    assert(c->state == RCMD_WAITING);
    list_unlink(cn, c);
    redisReply *rep = reply;
    enum redis_status st = !rep ? (r->closing ? REDIS_STATUS_CLOSED : REDIS_STATUS_DOWN)
                         : rep->type == REDIS_REPLY_ERROR ? REDIS_STATUS_ERROR
                         : REDIS_STATUS_OK;
    redis_cb cb = c->cb;
    void *arg = c->arg;
    bool user = c->user;
    rcmd_put(r, c);
    finish(r, user, cb, arg, st, rep, true);
}

/* ---- connections: the adapter ----------------------------------------------------------- */

static void conn_start(rconn *cn);

static void io_update(rconn *cn)
{
    if (cn->io.fd < 0)
        return;
    uint32_t ev = (cn->want_read ? LOOP_READ : 0) | (cn->want_write ? LOOP_WRITE : 0);
    if (ev != cn->io.events)
        loop_io_mod(cn->r->loop, &cn->io, ev);
}

static void ev_add_read(void *priv)
{
    rconn *cn = priv;
    cn->want_read = true;
    io_update(cn);
}

static void ev_del_read(void *priv)
{
    rconn *cn = priv;
    cn->want_read = false;
    io_update(cn);
}

static void on_flush(loop_timer *t)
{
    rconn *cn = container_of(t, rconn, flush_timer);
    if (!cn->ac)
        return;
    cn->in_flush = true;
    redisAsyncHandleWrite(cn->ac);   /* may free the context (write error) */
    cn->in_flush = false;
}

static void ev_add_write(void *priv)
{
    rconn *cn = priv;
    if (!(cn->ac->c.flags & REDIS_CONNECTED) || cn->in_flush) {
        cn->want_write = true;   /* connect completion, or the socket is full */
        io_update(cn);
    } else if (!cn->want_write && !loop_timer_active(&cn->flush_timer)) {
        loop_timer_start(cn->r->loop, &cn->flush_timer, 0, on_flush);
    }
}

static void ev_del_write(void *priv)
{
    rconn *cn = priv;
    cn->want_write = false;
    io_update(cn);
}

static void conn_gone(rconn *cn);

static void ev_cleanup(void *priv)
{
    conn_gone(priv);
}

static void on_io(loop_io *io, uint32_t events)
{
    rconn *cn = container_of(io, rconn, io);
    redisAsyncContext *ac = cn->ac;
    if (!ac)
        return;
    if (events & (LOOP_READ | LOOP_ERROR | LOOP_RDHUP))
        redisAsyncHandleRead(ac);
    if (cn->ac == ac && (events & LOOP_WRITE))
        redisAsyncHandleWrite(ac);
}

bool rconn_usable(const rconn *cn)
{
    return cn->state != CONN_IDLE && !cn->dying &&
           !(cn->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}

/* ---- connections: commands and timeouts -------------------------------------------------- */

static void on_deadline(loop_timer *t)
{
    rconn *cn = container_of(t, rconn, timer);
    redis *r = cn->r;
    uint64_t now = loop_now(r->loop);
    for (uint32_t n = cn->waiting; n && cn->head && cn->head->deadline <= now; n--) {
        rcmd *c = cn->head;
        list_unlink(cn, c);
        c->state = RCMD_ORPHAN;   /* hiredis still holds it: freed by its late reply */
        cn->orphans++;
        redis_cb cb = c->cb;
        c->cb = NULL;
        finish(r, c->user, cb, c->arg, REDIS_STATUS_TIMEOUT, NULL, true);
    }
    if (cn->drop_pending) {
        cn->drop_pending = false;
        rconn_drop(cn, "timeout");
        return;
    }
    if (cn->state != CONN_IDLE && cn->head)   /* callbacks may have armed it for a later one */
        loop_timer_start_at(r->loop, t, cn->head->deadline, on_deadline);
}

/* Queues c on the connection (caller checked rconn_usable). 0 or -1. */
int rconn_send(rconn *cn, rcmd *c, int argc, const char *const *argv,
                     const size_t *argvlen)
{
    redis *r = cn->r;
    c->deadline = loop_now(r->loop) + r->timeout_ns;
    c->state = RCMD_WAITING;
    list_append(cn, c);
    if (redisAsyncCommandArgv(cn->ac, on_reply, c, argc, (const char **)argv, argvlen)
        != REDIS_OK) {
        list_unlink(cn, c);
        return -1;
    }
    if (!loop_timer_active(&cn->timer))
        loop_timer_start_at(r->loop, &cn->timer, c->deadline, on_deadline);
    return 0;
}

/* An internal command (handshake, probe, tracking) on the command
 * connection: not counted, never fails fast. */
int rconn_send_internal(rconn *cn, redis_cb cb, void *arg, int argc, const char *const *argv)
{
    size_t len[2 * MAX_TRACK_PREFIXES + 8];
    assert((size_t)argc <= sizeof len / sizeof len[0]);
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    rcmd *c = rcmd_get(cn->r);
    if (!c)
        return -ENOMEM;
    c->cb = cb;
    c->arg = arg;
    if (rconn_send(cn, c, argc, argv, len) < 0) {
        rcmd_put(cn->r, c);
        return -EIO;
    }
    return 0;
}

/* ---- connections: lifecycle -------------------------------------------------------------- */

static uint64_t jitter(redis *r, uint64_t ms)
{
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    uint64_t half = ms / 2;
    return half + (half ? r->rng % (half + 1) : 0);
}

static void on_reconnect(loop_timer *t)
{
    rconn *cn = container_of(t, rconn, timer);
    if (cn->kind == CONN_SUB && !rsub_needed(cn->r))
        return;
    conn_start(cn);
}

static void schedule_reconnect(rconn *cn)
{
    redis *r = cn->r;
    uint64_t d = jitter(r, cn->backoff_ms);
    cn->backoff_ms = cn->backoff_ms * 2 > r->opt.backoff_max_ms ? r->opt.backoff_max_ms
                                                                : cn->backoff_ms * 2;
    loop_timer_start(r->loop, &cn->timer, d, on_reconnect);
}

static const char *conn_name(const rconn *cn)
{
    return cn->kind == CONN_CMD ? "command" : "subscriber";
}

/* A connect attempt failed, or a connection ended: account, log once, retry. */
static void conn_down(rconn *cn, enum conn_state was)
{
    redis *r = cn->r;
    if (r->closing)
        return;
    schedule_reconnect(cn);   /* first: callbacks below may ask for the connection */
    if (was == CONN_READY) {
        log_warn("redis: %s connection to %s lost (%s); reconnecting", conn_name(cn),
                 r->where, cn->err);
        cn->down_logged = true;
    } else {
        cn->attempts++;
        if (!cn->down_logged)
            log_warn("redis: cannot connect to %s (%s); retrying with backoff", r->where,
                     cn->err);
        else
            log_debug("redis: %s connection to %s: attempt %u failed (%s)", conn_name(cn),
                      r->where, cn->attempts, cn->err);
        cn->down_logged = true;
    }
    if (cn->kind == CONN_CMD) {
        gauge(r, r->f_up, 0);
        if (was != CONN_READY)
            breaker_failure(r, cn->err, true);
        else if (r->breaker == REDIS_BREAKER_HALF_OPEN)
            breaker_trip(r, cn->err);
    } else {
        rsub_lost(r);
    }
    rtrack_lost(r);
}

/* hiredis's cleanup hook: the context is being freed; every callback of it
 * has run. */
static void conn_gone(rconn *cn)
{
    redis *r = cn->r;
    redisAsyncContext *ac = cn->ac;
    enum conn_state was = cn->state;
    if (!cn->err[0])
        snprintf(cn->err, sizeof cn->err, "%s", ac->c.err ? ac->c.errstr : "closed");
    if (cn->io.fd >= 0)
        loop_io_del(r->loop, &cn->io);
    cn->io.fd = -1;
    loop_timer_stop(r->loop, &cn->flush_timer);
    loop_timer_stop(r->loop, &cn->timer);
    assert(cn->head == NULL && cn->orphans == 0);
    cn->ac = NULL;
    cn->state = CONN_IDLE;
    cn->dying = cn->drop_pending = cn->want_read = cn->want_write = false;
    conn_down(cn, was);
}

/* Frees the context: pending callbacks get DOWN (CLOSED when closing),
 * then conn_gone. Inside a hiredis callback, hiredis defers the free until
 * the callback returns. */
void rconn_drop(rconn *cn, const char *why)
{
    if (!cn->ac || cn->dying)
        return;
    cn->dying = true;
    snprintf(cn->err, sizeof cn->err, "%s", why);
    redisAsyncFree(cn->ac);
}

static void on_hs_step(void *arg, enum redis_status st, const redisReply *reply)
{
    rconn *cn = arg;
    if (st == REDIS_STATUS_ERROR) {
        char why[160];
        snprintf(why, sizeof why, "handshake: %s", reply->str);
        if (!cn->down_logged)
            log_error("redis: %s refused the connection: %s", cn->r->where, reply->str);
        cn->down_logged = true;
        rconn_drop(cn, why);
    } else if (st == REDIS_STATUS_TIMEOUT) {
        cn->drop_pending = true;
    }
}

void rconn_ready(rconn *cn)
{
    redis *r = cn->r;
    cn->state = CONN_READY;
    cn->err[0] = '\0';
    cn->backoff_ms = r->opt.backoff_min_ms;
    if (cn->ever_ready) {
        r->reconnects++;
        if (r->mw && r->f_reconnects)
            metrics_inc(r->mw, r->f_reconnects, 0);
    }
    if (cn->down_logged)
        log_info("redis: %s connection to %s established%s", conn_name(cn), r->where,
                 cn->ever_ready ? " again" : "");
    else if (!cn->ever_ready)
        log_debug("redis: %s connection to %s established", conn_name(cn), r->where);
    cn->ever_ready = true;
    cn->down_logged = false;
    cn->attempts = 0;
}

static void on_hs_ping(void *arg, enum redis_status st, const redisReply *reply)
{
    rconn *cn = arg;
    redis *r = cn->r;
    if (st == REDIS_STATUS_TIMEOUT) {
        cn->drop_pending = true;
        return;
    }
    if (st != REDIS_STATUS_OK)
        return;
    rconn_ready(cn);
    gauge(r, r->f_up, 1);
    r->failures = 0;
    if (r->breaker == REDIS_BREAKER_HALF_OPEN)
        breaker_close(r);
    rtrack_setup(r);
}

static void handshake_cmd(rconn *cn)
{
    redis *r = cn->r;
    int rc = 0;
    if (r->url.password[0]) {
        const char *auth[] = { "AUTH", r->url.user, r->url.password };
        rc = r->url.user[0] ? rconn_send_internal(cn, on_hs_step, cn, 3, auth)
                            : rconn_send_internal(cn, on_hs_step, cn, 2,
                                            (const char *const[]){ "AUTH", r->url.password });
    }
    if (!rc && r->url.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->url.db);
        rc = rconn_send_internal(cn, on_hs_step, cn, 2, (const char *const[]){ "SELECT", db });
    }
    if (!rc)
        rc = rconn_send_internal(cn, on_hs_ping, cn, 1, (const char *const[]){ "PING" });
    if (rc)
        rconn_drop(cn, "out of memory");
}

/* TCP keep-alive: the subscriber connection sends nothing after it has
 * subscribed, so without it a peer that vanished (no RST) would leave us
 * waiting for invalidations forever. Dead after about 15 + 3 x 5 s idle.
 * (hiredis's redisEnableKeepAlive would record a failure in the context's
 * error, which breaks the connection; this one is best effort.) */
static void keepalive(int fd)
{
    int on = 1, idle = 15, intvl = 5, cnt = 3;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

static void conn_start(rconn *cn)
{
    redis *r = cn->r;
    cn->err[0] = '\0';
    redisAsyncContext *ac = r->url.path[0] ? redisAsyncConnectUnix(r->url.path)
                                           : redisAsyncConnect(r->url.host, r->url.port);
    if (!ac || ac->err) {
        snprintf(cn->err, sizeof cn->err, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);   /* no hooks yet: no cleanup call */
        conn_down(cn, CONN_CONNECTING);
        return;
    }
    int rc = loop_io_add(r->loop, &cn->io, ac->c.fd, LOOP_WRITE, on_io);
    if (rc < 0) {
        snprintf(cn->err, sizeof cn->err, "epoll: %s", strerror(-rc));
        cn->io.fd = -1;
        redisAsyncFree(ac);
        conn_down(cn, CONN_CONNECTING);
        return;
    }
    if (!r->url.path[0])
        keepalive(ac->c.fd);
    cn->want_write = true;
    cn->want_read = false;
    ac->data = cn;
    ac->ev.data = cn;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    cn->ac = ac;
    cn->state = CONN_CONNECTING;
    cn->dying = false;
    if (cn->kind == CONN_CMD)
        handshake_cmd(cn);
    else
        rsub_handshake(cn);
}

/* The subscriber connection is wanted: start it unless it exists or a
 * reconnect is scheduled. Through a 0 ms timer, so no user callback can
 * run inside the caller. */
void rsub_ensure(redis *r)
{
    rconn *cn = &r->sub;
    if (cn->state == CONN_IDLE && !loop_timer_active(&cn->timer))
        loop_timer_start(r->loop, &cn->timer, 0, on_reconnect);
}

static void on_probe(void *arg, enum redis_status st, const redisReply *reply)
{
    redis *r = arg;
    r->probe_inflight = false;
    if (r->closing || r->breaker != REDIS_BREAKER_HALF_OPEN)
        return;
    if (st == REDIS_STATUS_OK || st == REDIS_STATUS_ERROR) {
        breaker_close(r);
    } else if (st == REDIS_STATUS_TIMEOUT) {
        breaker_trip(r, "probe timed out");
        r->cmd.drop_pending = true;   /* a hung connection: start afresh */
    }
    /* DOWN: the connection was lost; conn_down opens the breaker again */
}

/* Half-open: one PING on a ready connection. Without one, the next
 * successful handshake (which ends with a PING) closes the breaker. */
static void probe(redis *r)
{
    if (r->probe_inflight || r->cmd.state != CONN_READY || !rconn_usable(&r->cmd))
        return;
    if (rconn_send_internal(&r->cmd, on_probe, r, 1, (const char *const[]){ "PING" }) == 0)
        r->probe_inflight = true;
}

/* ---- public: lifecycle ----------------------------------------------------------------------- */

static void conn_init(redis *r, rconn *cn, enum conn_kind kind)
{
    cn->r = r;
    cn->kind = kind;
    cn->io.fd = -1;
    cn->backoff_ms = r->opt.backoff_min_ms;
}

redis *redis_new(loop *l, const redis_options *o, char *err, size_t errlen)
{
    redis *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "redis: out of memory");
        return NULL;
    }
    if (redis_url_parse(o->url, &r->url, err, errlen) < 0) {
        free(r);
        return NULL;
    }
    r->url_text = strdup(o->url);
    if (!r->url_text) {
        free(r);
        snprintf(err, errlen, "redis: out of memory");
        return NULL;
    }
    r->loop = l;
    r->opt = *o;
    r->opt.url = r->url_text;
    if (!r->opt.timeout_ms)
        r->opt.timeout_ms = DEFAULT_TIMEOUT_MS;
    if (!r->opt.breaker_failures)
        r->opt.breaker_failures = REDIS_BREAKER_FAILURES;
    if (!r->opt.breaker_cooldown_ms)
        r->opt.breaker_cooldown_ms = REDIS_BREAKER_COOLDOWN;
    if (!r->opt.backoff_min_ms)
        r->opt.backoff_min_ms = REDIS_BACKOFF_MIN;
    if (!r->opt.backoff_max_ms)
        r->opt.backoff_max_ms = REDIS_BACKOFF_MAX;
    if (r->opt.backoff_max_ms < r->opt.backoff_min_ms)
        r->opt.backoff_max_ms = r->opt.backoff_min_ms;
    if (!r->opt.max_inflight)
        r->opt.max_inflight = REDIS_MAX_INFLIGHT;
    r->timeout_ns = r->opt.timeout_ms * 1000000u;
    if (r->url.path[0])
        snprintf(r->where, sizeof r->where, "unix:%s", r->url.path);
    else if (strchr(r->url.host, ':'))
        snprintf(r->where, sizeof r->where, "[%s]:%d", r->url.host, r->url.port);
    else
        snprintf(r->where, sizeof r->where, "%s:%d", r->url.host, r->url.port);
    r->rng = ((uint64_t)getpid() << 32) ^ loop_now(l) ^ (uintptr_t)r;
    if (!r->rng)
        r->rng = 88172645463325252ull;
    r->sub_id = -1;
    r->mw = o->metrics;
    metrics_init(r);
    conn_init(r, &r->cmd, CONN_CMD);
    conn_init(r, &r->sub, CONN_SUB);
    conn_start(&r->cmd);
    return r;
}

static void conn_close(rconn *cn)
{
    redis *r = cn->r;
    loop_timer_stop(r->loop, &cn->timer);
    loop_timer_stop(r->loop, &cn->flush_timer);
    if (cn->ac) {
        assert(!(cn->ac->c.flags & REDIS_IN_CALLBACK));   /* not from a redis callback */
        cn->dying = true;
        redisAsyncFree(cn->ac);   /* callbacks: CLOSED; then conn_gone */
    }
}

void redis_free(redis *r)
{
    if (!r)
        return;
    assert(!r->dispatching);
    r->closing = true;
    loop_timer_stop(r->loop, &r->breaker_timer);
    loop_timer_stop(r->loop, &r->failq_timer);
    while (r->failq_head) {   /* accepted, failed, not yet told: now CLOSED */
        rcmd *c = r->failq_head;
        r->failq_head = c->next;
        redis_cb cb = c->cb;
        void *arg = c->arg;
        bool user = c->user;
        free(c);
        finish(r, user, cb, arg, REDIS_STATUS_CLOSED, NULL, false);
    }
    r->failq_tail = NULL;
    conn_close(&r->cmd);
    conn_close(&r->sub);
    gauge(r, r->f_up, 0);
    gauge(r, r->f_breaker, 0);
    rsub_free_all(r);
    while (r->pool) {
        rcmd *c = r->pool;
        r->pool = c->next;
        free(c);
    }
    free(r->url_text);
    free(r);
}

redis *redis_of(const struct myr_req *req)
{
    return req && req->srv ? req->srv->redis : NULL;
}

bool redis_available(const redis *r)
{
    return r && !r->closing && r->breaker == REDIS_BREAKER_CLOSED && r->cmd.state != CONN_IDLE &&
           !r->cmd.dying;
}

/* ---- public: commands --------------------------------------------------------------------------- */

/* Commands that would change the connection's protocol state under us. */
static bool forbidden(const char *name, size_t n)
{
    static const char *const bad[] = {
        "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe",
        "sunsubscribe", "monitor", "quit", "reset", "hello", "sync", "psync",
    };
    if (n < 4 || n > 12)
        return false;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (strlen(bad[i]) == n && strncasecmp(bad[i], name, n) == 0)
            return true;
    return false;
}

int redis_command_argv(redis *r, int argc, const char *const *argv, const size_t *argvlen,
                       redis_cb cb, void *arg)
{
    if (!r || argc < 1 || !argv || !argvlen)
        return -EINVAL;
    if (r->closing)
        return -ESHUTDOWN;
    for (int i = 0; i < argc; i++)
        if (!argv[i] && argvlen[i])
            return -EINVAL;
    if (forbidden(argv[0], argvlen[0]))
        return -EINVAL;
    if (argc >= 2 && argvlen[0] == 6 && strncasecmp(argv[0], "client", 6) == 0 &&
        argvlen[1] == 5 && strncasecmp(argv[1], "reply", 5) == 0)
        return -EINVAL;
    rcmd *c = rcmd_get(r);
    if (!c)
        return -ENOMEM;
    c->cb = cb;
    c->arg = arg;
    c->user = 1;
    rconn *cn = &r->cmd;
    if (r->breaker != REDIS_BREAKER_CLOSED || cn->state == CONN_IDLE || !rconn_usable(cn) ||
        cn->waiting + cn->orphans >= r->opt.max_inflight ||
        rconn_send(cn, c, argc, argv, argvlen) < 0)
        fail_later(r, c, REDIS_STATUS_DOWN);
    return 0;
}

int redis_get(redis *r, const void *key, size_t klen, redis_cb cb, void *arg)
{
    const char *argv[] = { "GET", key };
    size_t len[] = { 3, klen };
    return redis_command_argv(r, 2, argv, len, cb, arg);
}

int redis_set(redis *r, const void *key, size_t klen, const void *val, size_t vlen,
              uint64_t px_ms, redis_cb cb, void *arg)
{
    char px[24];
    int n = snprintf(px, sizeof px, "%llu", (unsigned long long)px_ms);
    const char *argv[] = { "SET", key, val, "PX", px };
    size_t len[] = { 3, klen, vlen, 2, (size_t)n };
    return redis_command_argv(r, px_ms ? 5 : 3, argv, len, cb, arg);
}

int redis_del(redis *r, const void *key, size_t klen, redis_cb cb, void *arg)
{
    const char *argv[] = { "DEL", key };
    size_t len[] = { 3, klen };
    return redis_command_argv(r, 2, argv, len, cb, arg);
}

int redis_del_many(redis *r, size_t n, const void *const *keys, const size_t *klens,
                   redis_cb cb, void *arg)
{
    if (!n || !keys || !klens || n >= (size_t)1 << 20)
        return -EINVAL;
    const char **argv = malloc((n + 1) * sizeof *argv);
    size_t *len = malloc((n + 1) * sizeof *len);
    int rc = -ENOMEM;
    if (argv && len) {
        argv[0] = "DEL";
        len[0] = 3;
        for (size_t i = 0; i < n; i++) {
            argv[i + 1] = keys[i];
            len[i + 1] = klens[i];
        }
        rc = redis_command_argv(r, (int)n + 1, argv, len, cb, arg);
    }
    free(argv);
    free(len);
    return rc;
}

int redis_publish(redis *r, const void *channel, size_t chlen, const void *data, size_t len,
                  redis_cb cb, void *arg)
{
    const char *argv[] = { "PUBLISH", channel, data };
    size_t lens[] = { 7, chlen, len };
    return redis_command_argv(r, 3, argv, lens, cb, arg);
}

/* ---- public: introspection ------------------------------------------------------------------------------ */

void redis_get_stats(const redis *r, redis_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!r)
        return;
    out->connected = r->cmd.state == CONN_READY;
    out->sub_connected = r->sub.state == CONN_READY;
    out->breaker = r->breaker;
    out->failures = r->failures;
    out->inflight = r->cmd.waiting + r->cmd.orphans;
    out->reconnects = r->reconnects;
    memcpy(out->commands, r->commands, sizeof out->commands);
}
