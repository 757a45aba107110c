/* tfb — see tfb.h. */
#include "tfb.h"

#include <time.h>
#include <unistd.h>

static uint64_t rng_state;   /* see tfb_random_id */

int tfb_random_id(void)
{
    if (!rng_state) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rng_state = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec ^ 0x9e3779b97f4a7c15ull;
    }
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (int)((rng_state * 2685821657736338717ull >> 33) % TFB_WORLD_ROWS) + 1;
}

int tfb_count_param(myr_req *req, const char *name)
{
    myr_str v = myr_query_param(req, name);
    if (!v.ptr || v.len == 0)
        return 1;
    long n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return 1;
        if (n <= TFB_MAX_QUERIES)
            n = n * 10 + (v.ptr[i] - '0');
    }
    return n < 1 ? 1 : n > TFB_MAX_QUERIES ? TFB_MAX_QUERIES : (int)n;
}

void tfb_world_json(myr_json *w, int64_t id, int64_t number)
{
    myr_json_obj_begin(w);
    myr_json_key(w, "id");
    myr_json_int(w, id);
    myr_json_key(w, "randomNumber");
    myr_json_int(w, number);
    myr_json_obj_end(w);
}
