/*
 * wsload.c — the WebSocket load generator of bench/ws and bench/c1m --ws.
 *
 * bcast: broadcast delivery latency and throughput.
 *   wsload bcast -p PORT -P '/ws/chat?room=bench' -n 10000 -r 100 -d 10
 * Opens -n subscriber WebSockets to PATH (from 127.0.0.2, 127.0.0.3, ...:
 * -a per source address, IP_BIND_ADDRESS_NO_PORT; -b moves the first), all
 * from this one process and one epoll loop (-n must fit the fd limit), and
 * prints "READY subs=H errors=E". It then waits for a line on stdin (the
 * driver checks that the server has registered every subscriber) and
 * starts the publisher: a child process with one more WebSocket to PATH
 * that sends text messages at a fixed rate (-r per second) for -W warm-up
 * seconds and then -d measured seconds. Each message's text is
 *   "wsb:SEQ:NS:" padded with 'x' to -s bytes
 * where NS is the message's *scheduled* send time on CLOCK_MONOTONIC (one
 * clock for every process of the machine): a server that makes the
 * publisher wait (TCP backpressure) is charged for the wait, as an
 * open-loop load generator should. Subscribers find "wsb:" anywhere in a
 * text frame (the server may wrap the text, e.g. in JSON; the digits and
 * colons need no escaping) and record now − NS, now being read once per
 * recv(), in a log-linear histogram (32 sub-buckets per power of two:
 * values within ~3%).
 *
 * Counted: the frames of the *measured* messages (sequence numbers of the
 * -d window) that arrived before the end of the drain (-D seconds after the
 * last send, or as soon as all of them arrived), their latency percentiles
 * ("latency"; "latency_all": over every expected frame, those that never
 * arrived counted as infinitely late, null where a percentile falls there),
 * and the frames of any message that arrived inside the measured window (by
 * arrival time) ÷ its length: delivered messages/s. A server that falls
 * behind delivers fewer per second than offered, and its latency grows.
 * Result: one line of JSON on stdout. Client CPU time (this process and the
 * publisher) is in it, to show when the client, not the server, was busy.
 *
 * probe: a responsiveness probe beside a load.
 *   wsload probe -p PORT -P /ws/echo -n 50 -i 100
 * -n times, one after the other, -i ms apart: connect, upgrade, send one
 * masked text message, wait for the same text to come back, close. Reports
 * the latency of connect+upgrade, of the echo and of the whole, as JSON.
 * Every wait is bounded by -t ms.
 *
 * Everything is bounded in time (-t, -D, -T) and sends only to -h
 * (127.0.0.1 by default). Build: cc -O2 -Wall -Wextra -Werror bench/wsload.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum {
    MAX_EVENTS = 1024,
    FRAME_MAX = 512,        /* a subscriber reassembles frames up to this size */
    HIST_LINEAR = 64,       /* values below are their own bucket */
    HIST_SUB = 32,          /* sub-buckets per power of two above */
    HIST_BUCKETS = HIST_LINEAR + 40 * HIST_SUB,
    ERROR_REPORTS = 5,
};

static const char HEAD_END[] = "\r\n\r\n";
static const char STATUS_101[] = "HTTP/1.1 101";
#define STATUS_LEN 12
static const char MARKER[] = "wsb:";

struct options {
    const char *mode;
    struct in_addr dst, src;
    uint16_t port;
    const char *path;
    long n;                 /* subscribers (bcast) or probes (probe) */
    long per_addr;
    long inflight;
    double rate;            /* messages per second */
    double warmup_s, duration_s, drain_s;
    int size;               /* bytes of each message's text */
    int open_timeout_s;
    int interval_ms;        /* probe: pause between probes */
    int timeout_ms;         /* probe: bound on each wait */
    int max_s;              /* bcast: bound on the whole run */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- histogram (microseconds) ----------------------------------------------- */

struct hist {
    uint64_t b[HIST_BUCKETS];
    uint64_t count, max, sum;
};

static int hist_index(uint64_t v)
{
    if (v < HIST_LINEAR)
        return (int)v;
    int e = 63 - __builtin_clzll(v);          /* >= 6 */
    int shift = e - 5;                        /* v >> shift is in [32, 64) */
    int i = HIST_LINEAR + (e - 6) * HIST_SUB + (int)((v >> shift) - HIST_SUB);
    return i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
}

/* The middle of bucket i. */
static double hist_value(int i)
{
    if (i < HIST_LINEAR)
        return i;
    int e = (i - HIST_LINEAR) / HIST_SUB + 6;
    int shift = e - 5;
    uint64_t m = (uint64_t)((i - HIST_LINEAR) % HIST_SUB + HIST_SUB);
    return (double)(m << shift) + (double)((1u << shift) - 1) / 2.0;
}

static void hist_add(struct hist *h, uint64_t us)
{
    h->b[hist_index(us)]++;
    h->count++;
    h->sum += us;
    if (us > h->max)
        h->max = us;
}

/* The p-th percentile of `total` values of which h holds the smallest
 * (the others never arrived: infinite); -1 when it is one of those. */
static double hist_pct_of(const struct hist *h, double p, uint64_t total)
{
    if (h->count == 0 || total == 0)
        return -1;
    uint64_t want = (uint64_t)(p / 100.0 * (double)total + 0.5), seen = 0;
    if (want < 1)
        want = 1;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want)
            return hist_value(i) < (double)h->max ? hist_value(i) : (double)h->max;
    }
    return want <= h->count ? (double)h->max : -1;
}

static double hist_pct(const struct hist *h, double p)
{
    return hist_pct_of(h, p, h->count);
}

/* Percentiles over `total` expected values, the missing ones infinite: a
 * percentile that falls on a missing value is null. */
static void hist_json_of(FILE *f, const struct hist *h, uint64_t total)
{
    static const double ps[] = { 50, 90, 99, 99.9 };
    static const char *names[] = { "p50_ms", "p90_ms", "p99_ms", "p999_ms" };
    fputc('{', f);
    for (int i = 0; i < 4; i++) {
        double v = hist_pct_of(h, ps[i], total);
        if (v < 0)
            fprintf(f, "%s\"%s\":null", i ? "," : "", names[i]);
        else
            fprintf(f, "%s\"%s\":%.3f", i ? "," : "", names[i], v / 1e3);
    }
    fprintf(f, ",\"expected\":%" PRIu64 "}", total);
}

/* {"p50":..,"p90":..,"p99":..,"p999":..,"max":..,"mean":..} in ms. */
static void hist_json(FILE *f, const struct hist *h)
{
    if (h->count == 0) {
        fputs("null", f);
        return;
    }
    fprintf(f, "{\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
               "\"max_ms\":%.3f,\"mean_ms\":%.3f,\"count\":%" PRIu64 "}",
            hist_pct(h, 50) / 1e3, hist_pct(h, 90) / 1e3, hist_pct(h, 99) / 1e3,
            hist_pct(h, 99.9) / 1e3, (double)h->max / 1e3,
            (double)h->sum / (double)h->count / 1e3, h->count);
}

/* ---- WebSocket bits ----------------------------------------------------------- */

static int upgrade_request(const struct options *o, char *out, size_t cap)
{
    return snprintf(out, cap,
                    "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n", o->path);
}

/* A masked client frame (final, opcode) of payload into out; its length.
 * out needs len + 14 bytes. */
static size_t ws_client_frame(uint8_t *out, unsigned opcode, const void *payload, size_t len,
                              uint32_t key)
{
    size_t h = 0;
    out[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        out[h++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = 0x80 | 127;
        for (int k = 7; k >= 0; k--)
            out[h++] = (uint8_t)((uint64_t)len >> (8 * k));
    }
    uint8_t m[4] = { (uint8_t)(key >> 24), (uint8_t)(key >> 16), (uint8_t)(key >> 8),
                     (uint8_t)key };
    memcpy(out + h, m, 4);
    h += 4;
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++)
        out[h + i] = p[i] ^ m[i & 3];
    return h + len;
}

/* Header of a server frame at p (n bytes available): 0 when incomplete,
 * else the header's length, with *opcode and *len set. */
static size_t ws_header(const uint8_t *p, size_t n, unsigned *opcode, uint64_t *len)
{
    if (n < 2)
        return 0;
    *opcode = p[0] & 0x0fu;
    uint64_t l = p[1] & 0x7fu;
    size_t h = 2;
    if (l == 126) {
        if (n < 4)
            return 0;
        l = (uint64_t)p[2] << 8 | p[3];
        h = 4;
    } else if (l == 127) {
        if (n < 10)
            return 0;
        l = 0;
        for (int k = 0; k < 8; k++)
            l = l << 8 | p[2 + k];
        h = 10;
    }
    if (p[1] & 0x80u) {
        if (n < h + 4)
            return 0;
        h += 4;   /* masked by the server: a protocol error; read past it */
    }
    *len = l;
    return h;
}

/* "wsb:SEQ:NS:" in a text payload: true with seq and ns set. */
static bool find_marker(const uint8_t *p, size_t n, uint64_t *seq, uint64_t *ns)
{
    const uint8_t *m = memmem(p, n, MARKER, sizeof(MARKER) - 1);
    if (!m)
        return false;
    const uint8_t *q = m + sizeof(MARKER) - 1, *end = p + n;
    uint64_t v[2] = { 0, 0 };
    for (int k = 0; k < 2; k++) {
        if (q >= end || *q < '0' || *q > '9')
            return false;
        while (q < end && *q >= '0' && *q <= '9')
            v[k] = v[k] * 10 + (uint64_t)(*q++ - '0');
        if (q >= end || *q++ != ':')
            return false;
    }
    *seq = v[0];
    *ns = v[1];
    return true;
}

/* Blocking connect + upgrade on a socket with SO_RCVTIMEO/SO_SNDTIMEO; 0 or
 * -errno. Bytes after the head (early frames) are left in *extra. */
static int blocking_upgrade(const struct options *o, int fd, uint8_t *extra, size_t cap,
                            size_t *nextra)
{
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_addr = o->dst,
                               .sin_port = htons(o->port) };
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0)
        return -errno;
    char req[1024];
    int len = upgrade_request(o, req, sizeof(req));
    if (len <= 0 || (size_t)len >= sizeof(req))
        return -ENAMETOOLONG;
    if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len)
        return -EIO;
    char head[4096];
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, head + got, sizeof(head) - 1 - got, 0);
        if (r <= 0)
            return r == 0 ? -ECONNRESET : -errno;
        got += (size_t)r;
        head[got] = 0;
        char *end = strstr(head, HEAD_END);
        if (end) {
            if (strncmp(head, STATUS_101, STATUS_LEN) != 0)
                return -EPROTO;
            size_t after = (size_t)(end + 4 - head);
            *nextra = got - after < cap ? got - after : cap;
            memcpy(extra, head + after, *nextra);
            return 0;
        }
        if (got >= sizeof(head) - 1)
            return -EPROTO;
    }
}

/* ---- subscribers ------------------------------------------------------------- */

enum sub_state { S_FREE, S_CONNECTING, S_WAITING, S_OPEN };

struct sub {
    uint8_t  state;
    uint8_t  got;        /* status bytes, then "\r\n\r\n" bytes, matched */
    uint16_t have;       /* bytes of the current frame in fb */
    uint32_t skip;       /* bytes of an oversized frame still to skip */
    uint8_t  fb[FRAME_MAX];
};

struct bcast {
    const struct options *o;
    int epfd;
    struct sub *subs;    /* by fd */
    size_t nsubs;
    char req[1024];
    size_t req_len;
    long next, pending, open, errors, dropped;
    int reported;
    /* measurement */
    uint64_t t0;                     /* the publisher's first scheduled send */
    uint64_t win_start, win_end;     /* the measured window, by arrival */
    uint64_t meas_first, meas_count; /* sequence numbers of measured messages */
    uint64_t frames, win_frames, meas_frames, other_frames, oversize;
    struct hist lat;
    uint64_t now;                    /* read once per recv */
    bool measuring;
};

static void b_error(struct bcast *b, const char *what, int err)
{
    b->errors++;
    if (b->reported++ < ERROR_REPORTS)
        fprintf(stderr, "wsload: %s: %s\n", what, strerror(err));
}

static void sub_drop(struct bcast *b, int fd)
{
    if (b->subs[fd].state == S_OPEN) {
        b->open--;
        b->dropped++;
    } else if (b->subs[fd].state != S_FREE) {
        b->pending--;
    }
    b->subs[fd].state = S_FREE;
    close(fd);
}

static void sub_open_one(struct bcast *b, long idx)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        b_error(b, "socket", errno);
        return;
    }
    if ((size_t)fd >= b->nsubs) {
        close(fd);
        b_error(b, "fd table", EMFILE);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    uint32_t host = ntohl(b->o->src.s_addr) + (uint32_t)(idx / b->o->per_addr);
    struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(host) };
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_addr = b->o->dst,
                               .sin_port = htons(b->o->port) };
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
        (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS)) {
        b_error(b, "bind/connect", errno);
        close(fd);
        return;
    }
    struct epoll_event ev = { .events = EPOLLOUT, .data.fd = fd };
    epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev);
    b->subs[fd].state = S_CONNECTING;
    b->subs[fd].got = 0;
    b->subs[fd].have = 0;
    b->subs[fd].skip = 0;
    b->pending++;
}

static void sub_connected(struct bcast *b, int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (!err) {
        ssize_t n = send(fd, b->req, b->req_len, MSG_NOSIGNAL);
        if (n != (ssize_t)b->req_len)
            err = n < 0 ? errno : EMSGSIZE;
    }
    if (err) {
        b_error(b, "connect/send", err);
        sub_drop(b, fd);
        return;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.fd = fd };
    epoll_ctl(b->epfd, EPOLL_CTL_MOD, fd, &ev);
    b->subs[fd].state = S_WAITING;
}

/* One whole server frame of a subscriber. false: the connection ended. */
static bool sub_frame(struct bcast *b, int fd, unsigned opcode, const uint8_t *p, size_t len)
{
    if (opcode == 0x9 && len <= 125) {        /* ping: pong */
        uint8_t f[140];
        size_t n = ws_client_frame(f, 0xA, p, len, 0x5a5a5a5a);
        (void)send(fd, f, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        return true;
    }
    if (opcode == 0x8) {                       /* close: answer, end */
        uint8_t f[20];
        size_t n = ws_client_frame(f, 0x8, p, len >= 2 ? 2 : 0, 0);
        (void)send(fd, f, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        b_error(b, "server closed a subscriber", ECONNRESET);
        sub_drop(b, fd);
        return false;
    }
    if (opcode != 0x1)
        return true;
    b->frames++;
    uint64_t seq, ns;
    if (!find_marker(p, len, &seq, &ns)) {
        b->other_frames++;
        return true;
    }
    if (b->measuring && b->now >= b->win_start && b->now < b->win_end)
        b->win_frames++;
    if (seq >= b->meas_first && seq < b->meas_first + b->meas_count) {
        b->meas_frames++;
        hist_add(&b->lat, b->now > ns ? (b->now - ns) / 1000 : 0);
    }
    return true;
}

/* Frames in a stream: reassembled in s->fb, up to FRAME_MAX bytes each. */
static void sub_bytes(struct bcast *b, int fd, const uint8_t *p, size_t n)
{
    struct sub *s = &b->subs[fd];
    while (n > 0) {
        if (s->skip) {
            size_t k = n < s->skip ? n : s->skip;
            s->skip -= (uint32_t)k;
            p += k;
            n -= k;
            continue;
        }
        /* Fast path: a whole frame in p, nothing buffered. */
        unsigned op;
        uint64_t len;
        size_t h;
        if (s->have == 0 && (h = ws_header(p, n, &op, &len)) && n - h >= len) {
            if (!sub_frame(b, fd, op, p + h, (size_t)len))
                return;
            p += h + len;
            n -= h + (size_t)len;
            continue;
        }
        /* Slow path: gather the header, then the payload, in fb. */
        size_t room = (size_t)FRAME_MAX - s->have;
        size_t take = n < room ? n : room;
        memcpy(s->fb + s->have, p, take);
        h = ws_header(s->fb, s->have + take, &op, &len);
        if (!h) {
            if (s->have + take >= 14) { /* cannot be: a header is at most 14 bytes */
                b_error(b, "bad frame header", EPROTO);
                sub_drop(b, fd);
                return;
            }
            s->have += (uint16_t)take;
            p += take;
            n -= take;
            continue;
        }
        if (h + len > FRAME_MAX) {      /* too big to look at: skip it */
            b->oversize++;
            uint64_t total = h + len;
            /* bytes of this frame consumed: s->have (old) + what we use now */
            size_t use = total - s->have < n ? (size_t)(total - s->have) : n;
            s->skip = (uint32_t)(total - s->have - use);
            s->have = 0;
            p += use;
            n -= use;
            continue;
        }
        size_t need = (size_t)(h + len) - s->have;   /* bytes of p in this frame */
        if (n < need) {
            s->have += (uint16_t)n;    /* take <= need: all of it fits */
            return;
        }
        memcpy(s->fb + s->have, p, need);
        s->have = 0;
        if (!sub_frame(b, fd, op, s->fb + h, (size_t)len))
            return;
        p += need;
        n -= need;
    }
}

static void sub_readable(struct bcast *b, int fd)
{
    static uint8_t buf[1 << 18];
    struct sub *s = &b->subs[fd];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (s->state == S_WAITING)
            b_error(b, "closed before the 101", n < 0 ? errno : ECONNRESET);
        sub_drop(b, fd);
        return;
    }
    b->now = now_ns();
    size_t i = 0;
    if (s->state == S_WAITING) {
        if (s->got < STATUS_LEN) {
            size_t want = STATUS_LEN - s->got, take = (size_t)n < want ? (size_t)n : want;
            if (memcmp(buf, STATUS_101 + s->got, take) != 0) {
                b_error(b, "answer is not HTTP/1.1 101", EPROTO);
                sub_drop(b, fd);
                return;
            }
            s->got += (uint8_t)take;
            i = take;
        }
        for (; i < (size_t)n && s->got < STATUS_LEN + 4; i++) {
            unsigned m = s->got - STATUS_LEN;
            s->got = buf[i] == (uint8_t)HEAD_END[m] ? s->got + 1
                                                    : STATUS_LEN + (buf[i] == '\r');
        }
        if (s->got < STATUS_LEN + 4)
            return;
        s->state = S_OPEN;
        b->pending--;
        b->open++;
    }
    if ((size_t)n > i)
        sub_bytes(b, fd, buf + i, (size_t)n - i);
}

static void b_dispatch(struct bcast *b, struct epoll_event *evs, int n, int ctl_fd, bool *ctl)
{
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == ctl_fd) {
            *ctl = true;
            continue;
        }
        if (b->subs[fd].state == S_CONNECTING)
            sub_connected(b, fd);
        else if (b->subs[fd].state != S_FREE)
            sub_readable(b, fd);
    }
}

/* ---- publisher (a child process) -------------------------------------------- */

struct pub_report {
    uint64_t sent, sent_late, received_bytes;
    int error;
};

/*
 * Waits for t0 on go_fd, then sends rate × (warm-up + duration) messages
 * at their scheduled times, reading (and discarding) whatever the server
 * sends meanwhile; stays connected, still reading, until go_fd closes.
 */
static void publisher(const struct options *o, int go_fd, int report_fd)
{
    struct pub_report r = { 0 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = { .tv_sec = o->open_timeout_s };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint8_t extra[256];
    size_t nextra;
    int err = fd < 0 ? -errno : blocking_upgrade(o, fd, extra, sizeof(extra), &nextra);
    uint64_t t0 = 0;
    if (read(go_fd, &t0, sizeof(t0)) != (ssize_t)sizeof(t0))
        err = err ? err : -ECANCELED;
    if (err) {
        r.error = -err;
        fprintf(stderr, "wsload: publisher: %s\n", strerror(-err));
        if (write(report_fd, &r, sizeof(r)) < 0)
            _exit(1);
        _exit(1);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    uint64_t total = (uint64_t)(o->rate * (o->warmup_s + o->duration_s) + 0.5);
    double step = 1e9 / o->rate;
    uint8_t out[FRAME_MAX + 64];
    size_t out_len = 0, out_off = 0;
    static uint8_t sink[1 << 16];
    char text[FRAME_MAX];
    bool go_open = true;
    while (go_open) {
        uint64_t now = now_ns();
        /* Send every message that is due, if the last one has left. */
        while (r.sent < total && out_off == out_len) {
            uint64_t due = t0 + (uint64_t)((double)r.sent * step);
            if (now < due)
                break;
            int len = snprintf(text, sizeof(text), "wsb:%" PRIu64 ":%" PRIu64 ":",
                               r.sent, due);
            while (len < o->size && len < (int)sizeof(text))
                text[len++] = 'x';
            out_len = ws_client_frame(out, 0x1, text, (size_t)len,
                                      (uint32_t)(r.sent * 2654435761u));
            out_off = 0;
            if (now - due > 1000000)
                r.sent_late++;   /* more than 1 ms behind its schedule */
            r.sent++;
            ssize_t w = send(fd, out, out_len, MSG_NOSIGNAL);
            if (w > 0)
                out_off = (size_t)w;
            else if (w < 0 && errno != EAGAIN) {
                r.error = errno;
                go_open = false;
                break;
            }
        }
        int timeout = 50;
        if (r.sent < total && out_off == out_len) {
            uint64_t due = t0 + (uint64_t)((double)r.sent * step), t = now_ns();
            timeout = due > t ? (int)((due - t) / 1000000) : 0;
        }
        struct pollfd p[2] = {
            { .fd = fd, .events = POLLIN | (out_off < out_len ? POLLOUT : 0) },
            { .fd = go_fd, .events = POLLIN },
        };
        /* Sleep the sub-millisecond rest precisely: poll rounds down. */
        if (timeout == 0 && r.sent < total && out_off == out_len) {
            uint64_t due = t0 + (uint64_t)((double)r.sent * step), t = now_ns();
            if (due > t) {
                struct timespec ts = { .tv_sec = (time_t)(due / 1000000000u),
                                       .tv_nsec = (long)(due % 1000000000u) };
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            }
        }
        if (poll(p, 2, timeout) < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN) {
            ssize_t n = recv(fd, sink, sizeof(sink), 0);
            if (n == 0 || (n < 0 && errno != EAGAIN)) {
                r.error = n == 0 ? ECONNRESET : errno;
                break;
            }
            if (n > 0)
                r.received_bytes += (uint64_t)n;
        }
        if ((p[0].revents & POLLOUT) && out_off < out_len) {
            ssize_t w = send(fd, out + out_off, out_len - out_off, MSG_NOSIGNAL);
            if (w > 0)
                out_off += (size_t)w;
        }
        if (p[1].revents & (POLLIN | POLLHUP))
            go_open = false;
    }
    if (r.error)
        fprintf(stderr, "wsload: publisher: %s after %" PRIu64 " messages\n",
                strerror(r.error), r.sent);
    if (write(report_fd, &r, sizeof(r)) < 0)
        _exit(1);
    close(fd);
    _exit(0);
}

/* ---- bcast main --------------------------------------------------------------- */

static double cpu_s(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int run_bcast(const struct options *o)
{
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    struct bcast b = { .o = o, .epfd = epoll_create1(EPOLL_CLOEXEC) };
    b.nsubs = rl.rlim_cur > (1u << 20) ? (1u << 20) : (size_t)rl.rlim_cur;
    if ((long)b.nsubs < o->n + 16) {
        fprintf(stderr, "wsload: -n %ld does not fit the fd limit %zu\n", o->n, b.nsubs);
        return 2;
    }
    b.subs = calloc(b.nsubs, sizeof(*b.subs));
    int len = upgrade_request(o, b.req, sizeof(b.req));
    if (!b.subs || b.epfd < 0 || len <= 0 || (size_t)len >= sizeof(b.req)) {
        perror("wsload: set-up");
        return 1;
    }
    b.req_len = (size_t)len;

    /* The publisher first, before 10k descriptors exist to inherit. */
    int go[2], rep[2];
    if (pipe2(go, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0) {
        perror("wsload: pipe");
        return 1;
    }
    fflush(stdout);
    pid_t pub = fork();
    if (pub < 0) {
        perror("wsload: fork");
        return 1;
    }
    if (pub == 0) {
        close(go[1]);
        close(rep[0]);
        close(b.epfd);
        publisher(o, go[0], rep[1]);
    }
    close(go[0]);
    close(rep[1]);

    struct epoll_event ev = { .events = EPOLLIN, .data.fd = 0 };
    epoll_ctl(b.epfd, EPOLL_CTL_ADD, 0, &ev);
    struct epoll_event evs[MAX_EVENTS];
    uint64_t t_open = now_ns();
    uint64_t deadline = t_open + (uint64_t)o->open_timeout_s * 1000000000u;
    bool ctl = false;
    while ((b.next < o->n || b.pending > 0) && now_ns() < deadline) {
        while (b.next < o->n && b.pending < o->inflight)
            sub_open_one(&b, b.next++);
        int n = epoll_wait(b.epfd, evs, MAX_EVENTS, 100);
        if (n > 0)
            b_dispatch(&b, evs, n, 0, &ctl);
    }
    for (size_t fd = 0; fd < b.nsubs; fd++)
        if (b.subs[fd].state == S_CONNECTING || b.subs[fd].state == S_WAITING) {
            b_error(&b, "timed out opening", ETIMEDOUT);
            sub_drop(&b, (int)fd);
        }
    b.errors += o->n - b.next;
    double open_s = (double)(now_ns() - t_open) / 1e9;
    printf("READY subs=%ld errors=%ld open_s=%.1f\n", b.open, b.errors, open_s);
    fflush(stdout);

    /* Hold (answering pings) until the driver says go: a line on stdin. */
    uint64_t wait_end = now_ns() + (uint64_t)o->max_s * 1000000000u;
    ctl = false;
    while (!ctl && now_ns() < wait_end) {
        int n = epoll_wait(b.epfd, evs, MAX_EVENTS, 200);
        if (n > 0)
            b_dispatch(&b, evs, n, 0, &ctl);
    }
    char line[64];
    if (!ctl || read(0, line, sizeof(line)) <= 0) {
        fprintf(stderr, "wsload: no go from the driver\n");
        kill(pub, SIGKILL);
        waitpid(pub, NULL, 0);
        return 1;
    }
    epoll_ctl(b.epfd, EPOLL_CTL_DEL, 0, NULL);

    long open_at_start = b.open;
    double cpu0 = cpu_s(RUSAGE_SELF);
    b.t0 = now_ns() + 100000000u;   /* 100 ms: the publisher is waiting already */
    b.win_start = b.t0 + (uint64_t)(o->warmup_s * 1e9);
    b.win_end = b.win_start + (uint64_t)(o->duration_s * 1e9);
    b.meas_first = (uint64_t)(o->rate * o->warmup_s + 0.5);
    b.meas_count = (uint64_t)(o->rate * (o->warmup_s + o->duration_s) + 0.5) - b.meas_first;
    b.measuring = true;
    if (write(go[1], &b.t0, sizeof(b.t0)) != (ssize_t)sizeof(b.t0)) {
        perror("wsload: go");
        return 1;
    }
    uint64_t expect = b.meas_count * (uint64_t)open_at_start;
    uint64_t stop = b.win_end + (uint64_t)(o->drain_s * 1e9);
    uint64_t last_arrival = 0;
    for (;;) {
        uint64_t t = now_ns();
        if (t >= stop || (t >= b.win_end && b.meas_frames >= expect))
            break;
        int n = epoll_wait(b.epfd, evs, MAX_EVENTS, 20);
        if (n > 0) {
            uint64_t before = b.meas_frames;
            b_dispatch(&b, evs, n, -1, &ctl);
            if (b.meas_frames != before)
                last_arrival = b.now;
        }
    }
    double cpu_sub = cpu_s(RUSAGE_SELF) - cpu0;
    close(go[1]);   /* the publisher stops */
    struct pub_report pr = { .error = EIO };
    if (read(rep[0], &pr, sizeof(pr)) != (ssize_t)sizeof(pr))
        pr.error = EIO;
    waitpid(pub, NULL, 0);
    double cpu_pub = cpu_s(RUSAGE_CHILDREN);

    printf("{\"subscribers\":%ld,\"open_errors\":%ld,\"open_s\":%.2f,\"rate\":%.3f,"
           "\"warmup_s\":%.3f,\"duration_s\":%.3f,\"drain_s\":%.3f,\"size\":%d,"
           "\"sent\":%" PRIu64 ",\"sent_late\":%" PRIu64 ",\"publisher_error\":%d,"
           "\"measured_messages\":%" PRIu64 ",\"expected_frames\":%" PRIu64 ","
           "\"delivered_frames\":%" PRIu64 ",\"delivered_fraction\":%.6f,"
           "\"window_frames\":%" PRIu64 ",\"delivered_per_s\":%.1f,"
           "\"last_arrival_after_window_s\":%.3f,"
           "\"frames_total\":%" PRIu64 ",\"frames_unrecognised\":%" PRIu64 ","
           "\"frames_oversize\":%" PRIu64 ",\"dropped\":%ld,\"errors\":%ld,"
           "\"client_cpu_s\":%.3f,\"publisher_cpu_s\":%.3f,\"latency\":",
           open_at_start, b.errors, open_s, o->rate, o->warmup_s, o->duration_s, o->drain_s,
           o->size, pr.sent, pr.sent_late, pr.error, b.meas_count, expect, b.meas_frames,
           expect ? (double)b.meas_frames / (double)expect : 0.0, b.win_frames,
           (double)b.win_frames / o->duration_s,
           last_arrival > b.win_end ? (double)(last_arrival - b.win_end) / 1e9 : 0.0,
           b.frames, b.other_frames, b.oversize, b.dropped, b.errors, cpu_sub, cpu_pub);
    hist_json(stdout, &b.lat);
    printf(",\"latency_all\":");
    hist_json_of(stdout, &b.lat, expect);
    printf("}\n");
    fflush(stdout);
    for (size_t fd = 0; fd < b.nsubs; fd++)
        if (b.subs[fd].state != S_FREE)
            close((int)fd);
    return pr.error || b.dropped ? 1 : 0;
}

/* ---- probe ------------------------------------------------------------------- */

/* Reads one whole server frame (skipping pings, answering none) into buf. */
static int read_frame(int fd, uint8_t *buf, size_t cap, size_t *have, unsigned *op,
                      const uint8_t **payload, uint64_t *plen)
{
    for (;;) {
        size_t h = ws_header(buf, *have, op, plen);
        if (h && *have - h >= *plen) {
            *payload = buf + h;
            return (int)(h + *plen);
        }
        if (*have >= cap)
            return -EMSGSIZE;
        ssize_t r = recv(fd, buf + *have, cap - *have, 0);
        if (r <= 0)
            return r == 0 ? -ECONNRESET : -errno;
        *have += (size_t)r;
    }
}

static int probe_one(const struct options *o, long i, struct hist *hs, struct hist *he,
                     struct hist *ht)
{
    uint64_t t0 = now_ns();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = { .tv_sec = o->timeout_ms / 1000,
                          .tv_usec = (o->timeout_ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint8_t buf[4096];
    size_t have = 0;
    int err = blocking_upgrade(o, fd, buf, sizeof(buf), &have);
    uint64_t t1 = now_ns();
    char text[64];
    int tl = snprintf(text, sizeof(text), "probe %ld", i);
    uint8_t f[128];
    size_t fl = ws_client_frame(f, 0x1, text, (size_t)tl, (uint32_t)(i * 40503u + 1));
    if (!err && send(fd, f, fl, MSG_NOSIGNAL) != (ssize_t)fl)
        err = -EIO;
    while (!err) {
        unsigned op;
        const uint8_t *p = NULL;
        uint64_t len = 0;
        int used = read_frame(fd, buf, sizeof(buf), &have, &op, &p, &len);
        if (used < 0) {
            err = used;
            break;
        }
        bool mine = op == 0x1 && memmem(p, (size_t)len, text, (size_t)tl);
        memmove(buf, buf + used, have - (size_t)used);
        have -= (size_t)used;
        if (op == 0x8)
            err = -ECONNRESET;
        else if (mine)
            break;
    }
    uint64_t t2 = now_ns();
    if (!err) {
        fl = ws_client_frame(f, 0x8, "\x03\xe8", 2, 7);   /* close 1000 */
        (void)send(fd, f, fl, MSG_NOSIGNAL);
        hist_add(hs, (t1 - t0) / 1000);
        hist_add(he, (t2 - t1) / 1000);
        hist_add(ht, (t2 - t0) / 1000);
    }
    close(fd);
    return err;
}

static int run_probe(const struct options *o)
{
    signal(SIGPIPE, SIG_IGN);
    static struct hist hs, he, ht;
    long ok = 0, errors = 0;
    for (long i = 0; i < o->n; i++) {
        int err = probe_one(o, i, &hs, &he, &ht);
        if (err) {
            if (errors++ < ERROR_REPORTS)
                fprintf(stderr, "wsload: probe %ld: %s\n", i, strerror(-err));
        } else {
            ok++;
        }
        if (o->interval_ms > 0 && i + 1 < o->n)
            poll(NULL, 0, o->interval_ms);
    }
    printf("{\"probes\":%ld,\"ok\":%ld,\"errors\":%ld,\"path\":\"%s\",\"upgrade\":", o->n, ok,
           errors, o->path);
    hist_json(stdout, &hs);
    printf(",\"echo\":");
    hist_json(stdout, &he);
    printf(",\"total\":");
    hist_json(stdout, &ht);
    printf("}\n");
    return errors ? 1 : 0;
}

/* ---- main --------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: wsload bcast -p PORT -P PATH -n SUBSCRIBERS -r RATE -d SECONDS\n"
            "                    [-W WARMUP_S] [-D DRAIN_S] [-s SIZE] [-h IPV4]\n"
            "                    [-b FIRST_SOURCE_IPV4] [-a PER_ADDR] [-c INFLIGHT]\n"
            "                    [-t OPEN_TIMEOUT_S] [-T MAX_WAIT_S]\n"
            "       wsload probe -p PORT -P PATH [-n COUNT] [-i INTERVAL_MS] [-t TIMEOUT_MS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    struct options o = { .mode = argv[1], .path = "/ws/echo", .n = 10000, .per_addr = 10000,
                         .inflight = 256, .rate = 10, .warmup_s = 2, .duration_s = 10,
                         .drain_s = 5, .size = 32, .open_timeout_s = 60, .interval_ms = 0,
                         .timeout_ms = 5000, .max_s = 300 };
    bool probe = strcmp(o.mode, "probe") == 0;
    if (!probe && strcmp(o.mode, "bcast") != 0)
        usage();
    if (probe)
        o.n = 20;
    const char *host = "127.0.0.1", *src = "127.0.0.2";
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "p:P:n:r:d:W:D:s:h:b:a:c:t:T:i:")) != -1) {
        switch (opt) {
        case 'p': o.port = (uint16_t)atoi(optarg); break;
        case 'P': o.path = optarg; break;
        case 'n': o.n = atol(optarg); break;
        case 'r': o.rate = atof(optarg); break;
        case 'd': o.duration_s = atof(optarg); break;
        case 'W': o.warmup_s = atof(optarg); break;
        case 'D': o.drain_s = atof(optarg); break;
        case 's': o.size = atoi(optarg); break;
        case 'h': host = optarg; break;
        case 'b': src = optarg; break;
        case 'a': o.per_addr = atol(optarg); break;
        case 'c': o.inflight = atol(optarg); break;
        case 't': if (probe) o.timeout_ms = atoi(optarg); else o.open_timeout_s = atoi(optarg);
                  break;
        case 'T': o.max_s = atoi(optarg); break;
        case 'i': o.interval_ms = atoi(optarg); break;
        default: usage();
        }
    }
    if (inet_pton(AF_INET, host, &o.dst) != 1 || inet_pton(AF_INET, src, &o.src) != 1 ||
        o.port == 0 || o.n < 1 || o.path[0] != '/' || strpbrk(o.path, " \r\n") ||
        strlen(o.path) > 512 || o.rate <= 0 || o.rate > 1e6 || o.duration_s <= 0 ||
        o.warmup_s < 0 || o.drain_s < 0 || o.size < 0 || o.size > FRAME_MAX - 64 ||
        o.per_addr < 1 || o.inflight < 1 || o.open_timeout_s < 1 || o.timeout_ms < 1 ||
        o.max_s < 1 || o.interval_ms < 0)
        usage();
    if ((ntohl(o.dst.s_addr) >> 24) != 127u) {
        fprintf(stderr, "wsload: loopback targets only (127.0.0.0/8)\n");
        return 2;
    }
    return probe ? run_probe(&o) : run_bcast(&o);
}
