/* prom — see prom.h. A writer with a sticky error, so each line is written
 * without checking, and the result is checked once at the end. */
#include "obs/prom.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __clang__
#define COMPILER "clang " __clang_version__
#else
#define COMPILER "gcc " __VERSION__
#endif

typedef struct writer {
    buf                    *out;
    int                     err;     /* 0 or -ENOMEM, sticky */
    const metrics_registry *reg;
    uint32_t                nslots;  /* slots ever attached */
    const bool             *live;    /* per slot: a process serves it now */
} writer;

static void put(writer *w, const char *s, size_t n)
{
    if (!w->err && buf_append(w->out, s, n))
        w->err = -ENOMEM;
}

static void puts_(writer *w, const char *s) { put(w, s, strlen(s)); }

__attribute__((format(printf, 2, 3)))
static void putf(writer *w, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(w, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* HELP text escapes \ and newline; label values also escape ". */
static void put_escaped(writer *w, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_(w, "\\\\");
        else if (*s == '\n')
            puts_(w, "\\n");
        else if (quote && *s == '"')
            puts_(w, "\\\"");
        else
            put(w, s, 1);
    }
}

/* A float the way Go's ParseFloat reads it back; integers stay integers. */
static void put_double(writer *w, double v)
{
    putf(w, "%.15g", v);
}

/* ---- values ------------------------------------------------------------------------- */

/* Cell i summed over the service: every slot and the supervisor's block
 * for counters and histograms, live slots for gauges. */
static uint64_t sum_of(const writer *w, const metrics_family *f, uint32_t i)
{
    uint64_t sum = 0;
    bool gauge = f->type == METRICS_GAUGE;
    for (uint32_t s = 0; s < w->nslots; s++)
        if (!gauge || w->live[s])
            sum += metrics_read(w->reg, s, f, i);
    return gauge ? sum : sum + metrics_read(w->reg, metrics_max_workers(w->reg), f, i);
}

/* slot: a worker's own value, or UINT32_MAX for the service's sum. */
static uint64_t value_of(const writer *w, const metrics_family *f, uint32_t slot, uint32_t i)
{
    return slot == UINT32_MAX ? sum_of(w, f, i) : metrics_read(w->reg, slot, f, i);
}

static void put_value(writer *w, const metrics_family *f, uint64_t v)
{
    if (f->scale != 1.0)
        put_double(w, (double)(f->type == METRICS_GAUGE ? (double)(int64_t)v : (double)v) *
                          f->scale);
    else if (f->type == METRICS_GAUGE)
        putf(w, "%lld", (long long)(int64_t)v);
    else
        putf(w, "%llu", (unsigned long long)v);
}

/* ---- samples -------------------------------------------------------------------------- */

/* Writes `name{labels of combo, worker, extra}` — the braces only when
 * there is a label. extra is e.g. `le="0.5"` or NULL. */
static void put_series(writer *w, const metrics_family *f, const char *suffix, uint32_t combo,
                       uint32_t slot, const char *extra)
{
    puts_(w, f->name);
    puts_(w, suffix);
    unsigned idx[METRICS_MAX_LABELS] = { combo / f->nvalues[1], combo % f->nvalues[1] };
    bool any = false;
    for (unsigned l = 0; l < f->nlabels; l++) {
        puts_(w, any ? "," : "{");
        any = true;
        puts_(w, f->label[l]);
        puts_(w, "=\"");
        put_escaped(w, f->value[l][idx[l]], true);
        puts_(w, "\"");
    }
    if (slot != UINT32_MAX) {
        puts_(w, any ? "," : "{");
        any = true;
        putf(w, "worker=\"%u\"", slot);
    }
    if (extra) {
        puts_(w, any ? "," : "{");
        any = true;
        puts_(w, extra);
    }
    if (any)
        puts_(w, "}");
    puts_(w, " ");
}

static void put_histogram(writer *w, const metrics_family *f, uint32_t combo, uint32_t slot)
{
    uint32_t base = combo * metrics_combo_cells(f);
    uint64_t cum = 0;
    char le[64];
    for (unsigned b = 0; b <= f->nbounds; b++) {
        cum += value_of(w, f, slot, base + b);
        if (b < f->nbounds)
            snprintf(le, sizeof(le), "le=\"%.15g\"", (double)f->bounds[b] * f->scale);
        else
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        put_series(w, f, "_bucket", combo, slot, le);
        putf(w, "%llu\n", (unsigned long long)cum);
    }
    put_series(w, f, "_sum", combo, slot, NULL);
    put_double(w, (double)value_of(w, f, slot, base + f->nbounds + 1) * f->scale);
    puts_(w, "\n");
    put_series(w, f, "_count", combo, slot, NULL);
    putf(w, "%llu\n", (unsigned long long)cum);
}

static void put_combos(writer *w, const metrics_family *f, uint32_t slot)
{
    uint32_t combos = f->nvalues[0] * f->nvalues[1];
    for (uint32_t c = 0; c < combos; c++) {
        if (f->type == METRICS_HISTOGRAM) {
            put_histogram(w, f, c, slot);
            continue;
        }
        put_series(w, f, "", c, slot, NULL);
        put_value(w, f, value_of(w, f, slot, c));
        puts_(w, "\n");
    }
}

static const char *const type_names[] = { "counter", "gauge", "histogram" };

static void put_family(writer *w, const metrics_family *f)
{
    puts_(w, "# HELP ");
    puts_(w, f->name);
    puts_(w, " ");
    put_escaped(w, f->help, false);
    putf(w, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    if (!(f->flags & METRICS_PER_WORKER)) {
        put_combos(w, f, UINT32_MAX);
        return;
    }
    for (uint32_t s = 0; s < w->nslots; s++)
        if (w->live[s])
            put_combos(w, f, s);
}

static void put_facts(writer *w, const metrics_registry *reg)
{
    puts_(w, "# HELP process_start_time_seconds When the service started, seconds since "
             "the Unix epoch.\n# TYPE process_start_time_seconds gauge\n"
             "process_start_time_seconds ");
    put_double(w, (double)metrics_start_ms(reg) / 1000.0);
    puts_(w, "\n# HELP myriad_build_info The myriad build serving: always 1.\n"
             "# TYPE myriad_build_info gauge\nmyriad_build_info{version=\"");
    put_escaped(w, MYR_VERSION, true);
    puts_(w, "\",compiler=\"");
    put_escaped(w, COMPILER, true);
    puts_(w, "\"} 1\n");
}

int prom_write(buf *out, const metrics_registry *reg)
{
    writer w = { .out = out, .reg = reg, .nslots = metrics_slots(reg) };
    bool *live = metrics_live_slots(reg, w.nslots);
    if (!live)
        return -ENOMEM;
    w.live = live;
    put_facts(&w, reg);
    uint32_t n = metrics_families(reg);
    for (uint32_t i = 0; i < n; i++)
        put_family(&w, metrics_family_at(reg, i));
    free(live);
    return w.err;
}
