/* ws_echo — GET /ws/echo: every text or binary message comes back
 * unchanged, as one message of the same type (fragments joined). It is
 * the endpoint WebSocket conformance suites drive: the server's own
 * protocol handling (pings, close, UTF-8, size limits, permessage-deflate)
 * is all there is to judge. A client that reads slower than it sends
 * fills its send queue past --ws-max-queue and is closed with 1008.
 */
#include <stdio.h>
#include <stdlib.h>

#include "routes_ws.h"

static void echo_message(myr_ws *ws, const void *data, size_t len, bool binary)
{
    myr_ws_send(ws, data, len, binary);   /* -ENOBUFS: closing with 1008 */
}

void ws_echo_routes(myr_app *app)
{
    static const myr_ws_callbacks echo = {
        .on_message = echo_message,
        .overflow = MYR_WS_DISCONNECT,
    };
    if (myr_ws_route(app, "/ws/echo", &echo)) {
        fprintf(stderr, "myriad: cannot register /ws/echo\n");
        abort();
    }
}
