/* ws — see ws.h for the state machine and the memory rules.
 *
 * Reading order: route registry -> handshake (validate, 101, detach,
 * attach) -> the send queue and frame encoding -> the read path (header,
 * payload, control frames, messages) -> closing -> timers and drain ->
 * public accessors.
 *
 * Input handling. Frame headers and control frames are parsed from the
 * pooled input buffer; a control frame (at most 131 bytes) is handled only
 * once it is entirely there. Data payloads are streamed: each piece is
 * unmasked in place, checked as UTF-8 (text) or inflated, and appended to
 * the message buffer, so an invalid byte fails the connection as soon as
 * it arrives. A whole unfragmented, uncompressed message already in the
 * input buffer is delivered from there without a copy; a long payload is
 * read straight into the message buffer.
 */
#include "http/ws.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/sha1.h"
#include "http/app.h"
#include "http/http_conn.h"
#include "http/request.h"
#include "http/router.h"
#include "http/server.h"

#define NS_PER_MS        1000000ull
#define READS_PER_EVENT  16            /* fairness: then yield to other connections */
#define DIRECT_READ_MIN  4096          /* payload left before reading it in place */
#define DIRECT_READ_MAX  (1u << 20)    /* bytes per read straight into a message */
#define FLUSH_IOV        64            /* frames per sendmsg */
#define FLUSH_BYTES      (1u << 20)    /* bytes per sendmsg (bounds lazy compression) */
#define LINGER_BYTES     (256u * 1024) /* input discarded before our close is out */
#define DEFLATE_MIN      64            /* smaller messages are sent uncompressed */

static_assert(sizeof(struct myr_ws) <= 320, "an idle WebSocket must stay small");

static void on_io(loop_io *io, uint32_t events);
static void on_timer(loop_timer *t);
static void on_deferred(loop_deferred *d);
static void ws_flush(myr_ws *ws);
static void ws_fail(myr_ws *ws, unsigned code);
static void ws_close_now(myr_ws *ws);
static void ws_arm(myr_ws *ws);

static inline loop *ws_loop(const myr_ws *ws) { return ws->wss->srv->loop; }
static inline const config *ws_cfg(const myr_ws *ws) { return ws->wss->srv->cfg; }

static uint64_t ws_max_message(const myr_ws *ws)
{
    uint64_t m = ws->route->cb.max_message;
    return m ? m : ws_cfg(ws)->ws_max_message;
}

static uint64_t ws_max_queue(const myr_ws *ws)
{
    uint64_t m = ws->route->cb.max_queue;
    return m ? m : ws_cfg(ws)->ws_max_queue;
}

static void ws_flush_later(myr_ws *ws)
{
    loop_defer(ws_loop(ws), &ws->defer, on_deferred);
}

/* ---- route registry ------------------------------------------------------------- */

/* The WebSocket routes of each app. The app's router maps the pattern to
 * ws_handshake; this second router maps the same pattern to its callbacks.
 * A process-wide registry, filled by myr_ws_route before serving and only
 * read afterwards (workers inherit it across fork); it lives as long as
 * the process. */
typedef struct ws_registry {
    const myr_app      *app;
    router             *routes;
    struct ws_registry *next;
} ws_registry;

static ws_registry *registry;

static ws_registry *registry_for(const myr_app *app, bool create)
{
    for (ws_registry *r = registry; r; r = r->next)
        if (r->app == app)
            return r;
    if (!create)
        return NULL;
    ws_registry *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->routes = router_new();
    if (!r->routes) {
        free(r);
        return NULL;
    }
    r->app = app;
    r->next = registry;
    registry = r;
    return r;
}

int myr_ws_route(myr_app *app, const char *pattern, const myr_ws_callbacks *cb)
{
    ws_registry *reg = registry_for(app, true);
    ws_route *rt = malloc(sizeof(*rt));
    if (!reg || !rt) {
        free(rt);
        return -ENOMEM;
    }
    rt->cb = *cb;
    /* the app's router validates the pattern and rejects duplicates; the
     * registry then cannot fail but for memory (ws_handshake answers 500) */
    int rc = myr_route(app, "GET", pattern, ws_handshake);
    if (rc == 0)
        rc = router_add(reg->routes, "GET", pattern, rt);
    if (rc)
        free(rt);
    return rc;
}

static const ws_route *route_find(const myr_req *req)
{
    ws_registry *reg = registry_for(req->srv->app, false);
    router_match m;
    if (!reg || router_find(reg->routes, "GET", 3, req->h.path, req->h.path_len, &m))
        return NULL;
    return m.handler;
}

/* ---- handshake helpers ---------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t base64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

bool ws_key_valid(const char *key, size_t len)
{
    /* 16 bytes = 22 characters of 6 bits, the last carrying 2 bits and 4
     * zero bits (so one of A Q g w), then "==" */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!key[i] || !strchr(b64, key[i]))
            return false;
    return strchr("AQgw", key[21]) != NULL;
}

void ws_accept_key(const char *key, size_t len, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t digest[SHA1_DIGEST_LEN];
    sha1_ctx c;
    sha1_init(&c);
    sha1_update(&c, key, len);
    sha1_update(&c, guid, sizeof(guid) - 1);
    sha1_final(&c, digest);
    base64_encode(digest, sizeof(digest), out);
}

/* Whether a comma-separated field `name` lists `token` (case-insensitive),
 * across every field of that name. */
static bool header_has_token(const myr_req *req, const char *name, const char *token)
{
    size_t nlen = strlen(name), tlen = strlen(token);
    for (uint32_t i = 0; i < req->h.num_headers; i++) {
        const http_header *h = &req->h.headers[i];
        if (h->name_len != nlen || strncasecmp(h->name, name, nlen))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma ? comma : end;
            while (p < e && (*p == ' ' || *p == '\t'))
                p++;
            const char *te = e;
            while (te > p && (te[-1] == ' ' || te[-1] == '\t'))
                te--;
            if ((size_t)(te - p) == tlen && strncasecmp(p, token, tlen) == 0)
                return true;
            p = e + 1;
        }
    }
    return false;
}

/* The only field called name, or NULL when absent or repeated. */
static const http_header *single_header(const myr_req *req, const char *name)
{
    size_t nlen = strlen(name);
    const http_header *found = NULL;
    for (uint32_t i = 0; i < req->h.num_headers; i++) {
        const http_header *h = &req->h.headers[i];
        if (h->name_len == nlen && strncasecmp(h->name, name, nlen) == 0) {
            if (found)
                return NULL;
            found = h;
        }
    }
    return found;
}

/* RFC 6455 section 4.2.1. Returns 0, or the status to refuse with. */
static int handshake_check(const myr_req *req)
{
    if (req->h.method_id != HTTP_GET || req->h.version_minor < 1 || !req->h.host)
        return 400;
    if (!header_has_token(req, "Upgrade", "websocket"))
        return 426;   /* not a WebSocket request at all: say what this route speaks */
    if (!req->h.upgrade || req->body_len > 0 || req->h.chunked)
        return 400;   /* Connection: upgrade missing, or a body */
    const http_header *v = single_header(req, "Sec-WebSocket-Version");
    if (!v || v->value_len != 2 || memcmp(v->value, "13", 2) != 0)
        return 426;
    const http_header *k = single_header(req, "Sec-WebSocket-Key");
    if (!k || !ws_key_valid(k->value, k->value_len))
        return 400;
    return 0;
}

static void refuse(myr_req *req, int status)
{
    if (status == 426) {
        myr_set_header(req, "Upgrade", "websocket");
        myr_set_header(req, "Sec-WebSocket-Version", "13");
    }
    req_respond_error(req, status);
}

/* Picks permessage-deflate from the offers, in field order. A field that
 * breaks the grammar makes the server decline every offer. */
static void negotiate(const myr_req *req, const config *cfg, ws_pmd *pmd)
{
    *pmd = (ws_pmd){ 0 };
    if (!cfg->ws_deflate)
        return;
    bool accepted = false;
    for (uint32_t i = 0; i < req->h.num_headers; i++) {
        const http_header *h = &req->h.headers[i];
        if (h->name_len != 24 || strncasecmp(h->name, "Sec-WebSocket-Extensions", 24))
            continue;
        ws_pmd offer;
        int rc = ws_pmd_negotiate(h->value, h->value_len, cfg->ws_deflate_takeover, &offer);
        if (rc < 0) {
            *pmd = (ws_pmd){ 0 };
            return;
        }
        if (rc == 1 && !accepted) {
            *pmd = offer;
            accepted = true;
        }
    }
}

static int write_101(http_conn *c, const char *key, size_t klen, const ws_pmd *pmd)
{
    char accept[29], ext[WS_PMD_RESPONSE_MAX + 32] = "";
    ws_accept_key(key, klen, accept);
    if (pmd->enabled) {
        char v[WS_PMD_RESPONSE_MAX];
        if (ws_pmd_response(pmd, v, sizeof(v)) == 0)
            return -ENOMEM;   /* cannot happen: the buffer fits the longest */
        snprintf(ext, sizeof(ext), "Sec-WebSocket-Extensions: %s\r\n", v);
    }
    char head[384];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 101 Switching Protocols\r\nServer: myriad\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n%s\r\n", accept, ext);
    buf *out;
    if (n < 0 || (size_t)n >= sizeof(head) || http_conn_out(c, &out))
        return -ENOMEM;
    return buf_append(out, head, (size_t)n);
}

/* ---- per-server state ------------------------------------------------------------- */

static void ws_server_drain(http_server *s, void *arg);

static ws_server *ws_server_get(http_server *s)
{
    if (s->ws)
        return s->ws;
    ws_server *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->srv = s;
    s->ws = w;
    s->on_drain_upgraded = ws_server_drain;
    s->on_drain_upgraded_arg = w;
    return w;
}

/* With its last connection freed. */
static void ws_server_free(ws_server *w)
{
    http_server *s = w->srv;
    ws_zpool_fini(&w->zpool);
    s->ws = NULL;
    s->on_drain_upgraded = NULL;
    s->on_drain_upgraded_arg = NULL;
    free(w);
}

/* ---- connection lifecycle ------------------------------------------------------- */

static myr_ws *ws_new(ws_server *wss, const ws_route *rt, const ws_pmd *pmd)
{
    myr_ws *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return NULL;
    ws->io.fd = -1;
    ws->wss = wss;
    ws->route = rt;
    ws->pmd = *pmd;
    ws->state = WS_OPEN;
    ws->last_rx = loop_now(wss->srv->loop);
    ws->next = wss->conns;
    if (wss->conns)
        wss->conns->prev = ws;
    wss->conns = ws;
    wss->nconns++;
    wss->nalloc++;
    return ws;
}

static int queue_push_front(ws_queue *q, ws_msg *m);

/* Takes over the socket and the bytes the HTTP connection held. On
 * failure the socket is closed and ws is closed (on_close runs). */
static void ws_attach(myr_ws *ws, http_detached *d)
{
    http_server *s = ws->wss->srv;
    ws->attached = true;
    int rc = loop_io_add(s->loop, &ws->io, d->fd,
                         LOOP_READ | LOOP_WRITE | LOOP_RDHUP | LOOP_EDGE, on_io);
    if (rc < 0)
        close(d->fd);
    /* the 101 (and any response still unsent before it) goes first */
    ws_msg *raw = rc < 0 || !d->out.len ? NULL : ws_msg_new(WS_MSG_RAW, d->out.data, d->out.len);
    if (raw && queue_push_front(&ws->q, raw)) {
        ws_msg_unref(raw);
        raw = NULL;
    }
    if (rc == 0 && d->out.len && !raw)
        rc = -ENOMEM;
    /* leftover input: into a pooled buffer when it fits, so the input
     * buffer always has room for a whole control frame */
    if (rc == 0 && d->in.len && d->in.len <= SERVER_BUF_SIZE) {
        char *b = server_buf_get(s);
        if (b) {
            memcpy(b, d->in.data, d->in.len);
            ws->in = (buf){ .data = b, .len = d->in.len, .cap = SERVER_BUF_SIZE };
        } else {
            rc = -ENOMEM;
        }
        buf_free(&d->in);
    } else if (rc == 0 && d->in.len) {
        ws->in = d->in;
        d->in = (buf){ 0 };
    }
    buf_free(&d->in);
    buf_free(&d->out);
    if (rc < 0) {
        ws_close_now(ws);
        return;
    }
    ws_arm(ws);
    ws_flush_later(ws);   /* write the 101, process the leftover input */
}

/* Fails an upgrade before the socket changed hands: the HTTP connection
 * is closed and the request released. */
static void upgrade_failed(myr_req *req, myr_ws *ws)
{
    if (ws)
        ws_close_now(ws);
    if (req->conn)
        http_conn_close(req->conn);   /* cancels req */
    req_respond_error(req, 503);      /* dropped; releases req */
}

void ws_handshake(myr_req *req)
{
    http_server *s = req->srv;
    const ws_route *rt = route_find(req);
    if (!rt) {   /* only if myr_ws_route ran out of memory half-way */
        req_respond_error(req, 500);
        return;
    }
    int status = handshake_check(req);
    if (status == 0 && s->draining)
        status = 503;
    if (status == 0 && rt->cb.on_upgrade) {
        status = rt->cb.on_upgrade(req);   /* the application's own checks */
        if (status && (status < 400 || status > 599))
            status = 500;
    }
    if (status) {
        refuse(req, status);
        return;
    }
    const http_header *key = single_header(req, "Sec-WebSocket-Key");
    ws_pmd pmd;
    negotiate(req, s->cfg, &pmd);
    ws_server *wss = ws_server_get(s);
    myr_ws *ws = wss ? ws_new(wss, rt, &pmd) : NULL;
    if (wss && !ws && wss->nalloc == 0)
        ws_server_free(wss);
    if (!ws || write_101(req->conn, key->value, key->value_len, &pmd)) {
        upgrade_failed(req, ws);
        return;
    }
    ws->opened = true;
    if (rt->cb.on_open)
        rt->cb.on_open(ws, req);   /* req is still valid; sends wait behind the 101 */
    http_detached d;
    if (http_conn_detach(req->conn, &d)) {
        upgrade_failed(req, ws);
        return;
    }
    ws_attach(ws, &d);   /* req is gone */
}

/* ---- shared frames and the send queue ------------------------------------------- */

static ws_msg *msg_alloc(size_t payload_cap)
{
    ws_msg *m = malloc(sizeof(*m) + WS_MSG_HEADROOM + payload_cap);
    if (m)
        m->refs = 1;
    return m;
}

/* Writes the header of a final frame right before its plen payload bytes. */
static void msg_finish(ws_msg *m, unsigned opcode, uint8_t rsv, size_t plen)
{
    uint8_t h[WS_MAX_HEADER];
    ws_frame f = { .len = plen, .opcode = (uint8_t)opcode, .rsv = rsv, .fin = true };
    size_t hl = ws_frame_encode(h, &f);
    m->head = (uint8_t)(WS_MSG_HEADROOM - hl);
    memcpy(m->data + m->head, h, hl);
    m->len = hl + plen;
    m->opcode = (uint8_t)opcode;
}

ws_msg *ws_msg_new(unsigned opcode, const void *payload, size_t len)
{
    ws_msg *m = msg_alloc(len);
    if (!m)
        return NULL;
    if (len)
        memcpy(m->data + WS_MSG_HEADROOM, payload, len);
    if (opcode == WS_MSG_RAW) {
        m->opcode = WS_MSG_RAW;
        m->head = WS_MSG_HEADROOM;
        m->len = len;
    } else {
        msg_finish(m, opcode, 0, len);
    }
    return m;
}

void ws_msg_unref(ws_msg *m)
{
    if (m && --m->refs == 0)
        free(m);
}

static inline size_t msg_payload_len(const ws_msg *m)
{
    return m->len - (WS_MSG_HEADROOM - m->head);
}

static inline bool msg_is_data(const ws_msg *m)
{
    return m->opcode == WS_OP_TEXT || m->opcode == WS_OP_BINARY;
}

static inline bool msg_compressed(const ws_msg *m)
{
    return msg_is_data(m) && (m->data[m->head] & WS_RSV1);
}

static inline ws_msg **queue_slot(const ws_queue *q, uint32_t i)
{
    return &q->ring[(q->head + i) & (q->cap - 1)];
}

static int queue_grow(ws_queue *q)
{
    uint32_t cap = q->cap ? q->cap * 2 : 8;
    ws_msg **r = malloc(cap * sizeof(*r));
    if (!r)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->count; i++)
        r[i] = *queue_slot(q, i);
    free(q->ring);
    q->ring = r;
    q->cap = cap;
    q->head = 0;
    return 0;
}

/* Takes over the caller's reference to m. */
static int queue_push(ws_queue *q, ws_msg *m)
{
    if (q->count == q->cap && queue_grow(q))
        return -ENOMEM;
    *queue_slot(q, q->count++) = m;
    q->bytes += m->len;
    return 0;
}

static int queue_push_front(ws_queue *q, ws_msg *m)
{
    assert(q->off == 0);
    if (q->count == q->cap && queue_grow(q))
        return -ENOMEM;
    q->head = (q->head - 1) & (q->cap - 1);
    q->ring[q->head] = m;
    q->count++;
    q->bytes += m->len;
    return 0;
}

static void queue_free(ws_queue *q)
{
    for (uint32_t i = 0; i < q->count; i++)
        ws_msg_unref(*queue_slot(q, i));
    free(q->ring);
    *q = (ws_queue){ 0 };
}

/* Marks n more bytes written, releasing finished frames. */
static void queue_advance(ws_queue *q, size_t n)
{
    q->bytes -= n;
    while (n) {
        ws_msg *m = *queue_slot(q, 0);
        size_t left = m->len - q->off;
        if (n < left) {
            q->off += n;
            return;
        }
        n -= left;
        ws_msg_unref(m);
        q->head = (q->head + 1) & (q->cap - 1);
        q->count--;
        q->off = 0;
    }
}

/* Drops data frames not yet started, oldest first, while the queue plus
 * `need` bytes exceeds `limit` (limit 0: all of them). A frame already
 * compressed with context takeover stays: the peer's inflater must see it. */
static void queue_drop(ws_queue *q, size_t need, size_t limit, bool takeover)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < q->count; i++) {
        ws_msg *m = *queue_slot(q, i);
        bool started = i == 0 && q->off > 0;
        bool droppable = !started && msg_is_data(m) && !(takeover && msg_compressed(m));
        if (droppable && (limit == 0 || q->bytes + need > limit)) {
            q->bytes -= m->len;
            ws_msg_unref(m);
            continue;
        }
        *queue_slot(q, keep++) = m;
    }
    q->count = keep;
}

/* Queues a control frame; a pong not yet started is replaced by a newer
 * one (RFC 6455 5.5.3 allows answering only the latest ping). */
static int queue_control(myr_ws *ws, unsigned opcode, const void *payload, size_t len)
{
    ws_queue *q = &ws->q;
    ws_msg *m = ws_msg_new(opcode, payload, len);
    if (!m)
        return -ENOMEM;
    if (opcode == WS_OP_PONG && q->count && !(q->count == 1 && q->off)) {
        ws_msg **last = queue_slot(q, q->count - 1);
        if ((*last)->opcode == WS_OP_PONG) {
            q->bytes += m->len - (*last)->len;
            ws_msg_unref(*last);
            *last = m;
            return 0;
        }
    }
    if (queue_push(q, m)) {
        ws_msg_unref(m);
        return -ENOMEM;
    }
    return 0;
}

static int queue_close(myr_ws *ws, unsigned code, const char *reason, size_t rlen)
{
    uint8_t p[WS_MAX_CONTROL];
    size_t n = 0;
    if (code != WS_CLOSE_NO_STATUS) {
        p[0] = (uint8_t)(code >> 8);
        p[1] = (uint8_t)code;
        if (rlen)
            memcpy(p + 2, reason, rlen);
        n = 2 + rlen;
    }
    return queue_control(ws, WS_OP_CLOSE, p, n);
}

/* ---- compression at write time -------------------------------------------------- */

static ws_deflater *deflater_for(myr_ws *ws)
{
    if (ws->pmd.server_no_takeover)
        return ws_zpool_deflater(&ws->wss->zpool, ws->pmd.server_wbits);
    if (!ws->deflater)
        ws->deflater = ws_deflater_new(ws->pmd.server_wbits);
    return ws->deflater;
}

/* The compressed twin of data frame m, or NULL (then m goes out as it is:
 * an uncompressed message is always allowed). */
static ws_msg *msg_deflate(myr_ws *ws, const ws_msg *m)
{
    ws_deflater *d = deflater_for(ws);
    if (!d)
        return NULL;
    size_t plen = msg_payload_len(m), cap = ws_deflate_bound(d, plen);
    ws_msg *c = msg_alloc(cap);
    if (!c)
        return NULL;
    ssize_t n = ws_deflate(d, m->data + WS_MSG_HEADROOM, plen, c->data + WS_MSG_HEADROOM, cap,
                           !ws->pmd.server_no_takeover);
    if (n < 0) {
        free(c);
        return NULL;
    }
    if ((size_t)n < cap / 2 && cap > 4096) {   /* compressed well: give back the rest */
        ws_msg *s = realloc(c, sizeof(*c) + WS_MSG_HEADROOM + (size_t)n);
        if (s)
            c = s;
    }
    msg_finish(c, m->opcode, WS_RSV1, (size_t)n);
    return c;
}

/* Entry i, compressed first if it is due to be. */
static ws_msg *queue_prepare(myr_ws *ws, uint32_t i)
{
    ws_queue *q = &ws->q;
    ws_msg **slot = queue_slot(q, i);
    ws_msg *m = *slot;
    if (!ws->pmd.enabled || !msg_is_data(m) || msg_compressed(m) || (i == 0 && q->off) ||
        msg_payload_len(m) < DEFLATE_MIN)
        return m;
    ws_msg *c = msg_deflate(ws, m);
    if (!c)
        return m;
    q->bytes = q->bytes - m->len + c->len;
    ws_msg_unref(m);
    *slot = c;
    return c;
}

/* Queues a data frame under an overflow policy; *dropped (may be NULL)
 * counts the data messages the policy discarded. */
static int ws_enqueue(myr_ws *ws, ws_msg *m, myr_ws_overflow policy, uint32_t *dropped)
{
    ws_queue *q = &ws->q;
    size_t limit = ws_max_queue(ws);
    uint32_t before = q->count;
    if (dropped)
        *dropped = 0;
    if (q->bytes && q->bytes + m->len > limit) {
        bool takeover = !ws->pmd.server_no_takeover;
        switch (policy) {
        case MYR_WS_DROP_OLDEST:
            queue_drop(q, m->len, limit, takeover);
            break;
        case MYR_WS_COALESCE:
            queue_drop(q, 0, 0, takeover);
            break;
        default:   /* MYR_WS_DISCONNECT: what is queued will not be read in time */
            queue_drop(q, 0, 0, takeover);
            if (dropped)
                *dropped = before - q->count + 1;
            ws_fail(ws, WS_CLOSE_POLICY);
            return -ENOBUFS;
        }
        if (dropped)
            *dropped = before - q->count;
    }
    if (queue_push(q, ws_msg_ref(m))) {
        ws_msg_unref(m);
        return -ENOMEM;
    }
    ws_flush_later(ws);
    return 0;
}

int ws_send_msg(myr_ws *ws, ws_msg *m)
{
    if (ws->state != WS_OPEN)
        return -EPIPE;
    return ws_enqueue(ws, m, ws->route->cb.overflow, NULL);
}

int ws_send_msg_policy(myr_ws *ws, ws_msg *m, myr_ws_overflow policy, uint32_t *dropped)
{
    if (dropped)
        *dropped = 0;
    if (ws->state != WS_OPEN)
        return -EPIPE;
    return ws_enqueue(ws, m, policy, dropped);
}

int myr_ws_send(myr_ws *ws, const void *data, size_t len, bool binary)
{
    if (ws->state != WS_OPEN)
        return -EPIPE;
    ws_msg *m = ws_msg_new(binary ? WS_OP_BINARY : WS_OP_TEXT, data, len);
    if (!m)
        return -ENOMEM;
    int rc = ws_enqueue(ws, m, ws->route->cb.overflow, NULL);
    ws_msg_unref(m);
    return rc;
}

/* ---- writing -------------------------------------------------------------------- */

static void ws_flush(myr_ws *ws)
{
    ws_queue *q = &ws->q;
    while (q->count && ws->io.fd >= 0) {
        struct iovec iov[FLUSH_IOV];
        size_t n = 0, total = 0;
        for (uint32_t i = 0; i < q->count && n < FLUSH_IOV && total < FLUSH_BYTES; i++) {
            ws_msg *m = queue_prepare(ws, i);
            size_t off = i == 0 ? q->off : 0;
            iov[n].iov_base = m->data + m->head + off;
            iov[n].iov_len = m->len - off;
            total += iov[n++].iov_len;
        }
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = n };
        ssize_t w = sendmsg(ws->io.fd, &mh, MSG_NOSIGNAL);
        if (w > 0) {
            queue_advance(q, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return;   /* EPOLLOUT (edge) resumes */
        ws_close_now(ws);   /* EPIPE, ECONNRESET: the peer is gone */
        return;
    }
    if (ws->state == WS_CLOSED)
        return;
    if (q->count == 0 && q->ring)
        queue_free(q);   /* idle: no ring */
    if (ws->state == WS_LINGER && q->count == 0 && !ws->shut_wr && ws->io.fd >= 0) {
        /* our close frame is out. After a complete close handshake the
         * peer sends nothing more, so the server closes TCP first (RFC
         * 6455 7.1.1); after a failure it may still be sending: FIN, and
         * read its bytes away until its own FIN, so they cannot turn our
         * close into a reset */
        shutdown(ws->io.fd, SHUT_WR);
        ws->shut_wr = true;
        if (ws->eof || ws->peer_code) {
            ws_close_now(ws);
            return;
        }
        ws->readable = true;   /* reading may have paused at LINGER_BYTES */
        ws_flush_later(ws);
    }
}

/* ---- reading: buffers ----------------------------------------------------------- */

static void release_in(myr_ws *ws)
{
    if (!ws->in.data)
        return;
    if (ws->in.cap == SERVER_BUF_SIZE)
        server_buf_put(ws->wss->srv, ws->in.data);
    else
        free(ws->in.data);
    ws->in = (buf){ 0 };
    ws->in_off = 0;
}

/* Room to read into the input buffer; 0 when out of memory. Unconsumed
 * bytes (a partial header or control frame, < 140) move to the front. */
static size_t in_room(myr_ws *ws)
{
    if (!ws->in.data) {
        ws->in.data = server_buf_get(ws->wss->srv);
        if (!ws->in.data)
            return 0;
        ws->in.cap = SERVER_BUF_SIZE;
    }
    if (ws->in_off) {
        memmove(ws->in.data, ws->in.data + ws->in_off, ws->in.len - ws->in_off);
        ws->in.len -= ws->in_off;
        ws->in_off = 0;
    }
    return ws->in.cap - ws->in.len;
}

static void release_message(myr_ws *ws)
{
    if (ws->inflater && ws->pmd.client_no_takeover) {
        ws_zpool_inflater_put(&ws->wss->zpool, ws->inflater);
        ws->inflater = NULL;
    } else if (ws->inflater && ws_inflate_end(ws->inflater, true)) {
        ws_inflater_free(ws->inflater);   /* the window is lost: so is the connection */
        ws->inflater = NULL;
        ws_fail(ws, WS_CLOSE_INTERNAL);
    }
    buf_free(&ws->msg);
    ws->msg_opcode = 0;
    ws->msg_compressed = false;
    ws->msg_wire = 0;
    ws->utf8 = WS_UTF8_OK;
}

/* In LINGER input is discarded: drop what reading had gathered. Never
 * while a callback may hold pointers into it (ws_fail leaves it here). */
static void linger_cleanup(myr_ws *ws)
{
    release_message(ws);
    release_in(ws);
}

/* ---- reading: messages ---------------------------------------------------------- */

static void deliver(myr_ws *ws, const void *data, size_t len, bool binary)
{
    if (ws->route->cb.on_message)
        ws->route->cb.on_message(ws, data, len, binary);
}

static void message_done(myr_ws *ws)
{
    bool text = ws->msg_opcode == WS_OP_TEXT;
    if (ws->state == WS_OPEN) {
        if (text && ws->utf8 != WS_UTF8_OK) {
            ws_fail(ws, WS_CLOSE_INVALID_DATA);   /* ends mid-character */
            return;
        }
        deliver(ws, ws->msg.data, ws->msg.len, !text);
    }
    release_message(ws);
}

static void frame_done(myr_ws *ws)
{
    ws->have_frame = false;
    if (ws->frame.fin)
        message_done(ws);
}

static bool utf8_ok(myr_ws *ws, const uint8_t *p, size_t n)
{
    if (ws->msg_opcode != WS_OP_TEXT)
        return true;
    ws->utf8 = ws_utf8_check(ws->utf8, p, n);
    if (ws->utf8 != WS_UTF8_BAD)
        return true;
    ws_fail(ws, WS_CLOSE_INVALID_DATA);
    return false;
}

/* Takes unmasked payload bytes of the current message. last: the
 * message's final bytes. Returns false after failing the connection. */
static bool feed(myr_ws *ws, const uint8_t *p, size_t n, bool last)
{
    ws->msg_wire += n;
    if (!ws->msg_compressed) {
        if (!utf8_ok(ws, p, n))
            return false;
        if (buf_append(&ws->msg, p, n)) {
            ws_fail(ws, WS_CLOSE_INTERNAL);
            return false;
        }
        return true;
    }
    size_t old = ws->msg.len;
    int rc = ws_inflate(ws->inflater, p, n, last, &ws->msg, ws_max_message(ws));
    if (rc) {
        ws_fail(ws, rc == -ENOMEM ? WS_CLOSE_INTERNAL : (unsigned)-rc);
        return false;
    }
    return utf8_ok(ws, (const uint8_t *)ws->msg.data + old, ws->msg.len - old);
}

/* The wire payload a message may have: the limit itself, or for a
 * compressed one what deflate can expand it to (stored blocks). */
static uint64_t wire_limit(const myr_ws *ws)
{
    uint64_t max = ws_max_message(ws);
    return ws->msg_compressed ? max + max / 8 + 1024 : max;
}

/* A data frame header arrived. Returns false after failing. */
static bool begin_frame(myr_ws *ws, const ws_frame *f)
{
    if (f->opcode != WS_OP_CONT) {
        ws->msg_opcode = f->opcode;
        ws->msg_compressed = f->rsv & WS_RSV1;
        ws->utf8 = WS_UTF8_OK;
        ws->msg_wire = 0;
        if (ws->msg_compressed && ws->state == WS_OPEN && !ws->inflater) {
            ws->inflater = ws->pmd.client_no_takeover ? ws_zpool_inflater_get(&ws->wss->zpool)
                                                      : ws_inflater_new();
            if (!ws->inflater) {
                ws_fail(ws, WS_CLOSE_INTERNAL);
                return false;
            }
        }
    }
    if (f->len > wire_limit(ws) - ws->msg_wire) {
        ws_fail(ws, WS_CLOSE_TOO_BIG);   /* known from the header alone */
        return false;
    }
    return true;
}

/* ---- reading: control frames ---------------------------------------------------- */

static void on_control(myr_ws *ws, const ws_frame *f, const uint8_t *p)
{
    if (f->opcode == WS_OP_PING) {
        if (ws->state == WS_OPEN)
            queue_control(ws, WS_OP_PONG, p, f->len);   /* out of memory: no pong */
        return;
    }
    if (f->opcode != WS_OP_CLOSE)
        return;   /* a pong: any input already proved the peer alive */
    unsigned code;
    int rc = ws_close_parse(p, f->len, &code);
    if (rc) {
        ws_fail(ws, (unsigned)-rc);
        return;
    }
    ws->peer_code = (uint16_t)code;
    if (ws->state == WS_OPEN) {
        /* answer with the same code (and no reason), then close */
        queue_close(ws, code, NULL, 0);
    }
    ws_fail(ws, 0);   /* to LINGER; nothing more is sent */
}

/* ---- reading: frames ------------------------------------------------------------ */

/* Parses the next header (and, for a control frame, handles it). Returns
 * false when more bytes are needed or the connection failed. */
static bool take_header(myr_ws *ws)
{
    size_t avail = ws->in.len - ws->in_off;
    uint8_t *p = (uint8_t *)ws->in.data + ws->in_off;
    ws_frame_rules rules = {
        .rsv_allowed = ws->pmd.enabled ? WS_RSV1 : 0,
        .need_mask = true,
        .in_message = ws->msg_opcode != 0,
    };
    ws_frame f;
    ssize_t hl = ws_frame_parse(p, avail, &rules, &f);
    if (hl == WS_AGAIN)
        return false;
    if (hl < 0) {
        ws_fail(ws, (unsigned)-hl);
        return false;
    }
    if (ws_is_control(f.opcode)) {
        if (avail < (size_t)hl + f.len)
            return false;   /* wait for all of it: at most 131 bytes */
        ws_mask(p + hl, f.len, f.mask, 0);
        ws->in_off += (uint32_t)(hl + f.len);
        on_control(ws, &f, p + hl);
        return true;
    }
    if (!begin_frame(ws, &f))
        return false;
    ws->in_off += (uint32_t)hl;
    ws->frame = f;
    ws->frame_got = 0;
    ws->have_frame = true;
    bool whole = f.fin && f.opcode != WS_OP_CONT && !ws->msg_compressed &&
                 ws->state == WS_OPEN && avail - (size_t)hl >= f.len;
    if (whole) {   /* a complete message in the buffer: deliver it from there */
        uint8_t *pl = p + hl;
        ws_mask(pl, f.len, f.mask, 0);
        ws->in_off += (uint32_t)f.len;
        ws->have_frame = false;
        if (!utf8_ok(ws, pl, f.len))
            return false;
        if (ws->utf8 != WS_UTF8_OK) {
            ws_fail(ws, WS_CLOSE_INVALID_DATA);
            return false;
        }
        deliver(ws, pl, f.len, f.opcode == WS_OP_BINARY);
        release_message(ws);
        return true;
    }
    if (f.len == 0)
        frame_done(ws);
    return true;
}

static void take_payload(myr_ws *ws)
{
    size_t avail = ws->in.len - ws->in_off;
    uint64_t left = ws->frame.len - ws->frame_got;
    size_t n = avail < left ? avail : (size_t)left;
    uint8_t *p = (uint8_t *)ws->in.data + ws->in_off;
    ws_mask(p, n, ws->frame.mask, ws->frame_got);
    ws->in_off += (uint32_t)n;
    ws->frame_got += n;
    bool end = ws->frame_got == ws->frame.len;
    if (ws->state == WS_OPEN && !feed(ws, p, n, end && ws->frame.fin))
        return;
    if (end)
        frame_done(ws);
}

/* Consumes frames from the input buffer until it runs dry or the
 * connection stops taking frames. */
static void ws_process(myr_ws *ws)
{
    while (ws->state == WS_OPEN || ws->state == WS_CLOSE_SENT) {
        if (ws->in_off == ws->in.len)
            break;
        if (ws->have_frame)
            take_payload(ws);
        else if (!take_header(ws))
            break;
    }
    if (ws->state == WS_LINGER)
        linger_cleanup(ws);
    else if (ws->state != WS_CLOSED && ws->in.data && ws->in_off == ws->in.len)
        release_in(ws);   /* consumed: hold no buffer */
}

/* Payload bytes read straight into the message buffer (see ws_read_once). */
static void take_direct(myr_ws *ws, size_t n)
{
    uint8_t *p = (uint8_t *)ws->msg.data + ws->msg.len;
    ws_mask(p, n, ws->frame.mask, ws->frame_got);
    ws->frame_got += n;
    ws->msg_wire += n;
    if (!utf8_ok(ws, p, n))
        return;
    ws->msg.len += n;
    if (ws->frame_got == ws->frame.len)
        frame_done(ws);
}

static bool can_read_direct(const myr_ws *ws)
{
    return ws->state == WS_OPEN && ws->have_frame && !ws->msg_compressed &&
           ws->in_off == ws->in.len && ws->frame.len - ws->frame_got >= DIRECT_READ_MIN;
}

/* One read(2). Returns bytes read, 0 at EOF / EAGAIN, -1 once closed. */
static ssize_t ws_read_once(myr_ws *ws)
{
    bool direct = can_read_direct(ws);
    char *dst;
    size_t room;
    if (direct) {
        uint64_t left = ws->frame.len - ws->frame_got;
        room = left < DIRECT_READ_MAX ? (size_t)left : DIRECT_READ_MAX;
        release_in(ws);
        if (buf_reserve(&ws->msg, room)) {
            ws_close_now(ws);
            return -1;
        }
        dst = ws->msg.data + ws->msg.len;
    } else {
        room = in_room(ws);
        if (room == 0) {
            ws_close_now(ws);   /* out of memory (the buffer is never full here) */
            return -1;
        }
        dst = ws->in.data + ws->in.len;
    }
    for (;;) {
        ssize_t n = read(ws->io.fd, dst, room);
        if (n > 0) {
            /* a short read drained the socket, unless an EOF is behind it */
            if ((size_t)n < room && !ws->rdhup)
                ws->readable = false;
            if (direct)
                take_direct(ws, (size_t)n);
            else
                ws->in.len += (size_t)n;
            return n;
        }
        if (n == 0) {
            ws->eof = true;
            ws->readable = false;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            ws->readable = false;
            return 0;
        }
        ws_close_now(ws);
        return -1;
    }
}

/* While closing: input is read and dropped until the peer's FIN. */
static void linger_read(myr_ws *ws)
{
    char sink[4096];
    for (;;) {
        ssize_t n = read(ws->io.fd, sink, sizeof(sink));
        if (n > 0) {
            ws->discarded += (uint32_t)n;
            if (ws->discarded > LINGER_BYTES && !ws->shut_wr) {
                /* a peer that sends while not reading our close: stop
                 * reading (TCP pushes back) until the close is out; once it
                 * is, the flush resumes discarding until the peer's FIN */
                ws->readable = false;
                return;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            ws->readable = false;
            return;
        }
        ws->eof = true;
        ws->readable = false;
        if (n < 0 || ws->q.count == 0)
            ws_close_now(ws);   /* else the flush closes once our frames are out */
        return;
    }
}

static void note_input(myr_ws *ws)
{
    ws->last_rx = loop_now(ws_loop(ws));
    if (ws->ping_at) {   /* any bytes prove the peer alive */
        ws->ping_at = 0;
        ws_arm(ws);
    }
}

static void ws_read_loop(myr_ws *ws)
{
    for (int i = 0; i < READS_PER_EVENT && ws->readable; i++) {
        if (ws->state == WS_LINGER) {
            linger_cleanup(ws);
            linger_read(ws);
            break;
        }
        ssize_t n = ws_read_once(ws);
        if (n < 0)
            return;
        if (n > 0) {
            note_input(ws);
            ws_process(ws);
        }
        if (ws->state == WS_CLOSED)
            return;
        if (ws->eof && ws->state != WS_LINGER) {
            ws_close_now(ws);   /* gone without a close frame: 1006 */
            return;
        }
    }
    if (ws->state == WS_CLOSED)
        return;
    ws_flush(ws);   /* everything this batch produced, in one write */
    if (ws->state != WS_CLOSED && ws->readable)
        ws_flush_later(ws);   /* more to read: after the other connections */
}

static void on_io(loop_io *io, uint32_t events)
{
    myr_ws *ws = container_of(io, myr_ws, io);
    if (ws->state == WS_CLOSED)
        return;
    if (events & LOOP_WRITE)
        ws_flush(ws);
    if (ws->state == WS_CLOSED)
        return;
    if (events & (LOOP_READ | LOOP_RDHUP | LOOP_ERROR)) {
        ws->readable = true;
        if (events & (LOOP_RDHUP | LOOP_ERROR))
            ws->rdhup = true;
        ws_read_loop(ws);
    }
}

static void on_deferred(loop_deferred *d)
{
    myr_ws *ws = container_of(d, myr_ws, defer);
    if (ws->state == WS_CLOSED) {
        ws_server *wss = ws->wss;
        free(ws);
        if (--wss->nalloc == 0)
            ws_server_free(wss);
        return;
    }
    if (ws->in_off < ws->in.len || ws->state == WS_LINGER)
        ws_process(ws);   /* input that came with the handshake; or cleanup */
    if (ws->state != WS_CLOSED)
        ws_flush(ws);
    if (ws->state != WS_CLOSED && ws->readable)
        ws_read_loop(ws);
}

/* ---- closing -------------------------------------------------------------------- */

static void set_close_deadline(myr_ws *ws, uint64_t timeout_ms)
{
    uint64_t d = loop_now(ws_loop(ws)) + timeout_ms * NS_PER_MS;
    if (!ws->close_deadline || d < ws->close_deadline)
        ws->close_deadline = d;
    ws_arm(ws);
}

/* Fails (code != 0: sends that close code) or finishes the close handshake
 * (code 0): LINGER, where nothing more is sent after the queued frames.
 * Buffers stay until linger_cleanup: a message callback may be running
 * with pointers into them. Out of memory for the close frame, the
 * connection just ends with a FIN. */
static void ws_fail(myr_ws *ws, unsigned code)
{
    if (ws->state == WS_CLOSED || ws->state == WS_LINGER)
        return;
    if (code && ws->state == WS_OPEN)
        queue_close(ws, code, NULL, 0);
    ws->state = WS_LINGER;
    ws->have_frame = false;
    set_close_deadline(ws, ws_cfg(ws)->ws_close_timeout);
    ws_flush_later(ws);
}

/* Sends our close frame and waits for the peer's. */
static int ws_start_close(myr_ws *ws, unsigned code, const char *reason, size_t rlen,
                          uint64_t timeout_ms)
{
    if (ws->state != WS_OPEN)
        return -EPIPE;
    if (queue_close(ws, code, reason, rlen)) {
        ws_fail(ws, 0);   /* cannot say goodbye: just end */
        return -ENOMEM;
    }
    ws->state = WS_CLOSE_SENT;
    set_close_deadline(ws, timeout_ms);
    ws_flush_later(ws);
    return 0;
}

static void ws_close_now(myr_ws *ws)
{
    if (ws->state == WS_CLOSED)
        return;
    ws_server *wss = ws->wss;
    http_server *s = wss->srv;
    if (ws->io.fd >= 0) {
        int fd = ws->io.fd;
        loop_io_del(s->loop, &ws->io);
        close(fd);
    }
    loop_timer_stop(s->loop, &ws->timer);
    release_in(ws);
    release_message(ws);
    ws_inflater_free(ws->inflater);
    ws->inflater = NULL;
    ws_deflater_free(ws->deflater);
    ws->deflater = NULL;
    queue_free(&ws->q);
    if (ws->prev)
        ws->prev->next = ws->next;
    else
        wss->conns = ws->next;
    if (ws->next)
        ws->next->prev = ws->prev;
    wss->nconns--;
    ws->state = WS_CLOSED;
    if (ws->subs && wss->drop_subs)
        wss->drop_subs(ws);   /* no message reaches it any more */
    if (ws->opened && ws->route->cb.on_close)
        ws->route->cb.on_close(ws, ws->peer_code ? ws->peer_code : WS_CLOSE_ABNORMAL);
    if (ws->attached)
        server_upgraded_closed(s);
    loop_defer(s->loop, &ws->defer, on_deferred);   /* freed there */
}

/* ---- timers and draining -------------------------------------------------------- */

/* When the connection next needs attention: a close's end, the dead-peer
 * limit of an unanswered ping, or the next keep-alive ping. */
static uint64_t ws_deadline(const myr_ws *ws)
{
    const config *cfg = ws_cfg(ws);
    if (ws->state != WS_OPEN)
        return ws->close_deadline;
    if (ws->ping_at)
        return ws->ping_at + cfg->ws_ping_timeout * NS_PER_MS;
    if (cfg->ws_ping_interval)
        return ws->last_rx + cfg->ws_ping_interval * NS_PER_MS;
    return UINT64_MAX;
}

/* Arms the timer for the deadline unless it already fires earlier (a
 * later deadline is picked up when it fires: lazy re-arm). */
static void ws_arm(myr_ws *ws)
{
    uint64_t d = ws_deadline(ws);
    if (d == UINT64_MAX || ws->state == WS_CLOSED)
        return;
    if (!loop_timer_active(&ws->timer) || ws->timer.deadline > d)
        loop_timer_start_at(ws_loop(ws), &ws->timer, d, on_timer);
}

/* Whether bytes wait in the socket that we have not read. After the loop
 * stood still (CPU starvation, a long callback, a debugger), a peer's
 * answer can be in the kernel while its readiness event is not dispatched
 * yet: the timer phase runs after one batch of events, or none at all
 * when the poll was interrupted (a stopped process resumes with EINTR). */
static bool input_waiting(const myr_ws *ws)
{
    int n = 0;
    return ws->io.fd >= 0 && ioctl(ws->io.fd, FIONREAD, &n) == 0 && n > 0;
}

/* A deadline has passed that would end the connection: first read what
 * already arrived, through the normal read path, and judge again. Any
 * bytes prove the peer alive (note_input moves the ping deadline); a
 * close's deadline does not move, but its answer may be among them.
 * Returns true when the connection was closed or no longer overdue. */
static bool overdue_input_excuses(myr_ws *ws, uint64_t now)
{
    if (!input_waiting(ws))
        return false;
    ws->readable = true;
    ws_read_loop(ws);
    if (ws->state == WS_CLOSED)
        return true;
    if (now < ws_deadline(ws)) {
        ws_arm(ws);   /* re-armed already if the read moved the deadline */
        return true;
    }
    return false;
}

static void on_timer(loop_timer *t)
{
    myr_ws *ws = container_of(t, myr_ws, timer);
    uint64_t now = loop_now(ws_loop(ws)), d = ws_deadline(ws);
    if (d == UINT64_MAX)
        return;
    if (now < d) {
        loop_timer_start_at(ws_loop(ws), t, d, on_timer);
        return;
    }
    if (ws->state != WS_OPEN || ws->ping_at) {
        if (overdue_input_excuses(ws, now))
            return;
        ws_close_now(ws);   /* a close that took too long, or a dead peer */
        return;
    }
    ws->ping_at = now;
    if (queue_control(ws, WS_OP_PING, NULL, 0)) {
        ws_close_now(ws);
        return;
    }
    ws_arm(ws);
    ws_flush(ws);
}

/* Graceful stop: every open connection is told 1001 (going away); the
 * close handshakes end within the shutdown timeout, before the server's
 * own drain timer (armed after this) gives up on them. */
static void ws_server_drain(http_server *s, void *arg)
{
    ws_server *w = arg;
    const config *cfg = s->cfg;
    uint64_t ms = cfg->ws_close_timeout < cfg->shutdown_timeout ? cfg->ws_close_timeout
                                                                : cfg->shutdown_timeout;
    for (myr_ws *ws = w->conns, *next; ws; ws = next) {
        next = ws->next;
        if (ws->state == WS_OPEN) {
            static const char reason[] = "server shutting down";
            ws_start_close(ws, WS_CLOSE_GOING_AWAY, reason, sizeof(reason) - 1, ms);
        } else {
            set_close_deadline(ws, ms);
        }
    }
}

/* ---- public API ----------------------------------------------------------------- */

int myr_ws_close(myr_ws *ws, int code, const char *reason)
{
    size_t rlen = reason ? strlen(reason) : 0;
    if (code < 0 || !ws_close_code_valid((unsigned)code) || rlen > WS_MAX_CONTROL - 2 ||
        ws_utf8_check(WS_UTF8_OK, (const uint8_t *)reason, rlen) != WS_UTF8_OK)
        return -EINVAL;
    if (ws->state != WS_OPEN)
        return -EPIPE;
    return ws_start_close(ws, (unsigned)code, reason, rlen, ws_cfg(ws)->ws_close_timeout);
}

void myr_ws_set_data(myr_ws *ws, void *data) { ws->data = data; }
void *myr_ws_data(const myr_ws *ws) { return ws->data; }
void *myr_ws_route_arg(const myr_ws *ws) { return ws->route->cb.arg; }
size_t myr_ws_queued(const myr_ws *ws) { return ws->q.bytes; }
