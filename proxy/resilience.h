/* resilience.h - the main-thread owner of each cluster's health checker and
 * outlier detector, and the process-wide per-cluster state workers read on
 * the request path: the circuit breaker and the panic flag. Workers push
 * every attempt's result into their own outlier queue; the owner drains the
 * queues on a timer, runs the probes and publishes each endpoint's
 * routability (veer_endpoint_t.route_state). Per-cluster entries are keyed by
 * cluster name and live until exit, so breakers survive reloads. */
#ifndef VEER_RESILIENCE_H
#define VEER_RESILIENCE_H

#include <cJSON.h>
#include <event2/event.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "breaker.h"
#include "config.h"
#include "outlier.h"
#include "runtime.h"

#define VEER_RESIL_MAX_CLUSTERS 4096
#define VEER_RESIL_QUEUE_CAPACITY 16384 /* results per worker between two drains (every 20 ms) */

struct resil_owned_s;

typedef struct veer_resil_cluster_s {
    veer_breaker_t breaker;   /* first: its counters are cache-line padded */
    uint32_t index;           /* the outlier sample's cluster field */
    atomic_bool panic;        /* fewer healthy hosts than panic_threshold (failover clusters divert) */
    atomic_bool passive;      /* the cluster has outlier_detection: workers report attempt results */
    char *name;
    struct resil_owned_s *own; /* detector, checker, probes: main thread only */
} veer_resil_cluster_t;

typedef struct veer_resilience_s veer_resilience_t;

/* The entry of a cluster name, made on first use with cc's breaker limits.
 * Thread-safe; NULL when out of memory or at VEER_RESIL_MAX_CLUSTERS. */
veer_resil_cluster_t *veer_resilience_cluster(const veer_cluster_config_t *cc);

/* Start the owner on the main thread's base: one outlier queue per worker,
 * a timer that follows the runtime's snapshots. NULL when out of memory. */
veer_resilience_t *veer_resilience_start(struct event_base *base, veer_runtime_t *rt, uint32_t worker_count);
veer_outlier_queue_t *veer_resilience_queue(veer_resilience_t *r, uint32_t worker);
/* Stop the timer and probes and free the queues (after the workers joined). */
void veer_resilience_free(veer_resilience_t *r);

/* For /v1/status (main thread): the endpoint's health, ejection and counters
 * added to obj; the cluster's breakers, panic and ejection totals to cobj. */
void veer_resilience_endpoint_json(const char *cluster, uint32_t endpoint_id, cJSON *obj);
void veer_resilience_cluster_json(const char *cluster, cJSON *cobj);

/* For metrics (main thread): the cluster's detector counters
 * (ejections_total[reason] is veer_outlier_ejections_total). -ENOENT when the
 * cluster has no detector. Breaker counters are read from
 * veer_resilience_cluster(cc)->breaker on any thread. */
int veer_resilience_outlier_stats(const char *cluster, veer_outlier_stats_t *out);

#endif
