/* http_conn — one client connection: the state machine that reads requests,
 * frames their bodies, dispatches them in order and writes the responses.
 *
 *   READING ──head+body complete──> HANDLING ──response done──> READING
 *      │                                 │
 *      └─ error / close / drain ─> CLOSING (flush output) ─> LINGERING
 *                                        (discard input briefly) ─> CLOSED
 *
 * Requests are handled one at a time in arrival order; pipelined requests
 * wait in the input buffer, so responses leave in order and every response
 * produced while processing one read goes out in one write. A connection
 * whose unsent output passes OUT_HIGH stops reading until it drains.
 *
 * Timeouts use one embedded deadline (core/deadline.h), re-armed lazily:
 * activity only moves it; the timer, when it fires early, re-arms itself.
 *
 * Ownership: the server owns connections; a connection is freed from a
 * deferred callback after it is closed, never inside an I/O callback.
 */
#ifndef MYR_HTTP_CONN_H
#define MYR_HTTP_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/deadline.h"
#include "core/loop.h"

typedef struct http_server http_server;
typedef struct myr_req myr_req;

#define OUT_HIGH (256u * 1024)  /* stop reading above this much unsent output */

enum conn_state {
    CONN_READING,
    CONN_HANDLING,
    CONN_CLOSING,
    CONN_LINGERING,
    CONN_CLOSED,
};

typedef struct http_conn http_conn;
struct http_conn {
    loop_io        io;
    deadline       dl;             /* when the current wait times out (lazy timer) */
    http_server   *srv;
    http_conn     *prev, *next;    /* server's connection list */
    buf            in;             /* received bytes; no storage while idle */
    buf            out;            /* response bytes not yet written */
    size_t         out_off;        /* bytes of out already written */
    myr_req       *req;            /* request being read or handled */
    uint32_t       in_off;         /* bytes of in already consumed */
    uint32_t       scanned;        /* bytes of the current head already scanned */
    uint8_t        state;          /* enum conn_state */
    uint8_t        wait;           /* what `dl` limits (conn_wait in .c) */
    bool           readable;       /* epoll said readable and we have not seen EAGAIN */
    bool           eof;            /* read(2) returned 0: peer shut its write side */
    bool           rdhup;          /* epoll reported the peer's shutdown (or an error) */
    bool           in_process;     /* inside conn_process: completions must not recurse */
    bool           sent_continue;  /* 100 Continue sent for the current request */
    bool           admin;          /* observability: accepted on the admin port */
    uint8_t        peer_family;    /* observability: AF_INET, AF_INET6, 0 = unknown */
    uint8_t        peer[16];       /* observability: client address (access log) */
    loop_deferred  defer;          /* resume processing, or free after close */
};

/* Takes ownership of an accepted socket. NULL when out of memory (the
 * caller closes fd). */
http_conn *http_conn_new(http_server *s, int fd);
/* Closes now (drain timeout, server shutdown): a pending request is cancelled. */
void http_conn_close(http_conn *c);
/* Closes the connection if it is idle between requests (for draining). */
void http_conn_close_if_idle(http_conn *c);

/* What a connection hands over when another protocol takes the socket
 * (WebSocket after a 101 answer). The receiver owns all of it. */
typedef struct http_detached {
    int    fd;        /* non-blocking socket, no longer in the loop */
    buf    in;        /* bytes received after the upgrade request */
    buf    out;       /* response bytes (the 101) not yet written */
} http_detached;

/* Takes the socket away from HTTP after the handler of c->req has queued
 * its final response head (e.g. 101) with myr_respond-less writes into
 * c->out. The request is released, the connection freed later; the server
 * keeps counting the socket as an upgraded connection until
 * server_upgraded_closed(). Returns 0, or -EBUSY if the connection is not
 * in a state that can be handed over (closing, output backed up). */
int http_conn_detach(http_conn *c, http_detached *d);

/* For the request layer. The response bytes for c->req have been appended
 * to c->out; finish the request and move on (next request or close). */
void http_conn_request_done(http_conn *c);
/* Output was appended outside conn processing (streaming): write it. */
void http_conn_flush_later(http_conn *c);
/* Makes sure output can be appended to *out (pooled buffer). 0 or -ENOMEM. */
int http_conn_out(http_conn *c, buf **out);
/* Output bytes not yet written. */
static inline size_t http_conn_unsent(const http_conn *c) { return c->out.len - c->out_off; }

#endif
