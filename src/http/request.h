/* request — the myr_req object behind the public request API.
 *
 * A request is taken from the server's pool when the first byte of its head
 * arrives and goes back when its response is complete. Its parsed head points
 * into the connection's input buffer; if the connection dies while a handler
 * still holds the request, the buffer is handed to the request (owned_in) so
 * those pointers stay valid until the handler answers.
 */
#ifndef MYR_HTTP_REQUEST_H
#define MYR_HTTP_REQUEST_H

#include <stdbool.h>

#include "myriad.h"
#include "core/arena.h"
#include "core/buf.h"
#include "http/http_parser.h"
#include "http/router.h"

typedef struct http_conn http_conn;
typedef struct http_server http_server;
typedef struct req_timer req_timer;

enum req_state {
    REQ_READING,    /* head parsed or parsing, body being read */
    REQ_HANDLING,   /* handler called, no response yet */
    REQ_STREAMING,  /* chunked response begun */
    REQ_DONE,       /* response complete */
};

struct myr_req {
    http_conn     *conn;          /* NULL once cancelled (connection gone) */
    http_server   *srv;
    enum req_state state;
    bool           cancelled;
    bool           is_head;       /* HEAD: send no body bytes */
    bool           keep_alive;    /* the connection may carry another request */
    http_request   h;             /* parsed head; h.headers -> header_space */
    const char    *base;          /* first byte of the request in the input */
    const char    *body;          /* base + head_len, set at dispatch */
    uint32_t       head_len;      /* bytes of the head in the input */
    uint64_t       body_len;      /* body bytes (decoded) following the head */
    http_chunked   chunked;       /* decoder state for a chunked body */
    router_match   match;
    arena          arena;         /* myr_alloc */
    buf            resp_headers;  /* "Name: value\r\n" lines from myr_set_header */
    buf            owned_in;      /* the input buffer, after a cancel */
    req_timer     *timers;        /* myr_after timers, stopped on completion */
    void         (*on_cancel)(myr_req *req, void *arg);
    void          *cancel_arg;
    void         (*on_drain)(myr_req *req, void *arg);   /* streaming */
    void          *drain_arg;
    uint64_t       start_ns;      /* observability: loop clock at the first byte */
    uint64_t       resp_bytes;    /* observability: response body bytes queued */
    int            status;        /* observability: status answered (0 before) */
    uint32_t       db_queries;    /* data layer: statements issued (myr_db_queries) */
    bool           db_wrote;      /* data layer: a write ran (read-your-writes) */
    myr_req       *next_free;     /* server pool link */
    http_header    header_space[];/* limits.max_headers entries */
};

/* Moves every pointer of the parsed head by (new_base - old_base), after
 * the input buffer holding it moved. */
void req_rebase(myr_req *r, const char *old_base, const char *new_base);
/* Returns a completed or abandoned request to the pool, freeing its arena,
 * headers and timers. */
void req_release(myr_req *r);
/* Called by the connection when it closes under a pending request. */
void req_cancel(myr_req *r);
/* Dispatches to the app's router (404/405 handled here). */
void req_dispatch(myr_req *r);
/* Answers a request with a short text error; the server's own responses. */
void req_respond_error(myr_req *r, int status);

#endif
