/* test_grpchealth.c - the gRPC health messages: the request's exact bytes and
 * the response parser on SERVING/NOT_SERVING, an absent field, unknown fields
 * and every kind of truncated or malformed input. */
#include "grpchealth.h"

#include <string.h>

#include "check.h"

/* One gRPC frame around msg. */
static size_t frame(const uint8_t *msg, size_t len, uint8_t *out)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
    memcpy(out + 5, msg, len);
    return len + 5;
}

static int parse_msg(const uint8_t *msg, size_t len)
{
    uint8_t buf[64];
    return veer_grpc_health_parse(buf, frame(msg, len, buf));
}

static void test_request(void)
{
    uint8_t out[64];
    CHECK(veer_grpc_health_request("", out, sizeof out) == 5);
    CHECK(memcmp(out, "\0\0\0\0\0", 5) == 0);
    CHECK(veer_grpc_health_request(NULL, out, sizeof out) == 5);
    int n = veer_grpc_health_request("akidb.v1.Embed", out, sizeof out);
    CHECK(n == 5 + 2 + 14);
    CHECK(memcmp(out, "\0\0\0\0\x10\x0a\x0e" "akidb.v1.Embed", 21) == 0);
    CHECK(veer_grpc_health_request("akidb.v1.Embed", out, 20) == -1); /* one byte short */
    /* a 200-byte name needs a 2-byte length varint */
    char name[201];
    memset(name, 'x', 200);
    name[200] = '\0';
    uint8_t big[256];
    CHECK(veer_grpc_health_request(name, big, sizeof big) == 5 + 3 + 200);
    CHECK(big[4] == 203 && big[5] == 0x0a && big[6] == 0xc8 && big[7] == 0x01);
}

static void test_parse(void)
{
    CHECK(parse_msg((const uint8_t *)"\x08\x01", 2) == 1);  /* SERVING */
    CHECK(parse_msg((const uint8_t *)"\x08\x02", 2) == 2);  /* NOT_SERVING */
    CHECK(parse_msg((const uint8_t *)"\x08\x03", 2) == 3);  /* SERVICE_UNKNOWN */
    CHECK(parse_msg((const uint8_t *)"", 0) == 0);          /* field absent: UNKNOWN (proto3 default) */
    /* unknown fields of every wire type are skipped; the last field 1 wins */
    CHECK(parse_msg((const uint8_t *)"\x10\x96\x01\x08\x02\x1a\x02hi\x25\x01\x02\x03\x04"
                                     "\x29\x01\x02\x03\x04\x05\x06\x07\x08\x08\x01", 25) == 1);
    CHECK(parse_msg((const uint8_t *)"\x08\x01\x08\x02", 4) == 2);
    /* wrong wire type for field 1 */
    CHECK(parse_msg((const uint8_t *)"\x0a\x01\x01", 3) == -1);
    CHECK(parse_msg((const uint8_t *)"\x0d\x01\x00\x00\x00", 5) == -1);
    /* truncated: varint, length-delimited, fixed32, fixed64 */
    CHECK(parse_msg((const uint8_t *)"\x08", 1) == -1);
    CHECK(parse_msg((const uint8_t *)"\x08\x81", 2) == -1);
    CHECK(parse_msg((const uint8_t *)"\x1a\x05hi", 4) == -1);
    CHECK(parse_msg((const uint8_t *)"\x25\x01\x02", 3) == -1);
    CHECK(parse_msg((const uint8_t *)"\x29\x01\x02\x03", 4) == -1);
    /* groups, invalid wire types, field number 0, an 11-byte varint */
    CHECK(parse_msg((const uint8_t *)"\x0b\x0c", 2) == -1);
    CHECK(parse_msg((const uint8_t *)"\x0e\x00", 2) == -1);
    CHECK(parse_msg((const uint8_t *)"\x00\x01", 2) == -1);
    CHECK(parse_msg((const uint8_t *)"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12) == -1);
    /* a huge enum value saturates instead of wrapping to SERVING */
    CHECK(parse_msg((const uint8_t *)"\x08\x81\x80\x80\x80\x80\x80\x80\x80\x80\x01", 11) != 1);

    /* the gRPC frame itself */
    uint8_t buf[16];
    CHECK(veer_grpc_health_parse(NULL, 0) == -1);
    CHECK(veer_grpc_health_parse((const uint8_t *)"\0\0\0", 3) == -1);        /* short prefix */
    CHECK(veer_grpc_health_parse((const uint8_t *)"\0\0\0\0\x03\x08\x01", 7) == -1); /* message cut short */
    CHECK(veer_grpc_health_parse((const uint8_t *)"\0\xff\xff\xff\xff\x08\x01", 7) == -1);
    size_t n = frame((const uint8_t *)"\x08\x01", 2, buf);
    buf[0] = 1; /* compressed */
    CHECK(veer_grpc_health_parse(buf, n) == -1);
    buf[0] = 0;
    CHECK(veer_grpc_health_parse(buf, n) == 1);
    /* bytes after the first message (a second message) are not read */
    memcpy(buf + n, "\0\0\0\0\x02\x08\x02", 7);
    CHECK(veer_grpc_health_parse(buf, n + 7) == 1);
    /* round trip: our own request parses as a message with no field 1 */
    uint8_t req[64];
    int len = veer_grpc_health_request("svc", req, sizeof req);
    CHECK(len > 0 && veer_grpc_health_parse(req, (size_t)len) == -1); /* field 1 has wire type 2 there */
}

int main(void)
{
    test_request();
    test_parse();
    return check_summary("test_grpchealth");
}
