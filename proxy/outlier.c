/* outlier.c - per-cluster passive outlier detection (see outlier.h): host
 * state sorted by endpoint id, consecutive-failure ejection on each result,
 * the interval analyses and un-ejection in veer_outlier_tick, and the
 * lock-free queue that carries results from the workers to the owner. */

#include "outlier.h"
#include "hostset.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct host_s {
    uint32_t id;
    veer_outlier_health_t health;
    bool ejected;
    bool blocked;  /* this failure streak hit max_ejection_percent (reported once) */
    veer_outlier_reason_t reason;
    uint32_t consecutive_5xx, consecutive_gateway, consecutive_local_origin;
    uint32_t ejection_count; /* multiplier of base_ejection_time; decays while the host is in */
    uint64_t ejections_total;
    uint64_t ejected_at_ms, until_ms, unejected_at_ms;
    /* the interval under way */
    uint64_t requests, failures;
    uint64_t latency_samples, latency_over, latency_max_us; /* over: slower than latency_p99_max */
} host_t;

/* A host considered by an interval analysis, with its rate. */
typedef struct candidate_s {
    host_t *host;
    double value;
} candidate_t;

typedef enum { EJECT_DONE, EJECT_BLOCKED, EJECT_NOT_ENFORCED, EJECT_ALREADY } eject_outcome_t;

struct veer_outlier_s {
    veer_outlier_config_t cfg;
    bool enabled; /* cfg holds a config: passive detection runs */
    uint32_t panic_threshold;
    bool hosts_start_pending;
    uint64_t rng;
    veer_outlier_event_cb on_event;
    void *event_arg;
    host_t *hosts; /* sorted by id */
    candidate_t *scratch; /* [host_count], for the analyses */
    size_t host_count;
    uint32_t ejected_count;
    bool panic;
    uint64_t next_analysis_ms;
    veer_outlier_stats_t stats; /* the counters; the gauges are computed when read */
};

static const char *const reason_names[VEER_OUTLIER_REASON_COUNT] = {
    "consecutive_5xx", "gateway", "local_origin", "success_rate", "failure_percentage", "latency",
};

const char *veer_outlier_reason_name(veer_outlier_reason_t reason)
{
    return (unsigned)reason < VEER_OUTLIER_REASON_COUNT ? reason_names[reason] : "unknown";
}

const char *veer_outlier_result_name(veer_outlier_result_t result)
{
    switch (result) {
    case VEER_OUTLIER_SUCCESS: return "success";
    case VEER_OUTLIER_5XX: return "5xx";
    case VEER_OUTLIER_GATEWAY: return "gateway error";
    case VEER_OUTLIER_CONNECT_FAILURE: return "connect failure";
    case VEER_OUTLIER_TIMEOUT: return "timeout";
    case VEER_OUTLIER_RESET: return "reset";
    }
    return "unknown";
}

veer_outlier_result_t veer_outlier_result_from_status(int status)
{
    if (status == 502 || status == 503 || status == 504)
        return VEER_OUTLIER_GATEWAY;
    return status >= 500 && status <= 599 ? VEER_OUTLIER_5XX : VEER_OUTLIER_SUCCESS;
}

_Static_assert(offsetof(host_t, id) == 0, "hostset.h finds hosts by a leading id");

static uint64_t next_random(veer_outlier_t *det)
{
    return veer_hostset_random(&det->rng);
}

static host_t *find_host(const veer_outlier_t *det, uint32_t id)
{
    return veer_hostset_find(det->hosts, det->host_count, sizeof *det->hosts, id);
}

static uint32_t healthy_count(const veer_outlier_t *det)
{
    uint32_t healthy = 0;
    for (size_t i = 0; i < det->host_count; i++)
        healthy += !det->hosts[i].ejected && det->hosts[i].health == VEER_OUTLIER_HEALTH_OK;
    return healthy;
}

__attribute__((format(printf, 5, 6)))
static void emit(veer_outlier_t *det, veer_outlier_event_kind_t kind, const host_t *h, veer_outlier_reason_t reason,
                 const char *fmt, ...)
{
    if (!det->on_event)
        return;
    veer_outlier_event_t ev = {
        .kind = kind,
        .endpoint_id = h ? h->id : 0,
        .reason = reason,
        .ejection_count = h ? h->ejection_count : 0,
        .until_ms = h && h->ejected ? h->until_ms : 0,
        .healthy_hosts = healthy_count(det),
        .ejected_hosts = det->ejected_count,
        .total_hosts = (uint32_t)det->host_count,
    };
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev.detail, sizeof ev.detail, fmt, ap);
    va_end(ap);
    det->on_event(det->event_arg, &ev);
}

/* Envoy's panic rule: fewer healthy hosts than panic_threshold percent of all. */
static void update_panic(veer_outlier_t *det)
{
    uint32_t healthy = healthy_count(det);
    bool panic = det->host_count > 0 && (uint64_t)healthy * 100 < (uint64_t)det->panic_threshold * det->host_count;
    if (panic == det->panic)
        return;
    det->panic = panic;
    emit(det, panic ? VEER_OUTLIER_EV_PANIC_ON : VEER_OUTLIER_EV_PANIC_OFF, NULL, VEER_OUTLIER_REASON_COUNT,
         "%" PRIu32 " of %zu hosts healthy, panic threshold %" PRIu32 "%%%s", healthy, det->host_count,
         det->panic_threshold, panic ? ": routing to all hosts" : "");
}

static bool enforced(veer_outlier_t *det, uint32_t percent)
{
    if (percent >= 100)
        return true;
    return percent > 0 && next_random(det) % 100 < percent;
}

/* max_ejection_percent caps the hosts out at once, but never blocks the
 * first ejection: Envoy's rule ejects nothing in pools under 10 hosts at its
 * default of 10% (envoy issue 34666), and a canary is often a single pod. */
static bool ejection_allowed(const veer_outlier_t *det)
{
    uint64_t max_percent = det->cfg.max_ejection_percent;
    if (max_percent == 0)
        return false;
    if (det->ejected_count == 0)
        return true;
    return ((uint64_t)det->ejected_count + 1) * 100 <= max_percent * det->host_count;
}

static uint64_t ejection_time_ms(veer_outlier_t *det, uint32_t count)
{
    uint64_t base = det->cfg.base_ejection_time_ms, max = det->cfg.max_ejection_time_ms;
    uint64_t duration = base * count;
    if (duration > max || (base && duration / base != count))
        duration = max < base ? base : max;
    if (det->cfg.max_ejection_time_jitter_ms)
        duration += next_random(det) % (det->cfg.max_ejection_time_jitter_ms + 1);
    return duration;
}

/* The count beyond which ejections are no longer longer: ceil(max / base). */
static uint32_t max_ejection_count(const veer_outlier_t *det)
{
    uint64_t base = det->cfg.base_ejection_time_ms ? det->cfg.base_ejection_time_ms : 1;
    uint64_t count = (det->cfg.max_ejection_time_ms + base - 1) / base;
    return count < 1 ? 1 : count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
}

static void reset_consecutive(host_t *h)
{
    h->consecutive_5xx = h->consecutive_gateway = h->consecutive_local_origin = 0;
    h->blocked = false;
}

static eject_outcome_t try_eject(veer_outlier_t *det, host_t *h, veer_outlier_reason_t reason, uint32_t enforcing,
                                 uint64_t now_ms, const char *detail)
{
    if (h->ejected)
        return EJECT_ALREADY;
    if (!enforced(det, enforcing)) {
        det->stats.ejections_not_enforced[reason]++;
        emit(det, VEER_OUTLIER_EV_NOT_ENFORCED, h, reason, "%s (not enforced: enforcing %" PRIu32 "%%)", detail,
             enforcing);
        return EJECT_NOT_ENFORCED;
    }
    if (!ejection_allowed(det)) {
        det->stats.ejections_blocked++;
        if (!h->blocked)
            emit(det, VEER_OUTLIER_EV_EJECT_BLOCKED, h, reason, "%s (not ejected: %" PRIu32 " of %zu hosts out, "
                 "max_ejection_percent %" PRIu32 ")", detail, det->ejected_count, det->host_count,
                 det->cfg.max_ejection_percent);
        h->blocked = true;
        return EJECT_BLOCKED;
    }
    if (h->ejection_count < max_ejection_count(det))
        h->ejection_count++;
    uint64_t duration = ejection_time_ms(det, h->ejection_count);
    h->ejected = true;
    h->reason = reason;
    h->ejected_at_ms = now_ms;
    h->until_ms = now_ms + duration;
    h->ejections_total++;
    reset_consecutive(h);
    det->ejected_count++;
    det->stats.ejections_total[reason]++;
    emit(det, VEER_OUTLIER_EV_EJECT, h, reason, "%s; ejected for %" PRIu64 "ms (ejection %" PRIu32 ")", detail,
         duration, h->ejection_count);
    update_panic(det);
    return EJECT_DONE;
}

static void uneject(veer_outlier_t *det, host_t *h, uint64_t now_ms, bool by_health_check)
{
    h->ejected = false;
    h->unejected_at_ms = now_ms;
    reset_consecutive(h);
    det->ejected_count--;
    if (det->on_event) {
        veer_outlier_event_t ev = {
            .kind = VEER_OUTLIER_EV_UNEJECT,
            .endpoint_id = h->id,
            .reason = h->reason,
            .ejection_count = h->ejection_count,
            .by_health_check = by_health_check,
            .healthy_hosts = healthy_count(det),
            .ejected_hosts = det->ejected_count,
            .total_hosts = (uint32_t)det->host_count,
        };
        snprintf(ev.detail, sizeof ev.detail, "back after %s ejection: %s", veer_outlier_reason_name(h->reason),
                 by_health_check ? "passed an active health check" : "ejection time is up");
        det->on_event(det->event_arg, &ev);
    }
    update_panic(det);
}

/* ---- lifetime and host set ------------------------------------------------ */

static void apply_options(veer_outlier_t *det, const veer_outlier_options_t *opts)
{
    det->enabled = opts->config != NULL;
    if (opts->config)
        det->cfg = *opts->config;
    else
        memset(&det->cfg, 0, sizeof det->cfg);
    if (det->enabled && det->cfg.interval_ms == 0)
        det->cfg.interval_ms = 1;
    det->panic_threshold = opts->panic_threshold > 100 ? 100 : opts->panic_threshold;
    det->hosts_start_pending = opts->hosts_start_pending;
    det->on_event = opts->on_event;
    det->event_arg = opts->event_arg;
}

veer_outlier_t *veer_outlier_new(const veer_outlier_options_t *opts, uint64_t now_ms)
{
    veer_outlier_t *det = calloc(1, sizeof *det);
    if (!det)
        return NULL;
    apply_options(det, opts);
    det->rng = opts->seed;
    det->next_analysis_ms = det->enabled ? now_ms + det->cfg.interval_ms : UINT64_MAX;
    return det;
}

void veer_outlier_free(veer_outlier_t *det)
{
    if (!det)
        return;
    free(det->hosts);
    free(det->scratch);
    free(det);
}

void veer_outlier_reconfigure(veer_outlier_t *det, const veer_outlier_options_t *opts, uint64_t now_ms)
{
    bool was_enabled = det->enabled;
    apply_options(det, opts);
    if (!det->enabled) {
        det->next_analysis_ms = UINT64_MAX;
        for (size_t i = 0; i < det->host_count; i++)
            if (det->hosts[i].ejected)
                uneject(det, &det->hosts[i], now_ms, false);
    } else if (!was_enabled || det->next_analysis_ms > now_ms + det->cfg.interval_ms) {
        det->next_analysis_ms = now_ms + det->cfg.interval_ms;
    }
    update_panic(det);
}

int veer_outlier_sync(veer_outlier_t *det, const uint32_t *ids, size_t count, uint64_t now_ms)
{
    uint32_t *sorted;
    int rc = veer_hostset_sorted_ids(ids, count, VEER_OUTLIER_MAX_HOSTS, &sorted);
    if (rc)
        return rc;
    size_t alloc = count ? count : 1;
    host_t *hosts = calloc(alloc, sizeof *hosts);
    candidate_t *scratch = calloc(alloc, sizeof *scratch);
    if (!hosts || !scratch) {
        free(sorted);
        free(hosts);
        free(scratch);
        return -ENOMEM;
    }
    uint32_t ejected = 0;
    for (size_t i = 0; i < count; i++) {
        const host_t *old = find_host(det, sorted[i]);
        if (old) {
            hosts[i] = *old;
        } else {
            hosts[i].id = sorted[i];
            hosts[i].health = det->hosts_start_pending ? VEER_OUTLIER_HEALTH_PENDING : VEER_OUTLIER_HEALTH_OK;
            hosts[i].unejected_at_ms = now_ms;
        }
        ejected += hosts[i].ejected;
    }
    free(sorted);
    free(det->hosts);
    free(det->scratch);
    det->hosts = hosts;
    det->scratch = scratch;
    det->host_count = count;
    det->ejected_count = ejected;
    update_panic(det);
    return 0;
}

/* ---- results ---------------------------------------------------------------- */

/* One ejection attempt per threshold crossing (one enforcing draw per
 * streak); a streak blocked by max_ejection_percent tries again on each
 * further failure, so the host goes out as soon as there is room. */
static eject_outcome_t check_consecutive(veer_outlier_t *det, host_t *h, uint32_t count, uint32_t threshold,
                                         uint32_t enforcing, veer_outlier_reason_t reason, const char *what,
                                         veer_outlier_result_t last, uint64_t now_ms)
{
    if (threshold == 0 || enforcing == 0 || count < threshold || (count > threshold && !h->blocked))
        return EJECT_ALREADY;
    char detail[128];
    snprintf(detail, sizeof detail, "%" PRIu32 " consecutive %s (last: %s)", count, what,
             veer_outlier_result_name(last));
    return try_eject(det, h, reason, enforcing, now_ms, detail);
}

int veer_outlier_on_result(veer_outlier_t *det, uint32_t endpoint_id, veer_outlier_result_t result,
                           uint64_t latency_us, uint64_t now_ms)
{
    host_t *h = find_host(det, endpoint_id);
    if (!h) {
        det->stats.unknown_host_results++;
        return -ENOENT;
    }
    bool local_origin = result == VEER_OUTLIER_CONNECT_FAILURE || result == VEER_OUTLIER_TIMEOUT ||
                        result == VEER_OUTLIER_RESET;
    bool gateway = result == VEER_OUTLIER_GATEWAY || local_origin;
    h->requests++;
    h->failures += result != VEER_OUTLIER_SUCCESS;
    /* a connect failure says nothing about how fast the endpoint answers */
    if (det->enabled && det->cfg.latency_p99_max_ms && result != VEER_OUTLIER_CONNECT_FAILURE) {
        h->latency_samples++;
        h->latency_over += latency_us > det->cfg.latency_p99_max_ms * 1000;
        if (latency_us > h->latency_max_us)
            h->latency_max_us = latency_us;
    }
    if (!det->enabled || h->ejected)
        return 0;
    if (result == VEER_OUTLIER_SUCCESS) {
        reset_consecutive(h);
        return 0;
    }
    /* As in Envoy without split_external_local_origin_errors, a local-origin
     * failure also counts as a gateway failure and a 5xx; any response proves
     * the endpoint reachable, and a non-gateway response breaks the gateway streak. */
    h->consecutive_5xx++;
    h->consecutive_gateway = gateway ? h->consecutive_gateway + 1 : 0;
    h->consecutive_local_origin = local_origin ? h->consecutive_local_origin + 1 : 0;
    const veer_outlier_config_t *cfg = &det->cfg;
    eject_outcome_t outcome = EJECT_ALREADY;
    if (local_origin)
        outcome = check_consecutive(det, h, h->consecutive_local_origin, cfg->consecutive_local_origin_failure,
                                    cfg->enforcing_consecutive_local_origin_failure, VEER_OUTLIER_REASON_LOCAL_ORIGIN,
                                    "local-origin failures", result, now_ms);
    if (gateway && (outcome == EJECT_ALREADY || outcome == EJECT_NOT_ENFORCED))
        outcome = check_consecutive(det, h, h->consecutive_gateway, cfg->consecutive_gateway_failure,
                                    cfg->enforcing_consecutive_gateway_failure, VEER_OUTLIER_REASON_GATEWAY,
                                    "gateway failures", result, now_ms);
    if (outcome == EJECT_ALREADY || outcome == EJECT_NOT_ENFORCED)
        check_consecutive(det, h, h->consecutive_5xx, cfg->consecutive_5xx, cfg->enforcing_consecutive_5xx,
                          VEER_OUTLIER_REASON_CONSECUTIVE_5XX, "5xx", result, now_ms);
    return 0;
}

int veer_outlier_on_health_pass(veer_outlier_t *det, uint32_t endpoint_id, uint64_t probe_started_ms,
                                uint64_t now_ms)
{
    host_t *h = find_host(det, endpoint_id);
    if (!h)
        return -ENOENT;
    /* a probe sent before the ejection says nothing about what caused it */
    if (h->ejected && det->cfg.successful_active_health_check_uneject_host && probe_started_ms >= h->ejected_at_ms)
        uneject(det, h, now_ms, true);
    return 0;
}

int veer_outlier_set_health(veer_outlier_t *det, uint32_t endpoint_id, veer_outlier_health_t health)
{
    host_t *h = find_host(det, endpoint_id);
    if (!h)
        return -ENOENT;
    h->health = health;
    update_panic(det);
    return 0;
}

/* ---- interval analyses ----------------------------------------------------- */

static int by_value_ascending(const void *a, const void *b)
{
    double x = ((const candidate_t *)a)->value, y = ((const candidate_t *)b)->value;
    return (x > y) - (x < y);
}

static int by_value_descending(const void *a, const void *b)
{
    return by_value_ascending(b, a);
}

/* Hosts with enough requests; each below mean - stdev_factor x stdev of their
 * success rates is ejected, worst first. Ejected hosts are left out: they are
 * known bad, and would lower the mean and hide the next bad host. */
static void analyse_success_rate(veer_outlier_t *det, uint64_t now_ms)
{
    const veer_outlier_config_t *cfg = &det->cfg;
    if (cfg->enforcing_success_rate == 0)
        return;
    size_t n = 0;
    double sum = 0;
    for (size_t i = 0; i < det->host_count; i++) {
        host_t *h = &det->hosts[i];
        if (h->ejected || h->requests == 0 || h->requests < cfg->success_rate_request_volume)
            continue;
        double rate = 100.0 * (double)(h->requests - h->failures) / (double)h->requests;
        det->scratch[n++] = (candidate_t){h, rate};
        sum += rate;
    }
    if (n == 0 || n < cfg->success_rate_minimum_hosts)
        return;
    double mean = sum / (double)n, variance = 0;
    for (size_t i = 0; i < n; i++)
        variance += (det->scratch[i].value - mean) * (det->scratch[i].value - mean);
    double stdev = sqrt(variance / (double)n);
    double threshold = mean - cfg->success_rate_stdev_factor * stdev;
    qsort(det->scratch, n, sizeof *det->scratch, by_value_ascending);
    for (size_t i = 0; i < n; i++) {
        /* the margin keeps rounding from ejecting hosts equal to the mean */
        if (det->scratch[i].value >= threshold - 1e-9)
            break;
        char detail[128];
        snprintf(detail, sizeof detail, "success rate %.1f%% < threshold %.1f%% (mean %.1f%%, stdev %.1f, %zu hosts)",
                 det->scratch[i].value, threshold, mean, stdev, n);
        if (try_eject(det, det->scratch[i].host, VEER_OUTLIER_REASON_SUCCESS_RATE, cfg->enforcing_success_rate,
                      now_ms, detail) == EJECT_BLOCKED)
            break;
    }
}

static void analyse_failure_percentage(veer_outlier_t *det, uint64_t now_ms)
{
    const veer_outlier_config_t *cfg = &det->cfg;
    if (cfg->enforcing_failure_percentage == 0)
        return;
    size_t n = 0;
    for (size_t i = 0; i < det->host_count; i++) {
        host_t *h = &det->hosts[i];
        if (h->ejected || h->requests == 0 || h->requests < cfg->failure_percentage_request_volume)
            continue;
        det->scratch[n++] = (candidate_t){h, 100.0 * (double)h->failures / (double)h->requests};
    }
    if (n == 0 || n < cfg->failure_percentage_minimum_hosts)
        return;
    qsort(det->scratch, n, sizeof *det->scratch, by_value_descending);
    for (size_t i = 0; i < n; i++) {
        if (det->scratch[i].value < (double)cfg->failure_percentage_threshold)
            break;
        char detail[128];
        snprintf(detail, sizeof detail, "failure percentage %.1f%% >= %" PRIu32 "%% (%" PRIu64 " requests)",
                 det->scratch[i].value, cfg->failure_percentage_threshold, det->scratch[i].host->requests);
        if (try_eject(det, det->scratch[i].host, VEER_OUTLIER_REASON_FAILURE_PERCENTAGE,
                      cfg->enforcing_failure_percentage, now_ms, detail) == EJECT_BLOCKED)
            break;
    }
}

/* P99 over the interval without keeping samples: with n samples, the
 * nearest-rank P99 is the ceil(0.99 n)-th smallest, so it exceeds the limit
 * exactly when at least n - ceil(0.99 n) + 1 samples do. Counting those is
 * exact and takes two counters per host. */
static void analyse_latency(veer_outlier_t *det, uint64_t now_ms)
{
    const veer_outlier_config_t *cfg = &det->cfg;
    if (cfg->latency_p99_max_ms == 0)
        return;
    size_t n = 0;
    for (size_t i = 0; i < det->host_count; i++) {
        host_t *h = &det->hosts[i];
        uint64_t samples = h->latency_samples;
        if (h->ejected || samples == 0 || samples < cfg->latency_request_volume)
            continue;
        uint64_t rank = (99 * samples + 99) / 100;
        if (h->latency_over >= samples - rank + 1)
            det->scratch[n++] = (candidate_t){h, (double)h->latency_over / (double)samples};
    }
    qsort(det->scratch, n, sizeof *det->scratch, by_value_descending);
    for (size_t i = 0; i < n; i++) {
        const host_t *h = det->scratch[i].host;
        char detail[128];
        snprintf(detail, sizeof detail, "p99 latency over %" PRIu64 "ms: %" PRIu64 " of %" PRIu64
                 " requests slower (slowest %.3fs)", cfg->latency_p99_max_ms, h->latency_over, h->latency_samples,
                 (double)h->latency_max_us / 1e6);
        if (try_eject(det, det->scratch[i].host, VEER_OUTLIER_REASON_LATENCY, 100, now_ms, detail) == EJECT_BLOCKED)
            break;
    }
}

static void end_interval(veer_outlier_t *det, uint64_t now_ms)
{
    for (size_t i = 0; i < det->host_count; i++) {
        host_t *h = &det->hosts[i];
        h->requests = h->failures = 0;
        h->latency_samples = h->latency_over = h->latency_max_us = 0;
        /* one step per interval spent wholly in service */
        if (!h->ejected && h->ejection_count > 0 && now_ms - h->unejected_at_ms >= det->cfg.interval_ms)
            h->ejection_count--;
    }
}

uint64_t veer_outlier_tick(veer_outlier_t *det, uint64_t now_ms)
{
    for (size_t i = 0; i < det->host_count; i++)
        if (det->hosts[i].ejected && det->hosts[i].until_ms <= now_ms)
            uneject(det, &det->hosts[i], now_ms, false);
    if (det->enabled && now_ms >= det->next_analysis_ms) {
        analyse_success_rate(det, now_ms);
        analyse_failure_percentage(det, now_ms);
        analyse_latency(det, now_ms);
        end_interval(det, now_ms);
        det->next_analysis_ms += det->cfg.interval_ms;
        if (det->next_analysis_ms <= now_ms)
            det->next_analysis_ms = now_ms + det->cfg.interval_ms;
    }
    uint64_t next = det->next_analysis_ms;
    for (size_t i = 0; i < det->host_count; i++)
        if (det->hosts[i].ejected && det->hosts[i].until_ms < next)
            next = det->hosts[i].until_ms;
    return next;
}

/* ---- views ------------------------------------------------------------------- */

static bool host_routable(const veer_outlier_t *det, const host_t *h)
{
    if (h->health == VEER_OUTLIER_HEALTH_PENDING)
        return false;
    return det->panic || (!h->ejected && h->health == VEER_OUTLIER_HEALTH_OK);
}

bool veer_outlier_routable(const veer_outlier_t *det, uint32_t endpoint_id)
{
    const host_t *h = find_host(det, endpoint_id);
    return h && host_routable(det, h);
}

bool veer_outlier_panic(const veer_outlier_t *det)
{
    return det->panic;
}

int veer_outlier_host_info(const veer_outlier_t *det, uint32_t endpoint_id, veer_outlier_host_info_t *out)
{
    const host_t *h = find_host(det, endpoint_id);
    if (!h)
        return -ENOENT;
    *out = (veer_outlier_host_info_t){
        .ejected = h->ejected,
        .routable = host_routable(det, h),
        .reason = h->reason,
        .ejected_until_ms = h->ejected ? h->until_ms : 0,
        .ejection_count = h->ejection_count,
        .ejections_total = h->ejections_total,
        .health = h->health,
        .consecutive_5xx = h->consecutive_5xx,
        .consecutive_gateway_failure = h->consecutive_gateway,
        .consecutive_local_origin_failure = h->consecutive_local_origin,
        .interval_requests = h->requests,
        .interval_failures = h->failures,
    };
    return 0;
}

void veer_outlier_stats(const veer_outlier_t *det, veer_outlier_stats_t *out)
{
    *out = det->stats;
    out->total_hosts = (uint32_t)det->host_count;
    out->healthy_hosts = healthy_count(det);
    out->ejected_hosts = det->ejected_count;
    out->panic = det->panic;
}

/* ---- the worker -> owner queue ---------------------------------------------
 * Lamport's single-producer single-consumer ring: the producer owns tail, the
 * consumer owns head, each publishes its index with release order after
 * touching the slots, so a slot is never read before it is written. */

#define QUEUE_MAX_CAPACITY (1u << 24)

struct veer_outlier_queue_s {
    _Alignas(64) atomic_uint_fast64_t head;
    _Alignas(64) atomic_uint_fast64_t tail;
    _Alignas(64) atomic_uint_fast64_t dropped;
    uint64_t mask;
    veer_outlier_sample_t *slots;
};

veer_outlier_queue_t *veer_outlier_queue_new(uint32_t capacity)
{
    uint64_t size = 2;
    while (size < capacity && size < QUEUE_MAX_CAPACITY)
        size <<= 1;
    veer_outlier_queue_t *q = NULL;
    if (posix_memalign((void **)&q, 64, sizeof *q) != 0)
        return NULL;
    memset(q, 0, sizeof *q);
    q->slots = calloc(size, sizeof *q->slots);
    if (!q->slots) {
        free(q);
        return NULL;
    }
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
    atomic_init(&q->dropped, 0);
    q->mask = size - 1;
    return q;
}

void veer_outlier_queue_free(veer_outlier_queue_t *q)
{
    if (!q)
        return;
    free(q->slots);
    free(q);
}

bool veer_outlier_queue_push(veer_outlier_queue_t *q, const veer_outlier_sample_t *sample)
{
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail - head > q->mask) {
        atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
        return false;
    }
    q->slots[tail & q->mask] = *sample;
    atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
    return true;
}

size_t veer_outlier_queue_pop(veer_outlier_queue_t *q, veer_outlier_sample_t *out, size_t max)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    size_t n = 0;
    for (; head != tail && n < max; head++, n++)
        out[n] = q->slots[head & q->mask];
    atomic_store_explicit(&q->head, head, memory_order_release);
    return n;
}

uint64_t veer_outlier_queue_dropped(const veer_outlier_queue_t *q)
{
    return atomic_load_explicit(&((veer_outlier_queue_t *)q)->dropped, memory_order_relaxed);
}
