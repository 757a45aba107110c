/* http_response — see http_response.h.
 *
 * The head writer is on the hot path of every response, so it reserves
 * room once and copies pieces with memcpy; no printf.
 */
#include "http/http_response.h"

#include <errno.h>
#include <string.h>
#include <time.h>

const char *http_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default:  return "Unknown";
    }
}

const char *http_date_get(http_date *d, uint64_t now_ns)
{
    if (now_ns >= d->next_ns) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(d->text, sizeof(d->text), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        /* stale when the wall-clock second ends */
        d->next_ns = now_ns + (uint64_t)(1000000000L - ts.tv_nsec);
    }
    return d->text;
}

/* Writes v in decimal at p; returns the digit count. */
static size_t put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

#define PUT(lit) (memcpy(p, lit, sizeof(lit) - 1), p += sizeof(lit) - 1)

int http_head_write(buf *out, const http_head *h)
{
    const char *reason = http_status_reason(h->status);
    size_t rlen = strlen(reason);
    size_t ctlen = h->content_type ? strlen(h->content_type) : 0;
    /* status line + fixed headers fit in 200 bytes with any reason */
    size_t need = 200 + rlen + ctlen + h->extra_len;
    if (buf_reserve(out, need))
        return -ENOMEM;
    char *p = out->data + out->len;
    PUT("HTTP/1.1 ");
    p += put_u64(p, (uint64_t)h->status);
    *p++ = ' ';
    memcpy(p, reason, rlen);
    p += rlen;
    PUT("\r\nServer: myriad\r\nDate: ");
    memcpy(p, h->date, 29);
    p += 29;
    if (h->content_type) {
        PUT("\r\nContent-Type: ");
        memcpy(p, h->content_type, ctlen);
        p += ctlen;
    }
    if (h->chunked) {
        PUT("\r\nTransfer-Encoding: chunked");
    } else if (!h->no_length) {
        PUT("\r\nContent-Length: ");
        p += put_u64(p, h->content_length);
    }
    if (!h->keep_alive)
        PUT("\r\nConnection: close");
    else if (h->version_minor == 0)
        PUT("\r\nConnection: keep-alive");
    PUT("\r\n");
    if (h->extra_len) {
        memcpy(p, h->extra, h->extra_len);
        p += h->extra_len;
    }
    PUT("\r\n");
    out->len = (size_t)(p - out->data);
    return 0;
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

bool http_field_valid(const char *name, const char *value)
{
    if (!*name)
        return false;
    for (const unsigned char *s = (const unsigned char *)name; *s; s++)
        if (!is_tchar(*s))
            return false;
    size_t n = strlen(value);
    if (n && (value[0] == ' ' || value[0] == '\t' || value[n - 1] == ' ' || value[n - 1] == '\t'))
        return false;
    for (const unsigned char *s = (const unsigned char *)value; *s; s++)
        if ((*s < 0x20 && *s != '\t') || *s == 0x7f)
            return false;
    return true;
}
