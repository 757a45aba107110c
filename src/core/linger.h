/* linger — the last phase of closing a connection after an error answer.
 *
 * Closing a socket that still has unread input makes the kernel send a
 * reset, and a reset can destroy the answer before the client reads it. So
 * the HTTP connection (http/http_conn.c) and the balancer's client session
 * (proxy/session.c) shut their write side and discard what the client still
 * sends, for at most LINGER_MS (their deadline) or LINGER_BYTES a read
 * event, before they close.
 */
#ifndef MYR_LINGER_H
#define MYR_LINGER_H

#define LINGER_MS    2000u          /* discard input this long after an error */
#define LINGER_BYTES (64u * 1024)   /* ... or this much per readable event */

/* Reads and drops what the non-blocking socket fd holds. Returns -EAGAIN
 * when it is drained (go on lingering; edge-triggered epoll tells when more
 * comes), or 0 when it is time to close: EOF, a read error, or LINGER_BYTES
 * dropped in this call. */
int linger_discard(int fd);

#endif
