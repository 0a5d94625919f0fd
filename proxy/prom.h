/* prom.h - the Prometheus text exposition format 0.0.4 for GET /metrics: a
 * bounded, growable text buffer, writers for one family, one sample and one
 * histogram, and the SPEC's request families (requests, failures, request
 * and connect durations) written from a merged stats view.
 *
 * Names, HELP texts and label names come from veer's code; label values are
 * escaped (backslash, double quote, newline), so any route or cluster name
 * is safe. Counters end in _total; times are seconds; histograms have
 * cumulative _bucket lines ending with le="+Inf", then _sum and _count. */
#ifndef VEER_PROM_H
#define VEER_PROM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "histogram.h"
#include "stats.h"

/* The built-in `le` list (stats.histogram_buckets when not set), in us:
 * 100us, 500us, then 1ms to 10.31s in 106 steps of at most x1.093 (4
 * significant digits), then 30s and 100s: 110 bounds, 111 bucket lines with
 * +Inf. A P99 between 1ms and 10s lies in a bucket whose bounds are at most
 * x1.093 apart, each moved by at most 0.39% by the histogram's rounding
 * (histogram.h), so the bucket's geometric middle is within 4.95% of it. */
extern const uint64_t veer_prom_default_buckets_us[];
extern const size_t veer_prom_default_bucket_count;

#define VEER_PROM_MAX_BUCKETS 256 /* le bounds per histogram (config.c enforces it too) */

typedef struct veer_prom_buf_s {
    char *data; /* not NUL-terminated */
    size_t len, cap;
    size_t max;    /* the text never grows past this */
    bool overflow; /* something did not fit (max or memory): the text is incomplete */
} veer_prom_buf_t;

void veer_prom_buf_init(veer_prom_buf_t *b, size_t max_bytes);
void veer_prom_buf_free(veer_prom_buf_t *b);
/* 0, or -1 once anything did not fit: do not serve the text. */
int veer_prom_buf_status(const veer_prom_buf_t *b);
void veer_prom_append(veer_prom_buf_t *b, const char *text, size_t len);

typedef struct veer_prom_label_s {
    const char *name;  /* a valid label name */
    const char *value; /* any bytes but NUL; escaped on output */
} veer_prom_label_t;

/* "# HELP name help" (help escaped) and "# TYPE name type"; type is
 * "counter", "gauge" or "histogram". Once per family, before its samples. */
void veer_prom_family(veer_prom_buf_t *b, const char *name, const char *type, const char *help);
void veer_prom_sample_u64(veer_prom_buf_t *b, const char *name, const veer_prom_label_t *labels, size_t n,
                          uint64_t value);
/* NaN and infinities are written as NaN, +Inf, -Inf. */
void veer_prom_sample_double(veer_prom_buf_t *b, const char *name, const veer_prom_label_t *labels, size_t n,
                             double value);
/* name_bucket{...,le="..."} for each bound (microseconds, written in
 * seconds) and +Inf, name_sum in seconds, name_count. les strictly
 * increasing, at most VEER_PROM_MAX_BUCKETS; NULL: the built-in list. */
void veer_prom_histogram(veer_prom_buf_t *b, const char *name, const veer_prom_label_t *labels, size_t n,
                         const veer_hist_t *h, const uint64_t *les_us, size_t nle);

/* Microseconds as seconds, exactly and shortest: 1500 -> "0.0015",
 * 2000000 -> "2". out needs 32 bytes. Returns the length. */
size_t veer_prom_format_seconds(char *out, uint64_t us);

/* The SPEC families over the series of layout that have seen a request:
 *   veer_requests_total{route,cluster,code_class}       (1xx..5xx)
 *   veer_request_failures_total{route,cluster,reason}   (5xx reset connect timeout overflow grpc)
 *   veer_request_duration_seconds{route,cluster}        histogram
 *   veer_upstream_connect_duration_seconds{cluster}     histogram, every route merged
 *   veer_stats_dropped_total{reason}                    what the stats could not record
 * A request without a route (404) or cluster has route="" / cluster="".
 * les: NULL for the built-in list. Returns veer_prom_buf_status(b). */
int veer_prom_write_stats(veer_prom_buf_t *b, const veer_stats_t *st, const veer_stats_layout_t *layout,
                          const uint64_t *les_us, size_t nle);

/* Each family of veer_prom_write_stats on its own, plus one outside SPEC:
 *   veer_upstream_first_byte_duration_seconds{route,cluster}  histogram */
void veer_prom_write_requests(veer_prom_buf_t *b, const veer_stats_t *st, const veer_stats_layout_t *layout);
void veer_prom_write_failures(veer_prom_buf_t *b, const veer_stats_t *st, const veer_stats_layout_t *layout);
void veer_prom_write_durations(veer_prom_buf_t *b, const veer_stats_t *st, const veer_stats_layout_t *layout,
                               const uint64_t *les_us, size_t nle);
void veer_prom_write_connect_durations(veer_prom_buf_t *b, const veer_stats_t *st,
                                       const veer_stats_layout_t *layout, const uint64_t *les_us, size_t nle);
void veer_prom_write_first_byte_durations(veer_prom_buf_t *b, const veer_stats_t *st,
                                          const veer_stats_layout_t *layout, const uint64_t *les_us, size_t nle);
void veer_prom_write_stats_health(veer_prom_buf_t *b, const veer_stats_t *st);

#endif
