/* canary.c - the canary controller's state machine and its statistics (see
 * canary.h). Every function is a pure function of the run, the interval's
 * windows and the time passed in, so a whole release runs in a unit test in
 * microseconds; the JSON half saves and restores a run across restarts. */

#include "canary.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_SAFE_INT 9007199254740991.0 /* 2^53 - 1: JSON numbers are doubles */
#define STATE_VERSION 1

/* ---- names ------------------------------------------------------------------ */

static const char *const phase_names[] = {"idle", "progressing", "promoting", "succeeded", "rolled_back", "paused"};
static const char *const stage_names[] = {"none", "mirror", "gate", "analysis", "confirm", "shift"};
static const char *const event_names[] = {"started",   "iteration",      "live",      "switched",
                                          "advanced",  "check_failed",   "awaiting_confirmation",
                                          "promoting", "promotion_step", "succeeded", "rolled_back",
                                          "paused",    "resumed"};
static const char *const verdict_names[] = {"pass", "fail", "inconclusive"};
static const char *const mode_names[] = {"progressive", "blue_green", "ab"};
static const char *const reason_names[] = {"too_few_requests", "success_rate", "p99", "worse_success_rate_than_stable",
                                           "worse_p99_than_stable", "success_rate_not_significant"};

_Static_assert(N_ELEMS(phase_names) == VEER_CANARY_PHASE_COUNT, "a name per phase");
_Static_assert(N_ELEMS(stage_names) == VEER_CANARY_STAGE_COUNT, "a name per stage");
_Static_assert(N_ELEMS(event_names) == VEER_CANARY_EV_COUNT, "a name per event kind");

static const char *name_of(const char *const *names, size_t count, unsigned value)
{
    return value < count ? names[value] : "unknown";
}

const char *veer_canary_phase_name(veer_canary_phase_t phase)
{
    return name_of(phase_names, N_ELEMS(phase_names), (unsigned)phase);
}

const char *veer_canary_stage_name(veer_canary_stage_t stage)
{
    return name_of(stage_names, N_ELEMS(stage_names), (unsigned)stage);
}

const char *veer_canary_event_name(veer_canary_event_kind_t kind)
{
    return name_of(event_names, N_ELEMS(event_names), (unsigned)kind);
}

const char *veer_canary_verdict_name(veer_canary_verdict_t verdict)
{
    return name_of(verdict_names, N_ELEMS(verdict_names), (unsigned)verdict);
}

/* ---- text ------------------------------------------------------------------- */

__attribute__((format(printf, 3, 0)))
static void text_vadd(char *buf, size_t cap, const char *fmt, va_list ap)
{
    size_t used = strnlen(buf, cap);
    if (used + 1 < cap)
        vsnprintf(buf + used, cap - used, fmt, ap);
}

__attribute__((format(printf, 3, 4)))
static void text_add(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    text_vadd(buf, cap, fmt, ap);
    va_end(ap);
}

/* snprintf through a va_list: reasons quote analysis details, and cutting a
 * long one short is intended, not a bug for -Wformat-truncation to flag. */
__attribute__((format(printf, 3, 4)))
static void text_set(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    buf[0] = '\0';
    va_start(ap, fmt);
    text_vadd(buf, cap, fmt, ap);
    va_end(ap);
}

static void copy_text(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* "850us", "612.0ms", "1.25s": P99s read by people. */
static const char *format_us(uint64_t us, char *buf, size_t cap)
{
    if (us < 1000)
        snprintf(buf, cap, "%" PRIu64 "us", us);
    else if (us < 1000000)
        snprintf(buf, cap, "%.1fms", (double)us / 1000.0);
    else
        snprintf(buf, cap, "%.2fs", (double)us / 1000000.0);
    return buf;
}

/* ---- statistics --------------------------------------------------------------- */

/* Acklam's coefficients for the lower region (p < 0.02425) and the central one. */
static const double acklam_a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                  1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
static const double acklam_b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                  6.680131188771972e+01, -1.328068155288572e+01};
static const double acklam_c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                  -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
static const double acklam_d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                  3.754408661907416e+00};

/* The quantile for p in (0, 0.5]: the lower half only, where Phi(x) - p is
 * computed without cancellation (erfc of a non-negative argument). */
static double lower_quantile(double p)
{
    const double *a = acklam_a, *b = acklam_b, *c = acklam_c, *d = acklam_d;
    double x;
    if (p < 0.02425) {
        double q = sqrt(-2.0 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
    } else {
        double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
    }
    /* Acklam's approximation is good to 1.15e-9 relative; one Halley step on
     * Phi(x) - p brings it to machine precision. */
    const double sqrt2 = 1.41421356237309504880, sqrt_2pi = 2.50662827463100050242;
    double e = 0.5 * erfc(-x / sqrt2) - p;
    double u = e * sqrt_2pi * exp(x * x / 2.0);
    return x - u / (1.0 + x * u / 2.0);
}

double veer_canary_normal_quantile(double p)
{
    if (isnan(p) || p < 0.0 || p > 1.0)
        return NAN;
    if (p == 0.0)
        return -HUGE_VAL;
    if (p == 1.0)
        return HUGE_VAL;
    /* 1 - p is exact for p in [0.5, 1] (Sterbenz), so the upper half mirrors the lower. */
    return p <= 0.5 ? lower_quantile(p) : -lower_quantile(1.0 - p);
}

double veer_canary_two_proportion_z(uint64_t canary_failures, uint64_t canary_requests, uint64_t stable_failures,
                                    uint64_t stable_requests)
{
    if (canary_requests == 0 || stable_requests == 0)
        return 0.0;
    if (canary_failures > canary_requests)
        canary_failures = canary_requests;
    if (stable_failures > stable_requests)
        stable_failures = stable_requests;
    double nc = (double)canary_requests, ns = (double)stable_requests;
    double pc = (double)canary_failures / nc, ps = (double)stable_failures / ns;
    double pooled = ((double)canary_failures + (double)stable_failures) / (nc + ns);
    double variance = pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / ns);
    if (!(variance > 0.0))
        return 0.0;
    return (pc - ps) / sqrt(variance);
}

/* P(X >= k) for X ~ Binomial(n, p), exactly: the first term from lgamma,
 * the rest by the ratio of neighbours, which shrinks past the mode, so the
 * sum stops once a term no longer changes it. k at or below the mean n*p is
 * no evidence of more failures than p allows: 1. */
double veer_canary_binomial_tail(uint64_t k, uint64_t n, double p)
{
    if (k > n)
        return 0.0;
    if (k == 0 || !(p > 0.0))
        return k == 0 ? 1.0 : 0.0;
    if (p >= 1.0 || (double)k <= (double)n * p)
        return 1.0;
    double dn = (double)n, dk = (double)k;
    double term = exp(lgamma(dn + 1.0) - lgamma(dk + 1.0) - lgamma(dn - dk + 1.0) + dk * log(p) +
                      (dn - dk) * log1p(-p));
    double sum = 0.0, odds = p / (1.0 - p);
    for (uint64_t j = k; j <= n && term > 0.0; j++) {
        sum += term;
        if (term < sum * 1e-15)
            break;
        term *= (double)(n - j) / (double)(j + 1) * odds;
    }
    return sum > 1.0 ? 1.0 : sum;
}

/* Fisher's exact test, one-sided: the probability that the canary, drawing
 * canary_requests of all the window's requests, gets canary_failures or more
 * of all its failures (hypergeometric upper tail). Small counts are where a
 * canary is judged at low weight, and where the normal approximation of the
 * two-proportion z-test is wrong: 1 failure in 20 canary requests against 0 in
 * 180 stable ones is z = 3.0, "significant at 99.9%", while exactly it happens
 * one time in ten. No more canary failures than its share of them: 1. */
double veer_canary_fisher_tail(uint64_t canary_failures, uint64_t canary_requests, uint64_t stable_failures,
                               uint64_t stable_requests)
{
    if (canary_failures > canary_requests)
        canary_failures = canary_requests;
    if (stable_failures > stable_requests)
        stable_failures = stable_requests;
    double nc = (double)canary_requests, ns = (double)stable_requests, kc = (double)canary_failures;
    double n = nc + ns, k = kc + (double)stable_failures;
    if (canary_requests == 0 || stable_requests == 0 || kc * n <= k * nc)
        return 1.0;
    /* C(k, kc) C(n - k, nc - kc) / C(n, nc) */
    double term = exp(lgamma(k + 1.0) - lgamma(kc + 1.0) - lgamma(k - kc + 1.0) + lgamma(n - k + 1.0) -
                      lgamma(nc - kc + 1.0) - lgamma(n - k - nc + kc + 1.0) - lgamma(n + 1.0) + lgamma(nc + 1.0) +
                      lgamma(ns + 1.0));
    double sum = 0.0;
    uint64_t total_failures = canary_failures + stable_failures;
    uint64_t last = total_failures < canary_requests ? total_failures : canary_requests;
    for (uint64_t j = canary_failures; j <= last && term > 0.0; j++) {
        sum += term;
        if (term < sum * 1e-15 || j == last)
            break;
        double jd = (double)j;
        term *= (k - jd) * (nc - jd) / ((jd + 1.0) * (n - k - nc + jd + 1.0));
    }
    return sum > 1.0 ? 1.0 : sum;
}

static double success_percent(const veer_canary_window_t *w)
{
    if (w->requests == 0)
        return -1.0;
    uint64_t failures = w->failures > w->requests ? w->requests : w->failures;
    return 100.0 * (double)(w->requests - failures) / (double)w->requests;
}

/* compare_to_stable: a canary that fails significantly more often than stable
 * in the same window (Fisher's exact test at the policy's confidence), or
 * whose P99 is over p99_ratio_max times stable's, fails even when it meets the
 * absolute limits. Under p99_max/4 the ratio does not count: 8 ms against
 * 4 ms is noise, not a regression. z is reported for reading, not deciding. */
static void compare_with_stable(const veer_canary_policy_t *p, const veer_canary_window_t *c,
                                const veer_canary_window_t *s, veer_canary_analysis_t *out)
{
    char a[32], b[32];
    out->compared = true;
    out->z = veer_canary_two_proportion_z(c->failures, c->requests, s->failures, s->requests);
    out->z_critical = veer_canary_normal_quantile(p->confidence);
    out->compare_p = veer_canary_fisher_tail(c->failures, c->requests, s->failures, s->requests);
    if (out->compare_p < 1.0 - p->confidence) {
        out->reasons |= VEER_CANARY_R_WORSE_SUCCESS;
        text_add(out->detail, sizeof out->detail, "%ssuccess rate %.2f%% significantly below stable's %.2f%% (p %.2g)",
                 out->detail[0] ? "; " : "", out->canary_success, out->stable_success, out->compare_p);
    }
    if (s->p99_us == 0)
        return;
    out->p99_ratio = (double)c->p99_us / (double)s->p99_us;
    bool above_floor = c->p99_us * 4 >= p->p99_max_ms * 1000;
    if (out->p99_ratio > p->p99_ratio_max && above_floor) {
        out->reasons |= VEER_CANARY_R_WORSE_P99;
        text_add(out->detail, sizeof out->detail, "%sp99 %s is %.2fx stable's %s (max %.2fx)", out->detail[0] ? "; " : "",
                 format_us(c->p99_us, a, sizeof a), out->p99_ratio, format_us(s->p99_us, b, sizeof b),
                 p->p99_ratio_max);
    }
}

/* success_rate_min: the canary fails when its failures are significantly more
 * than the minimum allows (binomial test at the policy's confidence). Below
 * the minimum but not significantly, the window is too small to tell (one
 * failure in 20 requests is 95%, and happens one time in ten at a true
 * 99.5%): it is held and extended, until it passes, fails significantly, or
 * spans VEER_CANARY_HOLD_MAX intervals without showing a shortfall, which
 * passes: a rollback needs evidence. Failing there on the plain rate rolled
 * back 1 in 200 healthy runs (0.5% errors against a 99% minimum) and caught
 * no 3% or 5% canary that significance had not caught already.
 * true: below the minimum, passed at HOLD_MAX. */
static bool check_success_rate(const veer_canary_policy_t *p, const veer_canary_window_t *c, uint32_t intervals,
                               veer_canary_analysis_t *out)
{
    out->success_p = veer_canary_binomial_tail(c->failures, c->requests, 1.0 - p->success_rate_min / 100.0);
    if (!(out->canary_success < p->success_rate_min))
        return false;
    if (out->success_p < 1.0 - p->confidence) {
        out->reasons |= VEER_CANARY_R_SUCCESS_RATE;
        text_add(out->detail, sizeof out->detail, "success rate %.2f%% < %.2f%% (p %.2g)", out->canary_success,
                 p->success_rate_min, out->success_p);
        return false;
    }
    if (intervals >= VEER_CANARY_HOLD_MAX)
        return true;
    out->reasons |= VEER_CANARY_R_HOLD;
    return false;
}

void veer_canary_analyse_window(const veer_canary_policy_t *p, const veer_canary_window_t *canary,
                                const veer_canary_window_t *stable, uint32_t intervals, uint64_t now_ms,
                                veer_canary_analysis_t *out)
{
    veer_canary_window_t none = {0};
    char a[32], b[32];
    memset(out, 0, sizeof *out);
    out->at_ms = now_ms;
    out->intervals = intervals ? intervals : 1;
    out->success_p = out->compare_p = 1.0;
    out->canary = canary ? *canary : none;
    out->stable = stable ? *stable : none;
    const veer_canary_window_t *c = &out->canary, *s = &out->stable;
    out->canary_success = success_percent(c);
    out->stable_success = success_percent(s);
    uint64_t needed = p->min_requests ? p->min_requests : 1;
    if (c->requests < needed) {
        out->verdict = VEER_CANARY_INCONCLUSIVE;
        out->reasons = VEER_CANARY_R_TOO_FEW;
        snprintf(out->detail, sizeof out->detail, "inconclusive: the canary had %" PRIu64 " requests, %" PRIu64
                 " needed", c->requests, needed);
        return;
    }
    bool not_shown = check_success_rate(p, c, out->intervals, out);
    if (c->p99_us > p->p99_max_ms * 1000) {
        out->reasons |= VEER_CANARY_R_P99;
        text_add(out->detail, sizeof out->detail, "%sp99 %s > %s", out->detail[0] ? "; " : "",
                 format_us(c->p99_us, a, sizeof a), format_us(p->p99_max_ms * 1000, b, sizeof b));
    }
    /* With fewer stable requests than the canary needs there is nothing
     * trustworthy to compare with (blue_green: stable has none at all). */
    if (p->compare_to_stable && s->requests >= needed)
        compare_with_stable(p, c, s, out);
    if (out->reasons & ~VEER_CANARY_R_HOLD) {
        out->verdict = VEER_CANARY_FAIL;
        out->reasons &= ~VEER_CANARY_R_HOLD;
        return;
    }
    if (out->reasons) {
        out->verdict = VEER_CANARY_INCONCLUSIVE;
        snprintf(out->detail, sizeof out->detail, "holding: success rate %.2f%% < %.2f%% but not significantly "
                 "(p %.2g, %" PRIu64 " requests over %" PRIu32 " interval%s); the window goes on",
                 out->canary_success, p->success_rate_min, out->success_p, c->requests, out->intervals,
                 out->intervals == 1 ? "" : "s");
        return;
    }
    out->verdict = VEER_CANARY_PASS;
    if (not_shown)
        snprintf(out->detail, sizeof out->detail, "passed: success rate %.2f%% < %.2f%% but not significantly "
                 "(p %.2g) over %" PRIu32 " intervals, %" PRIu64 " requests", out->canary_success,
                 p->success_rate_min, out->success_p, out->intervals, c->requests);
    else if (out->compared)
        snprintf(out->detail, sizeof out->detail, "passed: success rate %.2f%% (stable %.2f%%), p99 %s (stable %s)",
                 out->canary_success, out->stable_success, format_us(c->p99_us, a, sizeof a),
                 format_us(s->p99_us, b, sizeof b));
    else
        snprintf(out->detail, sizeof out->detail, "passed: success rate %.2f%%, p99 %s", out->canary_success,
                 format_us(c->p99_us, a, sizeof a));
}

void veer_canary_analyse(const veer_canary_policy_t *p, const veer_canary_window_t *canary,
                         const veer_canary_window_t *stable, uint64_t now_ms, veer_canary_analysis_t *out)
{
    veer_canary_analyse_window(p, canary, stable, 1, now_ms, out);
}

/* ---- policy ------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4)))
static int fail_with(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return VEER_CANARY_EINVAL;
}

/* The invariants the state machine relies on, whatever built the policy
 * (the config loader, or a state file that may have been edited). */
static int policy_check(const veer_canary_policy_t *p, char *err, size_t errlen)
{
    if (!p->stable[0] || !p->canary[0] || strcmp(p->stable, p->canary) == 0)
        return fail_with(err, errlen, "policy: stable and canary must be two different clusters");
    if ((unsigned)p->mode >= N_ELEMS(mode_names))
        return fail_with(err, errlen, "policy.mode: unknown mode");
    if (p->interval_ms == 0)
        return fail_with(err, errlen, "policy.interval: must be positive");
    if (p->max_weight < 1 || p->max_weight > 100)
        return fail_with(err, errlen, "policy.max_weight: must be between 1 and 100");
    if (p->step_weight_count > N_ELEMS(p->step_weights))
        return fail_with(err, errlen, "policy.step_weights: at most %zu steps", N_ELEMS(p->step_weights));
    for (size_t i = 0; i < p->step_weight_count; i++)
        if (p->step_weights[i] < 1 || p->step_weights[i] > 100 || (i && p->step_weights[i] <= p->step_weights[i - 1]))
            return fail_with(err, errlen, "policy.step_weights: must be strictly increasing weights 1..100");
    if (p->step_weight_count && p->step_weights[p->step_weight_count - 1] != p->max_weight)
        return fail_with(err, errlen, "policy.step_weights: the last step must equal max_weight");
    if (!p->step_weight_count && (p->step_weight < 1 || p->step_weight > p->max_weight))
        return fail_with(err, errlen, "policy.step_weight: must be between 1 and max_weight");
    if (p->promotion_step_weight > 100)
        return fail_with(err, errlen, "policy.promotion_step_weight: must be between 0 and 100");
    if (p->iterations < 1 || p->threshold < 1 || p->max_inconclusive < 1)
        return fail_with(err, errlen, "policy: iterations, threshold and max_inconclusive must be positive");
    if (!(p->success_rate_min >= 0.0 && p->success_rate_min <= 100.0))
        return fail_with(err, errlen, "policy.success_rate_min: must be between 0 and 100");
    if (p->p99_max_ms == 0 || p->p99_max_ms > UINT64_MAX / 4000)
        return fail_with(err, errlen, "policy.p99_max: out of range");
    if (!(p->confidence > 0.5 && p->confidence < 1.0))
        return fail_with(err, errlen, "policy.confidence: must be above 0.5 and below 1");
    if (!(p->p99_ratio_max >= 1.0 && p->p99_ratio_max <= 1e6))
        return fail_with(err, errlen, "policy.p99_ratio_max: must be at least 1");
    if (p->mode == VEER_CANARY_AB && (!p->has_match || !p->match_name || !p->match_name[0] || !p->match_equals))
        return fail_with(err, errlen, "policy.match: required when mode is \"ab\"");
    if (p->has_match && p->match_kind != VEER_KEY_HEADER && p->match_kind != VEER_KEY_COOKIE)
        return fail_with(err, errlen, "policy.match: must be a header or a cookie rule");
    if (p->webhook_phase_change_count > VEER_CANARY_MAX_PHASE_HOOKS)
        return fail_with(err, errlen, "policy.webhooks.phase_change: at most %d URLs", VEER_CANARY_MAX_PHASE_HOOKS);
    return VEER_CANARY_OK;
}

void veer_canary_policy_clear(veer_canary_policy_t *p)
{
    if (!p)
        return;
    free(p->match_name);
    free(p->match_equals);
    free(p->webhook_promoted);
    free(p->webhook_rolled_back);
    free(p->webhook_confirm_promotion);
    for (size_t i = 0; i < p->webhook_phase_change_count && i < VEER_CANARY_MAX_PHASE_HOOKS; i++)
        free(p->webhook_phase_change[i]);
    memset(p, 0, sizeof *p);
}

static bool dup_optional(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

/* dst gets its own copies of src's strings; on failure dst is cleared. */
static int policy_copy(veer_canary_policy_t *dst, const veer_canary_policy_t *src)
{
    *dst = *src;
    dst->match_name = dst->match_equals = NULL;
    dst->webhook_promoted = dst->webhook_rolled_back = dst->webhook_confirm_promotion = NULL;
    memset(dst->webhook_phase_change, 0, sizeof dst->webhook_phase_change);
    bool ok = dup_optional(&dst->match_name, src->match_name);
    ok = dup_optional(&dst->match_equals, src->match_equals) && ok;
    ok = dup_optional(&dst->webhook_promoted, src->webhook_promoted) && ok;
    ok = dup_optional(&dst->webhook_rolled_back, src->webhook_rolled_back) && ok;
    ok = dup_optional(&dst->webhook_confirm_promotion, src->webhook_confirm_promotion) && ok;
    for (size_t i = 0; i < src->webhook_phase_change_count && i < VEER_CANARY_MAX_PHASE_HOOKS; i++)
        ok = dup_optional(&dst->webhook_phase_change[i], src->webhook_phase_change[i]) && ok;
    if (!ok) {
        veer_canary_policy_clear(dst);
        return VEER_CANARY_ENOMEM;
    }
    return VEER_CANARY_OK;
}

static bool copy_cluster_name(char *dst, const veer_config_t *cfg, int index)
{
    if (index < 0 || (size_t)index >= cfg->cluster_count || !cfg->clusters[index].name ||
        strlen(cfg->clusters[index].name) >= VEER_CANARY_NAME_CAP)
        return false;
    copy_text(dst, VEER_CANARY_NAME_CAP, cfg->clusters[index].name);
    return true;
}

int veer_canary_policy_from_config(veer_canary_policy_t *out, const veer_config_t *cfg,
                                   const veer_canary_config_t *c, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!cfg || !c)
        return fail_with(err, errlen, "no canary policy");
    if (!copy_cluster_name(out->stable, cfg, c->stable) || !copy_cluster_name(out->canary, cfg, c->canary))
        return fail_with(err, errlen, "policy: unknown stable or canary cluster");
    if (c->step_weight_count > N_ELEMS(out->step_weights) ||
        c->webhook_phase_change_count > VEER_CANARY_MAX_PHASE_HOOKS)
        return fail_with(err, errlen, "policy: too many step_weights or phase_change webhooks");
    out->mode = c->mode;
    out->interval_ms = c->interval_ms;
    out->step_weight = c->step_weight;
    for (size_t i = 0; i < c->step_weight_count; i++)
        out->step_weights[i] = c->step_weights[i];
    out->step_weight_count = c->step_weight_count;
    out->max_weight = c->max_weight;
    out->promotion_step_weight = c->promotion_step_weight;
    out->iterations = c->iterations;
    out->mirror_iterations = c->mirror_iterations;
    out->threshold = c->threshold;
    out->max_inconclusive = c->max_inconclusive;
    out->min_requests = c->min_requests;
    out->success_rate_min = c->success_rate_min;
    out->p99_max_ms = c->p99_max_ms;
    out->compare_to_stable = c->compare_to_stable;
    out->confidence = c->confidence;
    out->p99_ratio_max = c->p99_ratio_max;
    out->webhook_timeout_ms = c->webhook_timeout_ms;
    out->webhook_retries = c->webhook_retries;
    out->has_match = c->match != NULL;
    bool ok = true;
    if (c->match) {
        out->match_kind = c->match->kind;
        ok = dup_optional(&out->match_name, c->match->name) && ok;
        ok = dup_optional(&out->match_equals, c->match->equals) && ok;
    }
    ok = dup_optional(&out->webhook_promoted, c->webhook_promoted) && ok;
    ok = dup_optional(&out->webhook_rolled_back, c->webhook_rolled_back) && ok;
    ok = dup_optional(&out->webhook_confirm_promotion, c->webhook_confirm_promotion) && ok;
    out->webhook_phase_change_count = c->webhook_phase_change_count;
    for (size_t i = 0; i < c->webhook_phase_change_count; i++)
        ok = dup_optional(&out->webhook_phase_change[i], c->webhook_phase_change[i]) && ok;
    if (!ok) {
        veer_canary_policy_clear(out);
        fail_with(err, errlen, "out of memory");
        return VEER_CANARY_ENOMEM;
    }
    int rc = policy_check(out, err, errlen);
    if (rc != VEER_CANARY_OK)
        veer_canary_policy_clear(out);
    return rc;
}

static uint32_t first_weight(const veer_canary_policy_t *p)
{
    if (p->step_weight_count)
        return p->step_weights[0];
    return p->step_weight < p->max_weight ? p->step_weight : p->max_weight;
}

/* The weight after a pass at w: the next listed step, or w + step_weight,
 * never beyond max_weight (no overshoot). */
static uint32_t next_weight(const veer_canary_policy_t *p, uint32_t w)
{
    if (p->step_weight_count) {
        for (size_t i = 0; i < p->step_weight_count; i++)
            if (p->step_weights[i] > w)
                return p->step_weights[i];
        return p->max_weight;
    }
    return w + p->step_weight < p->max_weight ? w + p->step_weight : p->max_weight;
}

/* ---- the run: bookkeeping ------------------------------------------------------ */

void veer_canary_run_init(veer_canary_run_t *run)
{
    memset(run, 0, sizeof *run);
}

void veer_canary_run_free(veer_canary_run_t *run)
{
    if (!run)
        return;
    veer_canary_policy_clear(&run->policy);
    veer_canary_run_init(run);
}

bool veer_canary_active(const veer_canary_run_t *run)
{
    return run->phase == VEER_CANARY_PROGRESSING || run->phase == VEER_CANARY_PROMOTING ||
           run->phase == VEER_CANARY_PAUSED;
}

uint64_t veer_canary_due_ms(const veer_canary_run_t *run)
{
    bool running = run->phase == VEER_CANARY_PROGRESSING || run->phase == VEER_CANARY_PROMOTING;
    return running ? run->next_due_ms : 0;
}

size_t veer_canary_event_count(const veer_canary_run_t *run)
{
    return run->history_count;
}

const veer_canary_event_t *veer_canary_event_at(const veer_canary_run_t *run, size_t index)
{
    if (index >= run->history_count)
        return NULL;
    return &run->history[(run->history_start + index) % VEER_CANARY_HISTORY];
}

/* What a call compares against to fill the *_changed flags. */
typedef struct shape_s {
    uint32_t weight;
    bool mirror, ab_match;
    veer_canary_phase_t phase;
} shape_t;

static void update_begin(const veer_canary_run_t *run, veer_canary_update_t *out, shape_t *before)
{
    memset(out, 0, sizeof *out);
    before->weight = run->weight;
    before->mirror = run->mirror;
    before->ab_match = run->ab_match;
    before->phase = run->phase;
}

static void update_end(const veer_canary_run_t *run, veer_canary_update_t *out, const shape_t *before)
{
    out->stable = run->policy.stable;
    out->canary = run->policy.canary;
    out->canary_weight = run->weight;
    out->stable_weight = 100 - run->weight;
    out->mirror = run->mirror;
    out->ab_match = run->ab_match;
    out->weights_changed = out->weights_changed || run->weight != before->weight;
    out->mirror_changed = out->mirror_changed || run->mirror != before->mirror;
    out->ab_match_changed = out->ab_match_changed || run->ab_match != before->ab_match;
    out->phase_changed = out->phase_changed || run->phase != before->phase;
}

/* Every transition is an event: appended after the state changed, so it shows
 * the state it led to; the oldest is dropped (and counted) when full. */
__attribute__((format(printf, 6, 7)))
static void record(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out, veer_canary_event_kind_t kind,
                   const veer_canary_analysis_t *analysis, const char *fmt, ...)
{
    if (run->history_count == VEER_CANARY_HISTORY) {
        run->history_start = (run->history_start + 1) % VEER_CANARY_HISTORY;
        run->history_count--;
        run->events_dropped++;
    }
    veer_canary_event_t *ev = &run->history[(run->history_start + run->history_count) % VEER_CANARY_HISTORY];
    run->history_count++;
    memset(ev, 0, sizeof *ev);
    ev->seq = ++run->next_seq;
    ev->at_ms = now;
    ev->kind = kind;
    ev->phase = run->phase;
    ev->stage = run->stage;
    ev->weight = run->weight;
    ev->failed_checks = run->failed_checks;
    if (analysis) {
        ev->has_analysis = true;
        ev->analysis = *analysis;
    }
    va_list ap;
    va_start(ap, fmt);
    text_vadd(ev->reason, sizeof ev->reason, fmt, ap);
    va_end(ap);
    copy_text(run->reason, sizeof run->reason, ev->reason);
    run->updated_ms = now;
    out->events++;
}

/* ---- the run: transitions ------------------------------------------------------- */

static void finish_promotion(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out)
{
    run->phase = VEER_CANARY_SUCCEEDED;
    run->stage = VEER_CANARY_STAGE_NONE;
    run->weight = 100;
    run->mirror = false;
    run->ab_match = false;
    out->stable_changed = true;
    out->new_stable = run->policy.canary;
    record(run, now, out, VEER_CANARY_EV_SUCCEEDED, NULL, "%s serves 100%% and is the stable cluster now",
           run->policy.canary);
}

/* Promotion proper: the A/B match and any mirror end, and the canary's
 * weight goes to 100 at once or in steps of promotion_step_weight, one per
 * interval. Promotion steps are not analysed: the decision is made. */
static void start_shift(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out,
                        const veer_canary_analysis_t *analysis, const char *why)
{
    uint32_t step = run->policy.promotion_step_weight;
    run->phase = VEER_CANARY_PROMOTING;
    run->stage = VEER_CANARY_STAGE_SHIFT;
    run->mirror = false;
    run->ab_match = false;
    run->passed = 0;
    run->inconclusive_streak = 0;
    run->window_intervals = 0;
    run->weight = step == 0 || run->weight + step >= 100 ? 100 : run->weight + step;
    record(run, now, out, VEER_CANARY_EV_PROMOTING, analysis, "%s: promoting %s (weight %" PRIu32 "%%)", why,
           run->policy.canary, run->weight);
    if (run->weight == 100)
        finish_promotion(run, now, out);
}

static void enter_promotion(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out,
                            const veer_canary_analysis_t *analysis, const char *why)
{
    if (!run->policy.webhook_confirm_promotion) {
        start_shift(run, now, out, analysis, why);
        return;
    }
    run->phase = VEER_CANARY_PROMOTING;
    run->stage = VEER_CANARY_STAGE_CONFIRM;
    run->mirror = false;
    run->passed = 0;
    out->ask_confirmation = true;
    record(run, now, out, VEER_CANARY_EV_AWAITING_CONFIRMATION, analysis,
           "%s: waiting for confirm_promotion to answer 2xx (analysis goes on)", why);
}

static void roll_back(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out,
                      const veer_canary_analysis_t *analysis, const char *why)
{
    run->phase = VEER_CANARY_ROLLED_BACK;
    run->stage = VEER_CANARY_STAGE_NONE;
    run->weight = 0;
    run->mirror = false;
    run->ab_match = false;
    record(run, now, out, VEER_CANARY_EV_ROLLED_BACK, analysis, "%s: all traffic back to %s", why,
           run->policy.stable);
}

static void pause_run(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out,
                      const veer_canary_analysis_t *analysis, const char *why)
{
    run->paused_from = run->phase;
    run->phase = VEER_CANARY_PAUSED;
    record(run, now, out, VEER_CANARY_EV_PAUSED, analysis, "%s; weight holds at %" PRIu32 "%%", why, run->weight);
}

static bool gate_open(const veer_canary_inputs_t *in)
{
    return in && in->canary_endpoints > 0 && in->canary_endpoints_healthy >= in->canary_endpoints;
}

static void switch_blue_green(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out,
                              veer_canary_event_kind_t kind, const veer_canary_inputs_t *in)
{
    run->stage = VEER_CANARY_STAGE_ANALYSIS;
    run->weight = 100;
    run->passed = 0;
    run->inconclusive_streak = 0;
    run->window_intervals = 0;
    record(run, now, out, kind, NULL, "all %" PRIu32 " endpoints of %s healthy: 100%% to %s", in->canary_endpoints,
           run->policy.canary, run->policy.canary);
}

/* Users start to reach the canary: at the first step, through the A/B
 * match, or (blue_green) once every endpoint is healthy. */
static void go_live(veer_canary_run_t *run, const veer_canary_inputs_t *in, uint64_t now, veer_canary_update_t *out,
                    veer_canary_event_kind_t kind, const veer_canary_analysis_t *analysis)
{
    const veer_canary_policy_t *p = &run->policy;
    run->passed = 0;
    run->inconclusive_streak = 0;
    run->window_intervals = 0;
    switch (p->mode) {
    case VEER_CANARY_PROGRESSIVE:
        run->stage = VEER_CANARY_STAGE_ANALYSIS;
        run->weight = first_weight(p);
        record(run, now, out, kind, analysis, "%s takes %" PRIu32 "%% of requests", p->canary, run->weight);
        break;
    case VEER_CANARY_AB:
        run->stage = VEER_CANARY_STAGE_ANALYSIS;
        run->weight = 0;
        run->ab_match = true;
        record(run, now, out, kind, analysis, "requests with %s %s=%s go to %s for %" PRIu32 " passing analyses",
               p->match_kind == VEER_KEY_COOKIE ? "cookie" : "header", p->match_name, p->match_equals, p->canary,
               p->iterations);
        break;
    case VEER_CANARY_BLUE_GREEN:
        run->weight = 0;
        if (gate_open(in)) {
            switch_blue_green(run, now, out, kind, in);
        } else {
            run->stage = VEER_CANARY_STAGE_GATE;
            record(run, now, out, kind, analysis, "waiting for every endpoint of %s to be healthy (%" PRIu32
                   " of %" PRIu32 ")", p->canary, in ? in->canary_endpoints_healthy : 0,
                   in ? in->canary_endpoints : 0);
        }
        break;
    }
}

static void gate_step(veer_canary_run_t *run, const veer_canary_inputs_t *in, uint64_t now,
                      veer_canary_update_t *out)
{
    if (gate_open(in)) {
        switch_blue_green(run, now, out, VEER_CANARY_EV_SWITCHED, in);
        return;
    }
    run->inconclusive_streak++;
    if (run->inconclusive_streak >= run->policy.max_inconclusive) {
        char why[VEER_CANARY_TEXT_CAP];
        text_set(why, sizeof why, "%s still has %" PRIu32 " of %" PRIu32 " endpoints healthy after %" PRIu32
                 " intervals", run->policy.canary, in->canary_endpoints_healthy, in->canary_endpoints,
                 run->inconclusive_streak);
        pause_run(run, now, out, NULL, why);
    }
}

static void shift_step(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out)
{
    uint32_t step = run->policy.promotion_step_weight;
    run->weight = step == 0 || run->weight + step >= 100 ? 100 : run->weight + step;
    if (run->weight == 100)
        finish_promotion(run, now, out);
    else
        record(run, now, out, VEER_CANARY_EV_PROMOTION_STEP, NULL, "promoting %s: weight %" PRIu32 "%%",
               run->policy.canary, run->weight);
}

static void pass_step(veer_canary_run_t *run, const veer_canary_inputs_t *in, uint64_t now,
                      veer_canary_update_t *out, const veer_canary_analysis_t *a)
{
    const veer_canary_policy_t *p = &run->policy;
    char why[VEER_CANARY_TEXT_CAP];
    if (run->stage == VEER_CANARY_STAGE_MIRROR) {
        run->passed++;
        if (run->passed < p->mirror_iterations) {
            record(run, now, out, VEER_CANARY_EV_ITERATION, a, "mirrored analysis %" PRIu32 " of %" PRIu32 " passed",
                   run->passed, p->mirror_iterations);
            return;
        }
        run->mirror = false;
        go_live(run, in, now, out, VEER_CANARY_EV_LIVE, a);
        return;
    }
    if (run->stage != VEER_CANARY_STAGE_ANALYSIS)
        return; /* waiting for confirmation: a pass changes nothing */
    if (p->mode == VEER_CANARY_PROGRESSIVE) {
        if (run->weight >= p->max_weight) {
            text_set(why, sizeof why, "passed at max_weight %" PRIu32 "%%", p->max_weight);
            enter_promotion(run, now, out, a, why);
            return;
        }
        uint32_t from = run->weight;
        run->weight = next_weight(p, run->weight);
        record(run, now, out, VEER_CANARY_EV_ADVANCED, a, "analysis passed: weight %" PRIu32 "%% -> %" PRIu32 "%%",
               from, run->weight);
        return;
    }
    run->passed++;
    if (run->passed >= p->iterations) {
        text_set(why, sizeof why, "%" PRIu32 " of %" PRIu32 " analyses passed", run->passed, p->iterations);
        enter_promotion(run, now, out, a, why);
        return;
    }
    record(run, now, out, VEER_CANARY_EV_ITERATION, a, "analysis %" PRIu32 " of %" PRIu32 " passed", run->passed,
           p->iterations);
}

/* Mirror, analysis and confirmation stages: judge the window, then act. */
static void analysis_step(veer_canary_run_t *run, const veer_canary_window_t *c, const veer_canary_window_t *s,
                          const veer_canary_inputs_t *in, uint64_t now, veer_canary_update_t *out)
{
    const veer_canary_policy_t *p = &run->policy;
    bool confirming = run->stage == VEER_CANARY_STAGE_CONFIRM;
    char why[VEER_CANARY_TEXT_CAP];
    veer_canary_analysis_t a;
    uint32_t intervals = run->window_intervals > 1 ? run->window_intervals : 1;
    veer_canary_analyse_window(p, c, s, intervals, now, &a);
    run->last_analysis = a;
    run->has_analysis = true;
    run->analyses++;
    run->window_intervals = 0;
    if (a.verdict == VEER_CANARY_INCONCLUSIVE) {
        /* Too few requests count towards a pause; a held window had enough
         * and only waits for the numbers to settle (at most HOLD_MAX). */
        if (a.reasons & VEER_CANARY_R_TOO_FEW)
            run->inconclusive_streak++;
        else
            run->inconclusive_streak = 0;
        if (run->inconclusive_streak >= p->max_inconclusive) {
            text_set(why, sizeof why, "%" PRIu32 " inconclusive analyses in a row (%s)", run->inconclusive_streak,
                     a.detail);
            pause_run(run, now, out, &a, why);
            return;
        }
        run->window_intervals = intervals + 1;
        out->keep_window = true;
    } else if (a.verdict == VEER_CANARY_FAIL) {
        run->inconclusive_streak = 0;
        run->failed_checks++;
        if (run->failed_checks >= p->threshold) {
            text_set(why, sizeof why, "%" PRIu32 " failed checks reached threshold %" PRIu32 " (%s)",
                     run->failed_checks, p->threshold, a.detail);
            roll_back(run, now, out, &a, why);
            return;
        }
        record(run, now, out, VEER_CANARY_EV_CHECK_FAILED, &a, "check failed (%" PRIu32 " of %" PRIu32 "): %s",
               run->failed_checks, p->threshold, a.detail);
    } else {
        run->inconclusive_streak = 0;
        pass_step(run, in, now, out, &a);
    }
    if (confirming && run->stage == VEER_CANARY_STAGE_CONFIRM) {
        if (in->promotion_confirmed)
            start_shift(run, now, out, &a, "confirm_promotion answered 2xx");
        else
            out->ask_confirmation = true;
    }
}

/* ---- the run: API ----------------------------------------------------------------- */

int veer_canary_start(veer_canary_run_t *run, const veer_canary_policy_t *policy, const veer_canary_inputs_t *in,
                      uint64_t now_ms, veer_canary_update_t *out, char *err, size_t errlen)
{
    veer_canary_update_t scratch;
    shape_t before;
    if (!out)
        out = &scratch;
    update_begin(run, out, &before);
    int rc = VEER_CANARY_OK;
    veer_canary_policy_t copy;
    if (veer_canary_active(run)) {
        fail_with(err, errlen, "a run is already in progress (phase %s): abort it first",
                  veer_canary_phase_name(run->phase));
        rc = VEER_CANARY_ESTATE;
    } else if (!policy) {
        rc = fail_with(err, errlen, "no canary policy");
    } else if ((rc = policy_check(policy, err, errlen)) == VEER_CANARY_OK &&
               (rc = policy_copy(&copy, policy)) != VEER_CANARY_OK) {
        fail_with(err, errlen, "out of memory");
    }
    if (rc != VEER_CANARY_OK) {
        update_end(run, out, &before);
        return rc;
    }
    veer_canary_run_free(run);
    run->policy = copy;
    run->phase = VEER_CANARY_PROGRESSING;
    run->started_ms = run->updated_ms = now_ms;
    run->next_due_ms = now_ms + run->policy.interval_ms;
    if (run->policy.mirror_iterations) {
        run->stage = VEER_CANARY_STAGE_MIRROR;
        run->mirror = true;
        record(run, now_ms, out, VEER_CANARY_EV_STARTED, NULL,
               "mirroring requests to %s (responses discarded) for %" PRIu32 " passing analyses", run->policy.canary,
               run->policy.mirror_iterations);
    } else {
        go_live(run, in, now_ms, out, VEER_CANARY_EV_STARTED, NULL);
    }
    /* The route's split is whatever it was before: state it all. */
    out->weights_changed = out->mirror_changed = out->ab_match_changed = out->phase_changed = true;
    update_end(run, out, &before);
    return VEER_CANARY_OK;
}

int veer_canary_tick(veer_canary_run_t *run, const veer_canary_window_t *canary, const veer_canary_window_t *stable,
                     const veer_canary_inputs_t *in, uint64_t now_ms, veer_canary_update_t *out)
{
    static const veer_canary_inputs_t no_inputs;
    veer_canary_update_t scratch;
    shape_t before;
    if (!out)
        out = &scratch;
    if (!in)
        in = &no_inputs;
    update_begin(run, out, &before);
    uint64_t due = veer_canary_due_ms(run);
    if (due != 0 && now_ms >= due) {
        out->analysed = true;
        run->next_due_ms = now_ms + run->policy.interval_ms;
        if (run->stage == VEER_CANARY_STAGE_GATE)
            gate_step(run, in, now_ms, out);
        else if (run->stage == VEER_CANARY_STAGE_SHIFT)
            shift_step(run, now_ms, out);
        else
            analysis_step(run, canary, stable, in, now_ms, out);
    }
    update_end(run, out, &before);
    return VEER_CANARY_OK;
}

static int refuse_unless_active(const veer_canary_run_t *run, char *err, size_t errlen)
{
    const char *why = NULL;
    if (run->phase == VEER_CANARY_IDLE)
        why = "no run in progress";
    else if (run->phase == VEER_CANARY_SUCCEEDED)
        why = "no run in progress (the last run succeeded)";
    else if (run->phase == VEER_CANARY_ROLLED_BACK)
        why = "no run in progress (the last run was rolled back)";
    if (!why)
        return VEER_CANARY_OK;
    fail_with(err, errlen, "%s", why);
    return VEER_CANARY_ESTATE;
}

static int verb_pause(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out, char *err, size_t errlen)
{
    if (run->phase == VEER_CANARY_PAUSED) {
        fail_with(err, errlen, "already paused");
        return VEER_CANARY_ESTATE;
    }
    pause_run(run, now, out, NULL, "paused by the operator");
    return VEER_CANARY_OK;
}

static int verb_resume(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out, char *err, size_t errlen)
{
    if (run->phase != VEER_CANARY_PAUSED) {
        fail_with(err, errlen, "not paused (phase %s)", veer_canary_phase_name(run->phase));
        return VEER_CANARY_ESTATE;
    }
    run->phase = run->paused_from;
    run->inconclusive_streak = 0;
    run->window_intervals = 0;
    run->window_intervals = 0;
    run->next_due_ms = now + run->policy.interval_ms; /* a full interval of fresh numbers */
    record(run, now, out, VEER_CANARY_EV_RESUMED, NULL, "resumed by the operator at weight %" PRIu32 "%%",
           run->weight);
    if (run->stage == VEER_CANARY_STAGE_CONFIRM)
        out->ask_confirmation = true;
    return VEER_CANARY_OK;
}

static int verb_promote(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out, char *err, size_t errlen)
{
    if (run->stage == VEER_CANARY_STAGE_SHIFT) {
        fail_with(err, errlen, "already promoting");
        return VEER_CANARY_ESTATE;
    }
    run->next_due_ms = now + run->policy.interval_ms;
    start_shift(run, now, out, NULL, "promoted by the operator");
    return VEER_CANARY_OK;
}

static int verb_abort(veer_canary_run_t *run, uint64_t now, veer_canary_update_t *out, char *err, size_t errlen)
{
    roll_back(run, now, out, NULL, "aborted by the operator");
    return VEER_CANARY_OK;
}

typedef int (*verb_fn)(veer_canary_run_t *, uint64_t, veer_canary_update_t *, char *, size_t);

static int run_verb(veer_canary_run_t *run, verb_fn fn, uint64_t now, veer_canary_update_t *out, char *err,
                    size_t errlen)
{
    veer_canary_update_t scratch;
    shape_t before;
    if (!out)
        out = &scratch;
    update_begin(run, out, &before);
    int rc = refuse_unless_active(run, err, errlen);
    if (rc == VEER_CANARY_OK)
        rc = fn(run, now, out, err, errlen);
    update_end(run, out, &before);
    return rc;
}

int veer_canary_pause(veer_canary_run_t *run, uint64_t now_ms, veer_canary_update_t *out, char *err, size_t errlen)
{
    return run_verb(run, verb_pause, now_ms, out, err, errlen);
}

int veer_canary_pause_because(veer_canary_run_t *run, const char *why, uint64_t now_ms, veer_canary_update_t *out,
                              char *err, size_t errlen)
{
    veer_canary_update_t scratch;
    shape_t before;
    if (!out)
        out = &scratch;
    update_begin(run, out, &before);
    int rc = refuse_unless_active(run, err, errlen);
    if (rc == VEER_CANARY_OK && run->phase == VEER_CANARY_PAUSED) {
        fail_with(err, errlen, "already paused");
        rc = VEER_CANARY_ESTATE;
    }
    if (rc == VEER_CANARY_OK)
        pause_run(run, now_ms, out, NULL, why);
    update_end(run, out, &before);
    return rc;
}

int veer_canary_resume(veer_canary_run_t *run, uint64_t now_ms, veer_canary_update_t *out, char *err, size_t errlen)
{
    return run_verb(run, verb_resume, now_ms, out, err, errlen);
}

int veer_canary_promote(veer_canary_run_t *run, uint64_t now_ms, veer_canary_update_t *out, char *err,
                        size_t errlen)
{
    return run_verb(run, verb_promote, now_ms, out, err, errlen);
}

int veer_canary_abort(veer_canary_run_t *run, uint64_t now_ms, veer_canary_update_t *out, char *err, size_t errlen)
{
    return run_verb(run, verb_abort, now_ms, out, err, errlen);
}

int veer_canary_command(veer_canary_run_t *run, const char *verb, uint64_t now_ms, veer_canary_update_t *out,
                        char *err, size_t errlen)
{
    static const struct {
        const char *name;
        verb_fn fn;
    } verbs[] = {{"pause", verb_pause}, {"resume", verb_resume}, {"promote", verb_promote}, {"abort", verb_abort}};
    for (size_t i = 0; verb && i < N_ELEMS(verbs); i++)
        if (strcmp(verb, verbs[i].name) == 0)
            return run_verb(run, verbs[i].fn, now_ms, out, err, errlen);
    if (out)
        memset(out, 0, sizeof *out);
    return fail_with(err, errlen, "unknown canary command \"%.32s\" (expected pause, resume, promote or abort)",
                     verb ? verb : "");
}

/* ---- JSON out --------------------------------------------------------------------- */

/* Builders note any failed allocation in *ok and go on; the caller then
 * drops the whole document. */
static void put_num(cJSON *o, bool *ok, const char *key, double v)
{
    *ok = cJSON_AddNumberToObject(o, key, v) != NULL && *ok;
}

static void put_bool(cJSON *o, bool *ok, const char *key, bool v)
{
    *ok = cJSON_AddBoolToObject(o, key, v) != NULL && *ok;
}

static void put_str(cJSON *o, bool *ok, const char *key, const char *v)
{
    *ok = (v ? cJSON_AddStringToObject(o, key, v) : cJSON_AddNullToObject(o, key)) != NULL && *ok;
}

static void put_item(cJSON *o, bool *ok, const char *key, cJSON *item)
{
    if (!item || !cJSON_AddItemToObject(o, key, item)) {
        cJSON_Delete(item);
        *ok = false;
    }
}

static void put_array_item(cJSON *array, bool *ok, cJSON *item)
{
    if (!item || !cJSON_AddItemToArray(array, item)) {
        cJSON_Delete(item);
        *ok = false;
    }
}

static cJSON *finish_object(cJSON *o, bool ok)
{
    if (ok)
        return o;
    cJSON_Delete(o);
    return NULL;
}

static cJSON *window_to_json(const veer_canary_window_t *w, double success)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    if (!o)
        return NULL;
    put_num(o, &ok, "requests", (double)w->requests);
    put_num(o, &ok, "failures", (double)w->failures);
    put_num(o, &ok, "p99_us", (double)w->p99_us);
    if (success < 0)
        put_str(o, &ok, "success_rate", NULL);
    else
        put_num(o, &ok, "success_rate", success);
    return finish_object(o, ok);
}

cJSON *veer_canary_analysis_to_json(const veer_canary_analysis_t *a)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    if (!o)
        return NULL;
    put_num(o, &ok, "at_ms", (double)a->at_ms);
    put_str(o, &ok, "verdict", veer_canary_verdict_name(a->verdict));
    cJSON *reasons = cJSON_CreateArray();
    for (size_t i = 0; reasons && i < N_ELEMS(reason_names); i++)
        if (a->reasons & (1u << i))
            put_array_item(reasons, &ok, cJSON_CreateString(reason_names[i]));
    put_item(o, &ok, "reasons", reasons);
    put_str(o, &ok, "detail", a->detail);
    put_item(o, &ok, "canary", window_to_json(&a->canary, a->canary_success));
    put_item(o, &ok, "stable", window_to_json(&a->stable, a->stable_success));
    put_num(o, &ok, "intervals", a->intervals);
    put_num(o, &ok, "success_p_value", a->success_p);
    put_bool(o, &ok, "compared", a->compared);
    put_num(o, &ok, "compare_p_value", a->compare_p);
    put_num(o, &ok, "z", a->z);
    put_num(o, &ok, "z_critical", a->z_critical);
    put_num(o, &ok, "p99_ratio", a->p99_ratio);
    return finish_object(o, ok);
}

cJSON *veer_canary_event_to_json(const veer_canary_event_t *ev)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    if (!o)
        return NULL;
    put_num(o, &ok, "seq", (double)ev->seq);
    put_num(o, &ok, "at_ms", (double)ev->at_ms);
    put_str(o, &ok, "kind", veer_canary_event_name(ev->kind));
    put_str(o, &ok, "phase", veer_canary_phase_name(ev->phase));
    put_str(o, &ok, "stage", veer_canary_stage_name(ev->stage));
    put_num(o, &ok, "weight", ev->weight);
    put_num(o, &ok, "failed_checks", ev->failed_checks);
    put_str(o, &ok, "reason", ev->reason);
    if (ev->has_analysis)
        put_item(o, &ok, "analysis", veer_canary_analysis_to_json(&ev->analysis));
    else
        put_str(o, &ok, "analysis", NULL);
    return finish_object(o, ok);
}

static cJSON *policy_to_json(const veer_canary_policy_t *p)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    if (!o)
        return NULL;
    put_str(o, &ok, "stable", p->stable);
    put_str(o, &ok, "canary", p->canary);
    put_str(o, &ok, "mode", name_of(mode_names, N_ELEMS(mode_names), (unsigned)p->mode));
    put_num(o, &ok, "interval_ms", (double)p->interval_ms);
    put_num(o, &ok, "step_weight", p->step_weight);
    cJSON *steps = cJSON_CreateArray();
    for (size_t i = 0; steps && i < p->step_weight_count; i++)
        put_array_item(steps, &ok, cJSON_CreateNumber(p->step_weights[i]));
    put_item(o, &ok, "step_weights", steps);
    put_num(o, &ok, "max_weight", p->max_weight);
    put_num(o, &ok, "promotion_step_weight", p->promotion_step_weight);
    put_num(o, &ok, "iterations", p->iterations);
    put_num(o, &ok, "mirror_iterations", p->mirror_iterations);
    put_num(o, &ok, "threshold", p->threshold);
    put_num(o, &ok, "max_inconclusive", p->max_inconclusive);
    put_num(o, &ok, "min_requests", (double)p->min_requests);
    put_num(o, &ok, "success_rate_min", p->success_rate_min);
    put_num(o, &ok, "p99_max_ms", (double)p->p99_max_ms);
    put_bool(o, &ok, "compare_to_stable", p->compare_to_stable);
    put_num(o, &ok, "confidence", p->confidence);
    put_num(o, &ok, "p99_ratio_max", p->p99_ratio_max);
    if (p->has_match) {
        cJSON *m = cJSON_CreateObject();
        if (m) {
            put_str(m, &ok, p->match_kind == VEER_KEY_COOKIE ? "cookie" : "header", p->match_name);
            put_str(m, &ok, "equals", p->match_equals);
        }
        put_item(o, &ok, "match", m);
    } else {
        put_str(o, &ok, "match", NULL);
    }
    cJSON *hooks = cJSON_CreateObject();
    if (hooks) {
        put_str(hooks, &ok, "promoted", p->webhook_promoted);
        put_str(hooks, &ok, "rolled_back", p->webhook_rolled_back);
        put_str(hooks, &ok, "confirm_promotion", p->webhook_confirm_promotion);
        cJSON *urls = cJSON_CreateArray();
        for (size_t i = 0; urls && i < p->webhook_phase_change_count; i++)
            put_array_item(urls, &ok, cJSON_CreateString(p->webhook_phase_change[i] ? p->webhook_phase_change[i] : ""));
        put_item(hooks, &ok, "phase_change", urls);
        put_num(hooks, &ok, "timeout_ms", (double)p->webhook_timeout_ms);
        put_num(hooks, &ok, "retries", p->webhook_retries);
    }
    put_item(o, &ok, "webhooks", hooks);
    return finish_object(o, ok);
}

cJSON *veer_canary_to_json(const veer_canary_run_t *run)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    if (!o)
        return NULL;
    put_num(o, &ok, "version", STATE_VERSION);
    put_str(o, &ok, "phase", veer_canary_phase_name(run->phase));
    if (run->phase == VEER_CANARY_IDLE)
        return finish_object(o, ok);
    put_str(o, &ok, "paused_from",
            run->phase == VEER_CANARY_PAUSED ? veer_canary_phase_name(run->paused_from) : NULL);
    put_str(o, &ok, "stage", veer_canary_stage_name(run->stage));
    put_str(o, &ok, "stable", run->policy.stable);
    put_str(o, &ok, "canary", run->policy.canary);
    put_num(o, &ok, "weight", run->weight);
    put_num(o, &ok, "stable_weight", 100 - run->weight);
    put_bool(o, &ok, "mirror", run->mirror);
    put_bool(o, &ok, "ab_match", run->ab_match);
    put_num(o, &ok, "failed_checks", run->failed_checks);
    put_num(o, &ok, "passed", run->passed);
    put_num(o, &ok, "inconclusive_streak", run->inconclusive_streak);
    put_num(o, &ok, "analyses", (double)run->analyses);
    put_num(o, &ok, "started_ms", (double)run->started_ms);
    put_num(o, &ok, "updated_ms", (double)run->updated_ms);
    put_num(o, &ok, "next_analysis_ms", (double)run->next_due_ms);
    put_str(o, &ok, "reason", run->reason);
    put_str(o, &ok, "promoted", run->phase == VEER_CANARY_SUCCEEDED ? run->policy.canary : NULL);
    put_item(o, &ok, "policy", policy_to_json(&run->policy));
    if (run->has_analysis)
        put_item(o, &ok, "last_analysis", veer_canary_analysis_to_json(&run->last_analysis));
    else
        put_str(o, &ok, "last_analysis", NULL);
    cJSON *events = cJSON_CreateArray();
    for (size_t i = 0; events && i < run->history_count; i++)
        put_array_item(events, &ok, veer_canary_event_to_json(veer_canary_event_at(run, i)));
    put_item(o, &ok, "events", events);
    put_num(o, &ok, "events_dropped", (double)run->events_dropped);
    put_num(o, &ok, "next_seq", (double)run->next_seq);
    return finish_object(o, ok);
}

/* ---- JSON in ----------------------------------------------------------------------
 * A reader keeps the first error, named with its key path; every read after
 * it is a no-op returning a harmless default. */

typedef struct reader_s {
    char *err;
    size_t errlen;
    bool failed;
} reader_t;

__attribute__((format(printf, 4, 5)))
static void rd_error(reader_t *r, const char *path, const char *key, const char *fmt, ...)
{
    if (r->failed)
        return;
    r->failed = true;
    if (!r->err || !r->errlen)
        return;
    char detail[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (!path[0] && !key[0])
        snprintf(r->err, r->errlen, "canary state: %s", detail);
    else
        snprintf(r->err, r->errlen, "canary state: %s%s%s: %s", path, path[0] && key[0] ? "." : "", key, detail);
}

static const cJSON *rd_get(reader_t *r, const cJSON *obj, const char *path, const char *key)
{
    if (r->failed)
        return NULL;
    const cJSON *item = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!item)
        rd_error(r, path, key, "missing");
    return item;
}

static uint64_t rd_u64(reader_t *r, const cJSON *obj, const char *path, const char *key, uint64_t min, uint64_t max)
{
    const cJSON *item = rd_get(r, obj, path, key);
    if (!item)
        return min;
    double v = cJSON_IsNumber(item) ? item->valuedouble : -1.0;
    if (!(v >= (double)min && v <= (double)max && v <= MAX_SAFE_INT && v == floor(v))) {
        rd_error(r, path, key, "expected an integer between %" PRIu64 " and %" PRIu64, min, max);
        return min;
    }
    return (uint64_t)v;
}

static uint32_t rd_u32(reader_t *r, const cJSON *obj, const char *path, const char *key, uint32_t min, uint32_t max)
{
    return (uint32_t)rd_u64(r, obj, path, key, min, max);
}

static double rd_num(reader_t *r, const cJSON *obj, const char *path, const char *key, double min, double max)
{
    const cJSON *item = rd_get(r, obj, path, key);
    if (!item)
        return min;
    if (!cJSON_IsNumber(item) || !(item->valuedouble >= min && item->valuedouble <= max)) {
        rd_error(r, path, key, "expected a number between %g and %g", min, max);
        return min;
    }
    return item->valuedouble;
}

static bool rd_bool(reader_t *r, const cJSON *obj, const char *path, const char *key)
{
    const cJSON *item = rd_get(r, obj, path, key);
    if (item && !cJSON_IsBool(item))
        rd_error(r, path, key, "expected true or false");
    return item && cJSON_IsTrue(item);
}

/* A string or (nullable) null; NULL for null. */
static const char *rd_str(reader_t *r, const cJSON *obj, const char *path, const char *key, bool nullable)
{
    const cJSON *item = rd_get(r, obj, path, key);
    if (!item || (nullable && cJSON_IsNull(item)))
        return NULL;
    if (!cJSON_IsString(item)) {
        rd_error(r, path, key, "expected a string%s", nullable ? " or null" : "");
        return NULL;
    }
    return item->valuestring;
}

static void rd_text(reader_t *r, const cJSON *obj, const char *path, const char *key, char *dst, size_t cap)
{
    const char *s = rd_str(r, obj, path, key, false);
    if (s && strlen(s) >= cap)
        rd_error(r, path, key, "longer than %zu characters", cap - 1);
    else if (s)
        copy_text(dst, cap, s);
}

static char *rd_heap_str(reader_t *r, const cJSON *obj, const char *path, const char *key, bool *oom)
{
    const char *s = rd_str(r, obj, path, key, true);
    char *copy = s ? strdup(s) : NULL;
    if (s && !copy)
        *oom = true;
    return copy;
}

static int rd_enum(reader_t *r, const cJSON *obj, const char *path, const char *key, const char *const *names,
                   size_t count)
{
    const char *s = rd_str(r, obj, path, key, false);
    for (size_t i = 0; s && i < count; i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    if (s)
        rd_error(r, path, key, "unknown value \"%.40s\"", s);
    return 0;
}

static void rd_window(reader_t *r, const cJSON *obj, const char *path, veer_canary_window_t *w, double *success)
{
    w->requests = rd_u64(r, obj, path, "requests", 0, (uint64_t)MAX_SAFE_INT);
    w->failures = rd_u64(r, obj, path, "failures", 0, (uint64_t)MAX_SAFE_INT);
    w->p99_us = rd_u64(r, obj, path, "p99_us", 0, (uint64_t)MAX_SAFE_INT);
    const cJSON *rate = rd_get(r, obj, path, "success_rate");
    *success = -1.0;
    if (rate && !cJSON_IsNull(rate))
        *success = rd_num(r, obj, path, "success_rate", 0.0, 100.0);
}

static void rd_analysis(reader_t *r, const cJSON *obj, const char *path, veer_canary_analysis_t *a)
{
    char sub[64];
    memset(a, 0, sizeof *a);
    if (!r->failed && !cJSON_IsObject(obj)) {
        rd_error(r, path, "", "expected an object");
        return;
    }
    a->at_ms = rd_u64(r, obj, path, "at_ms", 0, (uint64_t)MAX_SAFE_INT);
    a->verdict = (veer_canary_verdict_t)rd_enum(r, obj, path, "verdict", verdict_names, N_ELEMS(verdict_names));
    const cJSON *reasons = rd_get(r, obj, path, "reasons");
    if (reasons && !cJSON_IsArray(reasons))
        rd_error(r, path, "reasons", "expected an array");
    for (const cJSON *item = reasons ? reasons->child : NULL; item && !r->failed; item = item->next) {
        size_t i = 0;
        while (i < N_ELEMS(reason_names) && !(cJSON_IsString(item) && strcmp(item->valuestring, reason_names[i]) == 0))
            i++;
        if (i == N_ELEMS(reason_names))
            rd_error(r, path, "reasons", "unknown reason");
        else
            a->reasons |= 1u << i;
    }
    rd_text(r, obj, path, "detail", a->detail, sizeof a->detail);
    snprintf(sub, sizeof sub, "%s.canary", path);
    rd_window(r, rd_get(r, obj, path, "canary"), sub, &a->canary, &a->canary_success);
    snprintf(sub, sizeof sub, "%s.stable", path);
    rd_window(r, rd_get(r, obj, path, "stable"), sub, &a->stable, &a->stable_success);
    a->compared = rd_bool(r, obj, path, "compared");
    /* absent from state files written before the exact tests: no evidence */
    bool has_p = cJSON_IsObject(obj) && cJSON_GetObjectItemCaseSensitive(obj, "success_p_value") != NULL;
    a->intervals = has_p ? rd_u32(r, obj, path, "intervals", 1, UINT32_MAX) : 1;
    a->success_p = has_p ? rd_num(r, obj, path, "success_p_value", 0.0, 1.0) : 1.0;
    a->compare_p = has_p ? rd_num(r, obj, path, "compare_p_value", 0.0, 1.0) : 1.0;
    a->z = rd_num(r, obj, path, "z", -1e300, 1e300);
    a->z_critical = rd_num(r, obj, path, "z_critical", -1e300, 1e300);
    a->p99_ratio = rd_num(r, obj, path, "p99_ratio", 0.0, 1e300);
}

static void rd_match(reader_t *r, const cJSON *obj, veer_canary_policy_t *p, bool *oom)
{
    const cJSON *match = rd_get(r, obj, "policy", "match");
    if (!match || cJSON_IsNull(match))
        return;
    bool cookie = cJSON_IsObject(match) && cJSON_GetObjectItemCaseSensitive(match, "cookie");
    p->has_match = true;
    p->match_kind = cookie ? VEER_KEY_COOKIE : VEER_KEY_HEADER;
    p->match_name = rd_heap_str(r, match, "policy.match", cookie ? "cookie" : "header", oom);
    p->match_equals = rd_heap_str(r, match, "policy.match", "equals", oom);
    if (!r->failed && (!p->match_name || !p->match_equals))
        rd_error(r, "policy", "match", "expected {\"header\" or \"cookie\": NAME, \"equals\": VALUE}");
}

static void rd_webhooks(reader_t *r, const cJSON *obj, veer_canary_policy_t *p, bool *oom)
{
    const char *path = "policy.webhooks";
    const cJSON *hooks = rd_get(r, obj, "policy", "webhooks");
    p->webhook_promoted = rd_heap_str(r, hooks, path, "promoted", oom);
    p->webhook_rolled_back = rd_heap_str(r, hooks, path, "rolled_back", oom);
    p->webhook_confirm_promotion = rd_heap_str(r, hooks, path, "confirm_promotion", oom);
    const cJSON *urls = rd_get(r, hooks, path, "phase_change");
    if (urls && (!cJSON_IsArray(urls) || cJSON_GetArraySize(urls) > VEER_CANARY_MAX_PHASE_HOOKS))
        rd_error(r, path, "phase_change", "expected an array of at most %d URLs", VEER_CANARY_MAX_PHASE_HOOKS);
    for (const cJSON *u = urls ? urls->child : NULL; u && !r->failed; u = u->next) {
        if (!cJSON_IsString(u)) {
            rd_error(r, path, "phase_change", "expected URL strings");
            break;
        }
        char *copy = strdup(u->valuestring);
        *oom = *oom || !copy;
        p->webhook_phase_change[p->webhook_phase_change_count++] = copy;
    }
    p->webhook_timeout_ms = rd_u64(r, hooks, path, "timeout_ms", 0, (uint64_t)MAX_SAFE_INT);
    p->webhook_retries = rd_u32(r, hooks, path, "retries", 0, 1000);
}

static void rd_policy(reader_t *r, const cJSON *obj, veer_canary_policy_t *p, bool *oom)
{
    const char *path = "policy";
    if (!r->failed && !cJSON_IsObject(obj)) {
        rd_error(r, "", "policy", "expected an object");
        return;
    }
    rd_text(r, obj, path, "stable", p->stable, sizeof p->stable);
    rd_text(r, obj, path, "canary", p->canary, sizeof p->canary);
    p->mode = (veer_canary_mode_t)rd_enum(r, obj, path, "mode", mode_names, N_ELEMS(mode_names));
    p->interval_ms = rd_u64(r, obj, path, "interval_ms", 1, (uint64_t)MAX_SAFE_INT / 2);
    p->step_weight = rd_u32(r, obj, path, "step_weight", 1, 100);
    const cJSON *steps = rd_get(r, obj, path, "step_weights");
    if (steps && (!cJSON_IsArray(steps) || (size_t)cJSON_GetArraySize(steps) > N_ELEMS(p->step_weights)))
        rd_error(r, path, "step_weights", "expected an array of at most %zu weights", N_ELEMS(p->step_weights));
    for (const cJSON *s = steps ? steps->child : NULL; s && !r->failed; s = s->next) {
        double v = cJSON_IsNumber(s) ? s->valuedouble : 0.0;
        if (!(v >= 1.0 && v <= 100.0 && v == floor(v)))
            rd_error(r, path, "step_weights", "expected weights 1..100");
        else
            p->step_weights[p->step_weight_count++] = (uint32_t)v;
    }
    p->max_weight = rd_u32(r, obj, path, "max_weight", 1, 100);
    p->promotion_step_weight = rd_u32(r, obj, path, "promotion_step_weight", 0, 100);
    p->iterations = rd_u32(r, obj, path, "iterations", 1, 1000000);
    p->mirror_iterations = rd_u32(r, obj, path, "mirror_iterations", 0, 1000000);
    p->threshold = rd_u32(r, obj, path, "threshold", 1, 1000000);
    p->max_inconclusive = rd_u32(r, obj, path, "max_inconclusive", 1, 1000000);
    p->min_requests = rd_u64(r, obj, path, "min_requests", 0, (uint64_t)MAX_SAFE_INT);
    p->success_rate_min = rd_num(r, obj, path, "success_rate_min", 0.0, 100.0);
    p->p99_max_ms = rd_u64(r, obj, path, "p99_max_ms", 1, UINT64_MAX / 4000);
    p->compare_to_stable = rd_bool(r, obj, path, "compare_to_stable");
    p->confidence = rd_num(r, obj, path, "confidence", 0.5, 1.0);
    p->p99_ratio_max = rd_num(r, obj, path, "p99_ratio_max", 1.0, 1e6);
    rd_match(r, obj, p, oom);
    rd_webhooks(r, obj, p, oom);
}

static void rd_event(reader_t *r, const cJSON *obj, size_t index, veer_canary_event_t *ev)
{
    char path[64];
    snprintf(path, sizeof path, "events[%zu]", index);
    if (!r->failed && !cJSON_IsObject(obj)) {
        rd_error(r, path, "", "expected an object");
        return;
    }
    memset(ev, 0, sizeof *ev);
    ev->seq = rd_u64(r, obj, path, "seq", 1, (uint64_t)MAX_SAFE_INT);
    ev->at_ms = rd_u64(r, obj, path, "at_ms", 0, (uint64_t)MAX_SAFE_INT);
    ev->kind = (veer_canary_event_kind_t)rd_enum(r, obj, path, "kind", event_names, N_ELEMS(event_names));
    ev->phase = (veer_canary_phase_t)rd_enum(r, obj, path, "phase", phase_names, N_ELEMS(phase_names));
    ev->stage = (veer_canary_stage_t)rd_enum(r, obj, path, "stage", stage_names, N_ELEMS(stage_names));
    ev->weight = rd_u32(r, obj, path, "weight", 0, 100);
    ev->failed_checks = rd_u32(r, obj, path, "failed_checks", 0, UINT32_MAX);
    rd_text(r, obj, path, "reason", ev->reason, sizeof ev->reason);
    const cJSON *analysis = rd_get(r, obj, path, "analysis");
    if (analysis && !cJSON_IsNull(analysis)) {
        char sub[80];
        snprintf(sub, sizeof sub, "%s.analysis", path);
        ev->has_analysis = true;
        rd_analysis(r, analysis, sub, &ev->analysis);
    }
}

/* The stages each phase can be in: anything else is a corrupt file. */
static bool stage_fits(veer_canary_phase_t phase, veer_canary_stage_t stage)
{
    switch (phase) {
    case VEER_CANARY_PROGRESSING:
        return stage == VEER_CANARY_STAGE_MIRROR || stage == VEER_CANARY_STAGE_GATE ||
               stage == VEER_CANARY_STAGE_ANALYSIS;
    case VEER_CANARY_PROMOTING:
        return stage == VEER_CANARY_STAGE_CONFIRM || stage == VEER_CANARY_STAGE_SHIFT;
    case VEER_CANARY_SUCCEEDED:
    case VEER_CANARY_ROLLED_BACK:
        return stage == VEER_CANARY_STAGE_NONE;
    default:
        return false;
    }
}

static void rd_run(reader_t *r, const cJSON *json, veer_canary_run_t *run, bool *oom)
{
    run->phase = (veer_canary_phase_t)rd_enum(r, json, "", "phase", phase_names, N_ELEMS(phase_names));
    if (r->failed || run->phase == VEER_CANARY_IDLE)
        return;
    const cJSON *paused_from = rd_get(r, json, "", "paused_from");
    if (run->phase == VEER_CANARY_PAUSED)
        run->paused_from =
            (veer_canary_phase_t)rd_enum(r, json, "", "paused_from", phase_names, N_ELEMS(phase_names));
    else if (paused_from && !cJSON_IsNull(paused_from))
        rd_error(r, "", "paused_from", "must be null unless the run is paused");
    run->stage = (veer_canary_stage_t)rd_enum(r, json, "", "stage", stage_names, N_ELEMS(stage_names));
    veer_canary_phase_t effective = run->phase == VEER_CANARY_PAUSED ? run->paused_from : run->phase;
    if (!r->failed && !stage_fits(effective, run->stage))
        rd_error(r, "", "stage", "stage %s does not fit phase %s", veer_canary_stage_name(run->stage),
                 veer_canary_phase_name(effective));
    run->weight = rd_u32(r, json, "", "weight", 0, 100);
    run->mirror = rd_bool(r, json, "", "mirror");
    run->ab_match = rd_bool(r, json, "", "ab_match");
    run->failed_checks = rd_u32(r, json, "", "failed_checks", 0, UINT32_MAX);
    run->passed = rd_u32(r, json, "", "passed", 0, UINT32_MAX);
    run->inconclusive_streak = rd_u32(r, json, "", "inconclusive_streak", 0, UINT32_MAX);
    run->analyses = rd_u64(r, json, "", "analyses", 0, (uint64_t)MAX_SAFE_INT);
    run->started_ms = rd_u64(r, json, "", "started_ms", 0, (uint64_t)MAX_SAFE_INT);
    run->updated_ms = rd_u64(r, json, "", "updated_ms", 0, (uint64_t)MAX_SAFE_INT);
    run->next_due_ms = rd_u64(r, json, "", "next_analysis_ms", 0, (uint64_t)MAX_SAFE_INT);
    rd_text(r, json, "", "reason", run->reason, sizeof run->reason);
    rd_policy(r, rd_get(r, json, "", "policy"), &run->policy, oom);
    const cJSON *last = rd_get(r, json, "", "last_analysis");
    if (last && !cJSON_IsNull(last)) {
        run->has_analysis = true;
        rd_analysis(r, last, "last_analysis", &run->last_analysis);
    }
    const cJSON *events = rd_get(r, json, "", "events");
    if (events && (!cJSON_IsArray(events) || cJSON_GetArraySize(events) > VEER_CANARY_HISTORY))
        rd_error(r, "", "events", "expected an array of at most %d events", VEER_CANARY_HISTORY);
    size_t i = 0;
    for (const cJSON *ev = events ? events->child : NULL; ev && !r->failed; ev = ev->next, i++)
        rd_event(r, ev, i, &run->history[i]);
    run->history_count = r->failed ? 0 : i;
    run->events_dropped = rd_u64(r, json, "", "events_dropped", 0, (uint64_t)MAX_SAFE_INT);
    run->next_seq = rd_u64(r, json, "", "next_seq", run->history_count, (uint64_t)MAX_SAFE_INT);
}

int veer_canary_restore(veer_canary_run_t *run, const cJSON *json, uint64_t now_ms, veer_canary_update_t *out,
                        char *err, size_t errlen)
{
    veer_canary_update_t scratch;
    shape_t before;
    if (!out)
        out = &scratch;
    veer_canary_run_free(run);
    update_begin(run, out, &before);
    reader_t r = {err, errlen, false};
    bool oom = false;
    if (!cJSON_IsObject(json))
        rd_error(&r, "", "", "expected an object");
    else if (rd_u64(&r, json, "", "version", 0, 1000) != STATE_VERSION && !r.failed)
        rd_error(&r, "", "version", "unsupported version (this veer writes %d)", STATE_VERSION);
    rd_run(&r, json, run, &oom);
    int rc = VEER_CANARY_OK;
    if (oom) {
        fail_with(err, errlen, "canary state: out of memory");
        rc = VEER_CANARY_ENOMEM;
    } else if (r.failed) {
        rc = VEER_CANARY_EINVAL;
    } else if (run->phase != VEER_CANARY_IDLE) {
        char detail[160];
        if (policy_check(&run->policy, detail, sizeof detail) != VEER_CANARY_OK)
            rc = fail_with(err, errlen, "canary state: %s", detail);
    }
    if (rc != VEER_CANARY_OK) {
        veer_canary_run_free(run);
        update_end(run, out, &before);
        return rc;
    }
    if (veer_canary_due_ms(run))
        run->next_due_ms = now_ms + run->policy.interval_ms; /* a full interval of fresh numbers */
    update_end(run, out, &before);
    /* An active run re-applies its route shape; a finished one left the
     * route to the operator, whose later weights the state file holds. */
    bool active = veer_canary_active(run);
    out->weights_changed = out->mirror_changed = out->ab_match_changed = active;
    out->phase_changed = false; /* restored, not changed */
    return VEER_CANARY_OK;
}
