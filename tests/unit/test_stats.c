/* test_stats.c - per-worker statistics: totals and merged views, the sliding
 * window driven by a fake clock (slices expire exactly after the window, a
 * gap longer than the window clears everything), the window memory cap,
 * series carried over a reload by name, endpoint series, the `stats` config
 * block, and two writer threads racing a reader that checks every read is
 * monotonic and never mixes seconds. */
#include "stats.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define NONE VEER_STATS_NO_TIME

static veer_stats_t *stats_new(uint32_t workers, uint32_t window_s, uint32_t max_series, uint64_t window_bytes)
{
    veer_stats_limits_t lim = {workers, window_s, max_series, window_bytes};
    veer_stats_t *st = veer_stats_new(&lim);
    if (!st) {
        fprintf(stderr, "veer_stats_new failed\n");
        exit(1);
    }
    return st;
}

static veer_stats_layout_t *layout_new(veer_stats_t *st, const char *const *routes, size_t nr,
                                       const char *const *clusters, size_t nc)
{
    veer_stats_layout_t *l = veer_stats_layout_new(st, routes, nr, clusters, nc);
    if (!l) {
        fprintf(stderr, "veer_stats_layout_new failed\n");
        exit(1);
    }
    return l;
}

static veer_stats_view_t *view_new(void)
{
    veer_stats_view_t *v = malloc(sizeof *v);
    veer_stats_view_reset(v);
    return v;
}

static const char *const ROUTES[] = {"embed", "grpc"};
static const char *const CLUSTERS[] = {"blue", "green", "canary"};
enum { EMBED = 0, GRPC = 1, BLUE = 0, GREEN = 1, CANARY = 2 };

/* ---- totals -------------------------------------------------------------- */

static void test_totals(void)
{
    veer_stats_t *st = stats_new(2, 60, 1024, 1 << 20);
    veer_stats_layout_t *l = layout_new(st, ROUTES, 2, CLUSTERS, 3);
    veer_stats_worker_t *w0 = veer_stats_worker(st, 0), *w1 = veer_stats_worker(st, 1);
    CHECK(veer_stats_worker(st, 2) == NULL);
    CHECK(!veer_stats_has_data(st, l, EMBED, BLUE));

    veer_stats_record_request(w0, l, EMBED, BLUE, NULL, 200, VEER_STATS_FAIL_NONE, 1500, 300, 900, 10);
    veer_stats_record_request(w1, l, EMBED, BLUE, NULL, 204, VEER_STATS_FAIL_NONE, 2500, NONE, 1000, 10);
    veer_stats_record_request(w1, l, EMBED, BLUE, NULL, 503, VEER_STATS_FAIL_OVERFLOW, 40, NONE, NONE, 11);
    veer_stats_record_request(w0, l, EMBED, BLUE, NULL, 502, VEER_STATS_FAIL_RESET, 7000, 250, NONE, 11);
    veer_stats_record_request(w0, l, EMBED, BLUE, NULL, 404, VEER_STATS_FAIL_NONE, 100, NONE, 90, 11);
    veer_stats_record_request(w0, l, EMBED, BLUE, NULL, 0, VEER_STATS_FAIL_NONE, 80, NONE, NONE, 11);
    veer_stats_record_request(w0, l, EMBED, GREEN, NULL, 200, VEER_STATS_FAIL_GRPC, 1000, NONE, NONE, 11);
    /* no route (404) and out-of-range indexes land in the "none" series */
    veer_stats_record_request(w1, l, -1, -1, NULL, 404, VEER_STATS_FAIL_NONE, 20, NONE, NONE, 11);
    veer_stats_record_request(w1, l, 7, 9, NULL, 404, VEER_STATS_FAIL_NONE, 30, NONE, NONE, 11);
    /* a failure reason out of range is no failure; a status out of range has no class */
    veer_stats_record_request(w1, l, GRPC, CANARY, NULL, 700, (veer_stats_fail_t)42, 10, NONE, NONE, 11);

    CHECK(veer_stats_has_data(st, l, EMBED, BLUE) && veer_stats_has_data(st, l, EMBED, GREEN));
    CHECK(!veer_stats_has_data(st, l, GRPC, BLUE));
    veer_stats_view_t *v = view_new();
    veer_stats_read_total(st, l, EMBED, BLUE, VEER_STATS_READ_ALL, v);
    CHECK(veer_stats_counts_requests(&v->counts) == 6);
    CHECK(v->counts.classes[0] == 1 && v->counts.classes[2] == 2 && v->counts.classes[4] == 1 &&
          v->counts.classes[5] == 2 && v->counts.classes[1] == 0 && v->counts.classes[3] == 0);
    CHECK(veer_stats_counts_failures(&v->counts) == 2);
    CHECK(v->counts.failures[VEER_STATS_FAIL_OVERFLOW] == 1 && v->counts.failures[VEER_STATS_FAIL_RESET] == 1);
    CHECK(v->duration.count == 6 && v->duration.sum == 1500 + 2500 + 40 + 7000 + 100 + 80);
    CHECK(v->duration.min == 40 && v->duration.max == 7000);
    CHECK(v->connect.count == 2 && v->connect.sum == 550 && v->connect.min == 250 && v->connect.max == 300);
    CHECK(v->ttfb.count == 3 && v->ttfb.sum == 1990);
    CHECK(veer_hist_count_le(&v->duration, 100) == 3);

    /* only what was asked for is merged */
    veer_stats_view_reset(v);
    veer_stats_read_total(st, l, EMBED, BLUE, VEER_STATS_READ_COUNTS, v);
    CHECK(veer_stats_counts_requests(&v->counts) == 6 && v->duration.count == 0 && v->connect.count == 0);

    veer_stats_view_reset(v);
    veer_stats_read_total(st, l, -1, -1, VEER_STATS_READ_ALL, v);
    CHECK(v->counts.classes[4] == 2 && v->duration.count == 2);
    veer_stats_view_reset(v);
    veer_stats_read_total(st, l, GRPC, CANARY, VEER_STATS_READ_ALL, v);
    CHECK(v->counts.classes[0] == 1 && veer_stats_counts_failures(&v->counts) == 0);

    /* per cluster: add every route's series into one view */
    veer_stats_view_reset(v);
    for (int r = 0; r <= 2; r++)
        veer_stats_read_total(st, l, r, GREEN, VEER_STATS_READ_ALL, v);
    CHECK(veer_stats_counts_requests(&v->counts) == 1 && v->counts.failures[VEER_STATS_FAIL_GRPC] == 1);

    veer_stats_health_t health;
    veer_stats_read_health(st, &health);
    CHECK(health.no_series == 0 && health.alloc_failed == 0 && health.window_dropped == 0);
    CHECK(health.series_ids == 3 * 4);

    CHECK(strcmp(veer_stats_fail_name(VEER_STATS_FAIL_5XX), "5xx") == 0);
    CHECK(strcmp(veer_stats_fail_name(VEER_STATS_FAIL_GRPC), "grpc") == 0);
    CHECK(strcmp(veer_stats_class_name(3), "3xx") == 0 && strcmp(veer_stats_class_name(0), "none") == 0);
    free(v);
    veer_stats_layout_free(l);
    veer_stats_free(st);
}

/* ---- the window ---------------------------------------------------------- */

static uint64_t window_requests(veer_stats_t *st, veer_stats_layout_t *l, uint64_t now, uint32_t seconds,
                                veer_stats_view_t *v)
{
    veer_stats_view_reset(v);
    veer_stats_read_window(st, l, EMBED, CANARY, now, seconds, v);
    return veer_stats_counts_requests(&v->counts);
}

static void test_window_rotation(void)
{
    veer_stats_t *st = stats_new(2, 10, 64, 1 << 20);
    veer_stats_layout_t *l = layout_new(st, ROUTES, 2, CLUSTERS, 3);
    veer_stats_worker_t *w0 = veer_stats_worker(st, 0), *w1 = veer_stats_worker(st, 1);
    veer_stats_view_t *v = view_new();
    CHECK(veer_stats_window(st) == 10);

    /* 3 requests at second 100 (two workers), 2 at 101 */
    veer_stats_record_request(w0, l, EMBED, CANARY, NULL, 200, VEER_STATS_FAIL_NONE, 1000, NONE, NONE, 100);
    veer_stats_record_request(w1, l, EMBED, CANARY, NULL, 200, VEER_STATS_FAIL_NONE, 2000, NONE, NONE, 100);
    veer_stats_record_request(w0, l, EMBED, CANARY, NULL, 500, VEER_STATS_FAIL_5XX, 3000, NONE, NONE, 100);
    veer_stats_record_request(w0, l, EMBED, CANARY, NULL, 200, VEER_STATS_FAIL_NONE, 50000, NONE, NONE, 101);
    veer_stats_record_request(w1, l, EMBED, CANARY, NULL, 504, VEER_STATS_FAIL_TIMEOUT, 60000, NONE, NONE, 101);

    CHECK(window_requests(st, l, 99, 10, v) == 0);   /* before anything */
    CHECK(window_requests(st, l, 100, 10, v) == 3);
    CHECK(v->counts.failures[VEER_STATS_FAIL_5XX] == 1 && v->duration.count == 3 && v->duration.max == 3000);
    CHECK(window_requests(st, l, 101, 10, v) == 5);
    CHECK(v->duration.count == 5 && v->duration.sum == 116000 && v->duration.min == 1000);
    CHECK(veer_hist_value_at(&v->duration, 990000) == 60000);
    CHECK(window_requests(st, l, 101, 1, v) == 2);   /* the last second only */
    CHECK(window_requests(st, l, 100, 1, v) == 3);
    CHECK(window_requests(st, l, 109, 10, v) == 5);  /* still inside */
    CHECK(window_requests(st, l, 110, 10, v) == 2);  /* second 100 expires exactly after 10 s */
    CHECK(v->duration.count == 2 && v->duration.min == 50000);
    CHECK(window_requests(st, l, 111, 10, v) == 0);
    CHECK(window_requests(st, l, 105, 5, v) == 2);   /* seconds 101..105 */
    CHECK(window_requests(st, l, 106, 5, v) == 0);   /* seconds 102..106 */
    CHECK(window_requests(st, l, 104, 5, v) == 5);   /* seconds 100..104 */
    CHECK(window_requests(st, l, 101, 60, v) == 5);  /* capped at the window */
    CHECK(window_requests(st, l, 101, 0, v) == 0);

    /* Second 110 reuses second 100's slice in each worker: the old second is
     * gone from it, the new one is counted. */
    veer_stats_record_request(w0, l, EMBED, CANARY, NULL, 201, VEER_STATS_FAIL_NONE, 7000, NONE, NONE, 110);
    CHECK(window_requests(st, l, 110, 10, v) == 3);
    CHECK(v->counts.classes[2] == 2 && v->counts.classes[5] == 1 && v->duration.min == 7000);
    CHECK(v->counts.failures[VEER_STATS_FAIL_5XX] == 0 && v->counts.failures[VEER_STATS_FAIL_TIMEOUT] == 1);

    /* A time a whole window in the past: counted in the totals only. */
    veer_stats_record_request(w0, l, EMBED, CANARY, NULL, 200, VEER_STATS_FAIL_NONE, 9, NONE, NONE, 100);
    CHECK(window_requests(st, l, 110, 10, v) == 3);
    CHECK(window_requests(st, l, 100, 10, v) == 1); /* w1's second 100 is still there */
    veer_stats_view_reset(v);
    veer_stats_read_total(st, l, EMBED, CANARY, VEER_STATS_READ_ALL, v);
    CHECK(veer_stats_counts_requests(&v->counts) == 7 && v->duration.count == 7);

    /* A gap longer than the window: nothing of before is left. */
    veer_stats_record_request(w1, l, EMBED, CANARY, NULL, 200, VEER_STATS_FAIL_NONE, 123, NONE, NONE, 135);
    CHECK(window_requests(st, l, 135, 10, v) == 1);
    CHECK(v->duration.count == 1 && v->duration.sum == 123);
    CHECK(window_requests(st, l, 1000, 10, v) == 0); /* read far later, no write in between */

    /* Time starts at 0: the first seconds are all there. */
    veer_stats_layout_t *l2 = layout_new(st, (const char *const[]){"t0"}, 1, CLUSTERS, 3);
    for (uint64_t t = 0; t < 3; t++)
        veer_stats_record_request(w0, l2, 0, BLUE, NULL, 200, VEER_STATS_FAIL_NONE, 5, NONE, NONE, t);
    veer_stats_view_reset(v);
    veer_stats_read_window(st, l2, 0, BLUE, 2, 10, v);
    CHECK(veer_stats_counts_requests(&v->counts) == 3);
    veer_stats_view_reset(v);
    veer_stats_read_window(st, l2, 0, BLUE, 2, 2, v);
    CHECK(veer_stats_counts_requests(&v->counts) == 2);

    free(v);
    veer_stats_layout_free(l2);
    veer_stats_layout_free(l);
    veer_stats_free(st);
}

static void test_window_memory_cap(void)
{
    /* 4 pieces of 256 bytes per worker: 4 distinct 64-bucket ranges a second. */
    veer_stats_t *st = stats_new(1, 10, 64, 4 * VEER_STATS_WINDOW_CHUNK_BYTES);
    veer_stats_layout_t *l = layout_new(st, ROUTES, 2, CLUSTERS, 3);
    veer_stats_worker_t *w = veer_stats_worker(st, 0);
    veer_stats_view_t *v = view_new();
    static const uint64_t values[] = {1, 100, 200, 1000, 100000}; /* five different ranges */
    for (size_t i = 0; i < 5; i++)
        veer_stats_record_request(w, l, EMBED, CANARY, NULL, 200, VEER_STATS_FAIL_NONE, values[i], NONE, NONE, 5);
    CHECK(window_requests(st, l, 5, 10, v) == 5);
    CHECK(v->duration.count == 4 && v->counts.window_dropped == 1 && v->duration.max == 1000);
    veer_stats_health_t health;
    veer_stats_read_health(st, &health);
    CHECK(health.window_dropped == 1);
    /* the totals are not capped */
    veer_stats_view_reset(v);
    veer_stats_read_total(st, l, EMBED, CANARY, VEER_STATS_READ_ALL, v);
    CHECK(v->duration.count == 5 && v->duration.max == 100000);

    /* Another series a second later: the pool is empty and nothing has
     * expired yet. */
    veer_stats_record_request(w, l, GRPC, BLUE, NULL, 200, VEER_STATS_FAIL_NONE, 10, NONE, NONE, 6);
    veer_stats_read_health(st, &health);
    CHECK(health.window_dropped == 2);
    /* At second 15 second 5 is out of the window: recording reclaims its
     * pieces although series (EMBED, CANARY) is idle. */
    veer_stats_record_request(w, l, GRPC, BLUE, NULL, 200, VEER_STATS_FAIL_NONE, 10, NONE, NONE, 15);
    veer_stats_read_health(st, &health);
    CHECK(health.window_dropped == 2);
    veer_stats_view_reset(v);
    veer_stats_read_window(st, l, GRPC, BLUE, 15, 10, v);
    CHECK(v->duration.count == 1 && v->counts.window_dropped == 1); /* second 6's drop is still in view */
    /* ...and the explicit sweep returns the rest */
    veer_stats_worker_expire(w, 16);
    for (size_t i = 0; i < 3; i++)
        veer_stats_record_request(w, l, EMBED, GREEN, NULL, 200, VEER_STATS_FAIL_NONE, values[i], NONE, NONE, 16);
    veer_stats_read_health(st, &health);
    CHECK(health.window_dropped == 2);
    free(v);
    veer_stats_layout_free(l);
    veer_stats_free(st);

    /* max_window_bytes 0: the window keeps counts only, and nothing is "dropped" */
    st = stats_new(1, 10, 64, 0);
    l = layout_new(st, ROUTES, 2, CLUSTERS, 3);
    v = view_new();
    veer_stats_record_request(veer_stats_worker(st, 0), l, EMBED, CANARY, NULL, 200, VEER_STATS_FAIL_NONE, 10, NONE,
                              NONE, 5);
    CHECK(window_requests(st, l, 5, 10, v) == 1 && v->duration.count == 0 && v->counts.window_dropped == 0);
    veer_stats_read_health(st, &health);
    CHECK(health.window_dropped == 0);
    free(v);
    veer_stats_layout_free(l);
    veer_stats_free(st);
}

/* ---- reloads ------------------------------------------------------------- */

static void test_reload_carry_over(void)
{
    veer_stats_t *st = stats_new(1, 60, 30, 1 << 20);
    veer_stats_worker_t *w = veer_stats_worker(st, 0);
    veer_stats_layout_t *a = layout_new(st, ROUTES, 2, CLUSTERS, 3); /* 3 x 4 ids */
    veer_stats_record_request(w, a, GRPC, BLUE, NULL, 200, VEER_STATS_FAIL_NONE, 100, NONE, NONE, 50);
    veer_stats_record_request(w, a, GRPC, BLUE, NULL, 500, VEER_STATS_FAIL_5XX, 200, NONE, NONE, 51);

    /* The new config drops "embed", adds "search", reorders clusters. */
    const char *const routes_b[] = {"search", "grpc"};
    const char *const clusters_b[] = {"canary", "blue"};
    veer_stats_layout_t *b = layout_new(st, routes_b, 2, clusters_b, 2);
    CHECK(veer_stats_layout_id(b, 1, 1) == veer_stats_layout_id(a, GRPC, BLUE));
    CHECK(veer_stats_layout_id(b, -1, -1) == veer_stats_layout_id(a, -1, -1));
    veer_stats_view_t *v = view_new();
    veer_stats_read_total(st, b, 1, 1, VEER_STATS_READ_ALL, v);
    CHECK(veer_stats_counts_requests(&v->counts) == 2 && v->duration.count == 2);
    veer_stats_view_reset(v);
    veer_stats_read_window(st, b, 1, 1, 51, 60, v);
    CHECK(veer_stats_counts_requests(&v->counts) == 2); /* the window carries over too */
    CHECK(!veer_stats_has_data(st, b, 0, 1));

    /* A request still in flight on the old config and a new one record into
     * the same series. */
    veer_stats_record_request(w, a, GRPC, BLUE, NULL, 200, VEER_STATS_FAIL_NONE, 100, NONE, NONE, 52);
    veer_stats_record_request(w, b, 1, 1, NULL, 200, VEER_STATS_FAIL_NONE, 100, NONE, NONE, 52);
    veer_stats_view_reset(v);
    veer_stats_read_total(st, a, GRPC, BLUE, VEER_STATS_READ_COUNTS, v);
    CHECK(veer_stats_counts_requests(&v->counts) == 4);

    veer_stats_health_t health;
    veer_stats_read_health(st, &health);
    CHECK(health.series_ids == 12 + 3); /* new: search x {canary, blue, none} */

    /* The registry fills up (30 ids): r1..r5 get the last 15, r6..r8 none,
     * and their requests are counted as dropped; known names still work. */
    const char *const many[] = {"r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"};
    veer_stats_layout_t *c = layout_new(st, many, 8, clusters_b, 2);
    int dropped_ids = 0;
    for (int r = 0; r < 8; r++)
        for (int k = 0; k <= 2; k++)
            dropped_ids += veer_stats_layout_id(c, r, k) < 0;
    veer_stats_read_health(st, &health);
    CHECK(health.series_ids == 30);
    CHECK(dropped_ids == 3 * 3);
    CHECK(veer_stats_layout_id(c, -1, 1) == veer_stats_layout_id(a, -1, BLUE));
    veer_stats_record_request(w, c, 7, 0, NULL, 200, VEER_STATS_FAIL_NONE, 1, NONE, NONE, 53);
    veer_stats_read_health(st, &health);
    CHECK(health.no_series == 1);
    CHECK(!veer_stats_has_data(st, c, 7, 0));
    veer_stats_record_request(w, NULL, 0, 0, NULL, 200, VEER_STATS_FAIL_NONE, 1, NONE, NONE, 53);
    veer_stats_read_health(st, &health);
    CHECK(health.no_series == 2);

    free(v);
    veer_stats_layout_free(a);
    veer_stats_layout_free(b);
    veer_stats_layout_free(c);
    veer_stats_free(st);
}

/* ---- endpoints ----------------------------------------------------------- */

static void test_endpoints(void)
{
    veer_stats_t *st = stats_new(2, 5, 64, 1 << 20);
    veer_stats_layout_t *l = layout_new(st, ROUTES, 2, CLUSTERS, 3);
    veer_stats_endpoint_t *ep = veer_stats_endpoint_new(st);
    CHECK(ep != NULL);
    veer_stats_worker_t *w0 = veer_stats_worker(st, 0), *w1 = veer_stats_worker(st, 1);
    veer_stats_record_request(w0, l, EMBED, BLUE, ep, 200, VEER_STATS_FAIL_NONE, 10, NONE, NONE, 1);
    veer_stats_record_request(w1, l, EMBED, BLUE, ep, 503, VEER_STATS_FAIL_CONNECT, 10, NONE, NONE, 2);
    veer_stats_record_request(w1, l, GRPC, BLUE, ep, 200, VEER_STATS_FAIL_NONE, 10, NONE, NONE, 4);
    veer_stats_counts_t c = {0};
    veer_stats_endpoint_read_total(st, ep, &c);
    CHECK(veer_stats_counts_requests(&c) == 3 && c.failures[VEER_STATS_FAIL_CONNECT] == 1 && c.classes[2] == 2);
    memset(&c, 0, sizeof c);
    veer_stats_endpoint_read_window(st, ep, 5, 5, &c);
    CHECK(veer_stats_counts_requests(&c) == 3);
    memset(&c, 0, sizeof c);
    veer_stats_endpoint_read_window(st, ep, 6, 5, &c); /* second 1 expired */
    CHECK(veer_stats_counts_requests(&c) == 2 && c.failures[VEER_STATS_FAIL_CONNECT] == 1);
    memset(&c, 0, sizeof c);
    veer_stats_endpoint_read_window(st, ep, 6, 3, &c);
    CHECK(veer_stats_counts_requests(&c) == 1);
    /* second 7 reuses second 2's slice */
    veer_stats_record_request(w1, l, GRPC, BLUE, ep, 200, VEER_STATS_FAIL_NONE, 10, NONE, NONE, 7);
    memset(&c, 0, sizeof c);
    veer_stats_endpoint_read_window(st, ep, 7, 5, &c);
    CHECK(veer_stats_counts_requests(&c) == 2 && c.failures[VEER_STATS_FAIL_CONNECT] == 0);
    /* the endpoint needs no route: a request with no series still counts on it */
    veer_stats_record_request(w0, NULL, -1, -1, ep, 200, VEER_STATS_FAIL_NONE, 10, NONE, NONE, 7);
    memset(&c, 0, sizeof c);
    veer_stats_endpoint_read_total(st, ep, &c);
    CHECK(veer_stats_counts_requests(&c) == 5);
    veer_stats_endpoint_free(ep);
    veer_stats_endpoint_free(NULL);
    veer_stats_layout_free(l);
    veer_stats_free(st);
}

/* ---- config -------------------------------------------------------------- */

#define BASE_CONFIG                                                                 \
    "{\"listeners\":[{\"address\":\"127.0.0.1:8080\"}],"                            \
    "\"clusters\":{\"blue\":{\"endpoints\":[\"127.0.0.1:8081\"]},"                    \
    "\"green\":{\"endpoints\":[\"127.0.0.1:8082\"]}},"                                  \
    "\"routes\":[{\"name\":\"embed\",\"split\":[{\"cluster\":\"blue\",\"weight\":9}," \
    "{\"cluster\":\"green\",\"weight\":1}]}]"

static veer_config_t *parse(const char *stats_json, veer_config_errors_t *errs)
{
    char text[8192];
    snprintf(text, sizeof text, "%s%s%s}", BASE_CONFIG, stats_json ? ",\"stats\":" : "", stats_json ? stats_json : "");
    return veer_config_parse(text, strlen(text), errs);
}

static void expect_error_at(int line, const char *stats_json, const char *want)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse(stats_json, &errs);
    bool found = false;
    for (size_t i = 0; i < errs.count; i++)
        found = found || strstr(errs.messages[i], want) == errs.messages[i];
    checks++;
    if (cfg || !found) {
        failures++;
        fprintf(stderr, "%s:%d: %s: expected an error starting with '%s', got:\n", __FILE__, line, stats_json,
                want);
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "    %s\n", errs.messages[i]);
    }
    veer_config_free(cfg);
    veer_config_errors_clear(&errs);
}
#define EXPECT_ERROR(json, want) expect_error_at(__LINE__, (json), (want))

static void test_config(void)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = parse(NULL, &errs);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK(cfg->stats.window_s == 60 && cfg->stats.max_series == 16384);
        CHECK(cfg->stats.max_window_bytes == 8388608);
        CHECK(cfg->stats.histogram_buckets_us == NULL && cfg->stats.histogram_bucket_count == 0);
        veer_stats_limits_t lim = veer_stats_limits_from_config(cfg, 3);
        CHECK(lim.worker_count == 3 && lim.window_s == 60 && lim.max_series == 16384);
        veer_stats_t *st = veer_stats_new(&lim);
        CHECK(st != NULL);
        veer_stats_layout_t *l = st ? veer_stats_layout_from_config(st, cfg) : NULL;
        CHECK(l && l->route_count == 1 && l->cluster_count == 2 && strcmp(l->cluster_names[1], "green") == 0);
        if (l) {
            veer_stats_record_request(veer_stats_worker(st, 2), l, 0, 1, NULL, 200, VEER_STATS_FAIL_NONE, 1, NONE,
                                      NONE, 1);
            CHECK(veer_stats_has_data(st, l, 0, 1));
        }
        veer_stats_layout_free(l);
        veer_stats_free(st);
    }
    veer_config_free(cfg);

    cfg = parse("{\"window\":\"30s\",\"histogram_buckets\":[\"100us\",\"1ms\",\"2.5ms\",\"1s\",\"0.0000001s\"],"
                "\"max_series\":100,\"max_window_bytes\":0}",
                &errs);
    CHECK(cfg == NULL); /* the last bound is 1us, below the one before */
    veer_config_errors_clear(&errs);
    cfg = parse("{\"window\":\"30s\",\"histogram_buckets\":[\"100us\",\"1ms\",\"2.5ms\",\"1s\",\"4294s\"],"
                "\"max_series\":100,\"max_window_bytes\":65536}",
                &errs);
    CHECK(cfg != NULL);
    if (cfg) {
        static const uint64_t want[] = {100, 1000, 2500, 1000000, 4294000000ull};
        CHECK(cfg->stats.window_s == 30 && cfg->stats.max_series == 100 && cfg->stats.max_window_bytes == 65536);
        CHECK(cfg->stats.histogram_bucket_count == 5 &&
              memcmp(cfg->stats.histogram_buckets_us, want, sizeof want) == 0);
    }
    veer_config_free(cfg);
    veer_config_errors_clear(&errs);

    EXPECT_ERROR("{\"windw\":\"30s\"}", "stats.windw: unknown key (did you mean \"window\"?)");
    EXPECT_ERROR("[]", "stats: expected an object, got");
    EXPECT_ERROR("{\"window\":\"1500ms\"}", "stats.window: must be a whole number of seconds");
    EXPECT_ERROR("{\"window\":\"2h\"}", "stats.window: must be at most 1h");
    EXPECT_ERROR("{\"window\":\"0s\"}", "stats.window: must be at least 1s");
    EXPECT_ERROR("{\"window\":60}", "stats.window: invalid duration 60");
    EXPECT_ERROR("{\"histogram_buckets\":[]}", "stats.histogram_buckets: expected a non-empty array");
    EXPECT_ERROR("{\"histogram_buckets\":\"1ms\"}", "stats.histogram_buckets: expected a non-empty array");
    EXPECT_ERROR("{\"histogram_buckets\":[\"1ms\",\"1ms\"]}",
                 "stats.histogram_buckets[1]: must be greater than the bound before it (\"1ms\"), got \"1ms\"");
    EXPECT_ERROR("{\"histogram_buckets\":[\"2ms\",\"1000us\"]}", "stats.histogram_buckets[1]: must be greater");
    EXPECT_ERROR("{\"histogram_buckets\":[0.001]}", "stats.histogram_buckets[0]: expected a duration such as");
    EXPECT_ERROR("{\"histogram_buckets\":[\"0us\"]}", "stats.histogram_buckets[0]: must be between 1us and 4294s");
    EXPECT_ERROR("{\"histogram_buckets\":[\"4295s\"]}", "stats.histogram_buckets[0]: must be between 1us and 4294s");
    EXPECT_ERROR("{\"histogram_buckets\":[\"1 ms\"]}", "stats.histogram_buckets[0]: expected a duration such as");
    EXPECT_ERROR("{\"max_series\":0}", "stats.max_series: expected a positive integer");
    EXPECT_ERROR("{\"max_series\":2000000}", "stats.max_series: must be between 1 and 1048576");
    EXPECT_ERROR("{\"max_window_bytes\":16776961}", "stats.max_window_bytes: must be between 0 and 16776960");

    char many[4096] = "{\"histogram_buckets\":[";
    for (int i = 1; i <= 257; i++) {
        size_t used = strlen(many);
        snprintf(many + used, sizeof many - used, "%s\"%dus\"", i > 1 ? "," : "", i);
    }
    strcat(many, "]}");
    EXPECT_ERROR(many, "stats.histogram_buckets: at most 256 buckets, got 257");

    uint64_t us = 0, ms = 0;
    CHECK(veer_duration_parse_us("100us", &us) == 0 && us == 100);
    CHECK(veer_duration_parse_us("1.5ms", &us) == 0 && us == 1500);
    CHECK(veer_duration_parse_us("0.0000001s", &us) == 0 && us == 1);
    CHECK(veer_duration_parse_us("2s", &us) == 0 && us == 2000000);
    CHECK(veer_duration_parse_us("ms", &us) == -1 && veer_duration_parse_us(NULL, &us) == -1);
    CHECK(veer_duration_parse("1500us", &ms) == 0 && ms == 2);
    CHECK(veer_duration_parse("250ms", &ms) == 0 && ms == 250);
}

/* ---- two writers and a reader -------------------------------------------- */

enum { RACE_WINDOW = 8, RACE_SECONDS = 40, RACE_START = 1000 };

typedef struct race_s {
    veer_stats_t *st;
    veer_stats_layout_t *layout;
    veer_stats_endpoint_t *ep;
    _Atomic uint64_t clock;
    atomic_bool stop;
    _Atomic uint64_t progress[2]; /* requests recorded by each writer */
    uint64_t tally[2][RACE_SECONDS + 1]; /* by second, owned by each writer until joined */
} race_t;

typedef struct writer_arg_s {
    race_t *race;
    uint32_t worker;
} writer_arg_t;

/* Every request of second s has this duration, so a window read can tell
 * which second a value came from: 64 values 1 ms apart, in distinct buckets. */
static uint64_t race_value(uint64_t s)
{
    return (s % 64 + 1) * 1000;
}

static void *race_writer(void *arg)
{
    writer_arg_t *wa = arg;
    race_t *race = wa->race;
    veer_stats_worker_t *ws = veer_stats_worker(race->st, wa->worker);
    uint64_t n = 0;
    while (!atomic_load(&race->stop)) {
        uint64_t now = atomic_load(&race->clock);
        bool even = now % 2 == 0;
        veer_stats_record_request(ws, race->layout, 0, 0, race->ep, even ? 200 : 503,
                                  even ? VEER_STATS_FAIL_NONE : VEER_STATS_FAIL_5XX, race_value(now), NONE, NONE,
                                  now);
        race->tally[wa->worker][now - RACE_START]++;
        atomic_store_explicit(&race->progress[wa->worker], ++n, memory_order_release);
        if (n % 512 == 0)
            veer_stats_worker_expire(ws, now);
    }
    return NULL;
}

static void test_concurrent_readers(void)
{
    race_t *race = calloc(1, sizeof *race);
    race->st = stats_new(2, RACE_WINDOW, 16, 1 << 20);
    race->layout = layout_new(race->st, ROUTES, 1, CLUSTERS, 1);
    race->ep = veer_stats_endpoint_new(race->st);
    atomic_store(&race->clock, RACE_START);
    pthread_t threads[2];
    writer_arg_t args[2] = {{race, 0}, {race, 1}};
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, race_writer, &args[i]);

    veer_stats_view_t *v = view_new(), *wv = view_new();
    uint64_t last_requests = 0, last_count = 0, last_5xx = 0, reads = 0;
    bool monotonic = true, bounded = true, consistent = true, seconds_ok = true;
    for (uint64_t t = RACE_START; t < RACE_START + RACE_SECONDS; t++) {
        atomic_store(&race->clock, t);
        for (int k = 0; k < 40; k++, reads++) {
            uint64_t before = atomic_load_explicit(&race->progress[0], memory_order_acquire) +
                              atomic_load_explicit(&race->progress[1], memory_order_acquire);
            veer_stats_view_reset(v);
            veer_stats_read_total(race->st, race->layout, 0, 0, VEER_STATS_READ_COUNTS | VEER_STATS_READ_DURATION, v);
            uint64_t requests = veer_stats_counts_requests(&v->counts);
            /* never backwards, never less than what the writers published
             * before the read, never garbage */
            if (requests < last_requests || v->duration.count < last_count || v->counts.classes[5] < last_5xx)
                monotonic = false;
            if (requests < before || v->duration.count < before || requests > before + (1ull << 32))
                bounded = false;
            uint64_t bucket_sum = 0;
            for (uint32_t i = 0; i < VEER_HIST_BUCKETS; i++)
                bucket_sum += v->duration.counts[i];
            if (bucket_sum != v->duration.count)
                consistent = false;
            last_requests = requests;
            last_count = v->duration.count;
            last_5xx = v->counts.classes[5];

            /* The window only ever shows seconds (t - 8, t]. */
            veer_stats_view_reset(wv);
            veer_stats_read_window(race->st, race->layout, 0, 0, t, RACE_WINDOW, wv);
            for (uint32_t i = 0; i < VEER_HIST_BUCKETS; i++) {
                if (!wv->duration.counts[i])
                    continue;
                uint64_t s_mod = (veer_hist_bucket_low(i) + 500) / 1000 - 1;
                bool in_window = false;
                for (uint64_t s = t - RACE_WINDOW + 1; s <= t; s++)
                    in_window = in_window || s % 64 == s_mod;
                if (!in_window)
                    seconds_ok = false;
            }
            if (wv->counts.window_dropped)
                consistent = false;
#if defined(__x86_64__) || defined(__i386__)
            /* TSO: a counter seen incremented implies its writer's earlier
             * progress stores are seen too, so at most one request per
             * writer is ahead of the published progress. */
            uint64_t after = atomic_load_explicit(&race->progress[0], memory_order_acquire) +
                             atomic_load_explicit(&race->progress[1], memory_order_acquire);
            if (requests > after + 2 || veer_stats_counts_requests(&wv->counts) > after + 2)
                bounded = false;
#endif
            sched_yield();
        }
    }
    atomic_store(&race->stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    CHECK(monotonic);
    CHECK(bounded);
    CHECK(consistent);
    CHECK(seconds_ok);

    /* Quiet now: every number is exact. */
    uint64_t total = 0, by_class[2] = {0, 0}, in_window = 0;
    uint64_t last = RACE_START + RACE_SECONDS - 1;
    for (int w = 0; w < 2; w++)
        for (uint64_t s = 0; s < RACE_SECONDS; s++) {
            total += race->tally[w][s];
            by_class[s % 2] += race->tally[w][s];
            if (RACE_START + s > last - RACE_WINDOW)
                in_window += race->tally[w][s];
        }
    veer_stats_view_reset(v);
    veer_stats_read_total(race->st, race->layout, 0, 0, VEER_STATS_READ_ALL, v);
    CHECK(total == atomic_load(&race->progress[0]) + atomic_load(&race->progress[1]));
    CHECK(veer_stats_counts_requests(&v->counts) == total && v->duration.count == total);
    CHECK(v->counts.classes[2] == by_class[0] && v->counts.classes[5] == by_class[1]);
    CHECK(v->counts.failures[VEER_STATS_FAIL_5XX] == by_class[1]);
    veer_stats_view_reset(wv);
    veer_stats_read_window(race->st, race->layout, 0, 0, last, RACE_WINDOW, wv);
    CHECK(veer_stats_counts_requests(&wv->counts) == in_window && wv->duration.count == in_window);
    bool per_second = true;
    for (uint64_t s = last - RACE_WINDOW + 1; s <= last; s++) {
        uint64_t want = race->tally[0][s - RACE_START] + race->tally[1][s - RACE_START];
        if (wv->duration.counts[veer_hist_index(race_value(s))] != want)
            per_second = false;
    }
    CHECK(per_second);
    veer_stats_counts_t ec = {0};
    veer_stats_endpoint_read_total(race->st, race->ep, &ec);
    CHECK(veer_stats_counts_requests(&ec) == total);
    memset(&ec, 0, sizeof ec);
    veer_stats_endpoint_read_window(race->st, race->ep, last, RACE_WINDOW, &ec);
    CHECK(veer_stats_counts_requests(&ec) == in_window);
    printf("test_stats: race: %llu requests by 2 writers, %llu reads, %llu in the last %d s\n",
           (unsigned long long)total, (unsigned long long)reads, (unsigned long long)in_window, RACE_WINDOW);

    free(v);
    free(wv);
    veer_stats_endpoint_free(race->ep);
    veer_stats_layout_free(race->layout);
    veer_stats_free(race->st);
    free(race);
}

int main(void)
{
    test_totals();
    test_window_rotation();
    test_window_memory_cap();
    test_reload_carry_over();
    test_endpoints();
    test_config();
    test_concurrent_readers();
    return check_summary("test_stats");
}
