/* test_outlier.c - the outlier detector driven by a fake clock: consecutive
 * 5xx / gateway / local-origin ejection at exactly N, the success-rate,
 * failure-percentage and latency analyses, ejection time growth, cap and
 * decay, max_ejection_percent (the first ejection is never blocked), panic
 * routing, health-check un-ejection, host set changes, and the worker queue
 * under two threads. */
#include "outlier.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

#define MAX_EVENTS 512

/* Every event the detector reported, in order. */
typedef struct recorder_s {
    veer_outlier_event_t events[MAX_EVENTS];
    size_t count;
} recorder_t;

static void record_event(void *arg, const veer_outlier_event_t *ev)
{
    recorder_t *r = arg;
    if (r->count < MAX_EVENTS)
        r->events[r->count++] = *ev;
}

static size_t count_events(const recorder_t *r, veer_outlier_event_kind_t kind, uint32_t id)
{
    size_t n = 0;
    for (size_t i = 0; i < r->count; i++)
        n += r->events[i].kind == kind && (id == 0 || r->events[i].endpoint_id == id);
    return n;
}

static const veer_outlier_event_t *last_event(const recorder_t *r, veer_outlier_event_kind_t kind)
{
    for (size_t i = r->count; i > 0; i--)
        if (r->events[i - 1].kind == kind)
            return &r->events[i - 1];
    return NULL;
}

/* The config loader's defaults (config/README.md). */
static veer_outlier_config_t defaults(void)
{
    return (veer_outlier_config_t){
        .consecutive_5xx = 5,
        .consecutive_gateway_failure = 5,
        .interval_ms = 10000,
        .base_ejection_time_ms = 30000,
        .max_ejection_time_ms = 300000,
        .max_ejection_percent = 10,
        .success_rate_minimum_hosts = 5,
        .success_rate_request_volume = 100,
        .success_rate_stdev_factor = 1.9,
        .consecutive_local_origin_failure = 5,
        .enforcing_consecutive_5xx = 100,
        .enforcing_consecutive_gateway_failure = 100,
        .enforcing_consecutive_local_origin_failure = 100,
        .enforcing_success_rate = 100,
        .enforcing_failure_percentage = 0,
        .failure_percentage_threshold = 85,
        .failure_percentage_minimum_hosts = 5,
        .failure_percentage_request_volume = 50,
        .latency_p99_max_ms = 0,
        .latency_request_volume = 100,
        .max_ejection_time_jitter_ms = 0,
        .successful_active_health_check_uneject_host = true,
    };
}

/* A detector over hosts 1..n at time 0. */
static veer_outlier_t *detector(const veer_outlier_config_t *cfg, uint32_t panic_threshold, uint32_t n,
                                recorder_t *rec)
{
    veer_outlier_options_t opts = {
        .config = cfg, .panic_threshold = panic_threshold, .seed = 42, .on_event = record_event, .event_arg = rec};
    veer_outlier_t *det = veer_outlier_new(&opts, 0);
    uint32_t ids[256];
    for (uint32_t i = 0; i < n; i++)
        ids[i] = i + 1;
    CHECK(det && veer_outlier_sync(det, ids, n, 0) == 0);
    return det;
}

static void results(veer_outlier_t *det, uint32_t id, int status, int count, uint64_t now)
{
    for (int i = 0; i < count; i++)
        veer_outlier_on_result(det, id, veer_outlier_result_from_status(status), 1000, now);
}

static void kinds(veer_outlier_t *det, uint32_t id, veer_outlier_result_t kind, int count, uint64_t now)
{
    for (int i = 0; i < count; i++)
        veer_outlier_on_result(det, id, kind, 1000, now);
}

static bool ejected(const veer_outlier_t *det, uint32_t id)
{
    veer_outlier_host_info_t info;
    return veer_outlier_host_info(det, id, &info) == 0 && info.ejected;
}

static veer_outlier_host_info_t info_of(const veer_outlier_t *det, uint32_t id)
{
    veer_outlier_host_info_t info;
    memset(&info, 0, sizeof info);
    CHECK(veer_outlier_host_info(det, id, &info) == 0);
    return info;
}

static void test_result_kinds(void)
{
    CHECK(veer_outlier_result_from_status(200) == VEER_OUTLIER_SUCCESS);
    CHECK(veer_outlier_result_from_status(404) == VEER_OUTLIER_SUCCESS);
    CHECK(veer_outlier_result_from_status(499) == VEER_OUTLIER_SUCCESS);
    CHECK(veer_outlier_result_from_status(500) == VEER_OUTLIER_5XX);
    CHECK(veer_outlier_result_from_status(501) == VEER_OUTLIER_5XX);
    CHECK(veer_outlier_result_from_status(502) == VEER_OUTLIER_GATEWAY);
    CHECK(veer_outlier_result_from_status(503) == VEER_OUTLIER_GATEWAY);
    CHECK(veer_outlier_result_from_status(504) == VEER_OUTLIER_GATEWAY);
    CHECK(veer_outlier_result_from_status(599) == VEER_OUTLIER_5XX);
    CHECK(strcmp(veer_outlier_reason_name(VEER_OUTLIER_REASON_GATEWAY), "gateway") == 0);
    CHECK(strcmp(veer_outlier_reason_name(VEER_OUTLIER_REASON_CONSECUTIVE_5XX), "consecutive_5xx") == 0);
    CHECK(strcmp(veer_outlier_reason_name(VEER_OUTLIER_REASON_LOCAL_ORIGIN), "local_origin") == 0);
    CHECK(strcmp(veer_outlier_reason_name(VEER_OUTLIER_REASON_SUCCESS_RATE), "success_rate") == 0);
    CHECK(strcmp(veer_outlier_reason_name(VEER_OUTLIER_REASON_FAILURE_PERCENTAGE), "failure_percentage") == 0);
    CHECK(strcmp(veer_outlier_reason_name(VEER_OUTLIER_REASON_LATENCY), "latency") == 0);
}

static void test_consecutive_5xx(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    veer_outlier_t *det = detector(&cfg, 50, 3, &rec);
    results(det, 1, 500, 4, 1000);
    CHECK(!ejected(det, 1));
    CHECK(info_of(det, 1).consecutive_5xx == 4);
    results(det, 1, 200, 1, 1000); /* a success breaks the streak */
    results(det, 1, 500, 4, 1000);
    CHECK(!ejected(det, 1));
    results(det, 1, 500, 1, 2000); /* the fifth in a row */
    CHECK(ejected(det, 1));
    CHECK(!veer_outlier_routable(det, 1));
    CHECK(veer_outlier_routable(det, 2) && veer_outlier_routable(det, 3));
    const veer_outlier_event_t *ev = last_event(&rec, VEER_OUTLIER_EV_EJECT);
    CHECK(ev && ev->endpoint_id == 1 && ev->reason == VEER_OUTLIER_REASON_CONSECUTIVE_5XX);
    CHECK(ev && ev->until_ms == 2000 + 30000 && ev->ejection_count == 1);
    CHECK(ev && strstr(ev->detail, "5 consecutive 5xx") != NULL);
    veer_outlier_stats_t st;
    veer_outlier_stats(det, &st);
    CHECK(st.ejections_total[VEER_OUTLIER_REASON_CONSECUTIVE_5XX] == 1 && st.ejected_hosts == 1);
    CHECK(st.total_hosts == 3 && st.healthy_hosts == 2 && !st.panic);
    /* 4xx is the client's fault: it is a success */
    results(det, 2, 500, 4, 2000);
    results(det, 2, 404, 1, 2000);
    results(det, 2, 500, 4, 2000);
    CHECK(info_of(det, 2).consecutive_5xx == 4);
    /* back after exactly base_ejection_time */
    CHECK(veer_outlier_tick(det, 31999) == 32000);
    CHECK(ejected(det, 1));
    veer_outlier_tick(det, 32000);
    CHECK(!ejected(det, 1) && veer_outlier_routable(det, 1));
    const veer_outlier_event_t *back = last_event(&rec, VEER_OUTLIER_EV_UNEJECT);
    CHECK(back && back->endpoint_id == 1 && !back->by_health_check &&
          back->reason == VEER_OUTLIER_REASON_CONSECUTIVE_5XX);
    veer_outlier_free(det);
}

static void test_gateway_enforced_by_default(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    cfg.consecutive_5xx = 0; /* only the gateway check can eject */
    veer_outlier_t *det = detector(&cfg, 50, 3, &rec);
    results(det, 1, 503, 4, 0);
    results(det, 1, 500, 1, 0); /* a non-gateway response breaks the gateway streak */
    results(det, 1, 502, 4, 0);
    CHECK(!ejected(det, 1));
    results(det, 1, 504, 1, 0);
    CHECK(ejected(det, 1));
    const veer_outlier_event_t *ev = last_event(&rec, VEER_OUTLIER_EV_EJECT);
    CHECK(ev && ev->reason == VEER_OUTLIER_REASON_GATEWAY);
    CHECK(count_events(&rec, VEER_OUTLIER_EV_NOT_ENFORCED, 0) == 0);
    veer_outlier_free(det);

    /* both counters reach 5 on the same 503: the gateway reason wins */
    memset(&rec, 0, sizeof rec);
    cfg = defaults();
    det = detector(&cfg, 50, 3, &rec);
    results(det, 2, 503, 5, 0);
    ev = last_event(&rec, VEER_OUTLIER_EV_EJECT);
    CHECK(ev && ev->endpoint_id == 2 && ev->reason == VEER_OUTLIER_REASON_GATEWAY);
    veer_outlier_free(det);

    /* Envoy's default (enforcing 0) turns the gateway check off */
    memset(&rec, 0, sizeof rec);
    cfg = defaults();
    cfg.consecutive_5xx = 0;
    cfg.enforcing_consecutive_gateway_failure = 0;
    det = detector(&cfg, 50, 3, &rec);
    results(det, 1, 503, 20, 0);
    CHECK(!ejected(det, 1));
    veer_outlier_free(det);
}

static void test_local_origin(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    cfg.consecutive_local_origin_failure = 3;
    veer_outlier_t *det = detector(&cfg, 50, 3, &rec);
    kinds(det, 1, VEER_OUTLIER_CONNECT_FAILURE, 2, 0);
    CHECK(!ejected(det, 1));
    kinds(det, 1, VEER_OUTLIER_TIMEOUT, 1, 0);
    CHECK(ejected(det, 1));
    const veer_outlier_event_t *ev = last_event(&rec, VEER_OUTLIER_EV_EJECT);
    CHECK(ev && ev->reason == VEER_OUTLIER_REASON_LOCAL_ORIGIN);
    CHECK(ev && strstr(ev->detail, "last: timeout") != NULL);

    /* a response proves the endpoint reachable (local streak reset) but a
     * 503 keeps the gateway streak going: CF CF 503 CF CF is 5 gateway failures */
    kinds(det, 2, VEER_OUTLIER_CONNECT_FAILURE, 2, 0);
    results(det, 2, 503, 1, 0);
    kinds(det, 2, VEER_OUTLIER_RESET, 1, 0);
    CHECK(!ejected(det, 2) && info_of(det, 2).consecutive_local_origin_failure == 1);
    CHECK(info_of(det, 2).consecutive_gateway_failure == 4);
    cfg.max_ejection_percent = 100;
    veer_outlier_options_t opts = {
        .config = &cfg, .panic_threshold = 50, .seed = 1, .on_event = record_event, .event_arg = &rec};
    veer_outlier_reconfigure(det, &opts, 0);
    kinds(det, 2, VEER_OUTLIER_CONNECT_FAILURE, 1, 0);
    CHECK(ejected(det, 2));
    ev = last_event(&rec, VEER_OUTLIER_EV_EJECT);
    CHECK(ev && ev->endpoint_id == 2 && ev->reason == VEER_OUTLIER_REASON_GATEWAY);
    veer_outlier_free(det);
}

/* count requests, `failed` (at most half) of them failing, never two in a
 * row: only the interval analyses can eject. */
static void traffic(veer_outlier_t *det, uint32_t id, int count, int failed, uint64_t now)
{
    for (int i = 0; i < count; i++) {
        bool fail = i % 2 == 1 && i / 2 < failed;
        veer_outlier_on_result(det, id, fail ? VEER_OUTLIER_5XX : VEER_OUTLIER_SUCCESS, 1000, now);
    }
}

static void test_success_rate(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    cfg.max_ejection_percent = 50;
    veer_outlier_t *det = detector(&cfg, 50, 5, &rec);
    /* 100%, 99.5%, 100%, 99.5% and one at 50% (alternating, no streaks) */
    traffic(det, 1, 200, 0, 1000);
    traffic(det, 2, 200, 1, 1000);
    traffic(det, 3, 200, 0, 1000);
    traffic(det, 4, 200, 1, 1000);
    traffic(det, 5, 200, 100, 1000);
    CHECK(info_of(det, 5).interval_requests == 200 && info_of(det, 5).interval_failures == 100);
    CHECK(!ejected(det, 5)); /* nothing happens before the interval ends */
    CHECK(veer_outlier_tick(det, 9999) == 10000);
    CHECK(!ejected(det, 5));
    veer_outlier_tick(det, 10000);
    CHECK(ejected(det, 5));
    for (uint32_t id = 1; id <= 4; id++)
        CHECK(!ejected(det, id));
    const veer_outlier_event_t *ev = last_event(&rec, VEER_OUTLIER_EV_EJECT);
    CHECK(ev && ev->endpoint_id == 5 && ev->reason == VEER_OUTLIER_REASON_SUCCESS_RATE);
    CHECK(ev && strstr(ev->detail, "success rate 50.0%") != NULL);
    CHECK(info_of(det, 1).interval_requests == 0); /* a new interval */
    veer_outlier_free(det);

    /* only 4 hosts with enough requests: below success_rate_minimum_hosts */
    memset(&rec, 0, sizeof rec);
    det = detector(&cfg, 50, 5, &rec);
    traffic(det, 1, 200, 0, 1000);
    traffic(det, 2, 200, 1, 1000);
    traffic(det, 3, 99, 0, 1000);
    traffic(det, 4, 200, 1, 1000);
    traffic(det, 5, 200, 100, 1000);
    veer_outlier_tick(det, 10000);
    CHECK(!ejected(det, 5) && count_events(&rec, VEER_OUTLIER_EV_EJECT, 0) == 0);
    /* the same pattern with enough volume next interval ejects */
    traffic(det, 1, 200, 0, 11000);
    traffic(det, 2, 200, 1, 11000);
    traffic(det, 3, 100, 0, 11000);
    traffic(det, 4, 200, 1, 11000);
    traffic(det, 5, 200, 100, 11000);
    veer_outlier_tick(det, 20000);
    CHECK(ejected(det, 5) && count_events(&rec, VEER_OUTLIER_EV_EJECT, 0) == 1);
    veer_outlier_free(det);

    /* all hosts equally good: nothing below mean - 1.9 stdev */
    memset(&rec, 0, sizeof rec);
    det = detector(&cfg, 50, 5, &rec);
    for (uint32_t id = 1; id <= 5; id++)
        traffic(det, id, 300, 3, 1000);
    veer_outlier_tick(det, 10000);
    CHECK(count_events(&rec, VEER_OUTLIER_EV_EJECT, 0) == 0);
    veer_outlier_free(det);
}

static void test_failure_percentage(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    cfg.consecutive_5xx = cfg.consecutive_gateway_failure = cfg.consecutive_local_origin_failure = 0;
    cfg.enforcing_success_rate = 0;
    cfg.enforcing_failure_percentage = 100;
    cfg.failure_percentage_minimum_hosts = 3;
    cfg.max_ejection_percent = 100;
    veer_outlier_t *det = detector(&cfg, 0, 4, &rec);
    kinds(det, 1, VEER_OUTLIER_5XX, 90, 0);
    kinds(det, 1, VEER_OUTLIER_SUCCESS, 10, 0); /* 90% failures */
    kinds(det, 2, VEER_OUTLIER_5XX, 50, 0);
    kinds(det, 2, VEER_OUTLIER_SUCCESS, 50, 0); /* 50% */
    kinds(det, 3, VEER_OUTLIER_SUCCESS, 100, 0);
    kinds(det, 4, VEER_OUTLIER_GATEWAY, 49, 0); /* 100%, but under the request volume */
    veer_outlier_tick(det, 10000);
    CHECK(ejected(det, 1) && !ejected(det, 2) && !ejected(det, 3) && !ejected(det, 4));
    const veer_outlier_event_t *ev = last_event(&rec, VEER_OUTLIER_EV_EJECT);
    CHECK(ev && ev->endpoint_id == 1 && ev->reason == VEER_OUTLIER_REASON_FAILURE_PERCENTAGE);
    /* exactly at the threshold ejects (>=, as in Envoy) */
    kinds(det, 2, VEER_OUTLIER_5XX, 85, 10000);
    kinds(det, 2, VEER_OUTLIER_SUCCESS, 15, 10000);
    kinds(det, 3, VEER_OUTLIER_SUCCESS, 100, 10000);
    kinds(det, 4, VEER_OUTLIER_SUCCESS, 100, 10000);
    veer_outlier_tick(det, 20000);
    CHECK(ejected(det, 2));
    veer_outlier_free(det);

    /* off by default (enforcing_failure_percentage 0, as in Envoy) */
    memset(&rec, 0, sizeof rec);
    cfg.enforcing_failure_percentage = 0;
    det = detector(&cfg, 0, 4, &rec);
    for (uint32_t id = 1; id <= 4; id++)
        kinds(det, id, VEER_OUTLIER_5XX, 100, 0);
    veer_outlier_tick(det, 10000);
    CHECK(rec.count == 0);
    veer_outlier_free(det);
}

static void test_latency(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    cfg.latency_p99_max_ms = 500;
    cfg.latency_request_volume = 100;
    cfg.max_ejection_percent = 100;
    veer_outlier_t *det = detector(&cfg, 0, 4, &rec);
    for (int i = 0; i < 100; i++) {
        /* normal: 20 ms */
        veer_outlier_on_result(det, 1, VEER_OUTLIER_SUCCESS, 20000, 0);
        /* hung GPU: answers 200, after 2.4 s */
        veer_outlier_on_result(det, 2, VEER_OUTLIER_SUCCESS, 2400000, 0);
        /* one straggler in 100: P99 (the 99th smallest) is still 30 ms */
        veer_outlier_on_result(det, 3, VEER_OUTLIER_SUCCESS, i == 7 ? 3000000 : 30000, 0);
        /* two stragglers in 100: the 99th smallest is one of them */
        veer_outlier_on_result(det, 4, VEER_OUTLIER_SUCCESS, i < 2 ? 600000 : 30000, 0);
    }
    /* exactly at the limit is not over it; connect failures are no latency */
    veer_outlier_on_result(det, 1, VEER_OUTLIER_SUCCESS, 500000, 0);
    kinds(det, 3, VEER_OUTLIER_CONNECT_FAILURE, 1, 0);
    veer_outlier_tick(det, 10000);
    CHECK(!ejected(det, 1) && ejected(det, 2) && !ejected(det, 3) && ejected(det, 4));
    const veer_outlier_event_t *ev = NULL;
    for (size_t i = 0; i < rec.count; i++)
        if (rec.events[i].kind == VEER_OUTLIER_EV_EJECT && rec.events[i].endpoint_id == 2)
            ev = &rec.events[i];
    CHECK(ev && ev->reason == VEER_OUTLIER_REASON_LATENCY);
    CHECK(ev && strstr(ev->detail, "100 of 100 requests slower (slowest 2.400s)") != NULL);
    /* below latency_request_volume nothing is judged */
    for (int i = 0; i < 99; i++)
        veer_outlier_on_result(det, 1, VEER_OUTLIER_SUCCESS, 5000000, 10000);
    veer_outlier_tick(det, 20000);
    CHECK(!ejected(det, 1));
    veer_outlier_free(det);
}

static void fail_until_ejected(veer_outlier_t *det, uint32_t id, uint64_t now)
{
    kinds(det, id, VEER_OUTLIER_GATEWAY, 5, now);
    CHECK(ejected(det, id));
}

static void test_ejection_time_growth_and_cap(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    cfg.max_ejection_time_ms = 100000;
    cfg.interval_ms = 1000000; /* no decay during this test */
    veer_outlier_t *det = detector(&cfg, 0, 1, &rec);
    uint64_t now = 1000;
    uint64_t expected[] = {30000, 60000, 90000, 100000, 100000};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        fail_until_ejected(det, 1, now);
        veer_outlier_host_info_t info = info_of(det, 1);
        CHECK(info.ejected_until_ms == now + expected[i]);
        if (info.ejected_until_ms != now + expected[i])
            fprintf(stderr, "    ejection %zu lasted %llu ms, expected %llu\n", i + 1,
                    (unsigned long long)(info.ejected_until_ms - now), (unsigned long long)expected[i]);
        CHECK(info.ejections_total == i + 1);
        now = info.ejected_until_ms;
        CHECK(veer_outlier_tick(det, now - 1) == now);
        CHECK(ejected(det, 1));
        veer_outlier_tick(det, now);
        CHECK(!ejected(det, 1));
    }
    CHECK(count_events(&rec, VEER_OUTLIER_EV_UNEJECT, 1) == 5);
    veer_outlier_free(det);

    /* jitter adds up to max_ejection_time_jitter, deterministically per seed */
    memset(&rec, 0, sizeof rec);
    cfg = defaults();
    cfg.max_ejection_time_jitter_ms = 5000;
    det = detector(&cfg, 0, 1, &rec);
    fail_until_ejected(det, 1, 0);
    uint64_t until = info_of(det, 1).ejected_until_ms;
    CHECK(until >= 30000 && until <= 35000);
    veer_outlier_free(det);
    det = detector(&cfg, 0, 1, &rec);
    fail_until_ejected(det, 1, 0);
    CHECK(info_of(det, 1).ejected_until_ms == until);
    veer_outlier_free(det);
}

static void test_decay(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults(); /* interval 10 s, base 30 s */
    veer_outlier_t *det = detector(&cfg, 0, 1, &rec);
    fail_until_ejected(det, 1, 1000);          /* count 1, until 31000 */
    veer_outlier_tick(det, 31000);
    fail_until_ejected(det, 1, 31000);         /* count 2, 60 s: until 91000 */
    CHECK(info_of(det, 1).ejected_until_ms == 91000 && info_of(det, 1).ejection_count == 2);
    for (uint64_t t = 40000; t <= 90000; t += 10000)
        veer_outlier_tick(det, t);
    CHECK(info_of(det, 1).ejection_count == 2); /* no decay while out */
    veer_outlier_tick(det, 91000);
    CHECK(!ejected(det, 1));
    veer_outlier_tick(det, 100000);             /* no analysis since it came back */
    CHECK(info_of(det, 1).ejection_count == 2);
    veer_outlier_tick(det, 101000);             /* the first analysis a whole interval after */
    CHECK(info_of(det, 1).ejection_count == 1);
    veer_outlier_tick(det, 110000);
    CHECK(info_of(det, 1).ejection_count == 1);
    fail_until_ejected(det, 1, 115000);         /* back to 2 x base */
    CHECK(info_of(det, 1).ejected_until_ms == 115000 + 60000);
    veer_outlier_tick(det, 175000);
    for (uint64_t t = 180000; t <= 200000; t += 10000)
        veer_outlier_tick(det, t);
    CHECK(info_of(det, 1).ejection_count == 0);
    fail_until_ejected(det, 1, 200000);         /* fully decayed: base again */
    CHECK(info_of(det, 1).ejected_until_ms == 230000);
    veer_outlier_free(det);
}

static void test_max_ejection_percent(void)
{
    /* a one-pod canary with Envoy's default 10%: the first ejection happens */
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    veer_outlier_t *det = detector(&cfg, 0, 1, &rec);
    fail_until_ejected(det, 1, 0);
    CHECK(!veer_outlier_routable(det, 1)); /* panic threshold 0: no panic routing */
    veer_outlier_free(det);

    /* 10 hosts at 10%: one out at a time */
    memset(&rec, 0, sizeof rec);
    det = detector(&cfg, 0, 10, &rec);
    fail_until_ejected(det, 1, 0);
    kinds(det, 2, VEER_OUTLIER_GATEWAY, 5, 0);
    CHECK(!ejected(det, 2));
    kinds(det, 2, VEER_OUTLIER_GATEWAY, 3, 0);
    CHECK(!ejected(det, 2));
    CHECK(count_events(&rec, VEER_OUTLIER_EV_EJECT_BLOCKED, 2) == 1); /* reported once per streak */
    veer_outlier_stats_t st;
    veer_outlier_stats(det, &st);
    CHECK(st.ejections_blocked == 4 && st.ejected_hosts == 1);
    /* room again once host 1 is back: host 2's next failure ejects it */
    veer_outlier_tick(det, 30000);
    CHECK(!ejected(det, 1));
    kinds(det, 2, VEER_OUTLIER_GATEWAY, 1, 30000);
    CHECK(ejected(det, 2));
    veer_outlier_free(det);

    /* 10 hosts at 50%: five out, the sixth blocked */
    memset(&rec, 0, sizeof rec);
    cfg.max_ejection_percent = 50;
    det = detector(&cfg, 0, 10, &rec);
    for (uint32_t id = 1; id <= 6; id++)
        kinds(det, id, VEER_OUTLIER_GATEWAY, 5, 0);
    veer_outlier_stats(det, &st);
    CHECK(st.ejected_hosts == 5 && !ejected(det, 6) && st.ejections_blocked == 1);
    veer_outlier_free(det);

    /* 0% ejects nothing at all */
    memset(&rec, 0, sizeof rec);
    cfg.max_ejection_percent = 0;
    det = detector(&cfg, 0, 1, &rec);
    kinds(det, 1, VEER_OUTLIER_GATEWAY, 5, 0);
    CHECK(!ejected(det, 1));
    veer_outlier_free(det);
}

static void test_panic(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    cfg.max_ejection_percent = 100;
    veer_outlier_t *det = detector(&cfg, 50, 4, &rec);
    fail_until_ejected(det, 1, 0);
    CHECK(!veer_outlier_panic(det) && !veer_outlier_routable(det, 1));
    fail_until_ejected(det, 2, 0); /* 2 of 4 healthy: 50% is not below 50% */
    CHECK(!veer_outlier_panic(det) && !veer_outlier_routable(det, 2));
    veer_outlier_set_health(det, 3, VEER_OUTLIER_HEALTH_FAILING); /* 1 of 4 */
    CHECK(veer_outlier_panic(det));
    for (uint32_t id = 1; id <= 4; id++)
        CHECK(veer_outlier_routable(det, id));
    const veer_outlier_event_t *ev = last_event(&rec, VEER_OUTLIER_EV_PANIC_ON);
    CHECK(ev && ev->healthy_hosts == 1 && ev->total_hosts == 4 && ev->endpoint_id == 0);
    /* a host that was never checked gets nothing, even in panic */
    veer_outlier_set_health(det, 4, VEER_OUTLIER_HEALTH_PENDING);
    CHECK(veer_outlier_panic(det) && !veer_outlier_routable(det, 4) && veer_outlier_routable(det, 3));
    veer_outlier_set_health(det, 3, VEER_OUTLIER_HEALTH_OK);
    veer_outlier_set_health(det, 4, VEER_OUTLIER_HEALTH_OK);
    CHECK(!veer_outlier_panic(det) && count_events(&rec, VEER_OUTLIER_EV_PANIC_OFF, 0) == 1);
    CHECK(!veer_outlier_routable(det, 1) && veer_outlier_routable(det, 3));
    /* all ejected */
    fail_until_ejected(det, 3, 0);
    fail_until_ejected(det, 4, 0);
    CHECK(veer_outlier_panic(det));
    for (uint32_t id = 1; id <= 4; id++)
        CHECK(veer_outlier_routable(det, id));
    CHECK(!veer_outlier_routable(det, 99));
    veer_outlier_free(det);
}

static void test_health_pass_unejects(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    veer_outlier_t *det = detector(&cfg, 0, 2, &rec);
    fail_until_ejected(det, 1, 100);
    CHECK(veer_outlier_on_health_pass(det, 1, 50, 120) == 0); /* sent before the ejection */
    CHECK(ejected(det, 1));
    veer_outlier_on_health_pass(det, 1, 150, 160);
    CHECK(!ejected(det, 1) && veer_outlier_routable(det, 1));
    const veer_outlier_event_t *ev = last_event(&rec, VEER_OUTLIER_EV_UNEJECT);
    CHECK(ev && ev->by_health_check && ev->endpoint_id == 1);
    CHECK(veer_outlier_on_health_pass(det, 77, 150, 160) == -ENOENT);
    veer_outlier_free(det);

    cfg.successful_active_health_check_uneject_host = false;
    det = detector(&cfg, 0, 2, &rec);
    fail_until_ejected(det, 1, 100);
    veer_outlier_on_health_pass(det, 1, 150, 160);
    CHECK(ejected(det, 1));
    veer_outlier_free(det);
}

static void test_sync_and_reconfigure(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    veer_outlier_t *det = detector(&cfg, 50, 3, &rec);
    fail_until_ejected(det, 2, 0);
    uint32_t ids[] = {7, 2, 9};
    CHECK(veer_outlier_sync(det, ids, 3, 10) == 0);
    CHECK(ejected(det, 2)); /* kept its state */
    CHECK(veer_outlier_on_result(det, 1, VEER_OUTLIER_SUCCESS, 10, 10) == -ENOENT);
    CHECK(veer_outlier_routable(det, 7) && !veer_outlier_routable(det, 1));
    veer_outlier_stats_t st;
    veer_outlier_stats(det, &st);
    CHECK(st.unknown_host_results == 1 && st.total_hosts == 3 && st.ejected_hosts == 1);
    uint32_t dup[] = {4, 5, 4};
    CHECK(veer_outlier_sync(det, dup, 3, 10) == -EINVAL);
    uint32_t zero[] = {0};
    CHECK(veer_outlier_sync(det, zero, 1, 10) == -EINVAL);
    CHECK(veer_outlier_routable(det, 7)); /* unchanged after a refused sync */

    /* hosts added to a health-checked cluster wait for their first pass */
    veer_outlier_options_t opts = {.config = &cfg, .panic_threshold = 50, .hosts_start_pending = true,
                                   .on_event = record_event, .event_arg = &rec};
    veer_outlier_reconfigure(det, &opts, 10);
    uint32_t more[] = {7, 2, 9, 11};
    CHECK(veer_outlier_sync(det, more, 4, 10) == 0);
    CHECK(!veer_outlier_routable(det, 11) && info_of(det, 11).health == VEER_OUTLIER_HEALTH_PENDING);
    CHECK(veer_outlier_routable(det, 9));

    /* outlier detection removed on reload: ejected hosts come back */
    opts.config = NULL;
    veer_outlier_reconfigure(det, &opts, 20);
    CHECK(!ejected(det, 2) && veer_outlier_routable(det, 2));
    kinds(det, 7, VEER_OUTLIER_GATEWAY, 50, 20);
    CHECK(!ejected(det, 7));
    CHECK(veer_outlier_tick(det, 30) == UINT64_MAX);
    CHECK(veer_outlier_sync(det, NULL, 0, 30) == 0 && !veer_outlier_panic(det));
    veer_outlier_free(det);
}

static void test_enforcing_percentage(void)
{
    recorder_t rec = {0};
    veer_outlier_config_t cfg = defaults();
    cfg.enforcing_consecutive_gateway_failure = 50;
    cfg.consecutive_5xx = 0;
    cfg.max_ejection_percent = 100;
    veer_outlier_t *det = detector(&cfg, 0, 200, &rec);
    for (uint32_t id = 1; id <= 200; id++)
        kinds(det, id, VEER_OUTLIER_GATEWAY, 8, 0); /* one draw per streak, not one per failure */
    veer_outlier_stats_t st;
    veer_outlier_stats(det, &st);
    uint64_t out = st.ejections_total[VEER_OUTLIER_REASON_GATEWAY];
    uint64_t spared = st.ejections_not_enforced[VEER_OUTLIER_REASON_GATEWAY];
    CHECK(out + spared == 200);
    CHECK(out >= 70 && out <= 130);
    veer_outlier_free(det);
}

/* ---- the queue: one producer thread, one consumer thread ------------------ */

#define QUEUE_SAMPLES 2000000u

typedef struct queue_run_s {
    veer_outlier_queue_t *q;
    atomic_bool done;
    uint64_t popped, out_of_order;
} queue_run_t;

static void *producer(void *arg)
{
    queue_run_t *run = arg;
    for (uint32_t i = 1; i <= QUEUE_SAMPLES; i++) {
        veer_outlier_sample_t s = {.cluster = 3, .endpoint_id = i, .latency_us = i, .result = (uint8_t)(i % 6)};
        veer_outlier_queue_push(run->q, &s);
    }
    atomic_store(&run->done, true);
    return NULL;
}

static void check_batch(queue_run_t *run, const veer_outlier_sample_t *batch, size_t n, uint32_t *last)
{
    for (size_t i = 0; i < n; i++) {
        /* in order, and never torn: the fields were written together */
        if (batch[i].endpoint_id <= *last || batch[i].latency_us != batch[i].endpoint_id ||
            batch[i].result != batch[i].endpoint_id % 6 || batch[i].cluster != 3)
            run->out_of_order++;
        *last = batch[i].endpoint_id;
    }
    run->popped += n;
}

static void test_queue_two_threads(void)
{
    queue_run_t run = {.q = veer_outlier_queue_new(1000), .done = false};
    CHECK(run.q != NULL);
    if (!run.q)
        return;
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, producer, &run) == 0);
    uint32_t last = 0;
    veer_outlier_sample_t batch[64];
    for (;;) {
        bool done = atomic_load(&run.done); /* before the pop: then this pop sees every push */
        size_t n = veer_outlier_queue_pop(run.q, batch, 64);
        check_batch(&run, batch, n, &last);
        if (n == 0 && done)
            break;
    }
    pthread_join(thread, NULL);
    CHECK(run.out_of_order == 0);
    CHECK(run.popped + veer_outlier_queue_dropped(run.q) == QUEUE_SAMPLES);
    CHECK(run.popped > 0);
    printf("test_outlier: queue: %llu samples passed, %llu dropped (capacity 1024)\n",
           (unsigned long long)run.popped, (unsigned long long)veer_outlier_queue_dropped(run.q));
    veer_outlier_queue_free(run.q);

    /* single-threaded: capacity rounds up to a power of two, then drops */
    veer_outlier_queue_t *q = veer_outlier_queue_new(3);
    veer_outlier_sample_t s = {.endpoint_id = 1};
    int accepted = 0;
    for (int i = 0; i < 10; i++)
        accepted += veer_outlier_queue_push(q, &s);
    CHECK(accepted == 4 && veer_outlier_queue_dropped(q) == 6);
    CHECK(veer_outlier_queue_pop(q, batch, 64) == 4 && veer_outlier_queue_pop(q, batch, 64) == 0);
    CHECK(veer_outlier_queue_push(q, &s));
    veer_outlier_queue_free(q);
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_result_kinds, test_consecutive_5xx, test_gateway_enforced_by_default, test_local_origin,
        test_success_rate, test_failure_percentage, test_latency, test_ejection_time_growth_and_cap, test_decay,
        test_max_ejection_percent, test_panic, test_health_pass_unejects, test_sync_and_reconfigure,
        test_enforcing_percentage, test_queue_two_threads,
    };
    size_t test_count = sizeof tests / sizeof tests[0];
    for (size_t i = 0; i < test_count; i++)
        tests[i]();
    return check_summary("test_outlier");
}
