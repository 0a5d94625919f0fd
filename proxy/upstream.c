/* upstream.c - HTTP/1.1 client side (see upstream.h): serializes the
 * exchange's request, parses the response with llhttp, and pools
 * connections per endpoint in the worker's slot. */
#include "upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "exchange.h"
#include "headers.h"
#include "log.h"
#include "tls.h"
#include "worker.h"

static llhttp_settings_t resp_settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void uc_on_read(veer_sock_t *s, void *arg);
static void uc_on_eof(veer_sock_t *s, void *arg, int err);
static void uc_on_drain(veer_sock_t *s, void *arg);
static void uc_on_connect(veer_sock_t *s, void *arg, int err);
static const veer_sock_cbs_t uc_cbs = {uc_on_read, uc_on_eof, uc_on_drain, uc_on_connect};

static const veer_config_t *uc_config(veer_upconn_t *uc)
{
    return uc->w->ws->snap->config;
}

static void uc_close(veer_upconn_t *uc)
{
    veer_endpoint_slot_t *slot = &uc->ep->slots[uc->w->id];
    event_del(&uc->timer);
    veer_sock_close(&uc->sock, false);
    if (uc->body)
        evbuffer_free(uc->body);
    __atomic_store_n(&slot->connections, slot->connections - 1, __ATOMIC_RELAXED);
    veer_endpoint_unref(uc->ep);
    if (uc->breaker != NULL) {
        veer_breaker_release(uc->breaker, VEER_BREAKER_CONNECTIONS);
        veer_exchange_conn_freed(uc->w); /* a request waiting for a connection may go */
    }
    free(uc);
}

/* Count and log a failed upstream handshake. */
static void uc_tls_failed(veer_upconn_t *uc, veer_tls_fail_t kind, const char *reason)
{
    veer_exchange_t *x = uc->x;
    const char *cluster = x != NULL && x->cluster >= 0 ? x->ws->snap->config->clusters[x->cluster].name : "-";
    veer_tls_handshake_failed(uc->w, true, cluster, (const struct sockaddr *)&uc->ep->addr, kind, reason);
}

static void uc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_upconn_t *uc = arg;
    if (!uc->connected) {
        veer_exchange_t *x = uc->x;
        if (uc->sock.ssl != NULL && uc->sock.handshaking && !uc->sock.connecting)
            uc_tls_failed(uc, VEER_TLS_FAIL_TIMEOUT, "handshake not finished within connect_timeout");
        if (x != NULL)
            veer_exchange_on_upstream_fail(x, VEER_FAIL_CONNECT); /* releases uc */
        else
            uc_close(uc);
        return;
    }
    /* idle timeout of a pooled connection: unlink and close */
    veer_endpoint_slot_t *slot = &uc->ep->slots[uc->w->id];
    for (veer_upconn_t **pp = &slot->idle_head; *pp != NULL; pp = &(*pp)->next_idle) {
        if (*pp == uc) {
            *pp = uc->next_idle;
            __atomic_store_n(&slot->idle_count, slot->idle_count - 1, __ATOMIC_RELAXED);
            break;
        }
    }
    uc_close(uc);
}

static void set_timer(veer_upconn_t *uc, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_add(&uc->timer, &tv);
}

/* ---- response parsing ---- */

static int commit_header(veer_upconn_t *uc)
{
    veer_exchange_t *x = uc->x;
    if (uc->cur_name == NULL)
        return 0;
    for (size_t i = 0; i < uc->cur_name_len; i++)
        if (uc->cur_name[i] >= 'A' && uc->cur_name[i] <= 'Z')
            uc->cur_name[i] = (char)(uc->cur_name[i] + 32);
    veer_iov_t name = {uc->cur_name, uc->cur_name_len}, value = {uc->cur_value ? uc->cur_value : "", uc->cur_value_len};
    uc->cur_name = uc->cur_value = NULL;
    uc->cur_name_len = uc->cur_value_len = 0;
    if (uc->in_trailers)
        return veer_exchange_add_header(x, &x->resp.trailers, &x->resp.trailer_count, &x->resp.trailer_cap, name,
                                        value);
    /* framing is re-derived by the downstream codec */
    if (veer_header_name_is(name, "content-length", 14))
        return 0;
    return veer_exchange_add_header(x, &x->resp.headers, &x->resp.header_count, &x->resp.header_cap, name, value);
}

static int on_message_begin(llhttp_t *p)
{
    veer_upconn_t *uc = p->data;
    uc->cur_name = uc->cur_value = NULL;
    uc->cur_name_len = uc->cur_value_len = 0;
    uc->last_was_value = 0;
    uc->in_trailers = 0;
    uc->head_done = 0;
    if (uc->x != NULL) {
        uc->x->resp.header_count = 0;
        uc->x->resp.trailer_count = 0;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    veer_upconn_t *uc = p->data;
    if (uc->x == NULL)
        return -1;
    if (uc->last_was_value && commit_header(uc) < 0)
        return -1;
    uc->last_was_value = 0;
    return veer_arena_append(&uc->x->arena, &uc->cur_name, &uc->cur_name_len, at, n);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    veer_upconn_t *uc = p->data;
    if (uc->x == NULL)
        return -1;
    uc->last_was_value = 1;
    return veer_arena_append(&uc->x->arena, &uc->cur_value, &uc->cur_value_len, at, n);
}

static int on_headers_complete(llhttp_t *p)
{
    veer_upconn_t *uc = p->data;
    veer_exchange_t *x = uc->x;
    if (x == NULL || commit_header(uc) < 0)
        return -1;
    uc->last_was_value = 0;
    int status = llhttp_get_status_code(p);
    if (status >= 100 && status < 200) {
        uc->head_done = 0; /* interim response: not forwarded (veer answers Expect itself) */
        return 0;
    }
    uc->head_done = 1;
    uc->in_trailers = 1;
    x->resp.status = status;
    x->resp.header_count = (uint32_t)veer_headers_strip_hop_by_hop(x->resp.headers, x->resp.header_count, NULL);
    bool head = veer_iov_eq(x->req.method, "HEAD", 4);
    x->resp.has_body = !head && status != 204 && status != 304;
    x->resp.content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    if (!x->resp.has_body && !head)
        x->resp.content_length = -1;
    veer_exchange_on_resp_head(x);
    return head ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    veer_upconn_t *uc = p->data;
    if (uc->x == NULL)
        return -1;
    evbuffer_add(uc->body, at, n);
    veer_exchange_on_resp_body(uc->x, uc->body);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    veer_upconn_t *uc = p->data;
    if (!uc->head_done)
        return 0; /* end of an interim 1xx: the real response follows */
    if (uc->x != NULL && uc->last_was_value && commit_header(uc) < 0)
        return -1;
    uc->keepalive = llhttp_should_keep_alive(p) ? 1 : 0;
    uc->head_done = 0;
    return HPE_PAUSED;
}

static void settings_init(void)
{
    llhttp_settings_init(&resp_settings);
    resp_settings.on_message_begin = on_message_begin;
    resp_settings.on_header_field = on_header_field;
    resp_settings.on_header_value = on_header_value;
    resp_settings.on_headers_complete = on_headers_complete;
    resp_settings.on_body = on_body;
    resp_settings.on_message_complete = on_message_complete;
}

/* Feed buffered bytes to the parser. Returns false once the response ended
 * or failed: uc may be gone then. */
static bool uc_parse(veer_upconn_t *uc)
{
    struct evbuffer *in = uc->sock.in;
    while (uc->x != NULL && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        veer_exchange_t *x = uc->x;
        llhttp_errno_t rc = llhttp_execute(&uc->parser, v.iov_base, v.iov_len);
        if (rc == HPE_OK) {
            evbuffer_drain(in, v.iov_len);
            continue;
        }
        if (rc == HPE_PAUSED) {
            size_t used = (size_t)(llhttp_get_error_pos(&uc->parser) - (const char *)v.iov_base);
            evbuffer_drain(in, used);
            llhttp_resume(&uc->parser);
            if (evbuffer_get_length(in) > 0)
                uc->keepalive = 0; /* bytes after the response: never reuse */
            veer_exchange_on_resp_end(x); /* releases uc: do not touch it after */
            return false;
        }
        veer_log_warn("upstream %s: invalid response: %s", uc->ep->name, llhttp_errno_name(rc));
        uc->keepalive = 0;
        veer_exchange_on_upstream_fail(x, VEER_FAIL_PROTOCOL);
        return false;
    }
    return uc->x != NULL;
}

static void uc_on_read(veer_sock_t *s, void *arg)
{
    veer_upconn_t *uc = arg;
    if (uc->x == NULL) {
        /* bytes or close on an idle pooled connection: it can't be reused */
        uc_timer_cb(-1, 0, uc);
        return;
    }
    veer_exchange_t *x = uc->x;
    x->up_bytes_seen = 1;
    if (uc_parse(uc) && uc->x == x) /* still attached: push what the response produced so far */
        x->ds->flush(x->ds_ctx);
}

static void uc_on_eof(veer_sock_t *s, void *arg, int err)
{
    veer_upconn_t *uc = arg;
    veer_exchange_t *x = uc->x;
    if (x == NULL) {
        uc_timer_cb(-1, 0, uc);
        return;
    }
    uc->keepalive = 0;
    if (err == 0 && uc->head_done && llhttp_message_needs_eof(&uc->parser)) {
        /* close-delimited body: EOF is its end */
        llhttp_finish(&uc->parser);
        veer_exchange_on_resp_end(x);
        return;
    }
    veer_exchange_on_upstream_fail(x, uc->connected ? VEER_FAIL_RESET : VEER_FAIL_CONNECT);
}

static void uc_on_drain(veer_sock_t *s, void *arg)
{
    veer_upconn_t *uc = arg;
    if (uc->x != NULL)
        veer_exchange_on_upstream_drain(uc->x);
}

static void uc_on_connect(veer_sock_t *s, void *arg, int err)
{
    veer_upconn_t *uc = arg;
    event_del(&uc->timer);
    if (err != 0 && s->tls_fatal)
        uc_tls_failed(uc, veer_sock_tls_fail_kind(s), veer_sock_tls_error(s));
    if (err != 0) {
        veer_exchange_t *x = uc->x;
        if (x != NULL)
            veer_exchange_on_upstream_fail(x, VEER_FAIL_CONNECT);
        else
            uc_close(uc);
        return;
    }
    uc->connected = 1;
    if (uc->x != NULL) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        uc->x->connect_us = now > uc->connect_start_us ? now - uc->connect_start_us : 1;
    }
    veer_sock_read_enable(&uc->sock);
    veer_sock_flush(&uc->sock);
}

/* ---- pool ---- */

veer_upconn_t *veer_upconn_get(veer_worker_t *w, veer_endpoint_t *ep, uint64_t connect_timeout_ms, bool fresh,
                               const veer_snapshot_t *snap, int cluster)
{
    pthread_once(&settings_once, settings_init);
    veer_endpoint_slot_t *slot = &ep->slots[w->id];
    SSL_CTX *tls_ctx = veer_tls_cluster_ctx(snap, cluster);
    veer_upconn_t *uc;
    while (!fresh && (uc = slot->idle_head) != NULL) {
        slot->idle_head = uc->next_idle;
        __atomic_store_n(&slot->idle_count, slot->idle_count - 1, __ATOMIC_RELAXED);
        uc->next_idle = NULL;
        if (uc->tls_ctx != tls_ctx) {
            uc_close(uc); /* made under another config's TLS settings */
            continue;
        }
        event_del(&uc->timer);
        uc->reused = 1;
        return uc;
    }
    uc = calloc(1, sizeof(*uc));
    if (uc == NULL)
        return NULL;
    uc->w = w;
    uc->ep = ep;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uc->connect_start_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    uc->body = evbuffer_new();
    int rc = uc->body == NULL ? -1
                              : veer_sock_connect(&uc->sock, w->base, (struct sockaddr *)&ep->addr, ep->addrlen,
                                                  &uc_cbs, uc);
    if (rc == 0 && veer_tls_upstream_start_worker(&uc->sock, snap, cluster, ep, w->id) < 0) {
        veer_sock_close(&uc->sock, false);
        errno = ENOMEM;
        rc = -1;
    }
    if (rc < 0) {
        int saved = errno;
        if (uc->body)
            evbuffer_free(uc->body);
        free(uc);
        veer_log_warn("upstream %s: connect: %s", ep->name, strerror(saved));
        errno = saved;
        return NULL;
    }
    uc->tls_ctx = tls_ctx;
    veer_endpoint_ref(ep);
    __atomic_store_n(&slot->connections, slot->connections + 1, __ATOMIC_RELAXED);
    atomic_fetch_add_explicit(&w->stats.upstream_cx_total, 1, memory_order_relaxed);
    event_assign(&uc->timer, w->base, -1, 0, uc_timer_cb, uc);
    set_timer(uc, connect_timeout_ms ? connect_timeout_ms : 1000);
    return uc;
}

static size_t head_size(const veer_exchange_t *x)
{
    const veer_req_t *r = &x->req;
    size_t n = r->method.len + 1 + r->path.len + 11 + 6 + r->authority.len + 2 + 48 + 2;
    for (uint32_t i = 0; i < r->header_count; i++)
        n += r->headers[i].name.len + 2 + r->headers[i].value.len + 2;
    return n;
}

#define PUT(p, s, n) ((n) ? (memcpy((p), (s), (n)), (p) += (n)) : (p)) /* s may be NULL when n is 0 */

int veer_upconn_send_head(veer_upconn_t *uc, veer_exchange_t *x)
{
    const veer_req_t *r = &x->req;
    llhttp_init(&uc->parser, HTTP_RESPONSE, &resp_settings);
    uc->parser.data = uc;
    uc->keepalive = 0;
    uc->head_done = 0;
    uc->chunked_req = r->has_body && r->content_length < 0;
    struct evbuffer_iovec v;
    size_t total = head_size(x);
    if (evbuffer_reserve_space(uc->sock.out, (ev_ssize_t)total, &v, 1) < 1)
        return -1;
    char *p = v.iov_base;
    PUT(p, r->method.base, r->method.len);
    *p++ = ' ';
    PUT(p, r->path.base, r->path.len);
    PUT(p, " HTTP/1.1\r\nhost: ", 17);
    PUT(p, r->authority.base, r->authority.len);
    PUT(p, "\r\n", 2);
    for (uint32_t i = 0; i < r->header_count; i++) {
        const veer_header_t *h = &r->headers[i];
        PUT(p, h->name.base, h->name.len);
        PUT(p, ": ", 2);
        PUT(p, h->value.base, h->value.len);
        PUT(p, "\r\n", 2);
    }
    if (uc->chunked_req)
        PUT(p, "transfer-encoding: chunked\r\n", 28);
    else if (r->has_body)
        p = veer_put_header_u64(p, "content-length: ", 16, (uint64_t)r->content_length);
    PUT(p, "\r\n", 2);
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    evbuffer_commit_space(uc->sock.out, &v, 1);
    uc->requests++;
    return 0;
}

void veer_upconn_send_body(veer_upconn_t *uc, const char *data, size_t len)
{
    if (len == 0)
        return;
    if (uc->chunked_req) {
        char hdr[24];
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        evbuffer_add(uc->sock.out, hdr, (size_t)n);
        evbuffer_add(uc->sock.out, data, len);
        evbuffer_add(uc->sock.out, "\r\n", 2);
    } else {
        evbuffer_add(uc->sock.out, data, len);
    }
}

void veer_upconn_send_end(veer_upconn_t *uc)
{
    if (uc->chunked_req) {
        /* Request trailers ride in the last chunk; a Content-Length body has
         * no place for them, so they are dropped there. */
        evbuffer_add(uc->sock.out, "0\r\n", 3);
        const veer_req_t *r = uc->x != NULL ? &uc->x->req : NULL;
        for (uint32_t i = 0; r != NULL && i < r->trailer_count; i++) {
            const veer_header_t *h = &r->trailers[i];
            if (veer_header_is_hop_by_hop(h->name) || veer_header_name_is(h->name, "content-length", 14))
                continue;
            evbuffer_add(uc->sock.out, h->name.base, h->name.len);
            evbuffer_add(uc->sock.out, ": ", 2);
            evbuffer_add(uc->sock.out, h->value.base, h->value.len);
            evbuffer_add(uc->sock.out, "\r\n", 2);
        }
        evbuffer_add(uc->sock.out, "\r\n", 2);
        uc->chunked_req = 0;
    }
}

void veer_upconn_flush(veer_upconn_t *uc)
{
    if (uc->connected)
        veer_sock_flush(&uc->sock);
}

bool veer_upconn_congested(veer_upconn_t *uc)
{
    return evbuffer_get_length(uc->sock.out) > uc_config(uc)->limits.buffer_bytes;
}

void veer_upconn_pause_read(veer_upconn_t *uc)
{
    veer_sock_read_disable(&uc->sock);
}

void veer_upconn_resume_read(veer_upconn_t *uc)
{
    if (uc->connected) {
        veer_sock_read_enable(&uc->sock);
        if (evbuffer_get_length(uc->sock.in) > 0)
            uc_on_read(&uc->sock, uc);
    }
}

void veer_upconn_release(veer_upconn_t *uc, bool reusable)
{
    veer_endpoint_slot_t *slot = &uc->ep->slots[uc->w->id];
    const veer_config_t *cfg = uc_config(uc);
    uc->x = NULL;
    if (!reusable || !uc->keepalive || !uc->connected || uc->sock.failed ||
        evbuffer_get_length(uc->sock.in) > 0 || evbuffer_get_length(uc->sock.out) > 0 ||
        atomic_load_explicit(&uc->ep->retired, memory_order_relaxed) || uc->w->draining ||
        slot->idle_count >= cfg->limits.max_idle_upstream) {
        uc_close(uc);
        return;
    }
    uc->next_idle = slot->idle_head;
    slot->idle_head = uc;
    __atomic_store_n(&slot->idle_count, slot->idle_count + 1, __ATOMIC_RELAXED);
    veer_sock_read_enable(&uc->sock); /* to notice the upstream closing it */
    event_add(&uc->timer, uc->w->idle_tv);
}

void veer_upconn_close_idle(veer_worker_t *w, veer_endpoint_t *ep)
{
    veer_endpoint_slot_t *slot = &ep->slots[w->id];
    while (slot->idle_head != NULL) {
        veer_upconn_t *uc = slot->idle_head;
        slot->idle_head = uc->next_idle;
        __atomic_store_n(&slot->idle_count, slot->idle_count - 1, __ATOMIC_RELAXED);
        uc_close(uc);
    }
}
