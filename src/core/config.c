/* config — see config.h.
 *
 * The table `options` is the single description of every setting; the
 * parsers for flags, environment and file all go through set_option(), so a
 * value is validated the same way wherever it comes from, and the error names
 * where it came from (the flag, the variable, or file:line).
 */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum opt_type {
    OPT_INT, OPT_U32, OPT_BYTES32, OPT_SIZE, OPT_DURATION, OPT_STRING, OPT_WORKERS,
    OPT_BOOL,   /* bool; a flag without a value means true */
    OPT_LIST,   /* char[]: each occurrence appends a line; read with config_list_next() */
};

typedef struct option {
    const char   *name;
    enum opt_type type;
    size_t        offset;    /* into struct config */
    size_t        size;      /* OPT_STRING: buffer size */
    uint64_t      min, max;  /* numeric bounds, inclusive */
    const char   *def;       /* default, parsed like any input */
    const char   *help;
} option;

#define F(field) offsetof(config, field), sizeof(((config *)0)->field)

static const option options[] = {
    { "host", OPT_STRING, F(host), 0, 0, "127.0.0.1", "address to listen on" },
    { "port", OPT_INT, F(port), 1, 65535, "8080", "TCP port" },
    { "workers", OPT_WORKERS, F(workers), 0, 1024, "1", "worker processes, N or auto" },
    { "backlog", OPT_INT, F(backlog), 1, 65535, "4096", "listen backlog" },
    { "config", OPT_STRING, F(config_file), 0, 0, "", "config file of 'name value' lines" },
    { "max-connections", OPT_U32, F(max_connections), 1, 100000000, "100000",
      "open connections per worker" },
    { "max-request-line", OPT_BYTES32, F(max_request_line), 64, 1 << 20, "8192",
      "request line bytes (414 beyond)" },
    { "max-header-bytes", OPT_BYTES32, F(max_header_bytes), 256, 1 << 24, "16384",
      "request head bytes (431 beyond)" },
    { "max-headers", OPT_U32, F(max_headers), 1, 10000, "100", "header fields (431 beyond)" },
    { "max-body", OPT_SIZE, F(max_body), 0, (uint64_t)1 << 40, "1m",
      "request body bytes (413 beyond)" },
    { "header-timeout", OPT_DURATION, F(header_timeout), 1, 86400000, "10s",
      "time to receive a request head" },
    { "body-timeout", OPT_DURATION, F(body_timeout), 1, 86400000, "30s",
      "time between reads of a body" },
    { "idle-timeout", OPT_DURATION, F(idle_timeout), 1, 86400000 * 7ULL, "60s",
      "keep-alive idle time" },
    { "write-timeout", OPT_DURATION, F(write_timeout), 1, 86400000, "30s",
      "time without write progress" },
    { "shutdown-timeout", OPT_DURATION, F(shutdown_timeout), 0, 86400000, "30s",
      "graceful stop limit" },
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static const option *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].name) == len && memcmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

/* Parses an unsigned decimal with an optional suffix from `units` (each a
 * suffix and its multiplier). Whole string must match. */
typedef struct unit { const char *suffix; uint64_t mult; } unit;

static int parse_scaled(const char *s, const unit *units, uint64_t *out)
{
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    for (const unit *u = units; u->suffix; u++) {
        if (strcmp(end, u->suffix) == 0) {
            if (u->mult && v > UINT64_MAX / u->mult)
                return -EINVAL;
            *out = (uint64_t)v * u->mult;
            return 0;
        }
    }
    return -EINVAL;
}

int config_parse_size(const char *s, uint64_t *out)
{
    static const unit units[] = {
        { "", 1 }, { "b", 1 }, { "k", 1ULL << 10 }, { "K", 1ULL << 10 },
        { "m", 1ULL << 20 }, { "M", 1ULL << 20 }, { "g", 1ULL << 30 }, { "G", 1ULL << 30 },
        { NULL, 0 },
    };
    return parse_scaled(s, units, out);
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    static const unit units[] = {
        { "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
        { NULL, 0 },
    };
    return parse_scaled(s, units, ms);
}

/* Validates and stores one value. `where` names the source for errors. */
static int set_option(config *c, const option *o, const char *val, const char *where,
                      char *err, size_t errlen)
{
    void *dst = (char *)c + o->offset;
    uint64_t v = 0;
    int rc = 0;
    switch (o->type) {
    case OPT_STRING:
        if (strlen(val) >= o->size) {
            snprintf(err, errlen, "%s: value too long", where);
            return -1;
        }
        strcpy(dst, val);
        return 0;
    case OPT_LIST: {
        size_t used = strlen(dst);
        if (strchr(val, '\n') || !*val || used + strlen(val) + 2 > o->size) {
            snprintf(err, errlen, "%s: invalid or too many values", where);
            return -1;
        }
        if (used)
            strcat(dst, "\n");
        strcat(dst, val);
        return 0;
    }
    case OPT_BOOL:
        if (!strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "on") || !strcmp(val, "1"))
            *(bool *)dst = true;
        else if (!strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "off") ||
                 !strcmp(val, "0"))
            *(bool *)dst = false;
        else {
            snprintf(err, errlen, "%s: invalid value '%s': expected true or false", where, val);
            return -1;
        }
        return 0;
    case OPT_WORKERS:
        if (strcmp(val, "auto") == 0) {
            *(int *)dst = 0;
            return 0;
        }
        /* fall through */
    case OPT_INT:
    case OPT_U32:
        rc = parse_scaled(val, (const unit[]){ { "", 1 }, { NULL, 0 } }, &v);
        break;
    case OPT_SIZE:
    case OPT_BYTES32:
        rc = config_parse_size(val, &v);
        break;
    case OPT_DURATION:
        rc = config_parse_duration(val, &v);
        break;
    }
    if (rc || v < o->min || v > o->max) {
        const char *kind = o->type == OPT_SIZE || o->type == OPT_BYTES32
                               ? "a size (e.g. 512k, 1m)"
                         : o->type == OPT_DURATION ? "a duration (e.g. 500ms, 10s, 2m)"
                         : o->type == OPT_WORKERS ? "a number or 'auto'"
                         : "a number";
        snprintf(err, errlen, "%s: invalid value '%s': expected %s between %llu and %llu",
                 where, val, kind, (unsigned long long)o->min, (unsigned long long)o->max);
        return -1;
    }
    switch (o->type) {
    case OPT_INT:
    case OPT_WORKERS:
        *(int *)dst = (int)v;
        break;
    case OPT_U32:
    case OPT_BYTES32:
        *(uint32_t *)dst = (uint32_t)v;
        break;
    default:
        *(uint64_t *)dst = v;
    }
    return 0;
}

void config_defaults(config *c)
{
    memset(c, 0, sizeof(*c));
    char err[256];
    for (size_t i = 0; i < NOPTIONS; i++)
        if (*options[i].def && set_option(c, &options[i], options[i].def, options[i].name, err, sizeof(err)))
            abort();   /* a bad default is a programming error */
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static int load_file(config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[2048], where[1100];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s: line too long", where);
            rc = -1;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        size_t klen = strcspn(s, " \t");
        const option *o = find_option(s, klen);
        char *val = trim(s + klen);
        if (!o || o->offset == offsetof(config, config_file)) {
            snprintf(err, errlen, "%s: unknown setting '%.*s'", where, (int)klen, s);
            rc = -1;
        } else if (*val == '\0') {
            snprintf(err, errlen, "%s: setting '%s' has no value", where, o->name);
            rc = -1;
        } else {
            rc = set_option(c, o, val, where, err, errlen);
        }
    }
    fclose(f);
    return rc;
}

static void env_name(const char *opt, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "MYRIAD_");
    for (; *opt && n + 1 < cap; opt++)
        out[n++] = *opt == '-' ? '_' : (char)toupper((unsigned char)*opt);
    out[n] = '\0';
}

static int load_env(config *c, char *err, size_t errlen)
{
    char name[64];
    for (size_t i = 0; i < NOPTIONS; i++) {
        if (options[i].offset == offsetof(config, config_file))
            continue;
        env_name(options[i].name, name, sizeof(name));
        const char *v = getenv(name);
        if (v && set_option(c, &options[i], v, name, err, errlen))
            return -1;
    }
    return 0;
}

/* Splits "--name=value" / "--name value". Returns the option or NULL. */
static const option *flag_option(const char *arg, const char **inline_val)
{
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    *inline_val = eq ? eq + 1 : NULL;
    return find_option(name, eq ? (size_t)(eq - name) : strlen(name));
}

enum config_result config_load(config *c, int argc, char **argv, int first, char *err,
                               size_t errlen)
{
    config_defaults(c);
    /* pass 1: --help, --version and where the config file is */
    const char *file = getenv("MYRIAD_CONFIG");
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return CONFIG_HELP;
        if (strcmp(argv[i], "--version") == 0)
            return CONFIG_VERSION;
        if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[++i];
    }
    if (file && *file) {
        if (set_option(c, find_option("config", 6), file, "--config", err, errlen) ||
            load_file(c, file, err, errlen))
            return CONFIG_ERROR;
    }
    if (load_env(c, err, errlen))
        return CONFIG_ERROR;
    /* pass 2: flags */
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i], *val;
        const option *o = strncmp(arg, "--", 2) == 0 ? flag_option(arg, &val) : NULL;
        if (!o) {
            snprintf(err, errlen, "unknown %s '%s' (see --help)",
                     arg[0] == '-' ? "flag" : "argument", arg);
            return CONFIG_ERROR;
        }
        if (!val && o->type == OPT_BOOL) {
            val = "true";   /* --flag alone */
        } else if (!val) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s needs a value", o->name);
                return CONFIG_ERROR;
            }
            val = argv[++i];
        }
        char where[80];
        snprintf(where, sizeof(where), "--%s", o->name);
        if (set_option(c, o, val, where, err, errlen))
            return CONFIG_ERROR;
    }
    return CONFIG_OK;
}

void config_usage(int fd, const char *prog)
{
    dprintf(fd, "usage: %s serve [flags]\n\nflags (also 'name value' lines in --config FILE,"
                " or MYRIAD_NAME in the environment):\n", prog);
    for (size_t i = 0; i < NOPTIONS; i++) {
        const option *o = &options[i];
        dprintf(fd, "  --%-20s %s%s%s%s\n", o->name, o->help, *o->def ? " (default " : "",
                o->def, *o->def ? ")" : "");
    }
    dprintf(fd, "  --%-20s %s\n  --%-20s %s\n", "help", "show this help", "version",
            "show the version");
}

const char *config_list_next(const char *list, const char **cursor, size_t *len)
{
    const char *p = *cursor ? *cursor : list;
    if (!*p)
        return NULL;
    const char *nl = strchr(p, '\n');
    *len = nl ? (size_t)(nl - p) : strlen(p);
    *cursor = nl ? nl + 1 : p + *len;
    return p;
}
