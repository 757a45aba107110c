/* Unit tests for src/data/redis.c against a real redis-server (Debian's
 * /usr/bin/redis-server, started here on a free loopback port in a temporary
 * directory and killed by PID at the end; a missing server fails the tests).
 *
 * Covered: URL parsing, GET/SET/DEL, 1000 commands pipelined in one loop
 * turn, binary keys and values, timeouts with late replies discarded (no
 * mismatch), AUTH + SELECT, a Unix socket, server killed (DOWN, breaker
 * open) and restarted on the same port (reconnect, breaker closed), pub/sub
 * with re-subscription, key-tracking invalidations from another client,
 * and redis_free with commands in flight (CLOSED; ASan checks leaks).
 * Every wait is bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "data/redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define REDIS_SERVER "/usr/bin/redis-server"
#define WAIT_MS      10000   /* the bound of every wait */

/* ---- the server -------------------------------------------------------------------- */

static struct {
    pid_t pid;
    int   port;
    char  dir[64];
    char  sock[128];
    char  url[64];
} srv = { .pid = -1 };

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

/* A synchronous hiredis connection: the "other client" of the tests. */
static redisContext *sync_conn(void)
{
    struct timeval tv = { 1, 0 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
    if (c && !c->err)
        redisSetTimeout(c, (struct timeval){ 5, 0 });
    return c;
}

/* Runs one command on a fresh synchronous connection; returns the reply
 * (caller frees) or NULL. */
static redisReply *sync_cmd(const char *fmt, ...)
{
    redisContext *c = sync_conn();
    redisReply *rep = NULL;
    if (c && !c->err) {
        va_list ap;
        va_start(ap, fmt);
        rep = redisvCommand(c, fmt, ap);
        va_end(ap);
    }
    if (c)
        redisFree(c);
    return rep;
}

static bool srv_ping(void)
{
    redisReply *rep = sync_cmd("PING");
    bool ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    if (rep)
        freeReplyObject(rep);
    return ok;
}

static void srv_start(void)
{
    char port[16], log[128];
    snprintf(port, sizeof port, "%d", srv.port);
    snprintf(log, sizeof log, "%s/redis.log", srv.dir);
    pid_t pid = fork();
    if (pid == 0) {
        execl(REDIS_SERVER, REDIS_SERVER, "--port", port, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--dir", srv.dir, "--daemonize", "no", "--logfile", log,
              "--unixsocket", srv.sock, "--enable-debug-command", "yes", (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        abort();
    srv.pid = pid;
    uint64_t end = now_ms() + WAIT_MS;
    while (!srv_ping()) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            srv.pid = -1;
            fprintf(stderr, "redis-server exited (status %d); is %s installed?\n", st,
                    REDIS_SERVER);
            abort();
        }
        if (now_ms() > end) {
            fprintf(stderr, "redis-server did not answer PING\n");
            abort();
        }
        usleep(20000);
    }
}

static void srv_kill(void)
{
    if (srv.pid <= 0)
        return;
    kill(srv.pid, SIGKILL);
    waitpid(srv.pid, NULL, 0);
    srv.pid = -1;
}

static void srv_cleanup(void)
{
    srv_kill();
    char path[160];
    snprintf(path, sizeof path, "%s/redis.log", srv.dir);
    unlink(path);
    unlink(srv.sock);
    rmdir(srv.dir);
}

static int group_setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_ERROR);
    snprintf(srv.dir, sizeof srv.dir, "/tmp/myriad-redis-test-XXXXXX");
    if (!mkdtemp(srv.dir))
        return -1;
    snprintf(srv.sock, sizeof srv.sock, "%s/redis.sock", srv.dir);
    srv.port = free_port();
    snprintf(srv.url, sizeof srv.url, "redis://127.0.0.1:%d", srv.port);
    atexit(srv_cleanup);
    srv_start();
    return 0;
}

static int group_teardown(void **state)
{
    srv_cleanup();
    return 0;
}

/* ---- the client ---------------------------------------------------------------------- */

typedef struct fixture {
    loop  *l;
    redis *r;
} fixture;

static bool in_submit;   /* set around submits: callbacks must never run inside */

#define WAIT_FOR(f, cond)                                                \
    do {                                                                 \
        uint64_t end_ = now_ms() + WAIT_MS;                              \
        while (!(cond) && now_ms() < end_)                               \
            loop_run_once((f)->l, 10);                                   \
        assert_true(cond);                                               \
    } while (0)

static redis *client(fixture *f, const char *url, uint64_t timeout_ms)
{
    redis_options o = {
        .url = url, .timeout_ms = timeout_ms, .breaker_cooldown_ms = 200,
        .backoff_min_ms = 20, .backoff_max_ms = 200,
    };
    char err[256] = "";
    redis *r = redis_new(f->l, &o, err, sizeof err);
    if (!r)
        fprintf(stderr, "redis_new: %s\n", err);
    return r;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->l = loop_new();
    f->r = client(f, srv.url, 1000);
    *state = f;
    return f->l && f->r ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    redis_free(f->r);
    loop_run_once(f->l, 0);
    loop_free(f->l);
    free(f);
    return 0;
}

static bool connected(const redis *r)
{
    redis_stats s;
    redis_get_stats(r, &s);
    return s.connected && s.breaker == REDIS_BREAKER_CLOSED;
}

/* What a callback saw. */
typedef struct rec {
    int               calls;
    enum redis_status st;
    int               type;
    long long         integer;
    size_t            len;
    char              str[256];
} rec;

static void on_rec(void *arg, enum redis_status st, const redisReply *reply)
{
    rec *x = arg;
    assert_false(in_submit);
    x->calls++;
    x->st = st;
    x->type = reply ? reply->type : -1;
    if (reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS ||
                  reply->type == REDIS_REPLY_ERROR)) {
        x->len = reply->len < sizeof x->str ? reply->len : sizeof x->str;
        memcpy(x->str, reply->str, x->len);
    }
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        x->integer = reply->integer;
    assert_true((reply != NULL) == (st == REDIS_STATUS_OK || st == REDIS_STATUS_ERROR));
}

static int cmd(redis *r, rec *x, const char *a0, const char *a1, const char *a2)
{
    const char *argv[] = { a0, a1, a2 };
    size_t len[] = { strlen(a0), a1 ? strlen(a1) : 0, a2 ? strlen(a2) : 0 };
    in_submit = true;
    int rc = redis_command_argv(r, a2 ? 3 : a1 ? 2 : 1, argv, len, on_rec, x);
    in_submit = false;
    return rc;
}

/* ---- URL ---------------------------------------------------------------------------------- */

static void test_url(void **state)
{
    redis_url u;
    char err[256];
    assert_int_equal(redis_url_parse("redis://127.0.0.1", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
    assert_int_equal(redis_url_parse("redis://:s%40cret@cache.local:7000/3", &u, err,
                                     sizeof err), 0);
    assert_string_equal(u.host, "cache.local");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 3);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "s@cret");
    assert_int_equal(redis_url_parse("redis://app:pw@[::1]:6380/", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6380);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "pw");
    assert_int_equal(redis_url_parse("unix:///run/redis.sock?db=2", &u, err, sizeof err), 0);
    assert_string_equal(u.path, "/run/redis.sock");
    assert_int_equal(u.db, 2);
    assert_int_equal(redis_url_parse("unix://:pw@/run/r.sock", &u, err, sizeof err), 0);
    assert_string_equal(u.password, "pw");

    static const char *const bad[] = {
        "", "http://x", "redis://", "redis://host:0", "redis://host:65536", "redis://host:x",
        "redis://host/abc", "redis://user@host", "redis://:@host", "redis://[::1",
        "unix://relative.sock", "unix:///s?db=x", "unix:///s?foo=1", "rediss://host",
        "redis://ho st", "redis://:%zz@host", "redis://:%00@host",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(redis_url_parse(bad[i], &u, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "redis URL"));
    }

    config cfg;
    config_defaults(&cfg);
    unsetenv("REDIS_URL");
    assert_null(redis_config_url(&cfg));
    assert_int_equal(redis_config_check(&cfg, err, sizeof err), 0);
    setenv("REDIS_URL", "redis://x:1", 1);
    assert_string_equal(redis_config_url(&cfg), "redis://x:1");
    setenv("REDIS_URL", "nope", 1);
    assert_int_equal(redis_config_check(&cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "REDIS_URL"));
    snprintf(cfg.redis, sizeof cfg.redis, "redis://h:99999");
    assert_int_equal(redis_config_check(&cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "--redis"));
    unsetenv("REDIS_URL");

    loop *l = loop_new();
    redis_options o = { .url = "redis://:@x" };
    assert_null(redis_new(l, &o, err, sizeof err));
    assert_non_null(strstr(err, "empty password"));
    loop_free(l);
    assert_string_equal(redis_status_name(REDIS_STATUS_TIMEOUT), "timeout");
    assert_string_equal(redis_status_name((enum redis_status)99), "?");
}

/* ---- commands ------------------------------------------------------------------------------ */

static void test_round_trip(void **state)
{
    fixture *f = *state;
    WAIT_FOR(f, connected(f->r));
    assert_true(redis_available(f->r));
    rec set = { 0 }, get = { 0 }, del = { 0 }, get2 = { 0 }, bad = { 0 };
    in_submit = true;
    assert_int_equal(redis_set(f->r, "rt:k", 4, "value", 5, 60000, on_rec, &set), 0);
    assert_int_equal(redis_get(f->r, "rt:k", 4, on_rec, &get), 0);
    assert_int_equal(redis_del(f->r, "rt:k", 4, on_rec, &del), 0);
    assert_int_equal(redis_get(f->r, "rt:k", 4, on_rec, &get2), 0);
    in_submit = false;
    assert_int_equal(cmd(f->r, &bad, "NOSUCHCOMMAND", NULL, NULL), 0);
    assert_int_equal(set.calls + get.calls, 0);   /* never inside the submit */
    WAIT_FOR(f, bad.calls == 1);
    assert_int_equal(set.st, REDIS_STATUS_OK);
    assert_memory_equal(set.str, "OK", 2);
    assert_int_equal(get.st, REDIS_STATUS_OK);
    assert_int_equal(get.type, REDIS_REPLY_STRING);
    assert_int_equal(get.len, 5);
    assert_memory_equal(get.str, "value", 5);
    assert_int_equal(del.integer, 1);
    assert_int_equal(get2.type, REDIS_REPLY_NIL);
    assert_int_equal(bad.st, REDIS_STATUS_ERROR);
    assert_non_null(strstr(bad.str, "unknown command"));

    /* DEL of many keys, PUBLISH without a callback */
    const void *keys[] = { "rt:a", "rt:b", "rt:c" };
    size_t klens[] = { 4, 4, 4 };
    rec s1 = { 0 }, s2 = { 0 }, dm = { 0 };
    redis_set(f->r, "rt:a", 4, "1", 1, 0, on_rec, &s1);
    redis_set(f->r, "rt:b", 4, "2", 1, 0, on_rec, &s2);
    assert_int_equal(redis_del_many(f->r, 3, keys, klens, on_rec, &dm), 0);
    assert_int_equal(redis_publish(f->r, "rt:chan", 7, "x", 1, NULL, NULL), 0);
    WAIT_FOR(f, dm.calls == 1);
    assert_int_equal(dm.integer, 2);

    /* refused at the door: cb never runs */
    assert_int_equal(cmd(f->r, &bad, "SUBSCRIBE", "x", NULL), -EINVAL);
    assert_int_equal(cmd(f->r, &bad, "monitor", NULL, NULL), -EINVAL);
    assert_int_equal(cmd(f->r, &bad, "CLIENT", "REPLY", "OFF"), -EINVAL);
    assert_int_equal(redis_command_argv(f->r, 0, NULL, NULL, on_rec, &bad), -EINVAL);
    assert_int_equal(bad.calls, 1);

    redis_stats st;
    redis_get_stats(f->r, &st);
    assert_int_equal(st.commands[REDIS_STATUS_OK], 8);
    assert_int_equal(st.commands[REDIS_STATUS_ERROR], 1);
}

typedef struct seq {
    int  calls;
    bool in_order;
} seq;

static void on_incr(void *arg, enum redis_status st, const redisReply *reply)
{
    seq *s = arg;
    assert_false(in_submit);
    s->calls++;
    if (st != REDIS_STATUS_OK || reply->type != REDIS_REPLY_INTEGER || reply->integer != s->calls)
        s->in_order = false;
}

static void test_pipeline_1000(void **state)
{
    fixture *f = *state;
    WAIT_FOR(f, connected(f->r));
    rec del = { 0 };
    cmd(f->r, &del, "DEL", "pipe:n", NULL);
    WAIT_FOR(f, del.calls == 1);
    seq s = { .in_order = true };
    const char *argv[] = { "INCR", "pipe:n" };
    size_t len[] = { 4, 6 };
    in_submit = true;
    for (int i = 0; i < 1000; i++)   /* one loop turn: one buffer, one flush */
        assert_int_equal(redis_command_argv(f->r, 2, argv, len, on_incr, &s), 0);
    in_submit = false;
    assert_int_equal(s.calls, 0);
    uint64_t it0 = loop_iterations(f->l);
    WAIT_FOR(f, s.calls == 1000);
    assert_true(s.in_order);
    /* all written at once and answered in a few reads, not one turn each */
    assert_true(loop_iterations(f->l) - it0 < 100);
}

static void test_binary(void **state)
{
    fixture *f = *state;
    WAIT_FOR(f, connected(f->r));
    static const char key[] = "bin\0key\r\n";
    static const char val[] = "\0\1\2\r\n$3\r\nfoo\0end";
    rec set = { 0 }, get = { 0 }, other = { 0 };
    redis_set(f->r, key, sizeof key - 1, val, sizeof val - 1, 0, on_rec, &set);
    redis_get(f->r, key, sizeof key - 1, on_rec, &get);
    redis_get(f->r, "bin", 3, on_rec, &other);   /* a prefix of the key up to its NUL */
    WAIT_FOR(f, other.calls == 1);
    assert_int_equal(set.st, REDIS_STATUS_OK);
    assert_int_equal(get.len, sizeof val - 1);
    assert_memory_equal(get.str, val, sizeof val - 1);
    assert_int_equal(other.type, REDIS_REPLY_NIL);
    rec del = { 0 };
    redis_del(f->r, key, sizeof key - 1, on_rec, &del);
    WAIT_FOR(f, del.calls == 1);
    assert_int_equal(del.integer, 1);
}

static void test_timeout_discards_late_replies(void **state)
{
    fixture *f = *state;
    redis_free(f->r);
    f->r = client(f, srv.url, 150);
    WAIT_FOR(f, connected(f->r));
    rec set1 = { 0 }, set2 = { 0 };
    redis_set(f->r, "to:1", 4, "one", 3, 0, on_rec, &set1);
    redis_set(f->r, "to:2", 4, "two", 3, 0, on_rec, &set2);
    WAIT_FOR(f, set2.calls == 1);

    /* the server sleeps 0.6 s: the sleep and the GET behind it time out */
    rec sleep = { 0 }, get1 = { 0 };
    assert_int_equal(cmd(f->r, &sleep, "DEBUG", "SLEEP", "0.6"), 0);
    redis_get(f->r, "to:1", 4, on_rec, &get1);
    WAIT_FOR(f, get1.calls == 1);
    assert_int_equal(sleep.st, REDIS_STATUS_TIMEOUT);
    assert_int_equal(get1.st, REDIS_STATUS_TIMEOUT);
    assert_int_equal(sleep.calls, 1);
    redis_stats st;
    redis_get_stats(f->r, &st);
    assert_int_equal(st.inflight, 2);   /* orphans: their replies are still due */
    assert_int_equal(st.breaker, REDIS_BREAKER_CLOSED);

    /* submitted while the late replies are due: must get its own reply */
    rec get2 = { 0 };
    redis_get(f->r, "to:2", 4, on_rec, &get2);
    WAIT_FOR(f, get2.calls == 1);
    if (get2.st == REDIS_STATUS_OK) {
        assert_int_equal(get2.len, 3);
        assert_memory_equal(get2.str, "two", 3);
    } else {
        assert_int_equal(get2.st, REDIS_STATUS_TIMEOUT);
    }
    redis_get_stats(f->r, &st);
    WAIT_FOR(f, (redis_get_stats(f->r, &st), st.inflight == 0));
    rec get3 = { 0 };
    redis_get(f->r, "to:2", 4, on_rec, &get3);
    WAIT_FOR(f, get3.calls == 1);
    assert_int_equal(get3.st, REDIS_STATUS_OK);
    assert_memory_equal(get3.str, "two", 3);
    assert_int_equal(sleep.calls + get1.calls + get2.calls, 3);   /* exactly once each */
    redis_get_stats(f->r, &st);
    assert_true(st.commands[REDIS_STATUS_TIMEOUT] >= 2);
    assert_int_equal(st.breaker, REDIS_BREAKER_CLOSED);
}

static void test_auth_select_unix(void **state)
{
    fixture *f = *state;
    redisReply *rep = sync_cmd("CONFIG SET requirepass s3cret");
    assert_non_null(rep);
    freeReplyObject(rep);

    char url[256];
    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/3", srv.port);
    redis *r = client(f, url, 1000);
    WAIT_FOR(f, connected(r));
    rec set = { 0 };
    redis_set(r, "auth:k", 6, "in3", 3, 0, on_rec, &set);
    WAIT_FOR(f, set.calls == 1);
    assert_int_equal(set.st, REDIS_STATUS_OK);
    redis_free(r);

    snprintf(url, sizeof url, "unix://default:s3cret@%s?db=4", srv.sock);
    r = client(f, url, 1000);
    WAIT_FOR(f, connected(r));
    set.calls = 0;
    redis_set(r, "auth:k", 6, "in4", 3, 0, on_rec, &set);
    WAIT_FOR(f, set.calls == 1);
    assert_int_equal(set.st, REDIS_STATUS_OK);
    redis_free(r);

    /* a wrong password: never connected, commands fail DOWN */
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", srv.port);
    r = client(f, url, 1000);
    for (int i = 0; i < 20; i++)
        loop_run_once(f->l, 10);
    assert_false(connected(r));
    rec get = { 0 };
    redis_get(r, "auth:k", 6, on_rec, &get);
    WAIT_FOR(f, get.calls == 1);
    assert_int_equal(get.st, REDIS_STATUS_DOWN);
    redis_free(r);

    redisContext *c = sync_conn();
    assert_non_null(c);
    rep = redisCommand(c, "AUTH s3cret");
    freeReplyObject(rep);
    rep = redisCommand(c, "SELECT 3");
    freeReplyObject(rep);
    rep = redisCommand(c, "GET auth:k");
    assert_string_equal(rep->str, "in3");
    freeReplyObject(rep);
    rep = redisCommand(c, "SELECT 4");
    freeReplyObject(rep);
    rep = redisCommand(c, "GET auth:k");
    assert_string_equal(rep->str, "in4");
    freeReplyObject(rep);
    rep = redisCommand(c, "CONFIG SET requirepass %s", "");
    freeReplyObject(rep);
    redisFree(c);
}

static void test_free_with_commands_in_flight(void **state)
{
    fixture *f = *state;
    WAIT_FOR(f, connected(f->r));
    rec sleep = { 0 }, gets[10] = { 0 };
    cmd(f->r, &sleep, "DEBUG", "SLEEP", "0.3");
    for (int i = 0; i < 10; i++)
        redis_get(f->r, "x", 1, on_rec, &gets[i]);
    loop_run_once(f->l, 0);   /* written; the server sleeps */
    loop_run_once(f->l, 0);
    redis_free(f->r);
    f->r = NULL;
    assert_int_equal(sleep.calls, 1);
    assert_int_equal(sleep.st, REDIS_STATUS_CLOSED);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(gets[i].calls, 1);
        assert_int_equal(gets[i].st, REDIS_STATUS_CLOSED);
    }

    /* a fail-fast command whose callback is still queued: CLOSED too */
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", free_port());   /* nobody there */
    f->r = client(f, url, 100);
    rec down = { 0 };
    redis_get(f->r, "x", 1, on_rec, &down);
    assert_int_equal(down.calls, 0);
    redis_free(f->r);
    f->r = NULL;
    assert_int_equal(down.calls, 1);
    assert_int_equal(down.st, REDIS_STATUS_CLOSED);
    usleep(400000);   /* let the server wake up before the next test */
}

/* ---- failure and recovery ------------------------------------------------------------------ */

static void test_kill_breaker_restart(void **state)
{
    fixture *f = *state;
    WAIT_FOR(f, connected(f->r));
    rec pre = { 0 };
    redis_set(f->r, "k", 1, "v", 1, 0, on_rec, &pre);
    WAIT_FOR(f, pre.calls == 1);

    srv_kill();
    rec lost = { 0 };
    redis_get(f->r, "k", 1, on_rec, &lost);
    WAIT_FOR(f, lost.calls == 1);
    assert_int_equal(lost.st, REDIS_STATUS_DOWN);

    redis_stats st;
    WAIT_FOR(f, (redis_get_stats(f->r, &st), st.breaker == REDIS_BREAKER_OPEN));
    assert_false(redis_available(f->r));
    assert_false(st.connected);

    /* open: fail fast, yet never inside the call */
    rec fast = { 0 };
    in_submit = true;
    assert_int_equal(redis_get(f->r, "k", 1, on_rec, &fast), 0);
    in_submit = false;
    assert_int_equal(fast.calls, 0);
    loop_run_once(f->l, 0);
    loop_run_once(f->l, 0);
    assert_int_equal(fast.calls, 1);
    assert_int_equal(fast.st, REDIS_STATUS_DOWN);

    srv_start();   /* the same port, an empty data set */
    WAIT_FOR(f, connected(f->r) && redis_available(f->r));
    redis_get_stats(f->r, &st);
    assert_true(st.reconnects >= 1);
    rec get = { 0 };
    redis_get(f->r, "k", 1, on_rec, &get);
    WAIT_FOR(f, get.calls == 1);
    assert_int_equal(get.st, REDIS_STATUS_OK);
    assert_int_equal(get.type, REDIS_REPLY_NIL);
}

/* ---- pub/sub -------------------------------------------------------------------------------- */

typedef struct inbox {
    int    messages, resubscribed;
    char   channel[64], pattern[64], data[64];
    size_t len;
    redis *unsub_from;   /* unsubscribe from inside the callback */
} inbox;

static void on_msg(void *arg, const redis_message *m)
{
    inbox *in = arg;
    if (m->kind == REDIS_MSG_RESUBSCRIBED) {
        in->resubscribed++;
        return;
    }
    in->messages++;
    snprintf(in->channel, sizeof in->channel, "%.*s", (int)m->channel_len, m->channel);
    snprintf(in->pattern, sizeof in->pattern, "%.*s", (int)m->pattern_len,
             m->pattern ? m->pattern : "");
    in->len = m->len < sizeof in->data ? m->len : sizeof in->data;
    memcpy(in->data, m->data, in->len);
    if (in->unsub_from)
        assert_int_equal(redis_unsubscribe(in->unsub_from, "ps:once", 7, on_msg, in), 0);
}

/* PUBLISH from another client until somebody (the subscriber) receives. */
static void publish_until(fixture *f, const char *ch, const char *data, int *count)
{
    int before = *count;
    uint64_t end = now_ms() + WAIT_MS;
    while (*count == before && now_ms() < end) {
        redisReply *rep = sync_cmd("PUBLISH %s %b", ch, data, strlen(data));
        if (rep)
            freeReplyObject(rep);
        for (int i = 0; i < 5 && *count == before; i++)
            loop_run_once(f->l, 10);
    }
    assert_true(*count > before);
}

static void test_pubsub(void **state)
{
    fixture *f = *state;
    inbox a = { 0 }, b = { 0 }, p = { 0 }, once = { 0 };
    assert_int_equal(redis_subscribe(f->r, "ps:chan", 7, on_msg, &a), 0);
    assert_int_equal(redis_subscribe(f->r, "ps:chan", 7, on_msg, &b), 0);
    assert_int_equal(redis_psubscribe(f->r, "ps:news.*", 9, on_msg, &p), 0);
    assert_int_equal(redis_subscribe(f->r, "__redis__:invalidate", 20, on_msg, &a), -EINVAL);
    publish_until(f, "ps:chan", "hello", &a.messages);
    WAIT_FOR(f, b.messages == a.messages);
    assert_string_equal(a.channel, "ps:chan");
    assert_memory_equal(a.data, "hello", 5);

    publish_until(f, "ps:news.x", "extra", &p.messages);
    assert_string_equal(p.pattern, "ps:news.*");
    assert_string_equal(p.channel, "ps:news.x");
    assert_memory_equal(p.data, "extra", 5);

    /* PUBLISH through the client itself, binary data */
    rec pub = { 0 };
    int seen = a.messages;
    assert_int_equal(redis_publish(f->r, "ps:chan", 7, "a\0b", 3, on_rec, &pub), 0);
    WAIT_FOR(f, pub.calls == 1 && a.messages > seen);
    assert_int_equal(pub.integer, 1);   /* one subscriber connection */
    assert_int_equal(a.len, 3);
    assert_memory_equal(a.data, "a\0b", 3);

    /* unsubscribe from inside the callback */
    once.unsub_from = f->r;
    assert_int_equal(redis_subscribe(f->r, "ps:once", 7, on_msg, &once), 0);
    publish_until(f, "ps:once", "1", &once.messages);
    assert_int_equal(redis_unsubscribe(f->r, "ps:once", 7, on_msg, &once), -ENOENT);
    redisReply *rep = sync_cmd("PUBLISH ps:once 2");   /* in order before the next */
    freeReplyObject(rep);
    publish_until(f, "ps:chan", "after", &a.messages);
    assert_int_equal(once.messages, 1);

    /* restart: re-subscribed, and told so */
    srv_kill();
    srv_start();
    WAIT_FOR(f, a.resubscribed == 1 && b.resubscribed == 1 && p.resubscribed == 1);
    publish_until(f, "ps:chan", "again", &a.messages);
    assert_memory_equal(a.data, "again", 5);
    publish_until(f, "ps:news.y", "more", &p.messages);

    assert_int_equal(redis_unsubscribe(f->r, "ps:chan", 7, on_msg, &a), 0);
    assert_int_equal(redis_punsubscribe(f->r, "ps:news.*", 9, on_msg, &p), 0);
    seen = a.messages;
    publish_until(f, "ps:chan", "only b", &b.messages);
    assert_int_equal(a.messages, seen);
    assert_int_equal(redis_unsubscribe(f->r, "ps:chan", 7, on_msg, &b), 0);
    assert_int_equal(redis_unsubscribe(f->r, "ps:chan", 7, on_msg, &b), -ENOENT);
}

/* ---- tracking ------------------------------------------------------------------------------------ */

typedef struct tracked {
    int  invalidations, resets;
    char keys[16][32];
} tracked;

static void on_inv(void *arg, const char *key, size_t len)
{
    tracked *t = arg;
    if (t->invalidations < 16)
        snprintf(t->keys[t->invalidations], sizeof t->keys[0], "%.*s", (int)len, key);
    t->invalidations++;
}

static void on_reset(void *arg)
{
    ((tracked *)arg)->resets++;
}

static bool seen_key(const tracked *t, const char *key)
{
    for (int i = 0; i < t->invalidations && i < 16; i++)
        if (strcmp(t->keys[i], key) == 0)
            return true;
    return false;
}

static void ext_set(const char *key)
{
    redisReply *rep = sync_cmd("SET %s x", key);
    assert_non_null(rep);
    freeReplyObject(rep);
}

static void test_tracking(void **state)
{
    fixture *f = *state;
    tracked t = { 0 }, u = { 0 };
    const char *prefixes[] = { "user:", "sess:" };
    const char *more[] = { "user:admin:", "cfg:" };   /* overlaps user: (merged) */
    assert_int_equal(redis_track_prefixes(f->r, prefixes, 2, on_inv, on_reset, &t), 0);
    assert_int_equal(redis_track_prefixes(f->r, more, 2, on_inv, on_reset, &u), 0);
    assert_int_equal(redis_track_prefixes(f->r, prefixes, 0, on_inv, on_reset, &t), -EINVAL);
    WAIT_FOR(f, redis_tracking_active(f->r));
    assert_true(t.resets >= 1);   /* at set-up: nothing cached may be trusted */

    /* an unrelated key, our own write (NOLOOP), then a tracked key: only the
     * last is reported, and in order, so the first two never will be */
    ext_set("other:1");
    rec own = { 0 };
    redis_set(f->r, "user:own", 8, "x", 1, 0, on_rec, &own);
    WAIT_FOR(f, own.calls == 1);
    ext_set("user:42");
    WAIT_FOR(f, seen_key(&t, "user:42"));
    assert_false(seen_key(&t, "other:1"));
    assert_false(seen_key(&t, "user:own"));
    assert_false(seen_key(&u, "user:42"));   /* not under u's prefixes */
    ext_set("user:admin:1");
    WAIT_FOR(f, seen_key(&t, "user:admin:1") && seen_key(&u, "user:admin:1"));
    ext_set("cfg:x");
    WAIT_FOR(f, seen_key(&u, "cfg:x"));

    /* FLUSHALL: a reset */
    int resets = t.resets;
    redisReply *rep = sync_cmd("FLUSHALL");
    freeReplyObject(rep);
    WAIT_FOR(f, t.resets > resets);

    /* restart: reset, set up again, invalidations flow again */
    resets = t.resets;
    srv_kill();
    WAIT_FOR(f, !redis_tracking_active(f->r));
    srv_start();
    WAIT_FOR(f, redis_tracking_active(f->r) && t.resets > resets);
    int n = t.invalidations;
    ext_set("sess:9");
    WAIT_FOR(f, t.invalidations > n && seen_key(&t, "sess:9"));

    assert_int_equal(redis_untrack(f->r, on_inv, &u), 0);
    assert_int_equal(redis_untrack(f->r, on_inv, &u), -ENOENT);
    n = u.invalidations;
    ext_set("cfg:y");
    ext_set("sess:10");
    WAIT_FOR(f, seen_key(&t, "sess:10"));
    assert_int_equal(u.invalidations, n);
}

/* The subscriber connection killed alone (CLIENT KILL): tracking and
 * subscriptions come back on their own. */
static void test_subscriber_killed(void **state)
{
    fixture *f = *state;
    tracked t = { 0 };
    inbox a = { 0 };
    const char *prefixes[] = { "k:" };
    assert_int_equal(redis_track_prefixes(f->r, prefixes, 1, on_inv, on_reset, &t), 0);
    assert_int_equal(redis_subscribe(f->r, "sk:chan", 7, on_msg, &a), 0);
    WAIT_FOR(f, redis_tracking_active(f->r));
    int resets = t.resets;
    redisReply *rep = sync_cmd("CLIENT KILL TYPE pubsub");
    assert_non_null(rep);
    freeReplyObject(rep);
    WAIT_FOR(f, t.resets > resets && redis_tracking_active(f->r) && a.resubscribed == 1);
    ext_set("k:1");
    WAIT_FOR(f, seen_key(&t, "k:1"));
    publish_until(f, "sk:chan", "m", &a.messages);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_1000, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_discards_late_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_select_unix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_commands_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_breaker_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pubsub, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tracking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscriber_killed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
