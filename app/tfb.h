/* tfb — what the TechEmpower routes of the reference service share
 * (app/tfb_db.c, app/cache_routes.c): the World table's size, the random
 * row id, the 1..500 clamp of a count parameter and a World row as JSON. */
#ifndef MYRIAD_APP_TFB_H
#define MYRIAD_APP_TFB_H

#include <stdint.h>

#include <myriad.h>

#define TFB_WORLD_ROWS  10000
#define TFB_MAX_QUERIES 500

/* A random id of 1..TFB_WORLD_ROWS (xorshift64*: per worker process, loop
 * thread only; seeded on first use so forked workers differ). */
int tfb_random_id(void);

/* TechEmpower's clamp of query parameter `name`: missing, empty, not a
 * number or < 1 -> 1; > TFB_MAX_QUERIES -> TFB_MAX_QUERIES. */
int tfb_count_param(myr_req *req, const char *name);

/* {"id":id,"randomNumber":number} */
void tfb_world_json(myr_json *w, int64_t id, int64_t number);

#endif
