/* balancer — see balancer.h. Start-up, accepting, pools, the retry budget,
 * the tick (drain flags, publishing), signals, in-process reload and the
 * graceful stop.
 */
#include "proxy/balancer.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/net.h"
#include "myriad.h"
#include "proxy/admin.h"
#include "proxy/backend.h"
#include "proxy/proxy.h"
#include "proxy/session.h"
#include "proxy/shared.h"

#define ACCEPTS_PER_EVENT 64     /* fairness with established connections */
#define ACCEPT_PAUSE_MS   100    /* after EMFILE/ENFILE */
#define RETRY_BURST       10     /* retries the budget allows at once */
#define TICK_MS           100    /* drain flags from other workers; counters to
                                    the shared region (a few hundred bytes per
                                    backend: /metrics is at most this stale) */
#define LINGER_MS         1000   /* stop phase 1 at most */
#define POLL_MS           50     /* stop phase 1 polling */
#define NS_PER_MS         1000000ull

static const char busy_503[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    "Content-Length: 20\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
    "503 Too Many Conns\r\n";

/* ---- pools --------------------------------------------------------------------------- */

char *balancer_buf_get(balancer *b)
{
    if (b->nfree_bufs)
        return b->free_bufs[--b->nfree_bufs];
    return malloc(BAL_BUF_SIZE);
}

void balancer_buf_put(balancer *b, char *p)
{
    if (b->nfree_bufs < BAL_POOL_BUFS)
        b->free_bufs[b->nfree_bufs++] = p;
    else
        free(p);
}

void balancer_buf_release(balancer *b, buf *x)
{
    if (x->data) {
        if (x->cap == BAL_BUF_SIZE)
            balancer_buf_put(b, x->data);
        else
            free(x->data);
    }
    *x = (buf){ 0 };
}

/* ---- retry budget ------------------------------------------------------------------------ */

void balancer_request_counted(balancer *b)
{
    b->retry_milli += (int64_t)b->cfg->retry_budget * 10;
    if (b->retry_milli > RETRY_BURST * 1000)
        b->retry_milli = RETRY_BURST * 1000;
}

bool balancer_retry_allowed(balancer *b)
{
    if (b->retry_milli < 1000)
        return false;
    b->retry_milli -= 1000;
    return true;
}

/* ---- configuration ------------------------------------------------------------------------ */

/* Limits, hashing and the policy from cfg. On a policy change the new one
 * is built before the old is freed. 0, or -errno with err set. */
static int apply_settings(balancer *b, char *err, size_t errlen)
{
    const config *cfg = b->cfg;
    b->limits = (http_limits){
        .max_request_line = cfg->max_request_line,
        .max_header_bytes = cfg->max_header_bytes,
        .max_headers = cfg->max_headers,
    };
    b->resp_limits = b->limits;
    b->hash_on = HASH_CLIENT;
    if (strcmp(cfg->hash_key, "path") == 0) {
        b->hash_on = HASH_PATH;
    } else if (strncmp(cfg->hash_key, "header:", 7) == 0) {
        b->hash_on = HASH_HEADER;
        b->hash_header = cfg->hash_key + 7;
        b->hash_header_len = strlen(b->hash_header);
    }
    b->policy.balance_factor = cfg->hash_balance_factor;
    const lb_ops *ops = lb_find(cfg->policy);
    if (ops != b->policy.ops) {
        lb next = b->policy;
        next.ops = ops;
        next.priv = NULL;
        lb old = b->policy;
        b->policy = next;
        if (b->backends && backend_policy_build(b) < 0) {
            b->policy = old;
            snprintf(err, errlen, "out of memory building the %s policy", ops->name);
            return -ENOMEM;
        }
        if (old.ops)
            old.ops->free(&old);
    }
    return 0;
}

/* SIGHUP without a supervisor: reads the configuration again and applies
 * the backend list, the policy and the timeouts in place. Settings that
 * need a new socket or process (listen address, workers, admin port) keep
 * their old values, with a warning. */
static void reload_in_process(balancer *b)
{
    char err[512];
    config *next = malloc(sizeof(*next));
    if (!next) {
        log_error("reload failed: out of memory");
        return;
    }
    balance_ctx *ctx = b->ctx;
    if (config_load(next, ctx->argc, ctx->argv, ctx->first, err, sizeof(err)) != CONFIG_OK ||
        proxy_config_check(next, err, sizeof(err)) < 0) {
        log_error("reload failed: %s; the configuration in use is kept", err);
        free(next);
        return;
    }
    if (strcmp(next->host, b->cfg->host) || next->port != b->cfg->port ||
        next->admin_port != b->cfg->admin_port || next->workers != b->cfg->workers ||
        next->max_headers != b->cfg->max_headers)
        log_warn("reload: the listen address, --admin-port, --workers and --max-headers "
                 "need a restart");
    strcpy(next->host, b->cfg->host);
    next->port = b->cfg->port;
    next->admin_port = b->cfg->admin_port;
    next->workers = b->cfg->workers;
    next->max_headers = b->cfg->max_headers;   /* sizes the pooled exchanges */
    config old = *b->cfg;
    *b->cfg = *next;
    free(next);
    if (backend_set_apply(b, err, sizeof(err)) < 0 || apply_settings(b, err, sizeof(err)) < 0) {
        *b->cfg = old;
        apply_settings(b, err, sizeof(err));
        log_error("reload failed: %s; the configuration in use is kept", err);
        return;
    }
    log_info("reloaded: %u backends, policy %s", b->nbackends, b->policy.ops->name);
}

/* ---- accepting ------------------------------------------------------------------------------- */

static void on_accept_timer(loop_timer *t)
{
    balancer *b = container_of(t, balancer, accept_timer);
    if (b->listen_io.fd >= 0)
        loop_io_mod(b->loop, &b->listen_io, LOOP_READ);
}

static void reject(balancer *b, int fd)
{
    ssize_t n = send(fd, busy_503, sizeof(busy_503) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
    close(fd);
    (void)b;
}

static void on_accept(loop_io *io, uint32_t events)
{
    balancer *b = container_of(io, balancer, listen_io);
    for (int i = 0; i < ACCEPTS_PER_EVENT && b->listen_io.fd >= 0; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(io->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN)
                return;
            log_warn("accept: %s; pausing accepts for %d ms", strerror(errno), ACCEPT_PAUSE_MS);
            loop_io_mod(b->loop, io, 0);
            loop_timer_start(b->loop, &b->accept_timer, ACCEPT_PAUSE_MS, on_accept_timer);
            return;
        }
        b->st.accepted++;
        if (b->nsessions >= b->cfg->max_connections) {
            reject(b, fd);
            continue;
        }
        net_set_nodelay(fd);
        if (!session_new(b, fd, &peer))
            reject(b, fd);
    }
}

static void stop_accepting(balancer *b)
{
    if (b->listen_io.fd < 0)
        return;
    int fd = b->listen_io.fd;
    loop_io_del(b->loop, &b->listen_io);
    close(fd);
    b->listen_io.fd = -1;
    loop_timer_stop(b->loop, &b->accept_timer);
}

/* ---- publishing and drain flags ---------------------------------------------------------------- */

void balancer_publish(balancer *b)
{
    cluster_worker_publish(b->self, b->st.requests, b->st.accepted, b->nsessions);
    if (!b->publishing)
        return;
    for (uint32_t i = 0; i < b->nbackends; i++)
        shared_publish_backend(b->shared, b->row, b->backends[i]->sidx, b->backends[i], true);
    for (backend *r = b->retired; r; r = r->next_retired)
        shared_publish_backend(b->shared, b->row, r->sidx, r, false);
    shared_publish_global(b->shared, b->row, &b->st, b->nsessions);
}

static void on_tick(loop_timer *t)
{
    balancer *b = container_of(t, balancer, tick_timer);
    backend_sync_drains(b);
    balancer_publish(b);
    loop_timer_start(b->loop, t, TICK_MS, on_tick);
}

/* ---- stopping ----------------------------------------------------------------------------------- */

void balancer_check_drained(balancer *b)
{
    if (b->closing_idle && b->nsessions == 0 && !b->stopped) {
        b->stopped = true;
        log_info("stopped: all connections closed");
        loop_stop(b->loop);
    }
}

static void on_stop_timer(loop_timer *t);

/* Phase 2: idle sessions close now; the rest finish, within shutdown-timeout. */
static void close_idle(balancer *b)
{
    b->closing_idle = true;
    session_close_idle_all(b);
    b->stop_phase_end = loop_now(b->loop) + b->cfg->shutdown_timeout * NS_PER_MS;
    loop_timer_start(b->loop, &b->stop_timer, b->cfg->shutdown_timeout, on_stop_timer);
    balancer_check_drained(b);
}

static void on_stop_timer(loop_timer *t)
{
    balancer *b = container_of(t, balancer, stop_timer);
    if (!b->closing_idle) {   /* phase 1: wait while connections leave on their own */
        if (b->nsessions && loop_now(b->loop) < b->stop_phase_end) {
            loop_timer_start(b->loop, t, POLL_MS, on_stop_timer);
            return;
        }
        close_idle(b);
        return;
    }
    log_warn("shutdown timeout: closing %u connections", b->nsessions);
    b->stopped = true;
    session_close_all(b);
    log_info("stopped");
    loop_stop(b->loop);
}

static void stop_gracefully(balancer *b, int signo)
{
    b->stopping = true;
    log_info("stopping gracefully (signal %d): %u connections open", signo, b->nsessions);
    cluster_worker_draining(b->self);
    stop_accepting(b);
    b->draining = true;   /* every response from now on: Connection: close */
    uint64_t linger = b->cfg->shutdown_timeout < LINGER_MS ? b->cfg->shutdown_timeout : LINGER_MS;
    b->stop_phase_end = loop_now(b->loop) + linger * NS_PER_MS;
    on_stop_timer(&b->stop_timer);
}

static void on_signal(loop_signal *sig, int signo)
{
    balancer *b = signo == SIGTERM ? container_of(sig, balancer, sigterm)
                : signo == SIGINT  ? container_of(sig, balancer, sigint)
                : signo == SIGQUIT ? container_of(sig, balancer, sigquit)
                : signo == SIGHUP  ? container_of(sig, balancer, sighup)
                                   : container_of(sig, balancer, sigusr1);
    switch (signo) {
    case SIGHUP:
        if (!b->self->supervised)
            reload_in_process(b);
        return;   /* supervised: the supervisor reloads */
    case SIGUSR1:
        if (*b->cfg->log_file && cluster_log_open(b->cfg->log_file) < 0)
            log_error("SIGUSR1: cannot reopen %s", b->cfg->log_file);
        return;
    case SIGTERM:
        if (!b->stopping)
            stop_gracefully(b, signo);
        return;
    case SIGINT:
        if (!b->stopping) {
            stop_gracefully(b, signo);
            return;
        }
        break;
    }
    log_info("stopping now (signal %d)", signo);
    b->stopped = true;
    loop_stop(b->loop);
}

static int watch_signals(balancer *b)
{
    int rc = loop_signal_add(b->loop, &b->sigterm, SIGTERM, on_signal);
    if (!rc)
        rc = loop_signal_add(b->loop, &b->sigint, SIGINT, on_signal);
    if (!rc)
        rc = loop_signal_add(b->loop, &b->sigquit, SIGQUIT, on_signal);
    if (!rc)
        rc = loop_signal_add(b->loop, &b->sighup, SIGHUP, on_signal);
    if (!rc)
        rc = loop_signal_add(b->loop, &b->sigusr1, SIGUSR1, on_signal);
    return rc;
}

static void unwatch_signals(balancer *b)
{
    loop_signal_del(b->loop, &b->sigterm);
    loop_signal_del(b->loop, &b->sigint);
    loop_signal_del(b->loop, &b->sigquit);
    loop_signal_del(b->loop, &b->sighup);
    loop_signal_del(b->loop, &b->sigusr1);
}

/* ---- run ------------------------------------------------------------------------------------------ */

/* Everything but sockets: the loop, pools, settings, backends. 0 or an exit status. */
static int balancer_init(balancer *b, const config *cfg, balance_ctx *ctx,
                         cluster_worker *self)
{
    char err[512];
    b->cfg_own = *cfg;
    b->cfg = &b->cfg_own;
    b->ctx = ctx;
    b->self = self;
    b->shared = ctx->shared;
    b->listen_io.fd = -1;
    b->retry_milli = RETRY_BURST * 1000;
    b->policy.rng = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
    if (self->slot && self->table)
        b->row = (uint32_t)(self->slot - self->table->slot);
    b->publishing = b->shared && shared_claim_row(b->shared, b->row);
    if (b->shared)
        b->drain_seq = shared_drain_seq(b->shared);
    snprintf(b->default_host, sizeof(b->default_host), "%s:%d", cfg->host, cfg->port);
    b->ex_size = session_exchange_size(cfg->max_headers);
    b->loop = loop_new();
    b->free_bufs = calloc(BAL_POOL_BUFS, sizeof(char *));
    if (!b->loop || !b->free_bufs) {
        log_error("cannot start the balancer: out of memory");
        if (b->loop)
            loop_free(b->loop);
        free(b->free_bufs);
        b->loop = NULL;
        return 1;
    }
    if (apply_settings(b, err, sizeof(err)) < 0 || backend_set_apply(b, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    return 0;
}

static void balancer_fini(balancer *b)
{
    if (b->admin_on)
        admin_fini(b);
    stop_accepting(b);
    session_close_all(b);
    loop_timer_stop(b->loop, &b->stop_timer);
    loop_timer_stop(b->loop, &b->tick_timer);
    backend_set_free(b);
    loop_run_once(b->loop, 0);   /* deferred frees of what was just closed */
    session_free_exchanges(b);
    while (b->nfree_bufs)
        free(b->free_bufs[--b->nfree_bufs]);
    free(b->free_bufs);
    loop_free(b->loop);
}

int balancer_main(void *arg, const config *cfg, int listen_fd, cluster_worker *self)
{
    balance_ctx *ctx = arg;
    signal(SIGPIPE, SIG_IGN);
    balancer *b = calloc(1, sizeof(*b));
    if (!b) {
        log_error("cannot start the balancer: out of memory");
        close(listen_fd);
        return 1;
    }
    int status = balancer_init(b, cfg, ctx, self);
    int rc;
    if (status == 0 && (rc = watch_signals(b)) < 0) {
        log_error("cannot watch signals: %s", strerror(-rc));
        status = 1;
    }
    if (status == 0 && (rc = loop_io_add(b->loop, &b->listen_io, listen_fd, LOOP_READ,
                                         on_accept)) < 0) {
        log_error("cannot accept: %s", strerror(-rc));
        status = 1;
    }
    if (status == 0 && ctx->admin_fd >= 0 && admin_init(b, dup(ctx->admin_fd)) < 0)
        status = 1;
    if (status != 0) {
        if (b->listen_io.fd < 0)
            close(listen_fd);
        if (b->loop) {
            unwatch_signals(b);
            balancer_fini(b);
        }
        free(b);
        return status;
    }
    loop_timer_start(b->loop, &b->tick_timer, TICK_MS, on_tick);
    cluster_worker_ready(self);
    log_info("balancing over %u backends with policy %s", b->nbackends, b->policy.ops->name);
    rc = loop_run(b->loop);
    balancer_publish(b);
    unwatch_signals(b);
    balancer_fini(b);
    free(b);
    return rc < 0 ? 1 : 0;
}
