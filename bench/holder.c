/*
 * holder.c — opens many idle HTTP/1.1 keep-alive connections to one loopback
 * server and holds them, for bench/idle-memory.
 *
 * Each connection sends one "GET /plaintext" and must get a response that
 * starts with "HTTP/1.1 200"; then it stays open and idle. One process can
 * hold fewer descriptors than the machine's hard limit (20000 here), so the
 * work is split over child processes of at most -m connections each. Source
 * addresses are spread over 127.0.0.2, 127.0.0.3, ... (-a connections per
 * address) with IP_BIND_ADDRESS_NO_PORT, so no address runs out of ephemeral
 * ports (the kernel prefers one port parity: keep -a under ~14k). -b moves
 * the first source address (so several holders can run side by side, as
 * bench/c1m does, without sharing addresses).
 *
 * With -i SECONDS each held connection sends one more GET /plaintext every
 * SECONDS (spread evenly over the interval) and the answer is checked the
 * same way: a bad answer counts as an error and the connection is closed; a
 * connection the server closes counts as dropped.
 *
 * With -w PATH each connection is a WebSocket instead (bench/c1m --ws,
 * bench/ws): it sends the upgrade request for PATH (version 13, a fixed
 * valid key, no extensions, so no compression state on either side), must
 * get "HTTP/1.1 101", skips the rest of the response head and then idles.
 * While held it answers the server's keep-alive pings with masked pongs
 * (a server that pings idle peers would otherwise close them), ignores data
 * frames and answers a close frame, which counts as dropped. Frames are
 * parsed per read: a control frame split across two reads (never seen on
 * loopback: they are a few bytes) is not answered. -w excludes -i.
 *
 * Protocol with the caller, on stdout:
 *   READY held=H errors=E dropped=D rss_kb=K   every connection is held,
 *                            failed or timed out (D: held, then closed by the
 *                            server while the others opened); K = our own
 *                            memory (all processes)
 *   (the caller measures the server now, then closes our stdin or sends a
 *    line; with -s SECONDS we hold that long instead)
 *   DONE held=H dropped=D errors=E requests=R   D = held ones the server
 *                            closed meanwhile; R = requests sent with -i
 * Everything is bounded: -t for opening, -T for the whole hold. Exit status
 * 0 when all N were held to the end, 1 otherwise, 2 on bad usage.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -o holder bench/holder.c
 * Run:   holder -p 8080 -n 19000
 *        holder -p 8080 -n 19000 -w /ws/echo -s 60
 *        holder -p 8080 -n 100000 -b 127.1.0.1 -i 10 -s 60
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
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
    MAX_CHILDREN = 256,
    MAX_EVENTS = 512,
    STATUS_LEN = 12,        /* strlen("HTTP/1.1 200") */
    ERROR_REPORTS = 5,      /* errors printed per child; the rest are counted */
};

static const char REQUEST[] = "GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
static const char STATUS_OK[] = "HTTP/1.1 200";
static const char STATUS_101[] = "HTTP/1.1 101";
static const char HEAD_END[] = "\r\n\r\n";
/* RFC 6455's sample key: any 16 bytes in base64 will do; the server's
 * Sec-WebSocket-Accept is not checked (the status line is). */
static const char WS_REQUEST_FMT[] =
    "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n";

struct options {
    struct in_addr dst;     /* server address */
    uint16_t port;          /* server port, host order */
    long total;             /* connections to hold, -n */
    long per_child;         /* most connections per child process, -m */
    long per_addr;          /* most connections per source address, -a */
    long inflight;          /* most unanswered connects per child, -c */
    int open_timeout_s;     /* bound on opening all connections, -t */
    int max_hold_s;         /* bound on the whole hold, -T */
    int hold_s;             /* hold this long instead of waiting on stdin, -s */
    struct in_addr src;     /* first source address, -b (default 127.0.0.2) */
    int interval_s;         /* one request per held connection per interval, -i */
    const char *ws_path;    /* -w: WebSocket upgrade to this path; NULL = HTTP */
    const char *request;    /* what each connection sends first */
    size_t request_len;
};

/* A connection's life; fd-indexed so an event finds it without a lookup. */
enum conn_state { C_FREE, C_CONNECTING, C_WAITING, C_HELD,
                  C_ASKED /* held, an -i request sent, answer not checked yet */ };

/* Two bytes per connection (a million take 2 MB of the holder's memory). */
struct conn {
    uint8_t state;          /* enum conn_state */
    uint8_t got;            /* bytes of the status line compared so far; with
                               -w, then of "\r\n\r\n" (+ STATUS_LEN) */
};

/* What a child tells its parent, twice: after opening and at the end. */
struct report {
    long held;              /* connections open and answered 200 */
    long errors;            /* connections that failed or timed out opening */
    long dropped;           /* held connections the server closed later */
    long requests;          /* -i requests answered 200 */
};

struct child {
    const struct options *o;
    long first, count;      /* global index range [first, first+count) */
    long next;              /* next global index to open */
    long pending;           /* connects not yet answered */
    int epfd;
    int ctl_fd;             /* parent's control pipe: EOF means "finish" */
    struct conn *conns;     /* indexed by fd */
    size_t nconns;
    struct report r;
    int reported_errors;
    size_t cursor;          /* -i: next fd to consider for a request */
    double quota;           /* -i: requests owed but not yet sent */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void child_error(struct child *c, const char *what, int err)
{
    c->r.errors++;
    if (c->reported_errors++ < ERROR_REPORTS)
        fprintf(stderr, "holder: %s: %s\n", what, strerror(err));
}

/* -b (127.0.0.2) + idx / per_addr, counting through 127.0.0.0/8. */
static struct in_addr source_addr(const struct options *o, long idx)
{
    uint32_t host = ntohl(o->src.s_addr) + (uint32_t)(idx / o->per_addr);
    return (struct in_addr){ .s_addr = htonl(host) };
}

static void conn_drop(struct child *c, int fd)
{
    c->conns[fd] = (struct conn){ 0 };
    close(fd);
}

/* Start one non-blocking connect; failures count as errors. */
static void open_one(struct child *c, long idx)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        child_error(c, "socket", errno);
        return;
    }
    if ((size_t)fd >= c->nconns) {
        close(fd);
        child_error(c, "fd table", EMFILE);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    struct sockaddr_in src = { .sin_family = AF_INET,
                               .sin_addr = source_addr(c->o, idx) };
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_addr = c->o->dst,
                               .sin_port = htons(c->o->port) };
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
        (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 &&
         errno != EINPROGRESS)) {
        child_error(c, "bind/connect", errno);
        close(fd);
        return;
    }
    struct epoll_event ev = { .events = EPOLLOUT, .data.fd = fd };
    epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev);
    c->conns[fd] = (struct conn){ .state = C_CONNECTING };
    c->pending++;
}

/* Connected (or failed): send the request, then wait for the answer. */
static void on_connected(struct child *c, int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == 0) {
        ssize_t n = send(fd, c->o->request, c->o->request_len, MSG_NOSIGNAL);
        if (n != (ssize_t)c->o->request_len)
            err = n < 0 ? errno : EMSGSIZE;
    }
    if (err) {
        c->pending--;
        child_error(c, "connect/send", err);
        conn_drop(c, fd);
        return;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.fd = fd };
    epoll_ctl(c->epfd, EPOLL_CTL_MOD, fd, &ev);
    c->conns[fd].state = C_WAITING;
}

/* Sends a small control frame, masked with a zero key (any key is valid:
 * masking only has to be present). Fails quietly: a lost pong shows up as
 * a connection the server drops. */
static void ws_send_control(int fd, unsigned opcode, const uint8_t *payload, size_t len)
{
    uint8_t f[2 + 4 + 125] = { (uint8_t)(0x80 | opcode), (uint8_t)(0x80 | len) };
    memcpy(f + 6, payload, len);
    (void)send(fd, f, 6 + len, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/*
 * -w, held: the frames of one read. Pings get pongs, a close gets a close
 * and ends the connection (dropped), data frames are skipped. A frame that
 * continues past this read ends the parse (see the top of the file).
 */
static void ws_frames(struct child *c, int fd, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (n - i >= 2) {
        unsigned op = p[i] & 0x0fu;
        uint64_t len = p[i + 1] & 0x7fu;
        size_t hl = 2;
        if (len == 126) {
            if (n - i < 4)
                return;
            len = (uint64_t)p[i + 2] << 8 | p[i + 3];
            hl = 4;
        } else if (len == 127) {
            if (n - i < 10)
                return;
            len = 0;
            for (int k = 0; k < 8; k++)
                len = len << 8 | p[i + 2 + k];
            hl = 10;
        }
        if (p[i + 1] & 0x80u)
            hl += 4; /* a masked server frame is a protocol error; skip it */
        if (n - i < hl || n - i - hl < len)
            return;
        const uint8_t *payload = p + i + hl;
        if (op == 0x9 && len <= 125) {
            ws_send_control(fd, 0xA, payload, (size_t)len);
        } else if (op == 0x8) {
            ws_send_control(fd, 0x8, payload, len >= 2 ? 2 : 0); /* echo the code */
            if (c->reported_errors++ < ERROR_REPORTS)
                fprintf(stderr, "holder: the server closed a WebSocket with code %u\n",
                        len >= 2 ? (unsigned)payload[0] << 8 | payload[1] : 1005u);
            c->r.held--;
            c->r.dropped++;
            conn_drop(c, fd);
            return;
        }
        i += hl + (size_t)len;
    }
}

/*
 * -w: "HTTP/1.1 101" then the end of the head ("\r\n\r\n", matched across
 * reads in cn->got); what follows the head, and everything once held, is
 * frames.
 */
static void ws_readable(struct child *c, int fd, const uint8_t *buf, size_t n)
{
    struct conn *cn = &c->conns[fd];
    if (cn->state == C_HELD) {
        ws_frames(c, fd, buf, n);
        return;
    }
    size_t i = 0;
    if (cn->got < STATUS_LEN) {
        size_t want = (size_t)STATUS_LEN - cn->got;
        size_t take = n < want ? n : want;
        if (memcmp(buf, STATUS_101 + cn->got, take) != 0) {
            c->pending--;
            child_error(c, "response is not HTTP/1.1 101", EPROTO);
            conn_drop(c, fd);
            return;
        }
        cn->got += (uint8_t)take;
        i = take;
    }
    for (; i < n && cn->got < STATUS_LEN + 4; i++) {
        unsigned m = cn->got - STATUS_LEN;
        if (buf[i] == (uint8_t)HEAD_END[m])
            cn->got++;
        else
            cn->got = STATUS_LEN + (buf[i] == '\r');
    }
    if (cn->got == STATUS_LEN + 4) {
        c->pending--;
        c->r.held++;
        cn->state = C_HELD;
        if (i < n)
            ws_frames(c, fd, buf + i, n - i);
    }
}

/*
 * Readable: compare the first bytes with "HTTP/1.1 200" and drain the rest
 * (the body; the socket's receive queue is client memory, not the server's).
 * EOF on a held connection means the server dropped it.
 */
static void on_readable(struct child *c, int fd)
{
    struct conn *cn = &c->conns[fd];
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (cn->state == C_HELD || cn->state == C_ASKED) {
            if (c->reported_errors++ < ERROR_REPORTS)
                fprintf(stderr, "holder: the server closed a held connection (%s)\n",
                        n < 0 ? strerror(errno) : "EOF");
            c->r.held--;
            c->r.dropped++;
        } else {
            c->pending--;
            child_error(c, "closed before answering", n < 0 ? errno : ECONNRESET);
        }
        conn_drop(c, fd);
        return;
    }
    if (c->o->ws_path) {
        ws_readable(c, fd, (const uint8_t *)buf, (size_t)n);
        return;
    }
    if (cn->state != C_WAITING && cn->state != C_ASKED)
        return; /* rest of the response: drained */
    size_t want = (size_t)STATUS_LEN - cn->got;
    size_t take = (size_t)n < want ? (size_t)n : want;
    if (memcmp(buf, STATUS_OK + cn->got, take) != 0) {
        if (cn->state == C_ASKED)
            c->r.held--;
        else
            c->pending--;
        child_error(c, "response is not HTTP/1.1 200", EPROTO);
        conn_drop(c, fd);
        return;
    }
    cn->got += (uint8_t)take;
    if (cn->got == STATUS_LEN) {
        if (cn->state == C_ASKED) {
            c->r.requests++;
        } else {
            c->pending--;
            c->r.held++;
        }
        cn->state = C_HELD;
    }
}

/*
 * -i: send the requests owed since the last call. Over one interval every
 * held connection is asked once: the quota grows by held * dt / interval and
 * a cursor walks the fd table. A connection still waiting for its previous
 * answer is skipped (it is asked again on the next pass).
 */
static void child_refresh(struct child *c, double dt)
{
    if (c->o->interval_s <= 0 || c->r.held <= 0)
        return;
    c->quota += (double)c->r.held * dt / c->o->interval_s;
    for (size_t scanned = 0; c->quota >= 1.0 && scanned < c->nconns; scanned++) {
        size_t fd = c->cursor;
        c->cursor = (c->cursor + 1) % c->nconns;
        if (c->conns[fd].state != C_HELD)
            continue;
        c->quota -= 1.0;
        if (send((int)fd, REQUEST, sizeof(REQUEST) - 1, MSG_NOSIGNAL) !=
            (ssize_t)sizeof(REQUEST) - 1) {
            c->r.held--;
            c->r.dropped++;
            conn_drop(c, (int)fd);
            continue;
        }
        c->conns[fd] = (struct conn){ .state = C_ASKED };
    }
    if (c->quota > (double)c->r.held)
        c->quota = (double)c->r.held; /* never owe more than one pass */
}

static void child_dispatch(struct child *c, struct epoll_event *evs, int n,
                           bool *stop)
{
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == c->ctl_fd) {
            *stop = true;
            continue;
        }
        if (c->conns[fd].state == C_CONNECTING)
            on_connected(c, fd);
        else if (c->conns[fd].state != C_FREE)
            on_readable(c, fd);
    }
}

/* Phase 1: open everything, at most o->inflight connects at a time. */
static void child_open_all(struct child *c)
{
    struct epoll_event evs[MAX_EVENTS];
    double deadline = now_s() + c->o->open_timeout_s;
    long end = c->first + c->count;
    bool stop = false;
    while (c->next < end || c->pending > 0) {
        while (c->next < end && c->pending < c->o->inflight)
            open_one(c, c->next++);
        if (now_s() > deadline || stop)
            break;
        int n = epoll_wait(c->epfd, evs, MAX_EVENTS, 100);
        if (n > 0)
            child_dispatch(c, evs, n, &stop);
    }
    /* Whatever is unanswered now failed: close it. */
    for (size_t fd = 0; fd < c->nconns; fd++) {
        if (c->conns[fd].state == C_CONNECTING || c->conns[fd].state == C_WAITING) {
            child_error(c, "timed out", ETIMEDOUT);
            conn_drop(c, (int)fd);
        }
    }
    c->r.errors += end - c->next; /* never started (deadline) */
    c->pending = 0;
}

/* Phase 2: watch the held connections until the parent says stop. */
static void child_hold(struct child *c)
{
    struct epoll_event evs[MAX_EVENTS];
    double last = now_s();
    double deadline = last + c->o->max_hold_s;
    bool stop = false;
    while (!stop && now_s() < deadline) {
        int n = epoll_wait(c->epfd, evs, MAX_EVENTS, c->o->interval_s > 0 ? 20 : 200);
        if (n > 0)
            child_dispatch(c, evs, n, &stop);
        double t = now_s();
        child_refresh(c, t - last);
        last = t;
    }
}

static void write_report(int fd, const struct report *r)
{
    /* A struct this small is written atomically to a pipe. */
    if (write(fd, r, sizeof(*r)) != (ssize_t)sizeof(*r))
        _exit(1);
}

static void child_run(const struct options *o, long first, long count,
                       int report_fd, int ctl_fd)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    struct child c = { .o = o, .first = first, .count = count, .next = first,
                       .ctl_fd = ctl_fd };
    c.nconns = rl.rlim_cur > 1u << 20 ? 1u << 20 : (size_t)rl.rlim_cur;
    c.conns = calloc(c.nconns, sizeof(*c.conns));
    c.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!c.conns || c.epfd < 0) {
        perror("holder: child set-up");
        _exit(1);
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = ctl_fd };
    epoll_ctl(c.epfd, EPOLL_CTL_ADD, ctl_fd, &ev);

    child_open_all(&c);
    write_report(report_fd, &c.r);
    child_hold(&c);
    write_report(report_fd, &c.r);
    for (size_t fd = 0; fd < c.nconns; fd++)
        if (c.conns[fd].state != C_FREE)
            close((int)fd);
    free(c.conns);
    _exit(0);
}

static int read_report(int fd, struct report *r)
{
    ssize_t n;
    do
        n = read(fd, r, sizeof(*r));
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof(*r) ? 0 : -1;
}

/* Sum one report from every child; a child that died counts as all errors. */
static struct report gather(const int *report_fds, const long *counts, int nchild)
{
    struct report sum = { 0 };
    for (int i = 0; i < nchild; i++) {
        struct report r;
        if (read_report(report_fds[i], &r) < 0)
            r = (struct report){ .errors = counts[i] };
        sum.held += r.held;
        sum.errors += r.errors;
        sum.dropped += r.dropped;
        sum.requests += r.requests;
    }
    return sum;
}

/* VmRSS of one process in KiB, 0 if it is gone. */
static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* Hold until stdin closes or sends a line, or for o->hold_s seconds. */
static void wait_release(const struct options *o)
{
    int ms = (o->hold_s > 0 ? o->hold_s : o->max_hold_s) * 1000;
    struct pollfd p = { .fd = 0, .events = POLLIN };
    if (o->hold_s > 0)
        poll(NULL, 0, ms);
    else
        poll(&p, 1, ms);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: holder -p PORT [-h IPV4] [-n N] [-m PER_CHILD] [-a PER_ADDR]\n"
            "              [-c INFLIGHT] [-t OPEN_TIMEOUT_S] [-T MAX_HOLD_S] [-s HOLD_S]\n"
            "              [-b FIRST_SOURCE_IPV4] [-i REQUEST_INTERVAL_S | -w WS_PATH]\n");
    exit(2);
}

static void parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){ .total = 19000, .per_child = 12500, .per_addr = 10000,
                           .inflight = 256, .open_timeout_s = 60, .max_hold_s = 600 };
    const char *host = "127.0.0.1";
    const char *src = "127.0.0.2";
    int opt;
    while ((opt = getopt(argc, argv, "h:p:n:m:a:c:t:T:s:b:i:w:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': o->port = (uint16_t)atoi(optarg); break;
        case 'n': o->total = atol(optarg); break;
        case 'm': o->per_child = atol(optarg); break;
        case 'a': o->per_addr = atol(optarg); break;
        case 'c': o->inflight = atol(optarg); break;
        case 't': o->open_timeout_s = atoi(optarg); break;
        case 'T': o->max_hold_s = atoi(optarg); break;
        case 's': o->hold_s = atoi(optarg); break;
        case 'b': src = optarg; break;
        case 'i': o->interval_s = atoi(optarg); break;
        case 'w': o->ws_path = optarg; break;
        default: usage();
        }
    }
    if (inet_pton(AF_INET, host, &o->dst) != 1 || o->port == 0 || o->total < 1 ||
        inet_pton(AF_INET, src, &o->src) != 1 || o->interval_s < 0 ||
        o->per_child < 1 || o->per_addr < 1 || o->inflight < 1 ||
        o->open_timeout_s < 1 || o->max_hold_s < 1 ||
        (o->ws_path && (o->interval_s > 0 || o->ws_path[0] != '/' ||
                        strpbrk(o->ws_path, " \r\n"))))
        usage();
    if (o->ws_path) {
        int len = snprintf(NULL, 0, WS_REQUEST_FMT, o->ws_path);
        char *req = malloc((size_t)len + 1);   /* lives as long as the process */
        if (!req) {
            perror("holder");
            exit(1);
        }
        snprintf(req, (size_t)len + 1, WS_REQUEST_FMT, o->ws_path);
        o->request = req;
        o->request_len = (size_t)len;
    } else {
        o->request = REQUEST;
        o->request_len = sizeof(REQUEST) - 1;
    }
    uint32_t first = ntohl(o->src.s_addr);
    uint64_t naddr = (uint64_t)(o->total + o->per_addr - 1) / (uint64_t)o->per_addr;
    if ((first >> 24) != 127u || (first & 0xffffffu) == 0 ||
        (uint64_t)(first & 0xffffffu) + naddr > 0xffffffu) {
        fprintf(stderr, "holder: -b/-n/-a need source addresses beyond 127.0.0.0/8\n");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    struct options o;
    parse_options(argc, argv, &o);
    int nchild = (int)((o.total + o.per_child - 1) / o.per_child);
    if (nchild > MAX_CHILDREN) {
        fprintf(stderr, "holder: more than %d children needed; raise -m\n", MAX_CHILDREN);
        return 2;
    }
    int report_fds[MAX_CHILDREN] = { 0 }, ctl_fds[MAX_CHILDREN] = { 0 };
    long counts[MAX_CHILDREN] = { 0 };
    pid_t pids[MAX_CHILDREN];
    fflush(stdout);
    for (int i = 0; i < nchild; i++) {
        int rep[2], ctl[2];
        if (pipe2(rep, O_CLOEXEC) < 0 || pipe2(ctl, O_CLOEXEC) < 0) {
            perror("holder: pipe");
            return 1;
        }
        long first = (long)i * o.per_child;
        counts[i] = first + o.per_child > o.total ? o.total - first : o.per_child;
        pids[i] = fork();
        if (pids[i] < 0) {
            perror("holder: fork");
            return 1;
        }
        if (pids[i] == 0) {
            close(rep[0]);
            close(ctl[1]);
            for (int j = 0; j < i; j++) { /* siblings' pipes are not ours */
                close(report_fds[j]);
                close(ctl_fds[j]);
            }
            child_run(&o, first, counts[i], rep[1], ctl[0]);
        }
        close(rep[1]);
        close(ctl[0]);
        report_fds[i] = rep[0];
        ctl_fds[i] = ctl[1];
    }

    struct report opened = gather(report_fds, counts, nchild);
    long mem = rss_kb(getpid());
    for (int i = 0; i < nchild; i++)
        mem += rss_kb(pids[i]);
    printf("READY held=%ld errors=%ld dropped=%ld rss_kb=%ld\n", opened.held, opened.errors,
           opened.dropped, mem);
    fflush(stdout);
    wait_release(&o);
    for (int i = 0; i < nchild; i++)
        close(ctl_fds[i]); /* EOF on the control pipe: children finish */
    struct report end = gather(report_fds, counts, nchild);
    for (int i = 0; i < nchild; i++)
        waitpid(pids[i], NULL, 0);
    printf("DONE held=%ld dropped=%ld errors=%ld requests=%ld\n", end.held, end.dropped,
           end.errors, end.requests);
    fflush(stdout);
    return end.held == o.total ? 0 : 1;
}
