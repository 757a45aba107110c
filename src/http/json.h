/* json — the streaming JSON writer (myr_json_* in <myriad.h>).
 *
 * The whole API is public; this header only names the limits the writer
 * enforces, for the modules that hand a writer's bytes on (myr_respond_json)
 * and for the tests.
 */
#ifndef MYR_JSON_H
#define MYR_JSON_H

#include <myriad.h>

/* Open containers allowed at once; one more is -EINVAL. Each depth d in
 * 1..JSON_MAX_DEPTH owns bit d of myr_json.first and myr_json.in_object. */
#define JSON_MAX_DEPTH 32

/* First allocation, in bytes; the buffer then doubles as needed. */
#define JSON_MIN_CAP 256

#endif
