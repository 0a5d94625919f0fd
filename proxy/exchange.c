/* exchange.c - routing and the request/response relay between a downstream
 * codec and an upstream connection (see exchange.h). The only module that
 * knows both routes and codecs; the codecs call in, the exchange calls out
 * through the downstream ops and the upstream functions. */
#include "exchange.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accesslog.h"
#include "h2up.h"
#include "headers.h"
#include "log.h"
#include "mirror.h"
#include "outlier.h"
#include "resilience.h"
#include "router.h"
#include "stats.h"
#include "upstream.h"

#define MAX_FREE_EXCHANGES 256

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static const veer_config_t *x_config(const veer_exchange_t *x)
{
    return x->ws->snap->config;
}

veer_exchange_t *veer_exchange_new(veer_worker_t *w, const veer_ds_ops_t *ds, void *ds_ctx)
{
    veer_exchange_t *x = w->free_exchanges;
    if (x != NULL) {
        w->free_exchanges = x->next_free;
        w->free_exchange_count--;
    } else if ((x = malloc(sizeof(*x))) == NULL) {
        return NULL;
    }
    memset(x, 0, offsetof(veer_exchange_t, arena_inline));
    x->w = w;
    x->ds = ds;
    x->ds_ctx = ds_ctx;
    x->route = x->cluster = -1;
    x->ws = veer_worker_snapshot(w);
    x->ws->refs++;
    x->req.content_length = -1;
    x->resp.content_length = -1;
    x->grpc_status = -1;
    size_t limit = x_config(x)->limits.max_header_bytes * 2 + 16384;
    veer_arena_init(&x->arena, x->arena_inline, sizeof(x->arena_inline), limit);
    x->start_us = now_us();
    return x;
}

int veer_exchange_add_header(veer_exchange_t *x, veer_header_t **list, uint32_t *count, uint32_t *cap,
                             veer_iov_t name, veer_iov_t value)
{
    if (*count == *cap) {
        uint32_t ncap = *cap ? *cap * 2 : 16;
        veer_header_t *grown = veer_arena_grow(&x->arena, *list, *cap * sizeof(**list), ncap * sizeof(**list));
        if (grown == NULL)
            return -1;
        *list = grown;
        *cap = ncap;
    }
    (*list)[(*count)++] = (veer_header_t){name, value};
    return 0;
}

static void timer_stop(veer_exchange_t *x)
{
    if (x->timer_on) {
        event_del(&x->timer);
        x->timer_on = 0;
    }
}

static void slot_dec(veer_exchange_t *x)
{
    if (x->ep != NULL) {
        veer_endpoint_slot_t *slot = &x->ep->slots[x->w->id];
        __atomic_store_n(&slot->active_requests, slot->active_requests - 1, __ATOMIC_RELAXED);
        x->ep = NULL;
    }
}

/* Let go of the upstream connection (pooled when reusable) or HTTP/2 stream. */
static void upstream_release(veer_exchange_t *x, bool reusable)
{
    veer_upconn_t *uc = x->up;
    veer_h2up_stream_t *s = x->h2s;
    if (uc != NULL) {
        x->up = NULL;
        uc->x = NULL;
        veer_upconn_release(uc, reusable);
    }
    if (s != NULL) {
        x->h2s = NULL;
        veer_h2up_release(s);
    }
}

/* Detach from the upstream and the endpoint. */
static void upstream_detach(veer_exchange_t *x, bool reusable)
{
    slot_dec(x);
    upstream_release(x, reusable);
}

/* One reason per failed request (SPEC): what went wrong upstream first, then
 * a breaker's refusal, then the status, then gRPC's verdict. */
static veer_stats_fail_t stats_failure(const veer_exchange_t *x, int status)
{
    switch (x->fail) {
    case VEER_FAIL_CONNECT: return VEER_STATS_FAIL_CONNECT;
    case VEER_FAIL_TIMEOUT: return VEER_STATS_FAIL_TIMEOUT;
    case VEER_FAIL_RESET: return VEER_STATS_FAIL_RESET;
    case VEER_FAIL_PROTOCOL: return x->up_bytes_seen && status < 500 ? VEER_STATS_FAIL_RESET : VEER_STATS_FAIL_5XX;
    default: break;
    }
    if (x->log_flags & VEER_AL_OVERFLOW)
        return VEER_STATS_FAIL_OVERFLOW;
    if (status >= 500)
        return VEER_STATS_FAIL_5XX;
    if (x->grpc_failed)
        return VEER_STATS_FAIL_GRPC;
    return VEER_STATS_FAIL_NONE;
}

static void stats_record(const veer_exchange_t *x)
{
    if (x->w->req_stats == NULL)
        return;
    uint64_t end = x->end_us ? x->end_us : now_us(); /* the client went away first: until now */
    int status = x->resp_head_sent ? x->resp.status : 0;
    uint64_t duration = end > x->start_us ? end - x->start_us : 0;
    uint64_t connect = x->connect_us ? x->connect_us : VEER_STATS_NO_TIME;
    uint64_t ttfb = x->up_head_us > x->up_start_us && x->up_start_us ? x->up_head_us - x->up_start_us
                                                                     : VEER_STATS_NO_TIME;
    veer_stats_record_request(x->w->req_stats, x->ws->snap->stats_layout, x->route, x->cluster,
                              x->served_by != NULL ? x->served_by->stats : NULL, status, stats_failure(x, status),
                              duration, connect, ttfb, end / 1000000u);
}

/* ---- resilience: attempts, breakers, retries ---- */

static void try_timer_stop(veer_exchange_t *x)
{
    if (x->try_timer_on) {
        event_del(&x->try_timer);
        x->try_timer_on = 0;
    }
}

/* The attempt under way ended with this result: report it to outlier
 * detection (every attempt counts, so a retry never hides a failure) and give
 * back its max_retries slot. */
static void attempt_end(veer_exchange_t *x, veer_outlier_result_t result, bool report)
{
    if (!x->attempt_open)
        return;
    x->attempt_open = 0;
    try_timer_stop(x);
    if (report && x->resil != NULL && x->w->outlier_q != NULL && x->ep != NULL &&
        atomic_load_explicit(&x->resil->passive, memory_order_relaxed)) {
        uint64_t us = now_us() - x->attempt_start_us;
        veer_outlier_sample_t sample = {.cluster = x->resil->index, .endpoint_id = x->ep->id,
                                        .latency_us = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us,
                                        .result = (uint8_t)result};
        veer_outlier_queue_push(x->w->outlier_q, &sample);
    }
    if (x->holds_retry) {
        veer_breaker_release(&x->resil->breaker, VEER_BREAKER_RETRIES);
        x->holds_retry = 0;
    }
}

/* Everything the exchange holds on the cluster, at its end. An attempt still
 * open here was cut by the client: not the endpoint's fault, not reported. */
static void conn_wait_cancel(veer_exchange_t *x);

static void resil_finish(veer_exchange_t *x)
{
    conn_wait_cancel(x);
    attempt_end(x, VEER_OUTLIER_SUCCESS, false);
    try_timer_stop(x);
    x->in_backoff = 0;
    if (x->holds_request) {
        veer_breaker_release(&x->resil->breaker, VEER_BREAKER_REQUESTS);
        x->holds_request = 0;
    }
    if (x->replay != NULL) {
        evbuffer_free(x->replay);
        x->replay = NULL;
    }
}

void veer_exchange_free(veer_exchange_t *x)
{
    veer_worker_t *w = x->w;
    if (x->started || x->local_reply) {
        veer_accesslog_record(x); /* before the snapshot goes: the line names routes and endpoints from it */
        stats_record(x);
    }
    timer_stop(x);
    resil_finish(x);
    if (x->mirror_body != NULL) /* ended before its body did: no copy */
        veer_mirror_body_abandon(x);
    upstream_detach(x, false);
    veer_wsnap_release(w, x->ws);
    veer_arena_reset(&x->arena);
    if (w->free_exchange_count < MAX_FREE_EXCHANGES) {
        x->next_free = w->free_exchanges;
        w->free_exchanges = x;
        w->free_exchange_count++;
    } else {
        free(x);
    }
}

static size_t json_str(char *out, size_t cap, const char *s)
{
    if (s == NULL)
        return (size_t)snprintf(out, cap, "null");
    size_t n = 0;
    out[n++] = '"';
    n += veer_json_escape(out + n, cap - n - 2, s, strlen(s));
    out[n++] = '"';
    out[n] = '\0';
    return n;
}

static uint32_t x_random(void *w)
{
    return veer_worker_random(w);
}

static const veer_header_t *find_header(const veer_header_t *list, uint32_t count, const char *name, size_t len)
{
    for (uint32_t i = 0; i < count; i++)
        if (veer_iov_eq(list[i].name, name, len))
            return &list[i];
    return NULL;
}

/* A gRPC client on HTTP/2 gets gRPC-shaped local replies; over HTTP/1.1 the
 * JSON reply stays (no trailers-only responses there). */
static bool grpc_shaped(const veer_exchange_t *x)
{
    const veer_header_t *ct = find_header(x->req.headers, x->req.header_count, "content-type", 12);
    return x->http_version == 20 && ct != NULL && ct->value.len >= 16 &&
           memcmp(ct->value.base, "application/grpc", 16) == 0;
}

static bool grpc_status_fails(const veer_exchange_t *x, int code)
{
    return veer_config_grpc_status_fails(x->route >= 0 ? x_config(x)->routes[x->route].failure_grpc_status : ~1u,
                                         code);
}

/* The gRPC status a local reply stands for (gRPC's HTTP mapping, with
 * veer's timeouts and overflows told apart). */
static int grpc_code_of(int status, const char *error)
{
    switch (status) {
    case 404: return 12; /* UNIMPLEMENTED: no route */
    case 504: return 4;  /* DEADLINE_EXCEEDED */
    case 413: case 431: return 8; /* RESOURCE_EXHAUSTED */
    case 503: return error != NULL && strstr(error, "overload") != NULL ? 8 : 14;
    case 502: case 429: return 14; /* UNAVAILABLE: no endpoint, connect failure, reset */
    case 401: return 16; /* UNAUTHENTICATED */
    case 403: return 7;  /* PERMISSION_DENIED */
    case 400: case 500: return 13; /* INTERNAL */
    default: return 2;   /* UNKNOWN */
    }
}

/* grpc-status and grpc-message (percent-encoded, gRPC over HTTP/2) of a
 * trailers-only local reply. */
static void grpc_reply_status(veer_exchange_t *x, int status, const char *error)
{
    int code = grpc_code_of(status, error);
    char digits[4];
    int dl = snprintf(digits, sizeof(digits), "%d", code);
    char *cv = veer_arena_memdup(&x->arena, digits, (size_t)dl);
    size_t elen = error != NULL ? strlen(error) : 0;
    char *msg = veer_arena_alloc(&x->arena, elen * 3 + 1);
    if (cv == NULL || msg == NULL)
        return;
    size_t n = 0;
    for (size_t i = 0; i < elen; i++) {
        unsigned char ch = (unsigned char)error[i];
        if (ch < 0x20 || ch > 0x7e || ch == '%')
            n += (size_t)snprintf(msg + n, 4, "%%%02X", ch);
        else
            msg[n++] = (char)ch;
    }
    x->grpc_status = (int16_t)code;
    x->grpc_failed = grpc_status_fails(x, code);
    veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap,
                             VEER_IOV_LIT("grpc-status"), (veer_iov_t){cv, (size_t)dl});
    veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap,
                             VEER_IOV_LIT("grpc-message"), (veer_iov_t){msg, n});
}

/* grpc-status of a gRPC response: in the trailers, or in a trailers-only head. */
static void grpc_note_status(veer_exchange_t *x)
{
    const veer_header_t *h = find_header(x->resp.trailers, x->resp.trailer_count, "grpc-status", 11);
    if (h == NULL)
        h = find_header(x->resp.headers, x->resp.header_count, "grpc-status", 11);
    if (h == NULL)
        return;
    int code = veer_grpc_status_parse(h->value.base, h->value.len);
    x->grpc_status = (int16_t)code;
    x->grpc_failed = grpc_status_fails(x, code);
}

/* grpc-timeout ("100m", "2S": 1-8 digits and a unit of H M S m u n) in
 * milliseconds, rounded up to at least 1; false when absent or malformed. */
static bool grpc_timeout_ms(const veer_exchange_t *x, uint64_t *ms)
{
    const veer_header_t *h = find_header(x->req.headers, x->req.header_count, "grpc-timeout", 12);
    if (h == NULL || h->value.len < 2 || h->value.len > 9)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < h->value.len; i++) {
        char ch = h->value.base[i];
        if (ch < '0' || ch > '9')
            return false;
        n = n * 10 + (uint64_t)(ch - '0');
    }
    uint64_t us;
    switch (h->value.base[h->value.len - 1]) {
    case 'H': us = n * 3600000000ull; break;
    case 'M': us = n * 60000000ull; break;
    case 'S': us = n * 1000000ull; break;
    case 'm': us = n * 1000ull; break;
    case 'u': us = n; break;
    case 'n': us = (n + 999) / 1000; break;
    default: return false;
    }
    *ms = us > 1000 ? (us + 999) / 1000 : 1;
    return true;
}

void veer_exchange_local_reply(veer_exchange_t *x, int status, const char *error, bool close)
{
    if (x->request_id_len == 0) /* refused before veer_exchange_start (a malformed head) */
        x->request_id_len = veer_trace_new_request_id(x->request_id, x_random, x->w);
    const veer_config_t *cfg = x_config(x);
    const char *route = x->route >= 0 ? cfg->routes[x->route].name : NULL;
    const char *cluster = x->cluster >= 0 ? cfg->clusters[x->cluster].name : NULL;
    char r[160], c[160], e[300], id[2 * VEER_REQUEST_ID_MAX + 3];
    json_str(r, sizeof(r), route);
    json_str(c, sizeof(c), cluster);
    json_str(e, sizeof(e), error);
    json_str(id, sizeof(id), x->request_id); /* a client's id may hold '"' or '\\' */
    char *body = veer_arena_alloc(&x->arena, 1024);
    if (body == NULL) {
        x->ds->resp_abort(x->ds_ctx, x);
        return;
    }
    int len = snprintf(body, 1024, "{\"error\":%s,\"route\":%s,\"cluster\":%s,\"request_id\":%s}\n", e, r, c, id);
    timer_stop(x);
    attempt_end(x, VEER_OUTLIER_CONNECT_FAILURE, status == 503 && error != NULL && strstr(error, "connect") != NULL &&
                                                  strstr(error, "overload") == NULL);
    conn_wait_cancel(x);
    try_timer_stop(x);
    x->in_backoff = 0;
    upstream_detach(x, false);
    if (x->mirror_body != NULL) /* the primary failed before its body ended: no copy */
        veer_mirror_body_abandon(x);
    x->local_reply = 1;
    x->close_after |= close;
    bool grpc = grpc_shaped(x);
    if (grpc)
        len = 0; /* trailers-only: HTTP 200, the outcome in grpc-status */
    x->resp.status = grpc ? 200 : status;
    x->resp.header_count = 0;
    x->resp.trailer_count = 0;
    x->resp.content_length = len;
    x->resp.has_body = !grpc;
    veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap,
                             VEER_IOV_LIT("content-type"),
                             grpc ? VEER_IOV_LIT("application/grpc") : VEER_IOV_LIT("application/json"));
    if (grpc)
        grpc_reply_status(x, status, error);
    if (x->request_id_len)
        veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap,
                                 VEER_IOV_LIT("x-request-id"), (veer_iov_t){x->request_id, x->request_id_len});
    if (status == 503 && error != NULL && strstr(error, "overload") != NULL) {
        veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap,
                                 VEER_IOV_LIT("x-veer-overloaded"), VEER_IOV_LIT("true"));
        x->log_flags |= VEER_AL_OVERFLOW;
    }
    atomic_fetch_add_explicit(&x->w->stats.local_replies, 1, memory_order_relaxed);
    x->resp_head_sent = 1;
    x->ds->resp_head(x->ds_ctx, x);
    struct evbuffer *buf = len > 0 ? evbuffer_new() : NULL;
    if (buf != NULL) {
        evbuffer_add(buf, body, (size_t)len); /* a copy: the arena goes with x, the bytes may not be sent yet */
        x->ds->resp_body(x->ds_ctx, x, buf);
        evbuffer_free(buf);
    }
    x->resp_body_bytes = (uint64_t)len;
    x->end_us = now_us();
    x->resp_ended = 1;
    x->ds->resp_end(x->ds_ctx, x); /* may free x */
}

/* x-request-id and traceparent as they go upstream (trace.h). */
static int trace_begin(veer_exchange_t *x)
{
    x->req.header_count = veer_trace_headers(x->req.headers, x->req.header_count, x->request_id, &x->request_id_len,
                                             x->traceparent, x_config(x)->trace.sample_percent, x_random, x->w, NULL);
    if (veer_exchange_add_header(x, &x->req.headers, &x->req.header_count, &x->req.header_cap,
                                 VEER_IOV_LIT("x-request-id"), (veer_iov_t){x->request_id, x->request_id_len}) < 0)
        return -1;
    return veer_exchange_add_header(x, &x->req.headers, &x->req.header_count, &x->req.header_cap,
                                    VEER_IOV_LIT("traceparent"), (veer_iov_t){x->traceparent, VEER_TRACEPARENT_LEN});
}

static int add_forwarded(veer_exchange_t *x)
{
    char ip[INET6_ADDRSTRLEN] = "unknown";
    if (x->client_addr != NULL && x->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)x->client_addr)->sin_addr, ip, sizeof(ip));
    else if (x->client_addr != NULL && x->client_addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)x->client_addr)->sin6_addr, ip, sizeof(ip));
    size_t iplen = strlen(ip);
    veer_header_t *xff = NULL;
    for (uint32_t i = 0; i < x->req.header_count; i++)
        if (veer_iov_eq(x->req.headers[i].name, "x-forwarded-for", 15))
            xff = &x->req.headers[i];
    if (xff != NULL) {
        size_t n = xff->value.len + 2 + iplen;
        char *v = veer_arena_alloc(&x->arena, n);
        if (v == NULL)
            return -1;
        memcpy(v, xff->value.base, xff->value.len);
        memcpy(v + xff->value.len, ", ", 2);
        memcpy(v + xff->value.len + 2, ip, iplen);
        xff->value = (veer_iov_t){v, n};
    } else {
        char *v = veer_arena_memdup(&x->arena, ip, iplen);
        if (v == NULL || veer_exchange_add_header(x, &x->req.headers, &x->req.header_count, &x->req.header_cap,
                                                  VEER_IOV_LIT("x-forwarded-for"), (veer_iov_t){v, iplen}) < 0)
            return -1;
    }
    /* x-forwarded-proto reflects how veer was reached; a client's claim is replaced. */
    for (uint32_t i = 0; i < x->req.header_count; i++) {
        if (veer_iov_eq(x->req.headers[i].name, "x-forwarded-proto", 17)) {
            x->req.headers[i] = x->req.headers[--x->req.header_count];
            break;
        }
    }
    veer_iov_t proto = x->client_tls ? VEER_IOV_LIT("https") : VEER_IOV_LIT("http");
    return veer_exchange_add_header(x, &x->req.headers, &x->req.header_count, &x->req.header_cap,
                                    VEER_IOV_LIT("x-forwarded-proto"), proto);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_exchange_t *x = arg;
    x->timer_on = 0;
    veer_exchange_on_upstream_fail(x, VEER_FAIL_TIMEOUT);
}

static bool method_idempotent(veer_iov_t m)
{
    return veer_iov_eq(m, "GET", 3) || veer_iov_eq(m, "HEAD", 4) || veer_iov_eq(m, "OPTIONS", 7) ||
           veer_iov_eq(m, "PUT", 3) || veer_iov_eq(m, "DELETE", 6) || veer_iov_eq(m, "TRACE", 5);
}

static void try_timeout_cb(evutil_socket_t fd, short what, void *arg);
static int upstream_begin(veer_exchange_t *x, bool fresh);

/* ---- waiting for a max_connections slot (HTTP/1.1 upstreams) ----
 * Requests that need a new connection while the cluster is at
 * max_connections wait in the worker's FIFO, at most connect_timeout, each
 * holding a max_pending_requests slot. A closed connection wakes the oldest. */
struct veer_conn_wait_s {
    veer_pending_t q;
    struct event timer; /* the earliest deadline */
    struct event wake;  /* a slot came free */
    veer_worker_t *w;
};

static void conn_wait_arm(struct veer_conn_wait_s *cw)
{
    uint64_t next = veer_pending_next_deadline(&cw->q);
    if (next == UINT64_MAX) {
        event_del(&cw->timer);
        return;
    }
    uint64_t now = now_us() / 1000, ms = next > now ? next - now : 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_add(&cw->timer, &tv);
}

/* Out of the queue (not yet answered): give back the pending slot. */
static void conn_wait_leave(veer_exchange_t *x)
{
    x->waiting_conn = 0;
    veer_breaker_release(&x->resil->breaker, VEER_BREAKER_PENDING);
}

static void conn_wait_cancel(veer_exchange_t *x)
{
    if (!x->waiting_conn)
        return;
    veer_pending_cancel(&x->w->conn_wait->q, x);
    conn_wait_leave(x);
}

/* The expired are chained through next_free (unused while a request lives)
 * and answered after veer_pending_expire, which must not see the queue used. */
static void conn_wait_expired(void *arg, void *item)
{
    veer_exchange_t **head = arg, *x = item;
    x->next_free = *head;
    *head = x;
}

static void conn_wait_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct veer_conn_wait_s *cw = arg;
    veer_exchange_t *expired = NULL;
    veer_pending_expire(&cw->q, now_us() / 1000, conn_wait_expired, &expired);
    conn_wait_arm(cw);
    while (expired != NULL) {
        veer_exchange_t *x = expired;
        expired = x->next_free;
        x->next_free = NULL;
        conn_wait_leave(x);
        veer_exchange_local_reply(x, 503, "upstream overloaded: no connection within connect_timeout (max_connections)",
                                  !x->req_ended && x->req.has_body);
    }
}

static void conn_wait_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct veer_conn_wait_s *cw = arg;
    /* Each waiting request tries once, oldest first; one still without a slot
     * queues again behind the others, keeping its deadline. */
    for (uint32_t n = cw->q.count; n > 0; n--) {
        veer_exchange_t *x = veer_pending_pop(&cw->q);
        if (x == NULL)
            break;
        conn_wait_leave(x);
        x->attempt_start_us = now_us(); /* the wait is not the endpoint's latency */
        if (x->req.has_body && !x->req_ended)
            x->ds->req_resume(x->ds_ctx);
        upstream_begin(x, false); /* may answer and free x, or queue it again */
    }
    conn_wait_arm(cw);
}

void veer_exchange_conn_freed(veer_worker_t *w)
{
    struct veer_conn_wait_s *cw = w->conn_wait;
    if (cw != NULL && cw->q.count > 0)
        event_active(&cw->wake, 0, 0);
}

void veer_exchange_worker_free(veer_worker_t *w)
{
    struct veer_conn_wait_s *cw = w->conn_wait;
    if (cw == NULL)
        return;
    event_del(&cw->timer);
    event_del(&cw->wake);
    veer_pending_destroy(&cw->q);
    free(cw);
    w->conn_wait = NULL;
}

/* Queue x for a max_connections slot; 0, or -1 when a local reply was sent. */
static int conn_wait(veer_exchange_t *x, const veer_cluster_config_t *cc)
{
    veer_worker_t *w = x->w;
    if (veer_breaker_try_acquire(&x->resil->breaker, VEER_BREAKER_PENDING) != 0) {
        veer_exchange_local_reply(x, 503, "upstream overloaded: max_pending_requests reached", x->req.has_body);
        return -1;
    }
    if (w->conn_wait == NULL && (w->conn_wait = calloc(1, sizeof(*w->conn_wait))) != NULL) {
        veer_pending_init(&w->conn_wait->q, 0);
        w->conn_wait->w = w;
        event_assign(&w->conn_wait->timer, w->base, -1, 0, conn_wait_timer_cb, w->conn_wait);
        event_assign(&w->conn_wait->wake, w->base, -1, 0, conn_wait_wake_cb, w->conn_wait);
    }
    /* The worker's queue holds every cluster's waiters: bounded by their limits' sum. */
    uint64_t limit = 0;
    for (size_t c = 0; c < x_config(x)->cluster_count; c++)
        limit += x_config(x)->clusters[c].circuit_breakers.max_pending_requests;
    if (x->conn_wait_deadline_ms == 0)
        x->conn_wait_deadline_ms = now_us() / 1000 + (cc->connect_timeout_ms ? cc->connect_timeout_ms : 1000);
    int rc = -ENOMEM;
    if (w->conn_wait != NULL) {
        veer_pending_set_limit(&w->conn_wait->q, limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit);
        rc = veer_pending_push(&w->conn_wait->q, x, x->conn_wait_deadline_ms);
    }
    if (rc < 0) {
        veer_breaker_release(&x->resil->breaker, VEER_BREAKER_PENDING);
        veer_exchange_local_reply(x, 503, rc == -ENOSPC ? "upstream overloaded: max_pending_requests reached"
                                                        : "upstream overloaded: cannot queue the request",
                                  x->req.has_body);
        return -1;
    }
    x->waiting_conn = 1;
    conn_wait_arm(w->conn_wait);
    if (x->req.has_body && !x->req_ended) {
        /* Body bytes that arrive meanwhile are kept (the read is paused, so
         * only what the codec holds already) and sent once connected. */
        if (x->replay == NULL)
            x->replay = evbuffer_new();
        x->ds->req_pause(x->ds_ctx);
    }
    return 0;
}

/* A new attempt to x->ep: counted, remembered for the next endpoint choice,
 * and bounded by the route's per_try_timeout. */
static void attempt_begin(veer_exchange_t *x)
{
    const veer_retry_config_t *rcfg = &x_config(x)->routes[x->route].retry;
    x->attempts++;
    x->attempt_open = 1;
    x->attempt_start_us = x->attempts == 1 ? x->up_start_us : now_us(); /* one clock read less on the hot path */
    veer_retry_tried_add(&x->tried, x->ep->id);
    if (rcfg->per_try_timeout_ms > 0) {
        struct timeval tv = {(time_t)(rcfg->per_try_timeout_ms / 1000),
                             (suseconds_t)(rcfg->per_try_timeout_ms % 1000) * 1000};
        event_assign(&x->try_timer, x->w->base, -1, 0, try_timeout_cb, x);
        event_add(&x->try_timer, &tv);
        x->try_timer_on = 1;
    }
}

/* Send the kept body again (a copy: the buffer stays for a further retry). */
static void replay_send(veer_exchange_t *x)
{
    struct evbuffer_iovec v[16];
    int n = evbuffer_peek(x->replay, -1, NULL, v, 16);
    for (int i = 0; i < n && i < 16; i++) {
        if (x->up != NULL)
            veer_upconn_send_body(x->up, v[i].iov_base, v[i].iov_len);
        else if (x->h2s != NULL)
            veer_h2up_send_body(x->h2s, v[i].iov_base, v[i].iov_len);
    }
    if (n > 16) { /* a fragmented buffer: make it one piece once */
        size_t len = evbuffer_get_length(x->replay);
        unsigned char *all = evbuffer_pullup(x->replay, -1);
        size_t done = 0;
        for (int i = 0; i < 16; i++)
            done += v[i].iov_len;
        if (all != NULL && x->up != NULL)
            veer_upconn_send_body(x->up, (const char *)all + done, len - done);
        else if (all != NULL && x->h2s != NULL)
            veer_h2up_send_body(x->h2s, (const char *)all + done, len - done);
    }
    if (x->req_ended) {
        if (x->up != NULL)
            veer_upconn_send_end(x->up);
        else if (x->h2s != NULL)
            veer_h2up_send_end(x->h2s);
    }
}

/* Connect (or reuse) and send the head; 0 or -1 (a local reply was sent). */
static int upstream_begin(veer_exchange_t *x, bool fresh)
{
    const veer_cluster_config_t *cc = &x_config(x)->clusters[x->cluster];
    veer_endpoint_t *ep = x->ep;
    if (x->up_start_us == 0)
        x->up_start_us = now_us();
    attempt_begin(x);
    /* A retry, or a request that waited for a connection, sends the body
     * kept so far; the rest streams as it comes. */
    bool replay = x->req.has_body && x->replay != NULL &&
                  (x->attempts > 1 || x->req_ended || evbuffer_get_length(x->replay) > 0);
    if (cc->protocol != VEER_PROTO_HTTP1) {
        int rc = veer_h2up_start(x, cc);
        if (rc == VEER_H2UP_EOVERFLOW) {
            veer_exchange_local_reply(x, 503, "upstream overloaded: pending request limit reached", x->req.has_body);
        } else if (rc < 0) {
            veer_exchange_local_reply(x, 503, "cannot open an upstream connection", x->req.has_body);
        } else {
            if (replay)
                replay_send(x);
            veer_h2up_flush(x->h2s);
        }
        return rc < 0 ? -1 : 0;
    }
    /* A new connection takes a max_connections slot first; at the limit the request waits for one. */
    bool slot_taken = false;
    if (x->resil != NULL && (fresh || ep->slots[x->w->id].idle_head == NULL)) {
        if (veer_breaker_try_acquire(&x->resil->breaker, VEER_BREAKER_CONNECTIONS) != 0)
            return conn_wait(x, cc);
        slot_taken = true;
    }
    veer_upconn_t *uc = veer_upconn_get(x->w, ep, cc->connect_timeout_ms, fresh, x->ws->snap, x->cluster);
    if (uc == NULL) {
        if (slot_taken)
            veer_breaker_release(&x->resil->breaker, VEER_BREAKER_CONNECTIONS);
        veer_exchange_local_reply(x, 503, "cannot open an upstream connection", x->req.has_body);
        return -1;
    }
    if (slot_taken && uc->reused)
        veer_breaker_release(&x->resil->breaker, VEER_BREAKER_CONNECTIONS);
    else if (slot_taken)
        uc->breaker = &x->resil->breaker;
    x->up = uc;
    uc->x = x;
    if (veer_upconn_send_head(uc, x) < 0) {
        veer_exchange_local_reply(x, 500, "request head too large to forward", true);
        return -1;
    }
    if (replay)
        replay_send(x);
    else if (!x->req.has_body)
        veer_upconn_send_end(uc);
    veer_upconn_flush(uc);
    return 0;
}

/* An endpoint of cluster c that may take a new request; NULL when none. */
static veer_endpoint_t *pick_endpoint(veer_exchange_t *x, int c)
{
    const veer_cluster_config_t *cc = &x_config(x)->clusters[c];
    bool unset_ok = cc->health_check == NULL || !cc->health_check->require_initial_pass;
    return veer_lb_pick(x->ws->snap->cluster_endpoints[c], cc->lb, x->w->id, &x->ws->rr[c],
                        veer_worker_random(x->w), unset_ok);
}

void veer_exchange_start(veer_exchange_t *x)
{
    const veer_config_t *cfg = x_config(x);
    x->started = 1;
    atomic_fetch_add_explicit(&x->w->stats.requests_total, 1, memory_order_relaxed);
    if (trace_begin(x) < 0 || add_forwarded(x) < 0) {
        veer_exchange_local_reply(x, 431, "request headers too large", true);
        return;
    }
    veer_route_input_t in = {.method = x->req.method, .path = x->req.path, .authority = x->req.authority,
                             .headers = x->req.headers, .header_count = x->req.header_count,
                             .client_addr = x->client_addr};
    x->route = veer_router_match(cfg, &in);
    if (x->route < 0) {
        veer_exchange_local_reply(x, 404, "no route matches", x->req.has_body);
        return;
    }
    const veer_route_config_t *rc = &cfg->routes[x->route];
    if (cfg->limits.max_body_bytes > 0 && x->req.content_length > (int64_t)cfg->limits.max_body_bytes) {
        veer_exchange_local_reply(x, 413, "request body too large", true);
        return;
    }
    const veer_route_weights_t *rw = &x->ws->snap->routes[x->route];
    x->cluster = veer_router_pick(rc, rw->split, rw->count, &in, veer_worker_random(x->w));
    if (rw->ab != NULL && veer_router_override_holds(rw->ab, &in))
        x->cluster = rw->ab->cluster; /* a canary run's A/B match (controller.c) */
    if (x->cluster < 0) {
        veer_exchange_local_reply(x, 503, "every cluster of the route has weight 0", x->req.has_body);
        return;
    }
    veer_endpoint_t *ep = pick_endpoint(x, x->cluster);
    int failover = cfg->clusters[x->cluster].failover;
    if (failover >= 0 && failover < (int)cfg->cluster_count && failover != x->cluster &&
        (ep == NULL || (x->ws->resil != NULL && x->ws->resil[x->cluster] != NULL &&
                        atomic_load_explicit(&x->ws->resil[x->cluster]->panic, memory_order_relaxed)))) {
        /* Too few healthy hosts: the failover cluster takes the requests instead of panic routing. */
        x->cluster = failover;
        ep = pick_endpoint(x, x->cluster);
    }
    x->resil = x->ws->resil != NULL ? x->ws->resil[x->cluster] : NULL;
    if (x->resil != NULL) {
        if (veer_breaker_try_acquire(&x->resil->breaker, VEER_BREAKER_REQUESTS) != 0) {
            veer_exchange_local_reply(x, 503, "upstream overloaded: max_requests reached", x->req.has_body);
            return;
        }
        x->holds_request = 1;
    }
    if (ep == NULL) {
        veer_exchange_local_reply(x, 503, "no healthy endpoint", x->req.has_body);
        return;
    }
    veer_mirror_maybe(x); /* a canary run's mirrored phase: a copy to the canary, before x can end */
    if (rc->retry.attempts > 1 && x->req.has_body &&
        (x->req.content_length < 0 || (uint64_t)x->req.content_length <= rc->retry.max_body_bytes))
        x->replay = evbuffer_new(); /* NULL: not kept, so not replayed */
    x->ep = ep;
    x->served_by = ep;
    veer_endpoint_slot_t *slot = &ep->slots[x->w->id];
    __atomic_store_n(&slot->active_requests, slot->active_requests + 1, __ATOMIC_RELAXED);
    const struct timeval *tv = x->ws->route_tv[x->route];
    struct timeval grpc_tv;
    uint64_t grpc_ms;
    if (grpc_timeout_ms(x, &grpc_ms) && (rc->timeout_ms == 0 || grpc_ms < rc->timeout_ms)) {
        grpc_tv = (struct timeval){(time_t)(grpc_ms / 1000), (suseconds_t)(grpc_ms % 1000) * 1000};
        tv = &grpc_tv; /* the client's deadline is the route timeout when it is shorter */
    }
    if (tv != NULL) {
        x->deadline_ms = x->start_us / 1000 + (uint64_t)tv->tv_sec * 1000 + (uint64_t)tv->tv_usec / 1000;
        event_assign(&x->timer, x->w->base, -1, 0, timeout_cb, x);
        event_add(&x->timer, tv);
        x->timer_on = 1;
    }
    if (upstream_begin(x, false) < 0)
        return;
    if (x->req.expect_continue && x->req.has_body)
        x->ds->send_continue(x->ds_ctx, x);
}

/* A failed attempt (outcome/status): report it and, when the route's retry
 * policy, the budget and the max_retries breaker allow, get ready for another
 * attempt (the caller then waits for the failed response to end, or calls
 * retry_after_discard at once). False: the failure stands. */
/* A failed attempt that is about to be retried counts in the route x
 * cluster's stats as a request of its own, so the success rate the canary
 * controller reads (and /metrics) still sees it: retries never hide a bad
 * pool. Refused streams were never processed and are not counted. */
static void stats_record_failed_attempt(const veer_exchange_t *x, veer_retry_outcome_t outcome, int status)
{
    if (x->w->req_stats == NULL || outcome == VEER_RETRY_OUTCOME_REFUSED_STREAM)
        return;
    static const veer_stats_fail_t reasons[] = {
        [VEER_RETRY_OUTCOME_CONNECT_FAILURE] = VEER_STATS_FAIL_CONNECT,
        [VEER_RETRY_OUTCOME_RESET] = VEER_STATS_FAIL_RESET,
        [VEER_RETRY_OUTCOME_PER_TRY_TIMEOUT] = VEER_STATS_FAIL_TIMEOUT,
        [VEER_RETRY_OUTCOME_STATUS] = VEER_STATS_FAIL_5XX,
    };
    veer_stats_fail_t fail = (size_t)outcome < sizeof(reasons) / sizeof(reasons[0]) ? reasons[outcome]
                                                                                    : VEER_STATS_FAIL_RESET;
    if (outcome == VEER_RETRY_OUTCOME_STATUS && status < 500)
        fail = VEER_STATS_FAIL_NONE; /* a retriable 4xx the route lists: counted, not a failure */
    uint64_t now = now_us();
    uint64_t duration = now > x->attempt_start_us ? now - x->attempt_start_us : 0;
    veer_stats_record_request(x->w->req_stats, x->ws->snap->stats_layout, x->route, x->cluster,
                              x->ep != NULL ? x->ep->stats : NULL, outcome == VEER_RETRY_OUTCOME_STATUS ? status : 0,
                              fail, duration, VEER_STATS_NO_TIME, VEER_STATS_NO_TIME, now / 1000000u);
}

static bool retry_consider(veer_exchange_t *x, veer_retry_outcome_t outcome, int status,
                           veer_outlier_result_t result)
{
    const veer_retry_config_t *rcfg = &x_config(x)->routes[x->route].retry;
    if (rcfg->attempts <= 1 || x->resil == NULL || !x->attempt_open)
        return false;
    veer_retry_attempt_t a = {.attempts_made = x->attempts, .outcome = outcome, .status = status,
                              .replayable = !x->req.has_body || x->replay != NULL,
                              .response_started = x->resp_head_sent, .now_ms = now_us() / 1000,
                              .deadline_ms = x->deadline_ms, .random = veer_worker_random(x->w)};
    uint64_t backoff = 0;
    /* The failed attempt's slot goes back first: the retry takes its own. */
    attempt_end(x, result, true);
    if (veer_retry_decide(rcfg, &a, &x->resil->breaker, &backoff) != VEER_RETRY_GO)
        return false;
    stats_record_failed_attempt(x, outcome, status);
    x->holds_retry = 1;
    x->in_backoff = 1;
    struct timeval tv = {(time_t)(backoff / 1000), (suseconds_t)(backoff % 1000) * 1000};
    event_assign(&x->try_timer, x->w->base, -1, 0, try_timeout_cb, x);
    event_add(&x->try_timer, &tv);
    x->try_timer_on = 1;
    return true;
}

/* The failed attempt's response is over (read whole: its connection may be
 * pooled): detach and let the backoff timer start the retry. */
static void retry_after_discard(veer_exchange_t *x, bool reusable)
{
    x->discarding = 0;
    x->up_bytes_seen = 0;
    upstream_detach(x, reusable);
}

/* The backoff is over: the next attempt, on another endpoint of the same
 * cluster when one may take traffic (a retry never crosses clusters). */
static void retry_start(veer_exchange_t *x)
{
    x->in_backoff = 0;
    if (x->discarding) {
        /* the failed response is still arriving: cut it, the retry goes on */
        retry_after_discard(x, false);
    }
    const veer_endpoint_set_t *set = x->ws->snap->cluster_endpoints[x->cluster];
    const veer_cluster_config_t *cc = &x_config(x)->clusters[x->cluster];
    bool unset_ok = cc->health_check == NULL || !cc->health_check->require_initial_pass;
    /* The candidates: the load balancer's pick and the first usable others
     * (64 is plenty to find one not tried yet: attempts are at most 10). */
    uint32_t ids[64];
    veer_endpoint_t *eps[64];
    size_t n = 0;
    veer_endpoint_t *preferred = pick_endpoint(x, x->cluster);
    size_t pref = 0;
    if (preferred != NULL) {
        eps[n] = preferred;
        ids[n++] = preferred->id;
    }
    for (size_t i = 0; set != NULL && i < set->count && n < 64; i++) {
        if (set->endpoints[i] == preferred)
            continue;
        if (!veer_endpoint_usable(set->endpoints[i], unset_ok))
            continue;
        eps[n] = set->endpoints[i];
        ids[n++] = set->endpoints[i]->id;
    }
    if (n == 0) {
        veer_exchange_local_reply(x, 503, "no healthy endpoint", !x->req_ended && x->req.has_body);
        return;
    }
    veer_endpoint_t *ep = eps[veer_retry_choose(&x->tried, ids, n, pref)];
    x->ep = ep;
    x->served_by = ep;
    veer_endpoint_slot_t *slot = &ep->slots[x->w->id];
    __atomic_store_n(&slot->active_requests, slot->active_requests + 1, __ATOMIC_RELAXED);
    x->resp.header_count = 0;
    x->resp.trailer_count = 0;
    x->resp.status = 0;
    upstream_begin(x, false); /* on failure x may be gone: the local reply ended the attempt (and its slot) */
}

static void try_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_exchange_t *x = arg;
    x->try_timer_on = 0;
    if (x->in_backoff) {
        retry_start(x);
        return;
    }
    if (x->waiting_conn) { /* no connection yet: the endpoint is not to blame */
        conn_wait_cancel(x);
        attempt_end(x, VEER_OUTLIER_TIMEOUT, false);
        veer_exchange_local_reply(x, 503, "upstream overloaded: no connection within per_try_timeout",
                                  !x->req_ended && x->req.has_body);
        return;
    }
    /* per_try_timeout passed without a response head */
    if (retry_consider(x, VEER_RETRY_OUTCOME_PER_TRY_TIMEOUT, 0, VEER_OUTLIER_TIMEOUT)) {
        retry_after_discard(x, false);
        return;
    }
    attempt_end(x, VEER_OUTLIER_TIMEOUT, true);
    x->fail = VEER_FAIL_TIMEOUT;
    veer_exchange_local_reply(x, 504, "upstream per-try timeout", !x->req_ended && x->req.has_body);
}

void veer_exchange_req_body(veer_exchange_t *x, const char *data, size_t len)
{
    x->req_body_bytes += len;
    if (x->mirror_body != NULL) /* the only cost of mirroring for a request that is not copied */
        veer_mirror_body(x, data, len);
    if (x->replay != NULL && x->waiting_conn) {
        if (evbuffer_add(x->replay, data, len) < 0)
            veer_exchange_local_reply(x, 503, "upstream overloaded: cannot keep the request body", true);
        return;
    }
    if (x->replay != NULL) {
        const veer_retry_config_t *rcfg = &x_config(x)->routes[x->route].retry;
        if (x->req_body_bytes > rcfg->max_body_bytes || evbuffer_add(x->replay, data, len) < 0) {
            evbuffer_free(x->replay); /* over retry.max_body_bytes: this request is not retried */
            x->replay = NULL;
        }
    }
    if (x->h2s != NULL && !x->resp_ended) {
        veer_h2up_send_body(x->h2s, data, len);
        if (veer_h2up_congested(x->h2s)) {
            veer_h2up_flush(x->h2s);
            if (veer_h2up_congested(x->h2s)) {
                x->ds->req_pause(x->ds_ctx);
                veer_h2up_want_drain(x->h2s);
            }
        }
        return;
    }
    if (x->up == NULL || x->resp_ended)
        return; /* answered already (local reply, or an early upstream response): discard */
    veer_upconn_send_body(x->up, data, len);
    if (veer_upconn_congested(x->up)) {
        veer_upconn_flush(x->up);
        if (veer_upconn_congested(x->up)) {
            x->ds->req_pause(x->ds_ctx);
            veer_sock_want_drain(&x->up->sock);
        }
    }
}

void veer_exchange_flush_upstream(veer_exchange_t *x)
{
    if (x->up != NULL)
        veer_upconn_flush(x->up);
    else if (x->h2s != NULL)
        veer_h2up_flush(x->h2s);
}

void veer_exchange_req_end(veer_exchange_t *x)
{
    x->req_ended = 1;
    if (x->h2s != NULL) {
        veer_h2up_send_end(x->h2s);
        veer_h2up_flush(x->h2s);
    } else if (x->up != NULL && !x->resp_ended && x->req.has_body) {
        veer_upconn_send_end(x->up);
        veer_upconn_flush(x->up);
    } else if (x->up != NULL) {
        veer_upconn_flush(x->up);
    }
    if (x->mirror_body != NULL) /* after the primary's flush: the copy never delays it */
        veer_mirror_body_end(x);
}

void veer_exchange_on_upstream_drain(veer_exchange_t *x)
{
    x->ds->req_resume(x->ds_ctx);
}

void veer_exchange_on_resp_head(veer_exchange_t *x)
{
    x->up_head_us = now_us();
    x->up_bytes_seen = 1;
    if (x->resp.status >= 500 &&
        retry_consider(x, VEER_RETRY_OUTCOME_STATUS, x->resp.status, veer_outlier_result_from_status(x->resp.status))) {
        x->discarding = 1; /* read this response to its end, then try again */
        return;
    }
    try_timer_stop(x); /* per_try_timeout ends with the response head */
    x->resp_head_sent = 1;
    if (x->attempts > 1) {
        char digits[4];
        int n = snprintf(digits, sizeof(digits), "%u", (unsigned)x->attempts);
        char *v = veer_arena_memdup(&x->arena, digits, (size_t)n);
        if (v != NULL)
            veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap,
                                     VEER_IOV_LIT("x-veer-attempts"), (veer_iov_t){v, (size_t)n});
    }
    x->ds->resp_head(x->ds_ctx, x);
}

void veer_exchange_on_resp_body(veer_exchange_t *x, struct evbuffer *data)
{
    if (x->discarding) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    x->resp_body_bytes += evbuffer_get_length(data);
    x->ds->resp_body(x->ds_ctx, x, data);
    if ((x->up != NULL || x->h2s != NULL) && x->ds->resp_congested(x->ds_ctx)) {
        if (x->up != NULL)
            veer_upconn_pause_read(x->up);
        else
            veer_h2up_pause_read(x->h2s);
        x->ds->resp_on_drain(x->ds_ctx);
    }
}

void veer_exchange_resp_drained(veer_exchange_t *x)
{
    if (x->up != NULL)
        veer_upconn_resume_read(x->up);
    else if (x->h2s != NULL)
        veer_h2up_resume_read(x->h2s);
}

void veer_exchange_on_resp_end(veer_exchange_t *x)
{
    if (x->discarding) {
        retry_after_discard(x, x->req_ended || !x->req.has_body);
        return;
    }
    timer_stop(x);
    /* The connection is reusable only when the request went out whole. */
    bool reusable = x->req_ended || !x->req.has_body;
    if (!reusable)
        x->close_after = 1; /* the client is still sending a body nobody will read */
    grpc_note_status(x);
    attempt_end(x, x->grpc_failed ? VEER_OUTLIER_5XX : veer_outlier_result_from_status(x->resp.status), true);
    upstream_detach(x, reusable);
    x->end_us = now_us();
    x->resp_ended = 1;
    x->ds->resp_end(x->ds_ctx, x); /* may free x */
}

void veer_exchange_on_upstream_fail(veer_exchange_t *x, veer_fail_t why)
{
    if (x->waiting_conn) { /* the route timeout while waiting for a connection: not the endpoint's fault */
        conn_wait_cancel(x);
        attempt_end(x, VEER_OUTLIER_TIMEOUT, false);
    }
    if (x->discarding) { /* the failed response was being skipped anyway */
        retry_after_discard(x, false);
        if (why != VEER_FAIL_TIMEOUT)
            return; /* the retry waits for its backoff */
    }
    bool stale = x->up != NULL && x->up->reused;
    bool can_retry = why == VEER_FAIL_RESET && !x->up_bytes_seen && !x->retried && !x->req.has_body &&
                     method_idempotent(x->req.method) && (x->up != NULL || x->h2s != NULL) &&
                     (stale || x_config(x)->routes[x->route].retry.attempts <= 1);
    if (can_retry) {
        /* A pooled connection the upstream closed under us (not the
         * endpoint's failure), or a reset before any byte on a route without
         * retries: once more on a fresh connection to the same endpoint. */
        attempt_end(x, VEER_OUTLIER_RESET, !stale);
        upstream_release(x, false);
        x->retried = 1;
        atomic_fetch_add_explicit(&x->w->stats.retries_on_reset, 1, memory_order_relaxed);
        upstream_begin(x, true);
        return;
    }
    if (why == VEER_FAIL_CONNECT)
        atomic_fetch_add_explicit(&x->w->stats.upstream_connect_failures, 1, memory_order_relaxed);
    veer_outlier_result_t result = why == VEER_FAIL_CONNECT   ? VEER_OUTLIER_CONNECT_FAILURE
                                   : why == VEER_FAIL_TIMEOUT ? VEER_OUTLIER_TIMEOUT
                                                              : VEER_OUTLIER_RESET;
    if (why != VEER_FAIL_TIMEOUT && !x->resp_head_sent && !x->in_backoff &&
        retry_consider(x, why == VEER_FAIL_CONNECT ? VEER_RETRY_OUTCOME_CONNECT_FAILURE : VEER_RETRY_OUTCOME_RESET,
                       0, result)) {
        retry_after_discard(x, false);
        return;
    }
    attempt_end(x, result, true);
    try_timer_stop(x);
    x->in_backoff = 0;
    x->fail = (uint8_t)why;
    if (x->resp_head_sent) {
        x->end_us = now_us();
        timer_stop(x);
        upstream_detach(x, false);
        x->ds->resp_abort(x->ds_ctx, x);
        return;
    }
    switch (why) {
    case VEER_FAIL_CONNECT:
        veer_exchange_local_reply(x, 503, "upstream connect failure", !x->req_ended && x->req.has_body);
        break;
    case VEER_FAIL_TIMEOUT:
        veer_exchange_local_reply(x, 504, "upstream timeout", !x->req_ended && x->req.has_body);
        break;
    case VEER_FAIL_PROTOCOL:
        veer_exchange_local_reply(x, 502, "invalid response from upstream", !x->req_ended && x->req.has_body);
        break;
    default:
        veer_exchange_local_reply(x, 502, "upstream reset before response", !x->req_ended && x->req.has_body);
        break;
    }
}

void veer_exchange_cancel(veer_exchange_t *x)
{
    timer_stop(x);
    conn_wait_cancel(x);
    attempt_end(x, VEER_OUTLIER_SUCCESS, false);
    try_timer_stop(x);
    x->in_backoff = 0;
    upstream_detach(x, false);
}
