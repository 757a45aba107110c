/* worker — see worker.h.
 *
 * A graceful stop has two phases, so that a reload under load fails no
 * request:
 *
 *   1. linger (at most LINGER_MS, or until no connection is left): the
 *      listening socket is closed at once — its queue stays with the
 *      supervisor and this worker's successor, which share the socket, or
 *      is refused when the whole service stops — and the server is marked
 *      draining, so each keep-alive connection ends after its next
 *      response, which carries Connection: close. Closing an idle keep-alive
 *      connection at once would race with the request its client may be
 *      sending right then: the client would see the connection close
 *      without an answer.
 *   2. drain: http_server_drain closes the connections still idle and waits
 *      for the requests in flight, bounded by --shutdown-timeout.
 *
 * Counters (requests, connections) go to the shared table once a second and
 * at exit, where the supervisor's --max-requests and /metrics read them.
 */
#include "proc/worker.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "http/server.h"
#include "data/redis.h"
#include "rt/pubsub.h"

enum {
    LINGER_MS  = 1000,   /* phase 1 at most (and at most shutdown_timeout) */
    POLL_MS    = 50,     /* phase 1 checks this often whether connections remain */
    PUBLISH_MS = 1000,   /* counters to the shared table */
};

/* A loop left behind at exit because handlers still hold requests (after a
 * stop-now or the shutdown timeout): its timers reference them, so keeping
 * it reachable keeps them from being reported as leaks when they are only
 * abandoned. Set once, at exit. */
static loop *abandoned;

typedef struct worker {
    loop           *loop;
    http_server     server;
    const config   *cfg;
    cluster_worker *self;
    loop_signal     sigterm, sigint, sigquit, sighup, sigusr1;
    loop_timer      publish_timer;
    loop_timer      linger_timer;   /* phase 1 polling */
    uint64_t        linger_until;   /* loop clock ns: phase 1 ends */
    bool            stopping;       /* a graceful stop has begun */
} worker;

static void publish(worker *w)
{
    http_server *s = &w->server;
    cluster_worker_publish(w->self, s->requests, s->accepted, s->nconns);
}

static void on_publish(loop_timer *t)
{
    worker *w = container_of(t, worker, publish_timer);
    publish(w);
    loop_timer_start(w->loop, t, PUBLISH_MS, on_publish);
}

/* ---- graceful stop ----------------------------------------------------------- */

static void on_drained(http_server *s)
{
    log_info("stopped: all connections closed");
    loop_stop(s->loop);
}

static void on_linger(loop_timer *t)
{
    worker *w = container_of(t, worker, linger_timer);
    if (w->server.nconns && loop_now(w->loop) < w->linger_until) {
        loop_timer_start(w->loop, t, POLL_MS, on_linger);
        return;
    }
    http_server_drain(&w->server, on_drained);   /* phase 2 */
}

static void stop_gracefully(worker *w, int signo)
{
    w->stopping = true;
    http_server *s = &w->server;
    log_info("stopping gracefully (signal %d): %u connections open", signo, s->nconns);
    cluster_worker_draining(w->self);
    http_server_stop_accepting(s);
    s->draining = true;   /* every response from now on: Connection: close */
    uint64_t linger = w->cfg->shutdown_timeout < LINGER_MS ? w->cfg->shutdown_timeout : LINGER_MS;
    w->linger_until = loop_now(w->loop) + linger * 1000000u;
    on_linger(&w->linger_timer);
}

static void stop_now(worker *w, int signo)
{
    log_info("stopping now (signal %d)", signo);
    loop_stop(w->loop);
}

/* ---- signals ------------------------------------------------------------------- */

static void on_sigterm(loop_signal *sig, int signo)
{
    worker *w = container_of(sig, worker, sigterm);
    if (!w->stopping)
        stop_gracefully(w, signo);
}

static void on_sigint(loop_signal *sig, int signo)
{
    worker *w = container_of(sig, worker, sigint);
    if (w->stopping)
        stop_now(w, signo);
    else
        stop_gracefully(w, signo);
}

static void on_sigquit(loop_signal *sig, int signo)
{
    stop_now(container_of(sig, worker, sigquit), signo);
}

static void on_sighup(loop_signal *sig, int signo)
{
    worker *w = container_of(sig, worker, sighup);
    if (!w->self->supervised)
        log_warn("SIGHUP ignored: reloading needs the supervisor "
                 "(--workers 2 or more, or a recycling limit)");
}

static void on_sigusr1(loop_signal *sig, int signo)
{
    worker *w = container_of(sig, worker, sigusr1);
    if (!*w->cfg->log_file)
        return;
    int rc = cluster_log_open(w->cfg->log_file);
    if (rc < 0)
        log_error("SIGUSR1: cannot reopen %s: %s", w->cfg->log_file, strerror(-rc));
}

static int watch_signals(worker *w)
{
    int rc = loop_signal_add(w->loop, &w->sigterm, SIGTERM, on_sigterm);
    if (!rc)
        rc = loop_signal_add(w->loop, &w->sigint, SIGINT, on_sigint);
    if (!rc)
        rc = loop_signal_add(w->loop, &w->sigquit, SIGQUIT, on_sigquit);
    if (!rc)
        rc = loop_signal_add(w->loop, &w->sighup, SIGHUP, on_sighup);
    if (!rc)
        rc = loop_signal_add(w->loop, &w->sigusr1, SIGUSR1, on_sigusr1);
    return rc;
}

static void unwatch_signals(worker *w)
{
    loop_signal_del(w->loop, &w->sigterm);
    loop_signal_del(w->loop, &w->sigint);
    loop_signal_del(w->loop, &w->sigquit);
    loop_signal_del(w->loop, &w->sighup);
    loop_signal_del(w->loop, &w->sigusr1);
}

/* ---- Redis ------------------------------------------------------------------------ */

/* The worker's Redis client (data/redis.h), when --redis or $REDIS_URL is
 * set: created once the server (and its metrics) exist, reachable as
 * server.redis; freed after the loop ends and before http_server_fini, so
 * callbacks of commands still in flight run (CLOSED) while every request
 * and module is alive. A bad URL stops the worker from serving. */
static int start_redis(worker *w)
{
    const char *url = redis_config_url(w->cfg);
    if (!url)
        return 0;
    redis_options o = {
        .url = url, .timeout_ms = w->cfg->redis_timeout, .metrics = w->server.metrics,
    };
    char err[256];
    w->server.redis = redis_new(w->loop, &o, err, sizeof err);
    if (!w->server.redis) {
        log_error("cannot start serving: %s", err);
        return -EINVAL;
    }
    return 0;
}

/* ---- run ------------------------------------------------------------------------- */

int worker_run(struct myr_app *app, const config *cfg, int listen_fd, cluster_worker *self)
{
    worker w;
    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.self = self;
    signal(SIGPIPE, SIG_IGN);
    w.loop = loop_new();
    if (!w.loop) {
        log_error("cannot create the event loop: %s", strerror(errno));
        close(listen_fd);
        return 1;
    }
    int rc = watch_signals(&w);
    if (rc < 0) {
        log_error("cannot watch signals: %s", strerror(-rc));
        goto free_loop;
    }
    rc = http_server_init(&w.server, w.loop, cfg, app, listen_fd);
    if (rc < 0) {
        log_error("cannot start serving: %s", strerror(-rc));
        goto unwatch;
    }
    listen_fd = -1;   /* the server's now */
    rc = start_redis(&w);
    if (rc < 0)
        goto fini_server;
    loop_timer_start(w.loop, &w.publish_timer, PUBLISH_MS, on_publish);
    cluster_worker_ready(self);
    rc = loop_run(w.loop);
    publish(&w);
    loop_timer_stop(w.loop, &w.publish_timer);
    loop_timer_stop(w.loop, &w.linger_timer);
fini_server:
    pubsub_server_fini(&w.server);   /* subscriptions, the bus reader (src/rt) */
    redis_free(w.server.redis);   /* commands still in flight: CLOSED callbacks, now */
    w.server.redis = NULL;
    http_server_fini(&w.server);
unwatch:
    unwatch_signals(&w);
free_loop:
    if (listen_fd >= 0)
        close(listen_fd);
    if (w.server.live_reqs) {
        log_warn("exiting with %u requests still held by handlers", w.server.live_reqs);
        abandoned = w.loop;
    } else {
        loop_free(w.loop);
    }
    return rc < 0 ? 1 : 0;
}
