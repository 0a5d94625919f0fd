/* histogram.c - the dense log-linear histogram of histogram.h: bucket bounds,
 * merge, percentiles and cumulative counts at arbitrary bounds. Pure integer
 * code with no clock and no allocation. */

#include "histogram.h"

#include <string.h>

static uint64_t bucket_width(uint32_t index)
{
    uint32_t group = index >> VEER_HIST_SUB_BITS;
    return group == 0 ? 1 : 1ull << (group - 1);
}

uint64_t veer_hist_bucket_low(uint32_t index)
{
    if (index >= VEER_HIST_BUCKETS)
        index = VEER_HIST_BUCKETS - 1;
    uint32_t group = index >> VEER_HIST_SUB_BITS;
    uint64_t sub = index & (VEER_HIST_SUB_COUNT - 1);
    return group == 0 ? sub : (VEER_HIST_SUB_COUNT + sub) << (group - 1);
}

uint64_t veer_hist_bucket_high(uint32_t index)
{
    if (index >= VEER_HIST_BUCKETS)
        index = VEER_HIST_BUCKETS - 1;
    return veer_hist_bucket_low(index) + bucket_width(index) - 1;
}

void veer_hist_reset(veer_hist_t *h)
{
    memset(h->counts, 0, sizeof h->counts);
    h->count = 0;
    h->sum = 0;
    h->min = UINT64_MAX;
    h->max = 0;
}

void veer_hist_record_n(veer_hist_t *h, uint64_t value, uint64_t n)
{
    if (n == 0)
        return;
    h->counts[veer_hist_index(value)] += n;
    h->count += n;
    h->sum += value * n;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

void veer_hist_record(veer_hist_t *h, uint64_t value)
{
    veer_hist_record_n(h, value, 1);
}

void veer_hist_merge(veer_hist_t *dst, const veer_hist_t *src)
{
    if (src->count == 0)
        return;
    for (uint32_t i = 0; i < VEER_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t veer_hist_value_at(const veer_hist_t *h, uint32_t per_million)
{
    if (h->count == 0)
        return 0;
    if (per_million > 1000000)
        per_million = 1000000;
    /* rank = ceil(count * p): 128-bit so that no count can overflow it */
    unsigned __int128 scaled = (unsigned __int128)h->count * per_million;
    uint64_t rank = (uint64_t)(scaled / 1000000) + (scaled % 1000000 != 0);
    if (rank <= 1)
        return h->min; /* the extremes are known exactly */
    if (rank >= h->count)
        return h->max;
    uint64_t seen = 0;
    uint32_t i = 0;
    for (; i < VEER_HIST_BUCKETS - 1; i++) {
        seen += h->counts[i];
        if (seen >= rank)
            break;
    }
    uint64_t value = veer_hist_bucket_low(i) + (bucket_width(i) - 1) / 2;
    if (value < h->min)
        value = h->min;
    if (value > h->max)
        value = h->max;
    return value;
}

uint64_t veer_hist_count_le(const veer_hist_t *h, uint64_t le)
{
    uint64_t out;
    veer_hist_cumulative(h, &le, 1, &out);
    return out;
}

/* Buckets [0, end) hold the values counted as <= le: the bucket holding le
 * is in when le is in its upper half. */
static uint32_t le_end(uint64_t le)
{
    uint32_t index = veer_hist_index(le);
    uint64_t low = veer_hist_bucket_low(index), high = veer_hist_bucket_high(index);
    if (le > high) /* beyond the last bucket */
        return VEER_HIST_BUCKETS;
    return (le - low) * 2 >= high - low ? index + 1 : index;
}

void veer_hist_cumulative(const veer_hist_t *h, const uint64_t *les, size_t n, uint64_t *out)
{
    uint64_t seen = 0;
    uint32_t next = 0; /* buckets [0, next) are in seen */
    for (size_t k = 0; k < n; k++) {
        uint32_t end = le_end(les[k]);
        for (; next < end; next++)
            seen += h->counts[next];
        out[k] = seen;
    }
}
