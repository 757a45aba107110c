/* config — see config.h.
 *
 * The table `options` is the single description of every setting; the
 * parsers for flags, environment and file all go through set_option(), so a
 * value is validated the same way wherever it comes from, and the error names
 * where it came from (the flag, the variable, or file:line).
 */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum opt_type {
    OPT_INT, OPT_U32, OPT_BYTES32, OPT_SIZE, OPT_DURATION, OPT_STRING, OPT_WORKERS,
    OPT_BOOL,   /* bool; a flag without a value means true */
    OPT_LIST,   /* char[]: each occurrence appends a line; read with config_list_next() */
};

typedef struct option {
    const char   *name;
    enum opt_type type;
    size_t        offset;    /* into struct config */
    size_t        size;      /* OPT_STRING: buffer size */
    uint64_t      min, max;  /* numeric bounds, inclusive */
    const char   *def;       /* default, parsed like any input */
    const char   *help;
} option;

#define F(field) offsetof(config, field), sizeof(((config *)0)->field)

static const option options[] = {
    { "host", OPT_STRING, F(host), 0, 0, "127.0.0.1", "address to listen on" },
    { "port", OPT_INT, F(port), 1, 65535, "8080", "TCP port" },
    { "workers", OPT_WORKERS, F(workers), 0, 1024, "auto",
      "worker processes, N or auto (one per CPU; 1 = no supervisor)" },
    { "backlog", OPT_INT, F(backlog), 1, 65535, "4096", "listen backlog" },
    { "config", OPT_STRING, F(config_file), 0, 0, "", "config file of 'name value' lines" },
    { "max-connections", OPT_U32, F(max_connections), 1, 100000000, "100000",
      "open connections per worker" },
    { "max-request-line", OPT_BYTES32, F(max_request_line), 64, 1 << 20, "8192",
      "request line bytes (414 beyond)" },
    { "max-header-bytes", OPT_BYTES32, F(max_header_bytes), 256, 1 << 24, "16384",
      "request head bytes (431 beyond)" },
    { "max-headers", OPT_U32, F(max_headers), 1, 10000, "100", "header fields (431 beyond)" },
    { "max-body", OPT_SIZE, F(max_body), 0, (uint64_t)1 << 40, "1m",
      "request body bytes (413 beyond)" },
    { "header-timeout", OPT_DURATION, F(header_timeout), 1, 86400000, "10s",
      "time to receive a request head" },
    { "body-timeout", OPT_DURATION, F(body_timeout), 1, 86400000, "30s",
      "time between reads of a body" },
    { "idle-timeout", OPT_DURATION, F(idle_timeout), 1, 86400000 * 7ULL, "60s",
      "keep-alive idle time" },
    { "write-timeout", OPT_DURATION, F(write_timeout), 1, 86400000, "30s",
      "time without write progress" },
    { "shutdown-timeout", OPT_DURATION, F(shutdown_timeout), 0, 86400000, "30s",
      "graceful stop limit" },
    /* cluster: the supervisor and its workers (src/proc/cluster.c) */
    { "pin", OPT_BOOL, F(pin), 0, 0, "false", "pin worker i to the i-th allowed CPU" },
    { "user", OPT_STRING, F(user), 0, 0, "",
      "run workers as this user and its groups (start as root: bind, then drop)" },
    { "pid-file", OPT_STRING, F(pid_file), 0, 0, "", "write the main process id to this file" },
    { "log-file", OPT_STRING, F(log_file), 0, 0, "",
      "append the log to this file instead of stderr (SIGUSR1 reopens it)" },
    { "max-worker-memory", OPT_SIZE, F(max_worker_memory), 0, (uint64_t)1 << 50, "0",
      "replace a worker whose RSS exceeds this, then drain it (0 = no limit)" },
    { "max-requests", OPT_U32, F(max_requests), 0, 4000000000u, "0",
      "replace a worker after this many requests, +0-10% jitter (0 = no limit)" },
    { "max-worker-age", OPT_DURATION, F(max_worker_age), 0, 86400000ULL * 365, "0",
      "replace a worker after this long, +0-10% jitter (0 = no limit)" },
    { "crash-loop-deaths", OPT_U32, F(crash_loop_deaths), 0, 10000, "10",
      "this many worker crashes within --crash-loop-window stop the service (0 = never)" },
    { "crash-loop-window", OPT_DURATION, F(crash_loop_window), 1, 86400000, "10s",
      "the window of --crash-loop-deaths" },
    /* data layer (src/data) */
    { "db", OPT_STRING, F(db), 0, 0, "",
      "database: sqlite:PATH or postgres://user:pass@host:port/db "
      "(default $DATABASE_URL, else sqlite:myriad.db)" },
    { "db-pool", OPT_U32, F(db_pool), 1, 1024, "4",
      "per worker: connections to each PostgreSQL server, or SQLite threads" },
    { "db-timeout", OPT_DURATION, F(db_timeout), 1, 3600000, "5s",
      "longest a query may wait and run (then 503)" },
    { "db-replica", OPT_LIST, F(db_replica), 0, 0, "",
      "read replica URL of the primary (repeatable)" },
    { "db-shard", OPT_LIST, F(db_shard), 0, 0, "",
      "another shard's primary URL (repeatable; --db is shard 0)" },
    { "db-shard-replica", OPT_LIST, F(db_shard_replica), 0, 0, "",
      "I:URL, a read replica of shard I (repeatable)" },
    { "db-max-replica-lag", OPT_DURATION, F(db_max_replica_lag), 1, 86400000, "5s",
      "replicas lagging more are skipped for reads" },
    { "db-read-your-writes", OPT_BOOL, F(db_read_your_writes), 0, 0, "true",
      "a request that wrote reads from the primary" },
    { "db-query-budget", OPT_U32, F(db_query_budget), 0, 1000000, "0",
      "statements per request before logging an N+1 warning (0 = off)" },
    { "db-budget-strict", OPT_BOOL, F(db_budget_strict), 0, 0, "false",
      "fail statements beyond the budget (500) instead of logging" },
    /* Redis client (src/data/redis.c) */
    { "redis", OPT_STRING, F(redis), 0, 0, "",
      "Redis URL: redis://[[user]:password@]host[:port][/db] or unix:///path[?db=N] "
      "(default $REDIS_URL; none: no Redis)" },
    { "redis-timeout", OPT_DURATION, F(redis_timeout), 1, 3600000, "250ms",
      "longest a Redis command may wait for its reply (then it fails, timeout)" },
    /* cache: shared-memory L1 + Redis L2, cache-aside (src/cache) */
    { "cache-size", OPT_SIZE, F(cache_size), 0, (uint64_t)1 << 40, "64m",
      "shared-memory cache of all workers (L1), bytes; 0 = no L1" },
    { "cache-stripes", OPT_U32, F(cache_stripes), 1, 4096, "64",
      "L1 lock stripes (a power of two): workers contend only within one" },
    { "cache-ttl", OPT_DURATION, F(cache_ttl), 1, 86400000ULL * 365, "1h",
      "time to live of a cached value when the caller gives none" },
    { "cache-negative-ttl", OPT_DURATION, F(cache_negative_ttl), 0, 86400000, "5s",
      "how long an \"absent\" answer is cached (0 = not cached)" },
    { "cache-lease", OPT_DURATION, F(cache_lease), 1, 3600000, "2s",
      "a worker filling a missing key holds it this long; the others wait, then fill" },
    { "cache-prefix", OPT_STRING, F(cache_prefix), 0, 0, "c:",
      "prefix of the cache's keys in Redis (tracked for invalidation)" },
    /* worker threads: pool, loop lag, watchdog, overload (src/proc/offload.c) */
    { "threads", OPT_U32, F(threads), 1, 1024, "4", "thread-pool threads per worker" },
    { "offload-queue", OPT_U32, F(offload_queue), 1, 10000000, "1024",
      "jobs waiting for the thread pool per worker (503 beyond)" },
    { "pool-nice", OPT_INT, F(pool_nice), 0, 19, "10",
      "pool threads run this much nicer than the event loop (--pool-sched normal or batch)" },
    { "pool-sched", OPT_STRING, F(pool_sched), 0, 0, "idle",
      "pool threads' policy: idle (SCHED_IDLE: a waking loop preempts them at once; "
      "their share of a busy core is small, never zero), batch or normal" },
    { "stall-warn", OPT_DURATION, F(stall_warn), 0, 3600000, "100ms",
      "log a backtrace when the event loop is stuck this long (0 = off)" },
    { "max-loop-lag", OPT_DURATION, F(max_loop_lag), 0, 3600000, "0",
      "answer 503 while the mean loop lag over 0.5 s exceeds this (0 = off)" },
    { "hash-alg", OPT_STRING, F(hash_alg), 0, 0, "argon2id",
      "password hash of the reference POST /hash: argon2id or scrypt" },
    /* WebSocket (src/http/ws.c) */
    { "ws-max-message", OPT_SIZE, F(ws_max_message), 1, (uint64_t)1 << 30, "16m",
      "bytes of one received WebSocket message (close 1009 beyond)" },
    { "ws-max-queue", OPT_SIZE, F(ws_max_queue), 1, (uint64_t)1 << 40, "16m",
      "unsent bytes per WebSocket before the route's overflow policy (default: close 1008)" },
    { "ws-ping-interval", OPT_DURATION, F(ws_ping_interval), 0, 86400000, "30s",
      "ping a WebSocket peer silent this long (0 = never)" },
    { "ws-ping-timeout", OPT_DURATION, F(ws_ping_timeout), 1, 86400000, "30s",
      "close a WebSocket peer silent this long after a ping" },
    { "ws-close-timeout", OPT_DURATION, F(ws_close_timeout), 1, 3600000, "5s",
      "longest a WebSocket close handshake may take" },
    { "ws-deflate", OPT_BOOL, F(ws_deflate), 0, 0, "true",
      "negotiate permessage-deflate when a WebSocket client offers it" },
    { "ws-deflate-takeover", OPT_BOOL, F(ws_deflate_takeover), 0, 0, "true",
      "allow deflate context takeover (better ratio, ~300 KiB per connection)" },
    /* pub/sub (src/rt) */
    { "pubsub-bus-size", OPT_SIZE, F(pubsub_bus_size), 64 * 1024, (uint64_t)1 << 30, "8m",
      "shared ring carrying published messages between workers (a message: at most 1/8)" },
    { "pubsub-topics", OPT_U32, F(pubsub_topics), 64, 1u << 24, "16384",
      "(topic, worker) pairs counted for subscriber totals (GET /rooms)" },
    { "pubsub-channel-prefix", OPT_STRING, F(pubsub_channel_prefix), 0, 0, "myriad:pubsub:",
      "Redis channel of a topic: this prefix + the topic" },
    /* load balancer: myriad balance (src/proxy) */
    { "listen", OPT_STRING, F(listen), 0, 0, "", "balance: HOST:PORT to listen on "
      "(default --host/--port)" },
    { "backend", OPT_LIST, F(backends), 0, 0, "",
      "balance: a backend HOST:PORT[,weight=W] (repeatable)" },
    { "policy", OPT_STRING, F(policy), 0, 0, "rr", "balance: rr, leastconn, p2c or chash" },
    { "hash-key", OPT_STRING, F(hash_key), 0, 0, "client",
      "balance: what chash hashes: client, path or header:NAME" },
    { "hash-balance-factor", OPT_U32, F(hash_balance_factor), 0, 10000, "150",
      "balance: chash load bound, % of the mean (0 = unbounded, else >= 100)" },
    { "health-path", OPT_STRING, F(health_path), 0, 0, "",
      "balance: GET this path to check backends (none: no active checks)" },
    { "health-interval", OPT_DURATION, F(health_interval), 10, 3600000, "2s",
      "balance: time between health checks of a backend" },
    { "health-timeout", OPT_DURATION, F(health_timeout), 1, 3600000, "1s",
      "balance: longest a health check may take" },
    { "health-rise", OPT_U32, F(health_rise), 1, 1000, "2",
      "balance: passed checks in a row that bring a backend up" },
    { "health-fall", OPT_U32, F(health_fall), 1, 1000, "3",
      "balance: failed checks in a row that take a backend down" },
    { "eject-errors", OPT_U32, F(eject_errors), 0, 100000, "5",
      "balance: failed requests or 5xx in a row that eject a backend (0 = never)" },
    { "eject-time", OPT_DURATION, F(eject_time), 1, 86400000, "10s",
      "balance: how long an ejected backend stays out without active checks" },
    { "slow-start", OPT_DURATION, F(slow_start), 0, 3600000, "5s",
      "balance: a returning backend's weight ramps up over this long (0 = off)" },
    { "connect-timeout", OPT_DURATION, F(connect_timeout), 1, 3600000, "2s",
      "balance: time to connect to a backend" },
    { "backend-timeout", OPT_DURATION, F(backend_timeout), 1, 86400000, "30s",
      "balance: time a backend may take to answer or make progress" },
    { "backend-idle-timeout", OPT_DURATION, F(backend_idle_timeout), 1, 86400000, "30s",
      "balance: a pooled backend connection closes after this long idle" },
    { "pool-max-idle", OPT_U32, F(pool_max_idle), 0, 100000, "512",
      "balance: idle connections kept per backend per worker" },
    { "retries", OPT_U32, F(retries), 0, 7, "2",
      "balance: further attempts of a failed request on other backends" },
    { "retry-budget", OPT_U32, F(retry_budget), 0, 100, "20",
      "balance: retries allowed as % of requests, plus a burst of 10" },
    { "proxy-max-body", OPT_SIZE, F(proxy_max_body), 0, (uint64_t)1 << 50, "0",
      "balance: request body bytes (413 beyond; 0 = unlimited, bodies stream)" },
    { "admin-port", OPT_INT, F(admin_port), 0, 65535, "0",
      "admin port on --admin-host (0 = none); balance: /metrics and backend draining" },
    /* observability: metrics, dashboard, access log (src/obs) */
    { "metrics-path", OPT_STRING, F(metrics_path), 0, 0, "/metrics",
      "serve: Prometheus metrics here, PATH.json and /dashboard too; on --admin-port "
      "only when it is set (empty = none)" },
    { "admin-host", OPT_STRING, F(admin_host), 0, 0, "127.0.0.1",
      "address of --admin-port" },
    { "access-log", OPT_STRING, F(access_log), 0, 0, "",
      "access log file, or - for stdout (empty = off; SIGUSR1 reopens it)" },
    { "access-log-format", OPT_STRING, F(access_log_format), 0, 0, "combined",
      "access log lines: combined or json" },
    { "access-log-flush", OPT_DURATION, F(access_log_flush), 1, 60000, "1s",
      "longest an access log line waits in a worker's buffer" },
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static const option *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].name) == len && memcmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

/* Parses an unsigned decimal with an optional suffix from `units` (each a
 * suffix and its multiplier). Whole string must match. */
typedef struct unit { const char *suffix; uint64_t mult; } unit;

static int parse_scaled(const char *s, const unit *units, uint64_t *out)
{
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    for (const unit *u = units; u->suffix; u++) {
        if (strcmp(end, u->suffix) == 0) {
            if (u->mult && v > UINT64_MAX / u->mult)
                return -EINVAL;
            *out = (uint64_t)v * u->mult;
            return 0;
        }
    }
    return -EINVAL;
}

int config_parse_size(const char *s, uint64_t *out)
{
    static const unit units[] = {
        { "", 1 }, { "b", 1 }, { "k", 1ULL << 10 }, { "K", 1ULL << 10 },
        { "m", 1ULL << 20 }, { "M", 1ULL << 20 }, { "g", 1ULL << 30 }, { "G", 1ULL << 30 },
        { NULL, 0 },
    };
    return parse_scaled(s, units, out);
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    static const unit units[] = {
        { "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
        { NULL, 0 },
    };
    return parse_scaled(s, units, ms);
}

/* Validates and stores one value. `where` names the source for errors. */
static int set_option(config *c, const option *o, const char *val, const char *where,
                      char *err, size_t errlen)
{
    void *dst = (char *)c + o->offset;
    uint64_t v = 0;
    int rc = 0;
    switch (o->type) {
    case OPT_STRING:
        if (strlen(val) >= o->size) {
            snprintf(err, errlen, "%s: value too long", where);
            return -1;
        }
        strcpy(dst, val);
        return 0;
    case OPT_LIST: {
        size_t used = strlen(dst);
        if (strchr(val, '\n') || !*val || used + strlen(val) + 2 > o->size) {
            snprintf(err, errlen, "%s: invalid or too many values", where);
            return -1;
        }
        if (used)
            strcat(dst, "\n");
        strcat(dst, val);
        return 0;
    }
    case OPT_BOOL:
        if (!strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "on") || !strcmp(val, "1"))
            *(bool *)dst = true;
        else if (!strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "off") ||
                 !strcmp(val, "0"))
            *(bool *)dst = false;
        else {
            snprintf(err, errlen, "%s: invalid value '%s': expected true or false", where, val);
            return -1;
        }
        return 0;
    case OPT_WORKERS:
        if (strcmp(val, "auto") == 0) {
            *(int *)dst = 0;
            return 0;
        }
        /* fall through */
    case OPT_INT:
    case OPT_U32:
        rc = parse_scaled(val, (const unit[]){ { "", 1 }, { NULL, 0 } }, &v);
        break;
    case OPT_SIZE:
    case OPT_BYTES32:
        rc = config_parse_size(val, &v);
        break;
    case OPT_DURATION:
        rc = config_parse_duration(val, &v);
        break;
    }
    if (rc || v < o->min || v > o->max) {
        const char *kind = o->type == OPT_SIZE || o->type == OPT_BYTES32
                               ? "a size (e.g. 512k, 1m)"
                         : o->type == OPT_DURATION ? "a duration (e.g. 500ms, 10s, 2m)"
                         : o->type == OPT_WORKERS ? "a number or 'auto'"
                         : "a number";
        snprintf(err, errlen, "%s: invalid value '%s': expected %s between %llu and %llu",
                 where, val, kind, (unsigned long long)o->min, (unsigned long long)o->max);
        return -1;
    }
    switch (o->type) {
    case OPT_INT:
    case OPT_WORKERS:
        *(int *)dst = (int)v;
        break;
    case OPT_U32:
    case OPT_BYTES32:
        *(uint32_t *)dst = (uint32_t)v;
        break;
    default:
        *(uint64_t *)dst = v;
    }
    return 0;
}

void config_defaults(config *c)
{
    memset(c, 0, sizeof(*c));
    char err[256];
    for (size_t i = 0; i < NOPTIONS; i++)
        if (*options[i].def && set_option(c, &options[i], options[i].def, options[i].name, err, sizeof(err)))
            abort();   /* a bad default is a programming error */
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static int load_file(config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[2048], where[1100];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s: line too long", where);
            rc = -1;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        size_t klen = strcspn(s, " \t");
        const option *o = find_option(s, klen);
        char *val = trim(s + klen);
        if (!o || o->offset == offsetof(config, config_file)) {
            snprintf(err, errlen, "%s: unknown setting '%.*s'", where, (int)klen, s);
            rc = -1;
        } else if (*val == '\0') {
            snprintf(err, errlen, "%s: setting '%s' has no value", where, o->name);
            rc = -1;
        } else {
            rc = set_option(c, o, val, where, err, errlen);
        }
    }
    fclose(f);
    return rc;
}

static void env_name(const char *opt, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "MYRIAD_");
    for (; *opt && n + 1 < cap; opt++)
        out[n++] = *opt == '-' ? '_' : (char)toupper((unsigned char)*opt);
    out[n] = '\0';
}

static int load_env(config *c, char *err, size_t errlen)
{
    char name[64];
    for (size_t i = 0; i < NOPTIONS; i++) {
        if (options[i].offset == offsetof(config, config_file))
            continue;
        env_name(options[i].name, name, sizeof(name));
        const char *v = getenv(name);
        if (v && set_option(c, &options[i], v, name, err, errlen))
            return -1;
    }
    return 0;
}

/* Splits "--name=value" / "--name value". Returns the option or NULL. */
static const option *flag_option(const char *arg, const char **inline_val)
{
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    *inline_val = eq ? eq + 1 : NULL;
    return find_option(name, eq ? (size_t)(eq - name) : strlen(name));
}

enum config_result config_load(config *c, int argc, char **argv, int first, char *err,
                               size_t errlen)
{
    config_defaults(c);
    /* pass 1: --help, --version and where the config file is */
    const char *file = getenv("MYRIAD_CONFIG");
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return CONFIG_HELP;
        if (strcmp(argv[i], "--version") == 0)
            return CONFIG_VERSION;
        if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[++i];
    }
    if (file && *file) {
        if (set_option(c, find_option("config", 6), file, "--config", err, errlen) ||
            load_file(c, file, err, errlen))
            return CONFIG_ERROR;
    }
    if (load_env(c, err, errlen))
        return CONFIG_ERROR;
    /* pass 2: flags */
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i], *val;
        const option *o = strncmp(arg, "--", 2) == 0 ? flag_option(arg, &val) : NULL;
        if (!o) {
            snprintf(err, errlen, "unknown %s '%s' (see --help)",
                     arg[0] == '-' ? "flag" : "argument", arg);
            return CONFIG_ERROR;
        }
        if (!val && o->type == OPT_BOOL) {
            val = "true";   /* --flag alone */
        } else if (!val) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s needs a value", o->name);
                return CONFIG_ERROR;
            }
            val = argv[++i];
        }
        char where[80];
        snprintf(where, sizeof(where), "--%s", o->name);
        if (set_option(c, o, val, where, err, errlen))
            return CONFIG_ERROR;
    }
    return CONFIG_OK;
}

void config_usage(int fd, const char *prog)
{
    config_usage_cmd(fd, prog, "serve");
}

/* balance (src/proxy) prints the same reference under its own command line */
void config_usage_cmd(int fd, const char *prog, const char *cmd)
{
    dprintf(fd, "usage: %s %s [flags]\n\nflags (also 'name value' lines in --config FILE,"
                " or MYRIAD_NAME in the environment):\n", prog, cmd);
    for (size_t i = 0; i < NOPTIONS; i++) {
        const option *o = &options[i];
        dprintf(fd, "  --%-20s %s%s%s%s\n", o->name, o->help, *o->def ? " (default " : "",
                o->def, *o->def ? ")" : "");
    }
    dprintf(fd, "  --%-20s %s\n  --%-20s %s\n", "help", "show this help", "version",
            "show the version");
}

const char *config_string(const config *c, const char *name)
{
    const option *o = find_option(name, strlen(name));
    return o && o->type == OPT_STRING ? (const char *)c + o->offset : NULL;
}

const char *config_list_next(const char *list, const char **cursor, size_t *len)
{
    const char *p = *cursor ? *cursor : list;
    if (!*p)
        return NULL;
    const char *nl = strchr(p, '\n');
    *len = nl ? (size_t)(nl - p) : strlen(p);
    *cursor = nl ? nl + 1 : p + *len;
    return p;
}
