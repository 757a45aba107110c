/* Unit tests for src/core/net.c */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "core/net.h"

static void test_listen_any_port(void **state)
{
    const char *step = NULL;
    int fd = net_listen("127.0.0.1", 0, 16, true, &step);
    assert_true(fd >= 0);
    assert_true(net_local_port(fd) > 0);
    assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
}

static void test_reuseport_allows_two(void **state)
{
    int a = net_listen("127.0.0.1", 0, 16, true, NULL);
    assert_true(a >= 0);
    int port = net_local_port(a);
    int b = net_listen("127.0.0.1", port, 16, true, NULL);
    assert_true(b >= 0);   /* a second worker's socket on the same port */
    const char *step = NULL;
    int c = net_listen("127.0.0.1", port, 16, false, &step);
    assert_true(c < 0);    /* without SO_REUSEPORT: address in use */
    assert_string_equal(step, "bind");
    close(a);
    close(b);
}

static void test_bad_host(void **state)
{
    const char *step = NULL;
    int fd = net_listen("no.such.host.invalid", 0, 16, true, &step);
    assert_true(fd < 0);
    assert_string_equal(step, "resolve");
}

static void test_ipv6_loopback(void **state)
{
    int fd = net_listen("::1", 0, 16, true, NULL);
    if (fd == -EADDRNOTAVAIL || fd == -EAFNOSUPPORT)
        fail_msg("IPv6 loopback unavailable on this machine (%d)", fd);
    assert_true(fd >= 0);
    assert_true(net_local_port(fd) > 0);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listen_any_port),
        cmocka_unit_test(test_reuseport_allows_two),
        cmocka_unit_test(test_bad_host),
        cmocka_unit_test(test_ipv6_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
