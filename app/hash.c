/* hash — the reference service's CPU-heavy routes: the login endpoint that
 * famously stalls Node servers, done the myriad way. The JSON body is parsed
 * on the loop (jansson; small bodies only), the hash is computed on the
 * worker's thread pool with myr_offload, and the answer is written back on
 * the loop.
 *
 *   POST /hash    {"password": "..."}             -> 200 {"hash": "..."}
 *   POST /verify  {"password": "...", "hash": ".."}-> 200 {"ok": true|false}
 *   anything malformed                             -> 400 {"error": "..."}
 *
 * Algorithms (--hash-alg): argon2id (default) is libsodium's
 * crypto_pwhash_str with the INTERACTIVE limits (2 passes, 64 MiB);
 * scrypt is crypto_pwhash_scryptsalsa208sha256_str with its INTERACTIVE
 * limits, which libsodium turns into N = 2^14, r = 8, p = 1 (16 MiB, a
 * 32-byte salt and a 32-byte key) — the parameters bench/peers/node/hash.js
 * gives Node's crypto.scrypt for the side-by-side benchmark. /verify reads
 * the algorithm from the hash string and accepts only hashes with exactly
 * these parameters: a hash string chosen by the client must not be able to
 * make the server spend 4 GiB on one verification.
 *
 * Written only against include/myriad.h, like any service.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include <myriad.h>

#include "routes_hash.h"

#define BODY_MAX      8192   /* bytes of JSON accepted (413 beyond) */
#define PASSWORD_MAX  1024   /* bytes of password accepted (400 beyond) */
#define HASH_STR_MAX  crypto_pwhash_STRBYTES   /* 128, room for either algorithm */

_Static_assert(crypto_pwhash_scryptsalsa208sha256_STRBYTES <= HASH_STR_MAX, "scrypt fits");

enum hash_alg { ALG_ARGON2ID, ALG_SCRYPT };

/* One hash or verification, in the request's arena. work fills rc/out. */
typedef struct hash_job {
    enum hash_alg alg;
    bool          verify;           /* /verify: compare with `hash` */
    bool          ran;              /* work ran (false: skipped, client gone) */
    int           rc;               /* libsodium's: 0, or -1 (out of memory / no match) */
    char         *password;         /* copy, wiped in done */
    size_t        password_len;
    char          hash[HASH_STR_MAX];  /* /hash: output; /verify: input, NUL-terminated */
} hash_job;

/* ---- answers -------------------------------------------------------------------- */

static void respond_error(myr_req *req, int status, const char *msg)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_obj_begin(&w);
    myr_json_key(&w, "error");
    myr_json_str(&w, msg);
    myr_json_obj_end(&w);
    myr_respond_json(req, status, &w);
}

/* ---- parsing (on the loop) ---------------------------------------------------------- */

/* The body as a JSON object, or NULL after answering 400/413. The caller
 * json_decref()s the result. Duplicate keys and "\u0000" in strings are
 * refused (jansson without JSON_ALLOW_NUL), so strings are C strings. */
static json_t *parse_object(myr_req *req)
{
    myr_str body = myr_body(req);
    if (body.len > BODY_MAX) {
        respond_error(req, 413, "body too large (at most 8192 bytes)");
        return NULL;
    }
    json_error_t err;
    json_t *root = json_loadb(body.ptr ? body.ptr : "", body.len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        char msg[200];
        snprintf(msg, sizeof(msg), "invalid JSON: %s", err.text);
        respond_error(req, 400, msg);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        respond_error(req, 400, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/* obj[key] as a string of at most max bytes; NULL after answering 400. */
static const char *string_field(myr_req *req, json_t *obj, const char *key, size_t max,
                                size_t *len)
{
    char msg[96];
    json_t *v = json_object_get(obj, key);
    if (!v)
        snprintf(msg, sizeof(msg), "missing field: %s", key);
    else if (!json_is_string(v))
        snprintf(msg, sizeof(msg), "field %s must be a string", key);
    else if (json_string_length(v) > max)
        snprintf(msg, sizeof(msg), "field %s too long (at most %zu bytes)", key, max);
    else {
        *len = json_string_length(v);
        return json_string_value(v);
    }
    respond_error(req, 400, msg);
    return NULL;
}

/* A job for req with a copy of the password; NULL after answering. */
static hash_job *job_new(myr_req *req, json_t *obj)
{
    size_t len;
    const char *pw = string_field(req, obj, "password", PASSWORD_MAX, &len);
    if (!pw)
        return NULL;
    hash_job *j = myr_alloc(req, sizeof(*j));
    char *copy = myr_alloc(req, len + 1);
    if (!j || !copy) {
        respond_error(req, 503, "out of memory");
        return NULL;
    }
    memcpy(copy, pw, len);
    copy[len] = '\0';
    *j = (hash_job){ .password = copy, .password_len = len };
    return j;
}

/* ---- the work (on a pool thread) ------------------------------------------------------ */

static void hash_work(void *arg)
{
    hash_job *j = arg;
    j->ran = true;
    if (j->alg == ALG_SCRYPT)
        j->rc = crypto_pwhash_scryptsalsa208sha256_str(
            j->hash, j->password, j->password_len,
            crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_INTERACTIVE,
            crypto_pwhash_scryptsalsa208sha256_MEMLIMIT_INTERACTIVE);
    else
        j->rc = crypto_pwhash_str(j->hash, j->password, j->password_len,
                                  crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                  crypto_pwhash_MEMLIMIT_INTERACTIVE);
}

static void verify_work(void *arg)
{
    hash_job *j = arg;
    j->ran = true;
    if (j->alg == ALG_SCRYPT)
        j->rc = crypto_pwhash_scryptsalsa208sha256_str_verify(j->hash, j->password,
                                                              j->password_len);
    else
        j->rc = crypto_pwhash_str_verify(j->hash, j->password, j->password_len);
}

/* ---- completions (on the loop) --------------------------------------------------------- */

/* Wipes our copy of the password (the body bytes in the connection's
 * buffer and the parser's copy are not wiped: hygiene, not a guarantee). */
static void hash_done(myr_req *req, void *arg)
{
    hash_job *j = arg;
    sodium_memzero(j->password, j->password_len);
    if (!j->ran || j->rc != 0) {
        /* skipped: the client is gone and this answer is dropped */
        respond_error(req, 503, j->ran ? "out of memory" : "cancelled");
        return;
    }
    myr_json w;
    myr_json_init(&w);
    myr_json_obj_begin(&w);
    if (j->verify) {
        myr_json_key(&w, "ok");
        myr_json_bool(&w, true);
    } else {
        myr_json_key(&w, "hash");
        myr_json_str(&w, j->hash);
    }
    myr_json_obj_end(&w);
    myr_respond_json(req, 200, &w);
}

/* A failed verification is an answer, not an error. (libsodium's verify
 * returns -1 for a mismatch; out of memory is not told apart, and the
 * limits were checked on the loop, so a mismatch is what -1 means here.) */
static void verify_done(myr_req *req, void *arg)
{
    hash_job *j = arg;
    if (j->ran && j->rc != 0) {
        sodium_memzero(j->password, j->password_len);
        myr_respond_str(req, 200, "application/json", "{\"ok\":false}");
        return;
    }
    hash_done(req, arg);
}

/* ---- handlers -------------------------------------------------------------------------- */

/* --hash-alg, checked per request (the app sees settings only through a
 * request); a bad value answers 500 and says which setting is wrong. */
static bool pick_alg(myr_req *req, enum hash_alg *alg)
{
    const char *name = myr_setting(req, "hash-alg");
    if (name && strcmp(name, "argon2id") == 0)
        *alg = ALG_ARGON2ID;
    else if (name && strcmp(name, "scrypt") == 0)
        *alg = ALG_SCRYPT;
    else {
        respond_error(req, 500, "server misconfigured: --hash-alg must be argon2id or scrypt");
        return false;
    }
    return true;
}

static void post_hash(myr_req *req)
{
    enum hash_alg alg;
    if (!pick_alg(req, &alg))
        return;
    json_t *obj = parse_object(req);
    if (!obj)
        return;
    hash_job *j = job_new(req, obj);
    json_decref(obj);
    if (!j)
        return;
    j->alg = alg;
    /* nonzero: already answered 503 (queue full); -EBUSY cannot happen */
    (void)myr_offload(req, hash_work, hash_done, j);
}

/* Which algorithm made `hash`, if it is one we accept: our own parameters
 * exactly (needs_rehash == 0), so verification costs what hashing does. */
static bool accepted_hash(const char *hash, enum hash_alg *alg)
{
    if (strncmp(hash, "$7$", 3) == 0) {
        *alg = ALG_SCRYPT;
        return crypto_pwhash_scryptsalsa208sha256_str_needs_rehash(
                   hash, crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_INTERACTIVE,
                   crypto_pwhash_scryptsalsa208sha256_MEMLIMIT_INTERACTIVE) == 0;
    }
    if (strncmp(hash, "$argon2id$", 10) == 0) {
        *alg = ALG_ARGON2ID;
        return crypto_pwhash_str_needs_rehash(hash, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                              crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0;
    }
    return false;
}

static void post_verify(myr_req *req)
{
    json_t *obj = parse_object(req);
    if (!obj)
        return;
    size_t hlen;
    const char *hash = string_field(req, obj, "hash", HASH_STR_MAX - 1, &hlen);
    hash_job *j = hash ? job_new(req, obj) : NULL;
    if (j) {
        memcpy(j->hash, hash, hlen);
        j->hash[hlen] = '\0';
        j->verify = true;
    }
    json_decref(obj);
    if (!j)
        return;
    if (!accepted_hash(j->hash, &j->alg)) {
        sodium_memzero(j->password, j->password_len);
        respond_error(req, 400, "unsupported hash: expected one made by POST /hash");
        return;
    }
    (void)myr_offload(req, verify_work, verify_done, j);
}

/* ---- test-only routes (MYRIAD_TEST_ROUTES=1) ----------------------------------------------- */

static long query_ms(myr_req *req, long def)
{
    myr_str v = myr_query_param(req, "ms");
    if (!v.ptr || !v.len)
        return def;
    char *end;
    long n = strtol(v.ptr, &end, 10);
    return *end || n < 0 ? def : n > 10000 ? 10000 : n;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* GET /test/block?ms=N: the mistake the watchdog exists for — N ms of CPU
 * on the loop thread. */
static void test_block(myr_req *req)
{
    long ms = query_ms(req, 300);
    uint64_t until = now_ns() + (uint64_t)ms * 1000000u;
    while (now_ns() < until)
        ;
    myr_respond_str(req, 200, "text/plain", "done\n");
}

/* Jobs of /test/offload whose work ran, in this worker: lets a test see
 * that a cancelled job was skipped. Process-wide, like the worker. */
static _Atomic long offload_runs;

typedef struct sleep_job {
    long ms;
    long runs;        /* offload_runs after this job's work */
    int  second_rc;   /* ?twice=1: what a second myr_offload returned */
} sleep_job;

static void sleep_work(void *arg)
{
    sleep_job *j = arg;
    usleep((useconds_t)j->ms * 1000);
    j->runs = atomic_fetch_add(&offload_runs, 1) + 1;
}

static void sleep_done(myr_req *req, void *arg)
{
    sleep_job *j = arg;
    char body[64];
    snprintf(body, sizeof(body), "{\"runs\":%ld,\"second\":%d}", j->runs, j->second_rc);
    myr_respond_str(req, 200, "application/json", body);
}

/* GET /test/offload?ms=N: a pool job that sleeps N ms. With &twice=1 the
 * handler tries a second offload of the same request at once (refused). */
static void test_offload(myr_req *req)
{
    sleep_job *j = myr_alloc(req, sizeof(*j));
    if (!j) {
        respond_error(req, 503, "out of memory");
        return;
    }
    *j = (sleep_job){ .ms = query_ms(req, 100) };
    bool twice = myr_query_param(req, "twice").len > 0;
    if (myr_offload(req, sleep_work, sleep_done, j) == 0 && twice)
        j->second_rc = myr_offload(req, sleep_work, sleep_done, j);
}

/* ---- registration ----------------------------------------------------------------------- */

void hash_routes(myr_app *app, bool test_routes)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "myriad: libsodium cannot start (sodium_init failed)\n");
        abort();
    }
    int rc = myr_post(app, "/hash", post_hash);
    rc = rc ? rc : myr_post(app, "/verify", post_verify);
    if (test_routes) {
        rc = rc ? rc : myr_get(app, "/test/block", test_block);
        rc = rc ? rc : myr_get(app, "/test/offload", test_offload);
    }
    if (rc) {
        fprintf(stderr, "myriad: cannot register the hash routes: %s\n", strerror(-rc));
        abort();
    }
}
