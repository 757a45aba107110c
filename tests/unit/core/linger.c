/* Unit tests for src/core/linger.c: drained (-EAGAIN), EOF, the per-call
 * byte cap, and a read error, over a non-blocking socketpair. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/linger.h"

static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
}

/* Writes up to n bytes (as much as the socket takes); returns what it wrote. */
static size_t fill(int fd, size_t n)
{
    static char junk[4096];
    size_t done = 0;
    while (done < n) {
        size_t k = n - done < sizeof(junk) ? n - done : sizeof(junk);
        ssize_t w = write(fd, junk, k);
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    return done;
}

static void test_drained_keeps_lingering(void **state)
{
    int sv[2];
    pair(sv);
    assert_int_equal(linger_discard(sv[0]), -EAGAIN);   /* nothing there yet */
    assert_int_equal(fill(sv[1], 1000), 1000);
    assert_int_equal(linger_discard(sv[0]), -EAGAIN);   /* dropped, then drained */
    char c;
    assert_int_equal(read(sv[0], &c, 1), -1);
    assert_int_equal(errno, EAGAIN);
    close(sv[0]);
    close(sv[1]);
}

static void test_eof_closes(void **state)
{
    int sv[2];
    pair(sv);
    fill(sv[1], 100);
    close(sv[1]);
    assert_int_equal(linger_discard(sv[0]), 0);
    close(sv[0]);
}

static void test_byte_cap_closes(void **state)
{
    int sv[2];
    pair(sv);
    size_t put = fill(sv[1], 2 * LINGER_BYTES);
    if (put <= LINGER_BYTES)
        fail_msg("the socket took only %zu bytes", put);
    assert_int_equal(linger_discard(sv[0]), 0);   /* a client that keeps sending */
    close(sv[0]);
    close(sv[1]);
}

static void test_error_closes(void **state)
{
    assert_int_equal(linger_discard(-1), 0);   /* EBADF: give up, close */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drained_keeps_lingering),
        cmocka_unit_test(test_eof_closes),
        cmocka_unit_test(test_byte_cap_closes),
        cmocka_unit_test(test_error_closes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
