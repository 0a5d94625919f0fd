/* retry.h - the retry decision of a route (Envoy's retry_on semantics plus a
 * "timeout" condition for per-try timeouts): may this failed attempt be tried
 * again, after how long (exponential backoff with full jitter), and on which
 * endpoint (another one than before, when there is one). Pure logic: the
 * caller passes the time, a random number and the cluster's breaker, whose
 * active counts are the retry budget's inputs.
 *
 * Every attempt, the retried ones included, is reported on its own to the
 * outlier detector and to the failure counters: a retry that succeeds does not
 * erase the failure before it, so retries cannot hide a bad canary. */
#ifndef VEER_RETRY_H
#define VEER_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "config.h"

#define VEER_RETRY_MAX_ATTEMPTS 10 /* the largest retry.attempts the config accepts */

/* How an attempt ended. */
typedef enum {
    VEER_RETRY_OUTCOME_CONNECT_FAILURE = 0, /* never connected: the request was not sent */
    VEER_RETRY_OUTCOME_REFUSED_STREAM = 1,  /* h2 REFUSED_STREAM, or above a GOAWAY's last stream: not processed */
    VEER_RETRY_OUTCOME_RESET = 2,           /* connection closed or stream reset before the whole response */
    VEER_RETRY_OUTCOME_PER_TRY_TIMEOUT = 3, /* retry.per_try_timeout passed */
    VEER_RETRY_OUTCOME_STATUS = 4,          /* a response head with `status` */
} veer_retry_outcome_t;

typedef struct veer_retry_attempt_s {
    uint32_t attempts_made;       /* tries so far, the failed one included (>= 1) */
    veer_retry_outcome_t outcome;
    int status;                   /* OUTCOME_STATUS */
    /* The request can be sent again byte for byte: it has no body, or all of
     * it is still held (at most retry.max_body_bytes). Idempotency alone is
     * not enough: bytes that were streamed and dropped cannot be resent. */
    bool replayable;
    bool response_started;        /* bytes of this attempt's response went downstream */
    uint64_t now_ms;
    uint64_t deadline_ms;         /* the route timeout's deadline; 0: none */
    uint32_t random;              /* uniformly random, for the backoff */
} veer_retry_attempt_t;

typedef enum {
    VEER_RETRY_GO = 0,
    VEER_RETRY_NO_CONDITION = 1,  /* the outcome is not in retry.on (or is not a failure) */
    VEER_RETRY_NO_ATTEMPTS = 2,   /* retry.attempts made */
    VEER_RETRY_NO_REPLAY = 3,     /* the body was not kept */
    VEER_RETRY_NO_RESPONSE_STARTED = 4,
    VEER_RETRY_NO_TIME = 5,       /* the backoff would end at or after the route deadline */
    VEER_RETRY_NO_BUDGET = 6,     /* active retries at budget_percent of active requests */
    VEER_RETRY_NO_BREAKER = 7,    /* the max_retries breaker is open (its overflow was counted) */
} veer_retry_verdict_t;

const char *veer_retry_verdict_name(veer_retry_verdict_t verdict);
const char *veer_retry_outcome_name(veer_retry_outcome_t outcome);

/* Does retry.on cover this outcome? Envoy's expansion: "5xx" covers every
 * 5xx, connect failures, resets, refused streams and per-try timeouts;
 * "gateway-error" covers 502/503/504 and the same four; "reset" covers
 * connect failures, resets, refused streams and per-try timeouts;
 * "connect-failure", "refused-stream", "503" and "timeout" only themselves;
 * "retriable-status-codes" the statuses in retriable_status_codes. */
bool veer_retry_condition_matches(const veer_retry_config_t *cfg, veer_retry_outcome_t outcome, int status);

/* The backoff before retry number retry_number (1 for the first retry):
 * uniform in [0, min(backoff_max, backoff_base x 2^(retry_number - 1))]. */
uint64_t veer_retry_backoff_ms(const veer_retry_config_t *cfg, uint32_t retry_number, uint32_t random);

/* Envoy's retry budget: a retry may start while active retries are below
 * max(min_retry_concurrency, budget_percent% of active requests), so low
 * traffic still retries. */
bool veer_retry_budget_allows(const veer_retry_config_t *cfg, uint32_t active_requests, uint32_t active_retries);

/* The whole decision, checks in this order: response started, condition,
 * attempts, replayable, deadline, budget, max_retries breaker. On
 * VEER_RETRY_GO a max_retries slot has been taken from breaker (release it,
 * VEER_BREAKER_RETRIES, when the retry attempt ends) and *backoff_ms is the
 * wait before it. breaker may be NULL: no budget and no breaker. */
veer_retry_verdict_t veer_retry_decide(const veer_retry_config_t *cfg, const veer_retry_attempt_t *attempt,
                                       veer_breaker_t *breaker, uint64_t *backoff_ms);

/* ---- which endpoint next ------------------------------------------------------ */

typedef struct veer_retry_tried_s {
    uint32_t ids[VEER_RETRY_MAX_ATTEMPTS]; /* endpoint ids, oldest first */
    uint32_t count;
} veer_retry_tried_t;

/* Remember an attempt's endpoint (beyond VEER_RETRY_MAX_ATTEMPTS the oldest
 * is forgotten). */
void veer_retry_tried_add(veer_retry_tried_t *tried, uint32_t endpoint_id);
bool veer_retry_tried_has(const veer_retry_tried_t *tried, uint32_t endpoint_id);

/* Index into candidates[0..n) (endpoint ids that may take traffic) for the
 * next attempt: the load balancer's pick `preferred` unless it was tried
 * already and an untried candidate exists (then the first untried one after
 * it, circularly); when every candidate was tried, one other than the last
 * tried, if there is one. n must be > 0. */
size_t veer_retry_choose(const veer_retry_tried_t *tried, const uint32_t *candidates, size_t n, size_t preferred);

#endif
