/* h2.h - the HTTP/2 downstream codec (nghttp2, server side). Each stream is
 * an exchange through the same router and clusters as HTTP/1.1; request and
 * response bodies stream with HTTP/2 flow control tied to the other side's
 * backpressure. A plain listener's connection becomes HTTP/2 when its first
 * bytes are the client preface (h2c prior knowledge, detected by h1.c); a TLS
 * listener's connection when ALPN selected "h2".
 *
 * The small pure pieces (budgets and the frame-boundary tracker behind the
 * attack mitigations) are inline here so tests/unit/test_h2.c drives them
 * with a fake clock. */
#ifndef VEER_H2_H
#define VEER_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sock.h"
#include "worker.h"

typedef struct veer_h2conn_s veer_h2conn_t;

/* The 24 bytes every HTTP/2 client connection starts with (RFC 9113 §3.4). */
#define VEER_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define VEER_H2_PREFACE_LEN 24

/* Take over a connected (and, for TLS, handshaken) socket: the fd, the TLS
 * state and the bytes already read (s->in, which may hold the preface). On
 * success the caller's veer_sock_t is left empty (fd -1) and must not be used
 * after; the connection counts in w->conn_count until it closes (then
 * veer_worker_conn_closed). On failure (out of memory) returns NULL and the
 * socket is still the caller's. */
veer_h2conn_t *veer_h2conn_new(veer_worker_t *w, veer_sock_t *s, const struct sockaddr *peer, socklen_t peerlen,
                               int listener);
/* Graceful: GOAWAY, finish the open streams, then close. */
void veer_h2conn_drain(veer_h2conn_t *c);
/* Now: every open stream is cancelled. */
void veer_h2conn_close(veer_h2conn_t *c);
/* For the worker's drain, stop and free: every HTTP/2 connection of w. */
void veer_h2_drain_all(veer_worker_t *w);
void veer_h2_close_all(veer_worker_t *w);

/* ---- pure helpers (no clock of their own: the caller passes now_ms) ---- */

/* A token bucket in thousandths of a token: rate tokens per second, at most
 * burst. It starts full. */
typedef struct veer_h2_bucket_s {
    uint64_t millitokens;
    uint64_t last_ms;
    bool primed;
} veer_h2_bucket_t;

/* Take one token; false when none is left (the budget is spent). */
static inline bool veer_h2_bucket_take(veer_h2_bucket_t *b, uint64_t now_ms, uint32_t rate, uint32_t burst)
{
    uint64_t cap = (uint64_t)burst * 1000;
    if (!b->primed) {
        b->primed = true;
        b->millitokens = cap;
        b->last_ms = now_ms;
    } else if (now_ms > b->last_ms) {
        uint64_t add = (now_ms - b->last_ms) * rate; /* rate/s = rate millitokens per ms */
        b->millitokens = add >= cap - b->millitokens ? cap : b->millitokens + add;
        b->last_ms = now_ms;
    }
    if (b->millitokens < 1000)
        return false;
    b->millitokens -= 1000;
    return true;
}

/* Events counted in fixed one-second windows. */
typedef struct veer_h2_window_s {
    uint64_t start_ms;
    uint32_t count;
} veer_h2_window_t;

/* Count one event; true when the window now holds more than max. */
static inline bool veer_h2_window_over(veer_h2_window_t *win, uint64_t now_ms, uint32_t max)
{
    if (win->count == 0 || now_ms - win->start_ms >= 1000) {
        win->start_ms = now_ms;
        win->count = 0;
    }
    return ++win->count > max;
}

/* Follows frame boundaries in the bytes a client sends (after the preface)
 * to tell whether a header block is incomplete: a HEADERS frame whose
 * END_HEADERS frame has not fully arrived. nghttp2 keeps that state private,
 * and the header-read timeout (slowloris over HTTP/2) needs it. */
typedef struct veer_h2_framer_s {
    uint32_t preface_left; /* set to VEER_H2_PREFACE_LEN at start */
    uint32_t payload_left;
    uint32_t blocks;       /* header blocks begun so far */
    uint8_t hdr[9];
    uint8_t hdr_have;
    bool in_frame;    /* inside a frame's payload */
    bool frame_ends_block;
    bool block_open;  /* a header block began and has not ended */
} veer_h2_framer_t;

static inline void veer_h2_framer_frame_done(veer_h2_framer_t *f)
{
    f->in_frame = false;
    if (f->frame_ends_block)
        f->block_open = false;
}

static inline void veer_h2_framer_feed(veer_h2_framer_t *f, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (f->preface_left > 0) {
            size_t skip = n < f->preface_left ? n : f->preface_left;
            f->preface_left -= (uint32_t)skip;
            p += skip;
            n -= skip;
            continue;
        }
        if (f->in_frame) {
            size_t take = n < f->payload_left ? n : f->payload_left;
            f->payload_left -= (uint32_t)take;
            p += take;
            n -= take;
            if (f->payload_left == 0)
                veer_h2_framer_frame_done(f);
            continue;
        }
        f->hdr[f->hdr_have++] = *p++;
        n--;
        if (f->hdr_have < 9)
            continue;
        f->hdr_have = 0;
        uint8_t type = f->hdr[3], flags = f->hdr[4];
        f->payload_left = ((uint32_t)f->hdr[0] << 16) | ((uint32_t)f->hdr[1] << 8) | f->hdr[2];
        f->in_frame = true;
        f->frame_ends_block = false;
        if (type == 0x1 || type == 0x5 || type == 0x9) { /* HEADERS, PUSH_PROMISE, CONTINUATION */
            if (type != 0x9)
                f->blocks++;
            f->block_open = true;
            f->frame_ends_block = (flags & 0x4) != 0; /* END_HEADERS */
        }
        if (f->payload_left == 0)
            veer_h2_framer_frame_done(f);
    }
}

/* True while a header block is incomplete (a frame of it is partial, or a
 * CONTINUATION is still due). */
static inline bool veer_h2_framer_in_headers(const veer_h2_framer_t *f)
{
    return f->block_open;
}

#endif
