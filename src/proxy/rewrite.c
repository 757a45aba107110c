/* rewrite — see rewrite.h.
 *
 * Both writers make one pass over the parsed fields, copying the ones that
 * travel on, then append the fields the balancer states itself. The
 * Connection field's options are collected first (bounded: options past
 * MAX_NOMINATED are not honoured, which only means such a field is
 * forwarded), because a field it names may come before it.
 */
#include "proxy/rewrite.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MAX_NOMINATED 32   /* Connection options honoured per message */

typedef struct nominated {
    const char *name[MAX_NOMINATED];
    uint32_t    len[MAX_NOMINATED];
    uint32_t    n;
} nominated;

static unsigned char lower(unsigned char c)
{
    return c | (unsigned char)(((unsigned)(c - 'A') < 26u) << 5);
}

static bool ci_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

#define NAME_IS(h, lit) ci_eq((h)->name, (h)->name_len, lit, sizeof(lit) - 1)

bool rewrite_is_hop_field(const char *name, size_t len)
{
    static const char *const hop[] = {
        "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy",   /* httpoxy: never let a client set a backend's proxy */
    };
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (ci_eq(name, len, hop[i], strlen(hop[i])))
            return true;
    return len > 6 && ci_eq(name, 6, "proxy-", 6);
}

bool rewrite_is_idempotent(http_method m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE ||
           m == HTTP_PUT || m == HTTP_DELETE;
}

/* Collects the options of every Connection field. */
static void collect_nominated(const http_header *hs, uint32_t n, nominated *nm)
{
    nm->n = 0;
    for (uint32_t i = 0; i < n; i++) {
        const http_header *h = &hs[i];
        if (!NAME_IS(h, "connection"))
            continue;
        const char *v = h->value, *end = v + h->value_len;
        while (v < end && nm->n < MAX_NOMINATED) {
            while (v < end && (*v == ',' || *v == ' ' || *v == '\t'))
                v++;
            const char *t = v;
            while (v < end && *v != ',' && *v != ' ' && *v != '\t')
                v++;
            if (v > t) {
                nm->name[nm->n] = t;
                nm->len[nm->n++] = (uint32_t)(v - t);
            }
        }
    }
}

static bool is_nominated(const nominated *nm, const http_header *h)
{
    for (uint32_t i = 0; i < nm->n; i++)
        if (ci_eq(h->name, h->name_len, nm->name[i], nm->len[i]))
            return true;
    return false;
}

/* Appends "Name: value\r\n"; the buffer has room (reserved by the caller). */
static void put_field(buf *out, const char *name, size_t nlen, const char *val, size_t vlen)
{
    char *p = out->data + out->len;
    memcpy(p, name, nlen);
    p += nlen;
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, val, vlen);
    p += vlen;
    *p++ = '\r';
    *p++ = '\n';
    out->len = (size_t)(p - out->data);
}

static void put_str(buf *out, const char *s, size_t n)
{
    memcpy(out->data + out->len, s, n);
    out->len += n;
}

#define PUT_LIT(out, lit) put_str((out), (lit), sizeof(lit) - 1)

/* Upper bound of the bytes the copied fields take. */
static size_t fields_size(const http_header *hs, uint32_t n)
{
    size_t sz = 0;
    for (uint32_t i = 0; i < n; i++)
        sz += hs[i].name_len + hs[i].value_len + 4;
    return sz;
}

/* ---- requests ----------------------------------------------------------------- */

/* A field the request writer replaces or drops. */
static bool req_field_dropped(const http_header *h, const nominated *nm)
{
    return rewrite_is_hop_field(h->name, h->name_len) || NAME_IS(h, "host") ||
           NAME_IS(h, "content-length") || NAME_IS(h, "expect") ||
           NAME_IS(h, "x-forwarded-for") || NAME_IS(h, "x-forwarded-proto") ||
           NAME_IS(h, "forwarded") || is_nominated(nm, h);
}

/* Appends the values of every field `name`, joined by ", ", then `last`:
 * how a list-valued field is extended by one more hop. */
static void put_joined(buf *out, const http_request *req, const char *name,
                       const char *last, size_t last_len)
{
    size_t nlen = strlen(name);
    put_str(out, name, nlen);
    PUT_LIT(out, ": ");
    for (uint32_t i = 0; i < req->num_headers; i++) {
        const http_header *h = &req->headers[i];
        if (h->value_len == 0 || !ci_eq(h->name, h->name_len, name, nlen))
            continue;
        put_str(out, h->value, h->value_len);
        PUT_LIT(out, ", ");
    }
    put_str(out, last, last_len);
    PUT_LIT(out, "\r\n");
}

int rewrite_request(buf *out, const http_request *req, const rewrite_req_info *ri)
{
    nominated nm;
    collect_nominated(req->headers, req->num_headers, &nm);
    const char *host = req->host ? req->host : ri->default_host;
    size_t host_len = req->host ? req->host_len : strlen(ri->default_host);
    size_t iplen = strlen(ri->client_ip);
    /* request line, Host, the copied fields (the forwarding lists repeat the
     * old values), our framing and forwarding fields */
    size_t need = req->method_len + req->target_len + 16 + host_len + 8 +
                  2 * fields_size(req->headers, req->num_headers) + 64 +
                  3 * (iplen + 48);
    if (buf_reserve(out, need))
        return -ENOMEM;
    put_str(out, req->method, req->method_len);
    PUT_LIT(out, " ");
    if (req->target[0] == '/' || req->target[0] == '*') {
        put_str(out, req->target, req->target_len);
    } else {   /* absolute-form: the authority went into Host */
        put_str(out, req->path, req->path_len);
        if (req->query) {
            PUT_LIT(out, "?");
            put_str(out, req->query, req->query_len);
        }
    }
    PUT_LIT(out, " HTTP/1.1\r\n");
    put_field(out, "Host", 4, host, host_len);
    for (uint32_t i = 0; i < req->num_headers; i++) {
        const http_header *h = &req->headers[i];
        if (!req_field_dropped(h, &nm))
            put_field(out, h->name, h->name_len, h->value, h->value_len);
    }
    if (ri->framing == FRAME_CHUNKED) {
        PUT_LIT(out, "Transfer-Encoding: chunked\r\n");
    } else if (ri->framing == FRAME_LENGTH) {
        char num[24];
        int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)ri->content_length);
        put_field(out, "Content-Length", 14, num, (size_t)n);
    }
    put_joined(out, req, "X-Forwarded-For", ri->client_ip, iplen);
    PUT_LIT(out, "X-Forwarded-Proto: ");
    put_str(out, ri->proto, strlen(ri->proto));
    PUT_LIT(out, "\r\n");
    char fwd[96];
    int fn = snprintf(fwd, sizeof(fwd), ri->client_ipv6 ? "for=\"[%s]\";proto=%s"
                                                         : "for=%s;proto=%s",
                      ri->client_ip, ri->proto);
    put_joined(out, req, "Forwarded", fwd, (size_t)fn < sizeof(fwd) ? (size_t)fn : 0);
    PUT_LIT(out, "\r\n");
    return 0;
}

/* ---- responses ---------------------------------------------------------------- */

static bool resp_field_dropped(const http_header *h, const nominated *nm)
{
    return rewrite_is_hop_field(h->name, h->name_len) || NAME_IS(h, "content-length") ||
           is_nominated(nm, h);
}

int rewrite_response(buf *out, const http_response *resp, const rewrite_resp_info *ri)
{
    nominated nm;
    collect_nominated(resp->headers, resp->num_headers, &nm);
    size_t need = 32 + resp->reason_len + fields_size(resp->headers, resp->num_headers) + 96;
    if (buf_reserve(out, need))
        return -ENOMEM;
    char line[16];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %03d ", resp->status);
    put_str(out, line, (size_t)n);
    put_str(out, resp->reason, resp->reason_len);
    PUT_LIT(out, "\r\n");
    for (uint32_t i = 0; i < resp->num_headers; i++) {
        const http_header *h = &resp->headers[i];
        if (!resp_field_dropped(h, &nm))
            put_field(out, h->name, h->name_len, h->value, h->value_len);
    }
    if (resp->status >= 200) {
        char num[24];
        if (ri->framing == FRAME_LENGTH || ri->announce_length) {
            n = snprintf(num, sizeof(num), "%llu", (unsigned long long)ri->content_length);
            put_field(out, "Content-Length", 14, num, (size_t)n);
        } else if (ri->framing == FRAME_CHUNKED) {
            PUT_LIT(out, "Transfer-Encoding: chunked\r\n");
        }
        if (!ri->keep_alive)
            PUT_LIT(out, "Connection: close\r\n");
        else if (ri->client_minor == 0)
            PUT_LIT(out, "Connection: keep-alive\r\n");
    }
    PUT_LIT(out, "\r\n");
    return 0;
}
