/* health.h - the state side of active health checks for one cluster: which
 * endpoints are due for a probe (interval +- jitter, from a seeded generator),
 * probe deadlines (a timeout is a failure), expected statuses, and the
 * healthy/unhealthy thresholds that flip an endpoint's state. The prober (the
 * network part, on one thread) asks what is due, sends the GETs and reports
 * what came back; it never decides health itself.
 *
 * Pure logic, owned by one thread, no clock of its own (every call takes
 * now_ms). The owner feeds state changes to the cluster's outlier detector:
 * veer_outlier_set_health() on each state change, and
 * veer_outlier_on_health_pass() on each pass (a pass un-ejects). */
#ifndef VEER_HEALTH_H
#define VEER_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define VEER_HEALTH_MAX_HOSTS 65536

typedef enum {
    VEER_HEALTH_UNKNOWN = 0,   /* no verdict yet; routable only without require_initial_pass */
    VEER_HEALTH_HEALTHY = 1,
    VEER_HEALTH_UNHEALTHY = 2,
} veer_health_state_t;

/* How a probe failed without an expected status. */
typedef enum {
    VEER_HEALTH_FAIL_STATUS = 0,  /* a response outside expected_statuses */
    VEER_HEALTH_FAIL_TIMEOUT = 1, /* no whole response within timeout */
    VEER_HEALTH_FAIL_CONNECT = 2, /* connect refused, unreachable, TLS handshake failed */
    VEER_HEALTH_FAIL_RESET = 3,   /* closed or reset, or a malformed response */
    VEER_HEALTH_FAIL_GRPC = 4,    /* a gRPC health answer other than SERVING */
} veer_health_failure_t;

typedef struct veer_health_event_s {
    uint32_t endpoint_id;
    veer_health_state_t from, to;
    bool routable;        /* after the change */
    char detail[128];     /* "3 failed checks in a row (last: status 503)" */
} veer_health_event_t;

/* Called synchronously on every state change; must not call back into the
 * same checker. */
typedef void (*veer_health_event_cb)(void *arg, const veer_health_event_t *ev);

/* What one probe's report came to. */
typedef struct veer_health_result_s {
    bool passed;
    bool changed;               /* the state flipped (the event callback ran) */
    veer_health_state_t state;  /* after */
    bool routable;
    uint64_t probe_started_ms;  /* for veer_outlier_on_health_pass */
} veer_health_result_t;

typedef struct veer_health_host_info_s {
    veer_health_state_t state;
    bool routable;
    bool probe_in_flight;
    uint32_t passes_in_a_row, failures_in_a_row;
    int last_status;                     /* 0: the last probe got no response */
    veer_health_failure_t last_failure;  /* when the last probe failed */
    /* The last failed probe, kept after a recovery so an operator can see
     * why a host went red: what failed ("status 503", "NOT_SERVING",
     * "timeout"; "" when no probe ever failed), when (now_ms of the report)
     * and how many failures in a row it was the last of. */
    char last_failure_reason[64];
    uint64_t last_failure_ms;
    uint32_t last_failure_streak;
    uint64_t last_check_ms;              /* 0: never */
    uint64_t next_probe_ms;              /* when idle */
    uint64_t checks_total, failures_total;
} veer_health_host_info_t;

typedef struct veer_health_s veer_health_t;

const char *veer_health_state_name(veer_health_state_t state); /* "unknown", "healthy", "unhealthy" */
const char *veer_health_failure_name(veer_health_failure_t failure);

/* cfg is copied (its path string is not used here). NULL when out of memory. */
veer_health_t *veer_health_new(const veer_health_check_config_t *cfg, uint64_t seed, veer_health_event_cb on_event,
                               void *event_arg);
void veer_health_free(veer_health_t *hc);
/* New knobs on reload; states, counts and schedules are kept. */
void veer_health_reconfigure(veer_health_t *hc, const veer_health_check_config_t *cfg);

/* Make the host set exactly ids[0..count) (unique, non-zero). New hosts start
 * UNKNOWN with their first probe at now + a random share of jitter (so a pool
 * is not probed in one burst). Returns 0, -EINVAL or -ENOMEM (set unchanged). */
int veer_health_sync(veer_health_t *hc, const uint32_t *ids, size_t count, uint64_t now_ms);

/* Fail in-flight probes past their deadline (as timeouts), then write up to
 * cap ids of hosts whose probe is due into due[] and mark those probes in
 * flight with deadline now + timeout. Returns how many; call again when it
 * returns cap. */
size_t veer_health_poll(veer_health_t *hc, uint64_t now_ms, uint32_t *due, size_t cap);

/* When poll next has work: the earliest next probe or in-flight deadline;
 * UINT64_MAX when there is none. */
uint64_t veer_health_next_wakeup(const veer_health_t *hc);

/* The in-flight probe of this host got a response with this status (a pass
 * when in expected_statuses) or failed. Returns 0, or -ENOENT when the host
 * is unknown or has no probe in flight (a late answer after its timeout). The
 * prober must abandon a probe at its deadline: a late report is ignored. */
int veer_health_on_response(veer_health_t *hc, uint32_t endpoint_id, int status, uint64_t now_ms,
                            veer_health_result_t *out);
int veer_health_on_failure(veer_health_t *hc, uint32_t endpoint_id, veer_health_failure_t failure, uint64_t now_ms,
                           veer_health_result_t *out);
/* As veer_health_on_failure, with the prober's own words for what failed
 * ("grpc-status 12", "NOT_SERVING"; at most 63 bytes kept) shown instead of
 * the failure's name in the state-change detail. reason NULL: the name. */
int veer_health_on_failure_reason(veer_health_t *hc, uint32_t endpoint_id, veer_health_failure_t failure,
                                  const char *reason, uint64_t now_ms, veer_health_result_t *out);

bool veer_health_routable(const veer_health_t *hc, uint32_t endpoint_id);
veer_health_state_t veer_health_state(const veer_health_t *hc, uint32_t endpoint_id);
int veer_health_host_info(const veer_health_t *hc, uint32_t endpoint_id, veer_health_host_info_t *out);
/* Whether a status is in a list of ranges. */
bool veer_health_status_expected(const veer_status_range_t *ranges, size_t count, int status);

#endif
