/* Unit tests for src/core/config.c */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"

static char err[512];

static enum config_result load(config *c, int argc, char **argv)
{
    err[0] = '\0';
    return config_load(c, argc, argv, 1, err, sizeof(err));
}

static int clear_env(void **state)
{
    unsetenv("MYRIAD_PORT");
    unsetenv("MYRIAD_CONFIG");
    unsetenv("MYRIAD_MAX_BODY");
    return 0;
}

static void test_defaults(void **state)
{
    config c;
    char *argv[] = { "myriad" };
    assert_int_equal(load(&c, 1, argv), CONFIG_OK);
    assert_string_equal(c.host, "127.0.0.1");
    assert_int_equal(c.port, 8080);
    assert_int_equal(c.max_body, 1 << 20);
    assert_int_equal(c.header_timeout, 10000);
    assert_int_equal(c.idle_timeout, 60000);
}

static void test_flags_both_forms(void **state)
{
    config c;
    char *argv[] = { "myriad", "--port", "9000", "--max-body=2k", "--idle-timeout", "1500ms",
                     "--workers", "auto", "--header-timeout", "2m" };
    assert_int_equal(load(&c, 10, argv), CONFIG_OK);
    assert_int_equal(c.port, 9000);
    assert_int_equal(c.max_body, 2048);
    assert_int_equal(c.idle_timeout, 1500);
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.header_timeout, 120000);
}

static void test_bad_values(void **state)
{
    const char *bad[][2] = {
        { "--port", "70000" }, { "--port", "abc" }, { "--port", "" }, { "--max-body", "-1" },
        { "--idle-timeout", "5x" }, { "--workers", "two" }, { "--max-headers", "0" },
        { "--port", "80 80" }, { "--max-body", "99999999999999999999999g" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        config c;
        char *argv[] = { "myriad", (char *)bad[i][0], (char *)bad[i][1] };
        assert_int_equal(load(&c, 3, argv), CONFIG_ERROR);
        assert_non_null(strstr(err, bad[i][0]));
        assert_null(strchr(err, '\n'));
    }
}

static void test_unknown_and_missing(void **state)
{
    config c;
    char *a1[] = { "myriad", "--nope", "1" };
    assert_int_equal(load(&c, 3, a1), CONFIG_ERROR);
    assert_non_null(strstr(err, "--nope"));
    char *a2[] = { "myriad", "--port" };
    assert_int_equal(load(&c, 2, a2), CONFIG_ERROR);
    assert_non_null(strstr(err, "--port"));
    char *a3[] = { "myriad", "stray" };
    assert_int_equal(load(&c, 2, a3), CONFIG_ERROR);
}

static void test_help_version(void **state)
{
    config c;
    char *a1[] = { "myriad", "--port", "1", "--help" };
    assert_int_equal(load(&c, 4, a1), CONFIG_HELP);
    char *a2[] = { "myriad", "--version" };
    assert_int_equal(load(&c, 2, a2), CONFIG_VERSION);
}

static char *write_file(const char *text)
{
    static char path[] = "/tmp/myr-config-XXXXXX";
    strcpy(path, "/tmp/myr-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_file_env_flag_precedence(void **state)
{
    char *path = write_file("# comment\n\nport 7000\nmax-body 3k\nidle-timeout 7s\n");
    config c;
    char *a1[] = { "myriad", "--config", path };
    assert_int_equal(load(&c, 3, a1), CONFIG_OK);
    assert_int_equal(c.port, 7000);
    assert_int_equal(c.max_body, 3072);
    setenv("MYRIAD_PORT", "7001", 1);
    assert_int_equal(load(&c, 3, a1), CONFIG_OK);
    assert_int_equal(c.port, 7001);   /* env beats file */
    char *a2[] = { "myriad", "--config", path, "--port", "7002" };
    assert_int_equal(load(&c, 5, a2), CONFIG_OK);
    assert_int_equal(c.port, 7002);   /* flag beats env */
    assert_int_equal(c.idle_timeout, 7000);
    setenv("MYRIAD_PORT", "zero", 1);
    assert_int_equal(load(&c, 5, a2), CONFIG_ERROR);
    assert_non_null(strstr(err, "MYRIAD_PORT"));
    unlink(path);
}

static void test_bad_config_lines(void **state)
{
    const char *texts[] = { "port 1\nbogus 3\n", "port\n", "port 99999\n", "config other\n" };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        char *path = write_file(texts[i]);
        config c;
        char *argv[] = { "myriad", "--config", path };
        assert_int_equal(load(&c, 3, argv), CONFIG_ERROR);
        assert_non_null(strstr(err, path));
        assert_non_null(strstr(err, i == 0 ? ":2" : ":1"));
        unlink(path);
    }
    config c;
    char *argv[] = { "myriad", "--config", "/nonexistent/myriad.conf" };
    assert_int_equal(load(&c, 3, argv), CONFIG_ERROR);
    assert_non_null(strstr(err, "/nonexistent/myriad.conf"));
}

static void test_parsers(void **state)
{
    uint64_t v;
    assert_int_equal(config_parse_size("64m", &v), 0);
    assert_int_equal(v, 64ull << 20);
    assert_int_equal(config_parse_size("1G", &v), 0);
    assert_int_equal(v, 1ull << 30);
    assert_int_not_equal(config_parse_size("1t", &v), 0);
    assert_int_not_equal(config_parse_size("", &v), 0);
    assert_int_equal(config_parse_duration("250ms", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(config_parse_duration("3", &v), 0);
    assert_int_equal(v, 3000);
    assert_int_equal(config_parse_duration("1h", &v), 0);
    assert_int_equal(v, 3600000);
    assert_int_not_equal(config_parse_duration("1.5s", &v), 0);
}

static void test_list_iteration(void **state)
{
    const char *cur = NULL, *v;
    size_t n;
    v = config_list_next("a:1\nbb:2\nc", &cur, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "a:1", 3);
    v = config_list_next("a:1\nbb:2\nc", &cur, &n);
    assert_memory_equal(v, "bb:2", n);
    v = config_list_next("a:1\nbb:2\nc", &cur, &n);
    assert_int_equal(n, 1);
    assert_null(config_list_next("a:1\nbb:2\nc", &cur, &n));
    cur = NULL;
    assert_null(config_list_next("", &cur, &n));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_flags_both_forms, clear_env),
        cmocka_unit_test_setup(test_bad_values, clear_env),
        cmocka_unit_test_setup(test_unknown_and_missing, clear_env),
        cmocka_unit_test_setup(test_help_version, clear_env),
        cmocka_unit_test_setup(test_file_env_flag_precedence, clear_env),
        cmocka_unit_test_setup(test_bad_config_lines, clear_env),
        cmocka_unit_test_setup(test_parsers, clear_env),
        cmocka_unit_test(test_list_iteration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
