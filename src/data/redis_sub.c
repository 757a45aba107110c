/* redis_sub — the Redis client's subscriber side: the channel table and
 * its fan-out, the subscriber connection's handshake and replies, and key
 * tracking (client-side caching). The core (redis.c) owns the connections,
 * commands, breaker and lifecycle; redis_int.h is the boundary between the
 * two files.
 *
 * Channel table: one hash entry (rchan) per channel or pattern with at least
 * one subscriber, so the server sees one SUBSCRIBE however many local
 * subscribers share it; messages fan out to the entry's list. A subscriber
 * removed during a dispatch (its own callback, or another's) is only marked
 * dead and freed by sweep() once no dispatch is running, which is also when
 * an entry left empty is unsubscribed and freed: iteration never meets
 * freed memory.
 *
 * Replies: every command of the subscriber connection has one hiredis
 * callback (on_sub_msg, privdata the connection), which tells replies apart
 * by their shape: hiredis 0.14 may call the previous callback again for a
 * pub/sub reply it cannot match to a channel, which is harmless only if
 * that callback reads the reply rather than trusting its privdata. No PING
 * is ever sent here (in subscribed mode hiredis would keep its callback
 * forever); TCP keep-alive finds a dead peer instead.
 *
 * Tracking (RESP2): the subscriber connection learns its CLIENT ID in its
 * handshake and subscribes __redis__:invalidate; once that is confirmed and
 * the command connection is ready, the command connection turns tracking on
 * with REDIRECT to that id, in BCAST mode with the merged prefixes of every
 * tracker (NOLOOP). Losing either connection turns it off (trackers reset);
 * each new set-up resets them again when Redis confirms it.
 */
#include "data/redis_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"

static void reset_trackers(redis *r);
static void subscribe_all(rconn *cn);
static void on_sub_msg(redisAsyncContext *ac, void *reply, void *priv);

/* Every command of the subscriber connection has the one callback. */
static int sub_send(rconn *cn, int argc, const char *const *argv, const size_t *len)
{
    return redisAsyncCommandArgv(cn->ac, on_sub_msg, cn, argc, (const char **)argv, len)
           == REDIS_OK ? 0 : -1;
}

/* ---- pub/sub: the channel table ------------------------------------------------------------ */

static uint32_t hash_name(bool pattern, const void *p, size_t n)
{
    uint32_t h = pattern ? 0x9747b28cu : 2166136261u;   /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 16777619u;
    return h;
}

static rchan *chan_find(const redis *r, bool pattern, const void *name, size_t len)
{
    if (!r->nbuckets)
        return NULL;
    uint32_t h = hash_name(pattern, name, len);
    for (rchan *ch = r->buckets[h & (r->nbuckets - 1)]; ch; ch = ch->hnext)
        if (ch->hash == h && ch->pattern == pattern && ch->len == len &&
            memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

static int chan_grow(redis *r)
{
    uint32_t n = r->nbuckets ? r->nbuckets * 2 : 16;
    rchan **b = calloc(n, sizeof *b);
    if (!b)
        return -ENOMEM;
    for (uint32_t i = 0; i < r->nbuckets; i++)
        for (rchan *ch = r->buckets[i], *next; ch; ch = next) {
            next = ch->hnext;
            ch->hnext = b[ch->hash & (n - 1)];
            b[ch->hash & (n - 1)] = ch;
        }
    free(r->buckets);
    r->buckets = b;
    r->nbuckets = n;
    return 0;
}

static rchan *chan_add(redis *r, bool pattern, const void *name, size_t len)
{
    if (r->nchans >= r->nbuckets && chan_grow(r) < 0)
        return NULL;
    rchan *ch = calloc(1, sizeof *ch + len + 1);
    if (!ch)
        return NULL;
    ch->pattern = pattern;
    ch->len = len;
    memcpy(ch->name, name, len);
    ch->hash = hash_name(pattern, name, len);
    rchan **b = &r->buckets[ch->hash & (r->nbuckets - 1)];
    ch->hnext = *b;
    *b = ch;
    r->nchans++;
    return ch;
}

static void chan_remove(redis *r, rchan *ch)
{
    for (rchan **p = &r->buckets[ch->hash & (r->nbuckets - 1)]; *p; p = &(*p)->hnext)
        if (*p == ch) {
            *p = ch->hnext;
            break;
        }
    r->nchans--;
    free(ch);
}

static void chan_send(rconn *cn, const rchan *ch, bool subscribe)
{
    const char *cmd = ch->pattern ? (subscribe ? "PSUBSCRIBE" : "PUNSUBSCRIBE")
                                  : (subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE");
    const char *argv[] = { cmd, ch->name };
    size_t len[] = { strlen(cmd), ch->len };
    sub_send(cn, 2, argv, len);
}

static void subscribe_all(rconn *cn)
{
    redis *r = cn->r;
    if (r->trackers) {
        sub_send(cn, 2, (const char *const[]){ "SUBSCRIBE", INVALIDATE_CHANNEL },
                 (const size_t[]){ 9, INVALIDATE_CHANNEL_LEN });
        r->inv_requested = true;
    }
    for (uint32_t i = 0; i < r->nbuckets; i++)
        for (rchan *ch = r->buckets[i]; ch; ch = ch->hnext)
            chan_send(cn, ch, true);
}

/* Frees dead subscribers (and trackers); a channel left without any is
 * unsubscribed. Only outside dispatches. */
static void sweep(redis *r)
{
    while (r->sweep) {
        rchan *ch = r->sweep;
        r->sweep = ch->sweep_next;
        ch->in_sweep = false;
        for (rsub **p = &ch->subs; *p;) {
            rsub *s = *p;
            if (s->dead) {
                *p = s->next;
                free(s);
            } else {
                p = &s->next;
            }
        }
        if (!ch->subs) {
            if (r->sub.ac && rconn_usable(&r->sub))
                chan_send(&r->sub, ch, false);
            chan_remove(r, ch);
        }
    }
    if (r->trackers_dirty) {
        r->trackers_dirty = false;
        for (rtracker **p = &r->trackers; *p;) {
            rtracker *t = *p;
            if (t->dead) {
                *p = t->next;
                for (size_t i = 0; i < t->n; i++)
                    free(t->prefix[i]);
                free(t);
            } else {
                p = &t->next;
            }
        }
        if (!r->trackers && r->trk_on && r->cmd.state == CONN_READY && rconn_usable(&r->cmd)) {
            r->trk_on = false;
            rconn_send_internal(&r->cmd, NULL, NULL, 3,
                          (const char *const[]){ "CLIENT", "TRACKING", "off" });
        }
    }
}

static void dispatch(redis *r, rchan *ch, const redis_message *m)
{
    r->dispatching++;
    for (rsub *s = ch->subs; s; s = s->next)
        if (!s->dead)
            s->cb(s->arg, m);
    r->dispatching--;
    if (!r->dispatching)
        sweep(r);
}

/* ---- the subscriber connection's replies ------------------------------------------------ */

static bool is_str(const redisReply *e)
{
    return e && (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS);
}

static void on_invalidation(redis *r, const redisReply *keys);

/* A pub/sub reply: message, pmessage, (p)subscribe confirmations. */
static void sub_array(redis *r, const redisReply *rep)
{
    if (rep->elements < 3 || !is_str(rep->element[0]) || !is_str(rep->element[1]))
        return;
    const redisReply *const *e = (const redisReply *const *)rep->element;
    bool pattern = tolower((unsigned char)e[0]->str[0]) == 'p';
    const char *kind = e[0]->str + pattern;
    redis_message m = { .kind = REDIS_MSG_MESSAGE };
    rchan *ch;
    if (strcasecmp(kind, "message") == 0) {
        if (!pattern && e[1]->len == INVALIDATE_CHANNEL_LEN &&
            memcmp(e[1]->str, INVALIDATE_CHANNEL, INVALIDATE_CHANNEL_LEN) == 0) {
            on_invalidation(r, e[2]);
            return;
        }
        unsigned d = pattern ? 3 : 2;
        if (rep->elements <= d || !is_str(e[d]) || (pattern && !is_str(e[2])))
            return;
        ch = chan_find(r, pattern, e[1]->str, e[1]->len);
        if (!ch)
            return;
        if (pattern) {
            m.pattern = e[1]->str;
            m.pattern_len = e[1]->len;
        }
        m.channel = e[pattern ? 2 : 1]->str;
        m.channel_len = e[pattern ? 2 : 1]->len;
        m.data = e[d]->str;
        m.len = e[d]->len;
        dispatch(r, ch, &m);
    } else if (strcasecmp(kind, "subscribe") == 0) {
        if (!pattern && e[1]->len == INVALIDATE_CHANNEL_LEN &&
            memcmp(e[1]->str, INVALIDATE_CHANNEL, INVALIDATE_CHANNEL_LEN) == 0) {
            r->inv_subscribed = true;
            rtrack_setup(r);
            return;
        }
        ch = chan_find(r, pattern, e[1]->str, e[1]->len);
        if (!ch)
            return;
        ch->confirmed = true;
        if (ch->resub_pending) {
            ch->resub_pending = false;
            m.kind = REDIS_MSG_RESUBSCRIBED;
            if (pattern) {
                m.pattern = ch->name;
                m.pattern_len = ch->len;
            } else {
                m.channel = ch->name;
                m.channel_len = ch->len;
            }
            dispatch(r, ch, &m);
        }
    }
}

static void sub_ready(rconn *cn)
{
    redis *r = cn->r;
    loop_timer_stop(r->loop, &cn->timer);
    rconn_ready(cn);
    rtrack_setup(r);
}

static void on_sub_msg(redisAsyncContext *ac, void *reply, void *priv)
{
    rconn *cn = priv;
    redis *r = cn->r;
    const redisReply *rep = reply;
    if (!rep || r->closing)
        return;
    if (rep->type == REDIS_REPLY_ARRAY) {
        sub_array(r, rep);
        return;
    }
    if (cn->state != CONN_CONNECTING)
        return;
    cn->hs_replies++;
    bool auth_reply = r->url.password[0] && cn->hs_replies == 1;
    if (rep->type == REDIS_REPLY_ERROR) {
        if (auth_reply) {
            if (!cn->down_logged)
                log_error("redis: %s refused the subscriber connection: %s", r->where, rep->str);
            cn->down_logged = true;
            rconn_drop(cn, "AUTH failed");
            return;
        }
        if (!r->trk_err_logged)   /* Redis < 5: pub/sub works, tracking cannot */
            log_warn("redis: CLIENT ID failed (%s): key tracking unavailable", rep->str);
        r->trk_err_logged = true;
        r->sub_id = -1;
        sub_ready(cn);
    } else if (rep->type == REDIS_REPLY_INTEGER && !auth_reply) {
        r->sub_id = rep->integer;
        sub_ready(cn);
    }
}

/* ---- the subscriber connection's handshake --------------------------------------------- */

static void on_sub_hs_timeout(loop_timer *t)
{
    rconn *cn = container_of(t, rconn, timer);
    if (cn->state == CONN_CONNECTING)
        rconn_drop(cn, "handshake timeout");
}

void rsub_handshake(rconn *cn)
{
    redis *r = cn->r;
    cn->hs_replies = 0;
    if (r->url.password[0]) {
        const char *a3[] = { "AUTH", r->url.user, r->url.password };
        const char *a2[] = { "AUTH", r->url.password };
        size_t l3[] = { 4, strlen(r->url.user), strlen(r->url.password) };
        size_t l2[] = { 4, strlen(r->url.password) };
        if (r->url.user[0])
            sub_send(cn, 3, a3, l3);
        else
            sub_send(cn, 2, a2, l2);
    }
    sub_send(cn, 2, (const char *const[]){ "CLIENT", "ID" }, (const size_t[]){ 6, 2 });
    subscribe_all(cn);
    loop_timer_start(r->loop, &cn->timer, r->opt.timeout_ms, on_sub_hs_timeout);
}

/* ---- tracking ------------------------------------------------------------------------------ */

static void reset_trackers(redis *r)
{
    r->dispatching++;
    for (rtracker *t = r->trackers; t; t = t->next)
        if (!t->dead)
            t->on_reset(t->arg);
    r->dispatching--;
    if (!r->dispatching)
        sweep(r);
}

static bool tracker_matches(const rtracker *t, const char *key, size_t len)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->plen[i] <= len && memcmp(t->prefix[i], key, t->plen[i]) == 0)
            return true;
    return false;
}

static void on_invalidation(redis *r, const redisReply *keys)
{
    if (!keys || keys->type == REDIS_REPLY_NIL) {   /* FLUSHALL / FLUSHDB */
        reset_trackers(r);
        return;
    }
    if (keys->type != REDIS_REPLY_ARRAY)
        return;
    r->dispatching++;
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        if (!is_str(k))
            continue;
        for (rtracker *t = r->trackers; t; t = t->next)
            if (!t->dead && tracker_matches(t, k->str, k->len))
                t->on_invalidate(t->arg, k->str, k->len);
    }
    r->dispatching--;
    if (!r->dispatching)
        sweep(r);
}

static void on_tracking_reply(void *arg, enum redis_status st, const redisReply *reply)
{
    redis *r = arg;
    r->trk_pending--;
    if (st == REDIS_STATUS_OK) {
        if (!r->trk_pending && !r->closing) {
            r->trk_on = true;
            log_debug("redis: key tracking on");
            reset_trackers(r);   /* whatever was cached before may be stale */
        }
    } else if (st == REDIS_STATUS_ERROR) {
        if (!r->trk_err_logged)
            log_warn("redis: CLIENT TRACKING failed (%s): key tracking unavailable",
                     reply->str);
        r->trk_err_logged = true;
    } else if (st == REDIS_STATUS_TIMEOUT) {
        r->cmd.drop_pending = true;   /* retried on the next connection */
    }
}

/* The prefixes of every live tracker, without duplicates and without any
 * prefix that another one covers (Redis refuses overlapping BCAST prefixes).
 * Returns the count; *out is malloc'ed (NULL when there is none). */
static size_t tracking_prefixes(const redis *r, const char ***out)
{
    size_t n = 0;
    for (const rtracker *t = r->trackers; t; t = t->next)
        if (!t->dead)
            n += t->n;
    *out = NULL;
    if (!n)
        return 0;
    const char **all = malloc(n * sizeof *all);
    if (!all)
        return 0;
    size_t k = 0;
    for (const rtracker *t = r->trackers; t; t = t->next)
        for (size_t i = 0; !t->dead && i < t->n; i++)
            all[k++] = t->prefix[i];
    size_t m = 0;
    for (size_t j = 0; j < n; j++) {
        size_t lj = strlen(all[j]);
        bool covered = false;
        for (size_t i = 0; i < n && !covered; i++) {
            size_t li = strlen(all[i]);
            if (i != j && li <= lj && memcmp(all[i], all[j], li) == 0)
                covered = li < lj || i < j;   /* equal: the first one stays */
        }
        if (!covered)
            all[m++] = all[j];
    }
    *out = all;
    return m;
}

/* CLIENT TRACKING on REDIRECT id BCAST PREFIX ... NOLOOP, once both
 * connections are ready and __redis__:invalidate is subscribed. */
void rtrack_setup(redis *r)
{
    if (r->closing || !r->trackers || !r->inv_subscribed || r->sub_id < 0 ||
        r->sub.state != CONN_READY || r->cmd.state != CONN_READY || !rconn_usable(&r->cmd))
        return;
    const char **prefixes;
    size_t np = tracking_prefixes(r, &prefixes);
    if (!np)
        return;
    size_t cap = 2 * np + 7;
    const char **argv = malloc(cap * sizeof *argv);
    size_t *len = malloc(cap * sizeof *len);
    rcmd *c = argv && len ? rcmd_get(r) : NULL;
    if (c) {
        char id[24];
        snprintf(id, sizeof id, "%lld", r->sub_id);
        int argc = 0;
        argv[argc++] = "CLIENT";
        argv[argc++] = "TRACKING";
        argv[argc++] = "on";
        argv[argc++] = "REDIRECT";
        argv[argc++] = id;
        argv[argc++] = "BCAST";
        for (size_t i = 0; i < np; i++) {
            argv[argc++] = "PREFIX";
            argv[argc++] = prefixes[i];
        }
        argv[argc++] = "NOLOOP";
        for (int i = 0; i < argc; i++)
            len[i] = strlen(argv[i]);
        r->trk_on = false;
        rconn_send_internal(&r->cmd, NULL, NULL, 3,
                      (const char *const[]){ "CLIENT", "TRACKING", "off" });
        c->cb = on_tracking_reply;
        c->arg = r;
        if (rconn_send(&r->cmd, c, argc, argv, len) < 0)
            rcmd_put(r, c);
        else
            r->trk_pending++;
    }
    free(prefixes);
    free(argv);
    free(len);
}

/* ---- public: pub/sub ----------------------------------------------------------------------------- */

static int subscribe(redis *r, bool pattern, const void *name, size_t len,
                     redis_message_cb cb, void *arg)
{
    if (!r || !cb || (!name && len))
        return -EINVAL;
    if (r->closing)
        return -ESHUTDOWN;
    if (!pattern && len == INVALIDATE_CHANNEL_LEN &&
        memcmp(name, INVALIDATE_CHANNEL, len) == 0)
        return -EINVAL;   /* the client's own: use redis_track_prefixes */
    rsub *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cb = cb;
    s->arg = arg;
    rchan *ch = chan_find(r, pattern, name, len);
    if (!ch) {
        ch = chan_add(r, pattern, name, len);
        if (!ch) {
            free(s);
            return -ENOMEM;
        }
        if (r->sub.state != CONN_IDLE && rconn_usable(&r->sub))
            chan_send(&r->sub, ch, true);
    }
    s->next = ch->subs;
    ch->subs = s;
    rsub_ensure(r);
    return 0;
}

static int unsubscribe(redis *r, bool pattern, const void *name, size_t len,
                       redis_message_cb cb, void *arg)
{
    if (!r || r->closing)
        return -ENOENT;
    rchan *ch = chan_find(r, pattern, name, len);
    if (!ch)
        return -ENOENT;
    for (rsub *s = ch->subs; s; s = s->next)
        if (!s->dead && s->cb == cb && s->arg == arg) {
            s->dead = true;
            if (!ch->in_sweep) {
                ch->in_sweep = true;
                ch->sweep_next = r->sweep;
                r->sweep = ch;
            }
            if (!r->dispatching)
                sweep(r);
            return 0;
        }
    return -ENOENT;
}

int redis_subscribe(redis *r, const void *channel, size_t len, redis_message_cb on_message,
                    void *arg)
{
    return subscribe(r, false, channel, len, on_message, arg);
}

int redis_psubscribe(redis *r, const void *pattern, size_t len, redis_message_cb on_message,
                     void *arg)
{
    return subscribe(r, true, pattern, len, on_message, arg);
}

int redis_unsubscribe(redis *r, const void *channel, size_t len, redis_message_cb on_message,
                      void *arg)
{
    return unsubscribe(r, false, channel, len, on_message, arg);
}

int redis_punsubscribe(redis *r, const void *pattern, size_t len, redis_message_cb on_message,
                       void *arg)
{
    return unsubscribe(r, true, pattern, len, on_message, arg);
}

/* ---- public: tracking -------------------------------------------------------------------------------- */

int redis_track_prefixes(redis *r, const char *const *prefixes, size_t n,
                         redis_invalidate_cb on_invalidate, redis_reset_cb on_reset, void *arg)
{
    if (!r || !prefixes || !n || n > MAX_TRACK_PREFIXES || !on_invalidate || !on_reset)
        return -EINVAL;
    if (r->closing)
        return -ESHUTDOWN;
    for (size_t i = 0; i < n; i++)
        if (!prefixes[i] || strlen(prefixes[i]) > 1024)
            return -EINVAL;
    rtracker *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->on_invalidate = on_invalidate;
    t->on_reset = on_reset;
    t->arg = arg;
    for (size_t i = 0; i < n; i++) {
        t->prefix[i] = strdup(prefixes[i]);
        if (!t->prefix[i]) {
            for (size_t j = 0; j < i; j++)
                free(t->prefix[j]);
            free(t);
            return -ENOMEM;
        }
        t->plen[i] = strlen(prefixes[i]);
        t->n++;
    }
    rtracker **p = &r->trackers;   /* append: earlier trackers' prefixes win ties */
    while (*p)
        p = &(*p)->next;
    *p = t;
    rsub_ensure(r);
    rconn *sc = &r->sub;
    if (sc->state != CONN_IDLE && rconn_usable(sc) && !r->inv_requested) {
        sub_send(sc, 2, (const char *const[]){ "SUBSCRIBE", INVALIDATE_CHANNEL },
                 (const size_t[]){ 9, INVALIDATE_CHANNEL_LEN });
        r->inv_requested = true;
    }
    rtrack_setup(r);   /* a new prefix set: no-op until both sides are ready */
    return 0;
}

int redis_untrack(redis *r, redis_invalidate_cb on_invalidate, void *arg)
{
    if (!r || r->closing)
        return -ENOENT;
    for (rtracker *t = r->trackers; t; t = t->next)
        if (!t->dead && t->on_invalidate == on_invalidate && t->arg == arg) {
            t->dead = true;
            r->trackers_dirty = true;
            if (!r->dispatching)
                sweep(r);
            return 0;
        }
    return -ENOENT;
}

bool redis_tracking_active(const redis *r)
{
    return r && !r->closing && r->trackers && r->trk_on && !r->trk_pending &&
           r->inv_subscribed && r->sub.state == CONN_READY && r->cmd.state == CONN_READY;
}

/* ---- the core's hooks ------------------------------------------------------------------------ */

bool rsub_needed(const redis *r)
{
    return r->nchans || r->trackers;
}

void rtrack_lost(redis *r)
{
    bool was = r->trk_on;
    r->trk_on = false;
    if (was)
        reset_trackers(r);
}

void rsub_lost(redis *r)
{
    r->sub_id = -1;
    r->inv_requested = r->inv_subscribed = false;
    for (uint32_t i = 0; i < r->nbuckets; i++)
        for (rchan *ch = r->buckets[i]; ch; ch = ch->hnext) {
            if (ch->confirmed)
                ch->resub_pending = true;
            ch->confirmed = false;
        }
}

void rsub_free_all(redis *r)
{
    for (uint32_t i = 0; i < r->nbuckets; i++)
        for (rchan *ch = r->buckets[i], *next; ch; ch = next) {
            next = ch->hnext;
            for (rsub *s = ch->subs, *sn; s; s = sn) {
                sn = s->next;
                free(s);
            }
            free(ch);
        }
    free(r->buckets);
    for (rtracker *t = r->trackers, *next; t; t = next) {
        next = t->next;
        for (size_t i = 0; i < t->n; i++)
            free(t->prefix[i]);
        free(t);
    }
}
