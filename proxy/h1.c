/* h1.c - HTTP/1.1 downstream codec (see h1.h). Request heads are copied into
 * the exchange's arena as they are parsed; bodies stream straight through to
 * the exchange; responses are serialized into the socket's output buffer and
 * written at the end of each event. */
#include "h1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "h2.h"
#include "headers.h"
#include "log.h"
#include "tls.h"

#define VEER_H1_MAX_HEADERS 256

static llhttp_settings_t req_settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void c_on_read(veer_sock_t *s, void *arg);
static void c_on_eof(veer_sock_t *s, void *arg, int err);
static void c_on_drain(veer_sock_t *s, void *arg);
static void c_on_handshake(veer_sock_t *s, void *arg, int err);
static const veer_sock_cbs_t c_cbs = {c_on_read, c_on_eof, c_on_drain, c_on_handshake};
static void h1_process(veer_h1conn_t *c);
static void finish_request(veer_h1conn_t *c);

static const veer_config_t *c_config(veer_h1conn_t *c)
{
    return c->w->ws->snap->config;
}

static void set_timer(veer_h1conn_t *c, const struct timeval *tv)
{
    event_add(&c->timer, tv);
}

/* Tear the connection down from the loop, never from inside a callback
 * chain that may still touch it. */
static void schedule_close(veer_h1conn_t *c)
{
    c->dead = 1;
    c->closing = 1;
    veer_sock_read_disable(&c->sock);
    event_active(&c->resume_ev, 0, 0);
}

/* ---- request parsing ---- */

static const veer_ds_ops_t h1_ds_ops; /* defined with the ops below */

static int fail(veer_h1conn_t *c, int status, const char *msg)
{
    if (c->error_status == 0) {
        c->error_status = status;
        c->error_msg = msg;
    }
    return -1;
}

static int append(veer_h1conn_t *c, char **buf, size_t *len, const char *at, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > c_config(c)->limits.max_header_bytes)
        return fail(c, 431, "request headers too large");
    if (veer_arena_append(&c->x->arena, buf, len, at, n) < 0)
        return fail(c, 431, "request headers too large");
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    veer_h1conn_t *c = p->data;
    c->x = veer_exchange_new(c->w, &h1_ds_ops, c);
    if (c->x == NULL)
        return fail(c, 503, "out of memory");
    c->x->client_tls = c->sock.ssl != NULL;
    c->in_message = 1;
    c->req_complete = c->resp_complete = 0;
    c->head_bytes = 0;
    c->body_bytes = 0;
    c->host_count = 0;
    c->cur_name = c->cur_value = c->url = NULL;
    c->cur_name_len = c->cur_value_len = c->url_len = 0;
    c->last_was_value = c->value_done = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    veer_h1conn_t *c = p->data;
    return append(c, &c->url, &c->url_len, at, n);
}

static int commit_header(veer_h1conn_t *c)
{
    veer_exchange_t *x = c->x;
    veer_iov_t name = {c->cur_name, c->cur_name_len}, value = {c->cur_value ? c->cur_value : "", c->cur_value_len};
    c->cur_name = c->cur_value = NULL;
    c->cur_name_len = c->cur_value_len = 0;
    if (name.base == NULL || name.len == 0)
        return fail(c, 400, "empty header name");
    /* trim optional whitespace at the end (llhttp strips the leading part) */
    while (value.len > 0 && (value.base[value.len - 1] == ' ' || value.base[value.len - 1] == '\t'))
        value.len--;
    if (!veer_header_value_valid(value))
        return fail(c, 400, "invalid character in a header value");
    for (size_t i = 0; i < name.len; i++)
        if (name.base[i] >= 'A' && name.base[i] <= 'Z')
            ((char *)name.base)[i] = (char)(name.base[i] + 32);
    if (veer_iov_eq(name, "host", 4)) {
        c->host_count++;
        x->req.authority = value;
        return 0;
    }
    if (veer_iov_eq(name, "content-length", 14))
        return 0; /* llhttp validated it; framing is re-derived upstream */
    if (veer_iov_eq(name, "expect", 6)) {
        if (value.len == 12 && strncasecmp(value.base, "100-continue", 12) == 0) {
            x->req.expect_continue = true;
            return 0;
        }
        return fail(c, 417, "unsupported expectation");
    }
    /* A count bound besides the byte bound: Connection-token stripping costs
     * fields x tokens. */
    if (x->req.header_count >= VEER_H1_MAX_HEADERS)
        return fail(c, 431, "too many request headers");
    if (veer_exchange_add_header(x, &x->req.headers, &x->req.header_count, &x->req.header_cap, name, value) < 0)
        return fail(c, 431, "request headers too large");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    veer_h1conn_t *c = p->data;
    if (c->last_was_value && commit_header(c) < 0)
        return -1;
    c->last_was_value = 0;
    c->value_done = 0;
    c->field_end = at + n;
    c->field_seg = c->seg_no;
    c->lf_after_field = 0;
    return append(c, &c->cur_name, &c->cur_name_len, at, n);
}

static int on_header_value_complete(llhttp_t *p)
{
    ((veer_h1conn_t *)p->data)->value_done = 1;
    return 0;
}

/* Obsolete line folding (RFC 9112 §5.2) is rejected, as a recipient may:
 * llhttp passes a continuation line on as more value bytes. It shows as a
 * value piece that does not continue the previous one, or as a line feed
 * between the field name and the first value piece (an empty value, then a
 * fold). Both hold across reads. */
static bool is_fold(const veer_h1conn_t *c, const char *at)
{
    if (c->value_done)
        return true;
    if (c->last_was_value) /* a piece that does not continue the last one */
        return at == c->seg_base ? !c->value_at_seg_end : at != c->value_end;
    /* Segments are told apart by number: evbuffer may reuse the memory. */
    const char *from = c->field_seg == c->seg_no ? c->field_end : c->seg_base;
    if (from > at)
        return false;
    if (memchr(from, '\n', (size_t)(at - from)) != NULL)
        return true;
    return c->lf_after_field; /* the line feed came in an earlier read */
    return false;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    veer_h1conn_t *c = p->data;
    if (is_fold(c, at))
        return fail(c, 400, "obsolete line folding in a header");
    c->last_was_value = 1;
    c->value_end = at + n;
    return append(c, &c->cur_value, &c->cur_value_len, at, n);
}

/* Absolute-form "http://host/path" (RFC 9112 §3.2.2): authority from the URL. */
static void split_absolute_form(veer_req_t *req)
{
    const char *u = req->path.base;
    size_t n = req->path.len, skip = 0;
    if (n > 7 && strncasecmp(u, "http://", 7) == 0)
        skip = 7;
    else if (n > 8 && strncasecmp(u, "https://", 8) == 0)
        skip = 8;
    if (skip == 0)
        return;
    const char *slash = memchr(u + skip, '/', n - skip);
    size_t alen = slash ? (size_t)(slash - u) - skip : n - skip;
    req->authority = (veer_iov_t){u + skip, alen};
    req->path = slash ? (veer_iov_t){slash, n - (size_t)(slash - u)} : VEER_IOV_LIT("/");
}

static int on_headers_complete(llhttp_t *p)
{
    veer_h1conn_t *c = p->data;
    veer_exchange_t *x = c->x;
    if (c->last_was_value && commit_header(c) < 0)
        return -1;
    c->last_was_value = 0;
    if (c->host_count > 1)
        return fail(c, 400, "more than one Host header");
    bool http11 = p->http_major == 1 && p->http_minor == 1;
    if (c->host_count == 0 && http11)
        return fail(c, 400, "missing Host header");
    if (c->url_len == 0)
        return fail(c, 400, "empty request target");
    veer_req_t *req = &x->req;
    const char *m = llhttp_method_name((llhttp_method_t)p->method);
    req->method = (veer_iov_t){m, strlen(m)};
    req->path = (veer_iov_t){c->url, c->url_len};
    split_absolute_form(req);
    if (req->path.base[0] != '/' && !(req->path.len == 1 && req->path.base[0] == '*'))
        return fail(c, 400, "invalid request target");
    req->scheme = c->sock.ssl != NULL ? VEER_IOV_LIT("https") : VEER_IOV_LIT("http");
    req->http10 = !http11;
    if (p->flags & F_CHUNKED) {
        req->has_body = true;
        req->content_length = -1;
    } else if (p->flags & F_CONTENT_LENGTH) {
        req->content_length = (int64_t)p->content_length;
        req->has_body = p->content_length > 0;
    }
    /* Upgrade (h2c from `curl --http2`, a WebSocket): a server may ignore it
     * (RFC 9110 7.8) and answer over HTTP/1.1, which the client then goes on
     * with; the Upgrade header goes with the hop-by-hop ones. CONNECT asks
     * for a tunnel, which a reverse proxy does not make. */
    if (p->upgrade && p->method == HTTP_CONNECT)
        return fail(c, 405, "CONNECT is not supported: veer is a reverse proxy");
    req->header_count = (uint32_t)veer_headers_strip_hop_by_hop(req->headers, req->header_count, NULL);
    c->keepalive = llhttp_should_keep_alive(p) && !c->draining;
    if (c->header_timer_on) {
        event_del(&c->timer);
        c->header_timer_on = 0;
    }
    x->client_addr = (const struct sockaddr *)&c->peer;
    x->listener = c->listener;
    veer_exchange_start(x); /* may answer at once (404, 413, 503) */
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    veer_h1conn_t *c = p->data;
    if (c->closing)
        return -1; /* answered and closing: stop parsing */
    uint64_t max = c_config(c)->limits.max_body_bytes;
    c->body_bytes += n;
    if (max > 0 && c->body_bytes > max)
        return fail(c, 413, "request body too large");
    veer_exchange_req_body(c->x, at, n);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    veer_h1conn_t *c = p->data;
    c->in_message = 0;
    if (c->closing)
        return HPE_PAUSED;
    c->req_complete = 1;
    veer_exchange_req_end(c->x);
    return HPE_PAUSED;
}

static void settings_init(void)
{
    llhttp_settings_init(&req_settings);
    req_settings.on_message_begin = on_message_begin;
    req_settings.on_url = on_url;
    req_settings.on_header_field = on_header_field;
    req_settings.on_header_value_complete = on_header_value_complete;
    req_settings.on_header_value = on_header_value;
    req_settings.on_headers_complete = on_headers_complete;
    req_settings.on_body = on_body;
    req_settings.on_message_complete = on_message_complete;
}

/* A parse error: answer it (when nothing was sent yet) and close. */
static void parse_error(veer_h1conn_t *c, llhttp_errno_t rc)
{
    int status = c->error_status ? c->error_status : 400;
    const char *msg = c->error_msg ? c->error_msg : llhttp_get_error_reason(&c->parser);
    atomic_fetch_add_explicit(&c->w->stats.bad_requests, 1, memory_order_relaxed);
    c->keepalive = 0;
    c->closing = 1;
    veer_sock_read_disable(&c->sock);
    veer_exchange_t *x = c->x;
    if (x == NULL && (x = c->x = veer_exchange_new(c->w, &h1_ds_ops, c)) == NULL) {
        schedule_close(c);
        return;
    }
    x->client_addr = (const struct sockaddr *)&c->peer;
    x->listener = c->listener;
    if (x->resp_head_sent) {
        schedule_close(c);
        return;
    }
    veer_exchange_cancel(x);
    c->req_complete = 1;
    char buf[160];
    snprintf(buf, sizeof(buf), "%s", msg ? msg : "malformed request");
    veer_exchange_local_reply(x, status, buf, true);
}

/* After a read that ended between a field name and its first value piece,
 * remember whether a line feed went by (an empty value, then a fold). */
static void note_field_lf(veer_h1conn_t *c, const char *base, size_t used)
{
    if (c->last_was_value || c->cur_name == NULL || c->lf_after_field)
        return;
    const char *from = c->field_seg == c->seg_no ? c->field_end : base;
    if (from >= base && from <= base + used && memchr(from, '\n', (size_t)(base + used - from)) != NULL)
        c->lf_after_field = 1;
}

static void h1_process(veer_h1conn_t *c)
{
    struct evbuffer *in = c->sock.in;
    while (!c->closing && !c->body_paused && !(c->x != NULL && c->req_complete) && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        c->parsing = 1;
        c->seg_base = v.iov_base;
        c->seg_no++;
        llhttp_errno_t rc = llhttp_execute(&c->parser, v.iov_base, v.iov_len);
        c->parsing = 0;
        if (rc == HPE_OK) {
            note_field_lf(c, v.iov_base, v.iov_len);
            c->value_at_seg_end = c->last_was_value && c->value_end == (const char *)v.iov_base + v.iov_len;
            evbuffer_drain(in, v.iov_len);
        } else if (rc == HPE_PAUSED || rc == HPE_PAUSED_UPGRADE) {
            size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - (const char *)v.iov_base);
            note_field_lf(c, v.iov_base, used);
            c->value_at_seg_end = c->last_was_value && c->value_end == (const char *)v.iov_base + used;
            evbuffer_drain(in, used);
            if (rc == HPE_PAUSED_UPGRADE) /* the upgrade was ignored: the next bytes are HTTP/1.1 again */
                llhttp_resume_after_upgrade(&c->parser);
            else
                llhttp_resume(&c->parser);
        } else if (c->closing && c->resp_complete) {
            evbuffer_drain(in, evbuffer_get_length(in)); /* answered already; the rest is discarded */
        } else {
            parse_error(c, rc);
            return;
        }
        if (c->resp_complete && c->req_complete) {
            finish_request(c); /* answered before the request ended (a local reply) */
            return;
        }
    }
    /* A head still incomplete after this read: bound how long it may take
     * (slowloris). Armed only here, so whole heads cost no timer work. */
    if (c->in_message && c->x != NULL && !c->x->started && !c->header_timer_on && !c->closing) {
        event_add(&c->timer, c->w->header_tv);
        c->header_timer_on = 1;
    }
    /* Waiting for a response: bound what a pipelining client may queue. */
    if (c->x != NULL && c->req_complete && evbuffer_get_length(in) > c_config(c)->limits.buffer_bytes)
        veer_sock_read_disable(&c->sock);
}

/* 1: s->in starts with the HTTP/2 client preface; 0: with a prefix of it
 * only (wait for more); -1: this is not HTTP/2. */
static int preface_match(struct evbuffer *in)
{
    char head[VEER_H2_PREFACE_LEN];
    ev_ssize_t n = evbuffer_copyout(in, head, sizeof(head));
    if (n <= 0)
        return 0;
    if (memcmp(head, VEER_H2_PREFACE, (size_t)n) != 0)
        return -1;
    return n == VEER_H2_PREFACE_LEN ? 1 : 0;
}

static void c_on_read(veer_sock_t *s, void *arg)
{
    veer_h1conn_t *c = arg;
    if (c->seg_no == 0 && c->x == NULL && !c->closing) {
        /* Nothing parsed yet: h2c with prior knowledge is told by its first
         * bytes (the preface may come in pieces). */
        int h2 = preface_match(c->sock.in);
        if (h2 > 0) {
            veer_h1conn_upgrade_h2(c);
            return;
        }
        if (h2 == 0)
            return;
    }
    h1_process(c);
    if (c->x != NULL && !c->req_complete)
        veer_exchange_flush_upstream(c->x);
    if (c->sock.fd >= 0 && !c->closing)
        veer_sock_flush(&c->sock);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_h1conn_t *c = arg;
    c_on_read(&c->sock, c);
}

/* ---- response writing ---- */

static bool will_close(veer_h1conn_t *c, veer_exchange_t *x)
{
    return !c->keepalive || x->close_after || c->draining || c->closing || x->req.http10;
}

static void ds_resp_head(void *ctx, veer_exchange_t *x)
{
    veer_h1conn_t *c = ctx;
    const veer_resp_t *r = &x->resp;
    size_t total = 64 + 24 + 40;
    for (uint32_t i = 0; i < r->header_count; i++)
        total += r->headers[i].name.len + r->headers[i].value.len + 4;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(c->sock.out, (ev_ssize_t)total, &v, 1) < 1) {
        schedule_close(c);
        return;
    }
    char *p = v.iov_base;
    const char *rs = veer_http_reason(r->status);
    size_t rl = strlen(rs);
    memcpy(p, "HTTP/1.1 ", 9);
    p += 9;
    p = veer_put_u64(p, (uint64_t)(r->status >= 100 && r->status <= 999 ? r->status : 500));
    *p++ = ' ';
    memcpy(p, rs, rl);
    p += rl;
    *p++ = '\r';
    *p++ = '\n';
    for (uint32_t i = 0; i < r->header_count; i++) {
        const veer_header_t *h = &r->headers[i];
        memcpy(p, h->name.base, h->name.len);
        p += h->name.len;
        *p++ = ':';
        *p++ = ' ';
        memcpy(p, h->value.base, h->value.len);
        p += h->value.len;
        *p++ = '\r';
        *p++ = '\n';
    }
    c->resp_chunked = 0;
    bool closing = will_close(c, x);
    if (r->content_length >= 0) {
        p = veer_put_header_u64(p, "content-length: ", 16, (uint64_t)r->content_length);
    } else if (r->has_body) {
        if (x->req.http10)
            closing = true; /* close-delimited */
        else {
            memcpy(p, "transfer-encoding: chunked\r\n", 28);
            p += 28;
            c->resp_chunked = 1;
        }
    }
    if (closing) {
        memcpy(p, "connection: close\r\n", 19);
        p += 19;
        c->keepalive = 0;
    }
    *p++ = '\r';
    *p++ = '\n';
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    evbuffer_commit_space(c->sock.out, &v, 1);
}

static void ds_resp_body(void *ctx, veer_exchange_t *x, struct evbuffer *data)
{
    veer_h1conn_t *c = ctx;
    size_t n = evbuffer_get_length(data);
    if (n == 0)
        return;
    if (c->resp_chunked) {
        char hdr[24];
        int len = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
        evbuffer_add(c->sock.out, hdr, (size_t)len);
        evbuffer_add_buffer(c->sock.out, data);
        evbuffer_add(c->sock.out, "\r\n", 2);
    } else {
        evbuffer_add_buffer(c->sock.out, data);
    }
}

static void ds_resp_end(void *ctx, veer_exchange_t *x)
{
    veer_h1conn_t *c = ctx;
    if (c->resp_chunked) {
        evbuffer_add(c->sock.out, "0\r\n", 3);
        for (uint32_t i = 0; i < x->resp.trailer_count; i++) {
            const veer_header_t *h = &x->resp.trailers[i];
            if (veer_header_is_hop_by_hop(h->name) || veer_header_name_is(h->name, "content-length", 14))
                continue;
            evbuffer_add(c->sock.out, h->name.base, h->name.len);
            evbuffer_add(c->sock.out, ": ", 2);
            evbuffer_add(c->sock.out, h->value.base, h->value.len);
            evbuffer_add(c->sock.out, "\r\n", 2);
        }
        evbuffer_add(c->sock.out, "\r\n", 2);
    }
    c->resp_complete = 1;
    if (x->close_after || !c->keepalive) {
        c->keepalive = 0;
        if (!c->req_complete) {
            /* the client is still sending: stop reading, close once written */
            c->req_complete = 1;
            c->closing = 1;
        }
    }
    if (c->req_complete && !c->parsing)
        finish_request(c);
}

static void ds_resp_abort(void *ctx, veer_exchange_t *x)
{
    veer_h1conn_t *c = ctx;
    /* the response is cut: RST so the client cannot take it for complete */
    struct linger lg = {1, 0};
    setsockopt(c->sock.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    c->sock.tls_fatal = 1; /* nor a TLS close_notify, which would end a close-delimited body cleanly */
    schedule_close(c);
}

static void ds_send_continue(void *ctx, veer_exchange_t *x)
{
    veer_h1conn_t *c = ctx;
    evbuffer_add(c->sock.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    veer_sock_flush(&c->sock);
}

static void ds_req_pause(void *ctx)
{
    veer_h1conn_t *c = ctx;
    c->body_paused = 1;
    veer_sock_read_disable(&c->sock);
}

static void ds_req_resume(void *ctx)
{
    veer_h1conn_t *c = ctx;
    if (!c->body_paused)
        return;
    c->body_paused = 0;
    if (c->sock.fd >= 0 && !c->closing) {
        veer_sock_read_enable(&c->sock);
        event_active(&c->resume_ev, 0, 0);
    }
}

static bool ds_resp_congested(void *ctx)
{
    veer_h1conn_t *c = ctx;
    return c->sock.out != NULL && evbuffer_get_length(c->sock.out) > c_config(c)->limits.buffer_bytes;
}

static void ds_resp_on_drain(void *ctx)
{
    veer_h1conn_t *c = ctx;
    c->wait_drain = 1;
    veer_sock_want_drain(&c->sock);
}

static void ds_flush(void *ctx)
{
    veer_h1conn_t *c = ctx;
    if (c->sock.fd >= 0)
        veer_sock_flush(&c->sock);
}

static const veer_ds_ops_t h1_ds_ops = {
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

/* ---- connection life ---- */

/* Both directions of the current request are done. */
static void finish_request(veer_h1conn_t *c)
{
    veer_exchange_t *x = c->x;
    c->x = NULL;
    c->req_complete = c->resp_complete = 0;
    c->body_paused = 0;
    c->wait_drain = 0;
    if (x != NULL)
        veer_exchange_free(x);
    if (c->sock.fd < 0 || c->dead) {
        schedule_close(c);
        return;
    }
    if (!c->keepalive || c->closing || c->draining) {
        c->closing = 1;
        veer_sock_read_disable(&c->sock);
        if (veer_sock_flush(&c->sock) < 0 || evbuffer_get_length(c->sock.out) == 0) {
            event_active(&c->resume_ev, 0, 0); /* close outside the caller's stack */
            return;
        }
        veer_sock_want_drain(&c->sock);
        return;
    }
    veer_sock_flush(&c->sock);
    veer_sock_read_enable(&c->sock);
    set_timer(c, c->w->idle_tv);
    if (evbuffer_get_length(c->sock.in) > 0)
        event_active(&c->resume_ev, 0, 0); /* the next pipelined request */
}

static void c_on_drain(veer_sock_t *s, void *arg)
{
    veer_h1conn_t *c = arg;
    if (c->closing && c->x == NULL) {
        event_active(&c->resume_ev, 0, 0);
        return;
    }
    if (c->wait_drain && c->x != NULL) {
        c->wait_drain = 0;
        veer_exchange_resp_drained(c->x);
    }
}

static void c_on_eof(veer_sock_t *s, void *arg, int err)
{
    veer_h1conn_t *c = arg;
    if (err == 0 && c->x != NULL && c->req_complete && !c->closing && c->sock.fd >= 0 && !c->sock.failed) {
        /* half-close after a whole request: answer it, then close */
        c->keepalive = 0;
        return;
    }
    veer_h1conn_close(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_h1conn_t *c = arg;
    c->header_timer_on = 0;
    if (c->sock.handshaking) {
        veer_tls_handshake_failed(c->w, false, c_config(c)->listeners[c->listener].name,
                                  (const struct sockaddr *)&c->peer, VEER_TLS_FAIL_TIMEOUT,
                                  "handshake not finished within header_timeout");
        veer_h1conn_close(c);
        return;
    }
    if (c->in_message && c->x != NULL && !c->x->started) {
        /* slow request head (slowloris): 408, then close */
        c->error_status = 408;
        c->error_msg = "request head not received in time";
        parse_error(c, HPE_USER);
        if (c->sock.fd >= 0)
            veer_sock_flush(&c->sock);
        return;
    }
    if (c->x == NULL)
        veer_h1conn_close(c); /* idle keep-alive connection */
}

static void resume_or_close_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_h1conn_t *c = arg;
    if (c->dead || c->sock.fd < 0 ||
        (c->closing && c->x == NULL && (c->sock.out == NULL || evbuffer_get_length(c->sock.out) == 0))) {
        veer_h1conn_close(c);
        return;
    }
    resume_cb(fd, what, arg);
}

veer_h1conn_t *veer_h1conn_new(veer_worker_t *w, int fd, const struct sockaddr *peer, socklen_t peerlen, int listener)
{
    pthread_once(&settings_once, settings_init);
    veer_h1conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (veer_sock_init(&c->sock, w->base, fd, &c_cbs, c) < 0) {
        free(c);
        return NULL;
    }
    c->w = w;
    c->listener = listener;
    memcpy(&c->peer, peer, peerlen < sizeof(c->peer) ? peerlen : sizeof(c->peer));
    llhttp_init(&c->parser, HTTP_REQUEST, &req_settings);
    c->parser.data = c;
    c->keepalive = 1;
    event_assign(&c->timer, w->base, -1, 0, timer_cb, c);
    event_assign(&c->resume_ev, w->base, -1, 0, resume_or_close_cb, c);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->conn_count++;
    SSL_CTX *tls = veer_tls_listener_ctx(w->ws->snap, listener);
    if (tls != NULL) {
        /* The handshake is bounded like a request head (slowloris). */
        set_timer(c, w->header_tv);
        if (veer_sock_tls_accept(&c->sock, tls) < 0)
            schedule_close(c); /* out of memory: closed from the loop */
        return c;
    }
    set_timer(c, w->idle_tv);
    veer_sock_read_enable(&c->sock);
    return c;
}

/* The TLS handshake ended: ALPN picks the codec. */
static void c_on_handshake(veer_sock_t *s, void *arg, int err)
{
    veer_h1conn_t *c = arg;
    if (err != 0) {
        veer_tls_handshake_failed(c->w, false, c_config(c)->listeners[c->listener].name,
                                  (const struct sockaddr *)&c->peer, veer_sock_tls_fail_kind(s), veer_sock_tls_error(s));
        veer_h1conn_close(c);
        return;
    }
    unsigned len = 0;
    const char *proto = veer_sock_alpn(s, &len);
    if (proto != NULL && len == 2 && memcmp(proto, "h2", 2) == 0) {
        veer_h1conn_upgrade_h2(c); /* c is gone either way */
        return;
    }
    set_timer(c, c->w->idle_tv);
}

void veer_h1conn_drain(veer_h1conn_t *c)
{
    c->draining = 1;
    if (c->x == NULL && !c->in_message)
        veer_h1conn_close(c);
}

static void unlink_conn(veer_h1conn_t *c)
{
    veer_worker_t *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->conn_count--;
}

void veer_h1conn_close(veer_h1conn_t *c)
{
    veer_worker_t *w = c->w;
    if (c->x != NULL) {
        veer_exchange_t *x = c->x;
        c->x = NULL;
        veer_exchange_free(x);
    }
    event_del(&c->timer);
    event_del(&c->resume_ev);
    veer_sock_close(&c->sock, false);
    unlink_conn(c);
    free(c);
    veer_worker_conn_closed(w);
}

int veer_h1conn_upgrade_h2(veer_h1conn_t *c)
{
    veer_worker_t *w = c->w;
    if (c->x != NULL || c->in_message)
        return -EBUSY; /* a request is under way: this connection stays HTTP/1.1 */
    event_del(&c->timer);
    event_del(&c->resume_ev);
    unlink_conn(c);
    /* The connection lives on as HTTP/2: no veer_worker_conn_closed here. */
    veer_h2conn_t *h2 = veer_h2conn_new(w, &c->sock, (const struct sockaddr *)&c->peer, sizeof(c->peer), c->listener);
    if (h2 == NULL) {
        veer_sock_close(&c->sock, true);
        free(c);
        veer_worker_conn_closed(w);
        return -ENOMEM;
    }
    free(c);
    return 0;
}
