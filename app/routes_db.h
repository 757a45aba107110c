/* routes_db — the reference service's database routes (app/tfb_db.c). */
#ifndef MYRIAD_APP_ROUTES_DB_H
#define MYRIAD_APP_ROUTES_DB_H

#include <myriad.h>

/* Registers the TechEmpower database endpoints (/db, /queries, /fortunes,
 * /updates), their statements and the reference schema; with test_routes,
 * also the /test/db/... routes the end-to-end tests drive. Aborts on a
 * registration error (start-up). */
void tfb_db_routes(myr_app *app, bool test_routes);

#endif
