/* redis_int — the Redis client's insides, shared by its two files and by
 * nothing else: redis.c (connections, the adapter, commands, timeouts, the
 * breaker, lifecycle) and redis_sub.c (channels, the subscriber
 * connection's handshake and replies, key tracking). Loop thread only.
 */
#ifndef MYR_DATA_REDIS_INT_H
#define MYR_DATA_REDIS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/async.h>

#include "core/loop.h"
#include "data/redis.h"

struct metrics_worker;
struct metrics_family;

#define INVALIDATE_CHANNEL      "__redis__:invalidate"
#define INVALIDATE_CHANNEL_LEN  (sizeof(INVALIDATE_CHANNEL) - 1)
#define MAX_TRACK_PREFIXES      32

enum conn_kind  { CONN_CMD, CONN_SUB };
enum conn_state { CONN_IDLE, CONN_CONNECTING, CONN_READY };
enum rcmd_state { RCMD_WAITING, RCMD_ORPHAN, RCMD_FAILQ, RCMD_FREE };

typedef struct rcmd rcmd;
typedef struct rconn rconn;

/* One command the client accepted. */
struct rcmd {
    rcmd     *next, *prev;   /* waiting list, fail-later queue or pool (next only) */
    redis_cb  cb;            /* NULL once run (orphans) or fire-and-forget */
    void     *arg;
    uint64_t  deadline;      /* loop clock, ns */
    uint8_t   state;         /* enum rcmd_state */
    uint8_t   user;          /* a caller's command: counted in metrics and the breaker */
    uint8_t   status;        /* RCMD_FAILQ: the status to deliver */
};

struct rconn {
    redis             *r;
    enum conn_kind     kind;
    enum conn_state    state;
    redisAsyncContext *ac;           /* NULL when IDLE */
    loop_io            io;           /* the socket; fd -1 when not registered */
    loop_timer         timer;        /* IDLE: reconnect; else the head's deadline
                                        (command) or the handshake's (subscriber) */
    loop_timer         flush_timer;  /* 0 ms: the end-of-iteration write */
    bool               want_read;    /* EPOLLIN asked by hiredis */
    bool               want_write;   /* EPOLLOUT asked (connecting, or socket full) */
    bool               in_flush;
    bool               dying;        /* redisAsyncFree asked; submit nothing more */
    bool               drop_pending; /* drop once the timer pass is over */
    bool               ever_ready;
    bool               down_logged;  /* the outage was logged */
    rcmd              *head, *tail;  /* waiting for replies, not timed out */
    uint32_t           waiting;      /* on the list */
    uint32_t           orphans;      /* timed out, reply still due */
    uint32_t           attempts;     /* failed connects since the last ready */
    uint64_t           backoff_ms;   /* next reconnect delay cap */
    unsigned           hs_replies;   /* subscriber handshake replies seen */
    char               err[160];     /* why the last connection ended */
};

/* One subscriber of a channel or pattern. */
typedef struct rsub {
    struct rsub      *next;
    redis_message_cb  cb;
    void             *arg;
    bool              dead;          /* unsubscribed during a dispatch */
} rsub;

/* A channel or pattern with at least one subscriber (hash entry). */
typedef struct rchan {
    struct rchan *hnext;             /* hash chain */
    struct rchan *sweep_next;        /* r->sweep, when in_sweep */
    rsub         *subs;
    uint32_t      hash;
    bool          pattern;
    bool          confirmed;         /* (p)subscribe confirmed on this connection */
    bool          resub_pending;     /* lost while confirmed: say so on the next confirm */
    bool          in_sweep;
    size_t        len;
    char          name[];
} rchan;

typedef struct rtracker {
    struct rtracker    *next;
    redis_invalidate_cb on_invalidate;
    redis_reset_cb      on_reset;
    void               *arg;
    bool                dead;
    size_t              n;
    size_t              plen[MAX_TRACK_PREFIXES];
    char               *prefix[MAX_TRACK_PREFIXES];
} rtracker;

struct redis {
    loop           *loop;
    redis_options   opt;             /* defaults applied; opt.url points to url_text */
    char           *url_text;
    redis_url       url;
    char            where[300];      /* host:port or unix:path, for logs (no password) */
    uint64_t        timeout_ns;
    rconn           cmd, sub;
    bool            closing;         /* redis_free runs */
    uint64_t        rng;             /* xorshift64 state: reconnect jitter */

    /* breaker (command connection) */
    enum redis_breaker breaker;
    uint32_t        failures;        /* consecutive, while closed */
    loop_timer      breaker_timer;   /* cool-down */
    bool            probe_inflight;

    rcmd           *failq_head, *failq_tail;  /* callbacks due next timer phase */
    loop_timer      failq_timer;
    rcmd           *pool;
    uint32_t        npool;

    /* pub/sub */
    rchan         **buckets;
    uint32_t        nbuckets, nchans;
    rchan          *sweep;           /* channels with dead subscribers */
    uint32_t        dispatching;     /* depth of user pub/sub callbacks */

    /* tracking */
    rtracker       *trackers;
    bool            trackers_dirty;  /* a tracker died during a dispatch */
    long long       sub_id;          /* CLIENT ID of the subscriber connection; -1 */
    bool            inv_requested;   /* SUBSCRIBE __redis__:invalidate sent */
    bool            inv_subscribed;  /* ... and confirmed */
    bool            trk_on;          /* CLIENT TRACKING on answered OK */
    uint32_t        trk_pending;     /* CLIENT TRACKING on commands in flight */
    bool            trk_err_logged;

    /* counters */
    uint64_t        reconnects;
    uint64_t        commands[REDIS_STATUS_COUNT];
    struct metrics_worker *mw;
    struct metrics_family *f_cmds, *f_up, *f_breaker, *f_reconnects;
};

/* ---- redis.c, for redis_sub.c ------------------------------------------------------ */

rcmd *rcmd_get(redis *r);                 /* NULL when out of memory */
void  rcmd_put(redis *r, rcmd *c);
/* The connection exists and takes commands (not IDLE, not being freed). */
bool  rconn_usable(const rconn *cn);
/* Queues c on a usable command connection with the client's timeout.
 * 0, or -1 (c is the caller's again). */
int   rconn_send(rconn *cn, rcmd *c, int argc, const char *const *argv,
                 const size_t *argvlen);
/* The same for a NUL-terminated internal command: not counted in metrics
 * or by the breaker; cb may be NULL. 0 or -errno. */
int   rconn_send_internal(rconn *cn, redis_cb cb, void *arg, int argc,
                          const char *const *argv);
void  rconn_ready(rconn *cn);             /* the handshake is done */
void  rconn_drop(rconn *cn, const char *why);   /* free the context; it reconnects */
void  rsub_ensure(redis *r);              /* open the subscriber connection (next turn) */

/* ---- redis_sub.c, for redis.c ------------------------------------------------------- */

bool  rsub_needed(const redis *r);        /* channels or trackers exist */
void  rsub_handshake(rconn *cn);          /* AUTH, CLIENT ID, (P)SUBSCRIBE everything */
void  rsub_lost(redis *r);                /* the subscriber connection is gone */
void  rsub_free_all(redis *r);            /* redis_free: channels and trackers */
void  rtrack_setup(redis *r);             /* CLIENT TRACKING on, when both sides are ready */
void  rtrack_lost(redis *r);              /* tracking is off: reset the trackers */

#endif
