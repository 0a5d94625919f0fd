/* runtime.h - what every worker reads on the request path: an immutable,
 * reference-counted snapshot of (config, runtime weights per route, endpoint
 * set per cluster, weights generation). Any change (weights through the admin
 * API, a reload, a DNS refresh) builds a new snapshot and publishes it; a
 * worker notices the new version at the start of its next request and swaps.
 * Requests in flight keep the snapshot they started with, so no request ever
 * sees a half-applied change.
 *
 * All mutating calls are made from the main thread (admin, signals, DNS);
 * veer_runtime_acquire() may be called from any thread. */
#ifndef VEER_RUNTIME_H
#define VEER_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>

#include "cluster.h"
#include "config.h"

struct veer_tls_set_s;
struct veer_stats_s;
struct veer_stats_layout_s;

typedef struct veer_route_weights_s {
    veer_split_t *split; /* runtime order: config order, clusters added later at the end */
    size_t count;
    veer_override_t *ab; /* a canary run's A/B match: matching requests go to ab->cluster; NULL: none */
    int32_t mirror;      /* a canary run's mirror: cluster index + 1 that gets copies (mirror.h); 0: none */
} veer_route_weights_t;

typedef struct veer_snapshot_s {
    atomic_uint refs;
    uint64_t version;            /* internal: bumps on every publish */
    uint64_t generation;         /* user-visible weights generation */
    veer_config_t *config;       /* shared between snapshots; freed with the last one */
    atomic_uint *config_refs;
    struct veer_tls_set_s *tls;  /* TLS contexts built from config; shared and freed with it */
    struct veer_stats_layout_s *stats_layout; /* config's stats series (stats.h); shared and freed with it */
    veer_route_weights_t *routes;          /* [config->route_count] */
    veer_endpoint_set_t **cluster_endpoints; /* [config->cluster_count] */
} veer_snapshot_t;

typedef struct veer_runtime_s {
    pthread_mutex_t lock;
    veer_snapshot_t *current;    /* guarded by lock */
    atomic_uint_fast64_t version; /* == current->version; read lock-free */
    uint32_t worker_count;
    struct veer_stats_s *stats;  /* request statistics, bound at start; NULL: none (owned by main) */
} veer_runtime_t;

enum {
    VEER_RT_OK = 0,
    VEER_RT_EINVAL = -1,   /* 400: unknown route/cluster, negative or all-zero weights */
    VEER_RT_ESTALE = -2,   /* 409: if_generation is not the current generation */
    VEER_RT_ELOCKED = -3,  /* 423: a canary run owns the route */
    VEER_RT_ESTATE = -4,   /* 500: the state file could not be written */
    VEER_RT_ENOMEM = -5,   /* 500: out of memory */
};

/* Takes ownership of cfg and tls (the contexts veer_tls_set_new built from
 * cfg; NULL when the caller has none). */
int veer_runtime_init(veer_runtime_t *rt, veer_config_t *cfg, struct veer_tls_set_s *tls, uint32_t worker_count);
void veer_runtime_destroy(veer_runtime_t *rt);

/* Record requests into st from now on: the current config gets its stats
 * layout here, every later one in veer_runtime_reload. Call once, before
 * the workers are set up. 0, or VEER_RT_ENOMEM. */
int veer_runtime_attach_stats(veer_runtime_t *rt, struct veer_stats_s *st);

/* Take a reference to the current snapshot (thread-safe). */
veer_snapshot_t *veer_runtime_acquire(veer_runtime_t *rt);
void veer_snapshot_release(veer_snapshot_t *snap);

/* Replace a route's weights. names/weights: n pairs (cluster names).
 * Clusters of the route not named keep their weight. if_generation 0 means
 * "don't check". On success the state file is written before returning and
 * *new_generation is set. err gets a user-facing message on failure. */
int veer_runtime_set_weights(veer_runtime_t *rt, const char *route, const char *const *names,
                             const int64_t *weights, size_t n, uint64_t if_generation,
                             uint64_t *new_generation, char *err, size_t errlen);

/* A leader's change applied on a peer replica (PUT weights with
 * "generation"): the weights as in veer_runtime_set_weights, and the weights
 * generation becomes `generation` when it is newer than the current one, so
 * every replica shows the same number for the same weights. generation <= the
 * current one: VEER_RT_OK without a change when the named clusters already
 * have these weights (a retry), else VEER_RT_ESTALE. over_local: this
 * replica's own generation does not count (a follower takes the leader's
 * numbering even when a forced PUT or a reload here ran ahead of it): the
 * weights are applied and the generation becomes `generation`. */
int veer_runtime_adopt_weights(veer_runtime_t *rt, const char *route, const char *const *names,
                               const int64_t *weights, size_t n, uint64_t generation, bool over_local,
                               uint64_t *new_generation, char *err, size_t errlen);

/* Set (cluster non-NULL) or clear (cluster NULL) a route's A/B match for a
 * canary run: requests whose header or cookie `name` equals `equals` go to
 * cluster whatever the weights. A routing change only: the weights
 * generation stays. Kept across reloads while route and cluster exist. */
int veer_runtime_set_ab(veer_runtime_t *rt, const char *route, const char *cluster, veer_key_kind_t kind,
                        const char *name, const char *equals, char *err, size_t errlen);

/* Set (cluster non-NULL) or clear (cluster NULL) a route's mirror for a
 * canary run's mirrored phase: requests to other clusters of the route are
 * copied to cluster (mirror.h). A routing change only, like the A/B match,
 * and kept across reloads while route and cluster exist. */
int veer_runtime_set_mirror(veer_runtime_t *rt, const char *route, const char *cluster, char *err, size_t errlen);

/* Swap in a new config (already validated) with its TLS contexts. Runtime
 * weights of a route are kept when the route's split in the new file equals
 * the old file's split; otherwise the file wins. Takes ownership of cfg and
 * tls. Fails, changing nothing, when the new config's state_file cannot be
 * written. */
int veer_runtime_reload(veer_runtime_t *rt, veer_config_t *cfg, struct veer_tls_set_s *tls, char *err,
                        size_t errlen);

/* Publish a new endpoint set for cluster `name` (from DNS). Takes the
 * caller's reference on set. */
void veer_runtime_set_endpoints(veer_runtime_t *rt, const char *cluster, veer_endpoint_set_t *set);

#endif
