/* promsource.c - Prometheus query sets (promsource.h) on libevent's evhttp
 * client: six GETs in parallel, each on its own connection, under one
 * deadline. Connections are freed from the set's timer, never inside evhttp's
 * own callback, where freeing them is not allowed. */
#include "promsource.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#define QUERIES 6 /* requests, failures, P99 of the canary, then of stable */

static const char *const what_names[3] = {"requests", "failures", "p99"};

typedef struct sub_s {
    struct veer_promsource_query_s *q;
    struct evhttp_connection *conn;
    bool answered;
    double value;
    char error[VEER_PROMSOURCE_ERROR_CAP]; /* "" when value is good */
} sub_t;

struct veer_promsource_query_s {
    LIST_ENTRY(veer_promsource_query_s) link;
    veer_promsource_t *owner;
    sub_t sub[QUERIES];
    int pending;
    bool finishing; /* every answer is in: the timer ends the set now */
    struct event *timer; /* the deadline, and the deferred end */
    uint64_t started_ms;
    veer_promsource_done_fn done;
    void *arg;
};

struct veer_promsource_s {
    struct event_base *base;
    struct evdns_base *dns; /* the server's host name resolves without blocking the main loop */
    LIST_HEAD(, veer_promsource_query_s) queries;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A PromQL string literal's content: backslash and quote escaped. */
static int label_value(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (; *in != '\0'; in++) {
        if (n + 3 > cap)
            return -1;
        if (*in == '\\' || *in == '"')
            out[n++] = '\\';
        out[n++] = *in;
    }
    out[n] = '\0';
    return 0;
}

/* Prometheus durations: whole seconds when they are, else milliseconds. */
static void duration_text(uint64_t ms, char *out, size_t cap)
{
    if (ms % 1000 == 0)
        snprintf(out, cap, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, cap, "%llums", (unsigned long long)ms);
}

int veer_promsource_promql(int index, const char *route, const char *cluster, uint64_t window_ms, char *out,
                           size_t cap)
{
    char r[512], c[512], w[32];
    int n;

    if (label_value(route, r, sizeof r) != 0 || label_value(cluster, c, sizeof c) != 0)
        return -1;
    duration_text(window_ms, w, sizeof w);
    switch (index) {
    case 0:
        n = snprintf(out, cap, "sum(increase(veer_requests_total{route=\"%s\",cluster=\"%s\"}[%s]))", r, c, w);
        break;
    case 1:
        n = snprintf(out, cap, "sum(increase(veer_request_failures_total{route=\"%s\",cluster=\"%s\"}[%s]))", r, c,
                     w);
        break;
    case 2:
        n = snprintf(out, cap,
                     "histogram_quantile(0.99, sum by (le) (rate(veer_request_duration_seconds_bucket{route=\"%s\","
                     "cluster=\"%s\"}[%s])))",
                     r, c, w);
        break;
    default:
        return -1;
    }
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

int veer_promsource_parse(const char *body, size_t len, double *value, char *err, size_t errlen)
{
    cJSON *doc = cJSON_ParseWithLength(body, len);
    int rc = -1;

    *value = 0;
    if (doc == NULL) {
        snprintf(err, errlen, "the answer is not JSON");
        return -1;
    }
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(doc, "status");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(data, "resultType");
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(data, "result");
    if (!cJSON_IsString(status) || strcmp(status->valuestring, "success") != 0) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(doc, "error");
        snprintf(err, errlen, "query failed: %s", cJSON_IsString(e) ? e->valuestring : "status is not \"success\"");
    } else if (!cJSON_IsString(type) || strcmp(type->valuestring, "vector") != 0 || !cJSON_IsArray(result)) {
        snprintf(err, errlen, "data is not a vector result");
    } else if (cJSON_GetArraySize(result) == 0) {
        rc = 0; /* no series in the window: nothing happened */
    } else {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(result, 0), "value");
        const cJSON *text = cJSON_GetArrayItem(v, 1);
        char *end = NULL;
        double d = cJSON_IsString(text) ? strtod(text->valuestring, &end) : 0;
        if (!cJSON_IsArray(v) || !cJSON_IsString(text) || end == text->valuestring || *end != '\0') {
            snprintf(err, errlen, "data.result[0].value[1] is not a number string");
        } else {
            /* NaN: a quantile or ratio over no requests; Inf or below zero is no count or duration */
            *value = isfinite(d) && d > 0 ? d : 0;
            rc = 0;
        }
    }
    cJSON_Delete(doc);
    return rc;
}

static void on_response(struct evhttp_request *req, void *arg)
{
    sub_t *s = arg;
    veer_promsource_query_t *q = s->q;
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    struct evbuffer *in = req != NULL ? evhttp_request_get_input_buffer(req) : NULL;
    size_t len = in != NULL ? evbuffer_get_length(in) : 0;

    if (s->answered)
        return;
    s->answered = true;
    if (code == 0) {
        snprintf(s->error, sizeof s->error, "no answer (connection refused, reset or timed out)");
    } else if (code != 200) {
        snprintf(s->error, sizeof s->error, "HTTP %d", code);
    } else if (len > VEER_PROMSOURCE_MAX_BODY) {
        snprintf(s->error, sizeof s->error, "answer over %u bytes", VEER_PROMSOURCE_MAX_BODY);
    } else {
        char *body = (char *)evbuffer_pullup(in, -1);
        char err[VEER_PROMSOURCE_ERROR_CAP];
        if (veer_promsource_parse(body != NULL ? body : "", len, &s->value, err, sizeof err) != 0)
            snprintf(s->error, sizeof s->error, "%s", err);
    }
    if (--q->pending == 0 && !q->finishing) {
        struct timeval now = {0, 0};
        q->finishing = true;
        evtimer_del(q->timer);
        evtimer_add(q->timer, &now);
    }
}

static void query_free(veer_promsource_query_t *q)
{
    for (int i = 0; i < QUERIES; i++)
        if (q->sub[i].conn != NULL)
            evhttp_connection_free(q->sub[i].conn);
    if (q->timer != NULL)
        event_free(q->timer);
    free(q);
}

static void window_at(const veer_promsource_query_t *q, int first, veer_canary_window_t *w)
{
    w->requests = (uint64_t)llround(q->sub[first].value);
    w->failures = (uint64_t)llround(q->sub[first + 1].value);
    if (w->failures > w->requests)
        w->failures = w->requests;
    w->p99_us = (uint64_t)llround(q->sub[first + 2].value * 1e6);
}

/* The deadline, or the deferred end once every answer is in. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    veer_promsource_query_t *q = arg;
    veer_canary_window_t w[2] = {{0, 0, 0}, {0, 0, 0}};
    char error[2 * VEER_PROMSOURCE_ERROR_CAP] = "";
    (void)fd;
    (void)what;

    uint64_t elapsed = mono_ms() - q->started_ms;
    for (int i = 0; i < QUERIES && error[0] == '\0'; i++) {
        const sub_t *s = &q->sub[i];
        const char *side = i < 3 ? "canary" : "stable";
        if (!s->answered)
            snprintf(error, sizeof error, "prometheus: no answer within %llu ms (%s %s)",
                     (unsigned long long)elapsed, side, what_names[i % 3]);
        else if (s->error[0] != '\0')
            snprintf(error, sizeof error, "prometheus: %s (%s %s)", s->error, side, what_names[i % 3]);
    }
    if (error[0] == '\0') {
        window_at(q, 0, &w[0]);
        window_at(q, 3, &w[1]);
    }
    veer_promsource_done_fn done = q->done;
    void *done_arg = q->arg;
    LIST_REMOVE(q, link);
    query_free(q);
    done(done_arg, &w[0], &w[1], error[0] != '\0' ? error : NULL, elapsed);
}

static int start_one(veer_promsource_query_t *q, int i, const char *host, int port, const char *prefix,
                     const char *promql, uint64_t timeout_ms)
{
    sub_t *s = &q->sub[i];
    /* a second past the set's deadline: the deadline ends a slow set, with its own message */
    uint64_t conn_ms = timeout_ms + 1000;
    struct timeval tv = {(time_t)(conn_ms / 1000), (suseconds_t)(conn_ms % 1000) * 1000};
    char hostport[300];

    char *enc = evhttp_uriencode(promql, -1, 0);
    if (enc == NULL)
        return -1;
    size_t plen = strlen(prefix) + strlen(enc) + 32;
    char *path = malloc(plen);
    if (path == NULL) {
        free(enc);
        return -1;
    }
    snprintf(path, plen, "%s/api/v1/query?query=%s", prefix, enc);
    free(enc);
    s->q = q;
    s->conn = evhttp_connection_base_new(q->owner->base, q->owner->dns, host, (unsigned short)port);
    struct evhttp_request *req = s->conn != NULL ? evhttp_request_new(on_response, s) : NULL;
    if (req == NULL) {
        free(path);
        return -1;
    }
    evhttp_connection_set_timeout_tv(s->conn, &tv);
    evhttp_connection_set_max_body_size(s->conn, VEER_PROMSOURCE_MAX_BODY);
    snprintf(hostport, sizeof hostport, "%s:%d", host, port);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", hostport);
    evhttp_add_header(h, "Accept", "application/json");
    evhttp_add_header(h, "User-Agent", "veer-canary");
    evhttp_add_header(h, "Connection", "close");
    q->pending++;
    /* evhttp_make_request frees req itself when it fails */
    int rc = evhttp_make_request(s->conn, req, EVHTTP_REQ_GET, path);
    free(path);
    if (rc != 0)
        q->pending--;
    return rc;
}

int veer_promsource_query(veer_promsource_t *ps, const veer_promsource_request_t *r, veer_promsource_done_fn done,
                          void *arg, veer_promsource_query_t **out, char *err, size_t errlen)
{
    struct evhttp_uri *uri = evhttp_uri_parse(r->url);
    const char *scheme = uri != NULL ? evhttp_uri_get_scheme(uri) : NULL;
    const char *host = uri != NULL ? evhttp_uri_get_host(uri) : NULL;
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    char promql[2048], prefix[512];
    int rc = -1;

    if (scheme == NULL || strcmp(scheme, "http") != 0 || host == NULL || host[0] == '\0') {
        snprintf(err, errlen, "prometheus: %s is not an http://host:port URL", r->url);
        evhttp_uri_free(uri);
        return -1;
    }
    snprintf(prefix, sizeof prefix, "%s", path != NULL ? path : "");
    size_t plen = strlen(prefix);
    while (plen > 0 && prefix[plen - 1] == '/')
        prefix[--plen] = '\0';
    veer_promsource_query_t *q = calloc(1, sizeof *q);
    if (q == NULL || (q->timer = evtimer_new(ps->base, on_timer, q)) == NULL) {
        free(q);
        evhttp_uri_free(uri);
        snprintf(err, errlen, "prometheus: out of memory");
        return -1;
    }
    q->owner = ps;
    q->done = done;
    q->arg = arg;
    q->started_ms = mono_ms();
    int port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
    for (int i = 0; i < QUERIES; i++) {
        const char *cluster = i < 3 ? r->canary : r->stable;
        if (veer_promsource_promql(i % 3, r->route, cluster, r->window_ms, promql, sizeof promql) != 0) {
            snprintf(err, errlen, "prometheus: route or cluster name too long for a query");
            goto out;
        }
        if (start_one(q, i, host, port, prefix, promql, r->timeout_ms) != 0) {
            snprintf(err, errlen, "prometheus: cannot start a query to %s", r->url);
            goto out;
        }
    }
    struct timeval tv = {(time_t)(r->timeout_ms / 1000), (suseconds_t)(r->timeout_ms % 1000) * 1000};
    evtimer_add(q->timer, &tv);
    LIST_INSERT_HEAD(&ps->queries, q, link);
    *out = q;
    rc = 0;
out:
    if (rc != 0)
        query_free(q);
    evhttp_uri_free(uri);
    return rc;
}

void veer_promsource_cancel(veer_promsource_query_t *q)
{
    if (q == NULL)
        return;
    LIST_REMOVE(q, link);
    query_free(q);
}

veer_promsource_t *veer_promsource_new(struct event_base *base)
{
    veer_promsource_t *ps = calloc(1, sizeof *ps);
    if (ps == NULL)
        return NULL;
    ps->base = base;
    LIST_INIT(&ps->queries);
    ps->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (ps->dns == NULL) /* no resolv.conf: the hosts file only */
        ps->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (ps->dns == NULL) {
        free(ps);
        return NULL;
    }
    return ps;
}

void veer_promsource_free(veer_promsource_t *ps)
{
    if (ps == NULL)
        return;
    while (!LIST_EMPTY(&ps->queries))
        veer_promsource_cancel(LIST_FIRST(&ps->queries));
    evdns_base_free(ps->dns, 0);
    free(ps);
}
