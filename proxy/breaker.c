/* breaker.c - lock-free circuit-breaker counters shared by all workers, and
 * the per-worker bounded FIFO of pending requests (see breaker.h). */

#include "breaker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(veer_breaker_counter_t) == 64, "one breaker kind per cache line");

static const char *const kind_names[VEER_BREAKER_KINDS] = {
    "max_connections", "max_pending_requests", "max_requests", "max_retries",
};

const char *veer_breaker_kind_name(veer_breaker_kind_t kind)
{
    return (unsigned)kind < VEER_BREAKER_KINDS ? kind_names[kind] : "unknown";
}

void veer_breaker_set_limits(veer_breaker_t *b, const veer_breaker_config_t *cfg)
{
    atomic_store(&b->kinds[VEER_BREAKER_CONNECTIONS].limit, cfg->max_connections);
    atomic_store(&b->kinds[VEER_BREAKER_PENDING].limit, cfg->max_pending_requests);
    atomic_store(&b->kinds[VEER_BREAKER_REQUESTS].limit, cfg->max_requests);
    atomic_store(&b->kinds[VEER_BREAKER_RETRIES].limit, cfg->max_retries);
}

void veer_breaker_init(veer_breaker_t *b, const veer_breaker_config_t *cfg)
{
    for (int k = 0; k < VEER_BREAKER_KINDS; k++) {
        atomic_init(&b->kinds[k].active, 0);
        atomic_init(&b->kinds[k].limit, 0);
        atomic_init(&b->kinds[k].overflows, 0);
        atomic_init(&b->kinds[k].bad_releases, 0);
    }
    veer_breaker_set_limits(b, cfg);
}

/* Without counting an overflow: the caller decides whether it was one. */
static bool acquire_one(veer_breaker_counter_t *c)
{
    uint32_t limit = atomic_load_explicit(&c->limit, memory_order_relaxed);
    uint32_t active = atomic_load_explicit(&c->active, memory_order_relaxed);
    do {
        if (active >= limit)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&c->active, &active, active + 1, memory_order_acq_rel,
                                                    memory_order_relaxed));
    return true;
}

int veer_breaker_try_acquire(veer_breaker_t *b, veer_breaker_kind_t kind)
{
    veer_breaker_counter_t *c = &b->kinds[kind];
    if (acquire_one(c))
        return 0;
    atomic_fetch_add_explicit(&c->overflows, 1, memory_order_relaxed);
    return VEER_BREAKER_OVERFLOW;
}

int veer_breaker_try_acquire_set(veer_breaker_t *b, unsigned kinds, veer_breaker_kind_t *overflowed)
{
    for (int k = 0; k < VEER_BREAKER_KINDS; k++) {
        if (!(kinds & VEER_BREAKER_BIT(k)))
            continue;
        if (acquire_one(&b->kinds[k]))
            continue;
        atomic_fetch_add_explicit(&b->kinds[k].overflows, 1, memory_order_relaxed);
        for (int undo = 0; undo < k; undo++)
            if (kinds & VEER_BREAKER_BIT(undo))
                veer_breaker_release(b, (veer_breaker_kind_t)undo);
        if (overflowed)
            *overflowed = (veer_breaker_kind_t)k;
        return VEER_BREAKER_OVERFLOW;
    }
    return 0;
}

void veer_breaker_release(veer_breaker_t *b, veer_breaker_kind_t kind)
{
    veer_breaker_counter_t *c = &b->kinds[kind];
    uint32_t active = atomic_load_explicit(&c->active, memory_order_relaxed);
    do {
        if (active == 0) {
            atomic_fetch_add_explicit(&c->bad_releases, 1, memory_order_relaxed);
            return;
        }
    } while (!atomic_compare_exchange_weak_explicit(&c->active, &active, active - 1, memory_order_acq_rel,
                                                    memory_order_relaxed));
}

bool veer_breaker_open(const veer_breaker_t *b, veer_breaker_kind_t kind)
{
    return veer_breaker_active(b, kind) >= veer_breaker_limit(b, kind);
}

/* The casts drop const for atomic_load, whose parameter is not
 * const-qualified in older C libraries: the counters are only read. */
uint32_t veer_breaker_active(const veer_breaker_t *b, veer_breaker_kind_t kind)
{
    return atomic_load_explicit(&((veer_breaker_t *)b)->kinds[kind].active, memory_order_relaxed);
}

uint32_t veer_breaker_limit(const veer_breaker_t *b, veer_breaker_kind_t kind)
{
    return atomic_load_explicit(&((veer_breaker_t *)b)->kinds[kind].limit, memory_order_relaxed);
}

uint64_t veer_breaker_overflows(const veer_breaker_t *b, veer_breaker_kind_t kind)
{
    return atomic_load_explicit(&((veer_breaker_t *)b)->kinds[kind].overflows, memory_order_relaxed);
}

/* ---- pending FIFO ------------------------------------------------------------ */

void veer_pending_init(veer_pending_t *q, uint32_t limit)
{
    memset(q, 0, sizeof *q);
    q->limit = limit;
}

void veer_pending_destroy(veer_pending_t *q)
{
    free(q->ring);
    memset(q, 0, sizeof *q);
}

void veer_pending_set_limit(veer_pending_t *q, uint32_t limit)
{
    q->limit = limit;
}

static veer_pending_entry_t *entry_at(const veer_pending_t *q, uint32_t offset)
{
    return &q->ring[(q->head + offset) & (q->capacity - 1)];
}

/* Drop holes at the head so that head is a live item (or the queue is empty). */
static void trim_head(veer_pending_t *q)
{
    while (q->span && !entry_at(q, 0)->item) {
        q->head = (q->head + 1) & (q->capacity - 1);
        q->span--;
    }
    if (q->span == 0)
        q->head = 0;
}

/* A full ring is rebuilt without its holes, twice as large only when the
 * live items need it: the size stays under twice the largest limit seen. */
static int make_room(veer_pending_t *q)
{
    uint32_t capacity = q->capacity ? q->capacity : 4;
    while (capacity < 2 * (q->count + 1) && capacity < (1u << 31))
        capacity <<= 1;
    veer_pending_entry_t *ring = malloc((size_t)capacity * sizeof *ring);
    if (!ring)
        return -ENOMEM;
    uint32_t n = 0;
    for (uint32_t i = 0; i < q->span; i++) {
        const veer_pending_entry_t *e = entry_at(q, i);
        if (e->item)
            ring[n++] = *e;
    }
    free(q->ring);
    q->ring = ring;
    q->capacity = capacity;
    q->head = 0;
    q->span = n;
    return 0;
}

int veer_pending_push(veer_pending_t *q, void *item, uint64_t deadline_ms)
{
    if (!item)
        return -EINVAL;
    if (q->count >= q->limit) {
        q->overflows++;
        return -ENOSPC;
    }
    if (q->span == q->capacity && make_room(q) != 0)
        return -ENOMEM;
    *entry_at(q, q->span) = (veer_pending_entry_t){item, deadline_ms};
    q->span++;
    q->count++;
    return 0;
}

void *veer_pending_pop(veer_pending_t *q)
{
    trim_head(q);
    if (q->span == 0)
        return NULL;
    void *item = entry_at(q, 0)->item;
    entry_at(q, 0)->item = NULL;
    q->count--;
    trim_head(q);
    return item;
}

int veer_pending_cancel(veer_pending_t *q, const void *item)
{
    for (uint32_t i = 0; item && i < q->span; i++) {
        veer_pending_entry_t *e = entry_at(q, i);
        if (e->item == item) {
            e->item = NULL;
            q->count--;
            trim_head(q);
            return 0;
        }
    }
    return -ENOENT;
}

size_t veer_pending_expire(veer_pending_t *q, uint64_t now_ms, void (*expired)(void *arg, void *item), void *arg)
{
    size_t n = 0;
    for (uint32_t i = 0; i < q->span; i++) {
        veer_pending_entry_t *e = entry_at(q, i);
        if (!e->item || e->deadline_ms > now_ms)
            continue;
        void *item = e->item;
        e->item = NULL;
        q->count--;
        q->expired++;
        n++;
        if (expired)
            expired(arg, item);
    }
    trim_head(q);
    return n;
}

uint64_t veer_pending_next_deadline(const veer_pending_t *q)
{
    uint64_t next = UINT64_MAX;
    for (uint32_t i = 0; i < q->span; i++) {
        const veer_pending_entry_t *e = entry_at(q, i);
        if (e->item && e->deadline_ms < next)
            next = e->deadline_ms;
    }
    return next;
}
