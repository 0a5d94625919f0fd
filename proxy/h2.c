/* h2.c - HTTP/2 downstream codec (see h2.h): an nghttp2 server session fed
 * from the socket's input and drained into its output, one exchange per
 * stream, with flow control tied to the upstream and budgets against floods. */
#include "h2.h"

#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "exchange.h"
#include "headers.h"
#include "log.h"

#define H2_MAX_HEADERS 256         /* fields per request head, as for HTTP/1.1 */
#define H2_BLOCK_SLACK 4096        /* HPACK bytes of a header block above max_header_list_size */
#define H2_GOAWAY_DELAY_MS 1000    /* drain: final GOAWAY at the latest this long after the notice */
static const uint8_t drain_ping[8] = {'v', 'e', 'e', 'r', 'd', 'r', 'n', '1'};

/* Exchanges are freed only in on_stream_close (or with the whole
 * connection), and nghttp2 is fed and drained only from loop callbacks
 * (h2_on_read, send_cb), never from inside an exchange's call into the ds
 * ops: so no exchange is freed under its own feet. The connection itself is
 * freed only at the end of a loop callback. */

typedef struct h2stream_s {
    veer_h2conn_t *c;
    veer_exchange_t *x;
    int32_t id;
    struct evbuffer *out;           /* response body waiting for the data provider */
    struct h2stream_s *prev, *next; /* the connection's open streams */
    struct h2stream_s *flush_next;  /* on c->flush_list: request body written this read */
    uint64_t body_bytes;            /* request body received */
    size_t head_bytes;              /* decoded request head, as SETTINGS_MAX_HEADER_LIST_SIZE counts */
    size_t unconsumed;              /* request body not yet given back to the client's window */
    char *cookie;
    size_t cookie_len;
    veer_iov_t host;
    int64_t content_length;
    char status[4], clen[24];
    unsigned has_host : 1, host_conflict : 1, rejected : 1, too_large : 1, started : 1, req_ended : 1,
        in_trailers : 1, req_paused : 1, deferred : 1, resp_eof : 1, resp_head : 1, want_drain : 1,
        on_flush_list : 1, reset_sent : 1, expect_bad : 1, body_discard : 1;
} h2stream_t;

struct veer_h2conn_s {
    veer_sock_t sock;
    veer_worker_t *w;
    nghttp2_session *session;
    int listener;
    bool tls;
    struct sockaddr_storage peer;
    veer_http2_limits_t lim; /* the config's when the connection began */
    uint64_t buffer_bytes, max_body_bytes, goaway_delay_ms;
    h2stream_t *streams;
    uint32_t stream_count, drain_waiters;
    h2stream_t *flush_list;
    struct event send_ev;      /* write what nghttp2 has, from the loop */
    struct event timer;        /* idle (no streams) or stalled reader */
    struct event header_timer; /* a header block left incomplete */
    struct event goaway_timer; /* drain: the final GOAWAY */
    veer_h2conn_t *prev, *next;
    veer_h2_framer_t framer;
    uint32_t header_timer_block; /* framer.blocks when the header timer was armed */
    veer_h2_bucket_t resets;
    veer_h2_window_t settings_win, ping_win, empty_win, priority_win;
    uint32_t block_frames;     /* CONTINUATION frames of the header block being received */
    uint64_t block_bytes;      /* its HPACK bytes so far */
    uint64_t now_ms;
    uint64_t frames_seen, frames_at_tick;    /* frames that move requests along (not PING & co) */
    uint64_t out_queued, written_at_tick;    /* bytes put in sock.out; written = queued - still there */
    unsigned dead : 1,         /* no more nghttp2 calls: flush what is written, then close */
        draining : 1, goaway_final : 1, send_scheduled : 1, input_pending : 1, read_paused : 1,
        header_timer_on : 1;
};

static const veer_ds_ops_t h2_ds_ops;
static void h2_on_read(veer_sock_t *s, void *arg);
static void h2_on_eof(veer_sock_t *s, void *arg, int err);
static void h2_on_drain(veer_sock_t *s, void *arg);
static const veer_sock_cbs_t h2_sock_cbs = {h2_on_read, h2_on_eof, h2_on_drain, NULL};
static void do_send(veer_h2conn_t *c);
static void conn_close(veer_h2conn_t *c, bool rst);

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *peer_str(const veer_h2conn_t *c, char *buf, size_t len)
{
    const struct sockaddr *sa = (const struct sockaddr *)&c->peer;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)len);
    else
        snprintf(buf, len, "unknown");
    return buf;
}

static void stat_inc(atomic_uint_fast64_t *counter)
{
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

static void schedule_send(veer_h2conn_t *c)
{
    if (!c->send_scheduled) {
        c->send_scheduled = 1;
        event_active(&c->send_ev, 0, 0);
    }
}

/* A GOAWAY written by hand: used once the session is given up (a flood,
 * a fatal nghttp2 error), when nghttp2 is no longer driven. Everything
 * nghttp2 produced before went out whole, so frame boundaries hold. */
static void write_goaway(veer_h2conn_t *c, uint32_t error_code)
{
    if (c->sock.out == NULL)
        return;
    int32_t last = nghttp2_session_get_last_proc_stream_id(c->session);
    uint8_t f[17] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0};
    f[9] = (uint8_t)((uint32_t)last >> 24 & 0x7f);
    f[10] = (uint8_t)((uint32_t)last >> 16);
    f[11] = (uint8_t)((uint32_t)last >> 8);
    f[12] = (uint8_t)last;
    f[13] = (uint8_t)(error_code >> 24);
    f[14] = (uint8_t)(error_code >> 16);
    f[15] = (uint8_t)(error_code >> 8);
    f[16] = (uint8_t)error_code;
    evbuffer_add(c->sock.out, f, sizeof(f));
    c->out_queued += sizeof(f);
}

/* Give up on the session: GOAWAY with error_code, then close once written.
 * Returns the nghttp2 code that makes a callback stop mem_recv. */
static int give_up(veer_h2conn_t *c, uint32_t error_code, atomic_uint_fast64_t *counter, const char *why)
{
    if (!c->dead) {
        char ip[64];
        if (counter != NULL)
            stat_inc(counter);
        veer_log_info("http2 %s: %s: GOAWAY %s, connection closed", peer_str(c, ip, sizeof(ip)), why,
                      nghttp2_http2_strerror(error_code));
        write_goaway(c, error_code);
        c->dead = 1;
    }
    schedule_send(c);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* ---- streams ---- */

static h2stream_t *stream_new(veer_h2conn_t *c, int32_t id)
{
    h2stream_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->out = evbuffer_new();
    st->x = veer_exchange_new(c->w, &h2_ds_ops, st);
    if (st->out == NULL || st->x == NULL) {
        if (st->out != NULL)
            evbuffer_free(st->out);
        if (st->x != NULL)
            veer_exchange_free(st->x);
        free(st);
        return NULL;
    }
    st->c = c;
    st->id = id;
    st->content_length = -1;
    st->x->client_addr = (const struct sockaddr *)&c->peer;
    st->x->client_tls = c->tls;
    st->x->http_version = 20;
    st->x->listener = c->listener;
    st->next = c->streams;
    if (c->streams != NULL)
        c->streams->prev = st;
    c->streams = st;
    c->stream_count++;
    stat_inc(&c->w->stats.h2_streams_total);
    return st;
}

/* live: the session still exists (not the connection's own teardown). */
static void stream_free(veer_h2conn_t *c, h2stream_t *st, bool live)
{
    if (st->x != NULL) {
        if (!st->x->resp_ended)
            veer_exchange_cancel(st->x); /* the client left: the upstream side goes too */
        veer_exchange_free(st->x);
        st->x = NULL;
    }
    if (live && st->unconsumed > 0)
        nghttp2_session_consume_connection(c->session, st->unconsumed);
    if (st->on_flush_list) {
        for (h2stream_t **pp = &c->flush_list; *pp != NULL; pp = &(*pp)->flush_next) {
            if (*pp == st) {
                *pp = st->flush_next;
                break;
            }
        }
    }
    if (st->want_drain)
        c->drain_waiters--;
    evbuffer_free(st->out);
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    c->stream_count--;
    free(st);
    if (live && c->stream_count == 0 && !c->dead)
        event_add(&c->timer, c->w->idle_tv); /* idle from now on */
}

static h2stream_t *stream_of(veer_h2conn_t *c, int32_t id)
{
    return nghttp2_session_get_stream_user_data(c->session, id);
}

/* A malformed request (RFC 9113 §8.1.1): stream error PROTOCOL_ERROR; the
 * connection and the other streams go on. */
static void stream_error(veer_h2conn_t *c, h2stream_t *st, const char *why)
{
    char ip[64];
    veer_log(VEER_LOG_DEBUG, "http2 %s: stream %d: %s", peer_str(c, ip, sizeof(ip)), st->id, why);
    stat_inc(&c->w->stats.h2_stream_errors);
    st->rejected = 1;
    if (!st->reset_sent) {
        st->reset_sent = 1;
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
    }
}

static void stream_reset(veer_h2conn_t *c, h2stream_t *st, uint32_t code)
{
    if (!st->reset_sent && !c->dead) {
        st->reset_sent = 1;
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, code);
        schedule_send(c);
    }
}

static char *copy(veer_exchange_t *x, const uint8_t *p, size_t n)
{
    if (n == 0)
        return "";
    return veer_arena_memdup(&x->arena, p, n);
}

/* Several cookie fields are one Cookie header to an HTTP/1.1 upstream
 * (RFC 9113 §8.2.3): joined with "; ". */
static int cookie_append(h2stream_t *st, const uint8_t *v, size_t n)
{
    veer_exchange_t *x = st->x;
    size_t sep = st->cookie_len > 0 ? 2 : 0, len = st->cookie_len + sep + n;
    char *g = veer_arena_grow(&x->arena, st->cookie, st->cookie_len, len);
    if (g == NULL)
        return -1;
    if (sep)
        memcpy(g + st->cookie_len, "; ", 2);
    memcpy(g + st->cookie_len + sep, v, n);
    st->cookie = g;
    st->cookie_len = len;
    return 0;
}

static bool name_is(const uint8_t *name, size_t len, const char *lit, size_t lit_len)
{
    return len == lit_len && memcmp(name, lit, len) == 0;
}

static int on_request_header(h2stream_t *st, const uint8_t *name, size_t namelen, const uint8_t *value,
                             size_t valuelen)
{
    veer_exchange_t *x = st->x;
    veer_req_t *req = &x->req;
    if (st->in_trailers) {
        veer_iov_t n = {copy(x, name, namelen), namelen}, v = {copy(x, value, valuelen), valuelen};
        if (n.base == NULL || v.base == NULL || req->trailer_count >= H2_MAX_HEADERS)
            return -1;
        return veer_exchange_add_header(x, &req->trailers, &req->trailer_count, &req->trailer_cap, n, v);
    }
    if (namelen > 0 && name[0] == ':') {
        /* nghttp2 refused unknown, repeated and misplaced pseudo-headers */
        veer_iov_t v = {copy(x, value, valuelen), valuelen};
        if (v.base == NULL)
            return -1;
        if (name_is(name, namelen, ":method", 7))
            req->method = v;
        else if (name_is(name, namelen, ":path", 5))
            req->path = v;
        else if (name_is(name, namelen, ":scheme", 7))
            req->scheme = v;
        else if (name_is(name, namelen, ":authority", 10))
            req->authority = v;
        return 0;
    }
    if (name_is(name, namelen, "cookie", 6))
        return cookie_append(st, value, valuelen);
    if (name_is(name, namelen, "host", 4)) {
        veer_iov_t v = {copy(x, value, valuelen), valuelen};
        if (v.base == NULL)
            return -1;
        if (st->has_host && (v.len != st->host.len || strncasecmp(v.base, st->host.base, v.len) != 0))
            st->host_conflict = 1;
        st->host = v;
        st->has_host = 1;
        return 0;
    }
    if (name_is(name, namelen, "content-length", 14)) {
        int64_t n = 0; /* nghttp2 checked the digits and that it is not repeated */
        for (size_t i = 0; i < valuelen && n < INT64_MAX / 10; i++)
            n = n * 10 + (value[i] - '0');
        st->content_length = n;
        return 0; /* framing is re-derived upstream */
    }
    if (name_is(name, namelen, "expect", 6)) {
        if (valuelen == 12 && strncasecmp((const char *)value, "100-continue", 12) == 0)
            req->expect_continue = true;
        else
            st->expect_bad = 1;
        return 0;
    }
    if (req->header_count >= H2_MAX_HEADERS)
        return -1;
    veer_iov_t n = {copy(x, name, namelen), namelen}, v = {copy(x, value, valuelen), valuelen};
    if (n.base == NULL || v.base == NULL)
        return -1;
    return veer_exchange_add_header(x, &req->headers, &req->header_count, &req->header_cap, n, v);
}

/* The request head is complete and nghttp2 found its pseudo-headers sound:
 * the checks left to us, then the exchange starts. */
static void request_ready(veer_h2conn_t *c, h2stream_t *st, bool end_stream)
{
    veer_exchange_t *x = st->x;
    veer_req_t *req = &x->req;
    st->req_ended = end_stream;
    if (st->too_large) {
        stat_inc(&c->w->stats.h2_headers_too_large);
        veer_exchange_local_reply(x, 431, "request headers too large", true);
        return;
    }
    if (st->host_conflict || (st->has_host && req->authority.len > 0 &&
                              (req->authority.len != st->host.len ||
                               strncasecmp(req->authority.base, st->host.base, st->host.len) != 0))) {
        stream_error(c, st, "Host differs from :authority");
        return;
    }
    if (req->authority.len == 0 && st->has_host)
        req->authority = st->host; /* :authority wins when both are there */
    if (req->authority.len > 0 && memchr(req->authority.base, '@', req->authority.len) != NULL) {
        stream_error(c, st, ":authority with userinfo");
        return;
    }
    if (veer_iov_eq(req->method, "CONNECT", 7)) {
        veer_exchange_local_reply(x, 501, "CONNECT is not supported", true);
        return;
    }
    bool options_star = veer_iov_eq(req->method, "OPTIONS", 7) && veer_iov_eq(req->path, "*", 1);
    if (req->path.len == 0 || (req->path.base[0] != '/' && !options_star)) {
        stream_error(c, st, "invalid :path");
        return;
    }
    if (st->cookie_len > 0 &&
        veer_exchange_add_header(x, &req->headers, &req->header_count, &req->header_cap, VEER_IOV_LIT("cookie"),
                                 (veer_iov_t){st->cookie, st->cookie_len}) < 0) {
        stat_inc(&c->w->stats.h2_headers_too_large);
        veer_exchange_local_reply(x, 431, "request headers too large", true);
        return;
    }
    if (st->expect_bad) {
        veer_exchange_local_reply(x, 417, "unsupported expectation", true);
        return;
    }
    req->has_body = !end_stream && st->content_length != 0;
    req->content_length = req->has_body ? st->content_length : -1;
    req->header_count = (uint32_t)veer_headers_strip_hop_by_hop(req->headers, req->header_count, NULL);
    st->started = 1;
    veer_exchange_start(x); /* may answer at once (404, 413, 503) */
    if (end_stream)
        veer_exchange_req_end(x);
}

static void request_end(veer_h2conn_t *c, h2stream_t *st)
{
    if (st->req_ended)
        return;
    st->req_ended = 1;
    if (st->started && !st->rejected && !st->body_discard)
        veer_exchange_req_end(st->x);
}

static void body_too_large(veer_h2conn_t *c, h2stream_t *st)
{
    st->body_discard = 1;
    if (!st->x->resp_head_sent) {
        veer_exchange_local_reply(st->x, 413, "request body too large", true);
    } else {
        veer_exchange_cancel(st->x);
        stream_reset(c, st, NGHTTP2_CANCEL);
    }
}

/* ---- nghttp2 callbacks ---- */

static int flood(veer_h2conn_t *c, veer_h2_window_t *win, uint32_t max, atomic_uint_fast64_t *counter,
                 const char *what)
{
    if (!veer_h2_window_over(win, c->now_ms, max))
        return 0;
    return give_up(c, NGHTTP2_ENHANCE_YOUR_CALM, counter, what);
}

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    veer_h2conn_t *c = ud;
    veer_worker_stats_t *stats = &c->w->stats;
    const veer_http2_limits_t *lim = &c->lim;
    if (hd->type == NGHTTP2_HEADERS || hd->type == NGHTTP2_CONTINUATION || hd->type == NGHTTP2_DATA ||
        hd->type == NGHTTP2_WINDOW_UPDATE || hd->type == NGHTTP2_RST_STREAM)
        c->frames_seen++;
    switch (hd->type) {
    case NGHTTP2_HEADERS:
        c->block_frames = 0;
        c->block_bytes = hd->length;
        if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_HEADERS))
            return flood(c, &c->empty_win, lim->max_empty_frames_per_second, &stats->h2_empty_frame_flood,
                         "empty HEADERS flood");
        break;
    case NGHTTP2_CONTINUATION:
        /* CVE-2024-27316 and kin: a header block is held whole until it
         * ends, so its frames and bytes are bounded here. */
        c->block_frames++;
        c->block_bytes += hd->length;
        if (c->block_frames > lim->max_continuations ||
            c->block_bytes > (uint64_t)lim->max_header_list_size + H2_BLOCK_SLACK)
            return give_up(c, NGHTTP2_ENHANCE_YOUR_CALM, &stats->h2_continuation_flood, "CONTINUATION flood");
        if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_HEADERS))
            return flood(c, &c->empty_win, lim->max_empty_frames_per_second, &stats->h2_empty_frame_flood,
                         "empty CONTINUATION flood");
        break;
    case NGHTTP2_DATA:
        if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM))
            return flood(c, &c->empty_win, lim->max_empty_frames_per_second, &stats->h2_empty_frame_flood,
                         "empty DATA flood");
        break;
    case NGHTTP2_SETTINGS:
        if (!(hd->flags & NGHTTP2_FLAG_ACK))
            return flood(c, &c->settings_win, lim->max_settings_per_second, &stats->h2_settings_flood,
                         "SETTINGS flood");
        break;
    case NGHTTP2_PING:
        if (!(hd->flags & NGHTTP2_FLAG_ACK))
            return flood(c, &c->ping_win, lim->max_pings_per_second, &stats->h2_ping_flood, "PING flood");
        break;
    case NGHTTP2_PRIORITY:
        return flood(c, &c->priority_win, lim->max_priority_per_second, &stats->h2_priority_flood,
                     "PRIORITY flood");
    default:
        break;
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    veer_h2conn_t *c = ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        h2stream_t *st = stream_new(c, frame->hd.stream_id);
        if (st == NULL)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM INTERNAL_ERROR */
        nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, st);
        if (c->stream_count == 1) { /* no longer idle: the timer now checks for stalls */
            c->frames_at_tick = c->frames_seen;
            c->written_at_tick = c->out_queued - evbuffer_get_length(c->sock.out);
            event_add(&c->timer, c->w->idle_tv);
        }
        return 0;
    }
    h2stream_t *st = stream_of(c, frame->hd.stream_id);
    if (st != NULL)
        st->in_trailers = 1;
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    veer_h2conn_t *c = ud;
    h2stream_t *st = stream_of(c, frame->hd.stream_id);
    if (st == NULL || st->rejected || st->too_large || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    st->head_bytes += namelen + valuelen + 32;
    if (st->head_bytes > c->lim.max_header_list_size || on_request_header(st, name, namelen, value, valuelen) < 0) {
        if (st->in_trailers) { /* trailers cannot be answered with 431 any more */
            stat_inc(&c->w->stats.h2_headers_too_large);
            st->rejected = 1;
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        st->too_large = 1; /* the rest is decoded (HPACK state) and dropped; 431 at the end */
    }
    return 0;
}

/* nghttp2 drops fields it finds invalid (bad bytes, stray whitespace) unless
 * told otherwise: such a request is malformed (RFC 9113 §8.2.1), so the
 * stream is reset with PROTOCOL_ERROR rather than forwarded without them. */
static int on_invalid_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                             const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_rst_stream(veer_h2conn_t *c, int32_t id)
{
    h2stream_t *st = stream_of(c, id);
    /* CVE-2023-44487: only resets of streams still being answered cost a
     * token; a client cancelling what it already got is not an attack. */
    if (st == NULL || st->resp_eof || st->rejected)
        return 0;
    if (veer_h2_bucket_take(&c->resets, c->now_ms, c->lim.reset_rate, c->lim.reset_burst))
        return 0;
    return give_up(c, NGHTTP2_ENHANCE_YOUR_CALM, &c->w->stats.h2_rapid_reset, "rapid reset");
}

static void send_final_goaway(veer_h2conn_t *c)
{
    if (c->goaway_final || c->dead)
        return;
    c->goaway_final = 1;
    event_del(&c->goaway_timer);
    nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->session),
                          NGHTTP2_NO_ERROR, NULL, 0);
    schedule_send(c);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    veer_h2conn_t *c = ud;
    h2stream_t *st;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if ((st = stream_of(c, frame->hd.stream_id)) == NULL || st->rejected)
            break;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
            request_ready(c, st, (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
        else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
            request_end(c, st); /* trailers */
        break;
    case NGHTTP2_DATA:
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && (st = stream_of(c, frame->hd.stream_id)) != NULL)
            request_end(c, st);
        break;
    case NGHTTP2_RST_STREAM:
        return on_rst_stream(c, frame->hd.stream_id);
    case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && c->draining &&
            memcmp(frame->ping.opaque_data, drain_ping, sizeof(drain_ping)) == 0)
            send_final_goaway(c); /* one round trip after the notice: streams in flight are known */
        break;
    default:
        break;
    }
    return 0;
}

static int on_invalid_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, int lib_error_code, void *ud)
{
    veer_h2conn_t *c = ud;
    veer_worker_stats_t *stats = &c->w->stats;
    switch (lib_error_code) {
    case NGHTTP2_ERR_REFUSED_STREAM:
        stat_inc(&stats->h2_refused_streams);
        break;
    case NGHTTP2_ERR_HTTP_HEADER:
    case NGHTTP2_ERR_HTTP_MESSAGING:
        stat_inc(&stats->h2_stream_errors);
        break;
    default:
        stat_inc(&stats->h2_protocol_errors);
        break;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                              void *ud)
{
    veer_h2conn_t *c = ud;
    h2stream_t *st = stream_of(c, id);
    if (st == NULL || !st->started || st->rejected || st->body_discard) {
        nghttp2_session_consume(s, id, len); /* dropped: back to the window at once */
        return 0;
    }
    st->body_bytes += len;
    if (c->max_body_bytes > 0 && st->body_bytes > c->max_body_bytes) {
        body_too_large(c, st);
        nghttp2_session_consume(s, id, len);
        return 0;
    }
    veer_exchange_req_body(st->x, (const char *)data, len);
    if (!st->on_flush_list) {
        st->on_flush_list = 1;
        st->flush_next = c->flush_list;
        c->flush_list = st;
    }
    /* The window reopens only as the upstream takes the bytes: a paused
     * stream keeps them counted until req_resume. */
    if (st->req_paused)
        st->unconsumed += len;
    else
        nghttp2_session_consume(s, id, len);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud)
{
    veer_h2conn_t *c = ud;
    h2stream_t *st = stream_of(c, id);
    if (st != NULL)
        stream_free(c, st, true);
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    veer_h2conn_t *c = ud;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        h2stream_t *st = stream_of(c, frame->hd.stream_id);
        /* The response is complete while the client still sends a body
         * nobody will read: stop it (RFC 9113 §8.1). */
        if (st != NULL && !st->req_ended && !st->reset_sent) {
            st->reset_sent = 1;
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
        }
    }
    return 0;
}

static int submit_trailers(veer_h2conn_t *c, h2stream_t *st)
{
    veer_exchange_t *x = st->x;
    const veer_resp_t *r = &x->resp;
    nghttp2_nv *nva = veer_arena_alloc(&x->arena, r->trailer_count * sizeof(*nva));
    if (nva == NULL)
        return -1;
    size_t n = 0;
    for (uint32_t i = 0; i < r->trailer_count; i++) {
        const veer_header_t *h = &r->trailers[i];
        if (h->name.len == 0 || h->name.base[0] == ':' || veer_header_is_hop_by_hop(h->name) ||
            veer_header_name_is(h->name, "content-length", 14))
            continue;
        nva[n++] = (nghttp2_nv){(uint8_t *)h->name.base, (uint8_t *)h->value.base, h->name.len, h->value.len,
                                NGHTTP2_NV_FLAG_NONE};
    }
    if (n == 0)
        return -1;
    return nghttp2_submit_trailer(c->session, st->id, nva, n) == 0 ? 0 : -1;
}

static ssize_t data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    veer_h2conn_t *c = ud;
    h2stream_t *st = src->ptr;
    size_t have = evbuffer_get_length(st->out);
    if (have == 0 && !st->resp_eof) {
        st->deferred = 1; /* resp_body/resp_end resume it */
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = have < length ? have : length;
    if (n > 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY; /* send_data moves the bytes by reference */
    if (n == have && st->resp_eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->x->resp.trailer_count > 0 && submit_trailers(c, st) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

static int send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                     nghttp2_data_source *src, void *ud)
{
    veer_h2conn_t *c = ud;
    h2stream_t *st = src->ptr;
    struct evbuffer *out = c->sock.out;
    size_t pad = frame->data.padlen;
    evbuffer_add(out, framehd, 9);
    if (pad > 0) {
        uint8_t padlen = (uint8_t)(pad - 1);
        evbuffer_add(out, &padlen, 1);
    }
    evbuffer_remove_buffer(st->out, out, length);
    if (pad > 1) {
        static const uint8_t zeros[256];
        evbuffer_add(out, zeros, pad - 1);
    }
    c->out_queued += 9 + pad + length;
    return 0;
}

static nghttp2_session_callbacks *callbacks;
static pthread_once_t callbacks_once = PTHREAD_ONCE_INIT;

static void callbacks_init(void)
{
    if (nghttp2_session_callbacks_new(&callbacks) != 0) {
        callbacks = NULL;
        return;
    }
    nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(callbacks, on_invalid_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, on_invalid_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(callbacks, send_data);
}

/* ---- downstream ops: what the exchange asks of a stream ---- */

static void resume_data(h2stream_t *st)
{
    veer_h2conn_t *c = st->c;
    if (st->deferred && !c->dead) {
        st->deferred = 0;
        nghttp2_session_resume_data(c->session, st->id);
    }
    schedule_send(c);
}

static void ds_resp_head(void *ctx, veer_exchange_t *x)
{
    h2stream_t *st = ctx;
    veer_h2conn_t *c = st->c;
    const veer_resp_t *r = &x->resp;
    if (c->dead || st->reset_sent)
        return;
    nghttp2_nv *nva = veer_arena_alloc(&x->arena, (r->header_count + 2) * sizeof(*nva));
    if (nva == NULL) {
        stream_reset(c, st, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    size_t n = 0;
    int status = r->status >= 200 && r->status <= 999 ? r->status : 502;
    snprintf(st->status, sizeof(st->status), "%d", status);
    nva[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st->status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    for (uint32_t i = 0; i < r->header_count; i++) {
        const veer_header_t *h = &r->headers[i];
        /* HTTP/1.1 upstreams lower-case names and lose hop-by-hop fields;
         * what could still break HTTP/2 framing is left out. */
        if (h->name.len == 0 || h->name.base[0] == ':' || veer_header_is_hop_by_hop(h->name) ||
            veer_header_name_is(h->name, "content-length", 14))
            continue;
        nva[n++] = (nghttp2_nv){(uint8_t *)h->name.base, (uint8_t *)h->value.base, h->name.len, h->value.len,
                                NGHTTP2_NV_FLAG_NONE};
    }
    if (r->content_length >= 0) {
        int len = snprintf(st->clen, sizeof(st->clen), "%lld", (long long)r->content_length);
        nva[n++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)st->clen, 14, (size_t)len,
                                NGHTTP2_NV_FLAG_NONE};
    }
    nghttp2_data_provider prd = {.source = {.ptr = st}, .read_callback = data_read};
    if (nghttp2_submit_response(c->session, st->id, nva, n, r->has_body ? &prd : NULL) != 0) {
        stream_reset(c, st, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    st->resp_head = 1;
    if (!r->has_body)
        st->resp_eof = 1;
    schedule_send(c);
}

static void ds_resp_body(void *ctx, veer_exchange_t *x, struct evbuffer *data)
{
    h2stream_t *st = ctx;
    if (st->c->dead || st->reset_sent || !st->resp_head || !x->resp.has_body) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    evbuffer_add_buffer(st->out, data);
    resume_data(st);
}

static void ds_resp_end(void *ctx, veer_exchange_t *x)
{
    h2stream_t *st = ctx;
    st->resp_eof = 1;
    if (st->resp_head && x->resp.has_body)
        resume_data(st);
}

static void ds_resp_abort(void *ctx, veer_exchange_t *x)
{
    h2stream_t *st = ctx;
    stream_reset(st->c, st, NGHTTP2_INTERNAL_ERROR);
}

static void ds_send_continue(void *ctx, veer_exchange_t *x)
{
    h2stream_t *st = ctx;
    veer_h2conn_t *c = st->c;
    if (c->dead || st->reset_sent || st->resp_head)
        return;
    nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE};
    nghttp2_submit_headers(c->session, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL);
    schedule_send(c);
}

static void ds_req_pause(void *ctx)
{
    h2stream_t *st = ctx;
    st->req_paused = 1;
}

static void ds_req_resume(void *ctx)
{
    h2stream_t *st = ctx;
    veer_h2conn_t *c = st->c;
    if (!st->req_paused)
        return;
    st->req_paused = 0;
    if (st->unconsumed > 0 && !c->dead) {
        nghttp2_session_consume(c->session, st->id, st->unconsumed);
        st->unconsumed = 0;
        schedule_send(c); /* the WINDOW_UPDATE */
    }
}

static bool ds_resp_congested(void *ctx)
{
    h2stream_t *st = ctx;
    veer_h2conn_t *c = st->c;
    return evbuffer_get_length(st->out) > c->buffer_bytes ||
           (c->sock.out != NULL && evbuffer_get_length(c->sock.out) > c->buffer_bytes);
}

static void ds_resp_on_drain(void *ctx)
{
    h2stream_t *st = ctx;
    if (!st->want_drain) {
        st->want_drain = 1;
        st->c->drain_waiters++;
    }
}

static void ds_flush(void *ctx)
{
    h2stream_t *st = ctx;
    schedule_send(st->c);
}

static const veer_ds_ops_t h2_ds_ops = {
    .resp_head = ds_resp_head,
    .resp_body = ds_resp_body,
    .resp_end = ds_resp_end,
    .resp_abort = ds_resp_abort,
    .send_continue = ds_send_continue,
    .req_pause = ds_req_pause,
    .req_resume = ds_req_resume,
    .resp_congested = ds_resp_congested,
    .resp_on_drain = ds_resp_on_drain,
    .flush = ds_flush,
};

/* ---- connection ---- */

/* Upstream reads paused for a full stream buffer resume once it is half
 * empty and the socket is not congested. */
static void notify_drained(veer_h2conn_t *c)
{
    if (c->drain_waiters == 0 || evbuffer_get_length(c->sock.out) > c->buffer_bytes)
        return;
    for (h2stream_t *st = c->streams; st != NULL; st = st->next) {
        if (st->want_drain && evbuffer_get_length(st->out) <= c->buffer_bytes / 2) {
            st->want_drain = 0;
            c->drain_waiters--;
            veer_exchange_resp_drained(st->x);
        }
    }
}

/* Close once what is written has gone out (or the client stopped reading:
 * then the timer closes it). Only from the end of a loop callback. */
static void close_when_flushed(veer_h2conn_t *c)
{
    veer_sock_read_disable(&c->sock);
    if (c->sock.fd < 0 || veer_sock_flush(&c->sock) < 0 || evbuffer_get_length(c->sock.out) == 0) {
        veer_h2conn_close(c);
        return;
    }
    veer_sock_want_drain(&c->sock);
    event_add(&c->timer, c->w->idle_tv);
}

static void do_send(veer_h2conn_t *c)
{
    if (c->send_scheduled) {
        c->send_scheduled = 0;
        event_del(&c->send_ev);
    }
    if (c->dead) {
        close_when_flushed(c);
        return;
    }
    struct evbuffer *out = c->sock.out;
    while (evbuffer_get_length(out) < c->buffer_bytes) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            give_up(c, NGHTTP2_INTERNAL_ERROR, &c->w->stats.h2_protocol_errors, nghttp2_strerror((int)n));
            close_when_flushed(c);
            return;
        }
        if (n == 0)
            break;
        evbuffer_add(out, data, (size_t)n);
        c->out_queued += (uint64_t)n;
    }
    notify_drained(c);
    veer_sock_flush(&c->sock);
    if (evbuffer_get_length(out) > 0 && (nghttp2_session_want_write(c->session) ||
                                         evbuffer_get_length(out) >= c->buffer_bytes)) {
        /* The client reads slower than we produce: stop taking its frames
         * (and their ACKs and window updates) until it caught up. */
        veer_sock_want_drain(&c->sock);
        if (evbuffer_get_length(out) >= c->buffer_bytes && c->sock.reading) {
            veer_sock_read_disable(&c->sock);
            c->read_paused = 1;
        }
    }
    if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session)) {
        c->dead = 1; /* GOAWAY both ways and no stream left */
        close_when_flushed(c);
    }
}

static void send_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_h2conn_t *c = arg;
    c->send_scheduled = 0;
    if (c->input_pending) {
        h2_on_read(&c->sock, c);
        return;
    }
    do_send(c);
}

static void flush_upstreams(veer_h2conn_t *c)
{
    while (c->flush_list != NULL) {
        h2stream_t *st = c->flush_list;
        c->flush_list = st->flush_next;
        st->on_flush_list = 0;
        if (st->x != NULL)
            veer_exchange_flush_upstream(st->x);
    }
}

static void header_timer_update(veer_h2conn_t *c)
{
    if (!veer_h2_framer_in_headers(&c->framer)) {
        if (c->header_timer_on) {
            event_del(&c->header_timer);
            c->header_timer_on = 0;
        }
        return;
    }
    if (!c->header_timer_on || c->header_timer_block != c->framer.blocks) {
        event_add(&c->header_timer, c->w->header_tv);
        c->header_timer_on = 1;
        c->header_timer_block = c->framer.blocks;
    }
}

static void h2_on_read(veer_sock_t *s, void *arg)
{
    veer_h2conn_t *c = arg;
    struct evbuffer *in = c->sock.in;
    c->input_pending = 0;
    c->now_ms = now_ms();
    while (!c->dead && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        veer_h2_framer_feed(&c->framer, v.iov_base, v.iov_len);
        ssize_t n = nghttp2_session_mem_recv(c->session, v.iov_base, v.iov_len);
        if (n < 0) {
            if (!c->dead) /* not one of ours: nghttp2's own verdict */
                give_up(c, n == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR,
                        &c->w->stats.h2_protocol_errors, nghttp2_strerror((int)n));
            break;
        }
        evbuffer_drain(in, (size_t)n);
    }
    if (c->dead)
        evbuffer_drain(in, evbuffer_get_length(in));
    flush_upstreams(c);
    header_timer_update(c);
    do_send(c); /* may close c */
}

static void h2_on_eof(veer_sock_t *s, void *arg, int err)
{
    veer_h2conn_t *c = arg;
    c->dead = 1; /* the client is gone: its streams are cancelled */
    schedule_send(c);
}

static void h2_on_drain(veer_sock_t *s, void *arg)
{
    veer_h2conn_t *c = arg;
    if (c->read_paused && !c->dead) {
        c->read_paused = 0;
        veer_sock_read_enable(&c->sock);
    }
    schedule_send(c);
}

/* Idle (no stream for idle_timeout): graceful GOAWAY. With streams open, a
 * client that for a whole idle_timeout neither took any of our pending
 * output nor sent a frame that moves a stream (PINGs do not count) is a
 * stalled reader (slow-read attack): closed. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_h2conn_t *c = arg;
    if (c->dead) {
        conn_close(c, true); /* the last bytes never drained: the client does not read */
        return;
    }
    if (c->stream_count == 0) {
        stat_inc(&c->w->stats.h2_idle_timeouts);
        c->draining = 1;
        send_final_goaway(c);
        return;
    }
    uint64_t written = c->out_queued - evbuffer_get_length(c->sock.out);
    bool pending = evbuffer_get_length(c->sock.out) > 0;
    for (h2stream_t *st = c->streams; st != NULL && !pending; st = st->next)
        pending = evbuffer_get_length(st->out) > 0;
    if (pending && c->frames_seen == c->frames_at_tick && written == c->written_at_tick) {
        stat_inc(&c->w->stats.h2_idle_timeouts);
        char ip[64];
        veer_log_info("http2 %s: no progress for idle_timeout with output pending, connection reset",
                      peer_str(c, ip, sizeof(ip)));
        conn_close(c, true); /* RST: the unread bytes must not linger in the kernel either */
        return;
    }
    c->frames_at_tick = c->frames_seen;
    c->written_at_tick = written;
    event_add(&c->timer, c->w->idle_tv);
}

static void header_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_h2conn_t *c = arg;
    c->header_timer_on = 0;
    if (!veer_h2_framer_in_headers(&c->framer) || c->dead)
        return;
    give_up(c, NGHTTP2_ENHANCE_YOUR_CALM, &c->w->stats.h2_header_timeouts, "request head not received in time");
    close_when_flushed(c);
}

static void goaway_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_h2conn_t *c = arg;
    send_final_goaway(c);
}

static int session_setup(veer_h2conn_t *c)
{
    pthread_once(&callbacks_once, callbacks_init);
    if (callbacks == NULL)
        return -1;
    const veer_http2_limits_t *lim = &c->lim;
    const veer_config_t *cfg = c->w->ws->snap->config;
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        return -1;
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, lim->header_table_size);
    /* ACKs a client makes us queue without reading them: a window's worth. */
    nghttp2_option_set_max_outbound_ack(opt, (size_t)lim->max_pings_per_second + lim->max_settings_per_second);
    /* nghttp2's own limits stay looser than ours, so ours (with their
     * counters and ENHANCE_YOUR_CALM) decide. */
    nghttp2_option_set_max_continuations(opt, (size_t)lim->max_continuations + 1);
    nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)lim->reset_burst * 2 + 1, (uint64_t)lim->reset_rate * 2);
    size_t head = (size_t)cfg->limits.max_header_bytes * 2 + 16384;
    nghttp2_option_set_max_send_header_block_length(opt, head > 65536 ? head : 65536);
    int rv = nghttp2_session_server_new2(&c->session, callbacks, c, opt);
    nghttp2_option_del(opt);
    if (rv != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, lim->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, lim->initial_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, lim->max_header_list_size},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, lim->header_table_size},
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)lim->connection_window_size) != 0) {
        nghttp2_session_del(c->session);
        c->session = NULL;
        return -1;
    }
    return 0;
}

veer_h2conn_t *veer_h2conn_new(veer_worker_t *w, veer_sock_t *s, const struct sockaddr *peer, socklen_t peerlen,
                               int listener)
{
    const veer_config_t *cfg = w->ws->snap->config;
    veer_h2conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->w = w;
    c->listener = listener;
    c->lim = cfg->limits.http2;
    c->buffer_bytes = cfg->limits.buffer_bytes;
    c->max_body_bytes = cfg->limits.max_body_bytes;
    c->goaway_delay_ms = cfg->limits.drain_timeout_ms / 2 < H2_GOAWAY_DELAY_MS ? cfg->limits.drain_timeout_ms / 2
                                                                               : H2_GOAWAY_DELAY_MS;
    memcpy(&c->peer, peer, peerlen < sizeof(c->peer) ? peerlen : sizeof(c->peer));
    c->framer.preface_left = VEER_H2_PREFACE_LEN;
    if (session_setup(c) < 0) {
        free(c);
        return NULL;
    }
    veer_sock_move(&c->sock, s, &h2_sock_cbs, c);
    c->tls = c->sock.ssl != NULL;
    event_assign(&c->send_ev, w->base, -1, 0, send_cb, c);
    event_assign(&c->timer, w->base, -1, 0, timer_cb, c);
    event_assign(&c->header_timer, w->base, -1, 0, header_timer_cb, c);
    event_assign(&c->goaway_timer, w->base, -1, 0, goaway_timer_cb, c);
    c->next = w->h2conns;
    if (w->h2conns != NULL)
        w->h2conns->prev = c;
    w->h2conns = c;
    w->conn_count++;
    stat_inc(&w->stats.h2_cx_total);
    stat_inc(&w->stats.h2_cx_active);
    event_add(&c->timer, w->idle_tv);
    veer_sock_read_enable(&c->sock);
    /* The preface and whatever followed it are read already: take them from
     * the loop, like any read. Our SETTINGS go out then too. */
    c->input_pending = 1;
    schedule_send(c);
    if (w->draining)
        veer_h2conn_drain(c);
    return c;
}

void veer_h2conn_drain(veer_h2conn_t *c)
{
    if (c->draining || c->dead)
        return;
    c->draining = 1;
    /* RFC 9113 §6.8: a notice first, the real GOAWAY (with the last stream
     * taken) one round trip later, so no request in flight is lost. */
    nghttp2_submit_shutdown_notice(c->session);
    nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, drain_ping);
    struct timeval tv = {(time_t)(c->goaway_delay_ms / 1000), (suseconds_t)(c->goaway_delay_ms % 1000) * 1000};
    event_add(&c->goaway_timer, &tv);
    schedule_send(c);
}

static void conn_close(veer_h2conn_t *c, bool rst)
{
    veer_worker_t *w = c->w;
    while (c->streams != NULL)
        stream_free(c, c->streams, false);
    nghttp2_session_del(c->session);
    event_del(&c->send_ev);
    event_del(&c->timer);
    event_del(&c->header_timer);
    event_del(&c->goaway_timer);
    veer_sock_close(&c->sock, rst);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->h2conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    w->conn_count--;
    atomic_fetch_sub_explicit(&w->stats.h2_cx_active, 1, memory_order_relaxed);
    free(c);
    veer_worker_conn_closed(w);
}

void veer_h2conn_close(veer_h2conn_t *c)
{
    conn_close(c, false);
}

void veer_h2_drain_all(veer_worker_t *w)
{
    for (veer_h2conn_t *c = w->h2conns; c != NULL; c = c->next)
        veer_h2conn_drain(c);
}

void veer_h2_close_all(veer_worker_t *w)
{
    while (w->h2conns != NULL)
        veer_h2conn_close(w->h2conns);
}
