/* worker.h - one event loop per thread. A worker owns its listening sockets
 * (SO_REUSEPORT: the kernel spreads connections), its downstream connections,
 * its per-endpoint slots (idle upstream connections, active request counts)
 * and a reference to the runtime snapshot it serves from. Nothing on the
 * request path is shared with other workers except the read-only snapshot. */
#ifndef VEER_WORKER_H
#define VEER_WORKER_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "runtime.h"
#include "tls.h"

struct veer_h1conn_s;
struct veer_exchange_s;

/* A worker's reference on a snapshot, counted without atomics: exchanges of
 * this worker take and drop references on it; the worker drops the snapshot
 * itself when the count reaches zero after a newer one replaced it. */
typedef struct veer_wsnap_s {
    veer_snapshot_t *snap;
    uint32_t refs;
    uint32_t *rr; /* round-robin cursor per cluster */
    const struct timeval **route_tv; /* per route timeout as a common timeout (O(1) add/del), NULL: none */
    struct veer_resil_cluster_s **resil; /* per cluster: breaker and panic flag (resilience.h); NULL when out of memory */
} veer_wsnap_t;

typedef struct veer_listen_s {
    int fd;
    struct event ev;
    int listener; /* index into config->listeners */
    struct veer_worker_s *w;
} veer_listen_t;

typedef struct veer_worker_stats_s {
    atomic_uint_fast64_t downstream_cx_total, downstream_cx_active, requests_total, bad_requests,
        upstream_cx_total, upstream_connect_failures, local_replies, retries_on_reset;
    /* TLS handshakes that failed, by veer_tls_fail_t */
    atomic_uint_fast64_t tls_downstream_failures[VEER_TLS_FAIL_KINDS], tls_upstream_failures[VEER_TLS_FAIL_KINDS];
    /* HTTP/2 downstream (h2.c). Each mitigation counts the connections it
     * closed (floods, rapid reset, timeouts) or the streams it refused. */
    atomic_uint_fast64_t h2_cx_total, h2_cx_active, h2_streams_total, h2_refused_streams, h2_stream_errors,
        h2_headers_too_large, h2_rapid_reset, h2_continuation_flood, h2_settings_flood, h2_ping_flood,
        h2_empty_frame_flood, h2_priority_flood, h2_header_timeouts, h2_idle_timeouts, h2_protocol_errors;
    /* HTTP/2 upstream (h2up.c): requests refused for a full pending FIFO, and
     * requests sent again after REFUSED_STREAM or above a GOAWAY's last id */
    atomic_uint_fast64_t upstream_pending_overflow, upstream_h2_resends;
    /* canary mirrors (mirror.c): copies sent, copies that failed, copies not sent and why */
    atomic_uint_fast64_t mirror_requests, mirror_failed, mirror_dropped_cap, mirror_dropped_body_too_large,
        mirror_dropped_incomplete, mirror_dropped_too_many_headers, mirror_dropped_no_endpoint;
} veer_worker_stats_t;

typedef struct veer_worker_s {
    uint32_t id;
    pthread_t thread;
    struct event_base *base;
    veer_runtime_t *rt;
    veer_wsnap_t *ws;          /* current */
    veer_listen_t *listens;
    size_t listen_count;
    struct event ctl_ev;       /* woken by main for drain */
    atomic_int drain_requested;
    bool draining;
    struct veer_h1conn_s *conns; /* HTTP/1.1 downstream connections (doubly linked) */
    struct veer_h2conn_s *h2conns; /* HTTP/2 downstream connections (doubly linked, h2.c) */
    uint32_t conn_count;       /* both kinds */
    struct veer_exchange_s *free_exchanges; /* recycled exchange objects */
    uint32_t free_exchange_count;
    uint64_t rng;
    const struct timeval *idle_tv, *header_tv; /* common timeouts */
    veer_worker_stats_t stats;
    veer_tls_log_limit_t tls_log; /* handshake-failure log lines */
    struct veer_alring_s *access_log; /* this worker's access log ring (accesslog.h), set by main */
    struct veer_h2up_pool_s *h2up; /* HTTP/2 upstream connections (h2up.c), made on first use */
    struct veer_outlier_queue_s *outlier_q; /* this worker's attempt results for the resilience owner; set by main */
    struct veer_conn_wait_s *conn_wait; /* exchanges waiting for a max_connections slot (exchange.c), made on first use */
    struct veer_stats_worker_s *req_stats; /* this worker's part of rt->stats (stats.h); NULL: not recorded */
    struct event stats_ev;                 /* 1 s: gives back window memory of idle series */
    struct veer_mirror_s *mirrors;         /* canary mirrors in flight (mirror.c), doubly linked */
    uint32_t mirror_count;
} veer_worker_t;

/* Set up a worker (its base and listening sockets for every listener of
 * cfg). Binding errors are returned with a message. */
int veer_worker_init(veer_worker_t *w, uint32_t id, veer_runtime_t *rt, char *err, size_t errlen);
int veer_worker_start(veer_worker_t *w);
/* From another thread: stop accepting, finish in-flight requests, close
 * keep-alive connections; the loop exits when the last connection is gone. */
void veer_worker_drain(veer_worker_t *w);
/* From another thread: close every connection now (drain_timeout passed). */
void veer_worker_stop(veer_worker_t *w);
void veer_worker_join(veer_worker_t *w);
void veer_worker_free(veer_worker_t *w);

/* The current snapshot, refreshed if the runtime published a newer one. */
veer_wsnap_t *veer_worker_snapshot(veer_worker_t *w);
void veer_wsnap_release(veer_worker_t *w, veer_wsnap_t *ws);

uint32_t veer_worker_random(veer_worker_t *w);
/* Called by connections when they close, to let a draining worker exit. */
void veer_worker_conn_closed(veer_worker_t *w);

extern atomic_uint_fast64_t veer_downstream_active_total; /* across workers, for max_connections */

#endif
