/* Unit tests for src/obs/metrics.c: family validation and lookup, the hot
 * path's bucketing and label mapping, slots across processes (fork), and
 * the lifetimes of counters and gauges. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "obs/metrics.c"

static metrics_registry *new_registry(uint32_t workers, shm_region **r)
{
    *r = shm_create(metrics_shm_size(workers));
    assert_non_null(*r);
    metrics_registry *reg = metrics_new(*r, workers);
    assert_non_null(reg);
    return reg;
}

static const metrics_family *family(const metrics_registry *reg, const char *name)
{
    for (uint32_t i = 0; i < metrics_families(reg); i++)
        if (!strcmp(metrics_family_at(reg, i)->name, name))
            return metrics_family_at(reg, i);
    return NULL;
}

static void test_builtins_are_valid_and_fit(void **state)
{
    shm_region *r;
    metrics_registry *reg = new_registry(2, &r);
    uint32_t n = metrics_families(reg);
    assert_int_equal(n, sizeof(builtins) / sizeof(builtins[0]));
    for (uint32_t i = 0; i < n; i++) {
        const metrics_family *f = metrics_family_at(reg, i);
        assert_true(f->offset + f->ncells <= CORE_CELLS);
        for (uint32_t j = 0; j < i; j++)
            assert_string_not_equal(f->name, metrics_family_at(reg, j)->name);
    }
    const metrics_family *req = family(reg, "myriad_http_requests_total");
    assert_non_null(req);
    assert_int_equal(req->ncells, METRICS_METHODS * METRICS_STATUS_CLASSES);
    assert_string_equal(req->value[0][7], "other");
    assert_string_equal(req->value[1][4], "5xx");
    const metrics_family *dur = family(reg, "myriad_http_request_duration_seconds");
    assert_int_equal(dur->ncells, METRICS_DURATION_BOUNDS + 2);
    shm_destroy(r);
}

static void test_spec_validation(void **state)
{
    shm_region *r;
    metrics_registry *reg = new_registry(1, &r);
    static const char *const two[] = { "a", "b", NULL };
    static const char *const many[] = { "1", "2", "3", "4", "5", "6", "7", "8", "9", "10",
                                        "11", "12", "13", NULL };
    static const uint64_t up[] = { 1, 2, 3 }, down[] = { 3, 2, 1 };
    const metrics_spec bad[] = {
        { .name = "lacks_suffix", .type = METRICS_COUNTER, .help = "h" },
        { .name = "gauge_total", .type = METRICS_GAUGE, .help = "h" },
        { .name = "9starts_with_digit_total", .type = METRICS_COUNTER, .help = "h" },
        { .name = "has-dash_total", .type = METRICS_COUNTER, .help = "h" },
        { .name = "__reserved_total", .type = METRICS_COUNTER, .help = "h" },
        { .name = "x_total", .type = METRICS_COUNTER, .help = NULL },
        { .name = "x_total", .type = METRICS_COUNTER, .help = "h", .label = { "le" },
          .values = { two } },
        { .name = "x_total", .type = METRICS_COUNTER, .help = "h", .label = { "worker" },
          .values = { two } },
        { .name = "x_total", .type = METRICS_COUNTER, .help = "h", .label = { "a" },
          .values = { many } },
        { .name = "x_total", .type = METRICS_COUNTER, .help = "h", .label = { "a" } },
        { .name = "x_total", .type = METRICS_COUNTER, .help = "h", .label = { NULL, "a" },
          .values = { NULL, two } },
        { .name = "x_total", .type = METRICS_COUNTER, .help = "h", .label = { "a", "a" },
          .values = { two, two } },
        { .name = "h_seconds", .type = METRICS_HISTOGRAM, .help = "h" },
        { .name = "h_seconds", .type = METRICS_HISTOGRAM, .help = "h", .bounds = down,
          .nbounds = 3 },
        { .name = "h_count", .type = METRICS_HISTOGRAM, .help = "h", .bounds = up, .nbounds = 3 },
        { .name = "g", .type = METRICS_GAUGE, .help = "h", .bounds = up, .nbounds = 3 },
        { .name = "g", .type = METRICS_GAUGE, .help = "h", .scale = -1 },
        { .name = "g", .type = 7, .help = "h" },
    };
    uint32_t before = metrics_families(reg);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errno = 0;
        assert_null(metrics_family_add(reg, &bad[i]));
        assert_int_equal(errno, EINVAL);
    }
    assert_int_equal(metrics_families(reg), before);
    shm_destroy(r);
}

static void test_add_find_and_conflict(void **state)
{
    shm_region *r;
    metrics_registry *reg = new_registry(1, &r);
    static const char *const outcome[] = { "hit", "miss", NULL };
    static const char *const shard[] = { "0", "1", "2", NULL };
    const metrics_spec spec = {
        .name = "myriad_cache_lookups_total", .type = METRICS_COUNTER, .help = "Lookups.",
        .label = { "outcome", "shard" }, .values = { outcome, shard },
    };
    metrics_family *f = metrics_family_add(reg, &spec);
    assert_non_null(f);
    assert_int_equal(f->ncells, 6);
    assert_true(f->offset >= CORE_CELLS);
    assert_ptr_equal(metrics_family_add(reg, &spec), f);   /* found by name */
    const metrics_spec other = { .name = "myriad_cache_lookups_total",
                                 .type = METRICS_COUNTER, .help = "Lookups." };
    errno = 0;
    assert_null(metrics_family_add(reg, &other));
    assert_int_equal(errno, EEXIST);
    metrics_worker *w = metrics_attach(reg, 0);
    metrics_inc(w, f, metrics_combo(f, 1, 2));
    metrics_add(w, f, metrics_combo(f, 0, 0), 5);
    assert_int_equal(metrics_read(reg, 0, f, 5), 1);   /* miss, shard 2 */
    assert_int_equal(metrics_read(reg, 0, f, 0), 5);
    metrics_worker_free(w);
    shm_destroy(r);
}

static void test_cells_and_table_run_out(void **state)
{
    shm_region *r;
    metrics_registry *reg = new_registry(1, &r);
    static const uint64_t b[METRICS_MAX_BOUNDS] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                    11, 12, 13, 14, 15, 16, 17, 18, 19, 20 };
    static const char *const v[] = { "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10",
                                     "11", NULL };
    char name[32];
    int added = 0;
    metrics_family *f;
    do {   /* 12 × 12 × 22 = 3168 cells each: the first already does not fit */
        snprintf(name, sizeof(name), "big%d", added);
        metrics_spec sp = { .name = name, .type = METRICS_HISTOGRAM, .help = "h",
                            .label = { "a", "b" }, .values = { v, v }, .bounds = b,
                            .nbounds = METRICS_MAX_BOUNDS };
        errno = 0;
        f = metrics_family_add(reg, &sp);
        added += f != NULL;
    } while (f);
    assert_int_equal(added, 0);
    assert_int_equal(errno, ENOSPC);
    do {   /* then small ones until the table is full */
        snprintf(name, sizeof(name), "small%d", added);
        metrics_spec sp = { .name = name, .type = METRICS_GAUGE, .help = "h" };
        errno = 0;
        f = metrics_family_add(reg, &sp);
        added += f != NULL;
    } while (f);
    assert_int_equal(errno, ENOSPC);
    assert_int_equal(metrics_families(reg), METRICS_MAX_FAMILIES);
    shm_destroy(r);
}

static void test_hot_path(void **state)
{
    shm_region *r;
    metrics_registry *reg = new_registry(1, &r);
    metrics_worker *w = metrics_attach(reg, 0);
    metrics_http_request(w, 1, 200, 0);             /* GET 2xx, 0 µs */
    metrics_http_request(w, 7, 404, 100000);        /* PATCH 4xx, exactly 100 µs: le 0.0001 */
    metrics_http_request(w, 8, 503, 100001000);     /* CONNECT: other; 100.001 ms */
    metrics_http_request(w, 0, 999, 20000000000);   /* OTHER, bad status: 5xx; 20 s: +Inf */
    metrics_core *c = w->core;
    assert_int_equal(c->requests[0][1], 1);
    assert_int_equal(c->requests[6][3], 1);
    assert_int_equal(c->requests[7][4], 2);
    assert_int_equal(c->duration[0], 2);
    assert_int_equal(c->duration[10], 1);   /* (100 ms, 250 ms] */
    assert_int_equal(c->duration[METRICS_DURATION_BOUNDS], 1);
    assert_int_equal(c->duration[METRICS_DURATION_BOUNDS + 1], 100 + 100001 + 20000000);
    metrics_conn_opened(w);
    metrics_conn_opened(w);
    metrics_conn_closed(w);
    assert_int_equal(c->conns_total, 2);
    assert_int_equal(c->conns_open, 1);
    metrics_http_error(w, 431);
    metrics_http_error(w, 408);
    metrics_http_error(w, 400);
    metrics_http_error(w, 418);
    assert_int_equal(c->errors[METRICS_ERR_LIMIT], 1);
    assert_int_equal(c->errors[METRICS_ERR_TIMEOUT], 1);
    assert_int_equal(c->errors[METRICS_ERR_PARSE], 1);
    assert_int_equal(c->errors[METRICS_ERR_OTHER], 1);
    metrics_http_timeout(w, 1);   /* WAIT_IDLE */
    metrics_http_timeout(w, 0);   /* WAIT_NONE: not a timeout */
    metrics_http_timeout(w, 6);
    assert_int_equal(c->timeouts[METRICS_TIMEOUT_IDLE], 1);
    uint64_t sum = 0;
    for (int i = 0; i < METRICS_TIMEOUTS; i++)
        sum += c->timeouts[i];
    assert_int_equal(sum, 1);
    metrics_worker_free(w);
    shm_destroy(r);
}

static void test_observe_buckets(void **state)
{
    shm_region *r;
    metrics_registry *reg = new_registry(1, &r);
    static const char *const kind[] = { "a", "b", NULL };
    static const uint64_t bounds[] = { 10, 20 };
    const metrics_spec sp = { .name = "t_bytes", .type = METRICS_HISTOGRAM, .help = "h",
                              .label = { "kind" }, .values = { kind }, .bounds = bounds,
                              .nbounds = 2 };
    metrics_family *f = metrics_family_add(reg, &sp);
    assert_non_null(f);
    assert_int_equal(f->ncells, 2 * 4);
    metrics_worker *w = metrics_attach(reg, 0);
    metrics_observe(w, f, 1, 10);
    metrics_observe(w, f, 1, 11);
    metrics_observe(w, f, 1, 1000);
    assert_int_equal(metrics_read(reg, 0, f, 4 + 0), 1);
    assert_int_equal(metrics_read(reg, 0, f, 4 + 1), 1);
    assert_int_equal(metrics_read(reg, 0, f, 4 + 2), 1);
    assert_int_equal(metrics_read(reg, 0, f, 4 + 3), 1021);
    assert_int_equal(metrics_read(reg, 0, f, 0), 0);   /* kind "a" untouched */
    metrics_worker_free(w);
    shm_destroy(r);
}

/* Counters survive a new process in the slot; gauges do not. */
static void test_attach_detach_lifetimes(void **state)
{
    shm_region *r;
    metrics_registry *reg = new_registry(4, &r);
    assert_int_equal(metrics_slots(reg), 0);
    metrics_worker *w = metrics_attach(reg, 2);
    assert_non_null(w);
    assert_int_equal(metrics_slots(reg), 3);
    assert_true(metrics_slot_live(reg, 2));
    assert_false(metrics_slot_live(reg, 0));
    assert_int_equal(metrics_slot_pid(reg, 2), getpid());
    metrics_http_bytes_in(w, 7);
    metrics_conn_opened(w);
    atomic_store(&w->core->rss, 1234);
    metrics_detach(reg, 2);
    assert_false(metrics_slot_live(reg, 2));
    assert_int_equal(w->core->conns_open, 0);
    assert_int_equal(w->core->rss, 0);
    assert_int_equal(w->core->bytes_in, 7);
    metrics_worker_free(w);
    w = metrics_attach(reg, 2);
    assert_int_equal(w->core->bytes_in, 7);
    assert_int_equal(w->core->starts, 2);
    assert_null(metrics_attach(reg, 4));   /* out of range */
    metrics_restart(reg, METRICS_RESTART_MEMORY);
    metrics_restart(reg, METRICS_RESTART_MEMORY);
    const metrics_family *f = family(reg, "myriad_worker_restarts_total");
    assert_int_equal(metrics_read(reg, 4, f, METRICS_RESTART_MEMORY), 2);
    assert_int_equal(metrics_read(reg, 2, f, METRICS_RESTART_MEMORY), 0);
    metrics_worker_free(w);
    shm_destroy(r);
}

/* Several processes bump their own slots and add the same family at once;
 * the parent sees every count and one family. */
static void test_across_processes(void **state)
{
    enum { CHILDREN = 4, BUMPS = 100000 };
    shm_region *r;
    metrics_registry *reg = new_registry(CHILDREN, &r);
    const metrics_spec sp = { .name = "shared_total", .type = METRICS_COUNTER, .help = "h" };
    pid_t pids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            metrics_worker *w = metrics_attach(reg, (uint32_t)i);
            metrics_family *f = metrics_family_add(reg, &sp);
            if (!w || !f)
                _exit(1);
            for (int k = 0; k < BUMPS; k++) {
                metrics_http_request(w, 1, 200, 1000);
                metrics_inc(w, f, 0);
            }
            _exit(0);
        }
    }
    for (int i = 0; i < CHILDREN; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    const metrics_family *f = family(reg, "shared_total");
    assert_non_null(f);
    uint32_t same = 0;
    for (uint32_t i = 0; i < metrics_families(reg); i++)
        same += !strcmp(metrics_family_at(reg, i)->name, "shared_total");
    assert_int_equal(same, 1);
    const metrics_family *req = family(reg, "myriad_http_requests_total");
    uint64_t total = 0, mine = 0;
    for (uint32_t s = 0; s < metrics_slots(reg); s++) {
        total += metrics_read(reg, s, req, 0 * METRICS_STATUS_CLASSES + 1);
        mine += metrics_read(reg, s, f, 0);
        assert_false(metrics_slot_live(reg, s));   /* exited, never detached: kill() says so */
    }
    assert_int_equal(total, (uint64_t)CHILDREN * BUMPS);
    assert_int_equal(mine, (uint64_t)CHILDREN * BUMPS);
    shm_destroy(r);
}

static void test_self(void **state)
{
    assert_null(metrics_registry_of(NULL));
    shm_region *r;
    metrics_registry *reg = new_registry(1, &r);
    metrics_worker *w = metrics_attach(reg, 0);
    metrics_set_self(w);
    assert_ptr_equal(metrics_self(), w);
    assert_ptr_equal(metrics_registry_of(w), reg);
    metrics_set_self(NULL);
    metrics_worker_free(w);
    shm_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins_are_valid_and_fit),
        cmocka_unit_test(test_spec_validation),
        cmocka_unit_test(test_add_find_and_conflict),
        cmocka_unit_test(test_cells_and_table_run_out),
        cmocka_unit_test(test_hot_path),
        cmocka_unit_test(test_observe_buckets),
        cmocka_unit_test(test_attach_detach_lifetimes),
        cmocka_unit_test(test_across_processes),
        cmocka_unit_test(test_self),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
