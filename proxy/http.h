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

/* Decimal digits of v at p; returns the end. */
static inline char *veer_put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

/* "name: <v>\r\n" at p (name includes ": "); returns the end. */
static inline char *veer_put_header_u64(char *p, const char *name, size_t name_len, uint64_t v)
{
    __builtin_memcpy(p, name, name_len);
    p = veer_put_u64(p + name_len, v);
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* The reason phrase for a status line (RFC 9110 §15). */
static inline const char *veer_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

#endif
