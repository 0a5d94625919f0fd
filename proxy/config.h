/* config.h - veer's configuration model: the parsed, validated, immutable form
 * of the JSON config file (see ../shared/SPEC.md and config/README.md).
 *
 * A veer_config_t is built once by veer_config_load()/veer_config_parse(), never
 * modified afterwards, and shared read-only by every worker through a runtime
 * snapshot (runtime.h). All strings are NUL-terminated heap copies owned by the
 * config; veer_config_free() releases everything. Durations are milliseconds.
 * Cluster references inside routes are resolved to indexes into clusters[]. */
#ifndef VEER_CONFIG_H
#define VEER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct cJSON cJSON;

#define VEER_CONFIG_MAX_ERRORS 64

/* A collected list of user-facing errors, each "json.path: message". */
typedef struct veer_config_errors_s {
    size_t count;
    char *messages[VEER_CONFIG_MAX_ERRORS];
    size_t dropped; /* errors beyond VEER_CONFIG_MAX_ERRORS */
} veer_config_errors_t;

typedef struct veer_tls_listener_config_s {
    char *cert;       /* PEM path */
    char *key;        /* PEM path */
    char **alpn;      /* e.g. "h2", "http/1.1" */
    size_t alpn_count;
    char *client_ca;  /* NULL: no client certificate required */
} veer_tls_listener_config_t;

typedef struct veer_listener_config_s {
    char *name;
    char *address; /* as written: "0.0.0.0:8080", "[::1]:8080" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    veer_tls_listener_config_t *tls; /* NULL for plain */
} veer_listener_config_t;

typedef struct veer_admin_config_s {
    char *address; /* default "127.0.0.1:9901" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *token_file;   /* NULL: no auth */
    bool protect_reads; /* default false */
} veer_admin_config_t;

/* peers: the other replicas' admin APIs, to which this replica's weight
 * changes are applied with the same generation (peers.h). */
#define VEER_PEERS_MAX 32
typedef struct veer_peers_config_s {
    char **admins;      /* "host:port" each; admin_count 0: no peers */
    size_t admin_count;
    char *token_file;   /* bearer token presented to the peers; NULL: none */
    uint64_t timeout_ms; /* per attempt, default 2s */
    uint32_t retries;   /* attempts after the first before a peer counts as unreachable, default 3 */
    uint64_t refresh_ms; /* how often admins given by DNS name are resolved again, default 5s */
    /* leader (required with peers): true/false, or the host name of the
     * replica that leads (leader_host set). Without peers: true. */
    bool leader;
    char *leader_host;
} veer_peers_config_t;

/* limits.http2: the HTTP/2 downstream's SETTINGS and attack budgets (h2.c). */
typedef struct veer_http2_limits_s {
    uint32_t max_concurrent_streams;  /* default 100: SETTINGS_MAX_CONCURRENT_STREAMS */
    uint32_t max_header_list_size;    /* default limits.max_header_bytes: decoded request head, 431 above */
    uint32_t initial_window_size;     /* default 65535: per-stream receive window (request body in flight) */
    uint32_t connection_window_size;  /* default 1048576: connection receive window */
    uint32_t header_table_size;       /* default 4096: HPACK dynamic table, each direction */
    uint32_t max_continuations;       /* default 16: CONTINUATION frames per header block */
    uint32_t reset_rate;              /* default 100: premature client stream resets refilled per second */
    uint32_t reset_burst;             /* default 200: ... and allowed at once (CVE-2023-44487) */
    uint32_t max_settings_per_second; /* default 50 */
    uint32_t max_pings_per_second;    /* default 50 */
    uint32_t max_empty_frames_per_second; /* default 100: empty DATA/HEADERS/CONTINUATION not ending anything */
    uint32_t max_priority_per_second; /* default 100: PRIORITY frames */
} veer_http2_limits_t;

typedef struct veer_limits_config_s {
    uint64_t max_header_bytes;     /* default 65536 */
    uint64_t max_body_bytes;       /* default 16777216; 0 = unlimited */
    uint64_t idle_timeout_ms;      /* default 60s */
    uint64_t drain_timeout_ms;     /* default 30s */
    uint64_t header_timeout_ms;    /* default 10s: time to receive a whole request head */
    uint64_t max_connections;      /* default 10000: downstream connections per process */
    uint64_t buffer_bytes;         /* default 65536: per-direction high watermark */
    uint64_t max_idle_upstream;    /* default 1024 (= the default max_connections breaker): idle keep-alive connections per endpoint per worker */
    uint64_t max_pipelined;        /* default 16: queued pipelined requests per connection */
    veer_http2_limits_t http2;
} veer_limits_config_t;

typedef enum { VEER_ACCESS_LOG_JSON = 0 } veer_access_log_format_t;

typedef struct veer_access_log_config_s {
    char *path; /* NULL: none, "-": stdout, else a file */
    veer_access_log_format_t format;
    uint64_t buffer_bytes; /* default 262144: each worker's ring of lines not yet written */
} veer_access_log_config_t;

typedef struct veer_trace_config_s {
    uint32_t sample_percent; /* default 100: new traces (no valid traceparent) marked sampled */
} veer_trace_config_t;

typedef enum {
    VEER_PROTO_HTTP1 = 0,
    VEER_PROTO_H2C = 1,
    VEER_PROTO_H2 = 2,
} veer_upstream_proto_t;

typedef enum {
    VEER_LB_LEAST_REQUEST = 0, /* default; power of two choices */
    VEER_LB_ROUND_ROBIN = 1,
} veer_lb_t;

typedef struct veer_endpoint_config_s {
    char *host;      /* name or literal address, without brackets */
    uint16_t port;
    bool is_literal; /* host is an IPv4/IPv6 literal: no DNS */
} veer_endpoint_config_t;

typedef struct veer_tls_cluster_config_s {
    char *ca;          /* CA bundle path; NULL: system default */
    char *sni;         /* NULL: endpoint host */
    char *cert, *key;  /* client certificate for mTLS; both or neither */
    bool insecure_skip_verify;
    bool session_reuse; /* resume the endpoint's last session (default true) */
} veer_tls_cluster_config_t;

/* An inclusive range of HTTP status codes ("200-399" or a single 503). */
typedef struct veer_status_range_s {
    uint16_t lo, hi;
} veer_status_range_t;

#define VEER_STATUS_RANGES_MAX 16

#define VEER_GRPC_SERVICE_MAX 1024

typedef struct veer_health_check_config_s {
    char *path;                  /* NULL with grpc_service */
    char *grpc_service;          /* non-NULL: gRPC health check of this service ("" = server) */
    uint64_t interval_ms, timeout_ms;
    uint32_t healthy_threshold, unhealthy_threshold;
    uint64_t jitter_ms;          /* next probe at interval +- jitter; default interval / 10 */
    veer_status_range_t expected_statuses[VEER_STATUS_RANGES_MAX]; /* default 200-399 */
    size_t expected_status_count;
    bool require_initial_pass;   /* default true: not routed to before the first pass */
} veer_health_check_config_t;

typedef struct veer_outlier_config_s {
    uint32_t consecutive_5xx;              /* default 5 */
    uint32_t consecutive_gateway_failure;  /* default 5 */
    uint64_t interval_ms;                  /* default 10s */
    uint64_t base_ejection_time_ms;        /* default 30s */
    uint64_t max_ejection_time_ms;         /* default 300s */
    uint32_t max_ejection_percent;         /* default 10, like Envoy */
    uint32_t success_rate_minimum_hosts;   /* default 5 */
    uint32_t success_rate_request_volume;  /* default 100 */
    double success_rate_stdev_factor;      /* default 1.9 */
    uint32_t consecutive_local_origin_failure;     /* default 5; connect failures, timeouts, resets */
    uint32_t enforcing_consecutive_5xx;            /* percent, default 100 */
    uint32_t enforcing_consecutive_gateway_failure; /* percent, default 100 (Envoy: 0) */
    uint32_t enforcing_consecutive_local_origin_failure; /* percent, default 100 */
    uint32_t enforcing_success_rate;               /* percent, default 100 */
    uint32_t enforcing_failure_percentage;         /* percent, default 0 (off, as in Envoy) */
    uint32_t failure_percentage_threshold;         /* percent, default 85 */
    uint32_t failure_percentage_minimum_hosts;     /* default 5 */
    uint32_t failure_percentage_request_volume;    /* default 50 */
    uint64_t latency_p99_max_ms;                   /* default 0: latency detector off */
    uint32_t latency_request_volume;               /* default 100 */
    uint64_t max_ejection_time_jitter_ms;          /* default 0 */
    bool successful_active_health_check_uneject_host; /* default true */
} veer_outlier_config_t;

typedef struct veer_breaker_config_s {
    uint32_t max_connections, max_pending_requests, max_requests, max_retries;
} veer_breaker_config_t;

typedef struct veer_cluster_config_s {
    char *name;
    veer_endpoint_config_t *endpoints;
    size_t endpoint_count;
    uint64_t dns_refresh_ms;    /* default 5s */
    veer_upstream_proto_t protocol;
    veer_lb_t lb;
    uint64_t connect_timeout_ms; /* default 1s */
    veer_tls_cluster_config_t *tls;            /* NULL: plain */
    veer_health_check_config_t *health_check;  /* NULL: none */
    veer_outlier_config_t *outlier_detection;  /* NULL: none */
    veer_breaker_config_t circuit_breakers;    /* always set: defaults 1024/1024/1024/3 */
    uint32_t panic_threshold;   /* percent, default 50: below it, route to all endpoints */
    int failover;               /* cluster index, -1: none; used instead of panic routing (see config/README.md) */
    uint32_t max_streams_per_connection; /* h2/h2c: default 100, lowered by the peer's SETTINGS */
    uint32_t connections_per_endpoint;   /* h2/h2c: default 1, per endpoint per worker */
} veer_cluster_config_t;

typedef enum {
    VEER_HDR_MATCH_EXACT = 0,
    VEER_HDR_MATCH_PREFIX = 1,
    VEER_HDR_MATCH_PRESENT = 2,
} veer_header_match_kind_t;

typedef struct veer_header_match_s {
    char *name;    /* lower-cased */
    size_t name_len;
    veer_header_match_kind_t kind;
    char *value;   /* NULL for PRESENT */
    size_t value_len;
} veer_header_match_t;

typedef struct veer_route_match_s {
    char *host;        /* NULL: any; compared case-insensitively, port ignored */
    char *path_prefix; /* NULL: any */
    char *path_exact;  /* NULL: any ("path" key) */
    char *method;      /* NULL: any; upper-case */
    veer_header_match_t *headers;
    size_t header_count;
} veer_route_match_t;

typedef struct veer_split_s {
    int cluster;     /* index into config->clusters */
    uint32_t weight; /* relative, 0..1000000 */
} veer_split_t;

typedef enum { VEER_KEY_HEADER = 0, VEER_KEY_COOKIE = 1, VEER_KEY_CLIENT_ADDR = 2 } veer_key_kind_t;

typedef struct veer_override_s {
    veer_key_kind_t kind; /* HEADER or COOKIE */
    char *name;           /* header names lower-cased */
    size_t name_len;
    char *equals;
    size_t equals_len;
    int cluster;
} veer_override_t;

typedef struct veer_sticky_s {
    bool enabled;
    veer_key_kind_t kind; /* HEADER, COOKIE or CLIENT_ADDR ({"client_address": true}) */
    char *name;
    size_t name_len;
} veer_sticky_t;

typedef struct veer_retry_config_s {
    uint32_t attempts;       /* total tries, default 1 (no retry) */
    uint32_t on;             /* VEER_RETRY_ON_* bits */
    uint64_t per_try_timeout_ms; /* 0: none */
    uint32_t budget_percent; /* default 20 */
    uint32_t min_retry_concurrency; /* default 3: retries always allowed below this many */
    uint64_t backoff_base_ms;       /* default 25 */
    uint64_t backoff_max_ms;        /* default 250 */
    uint64_t max_body_bytes;        /* default 65536: larger bodies are not kept, so not retried */
    veer_status_range_t retriable_status_codes[VEER_STATUS_RANGES_MAX]; /* with VEER_RETRY_ON_STATUS_CODES */
    size_t retriable_status_count;
} veer_retry_config_t;

#define VEER_RETRY_ON_CONNECT_FAILURE (1u << 0)
#define VEER_RETRY_ON_RESET           (1u << 1)
#define VEER_RETRY_ON_REFUSED_STREAM  (1u << 2)
#define VEER_RETRY_ON_5XX             (1u << 3)
#define VEER_RETRY_ON_GATEWAY_ERROR   (1u << 4)
#define VEER_RETRY_ON_503             (1u << 5)
#define VEER_RETRY_ON_TIMEOUT         (1u << 6)
#define VEER_RETRY_ON_STATUS_CODES    (1u << 7) /* "retriable-status-codes" */

typedef enum {
    VEER_CANARY_PROGRESSIVE = 0,
    VEER_CANARY_BLUE_GREEN = 1,
    VEER_CANARY_AB = 2,
} veer_canary_mode_t;

#define VEER_CANARY_MAX_PHASE_HOOKS 8

typedef struct veer_canary_config_s {
    int stable, canary; /* cluster indexes */
    veer_canary_mode_t mode;
    uint64_t interval_ms;
    uint32_t step_weight, max_weight, threshold, min_requests;
    uint32_t *step_weights;        /* NULL: steps of step_weight; else strictly increasing, last == max_weight */
    size_t step_weight_count;
    uint32_t promotion_step_weight; /* 0: promotion sends 100% at once */
    uint32_t iterations;           /* blue_green, ab: passing analyses before promotion (default 10) */
    uint32_t mirror_iterations;    /* passing analyses of mirrored traffic first (default 0: none) */
    uint32_t max_inconclusive;     /* inconclusive analyses in a row that pause the run (default 3) */
    double success_rate_min;     /* percent */
    uint64_t p99_max_ms;
    bool compare_to_stable;
    double confidence;             /* one-sided test against stable (default 0.99) */
    double p99_ratio_max;          /* canary P99 / stable P99 that fails (default 1.5) */
    veer_override_t *match;        /* ab: the requests sent to the canary (cluster == canary); else NULL */
    char *webhook_promoted, *webhook_rolled_back; /* NULL: none */
    char **webhook_phase_change;   /* POSTed the run's JSON on every phase change */
    size_t webhook_phase_change_count; /* <= VEER_CANARY_MAX_PHASE_HOOKS */
    char *webhook_confirm_promotion; /* NULL: promotion needs no confirmation */
    uint64_t webhook_timeout_ms;   /* default 5s */
    uint32_t webhook_retries;      /* default 3 */
    char *source_prometheus;       /* source.prometheus: "http://host:port" of a query API; NULL: local stats */
    uint64_t source_query_window_ms; /* source.query_window; 0: the run's interval */
    uint64_t source_timeout_ms;    /* source.timeout: one query set's limit (default 2s) */
} veer_canary_config_t;

typedef struct veer_route_config_s {
    char *name;
    veer_route_match_t match;
    veer_split_t *split;
    size_t split_count;
    veer_override_t *overrides;
    size_t override_count;
    veer_sticky_t sticky;
    uint64_t timeout_ms;       /* default 15s; 0 = none */
    veer_retry_config_t retry;
    veer_canary_config_t *canary; /* NULL: none */
    uint32_t failure_grpc_status; /* bit n: grpc-status n is a failure (bit 31: codes >= 31); default all but 0 */
} veer_route_config_t;

/* Request statistics (stats.h, prom.h). window_s, max_series and
 * max_window_bytes are bound at start; a reload cannot change them. */
typedef struct veer_stats_config_s {
    uint32_t window_s;              /* default 60: sliding window, in 1-second slices */
    uint64_t *histogram_buckets_us; /* NULL: the built-in ladder (prom.h); else strictly increasing */
    size_t histogram_bucket_count;
    uint32_t max_series;            /* default 16384: (route, cluster) series ever named */
    uint64_t max_window_bytes;      /* default 8 MiB: window histogram memory per worker */
} veer_stats_config_t;

typedef struct veer_config_s {
    char *path;        /* file it came from, NULL when parsed from a string */
    uint32_t workers;  /* resolved: 0 in the file means one per CPU */
    veer_listener_config_t *listeners;
    size_t listener_count;
    veer_admin_config_t admin;
    veer_peers_config_t peers;
    char *state_file;  /* NULL: no persistence */
    veer_access_log_config_t access_log;
    veer_trace_config_t trace;
    veer_limits_config_t limits;
    veer_stats_config_t stats;
    veer_cluster_config_t *clusters;
    size_t cluster_count;
    veer_route_config_t *routes;
    size_t route_count;
    cJSON *json;       /* the document as loaded (for GET /v1/config) */
} veer_config_t;

/* Parse a duration such as "250ms", "30s", "5m", "1h", "1500us" (rounded up to
 * whole ms), "0s". Returns 0 and sets *out_ms, or -1 on malformed input. */
int veer_duration_parse(const char *text, uint64_t *out_ms);
/* The same in microseconds (a fraction of a microsecond rounds up). */
int veer_duration_parse_us(const char *text, uint64_t *out_us);

/* Parse "host:port", "[v6]:port" or "1.2.3.4:port" into a sockaddr (literal
 * addresses only). Returns 0 or -1. */
int veer_sockaddr_parse(const char *text, struct sockaddr_storage *out, socklen_t *outlen);

/* Parse and validate. On any error returns NULL and fills errs with every
 * error found (each with its JSON path, e.g. `routes[2].split[1].cluster:
 * unknown cluster "gren"`). The caller frees errs with veer_config_errors_clear.
 * errs must be zeroed (or cleared) before the call: errors are appended. It may
 * be NULL when only success matters. A JSON syntax error reads "line L, column
 * C: invalid JSON near `...`"; a file that cannot be read, "PATH: cannot open:
 * REASON". json_text need not be NUL-terminated. Allocation failures are
 * reported as errors ("out of memory"), never abort. */
veer_config_t *veer_config_parse(const char *json_text, size_t len, veer_config_errors_t *errs);
veer_config_t *veer_config_load(const char *path, veer_config_errors_t *errs);
void veer_config_free(veer_config_t *cfg);
void veer_config_errors_clear(veer_config_errors_t *errs);

/* Whether this replica runs the canary controller (peers.leader); hostname
 * is gethostname()'s, compared with a host-name leader. */
bool veer_config_leads(const veer_config_t *cfg, const char *hostname);

int veer_config_cluster_index(const veer_config_t *cfg, const char *name);
int veer_config_route_index(const veer_config_t *cfg, const char *name);

/* Whether grpc-status code is a failure under a route's failure_grpc_status
 * mask (bit 31 stands for every code from 31 up). */
bool veer_config_grpc_status_fails(uint32_t mask, int code);

/* A canary policy from a JSON object such as the body of POST
 * /v1/routes/NAME/canary: the keys of routes[].canary, each left out keeping
 * base's value (base: the route's canary block; NULL: the defaults, and then
 * stable and canary are required). Cluster names resolve in cfg. Errors are
 * appended to errs under top-level paths ("step_weight: must be ..."). Returns
 * a new block, or NULL when anything is wrong. */
veer_canary_config_t *veer_config_canary_parse(const veer_config_t *cfg, const veer_canary_config_t *base,
                                               const cJSON *body, veer_config_errors_t *errs);
void veer_config_canary_free(veer_canary_config_t *canary);

#endif
