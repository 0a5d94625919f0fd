/* test_health.c - the active health-check state machine with a fake clock:
 * thresholds flip the state at exactly N, a host is not routable before its
 * first pass (require_initial_pass), timeouts are failures, expected status
 * ranges, the jittered schedule (bounded, spread, deterministic per seed),
 * host set changes, and the last failure kept for /v1/status. */
#include "health.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

typedef struct recorder_s {
    veer_health_event_t events[64];
    size_t count;
} recorder_t;

static void record_event(void *arg, const veer_health_event_t *ev)
{
    recorder_t *r = arg;
    if (r->count < 64)
        r->events[r->count++] = *ev;
}

static veer_health_check_config_t config(void)
{
    veer_health_check_config_t cfg = {
        .path = "/health",
        .interval_ms = 5000,
        .timeout_ms = 1000,
        .healthy_threshold = 2,
        .unhealthy_threshold = 3,
        .jitter_ms = 0,
        .expected_statuses = {{200, 399}},
        .expected_status_count = 1,
        .require_initial_pass = true,
    };
    return cfg;
}

static veer_health_t *checker(const veer_health_check_config_t *cfg, uint32_t n, recorder_t *rec)
{
    veer_health_t *hc = veer_health_new(cfg, 7, record_event, rec);
    uint32_t ids[64];
    for (uint32_t i = 0; i < n; i++)
        ids[i] = i + 1;
    CHECK(hc && veer_health_sync(hc, ids, n, 0) == 0);
    return hc;
}

/* Start host id's probe at now (it must be due) and report status. */
static veer_health_result_t probe(veer_health_t *hc, uint32_t id, int status, uint64_t now)
{
    uint32_t due[64];
    size_t n = veer_health_poll(hc, now, due, 64);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= due[i] == id;
    CHECK(found);
    veer_health_result_t r;
    memset(&r, 0, sizeof r);
    CHECK(veer_health_on_response(hc, id, status, now, &r) == 0);
    /* answer the others that were started, so they stay on schedule */
    for (size_t i = 0; i < n; i++)
        if (due[i] != id)
            veer_health_on_response(hc, due[i], 200, now, NULL);
    return r;
}

static void test_thresholds(void)
{
    recorder_t rec = {0};
    veer_health_check_config_t cfg = config();
    veer_health_t *hc = checker(&cfg, 1, &rec);
    CHECK(veer_health_state(hc, 1) == VEER_HEALTH_UNKNOWN && !veer_health_routable(hc, 1));
    /* one pass is enough the first time */
    veer_health_result_t r = probe(hc, 1, 200, 0);
    CHECK(r.passed && r.changed && r.state == VEER_HEALTH_HEALTHY && r.routable && r.probe_started_ms == 0);
    CHECK(rec.count == 1 && rec.events[0].from == VEER_HEALTH_UNKNOWN && rec.events[0].to == VEER_HEALTH_HEALTHY);
    uint64_t t = 5000;
    /* unhealthy at exactly the third failure in a row */
    r = probe(hc, 1, 503, t);
    CHECK(!r.passed && !r.changed && r.routable);
    t += 5000;
    r = probe(hc, 1, 500, t);
    CHECK(!r.changed && r.state == VEER_HEALTH_HEALTHY);
    t += 5000;
    r = probe(hc, 1, 404, t);
    CHECK(r.changed && r.state == VEER_HEALTH_UNHEALTHY && !r.routable);
    CHECK(rec.count == 2 && strcmp(rec.events[1].detail, "3 failed checks in a row (last: status 404)") == 0);
    /* healthy again at exactly the second pass in a row */
    t += 5000;
    r = probe(hc, 1, 200, t);
    CHECK(r.passed && !r.changed && !r.routable);
    t += 5000;
    r = probe(hc, 1, 503, t); /* breaks the run */
    t += 5000;
    r = probe(hc, 1, 200, t);
    CHECK(!r.changed && !veer_health_routable(hc, 1));
    t += 5000;
    r = probe(hc, 1, 204, t);
    CHECK(r.changed && r.state == VEER_HEALTH_HEALTHY && r.routable);
    veer_health_host_info_t info;
    CHECK(veer_health_host_info(hc, 1, &info) == 0);
    CHECK(info.passes_in_a_row == 2 && info.failures_in_a_row == 0 && info.last_status == 204);
    CHECK(info.checks_total == 8 && info.failures_total == 4 && info.last_check_ms == t);
    veer_health_free(hc);
}

static void test_initial_state(void)
{
    recorder_t rec = {0};
    veer_health_check_config_t cfg = config();
    veer_health_t *hc = checker(&cfg, 2, &rec);
    /* failures before any pass: unknown, then unhealthy at the threshold */
    probe(hc, 1, 503, 0);
    CHECK(veer_health_state(hc, 1) == VEER_HEALTH_UNKNOWN && !veer_health_routable(hc, 1));
    probe(hc, 1, 503, 5000);
    veer_health_result_t r = probe(hc, 1, 503, 10000);
    CHECK(r.changed && r.state == VEER_HEALTH_UNHEALTHY);
    /* a host that never passed needs only one pass */
    r = probe(hc, 1, 200, 15000);
    CHECK(r.changed && r.state == VEER_HEALTH_HEALTHY);
    veer_health_free(hc);

    /* without require_initial_pass an unchecked host takes traffic at once */
    cfg.require_initial_pass = false;
    hc = checker(&cfg, 1, &rec);
    CHECK(veer_health_routable(hc, 1));
    probe(hc, 1, 503, 0);
    probe(hc, 1, 503, 5000);
    CHECK(veer_health_routable(hc, 1));
    r = probe(hc, 1, 503, 10000);
    CHECK(!r.routable && !veer_health_routable(hc, 1));
    CHECK(!veer_health_routable(hc, 42) && veer_health_state(hc, 42) == VEER_HEALTH_UNKNOWN);
    veer_health_free(hc);
}

static void test_timeouts_and_failures(void)
{
    recorder_t rec = {0};
    veer_health_check_config_t cfg = config();
    cfg.unhealthy_threshold = 2;
    veer_health_t *hc = checker(&cfg, 1, &rec);
    probe(hc, 1, 200, 0);
    uint32_t due[4];
    CHECK(veer_health_poll(hc, 4999, due, 4) == 0);
    CHECK(veer_health_next_wakeup(hc) == 5000);
    CHECK(veer_health_poll(hc, 5000, due, 4) == 1 && due[0] == 1);
    CHECK(veer_health_next_wakeup(hc) == 6000); /* the probe's deadline */
    CHECK(veer_health_poll(hc, 5999, due, 4) == 0);
    CHECK(veer_health_poll(hc, 6000, due, 4) == 0); /* timed out: a failure, next probe later */
    veer_health_host_info_t info;
    veer_health_host_info(hc, 1, &info);
    CHECK(info.failures_in_a_row == 1 && info.last_failure == VEER_HEALTH_FAIL_TIMEOUT && !info.probe_in_flight);
    CHECK(info.next_probe_ms == 11000);
    /* the late answer to the abandoned probe is ignored */
    CHECK(veer_health_on_response(hc, 1, 200, 6500, NULL) == -ENOENT);
    CHECK(veer_health_poll(hc, 11000, due, 4) == 1);
    veer_health_result_t r;
    CHECK(veer_health_on_failure(hc, 1, VEER_HEALTH_FAIL_CONNECT, 11002, &r) == 0);
    CHECK(r.changed && r.state == VEER_HEALTH_UNHEALTHY && r.probe_started_ms == 11000);
    CHECK(rec.count == 2 && strcmp(rec.events[1].detail, "2 failed checks in a row (last: connect failure)") == 0);
    CHECK(veer_health_on_failure(hc, 1, VEER_HEALTH_FAIL_RESET, 11003, NULL) == -ENOENT);
    CHECK(veer_health_on_response(hc, 9, 200, 11003, NULL) == -ENOENT);
    veer_health_free(hc);
}

/* The last failure is kept as words, with its time and streak, after passes
 * (which overwrite last_status) bring the host back. */
static void test_last_failure_kept(void)
{
    recorder_t rec = {0};
    veer_health_check_config_t cfg = config();
    veer_health_t *hc = checker(&cfg, 2, &rec);
    veer_health_host_info_t info;
    probe(hc, 1, 200, 0);
    CHECK(veer_health_host_info(hc, 1, &info) == 0);
    CHECK(info.last_failure_reason[0] == '\0' && info.last_failure_streak == 0 && info.checks_total == 1);
    probe(hc, 1, 503, 5000);
    probe(hc, 1, 503, 10000);
    CHECK(veer_health_host_info(hc, 1, &info) == 0);
    CHECK(strcmp(info.last_failure_reason, "status 503") == 0 && info.last_failure_streak == 2);
    CHECK(info.last_failure_ms == 10000);
    uint32_t due[4];
    CHECK(veer_health_poll(hc, 15000, due, 4) == 2);
    char long_reason[200];
    memset(long_reason, 'x', sizeof long_reason - 1);
    long_reason[sizeof long_reason - 1] = '\0';
    CHECK(veer_health_on_failure_reason(hc, 1, VEER_HEALTH_FAIL_GRPC, long_reason, 15001, NULL) == 0);
    CHECK(veer_health_on_failure(hc, 2, VEER_HEALTH_FAIL_TIMEOUT, 15001, NULL) == 0);
    CHECK(veer_health_host_info(hc, 1, &info) == 0);
    CHECK(strlen(info.last_failure_reason) == sizeof info.last_failure_reason - 1); /* bounded copy */
    CHECK(info.last_failure_streak == 3 && info.state == VEER_HEALTH_UNHEALTHY);
    CHECK(veer_health_host_info(hc, 2, &info) == 0);
    CHECK(strcmp(info.last_failure_reason, "timeout") == 0 && info.last_failure_streak == 1);
    probe(hc, 1, 200, 20001);
    probe(hc, 1, 200, 25001);
    CHECK(veer_health_host_info(hc, 1, &info) == 0);
    CHECK(info.state == VEER_HEALTH_HEALTHY && info.last_status == 200 && info.failures_in_a_row == 0);
    CHECK(strncmp(info.last_failure_reason, "xxxx", 4) == 0 && info.last_failure_ms == 15001);
    CHECK(info.last_failure_streak == 3);
    veer_health_free(hc);
}

static void test_expected_statuses(void)
{
    veer_status_range_t ranges[] = {{200, 299}, {404, 404}};
    CHECK(veer_health_status_expected(ranges, 2, 200) && veer_health_status_expected(ranges, 2, 299));
    CHECK(!veer_health_status_expected(ranges, 2, 300) && !veer_health_status_expected(ranges, 2, 199));
    CHECK(veer_health_status_expected(ranges, 2, 404) && !veer_health_status_expected(ranges, 2, 405));
    recorder_t rec = {0};
    veer_health_check_config_t cfg = config();
    memcpy(cfg.expected_statuses, ranges, sizeof ranges);
    cfg.expected_status_count = 2;
    cfg.unhealthy_threshold = 1;
    cfg.healthy_threshold = 1;
    veer_health_t *hc = checker(&cfg, 1, &rec);
    CHECK(probe(hc, 1, 204, 0).passed);
    CHECK(!probe(hc, 1, 301, 5000).passed && !veer_health_routable(hc, 1));
    CHECK(probe(hc, 1, 404, 10000).passed && veer_health_routable(hc, 1));
    veer_health_free(hc);
}

static void test_jitter(void)
{
    veer_health_check_config_t cfg = config();
    cfg.interval_ms = 10000;
    cfg.jitter_ms = 1000;
    veer_health_t *a = veer_health_new(&cfg, 99, NULL, NULL);
    veer_health_t *b = veer_health_new(&cfg, 99, NULL, NULL);
    veer_health_t *c = veer_health_new(&cfg, 100, NULL, NULL);
    uint32_t ids[32];
    for (uint32_t i = 0; i < 32; i++)
        ids[i] = i + 1;
    veer_health_sync(a, ids, 32, 0);
    veer_health_sync(b, ids, 32, 0);
    veer_health_sync(c, ids, 32, 0);
    /* first probes spread over [0, jitter] */
    uint64_t first_min = UINT64_MAX, first_max = 0;
    for (uint32_t i = 1; i <= 32; i++) {
        veer_health_host_info_t info;
        veer_health_host_info(a, i, &info);
        first_min = info.next_probe_ms < first_min ? info.next_probe_ms : first_min;
        first_max = info.next_probe_ms > first_max ? info.next_probe_ms : first_max;
    }
    CHECK(first_max <= 1000 && first_max - first_min >= 500);
    /* then interval +- jitter: bounded, spread, mean near the interval */
    uint64_t now = 0, lo = UINT64_MAX, hi = 0, sum = 0, rounds = 0;
    bool same_as_b = true, same_as_c = true;
    for (int step = 0; step < 400; step++) {
        uint32_t due[32];
        uint64_t next = veer_health_next_wakeup(a);
        CHECK(next == veer_health_next_wakeup(b));
        now = next;
        size_t n = veer_health_poll(a, now, due, 32);
        veer_health_poll(b, now, due, 32);
        for (size_t i = 0; i < n; i++) {
            veer_health_on_response(a, due[i], 200, now, NULL);
            veer_health_on_response(b, due[i], 200, now, NULL);
            veer_health_host_info_t ia, ib, ic;
            veer_health_host_info(a, due[i], &ia);
            veer_health_host_info(b, due[i], &ib);
            uint64_t delay = ia.next_probe_ms - now;
            lo = delay < lo ? delay : lo;
            hi = delay > hi ? delay : hi;
            sum += delay;
            rounds++;
            same_as_b &= ia.next_probe_ms == ib.next_probe_ms;
            if (veer_health_host_info(c, due[i], &ic) == 0)
                same_as_c &= ic.next_probe_ms == ia.next_probe_ms;
        }
    }
    CHECK(rounds >= 400);
    CHECK(lo >= 9000 && hi <= 11000);
    CHECK(lo < 9100 && hi > 10900);
    CHECK(sum / rounds > 9800 && sum / rounds < 10200);
    CHECK(same_as_b && !same_as_c);
    veer_health_free(a);
    veer_health_free(b);
    veer_health_free(c);
}

static void test_sync_and_poll_cap(void)
{
    recorder_t rec = {0};
    veer_health_check_config_t cfg = config();
    veer_health_t *hc = checker(&cfg, 5, &rec);
    uint32_t due[8];
    CHECK(veer_health_poll(hc, 0, due, 2) == 2);
    CHECK(veer_health_poll(hc, 0, due + 2, 2) == 2);
    CHECK(veer_health_poll(hc, 0, due + 4, 2) == 1);
    CHECK(veer_health_poll(hc, 0, due, 2) == 0);
    for (uint32_t id = 1; id <= 5; id++)
        CHECK(veer_health_on_response(hc, id, 200, 10, NULL) == 0);
    uint32_t ids[] = {5, 3, 8};
    CHECK(veer_health_sync(hc, ids, 3, 20) == 0);
    CHECK(veer_health_routable(hc, 3) && veer_health_routable(hc, 5)); /* kept */
    CHECK(!veer_health_routable(hc, 8) && !veer_health_routable(hc, 1));
    CHECK(veer_health_poll(hc, 20, due, 8) == 1 && due[0] == 8); /* the new host is probed at once */
    uint32_t dup[] = {1, 1};
    CHECK(veer_health_sync(hc, dup, 2, 30) == -EINVAL);
    CHECK(veer_health_routable(hc, 3));
    CHECK(veer_health_sync(hc, NULL, 0, 30) == 0 && veer_health_next_wakeup(hc) == UINT64_MAX);
    veer_health_free(hc);
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_thresholds, test_initial_state, test_timeouts_and_failures, test_expected_statuses, test_jitter,
        test_sync_and_poll_cap, test_last_failure_kept,
    };
    size_t test_count = sizeof tests / sizeof tests[0];
    for (size_t i = 0; i < test_count; i++)
        tests[i]();
    return check_summary("test_health");
}
