/* access_log — one line per completed request, in the Combined Log Format
 * or as JSON lines, written without a system call per request.
 *
 * Each worker keeps its own buffer. A line is formatted into it when a
 * response completes; the buffer is written out by a timer at most every
 * --access-log-flush (armed only while the buffer holds lines), when it
 * passes ACCESS_LOG_CHUNK, and when the log is freed (shutdown). Workers
 * append to the same file with O_APPEND, so their writes never overwrite
 * each other; to a pipe or socket ("-" as one) writes are cut at line ends
 * within PIPE_BUF bytes, so lines of several workers never interleave.
 *
 * Never blocking the loop: files are written into the page cache; a pipe
 * is reopened non-blocking (through /proc/self/fd, a separate open file
 * description, so the flag does not leak to the processes sharing it) and
 * a socket written with MSG_DONTWAIT. When the reader stalls, lines wait in
 * the buffer up to ACCESS_LOG_MAX bytes and are then dropped and counted
 * (myriad_access_log_dropped_lines_total).
 *
 * Formats (times are UTC, at completion, like nginx's $time_local):
 *   combined  127.0.0.1 - - [27/Nov/2026:19:54:47 +0000] "GET /x HTTP/1.1" 200 13 "-" "curl/8"
 *   json      {"time":"2026-11-27T19:54:47.123Z","remote":"127.0.0.1","method":"GET",
 *              "target":"/x","version":"HTTP/1.1","status":200,"bytes":13,
 *              "duration_us":52,"referer":null,"user_agent":"curl/8","worker":0}
 * A request whose client left before the answer is logged with status 499
 * (nginx's convention) and 0 bytes; a request whose head could not be
 * parsed has "-" (null) for its request line.
 *
 * Threading: loop thread only.
 */
#ifndef MYR_OBS_ACCESS_LOG_H
#define MYR_OBS_ACCESS_LOG_H

#include <stdint.h>
#include <sys/socket.h>

#include "core/loop.h"
#include "obs/metrics.h"

#define ACCESS_LOG_CHUNK (64u * 1024)     /* write once this much is buffered */
#define ACCESS_LOG_MAX   (1024u * 1024)   /* buffered beyond this: drop lines */

struct myr_req;
struct http_conn;

typedef struct access_log access_log;

enum access_log_format { ACCESS_LOG_COMBINED, ACCESS_LOG_JSON };

/* "combined" or "json". 0 or -EINVAL. */
int access_log_parse_format(const char *s, enum access_log_format *out);

/* Opens path for appending (created 0644), or "-" for standard output.
 * Lines are counted in m (may be NULL). NULL with errno set on failure. */
access_log *access_log_new(loop *l, const char *path, enum access_log_format fmt,
                           uint64_t flush_ms, metrics_worker *m);
/* Writes what is buffered (best effort), closes the file and frees. */
void access_log_free(access_log *al);
/* SIGUSR1: writes what is buffered, then opens the path again (after a
 * rotation). "-" is not reopened. 0 or -errno (the old file stays). */
int access_log_reopen(access_log *al);
/* Writes what is buffered now (as far as the file takes it). */
void access_log_flush(access_log *al);

/* Appends the line of a request whose response is complete. */
void access_log_request(access_log *al, const struct myr_req *r);

/* Remembers a connection's client address (at accept) for its lines. */
void access_log_set_peer(struct http_conn *c, const struct sockaddr *sa, socklen_t len);

#endif
