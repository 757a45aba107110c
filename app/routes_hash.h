/* routes_hash — the reference service's CPU-heavy routes (app/hash.c). */
#ifndef MYRIAD_APP_ROUTES_HASH_H
#define MYRIAD_APP_ROUTES_HASH_H

#include <stdbool.h>

#include <myriad.h>

/* Registers POST /hash and POST /verify, and with test_routes the
 * /test/block and /test/offload routes the end-to-end tests drive.
 * Initialises libsodium (call before myr_main: before any thread starts).
 * Aborts on a start-up error. */
void hash_routes(myr_app *app, bool test_routes);

#endif
