/* backend — one server behind the balancer, the set of them, and each
 * one's pool of idle keep-alive connections (per worker).
 *
 * A backend's life in service:
 *
 *            active checks fail `fall` times, or `eject-errors` failed
 *            requests in a row (passive ejection)
 *     UP ───────────────────────────────────────────────> DOWN
 *      ^                                                     │
 *      └──── `rise` checks pass (or, without active checks,  ┘
 *            `eject-time` passes); slow start ramps its weight
 *            from 1/16 to full over `slow-start`
 *
 * Independently it may be draining (admin POST /backends/NAME/drain, or
 * dropped from the configuration by a reload): no new requests, requests
 * in flight finish, idle pooled connections close. A backend dropped by a
 * reload is `removed`: out of the set at once, freed when its last
 * connection closes.
 *
 * The set keeps the configured order (lb_view for the policies) and
 * recomputes effective weights on each pick: weight x slow-start ramp, 0
 * when down or draining.
 *
 * Ownership: the balancer owns the set; the set owns its backends; a
 * removed backend is owned by the retired list until freed. Connections
 * hold their backend (nconns), so it outlives them.
 */
#ifndef MYR_PROXY_BACKEND_H
#define MYR_PROXY_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"
#include "core/loop.h"
#include "proxy/lb.h"
#include "proxy/metrics.h"

typedef struct balancer balancer;
typedef struct bconn bconn;
typedef struct probe probe;

#define BACKEND_NAME_MAX 272      /* "host:port" */
#define BACKEND_WEIGHT_MAX 256

struct backend {
    char       name[BACKEND_NAME_MAX];   /* as configured: metrics label, admin path */
    struct sockaddr_storage addr;        /* resolved once (start-up, reload) */
    socklen_t  addrlen;
    uint32_t   weight;        /* configured, 1..BACKEND_WEIGHT_MAX */
    bool       up;            /* in service as far as health goes */
    bool       draining;      /* takes no new requests */
    bool       removed;       /* no longer configured; freed when unused */
    uint64_t   up_since;      /* loop ns when it last came up (slow start) */
    uint32_t   rise, fall;    /* consecutive passed / failed active checks */
    uint32_t   failures;      /* consecutive failed requests (passive) */
    uint32_t   active;        /* requests in flight in this worker */
    bconn     *idle;          /* pooled idle connections, most recent first */
    uint32_t   nidle;         /* connections in `idle` */
    uint32_t   nconns;        /* open connections: connecting, busy, idle */
    loop_timer eject_timer;   /* ends a passive ejection without active checks */
    probe     *probe;         /* active health check, NULL without */
    balancer  *bal;
    int        sidx;          /* index in the shared name table, -1 if none */
    backend   *next_retired;  /* the retired list, while removed */
    backend_stats st;
};

/* Why a request on a backend ended, for passive health. */
enum backend_outcome { OUTCOME_OK, OUTCOME_5XX, OUTCOME_FAILED };

/* Parses "HOST:PORT[,weight=W]" (len bytes, not NUL-terminated) into
 * host, port and weight. 0, or -EINVAL with err naming the problem. */
int backend_parse(const char *spec, size_t len, char *host, size_t hostcap, int *port,
                  uint32_t *weight, char *err, size_t errlen);

/* Checks cfg->backends the way backend_set_apply would (syntax, names,
 * resolution) without changing anything. 0, or -EINVAL with err set. */
int backend_list_check(const config *cfg, char *err, size_t errlen);

/* Builds or updates the set from cfg->backends (start-up and reload):
 * new names are added (after a reload, in slow start), weights updated,
 * missing ones removed (draining, freed when unused). Resolution happens
 * here, before anything changes: on error nothing changes and err says
 * why. 0 or -errno. */
int backend_set_apply(balancer *bal, char *err, size_t errlen);
/* (Re)builds the policy's state for the set (its configured weights).
 * 0 or -ENOMEM. */
int backend_policy_build(balancer *bal);
/* Frees every backend (shutdown; all connections are closed). */
void backend_set_free(balancer *bal);

/* Picks a backend for a request with this key, avoiding `tried`. */
backend *backend_pick(balancer *bal, uint64_t key, backend *const *tried, uint32_t ntried);
backend *backend_find(balancer *bal, const char *name, size_t len);
/* Effective weight now, in 1/LB_WEIGHT_SCALE units: 0 when it must not
 * take requests. */
uint32_t backend_eff_weight(const backend *b, uint64_t now);

/* A request finished on b: passive health (5xx and failures in a row
 * eject it). */
void backend_report(backend *b, enum backend_outcome o);
/* An active health check finished. */
void backend_check_result(backend *b, bool ok);
/* Starts or stops draining in this worker. */
void backend_set_draining(backend *b, bool on);
/* Admin: drains (or undrains) b in every worker, through the shared flag. */
void backend_admin_drain(backend *b, bool on);
/* Applies drain flags other workers' admin requests set. */
void backend_sync_drains(balancer *bal);

/* Pool. get returns an idle connection (most recently used) or NULL.
 * put takes a connection that finished a response and may be reused; it
 * is closed instead when the pool is full or the backend draining. */
bconn *backend_pool_get(backend *b);
void   backend_pool_put(backend *b, bconn *c);
/* Unlinks c from b's idle list (c is closing). */
void   backend_pool_remove(backend *b, bconn *c);
/* A connection of b closed: b may now be freed if removed. */
void   backend_conn_closed(backend *b);

#endif
