/* test_trace.c - x-request-id validation, the traceparent parser (every
 * invalid shape, upper-case hex, version ff, later versions), the formatter,
 * and the per-request policy over a header list (continue or start a trace,
 * tracestate kept or dropped, sampling), driven by a fixed random sequence. */
#include "trace.h"

#include <stdio.h>
#include <string.h>

#include "check.h"

static const char VALID[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/* A deterministic generator: xorshift32 from a seed the test picks. */
static uint32_t test_rand(void *ctx)
{
    uint32_t *s = ctx;
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Always zero: veer_trace_random_id must not return an all-zero id. */
static uint32_t zero_then_count(void *ctx)
{
    uint32_t *calls = ctx;
    return (*calls)++ < 8 ? 0 : *calls;
}

static int parse(const char *s)
{
    veer_traceparent_t tp;
    return veer_trace_parse(iov_str(s), &tp);
}

static void test_request_id_valid(void)
{
    char max[VEER_REQUEST_ID_MAX + 2];
    memset(max, 'a', sizeof(max));
    CHECK(veer_trace_request_id_valid(iov_str("my-req-123")));
    CHECK(veer_trace_request_id_valid(iov_str("!~")));
    CHECK(veer_trace_request_id_valid((veer_iov_t){max, VEER_REQUEST_ID_MAX}));
    CHECK(!veer_trace_request_id_valid((veer_iov_t){max, VEER_REQUEST_ID_MAX + 1}));
    CHECK(!veer_trace_request_id_valid(iov_str("")));
    CHECK(!veer_trace_request_id_valid(iov_str("has space")));
    CHECK(!veer_trace_request_id_valid(iov_str("tab\there")));
    CHECK(!veer_trace_request_id_valid(iov_str("del\x7f")));
    CHECK(!veer_trace_request_id_valid(iov_str("caf\xc3\xa9")));
    CHECK(!veer_trace_request_id_valid((veer_iov_t){"a\0b", 3}));
}

static void test_parse_valid(void)
{
    veer_traceparent_t tp;
    static const uint8_t trace_id[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                         0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
    static const uint8_t parent_id[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
    CHECK(veer_trace_parse(iov_str(VALID), &tp) == VEER_TRACE_OK);
    CHECK(tp.version == 0);
    CHECK(memcmp(tp.trace_id, trace_id, 16) == 0);
    CHECK(memcmp(tp.parent_id, parent_id, 8) == 0);
    CHECK(tp.flags == 0x01);
    CHECK(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00") == VEER_TRACE_OK);
    /* flags this version does not define are still a valid header */
    CHECK(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff") == VEER_TRACE_OK);
    /* one non-zero byte is enough */
    CHECK(parse("00-00000000000000000000000000000001-0000000000000001-01") == VEER_TRACE_OK);

    char out[VEER_TRACEPARENT_LEN + 1];
    veer_trace_format(&tp, out);
    CHECK(strcmp(out, VALID) == 0);
    CHECK(strlen(out) == VEER_TRACEPARENT_LEN);
}

static void test_parse_invalid(void)
{
    static const struct {
        const char *value;
        int error;
    } table[] = {
        {"", VEER_TRACE_ELENGTH},
        {"0", VEER_TRACE_ELENGTH},
        {"00", VEER_TRACE_ELENGTH},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", VEER_TRACE_ELENGTH},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011", VEER_TRACE_ELENGTH},
        /* version 00 may not carry more fields */
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", VEER_TRACE_ELENGTH},
        {"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", VEER_TRACE_ELAYOUT},
        {"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", VEER_TRACE_ELAYOUT},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01", VEER_TRACE_ELAYOUT},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01", VEER_TRACE_ELAYOUT},
        /* upper-case hex anywhere */
        {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", VEER_TRACE_EHEX},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", VEER_TRACE_EHEX},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", VEER_TRACE_EHEX},
        {"0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", VEER_TRACE_EHEX},
        {"FF-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", VEER_TRACE_EHEX},
        /* not hex at all */
        {"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", VEER_TRACE_EHEX},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01", VEER_TRACE_EHEX},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x", VEER_TRACE_EHEX},
        {"zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", VEER_TRACE_EHEX},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7- 1", VEER_TRACE_EHEX},
        /* version ff is invalid whatever follows */
        {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", VEER_TRACE_EVERSION},
        {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", VEER_TRACE_EVERSION},
        {"ff", VEER_TRACE_EVERSION},
        /* zero ids */
        {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", VEER_TRACE_EZERO},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", VEER_TRACE_EZERO},
        /* a later version: at least 55 bytes, and a dash after them */
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", VEER_TRACE_ELENGTH},
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", VEER_TRACE_ELAYOUT},
        {"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0100", VEER_TRACE_ELAYOUT},
        {"01-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", VEER_TRACE_EHEX},
    };
    int wrong = 0;
    for (size_t i = 0; i < N_ELEMS(table); i++) {
        int got = parse(table[i].value);
        if (got != table[i].error) {
            fprintf(stderr, "  traceparent '%s': got %d, expected %d\n", table[i].value, got, table[i].error);
            wrong++;
        }
    }
    CHECK(wrong == 0);
}

static void test_parse_later_versions(void)
{
    veer_traceparent_t tp;
    CHECK(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == VEER_TRACE_OK);
    CHECK(veer_trace_parse(iov_str("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds"),
                           &tp) == VEER_TRACE_OK);
    CHECK(tp.version == 0xcc);
    CHECK(tp.flags == 0x09);
    CHECK(tp.trace_id[0] == 0x4b && tp.parent_id[7] == 0xb7);
    /* sent on as 00, whatever came in */
    char out[VEER_TRACEPARENT_LEN + 1];
    veer_trace_format(&tp, out);
    CHECK(strcmp(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09") == 0);
}

static void test_random_id_never_zero(void)
{
    uint32_t calls = 0;
    uint8_t id[16];
    veer_trace_random_id(id, sizeof(id), zero_then_count, &calls);
    bool nonzero = false;
    for (size_t i = 0; i < sizeof(id); i++)
        nonzero |= id[i] != 0;
    CHECK(nonzero);
    CHECK(calls > 8);

    uint32_t seed = 7;
    char rid[33];
    CHECK(veer_trace_new_request_id(rid, test_rand, &seed) == 32);
    CHECK(strlen(rid) == 32);
    CHECK(strspn(rid, "0123456789abcdef") == 32);
}

/* Run the policy on a list; returns the new count. */
static uint32_t apply(veer_header_t *h, uint32_t n, uint32_t sample_percent, uint32_t seed, char *rid,
                      size_t *rid_len, char *tp, veer_trace_result_t *res)
{
    return veer_trace_headers(h, n, rid, rid_len, tp, sample_percent, test_rand, &seed, res);
}

static bool has_field(const veer_header_t *h, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (iov_is(h[i].name, name))
            return true;
    return false;
}

static void test_policy_continue(void)
{
    veer_header_t h[] = {HDR("accept", "*/*"), HDR("traceparent", VALID), HDR("tracestate", "congo=t61rcWkgMzE"),
                         HDR("x-request-id", "abc-123"), HDR("user-agent", "t")};
    char rid[VEER_REQUEST_ID_MAX + 1], tp[VEER_TRACEPARENT_LEN + 1];
    size_t rid_len = 0;
    veer_trace_result_t res;
    uint32_t n = apply(h, N_ELEMS(h), 0, 1, rid, &rid_len, tp, &res);
    CHECK(n == 3);
    CHECK(iov_is(h[0].name, "accept") && iov_is(h[1].name, "tracestate") && iov_is(h[2].name, "user-agent"));
    CHECK(iov_is(h[1].value, "congo=t61rcWkgMzE"));
    CHECK(res.request_id_kept && rid_len == 7 && strcmp(rid, "abc-123") == 0);
    CHECK(res.trace_continued && res.traceparent_error == 0);
    CHECK(res.sampled); /* the caller's flag, though sample_percent is 0 */
    /* same trace-id and flags, a new parent-id */
    CHECK(strlen(tp) == VEER_TRACEPARENT_LEN);
    CHECK(memcmp(tp, VALID, 36) == 0);
    CHECK(memcmp(tp + 36, VALID + 36, 16) != 0);
    CHECK(strcmp(tp + 52, "-01") == 0);
    veer_traceparent_t parsed;
    CHECK(veer_trace_parse((veer_iov_t){tp, strlen(tp)}, &parsed) == VEER_TRACE_OK);

    /* not sampled stays not sampled, even at sample_percent 100 */
    veer_header_t u[] = {HDR("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")};
    n = apply(u, 1, 100, 2, rid, &rid_len, tp, &res);
    CHECK(n == 0 && res.trace_continued && !res.sampled && strcmp(tp + 52, "-00") == 0);
    CHECK(!res.request_id_kept && rid_len == 32);

    /* Level 2's random flag (0x02) passes through with version 00 */
    veer_header_t r[] = {HDR("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03")};
    apply(r, 1, 0, 3, rid, &rid_len, tp, &res);
    CHECK(strcmp(tp + 52, "-03") == 0);

    /* a later version goes on as 00 with the same ids; undefined flags cleared */
    veer_header_t f[] = {HDR("traceparent", "07-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-more"),
                         HDR("tracestate", "a=b")};
    n = apply(f, 2, 0, 4, rid, &rid_len, tp, &res);
    CHECK(n == 1 && res.trace_continued && iov_is(f[0].name, "tracestate"));
    CHECK(memcmp(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36) == 0 && strcmp(tp + 52, "-03") == 0);
}

static void test_policy_start(void)
{
    char rid[VEER_REQUEST_ID_MAX + 1], tp[VEER_TRACEPARENT_LEN + 1];
    size_t rid_len = 0;
    veer_trace_result_t res;
    veer_traceparent_t parsed;

    /* absent: a new trace, sampled at 100% */
    veer_header_t a[] = {HDR("accept", "*/*")};
    uint32_t n = apply(a, 1, 100, 5, rid, &rid_len, tp, &res);
    CHECK(n == 1 && !res.trace_continued && res.traceparent_error == 0 && res.sampled);
    CHECK(veer_trace_parse((veer_iov_t){tp, strlen(tp)}, &parsed) == VEER_TRACE_OK && parsed.flags == 1);
    char first[VEER_TRACEPARENT_LEN + 1];
    memcpy(first, tp, sizeof(first));
    apply(a, 1, 100, 6, rid, &rid_len, tp, &res);
    CHECK(memcmp(first + 3, tp + 3, 32) != 0); /* each new trace has its own id */

    /* invalid (upper case): restarted, tracestate dropped, others kept in order */
    veer_header_t b[] = {HDR("a", "1"), HDR("tracestate", "x=y"),
                         HDR("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
                         HDR("b", "2"), HDR("tracestate", "z=w"), HDR("c", "3")};
    n = apply(b, N_ELEMS(b), 100, 7, rid, &rid_len, tp, &res);
    CHECK(n == 3 && iov_is(b[0].name, "a") && iov_is(b[1].name, "b") && iov_is(b[2].name, "c"));
    CHECK(!res.trace_continued && res.traceparent_error == VEER_TRACE_EHEX);
    CHECK(memcmp(tp + 3, "4bf92f3577b34da6a3ce929d0e0e4736", 32) != 0);
    CHECK(veer_trace_parse((veer_iov_t){tp, strlen(tp)}, &parsed) == VEER_TRACE_OK);

    /* two traceparent fields: ambiguous, restarted */
    veer_header_t d[] = {HDR("traceparent", VALID), HDR("traceparent", VALID), HDR("tracestate", "k=v")};
    n = apply(d, N_ELEMS(d), 100, 8, rid, &rid_len, tp, &res);
    CHECK(n == 0 && !res.trace_continued && res.traceparent_error == VEER_TRACE_EDUPLICATE);

    /* sample_percent 0: new traces are not sampled */
    n = apply(a, 1, 0, 9, rid, &rid_len, tp, &res);
    CHECK(!res.sampled && strcmp(tp + 52, "-00") == 0);

    /* sample_percent 30: about 30% of new traces are sampled */
    uint32_t seed = 12345, sampled = 0;
    for (int i = 0; i < 10000; i++) {
        veer_header_t e[] = {HDR("accept", "*/*")};
        veer_trace_headers(e, 1, rid, &rid_len, tp, 30, test_rand, &seed, &res);
        sampled += res.sampled;
    }
    CHECK(sampled > 2700 && sampled < 3300);
}

static void test_policy_request_id(void)
{
    char rid[VEER_REQUEST_ID_MAX + 1], tp[VEER_TRACEPARENT_LEN + 1];
    size_t rid_len = 0;
    veer_trace_result_t res;
    char long_id[VEER_REQUEST_ID_MAX + 1];
    memset(long_id, 'x', sizeof(long_id));

    /* duplicates: the first (valid) one wins, the others are removed */
    veer_header_t a[] = {HDR("x-request-id", "first"), HDR("k", "v"), HDR("x-request-id", "second")};
    uint32_t n = apply(a, 3, 100, 1, rid, &rid_len, tp, &res);
    CHECK(n == 1 && !has_field(a, n, "x-request-id") && res.request_id_kept && strcmp(rid, "first") == 0);

    /* exactly 128 bytes: kept; 129: replaced by a generated id */
    veer_header_t b[] = {{VEER_IOV_LIT("x-request-id"), {long_id, VEER_REQUEST_ID_MAX}}};
    apply(b, 1, 100, 2, rid, &rid_len, tp, &res);
    CHECK(res.request_id_kept && rid_len == VEER_REQUEST_ID_MAX && rid[VEER_REQUEST_ID_MAX] == '\0');
    veer_header_t c[] = {{VEER_IOV_LIT("x-request-id"), {long_id, VEER_REQUEST_ID_MAX + 1}}};
    apply(c, 1, 100, 3, rid, &rid_len, tp, &res);
    CHECK(!res.request_id_kept && rid_len == 32 && strspn(rid, "0123456789abcdef") == 32);

    veer_header_t d[] = {HDR("x-request-id", "two words")};
    apply(d, 1, 100, 4, rid, &rid_len, tp, &res);
    CHECK(!res.request_id_kept && rid_len == 32);
    veer_header_t e[] = {HDR("x-request-id", "")};
    apply(e, 1, 100, 5, rid, &rid_len, tp, &res);
    CHECK(!res.request_id_kept && rid_len == 32);
}

int main(void)
{
    test_request_id_valid();
    test_parse_valid();
    test_parse_invalid();
    test_parse_later_versions();
    test_random_id_never_zero();
    test_policy_continue();
    test_policy_start();
    test_policy_request_id();
    return check_summary("test_trace");
}
