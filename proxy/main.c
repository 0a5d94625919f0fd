/* main.c - veer's command line (run, check, version) and the main thread:
 * it owns the runtime, the admin server and signal handling, starts one
 * worker per configured thread and coordinates reload and graceful drain. */
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accesslog.h"
#include "admin.h"
#include "config.h"
#include "controller.h"
#include "ctl.h"
#include "dns.h"
#include "log.h"
#include "metrics.h"
#include "resilience.h"
#include "runtime.h"
#include "stats.h"
#include "tls.h"
#include "worker.h"

typedef struct veer_main_s {
    const char *config_path;
    struct event_base *base;
    veer_runtime_t rt;
    veer_worker_t *workers;
    uint32_t worker_count;
    veer_admin_t *admin;
    veer_dns_t *dns;
    veer_resilience_t *resilience;
    veer_accesslog_t *access_log;
    veer_stats_t *stats;
    veer_metrics_source_t metrics;
    veer_controller_t *canary;
    bool draining;
    struct event *drain_poll, *drain_deadline;
    struct event *sig_hup, *sig_term, *sig_int, *sig_usr1;
    uint64_t drain_started_ms;
} veer_main_t;

static void usage(FILE *out)
{
    fprintf(out, "usage: veer run -c FILE      run the proxy (also: veer -c FILE)\n"
                 "       veer check -c FILE    validate a config and exit (also: veer -t -c FILE)\n"
                 "       veer ctl [--admin HOST:PORT] [--token-file F] COMMAND   talk to a running veer (veer ctl --help)\n"
                 "       veer version          print the version\n");
}

static void print_errors(const char *path, const veer_config_errors_t *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        fprintf(stderr, "%s\n", errs->messages[i]);
    if (errs->dropped)
        fprintf(stderr, "... and %zu more errors\n", errs->dropped);
    fprintf(stderr, "%s: %zu error%s\n", path, errs->count + errs->dropped, errs->count + errs->dropped == 1 ? "" : "s");
}

/* Parts that a reload cannot change: they are bound at start. */
static int check_immutable(const veer_config_t *old, const veer_config_t *cfg, char *err, size_t errlen)
{
    if (old->workers != cfg->workers) {
        snprintf(err, errlen, "workers: cannot change on reload (restart veer)");
        return -1;
    }
    if (old->listener_count != cfg->listener_count) {
        snprintf(err, errlen, "listeners: cannot be added or removed on reload (restart veer)");
        return -1;
    }
    for (size_t i = 0; i < cfg->listener_count; i++) {
        if (strcmp(old->listeners[i].address, cfg->listeners[i].address) != 0) {
            snprintf(err, errlen, "listeners[%zu].address: cannot change on reload (restart veer)", i);
            return -1;
        }
    }
    if (strcmp(old->admin.address, cfg->admin.address) != 0) {
        snprintf(err, errlen, "admin.address: cannot change on reload (restart veer)");
        return -1;
    }
    /* the stats' memory is laid out once, at start */
    if (old->stats.window_s != cfg->stats.window_s) {
        snprintf(err, errlen, "stats.window: cannot change on reload (restart veer)");
        return -1;
    }
    if (old->stats.max_series != cfg->stats.max_series) {
        snprintf(err, errlen, "stats.max_series: cannot change on reload (restart veer)");
        return -1;
    }
    if (old->stats.max_window_bytes != cfg->stats.max_window_bytes) {
        snprintf(err, errlen, "stats.max_window_bytes: cannot change on reload (restart veer)");
        return -1;
    }
    if (old->access_log.buffer_bytes != cfg->access_log.buffer_bytes) {
        snprintf(err, errlen, "access_log.buffer_bytes: cannot change on reload (restart veer)");
        return -1;
    }
    /* the canary controller takes its role once, at start (controller.c) */
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        host[0] = '\0';
    if (veer_config_leads(old, host) != veer_config_leads(cfg, host)) {
        snprintf(err, errlen, "peers.leader: cannot change on reload whether this replica leads (restart veer)");
        return -1;
    }
    return 0;
}

static int do_reload(void *ctx, char *err, size_t errlen)
{
    veer_main_t *m = ctx;
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = veer_config_load(m->config_path, &errs);
    if (cfg == NULL) {
        size_t off = 0;
        err[0] = '\0';
        for (size_t i = 0; i < errs.count && off + 2 < errlen; i++)
            off += (size_t)snprintf(err + off, errlen - off, "%s%s", i ? "\n" : "", errs.messages[i]);
        veer_config_errors_clear(&errs);
        veer_log_error("reload failed, keeping the running config: %s", err);
        return -1;
    }
    veer_snapshot_t *cur = veer_runtime_acquire(&m->rt);
    int rc = check_immutable(cur->config, cfg, err, errlen);
    veer_snapshot_release(cur);
    /* certificates and keys are re-read now: one that cannot be used fails the whole reload */
    veer_tls_set_t *tls = rc == 0 ? veer_tls_set_new(cfg, err, errlen) : NULL;
    if (rc == 0 && tls == NULL)
        rc = -1;
    /* a new access log path is opened now, switched to only if all goes through */
    if (rc == 0)
        rc = veer_accesslog_prepare(m->access_log, cfg->access_log.path, err, errlen);
    /* the admin token first: a reload that cannot read it changes nothing */
    if (rc == 0)
        rc = veer_admin_reconfigure(m->admin, cfg, err, errlen);
    if (rc < 0) {
        veer_accesslog_abort(m->access_log);
        veer_tls_set_free(tls);
        veer_config_free(cfg);
        veer_log_error("reload failed, keeping the running config: %s", err);
        return -1;
    }
    if (veer_runtime_reload(&m->rt, cfg, tls, err, errlen) < 0) {
        veer_accesslog_abort(m->access_log);
        veer_log_error("reload failed, keeping the running config: %s", err);
        return -1;
    }
    veer_accesslog_commit(m->access_log);
    veer_dns_reconfigure(m->dns);
    veer_snapshot_t *snap = veer_runtime_acquire(&m->rt);
    veer_log_info("config reloaded from %s, generation %llu", m->config_path, (unsigned long long)snap->generation);
    veer_snapshot_release(snap);
    return 0;
}

static void drain_poll_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_main_t *m = arg;
    uint64_t active = atomic_load(&veer_downstream_active_total);
    if (active == 0)
        event_base_loopbreak(m->base);
}

static void drain_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_main_t *m = arg;
    veer_log_warn("drain_timeout reached with %llu connections open: closing them",
                  (unsigned long long)atomic_load(&veer_downstream_active_total));
    for (uint32_t i = 0; i < m->worker_count; i++)
        veer_worker_stop(&m->workers[i]);
    event_base_loopbreak(m->base);
}

static void do_drain(void *ctx)
{
    veer_main_t *m = ctx;
    if (m->draining)
        return;
    m->draining = true;
    veer_snapshot_t *snap = veer_runtime_acquire(&m->rt);
    uint64_t ms = snap->config->limits.drain_timeout_ms;
    veer_snapshot_release(snap);
    veer_log_info("draining: no new connections; waiting up to %llu ms for in-flight requests", (unsigned long long)ms);
    for (uint32_t i = 0; i < m->worker_count; i++)
        veer_worker_drain(&m->workers[i]);
    struct timeval poll = {0, 20000}, deadline = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    m->drain_poll = event_new(m->base, -1, EV_PERSIST, drain_poll_cb, m);
    m->drain_deadline = event_new(m->base, -1, 0, drain_deadline_cb, m);
    event_add(m->drain_poll, &poll);
    event_add(m->drain_deadline, &deadline);
}

static bool is_draining(void *ctx)
{
    return ((veer_main_t *)ctx)->draining;
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    veer_main_t *m = arg;
    char err[4096];
    switch (sig) {
    case SIGHUP:
        do_reload(m, err, sizeof(err));
        break;
    case SIGTERM:
    case SIGINT:
        do_drain(m);
        break;
    case SIGUSR1:
        veer_accesslog_reopen(m->access_log);
        veer_log_info("SIGUSR1: reopening the access log");
        break;
    default:
        break;
    }
}

static int run(const char *path)
{
    char *abs = realpath(path, NULL); /* reloads must not depend on the cwd */
    veer_main_t m = {.config_path = abs ? abs : path};
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = veer_config_load(path, &errs);
    if (cfg == NULL) {
        print_errors(path, &errs);
        veer_config_errors_clear(&errs);
        free(abs);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    char err[1024];
    int rc = 1;
    veer_tls_set_t *tls = veer_tls_set_new(cfg, err, sizeof(err));
    if (tls == NULL) {
        fprintf(stderr, "%s\n%s: TLS configuration is not usable\n", err, path);
        veer_config_free(cfg);
        free(abs);
        return 1;
    }
    m.worker_count = cfg->workers ? cfg->workers : 1;
    veer_stats_limits_t limits = veer_stats_limits_from_config(cfg, m.worker_count);
    m.stats = veer_stats_new(&limits);
    veer_endpoint_stats_attach(m.stats); /* before the runtime makes the first endpoint */
    m.base = m.stats != NULL ? event_base_new() : NULL;
    if (m.base == NULL || veer_runtime_init(&m.rt, cfg, tls, m.worker_count) < 0) {
        fprintf(stderr, "veer: cannot initialise the runtime\n");
        if (m.base == NULL) {
            veer_tls_set_free(tls);
            veer_config_free(cfg);
        }
        goto out_base;
    }
    if (veer_runtime_attach_stats(&m.rt, m.stats) < 0) {
        fprintf(stderr, "veer: cannot initialise the request stats: out of memory\n");
        veer_runtime_destroy(&m.rt);
        goto out_base;
    }
    m.workers = calloc(m.worker_count, sizeof(*m.workers));
    uint32_t inited = 0;
    for (; m.workers != NULL && inited < m.worker_count; inited++) {
        if (veer_worker_init(&m.workers[inited], inited, &m.rt, err, sizeof(err)) < 0) {
            fprintf(stderr, "veer: %s\n", err);
            inited++;
            goto out_workers;
        }
    }
    m.access_log = veer_accesslog_new(m.worker_count, cfg->access_log.buffer_bytes, cfg->access_log.path, err,
                                      sizeof(err));
    if (m.access_log == NULL || veer_accesslog_start(m.access_log, err, sizeof(err)) < 0) {
        fprintf(stderr, "veer: %s\n", err);
        goto out_workers;
    }
    for (uint32_t i = 0; i < inited; i++)
        m.workers[i].access_log = veer_accesslog_ring(m.access_log, i);
    m.canary = veer_controller_new(m.base, &m.rt, err, sizeof(err));
    if (m.canary == NULL) {
        fprintf(stderr, "veer: %s\n", err);
        goto out_workers;
    }
    m.metrics = (veer_metrics_source_t){.rt = &m.rt, .workers = m.workers, .worker_count = inited,
                                        .started = veer_metrics_now(), .canary = m.canary,
                                        .access_log = m.access_log};
    veer_admin_hooks_t hooks = {.ctx = &m, .reload = do_reload, .drain = do_drain, .is_draining = is_draining,
                                .metrics = &m.metrics, .canary = m.canary};
    veer_snapshot_t *snap = veer_runtime_acquire(&m.rt);
    m.admin = veer_admin_start(m.base, &m.rt, snap->config, &hooks, err, sizeof(err));
    veer_snapshot_release(snap);
    if (m.admin == NULL) {
        fprintf(stderr, "veer: %s\n", err);
        goto out_workers;
    }
    m.dns = veer_dns_start(m.base, &m.rt);
    if (m.dns == NULL) {
        fprintf(stderr, "veer: cannot start the DNS resolver\n");
        veer_admin_free(m.admin);
        goto out_workers;
    }
    m.resilience = veer_resilience_start(m.base, &m.rt, m.worker_count);
    if (m.resilience == NULL) {
        fprintf(stderr, "veer: cannot start health checks and outlier detection (out of memory)\n");
        veer_dns_free(m.dns);
        veer_admin_free(m.admin);
        goto out_workers;
    }
    for (uint32_t i = 0; i < inited; i++)
        m.workers[i].outlier_q = veer_resilience_queue(m.resilience, i);
    m.sig_hup = evsignal_new(m.base, SIGHUP, signal_cb, &m);
    m.sig_term = evsignal_new(m.base, SIGTERM, signal_cb, &m);
    m.sig_int = evsignal_new(m.base, SIGINT, signal_cb, &m);
    m.sig_usr1 = evsignal_new(m.base, SIGUSR1, signal_cb, &m);
    event_add(m.sig_hup, NULL);
    event_add(m.sig_term, NULL);
    event_add(m.sig_int, NULL);
    event_add(m.sig_usr1, NULL);
    uint32_t started = 0;
    for (; started < m.worker_count; started++)
        if (veer_worker_start(&m.workers[started]) < 0)
            break;
    if (started == m.worker_count) {
        veer_log_info("veer %s: %u workers, config %s", VEER_VERSION, m.worker_count, path);
        event_base_dispatch(m.base);
        rc = 0;
    }
    for (uint32_t i = 0; i < started; i++)
        veer_worker_drain(&m.workers[i]);
    for (uint32_t i = 0; i < started; i++)
        veer_worker_join(&m.workers[i]);
    veer_log_info("drained, exiting");
    event_free(m.sig_hup);
    event_free(m.sig_term);
    event_free(m.sig_int);
    event_free(m.sig_usr1);
    if (m.drain_poll)
        event_free(m.drain_poll);
    if (m.drain_deadline)
        event_free(m.drain_deadline);
    veer_dns_free(m.dns);
    veer_admin_free(m.admin);
out_workers:
    for (uint32_t i = 0; m.workers != NULL && i < inited; i++)
        veer_worker_free(&m.workers[i]);
    veer_resilience_free(m.resilience); /* after the workers: their connections held its breakers */
    veer_accesslog_free(m.access_log); /* after the workers: every line they recorded is written */
    veer_controller_free(m.canary);    /* after the admin API, its only caller */
    free(m.workers);
    veer_runtime_destroy(&m.rt);
out_base:
    if (m.base)
        event_base_free(m.base);
    veer_stats_free(m.stats); /* after the runtime: endpoints hold series of it */
    free(abs);
    return rc;
}

static int check(const char *path)
{
    veer_config_errors_t errs = {0};
    veer_config_t *cfg = veer_config_load(path, &errs);
    if (cfg == NULL) {
        print_errors(path, &errs);
        veer_config_errors_clear(&errs);
        return 1;
    }
    char err[4096];
    veer_tls_set_t *tls = veer_tls_set_new(cfg, err, sizeof(err));
    if (tls == NULL) {
        fprintf(stderr, "%s\n%s: TLS configuration is not usable\n", err, path);
        veer_config_free(cfg);
        return 1;
    }
    veer_tls_set_free(tls);
    printf("%s: ok (%zu listeners, %zu clusters, %zu routes)\n", path, cfg->listener_count, cfg->cluster_count,
           cfg->route_count);
    veer_config_free(cfg);
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *cmd = "run";
    int i = 1;
    if (argc > 1 && argv[1][0] != '-') {
        cmd = argv[1];
        i = 2;
    }
    if (strcmp(cmd, "version") == 0) {
        printf("veer %s\n", VEER_VERSION);
        return 0;
    }
    if (strcmp(cmd, "ctl") == 0)
        return veer_ctl_main(argc - i, argv + i);
    for (; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            path = argv[++i];
        else if (strcmp(argv[i], "-t") == 0)
            cmd = "check";
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "veer: unknown argument \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL || (strcmp(cmd, "run") != 0 && strcmp(cmd, "check") != 0)) {
        usage(stderr);
        return 2;
    }
    return strcmp(cmd, "check") == 0 ? check(path) : run(path);
}
