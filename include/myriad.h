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

#ifdef __cplusplus
}
#endif
#endif
