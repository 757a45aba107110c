/* config — the server's settings from flags, environment and a config file.
 *
 * One table in config.c describes every setting once: its name (the flag is
 * "--name", the config-file key is "name", the environment variable is
 * MYRIAD_NAME with '-' as '_'), its type, bounds, default and help text.
 * Precedence: flag > environment > config file > default.
 *
 * Types: integers with bounds; sizes with k/m/g suffixes (KiB/MiB/GiB);
 * durations with ms/s/m/h suffixes (a bare number is seconds), stored in ms;
 * strings; "N|auto" worker counts (auto stored as 0); booleans (a flag
 * alone means true; values true/false, yes/no, on/off, 1/0); lists (a
 * repeatable setting: each occurrence appends, across file, environment and
 * flags alike; config_list_next() reads them).
 */
#ifndef MYR_CONFIG_H
#define MYR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct config {
    char     host[256];          /* address to bind */
    int      port;               /* TCP port */
    int      workers;            /* worker processes; 0 = one per CPU */
    int      backlog;            /* listen(2) backlog */
    char     config_file[1024];  /* "" when none */
    uint32_t max_connections;    /* open connections per worker */
    uint32_t max_request_line;   /* bytes, else 414 */
    uint32_t max_header_bytes;   /* bytes of the whole head, else 431 */
    uint32_t max_headers;        /* header fields, else 431 */
    uint64_t max_body;           /* bytes, else 413 */
    uint64_t header_timeout;     /* ms to receive a whole head, from its first byte */
    uint64_t body_timeout;       /* ms between two reads of a body */
    uint64_t idle_timeout;       /* ms a keep-alive connection may wait for a request */
    uint64_t write_timeout;      /* ms without write progress */
    uint64_t shutdown_timeout;   /* ms a graceful stop may take */
    /* cluster: the supervisor and its workers (src/proc/cluster.c) */
    bool     pin;                /* worker i runs on the i-th CPU of the affinity mask */
    char     user[64];           /* workers drop to this user; "" = keep the caller's */
    char     pid_file[1024];     /* main process id written here; "" = none */
    char     log_file[1024];     /* log appended here instead of stderr; "" = stderr */
    uint64_t max_worker_memory;  /* bytes of worker RSS before replacement; 0 = none */
    uint32_t max_requests;       /* requests before replacement (+jitter); 0 = none */
    uint64_t max_worker_age;     /* ms before replacement (+jitter); 0 = none */
    uint32_t crash_loop_deaths;  /* crashes within crash_loop_window that stop; 0 = never */
    uint64_t crash_loop_window;  /* ms */
    /* data layer (src/data) */
    char     db[1024];           /* database URL; "" = $DATABASE_URL or sqlite:myriad.db */
    uint32_t db_pool;            /* per worker: PostgreSQL connections per server, SQLite threads */
    uint64_t db_timeout;         /* ms a query may wait and run */
    char     db_replica[4096];   /* read replicas of the primary, one URL a line */
    char     db_shard[4096];     /* more shards after --db (shard 0), one URL a line */
    char     db_shard_replica[4096]; /* "I:URL" lines: a replica of shard I */
    uint64_t db_max_replica_lag; /* ms of replay lag beyond which a replica is skipped */
    bool     db_read_your_writes;/* a request that wrote reads from the primary */
    uint32_t db_query_budget;    /* statements per request before a warning; 0 = off */
    bool     db_budget_strict;   /* over budget: fail the statement instead */
    /* Redis client (src/data/redis.c) */
    char     redis[1024];        /* Redis URL; "" = $REDIS_URL, else no Redis */
    uint64_t redis_timeout;      /* ms a command may wait for its reply */
    /* cache (src/cache) */
    uint64_t cache_size;         /* bytes of the shared-memory L1; 0 = none */
    uint32_t cache_stripes;      /* L1 lock stripes, a power of two */
    uint64_t cache_ttl;          /* ms: default time to live */
    uint64_t cache_negative_ttl; /* ms an "absent" fill is cached; 0 = not */
    uint64_t cache_lease;        /* ms a fill lease lasts (a dead filler's) */
    char     cache_prefix[64];   /* key prefix in Redis, tracked for invalidation */
    /* worker threads: pool, loop lag, watchdog, overload (src/proc/offload.c) */
    uint32_t threads;            /* pool threads per worker */
    uint32_t offload_queue;      /* jobs waiting per worker pool; 503 beyond */
    int      pool_nice;          /* pool threads' nice value above the loop's, 0..19 */
    char     pool_sched[8];      /* pool threads' policy: normal, batch or idle (pool.h) */
    uint64_t stall_warn;         /* ms the loop may be stuck before the watchdog logs; 0 = off */
    uint64_t max_loop_lag;       /* ms of mean loop lag (0.5 s window) that sheds load; 0 = off */
    char     hash_alg[16];       /* the reference service's POST /hash: argon2id or scrypt */
    /* WebSocket (src/http/ws.c) */
    uint64_t ws_max_message;     /* bytes of one received message (after inflating), else 1009 */
    uint64_t ws_max_queue;       /* unsent bytes per connection before the overflow policy */
    uint64_t ws_ping_interval;   /* ms without input before a keep-alive ping; 0 = never */
    uint64_t ws_ping_timeout;    /* ms after a ping without any input: the peer is dead */
    uint64_t ws_close_timeout;   /* ms a close handshake may take before the socket is closed */
    bool     ws_deflate;         /* negotiate permessage-deflate when offered */
    bool     ws_deflate_takeover;/* allow context takeover (keeps ~300 KiB of zlib state
                                    per connection that compresses) */
    /* pub/sub (src/rt): made before fork, kept across reloads */
    uint64_t pubsub_bus_size;    /* bytes of the local bus ring shared by the workers */
    uint32_t pubsub_topics;      /* (topic, worker) entries of the shared subscriber counts */
    char     pubsub_channel_prefix[64]; /* Redis channel = prefix + topic */
    /* load balancer: myriad balance (src/proxy) */
    char     listen[300];        /* "HOST:PORT" to balance on; "" = --host/--port */
    char     backends[16384];    /* "HOST:PORT[,weight=W]" lines (--backend, repeatable) */
    char     policy[16];         /* rr | leastconn | p2c | chash */
    char     hash_key[128];      /* chash key: client | path | header:NAME */
    uint32_t hash_balance_factor;/* chash bounded load, % of the mean; 0 = unbounded */
    char     health_path[1024];  /* active check target; "" = no active checks */
    uint64_t health_interval;    /* ms between checks of one backend */
    uint64_t health_timeout;     /* ms a check may take */
    uint32_t health_rise;        /* passed checks in a row that bring a backend up */
    uint32_t health_fall;        /* failed checks in a row that take it down */
    uint32_t eject_errors;       /* failed requests (or 5xx) in a row that eject; 0 = never */
    uint64_t eject_time;         /* ms an ejected backend stays out without active checks */
    uint64_t slow_start;         /* ms over which a returning backend's weight ramps up */
    uint64_t connect_timeout;    /* ms to connect to a backend */
    uint64_t backend_timeout;    /* ms a backend may take to answer or make progress */
    uint64_t backend_idle_timeout; /* ms a pooled backend connection may stay idle */
    uint32_t pool_max_idle;      /* idle connections kept per backend per worker */
    uint32_t retries;            /* further attempts per request (other backends) */
    uint32_t retry_budget;       /* retries allowed, % of requests (+ a burst of 10) */
    uint64_t proxy_max_body;     /* bytes of a request body; 0 = unlimited (streamed) */
    int      admin_port;         /* admin API port on admin_host; 0 = none */
    /* observability: metrics, dashboard, access log (src/obs); also admin_port */
    char     metrics_path[256];  /* Prometheus text here, JSON at PATH.json; "" = none */
    char     admin_host[256];    /* address the admin port binds */
    char     access_log[1024];   /* "" = off, "-" = standard output */
    char     access_log_format[16]; /* combined or json */
    uint64_t access_log_flush;   /* ms a line may wait in the worker's buffer */
} config;

enum config_result {
    CONFIG_OK,
    CONFIG_HELP,      /* --help: print config_usage() and exit 0 */
    CONFIG_VERSION,   /* --version */
    CONFIG_ERROR,     /* err holds one line naming the bad input; exit 2 */
};

void config_defaults(config *c);

/* Fills c from defaults, the config file (--config or MYRIAD_CONFIG), the
 * environment, then argv[first..argc). On CONFIG_ERROR, err holds a line
 * without a trailing newline. */
enum config_result config_load(config *c, int argc, char **argv, int first,
                               char *err, size_t errlen);

/* Writes the flag reference to fd. */
void config_usage(int fd, const char *prog);
/* The same with another command in the usage line ("balance ..."). */
void config_usage_cmd(int fd, const char *prog, const char *cmd);

/* Iterates an OPT_LIST field (values in the order given): start with
 * *cursor = NULL; returns each value (not NUL-terminated, *len bytes) and
 * NULL after the last. */
const char *config_list_next(const char *list, const char **cursor, size_t *len);

/* The value of the string setting called name ("hash-alg"), or NULL when
 * there is no such string setting. Points into c. */
const char *config_string(const config *c, const char *name);

/* Parsers shared with other modules; 0 or -EINVAL. */
int config_parse_size(const char *s, uint64_t *out);
int config_parse_duration(const char *s, uint64_t *ms);

#endif
