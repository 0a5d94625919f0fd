/* peers.c - weight changes applied to the peer replicas (peers.h): one queue
 * of waiting changes per peer, sent in generation order one at a time on
 * libevent's evhttp client, one connection per attempt. As in webhook.c, a
 * connection is freed from the peer's timer, never inside evhttp's callback. */
#include "peers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"

#define PEER_TOKEN_MAX 4096
#define PEER_ERROR_CAP 256

typedef struct item_s {
    char *route;
    uint64_t generation;
    char *body; /* {"weights": {...}, "generation": N} */
} item_t;

typedef struct peer_s {
    veer_peers_t *owner;
    char *admin; /* as configured */
    char *host;
    int port;
    item_t *items; /* waiting changes, oldest (lowest generation) first */
    size_t count, cap;
    struct evhttp_connection *conn; /* non-NULL while items[0] is on the wire */
    struct event *timer;            /* next attempt, and the deferred end of one */
    bool finished;                  /* an attempt is over: the timer decides what is next */
    int last_status;
    char answer[PEER_ERROR_CAP]; /* the "error" of the last answer, if any */
    uint32_t failures;           /* consecutive failed attempts of items[0] */
    bool unreachable, rejected;
    bool answered_self;          /* the last answer carried our own instance id */
    bool self;                   /* this entry is this replica: nothing is sent to it */
    uint64_t wanted; /* the newest generation queued for it */
    uint64_t acked;  /* the newest generation it answered 2xx for */
    uint64_t dropped;
    char last_error[PEER_ERROR_CAP];
} peer_t;

struct veer_peers_s {
    struct event_base *base;
    struct evdns_base *dns;
    veer_runtime_t *rt;
    veer_peers_failed_fn failed;
    void *arg;
    peer_t **peers;
    size_t count;
    uint64_t timeout_ms;
    uint32_t retries;
    char *token; /* NULL: no Authorization header */
};

static char instance_id[33];

const char *veer_peers_instance(void)
{
    if (instance_id[0] == '\0') {
        unsigned char raw[16];
        if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
            /* no entropy source: time and pid still tell processes apart */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t a = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30), b = (uint64_t)getpid();
            memcpy(raw, &a, 8);
            memcpy(raw + 8, &b, 8);
        }
        for (size_t i = 0; i < sizeof raw; i++)
            snprintf(instance_id + 2 * i, 3, "%02x", raw[i]);
    }
    return instance_id;
}

static void item_clear(item_t *it)
{
    free(it->route);
    free(it->body);
    memset(it, 0, sizeof *it);
}

static void peer_free(peer_t *pe)
{
    if (pe == NULL)
        return;
    if (pe->conn != NULL)
        evhttp_connection_free(pe->conn);
    if (pe->timer != NULL)
        event_free(pe->timer);
    for (size_t i = 0; i < pe->count; i++)
        item_clear(&pe->items[i]);
    free(pe->items);
    free(pe->admin);
    free(pe->host);
    free(pe);
}

static void remove_item(peer_t *pe, size_t i)
{
    item_clear(&pe->items[i]);
    memmove(&pe->items[i], &pe->items[i + 1], (pe->count - i - 1) * sizeof *pe->items);
    pe->count--;
}

static void log_result(const peer_t *pe, const item_t *it, const char *result, const char *error)
{
    cJSON *line = cJSON_CreateObject();
    char ts[32];

    if (line == NULL)
        return;
    veer_log_timestamp(ts);
    cJSON_AddStringToObject(line, "ts", ts);
    cJSON_AddStringToObject(line, "level", error != NULL ? "warn" : "info");
    cJSON_AddStringToObject(line, "msg", "peer");
    cJSON_AddStringToObject(line, "peer", pe->admin);
    cJSON_AddStringToObject(line, "route", it->route);
    cJSON_AddNumberToObject(line, "generation", (double)it->generation);
    cJSON_AddStringToObject(line, "result", result);
    cJSON_AddNumberToObject(line, "attempts", pe->failures + 1.0);
    if (error != NULL)
        cJSON_AddStringToObject(line, "error", error);
    char *text = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    if (text != NULL)
        veer_log_raw(text, strlen(text));
    free(text);
}

static void arm(peer_t *pe, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(pe->timer, &tv);
}

/* Start sending when idle: nothing on the wire and no attempt scheduled. */
static void kick(peer_t *pe)
{
    if (pe->count > 0 && pe->conn == NULL && !evtimer_pending(pe->timer, NULL))
        arm(pe, 0);
}

static void on_response(struct evhttp_request *req, void *arg)
{
    peer_t *pe = arg;

    pe->answer[0] = '\0';
    pe->answered_self = false;
    pe->last_status = req != NULL ? evhttp_request_get_response_code(req) : 0;
    if (req != NULL && pe->last_status != 0) {
        const char *id = evhttp_find_header(evhttp_request_get_input_headers(req), VEER_PEERS_INSTANCE_HEADER);
        pe->answered_self = id != NULL && strcmp(id, veer_peers_instance()) == 0;
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        char text[1024];
        ev_ssize_t got = evbuffer_copyout(in, text, sizeof text - 1);
        size_t n = got > 0 ? (size_t)got : 0;
        text[n] = '\0';
        cJSON *doc = cJSON_ParseWithLength(text, n);
        const cJSON *error = cJSON_GetObjectItemCaseSensitive(doc, "error");
        if (cJSON_IsString(error))
            snprintf(pe->answer, sizeof pe->answer, "%s", error->valuestring);
        cJSON_Delete(doc);
    }
    pe->finished = true;
    arm(pe, 0);
}

static int attempt(peer_t *pe)
{
    veer_peers_t *p = pe->owner;
    const item_t *it = &pe->items[0];
    struct timeval tv = {(time_t)(p->timeout_ms / 1000), (suseconds_t)(p->timeout_ms % 1000) * 1000};
    struct evhttp_request *req;
    char path[1024], hostport[300], auth[PEER_TOKEN_MAX + 16];

    char *route = evhttp_encode_uri(it->route);
    if (route == NULL)
        return -1;
    int len = snprintf(path, sizeof path, "/v1/routes/%s/weights", route);
    free(route);
    if (len < 0 || (size_t)len >= sizeof path)
        return -1;
    pe->conn = evhttp_connection_base_new(p->base, p->dns, pe->host, (unsigned short)pe->port);
    if (pe->conn == NULL)
        return -1;
    evhttp_connection_set_timeout_tv(pe->conn, &tv);
    if ((req = evhttp_request_new(on_response, pe)) == NULL)
        return -1;
    snprintf(hostport, sizeof hostport, "%s", pe->admin);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", hostport);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "User-Agent", "veer-peers");
    evhttp_add_header(h, "Connection", "close");
    evhttp_add_header(h, VEER_PEERS_INSTANCE_HEADER, veer_peers_instance());
    if (p->token != NULL) {
        snprintf(auth, sizeof auth, "Bearer %s", p->token);
        evhttp_add_header(h, "Authorization", auth);
    }
    evbuffer_add(evhttp_request_get_output_buffer(req), it->body, strlen(it->body));
    /* evhttp_make_request frees req itself when it fails */
    return evhttp_make_request(pe->conn, req, EVHTTP_REQ_PUT, path);
}

/* Answers that no retry can change: the peer refuses these weights. 401 and
 * 403 are not among them: a token fixed on either side makes a retry pass. */
static bool refused(int status)
{
    return status == 400 || status == 404 || status == 409 || status == 413 || status == 423;
}

static void attempt_over(peer_t *pe)
{
    veer_peers_t *p = pe->owner;
    item_t *it = &pe->items[0];
    int status = pe->last_status;
    char why[PEER_ERROR_CAP + 160];

    if (pe->answered_self) {
        /* our own admin API: it holds every change already */
        log_result(pe, it, "self", NULL);
        while (pe->count > 0)
            remove_item(pe, 0);
        pe->self = true;
        pe->failures = 0;
        pe->unreachable = pe->rejected = false;
        pe->last_error[0] = '\0';
        pe->acked = pe->wanted;
        return;
    }
    if (status >= 200 && status < 300) {
        log_result(pe, it, "acked", NULL);
        if (it->generation > pe->acked)
            pe->acked = it->generation;
        remove_item(pe, 0);
        pe->failures = 0;
        pe->unreachable = pe->rejected = false;
        pe->last_error[0] = '\0';
        kick(pe);
        return;
    }
    if (status == 0)
        snprintf(pe->last_error, sizeof pe->last_error, "no answer within %llu ms (connect failure or timeout)",
                 (unsigned long long)p->timeout_ms);
    else
        snprintf(pe->last_error, sizeof pe->last_error, "HTTP %d%s%.200s", status, pe->answer[0] ? ": " : "",
                 pe->answer);
    if (refused(status)) {
        log_result(pe, it, "rejected", pe->last_error);
        snprintf(why, sizeof why, "peer %s rejected generation %llu: %s", pe->admin,
                 (unsigned long long)it->generation, pe->last_error);
        remove_item(pe, 0);
        pe->failures = 0;
        pe->rejected = true;
        kick(pe);
        if (p->failed != NULL)
            p->failed(p->arg, why);
        return;
    }
    pe->failures++;
    if (pe->failures > p->retries && !pe->unreachable) {
        pe->unreachable = true;
        log_result(pe, it, "unreachable", pe->last_error);
        snprintf(why, sizeof why, "peer %s unreachable", pe->admin);
        if (p->failed != NULL)
            p->failed(p->arg, why);
    }
    /* kept retrying past the retries: "retried until all agree" */
    uint32_t shift = pe->failures - 1 > 5 ? 5 : pe->failures - 1;
    uint64_t ms = (uint64_t)VEER_PEERS_BACKOFF_FIRST_MS << shift;
    arm(pe, ms > VEER_PEERS_BACKOFF_MAX_MS ? VEER_PEERS_BACKOFF_MAX_MS : ms);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    peer_t *pe = arg;
    (void)fd;
    (void)what;

    if (pe->finished) {
        pe->finished = false;
        if (pe->conn != NULL) {
            evhttp_connection_free(pe->conn);
            pe->conn = NULL;
        }
        if (pe->count > 0)
            attempt_over(pe);
        return;
    }
    if (pe->count == 0)
        return;
    if (attempt(pe) != 0) {
        /* counts as an attempt without an answer */
        if (pe->conn != NULL) {
            evhttp_connection_free(pe->conn);
            pe->conn = NULL;
        }
        pe->last_status = 0;
        pe->answer[0] = '\0';
        attempt_over(pe);
    }
}

/* "host:port" or "[v6]:port", validated by the config loader. */
static peer_t *peer_new(veer_peers_t *p, const char *admin)
{
    peer_t *pe = calloc(1, sizeof *pe);
    const char *colon = strrchr(admin, ':');

    if (pe == NULL || colon == NULL) {
        free(pe);
        return NULL;
    }
    const char *host = admin;
    size_t hlen = (size_t)(colon - admin);
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    pe->owner = p;
    pe->port = atoi(colon + 1);
    pe->admin = strdup(admin);
    pe->host = strndup(host, hlen);
    pe->timer = evtimer_new(p->base, on_timer, pe);
    if (pe->admin == NULL || pe->host == NULL || pe->timer == NULL) {
        peer_free(pe);
        return NULL;
    }
    return pe;
}

static char *read_token(const char *path)
{
    FILE *f = fopen(path, "rb");
    char buf[PEER_TOKEN_MAX + 1];

    if (f == NULL)
        return NULL;
    size_t n = fread(buf, 1, PEER_TOKEN_MAX, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
            return NULL; /* would break the header line */
    return n > 0 ? strdup(buf) : NULL;
}

/* Match the peer list to the current config: peers kept by address keep
 * their queues; dropped ones are cancelled. */
static void sync_config(veer_peers_t *p, bool reread_token)
{
    veer_snapshot_t *snap = veer_runtime_acquire(p->rt);
    const veer_peers_config_t *pc = &snap->config->peers;
    peer_t **next = pc->admin_count > 0 ? calloc(pc->admin_count, sizeof *next) : NULL;
    size_t n = 0;

    p->timeout_ms = pc->timeout_ms > 0 ? pc->timeout_ms : 1;
    p->retries = pc->retries;
    if (reread_token) {
        free(p->token);
        p->token = NULL;
        if (pc->token_file != NULL && (p->token = read_token(pc->token_file)) == NULL)
            veer_log_error("peers: token_file %s cannot be read (or is empty); sending without a token",
                           pc->token_file);
    }
    if (pc->admin_count > 0 && next == NULL) {
        veer_snapshot_release(snap);
        return; /* out of memory: the old list stays */
    }
    for (size_t i = 0; i < pc->admin_count; i++) {
        peer_t *found = NULL;
        for (size_t j = 0; j < p->count && found == NULL; j++)
            if (p->peers[j] != NULL && strcmp(p->peers[j]->admin, pc->admins[i]) == 0) {
                found = p->peers[j];
                p->peers[j] = NULL;
            }
        if (found == NULL && (found = peer_new(p, pc->admins[i])) == NULL)
            veer_log_error("peers: out of memory adding %s", pc->admins[i]);
        if (found != NULL)
            next[n++] = found;
    }
    veer_snapshot_release(snap);
    for (size_t j = 0; j < p->count; j++)
        peer_free(p->peers[j]);
    free(p->peers);
    p->peers = next;
    p->count = n;
}

static void enqueue(peer_t *pe, const char *route, uint64_t generation, const char *body)
{
    if (pe->self)
        return;
    /* a waiting change of the same route is superseded, unless it is on the wire */
    for (size_t i = 0; i < pe->count; i++)
        if (strcmp(pe->items[i].route, route) == 0 && !(i == 0 && pe->conn != NULL)) {
            remove_item(pe, i);
            break;
        }
    if (pe->count >= VEER_PEERS_MAX_PENDING) {
        pe->dropped++;
        snprintf(pe->last_error, sizeof pe->last_error, "%d changes already waiting; generation %llu dropped",
                 VEER_PEERS_MAX_PENDING, (unsigned long long)generation);
        veer_log_error("peers: %s: %s", pe->admin, pe->last_error);
        return;
    }
    if (pe->count == pe->cap) {
        size_t cap = pe->cap ? pe->cap * 2 : 4;
        item_t *grown = realloc(pe->items, cap * sizeof *grown);
        if (grown == NULL) {
            pe->dropped++;
            veer_log_error("peers: %s: out of memory; generation %llu dropped", pe->admin,
                           (unsigned long long)generation);
            return;
        }
        pe->items = grown;
        pe->cap = cap;
    }
    item_t *it = &pe->items[pe->count];
    it->route = strdup(route);
    it->body = strdup(body);
    it->generation = generation;
    if (it->route == NULL || it->body == NULL) {
        item_clear(it);
        pe->dropped++;
        return;
    }
    pe->count++;
    if (generation > pe->wanted)
        pe->wanted = generation;
    kick(pe);
}

/* The route's weights as the peers' PUT body; NULL for an unknown route. */
static char *change_body(veer_runtime_t *rt, const char *route, uint64_t *generation)
{
    veer_snapshot_t *snap = veer_runtime_acquire(rt);
    int r = veer_config_route_index(snap->config, route);
    char *text = NULL;

    if (r >= 0) {
        cJSON *doc = cJSON_CreateObject();
        cJSON *weights = cJSON_AddObjectToObject(doc, "weights");
        const veer_route_weights_t *rw = &snap->routes[r];
        for (size_t i = 0; weights != NULL && i < rw->count; i++)
            cJSON_AddNumberToObject(weights, snap->config->clusters[rw->split[i].cluster].name, rw->split[i].weight);
        cJSON_AddNumberToObject(doc, "generation", (double)snap->generation);
        *generation = snap->generation;
        if (weights != NULL)
            text = cJSON_PrintUnformatted(doc);
        cJSON_Delete(doc);
    }
    veer_snapshot_release(snap);
    return text;
}

void veer_peers_weights_changed(veer_peers_t *p, const char *route)
{
    uint64_t generation = 0;

    sync_config(p, true);
    if (p->count == 0)
        return;
    char *body = change_body(p->rt, route, &generation);
    if (body == NULL) {
        veer_log_error("peers: route %s: the change cannot be sent (unknown route or out of memory)", route);
        return;
    }
    for (size_t i = 0; i < p->count; i++)
        enqueue(p->peers[i], route, generation, body);
    free(body);
}

bool veer_peers_failing(veer_peers_t *p, char *why, size_t whylen)
{
    sync_config(p, false);
    for (size_t i = 0; i < p->count; i++) {
        const peer_t *pe = p->peers[i];
        if (pe->unreachable || pe->rejected) {
            snprintf(why, whylen, pe->unreachable ? "peer %s unreachable" : "peer %s rejected a change: %s",
                     pe->admin, pe->last_error);
            return true;
        }
    }
    return false;
}

static uint64_t lag_of(const peer_t *pe)
{
    return pe->wanted > pe->acked ? pe->wanted - pe->acked : 0;
}

cJSON *veer_peers_status_json(veer_peers_t *p)
{
    cJSON *list = cJSON_CreateArray();

    sync_config(p, false);
    for (size_t i = 0; list != NULL && i < p->count; i++) {
        const peer_t *pe = p->peers[i];
        cJSON *o = cJSON_CreateObject();
        if (o == NULL)
            break;
        cJSON_AddStringToObject(o, "admin", pe->admin);
        cJSON_AddNumberToObject(o, "last_generation_acked", (double)pe->acked);
        if (pe->last_error[0] != '\0')
            cJSON_AddStringToObject(o, "last_error", pe->last_error);
        else
            cJSON_AddNullToObject(o, "last_error");
        cJSON_AddNumberToObject(o, "lag", (double)lag_of(pe));
        cJSON_AddStringToObject(o, "state", pe->self          ? "self"
                                            : pe->unreachable ? "unreachable"
                                            : pe->rejected    ? "rejected"
                                            : pe->count > 0   ? "sending"
                                                              : "in_sync");
        cJSON_AddNumberToObject(o, "pending", (double)pe->count);
        cJSON_AddItemToArray(list, o);
    }
    return list;
}

void veer_peers_write_metrics(veer_peers_t *p, veer_prom_buf_t *b)
{
    sync_config(p, false);
    veer_prom_family(b, "veer_peer_generation_lag", "gauge",
                     "Weights generations this replica has sent to a peer that the peer has not acknowledged.");
    for (size_t i = 0; i < p->count; i++) {
        veer_prom_label_t l[] = {{"peer", p->peers[i]->admin}};
        veer_prom_sample_u64(b, "veer_peer_generation_lag", l, 1, lag_of(p->peers[i]));
    }
    veer_prom_family(b, "veer_peer_changes_dropped_total", "counter",
                     "Weight changes not queued for a peer because its queue was full.");
    for (size_t i = 0; i < p->count; i++) {
        veer_prom_label_t l[] = {{"peer", p->peers[i]->admin}};
        veer_prom_sample_u64(b, "veer_peer_changes_dropped_total", l, 1, p->peers[i]->dropped);
    }
}

veer_peers_t *veer_peers_new(struct event_base *base, veer_runtime_t *rt, veer_peers_failed_fn failed, void *arg)
{
    veer_peers_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->base = base;
    p->rt = rt;
    p->failed = failed;
    p->arg = arg;
    p->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (p->dns == NULL) /* no resolv.conf: the hosts file only */
        p->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (p->dns == NULL) {
        free(p);
        return NULL;
    }
    veer_peers_instance();
    sync_config(p, false);
    return p;
}

void veer_peers_free(veer_peers_t *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->count; i++)
        peer_free(p->peers[i]);
    free(p->peers);
    free(p->token);
    evdns_base_free(p->dns, 0);
    free(p);
}
