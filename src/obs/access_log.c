/* access_log — see access_log.h.
 *
 * Buffer: `out` holds whole lines only, oldest first. A write takes bytes
 * from the front; a partial write leaves the rest (the front of a line at
 * worst) for the next attempt. `blocked` is set when the file said EAGAIN:
 * then only the timer tries again, so a stalled reader costs no system
 * call per request.
 *
 * Time: lines carry the wall clock, derived from the loop's cached clock
 * plus an offset refreshed (with the rendered texts) once a second, so
 * formatting a line reads no clock.
 */
#include "obs/access_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "http/http_conn.h"
#include "http/request.h"

#define NS_PER_SEC 1000000000ull

struct access_log {
    loop           *loop;
    char            path[1024];     /* "-" for standard output */
    int             fd;
    bool            stream;         /* pipe or socket: cut writes at PIPE_BUF */
    bool            socket;         /* write with send(MSG_DONTWAIT) */
    bool            blocked;        /* EAGAIN: wait for the timer */
    bool            failed;         /* a write error was logged (once per open) */
    enum access_log_format fmt;
    uint64_t        flush_ms;
    buf             out;            /* whole lines not yet written */
    loop_timer      timer;          /* armed while out holds bytes */
    metrics_worker *m;              /* line counters; NULL: not counted */
    myr_json        json;           /* scratch writer for JSON lines, reused */
    uint64_t        stale_ns;       /* loop clock at which the texts below expire */
    int64_t         wall_off_ns;    /* wall clock - loop clock */
    char            clf_time[40];   /* 27/Nov/2026:19:54:47 +0000 */
    char            iso_time[32];   /* 2026-11-27T19:54:47 */
};

int access_log_parse_format(const char *s, enum access_log_format *out)
{
    if (strcmp(s, "combined") == 0)
        *out = ACCESS_LOG_COMBINED;
    else if (strcmp(s, "json") == 0)
        *out = ACCESS_LOG_JSON;
    else
        return -EINVAL;
    return 0;
}

/* ---- opening ---------------------------------------------------------------------------- */

/* Standard output as a descriptor of our own that never blocks the loop. */
static int open_stdout(access_log *al)
{
    struct stat st;
    if (fstat(STDOUT_FILENO, &st) < 0)
        return -errno;
    al->stream = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
    al->socket = S_ISSOCK(st.st_mode);
    int fd = -1;
    if (S_ISFIFO(st.st_mode))   /* a new open file description: O_NONBLOCK is ours */
        fd = open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    return fd < 0 ? -errno : fd;
}

static int open_path(access_log *al)
{
    if (strcmp(al->path, "-") == 0)
        return open_stdout(al);
    int fd = open(al->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0)
        return -errno;
    struct stat st;
    al->stream = fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
    al->socket = false;
    return fd;
}

access_log *access_log_new(loop *l, const char *path, enum access_log_format fmt,
                           uint64_t flush_ms, metrics_worker *m)
{
    access_log *al = calloc(1, sizeof(*al));
    if (!al)
        return NULL;
    if (strlen(path) >= sizeof(al->path) || !*path) {
        free(al);
        errno = EINVAL;
        return NULL;
    }
    strcpy(al->path, path);
    al->loop = l;
    al->fmt = fmt;
    al->flush_ms = flush_ms ? flush_ms : 1;
    al->m = m;
    myr_json_init(&al->json);
    al->fd = open_path(al);
    if (al->fd < 0) {
        errno = -al->fd;
        free(al);
        return NULL;
    }
    return al;
}

void access_log_free(access_log *al)
{
    if (!al)
        return;
    loop_timer_stop(al->loop, &al->timer);
    al->blocked = false;
    access_log_flush(al);
    if (al->out.len)
        log_warn("access log %s: %zu bytes not written at exit", al->path, al->out.len);
    close(al->fd);
    buf_free(&al->out);
    myr_json_free(&al->json);
    free(al);
}

int access_log_reopen(access_log *al)
{
    al->blocked = false;
    access_log_flush(al);
    if (strcmp(al->path, "-") == 0)
        return 0;
    int fd = open_path(al);
    if (fd < 0)
        return fd;
    close(al->fd);
    al->fd = fd;
    al->failed = false;
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

static size_t count_lines(const char *p, size_t n)
{
    size_t lines = 0;
    for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        lines++;
    return lines;
}

/* How much of the front to write at once: everything for a file; for a
 * pipe or socket whole lines within PIPE_BUF (one line if it is longer). */
static size_t write_size(const access_log *al)
{
    if (!al->stream || al->out.len <= PIPE_BUF)
        return al->out.len;
    const char *p = al->out.data;
    size_t cut = 0;
    for (const char *nl = p; (nl = memchr(nl, '\n', al->out.len - (size_t)(nl - p))) != NULL;
         nl++) {
        if ((size_t)(nl - p) + 1 > PIPE_BUF)
            return cut ? cut : (size_t)(nl - p) + 1;
        cut = (size_t)(nl - p) + 1;
    }
    return cut ? cut : al->out.len;
}

static ssize_t write_some(access_log *al, size_t n)
{
    if (al->socket)
        return send(al->fd, al->out.data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    return write(al->fd, al->out.data, n);
}

/* Drops everything buffered after a write error, counting its lines. */
static void drop_all(access_log *al, int err)
{
    size_t lines = count_lines(al->out.data, al->out.len);
    if (al->m)
        metrics_cell_add(&al->m->core->access_log_dropped, lines);
    if (!al->failed)
        log_error("access log %s: %s; dropping lines until it works again", al->path,
                  strerror(err));
    al->failed = true;
    al->out.len = 0;
}

void access_log_flush(access_log *al)
{
    while (al->out.len && !al->blocked) {
        ssize_t n = write_some(al, write_size(al));
        if (n > 0) {
            buf_consume(&al->out, (size_t)n);
            al->failed = false;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            al->blocked = true;
        } else {
            drop_all(al, n < 0 ? errno : EIO);
        }
    }
}

static void on_timer(loop_timer *t)
{
    access_log *al = container_of(t, access_log, timer);
    al->blocked = false;
    access_log_flush(al);
    if (al->out.len)
        loop_timer_start(al->loop, t, al->flush_ms, on_timer);
    else if (al->out.cap > ACCESS_LOG_CHUNK * 2)
        buf_free(&al->out);   /* a burst grew it: give the memory back */
}

/* A line was appended: write now if a chunk is ready, else make sure the
 * timer will. */
static void after_append(access_log *al)
{
    if (al->out.len >= ACCESS_LOG_CHUNK && !al->blocked)
        access_log_flush(al);
    if (al->out.len && !loop_timer_active(&al->timer))
        loop_timer_start(al->loop, &al->timer, al->flush_ms, on_timer);
}

/* ---- time ------------------------------------------------------------------------------- */

static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* Wall clock now (ns), re-rendering the second-resolution texts when stale. */
static int64_t wall_now(access_log *al)
{
    uint64_t now = loop_now(al->loop);
    if (now >= al->stale_ns) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t wall = (int64_t)ts.tv_sec * (int64_t)NS_PER_SEC + ts.tv_nsec;
        al->wall_off_ns = wall - (int64_t)now;
        time_t sec = ts.tv_sec;
        struct tm tm;
        gmtime_r(&sec, &tm);
        snprintf(al->clf_time, sizeof(al->clf_time), "%02d/%s/%04d:%02d:%02d:%02d +0000",
                 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        strftime(al->iso_time, sizeof(al->iso_time), "%Y-%m-%dT%H:%M:%S", &tm);
        al->stale_ns = now + (NS_PER_SEC - (uint64_t)ts.tv_nsec);
    }
    return (int64_t)now + al->wall_off_ns;
}

/* ---- the fields of a line -------------------------------------------------------------- */

typedef struct line {
    char        remote[INET6_ADDRSTRLEN];
    bool        has_head;      /* the request line was parsed */
    int         status;
    uint64_t    bytes;
    uint64_t    duration_us;
    myr_str     referer, agent;
} line;

void access_log_set_peer(http_conn *c, const struct sockaddr *sa, socklen_t len)
{
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        memcpy(c->peer, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        c->peer_family = AF_INET;
    } else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        memcpy(c->peer, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        c->peer_family = AF_INET6;
    }
}

static void line_fill(line *ln, const access_log *al, const myr_req *r)
{
    const http_conn *c = r->conn;
    if (!c || !c->peer_family || !inet_ntop(c->peer_family, c->peer, ln->remote,
                                            sizeof(ln->remote)))
        strcpy(ln->remote, "-");
    ln->has_head = r->head_len > 0 && r->h.method && r->h.target;
    ln->status = r->cancelled ? 499 : r->status;
    ln->bytes = r->cancelled ? 0 : r->resp_bytes;
    ln->duration_us = (loop_now(al->loop) - r->start_ns) / 1000;
    ln->referer = myr_header(r, "Referer");
    ln->agent = myr_header(r, "User-Agent");
}

/* ---- combined ----------------------------------------------------------------------------- */

/* Copies s into a quoted field: ", \ and bytes outside printable ASCII
 * become \xHH (nginx's escaping), so a line stays one line. */
static void clf_escaped(buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            buf_put_unchecked(b, (char)ch);
            continue;
        }
        buf_put_unchecked(b, '\\');
        buf_put_unchecked(b, 'x');
        buf_put_unchecked(b, hex[ch >> 4]);
        buf_put_unchecked(b, hex[ch & 15]);
    }
}

static size_t clf_room(const myr_req *r, const line *ln)
{
    /* fixed text + numbers < 256; every escaped byte takes at most 4 */
    return 256 + 4 * ((size_t)r->h.method_len + r->h.target_len + ln->referer.len +
                      ln->agent.len);
}

static int clf_line(access_log *al, const myr_req *r, const line *ln)
{
    buf *b = &al->out;
    if (buf_reserve(b, clf_room(r, ln)))
        return -ENOMEM;
    b->len += (size_t)sprintf(b->data + b->len, "%s - - [%s] \"", ln->remote, al->clf_time);
    if (ln->has_head) {
        clf_escaped(b, r->h.method, r->h.method_len);
        buf_put_unchecked(b, ' ');
        clf_escaped(b, r->h.target, r->h.target_len);
        b->len += (size_t)sprintf(b->data + b->len, " HTTP/1.%d", r->h.version_minor);
    } else {
        buf_put_unchecked(b, '-');
    }
    b->len += (size_t)sprintf(b->data + b->len, "\" %d ", ln->status);
    if (ln->bytes)
        b->len += (size_t)sprintf(b->data + b->len, "%llu \"", (unsigned long long)ln->bytes);
    else
        b->len += (size_t)sprintf(b->data + b->len, "- \"");
    clf_escaped(b, ln->referer.ptr ? ln->referer.ptr : "-", ln->referer.ptr ? ln->referer.len : 1);
    b->len += (size_t)sprintf(b->data + b->len, "\" \"");
    clf_escaped(b, ln->agent.ptr ? ln->agent.ptr : "-", ln->agent.ptr ? ln->agent.len : 1);
    b->len += (size_t)sprintf(b->data + b->len, "\"\n");
    return 0;
}

/* ---- JSON ------------------------------------------------------------------------------------ */

static void json_strn_or_null(myr_json *w, const char *key, myr_str s)
{
    myr_json_key(w, key);
    if (s.ptr)
        myr_json_strn(w, s.ptr, s.len);
    else
        myr_json_null(w);
}

static int json_line(access_log *al, const myr_req *r, const line *ln, int64_t wall_ns)
{
    myr_json *w = &al->json;
    /* reuse the scratch buffer: reset the writer, keep its storage */
    char *data = w->data;
    size_t cap = w->cap;
    myr_json_init(w);
    w->data = data;
    w->cap = cap;
    char when[48];
    snprintf(when, sizeof(when), "%s.%03dZ", al->iso_time,
             (int)((wall_ns / 1000000) % 1000));
    myr_json_obj_begin(w);
    myr_json_key(w, "time");
    myr_json_str(w, when);
    myr_json_key(w, "remote");
    myr_json_str(w, ln->remote);
    bool h = ln->has_head;
    json_strn_or_null(w, "method", (myr_str){ h ? r->h.method : NULL, r->h.method_len });
    json_strn_or_null(w, "target", (myr_str){ h ? r->h.target : NULL, r->h.target_len });
    json_strn_or_null(w, "version", (myr_str){ h ? (r->h.version_minor ? "HTTP/1.1"
                                                                         : "HTTP/1.0")
                                                 : NULL, 8 });
    myr_json_key(w, "status");
    myr_json_int(w, ln->status);
    myr_json_key(w, "bytes");
    myr_json_uint(w, ln->bytes);
    myr_json_key(w, "duration_us");
    myr_json_uint(w, ln->duration_us);
    json_strn_or_null(w, "referer", ln->referer);
    json_strn_or_null(w, "user_agent", ln->agent);
    myr_json_key(w, "worker");
    myr_json_uint(w, al->m ? al->m->slot : 0);
    myr_json_obj_end(w);
    if (myr_json_error(w) || buf_reserve(&al->out, w->len + 1))
        return -ENOMEM;
    buf_append(&al->out, w->data, w->len);
    buf_put_unchecked(&al->out, '\n');
    return 0;
}

/* ---- per request --------------------------------------------------------------------------- */

void access_log_request(access_log *al, const myr_req *r)
{
    if (al->out.len >= ACCESS_LOG_MAX) {   /* the file is not keeping up */
        if (al->m)
            metrics_cell_add(&al->m->core->access_log_dropped, 1);
        return;
    }
    line ln;
    line_fill(&ln, al, r);
    int64_t wall = wall_now(al);
    int rc = al->fmt == ACCESS_LOG_JSON ? json_line(al, r, &ln, wall) : clf_line(al, r, &ln);
    if (al->m)
        metrics_cell_add(rc ? &al->m->core->access_log_dropped : &al->m->core->access_log_lines,
                         1);
    after_append(al);
}
