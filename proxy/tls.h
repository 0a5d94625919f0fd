/* tls.h - TLS with OpenSSL for listeners (ALPN h2 / http/1.1, optional mTLS)
 * and for clusters (CA verification, SNI and hostname check, optional client
 * certificate). TLS 1.2 and 1.3 only. Contexts are built when a config is
 * loaded, kept with the runtime snapshot of that config, and built afresh on
 * every reload (certificate rotation); a connection keeps the context it
 * started with (SSL_CTX is reference counted).
 *
 * The byte stream itself is handled inside veer_sock_t (sock.h): after
 * veer_sock_tls_accept()/veer_sock_tls_connect() the owner sees plaintext in
 * s->in and writes plaintext to s->out, exactly as on a plain socket. */
#ifndef VEER_TLS_H
#define VEER_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "sock.h"

struct veer_snapshot_s;
struct veer_worker_s;
struct veer_endpoint_s;

/* One set of contexts per loaded config: [listener_count] server contexts
 * (NULL for plain listeners) and [cluster_count] client contexts (NULL for
 * plain clusters). Immutable once built. */
typedef struct veer_tls_set_s {
    SSL_CTX **listeners;
    size_t listener_count;
    SSL_CTX **clusters;
    size_t cluster_count;
} veer_tls_set_t;

/* Build every context the config asks for (an empty set for a config without
 * TLS). On failure returns NULL and writes one line per problem to err, each
 * naming the key and the file with OpenSSL's or the system's reason:
 * `listeners[1].tls.key: /etc/veer/tls.key: cannot open: No such file or
 * directory`. Warns in the log for every cluster with insecure_skip_verify. */
veer_tls_set_t *veer_tls_set_new(const veer_config_t *cfg, char *err, size_t errlen);
void veer_tls_set_free(veer_tls_set_t *set);

/* The snapshot's server context of a listener / client context of a cluster,
 * NULL when plain. */
SSL_CTX *veer_tls_listener_ctx(const struct veer_snapshot_s *snap, int listener);
SSL_CTX *veer_tls_cluster_ctx(const struct veer_snapshot_s *snap, int cluster);

/* The name an upstream connection sends as SNI and verifies the certificate
 * against: the cluster's tls.sni, else the endpoint's configured host (an IP
 * literal is verified against the certificate's IP SANs and not sent). */
const char *veer_tls_cluster_server_name(const struct veer_snapshot_s *snap, int cluster,
                                         const struct veer_endpoint_s *ep);

/* For a connecting upstream socket (right after veer_sock_connect): when the
 * cluster uses TLS, start the client handshake with the cluster's context,
 * server name and ALPN ("http/1.1" for protocol http1, "h2" for h2). on_connect
 * then reports TCP connect + handshake. Returns 0 (plain: nothing to do), or
 * -1 when the TLS state cannot be created. */
int veer_tls_upstream_start(veer_sock_t *s, const struct veer_snapshot_s *snap, int cluster,
                            const struct veer_endpoint_s *ep);

/* The same for a connection driven by worker `worker` (its event loop): when
 * the cluster's tls.session_reuse is on, the handshake resumes the session
 * last made with ep by that worker under the same context (so the same CA,
 * SNI and client certificate: a reload builds new contexts and the old
 * session is dropped), and the session the handshake yields (TLS 1.2 on
 * completion, TLS 1.3 when a ticket arrives) replaces it in ep's slot of that
 * worker. The slot is freed with the endpoint. */
int veer_tls_upstream_start_worker(veer_sock_t *s, const struct veer_snapshot_s *snap, int cluster,
                                   struct veer_endpoint_s *ep, uint32_t worker);

/* Completed upstream handshakes of a cluster (by name) since start, full and
 * resumed, over every config the cluster appeared in (health probes and
 * mirror copies included). Zeros for a cluster never loaded with TLS. */
void veer_tls_upstream_handshakes(const char *cluster, uint64_t *full, uint64_t *resumed);

/* Per worker: bounds the handshake-failure log lines (a scanner must not
 * flood the log). */
typedef struct veer_tls_log_limit_s {
    uint64_t window_start_ms;
    uint32_t lines;       /* logged in the current window */
    uint64_t suppressed;  /* not logged since the last line */
} veer_tls_log_limit_t;

#define VEER_TLS_LOG_LINES_PER_SEC 10

/* A handshake failed (downstream: name is the listener's; upstream: the
 * cluster's): count it by kind in the worker's stats and log one JSON line
 * with the peer address and OpenSSL's reason, rate-limited per worker. */
void veer_tls_handshake_failed(struct veer_worker_s *w, bool upstream, const char *name, const struct sockaddr *peer,
                               veer_tls_fail_t kind, const char *reason);

#endif
