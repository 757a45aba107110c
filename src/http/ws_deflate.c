/* ws_deflate — see ws_deflate.h.
 *
 * Grammar of the header (RFC 6455 section 9.1, with RFC 9110's list rule:
 * empty list elements and optional whitespace are accepted):
 *
 *   extension-list = 1#extension
 *   extension      = token *( OWS ";" OWS extension-param )
 *   extension-param = token [ OWS "=" OWS ( token / quoted-string ) ]
 *
 * RFC 7692 section 7: a quoted value must, once unescaped, still be what
 * the parameter allows (1*DIGIT for the window sizes).
 */
#include "http/ws_deflate.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFLATE_LEVEL    Z_DEFAULT_COMPRESSION
#define DEFLATE_MEMLEVEL 8
#define MAX_WBITS_RAW    15
#define ZLIB_MAX_CHUNK   (1u << 30)   /* bytes per call, under zlib's uInt */

/* ---- scanner -------------------------------------------------------------------- */

typedef struct scan {
    const char *p, *end;
} scan;

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void skip_ows(scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t'))
        s->p++;
}

/* A token at s->p; returns its length (0: none). */
static size_t take_token(scan *s, const char **tok)
{
    *tok = s->p;
    while (s->p < s->end && is_tchar((unsigned char)*s->p))
        s->p++;
    return (size_t)(s->p - *tok);
}

/* A token or quoted-string value, unescaped into out (cap bytes; longer
 * values are marked too long by returning cap). Returns the length, or -1
 * for a malformed value. */
static long take_value(scan *s, char *out, size_t cap)
{
    size_t n = 0;
    if (s->p < s->end && *s->p == '"') {
        s->p++;
        while (s->p < s->end && *s->p != '"') {
            unsigned char c = (unsigned char)*s->p++;
            if (c == '\\') {
                if (s->p == s->end)
                    return -1;
                c = (unsigned char)*s->p++;
            }
            if (c < 0x20 && c != '\t')
                return -1;
            if (c == 0x7f)
                return -1;
            if (n < cap)
                out[n] = (char)c;
            n++;
        }
        if (s->p == s->end)
            return -1;
        s->p++;   /* closing quote */
        return (long)(n < cap ? n : cap);
    }
    const char *tok;
    size_t len = take_token(s, &tok);
    if (len == 0)
        return -1;
    memcpy(out, tok, len < cap ? len : cap);
    return (long)(len < cap ? len : cap);
}

/* ---- one offer ------------------------------------------------------------------ */

typedef struct offer {
    bool    acceptable;            /* no reason to decline seen so far */
    bool    snct, cnct;            /* server/client_no_context_takeover */
    bool    smwb_seen, cmwb_seen;  /* server/client_max_window_bits present */
    uint8_t smwb;                  /* value of server_max_window_bits */
} offer;

/* "8".."15" without leading zeros; 0 if not. */
static unsigned parse_wbits(const char *v, long n)
{
    if (n == 1 && v[0] == '8')
        return 8;
    if (n == 1 && v[0] == '9')
        return 9;
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + (unsigned)(v[1] - '0');
    return 0;
}

static bool name_is(const char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(p, lit, n) == 0;
}

/* Applies one parameter of a permessage-deflate offer. vlen < 0: no value. */
static void offer_param(offer *o, const char *name, size_t nlen, const char *v, long vlen)
{
    bool *seen = NULL;
    if (name_is(name, nlen, "server_no_context_takeover")) {
        seen = &o->snct;
        o->acceptable &= vlen < 0;
    } else if (name_is(name, nlen, "client_no_context_takeover")) {
        seen = &o->cnct;
        o->acceptable &= vlen < 0;
    } else if (name_is(name, nlen, "server_max_window_bits")) {
        seen = &o->smwb_seen;
        unsigned w = vlen < 0 ? 0 : parse_wbits(v, vlen);
        /* 8 is valid but zlib cannot compress raw deflate with it: decline */
        o->acceptable &= w >= 9;
        o->smwb = (uint8_t)w;
    } else if (name_is(name, nlen, "client_max_window_bits")) {
        seen = &o->cmwb_seen;
        /* optional value, a hint; we inflate with 2^15 whatever it is */
        o->acceptable &= vlen < 0 || parse_wbits(v, vlen) != 0;
    } else {
        o->acceptable = false;   /* a parameter we do not know */
        return;
    }
    if (*seen)
        o->acceptable = false;   /* repeated */
    *seen = true;
}

/* Parses "; param[=value]" pairs after an extension name into o (which may
 * be NULL for an extension we ignore). Returns false on a grammar error. */
static bool parse_params(scan *s, offer *o)
{
    for (;;) {
        skip_ows(s);
        if (s->p == s->end || *s->p == ',')
            return true;
        if (*s->p != ';')
            return false;
        s->p++;
        skip_ows(s);
        const char *name;
        size_t nlen = take_token(s, &name);
        if (nlen == 0)
            return false;
        skip_ows(s);
        char v[16];
        long vlen = -1;
        if (s->p < s->end && *s->p == '=') {
            s->p++;
            skip_ows(s);
            vlen = take_value(s, v, sizeof(v));
            if (vlen < 0)
                return false;
        }
        if (o)
            offer_param(o, name, nlen, v, vlen);
    }
}

static void accept_offer(const offer *o, bool allow_takeover, ws_pmd *out)
{
    *out = (ws_pmd){
        .enabled = true,
        .server_no_takeover = o->snct || !allow_takeover,
        .client_no_takeover = o->cnct || !allow_takeover,
        .server_wbits_sent = o->smwb_seen,
        .server_wbits = o->smwb_seen ? o->smwb : MAX_WBITS_RAW,
    };
}

int ws_pmd_negotiate(const char *value, size_t len, bool allow_takeover, ws_pmd *out)
{
    scan s = { value, value + len };
    ws_pmd chosen = { 0 };
    bool any = false;
    for (;;) {
        skip_ows(&s);
        if (s.p == s.end)
            break;
        if (*s.p == ',') {   /* empty list element */
            s.p++;
            continue;
        }
        const char *name;
        size_t nlen = take_token(&s, &name);
        if (nlen == 0)
            return -1;
        bool pmd = name_is(name, nlen, "permessage-deflate");
        offer o = { .acceptable = true };
        if (!parse_params(&s, pmd ? &o : NULL))
            return -1;
        if (pmd && o.acceptable && !any) {
            accept_offer(&o, allow_takeover, &chosen);
            any = true;
        }
    }
    if (any)
        *out = chosen;
    return any;
}

size_t ws_pmd_response(const ws_pmd *p, char *out, size_t cap)
{
    /* the longest: 18 + 29 + 29 + 26 = 102 bytes */
    char tmp[WS_PMD_RESPONSE_MAX];
    size_t n = 0;
    n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "permessage-deflate");
    if (p->server_no_takeover)
        n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "; server_no_context_takeover");
    if (p->client_no_takeover)
        n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "; client_no_context_takeover");
    if (p->server_wbits_sent)
        n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "; server_max_window_bits=%u",
                              p->server_wbits);
    if (n + 1 > cap)
        return 0;
    memcpy(out, tmp, n + 1);
    return n;
}

/* ---- decompression -------------------------------------------------------------- */

ws_inflater *ws_inflater_new(void)
{
    ws_inflater *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    if (inflateInit2(&x->z, -MAX_WBITS_RAW) != Z_OK) {
        free(x);
        return NULL;
    }
    return x;
}

void ws_inflater_free(ws_inflater *x)
{
    if (!x)
        return;
    inflateEnd(&x->z);
    free(x);
}

/* Inflates in[0..n) into out. See ws_inflate for the results. */
static int inflate_some(ws_inflater *x, const uint8_t *in, size_t n, buf *out, size_t limit)
{
    z_stream *z = &x->z;
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)n;
    do {
        if (x->ended)   /* nothing may follow a final block but the tail */
            return z->avail_in ? -1007 : 0;
        if (out->cap - out->len < 256 && buf_reserve(out, out->len < 4096 ? 4096 : out->len))
            return -ENOMEM;
        size_t room = out->cap - out->len, left = limit + 1 - out->len;
        z->next_out = (Bytef *)out->data + out->len;
        z->avail_out = (uInt)(room < left ? room : left);
        uInt out_before = z->avail_out, in_before = z->avail_in;
        int r = inflate(z, Z_SYNC_FLUSH);
        out->len += out_before - z->avail_out;
        if (out->len > limit)
            return -1009;
        if (r == Z_STREAM_END)
            x->ended = true;
        else if (r == Z_MEM_ERROR)
            return -ENOMEM;
        else if (r != Z_OK && r != Z_BUF_ERROR)
            return -1007;   /* Z_DATA_ERROR, Z_NEED_DICT */
        else if (out_before == z->avail_out && in_before == z->avail_in)
            return z->avail_in ? -1007 : 0;   /* no progress: all consumed, or stuck */
    } while (z->avail_in > 0 || z->avail_out == 0);
    return 0;
}

int ws_inflate(ws_inflater *x, const uint8_t *in, size_t n, bool fin, buf *out, size_t limit)
{
    static const uint8_t tail[4] = { 0x00, 0x00, 0xff, 0xff };
    while (n > 0) {
        size_t take = n < ZLIB_MAX_CHUNK ? n : ZLIB_MAX_CHUNK;
        int rc = inflate_some(x, in, take, out, limit);
        if (rc)
            return rc;
        in += take;
        n -= take;
    }
    if (fin && !x->ended)
        return inflate_some(x, tail, sizeof(tail), out, limit);
    return 0;
}

int ws_inflate_end(ws_inflater *x, bool takeover)
{
    if (!takeover || !x->ended) {
        if (!takeover)
            inflateReset(&x->z);
        x->ended = false;
        return 0;
    }
    /* a final block ended the stream, but the next message may still refer
     * to this one's bytes: restart with the window as dictionary */
    uint8_t *dict = malloc(1u << MAX_WBITS_RAW);
    if (!dict)
        return -ENOMEM;
    uInt dlen = 0;
    inflateGetDictionary(&x->z, dict, &dlen);
    inflateReset(&x->z);
    int r = inflateSetDictionary(&x->z, dict, dlen);
    free(dict);
    x->ended = false;
    return r == Z_OK ? 0 : -ENOMEM;
}

/* ---- compression ---------------------------------------------------------------- */

ws_deflater *ws_deflater_new(unsigned wbits)
{
    if (wbits < 9 || wbits > MAX_WBITS_RAW)
        return NULL;
    ws_deflater *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    if (deflateInit2(&d->z, DEFLATE_LEVEL, Z_DEFLATED, -(int)wbits, DEFLATE_MEMLEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        free(d);
        return NULL;
    }
    d->wbits = (uint8_t)wbits;
    return d;
}

void ws_deflater_free(ws_deflater *d)
{
    if (!d)
        return;
    deflateEnd(&d->z);
    free(d);
}

size_t ws_deflate_bound(ws_deflater *d, size_t n)
{
    /* deflateBound covers a finished stream; a sync flush adds an empty
     * stored block (at most 5 bytes plus the bits that align it) */
    return (size_t)deflateBound(&d->z, (uLong)n) + 16;
}

ssize_t ws_deflate(ws_deflater *d, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                   bool takeover)
{
    if (n > ZLIB_MAX_CHUNK || cap > ZLIB_MAX_CHUNK * 2ull)
        return -EINVAL;
    z_stream *z = &d->z;
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)n;
    z->next_out = out;
    z->avail_out = (uInt)cap;
    int r = deflate(z, Z_SYNC_FLUSH);
    size_t len = cap - z->avail_out;
    bool ok = (r == Z_OK || r == Z_BUF_ERROR) && z->avail_in == 0 && z->avail_out > 0 &&
              len >= 4 && memcmp(out + len - 4, "\x00\x00\xff\xff", 4) == 0;
    if (!ok || !takeover)
        deflateReset(z);   /* a failed stream must not carry half a message on */
    if (!ok)
        return -ENOBUFS;
    return (ssize_t)(len - 4);
}

/* ---- pool ----------------------------------------------------------------------- */

ws_inflater *ws_zpool_inflater_get(ws_zpool *p)
{
    if (p->ninflaters)
        return p->inflaters[--p->ninflaters];
    return ws_inflater_new();
}

void ws_zpool_inflater_put(ws_zpool *p, ws_inflater *x)
{
    inflateReset(&x->z);
    x->ended = false;
    if (p->ninflaters < WS_ZPOOL_INFLATERS)
        p->inflaters[p->ninflaters++] = x;
    else
        ws_inflater_free(x);
}

ws_deflater *ws_zpool_deflater(ws_zpool *p, unsigned wbits)
{
    if (wbits < 9 || wbits > MAX_WBITS_RAW)
        return NULL;
    if (!p->deflaters[wbits])
        p->deflaters[wbits] = ws_deflater_new(wbits);
    return p->deflaters[wbits];
}

void ws_zpool_fini(ws_zpool *p)
{
    while (p->ninflaters)
        ws_inflater_free(p->inflaters[--p->ninflaters]);
    for (unsigned i = 0; i < 16; i++) {
        ws_deflater_free(p->deflaters[i]);
        p->deflaters[i] = NULL;
    }
}
