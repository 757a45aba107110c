/* offload — the thread pool as a worker's HTTP server sees it.
 *
 * Each http_server (one per worker loop) owns the objects of this layer:
 * its pool (--threads, --offload-queue, --pool-nice, --pool-sched; threads start on the
 * first job), its loop-lag monitor and its stall watchdog (--stall-warn).
 * offload_server_init/fini create and destroy them with the server; the
 * public myr_offload() (myriad.h) runs a handler's work on the pool and its
 * completion back on the loop, tied to the request's lifetime:
 *
 *   myr_offload ── queued ── running ── done(req, arg) on the loop
 *        │            │          └─ client gone: done still runs, with
 *        │            │             myr_req_cancelled(req) true; the answer
 *        │            │             is dropped
 *        │            └─ client gone: work skipped, done runs, cancelled
 *        └─ queue full: 503 + Retry-After answered here, -EAGAIN
 */
#ifndef MYR_PROC_OFFLOAD_H
#define MYR_PROC_OFFLOAD_H

#include <stddef.h>

typedef struct http_server http_server;
typedef struct config config;

/* Checks the pool settings that the option table cannot (--pool-sched's
 * name), so a bad value stops the service at start-up with a clear error
 * rather than in each worker. 0, or -1 with err filled. */
int  offload_check_config(const config *cfg, char *err, size_t errlen);

/* Creates s->pool, s->lag and s->watchdog from s->cfg (the watchdog only
 * when --stall-warn is set; failing to start it is logged, not fatal).
 * Loop thread. 0, -ENOMEM, or -EINVAL for a bad --pool-sched (logged). */
int  offload_server_init(http_server *s);
/* Destroys them. Call after the server's connections are closed: pending
 * offloads then complete (cancelled) before this returns. */
void offload_server_fini(http_server *s);

#endif
