/* prober.h - the network side of active health checks: one probe of one
 * endpoint, in the cluster's protocol: HTTP/1.1 GET of health_check.path (plain
 * or TLS, over veer_sock), the same GET over HTTP/2 for h2c/h2 clusters, or a
 * gRPC health Check when health_check.grpc_service is set (both via h2call.h).
 * It reports the status or how it failed and decides nothing about state: the
 * caller feeds the outcome to health.c. Runs on one event base (main thread). */
#ifndef VEER_PROBER_H
#define VEER_PROBER_H

#include <event2/event.h>
#include <stdint.h>

#include "cluster.h"
#include "health.h"
#include "runtime.h"

typedef struct veer_probe_s veer_probe_t;

/* status > 0: a response head with that status (failure is then meaningless;
 * a gRPC check reports 200 only when it passed: SERVING); status 0: the probe
 * failed as `failure`, with reason (NULL or static/short-lived text such as
 * "grpc-status 12", "NOT_SERVING", "RST_STREAM ...") to show in the health
 * log. The probe is freed after the callback returns; the callback must not
 * cancel it. */
typedef void (*veer_probe_done_cb)(void *arg, veer_probe_t *p, uint32_t endpoint_id, int status,
                                   veer_health_failure_t failure, const char *reason);

/* Connect to ep (TLS when the snapshot's cluster has TLS) and GET path with
 * Host/:authority the endpoint's host (or the gRPC Check of the cluster's
 * grpc_service). timeout_ms bounds connect, handshake and the response (head
 * for HTTP/1.1, whole response for HTTP/2). NULL when no socket can be made
 * (report that as a connect failure). */
veer_probe_t *veer_probe_start(struct event_base *base, const veer_snapshot_t *snap, int cluster,
                               const veer_endpoint_t *ep, const char *path, uint64_t timeout_ms,
                               veer_probe_done_cb cb, void *arg);

/* Abandon a probe without a callback (its deadline passed, or the endpoint
 * left the cluster). */
void veer_probe_cancel(veer_probe_t *p);

#endif
