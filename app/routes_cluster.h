/* routes_cluster — test-only routes for the cluster's end-to-end tests
 * (app/cluster_test.c). */
#ifndef MYRIAD_APP_ROUTES_CLUSTER_H
#define MYRIAD_APP_ROUTES_CLUSTER_H

#include <stdbool.h>

#include <myriad.h>

/* With test_routes, registers GET /test/pid (the worker's process id) and
 * GET /test/grow?mb=N (allocates and touches N MiB, at most 1024, and keeps
 * them: makes the worker grow past --max-worker-memory). */
void cluster_test_routes(myr_app *app, bool test_routes);

#endif
