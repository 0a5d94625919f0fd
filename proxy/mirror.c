/* mirror.c - shadow copies of requests for a canary run's mirrored phase:
 * one short-lived HTTP/1.1 connection per copy (connection: close), so a
 * mirror never holds a pooled connection, a breaker slot or a retry of the
 * primary; the copy's outcome is recorded into the canary cluster's stats. */
#include "mirror.h"

#include <event2/bufferevent.h>
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "headers.h"
#include "log.h"
#include "runtime.h"
#include "stats.h"

typedef struct veer_mirror_s {
    veer_worker_t *w;
    veer_snapshot_t *snap; /* referenced: the stats layout the outcome goes to */
    veer_endpoint_t *ep;   /* referenced */
    int route, cluster;
    struct bufferevent *bev;
    struct event timer;
    llhttp_t parser;
    uint64_t start_us, connect_us, head_us;
    bool connected, complete;
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
    if (m->bev != NULL)
        bufferevent_free(m->bev);
    veer_endpoint_unref(m->ep);
    veer_snapshot_release(m->snap);
    free(m);
}

/* The copy ended: its status (0: none) and failure go to the canary
 * cluster's series of the route, exactly as a user request would. */
static void mirror_done(veer_mirror_t *m, veer_stats_fail_t fail)
{
    int status = (int)llhttp_get_status_code(&m->parser);
    if (!m->complete && fail == VEER_STATS_FAIL_NONE)
        fail = VEER_STATS_FAIL_RESET;
    if (fail == VEER_STATS_FAIL_NONE && status >= 500)
        fail = VEER_STATS_FAIL_5XX;
    if (!m->head_us)
        status = 0;
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

static void read_cb(struct bufferevent *bev, void *arg)
{
    veer_mirror_t *m = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len;
    while ((len = evbuffer_get_length(in)) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        llhttp_errno_t e = llhttp_execute(&m->parser, v.iov_base, v.iov_len);
        evbuffer_drain(in, v.iov_len); /* the body is discarded */
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

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    veer_mirror_t *m = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        m->connected = true;
        m->connect_us = now_us() - m->start_us;
        return;
    }
    if (!m->connected) {
        mirror_done(m, VEER_STATS_FAIL_CONNECT);
        return;
    }
    if ((what & BEV_EVENT_EOF) && !m->complete && llhttp_finish(&m->parser) == HPE_OK && m->head_us)
        m->complete = true; /* a body delimited by the close */
    mirror_done(m, VEER_STATS_FAIL_NONE);
}

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

/* The cluster x's route mirrors to, or -1. */
static int32_t mirror_target(const veer_exchange_t *x)
{
    const veer_snapshot_t *snap = x->ws->snap;
    int32_t target = snap->routes[x->route].mirror - 1;
    if (target < 0 || target == x->cluster || (size_t)target >= snap->config->cluster_count)
        return -1;
    return target;
}

/* Send the copy of x to an endpoint of target, with body (NULL: none; its
 * content moves into the copy's output, the caller frees the empty
 * buffer). The caller reserved the copy's slot of the cap (mirror_count):
 * it is released here on failure, by mirror_free otherwise. */
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
    llhttp_init(&m->parser, HTTP_RESPONSE, &resp_settings);
    m->parser.data = m;
    /* deferred callbacks: a connect that fails at once reports through event_cb, not inside this call */
    m->bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    int64_t body_len = body != NULL ? (int64_t)evbuffer_get_length(body) : -1;
    if (m->bev == NULL || write_head(bufferevent_get_output(m->bev), &x->req, body_len) != 0 ||
        (body != NULL && evbuffer_add_buffer(bufferevent_get_output(m->bev), body) != 0)) {
        if (m->bev != NULL)
            bufferevent_free(m->bev);
        free(m);
        w->mirror_count--;
        count(&w->stats.mirror_dropped_cap);
        return;
    }
    atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
    m->snap = snap;
    veer_endpoint_ref(ep);
    m->ep = ep;
    m->next = w->mirrors;
    if (w->mirrors != NULL)
        w->mirrors->prev = m;
    w->mirrors = m;
    evtimer_assign(&m->timer, w->base, timeout_cb, m);
    uint64_t ms = snap->config->routes[x->route].timeout_ms;
    if (ms > 0) {
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        evtimer_add(&m->timer, &tv);
    }
    bufferevent_setcb(m->bev, read_cb, NULL, event_cb, m);
    count(&w->stats.mirror_requests);
    if (bufferevent_enable(m->bev, EV_READ | EV_WRITE) != 0) {
        mirror_done(m, VEER_STATS_FAIL_CONNECT);
        return;
    }
    /* a failure here is reported to event_cb (deferred) as BEV_EVENT_ERROR */
    (void)bufferevent_socket_connect(m->bev, (struct sockaddr *)&ep->addr, (int)ep->addrlen);
}

void veer_mirror_maybe(veer_exchange_t *x)
{
    int32_t target = mirror_target(x);
    veer_worker_t *w = x->w;
    if (target < 0)
        return;
    const veer_cluster_config_t *cc = &x->ws->snap->config->clusters[target];
    if (cc->tls != NULL || cc->protocol != VEER_PROTO_HTTP1) {
        count(&w->stats.mirror_dropped_protocol); /* copies are plain HTTP/1.1 */
        return;
    }
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
