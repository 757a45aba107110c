/* routes_cache — the reference service's cached endpoints (app/cache_routes.c). */
#ifndef MYRIAD_APP_ROUTES_CACHE_H
#define MYRIAD_APP_ROUTES_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include <myriad.h>

/* Registers GET /cached-queries?count=N and GET /world/:id (World rows
 * through myr_cached, filled by tfb_db's "world_by_id" statement); with
 * test_routes, also the /test/cache/... routes the end-to-end tests drive
 * (they use tfb_db's test table kv). Call after tfb_db_routes. */
void cache_routes(myr_app *app, bool test_routes);

/* The World row id changed in the database: drops its cached copy (L1,
 * L2, and through Redis every machine's L1). */
void cached_world_forget(myr_req *req, int64_t id);

#endif
