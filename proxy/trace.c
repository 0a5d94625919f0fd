/* trace.c - x-request-id and W3C traceparent/tracestate handling (see
 * trace.h). Runs once per request on the worker, so it makes one pass over
 * the header list and never allocates. */
#include "trace.h"

#include <string.h>

static const char hex_digits[] = "0123456789abcdef";

bool veer_trace_request_id_valid(veer_iov_t id)
{
    if (id.len == 0 || id.len > VEER_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < id.len; i++) {
        unsigned char c = (unsigned char)id.base[i];
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    return true;
}

/* Lower-case hex only: the spec makes upper case invalid, so that two
 * spellings of one id cannot exist. */
static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool parse_hex(const char *s, size_t nbytes, uint8_t *out)
{
    for (size_t i = 0; i < nbytes; i++) {
        int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

int veer_trace_parse(veer_iov_t value, veer_traceparent_t *out)
{
    const char *s = value.base;
    if (value.len < 2)
        return VEER_TRACE_ELENGTH;
    uint8_t version;
    if (!parse_hex(s, 1, &version))
        return VEER_TRACE_EHEX;
    if (version == 0xff)
        return VEER_TRACE_EVERSION;
    if (value.len < VEER_TRACEPARENT_LEN || (version == 0 && value.len != VEER_TRACEPARENT_LEN))
        return VEER_TRACE_ELENGTH;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return VEER_TRACE_ELAYOUT;
    /* A later version may append fields, but only after a dash. */
    if (value.len > VEER_TRACEPARENT_LEN && s[VEER_TRACEPARENT_LEN] != '-')
        return VEER_TRACE_ELAYOUT;
    veer_traceparent_t tp = {.version = version};
    if (!parse_hex(s + 3, 16, tp.trace_id) || !parse_hex(s + 36, 8, tp.parent_id) || !parse_hex(s + 53, 1, &tp.flags))
        return VEER_TRACE_EHEX;
    if (all_zero(tp.trace_id, sizeof(tp.trace_id)) || all_zero(tp.parent_id, sizeof(tp.parent_id)))
        return VEER_TRACE_EZERO;
    *out = tp;
    return VEER_TRACE_OK;
}

static char *put_hex(char *p, const uint8_t *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        *p++ = hex_digits[bytes[i] >> 4];
        *p++ = hex_digits[bytes[i] & 15];
    }
    return p;
}

void veer_trace_format(const veer_traceparent_t *tp, char out[VEER_TRACEPARENT_LEN + 1])
{
    char *p = out;
    *p++ = '0';
    *p++ = '0';
    *p++ = '-';
    p = put_hex(p, tp->trace_id, sizeof(tp->trace_id));
    *p++ = '-';
    p = put_hex(p, tp->parent_id, sizeof(tp->parent_id));
    *p++ = '-';
    p = put_hex(p, &tp->flags, 1);
    *p = '\0';
}

void veer_trace_random_id(uint8_t *out, size_t n, veer_trace_rand_fn rnd, void *ctx)
{
    do {
        for (size_t i = 0; i < n; i += 4) {
            uint32_t r = rnd(ctx);
            for (size_t k = 0; k < 4 && i + k < n; k++)
                out[i + k] = (uint8_t)(r >> (8 * k));
        }
    } while (all_zero(out, n));
}

size_t veer_trace_new_request_id(char out[33], veer_trace_rand_fn rnd, void *ctx)
{
    uint8_t bytes[16];
    veer_trace_random_id(bytes, sizeof(bytes), rnd, ctx);
    *put_hex(out, bytes, sizeof(bytes)) = '\0';
    return 32;
}

/* The trace to send upstream: the caller's continued with veer as the new
 * parent, or a new one. Flags of a version-00 parent pass unchanged (bits
 * this version does not define are the caller's business, e.g. Level 2's
 * random flag); a later version is sent as 00, so only the bits 00 defines
 * (sampled, random) are kept. */
static void outgoing_trace(const veer_traceparent_t *in, bool valid, uint32_t sample_percent, veer_trace_rand_fn rnd,
                           void *ctx, veer_traceparent_t *out)
{
    if (valid) {
        *out = *in;
        if (in->version != 0)
            out->flags &= 0x03;
    } else {
        memset(out, 0, sizeof(*out));
        veer_trace_random_id(out->trace_id, sizeof(out->trace_id), rnd, ctx);
        out->flags = (rnd(ctx) % 100) < sample_percent ? VEER_TRACE_FLAG_SAMPLED : 0;
    }
    out->version = 0;
    veer_trace_random_id(out->parent_id, sizeof(out->parent_id), rnd, ctx);
}

uint32_t veer_trace_headers(veer_header_t *headers, uint32_t count, char *request_id, size_t *request_id_len,
                            char *traceparent, uint32_t sample_percent, veer_trace_rand_fn rnd, void *rnd_ctx,
                            veer_trace_result_t *result)
{
    uint32_t rid_count = 0, tp_count = 0, kept = 0;
    bool has_tracestate = false;
    /* One pass: note the first value of each field and compact the list
     * without x-request-id and traceparent (the caller appends both again).
     * The values are byte ranges outside the list, so compaction leaves them
     * intact. */
    veer_iov_t rid_value = {NULL, 0}, tp_value = {NULL, 0};
    for (uint32_t i = 0; i < count; i++) {
        veer_iov_t name = headers[i].name;
        if (veer_iov_eq(name, "x-request-id", 12)) {
            if (rid_count++ == 0)
                rid_value = headers[i].value;
            continue;
        }
        if (veer_iov_eq(name, "traceparent", 11)) {
            if (tp_count++ == 0)
                tp_value = headers[i].value;
            continue;
        }
        if (veer_iov_eq(name, "tracestate", 10))
            has_tracestate = true;
        headers[kept++] = headers[i];
    }
    veer_trace_result_t res = {0};
    if (rid_count > 0 && veer_trace_request_id_valid(rid_value)) {
        memcpy(request_id, rid_value.base, rid_value.len);
        request_id[rid_value.len] = '\0';
        *request_id_len = rid_value.len;
        res.request_id_kept = true;
    } else {
        *request_id_len = veer_trace_new_request_id(request_id, rnd, rnd_ctx);
    }
    veer_traceparent_t in = {0}, out;
    if (tp_count > 0) {
        res.traceparent_error = tp_count > 1 ? VEER_TRACE_EDUPLICATE : veer_trace_parse(tp_value, &in);
        res.trace_continued = res.traceparent_error == VEER_TRACE_OK;
    }
    outgoing_trace(&in, res.trace_continued, sample_percent, rnd, rnd_ctx, &out);
    veer_trace_format(&out, traceparent);
    res.sampled = (out.flags & VEER_TRACE_FLAG_SAMPLED) != 0;
    if (!res.trace_continued && has_tracestate) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < kept; i++)
            if (!veer_iov_eq(headers[i].name, "tracestate", 10))
                headers[n++] = headers[i];
        kept = n;
    }
    if (result != NULL)
        *result = res;
    return kept;
}
