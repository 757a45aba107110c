/* log — see log.h.
 *
 * The level and fd are process-wide settings made once at start-up (or on a
 * reopen signal, on the loop thread); they are the only globals here and are
 * read, never written, while serving.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static int log_fd = 2;

void log_set_level(enum log_level lvl) { min_level = lvl; }
void log_set_fd(int fd) { log_fd = fd; }

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    if (lvl < min_level)
        return;
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ [%d] %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), (int)getpid(), level_names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;   /* truncated: keep the newline */
    line[len++] = '\n';
    ssize_t w = write(log_fd, line, len);
    (void)w;   /* nowhere to report a failing log */
}
