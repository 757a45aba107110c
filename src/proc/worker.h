/* worker — one serving process: a loop, an HTTP server on a listening
 * socket, and the signals that stop it. The supervisor (cluster) forks these;
 * with one worker, myr_main runs it in-process.
 */
#ifndef MYR_PROC_WORKER_H
#define MYR_PROC_WORKER_H

#include "core/config.h"

struct myr_app;

/* Serves on listen_fd (owned from here) until SIGTERM/SIGINT have drained
 * it. A second SIGINT, or SIGQUIT, stops at once. Returns the process exit
 * status. */
int worker_run(struct myr_app *app, const config *cfg, int listen_fd);

#endif
