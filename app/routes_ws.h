/* routes_ws — the reference service's WebSocket routes (app/ws_echo.c). */
#ifndef MYRIAD_APP_ROUTES_WS_H
#define MYRIAD_APP_ROUTES_WS_H

#include <myriad.h>

/* Registers GET /ws/echo. Aborts on a registration error (start-up). */
void ws_echo_routes(myr_app *app);

#endif
