/* bconn — see bconn.h. Connecting, pool membership, the one deadline, close.
 *
 * The session does all reading and writing of a BUSY connection (it knows
 * what the bytes mean); this file only owns the socket's lifecycle.
 */
#include "proxy/bconn.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/backend.h"
#include "proxy/balancer.h"
#include "proxy/session.h"

static void on_io(loop_io *io, uint32_t events);
static void on_timer(loop_timer *t);

static loop *bconn_loop(const bconn *c)
{
    return c->be->bal->loop;
}

/* ---- the one deadline --------------------------------------------------------- */

void bconn_wait(bconn *c, uint64_t timeout_ms)
{
    deadline_set(bconn_loop(c), &c->dl, timeout_ms, on_timer);
}

void bconn_wait_none(bconn *c)
{
    deadline_clear(&c->dl);   /* a timer still armed finds nothing due */
}

static void on_timer(loop_timer *t)
{
    bconn *c = container_of(t, bconn, dl.timer);
    if (c->state == BC_CLOSED || !deadline_expired(bconn_loop(c), &c->dl))
        return;
    if (c->state == BC_IDLE)
        bconn_close(c);
    else if (c->owner)
        session_backend_event(c->owner, true);
}

/* ---- connecting ----------------------------------------------------------------- */

int bconn_connect(backend *be, session *owner, bconn **out)
{
    int fd = socket(be->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&be->addr, be->addrlen) < 0 &&
        errno != EINPROGRESS) {
        int err = -errno;
        close(fd);
        return err;
    }
    bconn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->be = be;
    c->owner = owner;
    c->state = BC_CONNECTING;
    c->wblocked = true;   /* writable only once connected */
    int rc = loop_io_add(be->bal->loop, &c->io, fd,
                         LOOP_READ | LOOP_WRITE | LOOP_RDHUP | LOOP_EDGE, on_io);
    if (rc < 0) {
        close(fd);
        free(c);
        return rc;
    }
    be->nconns++;
    bconn_wait(c, be->bal->cfg->connect_timeout);
    *out = c;
    return 0;
}

int bconn_finish_connect(bconn *c)
{
    if (c->wblocked && !c->failed && !c->eof)
        return -EINPROGRESS;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == 0 && (c->failed || c->eof))
        err = ECONNRESET;
    if (err)
        return -err;
    c->state = BC_BUSY;
    c->failed = false;
    return 0;
}

/* ---- events ------------------------------------------------------------------------ */

static void on_deferred(loop_deferred *d)
{
    bconn *c = container_of(d, bconn, defer);
    free(c);
}

static void on_io(loop_io *io, uint32_t events)
{
    bconn *c = container_of(io, bconn, io);
    if (c->state == BC_CLOSED)
        return;
    if (c->state == BC_IDLE) {
        /* closed by the backend, or bytes nobody asked for; a write edge
         * (the ACK of our last bytes) means nothing */
        if (events & (LOOP_READ | LOOP_RDHUP | LOOP_ERROR))
            bconn_close(c);
        return;
    }
    if (events & LOOP_WRITE)
        c->wblocked = false;
    if (events & (LOOP_READ | LOOP_RDHUP | LOOP_ERROR))
        c->readable = true;
    if (events & (LOOP_RDHUP | LOOP_ERROR))
        c->rdhup = true;
    if (events & LOOP_ERROR)
        c->failed = true;
    if (c->owner)
        session_backend_event(c->owner, false);
}

/* ---- pool membership and closing ------------------------------------------------------ */

void bconn_release_in(bconn *c)
{
    balancer_buf_release(c->be->bal, &c->in);
    c->in_off = 0;
}

void bconn_make_idle(bconn *c, uint64_t idle_timeout_ms)
{
    assert(c->state == BC_BUSY);
    c->owner = NULL;
    c->state = BC_IDLE;
    c->idle_since = loop_now(bconn_loop(c));
    c->requests++;
    if (c->in.data)
        bconn_release_in(c);
    bconn_wait(c, idle_timeout_ms);
}

void bconn_make_busy(bconn *c, session *owner)
{
    assert(c->state == BC_IDLE && !c->in.data);
    c->owner = owner;
    c->state = BC_BUSY;
    c->wblocked = false;   /* a send that finds no room brings an EPOLLOUT edge */
    bconn_wait_none(c);
}

void bconn_close(bconn *c)
{
    if (c->state == BC_CLOSED)
        return;
    backend *be = c->be;
    loop *l = bconn_loop(c);
    if (c->state == BC_IDLE)
        backend_pool_remove(be, c);
    int fd = c->io.fd;
    loop_io_del(l, &c->io);
    close(fd);
    deadline_stop(l, &c->dl);
    if (c->in.data)
        bconn_release_in(c);
    c->state = BC_CLOSED;
    c->owner = NULL;
    loop_defer(l, &c->defer, on_deferred);
    backend_conn_closed(be);   /* may free be: last */
}
