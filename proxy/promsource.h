/* promsource.h - the canary analysis read from a Prometheus server instead of
 * this replica's stats: one query set (requests, failures and P99 of the
 * canary and the stable cluster on a route) sent to the HTTP query API from
 * the main event base, summed by Prometheus over every replica it scrapes. */
#ifndef VEER_PROMSOURCE_H
#define VEER_PROMSOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "canary.h"

struct event_base;

/* A query answer larger than this fails the set (a vector of one sample is
 * some hundred bytes; anything near this is not the answer we asked for). */
#define VEER_PROMSOURCE_MAX_BODY (1024u * 1024u)
#define VEER_PROMSOURCE_ERROR_CAP 160

typedef struct veer_promsource_s veer_promsource_t;
typedef struct veer_promsource_query_s veer_promsource_query_t;

/* The set's outcome: both windows, or error ("prometheus: ..."; then the
 * windows are zero and mean nothing). elapsed_ms: from the start to the last
 * answer or the deadline. Called once per started set, from the event loop,
 * never after veer_promsource_free or veer_promsource_cancel. */
typedef void (*veer_promsource_done_fn)(void *arg, const veer_canary_window_t *canary,
                                        const veer_canary_window_t *stable, const char *error, uint64_t elapsed_ms);

/* What one set asks: sums over window_ms of veer's own metric families. */
typedef struct veer_promsource_request_s {
    const char *url; /* "http://host[:port][/prefix]" */
    const char *route, *canary, *stable;
    uint64_t window_ms, timeout_ms;
} veer_promsource_request_t;

veer_promsource_t *veer_promsource_new(struct event_base *base);
/* Cancels every set in flight without calling its done. */
void veer_promsource_free(veer_promsource_t *ps);

/* Start a set of six queries in parallel. 0 and *out (for cancel), or -1 with
 * err ("prometheus: ...": a malformed URL, out of memory). */
int veer_promsource_query(veer_promsource_t *ps, const veer_promsource_request_t *req, veer_promsource_done_fn done,
                          void *arg, veer_promsource_query_t **out, char *err, size_t errlen);
void veer_promsource_cancel(veer_promsource_query_t *q);

/* The PromQL text of query index (0 requests, 1 failures, 2 P99) for one
 * cluster; 0, or -1 when it does not fit in cap. Exposed for the unit test. */
int veer_promsource_promql(int index, const char *route, const char *cluster, uint64_t window_ms, char *out,
                           size_t cap);

/* One answer's value: data.result[0].value[1] of a vector ("NaN" and an
 * empty result read as 0). 0, or -1 with err. */
int veer_promsource_parse(const char *body, size_t len, double *value, char *err, size_t errlen);

#endif
