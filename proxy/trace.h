/* trace.h - request identity on the way upstream: the x-request-id that ties
 * veer's access log and local replies to the service's own logs, and W3C
 * Trace Context (traceparent/tracestate, https://www.w3.org/TR/trace-context/).
 * Pure functions over a header list and caller-owned buffers: no clock, no
 * I/O; randomness comes from the caller. Unit-tested in tests/unit/test_trace.c.
 *
 * Policy: a client's x-request-id is kept when it is 1..128 visible ASCII
 * bytes, else replaced. A valid traceparent continues the trace: same trace-id
 * and flags, veer's own span id as the new parent-id, tracestate untouched.
 * An absent or invalid one starts a new trace (random trace-id, sampled with
 * probability trace.sample_percent) and any tracestate is dropped, since it
 * belonged to the refused traceparent. */
#ifndef VEER_TRACE_H
#define VEER_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

#define VEER_REQUEST_ID_MAX 128
#define VEER_TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define VEER_TRACE_FLAG_SAMPLED 0x01

typedef struct veer_traceparent_s {
    uint8_t version;
    uint8_t trace_id[16];
    uint8_t parent_id[8];
    uint8_t flags;
} veer_traceparent_t;

/* Why a traceparent value was refused. */
enum {
    VEER_TRACE_OK = 0,
    VEER_TRACE_ELENGTH = -1,  /* version 00 not exactly 55 bytes, a later version shorter than 55 */
    VEER_TRACE_ELAYOUT = -2,  /* dashes not at 2, 35, 52, or a later version not followed by a dash at 55 */
    VEER_TRACE_EHEX = -3,     /* a field that is not lower-case hex */
    VEER_TRACE_EVERSION = -4, /* version ff */
    VEER_TRACE_EZERO = -5,    /* trace-id or parent-id all zero */
    VEER_TRACE_EDUPLICATE = -6, /* more than one traceparent field */
};

/* A random 32-bit number; the caller's generator (a worker's, a test's). */
typedef uint32_t (*veer_trace_rand_fn)(void *ctx);

/* 1..VEER_REQUEST_ID_MAX bytes, each 0x21..0x7e. */
bool veer_trace_request_id_valid(veer_iov_t id);

/* Parse one traceparent value (OWS already trimmed). A version above 00 is
 * read as the spec asks of a version-00 implementation: its first 55 bytes in
 * the 00 layout, followed by the end or a dash; the rest is ignored. */
int veer_trace_parse(veer_iov_t value, veer_traceparent_t *out);

/* Format as version 00 (whatever version was parsed): exactly
 * VEER_TRACEPARENT_LEN bytes, plus a NUL. */
void veer_trace_format(const veer_traceparent_t *tp, char out[VEER_TRACEPARENT_LEN + 1]);

/* Fill n random bytes, never all zero (an all-zero id is invalid). */
void veer_trace_random_id(uint8_t *out, size_t n, veer_trace_rand_fn rnd, void *ctx);

typedef struct veer_trace_result_s {
    bool request_id_kept;  /* the client's x-request-id was valid */
    bool trace_continued;  /* a valid traceparent came in */
    bool sampled;          /* the sampled flag of what goes upstream */
    int traceparent_error; /* VEER_TRACE_E* of a refused one; 0 when valid or absent */
} veer_trace_result_t;

/* Apply the policy to a request's header list (names lower-case). Removes
 * every x-request-id and traceparent field (and tracestate when the trace is
 * restarted), keeping the order of the others, and returns the new count. The
 * caller then appends "x-request-id: request_id" and "traceparent: traceparent"
 * from the buffers filled here: request_id[VEER_REQUEST_ID_MAX + 1] with its
 * length in *request_id_len, traceparent[VEER_TRACEPARENT_LEN + 1].
 * sample_percent (0..100) decides the sampled flag of a new trace. */
uint32_t veer_trace_headers(veer_header_t *headers, uint32_t count, char *request_id, size_t *request_id_len,
                            char *traceparent, uint32_t sample_percent, veer_trace_rand_fn rnd, void *rnd_ctx,
                            veer_trace_result_t *result);

/* A new request id (32 lower-case hex characters, NUL-terminated); 32. */
size_t veer_trace_new_request_id(char out[33], veer_trace_rand_fn rnd, void *ctx);

#endif
