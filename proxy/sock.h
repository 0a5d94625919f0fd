/* sock.h - a non-blocking TCP connection with an input and an output evbuffer.
 * Reads use one persistent read event (registered once, toggled only for
 * backpressure); writes are attempted at once when flushed and a write event
 * is armed only when the kernel would block. This keeps the request path at
 * the minimum of syscalls: epoll_wait, read, write per hop.
 *
 * Backpressure: the owner disables reading when the other side's output is
 * above its high watermark, and gets on_drain when this side's output falls
 * to zero after having been above it (veer_sock_want_drain). */
#ifndef VEER_SOCK_H
#define VEER_SOCK_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct veer_sock_s veer_sock_t;

typedef struct veer_sock_cbs_s {
    void (*on_read)(veer_sock_t *s, void *arg);       /* bytes appended to s->in */
    void (*on_eof)(veer_sock_t *s, void *arg, int err); /* peer closed (err 0) or failed (errno) */
    void (*on_drain)(veer_sock_t *s, void *arg);      /* output fully written after want_drain */
    void (*on_connect)(veer_sock_t *s, void *arg, int err); /* outgoing connect finished */
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
/* Close the fd and free the buffers. Safe to call twice. rst: send RST (SO_LINGER 0). */
void veer_sock_close(veer_sock_t *s, bool rst);

#endif
