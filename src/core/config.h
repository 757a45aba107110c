/* config — the server's settings from flags, environment and a config file.
 *
 * One table in config.c describes every setting once: its name (the flag is
 * "--name", the config-file key is "name", the environment variable is
 * MYRIAD_NAME with '-' as '_'), its type, bounds, default and help text.
 * Precedence: flag > environment > config file > default.
 *
 * Types: integers with bounds; sizes with k/m/g suffixes (KiB/MiB/GiB);
 * durations with ms/s/m/h suffixes (a bare number is seconds), stored in ms;
 * strings; "N|auto" worker counts (auto stored as 0); booleans (a flag
 * alone means true; values true/false, yes/no, on/off, 1/0); lists (a
 * repeatable setting: each occurrence appends, across file, environment and
 * flags alike; config_list_next() reads them).
 */
#ifndef MYR_CONFIG_H
#define MYR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct config {
    char     host[256];          /* address to bind */
    int      port;               /* TCP port */
    int      workers;            /* worker processes; 0 = one per CPU */
    int      backlog;            /* listen(2) backlog */
    char     config_file[1024];  /* "" when none */
    uint32_t max_connections;    /* open connections per worker */
    uint32_t max_request_line;   /* bytes, else 414 */
    uint32_t max_header_bytes;   /* bytes of the whole head, else 431 */
    uint32_t max_headers;        /* header fields, else 431 */
    uint64_t max_body;           /* bytes, else 413 */
    uint64_t header_timeout;     /* ms to receive a whole head, from its first byte */
    uint64_t body_timeout;       /* ms between two reads of a body */
    uint64_t idle_timeout;       /* ms a keep-alive connection may wait for a request */
    uint64_t write_timeout;      /* ms without write progress */
    uint64_t shutdown_timeout;   /* ms a graceful stop may take */
} config;

enum config_result {
    CONFIG_OK,
    CONFIG_HELP,      /* --help: print config_usage() and exit 0 */
    CONFIG_VERSION,   /* --version */
    CONFIG_ERROR,     /* err holds one line naming the bad input; exit 2 */
};

void config_defaults(config *c);

/* Fills c from defaults, the config file (--config or MYRIAD_CONFIG), the
 * environment, then argv[first..argc). On CONFIG_ERROR, err holds a line
 * without a trailing newline. */
enum config_result config_load(config *c, int argc, char **argv, int first,
                               char *err, size_t errlen);

/* Writes the flag reference to fd. */
void config_usage(int fd, const char *prog);

/* Iterates an OPT_LIST field (values in the order given): start with
 * *cursor = NULL; returns each value (not NUL-terminated, *len bytes) and
 * NULL after the last. */
const char *config_list_next(const char *list, const char **cursor, size_t *len);

/* Parsers shared with other modules; 0 or -EINVAL. */
int config_parse_size(const char *s, uint64_t *out);
int config_parse_duration(const char *s, uint64_t *ms);

#endif
