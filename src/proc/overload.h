/* overload — whether a worker should refuse new work now (fastify's
 * under-pressure), and the refusal: 503 with Retry-After, decided before
 * any handler runs, at the cost of a few loads and compares per request.
 *
 * Pressure, in the order reported:
 *   "loop lag"            the mean loop lag of the last window (lag.h) is
 *                         above --max-loop-lag (0, the default, turns it off)
 *   "offload queue full"  --offload-queue jobs are waiting for the pool
 *   "connection limit"    --max-connections are open: new connections are
 *                         refused at accept (server.c) but requests on the
 *                         open ones are served, so this one only shows in
 *                         health checks (myr_overload_reason)
 * Nothing is latched: the next request after the pressure goes is served.
 */
#ifndef MYR_PROC_OVERLOAD_H
#define MYR_PROC_OVERLOAD_H

#include <stdbool.h>

typedef struct http_server http_server;
typedef struct myr_req myr_req;

/* NULL when healthy, else the first pressure from the list above. */
const char *overload_reason(const http_server *s);
/* If the server is shedding load, answers r with 503 (r is then complete)
 * and returns true. Called by req_dispatch before routing. */
bool overload_shed(myr_req *r);

#endif
