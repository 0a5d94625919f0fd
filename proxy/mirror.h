/* mirror.h - a canary run's mirrored phase: a copy of a request that goes to
 * the stable cluster is sent, fire-and-forget, to an endpoint of the canary
 * cluster; its response is read and discarded, its status and duration go
 * into the canary cluster's stats for the route so the controller's analysis
 * sees them. A mirror never touches the primary exchange after it started. */
#ifndef VEER_MIRROR_H
#define VEER_MIRROR_H

#include "exchange.h"

/* Mirrors in flight per worker; a request over it is not mirrored (counted). */
#define VEER_MIRROR_MAX_IN_FLIGHT 64

/* Called once the primary's route, cluster and endpoint are picked: when the
 * route mirrors to another cluster than x->cluster, start a copy. Only
 * requests without a body are copied (a body is streamed to the primary and
 * not kept); others are counted as dropped. Never fails the primary. */
void veer_mirror_maybe(veer_exchange_t *x);

/* Abandon every mirror of the worker (at worker exit). */
void veer_mirror_worker_free(veer_worker_t *w);

#endif
