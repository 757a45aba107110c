/* ws — WebSocket connections (RFC 6455): the upgrade handshake, the
 * connection object that owns the socket afterwards, its read path (frames
 * to messages), write path (a queue of shared frames), close handshake,
 * keep-alive pings and backpressure.
 *
 *   http_conn ──handler ws_handshake: validate, 101, http_conn_detach──┐
 *                                                                      v
 *   OPEN ──we send close (app, drain 1001)──> CLOSE_SENT ──peer close──┐
 *     │                                                                v
 *     ├──peer close (we answer it)───────────────────────────────> LINGER
 *     └──protocol error / overflow (we send the failing code)────> LINGER
 *   LINGER: flush the queue (our close frame last), shut our write side;
 *   after a complete close handshake close at once (the server closes
 *   TCP first), after a failure discard input until the peer's FIN (or
 *   --ws-close-timeout) ─> CLOSED (freed later).
 *   Any socket error, a dead peer or a timeout ─> CLOSED at once. Before
 *   a deadline ends a connection, bytes already waiting in its socket are
 *   read (after a stall of the loop they are there while their readiness
 *   event is not dispatched yet): a peer whose pong is waiting is alive.
 *
 * Memory. An idle connection is one struct myr_ws (static_assert'ed at
 * most 320 bytes) and an armed timer: no input buffer (a pooled 4 KiB one
 * is taken when bytes arrive and given back once they are consumed), no
 * message buffer, no send queue storage and, unless the connection has
 * compressed with context takeover, no zlib state (see ws_deflate.h).
 *
 * Sending. The queue holds references to ws_msg frames, which several
 * connections may share: a message fanned out to many subscribers is
 * encoded once. Frames are queued uncompressed and compressed (per
 * connection, with its deflate context) only when they are about to be
 * written, so the overflow policy can drop queued messages without
 * desynchronising a compression context, and a shared frame stays
 * shareable.
 *
 * Ownership: the per-server ws_server owns its connections; a connection
 * is freed from a deferred callback after it is closed, and the ws_server
 * with its last connection. Everything runs on the server's loop thread.
 */
#ifndef MYR_HTTP_WS_H
#define MYR_HTTP_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "myriad.h"
#include "core/buf.h"
#include "core/loop.h"
#include "http/ws_deflate.h"
#include "http/ws_frame.h"

typedef struct http_server http_server;
struct rt_sub;

/* ---- shared frames -------------------------------------------------------------- */

#define WS_MSG_HEADROOM 10        /* largest unmasked header: 2 + 8 length bytes */
#define WS_MSG_RAW      0xff      /* opcode of bytes that are not a frame (the 101) */

/* A frame ready to write. Payload bytes start at data + WS_MSG_HEADROOM;
 * the header is written right-aligned before them, at data + head. */
typedef struct ws_msg {
    uint32_t refs;     /* queue entries (and creators) holding it */
    uint8_t  opcode;   /* of the frame, or WS_MSG_RAW */
    uint8_t  head;     /* offset of the frame's first byte in data */
    size_t   len;      /* bytes from data + head */
    uint8_t  data[];
} ws_msg;

/* A final, unmasked, uncompressed frame carrying a copy of payload. The
 * caller holds one reference. NULL when out of memory. */
ws_msg *ws_msg_new(unsigned opcode, const void *payload, size_t len);
static inline ws_msg *ws_msg_ref(ws_msg *m) { m->refs++; return m; }
void    ws_msg_unref(ws_msg *m);

/* Queues a shared data frame (TEXT or BINARY made by ws_msg_new) on ws,
 * taking a reference; compressed per connection when it is written.
 * Results as myr_ws_send. */
int ws_send_msg(myr_ws *ws, ws_msg *m);
/* The same under an overflow policy of the caller's (a subscription's)
 * instead of the route's. *dropped (may be NULL) gets the number of data
 * messages the policy discarded: queued ones, plus m itself when it is
 * refused (MYR_WS_DISCONNECT). */
int ws_send_msg_policy(myr_ws *ws, ws_msg *m, myr_ws_overflow policy, uint32_t *dropped);

/* ---- connections ---------------------------------------------------------------- */

enum ws_state { WS_OPEN, WS_CLOSE_SENT, WS_LINGER, WS_CLOSED };

/* A FIFO of frames to write: a power-of-two ring of references, allocated
 * while not empty. */
typedef struct ws_queue {
    ws_msg  **ring;    /* cap entries; NULL when cap == 0 */
    uint32_t  cap;
    uint32_t  head;    /* index of the oldest entry */
    uint32_t  count;
    size_t    bytes;   /* unsent bytes over all entries */
    size_t    off;     /* bytes of the oldest entry already written */
} ws_queue;

typedef struct ws_route {
    myr_ws_callbacks cb;   /* as given to myr_ws_route */
} ws_route;

struct myr_ws {
    loop_io           io;            /* fd -1 before attach and after close */
    loop_timer        timer;         /* ping, dead peer, or close deadline (lazy) */
    loop_deferred     defer;         /* flush and resume reading, or free */
    struct ws_server *wss;
    const ws_route   *route;
    myr_ws           *prev, *next;   /* wss->conns */
    void             *data;          /* myr_ws_set_data */
    struct rt_sub    *subs;          /* pub/sub subscriptions (src/rt/topic.h), dropped
                                        through wss->drop_subs when the connection closes */
    buf               in;            /* received bytes; pooled, none while idle */
    buf               msg;           /* payload of the message being received */
    ws_queue          q;
    ws_frame          frame;         /* header of the data frame being received */
    uint64_t          frame_got;     /* payload bytes of `frame` consumed */
    uint64_t          msg_wire;      /* wire payload bytes of the message so far */
    ws_inflater      *inflater;      /* own (takeover) or borrowed for one message */
    ws_deflater      *deflater;      /* own (takeover only); NULL until needed */
    uint64_t          last_rx;       /* loop ns of the last bytes received */
    uint64_t          ping_at;       /* loop ns of the unanswered ping; 0 = none */
    uint64_t          close_deadline;/* loop ns by which a started close ends */
    uint32_t          in_off;        /* bytes of `in` consumed */
    uint32_t          utf8;          /* validator state of a text message */
    uint32_t          discarded;     /* input bytes dropped in LINGER */
    uint16_t          peer_code;     /* close code the peer sent; 0 = none yet */
    uint8_t           state;         /* enum ws_state */
    uint8_t           msg_opcode;    /* TEXT or BINARY in progress; 0 = none */
    ws_pmd            pmd;           /* permessage-deflate, if negotiated */
    bool              have_frame;    /* `frame` holds a header whose payload is due */
    bool              msg_compressed;/* the message in progress has RSV1 */
    bool              readable;      /* epoll said readable, no EAGAIN since */
    bool              eof;           /* the peer shut its write side */
    bool              rdhup;         /* epoll reported the peer's shutdown */
    bool              shut_wr;       /* we shut our write side (LINGER) */
    bool              opened;        /* on_open ran: on_close is owed */
    bool              attached;      /* the socket came from http_conn_detach */
};

/* Per-server state, hung off http_server.ws while any connection exists. */
typedef struct ws_server {
    http_server *srv;
    myr_ws      *conns;    /* connections not yet CLOSED */
    uint32_t     nconns;
    uint32_t     nalloc;   /* connections not yet freed */
    ws_zpool     zpool;    /* zlib streams for connections without takeover */
    /* Set by the pub/sub layer (src/rt) when a connection subscribes: called
     * once at close, before on_close, for a connection whose subs is set. */
    void       (*drop_subs)(myr_ws *ws);
} ws_server;

/* The route handler behind every myr_ws_route (GET). */
void ws_handshake(myr_req *req);

/* ---- handshake helpers (pure) --------------------------------------------------- */

/* A Sec-WebSocket-Key: base64 of exactly 16 bytes (24 characters). */
bool ws_key_valid(const char *key, size_t len);
/* Sec-WebSocket-Accept for key: base64(SHA-1(key GUID)), 28 characters
 * and a NUL. */
void ws_accept_key(const char *key, size_t len, char out[29]);

#endif
