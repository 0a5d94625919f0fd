/* cluster.c - endpoint objects, endpoint sets and load balancing (see
 * cluster.h). Reference counts change only when sets are built or freed and
 * when upstream connections open or close, never per request. */
#include "cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"
#include "upstream.h"

static atomic_uint next_endpoint_id = 1;
/* Set once at start, before any worker or DNS thread makes an endpoint. */
static veer_stats_t *endpoint_stats;

void veer_endpoint_stats_attach(veer_stats_t *st)
{
    endpoint_stats = st;
}

void veer_sockaddr_format(const struct sockaddr *sa, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(out, outlen, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(out, outlen, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(out, outlen, "?");
    }
}

veer_endpoint_t *veer_endpoint_new(const struct sockaddr *sa, socklen_t len, const char *host, uint32_t worker_count)
{
    veer_endpoint_t *ep = calloc(1, sizeof(*ep));
    if (ep == NULL)
        return NULL;
    if (posix_memalign((void **)&ep->slots, 64, sizeof(veer_endpoint_slot_t) * (worker_count ? worker_count : 1)) != 0) {
        free(ep);
        return NULL;
    }
    memset(ep->slots, 0, sizeof(veer_endpoint_slot_t) * (worker_count ? worker_count : 1));
    ep->slot_count = worker_count ? worker_count : 1;
    ep->host = strdup(host ? host : "");
    if (ep->host == NULL) {
        free(ep->slots);
        free(ep);
        return NULL;
    }
    if (endpoint_stats != NULL && (ep->stats = veer_stats_endpoint_new(endpoint_stats)) == NULL) {
        free(ep->host);
        free(ep->slots);
        free(ep);
        return NULL;
    }
    atomic_init(&ep->refs, 1);
    atomic_init(&ep->retired, false);
    atomic_init(&ep->unhealthy, false);
    atomic_init(&ep->ejected, false);
    atomic_init(&ep->route_state, VEER_EP_UNSET);
    ep->id = atomic_fetch_add(&next_endpoint_id, 1);
    memcpy(&ep->addr, sa, len);
    ep->addrlen = len;
    veer_sockaddr_format(sa, ep->name, sizeof(ep->name));
    return ep;
}

void veer_endpoint_ref(veer_endpoint_t *ep)
{
    atomic_fetch_add_explicit(&ep->refs, 1, memory_order_relaxed);
}

void veer_endpoint_unref(veer_endpoint_t *ep)
{
    if (ep == NULL || atomic_fetch_sub_explicit(&ep->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(ep->host);
    for (uint32_t w = 0; w < ep->slot_count; w++)
        SSL_SESSION_free(ep->slots[w].tls_session); /* NULL-safe */
    free(ep->slots);
    veer_stats_endpoint_free(ep->stats);
    free(ep);
}

veer_endpoint_set_t *veer_endpoint_set_new(size_t count)
{
    veer_endpoint_set_t *set = calloc(1, sizeof(*set) + count * sizeof(set->endpoints[0]));
    if (set == NULL)
        return NULL;
    atomic_init(&set->refs, 1);
    set->count = count;
    return set;
}

void veer_endpoint_set_ref(veer_endpoint_set_t *set)
{
    atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
}

void veer_endpoint_set_unref(veer_endpoint_set_t *set)
{
    if (set == NULL || atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < set->count; i++)
        veer_endpoint_unref(set->endpoints[i]);
    free(set);
}

veer_endpoint_t *veer_lb_pick(const veer_endpoint_set_t *set, veer_lb_t lb, uint32_t worker, uint32_t *rr,
                              uint32_t random, bool unset_ok)
{
    size_t n = set ? set->count : 0;
    if (n == 0)
        return NULL;
    if (lb == VEER_LB_LEAST_REQUEST && n > 1) {
        /* Power of two choices: two distinct random endpoints, the less busy wins. */
        size_t a = (size_t)(((uint64_t)(random & 0xffff) * n) >> 16);
        size_t b = (size_t)(((uint64_t)(random >> 16) * (n - 1)) >> 16);
        if (b >= a)
            b++;
        veer_endpoint_t *ea = set->endpoints[a], *eb = set->endpoints[b];
        bool ua = veer_endpoint_usable(ea, unset_ok);
        bool ub = veer_endpoint_usable(eb, unset_ok);
        if (ua && ub)
            return ea->slots[worker].active_requests <= eb->slots[worker].active_requests ? ea : eb;
        if (ua)
            return ea;
        if (ub)
            return eb;
        /* Neither may take traffic: fall through to a scan. */
    }
    for (size_t i = 0; i < n; i++) {
        veer_endpoint_t *ep = set->endpoints[(*rr)++ % n];
        if (veer_endpoint_usable(ep, unset_ok))
            return ep;
    }
    return NULL;
}
