/* breaker.h - per-cluster circuit breakers with Envoy's names and defaults:
 * max_connections, max_pending_requests, max_requests, max_retries. One
 * veer_breaker_t per cluster for the whole process; every worker acquires and
 * releases on it with atomics (compare-and-swap, so a count never passes its
 * limit, not even for an instant, and no lock is taken). An overflow is
 * answered at once (503, x-veer-overloaded: true) and counted per kind.
 *
 * Also the bounded FIFO in which requests wait for a connection
 * (veer_pending_t): a plain per-worker data structure, with deadlines, that
 * takes no clock of its own. */
#ifndef VEER_BREAKER_H
#define VEER_BREAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef enum {
    VEER_BREAKER_CONNECTIONS = 0,
    VEER_BREAKER_PENDING = 1,
    VEER_BREAKER_REQUESTS = 2,
    VEER_BREAKER_RETRIES = 3,
    VEER_BREAKER_KINDS = 4,
} veer_breaker_kind_t;

#define VEER_BREAKER_BIT(kind) (1u << (kind))

#define VEER_BREAKER_OVERFLOW (-1) /* returned by the try_acquire calls */

/* Padded to 64 bytes so that kinds do not share a cache line: workers
 * hammer REQUESTS and CONNECTIONS from different cores. Padding rather than
 * _Alignas, so that a breaker inside a malloc'ed struct is still aligned. */
typedef struct veer_breaker_counter_s {
    _Atomic uint32_t active;
    _Atomic uint32_t limit;
    _Atomic uint64_t overflows;
    _Atomic uint64_t bad_releases; /* release without acquire: a bug, counted instead of wrapping */
    char pad[40];
} veer_breaker_counter_t;

typedef struct veer_breaker_s {
    veer_breaker_counter_t kinds[VEER_BREAKER_KINDS];
} veer_breaker_t;

/* The metric label of a kind: its config knob, "max_connections", ... */
const char *veer_breaker_kind_name(veer_breaker_kind_t kind);

void veer_breaker_init(veer_breaker_t *b, const veer_breaker_config_t *cfg);
/* New limits on reload; what is in flight stays counted. A limit lowered
 * below the active count only stops new acquisitions. */
void veer_breaker_set_limits(veer_breaker_t *b, const veer_breaker_config_t *cfg);

/* 0, or VEER_BREAKER_OVERFLOW (counted) when kind is at its limit. */
int veer_breaker_try_acquire(veer_breaker_t *b, veer_breaker_kind_t kind);
/* Several kinds at once (VEER_BREAKER_BIT mask), all or nothing: on overflow
 * nothing stays acquired and *overflowed (may be NULL) names the first kind
 * that was full. */
int veer_breaker_try_acquire_set(veer_breaker_t *b, unsigned kinds, veer_breaker_kind_t *overflowed);
void veer_breaker_release(veer_breaker_t *b, veer_breaker_kind_t kind);

/* The gauge veer_circuit_breaker_open{kind}: the kind is at its limit. */
bool veer_breaker_open(const veer_breaker_t *b, veer_breaker_kind_t kind);
uint32_t veer_breaker_active(const veer_breaker_t *b, veer_breaker_kind_t kind);
uint32_t veer_breaker_limit(const veer_breaker_t *b, veer_breaker_kind_t kind);
uint64_t veer_breaker_overflows(const veer_breaker_t *b, veer_breaker_kind_t kind);

/* ---- the pending-request FIFO -------------------------------------------------
 * Holds opaque items (e.g. exchanges waiting for an upstream connection) in
 * arrival order, at most `limit`. Memory grows with use, to at most the power
 * of two above twice the limit (cancelled entries leave holes until the ring is
 * compacted). One
 * owner thread; not thread-safe. The process-wide max_pending_requests count
 * is the breaker's VEER_BREAKER_PENDING; this queue bounds the worker's own. */

typedef struct veer_pending_entry_s {
    void *item; /* NULL: cancelled or expired */
    uint64_t deadline_ms;
} veer_pending_entry_t;

typedef struct veer_pending_s {
    veer_pending_entry_t *ring;
    uint32_t capacity;   /* allocated entries, a power of two */
    uint32_t head;       /* index of the oldest entry */
    uint32_t span;       /* entries from head, holes included */
    uint32_t count;      /* live items */
    uint32_t limit;
    uint64_t overflows;  /* pushes refused at the limit */
    uint64_t expired;    /* items removed by veer_pending_expire */
} veer_pending_t;

void veer_pending_init(veer_pending_t *q, uint32_t limit);
void veer_pending_destroy(veer_pending_t *q);
/* Changes the limit (reload); items over a lowered limit stay queued. */
void veer_pending_set_limit(veer_pending_t *q, uint32_t limit);
/* 0; -ENOSPC at the limit (counted); -ENOMEM; -EINVAL for a NULL item. */
int veer_pending_push(veer_pending_t *q, void *item, uint64_t deadline_ms);
/* The oldest live item, removed; NULL when empty. */
void *veer_pending_pop(veer_pending_t *q);
/* Remove item wherever it is (the client went away). 0, or -ENOENT. */
int veer_pending_cancel(veer_pending_t *q, const void *item);
/* Remove every item whose deadline is <= now_ms, oldest first, calling
 * expired(arg, item) for each after it is out of the queue. The callback must
 * not use the queue. Returns how many. */
size_t veer_pending_expire(veer_pending_t *q, uint64_t now_ms, void (*expired)(void *arg, void *item), void *arg);
/* The earliest deadline of a live item; UINT64_MAX when empty. */
uint64_t veer_pending_next_deadline(const veer_pending_t *q);

#endif
