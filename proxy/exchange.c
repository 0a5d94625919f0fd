/* exchange.c - routing and the request/response relay between a downstream
 * codec and an upstream connection (see exchange.h). The only module that
 * knows both routes and codecs; the codecs call in, the exchange calls out
 * through the downstream ops and the upstream functions. */
#include "exchange.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "headers.h"
#include "log.h"
#include "router.h"
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

/* Detach from the upstream connection, pooling it when reusable. */
static void upstream_detach(veer_exchange_t *x, bool reusable)
{
    veer_upconn_t *uc = x->up;
    slot_dec(x);
    if (uc != NULL) {
        x->up = NULL;
        uc->x = NULL;
        veer_upconn_release(uc, reusable);
    }
}

void veer_exchange_free(veer_exchange_t *x)
{
    veer_worker_t *w = x->w;
    timer_stop(x);
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

static void make_request_id(veer_exchange_t *x);

void veer_exchange_local_reply(veer_exchange_t *x, int status, const char *error, bool close)
{
    if (x->request_id_len == 0)
        make_request_id(x);
    const veer_config_t *cfg = x_config(x);
    const char *route = x->route >= 0 ? cfg->routes[x->route].name : NULL;
    const char *cluster = x->cluster >= 0 ? cfg->clusters[x->cluster].name : NULL;
    char r[160], c[160], e[300];
    json_str(r, sizeof(r), route);
    json_str(c, sizeof(c), cluster);
    json_str(e, sizeof(e), error);
    char *body = veer_arena_alloc(&x->arena, 1024);
    if (body == NULL) {
        x->ds->resp_abort(x->ds_ctx, x);
        return;
    }
    int len = snprintf(body, 1024, "{\"error\":%s,\"route\":%s,\"cluster\":%s,\"request_id\":\"%.*s\"}\n", e, r, c,
                       (int)x->request_id_len, x->request_id);
    timer_stop(x);
    upstream_detach(x, false);
    x->local_reply = 1;
    x->close_after |= close;
    x->resp.status = status;
    x->resp.header_count = 0;
    x->resp.trailer_count = 0;
    x->resp.content_length = len;
    x->resp.has_body = true;
    veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap,
                             VEER_IOV_LIT("content-type"), VEER_IOV_LIT("application/json"));
    if (x->request_id_len)
        veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap,
                                 VEER_IOV_LIT("x-request-id"), (veer_iov_t){x->request_id, x->request_id_len});
    if (status == 503 && error != NULL && strstr(error, "overload") != NULL)
        veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap,
                                 VEER_IOV_LIT("x-veer-overloaded"), VEER_IOV_LIT("true"));
    atomic_fetch_add_explicit(&x->w->stats.local_replies, 1, memory_order_relaxed);
    x->resp_head_sent = 1;
    x->ds->resp_head(x->ds_ctx, x);
    struct evbuffer *buf = evbuffer_new();
    if (buf != NULL) {
        evbuffer_add(buf, body, (size_t)len); /* a copy: the arena goes with x, the bytes may not be sent yet */
        x->ds->resp_body(x->ds_ctx, x, buf);
        evbuffer_free(buf);
    }
    x->resp_ended = 1;
    x->ds->resp_end(x->ds_ctx, x); /* may free x */
}

static void make_request_id(veer_exchange_t *x)
{
    veer_iov_t v;
    veer_route_input_t in = {.headers = x->req.headers, .header_count = x->req.header_count};
    if (veer_router_header(&in, "x-request-id", 12, &v) && v.len > 0 && v.len < sizeof(x->request_id)) {
        memcpy(x->request_id, v.base, v.len);
        x->request_id_len = v.len;
        return;
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 4; i++) {
        uint32_t r = veer_worker_random(x->w);
        for (int k = 0; k < 8; k++)
            x->request_id[i * 8 + k] = hex[(r >> (k * 4)) & 15];
    }
    x->request_id_len = 32;
    veer_exchange_add_header(x, &x->req.headers, &x->req.header_count, &x->req.header_cap,
                             VEER_IOV_LIT("x-request-id"), (veer_iov_t){x->request_id, 32});
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

/* Connect (or reuse) and send the head; 0 or -1 (a local reply was sent). */
static int upstream_begin(veer_exchange_t *x, bool fresh)
{
    const veer_cluster_config_t *cc = &x_config(x)->clusters[x->cluster];
    veer_endpoint_t *ep = x->ep;
    veer_upconn_t *uc = veer_upconn_get(x->w, ep, cc->connect_timeout_ms, fresh);
    if (uc == NULL) {
        veer_exchange_local_reply(x, 503, "cannot open an upstream connection", x->req.has_body);
        return -1;
    }
    x->up = uc;
    uc->x = x;
    if (veer_upconn_send_head(uc, x) < 0) {
        veer_exchange_local_reply(x, 500, "request head too large to forward", true);
        return -1;
    }
    if (!x->req.has_body)
        veer_upconn_send_end(uc);
    veer_upconn_flush(uc);
    return 0;
}

void veer_exchange_start(veer_exchange_t *x)
{
    const veer_config_t *cfg = x_config(x);
    x->started = 1;
    atomic_fetch_add_explicit(&x->w->stats.requests_total, 1, memory_order_relaxed);
    make_request_id(x);
    if (add_forwarded(x) < 0) {
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
    if (x->cluster < 0) {
        veer_exchange_local_reply(x, 503, "every cluster of the route has weight 0", x->req.has_body);
        return;
    }
    const veer_cluster_config_t *cc = &cfg->clusters[x->cluster];
    veer_endpoint_t *ep = veer_lb_pick(x->ws->snap->cluster_endpoints[x->cluster], cc->lb, x->w->id,
                                       &x->ws->rr[x->cluster], veer_worker_random(x->w));
    if (ep == NULL) {
        veer_exchange_local_reply(x, 503, "no healthy endpoint", x->req.has_body);
        return;
    }
    x->ep = ep;
    veer_endpoint_slot_t *slot = &ep->slots[x->w->id];
    __atomic_store_n(&slot->active_requests, slot->active_requests + 1, __ATOMIC_RELAXED);
    if (x->ws->route_tv[x->route] != NULL) {
        event_assign(&x->timer, x->w->base, -1, 0, timeout_cb, x);
        event_add(&x->timer, x->ws->route_tv[x->route]);
        x->timer_on = 1;
    }
    if (upstream_begin(x, false) < 0)
        return;
    if (x->req.expect_continue && x->req.has_body)
        x->ds->send_continue(x->ds_ctx, x);
}

void veer_exchange_req_body(veer_exchange_t *x, const char *data, size_t len)
{
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
}

void veer_exchange_req_end(veer_exchange_t *x)
{
    x->req_ended = 1;
    if (x->up != NULL && !x->resp_ended && x->req.has_body) {
        veer_upconn_send_end(x->up);
        veer_upconn_flush(x->up);
    } else if (x->up != NULL) {
        veer_upconn_flush(x->up);
    }
}

void veer_exchange_on_upstream_drain(veer_exchange_t *x)
{
    x->ds->req_resume(x->ds_ctx);
}

void veer_exchange_on_resp_head(veer_exchange_t *x)
{
    x->up_bytes_seen = 1;
    x->resp_head_sent = 1;
    if (x->retried) {
        veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap,
                                 VEER_IOV_LIT("x-veer-attempts"), VEER_IOV_LIT("2"));
    }
    x->ds->resp_head(x->ds_ctx, x);
}

void veer_exchange_on_resp_body(veer_exchange_t *x, struct evbuffer *data)
{
    x->ds->resp_body(x->ds_ctx, x, data);
    if (x->up != NULL && x->ds->resp_congested(x->ds_ctx)) {
        veer_upconn_pause_read(x->up);
        x->ds->resp_on_drain(x->ds_ctx);
    }
}

void veer_exchange_resp_drained(veer_exchange_t *x)
{
    if (x->up != NULL)
        veer_upconn_resume_read(x->up);
}

void veer_exchange_on_resp_end(veer_exchange_t *x)
{
    timer_stop(x);
    /* The connection is reusable only when the request went out whole. */
    bool reusable = x->req_ended || !x->req.has_body;
    if (!reusable)
        x->close_after = 1; /* the client is still sending a body nobody will read */
    upstream_detach(x, reusable);
    x->resp_ended = 1;
    x->ds->resp_end(x->ds_ctx, x); /* may free x */
}

void veer_exchange_on_upstream_fail(veer_exchange_t *x, veer_fail_t why)
{
    bool can_retry = why == VEER_FAIL_RESET && !x->up_bytes_seen && !x->retried && !x->req.has_body &&
                     method_idempotent(x->req.method) && x->up != NULL;
    if (can_retry) {
        /* A pooled connection the upstream closed under us (or a crash before
         * any byte): once more on a fresh connection to the same endpoint. */
        veer_upconn_t *uc = x->up;
        x->up = NULL;
        uc->x = NULL;
        veer_upconn_release(uc, false);
        x->retried = 1;
        atomic_fetch_add_explicit(&x->w->stats.retries_on_reset, 1, memory_order_relaxed);
        upstream_begin(x, true);
        return;
    }
    if (why == VEER_FAIL_CONNECT)
        atomic_fetch_add_explicit(&x->w->stats.upstream_connect_failures, 1, memory_order_relaxed);
    if (x->resp_head_sent) {
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
    upstream_detach(x, false);
}
