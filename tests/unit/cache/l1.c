/* Unit tests for src/cache/l1.c: values and flags, time to live and the
 * stale window, eviction within the budget (CLOCK's second chance), fill
 * leases and tickets, generations, sharing with forked processes, a process
 * killed while it holds a stripe lock (the stripe is rebuilt, nobody
 * blocks), several processes at once, and random operations against a
 * model. Includes l1.c for the stripe internals the crash test needs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache/l1.c"

/* ---- helpers ---------------------------------------------------------------------------- */

static void *heap_alloc(void *arg, size_t n)
{
    (void)arg;
    return malloc(n);
}

static void *fail_alloc(void *arg, size_t n)
{
    (void)arg;
    (void)n;
    return NULL;
}

/* get without a lease; returns the state, copies the value into out. */
static enum l1_state get(l1_cache *c, const char *key, uint64_t now, char *out, size_t cap,
                         size_t *len, unsigned *flags)
{
    l1_result r;
    assert_int_equal(l1_get(c, key, strlen(key), now, 0, 0, heap_alloc, NULL, &r, NULL), 0);
    if (len)
        *len = r.len;
    if (flags)
        *flags = r.flags;
    if (out && r.state != L1_MISS) {
        assert_true(r.len < cap);
        memcpy(out, r.value ? r.value : "", r.len);
        out[r.len] = '\0';
    }
    free(r.value);
    return r.state;
}

static int set(l1_cache *c, const char *key, const char *val, uint64_t ttl, uint64_t stale,
               uint64_t now)
{
    return l1_set(c, key, strlen(key), val, strlen(val), 0, ttl, stale, now, NULL, NULL);
}

/* Two keys that land in the same stripe (and some that do not). */
static void same_stripe_keys(l1_cache *c, char *a, char *b, size_t cap)
{
    snprintf(a, cap, "k0");
    l1_stripe *sa = stripe_of(c, hash_key(a, strlen(a)));
    for (int i = 1;; i++) {
        snprintf(b, cap, "k%d", i);
        if (stripe_of(c, hash_key(b, strlen(b))) == sa)
            return;
    }
}

/* ---- basics ----------------------------------------------------------------------------- */

static void test_new_bad_args(void **state)
{
    assert_null(l1_new(1 << 20, 0));
    assert_null(l1_new(1 << 20, 3));       /* not a power of two */
    assert_null(l1_new(1 << 20, 8192));
    assert_null(l1_new(l1_min_size(4) - 1, 4));
    l1_cache *c = l1_new(l1_min_size(4), 4);
    assert_non_null(c);
    l1_info in;
    l1_info_get(c, &in);
    assert_int_equal(in.stripes, 4);
    assert_true(in.max_entries >= 4 * MIN_ENTRIES);
    assert_int_equal(l1_check(c), 0);
    l1_free(c);
}

static void test_set_get_del(void **state)
{
    l1_cache *c = l1_new(1 << 20, 8);
    char v[256];
    size_t len;
    unsigned flags;
    assert_int_equal(get(c, "a", 1000, v, sizeof(v), NULL, NULL), L1_MISS);
    assert_int_equal(set(c, "a", "hello", 100, 0, 1000), 0);
    assert_int_equal(get(c, "a", 1000, v, sizeof(v), &len, NULL), L1_FRESH);
    assert_string_equal(v, "hello");
    assert_int_equal(len, 5);
    /* replace with a longer value spanning several blocks */
    char big[200];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(set(c, "a", big, 100, 0, 1000), 0);
    assert_int_equal(get(c, "a", 1000, v, sizeof(v), &len, NULL), L1_FRESH);
    assert_string_equal(v, big);
    /* an empty value with a user flag: a tombstone */
    assert_int_equal(l1_set(c, "gone", 4, NULL, 0, L1_NEGATIVE, 50, 0, 1000, NULL, NULL), 0);
    assert_int_equal(get(c, "gone", 1000, v, sizeof(v), &len, &flags), L1_FRESH);
    assert_int_equal(len, 0);
    assert_int_equal(flags, L1_NEGATIVE);
    /* delete */
    assert_int_equal(l1_del(c, "a", 1, NULL), 1);
    assert_int_equal(l1_del(c, "a", 1, NULL), 0);
    assert_int_equal(get(c, "a", 1000, v, sizeof(v), NULL, NULL), L1_MISS);
    /* bad arguments */
    l1_result r;
    assert_int_equal(l1_get(c, "", 0, 1000, 0, 0, heap_alloc, NULL, &r, NULL), -EINVAL);
    char longkey[L1_MAX_KEY + 2];
    memset(longkey, 'k', sizeof(longkey));
    assert_int_equal(l1_get(c, longkey, sizeof(longkey), 1000, 0, 0, heap_alloc, NULL, &r,
                            NULL), -EINVAL);
    assert_int_equal(l1_set(c, "a", 1, "v", 1, 0, 0, 0, 1000, NULL, NULL), -EINVAL);
    /* out of memory while copying out: an error, nothing leaks */
    assert_int_equal(set(c, "b", "value", 100, 0, 1000), 0);
    assert_int_equal(l1_get(c, "b", 1, 1000, 0, 0, fail_alloc, NULL, &r, NULL), -ENOMEM);
    assert_int_equal(r.state, L1_MISS);
    assert_int_equal(l1_check(c), 0);
    l1_free(c);
}

static void test_too_big(void **state)
{
    l1_cache *c = l1_new(l1_min_size(1), 1);
    l1_info in;
    l1_info_get(c, &in);
    size_t n = in.max_item;   /* key "k" + value */
    char *v = malloc(n + 1);
    memset(v, 'v', n);
    assert_int_equal(l1_set(c, "k", 1, v, n, 0, 10, 0, 0, NULL, NULL), -E2BIG);
    assert_int_equal(l1_set(c, "k", 1, v, n - 1, 0, 10, 0, 0, NULL, NULL), 0);
    l1_result r;
    assert_int_equal(l1_get(c, "k", 1, 0, 0, 0, heap_alloc, NULL, &r, NULL), 0);
    assert_int_equal(r.state, L1_FRESH);
    assert_int_equal(r.len, n - 1);
    assert_memory_equal(r.value, v, n - 1);
    free(r.value);
    free(v);
    assert_int_equal(l1_check(c), 0);
    l1_free(c);
}

/* ---- time ----------------------------------------------------------------------------------- */

static void test_ttl_and_stale(void **state)
{
    l1_cache *c = l1_new(1 << 20, 4);
    l1_stats st = { 0 };
    char v[32];
    assert_int_equal(set(c, "t", "1", 100, 50, 1000), 0);
    assert_int_equal(get(c, "t", 1099, v, sizeof(v), NULL, NULL), L1_FRESH);
    assert_int_equal(get(c, "t", 1100, v, sizeof(v), NULL, NULL), L1_STALE);
    assert_string_equal(v, "1");
    assert_int_equal(get(c, "t", 1149, v, sizeof(v), NULL, NULL), L1_STALE);
    l1_result r;
    assert_int_equal(l1_get(c, "t", 1, 1150, 0, 0, heap_alloc, NULL, &r, &st), 0);
    assert_int_equal(r.state, L1_MISS);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.expirations, 1);   /* taken back on the spot */
    l1_info in;
    l1_info_get(c, &in);
    assert_int_equal(in.entries, 0);
    assert_int_equal(in.bytes, 0);
    /* no stale window: straight from fresh to gone */
    assert_int_equal(set(c, "u", "2", 10, 0, 0), 0);
    assert_int_equal(get(c, "u", 9, v, sizeof(v), NULL, NULL), L1_FRESH);
    assert_int_equal(get(c, "u", 10, v, sizeof(v), NULL, NULL), L1_MISS);
    l1_free(c);
}

/* ---- eviction ---------------------------------------------------------------------------------- */

static void test_eviction_within_budget(void **state)
{
    l1_cache *c = l1_new(l1_min_size(1) * 4, 1);
    l1_info in;
    l1_info_get(c, &in);
    l1_stats st = { 0 };
    char key[32], val[100], out[128];
    memset(val, 'v', 99);
    val[99] = '\0';
    uint64_t n = in.max_entries * 10;
    for (uint64_t i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "key%llu", (unsigned long long)i);
        assert_int_equal(l1_set(c, key, strlen(key), val, 99, 0, 100000, 0, 0, NULL, &st), 0);
        /* the hot key is read between sets: CLOCK keeps it */
        if (i == 0 || get(c, "key0", 0, out, sizeof(out), NULL, NULL) != L1_FRESH)
            assert_int_equal(i, 0);
        l1_info_get(c, &in);
        assert_true(in.entries <= in.max_entries);
        assert_true(in.bytes <= in.capacity);
    }
    assert_true(st.evictions >= n - in.max_entries);
    assert_int_equal(st.expirations, 0);
    /* the most recent key is there, an old cold one is not */
    assert_int_equal(get(c, key, 0, out, sizeof(out), NULL, NULL), L1_FRESH);
    assert_int_equal(get(c, "key1", 0, out, sizeof(out), NULL, NULL), L1_MISS);
    assert_int_equal(l1_check(c), 0);
    l1_free(c);
}

static void test_expired_taken_before_live(void **state)
{
    l1_cache *c = l1_new(l1_min_size(1), 1);
    l1_info in;
    l1_info_get(c, &in);
    l1_stats st = { 0 };
    char key[32];
    /* fill with short-lived entries, then write past their death */
    for (uint64_t i = 0; i < in.max_entries; i++) {
        snprintf(key, sizeof(key), "old%llu", (unsigned long long)i);
        assert_int_equal(set(c, key, "x", 10, 0, 0), 0);
    }
    for (uint64_t i = 0; i < in.max_entries / 2; i++) {
        snprintf(key, sizeof(key), "new%llu", (unsigned long long)i);
        assert_int_equal(l1_set(c, key, strlen(key), "y", 1, 0, 10, 0, 100, NULL, &st), 0);
    }
    assert_int_equal(st.evictions, 0);
    assert_true(st.expirations > 0);
    l1_free(c);
}

/* ---- leases and tickets ------------------------------------------------------------------------ */

static l1_result lease_get(l1_cache *c, const char *key, uint64_t now, uint64_t owner)
{
    l1_result r;
    assert_int_equal(l1_get(c, key, strlen(key), now, 100, owner, heap_alloc, NULL, &r, NULL), 0);
    free(r.value);
    r.value = NULL;
    return r;
}

static void test_leases(void **state)
{
    l1_cache *c = l1_new(1 << 20, 4);
    l1_result r = lease_get(c, "k", 1000, 1);
    assert_int_equal(r.state, L1_MISS);
    assert_int_equal(r.lease, L1_LEASE_TAKEN);
    assert_int_equal(r.lease_until, 1100);
    r = lease_get(c, "k", 1050, 2);   /* another worker: wait */
    assert_int_equal(r.lease, L1_LEASE_BUSY);
    assert_int_equal(r.lease_until, 1100);
    r = lease_get(c, "k", 1060, 1);   /* the holder asks again: still its own */
    assert_int_equal(r.lease, L1_LEASE_TAKEN);
    r = lease_get(c, "k", 1160, 2);   /* the holder died: its lease ran out */
    assert_int_equal(r.lease, L1_LEASE_TAKEN);
    assert_int_equal(r.lease_until, 1260);
    /* the filler stores: everyone hits, no lease needed */
    assert_int_equal(set(c, "k", "v", 100, 100, 1170), 0);
    r = lease_get(c, "k", 1180, 3);
    assert_int_equal(r.state, L1_FRESH);
    assert_int_equal(r.lease, L1_LEASE_NONE);
    /* stale: the first asker refreshes, the others serve stale and wait */
    r = lease_get(c, "k", 1280, 3);
    assert_int_equal(r.state, L1_STALE);
    assert_int_equal(r.lease, L1_LEASE_TAKEN);
    r = lease_get(c, "k", 1281, 4);
    assert_int_equal(r.state, L1_STALE);
    assert_int_equal(r.lease, L1_LEASE_BUSY);
    /* a failed fill gives the lease back: the next asker takes it at once */
    l1_release(c, "k", 1, 4);   /* not the holder: nothing */
    r = lease_get(c, "k", 1282, 4);
    assert_int_equal(r.lease, L1_LEASE_BUSY);
    l1_release(c, "k", 1, 3);
    r = lease_get(c, "k", 1283, 4);
    assert_int_equal(r.lease, L1_LEASE_TAKEN);
    /* a released placeholder is gone entirely */
    r = lease_get(c, "p", 1000, 1);
    l1_release(c, "p", 1, 1);
    l1_info in;
    l1_info_get(c, &in);
    assert_int_equal(in.entries, 1);
    assert_int_equal(l1_check(c), 0);
    l1_free(c);
}

static void test_ticket_voided_by_delete_and_flush(void **state)
{
    l1_cache *c = l1_new(1 << 20, 4);
    char a[16], b[16], v[16];
    same_stripe_keys(c, a, b, sizeof(a));
    /* a delete of another key of the stripe leaves the ticket alone */
    l1_result r = lease_get(c, a, 0, 1);
    assert_int_equal(r.lease, L1_LEASE_TAKEN);
    assert_int_equal(set(c, b, "x", 100, 0, 0), 0);
    assert_int_equal(l1_del(c, b, strlen(b), NULL), 1);
    assert_int_equal(l1_set(c, a, strlen(a), "v", 1, 0, 100, 0, 1, &r.ticket, NULL), 0);
    /* a delete of the key itself while the fill runs voids it, even when
     * the key's placeholder is gone */
    r = lease_get(c, b, 1, 1);
    assert_int_equal(l1_del(c, b, strlen(b), NULL), 1);
    assert_int_equal(l1_del(c, b, strlen(b), NULL), 0);
    assert_int_equal(l1_set(c, b, strlen(b), "old", 3, 0, 100, 0, 1, &r.ticket, NULL), -ESTALE);
    assert_int_equal(get(c, b, 2, v, sizeof(v), NULL, NULL), L1_MISS);
    r = lease_get(c, b, 2, 2);   /* the lease went with the refusal */
    assert_int_equal(r.lease, L1_LEASE_TAKEN);
    assert_int_equal(l1_set(c, b, strlen(b), "new", 3, 0, 100, 0, 3, &r.ticket, NULL), 0);
    assert_int_equal(get(c, b, 4, v, sizeof(v), NULL, NULL), L1_FRESH);
    /* more deletes in the stripe than it remembers: void, to be safe */
    r = lease_get(c, a, 5, 3);
    char k[16];
    for (int i = 0, n = 0; n <= (int)DEL_RING; i++) {
        snprintf(k, sizeof(k), "d%d", i);
        if (stripe_of(c, hash_key(k, strlen(k))) == stripe_of(c, hash_key(a, strlen(a)))) {
            l1_del(c, k, strlen(k), NULL);
            n++;
        }
    }
    assert_int_equal(l1_set(c, a, strlen(a), "x", 1, 0, 100, 0, 6, &r.ticket, NULL), -ESTALE);
    /* a flush voids tickets and entries */
    r = lease_get(c, a, 7, 1);
    assert_int_equal(set(c, b, "y", 100, 0, 7), 0);
    uint32_t g = l1_generation(c);
    l1_flush(c);
    assert_int_equal(l1_generation(c), g + 1);
    assert_int_equal(get(c, b, 8, v, sizeof(v), NULL, NULL), L1_MISS);
    assert_int_equal(l1_set(c, a, strlen(a), "x", 1, 0, 100, 0, 8, &r.ticket, NULL), -ESTALE);
    assert_int_equal(l1_check(c), 0);
    l1_free(c);
}

/* ---- processes ------------------------------------------------------------------------------- */

static void test_visible_from_forked_child(void **state)
{
    l1_cache *c = l1_new(1 << 20, 4);
    assert_int_equal(set(c, "parent", "p-value", 100000, 0, 0), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char v[32];
        int bad = get(c, "parent", 1, v, sizeof(v), NULL, NULL) != L1_FRESH ||
                  strcmp(v, "p-value") != 0;
        bad |= set(c, "child", "c-value", 100000, 0, 1) != 0;
        _exit(bad);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    char v[32];
    assert_int_equal(get(c, "child", 2, v, sizeof(v), NULL, NULL), L1_FRESH);
    assert_string_equal(v, "c-value");
    l1_free(c);
}

/* The test-only hook: a child takes key's stripe lock, scribbles over the
 * stripe's lists as if killed halfway through a change, says so through a
 * pipe and waits to be killed. */
static pid_t hold_lock_and_wait(l1_cache *c, const char *key)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        l1_stripe *s = stripe_of(c, hash_key(key, strlen(key)));
        if (stripe_lock(c, s, NULL))
            _exit(1);
        s->free_block = 0xdeadbeef;
        s->nfree_entries = 7;
        buckets_of(c, s)[0] = 0xfffffff0;
        if (write(p[1], "x", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    close(p[1]);
    char x;
    assert_int_equal(read(p[0], &x, 1), 1);
    close(p[0]);
    return pid;
}

static void test_killed_lock_holder_does_not_wedge(void **state)
{
    l1_cache *c = l1_new(1 << 20, 4);
    char a[16], b[16], other[16] = "";
    same_stripe_keys(c, a, b, sizeof(a));
    for (int i = 0; !*other; i++) {   /* a key of another stripe survives */
        char k[16];
        snprintf(k, sizeof(k), "o%d", i);
        if (stripe_of(c, hash_key(k, strlen(k))) != stripe_of(c, hash_key(a, strlen(a))))
            strcpy(other, k);
    }
    assert_int_equal(set(c, a, "1", 100000, 0, 0), 0);
    assert_int_equal(set(c, other, "2", 100000, 0, 0), 0);
    l1_result lease = lease_get(c, b, 0, 9);
    assert_int_equal(lease.lease, L1_LEASE_TAKEN);
    pid_t pid = hold_lock_and_wait(c, a);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    /* the next locker rebuilds the stripe: empty, consistent, usable */
    l1_stats stats = { 0 };
    l1_result r;
    assert_int_equal(l1_get(c, a, strlen(a), 1, 0, 0, heap_alloc, NULL, &r, &stats), 0);
    assert_int_equal(r.state, L1_MISS);
    assert_int_equal(stats.recoveries, 1);
    /* the fill that held a lease in the rebuilt stripe may not store */
    assert_int_equal(l1_set(c, b, strlen(b), "z", 1, 0, 100, 0, 1, &lease.ticket, NULL), -ESTALE);
    assert_int_equal(set(c, b, "3", 100000, 0, 1), 0);
    char v[16];
    assert_int_equal(get(c, b, 2, v, sizeof(v), NULL, NULL), L1_FRESH);
    assert_int_equal(get(c, other, 2, v, sizeof(v), NULL, NULL), L1_FRESH);
    assert_string_equal(v, "2");
    assert_int_equal(l1_check(c), 0);
    /* and again from a forked process, which must not block either */
    pid = hold_lock_and_wait(c, a);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    pid_t reader = fork();
    if (reader == 0) {
        alarm(5);   /* blocked on the lock: killed, and the test fails */
        l1_stats s2 = { 0 };
        l1_result r2;
        int rc = l1_get(c, b, strlen(b), 3, 0, 0, heap_alloc, NULL, &r2, &s2);
        _exit(rc == 0 && r2.state == L1_MISS && s2.recoveries == 1 ? 0 : 1);
    }
    assert_int_equal(waitpid(reader, &st, 0), reader);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(l1_check(c), 0);
    l1_free(c);
}

/* Values name their key and writer and carry a checksum, so a reader can
 * tell a torn or misplaced value from a right one. */
static size_t make_value(char *out, size_t cap, int key, int writer, unsigned seq)
{
    int n = snprintf(out, cap, "%d/%d/%u/", key, writer, seq);
    size_t len = (size_t)n + (seq % 150);
    for (size_t i = (size_t)n; i < len; i++)
        out[i] = (char)('a' + (key + i) % 26);
    unsigned sum = 0;
    for (size_t i = 0; i < len; i++)
        sum = sum * 31 + (unsigned char)out[i];
    len += (size_t)snprintf(out + len, cap - len, "#%08x", sum);
    return len;
}

static bool value_ok(const char *v, size_t len, int key)
{
    if (len < 9 || v[len - 9] != '#')
        return false;
    unsigned sum = 0;
    for (size_t i = 0; i < len - 9; i++)
        sum = sum * 31 + (unsigned char)v[i];
    char want[16];
    snprintf(want, sizeof(want), "%08x", sum);
    return memcmp(v + len - 8, want, 8) == 0 && atoi(v) == key;
}

static void test_concurrent_processes(void **state)
{
    l1_cache *c = l1_new(l1_min_size(4) * 6, 4);   /* small: evicts all the time */
    enum { PROCS = 4, OPS = 20000, KEYS = 300 };
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            alarm(30);
            srand((unsigned)p * 7919 + 1);
            int bad = 0;
            char key[16], val[256];
            for (unsigned i = 0; i < OPS; i++) {
                int k = rand() % KEYS;
                snprintf(key, sizeof(key), "key%d", k);
                int op = rand() % 10;
                if (op < 5) {
                    l1_result r;
                    if (l1_get(c, key, strlen(key), i, 5, (uint64_t)p + 1, heap_alloc, NULL,
                               &r, NULL))
                        bad++;
                    else if (r.state != L1_MISS && !value_ok(r.value, r.len, k))
                        bad++;
                    free(r.value);
                } else if (op < 9) {
                    size_t n = make_value(val, sizeof(val), k, p, i);
                    int rc = l1_set(c, key, strlen(key), val, n, 0, 50, 20, i, NULL, NULL);
                    bad += rc != 0 && rc != -E2BIG;
                } else {
                    l1_del(c, key, strlen(key), NULL);
                }
            }
            _exit(bad ? 1 : 0);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    assert_int_equal(l1_check(c), 0);
    l1_free(c);
}

/* ---- random operations against a model ---------------------------------------------------------- */

enum { MKEYS = 64 };

typedef struct model_entry {
    bool     present;
    char     val[300];
    size_t   len;
    unsigned flags;
    uint64_t fresh_until, stale_until;
} model_entry;

/* With room for everything (exact) the cache must agree with the model on
 * every read; in a tiny cache (exact false) it may have lost entries, but
 * what it returns must still be the model's latest, live value. */
static void run_model(l1_cache *c, bool exact, unsigned seed, int ops)
{
    model_entry *m = calloc(MKEYS, sizeof(*m));
    srand(seed);
    uint64_t now = 1000;
    l1_stats st = { 0 };
    char key[16];
    for (int i = 0; i < ops; i++) {
        int k = rand() % MKEYS, op = rand() % 100;
        snprintf(key, sizeof(key), "m%d", k);
        model_entry *e = &m[k];
        if (op < 40) {
            l1_result r;
            assert_int_equal(l1_get(c, key, strlen(key), now, 0, 0, heap_alloc, NULL, &r, &st),
                             0);
            bool live = e->present && now < e->stale_until;
            enum l1_state want = !live ? L1_MISS : now < e->fresh_until ? L1_FRESH : L1_STALE;
            if (exact || r.state != L1_MISS)
                assert_int_equal(r.state, want);
            if (r.state != L1_MISS) {
                assert_int_equal(r.len, e->len);
                assert_memory_equal(r.value ? r.value : "", e->val, e->len);
                assert_int_equal(r.flags, e->flags);
            }
            free(r.value);
        } else if (op < 80) {
            size_t len = (size_t)(rand() % (exact ? 290 : 120));
            for (size_t j = 0; j < len; j++)
                e->val[j] = (char)rand();
            e->len = len;
            e->flags = (unsigned)(rand() % 2);
            uint64_t ttl = 1 + (uint64_t)(rand() % 50), stale = (uint64_t)(rand() % 30);
            assert_int_equal(l1_set(c, key, strlen(key), e->val, len, e->flags, ttl, stale, now,
                                    NULL, &st), 0);
            e->present = true;
            e->fresh_until = now + ttl;
            e->stale_until = e->fresh_until + stale;
        } else if (op < 90) {
            int had = l1_del(c, key, strlen(key), &st);
            if (exact)
                assert_int_equal(had, e->present && now < e->stale_until ? 1 : had);
            e->present = false;
        } else {
            now += (uint64_t)(rand() % 20);
        }
    }
    if (exact)
        assert_int_equal(st.evictions, 0);
    else
        assert_true(st.evictions > 0);
    assert_int_equal(l1_check(c), 0);
    free(m);
}

static void test_model_roomy(void **state)
{
    l1_cache *c = l1_new(1 << 20, 4);
    run_model(c, true, 1, 200000);
    l1_free(c);
}

static void test_model_tight(void **state)
{
    l1_cache *c = l1_new(l1_min_size(2), 2);
    run_model(c, false, 2, 200000);
    l1_free(c);
}

/* ---- the gauges' reporter -------------------------------------------------------------------------- */

static void test_reporter(void **state)
{
    l1_cache *c = l1_new(l1_min_size(1), 1);
    pid_t me = getpid();
    assert_true(l1_reporter(c, me));
    assert_true(l1_reporter(c, me));
    pid_t child = fork();
    if (child == 0)
        _exit(l1_reporter(c, getpid()) ? 1 : 0);   /* the parent is alive: no */
    int st;
    waitpid(child, &st, 0);
    assert_int_equal(WEXITSTATUS(st), 0);
    /* a dead holder's role is taken over */
    atomic_store(&c->reporter, child);   /* reaped: gone */
    assert_true(l1_reporter(c, me));
    l1_free(c);
}

int main(void)
{
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_bad_args),
        cmocka_unit_test(test_set_get_del),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_ttl_and_stale),
        cmocka_unit_test(test_eviction_within_budget),
        cmocka_unit_test(test_expired_taken_before_live),
        cmocka_unit_test(test_leases),
        cmocka_unit_test(test_ticket_voided_by_delete_and_flush),
        cmocka_unit_test(test_visible_from_forked_child),
        cmocka_unit_test(test_killed_lock_holder_does_not_wedge),
        cmocka_unit_test(test_concurrent_processes),
        cmocka_unit_test(test_model_roomy),
        cmocka_unit_test(test_model_tight),
        cmocka_unit_test(test_reporter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
