/* cluster.h - upstream endpoints: immutable, reference-counted endpoint sets
 * built from a cluster's config (literal addresses at once, DNS names through
 * evdns every dns_refresh), and the per-worker slot each endpoint carries
 * (active requests for least_request, idle keep-alive connections).
 *
 * An endpoint object is shared by every set that contains its address, so a
 * DNS refresh that returns the same addresses keeps the same objects and their
 * idle connections. When an address disappears the endpoint is marked retired:
 * no new request picks it, in-flight requests finish (drained, not cut), and
 * connections to it are closed instead of being pooled. */
#ifndef VEER_CLUSTER_H
#define VEER_CLUSTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "config.h"

struct veer_upconn_s;
struct veer_stats_s;
struct veer_stats_endpoint_s;

/* Per-worker state of one endpoint; touched only by its worker. */
typedef struct veer_endpoint_slot_s {
    struct veer_upconn_s *idle_head; /* idle keep-alive connections, LIFO */
    uint32_t idle_count;
    uint32_t active_requests;
    uint32_t connections;
    /* This worker's last TLS session with the endpoint (tls.c), made under
     * the cluster context of generation tls_session_gen; NULL: none. */
    struct ssl_session_st *tls_session;
    uint64_t tls_session_gen;
} __attribute__((aligned(64))) veer_endpoint_slot_t;

typedef struct veer_endpoint_s {
    atomic_uint refs;
    atomic_bool retired;
    /* Set by the resilience owner (resilience.c) from health checks and
     * outlier detection: VEER_EP_UNSET until it has judged the endpoint. */
    atomic_uchar route_state;
    uint32_t id;                 /* unique in the process */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char name[64];               /* "10.0.0.7:8080" or "[::1]:8080" */
    char *host;                  /* configured host (for Host/SNI), owned */
    veer_endpoint_slot_t *slots; /* [worker_count] */
    uint32_t slot_count;
    struct veer_stats_endpoint_s *stats; /* request counts (stats.h); NULL: not recorded */
    /* Set by health checking / outlier detection, read by /metrics and the
     * status page; zero (healthy, not ejected) until those say otherwise. */
    atomic_bool unhealthy, ejected;
} veer_endpoint_t;

typedef struct veer_endpoint_set_s {
    atomic_uint refs;
    size_t count;
    veer_endpoint_t *endpoints[];
} veer_endpoint_set_t;

/* Endpoints made from now on get a stats series in st (main thread, at start,
 * before the first endpoint; st outlives every endpoint). */
void veer_endpoint_stats_attach(struct veer_stats_s *st);

enum { VEER_EP_UNSET = 0, VEER_EP_ROUTABLE = 1, VEER_EP_UNROUTABLE = 2 };

veer_endpoint_t *veer_endpoint_new(const struct sockaddr *sa, socklen_t len, const char *host, uint32_t worker_count);
void veer_endpoint_ref(veer_endpoint_t *ep);
void veer_endpoint_unref(veer_endpoint_t *ep);

veer_endpoint_set_t *veer_endpoint_set_new(size_t count);
void veer_endpoint_set_ref(veer_endpoint_set_t *set);
void veer_endpoint_set_unref(veer_endpoint_set_t *set);

/* Format an address as "1.2.3.4:80" / "[::1]:80". */
void veer_sockaddr_format(const struct sockaddr *sa, char *out, size_t outlen);

/* Pick an endpoint for a new request (worker-local counts; least_request is
 * power of two choices on active_requests). rr is the worker's round-robin
 * cursor for this cluster. Skips retired and VEER_EP_UNROUTABLE endpoints,
 * and VEER_EP_UNSET ones unless unset_ok (false when the cluster's health
 * check requires a first pass). NULL when none. */
veer_endpoint_t *veer_lb_pick(const veer_endpoint_set_t *set, veer_lb_t lb, uint32_t worker,
                              uint32_t *rr, uint32_t random, bool unset_ok);

/* May a new request go to ep (not retired, routable)? */
static inline bool veer_endpoint_usable(const veer_endpoint_t *ep, bool unset_ok)
{
    if (atomic_load_explicit(&ep->retired, memory_order_relaxed))
        return false;
    unsigned char st = atomic_load_explicit(&ep->route_state, memory_order_relaxed);
    return st == VEER_EP_ROUTABLE || (st == VEER_EP_UNSET && unset_ok);
}

#endif
