/* Unit tests for src/obs/dashboard.c: the JSON view (valid JSON, one value
 * per worker entry, histograms as cells, gauges of dead workers zero) and
 * the page (self-contained, the JSON path filled in). The page's drawing is
 * tested in a real browser by tests/e2e/test_dashboard.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "obs/dashboard.c"

static json_t *family_named(json_t *root, const char *name)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(root, "families"), i, f)
        if (!strcmp(json_string_value(json_object_get(f, "name")), name))
            return f;
    return NULL;
}

static void test_json_view(void **state)
{
    shm_region *r = shm_create(metrics_shm_size(4));
    metrics_registry *reg = metrics_new(r, 4);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {   /* slot 0: a worker that served and exited */
        metrics_worker *w = metrics_attach(reg, 0);
        metrics_http_request(w, 1, 200, 1000);
        metrics_conn_opened(w);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    metrics_worker *me = metrics_attach(reg, 1);
    metrics_http_request(me, 3, 500, 2000000);   /* POST 5xx, 2 ms */
    metrics_conn_opened(me);
    metrics_restart(reg, METRICS_RESTART_CRASH);

    myr_json w;
    myr_json_init(&w);
    assert_int_equal(dashboard_json(&w, reg, 1), 0);
    assert_int_equal(myr_json_error(&w), 0);
    json_error_t err;
    json_t *root = json_loadb(w.data, w.len, 0, &err);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "self")), 1);
    json_t *workers = json_object_get(root, "workers");
    assert_int_equal(json_array_size(workers), 3);   /* slots 0, 1 and the supervisor */
    assert_false(json_is_true(json_object_get(json_array_get(workers, 0), "live")));
    assert_true(json_is_true(json_object_get(json_array_get(workers, 1), "live")));
    assert_true(json_is_true(json_object_get(json_array_get(workers, 2), "supervisor")));

    json_t *req = family_named(root, "myriad_http_requests_total");
    json_t *s = json_array_get(json_object_get(req, "series"), 1);   /* GET 2xx */
    assert_string_equal(json_string_value(json_array_get(json_object_get(s, "labels"), 1)),
                        "2xx");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(s, "values"), 0)), 1);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(s, "values"), 1)), 0);

    json_t *open = family_named(root, "myriad_http_open_connections");
    json_t *ov = json_object_get(json_array_get(json_object_get(open, "series"), 0), "values");
    assert_int_equal(json_integer_value(json_array_get(ov, 0)), 0);   /* dead: not counted */
    assert_int_equal(json_integer_value(json_array_get(ov, 1)), 1);

    json_t *dur = family_named(root, "myriad_http_request_duration_seconds");
    assert_int_equal(json_array_size(json_object_get(dur, "bounds")), METRICS_DURATION_BOUNDS);
    assert_true(fabs(json_real_value(json_array_get(json_object_get(dur, "bounds"), 0)) - 1e-4) < 1e-12);
    json_t *cells = json_array_get(
        json_object_get(json_array_get(json_object_get(dur, "series"), 0), "values"), 1);
    assert_int_equal(json_array_size(cells), METRICS_DURATION_BOUNDS + 2);
    assert_int_equal(json_integer_value(json_array_get(cells, 4)), 1);   /* (1 ms, 2.5 ms] */
    assert_int_equal(json_integer_value(json_array_get(cells, METRICS_DURATION_BOUNDS + 1)),
                     2000);

    json_t *rs = family_named(root, "myriad_worker_restarts_total");
    json_t *crash = json_object_get(json_array_get(json_object_get(rs, "series"), 0), "values");
    assert_int_equal(json_integer_value(json_array_get(crash, 2)), 1);   /* supervisor's */
    json_decref(root);
    myr_json_free(&w);
    metrics_worker_free(me);
    shm_destroy(r);
}

static void test_page(void **state)
{
    buf b = { 0 };
    assert_int_equal(dashboard_page(&b, "/internal/m.json"), 0);
    assert_int_equal(buf_append(&b, "", 1), 0);
    const char *p = b.data;
    assert_non_null(strstr(p, "var JSON_URL = '/internal/m.json'"));
    assert_null(strstr(p, "@JSON_PATH@"));
    assert_null(strstr(p, "http://"));
    assert_null(strstr(p, "https://"));
    assert_null(strstr(p, "src="));
    assert_null(strstr(p, "<link"));
    assert_non_null(strstr(p, "<canvas"));
    assert_non_null(strstr(p, "data-points"));
    assert_int_equal(strlen(p), sizeof(page) - 1 - strlen("@JSON_PATH@") + strlen("/internal/m.json"));
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_view),
        cmocka_unit_test(test_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
