/* obs — the observability of one worker's HTTP server, wired into it by a
 * handful of hooks: the metrics handle, the access log, a once-a-second
 * sampler, the routes /metrics, /metrics.json and /dashboard, and the
 * optional admin port.
 *
 *   http_server_init   obs_server_init    (first: others may add metric families)
 *   http_server_drain  obs_server_drain   closes the admin listener
 *   http_server_fini   obs_server_fini    (last: flushes the access log)
 *   req_dispatch       obs_dispatch       the routes, before the app's router
 *   req_finish         obs_request_done   counts the request, logs its line
 *
 * Metrics handle. The worker's handle is the process's (metrics_self()),
 * attached by the supervisor's worker start-up to the worker's slot of the
 * registry made before fork. Without one (one process, no supervisor, or a
 * test) obs makes a registry of one slot in memory of its own and attaches
 * it for the life of the process.
 *
 * Routes. GET and HEAD only (else 405). --metrics-path (default /metrics)
 * is the Prometheus text; the same path + ".json" the JSON view; /dashboard
 * the page. With --admin-port they are served only there, on a second
 * listening socket of each worker (SO_REUSEPORT, so every worker binds its
 * own, bound to --admin-host, 127.0.0.1 by default), whose connections are
 * ordinary connections of the same server flagged `admin`: they answer
 * only these routes (404 otherwise) and may exceed --max-connections by
 * OBS_ADMIN_EXTRA, so the service can be watched when it is full.
 *
 * Sampler: RSS (/proc/self/statm), heap in use (mallinfo2), the loop-lag
 * histogram (proc/lag, re-bucketed), offload pool depth and threads, and
 * requests shed for overload (server counters), every OBS_SAMPLE_MS.
 *
 * One server per process: the sampler and the handle are the process's.
 */
#ifndef MYR_OBS_OBS_H
#define MYR_OBS_OBS_H

#include <stdbool.h>

#include "core/loop.h"
#include "http/http_conn.h"
#include "http/request.h"
#include "http/server.h"
#include "data/db.h"
#include "obs/access_log.h"
#include "obs/metrics.h"

#define OBS_SAMPLE_MS     1000
#define OBS_ADMIN_EXTRA   16     /* admin connections allowed beyond --max-connections */
#define OBS_PATH_MAX      256

typedef struct obs_server obs_server;
struct obs_server {
    access_log     *log;              /* NULL when --access-log is off */
    http_server    *srv;
    loop_timer      tick;             /* the sampler */
    loop_io         admin_io;         /* admin listener; fd -1 when none */
    loop_timer      admin_pause;      /* re-enables it after EMFILE */
    loop_signal     sigusr1;          /* reopens the access log */
    bool            watching_usr1;
    bool            on_main;          /* routes on the main port (no admin port) */
    size_t          metrics_len;      /* strlen(cfg->metrics_path) */
    char            json_path[OBS_PATH_MAX + 8];
    int             statm_fd;         /* /proc/self/statm, -1 if unreadable */
    /* last values sampled from per-process counters, so each tick adds
     * only what changed (the cells keep the slot's totals) */
    uint64_t        last_overload;
    uint64_t        last_lag[METRICS_LAG_BOUNDS + 2];
};

/* 0, or -errno after logging why (bad setting, bind, open, memory). */
int  obs_server_init(http_server *s);
void obs_server_drain(http_server *s);
void obs_server_fini(http_server *s);

/* The routes (or, on the admin port, a 404): true when r was answered. */
bool obs_route(myr_req *r);

/* req_dispatch, first: true when r was for an observability route (or
 * arrived on the admin port) and has been answered. Inline: on the main
 * port with an admin port set, it costs a test per request. */
static inline bool obs_dispatch(myr_req *r)
{
    const obs_server *o = r->srv->obs;
    if (!o || (!o->on_main && !(r->conn && r->conn->admin)))
        return false;
    return obs_route(r);
}

/* A response is complete (req_finish): counters, histogram, access log. */
static inline void obs_request_done(myr_req *r)
{
    http_server *s = r->srv;
    metrics_http_request(s->metrics, r->h.method_id, r->status, loop_now(s->loop) - r->start_ns);
    if (r->db_queries && s->db)
        db_request_observe(s->db, r->db_queries);
    if (s->obs && s->obs->log)
        access_log_request(s->obs->log, r);
}

#endif
