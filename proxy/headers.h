/* headers.h - header field rules for forwarding (RFC 9110 §7.6.1, RFC 9112):
 * which fields are hop-by-hop, which bytes are legal, and the sanitizer that
 * turns a received header list into the list forwarded to the other side.
 * Pure functions: unit-tested in tests/unit/test_headers.c. */
#ifndef VEER_HEADERS_H
#define VEER_HEADERS_H

#include "http.h"

/* True for Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding,
 * Upgrade (and Proxy-Authenticate/Proxy-Authorization are NOT hop-by-hop here:
 * they are forwarded). name is compared case-insensitively. */
bool veer_header_is_hop_by_hop(veer_iov_t name);

/* RFC 9110 field-name token characters only, non-empty. */
bool veer_header_name_valid(veer_iov_t name);

/* No NUL, CR or LF, and no other control character except HTAB. */
bool veer_header_value_valid(veer_iov_t value);

/* Remove, in place and keeping order, every hop-by-hop field and every field
 * named by a Connection header's comma-separated tokens (case-insensitive).
 * Returns the new count; entries past it are left in no particular order.
 * Sets *te_trailers when a TE header lists "trailers" (HTTP/2 needs to know),
 * and clears it otherwise; te_trailers may be NULL. Callers add their own
 * fields (X-Forwarded-For, Via, framing) after this, so a Connection header
 * cannot name them away. */
size_t veer_headers_strip_hop_by_hop(veer_header_t *headers, size_t count, bool *te_trailers);

/* Case-insensitive compare of a header name with a lower-case literal. */
bool veer_header_name_is(veer_iov_t name, const char *lower, size_t len);

/* True when a comma-separated field value (Connection, TE, Upgrade, ...)
 * lists the token, compared case-insensitively with a lower-case literal;
 * whitespace around elements and ";param" suffixes are ignored, so
 * "gzip;q=0.5, Trailers" lists "trailers". */
bool veer_header_list_has_token(veer_iov_t value, const char *lower, size_t len);

/* A status code: exactly three digits, 100..999; 0 when it is not one. */
int veer_http_status_parse(const char *digits, size_t len);

/* A grpc-status value as a gRPC client reads it: 0..255, and anything that
 * is not a decimal code in that range is 2 (UNKNOWN). */
int veer_grpc_status_parse(const char *value, size_t len);

#endif
