/* server — one worker's HTTP server: the listening socket, the set of open
 * connections, limits, per-loop pools, and graceful draining.
 *
 * A server belongs to one loop (one thread); nothing in it is shared. The
 * pools exist so an idle keep-alive connection holds no buffer and no
 * request: buffers and request objects are taken when bytes arrive and given
 * back when the connection goes idle.
 */
#ifndef MYR_HTTP_SERVER_H
#define MYR_HTTP_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/loop.h"
#include "http/http_parser.h"
#include "http/http_response.h"

typedef struct http_conn http_conn;
typedef struct http_server http_server;
struct myr_app;
struct myr_req;

#define SERVER_BUF_SIZE   4096u   /* the pooled input buffer */
#define SERVER_POOL_BUFS  256u    /* pooled buffers kept at most */
#define SERVER_POOL_REQS  256u    /* pooled request objects kept at most */

struct http_server {
    loop           *loop;
    const config   *cfg;
    struct myr_app *app;
    http_limits     limits;

    loop_io         listen_io;     /* fd -1 once closed */
    loop_timer      accept_timer;  /* re-enables accepting after EMFILE */
    loop_timer      drain_timer;   /* shutdown_timeout while draining */

    http_conn      *conns;         /* every open connection, doubly linked */
    uint32_t        nconns;
    uint32_t        live_reqs;     /* requests not yet completed, including
                                      cancelled ones a handler still holds */
    uint32_t        upgraded;      /* sockets handed to another protocol
                                      (http_conn_detach) and still open */
    bool            draining;
    void          (*on_drained)(http_server *s);
    /* Called once when a drain starts, so upgraded protocols can say
     * goodbye (WebSocket close 1001) and close; each close must call
     * server_upgraded_closed(). */
    void          (*on_drain_upgraded)(http_server *s, void *arg);
    void           *on_drain_upgraded_arg;

    http_date       date;

    char          **free_bufs;     /* SERVER_BUF_SIZE buffers */
    uint32_t        nfree_bufs;
    struct myr_req *free_reqs;     /* linked through their conn field */
    uint32_t        nfree_reqs;
    size_t          req_size;      /* sizeof(myr_req) + header array */

    uint64_t        accepted;      /* connections accepted, total */
    uint64_t        rejected;      /* connections refused at max_connections */
    uint64_t        requests;      /* requests dispatched, total */

    /* worker threads (src/proc: offload.c creates them with the server) */
    struct pool    *pool;          /* offload pool; its threads start on the first job */
    struct lag     *lag;           /* loop-lag monitor */
    struct watchdog *watchdog;     /* stall watchdog; NULL when --stall-warn is 0 */
    uint64_t        shed;          /* requests answered 503 by overload shedding */
    uint64_t        offload_refused; /* myr_offload calls answered 503: queue full */

    struct myr_db  *db;            /* data layer: the worker's database, NULL if unused */
    struct redis   *redis;         /* the worker's Redis client (data/redis.h), NULL when
                                      none; set after http_server_init, cleared before
                                      http_server_fini (src/proc/worker.c) */

    struct ws_server *ws;          /* WebSocket connections and zlib pools (http/ws.c);
                                      NULL while no WebSocket is open */
    struct myr_pubsub *pubsub;     /* pub/sub topics and bus reader (src/rt/pubsub.c);
                                      made on first use, freed by pubsub_server_fini */

    /* observability (src/obs/obs.h): set by http_server_init, never NULL after */
    struct metrics_worker *metrics;/* this worker's cells in the metrics registry */
    struct obs_server *obs;        /* access log, sampler, routes, admin port */
};

/* Starts serving on listen_fd (the server owns it from here). 0 or -errno. */
int  http_server_init(http_server *s, loop *l, const config *cfg, struct myr_app *app,
                      int listen_fd);
/* Closes the listening socket; open connections go on. Idempotent. */
void http_server_stop_accepting(http_server *s);
/* Stops accepting, closes idle connections, lets in-flight requests finish
 * (answered with Connection: close) and calls on_drained when the last
 * connection and request are gone, or after cfg->shutdown_timeout. */
void http_server_drain(http_server *s, void (*on_drained)(http_server *s));
/* Closes everything at once. Requests still held by handlers stay valid
 * (cancelled) until they complete; call before loop_free only when none are. */
void http_server_fini(http_server *s);

/* Pools (loop thread). A NULL return means out of memory. */
char *server_buf_get(http_server *s);
void  server_buf_put(http_server *s, char *b);
struct myr_req *server_req_get(http_server *s);
void  server_req_put(http_server *s, struct myr_req *r);

/* The worker's thread pool (src/proc/pool.h), for jobs that need no request. */
static inline struct pool *server_pool(http_server *s) { return s->pool; }

/* An upgraded socket (see http_conn_detach) was closed. */
void server_upgraded_closed(http_server *s);

/* Called by connections when they close and by requests when they complete,
 * so a drain can finish. */
void server_check_drained(http_server *s);

#endif
