/* hostset.c - the sorted-by-id host table helpers and the random sequence
 * shared by health.c and outlier.c (see hostset.h). Pure: no clock, no
 * locks; each table has a single owner. */

#include "hostset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint64_t veer_hostset_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void *veer_hostset_find(const void *hosts, size_t count, size_t size, uint32_t id)
{
    const char *base = hosts;
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t mid_id;
        memcpy(&mid_id, base + mid * size, sizeof mid_id);
        if (mid_id == id)
            return (void *)(base + mid * size);
        if (mid_id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int compare_ids(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int veer_hostset_sorted_ids(const uint32_t *ids, size_t count, size_t max_count, uint32_t **sorted)
{
    *sorted = NULL;
    if (count > max_count || (count && !ids))
        return -EINVAL;
    uint32_t *out = malloc((count ? count : 1) * sizeof *out);
    if (!out)
        return -ENOMEM;
    if (count)
        memcpy(out, ids, count * sizeof *out);
    qsort(out, count, sizeof *out, compare_ids);
    for (size_t i = 0; i < count; i++) {
        if (out[i] == 0 || (i > 0 && out[i] == out[i - 1])) {
            free(out);
            return -EINVAL;
        }
    }
    *sorted = out;
    return 0;
}
