/* test_breaker.c - circuit breakers: each kind overflows at exactly its
 * limit and counts it, all-or-nothing acquisition, reload of limits, two
 * threads hammering one breaker never holding more than the limit; and the
 * pending FIFO: order, limit, cancel, deadlines and bounded memory. */
#include "breaker.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

static void test_limits_per_kind(void)
{
    veer_breaker_t b;
    veer_breaker_config_t cfg = {.max_connections = 2, .max_pending_requests = 0, .max_requests = 3,
                                 .max_retries = 1};
    veer_breaker_init(&b, &cfg);
    const uint32_t limits[VEER_BREAKER_KINDS] = {2, 0, 3, 1};
    for (int k = 0; k < VEER_BREAKER_KINDS; k++) {
        veer_breaker_kind_t kind = (veer_breaker_kind_t)k;
        CHECK(veer_breaker_limit(&b, kind) == limits[k]);
        for (uint32_t i = 0; i < limits[k]; i++) {
            CHECK(!veer_breaker_open(&b, kind));
            CHECK(veer_breaker_try_acquire(&b, kind) == 0);
        }
        CHECK(veer_breaker_open(&b, kind));
        CHECK(veer_breaker_try_acquire(&b, kind) == VEER_BREAKER_OVERFLOW);
        CHECK(veer_breaker_try_acquire(&b, kind) == VEER_BREAKER_OVERFLOW);
        CHECK(veer_breaker_overflows(&b, kind) == 2 && veer_breaker_active(&b, kind) == limits[k]);
        if (limits[k]) {
            veer_breaker_release(&b, kind);
            CHECK(!veer_breaker_open(&b, kind) && veer_breaker_try_acquire(&b, kind) == 0);
        }
    }
    CHECK(strcmp(veer_breaker_kind_name(VEER_BREAKER_CONNECTIONS), "max_connections") == 0);
    CHECK(strcmp(veer_breaker_kind_name(VEER_BREAKER_PENDING), "max_pending_requests") == 0);
    CHECK(strcmp(veer_breaker_kind_name(VEER_BREAKER_REQUESTS), "max_requests") == 0);
    CHECK(strcmp(veer_breaker_kind_name(VEER_BREAKER_RETRIES), "max_retries") == 0);
}

static void test_acquire_set_and_release(void)
{
    veer_breaker_t b;
    veer_breaker_config_t cfg = {.max_connections = 1, .max_pending_requests = 5, .max_requests = 5,
                                 .max_retries = 5};
    veer_breaker_init(&b, &cfg);
    veer_breaker_kind_t which = VEER_BREAKER_KINDS;
    unsigned set = VEER_BREAKER_BIT(VEER_BREAKER_REQUESTS) | VEER_BREAKER_BIT(VEER_BREAKER_CONNECTIONS);
    CHECK(veer_breaker_try_acquire_set(&b, set, &which) == 0 && which == VEER_BREAKER_KINDS);
    CHECK(veer_breaker_active(&b, VEER_BREAKER_REQUESTS) == 1);
    CHECK(veer_breaker_active(&b, VEER_BREAKER_CONNECTIONS) == 1);
    /* connections full: nothing stays acquired, the overflow names the kind */
    set = VEER_BREAKER_BIT(VEER_BREAKER_PENDING) | VEER_BREAKER_BIT(VEER_BREAKER_CONNECTIONS) |
          VEER_BREAKER_BIT(VEER_BREAKER_REQUESTS);
    CHECK(veer_breaker_try_acquire_set(&b, set, &which) == VEER_BREAKER_OVERFLOW);
    CHECK(which == VEER_BREAKER_CONNECTIONS);
    CHECK(veer_breaker_active(&b, VEER_BREAKER_PENDING) == 0 && veer_breaker_active(&b, VEER_BREAKER_REQUESTS) == 1);
    CHECK(veer_breaker_overflows(&b, VEER_BREAKER_CONNECTIONS) == 1 &&
          veer_breaker_overflows(&b, VEER_BREAKER_REQUESTS) == 0);
    /* a release without an acquire does not wrap the count */
    veer_breaker_release(&b, VEER_BREAKER_RETRIES);
    CHECK(veer_breaker_active(&b, VEER_BREAKER_RETRIES) == 0);
    CHECK(atomic_load(&b.kinds[VEER_BREAKER_RETRIES].bad_releases) == 1);
    /* a lowered limit stops new acquisitions; what is in flight stays */
    for (int i = 0; i < 4; i++)
        veer_breaker_try_acquire(&b, VEER_BREAKER_REQUESTS);
    CHECK(veer_breaker_active(&b, VEER_BREAKER_REQUESTS) == 5);
    cfg.max_requests = 2;
    veer_breaker_set_limits(&b, &cfg);
    CHECK(veer_breaker_open(&b, VEER_BREAKER_REQUESTS) && veer_breaker_active(&b, VEER_BREAKER_REQUESTS) == 5);
    for (int i = 0; i < 3; i++)
        veer_breaker_release(&b, VEER_BREAKER_REQUESTS);
    CHECK(veer_breaker_open(&b, VEER_BREAKER_REQUESTS) && veer_breaker_try_acquire(&b, VEER_BREAKER_REQUESTS) != 0);
    veer_breaker_release(&b, VEER_BREAKER_REQUESTS);
    CHECK(veer_breaker_try_acquire(&b, VEER_BREAKER_REQUESTS) == 0);
}

/* ---- two threads on one breaker ---------------------------------------------- */

#define HAMMER_ROUNDS 300000
#define HAMMER_LIMIT 5

typedef struct hammer_s {
    veer_breaker_t breaker;
    atomic_int holders;     /* threads x slots held right now, counted by the holders themselves */
    atomic_int max_holders;
    uint64_t acquired[2], refused[2];
} hammer_t;

typedef struct hammer_arg_s {
    hammer_t *h;
    int index;
} hammer_arg_t;

static void note_max(atomic_int *max, int value)
{
    int seen = atomic_load(max);
    while (value > seen && !atomic_compare_exchange_weak(max, &seen, value))
        ;
}

static void *hammer(void *p)
{
    hammer_arg_t *arg = p;
    hammer_t *h = arg->h;
    for (int round = 0; round < HAMMER_ROUNDS; round++) {
        /* grab up to 3 at once (two threads want 6 > 5), then give them back */
        int held = 0;
        for (int i = 0; i < 3; i++) {
            if (veer_breaker_try_acquire(&h->breaker, VEER_BREAKER_REQUESTS) != 0) {
                h->refused[arg->index]++;
                continue;
            }
            h->acquired[arg->index]++;
            held++;
            note_max(&h->max_holders, atomic_fetch_add(&h->holders, 1) + 1);
        }
        for (int i = 0; i < held; i++) {
            atomic_fetch_sub(&h->holders, 1);
            veer_breaker_release(&h->breaker, VEER_BREAKER_REQUESTS);
        }
    }
    return NULL;
}

static void test_two_threads(void)
{
    static hammer_t h;
    veer_breaker_config_t cfg = {.max_connections = 1, .max_pending_requests = 1, .max_requests = HAMMER_LIMIT,
                                 .max_retries = 1};
    veer_breaker_init(&h.breaker, &cfg);
    atomic_init(&h.holders, 0);
    atomic_init(&h.max_holders, 0);
    pthread_t threads[2];
    hammer_arg_t args[2] = {{&h, 0}, {&h, 1}};
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&threads[i], NULL, hammer, &args[i]) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    uint64_t acquired = h.acquired[0] + h.acquired[1], refused = h.refused[0] + h.refused[1];
    CHECK(acquired + refused == 2ull * 3 * HAMMER_ROUNDS);
    CHECK(atomic_load(&h.max_holders) <= HAMMER_LIMIT);
    CHECK(veer_breaker_active(&h.breaker, VEER_BREAKER_REQUESTS) == 0);
    CHECK(veer_breaker_overflows(&h.breaker, VEER_BREAKER_REQUESTS) == refused);
    CHECK(atomic_load(&h.breaker.kinds[VEER_BREAKER_REQUESTS].bad_releases) == 0);
    printf("test_breaker: two threads: %llu acquired, %llu refused, at most %d held at once (limit %d)\n",
           (unsigned long long)acquired, (unsigned long long)refused, atomic_load(&h.max_holders), HAMMER_LIMIT);
}

/* ---- pending FIFO -------------------------------------------------------------- */

static int expired_log[16];
static size_t expired_count;

static void on_expired(void *arg, void *item)
{
    (void)arg;
    if (expired_count < 16)
        expired_log[expired_count++] = *(int *)item;
}

static void test_pending_fifo(void)
{
    int items[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    veer_pending_t q;
    veer_pending_init(&q, 3);
    CHECK(veer_pending_pop(&q) == NULL && veer_pending_next_deadline(&q) == UINT64_MAX);
    CHECK(veer_pending_push(&q, NULL, 10) == -EINVAL);
    CHECK(veer_pending_push(&q, &items[0], 100) == 0);
    CHECK(veer_pending_push(&q, &items[1], 100) == 0);
    CHECK(veer_pending_push(&q, &items[2], 100) == 0);
    CHECK(veer_pending_push(&q, &items[3], 100) == -ENOSPC && q.overflows == 1 && q.count == 3);
    CHECK(veer_pending_pop(&q) == &items[0]);
    CHECK(veer_pending_cancel(&q, &items[1]) == 0 && veer_pending_cancel(&q, &items[1]) == -ENOENT);
    CHECK(veer_pending_push(&q, &items[3], 100) == 0);
    CHECK(veer_pending_pop(&q) == &items[2]);
    CHECK(veer_pending_pop(&q) == &items[3]);
    CHECK(veer_pending_pop(&q) == NULL && q.count == 0);

    /* deadlines need not be in arrival order */
    CHECK(veer_pending_push(&q, &items[4], 300) == 0);
    CHECK(veer_pending_push(&q, &items[5], 150) == 0);
    CHECK(veer_pending_push(&q, &items[6], 200) == 0);
    CHECK(veer_pending_next_deadline(&q) == 150);
    CHECK(veer_pending_expire(&q, 149, on_expired, NULL) == 0);
    CHECK(veer_pending_expire(&q, 150, on_expired, NULL) == 1);
    CHECK(expired_count == 1 && expired_log[0] == 5 && veer_pending_next_deadline(&q) == 200);
    CHECK(veer_pending_expire(&q, 1000, on_expired, NULL) == 2);
    CHECK(expired_count == 3 && expired_log[1] == 4 && expired_log[2] == 6); /* oldest first */
    CHECK(q.expired == 3 && q.count == 0 && veer_pending_pop(&q) == NULL);
    veer_pending_destroy(&q);

    /* churn with cancels in the middle: order kept, memory bounded */
    veer_pending_init(&q, 4);
    int next_in = 0, next_out = 0;
    static int values[100000];
    bool in_order = true;
    for (int round = 0; round < 20000; round++) {
        values[next_in] = next_in;
        CHECK(veer_pending_push(&q, &values[next_in], 0) == 0);
        next_in++;
        values[next_in] = next_in;
        veer_pending_push(&q, &values[next_in], 0);
        veer_pending_cancel(&q, &values[next_in]); /* leaves a hole behind the tail */
        next_in++;
        if (round % 3 == 2) {
            while (q.count) {
                int *v = veer_pending_pop(&q);
                in_order &= v && *v == next_out;
                next_out += 2;
            }
        }
    }
    CHECK(in_order);
    CHECK(q.capacity <= 16);
    veer_pending_set_limit(&q, 1);
    while (q.count > 1)
        veer_pending_pop(&q);
    CHECK(veer_pending_push(&q, &values[0], 0) == -ENOSPC);
    veer_pending_destroy(&q);
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_limits_per_kind, test_acquire_set_and_release, test_two_threads, test_pending_fifo,
    };
    size_t test_count = sizeof tests / sizeof tests[0];
    for (size_t i = 0; i < test_count; i++)
        tests[i]();
    return check_summary("test_breaker");
}
