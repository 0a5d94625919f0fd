/* upstream.h - HTTP/1.1 client connections to endpoints, pooled per worker
 * per endpoint (keep-alive reuse). A connection carries one exchange at a time;
 * when the response ends cleanly it goes back to the endpoint's idle list in
 * this worker's slot, bounded by limits.max_idle_upstream. */
#ifndef VEER_UPSTREAM_H
#define VEER_UPSTREAM_H

#include <event2/event_struct.h>
#include <llhttp.h>

#include "cluster.h"
#include "sock.h"

struct veer_exchange_s;
struct veer_worker_s;
struct veer_snapshot_s;

typedef struct veer_upconn_s {
    veer_sock_t sock;
    struct veer_worker_s *w;
    veer_endpoint_t *ep;          /* referenced */
    struct veer_exchange_s *x;    /* current exchange, NULL when idle */
    struct veer_upconn_s *next_idle;
    llhttp_t parser;
    struct event timer;           /* connect (+ TLS handshake) timeout, then idle timeout */
    SSL_CTX *tls_ctx;             /* the cluster context it was made with, NULL: plain */
    struct veer_breaker_s *breaker; /* holds one max_connections slot of it; NULL: none */
    uint32_t requests;            /* served on this connection */
    uint64_t connect_start_us;    /* monotonic, for the exchange's connect time */
    unsigned connected : 1, reused : 1, keepalive : 1, chunked_req : 1, in_trailers : 1, got_bytes : 1,
        last_was_value : 1, head_done : 1;
    /* header accumulation for the response being parsed */
    char *cur_name, *cur_value;
    size_t cur_name_len, cur_value_len;
    struct evbuffer *body; /* scratch for body chunks handed to the exchange */
} veer_upconn_t;

/* A connection to ep for x: an idle one from the pool, or a new one. NULL
 * with errno when a socket cannot even be created. snap/cluster: the
 * exchange's, for the cluster's TLS (an idle connection made with another
 * TLS context, e.g. before a reload, is closed instead of reused). */
veer_upconn_t *veer_upconn_get(struct veer_worker_s *w, veer_endpoint_t *ep, uint64_t connect_timeout_ms,
                               bool fresh, const struct veer_snapshot_s *snap, int cluster);
/* Send the request head (serialized from x->req). */
int veer_upconn_send_head(veer_upconn_t *uc, struct veer_exchange_s *x);
void veer_upconn_send_body(veer_upconn_t *uc, const char *data, size_t len);
void veer_upconn_send_end(veer_upconn_t *uc);
void veer_upconn_flush(veer_upconn_t *uc);
bool veer_upconn_congested(veer_upconn_t *uc);
void veer_upconn_pause_read(veer_upconn_t *uc);
void veer_upconn_resume_read(veer_upconn_t *uc);
/* The exchange is done with the connection: pool it when reusable, else close. */
void veer_upconn_release(veer_upconn_t *uc, bool reusable);
/* Close every idle connection of this worker's slot of ep. */
void veer_upconn_close_idle(struct veer_worker_s *w, veer_endpoint_t *ep);

#endif
