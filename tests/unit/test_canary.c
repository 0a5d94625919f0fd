/* test_canary.c - the canary controller's statistics and state machine, driven
 * by a fake clock: whole releases (progressive, blue/green, A/B, mirrored,
 * confirmed) run in microseconds, and every operator verb is tried in every
 * phase. Policies are built by hand, except where the config path is tested. */
#include "canary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"

#define INTERVAL 1000
#define T0 1700000000000ull /* wall-clock ms: what the caller passes */

static char *xstrdup(const char *s)
{
    char *copy = strdup(s);
    if (!copy) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return copy;
}

/* blue (stable) -> green (canary), 1 s interval, Flagger-like defaults. */
static veer_canary_policy_t make_policy(veer_canary_mode_t mode)
{
    veer_canary_policy_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.stable, sizeof p.stable, "blue");
    snprintf(p.canary, sizeof p.canary, "green");
    p.mode = mode;
    p.interval_ms = INTERVAL;
    p.step_weight = 10;
    p.max_weight = 50;
    p.iterations = 3;
    p.threshold = 5;
    p.max_inconclusive = 3;
    p.min_requests = 100;
    p.success_rate_min = 99.0;
    p.p99_max_ms = 500;
    p.compare_to_stable = true;
    p.confidence = 0.99;
    p.p99_ratio_max = 1.5;
    p.webhook_timeout_ms = 5000;
    p.webhook_retries = 3;
    if (mode == VEER_CANARY_AB) {
        p.has_match = true;
        p.match_kind = VEER_KEY_HEADER;
        p.match_name = xstrdup("x-canary");
        p.match_equals = xstrdup("1");
    }
    return p;
}

static veer_canary_window_t win(uint64_t requests, uint64_t failures, uint64_t p99_ms)
{
    veer_canary_window_t w = {requests, failures, p99_ms * 1000};
    return w;
}

/* Healthy numbers for one interval: canary 99.9%, 120 ms; stable 99.9%, 110 ms. */
static const veer_canary_window_t good_canary = {1000, 1, 120000};
static const veer_canary_window_t good_stable = {9000, 9, 110000};
static const veer_canary_window_t bad_canary = {1000, 50, 120000}; /* 95% */
static const veer_canary_window_t few_canary = {40, 0, 100000};    /* under min_requests */

static const veer_canary_inputs_t healthy = {3, 3, false};
static const veer_canary_inputs_t unhealthy = {3, 2, false};
static const veer_canary_inputs_t confirmed = {3, 3, true};

/* A fake clock: each step is one interval later. */
typedef struct clock_s {
    uint64_t now;
} fake_clock_t;

static veer_canary_update_t step(veer_canary_run_t *run, fake_clock_t *clock, const veer_canary_window_t *c,
                                 const veer_canary_inputs_t *in)
{
    veer_canary_update_t up;
    clock->now += INTERVAL;
    veer_canary_tick(run, c, &good_stable, in, clock->now, &up);
    return up;
}

/* n intervals in a row with the same canary window and inputs. */
static void steps(veer_canary_run_t *run, fake_clock_t *clock, int n, const veer_canary_window_t *c,
                  const veer_canary_inputs_t *in)
{
    for (int i = 0; i < n; i++)
        step(run, clock, c, in);
}

static veer_canary_update_t start(veer_canary_run_t *run, const veer_canary_policy_t *p, fake_clock_t *clock,
                                  const veer_canary_inputs_t *in)
{
    veer_canary_update_t up;
    char err[256] = "";
    int rc = veer_canary_start(run, p, in, clock->now, &up, err, sizeof err);
    CHECK(rc == VEER_CANARY_OK);
    if (rc)
        fprintf(stderr, "    start: %s\n", err);
    return up;
}

static const veer_canary_event_t *last_event(const veer_canary_run_t *run)
{
    size_t n = veer_canary_event_count(run);
    return n ? veer_canary_event_at(run, n - 1) : NULL;
}

static bool last_kind_is(const veer_canary_run_t *run, veer_canary_event_kind_t kind)
{
    const veer_canary_event_t *ev = last_event(run);
    return ev && ev->kind == kind;
}

/* ---- statistics ------------------------------------------------------------------ */

static void test_normal_quantile(void)
{
    static const struct {
        double p, x;
    } known[] = {
        {0.5, 0.0},
        {0.95, 1.6448536269514715},
        {0.975, 1.9599639845400536},
        {0.99, 2.3263478740408408},
        {0.999, 3.090232306167813},
        {0.9999, 3.7190164854557084},
        {0.01, -2.3263478740408408},
        {0.02425, -1.9729610513118845}, /* Acklam's region boundary */
        {0.8413447460685429, 1.0},      /* Phi(1) */
        {1e-10, -6.361340902404056},
        {1e-300, -37.0470962993612},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        double x = veer_canary_normal_quantile(known[i].p);
        CHECK_NEAR(x, known[i].x, 1e-12 * (1 + fabs(known[i].x)));
        if (fabs(x - known[i].x) > 1e-12 * (1 + fabs(known[i].x)))
            fprintf(stderr, "    quantile(%g) = %.17g, expected %.17g\n", known[i].p, x, known[i].x);
    }
    /* Phi(quantile(p)) == p and symmetry over the whole range. */
    double worst = 0;
    for (double p = 1e-12; p < 1.0; p = p < 0.01 ? p * 3.0 : p + 0.0137) {
        double x = veer_canary_normal_quantile(p);
        double back = 0.5 * erfc(-x / sqrt(2.0));
        double rel = fabs(back - p) / p;
        worst = rel > worst ? rel : worst;
        double upper = 1.0 - p, lower = 1.0 - upper; /* an exactly symmetric pair */
        CHECK_NEAR(veer_canary_normal_quantile(lower), -veer_canary_normal_quantile(upper), 1e-12);
    }
    CHECK(worst < 1e-12);
    CHECK(isinf(veer_canary_normal_quantile(0.0)) && veer_canary_normal_quantile(0.0) < 0);
    CHECK(isinf(veer_canary_normal_quantile(1.0)) && veer_canary_normal_quantile(1.0) > 0);
    CHECK(isnan(veer_canary_normal_quantile(-0.1)));
    CHECK(isnan(veer_canary_normal_quantile(1.1)));
    CHECK(isnan(veer_canary_normal_quantile(NAN)));
}

static void test_two_proportion_z(void)
{
    CHECK_NEAR(veer_canary_two_proportion_z(40, 2000, 2, 2000), 5.894555377934755, 1e-9);
    CHECK_NEAR(veer_canary_two_proportion_z(5, 1000, 4, 1000), 0.33408587411304835, 1e-9);
    CHECK_NEAR(veer_canary_two_proportion_z(1, 200, 0, 200), 1.0012523486435176, 1e-9);
    CHECK(veer_canary_two_proportion_z(2, 2000, 40, 2000) < -5.0); /* canary better: negative */
    CHECK(veer_canary_two_proportion_z(0, 100, 0, 100) == 0.0);     /* nothing failed anywhere */
    CHECK(veer_canary_two_proportion_z(100, 100, 100, 100) == 0.0); /* everything failed everywhere */
    CHECK(veer_canary_two_proportion_z(5, 0, 1, 100) == 0.0);
    CHECK(veer_canary_two_proportion_z(5, 100, 1, 0) == 0.0);
    /* more failures than requests (a bad input) is clamped, not a NaN */
    CHECK(isfinite(veer_canary_two_proportion_z(500, 100, 1, 100)));
}

/* Exact values from Python's fractions and math.comb. */
static void test_exact_tests(void)
{
    CHECK_NEAR(veer_canary_binomial_tail(2, 20, 0.01), 0.01685933763565178, 1e-12);
    CHECK_NEAR(veer_canary_binomial_tail(4, 80, 0.01), 0.008659188892860718, 1e-12);
    CHECK_NEAR(veer_canary_binomial_tail(25, 1000, 0.01), 4.202920844836743e-05, 1e-14);
    CHECK(veer_canary_binomial_tail(0, 100, 0.01) == 1.0);
    CHECK(veer_canary_binomial_tail(1, 100, 0.01) == 1.0); /* at the mean: no evidence */
    CHECK(veer_canary_binomial_tail(101, 100, 0.01) == 0.0);
    CHECK(veer_canary_binomial_tail(1, 100, 0.0) == 0.0); /* success_rate_min 100: any failure */
    CHECK(veer_canary_binomial_tail(100, 100, 1.0) == 1.0); /* success_rate_min 0: never */
    /* large windows stay finite and quick: 12,000 failures in a million at 1% */
    double big = veer_canary_binomial_tail(12000, 1000000, 0.01);
    CHECK(big >= 0.0 && big < 1e-60);
    CHECK(veer_canary_binomial_tail(10050, 1000000, 0.01) > 0.3);

    /* the small-count case the z-test gets wrong: 1 of 20 against 0 of 180
     * is z = 3.0, but exactly p = 0.1 (the one failure fell on the canary's
     * tenth of the requests) */
    CHECK_NEAR(veer_canary_fisher_tail(1, 20, 0, 180), 0.1, 1e-12);
    CHECK(veer_canary_two_proportion_z(1, 20, 0, 180) > 2.9);
    CHECK_NEAR(veer_canary_fisher_tail(3, 4, 1, 4), 0.24285714285714285, 1e-12); /* the lady tasting tea */
    CHECK_NEAR(veer_canary_fisher_tail(40, 2000, 2, 2000), 1.7202214358931885e-10, 1e-15);
    CHECK_NEAR(veer_canary_fisher_tail(5, 80, 0, 120), 0.00948080989914523, 1e-12);
    CHECK(veer_canary_fisher_tail(2, 2000, 40, 2000) == 1.0); /* canary better */
    CHECK(veer_canary_fisher_tail(0, 100, 0, 100) == 1.0);
    CHECK(veer_canary_fisher_tail(5, 0, 1, 100) == 1.0);
    CHECK(veer_canary_fisher_tail(500, 100, 1, 100) <= 1.0); /* clamped, not a NaN */
    double all = veer_canary_fisher_tail(100000, 100000, 0, 100000);
    CHECK(all >= 0.0 && all < 1e-100);
}

static void test_analysis_limits(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    veer_canary_analysis_t a;
    veer_canary_window_t c = win(1000, 5, 120), s = win(9000, 45, 110);

    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS && a.reasons == 0);
    CHECK(a.at_ms == T0);
    CHECK_NEAR(a.canary_success, 99.5, 1e-9);
    CHECK_NEAR(a.stable_success, 99.5, 1e-9);
    CHECK(a.compared);
    CHECK_NEAR(a.z_critical, 2.3263478740408408, 1e-12);
    CHECK_CONTAINS(a.detail, "passed: success rate 99.50% (stable 99.50%), p99 120.0ms (stable 110.0ms)");

    /* 98.9% < 99%, but 11 failures in 1000 happen 42% of the time at
     * exactly 99%: held, the window goes on */
    c = win(1000, 11, 120);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_INCONCLUSIVE && a.reasons == VEER_CANARY_R_HOLD);
    CHECK_NEAR(a.success_p, 0.4169591966989018, 1e-9);
    CHECK_CONTAINS(a.detail, "holding: success rate 98.90% < 99.00% but not significantly (p 0.42, 1000 requests over 1 interval)");
    /* ... until it spans HOLD_MAX intervals: still no evidence, it passes */
    veer_canary_analyse_window(&p, &c, &s, VEER_CANARY_HOLD_MAX - 1, T0, &a);
    CHECK(a.verdict == VEER_CANARY_INCONCLUSIVE && a.intervals == VEER_CANARY_HOLD_MAX - 1);
    veer_canary_analyse_window(&p, &c, &s, VEER_CANARY_HOLD_MAX, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS && a.reasons == 0);
    CHECK_CONTAINS(a.detail, "passed: success rate 98.90% < 99.00% but not significantly (p 0.42) over 10 intervals, "
                   "1000 requests");
    /* a P99 over the limit still fails it */
    c = win(1000, 11, 612);
    veer_canary_analyse_window(&p, &c, &s, VEER_CANARY_HOLD_MAX, T0, &a);
    CHECK(a.verdict == VEER_CANARY_FAIL && (a.reasons & VEER_CANARY_R_P99) && !(a.reasons & VEER_CANARY_R_HOLD));
    /* 97.5%: significant (p 4.2e-5 < 0.01), fails at once */
    c = win(1000, 25, 120);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_FAIL && (a.reasons & VEER_CANARY_R_SUCCESS_RATE));
    CHECK_NEAR(a.success_p, 4.202920844836743e-05, 1e-12);
    CHECK_CONTAINS(a.detail, "success rate 97.50% < 99.00% (p 4.2e-05)");

    c = win(1000, 0, 612);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_FAIL && a.reasons == (VEER_CANARY_R_P99 | VEER_CANARY_R_WORSE_P99));
    CHECK_CONTAINS(a.detail, "p99 612.0ms > 500.0ms");

    c = win(99, 0, 100); /* under min_requests 100 */
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_INCONCLUSIVE && a.reasons == VEER_CANARY_R_TOO_FEW);
    CHECK_CONTAINS(a.detail, "the canary had 99 requests, 100 needed");
    c = win(100, 0, 100);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS);

    p.min_requests = 0; /* even without a minimum, no request is no evidence */
    c = win(0, 0, 0);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_INCONCLUSIVE && a.canary_success == -1.0);
    c = win(1, 0, 10);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS);
}

/* compare_to_stable: significance, not just a lower number. */
static void test_compare_to_stable(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    veer_canary_analysis_t a;
    p.success_rate_min = 95.0; /* so that only the comparison can fail */

    /* 98% vs 99.9% over 2000 requests each: z = 5.89 > 2.33 */
    veer_canary_window_t c = win(2000, 40, 100), s = win(2000, 2, 100);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_FAIL);
    CHECK(a.reasons == VEER_CANARY_R_WORSE_SUCCESS);
    CHECK_NEAR(a.z, 5.894555377934755, 1e-9);
    CHECK_NEAR(a.compare_p, 1.7202214358931885e-10, 1e-15);
    CHECK_CONTAINS(a.detail, "success rate 98.00% significantly below stable's 99.90% (p 1.7e-10)");

    /* the same without compare_to_stable passes on the absolute limit */
    p.compare_to_stable = false;
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS && !a.compared && a.z == 0.0);
    p.compare_to_stable = true;

    /* 99.5% vs 99.6% (1000 each: 5 vs 4 failures): noise, passes */
    c = win(1000, 5, 100);
    s = win(1000, 4, 100);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS && a.compared);
    CHECK_NEAR(a.z, 0.33408587411304835, 1e-9);

    /* 200 each cannot show 99.6%; the nearest, 99.5% vs 100% (1 vs 0), passes too */
    c = win(200, 1, 100);
    s = win(200, 0, 100);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS && a.z < a.z_critical);

    /* a lower confidence lowers the bar for failing: 6 vs 2 of 1000 has p 0.144 */
    p.confidence = 0.8;
    c = win(1000, 6, 100);
    s = win(1000, 2, 100);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_FAIL && a.reasons == VEER_CANARY_R_WORSE_SUCCESS);
    p.confidence = 0.99;
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS);

    /* stable with fewer requests than min_requests: not compared */
    c = win(2000, 40, 100);
    s = win(99, 0, 10);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS && !a.compared);
}

static void test_p99_ratio_and_floor(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE); /* p99_max 500 ms: floor 125 ms */
    veer_canary_analysis_t a;
    veer_canary_window_t s = win(5000, 0, 100);

    veer_canary_window_t c = win(1000, 0, 160); /* 1.6x, above the floor */
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_FAIL && a.reasons == VEER_CANARY_R_WORSE_P99);
    CHECK_NEAR(a.p99_ratio, 1.6, 1e-12);
    CHECK_CONTAINS(a.detail, "p99 160.0ms is 1.60x stable's 100.0ms (max 1.50x)");

    c = win(1000, 0, 150); /* exactly 1.5x: passes */
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS);

    s = win(5000, 0, 40);
    c = win(1000, 0, 124); /* 3.1x, but under p99_max/4 */
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS);
    CHECK_NEAR(a.p99_ratio, 3.1, 1e-12);
    c = win(1000, 0, 125); /* at the floor, the ratio counts */
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_FAIL && a.reasons == VEER_CANARY_R_WORSE_P99);

    p.p99_ratio_max = 4.0;
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS);
    p.p99_ratio_max = 1.5;

    s = win(5000, 0, 0); /* stable's P99 unknown (0): no ratio */
    c = win(1000, 0, 300);
    veer_canary_analyse(&p, &c, &s, T0, &a);
    CHECK(a.verdict == VEER_CANARY_PASS && a.p99_ratio == 0.0);
}

/* ---- progressive ------------------------------------------------------------------ */

static void test_progressive_healthy(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    CHECK(!veer_canary_active(&run) && veer_canary_due_ms(&run) == 0);

    veer_canary_update_t up = start(&run, &p, &clock, NULL);
    CHECK(run.phase == VEER_CANARY_PROGRESSING && run.stage == VEER_CANARY_STAGE_ANALYSIS);
    CHECK(up.weights_changed && up.canary_weight == 10 && up.stable_weight == 90);
    CHECK_STR(up.stable, "blue");
    CHECK_STR(up.canary, "green");
    CHECK(up.phase_changed && up.events == 1 && !up.mirror && !up.ab_match);
    CHECK(veer_canary_active(&run) && veer_canary_due_ms(&run) == T0 + INTERVAL);
    CHECK(last_kind_is(&run, VEER_CANARY_EV_STARTED));

    /* before the interval is over nothing happens and the window is not used */
    veer_canary_tick(&run, &good_canary, &good_stable, NULL, T0 + INTERVAL - 1, &up);
    CHECK(!up.analysed && !up.weights_changed && up.events == 0 && run.weight == 10);

    uint32_t expected[] = {20, 30, 40, 50};
    for (size_t i = 0; i < 4; i++) {
        up = step(&run, &clock, &good_canary, NULL);
        CHECK(up.analysed && up.weights_changed && up.canary_weight == expected[i]);
        CHECK(up.stable_weight == 100 - expected[i] && !up.phase_changed && !up.stable_changed);
        CHECK(last_kind_is(&run, VEER_CANARY_EV_ADVANCED) && last_event(&run)->has_analysis);
    }
    CHECK(run.has_analysis && run.last_analysis.verdict == VEER_CANARY_PASS && run.analyses == 4);

    up = step(&run, &clock, &good_canary, NULL); /* passes at max_weight: promotion */
    CHECK(run.phase == VEER_CANARY_SUCCEEDED && run.stage == VEER_CANARY_STAGE_NONE);
    CHECK(up.weights_changed && up.canary_weight == 100 && up.stable_weight == 0);
    CHECK(up.stable_changed);
    CHECK_STR(up.new_stable, "green");
    CHECK(up.phase_changed && up.events == 2);
    CHECK(!veer_canary_active(&run) && veer_canary_due_ms(&run) == 0);

    veer_canary_event_kind_t kinds[] = {VEER_CANARY_EV_STARTED,  VEER_CANARY_EV_ADVANCED,  VEER_CANARY_EV_ADVANCED,
                                        VEER_CANARY_EV_ADVANCED, VEER_CANARY_EV_ADVANCED,  VEER_CANARY_EV_PROMOTING,
                                        VEER_CANARY_EV_SUCCEEDED};
    CHECK(veer_canary_event_count(&run) == 7);
    for (size_t i = 0; i < 7 && i < veer_canary_event_count(&run); i++) {
        const veer_canary_event_t *ev = veer_canary_event_at(&run, i);
        CHECK(ev->kind == kinds[i] && ev->seq == i + 1);
    }
    CHECK(veer_canary_event_at(&run, 7) == NULL);
    CHECK_STR(veer_canary_event_name(veer_canary_event_at(&run, 5)->kind), "promoting");
    CHECK(veer_canary_event_at(&run, 5)->phase == VEER_CANARY_PROMOTING);
    CHECK_CONTAINS(last_event(&run)->reason, "green serves 100% and is the stable cluster now");

    /* a finished run stays finished */
    up = step(&run, &clock, &bad_canary, NULL);
    CHECK(!up.analysed && !up.weights_changed && run.phase == VEER_CANARY_SUCCEEDED && run.weight == 100);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

static void run_weights(veer_canary_policy_t *p, const uint32_t *expected, size_t count)
{
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    veer_canary_update_t up = start(&run, p, &clock, NULL);
    CHECK(up.canary_weight == expected[0]);
    for (size_t i = 1; i < count; i++) {
        up = step(&run, &clock, &good_canary, NULL);
        CHECK(run.phase == VEER_CANARY_PROGRESSING && up.canary_weight == expected[i]);
        if (up.canary_weight != expected[i])
            fprintf(stderr, "    step %zu: weight %u, expected %u\n", i, up.canary_weight, expected[i]);
    }
    up = step(&run, &clock, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED && up.canary_weight == 100 && up.stable_changed);
    veer_canary_run_free(&run);
}

static void test_step_weights_and_overshoot(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    p.step_weights[0] = 5;
    p.step_weights[1] = 25;
    p.step_weights[2] = 60;
    p.step_weight_count = 3;
    p.max_weight = 60;
    run_weights(&p, (const uint32_t[]){5, 25, 60}, 3);

    /* step 20 up to 50: 20, 40, then 50, never 60 */
    p.step_weight_count = 0;
    p.step_weight = 20;
    p.max_weight = 50;
    run_weights(&p, (const uint32_t[]){20, 40, 50}, 3);

    /* a single step straight to max_weight */
    p.step_weight = 50;
    run_weights(&p, (const uint32_t[]){50}, 1);
    veer_canary_policy_clear(&p);
}

static void test_rollback_at_threshold(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    p.threshold = 3;
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    start(&run, &p, &clock, NULL);
    step(&run, &clock, &good_canary, NULL); /* 20 */
    step(&run, &clock, &good_canary, NULL); /* 30 */

    veer_canary_update_t up = step(&run, &clock, &bad_canary, NULL);
    CHECK(run.phase == VEER_CANARY_PROGRESSING && run.failed_checks == 1);
    CHECK(!up.weights_changed && up.canary_weight == 30); /* a failure below threshold holds */
    CHECK(last_kind_is(&run, VEER_CANARY_EV_CHECK_FAILED));
    CHECK_CONTAINS(last_event(&run)->reason, "check failed (1 of 3): success rate 95.00% < 99.00%");
    up = step(&run, &clock, &bad_canary, NULL);
    CHECK(run.failed_checks == 2 && run.weight == 30 && run.phase == VEER_CANARY_PROGRESSING);

    up = step(&run, &clock, &bad_canary, NULL);
    CHECK(run.phase == VEER_CANARY_ROLLED_BACK && run.failed_checks == 3);
    CHECK(up.weights_changed && up.canary_weight == 0 && up.stable_weight == 100); /* at once */
    CHECK(up.phase_changed && !up.stable_changed);
    CHECK(last_kind_is(&run, VEER_CANARY_EV_ROLLED_BACK));
    CHECK(last_event(&run)->has_analysis && last_event(&run)->analysis.verdict == VEER_CANARY_FAIL);
    CHECK_CONTAINS(run.reason, "3 failed checks reached threshold 3");
    CHECK_CONTAINS(run.reason, "all traffic back to blue");

    /* and it stays rolled back, whatever comes */
    for (int i = 0; i < 3; i++) {
        up = step(&run, &clock, &good_canary, &healthy);
        CHECK(!up.analysed && !up.weights_changed && run.phase == VEER_CANARY_ROLLED_BACK && run.weight == 0);
    }
    /* a new run may start */
    up = start(&run, &p, &clock, NULL);
    CHECK(run.phase == VEER_CANARY_PROGRESSING && run.failed_checks == 0 && up.canary_weight == 10);
    CHECK(veer_canary_event_count(&run) == 1);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

/* threshold counts failed checks over the whole run (Flagger's
 * failedChecks), not in a row: passes in between do not reset it. */
static void test_threshold_counts_total(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    p.threshold = 2;
    p.max_weight = 100;
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};

    /* one failure, then passes: no rollback */
    start(&run, &p, &clock, NULL);
    step(&run, &clock, &bad_canary, NULL);
    CHECK(run.failed_checks == 1 && run.weight == 10);
    steps(&run, &clock, 9, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_PROGRESSING && run.weight == 100 && run.failed_checks == 1);
    step(&run, &clock, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED);

    /* fail, pass, pass, fail: two in total roll back */
    start(&run, &p, &clock, NULL);
    step(&run, &clock, &bad_canary, NULL);
    step(&run, &clock, &good_canary, NULL);
    step(&run, &clock, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_PROGRESSING && run.weight == 30 && run.failed_checks == 1);
    veer_canary_update_t up = step(&run, &clock, &bad_canary, NULL);
    CHECK(run.phase == VEER_CANARY_ROLLED_BACK && up.canary_weight == 0 && up.weights_changed);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

/* A window below success_rate_min but not significantly is held: the weight
 * stays, nothing fails, and the caller keeps the window going (keep_window)
 * so that the next analysis judges both intervals' requests together. */
static void test_held_window_goes_on(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    p.threshold = 1;
    p.compare_to_stable = false; /* 1.5% against good_stable's 0.1% would be significant */
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    start(&run, &p, &clock, NULL);

    veer_canary_window_t held = win(200, 3, 100); /* 98.5%: p 0.32 at 99% */
    veer_canary_update_t up = step(&run, &clock, &held, NULL);
    CHECK(up.analysed && up.keep_window && !up.weights_changed && up.events == 0);
    CHECK(run.weight == 10 && run.failed_checks == 0 && run.inconclusive_streak == 0 && run.window_intervals == 2);
    CHECK(run.last_analysis.verdict == VEER_CANARY_INCONCLUSIVE && run.last_analysis.reasons == VEER_CANARY_R_HOLD);
    veer_canary_window_t both = win(400, 3, 100); /* the caller's window now spans two intervals: 99.25% */
    up = step(&run, &clock, &both, NULL);
    CHECK(up.analysed && !up.keep_window && up.weights_changed && run.weight == 20 && run.window_intervals == 0);
    CHECK(run.last_analysis.verdict == VEER_CANARY_PASS && run.last_analysis.intervals == 2);

    /* too few requests extend the window too, and count towards a pause */
    up = step(&run, &clock, &few_canary, NULL);
    CHECK(up.keep_window && run.window_intervals == 2 && run.inconclusive_streak == 1);
    up = step(&run, &clock, &held, NULL); /* enough now: held, which resets the streak */
    CHECK(up.keep_window && run.window_intervals == 3 && run.inconclusive_streak == 0);

    /* a window that never shows a significant shortfall passes at HOLD_MAX */
    for (uint32_t i = 3; i < VEER_CANARY_HOLD_MAX; i++) {
        up = step(&run, &clock, &held, NULL);
        CHECK(up.keep_window && run.phase == VEER_CANARY_PROGRESSING && run.failed_checks == 0);
    }
    CHECK(run.window_intervals == VEER_CANARY_HOLD_MAX && run.weight == 20);
    up = step(&run, &clock, &held, NULL);
    CHECK(!up.keep_window && run.phase == VEER_CANARY_PROGRESSING && run.weight == 30 && run.failed_checks == 0);
    CHECK(run.last_analysis.verdict == VEER_CANARY_PASS && run.last_analysis.intervals == VEER_CANARY_HOLD_MAX);
    CHECK(run.window_intervals == 0);

    /* significant at once: 8 of 200 (p 1.1e-4) fails without holding */
    veer_canary_run_free(&run);
    veer_canary_run_init(&run);
    start(&run, &p, &clock, NULL);
    veer_canary_window_t bad = win(200, 8, 100);
    up = step(&run, &clock, &bad, NULL);
    CHECK(!up.keep_window && run.phase == VEER_CANARY_ROLLED_BACK);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

static void test_inconclusive_holds_then_pauses(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    p.threshold = 1; /* an inconclusive analysis must not count as failed */
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    start(&run, &p, &clock, NULL);
    step(&run, &clock, &good_canary, NULL); /* 20 */

    veer_canary_update_t up = step(&run, &clock, &few_canary, NULL);
    CHECK(up.analysed && !up.weights_changed && run.weight == 20 && run.failed_checks == 0);
    CHECK(run.inconclusive_streak == 1 && run.last_analysis.verdict == VEER_CANARY_INCONCLUSIVE);
    CHECK(up.events == 0); /* held: no transition */
    step(&run, &clock, &few_canary, NULL);
    CHECK(run.phase == VEER_CANARY_PROGRESSING && run.inconclusive_streak == 2 && run.weight == 20);
    step(&run, &clock, &good_canary, NULL); /* a verdict resets the streak */
    CHECK(run.inconclusive_streak == 0 && run.weight == 30);

    step(&run, &clock, &few_canary, NULL);
    step(&run, &clock, &few_canary, NULL);
    up = step(&run, &clock, &few_canary, NULL);
    CHECK(run.phase == VEER_CANARY_PAUSED && run.paused_from == VEER_CANARY_PROGRESSING);
    CHECK(up.phase_changed && !up.weights_changed && up.canary_weight == 30);
    CHECK(last_kind_is(&run, VEER_CANARY_EV_PAUSED));
    CHECK_CONTAINS(run.reason, "3 inconclusive analyses in a row (inconclusive: the canary had 40 requests, 100 needed)");
    CHECK(veer_canary_due_ms(&run) == 0 && veer_canary_active(&run));

    /* paused: ticks change nothing, even with bad numbers */
    up = step(&run, &clock, &bad_canary, NULL);
    CHECK(!up.analysed && run.phase == VEER_CANARY_PAUSED && run.failed_checks == 0);

    char err[128];
    CHECK(veer_canary_resume(&run, clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.phase == VEER_CANARY_PROGRESSING && run.weight == 30 && run.inconclusive_streak == 0);
    CHECK(veer_canary_due_ms(&run) == clock.now + INTERVAL);
    step(&run, &clock, &good_canary, NULL);
    CHECK(run.weight == 40);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

/* ---- blue/green, A/B, mirror ------------------------------------------------------- */

static void test_blue_green(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_BLUE_GREEN);
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    veer_canary_window_t no_stable = {0, 0, 0};

    /* the gate: 2 of 3 endpoints healthy, no traffic moves */
    veer_canary_update_t up = start(&run, &p, &clock, &unhealthy);
    CHECK(run.stage == VEER_CANARY_STAGE_GATE && up.canary_weight == 0 && up.stable_weight == 100);
    CHECK_CONTAINS(run.reason, "waiting for every endpoint of green to be healthy (2 of 3)");
    up = step(&run, &clock, &good_canary, &unhealthy);
    CHECK(run.stage == VEER_CANARY_STAGE_GATE && !up.weights_changed);
    up = step(&run, &clock, &good_canary, &healthy);
    CHECK(run.stage == VEER_CANARY_STAGE_ANALYSIS && up.weights_changed);
    CHECK(up.canary_weight == 100 && up.stable_weight == 0); /* at once */
    CHECK(last_kind_is(&run, VEER_CANARY_EV_SWITCHED));

    /* iterations analyses (stable has no traffic: no comparison), then promotion */
    for (int i = 0; i < 2; i++) {
        clock.now += INTERVAL;
        veer_canary_tick(&run, &good_canary, &no_stable, NULL, clock.now, &up);
        CHECK(run.phase == VEER_CANARY_PROGRESSING && run.passed == (uint32_t)i + 1 && !up.weights_changed);
        CHECK(!run.last_analysis.compared && last_kind_is(&run, VEER_CANARY_EV_ITERATION));
    }
    clock.now += INTERVAL;
    veer_canary_tick(&run, &good_canary, &no_stable, NULL, clock.now, &up);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED && up.stable_changed && up.canary_weight == 100);
    CHECK_STR(up.new_stable, "green");

    /* healthy at start: switched at once; failures switch back at threshold */
    p.threshold = 2;
    up = start(&run, &p, &clock, &healthy);
    CHECK(run.stage == VEER_CANARY_STAGE_ANALYSIS && up.canary_weight == 100);
    up = step(&run, &clock, &bad_canary, NULL);
    CHECK(run.phase == VEER_CANARY_PROGRESSING && up.canary_weight == 100 && run.failed_checks == 1);
    up = step(&run, &clock, &bad_canary, NULL);
    CHECK(run.phase == VEER_CANARY_ROLLED_BACK && up.weights_changed);
    CHECK(up.canary_weight == 0 && up.stable_weight == 100);

    /* a gate that never opens pauses after max_inconclusive intervals */
    up = start(&run, &p, &clock, NULL);
    CHECK(run.stage == VEER_CANARY_STAGE_GATE);
    step(&run, &clock, &good_canary, &unhealthy);
    step(&run, &clock, &good_canary, &unhealthy);
    CHECK(run.phase == VEER_CANARY_PROGRESSING);
    up = step(&run, &clock, &good_canary, &unhealthy);
    CHECK(run.phase == VEER_CANARY_PAUSED && up.canary_weight == 0);
    CHECK_CONTAINS(run.reason, "green still has 2 of 3 endpoints healthy after 3 intervals");
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

static void test_ab(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_AB);
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};

    veer_canary_update_t up = start(&run, &p, &clock, NULL);
    CHECK(up.ab_match && up.ab_match_changed && up.canary_weight == 0 && up.stable_weight == 100);
    CHECK_CONTAINS(run.reason, "requests with header x-canary=1 go to green for 3 passing analyses");
    up = step(&run, &clock, &good_canary, NULL);
    CHECK(up.ab_match && !up.ab_match_changed && run.passed == 1);
    up = step(&run, &clock, &few_canary, NULL); /* inconclusive: not counted */
    CHECK(run.passed == 1);
    up = step(&run, &clock, &bad_canary, NULL); /* failed: not counted, held */
    CHECK(run.passed == 1 && run.failed_checks == 1 && up.ab_match);
    step(&run, &clock, &good_canary, NULL);
    up = step(&run, &clock, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED);
    CHECK(up.ab_match_changed && !up.ab_match && up.canary_weight == 100 && up.stable_changed);

    /* promotion in steps from 0 once the match is off */
    p.promotion_step_weight = 50;
    start(&run, &p, &clock, NULL);
    for (int i = 0; i < 3; i++)
        up = step(&run, &clock, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_PROMOTING && run.stage == VEER_CANARY_STAGE_SHIFT);
    CHECK(up.ab_match_changed && !up.ab_match && up.canary_weight == 50);
    up = step(&run, &clock, NULL, NULL);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED && up.canary_weight == 100);

    /* rollback turns the match off */
    start(&run, &p, &clock, NULL);
    char err[128];
    CHECK(veer_canary_abort(&run, clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(up.ab_match_changed && !up.ab_match && up.canary_weight == 0);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

static void test_mirror_phase(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    p.mirror_iterations = 2;
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};

    veer_canary_update_t up = start(&run, &p, &clock, NULL);
    CHECK(run.stage == VEER_CANARY_STAGE_MIRROR && up.mirror && up.mirror_changed);
    CHECK(up.canary_weight == 0 && up.weights_changed && up.stable_weight == 100);
    up = step(&run, &clock, &few_canary, NULL); /* inconclusive holds the mirror */
    CHECK(run.stage == VEER_CANARY_STAGE_MIRROR && run.passed == 0 && up.canary_weight == 0);
    up = step(&run, &clock, &good_canary, NULL);
    CHECK(run.stage == VEER_CANARY_STAGE_MIRROR && run.passed == 1 && up.canary_weight == 0 && up.mirror);
    CHECK(last_kind_is(&run, VEER_CANARY_EV_ITERATION));
    up = step(&run, &clock, &good_canary, NULL);
    CHECK(run.stage == VEER_CANARY_STAGE_ANALYSIS && up.mirror_changed && !up.mirror);
    CHECK(up.weights_changed && up.canary_weight == 10);
    CHECK(last_kind_is(&run, VEER_CANARY_EV_LIVE));
    steps(&run, &clock, 5, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED);

    /* failures while mirrored count and roll back before any user saw it */
    p.threshold = 1;
    start(&run, &p, &clock, NULL);
    up = step(&run, &clock, &bad_canary, NULL);
    CHECK(run.phase == VEER_CANARY_ROLLED_BACK && up.mirror_changed && !up.mirror && up.canary_weight == 0);
    CHECK(!up.weights_changed);

    /* blue_green after a mirror: the gate comes next */
    veer_canary_policy_t bg = make_policy(VEER_CANARY_BLUE_GREEN);
    bg.mirror_iterations = 1;
    start(&run, &bg, &clock, &healthy);
    CHECK(run.stage == VEER_CANARY_STAGE_MIRROR && run.weight == 0);
    up = step(&run, &clock, &good_canary, &healthy);
    CHECK(run.stage == VEER_CANARY_STAGE_ANALYSIS && up.canary_weight == 100 && !up.mirror);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
    veer_canary_policy_clear(&bg);
}

/* ---- promotion ---------------------------------------------------------------------- */

static void test_promotion_steps(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    p.promotion_step_weight = 20;
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    start(&run, &p, &clock, NULL);
    steps(&run, &clock, 4, &good_canary, NULL);
    CHECK(run.weight == 50);
    veer_canary_update_t up = step(&run, &clock, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_PROMOTING && run.stage == VEER_CANARY_STAGE_SHIFT);
    CHECK(up.phase_changed && up.canary_weight == 70 && !up.stable_changed);
    up = step(&run, &clock, &bad_canary, NULL); /* promotion steps are not analysed */
    CHECK(run.phase == VEER_CANARY_PROMOTING && up.canary_weight == 90 && run.failed_checks == 0);
    CHECK(last_kind_is(&run, VEER_CANARY_EV_PROMOTION_STEP));
    up = step(&run, &clock, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED && up.canary_weight == 100 && up.stable_changed);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

static void test_confirm_promotion(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    p.webhook_confirm_promotion = xstrdup("http://cd.example/confirm");
    p.threshold = 2;
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    start(&run, &p, &clock, NULL);
    steps(&run, &clock, 4, &good_canary, NULL);
    veer_canary_update_t up = step(&run, &clock, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_PROMOTING && run.stage == VEER_CANARY_STAGE_CONFIRM);
    CHECK(up.ask_confirmation && up.phase_changed && up.canary_weight == 50 && !up.weights_changed);
    CHECK(last_kind_is(&run, VEER_CANARY_EV_AWAITING_CONFIRMATION));

    /* not confirmed: the weight holds, the question is asked again each interval */
    for (int i = 0; i < 3; i++) {
        up = step(&run, &clock, &good_canary, &healthy);
        CHECK(run.stage == VEER_CANARY_STAGE_CONFIRM && up.ask_confirmation && up.canary_weight == 50);
    }
    /* analysis goes on while waiting: a failure counts */
    up = step(&run, &clock, &bad_canary, &healthy);
    CHECK(run.failed_checks == 1 && run.stage == VEER_CANARY_STAGE_CONFIRM && up.ask_confirmation);
    up = step(&run, &clock, &good_canary, &confirmed);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED && up.canary_weight == 100 && up.stable_changed);
    CHECK(!up.ask_confirmation);

    /* a failure at threshold while waiting rolls back, even if confirmed */
    start(&run, &p, &clock, NULL);
    steps(&run, &clock, 5, &good_canary, NULL);
    step(&run, &clock, &bad_canary, NULL);
    up = step(&run, &clock, &bad_canary, &confirmed);
    CHECK(run.phase == VEER_CANARY_ROLLED_BACK && up.canary_weight == 0);

    /* the operator's promote skips the gate */
    start(&run, &p, &clock, NULL);
    steps(&run, &clock, 5, &good_canary, NULL);
    CHECK(run.stage == VEER_CANARY_STAGE_CONFIRM);
    char err[128];
    CHECK(veer_canary_promote(&run, clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED && up.stable_changed);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

/* ---- operator verbs ------------------------------------------------------------------ */

typedef int (*verb_fn)(veer_canary_run_t *, uint64_t, veer_canary_update_t *, char *, size_t);

static void expect_refused(veer_canary_run_t *run, verb_fn verb, const char *message, int line)
{
    char err[128] = "";
    veer_canary_update_t up;
    veer_canary_phase_t phase = run->phase;
    uint32_t weight = run->weight;
    int rc = verb(run, T0, &up, err, sizeof err);
    checks++;
    if (rc != VEER_CANARY_ESTATE || strcmp(err, message) != 0 || run->phase != phase || run->weight != weight ||
        up.weights_changed || up.events) {
        failures++;
        fprintf(stderr, "%s:%d: expected refusal \"%s\", got rc %d \"%s\"\n", __FILE__, line, message, rc, err);
    }
}

#define EXPECT_REFUSED(run, verb, message) expect_refused((run), (verb), (message), __LINE__)

static void test_verbs_in_every_phase(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    p.promotion_step_weight = 25;
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    veer_canary_update_t up;
    char err[128];

    /* idle */
    EXPECT_REFUSED(&run, veer_canary_pause, "no run in progress");
    EXPECT_REFUSED(&run, veer_canary_resume, "no run in progress");
    EXPECT_REFUSED(&run, veer_canary_promote, "no run in progress");
    EXPECT_REFUSED(&run, veer_canary_abort, "no run in progress");

    /* progressing */
    start(&run, &p, &clock, NULL);
    step(&run, &clock, &good_canary, NULL);
    CHECK(veer_canary_start(&run, &p, NULL, clock.now, &up, err, sizeof err) == VEER_CANARY_ESTATE);
    CHECK_STR(err, "a run is already in progress (phase progressing): abort it first");
    CHECK(run.weight == 20 && !up.weights_changed);
    EXPECT_REFUSED(&run, veer_canary_resume, "not paused (phase progressing)");

    /* paused: keeps the weight, refuses a second pause and ticks */
    CHECK(veer_canary_pause(&run, clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.phase == VEER_CANARY_PAUSED && !up.weights_changed && up.canary_weight == 20 && up.phase_changed);
    CHECK_CONTAINS(run.reason, "paused by the operator; weight holds at 20%");
    EXPECT_REFUSED(&run, veer_canary_pause, "already paused");
    clock.now += 10 * INTERVAL;
    veer_canary_tick(&run, &good_canary, &good_stable, NULL, clock.now, &up);
    CHECK(!up.analysed && run.weight == 20);
    CHECK(veer_canary_command(&run, "resume", clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.phase == VEER_CANARY_PROGRESSING && run.weight == 20 && !up.weights_changed);
    CHECK(last_kind_is(&run, VEER_CANARY_EV_RESUMED));
    /* the next analysis waits a full interval after resume */
    veer_canary_tick(&run, &good_canary, &good_stable, NULL, clock.now + INTERVAL - 1, &up);
    CHECK(!up.analysed);
    step(&run, &clock, &good_canary, NULL);
    CHECK(run.weight == 30);

    /* abort while paused */
    veer_canary_pause(&run, clock.now, &up, err, sizeof err);
    CHECK(veer_canary_abort(&run, clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.phase == VEER_CANARY_ROLLED_BACK && up.weights_changed && up.canary_weight == 0);
    CHECK_CONTAINS(run.reason, "aborted by the operator");
    EXPECT_REFUSED(&run, veer_canary_pause, "no run in progress (the last run was rolled back)");
    EXPECT_REFUSED(&run, veer_canary_resume, "no run in progress (the last run was rolled back)");
    EXPECT_REFUSED(&run, veer_canary_promote, "no run in progress (the last run was rolled back)");
    EXPECT_REFUSED(&run, veer_canary_abort, "no run in progress (the last run was rolled back)");

    /* promote while progressing: steps of 25 from 10 */
    start(&run, &p, &clock, NULL);
    CHECK(veer_canary_promote(&run, clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.phase == VEER_CANARY_PROMOTING && run.stage == VEER_CANARY_STAGE_SHIFT && up.canary_weight == 35);
    EXPECT_REFUSED(&run, veer_canary_promote, "already promoting");
    /* pause and resume in promoting */
    CHECK(veer_canary_pause(&run, clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.paused_from == VEER_CANARY_PROMOTING && up.canary_weight == 35);
    EXPECT_REFUSED(&run, veer_canary_promote, "already promoting");
    CHECK(veer_canary_resume(&run, clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.phase == VEER_CANARY_PROMOTING && up.canary_weight == 35);
    /* abort while promoting */
    CHECK(veer_canary_abort(&run, clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.phase == VEER_CANARY_ROLLED_BACK && up.canary_weight == 0 && up.stable_weight == 100);

    /* promote while paused in progressing */
    start(&run, &p, &clock, NULL);
    veer_canary_pause(&run, clock.now, &up, err, sizeof err);
    CHECK(veer_canary_command(&run, "promote", clock.now, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.phase == VEER_CANARY_PROMOTING && up.canary_weight == 35);
    steps(&run, &clock, 3, NULL, NULL);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED && run.weight == 100);
    EXPECT_REFUSED(&run, veer_canary_pause, "no run in progress (the last run succeeded)");
    EXPECT_REFUSED(&run, veer_canary_resume, "no run in progress (the last run succeeded)");
    EXPECT_REFUSED(&run, veer_canary_promote, "no run in progress (the last run succeeded)");
    EXPECT_REFUSED(&run, veer_canary_abort, "no run in progress (the last run succeeded)");

    CHECK(veer_canary_command(&run, "restart", clock.now, &up, err, sizeof err) == VEER_CANARY_EINVAL);
    CHECK_CONTAINS(err, "unknown canary command \"restart\"");
    CHECK(veer_canary_command(&run, NULL, clock.now, NULL, err, sizeof err) == VEER_CANARY_EINVAL);

    /* a bad policy is refused with its reason */
    veer_canary_policy_t bad = make_policy(VEER_CANARY_PROGRESSIVE);
    bad.step_weight = 60;
    CHECK(veer_canary_start(&run, &bad, NULL, clock.now, &up, err, sizeof err) == VEER_CANARY_EINVAL);
    CHECK_STR(err, "policy.step_weight: must be between 1 and max_weight");
    CHECK(run.phase == VEER_CANARY_SUCCEEDED);
    bad = make_policy(VEER_CANARY_PROGRESSIVE);
    snprintf(bad.canary, sizeof bad.canary, "blue");
    CHECK(veer_canary_start(&run, &bad, NULL, clock.now, &up, err, sizeof err) == VEER_CANARY_EINVAL);
    bad = make_policy(VEER_CANARY_PROGRESSIVE);
    bad.mode = VEER_CANARY_AB; /* without a match */
    CHECK(veer_canary_start(&run, &bad, NULL, clock.now, &up, err, sizeof err) == VEER_CANARY_EINVAL);
    CHECK_STR(err, "policy.match: required when mode is \"ab\"");
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

/* ---- history and JSON ------------------------------------------------------------------ */

static void test_history_bound(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_BLUE_GREEN);
    p.iterations = 100;
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    start(&run, &p, &clock, &healthy); /* event 1 */
    for (int i = 0; i < 79; i++)       /* events 2..80 */
        step(&run, &clock, &good_canary, NULL);
    CHECK(run.next_seq == 80);
    CHECK(veer_canary_event_count(&run) == VEER_CANARY_HISTORY);
    CHECK(run.events_dropped == 80 - VEER_CANARY_HISTORY);
    CHECK(veer_canary_event_at(&run, 0)->seq == 80 - VEER_CANARY_HISTORY + 1);
    CHECK(last_event(&run)->seq == 80);
    for (size_t i = 1; i < veer_canary_event_count(&run); i++)
        CHECK(veer_canary_event_at(&run, i)->seq == veer_canary_event_at(&run, i - 1)->seq + 1);
    cJSON *json = veer_canary_to_json(&run);
    CHECK(json && cJSON_GetArraySize(cJSON_GetObjectItem(json, "events")) == VEER_CANARY_HISTORY);
    CHECK(json && cJSON_GetObjectItem(json, "events_dropped")->valuedouble == 80 - VEER_CANARY_HISTORY);
    cJSON_Delete(json);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

/* to_json(restore(to_json(run))) == to_json(run) but for the next analysis time. */
static void expect_round_trip(const veer_canary_run_t *run, uint64_t restore_at, int line)
{
    cJSON *saved = veer_canary_to_json(run);
    char *text = saved ? cJSON_PrintUnformatted(saved) : NULL;
    cJSON *parsed = text ? cJSON_Parse(text) : NULL;
    veer_canary_run_t restored;
    veer_canary_run_init(&restored);
    char err[256] = "";
    veer_canary_update_t up;
    int rc = parsed ? veer_canary_restore(&restored, parsed, restore_at, &up, err, sizeof err) : -99;
    cJSON *again = veer_canary_to_json(&restored);
    checks++;
    bool same = false;
    if (rc == 0 && again) {
        cJSON_DeleteItemFromObject(saved, "next_analysis_ms");
        cJSON_DeleteItemFromObject(again, "next_analysis_ms");
        same = cJSON_Compare(saved, again, true);
    }
    if (!same) {
        failures++;
        char *a = again ? cJSON_PrintUnformatted(again) : NULL;
        fprintf(stderr, "%s:%d: round trip differs (rc %d %s)\n    saved:    %s\n    restored: %s\n", __FILE__,
                line, rc, err, text ? text : "(null)", a ? a : "(null)");
        free(a);
    }
    CHECK(restored.phase == run->phase && restored.stage == run->stage && restored.weight == run->weight);
    CHECK(restored.history_count == run->history_count && restored.next_seq == run->next_seq);
    CHECK(restored.has_analysis == run->has_analysis && restored.last_analysis.z == run->last_analysis.z);
    CHECK(restored.last_analysis.verdict == run->last_analysis.verdict &&
          restored.last_analysis.reasons == run->last_analysis.reasons &&
          strcmp(restored.last_analysis.detail, run->last_analysis.detail) == 0);
    if (veer_canary_due_ms(run))
        CHECK(veer_canary_due_ms(&restored) == restore_at + run->policy.interval_ms);
    else
        CHECK(restored.next_due_ms == run->next_due_ms);
    CHECK(up.weights_changed == veer_canary_active(run) && !up.phase_changed && up.canary_weight == run->weight);
    if (up.weights_changed != veer_canary_active(run) || up.phase_changed || up.canary_weight != run->weight)
        fprintf(stderr, "    restored at line %d: changed %d phase_changed %d weight %u\n", line, up.weights_changed,
                up.phase_changed, up.canary_weight);
    CHECK(up.mirror == run->mirror && up.ab_match == run->ab_match);
    free(text);
    cJSON_Delete(saved);
    cJSON_Delete(parsed);
    cJSON_Delete(again);
    veer_canary_run_free(&restored);
}

#define EXPECT_ROUND_TRIP(run, at) expect_round_trip((run), (at), __LINE__)

static void test_json_round_trip(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_AB);
    p.mirror_iterations = 1;
    p.promotion_step_weight = 30;
    p.webhook_confirm_promotion = xstrdup("http://cd/confirm");
    p.webhook_promoted = xstrdup("http://cd/promoted");
    p.webhook_phase_change[0] = xstrdup("http://cd/phase");
    p.webhook_phase_change[1] = xstrdup("https://audit/phase");
    p.webhook_phase_change_count = 2;
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};

    EXPECT_ROUND_TRIP(&run, T0); /* idle */
    start(&run, &p, &clock, NULL);
    EXPECT_ROUND_TRIP(&run, clock.now + 5); /* mirror */
    step(&run, &clock, &good_canary, NULL);
    step(&run, &clock, &bad_canary, NULL);
    step(&run, &clock, &few_canary, NULL);
    CHECK(run.ab_match && run.failed_checks == 1 && run.inconclusive_streak == 1);
    EXPECT_ROUND_TRIP(&run, clock.now + 12345); /* mid-run, ab, a failed check, inconclusive last */
    veer_canary_pause(&run, clock.now, NULL, NULL, 0);
    EXPECT_ROUND_TRIP(&run, clock.now + 1); /* paused */
    veer_canary_resume(&run, clock.now, NULL, NULL, 0);
    steps(&run, &clock, 3, &good_canary, NULL);
    CHECK(run.stage == VEER_CANARY_STAGE_CONFIRM);
    EXPECT_ROUND_TRIP(&run, clock.now); /* waiting for confirmation */
    step(&run, &clock, &good_canary, &confirmed);
    CHECK(run.stage == VEER_CANARY_STAGE_SHIFT && run.weight == 30);
    EXPECT_ROUND_TRIP(&run, clock.now); /* promotion steps */
    veer_canary_abort(&run, clock.now, NULL, NULL, 0);
    EXPECT_ROUND_TRIP(&run, clock.now); /* rolled back */

    veer_canary_policy_t prog = make_policy(VEER_CANARY_PROGRESSIVE);
    prog.step_weights[0] = 5;
    prog.step_weights[1] = 50;
    prog.step_weight_count = 2;
    start(&run, &prog, &clock, NULL);
    steps(&run, &clock, 3, &good_canary, NULL);
    CHECK(run.phase == VEER_CANARY_SUCCEEDED);
    EXPECT_ROUND_TRIP(&run, clock.now); /* succeeded */
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
    veer_canary_policy_clear(&prog);
}

/* A restarted process resumes the run at its weight and waits a full
 * interval; a rolled-back run stays rolled back. */
static void test_restart_resumes(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    start(&run, &p, &clock, NULL);
    step(&run, &clock, &good_canary, NULL);
    step(&run, &clock, &good_canary, NULL);
    CHECK(run.weight == 30);
    cJSON *saved = veer_canary_to_json(&run);
    veer_canary_run_free(&run);

    uint64_t restart = clock.now + 60000; /* a minute later */
    veer_canary_run_t again;
    veer_canary_run_init(&again);
    veer_canary_update_t up;
    char err[256] = "";
    CHECK(veer_canary_restore(&again, saved, restart, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(again.phase == VEER_CANARY_PROGRESSING && again.weight == 30);
    CHECK(up.weights_changed && up.canary_weight == 30 && up.stable_weight == 70 && !up.mirror);
    CHECK_STR(up.stable, "blue");
    veer_canary_tick(&again, &good_canary, &good_stable, NULL, restart + INTERVAL - 1, &up);
    CHECK(!up.analysed && again.weight == 30);
    veer_canary_tick(&again, &good_canary, &good_stable, NULL, restart + INTERVAL, &up);
    CHECK(up.analysed && again.weight == 40);
    clock.now = restart + INTERVAL;
    step(&again, &clock, &good_canary, NULL);
    step(&again, &clock, &good_canary, NULL);
    CHECK(again.phase == VEER_CANARY_SUCCEEDED);
    cJSON_Delete(saved);

    /* rolled back before the restart: stays so, and nothing is re-applied */
    p.threshold = 1;
    start(&again, &p, &clock, NULL);
    step(&again, &clock, &bad_canary, NULL);
    CHECK(again.phase == VEER_CANARY_ROLLED_BACK);
    saved = veer_canary_to_json(&again);
    CHECK(veer_canary_restore(&run, saved, restart + 99999, &up, err, sizeof err) == VEER_CANARY_OK);
    CHECK(run.phase == VEER_CANARY_ROLLED_BACK && run.weight == 0 && !up.weights_changed);
    veer_canary_tick(&run, &good_canary, &good_stable, NULL, restart + 10 * 99999, &up);
    CHECK(!up.analysed && run.phase == VEER_CANARY_ROLLED_BACK);
    cJSON_Delete(saved);
    veer_canary_run_free(&run);
    veer_canary_run_free(&again);
    veer_canary_policy_clear(&p);
}

/* A state file is input: anything malformed is an error naming the key,
 * and the run stays idle. */
static void expect_restore_error(const char *json_text, const char *needle, int line)
{
    cJSON *json = cJSON_Parse(json_text);
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    char err[256] = "";
    int rc = veer_canary_restore(&run, json, T0, NULL, err, sizeof err);
    checks++;
    if (rc != VEER_CANARY_EINVAL || !strstr(err, needle) || run.phase != VEER_CANARY_IDLE) {
        failures++;
        fprintf(stderr, "%s:%d: expected restore error containing \"%s\", got rc %d \"%s\"\n", __FILE__, line, needle,
                rc, err);
    }
    cJSON_Delete(json);
    veer_canary_run_free(&run);
}

#define EXPECT_RESTORE_ERROR(text, needle) expect_restore_error((text), (needle), __LINE__)

/* Replace the first `from` in the JSON of a valid mid-run state by `to`. */
static char *mutate(const char *valid, const char *from, const char *to)
{
    const char *at = strstr(valid, from);
    if (!at) {
        fprintf(stderr, "mutate: \"%s\" not found\n", from);
        exit(2);
    }
    size_t head = (size_t)(at - valid), len = strlen(valid) - strlen(from) + strlen(to);
    char *out = malloc(len + 1);
    if (!out)
        exit(2);
    memcpy(out, valid, head);
    strcpy(out + head, to);
    strcat(out, at + strlen(from));
    return out;
}

static void test_restore_errors(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    start(&run, &p, &clock, NULL);
    step(&run, &clock, &bad_canary, NULL);
    cJSON *json = veer_canary_to_json(&run);
    char *valid = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);

    static const struct {
        const char *from, *to, *needle;
    } cases[] = {
        {"\"version\":1", "\"version\":2", "canary state: version: unsupported version"},
        {"\"phase\":\"progressing\"", "\"phase\":\"flying\"", "canary state: phase: unknown value \"flying\""},
        {"\"stage\":\"analysis\"", "\"stage\":\"shift\"", "stage: stage shift does not fit phase progressing"},
        {"\"paused_from\":null", "\"paused_from\":\"progressing\"", "paused_from: must be null unless"},
        {"\"weight\":10", "\"weight\":101", "canary state: weight: expected an integer between 0 and 100"},
        {"\"weight\":10", "\"weight\":\"10\"", "canary state: weight: expected an integer"},
        {"\"max_weight\":50", "\"max_weight\":0", "canary state: policy.max_weight: expected an integer between 1 and 100"},
        {"\"step_weight\":10", "\"step_weight\":70", "canary state: policy.step_weight: must be between 1 and max_weight"},
        {"\"confidence\":0.99", "\"confidence\":1", "canary state: policy.confidence: must be above 0.5 and below 1"},
        {"\"mode\":\"progressive\"", "\"mode\":\"ab\"", "canary state: policy.match: required when mode is \"ab\""},
        {"\"canary\":\"green\",\"mode\"", "\"canary\":\"blue\",\"mode\"",
         "stable and canary must be two different clusters"},
        {"\"step_weights\":[]", "\"step_weights\":[30,20]", "policy.step_weights: must be strictly increasing"},
        {"\"kind\":\"started\"", "\"kind\":\"exploded\"", "canary state: events[0].kind: unknown value"},
        {"\"events\":[", "\"events\":{},\"x\":[", "canary state: events: expected an array"},
        {"\"verdict\":\"fail\"", "\"verdict\":\"maybe\"", "last_analysis.verdict: unknown value \"maybe\""},
        {"\"reasons\":[\"success_rate\"", "\"reasons\":[\"vibes\"", "last_analysis.reasons: unknown reason"},
        {"\"policy\":{", "\"policy\":7,\"p\":{", "canary state: policy: expected an object"},
        {"\"failed_checks\":1,", "", "canary state: failed_checks: missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = mutate(valid, cases[i].from, cases[i].to);
        expect_restore_error(text, cases[i].needle, __LINE__);
        free(text);
    }
    EXPECT_RESTORE_ERROR("[1,2]", "canary state: expected an object");
    EXPECT_RESTORE_ERROR("{}", "canary state: version: missing");

    /* more events than a history holds */
    cJSON *many = cJSON_Parse(valid);
    cJSON *events = cJSON_GetObjectItem(many, "events");
    for (int i = 0; i < VEER_CANARY_HISTORY; i++)
        cJSON_AddItemToArray(events, cJSON_Duplicate(cJSON_GetArrayItem(events, 0), true));
    char *text = cJSON_PrintUnformatted(many);
    EXPECT_RESTORE_ERROR(text, "canary state: events: expected an array of at most 64 events");
    free(text);
    cJSON_Delete(many);

    /* NULL json */
    char err[128];
    CHECK(veer_canary_restore(&run, NULL, T0, NULL, err, sizeof err) == VEER_CANARY_EINVAL);
    CHECK(run.phase == VEER_CANARY_IDLE);
    free(valid);
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

static void test_json_shape(void)
{
    veer_canary_policy_t p = make_policy(VEER_CANARY_PROGRESSIVE);
    veer_canary_run_t run;
    veer_canary_run_init(&run);
    fake_clock_t clock = {T0};
    start(&run, &p, &clock, NULL);
    step(&run, &clock, &bad_canary, NULL);
    cJSON *json = veer_canary_to_json(&run);
    CHECK(json != NULL);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(json, "phase")), "progressing");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(json, "stable")), "blue");
    CHECK(cJSON_GetObjectItem(json, "weight")->valuedouble == 10);
    CHECK(cJSON_GetObjectItem(json, "stable_weight")->valuedouble == 90);
    CHECK(cJSON_GetObjectItem(json, "failed_checks")->valuedouble == 1);
    cJSON *last = cJSON_GetObjectItem(json, "last_analysis");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(last, "verdict")), "fail");
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(last, "canary"), "requests")->valuedouble == 1000);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(last, "canary"), "success_rate")->valuedouble == 95.0);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(last, "stable"), "p99_us")->valuedouble == 110000);
    cJSON *ev = cJSON_GetArrayItem(cJSON_GetObjectItem(json, "events"), 1);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(ev, "kind")), "check_failed");
    CHECK(cJSON_IsObject(cJSON_GetObjectItem(ev, "analysis")));
    cJSON_Delete(json);

    veer_canary_run_t idle;
    veer_canary_run_init(&idle);
    json = veer_canary_to_json(&idle);
    char *text = cJSON_PrintUnformatted(json);
    CHECK_STR(text, "{\"version\":1,\"phase\":\"idle\"}");
    free(text);
    cJSON_Delete(json);
    CHECK_STR(veer_canary_phase_name(VEER_CANARY_ROLLED_BACK), "rolled_back");
    CHECK_STR(veer_canary_stage_name(VEER_CANARY_STAGE_CONFIRM), "confirm");
    CHECK_STR(veer_canary_verdict_name(VEER_CANARY_INCONCLUSIVE), "inconclusive");
    CHECK_STR(veer_canary_phase_name((veer_canary_phase_t)99), "unknown");
    veer_canary_run_free(&run);
    veer_canary_policy_clear(&p);
}

/* ---- from the config ------------------------------------------------------------------ */

static void test_policy_from_config(void)
{
    static const char text[] =
        "{\"listeners\":[{\"address\":\"127.0.0.1:8080\"}],"
        "\"clusters\":{\"blue\":{\"endpoints\":[\"10.0.0.1:80\"]},\"green\":{\"endpoints\":[\"10.0.0.2:80\"]}},"
        "\"routes\":[{\"name\":\"embed\",\"split\":[{\"cluster\":\"blue\",\"weight\":100}],"
        "\"canary\":{\"stable\":\"blue\",\"canary\":\"green\",\"mode\":\"ab\",\"interval\":\"2s\","
        "\"iterations\":4,\"mirror_iterations\":2,\"max_inconclusive\":5,\"confidence\":0.95,"
        "\"p99_ratio_max\":2,\"promotion_step_weight\":25,"
        "\"match\":{\"cookie\":\"beta\",\"equals\":\"yes\"},"
        "\"webhooks\":{\"confirm_promotion\":\"http://cd/confirm\",\"phase_change\":[\"http://cd/phase\"]}}}]}";
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = veer_config_parse(text, strlen(text), &errs);
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "    error: %s\n", errs.messages[i]);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    veer_canary_policy_t p;
    char err[256] = "";
    CHECK(veer_canary_policy_from_config(&p, cfg, cfg->routes[0].canary, err, sizeof err) == VEER_CANARY_OK);
    CHECK_STR(p.stable, "blue");
    CHECK_STR(p.canary, "green");
    CHECK(p.mode == VEER_CANARY_AB && p.interval_ms == 2000 && p.iterations == 4 && p.mirror_iterations == 2);
    CHECK(p.max_inconclusive == 5 && p.confidence == 0.95 && p.p99_ratio_max == 2.0);
    CHECK(p.promotion_step_weight == 25);
    CHECK(p.has_match && p.match_kind == VEER_KEY_COOKIE);
    CHECK_STR(p.match_name, "beta");
    CHECK_STR(p.match_equals, "yes");
    CHECK_STR(p.webhook_confirm_promotion, "http://cd/confirm");
    CHECK(p.webhook_phase_change_count == 1);
    CHECK_STR(p.webhook_phase_change[0], "http://cd/phase");

    /* a start request's overrides over the route's policy */
    cJSON *body = cJSON_Parse("{\"mode\":\"progressive\",\"step_weights\":[5,20,40],\"match\":null,"
                              "\"stable\":\"green\",\"canary\":\"blue\"}");
    veer_canary_config_t *merged = veer_config_canary_parse(cfg, cfg->routes[0].canary, body, &errs);
    CHECK(merged != NULL);
    veer_canary_policy_t q;
    CHECK(merged && veer_canary_policy_from_config(&q, cfg, merged, err, sizeof err) == VEER_CANARY_OK);
    if (merged) {
        CHECK_STR(q.stable, "green");
        CHECK_STR(q.canary, "blue");
        CHECK(q.mode == VEER_CANARY_PROGRESSIVE && q.step_weight_count == 3 && q.max_weight == 40);
        CHECK(!q.has_match && q.interval_ms == 2000); /* the rest inherited */
        CHECK_STR(q.webhook_confirm_promotion, "http://cd/confirm");
        /* and the run goes through the listed weights */
        veer_canary_run_t run;
        veer_canary_run_init(&run);
        fake_clock_t clock = {T0};
        q.mirror_iterations = 0;
        start(&run, &q, &clock, NULL);
        CHECK(run.weight == 5);
        veer_canary_run_free(&run);
        veer_canary_policy_clear(&q);
    }
    veer_config_canary_free(merged);
    cJSON_Delete(body);
    veer_canary_policy_clear(&p);

    CHECK(veer_canary_policy_from_config(&p, cfg, NULL, err, sizeof err) == VEER_CANARY_EINVAL);
    veer_config_errors_clear(&errs);
    veer_config_free(cfg);
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_normal_quantile,
        test_two_proportion_z,
        test_exact_tests,
        test_held_window_goes_on,
        test_analysis_limits,
        test_compare_to_stable,
        test_p99_ratio_and_floor,
        test_progressive_healthy,
        test_step_weights_and_overshoot,
        test_rollback_at_threshold,
        test_threshold_counts_total,
        test_inconclusive_holds_then_pauses,
        test_blue_green,
        test_ab,
        test_mirror_phase,
        test_promotion_steps,
        test_confirm_promotion,
        test_verbs_in_every_phase,
        test_history_bound,
        test_json_round_trip,
        test_restart_resumes,
        test_restore_errors,
        test_json_shape,
        test_policy_from_config,
    };
    size_t test_count = sizeof tests / sizeof tests[0];
    for (size_t i = 0; i < test_count; i++)
        tests[i]();
    return check_summary("test_canary");
}
