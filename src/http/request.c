/* request — the public request and response API (myr_* in myriad.h) on top
 * of http_conn. Every way a request ends goes through req_finish(), which
 * hands the bytes to the connection or, for a cancelled request, drops them.
 */
#include "http/request.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "http/http_conn.h"
#include "http/http_response.h"
#include "http/server.h"
#include "obs/obs.h"

struct req_timer {
    loop_timer t;
    myr_req   *req;
    void     (*cb)(myr_req *req, void *arg);
    void      *arg;
    req_timer *next;
};

/* ---- internal lifecycle ---------------------------------------------------------- */

#define REBASE(p) ((p) ? (p) = (const char *)((uintptr_t)(p) + delta) : 0)

void req_rebase(myr_req *r, const char *old_base, const char *new_base)
{
    uintptr_t delta = (uintptr_t)new_base - (uintptr_t)old_base;
    http_request *h = &r->h;
    REBASE(r->base);
    REBASE(r->body);
    REBASE(h->method);
    REBASE(h->target);
    REBASE(h->path);
    REBASE(h->query);
    REBASE(h->host);
    for (uint32_t i = 0; i < h->num_headers; i++) {
        REBASE(h->headers[i].name);
        REBASE(h->headers[i].value);
    }
}

void req_release(myr_req *r)
{
    for (req_timer *t = r->timers; t; t = t->next)
        loop_timer_stop(r->srv->loop, &t->t);
    r->timers = NULL;
    arena_reset(&r->arena);
    buf_free(&r->resp_headers);
    buf_free(&r->owned_in);
    server_req_put(r->srv, r);
}

void req_cancel(myr_req *r)
{
    r->conn = NULL;
    r->cancelled = true;
    if (r->on_cancel) {
        void (*cb)(myr_req *, void *) = r->on_cancel;
        r->on_cancel = NULL;
        cb(r, r->cancel_arg);
    }
    if (r->on_drain) {
        /* a stream waiting for the client to read will never be woken by
         * the connection: wake it now; its next write gets -EPIPE */
        void (*cb)(myr_req *, void *) = r->on_drain;
        r->on_drain = NULL;
        cb(r, r->drain_arg);
    }
}

/* The response bytes are in the connection's output (or there is no
 * connection): the request is over. */
static void req_finish(myr_req *r)
{
    r->state = REQ_DONE;
    obs_request_done(r);   /* metrics and access log */
    if (r->conn)
        http_conn_request_done(r->conn);   /* releases r */
    else
        req_release(r);
}

/* Output buffer of a live request, or NULL (cancelled, or out of memory,
 * in which case the connection is closed and r cancelled). */
static buf *req_out(myr_req *r)
{
    buf *out;
    if (!r->conn)
        return NULL;
    if (http_conn_out(r->conn, &out) == 0)
        return out;
    http_conn_close(r->conn);
    return NULL;
}

static bool status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

static void req_head_init(myr_req *r, http_head *h, int status, const char *ctype)
{
    *h = (http_head){
        .status = status,
        .version_minor = r->h.version_minor,
        .keep_alive = r->keep_alive && !r->srv->draining,
        .content_type = ctype,
        .date = http_date_get(&r->srv->date, loop_now(r->srv->loop)),
        .extra = r->resp_headers.data,
        .extra_len = r->resp_headers.len,
    };
}

/* ---- public: request ----------------------------------------------------------------- */

static myr_str mk(const char *p, size_t n) { return (myr_str){ p, p ? n : 0 }; }

myr_str myr_method(const myr_req *req) { return mk(req->h.method, req->h.method_len); }
myr_str myr_path(const myr_req *req) { return mk(req->h.path, req->h.path_len); }
myr_str myr_query(const myr_req *req) { return mk(req->h.query, req->h.query_len); }
myr_str myr_body(const myr_req *req) { return mk(req->body, req->body_len); }

myr_str myr_header(const myr_req *req, const char *name)
{
    const http_header *hd = http_find_header(&req->h, name, strlen(name));
    return hd ? mk(hd->value, hd->value_len) : mk(NULL, 0);
}

myr_str myr_param(const myr_req *req, const char *name)
{
    size_t n = strlen(name);
    for (uint32_t i = 0; i < req->match.nparams; i++) {
        const router_param *p = &req->match.params[i];
        if (p->name_len == n && memcmp(p->name, name, n) == 0)
            return mk(p->value, p->value_len);
    }
    return mk(NULL, 0);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes (and '+' -> ' ', form encoding) into the arena. A bad
 * escape is kept literally. */
static myr_str form_decode(myr_req *req, const char *s, size_t n)
{
    char *out = arena_alloc(&req->arena, n + 1);
    if (!out)
        return mk(NULL, 0);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '+')
            out[o++] = ' ';
        else if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
                 (lo = hexval(s[i + 2])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else
            out[o++] = s[i];
    }
    out[o] = '\0';
    return mk(out, o);
}

myr_str myr_query_param(myr_req *req, const char *name)
{
    size_t nlen = strlen(name);
    const char *q = req->h.query;
    if (!q)
        return mk(NULL, 0);
    const char *end = q + req->h.query_len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - q) == nlen && memcmp(q, name, nlen) == 0)
            return eq ? form_decode(req, eq + 1, (size_t)(pe - eq - 1)) : mk("", 0);
        q = pe + 1;
    }
    return mk(NULL, 0);
}

void *myr_alloc(myr_req *req, size_t n) { return arena_alloc(&req->arena, n); }

bool myr_req_cancelled(const myr_req *req) { return req->cancelled; }

void myr_req_on_cancel(myr_req *req, void (*cb)(myr_req *req, void *arg), void *arg)
{
    req->on_cancel = cb;
    req->cancel_arg = arg;
}

/* ---- public: timers ---------------------------------------------------------------------- */

static void req_timer_fire(loop_timer *t)
{
    req_timer *rt = container_of(t, req_timer, t);
    myr_req *r = rt->req;
    for (req_timer **pp = &r->timers; *pp; pp = &(*pp)->next)
        if (*pp == rt) {
            *pp = rt->next;
            break;
        }
    rt->cb(r, rt->arg);
}

int myr_after(myr_req *req, uint64_t ms, void (*cb)(myr_req *req, void *arg), void *arg)
{
    req_timer *rt = arena_alloc(&req->arena, sizeof(*rt));
    if (!rt)
        return -ENOMEM;
    *rt = (req_timer){ .req = req, .cb = cb, .arg = arg, .next = req->timers };
    req->timers = rt;
    return loop_timer_start(req->srv->loop, &rt->t, ms, req_timer_fire);
}

/* ---- public: responses ------------------------------------------------------------------------ */

int myr_set_header(myr_req *req, const char *name, const char *value)
{
    static const char *const reserved[] = { "content-length", "transfer-encoding", "connection" };
    if (!http_field_valid(name, value))
        return -EINVAL;
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strcasecmp(name, reserved[i]) == 0)
            return -EINVAL;   /* framing is the server's */
    buf *b = &req->resp_headers;
    size_t nl = strlen(name), vl = strlen(value);
    if (buf_reserve(b, nl + vl + 4))
        return -ENOMEM;
    memcpy(b->data + b->len, name, nl);
    b->len += nl;
    memcpy(b->data + b->len, ": ", 2);
    b->len += 2;
    memcpy(b->data + b->len, value, vl);
    b->len += vl;
    memcpy(b->data + b->len, "\r\n", 2);
    b->len += 2;
    return 0;
}

void myr_respond(myr_req *req, int status, const char *content_type, const void *body,
                 size_t len)
{
    assert(req->state == REQ_HANDLING || req->state == REQ_READING);
    req->status = status;
    req->resp_bytes = status_has_body(status) && !req->is_head ? len : 0;
    buf *out = req_out(req);
    if (out) {
        http_head h;
        bool has_body = status_has_body(status);
        req_head_init(req, &h, status, has_body ? content_type : NULL);
        h.content_length = len;
        h.no_length = !has_body;
        if (http_head_write(out, &h) || (has_body && !req->is_head && buf_append(out, body, len))) {
            http_conn_close(req->conn);   /* cancels req; fall through */
        }
    }
    req_finish(req);
}

void myr_respond_str(myr_req *req, int status, const char *content_type, const char *body)
{
    myr_respond(req, status, content_type, body, strlen(body));
}

void req_respond_error(myr_req *r, int status)
{
    metrics_http_error(r->srv->metrics, status);
    char body[64];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, http_status_reason(status));
    if (status == 400 || status == 408 || status == 413 || status == 414 || status == 431 ||
        status == 501 || status == 505)
        r->keep_alive = false;   /* framing in doubt: close after */
    r->is_head = r->is_head && r->head_len > 0;
    myr_respond(r, status, "text/plain", body, (size_t)n);
}

void myr_respond_json(myr_req *req, int status, myr_json *w)
{
    if (myr_json_error(w)) {
        log_error("JSON writer failed (%d) for %.*s", myr_json_error(w), (int)req->h.path_len,
                  req->h.path);
        myr_json_free(w);
        req_respond_error(req, 500);
        return;
    }
    myr_respond(req, status, "application/json", w->data, w->len);
    myr_json_free(w);
}

/* ---- public: streaming ---------------------------------------------------------------------------- */

int myr_stream_begin(myr_req *req, int status, const char *content_type)
{
    assert(req->state == REQ_HANDLING);
    req->state = REQ_STREAMING;
    req->status = status;
    buf *out = req_out(req);
    if (!out)
        return -EPIPE;
    http_head h;
    req_head_init(req, &h, status, content_type);
    if (req->h.version_minor == 0) {
        /* HTTP/1.0 has no chunked coding: the body ends with the connection */
        req->keep_alive = false;
        h.keep_alive = false;
        h.no_length = true;
    } else {
        h.chunked = true;
    }
    if (http_head_write(out, &h)) {
        http_conn_close(req->conn);
        return -EPIPE;
    }
    http_conn_flush_later(req->conn);
    return 0;
}

int myr_stream_write(myr_req *req, const void *data, size_t len)
{
    assert(req->state == REQ_STREAMING);
    buf *out = req_out(req);
    if (!out)
        return -EPIPE;
    if (len == 0 || req->is_head)
        return 0;
    if (req->h.version_minor == 0) {
        if (buf_append(out, data, len))
            goto oom;
    } else {
        char size[24];
        int n = snprintf(size, sizeof(size), "%zx\r\n", len);
        if (buf_reserve(out, (size_t)n + len + 2))
            goto oom;
        buf_append(out, size, (size_t)n);
        buf_append(out, data, len);
        buf_append(out, "\r\n", 2);
    }
    req->resp_bytes += len;
    http_conn_flush_later(req->conn);
    return http_conn_unsent(req->conn) > OUT_HIGH ? 1 : 0;
oom:
    http_conn_close(req->conn);
    return -EPIPE;
}

void myr_stream_on_drain(myr_req *req, void (*cb)(myr_req *req, void *arg), void *arg)
{
    req->on_drain = cb;
    req->drain_arg = arg;
    if (req->conn)
        http_conn_flush_later(req->conn);   /* fires at once if already drained */
}

void myr_stream_end(myr_req *req)
{
    assert(req->state == REQ_STREAMING);
    buf *out = req_out(req);
    if (out && !req->is_head && req->h.version_minor != 0 && buf_append(out, "0\r\n\r\n", 5))
        http_conn_close(req->conn);
    req_finish(req);
}
