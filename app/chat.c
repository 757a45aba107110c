/* chat — the reference real-time endpoint: chat rooms on myriad's pub/sub.
 * Every text message a client sends is broadcast to every client in the
 * same room, on any worker of any machine (instances sharing a Redis).
 *
 * Protocol (also what bench/ clients speak):
 *
 *   GET /ws/chat?room=NAME[&policy=disconnect|drop_oldest|coalesce]
 *     NAME: 1-64 bytes of [A-Za-z0-9_.-] (else 400, as for a bad policy).
 *     policy: what happens when this client reads slower than the room
 *     talks and its send queue passes --ws-max-queue: closed with 1008
 *     (disconnect, the default), its oldest queued messages dropped
 *     (drop_oldest), or only the newest kept (coalesce).
 *
 *   server -> client, first:
 *     {"type":"welcome","room":"NAME","id":"ID"}
 *   client -> server: any text message (binary: closed with 1003; over
 *     64 KiB: closed with 1009). server -> every client of the room,
 *     the sender included, in the order each sender sent:
 *     {"type":"message","room":"NAME","from":"ID","text":"TEXT","ts":US}
 *   ID    the sender's connection, unique across workers and machines:
 *         "INSTANCE-SLOT-N" (16 hex digits of the machine instance, the
 *         worker slot, a counter), see myr_unique_id
 *   TEXT  the message as sent, JSON-escaped
 *   US    server time when the message was published: microseconds
 *         since the Unix epoch (an integer)
 *
 *   GET /rooms
 *     200 [{"room":"NAME","subscribers":N}, ...] sorted by name: rooms with
 *     clients connected to this machine, N summed over its workers.
 *
 *   POST /rooms/:room/messages   body: the text (UTF-8)
 *     broadcasts the body like a client message, "from" a fresh ID;
 *     200 {"published":true}, 400 for a bad room, 413 beyond 64 KiB.
 *
 * A room NAME is the pub/sub topic "chat:NAME".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "routes_chat.h"

#define ROOM_MAX    64
#define TEXT_MAX    (64u * 1024)   /* bytes of one chat message */
#define TOPIC_PREFIX "chat:"
#define PREFIX_LEN  (sizeof(TOPIC_PREFIX) - 1)

/* One client connection, sized to fit (idle connections are most of them):
 * its id, NUL-terminated, then its room. */
typedef struct chat_conn {
    uint8_t room_len;
    char    text[];     /* id '\0' room */
} chat_conn;

static const char *conn_id(const chat_conn *c) { return c->text; }
static const char *conn_room(const chat_conn *c) { return c->text + strlen(c->text) + 1; }

/* "chat:" + room into out (PREFIX_LEN + ROOM_MAX bytes); returns its length. */
static size_t topic_of(const char *room, size_t len, char *out)
{
    memcpy(out, TOPIC_PREFIX, PREFIX_LEN);
    memcpy(out + PREFIX_LEN, room, len);
    return PREFIX_LEN + len;
}

static bool room_ok(myr_str room)
{
    if (!room.ptr || room.len == 0 || room.len > ROOM_MAX)
        return false;
    for (size_t i = 0; i < room.len; i++) {
        char c = room.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* The policy query parameter; false when it names none. */
static bool policy_of(myr_req *req, myr_ws_overflow *out)
{
    myr_str p = myr_query_param(req, "policy");
    *out = MYR_WS_DISCONNECT;
    if (!p.ptr || (p.len == 10 && !memcmp(p.ptr, "disconnect", 10)))
        return true;
    if (p.len == 11 && !memcmp(p.ptr, "drop_oldest", 11))
        *out = MYR_WS_DROP_OLDEST;
    else if (p.len == 8 && !memcmp(p.ptr, "coalesce", 8))
        *out = MYR_WS_COALESCE;
    else
        return false;
    return true;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Publishes one chat message of `from` to the room of topic. */
static int broadcast(myr_pubsub *ps, const char *topic, size_t topic_len, const char *from,
                     const char *text, size_t len)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_obj_begin(&w);
    myr_json_key(&w, "type");
    myr_json_str(&w, "message");
    myr_json_key(&w, "room");
    myr_json_strn(&w, topic + PREFIX_LEN, topic_len - PREFIX_LEN);
    myr_json_key(&w, "from");
    myr_json_str(&w, from);
    myr_json_key(&w, "text");
    myr_json_strn(&w, text, len);
    myr_json_key(&w, "ts");
    myr_json_int(&w, now_us());
    myr_json_obj_end(&w);
    int rc = myr_json_error(&w);
    if (rc == 0)
        rc = myr_publish(ps, topic, topic_len, w.data, w.len, false);
    myr_json_free(&w);
    return rc;
}

/* ---- GET /ws/chat ---------------------------------------------------------------------- */

static int chat_upgrade(myr_req *req)
{
    myr_ws_overflow policy;
    return room_ok(myr_query_param(req, "room")) && policy_of(req, &policy) ? 0 : 400;
}

static void chat_open(myr_ws *ws, myr_req *req)
{
    myr_str room = myr_query_param(req, "room");   /* checked by chat_upgrade */
    myr_ws_overflow policy;
    policy_of(req, &policy);
    char id[MYR_ID_MAX], topic[PREFIX_LEN + ROOM_MAX];
    size_t idlen = myr_unique_id(myr_ws_pubsub(ws), id);
    chat_conn *c = malloc(sizeof(*c) + idlen + 1 + room.len);
    if (!c || idlen == 0) {
        free(c);
        myr_ws_close(ws, 1011, "out of memory");
        return;
    }
    c->room_len = (uint8_t)room.len;
    memcpy(c->text, id, idlen + 1);
    memcpy(c->text + idlen + 1, room.ptr, room.len);
    myr_ws_set_data(ws, c);
    if (myr_ws_subscribe(ws, topic, topic_of(room.ptr, room.len, topic), policy) < 0) {
        myr_ws_close(ws, 1011, "cannot join the room");
        return;
    }
    char hello[64 + ROOM_MAX + MYR_ID_MAX];
    int n = snprintf(hello, sizeof(hello), "{\"type\":\"welcome\",\"room\":\"%.*s\",\"id\":\"%s\"}",
                     (int)room.len, room.ptr, id);
    myr_ws_send(ws, hello, (size_t)n, false);
}

static void chat_message(myr_ws *ws, const void *data, size_t len, bool binary)
{
    chat_conn *c = myr_ws_data(ws);
    if (!c)
        return;
    if (binary) {
        myr_ws_close(ws, 1003, "text messages only");
        return;
    }
    char topic[PREFIX_LEN + ROOM_MAX];
    size_t tlen = topic_of(conn_room(c), c->room_len, topic);
    int rc = broadcast(myr_ws_pubsub(ws), topic, tlen, conn_id(c), data, len);
    if (rc == -EMSGSIZE)
        myr_ws_close(ws, 1009, "message too big for the bus");
    else if (rc < 0)
        myr_ws_close(ws, 1011, "cannot publish");
}

static void chat_close(myr_ws *ws, int code)
{
    free(myr_ws_data(ws));
    myr_ws_set_data(ws, NULL);
}

/* ---- GET /rooms, POST /rooms/:room/messages -------------------------------------------- */

static void rooms(myr_req *req)
{
    const myr_topic_count *t;
    size_t n;
    if (myr_topics(req, &t, &n) < 0) {
        myr_respond_str(req, 503, "text/plain", "out of memory\n");
        return;
    }
    myr_json w;
    myr_json_init(&w);
    myr_json_arr_begin(&w);
    for (size_t i = 0; i < n; i++) {
        if (t[i].topic.len <= PREFIX_LEN || memcmp(t[i].topic.ptr, TOPIC_PREFIX, PREFIX_LEN))
            continue;
        myr_json_obj_begin(&w);
        myr_json_key(&w, "room");
        myr_json_strn(&w, t[i].topic.ptr + PREFIX_LEN, t[i].topic.len - PREFIX_LEN);
        myr_json_key(&w, "subscribers");
        myr_json_uint(&w, t[i].subscribers);
        myr_json_obj_end(&w);
    }
    myr_json_arr_end(&w);
    myr_respond_json(req, 200, &w);
}

static void post_message(myr_req *req)
{
    myr_str room = myr_param(req, "room"), body = myr_body(req);
    if (!room_ok(room)) {
        myr_respond_str(req, 400, "text/plain", "bad room name\n");
        return;
    }
    if (body.len > TEXT_MAX) {
        myr_respond_str(req, 413, "text/plain", "message too long\n");
        return;
    }
    char topic[PREFIX_LEN + ROOM_MAX], id[MYR_ID_MAX];
    size_t tlen = topic_of(room.ptr, room.len, topic);
    myr_pubsub *ps = myr_req_pubsub(req);
    myr_unique_id(ps, id);
    int rc = broadcast(ps, topic, tlen, id, body.ptr ? body.ptr : "", body.len);
    if (rc == -EMSGSIZE)
        myr_respond_str(req, 413, "text/plain", "message too big for the bus\n");
    else if (rc < 0)
        myr_respond_str(req, 503, "text/plain", "cannot publish\n");
    else
        myr_respond_str(req, 200, "application/json", "{\"published\":true}");
}

void chat_routes(myr_app *app)
{
    static const myr_ws_callbacks chat = {
        .on_upgrade = chat_upgrade,
        .on_open = chat_open,
        .on_message = chat_message,
        .on_close = chat_close,
        .max_message = TEXT_MAX,
        .overflow = MYR_WS_DISCONNECT,   /* replies of the server's own (the welcome) */
    };
    if (myr_ws_route(app, "/ws/chat", &chat) || myr_get(app, "/rooms", rooms) ||
        myr_post(app, "/rooms/:room/messages", post_message)) {
        fprintf(stderr, "myriad: cannot register the chat routes\n");
        abort();
    }
}
