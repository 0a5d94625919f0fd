/* histogram.h - a log-linear (HDR-like) histogram of integer microseconds:
 * every power of two is split into 128 linear sub-buckets, so a bucket is at
 * most 1/128 (0.78%) of the values it holds wide, from 1 us up to 2^32-1 us
 * (71.6 minutes). Recording is O(1), integer only; histograms merge by adding.
 *
 * This dense form (26 KB) is what readers work on: merged views, percentiles,
 * Prometheus buckets. The per-worker, per-second storage of stats.c keeps the
 * same bucket numbering in 64-bucket chunks allocated only where values fall. */
#ifndef VEER_HISTOGRAM_H
#define VEER_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

#define VEER_HIST_SUB_BITS 7
#define VEER_HIST_SUB_COUNT (1u << VEER_HIST_SUB_BITS) /* 128 buckets per power of two */
/* Values 0..255 have a bucket each; then 24 more groups of 128 up to 2^32. */
#define VEER_HIST_GROUPS (32 - VEER_HIST_SUB_BITS + 1)
#define VEER_HIST_BUCKETS (VEER_HIST_GROUPS * VEER_HIST_SUB_COUNT) /* 3328 */
/* Larger values are counted in the last bucket (min, max and sum stay exact). */
#define VEER_HIST_MAX_VALUE 0xffffffffull

typedef struct veer_hist_s {
    uint64_t counts[VEER_HIST_BUCKETS];
    uint64_t count; /* == the sum of counts[] */
    uint64_t sum;   /* of the recorded values, unclamped */
    uint64_t min;   /* UINT64_MAX while empty */
    uint64_t max;
} veer_hist_t;

/* Bucket of a value: values below 256 have their own; above, group g >= 1
 * holds [2^(g+6), 2^(g+7)) in 128 steps of 2^(g-1). */
static inline uint32_t veer_hist_index(uint64_t value)
{
    if (value > VEER_HIST_MAX_VALUE)
        value = VEER_HIST_MAX_VALUE;
    if (value < VEER_HIST_SUB_COUNT)
        return (uint32_t)value;
    uint32_t msb = 63u - (uint32_t)__builtin_clzll(value);
    uint32_t shift = msb - VEER_HIST_SUB_BITS;
    return ((shift + 1) << VEER_HIST_SUB_BITS) + (uint32_t)(value >> shift) - VEER_HIST_SUB_COUNT;
}

/* The smallest and the largest value (inclusive) a bucket holds. */
uint64_t veer_hist_bucket_low(uint32_t index);
uint64_t veer_hist_bucket_high(uint32_t index);

void veer_hist_reset(veer_hist_t *h);
void veer_hist_record(veer_hist_t *h, uint64_t value);
void veer_hist_record_n(veer_hist_t *h, uint64_t value, uint64_t n);
/* dst += src; the same as having recorded src's values into dst. */
void veer_hist_merge(veer_hist_t *dst, const veer_hist_t *src);

/* The value at a percentile given in parts per million (990000: P99,
 * 999000: P99.9), nearest-rank: the smallest recorded value v such that at
 * least that share of the values are <= v. Answered as the middle of v's
 * bucket, kept within [min, max], so within 0.39% of the exact value (the
 * first and the last rank answer min and max exactly). 0 when empty. */
uint64_t veer_hist_value_at(const veer_hist_t *h, uint32_t per_million);

/* How many values are <= le, with le rounded to the nearest bucket
 * boundary: the bucket holding le counts when le is in its upper half. So
 * only values within 0.39% of le can be miscounted (values just above le
 * counted, or values just below it left out), the error has no bias, and
 * below 256 us, or when le ends a bucket, the answer is exact. */
uint64_t veer_hist_count_le(const veer_hist_t *h, uint64_t le);

/* veer_hist_count_le for a strictly increasing list of bounds, in one pass:
 * out[i] = count_le(les[i]). */
void veer_hist_cumulative(const veer_hist_t *h, const uint64_t *les, size_t n, uint64_t *out);

#endif
