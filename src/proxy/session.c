/* session — see session.h for the states and the data path.
 *
 * Reading order: session_new -> on_io -> session_run, whose steps are, in
 * order: read_client, request_step (parse the head, begin_exchange, frame
 * the body into bout), backend_step (finish a connect, send bout, read the
 * response), response_step (parse its head, frame its body into out,
 * end_exchange), write_client. Then failures: attempt_failed (retry or
 * answer), respond_error, abort; then timeouts and closing. How a body is
 * taken from a buffer and framed again is body.c's business.
 *
 * Buffer layouts while an exchange runs (offsets, not pointers, because
 * buffers grow and compact):
 *
 *   in:     | earlier | head (head_len) | body: kept | decoded, unsent | raw / next request |
 *           0      in_off           up.start      up.at          up.end            in.len
 *
 *   bc->in: | consumed | decoded response body, unsent | raw |
 *           0       down.at                       down.end  in.len
 *
 * The request head stays in `in` until the exchange ends: the parsed head
 * points into it, and a retry on another backend writes the head again
 * from it. Body bytes already forwarded stay too while room allows, so a
 * small request can be replayed whole; once some are dropped to make room
 * (a large upload) the exchange is no longer replayable.
 */
#include "proxy/session.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/deadline.h"
#include "core/linger.h"
#include "core/log.h"
#include "http/http_resp_parser.h"
#include "http/http_response.h"
#include "proxy/backend.h"
#include "proxy/balancer.h"
#include "proxy/bconn.h"
#include "proxy/body.h"
#include "proxy/rewrite.h"

#define IN_SLACK     4096u          /* room past the head limit */
#define RUN_PASSES   16             /* fairness: steps per run, then yield */

enum session_state { SS_IDLE, SS_HEAD, SS_EXCHANGE, SS_CLOSING, SS_LINGER, SS_CLOSED };

/* What the client-side deadline limits. */
enum session_wait { W_NONE, W_IDLE, W_HEAD, W_BODY, W_WRITE, W_LINGER };

enum down_phase { DOWN_HEAD, DOWN_BODY, DOWN_DONE };

struct exchange {
    http_request  req;            /* headers -> hdrs[0..max_headers) */
    http_response resp;           /* headers -> hdrs[max_headers..) */
    uint32_t      head_len;       /* request head bytes at in_off */
    uint32_t      scanned;        /* request head bytes already scanned */
    uint32_t      resp_scanned;   /* response head bytes already scanned */
    body          up;             /* the request body, in s->in */
    body          down;           /* the response body, in bc->in */
    uint8_t       up_frame;       /* enum rewrite_framing towards the backend */
    uint8_t       down_frame;     /* enum rewrite_framing towards the client */
    uint8_t       down_phase;     /* enum down_phase */
    bool          up_queued;      /* the whole request is in bout */
    bool          up_broken;      /* sending failed: what is queued is dropped */
    bool          replayable;     /* no request body byte was dropped */
    bool          sent_client;    /* response bytes were queued for the client */
    bool          keep_client;    /* the client connection outlives this exchange */
    bool          is_head;
    int           fail_status;    /* answer if no attempt succeeds: 502/503/504 */
    uint64_t      key;            /* consistent-hashing key */
    uint64_t      t_attempt;      /* loop ns the current attempt started */
    backend      *be;             /* the current attempt's backend, or NULL */
    backend      *tried[LB_MAX_TRIED];
    uint32_t      ntried;
    exchange     *next_free;      /* the balancer's pool */
    http_header   hdrs[];         /* 2 x limits.max_headers */
};

struct session {
    loop_io       io;             /* the client socket */
    deadline      dl;             /* when the current client wait ends (lazy timer) */
    uint8_t       wait;           /* enum session_wait */
    uint8_t       state;          /* enum session_state */
    bool          readable;       /* epoll said readable, no EAGAIN since */
    bool          wblocked;       /* a send hit EAGAIN; EPOLLOUT clears it */
    bool          eof;            /* the client shut its write side */
    bool          rdhup;          /* epoll saw the client's shutdown */
    bool          running;        /* inside session_run */
    bool          rerun;          /* an event arrived during session_run */
    bool          cprogress;      /* bytes moved on the client socket this run */
    bool          bprogress;      /* bytes moved on the backend socket this run */
    balancer     *bal;
    session      *prev, *next;    /* the balancer's list */
    buf           in;             /* client bytes; no storage while idle */
    size_t        in_off;         /* where the current request starts */
    buf           out;            /* bytes for the client */
    size_t        out_off;        /* ... already sent */
    buf           bout;           /* bytes for the backend */
    size_t        bout_off;       /* ... already sent */
    exchange     *ex;             /* the request in progress */
    bconn        *bc;             /* its backend connection */
    loop_deferred defer;          /* re-run later, or free after close */
    char          ip[INET6_ADDRSTRLEN];
    bool          ipv6;
    uint32_t      requests;       /* requests begun on this connection */
};

static void session_run(session *s);
static void on_io(loop_io *io, uint32_t events);
static void on_timer(loop_timer *t);
static void on_deferred(loop_deferred *d);
static void attempt_failed(session *s, enum backend_error kind);
static void request_body(session *s);
static bool start_attempt(session *s);

static inline size_t unsent(const buf *b, size_t off)
{
    return b->len - off;
}

static const config *cfg_of(const session *s)
{
    return s->bal->cfg;
}

/* ---- exchange pool ---------------------------------------------------------------- */

static exchange *exchange_get(balancer *bal)
{
    exchange *ex = bal->free_exs;
    if (ex) {
        bal->free_exs = ex->next_free;
        bal->nfree_exs--;
    } else if (!(ex = malloc(bal->ex_size))) {
        return NULL;
    }
    memset(ex, 0, sizeof(*ex));
    ex->req.headers = ex->hdrs;
    ex->resp.headers = ex->hdrs + bal->limits.max_headers;
    ex->replayable = true;
    bal->nexchanges++;
    return ex;
}

static void exchange_put(balancer *bal, exchange *ex)
{
    assert(ex->be == NULL);   /* detach_backend first */
    bal->nexchanges--;
    if (bal->nfree_exs < BAL_POOL_EXS) {
        ex->next_free = bal->free_exs;
        bal->free_exs = ex;
        bal->nfree_exs++;
    } else {
        free(ex);
    }
}

size_t session_exchange_size(uint32_t max_headers)
{
    return sizeof(exchange) + 2 * (size_t)max_headers * sizeof(http_header);
}

void session_free_exchanges(balancer *bal)
{
    while (bal->free_exs) {
        exchange *ex = bal->free_exs;
        bal->free_exs = ex->next_free;
        free(ex);
    }
    bal->nfree_exs = 0;
}

/* ---- client-side waits ------------------------------------------------------------ */

/* Sets what the client side waits for and until when (a lazily re-armed
 * deadline: see core/deadline.h). */
static void wait_for(session *s, enum session_wait w, uint64_t timeout_ms)
{
    s->wait = (uint8_t)w;
    if (w == W_NONE)
        deadline_clear(&s->dl);
    else
        deadline_set(s->bal->loop, &s->dl, timeout_ms, on_timer);
}

/* Sets the client wait that fits the state; a wait that continues keeps
 * its deadline unless bytes moved (head: an overall deadline, never renewed). */
static void update_client_wait(session *s)
{
    const config *cfg = cfg_of(s);
    enum session_wait w = W_NONE;
    uint64_t ms = 0;
    switch (s->state) {
    case SS_IDLE:
        if (s->wait == W_HEAD && s->requests == 0)
            return;   /* a new connection: its first request within the head timeout */
        w = W_IDLE, ms = cfg->idle_timeout;
        break;
    case SS_HEAD:
        w = W_HEAD, ms = cfg->header_timeout;
        break;
    case SS_EXCHANGE:
        if (unsent(&s->out, s->out_off) && s->wblocked)
            w = W_WRITE, ms = cfg->write_timeout;
        else if (!s->ex->up.done && unsent(&s->bout, s->bout_off) <= OUT_HIGH)
            w = W_BODY, ms = cfg->body_timeout;   /* waiting on the client */
        break;
    case SS_CLOSING:
        w = W_WRITE, ms = cfg->write_timeout;
        break;
    default:
        return;   /* LINGER set its own */
    }
    if (w != s->wait || (s->cprogress && w != W_HEAD && w != W_IDLE))
        wait_for(s, w, ms);
}

/* The backend wait: connect (set at connect), or backend-timeout while the
 * backend owes us progress: accepting request bytes, or answering. */
static void update_backend_wait(session *s)
{
    bconn *bc = s->bc;
    exchange *ex = s->ex;
    if (!bc || bc->state != BC_BUSY)
        return;
    bool owed = unsent(&s->bout, s->bout_off) > 0 ||
                (ex->up_queued && ex->down_phase != DOWN_DONE &&
                 unsent(&s->out, s->out_off) <= OUT_HIGH);
    if (!owed)
        bconn_wait_none(bc);
    else if (s->bprogress || !bconn_waiting(bc))
        bconn_wait(bc, cfg_of(s)->backend_timeout);
}

/* ---- buffers ------------------------------------------------------------------------ */

/* Moves every pointer of a parsed request head by new - old. */
static void rebase_request(http_request *r, const char *old, char *new_base)
{
#define MOVE(p) do { if (p) (p) = new_base + ((p) - old); } while (0)
    MOVE(r->method);
    MOVE(r->target);
    MOVE(r->path);
    MOVE(r->query);
    MOVE(r->host);
    for (uint32_t i = 0; i < r->num_headers; i++) {
        MOVE(r->headers[i].name);
        MOVE(r->headers[i].value);
    }
#undef MOVE
}

/* Grows x to at least `want` bytes of capacity (at most `limit`). Returns
 * the old data pointer (for rebasing) or NULL when it could not grow. */
static char *grow(balancer *bal, buf *x, size_t limit)
{
    size_t cap = x->cap * 2;
    if (cap > limit)
        cap = limit;
    if (cap <= x->cap)
        return NULL;
    char *old = x->data, *p;
    if (x->cap == BAL_BUF_SIZE) {   /* pooled: copy out, give it back */
        p = malloc(cap);
        if (p) {
            memcpy(p, old, x->len);
            balancer_buf_put(bal, old);
        }
    } else {
        p = realloc(old, cap);
    }
    if (!p)
        return NULL;
    x->data = p;
    x->cap = cap;
    return old;
}

static int ensure_buf(balancer *bal, buf *x)
{
    if (x->data)
        return 0;
    if (!(x->data = balancer_buf_get(bal)))
        return -ENOMEM;
    x->cap = BAL_BUF_SIZE;
    x->len = 0;
    return 0;
}

/* Drops request body bytes already forwarded, to make room (the request is
 * no longer replayable). */
static void drop_forwarded(session *s)
{
    body *b = &s->ex->up;
    size_t n = b->at - b->start;
    if (n == 0)
        return;
    memmove(s->in.data + b->start, s->in.data + b->at, s->in.len - b->at);
    s->in.len -= n;
    b->at -= n;
    b->end -= n;
    s->ex->replayable = false;
}

/* Room to read client bytes into, making some if it can. 0: full (or out
 * of memory: then in.data is NULL). */
static size_t client_room(session *s)
{
    balancer *bal = s->bal;
    if (ensure_buf(bal, &s->in))
        return 0;
    size_t limit;
    if (s->state == SS_EXCHANGE) {
        limit = s->ex->up.start + BODY_WINDOW;
        if (s->in.len >= s->in.cap || s->in.len >= limit)
            drop_forwarded(s);
    } else {
        if (s->in_off && s->in.cap - s->in.len < 1024) {   /* before parsing: no pointers */
            memmove(s->in.data, s->in.data + s->in_off, s->in.len - s->in_off);
            s->in.len -= s->in_off;
            s->in_off = 0;
        }
        limit = s->in_off + bal->limits.max_header_bytes + IN_SLACK;
    }
    if (s->in.len >= limit)
        return 0;
    if (s->in.len == s->in.cap) {
        char *old = grow(bal, &s->in, limit);
        if (old && s->state == SS_EXCHANGE)
            rebase_request(&s->ex->req, old, s->in.data);
    }
    size_t room = s->in.cap - s->in.len;
    return room < limit - s->in.len ? room : limit - s->in.len;
}

/* Room to read response bytes into. */
static size_t backend_room(session *s, bconn *bc)
{
    balancer *bal = s->bal;
    exchange *ex = s->ex;
    if (ensure_buf(bal, &bc->in))
        return 0;
    size_t limit;
    if (ex->down_phase == DOWN_HEAD) {
        if (bc->in_off && bc->in.cap - bc->in.len < 1024) {
            memmove(bc->in.data, bc->in.data + bc->in_off, bc->in.len - bc->in_off);
            bc->in.len -= bc->in_off;
            bc->in_off = 0;
        }
        limit = bc->in_off + bal->resp_limits.max_header_bytes + IN_SLACK;
    } else {
        body *b = &ex->down;
        if (b->at && (bc->in.len == bc->in.cap || bc->in.len >= BODY_WINDOW)) {
            memmove(bc->in.data, bc->in.data + b->at, bc->in.len - b->at);
            bc->in.len -= b->at;
            b->end -= b->at;
            b->start = b->at = 0;
        }
        limit = BODY_WINDOW;
    }
    if (bc->in.len >= limit)
        return 0;
    if (bc->in.len == bc->in.cap)
        grow(bal, &bc->in, limit);   /* nothing points into it between runs */
    size_t room = bc->in.cap - bc->in.len;
    return room < limit - bc->in.len ? room : limit - bc->in.len;
}

/* ---- proxy-made responses ---------------------------------------------------------------- */

/* Appends a short text response from the balancer itself. */
static int write_own_response(session *s, int status, bool keep, uint8_t minor)
{
    char body_text[64];
    int n = snprintf(body_text, sizeof(body_text), "%d %s\n", status,
                     http_status_reason(status));
    http_head h = {
        .status = status, .version_minor = minor, .keep_alive = keep,
        .content_type = "text/plain", .content_length = (uint64_t)n,
        .date = http_date_get(&s->bal->date, loop_now(s->bal->loop)),
    };
    if (ensure_buf(s->bal, &s->out) || http_head_write(&s->out, &h) ||
        buf_append(&s->out, body_text, (size_t)n))
        return -ENOMEM;
    return 0;
}

static void start_closing(session *s);
static void end_exchange(session *s, bool reuse_backend);

/* Answers the current request with the balancer's own status (4xx for a
 * bad request, 502/503/504 for backend trouble) and ends the exchange. The
 * client connection stays open only if its request was read whole. */
static void respond_error(session *s, int status)
{
    exchange *ex = s->ex;
    bool keep = ex && s->state == SS_EXCHANGE && ex->up.done && ex->keep_client &&
                status >= 500 && !s->bal->draining;
    uint8_t minor = ex && s->state == SS_EXCHANGE ? ex->req.version_minor : 1;
    if (write_own_response(s, status, keep, minor)) {
        session_close(s);
        return;
    }
    if (ex && s->state == SS_EXCHANGE) {
        ex->keep_client = keep;
        end_exchange(s, false);
    } else {
        start_closing(s);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void release_buf(session *s, buf *x, size_t *off)
{
    balancer_buf_release(s->bal, x);
    *off = 0;
}

/* Ends the current attempt's hold on its backend: counts it and gives the
 * connection back to the pool or closes it. The backend may be freed by
 * this (a removed one's last connection), so nothing may touch it after. */
static void detach_backend(session *s, bool reuse)
{
    exchange *ex = s->ex;
    bconn *bc = s->bc;
    assert(!bc || (bc->owner == s && bc->be == ex->be));
    if (ex->be) {
        assert(ex->be->active > 0);
        ex->be->active--;
        ex->be = NULL;
    }
    s->bc = NULL;
    if (!bc)
        return;
    bc->in_off = 0;
    if (reuse) {
        bc->in.len = 0;
        backend_pool_put(bc->be, bc);
    } else {
        bconn_close(bc);
    }
}

void session_close(session *s)
{
    if (s->state == SS_CLOSED)
        return;
    balancer *bal = s->bal;
    if (s->ex) {
        detach_backend(s, false);
        exchange_put(bal, s->ex);
        s->ex = NULL;
    }
    int fd = s->io.fd;
    loop_io_del(bal->loop, &s->io);
    close(fd);
    deadline_stop(bal->loop, &s->dl);
    release_buf(s, &s->in, &s->in_off);
    release_buf(s, &s->out, &s->out_off);
    release_buf(s, &s->bout, &s->bout_off);
    if (s->prev)
        s->prev->next = s->next;
    else
        bal->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    bal->nsessions--;
    s->state = SS_CLOSED;
    loop_defer(bal->loop, &s->defer, on_deferred);
    balancer_check_drained(bal);
}

void session_close_if_idle(session *s)
{
    if (s->state == SS_IDLE && s->in.len == s->in_off && unsent(&s->out, s->out_off) == 0)
        session_close(s);
}

void session_close_idle_all(balancer *bal)
{
    for (session *s = bal->sessions, *next; s; s = next) {
        next = s->next;
        session_close_if_idle(s);
    }
}

void session_close_all(balancer *bal)
{
    while (bal->sessions)
        session_close(bal->sessions);
}

/* Stops taking requests: flush what is queued, then shut down and linger. */
static void start_closing(session *s)
{
    if (s->ex) {
        detach_backend(s, false);
        exchange_put(s->bal, s->ex);
        s->ex = NULL;
    }
    s->state = SS_CLOSING;
    balancer_check_drained(s->bal);
}

/* A response already under way cannot be finished: the client must see a
 * broken message, never a complete-looking one. */
static void abort_session(session *s)
{
    session_close(s);
}

static void start_linger(session *s)
{
    if (s->eof) {
        session_close(s);
        return;
    }
    shutdown(s->io.fd, SHUT_WR);
    s->state = SS_LINGER;
    wait_for(s, W_LINGER, LINGER_MS);
    s->readable = true;   /* input may already be waiting */
    loop_defer(s->bal->loop, &s->defer, on_deferred);
}

static void linger_read(session *s)
{
    if (linger_discard(s->io.fd) == -EAGAIN)
        s->readable = false;
    else
        session_close(s);
}

session *session_new(balancer *bal, int fd, const struct sockaddr_storage *peer)
{
    session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->bal = bal;
    s->state = SS_IDLE;
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &a->sin6_addr, s->ip, sizeof(s->ip));
        s->ipv6 = true;
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &a->sin_addr, s->ip, sizeof(s->ip));
    }
    if (loop_io_add(bal->loop, &s->io, fd, LOOP_READ | LOOP_WRITE | LOOP_RDHUP | LOOP_EDGE,
                    on_io) < 0) {
        free(s);
        return NULL;
    }
    s->next = bal->sessions;
    if (bal->sessions)
        bal->sessions->prev = s;
    bal->sessions = s;
    bal->nsessions++;
    /* the first request must come within the head timeout */
    wait_for(s, W_HEAD, bal->cfg->header_timeout);
    return s;
}

/* ---- events ----------------------------------------------------------------------------------- */

static void on_io(loop_io *io, uint32_t events)
{
    session *s = container_of(io, session, io);
    if (s->state == SS_CLOSED)
        return;
    if (events & LOOP_WRITE)
        s->wblocked = false;
    if (events & (LOOP_READ | LOOP_RDHUP | LOOP_ERROR)) {
        s->readable = true;
        if (events & (LOOP_RDHUP | LOOP_ERROR))
            s->rdhup = true;
    }
    if (s->state == SS_LINGER)
        linger_read(s);
    else
        session_run(s);
}

void session_backend_event(session *s, bool timed_out)
{
    if (s->state == SS_CLOSED)
        return;
    if (!timed_out) {
        session_run(s);
        return;
    }
    exchange *ex = s->ex;
    if (!ex || !s->bc)
        return;
    if (s->bc->state == BC_CONNECTING) {
        attempt_failed(s, BERR_CONNECT);
    } else if (ex->down_phase == DOWN_HEAD) {
        attempt_failed(s, BERR_TIMEOUT);
    } else {   /* stalled mid-body: the response cannot be completed */
        ex->be->st.errors[BERR_TIMEOUT]++;
        backend_report(ex->be, OUTCOME_FAILED);
        abort_session(s);
        return;
    }
    if (s->state != SS_CLOSED)
        session_run(s);
}

static void on_deferred(loop_deferred *d)
{
    session *s = container_of(d, session, defer);
    if (s->state == SS_CLOSED) {
        free(s);
        return;
    }
    if (s->state == SS_LINGER) {
        if (s->readable)
            linger_read(s);
        return;
    }
    session_run(s);
}

static void on_timer(loop_timer *t)
{
    session *s = container_of(t, session, dl.timer);
    if (s->wait == W_NONE || s->state == SS_CLOSED || !deadline_expired(s->bal->loop, &s->dl))
        return;
    enum session_wait w = s->wait;
    s->wait = W_NONE;
    if ((w == W_HEAD && s->ex) || (w == W_BODY && s->ex && !s->ex->sent_client)) {
        /* the client started a request and stalled: tell it, then close */
        if (s->ex)
            s->ex->keep_client = false;
        respond_error(s, 408);
        if (s->state != SS_CLOSED)
            session_run(s);
        return;
    }
    session_close(s);   /* idle, stalled writes, lingering, mid-response */
}

/* ---- step 1: client bytes in ------------------------------------------------------------- */

/* Whether client bytes are wanted now. During an exchange only the rest of
 * its body is read; a pipelined next request waits in the socket. */
static bool client_wanted(const session *s)
{
    if (!s->readable || s->eof)
        return false;
    if (s->state == SS_IDLE || s->state == SS_HEAD)
        return true;
    return s->state == SS_EXCHANGE && !s->ex->up.done;
}

static void read_client(session *s)
{
    if (!client_wanted(s))
        return;
    size_t room = client_room(s);
    if (room == 0) {
        if (!s->in.data)
            session_close(s);   /* out of memory */
        return;
    }
    for (;;) {
        ssize_t n = read(s->io.fd, s->in.data + s->in.len, room);
        if (n > 0) {
            s->in.len += (size_t)n;
            s->cprogress = true;
            if ((size_t)n < room && !s->rdhup)
                s->readable = false;
            return;
        }
        if (n == 0) {
            s->eof = true;
            s->readable = false;
            s->cprogress = true;
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            s->readable = false;
            return;
        }
        abort_session(s);   /* reset */
        return;
    }
}

/* ---- step 2: the request ------------------------------------------------------------------- */

static uint64_t request_key(const session *s, const exchange *ex)
{
    const balancer *bal = s->bal;
    if (bal->policy.ops != &lb_chash_ops)
        return 0;
    if (bal->hash_on == HASH_PATH)
        return lb_hash(ex->req.path, ex->req.path_len);
    if (bal->hash_on == HASH_HEADER) {
        const http_header *h = http_find_header(&ex->req, bal->hash_header, bal->hash_header_len);
        if (h)
            return lb_hash(h->value, h->value_len);
    }
    return lb_hash(s->ip, strlen(s->ip));
}

/* Writes the request head for the backend into bout (from scratch). */
static int write_request_head(session *s)
{
    exchange *ex = s->ex;
    rewrite_req_info ri = {
        .client_ip = s->ip, .client_ipv6 = s->ipv6, .proto = "http",
        .default_host = s->bal->default_host, .framing = ex->up_frame,
        .content_length = ex->req.content_length > 0 ? (uint64_t)ex->req.content_length : 0,
    };
    s->bout.len = s->bout_off = 0;
    if (ensure_buf(s->bal, &s->bout))
        return -ENOMEM;
    return rewrite_request(&s->bout, &ex->req, &ri);
}

static const char continue_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* A request head was parsed: frame its body, decide keep-alive, write the
 * head for the backend and start the first attempt. */
static void begin_exchange(session *s, uint32_t head_len)
{
    balancer *bal = s->bal;
    exchange *ex = s->ex;
    const config *cfg = bal->cfg;
    http_request *r = &ex->req;
    ex->head_len = head_len;
    s->requests++;
    bal->st.requests++;
    balancer_request_counted(bal);
    size_t at = s->in_off + head_len;
    s->state = SS_EXCHANGE;
    if (cfg->proxy_max_body && r->content_length > 0 &&
        (uint64_t)r->content_length > cfg->proxy_max_body) {
        bal->st.client_errors++;
        body_init(&ex->up, BODY_NONE, 0, at);
        ex->up.done = false;   /* the body is not read: close after answering */
        respond_error(s, 413);
        return;
    }
    if (r->chunked) {
        body_init(&ex->up, BODY_CHUNKED, 0, at);
        ex->up_frame = FRAME_CHUNKED;
    } else if (r->content_length >= 0) {
        body_init(&ex->up, r->content_length ? BODY_LENGTH : BODY_NONE,
                  (uint64_t)r->content_length, at);
        ex->up_frame = FRAME_LENGTH;
    } else {
        body_init(&ex->up, BODY_NONE, 0, at);
        ex->up_frame = FRAME_NONE;
    }
    ex->keep_client = r->keep_alive && !bal->draining;
    ex->is_head = r->method_id == HTTP_HEAD;
    ex->key = request_key(s, ex);
    ex->fail_status = 503;
    if (r->expect_continue && !ex->up.done && s->in.len == at &&
        (ensure_buf(bal, &s->out) ||
         buf_append(&s->out, continue_100, sizeof(continue_100) - 1))) {
        session_close(s);
        return;
    }
    if (write_request_head(s)) {
        respond_error(s, 503);
        return;
    }
    request_body(s);   /* body bytes that came with the head */
    if (s->state == SS_EXCHANGE)
        start_attempt(s);
}

/* Parses the request head. */
static void parse_head(session *s)
{
    balancer *bal = s->bal;
    if (s->state == SS_IDLE) {
        if (s->in.len == s->in_off) {
            if (s->eof)
                session_close(s);
            return;
        }
        if (!(s->ex = exchange_get(bal))) {
            session_close(s);
            return;
        }
        s->state = SS_HEAD;
        wait_for(s, W_HEAD, bal->cfg->header_timeout);
    }
    exchange *ex = s->ex;
    size_t avail = s->in.len - s->in_off;
    ssize_t rc = http_parse_request(s->in.data + s->in_off, avail, ex->scanned, &ex->req,
                                    &bal->limits);
    if (rc == HTTP_AGAIN) {
        ex->scanned = (uint32_t)avail;
        if (s->eof)
            session_close(s);   /* the client gave up mid-head */
        return;
    }
    if (rc < 0) {
        bal->st.client_errors++;
        respond_error(s, (int)-rc);
        return;
    }
    begin_exchange(s, (uint32_t)rc);
}

/* Frames request body bytes into bout (and the client's abort). */
static void request_body(session *s)
{
    exchange *ex = s->ex;
    uint64_t max = cfg_of(s)->proxy_max_body ? cfg_of(s)->proxy_max_body : UINT64_MAX;
    int rc = body_feed(&ex->up, &s->in, max);
    if (rc < 0) {
        s->bal->st.client_errors++;
        ex->keep_client = false;
        if (ex->sent_client)
            abort_session(s);
        else
            respond_error(s, -rc);
        return;
    }
    if (s->eof && !ex->up.done) {   /* the client gave up mid-body */
        abort_session(s);
        return;
    }
    if (ex->up_queued && !ex->up_broken)
        return;
    bool oom = false;
    if (ensure_buf(s->bal, &s->bout)) {
        session_close(s);
        return;
    }
    size_t before = s->bout.len;
    ex->up_queued = body_pump(&ex->up, &s->in, &s->bout, s->bout_off, ex->up_frame, &oom);
    if (oom)
        session_close(s);
    else if (s->bout.len != before)
        s->bprogress = true;   /* new bytes owed to the backend */
}

static void request_step(session *s)
{
    if (s->state == SS_IDLE || s->state == SS_HEAD)
        parse_head(s);
    if (s->state == SS_EXCHANGE && s->ex)
        request_body(s);
}

/* ---- attempts and retries ------------------------------------------------------------------- */

/* Picks a backend and gets a connection to it (pooled or new). False when
 * no backend could be tried; then the client has been answered. */
static bool start_attempt(session *s)
{
    balancer *bal = s->bal;
    exchange *ex = s->ex;
    backend *be = ex->ntried < LB_MAX_TRIED
                      ? backend_pick(bal, ex->key, ex->tried, ex->ntried) : NULL;
    if (!be) {
        if (ex->fail_status == 503)
            bal->st.no_backend++;
        respond_error(s, ex->fail_status);
        return false;
    }
    ex->tried[ex->ntried++] = be;
    ex->be = be;
    be->active++;
    be->st.requests++;
    ex->t_attempt = loop_now(bal->loop);
    s->bprogress = true;   /* the new connection needs a write pass, even one
                              from the pool that no event will announce */
    bconn *bc = backend_pool_get(be);
    if (bc) {
        bconn_make_busy(bc, s);
        s->bc = bc;
        return true;
    }
    if (bconn_connect(be, s, &bc) == 0) {
        s->bc = bc;
        return true;
    }
    /* failed at once (refused on loopback): the same as a failed connect;
     * attempt_failed retries or answers, recursing at most LB_MAX_TRIED deep */
    attempt_failed(s, BERR_CONNECT);
    return s->state == SS_EXCHANGE && s->bc != NULL;
}

static bool may_retry(session *s, enum backend_error kind, bool wire_clean)
{
    exchange *ex = s->ex;
    const config *cfg = cfg_of(s);
    if (ex->sent_client || ex->ntried >= LB_MAX_TRIED || ex->ntried > cfg->retries)
        return false;
    if (!wire_clean &&
        (!rewrite_is_idempotent(ex->req.method_id) || !ex->replayable ||
         kind == BERR_MALFORMED || kind == BERR_TIMEOUT))
        return false;
    if (!balancer_retry_allowed(s->bal)) {
        s->bal->st.retries_denied++;
        return false;
    }
    return true;
}

/* The current attempt failed. Counts it against its backend, then tries
 * another backend when allowed (see the file comment of balancer.h and the
 * rules in may_retry), else answers 502/504, or breaks the client
 * connection if its response had begun. */
static void attempt_failed(session *s, enum backend_error kind)
{
    exchange *ex = s->ex;
    backend *be = ex->be;
    /* a failed connect sent nothing: bout is intact, resend it as it is */
    bool wire_clean = kind == BERR_CONNECT && s->bout_off == 0;
    bool retry = may_retry(s, kind, wire_clean);
    be->st.errors[kind]++;
    if (retry)
        be->st.retries++;
    backend_report(be, OUTCOME_FAILED);
    detach_backend(s, false);   /* be may be gone after this */
    ex->fail_status = kind == BERR_TIMEOUT ? 504 : 502;
    if (ex->sent_client) {
        abort_session(s);
        return;
    }
    if (!retry) {
        respond_error(s, ex->fail_status);
        return;
    }
    s->bal->st.retries++;
    if (!wire_clean) {   /* write the whole request again */
        ex->up.at = ex->up.start;
        ex->up_queued = false;
        ex->up_broken = false;
        if (write_request_head(s)) {
            respond_error(s, 503);
            return;
        }
        request_body(s);
        if (s->state != SS_EXCHANGE)
            return;
    }
    start_attempt(s);
}

/* ---- step 3: the backend socket ----------------------------------------------------------- */

static void write_backend(session *s, bconn *bc)
{
    while (unsent(&s->bout, s->bout_off) && !bc->wblocked) {
        ssize_t n = send(bc->io.fd, s->bout.data + s->bout_off,
                         unsent(&s->bout, s->bout_off), MSG_NOSIGNAL);
        if (n > 0) {
            s->bout_off += (size_t)n;
            s->bprogress = true;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            bc->wblocked = true;
            return;
        }
        /* the backend stopped reading (an early answer, then close): stop
         * sending but read on; a whole response is still relayed, and no
         * response ends the attempt when the read side sees the close */
        s->ex->up_broken = true;
        bc->readable = true;
        s->bprogress = true;
        break;
    }
    if (s->ex->up_broken)
        s->bout_off = s->bout.len;
    if (s->bout_off && s->bout_off == s->bout.len)
        s->bout.len = s->bout_off = 0;   /* sent: reuse the space */
}

static void read_backend(session *s, bconn *bc)
{
    exchange *ex = s->ex;
    if (!bc->readable || bc->eof || ex->down_phase == DOWN_DONE ||
        unsent(&s->out, s->out_off) > OUT_HIGH)
        return;
    size_t room = backend_room(s, bc);
    if (room == 0) {
        if (!bc->in.data)
            session_close(s);
        return;
    }
    for (;;) {
        ssize_t n = read(bc->io.fd, bc->in.data + bc->in.len, room);
        if (n > 0) {
            bc->in.len += (size_t)n;
            s->bprogress = true;
            if ((size_t)n < room && !bc->rdhup)
                bc->readable = false;
            return;
        }
        if (n == 0) {
            bc->eof = true;
            bc->readable = false;
            s->bprogress = true;
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            bc->readable = false;
            return;
        }
        bc->failed = true;   /* reset: reported by response_step */
        bc->eof = true;
        bc->readable = false;
        s->bprogress = true;
        return;
    }
}

static void backend_step(session *s)
{
    bconn *bc = s->bc;
    if (s->state != SS_EXCHANGE || !bc)
        return;
    if (bc->state == BC_CONNECTING) {
        int rc = bconn_finish_connect(bc);
        if (rc == -EINPROGRESS)
            return;
        if (rc < 0) {
            attempt_failed(s, BERR_CONNECT);
            return;
        }
        s->bprogress = true;
    }
    write_backend(s, bc);
    if (s->state == SS_EXCHANGE && s->bc == bc)
        read_backend(s, bc);
}

/* ---- step 4: the response ------------------------------------------------------------------- */

/* How the response body travels to the client, from its framing and the
 * client's version; then the head for the client. */
static int start_response(session *s, bconn *bc)
{
    exchange *ex = s->ex;
    http_response *rp = &ex->resp;
    bool old_client = ex->req.version_minor == 0;
    rewrite_resp_info ri = { .client_minor = ex->req.version_minor };
    size_t at = bc->in_off;
    if (rp->no_body) {
        body_init(&ex->down, BODY_NONE, 0, at);
        ri.announce_length = rp->content_length >= 0;
        ri.content_length = rp->content_length >= 0 ? (uint64_t)rp->content_length : 0;
        ri.framing = ex->is_head && rp->chunked && !old_client ? FRAME_CHUNKED : FRAME_NONE;
    } else if (rp->chunked) {
        body_init(&ex->down, BODY_CHUNKED, 0, at);
        ri.framing = old_client ? FRAME_CLOSE : FRAME_CHUNKED;
    } else if (rp->content_length >= 0) {
        body_init(&ex->down, BODY_LENGTH, (uint64_t)rp->content_length, at);
        ri.framing = FRAME_LENGTH;
        ri.content_length = (uint64_t)rp->content_length;
    } else {
        body_init(&ex->down, BODY_EOF, 0, at);
        ri.framing = old_client ? FRAME_CLOSE : FRAME_CHUNKED;
    }
    ex->down_frame = ri.framing == FRAME_CHUNKED && ex->down.kind == BODY_NONE
                         ? FRAME_NONE : (uint8_t)ri.framing;
    /* the client may send another request only if this one was read whole */
    ex->keep_client = ex->keep_client && ex->up.done && ri.framing != FRAME_CLOSE &&
                      !s->bal->draining;
    ri.keep_alive = ex->keep_client;
    if (ensure_buf(s->bal, &s->out) || rewrite_response(&s->out, rp, &ri))
        return -ENOMEM;
    ex->sent_client = true;
    ex->down_phase = DOWN_BODY;
    return 0;
}

/* Counts a final response head against its backend. */
static void count_response(session *s)
{
    exchange *ex = s->ex;
    backend *be = ex->be;
    int cls = ex->resp.status / 100;
    be->st.responses[cls - 1]++;
    histogram_observe(&be->st.latency, loop_now(s->bal->loop) - ex->t_attempt);
    backend_report(be, cls == 5 ? OUTCOME_5XX : OUTCOME_OK);
}

/* Parses response heads: interim ones are relayed (1.1 clients) or
 * dropped; the final one starts the body. */
static void response_head(session *s, bconn *bc)
{
    exchange *ex = s->ex;
    balancer *bal = s->bal;
    ssize_t rc;
    for (;;) {
        size_t avail = bc->in.len - bc->in_off;
        rc = avail ? http_parse_response(bc->in.data + bc->in_off, avail,
                                                 ex->resp_scanned, &ex->resp,
                                                 &bal->resp_limits, ex->is_head)
                           : HTTP_AGAIN;
        if (rc == HTTP_AGAIN) {
            ex->resp_scanned = (uint32_t)avail;
            if (bc->eof)
                attempt_failed(s, BERR_RESET);   /* closed before a whole head */
            return;
        }
        if (rc < 0 || ex->resp.status == 101) {
            log_warn("backend %s: malformed response: %s", ex->be->name,
                     rc < 0 ? ex->resp.error : "101 to a request without Upgrade");
            attempt_failed(s, BERR_MALFORMED);
            return;
        }
        ex->resp_scanned = 0;
        if (ex->resp.status >= 200)
            break;
        if (ex->resp.status != 100 && ex->req.version_minor == 1) {
            rewrite_resp_info ri = { .client_minor = 1 };
            if (ensure_buf(bal, &s->out) || rewrite_response(&s->out, &ex->resp, &ri)) {
                session_close(s);
                return;
            }
        }
        bc->in_off += (size_t)rc;
    }
    bc->in_off += (size_t)rc;   /* the parsed head still points below in_off */
    count_response(s);
    if (start_response(s, bc))
        session_close(s);
}

/* Ends the exchange once its response has been forwarded whole. */
static void response_done(session *s, bconn *bc)
{
    exchange *ex = s->ex;
    bool reuse = ex->resp.keep_alive && ex->up_queued && unsent(&s->bout, s->bout_off) == 0 &&
                 ex->down.end == bc->in.len && !bc->eof && !bc->failed;
    end_exchange(s, reuse);
}

static void response_body(session *s, bconn *bc)
{
    exchange *ex = s->ex;
    int rc = body_feed(&ex->down, &bc->in, UINT64_MAX);
    if (rc == 0 && bc->eof && ex->down.kind == BODY_EOF)
        ex->down.done = !bc->failed;
    if (rc < 0 || (bc->eof && !ex->down.done)) {
        /* a malformed chunk, or closed before the end: truncate visibly */
        ex->be->st.errors[rc < 0 ? BERR_MALFORMED : BERR_RESET]++;
        backend_report(ex->be, OUTCOME_FAILED);
        if (rc < 0)
            log_warn("backend %s: malformed chunked body", ex->be->name);
        abort_session(s);
        return;
    }
    bool oom = false;
    size_t before = s->out.len;
    bool whole = body_pump(&ex->down, &bc->in, &s->out, s->out_off, ex->down_frame, &oom);
    if (oom) {
        session_close(s);
        return;
    }
    if (s->out.len != before)
        s->cprogress = true;
    if (ex->down.at == bc->in.len) {   /* all consumed: start over at 0 */
        bc->in.len = 0;
        ex->down.start = ex->down.at = ex->down.end = 0;
    }
    if (whole) {
        ex->down_phase = DOWN_DONE;
        response_done(s, bc);
    }
}

static void response_step(session *s)
{
    bconn *bc = s->bc;
    if (s->state != SS_EXCHANGE || !bc || bc->state != BC_BUSY)
        return;
    exchange *ex = s->ex;
    if (ex->down_phase == DOWN_HEAD) {
        response_head(s, bc);
        if (s->state != SS_EXCHANGE || s->bc != bc)
            return;
    }
    if (ex->down_phase == DOWN_BODY)
        response_body(s, bc);
}

/* The response is complete (or the balancer answered): the backend
 * connection goes back to the pool if it is clean, and the session waits
 * for the next request, or closes. */
static void end_exchange(session *s, bool reuse_backend)
{
    exchange *ex = s->ex;
    balancer *bal = s->bal;
    bool keep = ex->keep_client && ex->up.done && !bal->draining;
    size_t next = ex->up.end;
    detach_backend(s, reuse_backend);
    exchange_put(bal, ex);
    s->ex = NULL;
    s->bout.len = s->bout_off = 0;
    if (!keep) {
        start_closing(s);
        return;
    }
    s->state = SS_IDLE;
    s->in_off = next;
    if (s->in_off >= s->in.len)
        release_buf(s, &s->in, &s->in_off);   /* idle: hold no input buffer */
    balancer_check_drained(bal);
}

/* ---- step 5: client bytes out ---------------------------------------------------------------- */

static void write_client(session *s)
{
    while (unsent(&s->out, s->out_off) && !s->wblocked) {
        ssize_t n = send(s->io.fd, s->out.data + s->out_off, unsent(&s->out, s->out_off),
                         MSG_NOSIGNAL);
        if (n > 0) {
            s->out_off += (size_t)n;
            s->cprogress = true;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            s->wblocked = true;
            return;
        }
        session_close(s);   /* EPIPE, ECONNRESET: the client is gone */
        return;
    }
    if (s->out.data && s->out_off == s->out.len) {
        if (s->state == SS_EXCHANGE)
            s->out.len = s->out_off = 0;   /* keep the buffer while busy */
        else
            release_buf(s, &s->out, &s->out_off);
    }
    if (s->state == SS_CLOSING && unsent(&s->out, s->out_off) == 0)
        start_linger(s);
}

/* ---- the run ----------------------------------------------------------------------------------- */

static void session_run(session *s)
{
    if (s->running) {
        s->rerun = true;
        return;
    }
    s->running = true;
    int pass = 0;
    do {
        s->rerun = false;
        s->cprogress = s->bprogress = false;
        read_client(s);
        if (s->state != SS_CLOSED)
            request_step(s);
        if (s->state != SS_CLOSED)
            backend_step(s);
        if (s->state != SS_CLOSED)
            response_step(s);
        if (s->state != SS_CLOSED && s->state != SS_LINGER)
            write_client(s);
        if (s->state == SS_CLOSED || s->state == SS_LINGER)
            break;
        update_backend_wait(s);
        update_client_wait(s);
    } while ((s->cprogress || s->bprogress || s->rerun) && ++pass < RUN_PASSES);
    s->running = false;
    if (pass == RUN_PASSES && s->state != SS_CLOSED)
        loop_defer(s->bal->loop, &s->defer, on_deferred);   /* more to do: later */
}
