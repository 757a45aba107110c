/* serve — myr_main: the command line of a myriad service. Parses the
 * configuration, binds the listening socket, and runs the worker(s).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "myriad.h"
#include "core/config.h"
#include "core/log.h"
#include "core/net.h"
#include "proc/worker.h"

static int serve(myr_app *app, const config *cfg)
{
    if (cfg->workers != 1) {
        fprintf(stderr, "myriad: --workers: only 1 worker is supported in this build\n");
        return 2;
    }
    const char *step = NULL;
    int fd = net_listen(cfg->host, cfg->port, cfg->backlog, true, &step);
    if (fd < 0) {
        fprintf(stderr, "myriad: cannot listen on %s:%d: %s: %s\n", cfg->host, cfg->port,
                step, strerror(-fd));
        return 1;
    }
    log_info("listening on http://%s:%d (pid %d)", cfg->host, net_local_port(fd), (int)getpid());
    return worker_run(app, cfg, fd);
}

int myr_main(myr_app *app, int argc, char **argv)
{
    const char *prog = argc > 0 ? argv[0] : "myriad";
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        if (strcmp(argv[1], "serve") != 0) {
            fprintf(stderr, "myriad: unknown command '%s' (commands: serve)\n", argv[1]);
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
    return serve(app, &cfg);
}
