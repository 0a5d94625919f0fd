/* runtime.c - building and publishing runtime snapshots (see runtime.h).
 * A snapshot is never modified after publication: every change clones the
 * current one, edits the clone and swaps it in under the lock. Endpoint
 * objects are reused across snapshots when the address is unchanged, so pooled
 * connections survive DNS refreshes and reloads. */
#include "runtime.h"

#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "state.h"
#include "stats.h"
#include "tls.h"

static void ab_free(veer_override_t *ab)
{
    if (ab == NULL)
        return;
    free(ab->name);
    free(ab->equals);
    free(ab);
}

/* A copy of ab pointing at cluster; NULL when out of memory. */
static veer_override_t *ab_new(veer_key_kind_t kind, const char *name, const char *equals, int cluster)
{
    veer_override_t *ab = calloc(1, sizeof *ab);
    if (ab == NULL)
        return NULL;
    ab->kind = kind;
    ab->cluster = cluster;
    ab->name = strdup(name);
    ab->equals = strdup(equals);
    if (ab->name == NULL || ab->equals == NULL) {
        ab_free(ab);
        return NULL;
    }
    ab->name_len = strlen(name);
    ab->equals_len = strlen(equals);
    if (kind == VEER_KEY_HEADER) /* the router compares against lower-cased header names */
        for (char *p = ab->name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    return ab;
}

static void snapshot_free(veer_snapshot_t *snap)
{
    if (snap->routes != NULL) {
        for (size_t i = 0; i < snap->config->route_count; i++) {
            free(snap->routes[i].split);
            ab_free(snap->routes[i].ab);
        }
        free(snap->routes);
    }
    if (snap->cluster_endpoints != NULL) {
        for (size_t i = 0; i < snap->config->cluster_count; i++)
            veer_endpoint_set_unref(snap->cluster_endpoints[i]);
        free(snap->cluster_endpoints);
    }
    if (atomic_fetch_sub_explicit(snap->config_refs, 1, memory_order_acq_rel) == 1) {
        veer_tls_set_free(snap->tls);
        veer_stats_layout_free(snap->stats_layout);
        veer_config_free(snap->config);
        free(snap->config_refs);
    }
    free(snap);
}

void veer_snapshot_release(veer_snapshot_t *snap)
{
    if (snap != NULL && atomic_fetch_sub_explicit(&snap->refs, 1, memory_order_acq_rel) == 1)
        snapshot_free(snap);
}

veer_snapshot_t *veer_runtime_acquire(veer_runtime_t *rt)
{
    pthread_mutex_lock(&rt->lock);
    veer_snapshot_t *snap = rt->current;
    atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&rt->lock);
    return snap;
}

/* An empty snapshot for cfg; config_refs NULL means "take ownership of cfg"
 * (and of tls, which lives as long as cfg). */
static veer_snapshot_t *snapshot_new(veer_config_t *cfg, veer_tls_set_t *tls, atomic_uint *config_refs)
{
    veer_snapshot_t *snap = calloc(1, sizeof(*snap));
    if (snap == NULL)
        return NULL;
    if (config_refs == NULL) {
        config_refs = malloc(sizeof(*config_refs));
        if (config_refs == NULL) {
            free(snap);
            return NULL;
        }
        atomic_init(config_refs, 0);
    }
    atomic_fetch_add(config_refs, 1);
    atomic_init(&snap->refs, 1);
    snap->config = cfg;
    snap->tls = tls;
    snap->config_refs = config_refs;
    snap->routes = calloc(cfg->route_count ? cfg->route_count : 1, sizeof(*snap->routes));
    snap->cluster_endpoints = calloc(cfg->cluster_count ? cfg->cluster_count : 1, sizeof(*snap->cluster_endpoints));
    if (snap->routes == NULL || snap->cluster_endpoints == NULL) {
        snapshot_free(snap);
        return NULL;
    }
    return snap;
}

static int route_set_split(veer_route_weights_t *rw, const veer_split_t *split, size_t n)
{
    veer_split_t *copy = malloc((n ? n : 1) * sizeof(*copy));
    if (copy == NULL)
        return -1;
    memcpy(copy, split, n * sizeof(*copy));
    free(rw->split);
    rw->split = copy;
    rw->count = n;
    return 0;
}

static veer_snapshot_t *snapshot_clone(const veer_snapshot_t *old)
{
    veer_snapshot_t *snap = snapshot_new(old->config, old->tls, old->config_refs);
    if (snap == NULL)
        return NULL;
    snap->stats_layout = old->stats_layout;
    snap->generation = old->generation;
    for (size_t i = 0; i < old->config->route_count; i++) {
        if (route_set_split(&snap->routes[i], old->routes[i].split, old->routes[i].count) < 0) {
            snapshot_free(snap);
            return NULL;
        }
        snap->routes[i].mirror = old->routes[i].mirror;
        const veer_override_t *ab = old->routes[i].ab;
        if (ab != NULL && (snap->routes[i].ab = ab_new(ab->kind, ab->name, ab->equals, ab->cluster)) == NULL) {
            snapshot_free(snap);
            return NULL;
        }
    }
    for (size_t i = 0; i < old->config->cluster_count; i++) {
        snap->cluster_endpoints[i] = old->cluster_endpoints[i];
        if (snap->cluster_endpoints[i])
            veer_endpoint_set_ref(snap->cluster_endpoints[i]);
    }
    return snap;
}

static veer_endpoint_t *find_endpoint(const veer_endpoint_set_t *set, const struct sockaddr *sa, socklen_t len)
{
    for (size_t i = 0; set != NULL && i < set->count; i++) {
        veer_endpoint_t *ep = set->endpoints[i];
        if (ep->addrlen == len && memcmp(&ep->addr, sa, len) == 0 && !atomic_load(&ep->retired))
            return ep;
    }
    return NULL;
}

/* Resolve a cluster's endpoints (blocking getaddrinfo for names; used at start
 * and reload only - the periodic refresh is asynchronous, see dns.c). */
static veer_endpoint_set_t *resolve_cluster(const veer_cluster_config_t *cc, const veer_endpoint_set_t *old,
                                            uint32_t workers)
{
    size_t cap = 8, count = 0;
    veer_endpoint_t **eps = malloc(cap * sizeof(*eps));
    if (eps == NULL)
        return NULL;
    for (size_t i = 0; i < cc->endpoint_count; i++) {
        const veer_endpoint_config_t *ec = &cc->endpoints[i];
        char port[8];
        snprintf(port, sizeof(port), "%u", ec->port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
        if (ec->is_literal)
            hints.ai_flags = AI_NUMERICHOST;
        struct addrinfo *res = NULL;
        int rc = getaddrinfo(ec->host, port, &hints, &res);
        if (rc != 0) {
            veer_log_warn("cluster %s: cannot resolve %s: %s", cc->name, ec->host, gai_strerror(rc));
            continue;
        }
        for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
            bool dup = false;
            for (size_t k = 0; k < count && !dup; k++)
                dup = eps[k]->addrlen == ai->ai_addrlen && memcmp(&eps[k]->addr, ai->ai_addr, ai->ai_addrlen) == 0;
            if (dup)
                continue;
            if (count == cap) {
                veer_endpoint_t **grown = realloc(eps, 2 * cap * sizeof(*eps));
                if (grown == NULL)
                    break;
                eps = grown;
                cap *= 2;
            }
            veer_endpoint_t *ep = find_endpoint(old, ai->ai_addr, ai->ai_addrlen);
            if (ep != NULL)
                veer_endpoint_ref(ep);
            else
                ep = veer_endpoint_new(ai->ai_addr, ai->ai_addrlen, ec->host, workers);
            if (ep != NULL)
                eps[count++] = ep;
        }
        freeaddrinfo(res);
    }
    veer_endpoint_set_t *set = veer_endpoint_set_new(count);
    if (set != NULL)
        memcpy(set->endpoints, eps, count * sizeof(*eps));
    else
        for (size_t k = 0; k < count; k++)
            veer_endpoint_unref(eps[k]);
    free(eps);
    return set;
}

/* Mark endpoints of `old` that are not in `cur` retired: drained, not cut. */
static void retire_missing(const veer_endpoint_set_t *old, const veer_endpoint_set_t *cur)
{
    for (size_t i = 0; old != NULL && i < old->count; i++) {
        bool kept = false;
        for (size_t k = 0; cur != NULL && k < cur->count && !kept; k++)
            kept = cur->endpoints[k] == old->endpoints[i];
        if (!kept)
            atomic_store(&old->endpoints[i]->retired, true);
    }
}

/* Swap in snap; the lock must be held. */
static void publish_locked(veer_runtime_t *rt, veer_snapshot_t *snap)
{
    veer_snapshot_t *old = rt->current;
    snap->version = (old ? old->version : 0) + 1;
    if (old != NULL) {
        for (size_t i = 0; i < old->config->cluster_count; i++) {
            int k = veer_config_cluster_index(snap->config, old->config->clusters[i].name);
            retire_missing(old->cluster_endpoints[i], k >= 0 ? snap->cluster_endpoints[k] : NULL);
        }
    }
    rt->current = snap;
    atomic_store_explicit(&rt->version, snap->version, memory_order_release);
    if (old != NULL)
        veer_snapshot_release(old);
}

/* The same, taking the lock. */
static void publish(veer_runtime_t *rt, veer_snapshot_t *snap)
{
    pthread_mutex_lock(&rt->lock);
    publish_locked(rt, snap);
    pthread_mutex_unlock(&rt->lock);
}

static int file_split_into(veer_snapshot_t *snap, size_t r)
{
    const veer_route_config_t *rc = &snap->config->routes[r];
    return route_set_split(&snap->routes[r], rc->split, rc->split_count);
}

int veer_runtime_init(veer_runtime_t *rt, veer_config_t *cfg, veer_tls_set_t *tls, uint32_t worker_count)
{
    memset(rt, 0, sizeof(*rt));
    pthread_mutex_init(&rt->lock, NULL);
    rt->worker_count = worker_count;
    veer_snapshot_t *snap = snapshot_new(cfg, tls, NULL);
    if (snap == NULL)
        return -1;
    for (size_t r = 0; r < cfg->route_count; r++)
        if (file_split_into(snap, r) < 0)
            goto fail;
    for (size_t c = 0; c < cfg->cluster_count; c++)
        if ((snap->cluster_endpoints[c] = resolve_cluster(&cfg->clusters[c], NULL, worker_count)) == NULL)
            goto fail;
    snap->generation = 1;
    if (cfg->state_file != NULL) {
        char err[512];
        if (veer_state_apply(cfg->state_file, snap, err, sizeof(err)) < 0)
            veer_log_warn("%s (starting from the config file's weights)", err);
    }
    publish_locked(rt, snap);
    return 0;
fail:
    snapshot_free(snap);
    return -1;
}

int veer_runtime_attach_stats(veer_runtime_t *rt, veer_stats_t *st)
{
    pthread_mutex_lock(&rt->lock);
    veer_snapshot_t *snap = rt->current;
    veer_stats_layout_t *layout = veer_stats_layout_from_config(st, snap->config);
    if (layout != NULL) {
        rt->stats = st;
        snap->stats_layout = layout; /* no worker reads snap yet */
    }
    pthread_mutex_unlock(&rt->lock);
    return layout != NULL ? VEER_RT_OK : VEER_RT_ENOMEM;
}

void veer_runtime_destroy(veer_runtime_t *rt)
{
    if (rt->current != NULL)
        veer_snapshot_release(rt->current);
    rt->current = NULL;
    pthread_mutex_destroy(&rt->lock);
}

static int find_split(const veer_route_weights_t *rw, int cluster)
{
    for (size_t i = 0; i < rw->count; i++)
        if (rw->split[i].cluster == cluster)
            return (int)i;
    return -1;
}

static int persist(veer_snapshot_t *snap, char *err, size_t errlen)
{
    if (snap->config->state_file == NULL)
        return 0;
    return veer_state_write(snap->config->state_file, snap, err, errlen);
}

/* Mutations run on the main thread only (admin, signals, DNS), so a snapshot
 * can be built and persisted outside the lock: the lock only guards the
 * pointer swap that workers read. */
/* The named clusters of route r already have exactly these weights. */
static bool weights_equal(const veer_snapshot_t *snap, int r, const char *const *names, const int64_t *weights,
                          size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int at = find_split(&snap->routes[r], veer_config_cluster_index(snap->config, names[i]));
        int64_t have = at >= 0 ? (int64_t)snap->routes[r].split[at].weight : 0;
        if (have != weights[i])
            return false;
    }
    return true;
}

/* adopt 0: the next generation; otherwise that generation, which must be
 * newer than the current one unless the weights are already these. */
static int set_weights(veer_runtime_t *rt, const char *route, const char *const *names, const int64_t *weights,
                       size_t n, uint64_t if_generation, uint64_t adopt, bool over_local, uint64_t *new_generation,
                       char *err, size_t errlen)
{
    veer_snapshot_t *cur = veer_runtime_acquire(rt);
    int rc = VEER_RT_EINVAL;
    veer_snapshot_t *snap = NULL;
    int r = veer_config_route_index(cur->config, route);
    if (r < 0) {
        snprintf(err, errlen, "unknown route \"%s\"", route);
        goto out;
    }
    if (n == 0) {
        snprintf(err, errlen, "weights: no cluster given");
        goto out;
    }
    if (if_generation != 0 && if_generation != cur->generation) {
        snprintf(err, errlen, "if_generation %llu is stale: the current generation is %llu",
                 (unsigned long long)if_generation, (unsigned long long)cur->generation);
        rc = VEER_RT_ESTALE;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (veer_config_cluster_index(cur->config, names[i]) < 0) {
            snprintf(err, errlen, "weights.%s: unknown cluster \"%s\"", names[i], names[i]);
            goto out;
        }
        if (weights[i] < 0 || weights[i] > 1000000) {
            snprintf(err, errlen, "weights.%s: weight %lld out of range 0..1000000", names[i], (long long)weights[i]);
            goto out;
        }
    }
    if (adopt != 0 && adopt <= cur->generation) {
        if (weights_equal(cur, r, names, weights, n)) {
            /* a peer's retry of a change this replica already applied */
            if (new_generation)
                *new_generation = cur->generation;
            rc = VEER_RT_OK;
            goto out;
        } else if (!over_local) {
            snprintf(err, errlen,
                     "generation %llu is stale: this replica is at generation %llu with different weights",
                     (unsigned long long)adopt, (unsigned long long)cur->generation);
            rc = VEER_RT_ESTALE;
            goto out;
        }
        /* over_local: the leader's numbering wins, a step back included */
    }
    rc = VEER_RT_ENOMEM;
    if ((snap = snapshot_clone(cur)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    veer_route_weights_t *rw = &snap->routes[r];
    veer_split_t *grown = realloc(rw->split, (rw->count + n) * sizeof(*grown));
    if (grown == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rw->split = grown;
    for (size_t i = 0; i < n; i++) {
        int c = veer_config_cluster_index(cur->config, names[i]);
        int at = find_split(rw, c);
        if (at < 0) /* new clusters go last: keeps sticky assignment monotone */
            rw->split[at = (int)rw->count++] = (veer_split_t){.cluster = c, .weight = 0};
        rw->split[at].weight = (uint32_t)weights[i];
    }
    uint64_t total = 0;
    for (size_t i = 0; i < rw->count; i++)
        total += rw->split[i].weight;
    if (total == 0) {
        snprintf(err, errlen, "weights: all weights of route \"%s\" would be 0", route);
        rc = VEER_RT_EINVAL;
        goto out;
    }
    snap->generation = adopt != 0 ? adopt : cur->generation + 1;
    if (persist(snap, err, errlen) < 0) {
        rc = VEER_RT_ESTATE;
        goto out;
    }
    if (new_generation)
        *new_generation = snap->generation;
    publish(rt, snap);
    snap = NULL;
    rc = VEER_RT_OK;
out:
    if (snap != NULL)
        snapshot_free(snap);
    veer_snapshot_release(cur);
    return rc;
}

int veer_runtime_set_weights(veer_runtime_t *rt, const char *route, const char *const *names, const int64_t *weights,
                             size_t n, uint64_t if_generation, uint64_t *new_generation, char *err, size_t errlen)
{
    return set_weights(rt, route, names, weights, n, if_generation, 0, false, new_generation, err, errlen);
}

int veer_runtime_adopt_weights(veer_runtime_t *rt, const char *route, const char *const *names,
                               const int64_t *weights, size_t n, uint64_t generation, bool over_local,
                               uint64_t *new_generation, char *err, size_t errlen)
{
    return set_weights(rt, route, names, weights, n, 0, generation, over_local, new_generation, err, errlen);
}

int veer_runtime_set_ab(veer_runtime_t *rt, const char *route, const char *cluster, veer_key_kind_t kind,
                        const char *name, const char *equals, char *err, size_t errlen)
{
    veer_snapshot_t *cur = veer_runtime_acquire(rt);
    int r = veer_config_route_index(cur->config, route);
    int c = cluster != NULL ? veer_config_cluster_index(cur->config, cluster) : -1;
    veer_snapshot_t *snap = NULL;
    int rc = VEER_RT_EINVAL;

    if (r < 0 || (cluster != NULL && (c < 0 || name == NULL || equals == NULL))) {
        snprintf(err, errlen, "A/B match: unknown route \"%s\" or cluster \"%s\"", route, cluster ? cluster : "");
        goto out;
    }
    rc = VEER_RT_ENOMEM;
    if ((snap = snapshot_clone(cur)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    ab_free(snap->routes[r].ab);
    snap->routes[r].ab = NULL;
    if (cluster != NULL && (snap->routes[r].ab = ab_new(kind, name, equals, c)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    publish(rt, snap);
    snap = NULL;
    rc = VEER_RT_OK;
out:
    if (snap != NULL)
        snapshot_free(snap);
    veer_snapshot_release(cur);
    return rc;
}

int veer_runtime_set_mirror(veer_runtime_t *rt, const char *route, const char *cluster, char *err, size_t errlen)
{
    veer_snapshot_t *cur = veer_runtime_acquire(rt);
    int r = veer_config_route_index(cur->config, route);
    int c = cluster != NULL ? veer_config_cluster_index(cur->config, cluster) : -1;
    veer_snapshot_t *snap = NULL;
    int rc = VEER_RT_EINVAL;

    if (r < 0 || (cluster != NULL && c < 0)) {
        snprintf(err, errlen, "mirror: unknown route \"%s\" or cluster \"%s\"", route, cluster ? cluster : "");
        goto out;
    }
    rc = VEER_RT_OK;
    if (cur->routes[r].mirror == c + 1)
        goto out; /* already so: no new snapshot */
    rc = VEER_RT_ENOMEM;
    if ((snap = snapshot_clone(cur)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    snap->routes[r].mirror = c + 1;
    publish(rt, snap);
    rc = VEER_RT_OK;
out:
    veer_snapshot_release(cur);
    return rc;
}

static bool file_split_equal(const veer_config_t *a, const veer_route_config_t *ra, const veer_config_t *b,
                             const veer_route_config_t *rb)
{
    if (ra->split_count != rb->split_count)
        return false;
    for (size_t i = 0; i < ra->split_count; i++) {
        if (ra->split[i].weight != rb->split[i].weight ||
            strcmp(a->clusters[ra->split[i].cluster].name, b->clusters[rb->split[i].cluster].name) != 0)
            return false;
    }
    return true;
}

/* Carry a route's runtime weights into the new config when its file split is
 * unchanged. Returns 1 when carried, 0 when the file wins, -1 on OOM. */
static int carry_weights(veer_snapshot_t *snap, size_t r, const veer_snapshot_t *old)
{
    const veer_route_config_t *nr = &snap->config->routes[r];
    int orx = veer_config_route_index(old->config, nr->name);
    if (orx < 0 || !file_split_equal(old->config, &old->config->routes[orx], snap->config, nr))
        return 0;
    const veer_route_weights_t *ow = &old->routes[orx];
    veer_split_t *split = malloc((ow->count ? ow->count : 1) * sizeof(*split));
    if (split == NULL)
        return -1;
    size_t n = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < ow->count; i++) {
        int c = veer_config_cluster_index(snap->config, old->config->clusters[ow->split[i].cluster].name);
        if (c < 0)
            continue;
        split[n++] = (veer_split_t){.cluster = c, .weight = ow->split[i].weight};
        total += ow->split[i].weight;
    }
    if (total == 0) {
        free(split);
        return 0;
    }
    free(snap->routes[r].split);
    snap->routes[r].split = split;
    snap->routes[r].count = n;
    return 1;
}

/* A canary run's A/B match outlives a reload while its route and cluster do. */
static int carry_ab(veer_snapshot_t *snap, size_t r, const veer_snapshot_t *old)
{
    int orx = veer_config_route_index(old->config, snap->config->routes[r].name);
    const veer_override_t *ab = orx >= 0 ? old->routes[orx].ab : NULL;
    if (ab == NULL)
        return 0;
    int c = veer_config_cluster_index(snap->config, old->config->clusters[ab->cluster].name);
    if (c < 0)
        return 0;
    return (snap->routes[r].ab = ab_new(ab->kind, ab->name, ab->equals, c)) != NULL ? 0 : -1;
}

/* A canary run's mirror outlives a reload while its route and cluster do. */
static void carry_mirror(veer_snapshot_t *snap, size_t r, const veer_snapshot_t *old)
{
    int orx = veer_config_route_index(old->config, snap->config->routes[r].name);
    if (orx < 0 || old->routes[orx].mirror <= 0)
        return;
    int c = veer_config_cluster_index(snap->config, old->config->clusters[old->routes[orx].mirror - 1].name);
    snap->routes[r].mirror = c + 1;
}

static bool endpoints_equal(const veer_cluster_config_t *a, const veer_cluster_config_t *b)
{
    if (a->endpoint_count != b->endpoint_count)
        return false;
    for (size_t i = 0; i < a->endpoint_count; i++)
        if (a->endpoints[i].port != b->endpoints[i].port || strcmp(a->endpoints[i].host, b->endpoints[i].host) != 0)
            return false;
    return true;
}

int veer_runtime_reload(veer_runtime_t *rt, veer_config_t *cfg, veer_tls_set_t *tls, char *err, size_t errlen)
{
    veer_snapshot_t *old = veer_runtime_acquire(rt);
    veer_snapshot_t *snap = snapshot_new(cfg, tls, NULL);
    if (snap == NULL) {
        veer_tls_set_free(tls);
        veer_config_free(cfg);
        veer_snapshot_release(old);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    /* series carry over by (route, cluster) name: a reload keeps the numbers */
    if (rt->stats != NULL && (snap->stats_layout = veer_stats_layout_from_config(rt->stats, cfg)) == NULL)
        rc = -1;
    for (size_t r = 0; r < cfg->route_count && rc == 0; r++) {
        int carried = carry_weights(snap, r, old);
        if (carried < 0 || (carried == 0 && file_split_into(snap, r) < 0) || carry_ab(snap, r, old) < 0)
            rc = -1;
        carry_mirror(snap, r, old);
    }
    for (size_t c = 0; c < cfg->cluster_count && rc == 0; c++) {
        int oc = veer_config_cluster_index(old->config, cfg->clusters[c].name);
        const veer_endpoint_set_t *oset = oc >= 0 ? old->cluster_endpoints[oc] : NULL;
        if (oc >= 0 && endpoints_equal(&old->config->clusters[oc], &cfg->clusters[c]) && oset != NULL) {
            snap->cluster_endpoints[c] = (veer_endpoint_set_t *)oset;
            veer_endpoint_set_ref(snap->cluster_endpoints[c]);
        } else if ((snap->cluster_endpoints[c] = resolve_cluster(&cfg->clusters[c], oset, rt->worker_count)) == NULL) {
            rc = -1;
        }
    }
    veer_snapshot_release(old);
    if (rc < 0) {
        snapshot_free(snap);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snap->generation = rt->current->generation + 1;
    if (persist(snap, err, errlen) < 0) {
        snapshot_free(snap);
        return -1;
    }
    publish(rt, snap);
    return 0;
}

void veer_runtime_set_endpoints(veer_runtime_t *rt, const char *cluster, veer_endpoint_set_t *set)
{
    pthread_mutex_lock(&rt->lock);
    int c = veer_config_cluster_index(rt->current->config, cluster);
    veer_snapshot_t *snap = c >= 0 ? snapshot_clone(rt->current) : NULL;
    if (snap == NULL) {
        pthread_mutex_unlock(&rt->lock);
        veer_endpoint_set_unref(set);
        return;
    }
    veer_endpoint_set_unref(snap->cluster_endpoints[c]);
    snap->cluster_endpoints[c] = set;
    publish_locked(rt, snap);
    pthread_mutex_unlock(&rt->lock);
}
