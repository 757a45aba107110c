/* worker — see worker.h. */
#include "proc/worker.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

#include "core/log.h"
#include "core/loop.h"
#include "http/server.h"

typedef struct worker {
    loop        *loop;
    http_server  server;
    loop_signal  sigterm, sigint, sigquit;
    bool         stopping;
} worker;

static void on_drained(http_server *s)
{
    log_info("stopped: all connections closed");
    loop_stop(s->loop);
}

static void on_stop_signal(loop_signal *sig, int signo)
{
    worker *w = signo == SIGTERM ? container_of(sig, worker, sigterm)
              : signo == SIGINT  ? container_of(sig, worker, sigint)
                                 : container_of(sig, worker, sigquit);
    if (w->stopping || signo == SIGQUIT) {
        log_info("stopping now (signal %d)", signo);
        loop_stop(w->loop);
        return;
    }
    w->stopping = true;
    log_info("stopping gracefully (signal %d): %u connections open", signo, w->server.nconns);
    http_server_drain(&w->server, on_drained);
}

int worker_run(struct myr_app *app, const config *cfg, int listen_fd)
{
    worker w;
    memset(&w, 0, sizeof(w));
    signal(SIGPIPE, SIG_IGN);
    w.loop = loop_new();
    if (!w.loop) {
        log_error("cannot create the event loop: %s", strerror(errno));
        return 1;
    }
    int rc = http_server_init(&w.server, w.loop, cfg, app, listen_fd);
    if (rc < 0) {
        log_error("cannot start serving: %s", strerror(-rc));
        loop_free(w.loop);
        return 1;
    }
    loop_signal_add(w.loop, &w.sigterm, SIGTERM, on_stop_signal);
    loop_signal_add(w.loop, &w.sigint, SIGINT, on_stop_signal);
    loop_signal_add(w.loop, &w.sigquit, SIGQUIT, on_stop_signal);
    rc = loop_run(w.loop);
    http_server_fini(&w.server);
    loop_signal_del(w.loop, &w.sigterm);
    loop_signal_del(w.loop, &w.sigint);
    loop_signal_del(w.loop, &w.sigquit);
    loop_free(w.loop);
    return rc < 0 ? 1 : 0;
}
