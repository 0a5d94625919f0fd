/* hostset.h - what the per-endpoint tables of health.c and outlier.c share:
 * a table of host structs kept sorted by endpoint id (the id is each struct's
 * first member), rebuilt from a new id list on sync, and the seeded random
 * sequence that spreads their probes and ejection times. */
#ifndef VEER_HOSTSET_H
#define VEER_HOSTSET_H

#include <stddef.h>
#include <stdint.h>

/* splitmix64: a full-period sequence from any seed, 0 included. */
uint64_t veer_hostset_random(uint64_t *state);

/* The host with endpoint id `id` among `count` hosts of `size` bytes each,
 * sorted by id, whose first member is their uint32_t id; NULL if absent. */
void *veer_hostset_find(const void *hosts, size_t count, size_t size, uint32_t id);

/* A sorted copy of ids[0..count) in *sorted (malloc'd, room for at least one;
 * the caller frees it). -EINVAL when count exceeds max_count, ids is NULL with
 * a count, or an id is 0 or repeated; -ENOMEM; *sorted is NULL on error. */
int veer_hostset_sorted_ids(const uint32_t *ids, size_t count, size_t max_count, uint32_t **sorted);

#endif
