/* grpchealth.c - the grpc.health.v1 wire format (see grpchealth.h): a
 * HealthCheckRequest built and a HealthCheckResponse read by hand, every
 * length checked against the bytes actually there. */
#include "grpchealth.h"

#include <limits.h>
#include <string.h>

static size_t varint_put(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        out[n++] = b | (v != 0 ? 0x80 : 0);
    } while (v != 0);
    return n;
}

/* 0 and *v on success, -1 when the varint runs past end or over 10 bytes. */
static int varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t value = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        value |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = value;
            return 0;
        }
    }
    return -1;
}

int veer_grpc_health_request(const char *service, uint8_t *out, size_t cap)
{
    size_t len = service != NULL ? strlen(service) : 0;
    if (len > 16383)
        return -1;
    uint8_t tag[3];
    size_t tag_len = 0;
    if (len > 0) { /* proto3 omits an empty string field */
        tag[0] = 0x0a; /* field 1, wire type 2 */
        tag_len = 1 + varint_put(tag + 1, len);
    }
    size_t msg_len = tag_len + len;
    if (cap < 5 + msg_len)
        return -1;
    out[0] = 0; /* not compressed */
    out[1] = (uint8_t)(msg_len >> 24);
    out[2] = (uint8_t)(msg_len >> 16);
    out[3] = (uint8_t)(msg_len >> 8);
    out[4] = (uint8_t)msg_len;
    memcpy(out + 5, tag, tag_len);
    if (len > 0)
        memcpy(out + 5 + tag_len, service, len);
    return (int)(5 + msg_len);
}

int veer_grpc_health_parse(const uint8_t *body, size_t len)
{
    if (body == NULL || len < 5 || body[0] != 0)
        return -1;
    uint64_t msg_len = (uint64_t)body[1] << 24 | (uint64_t)body[2] << 16 | (uint64_t)body[3] << 8 | body[4];
    if (msg_len > len - 5)
        return -1;
    const uint8_t *p = body + 5, *end = p + msg_len;
    int status = 0;
    while (p < end) {
        uint64_t key, v;
        if (varint_get(&p, end, &key) != 0 || (key >> 3) == 0 || (key >> 3) > 536870911u)
            return -1;
        unsigned wire = (unsigned)(key & 7);
        if ((key >> 3) == 1) {
            if (wire != 0 || varint_get(&p, end, &v) != 0)
                return -1;
            status = v > INT_MAX ? INT_MAX : (int)v; /* the last value wins, as in protobuf */
            continue;
        }
        switch (wire) {
        case 0:
            if (varint_get(&p, end, &v) != 0)
                return -1;
            break;
        case 1:
            if (end - p < 8)
                return -1;
            p += 8;
            break;
        case 2:
            if (varint_get(&p, end, &v) != 0 || v > (uint64_t)(end - p))
                return -1;
            p += v;
            break;
        case 5:
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        default: /* groups (3, 4) are not in this message; 6, 7 do not exist */
            return -1;
        }
    }
    return status;
}
