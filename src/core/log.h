/* log — the error log: one line per event on stderr (or a file), each with
 * time, pid and level, written with a single write(2) so lines from several
 * processes never interleave. Cold path only: never call it per request.
 */
#ifndef MYR_LOG_H
#define MYR_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the minimum level written (default LOG_INFO). */
void log_set_level(enum log_level lvl);
/* Sends lines to fd instead of stderr (2). The caller owns fd. */
void log_set_fd(int fd);

void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
