/* overload — see overload.h. */
#include "proc/overload.h"

#include <stdio.h>

#include "http/request.h"
#include "http/server.h"
#include "proc/lag.h"
#include "proc/pool.h"

/* The pressures that shed requests; cheap enough for every dispatch. */
static const char *shed_reason(const http_server *s)
{
    uint64_t max_lag_ms = s->cfg->max_loop_lag;
    if (max_lag_ms && lag_window_us(s->lag) > max_lag_ms * 1000)
        return "loop lag";
    if (pool_is_full(s->pool))
        return "offload queue full";
    return NULL;
}

const char *overload_reason(const http_server *s)
{
    const char *why = shed_reason(s);
    if (!why && s->nconns + s->upgraded >= s->cfg->max_connections)
        why = "connection limit";
    return why;
}

bool overload_shed(myr_req *r)
{
    const char *why = shed_reason(r->srv);
    if (!why)
        return false;
    char body[64];
    snprintf(body, sizeof(body), "overloaded: %s\n", why);
    r->srv->shed++;
    myr_set_header(r, "Retry-After", "1");
    myr_respond_str(r, 503, "text/plain", body);
    return true;
}

const char *myr_overload_reason(const myr_req *req) { return overload_reason(req->srv); }
