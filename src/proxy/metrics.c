/* metrics — see metrics.h. The histogram and the exposition text.
 *
 * With the shared region (always, under proxy_main) the numbers are the
 * whole service's: counters summed over every worker that ever ran, gauges
 * over the live ones (shared.c). A balancer without it (unit tests) shows
 * its own.
 */
#include "proxy/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/backend.h"
#include "proxy/balancer.h"
#include "proxy/shared.h"

#define NS_PER_S 1e9

/* Upper bounds of the latency buckets, and the same as Prometheus `le`. */
static const uint64_t bounds_ns[HIST_BUCKETS] = {
    500000, 1000000, 2500000, 5000000, 10000000, 25000000, 50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000u, 5000000000u, 10000000000u,
};
static const char *const bounds_le[HIST_BUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
};

void histogram_observe(histogram *h, uint64_t ns)
{
    int i = 0;
    while (i < HIST_BUCKETS && ns > bounds_ns[i])
        i++;
    h->counts[i]++;
    h->sum_ns += ns;
    h->count++;
}

/* ---- text -------------------------------------------------------------------------------- */

static int appendf(buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int appendf(buf *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(out, (size_t)n + 1))
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(out->data + out->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    out->len += (size_t)n;
    return 0;
}

/* One backend as rendered: its label (escaped) and numbers. */
typedef struct row {
    char        label[2 * BACKEND_NAME_MAX];
    shared_cell c;
    bool        draining;
} row;

static void escape_label(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s && n + 3 < cap; s++) {
        if (*s == '"' || *s == '\\')
            out[n++] = '\\';
        out[n++] = *s == '\n' ? ' ' : *s;
    }
    out[n] = '\0';
}

static void local_cell(const backend *b, shared_cell *c)
{
    *c = (shared_cell){ .st = b->st, .up = b->up, .configured = 1, .active = b->active,
                        .nconns = b->nconns, .nidle = b->nidle };
}

/* Collects the rows to render: every backend some live worker has, or that
 * ever had a request. Returns the count; rows is caller storage. */
static uint32_t collect(balancer *bal, row *rows, uint32_t cap)
{
    uint32_t n = 0;
    if (bal->publishing) {
        uint32_t names = shared_names(bal->shared);
        for (uint32_t i = 0; i < names && n < cap; i++) {
            shared_sum_backend(bal->shared, (int)i, &rows[n].c);
            if (!rows[n].c.configured && rows[n].c.st.requests == 0)
                continue;
            escape_label(shared_name(bal->shared, (int)i), rows[n].label, sizeof(rows[n].label));
            rows[n].draining = shared_draining(bal->shared, (int)i);
            n++;
        }
        return n;
    }
    for (uint32_t i = 0; i < bal->nbackends && n < cap; i++, n++) {
        local_cell(bal->backends[i], &rows[n].c);
        escape_label(bal->backends[i]->name, rows[n].label, sizeof(rows[n].label));
        rows[n].draining = bal->backends[i]->draining;
    }
    return n;
}

static int family(buf *out, const char *name, const char *type, const char *help)
{
    return appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

#define PER_ROW(out, rows, n, fmt, ...) do {                                         \
    for (uint32_t i_ = 0; i_ < (n); i_++) {                                          \
        const row *r = &(rows)[i_];                                                  \
        if (appendf((out), fmt, r->label, __VA_ARGS__))                              \
            return -ENOMEM;                                                          \
    }                                                                                \
} while (0)

static int render_counters(buf *out, const row *rows, uint32_t n)
{
    static const char *const kinds[BERR_COUNT] = { "connect", "timeout", "reset", "malformed" };
    if (family(out, "myriad_balance_backend_requests_total", "counter",
               "Requests sent to (or tried on) the backend."))
        return -ENOMEM;
    PER_ROW(out, rows, n, "myriad_balance_backend_requests_total{backend=\"%s\"} %llu\n",
            (unsigned long long)r->c.st.requests);
    if (family(out, "myriad_balance_backend_responses_total", "counter",
               "Response heads received from the backend, by status class."))
        return -ENOMEM;
    for (int k = 1; k < 5; k++)
        PER_ROW(out, rows, n,
                "myriad_balance_backend_responses_total{backend=\"%s\",code=\"%dxx\"} %llu\n",
                k + 1, (unsigned long long)r->c.st.responses[k]);
    if (family(out, "myriad_balance_backend_errors_total", "counter",
               "Requests that failed on the backend, by kind."))
        return -ENOMEM;
    for (int k = 0; k < BERR_COUNT; k++)
        PER_ROW(out, rows, n,
                "myriad_balance_backend_errors_total{backend=\"%s\",kind=\"%s\"} %llu\n",
                kinds[k], (unsigned long long)r->c.st.errors[k]);
    if (family(out, "myriad_balance_backend_retries_total", "counter",
               "Failed attempts on the backend that were retried on another."))
        return -ENOMEM;
    PER_ROW(out, rows, n, "myriad_balance_backend_retries_total{backend=\"%s\"} %llu\n",
            (unsigned long long)r->c.st.retries);
    if (family(out, "myriad_balance_backend_ejections_total", "counter",
               "Times passive health checks took the backend out."))
        return -ENOMEM;
    PER_ROW(out, rows, n, "myriad_balance_backend_ejections_total{backend=\"%s\"} %llu\n",
            (unsigned long long)r->c.st.ejections);
    if (family(out, "myriad_balance_backend_health_checks_failed_total", "counter",
               "Active health checks of the backend that failed."))
        return -ENOMEM;
    PER_ROW(out, rows, n,
            "myriad_balance_backend_health_checks_failed_total{backend=\"%s\"} %llu\n",
            (unsigned long long)r->c.st.checks_failed);
    return 0;
}

static int render_latency(buf *out, const row *rows, uint32_t n)
{
    const char *name = "myriad_balance_backend_response_seconds";
    if (family(out, name, "histogram",
               "Time from sending a request to the backend to its response head."))
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        const histogram *h = &rows[i].c.st.latency;
        uint64_t cum = 0;
        for (int k = 0; k < HIST_BUCKETS; k++) {
            cum += h->counts[k];
            if (appendf(out, "%s_bucket{backend=\"%s\",le=\"%s\"} %llu\n", name, rows[i].label,
                        bounds_le[k], (unsigned long long)cum))
                return -ENOMEM;
        }
        if (appendf(out, "%s_bucket{backend=\"%s\",le=\"+Inf\"} %llu\n", name, rows[i].label,
                    (unsigned long long)h->count) ||
            appendf(out, "%s_sum{backend=\"%s\"} %.6f\n", name, rows[i].label,
                    (double)h->sum_ns / NS_PER_S) ||
            appendf(out, "%s_count{backend=\"%s\"} %llu\n", name, rows[i].label,
                    (unsigned long long)h->count))
            return -ENOMEM;
    }
    return 0;
}

static int render_gauges(buf *out, const row *rows, uint32_t n)
{
    if (family(out, "myriad_balance_backend_up", "gauge",
               "1 when the backend is in service (health checks), else 0."))
        return -ENOMEM;
    PER_ROW(out, rows, n, "myriad_balance_backend_up{backend=\"%s\"} %llu\n",
            (unsigned long long)r->c.up);
    if (family(out, "myriad_balance_backend_draining", "gauge",
               "1 while the backend is drained by the admin API."))
        return -ENOMEM;
    PER_ROW(out, rows, n, "myriad_balance_backend_draining{backend=\"%s\"} %d\n",
            r->draining ? 1 : 0);
    if (family(out, "myriad_balance_backend_configured", "gauge",
               "1 while the backend is in the configuration of a live worker."))
        return -ENOMEM;
    PER_ROW(out, rows, n, "myriad_balance_backend_configured{backend=\"%s\"} %llu\n",
            (unsigned long long)r->c.configured);
    if (family(out, "myriad_balance_backend_active_requests", "gauge",
               "Requests in flight on the backend."))
        return -ENOMEM;
    PER_ROW(out, rows, n, "myriad_balance_backend_active_requests{backend=\"%s\"} %llu\n",
            (unsigned long long)r->c.active);
    if (family(out, "myriad_balance_backend_pool_connections", "gauge",
               "Connections to the backend: open (idle, busy or connecting) and idle."))
        return -ENOMEM;
    PER_ROW(out, rows, n,
            "myriad_balance_backend_pool_connections{backend=\"%s\",state=\"open\"} %llu\n",
            (unsigned long long)r->c.nconns);
    PER_ROW(out, rows, n,
            "myriad_balance_backend_pool_connections{backend=\"%s\",state=\"idle\"} %llu\n",
            (unsigned long long)r->c.nidle);
    return 0;
}

static int render_global(balancer *bal, buf *out)
{
    bal_stats st = bal->st;
    uint64_t conns = bal->nsessions;
    uint32_t workers = 1;
    if (bal->publishing)
        shared_sum_global(bal->shared, &st, &conns, &workers);
    struct { const char *name, *help; uint64_t v; } c[] = {
        { "myriad_balance_requests_total", "Client requests received.", st.requests },
        { "myriad_balance_retries_total", "Attempts after the first.", st.retries },
        { "myriad_balance_retries_denied_total", "Retries the retry budget refused.",
          st.retries_denied },
        { "myriad_balance_no_backend_total", "Requests answered 503: no backend available.",
          st.no_backend },
        { "myriad_balance_client_errors_total", "Requests rejected as malformed or too large.",
          st.client_errors },
        { "myriad_balance_accepted_total", "Client connections accepted.", st.accepted },
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
        if (family(out, c[i].name, "counter", c[i].help) ||
            appendf(out, "%s %llu\n", c[i].name, (unsigned long long)c[i].v))
            return -ENOMEM;
    if (family(out, "myriad_balance_connections", "gauge", "Client connections open.") ||
        appendf(out, "myriad_balance_connections %llu\n", (unsigned long long)conns) ||
        family(out, "myriad_balance_workers", "gauge", "Worker processes publishing.") ||
        appendf(out, "myriad_balance_workers %u\n", workers))
        return -ENOMEM;
    return 0;
}

int metrics_render(balancer *bal, buf *out)
{
    uint32_t cap = bal->publishing ? SHARED_NAMES : bal->nbackends;
    row *rows = calloc(cap ? cap : 1, sizeof(row));
    if (!rows)
        return -ENOMEM;
    uint32_t n = collect(bal, rows, cap);
    int rc = render_global(bal, out);
    if (!rc)
        rc = render_counters(out, rows, n);
    if (!rc)
        rc = render_latency(out, rows, n);
    if (!rc)
        rc = render_gauges(out, rows, n);
    free(rows);
    return rc;
}
