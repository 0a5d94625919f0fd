/* webhook.c - webhook POSTs (webhook.h) on libevent's evhttp client. A call
 * owns one connection per attempt; the connection is freed from a timer, not
 * from inside evhttp's own callback, where freeing it is not allowed. */
#include "webhook.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#define BACKOFF_FIRST_MS 100u
#define BACKOFF_MAX_MS 5000u

typedef struct call_s {
    LIST_ENTRY(call_s) link;
    veer_webhooks_t *owner;
    char *host, *path, *body;
    int port;
    uint64_t timeout_ms;
    uint32_t retries_left, attempt;
    struct evhttp_connection *conn;
    struct event *timer; /* retry backoff, and the deferred end of an attempt */
    int last_status;
    bool finished;       /* the attempt is over: the timer decides what is next */
    veer_webhook_done_fn done;
    void *arg;
} call_t;

struct veer_webhooks_s {
    struct event_base *base;
    struct evdns_base *dns; /* webhook host names resolve without blocking the main loop */
    LIST_HEAD(, call_s) calls;
    size_t inflight;
    uint64_t refused;
};

static void call_free(call_t *c)
{
    if (c->conn != NULL)
        evhttp_connection_free(c->conn);
    if (c->timer != NULL)
        event_free(c->timer);
    free(c->host);
    free(c->path);
    free(c->body);
    free(c);
}

static void call_end(call_t *c)
{
    veer_webhooks_t *wh = c->owner;
    veer_webhook_done_fn done = c->done;
    void *arg = c->arg;
    int status = c->last_status;

    LIST_REMOVE(c, link);
    wh->inflight--;
    call_free(c);
    if (done != NULL)
        done(arg, status);
}

static void on_response(struct evhttp_request *req, void *arg)
{
    call_t *c = arg;
    struct timeval now = {0, 0};

    c->last_status = req != NULL ? evhttp_request_get_response_code(req) : 0;
    c->finished = true;
    evtimer_add(c->timer, &now);
}

static int attempt(call_t *c)
{
    struct evhttp_request *req;
    struct timeval tv = {(time_t)(c->timeout_ms / 1000), (suseconds_t)(c->timeout_ms % 1000) * 1000};
    char hostport[300];

    c->conn = evhttp_connection_base_new(c->owner->base, c->owner->dns, c->host, (unsigned short)c->port);
    if (c->conn == NULL)
        return -1;
    evhttp_connection_set_timeout_tv(c->conn, &tv);
    if ((req = evhttp_request_new(on_response, c)) == NULL)
        return -1;
    snprintf(hostport, sizeof hostport, "%s:%d", c->host, c->port);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", hostport);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "User-Agent", "veer-canary");
    evhttp_add_header(h, "Connection", "close");
    evbuffer_add(evhttp_request_get_output_buffer(req), c->body, strlen(c->body));
    c->attempt++;
    /* evhttp_make_request frees req itself when it fails */
    return evhttp_make_request(c->conn, req, EVHTTP_REQ_POST, c->path);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    call_t *c = arg;
    (void)fd;
    (void)what;

    if (c->finished) {
        c->finished = false;
        if (c->conn != NULL) {
            evhttp_connection_free(c->conn);
            c->conn = NULL;
        }
        if ((c->last_status >= 200 && c->last_status < 300) || c->retries_left == 0) {
            call_end(c);
            return;
        }
        c->retries_left--;
        uint64_t ms = (uint64_t)BACKOFF_FIRST_MS << (c->attempt > 6 ? 6 : c->attempt - 1);
        if (ms > BACKOFF_MAX_MS)
            ms = BACKOFF_MAX_MS;
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        evtimer_add(c->timer, &tv);
        return;
    }
    if (attempt(c) != 0) {
        /* counts as an attempt without an answer */
        c->last_status = 0;
        c->finished = true;
        struct timeval now = {0, 0};
        evtimer_add(c->timer, &now);
    }
}

/* http://host[:port]/path only: webhooks go to a CD system on the cluster
 * network; TLS to it is not supported and is refused with a message. */
static int parse_url(const char *url, call_t *c, char *err, size_t errlen)
{
    struct evhttp_uri *uri = evhttp_uri_parse(url);
    int rc = -1;

    if (uri == NULL) {
        snprintf(err, errlen, "webhook %s: not a URL", url);
        return -1;
    }
    const char *scheme = evhttp_uri_get_scheme(uri), *host = evhttp_uri_get_host(uri);
    const char *path = evhttp_uri_get_path(uri), *query = evhttp_uri_get_query(uri);
    if (scheme == NULL || strcmp(scheme, "http") != 0) {
        snprintf(err, errlen, "webhook %s: only http:// URLs are supported", url);
    } else if (host == NULL || host[0] == '\0') {
        snprintf(err, errlen, "webhook %s: no host", url);
    } else {
        size_t plen = (path != NULL && path[0] != '\0' ? strlen(path) : 1) + (query != NULL ? strlen(query) + 1 : 0);
        c->port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
        c->host = strdup(host);
        c->path = malloc(plen + 1);
        if (c->host == NULL || c->path == NULL) {
            snprintf(err, errlen, "webhook %s: out of memory", url);
        } else {
            snprintf(c->path, plen + 1, "%s%s%s", path != NULL && path[0] != '\0' ? path : "/",
                     query != NULL ? "?" : "", query != NULL ? query : "");
            rc = 0;
        }
    }
    evhttp_uri_free(uri);
    return rc;
}

veer_webhooks_t *veer_webhooks_new(struct event_base *base)
{
    veer_webhooks_t *wh = calloc(1, sizeof *wh);
    if (wh == NULL)
        return NULL;
    wh->base = base;
    LIST_INIT(&wh->calls);
    wh->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (wh->dns == NULL) /* no resolv.conf: the hosts file only */
        wh->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (wh->dns == NULL) {
        free(wh);
        return NULL;
    }
    return wh;
}

void veer_webhooks_free(veer_webhooks_t *wh)
{
    if (wh == NULL)
        return;
    while (!LIST_EMPTY(&wh->calls)) {
        call_t *c = LIST_FIRST(&wh->calls);
        LIST_REMOVE(c, link);
        call_free(c);
    }
    evdns_base_free(wh->dns, 0);
    free(wh);
}

int veer_webhook_post(veer_webhooks_t *wh, const char *url, const char *body, uint64_t timeout_ms, uint32_t retries,
                      veer_webhook_done_fn done, void *arg, char *err, size_t errlen)
{
    if (wh->inflight >= VEER_WEBHOOK_MAX_INFLIGHT) {
        wh->refused++;
        snprintf(err, errlen, "webhook %s: %d calls already in flight", url, VEER_WEBHOOK_MAX_INFLIGHT);
        return -1;
    }
    if (strlen(body) > VEER_WEBHOOK_MAX_BODY) {
        snprintf(err, errlen, "webhook %s: body over %u bytes", url, VEER_WEBHOOK_MAX_BODY);
        return -1;
    }
    call_t *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "webhook %s: out of memory", url);
        return -1;
    }
    if (parse_url(url, c, err, errlen) != 0) {
        call_free(c);
        return -1;
    }
    c->owner = wh;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
    c->retries_left = retries;
    c->done = done;
    c->arg = arg;
    c->body = strdup(body);
    c->timer = evtimer_new(wh->base, on_timer, c);
    if (c->body == NULL || c->timer == NULL) {
        snprintf(err, errlen, "webhook %s: out of memory", url);
        call_free(c);
        return -1;
    }
    /* the first attempt starts from the loop, so done never runs inside this call */
    struct timeval now = {0, 0};
    evtimer_add(c->timer, &now);
    LIST_INSERT_HEAD(&wh->calls, c, link);
    wh->inflight++;
    return 0;
}

uint64_t veer_webhooks_refused(const veer_webhooks_t *wh)
{
    return wh->refused;
}
