/* Unit tests for src/proc/cluster.c. The .c is included for the helpers
 * (backoff, crash-loop ring, exit-status wording, sockets, users, pid file,
 * RSS); the supervisor itself is driven end to end through cluster_run in a
 * forked "service" process with test cluster_ops, the way `myriad serve`
 * and `myriad balance` use it: workers report to the test through a pipe,
 * and the test signals the supervisor. Every wait is bounded; alarm() kills
 * a hung run. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proc/cluster.c"

#include <poll.h>
#include <sys/socket.h>

/* ---- helpers: backoff, crash loop, wording ---------------------------------------- */

static supervisor *fake_supervisor(uint32_t deaths, uint64_t window_ms)
{
    supervisor *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    config_defaults(&s->cfg);
    s->cfg.crash_loop_deaths = deaths;
    s->cfg.crash_loop_window = window_ms;
    s->mode = STOPPING;   /* crash_loop() stops "the service": nothing to stop here */
    s->loop = loop_new();
    assert_non_null(s->loop);
    shm_region *r;
    assert_int_equal(shared_table(&r, &s->table, 4), 0);
    s->shm = r;
    deaths_set(s, deaths ? calloc(deaths, sizeof(uint64_t)) : NULL, deaths);
    return s;
}

static void free_fake(supervisor *s)
{
    loop_free(s->loop);
    s->loop = NULL;
    shm_destroy(s->shm);
    service_table = NULL;
    free(s->deaths);
    free(s);
}

static void test_backoff(void **state)
{
    supervisor *s = fake_supervisor(10, 10000);   /* cap: 10 s / 10 = 1 s */
    assert_int_equal(backoff_ms(s, 0), 0);         /* the first death: at once */
    assert_int_equal(backoff_ms(s, 1), 10);
    assert_int_equal(backoff_ms(s, 2), 20);
    assert_int_equal(backoff_ms(s, 5), 160);
    assert_int_equal(backoff_ms(s, 7), 640);
    assert_int_equal(backoff_ms(s, 8), 1000);
    assert_int_equal(backoff_ms(s, 1000), 1000);
    s->cfg.crash_loop_deaths = 0;                  /* never stop: the global cap */
    assert_int_equal(backoff_ms(s, 40), BACKOFF_MAX_MS);
    s->cfg.crash_loop_deaths = 1000;               /* cap never below the base */
    assert_int_equal(backoff_ms(s, 3), BACKOFF_BASE_MS);
    free_fake(s);
}

static void test_crash_loop_ring(void **state)
{
    const uint64_t sec = 1000000000ull;
    supervisor *s = fake_supervisor(3, 10000);
    uint64_t t = 100 * sec;
    assert_false(crash_loop(s, t));
    assert_false(crash_loop(s, t + 5 * sec));
    assert_false(crash_loop(s, t + 11 * sec));     /* 3 deaths, but over 11 s */
    assert_false(crash_loop(s, t + 16 * sec));     /* last 3 within 11 s */
    assert_true(crash_loop(s, t + 17 * sec));      /* 11, 16, 17: within 6 s */
    assert_int_equal(s->exit_status, 1);
    free_fake(s);
    s = fake_supervisor(0, 10000);                 /* disabled */
    for (int i = 0; i < 100; i++)
        assert_false(crash_loop(s, t + (uint64_t)i));
    free_fake(s);
}

static void test_describe_status(void **state)
{
    char out[96];
    describe_status(3 << 8, out, sizeof(out));
    assert_string_equal(out, "exited with status 3");
    describe_status(SIGKILL, out, sizeof(out));
    assert_string_equal(out, "killed by signal 9 (SIGKILL)");
    describe_status(SIGSEGV | 0x80, out, sizeof(out));
    assert_string_equal(out, "killed by signal 11 (SIGSEGV), core dumped");
}

static void test_worker_count(void **state)
{
    config c;
    config_defaults(&c);
    assert_int_equal(c.workers, 0);                 /* auto is the default */
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
    assert_int_equal(cluster_worker_count(&c), (uint32_t)CPU_COUNT(&set));
    c.workers = 3;
    assert_int_equal(cluster_worker_count(&c), 3);
    c.workers = 5000;
    assert_int_equal(cluster_worker_count(&c), CLUSTER_MAX_WORKERS);
}

/* ---- sockets, users, files --------------------------------------------------------- */

static void test_listeners(void **state)
{
    config c;
    config_defaults(&c);
    c.port = 0;
    listeners ls;
    assert_int_equal(listeners_open(&ls, &c, 3), 0);
    assert_int_equal(ls.n, 3);
    assert_false(ls.shared);
    assert_true(ls.bound_port > 0);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(net_local_port(ls.fd[i]), ls.bound_port);
        int on = 0;
        socklen_t len = sizeof(on);
        assert_int_equal(getsockopt(ls.fd[i], SOL_SOCKET, SO_REUSEPORT, &on, &len), 0);
        assert_true(on);
        assert_int_equal(listener_for(&ls, i), ls.fd[i]);
    }
    assert_true(listeners_match(&ls, &c));
    assert_int_equal(listeners_grow(&ls, 5), 0);
    assert_int_equal(ls.n, 5);
    assert_int_equal(net_local_port(ls.fd[4]), ls.bound_port);
    listeners_shrink(&ls, 2);
    assert_int_equal(ls.n, 2);
    c.backlog = 17;                           /* a backlog applies in place */
    assert_true(listeners_match(&ls, &c));
    assert_int_equal(listeners_set_backlog(&ls, 17), 0);
    assert_int_equal(ls.backlog, 17);
    snprintf(c.host, sizeof(c.host), "127.0.0.2");
    assert_false(listeners_match(&ls, &c));
    snprintf(c.host, sizeof(c.host), "127.0.0.1");
    /* a port someone else holds without SO_REUSEPORT: a clear failure */
    int other = net_listen("127.0.0.1", 0, 16, false, NULL);
    assert_true(other >= 0);
    c.port = net_local_port(other);
    listeners busy;
    assert_true(listeners_open(&busy, &c, 2) < 0);
    assert_int_equal(busy.n, 0);
    close(other);
    listeners_shrink(&ls, 0);
}

static void test_run_as(void **state)
{
    run_as u;
    char err[256];
    assert_int_equal(run_as_resolve(&u, "", err, sizeof(err)), 0);
    assert_false(u.drop);
    assert_int_equal(run_as_resolve(&u, "no-such-user-xyz", err, sizeof(err)), -1);
    assert_string_equal(err, "--user no-such-user-xyz: no such user");
    struct passwd *me = getpwuid(geteuid());
    assert_non_null(me);
    char myname[64];
    snprintf(myname, sizeof(myname), "%s", me->pw_name);
    assert_int_equal(run_as_resolve(&u, myname, err, sizeof(err)), 0);
    assert_false(u.drop);   /* already that user */
    run_as_fini(&u);
    int rc = run_as_resolve(&u, geteuid() == 0 ? "nobody" : "root", err, sizeof(err));
    if (geteuid() == 0) {
        assert_int_equal(rc, 0);
        assert_true(u.drop);
        assert_int_equal(u.uid, getpwnam("nobody")->pw_uid);
        assert_true(u.ngroups >= 1);
        run_as_fini(&u);
    } else {
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err, "needs root"));
    }
}

static void test_pid_file(void **state)
{
    char dir[] = "/tmp/cluster-unit-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/x.pid", dir);
    assert_int_equal(pid_file_write(path, 4242), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[32] = "";
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_string_equal(line, "4242\n");
    pid_file_remove(path, 4243);          /* not ours: kept */
    assert_int_equal(access(path, F_OK), 0);
    pid_file_remove(path, 4242);
    assert_int_equal(access(path, F_OK), -1);
    char bad[160];
    snprintf(bad, sizeof(bad), "%s/no/such/dir/x.pid", dir);
    assert_int_equal(pid_file_write(bad, 1), -ENOENT);
    rmdir(dir);
}

static void test_log_open(void **state)
{
    char path[] = "/tmp/cluster-unit-log-XXXXXX";
    int tmp = mkstemp(path);
    assert_true(tmp >= 0);
    close(tmp);
    int saved = dup(2);
    assert_int_equal(cluster_log_open(path), 0);
    log_info("to the file");
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "r");
    char line[256] = "";
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_non_null(strstr(line, "info: to the file"));
    assert_int_equal(cluster_log_open("/no/such/dir/log"), -ENOENT);
    unlink(path);
}

static void test_sample_rss(void **state)
{
    uint64_t rss = sample_rss(getpid());
    assert_true(rss > 1024 * 1024);   /* this process is more than 1 MiB */
    assert_int_equal(sample_rss(0x7ffffff0), 0);
}

/* ---- the supervisor, end to end ------------------------------------------------------ */

/* What the test workers share with the test: a pipe to report on, and how
 * workers should behave. (No cmocka assert runs in a worker process: a
 * failure there would unwind into the test runner of the child.) */
typedef struct test_env {
    int  report;          /* write end: "start G I PID S\n", "stop G I PID S\n" */
    bool crash_gen1;      /* generation 1 workers exit 7 at once */
    bool reload_fails;    /* the reload op says the configuration is bad */
    bool reload_crashes;  /* the reloaded configuration's workers exit 7 */
} test_env;

static void report(test_env *env, const char *what, const cluster_worker *self)
{
    char line[96];
    int n = snprintf(line, sizeof(line), "%s %u %u %d %d\n", what, self->generation, self->index,
                     (int)getpid(), self->supervised);
    if (write(env->report, line, (size_t)n) != n)
        _exit(98);
}

#define CRASH_MARK 4000000000u   /* a max_requests no test reaches: "crash" */

/* A minimal worker_main: ready, then wait for SIGTERM/SIGINT/SIGQUIT
 * (which the supervisor left blocked for us). */
static int test_worker(void *arg, const config *cfg, int listen_fd, cluster_worker *self)
{
    test_env *env = arg;
    if (listen_fd < 0 || self->table != cluster_workers() || !self->slot)
        return 99;
    if ((env->crash_gen1 && self->generation == 1) || cfg->max_requests == CRASH_MARK)
        return 7;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    sigprocmask(SIG_BLOCK, &set, NULL);   /* in-process, nobody did it for us */
    report(env, "start", self);   /* before ready: reports stay in causal order */
    if (self->supervised)
        cluster_worker_ready(self);
    int sig = 0;
    sigwait(&set, &sig);
    if (sig == SIGTERM)
        cluster_worker_draining(self);
    cluster_worker_publish(self, 11, 2, 0);
    report(env, "stop", self);
    close(listen_fd);
    return 0;
}

static int test_reload(void *arg, config *out, char *err, size_t errlen)
{
    test_env *env = arg;
    if (env->reload_fails) {
        snprintf(err, errlen, "test: refused");
        return -1;
    }
    config_defaults(out);
    out->port = 0;
    out->workers = 3;
    out->shutdown_timeout = 2000;
    if (env->reload_crashes) {
        out->workers = 2;
        out->crash_loop_deaths = 4;
        out->max_requests = CRASH_MARK;
    }
    return 0;
}

static const cluster_ops test_ops = {
    .name = "test", .worker_main = test_worker, .reload = test_reload,
};

static pid_t running;   /* the service of the current test, 0 when none */

typedef struct service {
    pid_t pid;
    int   rd;        /* read end of the report pipe */
    char  buf[8192];
    size_t len;
} service;

/* Runs cluster_run in a child process (as a service's main would). */
static void service_start(service *svc, const config *cfg, test_env env)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    env.report = p[1];
    memset(svc, 0, sizeof(*svc));
    svc->rd = p[0];
    svc->pid = fork();
    assert_true(svc->pid >= 0);
    if (svc->pid == 0) {
        setpgid(0, 0);   /* a group of its own: teardown kills it whole */
        alarm(30);       /* and the workers die with their supervisor */
        close(p[0]);
        int saved = open(getenv("CLUSTER_UNIT_LOG") ? getenv("CLUSTER_UNIT_LOG") : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(saved, 2);   /* the supervisor's log: quiet */
        close(saved);
        exit(cluster_run(cfg, &test_ops, &env));
    }
    setpgid(svc->pid, svc->pid);
    running = svc->pid;
    close(p[1]);
}

/* Reads reports until `count` lines matching prefix are in, or 10 s. */
static int service_wait(service *svc, const char *prefix, int count)
{
    for (int waited = 0; waited < 10000; waited += 50) {
        int n = 0;
        for (char *l = svc->buf; (l = strstr(l, prefix)); l++)
            n += l == svc->buf || l[-1] == '\n';
        if (n >= count)
            return n;
        struct pollfd pfd = { .fd = svc->rd, .events = POLLIN };
        if (poll(&pfd, 1, 50) == 1) {
            ssize_t r = read(svc->rd, svc->buf + svc->len, sizeof(svc->buf) - 1 - svc->len);
            if (r > 0)
                svc->len += (size_t)r;
            svc->buf[svc->len] = '\0';
        }
    }
    fail_msg("timed out waiting for %d '%s' reports; got:\n%s", count, prefix, svc->buf);
    return 0;
}

/* Whatever a failed test left running: the service's process group. */
static int kill_leftovers(void **state)
{
    if (running > 0) {
        kill(-running, SIGKILL);
        waitpid(running, NULL, 0);
        running = 0;
    }
    return 0;
}

static int service_exit(service *svc)
{
    for (int waited = 0; waited < 10000; waited += 10) {
        int st;
        if (waitpid(svc->pid, &st, WNOHANG) == svc->pid) {
            close(svc->rd);
            kill(-svc->pid, SIGKILL);   /* no worker outlives the test */
            running = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(10000);
    }
    kill(svc->pid, SIGKILL);
    fail_msg("the service did not exit within 10 s");
    return -1;
}

static config test_config(int workers)
{
    config c;
    config_defaults(&c);
    c.port = 0;
    c.workers = workers;
    c.shutdown_timeout = 2000;
    return c;
}

static void test_start_and_stop(void **state)
{
    config c = test_config(2);
    service svc;
    service_start(&svc, &c, (test_env){ 0 });
    service_wait(&svc, "start 1 ", 2);
    assert_non_null(strstr(svc.buf, "start 1 0 "));
    assert_non_null(strstr(svc.buf, "start 1 1 "));
    kill(svc.pid, SIGTERM);
    service_wait(&svc, "stop 1 ", 2);
    assert_int_equal(service_exit(&svc), 0);
}

static void test_reload_new_generation(void **state)
{
    config c = test_config(2);
    service svc;
    service_start(&svc, &c, (test_env){ 0 });
    service_wait(&svc, "start 1 ", 2);
    kill(svc.pid, SIGHUP);   /* test_reload: 3 workers */
    service_wait(&svc, "start 2 ", 3);
    service_wait(&svc, "stop 1 ", 2);   /* the old drain once replaced */
    assert_non_null(strstr(svc.buf, "start 2 2 "));
    kill(svc.pid, SIGTERM);
    service_wait(&svc, "stop 2 ", 3);
    assert_int_equal(service_exit(&svc), 0);
}

static void test_reload_failure_keeps_workers(void **state)
{
    config c = test_config(2);
    service svc;
    service_start(&svc, &c, (test_env){ .reload_fails = true });
    service_wait(&svc, "start 1 ", 2);
    kill(svc.pid, SIGHUP);
    usleep(300000);
    kill(svc.pid, SIGTERM);
    service_wait(&svc, "stop 1 ", 2);
    assert_null(strstr(svc.buf, "start 2 "));
    assert_int_equal(service_exit(&svc), 0);
}

/* A reload whose workers crash-loop goes back to the configuration that
 * worked (generation 3 = generation 1's), instead of stopping. */
static void test_reload_crash_loop_rolls_back(void **state)
{
    config c = test_config(2);
    service svc;
    service_start(&svc, &c, (test_env){ .reload_crashes = true });
    service_wait(&svc, "start 1 ", 2);
    kill(svc.pid, SIGHUP);
    service_wait(&svc, "start 3 ", 2);
    service_wait(&svc, "stop 1 ", 2);          /* drained once generation 3 serves */
    assert_null(strstr(svc.buf, "start 2 "));
    /* generation 1 served until then */
    assert_true(strstr(svc.buf, "stop 1 ") > strstr(svc.buf, "start 3 "));
    kill(svc.pid, SIGTERM);
    service_wait(&svc, "stop 3 ", 2);
    assert_int_equal(service_exit(&svc), 0);
}

static void test_crash_loop_exit(void **state)
{
    config c = test_config(2);
    c.crash_loop_deaths = 4;
    service svc;
    service_start(&svc, &c, (test_env){ .crash_gen1 = true });
    assert_int_equal(service_exit(&svc), 1);
}

static void test_stop_now(void **state)
{
    config c = test_config(2);
    service svc;
    service_start(&svc, &c, (test_env){ 0 });
    service_wait(&svc, "start 1 ", 2);
    kill(svc.pid, SIGQUIT);   /* the workers get SIGQUIT */
    service_wait(&svc, "stop 1 ", 2);
    assert_int_equal(service_exit(&svc), 0);
}

/* kill -9 of a worker: a new one for the same index and generation. */
static void test_respawn_after_kill(void **state)
{
    config c = test_config(2);
    service svc;
    service_start(&svc, &c, (test_env){ 0 });
    service_wait(&svc, "start 1 ", 2);
    int pid = 0;
    assert_int_equal(sscanf(strstr(svc.buf, "start 1 1 "), "start 1 1 %d", &pid), 1);
    kill(pid, SIGKILL);
    service_wait(&svc, "start 1 1 ", 2);
    kill(svc.pid, SIGTERM);
    service_wait(&svc, "stop 1 ", 2);
    assert_int_equal(service_exit(&svc), 0);
}

/* SIGTERM sent to one worker directly: it drains and a successor starts,
 * without counting as a crash. */
static void test_worker_leaving_on_its_own(void **state)
{
    config c = test_config(2);
    c.crash_loop_deaths = 1;   /* one crash would stop the service */
    service svc;
    service_start(&svc, &c, (test_env){ 0 });
    service_wait(&svc, "start 1 ", 2);
    int pid = 0;
    assert_int_equal(sscanf(strstr(svc.buf, "start 1 0 "), "start 1 0 %d", &pid), 1);
    kill(pid, SIGTERM);
    service_wait(&svc, "start 1 0 ", 2);
    kill(svc.pid, SIGTERM);
    service_wait(&svc, "stop 1 ", 3);
    assert_int_equal(service_exit(&svc), 0);
}

/* One worker and no recycling: no supervisor, the service process serves. */
static void test_in_process_one_worker(void **state)
{
    config c = test_config(1);
    service svc;
    service_start(&svc, &c, (test_env){ 0 });
    service_wait(&svc, "start 1 0 ", 1);
    char expect[64];
    snprintf(expect, sizeof(expect), "start 1 0 %d 0\n", (int)svc.pid);
    assert_non_null(strstr(svc.buf, expect));
    kill(svc.pid, SIGTERM);
    service_wait(&svc, "stop 1 0 ", 1);
    assert_int_equal(service_exit(&svc), 0);
    /* with a recycling limit, one worker is supervised */
    c.max_requests = 1000;
    service_start(&svc, &c, (test_env){ 0 });
    service_wait(&svc, "start 1 0 ", 1);
    assert_null(strstr(svc.buf, expect));
    assert_non_null(strstr(svc.buf, " 1\n"));
    kill(svc.pid, SIGTERM);
    service_wait(&svc, "stop 1 0 ", 1);
    assert_int_equal(service_exit(&svc), 0);
}

int main(void)
{
    alarm(120);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_crash_loop_ring),
        cmocka_unit_test(test_describe_status),
        cmocka_unit_test(test_worker_count),
        cmocka_unit_test(test_listeners),
        cmocka_unit_test(test_run_as),
        cmocka_unit_test(test_pid_file),
        cmocka_unit_test(test_log_open),
        cmocka_unit_test(test_sample_rss),
        cmocka_unit_test_teardown(test_start_and_stop, kill_leftovers),
        cmocka_unit_test_teardown(test_reload_new_generation, kill_leftovers),
        cmocka_unit_test_teardown(test_reload_failure_keeps_workers, kill_leftovers),
        cmocka_unit_test_teardown(test_reload_crash_loop_rolls_back, kill_leftovers),
        cmocka_unit_test_teardown(test_crash_loop_exit, kill_leftovers),
        cmocka_unit_test_teardown(test_stop_now, kill_leftovers),
        cmocka_unit_test_teardown(test_respawn_after_kill, kill_leftovers),
        cmocka_unit_test_teardown(test_worker_leaving_on_its_own, kill_leftovers),
        cmocka_unit_test_teardown(test_in_process_one_worker, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
