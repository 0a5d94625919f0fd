/* resilience.c - the owner of health checks and outlier detection (see
 * resilience.h). Everything below the registry runs on the main thread: the
 * timer drains the workers' result queues into the detectors, polls the
 * health checkers for due probes, and after any change writes each endpoint's
 * route_state, the only thing workers read. */
#include "resilience.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "health.h"
#include "log.h"
#include "prober.h"

#define TICK_MS 20      /* queue drain cadence: how late a consecutive-failure ejection can be */
#define POLL_BATCH 64
#define DRAIN_BATCH 256

typedef struct probe_ref_s {
    veer_probe_t *probe;
    uint32_t endpoint_id;
    struct probe_ref_s *next;
} probe_ref_t;

typedef struct resil_owned_s {
    veer_outlier_t *det;
    veer_health_t *hc;
    char *health_path;            /* owned copy */
    veer_health_check_config_t hc_cfg;
    veer_endpoint_set_t *set;     /* referenced: the endpoints judged */
    int cfg_index;                /* in the owner's snapshot; -1: not in the config any more */
    probe_ref_t *probes;          /* in flight */
    bool dirty;                   /* route states to republish */
} resil_owned_t;

struct veer_resilience_s {
    struct event_base *base;
    veer_runtime_t *rt;
    veer_snapshot_t *snap;        /* the one the entries were synced with */
    uint64_t version;
    struct event *timer;
    veer_outlier_queue_t **queues;
    uint32_t worker_count;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static veer_resil_cluster_t *registry[VEER_RESIL_MAX_CLUSTERS];
static _Atomic uint32_t registry_count;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static veer_resil_cluster_t *find_locked(const char *name)
{
    uint32_t n = atomic_load(&registry_count);
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

veer_resil_cluster_t *veer_resilience_cluster(const veer_cluster_config_t *cc)
{
    pthread_mutex_lock(&registry_lock);
    veer_resil_cluster_t *c = find_locked(cc->name);
    uint32_t n = atomic_load(&registry_count);
    if (c == NULL && n < VEER_RESIL_MAX_CLUSTERS && (c = calloc(1, sizeof(*c))) != NULL) {
        c->name = strdup(cc->name);
        c->own = calloc(1, sizeof(*c->own));
        if (c->name == NULL || c->own == NULL) {
            free(c->name);
            free(c->own);
            free(c);
            c = NULL;
        } else {
            veer_breaker_init(&c->breaker, &cc->circuit_breakers);
            atomic_init(&c->passive, cc->outlier_detection != NULL);
            c->index = n;
            c->own->cfg_index = -1;
            registry[n] = c;
            atomic_store(&registry_count, n + 1);
        }
    }
    pthread_mutex_unlock(&registry_lock);
    return c;
}

static veer_resil_cluster_t *lookup(const char *name)
{
    pthread_mutex_lock(&registry_lock);
    veer_resil_cluster_t *c = find_locked(name);
    pthread_mutex_unlock(&registry_lock);
    return c;
}

/* ---- events: one JSON log line each ---- */

static void log_event(const char *cluster, const char *event, const char *endpoint, const char *detail,
                      const char *extra)
{
    char ts[32], line[768], c[160], d[320];
    veer_log_timestamp(ts);
    /* veer_json_escape does not terminate its output */
    c[veer_json_escape(c, sizeof(c) - 1, cluster, strlen(cluster))] = '\0';
    d[veer_json_escape(d, sizeof(d) - 1, detail, strlen(detail))] = '\0';
    int n = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s\",\"level\":\"info\",\"msg\":\"%s\",\"event\":\"%s\",\"cluster\":\"%s\","
                     "\"endpoint\":\"%s\",\"detail\":\"%s\"%s}",
                     ts, event, event, c, endpoint, d, extra);
    if (n > 0)
        veer_log_raw(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static const char *endpoint_name(const resil_owned_t *o, uint32_t id)
{
    for (size_t i = 0; o->set != NULL && i < o->set->count; i++)
        if (o->set->endpoints[i]->id == id)
            return o->set->endpoints[i]->name;
    return "-";
}

static void outlier_event_cb(void *arg, const veer_outlier_event_t *ev)
{
    veer_resil_cluster_t *c = arg;
    static const char *const names[] = {"outlier_eject", "outlier_uneject", "outlier_eject_blocked",
                                        "outlier_not_enforced", "panic_on", "panic_off"};
    char extra[200];
    snprintf(extra, sizeof(extra),
             ",\"reason\":\"%s\",\"ejection_count\":%u,\"healthy_hosts\":%u,\"ejected_hosts\":%u,\"total_hosts\":%u",
             veer_outlier_reason_name(ev->reason), ev->ejection_count, ev->healthy_hosts, ev->ejected_hosts,
             ev->total_hosts);
    log_event(c->name, names[ev->kind], ev->endpoint_id ? endpoint_name(c->own, ev->endpoint_id) : "",
              ev->detail, extra);
    c->own->dirty = true;
}

static void health_event_cb(void *arg, const veer_health_event_t *ev)
{
    veer_resil_cluster_t *c = arg;
    char extra[96];
    snprintf(extra, sizeof(extra), ",\"from\":\"%s\",\"to\":\"%s\"", veer_health_state_name(ev->from),
             veer_health_state_name(ev->to));
    log_event(c->name, "health_change", endpoint_name(c->own, ev->endpoint_id), ev->detail, extra);
    c->own->dirty = true;
}

static veer_outlier_health_t health_as_outlier(const resil_owned_t *o, veer_health_state_t st)
{
    if (st == VEER_HEALTH_HEALTHY)
        return VEER_OUTLIER_HEALTH_OK;
    if (st == VEER_HEALTH_UNHEALTHY)
        return VEER_OUTLIER_HEALTH_FAILING;
    return o->hc_cfg.require_initial_pass ? VEER_OUTLIER_HEALTH_PENDING : VEER_OUTLIER_HEALTH_OK;
}

/* Write every endpoint's route_state and the panic flag from the detector. */
static void publish(veer_resil_cluster_t *c)
{
    resil_owned_t *o = c->own;
    o->dirty = false;
    for (size_t i = 0; o->set != NULL && i < o->set->count; i++) {
        veer_endpoint_t *ep = o->set->endpoints[i];
        bool ok = o->det == NULL || veer_outlier_routable(o->det, ep->id);
        atomic_store_explicit(&ep->route_state, ok ? VEER_EP_ROUTABLE : VEER_EP_UNROUTABLE, memory_order_relaxed);
        /* what /metrics, /v1/stats and the canary's blue_green gate read: not
         * yet checked counts as not healthy, as it takes no traffic */
        veer_outlier_host_info_t info;
        bool ejected = o->det != NULL && veer_outlier_host_info(o->det, ep->id, &info) == 0 && info.ejected;
        bool unhealthy = o->hc != NULL && veer_health_state(o->hc, ep->id) != VEER_HEALTH_HEALTHY;
        atomic_store_explicit(&ep->ejected, ejected, memory_order_relaxed);
        atomic_store_explicit(&ep->unhealthy, unhealthy, memory_order_relaxed);
    }
    atomic_store_explicit(&c->panic, o->det != NULL && veer_outlier_panic(o->det), memory_order_relaxed);
}

/* ---- probes ---- */

static void probe_forget(resil_owned_t *o, veer_probe_t *p)
{
    for (probe_ref_t **pp = &o->probes; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->probe == p) {
            probe_ref_t *dead = *pp;
            *pp = dead->next;
            free(dead);
            return;
        }
    }
}

static void probes_cancel(resil_owned_t *o, bool all, uint32_t endpoint_id)
{
    for (probe_ref_t **pp = &o->probes; *pp != NULL;) {
        probe_ref_t *r = *pp;
        if (all || r->endpoint_id == endpoint_id) {
            *pp = r->next;
            veer_probe_cancel(r->probe);
            free(r);
        } else {
            pp = &r->next;
        }
    }
}

static void probe_done_cb(void *arg, veer_probe_t *p, uint32_t id, int status, veer_health_failure_t failure,
                          const char *reason)
{
    veer_resil_cluster_t *c = arg;
    resil_owned_t *o = c->own;
    probe_forget(o, p);
    if (o->hc == NULL)
        return;
    uint64_t now = now_ms();
    veer_health_result_t res;
    int rc = status > 0 ? veer_health_on_response(o->hc, id, status, now, &res)
                        : veer_health_on_failure_reason(o->hc, id, failure, reason, now, &res);
    if (rc < 0)
        return; /* late: the checker failed it at its deadline already */
    if (o->det != NULL) {
        if (res.changed)
            veer_outlier_set_health(o->det, id, health_as_outlier(o, res.state));
        if (res.passed)
            veer_outlier_on_health_pass(o->det, id, res.probe_started_ms, now);
    }
    if (res.changed)
        o->dirty = true;
    if (o->dirty)
        publish(c);
}

static void probe_due(veer_resilience_t *r, veer_resil_cluster_t *c, uint64_t now)
{
    resil_owned_t *o = c->own;
    uint32_t due[POLL_BATCH];
    size_t n;
    do {
        n = veer_health_poll(o->hc, now, due, POLL_BATCH);
        for (size_t i = 0; i < n; i++) {
            const veer_endpoint_t *ep = NULL;
            for (size_t k = 0; o->set != NULL && k < o->set->count && ep == NULL; k++)
                if (o->set->endpoints[k]->id == due[i])
                    ep = o->set->endpoints[k];
            probes_cancel(o, false, due[i]); /* a leftover past its deadline */
            probe_ref_t *ref = ep != NULL ? calloc(1, sizeof(*ref)) : NULL;
            veer_probe_t *p = ref != NULL ? veer_probe_start(r->base, r->snap, o->cfg_index, ep, o->health_path,
                                                             o->hc_cfg.timeout_ms, probe_done_cb, c)
                                          : NULL;
            if (p == NULL) {
                free(ref);
                probe_done_cb(c, NULL, due[i], 0, VEER_HEALTH_FAIL_CONNECT, NULL);
                continue;
            }
            ref->probe = p;
            ref->endpoint_id = due[i];
            ref->next = o->probes;
            o->probes = ref;
        }
    } while (n == POLL_BATCH);
    /* poll may have failed probes at their deadline: feed those states to the detector too */
    for (size_t k = 0; o->det != NULL && o->set != NULL && k < o->set->count; k++) {
        uint32_t id = o->set->endpoints[k]->id;
        veer_outlier_host_info_t hi;
        veer_outlier_health_t want = health_as_outlier(o, veer_health_state(o->hc, id));
        if (veer_outlier_host_info(o->det, id, &hi) == 0 && hi.health != want)
            veer_outlier_set_health(o->det, id, want);
    }
}

/* ---- following the snapshots ---- */

static void owned_clear(resil_owned_t *o)
{
    probes_cancel(o, true, 0);
    veer_outlier_free(o->det);
    veer_health_free(o->hc);
    free(o->health_path);
    o->det = NULL;
    o->hc = NULL;
    o->health_path = NULL;
    if (o->set != NULL)
        veer_endpoint_set_unref(o->set);
    o->set = NULL;
}

static int sync_cluster(veer_resil_cluster_t *c, const veer_snapshot_t *snap, int index, uint64_t now)
{
    resil_owned_t *o = c->own;
    const veer_cluster_config_t *cc = &snap->config->clusters[index];
    o->cfg_index = index;
    veer_breaker_set_limits(&c->breaker, &cc->circuit_breakers);
    /* Without outlier_detection the detector only needs health verdicts:
     * workers skip the per-attempt report (and its clock reads). */
    atomic_store_explicit(&c->passive, cc->outlier_detection != NULL, memory_order_relaxed);
    veer_outlier_options_t opts = {.config = cc->outlier_detection,
                                   .panic_threshold = cc->panic_threshold,
                                   .hosts_start_pending = cc->health_check != NULL &&
                                                          cc->health_check->require_initial_pass,
                                   .seed = ((uint64_t)c->index << 32) ^ now ^ 0x9e3779b97f4a7c15ull,
                                   .on_event = outlier_event_cb,
                                   .event_arg = c};
    if (o->det == NULL)
        o->det = veer_outlier_new(&opts, now);
    else
        veer_outlier_reconfigure(o->det, &opts, now);
    if (o->det == NULL)
        return -ENOMEM;
    if (cc->health_check == NULL && o->hc != NULL) {
        probes_cancel(o, true, 0);
        veer_health_free(o->hc);
        o->hc = NULL;
    } else if (cc->health_check != NULL) {
        char *path = strdup(cc->health_check->path != NULL ? cc->health_check->path : "/");
        if (path == NULL)
            return -ENOMEM;
        free(o->health_path);
        o->health_path = path;
        o->hc_cfg = *cc->health_check;
        o->hc_cfg.path = o->health_path;
        if (o->hc == NULL)
            o->hc = veer_health_new(&o->hc_cfg, opts.seed + 1, health_event_cb, c);
        else
            veer_health_reconfigure(o->hc, &o->hc_cfg);
        if (o->hc == NULL)
            return -ENOMEM;
    }
    veer_endpoint_set_t *set = snap->cluster_endpoints[index];
    size_t count = set != NULL ? set->count : 0;
    uint32_t *ids = calloc(count + 1, sizeof(*ids));
    if (ids == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < count; i++)
        ids[i] = set->endpoints[i]->id;
    int rc = veer_outlier_sync(o->det, ids, count, now);
    if (rc == 0 && o->hc != NULL)
        rc = veer_health_sync(o->hc, ids, count, now);
    free(ids);
    if (rc < 0)
        return rc;
    if (set != NULL)
        veer_endpoint_set_ref(set);
    if (o->set != NULL)
        veer_endpoint_set_unref(o->set);
    o->set = set;
    /* the detector's view of a kept host's health must follow the (new) checker */
    for (size_t i = 0; o->hc != NULL && i < count; i++)
        veer_outlier_set_health(o->det, set->endpoints[i]->id,
                                health_as_outlier(o, veer_health_state(o->hc, set->endpoints[i]->id)));
    publish(c);
    return 0;
}

static void follow_snapshot(veer_resilience_t *r, uint64_t now)
{
    uint64_t v = atomic_load_explicit(&r->rt->version, memory_order_acquire);
    if (r->snap != NULL && v == r->version)
        return;
    veer_snapshot_t *snap = veer_runtime_acquire(r->rt);
    uint32_t n = atomic_load(&registry_count);
    for (uint32_t i = 0; i < n; i++)
        registry[i]->own->cfg_index = -1;
    for (size_t k = 0; k < snap->config->cluster_count; k++) {
        veer_resil_cluster_t *c = veer_resilience_cluster(&snap->config->clusters[k]);
        if (c == NULL) {
            veer_log_error("resilience: no state for cluster %s (out of memory or too many clusters)",
                           snap->config->clusters[k].name);
            continue;
        }
        int rc = sync_cluster(c, snap, (int)k, now);
        if (rc < 0)
            veer_log_error("resilience: cluster %s: cannot follow the new endpoints: %s", c->name, strerror(-rc));
    }
    n = atomic_load(&registry_count);
    for (uint32_t i = 0; i < n; i++)
        if (registry[i]->own->cfg_index < 0)
            owned_clear(registry[i]->own); /* removed from the config: its breaker stays for a comeback */
    if (r->snap != NULL)
        veer_snapshot_release(r->snap);
    r->snap = snap;
    r->version = snap->version;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_resilience_t *r = arg;
    uint64_t now = now_ms();
    follow_snapshot(r, now);
    uint32_t n = atomic_load(&registry_count);
    veer_outlier_sample_t batch[DRAIN_BATCH];
    for (uint32_t w = 0; w < r->worker_count; w++) {
        size_t got;
        do {
            got = veer_outlier_queue_pop(r->queues[w], batch, DRAIN_BATCH);
            for (size_t i = 0; i < got; i++) {
                if (batch[i].cluster >= n)
                    continue;
                resil_owned_t *o = registry[batch[i].cluster]->own;
                if (o->det != NULL)
                    veer_outlier_on_result(o->det, batch[i].endpoint_id, (veer_outlier_result_t)batch[i].result,
                                           batch[i].latency_us, now);
            }
        } while (got == DRAIN_BATCH);
    }
    for (uint32_t i = 0; i < n; i++) {
        veer_resil_cluster_t *c = registry[i];
        if (c->own->det != NULL)
            veer_outlier_tick(c->own->det, now);
        if (c->own->hc != NULL && veer_health_next_wakeup(c->own->hc) <= now)
            probe_due(r, c, now);
        if (c->own->dirty)
            publish(c);
    }
}

veer_resilience_t *veer_resilience_start(struct event_base *base, veer_runtime_t *rt, uint32_t worker_count)
{
    veer_resilience_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->base = base;
    r->rt = rt;
    r->worker_count = worker_count;
    r->queues = calloc(worker_count, sizeof(*r->queues));
    r->timer = event_new(base, -1, EV_PERSIST, tick_cb, r);
    for (uint32_t i = 0; r->queues != NULL && i < worker_count; i++)
        if ((r->queues[i] = veer_outlier_queue_new(VEER_RESIL_QUEUE_CAPACITY)) == NULL)
            break;
    if (r->queues == NULL || r->timer == NULL || (worker_count > 0 && r->queues[worker_count - 1] == NULL)) {
        veer_resilience_free(r);
        return NULL;
    }
    follow_snapshot(r, now_ms()); /* route states before the first request */
    struct timeval tv = {0, TICK_MS * 1000};
    event_add(r->timer, &tv);
    return r;
}

veer_outlier_queue_t *veer_resilience_queue(veer_resilience_t *r, uint32_t worker)
{
    return worker < r->worker_count ? r->queues[worker] : NULL;
}

void veer_resilience_free(veer_resilience_t *r)
{
    if (r == NULL)
        return;
    if (r->timer != NULL)
        event_free(r->timer);
    for (uint32_t i = 0; r->queues != NULL && i < r->worker_count; i++)
        veer_outlier_queue_free(r->queues[i]);
    free(r->queues);
    pthread_mutex_lock(&registry_lock);
    uint32_t n = atomic_load(&registry_count);
    for (uint32_t i = 0; i < n; i++) {
        owned_clear(registry[i]->own);
        free(registry[i]->own);
        free(registry[i]->name);
        free(registry[i]);
        registry[i] = NULL;
    }
    atomic_store(&registry_count, 0);
    pthread_mutex_unlock(&registry_lock);
    if (r->snap != NULL)
        veer_snapshot_release(r->snap);
    free(r);
}

/* ---- status ---- */

/* Wall clock minus monotonic clock, in ms. Sticky (main thread only): read
 * afresh each time, the two clocks' ms truncation would move a failure's
 * time by 1 ms between two reads; it is re-taken only when the wall clock
 * was stepped by more than 100 ms. */
static int64_t wall_offset_ms(void)
{
    static int64_t offset;
    static bool known;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t now = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000 - (int64_t)now_ms();
    if (!known || now - offset > 100 || offset - now > 100) {
        offset = now;
        known = true;
    }
    return offset;
}

/* health.last_failure: kept after a recovery. The checker's clock is
 * monotonic; the wall time is that plus the clocks' offset. */
static void add_last_failure(cJSON *h, const veer_health_host_info_t *hi)
{
    if (hi->failures_total == 0) {
        cJSON_AddNullToObject(h, "last_failure");
        return;
    }
    int64_t signed_at = (int64_t)hi->last_failure_ms + wall_offset_ms();
    uint64_t at_ms = signed_at > 0 ? (uint64_t)signed_at : 0;
    time_t secs = (time_t)(at_ms / 1000u);
    struct tm tm;
    char at[40] = "";
    if (gmtime_r(&secs, &tm) != NULL) {
        size_t n = strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(at + n, sizeof(at) - n, ".%03uZ", (unsigned)(at_ms % 1000u));
    }
    cJSON *f = cJSON_AddObjectToObject(h, "last_failure");
    cJSON_AddStringToObject(f, "reason", hi->last_failure_reason);
    cJSON_AddStringToObject(f, "at", at);
    cJSON_AddNumberToObject(f, "consecutive", hi->last_failure_streak);
}

void veer_resilience_endpoint_json(const char *cluster, uint32_t endpoint_id, cJSON *obj)
{
    veer_resil_cluster_t *c = lookup(cluster);
    if (c == NULL)
        return;
    resil_owned_t *o = c->own;
    veer_health_host_info_t hi;
    if (o->hc != NULL && veer_health_host_info(o->hc, endpoint_id, &hi) == 0) {
        cJSON *h = cJSON_AddObjectToObject(obj, "health");
        cJSON_AddStringToObject(h, "state", veer_health_state_name(hi.state));
        cJSON_AddNumberToObject(h, "last_status", hi.last_status);
        cJSON_AddNumberToObject(h, "checks_total", (double)hi.checks_total);
        cJSON_AddNumberToObject(h, "failures_total", (double)hi.failures_total);
        add_last_failure(h, &hi);
    } else {
        cJSON_AddNullToObject(obj, "health");
    }
    veer_outlier_host_info_t oi;
    if (o->det != NULL && veer_outlier_host_info(o->det, endpoint_id, &oi) == 0) {
        cJSON_AddBoolToObject(obj, "routable", oi.routable);
        cJSON *e = cJSON_AddObjectToObject(obj, "ejection");
        cJSON_AddBoolToObject(e, "ejected", oi.ejected);
        if (oi.ejected) {
            cJSON_AddStringToObject(e, "reason", veer_outlier_reason_name(oi.reason));
            cJSON_AddNumberToObject(e, "remaining_ms", (double)(oi.ejected_until_ms > now_ms()
                                                                 ? oi.ejected_until_ms - now_ms() : 0));
        }
        cJSON_AddNumberToObject(e, "count", oi.ejection_count);
        cJSON_AddNumberToObject(e, "ejections_total", (double)oi.ejections_total);
    }
}

void veer_resilience_cluster_json(const char *cluster, cJSON *cobj)
{
    veer_resil_cluster_t *c = lookup(cluster);
    if (c == NULL)
        return;
    cJSON *b = cJSON_AddObjectToObject(cobj, "circuit_breakers");
    for (int k = 0; k < VEER_BREAKER_KINDS; k++) {
        cJSON *kind = cJSON_AddObjectToObject(b, veer_breaker_kind_name((veer_breaker_kind_t)k));
        cJSON_AddNumberToObject(kind, "limit", veer_breaker_limit(&c->breaker, (veer_breaker_kind_t)k));
        cJSON_AddNumberToObject(kind, "active", veer_breaker_active(&c->breaker, (veer_breaker_kind_t)k));
        cJSON_AddBoolToObject(kind, "open", veer_breaker_open(&c->breaker, (veer_breaker_kind_t)k));
        cJSON_AddNumberToObject(kind, "overflows", (double)veer_breaker_overflows(&c->breaker, (veer_breaker_kind_t)k));
    }
    cJSON_AddBoolToObject(cobj, "panic", atomic_load(&c->panic));
    if (c->own->det != NULL) {
        veer_outlier_stats_t st;
        veer_outlier_stats(c->own->det, &st);
        cJSON *e = cJSON_AddObjectToObject(cobj, "ejections_total");
        for (int k = 0; k < VEER_OUTLIER_REASON_COUNT; k++)
            cJSON_AddNumberToObject(e, veer_outlier_reason_name((veer_outlier_reason_t)k),
                                    (double)st.ejections_total[k]);
        cJSON_AddNumberToObject(cobj, "healthy_hosts", st.healthy_hosts);
        cJSON_AddNumberToObject(cobj, "ejected_hosts", st.ejected_hosts);
    }
}

int veer_resilience_outlier_stats(const char *cluster, veer_outlier_stats_t *out)
{
    veer_resil_cluster_t *c = lookup(cluster);
    if (c == NULL || c->own->det == NULL)
        return -ENOENT;
    veer_outlier_stats(c->own->det, out);
    return 0;
}
