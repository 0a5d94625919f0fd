/* sock.c - see sock.h. */
#include "sock.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"

static void sock_write_cb(evutil_socket_t fd, short what, void *arg);

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
        event_add(&s->rd, NULL);
    }
}

void veer_sock_read_disable(veer_sock_t *s)
{
    if (s->reading) {
        s->reading = 0;
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

int veer_sock_flush(veer_sock_t *s)
{
    if (s->fd < 0 || s->failed)
        return -1;
    if (s->connecting)
        return 0; /* written once connected */
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
    if (s->writing) {
        s->writing = 0;
        event_del(&s->wr);
    }
    if (s->want_drain) {
        s->want_drain = 0;
        if (s->cbs->on_drain)
            s->cbs->on_drain(s, s->arg);
    }
    return 0;
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
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
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
    if (rst) {
        struct linger lg = {1, 0};
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(s->fd);
    s->fd = -1;
    s->reading = s->writing = 0;
    evbuffer_free(s->in);
    evbuffer_free(s->out);
    s->in = s->out = NULL;
}
