/* sock.h - a non-blocking TCP connection with an input and an output evbuffer.
 * Reads use one persistent read event (registered once, toggled only for
 * backpressure); writes are attempted at once when flushed and a write event
 * is armed only when the kernel would block. This keeps the request path at
 * the minimum of syscalls: epoll_wait, read, write per hop.
 *
 * Backpressure: the owner disables reading when the other side's output is
 * above its high watermark, and gets on_drain when this side's output falls
 * to zero after having been above it (veer_sock_want_drain).
 *
 * TLS (OpenSSL on the non-blocking fd, no memory BIOs): after
 * veer_sock_tls_accept()/veer_sock_tls_connect() the socket runs the handshake
 * on its own events and reports its end through on_connect; from then on
 * s->in and s->out carry plaintext and every call below behaves as for a plain
 * socket. A plain socket pays one predictable branch per flush for this. */
#ifndef VEER_SOCK_H
#define VEER_SOCK_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct veer_sock_s veer_sock_t;
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

/* Why a TLS handshake failed, for counters (cheap to tell apart). */
typedef enum {
    VEER_TLS_FAIL_PROTOCOL = 0, /* not TLS, no common version/cipher, bad message */
    VEER_TLS_FAIL_CERT = 1,     /* a certificate was missing, unknown or did not verify */
    VEER_TLS_FAIL_CLOSED = 2,   /* the peer closed or reset the connection mid-handshake */
    VEER_TLS_FAIL_TIMEOUT = 3,  /* set by the owner, whose timer it is */
    VEER_TLS_FAIL_KINDS = 4,
} veer_tls_fail_t;

typedef struct veer_sock_cbs_s {
    void (*on_read)(veer_sock_t *s, void *arg);       /* bytes appended to s->in */
    void (*on_eof)(veer_sock_t *s, void *arg, int err); /* peer closed (err 0) or failed (errno) */
    void (*on_drain)(veer_sock_t *s, void *arg);      /* output fully written after want_drain */
    /* Outgoing connect finished; for TLS, when the handshake finished (both
     * sides): err 0, or an errno (EPROTO: handshake failed, see
     * veer_sock_tls_error). */
    void (*on_connect)(veer_sock_t *s, void *arg, int err);
} veer_sock_cbs_t;

struct veer_sock_s {
    int fd;
    struct event rd, wr;
    struct evbuffer *in, *out;
    const veer_sock_cbs_t *cbs;
    void *arg;
    size_t read_chunk;
    unsigned reading : 1;   /* read event added */
    unsigned writing : 1;   /* write event added */
    unsigned connecting : 1;
    unsigned want_drain : 1;
    unsigned failed : 1;    /* write error seen */
    unsigned handshaking : 1;        /* TLS handshake in progress */
    unsigned tls_fatal : 1;          /* TLS failed: no close_notify may be sent */
    unsigned tls_read_wants_write : 1; /* SSL_read needs the socket writable */
    unsigned tls_write_wants_read : 1; /* SSL_write needs the socket readable */
    unsigned tls_rd_extra : 1;       /* read event added for the writer while the owner does not read */
    unsigned tls_fail_kind : 2;      /* veer_tls_fail_t of a failed handshake */
    SSL *ssl;                        /* NULL: plain */
    const char *tls_error;           /* static text: why the handshake failed */
};

int veer_sock_init(veer_sock_t *s, struct event_base *base, int fd, const veer_sock_cbs_t *cbs, void *arg);
/* Start a non-blocking connect; on_connect reports the result. */
int veer_sock_connect(veer_sock_t *s, struct event_base *base, const struct sockaddr *sa, socklen_t len,
                      const veer_sock_cbs_t *cbs, void *arg);
void veer_sock_read_enable(veer_sock_t *s);
void veer_sock_read_disable(veer_sock_t *s);
/* Write what s->out holds; arms the write event if the kernel is full.
 * Returns 0, or -1 when the connection failed (on_eof follows from the loop). */
int veer_sock_flush(veer_sock_t *s);
/* Ask for on_drain once the output buffer is empty. */
void veer_sock_want_drain(veer_sock_t *s);
/* Close the fd and free the buffers. Safe to call twice. rst: send RST
 * (SO_LINGER 0); otherwise a TLS socket first sends close_notify (best effort). */
void veer_sock_close(veer_sock_t *s, bool rst);

/* Move a live socket (plain or TLS, handshaken or not) to dst, e.g. when a
 * connection changes codec: its fd, buffers, TLS state and armed events, now
 * reporting to cbs/arg. src is left closed-empty (fd -1). */
void veer_sock_move(veer_sock_t *dst, veer_sock_t *src, const veer_sock_cbs_t *cbs, void *arg);

/* Start the server side of a TLS handshake on an accepted socket, or the
 * client side on a connecting/connected one (call it right after
 * veer_sock_connect: on_connect then reports TCP connect + handshake).
 * sni: the server name to send and verify (a DNS name, or an IP literal that
 * is verified against the certificate's IP SANs and not sent), NULL for none;
 * verification happens when ctx asks for it (SSL_VERIFY_PEER). alpn_wire:
 * protocols in ALPN wire format, NULL to keep ctx's. Returns 0, or -1 (out of
 * memory) with the socket unchanged. The result always comes from the loop. */
int veer_sock_tls_accept(veer_sock_t *s, SSL_CTX *ctx);
int veer_sock_tls_connect(veer_sock_t *s, SSL_CTX *ctx, const char *sni, const unsigned char *alpn_wire,
                          size_t alpn_len);
/* The negotiated ALPN protocol (not NUL-terminated), NULL when none or plain. */
const char *veer_sock_alpn(const veer_sock_t *s, unsigned *len);
/* After a failed handshake: OpenSSL's reason (static text) and its kind. */
static inline const char *veer_sock_tls_error(const veer_sock_t *s)
{
    return s->tls_error != NULL ? s->tls_error : "unknown";
}
static inline veer_tls_fail_t veer_sock_tls_fail_kind(const veer_sock_t *s)
{
    return (veer_tls_fail_t)s->tls_fail_kind;
}

#endif
