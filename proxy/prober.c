/* prober.c - one active health check (see prober.h). Over HTTP/1.1 the
 * request is "Connection: close" and only the status line is read: a health
 * answer's body tells routing nothing, and closing avoids pooling probe
 * connections. HTTP/2 clusters get the same on a connection of its own via
 * h2call.c, whose body is read only for a gRPC HealthCheckResponse. */
#include "prober.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpchealth.h"
#include "h2call.h"
#include "headers.h"
#include "tls.h"

#define PROBE_MAX_HEAD 8192 /* a status line longer than this is a malformed answer */

struct veer_probe_s {
    veer_sock_t sock;             /* HTTP/1.1 */
    struct event timer;           /* HTTP/1.1 */
    veer_h2call_t *call;          /* HTTP/2: owns its own socket and timer */
    bool grpc;
    uint32_t endpoint_id;
    veer_probe_done_cb cb;
    void *arg;
};

static void probe_finish(veer_probe_t *p, int status, veer_health_failure_t failure)
{
    event_del(&p->timer);
    veer_sock_close(&p->sock, status == 0);
    p->cb(p->arg, p, p->endpoint_id, status, failure, NULL);
    free(p);
}

/* "HTTP/1.x NNN ..." -> NNN; 0 when the line is not a status line. */
static int parse_status(const char *line, size_t len)
{
    if (len < 12 || memcmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ' || (len > 12 && line[12] != ' '))
        return 0;
    return veer_http_status_parse(line + 9, 3);
}

static void probe_on_read(veer_sock_t *s, void *arg)
{
    veer_probe_t *p = arg;
    size_t len = evbuffer_get_length(s->in);
    struct evbuffer_ptr eol = evbuffer_search_eol(s->in, NULL, NULL, EVBUFFER_EOL_CRLF);
    if (eol.pos < 0) {
        if (len > PROBE_MAX_HEAD)
            probe_finish(p, 0, VEER_HEALTH_FAIL_RESET);
        return;
    }
    char line[64];
    size_t n = (size_t)eol.pos < sizeof(line) ? (size_t)eol.pos : sizeof(line) - 1;
    evbuffer_copyout(s->in, line, n);
    int status = parse_status(line, n);
    if (status >= 100 && status < 200) {
        /* An interim answer: the real one follows. */
        struct evbuffer_ptr end = evbuffer_search(s->in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0)
            return;
        evbuffer_drain(s->in, (size_t)end.pos + 4);
        if (evbuffer_get_length(s->in) > 0)
            probe_on_read(s, arg);
        return;
    }
    if (status == 0)
        probe_finish(p, 0, VEER_HEALTH_FAIL_RESET);
    else
        probe_finish(p, status, VEER_HEALTH_FAIL_STATUS);
}

static void probe_on_eof(veer_sock_t *s, void *arg, int err)
{
    probe_finish(arg, 0, VEER_HEALTH_FAIL_RESET);
}

static void probe_on_drain(veer_sock_t *s, void *arg)
{
}

static void probe_on_connect(veer_sock_t *s, void *arg, int err)
{
    veer_probe_t *p = arg;
    if (err != 0) {
        probe_finish(p, 0, VEER_HEALTH_FAIL_CONNECT);
        return;
    }
    veer_sock_read_enable(s);
    veer_sock_flush(s);
}

static const veer_sock_cbs_t probe_cbs = {probe_on_read, probe_on_eof, probe_on_drain, probe_on_connect};

static void probe_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    veer_probe_t *p = arg;
    probe_finish(p, 0, p->sock.connecting || p->sock.handshaking ? VEER_HEALTH_FAIL_CONNECT : VEER_HEALTH_FAIL_TIMEOUT);
}

static const char *grpc_serving_name(int serving)
{
    switch (serving) {
    case 0: return "UNKNOWN";
    case 2: return "NOT_SERVING";
    case 3: return "SERVICE_UNKNOWN";
    }
    return NULL;
}

static void probe_h2_done(void *arg, veer_h2call_t *call, const veer_h2call_result_t *res)
{
    veer_probe_t *p = arg;
    char reason[64];
    int status = 0;
    veer_health_failure_t failure = VEER_HEALTH_FAIL_STATUS;
    const char *why = reason;
    switch (res->failure) {
    case VEER_H2CALL_CONNECT:
    case VEER_H2CALL_TLS: failure = VEER_HEALTH_FAIL_CONNECT; break;
    case VEER_H2CALL_TIMEOUT: failure = VEER_HEALTH_FAIL_TIMEOUT; break;
    case VEER_H2CALL_PROTOCOL: failure = VEER_HEALTH_FAIL_RESET; break;
    case VEER_H2CALL_OK: break;
    }
    if (res->failure != VEER_H2CALL_OK) {
        why = res->detail;
    } else if (!p->grpc) {
        status = res->status;
        why = NULL;
    } else {
        /* A pass needs all three: :status 200, grpc-status 0, SERVING. */
        failure = VEER_HEALTH_FAIL_GRPC;
        int serving = res->grpc_status == 0 ? veer_grpc_health_parse(res->body, res->body_len) : -1;
        if (res->status != 200)
            snprintf(reason, sizeof reason, "status %d", res->status);
        else if (res->grpc_status < 0)
            snprintf(reason, sizeof reason, "no grpc-status");
        else if (res->grpc_status != 0)
            snprintf(reason, sizeof reason, "grpc-status %d", res->grpc_status);
        else if (serving < 0)
            snprintf(reason, sizeof reason, "malformed HealthCheckResponse");
        else if (serving != 1 && grpc_serving_name(serving) != NULL)
            snprintf(reason, sizeof reason, "%s", grpc_serving_name(serving));
        else if (serving != 1)
            snprintf(reason, sizeof reason, "serving status %d", serving);
        else
            why = NULL;
        if (why == NULL)
            status = 200;
    }
    p->call = NULL; /* h2call frees itself after this returns */
    p->cb(p->arg, p, p->endpoint_id, status, failure, why);
    free(p);
}

/* HTTP/2 (h2c or h2): the GET, or the gRPC Check when grpc_service is set. */
static veer_probe_t *probe_start_h2(veer_probe_t *p, struct event_base *base, const veer_snapshot_t *snap,
                                    int cluster, const veer_endpoint_t *ep, const char *path,
                                    const char *grpc_service, const char *authority, uint64_t timeout_ms)
{
    static const veer_h2call_header_t get_headers[] = {{"user-agent", "veer-health-check"}, {"accept", "*/*"}};
    static const veer_h2call_header_t grpc_headers[] = {
        {"content-type", "application/grpc"}, {"te", "trailers"}, {"user-agent", "veer-health-check"}};
    uint8_t body[5 + 3 + VEER_GRPC_SERVICE_MAX];
    veer_h2call_request_t req = {.method = "GET", .path = path, .authority = authority,
                                 .headers = get_headers, .header_count = 2, .timeout_ms = timeout_ms};
    if (grpc_service != NULL) {
        int n = veer_grpc_health_request(grpc_service, body, sizeof body);
        if (n < 0) {
            free(p);
            return NULL;
        }
        p->grpc = true;
        req = (veer_h2call_request_t){.method = "POST", .path = VEER_GRPC_HEALTH_PATH, .authority = authority,
                                      .headers = grpc_headers, .header_count = 3, .body = body,
                                      .body_len = (size_t)n, .timeout_ms = timeout_ms};
    }
    SSL_CTX *ctx = veer_tls_cluster_ctx(snap, cluster);
    p->call = veer_h2call_start(base, (const struct sockaddr *)&ep->addr, ep->addrlen, ctx,
                                ctx != NULL ? veer_tls_cluster_server_name(snap, cluster, ep) : NULL, &req,
                                probe_h2_done, p);
    if (p->call == NULL) {
        free(p);
        return NULL;
    }
    return p;
}

veer_probe_t *veer_probe_start(struct event_base *base, const veer_snapshot_t *snap, int cluster,
                               const veer_endpoint_t *ep, const char *path, uint64_t timeout_ms,
                               veer_probe_done_cb cb, void *arg)
{
    veer_probe_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->endpoint_id = ep->id;
    p->cb = cb;
    p->arg = arg;
    const veer_cluster_config_t *cc = &snap->config->clusters[cluster];
    if (cc->protocol == VEER_PROTO_H2C || cc->protocol == VEER_PROTO_H2) {
        const char *host = ep->host != NULL && ep->host[0] != '\0' ? ep->host : ep->name;
        bool v6 = strchr(host, ':') != NULL && host[0] != '[';
        const char *port_colon = strrchr(ep->name, ':');
        char authority[300];
        snprintf(authority, sizeof authority, "%s%s%s%s", v6 ? "[" : "", host, v6 ? "]" : "",
                 host == ep->name || port_colon == NULL ? "" : port_colon);
        return probe_start_h2(p, base, snap, cluster, ep, path != NULL && path[0] != '\0' ? path : "/",
                              cc->health_check != NULL ? cc->health_check->grpc_service : NULL, authority,
                              timeout_ms);
    }
    if (veer_sock_connect(&p->sock, base, (const struct sockaddr *)&ep->addr, ep->addrlen, &probe_cbs, p) < 0) {
        free(p);
        return NULL;
    }
    if (veer_tls_upstream_start(&p->sock, snap, cluster, ep) < 0) {
        veer_sock_close(&p->sock, true);
        free(p);
        return NULL;
    }
    /* The Host a pod expects is its configured name (not the resolved address). */
    const char *host = ep->host != NULL && ep->host[0] != '\0' ? ep->host : ep->name;
    bool v6 = strchr(host, ':') != NULL && host[0] != '[';
    const char *port_colon = strrchr(ep->name, ':');
    evbuffer_add_printf(p->sock.out,
                        "GET %s HTTP/1.1\r\nHost: %s%s%s%s\r\nUser-Agent: veer-health-check\r\n"
                        "Accept: */*\r\nConnection: close\r\n\r\n",
                        path != NULL && path[0] != '\0' ? path : "/", v6 ? "[" : "", host, v6 ? "]" : "",
                        host == ep->name || port_colon == NULL ? "" : port_colon);
    event_assign(&p->timer, base, -1, 0, probe_timeout_cb, p);
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    event_add(&p->timer, &tv);
    return p;
}

void veer_probe_cancel(veer_probe_t *p)
{
    if (p->call != NULL) {
        veer_h2call_cancel(p->call);
        free(p);
        return;
    }
    event_del(&p->timer);
    veer_sock_close(&p->sock, true);
    free(p);
}
