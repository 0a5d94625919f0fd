/* mockpod.c - veer-mockpod, the test and demo backend that behaves like an
 * embedding pod. A protocol front (HTTP/1.1: llhttp over bufferevents; h2c:
 * an nghttp2 server session, chosen when a connection opens with the HTTP/2
 * preface) turns bytes into protocol-neutral exchanges; a route table answers
 * them, after a run-time fault config has decided whether to reset, hang,
 * fail or delay each.
 *
 * gRPC-shaped POST /akidb.v1.Embed/Embed (h2c): one length-prefixed message
 * in (flag byte 0, 4-byte big-endian length, the text's bytes), one out (the
 * same JSON document /api/v1/embed answers), then trailers grpc-status: 0.
 *
 * HTTP/2 fault knobs (flags, and keys of POST /fault):
 *   --grpc-error-rate R / grpc_error_rate: Embed calls answered trailers-only
 *       with grpc-status --grpc-error-code (grpc_error_code, default 14)
 *   --max-concurrent-streams N / max_concurrent_streams: SETTINGS of new
 *       connections (default 100)
 *   --goaway-after N / goaway_after: GOAWAY after N streams of a connection
 *       (0: never); streams above its last-stream-id are refused
 *   --refuse-rate R / refuse_rate: streams reset with REFUSED_STREAM at once
 *   --h2-only / h2_only: HTTP/1.1 requests (all but /fault and /stats) get
 *       their connection closed unanswered, as by a gRPC-only server
 * gRPC health (h2c): POST /grpc.health.v1.Health/Check answers SERVING, or
 * NOT_SERVING while health_fail is set; NOT_FOUND (grpc-status 5) for a
 * service other than "" and "akidb.v1.Embed"; grpc_error_rate applies.
 * /stats adds h2_* counters, with the peak number of streams open at once
 * (h2_peak_streams, all connections; h2_peak_streams_per_connection).
 *
 * Why not evhttp: libevent 2.1 gives no hook on a server request before its
 * body is read (evhttp_set_newreqcb is 2.2), so /sink could not stream; it
 * stops reading while a request is pending, so a hung request never sees its
 * client leave; and evhttp_connection_free() sends a FIN before any RST. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include "http.h" /* veer_http_reason */

#define MOCK_EMBED_DIM 384
#define MOCK_IO_TIMEOUT_SEC 60
#define MOCK_LINGER_TIMEOUT_SEC 5
#define MOCK_MAX_HEAD_BYTES (1024 * 1024)
#define MOCK_MAX_HEADERS 1024
#define MOCK_MAX_BUFFERED_BODY ((uint64_t)1 << 30)
#define MOCK_MAX_HELD 10000
#define MOCK_MAX_CONNS 20000
#define MOCK_CHUNK (64 * 1024)
#define MOCK_OUT_HIGH (2 * MOCK_CHUNK) /* stop pulling a streamed body past this */
#define MOCK_IN_HIGH (1024 * 1024)     /* stop reading a socket past this unparsed */
#define MOCK_MAX_DELAY_US (600ull * 1000 * 1000)
#define MOCK_MAX_BYTES_N ((uint64_t)1 << 40)
#define MOCK_STATUS_SLOTS 600
#define MOCK_LOGNORMAL_Z99 2.326

typedef struct mock_exchange mock_exchange_t;
typedef struct mock_server mock_server_t;
typedef struct mock_h1_conn mock_h1_conn_t;
typedef struct mock_h2_conn mock_h2_conn_t;

/* ---- per-exchange arena: everything a request allocates dies in one free ---- */

typedef struct mock_arena_block {
    struct mock_arena_block *next;
    size_t used, size;
    char data[];
} mock_arena_block_t;

typedef struct mock_arena {
    mock_arena_block_t *head;
} mock_arena_t;

static void *arena_alloc(mock_arena_t *a, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    mock_arena_block_t *b = a->head;
    if (b == NULL || b->size - b->used < n) {
        size_t size = n > 4096 ? n : 4096;
        if ((b = malloc(sizeof(*b) + size)) == NULL)
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->size = size;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static char *arena_strndup(mock_arena_t *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static void arena_free(mock_arena_t *a)
{
    while (a->head != NULL) {
        mock_arena_block_t *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

/* ---- fault config, stats, routes, server ---- */

typedef struct mock_fault {
    double error_rate, reset_rate, hang_rate;
    uint64_t latency_us, latency_p99_us;
    int health_fail;
    int h2_only; /* refuse HTTP/1.1 but for the control routes */
    /* HTTP/2 and gRPC */
    double grpc_error_rate, refuse_rate;
    uint64_t grpc_error_code, max_concurrent_streams, goaway_after;
} mock_fault_t;

typedef void (*mock_handler_fn)(mock_exchange_t *ex);

typedef enum { BODY_DISCARD, BODY_BUFFER, BODY_SINK } mock_body_mode_t;

enum {
    M_GET = 1u << 0, M_HEAD = 1u << 1, M_POST = 1u << 2, M_PUT = 1u << 3,
    M_DELETE = 1u << 4, M_PATCH = 1u << 5, M_OPTIONS = 1u << 6, M_OTHER = 1u << 7,
    M_ANY = 0xffu,
};

#define ROUTE_PREFIX 1u   /* path is a prefix ("/status/NNN") */
#define ROUTE_CONTROL 2u  /* never faulted, never counted in /stats */
#define ROUTE_NO_FAULT 4u /* counted, but the handler decides its own failure (/health) */

typedef struct mock_route {
    const char *path;
    unsigned methods;
    unsigned flags;
    mock_body_mode_t body;
    mock_handler_fn handler;
} mock_route_t;

static void handle_embed(mock_exchange_t *ex);
static void handle_health(mock_exchange_t *ex);
static void handle_fault(mock_exchange_t *ex);
static void handle_stats(mock_exchange_t *ex);
static void handle_stats_reset(mock_exchange_t *ex);
static void handle_echo(mock_exchange_t *ex);
static void handle_headers(mock_exchange_t *ex);
static void handle_bytes(mock_exchange_t *ex);
static void handle_sink(mock_exchange_t *ex);
static void handle_status(mock_exchange_t *ex);
static void handle_slow(mock_exchange_t *ex);
static void handle_grpc_embed(mock_exchange_t *ex);
static void handle_grpc_health(mock_exchange_t *ex);
static void handle_not_found(mock_exchange_t *ex);

static const mock_route_t mock_routes[] = {
    {"/api/v1/embed", M_POST, 0, BODY_BUFFER, handle_embed},
    {"/health", M_GET | M_HEAD, ROUTE_NO_FAULT, BODY_DISCARD, handle_health},
    {"/fault", M_GET | M_POST, ROUTE_CONTROL, BODY_BUFFER, handle_fault},
    {"/stats", M_GET, ROUTE_CONTROL, BODY_DISCARD, handle_stats},
    {"/stats/reset", M_POST, ROUTE_CONTROL, BODY_DISCARD, handle_stats_reset},
    {"/echo", M_ANY, 0, BODY_BUFFER, handle_echo},
    {"/headers", M_ANY, 0, BODY_DISCARD, handle_headers},
    {"/bytes", M_GET | M_HEAD, 0, BODY_DISCARD, handle_bytes},
    {"/sink", M_POST | M_PUT, 0, BODY_SINK, handle_sink},
    {"/status/", M_ANY, ROUTE_PREFIX, BODY_DISCARD, handle_status},
    {"/slow", M_ANY, 0, BODY_DISCARD, handle_slow},
    {"/akidb.v1.Embed/Embed", M_POST, 0, BODY_BUFFER, handle_grpc_embed},
    {"/grpc.health.v1.Health/Check", M_POST, ROUTE_NO_FAULT, BODY_BUFFER, handle_grpc_health},
};
#define MOCK_ROUTE_COUNT (sizeof(mock_routes) / sizeof(mock_routes[0]))
static const mock_route_t mock_route_not_found = {"other", M_ANY, 0, BODY_DISCARD, handle_not_found};

typedef struct mock_stats {
    uint64_t requests_total;
    uint64_t requests_by_route[MOCK_ROUTE_COUNT + 1]; /* last slot: unknown paths */
    uint64_t responses_by_status[MOCK_STATUS_SLOTS];
    uint64_t errors_injected, resets, hangs, hangs_evicted, client_aborts;
    uint64_t bytes_received, conns_rejected;
    uint64_t h2_connections, h2_streams, h2_refused, h2_goaways, h2_peak_streams, h2_peak_streams_per_conn;
    uint64_t grpc_errors_injected;
} mock_stats_t;

/* What a protocol front must provide: the h1 front (one exchange at a time
 * per connection) and the h2c front (one exchange per stream). Every call
 * that ends the exchange (send_end, reset) frees it: the caller must not
 * touch it afterwards. */
typedef struct mock_front_ops {
    void (*send_head)(mock_exchange_t *ex);
    void (*send_body)(mock_exchange_t *ex, struct evbuffer *data); /* drains data */
    void (*send_end)(mock_exchange_t *ex);
    void (*reset)(mock_exchange_t *ex);
    size_t (*room)(mock_exchange_t *ex); /* body bytes it can queue now */
} mock_front_ops_t;

typedef struct mock_header {
    struct mock_header *next;
    const char *name, *value;
    size_t name_len, value_len;
} mock_header_t;

typedef enum { EX_READING, EX_WAITING, EX_STREAMING } mock_phase_t;

typedef size_t (*mock_body_gen_fn)(mock_exchange_t *ex, struct evbuffer *out, size_t max);

struct mock_exchange {
    mock_server_t *server;
    const mock_front_ops_t *front;
    void *front_ctx;
    mock_arena_t arena;
    mock_phase_t phase;

    /* request, filled by the front */
    const char *method;
    unsigned method_bit;
    int http_major, http_minor;
    const char *path, *query; /* query NULL when absent */
    mock_header_t *headers, **headers_tail;
    size_t header_count;
    const char *request_id;
    const mock_route_t *route;
    size_t route_slot;
    int counted;
    struct evbuffer *body; /* BODY_BUFFER routes only */
    uint64_t body_bytes;
    uint32_t body_sum;
    int body_too_large;

    /* response */
    int status;
    mock_header_t *resp_headers, **resp_tail;
    mock_header_t *resp_trailers, **trailer_tail; /* sent by the h2 front only */
    uint64_t resp_length;
    int resp_has_body, resp_chunked;
    mock_body_gen_fn gen;
    uint64_t gen_sent;

    /* scheduling */
    struct event *timer;
    void (*timer_fn)(mock_exchange_t *ex);
    uint64_t slow_ms;
    int held;
    TAILQ_ENTRY(mock_exchange) hold_link;
};

struct mock_server {
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *sig_term, *sig_int, *accept_retry;
    const char *name;
    mock_fault_t fault;
    mock_stats_t stats;
    uint64_t rng[4];
    llhttp_settings_t h1_settings;
    char pattern[MOCK_CHUNK + 26]; /* 'a'..'z' repeated, referenced by /bytes */
    LIST_HEAD(, mock_h1_conn) conns;
    LIST_HEAD(, mock_h2_conn) h2_conns;
    size_t conn_count;     /* both kinds */
    uint64_t h2_open_streams;
    TAILQ_HEAD(, mock_exchange) held;
    size_t held_count;
};

/* ---- random numbers: xoshiro256** for faults, splitmix64 for embeddings ---- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void rng_seed(mock_server_t *srv, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        srv->rng[i] = splitmix64(&seed);
}

static uint64_t rng_next(mock_server_t *srv)
{
    uint64_t *s = srv->rng;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static double rng_double(mock_server_t *srv)
{
    return (double)(rng_next(srv) >> 11) * 0x1.0p-53;
}

/* ---- durations and the fault config ---- */

/* "40ms", "1.5s", "250us"; a bare number is milliseconds. */
static int duration_parse(const char *s, uint64_t *out_us)
{
    if (!isdigit((unsigned char)s[0]) && s[0] != '.')
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || !isfinite(v) || v < 0)
        return -1;
    double scale;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        scale = 1e3;
    else if (strcmp(end, "us") == 0)
        scale = 1.0;
    else if (strcmp(end, "s") == 0)
        scale = 1e6;
    else
        return -1;
    double us = v * scale;
    if (us > (double)MOCK_MAX_DELAY_US)
        return -1;
    *out_us = (uint64_t)(us + 0.5);
    return 0;
}

static void duration_format(uint64_t us, char *buf, size_t len)
{
    if (us % 1000 == 0)
        snprintf(buf, len, "%" PRIu64 "ms", us / 1000);
    else
        snprintf(buf, len, "%" PRIu64 "us", us);
}

static int rate_parse(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !(v >= 0.0 && v <= 1.0))
        return -1;
    *out = v;
    return 0;
}

/* Checks what no single key can: returns the offending key or NULL. */
static const char *fault_validate(const mock_fault_t *f, char *err, size_t errlen)
{
    double sum = f->reset_rate + f->hang_rate;
    if (sum > 1.0 + 1e-9) {
        snprintf(err, errlen, "reset_rate + hang_rate = %g exceeds 1", sum);
        return "hang_rate";
    }
    sum += f->error_rate;
    if (sum > 1.0 + 1e-9) {
        snprintf(err, errlen, "reset_rate + hang_rate + error_rate = %g exceeds 1", sum);
        return "error_rate";
    }
    if (f->latency_p99_us > 0 && f->latency_us == 0) {
        snprintf(err, errlen, "latency_p99 needs latency > 0 (the lognormal median)");
        return "latency_p99";
    }
    return NULL;
}

/* The integer knobs: gRPC status 0..16, a SETTINGS value >= 1, a stream count. */
static int fault_count_parse(mock_fault_t *f, const char *key, const cJSON *item, char *err, size_t errlen)
{
    uint64_t *count = &f->goaway_after;
    double min = 0, max = 1e9;
    if (strcmp(key, "grpc_error_code") == 0) {
        count = &f->grpc_error_code;
        max = 16;
    } else if (strcmp(key, "max_concurrent_streams") == 0) {
        count = &f->max_concurrent_streams;
        min = 1;
    }
    if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
        !(item->valuedouble >= min && item->valuedouble <= max)) {
        snprintf(err, errlen, "%s: must be an integer between %.0f and %.0f", key, min, max);
        return -1;
    }
    *count = (uint64_t)item->valuedouble;
    return 0;
}

/* Applies any subset of the fault keys, all or nothing. Returns the bad key
 * (or "" when the document itself is wrong) and fills err; NULL on success. */
static const char *fault_update_json(mock_fault_t *f, const cJSON *doc, char *err, size_t errlen)
{
    if (!cJSON_IsObject(doc)) {
        snprintf(err, errlen, "body must be a JSON object");
        return "";
    }
    mock_fault_t next = *f;
    const cJSON *item;
    cJSON_ArrayForEach(item, doc) {
        const char *key = item->string;
        double *rate = NULL;
        uint64_t *dur = NULL;
        if (strcmp(key, "error_rate") == 0)
            rate = &next.error_rate;
        else if (strcmp(key, "reset_rate") == 0)
            rate = &next.reset_rate;
        else if (strcmp(key, "hang_rate") == 0)
            rate = &next.hang_rate;
        else if (strcmp(key, "grpc_error_rate") == 0)
            rate = &next.grpc_error_rate;
        else if (strcmp(key, "refuse_rate") == 0)
            rate = &next.refuse_rate;
        else if (strcmp(key, "latency") == 0)
            dur = &next.latency_us;
        else if (strcmp(key, "latency_p99") == 0)
            dur = &next.latency_p99_us;
        else if (strcmp(key, "health_fail") == 0 || strcmp(key, "h2_only") == 0) {
            if (!cJSON_IsBool(item)) {
                snprintf(err, errlen, "%s: must be true or false", key);
                return key;
            }
            if (strcmp(key, "health_fail") == 0)
                next.health_fail = cJSON_IsTrue(item);
            else
                next.h2_only = cJSON_IsTrue(item);
            continue;
        } else if (strcmp(key, "grpc_error_code") == 0 || strcmp(key, "max_concurrent_streams") == 0 ||
                   strcmp(key, "goaway_after") == 0) {
            if (fault_count_parse(&next, key, item, err, errlen) != 0)
                return key;
            continue;
        } else {
            snprintf(err, errlen, "%s: unknown key", key);
            return key;
        }
        if (rate != NULL) {
            if (!cJSON_IsNumber(item) || !(item->valuedouble >= 0.0 && item->valuedouble <= 1.0)) {
                snprintf(err, errlen, "%s: must be a number between 0 and 1", key);
                return key;
            }
            *rate = item->valuedouble;
        } else if (cJSON_IsNumber(item)) {
            double us = item->valuedouble * 1e3;
            if (!(us >= 0.0 && us <= (double)MOCK_MAX_DELAY_US)) {
                snprintf(err, errlen, "%s: must be between 0 and 600000 ms", key);
                return key;
            }
            *dur = (uint64_t)(us + 0.5);
        } else if (!cJSON_IsString(item) || duration_parse(item->valuestring, dur) != 0) {
            snprintf(err, errlen, "%s: must be a duration like \"40ms\", \"250us\", \"1.5s\" "
                     "or a number of ms, at most 600s", key);
            return key;
        }
    }
    const char *bad = fault_validate(&next, err, errlen);
    if (bad != NULL)
        return bad;
    *f = next;
    return NULL;
}

static cJSON *fault_to_json(const mock_fault_t *f)
{
    char latency[32], p99[32];
    duration_format(f->latency_us, latency, sizeof(latency));
    duration_format(f->latency_p99_us, p99, sizeof(p99));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "error_rate", f->error_rate);
    cJSON_AddStringToObject(o, "latency", latency);
    cJSON_AddStringToObject(o, "latency_p99", p99);
    cJSON_AddNumberToObject(o, "reset_rate", f->reset_rate);
    cJSON_AddNumberToObject(o, "hang_rate", f->hang_rate);
    cJSON_AddBoolToObject(o, "health_fail", f->health_fail);
    cJSON_AddBoolToObject(o, "h2_only", f->h2_only);
    cJSON_AddNumberToObject(o, "grpc_error_rate", f->grpc_error_rate);
    cJSON_AddNumberToObject(o, "grpc_error_code", (double)f->grpc_error_code);
    cJSON_AddNumberToObject(o, "refuse_rate", f->refuse_rate);
    cJSON_AddNumberToObject(o, "max_concurrent_streams", (double)f->max_concurrent_streams);
    cJSON_AddNumberToObject(o, "goaway_after", (double)f->goaway_after);
    return o;
}

/* Lognormal with median=latency and p99=latency_p99 when p99 > latency,
 * otherwise a fixed latency. */
static uint64_t fault_sample_latency_us(mock_server_t *srv)
{
    const mock_fault_t *f = &srv->fault;
    if (f->latency_p99_us <= f->latency_us)
        return f->latency_us;
    double sigma = log((double)f->latency_p99_us / (double)f->latency_us) / MOCK_LOGNORMAL_Z99;
    double u1 = 1.0 - rng_double(srv); /* (0, 1] */
    double u2 = rng_double(srv);
    double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
    double us = (double)f->latency_us * exp(sigma * z);
    if (!(us < (double)MOCK_MAX_DELAY_US))
        return MOCK_MAX_DELAY_US;
    return (uint64_t)us;
}

/* ---- exchanges: the protocol-neutral request and its response ---- */

static unsigned method_bit(const char *method)
{
    static const struct { const char *name; unsigned bit; } map[] = {
        {"GET", M_GET}, {"HEAD", M_HEAD}, {"POST", M_POST}, {"PUT", M_PUT},
        {"DELETE", M_DELETE}, {"PATCH", M_PATCH}, {"OPTIONS", M_OPTIONS},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(method, map[i].name) == 0)
            return map[i].bit;
    return M_OTHER;
}

static mock_exchange_t *exchange_new(mock_server_t *srv, const mock_front_ops_t *front, void *ctx)
{
    mock_exchange_t *ex = calloc(1, sizeof(*ex));
    if (ex == NULL)
        return NULL;
    ex->server = srv;
    ex->front = front;
    ex->front_ctx = ctx;
    ex->phase = EX_READING;
    ex->headers_tail = &ex->headers;
    ex->resp_tail = &ex->resp_headers;
    ex->trailer_tail = &ex->resp_trailers;
    ex->route = &mock_route_not_found;
    ex->route_slot = MOCK_ROUTE_COUNT;
    ex->method = "";
    ex->path = "";
    return ex;
}

/* Only the front calls this: it owns the exchange. */
static void exchange_free(mock_exchange_t *ex)
{
    if (ex->held) {
        TAILQ_REMOVE(&ex->server->held, ex, hold_link);
        ex->server->held_count--;
    }
    if (ex->timer != NULL)
        event_free(ex->timer);
    if (ex->body != NULL)
        evbuffer_free(ex->body);
    arena_free(&ex->arena);
    free(ex);
}

static const mock_header_t *exchange_find_header(const mock_exchange_t *ex, const char *name)
{
    for (const mock_header_t *h = ex->headers; h != NULL; h = h->next)
        if (strcasecmp(h->name, name) == 0)
            return h;
    return NULL;
}

static int exchange_add_request_header(mock_exchange_t *ex, const char *name, size_t name_len,
                                       const char *value, size_t value_len)
{
    mock_header_t *h = arena_alloc(&ex->arena, sizeof(*h));
    if (h == NULL)
        return -1;
    h->next = NULL;
    h->name = arena_strndup(&ex->arena, name, name_len);
    h->value = arena_strndup(&ex->arena, value, value_len);
    if (h->name == NULL || h->value == NULL)
        return -1;
    h->name_len = name_len;
    h->value_len = value_len;
    *ex->headers_tail = h;
    ex->headers_tail = &h->next;
    ex->header_count++;
    return 0;
}

/* Splits the request target into path and query; absolute-form targets keep
 * only their path. */
static int exchange_set_target(mock_exchange_t *ex, const char *target, size_t len)
{
    size_t scheme = len >= 7 && strncasecmp(target, "http://", 7) == 0    ? 7
                    : len >= 8 && strncasecmp(target, "https://", 8) == 0 ? 8
                                                                           : 0;
    if (scheme > 0) {
        const char *slash = memchr(target + scheme, '/', len - scheme);
        if (slash != NULL) {
            len -= (size_t)(slash - target);
            target = slash;
        } else {
            target = "/";
            len = 1;
        }
    }
    const char *q = memchr(target, '?', len);
    size_t path_len = q != NULL ? (size_t)(q - target) : len;
    ex->path = arena_strndup(&ex->arena, target, path_len);
    ex->query = q != NULL ? arena_strndup(&ex->arena, q + 1, len - path_len - 1) : NULL;
    return ex->path != NULL && (q == NULL || ex->query != NULL) ? 0 : -1;
}

/* Called by the front once the request head is complete. */
static void exchange_head_done(mock_exchange_t *ex)
{
    ex->method_bit = method_bit(ex->method);
    for (size_t i = 0; i < MOCK_ROUTE_COUNT; i++) {
        const mock_route_t *r = &mock_routes[i];
        int match = (r->flags & ROUTE_PREFIX) ? strncmp(ex->path, r->path, strlen(r->path)) == 0
                                              : strcmp(ex->path, r->path) == 0;
        if (match) {
            ex->route = r;
            ex->route_slot = i;
            break;
        }
    }
    ex->counted = !(ex->route->flags & ROUTE_CONTROL);
    const mock_header_t *rid = exchange_find_header(ex, "x-request-id");
    if (rid != NULL)
        ex->request_id = rid->value;
    if (ex->route->body == BODY_BUFFER && (ex->route->methods & ex->method_bit))
        ex->body = evbuffer_new();
}

/* Called by the front for each piece of request body, already de-chunked. */
static void exchange_body(mock_exchange_t *ex, const char *data, size_t len)
{
    ex->body_bytes += len;
    if (ex->counted)
        ex->server->stats.bytes_received += len;
    if (ex->route->body == BODY_SINK) {
        uint32_t sum = ex->body_sum;
        for (size_t i = 0; i < len; i++)
            sum += (unsigned char)data[i];
        ex->body_sum = sum;
    } else if (ex->body != NULL && !ex->body_too_large) {
        if (ex->body_bytes > MOCK_MAX_BUFFERED_BODY) {
            ex->body_too_large = 1;
            evbuffer_drain(ex->body, evbuffer_get_length(ex->body));
        } else {
            evbuffer_add(ex->body, data, len);
        }
    }
}

static void exchange_append_field(mock_exchange_t *ex, mock_header_t ***tail, const char *name, const char *value)
{
    mock_header_t *h = arena_alloc(&ex->arena, sizeof(*h));
    if (h == NULL)
        return;
    h->next = NULL;
    h->name = name;
    h->name_len = strlen(name);
    h->value = arena_strndup(&ex->arena, value, strlen(value));
    if (h->value == NULL)
        return;
    h->value_len = strlen(value);
    **tail = h;
    *tail = &h->next;
}

static void exchange_add_header(mock_exchange_t *ex, const char *name, const char *value)
{
    exchange_append_field(ex, &ex->resp_tail, name, value);
}

static void exchange_add_trailer(mock_exchange_t *ex, const char *name, const char *value)
{
    exchange_append_field(ex, &ex->trailer_tail, name, value);
}

static int status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

static void exchange_begin_response(mock_exchange_t *ex, int status, const char *content_type)
{
    ex->status = status;
    exchange_add_header(ex, "x-pod", ex->server->name);
    if (ex->request_id != NULL)
        exchange_add_header(ex, "x-request-id", ex->request_id);
    if (content_type != NULL && status_has_body(status))
        exchange_add_header(ex, "content-type", content_type);
    if (ex->counted && status >= 0 && status < MOCK_STATUS_SLOTS)
        ex->server->stats.responses_by_status[status]++;
}

/* Answers with a complete body (may be NULL); consumes the exchange. */
static void exchange_respond(mock_exchange_t *ex, int status, const char *content_type, struct evbuffer *body)
{
    exchange_begin_response(ex, status, content_type);
    ex->resp_has_body = status_has_body(status);
    ex->resp_length = ex->resp_has_body && body != NULL ? evbuffer_get_length(body) : 0;
    ex->front->send_head(ex);
    if (ex->resp_has_body && ex->resp_length > 0 && ex->method_bit != M_HEAD)
        ex->front->send_body(ex, body);
    ex->front->send_end(ex);
}

static void exchange_respond_json(mock_exchange_t *ex, int status, cJSON *doc)
{
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    struct evbuffer *body = evbuffer_new();
    if (text != NULL) {
        evbuffer_add(body, text, strlen(text));
        cJSON_free(text);
    }
    exchange_respond(ex, status, "application/json", body);
    evbuffer_free(body);
}

/* {"error": msg[, "key": key]} */
static void exchange_respond_error(mock_exchange_t *ex, int status, const char *msg, const char *key)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    if (key != NULL)
        cJSON_AddStringToObject(o, "key", key);
    exchange_respond_json(ex, status, o);
}

/* Keeps pulling the body generator while the front has room; ends the
 * response when the generator is done. The front calls this again when its
 * output drains. */
static void exchange_pull(mock_exchange_t *ex)
{
    struct evbuffer *chunk = evbuffer_new();
    while (ex->gen_sent < ex->resp_length && ex->front->room(ex) > 0) {
        uint64_t left = ex->resp_length - ex->gen_sent;
        size_t n = ex->gen(ex, chunk, left < MOCK_CHUNK ? (size_t)left : MOCK_CHUNK);
        if (n == 0)
            break;
        ex->gen_sent += n;
        ex->front->send_body(ex, chunk);
    }
    evbuffer_free(chunk);
    if (ex->gen_sent >= ex->resp_length)
        ex->front->send_end(ex);
}

/* Answers with `length` bytes pulled from gen as the peer reads them. */
static void exchange_respond_stream(mock_exchange_t *ex, int status, const char *content_type,
                                    uint64_t length, int chunked, mock_body_gen_fn gen)
{
    exchange_begin_response(ex, status, content_type);
    ex->resp_has_body = 1;
    ex->resp_length = length;
    ex->resp_chunked = chunked;
    ex->gen = gen;
    ex->front->send_head(ex);
    if (ex->method_bit == M_HEAD) {
        ex->front->send_end(ex);
        return;
    }
    ex->phase = EX_STREAMING;
    exchange_pull(ex);
}

static void exchange_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    mock_exchange_t *ex = arg;
    ex->timer_fn(ex);
}

static void exchange_after(mock_exchange_t *ex, uint64_t delay_us, void (*fn)(mock_exchange_t *))
{
    if (ex->timer == NULL)
        ex->timer = evtimer_new(ex->server->base, exchange_timer_cb, ex);
    if (ex->timer == NULL) {
        exchange_respond_error(ex, 500, "out of memory", NULL);
        return;
    }
    ex->timer_fn = fn;
    struct timeval tv = {(time_t)(delay_us / 1000000), (suseconds_t)(delay_us % 1000000)};
    evtimer_add(ex->timer, &tv);
}

/* Holds the exchange unanswered until its client leaves; past the bound the
 * oldest held one is answered 504. */
static void exchange_hold(mock_exchange_t *ex)
{
    mock_server_t *srv = ex->server;
    if (srv->held_count >= MOCK_MAX_HELD) {
        mock_exchange_t *oldest = TAILQ_FIRST(&srv->held);
        TAILQ_REMOVE(&srv->held, oldest, hold_link);
        oldest->held = 0;
        srv->held_count--;
        srv->stats.hangs_evicted++;
        exchange_respond_error(oldest, 504, "hang evicted", NULL);
    }
    TAILQ_INSERT_TAIL(&srv->held, ex, hold_link);
    ex->held = 1;
    srv->held_count++;
    srv->stats.hangs++;
}

static void exchange_run(mock_exchange_t *ex)
{
    const mock_route_t *r = ex->route;
    if (!(r->methods & ex->method_bit)) {
        char allow[96] = "";
        static const char *names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (r->methods & (1u << i)) {
                if (allow[0] != '\0')
                    strcat(allow, ", ");
                strcat(allow, names[i]);
            }
        }
        exchange_add_header(ex, "allow", allow);
        exchange_respond_error(ex, 405, "method not allowed", NULL);
        return;
    }
    if (ex->body_too_large) {
        exchange_respond_error(ex, 413, "request body over 1 GiB; use /sink", NULL);
        return;
    }
    r->handler(ex);
}

/* Called by the front when the request is complete. Faults are decided by one
 * uniform draw: [0, reset) resets, [reset, reset+hang) hangs,
 * [.., ..+error) answers 503; the rest are delayed, then handled. */
static const mock_front_ops_t h1_ops;

static void exchange_dispatch(mock_exchange_t *ex)
{
    mock_server_t *srv = ex->server;
    ex->phase = EX_WAITING;
    if (srv->fault.h2_only && ex->front == &h1_ops && !(ex->route->flags & ROUTE_CONTROL)) {
        ex->front->reset(ex); /* as a gRPC-only server: no HTTP/1.1 answer at all */
        return;
    }
    if (ex->counted) {
        srv->stats.requests_total++;
        srv->stats.requests_by_route[ex->route_slot]++;
    }
    if (ex->route->flags & (ROUTE_CONTROL | ROUTE_NO_FAULT)) {
        exchange_run(ex);
        return;
    }
    const mock_fault_t *f = &srv->fault;
    double u = rng_double(srv);
    if (u < f->reset_rate) {
        srv->stats.resets++;
        ex->front->reset(ex);
        return;
    }
    u -= f->reset_rate;
    if (u < f->hang_rate) {
        exchange_hold(ex);
        return;
    }
    u -= f->hang_rate;
    if (u < f->error_rate) {
        srv->stats.errors_injected++;
        exchange_respond_error(ex, 503, "injected", NULL);
        return;
    }
    uint64_t delay_us = fault_sample_latency_us(srv);
    if (delay_us == 0)
        exchange_run(ex);
    else
        exchange_after(ex, delay_us, exchange_run);
}

/* ---- handlers ---- */

static const char *query_get(const mock_exchange_t *ex, const char *key, size_t *len)
{
    size_t key_len = strlen(key);
    for (const char *p = ex->query; p != NULL && *p != '\0';) {
        const char *amp = strchr(p, '&');
        size_t n = amp != NULL ? (size_t)(amp - p) : strlen(p);
        if (n > key_len && strncmp(p, key, key_len) == 0 && p[key_len] == '=') {
            *len = n - key_len - 1;
            return p + key_len + 1;
        }
        p = amp != NULL ? amp + 1 : NULL;
    }
    return NULL;
}

static int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

static int query_get_u64(const mock_exchange_t *ex, const char *key, uint64_t max, uint64_t *out)
{
    size_t len;
    const char *v = query_get(ex, key, &len);
    return v != NULL ? parse_u64(v, len, max, out) : -1;
}

/* The body as a NUL-terminated string (cJSON reads to the terminator). */
static const char *exchange_body_cstr(mock_exchange_t *ex, size_t *len)
{
    if (ex->body == NULL) {
        *len = 0;
        return "";
    }
    *len = evbuffer_get_length(ex->body);
    evbuffer_add(ex->body, "", 1);
    return (const char *)evbuffer_pullup(ex->body, -1);
}

/* Deterministic from the text alone: FNV-1a seeds splitmix64, the vector is
 * L2-normalised and rounded to 6 digits, so every pod agrees. */
static void embed_compute(const char *text, size_t len, double *out)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)text[i];
        h *= 0x100000001b3ull;
    }
    double norm = 0.0;
    for (int i = 0; i < MOCK_EMBED_DIM; i++) {
        out[i] = (double)(splitmix64(&h) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
        norm += out[i] * out[i];
    }
    norm = norm > 0.0 ? sqrt(norm) : 1.0;
    for (int i = 0; i < MOCK_EMBED_DIM; i++)
        out[i] = round(out[i] / norm * 1e6) / 1e6 + 0.0;
}

static void handle_embed(mock_exchange_t *ex)
{
    size_t len;
    const char *body = exchange_body_cstr(ex, &len);
    cJSON *doc = cJSON_ParseWithLength(body, len);
    if (doc == NULL) {
        exchange_respond_error(ex, 400, "invalid JSON", NULL);
        return;
    }
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(doc, "text");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(doc, "model");
    const char *bad = !cJSON_IsObject(doc) ? "body must be a JSON object"
                      : !cJSON_IsString(text) ? "\"text\" must be a string"
                      : model != NULL && !cJSON_IsString(model) ? "\"model\" must be a string"
                      : NULL;
    if (bad != NULL) {
        exchange_respond_error(ex, 400, bad, !cJSON_IsObject(doc) ? NULL
                                             : !cJSON_IsString(text) ? "text" : "model");
        cJSON_Delete(doc);
        return;
    }
    double vec[MOCK_EMBED_DIM];
    embed_compute(text->valuestring, strlen(text->valuestring), vec);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", model != NULL ? model->valuestring : "mock-embed-384");
    cJSON_AddStringToObject(o, "pod", ex->server->name);
    cJSON_AddItemToObject(o, "embedding", cJSON_CreateDoubleArray(vec, MOCK_EMBED_DIM));
    cJSON_Delete(doc);
    exchange_respond_json(ex, 200, o);
}

static void handle_health(mock_exchange_t *ex)
{
    int fail = ex->server->fault.health_fail;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", fail ? "fail" : "ok");
    cJSON_AddStringToObject(o, "pod", ex->server->name);
    exchange_respond_json(ex, fail ? 503 : 200, o);
}

static void handle_fault(mock_exchange_t *ex)
{
    mock_server_t *srv = ex->server;
    if (ex->method_bit == M_POST) {
        size_t len;
        const char *body = exchange_body_cstr(ex, &len);
        cJSON *doc = len > 0 ? cJSON_ParseWithLength(body, len) : cJSON_CreateObject();
        if (doc == NULL) {
            exchange_respond_error(ex, 400, "invalid JSON", NULL);
            return;
        }
        char err[256];
        const char *bad = fault_update_json(&srv->fault, doc, err, sizeof(err));
        if (bad != NULL) {
            exchange_respond_error(ex, 400, err, bad[0] != '\0' ? bad : NULL);
            cJSON_Delete(doc);
            return;
        }
        cJSON_Delete(doc);
    }
    exchange_respond_json(ex, 200, fault_to_json(&srv->fault));
}

static cJSON *stats_to_json(const mock_server_t *srv)
{
    const mock_stats_t *st = &srv->stats;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "pod", srv->name);
    cJSON_AddNumberToObject(o, "requests_total", (double)st->requests_total);
    cJSON *by_path = cJSON_AddObjectToObject(o, "requests_by_path");
    for (size_t i = 0; i < MOCK_ROUTE_COUNT; i++) {
        if (mock_routes[i].flags & ROUTE_CONTROL)
            continue;
        char name[64];
        snprintf(name, sizeof(name), "%s", mock_routes[i].path);
        size_t n = strlen(name);
        if (n > 1 && name[n - 1] == '/')
            name[n - 1] = '\0';
        cJSON_AddNumberToObject(by_path, name, (double)st->requests_by_route[i]);
    }
    cJSON_AddNumberToObject(by_path, "other", (double)st->requests_by_route[MOCK_ROUTE_COUNT]);
    cJSON *by_status = cJSON_AddObjectToObject(o, "responses_by_status");
    for (int s = 0; s < MOCK_STATUS_SLOTS; s++) {
        if (st->responses_by_status[s] > 0) {
            char code[8];
            snprintf(code, sizeof(code), "%d", s);
            cJSON_AddNumberToObject(by_status, code, (double)st->responses_by_status[s]);
        }
    }
    cJSON_AddNumberToObject(o, "errors_injected", (double)st->errors_injected);
    cJSON_AddNumberToObject(o, "resets", (double)st->resets);
    cJSON_AddNumberToObject(o, "hangs", (double)st->hangs);
    cJSON_AddNumberToObject(o, "hangs_active", (double)srv->held_count);
    cJSON_AddNumberToObject(o, "hangs_evicted", (double)st->hangs_evicted);
    cJSON_AddNumberToObject(o, "client_aborts", (double)st->client_aborts);
    cJSON_AddNumberToObject(o, "bytes_received", (double)st->bytes_received);
    cJSON_AddNumberToObject(o, "connections_active", (double)srv->conn_count);
    cJSON_AddNumberToObject(o, "connections_rejected", (double)st->conns_rejected);
    cJSON_AddNumberToObject(o, "h2_connections_total", (double)st->h2_connections);
    cJSON_AddNumberToObject(o, "h2_streams_total", (double)st->h2_streams);
    cJSON_AddNumberToObject(o, "h2_streams_active", (double)srv->h2_open_streams);
    cJSON_AddNumberToObject(o, "h2_peak_streams", (double)st->h2_peak_streams);
    cJSON_AddNumberToObject(o, "h2_peak_streams_per_connection", (double)st->h2_peak_streams_per_conn);
    cJSON_AddNumberToObject(o, "h2_refused_streams", (double)st->h2_refused);
    cJSON_AddNumberToObject(o, "h2_goaways_sent", (double)st->h2_goaways);
    cJSON_AddNumberToObject(o, "grpc_errors_injected", (double)st->grpc_errors_injected);
    return o;
}

static void handle_stats(mock_exchange_t *ex)
{
    exchange_respond_json(ex, 200, stats_to_json(ex->server));
}

static void handle_stats_reset(mock_exchange_t *ex)
{
    memset(&ex->server->stats, 0, sizeof(ex->server->stats));
    exchange_respond_json(ex, 200, stats_to_json(ex->server));
}

static void handle_echo(mock_exchange_t *ex)
{
    char n[24];
    snprintf(n, sizeof(n), "%" PRIu64, ex->body_bytes);
    exchange_add_header(ex, "x-echo-bytes", n);
    const mock_header_t *ct = exchange_find_header(ex, "content-type");
    exchange_respond(ex, 200, ct != NULL ? ct->value : "application/octet-stream", ex->body);
}

/* Names as received; repeats of a name (any case) become an array under the
 * first spelling, in arrival order. */
static void handle_headers(mock_exchange_t *ex)
{
    cJSON *o = cJSON_CreateObject();
    for (const mock_header_t *h = ex->headers; h != NULL; h = h->next) {
        int seen = 0, repeats = 0;
        for (const mock_header_t *p = ex->headers; p != h; p = p->next)
            seen |= strcasecmp(p->name, h->name) == 0;
        if (seen)
            continue;
        for (const mock_header_t *n = h->next; n != NULL; n = n->next)
            repeats |= strcasecmp(n->name, h->name) == 0;
        if (!repeats) {
            cJSON_AddStringToObject(o, h->name, h->value);
            continue;
        }
        cJSON *arr = cJSON_AddArrayToObject(o, h->name);
        for (const mock_header_t *n = h; n != NULL; n = n->next)
            if (strcasecmp(n->name, h->name) == 0)
                cJSON_AddItemToArray(arr, cJSON_CreateString(n->value));
    }
    exchange_respond_json(ex, 200, o);
}

static size_t bytes_gen(mock_exchange_t *ex, struct evbuffer *out, size_t max)
{
    evbuffer_add_reference(out, ex->server->pattern + ex->gen_sent % 26, max, NULL, NULL);
    return max;
}

static void handle_bytes(mock_exchange_t *ex)
{
    uint64_t n, cl = 0;
    if (query_get_u64(ex, "n", MOCK_MAX_BYTES_N, &n) != 0) {
        exchange_respond_error(ex, 400, "n must be an integer between 0 and 2^40", "n");
        return;
    }
    size_t len;
    if (query_get(ex, "cl", &len) != NULL && query_get_u64(ex, "cl", 1, &cl) != 0) {
        exchange_respond_error(ex, 400, "cl must be 0 or 1", "cl");
        return;
    }
    exchange_respond_stream(ex, 200, "application/octet-stream", n, !cl, bytes_gen);
}

static void handle_sink(mock_exchange_t *ex)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "bytes", (double)ex->body_bytes);
    cJSON_AddNumberToObject(o, "sum", (double)ex->body_sum);
    exchange_respond_json(ex, 200, o);
}

static void handle_status(mock_exchange_t *ex)
{
    const char *code = ex->path + strlen("/status/");
    uint64_t status;
    if (parse_u64(code, strlen(code), 599, &status) != 0 || status < 200) {
        exchange_respond_error(ex, 400, "status must be 200..599", NULL);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "status", (double)status);
    cJSON_AddStringToObject(o, "pod", ex->server->name);
    exchange_respond_json(ex, (int)status, o);
}

static void slow_reply(mock_exchange_t *ex)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "slept_ms", (double)ex->slow_ms);
    cJSON_AddStringToObject(o, "pod", ex->server->name);
    exchange_respond_json(ex, 200, o);
}

static void handle_slow(mock_exchange_t *ex)
{
    if (query_get_u64(ex, "ms", MOCK_MAX_DELAY_US / 1000, &ex->slow_ms) != 0) {
        exchange_respond_error(ex, 400, "ms must be an integer between 0 and 600000", "ms");
        return;
    }
    if (ex->slow_ms == 0)
        slow_reply(ex);
    else
        exchange_after(ex, ex->slow_ms * 1000, slow_reply);
}

/* A trailers-only gRPC answer: HTTP 200, the outcome in the head. */
static void grpc_respond_status(mock_exchange_t *ex, unsigned code, const char *message)
{
    char digits[8];
    snprintf(digits, sizeof(digits), "%u", code);
    exchange_add_header(ex, "grpc-status", digits);
    exchange_add_header(ex, "grpc-message", message);
    exchange_respond(ex, 200, "application/grpc", NULL);
}

/* What every gRPC method here does first: an injected error (fault
 * grpc_error_rate), or the request body as one uncompressed length-prefixed
 * message. NULL: answered already. */
static const unsigned char *grpc_request_message(mock_exchange_t *ex, size_t *len_out)
{
    mock_server_t *srv = ex->server;
    if (srv->fault.grpc_error_rate > 0 && rng_double(srv) < srv->fault.grpc_error_rate) {
        srv->stats.grpc_errors_injected++;
        grpc_respond_status(ex, (unsigned)srv->fault.grpc_error_code, "injected");
        return NULL;
    }
    size_t len = ex->body != NULL ? evbuffer_get_length(ex->body) : 0;
    const unsigned char *msg = len > 0 ? evbuffer_pullup(ex->body, -1) : NULL;
    if (len < 5 || msg[0] != 0 ||
        ((uint64_t)msg[1] << 24 | (uint64_t)msg[2] << 16 | (uint64_t)msg[3] << 8 | msg[4]) != len - 5) {
        grpc_respond_status(ex, 3, len >= 5 && msg[0] != 0 ? "compressed messages are not supported"
                                                            : "expected one length-prefixed message");
        return NULL;
    }
    *len_out = len;
    return msg;
}

static void handle_grpc_embed(mock_exchange_t *ex)
{
    mock_server_t *srv = ex->server;
    size_t len = 0;
    const unsigned char *msg = grpc_request_message(ex, &len);
    if (msg == NULL)
        return;
    double vec[MOCK_EMBED_DIM];
    embed_compute((const char *)msg + 5, len - 5, vec);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", "mock-embed-384");
    cJSON_AddStringToObject(o, "pod", srv->name);
    cJSON_AddItemToObject(o, "embedding", cJSON_CreateDoubleArray(vec, MOCK_EMBED_DIM));
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    struct evbuffer *out = evbuffer_new();
    if (text == NULL || out == NULL) {
        cJSON_free(text);
        if (out != NULL)
            evbuffer_free(out);
        grpc_respond_status(ex, 13, "out of memory");
        return;
    }
    size_t n = strlen(text);
    unsigned char prefix[5] = {0, (unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                               (unsigned char)n};
    evbuffer_add(out, prefix, 5);
    evbuffer_add(out, text, n);
    cJSON_free(text);
    exchange_add_trailer(ex, "grpc-status", "0");
    exchange_respond(ex, 200, "application/grpc", out);
    evbuffer_free(out);
}

/* grpc.health.v1.Health/Check: the request's field 1 (service) picks what is
 * checked; the answer is one HealthCheckResponse{status} message. */
static void handle_grpc_health(mock_exchange_t *ex)
{
    mock_server_t *srv = ex->server;
    size_t len = 0;
    const unsigned char *msg = grpc_request_message(ex, &len);
    if (msg == NULL)
        return;
    /* Only field 1 (tag 0x0a) with a one-byte length is sent by checkers for
     * the names this pod knows; anything else is an unknown service. */
    const unsigned char *service = msg + 5;
    size_t service_len = 0;
    if (len > 5) {
        if (len < 7 || msg[5] != 0x0a || msg[6] > 127 || (size_t)msg[6] != len - 7) {
            grpc_respond_status(ex, 5, "unknown service");
            return;
        }
        service = msg + 7;
        service_len = msg[6];
    }
    if (service_len != 0 && !(service_len == 14 && memcmp(service, "akidb.v1.Embed", 14) == 0)) {
        grpc_respond_status(ex, 5, "unknown service");
        return;
    }
    struct evbuffer *out = evbuffer_new();
    if (out == NULL) {
        grpc_respond_status(ex, 13, "out of memory");
        return;
    }
    /* HealthCheckResponse{status: 1 SERVING / 2 NOT_SERVING} */
    unsigned char reply[7] = {0, 0, 0, 0, 2, 0x08, srv->fault.health_fail ? 2 : 1};
    evbuffer_add(out, reply, sizeof(reply));
    exchange_add_trailer(ex, "grpc-status", "0");
    exchange_respond(ex, 200, "application/grpc", out);
    evbuffer_free(out);
}

static void handle_not_found(mock_exchange_t *ex)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", "not found");
    cJSON_AddStringToObject(o, "path", ex->path);
    exchange_respond_json(ex, 404, o);
}

/* ---- HTTP/1.1 front: llhttp over a bufferevent, one exchange at a time ---- */

struct mock_h1_conn {
    mock_server_t *server;
    struct bufferevent *bev;
    struct event *resume_ev;
    llhttp_t parser;
    mock_exchange_t *ex;
    struct evbuffer *field, *value; /* pieces of the target / header being parsed */
    size_t head_bytes;
    int error_status;
    const char *error_msg;
    unsigned keep_alive : 1, message_done : 1, closing : 1, lingering : 1, eof_seen : 1,
        resume_on_drain : 1, chunked : 1, sniffed : 1;
    LIST_ENTRY(mock_h1_conn) link;
};

static const mock_front_ops_t h1_ops;
static const struct timeval h1_io_timeout = {MOCK_IO_TIMEOUT_SEC, 0};
static const struct timeval h1_linger_timeout = {MOCK_LINGER_TIMEOUT_SEC, 0};

static void h1_conn_free(mock_h1_conn_t *c)
{
    if (c->ex != NULL)
        exchange_free(c->ex);
    LIST_REMOVE(c, link);
    c->server->conn_count--;
    event_free(c->resume_ev);
    bufferevent_free(c->bev); /* closes the socket once libevent lets go of it */
    evbuffer_free(c->field);
    evbuffer_free(c->value);
    free(c);
}

static int h1_fail(mock_h1_conn_t *c, int status, const char *msg)
{
    if (c->error_status == 0) {
        c->error_status = status;
        c->error_msg = msg;
    }
    return -1;
}

static int h1_count_head(mock_h1_conn_t *c, size_t n)
{
    c->head_bytes += n;
    return c->head_bytes > MOCK_MAX_HEAD_BYTES ? h1_fail(c, 431, "request head over 1 MiB") : 0;
}

static int h1_on_message_begin(llhttp_t *p)
{
    mock_h1_conn_t *c = p->data;
    c->head_bytes = 0;
    evbuffer_drain(c->field, evbuffer_get_length(c->field));
    evbuffer_drain(c->value, evbuffer_get_length(c->value));
    c->ex = exchange_new(c->server, &h1_ops, c);
    return c->ex != NULL ? 0 : h1_fail(c, 500, "out of memory");
}

static int h1_on_url(llhttp_t *p, const char *at, size_t len)
{
    mock_h1_conn_t *c = p->data;
    if (h1_count_head(c, len) != 0)
        return -1;
    evbuffer_add(c->field, at, len);
    return 0;
}

static int h1_on_url_complete(llhttp_t *p)
{
    mock_h1_conn_t *c = p->data;
    size_t len = evbuffer_get_length(c->field);
    const char *target = len > 0 ? (const char *)evbuffer_pullup(c->field, -1) : "";
    int rc = exchange_set_target(c->ex, target, len);
    evbuffer_drain(c->field, len);
    return rc == 0 ? 0 : h1_fail(c, 500, "out of memory");
}

static int h1_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    mock_h1_conn_t *c = p->data;
    if (h1_count_head(c, len) != 0)
        return -1;
    evbuffer_add(c->field, at, len);
    return 0;
}

static int h1_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    mock_h1_conn_t *c = p->data;
    if (h1_count_head(c, len) != 0)
        return -1;
    evbuffer_add(c->value, at, len);
    return 0;
}

static int h1_on_header_value_complete(llhttp_t *p)
{
    mock_h1_conn_t *c = p->data;
    if (c->ex->header_count >= MOCK_MAX_HEADERS)
        return h1_fail(c, 431, "more than 1024 request headers");
    size_t name_len = evbuffer_get_length(c->field), value_len = evbuffer_get_length(c->value);
    const char *name = name_len > 0 ? (const char *)evbuffer_pullup(c->field, -1) : "";
    const char *value = value_len > 0 ? (const char *)evbuffer_pullup(c->value, -1) : "";
    size_t trimmed = value_len; /* llhttp drops leading OWS, not trailing */
    while (trimmed > 0 && (value[trimmed - 1] == ' ' || value[trimmed - 1] == '\t'))
        trimmed--;
    int rc = exchange_add_request_header(c->ex, name, name_len, value, trimmed);
    evbuffer_drain(c->field, name_len);
    evbuffer_drain(c->value, value_len);
    return rc == 0 ? 0 : h1_fail(c, 500, "out of memory");
}

static int h1_on_headers_complete(llhttp_t *p)
{
    mock_h1_conn_t *c = p->data;
    mock_exchange_t *ex = c->ex;
    ex->http_major = p->http_major;
    ex->http_minor = p->http_minor;
    if (p->http_major != 1)
        return h1_fail(c, 505, "only HTTP/1.x is served here");
    ex->method = llhttp_method_name((llhttp_method_t)p->method);
    c->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    exchange_head_done(ex);
    const mock_header_t *expect = exchange_find_header(ex, "expect");
    if (expect != NULL && ex->http_minor >= 1 && strcasecmp(expect->value, "100-continue") == 0)
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int h1_on_body(llhttp_t *p, const char *at, size_t len)
{
    mock_h1_conn_t *c = p->data;
    exchange_body(c->ex, at, len);
    return 0;
}

static int h1_on_message_complete(llhttp_t *p)
{
    mock_h1_conn_t *c = p->data;
    c->message_done = 1;
    if (!llhttp_should_keep_alive(p) || p->upgrade)
        c->keep_alive = 0;
    return HPE_PAUSED; /* one exchange at a time; later input waits in the buffer */
}

static void h1_settings_init(llhttp_settings_t *s)
{
    llhttp_settings_init(s);
    s->on_message_begin = h1_on_message_begin;
    s->on_url = h1_on_url;
    s->on_url_complete = h1_on_url_complete;
    s->on_header_field = h1_on_header_field;
    s->on_header_value = h1_on_header_value;
    s->on_header_value_complete = h1_on_header_value_complete;
    s->on_headers_complete = h1_on_headers_complete;
    s->on_body = h1_on_body;
    s->on_message_complete = h1_on_message_complete;
}

/* A response the codec itself owes (bad request, head too large): no
 * exchange to answer through, and the connection closes after it. */
static void h1_send_codec_error(mock_h1_conn_t *c, int status, const char *msg)
{
    if (c->ex != NULL) {
        exchange_free(c->ex);
        c->ex = NULL;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    size_t len = text != NULL ? strlen(text) : 0;
    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "HTTP/1.1 %d %s\r\nx-pod: %s\r\ncontent-type: application/json\r\n"
                        "content-length: %zu\r\nconnection: close\r\n\r\n%s",
                        status, veer_http_reason(status), c->server->name, len, text != NULL ? text : "");
    cJSON_free(text);
    c->keep_alive = 0;
    c->closing = 1;
}

/* Parses buffered input until a request is complete, then dispatches it.
 * After the dispatch neither c nor the exchange may be touched: a reset or
 * a synchronous answer may have freed them. */
static void h1_process_input(mock_h1_conn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->closing && (c->ex == NULL || c->ex->phase == EX_READING)) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            return;
        llhttp_errno_t err = llhttp_execute(&c->parser, v.iov_base, v.iov_len);
        size_t used = v.iov_len;
        if (err == HPE_PAUSED) {
            used = (size_t)(llhttp_get_error_pos(&c->parser) - (const char *)v.iov_base);
            llhttp_resume(&c->parser);
        } else if (err != HPE_OK) {
            int status = c->error_status != 0 ? c->error_status : 400;
            const char *msg = c->error_msg != NULL ? c->error_msg : llhttp_get_error_reason(&c->parser);
            h1_send_codec_error(c, status, msg != NULL ? msg : "bad request");
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        }
        evbuffer_drain(in, used);
        if (c->message_done) {
            c->message_done = 0;
            /* The idle timeout is for reading; a held or slow exchange is ours to time. */
            bufferevent_set_timeouts(c->bev, NULL, &h1_io_timeout);
            exchange_dispatch(c->ex);
            return;
        }
    }
}

static void h1_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    h1_process_input(arg);
}

/* Output is flushed on a connection that will not be reused: half-close and
 * wait briefly for the peer's FIN, so its unread input does not turn our
 * close into a RST that destroys the response. */
static void h1_start_linger(mock_h1_conn_t *c)
{
    if (c->eof_seen) {
        h1_conn_free(c);
        return;
    }
    c->lingering = 1;
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    bufferevent_set_timeouts(c->bev, &h1_linger_timeout, NULL);
    bufferevent_enable(c->bev, EV_READ);
}

static void h1_exchange_finished(mock_h1_conn_t *c)
{
    exchange_free(c->ex);
    c->ex = NULL;
    if (!c->keep_alive) {
        c->closing = 1;
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            h1_start_linger(c);
        return;
    }
    bufferevent_set_timeouts(c->bev, &h1_io_timeout, &h1_io_timeout);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > MOCK_OUT_HIGH)
        c->resume_on_drain = 1;
    else
        event_active(c->resume_ev, EV_READ, 0);
}

static void h1_conn_to_h2(mock_h1_conn_t *h1);

static void h1_read_cb(struct bufferevent *bev, void *arg)
{
    mock_h1_conn_t *c = arg;
    if (!c->sniffed) { /* h2c with prior knowledge: the first bytes decide */
        static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        char head[sizeof(preface) - 1];
        size_t len = evbuffer_get_length(bufferevent_get_input(bev));
        size_t n = len < sizeof(head) ? len : sizeof(head);
        evbuffer_copyout(bufferevent_get_input(bev), head, n);
        if (memcmp(head, preface, n) == 0) {
            if (n == sizeof(head))
                h1_conn_to_h2(c);
            return; /* else wait for the rest of the preface */
        }
        c->sniffed = 1;
    }
    if (c->closing) {
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    h1_process_input(c);
}

static void h1_write_cb(struct bufferevent *bev, void *arg)
{
    mock_h1_conn_t *c = arg;
    size_t queued = evbuffer_get_length(bufferevent_get_output(bev));
    if (c->ex != NULL && c->ex->phase == EX_STREAMING) {
        exchange_pull(c->ex);
    } else if (c->closing && !c->lingering) {
        if (queued == 0)
            h1_start_linger(c);
    } else if (c->resume_on_drain && queued <= MOCK_OUT_HIGH) {
        c->resume_on_drain = 0;
        event_active(c->resume_ev, EV_READ, 0);
    }
}

/* EOF with an exchange pending means the client left: the exchange is
 * dropped. EOF after a full answer is queued still lets it drain. */
static void h1_event_cb(struct bufferevent *bev, short what, void *arg)
{
    mock_h1_conn_t *c = arg;
    int pending = c->ex != NULL && c->ex->phase != EX_READING;
    if ((what & BEV_EVENT_EOF) && !pending && !c->lingering &&
        evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        c->eof_seen = 1;
        c->keep_alive = 0;
        c->closing = 1;
        return;
    }
    if (pending && c->ex->counted)
        c->server->stats.client_aborts++;
    h1_conn_free(c);
}

static mock_h1_conn_t *h1_conn_of(mock_exchange_t *ex)
{
    return ex->front_ctx;
}

static void h1_send_head(mock_exchange_t *ex)
{
    mock_h1_conn_t *c = h1_conn_of(ex);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    c->chunked = ex->resp_chunked && ex->http_minor >= 1;
    evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\n", ex->http_minor >= 1 ? 1 : 0, ex->status,
                        veer_http_reason(ex->status));
    for (const mock_header_t *h = ex->resp_headers; h != NULL; h = h->next) {
        evbuffer_add(out, h->name, h->name_len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, h->value, h->value_len);
        evbuffer_add(out, "\r\n", 2);
    }
    if (c->chunked)
        evbuffer_add_printf(out, "transfer-encoding: chunked\r\n");
    else if (ex->resp_has_body)
        evbuffer_add_printf(out, "content-length: %" PRIu64 "\r\n", ex->resp_length);
    if (!c->keep_alive)
        evbuffer_add_printf(out, "connection: close\r\n");
    else if (ex->http_minor == 0)
        evbuffer_add_printf(out, "connection: keep-alive\r\n");
    evbuffer_add(out, "\r\n", 2);
}

static void h1_send_body(mock_exchange_t *ex, struct evbuffer *data)
{
    mock_h1_conn_t *c = h1_conn_of(ex);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t len = evbuffer_get_length(data);
    if (len == 0)
        return;
    if (c->chunked)
        evbuffer_add_printf(out, "%zx\r\n", len);
    evbuffer_add_buffer(out, data);
    if (c->chunked)
        evbuffer_add(out, "\r\n", 2);
}

static void h1_send_end(mock_exchange_t *ex)
{
    mock_h1_conn_t *c = h1_conn_of(ex);
    if (c->chunked && ex->method_bit != M_HEAD)
        evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
    c->chunked = 0;
    h1_exchange_finished(c);
}

/* SO_LINGER 0 makes the close a RST; the bufferevent owns the socket and
 * closes it once libevent has removed its events. */
static void h1_reset(mock_exchange_t *ex)
{
    mock_h1_conn_t *c = h1_conn_of(ex);
    struct linger lg = {1, 0};
    setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    h1_conn_free(c);
}

static size_t h1_room(mock_exchange_t *ex)
{
    size_t queued = evbuffer_get_length(bufferevent_get_output(h1_conn_of(ex)->bev));
    return queued < MOCK_OUT_HIGH ? MOCK_OUT_HIGH - queued : 0;
}

static const mock_front_ops_t h1_ops = {h1_send_head, h1_send_body, h1_send_end, h1_reset, h1_room};

static void h1_conn_new(mock_server_t *srv, evutil_socket_t fd)
{
    mock_h1_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->server = srv;
    c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->resume_ev = event_new(srv->base, -1, 0, h1_resume_cb, c);
    c->field = evbuffer_new();
    c->value = evbuffer_new();
    if (c->bev == NULL || c->resume_ev == NULL || c->field == NULL || c->value == NULL) {
        if (c->bev == NULL)
            evutil_closesocket(fd);
        else
            bufferevent_free(c->bev);
        if (c->resume_ev != NULL)
            event_free(c->resume_ev);
        if (c->field != NULL)
            evbuffer_free(c->field);
        if (c->value != NULL)
            evbuffer_free(c->value);
        free(c);
        return;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &srv->h1_settings);
    c->parser.data = c;
    c->keep_alive = 1;
    LIST_INSERT_HEAD(&srv->conns, c, link);
    srv->conn_count++;
    bufferevent_setcb(c->bev, h1_read_cb, h1_write_cb, h1_event_cb, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, MOCK_IN_HIGH);
    bufferevent_setwatermark(c->bev, EV_WRITE, MOCK_CHUNK, 0);
    bufferevent_set_timeouts(c->bev, &h1_io_timeout, &h1_io_timeout);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* ---- HTTP/2 front: h2c with prior knowledge. The h1 front hands over a
 * connection that opens with the preface; an nghttp2 server session then runs
 * on the same bufferevent, one exchange per stream. ---- */

#define MOCK_H2_OUT_HIGH (4 * MOCK_CHUNK) /* session bytes queued on the socket before nghttp2 waits */
#define MOCK_H2_MAX_TRAILERS 16
#define MOCK_H2_WINDOW (1 << 20)          /* request bodies up to 10 MiB arrive without many round trips */

typedef struct mock_h2_stream {
    mock_h2_conn_t *conn;
    mock_exchange_t *ex;     /* NULL once answered or reset (the stream may still be sending) */
    int32_t id;
    struct evbuffer *out;    /* response body nghttp2 has not taken yet */
    char *trailers[2 * MOCK_H2_MAX_TRAILERS]; /* name, value, ...: owned copies (the exchange goes first) */
    size_t trailer_count;
    unsigned ended : 1, deferred : 1, want_pull : 1;
    LIST_ENTRY(mock_h2_stream) link;
} mock_h2_stream_t;

struct mock_h2_conn {
    mock_server_t *server;
    struct bufferevent *bev;
    nghttp2_session *ng;
    uint64_t open_streams, accepted;
    int32_t goaway_last;     /* > 0 once GOAWAY was submitted */
    unsigned busy : 1, flush_again : 1, closing : 1;
    LIST_HEAD(, mock_h2_stream) streams;
    LIST_ENTRY(mock_h2_conn) link;
};

static const mock_front_ops_t h2_ops;
static const struct timeval h2_idle_timeout = {MOCK_IO_TIMEOUT_SEC, 0};

static void h2_stream_free(mock_h2_stream_t *st)
{
    mock_h2_conn_t *c = st->conn;
    if (st->ex != NULL) { /* the client reset it, or the connection went, before the answer */
        if (st->ex->counted && st->ex->phase != EX_READING)
            c->server->stats.client_aborts++;
        exchange_free(st->ex);
    }
    c->open_streams--;
    c->server->h2_open_streams--;
    LIST_REMOVE(st, link);
    evbuffer_free(st->out);
    for (size_t i = 0; i < 2 * st->trailer_count; i++)
        free(st->trailers[i]);
    free(st);
}

static void h2_conn_free(mock_h2_conn_t *c)
{
    while (!LIST_EMPTY(&c->streams))
        h2_stream_free(LIST_FIRST(&c->streams));
    nghttp2_session_del(c->ng);
    LIST_REMOVE(c, link);
    c->server->conn_count--;
    bufferevent_free(c->bev);
    free(c);
}

/* Sends what the session has, lets streaming answers pull more, and closes
 * the connection once the session is done (after GOAWAY) and flushed.
 * Returns -1 when c was freed. Nested calls (from inside the session or a
 * pull) only ask the outermost one to go round again. */
static int h2_conn_flush(mock_h2_conn_t *c)
{
    if (c->busy) {
        c->flush_again = 1;
        return 0;
    }
    c->busy = 1;
    do {
        c->flush_again = 0;
        if (nghttp2_session_send(c->ng) != 0) {
            h2_conn_free(c);
            return -1;
        }
        for (mock_h2_stream_t *st = LIST_FIRST(&c->streams); st != NULL; st = LIST_NEXT(st, link)) {
            if (st->want_pull && st->ex != NULL && st->ex->phase == EX_STREAMING) {
                st->want_pull = 0;
                exchange_pull(st->ex);
                c->flush_again = 1;
            }
        }
    } while (c->flush_again);
    c->busy = 0;
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng)) {
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
            h2_conn_free(c);
            return -1;
        }
        c->closing = 1; /* freed when the output drained */
    }
    /* The idle timeout is for a connection without streams; a held or slow one is ours to time. */
    bufferevent_set_timeouts(c->bev, c->open_streams > 0 ? NULL : &h2_idle_timeout, NULL);
    return 0;
}

static ssize_t h2_send_cb(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *arg)
{
    mock_h2_conn_t *c = arg;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) >= MOCK_H2_OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    evbuffer_add(out, data, len);
    return (ssize_t)len;
}

static ssize_t h2_read_body_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *data_flags,
                               nghttp2_data_source *source, void *arg)
{
    mock_h2_stream_t *st = source->ptr;
    int n = evbuffer_remove(st->out, buf, length);
    if (n < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t left = evbuffer_get_length(st->out);
    if (left == 0 && st->ended) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->trailer_count > 0) {
            nghttp2_nv nva[MOCK_H2_MAX_TRAILERS];
            for (size_t i = 0; i < st->trailer_count; i++)
                nva[i] = (nghttp2_nv){(uint8_t *)st->trailers[2 * i], (uint8_t *)st->trailers[2 * i + 1],
                                      strlen(st->trailers[2 * i]), strlen(st->trailers[2 * i + 1]),
                                      NGHTTP2_NV_FLAG_NONE};
            if (nghttp2_submit_trailer(ng, id, nva, st->trailer_count) == 0)
                *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
        return n;
    }
    if (left < MOCK_CHUNK)
        st->want_pull = 1; /* a streaming answer refills after the send */
    if (n == 0) {
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return n;
}

static mock_h2_stream_t *h2_stream_of(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

static void h2_refuse(mock_h2_conn_t *c, int32_t id)
{
    c->server->stats.h2_refused++;
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
}

static int h2_on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
    mock_h2_conn_t *c = arg;
    mock_server_t *srv = c->server;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    int32_t id = frame->hd.stream_id;
    if (c->goaway_last > 0 && id > c->goaway_last) { /* after our GOAWAY: never processed */
        h2_refuse(c, id);
        return 0;
    }
    if (srv->fault.refuse_rate > 0 && rng_double(srv) < srv->fault.refuse_rate) {
        h2_refuse(c, id);
        return 0;
    }
    mock_h2_stream_t *st = calloc(1, sizeof(*st));
    if (st == NULL || (st->out = evbuffer_new()) == NULL ||
        (st->ex = exchange_new(srv, &h2_ops, st)) == NULL) {
        if (st != NULL && st->out != NULL)
            evbuffer_free(st->out);
        free(st);
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    st->conn = c;
    st->id = id;
    st->ex->http_major = 2;
    LIST_INSERT_HEAD(&c->streams, st, link);
    nghttp2_session_set_stream_user_data(ng, id, st);
    srv->stats.h2_streams++;
    if (++c->open_streams > srv->stats.h2_peak_streams_per_conn)
        srv->stats.h2_peak_streams_per_conn = c->open_streams;
    if (++srv->h2_open_streams > srv->stats.h2_peak_streams)
        srv->stats.h2_peak_streams = srv->h2_open_streams;
    if (srv->fault.goaway_after > 0 && ++c->accepted == srv->fault.goaway_after && c->goaway_last == 0) {
        nghttp2_submit_goaway(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR, NULL, 0);
        c->goaway_last = id;
        srv->stats.h2_goaways++;
    }
    return 0;
}

static int h2_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags, void *arg)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* request trailers are not looked at */
    mock_h2_stream_t *st = h2_stream_of(ng, frame->hd.stream_id);
    if (st == NULL || st->ex == NULL)
        return 0;
    mock_exchange_t *ex = st->ex;
    const char *n = (const char *)name, *v = (const char *)value;
    int rc = 0;
    if (namelen == 7 && memcmp(n, ":method", 7) == 0) {
        ex->method = arena_strndup(&ex->arena, v, valuelen);
        rc = ex->method != NULL ? 0 : -1;
    } else if (namelen == 5 && memcmp(n, ":path", 5) == 0) {
        rc = exchange_set_target(ex, v, valuelen);
    } else if (namelen == 10 && memcmp(n, ":authority", 10) == 0) {
        rc = exchange_add_request_header(ex, "host", 4, v, valuelen);
    } else if (namelen > 0 && n[0] != ':') {
        rc = ex->header_count < MOCK_MAX_HEADERS ? exchange_add_request_header(ex, n, namelen, v, valuelen) : -1;
    }
    return rc == 0 ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* nghttp2 resets the stream */
}

static int h2_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    mock_h2_stream_t *st = h2_stream_of(ng, frame->hd.stream_id);
    if (st == NULL || st->ex == NULL || st->ex->phase != EX_READING)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        exchange_head_done(st->ex);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        exchange_dispatch(st->ex); /* may answer (or reset) at once */
    return 0;
}

static int h2_on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                            void *arg)
{
    mock_h2_stream_t *st = h2_stream_of(ng, id);
    if (st != NULL && st->ex != NULL && st->ex->phase == EX_READING)
        exchange_body(st->ex, (const char *)data, len);
    return 0;
}

static int h2_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *arg)
{
    mock_h2_stream_t *st = h2_stream_of(ng, id);
    if (st != NULL)
        h2_stream_free(st);
    return 0;
}

static mock_h2_stream_t *h2_stream_of_ex(mock_exchange_t *ex)
{
    return ex->front_ctx;
}

static void h2_send_head(mock_exchange_t *ex)
{
    mock_h2_stream_t *st = h2_stream_of_ex(ex);
    nghttp2_nv nva[MOCK_MAX_HEADERS + 2];
    size_t n = 0;
    char status[8], length[24];
    snprintf(status, sizeof(status), "%d", ex->status);
    nva[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), NGHTTP2_NV_FLAG_NONE};
    for (const mock_header_t *h = ex->resp_headers; h != NULL && n < MOCK_MAX_HEADERS; h = h->next)
        nva[n++] = (nghttp2_nv){(uint8_t *)h->name, (uint8_t *)h->value, h->name_len, h->value_len,
                                NGHTTP2_NV_FLAG_NONE};
    if (ex->resp_has_body && !ex->resp_chunked) {
        snprintf(length, sizeof(length), "%" PRIu64, ex->resp_length);
        nva[n++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)length, 14, strlen(length),
                                NGHTTP2_NV_FLAG_NONE};
    }
    for (const mock_header_t *h = ex->resp_trailers; h != NULL && st->trailer_count < MOCK_H2_MAX_TRAILERS;
         h = h->next) {
        char *name = strdup(h->name), *value = strdup(h->value);
        if (name == NULL || value == NULL) {
            free(name);
            free(value);
            break;
        }
        st->trailers[2 * st->trailer_count] = name;
        st->trailers[2 * st->trailer_count + 1] = value;
        st->trailer_count++;
    }
    int has_data = ex->resp_has_body && ex->method_bit != M_HEAD && ex->resp_length > 0;
    nghttp2_data_provider body = {.source = {.ptr = st}, .read_callback = h2_read_body_cb};
    /* Without a body or trailers the head ends the stream (gRPC trailers-only). */
    nghttp2_submit_response(st->conn->ng, st->id, nva, n, has_data || st->trailer_count > 0 ? &body : NULL);
}

static void h2_resume(mock_h2_stream_t *st)
{
    if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->conn->ng, st->id);
    }
}

static void h2_send_body(mock_exchange_t *ex, struct evbuffer *data)
{
    mock_h2_stream_t *st = h2_stream_of_ex(ex);
    evbuffer_add_buffer(st->out, data);
    h2_resume(st);
}

static void h2_send_end(mock_exchange_t *ex)
{
    mock_h2_stream_t *st = h2_stream_of_ex(ex);
    st->ended = 1;
    st->ex = NULL;
    exchange_free(ex);
    h2_resume(st);
    h2_conn_flush(st->conn);
}

static void h2_reset(mock_exchange_t *ex)
{
    mock_h2_stream_t *st = h2_stream_of_ex(ex);
    st->ex = NULL;
    exchange_free(ex);
    nghttp2_submit_rst_stream(st->conn->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    h2_conn_flush(st->conn);
}

static size_t h2_room(mock_exchange_t *ex)
{
    size_t queued = evbuffer_get_length(h2_stream_of_ex(ex)->out);
    return queued < MOCK_OUT_HIGH ? MOCK_OUT_HIGH - queued : 0;
}

static const mock_front_ops_t h2_ops = {h2_send_head, h2_send_body, h2_send_end, h2_reset, h2_room};

static void h2_read_cb(struct bufferevent *bev, void *arg)
{
    mock_h2_conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    c->busy = 1;
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t rv = nghttp2_session_mem_recv(c->ng, v.iov_base, v.iov_len);
        if (rv < 0) {
            h2_conn_free(c); /* not HTTP/2 after all, or a connection error nghttp2 cannot answer */
            return;
        }
        evbuffer_drain(in, v.iov_len);
    }
    c->busy = 0;
    h2_conn_flush(c);
}

static void h2_write_cb(struct bufferevent *bev, void *arg)
{
    mock_h2_conn_t *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        h2_conn_free(c);
        return;
    }
    h2_conn_flush(c);
}

static void h2_event_cb(struct bufferevent *bev, short what, void *arg)
{
    h2_conn_free(arg);
}

/* Takes over bev (which holds the preface) from the h1 front. */
static void h2_conn_new(mock_server_t *srv, struct bufferevent *bev)
{
    static nghttp2_session_callbacks *cbs;
    if (cbs == NULL) { /* one thread: the pod's single event loop */
        if (nghttp2_session_callbacks_new(&cbs) != 0) {
            bufferevent_free(bev);
            return;
        }
        nghttp2_session_callbacks_set_send_callback(cbs, h2_send_cb);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2_on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
    }
    mock_h2_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL || nghttp2_session_server_new(&c->ng, cbs, c) != 0) {
        free(c);
        bufferevent_free(bev);
        return;
    }
    c->server = srv;
    c->bev = bev;
    LIST_INIT(&c->streams);
    LIST_INSERT_HEAD(&srv->h2_conns, c, link);
    srv->conn_count++;
    srv->stats.h2_connections++;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)srv->fault.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, MOCK_H2_WINDOW},
    };
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, 16 * MOCK_H2_WINDOW);
    bufferevent_setcb(bev, h2_read_cb, h2_write_cb, h2_event_cb, c);
    bufferevent_setwatermark(bev, EV_READ, 0, MOCK_IN_HIGH);
    bufferevent_setwatermark(bev, EV_WRITE, MOCK_CHUNK, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    h2_read_cb(bev, c);
}

/* The h1 front saw the preface: the connection becomes HTTP/2. */
static void h1_conn_to_h2(mock_h1_conn_t *h1)
{
    mock_server_t *srv = h1->server;
    struct bufferevent *bev = h1->bev;
    LIST_REMOVE(h1, link);
    srv->conn_count--;
    event_free(h1->resume_ev);
    evbuffer_free(h1->field);
    evbuffer_free(h1->value);
    free(h1);
    h2_conn_new(srv, bev);
}

/* ---- listener, signals, main ---- */

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    mock_server_t *srv = arg;
    if (srv->conn_count >= MOCK_MAX_CONNS) {
        srv->stats.conns_rejected++;
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    h1_conn_new(srv, fd); /* which hands the connection to the h2 front if it opens with the preface */
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    mock_server_t *srv = arg;
    evconnlistener_enable(srv->listener);
}

/* Out of descriptors: pause accepting rather than spin on the error. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    mock_server_t *srv = arg;
    fprintf(stderr, "veer-mockpod: accept: %s\n", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    evconnlistener_disable(l);
    struct timeval tv = {0, 100 * 1000};
    evtimer_add(srv->accept_retry, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    mock_server_t *srv = arg;
    event_base_loopbreak(srv->base);
}

typedef struct mock_options {
    const char *listen;
    const char *name;
    const char *ready_file;
    mock_fault_t fault;
    uint64_t seed;
    int seed_set;
} mock_options_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: veer-mockpod --listen HOST:PORT --name NAME [--error-rate R] [--latency D]\n"
            "                    [--latency-p99 D] [--reset-rate R] [--hang-rate R] [--seed N]\n"
            "                    [--ready-file PATH] [--grpc-error-rate R] [--grpc-error-code N]\n"
            "                    [--max-concurrent-streams N] [--goaway-after N] [--refuse-rate R]\n"
            "                    [--h2-only]\n"
            "  R is a probability in [0,1]; D is a duration (40ms, 250us, 1.5s; a bare number is ms).\n"
            "  PORT 0 picks a free port; the chosen one is printed as \"listening HOST:PORT\".\n");
}

static int options_parse(int argc, char **argv, mock_options_t *opt)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},      {"name", required_argument, NULL, 'n'},
        {"error-rate", required_argument, NULL, 'e'},  {"latency", required_argument, NULL, 'L'},
        {"latency-p99", required_argument, NULL, 'P'}, {"reset-rate", required_argument, NULL, 'r'},
        {"hang-rate", required_argument, NULL, 'H'},   {"seed", required_argument, NULL, 's'},
        {"ready-file", required_argument, NULL, 'f'},  {"help", no_argument, NULL, 'h'},
        {"grpc-error-rate", required_argument, NULL, 'g'}, {"grpc-error-code", required_argument, NULL, 'G'},
        {"max-concurrent-streams", required_argument, NULL, 'm'}, {"goaway-after", required_argument, NULL, 'w'},
        {"refuse-rate", required_argument, NULL, 'R'}, {"h2-only", no_argument, NULL, '2'},
        {NULL, 0, NULL, 0},
    };
    memset(opt, 0, sizeof(*opt));
    opt->fault.grpc_error_code = 14; /* UNAVAILABLE */
    opt->fault.max_concurrent_streams = 100;
    int ch, index = 0;
    while ((ch = getopt_long(argc, argv, "", longopts, &index)) != -1) {
        int bad = 0;
        switch (ch) {
        case 'l': opt->listen = optarg; break;
        case 'n': opt->name = optarg; break;
        case 'f': opt->ready_file = optarg; break;
        case 'e': bad = rate_parse(optarg, &opt->fault.error_rate); break;
        case 'r': bad = rate_parse(optarg, &opt->fault.reset_rate); break;
        case 'H': bad = rate_parse(optarg, &opt->fault.hang_rate); break;
        case 'L': bad = duration_parse(optarg, &opt->fault.latency_us); break;
        case 'P': bad = duration_parse(optarg, &opt->fault.latency_p99_us); break;
        case 'g': bad = rate_parse(optarg, &opt->fault.grpc_error_rate); break;
        case 'R': bad = rate_parse(optarg, &opt->fault.refuse_rate); break;
        case '2': opt->fault.h2_only = 1; break;
        case 'G': bad = parse_u64(optarg, strlen(optarg), 16, &opt->fault.grpc_error_code); break;
        case 'm':
            bad = parse_u64(optarg, strlen(optarg), 1000000000, &opt->fault.max_concurrent_streams) ||
                  opt->fault.max_concurrent_streams == 0;
            break;
        case 'w': bad = parse_u64(optarg, strlen(optarg), 1000000000, &opt->fault.goaway_after); break;
        case 's': {
            char *end;
            errno = 0;
            opt->seed = strtoull(optarg, &end, 10);
            bad = end == optarg || *end != '\0' || errno != 0;
            opt->seed_set = 1;
            break;
        }
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        if (bad) {
            fprintf(stderr, "veer-mockpod: invalid value for --%s: %s\n", longopts[index].name, optarg);
            return -1;
        }
    }
    if (optind < argc || opt->listen == NULL || opt->name == NULL) {
        usage(stderr);
        return -1;
    }
    for (const char *p = opt->name; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x21 || *p == 0x7f) {
            fprintf(stderr, "veer-mockpod: --name must be printable with no spaces\n");
            return -1;
        }
    }
    if (opt->name[0] == '\0' || strlen(opt->name) > 128) {
        fprintf(stderr, "veer-mockpod: --name must be 1..128 characters\n");
        return -1;
    }
    char err[256];
    const char *key = fault_validate(&opt->fault, err, sizeof(err));
    if (key != NULL) {
        fprintf(stderr, "veer-mockpod: %s\n", err);
        return -1;
    }
    return 0;
}

static int write_ready_file(const char *path, unsigned port)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return -1;
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    int ok = fprintf(f, "%u\n", port) > 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Held connections each need a descriptor; take what the hard limit allows. */
static void raise_nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* "127.0.0.1:8080", "[::1]:0" (evutil_parse_sockaddr_port refuses port 0). */
static int listen_addr_parse(const char *listen, struct sockaddr_storage *ss, int *sslen)
{
    const char *colon = strrchr(listen, ':');
    uint64_t port;
    if (colon == NULL || parse_u64(colon + 1, strlen(colon + 1), 65535, &port) != 0)
        return -1;
    char host[INET6_ADDRSTRLEN + 2];
    size_t host_len = (size_t)(colon - listen);
    if (host_len >= 2 && listen[0] == '[' && listen[host_len - 1] == ']') {
        listen++;
        host_len -= 2;
    }
    if (host_len == 0 || host_len >= sizeof(host))
        return -1;
    memcpy(host, listen, host_len);
    host[host_len] = '\0';
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *sslen = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *sslen = sizeof(*v6);
    } else {
        return -1;
    }
    return 0;
}

static int server_listen(mock_server_t *srv, const char *listen)
{
    struct sockaddr_storage ss;
    int sslen;
    if (listen_addr_parse(listen, &ss, &sslen) != 0) {
        fprintf(stderr, "veer-mockpod: --listen wants IP:PORT or [IPv6]:PORT, got %s\n", listen);
        return -1;
    }
    srv->listener = evconnlistener_new_bind(srv->base, accept_cb, srv,
                                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
                                            (struct sockaddr *)&ss, sslen);
    if (srv->listener == NULL) {
        fprintf(stderr, "veer-mockpod: cannot listen on %s: %s\n", listen, strerror(errno));
        return -1;
    }
    evconnlistener_set_error_cb(srv->listener, accept_error_cb);
    socklen_t len = sizeof(ss);
    if (getsockname(evconnlistener_get_fd(srv->listener), (struct sockaddr *)&ss, &len) != 0)
        return -1;
    char host[INET6_ADDRSTRLEN];
    unsigned port;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        evutil_inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
        printf("listening [%s]:%u\n", host, port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        evutil_inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
        printf("listening %s:%u\n", host, port);
    }
    fflush(stdout);
    return (int)port;
}

static void server_free(mock_server_t *srv)
{
    while (!LIST_EMPTY(&srv->conns))
        h1_conn_free(LIST_FIRST(&srv->conns));
    while (!LIST_EMPTY(&srv->h2_conns))
        h2_conn_free(LIST_FIRST(&srv->h2_conns));
    if (srv->listener != NULL)
        evconnlistener_free(srv->listener);
    if (srv->accept_retry != NULL)
        event_free(srv->accept_retry);
    if (srv->sig_term != NULL)
        event_free(srv->sig_term);
    if (srv->sig_int != NULL)
        event_free(srv->sig_int);
    if (srv->base != NULL)
        event_base_free(srv->base);
}

int main(int argc, char **argv)
{
    mock_options_t opt;
    if (options_parse(argc, argv, &opt) != 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    raise_nofile_limit();

    static mock_server_t srv; /* large (the /bytes pattern); lives for the process */
    srv.name = opt.name;
    srv.fault = opt.fault;
    LIST_INIT(&srv.conns);
    LIST_INIT(&srv.h2_conns);
    TAILQ_INIT(&srv.held);
    h1_settings_init(&srv.h1_settings);
    for (size_t i = 0; i < sizeof(srv.pattern); i++)
        srv.pattern[i] = (char)('a' + i % 26);
    uint64_t seed = opt.seed_set ? opt.seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    rng_seed(&srv, seed);

    int rc = 1, port;
    /* Injected latency is what tests measure: timerfd, not epoll's whole ms. */
    struct event_config *cfg = event_config_new();
    if (cfg == NULL)
        goto out;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    srv.base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (srv.base == NULL)
        goto out;
    srv.sig_term = evsignal_new(srv.base, SIGTERM, signal_cb, &srv);
    srv.sig_int = evsignal_new(srv.base, SIGINT, signal_cb, &srv);
    srv.accept_retry = evtimer_new(srv.base, accept_retry_cb, &srv);
    if (srv.sig_term == NULL || srv.sig_int == NULL || srv.accept_retry == NULL ||
        evsignal_add(srv.sig_term, NULL) != 0 || evsignal_add(srv.sig_int, NULL) != 0)
        goto out;
    port = server_listen(&srv, opt.listen);
    if (port < 0)
        goto out;
    if (opt.ready_file != NULL && write_ready_file(opt.ready_file, (unsigned)port) != 0) {
        fprintf(stderr, "veer-mockpod: cannot write %s: %s\n", opt.ready_file, strerror(errno));
        goto out;
    }
    fprintf(stderr, "veer-mockpod: pod %s seed %" PRIu64 "\n", srv.name, seed);
    event_base_dispatch(srv.base);
    rc = 0;
out:
    server_free(&srv);
    libevent_global_shutdown();
    return rc;
}
