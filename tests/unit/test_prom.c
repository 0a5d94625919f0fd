/* test_prom.c - the Prometheus text writer: exact text for tiny inputs (label
 * and HELP escaping, seconds, histograms, the SPEC families), the built-in
 * bucket list and its 5% promise, the size cap, and a populated stats set
 * (50 routes x 3 clusters) that `promtool check metrics` must accept; the
 * time to write it is measured and printed. */
#include "prom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define NONE VEER_STATS_NO_TIME
#define PROMTOOL "/usr/bin/promtool"

static bool text_is(const veer_prom_buf_t *b, const char *want)
{
    if (b->len == strlen(want) && memcmp(b->data, want, b->len) == 0)
        return true;
    fprintf(stderr, "--- got:\n%.*s--- want:\n%s---\n", (int)b->len, b->data ? b->data : "", want);
    return false;
}

static void test_seconds(void)
{
    char out[32];
    static const struct {
        uint64_t us;
        const char *text;
    } cases[] = {
        {0, "0"},           {1, "0.000001"},  {10, "0.00001"},        {1500, "0.0015"},
        {1092, "0.001092"}, {2000000, "2"},   {1234567, "1.234567"}, {100000000, "100"},
        {10310000, "10.31"}, {UINT64_MAX, "18446744073709.551615"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = veer_prom_format_seconds(out, cases[i].us);
        CHECK(n == strlen(cases[i].text) && strcmp(out, cases[i].text) == 0);
    }
}

static void test_lines(void)
{
    veer_prom_buf_t b;
    veer_prom_buf_init(&b, 1 << 20);
    veer_prom_family(&b, "x_total", "counter", "a\\b\nc \"quoted\"");
    veer_prom_label_t labels[] = {{"route", "a\\b\"c\nd"}, {"cluster", ""}};
    veer_prom_sample_u64(&b, "x_total", labels, 2, 5);
    veer_prom_sample_u64(&b, "x_total", NULL, 0, 18446744073709551615ull);
    veer_prom_family(&b, "y", "gauge", "ratio");
    veer_prom_label_t one = {"k", "v"};
    veer_prom_sample_double(&b, "y", &one, 1, 0.5);
    veer_prom_sample_double(&b, "y", NULL, 0, 0.1);
    veer_prom_sample_double(&b, "y", NULL, 0, 1e-7);
    veer_prom_sample_double(&b, "y", NULL, 0, NAN);
    veer_prom_sample_double(&b, "y", NULL, 0, -INFINITY);
    CHECK(text_is(&b, "# HELP x_total a\\\\b\\nc \"quoted\"\n"
                      "# TYPE x_total counter\n"
                      "x_total{route=\"a\\\\b\\\"c\\nd\",cluster=\"\"} 5\n"
                      "x_total 18446744073709551615\n"
                      "# HELP y ratio\n"
                      "# TYPE y gauge\n"
                      "y{k=\"v\"} 0.5\n"
                      "y 0.1\n"
                      "y 1e-07\n"
                      "y NaN\n"
                      "y -Inf\n"));
    CHECK(veer_prom_buf_status(&b) == 0);

    /* a histogram: cumulative buckets, +Inf == _count, _sum in seconds */
    veer_prom_buf_free(&b);
    veer_prom_buf_init(&b, 1 << 20);
    veer_hist_t *h = malloc(sizeof *h);
    veer_hist_reset(h);
    veer_hist_record(h, 500);
    veer_hist_record(h, 1500);
    veer_hist_record(h, 1500);
    veer_hist_record(h, 3000);
    const uint64_t les[] = {1000, 2000};
    veer_prom_label_t r = {"route", "r"};
    veer_prom_histogram(&b, "h_seconds", &r, 1, h, les, 2);
    veer_prom_histogram(&b, "h_seconds", NULL, 0, h, les, 1);
    CHECK(text_is(&b, "h_seconds_bucket{route=\"r\",le=\"0.001\"} 1\n"
                      "h_seconds_bucket{route=\"r\",le=\"0.002\"} 3\n"
                      "h_seconds_bucket{route=\"r\",le=\"+Inf\"} 4\n"
                      "h_seconds_sum{route=\"r\"} 0.0065\n"
                      "h_seconds_count{route=\"r\"} 4\n"
                      "h_seconds_bucket{le=\"0.001\"} 1\n"
                      "h_seconds_bucket{le=\"+Inf\"} 4\n"
                      "h_seconds_sum 0.0065\n"
                      "h_seconds_count 4\n"));
    /* too many bounds: refused, and the text is marked incomplete */
    veer_prom_histogram(&b, "h_seconds", NULL, 0, h, les, VEER_PROM_MAX_BUCKETS + 1);
    CHECK(veer_prom_buf_status(&b) == -1);
    free(h);
    veer_prom_buf_free(&b);

    /* the size cap: the text never grows past it and the writer says so */
    veer_prom_buf_init(&b, 44);
    veer_prom_family(&b, "abc", "counter", "0123456789");
    CHECK(veer_prom_buf_status(&b) == 0 && b.len == 41);
    veer_prom_sample_u64(&b, "abc", NULL, 0, 1);
    CHECK(veer_prom_buf_status(&b) == -1 && b.len <= 44);
    veer_prom_append(&b, "x", 1);
    CHECK(b.len <= 44);
    veer_prom_buf_free(&b);
}

static void test_spec_families(void)
{
    veer_stats_limits_t lim = {2, 60, 64, 1 << 20};
    veer_stats_t *st = veer_stats_new(&lim);
    const char *routes[] = {"embed"}, *clusters[] = {"blue", "canary"};
    veer_stats_layout_t *l = veer_stats_layout_new(st, routes, 1, clusters, 2);
    veer_stats_worker_t *w0 = veer_stats_worker(st, 0), *w1 = veer_stats_worker(st, 1);
    veer_stats_record_request(w0, l, 0, 0, NULL, 200, VEER_STATS_FAIL_NONE, 1500, 300, 700, 1);
    veer_stats_record_request(w1, l, 0, 0, NULL, 503, VEER_STATS_FAIL_OVERFLOW, 40, NONE, NONE, 1);
    veer_stats_record_request(w1, l, -1, -1, NULL, 404, VEER_STATS_FAIL_NONE, 20, NONE, NONE, 1);
    const uint64_t les[] = {1000, 2000};
    veer_prom_buf_t b;
    veer_prom_buf_init(&b, 1 << 20);
    CHECK(veer_prom_write_stats(&b, st, l, les, 2) == 0);
    CHECK(text_is(
        &b,
        "# HELP veer_requests_total Requests by route, cluster and class of the status sent to the client.\n"
        "# TYPE veer_requests_total counter\n"
        "veer_requests_total{route=\"embed\",cluster=\"blue\",code_class=\"1xx\"} 0\n"
        "veer_requests_total{route=\"embed\",cluster=\"blue\",code_class=\"2xx\"} 1\n"
        "veer_requests_total{route=\"embed\",cluster=\"blue\",code_class=\"3xx\"} 0\n"
        "veer_requests_total{route=\"embed\",cluster=\"blue\",code_class=\"4xx\"} 0\n"
        "veer_requests_total{route=\"embed\",cluster=\"blue\",code_class=\"5xx\"} 1\n"
        "veer_requests_total{route=\"\",cluster=\"\",code_class=\"1xx\"} 0\n"
        "veer_requests_total{route=\"\",cluster=\"\",code_class=\"2xx\"} 0\n"
        "veer_requests_total{route=\"\",cluster=\"\",code_class=\"3xx\"} 0\n"
        "veer_requests_total{route=\"\",cluster=\"\",code_class=\"4xx\"} 1\n"
        "veer_requests_total{route=\"\",cluster=\"\",code_class=\"5xx\"} 0\n"
        "# HELP veer_request_failures_total Requests that count as failures in the success rate, by reason.\n"
        "# TYPE veer_request_failures_total counter\n"
        "veer_request_failures_total{route=\"embed\",cluster=\"blue\",reason=\"5xx\"} 0\n"
        "veer_request_failures_total{route=\"embed\",cluster=\"blue\",reason=\"reset\"} 0\n"
        "veer_request_failures_total{route=\"embed\",cluster=\"blue\",reason=\"connect\"} 0\n"
        "veer_request_failures_total{route=\"embed\",cluster=\"blue\",reason=\"timeout\"} 0\n"
        "veer_request_failures_total{route=\"embed\",cluster=\"blue\",reason=\"overflow\"} 1\n"
        "veer_request_failures_total{route=\"embed\",cluster=\"blue\",reason=\"grpc\"} 0\n"
        "veer_request_failures_total{route=\"\",cluster=\"\",reason=\"5xx\"} 0\n"
        "veer_request_failures_total{route=\"\",cluster=\"\",reason=\"reset\"} 0\n"
        "veer_request_failures_total{route=\"\",cluster=\"\",reason=\"connect\"} 0\n"
        "veer_request_failures_total{route=\"\",cluster=\"\",reason=\"timeout\"} 0\n"
        "veer_request_failures_total{route=\"\",cluster=\"\",reason=\"overflow\"} 0\n"
        "veer_request_failures_total{route=\"\",cluster=\"\",reason=\"grpc\"} 0\n"
        "# HELP veer_request_duration_seconds Time from the first byte of the request to the last byte of the "
        "response.\n"
        "# TYPE veer_request_duration_seconds histogram\n"
        "veer_request_duration_seconds_bucket{route=\"embed\",cluster=\"blue\",le=\"0.001\"} 1\n"
        "veer_request_duration_seconds_bucket{route=\"embed\",cluster=\"blue\",le=\"0.002\"} 2\n"
        "veer_request_duration_seconds_bucket{route=\"embed\",cluster=\"blue\",le=\"+Inf\"} 2\n"
        "veer_request_duration_seconds_sum{route=\"embed\",cluster=\"blue\"} 0.00154\n"
        "veer_request_duration_seconds_count{route=\"embed\",cluster=\"blue\"} 2\n"
        "veer_request_duration_seconds_bucket{route=\"\",cluster=\"\",le=\"0.001\"} 1\n"
        "veer_request_duration_seconds_bucket{route=\"\",cluster=\"\",le=\"0.002\"} 1\n"
        "veer_request_duration_seconds_bucket{route=\"\",cluster=\"\",le=\"+Inf\"} 1\n"
        "veer_request_duration_seconds_sum{route=\"\",cluster=\"\"} 0.00002\n"
        "veer_request_duration_seconds_count{route=\"\",cluster=\"\"} 1\n"
        "# HELP veer_upstream_connect_duration_seconds Time to set up a new upstream connection, TLS included.\n"
        "# TYPE veer_upstream_connect_duration_seconds histogram\n"
        "veer_upstream_connect_duration_seconds_bucket{cluster=\"blue\",le=\"0.001\"} 1\n"
        "veer_upstream_connect_duration_seconds_bucket{cluster=\"blue\",le=\"0.002\"} 1\n"
        "veer_upstream_connect_duration_seconds_bucket{cluster=\"blue\",le=\"+Inf\"} 1\n"
        "veer_upstream_connect_duration_seconds_sum{cluster=\"blue\"} 0.0003\n"
        "veer_upstream_connect_duration_seconds_count{cluster=\"blue\"} 1\n"
        "# HELP veer_stats_dropped_total Requests or durations the statistics could not record: no_series "
        "(stats.max_series reached), out_of_memory, window_memory (a window duration; stats.max_window_bytes "
        "reached).\n"
        "# TYPE veer_stats_dropped_total counter\n"
        "veer_stats_dropped_total{reason=\"no_series\"} 0\n"
        "veer_stats_dropped_total{reason=\"out_of_memory\"} 0\n"
        "veer_stats_dropped_total{reason=\"window_memory\"} 0\n"));

    /* time to first byte, outside the SPEC families */
    veer_prom_buf_free(&b);
    veer_prom_buf_init(&b, 1 << 20);
    veer_prom_write_first_byte_durations(&b, st, l, les, 1);
#define TTFB "veer_upstream_first_byte_duration_seconds"
    CHECK(text_is(&b, "# HELP " TTFB " Time from the first byte of the request to the first byte of the upstream "
                      "response.\n"
                      "# TYPE " TTFB " histogram\n"
                      TTFB "_bucket{route=\"embed\",cluster=\"blue\",le=\"0.001\"} 1\n"
                      TTFB "_bucket{route=\"embed\",cluster=\"blue\",le=\"+Inf\"} 1\n"
                      TTFB "_sum{route=\"embed\",cluster=\"blue\"} 0.0007\n"
                      TTFB "_count{route=\"embed\",cluster=\"blue\"} 1\n"
                      TTFB "_bucket{route=\"\",cluster=\"\",le=\"0.001\"} 0\n"
                      TTFB "_bucket{route=\"\",cluster=\"\",le=\"+Inf\"} 0\n"
                      TTFB "_sum{route=\"\",cluster=\"\"} 0\n"
                      TTFB "_count{route=\"\",cluster=\"\"} 0\n"));
#undef TTFB
    veer_prom_buf_free(&b);
    veer_stats_layout_free(l);
    veer_stats_free(st);
}

static void test_default_buckets(void)
{
    const uint64_t *les = veer_prom_default_buckets_us;
    size_t n = veer_prom_default_bucket_count;
    CHECK(n == 110 && n <= VEER_PROM_MAX_BUCKETS);
    bool increasing = true;
    double worst_ratio = 0;
    for (size_t i = 1; i < n; i++) {
        increasing = increasing && les[i] > les[i - 1];
        if (les[i - 1] >= 1000 && les[i] <= 10310000 && (double)les[i] / (double)les[i - 1] > worst_ratio)
            worst_ratio = (double)les[i] / (double)les[i - 1];
    }
    CHECK(increasing);
    CHECK(les[2] == 1000 && les[n - 3] >= 10000000 && les[n - 1] == 100000000 && les[n - 1] <= VEER_HIST_MAX_VALUE);
    CHECK(worst_ratio <= 1.093);

    /* The promise: for a P99 anywhere in [1ms, 10s], the le bucket that holds
     * it (as Prometheus sees it: cumulative counts at these bounds) has a
     * geometric middle within 5% of it. 99 requests at v, one far slower. */
    veer_hist_t *h = malloc(sizeof *h);
    uint64_t cumulative[VEER_PROM_MAX_BUCKETS];
    double worst = 0;
    for (int k = 0; k <= 8000; k++) { /* steps of 0.12% */
        uint64_t v = (uint64_t)llround(1000.0 * pow(10000.0, k / 8000.0));
        veer_hist_reset(h);
        veer_hist_record_n(h, v, 99);
        veer_hist_record(h, 1000000000);
        veer_hist_cumulative(h, les, n, cumulative);
        size_t i = 0;
        while (i < n && cumulative[i] < 99)
            i++;
        if (i == 0 || i == n) {
            worst = 1;
            break;
        }
        double middle = sqrt((double)les[i - 1] * (double)les[i]);
        double error = fabs(middle - (double)v) / (double)v;
        if (error > worst)
            worst = error;
    }
    CHECK(worst <= 0.05);
    printf("test_prom: default buckets: %zu bounds (+Inf), worst step x%.4f, worst P99 error 1ms..10s %.2f%%\n", n,
           worst_ratio, worst * 100);
    free(h);
}

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Histogram lines of one family: per series, counts never go down and the
 * +Inf bucket equals _count. */
static bool histograms_consistent(const char *text, size_t len, const char *family)
{
    char bucket[128], count[128];
    snprintf(bucket, sizeof bucket, "%s_bucket{", family);
    snprintf(count, sizeof count, "%s_count", family);
    uint64_t last = 0, inf = 0;
    bool ok = true;
    int series = 0;
    for (const char *line = text; line < text + len;) {
        const char *end = memchr(line, '\n', (size_t)(text + len - line));
        if (!end)
            return false;
        const char *value = end;
        while (value > line && value[-1] != ' ')
            value--;
        uint64_t v = strtoull(value, NULL, 10);
        size_t line_len = (size_t)(end - line);
        if (line_len > strlen(bucket) && memcmp(line, bucket, strlen(bucket)) == 0) {
            bool first = memmem(line, (size_t)(end - line), "le=\"0.0001\"", 11) != NULL;
            if (!first && v < last)
                ok = false;
            last = v;
            if (memmem(line, (size_t)(end - line), "le=\"+Inf\"", 9))
                inf = v;
        } else if (line_len > strlen(count) && memcmp(line, count, strlen(count)) == 0) {
            if (v != inf)
                ok = false;
            series++;
        }
        line = end + 1;
    }
    return ok && series > 0;
}

static void test_promtool(void)
{
    enum { ROUTES = 50, CLUSTERS = 3, REQUESTS = 200000 };
    veer_stats_limits_t lim = {2, 60, 4096, 8u << 20};
    veer_stats_t *st = veer_stats_new(&lim);
    char names[ROUTES][32];
    const char *routes[ROUTES];
    for (int r = 0; r < ROUTES; r++) {
        snprintf(names[r], sizeof names[r], "route-%02d", r);
        routes[r] = names[r];
    }
    routes[7] = "we\"ird\\route\nname"; /* any bytes survive escaping */
    const char *clusters[CLUSTERS] = {"blue", "green", "canary"};
    veer_stats_layout_t *l = veer_stats_layout_new(st, routes, ROUTES, clusters, CLUSTERS);
    static const int statuses[] = {200, 200, 200, 200, 201, 204, 301, 404, 429, 500, 502, 503, 504, 101};
    for (int i = 0; i < REQUESTS; i++) {
        uint64_t x = rng_next();
        int route = (int)(x % ROUTES), cluster = (int)((x >> 8) % CLUSTERS);
        int status = statuses[(x >> 16) % (sizeof statuses / sizeof statuses[0])];
        veer_stats_fail_t fail = status >= 500 ? (veer_stats_fail_t)(1 + (x >> 24) % 6) : VEER_STATS_FAIL_NONE;
        uint64_t duration = 100 + (x >> 32) % 3000000; /* up to 3 s */
        uint64_t connect = (x >> 40) % 4 == 0 ? 50 + (x >> 44) % 5000 : NONE;
        veer_stats_record_request(veer_stats_worker(st, (uint32_t)(x >> 60) & 1), l, route, cluster, NULL, status,
                                  fail, duration, connect, duration / 2, (uint64_t)(i / 5000));
    }
    veer_stats_record_request(veer_stats_worker(st, 0), l, -1, -1, NULL, 404, VEER_STATS_FAIL_NONE, 15, NONE, NONE,
                              40);

    veer_prom_buf_t b;
    double best = 1e9;
    for (int round = 0; round < 5; round++) {
        veer_prom_buf_init(&b, 64u << 20);
        double start = now_ms();
        int rc = veer_prom_write_stats(&b, st, l, NULL, 0);
        double took = now_ms() - start;
        if (took < best)
            best = took;
        CHECK(rc == 0);
        if (round < 4)
            veer_prom_buf_free(&b);
    }
    size_t lines = 0;
    for (size_t i = 0; i < b.len; i++)
        lines += b.data[i] == '\n';
    printf("test_prom: /metrics for %d routes x %d clusters (+ no route), %zu buckets: %zu lines, %zu bytes, "
           "built in %.2f ms (best of 5; target < 10 ms)\n",
           ROUTES, CLUSTERS, veer_prom_default_bucket_count + 1, lines, b.len, best);
    CHECK(histograms_consistent(b.data, b.len, "veer_request_duration_seconds"));
    CHECK(histograms_consistent(b.data, b.len, "veer_upstream_connect_duration_seconds"));
    CHECK(memmem(b.data, b.len, "route=\"we\\\"ird\\\\route\\nname\"", 28) != NULL);

    char path[] = "/tmp/veer-test-prom-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, b.data, b.len) == (ssize_t)b.len);
        close(fd);
        if (access(PROMTOOL, X_OK) != 0) {
            failures++;
            fprintf(stderr, "test_prom: %s not found: apt-get install -y prometheus\n", PROMTOOL);
        } else {
            char cmd[256], report[4096];
            snprintf(cmd, sizeof cmd, "%s check metrics < %s 2>&1", PROMTOOL, path);
            FILE *p = popen(cmd, "r");
            size_t got = p ? fread(report, 1, sizeof report - 1, p) : 0;
            report[got] = '\0';
            int status = p ? pclose(p) : -1;
            CHECK(status == 0);
            CHECK(got == 0);
            if (status != 0 || got)
                fprintf(stderr, "promtool (exit %d) said:\n%s\n", status, report);
        }
        unlink(path);
    }
    veer_prom_buf_free(&b);
    veer_stats_layout_free(l);
    veer_stats_free(st);
}

int main(void)
{
    test_seconds();
    test_lines();
    test_spec_families();
    test_default_buckets();
    test_promtool();
    return check_summary("test_prom");
}
