/* test_retry.c - retry decisions (a table of conditions and outcomes, then
 * attempts, replay, deadline, budget and the max_retries breaker), backoff
 * bounds with full jitter, and the choice of another endpoint. */
#include "retry.h"

#include <stdio.h>
#include <string.h>

#include "check.h"

enum { CF = VEER_RETRY_OUTCOME_CONNECT_FAILURE, REFUSED = VEER_RETRY_OUTCOME_REFUSED_STREAM,
       RESET = VEER_RETRY_OUTCOME_RESET, TIMEOUT = VEER_RETRY_OUTCOME_PER_TRY_TIMEOUT,
       STATUS = VEER_RETRY_OUTCOME_STATUS };

/* The config loader's defaults, with 3 attempts. */
static veer_retry_config_t config(uint32_t on)
{
    veer_retry_config_t cfg = {
        .attempts = 3,
        .on = on,
        .budget_percent = 20,
        .min_retry_concurrency = 3,
        .backoff_base_ms = 25,
        .backoff_max_ms = 250,
        .max_body_bytes = 65536,
        .retriable_status_codes = {{409, 409}, {429, 429}},
        .retriable_status_count = 2,
    };
    return cfg;
}

static veer_retry_attempt_t attempt(int outcome, int status)
{
    veer_retry_attempt_t at = {
        .attempts_made = 1,
        .outcome = (veer_retry_outcome_t)outcome,
        .status = status,
        .replayable = true,
        .now_ms = 1000,
        .random = 12345,
    };
    return at;
}

typedef struct condition_case_s {
    uint32_t on;
    int outcome;
    int status;
    bool retry;
} condition_case_t;

#define ON_CF VEER_RETRY_ON_CONNECT_FAILURE
#define ON_RESET VEER_RETRY_ON_RESET
#define ON_REFUSED VEER_RETRY_ON_REFUSED_STREAM
#define ON_5XX VEER_RETRY_ON_5XX
#define ON_GW VEER_RETRY_ON_GATEWAY_ERROR
#define ON_503 VEER_RETRY_ON_503
#define ON_TIMEOUT VEER_RETRY_ON_TIMEOUT
#define ON_CODES VEER_RETRY_ON_STATUS_CODES

static const condition_case_t condition_cases[] = {
    {ON_CF, CF, 0, true},        {ON_CF, REFUSED, 0, false},     {ON_CF, RESET, 0, false},
    {ON_CF, TIMEOUT, 0, false},  {ON_CF, STATUS, 503, false},
    {ON_REFUSED, REFUSED, 0, true}, {ON_REFUSED, CF, 0, false},  {ON_REFUSED, RESET, 0, false},
    {ON_RESET, CF, 0, true},     {ON_RESET, REFUSED, 0, true},   {ON_RESET, RESET, 0, true},
    {ON_RESET, TIMEOUT, 0, true}, {ON_RESET, STATUS, 503, false},
    {ON_5XX, CF, 0, true},       {ON_5XX, RESET, 0, true},       {ON_5XX, TIMEOUT, 0, true},
    {ON_5XX, STATUS, 500, true}, {ON_5XX, STATUS, 503, true},    {ON_5XX, STATUS, 599, true},
    {ON_5XX, STATUS, 404, false}, {ON_5XX, STATUS, 200, false},  {ON_5XX, STATUS, 499, false},
    {ON_GW, STATUS, 502, true},  {ON_GW, STATUS, 503, true},     {ON_GW, STATUS, 504, true},
    {ON_GW, STATUS, 500, false}, {ON_GW, STATUS, 505, false},    {ON_GW, CF, 0, true},
    {ON_GW, REFUSED, 0, true},
    {ON_503, STATUS, 503, true}, {ON_503, STATUS, 502, false},   {ON_503, CF, 0, false},
    {ON_TIMEOUT, TIMEOUT, 0, true}, {ON_TIMEOUT, RESET, 0, false}, {ON_TIMEOUT, STATUS, 504, false},
    {ON_CODES, STATUS, 409, true}, {ON_CODES, STATUS, 429, true}, {ON_CODES, STATUS, 500, false},
    {ON_CODES, CF, 0, false},
    {0, CF, 0, false},           {0, STATUS, 503, false},        {0, RESET, 0, false},
    {ON_CF | ON_REFUSED, STATUS, 503, false}, /* the default: only where the request never arrived */
    {ON_CF | ON_REFUSED, REFUSED, 0, true},
    {ON_CF | ON_RESET | ON_503, STATUS, 503, true}, /* the SPEC example */
};

static void test_conditions(void)
{
    for (size_t i = 0; i < N_ELEMS(condition_cases); i++) {
        const condition_case_t *c = &condition_cases[i];
        veer_retry_config_t cfg = config(c->on);
        veer_retry_attempt_t at = attempt(c->outcome, c->status);
        uint64_t backoff = 99;
        veer_retry_verdict_t v = veer_retry_decide(&cfg, &at, NULL, &backoff);
        veer_retry_verdict_t want = c->retry ? VEER_RETRY_GO : VEER_RETRY_NO_CONDITION;
        CHECK(veer_retry_condition_matches(&cfg, at.outcome, at.status) == c->retry);
        CHECK(v == want);
        if (v != want)
            fprintf(stderr, "    case %zu: on 0x%x, %s %d: got %s, expected %s\n", i, c->on,
                    veer_retry_outcome_name(at.outcome), c->status, veer_retry_verdict_name(v),
                    veer_retry_verdict_name(want));
        CHECK(v == VEER_RETRY_GO ? backoff <= 25 : backoff == 0);
    }
}

typedef struct verdict_case_s {
    const char *what;
    uint32_t attempts_made;
    bool replayable, response_started;
    uint64_t deadline_ms;
    uint32_t random;
    int outcome, status;
    veer_retry_verdict_t want;
} verdict_case_t;

static const verdict_case_t verdict_cases[] = {
    {"first retry", 1, true, false, 0, 7, CF, 0, VEER_RETRY_GO},
    {"second retry", 2, true, false, 0, 7, CF, 0, VEER_RETRY_GO},
    {"attempts used up", 3, true, false, 0, 7, CF, 0, VEER_RETRY_NO_ATTEMPTS},
    {"body not kept", 1, false, false, 0, 7, CF, 0, VEER_RETRY_NO_REPLAY},
    {"response started", 1, true, true, 0, 7, CF, 0, VEER_RETRY_NO_RESPONSE_STARTED},
    {"started beats condition", 1, true, true, 0, 7, STATUS, 200, VEER_RETRY_NO_RESPONSE_STARTED},
    {"condition beats attempts", 3, true, false, 0, 7, STATUS, 200, VEER_RETRY_NO_CONDITION},
    {"attempts beat replay", 3, false, false, 0, 7, CF, 0, VEER_RETRY_NO_ATTEMPTS},
    /* now is 1000; random 20 gives a 20 ms backoff on the first retry (20 % 26) */
    {"backoff ends before deadline", 1, true, false, 1021, 20, CF, 0, VEER_RETRY_GO},
    {"backoff ends at deadline", 1, true, false, 1020, 20, CF, 0, VEER_RETRY_NO_TIME},
    {"deadline passed", 1, true, false, 900, 0, CF, 0, VEER_RETRY_NO_TIME},
};

static void test_verdicts(void)
{
    veer_retry_config_t cfg = config(ON_CF);
    for (size_t i = 0; i < N_ELEMS(verdict_cases); i++) {
        const verdict_case_t *c = &verdict_cases[i];
        veer_retry_attempt_t at = attempt(c->outcome, c->status);
        at.attempts_made = c->attempts_made;
        at.replayable = c->replayable;
        at.response_started = c->response_started;
        at.deadline_ms = c->deadline_ms;
        at.random = c->random;
        uint64_t backoff = 0;
        veer_retry_verdict_t v = veer_retry_decide(&cfg, &at, NULL, &backoff);
        CHECK(v == c->want);
        if (v != c->want)
            fprintf(stderr, "    %s: got %s, expected %s\n", c->what, veer_retry_verdict_name(v),
                    veer_retry_verdict_name(c->want));
    }
    CHECK(strcmp(veer_retry_verdict_name(VEER_RETRY_NO_BUDGET), "budget") == 0);
    CHECK(strcmp(veer_retry_verdict_name(VEER_RETRY_NO_BREAKER), "max_retries") == 0);
}

static void test_backoff(void)
{
    veer_retry_config_t cfg = config(ON_CF);
    const uint64_t ceilings[] = {25, 50, 100, 200, 250, 250, 250, 250, 250, 250};
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (uint32_t n = 1; n <= 10; n++) {
        uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
        const int draws = 20000;
        for (int i = 0; i < draws; i++) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            uint64_t b = veer_retry_backoff_ms(&cfg, n, (uint32_t)(state >> 32));
            lo = b < lo ? b : lo;
            hi = b > hi ? b : hi;
            sum += b;
        }
        uint64_t ceiling = ceilings[n - 1];
        CHECK(lo == 0 && hi == ceiling); /* the whole range [0, ceiling] is used */
        double mean = (double)sum / draws;
        CHECK(mean > ceiling * 0.45 && mean < ceiling * 0.55); /* full jitter: uniform */
    }
    CHECK(veer_retry_backoff_ms(&cfg, 1, UINT32_MAX) <= 25);
    CHECK(veer_retry_backoff_ms(&cfg, 0, 25) == 25); /* 0 is treated as the first retry */
    /* no overflow with huge bases and retry numbers */
    cfg.backoff_base_ms = 1ull << 40;
    cfg.backoff_max_ms = 1ull << 41;
    CHECK(veer_retry_backoff_ms(&cfg, 10, UINT32_MAX) <= (1ull << 41));
    CHECK(veer_retry_backoff_ms(&cfg, 200, 5) == 5);
}

static void test_budget(void)
{
    veer_retry_config_t cfg = config(ON_CF); /* 20%, at least 3 */
    CHECK(veer_retry_budget_allows(&cfg, 0, 0) && veer_retry_budget_allows(&cfg, 0, 2));
    CHECK(!veer_retry_budget_allows(&cfg, 0, 3));
    CHECK(veer_retry_budget_allows(&cfg, 10, 2) && !veer_retry_budget_allows(&cfg, 10, 3));
    CHECK(veer_retry_budget_allows(&cfg, 100, 19) && !veer_retry_budget_allows(&cfg, 100, 20));
    CHECK(veer_retry_budget_allows(&cfg, 1000, 199) && !veer_retry_budget_allows(&cfg, 1000, 200));
    cfg.min_retry_concurrency = 0;
    cfg.budget_percent = 0;
    CHECK(!veer_retry_budget_allows(&cfg, 1000, 0));

    /* the decision reads the cluster's active requests and retries from its breaker */
    cfg = config(ON_CF);
    veer_breaker_t b;
    veer_breaker_config_t limits = {.max_connections = 1000, .max_pending_requests = 1000, .max_requests = 1000,
                                    .max_retries = 4};
    veer_breaker_init(&b, &limits);
    for (int i = 0; i < 10; i++)
        veer_breaker_try_acquire(&b, VEER_BREAKER_REQUESTS);
    veer_retry_attempt_t at = attempt(CF, 0);
    uint64_t backoff;
    int granted = 0;
    veer_retry_verdict_t v;
    while ((v = veer_retry_decide(&cfg, &at, &b, &backoff)) == VEER_RETRY_GO)
        granted++;
    CHECK(granted == 3 && v == VEER_RETRY_NO_BUDGET); /* 10 requests: 20% is 2, the floor is 3 */
    CHECK(veer_breaker_active(&b, VEER_BREAKER_RETRIES) == 3);
    for (int i = 0; i < 90; i++)
        veer_breaker_try_acquire(&b, VEER_BREAKER_REQUESTS);
    /* 100 requests allow 20 retries, but max_retries is 4 */
    CHECK(veer_retry_decide(&cfg, &at, &b, &backoff) == VEER_RETRY_GO);
    CHECK(veer_retry_decide(&cfg, &at, &b, &backoff) == VEER_RETRY_NO_BREAKER);
    CHECK(veer_breaker_overflows(&b, VEER_BREAKER_RETRIES) == 1 && veer_breaker_active(&b, VEER_BREAKER_RETRIES) == 4);
    veer_breaker_release(&b, VEER_BREAKER_RETRIES);
    CHECK(veer_retry_decide(&cfg, &at, &b, &backoff) == VEER_RETRY_GO);
    /* a refusal for another reason takes no slot */
    at.replayable = false;
    CHECK(veer_retry_decide(&cfg, &at, &b, &backoff) == VEER_RETRY_NO_REPLAY);
    CHECK(veer_breaker_active(&b, VEER_BREAKER_RETRIES) == 4);
}

static void test_choose_endpoint(void)
{
    veer_retry_tried_t tried = {0};
    const uint32_t candidates[] = {5, 6, 7};
    veer_retry_tried_add(&tried, 5);
    CHECK(veer_retry_choose(&tried, candidates, 3, 0) == 1);  /* 5 was tried: next one */
    CHECK(veer_retry_choose(&tried, candidates, 3, 2) == 2);  /* the balancer's pick is fresh */
    CHECK(veer_retry_choose(&tried, candidates, 3, 17) == 1); /* out of range: from the start */
    veer_retry_tried_add(&tried, 6);
    CHECK(veer_retry_choose(&tried, candidates, 3, 0) == 2);
    veer_retry_tried_add(&tried, 7);
    /* all tried: anything but the last one */
    CHECK(veer_retry_choose(&tried, candidates, 3, 2) == 0);
    CHECK(veer_retry_choose(&tried, candidates, 3, 1) == 1);
    /* a single endpoint: it is the only choice */
    const uint32_t single[] = {7};
    CHECK(veer_retry_choose(&tried, single, 1, 0) == 0);
    /* an endpoint set that changed: untried newcomers first */
    const uint32_t changed[] = {7, 9};
    CHECK(veer_retry_choose(&tried, changed, 2, 0) == 1);
    /* the memory is bounded: the oldest is forgotten */
    veer_retry_tried_t many = {0};
    for (uint32_t id = 1; id <= VEER_RETRY_MAX_ATTEMPTS + 2; id++)
        veer_retry_tried_add(&many, id);
    CHECK(many.count == VEER_RETRY_MAX_ATTEMPTS);
    CHECK(!veer_retry_tried_has(&many, 1) && !veer_retry_tried_has(&many, 2) && veer_retry_tried_has(&many, 3));
    CHECK(veer_retry_tried_has(&many, VEER_RETRY_MAX_ATTEMPTS + 2));
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_conditions, test_verdicts, test_backoff, test_budget, test_choose_endpoint,
    };
    size_t test_count = sizeof tests / sizeof tests[0];
    for (size_t i = 0; i < test_count; i++)
        tests[i]();
    return check_summary("test_retry");
}
