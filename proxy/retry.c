/* retry.c - the retry decision, backoff and endpoint choice of retry.h. */

#include "retry.h"

#include <string.h>

const char *veer_retry_verdict_name(veer_retry_verdict_t verdict)
{
    switch (verdict) {
    case VEER_RETRY_GO: return "retry";
    case VEER_RETRY_NO_CONDITION: return "not_retriable";
    case VEER_RETRY_NO_ATTEMPTS: return "attempts_exhausted";
    case VEER_RETRY_NO_REPLAY: return "body_not_kept";
    case VEER_RETRY_NO_RESPONSE_STARTED: return "response_started";
    case VEER_RETRY_NO_TIME: return "deadline";
    case VEER_RETRY_NO_BUDGET: return "budget";
    case VEER_RETRY_NO_BREAKER: return "max_retries";
    }
    return "unknown";
}

const char *veer_retry_outcome_name(veer_retry_outcome_t outcome)
{
    switch (outcome) {
    case VEER_RETRY_OUTCOME_CONNECT_FAILURE: return "connect-failure";
    case VEER_RETRY_OUTCOME_REFUSED_STREAM: return "refused-stream";
    case VEER_RETRY_OUTCOME_RESET: return "reset";
    case VEER_RETRY_OUTCOME_PER_TRY_TIMEOUT: return "timeout";
    case VEER_RETRY_OUTCOME_STATUS: return "status";
    }
    return "unknown";
}

static bool status_listed(const veer_retry_config_t *cfg, int status)
{
    size_t count = cfg->retriable_status_count < VEER_STATUS_RANGES_MAX ? cfg->retriable_status_count
                                                                        : VEER_STATUS_RANGES_MAX;
    for (size_t i = 0; i < count; i++)
        if (status >= cfg->retriable_status_codes[i].lo && status <= cfg->retriable_status_codes[i].hi)
            return true;
    return false;
}

bool veer_retry_condition_matches(const veer_retry_config_t *cfg, veer_retry_outcome_t outcome, int status)
{
    uint32_t on = cfg->on;
    /* an upstream that did not answer at all is a 5xx to Envoy's retry_on */
    const uint32_t no_answer = VEER_RETRY_ON_5XX | VEER_RETRY_ON_GATEWAY_ERROR | VEER_RETRY_ON_RESET;
    switch (outcome) {
    case VEER_RETRY_OUTCOME_CONNECT_FAILURE:
        return on & (no_answer | VEER_RETRY_ON_CONNECT_FAILURE);
    case VEER_RETRY_OUTCOME_REFUSED_STREAM:
        return on & (no_answer | VEER_RETRY_ON_REFUSED_STREAM);
    case VEER_RETRY_OUTCOME_RESET:
        return on & no_answer;
    case VEER_RETRY_OUTCOME_PER_TRY_TIMEOUT:
        return on & (no_answer | VEER_RETRY_ON_TIMEOUT);
    case VEER_RETRY_OUTCOME_STATUS:
        if ((on & VEER_RETRY_ON_5XX) && status >= 500 && status <= 599)
            return true;
        if ((on & VEER_RETRY_ON_GATEWAY_ERROR) && (status == 502 || status == 503 || status == 504))
            return true;
        if ((on & VEER_RETRY_ON_503) && status == 503)
            return true;
        return (on & VEER_RETRY_ON_STATUS_CODES) && status_listed(cfg, status);
    }
    return false;
}

uint64_t veer_retry_backoff_ms(const veer_retry_config_t *cfg, uint32_t retry_number, uint32_t random)
{
    uint64_t base = cfg->backoff_base_ms, max = cfg->backoff_max_ms;
    uint32_t shift = retry_number > 1 ? retry_number - 1 : 0;
    uint64_t ceiling = max;
    if (shift < 63 && base <= (max >> shift))
        ceiling = base << shift;
    return ceiling ? (uint64_t)random % (ceiling + 1) : 0;
}

bool veer_retry_budget_allows(const veer_retry_config_t *cfg, uint32_t active_requests, uint32_t active_retries)
{
    uint64_t allowed = (uint64_t)active_requests * cfg->budget_percent / 100;
    if (allowed < cfg->min_retry_concurrency)
        allowed = cfg->min_retry_concurrency;
    return active_retries < allowed;
}

veer_retry_verdict_t veer_retry_decide(const veer_retry_config_t *cfg, const veer_retry_attempt_t *attempt,
                                       veer_breaker_t *breaker, uint64_t *backoff_ms)
{
    *backoff_ms = 0;
    if (attempt->response_started)
        return VEER_RETRY_NO_RESPONSE_STARTED;
    if (!veer_retry_condition_matches(cfg, attempt->outcome, attempt->status))
        return VEER_RETRY_NO_CONDITION;
    if (attempt->attempts_made >= cfg->attempts)
        return VEER_RETRY_NO_ATTEMPTS;
    if (!attempt->replayable)
        return VEER_RETRY_NO_REPLAY;
    uint64_t backoff = veer_retry_backoff_ms(cfg, attempt->attempts_made, attempt->random);
    if (attempt->deadline_ms && attempt->now_ms + backoff >= attempt->deadline_ms)
        return VEER_RETRY_NO_TIME;
    if (breaker) {
        if (!veer_retry_budget_allows(cfg, veer_breaker_active(breaker, VEER_BREAKER_REQUESTS),
                                      veer_breaker_active(breaker, VEER_BREAKER_RETRIES)))
            return VEER_RETRY_NO_BUDGET;
        if (veer_breaker_try_acquire(breaker, VEER_BREAKER_RETRIES) != 0)
            return VEER_RETRY_NO_BREAKER;
    }
    *backoff_ms = backoff;
    return VEER_RETRY_GO;
}

void veer_retry_tried_add(veer_retry_tried_t *tried, uint32_t endpoint_id)
{
    if (tried->count == VEER_RETRY_MAX_ATTEMPTS) {
        memmove(tried->ids, tried->ids + 1, (VEER_RETRY_MAX_ATTEMPTS - 1) * sizeof tried->ids[0]);
        tried->count--;
    }
    tried->ids[tried->count++] = endpoint_id;
}

bool veer_retry_tried_has(const veer_retry_tried_t *tried, uint32_t endpoint_id)
{
    for (uint32_t i = 0; i < tried->count; i++)
        if (tried->ids[i] == endpoint_id)
            return true;
    return false;
}

size_t veer_retry_choose(const veer_retry_tried_t *tried, const uint32_t *candidates, size_t n, size_t preferred)
{
    if (n == 0)
        return 0;
    if (preferred >= n)
        preferred = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = (preferred + i) % n;
        if (!veer_retry_tried_has(tried, candidates[j]))
            return j;
    }
    uint32_t last = tried->ids[tried->count - 1];
    for (size_t i = 0; i < n; i++) {
        size_t j = (preferred + i) % n;
        if (candidates[j] != last)
            return j;
    }
    return preferred;
}
