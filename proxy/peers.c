/* peers.c - weight changes applied to the peer replicas (peers.h): one queue
 * of waiting changes per peer, sent in generation order one at a time on
 * libevent's evhttp client, one connection per attempt. As in webhook.c, a
 * connection is freed from the peer's timer, never inside evhttp's callback.
 * An admin given by DNS name is resolved with evdns every peers.refresh and
 * each address it gives is a peer of its own (a headless Service's pods). */
#include "peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
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
#define PEERS_HOSTS_FILE "/etc/hosts"
/* "name@[v6]:port": the config loader bounds a name to 253 characters */
#define PEER_ADMIN_CAP (256 + 1 + INET6_ADDRSTRLEN + 2 + 6)

typedef struct item_s {
    char *route;
    uint64_t generation;
    char *body; /* {"weights": {...}, "generation": N} */
} item_t;

typedef struct peer_s {
    veer_peers_t *owner;
    char *entry; /* the peers.admins entry it comes from */
    char *admin; /* the entry, or "name@addr:port" for an address of a name */
    bool from_name;
    char *host;  /* what is connected to: the entry's host or the address */
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

/* A peers.admins entry whose host is a DNS name: its peers are the
 * addresses of its last good answer. */
typedef struct name_s {
    veer_peers_t *owner;
    char *entry;
    char *host;
    int port;
    bool resolving; /* a lookup is in flight */
    bool dead;      /* no longer configured: freed when its lookup ends */
    bool failing;   /* the last lookup failed: logged once per failure streak */
    bool answered;  /* had a good answer */
    size_t left_out; /* addresses of the last answer beyond the peer bound */
    struct evdns_getaddrinfo_request *req;
} name_t;

struct veer_peers_s {
    struct event_base *base;
    struct evdns_base *dns;
    veer_runtime_t *rt;
    veer_peers_failed_fn failed;
    void *arg;
    peer_t *peers[VEER_PEERS_MAX];
    size_t count;
    name_t *names[VEER_PEERS_MAX];
    size_t name_count;
    struct event *refresh; /* the next lookup round of the names */
    uint64_t refresh_ms;
    uint64_t timeout_ms;
    uint32_t retries;
    char *token; /* NULL: no Authorization header */
    uint64_t discarded; /* changes waiting for addresses DNS stopped giving */
    uint64_t left_out;  /* addresses not made peers: VEER_PEERS_MAX reached */
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
    free(pe->entry);
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
    veer_log_json(line);
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
    snprintf(hostport, sizeof hostport, "%s", pe->entry);
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

/* "host:port" or "[v6]:port", validated by the config loader: the host
 * without brackets and the port. */
static int split_entry(const char *entry, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(entry, ':');
    if (colon == NULL)
        return -1;
    const char *h = entry;
    size_t hlen = (size_t)(colon - entry);
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= hostlen)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = atoi(colon + 1);
    return 0;
}

static bool is_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return evutil_inet_pton(AF_INET, host, buf) == 1 || evutil_inet_pton(AF_INET6, host, buf) == 1;
}

static peer_t *peer_new(veer_peers_t *p, const char *entry, const char *admin, const char *host, int port,
                        bool from_name)
{
    peer_t *pe = calloc(1, sizeof *pe);

    if (pe == NULL)
        return NULL;
    pe->owner = p;
    pe->port = port;
    pe->from_name = from_name;
    pe->entry = strdup(entry);
    pe->admin = strdup(admin);
    pe->host = strdup(host);
    pe->timer = evtimer_new(p->base, on_timer, pe);
    if (pe->entry == NULL || pe->admin == NULL || pe->host == NULL || pe->timer == NULL) {
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


static bool split_differs(const veer_route_config_t *rc, const veer_route_weights_t *rw)
{
    for (size_t i = 0; i < rw->count; i++) {
        uint32_t file = 0;
        for (size_t k = 0; k < rc->split_count; k++)
            if (rc->split[k].cluster == rw->split[i].cluster)
                file = rc->split[k].weight;
        if (file != rw->split[i].weight)
            return true;
    }
    return false;
}

/* A new address of a name: a replica that may have just started at its file
 * weights. Every route whose weights differ from the config file's is queued
 * with the current generation. Routes at their file weights are not sent:
 * a peer answers 409 to a second route at a generation it already adopted
 * with other weights. */
static void catch_up(veer_peers_t *p, peer_t *pe)
{
    veer_snapshot_t *snap = veer_runtime_acquire(p->rt);
    size_t n = snap->config->route_count;
    char **routes = n > 0 ? calloc(n, sizeof *routes) : NULL;
    size_t k = 0;

    for (size_t r = 0; routes != NULL && r < n; r++)
        if (split_differs(&snap->config->routes[r], &snap->routes[r]) &&
            (routes[k] = strdup(snap->config->routes[r].name)) != NULL)
            k++;
    veer_snapshot_release(snap);
    for (size_t i = 0; i < k; i++) {
        uint64_t generation = 0;
        char *body = change_body(p->rt, routes[i], &generation);
        if (body != NULL)
            enqueue(pe, routes[i], generation, body);
        free(body);
        free(routes[i]);
    }
    free(routes);
}

static void name_free(name_t *nm)
{
    if (nm == NULL)
        return;
    free(nm->entry);
    free(nm->host);
    free(nm);
}

/* Stop using a name; one with a lookup in flight is freed by its callback. */
static void name_drop(name_t *nm)
{
    if (nm->resolving) {
        nm->dead = true;
        if (nm->req != NULL)
            evdns_getaddrinfo_cancel(nm->req);
        return;
    }
    name_free(nm);
}

static void drop_peer_at(veer_peers_t *p, size_t i, const char *why)
{
    peer_t *pe = p->peers[i];
    p->discarded += pe->count;
    veer_log_warn("peers: %s %s: dropped with %zu changes waiting", pe->admin, why, pe->count);
    peer_free(pe);
    memmove(&p->peers[i], &p->peers[i + 1], (p->count - i - 1) * sizeof *p->peers);
    p->count--;
}

/* A good answer for nm: its peers become exactly these addresses (up to the
 * bound); dropped addresses lose their waiting changes, new ones catch up. */
static void name_answer(name_t *nm, const struct evutil_addrinfo *res)
{
    veer_peers_t *p = nm->owner;
    char admins[VEER_PEERS_MAX][PEER_ADMIN_CAP], hosts[VEER_PEERS_MAX][INET6_ADDRSTRLEN];
    size_t n = 0, left_out = 0;

    /* this name's share of the bound: what literals and other names leave */
    size_t others = 0;
    for (size_t i = 0; i < p->count; i++)
        if (strcmp(p->peers[i]->entry, nm->entry) != 0)
            others++;
    for (const struct evutil_addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        char text[INET6_ADDRSTRLEN], admin[PEER_ADMIN_CAP];
        const void *a;
        if (ai->ai_family == AF_INET)
            a = &((const struct sockaddr_in *)(const void *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            a = &((const struct sockaddr_in6 *)(const void *)ai->ai_addr)->sin6_addr;
        else
            continue;
        if (evutil_inet_ntop(ai->ai_family, a, text, sizeof text) == NULL)
            continue;
        snprintf(admin, sizeof admin, ai->ai_family == AF_INET6 ? "%s@[%s]:%d" : "%s@%s:%d", nm->host, text,
                 nm->port);
        bool seen = false;
        for (size_t i = 0; i < n && !seen; i++)
            seen = strcmp(admins[i], admin) == 0;
        if (seen)
            continue;
        if (others + n >= VEER_PEERS_MAX) {
            left_out++;
            continue;
        }
        memcpy(admins[n], admin, sizeof admin);
        memcpy(hosts[n], text, sizeof text);
        n++;
    }
    if (left_out != nm->left_out) {
        if (left_out > nm->left_out)
            p->left_out += left_out - nm->left_out;
        if (left_out > 0)
            veer_log_error("peers: %s resolves to %zu more addresses than the %d peers allowed in total; "
                           "they get no weight changes",
                           nm->entry, left_out, VEER_PEERS_MAX);
        nm->left_out = left_out;
    }
    for (size_t i = p->count; i-- > 0;) {
        peer_t *pe = p->peers[i];
        bool keep = !pe->from_name || strcmp(pe->entry, nm->entry) != 0;
        for (size_t k = 0; k < n && !keep; k++)
            keep = strcmp(pe->admin, admins[k]) == 0;
        if (!keep)
            drop_peer_at(p, i, "is no longer in DNS");
    }
    for (size_t k = 0; k < n; k++) {
        bool found = false;
        for (size_t i = 0; i < p->count && !found; i++)
            found = strcmp(p->peers[i]->admin, admins[k]) == 0;
        if (found || p->count >= VEER_PEERS_MAX)
            continue;
        peer_t *pe = peer_new(p, nm->entry, admins[k], hosts[k], nm->port, true);
        if (pe == NULL) {
            veer_log_error("peers: out of memory adding %s", admins[k]);
            continue;
        }
        p->peers[p->count++] = pe;
        veer_log_info("peers: %s is in DNS: a peer from now on", pe->admin);
        catch_up(p, pe);
    }
}

static void on_lookup(int result, struct evutil_addrinfo *res, void *arg)
{
    name_t *nm = arg;

    nm->resolving = false;
    nm->req = NULL;
    if (nm->dead) {
        if (res != NULL)
            evutil_freeaddrinfo(res);
        name_free(nm);
        return;
    }
    if (result != 0) {
        if (!nm->failing && result != EVUTIL_EAI_CANCEL)
            veer_log_warn("peers: DNS lookup of %s failed: %s (%s)", nm->host, evutil_gai_strerror(result),
                          nm->answered ? "keeping its last addresses" : "no peers from it yet");
        nm->failing = true;
    } else {
        if (nm->failing)
            veer_log_info("peers: DNS lookup of %s answers again", nm->host);
        nm->failing = false;
        nm->answered = true;
        name_answer(nm, res);
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
}

static void lookup(name_t *nm)
{
    struct evutil_addrinfo hints;
    char port[8];

    if (nm->resolving)
        return; /* a slow resolver: the round in flight is still to answer */
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port, sizeof port, "%d", nm->port);
    nm->resolving = true;
    /* answers from the hosts file call on_lookup before this returns */
    struct evdns_getaddrinfo_request *req = evdns_getaddrinfo(nm->owner->dns, nm->host, port, &hints, on_lookup, nm);
    if (nm->resolving)
        nm->req = req;
}

static void arm_refresh(veer_peers_t *p, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(p->refresh, &tv);
}

static void on_refresh(evutil_socket_t fd, short what, void *arg)
{
    veer_peers_t *p = arg;
    (void)fd;
    (void)what;

    if (p->name_count > 0) {
        /* evdns reads the hosts file once; glibc at every lookup, which is
         * what an operator editing it expects (a small local file) */
        evdns_base_clear_host_addresses(p->dns);
        evdns_base_load_hosts(p->dns, PEERS_HOSTS_FILE);
    }
    /* a name answered from the hosts file changes p->peers[], never
     * p->names[]: the loop's bound stays valid */
    for (size_t i = 0; i < p->name_count; i++)
        lookup(p->names[i]);
    if (p->name_count > 0)
        arm_refresh(p, p->refresh_ms);
}

/* Match the peers and names to the current config: literal peers kept by
 * address and names kept by entry keep their queues; dropped ones are
 * cancelled. A new name is looked up at once. */
static void sync_config(veer_peers_t *p, bool reread_token)
{
    veer_snapshot_t *snap = veer_runtime_acquire(p->rt);
    const veer_peers_config_t *pc = &snap->config->peers;
    peer_t *next[VEER_PEERS_MAX];
    name_t *names[VEER_PEERS_MAX];
    size_t n = 0, nn = 0;
    bool new_name = false;

    p->timeout_ms = pc->timeout_ms > 0 ? pc->timeout_ms : 1;
    p->retries = pc->retries;
    p->refresh_ms = pc->refresh_ms > 0 ? pc->refresh_ms : 5000;
    if (reread_token) {
        free(p->token);
        p->token = NULL;
        if (pc->token_file != NULL && (p->token = read_token(pc->token_file)) == NULL)
            veer_log_error("peers: token_file %s cannot be read (or is empty); sending without a token",
                           pc->token_file);
    }
    for (size_t i = 0; i < pc->admin_count && i < VEER_PEERS_MAX; i++) {
        char host[256];
        int port;
        /* fails only for entries the config loader refuses (host over 255) */
        if (split_entry(pc->admins[i], host, sizeof host, &port) != 0)
            continue;
        if (!is_literal(host)) {
            name_t *found = NULL;
            for (size_t j = 0; j < p->name_count && found == NULL; j++)
                if (p->names[j] != NULL && strcmp(p->names[j]->entry, pc->admins[i]) == 0) {
                    found = p->names[j];
                    p->names[j] = NULL;
                }
            if (found == NULL && (found = calloc(1, sizeof *found)) != NULL) {
                found->owner = p;
                found->port = port;
                found->entry = strdup(pc->admins[i]);
                found->host = strdup(host);
                if (found->entry == NULL || found->host == NULL) {
                    name_free(found);
                    found = NULL;
                } else {
                    new_name = true;
                }
            }
            if (found == NULL)
                veer_log_error("peers: out of memory adding %s", pc->admins[i]);
            else
                names[nn++] = found;
            continue;
        }
        peer_t *found = NULL;
        for (size_t j = 0; j < p->count && found == NULL; j++)
            if (p->peers[j] != NULL && !p->peers[j]->from_name && strcmp(p->peers[j]->entry, pc->admins[i]) == 0) {
                found = p->peers[j];
                p->peers[j] = NULL;
            }
        if (found == NULL && (found = peer_new(p, pc->admins[i], pc->admins[i], host, port, false)) == NULL)
            veer_log_error("peers: out of memory adding %s", pc->admins[i]);
        if (found != NULL)
            next[n++] = found;
    }
    veer_snapshot_release(snap);
    /* the addresses of names still configured, while the bound allows */
    for (size_t j = 0; j < p->count; j++) {
        peer_t *pe = p->peers[j];
        bool kept = false;
        for (size_t k = 0; pe != NULL && pe->from_name && k < nn && !kept; k++)
            kept = strcmp(names[k]->entry, pe->entry) == 0;
        if (kept && n < VEER_PEERS_MAX) {
            next[n++] = pe;
        } else if (pe != NULL) {
            if (pe->from_name)
                p->discarded += pe->count;
            peer_free(pe);
        }
    }
    for (size_t j = 0; j < p->name_count; j++)
        if (p->names[j] != NULL)
            name_drop(p->names[j]);
    memcpy(p->peers, next, n * sizeof *next);
    p->count = n;
    memcpy(p->names, names, nn * sizeof *names);
    p->name_count = nn;
    if (new_name)
        arm_refresh(p, 0);
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
    veer_prom_family(b, "veer_peer_changes_discarded_total", "counter",
                     "Weight changes still waiting for a peer address when its DNS name stopped giving it.");
    veer_prom_sample_u64(b, "veer_peer_changes_discarded_total", NULL, 0, p->discarded);
    veer_prom_family(b, "veer_peer_addresses_left_out_total", "counter",
                     "Addresses of peer names not made peers because 32 peers were reached.");
    veer_prom_sample_u64(b, "veer_peer_addresses_left_out_total", NULL, 0, p->left_out);
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
    if (p->dns == NULL && (p->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE)) != NULL)
        evdns_base_load_hosts(p->dns, PEERS_HOSTS_FILE); /* no resolv.conf: the hosts file only */
    if (p->dns == NULL || (p->refresh = evtimer_new(base, on_refresh, p)) == NULL) {
        if (p->dns != NULL)
            evdns_base_free(p->dns, 0);
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
    for (size_t i = 0; i < p->name_count; i++) {
        if (p->names[i]->resolving)
            p->names[i]->dead = true; /* freed by its callback, run by evdns_base_free */
        else
            name_free(p->names[i]);
    }
    event_free(p->refresh);
    free(p->token);
    evdns_base_free(p->dns, 1); /* fails the lookups in flight: their callbacks run */
    free(p);
}
