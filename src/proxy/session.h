/* session — one client connection to the balancer and the requests it
 * carries, each forwarded to a backend and its response back.
 *
 *   IDLE ──first byte──> HEAD ──head parsed──> EXCHANGE ──response done──> IDLE
 *     │                   │                     │    (keep-alive; the next
 *     │                   │                     │     pipelined request, if
 *     │                   │                     │     any, is already here)
 *     └──── close / error / drain ──────────────┴──> CLOSING (flush output)
 *                                                     ─> LINGER ─> CLOSED
 *
 * An exchange streams both ways at once, each way through two bounded
 * buffers, so memory stays flat however large the bodies:
 *
 *   client ─read─> in ─(body framed again)─> bout ─send─> backend
 *   client <─send─ out <─(body framed again)─ bc->in <─read─ backend
 *
 * Reading from one side stops while the buffer it feeds is above its high
 * mark, and resumes as the other side drains it.
 *
 * All I/O of a session, both sockets, runs in one function (session_run)
 * that makes every step it can (read, parse, forward, write) until none is
 * left: events only set readiness flags. There is one place where states
 * change and no callback chains between the two sockets.
 *
 * Ownership: the balancer owns sessions; a session owns its exchange
 * (pooled), its buffers (pooled) and its backend connection while it uses
 * it. Freed from a deferred callback after closing.
 */
#ifndef MYR_PROXY_SESSION_H
#define MYR_PROXY_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct balancer balancer;
typedef struct session session;
typedef struct exchange exchange;

/* Takes an accepted socket; NULL when out of memory (the caller closes fd). */
session *session_new(balancer *bal, int fd, const struct sockaddr_storage *peer);
/* Closes now: a request in flight is abandoned. */
void session_close(session *s);
/* Draining: closes the session if it is between requests. */
void session_close_if_idle(session *s);
/* The session's backend connection had an event or its wait timed out. */
void session_backend_event(session *s, bool timed_out);

/* Closes every session between requests (a stop's second phase), or every
 * session (shutdown timeout, exit). */
void session_close_idle_all(balancer *bal);
void session_close_all(balancer *bal);

/* Bytes of one pooled exchange object for heads of max_headers fields. */
size_t session_exchange_size(uint32_t max_headers);
/* Frees the balancer's pool of exchange objects (exit). */
void session_free_exchanges(balancer *bal);

#endif
