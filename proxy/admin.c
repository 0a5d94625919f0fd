/* admin.c - the admin HTTP API (SPEC "Admin API"): an evhttp server on the
 * main thread that dispatches by method and path, checks the bearer token,
 * answers JSON from a runtime snapshot, and writes one audit line to stderr
 * for every mutation attempt and every authentication failure. */
#include "admin.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "controller.h"
#include "metrics.h"
#include "peers.h"
#include "resilience.h"
#include "stats.h"

#define ADMIN_MAX_HEADERS_SIZE (16 * 1024L)
#define ADMIN_MAX_BODY_SIZE (64 * 1024L)
#define ADMIN_TIMEOUT_SECONDS 10
#define ADMIN_TOKEN_MAX 4096
#define ADMIN_NAME_MAX 256
#define ADMIN_RELOAD_ERR_MAX (16 * 1024UL)
#define ADMIN_WEIGHT_MAX 1000000.0
#define ADMIN_WEIGHTS_MAX 1024 /* clusters named in one PUT; bounds the duplicate check */
#define ADMIN_GENERATION_MAX 9007199254740991.0 /* 2^53 - 1: exact in a JSON number */

#define ADMIN_ALL_METHODS                                                                      \
    (EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | \
     EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH)

struct veer_admin_s {
    veer_runtime_t *rt;
    veer_admin_hooks_t hooks;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    char *address;     /* admin.address the socket is bound to */
    char *token;       /* NULL: no authentication */
    size_t token_len;
    bool protect_reads;
    struct timespec started;
    /* the leader whose changes this follower took last (its instance id from
     * VEER_PEERS_INSTANCE_HEADER) and the newest generation it sent: only
     * that leader's own order is checked, never this replica's numbering,
     * which a forced PUT or a reload here runs ahead of the leader's */
    char leader_instance[48];
    uint64_t leader_last;
};

typedef enum { ACCESS_OPEN, ACCESS_READ, ACCESS_MUTATE } admin_access_t;

/* One request being answered; what the audit line needs is collected here. */
typedef struct admin_call_s {
    veer_admin_t *admin;
    struct evhttp_request *req;
    const char *method;
    const char *path;
    char name[ADMIN_NAME_MAX]; /* the decoded NAME segment, if the path has one */
    int status;
    char error[512];
    cJSON *change;             /* audit "change", owned */
    bool has_generation;
    uint64_t generation;
} admin_call_t;

typedef void (*admin_handler_fn)(admin_call_t *call);

typedef struct admin_endpoint_s {
    const char *pattern; /* "*" matches one non-empty segment */
    enum evhttp_cmd_type method;
    admin_access_t access;
    admin_handler_fn handler;
} admin_endpoint_t;

/* ---- responses ---- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 423: return "Locked";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

static void send_text(admin_call_t *call, int status, const char *ctype, const char *body, size_t len)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(call->req);
    struct evbuffer *buf = evbuffer_new();

    call->status = status;
    evhttp_add_header(out, "Content-Type", ctype);
    evhttp_add_header(out, "Cache-Control", "no-store");
    if (buf != NULL)
        evbuffer_add(buf, body, len);
    evhttp_send_reply(call->req, status, reason_phrase(status), buf);
    if (buf != NULL)
        evbuffer_free(buf);
}

/* Takes ownership of body. */
static void reply_json(admin_call_t *call, int status, cJSON *body)
{
    static const char fallback[] = "{\"error\":\"out of memory\"}";
    char *text = body != NULL ? cJSON_PrintUnformatted(body) : NULL;

    if (text == NULL) {
        snprintf(call->error, sizeof call->error, "out of memory");
        send_text(call, 500, "application/json", fallback, sizeof fallback - 1);
    } else {
        send_text(call, status, "application/json", text, strlen(text));
    }
    cJSON_free(text);
    cJSON_Delete(body);
}

static void reply_error(admin_call_t *call, int status, const char *message)
{
    cJSON *body = cJSON_CreateObject();

    snprintf(call->error, sizeof call->error, "%s", message);
    cJSON_AddStringToObject(body, "error", message);
    reply_json(call, status, body);
}

static void reply_status(admin_call_t *call, int status, const char *value)
{
    cJSON *body = cJSON_CreateObject();

    cJSON_AddStringToObject(body, "status", value);
    reply_json(call, status, body);
}

/* ---- audit ---- */

static void format_utc_now(char *out, size_t outlen)
{
    struct timespec now;
    struct tm tm;
    char date[32];

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, outlen, "%s.%03ldZ", date, now.tv_nsec / 1000000);
}

static void format_remote(struct evhttp_request *req, char *out, size_t outlen)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    char *address = NULL;
    ev_uint16_t port = 0;

    if (conn != NULL)
        evhttp_connection_get_peer(conn, &address, &port);
    if (address == NULL)
        snprintf(out, outlen, "unknown");
    else if (strchr(address, ':') != NULL)
        snprintf(out, outlen, "[%s]:%u", address, (unsigned)port);
    else
        snprintf(out, outlen, "%s:%u", address, (unsigned)port);
}

/* One line per fputs: stderr is unbuffered, so the whole line goes out in a
 * single write and lines from other writers never split it. */
static void write_stderr_line(const char *text)
{
    char *line = NULL;

    if (asprintf(&line, "%s\n", text) < 0)
        return;
    fputs(line, stderr);
    free(line);
}

static void audit_write(admin_call_t *call)
{
    char ts[48], remote[80];
    cJSON *line = cJSON_CreateObject();

    format_utc_now(ts, sizeof ts);
    format_remote(call->req, remote, sizeof remote);
    cJSON_AddStringToObject(line, "ts", ts);
    cJSON_AddStringToObject(line, "event", "admin");
    cJSON_AddStringToObject(line, "remote", remote);
    cJSON_AddStringToObject(line, "method", call->method);
    cJSON_AddStringToObject(line, "path", call->path);
    cJSON_AddNumberToObject(line, "status", call->status);
    if (call->has_generation)
        cJSON_AddNumberToObject(line, "generation", (double)call->generation);
    if (call->change != NULL && !cJSON_AddItemToObject(line, "change", call->change))
        cJSON_Delete(call->change);
    call->change = NULL;
    if (call->error[0] != '\0')
        cJSON_AddStringToObject(line, "error", call->error);
    char *text = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    if (text != NULL)
        write_stderr_line(text);
    cJSON_free(text);
}

/* ---- snapshot to JSON ---- */

static const char *protocol_name(veer_upstream_proto_t protocol)
{
    switch (protocol) {
    case VEER_PROTO_H2C: return "h2c";
    case VEER_PROTO_H2: return "h2";
    default: return "http1";
    }
}

static const char *lb_name(veer_lb_t lb)
{
    return lb == VEER_LB_ROUND_ROBIN ? "round_robin" : "least_request";
}

static int find_route(const veer_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->route_count; i++)
        if (strcmp(cfg->routes[i].name, name) == 0)
            return (int)i;
    return -1;
}

static cJSON *weights_json(const veer_config_t *cfg, const veer_route_weights_t *rw)
{
    cJSON *weights = cJSON_CreateObject();

    for (size_t i = 0; i < rw->count; i++) {
        int cluster = rw->split[i].cluster;
        if (cluster < 0 || (size_t)cluster >= cfg->cluster_count)
            continue;
        cJSON_AddNumberToObject(weights, cfg->clusters[cluster].name, rw->split[i].weight);
    }
    return weights;
}

static cJSON *header_match_json(const veer_header_match_t *hm)
{
    cJSON *item = cJSON_CreateObject();

    cJSON_AddStringToObject(item, "name", hm->name);
    if (hm->kind == VEER_HDR_MATCH_PRESENT)
        cJSON_AddBoolToObject(item, "present", true);
    else
        cJSON_AddStringToObject(item, hm->kind == VEER_HDR_MATCH_PREFIX ? "prefix" : "exact", hm->value);
    return item;
}

/* NULL when the route matches everything. */
static cJSON *match_json(const veer_route_match_t *m)
{
    if (m->host == NULL && m->path_prefix == NULL && m->path_exact == NULL && m->method == NULL &&
        m->header_count == 0)
        return NULL;
    cJSON *match = cJSON_CreateObject();
    if (m->host != NULL)
        cJSON_AddStringToObject(match, "host", m->host);
    if (m->path_prefix != NULL)
        cJSON_AddStringToObject(match, "path_prefix", m->path_prefix);
    if (m->path_exact != NULL)
        cJSON_AddStringToObject(match, "path", m->path_exact);
    if (m->method != NULL)
        cJSON_AddStringToObject(match, "method", m->method);
    if (m->header_count > 0) {
        cJSON *headers = cJSON_AddArrayToObject(match, "headers");
        for (size_t i = 0; i < m->header_count; i++)
            cJSON_AddItemToArray(headers, header_match_json(&m->headers[i]));
    }
    return match;
}

static cJSON *route_json(const veer_snapshot_t *snap, size_t index)
{
    const veer_route_config_t *route = &snap->config->routes[index];
    cJSON *item = cJSON_CreateObject();
    cJSON *match = match_json(&route->match);

    cJSON_AddStringToObject(item, "name", route->name);
    cJSON_AddItemToObject(item, "weights", weights_json(snap->config, &snap->routes[index]));
    if (match != NULL)
        cJSON_AddItemToObject(item, "match", match);
    cJSON_AddNumberToObject(item, "timeout_ms", (double)route->timeout_ms);
    return item;
}

/* Per-worker counters are written by their worker only; a relaxed load of
 * each gives a sum that is a moment's view, which is all a status page needs. */
static cJSON *endpoint_json(const veer_endpoint_t *ep, uint32_t worker_count)
{
    uint64_t active = 0, connections = 0, idle = 0;
    cJSON *item = cJSON_CreateObject();

    for (uint32_t w = 0; w < worker_count && ep->slots != NULL; w++) {
        active += __atomic_load_n(&ep->slots[w].active_requests, __ATOMIC_RELAXED);
        connections += __atomic_load_n(&ep->slots[w].connections, __ATOMIC_RELAXED);
        idle += __atomic_load_n(&ep->slots[w].idle_count, __ATOMIC_RELAXED);
    }
    cJSON_AddStringToObject(item, "address", ep->name);
    cJSON_AddStringToObject(item, "host", ep->host != NULL ? ep->host : "");
    cJSON_AddNumberToObject(item, "active_requests", (double)active);
    cJSON_AddNumberToObject(item, "connections", (double)connections);
    cJSON_AddNumberToObject(item, "idle_connections", (double)idle);
    cJSON_AddBoolToObject(item, "retired", atomic_load_explicit(&ep->retired, memory_order_relaxed));
    return item;
}

static cJSON *cluster_json(const veer_snapshot_t *snap, size_t index, uint32_t worker_count)
{
    const veer_cluster_config_t *cluster = &snap->config->clusters[index];
    const veer_endpoint_set_t *set = snap->cluster_endpoints != NULL ? snap->cluster_endpoints[index] : NULL;
    cJSON *item = cJSON_CreateObject();
    cJSON *endpoints;

    cJSON_AddStringToObject(item, "name", cluster->name);
    cJSON_AddStringToObject(item, "protocol", protocol_name(cluster->protocol));
    cJSON_AddStringToObject(item, "lb", lb_name(cluster->lb));
    endpoints = cJSON_AddArrayToObject(item, "endpoints");
    for (size_t i = 0; set != NULL && i < set->count; i++) {
        cJSON *ep = endpoint_json(set->endpoints[i], worker_count);
        veer_resilience_endpoint_json(cluster->name, set->endpoints[i]->id, ep);
        cJSON_AddItemToArray(endpoints, ep);
    }
    if (cluster->failover >= 0 && (size_t)cluster->failover < snap->config->cluster_count)
        cJSON_AddStringToObject(item, "failover", snap->config->clusters[cluster->failover].name);
    veer_resilience_cluster_json(cluster->name, item);
    return item;
}

static double uptime_seconds(const veer_admin_t *admin)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - admin->started.tv_sec);
}

static bool is_draining(const veer_admin_t *admin)
{
    return admin->hooks.is_draining != NULL && admin->hooks.is_draining(admin->hooks.ctx);
}

/* ---- read handlers ---- */

static void handle_healthz(admin_call_t *call)
{
    reply_status(call, 200, "ok");
}

static void handle_readyz(admin_call_t *call)
{
    if (is_draining(call->admin))
        reply_status(call, 503, "draining");
    else
        reply_status(call, 200, "ready");
}

static veer_snapshot_t *acquire_or_fail(admin_call_t *call)
{
    veer_snapshot_t *snap = veer_runtime_acquire(call->admin->rt);

    if (snap == NULL || snap->config == NULL) {
        if (snap != NULL)
            veer_snapshot_release(snap);
        reply_error(call, 503, "no configuration loaded");
        return NULL;
    }
    return snap;
}

static void handle_status(admin_call_t *call)
{
    veer_admin_t *admin = call->admin;
    veer_snapshot_t *snap = acquire_or_fail(call);
    if (snap == NULL)
        return;
    const veer_config_t *cfg = snap->config;
    cJSON *body = cJSON_CreateObject();

    cJSON_AddStringToObject(body, "version", VEER_VERSION);
    cJSON_AddNumberToObject(body, "uptime_seconds", uptime_seconds(admin));
    cJSON_AddNumberToObject(body, "generation", (double)snap->generation);
    if (cfg->path != NULL)
        cJSON_AddStringToObject(body, "config_path", cfg->path);
    else
        cJSON_AddNullToObject(body, "config_path");
    cJSON_AddBoolToObject(body, "draining", is_draining(admin));
    /* peers.leader: whether this replica runs the canary controller */
    cJSON_AddBoolToObject(body, "leader", admin->hooks.canary == NULL || veer_controller_leads(admin->hooks.canary));
    cJSON *routes = cJSON_AddArrayToObject(body, "routes");
    for (size_t i = 0; i < cfg->route_count; i++) {
        cJSON *route = route_json(snap, i);
        cJSON *canary = admin->hooks.canary != NULL ? veer_controller_summary(admin->hooks.canary, cfg->routes[i].name)
                                                    : NULL;
        if (route != NULL)
            cJSON_AddItemToObject(route, "canary", canary != NULL ? canary : cJSON_CreateNull());
        cJSON_AddItemToArray(routes, route);
    }
    cJSON *clusters = cJSON_AddArrayToObject(body, "clusters");
    for (size_t i = 0; i < cfg->cluster_count; i++)
        cJSON_AddItemToArray(clusters, cluster_json(snap, i, admin->rt->worker_count));
    veer_snapshot_release(snap);
    cJSON *peers = admin->hooks.canary != NULL ? veer_controller_peers_json(admin->hooks.canary) : NULL;
    cJSON_AddItemToObject(body, "peers", peers != NULL ? peers : cJSON_CreateArray());
    reply_json(call, 200, body);
}

/* Built here on the main thread; workers only see relaxed loads of their
 * counters, so a scrape never holds them up. */
static void handle_metrics(admin_call_t *call)
{
    veer_metrics_source_t *src = call->admin->hooks.metrics;
    if (src == NULL) {
        reply_error(call, 503, "metrics are not available");
        return;
    }
    veer_prom_buf_t b;
    veer_prom_buf_init(&b, VEER_METRICS_MAX_BYTES);
    if (veer_metrics_prometheus(src, &b) < 0)
        reply_error(call, 500, "the metrics text passed its size limit");
    else
        send_text(call, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    veer_prom_buf_free(&b);
}

/* ?window=30s (default VEER_METRICS_DEFAULT_WINDOW_S, capped at stats.window). */
static void handle_stats(admin_call_t *call)
{
    veer_metrics_source_t *src = call->admin->hooks.metrics;
    if (src == NULL || src->rt->stats == NULL) {
        reply_error(call, 503, "stats are not available");
        return;
    }
    uint32_t max_s = veer_stats_window(src->rt->stats);
    uint32_t window_s = max_s < VEER_METRICS_DEFAULT_WINDOW_S ? max_s : VEER_METRICS_DEFAULT_WINDOW_S;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(call->req));
    char err[160];
    if (query != NULL && query[0] != '\0') {
        struct evkeyvalq params;
        TAILQ_INIT(&params);
        int bad = evhttp_parse_query_str(query, &params) != 0;
        for (struct evkeyval *kv = params.tqh_first; !bad && kv != NULL; kv = kv->next.tqe_next) {
            if (strcmp(kv->key, "window") != 0) {
                snprintf(err, sizeof err, "unknown parameter \"%.64s\" (only window)", kv->key);
                bad = 2;
            } else if (veer_metrics_parse_window(kv->value, max_s, &window_s, err, sizeof err) < 0) {
                bad = 2;
            }
        }
        evhttp_clear_headers(&params);
        if (bad) {
            reply_error(call, 400, bad == 2 ? err : "malformed query string");
            return;
        }
    }
    cJSON *body = veer_metrics_stats_json(src, window_s, veer_metrics_now());
    if (body == NULL)
        reply_error(call, 500, "out of memory");
    else
        reply_json(call, 200, body);
}

static void handle_statuspage(admin_call_t *call)
{
    send_text(call, 200, "text/html; charset=utf-8", veer_statuspage_html, veer_statuspage_html_len);
}

static void reply_unknown_route(admin_call_t *call)
{
    char message[ADMIN_NAME_MAX + 32];

    snprintf(message, sizeof message, "unknown route \"%s\"", call->name);
    reply_error(call, 404, message);
}

static void handle_route_get(admin_call_t *call)
{
    veer_snapshot_t *snap = acquire_or_fail(call);
    if (snap == NULL)
        return;
    int index = find_route(snap->config, call->name);
    if (index < 0) {
        veer_snapshot_release(snap);
        reply_unknown_route(call);
        return;
    }
    cJSON *body = route_json(snap, (size_t)index);
    cJSON_AddNumberToObject(body, "generation", (double)snap->generation);
    veer_snapshot_release(snap);
    reply_json(call, 200, body);
}

static void handle_config(admin_call_t *call)
{
    veer_snapshot_t *snap = acquire_or_fail(call);
    if (snap == NULL)
        return;
    char *text = snap->config->json != NULL ? cJSON_PrintUnformatted(snap->config->json) : NULL;
    veer_snapshot_release(snap);
    if (text == NULL) {
        reply_error(call, 500, "config not available");
        return;
    }
    send_text(call, 200, "application/json", text, strlen(text));
    cJSON_free(text);
}

/* ---- PUT /v1/routes/NAME/weights ---- */

typedef struct weights_request_s {
    cJSON *doc;
    const char **names; /* point into doc */
    int64_t *weights;
    size_t count;
    uint64_t if_generation;
    uint64_t generation; /* a leader's change (config "peers"); 0: none */
    bool force;
} weights_request_t;

static void weights_request_clear(weights_request_t *wr)
{
    cJSON_Delete(wr->doc);
    free(wr->names);
    free(wr->weights);
    memset(wr, 0, sizeof *wr);
}

static bool json_whole_number(const cJSON *item, double max, double *out)
{
    if (!cJSON_IsNumber(item))
        return false;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0 || v > max || floor(v) != v)
        return false;
    *out = v;
    return true;
}

static const cJSON *duplicate_key(const cJSON *object)
{
    for (const cJSON *a = object->child; a != NULL; a = a->next)
        for (const cJSON *b = a->next; b != NULL; b = b->next)
            if (strcmp(a->string, b->string) == 0)
                return b;
    return NULL;
}

static int parse_weights_object(const cJSON *weights, weights_request_t *wr, char *err, size_t errlen)
{
    const cJSON *dup;

    if (!cJSON_IsObject(weights)) {
        snprintf(err, errlen, "weights: must be an object of cluster names to integer weights");
        return -1;
    }
    size_t n = (size_t)cJSON_GetArraySize(weights);
    if (n == 0 || n > ADMIN_WEIGHTS_MAX) {
        snprintf(err, errlen, "weights: must name from 1 to %d clusters", ADMIN_WEIGHTS_MAX);
        return -1;
    }
    if ((dup = duplicate_key(weights)) != NULL) {
        snprintf(err, errlen, "weights: duplicate cluster \"%s\"", dup->string);
        return -1;
    }
    wr->names = calloc(n, sizeof *wr->names);
    wr->weights = calloc(n, sizeof *wr->weights);
    if (wr->names == NULL || wr->weights == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (const cJSON *item = weights->child; item != NULL; item = item->next) {
        double v;
        if (!json_whole_number(item, ADMIN_WEIGHT_MAX, &v)) {
            snprintf(err, errlen, "weights.%s: must be an integer from 0 to %.0f", item->string, ADMIN_WEIGHT_MAX);
            return -1;
        }
        wr->names[wr->count] = item->string;
        wr->weights[wr->count++] = (int64_t)v;
    }
    return 0;
}

/* A bit per key the body may hold, 0 for any other key. */
static unsigned body_key_bit(const char *key)
{
    static const char *const keys[] = {"weights", "if_generation", "force", "generation"};

    for (unsigned i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strcmp(key, keys[i]) == 0)
            return 1u << i;
    return 0;
}

static int parse_weights_fields(const cJSON *doc, weights_request_t *wr, char *err, size_t errlen)
{
    const cJSON *weights = NULL;
    double generation;
    unsigned seen = 0;

    for (const cJSON *item = doc->child; item != NULL; item = item->next) {
        unsigned bit = body_key_bit(item->string);
        if ((seen & bit) != 0) {
            snprintf(err, errlen, "duplicate key \"%s\"", item->string);
            return -1;
        }
        seen |= bit;
        if (strcmp(item->string, "weights") == 0) {
            weights = item;
        } else if (strcmp(item->string, "if_generation") == 0) {
            if (!json_whole_number(item, ADMIN_GENERATION_MAX, &generation)) {
                snprintf(err, errlen, "if_generation: must be a non-negative integer");
                return -1;
            }
            wr->if_generation = (uint64_t)generation;
        } else if (strcmp(item->string, "generation") == 0) {
            if (!json_whole_number(item, ADMIN_GENERATION_MAX, &generation) || generation < 1) {
                snprintf(err, errlen, "generation: must be a positive integer");
                return -1;
            }
            wr->generation = (uint64_t)generation;
        } else if (strcmp(item->string, "force") == 0) {
            if (!cJSON_IsBool(item)) {
                snprintf(err, errlen, "force: must be true or false");
                return -1;
            }
            wr->force = cJSON_IsTrue(item);
        } else {
            snprintf(err, errlen, "unknown key \"%s\"", item->string);
            return -1;
        }
    }
    if (weights == NULL) {
        snprintf(err, errlen, "weights: required");
        return -1;
    }
    if (wr->generation != 0 && wr->if_generation != 0) {
        snprintf(err, errlen, "generation and if_generation cannot be combined");
        return -1;
    }
    return parse_weights_object(weights, wr, err, errlen);
}

/* The body as a NUL-terminated copy; NULL when it contains a NUL byte. */
static char *request_body(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    char *text = malloc(len + 1);

    if (text == NULL)
        return NULL;
    evbuffer_copyout(in, text, len);
    text[len] = '\0';
    if (memchr(text, '\0', len) != NULL) {
        free(text);
        return NULL;
    }
    return text;
}

static int parse_weights_request(struct evhttp_request *req, weights_request_t *wr, char *err, size_t errlen)
{
    char *text = request_body(req);

    if (text == NULL) {
        snprintf(err, errlen, "request body is not valid JSON");
        return -1;
    }
    wr->doc = cJSON_ParseWithOpts(text, NULL, 1);
    free(text);
    if (wr->doc == NULL) {
        snprintf(err, errlen, "request body is not valid JSON");
        return -1;
    }
    if (!cJSON_IsObject(wr->doc)) {
        snprintf(err, errlen, "request body must be a JSON object");
        return -1;
    }
    return parse_weights_fields(wr->doc, wr, err, errlen);
}

static int runtime_error_status(int rc)
{
    switch (rc) {
    case VEER_RT_EINVAL: return 400;
    case VEER_RT_ESTALE: return 409;
    case VEER_RT_ELOCKED: return 423;
    default: return 500;
    }
}

static cJSON *requested_weights_json(const weights_request_t *wr)
{
    cJSON *weights = cJSON_CreateObject();

    for (size_t i = 0; i < wr->count; i++)
        cJSON_AddNumberToObject(weights, wr->names[i], (double)wr->weights[i]);
    return weights;
}

static void reply_weights_applied(admin_call_t *call, uint64_t generation)
{
    veer_snapshot_t *snap = acquire_or_fail(call);
    if (snap == NULL)
        return;
    int index = find_route(snap->config, call->name);
    cJSON *body = cJSON_CreateObject();

    cJSON_AddStringToObject(body, "route", call->name);
    cJSON_AddNumberToObject(body, "generation", (double)generation);
    if (index >= 0)
        cJSON_AddItemToObject(body, "weights", weights_json(snap->config, &snap->routes[index]));
    veer_snapshot_release(snap);
    reply_json(call, 200, body);
}

static bool route_exists(admin_call_t *call)
{
    veer_snapshot_t *snap = acquire_or_fail(call);
    if (snap == NULL)
        return false;
    bool found = find_route(snap->config, call->name) >= 0;
    veer_snapshot_release(snap);
    if (!found)
        reply_unknown_route(call);
    return found;
}

/* 423 while a canary run owns the route; force aborts the run first. */
static void handle_weights_put(admin_call_t *call)
{
    weights_request_t wr = {0};
    char err[512] = "";
    uint64_t generation = 0;

    call->change = cJSON_CreateObject();
    cJSON_AddStringToObject(call->change, "route", call->name);
    /* tells a leader whose peer list names this replica that it is talking to itself */
    evhttp_add_header(evhttp_request_get_output_headers(call->req), VEER_PEERS_INSTANCE_HEADER,
                      veer_peers_instance());
    if (!route_exists(call))
        return;
    if (parse_weights_request(call->req, &wr, err, sizeof err) != 0) {
        weights_request_clear(&wr);
        reply_error(call, 400, err);
        return;
    }
    cJSON_AddItemToObject(call->change, "weights", requested_weights_json(&wr));
    veer_controller_t *canary = call->admin->hooks.canary;
    if (canary != NULL && veer_controller_owns(canary, call->name)) {
        if (!wr.force) {
            weights_request_clear(&wr);
            reply_error(call, 423, "a canary run owns this route's weights; pause or abort it, or send \"force\": true");
            return;
        }
        /* force: the run is rolled back first, then these weights win */
        cJSON_AddBoolToObject(call->change, "canary_aborted", true);
        veer_controller_release(canary, call->name);
    }
    /* with "generation" the change comes from a leader: adopted, never passed on */
    bool from_leader = wr.generation != 0;
    /* a follower's weights are the leader's: an operator's change here alone
     * would be undone by the leader's next one, so it must be meant */
    if (!from_leader && canary != NULL && !veer_controller_leads(canary)) {
        if (!wr.force) {
            weights_request_clear(&wr);
            reply_error(call, 409, "weights on a follower come from the leader (peers.leader); set them there, or "
                                   "send \"force\": true to change this replica alone");
            return;
        }
        cJSON_AddBoolToObject(call->change, "follower_forced", true);
    }
    bool over_local = false, self = false;
    const char *instance = "";
    if (from_leader) {
        cJSON_AddNumberToObject(call->change, "leader_generation", (double)wr.generation);
        instance = evhttp_find_header(evhttp_request_get_input_headers(call->req), VEER_PEERS_INSTANCE_HEADER);
        instance = instance != NULL ? instance : "";
        self = strcmp(instance, veer_peers_instance()) == 0; /* a shared peer list naming this replica */
        veer_snapshot_t *snap = veer_runtime_acquire(call->admin->rt);
        bool has_peers = snap->config->peers.admin_count > 0; /* without a peers block: anyone's follower */
        veer_snapshot_release(snap);
        if (!self && has_peers && canary != NULL && veer_controller_leads(canary)) {
            weights_request_clear(&wr);
            reply_error(call, 409, "this replica leads too (peers.leader): only one replica may lead; give the "
                                   "others peers.leader false");
            return;
        }
        /* on a follower the leader's numbering wins, unless this is an older
         * (or a conflicting repeated) change of the same leader arriving late */
        bool same_leader = instance[0] == '\0' || strcmp(instance, call->admin->leader_instance) == 0;
        over_local = !self && !(same_leader && wr.generation <= call->admin->leader_last);
    }
    uint64_t leader_generation = wr.generation;
    int rc = from_leader ? veer_runtime_adopt_weights(call->admin->rt, call->name, wr.names, wr.weights, wr.count,
                                                      wr.generation, over_local, &generation, err, sizeof err)
                         : veer_runtime_set_weights(call->admin->rt, call->name, wr.names, wr.weights, wr.count,
                                                    wr.if_generation, &generation, err, sizeof err);
    weights_request_clear(&wr);
    if (rc != VEER_RT_OK) {
        reply_error(call, runtime_error_status(rc), err[0] != '\0' ? err : "weights not applied");
        return;
    }
    if (from_leader && !self) {
        /* a newer change, or another leader instance (restarted, perhaps
         * without its state file): that leader's order from now on */
        bool other = instance[0] != '\0' && strcmp(instance, call->admin->leader_instance) != 0;
        if (other)
            snprintf(call->admin->leader_instance, sizeof call->admin->leader_instance, "%s", instance);
        if (other || leader_generation > call->admin->leader_last)
            call->admin->leader_last = leader_generation;
    }
    if (!from_leader && canary != NULL)
        veer_controller_weights_changed(canary, call->name);
    call->has_generation = true;
    call->generation = generation;
    reply_weights_applied(call, generation);
}

/* ---- POST /v1/reload, /v1/drain ---- */

/* errors: one per line. The audit line gets them joined with "; ". */
static void reply_reload_errors(admin_call_t *call, char *errors)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *list;
    char *save = NULL;
    size_t used = (size_t)snprintf(call->error, sizeof call->error, "invalid config");

    cJSON_AddStringToObject(body, "error", "invalid config");
    list = cJSON_AddArrayToObject(body, "errors");
    for (char *line = strtok_r(errors, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        cJSON_AddItemToArray(list, cJSON_CreateString(line));
        if (used < sizeof call->error)
            used += (size_t)snprintf(call->error + used, sizeof call->error - used, "%s%s",
                                     list->child->next == NULL ? ": " : "; ", line);
    }
    reply_json(call, 400, body);
}

static void reply_reloaded(admin_call_t *call)
{
    veer_snapshot_t *snap = acquire_or_fail(call);
    if (snap == NULL)
        return;
    cJSON *body = cJSON_CreateObject();

    call->has_generation = true;
    call->generation = snap->generation;
    veer_snapshot_release(snap);
    cJSON_AddStringToObject(body, "status", "reloaded");
    cJSON_AddNumberToObject(body, "generation", (double)call->generation);
    reply_json(call, 200, body);
}

static void handle_reload(admin_call_t *call)
{
    veer_admin_t *admin = call->admin;
    char *errors;

    call->change = cJSON_CreateString("reload");
    if (admin->hooks.reload == NULL) {
        reply_error(call, 500, "reload is not available");
        return;
    }
    if ((errors = calloc(1, ADMIN_RELOAD_ERR_MAX)) == NULL) {
        reply_error(call, 500, "out of memory");
        return;
    }
    if (admin->hooks.reload(admin->hooks.ctx, errors, ADMIN_RELOAD_ERR_MAX) != 0)
        reply_reload_errors(call, errors);
    else
        reply_reloaded(call);
    free(errors);
}

static void handle_drain(admin_call_t *call)
{
    veer_admin_t *admin = call->admin;

    call->change = cJSON_CreateString("drain");
    if (admin->hooks.drain == NULL) {
        reply_error(call, 500, "drain is not available");
        return;
    }
    admin->hooks.drain(admin->hooks.ctx);
    reply_status(call, 202, "draining");
}

/* ---- /v1/routes/NAME/canary ---- */

static void reply_canary(admin_call_t *call, int status, cJSON *body)
{
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(body, "error");
    if (cJSON_IsString(error))
        snprintf(call->error, sizeof call->error, "%s", error->valuestring);
    reply_json(call, status, body);
}

static veer_controller_t *canary_or_fail(admin_call_t *call)
{
    if (call->admin->hooks.canary == NULL)
        reply_error(call, 503, "the canary controller is not running");
    return call->admin->hooks.canary;
}

static void handle_canary_get(admin_call_t *call)
{
    veer_controller_t *ctl = canary_or_fail(call);
    cJSON *body = NULL;
    if (ctl != NULL) {
        int status = veer_controller_get(ctl, call->name, &body);
        reply_canary(call, status, body);
    }
}

static void handle_canary_start(admin_call_t *call)
{
    veer_controller_t *ctl = canary_or_fail(call);
    cJSON *body = NULL, *doc = NULL;
    if (ctl == NULL)
        return;
    call->change = cJSON_CreateObject();
    cJSON_AddStringToObject(call->change, "route", call->name);
    cJSON_AddStringToObject(call->change, "canary", "start");
    char *text = request_body(call->req);
    if (text == NULL) {
        reply_error(call, 400, "body: not readable JSON");
        return;
    }
    const char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    if (*p != '\0' && (doc = cJSON_Parse(text)) == NULL) {
        free(text);
        reply_error(call, 400, "body: invalid JSON");
        return;
    }
    free(text);
    int status = veer_controller_start(ctl, call->name, doc, &body);
    cJSON_Delete(doc);
    reply_canary(call, status, body);
}

static void handle_canary_verb(admin_call_t *call)
{
    veer_controller_t *ctl = canary_or_fail(call);
    const char *verb = strrchr(call->path, '/') + 1;
    cJSON *body = NULL;
    if (ctl == NULL)
        return;
    call->change = cJSON_CreateObject();
    cJSON_AddStringToObject(call->change, "route", call->name);
    cJSON_AddStringToObject(call->change, "canary", verb);
    int status = veer_controller_command(ctl, call->name, verb, &body);
    reply_canary(call, status, body);
}

/* ---- dispatch ---- */

static const admin_endpoint_t ENDPOINTS[] = {
    {"/healthz", EVHTTP_REQ_GET, ACCESS_OPEN, handle_healthz},
    {"/readyz", EVHTTP_REQ_GET, ACCESS_OPEN, handle_readyz},
    {"/v1/status", EVHTTP_REQ_GET, ACCESS_READ, handle_status},
    {"/", EVHTTP_REQ_GET, ACCESS_READ, handle_statuspage},
    {"/metrics", EVHTTP_REQ_GET, ACCESS_READ, handle_metrics},
    {"/v1/stats", EVHTTP_REQ_GET, ACCESS_READ, handle_stats},
    {"/v1/config", EVHTTP_REQ_GET, ACCESS_READ, handle_config},
    {"/v1/routes/*", EVHTTP_REQ_GET, ACCESS_READ, handle_route_get},
    {"/v1/routes/*/weights", EVHTTP_REQ_PUT, ACCESS_MUTATE, handle_weights_put},
    {"/v1/routes/*/canary", EVHTTP_REQ_GET, ACCESS_READ, handle_canary_get},
    {"/v1/routes/*/canary", EVHTTP_REQ_POST, ACCESS_MUTATE, handle_canary_start},
    {"/v1/routes/*/canary/pause", EVHTTP_REQ_POST, ACCESS_MUTATE, handle_canary_verb},
    {"/v1/routes/*/canary/resume", EVHTTP_REQ_POST, ACCESS_MUTATE, handle_canary_verb},
    {"/v1/routes/*/canary/promote", EVHTTP_REQ_POST, ACCESS_MUTATE, handle_canary_verb},
    {"/v1/routes/*/canary/abort", EVHTTP_REQ_POST, ACCESS_MUTATE, handle_canary_verb},
    {"/v1/reload", EVHTTP_REQ_POST, ACCESS_MUTATE, handle_reload},
    {"/v1/drain", EVHTTP_REQ_POST, ACCESS_MUTATE, handle_drain},
};
#define ENDPOINT_COUNT (sizeof ENDPOINTS / sizeof ENDPOINTS[0])

static const char *method_name(enum evhttp_cmd_type method)
{
    switch (method) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "UNKNOWN";
    }
}

/* Match path against pattern segment by segment; the raw text of a "*"
 * segment is copied to capture. */
static bool path_matches(const char *pattern, const char *path, char *capture, size_t caplen)
{
    while (*pattern != '\0' && *path != '\0') {
        if (*pattern == '*') {
            size_t len = strcspn(path, "/");
            if (len == 0 || len >= caplen)
                return false;
            memcpy(capture, path, len);
            capture[len] = '\0';
            path += len;
            pattern++;
        } else if (*pattern++ != *path++) {
            return false;
        }
    }
    return *pattern == '\0' && *path == '\0';
}

/* Decode %XX in the captured segment in place; false if it hides a NUL or '/'. */
static bool decode_segment(char *segment, size_t size)
{
    size_t len = 0;
    char *decoded = evhttp_uridecode(segment, 0, &len);
    bool ok = decoded != NULL && len < size && strlen(decoded) == len && strchr(decoded, '/') == NULL;

    if (ok)
        memcpy(segment, decoded, len + 1);
    free(decoded);
    return ok;
}

static void reply_method_not_allowed(admin_call_t *call, const char *pattern)
{
    char allow[64] = "";

    for (size_t i = 0; i < ENDPOINT_COUNT; i++) {
        if (strcmp(ENDPOINTS[i].pattern, pattern) != 0)
            continue;
        const char *sep = allow[0] != '\0' ? ", " : "";
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof allow - used, "%s%s%s", sep, method_name(ENDPOINTS[i].method),
                 ENDPOINTS[i].method == EVHTTP_REQ_GET ? ", HEAD" : "");
    }
    evhttp_add_header(evhttp_request_get_output_headers(call->req), "Allow", allow);
    reply_error(call, 405, "method not allowed");
}

/* Constant time in the length of the presented token, whatever it holds. */
static bool token_equal(const char *given, size_t given_len, const char *token, size_t token_len)
{
    unsigned char diff = given_len != token_len;

    if (token_len == 0)
        return false;
    for (size_t i = 0; i < given_len; i++)
        diff |= (unsigned char)given[i] ^ (unsigned char)token[i % token_len];
    return diff == 0;
}

/* The token after "Bearer ", trimmed; NULL if the header is absent or not a
 * bearer credential. */
static const char *bearer_token(struct evhttp_request *req, size_t *len)
{
    const char *value = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");

    if (value == NULL || strncasecmp(value, "Bearer", 6) != 0 || (value[6] != ' ' && value[6] != '\t'))
        return NULL;
    value += 6;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t n = strlen(value);
    while (n > 0 && isspace((unsigned char)value[n - 1]))
        n--;
    *len = n;
    return n > 0 ? value : NULL;
}

static bool needs_auth(const veer_admin_t *admin, admin_access_t access)
{
    if (admin->token == NULL || access == ACCESS_OPEN)
        return false;
    return access == ACCESS_MUTATE || admin->protect_reads;
}

/* 0 when the caller may proceed; otherwise the 401/403 has been sent. */
static int check_auth(admin_call_t *call)
{
    veer_admin_t *admin = call->admin;
    size_t len = 0;
    const char *given = bearer_token(call->req, &len);

    if (given == NULL) {
        evhttp_add_header(evhttp_request_get_output_headers(call->req), "WWW-Authenticate", "Bearer");
        reply_error(call, 401, "missing bearer token");
        return -1;
    }
    if (!token_equal(given, len, admin->token, admin->token_len)) {
        reply_error(call, 403, "invalid token");
        return -1;
    }
    return 0;
}

static void dispatch(admin_call_t *call, enum evhttp_cmd_type method)
{
    const admin_endpoint_t *path_hit = NULL;
    enum evhttp_cmd_type as = method == EVHTTP_REQ_HEAD ? EVHTTP_REQ_GET : method;

    for (size_t i = 0; i < ENDPOINT_COUNT; i++) {
        const admin_endpoint_t *ep = &ENDPOINTS[i];
        if (!path_matches(ep->pattern, call->path, call->name, sizeof call->name))
            continue;
        path_hit = ep;
        if (ep->method != as)
            continue;
        if (strchr(ep->pattern, '*') != NULL && !decode_segment(call->name, sizeof call->name)) {
            reply_error(call, 404, "not found");
            return;
        }
        if (needs_auth(call->admin, ep->access) && check_auth(call) != 0) {
            audit_write(call);
            return;
        }
        ep->handler(call);
        if (ep->access == ACCESS_MUTATE)
            audit_write(call);
        return;
    }
    if (path_hit != NULL && path_hit->method != as)
        reply_method_not_allowed(call, path_hit->pattern);
    else
        reply_error(call, 404, "not found");
}

static void on_request(struct evhttp_request *req, void *arg)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    admin_call_t call = {.admin = arg, .req = req};

    call.method = method_name(evhttp_request_get_command(req));
    call.path = path != NULL && path[0] != '\0' ? path : "/";
    dispatch(&call, evhttp_request_get_command(req));
    cJSON_Delete(call.change);
}

/* ---- token file ---- */

static void token_free(char *token, size_t len)
{
    if (token == NULL)
        return;
    explicit_bzero(token, len);
    free(token);
}

static ssize_t read_small_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t used = 0;

    if (fd < 0)
        return -1;
    while (used < size) {
        ssize_t n = read(fd, buf + used, size - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int saved = errno;
            close(fd);
            errno = saved;
            return n < 0 ? -1 : (ssize_t)used;
        }
        used += (size_t)n;
    }
    close(fd);
    return (ssize_t)used;
}

/* Read and trim the token. *out NULL when path is NULL (no authentication). */
static int token_load(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    char buf[ADMIN_TOKEN_MAX + 1];
    ssize_t n;

    *out = NULL;
    *outlen = 0;
    if (path == NULL)
        return 0;
    if ((n = read_small_file(path, buf, sizeof buf)) < 0) {
        snprintf(err, errlen, "admin.token_file %s: %s", path, strerror(errno));
        return -1;
    }
    if ((size_t)n > ADMIN_TOKEN_MAX) {
        snprintf(err, errlen, "admin.token_file %s: longer than %d bytes", path, ADMIN_TOKEN_MAX);
        return -1;
    }
    char *start = buf, *end = buf + n;
    while (start < end && isspace((unsigned char)*start))
        start++;
    while (end > start && isspace((unsigned char)end[-1]))
        end--;
    if (start == end || memchr(start, '\0', (size_t)(end - start)) != NULL) {
        snprintf(err, errlen, "admin.token_file %s: %s", path, start == end ? "empty" : "contains a NUL byte");
        explicit_bzero(buf, sizeof buf);
        return -1;
    }
    *out = strndup(start, (size_t)(end - start));
    *outlen = (size_t)(end - start);
    explicit_bzero(buf, sizeof buf);
    if (*out == NULL) {
        snprintf(err, errlen, "admin.token_file %s: out of memory", path);
        return -1;
    }
    return 0;
}

/* ---- listening socket ---- */

static struct evhttp_bound_socket *bind_admin(struct evhttp *http, const veer_admin_config_t *ac, char *err,
                                              size_t errlen)
{
    const struct sockaddr *sa = (const struct sockaddr *)&ac->addr;
    int one = 1;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, sa, ac->addrlen) != 0 || listen(fd, 128) != 0) {
        snprintf(err, errlen, "admin.address %s: %s", ac->address, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(http, fd);
    if (bound == NULL) {
        snprintf(err, errlen, "admin.address %s: cannot accept connections", ac->address);
        close(fd);
    }
    return bound;
}

static struct evhttp *http_new(struct event_base *base, veer_admin_t *admin)
{
    struct evhttp *http = evhttp_new(base);

    if (http == NULL)
        return NULL;
    evhttp_set_max_headers_size(http, ADMIN_MAX_HEADERS_SIZE);
    evhttp_set_max_body_size(http, ADMIN_MAX_BODY_SIZE);
    evhttp_set_timeout(http, ADMIN_TIMEOUT_SECONDS);
    evhttp_set_allowed_methods(http, ADMIN_ALL_METHODS);
    evhttp_set_gencb(http, on_request, admin);
    return http;
}

/* ---- public ---- */

veer_admin_t *veer_admin_start(struct event_base *base, veer_runtime_t *rt, const veer_config_t *cfg,
                               const veer_admin_hooks_t *hooks, char *err, size_t errlen)
{
    veer_admin_t *admin = calloc(1, sizeof *admin);

    if (admin == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return NULL;
    }
    admin->rt = rt;
    if (hooks != NULL)
        admin->hooks = *hooks;
    admin->protect_reads = cfg->admin.protect_reads;
    clock_gettime(CLOCK_MONOTONIC, &admin->started);
    if (token_load(cfg->admin.token_file, &admin->token, &admin->token_len, err, errlen) != 0)
        goto fail;
    if ((admin->address = strdup(cfg->admin.address)) == NULL || (admin->http = http_new(base, admin)) == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        goto fail;
    }
    if ((admin->bound = bind_admin(admin->http, &cfg->admin, err, errlen)) == NULL)
        goto fail;
    return admin;
fail:
    veer_admin_free(admin);
    return NULL;
}

/* A new admin.address is bound before the old socket is let go, so a failed
 * rebind leaves the admin API where it was. */
static int rebind_if_moved(veer_admin_t *admin, const veer_config_t *cfg, char *err, size_t errlen)
{
    if (strcmp(admin->address, cfg->admin.address) == 0)
        return 0;
    char *address = strdup(cfg->admin.address);
    struct evhttp_bound_socket *bound = address != NULL ? bind_admin(admin->http, &cfg->admin, err, errlen) : NULL;

    if (bound == NULL) {
        if (address == NULL)
            snprintf(err, errlen, "admin: out of memory");
        free(address);
        return -1;
    }
    evhttp_del_accept_socket(admin->http, admin->bound);
    admin->bound = bound;
    free(admin->address);
    admin->address = address;
    return 0;
}

int veer_admin_reconfigure(veer_admin_t *admin, const veer_config_t *cfg, char *err, size_t errlen)
{
    char *token = NULL;
    size_t token_len = 0;

    if (token_load(cfg->admin.token_file, &token, &token_len, err, errlen) != 0)
        return -1;
    if (rebind_if_moved(admin, cfg, err, errlen) != 0) {
        token_free(token, token_len);
        return -1;
    }
    token_free(admin->token, admin->token_len);
    admin->token = token;
    admin->token_len = token_len;
    admin->protect_reads = cfg->admin.protect_reads;
    return 0;
}

void veer_admin_free(veer_admin_t *admin)
{
    if (admin == NULL)
        return;
    if (admin->http != NULL) {
        if (admin->bound != NULL)
            evhttp_del_accept_socket(admin->http, admin->bound);
        evhttp_free(admin->http);
    }
    token_free(admin->token, admin->token_len);
    free(admin->address);
    free(admin);
}
