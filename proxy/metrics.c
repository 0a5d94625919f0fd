/* metrics.c - GET /metrics and GET /v1/stats (metrics.h): request stats
 * merged from every worker, the snapshot's weights and endpoints, the
 * workers' counters and /proc, all read without a lock a worker could wait
 * on (per-worker counters are only ever incremented by their worker, so a
 * relaxed load of each is a moment's view). */
#include "metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "breaker.h"
#include "config.h"
#include "controller.h"
#include "outlier.h"
#include "resilience.h"
#include "stats.h"
#include "tls.h"

#define LOAD(p) atomic_load_explicit((p), memory_order_relaxed)

double veer_metrics_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- /metrics: families outside the request stats ------------------------ */

static void write_weights(veer_prom_buf_t *b, const veer_snapshot_t *snap)
{
    const veer_config_t *cfg = snap->config;
    veer_prom_family(b, "veer_route_weight", "gauge", "Relative weight of a cluster in a route's split.");
    for (size_t r = 0; r < cfg->route_count; r++) {
        const veer_route_weights_t *rw = &snap->routes[r];
        for (size_t i = 0; i < rw->count; i++) {
            veer_prom_label_t l[] = {{"route", cfg->routes[r].name},
                                     {"cluster", cfg->clusters[rw->split[i].cluster].name}};
            veer_prom_sample_u64(b, "veer_route_weight", l, 2, rw->split[i].weight);
        }
    }
    veer_prom_family(b, "veer_weights_generation", "gauge", "Generation of the route weights; bumps on every change.");
    veer_prom_sample_u64(b, "veer_weights_generation", NULL, 0, snap->generation);
}

static void write_upstreams(veer_prom_buf_t *b, const veer_snapshot_t *snap, uint32_t workers)
{
    const veer_config_t *cfg = snap->config;
    uint64_t *cx = calloc(cfg->cluster_count + 1, sizeof *cx);
    uint64_t *rq = calloc(cfg->cluster_count + 1, sizeof *rq);
    if (cx == NULL || rq == NULL) {
        b->overflow = true; /* out of memory: the text would be incomplete */
        free(cx);
        free(rq);
        return;
    }
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        const veer_endpoint_set_t *set = snap->cluster_endpoints[c];
        for (size_t i = 0; set != NULL && i < set->count; i++) {
            for (uint32_t w = 0; w < workers; w++) {
                cx[c] += __atomic_load_n(&set->endpoints[i]->slots[w].connections, __ATOMIC_RELAXED);
                rq[c] += __atomic_load_n(&set->endpoints[i]->slots[w].active_requests, __ATOMIC_RELAXED);
            }
        }
    }
    veer_prom_family(b, "veer_upstream_cx_active", "gauge", "Open upstream connections.");
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        veer_prom_label_t l[] = {{"cluster", cfg->clusters[c].name}};
        veer_prom_sample_u64(b, "veer_upstream_cx_active", l, 1, cx[c]);
    }
    veer_prom_family(b, "veer_upstream_rq_active", "gauge", "Requests in flight to the cluster's endpoints.");
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        veer_prom_label_t l[] = {{"cluster", cfg->clusters[c].name}};
        veer_prom_sample_u64(b, "veer_upstream_rq_active", l, 1, rq[c]);
    }
    free(cx);
    free(rq);
    veer_prom_family(b, "veer_endpoint_healthy", "gauge", "1 while the endpoint passes health checks.");
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        const veer_endpoint_set_t *set = snap->cluster_endpoints[c];
        for (size_t i = 0; set != NULL && i < set->count; i++) {
            veer_prom_label_t l[] = {{"cluster", cfg->clusters[c].name}, {"endpoint", set->endpoints[i]->name}};
            veer_prom_sample_u64(b, "veer_endpoint_healthy", l, 2, !LOAD(&set->endpoints[i]->unhealthy));
        }
    }
    veer_prom_family(b, "veer_endpoint_ejected", "gauge", "1 while outlier detection keeps the endpoint out.");
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        const veer_endpoint_set_t *set = snap->cluster_endpoints[c];
        for (size_t i = 0; set != NULL && i < set->count; i++) {
            veer_prom_label_t l[] = {{"cluster", cfg->clusters[c].name}, {"endpoint", set->endpoints[i]->name}};
            veer_prom_sample_u64(b, "veer_endpoint_ejected", l, 2, LOAD(&set->endpoints[i]->ejected));
        }
    }
}

/* Circuit breakers (process-wide atomics, any thread) and outlier ejections
 * (the detectors live on this, the main, thread). */
static void write_resilience(veer_prom_buf_t *b, const veer_config_t *cfg)
{
    veer_prom_family(b, "veer_upstream_rq_pending", "gauge", "Requests waiting for an upstream connection or stream.");
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        const veer_resil_cluster_t *rc = veer_resilience_cluster(&cfg->clusters[c]);
        veer_prom_label_t l[] = {{"cluster", cfg->clusters[c].name}};
        veer_prom_sample_u64(b, "veer_upstream_rq_pending", l, 1,
                             rc ? veer_breaker_active(&rc->breaker, VEER_BREAKER_PENDING) : 0);
    }
    veer_prom_family(b, "veer_circuit_breaker_open", "gauge", "1 while the breaker of that kind is at its limit.");
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        const veer_resil_cluster_t *rc = veer_resilience_cluster(&cfg->clusters[c]);
        for (int k = 0; k < VEER_BREAKER_KINDS; k++) {
            veer_prom_label_t l[] = {{"cluster", cfg->clusters[c].name}, {"kind", veer_breaker_kind_name(k)}};
            veer_prom_sample_u64(b, "veer_circuit_breaker_open", l, 2, rc ? veer_breaker_open(&rc->breaker, k) : 0);
        }
    }
    veer_prom_family(b, "veer_circuit_breaker_overflow_total", "counter",
                     "Requests refused (503, x-veer-overloaded) because a breaker was at its limit.");
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        const veer_resil_cluster_t *rc = veer_resilience_cluster(&cfg->clusters[c]);
        for (int k = 0; k < VEER_BREAKER_KINDS; k++) {
            veer_prom_label_t l[] = {{"cluster", cfg->clusters[c].name}, {"kind", veer_breaker_kind_name(k)}};
            veer_prom_sample_u64(b, "veer_circuit_breaker_overflow_total", l, 2,
                                 rc ? veer_breaker_overflows(&rc->breaker, k) : 0);
        }
    }
    veer_prom_family(b, "veer_outlier_ejections_total", "counter", "Endpoints ejected by outlier detection, by reason.");
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        veer_outlier_stats_t st;
        if (veer_resilience_outlier_stats(cfg->clusters[c].name, &st) < 0)
            memset(&st, 0, sizeof st); /* no detector: the family still lists the cluster */
        for (int r = 0; r < VEER_OUTLIER_REASON_COUNT; r++) {
            veer_prom_label_t l[] = {{"cluster", cfg->clusters[c].name}, {"reason", veer_outlier_reason_name(r)}};
            veer_prom_sample_u64(b, "veer_outlier_ejections_total", l, 2, st.ejections_total[r]);
        }
    }
}

/* A counter family with one sample per (label value, worker-summed counter). */
typedef struct counter_row_s {
    const char *value;
    uint64_t sum;
} counter_row_t;

static void write_rows(veer_prom_buf_t *b, const char *name, const char *type, const char *help,
                       const char *label, const counter_row_t *rows, size_t n)
{
    veer_prom_family(b, name, type, help);
    for (size_t i = 0; i < n; i++) {
        veer_prom_label_t l[] = {{label, rows[i].value}};
        veer_prom_sample_u64(b, name, l, 1, rows[i].sum);
    }
}

#define SUM(field)                                                                      \
    ({                                                                                  \
        uint64_t s_ = 0;                                                                \
        for (uint32_t w_ = 0; w_ < src->worker_count; w_++)                             \
            s_ += LOAD(&src->workers[w_].stats.field);                                  \
        s_;                                                                             \
    })

static void write_downstream(veer_prom_buf_t *b, const veer_metrics_source_t *src, const veer_config_t *cfg)
{
    /* Workers count connections for all listeners together; with one
     * listener the label names it, otherwise it is "" (every listener). */
    const char *listener = cfg->listener_count == 1 ? cfg->listeners[0].name : "";
    uint64_t total = SUM(downstream_cx_total), active = SUM(downstream_cx_active);
    uint64_t h2_total = SUM(h2_cx_total), h2_active = SUM(h2_cx_active);
    struct {
        const char *name, *help;
        uint64_t h1, h2;
    } fams[] = {
        {"veer_downstream_cx_active", "Open downstream connections.", active > h2_active ? active - h2_active : 0,
         h2_active},
        {"veer_downstream_cx_total", "Downstream connections accepted.", total > h2_total ? total - h2_total : 0,
         h2_total},
    };
    for (size_t f = 0; f < 2; f++) {
        veer_prom_family(b, fams[f].name, f == 0 ? "gauge" : "counter", fams[f].help);
        veer_prom_label_t l1[] = {{"listener", listener}, {"protocol", "http1"}};
        veer_prom_label_t l2[] = {{"listener", listener}, {"protocol", "h2"}};
        veer_prom_sample_u64(b, fams[f].name, l1, 2, fams[f].h1);
        veer_prom_sample_u64(b, fams[f].name, l2, 2, fams[f].h2);
    }
}

/* Completed upstream handshakes of every TLS cluster, full and resumed
 * (tls.session_reuse). */
static void write_tls_handshakes(veer_prom_buf_t *b, const veer_config_t *cfg)
{
    veer_prom_family(b, "veer_upstream_tls_handshakes_total", "counter",
                     "Upstream TLS handshakes completed, by whether they resumed a session.");
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        if (cfg->clusters[c].tls == NULL)
            continue;
        uint64_t full, resumed;
        veer_tls_upstream_handshakes(cfg->clusters[c].name, &full, &resumed);
        veer_prom_label_t lf[] = {{"cluster", cfg->clusters[c].name}, {"resumed", "false"}};
        veer_prom_label_t lr[] = {{"cluster", cfg->clusters[c].name}, {"resumed", "true"}};
        veer_prom_sample_u64(b, "veer_upstream_tls_handshakes_total", lf, 2, full);
        veer_prom_sample_u64(b, "veer_upstream_tls_handshakes_total", lr, 2, resumed);
    }
}

static const char *const TLS_REASONS[VEER_TLS_FAIL_KINDS] = {"protocol", "certificate", "closed", "timeout"};

static void write_workers(veer_prom_buf_t *b, const veer_metrics_source_t *src)
{
    veer_prom_family(b, "veer_tls_handshake_failures_total", "counter", "TLS handshakes that failed.");
    for (int side = 0; side < 2; side++) {
        for (int k = 0; k < VEER_TLS_FAIL_KINDS; k++) {
            uint64_t s = 0;
            for (uint32_t w = 0; w < src->worker_count; w++)
                s += LOAD(side == 0 ? &src->workers[w].stats.tls_downstream_failures[k]
                                    : &src->workers[w].stats.tls_upstream_failures[k]);
            veer_prom_label_t l[] = {{"side", side == 0 ? "downstream" : "upstream"}, {"reason", TLS_REASONS[k]}};
            veer_prom_sample_u64(b, "veer_tls_handshake_failures_total", l, 2, s);
        }
    }
    counter_row_t h2[] = {
        {"refused_stream", SUM(h2_refused_streams)},     {"stream_error", SUM(h2_stream_errors)},
        {"headers_too_large", SUM(h2_headers_too_large)}, {"rapid_reset", SUM(h2_rapid_reset)},
        {"continuation_flood", SUM(h2_continuation_flood)}, {"settings_flood", SUM(h2_settings_flood)},
        {"ping_flood", SUM(h2_ping_flood)},               {"empty_frame_flood", SUM(h2_empty_frame_flood)},
        {"priority_flood", SUM(h2_priority_flood)},       {"header_timeout", SUM(h2_header_timeouts)},
        {"idle_timeout", SUM(h2_idle_timeouts)},          {"protocol_error", SUM(h2_protocol_errors)},
    };
    write_rows(b, "veer_http2_mitigations_total", "counter",
               "HTTP/2 downstream streams refused or connections closed, by what triggered it.", "kind", h2,
               sizeof h2 / sizeof h2[0]);
    veer_prom_family(b, "veer_http2_streams_total", "counter", "HTTP/2 downstream streams opened.");
    veer_prom_sample_u64(b, "veer_http2_streams_total", NULL, 0, SUM(h2_streams_total));
    counter_row_t up[] = {
        {"connect_failure", SUM(upstream_connect_failures)},
        {"retry_on_reset", SUM(retries_on_reset)},
        {"pending_overflow", SUM(upstream_pending_overflow)},
        {"h2_resend", SUM(upstream_h2_resends)},
    };
    write_rows(b, "veer_upstream_events_total", "counter", "Upstream connection events, by kind.", "kind", up,
               sizeof up / sizeof up[0]);
    veer_prom_family(b, "veer_mirror_requests_total", "counter", "Canary mirror copies sent.");
    veer_prom_sample_u64(b, "veer_mirror_requests_total", NULL, 0, SUM(mirror_requests));
    veer_prom_family(b, "veer_mirror_failed_total", "counter", "Canary mirror copies that failed (5xx, reset, timeout, gRPC status).");
    veer_prom_sample_u64(b, "veer_mirror_failed_total", NULL, 0, SUM(mirror_failed));
    counter_row_t mirror[] = {
        {"in_flight_cap", SUM(mirror_dropped_cap)},
        {"body_too_large", SUM(mirror_dropped_body_too_large)},
        {"incomplete", SUM(mirror_dropped_incomplete)},
        {"too_many_headers", SUM(mirror_dropped_too_many_headers)},
        {"no_endpoint", SUM(mirror_dropped_no_endpoint)},
    };
    write_rows(b, "veer_mirror_dropped_total", "counter", "Requests not mirrored to the canary, by reason.", "reason",
               mirror, sizeof mirror / sizeof mirror[0]);
    veer_prom_family(b, "veer_upstream_cx_total", "counter", "Upstream connections opened.");
    veer_prom_sample_u64(b, "veer_upstream_cx_total", NULL, 0, SUM(upstream_cx_total));
    veer_prom_family(b, "veer_downstream_bad_requests_total", "counter", "Malformed downstream requests (400).");
    veer_prom_sample_u64(b, "veer_downstream_bad_requests_total", NULL, 0, SUM(bad_requests));
    veer_prom_family(b, "veer_local_replies_total", "counter", "Responses veer answered itself.");
    veer_prom_sample_u64(b, "veer_local_replies_total", NULL, 0, SUM(local_replies));
}

/* ---- process metrics from /proc ------------------------------------------ */

static ssize_t read_proc(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* Field 22 of /proc/self/stat (clock ticks after boot) plus btime. */
static double process_start_time(void)
{
    char stat[1024], sys[8192];
    if (read_proc("/proc/self/stat", stat, sizeof stat) < 0 || read_proc("/proc/stat", sys, sizeof sys) < 0)
        return -1;
    const char *p = strrchr(stat, ')'); /* comm may hold spaces */
    const char *bt = strstr(sys, "\nbtime ");
    if (p == NULL || bt == NULL)
        return -1;
    unsigned long long ticks = 0;
    /* after ") " come fields 3..: state is 3, starttime is 22 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &ticks) != 1)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)strtoull(bt + 7, NULL, 10) + (double)ticks / (double)(hz > 0 ? hz : 100);
}

static void write_process(veer_prom_buf_t *b)
{
    char statm[256];
    unsigned long long pages_total = 0, pages_rss = 0;
    if (read_proc("/proc/self/statm", statm, sizeof statm) > 0 &&
        sscanf(statm, "%llu %llu", &pages_total, &pages_rss) == 2) {
        veer_prom_family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        veer_prom_sample_u64(b, "process_resident_memory_bytes", NULL, 0,
                             pages_rss * (uint64_t)sysconf(_SC_PAGESIZE));
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                     ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
        veer_prom_family(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
        veer_prom_sample_double(b, "process_cpu_seconds_total", NULL, 0, cpu);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        uint64_t fds = 0;
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            fds += e->d_name[0] != '.';
        closedir(d);
        veer_prom_family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        veer_prom_sample_u64(b, "process_open_fds", NULL, 0, fds > 0 ? fds - 1 : 0); /* not the one reading */
    }
    double start = process_start_time();
    if (start >= 0) {
        veer_prom_family(b, "process_start_time_seconds", "gauge",
                         "Start time of the process since unix epoch in seconds.");
        veer_prom_sample_double(b, "process_start_time_seconds", NULL, 0, start);
    }
}

int veer_metrics_prometheus(veer_metrics_source_t *src, veer_prom_buf_t *b)
{
    veer_snapshot_t *snap = veer_runtime_acquire(src->rt);
    const veer_config_t *cfg = snap->config;
    if (src->rt->stats != NULL && snap->stats_layout != NULL)
        veer_prom_write_stats(b, src->rt->stats, snap->stats_layout, cfg->stats.histogram_buckets_us,
                              cfg->stats.histogram_bucket_count);
    write_weights(b, snap);
    write_upstreams(b, snap, src->worker_count);
    write_resilience(b, cfg);
    write_downstream(b, src, cfg);
    write_tls_handshakes(b, cfg);
    veer_snapshot_release(snap);
    write_workers(b, src);
    if (src->canary != NULL)
        veer_controller_write_metrics(src->canary, b);
    write_process(b);
    veer_prom_family(b, "veer_access_log_dropped_total", "counter",
                     "Access log lines dropped because a worker's buffer was full (never blocking a request).");
    veer_prom_sample_u64(b, "veer_access_log_dropped_total", NULL, 0,
                         src->access_log != NULL ? veer_accesslog_dropped(src->access_log) : 0);
    veer_prom_family(b, "veer_metrics_scrape_overflows_total", "counter",
                     "Scrapes refused because the text passed its size limit.");
    veer_prom_sample_u64(b, "veer_metrics_scrape_overflows_total", NULL, 0, src->scrape_overflows);
    if (veer_prom_buf_status(b) < 0) {
        src->scrape_overflows++;
        return -1;
    }
    return 0;
}

/* ---- /v1/stats ------------------------------------------------------------ */

int veer_metrics_parse_window(const char *text, uint32_t max_s, uint32_t *out_s, char *err, size_t errlen)
{
    uint64_t us = 0;
    if (text == NULL || veer_duration_parse_us(text, &us) < 0) {
        snprintf(err, errlen, "window: expected a duration such as \"30s\" or \"2m\"");
        return -1;
    }
    if (us == 0 || us % 1000000u != 0) {
        snprintf(err, errlen, "window: must be a whole number of seconds, at least 1s");
        return -1;
    }
    if (us / 1000000u > max_s) {
        snprintf(err, errlen, "window: at most %us (stats.window)", max_s);
        return -1;
    }
    *out_s = (uint32_t)(us / 1000000u);
    return 0;
}

static void add_ms(cJSON *obj, const char *key, const veer_hist_t *h, uint32_t per_million)
{
    if (h->count == 0)
        cJSON_AddNullToObject(obj, key);
    else
        cJSON_AddNumberToObject(obj, key, (double)veer_hist_value_at(h, per_million) / 1000.0);
}

/* requests, rate, success rate (percent, null without requests), failures
 * by reason, status classes and percentiles of one view. */
static cJSON *view_json(const veer_stats_view_t *v, double seconds)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    uint64_t n = veer_stats_counts_requests(&v->counts);
    uint64_t failed = veer_stats_counts_failures(&v->counts);
    cJSON_AddNumberToObject(o, "requests", (double)n);
    if (seconds > 0)
        cJSON_AddNumberToObject(o, "rate", (double)n / seconds);
    if (n > 0)
        cJSON_AddNumberToObject(o, "success_rate", 100.0 * (double)(n - failed) / (double)n);
    else
        cJSON_AddNullToObject(o, "success_rate");
    cJSON *fails = cJSON_AddObjectToObject(o, "failures");
    for (int r = 1; r < VEER_STATS_FAIL_COUNT; r++)
        cJSON_AddNumberToObject(fails, veer_stats_fail_name((veer_stats_fail_t)r), (double)v->counts.failures[r]);
    cJSON *classes = cJSON_AddObjectToObject(o, "codes");
    for (int c = 0; c < VEER_STATS_CLASS_COUNT; c++)
        cJSON_AddNumberToObject(classes, veer_stats_class_name(c), (double)v->counts.classes[c]);
    add_ms(o, "p50_ms", &v->duration, 500000);
    add_ms(o, "p90_ms", &v->duration, 900000);
    add_ms(o, "p99_ms", &v->duration, 990000);
    add_ms(o, "p999_ms", &v->duration, 999000);
    return o;
}

static uint32_t split_weight(const veer_route_weights_t *rw, size_t c, bool *in_split)
{
    for (size_t i = 0; i < rw->count; i++) {
        if ((size_t)rw->split[i].cluster == c) {
            *in_split = true;
            return rw->split[i].weight;
        }
    }
    *in_split = false;
    return 0;
}

static cJSON *endpoints_json(const veer_stats_t *st, const veer_endpoint_set_t *set, uint64_t now_s,
                             uint32_t window_s)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr != NULL && set != NULL && i < set->count; i++) {
        const veer_endpoint_t *ep = set->endpoints[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, e);
        cJSON_AddStringToObject(e, "address", ep->name);
        cJSON_AddBoolToObject(e, "healthy", !LOAD(&ep->unhealthy));
        cJSON_AddBoolToObject(e, "ejected", LOAD(&ep->ejected));
        cJSON_AddBoolToObject(e, "retired", LOAD(&ep->retired));
        if (ep->stats == NULL)
            continue;
        veer_stats_counts_t c = {0};
        veer_stats_endpoint_read_window(st, ep->stats, now_s, window_s, &c);
        uint64_t n = veer_stats_counts_requests(&c), failed = veer_stats_counts_failures(&c);
        cJSON_AddNumberToObject(e, "requests", (double)n);
        if (n > 0)
            cJSON_AddNumberToObject(e, "success_rate", 100.0 * (double)(n - failed) / (double)n);
        else
            cJSON_AddNullToObject(e, "success_rate");
    }
    return arr;
}

cJSON *veer_metrics_stats_json(const veer_metrics_source_t *src, uint32_t window_s, double now)
{
    uint64_t now_s = (uint64_t)now;
    /* A process younger than the window has seen traffic for less time. */
    double rate_s = now - src->started;
    if (rate_s > window_s || src->started <= 0)
        rate_s = window_s;
    if (rate_s < 1)
        rate_s = 1;
    const veer_stats_t *st = src->rt->stats;
    cJSON *body = cJSON_CreateObject();
    if (body == NULL)
        return NULL;
    veer_stats_view_t *v = malloc(sizeof *v); /* three dense histograms: too big for the stack */
    if (v == NULL) {
        cJSON_Delete(body);
        return NULL;
    }
    veer_snapshot_t *snap = veer_runtime_acquire(src->rt);
    const veer_config_t *cfg = snap->config;
    const veer_stats_layout_t *layout = snap->stats_layout;
    cJSON_AddNumberToObject(body, "window_seconds", window_s);
    cJSON_AddNumberToObject(body, "rate_seconds", rate_s);
    cJSON_AddNumberToObject(body, "generation", (double)snap->generation);
    cJSON *routes = cJSON_AddArrayToObject(body, "routes");
    for (size_t r = 0; st != NULL && layout != NULL && r < cfg->route_count; r++) {
        cJSON *ro = cJSON_CreateObject();
        cJSON_AddItemToArray(routes, ro);
        cJSON_AddStringToObject(ro, "name", cfg->routes[r].name);
        cJSON *clusters = cJSON_AddArrayToObject(ro, "clusters");
        for (size_t c = 0; c < cfg->cluster_count; c++) {
            bool in_split = false;
            uint32_t weight = split_weight(&snap->routes[r], c, &in_split);
            if (!in_split && !veer_stats_has_data(st, layout, (int)r, (int)c))
                continue;
            cJSON *co = cJSON_CreateObject();
            cJSON_AddItemToArray(clusters, co);
            cJSON_AddStringToObject(co, "name", cfg->clusters[c].name);
            cJSON_AddNumberToObject(co, "weight", weight);
            veer_stats_view_reset(v);
            veer_stats_read_window(st, layout, (int)r, (int)c, now_s, window_s, v);
            cJSON_AddItemToObject(co, "window", view_json(v, rate_s));
            veer_stats_view_reset(v);
            veer_stats_read_total(st, layout, (int)r, (int)c, VEER_STATS_READ_COUNTS | VEER_STATS_READ_DURATION, v);
            cJSON_AddItemToObject(co, "total", view_json(v, 0));
        }
    }
    cJSON *clusters = cJSON_AddArrayToObject(body, "clusters");
    for (size_t c = 0; c < cfg->cluster_count; c++) {
        cJSON *co = cJSON_CreateObject();
        cJSON_AddItemToArray(clusters, co);
        cJSON_AddStringToObject(co, "name", cfg->clusters[c].name);
        cJSON_AddItemToObject(co, "endpoints", endpoints_json(st, snap->cluster_endpoints[c], now_s, window_s));
    }
    veer_snapshot_release(snap);
    free(v);
    return body;
}
