/* stats.c - per-worker request statistics (stats.h): lock-free single-writer
 * storage, the series registry that carries data across reloads, and the
 * readers that merge every worker's data into dense views.
 *
 * Concurrency. Every counter has one writer (its worker), which updates it
 * with a relaxed load and a relaxed store (no locked instruction); readers
 * use relaxed loads. A 64-bit atomic is never torn, and successive loads of
 * one atomic never go back in time (read-read coherence), so a cumulative
 * counter read twice never decreases, and a sum over workers neither. A
 * histogram's count is never stored: readers derive it from the buckets they
 * read, so `_count` always equals the `+Inf` bucket. Memory is published
 * before its pointer (release store, acquire load), and nothing a reader can
 * reach is freed before veer_stats_free / veer_stats_endpoint_free.
 *
 * Window slices are the only data a writer takes back: the slice of second t
 * is reused for second t + window, its counters zeroed and its histogram
 * pieces returned to the worker's pool (and maybe handed to another series).
 * Each slice has a sequence lock: the writer makes the sequence odd, then
 * recycles, then makes it even again; a reader copies the slice between two
 * reads of the sequence and retries when they differ (writer: store odd,
 * release fence, data; release store even. reader: acquire load, data,
 * acquire fence, load: Boehm, "Can seqlocks get along with programming
 * language memory models?", 2012). A reader thus never mixes two seconds,
 * nor reads another series' piece as its own. Plain increments do not touch
 * the sequence, so a copy can miss the last few in-flight increments, which
 * is what any read of a live counter does.
 *
 * Memory. A (route, cluster) series costs each worker that records into it
 * 1416 bytes of totals plus 184 bytes per second of window (12.4 KB for 60 s),
 * plus 512 bytes per 64-bucket range of a total histogram that values reach
 * (at most 52 per histogram) and 256 bytes per such range per second of
 * window, taken from a per-worker pool capped by max_window_bytes. An
 * endpoint series costs each worker 96 bytes plus 64 bytes per second of
 * window (rounded up to 64). Series ids are capped by max_series. */

#include "stats.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_LINE 64u
#define CHUNK_BUCKETS 64u
#define CHUNK_COUNT (VEER_HIST_BUCKETS / CHUNK_BUCKETS) /* 52 */
#define BLOCK_CHUNKS 256u                               /* pool growth step: 64 KB */
#define MAX_CHUNK_ID 65535u                             /* ids are uint16_t, 0 = none */
#define MAX_BLOCKS ((MAX_CHUNK_ID + BLOCK_CHUNKS - 1) / BLOCK_CHUNKS)
#define FAIL_SLOTS (VEER_STATS_FAIL_COUNT - 1)
#define NO_EPOCH UINT64_MAX
#define SPINS_BEFORE_YIELD 64

typedef _Atomic uint16_t a16;
typedef _Atomic uint32_t a32;
typedef _Atomic uint64_t a64;

#define LOAD(p) atomic_load_explicit((p), memory_order_relaxed)
#define STORE(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

enum { KIND_DURATION = 0, KIND_CONNECT = 1, KIND_TTFB = 2, KIND_COUNT = 3 };

/* One writer per counter: a plain load and store, no bus lock. */
static inline void add32(a32 *p, uint32_t n)
{
    STORE(p, LOAD(p) + n);
}

static inline void add64(a64 *p, uint64_t n)
{
    STORE(p, LOAD(p) + n);
}

/* 64 consecutive buckets of a window histogram (one second's counts). */
typedef struct wchunk_s {
    a32 counts[CHUNK_BUCKETS];
} wchunk_t;
_Static_assert(sizeof(wchunk_t) == VEER_STATS_WINDOW_CHUNK_BYTES, "window chunk size");

/* 64 consecutive buckets of a total histogram. */
typedef struct cchunk_s {
    a64 counts[CHUNK_BUCKETS];
} cchunk_t;

/* One second of one series in one worker. */
typedef struct wslot_s {
    a32 seq;     /* odd while the writer recycles the slice */
    a32 dropped; /* durations not kept: the pool was empty */
    a64 epoch;   /* the second held, NO_EPOCH when empty */
    a32 classes[VEER_STATS_CLASS_COUNT];
    a32 failures[FAIL_SLOTS];
    a32 min, max; /* of durations, clamped to VEER_HIST_MAX_VALUE */
    a64 sum;
    a16 chunks[CHUNK_COUNT]; /* pool ids of the duration histogram's pieces */
} wslot_t;

typedef struct chist_s {
    a64 sum, min, max;
    _Atomic(cchunk_t *) chunks[CHUNK_COUNT];
} chist_t;

/* A (route, cluster) series in one worker. */
typedef struct series_s {
    a64 classes[VEER_STATS_CLASS_COUNT];
    a64 failures[FAIL_SLOTS];
    chist_t hist[KIND_COUNT];
    wslot_t slots[]; /* [window_s] */
} series_t;
_Static_assert(sizeof(series_t) == 1416 && sizeof(wslot_t) == 184, "the sizes stated at the top");
/* config.c checks stats.* against the same numbers without including this file. */
_Static_assert(VEER_STATS_MAX_WINDOW_S == 3600 && VEER_STATS_MAX_SERIES == 1048576 &&
                   VEER_STATS_MAX_WINDOW_BYTES == 16776960 && VEER_HIST_MAX_VALUE == 4294967295ull,
               "keep config.c's STATS_* limits in step");

/* One second of an endpoint in one worker: one cache line. */
typedef struct eslot_s {
    a32 seq;
    uint32_t unused;
    a64 epoch;
    a32 classes[VEER_STATS_CLASS_COUNT];
    a32 failures[FAIL_SLOTS];
} eslot_t;
_Static_assert(sizeof(eslot_t) == 64, "endpoint slice size");

typedef struct epart_s {
    a64 classes[VEER_STATS_CLASS_COUNT];
    a64 failures[FAIL_SLOTS];
    eslot_t slots[]; /* [window_s] */
} epart_t;

struct veer_stats_endpoint_s {
    const veer_stats_t *st;
    size_t part_size;     /* a multiple of CACHE_LINE */
    unsigned char *parts; /* [worker_count] parts of part_size bytes */
};

/* Window histogram pieces of one worker. Blocks are never freed before the
 * worker, so a reader holding a stale id reads valid memory (and its slice's
 * sequence tells it to retry). */
typedef struct pool_s {
    _Atomic(wchunk_t *) blocks[MAX_BLOCKS];
    uint32_t max_chunks;
    uint32_t fresh;     /* ids 1..fresh have been handed out */
    uint16_t *free_ids; /* [max_chunks] */
    uint32_t free_count;
} pool_t;

struct veer_stats_worker_s {
    veer_stats_t *st;
    uint32_t index;
    _Atomic(series_t *) *series; /* [max_series], by id */
    pool_t pool;
    uint64_t last_sweep_s;
    a64 no_series, alloc_failed, window_dropped;
};

typedef struct reg_entry_s {
    char *route, *cluster; /* "" for none */
    uint64_t hash;
} reg_entry_t;

struct veer_stats_s {
    veer_stats_limits_t lim;
    veer_stats_worker_t **workers;
    /* registry: changed by veer_stats_layout_new only */
    reg_entry_t *entries;
    uint32_t entry_cap;
    int32_t *table; /* open addressing: id + 1, 0 = empty */
    uint32_t table_mask;
    a32 series_ids; /* entries handed out, for readers */
};

/* ---- small helpers ------------------------------------------------------- */

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

/* Zeroed, cache-line aligned memory: what one worker writes never shares a
 * line with what another worker writes. */
static void *alloc_lines(size_t size)
{
    size = round_up(size ? size : 1, CACHE_LINE);
    void *p = aligned_alloc(CACHE_LINE, size);
    if (p)
        memset(p, 0, size);
    return p;
}

static int class_of(int status)
{
    return status >= 100 && status <= 599 ? status / 100 : 0;
}

static uint32_t clamp32(uint64_t v)
{
    return v > VEER_HIST_MAX_VALUE ? (uint32_t)VEER_HIST_MAX_VALUE : (uint32_t)v;
}

static void cpu_pause(unsigned *spins)
{
    if (++*spins % SPINS_BEFORE_YIELD == 0)
        sched_yield();
}

static void seq_write_begin(a32 *seq, uint32_t *saved)
{
    *saved = LOAD(seq);
    STORE(seq, *saved + 1);
    atomic_thread_fence(memory_order_release);
}

static void seq_write_end(a32 *seq, uint32_t saved)
{
    atomic_store_explicit(seq, saved + 2, memory_order_release);
}

/* ---- the window pool ----------------------------------------------------- */

static wchunk_t *pool_chunk(pool_t *pool, uint16_t id)
{
    uint32_t i = (uint32_t)id - 1;
    wchunk_t *block = atomic_load_explicit(&pool->blocks[i / BLOCK_CHUNKS], memory_order_acquire);
    return block + i % BLOCK_CHUNKS;
}

static void pool_free(pool_t *pool, uint16_t id)
{
    pool->free_ids[pool->free_count++] = id;
}

static uint16_t pool_take(pool_t *pool)
{
    uint16_t id;
    if (pool->free_count) {
        id = pool->free_ids[--pool->free_count];
    } else if (pool->fresh < pool->max_chunks) {
        uint32_t block = pool->fresh / BLOCK_CHUNKS;
        if (!LOAD(&pool->blocks[block])) {
            wchunk_t *mem = alloc_lines(sizeof(wchunk_t) * BLOCK_CHUNKS);
            if (!mem)
                return 0;
            atomic_store_explicit(&pool->blocks[block], mem, memory_order_release);
        }
        id = (uint16_t)++pool->fresh;
    } else {
        return 0;
    }
    /* Zeroed here, before the id is published with a release store. */
    wchunk_t *chunk = pool_chunk(pool, id);
    for (uint32_t i = 0; i < CHUNK_BUCKETS; i++)
        STORE(&chunk->counts[i], 0);
    return id;
}

/* ---- writers ------------------------------------------------------------- */

static void wslot_reset(veer_stats_worker_t *ws, wslot_t *slot, uint64_t epoch)
{
    uint32_t seq;
    seq_write_begin(&slot->seq, &seq);
    for (uint32_t c = 0; c < CHUNK_COUNT; c++) {
        uint16_t id = LOAD(&slot->chunks[c]);
        if (id) {
            pool_free(&ws->pool, id);
            STORE(&slot->chunks[c], 0);
        }
    }
    for (int i = 0; i < VEER_STATS_CLASS_COUNT; i++)
        STORE(&slot->classes[i], 0);
    for (int i = 0; i < FAIL_SLOTS; i++)
        STORE(&slot->failures[i], 0);
    STORE(&slot->dropped, 0);
    STORE(&slot->min, UINT32_MAX);
    STORE(&slot->max, 0);
    STORE(&slot->sum, 0);
    STORE(&slot->epoch, epoch);
    seq_write_end(&slot->seq, seq);
}

static void eslot_reset(eslot_t *slot, uint64_t epoch)
{
    uint32_t seq;
    seq_write_begin(&slot->seq, &seq);
    for (int i = 0; i < VEER_STATS_CLASS_COUNT; i++)
        STORE(&slot->classes[i], 0);
    for (int i = 0; i < FAIL_SLOTS; i++)
        STORE(&slot->failures[i], 0);
    STORE(&slot->epoch, epoch);
    seq_write_end(&slot->seq, seq);
}

static void series_expire(veer_stats_worker_t *ws, series_t *s, uint64_t now_s)
{
    uint32_t window = ws->st->lim.window_s;
    for (uint32_t i = 0; i < window; i++) {
        uint64_t epoch = LOAD(&s->slots[i].epoch);
        if (epoch != NO_EPOCH && epoch <= now_s && now_s - epoch >= window)
            wslot_reset(ws, &s->slots[i], NO_EPOCH);
    }
}

void veer_stats_worker_expire(veer_stats_worker_t *ws, uint64_t now_s)
{
    uint32_t ids = atomic_load_explicit(&ws->st->series_ids, memory_order_acquire);
    for (uint32_t id = 0; id < ids; id++) {
        series_t *s = LOAD(&ws->series[id]);
        if (s)
            series_expire(ws, s, now_s);
    }
    ws->last_sweep_s = now_s;
}

static uint16_t window_chunk_take(veer_stats_worker_t *ws, uint64_t now_s)
{
    uint16_t id = pool_take(&ws->pool);
    if (!id && ws->last_sweep_s != now_s) {
        /* Idle series may still hold pieces of expired seconds: reclaim
         * them, at most once a second. */
        veer_stats_worker_expire(ws, now_s);
        id = pool_take(&ws->pool);
    }
    return id;
}

static void window_record_duration(veer_stats_worker_t *ws, wslot_t *slot, uint64_t value, uint64_t now_s)
{
    uint32_t index = veer_hist_index(value);
    a16 *ref = &slot->chunks[index / CHUNK_BUCKETS];
    uint16_t id = LOAD(ref);
    if (!id) {
        id = window_chunk_take(ws, now_s);
        if (!id) {
            add32(&slot->dropped, 1);
            add64(&ws->window_dropped, 1);
            return;
        }
        atomic_store_explicit(ref, id, memory_order_release);
    }
    add32(&pool_chunk(&ws->pool, id)->counts[index % CHUNK_BUCKETS], 1);
    uint32_t v = clamp32(value);
    add64(&slot->sum, value);
    if (v < LOAD(&slot->min))
        STORE(&slot->min, v);
    if (v > LOAD(&slot->max))
        STORE(&slot->max, v);
}

/* The slice for now_s, recycled if it held an older second; NULL when a
 * later second already holds it (a time more than a window in the past). */
static wslot_t *window_slot(veer_stats_worker_t *ws, series_t *s, uint64_t now_s)
{
    wslot_t *slot = &s->slots[now_s % ws->st->lim.window_s];
    uint64_t epoch = LOAD(&slot->epoch);
    if (epoch == now_s)
        return slot;
    if (epoch != NO_EPOCH && epoch > now_s)
        return NULL;
    wslot_reset(ws, slot, now_s);
    return slot;
}

static bool chist_record(veer_stats_worker_t *ws, chist_t *h, uint64_t value)
{
    uint32_t index = veer_hist_index(value);
    _Atomic(cchunk_t *) *ref = &h->chunks[index / CHUNK_BUCKETS];
    cchunk_t *chunk = LOAD(ref);
    if (!chunk) {
        chunk = alloc_lines(sizeof *chunk);
        if (!chunk) {
            add64(&ws->alloc_failed, 1);
            return false;
        }
        atomic_store_explicit(ref, chunk, memory_order_release);
    }
    add64(&chunk->counts[index % CHUNK_BUCKETS], 1);
    add64(&h->sum, value);
    if (value < LOAD(&h->min))
        STORE(&h->min, value);
    if (value > LOAD(&h->max))
        STORE(&h->max, value);
    return true;
}

static series_t *series_new(const veer_stats_t *st)
{
    series_t *s = alloc_lines(sizeof *s + (size_t)st->lim.window_s * sizeof(wslot_t));
    if (!s)
        return NULL;
    for (int k = 0; k < KIND_COUNT; k++)
        STORE(&s->hist[k].min, UINT64_MAX);
    for (uint32_t i = 0; i < st->lim.window_s; i++) {
        STORE(&s->slots[i].epoch, NO_EPOCH);
        STORE(&s->slots[i].min, UINT32_MAX);
    }
    return s;
}

static epart_t *endpoint_part(const veer_stats_endpoint_t *ep, uint32_t worker)
{
    return (epart_t *)(ep->parts + (size_t)worker * ep->part_size);
}

static void endpoint_record(veer_stats_worker_t *ws, veer_stats_endpoint_t *ep, int cls, int fail, uint64_t now_s)
{
    epart_t *part = endpoint_part(ep, ws->index);
    add64(&part->classes[cls], 1);
    if (fail)
        add64(&part->failures[fail - 1], 1);
    eslot_t *slot = &part->slots[now_s % ws->st->lim.window_s];
    uint64_t epoch = LOAD(&slot->epoch);
    if (epoch != now_s) {
        if (epoch != NO_EPOCH && epoch > now_s)
            return;
        eslot_reset(slot, now_s);
    }
    add32(&slot->classes[cls], 1);
    if (fail)
        add32(&slot->failures[fail - 1], 1);
}

void veer_stats_record_request(veer_stats_worker_t *ws, const veer_stats_layout_t *layout, int route, int cluster,
                               veer_stats_endpoint_t *endpoint, int status, veer_stats_fail_t failure,
                               uint64_t duration_us, uint64_t connect_us, uint64_t ttfb_us, uint64_t now_s)
{
    int cls = class_of(status);
    int fail = failure > VEER_STATS_FAIL_NONE && failure < VEER_STATS_FAIL_COUNT ? (int)failure : 0;
    if (endpoint)
        endpoint_record(ws, endpoint, cls, fail, now_s);

    int32_t id = layout ? veer_stats_layout_id(layout, route, cluster) : -1;
    if (id < 0) {
        add64(&ws->no_series, 1);
        return;
    }
    series_t *s = LOAD(&ws->series[id]);
    if (!s) {
        s = series_new(ws->st);
        if (!s) {
            add64(&ws->alloc_failed, 1);
            return;
        }
        atomic_store_explicit(&ws->series[id], s, memory_order_release);
    }

    add64(&s->classes[cls], 1);
    if (fail)
        add64(&s->failures[fail - 1], 1);
    if (duration_us != VEER_STATS_NO_TIME)
        chist_record(ws, &s->hist[KIND_DURATION], duration_us);
    if (connect_us != VEER_STATS_NO_TIME)
        chist_record(ws, &s->hist[KIND_CONNECT], connect_us);
    if (ttfb_us != VEER_STATS_NO_TIME)
        chist_record(ws, &s->hist[KIND_TTFB], ttfb_us);

    wslot_t *slot = window_slot(ws, s, now_s);
    if (!slot)
        return;
    add32(&slot->classes[cls], 1);
    if (fail)
        add32(&slot->failures[fail - 1], 1);
    if (duration_us != VEER_STATS_NO_TIME && ws->pool.max_chunks) /* 0: the window keeps counts only */
        window_record_duration(ws, slot, duration_us, now_s);
}

/* ---- readers ------------------------------------------------------------- */

void veer_stats_view_reset(veer_stats_view_t *view)
{
    memset(&view->counts, 0, sizeof view->counts);
    veer_hist_reset(&view->duration);
    veer_hist_reset(&view->connect);
    veer_hist_reset(&view->ttfb);
}

uint64_t veer_stats_counts_requests(const veer_stats_counts_t *c)
{
    uint64_t n = 0;
    for (int i = 0; i < VEER_STATS_CLASS_COUNT; i++)
        n += c->classes[i];
    return n;
}

uint64_t veer_stats_counts_failures(const veer_stats_counts_t *c)
{
    uint64_t n = 0;
    for (int i = 1; i < VEER_STATS_FAIL_COUNT; i++)
        n += c->failures[i];
    return n;
}

static series_t *series_of(const veer_stats_t *st, uint32_t worker, int32_t id)
{
    return atomic_load_explicit(&st->workers[worker]->series[id], memory_order_acquire);
}

bool veer_stats_has_data(const veer_stats_t *st, const veer_stats_layout_t *layout, int route, int cluster)
{
    int32_t id = veer_stats_layout_id(layout, route, cluster);
    if (id < 0)
        return false;
    for (uint32_t w = 0; w < st->lim.worker_count; w++)
        if (series_of(st, w, id))
            return true;
    return false;
}

static void chist_read(chist_t *h, veer_hist_t *out)
{
    for (uint32_t c = 0; c < CHUNK_COUNT; c++) {
        cchunk_t *chunk = atomic_load_explicit(&h->chunks[c], memory_order_acquire);
        if (!chunk)
            continue;
        uint64_t *counts = &out->counts[c * CHUNK_BUCKETS];
        for (uint32_t i = 0; i < CHUNK_BUCKETS; i++) {
            uint64_t n = LOAD(&chunk->counts[i]);
            counts[i] += n;
            out->count += n;
        }
    }
    out->sum += LOAD(&h->sum);
    uint64_t min = LOAD(&h->min), max = LOAD(&h->max);
    if (min < out->min)
        out->min = min;
    if (max > out->max)
        out->max = max;
}

void veer_stats_read_total(const veer_stats_t *st, const veer_stats_layout_t *layout, int route, int cluster,
                           unsigned what, veer_stats_view_t *out)
{
    int32_t id = veer_stats_layout_id(layout, route, cluster);
    if (id < 0)
        return;
    for (uint32_t w = 0; w < st->lim.worker_count; w++) {
        series_t *s = series_of(st, w, id);
        if (!s)
            continue;
        if (what & VEER_STATS_READ_COUNTS) {
            for (int i = 0; i < VEER_STATS_CLASS_COUNT; i++)
                out->counts.classes[i] += LOAD(&s->classes[i]);
            for (int i = 0; i < FAIL_SLOTS; i++)
                out->counts.failures[i + 1] += LOAD(&s->failures[i]);
        }
        if (what & VEER_STATS_READ_DURATION)
            chist_read(&s->hist[KIND_DURATION], &out->duration);
        if (what & VEER_STATS_READ_CONNECT)
            chist_read(&s->hist[KIND_CONNECT], &out->connect);
        if (what & VEER_STATS_READ_TTFB)
            chist_read(&s->hist[KIND_TTFB], &out->ttfb);
    }
}

/* A consistent copy of one window slice. */
typedef struct slot_copy_s {
    uint32_t classes[VEER_STATS_CLASS_COUNT];
    uint32_t failures[FAIL_SLOTS];
    uint32_t dropped, min, max;
    uint64_t sum;
    uint64_t present; /* bit c: counts[c] was copied */
    uint32_t counts[CHUNK_COUNT][CHUNK_BUCKETS];
} slot_copy_t;
_Static_assert(CHUNK_COUNT <= 64, "present mask");

/* Copies the slice if it holds a second in [first, last]; false if not. */
static bool wslot_read(pool_t *pool, wslot_t *slot, uint64_t first, uint64_t last, slot_copy_t *copy)
{
    unsigned spins = 0;
    for (;;) {
        uint32_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
        if (seq & 1) {
            cpu_pause(&spins);
            continue;
        }
        uint64_t epoch = LOAD(&slot->epoch);
        bool wanted = epoch != NO_EPOCH && epoch >= first && epoch <= last;
        if (wanted) {
            for (int i = 0; i < VEER_STATS_CLASS_COUNT; i++)
                copy->classes[i] = LOAD(&slot->classes[i]);
            for (int i = 0; i < FAIL_SLOTS; i++)
                copy->failures[i] = LOAD(&slot->failures[i]);
            copy->dropped = LOAD(&slot->dropped);
            copy->min = LOAD(&slot->min);
            copy->max = LOAD(&slot->max);
            copy->sum = LOAD(&slot->sum);
            copy->present = 0;
            for (uint32_t c = 0; c < CHUNK_COUNT; c++) {
                uint16_t id = atomic_load_explicit(&slot->chunks[c], memory_order_acquire);
                if (!id)
                    continue;
                wchunk_t *chunk = pool_chunk(pool, id);
                for (uint32_t i = 0; i < CHUNK_BUCKETS; i++)
                    copy->counts[c][i] = LOAD(&chunk->counts[i]);
                copy->present |= 1ull << c;
            }
        }
        atomic_thread_fence(memory_order_acquire);
        if (LOAD(&slot->seq) == seq)
            return wanted;
        cpu_pause(&spins);
    }
}

static void slot_copy_add(const slot_copy_t *copy, veer_stats_view_t *out)
{
    for (int i = 0; i < VEER_STATS_CLASS_COUNT; i++)
        out->counts.classes[i] += copy->classes[i];
    for (int i = 0; i < FAIL_SLOTS; i++)
        out->counts.failures[i + 1] += copy->failures[i];
    out->counts.window_dropped += copy->dropped;
    if (!copy->present)
        return;
    veer_hist_t *h = &out->duration;
    for (uint32_t c = 0; c < CHUNK_COUNT; c++) {
        if (!(copy->present & (1ull << c)))
            continue;
        for (uint32_t i = 0; i < CHUNK_BUCKETS; i++) {
            h->counts[c * CHUNK_BUCKETS + i] += copy->counts[c][i];
            h->count += copy->counts[c][i];
        }
    }
    h->sum += copy->sum;
    if (copy->min < h->min)
        h->min = copy->min;
    if (copy->max > h->max)
        h->max = copy->max;
}

/* The first second of the last `seconds` seconds up to now_s (capped at the
 * window; seconds before 0 do not exist). */
static uint64_t window_first(const veer_stats_t *st, uint64_t now_s, uint32_t seconds)
{
    if (seconds > st->lim.window_s)
        seconds = st->lim.window_s;
    return now_s >= seconds ? now_s - seconds + 1 : 0;
}

void veer_stats_read_window(const veer_stats_t *st, const veer_stats_layout_t *layout, int route, int cluster,
                            uint64_t now_s, uint32_t seconds, veer_stats_view_t *out)
{
    int32_t id = veer_stats_layout_id(layout, route, cluster);
    if (id < 0 || seconds == 0)
        return;
    uint64_t first = window_first(st, now_s, seconds);
    slot_copy_t copy;
    for (uint32_t w = 0; w < st->lim.worker_count; w++) {
        series_t *s = series_of(st, w, id);
        if (!s)
            continue;
        for (uint32_t i = 0; i < st->lim.window_s; i++)
            if (wslot_read(&st->workers[w]->pool, &s->slots[i], first, now_s, &copy))
                slot_copy_add(&copy, out);
    }
}

void veer_stats_endpoint_read_total(const veer_stats_t *st, const veer_stats_endpoint_t *ep,
                                    veer_stats_counts_t *out)
{
    for (uint32_t w = 0; w < st->lim.worker_count; w++) {
        epart_t *part = endpoint_part(ep, w);
        for (int i = 0; i < VEER_STATS_CLASS_COUNT; i++)
            out->classes[i] += LOAD(&part->classes[i]);
        for (int i = 0; i < FAIL_SLOTS; i++)
            out->failures[i + 1] += LOAD(&part->failures[i]);
    }
}

static void eslot_read(eslot_t *slot, uint64_t first, uint64_t last, veer_stats_counts_t *out)
{
    uint32_t classes[VEER_STATS_CLASS_COUNT], failures[FAIL_SLOTS];
    unsigned spins = 0;
    for (;;) {
        uint32_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
        if (seq & 1) {
            cpu_pause(&spins);
            continue;
        }
        uint64_t epoch = LOAD(&slot->epoch);
        bool wanted = epoch != NO_EPOCH && epoch >= first && epoch <= last;
        for (int i = 0; wanted && i < VEER_STATS_CLASS_COUNT; i++)
            classes[i] = LOAD(&slot->classes[i]);
        for (int i = 0; wanted && i < FAIL_SLOTS; i++)
            failures[i] = LOAD(&slot->failures[i]);
        atomic_thread_fence(memory_order_acquire);
        if (LOAD(&slot->seq) != seq) {
            cpu_pause(&spins);
            continue;
        }
        if (!wanted)
            return;
        for (int i = 0; i < VEER_STATS_CLASS_COUNT; i++)
            out->classes[i] += classes[i];
        for (int i = 0; i < FAIL_SLOTS; i++)
            out->failures[i + 1] += failures[i];
        return;
    }
}

void veer_stats_endpoint_read_window(const veer_stats_t *st, const veer_stats_endpoint_t *ep, uint64_t now_s,
                                     uint32_t seconds, veer_stats_counts_t *out)
{
    if (seconds == 0)
        return;
    uint64_t first = window_first(st, now_s, seconds);
    for (uint32_t w = 0; w < st->lim.worker_count; w++) {
        epart_t *part = endpoint_part(ep, w);
        for (uint32_t i = 0; i < st->lim.window_s; i++)
            eslot_read(&part->slots[i], first, now_s, out);
    }
}

void veer_stats_read_health(const veer_stats_t *st, veer_stats_health_t *out)
{
    memset(out, 0, sizeof *out);
    for (uint32_t w = 0; w < st->lim.worker_count; w++) {
        veer_stats_worker_t *ws = st->workers[w];
        out->no_series += LOAD(&ws->no_series);
        out->alloc_failed += LOAD(&ws->alloc_failed);
        out->window_dropped += LOAD(&ws->window_dropped);
    }
    out->series_ids = atomic_load_explicit(&st->series_ids, memory_order_acquire);
}

const char *veer_stats_fail_name(veer_stats_fail_t reason)
{
    static const char *const names[VEER_STATS_FAIL_COUNT] = {"none",    "5xx",      "reset", "connect",
                                                             "timeout", "overflow", "grpc"};
    return (int)reason >= 0 && (int)reason < VEER_STATS_FAIL_COUNT ? names[reason] : "none";
}

const char *veer_stats_class_name(int class_index)
{
    static const char *const names[VEER_STATS_CLASS_COUNT] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    return class_index >= 0 && class_index < VEER_STATS_CLASS_COUNT ? names[class_index] : "none";
}

/* ---- endpoints ----------------------------------------------------------- */

veer_stats_endpoint_t *veer_stats_endpoint_new(veer_stats_t *st)
{
    veer_stats_endpoint_t *ep = calloc(1, sizeof *ep);
    if (!ep)
        return NULL;
    ep->st = st;
    ep->part_size = round_up(sizeof(epart_t) + (size_t)st->lim.window_s * sizeof(eslot_t), CACHE_LINE);
    ep->parts = alloc_lines(ep->part_size * st->lim.worker_count);
    if (!ep->parts) {
        free(ep);
        return NULL;
    }
    for (uint32_t w = 0; w < st->lim.worker_count; w++)
        for (uint32_t i = 0; i < st->lim.window_s; i++)
            STORE(&endpoint_part(ep, w)->slots[i].epoch, NO_EPOCH);
    return ep;
}

void veer_stats_endpoint_free(veer_stats_endpoint_t *ep)
{
    if (!ep)
        return;
    free(ep->parts);
    free(ep);
}

/* ---- the registry and layouts -------------------------------------------- */

static uint64_t name_hash(const char *route, const char *cluster)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const char *p = route; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    h = (h ^ 0xff) * 0x100000001b3ull; /* a byte no name holds separates the two */
    for (const char *p = cluster; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    return h;
}

static int table_grow(veer_stats_t *st)
{
    uint32_t cap = st->table ? (st->table_mask + 1) * 2 : 64;
    int32_t *table = calloc(cap, sizeof *table);
    if (!table)
        return -1;
    uint32_t ids = LOAD(&st->series_ids);
    for (uint32_t id = 0; id < ids; id++) {
        uint32_t i = (uint32_t)st->entries[id].hash & (cap - 1);
        while (table[i])
            i = (i + 1) & (cap - 1);
        table[i] = (int32_t)id + 1;
    }
    free(st->table);
    st->table = table;
    st->table_mask = cap - 1;
    return 0;
}

/* The id of (route, cluster), a new one if needed; -1 when the registry is
 * full, -2 when out of memory. */
static int32_t registry_id(veer_stats_t *st, const char *route, const char *cluster)
{
    uint64_t hash = name_hash(route, cluster);
    uint32_t i = (uint32_t)hash & st->table_mask;
    for (; st->table[i]; i = (i + 1) & st->table_mask) {
        const reg_entry_t *e = &st->entries[st->table[i] - 1];
        if (e->hash == hash && strcmp(e->route, route) == 0 && strcmp(e->cluster, cluster) == 0)
            return st->table[i] - 1;
    }
    uint32_t id = LOAD(&st->series_ids);
    if (id >= st->lim.max_series)
        return -1;
    if (id == st->entry_cap) {
        uint32_t cap = st->entry_cap ? st->entry_cap * 2 : 64;
        if (cap > st->lim.max_series)
            cap = st->lim.max_series;
        reg_entry_t *entries = realloc(st->entries, cap * sizeof *entries);
        if (!entries)
            return -2;
        st->entries = entries;
        st->entry_cap = cap;
    }
    /* The table stays at most half full, so probing always ends. */
    if ((id + 1) * 2 > st->table_mask + 1) {
        if (table_grow(st) != 0)
            return -2;
        for (i = (uint32_t)hash & st->table_mask; st->table[i]; i = (i + 1) & st->table_mask)
            ;
    }
    reg_entry_t *e = &st->entries[id];
    e->route = strdup(route);
    e->cluster = strdup(cluster);
    if (!e->route || !e->cluster) {
        free(e->route);
        free(e->cluster);
        return -2;
    }
    e->hash = hash;
    st->table[i] = (int32_t)id + 1;
    atomic_store_explicit(&st->series_ids, id + 1, memory_order_release);
    return (int32_t)id;
}

void veer_stats_layout_free(veer_stats_layout_t *layout)
{
    if (!layout)
        return;
    for (size_t i = 0; layout->route_names && i < layout->route_count; i++)
        free(layout->route_names[i]);
    for (size_t i = 0; layout->cluster_names && i < layout->cluster_count; i++)
        free(layout->cluster_names[i]);
    free(layout->route_names);
    free(layout->cluster_names);
    free(layout->ids);
    free(layout);
}

static char **copy_names(const char *const *names, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof *out);
    for (size_t i = 0; out && i < n; i++) {
        out[i] = strdup(names[i] ? names[i] : "");
        if (!out[i]) {
            while (i--)
                free(out[i]);
            free(out);
            return NULL;
        }
    }
    return out;
}

veer_stats_layout_t *veer_stats_layout_new(veer_stats_t *st, const char *const *routes, size_t route_count,
                                           const char *const *clusters, size_t cluster_count)
{
    if (route_count >= VEER_STATS_MAX_SERIES || cluster_count >= VEER_STATS_MAX_SERIES)
        return NULL;
    veer_stats_layout_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->route_count = route_count;
    l->cluster_count = cluster_count;
    l->route_names = copy_names(routes, route_count);
    l->cluster_names = copy_names(clusters, cluster_count);
    size_t pairs = (route_count + 1) * (cluster_count + 1);
    l->ids = malloc(pairs * sizeof *l->ids);
    if (!l->route_names || !l->cluster_names || !l->ids)
        goto fail;
    for (size_t r = 0; r <= route_count; r++) {
        for (size_t c = 0; c <= cluster_count; c++) {
            const char *rn = r < route_count ? l->route_names[r] : "";
            const char *cn = c < cluster_count ? l->cluster_names[c] : "";
            int32_t id = registry_id(st, rn, cn);
            if (id == -2)
                goto fail;
            l->ids[r * (cluster_count + 1) + c] = id;
        }
    }
    return l;
fail:
    veer_stats_layout_free(l);
    return NULL;
}

veer_stats_layout_t *veer_stats_layout_from_config(veer_stats_t *st, const veer_config_t *cfg)
{
    const char **routes = calloc(cfg->route_count + 1, sizeof *routes);
    const char **clusters = calloc(cfg->cluster_count + 1, sizeof *clusters);
    veer_stats_layout_t *l = NULL;
    if (routes && clusters) {
        for (size_t i = 0; i < cfg->route_count; i++)
            routes[i] = cfg->routes[i].name;
        for (size_t i = 0; i < cfg->cluster_count; i++)
            clusters[i] = cfg->clusters[i].name;
        l = veer_stats_layout_new(st, routes, cfg->route_count, clusters, cfg->cluster_count);
    }
    free(routes);
    free(clusters);
    return l;
}

int32_t veer_stats_layout_id(const veer_stats_layout_t *layout, int route, int cluster)
{
    size_t r = route < 0 || (size_t)route >= layout->route_count ? layout->route_count : (size_t)route;
    size_t c = cluster < 0 || (size_t)cluster >= layout->cluster_count ? layout->cluster_count : (size_t)cluster;
    return layout->ids[r * (layout->cluster_count + 1) + c];
}

/* ---- setup --------------------------------------------------------------- */

static void worker_free(veer_stats_worker_t *ws)
{
    if (!ws)
        return;
    if (ws->series) {
        for (uint32_t id = 0; id < ws->st->lim.max_series; id++) {
            series_t *s = LOAD(&ws->series[id]);
            if (!s)
                continue;
            for (int k = 0; k < KIND_COUNT; k++)
                for (uint32_t c = 0; c < CHUNK_COUNT; c++)
                    free(LOAD(&s->hist[k].chunks[c]));
            free(s);
        }
    }
    for (uint32_t b = 0; b < MAX_BLOCKS; b++)
        free(LOAD(&ws->pool.blocks[b]));
    free(ws->pool.free_ids);
    free((void *)ws->series);
    free(ws);
}

static veer_stats_worker_t *worker_new(veer_stats_t *st, uint32_t index)
{
    veer_stats_worker_t *ws = alloc_lines(sizeof *ws);
    if (!ws)
        return NULL;
    ws->st = st;
    ws->index = index;
    ws->last_sweep_s = NO_EPOCH;
    uint64_t chunks = st->lim.max_window_bytes / VEER_STATS_WINDOW_CHUNK_BYTES;
    ws->pool.max_chunks = chunks > MAX_CHUNK_ID ? MAX_CHUNK_ID : (uint32_t)chunks;
    ws->series = calloc(st->lim.max_series, sizeof *ws->series);
    ws->pool.free_ids = malloc((ws->pool.max_chunks ? ws->pool.max_chunks : 1) * sizeof *ws->pool.free_ids);
    if (!ws->series || !ws->pool.free_ids) {
        worker_free(ws);
        return NULL;
    }
    return ws;
}

veer_stats_t *veer_stats_new(const veer_stats_limits_t *lim)
{
    if (!lim || lim->worker_count == 0 || lim->window_s == 0 || lim->window_s > VEER_STATS_MAX_WINDOW_S ||
        lim->max_series == 0 || lim->max_series > VEER_STATS_MAX_SERIES ||
        lim->max_window_bytes > VEER_STATS_MAX_WINDOW_BYTES)
        return NULL;
    veer_stats_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->lim = *lim;
    st->workers = calloc(lim->worker_count, sizeof *st->workers);
    if (!st->workers || table_grow(st) != 0)
        goto fail;
    for (uint32_t w = 0; w < lim->worker_count; w++) {
        st->workers[w] = worker_new(st, w);
        if (!st->workers[w])
            goto fail;
    }
    return st;
fail:
    veer_stats_free(st);
    return NULL;
}

void veer_stats_free(veer_stats_t *st)
{
    if (!st)
        return;
    for (uint32_t w = 0; st->workers && w < st->lim.worker_count; w++)
        worker_free(st->workers[w]);
    free(st->workers);
    uint32_t ids = LOAD(&st->series_ids);
    for (uint32_t id = 0; id < ids; id++) {
        free(st->entries[id].route);
        free(st->entries[id].cluster);
    }
    free(st->entries);
    free(st->table);
    free(st);
}

veer_stats_limits_t veer_stats_limits_from_config(const veer_config_t *cfg, uint32_t worker_count)
{
    veer_stats_limits_t lim = {
        .worker_count = worker_count,
        .window_s = cfg->stats.window_s,
        .max_series = cfg->stats.max_series,
        .max_window_bytes = cfg->stats.max_window_bytes,
    };
    return lim;
}

veer_stats_worker_t *veer_stats_worker(veer_stats_t *st, uint32_t worker)
{
    return worker < st->lim.worker_count ? st->workers[worker] : NULL;
}

uint32_t veer_stats_window(const veer_stats_t *st)
{
    return st->lim.window_s;
}
