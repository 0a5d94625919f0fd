/* sock.c - see sock.h. The plain path (sock_read_cb, sock_write_cb, the
 * evbuffer_write loop) is the hot one; TLS sockets get their own event
 * callbacks (tls_read_cb, tls_write_cb) so plain reads test nothing for it. */
#include "sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"

static void sock_write_cb(evutil_socket_t fd, short what, void *arg);
static void tls_read_cb(evutil_socket_t fd, short what, void *arg);
static void tls_write_cb(evutil_socket_t fd, short what, void *arg);
static int tls_flush(veer_sock_t *s);
static void tls_free(veer_sock_t *s, bool rst);

static void sock_read_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_sock_t *s = arg;
    /* Read into reserved space: evbuffer_read() would first ask the kernel
     * how much is readable (an ioctl per read). */
    struct evbuffer_iovec v[2];
    int nv = evbuffer_reserve_space(s->in, (ev_ssize_t)s->read_chunk, v, 2);
    ssize_t n = -1;
    if (nv > 0) {
        n = nv == 1 ? read(fd, v[0].iov_base, v[0].iov_len) : readv(fd, (struct iovec *)v, nv);
        if (n > 0) {
            size_t left = (size_t)n;
            for (int i = 0; i < nv; i++) {
                size_t take = v[i].iov_len < left ? v[i].iov_len : left;
                v[i].iov_len = take;
                left -= take;
            }
        } else {
            v[0].iov_len = 0;
            nv = 1;
        }
        int used = n > 0 ? (nv == 2 && v[1].iov_len > 0 ? 2 : 1) : 0;
        evbuffer_commit_space(s->in, v, used);
    } else {
        errno = ENOMEM;
    }
    if (n > 0) {
        s->cbs->on_read(s, s->arg);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    veer_sock_read_disable(s);
    s->cbs->on_eof(s, s->arg, n == 0 ? 0 : errno);
}

static int sock_setup(veer_sock_t *s, struct event_base *base, int fd, const veer_sock_cbs_t *cbs, void *arg)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->cbs = cbs;
    s->arg = arg;
    s->read_chunk = 16384;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    if (s->in == NULL || s->out == NULL) {
        if (s->in)
            evbuffer_free(s->in);
        if (s->out)
            evbuffer_free(s->out);
        s->in = s->out = NULL;
        s->fd = -1;
        return -1;
    }
    event_assign(&s->rd, base, fd, EV_READ | EV_PERSIST, sock_read_cb, s);
    event_assign(&s->wr, base, fd, EV_WRITE, sock_write_cb, s);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 0;
}

int veer_sock_init(veer_sock_t *s, struct event_base *base, int fd, const veer_sock_cbs_t *cbs, void *arg)
{
    return sock_setup(s, base, fd, cbs, arg);
}

int veer_sock_connect(veer_sock_t *s, struct event_base *base, const struct sockaddr *sa, socklen_t len,
                      const veer_sock_cbs_t *cbs, void *arg)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (sock_setup(s, base, fd, cbs, arg) < 0) {
        close(fd);
        return -1;
    }
    if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
        int err = errno;
        veer_sock_close(s, false);
        errno = err;
        return -1;
    }
    s->connecting = 1;
    s->writing = 1;
    event_add(&s->wr, NULL);
    return 0;
}

void veer_sock_read_enable(veer_sock_t *s)
{
    if (!s->reading && s->fd >= 0) {
        s->reading = 1;
        if (s->tls_rd_extra)
            s->tls_rd_extra = 0; /* already added for the writer */
        else
            event_add(&s->rd, NULL);
        /* Records OpenSSL already took off the socket raise no event. */
        if (s->ssl != NULL && !s->handshaking && SSL_has_pending(s->ssl))
            event_active(&s->rd, EV_READ, 0);
    }
}

void veer_sock_read_disable(veer_sock_t *s)
{
    if (s->reading) {
        s->reading = 0;
        if (s->tls_write_wants_read)
            s->tls_rd_extra = 1; /* the writer still needs it */
        else
            event_del(&s->rd);
    }
}

static void sock_arm_write(veer_sock_t *s)
{
    if (!s->writing) {
        s->writing = 1;
        event_add(&s->wr, NULL);
    }
}

static void sock_disarm_write(veer_sock_t *s)
{
    if (s->writing) {
        s->writing = 0;
        event_del(&s->wr);
    }
}

/* All queued bytes reached the kernel (plain or TLS): stop watching for
 * writability and tell an owner that asked for the drain. */
static int sock_flushed(veer_sock_t *s)
{
    sock_disarm_write(s);
    if (s->want_drain) {
        s->want_drain = 0;
        if (s->cbs->on_drain)
            s->cbs->on_drain(s, s->arg);
    }
    return 0;
}

/* The outcome of a non-blocking connect, read once the socket is writable. */
static int connect_error(evutil_socket_t fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    return err;
}

int veer_sock_flush(veer_sock_t *s)
{
    if (s->fd < 0 || s->failed)
        return -1;
    if (s->connecting)
        return 0; /* written once connected */
    if (s->ssl != NULL)
        return tls_flush(s);
    while (evbuffer_get_length(s->out) > 0) {
        int n = evbuffer_write(s->out, s->fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            sock_arm_write(s);
            return 0;
        }
        s->failed = 1;
        /* Report through the read side: the peer is gone. */
        if (!s->reading) {
            s->reading = 1;
            event_add(&s->rd, NULL);
        }
        event_active(&s->rd, EV_READ, 0);
        return -1;
    }
    return sock_flushed(s);
}

void veer_sock_want_drain(veer_sock_t *s)
{
    s->want_drain = 1;
}

static void sock_write_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_sock_t *s = arg;
    s->writing = 0;
    if (s->connecting) {
        int err = connect_error(fd);
        s->connecting = 0;
        s->cbs->on_connect(s, s->arg, err);
        return; /* the owner flushes or closes */
    }
    veer_sock_flush(s);
}

void veer_sock_close(veer_sock_t *s, bool rst)
{
    if (s->fd < 0)
        return;
    event_del(&s->rd);
    event_del(&s->wr);
    if (s->ssl != NULL)
        tls_free(s, rst);
    if (rst) {
        struct linger lg = {1, 0};
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(s->fd);
    s->fd = -1;
    s->reading = s->writing = s->tls_rd_extra = 0;
    evbuffer_free(s->in);
    evbuffer_free(s->out);
    s->in = s->out = NULL;
}

/* ---- TLS ----
 * OpenSSL reads and writes the fd itself. What it needs beyond a plain
 * socket: SSL_read may need the socket writable and SSL_write readable (both
 * rare after the handshake: TLS 1.3 key updates, no renegotiation), records
 * already decrypted raise no event (SSL_has_pending), and a write that would
 * block must be retried with the same bytes. Callbacks into the owner are
 * always the last thing a handler does: the owner may free the socket. */

#define TLS_WRITE_MAX 16384 /* one record's plaintext per SSL_write */

/* Point the events at the TLS (or plain) callbacks, keeping what is armed. */
static void assign_events(veer_sock_t *s, struct event_base *base, bool tls)
{
    bool rd = s->reading || s->tls_rd_extra, wr = s->writing;
    event_del(&s->rd);
    event_del(&s->wr);
    event_assign(&s->rd, base, s->fd, EV_READ | EV_PERSIST, tls ? tls_read_cb : sock_read_cb, s);
    event_assign(&s->wr, base, s->fd, EV_WRITE, tls ? tls_write_cb : sock_write_cb, s);
    if (rd)
        event_add(&s->rd, NULL);
    if (wr)
        event_add(&s->wr, NULL);
}

static void tls_arm_read(veer_sock_t *s)
{
    if (!s->reading) {
        s->reading = 1;
        if (s->tls_rd_extra)
            s->tls_rd_extra = 0;
        else
            event_add(&s->rd, NULL);
    }
}

static bool reason_is_cert(int reason)
{
    switch (reason) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_NO_CERTIFICATES_RETURNED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        return true;
    default:
        return false;
    }
}

/* Record why the handshake failed (static strings only: nothing to free) and
 * leave OpenSSL's thread error queue empty for the next connection. Returns
 * the errno reported to the owner. */
static int tls_note_failure(veer_sock_t *s, int ssl_err, int sys_errno)
{
    s->tls_fatal = 1;
    s->failed = 1;
    s->handshaking = 0;
    int err = EPROTO;
    if (ssl_err == SSL_ERROR_SSL) {
        unsigned long code = ERR_peek_error();
        int reason = ERR_GET_LIB(code) == ERR_LIB_SSL ? ERR_GET_REASON(code) : 0;
        long verify = SSL_get_verify_result(s->ssl);
        s->tls_fail_kind = reason_is_cert(reason) ? VEER_TLS_FAIL_CERT : VEER_TLS_FAIL_PROTOCOL;
        if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED && verify != X509_V_OK)
            s->tls_error = X509_verify_cert_error_string(verify);
        else if (code != 0 && ERR_reason_error_string(code) != NULL)
            s->tls_error = ERR_reason_error_string(code);
        else
            s->tls_error = "tls error";
        if (ERR_GET_LIB(code) == ERR_LIB_SYS || reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            s->tls_fail_kind = VEER_TLS_FAIL_CLOSED;
    } else if (ssl_err == SSL_ERROR_SYSCALL && sys_errno != 0) {
        s->tls_fail_kind = VEER_TLS_FAIL_CLOSED;
        s->tls_error = sys_errno == ECONNRESET ? "connection reset by peer" : "socket error";
        err = sys_errno;
    } else {
        s->tls_fail_kind = VEER_TLS_FAIL_CLOSED;
        s->tls_error = "connection closed by peer";
        err = ECONNRESET;
    }
    ERR_clear_error();
    return err;
}

static void tls_handshake(veer_sock_t *s)
{
    errno = 0;
    int r = SSL_do_handshake(s->ssl);
    int sys_errno = errno;
    if (r == 1) {
        s->handshaking = 0;
        if (evbuffer_get_length(s->out) == 0)
            sock_disarm_write(s);
        /* Application data that came with the last flight is in OpenSSL's
         * buffer already, and the kernel will not announce it again. */
        if (SSL_has_pending(s->ssl))
            event_active(&s->rd, EV_READ, 0);
        s->cbs->on_connect(s, s->arg, 0);
        return;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        tls_arm_read(s);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        if (!s->writing) {
            s->writing = 1;
            event_add(&s->wr, NULL);
        }
        return;
    }
    int err = tls_note_failure(s, e, sys_errno);
    veer_sock_read_disable(s);
    sock_disarm_write(s);
    s->cbs->on_connect(s, s->arg, err);
}

/* Decrypt into reserved space of s->in, as sock_read_cb reads. */
static void tls_read(veer_sock_t *s)
{
    struct evbuffer_iovec v[2];
    int nv = evbuffer_reserve_space(s->in, (ev_ssize_t)s->read_chunk, v, 2);
    int used = 0, r = 0, e = SSL_ERROR_NONE;
    size_t got = 0;
    int sys_errno = 0;
    if (nv <= 0) {
        veer_sock_read_disable(s);
        s->cbs->on_eof(s, s->arg, ENOMEM);
        return;
    }
    for (int i = 0; i < nv; i++) {
        errno = 0;
        r = SSL_read(s->ssl, v[i].iov_base, (int)v[i].iov_len);
        if (r <= 0) {
            sys_errno = errno;
            e = SSL_get_error(s->ssl, r);
            break;
        }
        bool short_read = (size_t)r < v[i].iov_len;
        v[i].iov_len = (size_t)r;
        got += (size_t)r;
        used = i + 1;
        if (short_read)
            break;
    }
    evbuffer_commit_space(s->in, v, used);
    if (got > 0) {
        if (e == SSL_ERROR_WANT_WRITE) {
            s->tls_read_wants_write = 1;
            event_active(&s->wr, EV_WRITE, 0);
        } else if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ) {
            if (e != SSL_ERROR_ZERO_RETURN)
                s->tls_fatal = 1;
            ERR_clear_error();
            event_active(&s->rd, EV_READ, 0); /* the error shows again on the next call */
        } else if (SSL_has_pending(s->ssl)) {
            event_active(&s->rd, EV_READ, 0); /* fairness: the rest on the next turn */
        }
        s->cbs->on_read(s, s->arg);
        return;
    }
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return;
    case SSL_ERROR_WANT_WRITE:
        s->tls_read_wants_write = 1;
        if (!s->writing) {
            s->writing = 1;
            event_add(&s->wr, NULL);
        }
        return;
    case SSL_ERROR_ZERO_RETURN:
        veer_sock_read_disable(s);
        s->cbs->on_eof(s, s->arg, 0);
        return;
    default:
        s->tls_fatal = 1;
        ERR_clear_error();
        veer_sock_read_disable(s);
        s->cbs->on_eof(s, s->arg, e == SSL_ERROR_SYSCALL && sys_errno != 0 ? sys_errno : ECONNRESET);
        return;
    }
}

static void tls_read_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_sock_t *s = arg;
    if (s->handshaking) {
        tls_handshake(s);
        return;
    }
    if (s->tls_write_wants_read) {
        s->tls_write_wants_read = 0;
        if (s->tls_rd_extra) {
            s->tls_rd_extra = 0;
            event_del(&s->rd);
        }
        event_active(&s->wr, EV_WRITE, 0); /* the writer goes on from its own callback */
    }
    if (s->failed && s->reading) {
        /* a write failed: report it here, as the plain path does */
        veer_sock_read_disable(s);
        s->cbs->on_eof(s, s->arg, EPIPE);
        return;
    }
    if (s->reading)
        tls_read(s);
}

static void tls_write_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_sock_t *s = arg;
    s->writing = 0;
    if (s->connecting) {
        int err = connect_error(fd);
        s->connecting = 0;
        if (err != 0) {
            s->cbs->on_connect(s, s->arg, err);
            return;
        }
    }
    if (s->handshaking) {
        tls_handshake(s);
        return;
    }
    if (s->tls_read_wants_write) {
        s->tls_read_wants_write = 0;
        event_active(&s->rd, EV_READ, 0);
    }
    tls_flush(s);
}

static int tls_flush(veer_sock_t *s)
{
    if (s->handshaking)
        return 0; /* written once the handshake is done */
    size_t left;
    while ((left = evbuffer_get_length(s->out)) > 0) {
        /* Always offer min(buffered, one record): the length never shrinks
         * between a blocked write and its retry, which OpenSSL requires (the
         * bytes are the same; the address may move, which the mode allows). */
        size_t want = left < TLS_WRITE_MAX ? left : TLS_WRITE_MAX;
        char copy[TLS_WRITE_MAX];
        struct evbuffer_iovec v;
        const void *p = copy;
        if (evbuffer_peek(s->out, (ev_ssize_t)want, NULL, &v, 1) >= 1 && v.iov_len >= want)
            p = v.iov_base;
        else
            evbuffer_copyout(s->out, copy, want);
        int n = SSL_write(s->ssl, p, (int)want);
        if (n > 0) {
            evbuffer_drain(s->out, (size_t)n);
            continue;
        }
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE) {
            sock_arm_write(s);
            return 0;
        }
        if (e == SSL_ERROR_WANT_READ) {
            s->tls_write_wants_read = 1;
            if (!s->reading && !s->tls_rd_extra) {
                s->tls_rd_extra = 1;
                event_add(&s->rd, NULL);
            }
            return 0;
        }
        s->failed = 1;
        s->tls_fatal = 1;
        ERR_clear_error();
        tls_arm_read(s);
        event_active(&s->rd, EV_READ, 0);
        return -1;
    }
    return sock_flushed(s);
}

static void tls_free(veer_sock_t *s, bool rst)
{
    /* close_notify, best effort and without waiting: never after a fatal
     * error (OpenSSL forbids it) nor mid-handshake. */
    if (!rst && !s->tls_fatal && !s->handshaking)
        SSL_shutdown(s->ssl);
    SSL_free(s->ssl);
    s->ssl = NULL;
    ERR_clear_error();
}

static int tls_start(veer_sock_t *s, SSL_CTX *ctx)
{
    if (s->fd < 0 || s->ssl != NULL)
        return -1;
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, s->fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return -1;
    }
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    s->ssl = ssl;
    s->handshaking = 1;
    s->tls_error = NULL;
    assign_events(s, event_get_base(&s->rd), true);
    return 0;
}

int veer_sock_tls_accept(veer_sock_t *s, SSL_CTX *ctx)
{
    if (tls_start(s, ctx) < 0)
        return -1;
    SSL_set_accept_state(s->ssl);
    /* The ClientHello may not be there yet: wait for it rather than try a
     * read that would only say EAGAIN. */
    tls_arm_read(s);
    return 0;
}

static bool is_ip_literal(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

int veer_sock_tls_connect(veer_sock_t *s, SSL_CTX *ctx, const char *sni, const unsigned char *alpn_wire,
                          size_t alpn_len)
{
    if (tls_start(s, ctx) < 0)
        return -1;
    SSL *ssl = s->ssl;
    SSL_set_connect_state(ssl);
    int ok = 1;
    if (sni != NULL && sni[0] != '\0') {
        bool ip = is_ip_literal(sni);
        if (!ip) /* RFC 6066: literal addresses are not sent as a server name */
            ok = SSL_set_tlsext_host_name(ssl, sni) == 1;
        if (ok && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER)) {
            X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
            X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, sni) == 1 : X509_VERIFY_PARAM_set1_host(param, sni, 0) == 1;
        }
    }
    if (ok && alpn_wire != NULL)
        ok = SSL_set_alpn_protos(ssl, alpn_wire, (unsigned)alpn_len) == 0; /* 0 is success here */
    if (!ok) {
        event_del(&s->rd);
        event_del(&s->wr);
        s->ssl = NULL;
        s->handshaking = 0;
        SSL_free(ssl);
        ERR_clear_error();
        assign_events(s, event_get_base(&s->rd), false);
        return -1;
    }
    /* Once TCP is up the ClientHello goes out from the write callback: the
     * result never reaches the owner inside this call. */
    if (!s->writing) {
        s->writing = 1;
        event_add(&s->wr, NULL);
    }
    return 0;
}

const char *veer_sock_alpn(const veer_sock_t *s, unsigned *len)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    if (s->ssl != NULL)
        SSL_get0_alpn_selected(s->ssl, &p, &n);
    if (len != NULL)
        *len = n;
    return n > 0 ? (const char *)p : NULL;
}

void veer_sock_move(veer_sock_t *dst, veer_sock_t *src, const veer_sock_cbs_t *cbs, void *arg)
{
    struct event_base *base = event_get_base(&src->rd);
    event_del(&src->rd);
    event_del(&src->wr);
    *dst = *src;
    dst->cbs = cbs;
    dst->arg = arg;
    if (dst->fd >= 0) {
        assign_events(dst, base, dst->ssl != NULL);
        if (dst->ssl != NULL && !dst->handshaking && dst->reading && SSL_has_pending(dst->ssl))
            event_active(&dst->rd, EV_READ, 0);
    }
    src->fd = -1;
    src->ssl = NULL;
    src->in = src->out = NULL;
    src->reading = src->writing = src->tls_rd_extra = 0;
}
