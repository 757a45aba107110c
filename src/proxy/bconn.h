/* bconn — one connection from the balancer to a backend.
 *
 *   CONNECTING ──connected──> BUSY ──response done, reusable──> IDLE (pool)
 *       │                      ^  │                               │
 *       │                      │  └─ error, not reusable ─┐       │
 *       │                      └──── taken from the pool ──┼───────┘
 *       └─ refused / timeout ──────────────────────────────┴──> CLOSED
 *
 * A BUSY connection belongs to one client session (owner), which drives all
 * its I/O: events on the socket only set readiness flags and run the
 * session. An IDLE connection sits in its backend's pool; any event on it
 * (the backend closed it, or sent bytes nobody asked for) or its idle
 * timeout closes it.
 *
 * One embedded deadline (core/deadline.h): the connect timeout, the owner's
 * backend timeout, or the pool idle timeout; re-armed lazily like
 * http_conn's.
 *
 * Ownership: the backend's pool owns IDLE connections, the session owns the
 * one it uses. A connection holds its backend (backend_conn_closed when it
 * closes). Freed from a deferred callback after bconn_close().
 */
#ifndef MYR_PROXY_BCONN_H
#define MYR_PROXY_BCONN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/deadline.h"
#include "core/loop.h"

typedef struct backend backend;
typedef struct session session;

enum bconn_state { BC_CONNECTING, BC_BUSY, BC_IDLE, BC_CLOSED };

typedef struct bconn bconn;
struct bconn {
    loop_io       io;
    deadline      dl;          /* when the current wait ends; at 0: none */
    backend      *be;
    session      *owner;       /* while CONNECTING or BUSY */
    bconn        *prev, *next; /* the backend's idle list, while IDLE */
    buf           in;          /* response bytes; no storage while IDLE */
    size_t        in_off;      /* bytes of in already consumed */
    uint64_t      idle_since;  /* loop ns it entered the pool */
    uint64_t      requests;    /* responses it carried */
    uint8_t       state;       /* enum bconn_state */
    bool          readable;    /* epoll said readable; no EAGAIN seen since */
    bool          wblocked;    /* a send hit EAGAIN; EPOLLOUT clears it */
    bool          rdhup;       /* epoll reported the backend's shutdown: a short
                                  read is not the end, the EOF must be read */
    bool          eof;         /* the backend closed its side */
    bool          failed;      /* EPOLLERR / a reset was seen */
    loop_deferred defer;
};

/* Starts a non-blocking connect to be for owner. 0 with *out set (the
 * connect may still be in progress), or -errno when it failed at once
 * (ECONNREFUSED on loopback, EMFILE...). */
int  bconn_connect(backend *be, session *owner, bconn **out);
/* For a CONNECTING connection that became writable or failed: 0 when
 * connected (now BUSY), -EINPROGRESS when not yet, else -errno. */
int  bconn_finish_connect(bconn *c);
/* Closes now; the session (if any) is not told. */
void bconn_close(bconn *c);
/* Moves c into / out of its backend's pool (backend_pool_put/get call these). */
void bconn_make_idle(bconn *c, uint64_t idle_timeout_ms);
void bconn_make_busy(bconn *c, session *owner);

/* The owner's wait on this backend: ends after timeout_ms unless renewed. */
void bconn_wait(bconn *c, uint64_t timeout_ms);
void bconn_wait_none(bconn *c);
/* Whether a wait is set (bconn_wait since the last bconn_wait_none/expiry). */
static inline bool bconn_waiting(const bconn *c)
{
    return c->dl.at != 0;
}

/* Buffers from the worker's pool (the in buffer). */
void bconn_release_in(bconn *c);

#endif
