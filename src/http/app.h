/* app — the myr_app object: the routes of a service and how a request is
 * dispatched to them. Built before serving, read-only after (workers share
 * it after fork).
 */
#ifndef MYR_HTTP_APP_H
#define MYR_HTTP_APP_H

#include "myriad.h"
#include "http/router.h"

struct db_registry;

struct myr_app {
    router *routes;
    struct db_registry *db;   /* data layer: statements and migrations, NULL if none */
};

#endif
