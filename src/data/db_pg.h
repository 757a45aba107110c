/* db_pg — the PostgreSQL backend's internal types, shared by db_pg.c (one
 * connection: libpq non-blocking on the loop, pipeline mode) and
 * db_pg_cluster.c (servers, pools, routing to primaries, replicas and
 * shards, replica lag, the backend table).
 *
 *   cluster ── shards[] ── primary node, replica nodes
 *   node    ── conns[--db-pool], pending parts (no connection ready yet)
 *   conn    ── PGconn in pipeline mode, FIFO of waits (one per Sync sent)
 *   part    ── the calls of one op that go to one shard
 *
 * Every statement is sent as PQsendQueryPrepared + PQpipelineSync, so each
 * is its own implicit transaction and one failing does not abort the
 * others; the replies come back in order, matched to the FIFO of waits.
 */
#ifndef MYR_DATA_DB_PG_H
#define MYR_DATA_DB_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/loop.h"
#include "data/db.h"

typedef struct pg_node pg_node;
typedef struct pg_conn pg_conn;
typedef struct pg_part pg_part;
typedef struct pg_cluster pg_cluster;

/* The calls of one op bound for one shard. */
struct pg_part {
    db_op    *op;
    pg_node  *node;       /* where it runs or waits */
    pg_conn  *conn;       /* the connection it was sent on, NULL while pending */
    pg_part  *next;       /* node's pending list */
    uint32_t  shard;
    uint32_t  ncalls;
    uint32_t  left;       /* replies still expected */
    bool      retried;    /* moved off a failed replica once already */
    uint32_t  idx[];      /* indexes into op->calls */
};

enum pg_wait_kind { PGW_CALL, PGW_PREPARE, PGW_PROBE };

/* One Sync sent and not yet answered. */
typedef struct pg_wait {
    pg_part  *part;       /* PGW_CALL */
    uint32_t  k;          /* PGW_CALL: index into part->idx */
    uint8_t   kind;       /* enum pg_wait_kind */
    bool      got;        /* its result arrived (the NULL that follows is next) */
    PGresult *res;        /* its result, until the Sync */
    uint64_t  deadline;   /* loop-clock ns */
} pg_wait;

enum pg_conn_state {
    PGC_IDLE,        /* not connected; the timer (backoff) will connect */
    PGC_CONNECTING,  /* PQconnectPoll in progress */
    PGC_PREPARING,   /* pipeline mode on, statements being prepared */
    PGC_READY,       /* taking calls */
};

struct pg_conn {
    pg_node      *node;
    PGconn       *pg;          /* NULL when IDLE */
    loop_io       io;          /* PQsocket, fd -1 when not registered */
    loop_timer    timer;       /* connect deadline, backoff, or oldest wait's deadline */
    loop_deferred flush_defer; /* one PQflush per loop iteration */
    uint8_t       state;       /* enum pg_conn_state */
    bool          want_write;  /* PQflush left bytes: LOOP_WRITE registered */
    uint32_t      backoff_ms;  /* next reconnect delay, 0 after a success */
    pg_wait      *waits;       /* ring buffer of cap entries */
    uint32_t      head, count, cap;
};

struct pg_node {
    pg_cluster *cl;
    char       *url;         /* conninfo (may hold a password: never logged) */
    char       *name;        /* host:port/dbname, for log lines */
    uint32_t    shard;
    bool        replica;
    bool        down;        /* the last connect attempt failed: fail fast */
    bool        lagging;     /* replica: replay lag over --db-max-replica-lag */
    int64_t     lag_ms;      /* replica: last measured lag, -1 unknown */
    uint32_t    nready;      /* connections READY */
    uint32_t    nconns;
    pg_conn    *conns;       /* nconns */
    pg_part    *pending, **pending_tail;  /* waiting for a READY connection */
    loop_timer  pending_timer;            /* oldest pending part's deadline */
    loop_timer  lag_timer;                /* replica: lag probe period */
    bool        probing;                  /* a lag probe is in flight */
    uint64_t    calls;                    /* statements sent here, total */
};

typedef struct pg_shard {
    pg_node  *primary;
    pg_node **replicas;
    uint32_t  nreplicas;
    uint32_t  rr;            /* round-robin cursor over replicas */
} pg_shard;

struct pg_cluster {
    myr_db   *db;
    pg_shard *shards;        /* db->nshards */
    pg_node **nodes;         /* every node, for shutdown */
    uint32_t  nnodes;
    uint64_t  err_logged;    /* loop ns of the last query-error log line */
    bool      closing;       /* shutting down: nothing is retried */
    pg_part  *failed;        /* parts to fail, from fail_defer (never inside a submit) */
    loop_deferred fail_defer;
};

/* db_pg.c: one connection. */
void pg_conn_init(pg_conn *c, pg_node *n);
void pg_conn_start(pg_conn *c);          /* IDLE -> CONNECTING */
void pg_conn_close(pg_conn *c);          /* to IDLE, no reconnect; waits dropped */
/* Sends the calls of part on c (READY). 0 or -1 (connection failed and
 * the part was handed back through pg_cluster_part_failed). */
int  pg_conn_send_part(pg_conn *c, pg_part *p);
/* Sends a lag probe on c (READY). */
int  pg_conn_send_probe(pg_conn *c);

/* db_pg_cluster.c: what connections report. */
void pg_node_conn_ready(pg_node *n);
void pg_node_conn_lost(pg_node *n, bool was_ready, bool connect_failed);
/* A part's connection failed or timed out before every reply arrived. */
void pg_cluster_part_failed(pg_part *p, myr_db_error err);
/* One reply for part p, call k: res is owned by the callee (NULL = failed). */
void pg_cluster_reply(pg_part *p, uint32_t k, PGresult *res);
void pg_node_probe_result(pg_node *n, PGresult *res);

#endif
