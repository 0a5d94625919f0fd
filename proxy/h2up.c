/* h2up.c - HTTP/2 client side (see h2up.h): nghttp2 client sessions over
 * veer_sock_t (mem_recv from sock.in, mem_send into sock.out), grouped per
 * worker by endpoint, each group with a bounded FIFO of requests waiting for
 * a stream slot.
 *
 * Re-entrancy: the exchange is called from this module's socket, timer and
 * deferred events (nghttp2 callbacks included), never from a function the
 * exchange itself called; what such a function learns is reported through the
 * pool's deferred event. A stream submitted to nghttp2 belongs to its
 * connection and is freed when nghttp2 closes it (or the connection goes),
 * so an exchange letting go never frees memory nghttp2 still calls back with. */
#include "h2up.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "breaker.h"
#include "exchange.h"
#include "headers.h"
#include "log.h"
#include "resilience.h"
#include "runtime.h"
#include "sock.h"
#include "tls.h"
#include "worker.h"

/* An unprocessed request goes out again at most this often after GOAWAYs (a
 * server may take only a few streams per connection: the route timeout still
 * bounds the time), and once after a REFUSED_STREAM reset. */
#define H2UP_MAX_GOAWAY_RESENDS 8
#define H2UP_MAX_RESP_FIELDS 256   /* response header + trailer fields of one stream */
#define H2UP_CONN_WINDOW_STREAMS 16 /* connection window in stream windows: it is given back at once */

typedef struct h2up_conn_s h2up_conn_t;
typedef struct h2up_group_s h2up_group_t;
typedef TAILQ_HEAD(h2up_stream_list_s, veer_h2up_stream_s) h2up_stream_list_t;

struct veer_h2up_stream_s {
    veer_exchange_t *x;       /* NULL once the exchange let go */
    h2up_group_t *g;
    h2up_conn_t *c;           /* NULL while pending, or failed and waiting to be reported */
    const h2up_conn_t *avoid; /* after a refusal: the connection to use last (compared, never followed) */
    int32_t id;
    int status;               /* :status of the head being received */
    int64_t content_length;   /* of the response, -1 when absent */
    struct evbuffer *body;    /* request body not yet handed to nghttp2 (and, while replayable, what was) */
    size_t sent;              /* replayable: bytes at the front of body already handed to nghttp2 */
    size_t unconsumed;        /* response bytes not yet given back to the stream window (paused) */
    veer_breaker_t *pending_slot; /* the cluster breaker whose max_pending_requests slot it holds */
    uint32_t fields;          /* response header and trailer fields so far */
    uint8_t goaway_resends;
    veer_fail_t fail;         /* to report from the deferred event */
    TAILQ_ENTRY(veer_h2up_stream_s) link;        /* g->pending or c->streams */
    TAILQ_ENTRY(veer_h2up_stream_s) notify_link; /* pool->notify */
    unsigned has_body : 1, req_end : 1, end_sent : 1, deferred : 1, replayable : 1, paused : 1, want_drain : 1,
        drained : 1, head_done : 1, resp_end : 1, pending : 1, in_notify : 1, refused_once : 1, bad_head : 1,
        dirty : 1;
};

struct h2up_conn_s {
    veer_sock_t sock;
    nghttp2_session *ng;
    h2up_group_t *g;
    struct event timer;         /* connect until the first SETTINGS, then idle */
    h2up_stream_list_t streams; /* submitted and not closed */
    h2up_conn_t *next;
    uint32_t active;            /* streams on the list */
    uint32_t limit;             /* max_streams_per_connection when it opened */
    int32_t goaway_last;        /* the peer's GOAWAY last-stream-id */
    veer_fail_t fail_why;       /* dead: what its streams are told */
    char cluster[72];           /* for logs */
    unsigned connected : 1, ready : 1, goaway : 1, dead : 1, in_ng : 1, sending : 1, send_again : 1,
        idle : 1;
};

struct h2up_group_s {
    veer_h2up_pool_t *pool;
    veer_endpoint_t *ep;        /* referenced */
    SSL_CTX *tls;               /* key with ep; NULL for h2c */
    h2up_conn_t *conns;
    h2up_stream_list_t pending;
    uint32_t pending_count;
    /* from the cluster config of the latest request */
    uint32_t max_conns, max_pending, max_streams;
    uint64_t connect_timeout_ms;
    size_t buffer_bytes;
    h2up_group_t *next;
    unsigned dispatch_due : 1;
};

struct veer_h2up_pool_s {
    veer_worker_t *w;
    h2up_group_t *groups;
    h2up_stream_list_t notify;
    struct event kick;          /* deferred work: notifications, dispatch, dead connections */
    struct evbuffer *scratch;   /* response DATA on its way to the exchange */
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    nghttp2_nv *nva;            /* request head being submitted */
    size_t nva_cap;
    unsigned kicked : 1;
};

static void conn_send(h2up_conn_t *c);
static void conn_fail_now(h2up_conn_t *c, veer_fail_t why);
static int nva_reserve(veer_h2up_pool_t *p, size_t n);

/* ---- small helpers ---- */

static void pool_kick(veer_h2up_pool_t *p)
{
    if (!p->kicked) {
        p->kicked = 1;
        event_active(&p->kick, 0, 0);
    }
}

static void stream_notify(veer_h2up_stream_t *s)
{
    veer_h2up_pool_t *p = s->g->pool;
    if (!s->in_notify) {
        s->in_notify = 1;
        TAILQ_INSERT_TAIL(&p->notify, s, notify_link);
    }
    pool_kick(p);
}

static void stream_free(veer_h2up_stream_t *s)
{
    if (s->in_notify)
        TAILQ_REMOVE(&s->g->pool->notify, s, notify_link);
    evbuffer_free(s->body);
    free(s);
}

static void pending_remove(veer_h2up_stream_t *s)
{
    TAILQ_REMOVE(&s->g->pending, s, link);
    s->pending = 0;
    s->g->pending_count--;
    if (s->pending_slot != NULL) {
        veer_breaker_release(s->pending_slot, VEER_BREAKER_PENDING);
        s->pending_slot = NULL;
    }
}

/* Take s off its connection (nghttp2 is done with it or never saw it). */
static void stream_unlink(veer_h2up_stream_t *s)
{
    h2up_conn_t *c = s->c;
    TAILQ_REMOVE(&c->streams, s, link);
    c->active--;
    s->c = NULL;
    c->g->dispatch_due = 1; /* a slot freed */
    pool_kick(c->g->pool);
}

static bool conn_usable(const h2up_conn_t *c)
{
    return !c->dead && !c->goaway;
}

static uint32_t conn_room(const h2up_conn_t *c)
{
    uint32_t peer = nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    uint32_t limit = c->limit < peer ? c->limit : peer;
    return c->active < limit ? limit - c->active : 0;
}

static uint32_t group_usable(const h2up_group_t *g)
{
    uint32_t n = 0;
    for (const h2up_conn_t *c = g->conns; c != NULL; c = c->next)
        n += conn_usable(c);
    return n;
}

/* The ready connection with the most free stream slots; the avoided one only
 * when no other connection may be opened. */
static h2up_conn_t *pick_conn(h2up_group_t *g, const h2up_conn_t *avoid)
{
    h2up_conn_t *best = NULL, *avoided = NULL;
    uint32_t best_room = 0;
    for (h2up_conn_t *c = g->conns; c != NULL; c = c->next) {
        if (!c->ready || !conn_usable(c))
            continue;
        uint32_t room = conn_room(c);
        if (room == 0)
            continue;
        if (c == avoid)
            avoided = c;
        else if (room > best_room) {
            best = c;
            best_room = room;
        }
    }
    if (best == NULL && avoided != NULL && group_usable(g) >= g->max_conns)
        best = avoided;
    return best;
}

/* ---- nghttp2 callbacks ---- */

static veer_h2up_stream_t *stream_of(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

/* Request body for nghttp2: deferred while the downstream has sent nothing
 * more, resumed by veer_h2up_send_body/send_end. */
static ssize_t read_body_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *data_flags,
                            nghttp2_data_source *source, void *user_data)
{
    veer_h2up_stream_t *s = stream_of(ng, id);
    if (s == NULL || s->x == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* cancelled: the RST_STREAM is queued */
    size_t avail = evbuffer_get_length(s->body) - s->sent;
    size_t n = avail < length ? avail : length;
    if (n == 0 && !s->req_end) {
        s->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (s->replayable) {
        struct evbuffer_ptr at;
        evbuffer_ptr_set(s->body, &at, s->sent, EVBUFFER_PTR_SET);
        evbuffer_copyout_from(s->body, &at, buf, n);
        s->sent += n;
        if (s->sent > s->g->buffer_bytes) { /* too much to keep for a resend */
            evbuffer_drain(s->body, s->sent);
            s->sent = 0;
            s->replayable = 0;
        }
    } else {
        evbuffer_remove(s->body, buf, n);
    }
    if (n == avail && s->req_end) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        s->end_sent = 1;
        const veer_req_t *r = &s->x->req;
        if (r->trailer_count > 0) {
            if (nva_reserve(s->g->pool, r->trailer_count) < 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* out of memory: reset the stream */
            nghttp2_nv *nva = s->g->pool->nva;
            size_t k = 0;
            for (uint32_t i = 0; i < r->trailer_count; i++) {
                const veer_header_t *h = &r->trailers[i];
                if (h->name.len == 0 || h->name.base[0] == ':' || veer_header_is_hop_by_hop(h->name))
                    continue;
                nva[k++] = (nghttp2_nv){(uint8_t *)h->name.base, (uint8_t *)h->value.base, h->name.len,
                                        h->value.len, NGHTTP2_NV_FLAG_NONE};
            }
            if (k > 0 && nghttp2_submit_trailer(ng, id, nva, k) == 0)
                *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
    }
    if (s->want_drain && evbuffer_get_length(s->body) - s->sent <= s->g->buffer_bytes / 2) {
        s->want_drain = 0;
        s->drained = 1;
        stream_notify(s);
    }
    return (ssize_t)n;
}

static int add_field(veer_exchange_t *x, bool trailer, const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen)
{
    char *n = veer_arena_memdup(&x->arena, name, namelen);
    char *v = veer_arena_memdup(&x->arena, value, valuelen);
    if (n == NULL || v == NULL)
        return -1;
    veer_iov_t in = {n, namelen}, iv = {v, valuelen};
    veer_resp_t *r = &x->resp;
    return trailer ? veer_exchange_add_header(x, &r->trailers, &r->trailer_count, &r->trailer_cap, in, iv)
                   : veer_exchange_add_header(x, &r->headers, &r->header_count, &r->header_cap, in, iv);
}

static int on_header_cb(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    veer_h2up_stream_t *s = stream_of(ng, frame->hd.stream_id);
    if (s == NULL || s->x == NULL)
        return 0;
    if (namelen > 0 && name[0] == ':') {
        if (namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen == 3 && !s->head_done)
            s->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
        return 0; /* nghttp2 checked the pseudo-header set */
    }
    if (++s->fields > H2UP_MAX_RESP_FIELDS)
        goto too_large;
    if (!s->head_done && namelen == 14 && memcmp(name, "content-length", 14) == 0) {
        /* framing is re-derived by the downstream codec; nghttp2 validated the digits */
        int64_t v = 0;
        for (size_t i = 0; i < valuelen && v < ((int64_t)1 << 52); i++)
            v = v * 10 + (value[i] - '0');
        s->content_length = v;
        return 0;
    }
    if (add_field(s->x, s->head_done, name, namelen, value, valuelen) < 0)
        goto too_large;
    return 0;
too_large:
    veer_log_warn("upstream %s: response headers over the limit (%u fields or the arena), stream reset",
                  s->g->ep->name, H2UP_MAX_RESP_FIELDS);
    s->bad_head = 1;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* nghttp2 resets the stream */
}

/* The final response head arrived: hand it to the exchange. */
static void resp_head(veer_h2up_stream_t *s, bool end_stream)
{
    veer_exchange_t *x = s->x;
    veer_resp_t *r = &x->resp;
    bool head = veer_iov_eq(x->req.method, "HEAD", 4);
    r->status = s->status;
    r->has_body = !head && s->status != 204 && s->status != 304 && !end_stream;
    r->content_length = s->content_length;
    if (end_stream && !head) /* a body-less response (gRPC trailers-only): empty, ends with the head */
        r->content_length = s->status == 204 || s->status == 304 ? -1 : 0;
    else if (!r->has_body && !head)
        r->content_length = -1;
    s->head_done = 1;
    x->up_bytes_seen = 1;
    veer_exchange_on_resp_head(x);
}

static int on_frame_recv_cb(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    h2up_conn_t *c = user_data;
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && !c->ready) {
            c->ready = 1;
            event_del(&c->timer); /* the connect timeout covered TCP, TLS and the peer's SETTINGS */
        }
        c->g->dispatch_due = 1; /* the stream limit may have moved */
        pool_kick(c->g->pool);
        return 0;
    case NGHTTP2_GOAWAY:
        /* nghttp2 closes the streams above last_stream_id with REFUSED_STREAM
         * right after this: they are sent again elsewhere. */
        c->goaway = 1;
        c->goaway_last = frame->goaway.last_stream_id;
        c->g->dispatch_due = 1;
        pool_kick(c->g->pool);
        return 0;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        break;
    default:
        return 0;
    }
    veer_h2up_stream_t *s = stream_of(ng, frame->hd.stream_id);
    if (s == NULL || s->x == NULL)
        return 0;
    bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS && !s->head_done) {
        if (s->status >= 100 && s->status < 200 && !end) {
            s->x->resp.header_count = 0; /* interim: not forwarded (veer answers Expect itself) */
            s->fields = 0;
            s->status = 0;
            return 0;
        }
        resp_head(s, end);
    }
    if (end && s->x != NULL) {
        s->resp_end = 1;
        veer_exchange_on_resp_end(s->x);
    }
    return 0;
}

static int on_data_chunk_recv_cb(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                                 void *user_data)
{
    h2up_conn_t *c = user_data;
    /* The connection window goes back at once: one slow stream must not stall
     * the others. The stream window waits for the downstream. */
    nghttp2_session_consume_connection(ng, len);
    veer_h2up_stream_t *s = stream_of(ng, id);
    if (s == NULL || s->x == NULL || !s->head_done) {
        nghttp2_session_consume_stream(ng, id, len);
        return 0;
    }
    struct evbuffer *buf = c->g->pool->scratch;
    evbuffer_add(buf, data, len);
    s->dirty = 1;
    veer_exchange_on_resp_body(s->x, buf);
    evbuffer_drain(buf, evbuffer_get_length(buf));
    if (s->paused && s->x != NULL)
        s->unconsumed += len;
    else
        nghttp2_session_consume_stream(ng, id, len);
    return 0;
}

/* A request the peer provably did not process goes back to the front of the
 * FIFO. False when it may not be sent again. */
static bool stream_resend(veer_h2up_stream_t *s, const h2up_conn_t *from, bool goaway)
{
    if (s->x == NULL || s->head_done || !s->replayable)
        return false;
    if (goaway ? s->goaway_resends >= H2UP_MAX_GOAWAY_RESENDS : s->refused_once)
        return false;
    const veer_retry_config_t *retry = &s->x->ws->snap->config->routes[s->x->route].retry;
    if (!goaway && !(retry->on & VEER_RETRY_ON_REFUSED_STREAM))
        return false; /* the route said no (a GOAWAY'd stream never reached the application: always) */
    h2up_group_t *g = s->g;
    s->goaway_resends += goaway;
    s->refused_once |= !goaway;
    s->avoid = goaway ? NULL : from;
    s->id = -1;
    s->sent = 0;
    s->deferred = s->end_sent = 0;
    s->status = 0;
    s->fields = 0;
    s->content_length = -1;
    s->x->resp.header_count = 0;
    s->x->resp.trailer_count = 0;
    s->x->retried = 1; /* this was the exchange's retry: a failure now is final */
    TAILQ_INSERT_HEAD(&g->pending, s, link);
    s->pending = 1;
    g->pending_count++;
    g->dispatch_due = 1;
    pool_kick(g->pool);
    atomic_fetch_add_explicit(&g->pool->w->stats.upstream_h2_resends, 1, memory_order_relaxed);
    return true;
}

static int on_stream_close_cb(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user_data)
{
    h2up_conn_t *c = user_data;
    veer_h2up_stream_t *s = stream_of(ng, id);
    if (s == NULL || s->c != c)
        return 0;
    stream_unlink(s);
    veer_exchange_t *x = s->x;
    if (x == NULL) {
        stream_free(s);
        return 0;
    }
    if (error_code == NGHTTP2_REFUSED_STREAM && stream_resend(s, c, c->goaway && id > c->goaway_last))
        return 0;
    veer_fail_t why = s->bad_head || error_code == NGHTTP2_PROTOCOL_ERROR ? VEER_FAIL_PROTOCOL : VEER_FAIL_RESET;
    veer_exchange_on_upstream_fail(x, why); /* releases s (and may retry on a new stream) */
    return 0;
}

/* A request HEADERS that never went out (GOAWAY came first, or cancelled):
 * the peer never saw the stream, so it may go out again. */
static int on_frame_not_send_cb(nghttp2_session *ng, const nghttp2_frame *frame, int lib_error_code,
                                void *user_data)
{
    h2up_conn_t *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (lib_error_code == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED)
        c->goaway = 1;
    veer_h2up_stream_t *s;
    TAILQ_FOREACH(s, &c->streams, link)
        if (s->id == frame->hd.stream_id)
            break;
    if (s == NULL)
        return 0;
    stream_unlink(s);
    if (s->x == NULL) {
        stream_free(s);
        return 0;
    }
    if (!stream_resend(s, c, true)) {
        s->fail = VEER_FAIL_RESET;
        stream_notify(s);
    }
    return 0;
}

/* ---- connections ---- */

static void conn_on_read(veer_sock_t *sk, void *arg);
static void conn_on_eof(veer_sock_t *sk, void *arg, int err);
static void conn_on_drain(veer_sock_t *sk, void *arg);
static void conn_on_connect(veer_sock_t *sk, void *arg, int err);
static const veer_sock_cbs_t conn_cbs = {conn_on_read, conn_on_eof, conn_on_drain, conn_on_connect};

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);

/* Unlink and free. Streams still on it are detached from their exchanges
 * without a word: callers report them first (conn_fail_now). */
static void conn_destroy(h2up_conn_t *c)
{
    h2up_group_t *g = c->g;
    veer_worker_t *w = g->pool->w;
    for (h2up_conn_t **pp = &g->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    veer_h2up_stream_t *s;
    while ((s = TAILQ_FIRST(&c->streams)) != NULL) {
        TAILQ_REMOVE(&c->streams, s, link);
        if (s->x != NULL)
            s->x->h2s = NULL;
        stream_free(s);
    }
    event_del(&c->timer);
    if (c->ng != NULL && c->connected && !c->sock.failed && c->sock.fd >= 0) {
        /* best effort: tell the peer why the connection goes */
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        const uint8_t *data;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(c->ng, &data)) > 0)
            evbuffer_add(c->sock.out, data, (size_t)n);
        veer_sock_flush(&c->sock);
    }
    nghttp2_session_del(c->ng);
    veer_sock_close(&c->sock, false);
    veer_endpoint_slot_t *slot = &g->ep->slots[w->id];
    __atomic_store_n(&slot->connections, slot->connections - 1, __ATOMIC_RELAXED);
    free(c);
}

/* Mark for closing from the deferred event (never under a caller's feet). */
static void conn_retire(h2up_conn_t *c, veer_fail_t why)
{
    if (!c->dead) {
        c->dead = 1;
        c->fail_why = why;
    }
    pool_kick(c->g->pool);
}

/* Fail the requests waiting in g's FIFO (from the deferred event). */
static void group_fail_pending(h2up_group_t *g, veer_fail_t why)
{
    veer_h2up_stream_t *s;
    while ((s = TAILQ_FIRST(&g->pending)) != NULL) {
        pending_remove(s);
        s->fail = why;
        stream_notify(s);
    }
}

/* Tell every stream of c that it failed, close c, and see to the FIFO: a
 * connection that never became ready fails the requests waiting for it when
 * no other connection is left; otherwise they go to a new connection. Called
 * from events only (it calls the exchanges). */
static void conn_fail_now(h2up_conn_t *c, veer_fail_t why)
{
    h2up_group_t *g = c->g;
    bool was_ready = c->ready;
    c->dead = 1;
    veer_h2up_stream_t *s;
    while ((s = TAILQ_FIRST(&c->streams)) != NULL) {
        stream_unlink(s);
        if (s->x != NULL)
            veer_exchange_on_upstream_fail(s->x, why); /* releases s */
        else
            stream_free(s);
    }
    conn_destroy(c);
    if (!TAILQ_EMPTY(&g->pending)) {
        if (!was_ready && group_usable(g) == 0)
            group_fail_pending(g, VEER_FAIL_CONNECT);
        else
            g->dispatch_due = 1;
        pool_kick(g->pool);
    }
}

/* Write what the session has, up to limits.buffer_bytes in the socket's
 * output; on_drain continues. */
static void conn_send(h2up_conn_t *c)
{
    if (c->in_ng || c->sending) {
        c->send_again = 1;
        return;
    }
    if (c->dead || !c->connected)
        return;
    c->sending = 1;
    bool more;
    do {
        c->send_again = 0;
        more = false;
        c->in_ng = 1;
        for (;;) {
            if (evbuffer_get_length(c->sock.out) >= c->g->buffer_bytes) {
                more = true;
                break;
            }
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->ng, &data);
            if (n < 0) {
                c->in_ng = 0;
                c->sending = 0;
                veer_log_warn("upstream %s: HTTP/2 send: %s", c->g->ep->name, nghttp2_strerror((int)n));
                conn_retire(c, VEER_FAIL_RESET);
                return;
            }
            if (n == 0)
                break;
            evbuffer_add(c->sock.out, data, (size_t)n);
        }
        c->in_ng = 0;
        if (veer_sock_flush(&c->sock) < 0) {
            c->sending = 0;
            return; /* on_eof follows from the loop */
        }
    } while (c->send_again || (more && evbuffer_get_length(c->sock.out) == 0));
    if (evbuffer_get_length(c->sock.out) > 0)
        veer_sock_want_drain(&c->sock);
    c->sending = 0;
}

/* After I/O: close a connection nobody needs any more, or start its idle timer. */
static void conn_check(h2up_conn_t *c)
{
    if (c->dead)
        return;
    h2up_group_t *g = c->g;
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng)) {
        conn_retire(c, VEER_FAIL_RESET);
        return;
    }
    if (c->active > 0 || !c->ready)
        return;
    if (c->goaway || atomic_load_explicit(&g->ep->retired, memory_order_relaxed) || g->pool->w->draining) {
        conn_retire(c, VEER_FAIL_RESET);
        return;
    }
    if (!c->idle) {
        c->idle = 1;
        event_add(&c->timer, g->pool->w->idle_tv);
    }
}

static void conn_on_read(veer_sock_t *sk, void *arg)
{
    h2up_conn_t *c = arg;
    struct evbuffer *in = c->sock.in;
    if (c->dead) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    ssize_t rv = 0;
    c->in_ng = 1;
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        rv = nghttp2_session_mem_recv(c->ng, v.iov_base, v.iov_len);
        if (rv < 0)
            break;
        evbuffer_drain(in, v.iov_len);
    }
    /* Push what the responses produced to their clients, once per read. No
     * stream leaves the list meanwhile: nothing is sent while in_ng. */
    veer_h2up_stream_t *s, *next;
    for (s = TAILQ_FIRST(&c->streams); s != NULL; s = next) {
        next = TAILQ_NEXT(s, link);
        if (s->dirty) {
            s->dirty = 0;
            if (s->x != NULL)
                s->x->ds->flush(s->x->ds_ctx);
        }
    }
    c->in_ng = 0;
    if (rv < 0) {
        veer_log_warn("upstream %s: invalid HTTP/2 from the peer: %s", c->g->ep->name, nghttp2_strerror((int)rv));
        conn_fail_now(c, c->ready ? VEER_FAIL_PROTOCOL : VEER_FAIL_CONNECT);
        return;
    }
    conn_send(c);
    conn_check(c);
}

static void conn_on_eof(veer_sock_t *sk, void *arg, int err)
{
    h2up_conn_t *c = arg;
    if (!c->ready)
        veer_log_warn("upstream %s: HTTP/2 connection closed before SETTINGS%s%s", c->g->ep->name,
                      err ? ": " : "", err ? strerror(err) : "");
    conn_fail_now(c, c->ready ? VEER_FAIL_RESET : VEER_FAIL_CONNECT);
}

static void conn_on_drain(veer_sock_t *sk, void *arg)
{
    conn_send(arg);
}

static void conn_tls_failed(h2up_conn_t *c, veer_tls_fail_t kind, const char *reason)
{
    veer_tls_handshake_failed(c->g->pool->w, true, c->cluster, (const struct sockaddr *)&c->g->ep->addr, kind,
                              reason);
}

static void conn_on_connect(veer_sock_t *sk, void *arg, int err)
{
    h2up_conn_t *c = arg;
    if (err != 0) {
        if (sk->tls_fatal)
            conn_tls_failed(c, veer_sock_tls_fail_kind(sk), veer_sock_tls_error(sk));
        else
            veer_log_warn("upstream %s: connect: %s", c->g->ep->name, strerror(err));
        conn_fail_now(c, VEER_FAIL_CONNECT);
        return;
    }
    if (sk->ssl != NULL) {
        unsigned len;
        const char *alpn = veer_sock_alpn(sk, &len);
        if (alpn == NULL || len != 2 || memcmp(alpn, "h2", 2) != 0) {
            conn_tls_failed(c, VEER_TLS_FAIL_PROTOCOL, "the upstream did not select h2 by ALPN");
            conn_fail_now(c, VEER_FAIL_CONNECT);
            return;
        }
    }
    c->connected = 1;
    veer_sock_read_enable(&c->sock);
    conn_send(c); /* the connection preface and our SETTINGS */
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    h2up_conn_t *c = arg;
    if (!c->ready) {
        if (c->sock.ssl != NULL && c->sock.handshaking && !c->sock.connecting)
            conn_tls_failed(c, VEER_TLS_FAIL_TIMEOUT, "handshake not finished within connect_timeout");
        else
            veer_log_warn("upstream %s: HTTP/2 connection not ready within connect_timeout (%llu ms)",
                          c->g->ep->name, (unsigned long long)c->g->connect_timeout_ms);
        conn_fail_now(c, VEER_FAIL_CONNECT);
        return;
    }
    if (c->active == 0) /* idle timeout */
        conn_fail_now(c, VEER_FAIL_RESET);
}

static h2up_conn_t *conn_open(h2up_group_t *g, const veer_exchange_t *x)
{
    veer_h2up_pool_t *p = g->pool;
    veer_worker_t *w = p->w;
    veer_endpoint_t *ep = g->ep;
    h2up_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->g = g;
    c->limit = g->max_streams;
    TAILQ_INIT(&c->streams);
    snprintf(c->cluster, sizeof(c->cluster), "%s", x->ws->snap->config->clusters[x->cluster].name);
    if (veer_sock_connect(&c->sock, w->base, (const struct sockaddr *)&ep->addr, ep->addrlen, &conn_cbs, c) < 0) {
        veer_log_warn("upstream %s: connect: %s", ep->name, strerror(errno));
        free(c);
        return NULL;
    }
    if (g->tls != NULL && veer_tls_upstream_start_worker(&c->sock, x->ws->snap, x->cluster, ep, w->id) < 0) {
        veer_log_warn("upstream %s: cannot start TLS", ep->name);
        veer_sock_close(&c->sock, false);
        free(c);
        return NULL;
    }
    if (nghttp2_session_client_new2(&c->ng, p->cbs, c, p->opt) != 0) {
        veer_sock_close(&c->sock, false);
        free(c);
        return NULL;
    }
    uint32_t window = g->buffer_bytes < NGHTTP2_MAX_WINDOW_SIZE ? (uint32_t)g->buffer_bytes : NGHTTP2_MAX_WINDOW_SIZE;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window},
    };
    uint64_t conn_window = (uint64_t)window * H2UP_CONN_WINDOW_STREAMS;
    if (conn_window > NGHTTP2_MAX_WINDOW_SIZE)
        conn_window = NGHTTP2_MAX_WINDOW_SIZE;
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, (int32_t)conn_window);
    event_assign(&c->timer, w->base, -1, 0, conn_timer_cb, c);
    uint64_t ms = g->connect_timeout_ms ? g->connect_timeout_ms : 1000;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_add(&c->timer, &tv);
    c->next = g->conns;
    g->conns = c;
    veer_endpoint_slot_t *slot = &ep->slots[w->id];
    __atomic_store_n(&slot->connections, slot->connections + 1, __ATOMIC_RELAXED);
    atomic_fetch_add_explicit(&w->stats.upstream_cx_total, 1, memory_order_relaxed);
    return c;
}

/* Open another connection when requests wait, none is being opened and the
 * group is under connections_per_endpoint. -1 when one was due and could not
 * be started. */
static int group_grow(h2up_group_t *g, const veer_exchange_t *x)
{
    uint32_t usable = 0;
    for (const h2up_conn_t *c = g->conns; c != NULL; c = c->next) {
        if (!conn_usable(c))
            continue;
        if (!c->ready)
            return 0; /* the burst waits for it */
        usable++;
    }
    if (TAILQ_EMPTY(&g->pending) || usable >= g->max_conns)
        return 0;
    return conn_open(g, x) != NULL ? 0 : -1;
}

/* ---- streams ---- */

static int nva_reserve(veer_h2up_pool_t *p, size_t n)
{
    if (n <= p->nva_cap)
        return 0;
    nghttp2_nv *nva = realloc(p->nva, n * sizeof(*nva));
    if (nva == NULL)
        return -1;
    p->nva = nva;
    p->nva_cap = n;
    return 0;
}

#define NV(n, nl, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE})

/* Submit s's request on c (nghttp2 copies the head). */
static int submit(veer_h2up_stream_t *s, h2up_conn_t *c)
{
    veer_exchange_t *x = s->x;
    const veer_req_t *r = &x->req;
    veer_h2up_pool_t *p = c->g->pool;
    if (nva_reserve(p, r->header_count + 6) < 0)
        return -1;
    nghttp2_nv *nva = p->nva;
    size_t n = 0;
    veer_iov_t authority = r->authority.len > 0 ? r->authority : (veer_iov_t){c->g->ep->name, strlen(c->g->ep->name)};
    veer_iov_t scheme = c->g->tls != NULL ? VEER_IOV_LIT("https") : VEER_IOV_LIT("http");
    nva[n++] = NV(":method", 7, r->method.base, r->method.len);
    nva[n++] = NV(":scheme", 7, scheme.base, scheme.len);
    nva[n++] = NV(":authority", 10, authority.base, authority.len);
    nva[n++] = NV(":path", 5, r->path.base, r->path.len);
    bool grpc = false, has_length = false;
    for (uint32_t i = 0; i < r->header_count; i++) {
        const veer_header_t *h = &r->headers[i];
        if (h->name.len == 0 || h->name.base[0] == ':' || veer_header_is_hop_by_hop(h->name) ||
            veer_iov_eq(h->name, "host", 4))
            continue;
        if (veer_iov_eq(h->name, "content-length", 14))
            has_length = true;
        else if (veer_iov_eq(h->name, "content-type", 12) && h->value.len >= 16 &&
                 memcmp(h->value.base, "application/grpc", 16) == 0)
            grpc = true;
        nva[n++] = NV(h->name.base, h->name.len, h->value.base, h->value.len);
    }
    if (grpc) /* gRPC servers require it; TE is hop-by-hop, so no client's one came this far */
        nva[n++] = NV("te", 2, "trailers", 8);
    char length[24];
    if (s->has_body && r->content_length >= 0 && !has_length) {
        int len = snprintf(length, sizeof(length), "%lld", (long long)r->content_length);
        nva[n++] = NV("content-length", 14, length, (size_t)len);
    }
    nghttp2_data_provider body = {.source = {.ptr = NULL}, .read_callback = read_body_cb};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nva, n, s->has_body ? &body : NULL, s);
    if (id < 0) {
        veer_log_warn("upstream %s: cannot start a stream: %s", c->g->ep->name, nghttp2_strerror(id));
        c->goaway = 1; /* e.g. stream ids used up: no new streams here */
        return -1;
    }
    s->id = id;
    s->c = c;
    s->end_sent = !s->has_body;
    TAILQ_INSERT_TAIL(&c->streams, s, link);
    c->active++;
    if (c->idle) {
        c->idle = 0;
        event_del(&c->timer);
    }
    return 0;
}

/* Give waiting requests the free stream slots, in order; open a connection
 * when more are needed. From the deferred event. */
static void group_dispatch(h2up_group_t *g)
{
    g->dispatch_due = 0;
    veer_h2up_stream_t *s;
    while ((s = TAILQ_FIRST(&g->pending)) != NULL) {
        h2up_conn_t *c = pick_conn(g, s->avoid);
        if (c == NULL)
            break;
        pending_remove(s);
        if (submit(s, c) < 0) {
            TAILQ_INSERT_HEAD(&g->pending, s, link); /* c took no more streams; try the next one */
            s->pending = 1;
            g->pending_count++;
        }
    }
    for (h2up_conn_t *c = g->conns; c != NULL; c = c->next)
        if (c->ready && !c->dead)
            conn_send(c);
    s = TAILQ_FIRST(&g->pending);
    if (s != NULL && group_grow(g, s->x) < 0 && group_usable(g) == 0)
        group_fail_pending(g, VEER_FAIL_CONNECT);
}

static void group_free(h2up_group_t *g)
{
    veer_endpoint_unref(g->ep);
    free(g);
}

/* The deferred event: report to exchanges, close dead connections, hand free
 * slots to waiting requests, and let empty groups of retired endpoints go. */
static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_h2up_pool_t *p = arg;
    p->kicked = 0;
    veer_h2up_stream_t *s;
    while ((s = TAILQ_FIRST(&p->notify)) != NULL) {
        TAILQ_REMOVE(&p->notify, s, notify_link);
        s->in_notify = 0;
        veer_exchange_t *x = s->x;
        if (s->fail != VEER_FAIL_NONE) { /* a floating stream: no connection, not pending */
            if (x != NULL)
                veer_exchange_on_upstream_fail(x, s->fail); /* releases s */
            else
                stream_free(s);
        } else if (s->drained && x != NULL) {
            s->drained = 0;
            veer_exchange_on_upstream_drain(x);
        }
    }
    for (h2up_group_t *g = p->groups; g != NULL; g = g->next) {
        h2up_conn_t *c, *next;
        for (c = g->conns; c != NULL; c = next) {
            next = c->next;
            if (c->dead)
                conn_fail_now(c, c->fail_why);
        }
        if (g->dispatch_due)
            group_dispatch(g);
        for (c = g->conns; c != NULL; c = c->next)
            conn_check(c);
    }
    for (h2up_group_t **pp = &p->groups; *pp != NULL;) {
        h2up_group_t *g = *pp;
        if (g->conns == NULL && TAILQ_EMPTY(&g->pending) &&
            atomic_load_explicit(&g->ep->retired, memory_order_relaxed)) {
            *pp = g->next;
            group_free(g);
        } else {
            pp = &g->next;
        }
    }
}

/* ---- pool ---- */

static veer_h2up_pool_t *pool_get(veer_worker_t *w)
{
    if (w->h2up != NULL)
        return w->h2up;
    veer_h2up_pool_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->w = w;
    TAILQ_INIT(&p->notify);
    p->scratch = evbuffer_new();
    if (p->scratch == NULL || nghttp2_session_callbacks_new(&p->cbs) != 0 || nghttp2_option_new(&p->opt) != 0 ||
        nva_reserve(p, 64) < 0) {
        if (p->scratch != NULL)
            evbuffer_free(p->scratch);
        nghttp2_session_callbacks_del(p->cbs);
        nghttp2_option_del(p->opt);
        free(p->nva);
        free(p);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_header_callback(p->cbs, on_header_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(p->cbs, on_frame_recv_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(p->cbs, on_data_chunk_recv_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(p->cbs, on_stream_close_cb);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(p->cbs, on_frame_not_send_cb);
    /* Response DATA is given back to the peer when the downstream took it. */
    nghttp2_option_set_no_auto_window_update(p->opt, 1);
    event_assign(&p->kick, w->base, -1, 0, kick_cb, p);
    w->h2up = p;
    return p;
}

static h2up_group_t *group_get(veer_h2up_pool_t *p, veer_endpoint_t *ep, SSL_CTX *tls)
{
    for (h2up_group_t *g = p->groups; g != NULL; g = g->next)
        if (g->ep == ep && g->tls == tls)
            return g;
    h2up_group_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->pool = p;
    g->ep = ep;
    g->tls = tls;
    TAILQ_INIT(&g->pending);
    veer_endpoint_ref(ep);
    g->next = p->groups;
    p->groups = g;
    return g;
}

int veer_h2up_start(veer_exchange_t *x, const veer_cluster_config_t *cc)
{
    veer_h2up_pool_t *p = pool_get(x->w);
    if (p == NULL)
        return -1;
    SSL_CTX *tls = NULL;
    if (cc->protocol == VEER_PROTO_H2 && (tls = veer_tls_cluster_ctx(x->ws->snap, x->cluster)) == NULL) {
        veer_log_error("cluster %s: protocol h2 but no TLS context was built", cc->name);
        return -1;
    }
    h2up_group_t *g = group_get(p, x->ep, tls);
    if (g == NULL)
        return -1;
    const veer_config_t *cfg = x->ws->snap->config;
    g->max_conns = cc->connections_per_endpoint;
    g->max_pending = cc->circuit_breakers.max_pending_requests;
    g->max_streams = cc->max_streams_per_connection;
    g->connect_timeout_ms = cc->connect_timeout_ms;
    g->buffer_bytes = cfg->limits.buffer_bytes;
    veer_h2up_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->body = evbuffer_new()) == NULL) {
        free(s);
        return -1;
    }
    s->x = x;
    s->g = g;
    s->id = -1;
    s->content_length = -1;
    s->replayable = 1;
    s->has_body = x->req.has_body;
    h2up_conn_t *c = TAILQ_EMPTY(&g->pending) ? pick_conn(g, NULL) : NULL;
    if (c != NULL && submit(s, c) == 0) {
        x->h2s = s;
        return 0;
    }
    /* max_pending_requests: the cluster's process-wide count (the breaker);
     * this FIFO's own bound when the cluster has no breaker entry */
    if (x->resil != NULL ? veer_breaker_try_acquire(&x->resil->breaker, VEER_BREAKER_PENDING) != 0
                         : g->pending_count >= g->max_pending) {
        if (group_usable(g) == 0)
            conn_open(g, x); /* so that later requests find a connection */
        stream_free(s);
        atomic_fetch_add_explicit(&x->w->stats.upstream_pending_overflow, 1, memory_order_relaxed);
        return VEER_H2UP_EOVERFLOW;
    }
    s->pending_slot = x->resil != NULL ? &x->resil->breaker : NULL;
    TAILQ_INSERT_TAIL(&g->pending, s, link);
    s->pending = 1;
    g->pending_count++;
    if (group_grow(g, x) < 0 && group_usable(g) == 0) {
        pending_remove(s);
        stream_free(s);
        return -1;
    }
    x->h2s = s;
    return 0;
}

/* A deferred DATA source has something to say again. */
static void stream_resume(veer_h2up_stream_t *s)
{
    if (s->deferred && s->c != NULL) {
        s->deferred = 0;
        nghttp2_session_resume_data(s->c->ng, s->id);
    }
}

void veer_h2up_send_body(veer_h2up_stream_t *s, const char *data, size_t len)
{
    if (len == 0 || s->req_end)
        return;
    evbuffer_add(s->body, data, len);
    stream_resume(s);
}

void veer_h2up_send_end(veer_h2up_stream_t *s)
{
    if (s->req_end)
        return;
    s->req_end = 1;
    stream_resume(s);
}

void veer_h2up_flush(veer_h2up_stream_t *s)
{
    if (s->c != NULL)
        conn_send(s->c);
}

bool veer_h2up_congested(const veer_h2up_stream_t *s)
{
    return evbuffer_get_length(s->body) - s->sent > s->g->buffer_bytes;
}

void veer_h2up_want_drain(veer_h2up_stream_t *s)
{
    s->want_drain = 1;
}

void veer_h2up_pause_read(veer_h2up_stream_t *s)
{
    s->paused = 1;
}

void veer_h2up_resume_read(veer_h2up_stream_t *s)
{
    s->paused = 0;
    if (s->c != NULL && s->unconsumed > 0) {
        nghttp2_session_consume_stream(s->c->ng, s->id, s->unconsumed);
        s->unconsumed = 0;
        conn_send(s->c); /* the WINDOW_UPDATE */
    }
}

void veer_h2up_release(veer_h2up_stream_t *s)
{
    s->x = NULL;
    if (s->pending) {
        pending_remove(s);
        stream_free(s);
        return;
    }
    h2up_conn_t *c = s->c;
    if (c == NULL) { /* failed, waiting to be reported */
        stream_free(s);
        return;
    }
    if (s->in_notify) {
        TAILQ_REMOVE(&s->g->pool->notify, s, notify_link);
        s->in_notify = 0;
    }
    /* Freed when nghttp2 closes the stream. After a complete response the
     * rest of the request is not wanted (RFC 9113 §8.1: NO_ERROR). */
    if (!(s->resp_end && s->end_sent))
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, s->resp_end ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL);
    conn_send(c);
}

void veer_h2up_close_idle(veer_worker_t *w, veer_endpoint_t *ep)
{
    veer_h2up_pool_t *p = w->h2up;
    if (p == NULL)
        return;
    for (h2up_group_t *g = p->groups; g != NULL; g = g->next)
        if (g->ep == ep)
            for (h2up_conn_t *c = g->conns; c != NULL; c = c->next)
                if (c->active == 0 && c->ready) /* one still connecting has requests waiting for it */
                    conn_retire(c, VEER_FAIL_RESET);
}

void veer_h2up_pool_free(veer_worker_t *w)
{
    veer_h2up_pool_t *p = w->h2up;
    if (p == NULL)
        return;
    while (p->groups != NULL) {
        h2up_group_t *g = p->groups;
        p->groups = g->next;
        while (g->conns != NULL)
            conn_destroy(g->conns);
        veer_h2up_stream_t *s;
        while ((s = TAILQ_FIRST(&g->pending)) != NULL) {
            pending_remove(s);
            if (s->x != NULL)
                s->x->h2s = NULL;
            stream_free(s);
        }
        group_free(g);
    }
    veer_h2up_stream_t *s;
    while ((s = TAILQ_FIRST(&p->notify)) != NULL) { /* floating streams of failed requests */
        if (s->x != NULL)
            s->x->h2s = NULL;
        stream_free(s);
    }
    event_del(&p->kick);
    evbuffer_free(p->scratch);
    nghttp2_session_callbacks_del(p->cbs);
    nghttp2_option_del(p->opt);
    free(p->nva);
    free(p);
    w->h2up = NULL;
}
