/* linger — see linger.h. */
#include "core/linger.h"

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

int linger_discard(int fd)
{
    char sink[4096];
    size_t total = 0;
    while (total < LINGER_BYTES) {
        ssize_t n = read(fd, sink, sizeof(sink));
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return -EAGAIN;
        break;   /* EOF or error */
    }
    return 0;
}
