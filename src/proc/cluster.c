/* cluster — see cluster.h.
 *
 * The supervisor is one event loop (signals through signalfd, a one-second
 * tick, per-index respawn timers, and an eventfd the workers write when they
 * start serving or draining) over two tables:
 *
 *   procs[]  one entry per live worker process, parallel to the rows of the
 *            shared table: procs[i] is the process of row i
 *   idx[]    one entry per worker index: the serving worker of that index
 *            (`active`), the successor being started (`pending`), and the
 *            respawn backoff
 *
 * A worker's life:   fork → STARTING → SERVING → DRAINING → reaped
 *                             (ready)     (told to stop, or by its own signal)
 *
 * Invariants:
 *   - idx[i].active and idx[i].pending are live procs of index i; pending
 *     is STARTING and of the current generation; active is SERVING (or,
 *     right after a reload, an older generation's worker still STARTING,
 *     which serves until its successor does) and may be older while a
 *     reload is in progress;
 *   - a DRAINING proc is nobody's active or pending, and is never respawned;
 *   - reload and recycling tell an old worker to drain only once its
 *     successor is SERVING, so socket i always has a worker accepting —
 *     except right after a crash, when its queue waits, held open by the
 *     supervisor, for the respawned worker.
 *
 * fork() happens only between loop iterations (spawn_wanted), never inside a
 * callback, so the child can free the supervisor's loop and memory cleanly:
 * it returns out of cluster_run with the worker's exit status, and main's
 * normal exit path (LeakSanitizer included, in the ASan build) runs in every
 * worker as in the supervisor.
 */
#include "proc/cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/net.h"
#include "obs/metrics.h"

enum {
    SLOTS           = 4096,   /* worker processes alive at once: rows of the table */
    TICK_MS         = 1000,   /* RSS sampling, recycling limits, kill deadlines */
    BACKOFF_BASE_MS = 10,     /* 2nd quick death of an index waits this, then doubles */
    BACKOFF_MAX_MS  = 30000,
    KILL_GRACE_MS   = 5000,   /* a drain may overrun shutdown_timeout this much: SIGKILL */
    QUIT_GRACE_MS   = 2000,   /* after SIGQUIT (stop now): SIGKILL */
    RETRY_MS        = 1000,   /* after a failed fork, or with every row in use */
};

#define NS_PER_MS UINT64_C(1000000)

/* Process-wide, set once before any worker exists (see cluster_workers). */
static shm_workers *service_table;
/* The metrics registry in the same region: slot i is row i of the table. */
static metrics_registry *service_metrics;

/* ---- listening sockets --------------------------------------------------------- */

typedef struct listeners {
    int      fd[CLUSTER_MAX_WORKERS];  /* socket of worker index i; fd[0..n) open */
    uint32_t n;
    bool     shared;       /* no SO_REUSEPORT: fd[0] serves every index */
    char     host[256];    /* as configured */
    int      port;         /* as configured (0: the kernel's choice) */
    int      bound_port;   /* as bound */
    int      backlog;
} listeners;

static int listener_for(const listeners *ls, uint32_t i)
{
    return ls->shared ? ls->fd[0] : ls->fd[i];
}

static void listeners_shrink(listeners *ls, uint32_t n)
{
    while (ls->n > n)
        close(ls->fd[--ls->n]);
}

/* Binds sockets until there are n (one when shared). Every socket joins
 * the same SO_REUSEPORT group: same address, same (root or not) owner. */
static int listeners_grow(listeners *ls, uint32_t n)
{
    while (ls->n < n && !(ls->shared && ls->n == 1)) {
        const char *step = NULL;
        int port = ls->n ? ls->bound_port : ls->port;
        int fd = net_listen(ls->host, port, ls->backlog, !ls->shared, &step);
        if (fd < 0 && ls->n == 0 && step && strcmp(step, "setsockopt") == 0) {
            /* SO_REUSEPORT unavailable: one socket that every worker inherits */
            ls->shared = true;
            fd = net_listen(ls->host, port, ls->backlog, false, &step);
        }
        if (fd < 0) {
            log_error("cannot listen on %s:%d: %s: %s", ls->host, port, step, strerror(-fd));
            return fd;
        }
        if (ls->n == 0)
            ls->bound_port = net_local_port(fd);
        ls->fd[ls->n++] = fd;
    }
    return 0;
}

static int listeners_open(listeners *ls, const config *cfg, uint32_t n)
{
    memset(ls, 0, sizeof(*ls));
    snprintf(ls->host, sizeof(ls->host), "%s", cfg->host);
    ls->port = cfg->port;
    ls->backlog = cfg->backlog;
    int rc = listeners_grow(ls, n);
    if (rc < 0)
        listeners_shrink(ls, 0);
    return rc;
}

static bool listeners_match(const listeners *ls, const config *cfg)
{
    return strcmp(ls->host, cfg->host) == 0 && ls->port == cfg->port;
}

/* A new backlog applies to the sockets in place: listen(2) again. */
static int listeners_set_backlog(listeners *ls, int backlog)
{
    for (uint32_t i = 0; i < ls->n; i++)
        if (listen(ls->fd[i], backlog) < 0)
            return -errno;
    ls->backlog = backlog;
    return 0;
}

/* ---- the user workers run as ----------------------------------------------------- */

typedef struct run_as {
    bool   drop;        /* workers change to uid/gid/groups */
    char   name[64];
    uid_t  uid;
    gid_t  gid;
    gid_t *groups;      /* owned: supplementary groups of `name` */
    int    ngroups;
} run_as;

static void run_as_fini(run_as *u)
{
    free(u->groups);
    memset(u, 0, sizeof(*u));
}

/* Looks the user up. Policy: without --user nothing changes (as root, a
 * warning says so); with --user, switching to another user needs root. */
static int run_as_resolve(run_as *u, const char *name, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    if (!*name)
        return 0;
    char buf[16384];
    struct passwd pw, *found = NULL;
    int rc = getpwnam_r(name, &pw, buf, sizeof(buf), &found);
    if (!found) {
        snprintf(err, errlen, "--user %s: %s", name, rc ? strerror(rc) : "no such user");
        return -1;
    }
    snprintf(u->name, sizeof(u->name), "%s", name);
    u->uid = pw.pw_uid;
    u->gid = pw.pw_gid;
    if (u->uid == geteuid() && u->gid == getegid())
        return 0;   /* already that user */
    if (geteuid() != 0) {
        snprintf(err, errlen, "--user %s: changing to another user needs root (running as uid %d)",
                 name, (int)geteuid());
        return -1;
    }
    int n = 32;
    for (;;) {
        u->groups = realloc(u->groups, (size_t)n * sizeof(gid_t));
        if (!u->groups) {
            snprintf(err, errlen, "--user %s: out of memory", name);
            return -1;
        }
        int want = n;
        if (getgrouplist(name, u->gid, u->groups, &want) >= 0) {
            u->ngroups = want;
            break;
        }
        if (want <= n || want > 65536) {
            snprintf(err, errlen, "--user %s: cannot read its groups", name);
            run_as_fini(u);
            return -1;
        }
        n = want;
    }
    u->drop = true;
    return 0;
}

/* In a worker: becomes the user for good (groups first, then gid, uid). */
static int run_as_apply(const run_as *u)
{
    if (!u->drop)
        return 0;
    if (setgroups((size_t)u->ngroups, u->groups) < 0 || setresgid(u->gid, u->gid, u->gid) < 0 ||
        setresuid(u->uid, u->uid, u->uid) < 0)
        return -errno;
    if (setuid(0) == 0)   /* must be gone for good */
        return -EPERM;
    return 0;
}

static void warn_if_root(const run_as *u)
{
    if (!u->drop && geteuid() == 0)
        log_warn("running as root: workers keep root privileges "
                 "(pass --user NAME to drop them after binding)");
}

/* ---- small helpers ---------------------------------------------------------------- */

int cluster_log_open(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0)
        return -errno;
    int rc = fd == 2 ? 0 : dup2(fd, 2) < 0 ? -errno : 0;
    if (fd != 2)
        close(fd);
    return rc;
}

static int log_open_for(const char *path, const run_as *u)
{
    int rc = cluster_log_open(path);
    if (rc == 0 && u->drop && fchown(2, u->uid, u->gid) < 0)
        rc = -errno;   /* workers could not reopen it after SIGUSR1 */
    return rc;
}

static int pid_file_write(const char *path, pid_t pid)
{
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -errno;
    char line[32];
    int n = snprintf(line, sizeof(line), "%d\n", (int)pid);
    int rc = write(fd, line, (size_t)n) == n ? 0 : -EIO;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    return rc;
}

/* Removes the pid file if it still names us (a successor may own it). */
static void pid_file_remove(const char *path, pid_t pid)
{
    if (!*path)
        return;
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    int got = 0;
    bool ours = fscanf(f, "%d", &got) == 1 && got == (int)pid;
    fclose(f);
    if (ours)
        unlink(path);
}

uint32_t cluster_worker_count(const config *cfg)
{
    long n = cfg->workers;
    if (n <= 0) {
        cpu_set_t set;
        n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                         : sysconf(_SC_NPROCESSORS_ONLN);
    }
    return n < 1 ? 1 : n > CLUSTER_MAX_WORKERS ? CLUSTER_MAX_WORKERS : (uint32_t)n;
}

shm_workers *cluster_workers(void) { return service_table; }

static void notify_supervisor(cluster_worker *self)
{
    uint64_t one = 1;
    if (self->notify_fd >= 0)
        (void)!write(self->notify_fd, &one, sizeof(one));
}

void cluster_worker_ready(cluster_worker *self)
{
    if (self->slot && shm_worker_set_serving(self->slot))
        notify_supervisor(self);
}

void cluster_worker_draining(cluster_worker *self)
{
    if (self->slot) {
        shm_worker_set_draining(self->slot);
        notify_supervisor(self);
    }
}

void cluster_worker_publish(cluster_worker *self, uint64_t requests, uint64_t accepted,
                            uint32_t connections)
{
    if (self->slot)
        shm_worker_publish(self->slot, requests, accepted, connections);
}

/* --pin: runs the caller on the (index mod count)-th CPU it may use. */
static int pin_index(uint32_t index)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) < 0)
        return -errno;
    uint32_t pick = index % (uint32_t)CPU_COUNT(&set);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &set) && pick-- == 0) {
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            return sched_setaffinity(0, sizeof(set), &set) < 0 ? -errno : 0;
        }
    }
    return -EINVAL;
}

/* "exited with status 3", "killed by signal 9 (SIGKILL)". */
static void describe_status(int status, char *out, size_t cap)
{
    if (WIFEXITED(status)) {
        snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *abbrev = sigabbrev_np(sig);
        snprintf(out, cap, "killed by signal %d (SIG%s)%s", sig, abbrev ? abbrev : "?",
                 WCOREDUMP(status) ? ", core dumped" : "");
    } else {
        snprintf(out, cap, "ended (wait status %#x)", (unsigned)status);
    }
}

/* RSS in bytes from /proc/PID/statm (its second field, in pages); 0 when
 * the process is gone. */
static uint64_t sample_rss(pid_t pid)
{
    char path[48], buf[128];
    snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    unsigned long long size, resident;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return 0;
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* ---- the supervisor's state ------------------------------------------------------ */

enum proc_state { PROC_FREE, PROC_STARTING, PROC_SERVING, PROC_DRAINING };
enum mode { RUNNING, STOPPING, STOPPING_NOW };

typedef struct proc {
    pid_t       pid;            /* 0: free entry */
    uint8_t     state;          /* enum proc_state */
    bool        asked;          /* told to stop: its exit is expected */
    bool        killed;         /* SIGKILL sent */
    uint32_t    index;          /* worker index (socket, CPU) */
    uint32_t    generation;
    shm_worker *row;
    uint64_t    started;        /* loop clock, ns */
    uint64_t    deadline;       /* while stopping: SIGKILL at this loop time, ns */
    uint64_t    shutdown_ms;    /* its generation's shutdown_timeout */
    uint64_t    retire_at;      /* --max-worker-age with jitter, loop ns; 0 = never */
    uint64_t    retire_requests;/* --max-requests with jitter; 0 = never */
} proc;

typedef struct supervisor supervisor;

typedef struct index_state {
    supervisor *sup;
    proc       *active;         /* serving worker of this index */
    proc       *pending;        /* successor being started */
    bool        want_spawn;     /* fork one after this loop iteration */
    uint32_t    quick_deaths;   /* deaths in a row, each after a short life: backoff */
    loop_timer  respawn;        /* the backoff (or a retry) before want_spawn */
} index_state;

typedef struct sig_watch {
    loop_signal ls;
    supervisor *sup;
} sig_watch;

struct supervisor {
    loop              *loop;
    const cluster_ops *ops;
    void              *arg;
    config             cfg;          /* the current generation's configuration */
    uint32_t           generation;   /* 1 at start, +1 per successful reload */
    uint32_t           nworkers;     /* of the current generation */
    enum mode          mode;
    int                exit_status;  /* of the supervisor, once done */
    bool               done;
    bool               any_spawn;    /* some idx[].want_spawn is set */
    pid_t              pid;
    listeners          ls;
    run_as             user;
    shm_region        *shm;
    shm_workers       *table;
    int                notify_fd;    /* eventfd the workers write: ready or draining */
    loop_io            notify_io;
    sig_watch          sig[6];
    loop_timer         tick;
    uint64_t           rng;          /* xorshift64 state, for jitter */
    uint64_t          *deaths;       /* ring: loop times of the last crash_loop_deaths deaths */
    uint32_t           deaths_cap, deaths_len, deaths_next;
    bool               reloading;    /* some index still served by an older generation */
    bool               can_roll_back;/* reloading, and prev is where it came from */
    config            *prev;         /* the configuration before the last reload */
    proc               procs[SLOTS];
    index_state        idx[CLUSTER_MAX_WORKERS];
};

/* What a freshly forked child needs to become a worker. */
typedef struct child_start {
    bool        in_child;
    uint32_t    index;
    shm_worker *row;
    int         fd;
} child_start;

static uint64_t random_below(supervisor *s, uint64_t bound)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return bound ? s->rng % bound : 0;
}

static uint32_t nrows(const supervisor *s) { return shm_workers_high(s->table); }

static proc *proc_by_pid(supervisor *s, pid_t pid)
{
    for (uint32_t i = 0; i < nrows(s); i++)
        if (s->procs[i].pid == pid)
            return &s->procs[i];
    return NULL;
}

static uint32_t live_count(const supervisor *s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < nrows(s); i++)
        n += s->procs[i].pid != 0;
    return n;
}

/* Unlinks p from its index (it is neither serving nor starting there). */
static void detach(supervisor *s, proc *p)
{
    index_state *x = &s->idx[p->index];
    if (x->active == p)
        x->active = NULL;
    if (x->pending == p)
        x->pending = NULL;
}

/* ---- starting workers ---------------------------------------------------------------- */

static void want_spawn(supervisor *s, uint32_t i)
{
    loop_timer_stop(s->loop, &s->idx[i].respawn);
    s->idx[i].want_spawn = true;
    s->any_spawn = true;
}

static void on_respawn(loop_timer *t)
{
    index_state *x = container_of(t, index_state, respawn);
    supervisor *s = x->sup;
    uint32_t i = (uint32_t)(x - s->idx);
    if (s->mode == RUNNING && i < s->nworkers && !x->pending)
        want_spawn(s, i);
}

/* Limits with up to 10% jitter, so workers started together retire apart. */
static void set_retirement(supervisor *s, proc *p)
{
    uint64_t age = s->cfg.max_worker_age, reqs = s->cfg.max_requests;
    p->retire_at = age ? p->started + (age + random_below(s, age / 10 + 1)) * NS_PER_MS : 0;
    p->retire_requests = reqs ? reqs + random_below(s, reqs / 10 + 1) : 0;
}

/* Forks the worker of index i. Returns true in the child. */
static bool spawn(supervisor *s, uint32_t i, child_start *c)
{
    index_state *x = &s->idx[i];
    shm_worker *row = shm_worker_claim(s->table, s->generation, i);
    if (!row) {
        log_error("worker %u: all %d worker rows are in use (old workers still draining); "
                  "retrying in %d ms", i, SLOTS, RETRY_MS);
        loop_timer_start(s->loop, &x->respawn, RETRY_MS, on_respawn);
        return false;
    }
    pid_t pid = fork();
    if (pid < 0) {
        log_error("worker %u: fork: %s; retrying in %d ms", i, strerror(errno), RETRY_MS);
        shm_worker_release(s->table, row);
        loop_timer_start(s->loop, &x->respawn, RETRY_MS, on_respawn);
        return false;
    }
    if (pid == 0) {
        *c = (child_start){ .in_child = true, .index = i, .row = row,
                            .fd = listener_for(&s->ls, i) };
        return true;
    }
    shm_worker_set_pid(row, pid);
    proc *p = &s->procs[row - s->table->slot];
    *p = (proc){ .pid = pid, .state = PROC_STARTING, .index = i, .generation = s->generation,
                 .row = row, .started = loop_update_time(s->loop),
                 .shutdown_ms = s->cfg.shutdown_timeout };
    set_retirement(s, p);
    x->pending = p;
    log_info("worker %u started: pid %d, generation %u", i, (int)pid, s->generation);
    return false;
}

/* Between loop iterations: forks every worker wanted. True in a child. */
static bool spawn_wanted(supervisor *s, child_start *c)
{
    s->any_spawn = false;
    for (uint32_t i = 0; i < s->nworkers; i++) {
        index_state *x = &s->idx[i];
        if (!x->want_spawn)
            continue;
        x->want_spawn = false;
        if (x->pending)
            continue;   /* one successor at a time */
        if (spawn(s, i, c))
            return true;
    }
    return false;
}

/* ---- stopping workers ----------------------------------------------------------------- */

static void drain(supervisor *s, proc *p)
{
    if (p->state == PROC_DRAINING)
        return;
    detach(s, p);
    p->state = PROC_DRAINING;
    p->asked = true;
    p->deadline = loop_now(s->loop) + (p->shutdown_ms + KILL_GRACE_MS) * NS_PER_MS;
    shm_worker_set_draining(p->row);
    kill(p->pid, SIGTERM);
}

static void quit_now(supervisor *s, proc *p)
{
    detach(s, p);
    p->state = PROC_DRAINING;
    p->asked = true;
    p->deadline = loop_now(s->loop) + QUIT_GRACE_MS * NS_PER_MS;
    shm_worker_set_draining(p->row);
    kill(p->pid, SIGQUIT);
}

static void maybe_done(supervisor *s)
{
    if (s->mode != RUNNING && live_count(s) == 0) {
        s->done = true;
        loop_stop(s->loop);
    }
}

static void stop(supervisor *s, enum mode how)
{
    if (s->mode == how || (how == STOPPING && s->mode == STOPPING_NOW))
        return;
    s->mode = how;
    /* Once the workers close theirs too, new connections are refused. */
    listeners_shrink(&s->ls, 0);
    s->any_spawn = false;
    for (uint32_t i = 0; i < CLUSTER_MAX_WORKERS; i++) {
        s->idx[i].want_spawn = false;
        loop_timer_stop(s->loop, &s->idx[i].respawn);
    }
    for (uint32_t i = 0; i < nrows(s); i++) {
        proc *p = &s->procs[i];
        if (p->pid && how == STOPPING)
            drain(s, p);
        else if (p->pid)
            quit_now(s, p);
    }
    maybe_done(s);
}

/* ---- deaths ---------------------------------------------------------------------------- */

static uint64_t backoff_ms(const supervisor *s, uint32_t quick_deaths)
{
    if (quick_deaths == 0)
        return 0;   /* the first death is replaced at once */
    /* capped so the crash-loop detector always sees its deaths in time */
    uint64_t cap = s->cfg.crash_loop_deaths ? s->cfg.crash_loop_window / s->cfg.crash_loop_deaths
                                            : BACKOFF_MAX_MS;
    cap = cap < BACKOFF_BASE_MS ? BACKOFF_BASE_MS : cap > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : cap;
    uint32_t shift = quick_deaths - 1 > 20 ? 20 : quick_deaths - 1;
    uint64_t ms = (uint64_t)BACKOFF_BASE_MS << shift;
    return ms < cap ? ms : cap;
}

static bool roll_back(supervisor *s);

/* Records a death; true when it completes a loop: the service stops, or a
 * reload that caused it is rolled back. */
static bool crash_loop(supervisor *s, uint64_t now)
{
    if (!s->deaths_cap)
        return false;
    s->deaths[s->deaths_next] = now;
    s->deaths_next = (s->deaths_next + 1) % s->deaths_cap;
    if (s->deaths_len < s->deaths_cap)
        s->deaths_len++;
    uint64_t oldest = s->deaths[s->deaths_next % s->deaths_cap];
    if (s->deaths_len < s->deaths_cap || now - oldest > s->cfg.crash_loop_window * NS_PER_MS)
        return false;
    log_error("crash loop: %u worker deaths within %.1f s (--crash-loop-deaths %u, "
              "--crash-loop-window %llu ms); %s", s->deaths_cap, (double)(now - oldest) / 1e9,
              s->cfg.crash_loop_deaths, (unsigned long long)s->cfg.crash_loop_window,
              s->can_roll_back ? "going back to the previous configuration"
                               : "stopping the service");
    if (s->can_roll_back && roll_back(s))
        return true;
    s->exit_status = 1;
    stop(s, STOPPING);
    return true;
}

static void schedule_respawn(supervisor *s, uint32_t i, uint64_t lived_ns)
{
    index_state *x = &s->idx[i];
    if (lived_ns >= s->cfg.crash_loop_window * NS_PER_MS)
        x->quick_deaths = 0;   /* it had a long life: not a crash in a row */
    uint64_t delay = backoff_ms(s, x->quick_deaths);
    if (x->quick_deaths < UINT32_MAX)
        x->quick_deaths++;
    if (delay == 0) {
        log_info("worker %u: starting a new one now", i);
        want_spawn(s, i);
    } else {
        log_info("worker %u: starting a new one in %llu ms (death %u in a row)", i,
                 (unsigned long long)delay, x->quick_deaths);
        loop_timer_start(s->loop, &x->respawn, delay, on_respawn);
    }
}

/* p drains because it got SIGTERM/SIGINT from someone else: replace it. */
static void left_on_its_own(supervisor *s, proc *p);

static void worker_exited(supervisor *s, proc *p, int status)
{
    /* its announcement may be read after its exit (one epoll batch) */
    if (p->state != PROC_DRAINING &&
        atomic_load_explicit(&p->row->state, memory_order_relaxed) == SHM_WORKER_DRAINING)
        left_on_its_own(s, p);
    uint64_t now = loop_now(s->loop), lived = now - p->started;
    index_state *x = &s->idx[p->index];
    bool was_current = x->active == p || x->pending == p;
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    bool expected = p->asked && (clean || p->killed);
    char how[96];
    describe_status(status, how, sizeof(how));
    shm_worker_info info = { 0 };
    shm_worker_read(s->table, (uint32_t)(p->row - s->table->slot), &info);
    log_msg(expected ? LOG_INFO : LOG_WARN,
            "worker %u (pid %d, generation %u) %s%s after %.1f s: %llu requests, "
            "%llu connections", p->index, (int)p->pid, p->generation, how,
            expected ? "" : p->asked ? " while stopping" : " unexpectedly",
            (double)lived / 1e9, (unsigned long long)info.requests,
            (unsigned long long)info.accepted);
    uint32_t index = p->index, generation = p->generation;
    metrics_detach(service_metrics, (uint32_t)(p->row - s->table->slot));
    if (!expected)
        metrics_restart(service_metrics, METRICS_RESTART_CRASH);
    detach(s, p);
    shm_worker_release(s->table, p->row);
    memset(p, 0, sizeof(*p));
    if (expected || crash_loop(s, now))
        return;
    if (s->mode == RUNNING && was_current && generation == s->generation &&
        index < s->nworkers && !x->pending)
        schedule_respawn(s, index, lived);
}

static void reap(supervisor *s)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        proc *p = proc_by_pid(s, pid);
        if (p)
            worker_exited(s, p, status);
    }
    maybe_done(s);
}

/* ---- workers' news (eventfd) ------------------------------------------------------------ */

static void reload_check_done(supervisor *s);

/* p serves: it becomes its index's active worker and the one it replaces
 * drains. */
static void promote(supervisor *s, proc *p)
{
    index_state *x = &s->idx[p->index];
    p->state = PROC_SERVING;
    if (x->pending != p)
        return;
    proc *old = x->active;
    x->active = p;
    x->pending = NULL;
    if (old) {
        if (old->generation != p->generation)
            metrics_restart(service_metrics, METRICS_RESTART_RELOAD);
        log_info("worker %u (pid %d) serving; draining pid %d, generation %u", p->index,
                 (int)p->pid, (int)old->pid, old->generation);
        drain(s, old);
    }
    reload_check_done(s);
}

/* p drains because it got SIGTERM/SIGINT from someone else: replace it. */
static void left_on_its_own(supervisor *s, proc *p)
{
    index_state *x = &s->idx[p->index];
    bool was_current = x->active == p || x->pending == p;
    log_info("worker %u (pid %d) is draining on a signal of its own", p->index, (int)p->pid);
    detach(s, p);
    p->state = PROC_DRAINING;
    p->asked = true;
    p->deadline = loop_now(s->loop) + (p->shutdown_ms + KILL_GRACE_MS) * NS_PER_MS;
    if (s->mode == RUNNING && was_current && p->generation == s->generation &&
        p->index < s->nworkers && !x->pending)
        want_spawn(s, p->index);
}

static void on_notify(loop_io *io, uint32_t events)
{
    supervisor *s = container_of(io, supervisor, notify_io);
    uint64_t count;
    (void)!read(s->notify_fd, &count, sizeof(count));
    for (uint32_t i = 0; i < nrows(s); i++) {
        proc *p = &s->procs[i];
        if (!p->pid || p->state == PROC_DRAINING)
            continue;
        uint32_t st = atomic_load_explicit(&p->row->state, memory_order_relaxed);
        if (st == SHM_WORKER_DRAINING)
            left_on_its_own(s, p);
        else if (st == SHM_WORKER_SERVING && p->state == PROC_STARTING)
            promote(s, p);
    }
}

/* ---- the tick: memory, recycling, deadlines -------------------------------------------- */

static void check_retirement(supervisor *s, proc *p, uint64_t rss, uint64_t now)
{
    index_state *x = &s->idx[p->index];
    if (x->active != p || x->pending || x->want_spawn)
        return;   /* a successor is already on its way */
    uint64_t reqs = atomic_load_explicit(&p->row->requests, memory_order_relaxed);
    char why[160];
    enum metrics_restart cause;
    if (s->cfg.max_worker_memory && rss > s->cfg.max_worker_memory) {
        cause = METRICS_RESTART_MEMORY;
        snprintf(why, sizeof(why), "RSS %llu KiB over --max-worker-memory %llu KiB",
                 (unsigned long long)rss >> 10, (unsigned long long)s->cfg.max_worker_memory >> 10);
    } else if (p->retire_requests && reqs >= p->retire_requests) {
        cause = METRICS_RESTART_REQUESTS;
        snprintf(why, sizeof(why), "%llu requests served (--max-requests %u)",
                 (unsigned long long)reqs, s->cfg.max_requests);
    } else if (p->retire_at && now >= p->retire_at) {
        cause = METRICS_RESTART_AGE;
        snprintf(why, sizeof(why), "%.1f s old (--max-worker-age %llu ms)",
                 (double)(now - p->started) / 1e9, (unsigned long long)s->cfg.max_worker_age);
    } else {
        return;
    }
    metrics_restart(service_metrics, cause);
    log_info("worker %u (pid %d): %s; starting its successor, then draining it", p->index,
             (int)p->pid, why);
    want_spawn(s, p->index);
}

static void on_tick(loop_timer *t)
{
    supervisor *s = container_of(t, supervisor, tick);
    uint64_t now = loop_now(s->loop);
    for (uint32_t i = 0; i < nrows(s); i++) {
        proc *p = &s->procs[i];
        if (!p->pid)
            continue;
        uint64_t rss = sample_rss(p->pid);
        atomic_store_explicit(&p->row->rss, rss, memory_order_relaxed);
        if (p->state == PROC_DRAINING && !p->killed && now >= p->deadline) {
            log_warn("worker %u (pid %d) still running %.1f s after it was told to stop; "
                     "killing it", p->index, (int)p->pid,
                     (double)(p->shutdown_ms + KILL_GRACE_MS) / 1e3);
            kill(p->pid, SIGKILL);
            p->killed = true;
        } else if (p->state == PROC_SERVING && s->mode == RUNNING) {
            check_retirement(s, p, rss, now);
        }
    }
    loop_timer_start(s->loop, &s->tick, TICK_MS, on_tick);
}

/* ---- reload ----------------------------------------------------------------------------- */

static void deaths_set(supervisor *s, uint64_t *ring, uint32_t cap)
{
    free(s->deaths);
    s->deaths = ring;
    s->deaths_cap = cap;
    s->deaths_len = s->deaths_next = 0;
}

/* Everything a new configuration needs that can fail, made before anything
 * changes: its user, its crash-loop ring, and last its sockets (new ones
 * when the address changed; more when there are more workers). */
typedef struct next_gen {
    config    cfg;
    uint32_t  n;
    run_as    user;
    uint64_t *deaths;        /* owned until commit */
    listeners ls;            /* the new sockets when !same_address */
    bool      same_address;
} next_gen;

static int prepare(supervisor *s, next_gen *g, char *err, size_t errlen)
{
    g->n = cluster_worker_count(&g->cfg);
    if (run_as_resolve(&g->user, g->cfg.user, err, errlen) < 0)
        return -1;
    uint32_t cap = g->cfg.crash_loop_deaths;
    g->deaths = cap ? calloc(cap, sizeof(*g->deaths)) : NULL;
    if (cap && !g->deaths) {
        snprintf(err, errlen, "out of memory");
        run_as_fini(&g->user);
        return -1;
    }
    g->same_address = listeners_match(&s->ls, &g->cfg);
    int rc = !g->same_address ? listeners_open(&g->ls, &g->cfg, g->n)
           : g->cfg.backlog != s->ls.backlog ? listeners_set_backlog(&s->ls, g->cfg.backlog)
           : 0;
    if (rc == 0 && g->same_address)
        rc = listeners_grow(&s->ls, g->n);
    if (rc < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", g->cfg.host, g->cfg.port,
                 strerror(-rc));
        if (g->same_address && !s->ls.shared)
            listeners_shrink(&s->ls, s->nworkers);
        run_as_fini(&g->user);
        free(g->deaths);
        return -1;
    }
    return 0;
}

/* Files named by the configuration: a new log file or pid file. */
static void switch_files(supervisor *s, const config *next, const run_as *user)
{
    if (strcmp(next->log_file, s->cfg.log_file) != 0 && *next->log_file) {
        int rc = log_open_for(next->log_file, user);
        if (rc < 0)
            log_error("reload: --log-file %s: %s; logging where before", next->log_file,
                      strerror(-rc));
    }
    if (strcmp(next->pid_file, s->cfg.pid_file) != 0) {
        int rc = *next->pid_file ? pid_file_write(next->pid_file, s->pid) : 0;
        if (rc < 0)
            log_error("reload: --pid-file %s: %s", next->pid_file, strerror(-rc));
        pid_file_remove(s->cfg.pid_file, s->pid);
    }
}

/* Starts generation+1 with g; every old worker drains once its successor
 * serves (those beyond the new count right away). Unless this is a
 * rollback, the configuration it replaces is kept until the generation is
 * complete, to go back to should its workers crash-loop. */
static void commit(supervisor *s, next_gen *g, bool rollback)
{
    uint32_t old_n = s->nworkers;
    switch_files(s, &g->cfg, &g->user);
    if (!rollback && (s->prev || (s->prev = malloc(sizeof(*s->prev)))))
        *s->prev = s->cfg;
    s->can_roll_back = !rollback && s->prev;
    s->reloading = true;
    run_as_fini(&s->user);
    s->user = g->user;
    deaths_set(s, g->deaths, g->cfg.crash_loop_deaths);
    if (!g->same_address) {
        listeners_shrink(&s->ls, 0);   /* the old workers keep their own copies */
        s->ls = g->ls;
    }
    s->cfg = g->cfg;
    s->nworkers = g->n;
    s->generation++;
    uint32_t top = old_n > g->n ? old_n : g->n;
    for (uint32_t i = 0; i < top; i++) {
        index_state *x = &s->idx[i];
        if (x->pending && !x->active) {
            /* still starting, with the old configuration, but the only
             * worker of its index: it serves until its successor does */
            x->active = x->pending;
            x->pending = NULL;
        } else if (x->pending) {
            drain(s, x->pending);   /* a successor started with the old configuration */
        }
        x->quick_deaths = 0;
        if (i < g->n) {
            want_spawn(s, i);
        } else {
            loop_timer_stop(s->loop, &x->respawn);
            x->want_spawn = false;
            if (x->active)
                drain(s, x->active);
        }
    }
    if (g->same_address && !s->ls.shared)
        listeners_shrink(&s->ls, g->n);
    log_info("%s: starting generation %u (%u workers)", rollback ? "rollback" : "reload",
             s->generation, s->nworkers);
}

/* Called as workers become ready: the reload is over once every index is
 * served by the current generation. */
static void reload_check_done(supervisor *s)
{
    if (!s->reloading)
        return;
    for (uint32_t i = 0; i < s->nworkers; i++)
        if (!s->idx[i].active || s->idx[i].active->generation != s->generation)
            return;
    s->reloading = false;
    s->can_roll_back = false;
}

static void reload(supervisor *s)
{
    if (s->mode != RUNNING) {
        log_info("SIGHUP while stopping: ignored");
        return;
    }
    next_gen *g = calloc(1, sizeof(*g));
    char err[512] = "";
    if (!g) {
        log_error("reload failed: out of memory; generation %u keeps running", s->generation);
        return;
    }
    if (s->ops->reload && s->ops->reload(s->arg, &g->cfg, err, sizeof(err)) < 0)
        goto fail;
    if (!s->ops->reload)
        g->cfg = s->cfg;
    if (prepare(s, g, err, sizeof(err)) < 0)
        goto fail;
    commit(s, g, false);
    free(g);
    return;
fail:
    log_error("reload failed: %s; generation %u keeps running", err, s->generation);
    free(g);
}

/* The new generation crash-loops while the old one still serves: go back
 * to the configuration that worked, as one more reload. False if that is
 * impossible (then the service stops). */
static bool roll_back(supervisor *s)
{
    next_gen *g = calloc(1, sizeof(*g));
    char err[512] = "out of memory";
    if (!g)
        goto fail;
    g->cfg = *s->prev;
    if (prepare(s, g, err, sizeof(err)) < 0)
        goto fail;
    commit(s, g, true);
    free(g);
    return true;
fail:
    log_error("rollback failed: %s", err);
    free(g);
    return false;
}

/* ---- signals ---------------------------------------------------------------------------- */

static void reopen_log(supervisor *s)
{
    if (*s->cfg.log_file) {
        int rc = log_open_for(s->cfg.log_file, &s->user);
        if (rc < 0)
            log_error("SIGUSR1: cannot reopen %s: %s", s->cfg.log_file, strerror(-rc));
        else
            log_info("SIGUSR1: log file reopened");
    }
    for (uint32_t i = 0; i < nrows(s); i++)
        if (s->procs[i].pid)
            kill(s->procs[i].pid, SIGUSR1);
}

static void on_signal(loop_signal *ls, int signo)
{
    supervisor *s = container_of(ls, sig_watch, ls)->sup;
    switch (signo) {
    case SIGCHLD:
        reap(s);
        break;
    case SIGTERM:
    case SIGINT:
        if (s->mode == RUNNING) {
            log_info("%s: stopping gracefully (%u workers draining; again with SIGINT: "
                     "stop now)", signo == SIGTERM ? "SIGTERM" : "SIGINT", live_count(s));
            stop(s, STOPPING);
        } else if (signo == SIGINT) {
            log_info("SIGINT again: stopping now");
            stop(s, STOPPING_NOW);
        }
        break;
    case SIGQUIT:
        log_info("SIGQUIT: stopping now");
        stop(s, STOPPING_NOW);
        break;
    case SIGHUP:
        log_info("SIGHUP: reloading the configuration");
        reload(s);
        break;
    case SIGUSR1:
        reopen_log(s);
        break;
    }
}

static const int watched[6] = { SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1 };

/* ---- start-up and teardown ------------------------------------------------------------- */

static int shared_table(shm_region **shm, shm_workers **table, uint32_t rows)
{
    *shm = shm_create(sizeof(shm_workers) + (size_t)rows * sizeof(shm_worker) +
                      metrics_shm_size(rows));
    *table = *shm ? shm_workers_new(*shm, rows) : NULL;
    service_metrics = *table ? metrics_new(*shm, rows) : NULL;
    if (!*table || !service_metrics) {
        log_error("cannot map the shared worker table: %s", strerror(errno));
        shm_destroy(*shm);
        *shm = NULL;
        return -1;
    }
    service_table = *table;
    return 0;
}

static int sup_events(supervisor *s)
{
    s->loop = loop_new();
    if (!s->loop)
        return -errno;
    for (int i = 0; i < 6; i++) {
        s->sig[i].sup = s;
        int rc = loop_signal_add(s->loop, &s->sig[i].ls, watched[i], on_signal);
        if (rc < 0)
            return rc;
    }
    s->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->notify_fd < 0)
        return -errno;
    int rc = loop_io_add(s->loop, &s->notify_io, s->notify_fd, LOOP_READ, on_notify);
    if (rc < 0)
        return rc;
    return loop_timer_start(s->loop, &s->tick, TICK_MS, on_tick);
}

/* Everything before the first fork. Returns 0, or the exit status. */
static int sup_start(supervisor *s, const config *cfg, const cluster_ops *ops, void *arg)
{
    char err[512];
    s->ops = ops;
    s->arg = arg;
    s->cfg = *cfg;
    s->generation = 1;
    s->nworkers = cluster_worker_count(cfg);
    s->pid = getpid();
    s->notify_fd = -1;
    s->rng = ((uint64_t)time(NULL) * 2654435761u ^ (uint64_t)s->pid) | 1;
    for (uint32_t i = 0; i < CLUSTER_MAX_WORKERS; i++)
        s->idx[i].sup = s;
    int rc = sup_events(s);   /* first: the signals are blocked from here on */
    if (rc < 0) {
        log_error("cannot set up the supervisor: %s", strerror(-rc));
        return 1;
    }
    if (run_as_resolve(&s->user, cfg->user, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    if (*cfg->log_file && (rc = log_open_for(cfg->log_file, &s->user)) < 0) {
        log_error("--log-file %s: %s", cfg->log_file, strerror(-rc));
        return 1;
    }
    if (listeners_open(&s->ls, cfg, s->nworkers) < 0)
        return 1;
    if (*cfg->pid_file && (rc = pid_file_write(cfg->pid_file, s->pid)) < 0) {
        log_error("--pid-file %s: %s", cfg->pid_file, strerror(-rc));
        return 1;
    }
    uint64_t *ring = cfg->crash_loop_deaths ? calloc(cfg->crash_loop_deaths, sizeof(*ring)) : NULL;
    if (cfg->crash_loop_deaths && !ring) {
        log_error("cannot start the supervisor: out of memory");
        return 1;
    }
    deaths_set(s, ring, cfg->crash_loop_deaths);
    if (shared_table(&s->shm, &s->table, SLOTS) < 0)
        return 1;
    if (ops->prefork && ops->prefork(arg, cfg, SLOTS, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 1;
    }
    warn_if_root(&s->user);
    log_info("listening on http://%s:%d (%s: %u workers%s, supervisor pid %d)", cfg->host,
             s->ls.bound_port, ops->name, s->nworkers,
             s->ls.shared ? " sharing one socket" : "", (int)s->pid);
    for (uint32_t i = 0; i < s->nworkers; i++)
        want_spawn(s, i);
    return 0;
}

/* The supervisor's own teardown: its loop, files and memory. */
static void sup_free(supervisor *s, bool in_child)
{
    if (s->loop)
        loop_free(s->loop);   /* in a child: no epoll_ctl, the set is shared */
    if (!in_child) {
        listeners_shrink(&s->ls, 0);
        if (s->notify_fd >= 0)
            close(s->notify_fd);
        pid_file_remove(s->cfg.pid_file, s->pid);
        shm_destroy(s->shm);
        service_table = NULL;
        service_metrics = NULL;
    }
    run_as_fini(&s->user);
    free(s->deaths);
    free(s->prev);
    free(s);
}

/* ---- the worker side of a fork ---------------------------------------------------------- */

/* Leaves blocked only the signals a worker takes through its loop. */
static void worker_signal_mask(void)
{
    sigset_t keep;
    sigemptyset(&keep);
    sigaddset(&keep, SIGTERM);
    sigaddset(&keep, SIGINT);
    sigaddset(&keep, SIGQUIT);
    sigaddset(&keep, SIGHUP);
    sigaddset(&keep, SIGUSR1);
    sigprocmask(SIG_SETMASK, &keep, NULL);
}

/* In the child: --pin, the privilege drop, and death with the supervisor.
 * 0 or -errno with *what naming the step. */
static int become_worker(const supervisor *s, uint32_t index, const char **what)
{
    worker_signal_mask();
    int rc = s->cfg.pin ? pin_index(index) : 0;
    if (rc < 0) {
        *what = "--pin";
        return rc;
    }
    rc = run_as_apply(&s->user);
    if (rc < 0) {
        *what = "--user";
        return rc;
    }
    /* after the drop: changing credentials clears the death signal */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != s->pid) {
        *what = "supervisor gone";
        return -ESRCH;
    }
    return 0;
}

/* MYRIAD_TEST_WORKER_FAULT=exit|abort: the worker fails right after fork.
 * Test-only fault injection for the crash-loop test. */
static void inject_fault(void)
{
    const char *f = getenv("MYRIAD_TEST_WORKER_FAULT");
    if (f && strcmp(f, "abort") == 0)
        abort();
}

static bool fault_exit(void)
{
    const char *f = getenv("MYRIAD_TEST_WORKER_FAULT");
    return f && strcmp(f, "exit") == 0;
}

static int run_child(supervisor *s, const child_start *c)
{
    config *cfg = malloc(sizeof(*cfg));
    if (!cfg) {
        log_error("worker %u: out of memory", c->index);
        return 1;
    }
    *cfg = s->cfg;
    const cluster_ops *ops = s->ops;
    void *arg = s->arg;
    shm_region *shm = s->shm;
    cluster_worker self = { .index = c->index, .generation = s->generation, .supervised = true,
                            .slot = c->row, .table = s->table, .notify_fd = s->notify_fd };
    for (uint32_t i = 0; i < s->ls.n; i++)
        if (s->ls.fd[i] != c->fd)
            close(s->ls.fd[i]);
    const char *what = "";
    int rc = become_worker(s, c->index, &what);
    sup_free(s, true);
    if (rc < 0) {
        log_error("worker %u: %s: %s", c->index, what, strerror(-rc));
        rc = 1;
    } else if (fault_exit()) {
        rc = 3;
    } else {
        inject_fault();
        metrics_set_self(metrics_attach(service_metrics, (uint32_t)(self.slot - self.table->slot)));
        rc = ops->worker_main(arg, cfg, c->fd, &self);
        metrics_worker_free(metrics_self());
        metrics_set_self(NULL);
    }
    free(cfg);
    close(self.notify_fd);
    service_table = NULL;
    service_metrics = NULL;
    shm_destroy(shm);
    return rc;
}

/* ---- in-process: one worker, no supervisor ------------------------------------------- */

static int serve_in_process(const config *cfg, const cluster_ops *ops, void *arg)
{
    char err[512];
    run_as user;
    shm_region *shm = NULL;
    shm_workers *table;
    int rc, status = 1;
    if (run_as_resolve(&user, cfg->user, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    if (*cfg->log_file && (rc = log_open_for(cfg->log_file, &user)) < 0) {
        log_error("--log-file %s: %s", cfg->log_file, strerror(-rc));
        goto free_user;
    }
    const char *step = NULL;
    int fd = net_listen(cfg->host, cfg->port, cfg->backlog, true, &step);
    if (fd < 0) {
        log_error("cannot listen on %s:%d: %s: %s", cfg->host, cfg->port, step, strerror(-fd));
        goto free_user;
    }
    if (*cfg->pid_file && (rc = pid_file_write(cfg->pid_file, getpid())) < 0) {
        log_error("--pid-file %s: %s", cfg->pid_file, strerror(-rc));
        goto close_fd;
    }
    if (shared_table(&shm, &table, 1) < 0)
        goto remove_pid;
    if (ops->prefork && ops->prefork(arg, cfg, 1, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto unmap;
    }
    cluster_worker self = { .generation = 1, .slot = shm_worker_claim(table, 1, 0),
                            .table = table, .notify_fd = -1 };
    shm_worker_set_pid(self.slot, getpid());
    if (cfg->pin && (rc = pin_index(0)) < 0)
        log_warn("--pin: %s", strerror(-rc));
    if ((rc = run_as_apply(&user)) < 0) {
        log_error("--user %s: %s", cfg->user, strerror(-rc));
        goto unmap;
    }
    warn_if_root(&user);
    log_info("listening on http://%s:%d (pid %d)", cfg->host, net_local_port(fd), (int)getpid());
    metrics_set_self(metrics_attach(service_metrics, 0));
    status = ops->worker_main(arg, cfg, fd, &self);
    fd = -1;   /* worker_main owned it */
    metrics_worker_free(metrics_self());
    metrics_set_self(NULL);
unmap:
    service_table = NULL;
    service_metrics = NULL;
    shm_destroy(shm);
remove_pid:
    pid_file_remove(cfg->pid_file, getpid());
close_fd:
    if (fd >= 0)
        close(fd);
free_user:
    run_as_fini(&user);
    return status;
}

/* ---- the supervisor -------------------------------------------------------------------- */

/* Runs the loop until the service has stopped. Returns the exit status, or
 * 0 with c->in_child set in a freshly forked worker. */
static int supervise(supervisor *s, child_start *c)
{
    while (!s->done) {
        if (s->any_spawn && s->mode == RUNNING && spawn_wanted(s, c))
            return 0;
        int rc = loop_run_once(s->loop, -1);
        if (rc < 0 && rc != -EINTR) {
            log_error("supervisor: event loop failed: %s; stopping the workers", strerror(-rc));
            for (uint32_t i = 0; i < nrows(s); i++)
                if (s->procs[i].pid)
                    kill(s->procs[i].pid, SIGQUIT);
            return 1;
        }
    }
    return s->exit_status;
}

static bool recycles(const config *cfg)
{
    return cfg->max_worker_memory || cfg->max_requests || cfg->max_worker_age;
}

int cluster_run(const config *cfg, const cluster_ops *ops, void *arg)
{
    if (cluster_worker_count(cfg) == 1 && !recycles(cfg))
        return serve_in_process(cfg, ops, arg);
    supervisor *s = calloc(1, sizeof(*s));
    if (!s) {
        log_error("cannot start the supervisor: out of memory");
        return 1;
    }
    int rc = sup_start(s, cfg, ops, arg);
    if (rc != 0) {
        sup_free(s, false);
        return rc;
    }
    child_start c = { 0 };
    rc = supervise(s, &c);
    if (c.in_child)
        return run_child(s, &c);
    if (rc == 0)
        log_info("stopped");
    else
        log_error("stopped after a failure: exit status %d", rc);
    sup_free(s, false);
    return rc;
}
