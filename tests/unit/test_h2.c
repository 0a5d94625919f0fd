/* test_h2.c - the pure pieces behind the HTTP/2 attack mitigations (h2.h):
 * the reset token bucket and the per-second flood windows, driven by a fake
 * clock, and the frame-boundary tracker behind the header-read timeout, fed
 * in every split of the byte stream. */
#include "h2.h"

#include <stdio.h>
#include <string.h>

#include "check.h"

static void test_bucket_burst_then_rate(void)
{
    veer_h2_bucket_t b = {0};
    uint64_t t = 5000;
    int taken = 0;
    while (veer_h2_bucket_take(&b, t, 10, 20))
        taken++;
    CHECK(taken == 20); /* starts full: burst at once */
    CHECK(!veer_h2_bucket_take(&b, t + 99, 10, 20)); /* 0.99 token after 99 ms at 10/s */
    CHECK(veer_h2_bucket_take(&b, t + 100, 10, 20)); /* one whole token at 100 ms */
    CHECK(!veer_h2_bucket_take(&b, t + 100, 10, 20));
    /* a long pause refills to the burst, not beyond */
    taken = 0;
    while (veer_h2_bucket_take(&b, t + 3600 * 1000, 10, 20))
        taken++;
    CHECK(taken == 20);
    /* sustained at the rate: never refused */
    veer_h2_bucket_t s = {0};
    bool refused = false;
    for (int i = 0; i < 20; i++) /* spend the burst */
        veer_h2_bucket_take(&s, 0, 100, 20);
    for (uint64_t ms = 10; ms <= 10000; ms += 10)
        refused |= !veer_h2_bucket_take(&s, ms, 100, 20);
    CHECK(!refused);
    /* above the rate: refused within a second */
    veer_h2_bucket_t f = {0};
    uint64_t first_refusal = 0;
    for (uint64_t ms = 0; ms < 2000 && first_refusal == 0; ms++)
        for (int k = 0; k < 2; k++) /* 2000/s against 100/s */
            if (!veer_h2_bucket_take(&f, ms, 100, 20) && first_refusal == 0)
                first_refusal = ms + 1;
    CHECK(first_refusal > 0 && first_refusal < 1000);
}

static void test_window(void)
{
    veer_h2_window_t w = {0};
    bool over = false;
    for (int i = 0; i < 50; i++)
        over |= veer_h2_window_over(&w, 1000 + (uint64_t)i, 50);
    CHECK(!over);
    CHECK(veer_h2_window_over(&w, 1500, 50)); /* the 51st within the second */
    /* a new second starts a new count */
    CHECK(!veer_h2_window_over(&w, 2000, 50));
    for (int i = 0; i < 49; i++)
        over |= veer_h2_window_over(&w, 2100, 50);
    CHECK(!over);
    CHECK(veer_h2_window_over(&w, 2999, 50));
}

/* A frame header: 24-bit length, type, flags, stream id. */
static size_t frame(uint8_t *p, uint32_t len, uint8_t type, uint8_t flags, uint32_t stream)
{
    p[0] = (uint8_t)(len >> 16);
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    p[3] = type;
    p[4] = flags;
    p[5] = (uint8_t)(stream >> 24);
    p[6] = (uint8_t)(stream >> 16);
    p[7] = (uint8_t)(stream >> 8);
    p[8] = (uint8_t)stream;
    memset(p + 9, 'x', len);
    return 9 + len;
}

/* Feed buf[0..n) split at cut; return in_headers after each part. */
static void feed_split(const uint8_t *buf, size_t n, size_t cut, bool *after_first, bool *after_all)
{
    veer_h2_framer_t f = {.preface_left = VEER_H2_PREFACE_LEN};
    veer_h2_framer_feed(&f, buf, cut);
    *after_first = veer_h2_framer_in_headers(&f);
    veer_h2_framer_feed(&f, buf + cut, n - cut);
    *after_all = veer_h2_framer_in_headers(&f);
}

static void test_framer(void)
{
    uint8_t buf[512];
    size_t n = 0;
    memcpy(buf, VEER_H2_PREFACE, VEER_H2_PREFACE_LEN);
    n += VEER_H2_PREFACE_LEN;
    n += frame(buf + n, 6, 0x4, 0, 0);          /* SETTINGS */
    size_t headers_at = n;
    n += frame(buf + n, 10, 0x1, 0x1, 1);       /* HEADERS, END_STREAM, no END_HEADERS */
    size_t cont1_end = n + 9 + 5;
    n += frame(buf + n, 5, 0x9, 0, 1);          /* CONTINUATION */
    size_t cont2_at = n;
    n += frame(buf + n, 7, 0x9, 0x4, 1);        /* CONTINUATION, END_HEADERS */
    size_t block_end = n;
    n += frame(buf + n, 100, 0x0, 0x1, 3);      /* DATA */
    /* every split point: the block is open from the end of the HEADERS
     * frame header (its type is known then) to the last byte of the
     * END_HEADERS frame */
    int wrong = 0;
    for (size_t cut = 0; cut <= n; cut++) {
        bool first, all;
        feed_split(buf, n, cut, &first, &all);
        bool expect = cut >= headers_at + 9 && cut < block_end;
        if (first != expect || all) {
            wrong++;
            fprintf(stderr, "  cut %zu: in_headers %d (want %d), after all %d\n", cut, first, expect, all);
        }
    }
    CHECK(wrong == 0);
    /* byte at a time */
    veer_h2_framer_t f = {.preface_left = VEER_H2_PREFACE_LEN};
    for (size_t i = 0; i < n; i++) {
        veer_h2_framer_feed(&f, buf + i, 1);
        if (i + 1 == cont1_end)
            CHECK(veer_h2_framer_in_headers(&f)); /* a CONTINUATION is still due */
        if (i + 1 == cont2_at + 3)
            CHECK(veer_h2_framer_in_headers(&f));
    }
    CHECK(!veer_h2_framer_in_headers(&f));
    CHECK(f.blocks == 1);
    /* a HEADERS with END_HEADERS and an empty payload closes at once */
    veer_h2_framer_t g = {.preface_left = 0};
    uint8_t h[9];
    frame(h, 0, 0x1, 0x4, 1);
    veer_h2_framer_feed(&g, h, 9);
    CHECK(!veer_h2_framer_in_headers(&g) && g.blocks == 1);
    /* an empty HEADERS without END_HEADERS leaves the block open */
    frame(h, 0, 0x1, 0x0, 3);
    veer_h2_framer_feed(&g, h, 9);
    CHECK(veer_h2_framer_in_headers(&g) && g.blocks == 2);
    /* DATA, PING, WINDOW_UPDATE never open one */
    veer_h2_framer_t d = {.preface_left = 0};
    uint8_t other[64];
    size_t m = frame(other, 8, 0x6, 0, 0);
    m += frame(other + m, 4, 0x8, 0, 0);
    m += frame(other + m, 3, 0x0, 0, 1);
    veer_h2_framer_feed(&d, other, m - 1);
    CHECK(!veer_h2_framer_in_headers(&d));
}

int main(void)
{
    test_bucket_burst_then_rate();
    test_window();
    test_framer();
    return check_summary("test_h2");
}
