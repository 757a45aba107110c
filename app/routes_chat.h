/* routes_chat — the reference chat service (app/chat.c): WebSocket rooms
 * over myriad's pub/sub, across workers and machines. */
#ifndef MYRIAD_APP_ROUTES_CHAT_H
#define MYRIAD_APP_ROUTES_CHAT_H

#include <myriad.h>

/* Registers GET /ws/chat, GET /rooms and POST /rooms/:room/messages.
 * Aborts on a registration error (start-up). */
void chat_routes(myr_app *app);

#endif
