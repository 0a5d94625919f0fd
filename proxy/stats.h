/* stats.h - request statistics: per worker, per (route, cluster) series and
 * per endpoint series of response classes, failures by reason and latency
 * histograms, both since start and over a sliding window of 1-second slices.
 *
 * Writers never lock and never share a cache line: each worker records only
 * into its own veer_stats_worker_t (and its own part of an endpoint series).
 * Readers (admin, canary controller) merge every worker's data on any thread,
 * with relaxed atomic loads for counters that only grow and a seqlock per
 * window slice for the slices that writers recycle; see stats.c for why that
 * is consistent. Pure logic: no clock, the caller passes the time in seconds
 * (one monotonic clock for writers and readers), so tests drive it.
 *
 * Series are named, not numbered: (route name, cluster name) pairs get an id
 * from a process-wide registry the first time a config uses them, and a
 * layout maps one config's (route index, cluster index) to those ids. A
 * reload builds a new layout over the same ids, so counters, histograms and
 * windows carry over by name; requests still in flight on the old config
 * record into the same series. Series of removed routes keep their data (and
 * their id) and reappear if the name comes back; only the series of the
 * current layout are exported. */
#ifndef VEER_STATS_H
#define VEER_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "histogram.h"

/* Response classes: [0] requests answered with no status (the client went
 * away first), [1]..[5] 1xx..5xx. */
enum { VEER_STATS_CLASS_COUNT = 6 };

/* Why a request failed, for the success rate; each failed request has one
 * reason (the caller picks: an upstream reset answered by a local 502 is
 * RESET, not 5XX). NONE: the request succeeded. */
typedef enum {
    VEER_STATS_FAIL_NONE = 0,
    VEER_STATS_FAIL_5XX = 1,
    VEER_STATS_FAIL_RESET = 2,
    VEER_STATS_FAIL_CONNECT = 3,
    VEER_STATS_FAIL_TIMEOUT = 4,
    VEER_STATS_FAIL_OVERFLOW = 5,
    VEER_STATS_FAIL_GRPC = 6,
    VEER_STATS_FAIL_COUNT = 7,
} veer_stats_fail_t;

/* A time that was not measured (no new upstream connection, no upstream byte). */
#define VEER_STATS_NO_TIME UINT64_MAX

/* Hard caps behind the config's limits (config.c enforces the same ranges). */
#define VEER_STATS_MAX_WINDOW_S 3600u
#define VEER_STATS_MAX_SERIES 1048576u
#define VEER_STATS_WINDOW_CHUNK_BYTES 256u /* one 64-bucket piece of a window histogram */
#define VEER_STATS_MAX_WINDOW_BYTES (65535ull * VEER_STATS_WINDOW_CHUNK_BYTES)

typedef struct veer_stats_s veer_stats_t;
typedef struct veer_stats_worker_s veer_stats_worker_t;
typedef struct veer_stats_endpoint_s veer_stats_endpoint_t;

typedef struct veer_stats_limits_s {
    uint32_t worker_count;
    uint32_t window_s;         /* slices kept: 1..VEER_STATS_MAX_WINDOW_S (stats.window) */
    uint32_t max_series;       /* (route, cluster) series ids: 1..VEER_STATS_MAX_SERIES */
    uint64_t max_window_bytes; /* per worker, for window histograms (stats.max_window_bytes) */
} veer_stats_limits_t;

/* One config's view of the series: ids[(r * (cluster_count + 1)) + c] for
 * route index r and cluster index c, where r == route_count and c ==
 * cluster_count stand for "no route" (404) and "no cluster"; -1 when the
 * registry was full (those requests are counted as dropped). Immutable. */
typedef struct veer_stats_layout_s {
    size_t route_count, cluster_count;
    char **route_names;   /* [route_count], copies */
    char **cluster_names; /* [cluster_count], copies */
    int32_t *ids;
} veer_stats_layout_t;

typedef struct veer_stats_counts_s {
    uint64_t classes[VEER_STATS_CLASS_COUNT];
    uint64_t failures[VEER_STATS_FAIL_COUNT]; /* [VEER_STATS_FAIL_NONE] stays 0 */
    uint64_t window_dropped; /* window reads: durations the window memory could not hold */
} veer_stats_counts_t;

/* A merged view. Window reads fill counts and duration only. */
typedef struct veer_stats_view_s {
    veer_stats_counts_t counts;
    veer_hist_t duration, connect, ttfb;
} veer_stats_view_t;

/* What a read merges (counts are cheap; each histogram costs a pass). */
enum {
    VEER_STATS_READ_COUNTS = 1u << 0,
    VEER_STATS_READ_DURATION = 1u << 1,
    VEER_STATS_READ_CONNECT = 1u << 2,
    VEER_STATS_READ_TTFB = 1u << 3,
    VEER_STATS_READ_ALL = 0xfu,
};

/* The stats' own trouble, summed over workers. */
typedef struct veer_stats_health_s {
    uint64_t no_series;      /* requests not recorded: their (route, cluster) got no id (max_series) */
    uint64_t alloc_failed;   /* requests not recorded: out of memory for a new series */
    uint64_t window_dropped; /* durations kept out of a window: max_window_bytes reached */
    uint64_t series_ids;     /* ids handed out so far */
} veer_stats_health_t;

/* ---- setup (main thread) ------------------------------------------------ */

/* NULL on bad limits or out of memory. The limits are fixed for the life of
 * the process (a reload cannot change them). */
veer_stats_t *veer_stats_new(const veer_stats_limits_t *limits);
/* After every writer and reader is gone. */
void veer_stats_free(veer_stats_t *st);
/* The limits a config asks for (stats.*), for worker_count workers. */
veer_stats_limits_t veer_stats_limits_from_config(const veer_config_t *cfg, uint32_t worker_count);

veer_stats_worker_t *veer_stats_worker(veer_stats_t *st, uint32_t worker);
uint32_t veer_stats_window(const veer_stats_t *st);

/* Layouts: calls must not overlap (the registry is changed without a lock),
 * but readers and writers may run meanwhile. NULL only when out of memory;
 * a full registry gives ids of -1 instead. */
veer_stats_layout_t *veer_stats_layout_new(veer_stats_t *st, const char *const *routes, size_t route_count,
                                           const char *const *clusters, size_t cluster_count);
veer_stats_layout_t *veer_stats_layout_from_config(veer_stats_t *st, const veer_config_t *cfg);
void veer_stats_layout_free(veer_stats_layout_t *layout);
/* The series id of (route, cluster); -1 or out of range means "none". */
int32_t veer_stats_layout_id(const veer_stats_layout_t *layout, int route, int cluster);

/* Per endpoint: counts only (no histograms), a part per worker. Free it when
 * no request can record into it and no reader holds it (with the endpoint
 * object it belongs to). NULL when out of memory. */
veer_stats_endpoint_t *veer_stats_endpoint_new(veer_stats_t *st);
void veer_stats_endpoint_free(veer_stats_endpoint_t *ep);

/* ---- writers (the worker's own thread only) ---------------------------- */

/* One finished request. route, cluster: indexes of layout's config, -1 for
 * none. endpoint: NULL when no endpoint was involved. status: the status sent
 * downstream, 0 if none. duration_us, connect_us, ttfb_us: VEER_STATS_NO_TIME
 * when not measured. O(1), and allocation-free once warm: a series' first
 * request in a worker allocates it (about 12 KB with a 60 s window), a total
 * histogram's first value in a 64-bucket range allocates 512 bytes, and a
 * window histogram's first value in a range in a second takes a 256-byte
 * piece from the worker's pool. */
void veer_stats_record_request(veer_stats_worker_t *ws, const veer_stats_layout_t *layout, int route, int cluster,
                               veer_stats_endpoint_t *endpoint, int status, veer_stats_fail_t failure,
                               uint64_t duration_us, uint64_t connect_us, uint64_t ttfb_us, uint64_t now_s);

/* Give back the window memory of slices older than the window, in series
 * that have seen no request since. Call it about once a second (recording
 * does it too when the pool runs dry). */
void veer_stats_worker_expire(veer_stats_worker_t *ws, uint64_t now_s);

/* ---- readers (any thread) ---------------------------------------------- */

void veer_stats_view_reset(veer_stats_view_t *view);
uint64_t veer_stats_counts_requests(const veer_stats_counts_t *c);
uint64_t veer_stats_counts_failures(const veer_stats_counts_t *c);

/* Whether any worker has recorded into (route, cluster). */
bool veer_stats_has_data(const veer_stats_t *st, const veer_stats_layout_t *layout, int route, int cluster);

/* Adds (route, cluster)'s totals since start into out (reset it first; add
 * several to merge, e.g. every route of a cluster). */
void veer_stats_read_total(const veer_stats_t *st, const veer_stats_layout_t *layout, int route, int cluster,
                           unsigned what, veer_stats_view_t *out);

/* Adds the slices of seconds (now_s - seconds, now_s] (the current, partial
 * second included; pass now_s - 1 for whole seconds only) into out: counts
 * and the duration histogram. seconds is capped at the window. */
void veer_stats_read_window(const veer_stats_t *st, const veer_stats_layout_t *layout, int route, int cluster,
                            uint64_t now_s, uint32_t seconds, veer_stats_view_t *out);

void veer_stats_endpoint_read_total(const veer_stats_t *st, const veer_stats_endpoint_t *ep,
                                    veer_stats_counts_t *out);
void veer_stats_endpoint_read_window(const veer_stats_t *st, const veer_stats_endpoint_t *ep, uint64_t now_s,
                                     uint32_t seconds, veer_stats_counts_t *out);

void veer_stats_read_health(const veer_stats_t *st, veer_stats_health_t *out);

const char *veer_stats_fail_name(veer_stats_fail_t reason);  /* "5xx", "reset", ... */
const char *veer_stats_class_name(int class_index);          /* "1xx".."5xx", "none" for 0 */

#endif
