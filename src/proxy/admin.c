/* admin — see admin.h. */
#include "proxy/admin.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "myriad.h"
#include "proxy/backend.h"
#include "proxy/balancer.h"
#include "proxy/metrics.h"
#include "proxy/shared.h"

/* Process-wide, set once by admin_init before the server accepts. */
static balancer *admin_bal;

static void get_metrics(myr_req *req)
{
    buf out = { 0 };
    balancer_publish(admin_bal);   /* this worker's row, current */
    if (metrics_render(admin_bal, &out) < 0) {
        buf_free(&out);
        myr_respond_str(req, 503, "text/plain", "out of memory\n");
        return;
    }
    myr_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
    buf_free(&out);
}

static void get_backends(myr_req *req)
{
    balancer *b = admin_bal;
    buf out = { 0 };
    uint64_t now = loop_now(b->loop);
    for (uint32_t i = 0; i < b->nbackends; i++) {
        const backend *be = b->backends[i];
        char line[512];
        int n = snprintf(line, sizeof(line),
                         "%s weight=%u %s%s effective=%u active=%u idle=%u conns=%u\n",
                         be->name, be->weight, be->up ? "up" : "down",
                         be->draining ? " draining" : "",
                         backend_eff_weight(be, now) / LB_WEIGHT_SCALE, be->active, be->nidle,
                         be->nconns);
        if (n < 0 || buf_append(&out, line, (size_t)n) < 0) {
            buf_free(&out);
            myr_respond_str(req, 503, "text/plain", "out of memory\n");
            return;
        }
    }
    myr_respond(req, 200, "text/plain", out.data ? out.data : "", out.len);
    buf_free(&out);
}

static void set_drain(myr_req *req, bool on)
{
    myr_str name = myr_param(req, "name");
    backend *be = backend_find(admin_bal, name.ptr, name.len);
    if (!be) {
        myr_respond_str(req, 404, "text/plain", "no such backend\n");
        return;
    }
    backend_admin_drain(be, on);
    char msg[320];
    int n = snprintf(msg, sizeof(msg), "%s %s\n", be->name, on ? "draining" : "ready");
    myr_respond(req, 200, "text/plain", msg, (size_t)n);
}

static void post_drain(myr_req *req)
{
    set_drain(req, true);
}

static void post_ready(myr_req *req)
{
    set_drain(req, false);
}

int admin_init(balancer *b, int fd)
{
    if (fd < 0) {
        log_error("admin port: %s", strerror(errno));
        return -errno;
    }
    admin_bal = b;
    b->admin_app = myr_app_new();
    myr_get(b->admin_app, "/metrics", get_metrics);
    myr_get(b->admin_app, "/backends", get_backends);
    myr_post(b->admin_app, "/backends/:name/drain", post_drain);
    myr_post(b->admin_app, "/backends/:name/ready", post_ready);
    /* serve's observability layer (src/obs) reads these too: with them
     * set it would bind the admin port again and answer /metrics itself */
    b->admin_cfg = *b->cfg;
    b->admin_cfg.admin_port = 0;
    b->admin_cfg.metrics_path[0] = '\0';
    int rc = http_server_init(&b->admin, b->loop, &b->admin_cfg, b->admin_app, fd);
    if (rc < 0) {
        log_error("admin port: cannot serve: %s", strerror(-rc));
        close(fd);
        myr_app_free(b->admin_app);
        b->admin_app = NULL;
        return rc;
    }
    b->admin_on = true;
    return 0;
}

void admin_fini(balancer *b)
{
    http_server_fini(&b->admin);
    myr_app_free(b->admin_app);
    b->admin_app = NULL;
    b->admin_on = false;
}
