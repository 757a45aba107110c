/* myriad.h — the whole public API of libmyriad.
 *
 * myriad is a C platform for web backends: one epoll event loop per core,
 * a strict HTTP/1.1 server, a router, per-request arenas and asynchronous
 * answers. A service is a set of handlers:
 *
 *     static void hello(myr_req *req) {
 *         myr_respond(req, 200, "text/plain", "Hello, World!", 13);
 *     }
 *     int main(int argc, char **argv) {
 *         myr_app *app = myr_app_new();
 *         myr_get(app, "/plaintext", hello);
 *         return myr_main(app, argc, argv);
 *     }
 *
 * Lifetimes. A myr_req lives from the moment its handler is called until a
 * response has been completed with myr_respond() (or myr_stream_end()),
 * whether the handler answers at once or later from a callback. Everything
 * the handler allocated with myr_alloc() dies with it. If the client goes
 * away first the request is cancelled: the late answer is accepted and
 * dropped, and myr_req_cancelled() turns true so long work can stop early.
 * Strings returned by accessors (myr_str) point into the request and live as
 * long as it does.
 *
 * Threads. Every function here must be called on the loop thread that runs
 * the request, unless it says otherwise.
 */
#ifndef MYRIAD_H
#define MYRIAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MYR_VERSION_STRING "0.1.0"

typedef struct myr_app myr_app;
typedef struct myr_req myr_req;

/* A byte string that is not NUL-terminated. ptr is NULL when absent. */
typedef struct myr_str {
    const char *ptr;
    size_t      len;
} myr_str;

typedef void (*myr_handler)(myr_req *req);

/* ---- application ------------------------------------------------------- */

myr_app *myr_app_new(void);          /* aborts on out-of-memory at start-up */
void     myr_app_free(myr_app *app);

/* Adds a route. pattern is a path whose segments may be ":name" (one
 * segment, read with myr_param) or, last, "*name" (the rest of the path).
 * A GET route also answers HEAD (the body is dropped). Returns 0, or
 * -EINVAL for a bad pattern / -EEXIST for a duplicate. */
int myr_route(myr_app *app, const char *method, const char *pattern, myr_handler h);
#define myr_get(app, pattern, h)  myr_route((app), "GET", (pattern), (h))
#define myr_post(app, pattern, h) myr_route((app), "POST", (pattern), (h))
#define myr_put(app, pattern, h)  myr_route((app), "PUT", (pattern), (h))
#define myr_del(app, pattern, h)  myr_route((app), "DELETE", (pattern), (h))

/* Parses flags (argv[1] may be a command: "serve"), config file and
 * environment; then serves until stopped. Returns the process exit status:
 * 0 after a clean stop, 2 for bad flags or config, 1 for other failures. */
int myr_main(myr_app *app, int argc, char **argv);

/* ---- request ------------------------------------------------------------ */

myr_str myr_method(const myr_req *req);
myr_str myr_path(const myr_req *req);     /* raw path, no query */
myr_str myr_query(const myr_req *req);    /* raw query after '?' */
myr_str myr_header(const myr_req *req, const char *name);
myr_str myr_param(const myr_req *req, const char *name);   /* route :param */
/* A query-string parameter, percent-decoded into the request arena. */
myr_str myr_query_param(myr_req *req, const char *name);
myr_str myr_body(const myr_req *req);     /* whole body (Content-Length or chunked) */

/* Allocates n bytes, 16-byte aligned, that live until the response is done.
 * Returns NULL when out of memory (the request should answer 503). */
void *myr_alloc(myr_req *req, size_t n);

bool myr_req_cancelled(const myr_req *req);
/* Called once, on the loop thread, if the client goes away while the answer
 * is pending. At most one callback per request; a new one replaces the old. */
void myr_req_on_cancel(myr_req *req, void (*cb)(myr_req *req, void *arg), void *arg);

/* ---- response ------------------------------------------------------------ */

/* Adds a response header (before myr_respond / myr_stream_begin). name and
 * value are copied. Returns 0 or -EINVAL for a name or value that is not a
 * valid field (CR, LF, NUL...), -ENOMEM. */
int myr_set_header(myr_req *req, const char *name, const char *value);

/* Sends a complete response; body is copied. Server, Date, Content-Type and
 * Content-Length are added. Completes the request: req is invalid after. */
void myr_respond(myr_req *req, int status, const char *content_type,
                 const void *body, size_t len);
/* The same with a NUL-terminated text body. */
void myr_respond_str(myr_req *req, int status, const char *content_type,
                     const char *body);

/* Streaming (chunked) response. begin sends the head; write queues a chunk
 * (copied; len 0 is ignored); end sends the last chunk and completes the
 * request. begin and write return 0; write returns 1 when the unsent output
 * is large: stop and continue from myr_stream_on_drain(). Both return
 * -EPIPE once the client has gone (then just call end). HTTP/1.0 clients
 * get the body delimited by closing the connection. */
int  myr_stream_begin(myr_req *req, int status, const char *content_type);
int  myr_stream_write(myr_req *req, const void *data, size_t len);
/* Calls cb once, on the loop, when the unsent output has been written. */
void myr_stream_on_drain(myr_req *req, void (*cb)(myr_req *req, void *arg), void *arg);
void myr_stream_end(myr_req *req);

/* ---- timers ---------------------------------------------------------------- */

/* Calls cb(req, arg) on the loop after ms milliseconds, for a handler that
 * answers later. The timer dies with the request: if the request completes
 * first, cb never runs. It runs even when the request was cancelled.
 * Returns 0 or -ENOMEM. */
int myr_after(myr_req *req, uint64_t ms, void (*cb)(myr_req *req, void *arg), void *arg);

/* ---- JSON writer ----------------------------------------------------------
 *
 * A streaming writer that serializes straight into a buffer (the response's
 * when used through myr_respond_json). Commas and nesting are tracked for
 * you; initialise a writer with myr_json_init. Strings are
 * escaped per RFC 8259 (", \, control characters; invalid UTF-8 bytes become
 * U+FFFD). Errors (out of memory, nesting deeper than 32, a value where a key
 * belongs) are sticky: check myr_json_error() once at the end.
 */
typedef struct myr_json {
    char    *data;      /* owned: output, NOT NUL-terminated */
    size_t   len;       /* bytes written */
    size_t   cap;       /* bytes allocated */
    uint32_t depth;     /* open containers */
    uint64_t first;     /* bit d set: container at depth d has no member yet */
    uint64_t in_object; /* bit d set: container at depth d is an object */
    bool     want_value;/* a key was written; its value is next */
    int      error;     /* 0 or -errno, sticky */
} myr_json;

void myr_json_init(myr_json *w);
void myr_json_free(myr_json *w);         /* frees data */
void myr_json_obj_begin(myr_json *w);
void myr_json_obj_end(myr_json *w);
void myr_json_arr_begin(myr_json *w);
void myr_json_arr_end(myr_json *w);
void myr_json_key(myr_json *w, const char *key);
void myr_json_keyn(myr_json *w, const char *key, size_t len);
void myr_json_str(myr_json *w, const char *s);
void myr_json_strn(myr_json *w, const char *s, size_t len);
void myr_json_int(myr_json *w, int64_t v);
void myr_json_uint(myr_json *w, uint64_t v);
void myr_json_double(myr_json *w, double v);   /* NaN/Inf become null */
void myr_json_bool(myr_json *w, bool v);
void myr_json_null(myr_json *w);
int  myr_json_error(const myr_json *w);
/* Sends w's bytes as the response body (application/json) and frees w.
 * On a writer error it answers 500 instead. Completes the request. */
void myr_respond_json(myr_req *req, int status, myr_json *w);


/* ---- database (src/data) ------------------------------------------------------
 *
 * One small asynchronous API over SQLite (the embedded default) and
 * PostgreSQL. A service registers named statements at start-up; handlers
 * run them by name and get the rows back on the loop thread.
 *
 *   --db URL        sqlite:PATH (default sqlite:myriad.db, relative to the
 *                   working directory) or postgres://user:pass@host:port/db;
 *                   $DATABASE_URL is used when --db is not given.
 *
 * SQL uses PostgreSQL's $1, $2... placeholders on both backends (translated
 * to SQLite's ?1, ?2...). SQLite runs statements on the worker's thread pool,
 * never on the loop; PostgreSQL runs them on non-blocking connections on the
 * loop itself, pipelined: a batch costs one round trip.
 *
 * Completion. Every call that returns 0 calls its callback exactly once, on
 * the loop thread, never from inside the call. err is MYR_DB_OK or the first
 * error of the batch; results[i] belongs to calls[i] (all NULL on error).
 * Results live until the callback returns: copy what you keep. A request
 * whose client went away still gets its callback (answer it as usual; the
 * answer is dropped).
 */
typedef struct myr_db myr_db;               /* one worker's database handle */
typedef struct myr_db_result myr_db_result; /* the rows of one statement */

#define MYR_DB_ERRORS(X)                                                     \
    X(MYR_DB_OK, "ok")                                                       \
    X(MYR_DB_UNAVAILABLE, "database unavailable")                            \
    X(MYR_DB_TIMEOUT, "database query timed out")                            \
    X(MYR_DB_BUSY, "database overloaded")                                    \
    X(MYR_DB_NOMEM, "out of memory")                                         \
    X(MYR_DB_QUERY_FAILED, "query failed")                                   \
    X(MYR_DB_BUDGET, "query budget exceeded")

typedef enum myr_db_error {
#define MYR_DB_ENUM_(code, msg) code,
    MYR_DB_ERRORS(MYR_DB_ENUM_)
#undef MYR_DB_ENUM_
} myr_db_error;

const char *myr_db_strerror(myr_db_error err);
/* The HTTP status that suits err: 503 for unavailable, timeout, busy and
 * out of memory; 500 for failed queries and an exceeded strict budget. */
int myr_db_error_status(myr_db_error err);

/* Statement flags for myr_db_prepare. */
enum {
    MYR_DB_WRITE   = 1u << 0,  /* changes data: runs on the primary */
    MYR_DB_SHARDED = 1u << 1,  /* $1 is the shard key (see --db-shard) */
    MYR_DB_PG      = 1u << 2,  /* this SQL is for PostgreSQL only */
    MYR_DB_SQLITE  = 1u << 3,  /* this SQL is for SQLite only */
};

/* Registers a statement before myr_main. A name may be registered twice,
 * once per dialect (MYR_DB_PG, MYR_DB_SQLITE). Statements are prepared once
 * per connection. Returns 0, -EINVAL (bad name, SQL or flags), -EEXIST or
 * -ENOMEM. */
int myr_db_prepare(myr_app *app, const char *name, const char *sql, unsigned flags);

/* SQL run once per database, before serving, in the order registered, each
 * under an exclusive lock and recorded (table myriad_migrations) so that it
 * runs only once however many workers start together. dialect is MYR_DB_PG
 * or MYR_DB_SQLITE. Returns 0, -EINVAL or -ENOMEM. */
int myr_db_migration(myr_app *app, const char *name, unsigned dialect, const char *sql);

/* A statement parameter: build them with the helpers below. Text is copied
 * when the statement is submitted. */
typedef struct myr_db_param {
    int         type;     /* MYR_DB_NULL, MYR_DB_INT, MYR_DB_TEXT */
    int64_t     i;
    const char *s;
    size_t      len;
} myr_db_param;
enum { MYR_DB_NULL, MYR_DB_INT, MYR_DB_TEXT };

static inline myr_db_param myr_db_int_param(int64_t v)
{
    myr_db_param p = { MYR_DB_INT, v, NULL, 0 };
    return p;
}
static inline myr_db_param myr_db_text_param(const char *s, size_t len)
{
    myr_db_param p = { MYR_DB_TEXT, 0, s, len };
    return p;
}

/* One statement of a batch. */
typedef struct myr_db_call {
    const char         *stmt;      /* registered name */
    const myr_db_param *params;
    unsigned            nparams;
} myr_db_call;

typedef void (*myr_db_done)(myr_req *req, void *arg, myr_db_error err,
                            myr_db_result *const *results, size_t n);

/* Runs one statement for req. Returns 0 (cb will be called), or -ENOENT
 * (no such statement), -EINVAL (wrong parameter count) or -ENOMEM, and
 * then cb is not called. Counts toward the request's query budget. */
int myr_db_query(myr_req *req, const char *stmt, const myr_db_param *params,
                 unsigned nparams, myr_db_done cb, void *arg);
/* Runs n statements that complete together. On PostgreSQL they are
 * pipelined, each with its own Sync (each its own transaction); on SQLite
 * they run in one transaction (BEGIN IMMEDIATE if one of them writes). */
int myr_db_batch(myr_req *req, const myr_db_call *calls, size_t n, myr_db_done cb,
                 void *arg);

/* Statements this request has issued so far. */
uint32_t myr_db_queries(const myr_req *req);

/* Without a request (library code, background work): the worker's handle,
 * valid while the worker serves, and a batch whose callback gets arg. */
myr_db *myr_req_db(const myr_req *req);
typedef void (*myr_db_bg_done)(void *arg, myr_db_error err, myr_db_result *const *results,
                               size_t n);
int myr_db_submit(myr_db *db, const myr_db_call *calls, size_t n, myr_db_bg_done cb,
                  void *arg);

/* Results. Rows and columns count from 0. A NULL cell reads as 0 or "". */
size_t      myr_db_rows(const myr_db_result *res);
size_t      myr_db_cols(const myr_db_result *res);
uint64_t    myr_db_affected(const myr_db_result *res);  /* INSERT/UPDATE/DELETE */
bool        myr_db_is_null(const myr_db_result *res, size_t row, size_t col);
int64_t     myr_db_int(const myr_db_result *res, size_t row, size_t col);
/* NUL-terminated; *len (may be NULL) gets its length. */
const char *myr_db_text(const myr_db_result *res, size_t row, size_t col, size_t *len);

/* ---- worker threads: offloading, overload, settings (src/proc) ------------
 *
 * Each worker has a thread pool (--threads, default 4) for work that would
 * block its event loop: password hashing, compression, image work, blocking
 * libraries. The threads start on the first job and run at a lower CPU
 * priority than the loop (--pool-nice), so the loop keeps answering while
 * they compute.
 *
 * myr_offload runs work(arg) on a pool thread, then done(req, arg) on the
 * loop thread. work must not touch the loop, the request or any myr_*
 * function; done answers the request as a handler would. Do not answer req
 * before done runs: the job's state lives in the request. Exactly one of:
 *
 *   - returns 0: done runs exactly once, later (never inside this call):
 *       . after work, normally;
 *       . after work, with myr_req_cancelled(req) true, if the client went
 *         away while work ran — answer anyway, the answer is dropped;
 *       . WITHOUT work having run, with myr_req_cancelled(req) true, if the
 *         client went away (or the worker stopped) before a thread took the
 *         job — answer anyway, releasing what arg holds;
 *   - returns -EAGAIN (--offload-queue jobs already waiting), -ENOMEM or
 *     -ECANCELED (the worker is stopping): the request has ALREADY been
 *     answered 503 with Retry-After; req is invalid, done never runs, and
 *     arg is still the caller's to free;
 *   - returns -EBUSY: another offload of this request is still pending
 *     (one at a time: start the next from done). Nothing was done; the
 *     request is still the caller's.
 *
 * The handler's own myr_req_on_cancel callback, if set before, still runs
 * (after the job is cancelled); one set while the job is pending replaces
 * the offload's, so the job then runs to the end even if the client goes.
 */
int myr_offload(myr_req *req, void (*work)(void *arg),
                void (*done)(myr_req *req, void *arg), void *arg);

/* Why this worker is refusing work now, or NULL when it is healthy: "loop
 * lag" (mean lag over 0.5 s above --max-loop-lag), "offload queue full",
 * or "connection limit" (--max-connections open). While one of the first
 * two holds, new requests are answered 503 with Retry-After before any
 * handler runs; a health check answers from the third. */
const char *myr_overload_reason(const myr_req *req);

/* The value of a string setting (--name, MYRIAD_NAME or the config file),
 * e.g. myr_setting(req, "hash-alg"); NULL when no string setting has that
 * name. Lives as long as the worker. */
const char *myr_setting(const myr_req *req, const char *name);

/* ---- WebSocket (RFC 6455, permessage-deflate RFC 7692) -------------------
 *
 * myr_ws_route() makes a GET route that upgrades to WebSocket. The server
 * validates the handshake (426 + Sec-WebSocket-Version: 13 for another
 * version, 400 for a malformed one), negotiates permessage-deflate when
 * the client offers it (--ws-deflate), enforces the protocol (violations
 * close with 1002, invalid UTF-8 with 1007, messages over max_message with
 * 1009), answers pings, sends its own keep-alive pings (--ws-ping-interval)
 * and closes peers that stop answering (--ws-ping-timeout). Graceful stop
 * closes every connection with 1001.
 *
 * Lifetimes. A myr_ws lives from on_open until on_close returns; on_close
 * is called exactly once for every on_open, whoever ended the connection.
 * Between them the handle may be kept anywhere (timers, other
 * connections); once a close has started, sends return -EPIPE.
 *
 * Sending. myr_ws_send copies the message into the connection's send
 * queue and returns at once; the bytes are written when the socket takes
 * them. A peer that reads slower than the application sends makes the
 * queue grow: a message that would take a non-empty queue past max_queue
 * bytes triggers the route's overflow policy (an empty queue takes any
 * message), so a slow reader holds at most max_queue plus one message.
 */
typedef struct myr_ws myr_ws;

typedef enum myr_ws_overflow {
    MYR_WS_DISCONNECT = 0,   /* close with 1008 (policy violation); the default */
    MYR_WS_DROP_OLDEST,      /* drop the oldest queued messages not yet started */
    MYR_WS_COALESCE,         /* drop every queued message not yet started, so
                                only the newest waits */
} myr_ws_overflow;

typedef struct myr_ws_callbacks {
    /* The handshake is accepted; req (query, headers, params) is valid only
     * during the call. Messages sent here follow the 101 response. */
    void (*on_open)(myr_ws *ws, myr_req *req);
    /* One whole message (fragments joined, decompressed, text checked as
     * UTF-8). data lives only during the call. */
    void (*on_message)(myr_ws *ws, const void *data, size_t len, bool binary);
    /* The connection is gone. code: the peer's close code, 1005 for a close
     * frame without one, 1006 when the connection ended without one. */
    void (*on_close)(myr_ws *ws, int code);
    void           *arg;          /* for myr_ws_route_arg() */
    uint64_t        max_message;  /* bytes; 0: --ws-max-message */
    uint64_t        max_queue;    /* unsent bytes before `overflow`; 0: --ws-max-queue */
    myr_ws_overflow overflow;
    /* Optional, before the handshake is accepted (the request's query,
     * headers and params are readable): 0 accepts; an HTTP status 400-599
     * refuses with that status (any other value: 500). */
    int (*on_upgrade)(myr_req *req);
} myr_ws_callbacks;

/* Adds a WebSocket route (GET; pattern as for myr_route). cb is copied.
 * Returns 0, -EINVAL, -EEXIST or -ENOMEM like myr_route. Call before
 * myr_main. */
int myr_ws_route(myr_app *app, const char *pattern, const myr_ws_callbacks *cb);

/* Queues one text (binary false) or binary message. Returns 0 when queued;
 * -EPIPE once the connection is closing; -ENOBUFS when the queue was over
 * max_queue under MYR_WS_DISCONNECT (the connection is now closing with
 * 1008); -ENOMEM. Text must be valid UTF-8: the server does not check what
 * the application sends. */
int myr_ws_send(myr_ws *ws, const void *data, size_t len, bool binary);

/* Starts the close handshake with code (1000-1003, 1007-1014, 3000-4999)
 * and a UTF-8 reason of at most 123 bytes (NULL for none). Returns 0,
 * -EINVAL for a bad code or reason, -EPIPE if closing already. */
int myr_ws_close(myr_ws *ws, int code, const char *reason);

void   myr_ws_set_data(myr_ws *ws, void *data);   /* per-connection pointer */
void  *myr_ws_data(const myr_ws *ws);
void  *myr_ws_route_arg(const myr_ws *ws);        /* the callbacks' arg */
size_t myr_ws_queued(const myr_ws *ws);           /* bytes not yet written */

/* ---- cache (src/cache) -----------------------------------------------------
 *
 * Cache-aside in front of a slow source (usually the database), with two
 * tiers:
 *
 *   L1  the machine's shared memory (--cache-size, 64 MiB by default): what
 *       one worker process stores, every worker reads; microseconds.
 *   L2  Redis (--redis), shared by every machine. Skipped while Redis is
 *       down (the client's circuit breaker is open): requests then go to
 *       the source and still succeed.
 *
 * myr_cached(req, key, ...) looks in L1, then in L2, then calls the
 * source's fill; a value filled is stored in both tiers, then handed to
 * done. On top of that:
 *
 *   - single flight: concurrent misses on one key in a worker share one
 *     fill; across the workers of a machine, an L1 fill lease lets one
 *     worker fill while the others wait (--cache-lease bounds the wait if
 *     the filler dies);
 *   - stale-while-revalidate: a value past its ttl but within stale_ms is
 *     answered at once and refreshed by one fill in the background;
 *   - negative caching: a fill that answers MYR_CACHE_ABSENT is remembered
 *     in L1 for --cache-negative-ttl, so absent keys do not reach the
 *     source every time;
 *   - invalidation: myr_cache_del removes a key from L1 and L2, and with
 *     Redis every machine's L1 drops a key changed in Redis by anyone
 *     (Redis key tracking of the keys under --cache-prefix).
 *
 * Keys are byte strings of 1..250 bytes; in Redis they are stored under
 * --cache-prefix + key, values as they are (bytes). Values are at most
 * 1 MiB in L1 (larger ones skip L1).
 */
#define MYR_CACHE_STATUSES(X)                                                  \
    X(MYR_CACHE_OK, "ok")                   /* a value (cached or filled) */     \
    X(MYR_CACHE_ABSENT, "absent")           /* the source has no such value */  \
    X(MYR_CACHE_FAILED, "fill failed")      /* the fill reported an error */    \
    X(MYR_CACHE_NOMEM, "out of memory")                                        \
    X(MYR_CACHE_CANCELLED, "request cancelled") /* the client went away first */

typedef enum myr_cache_status {
#define MYR_CACHE_ENUM_(code, msg) code,
    MYR_CACHE_STATUSES(MYR_CACHE_ENUM_)
#undef MYR_CACHE_ENUM_
} myr_cache_status;

const char *myr_cache_strerror(myr_cache_status st);

/* One fill in progress: answer it with myr_cache_fill_done. */
typedef struct myr_cache_fill myr_cache_fill;

/* Where values come from. Copied by myr_cached: it may live on the stack,
 * but `arg` must outlive every fill it starts — a fill may run for no
 * request at all (a background refresh) or outlive the request that
 * caused it (its client went away): static data, or the app's. */
typedef struct myr_cache_source {
    /* Produces key's value (key is NUL-terminated after klen bytes) and
     * reports it with myr_cache_fill_done, exactly once, now or later, on
     * the loop thread. It has no request: use myr_db_submit with
     * myr_cache_fill_db(f). */
    void   (*fill)(myr_cache_fill *f, const char *key, size_t klen, void *arg);
    void    *arg;
    uint64_t ttl_ms;     /* fresh this long; 0 means --cache-ttl */
    uint64_t stale_ms;   /* then served stale this long while one refresh runs */
} myr_cache_source;

/* status MYR_CACHE_OK: value holds len bytes (maybe 0), valid until the
 * request completes (it is in the request's arena). Otherwise value is
 * NULL. A request whose client went away gets MYR_CACHE_CANCELLED (or an
 * answer that is dropped): answer anyway. */
typedef void (*myr_cache_done)(myr_req *req, void *arg, myr_cache_status st,
                               const void *value, size_t len);

/* Gets key's value for req through the tiers above. Returns 0: done runs
 * exactly once, on the loop thread, never inside this call. Or -EINVAL
 * (bad key, NULL fill or done) or -ENOMEM: done never runs and the request
 * is still the caller's to answer. A request may have several lookups
 * pending at once; answer it only after every done has run. */
int myr_cached(myr_req *req, const void *key, size_t klen, const myr_cache_source *src,
               myr_cache_done done, void *arg);

/* The fill's answer: MYR_CACHE_OK with the value (copied), MYR_CACHE_ABSENT
 * (cached as such for --cache-negative-ttl) or MYR_CACHE_FAILED (not
 * cached; the waiting requests get MYR_CACHE_FAILED). f is invalid after. */
void myr_cache_fill_done(myr_cache_fill *f, myr_cache_status st, const void *value, size_t len);

/* The worker's database handle, for myr_db_submit in a fill (NULL when the
 * app registered no statements). */
myr_db *myr_cache_fill_db(const myr_cache_fill *f);

/* Removes key from L1 and L2 (a delete Redis cannot take now is kept,
 * up to 4096 per worker, and sent when it answers again); other machines'
 * L1 drop it when Redis reports the change. Call after the source
 * changed. 0, -EINVAL or -ENOMEM. */
int myr_cache_del(myr_req *req, const void *key, size_t klen);

/* --cache-ttl in milliseconds (for Cache-Control: max-age). */
uint64_t myr_cache_ttl(const myr_req *req);

/* ---- pub/sub: topics across workers and machines (src/rt) ----------------
 *
 * A WebSocket connection subscribes to topics; anyone publishes to a topic;
 * every connection subscribed to it at that moment gets the message, as one
 * text or binary WebSocket message, wherever it is connected:
 *
 *   - on this worker: queued at once, one shared frame for all subscribers
 *     (encoded once, never copied per subscriber);
 *   - on the other workers of this machine: through the local bus, a ring
 *     in shared memory made before the workers are forked;
 *   - on other machines (other myriad instances sharing a Redis: --redis):
 *     through Redis PUBLISH on channel --pubsub-channel-prefix + topic.
 *
 * Guarantees: each subscriber gets each message at most once, and exactly
 * once while nothing below interferes; the messages of one publisher (one
 * worker process) arrive in the order they were published (nothing is
 * promised between publishers). Losses are counted in /metrics: a
 * subscriber's overflow policy (myriad_pubsub_dropped_total), a worker
 * lapped by the bus ring (--pubsub-bus-size; myriad_pubsub_bus_lost_total),
 * Redis down or reconnecting (myriad_pubsub_redis_publish_failures_total,
 * myriad_pubsub_redis_resubscribes_total). While Redis is down, delivery on
 * this machine goes on.
 *
 * Backpressure: each subscription has its own overflow policy, applied when
 * a message of that subscription would take the connection's send queue
 * past the route's max_queue: MYR_WS_DISCONNECT closes the subscriber with
 * 1008, MYR_WS_DROP_OLDEST drops its oldest queued messages, MYR_WS_COALESCE
 * keeps only the newest.
 *
 * Subscriptions end with myr_ws_unsubscribe or when the connection closes
 * (before on_close runs). Loop thread only, like everything here.
 */
typedef struct myr_pubsub myr_pubsub;   /* the worker's pub/sub state */

#define MYR_TOPIC_MAX 100   /* bytes of a topic name (any bytes, not empty) */
#define MYR_ID_MAX    48    /* bytes of a myr_unique_id, NUL included */

/* The worker's pub/sub handle, made on first use, valid while the worker
 * serves (keep it in timers and callbacks freely). NULL when out of
 * memory (myr_publish then fails with -ENOMEM). */
myr_pubsub *myr_ws_pubsub(myr_ws *ws);
myr_pubsub *myr_req_pubsub(myr_req *req);

/* Subscribes ws to topic (len bytes) with its overflow policy; subscribing
 * again to the same topic just changes the policy. 0, -EINVAL (empty or
 * over MYR_TOPIC_MAX, unknown policy), -EPIPE (the connection is closing),
 * -ENOMEM. */
int myr_ws_subscribe(myr_ws *ws, const char *topic, size_t len, myr_ws_overflow policy);
/* 0, or -ENOENT when ws was not subscribed to topic. */
int myr_ws_unsubscribe(myr_ws *ws, const char *topic, size_t len);

/* Publishes data (copied) to topic: text (valid UTF-8, unchecked) or
 * binary. Returns 0 once delivered on this worker and handed to the bus
 * and Redis; -EINVAL (topic), -EMSGSIZE (topic + data over 1/8 of
 * --pubsub-bus-size), -ENOMEM. */
int myr_publish(myr_pubsub *ps, const char *topic, size_t topic_len, const void *data,
                size_t len, bool binary);

/* Topics with subscribers on this machine and how many (summed over its
 * workers, read from shared memory), sorted by name. *out lives in req's
 * arena. 0, or -ENOMEM. */
typedef struct myr_topic_count {
    myr_str  topic;
    uint64_t subscribers;
} myr_topic_count;
int myr_topics(myr_req *req, const myr_topic_count **out, size_t *n);

/* Writes a name no other call returns on any worker or machine of the
 * service, "INSTANCE-SLOT-N" (16 hex digits of this machine's instance id,
 * the worker slot, a counter that survives worker restarts), NUL-terminated.
 * Returns its length. */
size_t myr_unique_id(myr_pubsub *ps, char out[MYR_ID_MAX]);

#ifdef __cplusplus
}
#endif
#endif
