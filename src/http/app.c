/* app — route registration and dispatch (myr_app_*, myr_route). */
#include "http/app.h"

#include <stdio.h>
#include <stdlib.h>

#include "data/db.h"
#include "http/request.h"
#include "http/server.h"
#include "obs/obs.h"
#include "proc/overload.h"
#include "proc/watchdog.h"

myr_app *myr_app_new(void)
{
    myr_app *app = calloc(1, sizeof(*app));
    if (app)
        app->routes = router_new();
    if (!app || !app->routes) {
        fprintf(stderr, "myriad: out of memory creating the app\n");
        abort();   /* start-up: no way to go on */
    }
    return app;
}

void myr_app_free(myr_app *app)
{
    if (!app)
        return;
    router_free(app->routes);
    db_registry_free(app->db);
    free(app);
}

int myr_route(myr_app *app, const char *method, const char *pattern, myr_handler h)
{
    return router_add(app->routes, method, pattern, (void *)h);
}

void req_dispatch(myr_req *r)
{
    myr_app *app = r->srv->app;
    r->state = REQ_HANDLING;
    if (obs_dispatch(r))   /* /metrics, /metrics.json, /dashboard, the admin port */
        return;
    if (overload_shed(r))   /* 503 before any handler (proc/overload.c) */
        return;
    int rc = router_find(app->routes, r->h.method, r->h.method_len, r->h.path, r->h.path_len,
                         &r->match);
    if (rc == 0) {
        myr_handler h = (myr_handler)r->match.handler;
        watchdog *wd = r->srv->watchdog;   /* names the handler in stall reports */
        watchdog_enter(wd, r->h.method, r->h.method_len, r->h.path, r->h.path_len);
        h(r);
        watchdog_leave(wd);
        return;
    }
    if (rc == -405) {
        char allow[256];
        router_allow(app->routes, r->h.path, r->h.path_len, allow, sizeof(allow));
        myr_set_header(r, "Allow", allow);
    }
    req_respond_error(r, rc == -405 ? 405 : 404);
}
