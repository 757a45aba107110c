/* serve — myr_main: the command line of a myriad service. Parses the
 * command and the configuration, then hands over to the supervisor
 * (cluster_run), which binds, forks the workers and keeps them running —
 * or, with one worker, serves in-process.
 */
#include <stdio.h>
#include <string.h>

#include "myriad.h"
#include "cache/cache.h"
#include "core/config.h"
#include "data/db.h"
#include "data/redis.h"
#include "proc/cluster.h"
#include "proc/offload.h"
#include "proc/worker.h"
#include "proxy/proxy.h"
#include "rt/pubsub.h"

/* What `serve` gives the supervisor: the app for the workers, and the
 * command line to read the configuration again on SIGHUP. */
typedef struct serve_ctx {
    myr_app *app;
    int      argc;
    char   **argv;
    int      first;   /* argv index of the first flag */
} serve_ctx;

static int serve_worker(void *arg, const config *cfg, int listen_fd, cluster_worker *self)
{
    serve_ctx *ctx = arg;
    return worker_run(ctx->app, cfg, listen_fd, self);
}

static int serve_reload(void *arg, config *out, char *err, size_t errlen)
{
    serve_ctx *ctx = arg;
    switch (config_load(out, ctx->argc, ctx->argv, ctx->first, err, errlen)) {
    case CONFIG_OK:
        return 0;
    case CONFIG_ERROR:
        return -1;
    default:   /* --help/--version cannot appear: the same argv started us */
        snprintf(err, errlen, "unexpected --help or --version");
        return -1;
    }
}

/* What the workers share, made once before the first fork (see
 * cluster_ops.prefork). Each module keeps what it made for the life of the
 * service; the workers inherit it. */
static int serve_prefork(void *arg, const config *cfg, uint32_t slots, char *err, size_t errlen)
{
    (void)arg;
    (void)cfg;
    (void)slots;
    (void)err;
    (void)errlen;
    if (offload_check_config(cfg, err, errlen) < 0)   /* --pool-sched */
        return -1;
    if (redis_config_check(cfg, err, errlen) < 0)   /* --redis / $REDIS_URL */
        return -1;
    if (db_prefork(((serve_ctx *)arg)->app, cfg, err, errlen) < 0)   /* SQLite migrations */
        return -1;
    if (cache_prefork(cfg, err, errlen) < 0)   /* the shared-memory L1 (src/cache) */
        return -1;
    if (pubsub_prefork(cfg, slots, err, errlen) < 0)   /* the local bus (src/rt) */
        return -1;
    return 0;
}

static const cluster_ops serve_ops = {
    .name = "serve",
    .worker_main = serve_worker,
    .reload = serve_reload,
    .prefork = serve_prefork,
};

int myr_main(myr_app *app, int argc, char **argv)
{
    const char *prog = argc > 0 ? argv[0] : "myriad";
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        if (strcmp(argv[1], "balance") == 0)   /* the load balancer (src/proxy) */
            return proxy_main(argc, argv, 2);
        if (strcmp(argv[1], "serve") != 0) {
            fprintf(stderr, "myriad: unknown command '%s' (commands: serve, balance)\n", argv[1]);
            return 2;
        }
        first = 2;
    }
    config cfg;
    char err[512];
    switch (config_load(&cfg, argc, argv, first, err, sizeof(err))) {
    case CONFIG_HELP:
        config_usage(1, prog);
        return 0;
    case CONFIG_VERSION:
        printf("myriad %s\n", MYR_VERSION_STRING);
        return 0;
    case CONFIG_ERROR:
        fprintf(stderr, "myriad: %s\n", err);
        return 2;
    case CONFIG_OK:
        break;
    }
    serve_ctx ctx = { .app = app, .argc = argc, .argv = argv, .first = first };
    return cluster_run(&cfg, &serve_ops, &ctx);
}
