/* balancer — one worker process of `myriad balance`: its loop, listening
 * socket, client sessions, backend set and policy, pools, retry budget,
 * admin server, signals, and what it publishes to the other workers.
 *
 * Everything here belongs to one loop (one process); workers share only the
 * region in shared.h (drain flags, counters). The balancer keeps its own
 * copy of the configuration, so an in-process reload (SIGHUP with a single
 * worker and no supervisor) can rewrite it; readers take values from it
 * when they need them, so new timeouts apply to new waits. Under the
 * supervisor a reload is a new generation of workers instead (cluster.h)
 * and the worker ignores SIGHUP.
 *
 * Stopping, as `serve`'s workers do (proc/worker.c): SIGTERM/SIGINT first
 * stop accepting and mark every response Connection: close for up to a
 * second, so keep-alive clients leave after their next answer instead of
 * racing a close; then idle connections are closed and requests in flight
 * finish, bounded by shutdown-timeout. A second SIGINT or SIGQUIT stops at
 * once.
 */
#ifndef MYR_PROXY_BALANCER_H
#define MYR_PROXY_BALANCER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/loop.h"
#include "http/http_parser.h"
#include "http/http_response.h"
#include "http/server.h"
#include "proc/cluster.h"
#include "proxy/lb.h"
#include "proxy/metrics.h"

typedef struct backend backend;
typedef struct session session;
typedef struct exchange exchange;
typedef struct bal_shared bal_shared;

#define BAL_BUF_SIZE    16384u   /* pooled I/O buffer */
#define BAL_POOL_BUFS   256u     /* pooled buffers kept at most */
#define BAL_POOL_EXS    256u     /* pooled exchange objects kept at most */

/* What consistent hashing hashes. */
enum hash_on { HASH_CLIENT, HASH_PATH, HASH_HEADER };

/* What proxy_main hands every worker (through cluster_run's arg). */
typedef struct balance_ctx {
    int         argc;        /* the command line, for reloads */
    char      **argv;
    int         first;       /* argv index of the first flag */
    int         admin_fd;    /* inherited admin listening socket, or -1 */
    bal_shared *shared;      /* made before fork */
} balance_ctx;

typedef struct balancer {
    loop         *loop;
    config        cfg_own;        /* this worker's configuration (reload rewrites it) */
    config       *cfg;            /* &cfg_own */
    balance_ctx  *ctx;
    cluster_worker *self;
    http_limits   limits;         /* client request heads */
    http_limits   resp_limits;    /* backend response heads */
    enum hash_on  hash_on;
    const char   *hash_header;    /* HASH_HEADER: the field name (in cfg) */
    size_t        hash_header_len;
    char          default_host[300];  /* Host for requests without one */

    loop_io       listen_io;      /* fd -1 once closed */
    loop_timer    accept_timer;   /* re-enables accepting after EMFILE */
    loop_timer    stop_timer;     /* the phases of a graceful stop */
    loop_timer    tick_timer;     /* drain flags from other workers; publishing */
    uint64_t      stop_phase_end; /* loop ns the current stop phase ends */

    session      *sessions;       /* every open client session */
    uint32_t      nsessions;
    uint32_t      nexchanges;     /* requests in progress */

    backend     **backends;       /* the configured set, in config order */
    uint32_t     *weights;        /* scratch: effective weights for a pick */
    uint32_t      nbackends;
    backend      *retired;        /* removed by a reload, still in use */
    lb            policy;

    char        **free_bufs;      /* BAL_BUF_SIZE buffers */
    uint32_t      nfree_bufs;
    exchange     *free_exs;
    uint32_t      nfree_exs;
    size_t        ex_size;        /* sizeof(exchange) + two header arrays */

    int64_t       retry_milli;    /* retry budget, in 1/1000 of a retry */
    http_date     date;
    bal_stats     st;
    bool          draining;       /* stopping: no new requests on kept connections */
    bool          stopping;       /* a stop signal was received */
    bool          closing_idle;   /* phase 2 of a stop: idle sessions close */
    bool          stopped;        /* the loop was told to stop */
    bal_shared   *shared;
    uint32_t      row;            /* this worker's row in shared */
    bool          publishing;     /* the row is ours */
    uint32_t      drain_seq;      /* shared drain flags last applied */

    http_server   admin;          /* --admin-port, on the same loop */
    config        admin_cfg;      /* its settings: ours without serve's own admin
                                     port and metrics routes (src/obs) */
    struct myr_app *admin_app;
    bool          admin_on;
    loop_signal   sigterm, sigint, sigquit, sighup, sigusr1;
} balancer;

/* A cluster_ops worker_main: serves on listen_fd with cfg until stopped.
 * arg is the balance_ctx. Returns the exit status. */
int balancer_main(void *arg, const config *cfg, int listen_fd, cluster_worker *self);

/* Pools (loop thread). NULL means out of memory. */
char *balancer_buf_get(balancer *b);
void  balancer_buf_put(balancer *b, char *p);
/* Gives back a buffer from the pool or grown past it; x becomes empty. */
void  balancer_buf_release(balancer *b, buf *x);

/* Retry budget: every request adds retry-budget percent of one retry, up
 * to a burst of RETRY_BURST; a retry spends one. */
void  balancer_request_counted(balancer *b);
bool  balancer_retry_allowed(balancer *b);

/* A session closed or an exchange ended: a stop may be complete. */
void  balancer_check_drained(balancer *b);

/* Publishes this worker's counters to the shared region now. */
void  balancer_publish(balancer *b);

#endif
