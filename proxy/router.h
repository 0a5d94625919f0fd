/* router.h - pure routing logic (no I/O, no clock): which route a request
 * takes, and which cluster of that route serves it (overrides, sticky hash,
 * weighted random). See SPEC "Semantics that users rely on".
 *
 * Weights come from the runtime snapshot, not from the config: the admin API
 * changes them at run time. A route's runtime split is an ordered list of
 * (cluster, weight); order matters for sticky assignment: clusters added later
 * (e.g. a canary) come last, so a sticky key that sits on the canary at 10%
 * stays on it at 20% (the cumulative walk is monotone for the last entry). */
#ifndef VEER_ROUTER_H
#define VEER_ROUTER_H

#include "config.h"
#include "http.h"

#define VEER_STICKY_BUCKETS 10000u

typedef struct veer_route_input_s {
    veer_iov_t method;    /* "GET" */
    veer_iov_t path;      /* origin form, with query: "/api/v1/embed?x=1" */
    veer_iov_t authority; /* Host header / :authority, may carry ":port" */
    const veer_header_t *headers; /* names lower-case; may repeat */
    size_t header_count;
    const struct sockaddr *client_addr; /* for sticky client_address; may be NULL */
} veer_route_input_t;

/* Index of the first route whose match holds, or -1 (404). */
int veer_router_match(const veer_config_t *cfg, const veer_route_input_t *in);

/* Cluster index for a request on this route, or -1 when every weight is 0
 * and no override holds. split/split_count is the route's runtime split;
 * random is a uniformly random 32-bit value from the caller's PRNG, used when
 * the route has no sticky key (or the key is absent from the request). */
int veer_router_pick(const veer_route_config_t *route, const veer_split_t *split, size_t split_count,
                     const veer_route_input_t *in, uint32_t random);

/* Whether one override (header or cookie equals) holds for the request;
 * the exchange asks it of a canary run's A/B match (runtime.h). */
bool veer_router_override_holds(const veer_override_t *o, const veer_route_input_t *in);

/* Stable hash of a sticky key into [0, VEER_STICKY_BUCKETS). */
uint32_t veer_router_sticky_bucket(const char *key, size_t len);

/* Find header value by lower-case name (first occurrence). Returns false if absent. */
bool veer_router_header(const veer_route_input_t *in, const char *name, size_t name_len, veer_iov_t *out);

/* Find a cookie by name across all Cookie headers. Returns false if absent. */
bool veer_router_cookie(const veer_route_input_t *in, const char *name, size_t name_len, veer_iov_t *out);

#endif
