/* metrics.h - what the admin API serves about traffic: GET /metrics (the
 * Prometheus text of SPEC's families: request stats from stats.h, weights
 * and endpoints from the runtime snapshot, connection and mitigation
 * counters from the workers, process metrics from /proc) and GET /v1/stats
 * (per route x cluster rate, success rate and percentiles as JSON).
 *
 * Built on the admin (main) thread from relaxed reads of per-worker data:
 * a scrape never takes a lock a worker waits on. */
#ifndef VEER_METRICS_H
#define VEER_METRICS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "prom.h"
#include "runtime.h"
#include "worker.h"

/* The /metrics text never grows past this; a scrape that would is refused
 * (500) and counted in scrape_overflows. */
#define VEER_METRICS_MAX_BYTES (64u * 1024u * 1024u)
/* /v1/stats without ?window= (capped at stats.window). */
#define VEER_METRICS_DEFAULT_WINDOW_S 30u

typedef struct veer_metrics_source_s {
    veer_runtime_t *rt;     /* rt->stats: the request stats (NULL: none) */
    veer_worker_t *workers; /* [worker_count], read with relaxed loads */
    uint32_t worker_count;
    uint64_t scrape_overflows; /* scrapes refused for VEER_METRICS_MAX_BYTES (main thread) */
    double started;            /* veer_metrics_now() when recording began: rates of a young process */
    struct veer_controller_s *canary; /* the veer_canary_* families (controller.h); NULL: none */
    struct veer_accesslog_s *access_log; /* veer_access_log_dropped_total (accesslog.h); NULL: none */
} veer_metrics_source_t;

/* Seconds of CLOCK_MONOTONIC, the clock stats slices are stamped with. */
double veer_metrics_now(void);

/* The whole /metrics text into b (initialised by the caller). 0, or -1
 * when it did not fit (do not serve it). */
int veer_metrics_prometheus(veer_metrics_source_t *src, veer_prom_buf_t *b);

/* "30s", "2m": whole seconds from 1 to max_s. 0, or -1 with a message. */
int veer_metrics_parse_window(const char *text, uint32_t max_s, uint32_t *out_s, char *err, size_t errlen);

/* GET /v1/stats: window_s seconds (already checked) up to now_s. NULL when
 * out of memory. */
cJSON *veer_metrics_stats_json(const veer_metrics_source_t *src, uint32_t window_s, double now);

/* The status page (GET /): one self-contained HTML document. */
extern const char veer_statuspage_html[];
extern const size_t veer_statuspage_html_len;

#endif
