/* test_histogram.c - the log-linear histogram: its bucket layout, percentile
 * accuracy over 1 us .. 100 s against an exact sort, edge values, merging,
 * and cumulative counts at arbitrary `le` bounds. */
#include "histogram.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Log-uniform over [1, max_us]: every decade equally represented. */
static uint64_t random_latency(double max_us)
{
    double u = (double)(rng_next() >> 11) / 9007199254740992.0;
    return (uint64_t)llround(exp(u * log(max_us)));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank, as veer_hist_value_at defines it. */
static uint64_t exact_percentile(const uint64_t *sorted, size_t n, uint32_t per_million)
{
    unsigned __int128 scaled = (unsigned __int128)n * per_million;
    uint64_t rank = (uint64_t)(scaled / 1000000) + (scaled % 1000000 != 0);
    if (rank == 0)
        rank = 1;
    return sorted[rank - 1];
}

static double rel_error(uint64_t got, uint64_t want)
{
    if (want == 0)
        return got == 0 ? 0 : 1;
    return fabs((double)got - (double)want) / (double)want;
}

/* How many of the sorted values are <= bound. */
static size_t count_upto(const uint64_t *sorted, size_t n, uint64_t bound)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] <= bound)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static veer_hist_t *hist_new(void)
{
    veer_hist_t *h = malloc(sizeof *h);
    veer_hist_reset(h);
    return h;
}

static void test_layout(void)
{
    /* Buckets tile [0, 2^32) without gaps, each at most 1/128 of its values wide. */
    bool tiled = true, narrow = true, indexed = true;
    for (uint32_t i = 0; i < VEER_HIST_BUCKETS; i++) {
        uint64_t lo = veer_hist_bucket_low(i), hi = veer_hist_bucket_high(i);
        if (i + 1 < VEER_HIST_BUCKETS && veer_hist_bucket_low(i + 1) != hi + 1)
            tiled = false;
        if (hi - lo + 1 > 1 && (hi - lo + 1) * 128 > lo)
            narrow = false;
        if (veer_hist_index(lo) != i || veer_hist_index(hi) != i)
            indexed = false;
    }
    CHECK(tiled);
    CHECK(narrow);
    CHECK(indexed);
    CHECK(veer_hist_bucket_low(0) == 0);
    CHECK(veer_hist_bucket_high(VEER_HIST_BUCKETS - 1) == VEER_HIST_MAX_VALUE);
    CHECK(VEER_HIST_BUCKETS == 3328);
    /* exact below 256 */
    for (uint64_t v = 0; v < 256; v++)
        CHECK(veer_hist_bucket_low(veer_hist_index(v)) == v && veer_hist_bucket_high(veer_hist_index(v)) == v);
    CHECK(veer_hist_index(256) == 256 && veer_hist_index(257) == 256 && veer_hist_index(258) == 257);
    CHECK(veer_hist_index(VEER_HIST_MAX_VALUE + 1) == VEER_HIST_BUCKETS - 1);
    CHECK(veer_hist_index(UINT64_MAX) == VEER_HIST_BUCKETS - 1);
    printf("test_histogram: %u buckets, %zu bytes per dense histogram\n", VEER_HIST_BUCKETS, sizeof(veer_hist_t));
}

static void test_edges(void)
{
    veer_hist_t *h = hist_new();
    CHECK(h->count == 0 && veer_hist_value_at(h, 990000) == 0 && veer_hist_count_le(h, 1000) == 0);

    veer_hist_record(h, 0);
    CHECK(h->count == 1 && h->min == 0 && h->max == 0 && h->sum == 0);
    CHECK(veer_hist_value_at(h, 500000) == 0 && veer_hist_value_at(h, 1000000) == 0);
    CHECK(veer_hist_count_le(h, 0) == 1);

    veer_hist_record(h, 1);
    CHECK(veer_hist_value_at(h, 500000) == 0 && veer_hist_value_at(h, 500001) == 1);
    CHECK(veer_hist_count_le(h, 0) == 1 && veer_hist_count_le(h, 1) == 2);

    /* The largest trackable value and beyond: counted in the last bucket;
     * min, max and sum stay exact, and the top percentile answers max. */
    veer_hist_reset(h);
    veer_hist_record(h, VEER_HIST_MAX_VALUE);
    CHECK(h->counts[VEER_HIST_BUCKETS - 1] == 1 && h->max == VEER_HIST_MAX_VALUE);
    CHECK(veer_hist_value_at(h, 1000000) == VEER_HIST_MAX_VALUE);
    veer_hist_record(h, 1ull << 40);
    CHECK(h->counts[VEER_HIST_BUCKETS - 1] == 2 && h->max == 1ull << 40);
    CHECK(h->sum == VEER_HIST_MAX_VALUE + (1ull << 40));
    CHECK(veer_hist_value_at(h, 1000000) == 1ull << 40);
    CHECK(veer_hist_value_at(h, 1) == VEER_HIST_MAX_VALUE);
    CHECK(veer_hist_count_le(h, VEER_HIST_MAX_VALUE) == 2); /* the last bucket holds both */
    CHECK(veer_hist_count_le(h, VEER_HIST_MAX_VALUE - 1) == 2);
    CHECK(veer_hist_count_le(h, veer_hist_bucket_low(VEER_HIST_BUCKETS - 1)) == 0); /* lower half: left out */
    CHECK(veer_hist_count_le(h, UINT64_MAX) == 2);
    veer_hist_record(h, UINT64_MAX);
    CHECK(h->count == 3 && h->max == UINT64_MAX);

    /* record_n == n records; n == 0 records nothing */
    veer_hist_t *a = hist_new(), *b = hist_new();
    veer_hist_record_n(a, 12345, 7);
    for (int i = 0; i < 7; i++)
        veer_hist_record(b, 12345);
    CHECK(memcmp(a, b, sizeof *a) == 0);
    veer_hist_record_n(a, 99, 0);
    CHECK(memcmp(a, b, sizeof *a) == 0 && a->min == 12345);

    /* one value: every percentile is that value exactly (clamped to [min, max]) */
    veer_hist_reset(a);
    veer_hist_record(a, 1234567);
    CHECK(veer_hist_value_at(a, 0) == 1234567 && veer_hist_value_at(a, 990000) == 1234567);
    free(a);
    free(b);
    free(h);
}

static void test_accuracy(void)
{
    enum { N = 200000 };
    uint64_t *values = malloc(N * sizeof *values);
    veer_hist_t *h = hist_new();
    uint64_t sum = 0;
    for (size_t i = 0; i < N; i++) {
        values[i] = random_latency(1e8); /* 1 us .. 100 s */
        veer_hist_record(h, values[i]);
        sum += values[i];
    }
    qsort(values, N, sizeof *values, cmp_u64);
    CHECK(h->count == N && h->sum == sum && h->min == values[0] && h->max == values[N - 1]);

    static const uint32_t named[] = {500000, 900000, 990000, 999000};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        uint64_t want = exact_percentile(values, N, named[i]), got = veer_hist_value_at(h, named[i]);
        CHECK(rel_error(got, want) <= 0.01);
    }
    /* every 0.01% from 0.01% to 100% */
    double worst = 0;
    for (uint32_t pm = 100; pm <= 1000000; pm += 100) {
        double e = rel_error(veer_hist_value_at(h, pm), exact_percentile(values, N, pm));
        if (e > worst)
            worst = e;
    }
    CHECK(worst <= 0.01);
    CHECK(worst <= 1.0 / 256); /* the middle of a bucket of width <= 1/128 */
    printf("test_histogram: worst percentile error over 1us..100s: %.4f%% (bound 1%%)\n", worst * 100);

    /* Counts at le bounds: exactly the values up to le rounded to the
     * nearest bucket boundary, so off only for values within 0.39% of le. */
    bool exact_rounding = true, near = true;
    double worst_shift = 0;
    for (int k = 0; k < 3000; k++) {
        uint64_t le = k < 300 ? (uint64_t)k : k < 600 ? values[rng_next() % N] : random_latency(1e8);
        uint32_t b = veer_hist_index(le);
        uint64_t lo = veer_hist_bucket_low(b), hi = veer_hist_bucket_high(b);
        uint64_t rounded = (le - lo) * 2 >= hi - lo ? hi : lo - 1; /* lo > 0 whenever the bucket is left out */
        uint64_t got = veer_hist_count_le(h, le);
        if (got != count_upto(values, N, rounded))
            exact_rounding = false;
        if (le < 256 && got != count_upto(values, N, le))
            exact_rounding = false;
        uint64_t slack = le / 256;
        if (got < count_upto(values, N, le - slack) || got > count_upto(values, N, le + slack))
            near = false;
        double shift = fabs((double)rounded + (rounded < le ? 1 : 0) - (double)le) / (double)(le ? le : 1);
        if (le >= 256 && shift > worst_shift)
            worst_shift = shift;
        /* a bound that ends a bucket is exact */
        if (veer_hist_count_le(h, hi) != count_upto(values, N, hi))
            exact_rounding = false;
    }
    CHECK(exact_rounding);
    CHECK(near);
    CHECK(worst_shift <= 1.0 / 256);

    /* veer_hist_cumulative == count_le per bound */
    uint64_t les[] = {0, 1, 100, 255, 256, 1000, 1001, 50000, 1000000, 99999999, VEER_HIST_MAX_VALUE};
    uint64_t out[sizeof les / sizeof les[0]];
    veer_hist_cumulative(h, les, sizeof les / sizeof les[0], out);
    bool same = true;
    for (size_t i = 0; i < sizeof les / sizeof les[0]; i++)
        same = same && out[i] == veer_hist_count_le(h, les[i]);
    CHECK(same);
    CHECK(out[sizeof les / sizeof les[0] - 1] == N);

    free(values);
    free(h);
}

static void test_merge(void)
{
    veer_hist_t *a = hist_new(), *b = hist_new(), *both = hist_new(), *merged = hist_new();
    for (int i = 0; i < 50000; i++) {
        uint64_t v = random_latency(1e9);
        veer_hist_record(i % 3 ? a : b, v);
        veer_hist_record(both, v);
    }
    veer_hist_merge(merged, a);
    veer_hist_merge(merged, b);
    CHECK(memcmp(merged, both, sizeof *both) == 0);
    /* merging an empty histogram changes nothing, min included */
    veer_hist_t *empty = hist_new();
    veer_hist_merge(merged, empty);
    CHECK(memcmp(merged, both, sizeof *both) == 0);
    veer_hist_merge(empty, a);
    CHECK(memcmp(empty, a, sizeof *a) == 0);
    free(a);
    free(b);
    free(both);
    free(merged);
    free(empty);
}

int main(void)
{
    test_layout();
    test_edges();
    test_accuracy();
    test_merge();
    return check_summary("test_histogram");
}
