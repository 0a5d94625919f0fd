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

/* A copy keeps at most this much request body (1 MiB). A body announced
 * larger, or a chunked one that grows past it, is not copied (counted as
 * body_too_large). The memory is bounded by this times the cap in flight:
 * a copy holds its slot of the cap from the moment its body starts being
 * kept, so at most 64 MiB of bodies per worker. */
#define VEER_MIRROR_MAX_BODY_BYTES (1024u * 1024u)

/* Called once the primary's route, cluster and endpoint are picked: when the
 * route mirrors to another cluster than x->cluster, start a copy. A request
 * without a body is sent at once; for one with a body x->mirror_body keeps
 * the body as it streams to the primary and the copy is sent at its end
 * (with a Content-Length of what was received, chunked or not). A request
 * that cannot be copied is counted as dropped. Never fails the primary. */
void veer_mirror_maybe(veer_exchange_t *x);

/* A piece of x's request body while x->mirror_body is set: kept, or the
 * copy dropped (and x->mirror_body cleared) once past the limit. */
void veer_mirror_body(veer_exchange_t *x, const char *data, size_t len);

/* x's request body ended (x->mirror_body set): send the copy. */
void veer_mirror_body_end(veer_exchange_t *x);

/* x failed or went away before its body ended (x->mirror_body set): the
 * kept body is freed, no copy is sent (counted as incomplete). */
void veer_mirror_body_abandon(veer_exchange_t *x);

/* Abandon every mirror of the worker (at worker exit). */
void veer_mirror_worker_free(veer_worker_t *w);

#endif
