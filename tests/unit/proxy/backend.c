/* Unit tests for src/proxy/backend.c: parsing the backend list, and the
 * effective weight (health, drain, slow start). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "proxy/backend.h"
#include "proxy/balancer.h"

static int parse(const char *spec, char *host, int *port, uint32_t *w)
{
    char err[256];
    return backend_parse(spec, strlen(spec), host, 256, port, w, err, sizeof(err));
}

static void test_parse_valid(void **state)
{
    char host[256];
    int port;
    uint32_t w;
    assert_int_equal(parse("127.0.0.1:8080", host, &port, &w), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_int_equal(w, 1);
    assert_int_equal(parse("app.internal:80,weight=7", host, &port, &w), 0);
    assert_string_equal(host, "app.internal");
    assert_int_equal(w, 7);
    assert_int_equal(parse("[::1]:9000,weight=256", host, &port, &w), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9000);
    assert_int_equal(w, 256);
}

static void test_parse_invalid(void **state)
{
    char host[256];
    int port;
    uint32_t w;
    const char *bad[] = {
        "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:8x",
        "127.0.0.1:80,weight=0", "127.0.0.1:80,weight=257", "127.0.0.1:80,weight=",
        "127.0.0.1:80,weight=2x", "127.0.0.1:80,backup", "[::1]", "[::1:80", "::1:80x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], host, &port, &w) != -EINVAL)
            fail_msg("accepted %s", bad[i]);
}

static void test_effective_weight(void **state)
{
    balancer bal;
    memset(&bal, 0, sizeof(bal));
    config cfg;
    config_defaults(&cfg);
    cfg.slow_start = 10000;   /* 10 s */
    bal.cfg = &cfg;
    backend b;
    memset(&b, 0, sizeof(b));
    b.bal = &bal;
    b.weight = 4;
    b.up = true;
    assert_int_equal(backend_eff_weight(&b, 5), 4 * LB_WEIGHT_SCALE);   /* never went down */
    b.up_since = 1000000000ull;                                         /* came back at 1 s */
    assert_int_equal(backend_eff_weight(&b, 1000000000ull), 1);         /* at least 1 */
    assert_int_equal(backend_eff_weight(&b, 6000000000ull), 2 * LB_WEIGHT_SCALE);
    assert_int_equal(backend_eff_weight(&b, 11000000000ull), 4 * LB_WEIGHT_SCALE);
    b.draining = true;
    assert_int_equal(backend_eff_weight(&b, 11000000000ull), 0);
    b.draining = false;
    b.up = false;
    assert_int_equal(backend_eff_weight(&b, 11000000000ull), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_effective_weight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
