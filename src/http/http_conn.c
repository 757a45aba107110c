/* http_conn — see http_conn.h for the state machine.
 *
 * Reading order of this file: accept (http_conn_new) -> on_io -> conn_read
 * -> conn_process (parse head, frame body, dispatch) -> request_done ->
 * conn_flush -> close. Input buffer layout while a request is in progress:
 *
 *   in.data                in_off             in_off+head_len
 *   | consumed (pipelined) | request head ... | body (decoded) | next bytes |
 *
 * The parsed head points into in.data. The buffer may move (compaction,
 * realloc) only while the request is still being read, and then every
 * pointer is rebased; once the handler runs the buffer stays put, so reads
 * for the next pipelined request only fill the free space already there.
 */
#include "http/http_conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/linger.h"
#include "core/log.h"
#include "http/request.h"
#include "http/server.h"
#include "obs/metrics.h"

#define READS_PER_EVENT 16           /* fairness: then yield to other connections */
#define REQS_PER_PASS   256          /* fairness: requests per processing pass */
#define IN_SLACK        (64u * 1024) /* input room beyond head + body limits */

/* What conn->dl limits. */
enum conn_wait { WAIT_NONE, WAIT_IDLE, WAIT_HEAD, WAIT_BODY, WAIT_WRITE, WAIT_LINGER };
_Static_assert((int)WAIT_IDLE == METRICS_TIMEOUT_IDLE + 1 && (int)WAIT_LINGER == METRICS_TIMEOUTS,
               "metrics_http_timeout takes a conn_wait");

static void conn_process(http_conn *c);
static void conn_flush(http_conn *c);
static void conn_read_loop(http_conn *c);
static void on_io(loop_io *io, uint32_t events);
static void on_timer(loop_timer *t);
static void on_deferred(loop_deferred *d);

/* ---- timeouts -------------------------------------------------------------- */

/* Sets what the connection waits for and until when (a lazily re-armed
 * deadline: see core/deadline.h). */
static void conn_wait_for(http_conn *c, enum conn_wait w, uint64_t timeout_ms)
{
    c->wait = (uint8_t)w;
    if (w == WAIT_NONE)
        deadline_clear(&c->dl);
    else
        deadline_set(c->srv->loop, &c->dl, timeout_ms, on_timer);
}

/* The wait that fits the reading state: idle between requests, the head's
 * overall deadline, or the body's between-reads deadline. */
static void conn_wait_read(http_conn *c)
{
    const config *cfg = c->srv->cfg;
    if (c->state == CONN_HANDLING)
        conn_wait_for(c, WAIT_NONE, 0);
    else if (!c->req)
        conn_wait_for(c, WAIT_IDLE, cfg->idle_timeout);
    else if (c->req->head_len == 0) {
        if (c->wait != WAIT_HEAD)   /* the head deadline is overall, not per read */
            conn_wait_for(c, WAIT_HEAD, cfg->header_timeout);
    } else
        conn_wait_for(c, WAIT_BODY, cfg->body_timeout);
}

/* Whether bytes wait in the socket that we have not read. */
static bool input_waiting(int fd)
{
    int n = 0;
    return ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

/* A deadline passed; was it our fault? After the loop stood still (CPU
 * starvation, a long callback, a debugger), the client's next bytes, or
 * the room its reading made, can be in the kernel while the readiness
 * event is not dispatched yet: the timer phase runs after one batch of
 * events, or none at all when the poll was interrupted (a stopped process
 * resumes with EINTR). So first do once what that event would do, through
 * the normal path, and let the timeout stand only if that set no new
 * deadline: input restarts the idle and body waits and may complete a
 * head (whose overall deadline it does not move), a send that makes
 * progress restarts the write wait. Returns true when the connection was
 * closed or has a new wait. */
static bool timeout_excused(http_conn *c)
{
    switch (c->wait) {
    case WAIT_IDLE:
    case WAIT_HEAD:
    case WAIT_BODY:
        if (!input_waiting(c->io.fd))
            return false;
        c->readable = true;
        conn_read_loop(c);
        break;
    case WAIT_WRITE:
        conn_flush(c);
        break;
    default:
        return false;
    }
    return c->state == CONN_CLOSED || c->wait == WAIT_NONE || c->dl.at != 0;
}

static void on_timer(loop_timer *t)
{
    http_conn *c = container_of(t, http_conn, dl.timer);
    if (c->wait == WAIT_NONE || !deadline_expired(c->srv->loop, &c->dl))
        return;
    if (timeout_excused(c))
        return;
    metrics_http_timeout(c->srv->metrics, c->wait);
    switch (c->wait) {
    case WAIT_HEAD:
    case WAIT_BODY:
        if (!c->req) {   /* a new connection that never sent a byte */
            http_conn_close(c);
            break;
        }
        /* the client started a request and stalled: tell it, then close */
        c->wait = WAIT_NONE;
        req_respond_error(c->req, 408);
        break;
    default:   /* idle keep-alive, stalled writes, lingering: just close */
        http_conn_close(c);
    }
}

/* ---- buffers ---------------------------------------------------------------- */

static void conn_release_in(http_conn *c)
{
    if (c->in.cap == SERVER_BUF_SIZE)
        server_buf_put(c->srv, c->in.data);
    else
        free(c->in.data);
    c->in = (buf){ 0 };
    c->in_off = 0;
}

static void conn_release_out(http_conn *c)
{
    if (c->out.cap == SERVER_BUF_SIZE)
        server_buf_put(c->srv, c->out.data);
    else
        free(c->out.data);
    c->out = (buf){ 0 };
    c->out_off = 0;
}

/* Ensures an output buffer exists (pooled) so small responses do not malloc. */
static int conn_out_ready(http_conn *c)
{
    if (c->out.data)
        return 0;
    c->out.data = server_buf_get(c->srv);
    if (!c->out.data)
        return -ENOMEM;
    c->out.cap = SERVER_BUF_SIZE;
    return 0;
}

/* Moves unconsumed input to the front, rebasing a request being read. */
static void conn_compact(http_conn *c)
{
    if (c->in_off == 0)
        return;
    char *old = c->in.data + c->in_off;
    memmove(c->in.data, old, c->in.len - c->in_off);
    c->in.len -= c->in_off;
    c->in_off = 0;
    if (c->req)
        req_rebase(c->req, old, c->in.data);
}

/* Makes room for at least `want` more input bytes, without passing `limit`
 * total capacity. Only while no handler holds pointers into the buffer.
 * Returns bytes of room now available (0: at the limit). */
static size_t conn_in_room(http_conn *c, size_t want, size_t limit)
{
    if (!c->in.data) {
        c->in.data = server_buf_get(c->srv);
        if (!c->in.data)
            return 0;
        c->in.cap = SERVER_BUF_SIZE;
    }
    if (c->in.cap - c->in.len >= want)
        return c->in.cap - c->in.len;
    if (c->state == CONN_HANDLING)   /* the handler's pointers pin the buffer */
        return c->in.cap - c->in.len;
    conn_compact(c);
    if (c->in.cap - c->in.len >= want || c->in.cap >= limit)
        return c->in.cap - c->in.len;
    size_t cap = c->in.cap * 2;
    while (cap - c->in.len < want && cap < limit)
        cap *= 2;
    if (cap > limit)
        cap = limit;
    char *old = c->in.data;
    char *p;
    if (c->in.cap == SERVER_BUF_SIZE) {   /* pooled: copy out, return it */
        p = malloc(cap);
        if (p) {
            memcpy(p, old, c->in.len);
            server_buf_put(c->srv, old);
        }
    } else {
        p = realloc(old, cap);
    }
    if (!p)
        return c->in.cap - c->in.len;
    c->in.data = p;
    c->in.cap = cap;
    if (c->req)
        req_rebase(c->req, old, p);
    return c->in.cap - c->in.len;
}

/* ---- lifecycle --------------------------------------------------------------- */

http_conn *http_conn_new(http_server *s, int fd)
{
    http_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->srv = s;
    c->state = CONN_READING;
    if (loop_io_add(s->loop, &c->io, fd, LOOP_READ | LOOP_WRITE | LOOP_RDHUP | LOOP_EDGE,
                    on_io) < 0) {
        free(c);
        return NULL;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    metrics_conn_opened(s->metrics);
    /* a new connection must send its first request within the head timeout */
    conn_wait_for(c, WAIT_HEAD, s->cfg->header_timeout);
    return c;
}

/* Takes c out of the loop and the server's set and gives back its buffers;
 * the socket itself is the caller's to close or hand over. The memory is
 * freed from a deferred callback (an event for c may still be queued). */
static void conn_retire(http_conn *c)
{
    http_server *s = c->srv;
    loop_io_del(s->loop, &c->io);   /* sets io.fd to -1 */
    deadline_stop(s->loop, &c->dl);
    if (c->in.data)
        conn_release_in(c);
    if (c->out.data)
        conn_release_out(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    metrics_conn_closed(s->metrics);
    c->state = CONN_CLOSED;
    loop_defer(s->loop, &c->defer, on_deferred);
}

void http_conn_close(http_conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    http_server *s = c->srv;
    if (c->req) {
        myr_req *r = c->req;
        c->req = NULL;
        if (r->state == REQ_HANDLING || r->state == REQ_STREAMING) {
            /* the handler still holds r and its pointers into our input */
            r->owned_in = c->in;
            c->in = (buf){ 0 };
            req_cancel(r);
        } else {
            req_release(r);
        }
    }
    int fd = c->io.fd;
    conn_retire(c);
    close(fd);
    server_check_drained(s);
}

void http_conn_close_if_idle(http_conn *c)
{
    if (c->state == CONN_READING && !c->req && http_conn_unsent(c) == 0)
        http_conn_close(c);
}

/* Stops reading requests; the output is flushed, then the write side shut
 * and the input discarded briefly so the client reads our answer instead of
 * a reset. */
static void conn_start_closing(http_conn *c)
{
    if (c->req && c->req->state == REQ_READING) {   /* a request never finished */
        req_release(c->req);
        c->req = NULL;
    }
    c->state = CONN_CLOSING;
    conn_wait_for(c, WAIT_WRITE, c->srv->cfg->write_timeout);
}

static void conn_linger(http_conn *c)
{
    if (c->eof) {
        http_conn_close(c);
        return;
    }
    shutdown(c->io.fd, SHUT_WR);
    c->state = CONN_LINGERING;
    conn_wait_for(c, WAIT_LINGER, LINGER_MS);
    c->readable = true;   /* input may already be waiting */
    http_conn_flush_later(c);
}

static void linger_read(http_conn *c)
{
    if (linger_discard(c->io.fd) == -EAGAIN)
        c->readable = false;
    else
        http_conn_close(c);
}

/* ---- I/O events --------------------------------------------------------------- */

static void on_io(loop_io *io, uint32_t events)
{
    http_conn *c = container_of(io, http_conn, io);
    if (c->state == CONN_CLOSED)
        return;
    if (events & LOOP_WRITE)
        conn_flush(c);
    if (c->state == CONN_CLOSED)
        return;
    if (events & (LOOP_READ | LOOP_RDHUP | LOOP_ERROR)) {
        c->readable = true;
        if (events & (LOOP_RDHUP | LOOP_ERROR))
            c->rdhup = true;
        if (c->state == CONN_LINGERING)
            linger_read(c);
        else
            conn_read_loop(c);
    }
}

static void on_deferred(loop_deferred *d)
{
    http_conn *c = container_of(d, http_conn, defer);
    if (c->state == CONN_CLOSED) {
        free(c);
        return;
    }
    if (c->state == CONN_LINGERING) {
        if (c->readable)
            linger_read(c);
        return;
    }
    conn_process(c);
    if (c->state != CONN_CLOSED)
        conn_read_loop(c);
}

void http_conn_flush_later(http_conn *c)
{
    loop_defer(c->srv->loop, &c->defer, on_deferred);
}

/* Whether to read now: reading requests, output not backed up. */
static bool conn_may_read(const http_conn *c)
{
    return (c->state == CONN_READING || c->state == CONN_HANDLING) && !c->eof &&
           http_conn_unsent(c) <= OUT_HIGH;
}

/* One read(2) into the input buffer. Returns bytes read, 0 at EOF or when
 * there is no room, -1 when the connection was closed. */
static ssize_t conn_read_once(http_conn *c)
{
    const http_limits *lim = &c->srv->limits;
    size_t limit = (size_t)lim->max_header_bytes + IN_SLACK;
    if (c->req && c->req->head_len)
        limit += c->req->h.content_length > 0 ? (size_t)c->req->h.content_length
                                              : (size_t)c->srv->cfg->max_body;
    size_t room = conn_in_room(c, 1024, limit);
    if (room == 0) {
        if (!c->in.data) {   /* out of memory */
            http_conn_close(c);
            return -1;
        }
        return 0;   /* full: parse what we have; a handler may free room */
    }
    for (;;) {
        ssize_t n = read(c->io.fd, c->in.data + c->in.len, room);
        if (n > 0) {
            c->in.len += (size_t)n;
            metrics_http_bytes_in(c->srv->metrics, (uint64_t)n);
            /* a short read drained the socket; edge-triggered epoll will
             * report bytes that arrive later. Not so after RDHUP: the EOF
             * behind these bytes was already reported and must be read. */
            if ((size_t)n < room && !c->rdhup)
                c->readable = false;
            return n;
        }
        if (n == 0) {
            c->eof = true;
            c->readable = false;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            c->readable = false;
            return 0;
        }
        http_conn_close(c);   /* ECONNRESET and friends */
        return -1;
    }
}

static void conn_read_loop(http_conn *c)
{
    for (int i = 0; i < READS_PER_EVENT; i++) {
        if (c->state == CONN_CLOSED || !c->readable || !conn_may_read(c))
            break;
        if (conn_read_once(c) < 0)
            return;
        conn_process(c);
        if (c->state == CONN_CLOSED)
            return;
        if (c->in.len == c->in.cap && c->state == CONN_HANDLING)
            break;   /* pinned and full: wait for the handler */
    }
    if (c->state == CONN_CLOSED)
        return;
    if (c->eof && c->state == CONN_READING)
        conn_process(c);   /* handle EOF with nothing more to read */
    else if (c->readable && conn_may_read(c) &&
             !(c->in.len == c->in.cap && c->state == CONN_HANDLING))
        http_conn_flush_later(c);   /* more to read: after other connections */
}

/* ---- request framing ------------------------------------------------------------ */

/* Fails the current request with a status and closes after the answer. */
static void conn_fail(http_conn *c, int status)
{
    req_respond_error(c->req, status);
}

/* Returns true when the body of c->req is complete; false to wait for bytes
 * (or after failing the request). */
static bool conn_body_ready(http_conn *c)
{
    myr_req *r = c->req;
    size_t head_end = c->in_off + r->head_len;
    if (r->h.chunked) {
        size_t raw_at = head_end + r->body_len;
        size_t len = c->in.len - raw_at;
        size_t orig = len;
        ssize_t rc = http_chunked_decode(&r->chunked, c->in.data + raw_at, &len,
                                         c->srv->cfg->max_body);
        r->body_len += len;
        if (rc == HTTP_AGAIN) {
            c->in.len = raw_at + len;
            return false;
        }
        if (rc < 0) {
            conn_fail(c, (int)-rc);
            return false;
        }
        /* the next request's bytes sit at the end of the decoded area */
        memmove(c->in.data + raw_at + len, c->in.data + raw_at + orig - (size_t)rc, (size_t)rc);
        c->in.len = raw_at + len + (size_t)rc;
        return true;
    }
    if (r->h.content_length > 0) {
        if (c->in.len - head_end < (uint64_t)r->h.content_length)
            return false;
        r->body_len = (uint64_t)r->h.content_length;
    }
    return true;
}

static const char continue_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* Parses the head of c->req. Returns true when it is complete. */
static bool conn_parse_head(http_conn *c)
{
    myr_req *r = c->req;
    http_server *s = c->srv;
    size_t avail = c->in.len - c->in_off;
    ssize_t rc = http_parse_request(c->in.data + c->in_off, avail, c->scanned, &r->h,
                                    &s->limits);
    if (rc == HTTP_AGAIN) {
        c->scanned = (uint32_t)avail;
        return false;
    }
    if (rc < 0) {
        conn_fail(c, (int)-rc);
        return false;
    }
    r->head_len = (uint32_t)rc;
    r->base = c->in.data + c->in_off;
    r->is_head = r->h.method_id == HTTP_HEAD;
    if (r->h.content_length > 0 && (uint64_t)r->h.content_length > s->cfg->max_body) {
        conn_fail(c, 413);
        return false;
    }
    return true;
}

/* Sends 100 Continue when the client waits for it before sending a body. */
static void conn_maybe_continue(http_conn *c)
{
    myr_req *r = c->req;
    if (!r->h.expect_continue || c->sent_continue || r->h.version_minor == 0)
        return;
    if (c->in.len > c->in_off + r->head_len)
        return;   /* the body is already coming */
    c->sent_continue = true;
    if (conn_out_ready(c) == 0)
        buf_append(&c->out, continue_100, sizeof(continue_100) - 1);
}

static void conn_process(http_conn *c)
{
    http_server *s = c->srv;
    c->in_process = true;
    int budget = REQS_PER_PASS;
    while (c->state == CONN_READING && budget > 0 && http_conn_unsent(c) <= OUT_HIGH) {
        if (!c->req) {
            if (c->in_off == c->in.len)
                break;
            c->req = server_req_get(s);
            if (!c->req) {
                http_conn_close(c);
                return;
            }
            c->req->conn = c;
            c->scanned = 0;
        }
        myr_req *r = c->req;
        if (r->head_len == 0 && !conn_parse_head(c)) {
            /* the head deadline starts when we first have to wait for it */
            if (c->state == CONN_READING)
                conn_wait_read(c);
            break;
        }
        if (c->state != CONN_READING)
            break;
        if (!conn_body_ready(c)) {
            if (c->state == CONN_READING) {
                conn_maybe_continue(c);
                conn_wait_read(c);
            }
            break;
        }
        budget--;
        c->state = CONN_HANDLING;
        conn_wait_for(c, WAIT_NONE, 0);
        r->body = r->base + r->head_len;
        r->keep_alive = r->h.keep_alive && !s->draining;
        s->requests++;
        req_dispatch(r);   /* may complete at once: http_conn_request_done */
    }
    c->in_process = false;
    if (c->state == CONN_CLOSED)
        return;
    if (c->eof && c->state == CONN_READING) {
        /* the client half-closed: every complete request it sent has been
         * answered (a partial one can never complete); flush and close */
        conn_start_closing(c);
    }
    if (budget == 0 && c->state == CONN_READING && c->in_off < c->in.len)
        http_conn_flush_later(c);   /* more pipelined requests: later */
    conn_flush(c);
}

void http_conn_request_done(http_conn *c)
{
    myr_req *r = c->req;
    bool keep = r->keep_alive && !c->srv->draining;
    c->in_off += r->head_len + (uint32_t)r->body_len;
    c->req = NULL;
    c->scanned = 0;
    c->sent_continue = false;
    req_release(r);
    if (!keep) {
        conn_start_closing(c);
    } else {
        c->state = CONN_READING;
        if (c->in_off >= c->in.len && c->in.data)
            conn_release_in(c);   /* idle: hold no input buffer */
        conn_wait_read(c);
    }
    if (!c->in_process)
        http_conn_flush_later(c);
}

/* ---- writing ------------------------------------------------------------------------ */

static void conn_flush(http_conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->io.fd, c->out.data + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            metrics_http_bytes_out(c->srv->metrics, (uint64_t)n);
            if (c->wait == WAIT_WRITE)   /* progress restarts the write timeout */
                conn_wait_for(c, WAIT_WRITE, c->srv->cfg->write_timeout);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (c->wait != WAIT_WRITE)
                conn_wait_for(c, WAIT_WRITE, c->srv->cfg->write_timeout);
            return;   /* EPOLLOUT (edge) tells us when to go on */
        }
        http_conn_close(c);   /* EPIPE, ECONNRESET: the client is gone */
        return;
    }
    if (c->out.data) {
        if (c->out.cap == SERVER_BUF_SIZE && (c->req || c->state != CONN_READING)) {
            c->out.len = c->out_off = 0;   /* keep the pooled buffer while busy */
        } else {
            conn_release_out(c);
        }
    }
    if (c->state == CONN_CLOSING) {
        conn_linger(c);
        return;
    }
    if (c->wait == WAIT_WRITE)
        conn_wait_read(c);
    if (c->req && c->req->state == REQ_STREAMING && c->req->on_drain) {
        void (*cb)(myr_req *, void *) = c->req->on_drain;
        c->req->on_drain = NULL;
        cb(c->req, c->req->drain_arg);
        return;
    }
    if (c->readable && conn_may_read(c))
        http_conn_flush_later(c);   /* reading was paused by backpressure */
}

int http_conn_out(http_conn *c, buf **out)
{
    if (conn_out_ready(c))
        return -ENOMEM;
    *out = &c->out;
    return 0;
}

/* ---- protocol upgrade ----------------------------------------------------------------- */

int http_conn_detach(http_conn *c, http_detached *d)
{
    http_server *s = c->srv;
    if (c->state != CONN_HANDLING || !c->req)
        return -EBUSY;
    myr_req *r = c->req;
    /* bytes after the upgrade request belong to the new protocol */
    size_t used = c->in_off + r->head_len + (size_t)r->body_len;
    buf rest = { 0 };
    if (c->in.len > used && buf_append(&rest, c->in.data + used, c->in.len - used))
        return -ENOMEM;
    buf out = { 0 };
    if (http_conn_unsent(c) &&
        buf_append(&out, c->out.data + c->out_off, http_conn_unsent(c))) {
        buf_free(&rest);
        return -ENOMEM;
    }
    c->req = NULL;
    r->state = REQ_DONE;
    req_release(r);
    d->fd = c->io.fd;
    d->in = rest;
    d->out = out;
    conn_retire(c);   /* the fd stays open: it is the receiver's now */
    s->upgraded++;
    return 0;
}
