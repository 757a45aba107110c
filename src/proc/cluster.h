/* cluster — the supervisor: one worker process per core, kept alive.
 *
 * cluster_run() binds one SO_REUSEPORT listening socket per worker index
 * (the kernel spreads new connections over them, no accept lock), forks the
 * workers, and then only supervises; it never touches a request:
 *
 *   - respawn: a worker that dies is replaced at once; repeated deaths of the
 *     same index back off exponentially; --crash-loop-deaths deaths within
 *     --crash-loop-window stop the service (exit 1) with a clear message;
 *   - graceful stop: SIGTERM/SIGINT → every worker drains, then exit 0; a
 *     second SIGINT (or SIGQUIT) stops the workers at once;
 *   - reload: SIGHUP → ops->reload() re-reads the configuration; a new
 *     generation of workers starts, and each old worker is drained once its
 *     successor is serving. A configuration that does not load keeps the old
 *     generation;
 *   - recycling: a worker past --max-worker-memory (RSS, sampled every
 *     second), --max-requests or --max-worker-age (both with jitter) is
 *     replaced the same way: successor first, then drain;
 *   - SIGUSR1 reopens --log-file (and tells the workers to);
 *   - --pid-file, --user (workers drop privileges after the bind), --pin.
 *
 * Sockets. The supervisor keeps every listening socket open, and worker i of
 * every generation inherits socket i. So the listening queue of a worker that
 * dies or drains is never lost: its successor accepts from the same queue.
 * Where SO_REUSEPORT is unavailable all workers share one inherited socket.
 *
 * With one worker and no recycling limit there is nothing to supervise:
 * cluster_run serves in-process (no fork), with the same privileges, pid
 * file, log file and shared table.
 *
 * The supervisor is generic: `myriad serve` and `myriad balance` both run
 * under it with their own cluster_ops.
 */
#ifndef MYR_PROC_CLUSTER_H
#define MYR_PROC_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/config.h"
#include "core/shm.h"

#define CLUSTER_MAX_WORKERS 1024   /* the --workers bound in config.c */

/* What a worker process knows about itself. */
typedef struct cluster_worker {
    uint32_t     index;       /* 0..N-1 within its generation (its socket, its CPU) */
    uint32_t     generation;  /* 1 for the start-up configuration, +1 per reload */
    bool         supervised;  /* false when serving in-process (no supervisor) */
    shm_worker  *slot;        /* this process's row of the shared table */
    shm_workers *table;       /* every worker's row, readable by all */
    int          notify_fd;   /* eventfd to the supervisor; -1 in-process */
} cluster_worker;

/* What runs under the supervisor. */
typedef struct cluster_ops {
    const char *name;   /* "serve", "balance": for log lines */
    /* Runs in the worker process, after fork, --pin and the privilege drop.
     * It serves on listen_fd (owned from here; -1 never happens) with cfg
     * (valid until it returns) and returns the process exit status. It must
     * call cluster_worker_ready() once accepting; drain on SIGTERM/SIGINT
     * (calling cluster_worker_draining()) and return 0 when done, bounded
     * by cfg->shutdown_timeout; stop at once on SIGQUIT or a second SIGINT;
     * reopen the log (cluster_log_open) on SIGUSR1; ignore SIGHUP (the
     * supervisor reloads). In a forked worker those five signals start
     * blocked, so none is lost before loop_signal_add takes them; every
     * other signal is unblocked. */
    int (*worker_main)(void *arg, const config *cfg, int listen_fd, cluster_worker *self);
    /* Supervisor, on SIGHUP: loads the configuration again into *out.
     * Returns 0, or -1 with a one-line reason in err. May be NULL (then
     * SIGHUP only restarts the workers with the same configuration). */
    int (*reload)(void *arg, config *out, char *err, size_t errlen);
    /* Supervisor (or the single in-process worker), once, after the
     * listening sockets and the shared worker table exist and before any
     * worker starts: makes what every worker must inherit (shared-memory
     * caches, the local message bus). `slots` is the number of rows of the
     * worker table. Returns 0, or -1 with a one-line reason in err, which
     * stops the service. Its results outlive reloads: a reload keeps them
     * even if the new configuration asks for other sizes. May be NULL. */
    int (*prefork)(void *arg, const config *cfg, uint32_t slots, char *err, size_t errlen);
} cluster_ops;

/* Runs the service described by cfg until it is stopped. Returns the exit
 * status of the process: 0 after a clean stop, 1 after a failure (bind,
 * crash loop), 2 for a bad setting (unknown --user). In a worker process it
 * returns worker_main's status: the caller just returns it from main. */
int cluster_run(const config *cfg, const cluster_ops *ops, void *arg);

/* Worker: now accepting (marks the row SERVING and wakes the supervisor). */
void cluster_worker_ready(cluster_worker *self);
/* Worker: it started draining on its own (a signal sent to it directly);
 * the supervisor starts its successor. */
void cluster_worker_draining(cluster_worker *self);
/* Worker: publishes its counters to its row (call about once a second and
 * before exiting). */
void cluster_worker_publish(cluster_worker *self, uint64_t requests, uint64_t accepted,
                            uint32_t connections);

/* The shared worker table of this service: set once, before any worker
 * starts; NULL before cluster_run. For readers such as /metrics. */
shm_workers *cluster_workers(void);

/* Opens path for appending (created 0640) and makes it the process's
 * stderr, where the log goes. 0 or -errno (stderr is then unchanged). */
int cluster_log_open(const char *path);

/* The worker count cfg asks for: cfg->workers, or one per CPU this process
 * may run on for "auto" (0). */
uint32_t cluster_worker_count(const config *cfg);

#endif
