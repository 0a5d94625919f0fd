/* h1.h - the HTTP/1.1 downstream codec: parses requests with llhttp (strict
 * RFC 9112 framing), hands each one to an exchange, and writes responses back
 * in order. One request is in flight per connection; pipelined requests wait
 * in the input buffer (bounded) and are parsed when the previous response has
 * been written, so responses are always in request order. */
#ifndef VEER_H1_H
#define VEER_H1_H

#include <llhttp.h>
#include <sys/socket.h>

#include "exchange.h"
#include "sock.h"
#include "worker.h"

typedef struct veer_h1conn_s {
    veer_sock_t sock;
    veer_worker_t *w;
    int listener;
    struct sockaddr_storage peer;
    llhttp_t parser;
    veer_exchange_t *x;
    struct event timer;     /* header-read or idle timeout */
    struct event resume_ev; /* parse pipelined input outside the callback stack */
    struct veer_h1conn_s *prev, *next;
    size_t head_bytes;
    uint64_t body_bytes;
    uint32_t host_count;
    char *cur_name, *cur_value, *url;
    const char *seg_base, *field_end, *value_end;
    uint32_t seg_no, field_seg;     /* which llhttp_execute() call */ /* obs-fold detection */
    size_t cur_name_len, cur_value_len, url_len;
    int error_status;
    const char *error_msg;
    unsigned last_was_value : 1, req_complete : 1, resp_complete : 1, in_message : 1, keepalive : 1, closing : 1,
        resp_chunked : 1, body_paused : 1, wait_drain : 1, draining : 1, parsing : 1, dead : 1, header_timer_on : 1,
        value_done : 1, lf_after_field : 1, value_at_seg_end : 1;
} veer_h1conn_t;

/* Take over an accepted socket. */
veer_h1conn_t *veer_h1conn_new(veer_worker_t *w, int fd, const struct sockaddr *peer, socklen_t peerlen, int listener);
/* Graceful: close now when idle, else after the current response. */
void veer_h1conn_drain(veer_h1conn_t *c);
void veer_h1conn_close(veer_h1conn_t *c);
/* Hand the connection (its socket, plain or TLS, with the bytes already read)
 * to the HTTP/2 codec and free c: for the h2c preface (h1.c does it) and for
 * TLS when ALPN selected "h2". Call it before any request was parsed, from
 * the loop (not from inside veer_h1conn_* callbacks of another connection).
 * Returns 0 (c is gone), -EBUSY when the connection is mid-request (it stays
 * HTTP/1.1, c unchanged), or -ENOMEM (the connection was closed, c is gone). */
int veer_h1conn_upgrade_h2(veer_h1conn_t *c);

#endif
