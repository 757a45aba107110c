/* health — see health.h.
 *
 * A probe cycles WAIT ─timer─> CONNECTING ─writable─> SENT ─head read─> WAIT.
 * Its one timer is the check's deadline while a check runs and the next
 * check's start while waiting; checks start every health-interval from the
 * previous start, whatever they took. The response head is parsed with the
 * strict response parser, so a backend that answers garbage fails its
 * check as it would fail a request.
 */
#include "proxy/health.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "http/http_resp_parser.h"
#include "proxy/backend.h"
#include "proxy/balancer.h"

#define NS_PER_MS     1000000ull
#define PROBE_BUF     4096     /* a health response head must fit */
#define PROBE_HEADERS 64

enum probe_state { P_WAIT, P_CONNECTING, P_SENT };

struct probe {
    backend      *be;
    loop_io       io;            /* fd -1 between checks */
    loop_timer    timer;
    uint64_t      started;       /* loop ns the current or last check began */
    uint8_t       state;         /* enum probe_state */
    size_t        len;           /* bytes in buf */
    char          buf[PROBE_BUF];
    loop_deferred defer;         /* frees the probe after health_stop */
};

static const http_limits probe_limits = {
    .max_request_line = 1024, .max_header_bytes = PROBE_BUF, .max_headers = PROBE_HEADERS,
};

static void on_timer(loop_timer *t);
static void on_io(loop_io *io, uint32_t events);

static loop *probe_loop(const probe *p)
{
    return p->be->bal->loop;
}

static void probe_close_socket(probe *p)
{
    if (p->io.fd < 0)
        return;
    int fd = p->io.fd;
    loop_io_del(probe_loop(p), &p->io);
    close(fd);
    p->io.fd = -1;
}

/* Ends the current check with a verdict and schedules the next one. */
static void probe_done(probe *p, bool ok)
{
    probe_close_socket(p);
    p->state = P_WAIT;
    loop *l = probe_loop(p);
    uint64_t next = p->started + p->be->bal->cfg->health_interval * NS_PER_MS;
    if (next < loop_now(l))
        next = loop_now(l);
    loop_timer_start_at(l, &p->timer, next, on_timer);
    backend_check_result(p->be, ok);
}

static void probe_begin(probe *p)
{
    backend *be = p->be;
    loop *l = probe_loop(p);
    p->started = loop_now(l);
    p->len = 0;
    int fd = socket(be->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        probe_done(p, false);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if ((connect(fd, (const struct sockaddr *)&be->addr, be->addrlen) < 0 &&
         errno != EINPROGRESS) ||
        loop_io_add(l, &p->io, fd, LOOP_READ | LOOP_WRITE | LOOP_RDHUP, on_io) < 0) {
        close(fd);
        p->io.fd = -1;
        probe_done(p, false);
        return;
    }
    p->state = P_CONNECTING;
    loop_timer_start(l, &p->timer, be->bal->cfg->health_timeout, on_timer);
}

static void on_timer(loop_timer *t)
{
    probe *p = container_of(t, probe, timer);
    if (p->state == P_WAIT)
        probe_begin(p);
    else
        probe_done(p, false);   /* the check timed out */
}

/* Connected: sends the check request (small: one send fits). */
static void probe_send(probe *p)
{
    int err = 0;
    socklen_t elen = sizeof(err);
    if (getsockopt(p->io.fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err) {
        probe_done(p, false);
        return;
    }
    char req[1400];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: myriad-balance\r\n"
                     "Connection: close\r\n\r\n",
                     p->be->bal->cfg->health_path, p->be->name);
    if (n < 0 || (size_t)n >= sizeof(req) ||
        send(p->io.fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        probe_done(p, false);
        return;
    }
    p->state = P_SENT;
    loop_io_mod(probe_loop(p), &p->io, LOOP_READ | LOOP_RDHUP);
}

static void probe_read(probe *p)
{
    ssize_t n = read(p->io.fd, p->buf + p->len, sizeof(p->buf) - p->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        probe_done(p, false);   /* closed or reset before a whole head */
        return;
    }
    p->len += (size_t)n;
    http_header hs[PROBE_HEADERS];
    http_response resp = { .headers = hs };
    ssize_t rc = http_parse_response(p->buf, p->len, 0, &resp, &probe_limits, false);
    if (rc == HTTP_AGAIN && p->len < sizeof(p->buf))
        return;
    probe_done(p, rc > 0 && resp.status >= 200 && resp.status < 400);
}

static void on_io(loop_io *io, uint32_t events)
{
    probe *p = container_of(io, probe, io);
    if (p->state == P_CONNECTING && (events & (LOOP_WRITE | LOOP_ERROR | LOOP_RDHUP)))
        probe_send(p);
    else if (p->state == P_SENT && (events & (LOOP_READ | LOOP_RDHUP | LOOP_ERROR)))
        probe_read(p);
}

int health_start(backend *b)
{
    if (b->probe)
        return 0;
    probe *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->be = b;
    p->io.fd = -1;
    p->state = P_WAIT;
    b->probe = p;
    balancer *bal = b->bal;
    uint64_t interval = bal->cfg->health_interval;
    loop_timer_start(bal->loop, &p->timer, interval ? lb_rand(&bal->policy) % interval : 0,
                     on_timer);
    return 0;
}

static void on_free(loop_deferred *d)
{
    free(container_of(d, probe, defer));
}

void health_stop(backend *b)
{
    probe *p = b->probe;
    if (!p)
        return;
    b->probe = NULL;
    probe_close_socket(p);
    loop_timer_stop(probe_loop(p), &p->timer);
    loop_defer(probe_loop(p), &p->defer, on_free);
}
