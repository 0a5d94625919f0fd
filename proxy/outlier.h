/* outlier.h - passive outlier detection for one cluster, with Envoy's knobs and
 * semantics and veer's fixes: consecutive 5xx / gateway / local-origin failures
 * eject at once (gateway enforced by default); each interval the success-rate,
 * failure-percentage and latency (P99) analyses run; an ejection lasts
 * base_ejection_time x the host's ejection count (capped, the count decaying
 * while the host stays in); max_ejection_percent never blocks the first
 * ejection of a pool; below the panic threshold every host is routed to.
 *
 * The detector also holds each host's active health-check verdict, because
 * routability and panic depend on both. Pure logic: no clock (every call takes
 * now_ms), no I/O, randomness from a seeded generator.
 *
 * Threading: a detector belongs to one thread (the cluster's resilience
 * thread, the one that runs health checks). Workers never call it: each worker
 * pushes its results into its own veer_outlier_queue_t (bounded, lock-free,
 * single producer / single consumer) and the owner drains the queues and feeds
 * the detectors. The owner publishes routability to the workers, e.g. an
 * atomic flag per endpoint set from the events. */
#ifndef VEER_OUTLIER_H
#define VEER_OUTLIER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define VEER_OUTLIER_MAX_HOSTS 65536

/* What one attempt to an endpoint came to. Every attempt is one result,
 * retries included: a retry must not hide the failure before it. */
typedef enum {
    VEER_OUTLIER_SUCCESS = 0,     /* a response that is not a 5xx (4xx is the client's fault) */
    VEER_OUTLIER_5XX = 1,         /* a 5xx other than 502/503/504, or a failing grpc-status */
    VEER_OUTLIER_GATEWAY = 2,     /* 502, 503 or 504 from the endpoint */
    VEER_OUTLIER_CONNECT_FAILURE = 3, /* local origin: refused, unreachable, connect timeout */
    VEER_OUTLIER_TIMEOUT = 4,     /* local origin: no whole response within the (per-try) timeout */
    VEER_OUTLIER_RESET = 5,       /* local origin: connection or stream reset before the whole response */
} veer_outlier_result_t;

typedef enum {
    VEER_OUTLIER_REASON_CONSECUTIVE_5XX = 0,
    VEER_OUTLIER_REASON_GATEWAY = 1,
    VEER_OUTLIER_REASON_LOCAL_ORIGIN = 2,
    VEER_OUTLIER_REASON_SUCCESS_RATE = 3,
    VEER_OUTLIER_REASON_FAILURE_PERCENTAGE = 4,
    VEER_OUTLIER_REASON_LATENCY = 5,
    VEER_OUTLIER_REASON_COUNT = 6,
} veer_outlier_reason_t;

/* A host's active health-check verdict as routing sees it. The owner maps the
 * health checker's state: healthy, or no check -> OK; unhealthy -> FAILING;
 * never checked yet with require_initial_pass -> PENDING (without
 * require_initial_pass, OK). */
typedef enum {
    VEER_OUTLIER_HEALTH_OK = 0,
    VEER_OUTLIER_HEALTH_FAILING = 1, /* not routed to unless the cluster is in panic */
    VEER_OUTLIER_HEALTH_PENDING = 2, /* not routed to, even in panic: nothing is known about it */
} veer_outlier_health_t;

typedef enum {
    VEER_OUTLIER_EV_EJECT = 0,        /* reason, until_ms, ejection_count */
    VEER_OUTLIER_EV_UNEJECT = 1,      /* by time, or by a health-check pass (by_health_check) */
    VEER_OUTLIER_EV_EJECT_BLOCKED = 2, /* detected, but max_ejection_percent hosts are out already */
    VEER_OUTLIER_EV_NOT_ENFORCED = 3, /* detected, but the enforcing_* percentage said no this time */
    VEER_OUTLIER_EV_PANIC_ON = 4,     /* fewer healthy hosts than panic_threshold: route to all */
    VEER_OUTLIER_EV_PANIC_OFF = 5,
} veer_outlier_event_kind_t;

typedef struct veer_outlier_event_s {
    veer_outlier_event_kind_t kind;
    uint32_t endpoint_id;          /* 0 for panic events */
    veer_outlier_reason_t reason;  /* EJECT*, NOT_ENFORCED, UNEJECT: why it was (to be) ejected */
    uint32_t ejection_count;       /* the host's multiplier after the event */
    uint64_t until_ms;             /* EJECT: when the host comes back */
    bool by_health_check;          /* UNEJECT */
    uint32_t healthy_hosts, ejected_hosts, total_hosts; /* after the event */
    char detail[160];              /* for the log line, e.g. "5 consecutive gateway failures" */
} veer_outlier_event_t;

/* Called synchronously from the detector call that caused the event. It must
 * not call back into the same detector. */
typedef void (*veer_outlier_event_cb)(void *arg, const veer_outlier_event_t *ev);

typedef struct veer_outlier_options_s {
    const veer_outlier_config_t *config; /* NULL: no passive detection (health and panic only); copied */
    uint32_t panic_threshold;            /* percent of healthy hosts; 0: never panic */
    bool hosts_start_pending;            /* new hosts are HEALTH_PENDING (health check + require_initial_pass) */
    uint64_t seed;                       /* for the enforcing_* draws and the ejection time jitter */
    veer_outlier_event_cb on_event;      /* may be NULL */
    void *event_arg;
} veer_outlier_options_t;

typedef struct veer_outlier_host_info_s {
    bool ejected;
    bool routable;
    veer_outlier_reason_t reason;  /* of the current or last ejection */
    uint64_t ejected_until_ms;     /* when ejected */
    uint32_t ejection_count;       /* multiplier of base_ejection_time for the next ejection - 1 */
    uint64_t ejections_total;
    veer_outlier_health_t health;
    uint32_t consecutive_5xx, consecutive_gateway_failure, consecutive_local_origin_failure;
    uint64_t interval_requests, interval_failures; /* the interval under way */
} veer_outlier_host_info_t;

typedef struct veer_outlier_stats_s {
    uint64_t ejections_total[VEER_OUTLIER_REASON_COUNT];        /* enforced: veer_outlier_ejections_total */
    uint64_t ejections_not_enforced[VEER_OUTLIER_REASON_COUNT]; /* detected, enforcing_* said no */
    uint64_t ejections_blocked;    /* refused by max_ejection_percent */
    uint64_t unknown_host_results; /* results for hosts no longer in the cluster (dropped) */
    uint32_t total_hosts, healthy_hosts, ejected_hosts;
    bool panic;
} veer_outlier_stats_t;

typedef struct veer_outlier_s veer_outlier_t;

const char *veer_outlier_reason_name(veer_outlier_reason_t reason); /* "consecutive_5xx", "gateway", ... */
const char *veer_outlier_result_name(veer_outlier_result_t result);
/* The result kind of a response with this status (a failing grpc-status is
 * VEER_OUTLIER_5XX: the caller decides that). */
veer_outlier_result_t veer_outlier_result_from_status(int status);

/* A detector with no hosts; call veer_outlier_sync() next. NULL when out of
 * memory. now_ms starts the first interval. */
veer_outlier_t *veer_outlier_new(const veer_outlier_options_t *opts, uint64_t now_ms);
void veer_outlier_free(veer_outlier_t *det);

/* New knobs (a reload), keeping every host's state and ejection. Hosts
 * ejected when the new options have no config come back at once. */
void veer_outlier_reconfigure(veer_outlier_t *det, const veer_outlier_options_t *opts, uint64_t now_ms);

/* Make the host set exactly ids[0..count) (endpoint ids, unique, non-zero):
 * hosts that stay keep their state, new ones start fresh, missing ones are
 * forgotten. Returns 0, -EINVAL (duplicate or zero id, more than
 * VEER_OUTLIER_MAX_HOSTS) or -ENOMEM; the set is unchanged on error. */
int veer_outlier_sync(veer_outlier_t *det, const uint32_t *ids, size_t count, uint64_t now_ms);

/* One attempt's result. latency_us: from sending the request to the end of
 * the response (or to the failure). May eject the host at once. Returns 0, or
 * -ENOENT for a host not in the set (counted, ignored). */
int veer_outlier_on_result(veer_outlier_t *det, uint32_t endpoint_id, veer_outlier_result_t result,
                           uint64_t latency_us, uint64_t now_ms);

/* Expire ejections whose time is up and, once per interval, run the
 * success-rate, failure-percentage and latency analyses and decay ejection
 * counts. Call it at the time it returns (or earlier: extra calls are cheap);
 * returns UINT64_MAX when nothing is scheduled. */
uint64_t veer_outlier_tick(veer_outlier_t *det, uint64_t now_ms);

/* An active health check that started at probe_started_ms passed: an ejected
 * host comes back (unless successful_active_health_check_uneject_host is
 * false, or the probe started before the ejection). */
int veer_outlier_on_health_pass(veer_outlier_t *det, uint32_t endpoint_id, uint64_t probe_started_ms,
                                uint64_t now_ms);
int veer_outlier_set_health(veer_outlier_t *det, uint32_t endpoint_id, veer_outlier_health_t health);

/* May a new request go to this host: not ejected and health OK, or, in panic,
 * anything but HEALTH_PENDING. False for unknown hosts. */
bool veer_outlier_routable(const veer_outlier_t *det, uint32_t endpoint_id);
bool veer_outlier_panic(const veer_outlier_t *det);
int veer_outlier_host_info(const veer_outlier_t *det, uint32_t endpoint_id, veer_outlier_host_info_t *out);
void veer_outlier_stats(const veer_outlier_t *det, veer_outlier_stats_t *out);

/* ---- results from the workers ------------------------------------------------
 * One queue per worker (the single producer); the owner thread is the single
 * consumer. A full queue drops the sample and counts it: detection lags a
 * little, the worker never waits. */

typedef struct veer_outlier_sample_s {
    uint32_t cluster;      /* the caller's index of the detector */
    uint32_t endpoint_id;
    uint32_t latency_us;   /* saturated at UINT32_MAX (71 minutes) */
    uint8_t result;        /* veer_outlier_result_t */
} veer_outlier_sample_t;

typedef struct veer_outlier_queue_s veer_outlier_queue_t;

/* capacity is rounded up to a power of two (at least 2, at most 1 << 24). */
veer_outlier_queue_t *veer_outlier_queue_new(uint32_t capacity);
void veer_outlier_queue_free(veer_outlier_queue_t *q);
/* Producer side. Returns false (and counts a drop) when the queue is full. */
bool veer_outlier_queue_push(veer_outlier_queue_t *q, const veer_outlier_sample_t *sample);
/* Consumer side: up to max samples, oldest first. */
size_t veer_outlier_queue_pop(veer_outlier_queue_t *q, veer_outlier_sample_t *out, size_t max);
uint64_t veer_outlier_queue_dropped(const veer_outlier_queue_t *q);

#endif
