/* dns.h - periodic re-resolution of clusters whose endpoints are DNS names
 * (libevent's evdns on the main thread). Each `dns_refresh`, every name of the
 * cluster is resolved; when the resulting address set differs from the
 * published one, a new endpoint set is published (unchanged addresses keep
 * their endpoint objects and pooled connections; removed ones are drained).
 * A failed lookup keeps the previous addresses: a DNS outage never empties a
 * pool. */
#ifndef VEER_DNS_H
#define VEER_DNS_H

#include "runtime.h"

struct event_base;
typedef struct veer_dns_s veer_dns_t;

veer_dns_t *veer_dns_start(struct event_base *base, veer_runtime_t *rt);
/* The config changed (reload): rebuild the per-cluster timers. */
void veer_dns_reconfigure(veer_dns_t *dns);
void veer_dns_free(veer_dns_t *dns);

#endif
