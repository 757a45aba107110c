/* Unit tests for src/obs/access_log.c: the two formats (escaping, 499 for
 * a client that left, "-" for an unparsed head), buffering (nothing is
 * written per request; the timer or a flush writes), reopening after a
 * rotation, and a pipe whose reader stalls (lines dropped and counted, the
 * caller never blocked). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "obs/access_log.c"

typedef struct fixture {
    char              dir[64];
    char              path[128];
    loop             *l;
    shm_region       *shm;
    metrics_worker   *m;
    http_conn        *conn;
    myr_req          *req;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    strcpy(fx->dir, "/tmp/myr-alog-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->path, sizeof(fx->path), "%s/access.log", fx->dir);
    fx->l = loop_new();
    fx->shm = shm_create(metrics_shm_size(1));
    fx->m = metrics_attach(metrics_new(fx->shm, 1), 0);
    fx->conn = calloc(1, sizeof(http_conn));
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
    access_log_set_peer(fx->conn, (struct sockaddr *)&sa, sizeof(sa));
    fx->req = calloc(1, sizeof(myr_req) + 4 * sizeof(http_header));
    myr_req *r = fx->req;
    r->conn = fx->conn;
    r->h.method = "GET";
    r->h.method_len = 3;
    r->h.target = "/a?q=\"x\"";
    r->h.target_len = (uint32_t)strlen(r->h.target);
    r->h.version_minor = 1;
    r->head_len = 100;
    r->status = 200;
    r->resp_bytes = 13;
    r->h.headers = r->header_space;
    r->h.headers[0] = (http_header){ "User-Agent", "ua \"q\" \x01\xc3\xa9", 10, 10 };
    r->h.num_headers = 1;
    *state = fx;
    return fx->l && fx->m ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    free(fx->req);
    free(fx->conn);
    metrics_worker_free(fx->m);
    shm_destroy(fx->shm);
    loop_free(fx->l);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *data = calloc(1, 1 << 20);
    size_t n = fread(data, 1, (1 << 20) - 1, f);
    data[n] = '\0';
    fclose(f);
    return data;
}

static void test_combined_line(void **state)
{
    fixture *fx = *state;
    access_log *al = access_log_new(fx->l, fx->path, ACCESS_LOG_COMBINED, 1000, fx->m);
    assert_non_null(al);
    access_log_request(al, fx->req);
    fx->req->cancelled = true;   /* the client left before the answer */
    fx->req->head_len = 0;       /* ... and its head was never complete */
    access_log_request(al, fx->req);
    access_log_free(al);
    char *text = slurp(fx->path);
    char *second = strchr(text, '\n') + 1;
    assert_memory_equal(text, "127.0.0.1 - - [", 15);
    const char *want1 = "] \"GET /a?q=\\x22x\\x22 HTTP/1.1\" 200 13 \"-\" "
                        "\"ua \\x22q\\x22 \\x01\\xC3\\xA9\"\n";
    assert_non_null(strstr(text, want1));
    assert_non_null(strstr(second, "] \"-\" 499 - \"-\" \"ua"));
    /* [dd/Mon/yyyy:hh:mm:ss +0000] */
    int day, year, h, m, s;
    char mon[4];
    assert_int_equal(sscanf(text + 15, "%2d/%3s/%4d:%2d:%2d:%2d +0000]", &day, mon, &year, &h,
                            &m, &s), 6);
    assert_int_equal(fx->m->core->access_log_lines, 2);
    free(text);
}

static void test_json_line(void **state)
{
    fixture *fx = *state;
    access_log *al = access_log_new(fx->l, fx->path, ACCESS_LOG_JSON, 1000, fx->m);
    fx->req->start_ns = loop_now(fx->l) - 2500000;   /* 2.5 ms ago */
    access_log_request(al, fx->req);
    access_log_free(al);
    char *text = slurp(fx->path);
    json_error_t err;
    json_t *j = json_loads(text, JSON_DISABLE_EOF_CHECK, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "remote")), "127.0.0.1");
    assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(j, "target")), "/a?q=\"x\"");
    assert_string_equal(json_string_value(json_object_get(j, "version")), "HTTP/1.1");
    assert_string_equal(json_string_value(json_object_get(j, "user_agent")),
                        "ua \"q\" \x01\xc3\xa9");
    assert_true(json_is_null(json_object_get(j, "referer")));
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes")), 13);
    assert_int_equal(json_integer_value(json_object_get(j, "duration_us")), 2500);
    const char *t = json_string_value(json_object_get(j, "time"));
    assert_int_equal(strlen(t), 24);   /* 2026-11-27T19:54:47.123Z */
    assert_int_equal(t[23], 'Z');
    assert_string_equal(text + strlen(text) - 1, "\n");
    json_decref(j);
    free(text);
}

/* No write per request: the line waits for the timer (or a full chunk). */
static void test_buffered_until_timer(void **state)
{
    fixture *fx = *state;
    access_log *al = access_log_new(fx->l, fx->path, ACCESS_LOG_COMBINED, 30, fx->m);
    for (int i = 0; i < 10; i++)
        access_log_request(al, fx->req);
    struct stat st;
    assert_int_equal(stat(fx->path, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_true(loop_timer_active(&al->timer));
    for (int i = 0; i < 50 && loop_timer_active(&al->timer); i++)
        loop_run_once(fx->l, 20);
    assert_false(loop_timer_active(&al->timer));   /* empty buffer: no timer */
    assert_int_equal(stat(fx->path, &st), 0);
    assert_true(st.st_size > 0);
    char *text = slurp(fx->path);
    assert_int_equal(count_lines(text, strlen(text)), 10);
    free(text);
    /* a full chunk goes out at once */
    size_t before = (size_t)st.st_size;
    while (al->out.len < ACCESS_LOG_CHUNK - 300)
        access_log_request(al, fx->req);
    assert_int_equal(stat(fx->path, &st), 0);
    assert_int_equal((size_t)st.st_size, before);
    size_t held;
    do {
        held = al->out.len;
        access_log_request(al, fx->req);
    } while (al->out.len > held);
    assert_int_equal(al->out.len, 0);   /* the line that crossed the chunk wrote all */
    assert_int_equal(stat(fx->path, &st), 0);
    assert_true((size_t)st.st_size >= before + ACCESS_LOG_CHUNK);
    access_log_free(al);
}

static void test_reopen_after_rotation(void **state)
{
    fixture *fx = *state;
    access_log *al = access_log_new(fx->l, fx->path, ACCESS_LOG_COMBINED, 1000, fx->m);
    access_log_request(al, fx->req);
    char rotated[160];
    snprintf(rotated, sizeof(rotated), "%s.1", fx->path);
    assert_int_equal(rename(fx->path, rotated), 0);
    assert_int_equal(access_log_reopen(al), 0);   /* flushes into the old file first */
    access_log_request(al, fx->req);
    access_log_request(al, fx->req);
    access_log_free(al);
    char *old = slurp(rotated), *cur = slurp(fx->path);
    assert_int_equal(count_lines(old, strlen(old)), 1);
    assert_int_equal(count_lines(cur, strlen(cur)), 2);
    free(old);
    free(cur);
    /* a path that cannot be opened */
    errno = 0;
    assert_null(access_log_new(fx->l, "/nonexistent-dir/x.log", ACCESS_LOG_JSON, 10, NULL));
    assert_int_equal(errno, ENOENT);
}

/* A pipe nobody reads: the caller is never blocked, lines beyond
 * ACCESS_LOG_MAX are dropped and counted, and what did go out is whole
 * lines. */
static void test_stalled_pipe(void **state)
{
    fixture *fx = *state;
    char fifo[160];
    snprintf(fifo, sizeof(fifo), "%s/fifo", fx->dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    int rd = open(fifo, O_RDONLY | O_NONBLOCK);
    assert_true(rd >= 0);
    access_log *al = access_log_new(fx->l, fifo, ACCESS_LOG_COMBINED, 5, fx->m);
    assert_non_null(al);
    assert_true(al->stream);
    alarm(20);   /* a blocking write would hang here: fail instead */
    for (int i = 0; i < 20000; i++) {
        access_log_request(al, fx->req);
        if (i % 1000 == 0)
            loop_run_once(fx->l, 0);
    }
    alarm(0);
    assert_true(al->blocked);
    assert_true(fx->m->core->access_log_dropped > 0);
    assert_true(al->out.len <= ACCESS_LOG_MAX + 4096);
    char *got = malloc(1 << 20);
    size_t n = 0;
    ssize_t k;
    while ((k = read(rd, got + n, (1 << 20) - n)) > 0)
        n += (size_t)k;
    assert_true(n > 0);
    assert_int_equal(got[n - 1], '\n');
    assert_int_equal(fx->m->core->access_log_lines + fx->m->core->access_log_dropped, 20000);
    free(got);
    access_log_free(al);
    close(rd);
}

static void test_formats(void **state)
{
    enum access_log_format f;
    assert_int_equal(access_log_parse_format("json", &f), 0);
    assert_int_equal(f, ACCESS_LOG_JSON);
    assert_int_equal(access_log_parse_format("combined", &f), 0);
    assert_int_equal(f, ACCESS_LOG_COMBINED);
    assert_int_equal(access_log_parse_format("xml", &f), -EINVAL);
    assert_int_equal(access_log_parse_format("", &f), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_combined_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffered_until_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_after_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_pipe, setup, teardown),
        cmocka_unit_test(test_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
