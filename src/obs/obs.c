/* obs — see obs.h. Reading order: init (handle, settings, access log,
 * admin listener, sampler), the routes, the sampler, drain and fini. */
#include "obs/obs.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/net.h"
#include "http/http_conn.h"
#include "obs/dashboard.h"
#include "obs/prom.h"
#include "proc/lag.h"
#include "proc/pool.h"

#define ADMIN_ACCEPTS   16    /* per readiness event */
#define ADMIN_PAUSE_MS  100   /* after EMFILE: try again this much later */
#define DASHBOARD_PATH  "/dashboard"

/* The hooks pass these enums straight through: keep them in step. */
static_assert(HTTP_GET == 1 && HTTP_PATCH == 7, "metrics_http_request's method classes");

/* ---- the process's metrics handle ------------------------------------------------------ */

/* Without a supervisor's registry: one slot in memory of our own, kept for
 * the life of the process (a late completion may still count into it). */
static metrics_worker *local_handle(void)
{
    shm_region *r = shm_create(metrics_shm_size(1));
    metrics_registry *reg = r ? metrics_new(r, 1) : NULL;
    metrics_worker *w = reg ? metrics_attach(reg, 0) : NULL;
    if (!w) {
        shm_destroy(r);
        return NULL;
    }
    metrics_set_self(w);
    return w;
}

/* ---- settings ------------------------------------------------------------------------------ */

/* A path we can embed in the page and compare byte for byte. */
static bool path_ok(const char *p)
{
    if (p[0] != '/' || strlen(p) >= OBS_PATH_MAX)
        return false;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("/._~-", *p)))
            return false;
    return true;
}

static int check_settings(const config *cfg, enum access_log_format *fmt)
{
    const char *mp = cfg->metrics_path;
    if (*mp && (!path_ok(mp) || !strcmp(mp, DASHBOARD_PATH))) {
        log_error("--metrics-path '%s': expected a path like /metrics (letters, digits, "
                  "/._~-), not /dashboard", mp);
        return -EINVAL;
    }
    if (cfg->admin_port && !*mp) {
        log_error("--admin-port needs --metrics-path: it serves nothing else");
        return -EINVAL;
    }
    if (access_log_parse_format(cfg->access_log_format, fmt) < 0) {
        log_error("--access-log-format '%s': expected combined or json", cfg->access_log_format);
        return -EINVAL;
    }
    return 0;
}

/* ---- sampler ------------------------------------------------------------------------------- */

static uint64_t read_rss(int fd)
{
    char text[128];
    ssize_t n = fd >= 0 ? pread(fd, text, sizeof(text) - 1, 0) : -1;
    if (n <= 0)
        return 0;
    text[n] = '\0';
    unsigned long long size, resident;
    if (sscanf(text, "%llu %llu", &size, &resident) != 2)
        return 0;
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void set_gauge(metrics_cell *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

/* Adds to a cell what a per-process counter gained since the last tick. */
static void add_gain(metrics_cell *c, uint64_t now, uint64_t *last)
{
    metrics_cell_add(c, now >= *last ? now - *last : now);   /* a reset starts over */
    *last = now;
}

/* The lag monitor's log-linear histogram, re-bucketed to ours: each of its
 * buckets counts under the first of our bounds at or above its highest
 * value, so a sample is never shown faster than it was (at most 1/16 slower). */
static void sample_lag(obs_server *o, metrics_core *c)
{
    const struct lag *m = o->srv->lag;
    if (!m)
        return;
    const lag_hist *h = lag_histogram(m);
    uint64_t now[METRICS_LAG_BOUNDS + 2] = { 0 };
    for (unsigned i = 0; i < LAG_BUCKETS; i++)
        if (h->buckets[i])
            now[metrics_bucket(metrics_lag_bounds, METRICS_LAG_BOUNDS, lag_bucket_high(i))] +=
                h->buckets[i];
    now[METRICS_LAG_BOUNDS + 1] = h->sum_us;
    for (unsigned k = 0; k < METRICS_LAG_BOUNDS + 2; k++)
        add_gain(&c->lag[k], now[k], &o->last_lag[k]);
}

static void sample(obs_server *o)
{
    http_server *s = o->srv;
    metrics_core *c = s->metrics->core;
    set_gauge(&c->rss, read_rss(o->statm_fd));
    struct mallinfo2 mi = mallinfo2();
    set_gauge(&c->heap, (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd);
    const struct pool *p = s->pool;
    set_gauge(&c->offload_queued, p ? pool_queued(p) : 0);
    set_gauge(&c->offload_running, p ? pool_running(p) : 0);
    set_gauge(&c->offload_threads, p ? pool_threads(p) : 0);
    add_gain(&c->errors[METRICS_ERR_OVERLOAD], s->shed + s->offload_refused, &o->last_overload);
    sample_lag(o, c);
}

static void on_tick(loop_timer *t)
{
    obs_server *o = container_of(t, obs_server, tick);
    sample(o);
    loop_timer_start(o->srv->loop, t, OBS_SAMPLE_MS, on_tick);
}

/* ---- access log ---------------------------------------------------------------------------- */

static void on_sigusr1(loop_signal *sig, int signo)
{
    obs_server *o = container_of(sig, obs_server, sigusr1);
    int rc = access_log_reopen(o->log);
    if (rc < 0)
        log_error("SIGUSR1: cannot reopen the access log %s: %s", o->srv->cfg->access_log,
                  strerror(-rc));
}

static int log_start(obs_server *o, enum access_log_format fmt)
{
    http_server *s = o->srv;
    if (!*s->cfg->access_log)
        return 0;
    o->log = access_log_new(s->loop, s->cfg->access_log, fmt, s->cfg->access_log_flush,
                            s->metrics);
    if (!o->log) {
        int err = errno;
        log_error("--access-log %s: %s", s->cfg->access_log, strerror(err));
        return -err;
    }
    int rc = loop_signal_add(s->loop, &o->sigusr1, SIGUSR1, on_sigusr1);
    if (rc < 0)
        return rc;
    o->watching_usr1 = true;
    return 0;
}

/* ---- admin listener ------------------------------------------------------------------------ */

static void on_admin_pause(loop_timer *t)
{
    obs_server *o = container_of(t, obs_server, admin_pause);
    if (o->admin_io.fd >= 0)
        loop_io_mod(o->srv->loop, &o->admin_io, LOOP_READ);
}

static void admin_take(obs_server *o, int fd, const struct sockaddr *sa, socklen_t len)
{
    http_server *s = o->srv;
    if (s->draining || s->nconns + s->upgraded >= s->cfg->max_connections + OBS_ADMIN_EXTRA) {
        close(fd);
        metrics_conn_rejected(s->metrics, METRICS_REJECT_LIMIT);
        return;
    }
    net_set_nodelay(fd);
    http_conn *c = http_conn_new(s, fd);
    if (!c) {
        close(fd);
        metrics_conn_rejected(s->metrics, METRICS_REJECT_NOMEM);
        return;
    }
    c->admin = true;
    access_log_set_peer(c, sa, len);
}

static void on_admin_accept(loop_io *io, uint32_t events)
{
    obs_server *o = container_of(io, obs_server, admin_io);
    for (int i = 0; i < ADMIN_ACCEPTS && io->fd >= 0; i++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(io->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            admin_take(o, fd, (struct sockaddr *)&sa, len);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN) {   /* out of descriptors: do not spin on the readable socket */
            log_warn("admin accept: %s; pausing for %d ms", strerror(errno), ADMIN_PAUSE_MS);
            loop_io_mod(o->srv->loop, io, 0);
            loop_timer_start(o->srv->loop, &o->admin_pause, ADMIN_PAUSE_MS, on_admin_pause);
        }
        return;
    }
}

static int admin_start(obs_server *o)
{
    const config *cfg = o->srv->cfg;
    if (!cfg->admin_port)
        return 0;
    const char *step = NULL;
    int fd = net_listen(cfg->admin_host, cfg->admin_port, cfg->backlog, true, &step);
    if (fd < 0) {
        log_error("cannot listen on the admin port %s:%d: %s: %s", cfg->admin_host,
                  cfg->admin_port, step, strerror(-fd));
        return fd;
    }
    int rc = loop_io_add(o->srv->loop, &o->admin_io, fd, LOOP_READ, on_admin_accept);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    log_info("admin endpoints on http://%s:%d (%s, %s, %s)", cfg->admin_host,
             net_local_port(fd), cfg->metrics_path, o->json_path, DASHBOARD_PATH);
    return 0;
}

static void admin_stop(obs_server *o)
{
    if (o->admin_io.fd < 0)
        return;
    int fd = o->admin_io.fd;
    loop_io_del(o->srv->loop, &o->admin_io);
    close(fd);
    o->admin_io.fd = -1;
    loop_timer_stop(o->srv->loop, &o->admin_pause);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

int obs_server_init(http_server *s)
{
    enum access_log_format fmt;
    int rc = check_settings(s->cfg, &fmt);
    if (rc < 0)
        return rc;
    s->metrics = metrics_self();
    if (!s->metrics && !(s->metrics = local_handle())) {
        log_error("cannot set up the metrics registry: %s", strerror(errno));
        return -ENOMEM;
    }
    obs_server *o = calloc(1, sizeof(*o));
    if (!o)
        return -ENOMEM;
    o->srv = s;
    o->admin_io.fd = -1;
    o->on_main = !s->cfg->admin_port && *s->cfg->metrics_path;
    o->metrics_len = strlen(s->cfg->metrics_path);
    snprintf(o->json_path, sizeof(o->json_path), "%s.json", s->cfg->metrics_path);
    o->statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    s->obs = o;
    if ((rc = log_start(o, fmt)) < 0 || (rc = admin_start(o)) < 0) {
        obs_server_fini(s);
        return rc;
    }
    sample(o);
    loop_timer_start(s->loop, &o->tick, OBS_SAMPLE_MS, on_tick);
    return 0;
}

void obs_server_drain(http_server *s)
{
    if (s->obs)
        admin_stop(s->obs);
}

void obs_server_fini(http_server *s)
{
    obs_server *o = s->obs;
    if (!o)
        return;
    loop_timer_stop(s->loop, &o->tick);
    admin_stop(o);
    if (o->watching_usr1)
        loop_signal_del(s->loop, &o->sigusr1);
    access_log_free(o->log);
    if (o->statm_fd >= 0)
        close(o->statm_fd);
    s->obs = NULL;
    free(o);
}

/* ---- routes ------------------------------------------------------------------------------ */

enum route { ROUTE_NONE, ROUTE_METRICS, ROUTE_JSON, ROUTE_DASHBOARD };

static enum route route_of(const obs_server *o, const myr_req *r)
{
    const char *p = r->h.path;
    size_t n = r->h.path_len;
    if (!o->metrics_len || !p)
        return ROUTE_NONE;
    if (n == o->metrics_len && memcmp(p, o->srv->cfg->metrics_path, n) == 0)
        return ROUTE_METRICS;
    if (n == o->metrics_len + 5 && memcmp(p, o->json_path, n) == 0)
        return ROUTE_JSON;
    if (n == sizeof(DASHBOARD_PATH) - 1 && memcmp(p, DASHBOARD_PATH, n) == 0)
        return ROUTE_DASHBOARD;
    return ROUTE_NONE;
}

static void respond_buf(myr_req *r, int rc, const char *ctype, buf *b)
{
    if (rc < 0)
        req_respond_error(r, 503);   /* out of memory: this request only */
    else
        myr_respond(r, 200, ctype, b->data, b->len);
    buf_free(b);
}

static void serve(myr_req *r, enum route route)
{
    metrics_worker *m = r->srv->metrics;
    buf b = { 0 };
    myr_set_header(r, "Cache-Control", "no-store");
    switch (route) {
    case ROUTE_METRICS:
        respond_buf(r, prom_write(&b, m->reg), PROM_CONTENT_TYPE, &b);
        break;
    case ROUTE_JSON: {
        myr_json w;
        myr_json_init(&w);
        if (dashboard_json(&w, m->reg, m->slot) < 0)
            req_respond_error(r, 503);
        else
            myr_respond_json(r, 200, &w);
        break;
    }
    case ROUTE_DASHBOARD:
        myr_set_header(r, "Content-Security-Policy", DASHBOARD_CSP);
        respond_buf(r, dashboard_page(&b, r->srv->obs->json_path), "text/html; charset=utf-8",
                    &b);
        break;
    case ROUTE_NONE:
        assert(0);
    }
}

bool obs_route(myr_req *r)
{
    obs_server *o = r->srv->obs;
    bool admin = r->conn && r->conn->admin;
    enum route route = route_of(o, r);
    if (route == ROUTE_NONE) {
        if (!admin)
            return false;
        req_respond_error(r, 404);   /* the admin port serves nothing else */
        return true;
    }
    if (r->h.method_id != HTTP_GET && r->h.method_id != HTTP_HEAD) {
        myr_set_header(r, "Allow", "GET, HEAD");
        req_respond_error(r, 405);
        return true;
    }
    serve(r, route);
    return true;
}
