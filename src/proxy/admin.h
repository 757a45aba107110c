/* admin — the balancer's admin HTTP server on --admin-port:
 *
 *   GET  /metrics                   Prometheus text (metrics.c), every worker summed
 *   GET  /backends                  one line per backend: weight, health, drain, load
 *   POST /backends/HOST:PORT/drain  stop sending it new requests, in every worker
 *   POST /backends/HOST:PORT/ready  undo a drain
 *
 * On --admin-host (default 127.0.0.1). It is an ordinary myriad HTTP server (http/server.c and a router) on the
 * worker's loop, sharing the listening socket every worker inherited. Its
 * handlers reach the balancer through a process-wide pointer set once by
 * admin_init (one balancer per worker process; the public handler type
 * carries no user data).
 */
#ifndef MYR_PROXY_ADMIN_H
#define MYR_PROXY_ADMIN_H

typedef struct balancer balancer;

/* Serves the admin API on fd (owned from here). 0 or -errno (logged). */
int  admin_init(balancer *b, int fd);
void admin_fini(balancer *b);

#endif
