/* offload — see offload.h. myr_offload and the per-server pool, lag
 * monitor and watchdog.
 *
 * An offload lives in the request's arena, so it dies with the request; the
 * request cannot complete before done runs (the handler answers from done,
 * and a cancelled request is only released when answered), so the offload
 * outlives its job. Cancellation rides on myr_req_on_cancel: the offload's
 * callback cancels the job if it is still queued and then calls whatever
 * callback the handler had set before (chained, not replaced); done puts
 * the handler's callback back. That hook being installed is also how a
 * second offload of the same request is recognised and refused (-EBUSY).
 */
#include "proc/offload.h"

#include <errno.h>
#include <stdio.h>

#include "core/log.h"
#include "http/http_conn.h"
#include "http/request.h"
#include "http/server.h"
#include "proc/lag.h"
#include "proc/pool.h"
#include "proc/watchdog.h"

typedef struct offload {
    pool_job  job;
    myr_req  *req;
    void    (*work)(void *arg);
    void    (*done)(myr_req *req, void *arg);
    void     *arg;
    void    (*prev_cancel)(myr_req *req, void *arg);   /* the handler's, chained */
    void     *prev_cancel_arg;
} offload;

/* ---- per-server objects ---------------------------------------------------------- */

int offload_check_config(const config *cfg, char *err, size_t errlen)
{
    enum pool_sched sched;
    if (pool_sched_parse(cfg->pool_sched, &sched) == 0)
        return 0;
    snprintf(err, errlen, "--pool-sched: invalid value '%s': expected normal, batch or idle",
             cfg->pool_sched);
    return -1;
}

int offload_server_init(http_server *s)
{
    const config *c = s->cfg;
    enum pool_sched sched;
    if (pool_sched_parse(c->pool_sched, &sched) < 0) {   /* e.g. after a reload */
        char err[128];
        offload_check_config(c, err, sizeof(err));
        log_error("%s", err);
        return -EINVAL;
    }
    s->pool = pool_new(s->loop, c->threads, c->offload_queue);
    if (!s->pool)
        return -ENOMEM;
    pool_set_nice(s->pool, c->pool_nice);
    pool_set_sched(s->pool, sched);
    s->lag = lag_new(s->loop, LAG_INTERVAL_MS, c->stall_warn);
    if (!s->lag) {
        pool_free(s->pool);
        s->pool = NULL;
        return -ENOMEM;
    }
    /* NULL when --stall-warn is 0 or the thread cannot start (logged):
     * serving goes on without it */
    s->watchdog = watchdog_new(s->lag, c->stall_warn);
    return 0;
}

void offload_server_fini(http_server *s)
{
    watchdog_free(s->watchdog);
    s->watchdog = NULL;
    pool_free(s->pool);   /* runs the last dones: requests still use lag/server */
    s->pool = NULL;
    lag_free(s->lag);
    s->lag = NULL;
}

/* ---- myr_offload --------------------------------------------------------------------- */

static void offload_work(pool_job *job)
{
    offload *o = container_of(job, offload, job);
    o->work(o->arg);
}

static void offload_on_cancel(myr_req *req, void *arg)
{
    offload *o = arg;
    pool_cancel(req->srv->pool, &o->job);   /* if queued: skipped, done follows */
    if (o->prev_cancel)
        o->prev_cancel(req, o->prev_cancel_arg);
}

static void offload_done(pool_job *job, int status)
{
    offload *o = container_of(job, offload, job);
    myr_req *req = o->req;
    http_server *s = req->srv;
    if (req->on_cancel == offload_on_cancel) {   /* ours, unless the handler replaced it */
        req->on_cancel = o->prev_cancel;
        req->cancel_arg = o->prev_cancel_arg;
    }
    /* Work is only ever skipped for a cancelled request: if the pool
     * stopped under a live one, cancel it, so done sees what it expects. */
    if (status != 0 && req->conn)
        http_conn_close(req->conn);
    watchdog_enter(s->watchdog, req->h.method, req->h.method_len, req->h.path, req->h.path_len);
    o->done(req, o->arg);   /* may complete and release req, and o with it */
    watchdog_leave(s->watchdog);
}

static void offload_refuse(myr_req *req, int err)
{
    const char *body = err == -EAGAIN ? "overloaded: offload queue full\n"
                     : err == -ECANCELED ? "shutting down\n"
                                         : "out of memory\n";
    if (err == -EAGAIN)
        req->srv->offload_refused++;
    myr_set_header(req, "Retry-After", "1");
    myr_respond_str(req, 503, "text/plain", body);
}

int myr_offload(myr_req *req, void (*work)(void *arg), void (*done)(myr_req *req, void *arg),
                void *arg)
{
    /* One at a time: answering 503 for a second one would free the first
     * one's state (the request's arena) under its feet. */
    if (req->on_cancel == offload_on_cancel)
        return -EBUSY;
    offload *o = myr_alloc(req, sizeof(*o));
    int rc = -ENOMEM;
    if (o) {
        *o = (offload){ .req = req, .work = work, .done = done, .arg = arg };
        rc = pool_submit(req->srv->pool, &o->job, offload_work, offload_done);
    }
    if (rc < 0) {
        offload_refuse(req, rc);
        return rc;
    }
    o->prev_cancel = req->on_cancel;
    o->prev_cancel_arg = req->cancel_arg;
    myr_req_on_cancel(req, offload_on_cancel, o);
    return 0;
}
