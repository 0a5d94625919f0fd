/* controller.c - the canary controller's I/O (controller.h): per-route runs
 * of canary.c driven by one timer each on the main event base. A window is
 * the difference of two reads of the stats' totals (counts and the duration
 * histogram), so an interval of any length, not only whole seconds, is
 * measured exactly. */
#include "controller.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "canary.h"
#include "histogram.h"
#include "log.h"
#include "peers.h"
#include "promsource.h"
#include "state.h"
#include "stats.h"
#include "webhook.h"

#define ROUTE_NAME_CAP 256

enum { SIDE_CANARY = 0, SIDE_STABLE = 1 };

typedef struct entry_s {
    veer_controller_t *ctl;
    char route[ROUTE_NAME_CAP];
    veer_canary_run_t run;
    struct event *timer;
    veer_stats_view_t *base[2]; /* totals when the current window began */
    uint64_t window_start_ms;   /* when it began (a held window spans several intervals) */
    char stable[VEER_CANARY_NAME_CAP]; /* the route's stable cluster after a promotion; "" none */
    uint64_t checks_passed;
    uint64_t analyses_seen; /* run.analyses when checks_passed was last counted */
    bool confirmed, confirm_inflight;
    /* source.prometheus: the windows come from a query set, not from stats */
    char *prom_url;                   /* NULL: this replica's stats */
    uint64_t prom_window_ms, prom_timeout_ms;
    veer_promsource_query_t *query;   /* the set in flight (at most one); NULL none */
    uint64_t query_run;               /* run.started_ms of the run that asked */
    uint64_t prom_queries, prom_errors, prom_last_ms;
    char prom_error[VEER_CANARY_TEXT_CAP]; /* the last set's error; "" after a good one */
} entry_t;

struct veer_controller_s {
    struct event_base *base;
    veer_runtime_t *rt;
    veer_webhooks_t *hooks;
    veer_peers_t *peers; /* the other replicas, told of every weight change; NULL on a follower */
    veer_promsource_t *prom;
    entry_t **entries;
    size_t count;
    bool leader;              /* config peers.leader, taken at start (a reload may not change it) */
    char follower_why[640];   /* the 409 of a follower's start and verbs */
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static cJSON *error_json(const char *message)
{
    cJSON *o = cJSON_CreateObject();
    if (o != NULL)
        cJSON_AddStringToObject(o, "error", message);
    return o;
}

static entry_t *find_entry(const veer_controller_t *ctl, const char *route)
{
    for (size_t i = 0; i < ctl->count; i++)
        if (strcmp(ctl->entries[i]->route, route) == 0)
            return ctl->entries[i];
    return NULL;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

static entry_t *get_entry(veer_controller_t *ctl, const char *route)
{
    entry_t *e = find_entry(ctl, route);
    if (e != NULL)
        return e;
    if (strlen(route) >= ROUTE_NAME_CAP)
        return NULL;
    entry_t **grown = realloc(ctl->entries, (ctl->count + 1) * sizeof *grown);
    if (grown == NULL)
        return NULL;
    ctl->entries = grown;
    if ((e = calloc(1, sizeof *e)) == NULL)
        return NULL;
    e->ctl = ctl;
    snprintf(e->route, sizeof e->route, "%s", route);
    veer_canary_run_init(&e->run);
    e->timer = evtimer_new(ctl->base, on_timer, e);
    e->base[0] = malloc(sizeof(veer_stats_view_t));
    e->base[1] = malloc(sizeof(veer_stats_view_t));
    if (e->timer == NULL || e->base[0] == NULL || e->base[1] == NULL) {
        if (e->timer != NULL)
            event_free(e->timer);
        free(e->base[0]);
        free(e->base[1]);
        free(e);
        return NULL;
    }
    veer_stats_view_reset(e->base[0]);
    veer_stats_view_reset(e->base[1]);
    ctl->entries[ctl->count++] = e;
    return e;
}

/* ---- windows ------------------------------------------------------------------ */

/* Totals of (route, cluster) so far; an unknown name reads as nothing. */
static void read_totals(veer_controller_t *ctl, const veer_snapshot_t *snap, const char *route, const char *cluster,
                        veer_stats_view_t *out)
{
    veer_stats_view_reset(out);
    int r = veer_config_route_index(snap->config, route);
    int c = veer_config_cluster_index(snap->config, cluster);
    if (ctl->rt->stats == NULL || snap->stats_layout == NULL || r < 0 || c < 0)
        return;
    veer_stats_read_total(ctl->rt->stats, snap->stats_layout, r, c, VEER_STATS_READ_COUNTS | VEER_STATS_READ_DURATION,
                          out);
}

static void take_base(entry_t *e)
{
    e->window_start_ms = now_ms();
    veer_snapshot_t *snap = veer_runtime_acquire(e->ctl->rt);
    read_totals(e->ctl, snap, e->route, e->run.policy.canary, e->base[SIDE_CANARY]);
    read_totals(e->ctl, snap, e->route, e->run.policy.stable, e->base[SIDE_STABLE]);
    veer_snapshot_release(snap);
}

/* cur - base: the window's requests, failures and P99. */
static void window_of(const veer_stats_view_t *cur, const veer_stats_view_t *base, veer_hist_t *scratch,
                      veer_canary_window_t *out)
{
    uint64_t req = veer_stats_counts_requests(&cur->counts), req0 = veer_stats_counts_requests(&base->counts);
    uint64_t fail = veer_stats_counts_failures(&cur->counts), fail0 = veer_stats_counts_failures(&base->counts);
    int first = -1, last = -1;

    out->requests = req > req0 ? req - req0 : 0;
    out->failures = fail > fail0 ? fail - fail0 : 0;
    veer_hist_reset(scratch);
    for (uint32_t i = 0; i < VEER_HIST_BUCKETS; i++) {
        uint64_t a = cur->duration.counts[i], b = base->duration.counts[i];
        scratch->counts[i] = a > b ? a - b : 0;
        scratch->count += scratch->counts[i];
        if (scratch->counts[i] != 0) {
            if (first < 0)
                first = (int)i;
            last = (int)i;
        }
    }
    if (first >= 0) {
        scratch->min = veer_hist_bucket_low((uint32_t)first);
        scratch->max = veer_hist_bucket_high((uint32_t)last);
    }
    out->p99_us = veer_hist_value_at(scratch, 990000);
}

static void fill_inputs(veer_controller_t *ctl, const char *cluster, veer_canary_inputs_t *in)
{
    veer_snapshot_t *snap = veer_runtime_acquire(ctl->rt);
    int c = veer_config_cluster_index(snap->config, cluster);

    memset(in, 0, sizeof *in);
    if (c >= 0 && snap->cluster_endpoints[c] != NULL) {
        const veer_endpoint_set_t *set = snap->cluster_endpoints[c];
        for (size_t i = 0; i < set->count; i++) {
            const veer_endpoint_t *ep = set->endpoints[i];
            in->canary_endpoints++;
            if (!atomic_load_explicit(&ep->unhealthy, memory_order_relaxed) &&
                !atomic_load_explicit(&ep->ejected, memory_order_relaxed))
                in->canary_endpoints_healthy++;
        }
    }
    veer_snapshot_release(snap);
}

/* ---- applying a run's answer ------------------------------------------------- */

static void persist(veer_controller_t *ctl)
{
    veer_snapshot_t *snap = veer_runtime_acquire(ctl->rt);
    char err[512];

    if (snap->config->state_file != NULL && veer_state_write(snap->config->state_file, snap, err, sizeof err) != 0)
        veer_log_error("canary: %s", err);
    veer_snapshot_release(snap);
}

static bool weights_already(veer_controller_t *ctl, const char *route, const char *const *names,
                            const int64_t *weights)
{
    veer_snapshot_t *snap = veer_runtime_acquire(ctl->rt);
    const veer_config_t *cfg = snap->config;
    int r = veer_config_route_index(cfg, route);
    size_t same = 0;

    for (size_t k = 0; r >= 0 && k < 2; k++) {
        int c = veer_config_cluster_index(cfg, names[k]);
        const veer_route_weights_t *rw = &snap->routes[r];
        for (size_t i = 0; c >= 0 && i < rw->count; i++)
            if (rw->split[i].cluster == c && (int64_t)rw->split[i].weight == weights[k])
                same++;
    }
    veer_snapshot_release(snap);
    return same == 2;
}

static void log_events(const entry_t *e, size_t n)
{
    size_t total = veer_canary_event_count(&e->run);
    char ts[32];

    veer_log_timestamp(ts);
    for (size_t i = total >= n ? total - n : 0; i < total; i++) {
        cJSON *ev = veer_canary_event_to_json(veer_canary_event_at(&e->run, i));
        cJSON *line = cJSON_CreateObject();
        if (ev == NULL || line == NULL) {
            cJSON_Delete(ev);
            cJSON_Delete(line);
            return;
        }
        cJSON_AddStringToObject(line, "ts", ts);
        cJSON_AddStringToObject(line, "level", "info");
        cJSON_AddStringToObject(line, "msg", "canary");
        cJSON_AddStringToObject(line, "route", e->route);
        cJSON_AddItemToObject(line, "event", ev);
        veer_log_json(line);
    }
}

static void on_confirmed(void *arg, int status)
{
    entry_t *e = arg;
    e->confirm_inflight = false;
    e->confirmed = status >= 200 && status < 300;
    veer_log_info("canary %s: confirm_promotion answered %d", e->route, status);
}

static void post_hook(entry_t *e, const char *url, const char *body, veer_webhook_done_fn done)
{
    char err[512];
    if (veer_webhook_post(e->ctl->hooks, url, body, e->run.policy.webhook_timeout_ms, e->run.policy.webhook_retries,
                          done, e, err, sizeof err) != 0) {
        veer_log_warn("canary %s: %s", e->route, err);
        if (done != NULL)
            e->confirm_inflight = false;
    }
}

static char *run_payload(const entry_t *e)
{
    cJSON *o = veer_canary_to_json(&e->run);
    char *text = NULL;
    if (o != NULL) {
        cJSON_AddStringToObject(o, "route", e->route);
        text = cJSON_PrintUnformatted(o);
    }
    cJSON_Delete(o);
    return text;
}

static void fire_webhooks(entry_t *e, const veer_canary_update_t *up)
{
    const veer_canary_policy_t *p = &e->run.policy;
    char *body = NULL;

    if (up->phase_changed) {
        if ((body = run_payload(e)) == NULL)
            return;
        for (size_t i = 0; i < p->webhook_phase_change_count; i++)
            post_hook(e, p->webhook_phase_change[i], body, NULL);
        if (e->run.phase == VEER_CANARY_SUCCEEDED && p->webhook_promoted != NULL)
            post_hook(e, p->webhook_promoted, body, NULL);
        if (e->run.phase == VEER_CANARY_ROLLED_BACK && p->webhook_rolled_back != NULL)
            post_hook(e, p->webhook_rolled_back, body, NULL);
    }
    if (up->ask_confirmation && p->webhook_confirm_promotion != NULL && !e->confirm_inflight) {
        if (body == NULL && (body = run_payload(e)) == NULL)
            return;
        e->confirmed = false;
        e->confirm_inflight = true;
        post_hook(e, p->webhook_confirm_promotion, body, on_confirmed);
    }
    free(body);
}

static void schedule(entry_t *e)
{
    uint64_t due = veer_canary_due_ms(&e->run), now = now_ms();

    evtimer_del(e->timer);
    if (due == 0)
        return;
    uint64_t wait = due > now ? due - now : 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    evtimer_add(e->timer, &tv);
}

/* Apply up to the runtime. set_weights false: the caller sets the weights
 * itself (a forced PUT). */
static void apply(entry_t *e, const veer_canary_update_t *up, bool set_weights)
{
    veer_controller_t *ctl = e->ctl;
    bool persisted = false;

    if (up->stable_changed && up->new_stable != NULL)
        snprintf(e->stable, sizeof e->stable, "%s", up->new_stable);
    if (up->events > 0)
        log_events(e, up->events);
    if (set_weights && up->weights_changed) {
        const char *names[2] = {up->stable, up->canary};
        int64_t weights[2] = {up->stable_weight, up->canary_weight};
        uint64_t generation = 0;
        char err[512] = "";
        if (!weights_already(ctl, e->route, names, weights)) {
            if (veer_runtime_set_weights(ctl->rt, e->route, names, weights, 2, 0, &generation, err, sizeof err) != 0)
                veer_log_error("canary %s: weights %s=%u %s=%u not applied: %s", e->route, up->stable,
                               up->stable_weight, up->canary, up->canary_weight, err);
            else
                persisted = true;
            if (persisted)
                veer_peers_weights_changed(ctl->peers, e->route);
        }
    }
    if (up->ab_match_changed) {
        const veer_canary_policy_t *p = &e->run.policy;
        char err[512] = "";
        bool on = up->ab_match && p->has_match && p->match_name != NULL && p->match_equals != NULL;
        if (veer_runtime_set_ab(ctl->rt, e->route, on ? p->canary : NULL, p->match_kind, p->match_name,
                                p->match_equals, err, sizeof err) != 0)
            veer_log_error("canary %s: A/B match not applied: %s", e->route, err);
    }
    if (up->mirror_changed) {
        char err[512] = "";
        if (veer_runtime_set_mirror(ctl->rt, e->route, up->mirror ? e->run.policy.canary : NULL, err, sizeof err) != 0)
            veer_log_error("canary %s: mirror not applied: %s", e->route, err);
    }
    if (up->analysed) {
        if (e->run.analyses > e->analyses_seen && e->run.has_analysis &&
            e->run.last_analysis.verdict == VEER_CANARY_PASS)
            e->checks_passed++;
        e->analyses_seen = e->run.analyses;
        if (!up->keep_window)
            take_base(e);
    }
    if (!persisted && (up->events > 0 || up->stable_changed))
        persist(ctl);
    fire_webhooks(e, up);
    schedule(e);
}

/* A run that would move weights while a replica is out of sync pauses
 * instead: no step, and above all no promotion, that some replica missed. */
static bool pause_with(entry_t *e, const char *why)
{
    veer_canary_update_t up;
    char err[256];

    if (e->run.phase != VEER_CANARY_PROGRESSING && e->run.phase != VEER_CANARY_PROMOTING)
        return false;
    if (veer_canary_pause_because(&e->run, why, now_ms(), &up, err, sizeof err) != VEER_CANARY_OK)
        return false;
    veer_log_warn("canary %s: paused: %s", e->route, why);
    apply(e, &up, true);
    return true;
}

static bool pause_for_peers(entry_t *e)
{
    char why[VEER_CANARY_TEXT_CAP];
    return veer_peers_failing(e->ctl->peers, why, sizeof why) && pause_with(e, why);
}

static void on_peer_failed(void *arg, const char *why)
{
    veer_controller_t *ctl = arg;
    for (size_t i = 0; i < ctl->count; i++)
        pause_with(ctl->entries[i], why);
}

/* The interval's windows are in: judge them and apply the answer. */
static void analyse(entry_t *e, const veer_canary_window_t *canary, const veer_canary_window_t *stable)
{
    veer_canary_inputs_t in;
    veer_canary_update_t up;

    fill_inputs(e->ctl, e->run.policy.canary, &in);
    in.promotion_confirmed = e->confirmed;
    if (veer_canary_tick(&e->run, canary, stable, &in, now_ms(), &up) != VEER_CANARY_OK) {
        veer_log_error("canary %s: analysis failed (out of memory); retrying next interval", e->route);
        schedule(e);
        return;
    }
    if (up.analysed && in.promotion_confirmed)
        e->confirmed = false; /* used: the next promotion asks again */
    apply(e, &up, true);
}

/* A query set that failed says nothing about the canary: the interval is
 * inconclusive (the weight holds, no check fails or passes) with the query's
 * error as its reason, and max_inconclusive of them in a row pause the run. */
static void prom_inconclusive(entry_t *e, const char *error)
{
    veer_canary_window_t none = {0, 0, 0};
    uint64_t analyses = e->run.analyses;

    if (e->run.phase == VEER_CANARY_PROGRESSING && e->run.stage != VEER_CANARY_STAGE_GATE &&
        e->run.inconclusive_streak + 1 >= e->run.policy.max_inconclusive) {
        char why[VEER_CANARY_TEXT_CAP];
        snprintf(why, sizeof why, "%u inconclusive analyses in a row (%s)", e->run.inconclusive_streak + 1, error);
        if (pause_with(e, why))
            return;
    }
    analyse(e, &none, &none);
    if (e->run.analyses > analyses && e->run.last_analysis.verdict == VEER_CANARY_INCONCLUSIVE)
        snprintf(e->run.last_analysis.detail, sizeof e->run.last_analysis.detail, "inconclusive: %s", error);
}

static void on_prom_answer(void *arg, const veer_canary_window_t *canary, const veer_canary_window_t *stable,
                           const char *error, uint64_t elapsed_ms)
{
    entry_t *e = arg;

    e->query = NULL;
    e->prom_last_ms = elapsed_ms;
    snprintf(e->prom_error, sizeof e->prom_error, "%s", error != NULL ? error : "");
    if (error != NULL) {
        e->prom_errors++;
        veer_log_warn("canary %s: %s", e->route, error);
    }
    if (e->run.started_ms != e->query_run) { /* asked for a run that has ended since */
        schedule(e);
        return;
    }
    if (error != NULL)
        prom_inconclusive(e, error);
    else
        analyse(e, canary, stable);
}

/* Ask Prometheus for the interval's windows; the answer runs the analysis.
 * The main loop never waits for it. */
static void prom_ask(entry_t *e)
{
    uint64_t window = e->prom_window_ms != 0 ? e->prom_window_ms : e->run.policy.interval_ms;
    uint64_t since = now_ms() - e->window_start_ms; /* a held window asks for all of its time */
    if (e->window_start_ms != 0 && since > window && since < UINT64_C(1) << 40)
        window = since;
    veer_promsource_request_t req = {
        .url = e->prom_url, .route = e->route, .canary = e->run.policy.canary, .stable = e->run.policy.stable,
        .window_ms = window < 1000 ? 1000 : window, /* Prometheus' resolution: no sub-second ranges */
        .timeout_ms = e->prom_timeout_ms,
    };
    char err[VEER_CANARY_TEXT_CAP];

    if (e->query != NULL) /* the answer to the set in flight analyses and schedules */
        return;
    e->prom_queries++;
    e->query_run = e->run.started_ms;
    if (veer_promsource_query(e->ctl->prom, &req, on_prom_answer, e, &e->query, err, sizeof err) != 0) {
        e->query = NULL;
        e->prom_errors++;
        snprintf(e->prom_error, sizeof e->prom_error, "%s", err);
        veer_log_warn("canary %s: %s", e->route, err);
        prom_inconclusive(e, err);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    entry_t *e = arg;
    veer_controller_t *ctl = e->ctl;
    veer_stats_view_t *cur = malloc(sizeof *cur);
    veer_hist_t *scratch = malloc(sizeof *scratch);
    veer_canary_window_t w[2] = {{0, 0, 0}, {0, 0, 0}};
    (void)fd;
    (void)what;

    if (pause_for_peers(e)) {
        free(cur);
        free(scratch);
        return;
    }
    if (e->prom_url != NULL) {
        free(cur);
        free(scratch);
        prom_ask(e);
        return;
    }
    if (cur == NULL || scratch == NULL) {
        veer_log_error("canary %s: out of memory for the analysis; retrying in a second", e->route);
        free(cur);
        free(scratch);
        struct timeval tv = {1, 0};
        evtimer_add(e->timer, &tv);
        return;
    }
    veer_snapshot_t *snap = veer_runtime_acquire(ctl->rt);
    const char *names[2] = {e->run.policy.canary, e->run.policy.stable};
    for (int s = 0; s < 2; s++) {
        read_totals(ctl, snap, e->route, names[s], cur);
        window_of(cur, e->base[s], scratch, &w[s]);
    }
    veer_snapshot_release(snap);
    free(cur);
    free(scratch);
    analyse(e, &w[SIDE_CANARY], &w[SIDE_STABLE]);
}

/* The run's analysis source from its canary block (a copy: the block is
 * freed or replaced by a reload while the run goes on). */
typedef struct source_s {
    char *url; /* NULL: local stats */
    uint64_t window_ms, timeout_ms;
} source_t;

static int source_of(const veer_canary_config_t *cc, source_t *out)
{
    out->url = cc != NULL && cc->source_prometheus != NULL ? strdup(cc->source_prometheus) : NULL;
    out->window_ms = cc != NULL ? cc->source_query_window_ms : 0;
    out->timeout_ms = cc != NULL && cc->source_timeout_ms > 0 ? cc->source_timeout_ms : 2000;
    return cc != NULL && cc->source_prometheus != NULL && out->url == NULL ? -1 : 0;
}

/* Takes src's URL. */
static void set_source(entry_t *e, source_t *src)
{
    free(e->prom_url);
    e->prom_url = src->url;
    src->url = NULL;
    e->prom_window_ms = src->window_ms;
    e->prom_timeout_ms = src->timeout_ms;
    e->prom_queries = e->prom_errors = e->prom_last_ms = 0;
    e->prom_error[0] = '\0';
}

static cJSON *source_json(const entry_t *e)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    if (e->prom_url == NULL) {
        cJSON_AddStringToObject(o, "kind", "local");
        return o;
    }
    cJSON_AddStringToObject(o, "kind", "prometheus");
    cJSON_AddStringToObject(o, "prometheus", e->prom_url);
    cJSON_AddNumberToObject(o, "query_window_ms",
                            (double)(e->prom_window_ms != 0 ? e->prom_window_ms : e->run.policy.interval_ms));
    cJSON_AddNumberToObject(o, "timeout_ms", (double)e->prom_timeout_ms);
    cJSON_AddNumberToObject(o, "queries", (double)e->prom_queries);
    cJSON_AddNumberToObject(o, "errors", (double)e->prom_errors);
    cJSON_AddNumberToObject(o, "last_query_ms", (double)e->prom_last_ms);
    if (e->prom_error[0] != '\0')
        cJSON_AddStringToObject(o, "last_error", e->prom_error);
    else
        cJSON_AddNullToObject(o, "last_error");
    cJSON_AddBoolToObject(o, "in_flight", e->query != NULL);
    return o;
}

/* ---- admin calls -------------------------------------------------------------- */

static int route_known(veer_controller_t *ctl, const char *route, const veer_route_config_t **out_route)
{
    veer_snapshot_t *snap = veer_runtime_acquire(ctl->rt);
    int r = veer_config_route_index(snap->config, route);
    if (out_route != NULL)
        *out_route = r >= 0 ? &snap->config->routes[r] : NULL;
    veer_snapshot_release(snap);
    return r;
}

static cJSON *run_json(const entry_t *e)
{
    cJSON *o = veer_canary_to_json(&e->run);
    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "route", e->route);
    cJSON_AddNumberToObject(o, "checks_passed", (double)e->checks_passed);
    if (e->stable[0] != '\0')
        cJSON_AddStringToObject(o, "stable_cluster", e->stable);
    cJSON *source = source_json(e);
    if (source != NULL)
        cJSON_AddItemToObject(o, "source", source);
    return o;
}

static int reply_with(int status, cJSON **reply, const char *message)
{
    *reply = error_json(message);
    return status;
}

static char *join_errors(const veer_config_errors_t *errs)
{
    size_t len = 1;
    for (size_t i = 0; i < errs->count; i++)
        len += strlen(errs->messages[i]) + 2;
    char *out = malloc(len);
    if (out == NULL)
        return NULL;
    out[0] = '\0';
    for (size_t i = 0; i < errs->count; i++) {
        if (i > 0)
            strcat(out, "; ");
        strcat(out, errs->messages[i]);
    }
    return out;
}

/* The start body with the promoted stable cluster filled in, unless the
 * caller names one. */
static cJSON *start_body(const entry_t *e, const cJSON *body)
{
    cJSON *copy = body != NULL ? cJSON_Duplicate(body, true) : cJSON_CreateObject();
    if (copy == NULL || !cJSON_IsObject(copy))
        return copy;
    if (e->stable[0] != '\0' && !cJSON_HasObjectItem(copy, "stable"))
        cJSON_AddStringToObject(copy, "stable", e->stable);
    return copy;
}

int veer_controller_start(veer_controller_t *ctl, const char *route, const cJSON *body, cJSON **reply)
{
    veer_snapshot_t *snap = veer_runtime_acquire(ctl->rt);
    const veer_config_t *cfg = snap->config;
    int r = veer_config_route_index(cfg, route);
    veer_config_errors_t errs = {0};
    veer_canary_policy_t policy;
    veer_canary_inputs_t in;
    veer_canary_update_t up;
    char err[512] = "";
    int status = 200;
    entry_t *e;

    memset(&policy, 0, sizeof policy);
    if (r < 0) {
        veer_snapshot_release(snap);
        return reply_with(404, reply, "unknown route");
    }
    if (!ctl->leader) {
        veer_snapshot_release(snap);
        return reply_with(409, reply, ctl->follower_why);
    }
    if ((e = get_entry(ctl, route)) == NULL) {
        veer_snapshot_release(snap);
        return reply_with(500, reply, "out of memory");
    }
    if (veer_canary_active(&e->run)) {
        veer_snapshot_release(snap);
        return reply_with(409, reply, "a canary run is already in progress on this route (abort it first)");
    }
    cJSON *merged = start_body(e, body);
    veer_canary_config_t *cc = merged != NULL ? veer_config_canary_parse(cfg, cfg->routes[r].canary, merged, &errs)
                                              : NULL;
    cJSON_Delete(merged);
    if (cc == NULL) {
        char *msg = join_errors(&errs);
        veer_config_errors_clear(&errs);
        veer_snapshot_release(snap);
        status = reply_with(400, reply, msg != NULL && msg[0] != '\0' ? msg : "invalid canary policy");
        free(msg);
        return status;
    }
    veer_config_errors_clear(&errs);
    int rc = veer_canary_policy_from_config(&policy, cfg, cc, err, sizeof err);
    source_t source = {NULL, 0, 0}; /* the entry takes it only once the run has started */
    if (rc == VEER_CANARY_OK && source_of(cc, &source) != 0) {
        veer_canary_policy_clear(&policy);
        snprintf(err, sizeof err, "out of memory");
        rc = VEER_CANARY_ENOMEM;
    }
    veer_config_canary_free(cc);
    veer_snapshot_release(snap);
    if (rc != VEER_CANARY_OK)
        return reply_with(rc == VEER_CANARY_ENOMEM ? 500 : 400, reply, err);
    if (strcmp(policy.stable, policy.canary) == 0) {
        veer_canary_policy_clear(&policy);
        free(source.url);
        return reply_with(400, reply, "canary: must differ from stable");
    }
    fill_inputs(ctl, policy.canary, &in);
    snprintf(e->run.policy.canary, sizeof e->run.policy.canary, "%s", policy.canary);
    snprintf(e->run.policy.stable, sizeof e->run.policy.stable, "%s", policy.stable);
    take_base(e);
    rc = veer_canary_start(&e->run, &policy, &in, now_ms(), &up, err, sizeof err);
    veer_canary_policy_clear(&policy);
    if (rc != VEER_CANARY_OK) {
        free(source.url);
        return reply_with(rc == VEER_CANARY_ESTATE ? 409 : rc == VEER_CANARY_ENOMEM ? 500 : 400, reply, err);
    }
    if (e->query != NULL) { /* a finished run's late set: its answer means nothing now */
        veer_promsource_cancel(e->query);
        e->query = NULL;
    }
    set_source(e, &source);
    e->checks_passed = 0;
    e->analyses_seen = e->run.analyses;
    e->confirmed = false;
    apply(e, &up, true);
    *reply = run_json(e);
    return status;
}

int veer_controller_command(veer_controller_t *ctl, const char *route, const char *verb, cJSON **reply)
{
    veer_canary_update_t up;
    char err[512] = "";

    if (route_known(ctl, route, NULL) < 0)
        return reply_with(404, reply, "unknown route");
    if (!ctl->leader)
        return reply_with(409, reply, ctl->follower_why);
    entry_t *e = get_entry(ctl, route);
    if (e == NULL)
        return reply_with(500, reply, "out of memory");
    int rc = veer_canary_command(&e->run, verb, now_ms(), &up, err, sizeof err);
    if (rc != VEER_CANARY_OK)
        return reply_with(rc == VEER_CANARY_ESTATE ? 409 : rc == VEER_CANARY_ENOMEM ? 500 : 400, reply, err);
    if (strcmp(verb, "resume") == 0)
        take_base(e); /* the run judges what happens from now on, not the paused time */
    apply(e, &up, true);
    *reply = run_json(e);
    return 200;
}

int veer_controller_get(veer_controller_t *ctl, const char *route, cJSON **reply)
{
    if (route_known(ctl, route, NULL) < 0)
        return reply_with(404, reply, "unknown route");
    entry_t *e = get_entry(ctl, route);
    if (e == NULL)
        return reply_with(500, reply, "out of memory");
    *reply = run_json(e);
    if (*reply != NULL)
        cJSON_AddBoolToObject(*reply, "leader", ctl->leader);
    return 200;
}

bool veer_controller_leads(const veer_controller_t *ctl)
{
    return ctl->leader;
}

void veer_controller_weights_changed(veer_controller_t *ctl, const char *route)
{
    if (ctl->peers != NULL) /* a follower's changes stay on it */
        veer_peers_weights_changed(ctl->peers, route);
}

cJSON *veer_controller_peers_json(veer_controller_t *ctl)
{
    return ctl->peers != NULL ? veer_peers_status_json(ctl->peers) : cJSON_CreateArray();
}

bool veer_controller_owns(const veer_controller_t *ctl, const char *route)
{
    const entry_t *e = find_entry(ctl, route);
    return e != NULL && veer_canary_active(&e->run);
}

void veer_controller_release(veer_controller_t *ctl, const char *route)
{
    entry_t *e = find_entry(ctl, route);
    veer_canary_update_t up;
    char err[256];

    if (e == NULL || !veer_canary_active(&e->run))
        return;
    if (veer_canary_abort(&e->run, now_ms(), &up, err, sizeof err) == VEER_CANARY_OK)
        apply(e, &up, false);
}

cJSON *veer_controller_summary(const veer_controller_t *ctl, const char *route)
{
    const entry_t *e = find_entry(ctl, route);
    if (e == NULL || e->run.phase == VEER_CANARY_IDLE)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "phase", veer_canary_phase_name(e->run.phase));
    cJSON_AddStringToObject(o, "stage", veer_canary_stage_name(e->run.stage));
    cJSON_AddStringToObject(o, "stable", e->run.policy.stable);
    cJSON_AddStringToObject(o, "canary", e->run.policy.canary);
    cJSON_AddNumberToObject(o, "weight", e->run.weight);
    cJSON_AddNumberToObject(o, "max_weight", e->run.policy.max_weight);
    cJSON_AddNumberToObject(o, "checks_passed", (double)e->checks_passed);
    cJSON_AddNumberToObject(o, "checks_failed", e->run.failed_checks);
    if (e->run.has_analysis)
        cJSON_AddItemToObject(o, "last_analysis", veer_canary_analysis_to_json(&e->run.last_analysis));
    else
        cJSON_AddNullToObject(o, "last_analysis");
    return o;
}

/* ---- metrics ------------------------------------------------------------------ */

/* A value of one side (the canary's or stable's window) of an analysis;
 * false when that side had none. */
typedef bool (*side_value_fn)(const veer_canary_analysis_t *a, bool canary, double *out);

static bool success_ratio_of(const veer_canary_analysis_t *a, bool canary, double *out)
{
    double pct = canary ? a->canary_success : a->stable_success;
    *out = pct / 100.0;
    return pct >= 0;
}

static bool p99_seconds_of(const veer_canary_analysis_t *a, bool canary, double *out)
{
    const veer_canary_window_t *w = canary ? &a->canary : &a->stable;
    *out = (double)w->p99_us / 1e6;
    return w->requests > 0;
}

/* name{route,cluster} for both clusters of every run with an analysis. */
static void write_side_samples(veer_prom_buf_t *b, const veer_controller_t *ctl, const char *name, side_value_fn fn)
{
    for (size_t i = 0; i < ctl->count; i++) {
        const entry_t *e = ctl->entries[i];
        if (e->run.phase == VEER_CANARY_IDLE || !e->run.has_analysis)
            continue;
        for (int side = 0; side < 2; side++) {
            double v;
            veer_prom_label_t l[] = {{"route", e->route},
                                     {"cluster", side == 0 ? e->run.policy.canary : e->run.policy.stable}};
            if (fn(&e->run.last_analysis, side == 0, &v))
                veer_prom_sample_double(b, name, l, 2, v);
        }
    }
}

void veer_controller_write_metrics(const veer_controller_t *ctl, veer_prom_buf_t *b)
{
    veer_prom_family(b, "veer_canary_weight", "gauge", "The canary's live weight in percent.");
    for (size_t i = 0; i < ctl->count; i++) {
        const entry_t *e = ctl->entries[i];
        veer_prom_label_t l[] = {{"route", e->route}};
        if (e->run.phase != VEER_CANARY_IDLE)
            veer_prom_sample_u64(b, "veer_canary_weight", l, 1, e->run.weight);
    }
    veer_prom_family(b, "veer_canary_phase", "gauge", "1 for the phase the route's canary run is in.");
    for (size_t i = 0; i < ctl->count; i++) {
        const entry_t *e = ctl->entries[i];
        for (int p = 0; e->run.phase != VEER_CANARY_IDLE && p < VEER_CANARY_PHASE_COUNT; p++) {
            veer_prom_label_t l[] = {{"route", e->route}, {"phase", veer_canary_phase_name((veer_canary_phase_t)p)}};
            veer_prom_sample_u64(b, "veer_canary_phase", l, 2, e->run.phase == (veer_canary_phase_t)p);
        }
    }
    veer_prom_family(b, "veer_canary_checks_failed", "gauge", "Failed analyses of the current canary run.");
    for (size_t i = 0; i < ctl->count; i++) {
        const entry_t *e = ctl->entries[i];
        veer_prom_label_t l[] = {{"route", e->route}};
        if (e->run.phase != VEER_CANARY_IDLE)
            veer_prom_sample_u64(b, "veer_canary_checks_failed", l, 1, e->run.failed_checks);
    }
    veer_prom_family(b, "veer_canary_success_ratio", "gauge",
                     "Success ratio of a cluster in the canary controller's last analysis.");
    write_side_samples(b, ctl, "veer_canary_success_ratio", success_ratio_of);
    veer_prom_family(b, "veer_canary_p99_seconds", "gauge",
                     "P99 request duration of a cluster in the canary controller's last analysis.");
    write_side_samples(b, ctl, "veer_canary_p99_seconds", p99_seconds_of);
    veer_prom_family(b, "veer_canary_webhooks_refused_total", "counter",
                     "Webhook calls refused because too many were in flight.");
    veer_prom_sample_u64(b, "veer_canary_webhooks_refused_total", NULL, 0, veer_webhooks_refused(ctl->hooks));
    veer_prom_family(b, "veer_canary_leader", "gauge",
                     "1 when this replica runs the canary controller (config peers.leader), 0 on a follower.");
    veer_prom_sample_u64(b, "veer_canary_leader", NULL, 0, ctl->leader ? 1 : 0);
    if (ctl->peers != NULL)
        veer_peers_write_metrics(ctl->peers, b);
}

/* ---- state file ------------------------------------------------------------------ */

cJSON *veer_controller_state_json(const veer_controller_t *ctl)
{
    cJSON *all = NULL;
    for (size_t i = 0; i < ctl->count; i++) {
        const entry_t *e = ctl->entries[i];
        if (e->run.phase == VEER_CANARY_IDLE && e->stable[0] == '\0')
            continue;
        if (all == NULL && (all = cJSON_CreateObject()) == NULL)
            return NULL;
        cJSON *o = cJSON_AddObjectToObject(all, e->route);
        if (o == NULL)
            continue;
        if (e->stable[0] != '\0')
            cJSON_AddStringToObject(o, "stable_cluster", e->stable);
        cJSON_AddNumberToObject(o, "checks_passed", (double)e->checks_passed);
        cJSON *run = veer_canary_to_json(&e->run);
        if (run != NULL)
            cJSON_AddItemToObject(o, "run", run);
    }
    return all;
}

static cJSON *state_hook(void *ctx)
{
    return veer_controller_state_json(ctx);
}

static void restore_one(veer_controller_t *ctl, const char *route, const cJSON *saved)
{
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(saved, "run");
    const cJSON *stable = cJSON_GetObjectItemCaseSensitive(saved, "stable_cluster");
    const cJSON *passed = cJSON_GetObjectItemCaseSensitive(saved, "checks_passed");
    veer_canary_update_t up;
    char err[512] = "";

    if (route_known(ctl, route, NULL) < 0) {
        veer_log_warn("canary: state_file: route %s is no longer in the config; its run is dropped", route);
        return;
    }
    entry_t *e = get_entry(ctl, route);
    if (e == NULL)
        return;
    if (cJSON_IsString(stable) && strlen(stable->valuestring) < sizeof e->stable)
        snprintf(e->stable, sizeof e->stable, "%s", stable->valuestring);
    if (cJSON_IsNumber(passed) && passed->valuedouble >= 0)
        e->checks_passed = (uint64_t)passed->valuedouble;
    if (run == NULL)
        return;
    if (veer_canary_restore(&e->run, run, now_ms(), &up, err, sizeof err) != VEER_CANARY_OK) {
        veer_log_warn("canary %s: state_file: %s; the run is dropped", route, err);
        return;
    }
    if (!ctl->leader) {
        /* saved while this replica led: the leader runs it now; the weights stay as they were */
        if (veer_canary_active(&e->run))
            veer_log_warn("canary %s: state_file: a %s run is not resumed: this replica follows the canary leader "
                          "(peers.leader); the route keeps its weights",
                          route, veer_canary_phase_name(e->run.phase));
        veer_canary_run_free(&e->run);
        return;
    }
    e->analyses_seen = e->run.analyses;
    veer_snapshot_t *snap = veer_runtime_acquire(ctl->rt);
    int r = veer_config_route_index(snap->config, route);
    source_t source;
    if (r >= 0 && source_of(snap->config->routes[r].canary, &source) != 0)
        veer_log_error("canary %s: out of memory for its analysis source; it reads local stats", route);
    else if (r >= 0)
        set_source(e, &source);
    veer_snapshot_release(snap);
    veer_log_info("canary %s: restored a %s run at weight %u", route, veer_canary_phase_name(e->run.phase),
                  e->run.weight);
    up.phase_changed = false; /* a restart is not a phase change: no webhook */
    up.events = 0;
    apply(e, &up, true);
    if (!up.analysed)
        take_base(e);
}

static void restore_all(veer_controller_t *ctl)
{
    veer_snapshot_t *snap = veer_runtime_acquire(ctl->rt);
    char *path = snap->config->state_file != NULL ? strdup(snap->config->state_file) : NULL;
    veer_snapshot_release(snap);
    if (path == NULL)
        return;
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0;
    if (f != NULL) {
        /* a state file is small; the runtime reads it with the same bound */
        size_t cap = 1u << 24;
        buf = malloc(cap + 1);
        if (buf != NULL) {
            len = fread(buf, 1, cap, f);
            buf[len] = '\0';
        }
        fclose(f);
    }
    cJSON *doc = buf != NULL ? cJSON_ParseWithLength(buf, len) : NULL;
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(doc, "canary");
    const cJSON *item;
    cJSON_ArrayForEach(item, all)
    {
        if (cJSON_IsObject(item) && item->string != NULL)
            restore_one(ctl, item->string, item);
    }
    cJSON_Delete(doc);
    free(buf);
    free(path);
}

/* ---- lifecycle ------------------------------------------------------------------ */

/* peers.leader against this host's name, once: a reload may not change it (main.c). */
static void take_role(veer_controller_t *ctl, veer_runtime_t *rt)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        host[0] = '\0';
    veer_snapshot_t *snap = veer_runtime_acquire(rt);
    const veer_peers_config_t *pc = &snap->config->peers;
    ctl->leader = veer_config_leads(snap->config, host);
    if (pc->leader_host != NULL)
        snprintf(ctl->follower_why, sizeof ctl->follower_why,
                 "this replica follows the canary leader (peers.leader is \"%s\", this host is \"%s\"): "
                 "start and steer runs on the leader",
                 pc->leader_host, host);
    else
        snprintf(ctl->follower_why, sizeof ctl->follower_why,
                 "this replica follows the canary leader (peers.leader is false): start and steer runs on the leader");
    veer_snapshot_release(snap);
    veer_log_info("canary: this replica %s", ctl->leader ? "leads (runs the canary controller)"
                                                        : "follows the canary leader (peers.leader)");
}

veer_controller_t *veer_controller_new(struct event_base *base, veer_runtime_t *rt, char *err, size_t errlen)
{
    veer_controller_t *ctl = calloc(1, sizeof *ctl);
    if (ctl != NULL)
        take_role(ctl, rt);
    /* a follower pushes nothing: no peer list, no lookups of peer names */
    if (ctl == NULL || (ctl->hooks = veer_webhooks_new(base)) == NULL ||
        (ctl->prom = veer_promsource_new(base)) == NULL ||
        (ctl->leader && (ctl->peers = veer_peers_new(base, rt, on_peer_failed, ctl)) == NULL)) {
        if (ctl != NULL) {
            veer_webhooks_free(ctl->hooks);
            veer_promsource_free(ctl->prom);
        }
        free(ctl);
        snprintf(err, errlen, "canary controller: out of memory");
        return NULL;
    }
    ctl->base = base;
    ctl->rt = rt;
    veer_state_set_extra("canary", state_hook, ctl);
    restore_all(ctl);
    return ctl;
}

void veer_controller_free(veer_controller_t *ctl)
{
    if (ctl == NULL)
        return;
    veer_state_set_extra(NULL, NULL, NULL);
    veer_promsource_free(ctl->prom); /* cancels the sets in flight: no answer reaches a freed entry */
    for (size_t i = 0; i < ctl->count; i++) {
        entry_t *e = ctl->entries[i];
        free(e->prom_url);
        event_free(e->timer);
        veer_canary_run_free(&e->run);
        free(e->base[0]);
        free(e->base[1]);
        free(e);
    }
    free(ctl->entries);
    veer_webhooks_free(ctl->hooks);
    veer_peers_free(ctl->peers);
    free(ctl);
}
