/* server — see server.h. Accepting, limits, pools and draining. */
#include "http/server.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/net.h"
#include "data/db.h"
#include "http/http_conn.h"
#include "http/request.h"
#include "obs/obs.h"
#include "proc/offload.h"

#define ACCEPTS_PER_EVENT 64        /* fairness with established connections */
#define ACCEPT_PAUSE_MS   100       /* after EMFILE/ENFILE: retry this much later */

static const char busy_503[] =
    "HTTP/1.1 503 Service Unavailable\r\nServer: myriad\r\nContent-Type: text/plain\r\n"
    "Content-Length: 20\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
    "503 Too Many Conns\r\n";

/* ---- pools -------------------------------------------------------------------- */

char *server_buf_get(http_server *s)
{
    if (s->nfree_bufs)
        return s->free_bufs[--s->nfree_bufs];
    return malloc(SERVER_BUF_SIZE);
}

void server_buf_put(http_server *s, char *b)
{
    if (s->nfree_bufs < SERVER_POOL_BUFS)
        s->free_bufs[s->nfree_bufs++] = b;
    else
        free(b);
}

struct myr_req *server_req_get(http_server *s)
{
    myr_req *r = s->free_reqs;
    if (r) {
        s->free_reqs = r->next_free;
        s->nfree_reqs--;
    } else {
        r = malloc(s->req_size);
        if (!r)
            return NULL;
        r->arena = (arena){ 0 };
    }
    /* reset everything but the arena, whose first block is kept for reuse,
     * and the route params array, which router_find fills before use
     * (zeroing it is a tenth of a pipelined request's user time) */
    arena keep = r->arena;
    size_t params_at = offsetof(myr_req, match) + offsetof(router_match, params);
    size_t params_end = params_at + sizeof(r->match.params);
    memset(r, 0, params_at);
    memset((char *)r + params_end, 0, sizeof(*r) - params_end);
    r->arena = keep;
    r->srv = s;
    r->start_ns = loop_now(s->loop);   /* observability: duration, access log */
    r->h.headers = r->header_space;
    s->live_reqs++;
    return r;
}

void server_req_put(http_server *s, struct myr_req *r)
{
    s->live_reqs--;
    if (s->nfree_reqs < SERVER_POOL_REQS) {
        r->next_free = s->free_reqs;
        s->free_reqs = r;
        s->nfree_reqs++;
    } else {
        arena_free(&r->arena);
        free(r);
    }
    server_check_drained(s);
}

/* ---- accepting ---------------------------------------------------------------- */

static void on_accept_timer(loop_timer *t)
{
    http_server *s = container_of(t, http_server, accept_timer);
    if (s->listen_io.fd >= 0)
        loop_io_mod(s->loop, &s->listen_io, LOOP_READ);
}

static void reject(http_server *s, int fd)
{
    /* best effort, non-blocking: a small write to a new socket succeeds */
    ssize_t n = send(fd, busy_503, sizeof(busy_503) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
    close(fd);
    s->rejected++;
    metrics_conn_rejected(s->metrics, s->nconns + s->upgraded >= s->cfg->max_connections
                                          ? METRICS_REJECT_LIMIT : METRICS_REJECT_NOMEM);
}

static void on_accept(loop_io *io, uint32_t events)
{
    http_server *s = container_of(io, http_server, listen_io);
    for (int i = 0; i < ACCEPTS_PER_EVENT && s->listen_io.fd >= 0; i++) {
        struct sockaddr_storage peer;   /* for the access log */
        socklen_t peer_len = sizeof(peer);
        int fd = accept4(io->fd, (struct sockaddr *)&peer, &peer_len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN)
                return;
            /* out of descriptors or memory: the socket stays readable, so
             * stop polling it for a moment instead of spinning */
            log_warn("accept: %s; pausing accepts for %d ms", strerror(errno),
                     ACCEPT_PAUSE_MS);
            loop_io_mod(s->loop, io, 0);
            loop_timer_start(s->loop, &s->accept_timer, ACCEPT_PAUSE_MS, on_accept_timer);
            return;
        }
        s->accepted++;
        if (s->nconns + s->upgraded >= s->cfg->max_connections) {
            reject(s, fd);
            continue;
        }
        net_set_nodelay(fd);
        http_conn *c = http_conn_new(s, fd);
        if (c)
            access_log_set_peer(c, (struct sockaddr *)&peer, peer_len);
        else
            reject(s, fd);
    }
}

int http_server_init(http_server *s, loop *l, const config *cfg, struct myr_app *app,
                     int listen_fd)
{
    memset(s, 0, sizeof(*s));
    s->loop = l;
    s->cfg = cfg;
    s->app = app;
    s->limits = (http_limits){
        .max_request_line = cfg->max_request_line,
        .max_header_bytes = cfg->max_header_bytes,
        .max_headers = cfg->max_headers,
    };
    s->req_size = sizeof(myr_req) + cfg->max_headers * sizeof(http_header);
    s->free_bufs = calloc(SERVER_POOL_BUFS, sizeof(char *));
    if (!s->free_bufs)
        return -ENOMEM;
    int rc = obs_server_init(s);   /* first: metrics handle, access log, admin port */
    if (rc < 0) {
        free(s->free_bufs);
        return rc;
    }
    if (offload_server_init(s) < 0) {   /* worker threads: pool, lag monitor, watchdog */
        obs_server_fini(s);
        free(s->free_bufs);
        return -ENOMEM;
    }
    s->listen_io.fd = -1;
    rc = loop_io_add(l, &s->listen_io, listen_fd, LOOP_READ, on_accept);
    if (rc < 0) {
        offload_server_fini(s);
        obs_server_fini(s);
        free(s->free_bufs);
        return rc;
    }
    rc = db_open(s, &s->db);   /* data layer: start-up, may block (migrations) */
    if (rc < 0) {
        loop_io_del(l, &s->listen_io);
        s->listen_io.fd = -1;
        offload_server_fini(s);
        obs_server_fini(s);
        free(s->free_bufs);
        return rc;
    }
    return 0;
}

void http_server_stop_accepting(http_server *s)
{
    if (s->listen_io.fd < 0)
        return;
    int fd = s->listen_io.fd;
    loop_io_del(s->loop, &s->listen_io);
    close(fd);
    s->listen_io.fd = -1;
    loop_timer_stop(s->loop, &s->accept_timer);
}

void server_check_drained(http_server *s)
{
    if (s->draining && s->on_drained && s->nconns == 0 && s->live_reqs == 0 &&
        s->upgraded == 0) {
        void (*cb)(http_server *) = s->on_drained;
        s->on_drained = NULL;
        loop_timer_stop(s->loop, &s->drain_timer);
        cb(s);
    }
}

static void on_drain_timeout(loop_timer *t)
{
    http_server *s = container_of(t, http_server, drain_timer);
    log_warn("shutdown timeout: closing %u connections", s->nconns);
    while (s->conns)
        http_conn_close(s->conns);
    /* requests still held by handlers are cancelled; do not wait for them */
    if (s->on_drained) {
        void (*cb)(http_server *) = s->on_drained;
        s->on_drained = NULL;
        cb(s);
    }
}

void server_upgraded_closed(http_server *s)
{
    s->upgraded--;
    server_check_drained(s);
}

void http_server_drain(http_server *s, void (*on_drained)(http_server *s))
{
    s->draining = true;
    s->on_drained = on_drained;
    http_server_stop_accepting(s);
    obs_server_drain(s);   /* the admin listener too */
    if (s->on_drain_upgraded)
        s->on_drain_upgraded(s, s->on_drain_upgraded_arg);
    for (http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        http_conn_close_if_idle(c);
    }
    if (s->on_drained)
        loop_timer_start(s->loop, &s->drain_timer, s->cfg->shutdown_timeout, on_drain_timeout);
    server_check_drained(s);
}

void http_server_fini(http_server *s)
{
    http_server_stop_accepting(s);
    while (s->conns)
        http_conn_close(s->conns);
    loop_timer_stop(s->loop, &s->drain_timer);
    /* run the deferred frees of the connections just closed */
    loop_run_once(s->loop, 0);
    db_close(s->db);   /* completes queries still running (their requests are cancelled) */
    s->db = NULL;
    offload_server_fini(s);   /* pending offloads complete, cancelled */
    while (s->free_reqs) {
        myr_req *r = s->free_reqs;
        s->free_reqs = r->next_free;
        arena_free(&r->arena);
        free(r);
    }
    while (s->nfree_bufs)
        free(s->free_bufs[--s->nfree_bufs]);
    free(s->free_bufs);
    s->free_bufs = NULL;
    obs_server_fini(s);   /* last: every request is done, the access log is flushed */
}
