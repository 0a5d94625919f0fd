/* mirror.c - shadow copies of requests for a canary run's mirrored phase:
 * one short-lived connection per copy, so a mirror never holds a pooled
 * connection, a breaker slot or a retry of the primary. HTTP/1.1 canaries
 * (plain or TLS) get the copy with connection: close on a veer_sock; HTTP/2
 * ones (h2c or h2) one request on its own connection through h2call.c. The
 * copy's outcome is recorded into the canary cluster's stats. */
#include "mirror.h"

#include <ctype.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cluster.h"
#include "h2call.h"
#include "headers.h"
#include "log.h"
#include "runtime.h"
#include "sock.h"
#include "stats.h"
#include "tls.h"

/* A route without a timeout still bounds its copies: a canary that hangs
 * would otherwise keep its VEER_MIRROR_MAX_IN_FLIGHT slots for good and end
 * the mirrored phase's traffic. A user's request may wait; a copy may not. */
#define MIRROR_NO_TIMEOUT_MS (60u * 1000u)

static uint64_t copy_timeout_ms(const veer_snapshot_t *snap, int route)
{
    uint64_t ms = snap->config->routes[route].timeout_ms;
    return ms > 0 ? ms : MIRROR_NO_TIMEOUT_MS;
}

typedef struct veer_mirror_s {
    veer_worker_t *w;
    veer_snapshot_t *snap; /* referenced: the stats layout the outcome goes to */
    veer_endpoint_t *ep;   /* referenced */
    int route, cluster;
    veer_sock_t sock;      /* HTTP/1.1 (plain or TLS); fd -1 when closed or unused */
    struct event timer;    /* HTTP/1.1: the route timeout */
    veer_h2call_t *call;   /* HTTP/2: owns its own socket and timer */
    llhttp_t parser;
    uint64_t start_us, connect_us, head_us;
    bool complete;
    struct veer_mirror_s *prev, *next;
} veer_mirror_t;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void count(atomic_uint_fast64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static void mirror_free(veer_mirror_t *m)
{
    veer_worker_t *w = m->w;
    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        w->mirrors = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    w->mirror_count--;
    event_del(&m->timer);
    if (m->call != NULL)
        veer_h2call_cancel(m->call);
    veer_sock_close(&m->sock, !m->complete);
    veer_endpoint_unref(m->ep);
    veer_snapshot_release(m->snap);
    free(m);
}

/* The copy ended with status (0: none) and fail: both go to the canary
 * cluster's series of the route, exactly as a user request's would. */
static void mirror_record(veer_mirror_t *m, int status, veer_stats_fail_t fail)
{
    if (fail != VEER_STATS_FAIL_NONE)
        count(&m->w->stats.mirror_failed);
    if (m->w->req_stats != NULL) {
        uint64_t end = now_us();
        veer_stats_record_request(m->w->req_stats, m->snap->stats_layout, m->route, m->cluster, m->ep->stats,
                                  status, fail, end - m->start_us,
                                  m->connect_us ? m->connect_us : VEER_STATS_NO_TIME,
                                  m->head_us ? m->head_us - m->start_us : VEER_STATS_NO_TIME, end / 1000000u);
    }
    mirror_free(m);
}

/* ---- HTTP/1.1 ---- */

static void mirror_done(veer_mirror_t *m, veer_stats_fail_t fail)
{
    int status = (int)llhttp_get_status_code(&m->parser);
    if (!m->complete && fail == VEER_STATS_FAIL_NONE)
        fail = VEER_STATS_FAIL_RESET;
    if (fail == VEER_STATS_FAIL_NONE && status >= 500)
        fail = VEER_STATS_FAIL_5XX;
    if (!m->head_us)
        status = 0;
    mirror_record(m, status, fail);
}

static int on_headers_complete(llhttp_t *p)
{
    veer_mirror_t *m = p->data;
    if (!m->head_us)
        m->head_us = now_us();
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    veer_mirror_t *m = p->data;
    if (llhttp_get_status_code(p) >= 200) /* a 1xx is followed by the real response */
        m->complete = true;
    return m->complete ? HPE_PAUSED : 0;
}

static const llhttp_settings_t resp_settings = {
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

static void mirror_on_read(veer_sock_t *s, void *arg)
{
    veer_mirror_t *m = arg;
    while (evbuffer_get_length(s->in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(s->in, -1, NULL, &v, 1) < 1)
            break;
        llhttp_errno_t e = llhttp_execute(&m->parser, v.iov_base, v.iov_len);
        evbuffer_drain(s->in, v.iov_len); /* the body is discarded */
        if (m->complete) {
            mirror_done(m, VEER_STATS_FAIL_NONE);
            return;
        }
        if (e != HPE_OK) {
            mirror_done(m, VEER_STATS_FAIL_5XX); /* an invalid response counts as a server failure */
            return;
        }
    }
}

static void mirror_on_eof(veer_sock_t *s, void *arg, int err)
{
    veer_mirror_t *m = arg;
    (void)s;
    if (err == 0 && !m->complete && llhttp_finish(&m->parser) == HPE_OK && m->head_us)
        m->complete = true; /* a body delimited by the close */
    mirror_done(m, VEER_STATS_FAIL_NONE);
}

static void mirror_on_drain(veer_sock_t *s, void *arg)
{
    (void)s;
    (void)arg;
}

/* TCP connect (and TLS handshake) done: the head and body wait in s->out. */
static void mirror_on_connect(veer_sock_t *s, void *arg, int err)
{
    veer_mirror_t *m = arg;
    if (err != 0) {
        mirror_done(m, VEER_STATS_FAIL_CONNECT);
        return;
    }
    m->connect_us = now_us() - m->start_us;
    veer_sock_read_enable(s);
    veer_sock_flush(s); /* a failure comes back through on_eof */
}

static const veer_sock_cbs_t mirror_cbs = {mirror_on_read, mirror_on_eof, mirror_on_drain, mirror_on_connect};

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mirror_done(arg, VEER_STATS_FAIL_TIMEOUT);
}

/* The request head of x, with x-veer-mirror: 1 and connection: close; a
 * body (body_len >= 0) goes with the Content-Length of what was kept, so a
 * chunked request's copy is not chunked. */
static int write_head(struct evbuffer *out, const veer_req_t *r, int64_t body_len)
{
    int rc = 0;
    rc |= evbuffer_add(out, r->method.base, r->method.len);
    rc |= evbuffer_add(out, " ", 1);
    rc |= evbuffer_add(out, r->path.base, r->path.len);
    rc |= evbuffer_add(out, " HTTP/1.1\r\nhost: ", 17);
    rc |= evbuffer_add(out, r->authority.base, r->authority.len);
    rc |= evbuffer_add(out, "\r\n", 2);
    for (uint32_t i = 0; i < r->header_count; i++) {
        const veer_header_t *h = &r->headers[i];
        if (veer_header_name_is(h->name, "connection", 10) || veer_header_name_is(h->name, "content-length", 14) ||
            veer_header_name_is(h->name, "transfer-encoding", 17))
            continue;
        rc |= evbuffer_add(out, h->name.base, h->name.len);
        rc |= evbuffer_add(out, ": ", 2);
        rc |= evbuffer_add(out, h->value.base, h->value.len);
        rc |= evbuffer_add(out, "\r\n", 2);
    }
    if (body_len >= 0)
        rc |= evbuffer_add_printf(out, "content-length: %lld\r\n", (long long)body_len) < 0;
    rc |= evbuffer_add(out, "x-veer-mirror: 1\r\nconnection: close\r\n\r\n", 39);
    return rc;
}

/* Connect m's socket (TLS when the cluster says so) with the copy of x
 * queued: 0; 1 when the connect was refused at once; -1 when the copy
 * cannot be set up (out of memory). */
static int start_h1(veer_mirror_t *m, const veer_exchange_t *x, struct evbuffer *body)
{
    llhttp_init(&m->parser, HTTP_RESPONSE, &resp_settings);
    m->parser.data = m;
    if (veer_sock_connect(&m->sock, m->w->base, (const struct sockaddr *)&m->ep->addr, m->ep->addrlen, &mirror_cbs,
                          m) < 0)
        return 1;
    int64_t body_len = body != NULL ? (int64_t)evbuffer_get_length(body) : -1;
    if (veer_tls_upstream_start_worker(&m->sock, m->snap, m->cluster, m->ep, m->w->id) < 0 ||
        write_head(m->sock.out, &x->req, body_len) != 0 ||
        (body != NULL && evbuffer_add_buffer(m->sock.out, body) != 0))
        return -1;
    uint64_t ms = copy_timeout_ms(m->snap, m->route);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(&m->timer, &tv);
    return 0;
}

/* ---- HTTP/2 ---- */

static void h2_done(void *arg, veer_h2call_t *call, const veer_h2call_result_t *res)
{
    veer_mirror_t *m = arg;
    (void)call;
    m->call = NULL; /* h2call frees itself after this returns */
    m->complete = res->failure == VEER_H2CALL_OK;
    veer_stats_fail_t fail = VEER_STATS_FAIL_NONE;
    switch (res->failure) {
    case VEER_H2CALL_CONNECT:
    case VEER_H2CALL_TLS: fail = VEER_STATS_FAIL_CONNECT; break;
    case VEER_H2CALL_TIMEOUT: fail = VEER_STATS_FAIL_TIMEOUT; break;
    case VEER_H2CALL_PROTOCOL: fail = VEER_STATS_FAIL_RESET; break;
    case VEER_H2CALL_OK:
        if (res->status >= 500)
            fail = VEER_STATS_FAIL_5XX;
        else if (res->grpc_status >= 0 &&
                 veer_config_grpc_status_fails(m->snap->config->routes[m->route].failure_grpc_status,
                                               res->grpc_status))
            fail = VEER_STATS_FAIL_GRPC;
        break;
    }
    mirror_record(m, res->status, fail);
}

/* Headers HTTP/2 forbids (connection-specific), or that the copy sets itself. */
static bool h2_skip(const veer_header_t *h)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                        "upgrade",    "host",       "content-length",   "x-veer-mirror"};
    if (h->name.len == 0 || h->name.base[0] == ':')
        return true;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (veer_header_name_is(h->name, names[i], strlen(names[i])))
            return true;
    if (veer_header_name_is(h->name, "te", 2))
        return !(h->value.len == 8 && strncasecmp(h->value.base, "trailers", 8) == 0);
    return false;
}

/* Append s (len bytes, lowercased when lower) and a NUL to *p; its start. */
static const char *put(char **p, const char *s, size_t len, bool lower)
{
    char *start = *p;
    for (size_t i = 0; i < len; i++)
        start[i] = lower ? (char)tolower((unsigned char)s[i]) : s[i];
    start[len] = '\0';
    *p += len + 1;
    return start;
}

/* Start the HTTP/2 copy of x with body (NULL: none). 0; 1 when x has more
 * headers than h2call takes; -1 when it cannot be set up. */
static int start_h2(veer_mirror_t *m, const veer_exchange_t *x, struct evbuffer *body)
{
    const veer_req_t *r = &x->req;
    veer_h2call_header_t hs[VEER_H2CALL_MAX_HEADERS];
    size_t n = 0, bytes = r->method.len + r->path.len + r->authority.len + strlen(m->ep->name) + 3 + 24;
    for (uint32_t i = 0; i < r->header_count; i++)
        if (!h2_skip(&r->headers[i])) {
            n++;
            bytes += r->headers[i].name.len + r->headers[i].value.len + 2;
        }
    size_t body_len = body != NULL ? evbuffer_get_length(body) : 0;
    if (n + 1 + (body != NULL) > VEER_H2CALL_MAX_HEADERS) /* + x-veer-mirror, content-length */
        return 1;
    char *strings = malloc(bytes);
    if (strings == NULL)
        return -1;
    char *p = strings;
    n = 0;
    for (uint32_t i = 0; i < r->header_count; i++) {
        const veer_header_t *h = &r->headers[i];
        if (h2_skip(h))
            continue;
        hs[n].name = put(&p, h->name.base, h->name.len, true);
        hs[n++].value = put(&p, h->value.base, h->value.len, false);
    }
    hs[n++] = (veer_h2call_header_t){"x-veer-mirror", "1"};
    char cl[24];
    if (body != NULL) {
        snprintf(cl, sizeof cl, "%zu", body_len);
        hs[n++] = (veer_h2call_header_t){"content-length", cl};
    }
    veer_h2call_request_t req = {
        .method = put(&p, r->method.base, r->method.len, false),
        .path = put(&p, r->path.base, r->path.len, false),
        /* an HTTP/1.0 request may lack a Host: the endpoint's name stands in */
        .authority = r->authority.len > 0 ? put(&p, r->authority.base, r->authority.len, false) : m->ep->name,
        .headers = hs,
        .header_count = n,
        .body = body_len > 0 ? evbuffer_pullup(body, -1) : NULL,
        .body_len = body_len,
    };
    req.timeout_ms = copy_timeout_ms(m->snap, m->route);
    if (body_len > 0 && req.body == NULL) {
        free(strings);
        return -1;
    }
    SSL_CTX *ctx = veer_tls_cluster_ctx(m->snap, m->cluster);
    /* h2call copies the request, so strings and body go at once */
    m->call = veer_h2call_start(m->w->base, (const struct sockaddr *)&m->ep->addr, m->ep->addrlen, ctx,
                                ctx != NULL ? veer_tls_cluster_server_name(m->snap, m->cluster, m->ep) : NULL, &req,
                                h2_done, m);
    free(strings);
    return m->call != NULL ? 0 : -1;
}

/* ---- copies ---- */

/* The cluster x's route mirrors to, or -1. */
static int32_t mirror_target(const veer_exchange_t *x)
{
    const veer_snapshot_t *snap = x->ws->snap;
    int32_t target = snap->routes[x->route].mirror - 1;
    if (target < 0 || target == x->cluster || (size_t)target >= snap->config->cluster_count)
        return -1;
    return target;
}

/* Send the copy of x to an endpoint of target, with body (NULL: none; the
 * caller frees it after). The caller reserved the copy's slot of the cap
 * (mirror_count): mirror_free releases it. */
static void mirror_send(veer_exchange_t *x, int32_t target, struct evbuffer *body)
{
    veer_snapshot_t *snap = x->ws->snap;
    veer_worker_t *w = x->w;
    const veer_cluster_config_t *cc = &snap->config->clusters[target];
    bool unset_ok = cc->health_check == NULL || !cc->health_check->require_initial_pass;
    veer_endpoint_t *ep = veer_lb_pick(snap->cluster_endpoints[target], cc->lb, w->id, &x->ws->rr[target],
                                       veer_worker_random(w), unset_ok);
    if (ep == NULL) {
        w->mirror_count--;
        count(&w->stats.mirror_dropped_no_endpoint);
        return;
    }
    veer_mirror_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        w->mirror_count--;
        count(&w->stats.mirror_dropped_cap); /* out of memory is no room for a copy either */
        return;
    }
    m->w = w;
    m->route = x->route;
    m->cluster = target;
    m->start_us = now_us();
    m->sock.fd = -1;
    evtimer_assign(&m->timer, w->base, timeout_cb, m);
    atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
    m->snap = snap;
    veer_endpoint_ref(ep);
    m->ep = ep;
    m->next = w->mirrors;
    if (w->mirrors != NULL)
        w->mirrors->prev = m;
    w->mirrors = m;
    int rc = cc->protocol == VEER_PROTO_HTTP1 ? start_h1(m, x, body) : start_h2(m, x, body);
    if (rc < 0) {
        mirror_free(m);
        count(&w->stats.mirror_dropped_cap); /* out of memory or descriptors: no room for a copy */
        return;
    }
    if (rc > 0 && cc->protocol != VEER_PROTO_HTTP1) {
        mirror_free(m);
        count(&w->stats.mirror_dropped_too_many_headers); /* dropped whole rather than truncated */
        return;
    }
    count(&w->stats.mirror_requests);
    if (rc > 0)
        mirror_done(m, VEER_STATS_FAIL_CONNECT);
}

void veer_mirror_maybe(veer_exchange_t *x)
{
    int32_t target = mirror_target(x);
    veer_worker_t *w = x->w;
    if (target < 0)
        return;
    bool body = x->req.has_body && x->req.content_length != 0;
    if (body && x->req.content_length > (int64_t)VEER_MIRROR_MAX_BODY_BYTES) {
        count(&w->stats.mirror_dropped_body_too_large);
        return;
    }
    if (w->mirror_count >= VEER_MIRROR_MAX_IN_FLIGHT) {
        count(&w->stats.mirror_dropped_cap);
        return;
    }
    w->mirror_count++; /* the copy's slot, held while its body is kept too */
    if (!body) {
        mirror_send(x, target, NULL);
        return;
    }
    x->mirror_body = evbuffer_new();
    if (x->mirror_body == NULL) {
        w->mirror_count--;
        count(&w->stats.mirror_dropped_cap);
    }
}

/* Free the kept body and its slot; reason counts why no copy goes out. */
static void body_drop(veer_exchange_t *x, atomic_uint_fast64_t *reason)
{
    evbuffer_free(x->mirror_body);
    x->mirror_body = NULL;
    x->w->mirror_count--;
    count(reason);
}

void veer_mirror_body(veer_exchange_t *x, const char *data, size_t len)
{
    /* x->req_body_bytes already counts this piece: the total, chunked or not */
    if (x->req_body_bytes > VEER_MIRROR_MAX_BODY_BYTES) {
        body_drop(x, &x->w->stats.mirror_dropped_body_too_large);
        return;
    }
    if (evbuffer_add(x->mirror_body, data, len) != 0)
        body_drop(x, &x->w->stats.mirror_dropped_cap); /* out of memory */
}

void veer_mirror_body_end(veer_exchange_t *x)
{
    struct evbuffer *body = x->mirror_body;
    x->mirror_body = NULL;
    int32_t target = mirror_target(x); /* x's snapshot: the same as at veer_mirror_maybe */
    if (target >= 0) {
        mirror_send(x, target, body);
    } else {
        x->w->mirror_count--;
        count(&x->w->stats.mirror_dropped_no_endpoint);
    }
    evbuffer_free(body);
}

void veer_mirror_body_abandon(veer_exchange_t *x)
{
    body_drop(x, &x->w->stats.mirror_dropped_incomplete);
}

void veer_mirror_worker_free(veer_worker_t *w)
{
    while (w->mirrors != NULL)
        mirror_free(w->mirrors);
}
