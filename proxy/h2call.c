/* h2call.c - one HTTP/2 request over its own connection (see h2call.h): a
 * veer_sock_t (plain or TLS) carrying an nghttp2 client session that is fed
 * with mem_recv/mem_send. nghttp2 callbacks only record what happened; the
 * call is finished after the library returns, never from inside it. */
#include "h2call.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "headers.h"
#include "sock.h"

struct veer_h2call_s {
    veer_sock_t sock;
    struct event timer;
    nghttp2_session *ng;
    int32_t stream_id;
    bool tls;
    bool connected;
    bool done; /* res is decided: finish once nghttp2 has returned */
    uint32_t goaway_code;
    bool goaway_seen;
    size_t head_bytes;
    uint8_t *req_body;
    size_t req_body_len, req_body_off;
    veer_h2call_done_cb cb;
    void *arg;
    veer_h2call_result_t res;
    uint8_t body[VEER_H2CALL_MAX_BODY];
};

const char *veer_h2call_failure_name(veer_h2call_failure_t failure)
{
    switch (failure) {
    case VEER_H2CALL_OK: return "ok";
    case VEER_H2CALL_CONNECT: return "connect failure";
    case VEER_H2CALL_TLS: return "TLS failure";
    case VEER_H2CALL_TIMEOUT: return "timeout";
    case VEER_H2CALL_PROTOCOL: return "protocol error";
    }
    return "failure";
}

static void call_fail(veer_h2call_t *c, veer_h2call_failure_t failure, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The first decision wins: a later symptom (EOF after RST_STREAM) is noise. */
static void call_fail(veer_h2call_t *c, veer_h2call_failure_t failure, const char *fmt, ...)
{
    if (c->done)
        return;
    c->done = true;
    c->res.failure = failure;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->res.detail, sizeof c->res.detail, fmt, ap);
    va_end(ap);
}

static void call_free(veer_h2call_t *c, bool rst)
{
    event_del(&c->timer);
    veer_sock_close(&c->sock, rst);
    if (c->ng != NULL)
        nghttp2_session_del(c->ng);
    free(c->req_body);
    free(c);
}

/* Queue what nghttp2 wants to send and write it. -1: the session failed. */
static int call_pump(veer_h2call_t *c)
{
    if (!c->connected)
        return 0;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->ng, &data);
        if (n < 0) {
            call_fail(c, VEER_H2CALL_PROTOCOL, "HTTP/2 send: %s", nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0)
            break;
        if (evbuffer_add(c->sock.out, data, (size_t)n) != 0) {
            call_fail(c, VEER_H2CALL_PROTOCOL, "out of memory");
            return -1;
        }
    }
    veer_sock_flush(&c->sock);
    return 0;
}

static void call_finish(veer_h2call_t *c)
{
    bool ok = c->res.failure == VEER_H2CALL_OK;
    if (ok && c->ng != NULL) {
        /* GOAWAY, then an orderly close: the peer sees a clean shutdown. */
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        call_pump(c);
    }
    c->res.body = c->body;
    c->cb(c->arg, c, &c->res);
    call_free(c, !ok);
}

static int on_header_cb(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    veer_h2call_t *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != c->stream_id)
        return 0;
    c->head_bytes += namelen + valuelen;
    if (c->head_bytes > VEER_H2CALL_MAX_HEAD) {
        call_fail(c, VEER_H2CALL_PROTOCOL, "response head over %d bytes", VEER_H2CALL_MAX_HEAD);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int status = veer_http_status_parse((const char *)value, valuelen);
        if (status >= 200) /* 1xx heads are interim */
            c->res.status = status;
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        c->res.grpc_status = veer_grpc_status_parse((const char *)value, valuelen);
    }
    return 0;
}

static int on_data_chunk_recv_cb(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                                 void *user_data)
{
    veer_h2call_t *c = user_data;
    if (id != c->stream_id)
        return 0;
    size_t room = c->res.body_total < VEER_H2CALL_MAX_BODY ? VEER_H2CALL_MAX_BODY - (size_t)c->res.body_total : 0;
    size_t n = len < room ? len : room;
    memcpy(c->body + c->res.body_len, data, n);
    c->res.body_len += n;
    c->res.body_total += len;
    return 0;
}

static int on_frame_recv_cb(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    veer_h2call_t *c = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        c->goaway_seen = true;
        c->goaway_code = frame->goaway.error_code;
        if (frame->goaway.last_stream_id < c->stream_id)
            call_fail(c, VEER_H2CALL_PROTOCOL, "GOAWAY before the answer (%s)",
                      nghttp2_http2_strerror(frame->goaway.error_code));
        return 0;
    }
    if (frame->hd.stream_id != c->stream_id || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    if (c->res.status == 0)
        call_fail(c, VEER_H2CALL_PROTOCOL, "response without a final :status");
    else
        c->done = true; /* complete: res.failure stays OK */
    return 0;
}

static int on_stream_close_cb(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user_data)
{
    veer_h2call_t *c = user_data;
    if (id != c->stream_id)
        return 0;
    if (c->goaway_seen)
        call_fail(c, VEER_H2CALL_PROTOCOL, "GOAWAY (%s), stream closed (%s)", nghttp2_http2_strerror(c->goaway_code),
                  nghttp2_http2_strerror(error_code));
    else
        call_fail(c, VEER_H2CALL_PROTOCOL, "RST_STREAM %s", nghttp2_http2_strerror(error_code));
    return 0;
}

static ssize_t read_body_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *data_flags,
                            nghttp2_data_source *source, void *user_data)
{
    veer_h2call_t *c = user_data;
    size_t left = c->req_body_len - c->req_body_off;
    size_t n = left < length ? left : length;
    memcpy(buf, c->req_body + c->req_body_off, n);
    c->req_body_off += n;
    if (c->req_body_off == c->req_body_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void call_on_read(veer_sock_t *s, void *arg)
{
    veer_h2call_t *c = arg;
    while (!c->done && evbuffer_get_length(s->in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(s->in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t rv = nghttp2_session_mem_recv(c->ng, v.iov_base, v.iov_len);
        if (rv < 0) {
            call_fail(c, VEER_H2CALL_PROTOCOL, "invalid HTTP/2 from the peer: %s", nghttp2_strerror((int)rv));
            break;
        }
        evbuffer_drain(s->in, (size_t)rv);
    }
    if (!c->done)
        call_pump(c);
    if (c->done)
        call_finish(c);
}

static void call_on_eof(veer_sock_t *s, void *arg, int err)
{
    veer_h2call_t *c = arg;
    if (err != 0)
        call_fail(c, VEER_H2CALL_PROTOCOL, "connection failed: %s", strerror(err));
    else
        call_fail(c, VEER_H2CALL_PROTOCOL, "connection closed before the answer");
    call_finish(c);
}

static void call_on_drain(veer_sock_t *s, void *arg)
{
}

static void call_on_connect(veer_sock_t *s, void *arg, int err)
{
    veer_h2call_t *c = arg;
    if (err != 0) {
        if (c->tls && (err == EPROTO || s->tls_error != NULL))
            call_fail(c, VEER_H2CALL_TLS, "TLS handshake: %s", veer_sock_tls_error(s));
        else
            call_fail(c, VEER_H2CALL_CONNECT, "connect: %s", strerror(err));
        call_finish(c);
        return;
    }
    if (c->tls) {
        unsigned len = 0;
        const char *alpn = veer_sock_alpn(s, &len);
        if (alpn == NULL || len != 2 || memcmp(alpn, "h2", 2) != 0) {
            call_fail(c, VEER_H2CALL_TLS, "the peer did not select ALPN h2");
            call_finish(c);
            return;
        }
    }
    c->connected = true;
    veer_sock_read_enable(s);
    call_pump(c);
    if (c->done)
        call_finish(c);
}

static const veer_sock_cbs_t call_cbs = {call_on_read, call_on_eof, call_on_drain, call_on_connect};

static void call_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_h2call_t *c = arg;
    if (c->sock.connecting)
        call_fail(c, VEER_H2CALL_CONNECT, "connect timed out");
    else if (c->sock.handshaking)
        call_fail(c, VEER_H2CALL_TLS, "TLS handshake timed out");
    else
        call_fail(c, VEER_H2CALL_TIMEOUT, "no complete response in time");
    call_finish(c);
}

static int call_session_new(veer_h2call_t *c, const veer_h2call_request_t *req)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close_cb);
    int rv = nghttp2_session_client_new(&c->ng, cbs, c);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, VEER_H2CALL_MAX_HEAD},
    };
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0)
        return -1;

#define NV(n, v) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE})
    nghttp2_nv nva[4 + VEER_H2CALL_MAX_HEADERS];
    size_t n = 0;
    nva[n++] = NV(":method", req->method);
    nva[n++] = NV(":scheme", c->tls ? "https" : "http");
    nva[n++] = NV(":authority", req->authority);
    nva[n++] = NV(":path", req->path);
    for (size_t i = 0; i < req->header_count; i++)
        nva[n++] = NV(req->headers[i].name, req->headers[i].value);
#undef NV
    nghttp2_data_provider body = {.source = {.ptr = NULL}, .read_callback = read_body_cb};
    /* nghttp2 copies the header block; the body is ours (copied in start). */
    c->stream_id = nghttp2_submit_request(c->ng, NULL, nva, n, c->req_body != NULL ? &body : NULL, NULL);
    return c->stream_id > 0 ? 0 : -1;
}

veer_h2call_t *veer_h2call_start(struct event_base *base, const struct sockaddr *addr, socklen_t addrlen,
                                 SSL_CTX *tls_ctx, const char *sni, const veer_h2call_request_t *req,
                                 veer_h2call_done_cb cb, void *arg)
{
    if (req->method == NULL || req->path == NULL || req->authority == NULL ||
        req->header_count > VEER_H2CALL_MAX_HEADERS)
        return NULL;
    veer_h2call_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->sock.fd = -1;
    c->cb = cb;
    c->arg = arg;
    c->tls = tls_ctx != NULL;
    c->res.grpc_status = -1;
    event_assign(&c->timer, base, -1, 0, call_timeout_cb, c);
    if (req->body != NULL && req->body_len > 0) {
        c->req_body = malloc(req->body_len);
        if (c->req_body == NULL) {
            free(c);
            return NULL;
        }
        memcpy(c->req_body, req->body, req->body_len);
        c->req_body_len = req->body_len;
    }
    if (call_session_new(c, req) != 0) {
        if (c->ng != NULL)
            nghttp2_session_del(c->ng);
        free(c->req_body);
        free(c);
        return NULL;
    }
    if (veer_sock_connect(&c->sock, base, addr, addrlen, &call_cbs, c) < 0) {
        nghttp2_session_del(c->ng);
        free(c->req_body);
        free(c);
        return NULL;
    }
    static const unsigned char alpn_h2[] = {2, 'h', '2'};
    if (c->tls && veer_sock_tls_connect(&c->sock, tls_ctx, sni, alpn_h2, sizeof alpn_h2) < 0) {
        call_free(c, true);
        return NULL;
    }
    struct timeval tv = {(time_t)(req->timeout_ms / 1000), (suseconds_t)(req->timeout_ms % 1000) * 1000};
    event_add(&c->timer, &tv);
    return c;
}

void veer_h2call_cancel(veer_h2call_t *call)
{
    call_free(call, true);
}
