/* worker.c - a worker thread: its event base (no locks: the only cross-thread
 * signal is an eventfd), its SO_REUSEPORT listening sockets, its downstream
 * connections and its view of the runtime snapshot (see worker.h). */
#include "worker.h"
#include "exchange.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "h1.h"
#include "h2.h"
#include "h2up.h"
#include "log.h"
#include "mirror.h"
#include "resilience.h"
#include "stats.h"
#include "upstream.h"

atomic_uint_fast64_t veer_downstream_active_total;

static void wsnap_free(veer_wsnap_t *ws)
{
    veer_snapshot_release(ws->snap);
    free(ws->rr);
    free(ws->route_tv);
    free(ws->resil);
    free(ws);
}

void veer_wsnap_release(veer_worker_t *w, veer_wsnap_t *ws)
{
    if (--ws->refs == 0)
        wsnap_free(ws);
}

static veer_wsnap_t *wsnap_new(veer_runtime_t *rt, struct event_base *base)
{
    veer_wsnap_t *ws = calloc(1, sizeof(*ws));
    if (ws == NULL)
        return NULL;
    ws->snap = veer_runtime_acquire(rt);
    ws->refs = 1;
    const veer_config_t *cfg = ws->snap->config;
    ws->rr = calloc(cfg->cluster_count + 1, sizeof(*ws->rr));
    ws->route_tv = calloc(cfg->route_count + 1, sizeof(*ws->route_tv));
    if (ws->rr == NULL || ws->route_tv == NULL) {
        wsnap_free(ws);
        return NULL;
    }
    for (size_t r = 0; r < cfg->route_count; r++) {
        uint64_t ms = cfg->routes[r].timeout_ms;
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        ws->route_tv[r] = ms ? event_base_init_common_timeout(base, &tv) : NULL;
    }
    /* Looked up by name once per snapshot, so breakers survive reloads and the
     * request path indexes an array. */
    ws->resil = calloc(cfg->cluster_count + 1, sizeof(*ws->resil));
    for (size_t c = 0; ws->resil != NULL && c < cfg->cluster_count; c++)
        ws->resil[c] = veer_resilience_cluster(&cfg->clusters[c]);
    return ws;
}

/* Close this worker's idle connections to endpoints the new snapshot retired. */
static void close_retired_idle(veer_worker_t *w, const veer_snapshot_t *old)
{
    for (size_t c = 0; c < old->config->cluster_count; c++) {
        const veer_endpoint_set_t *set = old->cluster_endpoints[c];
        for (size_t i = 0; set != NULL && i < set->count; i++)
            if (atomic_load(&set->endpoints[i]->retired)) {
                veer_upconn_close_idle(w, set->endpoints[i]);
                veer_h2up_close_idle(w, set->endpoints[i]);
            }
    }
}

veer_wsnap_t *veer_worker_snapshot(veer_worker_t *w)
{
    uint64_t v = atomic_load_explicit(&w->rt->version, memory_order_acquire);
    if (v != w->ws->snap->version) {
        veer_wsnap_t *ws = wsnap_new(w->rt, w->base);
        if (ws != NULL) {
            veer_wsnap_t *old = w->ws;
            w->ws = ws;
            close_retired_idle(w, old->snap);
            veer_wsnap_release(w, old);
        }
    }
    return w->ws;
}

uint32_t veer_worker_random(veer_worker_t *w)
{
    /* xorshift64* */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_listen_t *l = arg;
    veer_worker_t *w = l->w;
    uint64_t max = w->ws->snap->config->limits.max_connections;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int cfd = accept4(fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                veer_log_warn("accept: %s", strerror(errno));
            return;
        }
        if (atomic_fetch_add(&veer_downstream_active_total, 1) >= max) {
            atomic_fetch_sub(&veer_downstream_active_total, 1);
            close(cfd); /* over limits.max_connections */
            continue;
        }
        atomic_fetch_add_explicit(&w->stats.downstream_cx_total, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&w->stats.downstream_cx_active, 1, memory_order_relaxed);
        veer_worker_snapshot(w);
        if (veer_h1conn_new(w, cfd, (struct sockaddr *)&peer, len, l->listener) == NULL) {
            close(cfd);
            veer_worker_conn_closed(w);
        }
    }
}

static int listen_socket(const veer_listener_config_t *lc, char *err, size_t errlen)
{
    int fd = socket(lc->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        snprintf(err, errlen, "listener %s (%s): socket: %s", lc->name, lc->address, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (lc->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&lc->addr, lc->addrlen) < 0 || listen(fd, 1024) < 0) {
        snprintf(err, errlen, "listener %s (%s): %s", lc->name, lc->address, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void close_listeners(veer_worker_t *w)
{
    for (size_t i = 0; i < w->listen_count; i++) {
        if (w->listens[i].fd >= 0) {
            event_del(&w->listens[i].ev);
            close(w->listens[i].fd);
            w->listens[i].fd = -1;
        }
    }
}

static void close_idle_upstreams(veer_worker_t *w)
{
    const veer_snapshot_t *snap = w->ws->snap;
    for (size_t c = 0; c < snap->config->cluster_count; c++) {
        const veer_endpoint_set_t *set = snap->cluster_endpoints[c];
        for (size_t i = 0; set != NULL && i < set->count; i++) {
            veer_upconn_close_idle(w, set->endpoints[i]);
            veer_h2up_close_idle(w, set->endpoints[i]);
        }
    }
}

static void maybe_exit(veer_worker_t *w)
{
    if (w->draining && w->conn_count == 0) {
        close_idle_upstreams(w);
        event_base_loopbreak(w->base);
    }
}

void veer_worker_conn_closed(veer_worker_t *w)
{
    atomic_fetch_sub(&veer_downstream_active_total, 1);
    atomic_fetch_sub_explicit(&w->stats.downstream_cx_active, 1, memory_order_relaxed);
    maybe_exit(w);
}

static void ctl_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_worker_t *w = arg;
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return;
    int req = atomic_load(&w->drain_requested);
    if (req == 0)
        return;
    if (!w->draining) {
        w->draining = true;
        close_listeners(w);
        close_idle_upstreams(w);
    }
    veer_h1conn_t *c = w->conns;
    while (c != NULL) {
        veer_h1conn_t *next = c->next;
        if (req > 1)
            veer_h1conn_close(c); /* drain_timeout passed: cut what is left */
        else
            veer_h1conn_drain(c);
        c = next;
    }
    if (req > 1)
        veer_h2_close_all(w);
    else
        veer_h2_drain_all(w);
    maybe_exit(w);
}

/* Window slices of series that went quiet keep their memory until expired. */
static void stats_expire_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_worker_t *w = arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    veer_stats_worker_expire(w->req_stats, (uint64_t)ts.tv_sec);
}

int veer_worker_init(veer_worker_t *w, uint32_t id, veer_runtime_t *rt, char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->rt = rt;
    w->rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)time(NULL) << 16) ^ ((uint64_t)id * 0xBF58476D1CE4E5B9ULL) ^
             (uint64_t)getpid();
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return -1;
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK | EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (w->base == NULL) {
        snprintf(err, errlen, "worker %u: cannot create an event base", id);
        return -1;
    }
    w->ws = wsnap_new(rt, w->base);
    if (w->ws == NULL)
        return -1;
    const veer_config_t *cfg = w->ws->snap->config;
    struct timeval idle = {(time_t)(cfg->limits.idle_timeout_ms / 1000), (suseconds_t)(cfg->limits.idle_timeout_ms % 1000) * 1000};
    struct timeval head = {(time_t)(cfg->limits.header_timeout_ms / 1000),
                           (suseconds_t)(cfg->limits.header_timeout_ms % 1000) * 1000};
    w->idle_tv = event_base_init_common_timeout(w->base, &idle);
    w->header_tv = event_base_init_common_timeout(w->base, &head);
    w->listens = calloc(cfg->listener_count ? cfg->listener_count : 1, sizeof(*w->listens));
    if (w->listens == NULL)
        return -1;
    for (size_t i = 0; i < cfg->listener_count; i++) {
        veer_listen_t *l = &w->listens[i];
        l->fd = listen_socket(&cfg->listeners[i], err, errlen);
        if (l->fd < 0)
            return -1;
        w->listen_count++;
        l->w = w;
        l->listener = (int)i;
        event_assign(&l->ev, w->base, l->fd, EV_READ | EV_PERSIST, accept_cb, l);
        event_add(&l->ev, NULL);
    }
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
        snprintf(err, errlen, "worker %u: eventfd: %s", id, strerror(errno));
        return -1;
    }
    event_assign(&w->ctl_ev, w->base, efd, EV_READ | EV_PERSIST, ctl_cb, w);
    event_add(&w->ctl_ev, NULL);
    if (rt->stats != NULL) {
        w->req_stats = veer_stats_worker(rt->stats, id);
        struct timeval second = {1, 0};
        event_assign(&w->stats_ev, w->base, -1, EV_PERSIST, stats_expire_cb, w);
        event_add(&w->stats_ev, &second);
    }
    return 0;
}

static void *worker_main(void *arg)
{
    veer_worker_t *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

int veer_worker_start(veer_worker_t *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

/* Requests only escalate: a drain sent after a stop must not undo it. */
static void wake(veer_worker_t *w, int level)
{
    int cur = atomic_load(&w->drain_requested);
    while (cur < level && !atomic_compare_exchange_weak(&w->drain_requested, &cur, level))
        ;
    uint64_t one = 1;
    ssize_t r = write(event_get_fd(&w->ctl_ev), &one, sizeof(one));
    (void)r;
}

void veer_worker_drain(veer_worker_t *w)
{
    wake(w, 1);
}

void veer_worker_stop(veer_worker_t *w)
{
    wake(w, 2);
}

void veer_worker_join(veer_worker_t *w)
{
    pthread_join(w->thread, NULL);
}

void veer_worker_free(veer_worker_t *w)
{
    while (w->conns != NULL)
        veer_h1conn_close(w->conns);
    veer_h2_close_all(w);
    if (w->ws != NULL)
        close_idle_upstreams(w);
    veer_h2up_pool_free(w);
    veer_mirror_worker_free(w);
    veer_exchange_worker_free(w);
    close_listeners(w);
    if (w->base != NULL && event_initialized(&w->stats_ev))
        event_del(&w->stats_ev);
    if (w->base != NULL && event_initialized(&w->ctl_ev)) {
        int fd = event_get_fd(&w->ctl_ev);
        event_del(&w->ctl_ev);
        close(fd);
    }
    while (w->free_exchanges != NULL) {
        struct veer_exchange_s *x = w->free_exchanges;
        w->free_exchanges = x->next_free;
        free(x);
    }
    if (w->ws != NULL)
        veer_wsnap_release(w, w->ws);
    w->ws = NULL;
    free(w->listens);
    if (w->base != NULL)
        event_base_free(w->base);
    w->base = NULL;
}
