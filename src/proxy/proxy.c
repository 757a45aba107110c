/* proxy — `myriad balance`: the command line, checks, and the hand-over to
 * the supervisor. See proxy.h.
 */
#include "proxy/proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/net.h"
#include "myriad.h"
#include "proc/cluster.h"
#include "proxy/backend.h"
#include "proxy/balancer.h"
#include "proxy/lb.h"
#include "proxy/shared.h"

#define ADMIN_BACKLOG 128

/* --listen HOST:PORT overrides --host and --port. */
static int parse_listen(config *cfg, char *err, size_t errlen)
{
    if (!cfg->listen[0])
        return 0;
    char host[sizeof(cfg->host)];
    int port;
    uint32_t weight;
    size_t len = strlen(cfg->listen);
    if (memchr(cfg->listen, ',', len) ||
        backend_parse(cfg->listen, len, host, sizeof(host), &port, &weight, err, errlen) < 0) {
        snprintf(err, errlen, "--listen: invalid value '%s': expected HOST:PORT", cfg->listen);
        return -EINVAL;
    }
    strcpy(cfg->host, host);
    cfg->port = port;
    return 0;
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

/* A request-target we can put in a request line: origin-form, visible ASCII. */
static bool is_path(const char *s)
{
    if (*s != '/')
        return false;
    for (; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f || *s == '#')
            return false;
    return true;
}

int proxy_config_check(config *cfg, char *err, size_t errlen)
{
    if (parse_listen(cfg, err, errlen) < 0)
        return -EINVAL;
    if (!lb_find(cfg->policy)) {
        snprintf(err, errlen, "--policy: unknown policy '%s' (choose from %s)", cfg->policy,
                 lb_names());
        return -EINVAL;
    }
    if (strcmp(cfg->hash_key, "client") && strcmp(cfg->hash_key, "path") &&
        !(strncmp(cfg->hash_key, "header:", 7) == 0 && is_token(cfg->hash_key + 7))) {
        snprintf(err, errlen, "--hash-key: invalid value '%s': expected client, path or "
                 "header:NAME", cfg->hash_key);
        return -EINVAL;
    }
    if (cfg->hash_balance_factor && cfg->hash_balance_factor < 100) {
        snprintf(err, errlen, "--hash-balance-factor: invalid value '%u': expected 0 or a "
                 "percentage of at least 100", cfg->hash_balance_factor);
        return -EINVAL;
    }
    if (cfg->health_path[0] && !is_path(cfg->health_path)) {
        snprintf(err, errlen, "--health-path: invalid value '%s': expected a path such as "
                 "/healthz", cfg->health_path);
        return -EINVAL;
    }
    if (cfg->admin_port && cfg->admin_port == cfg->port) {
        snprintf(err, errlen, "--admin-port: %d is also the listening port", cfg->admin_port);
        return -EINVAL;
    }
    return backend_list_check(cfg, err, errlen);
}

static int balance_reload(void *arg, config *out, char *err, size_t errlen)
{
    balance_ctx *ctx = arg;
    switch (config_load(out, ctx->argc, ctx->argv, ctx->first, err, errlen)) {
    case CONFIG_OK:
        return proxy_config_check(out, err, errlen) < 0 ? -1 : 0;
    case CONFIG_ERROR:
        return -1;
    default:   /* --help/--version cannot appear: the same argv started us */
        snprintf(err, errlen, "unexpected --help or --version");
        return -1;
    }
}

static const cluster_ops balance_ops = {
    .name = "balance",
    .worker_main = balancer_main,
    .reload = balance_reload,
};

static void usage(const char *prog)
{
    printf("myriad balance: an HTTP/1.1 load balancer. Its own settings are marked\n"
           "'balance:'; the others (limits, timeouts, workers, logging) apply as they do\n"
           "to serve.\n\n");
    fflush(stdout);
    config_usage_cmd(1, prog, "balance --backend HOST:PORT[,weight=W] [--backend ...]");
}

int proxy_main(int argc, char **argv, int first)
{
    const char *prog = argc > 0 ? argv[0] : "myriad";
    char err[512];
    config *cfg = malloc(sizeof(*cfg));
    if (!cfg) {
        fprintf(stderr, "myriad balance: out of memory\n");
        return 1;
    }
    int status = 2;
    switch (config_load(cfg, argc, argv, first, err, sizeof(err))) {
    case CONFIG_HELP:
        usage(prog);
        status = 0;
        goto free_cfg;
    case CONFIG_VERSION:
        printf("myriad %s\n", MYR_VERSION_STRING);
        status = 0;
        goto free_cfg;
    case CONFIG_ERROR:
        fprintf(stderr, "myriad balance: %s\n", err);
        goto free_cfg;
    case CONFIG_OK:
        break;
    }
    if (proxy_config_check(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "myriad balance: %s\n", err);
        goto free_cfg;
    }
    status = 1;
    balance_ctx ctx = { .argc = argc, .argv = argv, .first = first, .admin_fd = -1 };
    ctx.shared = shared_create(cluster_worker_count(cfg));
    if (!ctx.shared) {
        fprintf(stderr, "myriad balance: cannot map shared memory: %s\n", strerror(errno));
        goto free_cfg;
    }
    if (cfg->admin_port) {
        const char *step = NULL;
        ctx.admin_fd = net_listen(cfg->admin_host, cfg->admin_port, ADMIN_BACKLOG, false,
                                  &step);
        if (ctx.admin_fd < 0) {
            fprintf(stderr, "myriad balance: cannot listen on admin port %s:%d: %s: %s\n",
                    cfg->admin_host, cfg->admin_port, step, strerror(-ctx.admin_fd));
            goto unmap;
        }
    }
    status = cluster_run(cfg, &balance_ops, &ctx);
    if (ctx.admin_fd >= 0)
        close(ctx.admin_fd);
unmap:
    shared_destroy(ctx.shared);
free_cfg:
    free(cfg);
    return status;
}
