/* health — active health checks: every health-interval, one HTTP request
 * per backend (GET health-path, Connection: close) on a fresh connection;
 * a 2xx or 3xx status head within health-timeout passes, anything else
 * (refused, reset, timeout, malformed or other status) fails. Results go to
 * backend_check_result(), which applies rise and fall.
 *
 * One probe per backend per worker, with its own socket, timer and small
 * buffer; the first check of each backend starts at a random point of the
 * first interval so checks of many backends (and workers) spread out.
 */
#ifndef MYR_PROXY_HEALTH_H
#define MYR_PROXY_HEALTH_H

typedef struct backend backend;

/* Starts checking b (no-op if it is already checked). 0 or -ENOMEM. */
int  health_start(backend *b);
/* Stops and frees b's probe, if any. */
void health_stop(backend *b);

#endif
