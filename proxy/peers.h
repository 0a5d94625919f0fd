/* peers.h - the leader's side of multi-replica weights: every weight change
 * of this replica is PUT, with its generation, to the admin API of every
 * replica in the config's "peers", asynchronously on the main event base,
 * with a timeout per attempt and retries with backoff until the peer agrees.
 * A peer that stays unreachable past its retries is reported to the owner
 * (the canary controller pauses its runs), and retried until it answers.
 * An entry that is a DNS name is every address it resolves to, re-resolved
 * every peers.refresh: new addresses catch up, gone ones are dropped.
 *
 * Every call is made on the main thread. */
#ifndef VEER_PEERS_H
#define VEER_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "prom.h"
#include "runtime.h"

struct event_base;

/* Changes waiting for one peer; a newer change of a route replaces the
 * waiting one, so this only binds with that many routes changing at once. */
#define VEER_PEERS_MAX_PENDING 1024
#define VEER_PEERS_BACKOFF_FIRST_MS 100u
#define VEER_PEERS_BACKOFF_MAX_MS 2000u

typedef struct veer_peers_s veer_peers_t;

/* A peer stopped agreeing: unreachable past its retries, or it refused a
 * change (a 4xx answer). why is "peer ADDR unreachable" or "peer ADDR
 * rejected generation N: ...". Called from the event loop, never from inside
 * a veer_peers_* call. */
typedef void (*veer_peers_failed_fn)(void *arg, const char *why);

/* This process's random id: sent with every change and answered by the
 * admin API as X-Veer-Instance, so a replica whose shared config lists its
 * own address recognises itself and skips that entry. */
#define VEER_PEERS_INSTANCE_HEADER "X-Veer-Instance"
const char *veer_peers_instance(void);

/* NULL when out of memory. The peer list is read from the runtime's current
 * config at each change and each read, so a reload adds or drops peers. */
veer_peers_t *veer_peers_new(struct event_base *base, veer_runtime_t *rt, veer_peers_failed_fn failed, void *arg);
/* Cancels the calls in flight; their changes are not sent. */
void veer_peers_free(veer_peers_t *p);

/* route's weights changed on this replica: queue the route's current weights
 * and generation for every peer. Does nothing without peers. */
void veer_peers_weights_changed(veer_peers_t *p, const char *route);

/* true with why set when some peer is unreachable or refused its last change
 * and has not agreed since. */
bool veer_peers_failing(veer_peers_t *p, char *why, size_t whylen);

/* /v1/status's "peers": [{admin, last_generation_acked, last_error, lag, ...}];
 * admin is the entry, or "NAME@ADDR:PORT" for an address of a name. */
cJSON *veer_peers_status_json(veer_peers_t *p);

/* veer_peer_generation_lag{peer}, veer_peer_changes_dropped_total{peer},
 * veer_peer_changes_discarded_total and veer_peer_addresses_left_out_total. */
void veer_peers_write_metrics(veer_peers_t *p, veer_prom_buf_t *b);

#endif
