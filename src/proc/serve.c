/* serve — myr_main: the command line of a myriad service. Parses the
 * command and the configuration, then hands over to the supervisor
 * (cluster_run), which binds, forks the workers and keeps them running —
 * or, with one worker, serves in-process.
 */
#include <stdio.h>
#include <string.h>

#include "myriad.h"
#include "core/config.h"
#include "proc/cluster.h"
#include "proc/worker.h"
#include "proxy/proxy.h"

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

static const cluster_ops serve_ops = {
    .name = "serve",
    .worker_main = serve_worker,
    .reload = serve_reload,
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
