/* proxy — `myriad balance`: an L7 HTTP/1.1 load balancer.
 *
 *     myriad balance --listen 0.0.0.0:80 --backend 10.0.0.1:8080 \
 *                    --backend 10.0.0.2:8080,weight=2 --policy leastconn \
 *                    --health-path /healthz --admin-port 9000
 *
 * proxy_main reads the command line and configuration (the shared table in
 * core/config.c: balance settings are the ones whose help starts with
 * "balance:"), checks it, makes the region the workers share, binds the
 * admin port, and hands over to the supervisor (proc/cluster.c), which runs
 * balancer_main in each worker — in-process with one worker.
 *
 * The modules, in the order a request meets them: balancer (accepting,
 * signals), session (the client connection and the forwarding), backend
 * and lb_* (choosing), bconn (backend connections and their pool), rewrite
 * (heads on the way through), health (active checks), shared, metrics and
 * admin (the operator's view).
 */
#ifndef MYR_PROXY_PROXY_H
#define MYR_PROXY_PROXY_H

#include <stddef.h>

#include "core/config.h"

/* Runs `myriad balance`; argv[first..argc) are its flags. Returns the exit
 * status: 0 after a clean stop, 2 for bad flags or configuration (one line
 * on stderr), 1 for other failures. */
int proxy_main(int argc, char **argv, int first);

/* Checks the balance settings of cfg and applies --listen to host/port.
 * 0, or -EINVAL with a one-line reason in err. */
int proxy_config_check(config *cfg, char *err, size_t errlen);

#endif
