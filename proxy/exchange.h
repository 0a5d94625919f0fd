/* exchange.h - the protocol-neutral request/response exchange between a
 * downstream codec (HTTP/1.1 today, HTTP/2 next) and an upstream codec. Like
 * h2o's proxy generator: the codecs know nothing of routes and clusters; the
 * exchange picks the route, the cluster and the endpoint, and moves heads,
 * body chunks and trailers between the two sides with backpressure.
 *
 * Life: a codec takes an exchange with veer_exchange_new(), fills x->req and
 * calls veer_exchange_start(); request body chunks follow through
 * veer_exchange_req_body() and veer_exchange_req_end(). The response comes back
 * through the downstream ops. The codec calls veer_exchange_free() once it has
 * sent the response end (or aborted). Everything the request allocates lives
 * in x->arena and dies with the exchange. */
#ifndef VEER_EXCHANGE_H
#define VEER_EXCHANGE_H

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "arena.h"
#include "http.h"
#include "retry.h"
#include "trace.h"
#include "worker.h"

struct veer_upconn_s;
typedef struct veer_exchange_s veer_exchange_t;

typedef struct veer_req_s {
    veer_iov_t method, path, authority, scheme;
    veer_header_t *headers; /* names lower-case, hop-by-hop removed */
    uint32_t header_count, header_cap;
    veer_header_t *trailers; /* set before veer_exchange_req_end (HTTP/2 clients) */
    uint32_t trailer_count, trailer_cap;
    int64_t content_length;  /* -1: unknown (chunked) */
    bool has_body;
    bool expect_continue;
    bool http10;
} veer_req_t;

typedef struct veer_resp_s {
    int status;
    veer_header_t *headers;  /* hop-by-hop removed */
    uint32_t header_count, header_cap;
    veer_header_t *trailers;
    uint32_t trailer_count, trailer_cap;
    int64_t content_length;  /* -1: unknown */
    bool has_body;           /* false for HEAD, 204, 304 */
} veer_resp_t;

/* What the exchange asks of the downstream codec. */
typedef struct veer_ds_ops_s {
    void (*resp_head)(void *ctx, veer_exchange_t *x);
    void (*resp_body)(void *ctx, veer_exchange_t *x, struct evbuffer *data); /* drains data */
    void (*resp_end)(void *ctx, veer_exchange_t *x);   /* trailers in x->resp */
    void (*resp_abort)(void *ctx, veer_exchange_t *x); /* failed after the head was sent: reset */
    void (*send_continue)(void *ctx, veer_exchange_t *x);
    void (*req_pause)(void *ctx);   /* stop reading the request body */
    void (*req_resume)(void *ctx);
    bool (*resp_congested)(void *ctx); /* downstream output above the high watermark */
    void (*resp_on_drain)(void *ctx);  /* ask for veer_exchange_resp_drained() when it drains */
    void (*flush)(void *ctx);
} veer_ds_ops_t;

typedef enum {
    VEER_FAIL_NONE = 0,
    VEER_FAIL_CONNECT,  /* connect refused / timed out */
    VEER_FAIL_RESET,    /* upstream closed or reset before the response ended */
    VEER_FAIL_TIMEOUT,  /* route timeout */
    VEER_FAIL_PROTOCOL, /* upstream sent an invalid response */
} veer_fail_t;

struct veer_exchange_s {
    veer_worker_t *w;
    veer_wsnap_t *ws;
    const veer_ds_ops_t *ds;
    void *ds_ctx;
    struct veer_upconn_s *up;
    struct veer_h2up_stream_s *h2s; /* HTTP/2 upstream stream (h2up.c), instead of up */
    veer_endpoint_t *ep;
    const struct sockaddr *client_addr;
    bool client_tls;
    int route, cluster;
    veer_req_t req;
    veer_resp_t resp;
    veer_arena_t arena;
    struct event timer; /* route timeout */
    uint64_t start_us;
    char request_id[VEER_REQUEST_ID_MAX + 1];
    size_t request_id_len;
    char traceparent[VEER_TRACEPARENT_LEN + 1]; /* sent upstream; "" until veer_exchange_start */
    /* What happened and when, for the access log (and stats). */
    const veer_endpoint_t *served_by;         /* the endpoint picked (x->ep is cleared on detach) */
    uint64_t up_start_us, up_head_us, end_us; /* monotonic: first upstream attempt, response head, last byte */
    uint64_t connect_us;  /* a new upstream connection's connect (+ TLS) time; 0: none made */
    uint64_t req_body_bytes, resp_body_bytes;
    int listener;         /* index into config->listeners, set by the codec */
    uint8_t http_version; /* 20: set by the HTTP/2 codec; 0: HTTP/1.x (req.http10 tells which) */
    uint8_t fail;         /* the veer_fail_t that ended the exchange, 0 if none */
    uint16_t log_flags;   /* VEER_AL_* (accesslog.h) noted along the way, e.g. overflow */
    int16_t grpc_status;  /* of the response (trailers, or a trailers-only head) or a gRPC local reply; -1: none */
    bool grpc_failed;     /* grpc_status counts as a failure (route key failure_grpc_status) */
    unsigned started : 1, req_ended : 1, resp_head_sent : 1, resp_ended : 1, timer_on : 1, retried : 1,
        up_bytes_seen : 1, local_reply : 1, close_after : 1;
    /* Resilience (resilience.h, retry.h): the cluster's breaker entry, the
     * attempt under way (reported to outlier detection when it ends), the
     * request body kept for a replay, and the per-try/backoff timer. */
    struct veer_resil_cluster_s *resil;
    struct evbuffer *replay;     /* NULL: no body kept (none, too big, or no retries) */
    struct evbuffer *mirror_body; /* mirror.c: the body kept for a canary copy until its end; NULL: none */
    struct event try_timer;
    uint64_t attempt_start_us;
    uint64_t deadline_ms;        /* monotonic ms of the route (or grpc-timeout) deadline; 0: none */
    uint64_t conn_wait_deadline_ms; /* while waiting for a max_connections slot */
    veer_retry_tried_t tried;
    uint8_t attempts;            /* made so far */
    unsigned holds_request : 1, holds_retry : 1, attempt_open : 1, discarding : 1, try_timer_on : 1,
        in_backoff : 1, waiting_conn : 1;
    veer_exchange_t *next_free;
    char arena_inline[3072];
};

veer_exchange_t *veer_exchange_new(veer_worker_t *w, const veer_ds_ops_t *ds, void *ds_ctx);
/* The request head is complete in x->req: route it and start the upstream. */
void veer_exchange_start(veer_exchange_t *x);
void veer_exchange_req_body(veer_exchange_t *x, const char *data, size_t len);
void veer_exchange_req_end(veer_exchange_t *x);
/* End of a downstream read: send what the request body produced so far. */
void veer_exchange_flush_upstream(veer_exchange_t *x);
/* Downstream went away (client closed): cancel the upstream side. */
void veer_exchange_cancel(veer_exchange_t *x);
/* The downstream output drained after resp_on_drain. */
void veer_exchange_resp_drained(veer_exchange_t *x);
void veer_exchange_free(veer_exchange_t *x);

/* Answer locally with a JSON body {"error","route","cluster","request_id"}. */
void veer_exchange_local_reply(veer_exchange_t *x, int status, const char *error, bool close);

/* Append a header to a request/response list (arena-allocated list). */
int veer_exchange_add_header(veer_exchange_t *x, veer_header_t **list, uint32_t *count, uint32_t *cap,
                             veer_iov_t name, veer_iov_t value);

/* Called by the upstream codec. */
void veer_exchange_on_resp_head(veer_exchange_t *x);
void veer_exchange_on_resp_body(veer_exchange_t *x, struct evbuffer *data);
void veer_exchange_on_resp_end(veer_exchange_t *x);
void veer_exchange_on_upstream_fail(veer_exchange_t *x, veer_fail_t why);
/* The upstream output drained: resume reading the request body. */
void veer_exchange_on_upstream_drain(veer_exchange_t *x);

/* An upstream connection gave back its max_connections slot: wake the
 * worker's oldest waiting request (deferred to the event loop). */
void veer_exchange_conn_freed(veer_worker_t *w);
/* Free the worker's connection-wait queue (at worker exit, no exchange left). */
void veer_exchange_worker_free(veer_worker_t *w);

#endif
