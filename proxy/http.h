/* http.h - small protocol-neutral HTTP types shared by the codecs, the
 * exchange and the router: byte ranges and header fields. Nothing here owns
 * memory; the bytes live in a request's arena or a parser's input. */
#ifndef VEER_HTTP_H
#define VEER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct veer_iov_s {
    const char *base;
    size_t len;
} veer_iov_t;

#define VEER_IOV_LIT(s) ((veer_iov_t){(s), sizeof(s) - 1})

/* One header field. Names of request headers are lower-cased by the codec
 * (HTTP/2 requires it; HTTP/1.1 names are case-insensitive). */
typedef struct veer_header_s {
    veer_iov_t name;
    veer_iov_t value;
} veer_header_t;

static inline bool veer_iov_eq(veer_iov_t a, const char *s, size_t n)
{
    return a.len == n && (n == 0 || __builtin_memcmp(a.base, s, n) == 0);
}

#endif
