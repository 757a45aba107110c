/* worker — one serving process of `myriad serve`: a loop, an HTTP server on
 * a listening socket, the signals that stop it, and the counters it
 * publishes to its row of the shared worker table. The supervisor (cluster)
 * forks these; with one worker, cluster_run runs it in-process.
 */
#ifndef MYR_PROC_WORKER_H
#define MYR_PROC_WORKER_H

#include "core/config.h"
#include "proc/cluster.h"

struct myr_app;

/* Serves app on listen_fd (owned from here) until stopped; a cluster_ops
 * worker_main. SIGTERM/SIGINT drain gracefully (see worker.c); a second
 * SIGINT, or SIGQUIT, stops at once; SIGUSR1 reopens --log-file; SIGHUP is
 * the supervisor's business and ignored here. Returns the process exit
 * status: 0 after a stop, 1 if serving could not start. */
int worker_run(struct myr_app *app, const config *cfg, int listen_fd, cluster_worker *self);

#endif
