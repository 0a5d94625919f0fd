/* canary.h - the canary controller's run of one route: a pure state machine
 * (no I/O, no clock of its own) fed each interval with the canary's and the
 * stable cluster's numbers over that interval, answering with the weights, the
 * mirror and the A/B match the route must have now. The caller applies them,
 * logs the events, fires the webhooks and persists veer_canary_to_json().
 *
 * Phases: idle -> progressing -> promoting -> succeeded, or -> rolled_back;
 * paused (by an operator, or after max_inconclusive inconclusive analyses)
 * remembers the phase it resumes to. Within a phase the stage says what the
 * run waits for: mirrored passes, healthy endpoints (blue_green), passing
 * analyses, a promotion confirmation, or promotion steps.
 *
 * Failed checks count in total over the run, as in Flagger: a pass does not
 * reset them, and the run rolls back when they reach threshold. Inconclusive
 * analyses (fewer than min_requests canary requests) hold the weight and count
 * neither way; max_inconclusive of them in a row pause the run. A window that
 * is inconclusive, or held (below success_rate_min but not significantly), is
 * not thrown away: the next analysis judges it with the next interval added.
 *
 * Times are the caller's milliseconds (wall clock, so that a restored run's
 * times stay meaningful); only differences of them drive the run. */
#ifndef VEER_CANARY_H
#define VEER_CANARY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define VEER_CANARY_HISTORY 64   /* events kept per run; older ones are dropped and counted */
#define VEER_CANARY_NAME_CAP 65  /* cluster names: 64 characters (config.c) and a NUL */
#define VEER_CANARY_TEXT_CAP 192 /* reasons and analysis details */

enum {
    VEER_CANARY_OK = 0,
    VEER_CANARY_ESTATE = -1, /* 409: the verb is not valid in the run's phase */
    VEER_CANARY_EINVAL = -2, /* 400: a bad policy or a malformed saved state */
    VEER_CANARY_ENOMEM = -3,
};

typedef enum {
    VEER_CANARY_IDLE = 0,
    VEER_CANARY_PROGRESSING,
    VEER_CANARY_PROMOTING,
    VEER_CANARY_SUCCEEDED,
    VEER_CANARY_ROLLED_BACK,
    VEER_CANARY_PAUSED,
    VEER_CANARY_PHASE_COUNT
} veer_canary_phase_t;

typedef enum {
    VEER_CANARY_STAGE_NONE = 0, /* idle or finished */
    VEER_CANARY_STAGE_MIRROR,   /* requests copied to the canary, its live weight 0 */
    VEER_CANARY_STAGE_GATE,     /* blue_green: waiting for every canary endpoint to be healthy */
    VEER_CANARY_STAGE_ANALYSIS, /* the canary serves users and is analysed each interval */
    VEER_CANARY_STAGE_CONFIRM,  /* promotion decided, waiting for confirm_promotion to answer 2xx */
    VEER_CANARY_STAGE_SHIFT,    /* promotion in steps of promotion_step_weight */
    VEER_CANARY_STAGE_COUNT
} veer_canary_stage_t;

typedef enum {
    VEER_CANARY_PASS = 0,
    VEER_CANARY_FAIL,
    VEER_CANARY_INCONCLUSIVE,
} veer_canary_verdict_t;

/* Why an analysis did not pass (bits of veer_canary_analysis_t.reasons). */
#define VEER_CANARY_R_TOO_FEW        (1u << 0) /* fewer than min_requests canary requests */
#define VEER_CANARY_R_SUCCESS_RATE   (1u << 1) /* below success_rate_min */
#define VEER_CANARY_R_P99            (1u << 2) /* above p99_max */
#define VEER_CANARY_R_WORSE_SUCCESS  (1u << 3) /* significantly lower success rate than stable */
#define VEER_CANARY_R_WORSE_P99      (1u << 4) /* P99 above p99_ratio_max times stable's */
#define VEER_CANARY_R_HOLD           (1u << 5) /* below success_rate_min, not significantly: the window goes on */

/* Intervals a held window may span; one that still shows no significant
 * shortfall then passes. */
#define VEER_CANARY_HOLD_MAX 10

typedef enum {
    VEER_CANARY_EV_STARTED = 0,
    VEER_CANARY_EV_ITERATION,     /* a passing analysis counted (mirror, blue_green, ab) */
    VEER_CANARY_EV_LIVE,          /* mirror done: the canary takes live traffic (or waits at the gate) */
    VEER_CANARY_EV_SWITCHED,      /* blue_green gate open: 100% to the canary */
    VEER_CANARY_EV_ADVANCED,      /* progressive: the weight went up */
    VEER_CANARY_EV_CHECK_FAILED,  /* a failed analysis below threshold: the weight holds */
    VEER_CANARY_EV_AWAITING_CONFIRMATION,
    VEER_CANARY_EV_PROMOTING,
    VEER_CANARY_EV_PROMOTION_STEP,
    VEER_CANARY_EV_SUCCEEDED,
    VEER_CANARY_EV_ROLLED_BACK,
    VEER_CANARY_EV_PAUSED,
    VEER_CANARY_EV_RESUMED,
    VEER_CANARY_EV_COUNT
} veer_canary_event_kind_t;

/* One side's numbers over one interval, from the stats layer. A failure is
 * SPEC's: 5xx, reset, connect failure, timeout, failing grpc-status. */
typedef struct veer_canary_window_s {
    uint64_t requests;
    uint64_t failures; /* <= requests (more is clamped) */
    uint64_t p99_us;   /* meaningless when requests == 0 */
} veer_canary_window_t;

/* What the caller knows besides the windows. */
typedef struct veer_canary_inputs_s {
    uint32_t canary_endpoints;         /* endpoints of the canary cluster */
    uint32_t canary_endpoints_healthy; /* of which healthy and not ejected */
    bool promotion_confirmed;          /* confirm_promotion answered 2xx since it was last asked */
} veer_canary_inputs_t;

typedef struct veer_canary_analysis_s {
    uint64_t at_ms;
    veer_canary_window_t canary, stable;
    double canary_success, stable_success; /* percent; -1 when that side had no request */
    bool compared;       /* the comparison with stable ran (compare_to_stable, enough stable requests) */
    uint32_t intervals;  /* intervals the window spans: more than 1 after inconclusive ones */
    double success_p;    /* binomial test of the failures against success_rate_min; 1: no evidence */
    double compare_p;    /* Fisher's exact test against stable, one-sided; 1 when not compared */
    double z;            /* two-proportion statistic (reported, not deciding), > 0 when the canary fails more */
    double z_critical;   /* the normal quantile of confidence */
    double p99_ratio;    /* canary P99 / stable P99; 0 when not compared */
    veer_canary_verdict_t verdict;
    uint32_t reasons;    /* VEER_CANARY_R_* */
    char detail[VEER_CANARY_TEXT_CAP];
} veer_canary_analysis_t;

typedef struct veer_canary_event_s {
    uint64_t seq; /* 1, 2, ... over the run */
    uint64_t at_ms;
    veer_canary_event_kind_t kind;
    veer_canary_phase_t phase; /* after the event */
    veer_canary_stage_t stage;
    uint32_t weight;           /* the canary's live weight in % after the event */
    uint32_t failed_checks;
    bool has_analysis;         /* the analysis that caused it */
    veer_canary_analysis_t analysis;
    char reason[VEER_CANARY_TEXT_CAP];
} veer_canary_event_t;

/* A run's own copy of its policy: cluster names instead of indexes, so that
 * it survives reloads and restarts. */
typedef struct veer_canary_policy_s {
    char stable[VEER_CANARY_NAME_CAP], canary[VEER_CANARY_NAME_CAP];
    veer_canary_mode_t mode;
    uint64_t interval_ms;
    uint32_t step_weight;
    uint32_t step_weights[100]; /* strictly increasing; step_weight_count 0: steps of step_weight */
    size_t step_weight_count;
    uint32_t max_weight, promotion_step_weight, iterations, mirror_iterations;
    uint32_t threshold, max_inconclusive;
    uint64_t min_requests;
    double success_rate_min; /* percent */
    uint64_t p99_max_ms;
    bool compare_to_stable;
    double confidence, p99_ratio_max;
    bool has_match;          /* ab: requests matching go to the canary */
    veer_key_kind_t match_kind; /* VEER_KEY_HEADER or VEER_KEY_COOKIE */
    char *match_name, *match_equals;
    char *webhook_promoted, *webhook_rolled_back, *webhook_confirm_promotion; /* NULL: none */
    char *webhook_phase_change[VEER_CANARY_MAX_PHASE_HOOKS];
    size_t webhook_phase_change_count;
    uint64_t webhook_timeout_ms;
    uint32_t webhook_retries;
} veer_canary_policy_t;

typedef struct veer_canary_run_s {
    veer_canary_policy_t policy;
    veer_canary_phase_t phase;
    veer_canary_phase_t paused_from; /* the phase resume returns to */
    veer_canary_stage_t stage;
    uint32_t weight;                 /* the canary's live weight in %; stable has 100 - weight */
    bool mirror;                     /* copy requests to the canary */
    bool ab_match;                   /* send requests matching policy's match to the canary */
    uint32_t failed_checks;          /* over the run */
    uint32_t passed;                 /* passing analyses in this stage (mirror, blue_green, ab) */
    uint32_t inconclusive_streak;
    uint32_t window_intervals;       /* intervals the current window spans (0 and 1: a fresh one) */
    uint64_t analyses;
    uint64_t started_ms, updated_ms, next_due_ms;
    char reason[VEER_CANARY_TEXT_CAP]; /* why paused, rolled back, waiting */
    bool has_analysis;
    veer_canary_analysis_t last_analysis;
    veer_canary_event_t history[VEER_CANARY_HISTORY]; /* ring, oldest at history_start */
    size_t history_start, history_count;
    uint64_t events_dropped, next_seq;
} veer_canary_run_t;

/* What the route must look like after a call; the *_changed flags say what to
 * apply. Names point into the run and stay valid until its next call. */
typedef struct veer_canary_update_s {
    bool analysed;          /* an interval ended (windows judged, or gate/promotion step): start new windows */
    bool keep_window;       /* ... unless this is set: the window was inconclusive and goes on */
    bool weights_changed;   /* set {stable: stable_weight, canary: canary_weight} on the route */
    const char *stable, *canary;
    uint32_t stable_weight, canary_weight; /* percent, summing to 100 */
    bool mirror_changed, mirror;
    bool ab_match_changed, ab_match;
    bool stable_changed;    /* promotion done: new_stable is the route's stable cluster now */
    const char *new_stable;
    bool phase_changed;     /* POST the run's JSON to the phase_change webhooks */
    bool ask_confirmation;  /* call confirm_promotion now (again each interval until confirmed) */
    size_t events;          /* events this call added: the newest of veer_canary_event_at() */
} veer_canary_update_t;

/* ---- policy ---------------------------------------------------------------- */

/* A run's policy from a config canary block (a route's, or one from
 * veer_config_canary_parse with a start request's overrides). */
int veer_canary_policy_from_config(veer_canary_policy_t *out, const veer_config_t *cfg,
                                   const veer_canary_config_t *canary, char *err, size_t errlen);
void veer_canary_policy_clear(veer_canary_policy_t *policy);

/* ---- the run ----------------------------------------------------------------- */

void veer_canary_run_init(veer_canary_run_t *run);
void veer_canary_run_free(veer_canary_run_t *run); /* back to idle */

/* A run owns the route's weights while progressing, promoting or paused
 * (a manual weight change answers 423 then, unless forced). */
bool veer_canary_active(const veer_canary_run_t *run);

/* When the next tick is due; 0 when nothing is (idle, paused, finished). */
uint64_t veer_canary_due_ms(const veer_canary_run_t *run);

/* Start a run (when idle or finished) with a copy of policy. in may be NULL
 * (then a blue_green gate waits for the first tick). */
int veer_canary_start(veer_canary_run_t *run, const veer_canary_policy_t *policy, const veer_canary_inputs_t *in,
                      uint64_t now_ms, veer_canary_update_t *out, char *err, size_t errlen);

/* The interval's step: analyse the windows (canary and stable over the same
 * interval) and move the run. Before veer_canary_due_ms() it does nothing and
 * leaves the windows unused (out->analysed false). in may be NULL. */
int veer_canary_tick(veer_canary_run_t *run, const veer_canary_window_t *canary, const veer_canary_window_t *stable,
                     const veer_canary_inputs_t *in, uint64_t now_ms, veer_canary_update_t *out);

/* Operator verbs. Each fails with VEER_CANARY_ESTATE and a message ("no run in
 * progress", "already paused", ...) when the phase does not allow it. promote
 * skips the rest of the analysis and any confirm_promotion gate. */
int veer_canary_pause(veer_canary_run_t *run, uint64_t now_ms, veer_canary_update_t *out, char *err, size_t errlen);
/* pause with the controller's own reason (e.g. "peer ADDR unreachable"). */
int veer_canary_pause_because(veer_canary_run_t *run, const char *why, uint64_t now_ms, veer_canary_update_t *out,
                              char *err, size_t errlen);
int veer_canary_resume(veer_canary_run_t *run, uint64_t now_ms, veer_canary_update_t *out, char *err, size_t errlen);
int veer_canary_promote(veer_canary_run_t *run, uint64_t now_ms, veer_canary_update_t *out, char *err,
                        size_t errlen);
int veer_canary_abort(veer_canary_run_t *run, uint64_t now_ms, veer_canary_update_t *out, char *err, size_t errlen);
/* verb: "pause", "resume", "promote" or "abort" (an admin URL's last part). */
int veer_canary_command(veer_canary_run_t *run, const char *verb, uint64_t now_ms, veer_canary_update_t *out,
                        char *err, size_t errlen);

/* The events kept, 0 the oldest; NULL past the end. */
size_t veer_canary_event_count(const veer_canary_run_t *run);
const veer_canary_event_t *veer_canary_event_at(const veer_canary_run_t *run, size_t index);

/* ---- analysis ---------------------------------------------------------------- */

/* A window's verdict under policy (pure; the run calls it each tick).
 * intervals: how many intervals the window spans (1, or more after held or
 * inconclusive ones); a held window that reaches VEER_CANARY_HOLD_MAX
 * without a significant shortfall passes. veer_canary_analyse: one interval. */
void veer_canary_analyse_window(const veer_canary_policy_t *policy, const veer_canary_window_t *canary,
                                const veer_canary_window_t *stable, uint32_t intervals, uint64_t now_ms,
                                veer_canary_analysis_t *out);
void veer_canary_analyse(const veer_canary_policy_t *policy, const veer_canary_window_t *canary,
                         const veer_canary_window_t *stable, uint64_t now_ms, veer_canary_analysis_t *out);

/* P(X >= k) for X ~ Binomial(n, p), exact; 1 when k <= n*p (no evidence of
 * more failures than p). */
double veer_canary_binomial_tail(uint64_t k, uint64_t n, double p);

/* Fisher's exact test, one-sided: the probability of canary_failures or more
 * among the canary's requests given all the window's failures; 1 when the
 * canary fails no more often than the pooled rate or a side is empty. */
double veer_canary_fisher_tail(uint64_t canary_failures, uint64_t canary_requests, uint64_t stable_failures,
                               uint64_t stable_requests);

/* The standard normal quantile (inverse CDF) at p in (0, 1): Acklam's
 * rational approximation refined by one Halley step (|error| < 1e-12).
 * -HUGE_VAL / HUGE_VAL at 0 / 1, NaN outside. */
double veer_canary_normal_quantile(double p);

/* z of the one-sided two-proportion test that the canary's failure rate
 * exceeds stable's (pooled standard error); 0 when either side is empty or
 * nothing or everything failed on both. */
double veer_canary_two_proportion_z(uint64_t canary_failures, uint64_t canary_requests, uint64_t stable_failures,
                                    uint64_t stable_requests);

/* ---- names and JSON ------------------------------------------------------------ */

const char *veer_canary_phase_name(veer_canary_phase_t phase);
const char *veer_canary_stage_name(veer_canary_stage_t stage);
const char *veer_canary_event_name(veer_canary_event_kind_t kind);
const char *veer_canary_verdict_name(veer_canary_verdict_t verdict);

/* The run for GET /v1/routes/NAME/canary and the state file: phase, weight,
 * counters, policy, last analysis and the kept events. NULL when out of memory. */
cJSON *veer_canary_to_json(const veer_canary_run_t *run);
cJSON *veer_canary_event_to_json(const veer_canary_event_t *event);
cJSON *veer_canary_analysis_to_json(const veer_canary_analysis_t *analysis);

/* Rebuild a run from veer_canary_to_json's output (read back from the state
 * file). Everything is checked; on error the run is left idle and err names
 * the key ("canary state: policy.max_weight: ..."). A run that was
 * progressing or promoting waits one full interval from now_ms before its next
 * analysis; a paused or finished one stays as it was. out tells the caller
 * what to re-apply (weights, mirror, A/B match). */
int veer_canary_restore(veer_canary_run_t *run, const cJSON *json, uint64_t now_ms, veer_canary_update_t *out,
                        char *err, size_t errlen);

#endif
