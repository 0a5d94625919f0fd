/* controller.h - the canary controller's I/O around canary.h's pure state
 * machine: one run per route on the main thread, a timer at each run's next
 * analysis, the analysis windows cut from the request stats, the run's
 * answers applied to the runtime (weights, stable cluster), webhooks, the
 * JSON event log lines and the runs' part of the state file.
 *
 * Every call is made on the main thread (admin, timers, main.c). */
#ifndef VEER_CONTROLLER_H
#define VEER_CONTROLLER_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "prom.h"
#include "runtime.h"

struct event_base;

typedef struct veer_controller_s veer_controller_t;

/* NULL with err when out of memory. Reads the runs saved in the state file
 * (its "canary" object) and resumes them: a run that was progressing waits
 * one interval from now, a rolled back route keeps its weights. A saved run
 * that does not parse is logged and dropped, never fatal. */
veer_controller_t *veer_controller_new(struct event_base *base, veer_runtime_t *rt, char *err, size_t errlen);
void veer_controller_free(veer_controller_t *ctl);

/* The admin calls. Each returns the HTTP status and sets *reply to the JSON
 * body (the run on success, {"error": ...} otherwise; NULL only when out of
 * memory). */
int veer_controller_start(veer_controller_t *ctl, const char *route, const cJSON *body, cJSON **reply);
int veer_controller_command(veer_controller_t *ctl, const char *route, const char *verb, cJSON **reply);
int veer_controller_get(veer_controller_t *ctl, const char *route, cJSON **reply);

/* Config peers.leader, taken at start: true when this replica runs canary
 * runs and pushes weight changes to its peers. A follower answers start and
 * the verbs with 409, resumes no run from the state file and has no peers. */
bool veer_controller_leads(const veer_controller_t *ctl);

/* route's weights were changed by an operator on this replica: apply the
 * change to the peers (config "peers"), as every change of a run is. */
void veer_controller_weights_changed(veer_controller_t *ctl, const char *route);
/* /v1/status's "peers": each peer's admin, last_generation_acked, last_error,
 * lag; an empty array without peers. */
cJSON *veer_controller_peers_json(veer_controller_t *ctl);

/* A run owns route's weights (PUT weights answers 423 unless forced). */
bool veer_controller_owns(const veer_controller_t *ctl, const char *route);
/* The forced weight change: abort the run (it is rolled back) without
 * touching the weights, which the caller is about to set. */
void veer_controller_release(veer_controller_t *ctl, const char *route);

/* /v1/status's route.canary: phase, weight, max_weight, checks_passed,
 * checks_failed, last_analysis; NULL when the route never had a run. */
cJSON *veer_controller_summary(const veer_controller_t *ctl, const char *route);

/* The veer_canary_* families of SPEC for every route with a run. */
void veer_controller_write_metrics(const veer_controller_t *ctl, veer_prom_buf_t *b);

/* The "canary" object of the state file (every route's run and its stable
 * cluster after a promotion); NULL when there is none. */
cJSON *veer_controller_state_json(const veer_controller_t *ctl);

#endif
