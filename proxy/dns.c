/* dns.c - see dns.h. One job per cluster with at least one DNS name; a job
 * runs its lookups in parallel and publishes once all have answered. */
#include "dns.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define DNS_MAX_ADDRS 256

typedef struct dns_job_s {
    veer_dns_t *dns;
    char *cluster;
    uint64_t refresh_ms;
    struct event *timer;
    size_t pending;  /* lookups in flight */
    bool failed;     /* a lookup of this round failed: keep the old set */
    bool dead;       /* replaced by a reconfigure: freed when its lookups end */
    size_t count;
    struct sockaddr_storage addrs[DNS_MAX_ADDRS];
    socklen_t lens[DNS_MAX_ADDRS];
    char *hosts[DNS_MAX_ADDRS]; /* borrowed from the job's host copies */
    char **names;               /* owned copies of the configured hosts */
    size_t name_count;
} dns_job_t;

struct veer_dns_s {
    struct event_base *base;
    struct evdns_base *evdns;
    veer_runtime_t *rt;
    dns_job_t **jobs;
    size_t job_count;
};

typedef struct lookup_s {
    dns_job_t *job;
    char *host;
} lookup_t;

static void add_addr(dns_job_t *job, const struct sockaddr *sa, socklen_t len, char *host)
{
    for (size_t i = 0; i < job->count; i++)
        if (job->lens[i] == len && memcmp(&job->addrs[i], sa, len) == 0)
            return;
    if (job->count == DNS_MAX_ADDRS)
        return;
    memcpy(&job->addrs[job->count], sa, len);
    job->lens[job->count] = len;
    job->hosts[job->count++] = host;
}

static bool same_set(const dns_job_t *job, const veer_endpoint_set_t *set)
{
    if (set == NULL || set->count != job->count)
        return false;
    for (size_t i = 0; i < job->count; i++) {
        bool found = false;
        for (size_t k = 0; k < set->count && !found; k++)
            found = set->endpoints[k]->addrlen == job->lens[i] &&
                    memcmp(&set->endpoints[k]->addr, &job->addrs[i], job->lens[i]) == 0;
        if (!found)
            return false;
    }
    return true;
}

static void publish(dns_job_t *job)
{
    veer_runtime_t *rt = job->dns->rt;
    veer_snapshot_t *snap = veer_runtime_acquire(rt);
    int c = veer_config_cluster_index(snap->config, job->cluster);
    const veer_endpoint_set_t *old = c >= 0 ? snap->cluster_endpoints[c] : NULL;
    if (c < 0 || same_set(job, old)) {
        veer_snapshot_release(snap);
        return;
    }
    veer_endpoint_set_t *set = veer_endpoint_set_new(job->count);
    size_t n = 0;
    for (size_t i = 0; set != NULL && i < job->count; i++) {
        veer_endpoint_t *ep = NULL;
        for (size_t k = 0; old != NULL && k < old->count && ep == NULL; k++)
            if (old->endpoints[k]->addrlen == job->lens[i] &&
                memcmp(&old->endpoints[k]->addr, &job->addrs[i], job->lens[i]) == 0)
                ep = old->endpoints[k];
        if (ep != NULL)
            veer_endpoint_ref(ep);
        else
            ep = veer_endpoint_new((struct sockaddr *)&job->addrs[i], job->lens[i], job->hosts[i], rt->worker_count);
        if (ep != NULL)
            set->endpoints[n++] = ep;
    }
    veer_snapshot_release(snap);
    if (set == NULL)
        return;
    set->count = n;
    veer_log_info("cluster %s: DNS now gives %zu endpoints", job->cluster, n);
    veer_runtime_set_endpoints(rt, job->cluster, set);
}

static void round_done(dns_job_t *job)
{
    if (!job->failed)
        publish(job);
    struct timeval tv = {(time_t)(job->refresh_ms / 1000), (suseconds_t)(job->refresh_ms % 1000) * 1000};
    event_add(job->timer, &tv);
}

static void job_free(dns_job_t *job);

static void lookup_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    lookup_t *lk = arg;
    dns_job_t *job = lk->job;
    if (result != 0) {
        if (result != EVUTIL_EAI_CANCEL)
            veer_log_warn("cluster %s: DNS lookup of %s failed: %s (keeping the previous addresses)", job->cluster,
                          lk->host, evutil_gai_strerror(result));
        job->failed = true;
    } else {
        for (struct evutil_addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
            add_addr(job, ai->ai_addr, (socklen_t)ai->ai_addrlen, lk->host);
    }
    if (res)
        evutil_freeaddrinfo(res);
    free(lk);
    if (--job->pending == 0) {
        if (job->dead)
            job_free(job);
        else
            round_done(job);
    }
}

static void job_run(evutil_socket_t fd, short what, void *arg)
{
    dns_job_t *job = arg;
    veer_snapshot_t *snap = veer_runtime_acquire(job->dns->rt);
    int c = veer_config_cluster_index(snap->config, job->cluster);
    job->count = 0;
    job->failed = false;
    job->pending = 1; /* held while lookups are issued */
    for (size_t i = 0; c >= 0 && i < snap->config->clusters[c].endpoint_count; i++) {
        const veer_endpoint_config_t *ec = &snap->config->clusters[c].endpoints[i];
        char port[8], *host = NULL;
        snprintf(port, sizeof(port), "%u", ec->port);
        for (size_t k = 0; k < job->name_count && host == NULL; k++)
            if (strcmp(job->names[k], ec->host) == 0)
                host = job->names[k];
        struct evutil_addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
        if (host == NULL)
            continue;
        if (ec->is_literal) {
            struct evutil_addrinfo *res = NULL;
            hints.ai_flags = EVUTIL_AI_NUMERICHOST;
            if (evutil_getaddrinfo(ec->host, port, &hints, &res) == 0 && res != NULL) {
                add_addr(job, res->ai_addr, (socklen_t)res->ai_addrlen, host);
                evutil_freeaddrinfo(res);
            }
            continue;
        }
        lookup_t *lk = malloc(sizeof(*lk));
        if (lk == NULL) {
            job->failed = true;
            continue;
        }
        lk->job = job;
        lk->host = host;
        job->pending++;
        evdns_getaddrinfo(job->dns->evdns, ec->host, port, &hints, lookup_cb, lk);
    }
    veer_snapshot_release(snap);
    if (--job->pending == 0)
        round_done(job);
}

static void job_free(dns_job_t *job)
{
    if (job->timer)
        event_free(job->timer);
    for (size_t i = 0; i < job->name_count; i++)
        free(job->names[i]);
    free(job->names);
    free(job->cluster);
    free(job);
}

static dns_job_t *job_new(veer_dns_t *dns, const veer_cluster_config_t *cc)
{
    dns_job_t *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return NULL;
    job->dns = dns;
    job->refresh_ms = cc->dns_refresh_ms ? cc->dns_refresh_ms : 5000;
    job->cluster = strdup(cc->name);
    job->names = calloc(cc->endpoint_count + 1, sizeof(char *));
    job->timer = event_new(dns->base, -1, 0, job_run, job);
    if (job->cluster == NULL || job->names == NULL || job->timer == NULL) {
        job_free(job);
        return NULL;
    }
    for (size_t i = 0; i < cc->endpoint_count; i++)
        if ((job->names[job->name_count] = strdup(cc->endpoints[i].host)) != NULL)
            job->name_count++;
    struct timeval tv = {(time_t)(job->refresh_ms / 1000), (suseconds_t)(job->refresh_ms % 1000) * 1000};
    event_add(job->timer, &tv);
    return job;
}

static void jobs_clear(veer_dns_t *dns)
{
    for (size_t i = 0; i < dns->job_count; i++) {
        dns_job_t *job = dns->jobs[i];
        job->dead = true;
        event_del(job->timer);
        if (job->pending == 0)
            job_free(job); /* else freed by its last lookup callback */
    }
    free(dns->jobs);
    dns->jobs = NULL;
    dns->job_count = 0;
}

void veer_dns_reconfigure(veer_dns_t *dns)
{
    jobs_clear(dns);
    veer_snapshot_t *snap = veer_runtime_acquire(dns->rt);
    const veer_config_t *cfg = snap->config;
    dns->jobs = calloc(cfg->cluster_count + 1, sizeof(*dns->jobs));
    for (size_t c = 0; dns->jobs != NULL && c < cfg->cluster_count; c++) {
        bool has_name = false;
        for (size_t i = 0; i < cfg->clusters[c].endpoint_count; i++)
            has_name |= !cfg->clusters[c].endpoints[i].is_literal;
        if (has_name && (dns->jobs[dns->job_count] = job_new(dns, &cfg->clusters[c])) != NULL)
            dns->job_count++;
    }
    veer_snapshot_release(snap);
}

veer_dns_t *veer_dns_start(struct event_base *base, veer_runtime_t *rt)
{
    veer_dns_t *dns = calloc(1, sizeof(*dns));
    if (dns == NULL)
        return NULL;
    dns->base = base;
    dns->rt = rt;
    dns->evdns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (dns->evdns == NULL)
        dns->evdns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE); /* no resolv.conf: hosts file only */
    if (dns->evdns == NULL) {
        free(dns);
        return NULL;
    }
    veer_dns_reconfigure(dns);
    return dns;
}

void veer_dns_free(veer_dns_t *dns)
{
    if (dns == NULL)
        return;
    jobs_clear(dns);
    evdns_base_free(dns->evdns, 1); /* fail pending lookups: their callbacks see EVUTIL_EAI_CANCEL */
    free(dns);
}
