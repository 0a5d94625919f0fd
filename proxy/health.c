/* health.c - active health-check state per endpoint of one cluster (see
 * health.h): probe schedule with jitter, deadlines, expected statuses and the
 * threshold state machine. Hosts are kept sorted by endpoint id. */

#include "health.h"
#include "hostset.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct host_s {
    uint32_t id;
    veer_health_state_t state;
    bool ever_passed;
    bool in_flight;
    uint32_t passes, failures; /* in a row */
    int last_status;
    veer_health_failure_t last_failure;
    char last_reason[64]; /* what the last failure was ("status 503", the prober's words); "" for none */
    uint64_t last_failure_ms; /* 0: never failed */
    uint32_t last_failure_streak;
    uint64_t probe_started_ms, deadline_ms, next_probe_ms, last_check_ms;
    uint64_t checks_total, failures_total;
} host_t;

struct veer_health_s {
    veer_health_check_config_t cfg;
    uint64_t rng;
    veer_health_event_cb on_event;
    void *event_arg;
    host_t *hosts; /* sorted by id */
    size_t host_count;
};

const char *veer_health_state_name(veer_health_state_t state)
{
    switch (state) {
    case VEER_HEALTH_UNKNOWN: return "unknown";
    case VEER_HEALTH_HEALTHY: return "healthy";
    case VEER_HEALTH_UNHEALTHY: return "unhealthy";
    }
    return "unknown";
}

const char *veer_health_failure_name(veer_health_failure_t failure)
{
    switch (failure) {
    case VEER_HEALTH_FAIL_STATUS: return "unexpected status";
    case VEER_HEALTH_FAIL_TIMEOUT: return "timeout";
    case VEER_HEALTH_FAIL_CONNECT: return "connect failure";
    case VEER_HEALTH_FAIL_RESET: return "reset";
    case VEER_HEALTH_FAIL_GRPC: return "gRPC health not serving";
    }
    return "failure";
}

bool veer_health_status_expected(const veer_status_range_t *ranges, size_t count, int status)
{
    for (size_t i = 0; i < count; i++)
        if (status >= ranges[i].lo && status <= ranges[i].hi)
            return true;
    return false;
}

_Static_assert(offsetof(host_t, id) == 0, "hostset.h finds hosts by a leading id");
_Static_assert(sizeof((host_t *)0)->last_reason == sizeof((veer_health_host_info_t *)0)->last_failure_reason,
               "host_info copies the reason whole");

static uint64_t next_random(veer_health_t *hc)
{
    return veer_hostset_random(&hc->rng);
}

static host_t *find_host(const veer_health_t *hc, uint32_t id)
{
    return veer_hostset_find(hc->hosts, hc->host_count, sizeof *hc->hosts, id);
}

static bool host_routable(const veer_health_t *hc, const host_t *h)
{
    return h->state == VEER_HEALTH_HEALTHY || (h->state == VEER_HEALTH_UNKNOWN && !hc->cfg.require_initial_pass);
}

static void copy_config(veer_health_t *hc, const veer_health_check_config_t *cfg)
{
    hc->cfg = *cfg;
    hc->cfg.path = NULL; /* owned by the config; the prober reads it there */
    hc->cfg.grpc_service = NULL;
    if (hc->cfg.interval_ms == 0)
        hc->cfg.interval_ms = 1;
    if (hc->cfg.jitter_ms >= hc->cfg.interval_ms)
        hc->cfg.jitter_ms = hc->cfg.interval_ms - 1;
    if (hc->cfg.healthy_threshold == 0)
        hc->cfg.healthy_threshold = 1;
    if (hc->cfg.unhealthy_threshold == 0)
        hc->cfg.unhealthy_threshold = 1;
    if (hc->cfg.expected_status_count > VEER_STATUS_RANGES_MAX)
        hc->cfg.expected_status_count = VEER_STATUS_RANGES_MAX;
}

veer_health_t *veer_health_new(const veer_health_check_config_t *cfg, uint64_t seed, veer_health_event_cb on_event,
                               void *event_arg)
{
    veer_health_t *hc = calloc(1, sizeof *hc);
    if (!hc)
        return NULL;
    copy_config(hc, cfg);
    hc->rng = seed;
    hc->on_event = on_event;
    hc->event_arg = event_arg;
    return hc;
}

void veer_health_free(veer_health_t *hc)
{
    if (!hc)
        return;
    free(hc->hosts);
    free(hc);
}

void veer_health_reconfigure(veer_health_t *hc, const veer_health_check_config_t *cfg)
{
    copy_config(hc, cfg);
}

int veer_health_sync(veer_health_t *hc, const uint32_t *ids, size_t count, uint64_t now_ms)
{
    uint32_t *sorted;
    int rc = veer_hostset_sorted_ids(ids, count, VEER_HEALTH_MAX_HOSTS, &sorted);
    if (rc)
        return rc;
    host_t *hosts = calloc(count ? count : 1, sizeof *hosts);
    if (!hosts) {
        free(sorted);
        return -ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        const host_t *old = find_host(hc, sorted[i]);
        if (old) {
            hosts[i] = *old;
            continue;
        }
        hosts[i].id = sorted[i];
        hosts[i].next_probe_ms = now_ms + (hc->cfg.jitter_ms ? next_random(hc) % (hc->cfg.jitter_ms + 1) : 0);
    }
    free(sorted);
    free(hc->hosts);
    hc->hosts = hosts;
    hc->host_count = count;
    return 0;
}

/* interval +- jitter after now, uniformly; never sooner than 1 ms. */
static uint64_t next_probe_time(veer_health_t *hc, uint64_t now_ms)
{
    uint64_t jitter = hc->cfg.jitter_ms;
    uint64_t delay = hc->cfg.interval_ms;
    if (jitter) {
        uint64_t offset = next_random(hc) % (2 * jitter + 1);
        delay = delay - jitter + offset;
    }
    return now_ms + (delay ? delay : 1);
}

static void describe_last(const host_t *h, char *buf, size_t cap)
{
    if (h->last_reason[0] != '\0')
        snprintf(buf, cap, "%s", h->last_reason);
    else if (h->last_failure == VEER_HEALTH_FAIL_STATUS && h->last_status)
        snprintf(buf, cap, "status %d", h->last_status);
    else
        snprintf(buf, cap, "%s", veer_health_failure_name(h->last_failure));
}

static void record(veer_health_t *hc, host_t *h, bool passed, int status, veer_health_failure_t failure,
                   const char *reason, uint64_t now_ms, veer_health_result_t *out)
{
    uint64_t started = h->probe_started_ms;
    veer_health_state_t from = h->state;
    h->in_flight = false;
    h->last_check_ms = now_ms;
    h->checks_total++;
    h->last_status = status;
    h->next_probe_ms = next_probe_time(hc, now_ms);
    if (passed) {
        h->passes++;
        h->failures = 0;
        /* one pass is enough for a host that never passed (as in Envoy at startup) */
        if (h->state != VEER_HEALTH_HEALTHY && (!h->ever_passed || h->passes >= hc->cfg.healthy_threshold))
            h->state = VEER_HEALTH_HEALTHY;
        h->ever_passed = true;
    } else {
        h->failures++;
        h->passes = 0;
        h->failures_total++;
        h->last_failure = failure;
        /* kept as words now: last_status is overwritten by the next pass */
        char words[sizeof h->last_reason];
        snprintf(h->last_reason, sizeof h->last_reason, "%s", reason != NULL ? reason : "");
        describe_last(h, words, sizeof words);
        memcpy(h->last_reason, words, sizeof words);
        h->last_failure_ms = now_ms;
        h->last_failure_streak = h->failures;
        if (h->state != VEER_HEALTH_UNHEALTHY && h->failures >= hc->cfg.unhealthy_threshold)
            h->state = VEER_HEALTH_UNHEALTHY;
    }
    bool changed = h->state != from;
    if (changed && hc->on_event) {
        veer_health_event_t ev = {.endpoint_id = h->id, .from = from, .to = h->state, .routable = host_routable(hc, h)};
        char last[64];
        describe_last(h, last, sizeof last);
        if (passed)
            snprintf(ev.detail, sizeof ev.detail, "%" PRIu32 " passed check%s in a row (status %d)", h->passes,
                     h->passes == 1 ? "" : "s", status);
        else
            snprintf(ev.detail, sizeof ev.detail, "%" PRIu32 " failed check%s in a row (last: %s)", h->failures,
                     h->failures == 1 ? "" : "s", last);
        hc->on_event(hc->event_arg, &ev);
    }
    if (out)
        *out = (veer_health_result_t){
            .passed = passed,
            .changed = changed,
            .state = h->state,
            .routable = host_routable(hc, h),
            .probe_started_ms = started,
        };
}

size_t veer_health_poll(veer_health_t *hc, uint64_t now_ms, uint32_t *due, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < hc->host_count; i++) {
        host_t *h = &hc->hosts[i];
        if (h->in_flight && h->deadline_ms <= now_ms)
            record(hc, h, false, 0, VEER_HEALTH_FAIL_TIMEOUT, NULL, now_ms, NULL);
        if (!h->in_flight && h->next_probe_ms <= now_ms && n < cap) {
            h->in_flight = true;
            h->probe_started_ms = now_ms;
            h->deadline_ms = now_ms + hc->cfg.timeout_ms;
            due[n++] = h->id;
        }
    }
    return n;
}

uint64_t veer_health_next_wakeup(const veer_health_t *hc)
{
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < hc->host_count; i++) {
        const host_t *h = &hc->hosts[i];
        uint64_t t = h->in_flight ? h->deadline_ms : h->next_probe_ms;
        if (t < next)
            next = t;
    }
    return next;
}

int veer_health_on_response(veer_health_t *hc, uint32_t endpoint_id, int status, uint64_t now_ms,
                            veer_health_result_t *out)
{
    host_t *h = find_host(hc, endpoint_id);
    if (!h || !h->in_flight)
        return -ENOENT;
    bool passed = veer_health_status_expected(hc->cfg.expected_statuses, hc->cfg.expected_status_count, status);
    record(hc, h, passed, status, VEER_HEALTH_FAIL_STATUS, NULL, now_ms, out);
    return 0;
}

int veer_health_on_failure(veer_health_t *hc, uint32_t endpoint_id, veer_health_failure_t failure, uint64_t now_ms,
                           veer_health_result_t *out)
{
    return veer_health_on_failure_reason(hc, endpoint_id, failure, NULL, now_ms, out);
}

int veer_health_on_failure_reason(veer_health_t *hc, uint32_t endpoint_id, veer_health_failure_t failure,
                                  const char *reason, uint64_t now_ms, veer_health_result_t *out)
{
    host_t *h = find_host(hc, endpoint_id);
    if (!h || !h->in_flight)
        return -ENOENT;
    record(hc, h, false, 0, failure, reason, now_ms, out);
    return 0;
}

bool veer_health_routable(const veer_health_t *hc, uint32_t endpoint_id)
{
    const host_t *h = find_host(hc, endpoint_id);
    return h && host_routable(hc, h);
}

veer_health_state_t veer_health_state(const veer_health_t *hc, uint32_t endpoint_id)
{
    const host_t *h = find_host(hc, endpoint_id);
    return h ? h->state : VEER_HEALTH_UNKNOWN;
}

int veer_health_host_info(const veer_health_t *hc, uint32_t endpoint_id, veer_health_host_info_t *out)
{
    const host_t *h = find_host(hc, endpoint_id);
    if (!h)
        return -ENOENT;
    *out = (veer_health_host_info_t){
        .state = h->state,
        .routable = host_routable(hc, h),
        .probe_in_flight = h->in_flight,
        .passes_in_a_row = h->passes,
        .failures_in_a_row = h->failures,
        .last_status = h->last_status,
        .last_failure = h->last_failure,
        .last_check_ms = h->last_check_ms,
        .next_probe_ms = h->next_probe_ms,
        .checks_total = h->checks_total,
        .failures_total = h->failures_total,
        .last_failure_ms = h->last_failure_ms,
        .last_failure_streak = h->last_failure_streak,
    };
    memcpy(out->last_failure_reason, h->last_reason, sizeof out->last_failure_reason);
    return 0;
}
