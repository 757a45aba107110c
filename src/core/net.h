/* net — sockets: listening (SO_REUSEPORT, backlog, TCP options) and the
 * per-connection options set after accept. Thin wrappers that return -errno.
 */
#ifndef MYR_NET_H
#define MYR_NET_H

#include <stdbool.h>

/* Resolves host (numeric IPv4/IPv6 or a name) and binds a non-blocking,
 * close-on-exec TCP listening socket. reuseport: set SO_REUSEPORT so each
 * worker can bind its own socket to the same address. Returns the fd or
 * -errno; on failure *err (may be NULL) names the failing step. */
int net_listen(const char *host, int port, int backlog, bool reuseport,
               const char **err);
/* The port a socket is bound to (useful after binding port 0), or -errno. */
int net_local_port(int fd);
/* TCP_NODELAY on an accepted socket: responses are written whole, so
 * Nagle would only add latency. */
void net_set_nodelay(int fd);

#endif
