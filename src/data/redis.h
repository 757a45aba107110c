/* redis — the worker's Redis client: hiredis's asynchronous API driven by
 * our loop, with per-command timeouts, reconnection, a circuit breaker,
 * pub/sub and client-side caching (Redis 6+ key tracking, RESP2).
 *
 * One client per worker process, created on the loop thread after the
 * worker's HTTP server exists (src/proc/worker.c) when --redis or $REDIS_URL
 * is set, and reachable as http_server.redis or redis_of(req). It keeps two
 * connections to one server:
 *
 *   command     every command (GET, SET, ...), automatically pipelined:
 *               commands submitted during one loop iteration are buffered by
 *               hiredis and written with one write at the end of the
 *               iteration (a deferred flush), so a burst costs one syscall.
 *   subscriber  opened on demand by the first subscription or
 *               redis_track_prefixes: SUBSCRIBE/PSUBSCRIBE and the
 *               __redis__:invalidate channel of key tracking.
 *
 * Callback contract (every command function below):
 *   - A call returning 0 has "accepted" the command: cb(arg, status, reply)
 *     runs exactly once, on the loop thread, and never from inside the
 *     submitting call — a command that fails at once (breaker open, not
 *     connected) has its callback deferred to the end of the iteration.
 *   - A call returning -errno accepted nothing: cb never runs. -EINVAL for
 *     bad arguments, -ENOMEM, -ESHUTDOWN while redis_free runs.
 *   - reply (a hiredis redisReply) is non-NULL exactly for REDIS_STATUS_OK
 *     and REDIS_STATUS_ERROR (then reply->type == REDIS_REPLY_ERROR and
 *     reply->str the message) and is valid only during the callback.
 *   - cb may be NULL: fire and forget.
 *   - Callbacks may submit more commands; they must not call redis_free.
 *
 * Timeouts: each command must be answered within the timeout (--redis-timeout)
 * of its submission, else its callback gets REDIS_STATUS_TIMEOUT at once.
 * hiredis matches replies to callbacks in FIFO order, so a timed-out
 * command keeps its place in that queue; its late reply is read and dropped.
 *
 * Circuit breaker: REDIS_BREAKER_FAILURES (5) consecutive failures — a
 * command timing out, a command lost with its connection, a failed connect
 * or handshake — open it. While open, commands fail with REDIS_STATUS_DOWN
 * without touching the network. After the cool-down (1 s) one PING probes
 * (half-open; commands still fail fast); its reply closes the breaker, its
 * failure opens it again (a probe timeout also drops the connection, which
 * is reconnected). Any reply, error replies included, resets the count: an
 * error reply is the server working. Each state change is logged once.
 *
 * Reconnection (both connections): non-blocking connect, then AUTH (when the
 * URL has a password) and SELECT (db != 0) and a PING, all timed; after a
 * loss, retries with exponential backoff from 100 ms doubling to 5 s, each
 * delay drawn uniformly from [d/2, d]. DNS resolution of a host name is
 * blocking (hiredis's getaddrinfo): use an IP address or a Unix socket for
 * Redis in production.
 *
 * Threads: everything is loop-thread only.
 */
#ifndef MYR_DATA_REDIS_H
#define MYR_DATA_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "core/config.h"
#include "core/loop.h"

typedef struct redis redis;
struct metrics_worker;
struct myr_req;

/* ---- outcomes ------------------------------------------------------------------ */

/* X(NAME, "label"): one table for the enum and redis_status_name(). The
 * labels are also the outcome label of myriad_redis_commands_total. */
#define REDIS_STATUS_LIST(X)                                                            \
    X(OK,      "ok")       /* a reply (which may be nil, an integer, an array...) */   \
    X(ERROR,   "error")    /* the server answered with an error reply */             \
    X(TIMEOUT, "timeout")  /* no reply within the timeout */                         \
    X(DOWN,    "down")     /* not connected, breaker open, or the connection was     \
                              lost before the reply */                               \
    X(CLOSED,  "closed")   /* redis_free ran before the reply */

enum redis_status {
#define REDIS_STATUS_ENUM(name, label) REDIS_STATUS_##name,
    REDIS_STATUS_LIST(REDIS_STATUS_ENUM)
#undef REDIS_STATUS_ENUM
    REDIS_STATUS_COUNT
};

/* "ok", "error", "timeout", "down", "closed"; "?" out of range. */
const char *redis_status_name(enum redis_status s);

typedef void (*redis_cb)(void *arg, enum redis_status status, const redisReply *reply);

/* ---- configuration --------------------------------------------------------------- */

/* A parsed Redis URL:
 *   redis://[[user]:password@]host[:port][/db]     (port 6379, db 0)
 *   unix:///path/to/socket[?db=N]                  (also redis+unix://...)
 * The user and password may be percent-encoded; host may be [IPv6]. */
typedef struct redis_url {
    char host[256];      /* "" for a Unix socket */
    int  port;
    char path[108];      /* Unix socket path; "" for TCP */
    char user[128];      /* "" = none (AUTH password, or no AUTH) */
    char password[256];  /* "" = no AUTH */
    int  db;             /* SELECT db when not 0 */
} redis_url;

/* 0, or -EINVAL with one line in err naming what is wrong. */
int redis_url_parse(const char *url, redis_url *out, char *err, size_t errlen);

/* The URL the service uses: cfg->redis, else $REDIS_URL, else NULL (no
 * Redis). Points into cfg or the environment. */
const char *redis_config_url(const config *cfg);

/* Config-time check (the supervisor, before forking): 0 when no Redis is
 * configured or its URL parses; else -EINVAL with err naming the setting. */
int redis_config_check(const config *cfg, char *err, size_t errlen);

#define REDIS_BREAKER_FAILURES  5u     /* consecutive failures that open the breaker */
#define REDIS_BREAKER_COOLDOWN  1000u  /* ms open before a probe */
#define REDIS_BACKOFF_MIN       100u   /* ms: first reconnect delay */
#define REDIS_BACKOFF_MAX       5000u  /* ms: reconnect delay cap */
#define REDIS_MAX_INFLIGHT      65536u /* commands awaiting replies; beyond: DOWN */

/* Zero fields take the defaults above (timeout: 250 ms). */
typedef struct redis_options {
    const char *url;                   /* required */
    uint64_t    timeout_ms;            /* per command (and connect + handshake) */
    uint32_t    breaker_failures;
    uint64_t    breaker_cooldown_ms;
    uint64_t    backoff_min_ms;
    uint64_t    backoff_max_ms;
    uint32_t    max_inflight;
    struct metrics_worker *metrics;    /* this worker's metrics; NULL = none */
} redis_options;

/* ---- lifecycle ---------------------------------------------------------------------- */

/* Creates the client and starts connecting (non-blocking; a server that is
 * down is not an error: the client keeps retrying). NULL with err filled
 * on a bad URL or out of memory. Loop thread. */
redis *redis_new(loop *l, const redis_options *o, char *err, size_t errlen);

/* Closes both connections. Every accepted command still waiting gets its
 * callback with REDIS_STATUS_CLOSED, from inside this call; subscriptions
 * and trackers are dropped without further calls. Call it outside the loop
 * or from a timer or deferred callback — never from a redis callback or an
 * I/O callback (the client's loop_io must outlive the I/O batch). NULL is
 * a no-op. */
void redis_free(redis *r);

/* The worker's client for a request's handler, or NULL when the service
 * has no Redis. (http_server.redis: set right after http_server_init;
 * freed and cleared after the loop ends, after pubsub_server_fini and
 * before http_server_fini — modules look it up lazily and must not use it
 * from a fini that runs later.) */
redis *redis_of(const struct myr_req *req);

/* True when a command submitted now would go to the network: the command
 * connection is connected (or connecting) and the breaker is closed.
 * Callers (a cache) use it to skip Redis cheaply while it is down. */
bool redis_available(const redis *r);

/* ---- commands ------------------------------------------------------------------------- */

/* Any command, binary-safe: argv[i] is argvlen[i] bytes (NUL-free not
 * required). See the callback contract above. */
int redis_command_argv(redis *r, int argc, const char *const *argv, const size_t *argvlen,
                       redis_cb cb, void *arg);

/* GET key: OK with a REDIS_REPLY_STRING, or REDIS_REPLY_NIL when missing. */
int redis_get(redis *r, const void *key, size_t klen, redis_cb cb, void *arg);
/* SET key value [PX px_ms] (px_ms 0: no expiry): OK with status "OK". */
int redis_set(redis *r, const void *key, size_t klen, const void *val, size_t vlen,
              uint64_t px_ms, redis_cb cb, void *arg);
/* DEL key: OK with the integer count deleted. */
int redis_del(redis *r, const void *key, size_t klen, redis_cb cb, void *arg);
/* DEL k1 .. kn (n >= 1): one command. */
int redis_del_many(redis *r, size_t n, const void *const *keys, const size_t *klens,
                   redis_cb cb, void *arg);
/* PUBLISH channel data: OK with the integer count of receivers (of the
 * whole Redis deployment, not of this process). */
int redis_publish(redis *r, const void *channel, size_t chlen, const void *data, size_t len,
                  redis_cb cb, void *arg);

/* ---- pub/sub ------------------------------------------------------------------------------ */

enum redis_msg_kind {
    REDIS_MSG_MESSAGE,      /* a published message */
    REDIS_MSG_RESUBSCRIBED, /* the subscription is active again after the
                               subscriber connection was lost and reconnected:
                               messages published meanwhile were missed.
                               channel/pattern set, data NULL. */
};

typedef struct redis_message {
    enum redis_msg_kind kind;
    const char *pattern;    /* psubscribe: the matching pattern; else NULL */
    size_t      pattern_len;
    const char *channel;
    size_t      channel_len;
    const char *data;       /* valid during the callback only */
    size_t      len;
} redis_message;

typedef void (*redis_message_cb)(void *arg, const redis_message *m);

/* Subscribes (on_message, arg) to a channel (SUBSCRIBE) or a glob pattern
 * (PSUBSCRIBE). Several subscribers may share a channel: the client sends
 * one SUBSCRIBE and fans messages out. The subscription lasts until
 * unsubscribed or redis_free, across reconnections (re-subscribed
 * automatically, then REDIS_MSG_RESUBSCRIBED). 0, -EINVAL, -ENOMEM. The
 * first subscription opens the subscriber connection. */
int redis_subscribe(redis *r, const void *channel, size_t len, redis_message_cb on_message,
                    void *arg);
int redis_psubscribe(redis *r, const void *pattern, size_t len, redis_message_cb on_message,
                     void *arg);
/* Removes the subscription with this (channel, on_message, arg); the last
 * one of a channel sends UNSUBSCRIBE. Allowed from inside on_message (no
 * further call for it after it returns). 0 or -ENOENT. */
int redis_unsubscribe(redis *r, const void *channel, size_t len, redis_message_cb on_message,
                      void *arg);
int redis_punsubscribe(redis *r, const void *pattern, size_t len, redis_message_cb on_message,
                       void *arg);

/* ---- client-side caching (key tracking) -------------------------------------------------- */

typedef void (*redis_invalidate_cb)(void *arg, const char *key, size_t keylen);
typedef void (*redis_reset_cb)(void *arg);

/* Asks Redis to report changes to keys under any of the prefixes (BCAST
 * mode: every write to such a key by any client but this worker's command
 * connection — NOLOOP — is reported, no read needed first):
 *   subscriber connection:  CLIENT ID; SUBSCRIBE __redis__:invalidate
 *   command connection:     CLIENT TRACKING on REDIRECT <id> BCAST
 *                           PREFIX p1 PREFIX p2 ... NOLOOP
 * on_invalidate(arg, key, keylen) runs once per changed (or expired or
 * evicted) key under one of this tracker's prefixes; on_reset(arg) when
 * Redis flushed its keys, and whenever invalidations may have been lost:
 * after either connection is re-established (and tracking set up again),
 * and when tracking stops working. Whoever caches keys under the prefixes
 * must then drop them all. Prefixes are NUL-terminated ("" = every key);
 * overlapping prefixes of several trackers are merged. Setting tracking up
 * again after a new tracker is added resets every tracker. Writes by this
 * worker itself are not reported (NOLOOP): update your copy yourself.
 * 0, -EINVAL (n == 0 or n > 32, NULL callbacks), -ENOMEM. */
int redis_track_prefixes(redis *r, const char *const *prefixes, size_t n,
                         redis_invalidate_cb on_invalidate, redis_reset_cb on_reset,
                         void *arg);
/* Removes the tracker with these callbacks and arg. 0 or -ENOENT. */
int redis_untrack(redis *r, redis_invalidate_cb on_invalidate, void *arg);
/* True while tracking is set up on both connections, i.e. while an
 * invalidation would be delivered. A cache must not keep values learnt
 * while this is false (call it before storing a value read from Redis). */
bool redis_tracking_active(const redis *r);

/* ---- introspection -------------------------------------------------------------------------- */

enum redis_breaker { REDIS_BREAKER_CLOSED, REDIS_BREAKER_OPEN, REDIS_BREAKER_HALF_OPEN };

typedef struct redis_stats {
    bool               connected;     /* the command connection is ready */
    bool               sub_connected; /* the subscriber connection is ready */
    enum redis_breaker breaker;
    uint32_t           failures;      /* consecutive failures now */
    uint32_t           inflight;      /* accepted commands awaiting replies, timed-out
                                         ones whose late replies are due included */
    uint64_t           reconnects;    /* connections (re)established after the first */
    uint64_t           commands[REDIS_STATUS_COUNT]; /* completed, by outcome */
} redis_stats;

void redis_get_stats(const redis *r, redis_stats *out);

#endif
