/* state.h - runtime state persisted across restarts (SPEC: "Runtime state ...
 * is written to state_file (write, fsync, rename) before the call answers, and
 * read back at start"). The file is JSON:
 *   {"version":1,"generation":7,
 *    "routes":{"embed":{"weights":{"blue":90,"canary":10},
 *                       "base":{"blue":90,"canary":10}}}}
 * "weights" is the runtime split in runtime order; "base" is the config file's
 * split when the weights were set, so a config edit of that route's split
 * wins over stale runtime weights (see runtime.h). */
#ifndef VEER_STATE_H
#define VEER_STATE_H

#include <cjson/cJSON.h>

#include "runtime.h"

/* Another module's part of the state file (the canary controller's runs):
 * fn's object is written under key with every write; key NULL removes it.
 * Main thread only. Readers other than veer_state_apply read their key
 * themselves. */
void veer_state_set_extra(const char *key, cJSON *(*fn)(void *ctx), void *ctx);

/* Write snap's weights atomically: path.tmp, fsync, rename, fsync dir. */
int veer_state_write(const char *path, const veer_snapshot_t *snap, char *err, size_t errlen);

/* Apply a state file to a snapshot being built (routes[] already filled from
 * the config). A missing file is not an error (returns 0). A malformed file is
 * an error with a message naming the file and the problem. Routes or clusters
 * no longer in the config are ignored. */
int veer_state_apply(const char *path, veer_snapshot_t *snap, char *err, size_t errlen);

#endif
