/* setting — myr_setting: a handler reads a string setting of the worker's
 * configuration (flags, environment, config file; core/config.c). */
#include "myriad.h"
#include "core/config.h"
#include "http/request.h"
#include "http/server.h"

const char *myr_setting(const myr_req *req, const char *name)
{
    return config_string(req->srv->cfg, name);
}
