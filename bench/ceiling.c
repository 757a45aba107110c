/*
 * ceiling.c — the "speed of light" HTTP server that bench/compare measures
 * myriad against.
 *
 * It does the least user-space work an HTTP/1.1 keep-alive server can do, so
 * its numbers are what this machine's kernel, loopback and load generator
 * allow: the ceiling no real server can beat. One thread, one level-triggered
 * epoll loop, non-blocking sockets, and two pre-built responses (plaintext and
 * JSON) whose Date header is refreshed once a second.
 *
 * "Parsing" is only this: every "\r\n\r\n" in the bytes read ends one request,
 * and the request line decides which response it gets ("/json" anywhere in it
 * picks the JSON one). Every complete request found in one read is answered,
 * in order, with a single send(), so pipelined requests work. Request bodies
 * are not supported: it is a GET-only benchmark peer, never a real server.
 *
 * Memory: an idle keep-alive connection owns nothing but its slot in the
 * fd-indexed connection table. Heap memory is taken only while a request is
 * split across reads (carry) or the socket refused part of a response
 * (pending), and given back as soon as that is over — which is why
 * bench/idle-memory finds ~40 bytes (one table slot) per idle connection.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -o ceiling bench/ceiling.c
 * Run:   ceiling --host 127.0.0.1 --port 8080
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    READ_SIZE = 64 * 1024,   /* bytes asked of read() per readable event */
    MAX_CARRY = 16 * 1024,   /* longest incomplete request kept between reads */
    MIN_REQUEST = 4,         /* a bare "\r\n\r\n": bounds requests per read */
    MAX_EVENTS = 256,        /* epoll events taken per epoll_wait() */
    LISTEN_BACKLOG = 4096,   /* net.core.somaxconn caps it anyway */
    RESPONSE_MAX = 256,      /* room for one pre-built response, headers + body */
};

/*
 * One connection, stored at conns[fd]. Invariant: carry != NULL iff
 * carry_len > 0, and pending != NULL iff pending_off < pending_len; while
 * pending is set the fd is watched for EPOLLOUT only (no reading, so a client
 * that does not read its responses cannot make us buffer without bound).
 */
struct conn {
    char *carry;          /* start of an unfinished request (heap) or NULL */
    uint32_t carry_len;   /* bytes in carry, <= MAX_CARRY */
    char *pending;        /* response bytes not yet accepted by the socket */
    uint32_t pending_len; /* bytes in pending */
    uint32_t pending_off; /* bytes of pending already sent */
    bool open;            /* slot is a live connection */
};

/* A pre-built response; len is constant because the Date format is fixed. */
struct response {
    char bytes[RESPONSE_MAX];
    size_t len;
};

struct server {
    int epfd;                /* the one epoll instance */
    int lfd;                 /* listening socket */
    bool accept_paused;      /* lfd removed from epoll after EMFILE */
    struct conn *conns;      /* table indexed by fd */
    size_t nconns;           /* table size = RLIMIT_NOFILE soft limit */
    char *in;                /* shared read buffer: carry + READ_SIZE new bytes */
    char *out;               /* shared response buffer for one read's answers */
    size_t out_cap;          /* bytes in out: worst case of one read */
    time_t date_second;      /* second the responses' Date header shows */
    struct response plain;   /* GET /plaintext (and anything not /json) */
    struct response json;    /* GET /json */
};

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void response_build(struct response *r, const char *date,
                           const char *type, const char *body)
{
    int n = snprintf(r->bytes, sizeof(r->bytes),
                     "HTTP/1.1 200 OK\r\n"
                     "Server: ceiling\r\n"
                     "Date: %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "\r\n%s",
                     date, type, strlen(body), body);
    if (n < 0 || (size_t)n >= sizeof(r->bytes)) {
        fprintf(stderr, "ceiling: response does not fit\n");
        exit(1);
    }
    r->len = (size_t)n;
}

/* Rebuild both responses when the wall-clock second changes (cheap: vDSO). */
static void server_refresh_date(struct server *s)
{
    time_t now = time(NULL);
    if (now == s->date_second)
        return;
    s->date_second = now;

    struct tm tm;
    char date[64];
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    response_build(&s->plain, date, "text/plain", "Hello, World!");
    response_build(&s->json, date, "application/json",
                   "{\"message\":\"Hello, World!\"}");
}

static void epoll_set(struct server *s, int op, int fd, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.fd = fd };
    if (epoll_ctl(s->epfd, op, fd, &ev) < 0)
        die("epoll_ctl");
}

static void accept_pause(struct server *s)
{
    if (s->accept_paused)
        return;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->lfd, NULL);
    s->accept_paused = true;
}

static void accept_resume(struct server *s)
{
    if (!s->accept_paused)
        return;
    epoll_set(s, EPOLL_CTL_ADD, s->lfd, EPOLLIN);
    s->accept_paused = false;
}

static void conn_close(struct server *s, int fd)
{
    struct conn *c = &s->conns[fd];
    free(c->carry);
    free(c->pending);
    *c = (struct conn){ 0 };
    close(fd); /* also removes fd from the epoll set */
    accept_resume(s);
}

/*
 * Accept until the queue is empty. Out of descriptors, stop watching the
 * listening socket until a connection closes: with level-triggered epoll a
 * pending connection we cannot accept would otherwise spin the loop.
 */
static void server_accept(struct server *s)
{
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE ||
                errno == ENOBUFS || errno == ENOMEM)
                accept_pause(s);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                perror("accept4");
            return;
        }
        if ((size_t)fd >= s->nconns) { /* cannot happen: table = fd limit */
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        s->conns[fd] = (struct conn){ .open = true };
        epoll_set(s, EPOLL_CTL_ADD, fd, EPOLLIN);
    }
}

/*
 * Send pending bytes. Returns 0 (all sent or would block) or -1 (peer gone).
 * When the last byte leaves, the connection goes back to reading.
 */
static int conn_flush(struct server *s, int fd, struct conn *c)
{
    while (c->pending_off < c->pending_len) {
        ssize_t n = send(fd, c->pending + c->pending_off,
                         c->pending_len - c->pending_off, MSG_NOSIGNAL);
        if (n < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        c->pending_off += (uint32_t)n;
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    epoll_set(s, EPOLL_CTL_MOD, fd, EPOLLIN);
    return 0;
}

/*
 * Send a read's worth of responses in one call; keep what the socket would
 * not take and wait for EPOLLOUT. Returns 0, or -1 if the peer is gone.
 */
static int conn_send(struct server *s, int fd, struct conn *c,
                     const char *buf, size_t len)
{
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        n = 0;
    }
    if ((size_t)n == len)
        return 0;
    c->pending_len = (uint32_t)(len - (size_t)n);
    c->pending_off = 0;
    c->pending = malloc(c->pending_len);
    if (!c->pending)
        return -1;
    memcpy(c->pending, buf + n, c->pending_len);
    epoll_set(s, EPOLL_CTL_MOD, fd, EPOLLOUT);
    return 0;
}

/* Keep the unfinished tail of the read buffer for the next read. */
static int conn_keep_carry(struct conn *c, const char *tail, size_t len)
{
    if (len == 0) {
        free(c->carry);
        c->carry = NULL;
        c->carry_len = 0;
        return 0;
    }
    if (len > MAX_CARRY)
        return -1; /* header section too large: not a benchmark client */
    char *p = realloc(c->carry, len);
    if (!p)
        return -1;
    memcpy(p, tail, len);
    c->carry = p;
    c->carry_len = (uint32_t)len;
    return 0;
}

/* The response a request gets: JSON if its request line mentions /json. */
static const struct response *pick_response(const struct server *s,
                                            const char *req, size_t len)
{
    const char *eol = memmem(req, len, "\r\n", 2);
    size_t line = eol ? (size_t)(eol - req) : len;
    return memmem(req, line, "/json", 5) ? &s->json : &s->plain;
}

/*
 * Answer every complete request in buf[0..len) into s->out. Returns the
 * number of bytes of buf consumed (the rest is an unfinished request) and
 * stores the response bytes' length in *out_len.
 */
static size_t answer_requests(struct server *s, const char *buf, size_t len,
                              size_t *out_len)
{
    size_t start = 0, out = 0;
    const char *end;
    while ((end = memmem(buf + start, len - start, "\r\n\r\n", 4))) {
        size_t req_end = (size_t)(end - buf) + 4;
        const struct response *r = pick_response(s, buf + start,
                                                 req_end - start);
        memcpy(s->out + out, r->bytes, r->len); /* fits: see out_cap */
        out += r->len;
        start = req_end;
    }
    *out_len = out;
    return start;
}

/* One read per readable event: level-triggered epoll calls again if more. */
static void conn_read(struct server *s, int fd, struct conn *c)
{
    size_t have = c->carry_len;
    if (have)
        memcpy(s->in, c->carry, have);
    ssize_t n = read(fd, s->in + have, READ_SIZE);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                   errno != EINTR)) {
        conn_close(s, fd);
        return;
    }
    if (n < 0)
        return;
    have += (size_t)n;

    size_t out_len;
    size_t used = answer_requests(s, s->in, have, &out_len);
    if (conn_keep_carry(c, s->in + used, have - used) < 0 ||
        (out_len && conn_send(s, fd, c, s->out, out_len) < 0))
        conn_close(s, fd);
}

static void conn_on_event(struct server *s, int fd, uint32_t events)
{
    struct conn *c = &s->conns[fd];
    if (!c->open)
        return;
    if (c->pending) {
        if (conn_flush(s, fd, c) < 0)
            conn_close(s, fd);
        return; /* read on the next EPOLLIN, once drained */
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        conn_read(s, fd, c); /* read() reports EOF and errors */
}

static int listen_on(const char *host, int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "ceiling: bad IPv4 address '%s'\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("bind");
    if (listen(fd, LISTEN_BACKLOG) < 0)
        die("listen");
    return fd;
}

/* Raise the fd soft limit to the hard one; the table is sized to match. */
static size_t raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit");
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("setrlimit");
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20))
        rl.rlim_cur = 1u << 20;
    return (size_t)rl.rlim_cur;
}

/*
 * Allocate the shared buffers. out holds the answers to the most requests one
 * read can complete (every MIN_REQUEST bytes of carry + read a request); it
 * is large but only the pages actually written become resident.
 */
static void server_init(struct server *s, const char *host, int port)
{
    *s = (struct server){ .date_second = -1 };
    server_refresh_date(s);
    s->nconns = raise_fd_limit();
    s->conns = calloc(s->nconns, sizeof(*s->conns));
    s->in = malloc(MAX_CARRY + READ_SIZE);
    size_t most = s->plain.len > s->json.len ? s->plain.len : s->json.len;
    s->out_cap = (MAX_CARRY + READ_SIZE) / MIN_REQUEST * most;
    s->out = malloc(s->out_cap);
    if (!s->conns || !s->in || !s->out) {
        fprintf(stderr, "ceiling: out of memory at start-up\n");
        exit(1);
    }
    s->lfd = listen_on(host, port);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0)
        die("epoll_create1");
    epoll_set(s, EPOLL_CTL_ADD, s->lfd, EPOLLIN);
}

static void server_run(struct server *s)
{
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(s->epfd, evs, MAX_EVENTS, 1000);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        server_refresh_date(s);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == s->lfd)
                server_accept(s);
            else
                conn_on_event(s, evs[i].data.fd, evs[i].events);
        }
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: ceiling [--host IPV4] --port PORT\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "host", required_argument, NULL, 'h' },
        { "port", required_argument, NULL, 'p' },
        { NULL, 0, NULL, 0 },
    };
    const char *host = "127.0.0.1";
    int port = 0, c;
    while ((c = getopt_long(argc, argv, "h:p:", opts, NULL)) != -1) {
        if (c == 'h')
            host = optarg;
        else if (c == 'p')
            port = atoi(optarg);
        else
            usage();
    }
    if (port <= 0 || port > 65535)
        usage();

    struct server s;
    server_init(&s, host, port);
    fprintf(stderr, "ceiling: listening on %s:%d\n", host, port);
    server_run(&s);
    return 0;
}
