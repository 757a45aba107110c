/* Unit tests for src/obs/prom.c: the exposition text line by line —
 * HELP/TYPE before samples, every label combination, sums over slots
 * (dead workers' counters included, their gauges not), per-worker series,
 * cumulative histograms, escaping. The whole text of a running server is
 * also checked by promtool in tests/e2e/test_metrics.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "obs/prom.c"

typedef struct fixture {
    shm_region       *shm;
    metrics_registry *reg;
    metrics_worker   *w;      /* slot 0: this process */
    buf               out;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    fx->shm = shm_create(metrics_shm_size(3));
    fx->reg = metrics_new(fx->shm, 3);
    fx->w = metrics_attach(fx->reg, 0);
    *state = fx;
    return fx->w ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    metrics_worker_free(fx->w);
    shm_destroy(fx->shm);
    buf_free(&fx->out);
    free(fx);
    return 0;
}

/* The text as a NUL-terminated string. */
static const char *render(fixture *fx)
{
    fx->out.len = 0;
    assert_int_equal(prom_write(&fx->out, fx->reg), 0);
    assert_int_equal(buf_append(&fx->out, "", 1), 0);
    return fx->out.data;
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

#define assert_line(text, line) \
    do { if (!has_line(text, line)) fail_msg("missing line: %s\n%s", line, text); } while (0)

static void test_structure(void **state)
{
    fixture *fx = *state;
    const char *t = render(fx);
    /* every line is a comment or a sample; each family's HELP and TYPE
     * come before its samples */
    for (uint32_t i = 0; i < metrics_families(fx->reg); i++) {
        const metrics_family *f = metrics_family_at(fx->reg, i);
        char help[256], type[256];
        snprintf(help, sizeof(help), "# HELP %s ", f->name);
        snprintf(type, sizeof(type), "# TYPE %s %s\n", f->name, type_names[f->type]);
        const char *h = strstr(t, help), *y = strstr(t, type);
        assert_non_null(h);
        assert_non_null(y);
        assert_true(h < y);
    }
    assert_line(t, "myriad_http_requests_total{method=\"GET\",status=\"2xx\"} 0");
    assert_line(t, "myriad_http_requests_total{method=\"other\",status=\"5xx\"} 0");
    assert_line(t, "myriad_worker_starts_total{worker=\"0\"} 1");
    assert_non_null(strstr(t, "myriad_build_info{version=\"" MYR_VERSION "\",compiler=\""));
    assert_non_null(strstr(t, "\nprocess_start_time_seconds 1"));
    assert_int_equal(t[strlen(t) - 1], '\n');
}

static void test_histogram_cumulative(void **state)
{
    fixture *fx = *state;
    metrics_http_request(fx->w, 1, 200, 50000);      /* 50 µs */
    metrics_http_request(fx->w, 1, 200, 300000);     /* 300 µs */
    metrics_http_request(fx->w, 2, 200, 30000000000);/* 30 s */
    const char *t = render(fx);
    assert_line(t, "myriad_http_request_duration_seconds_bucket{le=\"0.0001\"} 1");
    assert_line(t, "myriad_http_request_duration_seconds_bucket{le=\"0.00025\"} 1");
    assert_line(t, "myriad_http_request_duration_seconds_bucket{le=\"0.0005\"} 2");
    assert_line(t, "myriad_http_request_duration_seconds_bucket{le=\"10\"} 2");
    assert_line(t, "myriad_http_request_duration_seconds_bucket{le=\"+Inf\"} 3");
    assert_line(t, "myriad_http_request_duration_seconds_count 3");
    assert_line(t, "myriad_http_request_duration_seconds_sum 30.00035");
    assert_line(t, "myriad_http_requests_total{method=\"GET\",status=\"2xx\"} 2");
    assert_line(t, "myriad_http_requests_total{method=\"HEAD\",status=\"2xx\"} 1");
}

/* A worker that ran in slot 1 and exited: its counters stay in the sums,
 * its gauges and per-worker series are gone. */
static void test_dead_worker(void **state)
{
    fixture *fx = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        metrics_worker *w = metrics_attach(fx->reg, 1);
        metrics_http_bytes_out(w, 1000);
        metrics_conn_opened(w);   /* left "open" by a crash */
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    metrics_http_bytes_out(fx->w, 24);
    metrics_conn_opened(fx->w);
    metrics_restart(fx->reg, METRICS_RESTART_CRASH);
    const char *t = render(fx);
    assert_line(t, "myriad_http_sent_bytes_total 1024");
    assert_line(t, "myriad_http_connections_total 2");
    assert_line(t, "myriad_http_open_connections{worker=\"0\"} 1");
    assert_null(strstr(t, "worker=\"1\""));
    assert_line(t, "myriad_worker_restarts_total{cause=\"crash\"} 1");
}

static void test_escaping_and_scale(void **state)
{
    fixture *fx = *state;
    static const char *const odd[] = { "a\"b", "c\\d", NULL };
    const metrics_spec sp = { .name = "t_ratio", .type = METRICS_GAUGE,
                              .help = "line one\nback\\slash", .flags = METRICS_PER_WORKER,
                              .label = { "v" }, .values = { odd }, .scale = 0.5 };
    metrics_family *f = metrics_family_add(fx->reg, &sp);
    assert_non_null(f);
    metrics_set(fx->w, f, 1, 3);
    metrics_gauge_add(fx->w, f, 0, -4);
    const char *t = render(fx);
    assert_line(t, "# HELP t_ratio line one\\nback\\\\slash");
    assert_line(t, "t_ratio{v=\"a\\\"b\",worker=\"0\"} -2");
    assert_line(t, "t_ratio{v=\"c\\\\d\",worker=\"0\"} 1.5");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_structure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_cumulative, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping_and_scale, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
