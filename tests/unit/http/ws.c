/* Unit tests for src/http/ws.c: the handshake helpers (key check, the RFC
 * 6455 accept example, the header rules that decide 101 / 400 / 426), and
 * the send queue — partial writes, the 101 pushed in front, pong
 * coalescing, and each overflow policy — on a connection that has a loop
 * but no socket.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "http/ws.c"

/* ---- handshake ------------------------------------------------------------------ */

static void test_key_and_accept(void **state)
{
    assert_true(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 24));
    assert_true(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAA==", 24));
    assert_true(ws_key_valid("/+/+/+/+/+/+/+/+/+/+/w==", 24));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=", 23));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ===", 25));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZR==", 24));  /* padding bits set */
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25j!Q==", 24));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQAA", 24));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25\0ZQ==", 24));
    char acc[29];
    ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, acc);
    assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");   /* RFC 6455 1.3 */
    char out[16];
    base64_encode((const uint8_t *)"f", 1, out);
    assert_string_equal(out, "Zg==");
    base64_encode((const uint8_t *)"fo", 2, out);
    assert_string_equal(out, "Zm8=");
    base64_encode((const uint8_t *)"foobar", 6, out);
    assert_string_equal(out, "Zm9vYmFy");
}

/* A parsed request with the given header lines ("Name: value"). */
static myr_req *mkreq(http_method m, int minor, const char *const *lines)
{
    size_t n = 0;
    while (lines[n])
        n++;
    myr_req *r = calloc(1, sizeof(*r) + (n + 1) * sizeof(http_header));
    r->h.headers = r->header_space;
    r->h.method_id = m;
    r->h.version_minor = (uint8_t)minor;
    r->h.host = "x";
    r->h.host_len = 1;
    for (size_t i = 0; i < n; i++) {
        const char *colon = strchr(lines[i], ':');
        http_header *h = &r->h.headers[r->h.num_headers++];
        h->name = lines[i];
        h->name_len = (uint32_t)(colon - lines[i]);
        h->value = colon + 2;
        h->value_len = (uint32_t)strlen(colon + 2);
        if (h->name_len == 10 && strncasecmp(h->name, "Connection", 10) == 0 &&
            strcasestr(h->value, "upgrade"))
            r->h.upgrade = true;
    }
    return r;
}

static int check(http_method m, int minor, const char *const *lines)
{
    myr_req *r = mkreq(m, minor, lines);
    int status = handshake_check(r);
    free(r);
    return status;
}

#define KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
#define VER "Sec-WebSocket-Version: 13"
#define UPG "Upgrade: websocket"
#define CON "Connection: Upgrade"

static void test_handshake_rules(void **state)
{
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ UPG, CON, KEY, VER, NULL }), 0);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ "Upgrade: WebSocket", "Connection: keep-alive, Upgrade", KEY, VER, NULL }), 0);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ "Upgrade: h2c, websocket", CON, KEY, VER, NULL }), 0);
    assert_int_equal(check(HTTP_POST, 1, (const char *[]){ UPG, CON, KEY, VER, NULL }), 400);
    assert_int_equal(check(HTTP_HEAD, 1, (const char *[]){ UPG, CON, KEY, VER, NULL }), 400);
    assert_int_equal(check(HTTP_GET, 0, (const char *[]){ UPG, CON, KEY, VER, NULL }), 400);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ CON, KEY, VER, NULL }), 426);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ "Upgrade: websocket2", CON, KEY, VER, NULL }), 426);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ UPG, "Connection: keep-alive", KEY, VER, NULL }), 400);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ UPG, CON, KEY, NULL }), 426);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ UPG, CON, KEY, "Sec-WebSocket-Version: 8", NULL }), 426);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ UPG, CON, KEY, "Sec-WebSocket-Version: 13, 8", NULL }), 426);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ UPG, CON, KEY, VER, VER, NULL }), 426);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ UPG, CON, VER, NULL }), 400);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ UPG, CON, KEY, KEY, VER, NULL }), 400);
    assert_int_equal(check(HTTP_GET, 1, (const char *[]){ UPG, CON, "Sec-WebSocket-Key: c2hvcnQ=", VER, NULL }), 400);
    myr_req *r = mkreq(HTTP_GET, 1, (const char *[]){ UPG, CON, KEY, VER, NULL });
    r->h.host = NULL;
    assert_int_equal(handshake_check(r), 400);
    r->h.host = "x";
    r->body_len = 3;
    assert_int_equal(handshake_check(r), 400);
    free(r);
}

static void test_negotiate_fields(void **state)
{
    config cfg;
    config_defaults(&cfg);
    ws_pmd p;
    myr_req *r = mkreq(HTTP_GET, 1, (const char *[]){
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8",
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover", NULL });
    negotiate(r, &cfg, &p);
    assert_true(p.enabled && p.server_no_takeover);
    cfg.ws_deflate = false;
    negotiate(r, &cfg, &p);
    assert_false(p.enabled);
    free(r);
    cfg.ws_deflate = true;
    r = mkreq(HTTP_GET, 1, (const char *[]){
        "Sec-WebSocket-Extensions: permessage-deflate",
        "Sec-WebSocket-Extensions: x; ;", NULL });   /* the second field is malformed */
    negotiate(r, &cfg, &p);
    assert_false(p.enabled);
    free(r);
}

/* ---- the send queue ------------------------------------------------------------- */

typedef struct fixture {
    config       cfg;
    http_server  srv;
    ws_server    wss;
    ws_route     route;
    myr_ws       ws;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    config_defaults(&f->cfg);
    f->srv.loop = loop_new();
    f->srv.cfg = &f->cfg;
    f->wss.srv = &f->srv;
    f->ws.wss = &f->wss;
    f->ws.route = &f->route;
    f->ws.io.fd = -1;
    f->ws.state = WS_OPEN;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    loop_timer_stop(f->srv.loop, &f->ws.timer);
    queue_free(&f->ws.q);
    loop_free(f->srv.loop);
    free(f);
    return 0;
}

static size_t queued_payloads(const ws_queue *q, char *out)
{
    size_t n = 0;
    for (uint32_t i = 0; i < q->count; i++) {
        const ws_msg *m = *queue_slot(q, i);
        size_t pl = msg_payload_len(m);
        memcpy(out + n, m->data + WS_MSG_HEADROOM, pl);
        n += pl;
        out[n++] = '|';
    }
    out[n] = '\0';
    return n;
}

static void test_queue_basics(void **state)
{
    fixture *f = *state;
    ws_queue *q = &f->ws.q;
    for (int i = 0; i < 20; i++) {   /* grows past the first ring */
        char p[8];
        int n = snprintf(p, sizeof(p), "m%d", i);
        assert_int_equal(myr_ws_send(&f->ws, p, (size_t)n, false), 0);
    }
    assert_int_equal(q->count, 20);
    assert_true(q->cap >= 20);
    size_t total = q->bytes;
    queue_advance(q, 3);   /* part of "m0": header (2) + 1 byte */
    assert_int_equal(q->off, 3);
    assert_int_equal(q->bytes, total - 3);
    queue_advance(q, 1 + 4);   /* the rest of m0, all of m1 */
    assert_int_equal(q->count, 18);
    assert_int_equal(q->off, 0);
    ws_msg *raw = ws_msg_new(WS_MSG_RAW, "HTTP/1.1 101", 12);
    assert_int_equal(queue_push_front(q, raw), 0);
    assert_ptr_equal(*queue_slot(q, 0), raw);
    assert_int_equal(q->bytes, total - 8 + 12);
}

static void test_pong_coalescing(void **state)
{
    fixture *f = *state;
    ws_queue *q = &f->ws.q;
    assert_int_equal(queue_control(&f->ws, WS_OP_PONG, "a", 1), 0);
    assert_int_equal(queue_control(&f->ws, WS_OP_PONG, "bb", 2), 0);
    assert_int_equal(q->count, 1);   /* the newer pong replaced the unsent one */
    assert_int_equal(q->bytes, 4);
    queue_advance(q, 1);   /* started: it must go out whole */
    assert_int_equal(queue_control(&f->ws, WS_OP_PONG, "c", 1), 0);
    assert_int_equal(q->count, 2);
    assert_int_equal(myr_ws_send(&f->ws, "d", 1, true), 0);
    assert_int_equal(queue_control(&f->ws, WS_OP_PONG, "e", 1), 0);
    assert_int_equal(q->count, 4);   /* a data frame in between: a new pong */
}

static void fill(fixture *f, int n, size_t size)
{
    char *p = malloc(size);
    for (int i = 0; i < n; i++) {
        memset(p, 'a' + i, size);
        assert_int_equal(myr_ws_send(&f->ws, p, size, true), 0);
    }
    free(p);
}

static void test_overflow_disconnect(void **state)
{
    fixture *f = *state;
    f->cfg.ws_max_queue = 1000;
    fill(f, 3, 300);                                   /* 3 x 304 bytes */
    assert_int_equal(myr_ws_send(&f->ws, "x", 1, true), 0);   /* 915 <= 1000 */
    char big[200] = { 0 };
    assert_int_equal(myr_ws_send(&f->ws, big, sizeof(big), true), -ENOBUFS);
    assert_int_equal(f->ws.state, WS_LINGER);
    /* the queued data was dropped; only the close frame (1008) waits */
    assert_int_equal(f->ws.q.count, 1);
    const ws_msg *c = *queue_slot(&f->ws.q, 0);
    assert_int_equal(c->opcode, WS_OP_CLOSE);
    assert_int_equal(c->len, 4);
    assert_int_equal(c->data[c->head + 2] << 8 | c->data[c->head + 3], 1008);
    assert_int_equal(myr_ws_send(&f->ws, "y", 1, true), -EPIPE);
    assert_int_equal(myr_ws_close(&f->ws, 1000, NULL), -EPIPE);
}

static void test_overflow_drop_oldest(void **state)
{
    fixture *f = *state;
    f->cfg.ws_max_queue = 1000;
    f->route.cb.overflow = MYR_WS_DROP_OLDEST;
    fill(f, 3, 300);
    queue_advance(&f->ws.q, 10);   /* the first has started: it stays */
    assert_int_equal(queue_control(&f->ws, WS_OP_PING, NULL, 0), 0);
    char p[396];
    memset(p, 'z', sizeof(p));
    assert_int_equal(myr_ws_send(&f->ws, p, sizeof(p), true), 0);
    char seen[2048];
    queued_payloads(&f->ws.q, seen);
    assert_int_equal(seen[0], 'a');
    /* a (started), b dropped, c kept (294 + 304 + 2 + 400 <= 1000), ping, z */
    assert_int_equal(f->ws.q.count, 4);
    assert_int_equal((*queue_slot(&f->ws.q, 1))->data[WS_MSG_HEADROOM], 'c');
    assert_int_equal((*queue_slot(&f->ws.q, 2))->opcode, WS_OP_PING);
    assert_true(f->ws.q.bytes <= 1000);
    assert_int_equal(f->ws.state, WS_OPEN);
}

static void test_overflow_coalesce(void **state)
{
    fixture *f = *state;
    f->cfg.ws_max_queue = 500;
    f->route.cb.overflow = MYR_WS_COALESCE;
    fill(f, 4, 100);
    char p[600];
    memset(p, 'z', sizeof(p));
    assert_int_equal(myr_ws_send(&f->ws, p, sizeof(p), true), 0);   /* over: only z waits */
    assert_int_equal(f->ws.q.count, 1);
    assert_int_equal((*queue_slot(&f->ws.q, 0))->data[WS_MSG_HEADROOM], 'z');
    assert_int_equal(myr_ws_send(&f->ws, "q", 1, true), 0);          /* 604 + 3 > 500: z goes */
    assert_int_equal(f->ws.q.count, 1);
    assert_int_equal((*queue_slot(&f->ws.q, 0))->data[WS_MSG_HEADROOM], 'q');
}

static void test_close_api(void **state)
{
    fixture *f = *state;
    assert_int_equal(myr_ws_close(&f->ws, 1005, NULL), -EINVAL);
    assert_int_equal(myr_ws_close(&f->ws, 999, NULL), -EINVAL);
    char longr[200];
    memset(longr, 'r', sizeof(longr) - 1);
    longr[sizeof(longr) - 1] = '\0';
    assert_int_equal(myr_ws_close(&f->ws, 1000, longr), -EINVAL);
    assert_int_equal(myr_ws_close(&f->ws, 1000, "\xc0\x80"), -EINVAL);
    assert_int_equal(myr_ws_close(&f->ws, 4000, "bye"), 0);
    assert_int_equal(f->ws.state, WS_CLOSE_SENT);
    const ws_msg *c = *queue_slot(&f->ws.q, 0);
    assert_int_equal(c->len, 2 + 2 + 3);
    assert_memory_equal(c->data + c->head, "\x88\x05\x0f\xa0" "bye", 7);
    assert_int_equal(myr_ws_send(&f->ws, "x", 1, false), -EPIPE);
}

/* A queued frame is compressed just before it is written; a frame already
 * compressed with context takeover is never dropped. */
static void test_lazy_compression(void **state)
{
    fixture *f = *state;
    f->ws.pmd = (ws_pmd){ .enabled = true, .server_wbits = 15 };
    f->cfg.ws_max_queue = 920;
    f->route.cb.overflow = MYR_WS_COALESCE;
    char text[900];
    for (size_t i = 0; i < sizeof(text); i++)
        text[i] = "abcabcabd"[i % 9];
    assert_int_equal(myr_ws_send(&f->ws, text, sizeof(text), false), 0);
    assert_false(msg_compressed(*queue_slot(&f->ws.q, 0)));
    ws_msg *m = queue_prepare(&f->ws, 0);
    assert_true(msg_compressed(m));
    assert_true(m->len < 100);
    assert_int_equal(f->ws.q.bytes, m->len);
    assert_int_equal(myr_ws_send(&f->ws, text, 10, false), 0);   /* under DEFLATE_MIN */
    assert_ptr_equal(queue_prepare(&f->ws, 1), *queue_slot(&f->ws.q, 1));
    assert_false(msg_compressed(*queue_slot(&f->ws.q, 1)));
    assert_int_equal(myr_ws_send(&f->ws, text, sizeof(text), false), 0);   /* over: coalesce */
    assert_int_equal(f->ws.q.count, 2);   /* the compressed one survived */
    assert_true(msg_compressed(*queue_slot(&f->ws.q, 0)));
    ws_deflater_free(f->ws.deflater);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_and_accept),
        cmocka_unit_test(test_handshake_rules),
        cmocka_unit_test(test_negotiate_fields),
        cmocka_unit_test_setup_teardown(test_queue_basics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pong_coalescing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_disconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_drop_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_coalesce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lazy_compression, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
