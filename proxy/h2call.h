/* h2call.h - one HTTP/2 request on its own new connection (h2c with prior
 * knowledge, or TLS with ALPN h2), for side traffic that must not share the
 * exchange's pooled upstream connections: active health checks (gRPC health
 * included) and, later, mirroring to HTTP/2 canaries. Runs on one event base;
 * the connection ends with GOAWAY once the response is complete.
 *
 * Bounded by design: the response head and trailers may hold at most
 * VEER_H2CALL_MAX_HEAD bytes, the first VEER_H2CALL_MAX_BODY body bytes are
 * kept and the rest is read (flow control stays open) and discarded. */
#ifndef VEER_H2CALL_H
#define VEER_H2CALL_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct ssl_ctx_st SSL_CTX;

#define VEER_H2CALL_MAX_HEAD 16384 /* name + value bytes of the response head + trailers */
#define VEER_H2CALL_MAX_BODY 1024  /* response body bytes kept */
#define VEER_H2CALL_MAX_HEADERS 32 /* extra request headers */

typedef enum {
    VEER_H2CALL_OK = 0,       /* a complete response (any :status) */
    VEER_H2CALL_CONNECT = 1,  /* TCP connect failed */
    VEER_H2CALL_TLS = 2,      /* TLS handshake failed, or the peer did not pick ALPN h2 */
    VEER_H2CALL_TIMEOUT = 3,  /* no complete response within the timeout */
    VEER_H2CALL_PROTOCOL = 4, /* bad HTTP/2, RST_STREAM, GOAWAY before the answer, EOF, limits */
} veer_h2call_failure_t;

typedef struct veer_h2call_header_s {
    const char *name; /* lowercase, no pseudo-headers */
    const char *value;
} veer_h2call_header_t;

typedef struct veer_h2call_request_s {
    const char *method;    /* "GET", "POST" ... */
    const char *path;      /* ":path", starts with '/' */
    const char *authority; /* ":authority" (host[:port]) */
    const veer_h2call_header_t *headers; /* extra headers, copied at start */
    size_t header_count;                 /* at most VEER_H2CALL_MAX_HEADERS */
    const uint8_t *body;                 /* copied at start; NULL/0: no body (END_STREAM on HEADERS) */
    size_t body_len;
    uint64_t timeout_ms;   /* bounds connect, handshake and the whole response */
} veer_h2call_request_t;

typedef struct veer_h2call_result_s {
    veer_h2call_failure_t failure; /* OK: the fields below describe the response */
    int status;                    /* :status; 0 when none arrived */
    int grpc_status;               /* grpc-status from the head or trailers as a client reads it
                                    * (veer_grpc_status_parse: malformed is 2); -1 when absent */
    const uint8_t *body;           /* the first body_len bytes; valid during the callback only */
    size_t body_len;
    uint64_t body_total;           /* all body bytes received (more than body_len: truncated) */
    char detail[96];               /* failure: human-readable reason ("RST_STREAM 7", TLS error) */
} veer_h2call_result_t;

typedef struct veer_h2call_s veer_h2call_t;

/* Called once with the outcome; the call is freed after it returns and must
 * not be cancelled from inside it. */
typedef void (*veer_h2call_done_cb)(void *arg, veer_h2call_t *call, const veer_h2call_result_t *res);

/* Connect to addr and send req. tls_ctx non-NULL: TLS with ALPN "h2" and
 * server name sni (NULL: none; verified when tls_ctx asks for it), scheme
 * https; else h2c with prior knowledge, scheme http. Returns NULL when the
 * socket or the request cannot be set up (nothing will be reported). */
veer_h2call_t *veer_h2call_start(struct event_base *base, const struct sockaddr *addr, socklen_t addrlen,
                                 SSL_CTX *tls_ctx, const char *sni, const veer_h2call_request_t *req,
                                 veer_h2call_done_cb cb, void *arg);

/* Abandon a call without a callback (resets its connection). */
void veer_h2call_cancel(veer_h2call_t *call);

const char *veer_h2call_failure_name(veer_h2call_failure_t failure);

#endif
