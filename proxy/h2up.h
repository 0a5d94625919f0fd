/* h2up.h - HTTP/2 upstream (client side): h2c with prior knowledge, and h2
 * over TLS with ALPN. Per worker and endpoint, a few multiplexed nghttp2
 * sessions (cluster key connections_per_endpoint) each carry up to
 * min(max_streams_per_connection, the peer's SETTINGS_MAX_CONCURRENT_STREAMS)
 * exchanges as streams; requests beyond that wait in a FIFO, holding a slot of
 * the cluster's max_pending_requests breaker (breaker.h) while they wait. The
 * exchange drives a stream with the same verbs as an HTTP/1.1 upstream
 * connection (upstream.h).
 *
 * Flow control follows the downstream: response DATA is given back to the
 * peer's stream window only once the downstream took it without congestion,
 * so a slow client holds at most one stream window (limits.buffer_bytes) per
 * stream in veer; the connection window is returned at once so one slow
 * stream never stalls the others.
 *
 * Requests the upstream provably did not process are sent again by this
 * module, bodies included while they fit in limits.buffer_bytes: once after
 * RST_STREAM REFUSED_STREAM (when the route's retry.on has refused-stream, as
 * by default) on another connection if there is one, and up to 8 times when
 * above the last-stream-id of a GOAWAY, on a new connection. */
#ifndef VEER_H2UP_H
#define VEER_H2UP_H

#include <stdbool.h>
#include <stddef.h>

#include "cluster.h"
#include "config.h"

struct veer_exchange_s;
struct veer_worker_s;
typedef struct veer_h2up_stream_s veer_h2up_stream_t;
typedef struct veer_h2up_pool_s veer_h2up_pool_t;

/* veer_h2up_start() when the pending FIFO is full. */
#define VEER_H2UP_EOVERFLOW (-2)

/* Start x's request (x->req, to x->ep of cluster x->cluster) as a stream: at
 * once when a connection has room, else queued. Protocol h2 connects with the
 * cluster's TLS context from x's snapshot (tls.h). Sets x->h2s and returns 0;
 * VEER_H2UP_EOVERFLOW when the FIFO is full; -1 when no connection could even
 * be started. Never calls back into x before returning. */
int veer_h2up_start(struct veer_exchange_s *x, const veer_cluster_config_t *cc);

/* Request body bytes and end (no request trailers: the exchange has none). */
void veer_h2up_send_body(veer_h2up_stream_t *s, const char *data, size_t len);
void veer_h2up_send_end(veer_h2up_stream_t *s);
/* Write what the session has to send (no-op while inside its callbacks:
 * the I/O handler sends afterwards). */
void veer_h2up_flush(veer_h2up_stream_t *s);
/* More request body is queued than limits.buffer_bytes. */
bool veer_h2up_congested(const veer_h2up_stream_t *s);
/* Call veer_exchange_on_upstream_drain() once the queued body went out. */
void veer_h2up_want_drain(veer_h2up_stream_t *s);
/* The downstream is congested: hold the stream's window (the peer stops
 * sending on it); resume gives it back. */
void veer_h2up_pause_read(veer_h2up_stream_t *s);
void veer_h2up_resume_read(veer_h2up_stream_t *s);
/* The exchange is done with the stream: cancel it (RST_STREAM) unless both
 * directions ended. x->h2s must be cleared by the caller. */
void veer_h2up_release(veer_h2up_stream_t *s);

/* Close this worker's idle HTTP/2 connections to ep (drain, retired endpoint). */
void veer_h2up_close_idle(struct veer_worker_s *w, veer_endpoint_t *ep);
/* At worker exit: close everything, detach what is left. */
void veer_h2up_pool_free(struct veer_worker_s *w);

#endif
